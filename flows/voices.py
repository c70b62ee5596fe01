"""The voice registry: import RVC models safely, list, find and delete a user's voices.

Imports accept a `.pth` (with an optional `.index` beside it) or a `.zip` of both. Archives are
checked before anything is extracted (`gpu_worker.archives`: entry count from the end record,
encryption, overlapping data, duplicates, unsafe paths, links), hold model files only, and are
read entry by entry with limits on size and ratio; no entry is ever written by its own name.
Checkpoints load with `weights_only=True` (see `gpu_worker.convert`), so a pickle that wants to
run code is refused, not run; the model's config and tensors, and the index's header, are
checked against RVC's geometries (`gpu_worker.model_check`) before anything is stored.

Voice names are compared by `flows.names.name_key` (NFKC, casefolded, reduced to a Unicode
confusables skeleton), so names that only look alike ("Ａlice", Cyrillic "Аlice", "alice")
are one name; the database holds the key with a unique constraint per owner, so two imports
racing with lookalike names cannot both be stored.
"""

from __future__ import annotations

import re
import tempfile
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError

from flows.db import TERMINAL, Job, Voice, new_id, now, session
from flows.erase import erase
from flows.erase import prefix as erase_prefix
from flows.erase import uri as erase_uri
from flows.errors import ZIP_FIX, UserError
from flows.jobs import JobCancelled
from flows.names import name_key
from flows.settings import Settings
from flows.storage import open_storage
from gpu_worker.archives import zip_entries
from gpu_worker.convert import inspect_voice
from gpu_worker.model_check import FEATURE_DIMS, check_index

MAX_PTH_BYTES = 256 * 1024 * 1024  # the most parameters a voice may have (60 M) in fp32
MAX_INDEX_BYTES = 1024 * 1024 * 1024
MAX_ZIP_ENTRIES = 32
MAX_ZIP_RATIO = 200
ZIP_BOMB = "The zip expands far beyond its size; send the model files as they are."
NAME_RE = re.compile(r"^[\w][\w .'-]{0,39}$")


@dataclass(frozen=True)
class VoiceFiles:
    pth: Path
    index: Path | None


def valid_name(name: str) -> str:
    """The name as it will be stored (NFKC: fullwidth letters become plain ones), or refused."""
    name = unicodedata.normalize("NFKC", name or "").strip()
    if not NAME_RE.match(name) or any(unicodedata.category(ch)[0] == "C" for ch in name):
        raise UserError(
            "A voice name is 1-40 letters, digits, spaces, dots, dashes or apostrophes; "
            "pick another name."
        )
    return name


def _check_size(path: Path, limit: int, what: str) -> None:
    size = path.stat().st_size
    if size == 0:
        raise UserError(f"The {what} file is empty; send the model file again.")
    if size > limit:
        raise UserError(f"The {what} file is over {limit // (1024 * 1024)} MB; send a smaller one.")


NESTED = (".zip", ".7z", ".rar", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".zst")


def _tool_litter(name: str) -> bool:
    """Entries zip tools add on their own (macOS resource forks, Finder files): skipped."""
    return name.startswith("__MACOSX/") or PurePosixPath(name).name in (".DS_Store", "Thumbs.db")


def unpack_zip(archive: Path, into: Path) -> VoiceFiles:
    """Take one `.pth` and at most one `.index` out of `archive`, refusing hostile archives.

    `zip_entries` refuses forged entry counts, encryption, overlapping data, duplicate names,
    unsafe paths and links; here anything but a model file is refused, and what is extracted
    is checked against its declared size and the ratio to its compressed size as it streams.
    """
    zf, entries = zip_entries(archive, MAX_ZIP_ENTRIES)
    with zf:
        wanted: dict[str, zipfile.ZipInfo] = {}
        for entry in entries:
            if _tool_litter(entry.filename):
                continue
            base = PurePosixPath(entry.filename).name
            suffix = PurePosixPath(entry.filename).suffix.lower()
            if suffix in NESTED:
                raise UserError(
                    f"The zip holds another archive ({base[:40]}); "
                    "unzip it and send the .pth and .index."
                )
            if suffix not in (".pth", ".index"):
                raise UserError(
                    f"The zip holds {base[:40]!r}, which is not part of an RVC model; {ZIP_FIX}."
                )
            if suffix in wanted:
                raise UserError(f"The zip holds more than one {suffix} file; send one model.")
            wanted[suffix] = entry
        if ".pth" not in wanted:
            raise UserError("The zip has no .pth model in it; send an RVC model zip.")
        limits = {".pth": MAX_PTH_BYTES, ".index": MAX_INDEX_BYTES}
        out: dict[str, Path] = {}
        for suffix, entry in wanted.items():
            limit = limits[suffix]
            if entry.file_size > MAX_ZIP_RATIO * max(entry.compress_size, 1):
                raise UserError(ZIP_BOMB)
            if entry.file_size > limit:
                raise UserError(
                    f"The {suffix} file is over {limit // 2**20} MB; send a smaller one."
                )
            dst = into / f"model{suffix}"  # our name, never the archive's
            out[suffix] = dst
            _extract(zf, entry, dst)
    return VoiceFiles(out[".pth"], out.get(".index"))


