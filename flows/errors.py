"""The one map from an error to the sentence a user reads, and the errors of the services.

The engine (`gpu_worker`) raises typed errors that carry data and no words; the services raise
`UserError` with a sentence already written, or a typed refusal of their own (`ConsentNeeded`).
`user_message` turns any of them into one short sentence that says what to do; every place that
shows an error to a person (the chat bots through `flows.api`, a job's failure reason, the CLI)
goes through it. An error that is none of these is a bug: it gets `GENERIC` and a traceback in
the log, never in a chat.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, TypeVar

from gpu_worker.errors import (
    BadAudio,
    BadOptions,
    BadVoice,
    Cancelled,
    Crashed,
    EngineError,
    ModelMissing,
    TooLong,
    from_record,
)
from gpu_worker.samples import IntakeReport, SampleCheck, format_duration

T = TypeVar("T")

GENERIC = "Something went wrong on our side; please try again later."
DOWNLOAD = "run `encore models download`"
SEND_AUDIO = "send an mp3, wav, ogg, m4a or flac file"


class UserError(Exception):
    """A refusal whose sentence the service wrote for the user (`message`)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


CONSENT_NEEDED = (
    "Training needs your consent: confirm the voice is yours or that you have its owner's "
    "permission."
)


class ConsentNeeded(UserError):
    """Training was asked for without the owner's consent that the voice is theirs (not an
    engine error: the service refuses before any work)."""

    def __init__(self) -> None:
        super().__init__(CONSENT_NEEDED)


EXPECTED: tuple[type[Exception], ...] = (EngineError, UserError)
"""The errors that end a request or a job with a sentence instead of a traceback."""


# -- how numbers read ------------------------------------------------------------------------


def megabytes(n: float, *, up: bool = False) -> str:
    """A size in MB: whole when it is, else to a tenth ("20 MB", "20.5 MB"). `up` rounds up, so
    a file over a limit never reads as the limit itself."""
    tenths = n * 10 / 2**20
    tenths = math.ceil(tenths - 1e-9) if up else round(tenths)
    return f"{tenths // 10} MB" if tenths % 10 == 0 else f"{tenths / 10:.1f} MB"


def minutes_limit(seconds: float) -> str:
    """A length limit as a compound adjective: "15-minute"."""
    return f"{seconds / 60:.0f}-minute"


def clock(seconds: float) -> str:
    """A length as a player shows it: 3:05, 15:01, 1:02:03."""
    hours, rest = divmod(int(seconds), 3600)
    mins, secs = divmod(rest, 60)
    return f"{hours}:{mins:02d}:{secs:02d}" if hours else f"{mins}:{secs:02d}"


def rate(hz: float) -> str:
    return f"{hz / 1000:.3g} kHz" if hz >= 1000 else f"{hz:.0f} Hz"


def _listed(items: Any) -> str:
    return ", ".join(str(i) for i in items) if isinstance(items, list | tuple) else str(items)


# -- the map ---------------------------------------------------------------------------------

Wording = str | Callable[[dict[str, Any]], str]
"""A template filled in from the error's data (`str.format`), or a function of the data."""

_STEP = {"encoding": "Encoding", "mixing": "Mixing", "loudness": "Measuring loudness"}
_PTH_AGAIN = "upload the original .pth again"
_INDEX_AGAIN = "upload the voice's added_*.index again or import without it"
ZIP_FIX = "zip only the .pth and .index"

