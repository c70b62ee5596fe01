"""`encore serve` as a newcomer runs it, on a machine where nothing is set: one command, the
embedded defaults (SQLite and files in the default data folder), its own Prefect server, a
worker per pool and the Telegram bot. A `/cover` sent to the bot goes through that server and
the workers and arrives in the chat; SIGTERM stops everything it started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from uuid import UUID

import pytest

from flows.catalog import add_song
from flows.db import TERMINAL, Job, session
from flows.voices import import_voice
from gpu_worker.audio import decode
from tests.conftest import ROOT, _free_port, descendants

SR = 44100
ADA = 1


def test_serve_on_a_clean_machine_runs_a_cover_from_the_bot_on_its_own_server(
    models_dir, fake, voice_files, song_wav, tmp_path, monkeypatch
):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.settings import get_settings

    # An operator's machine: a fresh home folder, no XDG or Prefect variables, no server
    # running; the bot's token and the models `encore models download` would have fetched.
    home = tmp_path / "home"
    data = home / ".local" / "share" / "encore"  # the default data folder
    data.mkdir(parents=True)
    (data / "models").symlink_to(models_dir)
    values = {
        "ENCORE_TELEGRAM_TOKEN": fake.token,
        "ENCORE_TELEGRAM_API_URL": fake.api_url,
        "ENCORE_TELEGRAM_FILE_URL": fake.file_url,
        "ENCORE_STATUS_EDIT_INTERVAL_S": "0.2",
        "ENCORE_DEVICE": "cpu",
        "ENCORE_F0_METHOD": "pm",
    }
    env = {
        "HOME": str(home),
        "PATH": os.environ["PATH"],
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(ROOT),  # this checkout's code, wherever the package is installed
        **values,
    }
    for key, value in values.items():  # the catalog and the voice, added beforehand
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ENCORE_DATA_DIR", str(data))
    get_settings.cache_clear()
    s = get_settings()
    pth, index = voice_files["alice"]
    import_voice(s, f"telegram:{ADA}", "alice", [pth, index])
    add_song(s, song_wav, title="Test Song", artist="Tester")

    port = _free_port()
    serve = subprocess.Popen(
        [str(Path(sys.executable).with_name("encore")), "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(serve.stdout), daemon=True)
    reader.start()
    children: list[int] = []
    try:
        fake.wait_for(lambda: any("Encore is serving" in x for x in lines), 180, "serve to start")
        fake.wait_for(lambda: fake.calls_of("getUpdates"), 60, "the bot to poll")
        command = fake.send_text("/cover test song")

        def ended() -> Job | None:
            with session(s.database) as db:
                job = db.query(Job).one_or_none()
                return job if job is not None and job.state in TERMINAL else None

        job = fake.wait_for(ended, 300, "the job to end")
        assert job.state == "succeeded", job.reason
        [call] = fake.wait_for(lambda: fake.calls_of("sendAudio"), 30, "the cover")
        filename, audio = call.files["audio"]
        cover = tmp_path / filename
        cover.write_bytes(audio)
        assert abs(decode(cover, SR, 2).shape[1] - decode(song_wav, SR, 2).shape[1]) <= 0.010 * SR
        assert call.params["reply_parameters"]["message_id"] == command["message_id"]

        own = temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{port}/api"})
        with own, get_client(sync_client=True) as client:  # a deployment's run on its server
            run = client.read_flow_run(UUID(job.flow_run_id))
        assert run.deployment_id is not None and run.work_pool_name == s.cpu_pool
        assert run.state.is_completed()
        children = descendants(serve.pid)
        assert len(children) >= 6  # the server, a fork server, a warm host, two workers, the bot
        # Nothing started a throwaway Prefect server, and Prefect's files are Encore's.
        assert not [pid for pid in children if b"PREFECT__SERVER_EPHEMERAL=1" in _environ(pid)]
        assert (data / "prefect" / "prefect.db").is_file()
        assert not (home / ".prefect").exists()
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGTERM)
        try:
            code = serve.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            raise
        reader.join(5)
        sys.stderr.write("".join(lines[-40:]))
    assert code == 0, "".join(lines[-40:])
    assert not [pid for pid in children if _alive(pid)]  # nothing it started is left running
    marker = f"HOME={home}".encode()  # nor anything they started, even in a session of its own
    assert not [pid for pid in _pids() if marker in _environ(pid).split(b"\0")]


def test_serve_that_cannot_create_its_deployments_stops_with_a_sentence(settings, monkeypatch):
    from tests.conftest import run_cli

    tag = uuid.uuid4().hex[:6]
    monkeypatch.setenv("ENCORE_CPU_POOL", f"nodeploy-cpu-{tag}")
    monkeypatch.setenv("ENCORE_GPU_POOL", f"nodeploy-gpu-{tag}")
    monkeypatch.setenv("ENCORE_GPU_POOL_TYPE", "ecs")  # a container pool nobody created
    done = run_cli(settings, "serve")
    assert done.returncode == 1
    assert f"Work pool 'nodeploy-gpu-{tag}' (ecs) does not exist" in done.stderr
    assert "Creating the deployments failed" in done.stderr and "Traceback" not in done.stderr
    marker = f"ENCORE_CPU_POOL=nodeploy-cpu-{tag}".encode()  # in every process it started
    assert not [pid for pid in _pids() if marker in _environ(pid).split(b"\0")]


def test_serve_refuses_a_port_in_use_with_a_sentence(settings, monkeypatch):
    from tests.conftest import run_cli

    monkeypatch.delenv("PREFECT_API_URL")  # so it starts its own server
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_cli(settings, "serve", "--port", str(port))
    assert done.returncode == 1
    assert f"Port {port} is in use" in done.stderr and "--port" in done.stderr
    assert "Traceback" not in done.stderr


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_deploy_creates_the_pools_and_deployments_and_says_what_it_did(settings, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.utilities.importtools import import_object

    from flows.deployments import SPECS
    from tests.conftest import run_cli

    tag = uuid.uuid4().hex[:6]
    monkeypatch.setenv("ENCORE_CPU_POOL", f"deploy-cpu-{tag}")
    monkeypatch.setenv("ENCORE_GPU_POOL", f"deploy-gpu-{tag}")
    monkeypatch.setenv("ENCORE_GPU_COUNT", "2")
    done = run_cli(settings, "deploy")
    assert done.returncode == 0, done.stderr
    assert f"on deploy-gpu-{tag} (at most 2 at once)" in " ".join(done.stdout.split())
    with get_client(sync_client=True) as client:
        gpu = client.read_work_pool(f"deploy-gpu-{tag}")
        cpu = client.read_work_pool(f"deploy-cpu-{tag}")
        assert gpu.type == cpu.type == "process"
        assert gpu.concurrency_limit == 2 and cpu.concurrency_limit is None
        for spec in SPECS:  # every flow has a deployment on its pool, by module path
            flow_name = import_object(spec.entrypoint).name
            deployment = client.read_deployment_by_name(f"{flow_name}/encore")
            assert deployment.entrypoint == spec.entrypoint
            assert deployment.work_pool_name == (gpu.name if spec.pool == "gpu" else cpu.name)
        trending = client.read_deployment_by_name("trending-drop/encore")
        assert trending.paused  # no chart to read (ENCORE_CHART_URL unset)

    monkeypatch.delenv("PREFECT_API_URL")
    refused = run_cli(settings, "deploy")
    assert refused.returncode == 1
    assert "Set PREFECT_API_URL" in refused.stderr and "Traceback" not in refused.stderr


def test_a_job_the_server_does_not_take_ends_at_once_with_a_sentence(
    settings, voice_files, song_wav, monkeypatch
):
    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    from flows.errors import UserError
    from flows.settings import get_settings
    from flows.submit import SERVER_DOWN, submit_cover
    from tests.conftest import _free_port

    monkeypatch.setenv("ENCORE_RUN_MODE", "cluster")
    get_settings.cache_clear()
    s = get_settings()
    pth, index = voice_files["alice"]
    voice = import_voice(s, "u1", "alice", [pth, index])
    song = add_song(s, song_wav, title="Test Song", artist="Tester")
    dead = f"http://127.0.0.1:{_free_port()}/api"  # nothing listens there
    offline = temporary_settings({PREFECT_API_URL: dead, PREFECT_CLIENT_MAX_RETRIES: 0})
    with offline, pytest.raises(UserError) as refused:
        submit_cover("u1", song.id, voice.id, idempotency_key="k1", s=s)
    assert refused.value.message == SERVER_DOWN
    with session(s.database) as db:
        [job] = db.query(Job).all()
    assert job.state == "failed" and job.reason == SERVER_DOWN and job.flow_run_id is None
