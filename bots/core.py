"""What the chat bots say and do, whatever the platform: commands, checks, replies, buttons.

This module owns the conversation. It parses commands (`/cover <song> +2`), validates them,
checks quotas, picks songs and voices (or offers buttons to pick them), runs the training and
import sessions, and writes every sentence a user reads. It returns plain values (`Reply`,
`JobPlan`, `Download`) that a platform module renders: `bots/telegram.py` and
`bots/discord_bot.py`.
No platform type appears here, and the backend is reached only through `flows.api` and
`flows.submit`.

Button data is at most 64 bytes (Telegram's limit) and carries everything it needs (ids
packed in base64), so buttons keep working across bot restarts. Every button carries a tag
of the user it was shown to (`verb|tag|...`): anyone else who presses it is told whose it is,
and nothing happens. What a client sends (button data, file names, text arguments) is checked
here, where it enters, with the rules the typed commands follow. Placeholder senders (a
group's anonymous admins, posts sent as a channel) are not a person: they may not own
anything, so they get one sentence asking for a personal account.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from flows import api, submit
from flows.api import UserError

log = logging.getLogger("encore.bots")

SWEEP_S = 120.0  # how often a bot posts outcomes that no job delivered (a dead process)


async def sweep_deliveries(s, every_s: float | None = None) -> None:
    """Forever: post the outcomes of jobs that ended without delivering them (their process
    died between the two), retry deliveries whose wait is over, and take over claims whose
    holder died. Each bot runs this as a background task (every SWEEP_S, scaled by
    `delivery_time_scale`)."""
    if every_s is None:
        every_s = max(0.2, SWEEP_S * min(1.0, s.delivery_time_scale))
    while True:
        try:
            posted = await asyncio.to_thread(api.recover, s)
            if posted:
                log.info("posted %d outcomes that no job had delivered", posted)
        except Exception:
            log.warning("delivery sweep failed", exc_info=True)
        await asyncio.sleep(every_s)


GENERIC_ERROR = "Something went wrong on our side; please try again in a minute."
FORGET_PENDING = (
    "Some of your files could not be deleted yet; Encore keeps trying and will tell you here."
)
FORGET_STOPPING = "Your running job is stopping; Encore deletes what it leaves and tells you here."


def where_to_tell(who: Who) -> dict:
    """A reply target for a message to `who`'s chat later (a finished `/forget`)."""
    if who.platform == "discord":
        return {"platform": "discord", "channel_id": who.chat_id, "user_id": who.user_id}
    return {"platform": who.platform, "chat_id": who.chat_id}


MAX_PITCH = 12

COMMANDS: tuple[tuple[str, str], ...] = (
    ("cover", "Make a cover: /cover <song> [+2]"),
    ("charts", "The hit chart: press a song to cover it"),
    ("songs", "The songs you can cover"),
    ("voices", "Your voices and the default one"),
    ("voice", "Set your default voice: /voice <name>"),
    ("train", "Clone a voice from voice notes: /train <name>"),
    ("done", "Finish sending samples"),
    ("import", "Add an RVC model (.pth, .index or .zip)"),
    ("karaoke", "The song without its vocal: /karaoke <song>"),
    ("stems", "Vocals, drums, bass and other: /stems [six] <song>"),
    ("status", "Your jobs"),
    ("cancel", "Stop the latest job or session"),
    ("forget", "Delete everything Encore keeps about you"),
    ("trending", "Group admins: /trending on|off"),
    ("help", "What this bot does"),
)

HELP = (
    "🎤 Encore makes AI covers: a song from the catalog, sung in the voice you pick — "
    "even your own.\n"
    "\n"
    "/cover <song> — make a cover; add +2 or -3 to change the key. "
    "Or reply /cover to a song file you sent.\n"
    "/charts — the hit chart: press a song to cover it · /songs — every song I can cover\n"
    "/voices — your voices; /voice <name> sets the default\n"
    "/train <name> — clone a voice from voice notes\n"
    "/import — add an RVC model (.pth, .index or .zip)\n"
    "/karaoke <song> — the song without its lead vocal\n"
    "/stems <song> — vocals, drums, bass and other as files; /stems six <song> adds "
    "guitar and piano\n"
    "/status — your jobs · /cancel — stop the latest\n"
    "/forget — delete everything I keep about you\n"
    "/trending on|off — group admins: post trending covers here"
)

COVER_USAGE = (
    "Tell me which song: /cover <song>, like /cover yesterday +2. "
    "Or send a song file and reply to it with /cover."
)
NO_VOICE = (
    "You have no voice yet: clone yours with /train <name> (voice notes work), "
    "or /import an RVC model."
)
NOT_AUDIO = "That file is not audio I can use; send an mp3, m4a, ogg, wav or flac file."
MODEL_SUFFIXES = (".pth", ".index", ".zip")
PLACEHOLDER = (
    "I can't tell who you are when you post as the group or a channel, so send this from "
    "your personal account (admins: turn off “Remain anonymous”)."
)
EXPIRED = "That button has expired; send the command again."
MAX_ARG = 200  # characters of a command's text arguments
TOO_LONG = f"That is too long for me; keep it under {MAX_ARG} characters."
MAX_FILENAME = 80


# ------------------------------------------------------------------------------------------
# What the platform module renders


@dataclass(frozen=True)
class Who:
    """Who is talking, and where. `placeholder`: not a person but a shared stand-in id (a
    group's anonymous admins, a post sent as a channel, a channel's automatic forward)."""

    platform: str
    user_id: str
    chat_id: str
    name: str = ""
    private: bool = True
    placeholder: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", visible(self.name)[:100])  # echoed back in replies

    @property
    def owner(self) -> str:
        return f"{self.platform}:{self.user_id}"


@dataclass(frozen=True)
class Button:
    label: str
    data: str


@dataclass(frozen=True)
class Reply:
    """A message to send (or, answering a button, the text its message turns into)."""

    text: str
    buttons: tuple[tuple[Button, ...], ...] = ()
    toast: str | None = None  # answering a button: a short note, and the message stays


