"""Sample intake: every bad sample gets its own reason, good ones count and come out clean."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from flows.errors import intake_summary, sample_problem
from gpu_worker.audio import encode, read_wav, write_wav
from gpu_worker.samples import (
    IntakeLimits,
    IntakeReport,
    SampleCheck,
    check_samples,
    format_duration,
    prepare_samples,
)

SR = 22050


def voice(seconds: float, sr: int = SR, f0: float = 150.0, seed: int = 0, rms_db: float = -18.0):
    """A voice-like signal: harmonics with vibrato, syllables, and a short pause every 3 s."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    freq = f0 * (1 + 0.03 * np.sin(2 * np.pi * 5.5 * t)) * (1 + 0.1 * np.sin(2 * np.pi * 0.3 * t))
    phase = 2 * np.pi * np.cumsum(freq) / sr
    x = sum(np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 16))
    syllables = 0.25 + 0.75 * np.abs(np.sin(np.pi * 3.5 * t + rng.uniform(0, 2 * np.pi)))
    phrases = (t % 3.0) < 2.5
    x = x * syllables * phrases
    x *= 10 ** (rms_db / 20) / np.sqrt(np.mean(x[phrases] ** 2))
    return (x + rng.normal(0, 1e-4, len(x))).astype(np.float32)


def room(seconds: float, sr: int = SR, db: float = -70.0, seed: int = 9) -> np.ndarray:
    """Background noise of a quiet room."""
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 10 ** (db / 20), int(seconds * sr))).astype(np.float32)


def wav(path: Path, mono: np.ndarray, sr: int = SR, channels: int = 1) -> Path:
    return write_wav(path, np.stack([mono] * channels), sr)


def one_check(path: Path, limits: IntakeLimits = IntakeLimits()) -> SampleCheck:
    return check_samples([path], limits).samples[0]


def assert_sentence(check: SampleCheck) -> None:
    """A reason a user can read: one short sentence that names the sample by its number."""
    problem = sample_problem(check)
    assert problem is not None
    assert problem.startswith(f"Sample {check.number} ")
    assert problem.endswith(".") and problem.count(". ") == 0
    assert "\n" not in problem and "Traceback" not in problem and "Error" not in problem
    assert len(problem) < 160


def test_format_duration():
    assert format_duration(42) == "42 s"
    assert format_duration(42.9) == "42 s"
    assert format_duration(250) == "4 min 10 s"
    assert format_duration(60) == "1 min"
    assert format_duration(600) == "10 min"
    assert format_duration(3900) == "1 h 5 min"
    assert format_duration(0.45) == "0.4 s"
    assert format_duration(0) == format_duration(-3) == format_duration(float("nan")) == "0 s"


def test_good_set_is_ok_and_points_to_the_recommended_length(tmp_path):
    paths = [
        wav(tmp_path / "one.wav", voice(30, seed=1)),
        wav(tmp_path / "two.wav", voice(30, f0=210, seed=2), channels=2),
        wav(tmp_path / "three.wav", voice(30, f0=120, seed=3)),
    ]
    report = check_samples(paths)
    assert isinstance(report, IntakeReport)
    assert report.ok, report
    assert report.rejected == [] and len(report.accepted) == 3
    assert 60 < report.voiced_s <= 90
    assert report.voiced_s == pytest.approx(sum(s.voiced_s for s in report.samples))
    assert "5–10 min" in intake_summary(report) and "from 3 samples" in intake_summary(report)
    assert intake_summary(report).startswith(format_duration(report.voiced_s) + " of clean voice")
    for number, check in enumerate(report.samples, start=1):
        assert check.number == number and check.name == paths[number - 1].name
        assert check.duration_s == pytest.approx(30, abs=0.01)
        assert 0.7 * 30 < check.voiced_s < 0.9 * 30  # the pauses are 1/6 of the time
        assert check.sample_rate == SR
        assert check.rms_dbfs == pytest.approx(-18, abs=2)
        assert check.peak_dbfs < 0 and check.clipped_fraction == 0
        assert 0.1 < check.silent_fraction < 0.3
    assert [s.channels for s in report.samples] == [1, 2, 1]


