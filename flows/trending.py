"""The `trending-drop` flow: covers of the chart's songs, posted to every subscribed chat.

One drop reads the chart (`flows.charts`), matches its entries to the public catalog, and for
each chat subscribed to "trending" (`/trending on`, `flows.users.subscribe`) submits one cover
per matched song, sung by the voice stored with the subscription. The flow only submits: the
covers run as their own jobs (in this process when embedded, on the workers in a cluster) and
post themselves to the chat (`flows.chat`). Stems are cached per song, so a drop to many
chats separates each song once.

Every cover's idempotency key is `trending:<drop date>:<platform>:<chat>:<song>`, the date in
`ENCORE_TRENDING_TIMEZONE`: a drop run twice on one day (a retried schedule, an operator's
`encore trending run`) makes no second cover. The jobs belong to the chat
(`trending:<platform>:<chat>`), not to the admin who subscribed, so drops never use up a
person's quota; all chats' drops share one budget instead, `ENCORE_TRENDING_COVERS_PER_DAY`
covers per rolling 24 hours, counted and checked atomically as each cover is made. Covers
past the budget are skipped (and reported), not failed.

Chart entries missing from the catalog are reported in the summary and the run's log, never
guessed, unless link sources are enabled (`ENCORE_LINK_SOURCES`): then the resolver
(`flows.resolver`) fetches them into the catalog first, and only what it cannot fetch is
reported. So are chats skipped because their voice is unset, deleted or no longer theirs.
"""

from __future__ import annotations

import logging
from datetime import date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from prefect import flow, get_run_logger
from sqlalchemy import select

from flows.catalog import label, list_songs
from flows.charts import drop_source, match, read_chart
from flows.chat import text
from flows.chat.delivery import chat_target
from flows.db import ChatSubscription, Job, Voice, session
from flows.errors import UserError
from flows.settings import Settings, get_settings
from flows.submit import submit_cover
from flows.users import DROPS, QuotaExceeded

KIND = "trending"
log = logging.getLogger("encore.trending")


