"""Encore's chat front ends (Telegram, Discord): parse commands, submit jobs, show progress.

Two layers, wired apart. The platform adapters (`telegram`, `discord_bot`) turn updates and
interactions into calls of plain handlers and render what they return; they hold no rule. The
handlers are functions `(s, who, ...)` (settings, the `Who` talking, the command's arguments)
returning a `Reply`, a `JobPlan` or a `Download` (`messages`), one module per concern: `songs`
(/cover, /stems, /karaoke and which song and voice), `voices`, `training` and `importing`
(their upload sessions), `sessions` (/done and files sent with no command), `status` (/status,
/cancel), `privacy` (/forget), `trending`, `help`, `chart_menu` (/charts) and `catalog_menu`
(/songs, examples naming real songs, the demo voice offer). `buttons` binds each button's verb
to its handler; `payload` is the button data; `inputs` and `checks` are the checks every
handler shares; `submission` makes the job of a plan once; `threads` is the pool their blocking
calls run on. Every sentence they say is in `flows.chat`'s text modules. They block (database,
ffmpeg): the adapters run them off the event loop.

They import only `flows`' submission and query API, and the chat text.
"""
