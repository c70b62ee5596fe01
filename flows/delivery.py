"""Delivery: a job tells the chat that asked for it how it goes, and hands over the result.

This module owns everything a flow says to a chat, over the platform's HTTP API (the Telegram
Bot API, or Discord's REST API: the interaction's follow-up webhook while its token is fresh,
then the channel API with a mention). The bot process takes no part: a bot restart loses nothing.

A job submitted from a chat has a reply target, made by the bot and kept in the database
(`flows.jobs.reply_target`; never in the job's parameters, which Prefect stores):

    {"platform": "telegram", "chat_id": 123, "status_message_id": 45,
     "reply_to_message_id": 44, "headline": "🎤 Song — sung by alice"}

`run_job` (`flows.jobs`) gives such a job a `Courier`. While the job runs, a watcher thread
edits the one status message when the step, the progress or the place in the queue changes,
at most once every `status_edit_interval_s`. When the job ends, `deliver` posts the outcome
once (a `deliveries` row is claimed first, as a lease): the cover as playable audio, stems as
a zip, a voice's preview, or the failure's reason (already one sentence for a user). Transient
errors (network, 5xx, 429) are retried with backoff, honouring retry_after in full, until the
give-up time (see "The ledger" below). A file over the bot upload limit goes as a link when
storage can make one, or as a sentence saying why not. Nothing posted on Discord pings
anyone but the user who asked (`allowed_mentions`).

A job may come unprompted, with no status message (a trending drop's cover, `flows.trending`):
its file then carries `reply_to["headline"]` as the caption (Telegram) or the message text
(Discord's channel post), so that the chat can tell what it got and why.

`deliver_pending` is the safety net: jobs that ended without anyone delivering them (their
process died between the two), retries whose wait is over, and claims whose holder died. The
bots run it at start and every few minutes; a cluster's janitor runs it too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mimetypes
import os
import socket
import tempfile
import threading
import time
import uuid
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from flows.catalog import get_song
from flows.db import TERMINAL, Delivery, Job, Voice, now, session
from flows.jobs import STEP_LABELS, get_job, reply_target
from flows.logs import protect_logs
from flows.settings import Settings
from flows.storage import open_storage
from gpu_worker.samples import format_duration

log = logging.getLogger("encore.delivery")

# ------------------------------------------------------------------------------------------
# What the status message says


def headline(
    kind: str,
    song: str | None = None,
    voice: str | None = None,
    pitch: int = 0,
    name: str | None = None,
) -> str:
    """The status message's first line: what the job is."""
    if kind == "cover":
        shift = f", {pitch:+d} semitones" if pitch else ""
        return f"🎤 {song} — sung by {voice}{shift}"
    if kind == "karaoke":
        return f"🎶 Karaoke: {song}"
    if kind == "stems":
        return f"🎛 Stems: {song}"
    if kind == "train":
        return f"🧬 Training your voice “{name}”"
    if kind == "import":
        return f"📦 Importing the voice “{name}”"
    return f"⚙️ {kind.capitalize()}"


def progress_bar(fraction: float, cells: int = 10) -> str:
    filled = round(min(max(fraction, 0.0), 1.0) * cells)
    return "▰" * filled + "▱" * (cells - filled)


RESTART_STEPS = ("restarted", "interrupted")
JOB_NOUNS = {"cover": "cover", "karaoke": "karaoke track", "stems": "stems", "train": "voice"}


def status_line(
    state: str,
    step: str,
    progress: float,
    position: int | None = None,
    reason: str | None = None,
    kind: str | None = None,
) -> str:
    """The status message's second line: where the job is."""
    noun = JOB_NOUNS.get(kind or "", "job")
    if state not in TERMINAL and step == "restarted":  # taken over after a restart
        return f"🔄 Encore restarted; your {noun} continues."
    if state not in TERMINAL and step == "interrupted":  # its process is shutting down
        return f"⏸ Encore is restarting; your {noun} continues when it is back."
    if state == "queued" or step == "queued":
        if not position or position <= 1:
            return "⏳ Queued — yours is next"
        ahead = position - 1
        jobs = "job" if ahead == 1 else "jobs"
        return f"⏳ Queued — #{position} in line ({ahead} {jobs} ahead of yours)"
    if state == "succeeded":
        return "✅ Done"
    if state == "failed":
        return f"❌ {reason or 'It did not work; please try again.'}"
    if state == "cancelled":
        return "🚫 Cancelled."
    if step == "delivering":
        return "📤 Uploading…"
    label = STEP_LABELS.get(step, step.replace("_", " ").capitalize())
    return f"⚙️ {label}…  {progress_bar(progress)} {round(progress * 100)}%"


def status_text(head: str, line: str) -> str:
    return f"{head}\n{line}"


def queue_position(s: Settings, job: Job) -> int:
    """1 for the next job to start; counts queued jobs submitted before this one."""
    with session(s.database) as db:
        ahead = db.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.state == "queued", Job.created_at < job.created_at, Job.id != job.id)
        )
    return int(ahead or 0) + 1


