"""Quotas that hold and a disk that one user cannot fill.

The business rules run fast against a fresh SQLite database: what counts against a quota
(failures the user caused, not ours; cancelled jobs not in the rate window), when a place
frees, that `/forget` resets nothing, the trending drops' budget, the caps on staged uploads
and sessions, and the expiry of scratch files. The race tests send 20 commands at once
through the bots' own `bots.submission.submit_plan` against a quota of 3, on SQLite and on
PostgreSQL.
"""

from __future__ import annotations

import os
import re
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bots import importing, songs, submission, trending
from bots.messages import JobPlan, Reply, Who
from flows import users
from flows.db import Job, UploadFile, UploadSession, Usage, now, session
from flows.errors import UserError
from flows.jobs import GENERIC_FAILURE, INTERRUPTED, SERVER_DOWN, cancel_job, update_job
from flows.settings import Settings
from flows.storage import open_storage
from flows.users import QuotaExceeded, create_counted_job
from tests.conftest import fresh_database

OWNER = "telegram:1"
USER_FAULT = "That file is not audio I can use; send an mp3, m4a, ogg, wav or flac file."


def _settings(tmp_path: Path, **fields) -> Settings:
    base = {
        "data_dir": tmp_path / "data",
        "database_url": fresh_database(tmp_path / "data" / "encore.db"),
        "storage_url": (tmp_path / "data" / "files").resolve().as_uri(),
        "quota_jobs_per_day": 3,
        "quota_trainings_per_day": 2,
        "rate_limit_jobs": 0,
        "max_active_jobs": 0,
    }
    return Settings(**{**base, **fields})


def _fail(s: Settings, job_id: str, reason: str, result: dict | None = None) -> None:
    update_job(s, job_id, state="failed", step="done", reason=reason, result=result or {})


def _age(s: Settings, seconds: float) -> None:
    """Make every ledger row `seconds` older."""
    with session(s.database) as db:
        for row in db.scalars(select(Usage)):
            row.created_at = row.created_at - timedelta(seconds=seconds)


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


# ------------------------------------------------------------------------------------------
# What counts


def test_failures_count_when_the_user_caused_them_and_not_when_we_did(tmp_path):
    s = _settings(tmp_path)
    made = [create_counted_job(s, "cover", OWNER, {}) for _ in range(3)]
    assert users.check_quota(s, OWNER, "cover").rule == "daily"
    _fail(s, made[0], GENERIC_FAILURE)  # our bug
    _fail(s, made[1], INTERRUPTED)  # a restart
    _fail(s, made[2], USER_FAULT)  # what the user sent
    assert users.check_quota(s, OWNER, "stems") is None
    more = [create_counted_job(s, "stems", OWNER, {}) for _ in range(2)]
    with pytest.raises(QuotaExceeded) as refused:
        create_counted_job(s, "karaoke", OWNER, {})
    assert refused.value.limit.rule == "daily" and refused.value.limit.limit == 3
    _fail(s, more[0], SERVER_DOWN)
    _fail(s, more[1], "Voice training stopped unexpectedly.", {"fault": "ours"})  # a crash
    assert users.check_quota(s, OWNER, "cover") is None
    # Voice jobs have their own quota; song jobs do not use it up.
    assert users.check_quota(s, OWNER, "train") is None


def test_cancelled_jobs_leave_the_rate_window_but_count_for_the_day(tmp_path):
    s = _settings(tmp_path, rate_limit_jobs=2, rate_limit_window_s=60)
    first = create_counted_job(s, "cover", OWNER, {})
    create_counted_job(s, "cover", OWNER, {})
    limit = users.check_quota(s, OWNER, "cover")
    assert limit.rule == "rate" and 55 <= limit.retry_after_s <= 60
    assert cancel_job(s, first)
    assert users.check_quota(s, OWNER, "cover") is None
    create_counted_job(s, "cover", OWNER, {})
    assert users.check_quota(s, OWNER, "cover").rule == "rate"
    _age(s, 61)
    limit = users.check_quota(s, OWNER, "cover")  # 3 today, the cancelled one included
    assert limit.rule == "daily" and 23.9 * 3600 < limit.retry_after_s <= 24 * 3600


