"""A real HTTP server (http.server in a thread) serving media pages and files for link tests.

Routes are a dict of path -> handler; each handler gets the request and answers it. Helpers
build the usual answers: a file with its type and length, an HTML page, a redirect, a server
that stalls before answering. yt-dlp's generic extractor reads these pages as it reads a
site's: the page title, `<audio>`/`<video>` elements, JSON-LD.
"""

from __future__ import annotations

import contextlib
import html
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

Route = Callable[[BaseHTTPRequestHandler], None]


class MediaServer:
    def __init__(self, routes: dict[str, Route] | None = None):
        self.routes: dict[str, Route] = dict(routes or {})
        self.hits: list[str] = []
        self.release = threading.Event()  # set at close: stalled answers give up
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _route(self):
                path = urlsplit(self.path).path
                server.hits.append(self.path)
                route = server.routes.get(path)
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                route(self)

            do_GET = _route

            def do_HEAD(self):
                self._head_only = True
                self._route()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> MediaServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def query(req: BaseHTTPRequestHandler) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(req.path).query).items()}


def send(req: BaseHTTPRequestHandler, body: bytes, kind: str, status: int = 200, **headers):
    req.send_response(status)
    req.send_header("Content-Type", kind)
    req.send_header("Content-Length", str(len(body)))
    for key, value in headers.items():
        req.send_header(key.replace("_", "-"), value)
    req.end_headers()
    if not getattr(req, "_head_only", False):
        req.wfile.write(body)


def file(path: Path, kind: str, **headers) -> Route:
    """A file, streamed from disk with its length."""

    def route(req):
        size = path.stat().st_size
        req.send_response(200)
        req.send_header("Content-Type", kind)
        req.send_header("Content-Length", str(size))
        for key, value in headers.items():
            req.send_header(key.replace("_", "-"), value)
        req.end_headers()
        if getattr(req, "_head_only", False):
            return
        with open(path, "rb") as fh, contextlib.suppress(ConnectionError):
            while block := fh.read(1 << 20):
                req.wfile.write(block)

    return route


def page(title: str, body: str = "", head: str = "") -> Route:
    doc = (
        f"<!DOCTYPE html><html><head><title>{html.escape(title)}</title>{head}</head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    ).encode()
    return lambda req: send(req, doc, "text/html; charset=utf-8")


def audio_page(title: str, *sources: str, head: str = "") -> Route:
    """A page with one `<audio>` element per source."""
    tags = "".join(f'<audio controls src="{html.escape(src)}"></audio>' for src in sources)
    return page(title, tags, head)


def json_ld(data: dict) -> str:
    return f'<script type="application/ld+json">{json.dumps(data)}</script>'


def redirect(to: str | Callable[[BaseHTTPRequestHandler], str], status: int = 302) -> Route:
    def route(req):
        target = to(req) if callable(to) else to
        send(req, b"", "text/plain", status, Location=target)

    return route


def stall(server: MediaServer, seconds: float = 30.0) -> Route:
    """Accepts the request, then says nothing for `seconds` (or until the server closes)."""

    def route(req):
        server.release.wait(seconds)

    return route
