"""The Telegram bot end to end: a real python-telegram-bot Application polls a fake Bot API.

Commands go in as updates at the fake (`tests/fake_telegram.py`); what the user would see comes
out as the requests the bot and the flows make there. Jobs run the real Prefect flows with the
tiny random-weight models, and their results are posted by the flows, not by the bot.
"""

from __future__ import annotations

import re
import subprocess
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from flows.catalog import add_song
from flows.db import Delivery, Job, UploadSession, User, Voice, session
from flows.demo import synth_song
from flows.voices import import_voice
from gpu_worker.audio import decode, encode, measure_loudness, write_wav
from tests.conftest import drain_jobs, telegram_env
from tests.fake_telegram import UPLOAD_LIMIT, BotProcess
from tests.privacy import assert_parameters_name_nobody

SR = 44100
ADA = 1  # the user id (and private chat id) most tests talk as
OWNER = f"telegram:{ADA}"


# ------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def alice(tg_settings, voice_files):
    pth, index = voice_files["alice"]
    return import_voice(tg_settings, OWNER, "alice", [pth, index])


@pytest.fixture
def song(tg_settings, song_wav):
    return add_song(tg_settings, song_wav, title="Test Song", artist="Tester")


def _jobs(settings, owner: str = OWNER) -> list[Job]:
    with session(settings.database) as db:
        return list(db.query(Job).filter(Job.owner == owner).order_by(Job.created_at))


def _wait_ended(settings, fake, count: int = 1, owner: str = OWNER, timeout: float = 120):
    def ended():
        jobs = _jobs(settings, owner)
        done = [j for j in jobs if j.state in ("succeeded", "failed", "cancelled")]
        if len(done) < count:
            return None
        with session(settings.database) as db:  # and delivered
            if db.query(Delivery).filter(Delivery.job_id.in_([j.id for j in done])).count() < count:
                return None
            if db.query(Delivery).filter(Delivery.state.in_(("sending", "waiting"))).count():
                return None
        return done

    return fake.wait_for(ended, timeout, "the jobs to end and be delivered")


def _reply(fake, message: dict, timeout: float = 30) -> dict:
    """The bot's first message in reply to `message`, as it looks now."""
    return fake.wait_for(lambda: fake.replies_to(message), timeout, "a reply")[0]


def _last_reply_text(fake, message: dict, timeout: float = 30) -> str:
    replies = fake.wait_for(lambda: fake.replies_to(message), timeout, "a reply")
    return replies[-1]["text"]


def _audio_file(call, tmp_path: Path) -> Path:
    filename, data = call.files["audio"]
    path = tmp_path / filename
    path.write_bytes(data)
    return path


STAGES = [
    ("Queued", "⏳ Queued"),
    ("resolving", "Fetching the song"),
    ("separating", "Separating vocals"),
    ("converting", "Singing in your voice"),
    ("mixing", "Mixing"),
    ("storing", "Saving"),
    ("uploading", "📤 Uploading"),
    ("done", "✅ Done"),
]


def _stage(text: str) -> str:
    line = text.splitlines()[-1]
    for name, marker in STAGES:
        if marker in line:
            return name
    raise AssertionError(f"no known stage in {line!r}")


def _stages(texts: list[str]) -> list[str]:
    """The stages a sequence of status texts went through, each once, in order."""
    out: list[str] = []
    for text in texts:
        stage = _stage(text)
        if not out or out[-1] != stage:
            out.append(stage)
    return out


# ------------------------------------------------------------------------------------------
# Covers


def test_cover_from_a_command_arrives_as_audio_with_status_edits_in_order(
    fake, bot, tg_settings, alice, song, song_wav, tmp_path, debug_logs
):
    """Logged at DEBUG all along: no line shows the token."""
    command = fake.send_text("/cover test song +2")
    status = _reply(fake, command)
    assert status["text"].startswith("🎤 Tester - Test Song — sung by alice, +2 semitones")
    assert "Queued" in status["text"]

    audio = fake.wait_for(lambda: fake.calls_of("sendAudio"), 120, "the cover")
    assert len(audio) == 1
    call = audio[0]
    assert call.params["title"] == "Test Song (alice cover, +2)"
    assert call.params["performer"] == "Tester"
    assert call.params["reply_parameters"]["message_id"] == command["message_id"]
    cover = _audio_file(call, tmp_path)
    assert cover.name == "Tester - Test Song (alice cover, +2).mp3"  # a +2 cover says so
    source = decode(song_wav, SR, 2).shape[1]
    assert abs(decode(cover, SR, 2).shape[1] - source) <= 0.010 * SR
    loud = measure_loudness(cover)
    assert abs(loud.integrated_lufs - tg_settings.loudness_lufs) <= 0.5
    assert loud.true_peak_dbtp <= tg_settings.true_peak_dbtp

    [job] = _wait_ended(tg_settings, fake)
    assert job.state == "succeeded" and job.params["options"]["pitch"] == 2
    # What Prefect keeps of the job names nobody: the chat and its messages stay in our database.
    assert_parameters_name_nobody(job, "Ada", status["text"].splitlines()[0])
    edits = fake.edits(ADA, status["message_id"])
    stages = _stages([status["text"], *edits])
    order = [name for name, _marker in STAGES]
    assert stages == sorted(stages, key=order.index), stages  # never backwards
    for needed in ("Queued", "separating", "converting", "uploading", "done"):
        assert needed in stages, stages
    assert stages[-1] == "done"
    times = [c.at for c in fake.calls_of("editMessageText")]
    assert all(b - a >= 0.19 for a, b in zip(times, times[1:], strict=False))  # throttled
    assert fake.bot_message(ADA, status["message_id"])["text"].endswith("✅ Done")
    text = "\n".join(debug_logs)
    assert "HTTP Request: POST http://127.0.0.1" in text  # httpx's lines were captured
    assert "/bot<redacted>/sendAudio" in text  # the courier's upload, by URL
    assert fake.token not in text and fake.token.split(":")[1] not in text


