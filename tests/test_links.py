"""Songs and voices from a link, and the chart resolver, against a real local HTTP server.

`tests/media_server.py` serves media pages and files over real HTTP on 127.0.0.1; yt-dlp reads
them with its generic extractor as it would read a site. The operator's allowance names only
that server's address and port (`ENCORE_LINK_ALLOW_PRIVATE`), so a second local server stands
for "a private address": a redirect to it must be refused, though it would answer.
"""

from __future__ import annotations

import json
import threading
import zipfile

import pytest

from flows.chat import links_text as text
from flows.db import Song, session
from flows.jobs import step_runs
from flows.links import LinkError, fetch_song, normalize, public
from flows.submit import follow, submit_cover, submit_import
from flows.voices import get_voice, import_voice
from tests.media_server import (
    MediaServer,
    audio_page,
    file,
    json_ld,
    page,
    query,
    redirect,
    stall,
)


@pytest.fixture
def other(song_wav):
    """A second local server: "a private address" the allowance does not name."""
    with MediaServer({"/song.wav": file(song_wav, "audio/wav")}) as srv:
        yield srv


@pytest.fixture
def media(song_wav, other, voice_files, tmp_path):
    with MediaServer() as srv:
        pth, index = voice_files["alice"]
        model = tmp_path / "Alice_Model.zip"
        with zipfile.ZipFile(model, "w") as zf:
            zf.write(pth, "alice.pth")
            zf.write(index, "added_IVF5_Flat_nprobe_1_alice_v2.index")
        srv.routes.update(
            {
                "/song.wav": file(song_wav, "audio/wav"),
                "/same-bytes.wav": file(song_wav, "audio/wav"),
                "/song.html": audio_page("Tester - Link Song", "/song.wav"),
                "/album.html": audio_page("An Album", "/song.wav", "/same-bytes.wav"),
                "/three-hours.html": page(
                    "Three Hours",
                    head=json_ld(
                        {
                            "@context": "https://schema.org",
                            "@type": "AudioObject",
                            "name": "Three Hours",
                            "contentUrl": srv.url("/song.wav"),
                            "duration": "PT3H",
                        }
                    ),
                ),
                "/blog.html": page("A blog post", "<p>No music here, just words.</p>"),
                "/slow.html": stall(srv),
                "/away": redirect(other.url("/song.wav")),
                "/models/Alice_Model.zip": file(model, "application/zip"),
                "/find": _finder(srv),
            }
        )
        yield srv


def _finder(srv):
    """The operator's song source for the resolver: a page per known "artist - title"."""

    def route(req):
        q = query(req).get("q", "")
        if q == "Tester - Chart Song":
            audio_page(q, "/song.wav")(req)
        else:
            page(f"Search: {q}", "<p>Nothing found.</p>")(req)

    return route


@pytest.fixture
def linked(settings, media, monkeypatch):
    """Settings with link sources on, allowing only the media server's address and port."""
    from flows.settings import get_settings

    monkeypatch.setenv("ENCORE_LINK_SOURCES", "true")
    monkeypatch.setenv("ENCORE_LINK_ALLOW_PRIVATE", json.dumps([f"127.0.0.1:{media.port}"]))
    monkeypatch.setenv("ENCORE_LINK_SOCKET_TIMEOUT_S", "0.5")
    monkeypatch.setenv("ENCORE_LINK_DEADLINE_S", "20")
    get_settings.cache_clear()
    return get_settings()


def _songs(s) -> list[Song]:
    with session(s.database) as db:
        return list(db.query(Song))


# ------------------------------------------------------------------------------------------
# Songs


def test_a_link_becomes_a_cover_and_is_fetched_once(linked, media, voice_files):
    pth, index = voice_files["alice"]
    voice = import_voice(linked, "u1", "alice", [pth, index])
    link = media.url("/song.html")
    job = follow(submit_cover("u1", None, voice.id, {}, s=linked, link=link), s=linked)
    assert job.state == "succeeded", job.reason
    assert [r.step for r in step_runs(linked, job.id)][:2] == ["fetching", "resolving"]
    (song,) = _songs(linked)
    assert (song.artist, song.title, song.owner) == ("Tester", "Link Song", "u1")
    assert song.source_url == normalize(link)  # marked fetched, and from where
    assert job.result["song_id"] == song.id
    assert job.result["filename"] == "Tester - Link Song (alice cover).mp3"

    hits = len(media.hits)
    assert fetch_song(linked, link, "u1").id == song.id  # cached by link: not fetched again
    assert len(media.hits) == hits
    assert fetch_song(linked, link, "u2").owner == "u2"  # another user's is their own


