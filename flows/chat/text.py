"""What chat users read from Encore's flows: every sentence, in one place.

The status message (a job's headline and the line that says where it is), the outcome of a
job as posted to its chat, what a trending drop says, and what the bots' query API answers.
Sentences that name a command say what works on the platform they go to: `wording(platform)`
gives a platform's `Wording` (Telegram's has `/done` and replies to a file; Discord's has
neither). A new platform adds its `Wording` subclass here, registered with `@words_for`.

The bots' replies to commands are the last section: `replies(platform)` gives a platform's
`CommandReplies` (Telegram's commands are typed with their text, `/done` and a `/cover` that
replies to a file; Discord's are slash commands whose text and files are options), registered
with `@replies_for`.

Nothing here touches the database or the network: callers pass what the sentence needs.
"""

from __future__ import annotations

import math

from flows.chat import charts_text, links_text
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


# ------------------------------------------------------------------------------------------
# Replies to commands (what the bots in `bots/` answer)

SOMETHING_WENT_WRONG = "Something went wrong on our side; please try again in a minute."
BUTTON_EXPIRED = "That button has expired; send the command again."
PLACEHOLDER_SENDER = (
    "I can't tell who you are when you post as the group or a channel, so send this from "
    "your personal account (admins: turn off “Remain anonymous”)."
)
NOT_AUDIO = "That file is not audio I can use; send an mp3, m4a, ogg, wav or flac file."
NOT_A_MODEL = "That is not an RVC model; send a .pth, .index or .zip file."
ALREADY_ON_IT = "Already on it: the status of this job is in the message above."
ALREADY_PRESSED = "Already on it."


def plural(n: int, word: str, many: str | None = None) -> str:
    """`3 clips`, `1 clip`."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def quoted(text: str, limit: int = 60) -> str:
    """A name or title as the user typed it, in quotes, cut at `limit` characters."""
    return f"“{text[:limit]}{'…' if len(text) > limit else ''}”"


def size_over(size: int, limit: int) -> str:
    """A file's size in MB that reads as more than `limit`'s: "20.5 MB", never "20 MB" for a
    file over a 20 MB limit ("just over 20 MB" for a few bytes over)."""
    limit_text = f"{limit / 2**20:.0f}"
    for digits in (0, 1, 2):
        text = f"{size / 2**20:.{digits}f}"
        if size <= limit or float(text) > float(limit_text):
            return f"{text} MB"
    return f"just over {limit_text} MB"


def too_long(limit: int) -> str:
    return f"That is too long for me; keep it under {limit} characters."


def key_change_range(most: int, example: bool = False) -> str:
    """A pitch out of range; `example`: the user typed it, so show how."""
    if example:
        return (
            f"The key change goes from -{most} to +{most} semitones; "
            "try something like /cover <song> +2."
        )
    return f"The key change goes from -{most} to +{most} semitones."


def quota_full(rule: str, kind: str, limit: int, wait: str = "", window: str = "") -> str:
    """A quota refused a job: `rule` is "active" (jobs on the way), "rate" (new jobs per
    `window`) or the daily one; `wait` until it frees."""
    if rule == "active":
        return (
            f"You already have {plural(limit, 'job')} on the way; wait for one to finish, "
            "or /cancel the latest."
        )
    if rule == "rate":
        return (
            f"That is a lot at once: at most {plural(limit, 'new job')} per {window}. "
            f"Try again in {wait}."
        )
    if kind in ("train", "import"):
        return (
            f"You have used today's {plural(limit, 'voice training')} and imports. "
            f"Try again in {wait}."
        )
    return f"You have used today's {limit} covers, karaoke tracks and stems. Try again in {wait}."


# -- songs


def pick_song_as_you_type(verb: str) -> str:
    """A song command whose song is an option with an autocomplete, left empty."""
    return f"Tell me which song: /{verb} and pick one as you type its name."


def several_songs(query: str) -> str:
    return f"Several songs match {quoted(query)}. Which one?"


def which_voice_sings(song: str) -> str:
    return f"Which voice should sing {quoted(song)}?"


def no_voice_called(name: str) -> str:
    return f"You have no voice called {quoted(name)}; /voices lists yours."


SONG_GONE = "That song is no longer in the catalog; send the command again."
VOICE_NOT_YOURS = "That voice is not yours to use; pick one of yours."

# -- voices


def default_voice_set(name: str) -> str:
    return f"⭐ {name} is your default voice now; /cover <song> to use it."


def make_default_label(name: str) -> str:
    return f"Make {name[:40]} the default"


VOICES_MINE = "Your voices:"
VOICES_PUBLIC = "Public voices:"


def voice_item(name: str, how: str | None, is_default: bool) -> str:
    """One voice in `/voices`; `how`: "trained" or "imported" for the user's own."""
    return f"• {name}{f' ({how})' if how else ''}{' ⭐ default' if is_default else ''}"


