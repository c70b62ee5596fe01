"""Chart providers: the current charts (Apple Music RSS, Deezer, a plain list) and their
catalog matches.

This module owns three things:
- `read_chart`: fetch and parse one chart. The source is an http(s) URL (httpx with a short
  timeout; transient failures, meaning dropped connections, timeouts, 429 and 5xx, are
  retried with tenacity), `deezer:chart/<id>` or `deezer:playlist/<id>` (Deezer's public API
  at `ENCORE_DEEZER_API_URL`), a `file://` URL or a local path. Three shapes are understood:
  an Apple Music RSS feed (`{"feed": {"results": [{"name": ..., "artistName": ...}]}}`), a
  Deezer page (`{"data": [{"title": ..., "artist": {"name": ...}, "link": ...}], "total": N,
  "next": URL}`; the next pages are followed, on the same host only, until the limit) and a
  plain JSON list of `{"title": ..., "artist": ...}`. Deezer answers its errors with HTTP 200
  and `{"error": {"type", "message", "code"}}`: its quota (code 4) and "service busy" (700)
  are retried like a 429, the others are refusals. The first `chart_limit` entries are kept,
  ranked from 1. A chart that cannot be read or parsed raises `ChartError`, one sentence for
  an operator.
- `configured` and `current`: the charts the operator named (`ENCORE_CHARTS`, a JSON object
  of name -> source; `ENCORE_CHART_URL` alone is the chart "top"), the default one, and each
  chart's entries, kept in memory for `ENCORE_CHART_CACHE_S` (a chart that cannot be read
  then falls back to the last copy read, when there is one).
- `match`: pair chart entries with catalog songs by fuzzy title and artist (rapidfuzz). An
  entry is matched only when both agree above `chart_match_score` and no other song scores
  as well; every other entry is reported as missing, with the reason, and never guessed.
  A missing entry keeps its artist, title and the provider's link, so that a resolver can
  fetch it later.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

import httpx
from rapidfuzz import fuzz
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from flows.catalog import clean_text, label
from flows.db import Song
from flows.errors import UserError
from flows.search import fold
from flows.settings import Settings

log = logging.getLogger("encore.charts")

MAX_CHART_BYTES = 5 * 1024 * 1024  # a chart is a few KB; anything this big is not one
HTTP_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
ATTEMPTS = 3
RETRY_WAIT = wait_exponential(multiplier=0.5, min=0.5, max=4)
MAX_PAGES = 10  # pages of a paged chart (Deezer's `next`) followed at most
DEEZER_API = "https://api.deezer.com"
DEEZER_TRANSIENT = (4, 700)  # Deezer's "Quota limit exceeded" and "service busy"
TIE_MARGIN = 2.0  # a second song within this many points of the best makes a match ambiguous


class ChartError(UserError):
    """The chart could not be read or is not a chart."""


@dataclass(frozen=True)
class ChartEntry:
    rank: int
    title: str
    artist: str
    link: str = field(default="", compare=False)  # the provider's page of the song, if any

    @property
    def key(self) -> str:
        """8 characters that name this entry's song (artist and title, folded): a button
        that names a chart rank can check the chart still has that song there."""
        text = f"{fold(self.artist)}|{fold(self.title)}".encode()
        return hashlib.blake2s(text, digest_size=6).hexdigest()[:8]

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


def read_chart(
    url: str | None, limit: int = 10, deezer_api_url: str = DEEZER_API
) -> list[ChartEntry]:
    """The chart at `url` (http(s), deezer:, file:// or a path), its first `limit` entries."""
    if not url or not url.strip():
        raise ChartError("No chart is configured: set ENCORE_CHART_URL to a chart's URL or file.")
    url = url.strip()
    scheme = urlparse(url).scheme
    if scheme == "deezer":
        url = deezer_url(url, limit, deezer_api_url)
        scheme = urlparse(url).scheme
    if scheme not in ("http", "https"):
        return parse_chart(_read_file(url), limit, source=_shown(url))
    entries: list[ChartEntry] = []
    shown = _shown(url)
    with httpx.Client(timeout=HTTP_TIMEOUT, follow_redirects=True) as client:
        for _page in range(MAX_PAGES):
            data = _load(_fetch(client, url), shown)
            if isinstance(data, dict) and "error" in data:
                raise ChartError(f"The chart at {shown} answered: {_deezer_error(data)}.")
            entries += parse_data(data, limit - len(entries), shown, first_rank=len(entries) + 1)
            following = data.get("next") if isinstance(data, dict) else None
            if len(entries) >= limit or not isinstance(following, str):
                break
            if urlparse(following).netloc != urlparse(url).netloc:
                log.warning("%s: not following a next page on another host", shown)
                break
            url = following
    return entries


def deezer_url(spec: str, limit: int, api: str = DEEZER_API) -> str:
    """`deezer:chart/0` or `deezer:playlist/<id>` as the API's tracks URL."""
    match = re.fullmatch(r"deezer:(?://)?(chart|playlist)/(\d{1,20})/?", spec.strip())
    if not match:
        raise ChartError(
            f"A Deezer chart is deezer:chart/<id> (0 is the worldwide chart) or "
            f"deezer:playlist/<id>, not {spec!r}."
        )
    kind, ident = match.groups()
    return f"{api.rstrip('/')}/{kind}/{ident}/tracks?limit={max(1, min(limit, 100))}"


def parse_chart(raw: bytes | str, limit: int = 10, source: str = "the chart") -> list[ChartEntry]:
    """Entries of a chart document in any of the shapes; ChartError if it is none."""
    data = _load(raw, source)
    if isinstance(data, dict) and "error" in data:
        raise ChartError(f"The chart at {source} answered: {_deezer_error(data)}.")
    return parse_data(data, limit, source)


def _load(raw: bytes | str, source: str):
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ChartError(f"The chart at {source} is not JSON.") from None


def _deezer_error(data: dict) -> str:
    error = data.get("error")
    if not isinstance(error, dict):
        return _text(str(error))[:200] or "an error"
    kind = _text(str(error.get("type") or "Error"))[:60]
    message = _text(str(error.get("message") or ""))[:200]
    return f"{kind} {error.get('code', '')}: {message}".strip(": ")


def _artist_name(value) -> str | None:
    return value.get("name") if isinstance(value, dict) else value


def parse_data(data, limit: int, source: str, first_rank: int = 1) -> list[ChartEntry]:
    """Entries of a parsed chart document (one page of it), ranked from `first_rank`."""
    if isinstance(data, dict) and isinstance(data.get("feed"), dict):
        items, title_key, artist_key, link_key = (
            data["feed"].get("results"),
            "name",
            "artistName",
            "url",
        )
    elif isinstance(data, dict) and isinstance(data.get("data"), list):
        items, title_key, artist_key, link_key = data["data"], "title", "artist", "link"
    elif isinstance(data, list):
        items, title_key, artist_key, link_key = data, "title", "artist", "link"
    else:
        items = None
    if not isinstance(items, list):
        raise ChartError(
            f"The chart at {source} is neither an Apple Music RSS feed "
            '({"feed": {"results": [...]}}), a Deezer chart ({"data": [...]}) nor a list of '
            '{"title", "artist"}.'
        )
    entries: list[ChartEntry] = []
    bad = 0
    for position, item in enumerate(items, start=first_rank):
        if len(entries) >= max(0, limit):
            break
        title = _text(item.get(title_key)) if isinstance(item, dict) else ""
        if not title:
            bad += 1
            continue
        artist = _text(_artist_name(item.get(artist_key)))
        link = _text(item.get(link_key)) if link_key else ""
        link = link if link.startswith(("https://", "http://")) else ""
        entries.append(ChartEntry(rank=position, title=title, artist=artist, link=link))
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


def _fetch(client: httpx.Client, url: str) -> bytes:
    shown = _shown(url)
    try:
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
            "check the chart's address and the network."
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
    _raise_if_busy(bytes(body))
    return bytes(body)


def _raise_if_busy(body: bytes) -> None:
    """Deezer's quota and busy errors arrive with HTTP 200: retried like a 429 or a 503."""
    if not body.lstrip().startswith(b'{"error"'):
        return
    try:
        error = json.loads(body).get("error")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return
    if isinstance(error, dict) and error.get("code") in DEEZER_TRANSIENT:
        raise _Transient(
            f"{error.get('type', 'Error')} {error.get('code')}: {error.get('message')}"
        )


def _read_file(url: str) -> bytes:
    parts = urlparse(url)
    if parts.scheme == "file":
        path = Path(url2pathname(unquote(parts.path)))
    elif parts.scheme and len(parts.scheme) > 1:  # one letter: a Windows drive
        raise ChartError(
            f"A chart is http(s)://, deezer:chart/<id>, file:// or a path, not {url!r}."
        )
    else:
        path = Path(url).expanduser()
    try:
        if path.stat().st_size > MAX_CHART_BYTES:
            raise ChartError(f"The chart file {path} is over {MAX_CHART_BYTES >> 20} MB.")
        return path.read_bytes()
    except OSError as exc:
        raise ChartError(f"The chart file {path} cannot be read ({exc.strerror}).") from None


# ------------------------------------------------------------------------------------------
# The configured charts

NAME_RE = re.compile(r"^[a-z0-9_-]{1,20}$")
_cache: dict[tuple[str, int, str], tuple[float, list[ChartEntry]]] = {}
_cache_lock = threading.Lock()


def configured(s: Settings) -> dict[str, str]:
    """The operator's charts, name -> source, in their order (`ENCORE_CHARTS`, else
    `ENCORE_CHART_URL` as "top"); names that could not go in a button are left out."""
    charts = {str(k).strip().lower(): str(v).strip() for k, v in (s.charts or {}).items()}
    if not charts and s.chart_url and s.chart_url.strip():
        charts = {"top": s.chart_url.strip()}
    bad = [name for name in charts if not NAME_RE.match(name)]
    for name in bad:
        log.warning("ENCORE_CHARTS: %r is not a chart name (1-20 of a-z, 0-9, _ and -)", name)
        charts.pop(name)
    return {name: source for name, source in charts.items() if source}


def default_name(s: Settings) -> str | None:
    """The chart shown when none is picked: `ENCORE_CHART_DEFAULT`, else the first one."""
    charts = configured(s)
    wanted = (s.chart_default or "").strip().lower()
    if wanted in charts:
        return wanted
    return next(iter(charts), None)


def drop_source(s: Settings) -> str | None:
    """The chart the trending drops read: `ENCORE_CHART_URL`, else the default chart."""
    if s.chart_url and s.chart_url.strip():
        return s.chart_url
    name = default_name(s)
    return configured(s)[name] if name else None


def current(s: Settings, name: str | None = None) -> tuple[str, list[ChartEntry]]:
    """The chart `name` (None: the default) and its entries, read at most once per
    `chart_cache_s`; when a read fails, the last copy read is used if there is one."""
    charts = configured(s)
    if not charts:
        raise ChartError("No chart is configured: set ENCORE_CHARTS or ENCORE_CHART_URL.")
    name = (name or default_name(s) or "").strip().lower()
    if name not in charts:
        raise ChartError(
            f"There is no chart called {name[:30]!r}; the charts: {', '.join(charts)}."
        )
    key = (charts[name], s.chart_limit, s.deezer_api_url)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None and time.monotonic() - cached[0] < s.chart_cache_s:
        return name, cached[1]
    try:
        entries = read_chart(charts[name], s.chart_limit, s.deezer_api_url)
    except ChartError:
        if cached is None:
            raise
        log.warning("chart %s could not be read; using the copy from before", name, exc_info=True)
        return name, cached[1]
    with _cache_lock:
        _cache[key] = (time.monotonic(), entries)
    return name, entries


def forget_cached() -> None:
    """Drop every chart kept in memory (the next `current` reads them again)."""
    with _cache_lock:
        _cache.clear()


# ------------------------------------------------------------------------------------------
# Matching entries to the catalog

_FEATURING = re.compile(
    r"\s*[(\[]\s*(?:feat\.?|ft\.?|featuring|with)\s[^)\]]*[)\]]"  # "(feat. X)", "[with Y]"
    r"|\s+(?:feat\.?|ft\.?|featuring)\s.*$",  # "feat. X" to the end
    re.IGNORECASE,
)
_ARTIST_JOINERS = re.compile(r"\s*(?:,|&|\band\b|\bx\b|\+)\s*", re.IGNORECASE)


def _title(text: str) -> str:
    return fold(_FEATURING.sub("", text or ""))


def _artist(text: str) -> str:
    text = _FEATURING.sub("", text or "")
    return fold(_ARTIST_JOINERS.sub(" ", text))


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