def test_choosing_song_and_voice_with_buttons_and_a_double_click_make_one_job(
    fake, bot, tg_settings, voice_files, song, tmp_path
):
    for name in ("alice", "bob"):
        pth, index = voice_files[name]
        import_voice(tg_settings, OWNER, name, [pth, index])
    other = write_wav(tmp_path / "tune.wav", synth_song(3.0, seed=5), SR)
    add_song(tg_settings, other, title="Test Tune", artist="Tester")

    command = fake.send_text("/cover tester test")
    menu = _reply(fake, command)
    assert menu["text"].startswith("Several songs match")
    labels = [row[0]["text"] for row in menu["reply_markup"]["inline_keyboard"]]
    assert sorted(labels) == ["Tester - Test Song", "Tester - Test Tune"]
    pick = next(
        row[0] for row in menu["reply_markup"]["inline_keyboard"] if row[0]["text"].endswith("Song")
    )
    fake.press(menu, pick["callback_data"])
    # Two voices and no default: the menu turns into a choice of voice.
    fake.wait_for(lambda: "Which voice" in fake.bot_message(ADA, menu["message_id"])["text"])
    voices = fake.bot_message(ADA, menu["message_id"])["reply_markup"]["inline_keyboard"]
    assert [row[0]["text"] for row in voices] == ["alice", "bob"]
    fake.press(menu, voices[1][0]["callback_data"])
    fake.wait_for(lambda: fake.calls_of("sendAudio"), 120, "the cover")
    [job] = _wait_ended(tg_settings, fake)
    assert job.params["song_id"] == song.id
    assert job.params["voice_id"] == _voice_id(tg_settings, "bob")

    # Now make alice the default through /voices' buttons, then cover by button twice.
    listing_cmd = fake.send_text("/voices")
    listing = _reply(fake, listing_cmd)
    assert "No default voice yet" in listing["text"]
    make_alice = next(
        row[0] for row in listing["reply_markup"]["inline_keyboard"] if "alice" in row[0]["text"]
    )
    fake.press(listing, make_alice["callback_data"])
    fake.wait_for(
        lambda: "alice is your default" in fake.bot_message(ADA, listing["message_id"])["text"]
    )

    command = fake.send_text("/cover tester test")
    menu = _reply(fake, command)
    fake.press(menu, pick["callback_data"])
    fake.press(menu, pick["callback_data"])  # a double click
    fake.wait_for(lambda: len(fake.calls_of("sendAudio")) == 2, 120, "the second cover")
    jobs = _wait_ended(tg_settings, fake, count=2)
    assert len(jobs) == 2  # the double click made no third job
    assert jobs[1].params["voice_id"] == _voice_id(tg_settings, "alice")
    status = fake.bot_message(ADA, menu["message_id"])  # the menu became the status message
    assert "sung by alice" in status["text"] and status["text"].endswith("✅ Done")
    assert "reply_markup" not in status
    answers = [c.params.get("text") for c in fake.calls_of("answerCallbackQuery")]
    assert "Already on it." in answers
    # Both outcomes are recorded as sent (each job is delivered once): no audio can follow.
    fake.wait_for(lambda: _delivery_states(tg_settings, jobs) == ["sent", "sent"], 30, "ledger")
    assert len(fake.calls_of("sendAudio")) == 2


def _delivery_states(settings, jobs: list[Job]) -> list[str | None]:
    with session(settings.database) as db:
        rows = [db.get(Delivery, job.id) for job in jobs]
        return [row.state if row is not None else None for row in rows]


def _voice_id(settings, name: str) -> str:
    with session(settings.database) as db:
        return db.query(Voice).filter(Voice.owner == OWNER, Voice.name == name).one().id


def test_a_command_delivered_twice_makes_one_job_and_one_status_message(
    fake, bot, tg_settings, alice, song
):
    command = fake.send_text("/karaoke test song")
    fake.redeliver(command)
    fake.wait_for(lambda: fake.calls_of("sendAudio"), 120, "the karaoke track")
    [job] = _wait_ended(tg_settings, fake)
    assert job.kind == "karaoke" and job.state == "succeeded"
    assert len(fake.replies_to(command)) == 2  # the status message and the track
    audio = fake.calls_of("sendAudio")
    assert len(audio) == 1 and audio[0].params["title"] == "Test Song (karaoke)"


def test_a_bot_restart_mid_job_still_delivers_the_result(fake, tg_settings, alice, song, tmp_path):
    first = BotProcess(tg_settings).start()
    try:
        command = fake.send_text("/cover test song")
        status = _reply(fake, command)
        fake.wait_for(lambda: _jobs(tg_settings) and _jobs(tg_settings)[0].state == "running")
    finally:
        first.stop()  # the bot goes away while the job runs
    assert not fake.calls_of("sendAudio")
    second = BotProcess(tg_settings).start()
    try:
        audio = fake.wait_for(lambda: fake.calls_of("sendAudio"), 120, "the cover")
        [job] = _wait_ended(tg_settings, fake)
        assert job.state == "succeeded"
        cover = _audio_file(audio[0], tmp_path)
        assert abs(decode(cover, SR, 2).shape[1] - 4 * SR) <= 0.010 * SR
        assert fake.bot_message(ADA, status["message_id"])["text"].endswith("✅ Done")
        ask = fake.send_text("/status")
        assert "✅ done" in _reply(fake, ask)["text"]
    finally:
        second.stop()
        drain_jobs()
    assert len(fake.calls_of("sendAudio")) == 1


