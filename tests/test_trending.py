"""Trending drops: the chart providers, matching, and a drop end to end in embedded mode.

The chart is served over real HTTP from 127.0.0.1; the covers are made by the real flows with
the tiny random-weight models and posted by them to the fake Telegram Bot API
(`tests/fake_telegram.py`), where the tests read what the chats received.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from flows.catalog import add_song
from flows.charts import ChartEntry, ChartError, match, parse_chart, read_chart
from flows.db import Delivery, Job, Song, Voice, session
from flows.demo import synth_song
from flows.users import subscribe
from flows.voices import import_voice
from gpu_worker.audio import decode, write_wav
from tests.conftest import drain_jobs
from tests.fake_telegram import free_port

SR = 44100
ADMIN = "telegram:1"
GROUP = -100777  # a group chat that subscribed, with alice's voice
BOBS = 2  # a private chat that subscribed with bob's voice
NO_VOICE = -100888  # a group chat that subscribed before anyone had a voice
BOBS_GROUP = -100999  # a group chat that subscribed with bob's voice
DAY = "2026-03-06"


# ------------------------------------------------------------------------------------------
# A chart server


class ChartServer:
    """Serves `body` at any path; `fail` makes the next requests answer that status first."""

    def __init__(self):
        self.body: bytes = b"[]"
        self.fail: list[int] = []
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                server.requests += 1
                status = server.fail.pop(0) if server.fail else 200
                body = server.body if status == 200 else b'{"error": "busy"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/charts/top.json?key=secret"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def serve(self, data) -> None:
        self.body = json.dumps(data).encode()

    def __enter__(self) -> ChartServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def chart():
    with ChartServer() as server:
        yield server


def apple(*pairs: tuple[str, str]) -> dict:
    """An Apple Music RSS feed (marketingtools' "most played songs") with these songs."""
    results = [
        {"artistName": artist, "id": str(1000 + n), "name": title, "kind": "songs"}
        for n, (title, artist) in enumerate(pairs)
    ]
    return {"feed": {"title": "Top Songs", "country": "us", "results": results}}


# ------------------------------------------------------------------------------------------
# Reading charts


def test_an_apple_music_feed_over_http_gives_ranked_entries_up_to_the_limit(chart):
    chart.serve(apple(("Flowers", "Miley Cyrus"), ("Kill Bill", "SZA"), ("Creepin'", "Metro")))
    assert read_chart(chart.url, limit=2) == [
        ChartEntry(1, "Flowers", "Miley Cyrus"),
        ChartEntry(2, "Kill Bill", "SZA"),
    ]


def test_a_plain_list_from_a_path_or_a_file_url(tmp_path):
    path = tmp_path / "chart one.json"
    path.write_text(
        json.dumps([{"title": "  Flowers ", "artist": "Miley\tCyrus"}, {"title": "Solo"}])
    )
    expected = [ChartEntry(1, "Flowers", "Miley Cyrus"), ChartEntry(2, "Solo", "")]
    assert read_chart(str(path), limit=10) == expected
    assert read_chart(path.as_uri(), limit=10) == expected


def test_entries_without_a_title_are_left_out_but_keep_the_ranks():
    raw = json.dumps([{"title": "A", "artist": "x"}, {"artist": "y"}, "junk", {"title": "B"}])
    assert parse_chart(raw, limit=10) == [ChartEntry(1, "A", "x"), ChartEntry(4, "B", "")]


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"<html>Service Unavailable</html>", "is not JSON"),
        (b'{"feed": {"entries": []}}', "neither an Apple Music RSS feed"),
        (b'{"title": "Flowers"}', "neither an Apple Music RSS feed"),
        (b'[{"name": "Flowers"}, {"song": "x"}]', "none with a 'title'"),
    ],
)
def test_a_malformed_chart_is_a_clear_error(chart, raw, says):
    chart.body = raw
    with pytest.raises(ChartError, match=says) as caught:
        read_chart(chart.url)
    assert "secret" not in str(caught.value)  # the query may hold a key