def test_summary_wording_within_and_beyond_the_recommended_length(tmp_path):
    path = wav(tmp_path / "a.wav", voice(12))
    inside = check_samples([path], IntakeLimits(min_total_s=5, recommended_s=(5.0, 20.0)))
    assert inside.ok and "in the 5 s to 20 s range" in intake_summary(inside)
    beyond = check_samples([path], IntakeLimits(min_total_s=5, recommended_s=(2.0, 5.0)))
    assert beyond.ok and "more makes training take longer" in intake_summary(beyond)


def test_silence_is_rejected_with_its_own_number(tmp_path):
    paths = [
        wav(tmp_path / "a.wav", voice(8, seed=1)),
        wav(tmp_path / "b.wav", room(8)),
        wav(tmp_path / "c.wav", np.concatenate([voice(1, seed=2), room(9)])),
        wav(tmp_path / "d.wav", voice(8, seed=3)),
    ]
    report = check_samples(paths)
    a, b, c, d = report.samples
    assert a.problem is None and d.problem is None
    for check in (b, c):
        assert_sentence(check)
        assert "mostly silence" in sample_problem(check)
        assert check.silent_fraction > 0.8
    assert sample_problem(b).startswith("Sample 2 is mostly silence")
    assert sample_problem(c).startswith("Sample 3 is mostly silence")
    assert report.accepted == [a, d] and report.rejected == [b, c]
    assert report.voiced_s == pytest.approx(a.voiced_s + d.voiced_s)


def test_clipping_is_rejected(tmp_path):
    loud = np.clip(voice(8) * 12, -1, 1)
    check = one_check(wav(tmp_path / "loud.wav", loud))
    assert_sentence(check)
    assert "too loud" in sample_problem(check) and check.clipped_fraction > 0.01


def test_flat_tops_below_full_scale_count_as_clipping(tmp_path):
    # Clipped on the way in, then turned down: flat tops at half scale.
    flat = np.clip(voice(8, sr=16000) * 12, -1, 1) * 0.5
    check = one_check(wav(tmp_path / "flat.wav", flat, sr=16000))
    assert_sentence(check)
    assert "too loud" in sample_problem(check) and check.peak_dbfs < -5


def test_audio_normalised_to_full_scale_is_not_clipping(tmp_path):
    x = voice(8)
    check = one_check(wav(tmp_path / "full.wav", x / np.abs(x).max()))
    assert check.problem is None and check.peak_dbfs > -0.1


def test_too_quiet_is_rejected(tmp_path):
    check = one_check(wav(tmp_path / "quiet.wav", voice(8, rms_db=-52) + room(8, db=-90)))
    assert_sentence(check)
    assert "too quiet" in sample_problem(check) and check.rms_dbfs < -45


def test_too_short_sample_is_rejected(tmp_path):
    check = one_check(wav(tmp_path / "blip.wav", voice(0.5)))
    assert_sentence(check)
    assert "only 0.5 s long" in sample_problem(check) and "at least 1 s" in sample_problem(check)


def test_under_a_minute_in_total_is_not_ok(tmp_path):
    paths = [wav(tmp_path / f"{i}.wav", voice(15, seed=i)) for i in range(2)]
    report = check_samples(paths)
    assert report.rejected == []
    assert not report.ok
    assert 15 < report.voiced_s < 30
    assert intake_summary(report).startswith(
        f"Only {format_duration(report.voiced_s)} of clean voice"
    )
    assert "at least 1 min" in intake_summary(report) and "5–10 min" in intake_summary(report)


def test_nothing_usable_and_nothing_sent(tmp_path):
    report = check_samples([wav(tmp_path / "quiet.wav", room(5))])
    assert not report.ok and "No clean voice" in intake_summary(report)
    empty = check_samples([])
    assert not empty.ok and empty.samples == [] and "at least 1 min" in intake_summary(empty)


