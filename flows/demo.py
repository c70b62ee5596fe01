"""The first-run demo: a synthesised, licence-clean song and the demo voice.

The song is made here from numbers (drums, bass, chords and a sung "ah" melody with formants
and vibrato), so the repository holds no recorded audio and the same seed gives the same
file, hence the same catalog entry and cached stems on every run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from flows.catalog import add_song
from flows.db import Voice, session
from flows.settings import Settings
from flows.voices import get_voice, import_voice
from gpu_worker.audio import write_wav
from gpu_worker.errors import ModelMissing

SR = 44100
DEMO_OWNER = "encore"
DEMO_VOICE = "demo"
# A minor pentatonic tune over Am - F - C - G, one note per beat.
MELODY = [69, 72, 74, 76, 74, 72, 69, 67, 69, 72, 76, 79, 76, 74, 72, 74]
CHORDS = [(57, 60, 64), (53, 57, 60), (48, 52, 55), (55, 59, 62)]


def _hz(note: float) -> float:
    return 440.0 * 2 ** ((note - 69) / 12)


def _sung(freq: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """A sung vowel: a glottal-like harmonic series through two formants, with vibrato."""
    t = np.arange(n) / SR
    f0 = freq * (1 + 0.012 * np.sin(2 * np.pi * 5.5 * t) * np.minimum(t * 3, 1))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    out = np.zeros(n)
    for k in range(1, 30):
        fk = freq * k
        if fk > SR / 2.2:
            break
        gain = sum(np.exp(-(((fk - fc) / bw) ** 2)) for fc, bw in ((750, 160), (1150, 200)))
        out += (0.15 / k + gain) * np.sin(k * phase)
    out += 0.01 * rng.standard_normal(n)  # breath
    env = np.minimum(1, t / 0.04) * np.minimum(1, (n / SR - t) / 0.08)
    return out * np.clip(env, 0, 1)


def synth_parts(seconds: float = 12.0, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """The backing (2, samples) and the dry sung line (samples,), unscaled, at 44.1 kHz."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    beat = int(SR * 60 / 100)
    left, right, voice = np.zeros(n), np.zeros(n), np.zeros(n)
    for i, start in enumerate(range(0, n, beat)):
        length = min(beat, n - start)
        t = np.arange(length) / SR
        kick = np.sin(2 * np.pi * (50 + 90 * np.exp(-t * 30)) * t) * np.exp(-t * 9)
        hat = rng.standard_normal(length) * np.exp(-t * 60) * 0.15
        snare = rng.standard_normal(length) * np.exp(-t * 18) * 0.35 if i % 2 else 0
        chord = CHORDS[(i // 4) % len(CHORDS)]
        bass = 0.35 * np.sign(np.sin(2 * np.pi * _hz(chord[0] - 12) * t)) * np.exp(-t * 2)
        pad = sum(np.sin(2 * np.pi * _hz(c) * t + j) for j, c in enumerate(chord)) * 0.06
        left[start : start + length] += 0.8 * kick + hat + snare + bass + pad * 1.2
        right[start : start + length] += 0.8 * kick + hat * 0.7 + snare + bass + pad * 0.8
        voice[start : start + length] += _sung(_hz(MELODY[i % len(MELODY)]), length, rng)
    return np.stack([left, right]), voice


def synth_song(seconds: float = 12.0, seed: int = 7, vocal: bool = True) -> np.ndarray:
    """A stereo float32 (2, samples) song at 44.1 kHz; `vocal=False` gives the backing."""
    backing, voice = synth_parts(seconds, seed)
    mix = backing + (0.5 * voice if vocal else 0.0)
    return (0.5 * mix / np.abs(mix).max()).astype(np.float32)


def preview_parts(seconds: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """The opening of the demo song for a new voice's preview: dry vocal (1, n), backing (2, n)."""
    backing, voice = synth_parts(seconds)
    return (
        (0.5 * voice / np.abs(voice).max())[None].astype(np.float32),
        (0.3 * backing / np.abs(backing).max()).astype(np.float32),
    )


def demo_voice_dir(s: Settings) -> Path:
    return s.models / "voices" / DEMO_VOICE


def ensure_demo_voice(s: Settings) -> Voice:
    """The public demo voice, registered from the model folder on first use."""
    voice = get_voice(s, DEMO_OWNER, DEMO_VOICE, include_public=False)
    if voice is not None:
        return voice
    folder = demo_voice_dir(s)
    pths = sorted(folder.glob("*.pth")) if folder.is_dir() else []
    if not pths:
        raise ModelMissing("demo_voice", folder=str(folder))
    files = [pths[0], *sorted(folder.glob("*.index"))[:1]]
    voice = import_voice(s, DEMO_OWNER, DEMO_VOICE, files)
    with session(s.database) as db:
        db.get(Voice, voice.id).public = True
    return voice


def prepare_demo(s: Settings) -> tuple[str, str]:
    """Song id and voice id for the demo cover."""
    voice = ensure_demo_voice(s)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_wav(Path(tmp) / "encore-demo-song.wav", synth_song(), SR)
        song = add_song(s, path, title="Demo Song", artist="Encore")
    return song.id, voice.id
