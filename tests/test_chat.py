"""The chat side as a plug-in of the job lifecycle, and what each platform's users read.

Fast tests: the job runner tells a registered observer how a job goes and that it ended
(`flows.jobs.observe_jobs`), with no chat code of its own; the sentences of `flows.chat.text`
say what works on the platform they go to.
"""

from __future__ import annotations

import threading

from flows import jobs
from flows.chat import text
from flows.chat.text import cover_title, headline, status_line, wording
from flows.jobs import create_job, get_job, job_progress, job_step, run_job


class Recorder:
    """An observer that keeps what it heard."""

    every_s = waiting_every_s = 0.05

    def __init__(self) -> None:
        self.heard: list[tuple] = []
        self.ended_at_state: str | None = None
        self.done = threading.Event()

    def started(self) -> None:
        self.heard.append(("started",))

    def progressed(self, job) -> None:
        self.heard.append(("progressed", job.step, job.progress))

    def ended(self) -> None:
        self.heard.append(("ended",))
        self.done.set()


def test_the_job_runner_tells_its_observers_how_a_job_goes(settings, monkeypatch):
    monkeypatch.setattr(jobs, "_observer_factories", [])
    job_id = create_job(settings, "cover", "cli", {})
    other = create_job(settings, "cover", "cli", {})
    recorder = Recorder()
    jobs.observe_jobs(lambda s, jid: recorder if jid == job_id else None)
    seen_mixing = threading.Event()

    def body(workdir):
        with job_step(settings, job_id, "mixing", 0.5):
            report = job_progress(settings, job_id, 0.5, 0.9, every_s=0.0)
            report(0.5)
            # the observer sees the step before the body goes on (a positive sign, no sleep)
            assert seen_mixing.wait(30)
        return {"uri": "file:///nowhere"}

    original = recorder.progressed

    def progressed(job) -> None:
        original(job)
        if job.step == "mixing" and job.progress >= 0.7:
            seen_mixing.set()

    recorder.progressed = progressed
    assert run_job(settings, job_id, body)["state"] == "succeeded"
    assert recorder.done.is_set()
    assert recorder.heard[0] == ("started",) and recorder.heard[-1] == ("ended",)
    assert ("progressed", "mixing", 0.7) in recorder.heard
    assert get_job(settings, job_id).state == "succeeded"

    # A job no factory speaks for runs with no observer at all.
    assert run_job(settings, other, lambda workdir: {})["state"] == "succeeded"
    assert recorder.heard.count(("started",)) == 1


def test_a_failing_observer_never_fails_the_job(settings, monkeypatch):
    monkeypatch.setattr(jobs, "_observer_factories", [])

    class Broken(Recorder):
        def started(self) -> None:
            raise RuntimeError("the chat is down")

        def ended(self) -> None:
            super().ended()
            raise RuntimeError("the chat is still down")

    broken = Broken()
    jobs.observe_jobs(lambda s, jid: broken)
    jobs.observe_jobs(lambda s, jid: 1 / 0)  # a factory that raises: no observer from it
    job_id = create_job(settings, "stems", "cli", {})
    assert run_job(settings, job_id, lambda workdir: {"n": 1})["state"] == "succeeded"
    assert broken.done.is_set()
    assert get_job(settings, job_id).state == "succeeded"


def test_discord_users_are_not_told_of_telegram_only_commands():
    telegram, discord = wording("telegram"), wording("discord")
    assert "/done" in telegram.sample_over_total(600)
    every = [
        discord.sample_over_total(600),
        discord.training_over(),
        discord.trained("Ada", 120, False),
        discord.imported("Ada", "v2", 40000, True, True),
        discord.too_big("cover", 30 * 2**20, 25 * 2**20, None),
        discord.gave_up(6 * 3600),
    ]
    every.append(discord.send_song_file("cover"))
    assert not any("/done" in line or "reply to" in line for line in every)
    assert "reply to it with /cover" in telegram.send_song_file("cover")
    assert "Discord" in discord.gave_up(60) and "Telegram" in telegram.gave_up(60)
    assert discord.training_over().endswith("/train new.")


def test_a_shifted_cover_is_called_so():
    assert cover_title("Song", "alice", "cover", 2) == "Song (alice cover, +2)"
    assert cover_title("Song", "alice", "cover", 0) == "Song (alice cover)"
    assert cover_title("Song", "alice", "cover", 2) != cover_title("Song", "alice", "cover")
    assert headline("cover", "A - Song", "alice", -3) == "🎤 A - Song — sung by alice, -3 semitones"


def test_the_demo_voice_does_not_sing_in_your_voice():
    mine = status_line("running", "converting", 0.5, kind="cover")
    demo = status_line("running", "converting", 0.5, kind="cover", voice="demo")
    assert "Singing in your voice" in mine
    assert "your voice" not in demo and "“demo”" in demo


def test_a_size_over_a_limit_never_reads_as_the_limit():
    limit = 20 * 2**20
    said = wording("telegram").too_big("cover", int(20.5 * 2**20), limit, None)
    assert "20.5 MB, over Telegram's 20 MB limit" in said
    assert text.megabytes(300 * 1024) == "300 KB"
