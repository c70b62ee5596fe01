"""Songs: `/cover`, `/stems` and `/karaoke`, and which song (and voice) a job uses.

A song is named in text (`/cover <song> +2`, fuzzy-matched in the catalog; `/stems six
<song>` asks for six stems), picked from the autocomplete (Discord's options: a song id, the
pitch, the voice and six stems apart), sent as a file, or given as a link (`/cover <link>`:
the job fetches it) or as a chart song the catalog lacks (`chart_cover`: the job fetches it
too). When several songs (or voices) fit, the reply offers a button for each; a user with no
voice of their own is offered the demo voice (`bots.catalog_menu.offer_demo`). The buttons'
presses come back here through `bots.buttons`. The result is a `JobPlan`, or a reply saying
what is missing.
"""

from __future__ import annotations

from pathlib import Path

from bots import catalog_menu
from bots.checks import personal, quota_refusal
from bots.inputs import HEX_ID, MAX_ARG, MAX_PITCH, clean_arg, parse_song_args, visible
from bots.messages import Download, Incoming, JobPlan, Outcome, Reply, Who
from bots.payload import button, pack
from bots.voices import usable_voice, voice_ref
from flows import api
from flows.api import UserError
from flows.chat import charts_text, links_text, tags_text
from flows.chat import text as said

VERB_OF_KIND = {"cover": "cs", "stems": "ss", "karaoke": "ks"}  # the song-pick button's verb
SIX_STEMS_VERB = "s6"  # the song-pick button's verb for six stems


def split_six(query: str) -> tuple[str, bool]:
    """`"six <song>"` → ("<song>", True): six stems were asked for."""
    head, _, rest = query.strip().partition(" ")
    if head.lower() == "six" and rest.strip():
        return rest.strip(), True
    return query.strip(), False


def find_song(
    s, who: Who, query: str, verb: str, pitch: int = 0, six: bool = False
) -> api.SongInfo | Reply:
    """The one song `query` names, or a reply: nothing matches, or buttons for the songs
    that match about as well as the best."""
    matches = api.find_songs(query, who.owner, limit=5, s=s)
    if not matches:
        return Reply(said.replies(who.platform).no_song_matches(visible(query), verb))
    best, score = matches[0]
    rivals = [(song, sc) for song, sc in matches[1:] if sc >= score - 8]
    if not rivals or (score >= 99.5 and all(sc < 99.5 for _song, sc in rivals)):
        return best
    choices = [best] + [song for song, _sc in rivals]
    code = SIX_STEMS_VERB if six else VERB_OF_KIND[verb]
    buttons = tuple(
        (button(who, song.label[:60], code, pack(song.id), f"{pitch:+d}"),) for song in choices
    )
    return Reply(said.several_songs(visible(query)), buttons)


def cover_with(s, who: Who, song: api.SongInfo, pitch: int) -> Outcome:
    """A cover of `song` in the user's voice, or buttons to pick the voice (or, for a user
    with no voice of their own, the demo voice offered)."""
    offered = catalog_menu.offer_demo(s, who, song, pitch)
    if offered is not None:
        return offered
    voice = usable_voice(s, who)
    if voice is None:
        return Reply(said.replies(who.platform).no_voice())
    if isinstance(voice, list):
        buttons = tuple(
            (button(who, v.name[:40], "cv", pack(song.id), pack(v.id), f"{pitch:+d}"),)
            for v in voice[:10]
        )
        return Reply(said.which_voice_sings(visible(song.label)), buttons)
    return cover_plan(s, who, song, voice, pitch)


def cover_plan(s, who: Who, song: api.SongInfo, voice: api.VoiceInfo, pitch: int) -> Outcome:
    refused = quota_refusal(s, who, "cover")
    if refused:
        return refused
    return JobPlan(
        kind="cover",
        owner=who.owner,
        headline=api.headline("cover", song.label, voice.name, pitch),
        song_id=song.id,
        voice_id=voice.id,
        options={"pitch": pitch},
    )


