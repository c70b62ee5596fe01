"""The chat side of Encore: what the bots say (text) and what they show, platform-neutral."""