def test_the_same_bytes_from_another_link_are_the_same_song(linked, media):
    first = fetch_song(linked, media.url("/song.wav"), "u1")
    second = fetch_song(linked, media.url("/same-bytes.wav"), "u1")
    assert second.id == first.id  # cached by content hash too
    assert len(_songs(linked)) == 1


def test_one_download_per_link_at_a_time(linked, media):
    link = media.url("/song.html")
    results: list = []

    def fetch():
        results.append(fetch_song(linked, link, "u1"))

    threads = [threading.Thread(target=fetch) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({song.id for song in results}) == 1 and len(results) == 3
    assert media.hits.count("/song.html") == 1  # the others found the first one's song


@pytest.mark.parametrize(
    "path, sentence",
    [
        ("/album.html", text.PLAYLIST),
        ("/three-hours.html", text.too_long(3 * 3600, 15 * 60)),
        ("/blog.html", text.NO_AUDIO),
        ("/slow.html", text.TIMEOUT),
        ("/away", text.PRIVATE),
    ],
)
def test_bad_links_are_refused_with_one_sentence(linked, media, other, path, sentence):
    with pytest.raises(LinkError) as refused:
        fetch_song(linked, media.url(path), "u1")
    assert refused.value.message == sentence
    assert "\n" not in sentence and sentence.endswith(".")
    assert _songs(linked) == []
    assert other.hits == []  # the private address was never asked


def test_a_refused_link_fails_the_cover_job_with_its_sentence(linked, media, voice_files):
    pth, index = voice_files["alice"]
    voice = import_voice(linked, "u1", "alice", [pth, index])
    job = follow(
        submit_cover("u1", None, voice.id, {}, s=linked, link=media.url("/album.html")), s=linked
    )
    assert (job.state, job.reason) == ("failed", text.PLAYLIST)


def test_a_private_address_itself_and_a_file_over_the_cap_are_refused(
    linked, media, other, monkeypatch
):
    with pytest.raises(LinkError, match="private or local network"):
        fetch_song(linked, other.url("/song.wav"), "u1")
    assert other.hits == []
    capped = linked.model_copy(update={"link_max_song_bytes": 1000})
    with pytest.raises(LinkError, match="over the 1 MB limit|limit for links"):
        fetch_song(capped, media.url("/song.wav"), "u1")
    assert _songs(linked) == []


def test_links_are_off_unless_the_operator_enables_them(settings, media, voice_files):
    with pytest.raises(LinkError) as refused:
        fetch_song(settings, media.url("/song.wav"), "u1")
    assert refused.value.message == text.DISABLED
    with pytest.raises(LinkError):
        submit_cover("u1", None, "v", {}, s=settings, link=media.url("/song.wav"))
    assert media.hits == []


def test_what_counts_as_a_public_address():
    import ipaddress

    for addr in ("10.1.2.3", "192.168.0.1", "172.16.5.5", "127.0.0.1", "169.254.169.254",
                 "100.64.0.1", "0.0.0.0", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1",
                 "2002:7f00:1::1", "224.0.0.1"):  # fmt: skip
        assert not public(ipaddress.ip_address(addr)), addr
    for addr in ("8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"):
        assert public(ipaddress.ip_address(addr)), addr
    with pytest.raises(LinkError, match="web link"):
        normalize("file:///etc/passwd")


# ------------------------------------------------------------------------------------------
# Voices


def test_a_voice_from_a_link_reaches_the_same_state_as_an_upload(
    linked, media, voice_files, tmp_path
):
    """A 60 MB model (a real index over 20,000 vectors) streamed from the server."""
    from tests.tiny_rvc import build_index

    pth, _ = voice_files["alice"]
    index = build_index(tmp_path / "big", name="alice", vectors=20_000, seed=11)
    big = tmp_path / "Alice_Big.zip"
    with zipfile.ZipFile(big, "w") as zf:  # stored: the download is the full 60 MB
        zf.write(pth, "alice.pth")
        zf.write(index, index.name)
    assert big.stat().st_size > 60 * 10**6
    media.routes["/models/Alice_Big.zip"] = file(big, "application/zip")
    job = follow(
        submit_import("u1", "Alice", [], s=linked, links=[media.url("/models/Alice_Big.zip")]),
        s=linked,
    )
    assert job.state == "succeeded", job.reason
    assert [r.step for r in step_runs(linked, job.id)] == ["downloading", "importing"]
    fetched = get_voice(linked, "u1", "Alice")
    uploaded = import_voice(linked, "u2", "Alice", [big])
    fields = ("version", "sample_rate", "f0", "public", "source")
    assert [getattr(fetched, f) for f in fields] == [getattr(uploaded, f) for f in fields]
    assert fetched.index_uri is not None and fetched.pth_uri


def test_a_model_link_streamed_past_the_cap_is_cut_off(linked, media, tmp_path):
    from flows.links import fetch_model

    def endless(req):  # no length announced: the cap must stop it while it streams
        req.send_response(200)
        req.send_header("Content-Type", "application/octet-stream")
        req.send_header("Transfer-Encoding", "chunked")
        req.end_headers()
        block = bytes(1 << 20)
        for _ in range(60):  # 60 MB of zeros, unless the client hangs up
            try:
                req.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
            except ConnectionError:
                return
        req.wfile.write(b"0\r\n\r\n")

    media.routes["/big/model.pth"] = endless
    capped = linked.model_copy(update={"link_max_model_bytes": 8 * 2**20})
    with pytest.raises(LinkError, match="over the 8 MB limit"):
        fetch_model(capped, media.url("/big/model.pth"), tmp_path / "got")
    assert sum(p.stat().st_size for p in (tmp_path / "got").glob("*")) <= 8 * 2**20
    with pytest.raises(LinkError) as refused:
        fetch_model(linked, media.url("/blog.html"), tmp_path / "page")
    assert refused.value.message == text.NOT_A_MODEL


# ------------------------------------------------------------------------------------------
# The resolver


def test_the_resolver_fetches_missing_chart_songs_into_the_catalog(
    linked, media, tmp_path, monkeypatch
):
    from flows.settings import get_settings
    from flows.trending import run_drop

    chart = tmp_path / "chart.json"
    chart.write_text(
        json.dumps(
            [
                {"artist": "Tester", "title": "Chart Song"},
                {"artist": "Nobody", "title": "Unknown Tune"},
            ]
        )
    )
    monkeypatch.setenv("ENCORE_CHART_URL", str(chart))
    monkeypatch.setenv("ENCORE_RESOLVER_URL_TEMPLATE", media.url("/find?q={query}"))
    get_settings.cache_clear()
    s = get_settings()
    summary = run_drop(s, "2026-03-06")
    assert [(m["rank"], m["song"]) for m in summary["fetched"]] == [(1, "Tester - Chart Song")]
    assert [m["rank"] for m in summary["matched"]] == [1]
    (missing,) = summary["missing"]
    assert missing["rank"] == 2 and text.NO_AUDIO in missing["reason"]
    (song,) = _songs(s)
    assert (song.owner, song.artist, song.title) == (None, "Tester", "Chart Song")
    assert song.source_url == normalize(media.url("/find?q=Tester%20-%20Chart%20Song"))

    again = run_drop(s, "2026-03-07")  # now in the catalog: matched, not fetched again
    assert again["fetched"] == [] and [m["rank"] for m in again["matched"]] == [1]
    assert media.hits.count("/song.wav") == 1 or len(_songs(s)) == 1


# ------------------------------------------------------------------------------------------
# Through the Telegram bot (the fake Bot API of tests/fake_telegram.py)


@pytest.fixture
def telegram(linked, monkeypatch):
    from flows import submit
    from flows.settings import get_settings
    from tests.fake_telegram import BotProcess, FakeTelegram

    fake = FakeTelegram().start()
    monkeypatch.setenv("ENCORE_TELEGRAM_TOKEN", fake.token)
    monkeypatch.setenv("ENCORE_TELEGRAM_API_URL", fake.api_url)
    monkeypatch.setenv("ENCORE_TELEGRAM_FILE_URL", fake.file_url)
    monkeypatch.setenv("ENCORE_STATUS_EDIT_INTERVAL_S", "0.2")
    get_settings.cache_clear()
    bot = BotProcess(get_settings()).start()
    yield fake
    bot.stop()
    for job_id, thread in list(submit._threads.items()):
        thread.join(120)
        submit._threads.pop(job_id, None)
    fake.stop()


def test_import_and_cover_by_link_in_telegram(telegram, linked, media):
    fake = telegram
    asked = fake.send_text("/import")
    hint = fake.wait_for(lambda: fake.replies_to(asked), 30, "a reply")
    assert hint[-1]["text"].endswith(text.IMPORT_BY_LINK)
    sent = fake.send_text(f"/import {media.url('/models/Alice_Model.zip')} Alice")
    fake.wait_for(
        lambda: [m for m in fake.replies_to(sent) if m["text"].startswith("📦 Importing")],
        30,
        "the status message",
    )
    said = fake.wait_for(
        lambda: [t for t in fake.sent_texts(1) if t.startswith("✅ Imported")], 60, "import"
    )
    assert said[0].startswith("✅ Imported “Alice” (RVC v2, 40 kHz, with its index).")
    assert get_voice(linked, "telegram:1", "Alice") is not None

    sent = fake.send_text(f"/cover {media.url('/away')}")
    fake.wait_for(
        lambda: (
            any(text.PRIVATE in t for t in fake.sent_texts(1))
            or any(
                text.PRIVATE in e
                for r in fake.replies_to(sent)
                for e in fake.edits(1, r["message_id"])
            )
        ),
        60,
        "the refusal",
    )
    bad = fake.send_text("/cover ftp://example.org/song.mp3")
    replies = fake.wait_for(lambda: fake.replies_to(bad), 30, "a reply")
    assert replies[-1]["text"].startswith("No song in the catalog")  # not a web link: a name


# ------------------------------------------------------------------------------------------
# The command line


def test_encore_voices_import_and_cover_take_links(linked, media):
    from tests.conftest import run_cli

    link = media.url("/models/Alice_Model.zip")
    done = run_cli(linked, "voices", "import", link)
    assert done.returncode == 0, done.stderr
    assert "Imported voice Alice_Model (RVC v2, 40 kHz, with index)" in " ".join(
        done.stdout.split()
    )
    refused = run_cli(linked, "cover", media.url("/album.html"), "--voice", "Alice_Model")
    assert refused.returncode == 1
    assert " ".join(refused.stderr.split()) == f"Error: {text.PLAYLIST}"


# ------------------------------------------------------------------------------------------
# /charts: a chart song missing from the catalog, fetched by the resolver, then covered


def test_a_chart_song_missing_from_the_catalog_is_fetched_then_covered(
    linked, media, voice_files, tmp_path, monkeypatch
):
    from bots import buttons, chart_menu, submission
    from bots.messages import JobPlan, Who
    from flows import charts
    from flows.settings import get_settings

    chart = tmp_path / "chart.json"
    chart.write_text(json.dumps([{"artist": "Tester", "title": "Chart Song"}]))
    monkeypatch.setenv("ENCORE_CHARTS", json.dumps({"top": str(chart)}))
    monkeypatch.setenv("ENCORE_RESOLVER_URL_TEMPLATE", media.url("/find?q={query}"))
    get_settings.cache_clear()
    charts.forget_cached()
    s = get_settings()
    ada = Who("telegram", "1", "1", "Ada")
    pth, index = voice_files["alice"]
    import_voice(s, ada.owner, "alice", [pth, index])
    listing = chart_menu.charts(s, ada)
    (press,) = [b.data for row in listing.buttons for b in row if b.data.startswith("cc|")]
    plan = buttons.pressed(s, ada, press)
    assert isinstance(plan, JobPlan) and plan.chart == ("Tester", "Chart Song")
    job_id, fresh = submission.submit_plan(s, plan, "test:chart-press", {})
    job = follow(job_id, s=s)
    assert job.state == "succeeded", job.reason
    (song,) = _songs(s)
    assert (song.owner, song.artist, song.title) == (None, "Tester", "Chart Song")
    assert song.source_url and job.result["filename"] == "Tester - Chart Song (alice cover).mp3"
    after = chart_menu.charts(s, ada)  # now in the catalog: ready, with the usual song button
    assert any(b.data.startswith("cs|") for row in after.buttons for b in row)
