"""Voice conversion: the one module that talks to rvc-next.

It owns everything between a vocal stem on disk and the converted vocal on disk: the voice knobs
(`VoiceParams`), reading a voice checkpoint safely (`inspect_voice`), the model folder's layout
(`required_assets`, `check_assets`) and filling it through rvc-next's own downloader
(`download_assets`), the in-process cache of loaded models (`engine_runtime`), `convert`,
whose output is sample-aligned with its input, and `export_voice`, which writes the small-model
`.pth` every RVC tool reads (Encore's demo voice is the v2 40k base generator, exported).

Alignment and speed: `convert_16k` runs rvc-next's offline conversion from its engine parts
(pitch detector, HuBERT, index blend, synthesizer) rather than through its `OfflineConverter`,
which returns 5-30 ms less audio than it is given and, on long audio, can lose a 10 ms frame at
its own chunk joins. Pitch is detected once over the whole file; long audio is cut at quiet
10 ms frames into pieces whose features see one second of real context on each side, while
the synthesizer's decoder (nine tenths of the work) renders only the piece plus a few frames.
The output has the input's sample rate and exactly its number of samples, with the converted
(mono) voice copied to each input channel. What remains is rvc-next's own sub-frame offset: the
voice's pitch contour sits 0-5 ms after the input's (measured with pm and SwiftF0). On CPUs
with native bf16, HuBERT and the synthesizer run under bf16 autocast (`precision`): 1.8x faster
at full size, 48.8 dB SNR from fp32. The synthesizer's noise is seeded, so a conversion is
repeatable. With the noise switched off, this path and `OfflineConverter` agree to 83-87 dB (the
int16 limit) away from the file's ends. Measured on 2 CPU cores, 60 s of vocal, full-size models
(bench/cover.py): 16.5 s, against 66 s through `OfflineConverter`.

rvc-next names appear nowhere else in Encore, so the engine can be swapped behind this API.
"""

from __future__ import annotations

import functools
import logging
import math
import pickle
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gpu_worker import cancel, loads
from gpu_worker.errors import BadAudio, BadVoice, EngineError, ModelMissing
from gpu_worker.model_check import check_index, check_voice

logger = logging.getLogger(__name__)

DOWNLOAD_HINT = "run `encore models download`"
SR_16K = 16000
FRAME = 160  # rvc-next's 10 ms pitch/feature frame at 16 kHz
CONTEXT = SR_16K  # 1 s of real audio on each side of every piece
TAIL = SR_16K // 10  # headroom kept under the runtime's chunk limit when planning pieces
SILENCE_PEAK = 1e-4  # -80 dBFS: a piece this quiet is not converted, it stays silent
DECODER_MARGIN = 10  # frames the decoder renders past each side of a piece (its reach is 8)
DECODER_WINDOW = 300  # frames per decoder call (3 s): long calls page-fault on big buffers
FLOW_REACH = 24  # frames of context the flow gets before the decoded span (as rvc-next's infer)
SEED = 1234  # the synthesizer's noise, seeded per piece so a conversion is repeatable
PRECISIONS = ("auto", "fp32", "bf16")
MAX_VOICE_BYTES = 1024 * 1024 * 1024

F0_METHODS: dict[str, str] = {
    "rmvpe": "rmvpe",
    "swift": "swift",
    "swiftf0": "swift",
    "pm": "pm",
    "fcpe": "fcpe",
    "crepe": "crepe",
    "crepe-tiny": "crepe-tiny",
}
"""Pitch methods users may name, and rvc-next's name for each. `pm` and `swift` need no weights."""

# Files each part needs, relative to the assets folder (rvc-next's layout, the original RVC's).
_HUBERT_FILES = ("config.json", ("pytorch_model.bin", "model.safetensors"))
_F0_FILES: dict[str, tuple[str, ...]] = {
    "rmvpe": ("rmvpe/rmvpe.pt",),
    "fcpe": ("fcpe/fcpe_c_v001.pt",),
    "crepe": ("crepe/full.pth",),
    "crepe-tiny": ("crepe/tiny.pth",),
    "swift": (),
    "pm": (),
}
_F0_ASSET_IDS = {"rmvpe": "rmvpe", "fcpe": "fcpe", "crepe": "crepe", "crepe-tiny": "crepe-tiny"}
TRAINING_FILES = ("pretrained_v2/f0G40k.pth", "pretrained_v2/f0D40k.pth")
"""The base models a v2, 40 kHz, pitch-guided voice is fine-tuned from."""


def _unknown_f0(method: object) -> str:
    return f"Unknown pitch method {method!r}; use one of rmvpe, swiftf0, pm, fcpe, crepe."


