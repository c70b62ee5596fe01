"""Chat users: default voice, upload sessions, chat subscriptions, quotas, and forgetting.

This module owns what the bots keep about a person beyond their voices and jobs:
- the user row (`users`): display name and the default voice;
- upload sessions (`upload_sessions`, `upload_files`): the samples a user is sending for
  `/train`, or the model files for `/import`, staged in storage and kept across bot restarts
  until they are submitted, cancelled or forgotten;
- chat subscriptions (`chat_subscriptions`), such as a chat's trending drops;
- quotas and rate limits: checked and counted atomically with each job's creation, in a usage
  ledger that names nobody and outlives `/forget` (a double-submitted command is one job, so
  it is counted once);
- `forget_user`, which removes everything a user has: voices, jobs and their files, reply
  targets, uploaded songs, staged samples, training folders and the user row; files that
  cannot be deleted now are left to the sweeper of `flows.erase`, never skipped.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from flows import erase
from flows.db import (
    TERMINAL,
    ChatSubscription,
    Job,
    ReplyTarget,
    Song,
    StemSet,
    UploadFile,
    UploadSession,
    Usage,
    User,
    Voice,
    engine_for,
    new_id,
    now,
    session,
)
from flows.errors import UserError
from flows.jobs import (
    FORGOTTEN,
    OPEN,
    cancel_job,
    failed_on_our_side,
    insert_job,
    job_id_by_key,
    job_prefixes,
)
from flows.settings import Settings
from flows.steps.train import owner_checkpoints, owner_folders
from flows.storage import open_storage, upload_key
from flows.voices import get_voice, voice_prefix

log = logging.getLogger("encore.users")

# ------------------------------------------------------------------------------------------
# Users and their default voice


def ensure_user(s: Settings, owner: str, display_name: str = "") -> None:
    """Create the user row on first contact; keep the display name current."""
    display_name = (display_name or "")[:200]
    with session(s.database) as db:
        user = db.get(User, owner)
        if user is None:
            db.add(User(id=owner, display_name=display_name))
        elif display_name and user.display_name != display_name:
            user.display_name, user.updated_at = display_name, now()
    return None


def display_name(s: Settings, owner: str) -> str:
    with session(s.database) as db:
        user = db.get(User, owner)
        return user.display_name if user is not None else ""


def default_voice(s: Settings, owner: str) -> Voice | None:
    """The voice the user chose with `/voice`, else their only own voice, else None."""
    with session(s.database) as db:
        user = db.get(User, owner)
        if user is not None and user.default_voice_id:
            voice = db.get(Voice, user.default_voice_id)
            if voice is not None and (voice.owner == owner or voice.public):
                return voice
        own = list(db.scalars(select(Voice).where(Voice.owner == owner).limit(2)))
        return own[0] if len(own) == 1 else None


def has_explicit_default(s: Settings, owner: str) -> bool:
    with session(s.database) as db:
        user = db.get(User, owner)
        return bool(user is not None and user.default_voice_id)


def set_default_voice(s: Settings, owner: str, name: str) -> Voice:
    """Make the user's (or a public) voice `name` their default; UserError if none."""
    voice = get_voice(s, owner, name)
    if voice is None:
        raise UserError(f"You have no voice called {name.strip()[:40]!r}; /voices lists yours.")
    return set_default_voice_id(s, owner, voice.id)


def set_default_voice_id(s: Settings, owner: str, voice_id: str) -> Voice:
    with session(s.database) as db:
        voice = db.get(Voice, voice_id)
        if voice is None or not (voice.owner == owner or voice.public):
            raise UserError("That voice is not one of yours; /voices lists yours.")
        user = db.get(User, owner)
        if user is None:
            user = User(id=owner, display_name="")
            db.add(user)
        user.default_voice_id, user.updated_at = voice.id, now()
        return voice


def voice_by_id(s: Settings, owner: str, voice_id: str) -> Voice | None:
    """A voice the user may use: their own or a public one."""
    with session(s.database) as db:
        voice = db.get(Voice, voice_id)
    if voice is None or not (voice.owner == owner or voice.public):
        return None
    return voice


# ------------------------------------------------------------------------------------------
# Upload sessions: samples for /train, model files for /import


