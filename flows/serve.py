"""`encore serve`: a whole single-machine cluster from one command.

It starts, as child processes: the Prefect server (unless `PREFECT_API_URL` names one; its
state under `<data folder>/prefect`), then creates the work pools and deployments on it
(`python -m flows.deployments`), then a process worker per pool and whatever extra services
the caller adds (the chat bots, from `bots.cli`). The cpu pool's runs start from a fork
server, the gpu pool's run on a warm host per GPU that keeps the models loaded
(`flows.warm`); both start before the deploy, while the server starts. Every child gets
`ENCORE_RUN_MODE=cluster` and the server's URL, so the bots submit to the server and the
workers run the flows. A child that dies is started again (after a pause that grows if it
keeps dying); Ctrl-C or SIGTERM stops them all, the server last.

This process never talks to Prefect itself. Prefect reads its settings once, when it is first
imported, so a URL set in this process's environment afterwards would not reach it: the
deployments would go to a throwaway server. Every process that talks to Prefect is therefore
a child started with the server's URL in its environment, and with Prefect's temporary
("ephemeral") servers turned off, so a child without a URL fails loudly instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from flows.deployments import PRELOAD, wait_healthy  # (imports no Prefect)
from flows.settings import Settings

log = logging.getLogger("encore.serve")

DEPLOY_WAIT_S = 300.0  # creating the pools and deployments (imports every flow first)
WORKER_QUERY_S = "0.2"  # how often a worker asks for runs (Prefect's default is 10 s)


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    restarts: int = 0
    next_start: float = 0.0


def _prefect() -> str:
    return str(Path(sys.executable).with_name("prefect"))


def _socket_path(path: Path) -> str:
    """`path`, or a short one in /tmp when it is too long for a Unix socket (108 bytes)."""
    if len(str(path)) < 100:
        return str(path)
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    return str(Path(tempfile.gettempdir()) / f"encore-{digest}.sock")


def _devices(s: Settings) -> list[str | None]:
    """The CUDA device of each warm host: one per GPU (None: the one the process sees, or
    none). The GPUs are counted without starting CUDA here."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        found = [d.strip() for d in visible.split(",") if d.strip()]
    else:
        found = sorted(
            (p.name[len("nvidia") :] for p in Path("/dev").glob("nvidia[0-9]*")), key=int
        )
    count = s.gpu_count if s.gpu_count is not None else len(found)
    if count <= 1 or len(found) < count:
        return [None] * max(1, count)
    return found[:count]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Supervisor:
    """Starts the services, restarts the ones that die, and stops them all on request."""

    def __init__(
        self,
        s: Settings,
        extra: list[Service] | None = None,
        port: int | None = None,
        output: Path | None = None,
    ):
        self.s = s
        self.extra = extra or []
        self.port = port
        self.output = output  # where the services' output goes (default: this terminal)
        self.services: list[Service] = []
        self.server: Service | None = None
        self.deployer: Service | None = None  # while the deploy runs
        self.own_server = not os.environ.get("PREFECT_API_URL")  # else the one it names
        self._stopping = False

    def _prefect_home(self) -> Path:
        return self.s.data_dir / "prefect"

    def _child_env(self, api_url: str) -> dict[str, str]:
        env = {
            **os.environ,
            "PREFECT_API_URL": api_url,
            "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "false",  # no throwaway servers, ever
            "ENCORE_RUN_MODE": "cluster",
            "PREFECT_WORKER_QUERY_SECONDS": os.environ.get(
                "PREFECT_WORKER_QUERY_SECONDS", WORKER_QUERY_S
            ),
            "PREFECT_SERVER_ANALYTICS_ENABLED": os.environ.get(
                "PREFECT_SERVER_ANALYTICS_ENABLED", "false"
            ),
            "DO_NOT_TRACK": os.environ.get("DO_NOT_TRACK", "1"),
        }
        if self.own_server:  # Prefect's files beside its server's, not in ~/.prefect
            env.setdefault("PREFECT_HOME", str(self._prefect_home()))
        return env

    def start_server(self) -> str:
        """The API URL: the configured server's, or that of one started here (which may
        still be starting: see `wait_healthy`)."""
        if not self.own_server:
            return os.environ["PREFECT_API_URL"]
        port = self.port or 4200
        if _listening(port):  # else the health check could find another server
            raise RuntimeError(
                f"Port {port} is in use (another Encore or Prefect server?); stop it or "
                "choose another port with --port."
            )
        home = self._prefect_home()
        home.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "PREFECT_HOME": str(home),  # its database, prefect.db, and its profile
            "PREFECT_SERVER_ANALYTICS_ENABLED": os.environ.get(
                "PREFECT_SERVER_ANALYTICS_ENABLED", "false"
            ),
            "DO_NOT_TRACK": os.environ.get("DO_NOT_TRACK", "1"),
        }
        argv = [_prefect(), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
        self.server = Service("prefect-server", argv, env)
        self._spawn(self.server)
        return f"http://127.0.0.1:{port}/api"

    def start(self) -> str:
        """Start everything; returns the Prefect API URL that the services use.

        The server's start, the warm starters' imports and the deploy's imports overlap;
        the workers and bots start once the deployments exist.
        """
        api_url = self.start_server()
        env = self._child_env(api_url)
        pools = {"cpu": self.s.cpu_pool}
        if self.s.gpu_pool_type == "process":  # a container pool runs its own (ECS) worker
            pools["gpu"] = self.s.gpu_pool
        commands, workers = {}, []
        run_dir = self.s.data_dir / "run"
        run_dir.mkdir(parents=True, exist_ok=True)
        module = [sys.executable, "-m", "flows.warm"]
        for kind, pool in pools.items():
            if kind == "gpu" and self.s.warm_hosts:  # one warm host per GPU, runs in-process
                socks = []
                for i, device in enumerate(_devices(self.s)):
                    sock = _socket_path(run_dir / f"warm-{kind}-{i}.sock")
                    host_env = {**env, **({"CUDA_VISIBLE_DEVICES": device} if device else {})}
                    argv = [*module, "host", sock, *PRELOAD[kind]]
                    self.services.append(Service(f"warm host {pool} {i}", argv, host_env))
                    socks.append(sock)
                commands[kind] = shlex.join([*module, "run", ",".join(socks)])
            else:  # a fork server: a new process per run, its imports done ahead
                sock = _socket_path(run_dir / f"warm-{kind}.sock")
                commands[kind] = shlex.join([*module, "run", sock])
                argv = [*module, "serve", sock, *PRELOAD[kind]]
                self.services.append(Service(f"warm starts {pool}", argv, env))
            argv = [_prefect(), "worker", "start", "--pool", pool, "--type", "process"]
            workers.append(Service(f"worker {pool}", argv, env))
        for warm in self.services:  # they talk to the server only once runs come
            self._spawn(warm)
        # The deploy imports every flow, then waits for the server itself.
        argv = [sys.executable, "-m", "flows.deployments", json.dumps(commands)]
        self.deployer = Service("deploy", argv, env)
        self._spawn(self.deployer)
        wait_healthy(api_url, process=self.server.process if self.server else None)
        log.info("the Prefect server answers at %s", api_url)
        self._wait_deployed()
        for extra in self.extra:
            extra.env = {**env, **extra.env}
        for service in [*workers, *self.extra]:
            self.services.append(service)
            self._spawn(service)
        # For a caller that uses Prefect in this process afterwards (bench/orchestration.py);
        # it works only if that caller has not imported Prefect yet.
        os.environ["PREFECT_API_URL"] = api_url
        return api_url

    def _wait_deployed(self) -> None:
        """Wait for the deploy, a child process that starts with the server's URL in its
        environment (see the module's docstring), to create the pools and deployments."""
        process = self.deployer.process
        try:
            code = process.wait(DEPLOY_WAIT_S)
        except subprocess.TimeoutExpired:
            code = None
        finally:  # also on Ctrl-C or SIGTERM while it runs
            if process.poll() is None:
                _signal(process, signal.SIGKILL)
                process.wait()
            self.deployer = None
        if code is None:
            raise RuntimeError(
                f"Creating the deployments took over {DEPLOY_WAIT_S:.0f} s; check the Prefect "
                "server's log above and run `encore serve` again."
            )
        if code != 0:
            raise RuntimeError(
                "Creating the deployments failed; fix the error in the log above and run "
                "`encore serve` again."
            )

    def _spawn(self, service: Service) -> None:
        log.info("starting %s", service.name)
        out = open(self.output, "a") if self.output else None  # noqa: SIM115 - the child's
        service.process = subprocess.Popen(
            service.argv,
            env=service.env,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True,
        )
        if out is not None:
            out.close()  # the child holds its own copy

    def watch(self, poll_s: float = 1.0) -> None:
        """Keep the services up until `stop()` (or a signal) ends the watch."""
        while not self._stopping:
            for service in [*self.services, *([self.server] if self.server else [])]:
                if service.process is None or service.process.poll() is None:
                    continue
                if service.next_start == 0.0:
                    delay = min(60.0, 2.0 ** min(service.restarts, 6))
                    log.warning(
                        "%s exited with %s; starting it again in %.0f s",
                        service.name,
                        service.process.returncode,
                        delay,
                    )
                    service.next_start = time.monotonic() + delay
                elif time.monotonic() >= service.next_start:
                    service.restarts += 1
                    service.next_start = 0.0
                    self._spawn(service)
            time.sleep(poll_s)

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the workers and bots, then the server; kill whatever does not stop in time."""
        self._stopping = True
        first = [*self.services, *([self.deployer] if self.deployer else [])]
        groups = [first, [self.server] if self.server else []]
        for group in groups:
            running = [x for x in group if x.process is not None and x.process.poll() is None]
            for service in running:
                _signal(service.process, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for service in running:
                try:
                    service.process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    _signal(service.process, signal.SIGKILL)
                    service.process.wait()


def _signal(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)  # the service and the flow runs it started
