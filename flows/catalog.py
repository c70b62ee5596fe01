"""The song catalog: add audio files as songs, list them and find them by fuzzy title.

A song is stored once per owner and content hash: the same file added twice to the catalog
is one song, and a song a user sent is a row of their own, private to them, even when another
user (or the catalog) has the same bytes. The stems cache is keyed by the hash alone, so
identical files share their stems.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError

from flows import search
from flows.db import Song, session
from flows.errors import UserError
from flows.settings import Settings
from flows.storage import open_storage
from gpu_worker.audio import Limits, scan
from gpu_worker.hashing import file_sha256

MAX_TEXT = 200


def limits(s: Settings) -> Limits:
    return Limits(
        max_bytes=s.max_upload_bytes, max_seconds=s.max_song_seconds, max_channels=s.max_channels
    )


def clean_text(text: str, limit: int = MAX_TEXT) -> str:
    """Titles and queries as users type them, minus control characters and runaway length."""
    text = unicodedata.normalize("NFKC", text or "")
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C" or ch == " ")
    return re.sub(r"\s+", " ", text).strip()[:limit]


def _owned(owner: str | None):
    return Song.owner.is_(None) if owner is None else Song.owner == owner


def _existing(s: Settings, digest: str, owner: str | None) -> Song | None:
    with session(s.database) as db:
        query = select(Song).where(Song.content_hash == digest, _owned(owner))
        return db.scalars(query).first()


def song_key(digest: str, owner: str | None, suffix: str) -> str:
    """Where a song's audio lives: the catalog's by hash, a user's under their own name."""
    if owner is None:
        return f"songs/{digest}/source.{suffix}"
    folder = re.sub(r"[^\w.-]", "_", owner)[:60]
    return f"uploads/{folder}/{digest}/source.{suffix}"


def add_song(
    s: Settings, path: Path, title: str | None = None, artist: str = "", owner: str | None = None
) -> Song:
    """Validate `path` as audio within the limits and add it as `owner`'s song (None: the
    catalog's), or return the one they already have with the same content.

    The whole file is decoded once, in chunks and within the limits, so a song whose headers
    lie or whose samples are invalid is refused here, before anything is stored or queued."""
    path = Path(path)
    info = scan(path, limits(s))
    digest = file_sha256(path)
    existing = _existing(s, digest, None)  # a catalog song is everyone's already
    if existing is None and owner is not None:
        existing = _existing(s, digest, owner)
    if existing is not None:
        return existing
    suffix = re.sub(r"[^a-z0-9]", "", path.suffix.lower())[:8] or "audio"
    # The key depends only on the owner and the content, so two identical uploads at once
    # write the same object, and the one whose row loses the race below keeps nothing apart.
    uri = open_storage(s.storage).put(path, song_key(digest, owner, suffix))
    title = clean_text(title or path.stem.replace("_", " ")) or "Untitled"
    song = Song(
        title=title,
        artist=clean_text(artist),
        content_hash=digest,
        uri=uri,
        duration=info.duration,
        owner=owner,
    )
    try:
        with session(s.database) as db:
            db.add(song)
    except IntegrityError:  # the same file from the same owner, added a moment ago
        existing = _existing(s, digest, owner)
        if existing is None:
            raise
        return existing
    return song


def list_songs(s: Settings, owner: str | None = None) -> list[Song]:
    """The public catalog, plus the songs `owner` uploaded."""
    with session(s.database) as db:
        query = select(Song).where(or_(Song.owner.is_(None), Song.owner == owner))
        return list(db.scalars(query.order_by(Song.artist, Song.title)))


def get_song(s: Settings, song_id: str) -> Song | None:
    with session(s.database) as db:
        return db.get(Song, song_id)


def label(song: Song) -> str:
    return f"{song.artist} - {song.title}" if song.artist else song.title


def find_songs(
    s: Settings, query: str, owner: str | None = None, limit: int = 5, cutoff: float = 60
) -> list[tuple[Song, float]]:
    """Songs whose "artist - title" matches `query`, best first, with a 0-100 score.

    Accents and case do not matter, and an exact title scores 100 (see `flows.search`)."""
    query = clean_text(query)
    if not query:
        return []
    return search.rank(query, list_songs(s, owner), limit=limit, cutoff=cutoff)


def resolve_song(s: Settings, query: str, owner: str | None = None) -> Song:
    """One song for `query`: an id, a clear best fuzzy match, or a helpful refusal."""
    song = get_song(s, query.strip())
    if song is not None:
        return song
    matches = find_songs(s, query, owner)
    if not matches:
        raise UserError(
            f"No song in the catalog matches {clean_text(query)[:60]!r}; "
            "check the spelling or add it with `encore songs add`."
        )
    best, score = matches[0]
    if score >= search.EXACT and (len(matches) == 1 or matches[1][1] < search.EXACT):
        return best  # the exact title wins over songs that only contain its words
    if len(matches) > 1 and matches[1][1] >= score - 2 and label(matches[1][0]) != label(best):
        names = "; ".join(label(m) for m, _ in matches[:3])
        raise UserError(f"Several songs match: {names}. Be more specific.")
    return best