def open_upload_session(s: Settings, owner: str, kind: str, name: str) -> UploadSession:
    """A new open session; any other open session of the user is cancelled (files removed).

    Under the user's lock, so a user has one open session at most, however fast they ask.
    """
    engine_for(s.database)
    with session(s.database) as db:
        _lock(db, "uploads:" + owner)
        uris = _cancel_open(db, owner)
        row = UploadSession(owner=owner, kind=kind, name=name, state="open")
        db.add(row)
        db.flush()
    _delete_uris(s, uris)
    return row


def _cancel_open(db: Session, owner: str) -> list[str]:
    """Cancel the owner's open sessions in this transaction; the URIs of their files."""
    ids = list(
        db.scalars(
            select(UploadSession.id).where(
                UploadSession.owner == owner, UploadSession.state == "open"
            )
        )
    )
    if not ids:
        return []
    uris = list(db.scalars(select(UploadFile.uri).where(UploadFile.session_id.in_(ids))))
    db.execute(delete(UploadFile).where(UploadFile.session_id.in_(ids)))
    db.execute(
        update(UploadSession)
        .where(UploadSession.id.in_(ids))
        .values(state="cancelled", updated_at=now())
    )
    return uris


def current_upload_session(s: Settings, owner: str) -> UploadSession | None:
    with session(s.database) as db:
        query = (
            select(UploadSession)
            .where(UploadSession.owner == owner, UploadSession.state == "open")
            .order_by(UploadSession.created_at.desc())
        )
        return db.scalars(query).first()


def get_upload_session(s: Settings, session_id: str) -> UploadSession | None:
    with session(s.database) as db:
        return db.get(UploadSession, session_id)


def upload_files(s: Settings, session_id: str) -> list[UploadFile]:
    with session(s.database) as db:
        query = select(UploadFile).where(UploadFile.session_id == session_id)
        return list(db.scalars(query.order_by(UploadFile.id)))


SESSION_OVER = "That session is over; start again with /train <name> or /import."
SESSION_EXPIRED = (
    "That session has expired and its files are deleted; start again with /train <name> or /import."
)


def _expired(s: Settings, row: UploadSession, moment: datetime) -> bool:
    idle = moment - _aware(row.updated_at) > timedelta(seconds=s.upload_session_idle_s)
    old = moment - _aware(row.created_at) > timedelta(seconds=s.upload_session_max_s)
    return idle or old


def staged_usage(db: Session, owner: str) -> tuple[int, int]:
    """(files, bytes) the owner has waiting in `tmp/uploads/<owner>`: their open sessions'."""
    found = db.execute(
        select(func.count(UploadFile.id), func.coalesce(func.sum(UploadFile.size), 0))
        .join(UploadSession, UploadSession.id == UploadFile.session_id)
        .where(UploadSession.owner == owner, UploadSession.state.in_(("open", "submitting")))
    ).one()
    return int(found[0]), int(found[1])


def stage_file(
    s: Settings,
    session_id: str,
    owner: str,
    source: str,
    local: Path,
    filename: str,
    content_hash: str,
    voiced_s: float = 0.0,
) -> UploadFile | None:
    """Store a file the user sent in their open session; None if `source` was staged before.

    The caps are checked first, under the user's lock, where the file's row is made:
    files per session, and files and bytes waiting per user. A refusal (UserError, one
    sentence) stores nothing. The file is stored after its row; if that fails, the row goes.
    """
    local = Path(local)
    size = local.stat().st_size
    storage = open_storage(s.storage)
    key = upload_key(owner, filename)
    engine_for(s.database)
    with session(s.database) as db:
        _lock(db, "uploads:" + owner)
        row = db.get(UploadSession, session_id)
        if row is None or row.owner != owner or row.state != "open":
            raise UserError(SESSION_OVER)
        if _expired(s, row, now()):
            raise UserError(SESSION_EXPIRED)
        seen = select(UploadFile.id).where(
            UploadFile.session_id == session_id, UploadFile.source == source
        )
        if db.scalars(seen).first() is not None:
            return None
        in_session = db.scalar(
            select(func.count(UploadFile.id)).where(UploadFile.session_id == session_id)
        )
        if s.max_session_files > 0 and in_session >= s.max_session_files:
            raise UserError(
                f"One voice takes at most {s.max_session_files} files; send /done to use the "
                "ones you sent, or /cancel to start again."
            )
        files, stored = staged_usage(db, owner)
        over_files = s.max_user_upload_files > 0 and files + 1 > s.max_user_upload_files
        over_bytes = s.max_user_upload_bytes > 0 and stored + size > s.max_user_upload_bytes
        if over_files or over_bytes:
            raise UserError(
                f"You have {files} files ({stored / 2**20:.0f} MB) waiting with me, the most "
                "I keep for one person; send /done to use them, or /cancel."
            )
        staged = UploadFile(
            session_id=session_id,
            source=source,
            uri=storage.uri(key),
            filename=filename[:200],
            content_hash=content_hash,
            size=size,
            voiced_s=voiced_s,
        )
        db.add(staged)
        row.updated_at = now()
        db.flush()
    try:
        storage.put(local, key)
    except BaseException:
        with session(s.database) as db:
            db.execute(delete(UploadFile).where(UploadFile.id == staged.id))
        raise
    return staged