def link_cover(s, who: Who, url: str, pitch: int, voice: api.VoiceInfo | None = None) -> Outcome:
    """`/cover <link>`: the job fetches the song (when the operator enabled links)."""
    try:
        link = api.check_link(url, s=s)
    except UserError as exc:
        return Reply(exc.message)
    if voice is None:
        found = usable_voice(s, who)
        if found is None:
            return Reply(said.replies(who.platform).no_voice())
        if isinstance(found, list):
            return Reply(links_text.PICK_VOICE)
        voice = found
    refused = quota_refusal(s, who, "cover")
    if refused:
        return refused
    return JobPlan(
        kind="cover",
        owner=who.owner,
        headline=api.headline("cover", api.link_label(link), voice.name, pitch),
        voice_id=voice.id,
        options={"pitch": pitch},
        link=link,
    )


def chart_cover(s, who: Who, artist: str, title: str, label: str) -> Outcome:
    """A chart song not in the catalog: the job fetches it through the resolver, then
    covers it in the user's default voice (when the operator enabled link sources)."""
    if not api.chart_fetching(s=s):
        return Reply(links_text.DISABLED)
    found = usable_voice(s, who)
    if found is None:
        return Reply(said.replies(who.platform).no_voice())
    if isinstance(found, list):
        return Reply(links_text.PICK_VOICE_CHART)
    refused = quota_refusal(s, who, "cover")
    if refused:
        return refused
    return JobPlan(
        kind="cover",
        owner=who.owner,
        headline=api.headline("cover", label, found.name, 0),
        voice_id=found.id,
        chart=(artist, title),
    )


def song_job(s, who: Who, song: api.SongInfo, kind: str, six: bool = False) -> Outcome:
    """A stems or karaoke job of `song`; `six`: stems with guitar and piano apart too."""
    refused = quota_refusal(s, who, kind)
    if refused:
        return refused
    what = f"{song.label} ({tags_text.SIX_STEMS})" if six else song.label
    return JobPlan(
        kind=kind,
        owner=who.owner,
        headline=api.headline(kind, what),
        song_id=song.id,
        options={"six": True} if six else {},
    )


@personal
def song_command(s, who: Who, verb: str, args: str) -> Outcome:
    """`/cover`, `/stems` or `/karaoke` with a song name."""
    say = said.replies(who.platform)
    api.ensure_user(who.owner, who.name, s=s)
    try:
        query, pitch = parse_song_args(clean_arg(args))
    except UserError as exc:
        return Reply(exc.message)
    if verb != "cover" and pitch:
        query = f"{query} {pitch:+d}".strip()  # a title ending in a number, not a key
        pitch = 0
    query, six = split_six(query) if verb == "stems" else (query, False)
    if not query:
        return Reply(say.which_song(verb, catalog_menu.example(s, who)))
    if verb == "cover" and api.is_link(query):
        return link_cover(s, who, query, pitch)
    refused = quota_refusal(s, who, verb)
    if refused:
        return refused
    if verb == "cover" and catalog_menu.has_no_voice(s, who):
        return Reply(say.no_voice())
    song = find_song(s, who, query, verb, pitch, six)
    if isinstance(song, Reply):
        return song
    if verb == "cover":
        return cover_with(s, who, song, pitch)
    return song_job(s, who, song, verb, six)


@personal
def song_file(s, who: Who, verb: str, args: str, incoming: Incoming) -> Reply | Download:
    """`/cover` (or /stems, /karaoke) as a reply to a file: check it before downloading."""
    say = said.replies(who.platform)
    api.ensure_user(who.owner, who.name, s=s)
    try:
        parse_song_args(clean_arg(args))
    except UserError as exc:
        return Reply(exc.message)
    if not incoming.audio:
        return Reply(said.NOT_AUDIO)
    limit = s.telegram_download_limit_bytes
    if incoming.size and incoming.size > limit:
        return Reply(say.too_big(incoming.size, limit))
    refused = quota_refusal(s, who, verb)
    if refused:
        return refused
    if verb == "cover" and catalog_menu.has_no_voice(s, who):
        return Reply(say.no_voice())
    return Download("song", incoming.filename)


@personal
def song_downloaded(
    s, who: Who, verb: str, args: str, local: Path, title: str | None, artist: str = ""
) -> Outcome:
    """The file of `song_file`, downloaded: store it as the user's song and plan the job."""
    refused = quota_refusal(s, who, verb)  # checked again before the song is stored
    if refused:
        return refused
    try:
        query, pitch = parse_song_args(clean_arg(args))
        query, six = split_six(query) if verb == "stems" else (query, False)
        title = visible(query or title or "")[:MAX_ARG]
        song = api.add_uploaded_song(who.owner, local, title, visible(artist)[:MAX_ARG], s=s)
    except UserError as exc:
        return Reply(exc.message)
    if verb == "cover":
        return cover_with(s, who, song, pitch)
    return song_job(s, who, song, verb, six)