# -- the knobs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class VoiceParams:
    """The conversion knobs RVC users know. Invalid values raise `EngineError` on creation."""

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
            raise EngineError("Pitch must be a whole number of semitones from -24 to 24.")
        if self.f0_method not in F0_METHODS:
            raise EngineError(_unknown_f0(self.f0_method))
        for name, low, high in (("index_rate", 0, 1), ("protect", 0, 0.5), ("rms_mix", 0, 1)):
            value = getattr(self, name)
            if (
                not isinstance(value, int | float)
                or not math.isfinite(value)
                or not low <= value <= high
            ):
                raise EngineError(f"{name} must be a number from {low} to {high}.")
        if (
            isinstance(self.filter_radius, bool)
            or not isinstance(self.filter_radius, int)
            or not 0 <= self.filter_radius <= 7
        ):
            raise EngineError("filter_radius must be a whole number from 0 to 7.")

    @property
    def engine_f0_method(self) -> str:
        return F0_METHODS[self.f0_method]


# -- voice files --------------------------------------------------------------------------------


@dataclass(frozen=True)
class VoiceInfo:
    """What a voice checkpoint is, read from its fields without building a model."""

    version: str
    """v1 (256-dim features) or v2 (768-dim)."""
    sample_rate: int
    """The rate the voice synthesises at: 32000, 40000 or 48000."""
    f0: bool
    """Whether it is pitch-guided (every singing voice is)."""
    embedder: str = "contentvec"
    """The content-feature model it was trained on; RVC's HuBERT base is contentvec."""
    speakers: int = 1
    """Rows of its speaker table (109 in most voices, one used)."""
    info: str = ""
    """The free-text `info` field (often the epoch count)."""


def _voice_name(path: Path) -> str:
    return path.name if len(path.name) <= 80 else path.name[:77] + "..."


def inspect_voice(pth: Path, max_bytes: int = MAX_VOICE_BYTES) -> VoiceInfo:
    """Read an RVC voice `.pth` as data only and describe it; raise `BadVoice` otherwise.

    The file is loaded with `torch.load(weights_only=True)`, which refuses pickled code, so a
    crafted file cannot run anything here.
    """
    import torch

    pth = Path(pth)
    name = _voice_name(pth)
    if not pth.is_file():
        raise BadVoice(f"The voice file {name} does not exist; upload the voice's .pth again.")
    size = pth.stat().st_size
    if size == 0:
        raise BadVoice(f"The voice file {name} is empty; upload the voice's .pth again.")
    if size > max_bytes:
        raise BadVoice(
            f"The voice file {name} is over {max_bytes // 2**20} MB; RVC voices are far smaller."
        )
    require_safe_torch()
    _check_container(pth, name, max_bytes)
    try:
        data = torch.load(str(pth), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "unsupported global" not in str(e).lower():  # garbage, or not a torch file at all
            raise BadVoice(
                f"{name} is not a PyTorch model file; upload an RVC voice .pth."
            ) from None
        raise BadVoice(
            f"{name} holds Python objects besides weights and was refused, "
            "as loading it could run code."
        ) from None
    except Exception:
        raise BadVoice(f"{name} is not a PyTorch model file; upload an RVC voice .pth.") from None
    return _describe(data, name)


SAFE_TORCH = (2, 6)
"""`torch.load(weights_only=True)` can be made to run code before 2.6 (CVE-2025-32434)."""
MAX_PTH_RECORDS = 4096
"""Records in a voice's torch zip: one per tensor storage (a full voice has about 500)."""


def torch_is_safe(version: Any = None) -> bool:
    """Whether this torch (or `version`) loads untrusted checkpoints with weights_only safely."""
    from torch.torch_version import TorchVersion

    if version is None:
        import torch

        version = torch.__version__
    return TorchVersion(str(version)) >= SAFE_TORCH


def require_safe_torch(version: Any = None) -> None:
    """Refuse to open untrusted checkpoints on a torch whose `weights_only` can be bypassed."""
    if not torch_is_safe(version):
        raise EngineError(
            "Voice models cannot be loaded safely with this server's PyTorch; "
            "the operator must upgrade torch to 2.6 or newer."
        )


def _check_container(pth: Path, name: str, max_bytes: int) -> None:
    """A voice `.pth` is a zip of stored records (torch's format): refuse any other layout,
    and records that would unpack to more than the file holds, before torch reads it."""
    from gpu_worker.archives import zip_entries

    fix = "upload the original .pth again"
    subject = f"The voice file {name}"
    if not zipfile.is_zipfile(pth):
        raise BadVoice(f"{name} is not a PyTorch model file; upload an RVC voice .pth.")
    zf, entries = zip_entries(pth, MAX_PTH_RECORDS, subject, fix)
    with zf:
        unpacked = sum(e.file_size for e in entries)
        if any(e.compress_type != zipfile.ZIP_STORED for e in entries) or unpacked > min(
            pth.stat().st_size, max_bytes
        ):
            raise BadVoice(f"{subject} expands far beyond its size; {fix}.")


def _tensors(weight: dict, name: str) -> dict[str, tuple[tuple[int, ...], str]]:
    import torch

    out = {}
    for key, value in weight.items():
        if not isinstance(value, torch.Tensor):
            raise BadVoice(f"{name} holds something other than weights; upload the original .pth.")
        out[key] = (tuple(value.shape), str(value.dtype).removeprefix("torch."))
    return out


def _all_finite(weight: dict) -> bool:
    import torch

    return all(bool(torch.isfinite(t).all()) for t in weight.values())


def _describe(data: Any, name: str) -> VoiceInfo:
    import torch

    if isinstance(data, dict) and isinstance(data.get("model"), dict) and "weight" not in data:
        raise BadVoice(
            f"{name} is a training checkpoint, not a voice; "
            "upload the small .pth that training exports."
        )
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("weight"), dict)
        or "config" not in data
    ):
        raise BadVoice(f"{name} is not an RVC voice model; upload the .pth of an RVC voice.")
    weight = data["weight"]
    config = data["config"]
    if not isinstance(config, list | tuple) or len(config) != 18:
        raise BadVoice(f"{name} has a damaged config; upload the original .pth again.")
    emb_g = weight.get("emb_g.weight")
    phone = weight.get("enc_p.emb_phone.weight")
    if not isinstance(emb_g, torch.Tensor) or not isinstance(phone, torch.Tensor):
        raise BadVoice(f"{name} is missing RVC weights; upload the original .pth again.")
    foreign = ("dec.mrfs.", "dec.upsample_blocks.", "dec.mel_conv.")
    if any(isinstance(k, str) and k.startswith(foreign) for k in weight) or data.get(
        "vocoder"
    ) not in (None, "", "HiFi-GAN"):
        raise BadVoice(
            f"{name} uses a vocoder other than RVC's HiFi-GAN, which cannot be used here."
        )
    dims = int(phone.shape[1])
    version = str(data.get("version") or ("v2" if dims == 768 else "v1"))
    if version not in ("v1", "v2") or dims != (768 if version == "v2" else 256):
        raise BadVoice(
            f"{name} says it is an RVC {version} voice but its weights do not match; it is damaged."
        )
    try:
        sample_rate = int(config[-1])
    except (TypeError, ValueError):
        raise BadVoice(f"{name} has a damaged config; upload the original .pth again.") from None
    if sample_rate not in (32000, 40000, 48000):
        raise BadVoice(f"{name} synthesises at {sample_rate} Hz; RVC voices use 32, 40 or 48 kHz.")
    try:
        f0 = bool(int(data.get("f0", 1)))
    except (TypeError, ValueError):
        raise BadVoice(f"{name} has a damaged f0 field; upload the original .pth again.") from None
    from rvc_next.engine.features.embedders import EMBEDDERS, WITH_FINAL_PROJ

    embedder = str(data.get("embedder_model") or "contentvec")
    if embedder not in EMBEDDERS or (version == "v1" and embedder not in WITH_FINAL_PROJ):
        raise BadVoice(
            f"{name} was trained on a content model ({embedder}) that cannot be used here."
        )
    # The config drives the synthesizer's size at conversion: it must be an RVC geometry, and
    # every tensor the shape that geometry implies (bounded and checked before any compute).
    check_voice(data["config"], _tensors(weight, name), version, f0, name)
    if not _all_finite(weight):
        raise BadVoice(f"{name} has NaN or infinite weights, so it cannot sing; use another copy.")
    return VoiceInfo(
        version=version,
        sample_rate=sample_rate,
        f0=f0,
        embedder=embedder,
        speakers=int(emb_g.shape[0]),
        info=str(data.get("info", ""))[:200],
    )


