"""Songs and model files from a link: fetched with yt-dlp (or a plain streaming GET), guarded.

This module owns everything between a link a user (or the chart resolver) gives and a local
file that the usual checks take over from:

- The switch: nothing is fetched unless the operator set `ENCORE_LINK_SOURCES` (off by
  default; the operator answers for the rights to what is fetched).
- The network guard (`Guard`): only http and https, and no address on a private, loopback,
  link-local or otherwise non-public network unless `ENCORE_LINK_ALLOW_PRIVATE` names it. It is
  applied where the socket connects: every address a host name resolves to is checked, and the
  connection goes to those checked addresses (no second lookup to rebind), on the first request
  and on every redirect hop, for yt-dlp's page reads and downloads and for plain GETs alike
  (both go through yt-dlp's request layer with one guarded handler, and nothing else).
- Songs (`fetch_song`): audio only, no playlists (`noplaylist`, and a playlist result is
  refused), the duration and size checked from the metadata before anything is downloaded and
  the size again while it downloads, a socket timeout and an overall deadline, one download per
  link at a time (a lock file keyed by the link), and a cache: a link fetched before is not
  fetched again (`Song.source_url`), and the same bytes from another link are the same song
  (`flows.catalog.add_song`, by content hash). The audio then goes through
  `flows.catalog.add_song`, i.e. `gpu_worker.audio.scan`: the decoded length, channels and
  validity, whatever the site said.
- Model files (`fetch_model`): a `.zip`, `.pth` or `.index` by a direct link (a streaming GET
  with a byte cap) or from a page yt-dlp understands; the import job then runs the upload
  checks (`flows.voices.import_voice`: `gpu_worker.archives`, `gpu_worker.model_check`).

Who owns a fetched song: the user who gave the link, like a file they sent (private to them,
gone with `/forget`, nobody learns what others fetched); the chart resolver's songs are the
catalog's (`owner=None`), since a chart is public. Both are marked fetched by `source_url`.

Every refusal is a `LinkError`, one sentence for the user (`flows.chat.links_text`).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import ipaddress
import logging
import re
import socket
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from sqlalchemy import select

from flows.catalog import add_song, clean_text
from flows.chat import links_text as text
from flows.db import Song, session
from flows.errors import UserError
from flows.settings import Settings

log = logging.getLogger("encore.links")

MAX_URL = 2000
CHUNK = 1 << 16
MODEL_SUFFIXES = (".zip", ".pth", ".index")
LOCK_WAIT_S = 0.2  # how often a waiting fetch looks at the lock again
Progress = Callable[[float], None]


class LinkError(UserError):
    """A link that cannot be fetched; the message is one sentence for the user."""


class _Refused(OSError):
    """Raised inside the network layer; the sentence waits on the `Fetch`."""


# ------------------------------------------------------------------------------------------
# Links as users send them


def is_link(text_: str) -> bool:
    """Whether a command's argument is a link rather than a song name."""
    return bool(re.match(r"(?i)^\s*https?://\S+\s*$", text_ or ""))


def normalize(url: str) -> str:
    """The link as it is cached and locked: http(s) only, no fragment, host in lower case."""
    url = (url or "").strip()
    if len(url.encode()) > MAX_URL:
        raise LinkError(text.TOO_LONG_LINK)
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise LinkError(text.NOT_A_LINK)
    netloc = parts.netloc.rsplit("@", 1)
    host = netloc[-1].lower()
    netloc = f"{netloc[0]}@{host}" if len(netloc) == 2 else host
    return urlunsplit((parts.scheme.lower(), netloc, parts.path or "/", parts.query, ""))


def require_enabled(s: Settings, model: bool = False) -> None:
    if not s.link_sources:
        raise LinkError(text.DISABLED_MODEL if model else text.DISABLED)


# ------------------------------------------------------------------------------------------
# The network guard


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, Teredo), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A globally routable unicast address (not private, loopback, link-local, shared,
    reserved, multicast or unspecified), including any IPv4 address inside an IPv6 one."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None and not public(inner):
            return False
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True)
class _Allowed:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    port: int | None

    def covers(self, ip, port: int) -> bool:
        return ip in self.network and (self.port is None or self.port == port)


