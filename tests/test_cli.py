"""The `encore` command as a user runs it: a real subprocess, real flows, tiny real models."""

from __future__ import annotations

import zipfile

from gpu_worker.audio import decode, measure_loudness, probe
from tests.conftest import SR, cli_env, run_cli


def test_cover_from_a_file_then_from_the_catalog(settings, song_wav, voice_files, tmp_path):
    pth, index = voice_files["alice"]
    imported = run_cli(settings, "voices", "import", str(pth), str(index), "--name", "Alice")
    assert imported.returncode == 0, imported.stderr
    assert "Imported voice Alice" in imported.stdout

    out = tmp_path / "cover.mp3"
    made = run_cli(settings, "cover", str(song_wav), "--voice", "alice", "--pitch", "-3",
                   "--f0-method", "pm", "-o", str(out), env=_wide(cli_env(settings)))  # fmt: skip
    assert made.returncode == 0, made.stderr
    _assert_quiet(made, f"Cover written to {out}")
    # mp3 declares its encoder delay and padding (LAME tag): decoders trim them, so the
    # decoded length is the one a listener gets.
    assert abs(decode(out, SR, 2).shape[1] - decode(song_wav, SR, 2).shape[1]) <= 0.010 * SR
    assert abs(measure_loudness(out).integrated_lufs - -14.0) <= 0.5

    # The file is now in the catalog under its name; a fuzzy query finds it.
    again = run_cli(settings, "cover", "test song", "-v", "Alice", "--format", "ogg",
                    cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stderr
    written = list(tmp_path.glob("*alice*cover*.ogg")) + list(tmp_path.glob("*Alice*cover*.ogg"))
    assert len(written) == 1


def test_stems_and_karaoke_commands(settings, song_wav, tmp_path):
    zipped = tmp_path / "stems.zip"
    done = run_cli(settings, "stems", str(song_wav), "-o", str(zipped))
    assert done.returncode == 0, done.stderr
    with zipfile.ZipFile(zipped) as zf:
        names = set(zf.namelist())
        assert {"vocals.flac", "instrumental.flac", "drums.flac", "bass.flac"} <= names
        zf.extract("vocals.flac", tmp_path)
    assert abs(probe(tmp_path / "vocals.flac").duration - probe(song_wav).duration) <= 0.010
    kara = run_cli(settings, "karaoke", str(song_wav), "-o", str(tmp_path / "k.wav"))
    assert kara.returncode == 0, kara.stderr
    assert decode(tmp_path / "k.wav", SR, 2).shape[1] == decode(song_wav, SR, 2).shape[1]


def _wide(env: dict) -> dict:
    return {**env, "COLUMNS": "400"}  # rich wraps at 80 columns when it is not in a terminal


def _assert_quiet(proc, line: str) -> None:
    """The terminal shows the result's line and nothing that looks like a log, a URL or an
    error (Prefect's and the libraries' lines went to the log file)."""
    shown = proc.stdout + proc.stderr
    for noise in ("http", "INFO", "WARNING", "Traceback", "Error", "rror:"):
        assert noise not in shown, shown
    assert proc.stdout.splitlines() == [line], shown


def test_demo_makes_a_cover_quietly(settings, tmp_path):
    """A newcomer's first command, without a Prefect server: Encore starts its own."""
    out = tmp_path / "demo.mp3"
    env = _wide(cli_env(settings))
    del env["PREFECT_API_URL"]
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    done = run_cli(settings, "demo", "-o", str(out), env=env)
    assert done.returncode == 0, done.stderr
    _assert_quiet(done, f"Demo cover written to {out}")
    assert probe(out).duration > 10
    log = settings.log_path.read_text()  # what the terminal did not show is in the log file
    assert "Starting temporary server" in log and "Beginning flow run" in log
    listed = run_cli(settings, "voices", "list")
    assert "demo" in listed.stdout


def _assert_one_sentence(proc, *words):
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    message = " ".join(proc.stderr.split())
    for word in words:
        assert word in message, message


def test_missing_models_say_which_command_to_run(settings, song_wav, tmp_path, monkeypatch):
    empty = tmp_path / "no-models"
    empty.mkdir()
    object.__setattr__(settings, "model_dir", empty)
    done = run_cli(settings, "cover", str(song_wav), "--voice", "x")
    _assert_one_sentence(done, "encore models download")
    demo = run_cli(settings, "demo")
    _assert_one_sentence(demo, "encore models download")
    status = run_cli(settings, "models", "status")
    assert status.returncode == 0 and "missing" in status.stdout


def test_bad_input_is_refused_cleanly(settings, voice_files, tmp_path):
    pth, _ = voice_files["bob"]
    assert run_cli(settings, "voices", "import", str(pth)).returncode == 0
    text = tmp_path / "notes.mp3"
    text.write_text("not a song at all\n" * 100)
    done = run_cli(settings, "cover", str(text), "--voice", "bob")
    _assert_one_sentence(done, "could not be read as audio")
    unknown = run_cli(settings, "cover", "no such song anywhere", "--voice", "bob")
    _assert_one_sentence(unknown, "No song in the catalog matches")
    novoice = run_cli(settings, "cover", str(text), "--voice", "nobody")
    _assert_one_sentence(novoice, "No voice called")
    assert not list(tmp_path.glob("*cover*"))