@functools.lru_cache(maxsize=32)
def _inspect_cached(path: str, mtime_ns: int, size: int) -> VoiceInfo:
    return inspect_voice(Path(path))


def _voice_info(pth: Path) -> VoiceInfo:
    try:
        st = pth.stat()
    except OSError:
        raise BadVoice(
            f"The voice file {_voice_name(pth)} does not exist; upload the voice's .pth again."
        ) from None
    return _inspect_cached(str(pth.resolve()), st.st_mtime_ns, st.st_size)


# -- the model folder ----------------------------------------------------------------------------


def _hubert_files(assets_dir: Path, embedder: str) -> list[Path]:
    from rvc_next.engine.features.embedders import folder

    base = Path(assets_dir) / folder(embedder)
    config, weights = _HUBERT_FILES
    present = [base / w for w in weights if (base / w).is_file()]
    return [base / config, present[0] if present else base / weights[0]]


def required_assets(
    assets_dir: Path,
    f0_method: str = "rmvpe",
    *,
    embedder: str = "contentvec",
    training: bool = False,
) -> list[Path]:
    """The files conversion with `f0_method` needs (and, with `training`, fine-tuning too)."""
    engine = F0_METHODS.get(f0_method)
    if engine is None:
        raise EngineError(_unknown_f0(f0_method))
    assets_dir = Path(assets_dir)
    files = _hubert_files(assets_dir, embedder)
    files += [assets_dir / rel for rel in _F0_FILES[engine]]
    if training:
        files += [assets_dir / rel for rel in TRAINING_FILES]
    return files


