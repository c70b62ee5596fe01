"""What chat users read from Encore's flows: every sentence, in one place.

The status message (a job's headline and the line that says where it is), the outcome of a
job as posted to its chat, what a trending drop says, and what the bots' query API answers.
Sentences that name a command say what works on the platform they go to: `wording(platform)`
gives a platform's `Wording` (Telegram's has `/done` and replies to a file; Discord's has
neither). A new platform adds its `Wording` subclass here, registered with `@words_for`.

Nothing here touches the database or the network: callers pass what the sentence needs.
"""

from __future__ import annotations

import math

from flows.db import TERMINAL
from gpu_worker.samples import format_duration

# ------------------------------------------------------------------------------------------
# The status message: a headline, then where the job is

# What each step of a job is called where users read it (the chats and the CLI).
STEP_LABELS = {
    "queued": "Queued",
    "fetching": "Fetching the song from the link",
    "resolving": "Fetching the song",
    "separating": "Separating vocals and instruments",
    "converting": "Singing in your voice",
    "mixing": "Mixing",
    "storing": "Saving",
    "checking": "Checking your samples",
    "isolating": "Removing background music",
    "training": "Training your voice",
    "registering": "Saving your voice",
    "previewing": "Singing a preview",
    "downloading": "Downloading the model",
    "importing": "Checking the model",
    "delivering": "Uploading",
    "done": "Done",
}

RESTART_STEPS = ("restarted", "interrupted")
JOB_NOUNS = {"cover": "cover", "karaoke": "karaoke track", "stems": "stems", "train": "voice"}


def pitch_shift(pitch: int) -> str:
    """ ", +2 semitones" for a shifted cover, "" for the original key."""
    return f", {pitch:+d} semitones" if pitch else ""


def headline(
    kind: str,
    song: str | None = None,
    voice: str | None = None,
    pitch: int = 0,
    name: str | None = None,
) -> str:
    """The status message's first line: what the job is."""
    if kind == "cover":
        return f"🎤 {song} — sung by {voice}{pitch_shift(pitch)}"
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


def step_label(step: str, voice: str | None = None) -> str:
    """What `step` is called; a cover sung by a voice that is not the user's own (the demo
    voice, a public one) names it: `voice` is that voice's name."""
    if step == "converting" and voice:
        return f"Singing in the voice “{voice}”"
    return STEP_LABELS.get(step, step.replace("_", " ").capitalize())


def status_line(
    state: str,
    step: str,
    progress: float,
    position: int | None = None,
    reason: str | None = None,
    kind: str | None = None,
    voice: str | None = None,
) -> str:
    """The status message's second line: where the job is (`voice`: see `step_label`)."""
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
    return f"⚙️ {step_label(step, voice)}…  {progress_bar(progress)} {round(progress * 100)}%"


def status_text(head: str, line: str) -> str:
    return f"{head}\n{line}"


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


def megabytes(n: int) -> str:
    """A size as users read it: "20.5 MB", "48 MB", "300 KB". Rounded up, so that a file over
    a limit never reads as the limit itself (20.04 MB is "20.1 MB", not "20 MB")."""
    if n >= 2**20:
        return f"{math.ceil(n * 10 / 2**20) / 10:g} MB"
    return f"{max(1, math.ceil(n / 1024))} KB"


# ------------------------------------------------------------------------------------------
# A job's outcome, as posted to its chat


def cover_title(song_title: str, voice: str | None, kind: str = "cover", pitch: int = 0) -> str:
    """The title of a posted cover or karaoke track: a +2 cover is not the original-key one."""
    if kind == "cover" and voice:
        shift = f", {pitch:+d}" if pitch else ""
        return f"{song_title} ({voice} cover{shift})"
    return f"{song_title} ({kind})"


# ------------------------------------------------------------------------------------------
# Trending drops (`flows.trending`): what a cover says in the chat, and why a chat got none


def drop_headline(rank: int, song: str, voice: str) -> str:
    """What a drop's cover says it is (its caption, or its channel post)."""
    return f"📈 #{rank} on the chart: {song} — sung by {voice}"


DROP_NO_VOICE = "no voice: an admin sets a default voice with /voice, then /trending on again"
DROP_VOICE_GONE = "its voice was deleted: an admin picks another with /voice, then /trending on"
DROP_VOICE_PRIVATE = "its voice is no longer available to the admin who subscribed"


def drop_budget_spent(limit: int, wait_min: int) -> str:
    return f"the budget of {limit} drop covers a day is spent (room in {wait_min} min)"


OUTCOME_NOUNS = {"cover": "cover", "karaoke": "karaoke track"}