def remove_upload_file(s: Settings, file_id: int) -> None:
    with session(s.database) as db:
        row = db.get(UploadFile, file_id)
        if row is not None:
            _delete_uris(s, [row.uri])
            db.delete(row)


def mark_submitted(s: Settings, session_id: str, job_id: str) -> None:
    with session(s.database) as db:
        row = db.get(UploadSession, session_id)
        if row is not None:
            row.state, row.job_id, row.updated_at = "submitted", job_id, now()


def claim_upload_session(s: Settings, session_id: str, owner: str) -> UploadSession | None:
    """Take an open session for submission (once); None if it is not open or not theirs."""
    with session(s.database) as db:
        row = db.get(UploadSession, session_id, with_for_update=True)
        if row is None or row.owner != owner or row.state != "open":
            return None
        row.state, row.updated_at = "submitting", now()
        return row


def release_upload_session(s: Settings, session_id: str) -> None:
    """Give a claimed session back (its submission was refused)."""
    with session(s.database) as db:
        row = db.get(UploadSession, session_id)
        if row is not None and row.state == "submitting":
            row.state, row.updated_at = "open", now()


def cancel_upload_session(s: Settings, owner: str) -> UploadSession | None:
    """Cancel the user's open session and delete its staged files; the session, or None."""
    current = current_upload_session(s, owner)
    if current is None:
        return None
    files = upload_files(s, current.id)
    _delete_uris(s, [f.uri for f in files])
    with session(s.database) as db:
        db.execute(delete(UploadFile).where(UploadFile.session_id == current.id))
        row = db.get(UploadSession, current.id)
        row.state, row.updated_at = "cancelled", now()
    return current


def expire_upload_sessions(s: Settings) -> int:
    """Cancel sessions idle for `upload_session_idle_s`, or open longer than
    `upload_session_max_s` however they grow, deleting their staged files."""
    moment = now()
    with session(s.database) as db:
        stale = list(
            db.scalars(
                select(UploadSession).where(
                    UploadSession.state.in_(("open", "submitting")),
                    or_(
                        UploadSession.updated_at
                        < moment - timedelta(seconds=s.upload_session_idle_s),
                        UploadSession.created_at
                        < moment - timedelta(seconds=s.upload_session_max_s),
                    ),
                )
            )
        )
    for row in stale:
        files = upload_files(s, row.id)
        _delete_uris(s, [f.uri for f in files])
        with session(s.database) as db:
            db.execute(delete(UploadFile).where(UploadFile.session_id == row.id))
            found = db.get(UploadSession, row.id)
            found.state, found.updated_at = "cancelled", now()
    return len(stale)


def sweep(s: Settings) -> dict[str, int]:
    """The periodic clean-up (the bots' sweeper, the cluster's janitor): stale upload
    sessions, ledger rows too old to count, and scratch files under `tmp/` older than
    `tmp_expiry_s` (local storage; S3 expires them with a lifecycle rule)."""
    return {
        "sessions": expire_upload_sessions(s),
        "usage": prune_usage(s),
        "tmp_files": open_storage(s.storage).expire("tmp", s.tmp_expiry_s),
    }


def _delete_uris(s: Settings, uris: list[str]) -> None:
    """Delete staged files; one that cannot be deleted now is left to the sweeper."""
    erase.erase(s, [erase.uri(uri) for uri in uris])


# ------------------------------------------------------------------------------------------
# Chat subscriptions