def missing_assets(assets_dir: Path, f0_method: str = "rmvpe", **kwargs: Any) -> list[Path]:
    return [
        p
        for p in required_assets(assets_dir, f0_method, **kwargs)
        if not p.is_file() or p.stat().st_size == 0
    ]


def check_assets(assets_dir: Path, f0_method: str = "rmvpe", **kwargs: Any) -> None:
    """Raise `ModelMissing`, naming the download command, when a needed file is not there."""
    missing = missing_assets(assets_dir, f0_method, **kwargs)
    if missing:
        rel = ", ".join(
            str(p.relative_to(assets_dir)) if p.is_relative_to(assets_dir) else str(p)
            for p in missing
        )
        raise ModelMissing(f"Voice models are missing from {assets_dir} ({rel}); {DOWNLOAD_HINT}.")


def asset_ids(f0_methods: Sequence[str] = ("rmvpe",), training: bool = True) -> list[str]:
    """rvc-next catalog ids for HuBERT, the weights of `f0_methods`, and the v2 40k base models."""
    ids = ["hubert"]
    for method in f0_methods:
        engine = F0_METHODS.get(method)
        if engine is None:
            raise EngineError(_unknown_f0(method))
        if engine in _F0_ASSET_IDS and _F0_ASSET_IDS[engine] not in ids:
            ids.append(_F0_ASSET_IDS[engine])
    if training:
        ids.append("pretrained-v2-40k")
    return ids


def _download_failed(detail: object) -> str:
    text = " ".join(str(detail).split())[:200]
    return f"Downloading the voice models failed ({text}); check the connection and try again."


def download_assets(
    assets_dir: Path,
    progress: Callable[[float | None, str], None] | None = None,
    *,
    f0_methods: Sequence[str] = ("rmvpe",),
    training: bool = True,
    transport: Any = None,
) -> list[Path]:
    """Fill `assets_dir` through rvc-next's own asset downloader; return the files it needs.

    rvc-next fetches each file of its catalog (Hugging Face, then hf-mirror, then ModelScope),
    resumes partial files and checks sizes and SHA-256 sums. `progress(fraction, message)` hears
    about it. `transport` is an `httpx` transport, for tests. Offline this raises `EngineError`
    (after rvc-next's own retries, about 75 s per file).
    """
    from rvc_next.core.context import build_services
    from rvc_next.core.events.models import JobLogEvent, JobUpdatedEvent

    assets_dir = Path(assets_dir)
    assets_dir.mkdir(parents=True, exist_ok=True)
    ids = asset_ids(f0_methods, training)
    state_dir = Path(tempfile.mkdtemp(prefix="encore-rvc-download-"))
    services = None
    try:
        services = build_services(
            data_dir=state_dir,
            environ={},
            transport=transport,
            settings_overrides={"paths": {"assets_dir": str(assets_dir)}},
        )
        if progress is not None:

            def on_event(event: Any) -> None:
                if isinstance(event, JobUpdatedEvent):
                    progress(event.job.progress, event.job.step or event.job.state)
                elif isinstance(event, JobLogEvent):
                    for line in event.lines:
                        if line.startswith(("Downloading", "Checksum")):
                            progress(None, line)

            services.events.subscribe(on_event)
        job = services.assets.download(ids, foreground=True)
    except Exception as e:
        raise EngineError(_download_failed(e)) from e
    finally:
        if services is not None:
            services.close()
        shutil.rmtree(state_dir, ignore_errors=True)
    if job.state != "completed":
        detail = job.error.message if job.error else job.state
        raise EngineError(_download_failed(detail))
    files = required_assets(assets_dir, "pm", training=training)
    for method in f0_methods:
        files += [f for f in required_assets(assets_dir, method) if f not in files]
    missing = [str(f.relative_to(assets_dir)) for f in files if not f.is_file()]
    if missing:
        raise EngineError(_download_failed(f"still missing: {', '.join(missing)}"))
    return files


# -- the loaded models ---------------------------------------------------------------------------


def _signature(assets_dir: Path) -> tuple:
    """Size and mtime of every file in the assets folder's model subfolders (changes reload)."""
    out = []
    for sub in ("hubert_base", "rmvpe", "fcpe", "crepe", "embedders"):
        folder = assets_dir / sub
        if folder.is_dir():
            for p in sorted(folder.rglob("*")):
                if p.is_file():
                    st = p.stat()
                    out.append((str(p.relative_to(assets_dir)), st.st_size, st.st_mtime_ns))
    return tuple(out)


_RUNTIMES: dict[tuple[str, str], tuple[tuple, Any]] = {}
_RUNTIMES_LOCK = threading.Lock()


