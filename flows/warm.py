"""Warm starts for flow-run processes: a fork server that has the imports done already.

A process worker starts every flow run as a new `python -m prefect.engine`, which spends
seconds importing Prefect, torch and the engine before the flow begins. `encore serve` runs
one fork server per work pool (`python -m flows.warm serve SOCKET`): it imports all of that
once, then waits on a Unix socket. The pool's deployments run `python -m flows.warm run
SOCKET` instead of the engine. That client starts in milliseconds (it imports only the
standard library), hands the server its environment, working folder and standard streams,
and the server forks a child that runs `prefect.engine` in them. Each flow run is still a
process of its own (a crash or a leak ends with it); it just starts warm.

The client stands in for the child towards the worker: it forwards SIGTERM and SIGINT, and
exits with the child's status. If the client dies (a worker killed with its runs), the child
notices its connection close and kills itself, as a normal flow-run process would have died.
Without a server to talk to, the client runs `prefect.engine` itself, so the deployments also
work on machines that have no fork server.

Forking is safe here because the server is single-threaded and has only imported modules: it
opens no connections, starts no threads and never touches CUDA before forking.

The GPU pool's runs go to warm hosts instead (`python -m flows.warm host SOCKET`), one per GPU
(or one on a machine without a GPU). A host runs the flow runs itself, one after another, on
its main thread: the models its steps load (Demucs, HuBERT, the pitch model, the last voices;
`gpu_worker.loads` counts them) stay resident for the next run, and CUDA starts once. A fork
cannot do that: CUDA does not survive a fork, and what a child loads dies with it. The runs
are still Prefect flow runs that a process worker started (the UI shows them, their logs and
states), and the host writes each run's output to the client's standard streams.

What stops a run on a host:
- its flow timeout, which Prefect raises on the main thread with SIGALRM;
- a cancel: the worker signals the client, the client tells the host over its connection,
  and the host sends itself SIGTERM, which Prefect's engine turns into the run's end;
- a run that does neither (stuck in native code): the worker kills the client after a grace
  period, the host sees the connection close while the run is in progress and kills itself
  with everything it started. `encore serve` starts a new host (cold, the next run loads the
  models again); until it is up, runs start cold as Prefect would.
A host with no run for `idle_exit_s` seconds exits (scale to zero: see infra/terraform).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import os
import select
import signal
import socket
import struct
import sys
import threading
import time

ENGINE = "prefect.engine"


def _recv_exact(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the peer went away")
        data += chunk
    return data


# ------------------------------------------------------------------------------------------
# The client: what a flow run's process runs


HOST_WAIT_S = 30.0  # how long a run waits for a host that is (re)starting before going cold


def _lock_free(path: str):
    """An open lock file of the host at `path` if this client got it (the host is free)."""
    try:
        handle = open(path + ".lock", "a")  # noqa: SIM115 - held for the run
    except OSError:
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def _connect(paths: list[str]) -> tuple[socket.socket, object] | None:
    """A connection to a free fork server or host among `paths` (a host is held with its lock
    file for the run); None if none answers. A host that is starting (its lock file is there,
    its socket not yet) is waited for, up to `HOST_WAIT_S`."""
    deadline = time.monotonic() + HOST_WAIT_S
    while True:
        starting = False
        for path in paths:
            lock = _lock_free(path) if os.path.exists(path + ".lock") else None
            if os.path.exists(path + ".lock") and lock is None:
                continue  # busy with another run
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
                return sock, lock
            except OSError:
                sock.close()
                if lock is not None:
                    lock.close()
                    starting = True
        if not starting or time.monotonic() > deadline:
            return None
        time.sleep(0.2)


def run(path: str, args: list[str]) -> int:
    """Have the fork server or warm host at `path` (several, comma-separated: the first free
    one) run the engine for this flow run; its exit status."""
    connected = _connect(path.split(","))
    if connected is None:  # no fork server or host here: start cold, as Prefect would
        os.execv(sys.executable, [sys.executable, "-m", ENGINE, *args])
    sock, _lock = connected
    header = json.dumps({"env": dict(os.environ), "cwd": os.getcwd(), "args": args}).encode()
    socket.send_fds(sock, [b"F"], [0, 1, 2])
    sock.sendall(struct.pack("!I", len(header)) + header)
    (child,) = struct.unpack("!i", _recv_exact(sock, 4))

    def forward(signum, _frame):
        if child == 0:  # a host: it stops its run when told so over the connection
            with contextlib.suppress(OSError):
                sock.sendall(b"T")
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:
        try:
            (status,) = struct.unpack("!i", _recv_exact(sock, 4))
            return status
        except InterruptedError:
            continue
        except ConnectionError:
            return 1  # the fork server died; so did the child's watchdog connection


# ------------------------------------------------------------------------------------------
# The fork server


def preload(modules: list[str]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:  # an optional engine part; the run imports what it needs
            print(f"warm: not preloading {name}: {exc}", file=sys.stderr)


def serve(path: str, modules: list[str]) -> None:
    """Import `modules`, then fork a warm engine process for every client, until killed."""
    from flows.logs import protect_logs

    protect_logs()  # the forked flow runs inherit it: no token in their log lines
    preload([ENGINE, "prefect.flow_engine", *modules])
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chmod(path, 0o600)
    server.listen(64)
    clients: dict[int, socket.socket] = {}  # child pid -> the client's connection
    print(f"warm: ready at {path}", file=sys.stderr, flush=True)
    while True:
        readable, _, _ = select.select([server], [], [], 0.5)
        if readable:
            conn, _ = server.accept()
            try:
                pid = _fork_child(server, conn)
            except (OSError, ConnectionError, ValueError) as exc:
                print(f"warm: a client failed to start: {exc}", file=sys.stderr, flush=True)
                conn.close()
                continue
            clients[pid] = conn
        _reap(clients)


def _fork_child(server: socket.socket, conn: socket.socket) -> int:
    _msg, fds, _flags, _addr = socket.recv_fds(conn, 1, 3)
    (size,) = struct.unpack("!I", _recv_exact(conn, 4))
    header = json.loads(_recv_exact(conn, size))
    if len(fds) != 3:
        raise ValueError("expected the client's three standard streams")
    pid = os.fork()
    if pid == 0:  # the child: become the flow run's engine process
        code = 1
        try:
            server.close()
            os.setsid()  # signals for the run reach its whole group, not the server
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            _watch(conn)
            os.chdir(header["cwd"])
            os.environ.clear()
            os.environ.update(header["env"])
            sys.argv = [ENGINE, *header["args"]]
            import runpy
            import warnings

            # The engine module was imported ahead on purpose; runpy warns about that.
            warnings.filterwarnings("ignore", category=RuntimeWarning, module="runpy")
            runpy.run_module(ENGINE, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
    for fd in fds:
        os.close(fd)
    conn.sendall(struct.pack("!i", pid))
    return pid


def _watch(conn: socket.socket) -> None:
    """In the child: die as soon as the client's connection closes (the client died)."""
    import threading

    def wait() -> None:
        with contextlib.suppress(OSError):
            while conn.recv(1):
                pass
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=wait, name="warm-client-watch", daemon=True).start()


