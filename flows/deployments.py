"""Deployments: what a cluster runs where, `encore deploy`, and starting a job's run.

Every Encore flow is deployed as `<flow name>/encore`. The parent flows (covers, stems,
karaoke, training and import jobs, the trending drop, the janitor) go to the `cpu` work pool;
the heavy steps (`flows.heavy`) go to the `gpu` pool, whose concurrency limit is the number of
GPUs, so a GPU never runs two heavy steps and a waiting step bills no GPU. Deployments name
their flows by module path (`flows.cover.make_cover`): a worker imports them from the
installed package, or from the image that a container pool runs.

`deploy` creates or updates the pools and the deployments against `PREFECT_API_URL`
(`python -m flows.deployments` runs it in a process of its own, as `encore serve` does);
`start_run` submits one attempt of a job (`run_deployment(timeout=0)`, returning at once).
Importing this module imports no Prefect and no flow, so `encore serve` can read `PRELOAD`
and wait for the server (`wait_healthy`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flows.settings import Settings

log = logging.getLogger("encore.deploy")


@dataclass(frozen=True)
class Spec:
    entrypoint: str  # module path of the flow function
    pool: str  # "cpu" or "gpu"
    schedule: str | None = None  # "trending" (cron from settings) or "janitor" (interval)


SPECS = (
    Spec("flows.cover.make_cover", "cpu"),
    Spec("flows.separation.stems", "cpu"),
    Spec("flows.separation.karaoke", "cpu"),
    Spec("flows.training.train_voice", "cpu"),
    Spec("flows.training.import_voice_flow", "cpu"),
    Spec("flows.trending.trending_drop", "cpu", schedule="trending"),
    Spec("flows.recovery.recover_jobs", "cpu", schedule="janitor"),
    Spec("flows.heavy.separate_song", "gpu"),
    Spec("flows.heavy.sing_vocal", "gpu"),
    Spec("flows.heavy.train_model", "gpu"),
    Spec("flows.heavy.render_preview", "gpu"),
)

# The flow each kind of job runs (its deployment is "<flow name>/encore").
JOB_FLOWS = {
    "cover": "make-cover",
    "stems": "stems",
    "karaoke": "karaoke",
    "train": "train-voice",
    "import": "import-voice",
}


def _load(entrypoint: str):
    from prefect.utilities.importtools import import_object

    return import_object(entrypoint)


def pool_name(s: Settings, pool: str) -> str:
    return s.gpu_pool if pool == "gpu" else s.cpu_pool


def ensure_pools(s: Settings) -> dict[str, str]:
    """Create the work pools if missing; set the GPU pool's limit to the number of GPUs.

    A process pool is created here. A container pool (`ENCORE_GPU_POOL_TYPE=ecs`) needs a job
    template naming the GPU task definition, so infra/terraform/prefect creates it.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    wanted = {
        s.cpu_pool: ("process", None),
        s.gpu_pool: (s.gpu_pool_type, s.gpus()),
    }
    made = {}
    with get_client(sync_client=True) as client:
        for name, (kind, limit) in wanted.items():
            try:
                pool = client.read_work_pool(name)
            except ObjectNotFound:
                if kind != "process":
                    raise RuntimeError(
                        f"Work pool {name!r} ({kind}) does not exist; create it with "
                        "infra/terraform/prefect, then run `encore deploy` again."
                    ) from None
                client.create_work_pool(
                    WorkPoolCreate(
                        name=name,
                        type="process",
                        base_job_template=ProcessWorker.get_default_base_job_template(),
                        concurrency_limit=limit,
                    )
                )
                made[name] = "created"
                continue
            if pool.concurrency_limit != limit:
                client.update_work_pool(name, WorkPoolUpdate(concurrency_limit=limit))
            made[name] = "updated"
    return made


def _schedules(s: Settings, spec: Spec) -> dict[str, Any]:
    from prefect.schedules import Cron, Interval

    if spec.schedule == "trending":  # paused until there is a chart to read
        from flows.charts import drop_source

        cron = Cron(s.trending_cron, timezone=s.trending_timezone)
        return {"schedules": [cron], "paused": not drop_source(s)}
    if spec.schedule == "janitor":
        return {"schedules": [Interval(timedelta(seconds=s.janitor_interval_s))]}
    return {}


