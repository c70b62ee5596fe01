"""The query API of the backend for the chat front ends (`bots/`), beside `flows.submit`.

The bots import only this module and `flows.submit`. It owns the facade over the catalog,
the voices, the jobs and the users' state (`flows.users`): finding songs, adding a song a user
sent, listing voices and the default one, checking one training sample, upload sessions,
job lists and cancelling, forgetting a user, chat subscriptions and quotas. Everything it
hands out is a plain frozen dataclass, never a database row, and every call takes an optional
`Settings` (default: the process's). `UserError` is the error whose message a user may read:
every function here turns the engine's typed errors into one (`flows.errors`).
"""

from __future__ import annotations

import inspect
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, select

from flows import backend, catalog, charts, erase, submit, users, voices
from flows.chat import charts_text, deliver_pending, links_text
from flows.chat.courier import job_headline
from flows.chat.text import headline, status_line, status_text, wording
from flows.db import ChatSubscription, Job, Song, UploadSession, Voice, session
from flows.errors import UserError, sample_problem, worded
from flows.jobs import reply_target, stop_all_jobs
from flows.logs import protect_logs
from flows.recovery import recover_lost_jobs
from flows.settings import Settings, get_settings
from flows.submit import JobInfo
from flows.users import Forgotten, Limit, QuotaExceeded
from gpu_worker.hashing import file_sha256
from gpu_worker.samples import IntakeLimits, check_samples, format_duration

__all__ = [
    "Forgotten",
    "JobInfo",
    "Limit",
    "QuotaExceeded",
    "SampleResult",
    "SongInfo",
    "TrainingLimits",
    "UploadInfo",
    "UserError",
    "VoiceInfo",
    "format_duration",
    "headline",
    "links_text",
    "settings",
    "status_line",
    "status_text",
    "wording",  # a platform's sentences (`flows.chat.text`): what the bots say, too
]


_log = logging.getLogger("encore.api")


def settings() -> Settings:
    return get_settings()


def _s(s: Settings | None) -> Settings:
    return s or get_settings()


def format_wait(seconds: float) -> str:
    """A wait for a user, rounded up to what they will actually have to wait."""
    return format_duration(max(1, math.ceil(seconds)))


# ------------------------------------------------------------------------------------------
# Songs


@dataclass(frozen=True)
class SongInfo:
    id: str
    title: str
    artist: str
    duration: float

    @property
    def label(self) -> str:
        return f"{self.artist} - {self.title}" if self.artist else self.title

    @classmethod
    def of(cls, song: Song) -> SongInfo:
        return cls(song.id, song.title, song.artist, song.duration)


def find_songs(
    query: str, owner: str, limit: int = 5, s: Settings | None = None
) -> list[tuple[SongInfo, float]]:
    """Songs of the catalog (and the user's own) matching `query`, best first, scored 0-100."""
    return [
        (SongInfo.of(song), score)
        for song, score in catalog.find_songs(_s(s), query, owner=owner, limit=limit)
    ]


def get_song(song_id: str, owner: str, s: Settings | None = None) -> SongInfo | None:
    """A song the user may use: from the catalog or one they sent."""
    song = catalog.get_song(_s(s), song_id)
    if song is None or (song.owner is not None and song.owner != owner):
        return None
    return SongInfo.of(song)


def add_uploaded_song(
    owner: str, path: Path, title: str | None, artist: str = "", s: Settings | None = None
) -> SongInfo:
    """Add an audio file a user sent as their own song (checked against the limits)."""
    return SongInfo.of(catalog.add_song(_s(s), Path(path), title=title, artist=artist, owner=owner))


def list_songs(owner: str, s: Settings | None = None) -> list[SongInfo]:
    """The public catalog and the user's own songs, by artist and title."""
    return [SongInfo.of(song) for song in catalog.list_songs(_s(s), owner)]


# ------------------------------------------------------------------------------------------
# Charts (`/charts`): the configured charts, each entry with its catalog song when there is one


@dataclass(frozen=True)
class ChartItem:
    rank: int
    title: str
    artist: str
    key: str  # names the entry's song (see `flows.charts.ChartEntry.key`)
    link: str  # the provider's page of the song, "" if none
    song: SongInfo | None  # the catalog song, None while the song is not in the catalog

    @property
    def ready(self) -> bool:
        return self.song is not None

    @property
    def label(self) -> str:
        return f"{self.artist} - {self.title}" if self.artist else self.title