def test_an_unreachable_or_missing_chart_is_a_clear_error(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/chart.json"
    started = time.monotonic()
    with pytest.raises(ChartError, match="could not be reached"):
        read_chart(url)
    assert time.monotonic() - started < 15  # retried briefly, not for ever
    with pytest.raises(ChartError, match="cannot be read"):
        read_chart(str(tmp_path / "nowhere.json"))
    with pytest.raises(ChartError, match="ENCORE_CHART_URL"):
        read_chart(None)
    with pytest.raises(ChartError, match="http"):
        read_chart("ftp://example.com/chart.json")


def test_transient_http_errors_are_retried_and_refusals_are_not(chart, monkeypatch):
    from tenacity import wait_none

    monkeypatch.setattr("flows.charts.RETRY_WAIT", wait_none())
    chart.serve([{"title": "Flowers", "artist": "Miley Cyrus"}])
    chart.fail = [503, 429]
    assert read_chart(chart.url) == [ChartEntry(1, "Flowers", "Miley Cyrus")]
    assert chart.requests == 3
    chart.fail, chart.requests = [404], 0
    with pytest.raises(ChartError, match="HTTP 404"):
        read_chart(chart.url)
    assert chart.requests == 1
    chart.fail, chart.requests = [500, 500, 500], 0
    with pytest.raises(ChartError, match="unavailable: HTTP 500"):
        read_chart(chart.url)
    assert chart.requests == 3


# ------------------------------------------------------------------------------------------
# Matching


def _song(song_id: str, title: str, artist: str) -> Song:
    return Song(id=song_id, title=title, artist=artist, content_hash=song_id, uri="", duration=1)


CATALOG = [
    _song("flowers", "Flowers", "Miley Cyrus"),
    _song("killbill", "Kill Bill", "SZA"),
    _song("love", "Love", "Lana Del Rey"),
    _song("lovestory", "Love Story", "Taylor Swift"),
    _song("hello1", "Hello", "Adele"),
    _song("hello2", "Hello", "Lionel Richie"),
    _song("untitled", "Untitled", ""),
]


def test_matching_forgives_spelling_case_and_featured_artists():
    entries = [
        ChartEntry(1, "FLOWERS", "miley cyrus"),
        ChartEntry(2, "Kill Bill (feat. Doja Cat)", "SZA & Doja Cat"),
        ChartEntry(3, "Love Story (Taylor's Version)", "Taylor Swift"),
        ChartEntry(4, "Hello", "Adele"),
    ]
    matched, missing = match(entries, CATALOG, threshold=88)
    assert [(m.entry.rank, m.song.id) for m in matched] == [
        (1, "flowers"),
        (2, "killbill"),
        (4, "hello1"),
    ]
    # "(Taylor's Version)" is another recording: reported, not guessed.
    assert [(m.entry.rank, m.reason.split(" (")[0]) for m in missing] == [(3, "not in the catalog")]


def test_matching_never_guesses():
    entries = [
        ChartEntry(1, "Love", "Taylor Swift"),  # the title of one song, the artist of another
        ChartEntry(2, "Flowers", "Some Tribute Band"),  # a different recording
        ChartEntry(3, "Hello", ""),  # two songs called Hello: which?
        ChartEntry(4, "Flowers", "Miley Cyrus"),
        ChartEntry(5, "flowers!", "MILEY CYRUS"),  # the same song again, lower down
        ChartEntry(6, "Totally New Hit", "Newcomer"),
    ]
    matched, missing = match(entries, CATALOG, threshold=88)
    assert [(m.entry.rank, m.song.id) for m in matched] == [(4, "flowers")]
    reasons = {m.entry.rank: m.reason for m in missing}
    assert set(reasons) == {1, 2, 3, 5, 6}
    assert reasons[3].startswith("ambiguous: ")
    assert "higher entry" in reasons[5]
    assert reasons[6] == "not in the catalog"
    assert match([], CATALOG) == ([], [])
    assert match(entries[:1], [])[1][0].reason == "not in the catalog"


# ------------------------------------------------------------------------------------------
# A drop, end to end


@pytest.fixture
def drop_settings(settings, fake, chart, monkeypatch):
    from flows.settings import get_settings

    monkeypatch.setenv("ENCORE_TELEGRAM_TOKEN", fake.token)
    monkeypatch.setenv("ENCORE_TELEGRAM_API_URL", fake.api_url)
    monkeypatch.setenv("ENCORE_TELEGRAM_FILE_URL", fake.file_url)
    monkeypatch.setenv("ENCORE_CHART_URL", chart.url)
    monkeypatch.setenv("ENCORE_CHART_LIMIT", "5")
    get_settings.cache_clear()
    yield get_settings()
    drain_jobs()
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def short_songs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trending-songs")
    return {
        name: write_wav(root / f"{name}.wav", synth_song(seconds, seed=seed), SR)
        for name, seconds, seed in (("first", 2.0, 21), ("second", 2.2, 22), ("third", 1.0, 23))
    }


@pytest.fixture
def catalog(drop_settings, short_songs) -> dict[str, Song]:
    s = drop_settings
    return {
        "test": add_song(s, short_songs["first"], title="Test Song", artist="Tester"),
        "drive": add_song(s, short_songs["second"], title="Midnight Drive", artist="Night Owls"),
        "other": add_song(s, short_songs["third"], title="Quiet Morning", artist="Nobody Famous"),
    }


def _jobs(s) -> list[Job]:
    with session(s.database) as db:
        return list(db.query(Job).order_by(Job.created_at))


def _running_job_threads() -> list:
    from flows import submit

    return [thread for thread in submit._threads.values() if thread.is_alive()]


def _delivered(s, job_ids: list[str]) -> list[str]:
    with session(s.database) as db:
        rows = db.query(Delivery).filter(Delivery.job_id.in_(job_ids)).all()
        return [row.state for row in rows if row.state != "sending"]


def _audio_to(fake, chat_id: int):
    return [c for c in fake.calls_of("sendAudio") if c.int("chat_id") == chat_id]


def test_a_drop_posts_each_chart_song_once_to_subscribed_chats(
    fake, chart, drop_settings, catalog, voice_files, short_songs, tmp_path, monkeypatch
):
    from flows.settings import get_settings
    from flows.steps import separate
    from flows.submit import follow
    from flows.trending import trending_drop

    separated: list[int] = []
    real_separate = separate.engine.separate

    def counting(audio, *args, **kwargs):
        separated.append(audio.shape[-1])
        return real_separate(audio, *args, **kwargs)

    monkeypatch.setattr(separate.engine, "separate", counting)
    monkeypatch.setenv("ENCORE_TRENDING_PRIVATE_CHATS", "1")  # bob's private chat may have them
    get_settings.cache_clear()
    s = get_settings()
    alice = import_voice(s, ADMIN, "alice", list(voice_files["alice"]))
    bob = import_voice(s, f"telegram:{BOBS}", "bob", list(voice_files["bob"]))
    assert subscribe(s, "telegram", str(GROUP), "trending", alice.id, ADMIN)
    assert subscribe(s, "telegram", str(BOBS), "trending", bob.id, f"telegram:{BOBS}")
    assert subscribe(s, "telegram", str(NO_VOICE), "trending", None, "telegram:2")
    chart.serve(
        apple(
            ("TEST SONG", "tester"),
            ("Never Heard Of It", "Ghost Band"),
            ("Midnight  Drive (feat. Someone Else)", "The Night Owls"),
        )
    )

    summary = trending_drop(day=DAY)

    assert summary["date"] == DAY and summary["chart"] == 3
    assert [(m["rank"], m["song_id"]) for m in summary["matched"]] == [
        (1, catalog["test"].id),
        (3, catalog["drive"].id),
    ]
    assert [(m["rank"], m["title"], m["reason"]) for m in summary["missing"]] == [
        (2, "Never Heard Of It", "not in the catalog")
    ]
    assert [(c["chat_id"], "no voice" in c["reason"]) for c in summary["skipped"]] == [
        (str(NO_VOICE), True)
    ]
    assert summary["existing"] == []
    submitted = summary["submitted"]
    assert [(j["chat_id"], j["song_id"]) for j in submitted] == [
        (str(GROUP), catalog["test"].id),
        (str(GROUP), catalog["drive"].id),
        (str(BOBS), catalog["test"].id),
        (str(BOBS), catalog["drive"].id),
    ]

    for job in submitted:
        assert follow(job["job_id"], timeout=240, s=s).state == "succeeded"
    job_ids = [j["job_id"] for j in submitted]
    fake.wait_for(lambda: len(_delivered(s, job_ids)) == 4, 60, "the deliveries")
    assert _delivered(s, job_ids) == ["sent"] * 4
    lengths = sorted(decode(short_songs[n], SR, 2).shape[1] for n in ("first", "second"))
    assert sorted(separated) == lengths  # each song separated once, for both chats

    for chat_id, voice in ((GROUP, "alice"), (BOBS, "bob")):
        titles = sorted(c.params["title"] for c in _audio_to(fake, chat_id))
        assert titles == [f"Midnight Drive ({voice} cover)", f"Test Song ({voice} cover)"]
        # No status message came first: the caption says why the chat gets this.
        captions = sorted(c.params["caption"] for c in _audio_to(fake, chat_id))
        assert captions == [
            f"📈 #1 on the chart: Tester - Test Song — sung by {voice}",
            f"📈 #3 on the chart: Night Owls - Midnight Drive — sung by {voice}",
        ]
    sources = {"Test Song": short_songs["first"], "Midnight Drive": short_songs["second"]}
    for call in fake.calls_of("sendAudio"):
        source = sources[call.params["title"].split(" (")[0]]
        expected = decode(source, SR, 2).shape[1]
        assert int(call.params["duration"]) == round(expected / SR)
        filename, data = call.files["audio"]
        cover = tmp_path / filename
        cover.write_bytes(data)
        assert abs(decode(cover, SR, 2).shape[1] - expected) <= 0.010 * SR
    assert len(fake.calls_of("sendAudio")) == 4  # and none to the chat without a voice
    assert not fake.calls_of("sendMessage")  # nothing failed
    jobs = _jobs(s)
    owners = {f"trending:telegram:{GROUP}", f"trending:telegram:{BOBS}"}
    assert {j.owner for j in jobs} == owners  # the chats', not counted in a person's quota

    # The same day again (a retried schedule): nothing new is made or posted.
    again = trending_drop(day=DAY)
    assert again["submitted"] == []
    assert [j["job_id"] for j in again["existing"]] == job_ids
    assert again["missing"] == summary["missing"] and again["matched"] == summary["matched"]
    assert len(_jobs(s)) == len(jobs)
    # No job runs in this process any more, and every delivery is recorded as sent.
    fake.wait_for(lambda: not _running_job_threads(), 60, "the job threads to end")
    assert _delivered(s, job_ids) == ["sent"] * 4
    assert len(fake.calls_of("sendAudio")) == 4


def test_a_private_chat_subscribed_before_they_were_refused_gets_no_drop(
    drop_settings, chart, catalog, voice_files
):
    from flows.trending import run_drop

    s = drop_settings  # private chats not allowed: the default
    bob = import_voice(s, f"telegram:{BOBS}", "bob", list(voice_files["bob"]))
    assert subscribe(s, "telegram", str(BOBS), "trending", bob.id, f"telegram:{BOBS}")
    chart.serve(apple(("TEST SONG", "tester")))

    summary = run_drop(s, day=DAY)

    assert summary["submitted"] == [] and _jobs(s) == []
    [skipped] = summary["skipped"]
    assert skipped["chat_id"] == str(BOBS) and "private chat" in skipped["reason"]


def test_the_cli_runs_a_drop_and_reports_what_it_could_not_do(
    fake, chart, drop_settings, catalog, voice_files, monkeypatch
):
    from typer.testing import CliRunner

    from flows.cli import app

    s = drop_settings
    pth, index = voice_files["bob"]
    bob = import_voice(s, "telegram:5", "bob", [pth, index])
    subscribe(s, "telegram", str(GROUP), "trending", bob.id, "telegram:5")
    with session(s.database) as db:  # bob's owner made it private to someone else since
        db.get(Voice, bob.id).owner = "telegram:6"
    chart.serve([{"title": "Test Song", "artist": "Tester"}, {"title": "Nope", "artist": "X"}])

    monkeypatch.setenv("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")  # as the CLI sets
    result = CliRunner().invoke(app, ["trending", "run", "--date", DAY, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [m["song_id"] for m in summary["matched"]] == [catalog["test"].id]
    assert [m["title"] for m in summary["missing"]] == ["Nope"]
    assert summary["submitted"] == [] and summary["existing"] == []
    assert "no longer available" in summary["skipped"][0]["reason"]

    result = CliRunner().invoke(app, ["trending", "run", "--date", DAY])
    assert result.exit_code == 0, result.output
    shown = " ".join(result.output.split())  # rich wraps lines to the terminal's width
    assert "Nope" in shown and "0 covers submitted, 0 already submitted today" in shown
    assert f"Skipped telegram chat {GROUP}: its voice is no longer available" in shown
    assert not _jobs(s)

    result = CliRunner().invoke(app, ["trending", "run", "--date", "friday"])
    assert result.exit_code == 1
    assert "must look like 2025-01-31" in " ".join(result.output.split())

    chart.body = b"oops"
    result = CliRunner().invoke(app, ["trending", "run"])
    assert result.exit_code == 1
    assert "is not JSON" in result.output


def test_a_chat_that_cannot_be_submitted_to_costs_the_others_nothing(
    drop_settings, chart, catalog, voice_files, monkeypatch
):
    from flows import trending
    from flows.errors import UserError

    s = drop_settings
    alice = import_voice(s, ADMIN, "alice", list(voice_files["alice"]))
    subscribe(s, "telegram", str(GROUP), "trending", alice.id, ADMIN)
    subscribe(s, "discord", "555", "trending", alice.id, ADMIN)
    chart.serve([{"title": "Test Song", "artist": "Tester"}])
    made = []

    def submit_cover(owner, song_id, voice_id, reply_to, idempotency_key, s, quota):
        if reply_to["platform"] == "telegram":
            raise ConnectionError("the Prefect API is down")
        made.append((owner, reply_to, idempotency_key))
        return "job-1"

    monkeypatch.setattr(trending, "submit_cover", submit_cover)
    summary = trending.run_drop(s, DAY)
    assert [e["chat_id"] for e in summary["errors"]] == [str(GROUP)]
    assert "the Prefect API is down" in summary["errors"][0]["error"]
    assert [j["job_id"] for j in summary["submitted"]] == ["job-1"]
    [(owner, reply_to, key)] = made
    assert owner == "trending:discord:555"
    assert key == f"trending:{DAY}:discord:555:{catalog['test'].id}"
    assert reply_to["channel_id"] == "555" and "status_message_id" not in reply_to
    assert reply_to["headline"] == "📈 #1 on the chart: Tester - Test Song — sung by alice"
    with pytest.raises(UserError, match="1 covers of drop 2026-03-06 could not be submitted"):
        trending.trending_drop(day=DAY)


def test_a_drop_past_the_operators_budget_skips_the_rest_and_fails_nothing(
    drop_settings, chart, catalog, voice_files, monkeypatch
):
    from flows import trending
    from flows.settings import get_settings
    from flows.users import create_counted_job

    monkeypatch.setenv("ENCORE_TRENDING_COVERS_PER_DAY", "2")
    get_settings.cache_clear()
    s = get_settings()
    alice = import_voice(s, ADMIN, "alice", list(voice_files["alice"]))
    subscribe(s, "telegram", str(GROUP), "trending", alice.id, ADMIN)
    chart.serve([{"title": "Test Song", "artist": "Tester"}])
    for chat in ("-1", "-2"):  # today's budget went on other chats' drops
        create_counted_job(s, "cover", f"trending:telegram:{chat}", {})
    summary = trending.trending_drop(day=DAY)  # skipped, not failed: the run does not raise
    assert summary["submitted"] == [] and summary["errors"] == []
    [skipped] = summary["skipped"]
    assert skipped["chat_id"] == str(GROUP)
    assert skipped["reason"].startswith("the budget of 2 drop covers a day is spent")
    assert [j.owner for j in _jobs(s)] == ["trending:telegram:-1", "trending:telegram:-2"]


def test_forgetting_an_admin_removes_the_drop_covers_sung_in_their_voice(
    fake, chart, drop_settings, catalog, voice_files
):
    from flows.db import ChatSubscription
    from flows.jobs import create_job
    from flows.storage import open_storage
    from flows.submit import follow
    from flows.trending import trending_drop
    from flows.users import forget_user

    s = drop_settings
    alice = import_voice(s, ADMIN, "alice", list(voice_files["alice"]))
    bob = import_voice(s, f"telegram:{BOBS}", "bob", list(voice_files["bob"]))
    subscribe(s, "telegram", str(GROUP), "trending", alice.id, ADMIN)
    subscribe(s, "telegram", str(BOBS_GROUP), "trending", bob.id, f"telegram:{BOBS}")
    chart.serve([{"title": "Quiet Morning", "artist": "Nobody Famous"}])  # the shortest song
    summary = trending_drop(day=DAY)
    by_chat = {j["chat_id"]: j["job_id"] for j in summary["submitted"]}
    for job_id in by_chat.values():
        assert follow(job_id, timeout=240, s=s).state == "succeeded"
    fake.wait_for(lambda: len(_delivered(s, list(by_chat.values()))) == 2, 60, "the deliveries")
    storage = open_storage(s.storage)
    uris = {chat: _result_uri(s, job_id) for chat, job_id in by_chat.items()}
    assert all(storage.exists(uri) for uri in uris.values())
    # Another chat's cover in alice's voice, still waiting to run.
    waiting = create_job(
        s, "cover", "trending:discord:555", {"song_id": catalog["other"].id, "voice_id": alice.id}
    )

    gone = forget_user(s, ADMIN)

    assert (gone.voices, gone.jobs) == (1, 2)
    with session(s.database) as db:
        assert db.get(Job, by_chat[str(GROUP)]) is None  # sung by alice: gone, with its file
        assert db.get(Delivery, by_chat[str(GROUP)]) is None
        assert db.get(Job, by_chat[str(BOBS_GROUP)]).state == "succeeded"  # bob's stays
        left = db.get(Job, waiting)  # cancelled; its row kept for the flow, naming no one
        assert (left.state, left.owner, left.params) == ("cancelled", "forgotten", {})
        subs = {sub.chat_id: sub for sub in db.query(ChatSubscription)}
        assert subs[str(GROUP)].created_by is None  # the chat's, it stays
    assert not storage.exists(uris[str(GROUP)])
    assert storage.exists(uris[str(BOBS_GROUP)])


def _result_uri(s, job_id: str) -> str:
    with session(s.database) as db:
        return db.get(Job, job_id).result["uri"]


# ------------------------------------------------------------------------------------------
# An unprompted cover's caption, on both platforms


class RecordingApi:
    """Stands in for a courier's HTTP client (`Courier.api_class`); records every call."""

    calls: list[tuple] = []

    def __init__(self, s):
        pass

    def call(self, *args, **kwargs):
        RecordingApi.calls.append(args)
        return {"message_id": 7, "id": "7"}

    def close(self):
        pass


def _ended_cover(s, song_wav, reply_to: dict) -> str:
    from flows.jobs import create_job, update_job
    from flows.storage import open_storage

    uri = open_storage(s.storage).put(song_wav, f"covers/{len(RecordingApi.calls)}/c.wav")
    job_id = create_job(s, "cover", "trending:x:1", {}, reply_to=reply_to)
    result = {"uri": uri, "filename": "c.wav", "duration": 4.0}
    update_job(s, job_id, state="succeeded", step="done", progress=1.0, result=result)
    return job_id


def _posted(courier_class, s, song_wav, reply_to: dict, monkeypatch) -> list[tuple]:
    from flows.chat import deliver

    monkeypatch.setattr(courier_class, "api_class", RecordingApi)
    monkeypatch.setattr(RecordingApi, "calls", [])
    job_id = _ended_cover(s, song_wav, reply_to)
    assert deliver(s, job_id, courier=courier_class(s, job_id, reply_to))
    return RecordingApi.calls


def test_an_unprompted_telegram_cover_has_its_headline_as_the_caption(
    settings, song_wav, monkeypatch
):
    from flows.chat.telegram import TelegramCourier

    head = "📈 #1 on the chart: Tester - Test Song — sung by alice"
    to = {"platform": "telegram", "chat_id": GROUP, "headline": head}
    [(method, data, files)] = _posted(TelegramCourier, settings, song_wav, to, monkeypatch)
    assert method == "sendAudio" and data["caption"] == head and "audio" in files

    # Over Telegram's 1024 (UTF-16 units, an emoji being two): cut between characters.
    to["headline"] = "📈 " + "🎤" * 600
    [(_, data, _)] = _posted(TelegramCourier, settings, song_wav, to, monkeypatch)
    assert data["caption"] == "📈 " + "🎤" * 510 + "…"
    assert len(data["caption"].encode("utf-16-le")) // 2 == 1024

    # A job asked for in the chat has its status message: no caption, as before.
    prompted = {**to, "status_message_id": 45, "reply_to_message_id": 44}
    calls = _posted(TelegramCourier, settings, song_wav, prompted, monkeypatch)
    [(_, data, _)] = [c for c in calls if c[0] == "sendAudio"]
    assert "caption" not in data
    assert calls[-1][0] == "editMessageText"  # ✅ Done, in the status message


def test_an_unprompted_discord_cover_has_its_headline_as_the_channel_post(
    settings, song_wav, monkeypatch
):
    from flows.chat.discord import DiscordCourier

    head = "📈 #1 on the chart: Tester - Test Song — sung by alice"
    to = {"platform": "discord", "chat_id": "555", "channel_id": "555", "headline": head}
    [(verb, path, body, files)] = _posted(DiscordCourier, settings, song_wav, to, monkeypatch)
    assert (verb, path) == ("POST", "/channels/555/messages")
    assert body == {"content": head, "allowed_mentions": {"parse": [], "users": []}} and files

    # From an interaction, the deferred response is the status message: as before.
    prompted = {
        **to,
        "application_id": "9",
        "interaction_token": "tok",
        "token_at": time.time(),
        "user_id": "3",
    }
    calls = _posted(DiscordCourier, settings, song_wav, prompted, monkeypatch)
    [(_, path, body, _)] = [c for c in calls if c[0] == "POST"]
    assert path == "/webhooks/9/tok?wait=true"
    assert body == {"content": "🎧 c", "allowed_mentions": {"parse": []}}
