"""`/forget` with real faults: S3 failing mid-way, and a job that finishes after the forget.

Storage is moto's S3 server behind a proxy the test steers (`tests/faulty_s3.py`): deletions
start failing part-way through, or a download is held at a point the test releases. The bot is
the real Telegram bot against the fake Bot API. At the end, the bucket and the database are
listed: nothing of the user is kept.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from flows import api
from flows.catalog import add_song
from flows.chat.text import wording
from flows.db import (
    Delivery,
    Job,
    PendingDeletion,
    ReplyTarget,
    Song,
    StemSet,
    StepRun,
    UploadFile,
    UploadSession,
    User,
    Voice,
    session,
)
from flows.jobs import create_job, update_job
from flows.storage import open_storage
from flows.submit import stage_upload
from flows.users import ensure_user, open_upload_session, stage_file
from flows.voices import import_voice
from tests.conftest import S3_REGION, s3_client
from tests.fake_telegram import BotProcess
from tests.faulty_s3 import FaultyS3

ADA = 1
ALL_GONE = wording("telegram").all_gone()
OWNER = f"telegram:{ADA}"


@pytest.fixture
def proxy(moto_endpoint):
    server = FaultyS3(moto_endpoint)
    yield server
    server.close()


@pytest.fixture
def bucket(moto_endpoint) -> str:
    name = f"encore-forget-{uuid.uuid4().hex[:12]}"
    s3_client(moto_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s(settings, fake, proxy, bucket, monkeypatch):
    """Embedded settings with storage in S3 (through the proxy) and the fake Telegram."""
    from flows.settings import get_settings

    env = {
        "TELEGRAM_TOKEN": fake.token,
        "TELEGRAM_API_URL": fake.api_url,
        "TELEGRAM_FILE_URL": fake.file_url,
        "STATUS_EDIT_INTERVAL_S": "0.2",
        "STORAGE_URL": f"s3://{bucket}/encore",
        "S3_ENDPOINT_URL": proxy.url,
        "S3_REGION": S3_REGION,
        "S3_MAX_ATTEMPTS": "2",
    }
    for key, value in env.items():
        monkeypatch.setenv(f"ENCORE_{key}", value)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def bot(s):
    process = BotProcess(s).start()
    yield process
    process.stop()


def _bucket_keys(moto_endpoint: str, bucket: str) -> set[str]:
    """The bucket as moto holds it (read directly, not through the proxy)."""
    pages = s3_client(moto_endpoint).get_paginator("list_objects_v2")
    return {
        item["Key"] for page in pages.paginate(Bucket=bucket) for item in page.get("Contents", [])
    }


def _nothing_of_hers_in_the_database(s) -> None:
    with session(s.database) as db:
        assert db.scalar(select(func.count()).select_from(Voice).where(Voice.owner == OWNER)) == 0
        assert db.scalar(select(func.count()).select_from(Song).where(Song.owner == OWNER)) == 0
        assert db.get(User, OWNER) is None
        for table in (Job, ReplyTarget, Delivery, StepRun, UploadSession, UploadFile):
            assert db.scalar(select(func.count()).select_from(table)) == 0, table.__tablename__
        assert db.scalar(select(func.count()).select_from(StemSet)) == 0


def _forget_through_the_bot(fake) -> str:
    command = fake.send_text("/forget")
    ask = fake.wait_for(lambda: fake.replies_to(command), 30, "the question")[0]
    fake.press(ask, ask["reply_markup"]["inline_keyboard"][0][0]["callback_data"])  # her "fy"
    done = fake.wait_for(
        lambda: fake.bot_message(ADA, ask["message_id"])["text"].startswith("Done:"),
        120,
        "the answer to the confirmation",
    )
    assert done
    return fake.bot_message(ADA, ask["message_id"])["text"]


def test_s3_failing_during_forget_is_told_and_the_sweeper_finishes(
    fake, bot, s, proxy, bucket, moto_endpoint, song_wav, voice_files, tmp_path
):
    catalog = add_song(s, song_wav, title="Test Song", artist="Tester")
    kept = _bucket_keys(moto_endpoint, bucket)  # the catalog's song: not hers, it stays
    assert kept

    # Everything Ada has: her name, a voice, an uploaded song with its stems, a finished
    # cover with a reply target, and samples staged for a training.
    ensure_user(s, OWNER, "Ada Lovelace")
    pth, index = voice_files["alice"]
    voice = import_voice(s, OWNER, "alice", [pth, index])
    hers = tmp_path / "hers.wav"
    hers.write_bytes(song_wav.read_bytes() + b"\0" * 64)  # other content, so her own song
    mine = add_song(s, hers, title="Her Song", owner=OWNER)
    storage = open_storage(s.storage)
    stem = storage.put(song_wav, f"tmp/stems/{mine.content_hash}/htdemucs/vocals.wav")
    with session(s.database) as db:
        db.add(StemSet(content_hash=mine.content_hash, model="htdemucs", stems={"vocals": stem}))
    target = {"platform": "telegram", "chat_id": ADA, "status_message_id": 7}
    params = {"song_id": catalog.id, "voice_id": voice.id}
    job_id = create_job(s, "cover", OWNER, params, reply_to=target)
    cover = storage.put(song_wav, f"covers/{job_id}/Her cover.wav")
    update_job(s, job_id, state="succeeded", step="done", result={"uri": cover})
    upload = open_upload_session(s, OWNER, "train", "me")
    stage_file(s, upload.id, OWNER, "msg-1", song_wav, "sample.wav", "h1", 10)
    assert len(_bucket_keys(moto_endpoint, bucket) - kept) == 6

    proxy.fail_deletes(after=2)  # S3 starts failing part-way through the forget
    answer = _forget_through_the_bot(fake)
    assert "Some of your files could not be deleted yet" in answer, answer
    assert proxy.refused > 0
    assert _bucket_keys(moto_endpoint, bucket) - kept  # the fault was real: files are left
    _nothing_of_hers_in_the_database(s)  # the rows went at once
    with session(s.database) as db:
        pending = list(db.scalars(select(PendingDeletion)))
    assert pending and all(row.error and row.attempts for row in pending)
    assert not any(ALL_GONE in text for text in fake.sent_texts(ADA))

    proxy.heal()  # S3 is back; the bots' periodic sweep runs this
    api.recover(s)
    with session(s.database) as db:
        assert db.scalar(select(func.count()).select_from(PendingDeletion)) == 0
    assert _bucket_keys(moto_endpoint, bucket) == kept
    _nothing_of_hers_in_the_database(s)
    fake.wait_for(lambda: ALL_GONE in fake.sent_texts(ADA), 10, "the all-gone message")
    api.recover(s)  # a second sweep has nothing to do and says nothing again
    assert sum(ALL_GONE in text for text in fake.sent_texts(ADA)) == 1


def test_an_import_finishing_after_forget_registers_and_keeps_nothing(
    fake, bot, s, proxy, bucket, moto_endpoint, voice_files
):
    from flows import submit

    kept = _bucket_keys(moto_endpoint, bucket)
    pth, _index = voice_files["alice"]
    staged = stage_upload(OWNER, pth, "alice.pth", s=s)
    proxy.hold("tmp/uploads")  # the job's download of the model waits for the test
    target = {"platform": "telegram", "chat_id": ADA, "status_message_id": None}
    job_id = submit.submit_import(OWNER, "alice", [staged], s=s, reply_to=target)
    assert proxy.held.wait(60), "the import never started downloading"
    with session(s.database) as db:
        assert db.get(Job, job_id).step == "importing"

    answer = _forget_through_the_bot(fake)
    assert "Your running job is stopping" in answer, answer
    with session(s.database) as db:
        job = db.get(Job, job_id)
        assert (job.state, job.owner, job.params) == ("cancelled", "forgotten", {})
        assert db.get(ReplyTarget, job_id) is None

    proxy.fail_deletes(after=0)  # and S3 fails every deletion of the job's cleanup
    proxy.release()
    submit._threads[job_id].join(120)  # the job's flow has ended
    assert not submit._threads[job_id].is_alive()

    with session(s.database) as db:
        assert db.scalar(select(func.count()).select_from(Voice)) == 0  # nothing registered
        assert db.scalar(select(func.count()).select_from(PendingDeletion)) > 0
    assert proxy.refused > 0
    assert any("/voices/" in key for key in _bucket_keys(moto_endpoint, bucket))  # was stored

    proxy.heal()
    api.recover(s)
    with session(s.database) as db:
        assert db.scalar(select(func.count()).select_from(PendingDeletion)) == 0
    assert _bucket_keys(moto_endpoint, bucket) == kept
    _nothing_of_hers_in_the_database(s)
    fake.wait_for(lambda: ALL_GONE in fake.sent_texts(ADA), 10, "the all-gone message")
    assert not any("Imported" in text for text in fake.sent_texts(ADA))


def test_forget_removes_her_training_folders_and_leaves_others(settings):
    from flows.steps.train import training_dir, training_root
    from flows.users import forget_user

    sample = settings.data_dir / "sample.wav"
    sample.parent.mkdir(parents=True, exist_ok=True)
    sample.write_bytes(b"voice")
    hers = training_dir(settings, OWNER, "Me - take 2", [sample])
    near = training_dir(settings, f"{OWNER}0", "Me", [sample])  # telegram:10, not her
    other = training_dir(settings, "discord:1", "Me", [sample])
    for folder in (hers, near, other):
        (folder / "rvc").mkdir(parents=True)
        (folder / "rvc" / "G_2.pth").write_bytes(b"checkpoint")

    gone = forget_user(settings, OWNER)
    assert (gone.pending, gone.stopping) == (0, 0)
    assert sorted(p.name for p in training_root(settings).iterdir()) == sorted(
        [near.name, other.name]
    )
