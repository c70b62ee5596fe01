"""Business rules, fast: a fresh SQLite database through the real `flows.db`, no Prefect
flow run, no bot. Queue positions, per-user limits, which ended jobs get delivered (and
when a claim runs out), and which lost jobs a starting process takes over.

Further rules have fast tests beside their subject: the quota ledger and upload expiry in
tests/test_quotas.py, the delivery ledger's claims and parts in tests/test_delivery.py,
which runner counts as dead in tests/test_lifecycle.py.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from flows.chat import deliver_pending
from flows.chat.ledger import claim, delivery_state
from flows.db import Delivery, Job, now, session
from flows.jobs import (
    INTERRUPTED,
    RELEASED,
    cancel_job,
    create_job,
    get_job,
    queue_position,
    this_runner,
)
from flows.recovery import take_over_lost_jobs
from flows.settings import Settings
from flows.users import check_quota, create_counted_job, forget_user
from tests.conftest import fresh_database


def _settings(tmp_path, **fields) -> Settings:
    url = fresh_database(tmp_path / "data" / "encore.db")
    return Settings(data_dir=tmp_path / "data", database_url=url, **fields)


def _set(s: Settings, model, key, **values) -> None:
    column = model.job_id if model is Delivery else model.id
    with session(s.database) as db:
        db.execute(update(model).where(column == key).values(**values))


def _queued(s: Settings, owners: list[str]) -> list[str]:
    """Jobs submitted one second apart, oldest first."""
    ids = [create_job(s, "cover", owner, {}) for owner in owners]
    start = now() - timedelta(minutes=10)
    for i, job_id in enumerate(ids):
        _set(s, Job, job_id, created_at=start + timedelta(seconds=i))
    return ids


def _positions(s: Settings, ids: list[str]) -> list[int]:
    return [queue_position(s, get_job(s, job_id)) for job_id in ids]


# ------------------------------------------------------------------------------------------
# Queue positions


def test_a_queued_job_counts_the_queued_jobs_of_everyone_submitted_before_it(tmp_path):
    s = _settings(tmp_path)
    ids = _queued(s, ["telegram:1", "discord:2", "telegram:1", "telegram:3"])
    assert _positions(s, ids) == [1, 2, 3, 4]
    _set(s, Job, ids[0], state="running")  # the first starts: everyone moves up
    assert _positions(s, ids[1:]) == [1, 2, 3]
    assert cancel_job(s, ids[2])  # a cancelled job leaves the queue
    assert _positions(s, [ids[1], ids[3]]) == [1, 2]
    _set(s, Job, ids[0], state="succeeded")
    _set(s, Job, ids[1], state="failed")  # ended jobs hold no place
    assert _positions(s, [ids[3]]) == [1]


def test_a_later_job_never_moves_ahead(tmp_path):
    s = _settings(tmp_path)
    ids = _queued(s, ["telegram:1", "telegram:2"])
    later = _queued(s, ["telegram:3"])[0]
    _set(s, Job, later, created_at=now())
    assert _positions(s, [*ids, later]) == [1, 2, 3]


# ------------------------------------------------------------------------------------------
# Per-user limits


def test_limits_are_per_user_and_forget_gives_no_new_places(tmp_path):
    s = _settings(tmp_path, quota_jobs_per_day=2, rate_limit_jobs=0, max_active_jobs=0)
    ada, bob = "telegram:1", "telegram:2"
    for _ in range(2):
        create_counted_job(s, "cover", ada, {})
    assert check_quota(s, ada, "cover").rule == "daily"
    assert check_quota(s, bob, "cover") is None  # Ada's use is hers alone
    create_counted_job(s, "stems", bob, {})
    assert check_quota(s, bob, "karaoke") is None
    forget_user(s, ada)
    assert check_quota(s, ada, "cover").rule == "daily"  # forgotten, still counted
    assert check_quota(s, bob, "cover") is None


def test_open_jobs_cap_frees_a_place_when_one_ends(tmp_path):
    s = _settings(tmp_path, quota_jobs_per_day=10, rate_limit_jobs=0, max_active_jobs=2)
    ada = "telegram:1"
    first = create_counted_job(s, "cover", ada, {})
    create_counted_job(s, "cover", ada, {})
    limit = check_quota(s, ada, "cover")
    assert limit.rule == "active" and limit.retry_after_s is None
    _set(s, Job, first, state="succeeded")
    assert check_quota(s, ada, "cover") is None


# ------------------------------------------------------------------------------------------
# Pending deliveries: what the sweeper (`deliver_pending`) takes


def _ended_chat_job(s: Settings, chat_id: int) -> str:
    """A failed job from a Telegram chat (its outcome is one message in that chat)."""
    reply_to = {"platform": "telegram", "chat_id": chat_id}
    job_id = create_job(s, "cover", f"telegram:{chat_id}", {}, reply_to=reply_to)
    _set(s, Job, job_id, state="failed", step="done", reason="It went wrong; try again.")
    return job_id


def test_the_sweeper_delivers_what_is_due_and_nothing_else(tmp_path, fake):
    s = _settings(
        tmp_path,
        telegram_token=fake.token,
        telegram_api_url=fake.api_url,
        telegram_file_url=fake.file_url,
    )
    at = now()
    never_claimed = _ended_chat_job(s, 1)  # its process died before delivering
    too_old = _ended_chat_job(s, 2)
    _set(s, Job, too_old, updated_at=at - timedelta(days=2))
    still_open = create_job(s, "cover", "telegram:3", {}, reply_to={"platform": "telegram",
                                                                     "chat_id": 3})  # fmt: skip
    wait_over, wait_on, holder_died, holder_alive, sent = (
        _ended_chat_job(s, chat) for chat in (4, 5, 6, 7, 8)
    )
    for job_id in (wait_over, wait_on, holder_died, holder_alive, sent):
        claim(s, job_id)  # a claim by a process that then stops (it never renews)
    _set(s, Delivery, wait_over, state="waiting", holder=None, next_at=at - timedelta(seconds=1))
    _set(s, Delivery, wait_on, state="waiting", holder=None, next_at=at + timedelta(hours=1))
    _set(s, Delivery, holder_died, lease_until=at - timedelta(seconds=1))
    _set(s, Delivery, sent, state="sent", holder=None, lease_until=None)

    assert deliver_pending(s) == 3
    told = {chat for chat in range(1, 9) if fake.sent_texts(chat)}
    assert told == {1, 4, 6}
    assert all(len(fake.sent_texts(chat)) == 1 for chat in told)
    assert "It went wrong; try again." in fake.sent_texts(1)[0]
    for job_id in (never_claimed, wait_over, holder_died, sent):
        assert delivery_state(s, job_id) == "sent"
    assert delivery_state(s, too_old) is None and delivery_state(s, still_open) is None
    assert delivery_state(s, wait_on) == "waiting" and delivery_state(s, holder_alive) == "sending"
    assert deliver_pending(s) == 0  # a second sweep finds nothing more
    assert len(fake.calls_of("sendMessage")) == 3


# ------------------------------------------------------------------------------------------
# Lost jobs: what a starting process takes over


def _dead_runner() -> str:
    """A runner whose process is gone: this host and boot, a pid that has been reused since
    (the process with that pid now started at another time)."""
    host, boot, pid, _ = this_runner().split("|")
    return f"{host}|{boot}|{pid}|1"


def test_a_starting_process_takes_over_the_jobs_it_can_run_and_ends_the_rest(tmp_path):
    s = _settings(tmp_path, telegram_token="123456:TEST-token", job_attempts=3)
    chat = {"platform": "telegram", "chat_id": 1}
    dead = _dead_runner()

    def job(runner, reply_to=chat, attempts=1, state="queued") -> str:
        job_id = create_job(s, "cover", "telegram:1", {}, reply_to=reply_to, runner=runner)
        _set(s, Job, job_id, attempts=attempts, state=state)
        return job_id

    released = job(RELEASED)  # let go of at a clean shutdown
    died = job(dead, state="running")  # its process was killed mid-run
    ours = job(this_runner())
    last_try = job(dead, attempts=3)  # a fourth run would be one too many
    cli = job(RELEASED, reply_to=None)  # nobody to tell: it cannot continue unseen
    other_bot = job(dead, reply_to={"platform": "discord", "channel_id": "9"})  # no token here
    ended = job(dead, state="succeeded")

    taken, failed = take_over_lost_jobs(s)
    assert sorted(j.id for j in taken) == sorted([released, died])
    assert failed == 3
    by_id = {j.id: j for j in taken}
    assert by_id[released].attempts == 1  # a clean stop uses no attempt
    assert by_id[died].attempts == 2
    for j in taken:
        assert (j.state, j.step, j.runner) == ("queued", "restarted", this_runner())
    for job_id in (last_try, cli, other_bot):
        j = get_job(s, job_id)
        assert (j.state, j.reason) == ("failed", INTERRUPTED)
    assert get_job(s, ours).state == "queued" and get_job(s, ended).state == "succeeded"
    assert take_over_lost_jobs(s) == ([], 0)  # taken once: a second start finds them running
