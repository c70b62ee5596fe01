"""Songs: `/cover`, `/stems` and `/karaoke`, and which song (and voice) a job uses.

A song is named in text (`/cover <song> +2`, fuzzy-matched in the catalog), picked from the
autocomplete (Discord's options: a song id, the pitch and the voice apart), or sent as a
file. When several songs (or voices) fit, the reply offers a button for each; the buttons'
presses come back here through `bots.buttons`. The result is a `JobPlan`, or a reply saying
what is missing.
"""

from __future__ import annotations

from pathlib import Path

from bots.checks import personal, quota_refusal
from bots.inputs import HEX_ID, MAX_ARG, MAX_PITCH, clean_arg, parse_song_args, visible
from bots.messages import Download, Incoming, JobPlan, Outcome, Reply, Who
from bots.payload import button, pack
from bots.voices import usable_voice, voice_ref
from flows import api
from flows.api import UserError
from flows.chat import text as said

VERB_OF_KIND = {"cover": "cs", "stems": "ss", "karaoke": "ks"}  # the song-pick button's verb


def find_song(s, who: Who, query: str, verb: str, pitch: int = 0) -> api.SongInfo | Reply:
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
    code = VERB_OF_KIND[verb]
    buttons = tuple(
        (button(who, song.label[:60], code, pack(song.id), f"{pitch:+d}"),) for song in choices
    )
    return Reply(said.several_songs(visible(query)), buttons)


def cover_with(s, who: Who, song: api.SongInfo, pitch: int) -> Outcome:
    """A cover of `song` in the user's voice, or buttons to pick the voice."""
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


def song_job(s, who: Who, song: api.SongInfo, kind: str) -> Outcome:
    """A stems or karaoke job of `song`."""
    refused = quota_refusal(s, who, kind)
    if refused:
        return refused
    return JobPlan(
        kind=kind, owner=who.owner, headline=api.headline(kind, song.label), song_id=song.id
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
    if not query:
        return Reply(say.which_song(verb))
    refused = quota_refusal(s, who, verb)
    if refused:
        return refused
    if verb == "cover" and usable_voice(s, who) is None:
        return Reply(say.no_voice())
    song = find_song(s, who, query, verb, pitch)
    if isinstance(song, Reply):
        return song
    if verb == "cover":
        return cover_with(s, who, song, pitch)
    return song_job(s, who, song, verb)


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
    if verb == "cover" and usable_voice(s, who) is None:
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
        title = visible(query or title or "")[:MAX_ARG]
        song = api.add_uploaded_song(who.owner, local, title, visible(artist)[:MAX_ARG], s=s)
    except UserError as exc:
        return Reply(exc.message)
    if verb == "cover":
        return cover_with(s, who, song, pitch)
    return song_job(s, who, song, verb)


def song_choices(s, who: Who, query: str, limit: int = 25) -> list[tuple[str, str]]:
    """(label, song id) pairs matching what the user typed so far (an autocomplete)."""
    matches = api.find_songs(query or "", who.owner, limit=limit, s=s)
    return [(song.label[:100], song.id) for song, _score in matches]


@personal
def song_option(
    s, who: Who, verb: str, ref: str, pitch: int = 0, voice: str | None = None
) -> Outcome:
    """`/cover`, `/stems` or `/karaoke` whose song is a song id (picked from the
    autocomplete) or typed text, with the pitch and the voice as separate options."""
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
        elif usable_voice(s, who) is None:
            return Reply(say.no_voice())
    song = api.get_song(ref, who.owner, s=s) if HEX_ID.match(ref) else None
    if song is None:
        found = find_song(s, who, ref, verb, pitch)
        if isinstance(found, Reply):
            return found
        song = found
    if verb == "cover":
        if singer is not None:
            return cover_plan(s, who, song, singer, pitch)
        return cover_with(s, who, song, pitch)
    return song_job(s, who, song, verb)


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
