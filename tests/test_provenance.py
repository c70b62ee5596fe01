"""Content Credentials: a signed manifest declares the result AI-generated, and holds only as
long as the file is the one that was signed."""

from __future__ import annotations

import stat
import subprocess

import numpy as np
import pytest

from gpu_worker import provenance
from gpu_worker.audio import decode, encode, write_wav
from gpu_worker.tags import VOICE, cover_tags, read_tags, write_tags
from tests.test_tags import ffprobe_tags

pytestmark = pytest.mark.skipif(not provenance.available(), reason="c2pa-python not installed")

SR = 44100


@pytest.fixture(scope="module")
def credentials(tmp_path_factory):
    folder = tmp_path_factory.mktemp("c2pa")
    cert, key = folder / "cert.pem", folder / "key.pem"
    assert provenance.ensure_credentials(cert, key) is True  # made on first use
    assert provenance.ensure_credentials(cert, key) is False  # then kept
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    return provenance.Credentials(cert, key)


@pytest.fixture(scope="module")
def tone(tmp_path_factory):
    t = np.arange(int(1.2 * SR)) / SR
    audio = 0.3 * np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)])
    return write_wav(tmp_path_factory.mktemp("tone") / "tone.wav", audio.astype(np.float32), SR)


def _marked(tmp_path, tone, credentials, fmt):
    path = encode(tone, tmp_path / f"cover.{fmt}", fmt)
    tags = cover_tags("Morning Light", "The Band", "Zoë")
    write_tags(path, tags)
    before = decode(path, SR, 2)
    provenance.sign(path, tags, credentials)
    return path, before


@pytest.mark.parametrize("fmt", provenance.SIGNABLE)
def test_signed_manifest_declares_ai_and_keeps_tags_and_audio(tmp_path, tone, credentials, fmt):
    path, before = _marked(tmp_path, tone, credentials, fmt)

    found = provenance.read(path)
    assert found.marked and found.valid, found.problems
    assert not found.trusted  # a self-made certificate: no validator trusts it
    assert found.ai_generated
    assert "The Band - Morning Light" in found.ingredients
    assert any("Zoë" in i for i in found.ingredients)
    assert found.signer and found.issuer

    assert ffprobe_tags(path)["artist"] == "The Band (Zoë AI cover)"
    assert read_tags(path)[VOICE] == "Zoë"
    assert np.array_equal(decode(path, SR, 2), before)


def test_a_changed_file_fails_validation(tmp_path, tone, credentials):
    path, _ = _marked(tmp_path, tone, credentials, "wav")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x55  # one sample in the middle of the audio
    path.write_bytes(bytes(data))
    found = provenance.read(path)
    assert found.marked and not found.valid
    assert any("mismatch" in p for p in found.problems)


def test_a_reencoded_file_is_unmarked(tmp_path, tone, credentials):
    path, _ = _marked(tmp_path, tone, credentials, "mp3")
    copy = tmp_path / "reencoded.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), str(copy)], check=True)
    assert provenance.read(copy).marked is False


def test_ogg_and_junk_read_as_unmarked(tmp_path, tone):
    ogg = provenance.read(encode(tone, tmp_path / "cover.ogg", "ogg"))
    assert ogg.marked is False and ogg.supported is False
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"no audio here" * 50)
    assert provenance.read(junk).marked is False


def test_half_configured_credentials_are_refused(tmp_path):
    cert = tmp_path / "cert.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    from flows.errors import user_message

    with pytest.raises(provenance.EngineError) as refused:
        provenance.ensure_credentials(cert, tmp_path / "key.pem")
    assert "ENCORE_C2PA_KEY" in user_message(refused.value)
