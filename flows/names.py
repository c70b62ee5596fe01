"""Voice names compared as people read them: `name_key`, the one key two names must share to
be one name (NFKC, casefolded, each character replaced by the representative of the
characters it can be confused with, from Unicode's confusables data as the
confusable_homoglyphs package ships it)."""

from __future__ import annotations

import functools
import unicodedata

from confusable_homoglyphs.confusables import confusables_data


@functools.cache
def _prototypes() -> dict[str, str]:
    """Each confusable character -> one representative of all the characters it looks like
    (Unicode's confusables data, as the confusable_homoglyphs package ships it)."""
    parent: dict[str, str] = {}

    def find(ch: str) -> str:
        while parent.get(ch, ch) != ch:
            parent[ch] = parent.get(parent[ch], parent[ch])
            ch = parent[ch]
        return ch

    for ch, glyphs in confusables_data.items():
        if len(ch) != 1:
            continue
        for glyph in glyphs:
            other = glyph["c"]
            if len(other) == 1:
                a, b = find(ch), find(other)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    return {ch: find(ch) for ch in parent}


def name_key(name: str) -> str:
    """What two names must share to be one name: NFKC, casefolded, then each character
    replaced by the representative of the characters it can be confused with."""
    text = unicodedata.normalize("NFKC", name or "").strip().casefold()
    table = _prototypes()
    text = "".join(table.get(ch, ch) for ch in unicodedata.normalize("NFD", text))
    return unicodedata.normalize("NFC", " ".join(text.split()))