@dataclass(frozen=True)
class JobPlan:
    """A job ready to submit: the platform posts the status message, then calls `submit`."""

    kind: str  # cover|stems|karaoke|train|import
    owner: str
    headline: str
    song_id: str | None = None
    voice_id: str | None = None
    options: dict = field(default_factory=dict)
    name: str | None = None
    files: tuple[str, ...] = ()
    upload_id: str | None = None
    link: str | None = None  # a cover of the song at this link (fetched by the job)
    links: tuple[str, ...] = ()  # an import of the model files at these links
    chart: tuple[str, str] | None = None  # (artist, title): a chart song fetched by the job

    @property
    def status(self) -> str:
        return api.status_text(self.headline, api.status_line("queued", "queued", 0.0))


@dataclass(frozen=True)
class Download:
    """The platform should fetch the user's file, then hand its local path back to core."""

    purpose: str  # sample|model|song
    filename: str


Outcome = Reply | JobPlan


@dataclass(frozen=True)
class Incoming:
    """A file a user sent, as the platform describes it; its name is made safe on arrival."""

    filename: str
    size: int | None
    mime: str | None
    voice_note: bool = False  # recorded in the app (a voice message)

    def __post_init__(self) -> None:
        object.__setattr__(self, "filename", clean_filename(self.filename))

    @property
    def suffix(self) -> str:
        return Path(self.filename).suffix.lower()

    @property
    def audio(self) -> bool:
        if self.voice_note:
            return True
        if self.mime and (self.mime.startswith("audio/") or self.mime == "video/mp4"):
            return True
        return self.suffix in (".mp3", ".m4a", ".ogg", ".oga", ".opus", ".wav", ".flac", ".aac")


# ------------------------------------------------------------------------------------------
# Small helpers


def pack(hex_id: str) -> str:
    """A 32-hex id as 22 base64url characters (button data is at most 64 bytes)."""
    return base64.urlsafe_b64encode(bytes.fromhex(hex_id)).rstrip(b"=").decode()


