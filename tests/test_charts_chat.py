"""`/charts`, `/songs` and a new user's first cover, through the handlers (`bots.chart_menu`,
`bots.catalog_menu`, `bots.songs`) as a platform calls them
(SQLite, songs as catalog rows, the chart as a local file; no job runs here: the end-to-end
runs through the fake Telegram and Discord are in test_telegram.py and test_discord.py)."""

from __future__ import annotations

import json

import pytest

from bots import buttons, catalog_menu, chart_menu, help, songs
from bots.messages import JobPlan, Reply, Who
from flows import api, charts
from flows.chat import charts_text as text
from flows.db import Song, session
from flows.voices import import_voice

ADA = Who("telegram", "1", "1", "Ada")
BOB = Who("telegram", "2", "-100", "Bob", private=False)


def _add(s, title: str, artist: str, n: int) -> str:
    with session(s.database) as db:
        song = Song(
            title=title,
            artist=artist,
            content_hash=f"{n:064x}",
            uri=f"file:///nowhere/{n}.wav",
            duration=3.0,
        )
        db.add(song)
        db.flush()
        return song.id


@pytest.fixture
def chat(settings, tmp_path, monkeypatch):
    """Two charts (a Deezer-shaped one, a plain list) and a catalog holding some of them."""
    from flows.settings import get_settings

    world = tmp_path / "world.json"
    world.write_text(
        json.dumps(
            {
                "data": [
                    {"title": "Café Déjà Vu", "artist": {"name": "Nova Marée"}},
                    {"title": "Harder, Better, Faster, Stronger", "artist": {"name": "Daft Punk"}},
                    {"title": "Midnight River", "artist": {"name": "The Lanterns"}},
                ],
                "total": 3,
            }
        )
    )
    us = tmp_path / "us.json"
    us.write_text(json.dumps([{"title": "Flowers", "artist": "Miley Cyrus"}]))
    monkeypatch.setenv("ENCORE_CHARTS", json.dumps({"world": str(world), "us": str(us)}))
    get_settings.cache_clear()
    charts.forget_cached()
    s = get_settings()
    ids = {
        "cafe": _add(s, "Cafe Deja Vu", "Nova Maree", 1),
        "river": _add(s, "Midnight River", "The Lanterns", 2),
    }
    yield s, ids
    charts.forget_cached()


def _data(reply: Reply) -> list[str]:
    return [b.data for row in reply.buttons for b in row]


def test_charts_lists_the_chart_marks_what_is_ready_and_binds_its_buttons(chat, voice_files):
    s, ids = chat
    pth, index = voice_files["alice"]
    import_voice(s, ADA.owner, "alice", [pth, index])

    listing = chart_menu.charts(s, ADA, "")
    lines = listing.text.splitlines()
    assert lines[0] == "📈 world: the top 3 right now"
    assert lines[1:4] == [
        "1. ✅ Nova Marée - Café Déjà Vu",
        "2. ▫️ Daft Punk - Harder, Better, Faster, Stronger",
        "3. ✅ The Lanterns - Midnight River",
    ]
    assert lines[4] == text.CHART_PRESS.format(voice="alice")
    labels = [b.label for row in listing.buttons for b in row]
    assert labels == ["1. Café Déjà Vu", "3. Midnight River", "📈 us"]  # no button for #2
    cover, _other, switch = _data(listing)

    # Another member's press does nothing; Ada's own makes a cover in her default voice.
    assert buttons.pressed(s, BOB, cover).toast == "This button is for Ada."
    plan = buttons.pressed(s, ADA, cover)
    assert isinstance(plan, JobPlan) and plan.kind == "cover"
    assert plan.song_id == ids["cafe"] and plan.voice_id == api.default_voice(ADA.owner, s=s).id

    # The other chart, by button or by name; an unknown name lists the charts.
    other = buttons.pressed(s, ADA, switch)
    assert other.text.splitlines() == [
        "📈 us: the top 1 right now",
        "1. ▫️ Miley Cyrus - Flowers",
        text.CHART_NONE_READY,
        text.CHART_REMEMBERED.format(name="us"),  # picked in her private chat: its default
    ]
    assert chart_menu.charts(s, ADA, "").text.splitlines()[0] == "📈 us: the top 1 right now"
    assert (
        chart_menu.charts(s, ADA, "WORLD").text.splitlines()[0] == "📈 world: the top 3 right now"
    )
    # In a group, a member who is no admin picks a chart for himself, not for the group.
    assert text.CHART_REMEMBERED.format(name="us") not in chart_menu.charts(s, BOB, "us").text
    assert chart_menu.charts(s, BOB, "").text.splitlines()[0] == "📈 world: the top 3 right now"
    assert "📌" in chart_menu.charts(s, BOB, "us", is_admin=True).text
    assert chart_menu.charts(s, BOB, "").text.splitlines()[0] == "📈 us: the top 1 right now"
    unknown = chart_menu.charts(s, ADA, "mars")
    assert unknown.text == "There is no chart called “mars”; the charts here: world, us."
    assert [b.label for row in unknown.buttons for b in row] == ["📈 world", "📈 us"]
    assert buttons.pressed(s, ADA, cover.replace("cs|", "cc|", 1)).toast  # forged: a note, no error


