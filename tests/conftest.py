"""Shared fixtures: one real Prefect server per session, tiny real models, test songs.

The Prefect server starts before any test imports Prefect (in `pytest_configure`), unless
PREFECT_API_URL already points at one. Model fixtures build tiny random-weight models in the
exact file formats the real loaders read, once per session.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
_server: subprocess.Popen | None = None
_server_home: str | None = None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_prefect_server() -> None:
    global _server, _server_home
    _server_home = tempfile.mkdtemp(prefix="encore-prefect-")
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": _server_home, "PREFECT_LOGGING_LEVEL": "WARNING"}
    prefect = Path(sys.executable).with_name("prefect")
    log = open(Path(_server_home) / "server.log", "w")  # noqa: SIM115 - lives with the server
    _server = subprocess.Popen(
        [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    from flows.deployments import wait_healthy  # (imports no Prefect)

    try:
        wait_healthy(url, 90, process=_server)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc} (log: {_server_home}/server.log)") from None
    os.environ["PREFECT_API_URL"] = url
    os.environ["PREFECT_HOME"] = _server_home


def pytest_configure(config):
    if not os.environ.get("PREFECT_API_URL") and not hasattr(config, "workerinput"):
        _start_prefect_server()


def pytest_unconfigure(config):
    if "prefect" in sys.modules:  # send the last run logs before the server goes away
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=10)
    if _server is not None:
        _server.terminate()
        try:
            _server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            _server.kill()
    if _server_home:
        shutil.rmtree(_server_home, ignore_errors=True)
    if _schema is not None:
        shutil.rmtree(_schema.parent, ignore_errors=True)


SR = 44100


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """A model folder with a tiny htdemucs and tiny rvc-next assets."""
    return build_model_folder(tmp_path_factory.mktemp("models"))


def build_model_folder(root: Path) -> Path:
    """What `encore models download` fills, with tiny random-weight models in the real formats."""
    from gpu_worker.convert import export_voice
    from tests.tiny_demucs import SOURCES_6S, build_demucs_repo
    from tests.tiny_rvc import build_hubert, build_pretrained, build_rmvpe, small_config

    build_demucs_repo(root / "demucs", "htdemucs")
    build_demucs_repo(root / "demucs", "htdemucs_6s", sources=SOURCES_6S)
    build_hubert(root / "rvc")
    build_rmvpe(root / "rvc")
    generator, _ = build_pretrained(root / "rvc")
    # The demo voice, exported from the base generator as `encore models download` does.
    export_voice(generator, root / "voices" / "demo" / "demo.pth", config=small_config())
    return root


@pytest.fixture(scope="session")
def voice_files(tmp_path_factory) -> dict:
    """Two tiny v2 voices (.pth + added_*.index), built with different seeds."""
    from tests.tiny_rvc import build_index, build_voice

    root = tmp_path_factory.mktemp("voices")
    out = {}
    for seed, name in ((11, "alice"), (12, "bob")):
        folder = root / name
        folder.mkdir()
        out[name] = (build_voice(folder / f"{name}.pth", seed=seed, name=name),
                     build_index(folder, name=name, seed=seed))  # fmt: skip
    return out


_schema: Path | None = None  # a database migrated once per session (fresh_database)


def fresh_database(path: Path) -> str:
    """A new SQLite database at `path` with the newest schema; its URL.

    It is a copy of one that `flows.db.migrate` brought from empty to the newest schema once
    per session: running the migrations from empty takes about a second, and most tests start
    from a fresh database. `migrate` still runs on it at first use (a no-op at the newest
    schema); tests/test_migrations.py runs the chain from empty itself.
    """
    global _schema
    if _schema is None:
        from flows.db import migrate

        made = Path(tempfile.mkdtemp(prefix="encore-schema-")) / "encore.db"
        migrate(f"sqlite:///{made}")
        _schema = made
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_schema, path)
    return f"sqlite:///{path}"


@pytest.fixture
def settings(tmp_path, models_dir, monkeypatch):
    """Embedded settings in a fresh data folder, using the session's tiny models."""
    from flows.settings import get_settings

    fresh_database(tmp_path / "data" / "encore.db")
    monkeypatch.setenv("ENCORE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ENCORE_MODEL_DIR", str(models_dir))
    monkeypatch.setenv("ENCORE_DEVICE", "cpu")
    monkeypatch.setenv("ENCORE_F0_METHOD", "pm")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()
    from flows.logs import close_log_file

    close_log_file()  # a CLI command run in this process (CliRunner) logged to the data folder


