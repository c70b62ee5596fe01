"""The separation step on a tiny random-weight HTDemucs, through Demucs's real loader."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gpu_worker import cpu  # noqa: E402
from gpu_worker import separate as sep  # noqa: E402
from gpu_worker.errors import BadAudio, EngineError, ModelMissing  # noqa: E402
from tests.tiny_demucs import build_demucs_repo, demucs_reference  # noqa: E402
from tests.wording import refused, said

SR = 44100
LENGTH = 4 * SR + 123  # not a multiple of any chunk or hop size
STEMS = {"drums", "bass", "other", "vocals", "instrumental"}
# bf16 autocast vs fp32 on the tiny model measured 50-53 dB (48 dB at full size).
BF16_MIN_SNR_DB = 40.0


def snr_db(ref: np.ndarray, test: np.ndarray) -> float:
    ref = ref.astype(np.float64)
    noise = float(np.sum((ref - test) ** 2))
    return float("inf") if noise == 0 else float(10 * np.log10(np.sum(ref**2) / noise))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("demucs")
    build_demucs_repo(folder, "htdemucs")
    return folder


@pytest.fixture(scope="module")
def song() -> np.ndarray:
    """Stereo: a bass line, a chord, a vibrato 'voice' and noise-burst 'drums'."""
    rng = np.random.default_rng(7)
    t = np.arange(LENGTH) / SR
    bass = 0.3 * np.sin(2 * np.pi * 55 * t * (1 + (t % 1 > 0.5)))
    chord = sum(0.08 * np.sin(2 * np.pi * f * t) for f in (262, 330, 392))
    voice = 0.2 * np.sin(2 * np.pi * 440 * t + 3 * np.sin(2 * np.pi * 5 * t))
    hits = (np.exp(-30 * (t % 0.5)) * rng.standard_normal(LENGTH)) * 0.3
    left = bass + chord + voice + hits
    right = bass + 0.7 * chord + voice + 0.8 * hits
    return np.stack([left, right]).astype(np.float32)


@pytest.fixture(autouse=True)
def _fresh_cache():
    sep.clear_model_cache()
    yield
    sep.clear_model_cache()


def read(path: Path) -> np.ndarray:
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    assert rate == SR
    return data.T


def test_writes_every_stem_sample_aligned(model_dir, song, tmp_path):
    out = tmp_path / "stems"
    paths = sep.separate(song, out, model_dir=model_dir)
    assert set(paths) == STEMS
    assert {p.name for p in out.iterdir()} == {f"{s}.wav" for s in STEMS}
    for path in paths.values():
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.frames) == (SR, 2, LENGTH)
        assert info.format == "WAV" and info.subtype == "FLOAT"
    assert [p.name for p in tmp_path.iterdir()] == ["stems"]  # no temporary folder left


def test_instrumental_is_the_sum_of_non_vocal_stems(model_dir, song, tmp_path):
    paths = sep.separate(song, tmp_path / "stems", model_dir=model_dir)
    total = sum(read(paths[s]) for s in ("drums", "bass", "other"))
    np.testing.assert_allclose(read(paths["instrumental"]), total, atol=1e-6)
    assert np.abs(read(paths["vocals"])).max() > 0


def test_fp32_equals_demucs_apply_model(model_dir, song, tmp_path):
    paths = sep.separate(song, tmp_path / "stems", model_dir=model_dir)
    for name, expected in demucs_reference(model_dir, "htdemucs", song).items():
        assert snr_db(expected, read(paths[name])) > 100, name


def test_bf16_agrees_with_fp32(model_dir, song):
    fp32 = sep.separate_array(song, model_dir=model_dir)
    bf16 = sep.separate_array(
        song, model_dir=model_dir, options=sep.SeparationOptions(precision="bf16")
    )
    ref = np.concatenate(list(fp32.values()))
    got = np.concatenate([bf16[k] for k in fp32])
    assert snr_db(ref, got) >= BF16_MIN_SNR_DB
    assert all(v.dtype == np.float32 and v.shape == (2, LENGTH) for v in bf16.values())


def test_mono_input_gives_stereo_stems(model_dir, song, tmp_path):
    paths = sep.separate(song[:1], tmp_path / "stems", model_dir=model_dir)
    assert read(paths["vocals"]).shape == (2, LENGTH)


def test_progress_rises_to_one(model_dir, song):
    seen: list[float] = []
    sep.separate_array(song, model_dir=model_dir, progress=seen.append)
    assert seen[-1] == 1.0 and len(seen) >= 3
    assert seen == sorted(seen) and all(0 < f <= 1 for f in seen)


def test_models_are_cached_per_folder_name_and_device(model_dir):
    first = sep.load_model(model_dir, "htdemucs")
    assert sep.load_model(model_dir, "htdemucs") is first
    sep.clear_model_cache()
    assert sep.load_model(model_dir, "htdemucs") is not first


def test_missing_model_names_the_download_command(model_dir, song, tmp_path):
    with refused(ModelMissing, match="encore models download") as info:
        sep.separate(song, tmp_path / "out", model_dir=model_dir,
                     options=sep.SeparationOptions(model="htdemucs_ft"))  # fmt: skip
    assert "htdemucs_ft" in said(info.value)
    with refused(ModelMissing, match="encore models download"):
        sep.separate(song, tmp_path / "out", model_dir=tmp_path / "nowhere")
    assert not (tmp_path / "out").exists()


def test_damaged_weights_say_so(tmp_path, song):
    path = build_demucs_repo(tmp_path / "models")
    path.write_bytes(path.read_bytes()[:-100])
    with refused(ModelMissing, match="damaged.*encore models download"):
        sep.separate(song, tmp_path / "out", model_dir=tmp_path / "models")


def test_a_failure_during_separation_leaves_nothing(model_dir, song, tmp_path):
    def abort(fraction: float) -> None:
        if fraction > 0.3:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        sep.separate(song, tmp_path / "stems", model_dir=model_dir, progress=abort)
    assert list(tmp_path.iterdir()) == []


def test_a_failure_while_writing_leaves_nothing(model_dir, song, tmp_path, monkeypatch):
    real = sep._write_wav
    calls = []

    def flaky(path, audio):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        real(path, audio)

    monkeypatch.setattr(sep, "_write_wav", flaky)
    with pytest.raises(OSError, match="disk full"):
        sep.separate(song, tmp_path / "stems", model_dir=model_dir)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_folder_is_replaced_whole(model_dir, song, tmp_path):
    out = tmp_path / "stems"
    out.mkdir()
    (out / "stale.wav").write_bytes(b"old")
    sep.separate(song, out, model_dir=model_dir)
    assert {p.name for p in out.iterdir()} == {f"{s}.wav" for s in STEMS}
    assert [p.name for p in tmp_path.iterdir()] == ["stems"]


@pytest.mark.parametrize(
    "audio, rate, match",
    [
        (np.full((2, SR), np.nan, np.float32), SR, "invalid samples"),
        (np.zeros((3, SR), np.float32), SR, "mono or stereo"),
        (np.zeros((2, 0), np.float32), SR, "empty"),
        (np.zeros((2, SR), np.float32), 48000, "44100 Hz"),
    ],
)
def test_bad_audio_is_refused(model_dir, tmp_path, audio, rate, match):
    with refused(BadAudio, match=match):
        sep.separate(audio, tmp_path / "out", model_dir=model_dir, sample_rate=rate)
    assert not (tmp_path / "out").exists()


def test_options_are_validated():
    with pytest.raises(ValueError):
        sep.SeparationOptions(precision="fp16")
    with pytest.raises(ValueError):
        sep.SeparationOptions(overlap=1.0)
    with pytest.raises(ValueError):
        sep.SeparationOptions(workers=-1)
    assert sep.cpu_plan(2) == (2, 1) and sep.cpu_plan(16) == (4, 4) and sep.cpu_plan(2, 1) == (1, 2)
    assert sep.default_model("cuda") == "htdemucs_ft" and sep.default_model("cpu") == "htdemucs"
    assert sep.default_precision("cuda") == "fp32"
    assert sep.default_precision("cpu") in ("fp32", "bf16")


def test_allocator_env_preloads_tcmalloc_when_installed():
    env = cpu.fast_allocator_env({"PATH": "/bin", "LD_PRELOAD": "/x/libfoo.so"})
    if cpu.find_tcmalloc():
        assert env["LD_PRELOAD"].split(":")[0] == cpu.find_tcmalloc()
        assert env["LD_PRELOAD"].endswith(":/x/libfoo.so")
        assert cpu.fast_allocator_env(env)["LD_PRELOAD"] == env["LD_PRELOAD"]  # idempotent
    else:
        assert "glibc.malloc.hugetlb=1" in env["GLIBC_TUNABLES"]


# --- download_demucs: Demucs's remote file list, torch.hub's downloader ------------------------


def test_demucs_files_come_from_demucs_remote_list():
    files = sep.demucs_files(["htdemucs", "htdemucs_ft"])
    assert [f for f, _ in files["htdemucs"]] == ["955717e8-8726e21a.th"]
    assert files["htdemucs"][0][1].startswith("https://dl.fbaipublicfiles.com/demucs/")
    assert len(files["htdemucs_ft"]) == 4
    with refused(EngineError, match="Unknown Demucs model"):
        sep.demucs_files(["nope"])


def _fake_remote(tmp_path: Path, url_root: str, monkeypatch) -> None:
    """A remote repo laid out like Demucs's (bag yaml + `<sig>-<sha>.th`) under `url_root`."""
    served = tmp_path / "served"
    model = build_demucs_repo(served, "mybag", sig="0123abcd")
    remote = tmp_path / "remote"
    remote.mkdir()
    (served / "mybag.yaml").rename(remote / "mybag.yaml")
    sha = hashlib.sha256(model.read_bytes()).hexdigest()[:8]
    assert model.name == f"0123abcd-{sha}.th"
    urls = {"0123abcd": f"{url_root}/{model.name}"}
    monkeypatch.setattr(sep, "_remote_catalog", lambda: (remote, urls))