def test_a_chart_that_cannot_be_read_or_is_not_set_up_gets_one_sentence(chat, monkeypatch):
    from flows.settings import get_settings

    s, _ids = chat
    monkeypatch.setenv("ENCORE_CHARTS", json.dumps({"world": "http://127.0.0.1:9/none.json"}))
    monkeypatch.setattr("flows.charts.ATTEMPTS", 1)
    get_settings.cache_clear()
    assert chart_menu.charts(get_settings(), ADA, "").text == text.CHART_UNREADABLE
    monkeypatch.delenv("ENCORE_CHARTS")
    get_settings.cache_clear()
    assert chart_menu.charts(get_settings(), ADA, "").text == text.NO_CHARTS


def test_songs_pages_the_catalog_with_a_button_per_song(chat):
    s, ids = chat
    for n in range(3, 13):
        _add(s, f"Tune {chr(ord('A') + n)}", "Band", n)
    first = catalog_menu.songs(s, ADA, "")
    assert first.text.splitlines()[0] == text.SONGS_HEAD.format(count=12, page=1, pages=2)
    assert len(first.text.splitlines()) == 1 + 8
    *picks, nav = first.buttons
    assert sum(len(row) for row in picks) == 8 and [b.label for b in nav] == [text.SONGS_NEXT]
    second = buttons.pressed(s, ADA, nav[0].data)
    assert second.text.splitlines()[0] == text.SONGS_HEAD.format(count=12, page=2, pages=2)
    assert second.text.splitlines()[1].startswith("9. ")
    assert [b.label for b in second.buttons[-1]] == [text.SONGS_PREV]
    assert buttons.pressed(s, BOB, nav[0].data).toast == "This button is for Ada."


def test_a_new_user_sees_real_examples_and_is_offered_the_demo_voice(chat):
    s, ids = chat
    usage = songs.song_command(s, ADA, "cover", "")
    assert "like /cover cafe deja vu +2" in usage.text  # the shortest title in the catalog
    assert "(like /cover cafe deja vu)" in help.chatter(s, ADA).text
    assert [label for label, _id in songs.song_choices(s, ADA, "")] == [
        "Nova Maree - Cafe Deja Vu",
        "The Lanterns - Midnight River",
    ]  # Discord's autocomplete before anything is typed

    offer = songs.song_command(s, ADA, "cover", "cafe +1")  # no voice of her own
    assert offer.text == text.NO_VOICE_DEMO.format(song="“Nova Maree - Cafe Deja Vu”")
    [[use_demo]] = offer.buttons
    assert use_demo.label == text.USE_DEMO
    assert buttons.pressed(s, BOB, use_demo.data).toast == "This button is for Ada."
    plan = buttons.pressed(s, ADA, use_demo.data)
    assert isinstance(plan, JobPlan) and plan.song_id == ids["cafe"]
    assert plan.options == {"pitch": 1} and "sung by demo" in plan.headline
    # The demo voice is her default now: the next cover asks nothing.
    assert api.default_voice(ADA.owner, s=s).name == "demo"
    again = songs.song_command(s, ADA, "cover", "midnight river")
    assert isinstance(again, JobPlan) and again.voice_id == plan.voice_id