def subscribe(
    s: Settings, platform: str, chat_id: str, kind: str, voice_id: str | None, by: str | None
) -> bool:
    """Subscribe a chat; False if it already was (its voice is updated)."""
    try:
        with session(s.database) as db:
            db.add(
                ChatSubscription(
                    platform=platform,
                    chat_id=str(chat_id),
                    kind=kind,
                    voice_id=voice_id,
                    created_by=by,
                )
            )
        return True
    except IntegrityError:
        with session(s.database) as db:
            db.execute(
                update(ChatSubscription)
                .where(
                    ChatSubscription.platform == platform,
                    ChatSubscription.chat_id == str(chat_id),
                    ChatSubscription.kind == kind,
                )
                .values(voice_id=voice_id)
            )
        return False


def unsubscribe(s: Settings, platform: str, chat_id: str, kind: str) -> bool:
    with session(s.database) as db:
        gone = db.execute(
            delete(ChatSubscription).where(
                ChatSubscription.platform == platform,
                ChatSubscription.chat_id == str(chat_id),
                ChatSubscription.kind == kind,
            )
        )
        return gone.rowcount > 0


def subscription(s: Settings, platform: str, chat_id: str, kind: str) -> ChatSubscription | None:
    with session(s.database) as db:
        query = select(ChatSubscription).where(
            ChatSubscription.platform == platform,
            ChatSubscription.chat_id == str(chat_id),
            ChatSubscription.kind == kind,
        )
        return db.scalars(query).first()


def subscriptions(s: Settings, kind: str) -> list[ChatSubscription]:
    with session(s.database) as db:
        query = select(ChatSubscription).where(ChatSubscription.kind == kind)
        return list(db.scalars(query.order_by(ChatSubscription.id)))


# ------------------------------------------------------------------------------------------
# Quotas and rate limits
#
# Every job a chat user starts is written to the usage ledger (`Usage`) in the transaction
# that makes it, under a lock held per user, after the limits were checked in that same
# transaction: concurrent commands cannot both take the last place. What counts:
# - a job that failed on our side (a crash, a restart, a server down) counts for nothing;
# - a cancelled job counts against the daily quota, not the rate limit;
# - anything else counts, failures caused by what the user sent included.
# The ledger names nobody (an HMAC of the user id), so `/forget` keeps it: forgetting resets
# no counter. The trending drops of all chats share one budget (`trending_covers_per_day`).

SONG_JOBS = ("cover", "stems", "karaoke")
VOICE_JOBS = ("train", "import")
DROPS = "trending:"  # owners of the trending drops' jobs start so (`flows.trending`)


@dataclass(frozen=True)
class Limit:
    """Why a user may not start a job now, and when they may."""

    # "active": too many open jobs; "rate": too many just now; "daily": the quota;
    # "budget": the trending drops' budget for the day is spent
    rule: str
    limit: int
    retry_after_s: float | None  # None for "active": when one of the open jobs ends
    kind: str  # the job kind asked for


class QuotaExceeded(UserError):
    """A job was refused by a quota; `limit` says which, for the sentence the user reads."""

    def __init__(self, limit: Limit):
        super().__init__("You have reached a limit for now; please try again later.")
        self.limit = limit


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def subject(s: Settings, owner: str) -> str:
    """Whom the ledger counts for `owner`: an HMAC of the id (all drops: one subject)."""
    who = DROPS if owner.startswith(DROPS) else owner
    key = s.usage_ledger_key.encode()
    return hmac.new(key, who.encode(), hashlib.sha256).hexdigest()


def _lock(db: Session, name: str) -> None:
    """Hold `name`'s lock until the transaction ends. PostgreSQL: an advisory lock of its
    own; SQLite: the database's write lock (`BEGIN IMMEDIATE`, see `flows.db`), so this
    must be the transaction's first statement."""
    if db.get_bind().dialect.name == "postgresql":
        lock_id = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        db.execute(select(func.pg_advisory_xact_lock(lock_id)))
    else:
        db.execute(select(Usage.id).limit(1).with_for_update())


def _excuse(job: Job | None, row: Usage) -> str | None:
    """Why a ledger row does not count in full: "ours", "cancelled", or None (it counts)."""
    if job is None:
        return row.excused
    if failed_on_our_side(job):
        return "ours"
    return "cancelled" if job.state == "cancelled" else None