def job_headline(s: Settings, job: Job) -> str:
    """The headline the bot stored, or one made from the job's parameters."""
    reply_to = reply_target(s, job.id) or {}
    if reply_to.get("headline"):
        return str(reply_to["headline"])
    params = job.params or {}
    song = get_song(s, params["song_id"]) if params.get("song_id") else None
    song_label = (f"{song.artist} - {song.title}" if song.artist else song.title) if song else ""
    voice = _voice(s, params.get("voice_id"))
    pitch = int((params.get("options") or {}).get("pitch") or 0)
    return headline(
        job.kind, song_label, voice.name if voice else "", pitch, params.get("name") or ""
    )


def _voice(s: Settings, voice_id: str | None) -> Voice | None:
    if not voice_id:
        return None
    with session(s.database) as db:
        return db.get(Voice, voice_id)


UNDELIVERABLE = "❌ It is ready, but it could not be posted here; please ask again later."

CAPTION_LIMIT = 1024  # Telegram's, in UTF-16 code units


def clip(text: str, limit: int = CAPTION_LIMIT) -> str:
    """`text` in at most `limit` UTF-16 code units (as Telegram counts), cut between
    characters and ended with an ellipsis when it is longer."""
    if len(text.encode("utf-16-le")) // 2 <= limit:
        return text
    kept, used = [], 0
    for char in text:
        units = 2 if ord(char) > 0xFFFF else 1
        if used + units > limit - 1:  # room for the ellipsis
            break
        kept.append(char)
        used += units
    return "".join(kept).rstrip().rstrip("\u200d") + "…"


# ------------------------------------------------------------------------------------------
# The Bot API client


class BotApiError(Exception):
    """The Bot API said no (`ok: false`), or answered with something that is not its JSON."""

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


def _transient(exc: BaseException) -> bool:
    """Worth trying again later: the platform was busy, failing or unreachable."""
    if isinstance(exc, BotApiError):
        return exc.transient
    return isinstance(exc, httpx.TransportError)


def _retry_after(exc: BaseException) -> float | None:
    if isinstance(exc, BotApiError) and exc.retry_after:
        with contextlib.suppress(TypeError, ValueError):
            return max(0.0, float(exc.retry_after))
    return None


def _quickly(request):
    """`request()`, retried a few times within seconds when it fails transiently: for status
    edits, which are cosmetic and safe to repeat. A long `retry_after` is not waited for."""
    for attempt in range(QUICK_ATTEMPTS):
        try:
            return request()
        except Exception as exc:
            wait = _retry_after(exc) or 0.5 * 2**attempt
            if attempt + 1 == QUICK_ATTEMPTS or not _transient(exc) or wait > QUICK_MAX_WAIT_S:
                raise
            time.sleep(wait)
    raise AssertionError("unreachable")


def _http_client(s: Settings) -> httpx.Client:
    protect_logs(s)  # before the first request: the URLs hold the token
    return httpx.Client(timeout=httpx.Timeout(30.0, read=s.delivery_read_timeout_s, write=120.0))


class TelegramApi:
    """A small synchronous Bot API client for flows (the bot itself uses python-telegram-bot).

    `call` makes one request (retrying is the delivery's business, which knows what was sent);
    `quick=True` retries briefly, for status edits."""

    def __init__(self, s: Settings):
        if not s.telegram_token:
            raise NoBotToken("ENCORE_TELEGRAM_TOKEN is not set; results cannot be posted.")
        self._base = f"{s.telegram_api_url}{s.telegram_token}"
        self._http = _http_client(s)

    def close(self) -> None:
        self._http.close()

    def call(
        self,
        method: str,
        data: dict[str, Any],
        files: dict[str, tuple[Path, str]] | None = None,
        quick: bool = False,
    ):
        """Call `method`; raises BotApiError for a refusal, httpx errors for a failed request."""
        if quick:
            return _quickly(lambda: self._once(method, data, files))
        return self._once(method, data, files)

    def _once(self, method: str, data: dict[str, Any], files: dict[str, tuple[Path, str]] | None):
        form = {
            key: json.dumps(value) if isinstance(value, dict | list) else str(value)
            for key, value in data.items()
            if value is not None
        }
        handles = {}
        try:
            for field, (path, filename) in (files or {}).items():
                mime = mimetypes.guess_type(filename)[0] or "application/octet-stream"
                handles[field] = (filename, open(path, "rb"), mime)  # noqa: SIM115
            response = self._http.post(f"{self._base}/{method}", data=form, files=handles or None)
        finally:
            for _name, handle, _mime in handles.values():
                handle.close()
        try:
            body = response.json()
        except ValueError:
            raise BotApiError(response.status_code, response.text[:200]) from None
        if body.get("ok"):
            return body.get("result")
        retry_after = (body.get("parameters") or {}).get("retry_after")
        raise BotApiError(
            int(body.get("error_code") or response.status_code),
            str(body.get("description") or ""),
            retry_after,
        )


# ------------------------------------------------------------------------------------------
# The courier: status edits while the job runs, the outcome when it ends