def test_queued_jobs_show_their_place_in_line(fake, tg_settings, song, monkeypatch):
    from flows.jobs import _slots
    from flows.settings import get_settings

    monkeypatch.setenv("ENCORE_MAX_RUNNING_JOBS", "1")
    get_settings.cache_clear()
    s = get_settings()
    process = BotProcess(s).start()
    try:
        with _slots.hold(s, "someone-else"):  # the one slot is busy
            first = fake.send_text("/karaoke test song", user_id=11)
            _reply(fake, first)
            fake.wait_for(lambda: _jobs(s, "telegram:11"))
            second = fake.send_text("/karaoke test song", user_id=12)
            status = _reply(fake, second)
            fake.wait_for(
                lambda: any("#2 in line" in t for t in fake.edits(12, status["message_id"])),
                60,
                "the place in line",
            )
        for uid in (11, 12):
            _wait_ended(s, fake, owner=f"telegram:{uid}")
    finally:
        process.stop()
        drain_jobs()
    assert len(fake.calls_of("sendAudio")) == 2
    lines = [t.splitlines()[-1] for t in [status["text"], *fake.edits(12, status["message_id"])]]
    assert lines[:2] == [
        "⏳ Queued — yours is next",
        "⏳ Queued — #2 in line (1 job ahead of yours)",
    ]
    assert "⏳ Queued — yours is next" in lines[2:]  # the first job started
    assert lines[-1] == "✅ Done"


def test_cover_of_a_file_the_user_sent(fake, bot, tg_settings, alice, song_wav, tmp_path):
    mp3 = encode(song_wav, tmp_path / "my song.mp3", "mp3")
    sent = fake.send_audio(mp3.read_bytes(), "my song.mp3", title="Homemade", performer="Ada")
    hint = _reply(fake, sent)
    assert "Reply to it with /cover" in hint["text"]
    command = fake.send_text("/cover -3", reply_to=sent)
    status = _reply(fake, command)
    assert status["text"].startswith("🎤 Ada - Homemade — sung by alice, -3 semitones")
    audio = fake.wait_for(lambda: fake.calls_of("sendAudio"), 120, "the cover")
    [job] = _wait_ended(tg_settings, fake)
    assert job.params["options"]["pitch"] == -3
    cover = _audio_file(audio[0], tmp_path)
    assert abs(decode(cover, SR, 2).shape[1] - decode(mp3, SR, 2).shape[1]) <= 0.010 * SR


# ------------------------------------------------------------------------------------------
# What goes wrong, as users see it


def test_unknown_songs_missing_voices_and_malformed_commands_get_one_helpful_sentence(
    fake, bot, tg_settings, song
):
    def ask(text: str, user_id: int = ADA) -> str:
        return _last_reply_text(fake, fake.send_text(text, user_id=user_id))

    assert ask("/cover test song").startswith("You have no voice of your own yet")  # the demo
    assert ask("/cover").startswith("Tell me which song")
    assert "-12 to +12" in ask("/cover test song +40")
    assert ask("/karaoke").startswith("Tell me which song: /karaoke")
    assert ask("/frobnicate").startswith("I don't know /frobnicate")
    assert ask("/voice nobody").startswith("You have no voice called")
    assert ask("/train").startswith("Give the voice a name")
    assert ask("/train ../../etc").startswith("A voice name is")
    assert ask("/done").startswith("Nothing to finish")
    assert ask("/cancel").startswith("Nothing to cancel")
    assert ask("/status").startswith("You have no jobs yet")
    assert ask("hello there").startswith("Send /cover <song>")
    for text in fake.sent_texts(ADA):
        assert "Traceback" not in text and len(text.splitlines()) <= 12
    assert not _jobs(tg_settings)


def test_unknown_song_with_a_voice(fake, bot, tg_settings, alice, song):
    reply = _last_reply_text(fake, fake.send_text("/cover zzqx wobble"))
    assert reply.startswith("No song in the catalog matches “zzqx wobble”")
    assert not _jobs(tg_settings)


def test_oversized_files_are_refused_before_downloading(fake, bot, tg_settings):
    start = fake.send_text("/train Me")
    assert "voice notes" in _last_reply_text(fake, start)
    big = b"\0" * (21 * 1024 * 1024)
    note = fake.send_voice(big, duration=600)
    reply = _last_reply_text(fake, note)
    assert reply == (
        "That file is 21 MB, and Telegram lets bots download at most 20 MB; "
        "send a shorter or more compressed file."
    )
    assert not fake.calls_of("getFile")
    # A file whose size the update does not tell: the Bot API refuses it, and so do we.
    quiet = fake.send_voice(big, duration=600, announce_size=False)
    assert _last_reply_text(fake, quiet).startswith("That file is")
    assert len(fake.calls_of("getFile")) == 0  # refused by the API: no successful getFile
    assert [c for c in fake.calls if c.method == "getFile" and c.status == 400]
    with session(tg_settings.database) as db:
        [upload] = db.query(UploadSession).filter(UploadSession.owner == OWNER).all()
        assert upload.state == "open"


def test_rate_limits_and_quotas_say_when_to_try_again(fake, tg_settings, alice, song, monkeypatch):
    from datetime import timedelta

    from flows.db import Usage, now
    from flows.jobs import update_job
    from flows.settings import get_settings
    from flows.users import create_counted_job

    monkeypatch.setenv("ENCORE_RATE_LIMIT_JOBS", "2")
    monkeypatch.setenv("ENCORE_QUOTA_JOBS_PER_DAY", "3")
    get_settings.cache_clear()
    s = get_settings()
    for _ in range(2):
        update_job(s, create_counted_job(s, "cover", OWNER, {}), state="succeeded")
    process = BotProcess(s).start()
    try:
        reply = _last_reply_text(fake, fake.send_text("/cover test song"))
        assert reply.startswith("That is a lot at once: at most 2 new jobs per 1 min.")
        assert re.search(r"Try again in (\d+ s|1 min)\.$", reply), reply
        with session(s.database) as db:  # the rate window has passed
            for row in db.query(Usage):
                row.created_at = now() - timedelta(hours=23)
        update_job(s, create_counted_job(s, "karaoke", OWNER, {}), state="succeeded")
        with session(s.database) as db:  # the three jobs were made 23 hours ago
            for row in db.query(Usage):
                row.created_at = now() - timedelta(hours=23)
        reply = _last_reply_text(fake, fake.send_text("/stems test song"))
        assert reply.startswith("You have used today's 3 covers, karaoke tracks and stems.")
        assert "Try again in 1 h." in reply or "Try again in 59 min" in reply, reply
    finally:
        process.stop()
        drain_jobs()
    assert len(_jobs(s)) == 3  # nothing new was submitted


