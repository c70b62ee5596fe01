"""Stopping engine work early: a check the caller installs, polled by long loops and subprocesses.

The engine knows nothing of jobs. A caller that may want to stop the work (a user's cancel, a
process shutting down) installs a check with `watching(check)`; `check()` raises whatever
should stop the work. Long loops of the engine call `checkpoint()` between pieces of work, and
subprocesses started through `run` are polled several times a second and killed (with their
process group) as soon as the check raises, which then propagates unchanged. Without a check
installed all of this costs nothing and changes nothing.

The check lives in a context variable: it holds in the thread that installed it (and in
contexts copied from it), not in worker threads of a pool, whose callbacks the caller wires
up itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextvars import ContextVar

POLL_S = 0.2  # how often a running subprocess is checked

_check: ContextVar[Callable[[], None] | None] = ContextVar("encore_stop_check", default=None)


@contextlib.contextmanager
def watching(check: Callable[[], None]) -> Iterator[None]:
    """Install `check` (raises to stop the work) for the block."""
    token = _check.set(check)
    try:
        yield
    finally:
        _check.reset(token)


def current() -> Callable[[], None] | None:
    """The check installed here, to hand to a thread that does not inherit it."""
    return _check.get()


def checkpoint() -> None:
    """Raise if the work should stop (nothing without a check)."""
    check = _check.get()
    if check is not None:
        check()


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        proc.kill()
    proc.wait()


def run(cmd: list[str], *, timeout: float, text: bool = False) -> subprocess.CompletedProcess:
    """`subprocess.run(cmd, capture_output=True, timeout=timeout)` that stops when asked.

    The child runs in a session of its own, so a terminal's Ctrl-C reaches the caller (who
    decides) rather than killing the child half way; `checkpoint()` is polled while it runs,
    and the child is killed before the check's exception (or the timeout) propagates.
    """
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=text,
        start_new_session=True,
    )
    waited = 0.0
    try:
        while True:
            checkpoint()
            try:
                out, err = proc.communicate(timeout=POLL_S)
                break
            except subprocess.TimeoutExpired:
                waited += POLL_S
                if waited >= timeout:
                    raise subprocess.TimeoutExpired(cmd, timeout) from None
    except BaseException:
        _kill(proc)
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
