"""The platform-neutral chat handlers (`bots`) and the bots' import boundary."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bots import buttons, status
from bots.inputs import MAX_PITCH, parse_song_args
from bots.messages import Who
from bots.payload import pack, unpack
from flows.api import UserError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bohemian rhapsody +2", ("bohemian rhapsody", 2)),
        ("bohemian rhapsody -3", ("bohemian rhapsody", -3)),
        ("  yesterday   ", ("yesterday", 0)),
        ("blink 182", ("blink 182", 0)),  # an unsigned number is part of the title
        ("song pitch=4", ("song", 4)),
        ("song key:-1", ("song", -1)),
        ("+2", ("", 2)),
        ("", ("", 0)),
    ],
)
def test_song_arguments(text, expected):
    assert parse_song_args(text) == expected


def test_pitch_out_of_range_says_the_range():
    with pytest.raises(UserError, match=f"-{MAX_PITCH} to \\+{MAX_PITCH}"):
        parse_song_args("song +13")


def test_button_data_fits_telegrams_64_bytes_and_round_trips():
    song, voice = "f" * 32, "0123456789abcdef0123456789abcdef"
    assert unpack(pack(voice)) == voice
    data = f"cv|{pack(song)}|{pack(voice)}|{-12:+d}"
    assert len(data.encode()) <= 64
    assert unpack("not base64!") == ""


def test_stale_or_forged_buttons_get_a_note_not_an_error(settings):
    who = Who("telegram", "5", "5", "Eve")
    for data in ("", "zz", "cv|x|y|+1", "cs|AAAA|+x", "dv|" + pack("a" * 32), "tc|" + "Q" * 22):
        reply = buttons.pressed(settings, who, data)
        assert reply.toast or reply.text, data
        assert not getattr(reply, "kind", None)  # never a job


def test_bots_import_only_the_submission_and_query_api():
    allowed = {"flows.api", "flows.submit", "flows.chat.text"}
    for path in (ROOT / "bots").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in ("flows", "flows.chat"):
                modules = [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                assert top not in ("gpu_worker", "sqlalchemy", "prefect"), (path.name, module)
                if top != "flows" or (
                    path.name == "cli.py" and module in ("flows.cli", "flows.serve")
                ):
                    continue  # the console entry extends the flows CLI and runs `encore serve`
                chat_text = module == "flows.chat" or module.startswith("flows.chat.")
                assert module in allowed or chat_text, (path.name, module)  # and what users read


def test_status_says_when_a_finished_result_never_reached_the_chat(settings):
    from flows.jobs import create_job, update_job

    who = Who("telegram", "7", "7", "Ida")
    given_up = "It was ready, but Telegram refused it for 6 h, so I stopped trying; ask again."
    for result in ({"undelivered": given_up}, {}):
        job_id = create_job(settings, "stems", who.owner, {"song_id": "x", "options": {}})
        update_job(settings, job_id, state="succeeded", step="done", result=result)
    lines = status.status(settings, who).text.splitlines()
    assert any(given_up in line for line in lines), lines
    assert sum("✅ done" in line for line in lines) == 1, lines