def stems_caption(result: dict) -> str:
    """What a stems zip holds (six stems: guitar and piano too), and the job's note if any."""
    six = "guitar" in result.get("stems", [])
    parts = "drums, bass, other, guitar, piano" if six else "drums, bass, other"
    said = f"Vocals, {parts} and the instrumental, as FLAC."
    return f"{said}\n{result['note']}" if result.get("note") else said


DONE = "✅ Done."


class Wording:
    """The sentences of one platform; the base class is what every platform says alike."""

    platform = ""  # the reply target's "platform"
    name = "the chat"  # as users know it: "Telegram"

    def undeliverable(self) -> str:
        return "❌ It is ready, but it could not be posted here; please ask again later."

    def waiting_upload(self) -> str:
        return f"⏳ Waiting for {self.name} to accept the upload…"

    def gave_up(self, give_up_s: float) -> str:
        """The one sentence a chat gets when its outcome is given up."""
        return (
            f"❌ It was ready, but {self.name} refused it for {format_duration(give_up_s)}, "
            "so I stopped trying; please ask again."
        )

    def too_big(self, what: str, size: int, limit: int, link: str | None) -> str:
        """A result over the platform's upload limit for bots: a link, or why there is none."""
        over = (
            f"Your {what} is {megabytes(size)}, over {self.name}'s {megabytes(limit)} "
            "limit for bots"
        )
        if link:
            return f"{over}; download it here: {link}"
        return f"{over}, and this server cannot make download links; try a shorter song."

    def use_voice(self, name: str, is_default: bool) -> str:
        """How to use a voice just made."""
        if is_default:
            return "It is your default voice now: try /cover <song>."
        return f"Use it with /voice {name}, then /cover <song>."

    def trained(self, name: str, voiced_s: float, is_default: bool) -> str:
        return (
            f"Your voice “{name}” is ready, trained on {format_duration(voiced_s)} of voice. "
            f"Here is how it sings. {self.use_voice(name, is_default)}"
        )

    def imported(
        self, name: str, version: str, sample_rate: int, index: bool, is_default: bool
    ) -> str:
        with_index = "with its index" if index else "without an index"
        return (
            f"✅ Imported “{name}” (RVC {version}, {sample_rate // 1000} kHz, {with_index}). "
            f"{self.use_voice(name, is_default)}"
        )

    def send_song_file(self, verb: str) -> str:
        """How to use a song file of one's own with `/<verb>` (cover, stems, karaoke)."""
        return f"send me the song file with /{verb}"

    def all_gone(self) -> str:
        """After `/forget`, once the last file left pending is deleted."""
        return "The rest of your files are deleted now: Encore keeps nothing about you."

    # -- training samples (`flows.api.add_sample`)

    def training_over(self) -> str:
        return "That training session is over; start again with /train <name>."

    def sample_repeated(self) -> str:
        return "You sent this clip already."

    def sample_over_total(self, max_total_s: float) -> str:
        return (
            f"That would take the total past {format_duration(max_total_s)}, the most one "
            "voice trains on."
        )

    def sample_problem(self, problem: str) -> str:
        """The intake's reason about "Sample 1", said about this clip."""
        if problem.startswith("Sample 1 "):
            return "This clip " + problem.removeprefix("Sample 1 ")
        return problem


_WORDINGS: dict[str, Wording] = {}


def words_for(cls: type[Wording]) -> type[Wording]:
    """Register a platform's wording (a class decorator)."""
    _WORDINGS[cls.platform] = cls()
    return cls


def wording(platform: str | None) -> Wording:
    """The sentences for `platform` ("telegram", "discord"); the common ones for another."""
    return _WORDINGS.get(platform or "", _COMMON)


_COMMON = Wording()


@words_for
class TelegramWording(Wording):
    """Telegram has `/done` to end a training session, and replies to a sent file."""

    platform = "telegram"
    name = "Telegram"

    def send_song_file(self, verb: str) -> str:
        return f"send me the song file and reply to it with /{verb}"

    def sample_over_total(self, max_total_s: float) -> str:
        return f"{super().sample_over_total(max_total_s)[:-1]}; /done to train with what you sent."


@words_for
class DiscordWording(Wording):
    """Discord's commands take their files as options: no `/done`, no replying to a file."""

    platform = "discord"
    name = "Discord"

    def send_song_file(self, verb: str) -> str:
        return f"attach the song file to /{verb} (its `file` option)"

    def training_over(self) -> str:
        return "That training session is over; start again with /train new."

    def sample_over_total(self, max_total_s: float) -> str:
        return (
            f"That would take the total past {format_duration(max_total_s)}, the most one "
            "voice trains on; the recordings you sent are enough."
        )
