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


@personal
def trending(s, who: Who, args: str, is_admin: bool) -> Reply:
    """`/trending`, `/trending on`, `/trending off`."""
    arg = visible(args)[:MAX_ARG].lower()
    subscribed = api.is_subscribed(who.platform, who.chat_id, "trending", s=s)
    private_ok = s.trending_private_chats
    if arg not in ("on", "off"):
        if arg:
            return Reply("Use /trending on or /trending off.")
        state = "gets" if subscribed else "does not get"
        rule = (
            "Admins switch them with /trending on|off."
            if private_ok or not who.private
            else "They go to groups and channels, where an admin switches them with "
            "/trending on|off."
        )
        return Reply(f"This chat {state} the trending covers. {rule}")
    if arg == "on" and who.private and not private_ok:
        return Reply(
            "Trending covers go to groups and channels: add me to one and send "
            "/trending on there as an admin."
        )
    if not is_admin:
        return Reply("Only this chat's admins can switch the trending covers on or off.")
    if arg == "off":
        if api.unsubscribe(who.platform, who.chat_id, "trending", s=s):
            return Reply("📉 This chat will no longer get the trending covers.")
        return Reply("This chat was not getting the trending covers.")
    voice = api.default_voice(who.owner, s=s)
    api.subscribe(
        who.platform, who.chat_id, "trending", voice.id if voice else None, who.owner, s=s
    )
    sung = f", sung by {voice.name}" if voice else ""
    return Reply(
        f"📈 This chat will get covers of the trending songs{sung}. /trending off stops them."
    )
