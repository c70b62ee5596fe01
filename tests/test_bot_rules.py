"""The bots' pure rules, without a bot, a database or a Prefect server: button data and
what a press binds to, argument checks, and what each platform's replies tell users to do.

(Run alone with `PREFECT_API_URL` set to anything: nothing here talks to Prefect.)
"""

from __future__ import annotations

import inspect

import pytest

from bots import buttons, privacy, songs, training, voices
from bots.inputs import MAX_ARG, clean_arg, parse_song_args, visible
from bots.messages import Who
from bots.payload import (
    VERBS,
    button,
    id_arg,
    owner_tag,
    pack,
    pitch_arg,
    read,
    tagged_owner,
    unpack,
)
from flows.api import UserError
from flows.chat import text as said

ADA = Who("telegram", "1", "-100", "Ada")
SONG, VOICE = "0123456789abcdef0123456789abcdef", "f" * 32


# ------------------------------------------------------------------------------------------
# Button data


def test_ids_pack_into_22_characters_and_back():
    for hex_id in (SONG, VOICE, "0" * 32):
        assert len(pack(hex_id)) == 22
        assert unpack(pack(hex_id)) == id_arg(pack(hex_id)) == hex_id
    assert unpack("not base64!") == ""


@pytest.mark.parametrize("junk", ["", "AAAA", "A" * 21, "A" * 23, "!" * 22, pack(SONG)[:-1] + "*"])
def test_an_id_that_is_not_16_bytes_of_base64url_is_junk(junk):
    with pytest.raises(ValueError):
        id_arg(junk)


def test_a_pitch_from_a_button_is_checked_as_a_typed_one():
    assert [pitch_arg(p) for p in ("+0", "-12", "+12", "+3")] == [0, -12, 12, 3]
    with pytest.raises(UserError, match="-12 to \\+12"):
        pitch_arg("+13")
    for junk in ("3", "+", "++1", "+123", " +1", "+1 "):
        with pytest.raises(ValueError):
            pitch_arg(junk)


def test_a_numeric_user_id_is_its_own_tag_and_reads_back():
    for user_id in ("1", "777000", str(2**64 - 1)):
        who = Who("discord", user_id, "9")
        tag = owner_tag(who)
        assert len(tag) <= 11 and "|" not in tag
        assert tagged_owner("discord", tag) == who.owner


def test_any_other_user_id_is_tagged_by_a_hash_that_names_nobody():
    who = Who("cli", "someone@example", "9")
    tag = owner_tag(who)
    assert tag.startswith("~") and tag == owner_tag(Who("cli", "someone@example", "other"))
    assert tag != owner_tag(Who("cli", "someone@example2", "9"))
    assert tagged_owner("cli", tag) is None


def test_button_data_carries_its_verb_and_users_tag_and_fits_64_bytes():
    data = button(ADA, "label", "cv", pack(SONG), pack(VOICE), "-12").data
    assert len(data.encode()) <= 64
    press = read(data)
    assert (press.verb, press.tag, press.args) == (
        "cv",
        owner_tag(ADA),
        (pack(SONG), pack(VOICE), "-12"),
    )


@pytest.mark.parametrize("data", [None, "", "cv", "zz|tag|x", "CV|tag", "|" * 200])
def test_data_with_no_known_verb_is_no_press(data):
    assert read(data) is None


# ------------------------------------------------------------------------------------------
# What a press binds to


def test_every_verb_is_bound_to_one_handler():
    assert set(buttons.BINDINGS) == set(VERBS)
    for verb, binding in buttons.BINDINGS.items():
        takes = len(inspect.signature(binding.handler).parameters) - 2  # (s, who, ...)
        assert takes == len(binding.readers), verb


@pytest.mark.parametrize(
    ("args", "handler", "checked"),
    [
        ((f"cs|T|{pack(SONG)}|+2"), songs.song_picked_for_cover, (SONG, 2)),
        ((f"cv|T|{pack(SONG)}|{pack(VOICE)}|-3"), songs.voice_picked_for_cover, (SONG, VOICE, -3)),
        ((f"ss|T|{pack(SONG)}|+0"), songs.song_picked_for_stems, (SONG, 0)),
        ((f"ks|T|{pack(SONG)}|+0"), songs.song_picked_for_karaoke, (SONG, 0)),
        ((f"dv|T|{pack(VOICE)}"), voices.default_picked, (VOICE,)),
        ((f"tc|T|{pack(VOICE)}"), training.consent, (VOICE,)),
        ((f"tx|T|{pack(VOICE)}"), training.consent_refused, (VOICE,)),
        (("fy|T"), privacy.forget_confirmed, ()),
        (("fn|T"), privacy.forget_declined, ()),
    ],
)
def test_a_press_binds_to_its_handler_with_checked_arguments(args, handler, checked):
    binding, values = buttons.bind(args)
    assert binding.handler is handler and values == checked


@pytest.mark.parametrize(
    "data",
    ["fy|T|extra", "dv|T", f"cs|T|{pack(SONG)}", f"cv|T|{pack(SONG)}|+1", "nope|T|x"],
)
def test_a_press_with_the_wrong_number_of_arguments_binds_to_nothing(data):
    assert buttons.bind(data) is None


def test_a_forged_argument_is_refused_before_any_handler_runs():
    with pytest.raises(UserError):
        buttons.bind(f"cs|T|{pack(SONG)}|+99")
    with pytest.raises(ValueError):
        buttons.bind("dv|T|" + "A" * 22 + "==")


# ------------------------------------------------------------------------------------------
# Typed arguments


