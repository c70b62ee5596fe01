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
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import signal
import socket
import struct
import sys

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


def run(path: str, args: list[str]) -> int:
    """Have the fork server at `path` run the engine for this flow run; its exit status."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:  # no fork server on this machine: start cold, as Prefect would
        os.execv(sys.executable, [sys.executable, "-m", ENGINE, *args])
    header = json.dumps({"env": dict(os.environ), "cwd": os.getcwd(), "args": args}).encode()
    socket.send_fds(sock, [b"F"], [0, 1, 2])
    sock.sendall(struct.pack("!I", len(header)) + header)
    (child,) = struct.unpack("!i", _recv_exact(sock, 4))

    def forward(signum, _frame):
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


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "run":
        return run(argv[1], argv[2:])
    if len(argv) >= 2 and argv[0] == "serve":
        serve(argv[1], argv[2:])
        return 0
    print("usage: python -m flows.warm run SOCKET [ARGS] | serve SOCKET [MODULES]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
