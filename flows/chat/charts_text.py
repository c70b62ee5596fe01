"""What users read about the charts, the song list and the first cover (to be folded into
the chat text module). Each refusal is one short sentence saying what to do."""

from __future__ import annotations

NO_CHARTS = "No chart is set up here yet; find songs with /songs instead."
CHART_UNREADABLE = "I can't read the chart right now; try again in a few minutes, or see /songs."
UNKNOWN_CHART = "There is no chart called {name}; the charts here: {names}."
CHART_HEAD = "📈 {name}: the top {count} right now"
READY_MARK = "✅"
MISSING_MARK = "▫️"
CHART_EMPTY = "The {name} chart is empty right now; try again later, or see /songs."
CHART_NONE_READY = "None of these is in the catalog yet; see /songs for what I can cover."
CHART_PRESS = "✅ songs are ready: press a number to hear it sung by {voice}."
CHART_PRESS_PICK = "✅ songs are ready: press a number, then pick who sings it."
CHART_PRESS_DEMO = "✅ songs are ready: press a number to hear it sung by the demo voice."
CHART_PRESS_FETCH = "✅ songs are ready now; I fetch the others when you press them."
CHART_MOVED = "The chart has changed since this list; send /charts again."
CHART_NOT_READY = "{song} is not in the catalog yet; pick a song marked ✅."
CHART_REMEMBERED = "📌 /charts shows {name} first in this chat now."

SONGS_EMPTY = "The catalog is empty: send me a song file and reply to it with /cover."
SONGS_HEAD = "🎵 The catalog: {count} songs (page {page} of {pages}). Press one to cover it."
SONGS_PREV = "◀ Back"
SONGS_NEXT = "More ▶"

COVER_USAGE = (
    "Tell me which song: /cover <song>, like /cover {example} +2 (/songs lists them all). "
    "Or send a song file and reply to it with /cover."
)
SONG_USAGE = (
    "Tell me which song: /{verb} <song>, like /{verb} {example} (/songs lists them all). "
    "Or reply /{verb} to a song file you sent."
)
NO_VOICE_DEMO = (
    "You have no voice of your own yet. Hear {song} sung by the demo voice now, or clone "
    "yours later with /train <name>."
)
USE_DEMO = "🎤 Use the demo voice"
CHATTER = (
    "Send /cover <song> to make a cover (like /cover {example}), /songs to see the catalog, "
    "or /help to see everything I can do."
)
DEMO_GONE = "The demo voice is not available; /train <name> clones yours."