class Courier:
    """Speaks for one job in its chat. All edits of the status message go through here."""

    platform_name = "Telegram"
    api_class: type = TelegramApi  # the platform's HTTP client

    def __init__(self, s: Settings, job_id: str, reply_to: dict):
        self.s = s
        self.job_id = job_id
        self.reply_to = reply_to
        self.interval = max(0.0, s.status_edit_interval_s)
        self._api = None
        self._shown: str | None = None
        self._last_edit = float("-inf")
        self._message_gone = False
        self._head = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ledger: Lease | None = None  # while delivering: what was sent, kept in the database

    # -- the API, made on first use so that a job without a token still runs

    @property
    def api(self):
        if self._api is None:
            self._api = self.api_class(self.s)
        return self._api

    @property
    def upload_limit(self) -> int:
        return self.s.telegram_upload_limit_bytes

    @property
    def chat_id(self):
        return self.reply_to.get("chat_id")

    def start(self) -> None:
        if not self.reply_to.get("status_message_id"):
            return
        self._show_now()  # a job taken over after a restart says so before anything else
        self._thread = threading.Thread(
            target=self._watch, name=f"courier-{self.job_id}", daemon=True
        )
        self._thread.start()

    def _show_now(self) -> None:
        """Show at once that the job was taken over after a restart, or that it waits for one
        (the watcher shows everything else, and `deliver` the outcome)."""
        try:
            job = get_job(self.s, self.job_id)
            if job is not None and job.state not in TERMINAL and job.step in RESTART_STEPS:
                line = status_line(job.state, job.step, job.progress, kind=job.kind)
                self.edit(status_text(job_headline(self.s, job), line))
        except Exception:  # a status edit is never worth failing the job for
            log.warning("job %s: status edit failed", self.job_id, exc_info=True)

    def close(self) -> None:
        """Stop watching and deliver the outcome (once; another delivery may have won); a job
        left open (its process shuts down) shows that it will continue."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._show_now()
        try:
            deliver(self.s, self.job_id, courier=self)
        finally:
            if self._api is not None:
                self._api.close()

    def _watch(self) -> None:
        # A running job is looked at often (its progress moves); a job waiting in line only
        # as often as its message may change, so a long line costs the database little.
        running_poll = max(0.05, min(0.5, self.interval / 2))
        poll, headline = running_poll, None
        while not self._stop.wait(poll):
            try:
                job = get_job(self.s, self.job_id)
                if job is None or job.state in TERMINAL:
                    return
                queued = job.state == "queued"
                poll = max(running_poll, self.interval) if queued else running_poll
                position = queue_position(self.s, job) if queued else None
                headline = headline or job_headline(self.s, job)
                text = status_text(
                    headline,
                    status_line(job.state, job.step, job.progress, position, kind=job.kind),
                )
                if text != self._shown and time.monotonic() - self._last_edit >= self.interval:
                    self.edit(text)
            except NoBotToken:
                log.warning("job %s: no bot token, so no status edits", self.job_id)
                return
            except Exception as exc:  # a status edit is never worth failing the job for
                log.warning("job %s: status edit failed: %s", self.job_id, exc)
                pause = _retry_after(exc)
                if pause:  # asked to slow down: no edit until then
                    self._stop.wait(pause * self.s.delivery_time_scale)

    def edit(self, text: str, wait: bool = False) -> bool:
        """Show `text` in the status message; False if there is no message to edit."""
        message_id = self.reply_to.get("status_message_id")
        if not message_id or self._message_gone:
            return False
        if text == self._shown:
            return True
        if wait:
            time.sleep(max(0.0, self._last_edit + self.interval - time.monotonic()))
        try:
            self.api.call(
                "editMessageText",
                {"chat_id": self.chat_id, "message_id": message_id, "text": text},
                quick=True,
            )
        except BotApiError as exc:
            lowered = exc.description.lower()
            if "not modified" not in lowered:
                if "not found" in lowered or "can't be edited" in lowered:
                    self._message_gone = True
                    return False
                raise
        self._shown = text
        self._last_edit = time.monotonic()
        return True

    def send(self, method: str, data: dict, files: dict[str, tuple[Path, str]] | None = None):
        """Post one message of the outcome, at most once, or twice when the platform's answer
        to the first was lost (see `Lease.sending`)."""
        if self.ledger is None:
            return self._send(method, data, files)
        return self.ledger.sending(lambda: self._send(method, data, files))

    def _send(self, method: str, data: dict, files: dict[str, tuple[Path, str]] | None = None):
        data = {"chat_id": self.chat_id, **data}
        reply_id = self.reply_to.get("reply_to_message_id")
        if reply_id:
            data["reply_parameters"] = {"message_id": reply_id, "allow_sending_without_reply": True}
        return self.api.call(method, data, files)

    def say(self, text: str):
        return self.send("sendMessage", {"text": text})

    def unprompted(self) -> bool:
        """True when no status message tells the chat what this job is."""
        return not self.reply_to.get("status_message_id")

    def _captioned(self, caption: str | None) -> str | None:
        """A file's caption; an unprompted job's starts with its headline."""
        head = self.reply_to.get("headline")
        if head and self.unprompted():
            return f"{head}\n{caption}" if caption else str(head)
        return caption

    def uploading(self) -> None:
        """Show that the result is on its way (before a file upload, which takes a while)."""
        with contextlib.suppress(Exception):  # cosmetic: never a reason not to send
            self.edit(status_text(self._head, status_line("running", "delivering", 1.0)), wait=True)

    def waiting(self, job: Job) -> None:
        """Show that the platform refuses the outcome for now and that it will be retried."""
        if job.state != "succeeded":
            return  # the outcome is the status message itself, which cannot be edited now
        line = f"⏳ Waiting for {self.platform_name} to accept the upload…"
        with contextlib.suppress(Exception):
            self.edit(status_text(self._head or job_headline(self.s, job), line))

    def gave_up(self, job: Job, sentence: str) -> None:
        """Tell the chat, if it still listens, that the outcome will not come (best effort)."""
        with contextlib.suppress(Exception):
            if not self.edit(status_text(self._head or job_headline(self.s, job), sentence)):
                self._send("sendMessage", {"text": sentence})

    def undeliverable(self, job: Job) -> None:
        with contextlib.suppress(Exception):
            self.edit(status_text(self._head or job_headline(self.s, job), UNDELIVERABLE))

    # -- the outcome

    def finish(self, job: Job) -> dict:
        """Post the ended job's outcome; returns what was sent (for the delivery record)."""
        head = self._head = job_headline(self.s, job)
        if job.state == "succeeded":
            sent = self._send_result(job)
            with contextlib.suppress(Exception):  # it was sent: a failed "Done" changes nothing
                self.edit(status_text(head, status_line("succeeded", "done", 1.0)), wait=True)
            return sent
        line = status_line(job.state, "done", job.progress, reason=job.reason)
        if not self.edit(status_text(head, line), wait=True) and job.state == "failed":
            self.say(line)  # no status message to show it in
            return {"said": "failure"}
        return {"edited": job.state}

    def _send_result(self, job: Job) -> dict:
        result = job.result or {}
        params = job.params or {}
        storage = open_storage(self.s.storage, self.s.public_files_url)
        with tempfile.TemporaryDirectory(dir=_scratch(self.s)) as tmp:
            workdir = Path(tmp)
            if job.kind in ("cover", "karaoke"):
                song_id = params.get("song_id") or result.get("song_id")  # (a link's song)
                song = get_song(self.s, song_id) if song_id else None
                voice = _voice(self.s, params.get("voice_id"))
                title = Path(result.get("filename") or "cover").stem
                performer = "Encore"
                if song is not None:
                    suffix = f"{voice.name} cover" if job.kind == "cover" and voice else job.kind
                    title = f"{song.title} ({suffix})"
                    performer = song.artist or (voice.name if voice else "Encore")
                what = "cover" if job.kind == "cover" else "karaoke track"
                return self._send_file(
                    storage,
                    result["uri"],
                    result.get("filename"),
                    workdir,
                    what,
                    "sendAudio",
                    "audio",
                    {
                        "title": title[:64],
                        "performer": performer[:64],
                        "duration": round(float(result.get("duration") or 0)) or None,
                    },
                    caption=result.get("note"),  # an a cappella song, for one
                )
            if job.kind == "stems":
                return self._send_stems(storage, result, workdir)
            if job.kind == "train":
                voice_name = result.get("voice") or params.get("name") or "your voice"
                caption = (
                    f"Your voice “{voice_name}” is ready, trained on "
                    f"{format_duration(float(result.get('voiced_seconds') or 0))} of voice. "
                    f"Here is how it sings. {_default_hint(self.s, job.owner, result)}"
                )
                if result.get("preview_uri"):
                    return self._send_file(
                        storage,
                        result["preview_uri"],
                        f"{voice_name} preview{Path(result['preview_uri']).suffix}",
                        workdir,
                        "preview",
                        "sendAudio",
                        "audio",
                        {"title": f"{voice_name} (preview)", "performer": "Encore"},
                        caption=caption,
                    )
                self.say(caption)
                return {"said": "trained"}
            if job.kind == "import":
                voice_name = result.get("voice") or params.get("name")
                rate = int(result.get("sample_rate") or 0) // 1000
                index = "with its index" if result.get("index") else "without an index"
                self.say(
                    f"✅ Imported “{voice_name}” (RVC {result.get('version', '')}, {rate} kHz, "
                    f"{index}). {_default_hint(self.s, job.owner, result)}"
                )
                return {"said": "imported"}
            if result.get("uri"):
                return self._send_file(
                    storage,
                    result["uri"],
                    result.get("filename"),
                    workdir,
                    "file",
                    "sendDocument",
                    "document",
                    {},
                )
            self.say("✅ Done.")
            return {"said": "done"}

    def _send_file(
        self,
        storage,
        uri: str,
        filename: str | None,
        workdir: Path,
        what: str,
        method: str,
        field: str,
        extra: dict,
        caption: str | None = None,
    ) -> dict:
        local = storage.fetch(uri, workdir)
        name = filename or local.name
        size = local.stat().st_size
        limit = self.upload_limit
        if size > limit:
            return self._too_big(storage, uri, what, size)
        data = {key: value for key, value in extra.items() if value is not None}
        caption = self._captioned(caption)
        if caption:
            data["caption"] = clip(caption)
        self.uploading()
        try:
            message = self.send(method, data, {field: (local, name)})
        except BotApiError as exc:
            if exc.code == 413:  # the server's limit is lower than we were told
                return self._too_big(storage, uri, what, size)
            raise
        return {"sent": method, "message_id": (message or {}).get("message_id"), "bytes": size}

    def _too_big(self, storage, uri: str, what: str, size: int) -> dict:
        limit_mb, size_mb = _megabytes(self.upload_limit), _megabytes(size)
        link = storage.link(uri, self.s.link_expiry_s)
        over = f"Your {what} is {size_mb}, over {self.platform_name}'s {limit_mb} limit for bots"
        if link:
            self.say(f"{over}; download it here: {link}")
            return {"sent": "link", "bytes": size}
        self.say(f"{over}, and this server cannot make download links; try a shorter song.")
        return {"sent": "too_big", "bytes": size}

    def _send_stems(self, storage, result: dict, workdir: Path) -> dict:
        """The zip of stems; when the zip is over the limit, each stem as its own file."""
        import zipfile

        local = storage.fetch(result["uri"], workdir)
        limit = self.upload_limit
        if local.stat().st_size <= limit:
            return self._send_file(
                storage,
                result["uri"],
                result.get("filename"),
                workdir,
                "stems zip",
                "sendDocument",
                "document",
                {},
                caption=_stems_caption(result),
            )
        with zipfile.ZipFile(local) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            if any(m.file_size > limit for m in members):
                return self._too_big(storage, result["uri"], "stems zip", local.stat().st_size)
            sent = []
            stem = Path(result.get("filename") or "stems").stem
            for member in members:
                target = workdir / "stems" / f"{stem} - {Path(member.filename).name}"
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(target, "wb") as out:
                    while block := src.read(1 << 20):
                        out.write(block)
                self.uploading()
                message = self.send("sendDocument", {}, {"document": (target, target.name)})
                sent.append((message or {}).get("message_id"))
                target.unlink()
        return {"sent": "stems", "message_ids": sent}