@pytest.fixture(scope="session")
def song_wav(tmp_path_factory) -> Path:
    """Four seconds of a synthetic song: drums, bass, chords and a sung melody."""
    from flows.demo import synth_song
    from gpu_worker.audio import write_wav

    path = tmp_path_factory.mktemp("songs") / "test-song.wav"
    return write_wav(path, synth_song(4.0, seed=3), SR)


# ------------------------------------------------------------------------------------------
# The fake Telegram Bot API and a bot polling it (tests/test_discord.py has its own `fake`)


@pytest.fixture
def fake():
    """A fake Telegram Bot API: a real HTTP server (tests/fake_telegram.py)."""
    from tests.fake_telegram import FakeTelegram

    server = FakeTelegram().start()
    yield server
    server.stop()


def telegram_env(monkeypatch, fake, **extra) -> None:
    """Point Encore's settings at the fake Telegram (and set `ENCORE_<KEY>` for `extra`)."""
    monkeypatch.setenv("ENCORE_TELEGRAM_TOKEN", fake.token)
    monkeypatch.setenv("ENCORE_TELEGRAM_API_URL", fake.api_url)
    monkeypatch.setenv("ENCORE_TELEGRAM_FILE_URL", fake.file_url)
    monkeypatch.setenv("ENCORE_STATUS_EDIT_INTERVAL_S", "0.2")
    for key, value in extra.items():
        monkeypatch.setenv(f"ENCORE_{key.upper()}", str(value))


@pytest.fixture
def tg_settings(settings, fake, monkeypatch):
    """The `settings` of a process whose chats are on the fake Telegram."""
    from flows.settings import get_settings

    telegram_env(monkeypatch, fake)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def drain_jobs(timeout: float = 300) -> None:
    """Wait for every job thread of this process: flows read the settings of the environment,
    which the next test changes."""
    import time

    from flows import submit

    deadline = time.monotonic() + timeout
    for job_id, thread in list(submit._threads.items()):
        thread.join(max(0.1, deadline - time.monotonic()))
        submit._threads.pop(job_id, None)


@pytest.fixture
def bot(tg_settings):
    """A real python-telegram-bot Application polling the fake, in this process."""
    from tests.fake_telegram import BotProcess

    process = BotProcess(tg_settings).start()
    yield process
    process.stop()
    drain_jobs()