def song_choices(s, who: Who, query: str, limit: int = 25) -> list[tuple[str, str]]:
    """(label, song id) pairs matching what the user typed so far (an autocomplete); the
    catalog itself before anything is typed."""
    return catalog_menu.song_choices(s, who, query, limit)


@personal
def song_option(
    s, who: Who, verb: str, ref: str, pitch: int = 0, voice: str | None = None, six: bool = False
) -> Outcome:
    """`/cover`, `/stems` or `/karaoke` whose song is a song id (picked from the
    autocomplete), typed text or a link, with the pitch, the voice and six stems as
    separate options."""
    say = said.replies(who.platform)
    api.ensure_user(who.owner, who.name, s=s)
    if abs(pitch) > MAX_PITCH:
        return Reply(said.key_change_range(MAX_PITCH))
    try:
        ref, named = clean_arg(ref), clean_arg(voice or "")
    except UserError as exc:
        return Reply(exc.message)
    if not ref:
        return Reply(said.pick_song_as_you_type(verb))
    refused = quota_refusal(s, who, verb)
    if refused:
        return refused
    singer = None
    if verb == "cover":
        if named.strip():
            singer = voice_ref(s, who, named)
            if singer is None:
                return Reply(said.no_voice_called(named))
        if api.is_link(ref):
            return link_cover(s, who, ref, pitch, singer)
        if singer is None and catalog_menu.has_no_voice(s, who):
            return Reply(say.no_voice())
    song = api.get_song(ref, who.owner, s=s) if HEX_ID.match(ref) else None
    if song is None:
        found = find_song(s, who, ref, verb, pitch, six)
        if isinstance(found, Reply):
            return found
        song = found
    if verb == "cover":
        if singer is not None:
            return cover_plan(s, who, song, singer, pitch)
        return cover_with(s, who, song, pitch)
    return song_job(s, who, song, verb, six)


# -- the buttons `find_song` and `cover_with` offer (bound in bots.buttons)


def _picked_song(s, who: Who, song_id: str) -> api.SongInfo | Reply:
    song = api.get_song(song_id, who.owner, s=s)
    if song is None:
        return Reply(said.SONG_GONE)
    return song


def song_picked_for_cover(s, who: Who, song_id: str, pitch: int) -> Outcome:
    song = _picked_song(s, who, song_id)
    if isinstance(song, Reply):
        return song
    return cover_with(s, who, song, pitch)


def voice_picked_for_cover(s, who: Who, song_id: str, voice_id: str, pitch: int) -> Outcome:
    song = _picked_song(s, who, song_id)
    if isinstance(song, Reply):
        return song
    voice = api.voice_by_id(who.owner, voice_id, s=s)
    if voice is None:
        return Reply("", toast=said.VOICE_NOT_YOURS)
    return cover_plan(s, who, song, voice, pitch)


def song_picked_for_stems(s, who: Who, song_id: str, _pitch: int) -> Outcome:
    song = _picked_song(s, who, song_id)
    return song if isinstance(song, Reply) else song_job(s, who, song, "stems")


def song_picked_for_karaoke(s, who: Who, song_id: str, _pitch: int) -> Outcome:
    song = _picked_song(s, who, song_id)
    return song if isinstance(song, Reply) else song_job(s, who, song, "karaoke")


def song_picked_for_six_stems(s, who: Who, song_id: str, _pitch: int) -> Outcome:
    song = _picked_song(s, who, song_id)
    return song if isinstance(song, Reply) else song_job(s, who, song, "stems", six=True)


def demo_picked_for_cover(s, who: Who, song_id: str, pitch: int) -> Outcome:
    """The demo voice offer (`bots.catalog_menu.offer_demo`), pressed: the demo voice becomes
    the default, and sings."""
    song = _picked_song(s, who, song_id)
    if isinstance(song, Reply):
        return song
    demo = api.demo_voice(s=s)
    if demo is None:
        return Reply("", toast=charts_text.DEMO_GONE)
    api.set_default_voice_id(who.owner, demo.id, s=s)
    return cover_plan(s, who, song, demo, pitch)
