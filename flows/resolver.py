"""The resolver: a chart song missing from the catalog becomes a catalog song, fetched.

"Artist - title" is turned into something yt-dlp can fetch: by default a search
(`ENCORE_RESOLVER_SEARCH`, "ytsearch1:" and the query: the first result), or, where the
operator sets `ENCORE_RESOLVER_URL_TEMPLATE`, a link made from the template ({query}, {artist},
{title}, each URL-encoded) to a page or file on a source the operator trusts. The song is
fetched through `flows.links.fetch_song` (the network guard, the limits, the lock and cache
per link), added to the public catalog under the chart's artist and title, and marked fetched
(`Song.source_url` is the search or the link). Only when link sources are enabled.

Used by the trending drop (`flows.trending.run_drop`) for the entries `flows.charts.match`
could not match, and by `/charts` (`fetch_chart_song` for one entry the user picked).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import quote

from flows.catalog import clean_text
from flows.charts import ChartEntry, Match, Missing
from flows.chat import links_text as text
from flows.db import Song
from flows.links import LinkError, fetch_song, require_enabled
from flows.settings import Settings

log = logging.getLogger("encore.resolver")


def query(artist: str, title: str) -> str:
    artist, title = clean_text(artist), clean_text(title)
    return f"{artist} - {title}" if artist else title


def source_for(s: Settings, artist: str, title: str) -> str:
    """What is fetched for one chart song: the operator's link, or a yt-dlp search."""
    q = query(artist, title)
    if not q:
        raise LinkError(text.NOT_FOUND)
    if s.resolver_url_template:
        return s.resolver_url_template.format(
            query=quote(q, safe=""),
            artist=quote(clean_text(artist), safe=""),
            title=quote(clean_text(title), safe=""),
        )
    return f"{s.resolver_search}{q}"


def fetch_chart_song(
    s: Settings, artist: str, title: str, progress: Callable[[float], None] | None = None
) -> Song:
    """The catalog song for chart entry "artist - title", fetched once (raises LinkError)."""
    require_enabled(s)
    source = source_for(s, artist, title)
    if s.resolver_url_template:  # a link: guarded and cached like a user's
        return fetch_song(s, source, None, progress, title=clean_text(title), artist=artist)
    return fetch_song(
        s, source, None, progress, title=clean_text(title), artist=clean_text(artist), source=source
    )


def resolve_missing(s: Settings, missing: list[Missing]) -> tuple[list[Match], list[Missing]]:
    """Fetch the chart entries missing from the catalog: (now matched, still missing)."""
    if not s.link_sources:
        return [], list(missing)
    found: list[Match] = []
    still: list[Missing] = []
    for item in missing:
        entry: ChartEntry = item.entry
        if not item.reason.startswith("not in the catalog"):  # ambiguous or taken: not fetched
            still.append(item)
            continue
        try:
            song = fetch_chart_song(s, entry.artist, entry.title)
        except LinkError as exc:
            log.warning("chart %s: could not fetch it: %s", entry, exc.message)
            still.append(Missing(entry, f"{item.reason}; fetching it failed: {exc.message}"))
            continue
        found.append(Match(entry, song, 100.0))
    return found, still