HEALTHY_WAIT_S = 90.0


def wait_healthy(api_url: str, timeout: float = HEALTHY_WAIT_S, process=None) -> None:
    """Wait until the Prefect server at `api_url` answers (or its `process` exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError("The Prefect server exited at start; see its log above.")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"The Prefect server at {api_url} did not answer in {timeout:.0f} s.")


# What a pool's warm fork server imports ahead of the runs (see `flows.warm`).
PRELOAD = {
    "cpu": [spec.entrypoint.rsplit(".", 1)[0] for spec in SPECS if spec.pool == "cpu"],
    "gpu": [
        "torch",
        "soundfile",
        "demucs.pretrained",
        "demucs.apply",
        "rvc_next.engine",
        "rvc_next.engine.audio",
        "rvc_next.engine.features",
        "rvc_next.engine.index",
        "librosa.core.audio",
        "librosa.core.pitch",
        "librosa.feature",
        "parselmouth",
        "audioread.ffdec",
        "gpu_worker.separate",
        "gpu_worker.convert",
        "gpu_worker.remix",
        "flows.heavy",
    ],
}


def deploy(
    s: Settings, schedules: bool = True, commands: dict[str, str] | None = None
) -> list[str]:
    """Create or update the pools and every deployment; returns the deployments' names.

    `schedules=False` leaves the trending drop and the janitor unscheduled (they still run
    when started by hand or by `run_deployment`). `commands` maps "cpu"/"gpu" to the command
    a process worker runs for that pool's flow runs (a warm start, `flows.warm`); without
    it, Prefect's own `python -m prefect.engine`.
    """
    from prefect.deployments.runner import EntrypointType

    from flows.heavy import DEPLOYMENT

    ensure_pools(s)
    commands = commands or {}
    names = []
    for spec in SPECS:
        flow_fn = _load(spec.entrypoint)
        extra = _schedules(s, spec) if schedules else {}
        deployment = flow_fn.to_deployment(
            name=DEPLOYMENT,
            entrypoint_type=EntrypointType.MODULE_PATH,
            work_pool_name=pool_name(s, spec.pool),
            tags=["encore", spec.pool],
            job_variables={"command": commands[spec.pool]} if spec.pool in commands else {},
            description=(flow_fn.description or "").strip().split("\n")[0] or None,
            **extra,
        )
        deployment.apply()
        names.append(f"{flow_fn.name}/{DEPLOYMENT}")
    return names


def start_run(s: Settings, job_id: str, kind: str, params: dict, attempt: int) -> str:
    """Submit attempt `attempt` of a job to its deployment; returns the flow run's id.

    The idempotency key makes a repeated call for the same attempt (two bots, a retried
    request) return the same run instead of starting a second one.
    """
    from prefect.deployments import run_deployment

    from flows.heavy import DEPLOYMENT
    from flows.jobs import run_parameters

    run = run_deployment(
        f"{JOB_FLOWS[kind]}/{DEPLOYMENT}",
        parameters=run_parameters(kind, job_id, params),
        timeout=0,
        idempotency_key=f"{job_id}:{attempt}",
        as_subflow=False,
        tags=["encore", kind],
    )
    return str(run.id)


def main(argv: list[str]) -> int:
    """`python -m flows.deployments [COMMANDS]`: deploy to the server at `PREFECT_API_URL`.

    `COMMANDS` is `deploy`'s `commands` as JSON. `encore serve` deploys this way, from a
    process that starts with its server's URL (Prefect reads its settings when imported).
    """
    from prefect.settings import PREFECT_API_URL

    from flows.settings import get_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    api_url = PREFECT_API_URL.value()
    if not api_url:
        print("Error: Set PREFECT_API_URL to your Prefect server's API.", file=sys.stderr)
        return 1
    commands = json.loads(argv[0]) if argv else None
    for spec in SPECS:  # import the flows while the server may still be starting
        _load(spec.entrypoint)
    try:
        wait_healthy(api_url)
        names = deploy(get_settings(), commands=commands)
    except RuntimeError as exc:  # a sentence for the operator (a pool to create first)
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    log.info("deployed %d flows: %s", len(names), ", ".join(names))
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # all is sent; tearing down ~1500 modules takes seconds on a busy machine
