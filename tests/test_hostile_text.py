"""Odd text from chat clients: each gets its one expected sentence, no traceback, no job.

Control characters, NUL, zero-width and direction-override characters, runaway length,
markup and mentions in names that Encore echoes back, lookalike letters: all go through
the handlers in `bots` as a platform hands them over, and a few through the fake Telegram
end to end.
"""

from __future__ import annotations

import pytest

from bots import buttons, help, importing, songs, training, trending, voices
from bots.buttons import EXPIRED
from bots.inputs import TOO_LONG
from bots.messages import Reply, Who
from flows import api
from flows.catalog import add_song
from flows.chat import text as said
from flows.db import Job, UploadFile, UploadSession, session
from flows.voices import import_voice
from tests.conftest import drain_jobs, telegram_env
from tests.fake_telegram import BotProcess, FakeTelegram
from tests.test_telegram import _last_reply_text

ADA = Who("telegram", "1", "1", "Ada")
GROUP_ADA = Who("telegram", "1", "-100", "Ada", private=False)
COVER_USAGE = said.replies("telegram").which_song("cover")
NAME_RULE = (
    "A voice name is 1-40 letters, digits, spaces, dots, dashes or apostrophes; pick another name."
)
NO_SONG = "No song in the catalog matches “{}”. Check the spelling, or send me the song file and "
USAGE = "Tell me which song: /cover <song>, like /cover test song +2 (/songs lists them all)…"
RANGE = "The key change goes from -12 to +12 semitones; try something like /cover <song> +2."

# (what the user does, the text, the sentence Encore answers: whole, or its start with "…")
CORPUS = [
    ("cover", "\x00", USAGE),
    ("cover", "\u200b\u200c\u200d\ufeff", USAGE),
    ("cover", "\u202eevil\u202c", NO_SONG.format("evil") + "…"),
    ("cover", "zzqx\x00\x07\x1b[31m", NO_SONG.format("zzqx[31m") + "…"),
    ("cover", "zzqx [click](https://evil.example) <b>x</b>", "No song in the catalog matches…"),
    ("cover", "a" * 5000, TOO_LONG),
    ("stems", "🎵" * 300, TOO_LONG),
    ("cover", "x\n\ty\r\n+99", RANGE),
    ("train", "\x00\x01\x02", "Give the voice a name: /train <name>, like /train my voice."),
    ("train", "<b>bold</b>", NAME_RULE),
    ("train", "@everyone", NAME_RULE),
    ("train", "[x](https://evil.example)", NAME_RULE),
    ("train", "ali\u200bce", "You already have a voice called “alice”; pick another name."),
    ("train", "Ａｌｉｃｅ", "You already have a voice called “Alice”; pick another name."),
    ("train", "\u0410lice", "You already have a voice called “\u0410lice”; pick another name."),
    ("import", "x" * 1000, TOO_LONG),
    ("voice", "nobody\x00\u202e", "You have no voice called 'nobody'; /voices lists yours."),
    (
        "voice",
        "\u202eＡＬＩＣＥ\u200b",
        "⭐ alice is your default voice now; /cover <song> to use it.",
    ),
    ("unknown", "\x1b[2Jclear\x00", "I don't know /[2Jclear; /help lists what I can do."),
    ("option", "\u2066\u2069", "Tell me which song: /cover and pick one as you type its name."),
    ("option-voice", "zz\u200b", "You have no voice called “zz”; /voices lists yours."),
    (
        "trending",
        "\x00on\u200b",
        "Only this chat's admins can switch the trending covers on or off.",
    ),
    ("button", "\x00|\u202e|" + "9" * 500, EXPIRED),
]


def _say(s, action: str, text: str):
    if action in ("cover", "stems"):
        return songs.song_command(s, ADA, action, text)
    if action == "train":
        return training.train(s, ADA, text)
    if action == "import":
        return importing.import_command(s, ADA, text)
    if action == "voice":
        return voices.set_voice(s, ADA, text)
    if action == "unknown":
        return help.unknown_command(s, ADA, text)
    if action == "option":
        return songs.song_option(s, ADA, "cover", text)
    if action == "option-voice":
        return songs.song_option(s, ADA, "cover", "test song", 0, text)
    if action == "trending":
        return trending.trending(s, GROUP_ADA, text, False)
    if action == "button":
        return buttons.pressed(s, ADA, text)
    raise AssertionError(action)


def test_odd_text_gets_its_one_sentence_and_makes_nothing(settings, voice_files, song_wav):
    pth, index = voice_files["alice"]
    import_voice(settings, ADA.owner, "alice", [pth, index])
    add_song(settings, song_wav, title="Test Song", artist="Tester")
    for action, text, expected in CORPUS:
        reply = _say(settings, action, text)
        assert isinstance(reply, Reply) and not reply.buttons, (action, text, reply)
        said = reply.text or reply.toast
        if expected.endswith("…"):
            assert said.startswith(expected[:-1]), (action, text, said)
        else:
            assert said == expected, (action, text, said)
        assert "\n" not in said and "Traceback" not in said
        assert not any(ch in said for ch in "\x00\x1b\u200b\u202e\u2066"), said
    with session(settings.database) as db:
        assert db.query(Job).count() == 0
        assert db.query(UploadSession).count() == 0


def test_a_name_with_control_and_direction_characters_is_kept_readable(settings):
    who = Who("telegram", "7", "7", "E\x00ve\u202e\u200b  Smith\n")
    assert who.name == "Eve Smith"
    help.help_command(settings, who)  # PostgreSQL refuses NUL in text: the name is stored clean
    assert api.display_name(who.owner, s=settings) == "Eve Smith"


# ------------------------------------------------------------------------------------------
# A few through the fake Telegram


@pytest.fixture
def telegram(settings, monkeypatch):
    from flows.settings import get_settings

    fake = FakeTelegram().start()
    telegram_env(monkeypatch, fake)
    get_settings.cache_clear()
    process = BotProcess(get_settings()).start()
    yield fake
    process.stop()
    drain_jobs()
    fake.stop()
    get_settings.cache_clear()


def test_odd_text_through_telegram(telegram, settings):
    fake = telegram
    for text, expected in (
        ("/cover \x00\u202e\u200b", COVER_USAGE),
        ("/train " + "x" * 5000, TOO_LONG),
        ("/train <a href='https://evil.example'>me</a>", NAME_RULE),
        ("/voice @everyone\u0000", "You have no voice called '@everyone'; /voices lists yours."),
    ):
        assert _last_reply_text(fake, fake.send_text(text)) == expected, text
    with session(settings.database) as db:
        assert db.query(Job).count() == 0
        assert db.query(UploadSession).count() == 0


def test_odd_file_names_through_telegram(telegram, settings, song_wav):
    """Names a client may send for a file (`..`, `.`, a path, control characters) are made
    safe where they enter: the file is read and answered like any other."""
    fake = telegram
    assert _last_reply_text(fake, fake.send_text("/train me")).startswith("🎙 Let's clone")
    data = song_wav.read_bytes()
    for name in ("..", ".", "../../x.wav", "\x00\u202e.wav"):
        sent = fake.send_document(data, name, mime="audio/wav")
        reply = _last_reply_text(fake, sent, timeout=60)
        assert reply.startswith(("🎙 Got", "⚠️ I can't use that one")), (name, reply)
    with session(settings.database) as db:
        names = sorted(f.filename for f in db.query(UploadFile).all())
    assert all(n and "/" not in n and not n.startswith(".") for n in names), names