def test_an_unexpected_error_ends_in_one_sentence(fake, bot):
    fake.fail_next("sendMessage", code=400, description="Bad Request: chat is being rebuilt")
    fake.send_text("/help")
    texts = fake.wait_for(lambda: fake.sent_texts(ADA), 30, "the apology")
    assert texts == ["Something went wrong on our side; please try again in a minute."]


# ------------------------------------------------------------------------------------------
# Voices: training, importing, the default


@pytest.fixture(scope="module")
def voice_notes(tmp_path_factory, spoken) -> list[bytes]:
    """Three spoken voice notes (Opus in Ogg, as Telegram records them)."""
    root = tmp_path_factory.mktemp("notes")
    return [encode(raw, root / f"note{i}.ogg", "opus").read_bytes() for i, raw in enumerate(spoken)]


def test_training_a_voice_from_voice_notes(fake, settings, voice_notes, monkeypatch, tmp_path):
    import json

    from flows.settings import get_settings
    from tests.tiny_rvc import TINY_TRAIN_OVERRIDE

    telegram_env(
        monkeypatch,
        fake,
        train_config=json.dumps(TINY_TRAIN_OVERRIDE),
        train_min_seconds=3,
        train_epochs=1,
        train_batch_size=2,
        train_save_every=1,
    )
    get_settings.cache_clear()
    s = get_settings()
    process = BotProcess(s).start()
    try:
        assert "Let's clone “Me”" in _last_reply_text(fake, fake.send_text("/train Me"))
        silent = write_wav(tmp_path / "quiet.wav", np.zeros((1, SR * 3), np.float32), SR)
        quiet = encode(silent, tmp_path / "quiet.ogg", "opus").read_bytes()
        refused = _last_reply_text(fake, fake.send_voice(quiet, duration=3))
        assert refused.startswith("⚠️ I can't use that one: This clip is mostly silence")
        counts = []
        for note in voice_notes:
            sent = fake.send_voice(note, duration=4)
            counts.append(_last_reply_text(fake, sent))
        assert counts[0].startswith("🎙 Got ") and "Total:" in counts[0]
        assert "in 3 clips" in counts[-1]
        fake.redeliver(sent)  # the same voice note again: counted once, no second answer

        done = fake.send_text("/done")
        ask = _reply(fake, done)
        assert "is this your own voice" in ask["text"]
        consent = ask["reply_markup"]["inline_keyboard"][0][0]
        fake.press(ask, consent["callback_data"])
        fake.press(ask, consent["callback_data"])  # a double click trains once

        preview = fake.wait_for(lambda: fake.calls_of("sendAudio"), 300, "the preview")
        [job] = _wait_ended(s, fake, timeout=300)
        assert job.kind == "train" and job.state == "succeeded", job.reason
        assert len(job.params["samples"]) == 3  # the silent clip and the repeat were left out
        caption = preview[0].params["caption"]
        assert caption.startswith("Your voice “Me” is ready")
        assert "It is your default voice now" in caption
        stages = _stages_any(fake.edits(ADA, ask["message_id"]))
        assert "Training your voice" in stages and stages[-1] == "done", stages
        assert "⭐ default" in _last_reply_text(fake, fake.send_text("/voices"))
    finally:
        process.stop()
        drain_jobs()
    assert len(fake.calls_of("sendAudio")) == 1
    with session(s.database) as db:
        assert db.query(Job).filter(Job.kind == "train").count() == 1
        voice = db.query(Voice).filter(Voice.owner == OWNER).one()
        assert voice.name == "Me" and voice.source == "trained" and voice.consent


def _stages_any(texts: list[str]) -> list[str]:
    """Like `_stages`, but keeps the label of any step (training has its own)."""
    out: list[str] = []
    for text in texts:
        line = text.splitlines()[-1]
        label = "done" if "✅ Done" in line else line.split("…")[0].lstrip("⚙️⏳📤 ").strip()
        if not out or out[-1] != label:
            out.append(label)
    return out


def test_importing_a_zipped_model(fake, bot, tg_settings, voice_files, tmp_path):
    pth, index = voice_files["bob"]
    archive = tmp_path / "Bobby.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(pth, "bob/model.pth")
        zf.write(index, "bob/added_IVF5_Flat_nprobe_1_bob_v2.index")
    assert "📦 Send me the RVC model" in _last_reply_text(fake, fake.send_text("/import"))
    sent = fake.send_document(archive.read_bytes(), "Bobby.zip", "application/zip")
    status = _reply(fake, sent)
    assert status["text"].startswith("📦 Importing the voice “Bobby”")
    said = fake.wait_for(
        lambda: [t for t in fake.sent_texts(ADA) if t.startswith("✅ Imported")], 60, "import"
    )
    assert said[0].startswith("✅ Imported “Bobby” (RVC v2, 40 kHz, with its index).")
    [job] = _wait_ended(tg_settings, fake)
    assert job.state == "succeeded"
    listing = _last_reply_text(fake, fake.send_text("/voices"))
    assert "• Bobby (imported) ⭐ default" in listing
    bad = fake.send_document(b"not a model", "notes.txt", "text/plain")
    assert _last_reply_text(fake, bad) == (
        "That file is not audio I can use; send an mp3, m4a, ogg, wav or flac file."
    )


