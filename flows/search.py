"""Song search as a music app does it: what a user types, matched word by word to titles.

This module owns the text side of finding a song, with no database in it:
- `fold`: text reduced to what a search compares: Unicode NFKD with the accents dropped,
  casefolded, punctuation made spaces ("Café Déjà Vu!" -> "cafe deja vu"), so neither accents
  nor case matter, in a query or in a title.
- `score`: 0-100, how well a query names a song's "artist - title". Every word of the query
  must find a word of its own in the song, exactly, as the start of a word (the word still
  being typed: "caf" finds "Café") or with a small typo (rapidfuzz's ratio). A query word
  matched by no song word counts zero, and one song word serves only one query word, so a long
  query of one common syllable ("la la la la la") does not match a song that merely has one
  word starting with it. A query that is a song's whole title, or its whole label, scores 100
  and so wins over songs that only contain its words.
- `rank`: the songs (any objects with `title` and `artist`) a query finds, best first, above a
  cutoff.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from typing import Protocol, TypeVar

from rapidfuzz import fuzz

# Letters NFKD does not take apart: folded by hand, so "Øresund" is found as "oresund".
_LETTERS = str.maketrans(
    {"ø": "o", "æ": "ae", "œ": "oe", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "ı": "i", "ħ": "h"}
)
EXACT = 100.0
PREFIX_FLOOR = 0.85  # a query word that starts a song word scores 85-100 by how much it covers
TYPO_RATIO = 75.0  # rapidfuzz ratio from which two words are one word with a typo
COVERAGE_WEIGHT = 0.08  # of the score: how much of the song's label the query accounts for
DEFAULT_CUTOFF = 60.0


class Named(Protocol):
    title: str
    artist: str


T = TypeVar("T", bound=Named)


def fold(text: str) -> str:
    """`text` as search compares it: no accents, casefolded, words of letters and digits."""
    text = unicodedata.normalize("NFKD", text or "")
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    text = text.translate(_LETTERS)
    kept = (ch if ch.isalnum() else " " for ch in text)
    return " ".join("".join(kept).split())


def words(text: str) -> list[str]:
    return fold(text).split()


def label_of(title: str, artist: str) -> str:
    return f"{artist} - {title}" if artist else title


def _word_score(typed: str, word: str) -> float:
    if typed == word:
        return EXACT
    if word.startswith(typed):
        return 100.0 * (PREFIX_FLOOR + (1 - PREFIX_FLOOR) * len(typed) / len(word))
    if len(typed) >= 4:
        ratio = fuzz.ratio(typed, word)
        if ratio >= TYPO_RATIO:
            return ratio
    return 0.0


def score_words(query: Sequence[str], song: Sequence[str]) -> float:
    """0-100 for query words against a song's words (each song word serves one query word)."""
    if not query or not song:
        return 0.0
    pairs = sorted(
        (
            (_word_score(typed, word), i, j)
            for i, typed in enumerate(query)
            for j, word in enumerate(song)
        ),
        reverse=True,
    )
    used_query: set[int] = set()
    used_song: set[int] = set()
    total = 0.0
    for value, i, j in pairs:
        if value <= 0:
            break
        if i in used_query or j in used_song:
            continue
        used_query.add(i)
        used_song.add(j)
        total += value
    matched = total / len(query)
    coverage = len(used_song) / len(song)
    return matched * (1 - COVERAGE_WEIGHT + COVERAGE_WEIGHT * coverage)


def score(query: str, title: str, artist: str = "") -> float:
    """0-100: how well `query` names the song `artist - title` (100: its exact title or label)."""
    typed = fold(query)
    if not typed:
        return 0.0
    if typed == fold(title) or typed == fold(label_of(title, artist)):
        return EXACT
    typed_words = typed.split()
    best = score_words(typed_words, words(label_of(title, artist)))
    if artist:  # a query naming the title alone is not marked down for the artist's words
        best = max(best, score_words(typed_words, words(title)))
    return best


def rank(
    query: str, songs: Iterable[T], limit: int = 5, cutoff: float = DEFAULT_CUTOFF
) -> list[tuple[T, float]]:
    """The songs `query` finds, best first (then by label), with their 0-100 scores."""
    typed = fold(query)
    if not typed:
        return []
    found = []
    for song in songs:
        value = score(typed, song.title, song.artist)
        if value >= cutoff:
            found.append((song, value))
    found.sort(key=lambda pair: (-pair[1], fold(label_of(pair[0].title, pair[0].artist))))
    return found[: max(0, limit)]