# -- status and cancel


def collecting_model_files(name: str) -> str:
    return f"📦 Waiting for the model files of {quoted(name or 'a voice')}."


NO_JOBS_YET = "You have no jobs yet; try /cover <song>."
LATEST_JOBS = "Your latest jobs:"
JOB_STATES = {
    "succeeded": "✅ done",
    "failed": "❌ failed",
    "cancelled": "🚫 cancelled",
    "queued": "⏳ queued",
}


def job_problem(reason: str) -> str:
    """A job in `/status` that failed, or whose result never reached the chat."""
    return f"❌ {reason}"


def job_item(headline: str, state: str) -> str:
    return f"{headline}\n    {state}"


def session_stopped(kind: str, name: str, files: int) -> str:
    """`/cancel` of an upload session (`kind` "train" or "import") with `files` sent."""
    what = "samples" if kind == "train" else "model files"
    voice = quoted(name) if name else "the voice"
    if not files:
        return f"Stopped: no more {what} for {voice}."
    return (
        f"Stopped: the {plural(files, 'file')} you sent for {voice} "
        f"{'is' if files == 1 else 'are'} deleted."
    )


NOTHING_TO_CANCEL = "Nothing to cancel: you have no job on the way."


def job_cancelled(headline: str) -> str:
    return f"🚫 Cancelled: {headline}"


# -- /forget

FORGET_QUESTION = (
    "This deletes your voices, covers, samples, uploaded songs and everything else I "
    "keep about you. It cannot be undone. Go ahead?"
)
FORGET_YES = "🗑 Delete everything"
FORGET_NO = "Keep it"
FORGET_KEPT = "Kept: nothing was deleted."
FORGET_PENDING = (
    "Some of your files could not be deleted yet; Encore keeps trying and will tell you here."
)
FORGET_STOPPING = "Your running job is stopping; Encore deletes what it leaves and tells you here."


def forgotten(voices: int, jobs: int, songs: int, samples: int, pending: bool, stopping: bool):
    done = (
        f"Done: I deleted {plural(voices, 'voice')}, {plural(jobs, 'job')} with "
        f"their files, {plural(songs, 'uploaded song')} and "
        f"{plural(samples, 'staged sample')}."
    )
    if pending:
        return f"{done} {FORGET_PENDING}"
    if stopping:
        return f"{done} {FORGET_STOPPING}"
    return f"{done} I keep nothing else about you."


# -- voices in the making: training and import sessions


def voice_name_taken(name: str) -> str:
    return f"You already have a voice called {quoted(name)}; pick another name."


def sample_refused(problem: str, total: str) -> str:
    return f"⚠️ I can't use that one: {problem} So far: {total} of voice."


def ready_to_train(name: str, have: str, clips: int) -> str:
    return (
        f"Ready to train {quoted(name)} on {have} of voice "
        f"from {plural(clips, 'clip')}. I will post progress here.\n\n"
        "First: is this your own voice, or do you have its owner's permission to clone it?"
    )