# ------------------------------------------------------------------------------------------
# Cancelling and forgetting


def test_cancel_then_forget_removes_everything(fake, bot, tg_settings, alice, song, monkeypatch):
    command = fake.send_text("/cover test song")
    status = _reply(fake, command)
    cancelled = _last_reply_text(fake, fake.send_text("/cancel"))
    assert cancelled.startswith("🚫 Cancelled: 🎤 Tester - Test Song")
    [job] = _wait_ended(tg_settings, fake)
    assert job.state == "cancelled"
    fake.wait_for(
        lambda: fake.bot_message(ADA, status["message_id"])["text"].endswith("Cancelled.")
    )

    fake.send_text("/karaoke test song")
    fake.wait_for(lambda: fake.calls_of("sendAudio"), 120, "the karaoke track")
    _wait_ended(tg_settings, fake, count=2)
    _reply(fake, fake.send_text("/train Later"))
    files = tg_settings.data_dir / "files"
    assert list(files.glob("results/*")) and list(files.glob("voices/*"))

    ask = _reply(fake, fake.send_text("/forget"))
    assert "cannot be undone" in ask["text"]
    yes = ask["reply_markup"]["inline_keyboard"][0][0]
    assert yes["text"] == "🗑 Delete everything" and yes["callback_data"].startswith("fy|")
    fake.press(ask, yes["callback_data"])
    fake.wait_for(lambda: fake.bot_message(ADA, ask["message_id"])["text"].startswith("Done:"))
    final = fake.bot_message(ADA, ask["message_id"])["text"]
    assert final.startswith("Done: I deleted 1 voice, 2 jobs with their files")
    with session(tg_settings.database) as db:
        assert db.query(Voice).filter(Voice.owner == OWNER).count() == 0
        assert db.query(Job).filter(Job.owner == OWNER).count() == 0
        assert db.query(UploadSession).filter(UploadSession.owner == OWNER).count() == 0
        assert db.get(User, OWNER) is None
    assert not list(files.glob("results/*/*")) and not list(files.glob("voices/*/*"))
    assert not list(files.glob("covers/*/*"))
    assert list(files.glob("songs/*/*"))  # the song is the catalog's, not hers: it stays


# ------------------------------------------------------------------------------------------
# Chat administration, delivery limits, webhook mode


def test_trending_is_for_chat_admins(fake, bot, tg_settings, alice):
    group = fake.group_chat(-100555)
    fake.make_admin(-100555, ADA)

    def ask(text: str, user_id: int) -> str:
        return _last_reply_text(fake, fake.send_text(text, user_id=user_id, chat=group))

    assert ask("/trending on", 2).startswith("Only this chat's admins")
    assert ask("/trending on", ADA).startswith("📈 This chat will get covers of the trending")
    assert "sung by alice" in fake.sent_texts(-100555)[-1]
    assert ask("/trending", 2).startswith("This chat gets the trending covers")
    members = fake.calls_of("getChatMember")
    assert [(c.int("chat_id"), c.int("user_id")) for c in members] == [(-100555, 2), (-100555, 1)]
    from flows.db import ChatSubscription

    with session(tg_settings.database) as db:
        [sub] = db.query(ChatSubscription).all()
        assert (sub.platform, sub.chat_id, sub.kind) == ("telegram", "-100555", "trending")
    assert ask("/trending off", ADA).startswith("📉")
    with session(tg_settings.database) as db:
        assert db.query(ChatSubscription).count() == 0


def _finished_job(settings, kind: str, result: dict, params: dict) -> str:
    from flows.jobs import create_job, update_job

    reply_to = {"platform": "telegram", "chat_id": ADA, "status_message_id": None}
    job_id = create_job(settings, kind, OWNER, params, reply_to=reply_to)
    update_job(settings, job_id, state="succeeded", step="done", progress=1.0, result=result)
    return job_id


def test_results_over_the_upload_limit_go_as_a_link_or_a_reason(
    fake, tg_settings, song, monkeypatch, tmp_path
):
    from flows.chat import deliver
    from flows.chat.ledger import delivery_state
    from flows.settings import get_settings
    from flows.storage import open_storage

    big = tmp_path / "big.mp3"
    with open(big, "wb") as fh:
        fh.truncate(UPLOAD_LIMIT + 1024)
    uri = open_storage(tg_settings.storage).put(big, "covers/x/big.mp3")
    result = {"uri": uri, "filename": "big.mp3", "duration": 4.0}

    job = _finished_job(tg_settings, "karaoke", result, {"song_id": song.id})
    assert deliver(tg_settings, job)
    assert not deliver(tg_settings, job)  # exactly once
    assert fake.sent_texts(ADA)[-1].endswith("this server cannot make download links; try a "
                                             "shorter song.")  # fmt: skip

    monkeypatch.setenv("ENCORE_PUBLIC_FILES_URL", "https://files.example.org/encore")
    get_settings.cache_clear()
    linked = get_settings()
    job = _finished_job(linked, "karaoke", result, {"song_id": song.id})
    assert deliver(linked, job)
    assert fake.sent_texts(ADA)[-1].endswith(
        "download it here: https://files.example.org/encore/covers/x/big.mp3"
    )
    assert not fake.calls_of("sendAudio")

    # When the server's limit is below what we were told, its 413 leads to the link, too.
    monkeypatch.setenv("ENCORE_TELEGRAM_UPLOAD_LIMIT_BYTES", str(2 * UPLOAD_LIMIT))
    get_settings.cache_clear()
    trusting = get_settings()
    job = _finished_job(trusting, "karaoke", result, {"song_id": song.id})
    assert deliver(trusting, job)
    assert [c.status for c in fake.calls if c.method == "sendAudio"] == [413]
    assert "download it here" in fake.sent_texts(ADA)[-1]
    assert delivery_state(trusting, job) == "sent"


