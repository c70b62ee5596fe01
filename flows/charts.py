"""Chart providers: the current chart, read from `ENCORE_CHART_URL`, and its catalog matches.

This module owns two things:
- `read_chart`: fetch and parse the chart. The source is an http(s) URL (httpx with a short
  timeout; transient failures, meaning dropped connections, timeouts, 429 and 5xx, are
  retried with tenacity), a `file://` URL or a local path. Two shapes are understood: an Apple
  Music RSS feed (`{"feed": {"results": [{"name": ..., "artistName": ...}, ...]}}`) and a plain
  JSON list of `{"title": ..., "artist": ...}`. The first `chart_limit` entries are kept, ranked
  from 1. A chart that cannot be read or parsed raises `ChartError`, one sentence for an operator.
- `match`: pair chart entries with catalog songs by fuzzy title and artist (rapidfuzz). An
  entry is matched only when both agree above `chart_match_score` and no other song scores
  as well; every other entry is reported as missing, with the reason, and never guessed.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

import httpx
from rapidfuzz import fuzz, utils
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from flows.catalog import clean_text, label
from flows.db import Song
from flows.errors import UserError

log = logging.getLogger("encore.charts")

MAX_CHART_BYTES = 5 * 1024 * 1024  # a chart is a few KB; anything this big is not one
HTTP_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
ATTEMPTS = 3
RETRY_WAIT = wait_exponential(multiplier=0.5, min=0.5, max=4)
TIE_MARGIN = 2.0  # a second song within this many points of the best makes a match ambiguous


class ChartError(UserError):
    """The chart could not be read or is not a chart."""


@dataclass(frozen=True)
class ChartEntry:
    rank: int
    title: str
    artist: str

    def __str__(self) -> str:
        name = f"{self.artist} - {self.title}" if self.artist else self.title
        return f"#{self.rank} {name}"


@dataclass(frozen=True)
class Match:
    entry: ChartEntry
    song: Song
    score: float

    def summary(self) -> dict:
        return {
            **asdict(self.entry),
            "song_id": self.song.id,
            "song": label(self.song),
            "score": round(self.score, 1),
        }


@dataclass(frozen=True)
class Missing:
    entry: ChartEntry
    reason: str

    def summary(self) -> dict:
        return {**asdict(self.entry), "reason": self.reason}


# ------------------------------------------------------------------------------------------
# Reading the chart


def read_chart(url: str | None, limit: int = 10) -> list[ChartEntry]:
    """The chart at `url` (http(s), file:// or a path), its first `limit` entries."""
    if not url or not url.strip():
        raise ChartError("No chart is configured: set ENCORE_CHART_URL to a chart's URL or file.")
    url = url.strip()
    raw = _fetch(url) if urlparse(url).scheme in ("http", "https") else _read_file(url)
    return parse_chart(raw, limit, source=_shown(url))


def parse_chart(raw: bytes | str, limit: int = 10, source: str = "the chart") -> list[ChartEntry]:
    """Entries of a chart document in either shape; ChartError if it is neither."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ChartError(f"The chart at {source} is not JSON.") from None
    if isinstance(data, dict) and isinstance(data.get("feed"), dict):
        items, title_key, artist_key = data["feed"].get("results"), "name", "artistName"
    elif isinstance(data, list):
        items, title_key, artist_key = data, "title", "artist"
    else:
        items = None
    if not isinstance(items, list):
        raise ChartError(
            f"The chart at {source} is neither an Apple Music RSS feed "
            '({"feed": {"results": [...]}}) nor a list of {"title", "artist"}.'
        )
    entries: list[ChartEntry] = []
    bad = 0
    for position, item in enumerate(items, start=1):
        if len(entries) >= max(0, limit):
            break
        title = item.get(title_key) if isinstance(item, dict) else None
        artist = item.get(artist_key) if isinstance(item, dict) else None
        title = _text(title)
        if not title:
            bad += 1
            continue
        artist = _text(artist)
        entries.append(ChartEntry(rank=position, title=title, artist=artist))
    if items and not entries and limit > 0:
        raise ChartError(f"The chart at {source} has entries, but none with a {title_key!r}.")
    if bad:
        log.warning("%s: %d chart entries without a %r were left out", source, bad, title_key)
    return entries


def _text(value) -> str:
    """A chart's string as the catalog stores text: tabs and newlines are spaces."""
    return clean_text(re.sub(r"\s+", " ", value)) if isinstance(value, str) else ""


def _shown(url: str) -> str:
    """The URL without credentials or query (which may hold a key), for messages."""
    parts = urlparse(url)
    if parts.scheme in ("http", "https"):
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"
    return url


class _Transient(Exception):
    pass


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, httpx.TransportError | _Transient)


