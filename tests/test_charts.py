"""Chart providers: Deezer's public API replayed from recorded responses, and the configured
charts (several, a default, kept in memory a while).

The recorded responses (`tests/charts/deezer/`) are served by a real HTTP server on 127.0.0.1
that answers as api.deezer.com does: pages with `next`, and its errors as JSON with HTTP 200.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from flows import charts
from flows.charts import ChartEntry, ChartError, read_chart

RECORDED = Path(__file__).with_name("charts") / "deezer"
DEEZER = "https://api.deezer.com"


class DeezerReplay:
    """api.deezer.com from recordings: `/chart/0/tracks` (two pages), any other id "no data";
    `quota` answers the next N requests with the quota error (HTTP 200, as Deezer does)."""

    def __init__(self):
        self.quota = 0
        self.requests: list[str] = []
        self.next_host: str | None = None  # rewrite `next` to point at another host
        replay = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                replay.requests.append(self.path)
                self.send(replay.answer(self.path))

            def send(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def answer(self, path: str) -> bytes:
        if self.quota > 0:
            self.quota -= 1
            return (RECORDED / "error_quota.json").read_bytes()
        url = urlparse(path)
        if url.path != "/chart/0/tracks":
            return (RECORDED / "error_no_data.json").read_bytes()
        index = parse_qs(url.query).get("index", ["0"])[0]
        name = "chart_0_tracks.json" if index == "0" else f"chart_0_tracks_index_{index}.json"
        body = (RECORDED / name).read_text()
        return body.replace(DEEZER, self.next_host or self.base).encode()

    def __enter__(self) -> DeezerReplay:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def deezer(monkeypatch):
    from tenacity import wait_none

    monkeypatch.setattr("flows.charts.RETRY_WAIT", wait_none())
    charts.forget_cached()
    with DeezerReplay() as server:
        yield server
    charts.forget_cached()


def test_a_deezer_chart_is_read_page_by_page_up_to_the_limit(deezer):
    entries = read_chart("deezer:chart/0", limit=5, deezer_api_url=deezer.base)
    assert [(e.rank, e.artist, e.title) for e in entries] == [
        (1, "Daft Punk", "Harder, Better, Faster, Stronger"),
        (2, "Nova Marée", "Café Déjà Vu"),
        (3, "Aurora Lane", "River of Lights (feat. Jonah Vale)"),
        (4, "The Lanterns", "Midnight River"),
        (5, "Los Faros", "Señorita del Mar"),
    ]
    assert entries[1].link == "https://www.deezer.com/track/2105158337"  # for a resolver
    assert deezer.requests == ["/chart/0/tracks?limit=5", "/chart/0/tracks?limit=5&index=3"]
    deezer.requests.clear()
    assert len(read_chart("deezer:chart/0", limit=2, deezer_api_url=deezer.base)) == 2
    assert deezer.requests == ["/chart/0/tracks?limit=2"]  # the first page had enough


def test_deezer_errors_arrive_with_http_200_quota_is_retried_the_rest_is_not(deezer):
    deezer.quota = 2
    entries = read_chart("deezer:chart/0", limit=3, deezer_api_url=deezer.base)
    assert [e.rank for e in entries] == [1, 2, 3]
    assert len(deezer.requests) == 3  # two quota errors, then the page

    deezer.requests.clear()
    deezer.quota = 10
    with pytest.raises(ChartError, match="unavailable: Exception 4: Quota limit exceeded"):
        read_chart("deezer:chart/0", limit=3, deezer_api_url=deezer.base)
    assert len(deezer.requests) == charts.ATTEMPTS

    deezer.quota, deezer.requests = 0, []
    with pytest.raises(ChartError, match="DataException 800: no data"):
        read_chart("deezer:chart/12345", limit=3, deezer_api_url=deezer.base)
    assert len(deezer.requests) == 1  # a refusal is not retried
    with pytest.raises(ChartError, match="deezer:chart/<id>"):
        read_chart("deezer:album/1", deezer_api_url=deezer.base)


def test_a_next_page_on_another_host_is_not_followed(deezer):
    deezer.next_host = "http://127.0.0.2:9"
    entries = read_chart(f"{deezer.base}/chart/0/tracks?limit=5", limit=5)
    assert [e.rank for e in entries] == [1, 2, 3]
    assert len(deezer.requests) == 1


def test_several_charts_a_default_and_a_cached_copy_when_the_provider_fails(
    deezer, tmp_path, monkeypatch
):
    from flows.settings import Settings

    us = tmp_path / "us.json"
    us.write_text(json.dumps([{"title": "Flowers", "artist": "Miley Cyrus"}]))
    s = Settings(
        data_dir=tmp_path / "data",
        charts={"World": "deezer:chart/0", "us": str(us), "bad name!": "x"},
        chart_default="us",
        chart_limit=4,
        deezer_api_url=deezer.base,
    )
    assert charts.configured(s) == {"world": "deezer:chart/0", "us": str(us)}
    assert charts.default_name(s) == "us"
    assert charts.current(s) == ("us", [ChartEntry(1, "Flowers", "Miley Cyrus")])
    name, entries = charts.current(s, "WORLD")
    assert name == "world" and len(entries) == 4 and len(deezer.requests) == 2
    assert charts.current(s, "world")[1] == entries and len(deezer.requests) == 2  # cached
    with pytest.raises(ChartError, match="no chart called 'fr'; the charts: world, us"):
        charts.current(s, "fr")

    expired = s.model_copy(update={"chart_cache_s": 0.0})
    deezer.quota = 10  # the provider is down: the copy read before is used
    assert charts.current(expired, "world")[1] == entries
    charts.forget_cached()
    with pytest.raises(ChartError, match="Quota limit exceeded"):
        charts.current(expired, "world")

    # ENCORE_CHART_URL alone is the chart "top", and what the drops read
    legacy = Settings(data_dir=tmp_path / "data", chart_url=str(us))
    assert charts.configured(legacy) == {"top": str(us)}
    assert charts.drop_source(legacy) == str(us)
    assert charts.drop_source(s) == str(us)  # no ENCORE_CHART_URL: the default chart


def test_chart_entries_match_catalog_songs_whatever_their_accents(deezer):
    from flows.db import Song

    entries = read_chart("deezer:chart/0", limit=5, deezer_api_url=deezer.base)
    catalog = [
        Song(id="a" * 32, title="Cafe Deja Vu", artist="Nova Maree"),
        Song(id="b" * 32, title="River of Lights", artist="Aurora Lane"),
        Song(id="c" * 32, title="Senorita del Mar", artist="LOS FAROS"),
    ]
    matched, missing = charts.match(entries, catalog)
    assert [(m.entry.rank, m.song.id[0]) for m in matched] == [(2, "a"), (3, "b"), (5, "c")]
    assert [m.entry.rank for m in missing] == [1, 4]
    assert missing[0].entry.link.startswith("https://www.deezer.com/track/")
    assert entries[1].key == ChartEntry(9, "CAFE DEJA VU", "nova marée").key  # folded
    assert entries[1].key != entries[2].key


def test_encore_charts_prints_the_chart_with_what_is_ready_marked(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from flows.cli import app
    from flows.db import Song, session
    from flows.settings import get_settings

    chart = tmp_path / "chart.json"
    chart.write_text(
        json.dumps([{"title": "Flowers", "artist": "Miley Cyrus"}, {"title": "Solo", "artist": ""}])
    )
    monkeypatch.setenv("ENCORE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ENCORE_CHARTS", json.dumps({"us": str(chart), "world": "deezer:chart/0"}))
    get_settings.cache_clear()
    charts.forget_cached()
    with session(get_settings().database) as db:
        db.add(
            Song(title="Flowers", artist="Miley Cyrus", content_hash="f" * 64, uri="x", duration=3)
        )
    try:
        shown = CliRunner().invoke(app, ["charts", "--json"])
        assert shown.exit_code == 0, shown.output
        got = json.loads(shown.output)
        assert got["chart"] == "us"
        assert [(e["rank"], e["title"], e["ready"]) for e in got["entries"]] == [
            (1, "Flowers", True),
            (2, "Solo", False),
        ]
        table = CliRunner().invoke(app, ["charts", "us"])
        assert "1 of 2 ready to cover" in table.output and "Other charts: world." in table.output
        missing = CliRunner().invoke(app, ["charts", "mars"])
        assert missing.exit_code == 1 and "no chart called 'mars'" in missing.output
    finally:
        get_settings.cache_clear()
        charts.forget_cached()
