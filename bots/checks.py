"""Checks the handlers share: who may own things, and the quotas before a job is planned.

Placeholder senders (a group's anonymous admins, posts sent as a channel) are not a person:
they may not own anything, so every handler that acts on a person's own data is `personal`
and answers them with one sentence asking for a personal account.
"""

from __future__ import annotations

import functools

from bots.messages import Reply, Who
from flows import api
from flows.chat import text as said


def personal(handler):
    """For handlers `(s, who, ...)` that act on a person's own data: placeholder senders get
    one sentence, and the handler does not run."""

    @functools.wraps(handler)
    def wrapper(s, who: Who, *args, **kwargs):
        if who.placeholder:
            return Reply(said.PLACEHOLDER_SENDER)
        return handler(s, who, *args, **kwargs)

    return wrapper


def limit_text(limit: api.Limit, s) -> str:
    """The sentence for a full quota."""
    return said.quota_full(
        limit.rule,
        limit.kind,
        limit.limit,
        wait=api.format_wait(limit.retry_after_s or 1),
        window=api.format_duration(s.rate_limit_window_s),
    )


def quota_refusal(s, who: Who, kind: str) -> Reply | None:
    """The reply refusing a `kind` job to `who` now (a quota is full), or None."""
    limit = api.check_quota(who.owner, kind, s=s)
    return Reply(limit_text(limit, s)) if limit is not None else None