def unpack(text: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return ""
    return raw.hex()


def visible(text: str) -> str:
    """Text as a person can read it: NFKC, without control, format (zero-width, direction
    overrides), private-use or unassigned characters, its whitespace runs made one space."""
    text = unicodedata.normalize("NFKC", text or "")
    kept = (" " if ch.isspace() else ch for ch in text)
    text = "".join(ch for ch in kept if ch == " " or unicodedata.category(ch)[0] != "C")
    return " ".join(text.split())


def clean_arg(text: str) -> str:
    """A command's text argument as core reads it; UserError when it is too long."""
    text = visible(text)
    if len(text) > MAX_ARG:
        raise UserError(TOO_LONG)
    return text


def clean_filename(name: str, default: str = "file") -> str:
    """A platform's file name made safe to show and to use as the last part of a path: no
    folders, no `.`/`..`, no hidden files, no control characters, at most 80 characters."""
    text = visible(name)
    text = re.split(r"[/\\]", text)[-1]
    text = re.sub(r'[<>:"|?*]', "_", text).strip(" .")
    if not text.strip("_ ."):
        return default
    stem, dot, suffix = text.rpartition(".")
    if not dot or len(suffix) > 10 or not stem:
        stem, suffix = text, ""
    suffix = f".{suffix}" if suffix else ""
    return stem[: MAX_FILENAME - len(suffix)].rstrip(" .") + suffix


def quoted(text: str, limit: int = 60) -> str:
    text = visible(text)
    return f"“{text[:limit]}{'…' if len(text) > limit else ''}”"


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


_HEX_ID = re.compile(r"^[0-9a-f]{32}$")
_BUTTON_PITCH = re.compile(r"^[+-]\d{1,2}$")
VERBS = ("cs", "cv", "ss", "s6", "ks", "dv", "tc", "tx", "fy", "fn", "cp", "cc", "sp", "dc")


def owner_tag(who: Who) -> str:
    """A compact mark of the user a button is shown to: their numeric id in base64url (at most
    11 characters for a 64-bit id), or "~" and a hash of any other id."""
    if who.user_id.isascii() and who.user_id.isdigit() and len(who.user_id) <= 20:
        n = int(who.user_id)
        raw = n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    digest = hashlib.sha256(who.owner.encode()).digest()[:6]
    return "~" + base64.urlsafe_b64encode(digest).decode()


def tagged_owner(platform: str, tag: str) -> str | None:
    """The owner a numeric tag names; None for a hashed tag or one that is not a tag."""
    if tag.startswith("~"):
        return None
    try:
        raw = base64.urlsafe_b64decode(tag + "=" * (-len(tag) % 4))
    except (binascii.Error, ValueError):
        return None
    return f"{platform}:{int.from_bytes(raw, 'big')}" if raw else None


def button(who: Who, label: str, verb: str, *parts: str) -> Button:
    """A button for `who` alone: `verb|tag|parts…`."""
    return Button(label, "|".join((verb, owner_tag(who), *parts)))


def _button_pitch(text: str) -> int:
    """A button's pitch, checked as a typed one is; UserError (range) or ValueError (junk)."""
    if not _BUTTON_PITCH.match(text):
        raise ValueError(text)
    pitch = int(text)
    if abs(pitch) > MAX_PITCH:
        raise UserError(f"The key change goes from -{MAX_PITCH} to +{MAX_PITCH} semitones.")
    return pitch


def _button_id(text: str) -> str:
    """A button's packed id: exactly 22 base64url characters of 16 bytes, else ValueError."""
    hex_id = unpack(text) if len(text) == 22 else ""
    if not _HEX_ID.match(hex_id):
        raise ValueError(text)
    return hex_id


def personal(method):
    """For commands that act on a person's own data: placeholder senders get one sentence."""

    @functools.wraps(method)
    def wrapper(self, who: Who, *args, **kwargs):
        if who.placeholder:
            return Reply(PLACEHOLDER)
        return method(self, who, *args, **kwargs)

    return wrapper


_PITCH = re.compile(r"^(?:([+-]\d{1,3})|(?:pitch|key)[=:]?([+-]?\d{1,3}))$", re.IGNORECASE)


def parse_song_args(text: str) -> tuple[str, int]:
    """`"<song> +2"` → ("<song>", 2). A signed number at the end is the pitch, in semitones.

    Raises UserError for a pitch out of range; the song may be empty (the caller decides).
    """
    words = (text or "").split()
    pitch = 0
    if words:
        match = _PITCH.match(words[-1])
        if match:
            pitch = int(match.group(1) or match.group(2))
            words = words[:-1]
            if abs(pitch) > MAX_PITCH:
                raise UserError(
                    f"The key change goes from -{MAX_PITCH} to +{MAX_PITCH} semitones; "
                    "try something like /cover <song> +2."
                )
    return " ".join(words), pitch


def split_six(query: str) -> tuple[str, bool]:
    """`"six <song>"` → ("<song>", True): six stems were asked for."""
    head, _, rest = query.strip().partition(" ")
    if head.lower() == "six" and rest.strip():
        return rest.strip(), True
    return query.strip(), False


def too_big(size: int, limit: int) -> str:
    return (
        f"That file is {size / 2**20:.0f} MB, and Telegram lets bots download at most "
        f"{limit // 2**20} MB; send a shorter or more compressed file."
    )


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


def _job_line(job: api.JobInfo) -> str:
    head = job.headline
    if job.state == "succeeded" and job.undelivered:
        state = f"❌ {job.undelivered}"
    elif job.state == "succeeded":
        state = "✅ done"
    elif job.state == "failed":
        state = f"❌ {job.reason or 'failed'}"
    elif job.state == "cancelled":
        state = "🚫 cancelled"
    elif job.state == "queued":
        state = "⏳ queued"
    else:
        line = api.status_line(job.state, job.step, job.progress)
        state = line
    return f"{head}\n    {state}"


# ------------------------------------------------------------------------------------------
# The conversation


class ChatCore:
    """The bots' logic. Methods are blocking (database, ffmpeg): run them off the event loop."""

    def __init__(self, s=None):
        self.s = s or api.settings()

    # -- plain commands

    def help(self, who: Who) -> Reply:
        if not who.placeholder:
            api.ensure_user(who.owner, who.name, s=self.s)
        return Reply(HELP)

    def unknown(self, command: str) -> Reply:
        return Reply(f"I don't know /{visible(command)[:30]}; /help lists what I can do.")

    def chatter(self, who: Who) -> Reply | None:
        """Plain text in a private chat."""
        if not who.private:
            return None
        fallback = "Send /cover <song> to make a cover, or /help to see everything I can do."
        return Reply(song_menu.chatter(self, who, fallback))

    def charts(self, who: Who, args: str = "", is_admin: bool = False) -> Reply:
        """`/charts [name]`: the chart, a cover button per song (see `bots.charts`); a name
        given in a private chat, or by a group's admin, becomes the chat's default chart."""
        if not who.placeholder:
            api.ensure_user(who.owner, who.name, s=self.s)
        return chart_menu.charts_reply(self, who, args, can_set=who.private or is_admin)

    def songs(self, who: Who, args: str = "") -> Reply:
        """`/songs [page]`: the catalog, paged, a cover button per song (see `bots.songs`)."""
        if not who.placeholder:
            api.ensure_user(who.owner, who.name, s=self.s)
        try:
            page = song_menu.page_number(visible(args)[:10] or "1")
        except ValueError:
            page = 1
        return song_menu.songs_reply(self, who, page)

    # -- songs and voices

    def _quota(self, who: Who, kind: str) -> Reply | None:
        limit = api.check_quota(who.owner, kind, s=self.s)
        return Reply(limit_text(limit, self.s)) if limit is not None else None

    def _song(
        self, who: Who, query: str, verb: str, pitch: int = 0, six: bool = False
    ) -> api.SongInfo | Reply:
        matches = api.find_songs(query, who.owner, limit=5, s=self.s)
        if not matches:
            return Reply(
                f"No song in the catalog matches {quoted(query)}. Check the spelling, or send "
                "me the song file and reply to it with /" + verb + "."
            )
        best, score = matches[0]
        rivals = [(song, sc) for song, sc in matches[1:] if sc >= score - 8]
        if not rivals or (score >= 99.5 and all(sc < 99.5 for _song, sc in rivals)):
            return best
        choices = [best] + [song for song, _sc in rivals]
        code = "s6" if six else {"cover": "cs", "stems": "ss", "karaoke": "ks"}[verb]
        buttons = tuple(
            (button(who, song.label[:60], code, pack(song.id), f"{pitch:+d}"),) for song in choices
        )
        return Reply(f"Several songs match {quoted(query)}. Which one?", buttons)

    def _voice(self, who: Who) -> api.VoiceInfo | list[api.VoiceInfo] | None:
        chosen = api.default_voice(who.owner, s=self.s)
        if chosen is not None:
            return chosen
        available = api.list_voices(who.owner, s=self.s)
        if len(available) == 1:
            return available[0]
        return available or None

    def _cover_with(self, who: Who, song: api.SongInfo, pitch: int) -> Outcome:
        offered = song_menu.offer_demo(self, who, song, pitch)  # a new user: the demo voice
        if offered is not None:
            return offered
        voice = self._voice(who)
        if voice is None:
            return Reply(NO_VOICE)
        if isinstance(voice, list):
            buttons = tuple(
                (button(who, v.name[:40], "cv", pack(song.id), pack(v.id), f"{pitch:+d}"),)
                for v in voice[:10]
            )
            return Reply(f"Which voice should sing {quoted(song.label)}?", buttons)
        return self._cover_plan(who, song, voice, pitch)

    def _cover_plan(
        self, who: Who, song: api.SongInfo, voice: api.VoiceInfo, pitch: int
    ) -> Outcome:
        refused = self._quota(who, "cover")
        if refused:
            return refused
        return JobPlan(
            kind="cover",
            owner=who.owner,
            headline=api.headline("cover", song.label, voice.name, pitch),
            song_id=song.id,
            voice_id=voice.id,
            options={"pitch": pitch},
        )

    def _link_cover(
        self, who: Who, url: str, pitch: int, voice: api.VoiceInfo | None = None
    ) -> Outcome:
        """`/cover <link>`: the job fetches the song (when the operator enabled links)."""
        try:
            link = api.check_link(url, s=self.s)
        except UserError as exc:
            return Reply(exc.message)
        if voice is None:
            found = self._voice(who)
            if found is None:
                return Reply(NO_VOICE)
            if isinstance(found, list):
                return Reply(api.links_text.PICK_VOICE)
            voice = found
        refused = self._quota(who, "cover")
        if refused:
            return refused
        return JobPlan(
            kind="cover",
            owner=who.owner,
            headline=api.headline("cover", api.link_label(link), voice.name, pitch),
            voice_id=voice.id,
            options={"pitch": pitch},
            link=link,
        )

    def chart_cover(self, who: Who, artist: str, title: str, label: str) -> Outcome:
        """A chart song not in the catalog: the job fetches it through the resolver, then
        covers it in the user's default voice (when the operator enabled link sources)."""
        if not api.chart_fetching(s=self.s):
            return Reply(api.links_text.DISABLED)
        found = self._voice(who)
        if found is None:
            return Reply(NO_VOICE)
        if isinstance(found, list):
            return Reply(api.links_text.PICK_VOICE_CHART)
        refused = self._quota(who, "cover")
        if refused:
            return refused
        return JobPlan(
            kind="cover",
            owner=who.owner,
            headline=api.headline("cover", label, found.name, 0),
            voice_id=found.id,
            chart=(artist, title),
        )

    def _song_job(self, who: Who, song: api.SongInfo, kind: str, six: bool = False) -> Outcome:
        refused = self._quota(who, kind)
        if refused:
            return refused
        what = f"{song.label} (six stems)" if six else song.label
        return JobPlan(
            kind=kind,
            owner=who.owner,
            headline=api.headline(kind, what),
            song_id=song.id,
            options={"six": True} if six else {},
        )

    @personal
    def song_command(self, who: Who, verb: str, args: str) -> Outcome:
        """`/cover`, `/stems` or `/karaoke` with a song name."""
        api.ensure_user(who.owner, who.name, s=self.s)
        try:
            query, pitch = parse_song_args(clean_arg(args))
        except UserError as exc:
            return Reply(exc.message)
        if verb != "cover" and pitch:
            query = f"{query} {pitch:+d}".strip()  # a title ending in a number, not a key
            pitch = 0
        query, six = split_six(query) if verb == "stems" else (query, False)
        if not query:
            if verb == "cover":
                return Reply(song_menu.usage(self, who, verb, COVER_USAGE))
            fallback = (
                f"Tell me which song: /{verb} <song>. Or reply /{verb} to a song file you sent."
            )
            return Reply(song_menu.usage(self, who, verb, fallback))
        if verb == "cover" and api.is_link(query):
            return self._link_cover(who, query, pitch)
        refused = self._quota(who, verb)
        if refused:
            return refused
        if verb == "cover" and song_menu.has_no_voice(self, who):
            return Reply(NO_VOICE)
        song = self._song(who, query, verb, pitch, six)
        if isinstance(song, Reply):
            return song
        if verb == "cover":
            return self._cover_with(who, song, pitch)
        return self._song_job(who, song, verb, six)

    @personal
    def song_file(self, who: Who, verb: str, args: str, incoming: Incoming) -> Reply | Download:
        """`/cover` (or /stems, /karaoke) as a reply to a file: check it before downloading."""
        api.ensure_user(who.owner, who.name, s=self.s)
        try:
            parse_song_args(clean_arg(args))
        except UserError as exc:
            return Reply(exc.message)
        if not incoming.audio:
            return Reply(NOT_AUDIO)
        limit = self.s.telegram_download_limit_bytes
        if incoming.size and incoming.size > limit:
            return Reply(too_big(incoming.size, limit))
        refused = self._quota(who, verb)
        if refused:
            return refused
        if verb == "cover" and song_menu.has_no_voice(self, who):
            return Reply(NO_VOICE)
        return Download("song", incoming.filename)

    @personal
    def song_downloaded(
        self,
        who: Who,
        verb: str,
        args: str,
        local: Path,
        title: str | None,
        artist: str = "",
    ) -> Outcome:
        refused = self._quota(who, verb)  # checked again before the song is stored
        if refused:
            return refused
        try:
            query, pitch = parse_song_args(clean_arg(args))
            query, six = split_six(query) if verb == "stems" else (query, False)
            title = visible(query or title or "")[:MAX_ARG]
            song = api.add_uploaded_song(
                who.owner, local, title, visible(artist)[:MAX_ARG], s=self.s
            )
        except UserError as exc:
            return Reply(exc.message)
        if verb == "cover":
            return self._cover_with(who, song, pitch)
        return self._song_job(who, song, verb, six)

    # -- structured options (Discord's slash commands and their autocomplete)

    def song_choices(self, who: Who, query: str, limit: int = 25) -> list[tuple[str, str]]:
        """(label, song id) pairs matching what the user typed so far (the catalog before
        anything is typed)."""
        return song_menu.song_choices(self, who, query, limit)

    def voice_choices(self, who: Who, query: str, limit: int = 25) -> list[tuple[str, str]]:
        """(name, voice id) pairs of the voices the user may use, filtered by `query`."""
        wanted = api.voice_name_key(visible(query)[:MAX_ARG])
        found = [
            v for v in api.list_voices(who.owner, s=self.s) if wanted in api.voice_name_key(v.name)
        ]
        return [(v.name[:100], v.id) for v in found[:limit]]

    def _voice_ref(self, who: Who, ref: str) -> api.VoiceInfo | None:
        ref = ref.strip()
        if _HEX_ID.match(ref):
            voice = api.voice_by_id(who.owner, ref, s=self.s)
            if voice is not None:
                return voice
        return api.get_voice(who.owner, ref, s=self.s)

    @personal
    def song_option(
        self,
        who: Who,
        verb: str,
        ref: str,
        pitch: int = 0,
        voice_ref: str | None = None,
        six: bool = False,
    ) -> Outcome:
        """`/cover`, `/stems` or `/karaoke` whose song is a song id (picked from the
        autocomplete) or typed text, with the pitch, the voice and six stems as options."""
        api.ensure_user(who.owner, who.name, s=self.s)
        if abs(pitch) > MAX_PITCH:
            return Reply(f"The key change goes from -{MAX_PITCH} to +{MAX_PITCH} semitones.")
        try:
            ref, voice_ref = clean_arg(ref), clean_arg(voice_ref or "")
        except UserError as exc:
            return Reply(exc.message)
        if not ref:
            return Reply(f"Tell me which song: /{verb} and pick one as you type its name.")
        refused = self._quota(who, verb)
        if refused:
            return refused
        voice = None
        if verb == "cover" and api.is_link(ref):
            picked = self._voice_ref(who, voice_ref) if voice_ref.strip() else None
            if voice_ref.strip() and picked is None:
                return Reply(f"You have no voice called {quoted(voice_ref)}; /voices lists yours.")
            return self._link_cover(who, ref, pitch, picked)
        if verb == "cover":
            if voice_ref and voice_ref.strip():
                voice = self._voice_ref(who, voice_ref)
                if voice is None:
                    return Reply(
                        f"You have no voice called {quoted(voice_ref)}; /voices lists yours."
                    )
            elif song_menu.has_no_voice(self, who):
                return Reply(NO_VOICE)
        song = api.get_song(ref, who.owner, s=self.s) if _HEX_ID.match(ref) else None
        if song is None:
            found = self._song(who, ref, verb, pitch, six)
            if isinstance(found, Reply):
                return found
            song = found
        if verb == "cover":
            if voice is not None:
                return self._cover_plan(who, song, voice, pitch)
            return self._cover_with(who, song, pitch)
        return self._song_job(who, song, verb, six)

    # -- voices

    @personal
    def voices(self, who: Who) -> Reply:
        api.ensure_user(who.owner, who.name, s=self.s)
        available = api.list_voices(who.owner, s=self.s)
        if not available:
            return Reply(NO_VOICE)
        current = api.default_voice(who.owner, s=self.s)
        mine = [v for v in available if v.owner == who.owner]
        public = [v for v in available if v.owner != who.owner]
        lines = []
        if mine:
            lines.append("Your voices:")
            for v in mine:
                how = "trained" if v.source == "trained" else "imported"
                star = " ⭐ default" if current and current.id == v.id else ""
                lines.append(f"• {v.name} ({how}){star}")
        else:
            lines.append("You have no voice of your own yet: /train <name> clones yours.")
        if public:
            lines.append("Public voices:")
            for v in public:
                star = " ⭐ default" if current and current.id == v.id else ""
                lines.append(f"• {v.name}{star}")
        if current is None:
            lines.append("No default voice yet: /voice <name> picks one.")
        buttons = tuple(
            (button(who, f"Make {v.name[:40]} the default", "dv", pack(v.id)),)
            for v in available[:8]
            if current is None or v.id != current.id
        )
        return Reply("\n".join(lines), buttons)

    @personal
    def set_voice(self, who: Who, args: str) -> Reply:
        try:
            name = clean_arg(args)
        except UserError as exc:
            return Reply(exc.message)
        if not name:
            return self.voices(who)
        try:
            voice = api.set_default_voice(who.owner, name, s=self.s)
        except UserError as exc:
            return Reply(exc.message)
        return Reply(f"⭐ {voice.name} is your default voice now; /cover <song> to use it.")

    # -- jobs

    @personal
    def status(self, who: Who) -> Reply:
        found = api.list_jobs(who.owner, limit=6, s=self.s)
        upload = api.current_upload(who.owner, s=self.s)
        lines = []
        if upload is not None and upload.kind == "train":
            lines.append(
                f"🎙 Collecting samples for {quoted(upload.name)}: "
                f"{api.format_duration(upload.voiced_s)} of voice so far; /done to train."
            )
        elif upload is not None:
            lines.append(f"📦 Waiting for the model files of {quoted(upload.name or 'a voice')}.")
        if not found and not lines:
            return Reply("You have no jobs yet; try /cover <song>.")
        if found:
            lines.append("Your latest jobs:")
            lines += [_job_line(job) for job in found]
        return Reply("\n".join(lines))

    @personal
    def cancel(self, who: Who) -> Reply:
        stopped = api.cancel_upload(who.owner, s=self.s)
        if stopped is not None:
            what = "samples" if stopped.kind == "train" else "model files"
            voice = quoted(stopped.name) if stopped.name else "the voice"
            if not stopped.files:
                return Reply(f"Stopped: no more {what} for {voice}.")
            return Reply(
                f"Stopped: the {plural(len(stopped.files), 'file')} you sent for {voice} "
                f"{'is' if len(stopped.files) == 1 else 'are'} deleted."
            )
        job = api.cancel_latest(who.owner, s=self.s)
        if job is None:
            return Reply("Nothing to cancel: you have no job on the way.")
        return Reply(f"🚫 Cancelled: {job.headline}")

    @personal
    def forget(self, who: Who) -> Reply:
        api.ensure_user(who.owner, who.name, s=self.s)  # its name answers others' presses
        return Reply(
            "This deletes your voices, covers, samples, uploaded songs and everything else I "
            "keep about you. It cannot be undone. Go ahead?",
            ((button(who, "🗑 Delete everything", "fy"), button(who, "Keep it", "fn")),),
        )

    @personal
    def forget_confirmed(self, who: Who) -> Reply:
        gone = api.forget_user(who.owner, s=self.s, notify=where_to_tell(who))
        done = (
            f"Done: I deleted {plural(gone.voices, 'voice')}, {plural(gone.jobs, 'job')} with "
            f"their files, {plural(gone.songs, 'uploaded song')} and "
            f"{plural(gone.samples, 'staged sample')}."
        )
        if gone.pending:
            return Reply(f"{done} {FORGET_PENDING}")
        if gone.stopping:
            return Reply(f"{done} {FORGET_STOPPING}")
        return Reply(f"{done} I keep nothing else about you.")

    # -- training

    def _new_voice_name(self, who: Who, raw: str) -> str | Reply:
        """The checked name for a new voice of `who`, or the reply refusing it."""
        try:
            name = api.valid_voice_name(raw)
        except UserError as exc:
            return Reply(exc.message)
        if api.get_voice(who.owner, name, include_public=False, s=self.s) is not None:
            return Reply(f"You already have a voice called {quoted(name)}; pick another name.")
        return name

    @personal
    def train(self, who: Who, args: str) -> Reply:
        api.ensure_user(who.owner, who.name, s=self.s)
        try:
            raw = clean_arg(args)
        except UserError as exc:
            return Reply(exc.message)
        if not raw:
            return Reply("Give the voice a name: /train <name>, like /train my voice.")
        name = self._new_voice_name(who, raw)
        if isinstance(name, Reply):
            return name
        refused = self._quota(who, "train")
        if refused:
            return refused
        api.open_upload(who.owner, "train", name, s=self.s)
        limits = api.training_limits(self.s)
        low, high = limits.recommended_s
        return Reply(
            f"🎙 Let's clone {quoted(name)}. Send me voice notes or audio files of that voice "
            "alone, speaking or singing, with no music behind it. I need at least "
            f"{api.format_duration(limits.min_total_s)} in all; "
            f"{api.format_duration(low)} to {api.format_duration(high)} gives the best clone. "
            f"Files up to {self.s.telegram_download_limit_bytes // 2**20} MB each. "
            "Send /done when you have finished, or /cancel."
        )

    @personal
    def sample_incoming(self, who: Who, incoming: Incoming) -> Reply | Download:
        limit = self.s.telegram_download_limit_bytes
        if incoming.size and incoming.size > limit:
            return Reply(too_big(incoming.size, limit))
        if not incoming.audio:
            return Reply("That is not a recording; send voice notes or audio files.")
        return Download("sample", incoming.filename)

    @personal
    def sample_downloaded(self, who: Who, source: str, local: Path, filename: str) -> Reply | None:
        filename = clean_filename(filename)  # as the platform named it: made safe here too
        upload = api.current_upload(who.owner, s=self.s)
        if upload is None or upload.kind != "train":
            return Reply("Start a voice first: /train <name>.")
        try:
            got = api.add_sample(upload.id, who.owner, source, local, filename, s=self.s)
        except UserError as exc:
            return Reply(exc.message)
        if got.duplicate:
            return None  # the same message again: it was counted the first time
        total = api.format_duration(got.upload.voiced_s)
        if not got.accepted:
            return Reply(f"⚠️ I can't use that one: {got.problem} So far: {total} of voice.")
        limits = api.training_limits(self.s)
        have = got.upload.voiced_s
        if have < limits.min_total_s:
            more = api.format_wait(limits.min_total_s - have)
            tail = f"send at least {more} more."
        elif have < limits.recommended_s[0]:
            tail = "/done to train now, or send more for a better clone."
        else:
            tail = "that is plenty: /done to start training."
        return Reply(
            f"🎙 Got {api.format_duration(got.voiced_s)} of clean voice. "
            f"Total: {total} in {plural(len(got.upload.files), 'clip')}; {tail}"
        )

    @personal
    def done(self, who: Who) -> Outcome:
        upload = api.current_upload(who.owner, s=self.s)
        if upload is None:
            return Reply("Nothing to finish: start with /train <name> or /import.")
        if upload.kind == "import":
            if not upload.has(".pth"):
                return Reply("Send the model's .pth file first (or a .zip of the model).")
            return self._import_plan(who, upload)
        limits = api.training_limits(self.s)
        have = upload.voiced_s
        if have < limits.min_total_s:
            more = api.format_wait(limits.min_total_s - have)
            return Reply(
                f"I have {api.format_duration(have)} of clean voice for {quoted(upload.name)}; "
                f"send at least {more} more, then /done."
            )
        return Reply(
            f"Ready to train {quoted(upload.name)} on {api.format_duration(have)} of voice "
            f"from {plural(len(upload.files), 'clip')}. I will post progress here.\n\n"
            "First: is this your own voice, or do you have its owner's permission to clone it?",
            (
                (button(who, "✅ It's mine, or I have permission", "tc", pack(upload.id)),),
                (button(who, "✖ Cancel", "tx", pack(upload.id)),),
            ),
        )

    @personal
    def consent(self, who: Who, upload_id: str) -> Outcome:
        claimed = api.claim_upload(upload_id, who.owner, s=self.s)
        if claimed is None:
            upload = api.get_upload(upload_id, s=self.s)
            if upload is not None and upload.owner == who.owner and upload.job_id:
                return Reply("", toast="Already training; the status is above.")
            return Reply("", toast="This session is over; start again with /train <name>.")
        refused = self._quota(who, "train")
        if refused:
            api.release_upload(upload_id, s=self.s)
            return refused
        return JobPlan(
            kind="train",
            owner=who.owner,
            headline=api.headline("train", name=claimed.name),
            name=claimed.name,
            files=tuple(f.uri for f in claimed.files),
            upload_id=claimed.id,
        )

    @personal
    def consent_refused(self, who: Who, upload_id: str) -> Reply:
        current = api.current_upload(who.owner, s=self.s)
        if current is None or current.id != upload_id:
            return Reply("", toast="This session is over already.")
        api.cancel_upload(who.owner, s=self.s)
        return Reply("Cancelled; the samples you sent are deleted. /train <name> starts again.")

    # -- importing

    @personal
    def import_command(self, who: Who, args: str, links: bool = True) -> Outcome:
        """`/import [name]` opens a session for the files; `/import <link> [name]` (`links`:
        where the command's text may carry one) imports from the link."""
        api.ensure_user(who.owner, who.name, s=self.s)
        try:
            raw = clean_arg(args)
        except UserError as exc:
            return Reply(exc.message)
        if links and raw and api.is_link(raw.split()[0]):
            return self._link_import(who, raw.split()[0], raw[len(raw.split()[0]) :].strip())
        name = ""
        if raw:
            name = self._new_voice_name(who, raw)
            if isinstance(name, Reply):
                return name
        refused = self._quota(who, "import")
        if refused:
            return refused
        api.open_upload(who.owner, "import", name, s=self.s)
        called = (
            f"I'll call it {quoted(name)}."
            if name
            else "I'll name it after the file; /import <name> names it yourself."
        )
        limit = self.s.telegram_download_limit_bytes // 2**20
        bigger = f" {api.links_text.IMPORT_BY_LINK}" if self.s.link_sources else ""
        return Reply(
            "📦 Send me the RVC model as a file: a .zip holding the .pth (and its .index), or "
            f"the .pth and then the .index. Telegram lets bots fetch files up to {limit} MB. "
            f"{called}{bigger}"
        )

    def _link_import(self, who: Who, url: str, raw_name: str) -> Outcome:
        """`/import <link> [name]`: the job downloads the model, then checks it like an
        upload (progress in the status message)."""
        try:
            link = api.check_link(url, model=True, s=self.s)
        except UserError as exc:
            return Reply(exc.message)
        name = raw_name or api.voice_name_from_link(link)
        if not name:
            return Reply(api.links_text.NAME_FROM_LINK)
        name = self._new_voice_name(who, name)
        if isinstance(name, Reply):
            return name
        refused = self._quota(who, "import")
        if refused:
            return refused
        api.cancel_upload(who.owner, s=self.s)  # a session waiting for files is replaced
        return JobPlan(
            kind="import",
            owner=who.owner,
            headline=api.headline("import", name=name),
            name=name,
            links=(link,),
        )

    @personal
    def model_incoming(self, who: Who, incoming: Incoming) -> Reply | Download:
        if incoming.suffix not in MODEL_SUFFIXES:
            return Reply("That is not an RVC model; send a .pth, .index or .zip file.")
        limit = self.s.telegram_download_limit_bytes
        if incoming.size and incoming.size > limit:
            return Reply(too_big(incoming.size, limit))
        return Download("model", incoming.filename)

    @personal
    def model_downloaded(self, who: Who, source: str, local: Path, filename: str) -> Outcome | None:
        filename = clean_filename(filename)  # as the platform named it: made safe here too
        upload = api.current_upload(who.owner, s=self.s)
        if upload is None or upload.kind != "import":
            refused = self._quota(who, "import")
            if refused:
                return refused
            upload = api.open_upload(who.owner, "import", "", s=self.s)
        try:
            upload, fresh = api.add_model_file(
                upload.id, who.owner, source, local, filename, s=self.s
            )
        except UserError as exc:
            return Reply(exc.message)
        if not fresh:
            return None
        suffix = Path(filename).suffix.lower()
        if suffix == ".zip" or (upload.has(".pth") and upload.has(".index")):
            return self._import_plan(who, upload)
        if suffix == ".pth":
            return Reply("Got the model. Send its .index file too, or /done to import it without.")
        return Reply("Got the index. Now send the model's .pth file.")

    def _import_plan(self, who: Who, upload: api.UploadInfo) -> Outcome:
        name = upload.name
        if not name:
            model = next(
                (f for f in upload.files if f.filename.lower().endswith((".pth", ".zip"))), None
            )
            stem = Path(model.filename).stem if model else ""
            stem = re.sub(r"[^\w .'-]", " ", stem).strip()[:40]
            try:
                name = api.valid_voice_name(stem)
            except UserError:
                return Reply("Name the voice first: /import <name>, then send the file again.")
        if api.get_voice(who.owner, name, include_public=False, s=self.s) is not None:
            api.cancel_upload(who.owner, s=self.s)
            return Reply(
                f"You already have a voice called {quoted(name)}; send /import <another name>, "
                "then the files again."
            )
        claimed = api.claim_upload(upload.id, who.owner, s=self.s)
        if claimed is None:
            return Reply("Already importing; the status is above.")
        return JobPlan(
            kind="import",
            owner=who.owner,
            headline=api.headline("import", name=name),
            name=name,
            files=tuple(f.uri for f in claimed.files),
            upload_id=claimed.id,
        )

    # -- files with no command

    def loose_file(self, who: Who, incoming: Incoming) -> Reply | Download | None:
        """A file sent outside any command: a sample, a model, or a song to reply to."""
        if who.placeholder:  # a channel's posts forwarded into its group: files for people
            return Reply(PLACEHOLDER) if who.private else None
        upload = api.current_upload(who.owner, s=self.s)
        if upload is not None and upload.kind == "train":
            return self.sample_incoming(who, incoming)
        if incoming.suffix in MODEL_SUFFIXES:
            return self.model_incoming(who, incoming)
        if upload is not None and upload.kind == "import":
            return Reply("That is not an RVC model; send a .pth, .index or .zip file.")
        if not who.private:
            return None  # in a group, files are for people
        if incoming.audio:
            return Reply(
                "Nice track. Reply to it with /cover to hear it in your voice, /karaoke for the "
                "instrumental, or /stems for its parts. To clone a voice, /train <name> first."
            )
        return Reply(NOT_AUDIO)

    # -- chat administration

    @personal
    def trending(self, who: Who, args: str, is_admin: bool) -> Reply:
        """`/trending [on|off]`. Drops go to groups and channels, switched by their admins; a
        private chat may have them only where the operator allows it
        (`ENCORE_TRENDING_PRIVATE_CHATS`). Either way they spend the operator's daily budget."""
        arg = visible(args)[:MAX_ARG].lower()
        subscribed = api.is_subscribed(who.platform, who.chat_id, "trending", s=self.s)
        private_ok = self.s.trending_private_chats
        if arg not in ("on", "off"):
            if arg:
                return Reply("Use /trending on or /trending off.")
            state = "gets" if subscribed else "does not get"
            rule = (
                "Admins switch them with /trending on|off."
                if private_ok or not who.private
                else "They go to groups and channels, where an admin switches them with "
                "/trending on|off."
            )
            return Reply(f"This chat {state} the trending covers. {rule}")
        if arg == "on" and who.private and not private_ok:
            return Reply(
                "Trending covers go to groups and channels: add me to one and send "
                "/trending on there as an admin."
            )
        if not is_admin:
            return Reply("Only this chat's admins can switch the trending covers on or off.")
        if arg == "off":
            if api.unsubscribe(who.platform, who.chat_id, "trending", s=self.s):
                return Reply("📉 This chat will no longer get the trending covers.")
            return Reply("This chat was not getting the trending covers.")
        voice = api.default_voice(who.owner, s=self.s)
        api.subscribe(
            who.platform,
            who.chat_id,
            "trending",
            voice.id if voice else None,
            who.owner,
            s=self.s,
        )
        sung = f", sung by {voice.name}" if voice else ""
        return Reply(
            f"📈 This chat will get covers of the trending songs{sung}. /trending off stops them."
        )

    # -- buttons

    def press_refusal(self, who: Who, data: str) -> Reply | None:
        """Why `who` may not press a button with `data` (a short note), or None if they may.

        Checked before anything else a press does: a button is its user's alone, whatever
        state its message is in."""
        parts = (data or "")[:100].split("|")
        if len(parts) < 2 or parts[0] not in VERBS:
            return Reply("", toast=EXPIRED)
        if parts[1] != owner_tag(who):
            owner = tagged_owner(who.platform, parts[1])
            name = visible(api.display_name(owner, s=self.s))[:60] if owner else ""
            return Reply("", toast=f"This button is for {name or 'someone else'}.")
        if who.placeholder:
            return Reply("", toast=PLACEHOLDER)
        return None

    def button(self, who: Who, data: str) -> Outcome:
        """A pressed button: only its own user's press does anything, and its data is checked
        like a typed command; unknown, stale or forged data gets a short note, never an error."""
        refused = self.press_refusal(who, data)
        if refused is not None:
            return refused
        verb, _tag, *args = data.split("|")
        try:
            return self._pressed(who, verb, args)
        except UserError as exc:
            return Reply("", toast=exc.message[:190])
        except ValueError:
            return Reply("", toast=EXPIRED)

    def _pressed(self, who: Who, verb: str, args: list[str]) -> Outcome:
        if verb in ("cp", "cc"):
            return chart_menu.pressed(self, who, verb, args)
        if verb == "sp" and len(args) == 1:
            return song_menu.songs_reply(self, who, song_menu.page_number(args[0]))
        if verb == "dc" and len(args) == 2:
            pitch = _button_pitch(args[1])
            song = self._pressed_song(who, args[0])
            if isinstance(song, Reply):
                return song
            return song_menu.demo_pressed(self, who, song, pitch)
        if verb == "cs" and len(args) == 2:
            song = self._pressed_song(who, args[0])
            if isinstance(song, Reply):
                return song
            return self._cover_with(who, song, _button_pitch(args[1]))
        if verb == "cv" and len(args) == 3:
            pitch = _button_pitch(args[2])
            song = self._pressed_song(who, args[0])
            if isinstance(song, Reply):
                return song
            voice = api.voice_by_id(who.owner, _button_id(args[1]), s=self.s)
            if voice is None:
                return Reply("", toast="That voice is not yours to use; pick one of yours.")
            return self._cover_plan(who, song, voice, pitch)
        if verb in ("ss", "s6", "ks") and len(args) == 2:
            _button_pitch(args[1])
            song = self._pressed_song(who, args[0])
            if isinstance(song, Reply):
                return song
            kind = "karaoke" if verb == "ks" else "stems"
            return self._song_job(who, song, kind, six=verb == "s6")
        if verb == "dv" and len(args) == 1:
            voice = api.set_default_voice_id(who.owner, _button_id(args[0]), s=self.s)
            return Reply(f"⭐ {voice.name} is your default voice now; /cover <song> to use it.")
        if verb == "tc" and len(args) == 1:
            return self.consent(who, _button_id(args[0]))
        if verb == "tx" and len(args) == 1:
            return self.consent_refused(who, _button_id(args[0]))
        if verb == "fy" and not args:
            return self.forget_confirmed(who)
        if verb == "fn" and not args:
            return Reply("Kept: nothing was deleted.")
        raise ValueError(verb)

    def _pressed_song(self, who: Who, packed: str) -> api.SongInfo | Reply:
        song = api.get_song(_button_id(packed), who.owner, s=self.s)
        if song is None:
            return Reply("That song is no longer in the catalog; send the command again.")
        return song

    # -- submitting

    def submit(self, plan: JobPlan, key: str, reply_to: dict) -> tuple[str, bool] | Reply:
        """Submit the plan once per `key`; (job id, whether this call made it) or a refusal.

        The user's quotas are checked again where the job is made, atomically, so a burst of
        commands cannot make more jobs than the quotas allow.
        """
        try:
            if plan.kind == "cover":
                job_id = submit.submit_cover(
                    plan.owner,
                    plan.song_id,
                    plan.voice_id,
                    plan.options,
                    idempotency_key=key,
                    s=self.s,
                    reply_to=reply_to,
                    quota=True,
                    link=plan.link,
                    chart={"artist": plan.chart[0], "title": plan.chart[1]} if plan.chart else None,
                )
            elif plan.kind == "stems":
                job_id = submit.submit_stems(
                    plan.owner,
                    plan.song_id,
                    idempotency_key=key,
                    s=self.s,
                    reply_to=reply_to,
                    quota=True,
                    options=plan.options,
                )
            elif plan.kind == "karaoke":
                job_id = submit.submit_karaoke(
                    plan.owner,
                    plan.song_id,
                    plan.options,
                    idempotency_key=key,
                    s=self.s,
                    reply_to=reply_to,
                    quota=True,
                )
            elif plan.kind == "train":
                job_id = submit.submit_training(
                    plan.owner,
                    plan.name,
                    list(plan.files),
                    consent=True,
                    idempotency_key=key,
                    s=self.s,
                    reply_to=reply_to,
                    quota=True,
                )
            elif plan.kind == "import":
                job_id = submit.submit_import(
                    plan.owner,
                    plan.name,
                    list(plan.files),
                    idempotency_key=key,
                    s=self.s,
                    reply_to=reply_to,
                    quota=True,
                    links=list(plan.links),
                )
            else:
                raise ValueError(plan.kind)
        except UserError as exc:
            if plan.upload_id:
                api.release_upload(plan.upload_id, s=self.s)
            if isinstance(exc, api.QuotaExceeded):  # a quota filled up since the plan
                return Reply(limit_text(exc.limit, self.s))
            return Reply(exc.message)
        if plan.upload_id:
            api.mark_submitted(plan.upload_id, job_id, s=self.s)
        made = api.job_by_key(key, s=self.s)
        fresh = made is None or (made.reply_to or {}).get("status_message_id") == reply_to.get(
            "status_message_id"
        )
        return job_id, fresh

    def already(self) -> str:
        return "Already on it: the status of this job is in the message above."


# The chart and song menus use this module's replies and buttons, so they come last.
from bots import charts as chart_menu  # noqa: E402
from bots import songs as song_menu  # noqa: E402