def _reap(clients: dict[int, socket.socket]) -> None:
    for pid in list(clients):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done, status = pid, 1 << 8
        if not done:
            continue
        conn = clients.pop(pid)
        code = os.waitstatus_to_exitcode(status) if status != 1 << 8 else 1
        with contextlib.suppress(OSError):
            conn.sendall(struct.pack("!i", code if code >= 0 else 128 - code))
        conn.close()


# ------------------------------------------------------------------------------------------
# The warm host


class _Host:
    """One warm host: a socket, and the state of the run in progress."""

    def __init__(self, path: str, idle_exit_s: float | None):
        self.path = path
        self.idle_exit_s = idle_exit_s if idle_exit_s and idle_exit_s > 0 else None
        self.running = False
        self.told_to_stop = False  # a SIGTERM during a run came from its client
        self.stopping = False  # a SIGTERM from elsewhere: exit after the run
        self.runs = 0

    def on_sigterm(self, _signum, _frame) -> None:
        """Between runs, and before Prefect's engine installs its own: end the host (or the
        run, when its client asked)."""
        if not self.running:
            raise SystemExit(0)
        if not self.told_to_stop:
            self.stopping = True
        raise SystemExit(143)

    def serve(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        open(self.path + ".lock", "a").close()  # clients wait for a host that has one
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(self.path)
        os.chmod(self.path, 0o600)
        server.listen(16)
        server.settimeout(self.idle_exit_s)
        signal.signal(signal.SIGTERM, self.on_sigterm)
        _say(f"warm host: ready at {self.path} (pid {os.getpid()})")
        try:
            while not self.stopping:
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    _say(f"warm host: idle for {self.idle_exit_s:.0f} s; exiting")
                    return
                conn.settimeout(None)
                try:
                    self.handle(conn)
                except (OSError, ConnectionError, ValueError) as exc:
                    _say(f"warm host: a client failed: {exc}")
                finally:
                    conn.close()
        finally:
            server.close()
            for leftover in (self.path, self.path + ".lock"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)

    def handle(self, conn: socket.socket) -> None:
        _msg, fds, _flags, _addr = socket.recv_fds(conn, 1, 3)
        (size,) = struct.unpack("!I", _recv_exact(conn, 4))
        header = json.loads(_recv_exact(conn, size))
        if len(fds) != 3:
            for fd in fds:
                os.close(fd)
            raise ValueError("expected the client's three standard streams")
        conn.sendall(struct.pack("!i", 0))  # 0: stop me through this connection
        saved = [os.dup(fd) for fd in (0, 1, 2)]
        env, cwd = dict(os.environ), os.getcwd()
        _flush()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        code = 1
        active = threading.Event()
        try:
            os.environ.clear()
            os.environ.update(header["env"])
            for key in ("PREFECT__CONTROL_PORT", "PREFECT__CONTROL_TOKEN"):
                os.environ.pop(key, None)  # Prefect's channel is one per process; signals do
            os.chdir(header["cwd"])
            active.set()  # this run's: a watcher outliving its run does nothing
            self.running, self.told_to_stop = True, False
            threading.Thread(target=self.watch, args=(conn, active), daemon=True).start()
            code = self.run_engine(header["args"])
        finally:
            active.clear()
            self.running = False
            self.runs += 1
            _flush()
            for target, fd in enumerate(saved):
                os.dup2(fd, target)
                os.close(fd)
            os.environ.clear()
            os.environ.update(env)
            os.chdir(cwd)
        from gpu_worker import loads

        _say(f"warm host: run {self.runs} ended ({code}); models loaded so far: {loads.total()}")
        with contextlib.suppress(OSError):
            conn.sendall(struct.pack("!i", code))

    def watch(self, conn: socket.socket, active: threading.Event) -> None:
        """Stop the run when its client asks; die if the client dies while the run goes on."""
        while True:
            try:
                data = conn.recv(1)
            except OSError:
                data = b""
            if not active.is_set():
                return
            if data == b"T":
                self.told_to_stop = True
                os.kill(os.getpid(), signal.SIGTERM)
                continue
            if not data:  # the client is gone (killed): so must the run be, native code too
                _say("warm host: the run's client died; the host exits with the run")
                own_group = os.getpgid(0) == os.getpid()  # what it started dies with it
                os.kill(0 if own_group else os.getpid(), signal.SIGKILL)

    @staticmethod
    def run_engine(args: list[str]) -> int:
        """What `python -m prefect.engine` does for one flow run, in this process."""
        from uuid import UUID

        from prefect.exceptions import Abort, Pause, TerminationSignal
        from prefect.flow_engine import flow_run_logger, load_flow, load_flow_run, run_flow

        try:
            flow_run_id = UUID(args[0] if args else os.environ.get("PREFECT__FLOW_RUN_ID", ""))
            flow_run = load_flow_run(flow_run_id=flow_run_id)
            flow = load_flow(flow_run)
            run_flow(flow, flow_run=flow_run, error_logger=flow_run_logger(flow_run=flow_run))
            return 0
        except (Abort, Pause):
            return 0
        except TerminationSignal:
            return 143
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 1
        except Exception:  # the run's state says what went wrong; the host goes on
            import traceback

            traceback.print_exc()
            return 1


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _flush() -> None:
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()


def host(path: str, modules: list[str], idle_exit_s: float | None = None) -> None:
    """Import `modules`, then run the flow runs clients bring, one at a time, in this process."""
    from flows.logs import protect_logs

    protect_logs()
    preload(["prefect.flow_engine", *modules])
    _Host(path, idle_exit_s).serve()


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "run":
        return run(argv[1], argv[2:])
    if len(argv) >= 2 and argv[0] == "serve":
        serve(argv[1], argv[2:])
        return 0
    if len(argv) >= 2 and argv[0] == "host":
        from flows.settings import get_settings

        host(argv[1], argv[2:], get_settings().warm_idle_exit_s)
        return 0
    print(
        "usage: python -m flows.warm run SOCKET[,SOCKET] [ARGS] | serve SOCKET [MODULES] "
        "| host SOCKET [MODULES]",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
