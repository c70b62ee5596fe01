"""Importing community RVC models: good ones register, hostile ones are refused cleanly."""

from __future__ import annotations

import io
import zipfile

import pytest
import torch

from flows.errors import EXPECTED, UserError
from flows.voices import get_voice, import_voice, list_voices
from gpu_worker.errors import BadVoice
from tests.hostile import code_running_pth
from tests.wording import refused, said


def _nothing_registered(settings):
    assert list_voices(settings, "u1") == []
    voices = settings.data_dir / "files" / "voices"
    assert not voices.exists() or not any(p.is_file() for p in voices.rglob("*"))


def test_zip_with_pth_and_index_registers(settings, voice_files, tmp_path):
    pth, index = voice_files["alice"]
    archive = tmp_path / "alice.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(pth, "alice/alice.pth")
        zf.write(index, "alice/added_IVF5_Flat_nprobe_1_alice_v2.index")
        zf.writestr("__MACOSX/alice/._alice.pth", b"\0\5\x16\7")  # macOS litter: skipped
    voice = import_voice(settings, "u1", "Alice", [archive])
    assert (voice.version, voice.sample_rate, voice.f0) == ("v2", 40000, True)
    assert voice.index_uri is not None
    assert get_voice(settings, "u1", "alice").id == voice.id
    assert get_voice(settings, "u2", "alice") is None  # private to its owner
    with pytest.raises(UserError, match="already have a voice"):
        import_voice(settings, "u1", "alice", [pth])


def test_pickle_that_runs_code_is_refused_and_not_run(settings, tmp_path):
    marker = tmp_path / "pwned"
    evil = code_running_pth(tmp_path / "evil.pth", marker)
    with pytest.raises(BadVoice):
        import_voice(settings, "u1", "evil", [evil])
    assert not marker.exists()
    _nothing_registered(settings)


def test_zip_with_parent_paths_is_refused(settings, voice_files, tmp_path):
    pth, _ = voice_files["alice"]
    archive = tmp_path / "slip.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(pth, "../../outside.pth")
    with refused(BadVoice, match="unsafe paths"):
        import_voice(settings, "u1", "slip", [archive])
    assert not (tmp_path.parent / "outside.pth").exists()
    _nothing_registered(settings)


def test_zip_bomb_is_refused_without_expanding(settings, tmp_path):
    archive = tmp_path / "bomb.zip"
    with (
        zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf,
        zf.open("model.pth", "w", force_zip64=True) as fh,
    ):
        for _ in range(300):  # 300 MB of zeros, a few hundred KB compressed
            fh.write(bytes(1 << 20))
    assert archive.stat().st_size < 5 * 1024 * 1024
    with refused(EXPECTED, match="expands far beyond"):
        import_voice(settings, "u1", "bomb", [archive])
    _nothing_registered(settings)


@pytest.mark.parametrize(
    "name, content, words",
    [
        ("empty.pth", b"", "empty"),
        ("plain.pth", None, "RVC"),
        ("notes.txt", b"hello", "not an RVC model"),
        ("broken.zip", b"PK\x03\x04garbage", "damaged"),
    ],
)
def test_other_bad_files_are_refused(settings, tmp_path, name, content, words):
    path = tmp_path / name
    if content is None:  # a real checkpoint, but of some other network
        buf = io.BytesIO()
        torch.save({"state_dict": {"layer.weight": torch.zeros(3, 3)}, "epoch": 3}, buf)
        content = buf.getvalue()
    path.write_bytes(content)
    with refused(EXPECTED) as err:
        import_voice(settings, "u1", "x", [path])
    assert words in said(err.value) and said(err.value).endswith(".")
    _nothing_registered(settings)


def test_hostile_names_are_refused(settings, voice_files):
    pth, _ = voice_files["alice"]
    for name in ("../etc", "", "a" * 80, "bad\nname"):
        with pytest.raises(UserError, match="voice name"):
            import_voice(settings, "u1", name, [pth])