def _stems_caption(result: dict) -> str:
    parts = "drums, bass, other, guitar, piano" if "guitar" in result.get("stems", []) else None
    said = f"Vocals, {parts or 'drums, bass, other'} and the instrumental, as FLAC."
    return f"{said}\n{result['note']}" if result.get("note") else said


# ------------------------------------------------------------------------------------------
# Discord: the interaction's webhook while its token is fresh, else the channel API


# Every message Encore posts on Discord says this: text in it (a song title) pings nobody.
NO_MENTIONS: dict = {"parse": []}


class DiscordApi:
    """A small synchronous Discord REST client for flows (the bot itself uses discord.py).

    Like `TelegramApi`, `call` makes one request; `quick=True` retries briefly."""

    def __init__(self, s: Settings):
        self.s = s
        self._base = s.discord_api_url.rstrip("/")
        self._http = _http_client(s)

    def close(self) -> None:
        self._http.close()

    def call(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        files: dict[str, tuple[Path, str]] | None = None,
        bot: bool = False,
        quick: bool = False,
    ):
        """Call the REST API; raises BotApiError for a refusal, httpx errors for a failed
        request."""
        if quick:
            return _quickly(lambda: self._once(method, path, body, files, bot))
        return self._once(method, path, body, files, bot)

    def _once(self, method, path, body, files, bot):
        headers = {}
        if bot:
            if not self.s.discord_token:
                raise NoBotToken("ENCORE_DISCORD_TOKEN is not set; results cannot be posted.")
            headers["Authorization"] = f"Bot {self.s.discord_token}"
        url = f"{self._base}{path}"
        if files:
            handles = {}
            try:
                payload = dict(body or {})
                payload["attachments"] = [
                    {"id": i, "filename": name} for i, (_path, name) in enumerate(files.values())
                ]
                for i, (path_, name) in enumerate(files.values()):
                    mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
                    handles[f"files[{i}]"] = (name, open(path_, "rb"), mime)  # noqa: SIM115
                response = self._http.request(
                    method,
                    url,
                    headers=headers,
                    data={"payload_json": json.dumps(payload)},
                    files=handles,
                )
            finally:
                for _name, handle, _mime in handles.values():
                    handle.close()
        else:
            response = self._http.request(method, url, headers=headers, json=body)
        if response.status_code == 204:
            return None
        try:
            data = response.json()
        except ValueError:
            if response.is_success:
                return None
            raise BotApiError(response.status_code, response.text[:200]) from None
        if response.is_success:
            return data
        data = data if isinstance(data, dict) else {}
        raise BotApiError(
            response.status_code, str(data.get("message") or ""), data.get("retry_after")
        )