def _counted(db: Session, who: str, since: datetime) -> list[tuple[Usage, str | None]]:
    """The subject's ledger rows since `since` that count, oldest first, with their excuse."""
    rows = db.execute(
        select(Usage, Job)
        .outerjoin(Job, Job.id == Usage.job_id)
        .where(Usage.subject == who, Usage.created_at >= since)
        .order_by(Usage.created_at)
    )
    out = []
    for row, job in rows:
        excuse = _excuse(job, row)
        if excuse != "ours":
            out.append((row, excuse))
    return out


def _wait(rows: list[Usage], limit: int, span: timedelta, moment: datetime) -> float:
    """Seconds until fewer than `limit` of `rows` (oldest first) are within `span`."""
    oldest = _aware(rows[-limit].created_at)
    return max((oldest + span - moment).total_seconds(), 1.0)


def _limit(db: Session, s: Settings, owner: str, kind: str) -> Limit | None:
    moment = now()
    day = timedelta(days=1)
    who = subject(s, owner)
    if owner.startswith(DROPS):
        budget = s.trending_covers_per_day
        spent = [row for row, _ in _counted(db, who, moment - day)]
        if budget > 0 and len(spent) >= budget:
            return Limit("budget", budget, _wait(spent, budget, day, moment), kind)
        return None
    active = db.scalar(
        select(func.count()).select_from(Job).where(Job.owner == owner, Job.state.in_(OPEN))
    )
    if s.max_active_jobs > 0 and active >= s.max_active_jobs:
        return Limit("active", s.max_active_jobs, None, kind)
    window = timedelta(seconds=s.rate_limit_window_s)
    counted = _counted(db, who, moment - max(day, window))
    recent = [
        row
        for row, excuse in counted
        if excuse != "cancelled" and _aware(row.created_at) >= moment - window
    ]
    if s.rate_limit_jobs > 0 and len(recent) >= s.rate_limit_jobs:
        return Limit(
            "rate", s.rate_limit_jobs, _wait(recent, s.rate_limit_jobs, window, moment), kind
        )
    kinds = VOICE_JOBS if kind in VOICE_JOBS else SONG_JOBS
    quota = s.quota_trainings_per_day if kind in VOICE_JOBS else s.quota_jobs_per_day
    today = [
        row for row, _ in counted if row.kind in kinds and _aware(row.created_at) >= moment - day
    ]
    if quota > 0 and len(today) >= quota:
        return Limit("daily", quota, _wait(today, quota, day, moment), kind)
    return None


def check_quota(s: Settings, owner: str, kind: str) -> Limit | None:
    """None if `owner` may start a `kind` job now; otherwise the rule that stops them.

    An early answer, so a user is not asked for a file they may not use; the decision that
    holds is `create_counted_job`'s.
    """
    with session(s.database) as db:
        return _limit(db, s, owner, kind)


def create_counted_job(
    s: Settings,
    kind: str,
    owner: str,
    params: dict,
    idempotency_key: str | None = None,
    reply_to: dict | None = None,
    runner: str | None = None,
) -> str:
    """A new queued job counted against `owner`'s quotas (or the existing one with the same
    idempotency key); QuotaExceeded, with nothing made, when a limit stops it.

    The check and the insert run in one transaction under the owner's lock, so concurrent
    submissions by one user take the places left one at a time.
    """
    engine_for(s.database)  # migrate first: only a clash of keys may be caught below
    lock = "quota:" + (DROPS if owner.startswith(DROPS) else owner)
    try:
        with session(s.database) as db:
            _lock(db, lock)
            if idempotency_key is not None:
                found = db.scalars(select(Job.id).where(Job.idempotency_key == idempotency_key))
                existing = found.first()
                if existing is not None:
                    return existing
            limit = _limit(db, s, owner, kind)
            if limit is not None:
                raise QuotaExceeded(limit)
            job = insert_job(db, kind, owner, params, idempotency_key, reply_to, runner)
            db.add(Usage(subject=subject(s, owner), kind=kind, job_id=job.id))
            return job.id
    except IntegrityError:
        if idempotency_key is None:
            raise
        return job_id_by_key(s, idempotency_key)


def settle_usage(s: Settings, owner: str) -> None:
    """Before `owner`'s jobs are deleted (`forget_user`): keep in the ledger whether each
    counts, and drop its link to the job. The ledger itself stays."""
    with session(s.database) as db:
        rows = db.execute(
            select(Usage, Job)
            .outerjoin(Job, Job.id == Usage.job_id)
            .where(Usage.subject == subject(s, owner), Usage.job_id.is_not(None))
        )
        for row, job in rows:
            row.excused, row.job_id = _excuse(job, row), None


