"""Voice training (`gpu_worker.train`) on tiny random-weight assets, end to end and for real.

Nothing is mocked: rvc-next's slicing, pitch, HuBERT features, training loop (a tiny generator
against the full-size discriminator, which rvc-next fixes) and faiss index run in the child
process `train` starts. One training run is shared: it is interrupted after its first
checkpoint, resumed, and the voice it exports is then inspected and used for a conversion.
The training segment is shortened (4000 samples instead of 12800) so each CPU step takes about
a second; everything else is rvc-next's v2 40k configuration.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from gpu_worker.errors import BadAudio, Cancelled, EngineError, ModelMissing
from gpu_worker.train import (
    MANIFEST_FILE,
    TrainOptions,
    TrainProgress,
    TrainResult,
    required_training_assets,
    train,
)
from tests.tiny_rvc import TINY_TRAIN_CONFIG, voice_like
from tests.wording import refused, said

OVERRIDE = TINY_TRAIN_CONFIG
EPOCHS = 3


def options(**kwargs) -> TrainOptions:
    base = dict(epochs=EPOCHS, save_every=1, batch_size=2, f0_method="pm", config_override=OVERRIDE)
    return TrainOptions(**{**base, **kwargs})


class Stop(Exception):
    """Raised by a progress callback to interrupt training."""


@pytest.fixture(scope="module")
def assets(models_dir) -> Path:
    return models_dir / "rvc"


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    """One sung phrase of about 3.4 s: stereo, 44.1 kHz (training resamples to 40 kHz)."""
    x = voice_like(4.2, 44100, seed=1)
    path = tmp_path_factory.mktemp("samples") / "take 1.wav"
    sf.write(path, np.stack([x, 0.8 * x], axis=1), 44100, subtype="PCM_16")
    return path


@dataclass
class Runs:
    exp: Path
    first: list[TrainProgress] = field(default_factory=list)
    second: list[TrainProgress] = field(default_factory=list)
    checkpoints_after_stop: list[str] = field(default_factory=list)
    stage_files_after_stop: dict[str, int] = field(default_factory=dict)
    result: TrainResult | None = None
    seconds: float = 0.0


def _stage_files(exp: Path) -> dict[str, int]:
    folders = ("0_gt_wavs", "1_16k_wavs", "2a_f0", "2b-f0nsf", "3_feature768")
    return {
        str(p.relative_to(exp)): p.stat().st_mtime_ns
        for folder in folders
        for p in (exp / folder).iterdir()
        if not p.name.endswith(".spec.pt")  # the loader's spectrogram cache
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory, sample, assets) -> Runs:
    """Train; stop at the first checkpoint (the progress callback raises); train again."""
    out = Runs(exp=tmp_path_factory.mktemp("train") / "exp")
    start = time.monotonic()

    def first(p: TrainProgress) -> None:
        out.first.append(p)
        if p.message.startswith("checkpoint saved"):
            raise Stop("enough")

    with pytest.raises(Stop, match="enough"):
        train([sample], out.exp, "Tiny Voice", assets_dir=assets, options=options(), progress=first)
    out.checkpoints_after_stop = sorted(p.name for p in out.exp.glob("[GD]_*"))
    out.stage_files_after_stop = _stage_files(out.exp)
    out.result = train(
        [sample],
        out.exp,
        "Tiny Voice",
        assets_dir=assets,
        options=options(),
        progress=out.second.append,
    )
    out.seconds = time.monotonic() - start
    return out


def test_resume_after_interrupt_goes_on_from_the_checkpoint(runs):
    # The first run stopped after its first checkpoint, and kept exactly one G/D pair.
    saved = [p for p in runs.first if p.message.startswith("checkpoint saved")]
    assert saved and saved[0].epoch == 1
    steps_per_epoch = saved[0].step
    assert steps_per_epoch >= 1
    assert runs.checkpoints_after_stop == ["D_2333333.pth", "G_2333333.pth"]

    result = runs.result
    assert result is not None
    # The rerun resumed from a checkpoint (the stop lands at the next step, so epoch 1 or 2).
    assert 1 <= result.resumed_from_epoch < EPOCHS
    assert result.epochs == EPOCHS
    assert result.steps == EPOCHS * steps_per_epoch
    steps = [p.step for p in runs.second if p.stage == "training" and p.step]
    first_step = min(s for s in steps if s > 0)
    assert first_step == result.resumed_from_epoch * steps_per_epoch + 1  # not from step 0
    assert max(steps) == result.steps
    # Slicing, pitch and features were not redone: their files are untouched.
    assert _stage_files(runs.exp) == runs.stage_files_after_stop
    reused = {p.stage for p in runs.second if "done before" in p.message}
    assert {"slicing", "pitch", "features"} <= reused
    # Still one checkpoint pair, now of the last epoch.
    assert sorted(p.name for p in runs.exp.glob("[GD]_*")) == runs.checkpoints_after_stop
    manifest = json.loads((runs.exp / MANIFEST_FILE).read_text())
    assert manifest["done"]["training"]["epochs"] == EPOCHS


def test_progress_reports_stages_epochs_and_steps(runs):
    every = runs.first + runs.second
    assert {p.stage for p in every} == {"slicing", "pitch", "features", "training", "indexing"}
    for events in (runs.first, runs.second):
        fractions = [p.fraction for p in events]
        assert all(0.0 <= f <= 1.0 for f in fractions)
        assert fractions == sorted(fractions)
    assert runs.second[-1].fraction == 1.0
    step_events = [p for p in runs.second if p.stage == "training" and p.epoch]
    assert all(p.epochs == EPOCHS for p in step_events)
    assert any(p.message.startswith(f"epoch {EPOCHS}/{EPOCHS}, step ") for p in step_events)


def test_trained_voice_is_a_standard_v2_voice_that_converts(runs, assets, tmp_path):
    import faiss
    import torch

    from gpu_worker.convert import VoiceParams, convert, inspect_voice

    result = runs.result
    assert result is not None and result.pth.is_file() and result.index.is_file()
    info = inspect_voice(result.pth)
    assert (info.version, info.sample_rate, info.f0) == ("v2", 40000, True)
    assert result.pth.stat().st_size < 5_000_000  # the small model, not a training checkpoint
    data = torch.load(result.pth, map_location="cpu", weights_only=True)
    assert (data["sr"], data["f0"], data["version"]) == ("40k", 1, "v2")
    # Weight norm in the legacy layout (weight_g/weight_v) that the original RVC's loader reads.
    assert any(k.endswith(".weight_g") for k in data["weight"])
    assert not any("parametrizations" in k for k in data["weight"])
    assert result.index.name.startswith("added_") and result.index.name.endswith("_v2.index")
    index = faiss.read_index(str(result.index))
    assert index.d == 768 and index.ntotal > 0

    vocal = tmp_path / "vocal.wav"
    n = 44100 + 123
    sf.write(vocal, voice_like(n / 44100 + 0.01, 44100, seed=7)[:n], 44100, subtype="FLOAT")
    out = convert(
        vocal,
        tmp_path / "converted.wav",
        voice_pth=result.pth,
        index_path=result.index,
        assets_dir=assets,
        params=VoiceParams(f0_method="pm"),
    )
    converted, rate = sf.read(out, dtype="float32")
    assert rate == 44100 and converted.shape[0] == n
    assert np.isfinite(converted).all() and np.abs(converted).max() > 0


def test_a_finished_voice_is_returned_without_training_again(runs, sample, assets):
    start = time.monotonic()
    again = train([sample], runs.exp, "Tiny Voice", assets_dir=assets, options=options())
    assert again.pth == runs.result.pth and again.index == runs.result.index
    assert (again.epochs, again.steps) == (runs.result.epochs, runs.result.steps)
    assert time.monotonic() - start < 30


def test_cancel_raises_cancelled_and_changed_samples_are_sliced_again(sample, assets, tmp_path):
    exp = tmp_path / "exp"
    seen: list[TrainProgress] = []
    with refused(Cancelled, match="cancelled"):
        train(
            [sample],
            exp,
            "v",
            assets_dir=assets,
            options=options(),
            progress=seen.append,
            cancel=lambda: any(p.stage == "features" for p in seen),
        )
    assert not any(p.stage == "training" for p in seen)
    manifest = json.loads((exp / MANIFEST_FILE).read_text())
    assert "slicing" in manifest["done"] and "training" not in manifest["done"]
    slices = {p.name: p.stat().st_size for p in (exp / "0_gt_wavs").glob("*.wav")}

    # Other samples: slicing is redone (and everything after it), not reused.
    other = tmp_path / "other.wav"
    sf.write(other, voice_like(4.2, 32000, seed=5), 32000)
    seen.clear()
    with pytest.raises(Cancelled):
        train(
            [other],
            exp,
            "v",
            assets_dir=assets,
            options=options(),
            progress=seen.append,
            cancel=lambda: any(p.stage == "pitch" for p in seen),
        )
    assert not any("done before" in p.message for p in seen)
    again = {p.name: p.stat().st_size for p in (exp / "0_gt_wavs").glob("*.wav")}
    assert again and again != slices
    assert (
        json.loads((exp / MANIFEST_FILE).read_text())["done"]["slicing"]
        != (manifest["done"]["slicing"])
    )

    # A cancel before the start raises at once.
    with pytest.raises(Cancelled):
        train([other], exp, "v", assets_dir=assets, options=options(), cancel=lambda: True)


def test_missing_base_weights_name_the_download_command(sample, assets, tmp_path):
    partial = tmp_path / "assets"
    shutil.copytree(assets / "hubert_base", partial / "hubert_base")
    required = {p.relative_to(partial).as_posix() for p in required_training_assets(partial)}
    assert {"pretrained_v2/f0G40k.pth", "pretrained_v2/f0D40k.pth", "rmvpe/rmvpe.pt"} <= required
    with refused(ModelMissing, match="encore models download") as e:
        train([sample], tmp_path / "exp", "v", assets_dir=partial, options=options())
    assert "f0G40k.pth" in said(e.value) and "\n" not in said(e.value)
    assert not (tmp_path / "exp").exists()  # refused before any work


def test_too_little_voice_is_refused_with_a_reason(assets, tmp_path):
    short = tmp_path / "short.wav"
    x = np.zeros(3 * 32000, np.float32)
    x[32000:48000] = 0.3 * np.sin(2 * np.pi * 220 * np.arange(16000) / 32000)  # 0.5 s of voice
    sf.write(short, x, 32000)
    with refused(EngineError, match=r"upload at least \d+ s") as e:
        train([short], tmp_path / "exp", "v", assets_dir=assets, options=options())
    assert "Traceback" not in said(e.value)

    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF" + bytes(range(256)) * 40)
    with refused(BadAudio, match="could be read as audio"):
        train([garbage], tmp_path / "exp2", "v", assets_dir=assets, options=options())


def test_bad_requests_are_refused_up_front(sample, assets, tmp_path):
    with refused(EngineError, match="40000 Hz"):
        TrainOptions(sample_rate=48000)
    with refused(EngineError, match="pitch method"):
        TrainOptions(f0_method="harvest")
    with refused(EngineError, match="epochs"):
        TrainOptions(epochs=0)
    with refused(EngineError, match="device"):
        train([sample], tmp_path / "e", "v", assets_dir=assets, device="tpu", options=options())
    with refused(BadAudio, match="not found"):
        train([tmp_path / "nope.wav"], tmp_path / "e", "v", assets_dir=assets, options=options())
    with pytest.raises(BadAudio):
        train([], tmp_path / "e", "v", assets_dir=assets, options=options())