@dataclass(frozen=True)
class ChartInfo:
    name: str
    items: tuple[ChartItem, ...]
    names: tuple[str, ...]  # every configured chart, this one included


class NoChart(UserError):
    """No chart by that name is configured (`names`: those that are)."""

    def __init__(self, message: str, names: tuple[str, ...] = ()):
        super().__init__(message)
        self.names = names


def chart_names(s: Settings | None = None) -> list[str]:
    return list(charts.configured(_s(s)))


def chart(name: str | None = None, s: Settings | None = None) -> ChartInfo:
    """The chart `name` (None: the default) with its entries matched to the public catalog.

    Raises NoChart when there is no such chart, UserError when it cannot be read now (the
    operator's reason goes to the log)."""
    s = _s(s)
    names = tuple(charts.configured(s))
    wanted = (name or "").strip().lower() or charts.default_name(s)
    if not names:
        raise NoChart(charts_text.NO_CHARTS)
    if wanted not in names:
        shown = f"“{(name or '').strip()[:30]}”"
        raise NoChart(charts_text.UNKNOWN_CHART.format(name=shown, names=", ".join(names)), names)
    try:
        found, entries = charts.current(s, wanted)
    except charts.ChartError as exc:
        _log.warning("chart %s: %s", wanted, exc)
        raise UserError(charts_text.CHART_UNREADABLE) from None
    matched, _missing = charts.match(entries, catalog.list_songs(s), s.chart_match_score)
    songs = {m.entry.rank: SongInfo.of(m.song) for m in matched}
    items = tuple(
        ChartItem(e.rank, e.title, e.artist, e.key, e.link, songs.get(e.rank)) for e in entries
    )
    return ChartInfo(found, items, names)


def chart_item(name: str, rank: int, key: str, s: Settings | None = None) -> ChartItem | None:
    """The entry at `rank` of chart `name` if it is still the song `key` names, else None."""
    try:
        found = chart(name, s)
    except UserError:
        return None
    return next((i for i in found.items if i.rank == rank and i.key == key), None)


CHAT_CHART = "chart:"  # a chat's default chart: a subscription of kind "chart:<name>"


def chat_chart(platform: str, chat_id: str, s: Settings | None = None) -> str | None:
    """The chart a chat picked as its default (when it is still configured), else None."""
    s = _s(s)
    with session(s.database) as db:
        kinds = db.scalars(
            select(ChatSubscription.kind).where(
                ChatSubscription.platform == platform,
                ChatSubscription.chat_id == str(chat_id),
                ChatSubscription.kind.startswith(CHAT_CHART),
            )
        ).all()
    names = charts.configured(s)
    return next((k[len(CHAT_CHART) :] for k in kinds if k[len(CHAT_CHART) :] in names), None)


def set_chat_chart(
    platform: str, chat_id: str, name: str, by: str | None, s: Settings | None = None
) -> bool:
    """Make `name` the chat's default chart; False if it already was."""
    s = _s(s)
    if chat_chart(platform, chat_id, s) == name:
        return False
    with session(s.database) as db:
        db.execute(
            delete(ChatSubscription).where(
                ChatSubscription.platform == platform,
                ChatSubscription.chat_id == str(chat_id),
                ChatSubscription.kind.startswith(CHAT_CHART),
            )
        )
    users.subscribe(s, platform, chat_id, CHAT_CHART + name, None, by)
    return True


def chart_fetching(s: Settings | None = None) -> bool:
    """Whether a chart song missing from the catalog can be fetched on demand (link sources,
    when the operator enables them); False: only catalog songs can be covered."""
    return _s(s).link_sources


def is_demo_voice(voice: VoiceInfo) -> bool:
    from flows.demo import DEMO_OWNER, DEMO_VOICE

    return voice.owner == DEMO_OWNER and voice.name == DEMO_VOICE


def demo_voice(s: Settings | None = None) -> VoiceInfo | None:
    """The public demo voice, registered from the model folder on first use; None when its
    weights are not downloaded."""
    from flows.demo import ensure_demo_voice
    from gpu_worker.errors import ModelMissing

    try:
        return VoiceInfo.of(ensure_demo_voice(_s(s)))
    except ModelMissing:
        return None
    except Exception:  # a damaged demo voice must not stop the first cover's answer
        _log.warning("the demo voice could not be registered", exc_info=True)
        return None


