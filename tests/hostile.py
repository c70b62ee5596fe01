"""Hostile files for tests: a checkpoint whose pickle runs code when loaded unsafely."""

from __future__ import annotations

from pathlib import Path


class Touch:
    """Unpickling this calls Path.touch(marker): a stand-in for any code a crafted model runs."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def code_running_pth(path: Path, marker: Path) -> Path:
    """A voice-shaped `.pth` that creates `marker` if anything unpickles it unsafely."""
    import torch

    torch.save({"weight": {}, "config": [0] * 18, "payload": Touch(marker)}, path)
    return path