def drop_date(s: Settings, moment: datetime | None = None) -> str:
    """Today in the drop's time zone, as YYYY-MM-DD."""
    try:
        zone = ZoneInfo(s.trending_timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise UserError(
            f"ENCORE_TRENDING_TIMEZONE {s.trending_timezone!r} is not a known time zone."
        ) from None
    return (moment or datetime.now(zone)).astimezone(zone).date().isoformat()


def chat_owner(platform: str, chat_id: str) -> str:
    """Who a drop's jobs belong to: the chat, not a person."""
    return f"{DROPS}{platform}:{chat_id}"


def idempotency_key(day: str, platform: str, chat_id: str, song_id: str) -> str:
    return f"{KIND}:{day}:{platform}:{chat_id}:{song_id}"


def _subscriptions(s: Settings) -> list[tuple[ChatSubscription, Voice | None]]:
    with session(s.database) as db:
        subs = list(
            db.scalars(
                select(ChatSubscription)
                .where(ChatSubscription.kind == KIND)
                .order_by(ChatSubscription.id)
            )
        )
        return [(sub, db.get(Voice, sub.voice_id) if sub.voice_id else None) for sub in subs]


def _private(sub: ChatSubscription) -> bool:
    """A subscription made in a private chat (before such chats were refused, or where the
    operator allowed them): a Telegram private chat's id is its user's, positive, while
    groups and channels have negative ids. (Discord DMs could never subscribe: the bot
    checks the server's Manage permission, which a DM has not.)"""
    return sub.platform == "telegram" and sub.chat_id.isdigit()


def _skip_reason(s: Settings, sub: ChatSubscription, voice: Voice | None) -> str | None:
    if _private(sub) and not s.trending_private_chats:
        return "a private chat: trending covers go to groups and channels"
    if not sub.voice_id:
        return text.DROP_NO_VOICE
    if voice is None:
        return text.DROP_VOICE_GONE
    if not voice.public and voice.owner != sub.created_by:
        return text.DROP_VOICE_PRIVATE
    return None


def _existing_keys(s: Settings, keys: list[str]) -> dict[str, str]:
    if not keys:
        return {}
    with session(s.database) as db:
        rows = db.execute(select(Job.idempotency_key, Job.id).where(Job.idempotency_key.in_(keys)))
        return {key: job_id for key, job_id in rows}


def run_drop(s: Settings, day: str | None = None) -> dict:
    """Read the chart, match it, submit the covers; returns what happened (plain data)."""
    day = day or drop_date(s)
    try:  # a malformed date would make keys that never repeat
        day = date.fromisoformat(day.strip()).isoformat()
    except (ValueError, AttributeError):
        raise UserError(f"The drop date must look like 2025-01-31, not {day!r}.") from None
    entries = read_chart(drop_source(s), s.chart_limit, s.deezer_api_url)
    matched, missing = match(entries, list_songs(s), s.chart_match_score)
    fetched = []
    if s.link_sources and missing:  # the resolver fetches what the catalog lacks
        from flows.resolver import resolve_missing

        fetched, missing = resolve_missing(s, missing)
        matched = sorted(matched + fetched, key=lambda m: m.entry.rank)
    summary: dict = {
        "date": day,
        "chart": len(entries),
        "matched": [m.summary() for m in matched],
        "fetched": [m.summary() for m in fetched],
        "missing": [m.summary() for m in missing],
        "submitted": [],
        "existing": [],
        "skipped": [],
        "errors": [],
    }
    for sub, voice in _subscriptions(s):
        where = {"platform": sub.platform, "chat_id": sub.chat_id}
        reason = _skip_reason(s, sub, voice)
        if reason is not None:
            summary["skipped"].append({**where, "reason": reason})
            continue
        if not matched:
            continue
        keys = {
            m.song.id: idempotency_key(day, sub.platform, sub.chat_id, m.song.id) for m in matched
        }
        before = _existing_keys(s, list(keys.values()))
        for m in matched:
            key = keys[m.song.id]
            head = text.drop_headline(m.entry.rank, label(m.song), voice.name)
            row = {**where, "rank": m.entry.rank, "song_id": m.song.id}
            try:
                job_id = submit_cover(
                    owner=chat_owner(sub.platform, sub.chat_id),
                    song_id=m.song.id,
                    voice_id=voice.id,
                    reply_to=chat_target(sub.platform, sub.chat_id, head),
                    idempotency_key=key,
                    s=s,
                    quota=True,
                )
            except QuotaExceeded as exc:  # the operator's budget is spent: the rest wait
                wait = round((exc.limit.retry_after_s or 0) / 60)
                reason = text.drop_budget_spent(exc.limit.limit, wait)
                summary["skipped"].append({**row, "reason": reason})
                continue
            except Exception as exc:  # one chat's failure must not cost the others their drop
                log.warning("drop %s: submitting %s failed", day, key, exc_info=True)
                summary["errors"].append({**row, "error": f"{type(exc).__name__}: {exc}"[:300]})
                continue
            summary["existing" if key in before else "submitted"].append({**row, "job_id": job_id})
    return summary


@flow(name="trending-drop", persist_result=False)
def trending_drop(day: str | None = None) -> dict:
    """One chart drop: submit covers of the chart's catalog songs to every subscribed chat.

    `day` (YYYY-MM-DD) names the drop; by default today in ENCORE_TRENDING_TIMEZONE. Returns
    the summary: matched entries, missing ones, submitted and already-submitted jobs, and
    skipped chats. Raises, after submitting all it can, if some covers could not be submitted.
    """
    logger = get_run_logger()
    summary = run_drop(get_settings(), day)
    for entry in summary["missing"]:
        logger.warning(
            "chart #%s %s - %s: %s", entry["rank"], entry["artist"], entry["title"], entry["reason"]
        )
    for chat in summary["skipped"]:
        logger.warning("skipped %s chat %s: %s", chat["platform"], chat["chat_id"], chat["reason"])
    logger.info(
        "drop %s: %d of %d chart songs in the catalog, %d covers submitted (%d already were)",
        summary["date"],
        len(summary["matched"]),
        summary["chart"],
        len(summary["submitted"]),
        len(summary["existing"]),
    )
    if summary["errors"]:  # the run fails where operators look; a rerun makes only these
        raise UserError(
            f"{len(summary['errors'])} covers of drop {summary['date']} could not be submitted "
            f"(first: {summary['errors'][0]['error']}); run the drop again to retry them."
        )
    return summary
