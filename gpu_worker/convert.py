"""Voice conversion, the step: a vocal stem on disk in, the converted vocal on disk out.

It owns the voice knobs (`VoiceParams`) and `convert`, whose output is sample-aligned with its
input. The parts it puts together live in modules of their own, and are re-exported here:
`rvc_checkpoint` (reading a voice `.pth` safely: `inspect_voice`), `rvc_assets` (the models
folder's layout and its download: `required_assets`, `check_assets`, `download_assets`),
`rvc_runtime` (the in-process cache of loaded models: `engine_runtime`, `clear_cache`),
`rvc_synthesis` (the numerics: `convert_16k`, `plan_pieces`, `default_precision`) and
`rvc_export` (`export_voice`, which writes the small-model `.pth` every RVC tool reads).

rvc-next names appear only in the `rvc_*` modules and the training stages, so the engine can be
swapped behind this API.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpu_worker import loads
from gpu_worker.errors import BadAudio, BadOptions
from gpu_worker.rvc_assets import (
    F0_METHODS,
    TRAINING_FILES,
    asset_ids,
    check_assets,
    download_assets,
    missing_assets,
    required_assets,
    unknown_f0,
)
from gpu_worker.rvc_checkpoint import VoiceInfo, inspect_voice, voice_info
from gpu_worker.rvc_export import export_voice
from gpu_worker.rvc_runtime import clear_cache, engine_runtime, load_voice
from gpu_worker.rvc_synthesis import (
    PRECISIONS,
    SR_16K,
    convert_16k,
    default_precision,
    fit_length,
    plan_pieces,
    resample,
)


@dataclass(frozen=True)
class VoiceParams:
    """The conversion knobs RVC users know. Invalid values raise `BadOptions` on creation."""

    pitch: int = 0
    """Semitones, -24..24 (+12: one octave up)."""
    f0_method: str = "rmvpe"
    """rmvpe (best, needs its weights), swiftf0 (alias swift), pm, fcpe, crepe or crepe-tiny."""
    index_rate: float = 0.75
    """0..1: how much of the voice's index (its timbre) to blend in."""
    protect: float = 0.33
    """0..0.5: keeps consonants and breaths unconverted; 0.5 turns protection off."""
    rms_mix: float = 0.25
    """0..1: 0 follows the original vocal's loudness envelope, 1 keeps the voice's own."""
    filter_radius: int = 3
    """0..7. Accepted for RVC presets; rvc-next has no harvest pitch method, the only one RVC
    median-filters with it, so it changes nothing."""

    def __post_init__(self) -> None:
        if (
            isinstance(self.pitch, bool)
            or not isinstance(self.pitch, int)
            or not -24 <= self.pitch <= 24
        ):
            raise BadOptions("pitch", low=-24, high=24)
        if self.f0_method not in F0_METHODS:
            raise unknown_f0(self.f0_method)
        for name, low, high in (("index_rate", 0, 1), ("protect", 0, 0.5), ("rms_mix", 0, 1)):
            value = getattr(self, name)
            if (
                not isinstance(value, int | float)
                or not math.isfinite(value)
                or not low <= value <= high
            ):
                raise BadOptions("number_range", name=name, low=low, high=high)
        if (
            isinstance(self.filter_radius, bool)
            or not isinstance(self.filter_radius, int)
            or not 0 <= self.filter_radius <= 7
        ):
            raise BadOptions("whole_range", name="filter_radius", low=0, high=7)

    @property
    def engine_f0_method(self) -> str:
        return F0_METHODS[self.f0_method]


_SOUNDFILE_FORMATS = {"WAV", "WAVEX", "RF64", "W64", "FLAC", "AIFF", "CAF"}
_NO_LIMITS_ARGS = {"max_bytes": 2**40, "max_seconds": float("inf"), "max_channels": 64}


def _read_vocal(path: Path) -> tuple[np.ndarray, int]:
    """The vocal as float32 (channels, samples) at its own rate, every sample kept."""
    import soundfile as sf

    from gpu_worker.audio import Limits, decode, probe

    try:
        info = sf.info(str(path))
    except Exception:
        info = None
    if info is not None and info.format in _SOUNDFILE_FORMATS:
        try:
            data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        except Exception:
            raise BadAudio("vocal_damaged", name=path.name) from None
        return data.T.copy(), int(rate)
    meta = probe(path, Limits(**_NO_LIMITS_ARGS, min_seconds=0))
    return decode(path, meta.sample_rate, meta.channels, limits=None), meta.sample_rate


def convert(
    vocal_path: Path,
    out_path: Path,
    *,
    voice_pth: Path,
    index_path: Path | None,
    assets_dir: Path,
    device: str = "cpu",
    params: VoiceParams = VoiceParams(),
    progress: Callable[[float], None] | None = None,
    precision: str = "auto",
) -> Path:
    """Convert the vocal stem at `vocal_path` to the voice `voice_pth`; write `out_path`.

    `out_path` is a float wav at the input's sample rate with exactly the input's number of
    samples, sample-aligned with it (so with the instrumental), the mono converted voice copied
    to each of the input's channels. `precision`: `auto` (bf16 autocast of a full-size voice on
    a CPU with native bf16, about 1.5x faster there, 48 dB from fp32; otherwise fp32), `fp32`
    or `bf16`. Raises `ModelMissing`, `BadVoice`, `BadAudio` or `EngineError`.
    """
    from gpu_worker.audio import write_wav

    vocal_path, out_path, voice_pth = Path(vocal_path), Path(out_path), Path(voice_pth)
    assets_dir = Path(assets_dir)
    if precision not in PRECISIONS:
        raise BadOptions("precision", value=str(precision)[:20], allowed=list(PRECISIONS))
    info = voice_info(voice_pth)
    check_assets(assets_dir, params.f0_method if info.f0 else "pm", embedder=info.embedder)
    if not vocal_path.is_file():
        raise BadAudio("vocal_not_found", name=vocal_path.name)
    audio, rate = _read_vocal(vocal_path)
    channels, n = audio.shape
    runtime = engine_runtime(assets_dir, device)
    resident = set(runtime.cached())
    try:
        voice, index = load_voice(runtime, voice_pth, index_path, info)
        mono = audio.mean(axis=0) if channels > 1 else audio[0]
        x16 = resample(mono, rate, SR_16K)
        y, y_rate = convert_16k(x16, runtime, voice, index, params, progress, precision=precision)
    finally:  # HuBERT, the pitch model, the voice and its index, if they were not loaded
        loads.count(len(set(runtime.cached()) - resident))
    y = fit_length(resample(y, y_rate, rate), n)
    return write_wav(out_path, np.repeat(y[None, :], channels, axis=0), rate)


__all__ = [
    "F0_METHODS",
    "PRECISIONS",
    "TRAINING_FILES",
    "VoiceInfo",
    "VoiceParams",
    "asset_ids",
    "check_assets",
    "clear_cache",
    "convert",
    "convert_16k",
    "default_precision",
    "download_assets",
    "engine_runtime",
    "export_voice",
    "inspect_voice",
    "missing_assets",
    "plan_pieces",
    "required_assets",
]
