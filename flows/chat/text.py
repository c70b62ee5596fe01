"""What chat users read from Encore: every sentence, in one place.

Sentences that name a command say what works on the platform they go to. Telegram's
commands are typed with their text (`/train <name>`, `/done`, a `/cover` that replies to a
file); Discord's are slash commands whose text and files are options (`/train new`,
`/train add`), with no `/done` and no replying to a file. `replies(platform)` gives a
platform's `CommandReplies`; a new platform adds its subclass here, registered with
`@replies_for`.

Nothing here touches the database or the network: callers pass what a sentence needs, with
durations already written out (`flows.api.format_duration`, `format_wait`).
"""

from __future__ import annotations

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
            "/voices — your voices; /voice <name> sets the default\n"
            "/train <name> — clone a voice from voice notes\n"
            "/import — add an RVC model (.pth, .index or .zip)\n"
            "/karaoke <song> — the song without its lead vocal\n"
            "/stems <song> — vocals, drums, bass and other as files\n"
            "/status — your jobs · /cancel — stop the latest\n"
            "/forget — delete everything I keep about you\n"
            "/trending on|off — group admins: post trending covers here"
        )

    def unknown_command(self, command: str) -> str:
        return f"I don't know /{command}; /help lists what I can do."

    def chatter(self) -> str:
        """Plain text in a private chat."""
        return "Send /cover <song> to make a cover, or /help to see everything I can do."

    def too_big(self, size: int, limit: int) -> str:
        """A file over what the bot may fetch."""
        return (
            f"That file is {size_over(size, limit)}, and {self.name} lets bots download at most "
            f"{limit / 2**20:.0f} MB; send a shorter or more compressed file."
        )

    # -- songs

    def which_song(self, verb: str) -> str:
        """A song command with no song."""
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

    def import_started(self, name: str, file_limit: int | None) -> str:
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
            f"the .pth and then the .index. {fetch}{called}"
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
            "/voices — your voices; /voice sets the default\n"
            "/train new — clone a voice from recordings; /train add — more recordings\n"
            "/import — add an RVC model (.pth, .index or .zip)\n"
            "/karaoke — the song without its lead vocal\n"
            "/stems — vocals, drums, bass and other as files\n"
            "/status — your jobs · /cancel — stop the latest\n"
            "/forget — delete everything I keep about you\n"
            "/trending — server admins: post trending covers here"
        )

    def unknown_command(self, command: str) -> str:
        return f"I don't know /{command}; type / to see what I can do."

    def chatter(self) -> str:
        return "Use /cover to make a cover; type / to see everything I can do."

    def too_big(self, size: int, limit: int) -> str:
        return (
            f"That file is {size_over(size, limit)}, and this server accepts files up to "
            f"{limit / 2**20:.0f} MB; send a shorter or more compressed file."
        )

    def which_song(self, verb: str) -> str:
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

    def import_started(self, name: str, file_limit: int | None) -> str:
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
    ("voices", "Your voices and the default one"),
    ("voice", "Set your default voice: /voice <name>"),
    ("train", "Clone a voice from voice notes: /train <name>"),
    ("done", "Finish sending samples"),
    ("import", "Add an RVC model (.pth, .index or .zip)"),
    ("karaoke", "The song without its vocal: /karaoke <song>"),
    ("stems", "Vocals, drums, bass and other: /stems <song>"),
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
}
DISCORD_OPTIONS: dict[str, dict[str, str]] = {
    "cover": {
        "song": SONG_OPTION,
        "voice": "Who sings (default: your default voice)",
        "pitch": "Change the key, in semitones",
        "file": "Or cover a song file you upload",
    },
    "stems": {"song": SONG_OPTION, "file": "Or a song file you upload"},
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
        "name": "What to call the voice (default: the file's name)",
    },
    "voice": {"default": "The voice to use when a command names none"},
    "trending": {"state": "on or off; leave it out to see the current setting"},
}
