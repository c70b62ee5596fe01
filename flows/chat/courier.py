"""The courier: speaks for one job in its chat, whatever the platform.

A job submitted from a chat has a reply target, made by the bot and kept in the database
(`flows.jobs.reply_target`; never in the job's parameters, which Prefect stores):

    {"platform": "telegram", "chat_id": 123, "status_message_id": 45,
     "reply_to_message_id": 44, "headline": "🎤 Song — sung by alice"}

Each platform's module subclasses `Courier` (`flows.chat.telegram`, `flows.chat.discord`);
`flows.chat.delivery.courier_for` makes the one a target's platform needs. A courier is the
job's observer (`flows.jobs.JobObserver`): while the job runs it edits the one status message
when the step, the progress or the place in the queue changes, at most once every
`status_edit_interval_s`; when the job ends it posts the outcome once (`deliver`, through the
ledger, `flows.chat.ledger`): the cover as playable audio, stems as a zip, a voice's preview,
or the failure's reason (already one sentence for a user). Transient errors (network, 5xx,
429) are retried with backoff, honouring retry_after in full, until the give-up time. A file
over the bot upload limit goes as a link when storage can make one, or as a sentence saying
why not.

A job may come unprompted, with no status message (a trending drop's cover, `flows.trending`):
its file then carries `reply_to["headline"]` as the caption (Telegram) or the message text
(Discord's channel post), so that the chat can tell what it got and why.

A platform's subclass says how to edit the status message (`edit`) and how to post one
message (`_send`); the messages are named after the Bot API's methods (`sendMessage`,
`sendAudio`, `sendDocument`), whatever the platform makes of them.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
import zipfile
from abc import ABC, abstractmethod
from pathlib import Path

from flows.catalog import get_song
from flows.chat import text
from flows.chat.client import BotApiError, NoBotToken, retry_after, transient
from flows.chat.ledger import Lease, LeaseLost, claim, wait_s
from flows.db import TERMINAL, Job, Voice, session
from flows.jobs import get_job, queue_position, reply_target
from flows.settings import Settings
from flows.storage import open_storage
from flows.users import default_voice

log = logging.getLogger("encore.delivery")

# ------------------------------------------------------------------------------------------
# What a job is called


def job_voice(s: Settings, job: Job) -> Voice | None:
    voice_id = (job.params or {}).get("voice_id")
    if not voice_id:
        return None
    with session(s.database) as db:
        return db.get(Voice, voice_id)


def job_headline(s: Settings, job: Job) -> str:
    """The headline the bot stored, or one made from the job's parameters."""
    reply_to = reply_target(s, job.id) or {}
    if reply_to.get("headline"):
        return str(reply_to["headline"])
    params = job.params or {}
    song = get_song(s, params["song_id"]) if params.get("song_id") else None
    song_label = (f"{song.artist} - {song.title}" if song.artist else song.title) if song else ""
    voice = job_voice(s, job)
    pitch = int((params.get("options") or {}).get("pitch") or 0)
    return text.headline(
        job.kind, song_label, voice.name if voice else "", pitch, params.get("name") or ""
    )


def _note_undelivered(s: Settings, job_id: str, sentence: str) -> None:
    """Keep the give-up sentence in the ended job's result (the job itself stays succeeded)."""
    with session(s.database) as db:
        row = db.get(Job, job_id, with_for_update=True)
        if row is not None:
            row.result = {**(row.result or {}), "undelivered": sentence}


def _scratch(s: Settings) -> Path:
    path = s.work_dir / "delivery"
    path.mkdir(parents=True, exist_ok=True)
    return path


# ------------------------------------------------------------------------------------------
# The courier: status edits while the job runs, the outcome when it ends