_VOICE_PARTS: dict[str, str] = {
    "config": "has a damaged config",
    "rvc_weights": "is missing RVC weights",
    "f0": "has a damaged f0 field",
    "spectrogram": "has a spectrogram size that does not fit {sample_rate} Hz",
    "dropout": "has a damaged config (dropout)",
    "resblock_type": "has an unknown residual block type",
    "resblocks": "has residual blocks RVC does not use",
    "dilations": "has residual block dilations RVC does not use",
    "decoder": "has a damaged decoder config",
    "decoder_kernels": "has decoder kernel sizes that do not fit its upsample rates",
    "channels": "has channel counts that do not divide as RVC's layers need",
    "decoder_width": "has a decoder width that cannot halve at every upsampling",
    "weight_names": "has weights with odd names",
    "speakers": "has a damaged speaker table",
    "missing_weight": "lacks weights its config needs ({key})",
    "extra_weight": "holds weights its config does not have ({key})",
    "shape": "has {key} of shape {shape} where its config needs {needs}",
}
"""What is damaged in a voice file (`BadVoice` `damaged`, by `part`)."""

_INDEX_PARTS: dict[str, str] = {
    "cut_short": "is cut short",
    "overlong": "declares more data than it holds",
    "not_trained_l2": "is not a trained L2 index as RVC builds",
    "dimension": "holds {dim}-dim vectors, which no RVC voice uses",
    "vectors": "declares {vectors} vectors, which do not fit in its {size} bytes",
    "clusters": "declares an impossible number of clusters",
    "quantizer": "has a quantizer RVC does not use",
    "quantizer_mismatch": "has a quantizer that does not match it",
    "id_map": "has an unknown id map",
    "inverted_lists": "has inverted lists RVC does not write",
    "list_sizes": "has damaged list sizes",
    "list_total": "has lists that do not add up to its vectors",
    "trailing_data": "has data after its end",
}
"""What is damaged in an index file (`BadVoice` `damaged_index`, by `part`)."""

_ARCHIVE_CASES: dict[str, str] = {
    "damaged": "{subject} is damaged; {fix}.",
    "too_many_files": "{subject} holds too many files; {fix}.",
    "encrypted": "{subject} is encrypted; {fix} without a password.",
    "compression": "{subject} uses a compression method we do not read; {fix}.",
    "unsafe_paths": "{subject} contains unsafe paths; {fix}.",
    "symlink": "{subject} contains a symbolic link; {fix}.",
    "duplicate": "{subject} holds two entries named {entry}; {fix}.",
    "overlap": "{subject} has entries whose data overlap, a zip bomb trick; {fix}.",
    "expands": "{subject} expands far beyond its size; {fix}.",
}
"""A refused zip: a user's model archive (no `name`) or a voice `.pth` (torch saves a zip)."""


def _archive(case: str) -> Callable[[dict[str, Any]], str]:
    def wording(d: dict[str, Any]) -> str:
        name = d.get("name")
        subject = f"The voice file {name}" if name else "The zip"
        fix = _PTH_AGAIN if name else ZIP_FIX
        return _ARCHIVE_CASES[case].format(**{**d, "subject": subject, "fix": fix})

    return wording


def _voice_damaged(d: dict[str, Any]) -> str:
    return f"{d['name']} {_VOICE_PARTS[d['part']].format(**d)}; {_PTH_AGAIN}."


def _index_damaged(d: dict[str, Any]) -> str:
    return f"The index file {d['name']} {_INDEX_PARTS[d['part']].format(**d)}; {_INDEX_AGAIN}."


def _models_missing(d: dict[str, Any]) -> str:
    if d.get("missing"):
        return f"Voice models are missing from {d['folder']} ({_listed(d['missing'])}); {DOWNLOAD}."
    return f"Voice models are missing ({d.get('detail', '')}); {DOWNLOAD}."


_SEPARATION_STATE = {
    "no_folder": "not installed ({folder} does not exist)",
    "not_installed": "not installed in {folder}",
    "checksum": "damaged in {folder} (checksum mismatch)",
    "damaged": "damaged in {folder} ({detail})",
}


def _separation_missing(d: dict[str, Any]) -> str:
    state = _SEPARATION_STATE[d["state"]].format(**d)
    return f"The separation model {d['model']} is {state}; {DOWNLOAD} to fetch it."