# ------------------------------------------------------------------------------------------
# Links (songs and voice models fetched by the job: `flows.links`)


def is_link(text: str) -> bool:
    """Whether a command's argument is a web link rather than a name."""
    from flows.links import is_link as looks_like_link

    return looks_like_link(text)


def check_link(url: str, model: bool = False, s: Settings | None = None) -> str:
    """The link as the job will fetch it; UserError (one sentence) when links are off or it
    is not an http(s) link. The network checks happen when the job fetches it."""
    from flows.links import normalize, require_enabled

    require_enabled(_s(s), model=model)
    return normalize(url)


def link_label(url: str) -> str:
    """How a link is named in a status message: its site and file, short."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    tail = parts.path.rstrip("/").rsplit("/", 1)[-1]
    return f"{parts.hostname or 'a link'}{'/…/' + tail if tail else ''}"[:60]


def voice_name_from_link(url: str) -> str:
    """The voice name a model link suggests ("" when it has no usable file name)."""
    from flows.links import model_name

    try:
        return voices.valid_name(model_name(url))
    except UserError:
        return ""


# ------------------------------------------------------------------------------------------
# Voices


@dataclass(frozen=True)
class VoiceInfo:
    id: str
    name: str
    owner: str
    public: bool
    source: str
    version: str
    sample_rate: int

    @classmethod
    def of(cls, voice: Voice) -> VoiceInfo:
        return cls(
            voice.id,
            voice.name,
            voice.owner,
            bool(voice.public),
            voice.source or "imported",
            voice.version,
            voice.sample_rate,
        )


def _voice(voice: Voice | None) -> VoiceInfo | None:
    return VoiceInfo.of(voice) if voice is not None else None


def list_voices(owner: str, s: Settings | None = None) -> list[VoiceInfo]:
    """The user's voices, then the public ones."""
    found = [VoiceInfo.of(v) for v in voices.list_voices(_s(s), owner)]
    return sorted(found, key=lambda v: (v.owner != owner, v.name.lower()))


def get_voice(
    owner: str, name: str, include_public: bool = True, s: Settings | None = None
) -> VoiceInfo | None:
    return _voice(voices.get_voice(_s(s), owner, name, include_public=include_public))


def voice_by_id(owner: str, voice_id: str, s: Settings | None = None) -> VoiceInfo | None:
    return _voice(users.voice_by_id(_s(s), owner, voice_id))


def default_voice(owner: str, s: Settings | None = None) -> VoiceInfo | None:
    return _voice(users.default_voice(_s(s), owner))


def set_default_voice(owner: str, name: str, s: Settings | None = None) -> VoiceInfo:
    return VoiceInfo.of(users.set_default_voice(_s(s), owner, name))


def set_default_voice_id(owner: str, voice_id: str, s: Settings | None = None) -> VoiceInfo:
    return VoiceInfo.of(users.set_default_voice_id(_s(s), owner, voice_id))


def valid_voice_name(name: str) -> str:
    return voices.valid_name(name)


def voice_name_key(name: str) -> str:
    """What names that only look alike share (see `flows.voices.name_key`)."""
    return voices.name_key(name)


def display_name(owner: str, s: Settings | None = None) -> str:
    """The name a user last showed in chat, or "" when Encore keeps none."""
    return users.display_name(_s(s), owner)


def ensure_user(owner: str, display_name: str = "", s: Settings | None = None) -> None:
    users.ensure_user(_s(s), owner, display_name)


# ------------------------------------------------------------------------------------------
# Jobs


def _job(job: Job | None, s: Settings) -> JobInfo | None:
    if job is None:
        return None
    try:
        head = job_headline(s, job)
    except Exception:  # a job whose song or voice is gone still lists
        head = job.kind.capitalize()
    return JobInfo.of(job, head, reply_target(s, job.id))


def list_jobs(owner: str, limit: int = 8, s: Settings | None = None) -> list[JobInfo]:
    s = _s(s)
    return [_job(j, s) for j in users.list_jobs(s, owner, limit)]