def test_transient_api_errors_are_retried_and_the_result_is_sent_once(
    fake, tg_settings, song, song_wav, tmp_path
):
    from flows.chat import deliver
    from flows.chat.ledger import delivery_state
    from flows.storage import open_storage

    mp3 = encode(song_wav, tmp_path / "k.mp3", "mp3")
    uri = open_storage(tg_settings.storage).put(mp3, "results/y/k.mp3")
    job = _finished_job(
        tg_settings, "karaoke", {"uri": uri, "filename": "k.mp3"}, {"song_id": song.id}
    )
    fake.fail_next("sendAudio", times=1, code=502, description="Bad Gateway")
    fake.fail_next("sendAudio", times=1, code=429, description="Too Many Requests: retry after 1")
    assert deliver(tg_settings, job)
    assert [c.status for c in fake.calls if c.method == "sendAudio"] == [502, 429, 200]
    assert len(fake.calls_of("sendAudio")) == 1
    assert delivery_state(tg_settings, job) == "sent"

    fake.fail_next("sendAudio", times=10, code=403, description="Forbidden: bot was blocked")
    job = _finished_job(
        tg_settings, "karaoke", {"uri": uri, "filename": "k.mp3"}, {"song_id": song.id}
    )
    assert deliver(tg_settings, job)
    assert delivery_state(tg_settings, job) == "failed"  # not retried: the user blocked us
    assert [c.status for c in fake.calls if c.method == "sendAudio"][-1] == 403
    assert sum(1 for c in fake.calls if c.status == 403) == 1


# ------------------------------------------------------------------------------------------
# Delivery faults: nothing lost, at most one duplicate, and only when an answer was lost


def _scaled(monkeypatch, **values):
    """Settings with `values` (delivery times compressed by `delivery_time_scale`)."""
    from flows.settings import get_settings

    for key, value in values.items():
        monkeypatch.setenv(f"ENCORE_{key.upper()}", str(value))
    get_settings.cache_clear()
    return get_settings()


def _ledger(settings, job_id: str) -> Delivery:
    with session(settings.database) as db:
        return db.get(Delivery, job_id)


def _karaoke_ready(settings, song, song_wav, tmp_path, fake, status: bool = False) -> str:
    """A finished karaoke job whose track waits to be delivered (with a status message)."""
    from flows.jobs import create_job, update_job
    from flows.storage import open_storage

    mp3 = encode(song_wav, tmp_path / "k.mp3", "mp3")
    uri = open_storage(settings.storage).put(mp3, f"results/{time.monotonic_ns()}/k.mp3")
    reply_to = {"platform": "telegram", "chat_id": ADA, "status_message_id": None}
    if status:
        shown = fake._bot_message({"chat_id": ADA}, text="🎶 Karaoke: Test Song\n⚙️ Saving…")
        reply_to["status_message_id"] = shown["message_id"]
    job_id = create_job(settings, "karaoke", OWNER, {"song_id": song.id}, reply_to=reply_to)
    result = {"uri": uri, "filename": "k.mp3"}
    update_job(settings, job_id, state="succeeded", step="done", progress=1.0, result=result)
    return job_id


def test_a_429_longer_than_a_minute_is_waited_out_and_the_cover_arrives_once(
    fake, tg_settings, alice, song, monkeypatch
):
    s = _scaled(monkeypatch, delivery_time_scale=0.02)  # 90 s of Telegram's wait is 1.8 s
    fake.fail_next("sendAudio", code=429, description="Too Many Requests", retry_after=90)
    process = BotProcess(s).start()
    try:
        status = _reply(fake, fake.send_text("/cover test song"))
        [job] = _wait_ended(s, fake, timeout=180)
        texts = [status["text"], *fake.edits(ADA, status["message_id"])]
        assert any(t.endswith("⏳ Waiting for Telegram to accept the upload…") for t in texts)
        assert fake.bot_message(ADA, status["message_id"])["text"].endswith("✅ Done")
    finally:
        process.stop()
        drain_jobs()
    refused, sent = [c for c in fake.calls if c.method == "sendAudio"]
    assert (refused.status, sent.status) == (429, 200)
    assert sent.at - refused.at >= 90 * 0.02  # retry_after honoured in full, not capped
    assert job.state == "succeeded" and _ledger(s, job.id).state == "sent"
    assert _ledger(s, job.id).attempts == 2


