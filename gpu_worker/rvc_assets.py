"""The voice models folder: which files conversion and training need, and filling it.

It owns the folder's layout (rvc-next's, the original RVC's): HuBERT, the pitch models' weights
(`F0_METHODS` names the pitch methods users may pick), the v2 40k base models training starts
from (`TRAINING_FILES`); the checks (`required_assets`, `missing_assets`, `check_assets`) and the
download through rvc-next's own asset downloader (`download_assets`).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gpu_worker.errors import BadOptions, EngineError, ModelMissing

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


def unknown_f0(method: object) -> BadOptions:
    """The refusal of a pitch method that is not in `F0_METHODS`."""
    return BadOptions("f0_method", value=str(method)[:40], allowed=sorted(F0_METHODS))


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
        raise unknown_f0(f0_method)
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
    """Raise `ModelMissing` (the folder, the files missing from it) when a file is not there."""
    missing = missing_assets(assets_dir, f0_method, **kwargs)
    if missing:
        rel = [
            str(p.relative_to(assets_dir)) if p.is_relative_to(assets_dir) else str(p)
            for p in missing
        ]
        raise ModelMissing("voice_models", folder=str(assets_dir), missing=rel)


def asset_ids(f0_methods: Sequence[str] = ("rmvpe",), training: bool = True) -> list[str]:
    """rvc-next catalog ids for HuBERT, the weights of `f0_methods`, and the v2 40k base models."""
    ids = ["hubert"]
    for method in f0_methods:
        engine = F0_METHODS.get(method)
        if engine is None:
            raise unknown_f0(method)
        if engine in _F0_ASSET_IDS and _F0_ASSET_IDS[engine] not in ids:
            ids.append(_F0_ASSET_IDS[engine])
    if training:
        ids.append("pretrained-v2-40k")
    return ids


def _download_failed(detail: object) -> EngineError:
    return EngineError(
        "download_failed", what="voice models", detail=" ".join(str(detail).split())[:200]
    )


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
        raise _download_failed(e) from e
    finally:
        if services is not None:
            services.close()
        shutil.rmtree(state_dir, ignore_errors=True)
    if job.state != "completed":
        detail = job.error.message if job.error else job.state
        raise _download_failed(detail)
    files = required_assets(assets_dir, "pm", training=training)
    for method in f0_methods:
        files += [f for f in required_assets(assets_dir, method) if f not in files]
    missing = [str(f.relative_to(assets_dir)) for f in files if not f.is_file()]
    if missing:
        raise _download_failed(f"still missing: {', '.join(missing)}")
    return files