def engine_runtime(assets_dir: Path, device: str = "cpu") -> Any:
    """The rvc-next `Runtime` for `assets_dir` and `device`, created once per process.

    It keeps HuBERT, the pitch models and the last three voices and indexes loaded (a voice or
    index reloads when its file changes). When an asset file changes, the runtime is released
    and a new one made.
    """
    from rvc_next.engine.runtime import Runtime

    assets_dir = Path(assets_dir).resolve()
    key = (str(assets_dir), device or "cpu")
    signature = _signature(assets_dir)
    with _RUNTIMES_LOCK:
        cached = _RUNTIMES.get(key)
        if cached is not None and cached[0] == signature:
            return cached[1]
        if cached is not None:
            cached[1].release()
        runtime = Runtime(assets_dir, device=key[1])
        if runtime.choice.reason:
            logger.info("Voice conversion on %s: %s", runtime.choice.id, runtime.choice.reason)
        _RUNTIMES[key] = (signature, runtime)
        return runtime


def clear_cache() -> None:
    """Unload every model (frees GPU memory); the next conversion loads them again."""
    with _RUNTIMES_LOCK:
        for _, runtime in _RUNTIMES.values():
            runtime.release()
        _RUNTIMES.clear()
    _inspect_cached.cache_clear()


# -- conversion ------------------------------------------------------------------------------


def _engine_errors() -> tuple[type, type]:
    from rvc_next.engine.errors import MissingAssetError, ModelFormatError

    return MissingAssetError, ModelFormatError


def _load(
    runtime: Any, voice_pth: Path, index_path: Path | None, info: VoiceInfo
) -> tuple[Any, Any]:
    missing_asset, model_format = _engine_errors()
    name = _voice_name(voice_pth)
    require_safe_torch()
    try:
        voice = runtime.voice(voice_pth)
    except model_format as e:
        raise BadVoice(f"{name} cannot be used: {e}.") from e
    except missing_asset as e:
        raise ModelMissing(f"Voice models are missing ({e}); {DOWNLOAD_HINT}.") from e
    except (RuntimeError, ValueError, KeyError, IndexError) as e:
        raise BadVoice(
            f"{name} does not load as an RVC voice; it is damaged or not an RVC model."
        ) from e
    if index_path is None:
        return voice, None
    index_path = Path(index_path)
    iname = _voice_name(index_path)
    if not index_path.is_file():
        raise BadVoice(
            f"The index file {iname} does not exist; upload it again or convert without it."
        )
    want = 768 if info.version == "v2" else 256
    check_index(index_path, want, iname)  # faiss trusts the header: walk it first
    try:
        index = runtime.index(index_path)
    except Exception as e:
        raise BadVoice(
            f"The index file {iname} cannot be read; upload it again or convert without it."
        ) from e
    if index.dim != want:
        raise BadVoice(
            f"The index file {iname} holds {index.dim}-dim features but the voice needs {want}; "
            "it belongs to another voice."
        )
    return voice, index


