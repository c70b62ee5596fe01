"""A cappella: a song with nothing but voice in it is not separated.

This module owns the decision and what follows from it. After separation, the instrumental's
energy is compared with the vocal's (`instrumental_share_db`); when the instrumental is
near-silent (`A_CAPPELLA_DB` below the vocal, or quieter), the song is a cappella. Its stems
are then replaced (`keep_unseparated`): the vocal stem becomes the untouched song, so the
voice is converted without the separator's artefacts, and the instrumental and every other
stem become silence, each exactly as long as the song, in the same float32 WAV format.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from gpu_worker.audio import read_wav, write_wav

VOCALS = "vocals"
INSTRUMENTAL = "instrumental"
# What a separator leaves in the instrumental of a voice-only song (leakage, breaths,
# room) sits some 25-40 dB under the voice; any real accompaniment is far louder.
A_CAPPELLA_DB = -30.0
SILENT_DBFS = -70.0  # a vocal stem quieter than this is no voice at all


def _energy(audio: np.ndarray) -> float:
    return float(np.mean(np.square(audio, dtype=np.float64))) if audio.size else 0.0


def _db(power: float) -> float:
    return 10 * math.log10(power) if power > 0 else float("-inf")


def instrumental_share_db(vocals: np.ndarray, instrumental: np.ndarray) -> float:
    """The instrumental's energy relative to the vocal's, in dB (-inf: silent instrumental)."""
    v, i = _energy(vocals), _energy(instrumental)
    if v <= 0:
        return float("inf") if i > 0 else 0.0
    return _db(i) - _db(v)


def is_a_cappella(
    vocals: np.ndarray, instrumental: np.ndarray, threshold_db: float = A_CAPPELLA_DB
) -> bool:
    """Whether the stems say the song is voice alone: a real vocal, a near-silent rest."""
    if _db(_energy(vocals)) < SILENT_DBFS:
        return False
    return instrumental_share_db(vocals, instrumental) <= threshold_db


def check_stems(
    song: np.ndarray, files: Mapping[str, Path], threshold_db: float = A_CAPPELLA_DB
) -> float | None:
    """For separated stems on disk (`gpu_worker.separate.separate`'s result): if the song is
    a cappella, `keep_unseparated` and return the instrumental's share in dB; else None."""
    vocals, rate = read_wav(files[VOCALS])
    instrumental, _ = read_wav(files[INSTRUMENTAL])
    share = instrumental_share_db(vocals, instrumental)
    if not is_a_cappella(vocals, instrumental, threshold_db):
        return None
    keep_unseparated(song, files, rate)
    return share


def keep_unseparated(song: np.ndarray, files: Mapping[str, Path], rate: int) -> None:
    """Rewrite the stems of an a cappella song: the song itself as the vocal, silence for
    everything else, all `song.shape[-1]` samples long."""
    song = np.asarray(song, dtype=np.float32)
    if song.ndim == 1:
        song = song[None]
    if song.shape[0] == 1:
        song = np.repeat(song, 2, axis=0)
    silence = np.zeros_like(song)
    for name, path in files.items():
        write_wav(path, song if name == VOCALS else silence, rate)
