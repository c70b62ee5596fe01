"""What a voice training run is asked for and what it reports back.

It owns the options (`TrainOptions`, checked on creation), the progress events
(`TrainProgress`), the result (`TrainResult`), the fixed facts of the voices Encore trains (RVC
v2, 40 kHz, contentvec features), the files training reads (`required_training_assets`) and how
a voice's name and a device string are normalised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from gpu_worker.errors import BadOptions
from gpu_worker.rvc_assets import F0_METHODS, required_assets, unknown_f0

SAMPLE_RATE = 40000
RATE_NAME = "40k"
VERSION = "v2"
EMBEDDER = "contentvec"
SLICE_SECONDS = 3.7  # rvc-next's (and the original RVC's) slice length
MIN_SLICED_SECONDS = 3.0
"""Least audio left after slicing (silences cut) that training accepts; real voices want minutes."""
GPU_CACHE_MAX_SECONDS = 30 * 60.0
"""Datasets up to this long are kept on the GPU for the whole run (as RVC's "cache" option)."""


@dataclass(frozen=True)
class TrainOptions:
    """How to train. Invalid values raise `BadOptions` on creation."""

    epochs: int = 200
    """Total epochs. 200 suits fine-tuning from the v2 base on a few minutes of voice."""
    batch_size: int = 8
    save_every: int = 10
    """Epochs between checkpoints (a rerun resumes from the last one)."""
    f0_method: str = "rmvpe"
    """Pitch method for the training data: rmvpe (best), swiftf0 (alias swift), pm, fcpe, crepe,
    crepe-tiny. pm and swiftf0 need no weights."""
    sample_rate: int = SAMPLE_RATE
    """Only 40000: the base models are RVC v2 40 kHz."""
    seed: int = 1234
    config_override: dict | None = None
    """Deep-merged into rvc-next's training config (tests shrink the model with it)."""

    def __post_init__(self) -> None:
        for field_name, low in (("epochs", 1), ("batch_size", 1), ("save_every", 1)):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise BadOptions("whole_at_least", name=field_name, low=low)
        if self.epochs > 100_000:
            raise BadOptions("at_most", name="epochs", high=100_000)
        if self.batch_size > 256:
            raise BadOptions("at_most", name="batch_size", high=256)
        if self.f0_method not in F0_METHODS:
            raise unknown_f0(self.f0_method)
        if self.sample_rate != SAMPLE_RATE:
            raise BadOptions(
                "train_sample_rate", value=str(self.sample_rate)[:20], only=SAMPLE_RATE
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise BadOptions("whole", name="seed")
        if self.config_override is not None and not isinstance(self.config_override, dict):
            raise BadOptions("config_override")

    @property
    def engine_f0_method(self) -> str:
        return F0_METHODS[self.f0_method]


@dataclass(frozen=True)
class TrainProgress:
    stage: str
    """slicing, pitch, features, training or indexing."""
    fraction: float
    """0..1 of the whole job (the training loop counts for most of it)."""
    epoch: int | None = None
    epochs: int | None = None
    step: int | None = None
    """Optimizer steps completed in total (they continue across resumes)."""
    message: str = ""


@dataclass(frozen=True)
class TrainResult:
    pth: Path
    """A standard RVC v2 40 kHz pitch-guided voice (the small model every RVC tool reads)."""
    index: Path
    """Its `added_*.index` (faiss)."""
    epochs: int
    """Epochs completed in total."""
    steps: int
    """Optimizer steps completed in total."""
    resumed_from_epoch: int
    """The epoch the loop went on from (0 for a fresh run; `epochs` when nothing was left)."""


def required_training_assets(assets_dir: Path, f0_method: str = "rmvpe") -> list[Path]:
    """The files training with `f0_method` reads: HuBERT, the pitch model's weights (none for pm
    and swiftf0) and the v2 40k base models `pretrained_v2/f0G40k.pth` and `f0D40k.pth`."""
    return required_assets(Path(assets_dir), f0_method, embedder=EMBEDDER, training=True)


def safe_name(name: str) -> str:
    """`name` as it appears in the file names (letters, digits, `_`, `-`, `.`; at most 64)."""
    text = re.sub(r"[^\w.-]+", "_", str(name), flags=re.ASCII).strip("._-")
    return text[:64] or "voice"


def parse_device(device: str) -> str:
    text = str(device or "cpu").strip().lower()
    if text == "cpu":
        return "cpu"
    m = re.fullmatch(r"cuda(?::(\d{1,2}))?", text)
    if not m:
        raise BadOptions("device", value=str(device)[:20])
    return f"cuda:{int(m.group(1) or 0)}"
