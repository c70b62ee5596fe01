"""Reading untrusted zip files: a user's model archive, and a `.pth` (torch saves a zip).

`zip_entries` reads the entry count and directory size from the end-of-central-directory
record before `zipfile` lists them (so a forged directory cannot make it parse a huge one),
then refuses what no honest archive holds: encrypted entries, entries whose data overlap (the
overlapping-file zip bomb), duplicate names, absolute or `..` paths, symlinks and compression
methods other than stored/deflated. It returns the entries; extracting is the caller's (see
`flows.voices`). Every refusal is a `BadVoice` whose reason starts with `archive_`, with the
voice file's `name` when the archive is a `.pth` (none for a user's zip).
"""

from __future__ import annotations

import stat
import struct
import zipfile
from pathlib import Path, PurePosixPath

from gpu_worker.errors import BadVoice

EOCD = b"PK\x05\x06"
ZIP64_LOCATOR = b"PK\x06\x07"
ZIP64_EOCD = b"PK\x06\x06"
LOCAL_HEADER = b"PK\x03\x04"
MAX_COMMENT = 0xFFFF
MAX_RECORD = 1024
"""Bytes one central-directory record may average (46 fixed, then its name and extras)."""


def _refused(case: str, name: str | None, **facts: object) -> BadVoice:
    return BadVoice(f"archive_{case}", name=name, **facts)


def declared_directory(path: Path, name: str | None = None) -> tuple[int, int]:
    """The entry count and central-directory size that the end-of-central-directory record (or
    its zip64 twin) declares: `zipfile` reads that many bytes and parses every entry in them."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        tail_len = min(size, 22 + MAX_COMMENT)
        fh.seek(size - tail_len)
        tail = fh.read(tail_len)
        at = tail.rfind(EOCD)
        if at < 0 or len(tail) - at < 22:
            raise _refused("damaged", name)
        count, cd_size = struct.unpack("<HI", tail[at + 10 : at + 16])
        if count != 0xFFFF and cd_size != 0xFFFFFFFF:
            return count, cd_size
        locator = tail[at - 20 : at] if at >= 20 else b""
        if not locator.startswith(ZIP64_LOCATOR):
            raise _refused("damaged", name)
        offset = struct.unpack("<Q", locator[8:16])[0]
        if offset > size - 56:
            raise _refused("damaged", name)
        fh.seek(offset)
        record = fh.read(56)
        if not record.startswith(ZIP64_EOCD):
            raise _refused("damaged", name)
        return struct.unpack("<QQ", record[32:48])


def _unsafe_name(name: str) -> bool:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return (
        name.startswith(("/", "\\"))
        or ".." in parts
        or ":" in name
        or any(ord(c) < 32 for c in name)
    )


def zip_entries(
    path: Path, max_entries: int, name: str | None = None
) -> tuple[zipfile.ZipFile, list[zipfile.ZipInfo]]:
    """Open `path` as a zip and return it with its file entries, refusing hostile archives.

    `name` is the voice file's, when the zip is a `.pth`. The caller closes the ZipFile."""
    path = Path(path)
    size = path.stat().st_size
    count, cd_size = declared_directory(path, name)
    if count > max_entries or cd_size > max_entries * MAX_RECORD:
        raise _refused("too_many_files", name, most=max_entries)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError):
        raise _refused("damaged", name) from None
    try:
        infos = zf.infolist()
        if len(infos) > max_entries:
            raise _refused("too_many_files", name, most=max_entries)
        seen: set[str] = set()
        for info in infos:
            if info.flag_bits & 0x1:
                raise _refused("encrypted", name)
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise _refused("compression", name)
            if _unsafe_name(info.filename):
                raise _refused("unsafe_paths", name)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise _refused("symlink", name)
            key = info.filename.replace("\\", "/").rstrip("/").lower()
            if key in seen:
                raise _refused("duplicate", name, entry=_short(info.filename))
            seen.add(key)
        _check_spans(zf, infos, size, name)
        return zf, [i for i in infos if not i.is_dir()]
    except BaseException:
        zf.close()
        raise


def _check_spans(
    zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], size: int, name: str | None
) -> None:
    """Each entry's local header and data must lie before the next entry's and the central
    directory: no two entries may share bytes."""
    fp = zf.fp
    assert fp is not None
    end_of_data = zf.start_dir
    spans = sorted(infos, key=lambda i: i.header_offset)
    for n, info in enumerate(spans):
        fp.seek(info.header_offset)
        header = fp.read(30)
        if len(header) != 30 or not header.startswith(LOCAL_HEADER):
            raise _refused("damaged", name)
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        end = info.header_offset + 30 + name_len + extra_len + info.compress_size
        limit = spans[n + 1].header_offset if n + 1 < len(spans) else end_of_data
        if end > limit or end > size:
            raise _refused("overlap", name)


def _short(name: str) -> str:
    name = name.rsplit("/", 1)[-1]
    return name if len(name) <= 40 else name[:37] + "..."