def test_a_place_frees_when_the_oldest_counted_job_leaves_the_window(tmp_path):
    s = _settings(tmp_path, rate_limit_jobs=2, rate_limit_window_s=60, quota_jobs_per_day=4)
    create_counted_job(s, "cover", OWNER, {})
    _age(s, 50)
    create_counted_job(s, "cover", OWNER, {})
    limit = users.check_quota(s, OWNER, "cover")
    assert limit.rule == "rate" and 8 <= limit.retry_after_s <= 10.5
    _age(s, 11)  # the first is 61 s old now
    assert users.check_quota(s, OWNER, "cover") is None
    for _ in range(2):
        _age(s, 120)
        create_counted_job(s, "stems", OWNER, {})
    limit = users.check_quota(s, OWNER, "karaoke")  # four in 24 h, the first 301 s ago
    assert limit.rule == "daily" and limit.limit == 4
    assert 24 * 3600 - 302 <= limit.retry_after_s <= 24 * 3600 - 300
    _age(s, 24 * 3600 - 331)  # the first is 30 s from a day old
    assert 28 <= users.check_quota(s, OWNER, "cover").retry_after_s <= 30
    _age(s, 31)
    assert users.check_quota(s, OWNER, "cover") is None


def test_open_jobs_are_capped_and_a_resubmitted_command_is_never_refused(tmp_path):
    s = _settings(tmp_path, max_active_jobs=2, quota_jobs_per_day=2)
    first = create_counted_job(s, "cover", OWNER, {}, idempotency_key="update-1")
    create_counted_job(s, "cover", OWNER, {}, idempotency_key="update-2")
    with pytest.raises(QuotaExceeded) as refused:
        create_counted_job(s, "cover", OWNER, {}, idempotency_key="update-3")
    assert refused.value.limit.rule == "active"
    # The same command delivered again is the same job, whatever the quota says now.
    assert create_counted_job(s, "cover", OWNER, {}, idempotency_key="update-1") == first
    with session(s.database) as db:
        assert db.query(Job).count() == 2 and db.query(Usage).count() == 2


def test_forget_resets_no_counter_and_the_ledger_names_nobody(tmp_path):
    s = _settings(tmp_path)
    made = [create_counted_job(s, "cover", OWNER, {}) for _ in range(3)]
    _fail(s, made[0], GENERIC_FAILURE)
    cancel_job(s, made[1])
    update_job(s, made[2], state="succeeded", step="done")
    create_counted_job(s, "cover", OWNER, {})  # still queued: /forget cancels it
    assert users.check_quota(s, OWNER, "cover").rule == "daily"
    users.forget_user(s, OWNER)
    with session(s.database) as db:
        assert db.query(Job).filter(Job.owner == OWNER).count() == 0
        rows = list(db.scalars(select(Usage).order_by(Usage.id)))
    assert [row.excused for row in rows] == ["ours", "cancelled", None, "cancelled"]
    assert all(row.job_id is None for row in rows)  # no link to anything left
    for row in rows:  # nothing in it names the user
        assert row.subject == users.subject(s, OWNER) and "telegram" not in row.subject
        assert OWNER not in repr(vars(row))
    limit = users.check_quota(s, OWNER, "cover")
    assert limit is not None and limit.rule == "daily"
    with pytest.raises(QuotaExceeded):
        create_counted_job(s, "cover", OWNER, {})
    # Old rows go: the ledger keeps two days at most.
    _age(s, 2 * 24 * 3600 + 60)
    assert users.sweep(s)["usage"] == 4
    assert users.check_quota(s, OWNER, "cover") is None