def _allowance(entry: str) -> _Allowed:
    raw = entry.strip()
    port = None
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)", raw) or re.fullmatch(
        r"([0-9.]+):(\d+)", raw
    )
    if match:
        raw, port = match.group(1), int(match.group(2))
    try:
        return _Allowed(ipaddress.ip_network(raw, strict=False), port)
    except ValueError:
        raise UserError(
            f"ENCORE_LINK_ALLOW_PRIVATE entry {entry!r} is not a network, an address or an "
            "address:port; fix the setting."
        ) from None


class Guard:
    """Which addresses a fetch may connect to; remembers why it refused one."""

    def __init__(self, s: Settings, deadline: float):
        self.allowed = [_allowance(e) for e in s.link_allow_private]
        self.deadline = deadline
        self.refused: str | None = None

    def permits(self, ip, port: int) -> bool:
        return public(ip) or any(a.covers(ip, port) for a in self.allowed)

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            self.refused = self.refused or text.DEADLINE
            raise _Refused(text.DEADLINE)

    def addresses(self, host: str, port: int) -> list[tuple]:
        """Every address `host` resolves to, all of them checked: one refused refuses all."""
        self.check_time()
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        if not infos:
            raise OSError(f"no address for {host}")
        for info in infos:
            ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])
            if not self.permits(ip, port):
                log.info("refused %s (%s) port %s: not a public address", host, ip, port)
                self.refused = text.PRIVATE
                raise _Refused(text.PRIVATE)
        return infos

    def connect(self, address, timeout=socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None):
        """`socket.create_connection`, to checked addresses only."""
        host, port = address
        error: OSError | None = None
        for family, kind, proto, _name, sockaddr in self.addresses(host, port):
            sock = socket.socket(family, kind, proto)
            try:
                if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                    sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        raise error or OSError(f"could not connect to {host}")


# yt-dlp's request layer, with one handler whose every connection goes through a Guard.

_handler_class = None
_handler_lock = threading.Lock()