def prune_usage(s: Settings) -> int:
    """Drop ledger rows too old to count for anything (two days, or the rate window)."""
    keep = max(timedelta(days=2), timedelta(seconds=s.rate_limit_window_s))
    with session(s.database) as db:
        gone = db.execute(delete(Usage).where(Usage.created_at < now() - keep))
        return gone.rowcount or 0


# ------------------------------------------------------------------------------------------
# Jobs as a user sees them


def list_jobs(s: Settings, owner: str, limit: int = 10) -> list[Job]:
    with session(s.database) as db:
        query = select(Job).where(Job.owner == owner).order_by(Job.created_at.desc())
        return list(db.scalars(query.limit(limit)))


def job_by_key(s: Settings, idempotency_key: str) -> Job | None:
    with session(s.database) as db:
        return db.scalars(select(Job).where(Job.idempotency_key == idempotency_key)).first()


def cancel_latest(s: Settings, owner: str) -> Job | None:
    """Cancel the user's newest open job; the job, or None if nothing was open."""
    with session(s.database) as db:
        query = (
            select(Job)
            .where(Job.owner == owner, Job.state.in_(("queued", "running")))
            .order_by(Job.created_at.desc())
        )
        job = db.scalars(query).first()
    if job is None or not cancel_job(s, job.id):
        return None
    return job


# ------------------------------------------------------------------------------------------
# Forgetting a user


@dataclass(frozen=True)
class Forgotten:
    voices: int
    jobs: int
    songs: int
    samples: int
    pending: int = 0  # files that could not be deleted yet (the sweeper keeps trying)
    stopping: int = 0  # jobs still stopping; what they leave is deleted when they stop


def _owner_key(owner: str) -> str:
    return re.sub(r"[^\w.-]", "_", owner)[:60] or "_"


def _job_uris(job: Job) -> list[str]:
    uris = []
    for key in ("uri", "preview_uri"):
        value = (job.result or {}).get(key)
        if isinstance(value, str):
            uris.append(value)
    for key in ("samples", "files"):
        value = (job.params or {}).get(key)
        if isinstance(value, list):
            uris += [u for u in value if isinstance(u, str)]
    return uris