def _resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Zero-phase polyphase resampling (no delay), float32."""
    if sr_in == sr_out or x.shape[-1] == 0:
        return x.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    g = math.gcd(sr_in, sr_out)
    return resample_poly(x, sr_out // g, sr_in // g, axis=-1).astype(np.float32)


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """`x` cut or zero-padded at the end to exactly `n` samples."""
    if x.shape[-1] >= n:
        return x[..., :n]
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n - x.shape[-1])])


def plan_pieces(
    n: int, max_piece: int, search: int, audio: np.ndarray | None = None
) -> list[tuple[int, int]]:
    """Cut `n` samples (16 kHz) into pieces of at most `max_piece`, at the quietest 10 ms frame
    within `search` samples before each limit. Boundaries fall on 10 ms frames."""
    bounds = [0]
    start = 0
    while n - start > max_piece:
        hi = start + max_piece // FRAME * FRAME
        lo = max(start + FRAME, hi - search // FRAME * FRAME)
        cut = hi
        if audio is not None and hi > lo:
            frames = np.abs(audio[lo:hi]).reshape(-1, FRAME).sum(axis=1)
            cut = lo + int(np.argmin(frames)) * FRAME
        bounds.append(cut)
        start = cut
    bounds.append(n)
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def default_precision(device: str = "cpu") -> str:
    """`bf16` on a CPU that computes bf16 in hardware (AVX512-BF16 or AMX), else `fp32`.

    With emulated bf16 autocast is slower than fp32. On a GPU `fp32` leaves rvc-next's own rule
    in charge (fp16 on most cards)."""
    from gpu_worker.separate import cpu_has_native_bf16

    if str(device or "cpu").startswith("cpu") and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def _resolve_precision(precision: str, device: Any, net_g: Any = None) -> str:
    """`auto` is `default_precision(device)` for a real-size voice. Small synthesizers (the
    tiny test models) run about 3x slower under bf16 autocast than in fp32, so they keep fp32."""
    if precision not in PRECISIONS:
        raise EngineError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}.")
    if precision != "auto":
        return precision
    conv_pre = getattr(getattr(net_g, "dec", None), "conv_pre", None)
    if net_g is not None and getattr(conv_pre, "out_channels", 512) < 256:
        return "fp32"
    return default_precision(str(device))


def _autocast(device: Any, precision: str) -> Any:
    import contextlib

    import torch

    if precision != "bf16":
        return contextlib.nullcontext()
    kind = str(getattr(device, "type", None) or device).split(":", 1)[0]
    return torch.autocast(kind if kind in ("cpu", "cuda", "xpu") else "cpu", dtype=torch.bfloat16)


def _use_all_cpus(device: Any) -> None:
    """Give torch every CPU this process may use (affinity and cgroup quota), once."""
    import torch

    from gpu_worker.separate import available_cpus

    if str(device).startswith("cpu") and torch.get_num_threads() != available_cpus():
        torch.set_num_threads(available_cpus())


_FOLD_LOCK = threading.Lock()


def _fold_weight_norm(net_g: Any) -> None:
    """Bake the synthesizer's weight normalisation into plain weights, once per loaded voice.

    Weight norm recomputes every normalised weight on every call, and the decoder is called once
    per window; the folded weights give the same output (to float rounding)."""
    with _FOLD_LOCK:
        if getattr(net_g, "_encore_folded", False):
            return
        try:
            net_g.remove_weight_norm()
        except (ValueError, AttributeError, RuntimeError):  # already plain, or another layout
            logger.debug("Synthesizer weight norm left as is", exc_info=True)
        net_g._encore_folded = True


@dataclass(frozen=True)
class _Pitch:
    coarse: Any  # (1, frames) long tensor, or None for a voice without pitch guidance
    hz: Any  # (1, frames) float tensor, or None


def _pitch(runtime: Any, padded: np.ndarray, params: VoiceParams, device: Any) -> _Pitch:
    """rvc-next's offline pitch over the whole (padded) file at once, as its own converter does:
    detector, unvoiced frames interpolated, shifted by `pitch` semitones, quantised."""
    import torch
    from rvc_next.engine.f0.base import offline_f0

    frames = padded.shape[0] // FRAME
    track = offline_f0(runtime.f0(params.engine_f0_method), padded, frames, float(params.pitch))
    coarse, hz = np.asarray(track.coarse), np.asarray(track.hz, dtype=np.float32)
    if coarse.shape[0] < frames:  # no detector does this; keep indexing safe if one does
        coarse = np.pad(coarse, (0, frames - coarse.shape[0]), mode="edge")
        hz = np.pad(hz, (0, frames - hz.shape[0]), mode="edge")
    return _Pitch(
        torch.from_numpy(coarse[:frames].astype(np.int64)).unsqueeze(0).to(device),
        torch.from_numpy(np.ascontiguousarray(hz[:frames])).unsqueeze(0).to(device),
    )


def _features(
    runtime: Any,
    hubert: Any,
    voice: Any,
    index: Any,
    params: VoiceParams,
    seg: np.ndarray,
    pitchf: Any,
) -> Any:
    """Content features of `seg` at 10 ms frames, index-blended and protected as rvc-next does."""
    import torch
    import torch.nn.functional as F
    from rvc_next.engine.features.hubert import extract_features
    from rvc_next.engine.index.retrieval import blend

    source = torch.from_numpy(seg).view(1, -1).to(runtime.device, runtime.dtype)
    feats = extract_features(hubert, source, voice.version).to(runtime.dtype)
    protect = pitchf is not None and params.protect < 0.5
    feats0 = feats.clone() if protect else None
    if index is not None and params.index_rate > 0:
        found = blend(feats[0].float().cpu().numpy(), index)
        found = torch.from_numpy(np.asarray(found, np.float32)).unsqueeze(0)
        rate = float(params.index_rate)
        feats = found.to(feats.device, feats.dtype) * rate + (1 - rate) * feats
    feats = F.interpolate(feats.permute(0, 2, 1), scale_factor=2).permute(0, 2, 1)
    if feats0 is None:
        return feats
    feats0 = F.interpolate(feats0.permute(0, 2, 1), scale_factor=2).permute(0, 2, 1)
    frames = min(feats.shape[1], pitchf.shape[1])
    # Unvoiced frames (0 Hz) keep `protect` of the converted features: consonants stay clear.
    weight = torch.where(pitchf[:, :frames] > 0, 1.0, float(params.protect))
    weight = weight.unsqueeze(-1).to(feats.dtype)
    mixed = feats[:, :frames] * weight + feats0[:, :frames] * (1 - weight)
    return mixed.to(feats0.dtype)


def _synthesize(
    net_g: Any,
    feats: Any,
    coarse: Any,
    hz: Any,
    sid: Any,
    head: int,
    length: int,
    margin: int,
    upp: int,
) -> np.ndarray:
    """Frames `head .. head + length` of the voice, as rvc-next's `infer(..., skip_head,
    return_length)` renders them: the prior and flow over the whole window (the flow from
    `FLOW_REACH` frames before `head`), the decoder (`upp` samples a frame) over the requested
    frames only, in windows of `DECODER_WINDOW` frames, each with `margin` frames on both sides
    that are dropped. Windows bound memory and, with glibc's allocator, run 1.8x faster than one
    long call. The decoder's sine source starts its phase at zero on every call: each window's
    first (dropped) frame gets the pitch that carries the phase on exactly, so the windows add
    up to one call over all frames (to float rounding)."""
    import torch

    g = net_g.emb_g(sid).unsqueeze(-1)
    lengths = torch.tensor([feats.shape[1]], device=feats.device)
    flow_head = max(head - FLOW_REACH, 0)
    m_p, logs_p, x_mask = net_g.enc_p(feats, coarse, lengths, flow_head)
    z_p = (m_p + torch.exp(logs_p) * torch.randn_like(m_p) * 0.66666) * x_mask
    z = net_g.flow(z_p, x_mask, g=g, reverse=True) * x_mask
    z = z[:, :, head - flow_head : head - flow_head + length]
    dec = net_g.dec
    f0 = hz[:, head : head + length] if hz is not None else None
    if f0 is not None:
        rate = float(dec.m_source.l_sin_gen.sampling_rate)
        # The sine source's phase after each frame (cycles), as it accumulates it.
        phase = torch.cumsum(torch.fmod(f0[0].double() * upp / rate + 0.5, 1.0) - 0.5, 0)
    out = np.zeros(length * upp, np.float32)
    # Windows need a margin past the decoder's reach (8 frames); without one, decode in one go.
    step = DECODER_WINDOW if margin >= DECODER_MARGIN else max(length, 1)
    for start in range(0, length, step):
        cancel.checkpoint()  # a window takes a fraction of a second: stop between two
        lo, hi = max(0, start - margin), min(length, start + step + margin)
        if f0 is None:
            y = dec(z[:, :, lo:hi], g=g)
        else:
            window = f0[:, lo:hi].clone()
            if lo > 0:
                window[0, 0] = float(torch.remainder(phase[lo], 1.0)) * rate / upp
            y = dec(z[:, :, lo:hi], window, g=g)
        keep = min(step, length - start) * upp
        skip = (start - lo) * upp
        out[start * upp : start * upp + keep] = y[0, 0, skip : skip + keep].float().cpu().numpy()
    return out


def convert_16k(
    audio_16k: np.ndarray,
    runtime: Any,
    voice: Any,
    index: Any,
    params: VoiceParams,
    progress: Callable[[float], None] | None = None,
    *,
    context: int = CONTEXT,
    precision: str = "auto",
) -> tuple[np.ndarray, int]:
    """Convert 16 kHz mono float audio; return float32 at the voice's rate, aligned with the
    input and exactly `len(audio_16k) * rate / 16000` samples (rounded) long.

    This is rvc-next's offline conversion, arranged for speed and exact alignment. Pitch is
    detected once over the whole file (reflect-padded as rvc-next pads); audio longer than the
    runtime's chunk limit is cut into pieces at quiet 10 ms frames; each piece's content
    features and prior see `context` samples of real audio on both sides, but the synthesizer's
    decoder (nine tenths of the work) renders only the piece plus `DECODER_MARGIN` frames, more
    than its receptive field, which are dropped. The loudness envelope mix and the output peak
    rule then apply to the whole file at once. `precision` is `auto`, `fp32` or `bf16` (autocast
    of HuBERT and the synthesizer; see `default_precision`). The synthesizer's noise is seeded,
    so the same input gives the same output.
    """
    import torch
    from rvc_next.engine.audio.dsp import change_rms, highpass_16k

    x = np.nan_to_num(np.asarray(audio_16k, dtype=np.float32).reshape(-1))
    n = x.shape[0]
    rate = int(voice.tgt_sr)
    total = round(n * rate / SR_16K)
    out = np.zeros(total, np.float32)
    if n == 0 or float(np.abs(x).max()) < SILENCE_PEAK:
        if progress is not None:
            progress(1.0)
        return out, rate
    peak = float(np.abs(x).max())
    if peak > 0.95:  # rvc-next scales each call's input to a 0.95 peak: do it once, for the file
        x = x * np.float32(0.95 / peak)
    device = runtime.device
    precision = _resolve_precision(precision, device, voice.net_g)
    _use_all_cpus(device)
    net_g = voice.net_g
    _fold_weight_norm(net_g)
    upp = rate // 100  # output samples per 10 ms frame
    context = max(0, context) // FRAME * FRAME
    margin = min(DECODER_MARGIN, context // FRAME)
    pad = max(SR_16K, context + (margin + 4) * FRAME)
    x = np.asarray(highpass_16k(x), dtype=np.float32)
    padded = np.pad(x, (pad, pad), mode="reflect").astype(np.float32)

    missing_asset, _ = _engine_errors()
    try:
        hubert = runtime.hubert(voice.embedder)
        pitch = _pitch(runtime, padded, params, device) if voice.if_f0 else _Pitch(None, None)
    except missing_asset as e:
        raise ModelMissing(f"Voice models are missing ({e}); {DOWNLOAD_HINT}.") from e
    if progress is not None:
        progress(0.1)

    t_max = runtime.chunk.x_max * SR_16K
    max_piece = max(SR_16K, t_max - FRAME - 2 * context - TAIL)
    search = min(2 * runtime.chunk.x_query * SR_16K, max_piece // 2)
    pieces = plan_pieces(n, max_piece, search, x)
    sid = torch.tensor([0], device=device, dtype=torch.long)
    with torch.inference_mode(), torch.random.fork_rng(devices=[]):
        for i, (a, b) in enumerate(pieces):
            cancel.checkpoint()
            first, last = round(a * rate / SR_16K), round(b * rate / SR_16K)
            lo = a + pad - context  # window in `padded`, whole frames from a piece's start
            hi = min(padded.shape[0], b + pad + context + (margin + 3) * FRAME)
            seg = padded[lo:hi]
            if float(np.abs(seg).max()) < SILENCE_PEAK:
                continue
            torch.manual_seed(SEED + i)
            f0 = lo // FRAME
            with _autocast(device, precision):
                hz = pitch.hz[:, f0 : f0 + seg.shape[0] // FRAME] if voice.if_f0 else None
                feats = _features(runtime, hubert, voice, index, params, seg, hz)
                frames = min(feats.shape[1], seg.shape[0] // FRAME)
                head = context // FRAME - margin
                length = min(-(-(b - a) // FRAME) + 2 * margin, frames - head)
                coarse = pitch.coarse[:, f0 : f0 + frames] if hz is not None else None
                hz = hz[:, :frames] if hz is not None else None
                y = _synthesize(
                    net_g, feats[:, :frames], coarse, hz, sid, head, length, margin, upp
                )
            y = y[margin * upp : margin * upp + last - first]
            out[first : first + y.shape[0]] = y
            if progress is not None:
                progress(0.1 + 0.9 * (i + 1) / len(pieces))
    if params.rms_mix != 1:
        out = change_rms(x, SR_16K, out, rate, float(params.rms_mix)).astype(np.float32)
    top = float(np.abs(out).max())
    if top > 0.99:  # rvc-next's output rule (it then stores int16; this keeps float)
        out *= np.float32(0.99 / top)
    if progress is not None:
        progress(1.0)
    return out, rate


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
            raise BadAudio(
                f"The vocal file {path.name} is damaged; separate the song again."
            ) from None
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
        raise EngineError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}.")
    info = _voice_info(voice_pth)
    check_assets(assets_dir, params.f0_method if info.f0 else "pm", embedder=info.embedder)
    if not vocal_path.is_file():
        raise BadAudio(f"The vocal file {vocal_path.name} was not found; separate the song again.")
    audio, rate = _read_vocal(vocal_path)
    channels, n = audio.shape
    runtime = engine_runtime(assets_dir, device)
    resident = set(runtime.cached())
    try:
        voice, index = _load(runtime, voice_pth, index_path, info)
        mono = audio.mean(axis=0) if channels > 1 else audio[0]
        x16 = _resample(mono, rate, SR_16K)
        y, y_rate = convert_16k(x16, runtime, voice, index, params, progress, precision=precision)
    finally:  # HuBERT, the pitch model, the voice and its index, if they were not loaded
        loads.count(len(set(runtime.cached()) - resident))
    y = _fit(_resample(y, y_rate, rate), n)
    return write_wav(out_path, np.repeat(y[None, :], channels, axis=0), rate)


__all__ = [
    "DOWNLOAD_HINT",
    "F0_METHODS",
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
    "inspect_voice",
    "missing_assets",
    "PRECISIONS",
    "plan_pieces",
    "required_assets",
]


# -- exporting voices ------------------------------------------------------------------------------


def export_voice(
    generator: Path,
    dst: Path,
    *,
    sample_rate: str = "40k",
    version: str = "v2",
    info: str = "",
    config: list | None = None,
) -> Path:
    """Export generator checkpoint `generator` (`{"model": state}`) as a voice at `dst`.

    `config` replaces the standard config of `sample_rate`/`version` (for non-standard sizes).
    """
    from collections import OrderedDict

    from rvc_next.engine.models import checkpoint as ckpt
    from rvc_next.engine.models.extract import config_for

    data = ckpt.torch_load(generator)
    if not ckpt.is_g_checkpoint(data):
        raise BadVoice(f"{Path(generator).name} is not an RVC generator checkpoint.")
    state = ckpt.legacy_weight_norm(data["model"])
    weight = OrderedDict((k, v.half()) for k, v in state.items() if "enc_q" not in k)
    model = ckpt.SmallModel(
        weight=weight,
        config=list(config) if config is not None else config_for(sample_rate, version),
        info=info or "Exported by Encore",
        sr=sample_rate,
        pitch_guidance=True,
        version=version,
        speaker_info=ckpt.normalize_speaker_info(None),
    )
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".part-{dst.name}")
    try:
        ckpt.write_small_model(model, tmp)
        tmp.replace(dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst
