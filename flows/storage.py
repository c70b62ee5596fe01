"""Where files live between steps, addressed by URI (`file://...`; `s3://...` later).

Steps exchange URIs, never bytes. `fetch` gives a local path for a URI; `put` stores a local
file under a key and returns its URI. Writes are atomic: a reader never sees half a file.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse


class Storage(Protocol):
    def put(self, local: Path, key: str) -> str: ...
    def fetch(self, uri: str, workdir: Path) -> Path: ...
    def exists(self, uri: str) -> bool: ...
    def delete(self, uri: str) -> None: ...
    def delete_prefix(self, key_prefix: str) -> None: ...


def _safe_key(key: str) -> str:
    parts = [p for p in key.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise ValueError(f"unsafe storage key: {key!r}")
    return "/".join(parts)


class LocalStorage:
    """A folder on this machine: the embedded default."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, uri: str) -> Path:
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            raise ValueError(f"not a local file URI: {uri}")
        path = Path(unquote(parsed.path)).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"URI outside the storage root: {uri}")
        return path

    def put(self, local: Path, key: str) -> str:
        dst = self.root / _safe_key(key)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".part-{uuid.uuid4().hex}-{dst.name}")
        try:
            shutil.copyfile(local, tmp)
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
        return dst.as_uri()

    def fetch(self, uri: str, workdir: Path) -> Path:
        """Local files need no copy: the stored path itself is returned (read it only)."""
        path = self._path(uri)
        if not path.is_file():
            raise FileNotFoundError(uri)
        return path

    def exists(self, uri: str) -> bool:
        return self._path(uri).is_file()

    def delete(self, uri: str) -> None:
        self._path(uri).unlink(missing_ok=True)

    def delete_prefix(self, key_prefix: str) -> None:
        target = self.root / _safe_key(key_prefix)
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)


def open_storage(url: str) -> Storage:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalStorage(Path(unquote(parsed.path)))
    raise ValueError(f"unsupported storage URL {url!r}: use file:///path")