def _guarded_handler_class():
    """A yt-dlp request handler (its urllib one) for http and https only, connecting through
    the guard given to it; built on first use, so that importing this module is cheap."""
    global _handler_class
    with _handler_lock:
        if _handler_class is not None:
            return _handler_class
        from yt_dlp.networking import _urllib as ytu

        class GuardedHTTPHandler(ytu.HTTPHandler):
            def __init__(self, guard: Guard, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self._guard = guard

            def _factory(self, base, req):
                cls = self._make_conn_class(base, req)
                guard, source = self._guard, self._source_address

                def make(*args, **kwargs):
                    conn = cls(*args, **kwargs)
                    conn._create_connection = guard.connect
                    if source is not None:
                        conn.source_address = (source, 0)
                    return conn

                return make

            def http_open(self, req):
                return self.do_open(self._factory(ytu.http.client.HTTPConnection, req), req)

            def https_open(self, req):
                return self.do_open(
                    self._factory(ytu.http.client.HTTPSConnection, req), req, context=self._context
                )

        class GuardedRH(ytu.UrllibRH):
            _SUPPORTED_URL_SCHEMES = ("http", "https")
            _SUPPORTED_PROXY_SCHEMES = ()
            RH_NAME = "encore-guarded"

            def __init__(self, *, guard: Guard, **kwargs):
                kwargs.pop("enable_file_urls", None)
                super().__init__(**kwargs)
                self._guard = guard

            def _create_instance(self, proxies, cookiejar, legacy_ssl_support=None):
                opener = urllib.request.OpenerDirector()
                for handler in (
                    GuardedHTTPHandler(
                        self._guard,
                        debuglevel=0,
                        context=self._make_sslcontext(legacy_ssl_support=legacy_ssl_support),
                        source_address=self.source_address,
                    ),
                    ytu.HTTPCookieProcessor(cookiejar),
                    ytu.UnknownHandler(),
                    ytu.HTTPDefaultErrorHandler(),
                    ytu.HTTPErrorProcessor(),
                    ytu.RedirectHandler(),
                ):
                    opener.add_handler(handler)
                opener.addheaders = []
                return opener

        _handler_class = GuardedRH
        return GuardedRH


def _ydl_class():
    from yt_dlp import YoutubeDL

    class GuardedYDL(YoutubeDL):
        """yt-dlp whose every request (pages, downloads, redirects) uses the guarded handler."""

        guard: Guard

        @functools.cached_property
        def _request_director(self):
            handler = functools.partial(_guarded_handler_class(), guard=self.guard)
            return self.build_request_director([handler])

    return GuardedYDL


class _Quiet:
    def debug(self, msg):
        pass

    def info(self, msg):
        pass

    def warning(self, msg):
        log.debug("yt-dlp: %s", msg)

    def error(self, msg):
        log.info("yt-dlp: %s", msg)


@dataclass
class Fetch:
    """One fetch's limits and what stopped it."""

    s: Settings
    max_bytes: int
    progress: Progress | None = None
    started: float = field(default_factory=time.monotonic)
    stop: BaseException | None = None  # an exception from a hook (a cancelled job)
    refused: str | None = None

    def __post_init__(self) -> None:
        self.guard = Guard(self.s, self.started + self.s.link_deadline_s)

    @property
    def reason(self) -> str | None:
        return self.refused or self.guard.refused

    def ydl(self, extra: dict | None = None):
        opts = {
            "quiet": True,
            "no_warnings": True,
            "noprogress": True,
            "logger": _Quiet(),
            "noplaylist": True,
            "extract_flat": "in_playlist",
            "socket_timeout": self.s.link_socket_timeout_s,
            "retries": 0,
            "extractor_retries": 0,
            "fragment_retries": 0,
            "file_access_retries": 0,
            "proxy": "",
            "cachedir": False,
            "check_formats": False,
            "restrictfilenames": True,
            "overwrites": True,
            "continuedl": False,
            "progress_hooks": [self._hook],
            **(extra or {}),
        }
        ydl = _ydl_class()(opts)
        ydl.guard = self.guard
        return ydl

    def _hook(self, status: dict) -> None:
        try:
            self.guard.check_time()
            done = status.get("downloaded_bytes") or 0
            total = status.get("total_bytes") or status.get("total_bytes_estimate")
            if max(done, status.get("total_bytes") or 0) > self.max_bytes:  # said, or arrived
                self.refused = text.too_big(max(done, total or 0), self.max_bytes)
                raise _Refused(self.refused)
            if self.progress is not None and total:
                self.progress(min(1.0, done / total))
        except _Refused:
            raise
        except BaseException as exc:  # (a cancelled job): stop the download, raise it after
            self.stop = exc
            raise

    def explain(self, exc: BaseException) -> LinkError:
        """The one sentence for whatever stopped yt-dlp."""
        if self.stop is not None:
            raise self.stop
        if self.reason:
            return LinkError(self.reason)
        message = str(exc)
        code = re.search(r"HTTP Error (\d{3})", message)
        if code:
            return LinkError(text.http_status(int(code.group(1))))
        lowered = message.lower()
        if "timed out" in lowered or "timeout" in lowered:
            return LinkError(text.TIMEOUT)
        if "larger than max-filesize" in lowered or "max-filesize" in lowered:
            return LinkError(text.too_big(self.max_bytes + 1, self.max_bytes))
        if (
            "unsupported url" in lowered
            or "no video formats" in lowered
            or "no formats" in lowered
            or "requested format is not available" in lowered
            or "unable to extract" in lowered
        ):
            return LinkError(text.NO_AUDIO)
        if any(
            w in lowered for w in ("name or service", "connection refused", "unreachable", "errno")
        ):
            return LinkError(text.UNREACHABLE)
        log.warning("fetch failed: %s", message[:500])
        return LinkError(text.FAILED)


# ------------------------------------------------------------------------------------------
# One download per link at a time


@contextlib.contextmanager
def link_lock(s: Settings, url: str, deadline: float) -> Iterator[None]:
    """Held while `url` is fetched: a lock file keyed by the link, so threads and processes
    sharing the data folder fetch one link once (the second finds the first's result)."""
    folder = s.data_dir / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"link-{hashlib.sha256(url.encode()).hexdigest()[:32]}.lock"
    with open(path, "a+") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LinkError(text.BUSY) from None
                time.sleep(LOCK_WAIT_S)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------------
# Songs


def cached_song(s: Settings, url: str, owner: str | None) -> Song | None:
    """A song fetched from `url` before that `owner` may use: the catalog's, or their own."""
    with session(s.database) as db:
        rows = db.scalars(select(Song).where(Song.source_url == url)).all()
    for song in sorted(rows, key=lambda r: r.owner is not None):
        if song.owner is None or song.owner == owner:
            return song
    return None


def _mark_fetched(s: Settings, song: Song, url: str) -> Song:
    with session(s.database) as db:
        row = db.get(Song, song.id)
        if row is not None and row.source_url is None:
            row.source_url = url
        return row or song


def _check_metadata(s: Settings, info: dict, fetch: Fetch) -> None:
    if info.get("_type") in ("playlist", "multi_video") or info.get("entries") is not None:
        raise LinkError(text.PLAYLIST)
    if info.get("is_live") or info.get("live_status") in ("is_live", "is_upcoming"):
        raise LinkError(text.LIVE)
    duration = info.get("duration")
    if isinstance(duration, int | float) and duration > s.max_song_seconds:
        raise LinkError(text.too_long(duration, s.max_song_seconds))
    size = info.get("filesize") or info.get("filesize_approx")
    if isinstance(size, int | float) and size > fetch.max_bytes:
        raise LinkError(text.too_big(int(size), fetch.max_bytes))


def _title_artist(info: dict, url: str) -> tuple[str, str]:
    title = info.get("track") or info.get("title") or ""
    artist = info.get("artist") or info.get("creator") or ""
    title = re.sub(r"\s+\(1\)$", "", title)  # a page's one media element, numbered
    if not title:
        title = Path(unquote(urlsplit(url).path)).stem.replace("_", " ")
    if not artist and " - " in title:
        artist, title = (part.strip() for part in title.split(" - ", 1))
    return clean_text(title) or "Untitled", clean_text(artist)


def download_song(s: Settings, url: str, dest: Path, progress: Progress | None = None) -> tuple:
    """Download the audio behind `url` (a page yt-dlp reads, or a search such as
    "ytsearch1:...") into `dest`; (local file, title, artist). Checks the metadata first."""
    from yt_dlp.utils import DownloadError

    fetch = Fetch(s, s.link_song_bytes, progress)
    opts = {
        # Only what yt-dlp downloads itself, through the guarded handler: plain http(s), and
        # HLS/DASH by its native downloaders (never ffmpeg or another program fetching URLs).
        "format": "/".join(
            f"{kind}[protocol{p}]"
            for p in ("^=http", "=m3u8_native")
            for kind in ("bestaudio", "best")
        ),
        "hls_prefer_native": True,
        "fixup": "never",
        "outtmpl": {"default": str(dest / "source.%(ext)s")},
        "paths": {"home": str(dest), "temp": str(dest)},
    }
    with fetch.ydl(opts) as ydl:
        try:
            info = ydl.extract_info(url, download=False)
            if info is None:
                raise LinkError(text.NO_AUDIO)
            if info.get("_type") in ("playlist", "multi_video") and str(url).startswith(
                "ytsearch"
            ):  # a search: its one result is the song
                entries = [e for e in info.get("entries") or [] if e]
                if not entries:
                    raise LinkError(text.NOT_FOUND)
                info = ydl.extract_info(entries[0].get("url") or entries[0]["id"], download=False)
            _check_metadata(s, info, fetch)
            info = ydl.process_ie_result(info, download=True)
        except LinkError:
            raise
        except (DownloadError, _Refused, OSError) as exc:
            raise fetch.explain(exc) from None
        except Exception as exc:  # yt-dlp's own bugs or a site's surprises: one sentence
            if fetch.stop is not None:
                raise fetch.stop from None
            log.warning("yt-dlp failed on %s", url, exc_info=True)
            raise fetch.explain(exc) from None
    if fetch.reason:
        raise LinkError(fetch.reason)
    files = [p for p in dest.iterdir() if p.is_file() and not p.name.endswith((".part", ".ytdl"))]
    if not files:
        raise LinkError(text.NO_AUDIO)
    local = max(files, key=lambda p: p.stat().st_size)
    if local.stat().st_size > fetch.max_bytes:  # what arrived, whatever was announced
        raise LinkError(text.too_big(local.stat().st_size, fetch.max_bytes))
    title, artist = _title_artist(info or {}, url)
    return local, title, artist


def fetch_song(
    s: Settings,
    url: str,
    owner: str | None,
    progress: Progress | None = None,
    title: str | None = None,
    artist: str | None = None,
    source: str | None = None,
) -> Song:
    """The song behind `url`, as `owner`'s song (None: the catalog's), fetched once.

    `source` is what is downloaded when it differs from the link the song is cached under
    (the resolver's search); `title` and `artist` replace what the site says."""
    require_enabled(s)
    url = normalize(url) if source is None else url
    found = cached_song(s, url, owner)
    if found is not None:
        return found
    deadline = time.monotonic() + s.link_deadline_s
    with link_lock(s, url, deadline):
        found = cached_song(s, url, owner)  # fetched while this one waited
        if found is not None:
            return found
        s.work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=s.work_dir, prefix="link-") as tmp:
            local, got_title, got_artist = download_song(s, source or url, Path(tmp), progress)
            song = add_song(
                s,
                local,
                title=title or got_title,
                artist=got_artist if artist is None else artist,
                owner=owner,
            )
        return _mark_fetched(s, song, url)


