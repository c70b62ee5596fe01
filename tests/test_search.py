"""Song search as a music app's: accents and case do not matter, an exact title wins, a long
query of one syllable finds no unrelated song. Unit tests of `flows.search`, then the same
through the catalog and the bots' song handlers (SQLite, no models)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from flows import search


@dataclass
class Tune:
    title: str
    artist: str


CATALOG = [
    Tune("Café Déjà Vu", "Nova"),
    Tune("River of Lights", "Aurora Lane"),
    Tune("Rivers of Light", "The Tides"),
    Tune("Midnight River", "The Lanterns"),
    Tune("Yesterday", "The Beatles"),
    Tune("Øresund", "Straße"),
]


def titles(query: str, **kw) -> list[str]:
    return [song.title for song, _score in search.rank(query, CATALOG, **kw)]


def test_fold_drops_accents_case_and_punctuation():
    assert search.fold("Café Déjà Vu!") == "cafe deja vu"
    assert search.fold("ＣＡＦＥ – Øresund, STRASSE") == "cafe oresund strasse"
    assert search.fold("Straße") == search.fold("STRASSE")


@pytest.mark.parametrize("query", ["cafe", "CAFE", "café", "cafe deja vu", "caf", "Deja"])
def test_accents_and_case_do_not_matter(query):
    assert titles(query)[:1] == ["Café Déjà Vu"]


def test_an_exact_title_scores_100_and_beats_its_near_twin():
    found = search.rank("river of lights", CATALOG)
    assert [s.title for s, _ in found[:2]] == ["River of Lights", "Rivers of Light"]
    assert found[0][1] == search.EXACT and found[1][1] < search.EXACT


def test_a_long_query_of_one_syllable_matches_no_unrelated_song():
    assert titles("la la la la la") == []
    # "Lanterns" and "Lane" take one "la" each at most: the other three find nothing
    assert search.score("la la la la la", "Midnight River", "The Lanterns") < 25


def test_typos_and_word_order():
    assert titles("yesterdya")[:1] == ["Yesterday"]
    assert titles("beatles yesterday")[:1] == ["Yesterday"]
    assert titles("river midnight")[:1] == ["Midnight River"]
    assert titles("oresund")[:1] == ["Øresund"]
    assert titles("zzzz qqqq") == []


# ------------------------------------------------------------------------------------------
# Through the catalog and the bots' song handlers


@pytest.fixture
def catalog_settings(tmp_path, monkeypatch):
    from flows.db import Song, session
    from flows.settings import Settings

    s = Settings(data_dir=tmp_path / "data")
    with session(s.database) as db:
        for i, tune in enumerate(CATALOG):
            db.add(
                Song(
                    title=tune.title,
                    artist=tune.artist,
                    content_hash=f"{i:064x}",
                    uri=f"file:///nowhere/{i}.wav",
                    duration=3.0,
                )
            )
    return s


def test_chat_search_finds_accented_titles_and_asks_nothing_for_an_exact_one(catalog_settings):
    from bots.messages import Reply, Who
    from bots.songs import find_song, song_choices

    s = catalog_settings
    who = Who("telegram", "7", "7", "Ann")
    song = find_song(s, who, "cafe", "cover")
    assert not isinstance(song, Reply) and song.title == "Café Déjà Vu"
    song = find_song(s, who, "river of lights", "cover")
    assert not isinstance(song, Reply) and song.label == "Aurora Lane - River of Lights"
    refused = find_song(s, who, "la la la la la", "cover")
    assert isinstance(refused, Reply) and "No song in the catalog matches" in refused.text
    # Discord's autocomplete: accents do not matter there either
    assert [label for label, _id in song_choices(s, who, "cafe")] == ["Nova - Café Déjà Vu"]


def test_cli_resolve_takes_the_exact_title(catalog_settings):
    from flows.catalog import resolve_song

    assert resolve_song(catalog_settings, "RIVER OF LIGHTS").title == "River of Lights"
    assert resolve_song(catalog_settings, "Cafe deja vu").title == "Café Déjà Vu"
