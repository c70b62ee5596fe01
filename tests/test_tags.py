"""Every result format carries its tags: ffprobe reads them back, and the audio is untouched."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from gpu_worker.audio import ENCODINGS, decode, encode, write_wav
from gpu_worker.tags import (
    AI_GENERATED,
    SOURCE_SONG,
    TRAINED_ALGORITHMIC_MEDIA,
    VOICE,
    cover_tags,
    read_tags,
    write_tags,
)

SR = 44100


def ffprobe_tags(path) -> dict[str, str]:
    """Container and stream tags as ffprobe shows them, names lowercased."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    found = json.loads(out.stdout)
    tags = dict(found["format"].get("tags") or {})
    for stream in found["streams"]:
        tags.update(stream.get("tags") or {})
    return {k.lower(): v for k, v in tags.items()}


@pytest.fixture(scope="module")
def tone(tmp_path_factory):
    t = np.arange(int(1.3 * SR)) / SR
    audio = 0.3 * np.stack([np.sin(2 * np.pi * 330 * t), np.sin(2 * np.pi * 440 * t)])
    return write_wav(tmp_path_factory.mktemp("tone") / "tone.wav", audio.astype(np.float32), SR)


@pytest.mark.parametrize("fmt", list(ENCODINGS))
def test_tags_read_back_with_ffprobe(tmp_path, tone, fmt):
    path = encode(tone, tmp_path / f"cover.{fmt}", fmt)
    before = decode(path, SR, 2)
    tags = cover_tags("Morning Light", "The Band", "Zoë")
    write_tags(path, tags)

    seen = ffprobe_tags(path)
    assert seen["title"] == "Morning Light"
    assert seen["artist"] == "The Band (Zoë AI cover)"
    assert seen["album"] == "Zoë AI covers"
    assert "AI-generated" in seen["comment"] and "Zoë" in seen["comment"]
    assert "The Band - Morning Light" in seen["comment"]
    if fmt != "wav":  # RIFF INFO has no free fields; wav keeps them in its id3 chunk
        assert seen[SOURCE_SONG.lower()] == "The Band - Morning Light"
        assert seen[VOICE.lower()] == "Zoë"
        assert seen[AI_GENERATED.lower()] == "yes"

    back = read_tags(path)  # every field, in every format, through one reader
    assert back[SOURCE_SONG] == "The Band - Morning Light"
    assert back[VOICE] == "Zoë"
    assert back[AI_GENERATED] == "yes"
    assert back["DIGITAL_SOURCE_TYPE"] == TRAINED_ALGORITHMIC_MEDIA
    assert back["artist"] == "The Band (Zoë AI cover)"

    after = decode(path, SR, 2)  # tags change no sample
    assert after.shape == before.shape
    assert np.array_equal(after, before)


def test_tagging_twice_replaces_the_tags(tmp_path, tone):
    path = encode(tone, tmp_path / "cover.mp3", "mp3")
    write_tags(path, cover_tags("First", "A", "v1"))
    write_tags(path, cover_tags("Second", "B", "v2"))
    back = read_tags(path)
    assert back["title"] == "Second" and back[VOICE] == "v2"
    assert ffprobe_tags(path)["artist"] == "B (v2 AI cover)"


def test_untagged_and_foreign_files_read_as_no_tags(tmp_path, tone):
    assert read_tags(encode(tone, tmp_path / "plain.flac", "flac")).get(VOICE) is None
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"not audio at all" * 10)
    assert read_tags(junk) == {}
