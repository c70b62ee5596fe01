"""The conversion knobs a user may set (`VoiceParams`), checked where they are made."""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpu_worker.errors import BadOptions
from gpu_worker.rvc_assets import F0_METHODS, unknown_f0


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
