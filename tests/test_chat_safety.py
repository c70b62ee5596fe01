"""What chat clients send is checked where it enters `bots`: buttons are their user's
alone and their data is checked like typed commands, file names are made safe, placeholder
senders own nothing, voice names that only look alike are one name, and a song a user sends
is theirs alone."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from bots import buttons, help, importing, privacy, sessions, songs, status, training, trending
from bots import voices as bot_voices
from bots.inputs import clean_filename
from bots.messages import Incoming, JobPlan, Reply, Who
from bots.payload import button, owner_tag, pack
from flows import api
from flows.catalog import add_song
from flows.chat.text import PLACEHOLDER_SENDER as PLACEHOLDER
from flows.db import Job, Song, session
from flows.errors import UserError
from flows.voices import get_voice, import_voice, name_key, valid_name

ADA = Who("telegram", "1", "-100", "Ada", private=False)
BOB = Who("telegram", "2", "-100", "Bob", private=False)


def _jobs(settings) -> int:
    with session(settings.database) as db:
        return db.query(Job).count()


# ------------------------------------------------------------------------------------------
# Buttons


def test_button_data_fits_the_platforms_limits_with_the_largest_ids():
    largest = "f" * 32
    for who, limit in (
        (Who("telegram", str(2**52 - 1), "1"), 64),  # Telegram: callback_data, bytes
        (Who("discord", str(2**64 - 1), "1"), 100),  # Discord: custom_id, characters
        (Who("cli", "x" * 100, "1"), 64),  # any other id: a hash
    ):
        data = button(who, "label", "cv", pack(largest), pack(largest), "-12").data
        assert len(data.encode()) <= limit, (who, data)
        assert data.split("|")[1] == owner_tag(who)


def test_another_users_press_is_refused_by_name_and_does_nothing(settings):
    ask = privacy.forget(settings, ADA)
    yes = ask.buttons[0][0].data
    refused = buttons.pressed(settings, BOB, yes)
    assert refused == Reply("", toast="This button is for Ada.")
    assert buttons.press_refusal(settings, ADA, yes) is None
    stranger = Who("cli", "someone", "x")  # an id that is not a number: a hashed tag
    data = privacy.forget(settings, stranger).buttons[0][0].data
    assert buttons.pressed(settings, ADA, data).toast == "This button is for someone else."


FORGERIES = [
    lambda tag, s, v: f"cv|{tag}|{s}|{v}|+99",
    lambda tag, s, v: f"cv|{tag}|{s}|{v}|+1x",
    lambda tag, s, v: f"cv|{tag}|{s}|{v}|12 ",
    lambda tag, s, v: f"cv|{tag}|{s}|{v}|+0|extra",
    lambda tag, s, v: f"cs|{tag}|{s}|-13",
    lambda tag, s, v: f"ks|{tag}|{s}|+50",
    lambda tag, s, v: f"cv|{tag}|{s[:-1]}|{v}|+1",
    lambda tag, s, v: f"cv|{tag}|{s}|{'A' * 22}|+1",  # a voice that does not exist
    lambda tag, s, v: f"cv|{tag}|{'_' * 22}|{v}|+1",
    lambda tag, s, v: f"zz|{tag}|{s}",
    lambda tag, s, v: f"fy|{tag}|{s}",
    lambda tag, s, v: "fy",  # a button from before buttons carried their user
    lambda tag, s, v: f"dv|{tag}|{'A' * 22}",
    lambda tag, s, v: f"tc|{tag}|{'Q' * 22}",
    lambda tag, s, v: "|" * 200,
]


def test_forged_button_data_is_refused_and_makes_no_job(settings, song_wav, voice_files):
    song = add_song(settings, song_wav, title="Test Song")
    pth, index = voice_files["alice"]
    voice = import_voice(settings, ADA.owner, "alice", [pth, index])
    tag = privacy.forget(settings, ADA).buttons[0][0].data.split("|")[1]
    for forge in FORGERIES:
        data = forge(tag, pack(song.id), pack(voice.id))
        reply = buttons.pressed(settings, ADA, data)
        assert isinstance(reply, Reply) and not reply.buttons, (data, reply)
        assert (reply.toast or reply.text).count(".") <= 2, reply  # one short sentence
    assert buttons.pressed(
        settings, ADA, f"cv|{tag}|{pack(song.id)}|{pack(voice.id)}|+99"
    ).toast == ("The key change goes from -12 to +12 semitones.")
    assert get_voice(settings, ADA.owner, "alice") is not None
    assert _jobs(settings) == 0


def test_the_users_own_checked_press_plans_the_job(settings, song_wav, voice_files):
    song = add_song(settings, song_wav, title="Test Song")
    for name in ("alice", "bob"):
        pth, index = voice_files[name]
        import_voice(settings, ADA.owner, name, [pth, index])
    help.help_command(settings, ADA)  # first contact: Encore learns her name
    menu = songs.cover_with(settings, ADA, api.get_song(song.id, ADA.owner, s=settings), 3)
    plan = buttons.pressed(settings, ADA, menu.buttons[1][0].data)
    assert isinstance(plan, JobPlan) and plan.options == {"pitch": 3}
    assert plan.owner == ADA.owner
    assert (
        buttons.pressed(settings, BOB, menu.buttons[1][0].data).toast == "This button is for Ada."
    )


# ------------------------------------------------------------------------------------------
# File names and placeholder senders


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("..", "file"),
        (".", "file"),
        ("", "file"),
        ("   ", "file"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("/abs/song.mp3", "song.mp3"),
        (".hidden.mp3", "hidden.mp3"),
        ("song\x00.mp3", "song.mp3"),
        ("\u202egnp.exe.mp3", "gnp.exe.mp3"),
        ("zero\u200bwidth.wav", "zerowidth.wav"),
        ("a:b*c?.flac", "a_b_c_.flac"),
        ("Ｓｏｎｇ.mp3", "Song.mp3"),
        ("x" * 300 + ".mp3", "x" * 76 + ".mp3"),
        ("model.pth", "model.pth"),
    ],
)
def test_file_names_from_the_platform_are_made_safe(name, expected):
    assert clean_filename(name) == expected
    assert Incoming(name, 10, None).filename == expected


def test_placeholder_senders_own_nothing(settings, tmp_path):
    anon = Who("telegram", "1087968824", "-100", "Friends", private=False, placeholder=True)
    audio = Incoming("a.mp3", 10, "audio/mpeg")
    model = Incoming("m.pth", 10, None)
    for outcome in (
        training.train(settings, anon, "mine"),
        importing.import_command(settings, anon, ""),
        privacy.forget(settings, anon),
        privacy.forget_confirmed(settings, anon),
        bot_voices.set_voice(settings, anon, "alice"),
        bot_voices.voices(settings, anon),
        songs.song_command(settings, anon, "cover", "test"),
        songs.song_file(settings, anon, "cover", "", audio),
        importing.model_incoming(settings, anon, model),
        training.sample_incoming(settings, anon, audio),
        sessions.done(settings, anon),
        status.cancel(settings, anon),
        status.status(settings, anon),
        trending.trending(settings, anon, "on", True),
        buttons.pressed(settings, anon, f"fy|{owner_tag(anon)}"),
    ):
        assert outcome in (Reply(PLACEHOLDER), Reply("", toast=PLACEHOLDER)), outcome
    # a channel's posts in its group: not for us
    assert sessions.loose_file(settings, anon, audio) is None
    assert help.help_command(settings, anon).text.startswith("🎤 Encore")
    with session(settings.database) as db:
        assert db.query(Job).count() == 0
    assert api.display_name(anon.owner, s=settings) == ""  # not even a user row


# ------------------------------------------------------------------------------------------
# Voice names


def test_names_that_only_look_alike_are_one_name(settings, voice_files):
    assert valid_name("Ａｌｉｃｅ") == "Alice"  # fullwidth letters become plain ones
    keys = {name_key(n) for n in ("alice", "ALICE", "Ａlice", "\u0410lice", "ali\u0441e")}
    assert len(keys) == 1  # plain, upper, fullwidth, Cyrillic А, Cyrillic с
    assert name_key("alice") != name_key("alina")
    for bad in ("ali\u200bce", "\u202ealice", "a\x00b", "@everyone", "<b>x</b>", "[x](y)"):
        with pytest.raises(UserError, match="A voice name is"):
            valid_name(bad)

    pth, index = voice_files["alice"]
    voice = import_voice(settings, ADA.owner, "alice", [pth, index])
    for lookalike in ("Ａlice", "\u0410lice", "ALİCE".replace("İ", "I")):
        assert get_voice(settings, ADA.owner, lookalike).id == voice.id
    with pytest.raises(UserError, match="already have a voice"):
        import_voice(settings, ADA.owner, "\u0410LICE", [pth, index])
    assert training.train(settings, ADA, "\u0410lice").text.startswith(
        "You already have a voice called"
    )
    assert bot_voices.set_voice(settings, ADA, "ａｌｉｃｅ").text.startswith(
        "⭐ alice is your default"
    )
    assert bot_voices.voice_choices(settings, ADA, "Ａli") == [("alice", voice.id)]


# ------------------------------------------------------------------------------------------
# Songs users send


def test_a_song_a_user_sends_is_theirs_alone(settings, song_wav, tmp_path):
    mine = api.add_uploaded_song("telegram:1", song_wav, "Mine", s=settings)
    theirs = api.add_uploaded_song("telegram:2", song_wav, "Theirs", s=settings)
    assert mine.id != theirs.id  # the same bytes, two rows
    assert api.get_song(mine.id, "telegram:2", s=settings) is None
    assert api.get_song(theirs.id, "telegram:1", s=settings) is None
    assert [s.id for s, _ in api.find_songs("Theirs", "telegram:1", s=settings)] == []

    api.forget_user("telegram:1", s=settings)
    with session(settings.database) as db:
        kept = db.get(Song, theirs.id)
        assert kept is not None and db.get(Song, mine.id) is None
    assert Path(kept.uri.removeprefix("file://")).is_file()  # the other's file stays
    files = settings.data_dir / "files"
    assert not (files / "uploads" / "telegram_1").exists()  # no empty folder left behind


def race_identical_uploads(settings, song: Path, racers: int = 4) -> None:
    """`racers` threads send the same file as one user at once: one song, no error."""
    got: list = []
    errors: list = []
    start = threading.Barrier(racers)

    def upload():
        start.wait()
        try:
            got.append(api.add_uploaded_song("telegram:1", song, "Twice", s=settings).id)
        except Exception as exc:  # noqa: BLE001 - the test reports any failure
            errors.append(exc)

    threads = [threading.Thread(target=upload) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors and len(got) == racers and len(set(got)) == 1, errors
    with session(settings.database) as db:
        assert db.query(Song).count() == 1


def test_identical_uploads_at_once_from_one_user_give_one_song(settings, song_wav):
    race_identical_uploads(settings, song_wav)


def test_a_catalog_song_sent_again_is_the_catalog_song(settings, song_wav):
    catalog = add_song(settings, song_wav, title="Test Song")
    assert api.add_uploaded_song("telegram:1", song_wav, "Mine", s=settings).id == catalog.id
