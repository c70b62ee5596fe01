"""The bot process's lifecycle in the embedded mode: restarts resume, bursts lose nothing,
/cancel stops the work.

The real `encore bot telegram` runs as a subprocess against the fake Bot API
(`tests/fake_telegram.py`) and is stopped the way a redeploy (SIGTERM) or a crash (SIGKILL)
stops it; the cancel test runs the bot in-process to look at its job threads.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.catalog import add_song
from flows.db import Job, StemSet, StepRun, session
from flows.demo import synth_song
from flows.voices import import_voice
from gpu_worker.audio import decode, write_wav
from tests.conftest import cli_env, descendants
from tests.fake_telegram import BotProcess

SR = 44100
ENCORE = str(Path(sys.executable).with_name("encore"))
GENERIC = "Something went wrong"


def _song(s, tmp_path: Path, seconds: float):
    path = write_wav(tmp_path / f"song-{seconds:g}.wav", synth_song(seconds, seed=5), SR)
    return add_song(s, path, title="Test Song", artist="Tester"), path


def _voice(s, voice_files, user_id: int):
    pth, index = voice_files["alice"]
    return import_voice(s, f"telegram:{user_id}", "alice", [pth, index])


def _jobs(s) -> list[Job]:
    with session(s.database) as db:
        return list(db.query(Job).order_by(Job.created_at))


def _bot_env(s, **extra) -> dict:
    from gpu_worker.cpu import fast_allocator_env

    env = fast_allocator_env(cli_env(s))  # as the bot would re-exec itself: start once
    env.update({k: v for k, v in os.environ.items() if k.startswith("ENCORE_TELEGRAM")})
    env["ENCORE_STATUS_EDIT_INTERVAL_S"] = "0.2"
    env.update(extra)
    return env


class Bot:
    """`encore bot telegram` as a subprocess, its output in a file."""

    def __init__(self, env: dict, log: Path):
        self.log = log
        self._out = open(log, "a")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            [ENCORE, "bot", "telegram"], env=env, stdout=self._out, stderr=subprocess.STDOUT
        )

    def output(self) -> str:
        return self.log.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._out.close()
        return code


def _texts(fake, chat_id: int, message_id: int) -> list[str]:
    return [fake.bot_message(chat_id, message_id)["text"], *fake.edits(chat_id, message_id)]


# ------------------------------------------------------------------------------------------
# A restart mid-cover


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_restart_mid_cover_resumes_it_and_the_cover_arrives_once(
    fake, tg_settings, voice_files, tmp_path, how
):
    song, path = _song(tg_settings, tmp_path, 8.0)
    _voice(tg_settings, voice_files, 1)
    env = _bot_env(tg_settings)
    command = fake.send_text("/cover test song")  # waiting for the bot, as Telegram keeps it
    first = Bot(env, tmp_path / "bot1.log")
    try:
        fake.wait_for(
            lambda: [j for j in _jobs(tg_settings) if j.step == "separating"], 120, "the separation"
        )
    finally:
        code = first.stop(how)
    [job] = _jobs(tg_settings)
    assert job.state in ("queued", "running"), (job.state, job.reason)  # open, not failed
    if how == signal.SIGTERM:
        assert code == 0, first.output()
        assert "they continue when Encore starts again" in first.output()
        assert (job.state, job.step, job.runner) == ("queued", "interrupted", "released")
    assert not fake.calls_of("sendAudio")

    second = Bot(env, tmp_path / "bot2.log")
    try:
        audio = fake.wait_for(lambda: fake.calls_of("sendAudio"), 150, "the cover")
        done = fake.wait_for(
            lambda: [j for j in _jobs(tg_settings) if j.state == "succeeded"], 30, "the job to end"
        )
    finally:
        assert second.stop() == 0, second.output()
    assert len(fake.calls_of("sendAudio")) == 1
    assert done[0].attempts == (2 if how == signal.SIGKILL else 1)  # a crash counts, a stop not
    filename, data = audio[0].files["audio"]
    cover = tmp_path / filename
    cover.write_bytes(data)
    assert abs(decode(cover, SR, 2).shape[1] - decode(path, SR, 2).shape[1]) <= 0.010 * SR
    status = fake.replies_to(command)[0]
    texts = _texts(fake, 1, status["message_id"])
    assert any("Encore restarted; your cover continues." in t for t in texts), texts
    if how == signal.SIGTERM:
        assert any("Encore is restarting; your cover continues" in t for t in texts), texts
    assert texts[-1].endswith("✅ Done")
    assert not any(GENERIC in t for t in [*texts, *fake.sent_texts(1)])
    assert "Resuming 1 job(s)" in second.output()


# ------------------------------------------------------------------------------------------
# A burst at a fresh start, with the process's own Prefect backend


def _backends(pid: int) -> list[int]:
    found = []
    for child in descendants(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"flows.backend" in cmdline:
            found.append(child)
    return found


def _listening_ports(inodes: set[str] | None = None) -> list[int]:
    """TCP ports listened on (by the sockets `inodes`, or by anyone), from /proc/net/tcp."""
    ports = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and (inodes is None or fields[9] in inodes):  # LISTEN
            ports.append(int(fields[1].split(":")[1], 16))
    return ports


def _listening(pid: int) -> list[int]:
    """TCP ports process `pid` listens on."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return _listening_ports(inodes)


