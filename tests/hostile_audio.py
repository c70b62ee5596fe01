"""Hostile audio files for tests, built at test time with ffmpeg and Python (no binaries).

Each builder writes one file at the path it is given (the name is what a user would call it,
usually `song.mp3`) and returns that path. `CORPUS` lists them with what Encore must answer:
a phrase of the refusal sentence, or `Accepted(seconds)`: taken, with the length that was
really decoded (not the length its headers claim).
"""

from __future__ import annotations

import io
import struct
import subprocess
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LIMIT_S = 15 * 60  # the default song limit these files are built around
NOT_AUDIO = "could not be read as audio"
DAMAGED = "damaged or cut off"
TOO_LONG = "longer than the 15-minute limit"


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def _tone(seconds: float, rate: int = 8000, freq: int = 330) -> list[str]:
    return ["-f", "lavfi", "-i", f"sine=f={freq}:r={rate}:d={seconds}"]


def good_song(path: Path, seconds: float = 3.0) -> Path:
    """A plain, honest 44.1 kHz stereo mp3 (what a good upload looks like)."""
    _ffmpeg(*_tone(seconds, 44100, 440), "-ac", "2", "-c:a", "libmp3lame", "-b:a", "128k",
            str(path))  # fmt: skip
    return path


def song_named_like_protocols(path: Path) -> Path:
    """A good song at `path`, whose name ffmpeg would read as protocols (concat:, pipe:)."""
    return good_song(path.with_name("plain.mp3"), 4.0).rename(path)


# -- lengths that lie ----------------------------------------------------------------------


def _mp3_frames(path: Path, seconds: float, bitrate: str, rate: int = 44100) -> bytes:
    """Bare mp3 frames: no Xing/Info header, no ID3 tag, so nothing tells the real length."""
    raw = path.with_name(path.name + f".{bitrate}.part")
    _ffmpeg(*_tone(seconds, rate), "-ac", "2", "-c:a", "libmp3lame", "-b:a", bitrate,
            "-write_xing", "0", "-id3v2_version", "0", "-f", "mp3", str(raw))  # fmt: skip
    data = raw.read_bytes()
    raw.unlink()
    return data