def test_voice_notes_and_compressed_formats_decode_and_count(tmp_path):
    source = wav(tmp_path / "source.wav", voice(12, sr=44100, seed=4), sr=44100)
    note = tmp_path / "voice-note.ogg"  # how a phone sends a voice note: mono opus, low bitrate
    subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(source), "-c:a", "libopus", "-b:a", "32k", str(note)],
        check=True,
    )
    files = [
        source,
        note,
        encode(source, tmp_path / "memo.m4a"),
        encode(source, tmp_path / "s.mp3"),
    ]
    report = check_samples(files)
    assert report.rejected == [], report
    reference = report.samples[0].voiced_s
    for check in report.samples[1:]:
        assert check.voiced_s == pytest.approx(reference, rel=0.05), check
        assert check.duration_s == pytest.approx(12, abs=0.1)
    assert report.samples[1].sample_rate == 48000  # opus always decodes at 48 kHz
    assert report.samples[2].sample_rate == 44100


def test_spoken_words_count_as_voice(tmp_path):
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.skip("espeak-ng is not installed")
    path = tmp_path / "speech.wav"
    text = "Hello, this is my voice. I am reading a few sentences so the clone can learn it."
    subprocess.run([espeak, "-w", str(path), text], check=True, capture_output=True)
    check = one_check(path)
    assert check.problem is None
    assert 0.5 * check.duration_s < check.voiced_s < check.duration_s


def test_a_text_file_named_wav_is_rejected(tmp_path):
    path = tmp_path / "song.wav"
    path.write_text("this is not audio\n" * 100)
    check = one_check(path)
    assert_sentence(check)
    assert "could not be read as audio" in sample_problem(check)
    assert check.voiced_s == 0 and check.sample_rate == 0


def test_damaged_and_missing_files_never_raise(tmp_path):
    good = wav(tmp_path / "good.wav", voice(4))
    mp3 = encode(good, tmp_path / "cut.mp3")
    mp3.write_bytes(mp3.read_bytes()[:300])
    empty = tmp_path / "empty.m4a"
    empty.write_bytes(b"")
    noise = tmp_path / "noise.ogg"
    noise.write_bytes(np.random.default_rng(0).bytes(20_000))
    report = check_samples([good, mp3, empty, noise, tmp_path / "gone.wav"])
    assert report.samples[0].problem is None
    for check in report.samples[1:]:
        assert_sentence(check)
    assert "empty" in sample_problem(report.samples[2])
    assert "did not arrive" in sample_problem(report.samples[4])


def test_low_sample_rate_is_rejected(tmp_path):
    check = one_check(wav(tmp_path / "phone.wav", voice(5, sr=8000), sr=8000))
    assert_sentence(check)
    assert "8 kHz" in sample_problem(check) and "16 kHz or more" in sample_problem(check)
    assert check.sample_rate == 8000


