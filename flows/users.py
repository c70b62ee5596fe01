"""Chat users: default voice, upload sessions, chat subscriptions, quotas, and forgetting.

This module owns what the bots keep about a person beyond their voices and jobs:
- the user row (`users`): display name and the default voice;
- upload sessions (`upload_sessions`, `upload_files`): the samples a user is sending for
  `/train`, or the model files for `/import`, staged in storage and kept across bot restarts
  until they are submitted, cancelled or forgotten;
- chat subscriptions (`chat_subscriptions`), such as a chat's trending drops;
- quotas and rate limits, derived from the jobs table (a double-submitted command is one job,
  so it is counted once);
- `forget_user`, which removes everything a user has: voices, jobs and their files, uploaded
  songs, staged samples and the user row.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from flows.db import (
    TERMINAL,
    ChatSubscription,
    Job,
    Song,
    StemSet,
    UploadFile,
    UploadSession,
    User,
    Voice,
    now,
    session,
)
from flows.jobs import cancel_job
from flows.settings import Settings
from flows.storage import open_storage
from flows.voices import delete_voice, get_voice
from gpu_worker.errors import EngineError

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
    """Make the user's (or a public) voice `name` their default; EngineError if none."""
    voice = get_voice(s, owner, name)
    if voice is None:
        raise EngineError(f"You have no voice called {name.strip()[:40]!r}; /voices lists yours.")
    return set_default_voice_id(s, owner, voice.id)


def set_default_voice_id(s: Settings, owner: str, voice_id: str) -> Voice:
    with session(s.database) as db:
        voice = db.get(Voice, voice_id)
        if voice is None or not (voice.owner == owner or voice.public):
            raise EngineError("That voice is not one of yours; /voices lists yours.")
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
    """A new open session; any other open session of the user is cancelled (files removed)."""
    cancel_upload_session(s, owner)
    with session(s.database) as db:
        row = UploadSession(owner=owner, kind=kind, name=name, state="open")
        db.add(row)
        db.flush()
        return row


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


def add_upload_file(
    s: Settings,
    session_id: str,
    source: str,
    uri: str,
    filename: str,
    content_hash: str,
    size: int,
    voiced_s: float = 0.0,
) -> UploadFile | None:
    """Record a staged file; None (and the staged copy removed) if `source` was seen before."""
    try:
        with session(s.database) as db:
            row = UploadFile(
                session_id=session_id,
                source=source,
                uri=uri,
                filename=filename[:200],
                content_hash=content_hash,
                size=size,
                voiced_s=voiced_s,
            )
            db.add(row)
            db.flush()
            db.get(UploadSession, session_id).updated_at = now()
            return row
    except IntegrityError:
        _delete_uris(s, [uri])
        return None


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


