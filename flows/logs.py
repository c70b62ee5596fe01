"""Logging that never shows a secret: every Encore process calls `protect_logs()` first.

This module owns what may appear in a log line. The Telegram token sits in every Bot API
URL (`/bot<token>/sendMessage`), which httpx logs at INFO and httpcore at DEBUG; the Discord
token and the webhook secret travel in headers that libraries may log when debugging; an
interaction token is part of every follow-up URL. `protect_logs` installs, once per process,
a log record factory whose records redact all of them from their message, their formatted
traceback and their stack: the tokens read from the settings, and anything shaped like a bot
token or an interaction token in a URL, and the value of any `token` or `secret` field in a
logged payload. A record factory (rather than a filter on some
handler) keeps working whoever configures handlers later (Prefect's engine, `basicConfig`,
pytest) and covers every logger at every level, including records of libraries' loggers that
only propagate. It also quiets httpx and httpcore to WARNING unless `debug` asks for them.

It also owns where a command line tool's log lines go: `log_to_file` sends every record of
the process (Prefect's run and server lines, libraries' warnings) to a log file instead of
the terminal, which is left to the tool's progress bar and results. The records are the
redacted ones, so the file holds no token either.

The entry points call it: the `encore` CLI (`flows.cli`), the bots and `encore serve`
(`bots.cli`), the fork server of warm flow runs (`flows.warm`), `flows.api.prepare_process`,
and the chat API clients of `flows.chat` (so a flow run's cold-started process is
covered before its first request).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import threading
from pathlib import Path

REDACTED = "<redacted>"

# Shapes of secrets, whatever the settings say.
_PATTERNS = (
    # a Telegram bot token: /bot123456:AA.../method, /file/bot123456:AA.../path
    (re.compile(r"(bot)\d{3,}:[A-Za-z0-9_-]{6,}"), r"\1" + REDACTED),
    # a bare Telegram token anywhere (123456789:AAE...; 30+ characters after the colon)
    (re.compile(r"\b\d{6,}:[A-Za-z0-9_-]{30,}"), REDACTED),
    # a Discord interaction or webhook token in a URL: /webhooks/<app>/<token>
    (re.compile(r"(/webhooks/\d+/)[^/?#\s\"']+"), r"\1" + REDACTED),
    # /interactions/<id>/<token>/callback
    (re.compile(r"(/interactions/\d+/)[^/?#\s\"']+"), r"\1" + REDACTED),
    # a token in a logged payload (discord.py logs gateway events at DEBUG): 'token': '...'
    (re.compile(r"""(["'](?:\w+_)?(?:token|secret)["']\s*:\s*["'])[^"']+"""), r"\1" + REDACTED),
    # token=... in a query string or a form
    (re.compile(r"\b((?:\w+_)?(?:token|secret)=)[^&\s\"']+"), r"\1" + REDACTED),
    # an Authorization header's value: "Bot <token>", "Bearer <token>"
    (
        re.compile(r"""(authorization["']?\s*[:=]\s*["']?(?:Bot|Bearer) )[^\s"',}]+""", re.I),
        r"\1" + REDACTED,
    ),
)

_secrets: list[str] = []
_lock = threading.Lock()
_installed = False


def redact(text: str) -> str:
    """`text` with every known secret and every token-shaped part of a URL replaced."""
    if not text:
        return text
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactedRecord(logging.LogRecord):
    """A log record whose message, traceback text and stack are redacted when read."""

    def getMessage(self) -> str:  # noqa: N802 - logging's name
        return redact(super().getMessage())

    @property
    def exc_text(self):  # set by Formatter.format from the exception; stored redacted
        return self.__dict__.get("_exc_text")

    @exc_text.setter
    def exc_text(self, value) -> None:
        self.__dict__["_exc_text"] = redact(value) if isinstance(value, str) else value

    @property
    def stack_info(self):
        return self.__dict__.get("_stack_info")

    @stack_info.setter
    def stack_info(self, value) -> None:
        self.__dict__["_stack_info"] = redact(value) if isinstance(value, str) else value