def test_too_many_channels_too_big_and_too_long(tmp_path):
    surround = wav(tmp_path / "surround.wav", voice(3), channels=3)
    check = one_check(surround)
    assert_sentence(check)
    assert "3 audio channels" in sample_problem(check) and "mono or stereo" in sample_problem(check)

    big = one_check(wav(tmp_path / "big.wav", voice(3)), IntakeLimits(max_bytes=2**20 // 10))
    assert_sentence(big)
    assert "MB limit" in sample_problem(big)

    long = one_check(wav(tmp_path / "long.wav", voice(5)), IntakeLimits(max_sample_s=4))
    assert_sentence(long)
    assert "4 s limit for one sample" in sample_problem(long)


def test_duplicates_are_rejected(tmp_path):
    first = wav(tmp_path / "take.wav", voice(4))
    again = tmp_path / "take-copy.wav"
    again.write_bytes(first.read_bytes())
    report = check_samples([first, again])
    assert report.samples[0].problem is None
    assert_sentence(report.samples[1])
    assert "same file as sample 1" in sample_problem(report.samples[1])


def test_names_count_and_total_limits(tmp_path):
    paths = [wav(tmp_path / f"{i}.wav", voice(6, seed=i)) for i in range(4)]
    names = ["Voice message 1.ogg", "b", "c", "d"]
    limits = IntakeLimits(min_total_s=5, max_total_s=12, max_samples=3)
    report = check_samples(paths, limits, names=names)
    assert [s.name for s in report.samples] == names
    first, second, third, fourth = report.samples
    assert first.problem is None and second.problem is None  # about 5 s of voice each
    assert_sentence(third)
    assert "past the 12 s limit" in sample_problem(third)
    assert_sentence(fourth)
    assert "over the limit of 3 samples" in sample_problem(fourth)
    assert report.ok and "(2 left out)" in intake_summary(report)
    assert report.voiced_s <= 12
    with pytest.raises(ValueError):
        check_samples(paths, names=names[:2])


def test_prepare_writes_clean_mono_40k_without_clipping_or_long_silences(tmp_path):
    sr = 44100
    lead, gap = room(2, sr), room(3, sr, seed=2)
    talk = np.concatenate(
        [lead, voice(6, sr, seed=1, rms_db=-30), gap, voice(6, sr, seed=2, rms_db=-36), lead]
    )
    paths = [
        wav(tmp_path / "silent.wav", room(4, sr), sr=sr),
        wav(tmp_path / "talk.wav", talk, sr=sr, channels=2),
    ]
    report = check_samples(paths, IntakeLimits(min_total_s=5))
    assert [s.problem is None for s in report.samples] == [False, True]

    out = prepare_samples(report, paths, tmp_path / "prepared")
    assert [p.name for p in out] == ["sample-002.wav"]
    assert sorted(p.name for p in (tmp_path / "prepared").iterdir()) == ["sample-002.wav"]
    assert sf.info(out[0]).subtype == "FLOAT"
    audio, rate = read_wav(out[0])
    assert rate == 40000 and audio.shape[0] == 1
    x = audio[0]
    assert np.abs(x).max() <= 10 ** (-1 / 20) + 1e-4  # at most -1 dBFS: no clipping
    seconds = len(x) / rate
    assert 10 < seconds < len(talk) / sr - 6  # 7 s of silence shrank to well under 1 s
    frame = int(0.03 * rate)
    frames = x[: len(x) // frame * frame].reshape(-1, frame)
    quiet = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12) < -50
    longest, run = 0, 0
    for q in quiet:
        run = run + 1 if q else 0
        longest = max(longest, run)
    assert longest * 0.03 <= 0.5
    lead_s, tail_s = np.argmin(quiet) * 0.03, np.argmin(quiet[::-1]) * 0.03
    assert lead_s <= 0.15 and tail_s <= 0.15  # 2 s of silence at each end trimmed to a breath
    voiced_rms = 10 * np.log10(np.mean(frames[~quiet] ** 2))
    assert -24 < voiced_rms < -17  # a quiet recording brought up to a speech level


def test_prepare_needs_the_files_the_report_was_made_from(tmp_path):
    path = wav(tmp_path / "a.wav", voice(3))
    report = check_samples([path], IntakeLimits(min_total_s=1))
    with pytest.raises(ValueError):
        prepare_samples(report, [], tmp_path / "out")


def test_the_streamed_analysis_does_not_depend_on_where_blocks_end():
    """A sample measured as it decodes, cut anywhere (flat tops straddling the cuts), reads
    the same as measured whole."""
    from gpu_worker.sample_analysis import Analysis, analyse

    rng = np.random.default_rng(7)
    n = 3 * 2**20 + 123
    x = (rng.standard_normal((2, n)) * 0.1).astype(np.float32)
    for at in [*rng.integers(0, n - 8, 300), 2**20 - 2, 2**20 - 3, 131070, 999, 1001]:
        x[:, at : at + 4] = 0.5  # a flat top: clipped, then turned down
    x[1, 5000:5003] = 1.0
    whole = analyse(x, 16000)
    assert whole.clipped_samples >= 4 * 300 and whole.clipped.any()
    tiny = list(range(0, 3000, 1)) + list(range(3000, 6000, 3))  # 1- and 3-sample blocks
    for cuts in (tiny + [6000], list(range(0, n, 131072)), list(range(0, n, 100_003))):
        streamed = Analysis(16000, 2)
        for start, end in zip(cuts, [*cuts[1:], n], strict=True):
            streamed.add(x[:, start:end].T)
        got = streamed.result()
        assert (got.clipped_samples, got.peak, got.dc) == (
            whole.clipped_samples,
            whole.peak,
            whole.dc,
        )
        for field in ("power", "silent", "clipped"):
            assert np.array_equal(getattr(got, field), getattr(whole, field)), field
