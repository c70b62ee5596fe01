"""The one map from errors to sentences (`flows.errors`): every case the engine raises has its
sentence, numbers read right, and an error survives the trip between processes."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from flows import errors as wording
from flows.errors import (
    SAMPLE_PROBLEMS,
    SENTENCES,
    ConsentNeeded,
    UserError,
    error_record,
    from_error_record,
    megabytes,
    user_message,
)
from gpu_worker import errors
from gpu_worker.errors import BadAudio, BadVoice, EngineError, ModelMissing, TooLong

ENGINE = Path(__file__).resolve().parents[1] / "gpu_worker"


def _string_calls(names: set[str], position: int = 0) -> list[tuple[str, str, str]]:
    """(file, callee, argument) of every call in the engine to one of `names` whose argument at
    `position` is a literal string."""
    found = []
    for path in sorted(ENGINE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or len(node.args) <= position:
                continue
            func = node.func
            callee = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            arg = node.args[position]
            if callee in names and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.append((path.name, callee, arg.value))
    return found


def _worded(cls: type, reason: str) -> bool:
    return any((base, reason) in SENTENCES for base in cls.__mro__)


def test_every_error_the_engine_raises_has_its_sentence():
    raised = _string_calls(set(errors.KINDS))
    assert len(raised) > 100  # the scan sees the engine's raises
    missing = [r for r in raised if not _worded(errors.KINDS[r[1]], r[2])]
    assert missing == []


def test_every_part_and_case_the_engine_names_has_its_words():
    tables = [  # (helper, which argument names the case, the words for each case)
        ("fail", 0, wording._INDEX_PARTS),
        ("_refused", 0, wording._ARCHIVE_CASES),
        ("_refuse", 0, SAMPLE_PROBLEMS),
        ("SampleProblem", 0, SAMPLE_PROBLEMS),
        ("_bad", 1, wording._VOICE_PARTS),
        ("_missing", 2, wording._SEPARATION_STATE),
    ]
    for helper, position, table in tables:
        calls = _string_calls({helper}, position)
        assert calls, helper  # the scan sees the helper's calls
        assert [c for c in calls if c[2] not in table] == []


def test_the_engine_writes_no_sentences():
    """No literal a user would read: every engine error's first argument is a one-word reason."""
    for file, callee, reason in _string_calls(set(errors.KINDS)):
        assert reason.isidentifier(), (file, callee, reason)


def test_a_size_over_a_limit_shows_the_real_size():
    limit = 20 * 2**20
    text = user_message(BadAudio("too_large", size=int(20.5 * 2**20), max_bytes=limit))
    assert text.startswith("The file is 20.5 MB, over the 20 MB limit;")
    just_over = user_message(BadAudio("too_large", size=limit + 1, max_bytes=limit))
    assert "is 20.1 MB, over the 20 MB limit" in just_over
    assert megabytes(3 * 2**20) == "3 MB" and megabytes(0.25 * 2**20) == "0.2 MB"


def test_missing_weights_name_the_command_and_the_files():
    text = user_message(ModelMissing("voice_models", folder="/m", missing=["rmvpe/rmvpe.pt"]))
    assert text == (
        "Voice models are missing from /m (rmvpe/rmvpe.pt); run `encore models download`."
    )


@pytest.mark.parametrize(
    "error",
    [
        TooLong("decoded", max_seconds=900.0),
        BadVoice("damaged", name="x.pth", part="shape", key="k", shape=[1, 2], needs=[2, 2]),
        EngineError("ffmpeg_failed", step="mixing", output="boom"),
        UserError("That voice was deleted; pick another voice."),
        ConsentNeeded(),
    ],
)
def test_an_error_crosses_processes_as_plain_data(error):
    back = from_error_record(json.loads(json.dumps(error_record(error))))
    assert type(back) is type(error)
    assert user_message(back) == user_message(error)


def test_an_unknown_case_still_reads_as_one_sentence():
    assert user_message(BadVoice("no_such_case", name="x")) == wording.FALLBACK[BadVoice]
    assert user_message(BadAudio("too_large")) == wording.FALLBACK[BadAudio]  # facts missing
    assert user_message(RuntimeError("secret detail")) == wording.GENERIC