class DiscordCourier(Courier):
    """A Courier for a Discord interaction.

    `reply_to` holds `application_id`, `interaction_token`, `token_at` (epoch seconds),
    `channel_id`, `user_id` and `upload_limit` (the interaction's `attachment_size_limit`).
    While the token is fresh, the deferred response is the status message and results are
    follow-ups. Later, results go to the channel with a mention of the user.
    """

    platform_name = "Discord"
    api_class = DiscordApi

    @property
    def upload_limit(self) -> int:
        return int(self.reply_to.get("upload_limit") or self.s.discord_upload_limit_bytes)

    @property
    def chat_id(self):
        return self.reply_to.get("channel_id")

    def fresh(self) -> bool:
        age = time.time() - float(self.reply_to.get("token_at") or 0)
        return age < self.s.discord_token_fresh_s

    def unprompted(self) -> bool:
        return not self.reply_to.get("interaction_token")

    def _webhook(self) -> str:
        return f"/webhooks/{self.reply_to['application_id']}/{self.reply_to['interaction_token']}"

    def edit(self, text: str, wait: bool = False) -> bool:
        if self._message_gone or not self.reply_to.get("interaction_token"):
            return False
        if not self.fresh():
            self._message_gone = True
            return False
        if text == self._shown:
            return True
        if wait:
            time.sleep(max(0.0, self._last_edit + self.interval - time.monotonic()))
        try:
            self.api.call(
                "PATCH",
                f"{self._webhook()}/messages/@original",
                {"content": text, "allowed_mentions": NO_MENTIONS},
                quick=True,
            )
        except BotApiError as exc:
            if exc.code in (401, 404):  # the token expired, or the message was deleted
                self._message_gone = True
                return False
            raise
        self._shown = text
        self._last_edit = time.monotonic()
        return True

    def _send(self, method: str, data: dict, files: dict[str, tuple[Path, str]] | None = None):
        if method == "sendMessage":
            content = data.get("text") or ""
        elif data.get("caption"):
            content = data["caption"]
        elif data.get("title"):
            content = f"🎧 {data['title']}"
        else:
            content = ""
        content = content[:1900]
        if self.fresh() and self.reply_to.get("interaction_token"):
            try:
                path = f"{self._webhook()}?wait=true"
                body = {"content": content, "allowed_mentions": NO_MENTIONS}
                return self.api.call("POST", path, body, files)
            except BotApiError as exc:
                if exc.code not in (401, 404):
                    raise
        user = self.reply_to.get("user_id")
        body = {
            "content": f"<@{user}> {content}" if user else content,
            # the user who asked is pinged; nobody a song title names (@everyone, roles, users)
            "allowed_mentions": {"parse": [], "users": [str(user)] if user else []},
        }
        return self.api.call("POST", f"/channels/{self.chat_id}/messages", body, files, bot=True)