def _fetch(url: str) -> bytes:
    shown = _shown(url)
    try:
        with httpx.Client(timeout=HTTP_TIMEOUT, follow_redirects=True) as client:
            for attempt in Retrying(
                retry=retry_if_exception(_transient),
                wait=RETRY_WAIT,
                stop=stop_after_attempt(ATTEMPTS),
                reraise=True,
            ):
                with attempt:
                    return _get(client, url, shown)
    except httpx.TransportError as exc:
        raise ChartError(
            f"The chart at {shown} could not be reached ({type(exc).__name__}); "
            "check ENCORE_CHART_URL and the network."
        ) from None
    except _Transient as exc:
        raise ChartError(f"The chart at {shown} is unavailable: {exc}. Try again later.") from None
    raise AssertionError("unreachable")


def _get(client: httpx.Client, url: str, shown: str) -> bytes:
    headers = {"Accept": "application/json", "User-Agent": "encore-trending/1"}
    with client.stream("GET", url, headers=headers) as response:
        if response.status_code == 429 or response.status_code >= 500:
            raise _Transient(f"HTTP {response.status_code}")
        if response.status_code != 200:
            raise ChartError(
                f"The chart at {shown} answered HTTP {response.status_code}; "
                "check ENCORE_CHART_URL."
            )
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > MAX_CHART_BYTES:
                raise ChartError(f"The chart at {shown} is over {MAX_CHART_BYTES >> 20} MB.")
        return bytes(body)


def _read_file(url: str) -> bytes:
    parts = urlparse(url)
    if parts.scheme == "file":
        path = Path(url2pathname(unquote(parts.path)))
    elif parts.scheme and len(parts.scheme) > 1:  # one letter: a Windows drive
        raise ChartError(f"ENCORE_CHART_URL must be http(s)://, file:// or a path, not {url!r}.")
    else:
        path = Path(url).expanduser()
    try:
        if path.stat().st_size > MAX_CHART_BYTES:
            raise ChartError(f"The chart file {path} is over {MAX_CHART_BYTES >> 20} MB.")
        return path.read_bytes()
    except OSError as exc:
        raise ChartError(f"The chart file {path} cannot be read ({exc.strerror}).") from None


# ------------------------------------------------------------------------------------------
# Matching entries to the catalog

_FEATURING = re.compile(
    r"\s*[(\[]\s*(?:feat\.?|ft\.?|featuring|with)\s[^)\]]*[)\]]"  # "(feat. X)", "[with Y]"
    r"|\s+(?:feat\.?|ft\.?|featuring)\s.*$",  # "feat. X" to the end
    re.IGNORECASE,
)
_ARTIST_JOINERS = re.compile(r"\s*(?:,|&|\band\b|\bx\b|\+)\s*", re.IGNORECASE)


def _title(text: str) -> str:
    return utils.default_process(_FEATURING.sub("", text or ""))


def _artist(text: str) -> str:
    text = _FEATURING.sub("", text or "")
    return utils.default_process(_ARTIST_JOINERS.sub(" ", text))


def score(entry: ChartEntry, song: Song) -> float:
    """0-100: how surely `song` is the chart entry (title and artist must both agree)."""
    title = fuzz.token_sort_ratio(_title(entry.title), _title(song.title))
    if not entry.artist or not song.artist:
        return title  # nothing to check the title against; ties are caught by `match`
    artist = fuzz.token_set_ratio(_artist(entry.artist), _artist(song.artist))
    return min(title, artist)


def match(
    entries: list[ChartEntry], songs: list[Song], threshold: float = 88.0
) -> tuple[list[Match], list[Missing]]:
    """Chart entries with their catalog song, and those with none (or no clear one).

    A song matched by a higher-ranked entry is not matched again.
    """
    matched: list[Match] = []
    missing: list[Missing] = []
    taken: set[str] = set()
    for entry in entries:
        scored = sorted(((score(entry, song), song) for song in songs), key=lambda p: -p[0])
        good = [(value, song) for value, song in scored if value >= threshold]
        if not good:
            near = f" (closest: {label(scored[0][1])})" if scored and scored[0][0] >= 60 else ""
            missing.append(Missing(entry, f"not in the catalog{near}"))
            continue
        best_score, best = good[0]
        rivals = [
            song
            for value, song in good[1:]
            if value >= best_score - TIE_MARGIN and label(song).lower() != label(best).lower()
        ]
        if rivals:
            names = "; ".join(label(song) for song in [best, *rivals][:3])
            missing.append(Missing(entry, f"ambiguous: {names}"))
            continue
        if best.id in taken:
            missing.append(Missing(entry, f"same catalog song as a higher entry ({label(best)})"))
            continue
        taken.add(best.id)
        matched.append(Match(entry, best, best_score))
    return matched, missing
