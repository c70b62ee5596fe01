"""The embedded Prefect backend: one Prefect server for a process that runs flows in-process.

Without `PREFECT_API_URL`, Prefect 3 starts a temporary server (`SubprocessASGIServer`) on
first use, from whichever thread gets there first. In a bot that meant: two flow threads
starting at once could each start one, or use one before it answered (their jobs were lost),
and a process killed without running its exit handlers left the server behind.

`start` runs before the process accepts work (the bots and `flows.submit` call it before any
flow thread starts). It starts the one server of the process and registers it as Prefect's
temporary server, so every Prefect client of the process (flows, tasks, logs, events) uses it
and none starts another; once stopped it never starts again. It stops when the process exits
(`stop`, also run at exit), and the server stops itself when its parent dies without a word
(it watches its stdin, which closes then), so even a killed process leaves nothing behind.
Its database is a file of its own, removed with it: two processes never share one. With
`PREFECT_API_URL` set (a cluster, the tests' server) nothing is started.

`python -m flows.backend PORT` is the server process itself.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from flows.jobs import runner_alive, this_runner
from flows.settings import Settings

log = logging.getLogger("encore.backend")

STOP_WAIT_S = 10.0
START_WAIT_S = 120  # a busy machine takes 5-30 s to start the server (migrations)

_lock = threading.Lock()
_server = None  # the process's server, once started


def api_url_set() -> bool:
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def _folders(s: Settings) -> Path:
    return s.data_dir / "prefect"


def _sweep(root: Path) -> None:
    """Remove the databases of servers whose process is gone (a killed process's)."""
    if not root.is_dir():
        return
    for folder in root.iterdir():
        marker = folder / "runner"
        try:
            runner = marker.read_text()
        except OSError:
            runner = None
        if runner is None or runner_alive(runner) is False:
            shutil.rmtree(folder, ignore_errors=True)


def _server_class():
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    class EmbeddedServer(SubprocessASGIServer):
        """Prefect's temporary server, made once, started once, and never restarted."""

        def __new__(cls, folder: Path | None = None):
            instance = object.__new__(cls)
            # Prefect asks for the temporary server as `SubprocessASGIServer()`: this is it.
            SubprocessASGIServer._instances[None] = instance
            return instance

        def __init__(self, folder: Path | None = None):
            if hasattr(self, "_initialized"):
                return
            super().__init__(None)
            self.folder = folder
            self.closed = False
            self._start_lock = threading.Lock()

        def start(self, timeout: int | None = None) -> None:
            with self._start_lock:  # Prefect's own start is not safe from two threads
                if self.closed:
                    raise RuntimeError("Encore's Prefect backend has stopped.")
                super().start(timeout)

        def _run_uvicorn_command(self) -> subprocess.Popen:
            env = {
                **os.environ,
                "PREFECT_UI_ENABLED": "0",
                "PREFECT__SERVER_EPHEMERAL": "1",
                "PREFECT__SERVER_FINAL": "1",
                **get_current_settings().to_environment_variables(exclude_unset=True),
            }
            if not any(k in env for k in _DATABASE_VARS):
                db = self.folder / "prefect.db"
                env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{db}"
            from flows.logs import log_file

            # The server writes where this process logs: its file (the CLI), else the terminal.
            path = log_file()
            out = open(path, "ab") if path is not None else None  # noqa: SIM115 - closed below
            try:
                return subprocess.Popen(
                    [sys.executable, "-m", "flows.backend", str(self.port)],
                    env=env,
                    stdin=subprocess.PIPE,  # closes when this process dies: the server stops
                    stdout=out,
                    stderr=subprocess.STDOUT if out is not None else None,
                    start_new_session=True,  # a terminal's Ctrl-C is for this process to handle
                )
            finally:
                if out is not None:
                    out.close()

        def stop(self) -> None:
            with self._start_lock:
                self.closed = True
                proc, self.server_process = self.server_process, None
                self.running = False
            if proc is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
                proc.terminate()
                try:
                    proc.wait(timeout=STOP_WAIT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if self.folder is not None:
                shutil.rmtree(self.folder, ignore_errors=True)
            # Stays registered: anything asking for a temporary server now gets an error
            # instead of starting one while the process exits.

    return EmbeddedServer


_DATABASE_VARS = ("PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_API_DATABASE_CONNECTION_URL")


def start(s: Settings) -> str | None:
    """Start the process's Prefect server unless one is configured; its API URL, or None.

    Safe to call again and from any thread: the server starts once.
    """
    global _server
    with _lock:
        if _server is not None:
            return _server.api_url
        if api_url_set():
            return None
        root = _folders(s)
        _sweep(root)
        folder = root / str(os.getpid())
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "runner").write_text(this_runner())
        server = _server_class()(folder)
        try:
            server.start(START_WAIT_S)
        except BaseException:
            server.stop()
            raise
        _server = server
        atexit.register(stop)
        log.info("Prefect backend of this process at %s", server.api_url)
        return server.api_url


def stop() -> None:
    """Stop the process's Prefect server (at exit; safe to call twice)."""
    with _lock:
        server = _server
    if server is not None:
        server.stop()


def server_pid() -> int | None:
    """The pid of the running server process, if this process started one."""
    proc = _server.server_process if _server is not None else None
    return proc.pid if proc is not None else None


# ------------------------------------------------------------------------------------------
# The server process


def _watch_parent() -> None:
    """Stop the server when the parent's end of stdin closes (it stopped us, or died)."""
    with contextlib.suppress(OSError):
        while sys.stdin.buffer.read(1 << 16):
            pass
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn shuts down cleanly on SIGTERM
    time.sleep(STOP_WAIT_S)
    os._exit(0)


def main(port: int) -> None:
    import uvicorn

    threading.Thread(target=_watch_parent, name="watch-parent", daemon=True).start()
    uvicorn.run(
        "prefect.server.api.server:create_app",
        factory=True,
        host="127.0.0.1",
        port=port,
        log_level="error",
        lifespan="on",
    )


if __name__ == "__main__":
    main(int(sys.argv[1]))
