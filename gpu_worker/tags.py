"""Tags: what a result is, written into the file so players and machines can read it.

This module owns the metadata of every file Encore hands out, written with mutagen:

- ID3v2.4 for mp3 (and an `id3 ` chunk in wav), Vorbis comments for ogg/opus and flac,
  MP4 atoms for m4a; wav also gets a RIFF INFO list (title, artist, album, comment), which
  is what most wav readers (ffprobe among them) show;
- the fields: title, artist, album, a comment saying what the file is, and Encore's own
  fields: the source song (`SOURCE_SONG`), the voice (`VOICE`), that it is AI-generated
  (`AI_GENERATED`, with the IPTC digital source type in `DIGITAL_SOURCE_TYPE`), and the
  software (`ENCODED_BY`);
- reading them back (`read_tags`), whatever the format, as one plain dict.

Tags change no audio sample. Write them before a Content Credentials manifest
(`gpu_worker.provenance`): the manifest's hash covers them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gpu_worker.audio import run_ffmpeg
from gpu_worker.errors import EngineError

SOFTWARE = "Encore"
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
FORMATS = ("mp3", "wav", "m4a", "ogg", "opus", "flac")

# Encore's own fields, under the same name in every format.
SOURCE_SONG = "SOURCE_SONG"
VOICE = "VOICE"
AI_GENERATED = "AI_GENERATED"
DIGITAL_SOURCE_TYPE = "DIGITAL_SOURCE_TYPE"
ENCODED_BY = "ENCODED_BY"
CUSTOM = (SOURCE_SONG, VOICE, AI_GENERATED, DIGITAL_SOURCE_TYPE, ENCODED_BY)

_MP4_STANDARD = {"title": "\xa9nam", "artist": "\xa9ART", "album": "\xa9alb", "comment": "\xa9cmt"}
_MP4_FREEFORM = "----:com.apple.iTunes:"


@dataclass(frozen=True)
class ResultTags:
    """What one result is. `voice` is None for results no voice sang (karaoke, stems)."""

    title: str
    artist: str
    album: str
    source_song: str
    voice: str | None = None
    ai_generated: bool = True

    @property
    def comment(self) -> str:
        if self.voice:
            return (
                f"AI-generated cover of {self.source_song}, sung by the AI voice {self.voice}; "
                f"made with {SOFTWARE}."
            )
        return f"Made from {self.source_song} with an AI source separation model ({SOFTWARE})."

    def fields(self) -> dict[str, str]:
        """Every tag, by its name (standard lowercase names, Encore's in capitals)."""
        out = {
            "title": self.title,
            "artist": self.artist,
            "album": self.album,
            "comment": self.comment,
            SOURCE_SONG: self.source_song,
            AI_GENERATED: "yes" if self.ai_generated else "no",
            ENCODED_BY: SOFTWARE,
        }
        if self.voice:
            out[VOICE] = self.voice
        if self.ai_generated:
            out[DIGITAL_SOURCE_TYPE] = TRAINED_ALGORITHMIC_MEDIA
        return out


def cover_tags(title: str, artist: str, voice: str) -> ResultTags:
    """A cover's tags: the song's title; "<artist> (<voice> AI cover)"; "<voice> AI covers"."""
    title = title.strip() or "Untitled"
    artist = artist.strip()
    source = f"{artist} - {title}" if artist else title
    shown = f"{artist} ({voice} AI cover)" if artist else f"{voice} AI cover"
    return ResultTags(title, shown, f"{voice} AI covers", source, voice, True)


def fmt_of(path: Path) -> str:
    fmt = Path(path).suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise EngineError("tag_format", fmt=fmt)
    return fmt


# ---------------------------------------------------------------------------------------------
# Writing


def _id3_frames(fields: dict[str, str]) -> list:
    from mutagen.id3 import COMM, TALB, TENC, TIT2, TPE1, TXXX

    frames = [
        TIT2(encoding=3, text=fields["title"]),
        TPE1(encoding=3, text=fields["artist"]),
        TALB(encoding=3, text=fields["album"]),
        COMM(encoding=3, lang="eng", desc="", text=fields["comment"]),
        TENC(encoding=3, text=fields[ENCODED_BY]),
    ]
    frames += [TXXX(encoding=3, desc=k, text=fields[k]) for k in CUSTOM if k in fields]
    return frames


def _write_id3(path: Path, fields: dict[str, str]) -> None:
    from mutagen.id3 import ID3

    tags = ID3()  # replaces whatever tag the encoder wrote
    for frame in _id3_frames(fields):
        tags.add(frame)
    tags.save(str(path), v2_version=4)


def _write_wav(path: Path, fields: dict[str, str]) -> None:
    from mutagen.wave import WAVE

    # RIFF INFO (what wav readers show) through ffmpeg's own muxer: a stream copy, so every
    # sample stays as it was.
    tmp = path.with_name(f".tags-{path.name}")
    info = [
        arg
        for key in ("title", "artist", "album", "comment")
        for arg in ("-metadata", f"{key}={fields[key]}")
    ]
    try:
        run_ffmpeg(
            ["-i", str(path), "-map", "0:a:0", "-c", "copy", "-map_metadata", "-1",
             "-fflags", "+bitexact", *info, "-f", "wav", str(tmp)],
            "Tagging",
        )  # fmt: skip
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    wave = WAVE(str(path))  # and every field in an `id3 ` chunk
    if wave.tags is None:
        wave.add_tags()
    for frame in _id3_frames(fields):
        wave.tags.add(frame)
    wave.save()


def _write_vorbis(path: Path, fmt: str, fields: dict[str, str]) -> None:
    import mutagen

    audio = mutagen.File(str(path))  # FLAC, Ogg Opus or Ogg Vorbis, by content
    if audio is None:
        raise EngineError("tag_unreadable", fmt=fmt)
    if audio.tags is None:
        audio.add_tags()
    encoder = audio.tags.get("ENCODER")  # the encoder's own line is kept
    audio.tags.clear()
    for key, value in fields.items():
        audio.tags[key.upper()] = [value]
    if encoder:
        audio.tags["ENCODER"] = encoder
    audio.save()


def _write_mp4(path: Path, fields: dict[str, str]) -> None:
    from mutagen.mp4 import MP4, MP4FreeForm

    audio = MP4(str(path))
    if audio.tags is None:
        audio.add_tags()
    for key, atom in _MP4_STANDARD.items():
        audio.tags[atom] = [fields[key]]
    audio.tags["\xa9too"] = [fields[ENCODED_BY]]
    for key in CUSTOM:
        if key in fields:
            audio.tags[_MP4_FREEFORM + key] = [MP4FreeForm(fields[key].encode("utf-8"))]
    audio.save()


def write_tags(path: Path, tags: ResultTags) -> Path:
    """Write `tags` into the file at `path` (its format from the suffix); returns `path`."""
    path = Path(path)
    fmt = fmt_of(path)
    fields = tags.fields()
    try:
        if fmt == "mp3":
            _write_id3(path, fields)
        elif fmt == "wav":
            _write_wav(path, fields)
        elif fmt == "m4a":
            _write_mp4(path, fields)
        else:
            _write_vorbis(path, fmt, fields)
    except EngineError:
        raise
    except Exception as exc:  # mutagen's errors: the file is not what its suffix says
        raise EngineError("tag_failed", fmt=fmt, error=type(exc).__name__) from exc
    return path


# ---------------------------------------------------------------------------------------------
# Reading


def _first(value) -> str:
    if isinstance(value, list | tuple):
        value = value[0] if value else ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _read_id3(tags) -> dict[str, str]:
    out: dict[str, str] = {}
    names = {"TIT2": "title", "TPE1": "artist", "TALB": "album"}
    for frame in tags.values():
        fid = frame.FrameID
        if fid in names:
            out[names[fid]] = _first(frame.text)
        elif fid == "COMM" and not frame.desc:
            out["comment"] = _first(frame.text)
        elif fid == "TXXX":
            out[frame.desc] = _first(frame.text)
    return out


def read_tags(path: Path) -> dict[str, str]:
    """The file's tags as {name: text} (standard names lowercase, Encore's in capitals);
    empty when it has none or its format carries none."""
    import mutagen

    path = Path(path)
    try:
        audio = mutagen.File(str(path))
    except Exception:  # a damaged or foreign file: no tags to read
        return {}
    if audio is None or audio.tags is None:
        return {}
    from mutagen.id3 import ID3
    from mutagen.mp4 import MP4Tags

    tags = audio.tags
    if isinstance(tags, ID3):
        return _read_id3(tags)
    if isinstance(tags, MP4Tags):
        out = {key: _first(tags[atom]) for key, atom in _MP4_STANDARD.items() if atom in tags}
        for key, value in tags.items():
            if key.startswith(_MP4_FREEFORM):
                out[key[len(_MP4_FREEFORM) :]] = _first(value)
        return out
    out = {}
    for key, value in tags.items():  # Vorbis comments
        upper = key.upper()
        name = upper.lower() if upper in ("TITLE", "ARTIST", "ALBUM", "COMMENT") else upper
        out[name] = _first(value)
    return out