CONSENT_YES = "✅ It's mine, or I have permission"
CONSENT_NO = "✖ Cancel"
ALREADY_TRAINING = "Already training; the status is above."
SESSION_OVER_ALREADY = "This session is over already."
ALREADY_IMPORTING = "Already importing; the status is above."
GOT_INDEX = "Got the index. Now send the model's .pth file."

# -- trending

TRENDING_ON_OR_OFF = "Use /trending on or /trending off."


def trending_state(subscribed: bool, private_chat_may: bool) -> str:
    """`/trending` alone: whether this chat gets the drops, and who switches them."""
    state = "gets" if subscribed else "does not get"
    rule = (
        "Admins switch them with /trending on|off."
        if private_chat_may
        else "They go to groups and channels, where an admin switches them with /trending on|off."
    )
    return f"This chat {state} the trending covers. {rule}"


TRENDING_NOT_HERE = (
    "Trending covers go to groups and channels: add me to one and send /trending on there "
    "as an admin."
)
TRENDING_ADMINS_ONLY = "Only this chat's admins can switch the trending covers on or off."
TRENDING_STOPPED = "📉 This chat will no longer get the trending covers."
TRENDING_WAS_OFF = "This chat was not getting the trending covers."


def trending_started(voice: str | None) -> str:
    sung = f", sung by {voice}" if voice else ""
    return f"📈 This chat will get covers of the trending songs{sung}. /trending off stops them."


# -- buttons


def button_owner(name: str) -> str:
    """Someone pressed another user's button."""
    return f"This button is for {name or 'someone else'}."


# -- per platform: sentences that name a command


