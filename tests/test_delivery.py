"""The delivery ledger's rules (on SQLite and PostgreSQL) and the log redaction: fast tests.

The end-to-end fault tests (a 429 longer than a minute, a crash between claim and send, a
lost answer, giving up) run through the fake chat servers in `tests/test_telegram.py`.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import update

from flows.chat.client import BotApiError
from flows.chat.ledger import LeaseLost, backoff_s, claim, delivery_state, wait_s
from flows.db import Delivery, now, session
from flows.jobs import create_job, update_job
from flows.logs import REDACTED, protect_logs, redact
from flows.settings import Settings
from tests.conftest import fresh_database


@pytest.fixture(scope="module")
def pg_url(pg_databases) -> str:
    return pg_databases()


@pytest.fixture(params=["sqlite", "postgresql"])
def s(request, tmp_path) -> Settings:
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
    else:
        url = fresh_database(tmp_path / "data" / "encore.db")
    return Settings(
        data_dir=tmp_path / "data", database_url=url, delivery_time_scale=1.0, delivery_lease_s=60
    )


def _job(s: Settings) -> str:
    job_id = create_job(s, "cover", "telegram:1", {}, reply_to={"platform": "telegram"})
    update_job(s, job_id, state="succeeded", step="done", progress=1.0)
    return job_id


def _set(s: Settings, job_id: str, **values) -> None:
    with session(s.database) as db:
        db.execute(update(Delivery).where(Delivery.job_id == job_id).values(**values))


def test_a_claim_is_held_by_one_process_and_taken_over_when_its_lease_runs_out(s):
    job = _job(s)
    first = claim(s, job)
    assert first is not None
    assert claim(s, job) is None  # held, and its holder may be alive
    _set(s, job, lease_until=now() - timedelta(seconds=1))  # the holder stopped renewing
    second = claim(s, job)
    assert second is not None and second.holder != first.holder
    with pytest.raises(LeaseLost):  # the old holder wakes up: it may no longer write
        first.end("sent")
    second.end("sent")
    assert delivery_state(s, job) == "sent"
    assert claim(s, job) is None  # delivered: never again


def test_concurrent_claims_give_one_holder(s):
    from concurrent.futures import ThreadPoolExecutor

    job = _job(s)
    with ThreadPoolExecutor(8) as pool:
        leases = list(pool.map(lambda _: claim(s, job), range(8)))
    assert sum(lease is not None for lease in leases) == 1
    _set(s, job, lease_until=now() - timedelta(seconds=1))  # its holder died
    with ThreadPoolExecutor(8) as pool:
        heirs = list(pool.map(lambda _: claim(s, job), range(8)))
    assert sum(lease is not None for lease in heirs) == 1


def test_a_long_wait_releases_the_claim_until_its_time(s):
    job = _job(s)
    lease = claim(s, job)
    lease.release("BotApiError: 429", wait=3600)
    assert delivery_state(s, job) == "waiting"
    assert claim(s, job) is None  # not before next_at
    _set(s, job, next_at=now() - timedelta(seconds=1))
    again = claim(s, job)
    assert again is not None and delivery_state(s, job) == "sending"
    again.end("failed", error="BotApiError: 403")
    assert claim(s, job) is None


def test_a_message_is_sent_once_and_skipped_by_a_retry(s):
    job = _job(s)
    lease = claim(s, job)
    posted = []

    def send():
        posted.append(1)
        return {"message_id": 7, "chat": {"id": 1}}

    lease.tried()
    assert lease.sending(send) == {"message_id": 7}
    lease.tried()  # a retry of the whole outcome (a later part failed, say)
    assert lease.sending(send) == {"message_id": 7}
    assert len(posted) == 1


def test_a_lost_answer_allows_one_more_send_and_never_a_third(s):
    job = _job(s)
    lease = claim(s, job)
    posted = []

    def lost():
        posted.append(1)
        raise httpx.ReadTimeout("timed out")

    for _ in range(2):
        lease.tried()
        with pytest.raises(httpx.ReadTimeout):
            lease.sending(lost)
    lease.tried()
    assert lease.sending(lost) is None  # two sends may both have arrived: not a third
    assert len(posted) == 2
    part = lease.detail["parts"]["1"]
    assert part["lost"] == 2 and part["unconfirmed"] and part["sent"]
    assert "ReadTimeout" in part["why"]


def test_a_refused_send_does_not_count_as_a_possible_copy(s):
    job = _job(s)
    lease = claim(s, job)
    for _ in range(3):
        lease.tried()
        with pytest.raises(BotApiError):
            lease.sending(lambda: (_ for _ in ()).throw(BotApiError(502, "Bad Gateway")))
    lease.tried()
    assert lease.sending(lambda: {"message_id": 3}) == {"message_id": 3}
    assert "lost" not in lease.detail["parts"]["1"]


def test_a_holder_that_died_mid_send_counts_as_a_lost_answer(s):
    job = _job(s)
    lease = claim(s, job)
    lease.tried()
    # What a process that died inside send() leaves behind: the part in flight.
    lease.detail["parts"] = {"1": {"in_flight": True}}
    lease._save()
    _set(s, job, lease_until=now() - timedelta(seconds=1))
    heir = claim(s, job)
    heir.tried()
    assert heir.sending(lambda: {"message_id": 9}) == {"message_id": 9}
    part = heir.detail["parts"]["1"]
    assert part["lost"] == 1 and "died" in part["why"]


def test_retry_after_is_honoured_in_full_and_backoff_is_bounded():
    assert wait_s(BotApiError(429, "Too Many Requests", retry_after=3600), 1) == 3600
    assert wait_s(BotApiError(502, "Bad Gateway"), 1) == 0.5
    assert wait_s(httpx.ConnectError("refused"), 3) == 2.0
    assert backoff_s(50) == 600.0


def test_the_give_up_time_is_set_at_the_claim_and_scaled(tmp_path):
    s = Settings(data_dir=tmp_path / "d", delivery_give_up_s=7200, delivery_time_scale=0.001)
    lease = claim(s, _job(s))
    assert not lease.past_give_up(7000)  # 7 s of real time: inside the 7.2 s
    assert lease.past_give_up(7300)


def test_redaction_covers_tokens_in_messages_arguments_and_tracebacks(tmp_path, monkeypatch):
    token = "7123456789:AAH-realistic_Token_shape_0123456789ab"
    monkeypatch.setenv("ENCORE_DISCORD_TOKEN", "MTIz.discord-secret.value")
    monkeypatch.setenv("ENCORE_TELEGRAM_WEBHOOK_SECRET", "hook-secret-42")
    protect_logs(Settings(data_dir=tmp_path))
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(self.format(record))

    logger = logging.getLogger("encore.test.redaction")
    handler = Keep(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        logger.debug("POST https://api.telegram.org/bot%s/sendAudio", token)
        logger.info("auth header Bot MTIz.discord-secret.value and hook-secret-42")
        logger.debug("headers {'Authorization': 'Bot other.bot-token-9'}")
        logger.info("follow-up to /webhooks/900/tok1234567/messages/@original")
        logger.debug("event %s", {"t": "INTERACTION_CREATE", "d": {"token": "tok7654321"}})
        logger.debug('{"secret_token": "s3cr3t-value"} and ?access_token=abcdef123')
        try:
            raise RuntimeError(f"failed: https://api.telegram.org/file/bot{token}/x.oga")
        except RuntimeError:
            logger.exception("a failure")
    finally:
        logger.removeHandler(handler)
    text = "\n".join(lines)
    for secret in (token, "discord-secret", "hook-secret-42", "tok1234567", "tok7654321",
                   "s3cr3t-value", "abcdef123", "bot-token-9"):  # fmt: skip
        assert secret not in text
    assert text.count(REDACTED) >= 9
    assert "RuntimeError: failed: https://api.telegram.org/file/bot<redacted>/x.oga" in text
    assert redact("no secrets here") == "no secrets here"