def _megabytes(n: int) -> str:
    if n >= 10 * 2**20:
        return f"{n / 2**20:.0f} MB"
    if n >= 2**20:
        return f"{n / 2**20:.1f} MB"
    return f"{max(1, round(n / 1024))} KB"


def _scratch(s: Settings) -> Path:
    path = s.work_dir / "delivery"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _default_hint(s: Settings, owner: str, result: dict) -> str:
    from flows.users import default_voice

    current = default_voice(s, owner)
    name = result.get("voice")
    if current is not None and current.id == result.get("voice_id"):
        return "It is your default voice now: try /cover <song>."
    return f"Use it with /voice {name}, then /cover <song>."


# ------------------------------------------------------------------------------------------
# Delivering, once


def courier_for(s: Settings, job_id: str) -> Courier | None:
    """The courier for a job submitted from a chat this module can post to, else None."""
    reply_to = reply_target(s, job_id)  # kept in the database, never in run parameters
    if reply_to is None:
        return None
    if reply_to.get("platform") == "telegram":
        return Courier(s, job_id, reply_to)
    if reply_to.get("platform") == "discord":
        return DiscordCourier(s, job_id, reply_to)
    return None


# The ledger (`deliveries`, one row per job) makes delivery survive refusals and crashes:
#
#   (no row) --claim--> sending --sent------------------> sent
#                       |  ^   --refused for good------> failed
#                       |  |   --still refused at give_up_at--> gave_up
#                       |  +-- claim (next_at passed, or the holder's lease ran out)
#                       +--transient failure, a long wait--> waiting
#
# A claim is a lease: its holder renews `lease_until` while it works, so a claim whose holder
# died runs out and `deliver_pending` (the bots' sweeper, the cluster's janitor) takes it
# over. Short waits (up to `delivery_hold_s`) are waited by the holder; longer ones release
# the row as `waiting` until `next_at`. `retry_after` is honoured in full.
#
# Each message of an outcome is a "part" in `detail["parts"]`: marked in flight before it is
# sent and sent after, so a retry skips what arrived. A part whose answer was lost (a read
# timeout after the request went out), or whose holder died while it was in flight, may have
# arrived: it is sent once more at most, and `lost` counts such sends. A third send is never
# made; the part is then recorded as `unconfirmed`.

