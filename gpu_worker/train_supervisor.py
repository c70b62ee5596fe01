"""The parent side of training: run the training child, relay its progress, pass cancel on.

`run_child` starts `python -m gpu_worker.train_child JOB` in its own session, reads the JSON
lines it reports on a private copy of its stdout (`EVENT_PREFIX`), calls `progress` and polls
`cancel` from the calling thread, asks the child to stop (a line on its stdin) and kills it
after `CANCEL_GRACE_S`. The child's errors come back typed; a child that dies without a result
is `Crashed`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from gpu_worker import errors
from gpu_worker.errors import Cancelled, Crashed, EngineError
from gpu_worker.train_manifest import LOG_FILE, resume_files
from gpu_worker.train_options import TrainProgress, TrainResult

logger = logging.getLogger(__name__)

CANCEL_GRACE_S = 120.0
"""How long a cancelled child may take to stop (one full-size CPU step is about 30-60 s)."""
POLL_S = 0.2
EVENT_PREFIX = "@encore "


def _child_env() -> dict[str, str]:
    from gpu_worker.cpu import fast_allocator_env

    # tcmalloc where installed: glibc's allocator page-faults on every large training buffer.
    env = fast_allocator_env(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def _read_lines(stream: IO[bytes], out: queue.Queue) -> None:
    try:
        for raw in stream:
            out.put(raw)
    finally:
        out.put(None)


def _ask_to_stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(OSError, ValueError):
        proc.stdin.write(b"cancel\n")
        proc.stdin.flush()
    with contextlib.suppress(OSError, ValueError):
        proc.stdin.close()


def _kill(proc: subprocess.Popen) -> None:
    """Kill the child and anything it started (its DataLoader workers): its process group."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        with contextlib.suppress(OSError):
            proc.kill()


def _progress_of(event: dict[str, Any]) -> TrainProgress:
    return TrainProgress(
        stage=str(event.get("stage", "")),
        fraction=float(min(1.0, max(0.0, event.get("fraction", 0.0)))),
        epoch=event.get("epoch"),
        epochs=event.get("epochs"),
        step=event.get("step"),
        message=str(event.get("message", "")),
    )


def _error_of(event: dict[str, Any]) -> EngineError:
    return errors.from_record(event)


def run_child(
    job_path: Path,
    exp: Path,
    progress: Callable[[TrainProgress], None] | None,
    cancel: Callable[[], bool] | None,
    on_checkpoint: Callable[[list[Path]], None] | None = None,
) -> TrainResult:
    if cancel is not None and cancel():
        raise Cancelled("training")
    cmd = [sys.executable, "-m", "gpu_worker.train_child", str(job_path)]
    with open(exp / LOG_FILE, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=str(exp),
            env=_child_env(),
            # Its own session: a terminal's Ctrl-C reaches the parent, which stops the child
            # between steps, instead of killing it mid-write.
            start_new_session=True,
        )
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(
        target=_read_lines, args=(proc.stdout, lines), name="encore-train-reader", daemon=True
    )
    reader.start()
    stop: BaseException | None = None
    stop_at = 0.0
    result: dict[str, Any] | None = None
    failure: EngineError | None = None
    try:
        while True:
            if stop is None and cancel is not None:
                try:
                    if cancel():
                        stop = Cancelled("training")
                except BaseException as e:
                    stop = e
                if stop is not None:
                    stop_at = time.monotonic()
                    _ask_to_stop(proc)
            try:
                raw = lines.get(timeout=POLL_S)
            except queue.Empty:
                if stop is not None and time.monotonic() - stop_at > CANCEL_GRACE_S:
                    logger.warning("Training did not stop in %.0f s; killing it", CANCEL_GRACE_S)
                    _kill(proc)
                continue
            if raw is None:
                break
            event = parse_event(raw)
            if event is None:
                continue
            kind = event.get("event")
            if kind == "progress" and stop is None:
                try:
                    if progress is not None:
                        progress(_progress_of(event))
                    if event.get("checkpoint") and on_checkpoint is not None:
                        on_checkpoint(resume_files(exp))
                except BaseException as e:
                    stop, stop_at = e, time.monotonic()
                    _ask_to_stop(proc)
            elif kind == "log":
                logger.info("%s", event.get("message", ""))
            elif kind == "result":
                result = event
            elif kind == "error":
                failure = _error_of(event)
    finally:
        if proc.poll() is None:
            _ask_to_stop(proc)
            try:
                proc.wait(timeout=CANCEL_GRACE_S if stop is not None else 30)
            except subprocess.TimeoutExpired:
                _kill(proc)
        code = proc.wait()
        reader.join(timeout=5)
        for pipe in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError, ValueError):
                pipe.close()
    if stop is not None:
        raise stop
    if failure is not None:
        raise failure
    if result is None:
        hint = ", perhaps out of memory" if code in (-9, 137) else ""
        logger.warning("training child exited with code %s%s", code, hint)
        raise Crashed("training_stopped", exit_code=code)
    return TrainResult(
        pth=Path(result["pth"]),
        index=Path(result["index"]),
        epochs=int(result["epochs"]),
        steps=int(result["steps"]),
        resumed_from_epoch=int(result["resumed_from_epoch"]),
    )


def parse_event(raw: bytes) -> dict[str, Any] | None:
    text = raw.decode("utf-8", "replace").strip()
    if not text.startswith(EVENT_PREFIX):
        return None
    try:
        event = json.loads(text[len(EVENT_PREFIX) :])
    except ValueError:
        return None
    return event if isinstance(event, dict) else None
