"""Voice conversion, the step: a vocal stem on disk in, the converted vocal on disk out.

It owns `convert`, whose output is sample-aligned with its input. The parts it puts together
live in modules of their own, and are re-exported here: `voice_params` (the knobs a user sets),
`rvc_checkpoint` (reading a voice `.pth` safely: `inspect_voice`), `rvc_assets` (the models
folder's layout and its download: `required_assets`, `check_assets`, `download_assets`),
`rvc_runtime` (the in-process cache of loaded models: `engine_runtime`, `clear_cache`),
`rvc_synthesis` (the numerics: `convert_16k`, `plan_pieces`, `default_precision`) and
`rvc_export` (`export_voice`, which writes the small-model `.pth` every RVC tool reads).

rvc-next names appear only in the `rvc_*` modules and the training stages, so the engine can be
swapped behind this API.
"""

from __future__ import annotations

from collections.abc import Callable
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
from gpu_worker.voice_params import VoiceParams

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
