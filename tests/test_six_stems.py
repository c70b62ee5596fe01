"""Six stems (htdemucs_6s: guitar and piano too) from the chat and the command line, and an
a cappella song that is not separated."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from bots.messages import JobPlan, Who
from bots.songs import song_command, split_six
from flows.catalog import add_song
from flows.jobs import step_runs
from flows.storage import open_storage
from flows.submit import follow, submit_cover, submit_stems
from flows.voices import import_voice
from gpu_worker import acappella
from gpu_worker.audio import decode, measure_loudness, probe, read_wav, write_wav
from gpu_worker.tags import read_tags
from tests.conftest import run_cli
from tests.tiny_demucs import SOURCES_6S, build_demucs_repo

SR = 44100
SIX = {f"{name}.flac" for name in [*SOURCES_6S, "instrumental"]}


def test_six_stems_from_the_command_line(settings, song_wav, tmp_path):
    zipped = tmp_path / "six.zip"
    done = run_cli(settings, "stems", str(song_wav), "--six", "-o", str(zipped))
    assert done.returncode == 0, done.stderr
    with zipfile.ZipFile(zipped) as zf:
        assert set(zf.namelist()) == SIX
        zf.extractall(tmp_path / "six")
    length = decode(song_wav, SR, 2).shape[1]
    stems = {name: decode(tmp_path / "six" / name, SR, 2) for name in SIX}
    assert {a.shape[1] for a in stems.values()} == {length}  # every stem sample-aligned
    rest = sum(stems[f"{n}.flac"] for n in SOURCES_6S if n != "vocals")
    assert np.abs(rest - stems["instrumental.flac"]).max() < 1e-3  # within FLAC's rounding
    assert read_tags(tmp_path / "six" / "guitar.flac")["title"].endswith("(guitar)")


def test_six_and_four_stems_are_cached_apart(settings, song_wav):
    song = add_song(settings, song_wav, title="Both Ways")
    six = follow(submit_stems("u1", song.id, s=settings, options={"six": True}))
    assert six.state == "succeeded", six.reason
    assert set(six.result["stems"]) == {*SOURCES_6S, "instrumental"}
    assert six.result["filename"] == "Both Ways (six stems).zip"
    four = follow(submit_stems("u1", song.id, s=settings))
    assert four.state == "succeeded", four.reason
    assert "guitar" not in four.result["stems"]
    models = [r.detail["model"] for j in (six, four) for r in step_runs(settings, j.id)
              if r.step == "separating"]  # fmt: skip
    assert models == ["htdemucs_6s", "htdemucs"]


def test_six_stems_from_the_chat(settings, song_wav):
    add_song(settings, song_wav, title="Chat Song", artist="Tester")
    who = Who("telegram", "7", "7", "Ann")
    plan = song_command(settings, who, "stems", "six chat song")
    assert isinstance(plan, JobPlan), plan
    assert plan.options == {"six": True} and "six stems" in plan.headline
    plain = song_command(settings, who, "stems", "chat song")
    assert isinstance(plain, JobPlan) and plain.options == {}
    assert split_six("six") == ("six", False)  # a song called "six"


def test_missing_six_stem_model_names_the_download_command(settings, song_wav, tmp_path):
    import shutil

    models = tmp_path / "models"
    shutil.copytree(settings.models, models)
    for name in ("htdemucs_6s.yaml",):
        (models / "demucs" / name).unlink()
    env_settings = settings.model_copy(update={"model_dir": models})
    done = run_cli(env_settings, "stems", str(song_wav), "--six")
    assert done.returncode == 1
    assert "encore models download" in done.stderr and "six stems" in done.stderr


# --- a cappella ---------------------------------------------------------------------------


def test_the_detector_tells_a_mix_from_a_voice(settings):
    from flows.demo import synth_parts

    backing, vocal = synth_parts(3.0, seed=5)
    assert not acappella.is_a_cappella(vocal, backing)
    assert acappella.is_a_cappella(vocal, 0.001 * backing)
    assert not acappella.is_a_cappella(np.zeros_like(vocal), np.zeros_like(vocal))  # no voice


@pytest.fixture
def solo(settings, monkeypatch, tmp_path):
    """Settings whose separator hears only voice (as a trained one does on an a cappella)."""
    import shutil

    from flows.settings import get_settings

    models = tmp_path / "models"
    shutil.copytree(settings.models, models)
    build_demucs_repo(models / "demucs", "voice_only", voice_only=True)
    monkeypatch.setenv("ENCORE_MODEL_DIR", str(models))
    monkeypatch.setenv("ENCORE_SEPARATION_MODEL", "voice_only")
    get_settings.cache_clear()
    return get_settings()


def test_an_a_cappella_song_is_sung_unseparated(solo, voice_files, tmp_path):
    from flows.demo import synth_parts

    _, vocal = synth_parts(3.0, seed=5)  # the sung line alone
    vocal = (0.5 * vocal / np.abs(vocal).max()).astype(np.float32)
    path = write_wav(tmp_path / "a-cappella.wav", np.stack([vocal, vocal]), SR)
    song = add_song(solo, path, title="Alone", artist="Singer")
    pth, index = voice_files["alice"]
    voice = import_voice(solo, "u1", "alice", [pth, index])

    job = follow(submit_cover("u1", song.id, voice.id, {"format": "flac"}, s=solo), s=solo)
    assert job.state == "succeeded", job.reason
    assert "a cappella" in job.result["note"]
    cover = open_storage(solo.storage).fetch(job.result["uri"], tmp_path)
    assert abs(probe(cover).duration - probe(path).duration) <= 0.010
    assert abs(measure_loudness(cover).integrated_lufs - solo.loudness_lufs) <= 0.5

    stems = follow(submit_stems("u1", song.id, s=solo), s=solo)  # from the cache
    assert stems.state == "succeeded", stems.reason
    assert "a cappella" in stems.result["note"]
    runs = [r for j in (job, stems) for r in step_runs(solo, j.id) if r.step == "separating"]
    assert [r.detail.get("a_cappella") for r in runs] == [True, True]
    # The vocal stem is the untouched song; the instrumental is silence, as long as the song.
    key = f"tmp/stems/{song.content_hash}/voice_only"
    storage = open_storage(solo.storage)
    voc, _ = read_wav(storage.fetch(storage.uri(f"{key}/vocals.wav"), tmp_path / "v"))
    inst, _ = read_wav(storage.fetch(storage.uri(f"{key}/instrumental.wav"), tmp_path / "i"))
    song_audio = decode(path, SR, 2)
    assert voc.shape == inst.shape == song_audio.shape
    assert np.array_equal(voc, song_audio) and not inst.any()


def test_a_song_with_music_is_separated_as_usual(settings, song_wav):
    song = add_song(settings, song_wav, title="Band Song")
    job = follow(submit_stems("u1", song.id, s=settings))
    assert job.state == "succeeded", job.reason
    assert "note" not in job.result
    runs = [r for r in step_runs(settings, job.id) if r.step == "separating"]
    assert [r.detail.get("a_cappella") for r in runs] == [None]