class CommandReplies:
    """The replies that name a command or a way to send a file, as typed commands say them
    (Telegram's); a platform whose commands differ overrides what differs."""

    platform = ""  # Who.platform
    name = "this chat"  # as users know it: "Telegram"

    def help(self) -> str:
        return (
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

    def unknown_command(self, command: str) -> str:
        return f"I don't know /{command}; /help lists what I can do."

    def chatter(self, example: str | None = None) -> str:
        """Plain text in a private chat; `example`: a song of the catalog to name."""
        if example:
            return charts_text.CHATTER.format(example=example)
        return "Send /cover <song> to make a cover, or /help to see everything I can do."

    def too_big(self, size: int, limit: int) -> str:
        """A file over what the bot may fetch."""
        return (
            f"That file is {size_over(size, limit)}, and {self.name} lets bots download at most "
            f"{limit / 2**20:.0f} MB; send a shorter or more compressed file."
        )

    # -- songs

    def which_song(self, verb: str, example: str | None = None) -> str:
        """A song command with no song; `example`: a song of the catalog to name."""
        if example and verb == "cover":
            return charts_text.COVER_USAGE.format(example=example)
        if example:
            return charts_text.SONG_USAGE.format(verb=verb, example=example)
        if verb == "cover":
            return (
                "Tell me which song: /cover <song>, like /cover yesterday +2. "
                "Or send a song file and reply to it with /cover."
            )
        return f"Tell me which song: /{verb} <song>. Or reply /{verb} to a song file you sent."

    def no_song_matches(self, query: str, verb: str) -> str:
        return (
            f"No song in the catalog matches {quoted(query)}. Check the spelling, or send "
            f"me the song file and reply to it with /{verb}."
        )

    def song_file_sent(self) -> str:
        """An audio file sent with no command."""
        return (
            "Nice track. Reply to it with /cover to hear it in your voice, /karaoke for the "
            "instrumental, or /stems for its parts. To clone a voice, /train <name> first."
        )

    # -- voices

    def no_voice(self) -> str:
        return (
            "You have no voice yet: clone yours with /train <name> (voice notes work), "
            "or /import an RVC model."
        )

    def no_own_voice(self) -> str:
        return "You have no voice of your own yet: /train <name> clones yours."

    def no_default_voice(self) -> str:
        return "No default voice yet: /voice <name> picks one."

    # -- training

    def name_the_voice(self) -> str:
        return "Give the voice a name: /train <name>, like /train my voice."

    def training_started(
        self, name: str, least: str, low: str, high: str, file_limit: int | None
    ) -> str:
        files = f"Files up to {file_limit // 2**20} MB each. " if file_limit else ""
        return (
            f"🎙 Let's clone {quoted(name)}. Send me voice notes or audio files of that voice "
            f"alone, speaking or singing, with no music behind it. I need at least {least} in "
            f"all; {low} to {high} gives the best clone. {files}"
            "Send /done when you have finished, or /cancel."
        )

    def not_a_recording(self) -> str:
        return "That is not a recording; send voice notes or audio files."

    def no_training_session(self) -> str:
        return "Start a voice first: /train <name>."

    def sample_counted(
        self, got: str, total: str, clips: int, more: str | None, enough: bool
    ) -> str:
        """A sample taken: how much voice there is; `more` still needed, else whether it
        is `enough` for a good clone."""
        if more:
            tail = f"send at least {more} more."
        elif not enough:
            tail = "/done to train now, or send more for a better clone."
        else:
            tail = "that is plenty: /done to start training."
        return f"🎙 Got {got} of clean voice. Total: {total} in {plural(clips, 'clip')}; {tail}"

    def too_little_voice(self, name: str, have: str, more: str) -> str:
        return (
            f"I have {have} of clean voice for {quoted(name)}; send at least {more} more, "
            "then /done."
        )

    def collecting_samples(self, name: str, so_far: str) -> str:
        return f"🎙 Collecting samples for {quoted(name)}: {so_far} of voice so far; /done to train."

    def session_over(self) -> str:
        """A consent button whose session ended."""
        return "This session is over; start again with /train <name>."

    def training_cancelled(self) -> str:
        return "Cancelled; the samples you sent are deleted. /train <name> starts again."

    def nothing_to_finish(self) -> str:
        return "Nothing to finish: start with /train <name> or /import."

    # -- importing

    def import_started(self, name: str, file_limit: int | None, links: bool = False) -> str:
        """`links`: models may be imported from a link too (`/import <link> [name]`)."""
        bigger = f" {links_text.IMPORT_BY_LINK}" if links else ""
        called = (
            f"I'll call it {quoted(name)}."
            if name
            else "I'll name it after the file; /import <name> names it yourself."
        )
        fetch = (
            f"{self.name} lets bots fetch files up to {file_limit // 2**20} MB. "
            if file_limit
            else ""
        )
        return (
            "📦 Send me the RVC model as a file: a .zip holding the .pth (and its .index), or "
            f"the .pth and then the .index. {fetch}{called}{bigger}"
        )

    def got_model(self) -> str:
        """A .pth without its .index yet."""
        return "Got the model. Send its .index file too, or /done to import it without."

    def model_needs_pth(self) -> str:
        return "Send the model's .pth file first (or a .zip of the model)."

    def name_the_import(self) -> str:
        return "Name the voice first: /import <name>, then send the file again."

    def import_name_taken(self, name: str) -> str:
        return (
            f"You already have a voice called {quoted(name)}; send /import <another name>, "
            "then the files again."
        )


_REPLIES: dict[str, CommandReplies] = {}


def replies_for(cls: type[CommandReplies]) -> type[CommandReplies]:
    """Register a platform's replies (a class decorator)."""
    _REPLIES[cls.platform] = cls()
    return cls


def replies(platform: str | None) -> CommandReplies:
    """The replies for `platform` ("telegram", "discord"); typed commands' for another."""
    return _REPLIES.get(platform or "", _TYPED)


_TYPED = CommandReplies()


@replies_for
class TelegramReplies(CommandReplies):
    """Telegram: commands typed with their text, `/done`, and replies to a sent file."""

    platform = "telegram"
    name = "Telegram"


@replies_for
class DiscordReplies(CommandReplies):
    """Discord: slash commands whose song, voice and files are options. There is no `/done`
    (`/train new` and `/train add` take the recordings; `/import` takes the model's files in
    one go) and no replying to a file (it is the `file` option)."""

    platform = "discord"
    name = "this server"

    def help(self) -> str:
        return (
            "🎤 Encore makes AI covers: a song from the catalog, sung in the voice you pick — "
            "even your own.\n"
            "\n"
            "/cover — make a cover: pick a song as you type, or attach a song file\n"
            "/charts — the hit chart: press a song to cover it · /songs — every song I can cover\n"
            "/voices — your voices; /voice sets the default\n"
            "/train new — clone a voice from recordings; /train add — more recordings\n"
            "/import — add an RVC model (.pth, .index or .zip)\n"
            "/karaoke — the song without its lead vocal\n"
            "/stems — vocals, drums, bass and other as files; its `six` option adds guitar "
            "and piano\n"
            "/status — your jobs · /cancel — stop the latest\n"
            "/forget — delete everything I keep about you\n"
            "/trending — server admins: post trending covers here"
        )

    def unknown_command(self, command: str) -> str:
        return f"I don't know /{command}; type / to see what I can do."

    def chatter(self, example: str | None = None) -> str:
        return "Use /cover to make a cover; type / to see everything I can do."

    def too_big(self, size: int, limit: int) -> str:
        return (
            f"That file is {size_over(size, limit)}, and this server accepts files up to "
            f"{limit / 2**20:.0f} MB; send a shorter or more compressed file."
        )

    def which_song(self, verb: str, example: str | None = None) -> str:
        return pick_song_as_you_type(verb)

    def no_song_matches(self, query: str, verb: str) -> str:
        return (
            f"No song in the catalog matches {quoted(query)}. Check the spelling, or attach "
            f"the song file to /{verb} as its file."
        )

    def song_file_sent(self) -> str:
        return (
            "Nice track. Attach it to /cover to hear it in your voice, /karaoke for the "
            "instrumental, or /stems for its parts."
        )

    def no_voice(self) -> str:
        return (
            "You have no voice yet: clone yours with /train new and a few recordings, "
            "or /import an RVC model."
        )

    def no_own_voice(self) -> str:
        return "You have no voice of your own yet: /train new clones yours."

    def no_default_voice(self) -> str:
        return "No default voice yet: /voice picks one."

    def name_the_voice(self) -> str:
        return "Give the voice a name: /train new, with its name and your recordings."

    def training_started(
        self, name: str, least: str, low: str, high: str, file_limit: int | None
    ) -> str:
        return (
            f"🎙 Let's clone {quoted(name)}: recordings of that voice alone, speaking or "
            f"singing, with no music behind it. I need at least {least} in all; {low} to "
            f"{high} gives the best clone. /train add sends more; /cancel stops."
        )

    def not_a_recording(self) -> str:
        return "That is not a recording; send audio files of the voice."

    def no_training_session(self) -> str:
        return "Start a voice first: /train new <name> with your recordings."

    def add_recordings(self) -> str:
        """After `/train new` or `/train add`, while there is not enough voice yet."""
        return "Add more recordings with /train add."

    def sample_counted(
        self, got: str, total: str, clips: int, more: str | None, enough: bool
    ) -> str:
        if more:
            tail = f"/train add at least {more} more."
        elif not enough:
            tail = "you can train now, or /train add more for a better clone."
        else:
            tail = "that is plenty to train."
        return f"🎙 Got {got} of clean voice. Total: {total} in {plural(clips, 'clip')}; {tail}"

    def too_little_voice(self, name: str, have: str, more: str) -> str:
        return f"I have {have} of clean voice for {quoted(name)}; /train add at least {more} more."

    def collecting_samples(self, name: str, so_far: str) -> str:
        return (
            f"🎙 Collecting samples for {quoted(name)}: {so_far} of voice so far; "
            "/train add sends more."
        )

    def session_over(self) -> str:
        return "This session is over; start again with /train new."

    def training_cancelled(self) -> str:
        return "Cancelled; the samples you sent are deleted. /train new starts again."

    def nothing_to_finish(self) -> str:
        return "Nothing to finish: start with /train new or /import."

    def import_started(self, name: str, file_limit: int | None, links: bool = False) -> str:
        called = f"I'll call it {quoted(name)}." if name else "I'll name it after the file."
        return f"📦 Importing the RVC model. {called}"

    def got_model(self) -> str:
        return "Got the model, but not its .index: /import it again with the .index as `index`."

    def model_needs_pth(self) -> str:
        return "/import needs the model's .pth file (or a .zip of the model) as its `file`."

    def name_the_import(self) -> str:
        return "Name the voice: /import again with a `name`."

    def import_name_taken(self, name: str) -> str:
        return f"You already have a voice called {quoted(name)}; /import again with another name."


# What the Telegram command menu says of each command (`setMyCommands`).
TELEGRAM_MENU: tuple[tuple[str, str], ...] = (
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

# What Discord shows of each slash command and its options.
SONG_OPTION = "Start typing and pick a song from the catalog"
RECORDING = "A recording of the voice"
ANOTHER_RECORDING = "Another recording"
DISCORD_COMMANDS: dict[str, str] = {
    "cover": "Make a cover of a song in a voice",
    "stems": "Vocals, drums, bass and other as files",
    "karaoke": "The song without its lead vocal",
    "train": "Clone a voice from recordings",
    "train new": "Start a voice from recordings of it",
    "train add": "Add recordings to the voice you are training",
    "import": "Add an RVC voice model (.pth, .index or .zip)",
    "voices": "Your voices and the default one",
    "voice": "Set your default voice",
    "status": "Your jobs",
    "cancel": "Stop your latest job",
    "forget": "Delete everything Encore keeps about you",
    "trending": "Post covers of trending songs in this channel",
    "charts": "The hit chart: press a song to cover it",
    "songs": "The songs you can cover",
}
IMPORT_FILE_OR_LINK = "Attach the model (a .zip, or the .pth and its .index), or give its link."

DISCORD_OPTIONS: dict[str, dict[str, str]] = {
    "cover": {
        "song": SONG_OPTION,
        "voice": "Who sings (default: your default voice)",
        "pitch": "Change the key, in semitones",
        "file": "Or cover a song file you upload",
    },
    "stems": {
        "song": SONG_OPTION,
        "file": "Or a song file you upload",
        "six": "Six stems: guitar and piano too",
    },
    "karaoke": {"song": SONG_OPTION, "file": "Or a song file you upload"},
    "train new": {
        "name": "What to call the voice",
        "sample1": f"{RECORDING} (speech or singing, no music)",
        **{f"sample{i}": ANOTHER_RECORDING for i in range(2, 6)},
    },
    "train add": {
        "sample1": RECORDING,
        **{f"sample{i}": ANOTHER_RECORDING for i in range(2, 6)},
    },
    "import": {
        "file": "The model: a .zip of .pth and .index, or the .pth",
        "index": "The model's .index, when `file` is the .pth",
        "link": "Or the model's link (a .zip, .pth or .index), for models too big to attach",
        "name": "What to call the voice (default: the file's name)",
    },
    "voice": {"default": "The voice to use when a command names none"},
    "trending": {"state": "on or off; leave it out to see the current setting"},
    "charts": {"chart": "Which chart (default: this channel's)"},
    "songs": {"page": "Which page of the list"},
}