def test_the_ledger_hash_depends_on_the_operators_key(tmp_path):
    one = _settings(tmp_path, usage_ledger_key="first secret")
    two = _settings(tmp_path, usage_ledger_key="second secret")
    assert users.subject(one, OWNER) != users.subject(two, OWNER)
    assert users.subject(one, OWNER) != users.subject(one, "telegram:2")
    assert len(users.subject(one, OWNER)) == 64


# ------------------------------------------------------------------------------------------
# Trending drops


def test_drops_of_all_chats_share_the_operators_budget(tmp_path):
    s = _settings(tmp_path, trending_covers_per_day=3)
    for chat in ("telegram:-100", "telegram:-200", "discord:555"):
        create_counted_job(s, "cover", f"trending:{chat}", {})
    with pytest.raises(QuotaExceeded) as refused:
        create_counted_job(s, "cover", "trending:telegram:-300", {})
    assert refused.value.limit.rule == "budget" and refused.value.limit.limit == 3
    assert users.check_quota(s, OWNER, "cover") is None  # a person's quota is their own
    _age(s, 24 * 3600 + 1)
    create_counted_job(s, "cover", "trending:telegram:-300", {})


def test_a_private_chat_is_not_its_own_admin_for_trending(tmp_path):
    s = _settings(tmp_path)
    me = Who("telegram", "1", "1", "Ada", private=True)
    answer = trending.trending(s, me, "", True)
    assert "does not get" in answer.text and "groups and channels" in answer.text
    refused = trending.trending(s, me, "on", True)
    assert refused.text.startswith("Trending covers go to groups and channels")
    assert not users.subscriptions(s, "trending")
    group = Who("telegram", "1", "-100", "Ada", private=False)
    assert trending.trending(s, group, "on", True).text.startswith("📈")
    allowed = _settings(tmp_path, trending_private_chats=True)
    assert trending.trending(allowed, me, "on", True).text.startswith("📈")
    assert len(users.subscriptions(s, "trending")) == 2


# ------------------------------------------------------------------------------------------
# Uploads: caps, sessions, expiry


def _clip(tmp_path: Path, name: str, size: int) -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


def test_staged_uploads_are_capped_per_session_and_per_user(tmp_path):
    s = _settings(tmp_path, max_session_files=2, max_user_upload_bytes=5000)
    uploads = s.data_dir / "files" / "tmp" / "uploads"
    first = users.open_upload_session(s, OWNER, "train", "me")
    for i in range(2):
        clip = _clip(tmp_path, f"c{i}.ogg", 1000)
        assert users.stage_file(s, first.id, OWNER, f"m{i}", clip, clip.name, f"h{i}")
    # The same chat message again is taken once.
    assert users.stage_file(s, first.id, OWNER, "m0", clip, clip.name, "h0") is None
    with pytest.raises(UserError, match=r"^One voice takes at most 2 files; send /done"):
        users.stage_file(s, first.id, OWNER, "m9", clip, clip.name, "h9")
    assert len(_files_under(uploads)) == 2
    # A session submitting still holds its files: a new one may not pile up beyond the cap.
    assert users.claim_upload_session(s, first.id, OWNER) is not None
    second = users.open_upload_session(s, OWNER, "import", "model")
    big = _clip(tmp_path, "big.pth", 3500)
    with pytest.raises(UserError) as refused:
        users.stage_file(s, second.id, OWNER, "m10", big, big.name, "h10")
    assert refused.value.message.startswith("You have 2 files (0 MB) waiting with me")
    assert len(_files_under(uploads)) == 2  # nothing stored
    small = _clip(tmp_path, "small.index", 2000)
    assert users.stage_file(s, second.id, OWNER, "m11", small, small.name, "h11")
    # Another user's cap is their own.
    other = users.open_upload_session(s, "telegram:2", "import", "x")
    assert users.stage_file(s, other.id, "telegram:2", "m1", big, big.name, "h1")