def expire_upload_sessions(s: Settings, idle: timedelta = timedelta(days=7)) -> int:
    """Cancel open sessions nobody has added to for `idle`, deleting their staged files."""
    with session(s.database) as db:
        stale = list(
            db.scalars(
                select(UploadSession).where(
                    UploadSession.state.in_(("open", "submitting")),
                    UploadSession.updated_at < now() - idle,
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


def _delete_uris(s: Settings, uris: list[str]) -> None:
    storage = open_storage(s.storage)
    for uri in uris:
        with contextlib.suppress(OSError, ValueError):
            storage.delete(uri)


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

SONG_JOBS = ("cover", "stems", "karaoke")
VOICE_JOBS = ("train", "import")


@dataclass(frozen=True)
class Limit:
    """Why a user may not start a job now, and when they may."""

    rule: str  # "active": too many open jobs; "rate": too many just now; "daily": the quota
    limit: int
    retry_after_s: float | None  # None for "active": when one of the open jobs ends
    kind: str  # the job kind asked for


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def check_quota(s: Settings, owner: str, kind: str) -> Limit | None:
    """None if `owner` may start a `kind` job now; otherwise the rule that stops them."""
    moment = now()
    with session(s.database) as db:
        active = db.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.owner == owner, Job.state.in_(("queued", "running")))
        )
        if s.max_active_jobs > 0 and active >= s.max_active_jobs:
            return Limit("active", s.max_active_jobs, None, kind)
        window = timedelta(seconds=s.rate_limit_window_s)
        recent = list(
            db.scalars(
                select(Job.created_at)
                .where(Job.owner == owner, Job.created_at >= moment - window)
                .order_by(Job.created_at)
            )
        )
        if s.rate_limit_jobs > 0 and len(recent) >= s.rate_limit_jobs:
            oldest = _aware(recent[-s.rate_limit_jobs])
            wait = (oldest + window - moment).total_seconds()
            return Limit("rate", s.rate_limit_jobs, max(wait, 1.0), kind)
        kinds = VOICE_JOBS if kind in VOICE_JOBS else SONG_JOBS
        quota = s.quota_trainings_per_day if kind in VOICE_JOBS else s.quota_jobs_per_day
        day = timedelta(days=1)
        counted = list(
            db.scalars(
                select(Job.created_at)
                .where(
                    Job.owner == owner,
                    Job.kind.in_(kinds),
                    Job.created_at >= moment - day,
                    Job.state != "failed",  # our failures do not use up the user's quota
                )
                .order_by(Job.created_at)
            )
        )
        if quota > 0 and len(counted) >= quota:
            oldest = _aware(counted[-quota])
            return Limit("daily", quota, max((oldest + day - moment).total_seconds(), 1.0), kind)
    return None


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


FORGOTTEN = "forgotten"


@dataclass(frozen=True)
class Forgotten:
    voices: int
    jobs: int
    songs: int
    samples: int


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


def forget_user(s: Settings, owner: str) -> Forgotten:
    """Remove everything `owner` has: voices, jobs and results, songs, samples, the user row.

    Open jobs are cancelled first (a running flow stops at its next step and removes what it
    half-wrote). Covers sung in the user's voices go too, whoever owns them (a chat's trending
    drop). Chat subscriptions belong to their chat and stay, without the user's name.
    """
    storage = open_storage(s.storage)
    with session(s.database) as db:
        open_jobs = list(
            db.scalars(select(Job.id).where(Job.owner == owner, Job.state.not_in(TERMINAL)))
        )
    for job_id in open_jobs:
        cancel_job(s, job_id)

    samples = 0
    with session(s.database) as db:
        ids = list(db.scalars(select(UploadSession.id).where(UploadSession.owner == owner)))
        files = list(db.scalars(select(UploadFile).where(UploadFile.session_id.in_(ids))))
    _delete_uris(s, [f.uri for f in files])
    samples = len(files)

    with session(s.database) as db:
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
    sung_open = [job_id for job_id in sung if cancel_job(s, job_id)]
    open_jobs += sung_open
    for voice in voices:
        delete_voice(s, owner, voice.name)
    with contextlib.suppress(OSError, ValueError):
        storage.delete_prefix(f"voices/{_owner_key(owner)}")

    with session(s.database) as db:
        jobs = list(db.scalars(select(Job).where(Job.owner == owner)))
        jobs += list(db.scalars(select(Job).where(Job.id.in_(sung))))
    for job in jobs:
        _delete_uris(s, _job_uris(job))
        for prefix in (f"covers/{job.id}", f"results/{job.id}", f"tmp/jobs/{job.id}"):
            with contextlib.suppress(OSError, ValueError):
                storage.delete_prefix(prefix)

    with session(s.database) as db:
        songs = list(db.scalars(select(Song).where(Song.owner == owner)))
    for song in songs:
        _delete_uris(s, [song.uri])
        with session(s.database) as db:
            shared = db.scalars(
                select(Song.id).where(
                    Song.content_hash == song.content_hash,
                    or_(Song.owner.is_(None), Song.owner != owner),
                )
            ).first()
        if shared is not None:
            continue  # another user (or the catalog) has the same file: its stems stay
        with session(s.database) as db:
            stem_sets = list(
                db.scalars(select(StemSet).where(StemSet.content_hash == song.content_hash))
            )
            for stem_set in stem_sets:
                _delete_uris(s, list(stem_set.stems.values()))
                db.delete(stem_set)
        with contextlib.suppress(OSError, ValueError):
            storage.delete_prefix(f"songs/{song.content_hash}")
            storage.delete_prefix(f"tmp/stems/{song.content_hash}")
    with contextlib.suppress(OSError, ValueError):
        storage.delete_prefix(f"tmp/uploads/{_owner_key(owner)}")

    with session(s.database) as db:
        db.execute(delete(UploadSession).where(UploadSession.owner == owner))
        db.execute(delete(Job).where(Job.owner == owner, Job.id.not_in(open_jobs)))
        db.execute(delete(Job).where(Job.id.in_(sung), Job.id.not_in(open_jobs)))
        # A cancelled flow may still be finishing; it must find its row to see the cancel, so
        # the row stays, with nothing left in it that names the user.
        db.execute(
            update(Job)
            .where(Job.id.in_(open_jobs))
            .values(owner=FORGOTTEN, params={}, result={}, idempotency_key=None)
        )
        db.execute(delete(Song).where(Song.owner == owner))
        db.execute(
            update(ChatSubscription)
            .where(ChatSubscription.created_by == owner)
            .values(created_by=None)
        )
        db.execute(delete(User).where(User.id == owner))
    return Forgotten(voices=len(voices), jobs=len(jobs), songs=len(songs), samples=samples)
