"""The Discord bot end to end: a real discord.py Client talks to a fake REST API and gateway.

Interactions go in as `INTERACTION_CREATE` events from the fake (`tests/fake_discord.py`);
what users would see comes out as the interaction callbacks, webhook follow-ups, edits and
channel messages the bot and the flows send there. Jobs run the real Prefect flows with the
tiny random-weight models, and their results are posted by the flows, not by the bot.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from flows.catalog import add_song
from flows.db import Delivery, Job, Voice, session
from flows.jobs import reply_target
from flows.voices import import_voice
from gpu_worker.audio import decode, measure_loudness
from tests.conftest import drain_jobs
from tests.fake_discord import (
    APP_ID,
    BOT_TOKEN,
    CHANNEL_ID,
    DEADLINE_S,
    UPLOAD_LIMIT,
    FakeDiscord,
    Pending,
)
from tests.privacy import assert_parameters_name_nobody

SR = 44100
OWNER = "discord:1"
EPHEMERAL = 64
MANAGE_GUILD = 1 << 5
SNAPSHOT = Path(__file__).with_name("snapshots") / "discord_commands.json"


# ------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def fake():
    server = FakeDiscord().start()
    yield server
    server.stop()


@pytest.fixture
def dc_settings(settings, fake, monkeypatch):
    from flows.settings import get_settings

    monkeypatch.setenv("ENCORE_DISCORD_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("ENCORE_DISCORD_API_URL", fake.api_url)
    monkeypatch.setenv("ENCORE_DISCORD_GATEWAY_URL", fake.gateway_url)
    monkeypatch.setenv("ENCORE_STATUS_EDIT_INTERVAL_S", "0.2")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


class BotThread:
    """A real `DiscordBot` connected to the fake, on an event loop in a thread of its own."""

    def __init__(self, settings):
        self.settings = settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bot", daemon=True)
        self._thread.start()

    def run(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> BotThread:
        from bots.discord_bot import DiscordBot

        async def make():
            return DiscordBot(self.settings)

        self.bot = self.run(make())
        self.run(self.bot.start())
        return self

    def stop(self) -> None:
        async def rest():
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.run(self.bot.stop())
            self.run(rest())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()


@pytest.fixture
def bot(dc_settings, fake):
    process = BotThread(dc_settings).start()
    yield process
    process.stop()
    drain_jobs()


@pytest.fixture
def alice(dc_settings, voice_files):
    pth, index = voice_files["alice"]
    return import_voice(dc_settings, OWNER, "alice", [pth, index])


@pytest.fixture
def song(dc_settings, song_wav):
    return add_song(dc_settings, song_wav, title="Test Song", artist="Tester")


def _callback(fake, pending, timeout: float = 10) -> dict:
    return fake.wait_for(lambda: pending.callbacks, timeout, "the interaction callback")[0]


def _ephemeral_text(fake, pending) -> str:
    callback = _callback(fake, pending)
    assert callback["type"] == 4, callback
    assert callback["data"]["flags"] & EPHEMERAL
    return callback["data"]["content"]


def _wait_ended(settings, fake, owner: str = OWNER, timeout: float = 120) -> Job:
    def ended():
        with session(settings.database) as db:
            job = db.query(Job).filter(Job.owner == owner).one_or_none()
            if job is None or job.state not in ("succeeded", "failed", "cancelled"):
                return None
            row = db.get(Delivery, job.id)
            return job if row is not None and row.state in ("sent", "failed") else None

    return fake.wait_for(ended, timeout, "the job to end and be delivered")


def _check_cover(path: Path, source: Path, settings) -> None:
    assert abs(decode(path, SR, 2).shape[1] - decode(source, SR, 2).shape[1]) <= 0.010 * SR
    loud = measure_loudness(path)
    assert abs(loud.integrated_lufs - settings.loudness_lufs) <= 0.5
    assert loud.true_peak_dbtp <= settings.true_peak_dbtp


# ------------------------------------------------------------------------------------------
# /cover end to end


def test_cover_is_deferred_shows_progress_and_arrives_as_an_attachment(
    fake, bot, dc_settings, alice, song, song_wav, tmp_path
):
    pending = fake.command(
        "cover",
        [
            {"name": "song", "type": 3, "value": song.id},
            {"name": "voice", "type": 3, "value": alice.id},
            {"name": "pitch", "type": 4, "value": 2},
        ],
    )
    deferral = _callback(fake, pending)
    assert deferral["type"] == 5  # deferred, public: "Encore is thinking…"
    assert not (deferral.get("data") or {}).get("flags", 0) & EPHEMERAL
    assert fake.calls_to("POST", "/callback")[0].status == 200  # inside the 3 s

    followups = fake.wait_for(lambda: pending.followups, 120, "the cover")
    [message] = followups
    [attachment] = message["attachments"]
    # a +2 cover says so, in its file's name and its title
    assert attachment["filename"] == "Tester - Test Song (alice cover, +2).mp3"
    assert "Test Song (alice cover, +2)" in message["content"]
    cover = tmp_path / attachment["filename"]
    cover.write_bytes(fake.attachment(attachment))
    _check_cover(cover, song_wav, dc_settings)

    job = _wait_ended(dc_settings, fake)
    assert job.state == "succeeded" and job.params["options"]["pitch"] == 2
    target = reply_target(dc_settings, job.id)  # in the database, not in the run parameters
    assert target["interaction_token"] == pending.token
    assert_parameters_name_nobody(job, pending.token, "Ada", target["channel_id"])
    assert target["upload_limit"] == pending.limit
    assert abs(target["token_at"] - time.time()) < 120  # from the snowflake
    edits = [c.json["content"] for c in fake.calls_to("PATCH", "/messages/@original")]
    assert edits[0].startswith("🎤 Tester - Test Song — sung by alice, +2 semitones")
    assert "Queued" in edits[0]
    assert any("Separating" in e for e in edits), edits
    assert any("Singing in your voice" in e for e in edits), edits
    assert pending.original["content"].endswith("✅ Done")
    assert not fake.channel_messages  # the token was fresh: no channel post


def test_a_hostile_song_title_pings_nobody_and_no_token_reaches_the_logs(
    fake, bot, dc_settings, alice, song_wav, debug_logs
):
    title = "@everyone <@&123> <@456>"
    hostile = add_song(dc_settings, song_wav, title=title, artist="@here")
    pending = fake.command(
        "cover",
        [
            {"name": "song", "type": 3, "value": hostile.id},
            {"name": "voice", "type": 3, "value": alice.id},
        ],
    )
    [message] = fake.wait_for(lambda: pending.followups, 120, "the cover")
    assert title in message["content"] and message["attachments"]
    assert _wait_ended(dc_settings, fake).state == "succeeded"
    assert title in _ephemeral_text(fake, fake.command("status"))  # the bot's own reply
    payloads = fake.message_payloads()
    assert {c.method for c, _body in payloads} >= {"PATCH", "POST"}
    assert sum(title in body["content"] for _c, body in payloads) >= 4
    for call, body in payloads:
        assert body.get("allowed_mentions", {}).get("parse") == [], (call.path, body)
        assert not body["allowed_mentions"].get("roles")
    text = "\n".join(debug_logs)
    assert "HTTP Request: POST http://127.0.0.1" in text  # the courier's requests were logged
    assert "/webhooks/900000000000000001/<redacted>" in text
    assert BOT_TOKEN not in text and pending.token not in text


def test_a_result_after_the_token_expired_is_posted_to_the_channel_with_a_mention(
    fake, bot, dc_settings, song_wav, monkeypatch, tmp_path
):
    from flows.settings import get_settings

    monkeypatch.setenv("ENCORE_DISCORD_TOKEN_FRESH_S", "0")  # every token counts as old
    get_settings.cache_clear()
    bot.bot.s = get_settings()
    data = song_wav.read_bytes()
    pending = fake.command("karaoke", attachments={"file": ("my song.wav", data, "audio/wav")})
    assert _callback(fake, pending)["type"] == 5
    fake.wait_for(lambda: fake.calls_to("PATCH", pending.token), 30, "the status message")
    fake.expire(pending)  # from now on Discord refuses the token, as 15 minutes later
    posted = fake.wait_for(lambda: fake.channel_messages, 120, "the channel post")
    [message] = posted
    assert message["content"].startswith("<@1> ")
    assert message["allowed_mentions"] == {"parse": [], "users": ["1"]}  # only who asked
    [attachment] = message["attachments"]
    karaoke = tmp_path / attachment["filename"]
    karaoke.write_bytes(fake.attachment(attachment))
    assert abs(decode(karaoke, SR, 2).shape[1] - decode(song_wav, SR, 2).shape[1]) <= 0.010 * SR
    assert _wait_ended(dc_settings, fake).state == "succeeded"
    assert not pending.followups
    assert all(c.auth == f"Bot {BOT_TOKEN}" for c in fake.calls_to("POST", "/channels/"))


def test_a_result_over_the_upload_limit_is_sent_as_a_link(
    fake, bot, dc_settings, song, monkeypatch
):
    from flows.settings import get_settings

    monkeypatch.setenv("ENCORE_PUBLIC_FILES_URL", "http://files.test/encore")
    get_settings.cache_clear()
    bot.bot.s = get_settings()
    limit = 20_000  # a 4 s karaoke track is larger
    pending = fake.command("karaoke", [{"name": "song", "type": 3, "value": song.id}], limit=limit)
    assert _callback(fake, pending)["type"] == 5
    [message] = fake.wait_for(lambda: pending.followups, 120, "the link")
    assert not message["attachments"]
    assert "over Discord's 20 KB limit for bots" in message["content"]
    assert "download it here: http://files.test/encore/" in message["content"]
    assert _wait_ended(dc_settings, fake).state == "succeeded"


def test_a_rate_limited_follow_up_is_retried_after_its_retry_after_and_arrives_once(
    fake, dc_settings, song, song_wav, monkeypatch
):
    from flows.chat import deliver, deliver_pending
    from flows.jobs import create_job, update_job
    from flows.settings import get_settings
    from flows.storage import open_storage

    monkeypatch.setenv("ENCORE_DELIVERY_TIME_SCALE", "0.02")  # 90 s of Discord's are 1.8 s
    get_settings.cache_clear()
    s = get_settings()
    pending = Pending(fake._snowflake(), "tok-rl", time.monotonic(), UPLOAD_LIMIT)
    fake.interactions[pending.token] = pending
    reply_to = {"platform": "discord", "application_id": str(APP_ID),
                "interaction_token": pending.token, "token_at": time.time(),
                "channel_id": str(CHANNEL_ID), "user_id": "1"}  # fmt: skip
    job = create_job(s, "karaoke", OWNER, {"song_id": song.id}, reply_to=reply_to)
    uri = open_storage(s.storage).put(song_wav, "results/rl/k.wav")
    update_job(s, job, state="succeeded", step="done", result={"uri": uri, "filename": "k.wav"})
    fake.fail_next("POST", f"/webhooks/{APP_ID}/{pending.token}", 429, retry_after=90)
    assert deliver(s, job)  # refused; a 90 s wait is the sweeper's to make

    def swept():
        deliver_pending(s)
        with session(s.database) as db:
            return db.get(Delivery, job).state == "sent"

    fake.wait_for(swept, 30, "the retried follow-up")
    posts = fake.calls_to("POST", f"/webhooks/{APP_ID}/{pending.token}")
    assert [c.status for c in posts] == [429, 200]
    assert posts[1].at - posts[0].at >= 90 * 0.02
    assert len(pending.followups) == 1 and pending.followups[0]["attachments"]


# ------------------------------------------------------------------------------------------
# Refusals


def test_an_unknown_song_is_refused_privately(fake, bot, alice, song):
    pending = fake.command("cover", [{"name": "song", "type": 3, "value": "zzqx nothing"}])
    text = _ephemeral_text(fake, pending)
    assert "No song in the catalog matches" in text
    assert not pending.followups


def test_an_oversized_attachment_is_refused_before_downloading(fake, bot, alice):
    data = b"\0" * 4096
    pending = fake.command(
        "cover", attachments={"file": ("big.wav", data, "audio/wav")}, limit=1024
    )
    text = _ephemeral_text(fake, pending)
    assert "accepts files up to" in text
    assert not [c for c in fake.calls if "/attachments/" in c.path]


def test_trending_needs_manage_server(fake, bot, dc_settings, alice):
    from flows import api

    refused = fake.command("trending", [{"name": "state", "type": 3, "value": "on"}])
    assert "Only this chat's admins" in _ephemeral_text(fake, refused)
    assert not api.is_subscribed("discord", str(CHANNEL_ID), "trending", s=dc_settings)
    allowed = fake.command(
        "trending", [{"name": "state", "type": 3, "value": "on"}], permissions=MANAGE_GUILD
    )
    assert "This chat will get covers of the trending songs" in _ephemeral_text(fake, allowed)
    assert api.is_subscribed("discord", str(CHANNEL_ID), "trending", s=dc_settings)


def test_the_fake_enforces_the_three_second_deadline_and_one_answer(fake):
    pending = Pending(123, "tok123", time.monotonic() - DEADLINE_S - 0.1, UPLOAD_LIMIT)
    fake.interactions[pending.token] = pending
    url = f"{fake.api_url}/interactions/{pending.id}/{pending.token}/callback"
    late = httpx.post(url, json={"type": 5})
    assert late.status_code == 404 and late.json()["code"] == 10062
    assert late.headers["Content-Type"] == "application/json"
    pending.sent_at = time.monotonic()
    assert httpx.post(url, json={"type": 5}).status_code == 200
    again = httpx.post(url, json={"type": 5})
    assert again.status_code == 400 and again.json()["code"] == 40060


# ------------------------------------------------------------------------------------------
# Autocomplete and the small commands


def test_autocomplete_offers_catalog_songs_and_the_users_voices(fake, bot, alice, song):
    pending = fake.autocomplete(
        "cover", [{"name": "song", "type": 3, "value": "test so", "focused": True}]
    )
    callback = _callback(fake, pending)
    assert callback["type"] == 8
    assert {"name": "Tester - Test Song", "value": song.id} in callback["data"]["choices"]
    pending = fake.autocomplete(
        "cover", [{"name": "voice", "type": 3, "value": "ali", "focused": True}]
    )
    assert _callback(fake, pending)["data"]["choices"] == [{"name": "alice", "value": alice.id}]


def test_voices_default_status_and_forget_with_a_confirmation_button(fake, bot, dc_settings, alice):
    assert "alice" in _ephemeral_text(fake, fake.command("voices"))
    chosen = fake.command("voice", [{"name": "default", "type": 3, "value": "alice"}])
    assert "alice is your default voice now" in _ephemeral_text(fake, chosen)
    assert "no jobs yet" in _ephemeral_text(fake, fake.command("status"))

    asked = fake.command("forget")
    callback = _callback(fake, asked)
    assert callback["data"]["flags"] & EPHEMERAL
    buttons = [c["custom_id"] for row in callback["data"]["components"] for c in row["components"]]
    assert [b.split("|")[0] for b in buttons] == ["fy", "fn"]
    pressed = fake.press(asked.original, buttons[0])
    update = _callback(fake, pressed)
    assert update["type"] == 7
    assert update["data"]["content"].startswith("Done: I deleted 1 voice")
    assert update["data"]["components"] == []
    with session(dc_settings.database) as db:
        assert db.query(Job).filter(Job.owner == OWNER).count() == 0
    assert "no voice yet" in _ephemeral_text(fake, fake.command("voices"))


# ------------------------------------------------------------------------------------------
# Deploying the commands


def test_sync_sends_the_command_schema_of_the_snapshot(fake, dc_settings):
    from bots.discord_bot import sync_commands

    names = sync_commands(dc_settings)
    assert names == [c["name"] for c in fake.commands]
    [put] = fake.calls_to("PUT", "/commands")
    assert put.auth == f"Bot {BOT_TOKEN}"
    if os.environ.get("ENCORE_UPDATE_SNAPSHOTS"):
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(json.dumps(fake.commands, indent=2, ensure_ascii=False) + "\n")
    assert fake.commands == json.loads(SNAPSHOT.read_text())
    trending = next(c for c in fake.commands if c["name"] == "trending")
    assert int(trending["default_member_permissions"]) == MANAGE_GUILD
    assert trending["dm_permission"] is False
    cover = next(c for c in fake.commands if c["name"] == "cover")
    options = {o["name"]: o for o in cover["options"]}
    assert options["song"]["autocomplete"] and options["voice"]["autocomplete"]
    assert (options["pitch"]["min_value"], options["pitch"]["max_value"]) == (-12, 12)
    assert options["file"]["type"] == 11


# ------------------------------------------------------------------------------------------
# Voices: training from attachments, importing


@pytest.fixture(scope="module")
def recordings(spoken) -> list[bytes]:
    """Three spoken recordings, as the WAV attachments a user uploads."""
    return [raw.read_bytes() for raw in spoken]


def test_training_from_attachments_asks_consent_with_a_button(
    fake, dc_settings, recordings, monkeypatch
):
    from flows.settings import get_settings
    from tests.tiny_rvc import TINY_TRAIN_OVERRIDE

    for key, value in dict(
        train_config=json.dumps(TINY_TRAIN_OVERRIDE),
        train_min_seconds=3,
        train_epochs=1,
        train_batch_size=2,
        train_save_every=1,
    ).items():
        monkeypatch.setenv(f"ENCORE_{key.upper()}", str(value))
    get_settings.cache_clear()
    s = get_settings()
    process = BotThread(s).start()
    try:
        first = fake.command(
            "train",
            [{"name": "new", "type": 1, "options": [{"name": "name", "type": 3, "value": "Me"}]}],
            attachments={"sample1": ("take0.wav", recordings[0], "audio/wav")},
        )
        assert _callback(fake, first)["type"] == 5
        shown = fake.wait_for(
            lambda: first.original and "🎙 Got" in first.original["content"] and first.original,
            60,
            "the first sample counted",
        )
        assert "in 1 clip" in shown["content"]
        added = fake.command(
            "train",
            [{"name": "add", "type": 1, "options": []}],
            attachments={
                "sample1": ("take1.wav", recordings[1], "audio/wav"),
                "sample2": ("take2.wav", recordings[2], "audio/wav"),
            },
        )
        asked = fake.wait_for(
            lambda: added.original and added.original.get("components") and added.original,
            60,
            "the consent button",
        )
        assert "in 3 clips" in asked["content"] and "is this your own voice" in asked["content"]
        consent = asked["components"][0]["components"][0]["custom_id"]
        assert consent.startswith("tc|")
        pressed = fake.press(asked, consent)
        assert _callback(fake, pressed)["type"] == 7
        preview = fake.wait_for(lambda: pressed.followups, 300, "the preview")
        assert preview[0]["content"].startswith("Your voice “Me” is ready")
        assert preview[0]["attachments"]
        job = _wait_ended(s, fake, timeout=300)
        assert job.kind == "train" and job.state == "succeeded", job.reason
        assert len(job.params["samples"]) == 3
    finally:
        process.stop()
        drain_jobs()
    with session(s.database) as db:
        voice = db.query(Voice).filter(Voice.owner == OWNER).one()
        assert voice.name == "Me" and voice.source == "trained" and voice.consent


def test_importing_a_zipped_model(fake, bot, dc_settings, voice_files, tmp_path):
    pth, index = voice_files["bob"]
    archive = tmp_path / "Bobby.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(pth, "bob/model.pth")
        zf.write(index, "bob/added_IVF5_Flat_nprobe_1_bob_v2.index")
    pending = fake.command(
        "import", attachments={"file": ("Bobby.zip", archive.read_bytes(), "application/zip")}
    )
    assert _callback(fake, pending)["type"] == 5
    said = fake.wait_for(lambda: pending.followups, 60, "the import")
    assert said[0]["content"].startswith("✅ Imported “Bobby” (RVC v2, 40 kHz, with its index).")
    assert _wait_ended(dc_settings, fake).state == "succeeded"
    bad = fake.command("import", attachments={"file": ("notes.txt", b"hello", "text/plain")})
    assert _ephemeral_text(fake, bad).startswith("That is not an RVC model")


def test_import_takes_a_file_or_a_link(fake, bot):
    from flows.chat import links_text
    from flows.chat import text as said

    nothing = fake.command("import")
    assert _ephemeral_text(fake, nothing) == said.IMPORT_FILE_OR_LINK
    link = {"type": 3, "name": "link", "value": "https://models.example/voice.zip"}
    pending = fake.command("import", options=[link])
    assert _callback(fake, pending)["type"] == 5
    answer = fake.wait_for(lambda: pending.followups, 60, "the answer")
    assert answer[0]["content"] == links_text.DISABLED_MODEL  # links are off by default


def test_encore_bot_discord_sync_registers_the_commands_and_exits(fake, dc_settings):
    from tests.conftest import cli_env

    env = cli_env(dc_settings)
    env.update(
        ENCORE_DISCORD_TOKEN=BOT_TOKEN,
        ENCORE_DISCORD_API_URL=fake.api_url,
        ENCORE_DISCORD_GATEWAY_URL=fake.gateway_url,
    )
    encore = Path(sys.executable).with_name("encore")
    command = [str(encore), "bot", "discord", "--sync"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Registered 13 slash commands: /cover, /stems, /karaoke, /train" in done.stdout
    assert fake.commands == json.loads(SNAPSHOT.read_text())
    del env["ENCORE_DISCORD_TOKEN"]
    refused = subprocess.run(
        [str(encore), "bot", "discord"], env=env, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 1 and "Set ENCORE_DISCORD_TOKEN" in refused.stderr


# ------------------------------------------------------------------------------------------
# Buttons and identities in a server


BOB = 2


def _state(settings) -> dict:
    from flows.db import User

    with session(settings.database) as db:
        voices = sorted((v.owner, v.name, v.id) for v in db.query(Voice).all())
        jobs = sorted((j.owner, j.id) for j in db.query(Job).all())
        defaults = sorted((u.id, u.default_voice_id) for u in db.query(User).all())
    return {"voices": voices, "jobs": jobs, "defaults": defaults}


def _custom_ids(message: dict) -> list[str]:
    return [c["custom_id"] for row in message.get("components") or [] for c in row["components"]]


def test_in_a_server_nobody_can_press_another_members_buttons(
    fake, bot, dc_settings, voice_files, song, tmp_path
):
    from flows.demo import synth_song
    from gpu_worker.audio import write_wav

    for owner in (OWNER, f"discord:{BOB}"):  # two voices each, no default: menus
        for name in ("alice", "bob"):
            pth, index = voice_files[name]
            import_voice(dc_settings, owner, name, [pth, index])
    other = write_wav(tmp_path / "tune.wav", synth_song(3.0, seed=5), SR)
    add_song(dc_settings, other, title="Test Tune", artist="Tester")

    def menu(pending: Pending) -> dict:
        _callback(fake, pending)
        return pending.original

    ada_forget = menu(fake.command("forget"))
    bob_forget = menu(fake.command("forget", user_id=BOB))
    ada_songs = menu(fake.command("cover", [{"name": "song", "type": 3, "value": "tester test"}]))
    bob_voices = menu(fake.command("voices", user_id=BOB))
    assert "Several songs match" in ada_songs["content"]
    before = _state(dc_settings)

    def press(message: dict, custom_id: str, user_id: int) -> str:
        return _ephemeral_text(fake, fake.press(message, custom_id, user_id=user_id))

    # Each presses the other's /forget confirmation, song menu and voice buttons.
    assert press(ada_forget, _custom_ids(ada_forget)[0], BOB) == "This button is for Ada."
    assert press(bob_forget, _custom_ids(bob_forget)[0], 1) == "This button is for Bob."
    song_pick = _custom_ids(ada_songs)[0]
    assert press(ada_songs, song_pick, BOB) == "This button is for Ada."
    assert press(bob_voices, _custom_ids(bob_voices)[0], 1) == "This button is for Bob."

    # Ada's own press works: her song menu becomes her voice menu, which Bob cannot use.
    mine = fake.press(ada_songs, song_pick)
    assert _callback(fake, mine)["type"] == 7
    voice_menu = mine.original
    assert voice_menu["content"].startswith("Which voice")
    voice_pick = _custom_ids(voice_menu)[0]
    assert press(voice_menu, voice_pick, BOB) == "This button is for Ada."
    # A forged button on her own menu with a key change of +99 is refused like /cover +99.
    forged = "|".join([*voice_pick.split("|")[:4], "+99"])
    assert press(voice_menu, forged, 1) == "The key change goes from -12 to +12 semitones."

    assert _state(dc_settings) == before  # nobody's voices, defaults or jobs changed
    assert not before["jobs"]
    assert "Done" not in ada_forget["content"] and "Done" not in bob_forget["content"]
