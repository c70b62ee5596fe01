"""What the chat platforms' HTTP clients share: their error, the retry rules, the connection.

Each platform's client (`flows.chat.telegram.TelegramApi`, `flows.chat.discord.DiscordApi`)
makes one request per `call` and raises `BotApiError` when the platform says no; retrying is
the delivery's business (`flows.chat.delivery`), which knows what was sent. `quick=True`
retries a few times within seconds: for status edits, which are cosmetic and safe to repeat.
"""

from __future__ import annotations

import contextlib
import time

import httpx

from flows.logs import protect_logs
from flows.settings import Settings


class BotApiError(Exception):
    """The platform said no, or answered with something that is not its JSON."""

    def __init__(self, code: int, description: str, retry_after: float | None = None):
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        return self.code == 429 or self.code >= 500


class NoBotToken(Exception):
    pass


# The request reached the platform, but its answer did not reach us: it may have been done.
ANSWER_LOST = (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError)

QUICK_ATTEMPTS = 3  # tries of a status edit (an edit is safe to repeat)
QUICK_MAX_WAIT_S = 5.0  # a status edit waits no longer than this for a retry


def transient(exc: BaseException) -> bool:
    """Worth trying again later: the platform was busy, failing or unreachable."""
    if isinstance(exc, BotApiError):
        return exc.transient
    return isinstance(exc, httpx.TransportError)


def retry_after(exc: BaseException) -> float | None:
    """The wait the platform asked for, in its seconds, if it named one."""
    if isinstance(exc, BotApiError) and exc.retry_after:
        with contextlib.suppress(TypeError, ValueError):
            return max(0.0, float(exc.retry_after))
    return None


def quickly(request):
    """`request()`, retried a few times within seconds when it fails transiently: for status
    edits, which are cosmetic and safe to repeat. A long `retry_after` is not waited for."""
    for attempt in range(QUICK_ATTEMPTS):
        try:
            return request()
        except Exception as exc:
            wait = retry_after(exc) or 0.5 * 2**attempt
            if attempt + 1 == QUICK_ATTEMPTS or not transient(exc) or wait > QUICK_MAX_WAIT_S:
                raise
            time.sleep(wait)
    raise AssertionError("unreachable")


def http_client(s: Settings) -> httpx.Client:
    protect_logs(s)  # before the first request: the URLs hold the token
    return httpx.Client(timeout=httpx.Timeout(30.0, read=s.delivery_read_timeout_s, write=120.0))