def test_a_model_file_over_the_cap_gets_one_sentence_from_the_bot(tmp_path):
    s = _settings(tmp_path, max_session_files=1)
    me = Who("telegram", "1", "1", "Ada")
    assert importing.import_command(s, me, "mine").text.startswith("📦")
    pth = _clip(tmp_path, "mine.pth", 100)
    assert importing.model_downloaded(s, me, "m1", pth, "mine.pth").text.startswith("Got the model")
    index = _clip(tmp_path, "mine.index", 100)
    refused = importing.model_downloaded(s, me, "m2", index, "mine.index")
    assert refused.text == (
        "One voice takes at most 1 files; send /done to use the ones you sent, or /cancel to "
        "start again."
    )
    assert [p.name for p in _files_under(s.data_dir / "files")] == ["mine.pth"]


def test_a_user_has_one_open_session_however_fast_they_ask(tmp_path):
    s = _settings(tmp_path)
    start = threading.Barrier(8)

    def open_one(i: int) -> None:
        start.wait()
        users.open_upload_session(s, OWNER, "train", f"voice {i}")

    threads = [threading.Thread(target=open_one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with session(s.database) as db:
        states = [row.state for row in db.scalars(select(UploadSession))]
    assert sorted(states) == ["cancelled"] * 7 + ["open"]


def test_a_session_expires_even_while_it_grows(tmp_path):
    s = _settings(tmp_path, upload_session_max_s=3600, upload_session_idle_s=600)
    uploads = s.data_dir / "files" / "tmp" / "uploads"
    row = users.open_upload_session(s, OWNER, "train", "me")
    clip = _clip(tmp_path, "a.ogg", 100)
    assert users.stage_file(s, row.id, OWNER, "m1", clip, clip.name, "h1")
    with session(s.database) as db:  # opened 2 h ago, a file added just now
        db.get(UploadSession, row.id).created_at = now() - timedelta(hours=2)
    with pytest.raises(UserError, match="expired"):
        users.stage_file(s, row.id, OWNER, "m2", clip, clip.name, "h2")
    assert users.sweep(s)["sessions"] == 1
    assert users.get_upload_session(s, row.id).state == "cancelled"
    assert not uploads.exists()  # the files went, and their folders with them
    # An idle one expires too.
    idle = users.open_upload_session(s, OWNER, "train", "me again")
    with session(s.database) as db:
        db.get(UploadSession, idle.id).updated_at = now() - timedelta(minutes=11)
    assert users.expire_upload_sessions(s) == 1
    with session(s.database) as db:
        assert db.query(UploadFile).count() == 0


def test_the_sweep_expires_old_scratch_files_and_their_empty_folders(tmp_path):
    from flows import api
    from flows.submit import stage_upload

    s = _settings(tmp_path, tmp_expiry_s=3600)
    storage = open_storage(s.storage)
    root = s.data_dir / "files"
    clip = _clip(tmp_path, "a.wav", 10)
    old_upload = stage_upload(OWNER, clip, "a.wav", s=s)
    new_upload = stage_upload("telegram:2", clip, "b.wav", s=s)
    old_stem = storage.put(clip, "tmp/stems/abc/vocals.wav")
    song = storage.put(clip, "songs/abc/source.wav")  # not scratch: never expires
    day_ago = time.time() - 24 * 3600
    for uri in (old_upload, old_stem, song):
        path = Path(storage._path(uri))
        os.utime(path, (day_ago, day_ago))
    assert api.recover(s) == 0  # the bots' sweeper
    assert not storage.exists(old_upload) and not storage.exists(old_stem)
    assert storage.exists(new_upload) and storage.exists(song)
    assert not (root / "tmp" / "uploads" / "telegram_1").exists()
    assert not (root / "tmp" / "stems").exists()
    assert [p.relative_to(root).parts[:3] for p in _files_under(root)] == [
        ("songs", "abc", "source.wav"),
        ("tmp", "uploads", "telegram_2"),
    ]


def test_deleting_an_upload_leaves_no_empty_folder(tmp_path):
    from flows.submit import stage_upload

    s = _settings(tmp_path)
    storage = open_storage(s.storage)
    clip = _clip(tmp_path, "a.wav", 10)
    first = stage_upload(OWNER, clip, "a.wav", s=s)
    second = stage_upload(OWNER, clip, "..", s=s)  # a name that names no file
    assert second.endswith("/upload")
    storage.delete(first)
    assert storage.exists(second)
    storage.delete(second)
    assert not (s.data_dir / "files" / "tmp").exists()
    assert (s.data_dir / "files").is_dir()  # the root stays


def test_a_song_file_over_the_quota_is_refused_before_it_is_stored(tmp_path, song_wav):
    s = _settings(tmp_path, quota_jobs_per_day=1)
    create_counted_job(s, "cover", OWNER, {})
    me = Who("telegram", "1", "1", "Ada")
    answer = songs.song_downloaded(s, me, "karaoke", "", song_wav, "My song")
    assert answer.text.startswith("You have used today's 1 covers")
    assert not (s.data_dir / "files" / "songs").exists()


# ------------------------------------------------------------------------------------------
# The race: 20 commands at once against a quota of 3


@pytest.fixture(params=["sqlite", "postgres"])
def race_settings(request, settings, monkeypatch):
    from flows.settings import get_settings

    if request.param == "postgres":
        make = request.getfixturevalue("pg_databases")
        monkeypatch.setenv("ENCORE_DATABASE_URL", make())
    monkeypatch.setenv("ENCORE_QUOTA_JOBS_PER_DAY", "3")
    monkeypatch.setenv("ENCORE_RATE_LIMIT_JOBS", "0")
    monkeypatch.setenv("ENCORE_MAX_ACTIVE_JOBS", "0")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def test_twenty_commands_at_once_make_exactly_the_quotas_three_jobs(race_settings):
    from flows import submit

    s = race_settings
    missing_song = "0" * 32  # the jobs fail at once, by the user's doing: they still count
    start = threading.Barrier(20)
    answers: list = [None] * 20

    def command(i: int) -> None:
        plan = JobPlan(kind="stems", owner=OWNER, headline="Stems", song_id=missing_song)
        start.wait()
        answers[i] = submission.submit_plan(s, plan, f"race-{i}", {"platform": "test"})

    threads = [threading.Thread(target=command, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    made = [a for a in answers if isinstance(a, tuple)]
    refused = [a for a in answers if isinstance(a, Reply)]
    assert len(made) == 3 and len(refused) == 17
    for reply in refused:
        assert reply.text.startswith("You have used today's 3 covers, karaoke tracks and stems.")
        # (24 h after the first job; a slow machine may have taken a minute to get here)
        assert re.search(r"Try again in (24 h|23 h \d{1,2} min)\.$", reply.text), reply.text
    with session(s.database) as db:
        jobs = list(db.scalars(select(Job).where(Job.owner == OWNER)))
        assert len(jobs) == 3 and db.query(Usage).count() == 3
    for job_id, _fresh in made:  # the flows end: failed, by the user's doing
        thread = submit._threads.pop(job_id, None)
        if thread is not None:
            thread.join(120)
    with session(s.database) as db:
        ended = list(db.scalars(select(Job).where(Job.owner == OWNER)))
    assert {(j.state, j.reason) for j in ended} == {
        ("failed", "That song is no longer in the catalog; pick another one.")
    }
    late = submission.submit_plan(
        s,
        JobPlan(kind="cover", owner=OWNER, headline="Cover", song_id=missing_song, voice_id="x"),
        "race-late",
        {"platform": "test"},
    )
    assert isinstance(late, Reply) and late.text.startswith("You have used today's 3")
