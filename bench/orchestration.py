"""Benchmark: what orchestration adds to a cover, in a cluster and embedded.

    python bench/orchestration.py [--covers 3] [--seconds 4]

Prints one JSON object. It runs a single-machine cluster as `encore serve` does (the Prefect
server at PREFECT_API_URL, or one started here; the deployments; a process worker per pool)
with tiny random-weight models, and a fake Telegram Bot API (tests/fake_telegram.py) as the
chat. Each cover is a new song (so every step runs), submitted through the submission API and
followed until the chat has the audio. The cluster runs twice on the same server: `cold`, a
new process per heavy step (`ENCORE_WARM_HOSTS=false`, as before warm hosts), then `cluster`,
heavy steps on a warm host (`flows.warm`).

For each cover:

- `total_s`: from the submit call to the chat receiving the cover;
- `steps_s`: the steps' own time (the job's step records: resolve, separate, convert, mix,
  store, upload);
- `overhead_s` = total - steps: everything orchestration adds;
- `to_flow_start_s`: from the submit call to the parent flow running (worker poll, process
  start, imports);
- `heavy_start_s`: from the parent asking for its GPU step to that run starting;
- `end_to_delivery_s`: from the last step's end to the chat receiving the cover;
- `models_loaded`: models the cover's steps loaded (`gpu_worker.loads`): on a warm host,
  none after the first cover.

The same covers run embedded (in this process, a thread per job) as the baseline, and the
ratios compare the two. The goal is an overhead of 1 s or less per cover in the cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

GOAL_OVERHEAD_S = 1.0
SR = 44100
CHAT = 777


def _wall(monotonic_at: float) -> float:
    return time.time() - (time.monotonic() - monotonic_at)


def one_cover(s, fake, voice_id: str, song_path: Path, title: str) -> dict:
    from flows.catalog import add_song
    from flows.db import StepRun, session
    from flows.submit import submit_cover, view

    song = add_song(s, song_path, title=title, artist="Bench")
    reply_to = {"platform": "telegram", "chat_id": CHAT, "user": "bench", "headline": title}
    start = time.time()
    job_id = submit_cover("bench", song.id, voice_id, s=s, reply_to=reply_to)
    submit_s = time.time() - start

    def arrived():
        sent = fake.calls_of("sendAudio")
        return [c for c in sent if c.params.get("title", "").startswith(title)]

    try:
        [call] = fake.wait_for(arrived, 600, f"the cover of {title}")
    except AssertionError:
        job = view(job_id, s)
        state = f"{job.state} ({job.reason or job.step})" if job else "gone"
        raise SystemExit(
            f"The cover of {title} never reached the chat; its job is {state}."
        ) from None
    delivered = _wall(call.at)
    job = view(job_id, s)
    if job is None or job.state != "succeeded":
        deadline = time.monotonic() + 30
        while (job is None or not job.done) and time.monotonic() < deadline:
            time.sleep(0.1)
            job = view(job_id, s)
    with session(s.database) as db:
        steps = list(db.query(StepRun).filter(StepRun.job_id == job_id))
    steps_s = sum(r.seconds for r in steps)
    loaded = sum(int((r.detail or {}).get("models_loaded", 0)) for r in steps)
    last_end = max(r.created_at.timestamp() for r in steps)
    out = {
        "job": job_id,
        "state": job.state if job else None,
        "submit_call_s": round(submit_s, 3),
        "total_s": round(delivered - start, 3),
        "steps_s": round(steps_s, 3),
        "overhead_s": round(delivered - start - steps_s, 3),
        "end_to_delivery_s": round(delivered - last_end, 3),
        "step_s": {r.step: round(r.seconds, 2) for r in steps},
        "models_loaded": loaded,
    }
    out.update(_prefect_times(job_id, start))
    return out


def _prefect_times(job_id: str, start: float) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    names = [f"cover-{job_id}", f"sing-{job_id}"]
    with get_client(sync_client=True) as client:
        named = FlowRunFilter(name=FlowRunFilterName(any_=names))
        runs = client.read_flow_runs(flow_run_filter=named)
    found = {r.name.split("-", 1)[0]: r for r in runs}
    out = {}
    parent, heavy = found.get("cover"), found.get("sing")
    if parent is not None and parent.start_time is not None:
        out["to_flow_start_s"] = round(parent.start_time.timestamp() - start, 3)
    if heavy is not None and heavy.start_time is not None and heavy.created is not None:
        out["heavy_start_s"] = round((heavy.start_time - heavy.created).total_seconds(), 3)
    return out


def summarize(rows: list[dict]) -> dict:
    keys = ["total_s", "steps_s", "overhead_s", "to_flow_start_s", "heavy_start_s",
            "end_to_delivery_s", "submit_call_s"]  # fmt: skip
    out = {}
    for key in keys:
        values = [r[key] for r in rows if key in r]
        if values:
            out[f"median_{key}"] = round(statistics.median(values), 3)
    return out


def run_covers(
    mode: str, n: int, seconds: float, voice_id: str, fake, work: Path, seed: int = 0
) -> list[dict]:
    from flows.demo import synth_song
    from flows.settings import get_settings
    from gpu_worker.audio import write_wav

    os.environ["ENCORE_RUN_MODE"] = "embedded" if mode == "embedded" else "cluster"
    get_settings.cache_clear()
    s = get_settings()
    rows = []
    for i in range(n):
        title = f"{mode} {i} {uuid.uuid4().hex[:6]}"
        path = write_wav(work / f"{mode}-{i}.wav", synth_song(seconds, seed=100 + seed + i), SR)
        rows.append(one_cover(s, fake, voice_id, path, title))
    return rows


def _stop_services(supervisor) -> None:
    """Stop a supervisor's workers and hosts, leaving its Prefect server up."""
    import signal

    from flows.serve import _signal

    for service in supervisor.services:
        if service.process is not None and service.process.poll() is None:
            _signal(service.process, signal.SIGTERM)
    for service in supervisor.services:
        if service.process is not None:
            service.process.wait(30)
    supervisor.services.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--covers", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()

    from tests.conftest import _free_port, build_model_folder
    from tests.fake_telegram import FakeTelegram

    with tempfile.TemporaryDirectory(prefix="encore-bench-orch-") as tmp:
        work = Path(tmp)
        fake = FakeTelegram().start()
        tag = uuid.uuid4().hex[:6]
        env = {
            "ENCORE_DATA_DIR": str(work / "data"),
            "ENCORE_MODEL_DIR": str(build_model_folder(work / "models")),
            "ENCORE_DEVICE": "cpu",
            "ENCORE_F0_METHOD": "pm",
            "ENCORE_TELEGRAM_TOKEN": fake.token,
            "ENCORE_TELEGRAM_API_URL": fake.api_url,
            "ENCORE_TELEGRAM_FILE_URL": fake.file_url,
            "ENCORE_CPU_POOL": f"bench-cpu-{tag}",
            "ENCORE_GPU_POOL": f"bench-gpu-{tag}",
        }
        os.environ.update(env)
        from flows.serve import Supervisor
        from flows.settings import get_settings
        from tests.tiny_rvc import build_index, build_voice

        get_settings.cache_clear()
        s = get_settings()
        # First the cluster as it was (a process per heavy step), then with warm hosts; both
        # on the first one's Prefect server, with pools of their own.
        cold_s = s.model_copy(update={"warm_hosts": False})
        supervisor = Supervisor(cold_s, port=_free_port(), output=work / "services.log")
        warm = None
        try:
            started = time.monotonic()
            api_url = supervisor.start()
            ready_s = time.monotonic() - started
            from flows.voices import import_voice

            folder = work / "voice"
            folder.mkdir()
            files = [build_voice(folder / "v.pth", seed=1, name="v"), build_index(folder, "v", 1)]
            voice = import_voice(s, "bench", "benchvoice", files)
            n, secs = args.covers, args.seconds
            embedded = run_covers("embedded", n, secs, voice.id, fake, work)
            cold = run_covers("cold", n, secs, voice.id, fake, work, seed=50)
            _stop_services(supervisor)
            warm_s = s.model_copy(
                update={
                    "warm_hosts": True,
                    "cpu_pool": f"{s.cpu_pool}-w",
                    "gpu_pool": f"{s.gpu_pool}-w",
                }
            )
            os.environ["ENCORE_CPU_POOL"], os.environ["ENCORE_GPU_POOL"] = (
                warm_s.cpu_pool,
                warm_s.gpu_pool,
            )
            warm = Supervisor(warm_s, output=work / "services-warm.log")
            warm.start()
            cluster = run_covers("cluster", n, secs, voice.id, fake, work, seed=80)
        finally:
            if warm is not None:
                warm.stop()
            supervisor.stop()
            fake.stop()
    e, k, c = summarize(embedded), summarize(cold), summarize(cluster)
    result = {
        "bench": "orchestration",
        "covers_per_mode": args.covers,
        "song_seconds": args.seconds,
        "server": "started here" if supervisor.server else api_url,
        "cluster_ready_s": round(ready_s, 2),
        "embedded": {**e, "runs": embedded},
        "cold": {**k, "runs": cold},
        "cluster": {**c, "runs": cluster},
        "overhead_ratio_cluster_to_embedded": round(
            c["median_overhead_s"] / max(e["median_overhead_s"], 1e-3), 2
        ),
        "models_loaded_after_first_cover": sum(r["models_loaded"] for r in cluster[1:]),
        "goal_overhead_s": GOAL_OVERHEAD_S,
        "goal_met": c["median_overhead_s"] <= GOAL_OVERHEAD_S,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
