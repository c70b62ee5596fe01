"""Reading an RVC voice checkpoint (`.pth`) safely, and describing it.

It owns `inspect_voice`: the file is checked as a zip of stored records before torch reads it,
loaded with `torch.load(weights_only=True)` (no pickled code runs), and every field and tensor
is checked against an RVC geometry (`gpu_worker.model_check`) before any model is built. It also
owns the torch version rule for untrusted checkpoints (`require_safe_torch`) and a small cache
of descriptions keyed by file identity (`voice_info`).
"""

from __future__ import annotations

import functools
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpu_worker.errors import BadVoice, EngineError
from gpu_worker.model_check import check_voice

MAX_VOICE_BYTES = 1024 * 1024 * 1024


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


def voice_name(path: Path) -> str:
    return path.name if len(path.name) <= 80 else path.name[:77] + "..."


def inspect_voice(pth: Path, max_bytes: int = MAX_VOICE_BYTES) -> VoiceInfo:
    """Read an RVC voice `.pth` as data only and describe it; raise `BadVoice` otherwise.

    The file is loaded with `torch.load(weights_only=True)`, which refuses pickled code, so a
    crafted file cannot run anything here.
    """
    import torch

    pth = Path(pth)
    name = voice_name(pth)
    if not pth.is_file():
        raise BadVoice("not_found", name=name)
    size = pth.stat().st_size
    if size == 0:
        raise BadVoice("empty", name=name)
    if size > max_bytes:
        raise BadVoice("too_large", name=name, size=size, max_bytes=max_bytes)
    require_safe_torch()
    _check_container(pth, name, max_bytes)
    try:
        data = torch.load(str(pth), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "unsupported global" not in str(e).lower():  # garbage, or not a torch file at all
            raise BadVoice("not_torch", name=name) from None
        raise BadVoice("pickled_code", name=name) from None
    except Exception:
        raise BadVoice("not_torch", name=name) from None
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
        raise EngineError("unsafe_torch", needs=".".join(map(str, SAFE_TORCH)))


def _check_container(pth: Path, name: str, max_bytes: int) -> None:
    """A voice `.pth` is a zip of stored records (torch's format): refuse any other layout,
    and records that would unpack to more than the file holds, before torch reads it."""
    from gpu_worker.archives import zip_entries

    if not zipfile.is_zipfile(pth):
        raise BadVoice("not_torch", name=name)
    zf, entries = zip_entries(pth, MAX_PTH_RECORDS, name)
    with zf:
        unpacked = sum(e.file_size for e in entries)
        if any(e.compress_type != zipfile.ZIP_STORED for e in entries) or unpacked > min(
            pth.stat().st_size, max_bytes
        ):
            raise BadVoice("archive_expands", name=name)


def _tensors(weight: dict, name: str) -> dict[str, tuple[tuple[int, ...], str]]:
    import torch

    out = {}
    for key, value in weight.items():
        if not isinstance(value, torch.Tensor):
            raise BadVoice("not_weights", name=name)
        out[key] = (tuple(value.shape), str(value.dtype).removeprefix("torch."))
    return out


def _all_finite(weight: dict) -> bool:
    import torch

    return all(bool(torch.isfinite(t).all()) for t in weight.values())


def _describe(data: Any, name: str) -> VoiceInfo:
    import torch

    if isinstance(data, dict) and isinstance(data.get("model"), dict) and "weight" not in data:
        raise BadVoice("training_checkpoint", name=name)
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("weight"), dict)
        or "config" not in data
    ):
        raise BadVoice("not_rvc", name=name)
    weight = data["weight"]
    config = data["config"]
    if not isinstance(config, list | tuple) or len(config) != 18:
        raise BadVoice("damaged", name=name, part="config")
    emb_g = weight.get("emb_g.weight")
    phone = weight.get("enc_p.emb_phone.weight")
    if not isinstance(emb_g, torch.Tensor) or not isinstance(phone, torch.Tensor):
        raise BadVoice("damaged", name=name, part="rvc_weights")
    foreign = ("dec.mrfs.", "dec.upsample_blocks.", "dec.mel_conv.")
    if any(isinstance(k, str) and k.startswith(foreign) for k in weight) or data.get(
        "vocoder"
    ) not in (None, "", "HiFi-GAN"):
        raise BadVoice("vocoder", name=name)
    dims = int(phone.shape[1])
    version = str(data.get("version") or ("v2" if dims == 768 else "v1"))
    if version not in ("v1", "v2") or dims != (768 if version == "v2" else 256):
        raise BadVoice("version_mismatch", name=name, version=version[:10])
    try:
        sample_rate = int(config[-1])
    except (TypeError, ValueError):
        raise BadVoice("damaged", name=name, part="config") from None
    if sample_rate not in (32000, 40000, 48000):
        raise BadVoice("sample_rate", name=name, sample_rate=sample_rate)
    try:
        f0 = bool(int(data.get("f0", 1)))
    except (TypeError, ValueError):
        raise BadVoice("damaged", name=name, part="f0") from None
    from rvc_next.engine.features.embedders import EMBEDDERS, WITH_FINAL_PROJ

    embedder = str(data.get("embedder_model") or "contentvec")
    if embedder not in EMBEDDERS or (version == "v1" and embedder not in WITH_FINAL_PROJ):
        raise BadVoice("embedder", name=name, embedder=embedder[:40])
    # The config drives the synthesizer's size at conversion: it must be an RVC geometry, and
    # every tensor the shape that geometry implies (bounded and checked before any compute).
    check_voice(data["config"], _tensors(weight, name), version, f0, name)
    if not _all_finite(weight):
        raise BadVoice("not_finite", name=name)
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


def voice_info(pth: Path) -> VoiceInfo:
    try:
        st = pth.stat()
    except OSError:
        raise BadVoice("not_found", name=voice_name(pth)) from None
    return _inspect_cached(str(pth.resolve()), st.st_mtime_ns, st.st_size)


def forget_inspected() -> None:
    """Drop the cached descriptions (the files may have changed in place)."""
    _inspect_cached.cache_clear()