def _factory(previous):
    def make(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if type(record) is logging.LogRecord:
            stack = record.__dict__.pop("stack_info", None)
            exc_text = record.__dict__.pop("exc_text", None)
            record.__class__ = RedactedRecord
            record.stack_info, record.exc_text = stack, exc_text
        elif not isinstance(record, RedactedRecord):  # someone else's record class
            record.msg, record.args = redact(record.getMessage()), ()
        return record

    make.encore_redacts = True  # type: ignore[attr-defined]
    return make


def add_secrets(*secrets: str | None) -> None:
    """Redact these strings too (a token read somewhere other than the settings)."""
    with _lock:
        for secret in secrets:
            if secret and len(secret) >= 6 and secret not in _secrets:
                _secrets.append(secret)
        _secrets.sort(key=len, reverse=True)  # a longer secret first, if one contains another


def protect_logs(settings=None, debug: bool = False) -> None:
    """Make every log line of this process free of tokens; quiet httpx unless `debug`.

    Safe to call more than once (later calls add the settings' secrets). `settings` defaults
    to `flows.settings.get_settings()`.
    """
    global _installed
    if settings is None:
        try:
            from flows.settings import get_settings

            settings = get_settings()
        except Exception:  # bad settings are reported by whoever reads them next
            settings = None
    if settings is not None:
        add_secrets(
            settings.telegram_token, settings.discord_token, settings.telegram_webhook_secret
        )
    with _lock:
        current = logging.getLogRecordFactory()
        if not getattr(current, "encore_redacts", False):
            logging.setLogRecordFactory(_factory(current))
        first = not _installed
        _installed = True
    if first and not debug:
        for name in ("httpx", "httpcore"):  # one line per request, URL (and token) included
            logger = logging.getLogger(name)
            if logger.level == logging.NOTSET or logger.level < logging.WARNING:
                logger.setLevel(logging.WARNING)


_file_handler: logging.Handler | None = None
_root_level: int | None = None  # the root logger's level before `log_to_file` changed it
LOG_FILE_BYTES = 5 * 1024 * 1024  # then the file rolls over, keeping two older ones
LOG_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"

# Prefect configures its logging when it is first imported: it leaves the root logger alone
# when the root already has a handler (the file), but keeps a console handler on a few loggers
# of its own. These quiet them and let its internal logger reach the root (and the file).
_PREFECT_QUIET = {
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL",
    "PREFECT_LOGGING_HANDLERS_DEBUG_LEVEL": "CRITICAL",
    "PREFECT_LOGGING_LOGGERS_PREFECT_INTERNAL_PROPAGATE": "1",
}


def log_to_file(path: Path, level: int = logging.INFO) -> None:
    """Send this process's log records of `level` and up to `path`, not to the terminal.

    Call it before Prefect is imported (the `encore` CLI does, unless `--debug`). Python's
    warnings become log records too. Calling it again moves the log to the new path.
    """
    global _file_handler, _root_level
    for name, value in _PREFECT_QUIET.items():  # (even if the file cannot be made)
        os.environ.setdefault(name, value)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=LOG_FILE_BYTES, backupCount=2, encoding="utf-8", delay=True
    )
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.setLevel(level)
    root = logging.getLogger()
    with _lock:
        previous, _file_handler = _file_handler, handler
    if previous is not None:
        root.removeHandler(previous)
        previous.close()
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > level:
        if _root_level is None:
            _root_level = root.level
        root.setLevel(level)
    logging.captureWarnings(True)


def log_file() -> Path | None:
    """The file this process logs to (`log_to_file`), or None when it logs to the terminal."""
    handler = _file_handler
    return Path(handler.baseFilename) if handler is not None else None


def close_log_file() -> None:
    """Stop logging to the file of `log_to_file`: the root logger is as it was before."""
    global _file_handler, _root_level
    with _lock:
        handler, _file_handler = _file_handler, None
        level, _root_level = _root_level, None
    if handler is not None:
        logging.getLogger().removeHandler(handler)
        handler.close()
        logging.captureWarnings(False)
    if level is not None:
        logging.getLogger().setLevel(level)