def _extract(zf: zipfile.ZipFile, entry: zipfile.ZipInfo, dst: Path) -> None:
    """Stream one entry to `dst`, stopping as soon as it outgrows what its header declares."""
    written = 0
    try:
        with zf.open(entry) as src, open(dst, "wb") as fh:
            while block := src.read(1 << 20):
                written += len(block)
                if written > entry.file_size:  # the header lied about the size
                    raise UserError(ZIP_BOMB)
                fh.write(block)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError):
        raise UserError("This zip file is damaged; zip the model again and resend it.") from None
    if written != entry.file_size:
        raise UserError("This zip file is damaged; zip the model again and resend it.")


def gather(files: list[Path], into: Path) -> VoiceFiles:
    """Sort the user's files into one model and an optional index."""
    pth = index = None
    for f in files:
        suffix = f.suffix.lower()
        if suffix == ".zip":
            got = unpack_zip(f, into)
            pth, index = got.pth, got.index or index
        elif suffix == ".pth":
            pth = f
        elif suffix == ".index":
            index = f
        else:
            raise UserError(f"{f.name} is not an RVC model; send a .pth, .index or .zip file.")
    if pth is None:
        raise UserError("No .pth model was given; send the model's .pth file (or a .zip).")
    _check_size(pth, MAX_PTH_BYTES, "model")
    if index is not None:
        _check_size(index, MAX_INDEX_BYTES, "index")
    return VoiceFiles(pth, index)


def import_voice(
    s: Settings, owner: str, name: str, files: list[Path], job_id: str | None = None
) -> Voice:
    """Check and register an RVC model as `owner`'s voice `name` (for job `job_id`, if any:
    see `register_voice`)."""
    name = valid_name(name)
    with tempfile.TemporaryDirectory(dir=_tmp_root(s)) as tmp:
        found = gather([Path(f) for f in files], Path(tmp))
        return register_voice(
            s, owner, name, found.pth, found.index, source="imported", job_id=job_id
        )


def name_taken(name: str) -> str:
    """The refusal for a name the owner already uses."""
    return f"You already have a voice called {name!r}; pick another name or delete that one."


def register_voice(
    s: Settings,
    owner: str,
    name: str,
    pth: Path,
    index: Path | None,
    source: str,
    consent: str | None = None,
    job_id: str | None = None,
) -> Voice:
    """Store a checked model's files and record it as `owner`'s voice `name`.

    The checkpoint is inspected (safely) first, so nothing is stored for a bad model; if the
    row cannot be written (the name was taken meanwhile), the stored files are removed again.
    A job's voice is recorded only while the job is still open and still `owner`'s, checked
    under the job row's lock in the transaction that writes the voice: a job cancelled
    meanwhile, or whose user was forgotten (`/forget`), registers nothing and keeps no file.
    """
    info = inspect_voice(pth)
    if index is not None:
        check_index(index, FEATURE_DIMS[info.version])
    if get_voice(s, owner, name, include_public=False) is not None:
        raise UserError(name_taken(name))
    storage = open_storage(s.storage)
    voice_id = new_id()
    prefix = voice_prefix(owner, voice_id)  # by id: a clash never touches another's files
    pth_uri = storage.put(pth, f"{prefix}/model.pth")
    index_uri = storage.put(index, f"{prefix}/added.index") if index else None
    voice = Voice(
        id=voice_id,
        owner=owner,
        name=name,
        pth_uri=pth_uri,
        index_uri=index_uri,
        version=info.version,
        sample_rate=info.sample_rate,
        f0=info.f0,
        source=source,
        consent=consent,
        consent_at=now() if consent else None,
    )
    try:
        with session(s.database) as db:
            if job_id is not None:
                job = db.get(Job, job_id, with_for_update=True)
                if job is None or job.state in TERMINAL or job.owner != owner:
                    raise JobCancelled()
            db.add(voice)
    except IntegrityError:
        erase(s, [erase_prefix(prefix)])
        raise UserError(name_taken(name)) from None
    except JobCancelled:
        erase(s, [erase_prefix(prefix)])
        raise
    return voice


def _tmp_root(s: Settings) -> Path:
    s.work_dir.mkdir(parents=True, exist_ok=True)
    return s.work_dir


def voice_prefix(owner: str, voice_id: str) -> str:
    """Where a voice's files (model, index, preview) live in storage."""
    return f"voices/{_key(owner)}/{voice_id}"


def _key(text: str) -> str:
    return re.sub(r"[^\w.-]", "_", text)[:60] or "_"


def get_voice(s: Settings, owner: str, name: str, include_public: bool = True) -> Voice | None:
    """The owner's voice `name` (by `name_key`), else a public one of that name."""
    wanted = name_key(name)
    with session(s.database) as db:
        cond = Voice.owner == owner
        if include_public:
            cond = or_(cond, Voice.public.is_(True))
        found = list(db.scalars(select(Voice).where(cond, Voice.name_key == wanted)))
    found.sort(key=lambda v: v.owner != owner)  # the owner's own voice first
    return found[0] if found else None


def list_voices(s: Settings, owner: str) -> list[Voice]:
    with session(s.database) as db:
        query = select(Voice).where(or_(Voice.owner == owner, Voice.public.is_(True)))
        return list(db.scalars(query.order_by(Voice.name)))


def delete_voice(s: Settings, owner: str, name: str) -> bool:
    voice = get_voice(s, owner, name, include_public=False)
    if voice is None:
        return False
    with session(s.database) as db:
        db.delete(db.get(Voice, voice.id))
    stored = [erase_uri(u) for u in (voice.pth_uri, voice.index_uri, voice.preview_uri) if u]
    erase(s, [*stored, erase_prefix(voice_prefix(voice.owner, voice.id))])
    return True
