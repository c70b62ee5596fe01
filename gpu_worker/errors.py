"""Errors the engine raises on purpose: each carries one sentence a user can act on."""


class EngineError(Exception):
    """A failure whose message is fit to show a user as it is."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class BadAudio(EngineError):
    """The input is not usable audio (corrupt, empty, too long, too large, not audio)."""


class ModelMissing(EngineError):
    """A weight file the step needs is not in the model folder."""


class BadVoice(EngineError):
    """A voice model file is not a loadable RVC model."""


class Cancelled(EngineError):
    """The caller asked the step to stop; its finished work is kept so a rerun resumes."""


class Crashed(EngineError):
    """The work died for a reason that is not the user's (killed, out of memory, a bug).

    Whatever it had finished is kept, so running it again resumes; callers may retry it."""


class TooLong(BadAudio):
    """The audio decodes to more than the length limit (whatever its headers declared)."""
