"""Checks the handlers share: who may own things, and the quotas before a job is planned.

Placeholder senders (a group's anonymous admins, posts sent as a channel) are not a person:
they may not own anything, so every handler that acts on a person's own data is `personal`
and answers them with one sentence asking for a personal account.
"""

from __future__ import annotations

import functools

from bots.inputs import visible
from bots.messages import Reply, Who
from flows import api

GENERIC_ERROR = "Something went wrong on our side; please try again in a minute."
PLACEHOLDER = (
    "I can't tell who you are when you post as the group or a channel, so send this from "
    "your personal account (admins: turn off “Remain anonymous”)."
)


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


def personal(handler):
    """For handlers `(s, who, ...)` that act on a person's own data: placeholder senders get
    one sentence, and the handler does not run."""

    @functools.wraps(handler)
    def wrapper(s, who: Who, *args, **kwargs):
        if who.placeholder:
            return Reply(PLACEHOLDER)
        return handler(s, who, *args, **kwargs)

    return wrapper


def limit_text(limit: api.Limit, s) -> str:
    if limit.rule == "active":
        return (
            f"You already have {plural(limit.limit, 'job')} on the way; wait for one to finish, "
            "or /cancel the latest."
        )
    wait = api.format_wait(limit.retry_after_s or 1)
    if limit.rule == "rate":
        window = api.format_duration(s.rate_limit_window_s)
        return (
            f"That is a lot at once: at most {plural(limit.limit, 'new job')} per {window}. "
            f"Try again in {wait}."
        )
    if limit.kind in ("train", "import"):
        return (
            f"You have used today's {plural(limit.limit, 'voice training')} and imports. "
            f"Try again in {wait}."
        )
    return (
        f"You have used today's {limit.limit} covers, karaoke tracks and stems. "
        f"Try again in {wait}."
    )


def quota_refusal(s, who: Who, kind: str) -> Reply | None:
    """The reply refusing a `kind` job to `who` now (a quota is full), or None."""
    limit = api.check_quota(who.owner, kind, s=s)
    return Reply(limit_text(limit, s)) if limit is not None else None


def quoted(text: str, limit: int = 60) -> str:
    text = visible(text)
    return f"“{text[:limit]}{'…' if len(text) > limit else ''}”"


def too_big(size: int, limit: int) -> str:
    return (
        f"That file is {size / 2**20:.0f} MB, and Telegram lets bots download at most "
        f"{limit // 2**20} MB; send a shorter or more compressed file."
    )
