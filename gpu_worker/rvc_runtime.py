"""The loaded voice-conversion models: one rvc-next `Runtime` per models folder and device.

It owns the in-process cache (`engine_runtime`, released when an asset file changes, and by
`clear_cache`) and loading a voice and its index into the runtime (`load_voice`), with the
index's header walked before faiss reads it.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from gpu_worker.errors import BadVoice, ModelMissing
from gpu_worker.model_check import check_index
from gpu_worker.rvc_checkpoint import VoiceInfo, forget_inspected, require_safe_torch, voice_name

logger = logging.getLogger(__name__)


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
    forget_inspected()


def engine_errors() -> tuple[type, type]:
    from rvc_next.engine.errors import MissingAssetError, ModelFormatError

    return MissingAssetError, ModelFormatError


def load_voice(
    runtime: Any, voice_pth: Path, index_path: Path | None, info: VoiceInfo
) -> tuple[Any, Any]:
    missing_asset, model_format = engine_errors()
    name = voice_name(voice_pth)
    require_safe_torch()
    try:
        voice = runtime.voice(voice_pth)
    except model_format as e:
        raise BadVoice("format", name=name, detail=str(e)[:200]) from e
    except missing_asset as e:
        raise ModelMissing("voice_models", detail=str(e)[:300]) from e
    except (RuntimeError, ValueError, KeyError, IndexError) as e:
        raise BadVoice("does_not_load", name=name) from e
    if index_path is None:
        return voice, None
    index_path = Path(index_path)
    iname = voice_name(index_path)
    if not index_path.is_file():
        raise BadVoice("index_not_found", name=iname)
    want = 768 if info.version == "v2" else 256
    check_index(index_path, want, iname)  # faiss trusts the header: walk it first
    try:
        index = runtime.index(index_path)
    except Exception as e:
        raise BadVoice("index_unreadable", name=iname) from e
    if index.dim != want:
        raise BadVoice("index_of_another_voice", name=iname, dim=index.dim, needs=want)
    return voice, index
