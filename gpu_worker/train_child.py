"""The training child: `python -m gpu_worker.train_child JOB.json`.

It locks the training folder, runs the stages (`gpu_worker.train_stages.run_job`) and reports
progress, the result or a typed error as JSON lines on a private copy of its stdout; everything
else it prints goes to the folder's log. It stops when the parent writes `cancel` on its stdin
or goes away (stdin closes).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from gpu_worker.errors import Cancelled, Crashed, EngineError
from gpu_worker.train_manifest import LOCK_FILE
from gpu_worker.train_stages import run_job
from gpu_worker.train_supervisor import EVENT_PREFIX

logger = logging.getLogger(__name__)


def _lock(exp: Path) -> IO[bytes]:
    import fcntl

    handle = open(exp / LOCK_FILE, "ab")  # noqa: SIM115 - held for the child's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise EngineError("training_busy") from None
    return handle


def _watch_stdin(token: Any) -> None:
    """Cancel when the parent says so, or when it goes away (stdin closes)."""
    # Raw reads: a daemon thread blocked in a buffered read aborts the interpreter at exit.
    pending = b""
    try:
        while b"cancel" not in pending:
            chunk = os.read(0, 256)
            if not chunk:
                break
            pending = (pending + chunk)[-64:]
    except OSError:
        pass
    finally:
        token.cancel()


def child_main(argv: Sequence[str]) -> int:
    """`python -m gpu_worker.train_child JOB.json`: run the job, report on stdout; the exit code."""
    # The protocol gets a private copy of stdout; anything else printed goes to the log.
    proto = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s"
    )

    from rvc_next.engine.cancel import CancelToken
    from rvc_next.engine.errors import Cancelled as RvcCancelled

    token = CancelToken()
    threading.Thread(target=_watch_stdin, args=(token,), daemon=True).start()

    def emit(event: dict[str, Any]) -> None:
        if proto.closed:
            return
        try:
            proto.write(EVENT_PREFIX + json.dumps(event, default=str) + "\n")
            proto.flush()
        except OSError:  # the parent is gone: stop at the next step, as on a cancel
            token.cancel()
            with contextlib.suppress(OSError):
                proto.close()

    started = time.monotonic()
    try:
        job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
        lock = _lock(Path(job["exp_dir"]))
        try:
            result = run_job(job, emit, token)
        finally:
            lock.close()
        logger.info("Training job finished in %.1f s", time.monotonic() - started)
        emit({"event": "result", **result})
        return 0
    except RvcCancelled:
        logger.info("Training stopped: cancelled")
        emit({"event": "error", **Cancelled("training").to_record()})
        return 2
    except EngineError as e:
        logger.info("Training stopped: %s", e)
        emit({"event": "error", **e.to_record()})
        return 2 if isinstance(e, Cancelled) else 1
    except BaseException as e:
        logger.exception("Training failed")
        if isinstance(e, MemoryError) or "out of memory" in str(e).lower():
            error: EngineError = EngineError("training_out_of_memory", device="cpu")
        else:  # the details are in train.log; the user only needs to know a rerun resumes
            error = Crashed("training_failed")
        emit({"event": "error", **error.to_record()})
        return 1


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