def _download_failed(d: dict[str, Any]) -> str:
    if d.get("url"):
        return (
            f"Could not download the {d['what']} from {d['url']} ({d['detail']}); check the "
            f"network, or copy {d['file']} into {d['folder']} by hand."
        )
    return (
        f"Downloading the {d['what']} failed ({d['detail']}); check the connection and try again."
    )


def _out_of_memory(d: dict[str, Any]) -> str:
    if str(d.get("device", "cpu")).startswith("cuda"):
        return "The GPU ran out of memory while training; lower the batch size and try again."
    return "Training ran out of memory; lower the batch size."


SENTENCES: dict[tuple[type[Exception], str], Wording] = {
    # marking results (`gpu_worker.tags`, `gpu_worker.provenance`)
    (EngineError, "tag_format"): "Tags cannot be written to a .{fmt} file; "
    "choose mp3, ogg, m4a, wav or flac.",
    (EngineError, "tag_unreadable"): "The {fmt} result could not be read back to tag it; "
    "please try again.",
    (EngineError, "tag_failed"): "Could not tag the {fmt} result ({error}); please try again.",
    (EngineError, "signing_half_missing"): "The signing certificate {cert} or its key {key} "
    "is missing; set both ENCORE_C2PA_CERT and ENCORE_C2PA_KEY, or remove the other one.",
    (EngineError, "signing_unreadable"): "The signing certificate cannot be read ({error}); "
    "check ENCORE_C2PA_CERT and ENCORE_C2PA_KEY.",
    (EngineError, "signing_refused"): "The signing certificate was refused ({error}); use an "
    "ES256 certificate issued by a CA, with its chain.",
    (EngineError, "manifest_format"): "Content Credentials cannot be embedded in a .{fmt} file.",
    (EngineError, "signing_failed"): "Signing the result failed ({error}); please try again.",
    # audio in
    (BadAudio, "not_found"): "The file {name} was not found; check the path and try again.",
    (BadAudio, "empty_file"): "The file is empty; send an audio file (mp3, wav, ogg, m4a, flac).",
    (BadAudio, "too_large"): lambda d: (
        f"The file is {megabytes(d['size'], up=True)}, over the "
        f"{megabytes(d['max_bytes'])} limit; send a shorter or more compressed file."
    ),
    (BadAudio, "not_audio"): f"This file could not be read as audio; {SEND_AUDIO}.",
    (BadAudio, "no_audio_stream"): f"This file has no audio in it; {SEND_AUDIO}.",
    (BadAudio, "codec"): "This file's audio is in a format Encore does not read ({codec}); "
    + SEND_AUDIO
    + ".",
    (BadAudio, "damaged_stream"): "This audio stream is damaged; "
    "export the file again and resend it.",
    (BadAudio, "sample_rate"): lambda d: (
        f"The audio's sample rate ({rate(d['sample_rate'])}) is "
        "not one Encore accepts; export it again at 44.1 or 48 kHz."
    ),
    (BadAudio, "channels"): "The file has {channels} channels; send a mono or stereo file "
    "(at most {max_channels} channels).",
    (TooLong, "declared"): lambda d: (
        f"The audio is {clock(d['seconds'])} long, over the "
        f"{minutes_limit(d['max_seconds'])} limit; send a shorter file."
    ),
    (TooLong, "decoded"): lambda d: (
        "The audio is longer than the "
        f"{minutes_limit(d['max_seconds'])} limit; send a shorter file."
    ),
    (BadAudio, "invalid_samples"): "This file decodes to invalid samples; "
    "export it again and resend it.",
    (BadAudio, "invalid_audio"): "The audio holds invalid samples; export it again and resend it.",
    (BadAudio, "decode_timeout"): "Decoding this file took too long; send a shorter file.",
    (BadAudio, "damaged"): "This file is damaged or cut off; export it again and resend it.",
    (BadAudio, "too_short"): "The audio is too short; send at least a few seconds.",
    (BadAudio, "empty_audio"): "The audio is empty; send a file with sound in it.",
    (BadAudio, "empty_instrumental"): "The instrumental is empty; send a longer song.",
    (BadAudio, "vocal_damaged"): "The vocal file {name} is damaged; separate the song again.",
    (BadAudio, "vocal_not_found"): "The vocal file {name} was not found; separate the song again.",
    # training samples
    (BadAudio, "sample_changed"): "Sample {number} could not be read again; send it once more.",
    (BadAudio, "no_samples"): "No voice samples were given; "
    "upload at least one recording of the voice.",
    (BadAudio, "sample_not_found"): "The sample {name} was not found; upload it again.",
    (BadAudio, "sample_unreadable"): "The sample {name} cannot be read; upload it again.",
    (BadAudio, "no_readable_samples"): "None of the samples could be read as audio; "
    "upload them again as WAV.",
    (BadAudio, "too_little_voice"): lambda d: (
        f"Only {d['seconds']:.1f} s of voice was left "
        f"after cutting out silence; upload at least {d['min_seconds']:.0f} s of clear singing or "
        "speech (a few minutes trains a good voice)."
    ),
    (BadAudio, "no_pitched_voice"): "No pitched voice was found in the samples; "
    "upload recordings of singing or speech.",
    (BadAudio, "too_few_slices"): "The samples gave too few usable slices for one training "
    "batch; upload more voice or lower the batch size.",
    # ffmpeg
    (EngineError, "ffmpeg_timeout"): lambda d: (
        f"{_STEP.get(d.get('step'), 'Processing')} took too long; try a shorter song."
    ),
    (EngineError, "ffmpeg_failed"): lambda d: (
        f"{_STEP.get(d.get('step'), 'Processing')} failed; please try again later."
    ),
    # voice files
    (BadVoice, "not_found"): "The voice file {name} does not exist; upload the voice's .pth again.",
    (BadVoice, "empty"): "The voice file {name} is empty; upload the voice's .pth again.",
    (BadVoice, "too_large"): lambda d: (
        f"The voice file {d['name']} is over "
        f"{megabytes(d['max_bytes'])}; RVC voices are far smaller."
    ),
    (BadVoice, "not_torch"): "{name} is not a PyTorch model file; upload an RVC voice .pth.",
    (BadVoice, "pickled_code"): "{name} holds Python objects besides weights and was refused, "
    "as loading it could run code.",
    (BadVoice, "not_weights"): "{name} holds something other than weights; "
    "upload the original .pth.",
    (BadVoice, "training_checkpoint"): "{name} is a training checkpoint, not a voice; "
    "upload the small .pth that training exports.",
    (BadVoice, "not_rvc"): "{name} is not an RVC voice model; upload the .pth of an RVC voice.",
    (BadVoice, "damaged"): _voice_damaged,
    (BadVoice, "vocoder"): "{name} uses a vocoder other than RVC's HiFi-GAN, "
    "which cannot be used here.",
    (BadVoice, "version_mismatch"): "{name} says it is an RVC {version} voice but its weights "
    "do not match; it is damaged.",
    (BadVoice, "version"): "{name} says it is an RVC {version} voice; only v1 and v2 exist.",
    (BadVoice, "sample_rate"): "{name} synthesises at {sample_rate} Hz; "
    "RVC voices use 32, 40 or 48 kHz.",
    (BadVoice, "embedder"): "{name} was trained on a content model ({embedder}) "
    "that cannot be used here.",
    (BadVoice, "not_finite"): "{name} has NaN or infinite weights, so it cannot sing; "
    "use another copy.",
    (BadVoice, "not_rvc_size"): "{name} asks for {key} = {value}, outside what RVC voices use "
    "(1-{most}); it is not a real RVC voice.",
    (BadVoice, "upsampling"): "{name} upsamples by {upsamples} but {sample_rate} Hz needs "
    "{needs}; it is not a real RVC voice.",
    (BadVoice, "dtype"): "{name} stores {dtype} weights; "
    "RVC voices hold float16 or float32 weights only.",
    (BadVoice, "too_many_parameters"): lambda d: (
        f"{d['name']} holds over "
        f"{d['most'] // 1_000_000} million parameters, more than any RVC voice; "
        "it is not a real RVC voice."
    ),
    (BadVoice, "format"): "{name} cannot be used: {detail}.",
    (BadVoice, "does_not_load"): "{name} does not load as an RVC voice; "
    "it is damaged or not an RVC model.",
    (BadVoice, "not_generator"): "{name} is not an RVC generator checkpoint.",
    # index files
    (BadVoice, "damaged_index"): _index_damaged,
    (BadVoice, "index_kind"): "The index file {name} is not an IVF-Flat faiss index, the kind "
    "RVC writes; import the voice without it or send its added_*.index.",
    (BadVoice, "index_of_another_voice"): "The index file {name} holds {dim}-dim features but "
    "the voice needs {needs}; it belongs to another voice, so send this voice's own index.",
    (BadVoice, "index_not_found"): "The index file {name} does not exist; "
    "upload it again or convert without it.",
    (BadVoice, "index_unreadable"): "The index file {name} cannot be read; "
    "upload it again or convert without it.",
    **{(BadVoice, f"archive_{case}"): _archive(case) for case in _ARCHIVE_CASES},
    (EngineError, "unsafe_torch"): "Voice models cannot be loaded safely with this server's "
    "PyTorch; the operator must upgrade torch to {needs} or newer.",
    # weights
    (ModelMissing, "voice_models"): _models_missing,
    (ModelMissing, "separation_model"): _separation_missing,
    (EngineError, "pitch_failed"): "Pitch detection ({f0_method}) failed on every slice; "
    f"{DOWNLOAD} or train with another pitch method.",
    (EngineError, "features_failed"): "Content features could not be computed for any slice; "
    f"{DOWNLOAD} and try again.",
    (ModelMissing, "part"): "The {part} model is not in {folder}; " + DOWNLOAD + ".",
    (ModelMissing, "demo_voice"): f"The demo voice is not downloaded; {DOWNLOAD}.",
    (EngineError, "download_failed"): _download_failed,
    # training
    (EngineError, "training_busy"): "This voice is already being trained; "
    "wait for that run to finish or cancel it.",
    (EngineError, "training_out_of_memory"): _out_of_memory,
    (Cancelled, "training"): "Voice training was cancelled; "
    "start it again to resume from the last checkpoint.",
    (Crashed, "training_failed"): "Voice training failed on our side; "
    "run it again to resume where it stopped.",
    (Crashed, "training_stopped"): "Voice training stopped unexpectedly; "
    "run it again to resume from its last checkpoint.",
    (EngineError, "no_voice_model"): "Training ended without a voice model; run it again.",
    # options
    (BadOptions, "pitch"): "Pitch must be a whole number of semitones from {low} to {high}.",
    (BadOptions, "f0_method"): lambda d: (
        f"Unknown pitch method {d['value']!r}; use one of rmvpe, swiftf0, pm, fcpe, crepe."
    ),
    (BadOptions, "number_range"): "{name} must be a number from {low} to {high}.",
    (BadOptions, "whole_range"): "{name} must be a whole number from {low} to {high}.",
    (BadOptions, "whole_at_least"): "{name} must be a whole number of at least {low}.",
    (BadOptions, "at_most"): "{name} must be at most {high}.",
    (BadOptions, "whole"): "{name} must be a whole number.",
    (BadOptions, "precision"): lambda d: (
        f"precision must be one of {_listed(d['allowed'])}, not {d['value']!r}."
    ),
    (BadOptions, "output_format"): lambda d: (
        f"Unknown output format {d['value']!r}; choose one of {_listed(d['allowed'])}."
    ),
    (BadOptions, "train_sample_rate"): "Voices can only be trained at {only} Hz (the v2 40k "
    "base models); {value} is not supported.",
    (BadOptions, "config_override"): "config_override must be a dict of rvc-next config sections.",
    (BadOptions, "device"): lambda d: f"Unknown device {d['value']!r}; use cpu, cuda or cuda:N.",
    (BadOptions, "train_options"): "options must be TrainOptions.",
    (BadOptions, "voice_name"): "The voice needs a name.",
    (BadOptions, "no_cuda"): "No CUDA GPU is available here; train on the cpu device instead.",
    (BadOptions, "no_such_gpu"): "There is no GPU {index} (this machine has {count}); "
    "use another cuda:N.",
    (BadOptions, "separation_model_feature"): "The separation model {model} needs a Demucs "
    "feature that is not installed ({detail}); choose another model.",
    (BadOptions, "separation_model_no_vocals"): "The separation model {model} makes no vocal "
    "stem; choose another.",
    (BadOptions, "separation_model_unknown"): lambda d: (
        f"Unknown Demucs model {d['model']}; known models: {_listed(d['allowed'])}."
    ),
    (BadOptions, "separation_device"): "Separation cannot use the device {device} ({detail}).",
    (BadAudio, "separation_rate"): "Separation needs {needs} Hz audio, not {sample_rate} Hz.",
    (BadAudio, "separation_shape"): "Separation needs mono or stereo audio shaped "
    "(channels, samples).",
}
"""(error class, reason) -> the sentence, from the error's data. A class's entry also serves
its subclasses."""

