"""What passes between a platform adapter and the handlers: who is talking, the files they
send, and the values a handler returns for the adapter to render (`Reply`, `JobPlan`,
`Download`). No platform type appears here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bots.inputs import AUDIO_SUFFIXES, clean_filename, visible
from flows import api


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
    """The platform should fetch the user's file, then hand its local path back."""

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
        return self.suffix in AUDIO_SUFFIXES
