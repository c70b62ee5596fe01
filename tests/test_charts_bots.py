"""`/charts` end to end, once per platform: the list from the fake Telegram and Discord servers,
a press of a song's button, and the cover delivered by the real flows (tiny models)."""

from __future__ import annotations

import json

import pytest

from flows import charts
from flows.catalog import add_song
from flows.voices import import_voice
from gpu_worker.audio import decode

SR = 44100


@pytest.fixture
def chart_env(settings, song_wav, voice_files, tmp_path, monkeypatch):
    """A chart whose #2 is in the catalog (Tester - Test Song), and a user with one voice."""
    chart = tmp_path / "chart.json"
    chart.write_text(
        json.dumps(
            [
                {"title": "Not Here (feat. Someone)", "artist": "Nobody"},
                {"title": "TEST SONG", "artist": "Tester"},
            ]
        )
    )
    monkeypatch.setenv("ENCORE_CHARTS", json.dumps({"world": str(chart)}))
    charts.forget_cached()
    yield chart
    charts.forget_cached()


def _listing_lines(text: str) -> list[str]:
    return text.splitlines()[:3]


EXPECTED = ["📈 world: the top 2 right now", "1. ▫️ Nobody - Not Here (feat. Someone)"]


def test_charts_on_telegram_list_press_and_the_cover_arrives(
    chart_env, settings, song_wav, voice_files, monkeypatch, tmp_path
):
    from flows.settings import get_settings
    from tests.conftest import drain_jobs, telegram_env
    from tests.fake_telegram import BotProcess, FakeTelegram
    from tests.test_telegram import _audio_file, _reply

    fake = FakeTelegram().start()
    telegram_env(monkeypatch, fake)
    get_settings.cache_clear()
    s = get_settings()
    add_song(s, song_wav, title="Test Song", artist="Tester")
    pth, index = voice_files["alice"]
    import_voice(s, "telegram:1", "alice", [pth, index])
    process = BotProcess(s).start()
    try:
        command = fake.send_text("/charts")
        listing = _reply(fake, command)
        lines = listing["text"].splitlines()
        assert lines[:3] == [*EXPECTED, "2. ✅ Tester - TEST SONG"]
        assert "sung by alice" in lines[3]
        [[pick]] = listing["reply_markup"]["inline_keyboard"]
        assert pick["text"] == "2. TEST SONG"
        fake.press(listing, pick["callback_data"])
        [audio] = fake.wait_for(lambda: fake.calls_of("sendAudio"), 120, "the cover")
        assert audio.params["title"] == "Test Song (alice cover)"
        cover = _audio_file(audio, tmp_path)
        assert abs(decode(cover, SR, 2).shape[1] - decode(song_wav, SR, 2).shape[1]) <= 0.01 * SR
        # the list became the cover's status message
        fake.wait_for(
            lambda: fake.bot_message(1, listing["message_id"])["text"].endswith("✅ Done"), 60
        )
    finally:
        process.stop()
        drain_jobs()
        fake.stop()
        get_settings.cache_clear()


def test_charts_on_discord_list_press_and_the_cover_arrives(
    chart_env, settings, song_wav, voice_files, monkeypatch
):
    from flows.settings import get_settings
    from tests.conftest import drain_jobs
    from tests.fake_discord import BOT_TOKEN, FakeDiscord
    from tests.test_discord import EPHEMERAL, BotThread, _callback, _custom_ids

    fake = FakeDiscord().start()
    monkeypatch.setenv("ENCORE_DISCORD_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("ENCORE_DISCORD_API_URL", fake.api_url)
    monkeypatch.setenv("ENCORE_DISCORD_GATEWAY_URL", fake.gateway_url)
    get_settings.cache_clear()
    s = get_settings()
    add_song(s, song_wav, title="Test Song", artist="Tester")
    pth, index = voice_files["alice"]
    import_voice(s, "discord:1", "alice", [pth, index])
    bot = BotThread(s).start()
    try:
        asked = fake.command("charts")
        callback = _callback(fake, asked)
        assert callback["type"] == 4 and callback["data"]["flags"] & EPHEMERAL
        lines = callback["data"]["content"].splitlines()
        assert lines[:3] == [*EXPECTED, "2. ✅ Tester - TEST SONG"]
        [pick] = _custom_ids(callback["data"])
        pressed = fake.press(asked.original, pick)
        update = _callback(fake, pressed)
        assert update["type"] == 7 and "Test Song — sung by alice" in update["data"]["content"]
        [message] = fake.wait_for(lambda: pressed.followups, 120, "the cover")
        [attachment] = message["attachments"]
        assert attachment["filename"] == "Tester - Test Song (alice cover).mp3"
    finally:
        bot.stop()
        drain_jobs()
        fake.stop()
        get_settings.cache_clear()