FINAL = ("sent", "failed", "gave_up")
BACKOFF_MAX_S = 600.0  # the longest wait between tries when the platform gives no retry_after


class LeaseLost(Exception):
    """Another process took this delivery over (this one stalled past its lease)."""


def _holder() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _scaled(s: Settings, seconds: float) -> timedelta:
    return timedelta(seconds=seconds * s.delivery_time_scale)


def backoff_s(attempts: int) -> float:
    """Seconds to wait after the `attempts`-th failed try when the platform names no time."""
    return min(BACKOFF_MAX_S, 0.5 * 2 ** max(0, attempts - 1))


def wait_s(exc: BaseException, attempts: int) -> float:
    """How long to wait before the next try: the platform's `retry_after` in full, if it gave
    one, else exponential backoff (in the platform's seconds; `delivery_time_scale` applies)."""
    after = _retry_after(exc)
    return after if after is not None else backoff_s(attempts)


class Lease:
    """This process's claim on one job's delivery (a `deliveries` row it holds)."""

    def __init__(self, s: Settings, job_id: str, holder: str, row: Delivery):
        self.s = s
        self.job_id = job_id
        self.holder = holder
        self.attempts = row.attempts
        self.give_up_at = row.give_up_at
        self.detail: dict = dict(row.detail or {})
        self._parts_seen = 0
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # -- holding it

    def __enter__(self) -> Lease:
        period = max(0.05, self.s.delivery_lease_s * self.s.delivery_time_scale / 3)
        self._beat = threading.Thread(
            target=self._renew_every, args=(period,), name=f"lease-{self.job_id}", daemon=True
        )
        self._beat.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=30)

    def _renew_every(self, period: float) -> None:
        while not self._stop.wait(period):
            try:
                if not self._write(lease_until=now() + _scaled(self.s, self.s.delivery_lease_s)):
                    return  # taken over: the next write of this holder says so
            except Exception:
                log.warning("job %s: renewing the delivery lease failed", self.job_id)

    def _write(self, **values) -> bool:
        """Update the row if this holder still holds it; False if it does not."""
        values.setdefault("updated_at", now())
        with session(self.s.database) as db:
            done = db.execute(
                update(Delivery)
                .where(Delivery.job_id == self.job_id, Delivery.holder == self.holder)
                .values(**values)
            )
            return done.rowcount == 1

    def _save(self, **values) -> None:
        if not self._write(detail=dict(self.detail), attempts=self.attempts, **values):
            raise LeaseLost(f"the delivery of job {self.job_id} was taken over")

    # -- what happened

    def tried(self) -> None:
        """A new try of the whole outcome begins (its parts are counted again from the first)."""
        self.attempts += 1
        self._parts_seen = 0
        self._save()

    def past_give_up(self, wait: float) -> bool:
        """True if the next try, `wait` platform seconds from now, is past the give-up time."""
        deadline = self.give_up_at
        if deadline is None:
            return False
        if deadline.tzinfo is None:  # SQLite gives timestamps back naive (they are UTC)
            deadline = deadline.replace(tzinfo=UTC)
        return now() + _scaled(self.s, wait) > deadline

    def note(self, error: str, wait: float) -> None:
        """A transient failure; the holder waits `wait` platform seconds itself."""
        self.detail["error"] = error
        self._save(next_at=now() + _scaled(self.s, wait))

    def release(self, error: str, wait: float) -> None:
        """A transient failure and a long wait: whoever sweeps after `next_at` tries again."""
        self.detail["error"] = error
        self._save(state="waiting", holder=None, lease_until=None,
                   next_at=now() + _scaled(self.s, wait))  # fmt: skip

    def end(self, state: str, **detail) -> None:
        """The delivery is over: `sent`, `failed` (refused for good) or `gave_up`."""
        assert state in FINAL
        self.detail.update(detail)
        self._save(state=state, holder=None, lease_until=None, next_at=None)

    def sending(self, send):
        """Run `send()` (one message of the outcome) as the next part, at most twice."""
        self._parts_seen += 1
        key = str(self._parts_seen)
        parts = self.detail.setdefault("parts", {})
        part = dict(parts.get(key) or {})
        if part.get("sent"):
            return part.get("result")
        if part.pop("in_flight", False):  # its holder died while sending it: it may have gone
            part["lost"] = int(part.get("lost", 0)) + 1
            part["why"] = "the process sending it died before the answer came"
        if int(part.get("lost", 0)) >= 2:  # two sends may have arrived: never a third
            part.update(sent=True, unconfirmed=True)
            parts[key] = part
            self._save()
            return None
        parts[key] = {**part, "in_flight": True}
        self._save()
        try:
            result = send()
        except ANSWER_LOST as exc:
            lost = int(part.get("lost", 0)) + 1
            why = f"{type(exc).__name__}: the request was sent, its answer was lost"
            parts[key] = {**part, "lost": lost, "why": why}
            self._save()
            raise
        except Exception:
            parts[key] = part
            self._save()
            raise
        small = {}
        if isinstance(result, dict):
            small = {k: result[k] for k in ("message_id", "id") if k in result}
        parts[key] = {**part, "sent": True, "result": small}
        self._save()
        return small or result