def test_a_burst_at_a_fresh_start_loses_nothing_and_leaves_no_server(
    fake, tg_settings, voice_files, tmp_path
):
    song, path = _song(tg_settings, tmp_path, 2.5)
    users = (11, 12, 13, 14)
    for uid in users:
        _voice(tg_settings, voice_files, uid)
    env = _bot_env(tg_settings, PREFECT_HOME=str(tmp_path / "prefect-home"))
    env.pop("PREFECT_API_URL")  # embedded: the bot runs its own Prefect backend
    commands = [fake.send_text("/cover test song", user_id=uid) for uid in users for _ in "ab"]
    bot = Bot(env, tmp_path / "bot.log")
    seen: set[int] = set()
    ports: set[int] = set()

    def delivered():
        for pid in _backends(bot.proc.pid):
            seen.add(pid)
            ports.update(_listening(pid))
        assert len(_backends(bot.proc.pid)) <= 1, "a second Prefect server"
        return len(fake.calls_of("sendAudio")) >= 8

    try:
        try:
            fake.wait_for(delivered, 240, "8 covers")
        except AssertionError:
            got = len(fake.calls_of("sendAudio"))
            states = [(j.state, j.step, j.reason) for j in _jobs(tg_settings)]
            raise AssertionError(
                f"{got} covers; jobs {states}; bot: {bot.output()[-4000:]}"
            ) from None
        # (two commands of a user in one second: the second gets its own job)
        assert all(fake.replies_to(c) for c in commands)
    finally:
        code = bot.stop()
    assert code == 0, bot.output()
    assert len(seen) == 1, seen  # one server for the process, whatever the burst
    [port] = ports
    gone = fake.wait_for(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in seen), 20, "the server to stop"
    )
    assert gone
    assert port not in _listening_ports()  # nobody listens there any more
    assert not list((tg_settings.data_dir / "prefect").iterdir())  # its database went with it
    audio = fake.calls_of("sendAudio")
    assert len(audio) == 8
    assert sorted(int(c.params["chat_id"]) for c in audio) == sorted(u for u in users for _ in "ab")
    want = decode(path, SR, 2).shape[1]
    for n, call in enumerate(audio):
        filename, data = call.files["audio"]
        cover = tmp_path / f"{n}-{filename}"
        cover.write_bytes(data)
        assert abs(decode(cover, SR, 2).shape[1] - want) <= 0.010 * SR
    assert {j.state for j in _jobs(tg_settings)} == {"succeeded"}
    assert "Traceback" not in bot.output()


# ------------------------------------------------------------------------------------------
# /cancel


def test_cancel_stops_the_separation_within_seconds(fake, tg_settings, voice_files, tmp_path):
    from flows import submit

    # (60 s of song take a while to separate, even with the tiny model)
    song, _path = _song(tg_settings, tmp_path, 60.0)
    _voice(tg_settings, voice_files, 1)
    process = BotProcess(tg_settings).start()
    try:
        command = fake.send_text("/cover test song")
        status = fake.wait_for(lambda: fake.replies_to(command), 30, "the status message")[0]
        [job] = fake.wait_for(
            lambda: [j for j in _jobs(tg_settings) if j.step == "separating" and j.progress > 0.11],
            120,
            "the separation to be under way",
        )
        thread = submit._threads[job.id]
        asked = time.monotonic()
        ask = fake.send_text("/cancel")
        fake.wait_for(lambda: fake.replies_to(ask), 30, "the answer to /cancel")
        fake.wait_for(lambda: not thread.is_alive(), 20, "the job's thread to end")
        took = time.monotonic() - asked
        fake.wait_for(
            lambda: fake.bot_message(1, status["message_id"])["text"].endswith("🚫 Cancelled."),
            20,
            "the status to say cancelled",
        )
    finally:
        process.stop()
    assert took < 10, took  # not the ~30 s the separation would have taken
    [ended] = _jobs(tg_settings)
    assert ended.state == "cancelled"
    with session(tg_settings.database) as db:  # the separation was stopped half way, not finished
        assert not db.query(StepRun).filter(StepRun.step == "separating").count()
        assert not db.query(StemSet).count()
    assert not fake.calls_of("sendAudio")
    assert not (tg_settings.work_dir / job.id).exists()