# ------------------------------------------------------------------------------------------
# Model files


def _filename(url: str, headers) -> str:
    disposition = headers.get("Content-Disposition") or ""
    match = re.search(r"filename\*=(?:UTF-8'')?([^;]+)|filename=\"?([^\";]+)", disposition)
    name = ""
    if match:
        name = unquote((match.group(1) or match.group(2) or "").strip().strip('"'))
    name = Path(name).name or Path(unquote(urlsplit(url).path)).name
    return re.sub(r"[^\w.-]", "_", name)[-80:] or "model"


def fetch_model(s: Settings, url: str, dest: Path, progress: Progress | None = None) -> Path:
    """Download the `.zip`, `.pth` or `.index` at `url` into `dest` (a direct link, streamed
    with a byte cap; or a page that yt-dlp finds such a file on). Returns the local file."""
    require_enabled(s, model=True)
    url = normalize(url)
    fetch = Fetch(s, s.link_model_bytes, progress)
    with link_lock(s, url, fetch.guard.deadline), fetch.ydl() as ydl:
        try:
            return _stream(ydl, fetch, url, dest) or _from_page(ydl, fetch, url, dest)
        except LinkError:
            raise
        except Exception as exc:
            if fetch.stop is not None:
                raise fetch.stop from None
            raise fetch.explain(exc) from None