def forget_user(s: Settings, owner: str, notify: dict | None = None) -> Forgotten:
    """Remove everything `owner` has: voices, jobs and results, songs, samples, reply targets,
    training folders and the user row.

    Open jobs are cancelled first; one that is still running stops at its next step, and
    stores and registers nothing from then on (its register and store steps check its row,
    see `flows.voices.register_voice` and `flows.jobs.run_job`). Covers sung in the user's
    voices go too, whoever owns them (a chat's trending drop). Chat subscriptions belong to
    their chat and stay, without the user's name. The usage ledger of quotas is not the
    user's data and stays.

    Rows go in one transaction with the record of every file to delete (`flows.erase`), so
    a file whose deletion fails now (S3 down) is retried by the sweeper, and the result says
    how many are pending. `notify` (a chat, as a reply target) is told once they are gone.
    """
    with session(s.database) as db:
        open_jobs = list(
            db.scalars(select(Job.id).where(Job.owner == owner, Job.state.not_in(TERMINAL)))
        )
    for job_id in open_jobs:
        cancel_job(s, job_id)
    settle_usage(s, owner)  # the usage ledger stays: forgetting resets no quota

    with session(s.database) as db:
        ids = list(db.scalars(select(UploadSession.id).where(UploadSession.owner == owner)))
        files = list(db.scalars(select(UploadFile).where(UploadFile.session_id.in_(ids))))
        voices = list(db.scalars(select(Voice).where(Voice.owner == owner)))
        # Covers sung in the user's voices that others own (a chat's trending drop) go too.
        sung = list(
            db.scalars(
                select(Job.id).where(
                    Job.owner != owner,
                    Job.kind == "cover",
                    Job.params["voice_id"].as_string().in_([v.id for v in voices]),
                )
            )
        )
    open_jobs += [job_id for job_id in sung if cancel_job(s, job_id)]

    with session(s.database) as db:
        jobs = list(db.scalars(select(Job).where(or_(Job.owner == owner, Job.id.in_(sung)))))
        songs = list(db.scalars(select(Song).where(Song.owner == owner)))
        hashes = [song.content_hash for song in songs]
        # Another user's song (or the catalog's) with the same file keeps its stems.
        shared = set(
            db.scalars(
                select(Song.content_hash).where(
                    Song.content_hash.in_(hashes), or_(Song.owner.is_(None), Song.owner != owner)
                )
            )
        )
        hashes = [h for h in hashes if h not in shared]
        stem_sets = list(db.scalars(select(StemSet).where(StemSet.content_hash.in_(hashes))))

    key = _owner_key(owner)
    targets: list[erase.Target] = [erase.uri(f.uri) for f in files]
    for voice in voices:
        targets += [erase.uri(u) for u in (voice.pth_uri, voice.index_uri, voice.preview_uri) if u]
        targets.append(erase.prefix(voice_prefix(owner, voice.id)))
    for job in jobs:
        targets += [erase.uri(u) for u in _job_uris(job)]
        targets += [erase.prefix(p) for p in job_prefixes(job.id)]
    targets += [erase.uri(song.uri) for song in songs]
    for content_hash in hashes:
        targets += [erase.prefix(f"songs/{content_hash}")]
        targets += [erase.prefix(f"tmp/stems/{content_hash}")]
    for stem_set in stem_sets:
        targets += [erase.uri(u) for u in stem_set.stems.values()]
    targets += [erase.prefix(f"voices/{key}"), erase.prefix(f"tmp/uploads/{key}")]
    targets.append(erase.prefix(f"uploads/{key}"))  # the songs she sent (`catalog.song_key`)
    targets.append(erase.prefix(owner_checkpoints(owner)))  # training checkpoints in storage
    # A job still running may store more before it stops: once it has stopped, its places
    # and the user's are swept again (the batch waits for it, see `flows.erase`).
    afterwards = [erase.job(job_id) for job_id in open_jobs]
    for job_id in open_jobs:
        afterwards += [erase.prefix(p) for p in job_prefixes(job_id)]
    if open_jobs:
        afterwards += [erase.prefix(f"voices/{key}"), erase.prefix(f"tmp/uploads/{key}")]
        for content_hash in hashes:  # a running cover of her song may still cache its stems
            afterwards += [erase.prefix(f"songs/{content_hash}")]
            afterwards += [erase.prefix(f"tmp/stems/{content_hash}")]

    batch = new_id()
    with session(s.database) as db:
        scheduled = erase.schedule(db, targets + afterwards, batch=batch, notify=notify)
        db.execute(delete(UploadFile).where(UploadFile.session_id.in_(ids)))
        db.execute(delete(UploadSession).where(UploadSession.owner == owner))
        db.execute(delete(Voice).where(Voice.owner == owner))
        db.execute(
            delete(Job).where(or_(Job.owner == owner, Job.id.in_(sung)), Job.id.not_in(open_jobs))
        )
        # A cancelled flow may still be finishing; it must find its row to see the cancel, so
        # the row stays, with nothing left in it that names the user, until the flow ends
        # (`flows.jobs.run_job` removes it then, or the sweeper once it is quiet).
        db.execute(delete(ReplyTarget).where(ReplyTarget.job_id.in_(open_jobs)))
        db.execute(
            update(Job)
            .where(Job.id.in_(open_jobs))
            .values(owner=FORGOTTEN, params={}, result={}, idempotency_key=None, updated_at=now())
        )
        db.execute(delete(StemSet).where(StemSet.content_hash.in_(hashes)))
        db.execute(delete(Song).where(Song.owner == owner))
        db.execute(
            update(ChatSubscription)
            .where(ChatSubscription.created_by == owner)
            .values(created_by=None)
        )
        db.execute(delete(User).where(User.id == owner))
    for folder in owner_folders(s, owner):  # checkpoints of runs on this machine
        try:
            shutil.rmtree(folder)
        except OSError:  # a run still writing there: it is cancelled, and removes it
            log.warning("could not remove the training folder %s", folder, exc_info=True)
    erase.attempt(s, scheduled)
    failed, stopping = erase.batch_state(s, batch)
    return Forgotten(
        voices=len(voices),
        jobs=len(jobs),
        songs=len(songs),
        samples=len(files),
        pending=failed,
        stopping=stopping,
    )