def descendants(pid: int) -> list[int]:
    """Every process under `pid` (from /proc), children first."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


LINES = [
    "I sing in the morning and I sing in the evening light.",
    "The river runs along the valley where the tall trees grow.",
    "Every song I know began as a voice somewhere far away.",
]


@pytest.fixture(scope="session")
def spoken(tmp_path_factory) -> list[Path]:
    """The three LINES, spoken by espeak-ng at three pitches (WAV files)."""
    root = tmp_path_factory.mktemp("spoken")
    out = []
    for i, line in enumerate(LINES):
        raw = root / f"raw{i}.wav"
        subprocess.run(
            ["espeak-ng", "-v", "en", "-s", "140", "-p", str(40 + 15 * i), "-w", raw, line],
            check=True,
            capture_output=True,
        )
        out.append(raw)
    return out


@pytest.fixture(scope="session")
def speech(tmp_path_factory, spoken) -> list[Path]:
    """Three spoken samples: a wav, an Opus voice note and an m4a, as users send them."""
    from gpu_worker.audio import encode

    root = tmp_path_factory.mktemp("speech")
    out = []
    for i, (raw, fmt) in enumerate(zip(spoken, ("wav", "ogg", "m4a"), strict=True)):
        out.append(raw if fmt == "wav" else encode(raw, root / f"sample{i}.{fmt}", fmt))
    return out


def cli_env(settings) -> dict:
    """The environment a CLI subprocess needs to see the same data and server."""
    env = {**os.environ}
    env.update(
        ENCORE_DATA_DIR=str(settings.data_dir),
        ENCORE_MODEL_DIR=str(settings.models),
        ENCORE_DEVICE="cpu",
        ENCORE_F0_METHOD="pm",
    )
    return env


def run_cli(
    settings, *args: str, cwd: Path | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    encore = Path(sys.executable).with_name("encore")
    return subprocess.run(
        [str(encore), *args],
        env=env or cli_env(settings),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


# ------------------------------------------------------------------------------------------
# Real services: PostgreSQL and S3 (moto's HTTP server)

S3_REGION = "us-east-1"

ADMIN_URL = os.environ.get(
    "ENCORE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def forget_engine(url: str) -> None:
    from flows import db

    engine = db._engines.pop(url, None)
    if engine is not None:
        engine.dispose()


@pytest.fixture(scope="session")
def pg_databases():
    """Makes fresh databases on the server (`make()` returns a URL); drops them all at the end."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.pool import NullPool

    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {ADMIN_URL}: {exc.orig}. Start it with "
            "./scripts/postgres (as .ci/run does), or point ENCORE_TEST_POSTGRES_URL at a server.",
            pytrace=False,
        )
    prefix = f"encore_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    made: list[str] = []

    def url_of(name: str) -> str:
        return admin.url.set(database=name).render_as_string(hide_password=False)

    def make() -> str:
        name = f"{prefix}_{len(made)}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        made.append(name)
        return url_of(name)

    def drop(url: str) -> None:
        forget_engine(url)
        name = url.rsplit("/", 1)[-1]
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    make.drop = drop
    yield make
    for name in made:
        drop(url_of(name))
    admin.dispose()


@pytest.fixture(scope="session")
def moto_endpoint():
    """moto's S3 server, once per session; boto3 reaches it over real HTTP."""
    from moto.server import ThreadedMotoServer

    env = pytest.MonkeyPatch()
    env.setenv("AWS_ACCESS_KEY_ID", "testing")
    env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    env.setenv("AWS_DEFAULT_REGION", S3_REGION)
    env.setenv("AWS_EC2_METADATA_DISABLED", "true")
    env.setenv("AWS_CONFIG_FILE", os.devnull)  # nothing from this machine's AWS setup
    env.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    env.delenv("AWS_PROFILE", raising=False)
    env.delenv("AWS_SESSION_TOKEN", raising=False)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        env.undo()


def s3_client(endpoint: str):
    """A plain boto3 client, to look at a bucket behind the storage's back."""
    import boto3

    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=S3_REGION)


@pytest.fixture
def debug_logs():
    """Every log record of every logger at DEBUG, formatted as a log line (tracebacks too),
    after `protect_logs` as a process's entry point calls it with `--debug`."""
    from flows.logs import protect_logs

    protect_logs(debug=True)
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Keep(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    names = ["", "httpx", "httpcore", "telegram", "discord", "encore", "prefect", "aiohttp"]
    loggers = {logging.getLogger(n) for n in names}
    loggers |= {  # loggers that keep their records to themselves get the handler too
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger) and not logger.propagate
    }
    saved = {logger: (logger.level, logger.disabled) for logger in loggers}
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
        if logger is logging.root or not logger.propagate:
            logger.addHandler(handler)
    yield lines
    for logger, (level, disabled) in saved.items():
        logger.setLevel(level)
        logger.disabled = disabled
        logger.removeHandler(handler)