# ------------------------------------------------------------------------------------------
# The rules, fast


def _runner_of(pid: int) -> str:
    from flows.jobs import _boot_id, _proc_start

    return f"{socket.gethostname()[:100]}|{_boot_id()}|{pid}|{_proc_start(pid)}"


def test_which_open_jobs_a_starting_process_takes_over(settings):
    from datetime import timedelta

    from flows.db import now
    from flows.jobs import RELEASED, create_job, get_job, runner_alive, this_runner
    from flows.recovery import _lost

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone_runner = _runner_of(gone.pid)
    gone.wait()
    try:
        cases = {
            this_runner(): None,  # ours
            _runner_of(live.pid): None,  # another live process: never stolen
            RELEASED: "released",  # let go of at a shutdown
            gone_runner: "died",  # its process is gone
            f"{_runner_of(live.pid).rsplit('|', 1)[0]}|1": "died",  # its pid, reused since
            "elsewhere|x|1|1": None,  # another machine, row still fresh
        }
        assert runner_alive(_runner_of(live.pid)) is True
        assert runner_alive(gone_runner) is False
        assert runner_alive("elsewhere|x|1|1") is None
        for runner, want in cases.items():
            job = get_job(settings, create_job(settings, "cover", "u1", {}, runner=runner))
            assert _lost(settings, job, this_runner()) == want, runner
        stale = create_job(settings, "cover", "u1", {}, runner="elsewhere|x|1|1")
        with session(settings.database) as db:
            db.get(Job, stale).updated_at = now() - timedelta(hours=1)
        assert _lost(settings, get_job(settings, stale), this_runner()) == "died"
    finally:
        live.kill()
        live.wait()


def test_a_job_nobody_can_be_told_about_ends_with_a_sentence(settings):
    from flows.jobs import INTERRUPTED, RELEASED, create_job, get_job
    from flows.recovery import resume_lost_jobs

    cli_job = create_job(settings, "cover", "local", {"song_id": "x"}, runner=RELEASED)
    assert resume_lost_jobs(settings) == {"resumed": 0, "failed": 1}
    job = get_job(settings, cli_job)
    assert (job.state, job.reason) == ("failed", INTERRUPTED)


def test_status_lines_of_a_restart():
    from flows.chat.text import status_line

    assert status_line("queued", "interrupted", 0.3, kind="cover") == (
        "⏸ Encore is restarting; your cover continues when it is back."
    )
    assert status_line("queued", "restarted", 0.3, kind="cover") == (
        "🔄 Encore restarted; your cover continues."
    )
    assert status_line("queued", "restarted", 0.0, kind="train") == (
        "🔄 Encore restarted; your voice continues."
    )
    assert status_line("cancelled", "done", 0.3, kind="cover") == "🚫 Cancelled."


def test_a_subprocess_is_killed_as_soon_as_the_work_should_stop(tmp_path):
    from gpu_worker import cancel

    pidfile = tmp_path / "pid"
    script = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    started = time.monotonic()

    class Stop(Exception):
        pass

    def check() -> None:
        if pidfile.exists() and pidfile.read_text():
            raise Stop

    with pytest.raises(Stop), cancel.watching(check):
        cancel.run([sys.executable, "-c", script], timeout=120)
    assert time.monotonic() - started < 30
    pid = int(pidfile.read_text())
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    # Without a check it is plain subprocess.run.
    done = cancel.run([sys.executable, "-c", "print('hi')"], timeout=60, text=True)
    assert (done.returncode, done.stdout) == (0, "hi\n")


def test_a_killed_process_leaves_no_prefect_server_behind(settings, tmp_path):
    script = (
        "import time\n"
        "from flows import backend\n"
        "from flows.settings import get_settings\n"
        "backend.start(get_settings())\n"
        "print(backend.server_pid(), flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {**cli_env(settings), "PREFECT_HOME": str(tmp_path / "prefect-home")}
    env.pop("PREFECT_API_URL")
    proc = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        server = int(proc.stdout.readline())
        assert _listening(server)  # it serves
        assert _backends(proc.pid) == [server]
    finally:
        proc.kill()  # SIGKILL: no exit handler runs
        proc.wait()
        proc.stdout.close()

    def gone() -> bool:  # exited (a zombie that nobody reaped yet counts)
        try:
            return Path(f"/proc/{server}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            return True

    deadline = time.monotonic() + 30
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gone(), "the Prefect server outlived its process"