def vbr_mp3_without_xing(path: Path, size: int = 20_000_000) -> Path:
    """About 20 MB: 2 s at 320 kb/s, then 32 kb/s frames. ffprobe estimates the length from
    the first frames (about 8 minutes); it decodes to about 80."""
    head = _mp3_frames(path, 2, "320k")
    body = _mp3_frames(path, 60, "32k")
    path.write_bytes(head + body * ((size - len(head)) // len(body)))
    return path


_OGG_CRC = [0] * 256
for _i in range(256):
    _r = _i << 24
    for _ in range(8):
        _r = ((_r << 1) ^ 0x04C11DB7) if _r & 0x80000000 else (_r << 1)
    _OGG_CRC[_i] = _r & 0xFFFFFFFF


def _ogg_crc(page: bytes) -> int:
    crc = 0
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[((crc >> 24) & 0xFF) ^ byte]
    return crc


def _ogg_pages(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each Ogg page."""
    pages, at = [], 0
    while at < len(data):
        assert data[at : at + 4] == b"OggS"
        count = data[at + 26]
        end = at + 27 + count + sum(data[at + 27 : at + 27 + count])
        pages.append((at, end))
        at = end
    return pages


def forge_last_granule(data: bytes, granule: int) -> bytes:
    """The same Ogg stream with its last page's granule position set to `granule`."""
    start, end = _ogg_pages(data)[-1]
    page = bytearray(data[start:end])
    page[6:14] = struct.pack("<q", granule)
    page[22:26] = b"\0\0\0\0"
    page[22:26] = struct.pack("<I", _ogg_crc(bytes(page)))
    return data[:start] + bytes(page) + data[end:]


def ogg_forged_granule(path: Path, seconds: float = LIMIT_S + 60, claims: float = 60) -> Path:
    """Vorbis that holds 16 minutes but whose last granule position says one."""
    raw = path.with_name(path.name + ".part.ogg")
    _ffmpeg(*_tone(seconds), "-ac", "1", "-c:a", "libvorbis", "-q:a", "0", str(raw))
    path.write_bytes(forge_last_granule(raw.read_bytes(), int(claims * 8000)))
    raw.unlink()
    return path


def _wav_header(rate: int, channels: int, bits: int, data_size: int, riff_size: int,
                fmt: int = 1) -> bytes:  # fmt: skip
    block = channels * bits // 8
    return (
        b"RIFF" + struct.pack("<I", riff_size) + b"WAVE"
        + b"fmt " + struct.pack("<IHHIIHH", 16, fmt, channels, rate, rate * block, block, bits)
        + b"data" + struct.pack("<I", data_size)
    )  # fmt: skip


def wav_sizes_too_big(path: Path) -> Path:
    """3 s of audio whose RIFF and data sizes claim 2 GB."""
    pcm = (np.sin(np.arange(3 * 8000) * 0.26) * 40 + 128).astype(np.uint8).tobytes()
    path.write_bytes(_wav_header(8000, 1, 8, 0x7FFFFFF0, 0x7FFFFFF8) + pcm)
    return path


def wav_sizes_too_small(path: Path) -> Path:
    """16 minutes of audio behind sizes that claim 3 s: only the declared 3 s are read."""
    pcm = (np.sin(np.arange((LIMIT_S + 60) * 8000) * 0.26) * 40 + 128).astype(np.uint8)
    path.write_bytes(_wav_header(8000, 1, 8, 3 * 8000, 36 + 3 * 8000) + pcm.tobytes())
    return path


def wav_unknown_size_too_long(path: Path) -> Path:
    """A streamed wav (sizes 0xFFFFFFFF) of 16 minutes: its length comes from the file size."""
    pcm = np.full((LIMIT_S + 60) * 8000, 128, np.uint8).tobytes()
    path.write_bytes(_wav_header(8000, 1, 8, 0xFFFFFFFF, 0xFFFFFFFF) + pcm)
    return path


def wav_of_length(path: Path, seconds: float) -> Path:
    """A cheap wav (8 kHz mono, 8-bit) of exactly `seconds`."""
    _ffmpeg(*_tone(seconds), "-ac", "1", "-c:a", "pcm_u8", str(path))
    return path


def exactly_the_limit(path: Path) -> Path:
    return wav_of_length(path, LIMIT_S)


def one_second_over(path: Path) -> Path:
    return wav_of_length(path, LIMIT_S + 1)


# -- files that open other files -----------------------------------------------------------


def hls_playlist(path: Path, target: Path) -> Path:
    """An HLS playlist named like a song, pointing at a local file."""
    path.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:3.0,\n{target}\n#EXT-X-ENDLIST\n")
    return path


def ffconcat_script(path: Path, target: Path) -> Path:
    """An ffconcat script named like a song, opening a local file twice."""
    path.write_text(f"ffconcat version 1.0\nfile '{target}'\nfile '{target}'\n")
    return path


def sdp_session(path: Path) -> Path:
    """An SDP description: it would make ffmpeg listen for RTP on the network."""
    path.write_text(
        "v=0\no=- 0 0 IN IP4 127.0.0.1\ns=song\nc=IN IP4 127.0.0.1\nt=0 0\n"
        "m=audio 5004 RTP/AVP 96\na=rtpmap:96 L16/44100/2\n"
    )
    return path


def ffmetadata(path: Path) -> Path:
    """An ffmetadata text file (a demuxer with no audio that parses text)."""
    path.write_text(";FFMETADATA1\ntitle=song\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=9\n")
    return path


# -- not audio at all ----------------------------------------------------------------------


def plain_text(path: Path) -> Path:
    path.write_text("These are the lyrics of my song, la la la.\n" * 40)
    return path


def empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def one_byte(path: Path) -> Path:
    path.write_bytes(b"\xff")
    return path


def png_image(path: Path) -> Path:
    """A real 16x16 PNG (ffmpeg opens it as an image)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    rows = b"".join(b"\0" + bytes([x * 16, 0, 255 - x * 16]) * 16 for x in range(16))
    ihdr = struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )  # fmt: skip
    return path


def zip_of_a_song(path: Path) -> Path:
    """A zip (deflated) holding an mp3, renamed .mp3."""
    inner = good_song(path.with_name(path.name + ".inner.mp3"))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(inner, "song.mp3")
    inner.unlink()
    path.write_bytes(buffer.getvalue())
    return path


def video_without_audio(path: Path) -> Path:
    """A short video with no audio stream (mp4, mpeg4 video)."""
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=10:duration=2", "-c:v", "mpeg4",
            "-f", "mp4", str(path))  # fmt: skip
    return path


def disallowed_codec(path: Path) -> Path:
    """A wav whose audio is ADPCM, a codec outside the allowlist."""
    _ffmpeg(*_tone(3), "-ac", "1", "-c:a", "adpcm_ms", "-f", "wav", str(path))
    return path


# -- damaged -------------------------------------------------------------------------------


def truncated_mp3(path: Path) -> Path:
    """A 20 s mp3 (with its Xing header) cut in half mid-frame, as an interrupted download."""
    good_song(path, 20)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 77])
    return path


def garbage_tail(path: Path) -> Path:
    """A good mp3 followed by 200 kB of bytes that do not decode."""
    good_song(path, 5)
    noise = np.random.default_rng(7).integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    path.write_bytes(path.read_bytes() + noise)
    return path


def _float_wav(path: Path, audio: np.ndarray, rate: int = 44100) -> Path:
    import soundfile as sf

    sf.write(str(path), audio, rate, subtype="FLOAT", format="WAV")
    return path


def nan_samples(path: Path) -> Path:
    audio = np.sin(np.arange(3 * 44100) * 0.06).astype(np.float32) * 0.3
    audio[44100:44200] = np.nan
    return _float_wav(path, np.stack([audio, audio], axis=1))


def inf_samples(path: Path) -> Path:
    audio = np.sin(np.arange(3 * 44100) * 0.06).astype(np.float32) * 0.3
    audio[100_000] = np.inf
    return _float_wav(path, audio)


def huge_samples(path: Path) -> Path:
    """Finite float samples of 1e30: no NaN, but they overflow any gain or sum."""
    audio = np.sin(np.arange(3 * 44100) * 0.06).astype(np.float32) * 0.3
    audio[5000:5100] = 1e30
    return _float_wav(path, audio)


# -- absurd formats ------------------------------------------------------------------------


def rate_768khz(path: Path) -> Path:
    pcm = (np.sin(np.arange(768_000) * 0.01) * 8000).astype("<i2").tobytes()
    path.write_bytes(_wav_header(768_000, 1, 16, len(pcm), 36 + len(pcm)) + pcm)
    return path


def rate_2hz(path: Path) -> Path:
    """A wav declaring 2 samples per second: 100 samples would be 50 s of 'audio'."""
    pcm = (np.arange(100) * 300).astype("<i2").tobytes()
    path.write_bytes(_wav_header(2, 1, 16, len(pcm), 36 + len(pcm)) + pcm)
    return path


def channels_64(path: Path) -> Path:
    pcm = np.zeros((8000, 64), "<i2").tobytes()
    path.write_bytes(_wav_header(8000, 64, 16, len(pcm), 36 + len(pcm)) + pcm)
    return path


@dataclass(frozen=True)
class Accepted:
    seconds: float  # what the stored song is, decoded


Expect = str | Accepted


@dataclass(frozen=True)
class Hostile:
    name: str
    build: Callable[[Path], Path]
    expect: Expect
    filename: str = "song.mp3"


def corpus(elsewhere: Path) -> list[Hostile]:
    """Every hostile audio input; `elsewhere` is a real audio file outside the uploads that
    playlists and scripts point at."""
    return [
        Hostile("vbr-mp3-no-xing-20mb", vbr_mp3_without_xing, TOO_LONG),
        Hostile("ogg-forged-granule", ogg_forged_granule, TOO_LONG, "song.ogg"),
        Hostile("wav-sizes-too-big", wav_sizes_too_big, Accepted(3.0), "song.wav"),
        Hostile("wav-sizes-too-small", wav_sizes_too_small, Accepted(3.0), "song.wav"),
        Hostile(
            "wav-unknown-size-16min",
            wav_unknown_size_too_long,
            "over the 15-minute limit",
            "song.wav",
        ),  # fmt: skip
        Hostile("exactly-15-00", exactly_the_limit, Accepted(LIMIT_S), "song.wav"),
        Hostile("15-01", one_second_over, "15:01 long, over the 15-minute limit", "song.wav"),
        # A good song whose name reads as ffmpeg protocols: it must open as this file alone.
        Hostile("protocol-in-name", song_named_like_protocols, Accepted(4.0), "concat:a|pipe:0"),
        Hostile("hls-playlist", lambda p: hls_playlist(p, elsewhere), NOT_AUDIO),
        Hostile("ffconcat-script", lambda p: ffconcat_script(p, elsewhere), NOT_AUDIO),
        Hostile("sdp", sdp_session, NOT_AUDIO),
        Hostile("ffmetadata", ffmetadata, NOT_AUDIO),
        Hostile("plain-text", plain_text, NOT_AUDIO),
        Hostile("png", png_image, NOT_AUDIO),
        Hostile("zip", zip_of_a_song, NOT_AUDIO),
        Hostile("empty", empty, "The file is empty"),
        Hostile("one-byte", one_byte, NOT_AUDIO),
        Hostile("video-no-audio", video_without_audio, "has no audio in it", "clip.mp4"),
        Hostile("adpcm-codec", disallowed_codec, "format Encore does not read", "song.wav"),
        Hostile("truncated-mp3", truncated_mp3, DAMAGED),
        Hostile("garbage-tail", garbage_tail, DAMAGED),
        Hostile("nan-samples", nan_samples, "invalid samples", "song.wav"),
        Hostile("inf-samples", inf_samples, "invalid samples", "song.wav"),
        Hostile("huge-samples", huge_samples, "invalid samples", "song.wav"),
        Hostile("768-khz", rate_768khz, "sample rate (768 kHz)", "song.wav"),
        Hostile("2-hz", rate_2hz, "sample rate (2 Hz)", "song.wav"),
        Hostile("64-channels", channels_64, "64 channels", "song.wav"),
    ]