def test_a_crash_between_claim_and_send_is_delivered_by_the_sweeper_once(
    fake, tg_settings, song, song_wav, tmp_path, monkeypatch
):
    import os
    import sys

    from tests.conftest import cli_env

    s = _scaled(monkeypatch, delivery_time_scale=0.02)  # a 60 s lease runs out in 1.2 s
    job = _karaoke_ready(s, song, song_wav, tmp_path, fake)
    crash = (
        "import os, signal, sys\n"
        "from flows.chat.ledger import claim\n"
        "from flows.settings import get_settings\n"
        "assert claim(get_settings(), sys.argv[1]) is not None\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**cli_env(s), **{k: v for k, v in os.environ.items() if k.startswith("ENCORE_")}}
    died = subprocess.run([sys.executable, "-c", crash, job], env=env, timeout=120)
    assert died.returncode == -9
    assert _ledger(s, job).state == "sending" and not fake.calls_of("sendAudio")
    process = BotProcess(s).start()  # its sweeper finds the claim of a dead holder
    try:
        fake.wait_for(lambda: _ledger(s, job).state == "sent", 60, "the sweeper's delivery")
        from flows.chat import deliver_pending

        assert deliver_pending(s) == 0  # a second sweep finds nothing to do
    finally:
        process.stop()
    assert len(fake.calls_of("sendAudio")) == 1


def test_a_lost_answer_after_an_upload_gives_at_most_two_copies_and_says_why(
    fake, tg_settings, song, song_wav, tmp_path, monkeypatch
):
    from flows.chat import deliver

    s = _scaled(monkeypatch, delivery_read_timeout_s=1, delivery_time_scale=0.02)
    job = _karaoke_ready(s, song, song_wav, tmp_path, fake)
    fake.delay_next("sendAudio", 2.5)  # sent, but its answer comes after the client gave up
    assert deliver(s, job)
    copies = fake.calls_of("sendAudio")
    assert len(copies) == 2 and copies[0].late and not copies[1].late
    row = _ledger(s, job)
    assert row.state == "sent"
    assert row.detail["parts"]["1"]["lost"] == 1
    assert "ReadTimeout" in row.detail["parts"]["1"]["why"]

    job = _karaoke_ready(s, song, song_wav, tmp_path, fake)
    fake.delay_next("sendAudio", 2.5, times=5)  # every answer lost: never a third copy
    assert deliver(s, job)
    fake.wait_for(lambda: len(fake.calls_of("sendAudio")) == 4, 10, "the late answers")
    assert len(fake.calls_of("sendAudio")) == 4  # two for this job
    row = _ledger(s, job)
    assert row.state == "sent" and row.detail["parts"]["1"]["unconfirmed"]


def test_a_delivery_refused_past_the_give_up_time_ends_in_one_sentence(
    fake, tg_settings, song, song_wav, tmp_path, monkeypatch
):
    from flows.chat import deliver, deliver_pending
    from flows.jobs import get_job, reply_target

    s = _scaled(monkeypatch, delivery_give_up_s=600, delivery_time_scale=0.005)  # 3 s
    job = _karaoke_ready(s, song, song_wav, tmp_path, fake, status=True)
    status_id = reply_target(s, job)["status_message_id"]
    fake.fail_for("sendAudio", 3600)
    assert deliver(s, job)  # tries, waits what it may, then leaves the rest to the sweeper

    def swept():
        deliver_pending(s)
        return _ledger(s, job).state == "gave_up"

    fake.wait_for(swept, 60, "giving up")
    sentence = (
        "❌ It was ready, but Telegram refused it for 10 min, so I stopped trying; "
        "please ask again."
    )
    shown = fake.edits(ADA, status_id)
    assert any(t.endswith("⏳ Waiting for Telegram to accept the upload…") for t in shown)
    assert fake.bot_message(ADA, status_id)["text"].endswith(sentence)
    assert get_job(s, job).result["undelivered"] == sentence
    assert not fake.calls_of("sendAudio")
    assert _ledger(s, job).attempts > 3


def test_webhook_mode_checks_the_secret_token(fake, tg_settings):
    import asyncio
    import json as jsonlib
    import urllib.error
    import urllib.request

    from tests.fake_telegram import free_port

    process = BotProcess(tg_settings)
    process._loop = asyncio.new_event_loop()
    import threading

    process._thread = threading.Thread(target=process._loop.run_forever, daemon=True)
    process._thread.start()
    process.app = process.bot.build()
    port = free_port()
    url = "https://bot.example.org/telegram-hook"

    async def start():
        await process.app.initialize()
        await process.app.start()
        await process.app.updater.start_webhook(
            listen="127.0.0.1",
            port=port,
            url_path="telegram-hook",
            webhook_url=url,
            secret_token="s3cret-token",
        )

    process.run(start())
    try:
        assert fake.webhook["url"] == url and fake.webhook["secret_token"] == "s3cret-token"
        update = {
            "update_id": 1,
            "message": {
                "message_id": 1,
                "date": int(time.time()),
                "chat": fake.private_chat(ADA),
                "from": fake.user(ADA),
                "text": "/help",
                "entities": [{"type": "bot_command", "offset": 0, "length": 5}],
            },
        }

        def post(secret: str | None) -> int:
            headers = {"Content-Type": "application/json"}
            if secret:
                headers["X-Telegram-Bot-Api-Secret-Token"] = secret
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/telegram-hook",
                data=jsonlib.dumps(update).encode(),
                headers=headers,
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return response.status
            except urllib.error.HTTPError as exc:
                return exc.code

        assert post(None) == 403
        assert post("wrong") == 403
        assert not fake.sent_texts(ADA)
        assert post("s3cret-token") == 200
        texts = fake.wait_for(lambda: fake.sent_texts(ADA), 20, "the help")
        assert "/cover" in texts[0]
    finally:
        process.stop()


def test_encore_bot_telegram_runs_from_the_command_line(fake, tg_settings):
    import os
    import signal
    import sys

    from tests.conftest import cli_env

    encore = str(Path(sys.executable).with_name("encore"))
    env = cli_env(tg_settings)
    env.pop("ENCORE_TELEGRAM_TOKEN", None)
    missing = subprocess.run(
        [encore, "bot", "telegram"], env=env, capture_output=True, text=True, timeout=120
    )
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        "Error: Set ENCORE_TELEGRAM_TOKEN to the token BotFather gave your bot "
        "(see the README's Telegram section)."
    )

    env.update({k: v for k, v in os.environ.items() if k.startswith("ENCORE_TELEGRAM")})
    fake.send_text("/start")  # waiting for the bot, as Telegram would keep it
    proc = subprocess.Popen(
        [encore, "bot", "telegram"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        texts = fake.wait_for(lambda: fake.sent_texts(ADA), 120, "the bot's answer")
        assert texts[0].startswith("🎤 Encore makes AI covers")
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "Encore's Telegram bot is running (polling); Ctrl-C stops it." in out
    assert "Traceback" not in out
    assert "HTTP Request" not in out  # httpx is quiet unless --debug
    assert fake.token not in out


def test_encore_debug_bot_telegram_logs_requests_without_the_token(fake, tg_settings):
    import os
    import signal
    import sys

    from tests.conftest import cli_env

    encore = str(Path(sys.executable).with_name("encore"))
    env = cli_env(tg_settings)
    env.update({k: v for k, v in os.environ.items() if k.startswith("ENCORE_TELEGRAM")})
    fake.send_text("/help")
    proc = subprocess.Popen(
        [encore, "--debug", "bot", "telegram"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        fake.wait_for(lambda: fake.sent_texts(ADA), 120, "the bot's answer")
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "/bot<redacted>/getUpdates" in out  # the library's debug lines, URLs included
    assert fake.token not in out and fake.token.split(":")[1] not in out


# ------------------------------------------------------------------------------------------
# Buttons and identities in a group


BOB = 2
GROUP = -100888


def _state(settings) -> dict:
    """What each user has: their voices (with the default) and their jobs."""
    with session(settings.database) as db:
        voices = sorted((v.owner, v.name, v.id) for v in db.query(Voice).all())
        jobs = sorted((j.owner, j.id) for j in db.query(Job).all())
        defaults = sorted((u.id, u.default_voice_id) for u in db.query(User).all())
    return {"voices": voices, "jobs": jobs, "defaults": defaults}


def _buttons(message: dict) -> list[dict]:
    return [b for row in message.get("reply_markup", {}).get("inline_keyboard", []) for b in row]


def test_in_a_group_nobody_can_press_another_members_buttons(
    fake, bot, tg_settings, voice_files, song, tmp_path
):
    for owner in (OWNER, f"telegram:{BOB}"):  # two voices each, no default: menus
        for name in ("alice", "bob"):
            pth, index = voice_files[name]
            import_voice(tg_settings, owner, name, [pth, index])
    other = write_wav(tmp_path / "tune.wav", synth_song(3.0, seed=5), SR)
    add_song(tg_settings, other, title="Test Tune", artist="Tester")
    group = fake.group_chat(GROUP)

    def ask(text: str, user_id: int) -> dict:
        return _reply(fake, fake.send_text(text, user_id=user_id, chat=group))

    def press(message: dict, data: str, user_id: int) -> str:
        query = fake.press(message, data, user_id=user_id)
        fake.wait_for(lambda: fake.answer_to(query) is not None, 30, "the answer")
        return fake.answer_to(query)

    ada_forget, bob_forget = ask("/forget", ADA), ask("/forget", BOB)
    ada_menu = ask("/cover tester test", ADA)
    bob_voices = ask("/voices", BOB)
    before = _state(tg_settings)

    # Each presses the other's /forget confirmation, song menu and voice buttons.
    assert press(ada_forget, _buttons(ada_forget)[0]["callback_data"], BOB) == (
        "This button is for Ada."
    )
    assert press(bob_forget, _buttons(bob_forget)[0]["callback_data"], ADA) == (
        "This button is for Bob."
    )
    song_pick = next(b for b in _buttons(ada_menu) if b["text"].endswith("Song"))
    assert press(ada_menu, song_pick["callback_data"], BOB) == "This button is for Ada."
    make_default = _buttons(bob_voices)[0]
    assert press(bob_voices, make_default["callback_data"], ADA) == "This button is for Bob."

    # Ada's own press works: her song menu becomes her voice menu, which Bob cannot use.
    press(ada_menu, song_pick["callback_data"], ADA)
    fake.wait_for(lambda: "Which voice" in fake.bot_message(GROUP, ada_menu["message_id"])["text"])
    voice_menu = fake.bot_message(GROUP, ada_menu["message_id"])
    assert press(voice_menu, _buttons(voice_menu)[0]["callback_data"], BOB) == (
        "This button is for Ada."
    )
    # A forged button on her own menu with a key change of +99 is refused like /cover +99.
    verb, tag, song_ref, voice_ref, _pitch = _buttons(voice_menu)[0]["callback_data"].split("|")
    forged = "|".join((verb, tag, song_ref, voice_ref, "+99"))
    assert press(voice_menu, forged, ADA) == "The key change goes from -12 to +12 semitones."

    assert _state(tg_settings) == before  # nobody's voices, defaults or jobs changed
    assert not before["jobs"]
    for message in (ada_forget, bob_forget, bob_voices):
        assert fake.bot_message(GROUP, message["message_id"])["text"] == message["text"]
    assert fake.bot_message(GROUP, ada_menu["message_id"])["text"] == voice_menu["text"]
    # And her own "Keep it" still answers her.
    press(ada_forget, _buttons(ada_forget)[1]["callback_data"], ADA)
    fake.wait_for(
        lambda: fake.bot_message(GROUP, ada_forget["message_id"])["text"].startswith("Kept:")
    )
    assert _state(tg_settings) == before


PLACEHOLDER_START = "I can't tell who you are when you post as the group or a channel"


def test_anonymous_admins_and_channel_posts_cannot_own_or_delete_anything(
    fake, bot, tg_settings, song
):
    group = fake.group_chat(GROUP)
    channel = {"id": -100999, "type": "channel", "title": "News"}
    senders = [
        (1087968824, group),  # an anonymous admin: "from" is GroupAnonymousBot
        (136817688, channel),  # a member posting as their channel
        (777000, channel),  # the channel's post forwarded into its discussion group
        (ADA, group),  # any sender_chat means the message is not the person's own
    ]
    for user_id, sender_chat in senders:
        for command in ("/train mine", "/import", "/forget", "/voice alice", "/cover test"):
            message = fake.send_text(command, user_id=user_id, chat=group, sender_chat=sender_chat)
            assert _last_reply_text(fake, message).startswith(PLACEHOLDER_START), command
    with session(tg_settings.database) as db:
        assert db.query(UploadSession).count() == 0
        assert db.query(Job).count() == 0
        assert db.query(User).count() == 0
    # The same person without the mask is served as usual.
    reply = _last_reply_text(fake, fake.send_text("/train mine", user_id=ADA, chat=group))
    assert reply.startswith("🎙 Let's clone “mine”")