def job_by_key(idempotency_key: str, s: Settings | None = None) -> JobInfo | None:
    s = _s(s)
    return _job(users.job_by_key(s, idempotency_key), s)


def cancel_latest(owner: str, s: Settings | None = None) -> JobInfo | None:
    s = _s(s)
    return _job(users.cancel_latest(s, owner), s)


def check_quota(owner: str, kind: str, s: Settings | None = None) -> Limit | None:
    return users.check_quota(_s(s), owner, kind)


def forget_user(owner: str, s: Settings | None = None, notify: dict | None = None) -> Forgotten:
    """Erase everything of `owner`; `notify` (a chat) is told when files left pending are gone."""
    return users.forget_user(_s(s), owner, notify)


# ------------------------------------------------------------------------------------------
# Upload sessions: voice samples for training, model files for importing


@dataclass(frozen=True)
class UploadedFile:
    source: str
    filename: str
    uri: str
    voiced_s: float
    size: int


@dataclass(frozen=True)
class UploadInfo:
    id: str
    owner: str
    kind: str  # train|import
    name: str
    state: str
    job_id: str | None
    files: tuple[UploadedFile, ...]

    @property
    def voiced_s(self) -> float:
        return sum(f.voiced_s for f in self.files)

    def has(self, suffix: str) -> bool:
        return any(f.filename.lower().endswith(suffix) for f in self.files)


def _upload(row: UploadSession | None, s: Settings) -> UploadInfo | None:
    if row is None:
        return None
    files = tuple(
        UploadedFile(f.source, f.filename, f.uri, f.voiced_s, f.size)
        for f in users.upload_files(s, row.id)
    )
    return UploadInfo(row.id, row.owner, row.kind, row.name, row.state, row.job_id, files)


def open_upload(owner: str, kind: str, name: str, s: Settings | None = None) -> UploadInfo:
    """Start collecting files; an earlier open session of the user is cancelled."""
    s = _s(s)
    return _upload(users.open_upload_session(s, owner, kind, name), s)


def current_upload(owner: str, s: Settings | None = None) -> UploadInfo | None:
    s = _s(s)
    return _upload(users.current_upload_session(s, owner), s)


def get_upload(upload_id: str, s: Settings | None = None) -> UploadInfo | None:
    s = _s(s)
    return _upload(users.get_upload_session(s, upload_id), s)


def cancel_upload(owner: str, s: Settings | None = None) -> UploadInfo | None:
    """Stop the open session and delete what was staged; what it held, or None."""
    s = _s(s)
    current = current_upload(owner, s)
    if current is None:
        return None
    users.cancel_upload_session(s, owner)
    return current


def claim_upload(upload_id: str, owner: str, s: Settings | None = None) -> UploadInfo | None:
    """Take the open session for submission, once; None if it is not open (or not theirs)."""
    s = _s(s)
    return _upload(users.claim_upload_session(s, upload_id, owner), s)


def release_upload(upload_id: str, s: Settings | None = None) -> None:
    users.release_upload_session(_s(s), upload_id)


def mark_submitted(upload_id: str, job_id: str, s: Settings | None = None) -> None:
    users.mark_submitted(_s(s), upload_id, job_id)


@dataclass(frozen=True)
class TrainingLimits:
    """How much voice a training session takes: at least, best, at most (seconds)."""

    min_total_s: float
    recommended_s: tuple[float, float]
    max_total_s: float


def _intake_limits(s: Settings) -> IntakeLimits:
    return IntakeLimits(min_total_s=s.train_min_seconds)


def training_limits(s: Settings | None = None) -> TrainingLimits:
    limits = _intake_limits(_s(s))
    return TrainingLimits(limits.min_total_s, limits.recommended_s, limits.max_total_s)


@dataclass(frozen=True)
class SampleResult:
    accepted: bool
    duplicate: bool  # this chat message was taken before (a re-delivered update)
    voiced_s: float  # of this sample
    problem: str | None  # why it was not taken: one sentence for the user
    upload: UploadInfo  # the session, with this sample when accepted