def test_arguments_are_read_as_a_person_sees_them_and_have_a_length_limit():
    assert visible("  a\u200b\u202eb\x00\n\tc  ") == "ab c"
    assert visible("Ｓｏｎｇ") == "Song"
    assert clean_arg("x" * MAX_ARG) == "x" * MAX_ARG
    with pytest.raises(UserError, match=f"under {MAX_ARG} characters"):
        clean_arg("x" * (MAX_ARG + 1))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("yesterday +2", ("yesterday", 2)),
        ("song key=-3", ("song", -3)),
        ("blink 182", ("blink 182", 0)),
    ],
)
def test_a_signed_number_at_the_end_is_the_key_change(text, expected):
    assert parse_song_args(text) == expected


# ------------------------------------------------------------------------------------------
# What each platform's replies say

MB = 2**20


def every_reply(r: said.CommandReplies) -> dict[str, str]:
    """Each sentence of `r`, by method."""
    return {
        "help": r.help(),
        "unknown_command": r.unknown_command("nope"),
        "chatter": r.chatter(),
        "too_big": r.too_big(int(20.5 * MB), 20 * MB),
        "which_song": r.which_song("cover") + " " + r.which_song("stems"),
        "no_song_matches": r.no_song_matches("zz", "cover"),
        "song_file_sent": r.song_file_sent(),
        "no_voice": r.no_voice(),
        "no_own_voice": r.no_own_voice(),
        "no_default_voice": r.no_default_voice(),
        "name_the_voice": r.name_the_voice(),
        "training_started": r.training_started("Me", "30 s", "2 min", "10 min", 20 * MB),
        "not_a_recording": r.not_a_recording(),
        "no_training_session": r.no_training_session(),
        "sample_counted": " ".join(
            r.sample_counted("10 s", "40 s", 2, more, enough)
            for more, enough in (("20 s", False), (None, False), (None, True))
        ),
        "too_little_voice": r.too_little_voice("Me", "10 s", "20 s"),
        "collecting_samples": r.collecting_samples("Me", "10 s"),
        "session_over": r.session_over(),
        "training_cancelled": r.training_cancelled(),
        "nothing_to_finish": r.nothing_to_finish(),
        "import_started": r.import_started("", 20 * MB) + " " + r.import_started("Me", None),
        "got_model": r.got_model(),
        "model_needs_pth": r.model_needs_pth(),
        "name_the_import": r.name_the_import(),
        "import_name_taken": r.import_name_taken("Me"),
    }


def _public_methods(cls) -> set[str]:
    return {name for name, _ in inspect.getmembers(cls, inspect.isfunction) if name[0] != "_"}


def test_every_per_platform_reply_is_checked_here():
    checked = set(every_reply(said.replies("telegram")))
    assert _public_methods(said.CommandReplies) == checked
    extra = _public_methods(said.DiscordReplies) - checked
    assert extra == {"add_recordings"}  # Discord's own, after /train new and /train add


def test_discord_users_are_told_only_what_works_on_discord():
    discord = said.replies("discord")
    sentences = {**every_reply(discord), "add_recordings": discord.add_recordings()}
    for name, sentence in sentences.items():
        assert "/done" not in sentence, name  # Telegram's: Discord sends files with the command
        assert "reply" not in sentence.lower(), name  # no replying to a file with a command
        assert "/train <name>" not in sentence and "voice notes" not in sentence, name
        assert "Telegram" not in sentence, name


def test_telegram_users_are_told_to_type_commands_with_their_text():
    telegram = every_reply(said.replies("telegram"))
    assert "/done" in telegram["sample_counted"] and "/done" in telegram["got_model"]
    assert "reply to it with /cover" in telegram["no_song_matches"]
    assert "/train <name>" in telegram["no_voice"]
    assert "Telegram lets bots download at most 20 MB" in telegram["too_big"]
    assert "/train new" not in " ".join(telegram.values())


def test_another_platform_gets_the_typed_commands_wording():
    assert said.replies("matrix").no_voice() == said.replies("telegram").no_voice()
    assert said.replies(None).which_song("cover") == said.replies("telegram").which_song("cover")


@pytest.mark.parametrize("platform", ["telegram", "discord"])
def test_a_refusal_is_one_short_sentence(platform):
    for name, sentence in every_reply(said.replies(platform)).items():
        if name in ("help", "sample_counted", "import_started", "which_song"):
            continue  # several replies joined above, or the command list
        assert "\n" not in sentence and sentence[-1] in ".?", (name, sentence)


@pytest.mark.parametrize("limit_mb", [8, 20, 25, 50])
def test_a_file_over_the_limit_never_reads_as_the_limit(limit_mb):
    limit = limit_mb * MB
    for over in (1, 1024, MB // 20, MB // 2, MB, 10 * MB):
        size = limit + over
        shown = said.size_over(size, limit)
        assert shown == f"just over {limit_mb} MB" or float(shown[:-3]) > limit_mb, shown
    assert said.size_over(int(20.5 * MB), 20 * MB) == "20.5 MB"
    assert said.size_over(21 * MB, 20 * MB) == "21 MB"


def test_quota_sentences_say_which_quota_and_when_it_frees():
    assert said.quota_full("active", "cover", 2).startswith("You already have 2 jobs on the way")
    rate = said.quota_full("rate", "cover", 1, wait="5 min", window="1 h")
    assert rate == "That is a lot at once: at most 1 new job per 1 h. Try again in 5 min."
    assert "voice training" in said.quota_full("daily", "train", 1, wait="3 h")
    assert "covers, karaoke tracks and stems" in said.quota_full("daily", "stems", 9, wait="3 h")