FALLBACK: dict[type[Exception], str] = {
    BadAudio: "This file could not be used as audio; export it again and resend it.",
    BadVoice: "This voice model cannot be used; upload the original files again.",
    ModelMissing: f"Voice models are missing; {DOWNLOAD}.",
    BadOptions: "One of the options is out of range; check it and try again.",
    Cancelled: "Cancelled.",
    Crashed: "The work stopped unexpectedly on our side; run it again to resume.",
    EngineError: GENERIC,
}
"""The sentence for a class's case that `SENTENCES` does not list (a bug to fix there)."""


# -- voice samples (`gpu_worker.samples`) -------------------------------------------------------


def _khz(hz: float) -> str:
    return f"{hz / 1000:.3g} kHz"


def _channels_wanted(most: int) -> str:
    if most <= 1:
        return "a mono recording"
    if most == 2:
        return "a mono or stereo recording"
    return f"a recording with at most {most} channels"


def _range_text(low: float, high: float) -> str:
    if low % 60 == 0 and high % 60 == 0:
        return f"{low / 60:g}–{high / 60:g} min"
    return f"{format_duration(low)} to {format_duration(high)}"


SAMPLE_PROBLEMS: dict[str, Wording] = {
    "missing": "did not arrive; send it again.",
    "empty": "is an empty file; send the recording again.",
    "too_large": lambda d: (
        f"is {megabytes(d['size'], up=True)}, over the "
        f"{megabytes(d['max_bytes'])} limit; send a shorter or more compressed recording."
    ),
    "duplicate": "is the same file as sample {of}; send a different recording or leave it out.",
    "not_audio": "could not be read as audio; send it as an mp3, wav, ogg or m4a file.",
    "channels": lambda d: (
        f"has {d['channels']} audio channels; send {_channels_wanted(d['most'])}."
    ),
    "low_rate": lambda d: (
        f"is low-quality audio ({_khz(d['rate'])}); record it again at "
        f"{_khz(d['least'])} or more, for example as a voice note."
    ),
    "high_rate": lambda d: (
        f"has an unusual sample rate ({_khz(d['rate'])}); export it again "
        f"at {_khz(d['most'])} or less, or send it as a voice note."
    ),
    "too_long": lambda d: (
        f"is over the {format_duration(d['most_s'])} limit for one sample; "
        "split it into shorter recordings."
    ),
    "over_total": lambda d: (
        f"would take the total past the {format_duration(d['most_s'])} "
        "limit for one voice; leave it out."
    ),
    "damaged": "is damaged or cut off; export it again and resend it.",
    "too_short": lambda d: (
        f"is only {format_duration(d['seconds'])} long; "
        f"send recordings of at least {format_duration(d['least_s'])}."
    ),
    "mostly_silence": "is mostly silence; record it again closer to the microphone.",
    "too_quiet": "is too quiet; record it again closer to the microphone "
    "or with the input volume turned up.",
    "clipped": "is distorted because it was recorded too loud; "
    "record it again a little further from the microphone.",
    "little_voice": lambda d: (
        f"has less than {format_duration(d['least_s'])} of clear voice; "
        "send a longer recording of you speaking or singing."
    ),
    "too_many": "is over the limit of {most} samples; send fewer, longer recordings.",
    "unchecked": "could not be checked; send it again as an mp3, wav, ogg or m4a file.",
}
"""Why a voice sample was refused (`SampleProblem.reason`), after "Sample N "."""