class Courier(ABC):
    """Speaks for one job in its chat. All edits of the status message go through here.

    Each platform's module (`flows.chat.telegram`, `flows.chat.discord`) implements the
    abstract methods: how it addresses the chat, edits the status message and posts."""

    platform = ""  # the reply target's "platform"
    api_class: type  # the platform's HTTP client

    def __init__(self, s: Settings, job_id: str, reply_to: dict):
        self.s = s
        self.job_id = job_id
        self.reply_to = reply_to
        self.words = text.wording(self.platform)
        self.interval = max(0.0, s.status_edit_interval_s)
        self.every_s = max(0.05, min(0.5, self.interval / 2))  # how often it reads the job
        self.waiting_every_s = max(self.every_s, self.interval)  # ... while it waits in line
        self._api = None
        self._shown: str | None = None
        self._last_edit = float("-inf")
        self._message_gone = False
        self._muted = False  # no token: no status edits
        self._quiet_until = float("-inf")  # asked to slow down: no edit until then
        self._head = ""
        self._singer: str | None = None
        self._headline: str | None = None
        self.ledger: Lease | None = None  # while delivering: what was sent, kept in the database

    # -- the API, made on first use so that a job without a token still runs

    @property
    def api(self):
        if self._api is None:
            self._api = self.api_class(self.s)
        return self._api

    def close_api(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None

    @property
    @abstractmethod
    def upload_limit(self) -> int:
        """Set by each platform."""

    @property
    @abstractmethod
    def chat_id(self):
        """Set by each platform."""

    @abstractmethod
    def edit(self, text: str, wait: bool = False) -> bool:
        """Show `text` in the status message; False if there is no message to edit."""

    @abstractmethod
    def _send(self, method: str, data: dict, files: dict[str, tuple[Path, str]] | None = None):
        """Post one message (`method`: sendMessage, sendAudio or sendDocument)."""

    @abstractmethod
    def unprompted(self) -> bool:
        """True when no status message tells the chat what this job is."""

    def _wait_edit(self) -> None:
        """Wait until the next edit keeps `interval` after the last one."""
        time.sleep(max(0.0, self._last_edit + self.interval - time.monotonic()))

    def _edited(self, text: str) -> None:
        self._shown = text
        self._last_edit = time.monotonic()

    @classmethod
    def chat_target(cls, chat_id: str, head: str) -> dict:
        """The reply target of a job that comes unprompted into chat `chat_id` (a trending
        drop's cover), with no status message: its file's post says `head`."""
        return {"platform": cls.platform, "chat_id": chat_id, "headline": head}

    def has_status_message(self) -> bool:
        return bool(self.reply_to.get("status_message_id"))

    # -- the job's observer (`flows.jobs.JobObserver`)

    def started(self) -> None:
        """The job is about to run: a job taken over after a restart says so at once."""
        if self.has_status_message():
            self._show_now()

    def _show_now(self) -> None:
        """Show at once that the job was taken over after a restart, or that it waits for one
        (`progressed` shows everything else, and `ended` the outcome)."""
        try:
            job = get_job(self.s, self.job_id)
            if job is not None and job.state not in TERMINAL and job.step in text.RESTART_STEPS:
                line = text.status_line(job.state, job.step, job.progress, kind=job.kind)
                self.edit(text.status_text(job_headline(self.s, job), line))
        except Exception:  # a status edit is never worth failing the job for
            log.warning("job %s: status edit failed", self.job_id, exc_info=True)

    def progressed(self, job: Job) -> None:
        """Edit the status message when what it should say changed (and the last edit is at
        least `interval` old)."""
        if not self.has_status_message() or self._muted or time.monotonic() < self._quiet_until:
            return
        try:
            position = queue_position(self.s, job) if job.state == "queued" else None
            line = text.status_line(
                job.state, job.step, job.progress, position, kind=job.kind, voice=self.singer(job)
            )
            self._headline = self._headline or job_headline(self.s, job)  # (it never changes)
            shown = text.status_text(self._headline, line)
            if shown != self._shown and time.monotonic() - self._last_edit >= self.interval:
                self.edit(shown)
        except NoBotToken:
            log.warning("job %s: no bot token, so no status edits", self.job_id)
            self._muted = True
        except Exception as exc:  # a status edit is never worth failing the job for
            log.warning("job %s: status edit failed: %s", self.job_id, exc)
            pause = retry_after(exc)
            if pause:  # asked to slow down: no edit until then
                self._quiet_until = time.monotonic() + pause * self.s.delivery_time_scale

    def singer(self, job: Job) -> str | None:
        """The name of the voice a cover is sung in when it is not the user's own (the demo
        voice, a public one), so that the status does not say "your voice"."""
        if job.kind != "cover":
            return None
        if self._singer is None:
            voice = job_voice(self.s, job)
            self._singer = voice.name if voice is not None and voice.owner != job.owner else ""
        return self._singer or None

    def ended(self) -> None:
        """The runner is done with the job: deliver the outcome (once; another delivery may
        have won); a job left open (its process shuts down) shows that it will continue."""
        if self.has_status_message():
            self._show_now()
        try:
            self.deliver()
        finally:
            self.close_api()

    # -- delivering, once

    def deliver(self) -> bool:
        """Post the ended job's outcome, unless that was done or is being done elsewhere.

        Returns True if this call took the delivery (and ended it, or left it waiting for a
        retry)."""
        job = get_job(self.s, self.job_id)
        if job is None or job.state not in TERMINAL:
            return False
        lease = claim(self.s, self.job_id)
        if lease is None:
            return False
        self.ledger = lease
        try:
            with lease:
                self._deliver_held(job, lease)
        except LeaseLost:
            log.warning("job %s: another process took the delivery over", self.job_id)
        finally:
            self.ledger = None
        return True

    def _deliver_held(self, job: Job, lease: Lease) -> None:
        s = self.s
        while True:
            lease.tried()
            try:
                detail = self.finish(job)
            except LeaseLost:
                raise
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"[:500]
                if not transient(exc):
                    log.warning("job %s: delivery refused", job.id, exc_info=True)
                    if job.state == "succeeded":
                        self.undeliverable(job)
                    lease.end("failed", error=error)
                    return
                wait = wait_s(exc, lease.attempts)
                if lease.past_give_up(wait):
                    sentence = self.words.gave_up(s.delivery_give_up_s)
                    log.warning("job %s: delivery given up after %d tries", job.id, lease.attempts)
                    self.gave_up(job, sentence)
                    _note_undelivered(s, job.id, sentence)
                    lease.end("gave_up", error=error)
                    return
                log.info("job %s: delivery failed (%s); next try in %gs", job.id, error, wait)
                self.waiting(job)
                if wait > s.delivery_hold_s:
                    lease.release(error, wait)
                    return
                lease.note(error, wait)
                time.sleep(wait * s.delivery_time_scale)
            else:
                lease.end("sent", sent=detail)
                return

    # -- messages

    def send(self, method: str, data: dict, files: dict[str, tuple[Path, str]] | None = None):
        """Post one message of the outcome, at most once, or twice when the platform's answer
        to the first was lost (see `Lease.sending`)."""
        if self.ledger is None:
            return self._send(method, data, files)
        return self.ledger.sending(lambda: self._send(method, data, files))

    def say(self, text: str):
        return self.send("sendMessage", {"text": text})

    def _captioned(self, caption: str | None) -> str | None:
        """A file's caption; an unprompted job's starts with its headline."""
        head = self.reply_to.get("headline")
        if head and self.unprompted():
            return f"{head}\n{caption}" if caption else str(head)
        return caption

    def uploading(self) -> None:
        """Show that the result is on its way (before a file upload, which takes a while)."""
        with contextlib.suppress(Exception):  # cosmetic: never a reason not to send
            line = text.status_line("running", "delivering", 1.0)
            self.edit(text.status_text(self._head, line), wait=True)

    def waiting(self, job: Job) -> None:
        """Show that the platform refuses the outcome for now and that it will be retried."""
        if job.state != "succeeded":
            return  # the outcome is the status message itself, which cannot be edited now
        with contextlib.suppress(Exception):
            head = self._head or job_headline(self.s, job)
            self.edit(text.status_text(head, self.words.waiting_upload()))

    def gave_up(self, job: Job, sentence: str) -> None:
        """Tell the chat, if it still listens, that the outcome will not come (best effort)."""
        with contextlib.suppress(Exception):
            if not self.edit(text.status_text(self._head or job_headline(self.s, job), sentence)):
                self._send("sendMessage", {"text": sentence})

    def undeliverable(self, job: Job) -> None:
        with contextlib.suppress(Exception):
            head = self._head or job_headline(self.s, job)
            self.edit(text.status_text(head, self.words.undeliverable()))

    # -- the outcome

    def finish(self, job: Job) -> dict:
        """Post the ended job's outcome; returns what was sent (for the delivery record)."""
        head = self._head = job_headline(self.s, job)
        if job.state == "succeeded":
            sent = self._send_result(job)
            with contextlib.suppress(Exception):  # it was sent: a failed "Done" changes nothing
                line = text.status_line("succeeded", "done", 1.0)
                self.edit(text.status_text(head, line), wait=True)
            return sent
        line = text.status_line(job.state, "done", job.progress, reason=job.reason)
        if not self.edit(text.status_text(head, line), wait=True) and job.state == "failed":
            self.say(line)  # no status message to show it in
            return {"said": "failure"}
        return {"edited": job.state}

    def _is_default(self, owner: str, result: dict) -> bool:
        current = default_voice(self.s, owner)
        return current is not None and current.id == result.get("voice_id")

    def _send_result(self, job: Job) -> dict:
        result = job.result or {}
        params = job.params or {}
        storage = open_storage(self.s.storage, self.s.public_files_url)
        with tempfile.TemporaryDirectory(dir=_scratch(self.s)) as tmp:
            workdir = Path(tmp)
            if job.kind in ("cover", "karaoke"):
                song_id = params.get("song_id") or result.get("song_id")  # (a link's song)
                song = get_song(self.s, song_id) if song_id else None
                voice = job_voice(self.s, job)
                title = Path(result.get("filename") or "cover").stem
                performer = "Encore"
                if song is not None:
                    pitch = int((params.get("options") or {}).get("pitch") or 0)
                    title = text.cover_title(
                        song.title, voice.name if voice else None, job.kind, pitch
                    )
                    performer = song.artist or (voice.name if voice else "Encore")
                return self._send_file(
                    storage,
                    result["uri"],
                    result.get("filename"),
                    workdir,
                    text.OUTCOME_NOUNS[job.kind],
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
                caption = self.words.trained(
                    voice_name,
                    float(result.get("voiced_seconds") or 0),
                    self._is_default(job.owner, result),
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
                self.say(
                    self.words.imported(
                        result.get("voice") or params.get("name"),
                        str(result.get("version", "")),
                        int(result.get("sample_rate") or 0),
                        bool(result.get("index")),
                        self._is_default(job.owner, result),
                    )
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
            self.say(text.DONE)
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
            data["caption"] = text.clip(caption)
        self.uploading()
        try:
            message = self.send(method, data, {field: (local, name)})
        except BotApiError as exc:
            if exc.code == 413:  # the server's limit is lower than we were told
                return self._too_big(storage, uri, what, size)
            raise
        return {"sent": method, "message_id": (message or {}).get("message_id"), "bytes": size}

    def _too_big(self, storage, uri: str, what: str, size: int) -> dict:
        link = storage.link(uri, self.s.link_expiry_s)
        self.say(self.words.too_big(what, size, self.upload_limit, link))
        return {"sent": "link" if link else "too_big", "bytes": size}

    def _send_stems(self, storage, result: dict, workdir: Path) -> dict:
        """The zip of stems; when the zip is over the limit, each stem as its own file."""
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
                caption=text.stems_caption(result),
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