def claim(s: Settings, job_id: str) -> Lease | None:
    """Take the job's delivery: a new row, or one whose wait is over or whose holder died.
    None if it is delivered, held by a live process, or waiting still."""
    me, at = _holder(), now()
    lease_until = at + _scaled(s, s.delivery_lease_s)
    try:
        with session(s.database) as db:
            db.add(
                Delivery(
                    job_id=job_id,
                    state="sending",
                    attempts=0,
                    detail={},
                    holder=me,
                    lease_until=lease_until,
                    give_up_at=at + _scaled(s, s.delivery_give_up_s),
                )
            )
    except IntegrityError:
        with session(s.database) as db:
            taken = db.execute(
                update(Delivery)
                .where(
                    Delivery.job_id == job_id,
                    or_(
                        and_(Delivery.state == "waiting", Delivery.next_at <= at),
                        and_(Delivery.state == "sending", Delivery.lease_until < at),
                    ),
                )
                .values(state="sending", holder=me, lease_until=lease_until, updated_at=at)
            )
            if taken.rowcount != 1:
                return None
    with session(s.database) as db:
        row = db.get(Delivery, job_id)
        return Lease(s, job_id, me, row) if row is not None and row.holder == me else None


def delivery_state(s: Settings, job_id: str) -> str | None:
    with session(s.database) as db:
        row = db.get(Delivery, job_id)
        return row.state if row is not None else None


def gave_up_sentence(s: Settings, platform: str) -> str:
    """The one sentence a chat gets when its outcome is given up."""
    span = format_duration(s.delivery_give_up_s)
    return (
        f"❌ It was ready, but {platform} refused it for {span}, so I stopped trying; "
        "please ask again."
    )


def deliver(s: Settings, job_id: str, courier: Courier | None = None) -> bool:
    """Post an ended job's outcome to its chat, unless that was done or is being done.

    Returns True if this call took the delivery (and ended it, or left it waiting for a retry).
    """
    job = get_job(s, job_id)
    if job is None or job.state not in TERMINAL:
        return False
    courier = courier or courier_for(s, job_id)
    if courier is None:
        return False
    lease = claim(s, job_id)
    if lease is None:
        return False
    courier.ledger = lease
    try:
        with lease:
            _deliver_held(s, job, courier, lease)
    except LeaseLost:
        log.warning("job %s: another process took the delivery over", job_id)
    finally:
        courier.ledger = None
    return True


def _deliver_held(s: Settings, job: Job, courier: Courier, lease: Lease) -> None:
    while True:
        lease.tried()
        try:
            detail = courier.finish(job)
        except LeaseLost:
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
            if not _transient(exc):
                log.warning("job %s: delivery refused", job.id, exc_info=True)
                if job.state == "succeeded":
                    courier.undeliverable(job)
                lease.end("failed", error=error)
                return
            wait = wait_s(exc, lease.attempts)
            if lease.past_give_up(wait):
                sentence = gave_up_sentence(s, courier.platform_name)
                log.warning("job %s: delivery given up after %d tries", job.id, lease.attempts)
                courier.gave_up(job, sentence)
                _note_undelivered(s, job.id, sentence)
                lease.end("gave_up", error=error)
                return
            log.info("job %s: delivery failed (%s); next try in %gs", job.id, error, wait)
            courier.waiting(job)
            if wait > s.delivery_hold_s:
                lease.release(error, wait)
                return
            lease.note(error, wait)
            time.sleep(wait * s.delivery_time_scale)
        else:
            lease.end("sent", sent=detail)
            return


def _note_undelivered(s: Settings, job_id: str, sentence: str) -> None:
    """Keep the give-up sentence in the ended job's result (the job itself stays succeeded)."""
    with session(s.database) as db:
        row = db.get(Job, job_id, with_for_update=True)
        if row is not None:
            row.result = {**(row.result or {}), "undelivered": sentence}


def deliver_pending(s: Settings, max_age: timedelta = timedelta(days=1)) -> int:
    """Deliver what is due: ended chat jobs nobody delivered (their process died), waits that
    are over, and claims whose holder died. How many this call took."""
    at = now()
    with session(s.database) as db:
        unclaimed = (
            select(Job.id)
            .outerjoin(Delivery, Delivery.job_id == Job.id)
            .where(
                Delivery.job_id.is_(None),
                Job.state.in_(TERMINAL),
                Job.updated_at >= at - max_age,
            )
        )
        due = select(Delivery.job_id).where(
            or_(
                and_(Delivery.state == "waiting", Delivery.next_at <= at),
                and_(Delivery.state == "sending", Delivery.lease_until < at),
            )
        )
        ids = list(db.scalars(unclaimed)) + list(db.scalars(due))
    delivered = 0
    for job_id in ids:
        courier = courier_for(s, job_id)
        if courier is None:
            continue
        try:
            delivered += deliver(s, job_id, courier=courier)
        finally:
            if courier._api is not None:
                courier._api.close()
    return delivered