def sample_problem(check: SampleCheck) -> str | None:
    """The sentence for a refused sample ("Sample 3 is mostly silence; ..."), or None."""
    problem = check.problem
    if problem is None:
        return None
    wording = SAMPLE_PROBLEMS.get(problem.reason, SAMPLE_PROBLEMS["unchecked"])
    text = wording.format(**problem.data) if isinstance(wording, str) else wording(problem.data)
    return f"Sample {check.number} {text}"


def intake_summary(report: IntakeReport) -> str:
    """One or two short sentences: how much clean voice the samples hold, and is it enough."""
    limits = report.limits
    accepted, rejected, total = report.accepted, len(report.rejected), report.voiced_s
    best = _range_text(*limits.recommended_s)
    minimum = format_duration(limits.min_total_s)
    if not accepted and not rejected:
        return (
            f"No samples yet; send at least {minimum} of clear speech or singing ({best} is best)."
        )
    if total <= 0:
        return (
            f"No clean voice in these samples; send at least {minimum} of clear speech "
            f"or singing ({best} is best)."
        )
    if total < limits.min_total_s:
        short = format_duration(total)
        return f"Only {short} of clean voice; send at least {minimum} ({best} is best)."
    count = len(accepted)
    first = f"{format_duration(total)} of clean voice from {count} sample{'s' if count > 1 else ''}"
    if rejected:
        first += f" ({rejected} left out)"
    low, high = limits.recommended_s
    if total < low:
        return f"{first}. {best} gives the best clone."
    if total <= high:
        return f"{first}, in the {best} range that gives the best clone."
    return f"{first}. {best} is usually enough for the best clone; more makes training take longer."