def _stream(ydl, fetch: Fetch, url: str, dest: Path) -> Path | None:
    """A plain GET through the guarded handler; None when the answer is a web page."""
    from yt_dlp.networking import Request

    with ydl.urlopen(Request(url)) as response:
        headers = response.headers
        kind = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        name = _filename(response.url or url, headers)
        if kind.startswith("text/html") and not name.lower().endswith(MODEL_SUFFIXES):
            return None
        if not name.lower().endswith(MODEL_SUFFIXES):
            raise LinkError(text.NOT_A_MODEL)
        declared = int(headers.get("Content-Length") or 0)
        if declared > fetch.max_bytes:
            raise LinkError(text.too_big(declared, fetch.max_bytes))
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / name
        done = 0
        with open(target, "wb") as out:
            while True:
                fetch.guard.check_time()
                block = response.read(CHUNK)
                if not block:
                    break
                done += len(block)
                if done > fetch.max_bytes:
                    raise LinkError(text.too_big(done, fetch.max_bytes))
                out.write(block)
                if fetch.progress is not None and declared:
                    fetch.progress(done / declared)
        return target


def _from_page(ydl, fetch: Fetch, url: str, dest: Path) -> Path:
    """A page: what yt-dlp finds on it, if that is a model file."""
    try:
        info = ydl.extract_info(url, download=False)
    except Exception:
        if fetch.reason:
            raise
        raise LinkError(text.NOT_A_MODEL) from None
    found = (info or {}).get("url") or ""
    if (info or {}).get("_type") or not Path(urlsplit(found).path).suffix.lower().endswith(
        MODEL_SUFFIXES
    ):
        raise LinkError(text.NOT_A_MODEL)
    return _stream(ydl, fetch, found, dest) or _raise(text.NOT_A_MODEL)


def _raise(message: str):
    raise LinkError(message)


def model_name(url: str) -> str:
    """A voice name suggested by the link's file name ("" when it has none)."""
    stem = Path(unquote(urlsplit(url).path)).stem
    return re.sub(r"[^\w .'-]", " ", stem).strip()[:40]