def test_download_fills_a_folder_demucs_loads(tmp_path, song, monkeypatch):
    _fake_remote(tmp_path, (tmp_path / "served").as_uri(), monkeypatch)
    target = tmp_path / "models"
    written = sep.download_demucs(target, ["mybag"])
    assert sorted(p.name for p in written) == sorted(p.name for p in target.iterdir())
    stems = sep.separate_array(song, model_dir=target, options=sep.SeparationOptions(model="mybag"))
    assert set(stems) == {"drums", "bass", "other", "vocals"}


def test_download_failure_is_one_clear_sentence(tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on: refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _fake_remote(tmp_path, f"http://127.0.0.1:{port}", monkeypatch)
    target = tmp_path / "models"
    with refused(EngineError, match="Could not download the Demucs model mybag"):
        sep.download_demucs(target, ["mybag"], timeout_s=5)
    assert list(target.iterdir()) == []  # no partial file, no bag without its model


@pytest.mark.skipif(cpu.find_tcmalloc() is None, reason="tcmalloc is not installed")
def test_reexec_with_fast_allocator_preloads_tcmalloc_once():
    import subprocess
    import sys

    code = (
        "import os; from gpu_worker import cpu as s; s.reexec_with_fast_allocator(); "
        "print(s.fast_allocator_active(), os.environ.get('ENCORE_ALLOCATOR_REEXEC'))"
    )
    drop = ("LD_PRELOAD", "ENCORE_ALLOCATOR_REEXEC")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["True", "1"]