def user_message(error: BaseException) -> str:
    """The one sentence a user reads for `error`."""
    if isinstance(error, UserError):
        return error.message
    if not isinstance(error, EngineError):
        return GENERIC
    for cls in type(error).__mro__:
        wording = SENTENCES.get((cls, error.reason))
        if wording is not None:
            try:
                if isinstance(wording, str):
                    return wording.format(**error.data)
                return wording(error.data)
            except (KeyError, IndexError, TypeError, ValueError):
                break  # data missing a fact: the class's sentence is still true
    for cls in type(error).__mro__:
        if cls in FALLBACK:
            return FALLBACK[cls]
    return GENERIC


def error_record(error: BaseException) -> dict[str, Any]:
    """`error` as plain data, to cross a process boundary (`raise_record` on the other side)."""
    if isinstance(error, EngineError):
        return error.to_record()
    if isinstance(error, ConsentNeeded):
        return {"type": "ConsentNeeded"}
    return {"type": "UserError", "message": user_message(error)}


def from_error_record(record: dict[str, Any]) -> Exception:
    """The error `error_record` described."""
    kind = record.get("type")
    if kind == "ConsentNeeded":
        return ConsentNeeded()
    if kind == "UserError" or "message" in record:
        return UserError(str(record.get("message") or GENERIC))
    return from_record(record)


def worded(fn: Callable[..., T]) -> Callable[..., T]:
    """`fn`, raising `UserError` (this map's sentence) where it raised an engine error."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except EngineError as exc:
            raise UserError(user_message(exc)) from exc

    return wrapper
