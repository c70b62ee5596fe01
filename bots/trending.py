"""`/trending [on|off]`: a chat's subscription to covers of the trending songs.

Drops go to groups and channels, switched by their admins (the adapter says whether the
sender is one); a private chat may have them only where the operator allows it
(`ENCORE_TRENDING_PRIVATE_CHATS`). Either way they spend the operator's daily budget.
"""

from __future__ import annotations

from bots.checks import personal
from bots.inputs import MAX_ARG, visible
from bots.messages import Reply, Who
from flows import api
from flows.chat import text as said


@personal
def trending(s, who: Who, args: str, is_admin: bool) -> Reply:
    """`/trending`, `/trending on`, `/trending off`."""
    arg = visible(args)[:MAX_ARG].lower()
    private_ok = s.trending_private_chats
    if arg not in ("on", "off"):
        if arg:
            return Reply(said.TRENDING_ON_OR_OFF)
        subscribed = api.is_subscribed(who.platform, who.chat_id, "trending", s=s)
        return Reply(said.trending_state(subscribed, private_ok or not who.private))
    if arg == "on" and who.private and not private_ok:
        return Reply(said.TRENDING_NOT_HERE)
    if not is_admin:
        return Reply(said.TRENDING_ADMINS_ONLY)
    if arg == "off":
        if api.unsubscribe(who.platform, who.chat_id, "trending", s=s):
            return Reply(said.TRENDING_STOPPED)
        return Reply(said.TRENDING_WAS_OFF)
    voice = api.default_voice(who.owner, s=s)
    api.subscribe(
        who.platform, who.chat_id, "trending", voice.id if voice else None, who.owner, s=s
    )
    return Reply(said.trending_started(voice.name if voice else None))
