"""An HTTP proxy in front of moto's S3 server that the test steers: real faults, over HTTP.

- `failures`: the first N requests are answered 503 SlowDown (boto3 retries those);
- `fail_deletes(after=n)`: from the (n+1)th deletion on (`DELETE`, or the `POST ?delete` of a
  batch), S3 answers 503 until `heal()`: a bucket that starts failing mid-way;
- `hold(fragment)`: a `GET` whose path contains `fragment` is answered by moto, but the answer
  is held back until `release()`; `held` is set once one waits (a slow download, at a point
  the test controls).
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

SLOW_DOWN = b"<Error><Code>SlowDown</Code><Message>Reduce your rate.</Message></Error>"


class FaultyS3(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, target: str, failures: int = 0):
        self.target = urlparse(target)
        self.failures = failures
        self.requests = 0
        self.deletions = 0
        self.refused = 0  # deletions answered 503
        self._fail_after: int | None = None
        self._hold: str | None = None
        self.held = threading.Event()
        self._gate = threading.Event()
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def fail_deletes(self, after: int = 0) -> None:
        with self.lock:
            self.deletions, self._fail_after = 0, after

    def heal(self) -> None:
        with self.lock:
            self._fail_after = None

    def hold(self, fragment: str) -> None:
        self._gate.clear()
        self.held.clear()
        self._hold = fragment

    def release(self) -> None:
        self._hold = None
        self._gate.set()

    def close(self) -> None:
        self.release()
        self.shutdown()
        self.server_close()

    def _refuse(self, method: str, path: str) -> bool:
        with self.lock:
            self.requests += 1
            if self.requests <= self.failures:
                return True
            deleting = method == "DELETE" or (method == "POST" and "delete" in path)
            if not deleting:
                return False
            self.deletions += 1
            refuse = self._fail_after is not None and self.deletions > self._fail_after
            self.refused += refuse
            return refuse


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FaultyS3

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if self.server._refuse(self.command, self.path):
            self.send_response(503)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(SLOW_DOWN)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(SLOW_DOWN)
            return
        target = self.server.target
        upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
        upstream.request(self.command, self.path, body=body, headers=headers)
        resp = upstream.getresponse()
        data = resp.read()
        hold = self.server._hold
        if self.command == "GET" and hold and hold in self.path:
            self.server.held.set()
            self.server._gate.wait(300)
        self.send_response(resp.status)
        for key, value in resp.getheaders():
            if key.lower() in ("transfer-encoding", "connection"):
                continue
            if key.lower() == "content-length" and self.command != "HEAD":
                continue
            self.send_header(key, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        upstream.close()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

    def log_message(self, *args) -> None:
        pass