def add_sample(
    upload_id: str,
    owner: str,
    source: str,
    local: Path,
    filename: str,
    s: Settings | None = None,
) -> SampleResult:
    """Check one voice sample and, when it is usable, stage it in the training session.

    `source` names the chat message it came from, so a re-delivered message counts once.
    The problem is said as the owner's platform says it (an owner id starts with it).
    """
    s = _s(s)
    words = wording(owner.partition(":")[0])
    session = get_upload(upload_id, s)
    if session is None or session.state != "open":
        raise UserError(words.training_over())
    if any(f.source == source for f in session.files):
        return SampleResult(False, True, 0.0, None, session)
    digest = file_sha256(Path(local))
    if any(row.content_hash == digest for row in users.upload_files(s, upload_id)):
        return SampleResult(False, False, 0.0, words.sample_repeated(), session)
    limits = _intake_limits(s)
    check = check_samples([Path(local)], limits, names=[filename]).samples[0]
    problem = sample_problem(check)
    if problem is None and session.voiced_s + check.voiced_s > limits.max_total_s:
        problem = words.sample_over_total(limits.max_total_s)
    if problem is not None:
        return SampleResult(False, False, check.voiced_s, words.sample_problem(problem), session)
    row = users.stage_file(
        s, upload_id, owner, source, Path(local), filename, digest, check.voiced_s
    )
    return SampleResult(
        row is not None, row is None, check.voiced_s, None, get_upload(upload_id, s)
    )


def add_model_file(
    upload_id: str,
    owner: str,
    source: str,
    local: Path,
    filename: str,
    s: Settings | None = None,
) -> tuple[UploadInfo, bool]:
    """Stage a model file (.pth, .index or .zip) in an import session; (session, was it new).

    Raises UserError, storing nothing, when the session is over or a cap is reached.
    """
    s = _s(s)
    digest = file_sha256(Path(local))
    row = users.stage_file(s, upload_id, owner, source, Path(local), filename, digest)
    return get_upload(upload_id, s), row is not None


# ------------------------------------------------------------------------------------------
# Chat subscriptions


def subscribe(
    platform: str,
    chat_id: str,
    kind: str,
    voice_id: str | None,
    by: str | None,
    s: Settings | None = None,
) -> bool:
    return users.subscribe(_s(s), platform, chat_id, kind, voice_id, by)


def unsubscribe(platform: str, chat_id: str, kind: str, s: Settings | None = None) -> bool:
    return users.unsubscribe(_s(s), platform, chat_id, kind)


def is_subscribed(platform: str, chat_id: str, kind: str, s: Settings | None = None) -> bool:
    return users.subscription(_s(s), platform, chat_id, kind) is not None


# ------------------------------------------------------------------------------------------
# The bot process


def recover(s: Settings | None = None) -> int:
    """Rerun or end jobs whose process died, expire stale upload sessions and old scratch
    files (`flows.users.sweep`), retry pending deletions, and post the outcomes nobody
    delivered; returns how many were posted."""
    s = _s(s)
    recover_lost_jobs(s)
    users.sweep(s)
    erase.sweep(s)  # deletions that failed before (S3 down) and what forgotten jobs left
    return deliver_pending(s)


def jobs_in_process() -> list[str]:
    """Jobs whose flows run in this process now (embedded mode)."""
    return submit.running_here()


def prepare_process(s: Settings | None = None) -> int:
    """For a long-lived process that runs jobs in-process, before it accepts work: logs that
    never show a token, the fast allocator (if present; this restarts the process), the one
    Prefect backend of the process (`flows.backend`), and the jobs that an earlier process
    left unfinished, run again here. Returns how many jobs it resumed."""
    from gpu_worker.cpu import reexec_with_fast_allocator

    protect_logs()
    reexec_with_fast_allocator()
    s = _s(s)
    if s.run_mode == "cluster":
        return 0
    backend.start(s)
    return recover_lost_jobs(s).get("resumed", 0)


def stop_jobs(timeout: float = 60.0) -> list[str]:
    """This process is shutting down: stop the jobs it runs (they stay open, and the next
    start resumes them) and wait up to `timeout` for their threads; the ids still running."""
    stop_all_jobs()
    return submit.wait_running(timeout)


# The engine's typed errors reach the bots as `UserError`, worded by `flows.errors`.
for _name, _fn in list(globals().items()):
    if inspect.isfunction(_fn) and _fn.__module__ == __name__ and not _name.startswith("_"):
        globals()[_name] = worded(_fn)
del _name, _fn
