"""The Discord front end: one discord.py 2.7 `Client` with a `CommandTree` of slash commands.

This module owns the Discord wiring only: the slash commands' schema (names, options,
autocomplete, `default_permissions`), deferring each interaction well inside Discord's 3 s,
downloading attachments within the interaction's `attachment_size_limit`, rendering the
handlers' replies (ephemeral) and buttons, and submitting jobs with a `reply_to` that names the
interaction's token. Progress edits and results are posted by the job itself over Discord's
REST API (`flows.chat`), not by this process. Commands are registered with Discord at
deploy time (`encore bot discord --sync`, `sync_commands`), not on every start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
import uuid
from pathlib import Path
from typing import Literal

import discord
import yarl
from discord import app_commands

from bots import (
    buttons,
    catalog_menu,
    chart_menu,
    importing,
    privacy,
    sessions,
    songs,
    status,
    submission,
    training,
    trending,
    voices,
)
from bots.inputs import MODEL_SUFFIXES, clean_filename
from bots.messages import Incoming, JobPlan, Reply, Who
from bots.sweep import sweep_deliveries
from bots.threads import use_command_threads
from flows import api
from flows.api import UserError
from flows.chat import text as said

log = logging.getLogger("encore.discord")

DEFAULT_API = "https://discord.com/api/v10"
DECIDE_S = 2.0  # answer at once if a handler decides this fast; else defer (Discord allows 3 s)
DISCORD = said.replies("discord")
WORDS = said.DISCORD_COMMANDS  # what Discord shows of each command
OPTIONS = said.DISCORD_OPTIONS  # and of its options


_DISCORD_GATEWAY = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY


def point_at(s) -> None:
    """Use the REST and gateway addresses from the settings (Discord's own, a proxy, or a
    test's fake). Both are set every time, so a bot never inherits an earlier one's."""
    discord.http.Route.BASE = (s.discord_api_url or DEFAULT_API).rstrip("/")
    gateway = s.discord_gateway_url
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = (
        yarl.URL(gateway) if gateway else _DISCORD_GATEWAY
    )


def _who(interaction: discord.Interaction) -> Who:
    user = interaction.user
    return Who(
        platform="discord",
        user_id=str(user.id),
        chat_id=str(interaction.channel_id),
        name=(user.display_name or user.name or "")[:100],
        private=interaction.guild_id is None,
    )


def _view(reply: Reply) -> discord.ui.View | None:
    if not reply.buttons:
        return None
    view = discord.ui.View(timeout=None)
    for row, line in enumerate(reply.buttons[:5]):
        for b in line:
            view.add_item(discord.ui.Button(label=b.label[:80], custom_id=b.data, row=row))
    return view


def _plain(text: str) -> str:
    """The handlers' replies are plain text: Discord shows the names and titles they echo as
    typed, never as markdown (a masked link, a spoiler, a heading)."""
    return discord.utils.escape_markdown(text)


class DiscordBot:
    """The bot: `client` and `tree` are made at once; `start`/`stop` or `run` it."""

    def __init__(self, s=None):
        self.s = s or api.settings()
        self.client = discord.Client(
            intents=discord.Intents(guilds=True),
            guild_ready_timeout=0.5,
            allowed_mentions=discord.AllowedMentions.none(),  # a song title pings nobody
        )
        self.tree = app_commands.CommandTree(self.client)
        self.client.event(self.on_interaction)
        self.client.setup_hook = self._setup_hook
        self.tree.on_error = self.on_error
        self._locks: dict[str, asyncio.Lock] = {}
        self._sweeper: asyncio.Task | None = None
        self._runner: asyncio.Task | None = None
        self._define()

    # -- running

    async def _setup_hook(self) -> None:
        use_command_threads()
        self._sweeper = asyncio.create_task(sweep_deliveries(self.s), name="encore-delivery-sweep")

    async def start(self) -> None:
        """Log in and connect to the gateway; returns when the client is ready."""
        if not self.s.discord_token:
            raise ValueError("ENCORE_DISCORD_TOKEN is not set")
        point_at(self.s)
        self._runner = asyncio.create_task(self.client.start(self.s.discord_token))
        waiter = asyncio.create_task(self.client.wait_until_ready())
        done, _ = await asyncio.wait({self._runner, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if self._runner in done:
            waiter.cancel()
            self._runner.result()  # raises what stopped it

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sweeper
        await self.client.close()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._runner

    async def sync(self) -> list[app_commands.AppCommand]:
        """Register the slash commands with Discord (a deploy step): log in, sync, log out."""
        if not self.s.discord_token:
            raise ValueError("ENCORE_DISCORD_TOKEN is not set")
        point_at(self.s)
        await self.client.login(self.s.discord_token)
        try:
            return await self.tree.sync()
        finally:
            await self.client.close()

    # -- the commands

    def _define(self) -> None:  # noqa: C901 - one nested function per command
        tree = self.tree

        @tree.command(name="cover", description=WORDS["cover"])
        @app_commands.describe(**OPTIONS["cover"])
        async def cover(
            interaction: discord.Interaction,
            song: str | None = None,
            voice: str | None = None,
            pitch: app_commands.Range[int, -12, 12] = 0,
            file: discord.Attachment | None = None,
        ):
            await self._song_command(interaction, "cover", song, pitch, voice, file)

        @tree.command(name="stems", description=WORDS["stems"])
        @app_commands.describe(**OPTIONS["stems"])
        async def stems(
            interaction: discord.Interaction,
            song: str | None = None,
            file: discord.Attachment | None = None,
            six: bool = False,
        ):
            await self._song_command(interaction, "stems", song, 0, None, file, six)

        @tree.command(name="karaoke", description=WORDS["karaoke"])
        @app_commands.describe(**OPTIONS["karaoke"])
        async def karaoke(
            interaction: discord.Interaction,
            song: str | None = None,
            file: discord.Attachment | None = None,
        ):
            await self._song_command(interaction, "karaoke", song, 0, None, file)

        async def song_names(interaction: discord.Interaction, current: str):
            found = await self._run(songs.song_choices, _who(interaction), current)
            return [app_commands.Choice(name=label, value=ref) for label, ref in found]

        async def voices_by_id(interaction: discord.Interaction, current: str):
            found = await self._run(voices.voice_choices, _who(interaction), current)
            return [app_commands.Choice(name=name, value=ref) for name, ref in found]

        async def voices_by_name(interaction: discord.Interaction, current: str):
            found = await self._run(voices.voice_choices, _who(interaction), current)
            return [app_commands.Choice(name=name, value=name) for name, _ref in found]

        for command in (cover, stems, karaoke):
            command.autocomplete("song")(song_names)
        cover.autocomplete("voice")(voices_by_id)

        train = app_commands.Group(name="train", description=WORDS["train"])

        @train.command(name="new", description=WORDS["train new"])
        @app_commands.describe(**OPTIONS["train new"])
        async def train_new(
            interaction: discord.Interaction,
            name: str,
            sample1: discord.Attachment,
            sample2: discord.Attachment | None = None,
            sample3: discord.Attachment | None = None,
            sample4: discord.Attachment | None = None,
            sample5: discord.Attachment | None = None,
        ):
            files = [sample1, sample2, sample3, sample4, sample5]
            await self._train(interaction, name, [f for f in files if f is not None])

        @train.command(name="add", description=WORDS["train add"])
        @app_commands.describe(**OPTIONS["train add"])
        async def train_add(
            interaction: discord.Interaction,
            sample1: discord.Attachment,
            sample2: discord.Attachment | None = None,
            sample3: discord.Attachment | None = None,
            sample4: discord.Attachment | None = None,
            sample5: discord.Attachment | None = None,
        ):
            files = [sample1, sample2, sample3, sample4, sample5]
            await self._train(interaction, None, [f for f in files if f is not None])

        tree.add_command(train)

        @tree.command(name="import", description=WORDS["import"])
        @app_commands.describe(**OPTIONS["import"])
        async def import_(
            interaction: discord.Interaction,
            file: discord.Attachment | None = None,
            index: discord.Attachment | None = None,
            link: str | None = None,
            name: str | None = None,
        ):
            if link:  # models over Discord's attachment limit come by link
                await self._import_link(interaction, link, name or "")
            elif file is None:
                await self._say(interaction, Reply(said.IMPORT_FILE_OR_LINK))
            else:
                await self._import(interaction, name or "", [f for f in (file, index) if f])

        @tree.command(name="charts", description=WORDS["charts"])
        @app_commands.describe(**OPTIONS["charts"])
        async def charts(interaction: discord.Interaction, chart: str | None = None):
            # Members with Manage Server set the channel's default chart by naming one.
            is_admin = bool(interaction.permissions and interaction.permissions.manage_guild)
            await self._simple(interaction, chart_menu.charts, chart or "", is_admin)

        @charts.autocomplete("chart")
        async def chart_names(interaction: discord.Interaction, current: str):
            names = await asyncio.to_thread(api.chart_names, self.s)
            typed = (current or "").strip().lower()
            return [app_commands.Choice(name=n, value=n) for n in names if typed in n][:25]

        @tree.command(name="songs", description=WORDS["songs"])
        @app_commands.describe(**OPTIONS["songs"])
        async def songs_command(
            interaction: discord.Interaction, page: app_commands.Range[int, 1, 999] = 1
        ):
            await self._simple(interaction, catalog_menu.songs, str(page))

        @tree.command(name="voices", description=WORDS["voices"])
        async def voices_command(interaction: discord.Interaction):
            await self._simple(interaction, voices.voices)

        @tree.command(name="voice", description=WORDS["voice"])
        @app_commands.describe(**OPTIONS["voice"])
        async def voice(interaction: discord.Interaction, default: str):
            await self._simple(interaction, voices.set_voice, default)

        voice.autocomplete("default")(voices_by_name)

        @tree.command(name="status", description=WORDS["status"])
        async def status_command(interaction: discord.Interaction):
            await self._simple(interaction, status.status)

        @tree.command(name="cancel", description=WORDS["cancel"])
        async def cancel(interaction: discord.Interaction):
            await self._simple(interaction, status.cancel)

        @tree.command(name="forget", description=WORDS["forget"])
        async def forget(interaction: discord.Interaction):
            await self._simple(interaction, privacy.forget)

        @tree.command(name="trending", description=WORDS["trending"])
        @app_commands.describe(**OPTIONS["trending"])
        @app_commands.default_permissions(manage_guild=True)
        @app_commands.guild_only()
        async def trending_command(
            interaction: discord.Interaction, state: Literal["on", "off"] | None = None
        ):
            # Discord hides the command from others; checked again here all the same.
            is_admin = interaction.permissions.manage_guild
            await self._simple(interaction, trending.trending, state or "", is_admin)

    # -- helpers

    async def _run(self, handler, *args):
        """A handler `(s, ...)`, run off the event loop (they block on the database)."""
        return await asyncio.to_thread(handler, self.s, *args)

    async def _decide(self, interaction: discord.Interaction, handler, *args, component=False):
        """Run `handler` off the loop; defer if it takes longer than DECIDE_S."""
        task = asyncio.ensure_future(self._run(handler, *args))
        try:
            return await asyncio.wait_for(asyncio.shield(task), DECIDE_S)
        except TimeoutError:
            if component:
                await interaction.response.defer()
            else:
                await interaction.response.defer(thinking=True)
            return await task

    async def _say(self, interaction: discord.Interaction, reply: Reply | None) -> None:
        """A reply that is not a job: ephemeral, to the user who asked."""
        if reply is None or not (reply.text or reply.toast):
            if not interaction.response.is_done():
                await interaction.response.defer(ephemeral=True)
            return
        text = _plain(reply.text or reply.toast or "")
        view = _view(reply)
        if not interaction.response.is_done():
            await interaction.response.send_message(text, ephemeral=True, view=view or _NOVIEW)
            return
        await interaction.followup.send(text, ephemeral=True, view=view or _NOVIEW)
        if interaction.type is discord.InteractionType.application_command:
            with contextlib.suppress(discord.HTTPException):
                await interaction.delete_original_response()  # the public "thinking…"

    async def _outcome(self, interaction: discord.Interaction, who: Who, outcome) -> None:
        if isinstance(outcome, JobPlan):
            await self._start_job(interaction, who, outcome, f"discord:{interaction.id}")
        else:
            await self._say(interaction, outcome)

    async def _start_job(
        self, interaction: discord.Interaction, who: Who, plan: JobPlan, key: str
    ) -> None:
        """Make the (public) deferred response the status message, then submit."""
        component = interaction.type is discord.InteractionType.component
        if component and not interaction.response.is_done():
            await interaction.response.edit_message(content=plan.status, view=None)
        else:
            if not interaction.response.is_done():
                await interaction.response.defer(thinking=True)
            await interaction.edit_original_response(content=plan.status, view=None)
        reply_to = {
            "platform": "discord",
            "application_id": str(interaction.application_id),
            "interaction_token": interaction.token,
            "token_at": interaction.created_at.timestamp(),  # the token's 15 minutes start here
            "channel_id": str(interaction.channel_id),
            "user_id": who.user_id,
            "status_message_id": "@original",
            "upload_limit": interaction.filesize_limit,
            "headline": plan.headline,
        }
        submitted = await self._run(submission.submit_plan, plan, key, reply_to)
        if isinstance(submitted, Reply):
            await interaction.edit_original_response(content=_plain(submitted.text))
            return
        _job_id, fresh = submitted
        if not fresh:
            await interaction.edit_original_response(content=said.ALREADY_ON_IT)

    async def _simple(self, interaction: discord.Interaction, fn, *args) -> None:
        who = _who(interaction)
        outcome = await self._decide(interaction, fn, who, *args)
        await self._outcome(interaction, who, outcome)

    def _scratch(self) -> Path:
        folder = self.s.work_dir / "discord" / uuid.uuid4().hex
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    async def _song_command(
        self,
        interaction: discord.Interaction,
        verb: str,
        song: str | None,
        pitch: int,
        voice: str | None,
        file: discord.Attachment | None,
        six: bool = False,
    ) -> None:
        who = _who(interaction)
        if file is None:
            outcome = await self._decide(
                interaction, songs.song_option, who, verb, song or "", pitch, voice, six
            )
            await self._outcome(interaction, who, outcome)
            return
        limit = interaction.filesize_limit
        if file.size > limit:
            await self._say(interaction, Reply(DISCORD.too_big(file.size, limit)))
            return
        incoming = Incoming(file.filename, None, file.content_type)  # its name made safe
        decision = await self._decide(interaction, songs.song_file, who, verb, "", incoming)
        if isinstance(decision, Reply):
            await self._say(interaction, decision)
            return
        if not interaction.response.is_done():
            await interaction.response.defer(thinking=True)
        folder = self._scratch()
        try:
            local = await self._fetch(file, folder)

            def add_and_plan():
                try:
                    title = (song or "").strip() or Path(incoming.filename).stem
                    added = api.add_uploaded_song(who.owner, local, title, s=self.s)
                except UserError as exc:
                    return Reply(exc.message)
                return songs.song_option(self.s, who, verb, added.id, pitch, voice, six)

            outcome = await asyncio.to_thread(add_and_plan)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        await self._outcome(interaction, who, outcome)

    def _refuse_files(self, interaction: discord.Interaction, files) -> Reply | None:
        limit = interaction.filesize_limit
        for f in files:
            if f.size > limit:
                return Reply(DISCORD.too_big(f.size, limit))
        return None

    async def _fetch(self, file: discord.Attachment, folder: Path) -> Path:
        safe = re.sub(r"[^\w.-]", "_", clean_filename(file.filename)) or "upload"
        local = folder / safe
        local.write_bytes(await file.read())
        return local

    async def _train(self, interaction: discord.Interaction, name: str | None, files) -> None:
        """`/train new` or `/train add`: take the samples, then ask for consent with a button."""
        who = _who(interaction)
        refused = self._refuse_files(interaction, files)
        if refused is not None:
            await self._say(interaction, refused)
            return
        await interaction.response.defer(thinking=True, ephemeral=True)
        lines: list[str] = []
        if name is not None:
            opened = await self._run(training.train, who, name)
            upload = await asyncio.to_thread(api.current_upload, who.owner, self.s)
            if upload is None or upload.kind != "train" or upload.job_id:
                await interaction.edit_original_response(content=_plain(opened.text))
                return
        else:
            upload = await asyncio.to_thread(api.current_upload, who.owner, self.s)
            if upload is None or upload.kind != "train":
                text = DISCORD.no_training_session()
                await interaction.edit_original_response(content=text)
                return
        folder = self._scratch()
        try:
            for i, file in enumerate(files):
                incoming = Incoming(file.filename, None, file.content_type)
                decision = await self._run(training.sample_incoming, who, incoming)
                if isinstance(decision, Reply):
                    lines.append(f"{incoming.filename}: {decision.text}")
                    continue
                local = await self._fetch(file, folder)
                source = f"discord:{interaction.id}:{i}"
                took = await self._run(
                    training.sample_downloaded, who, source, local, incoming.filename
                )
                if took is not None:
                    lines.append(took.text)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        done = await self._run(sessions.done, who)
        if isinstance(done, Reply) and done.buttons:
            lines.append(done.text)
            view = _view(done)
        else:
            lines.append(DISCORD.add_recordings())
            view = None
        await interaction.edit_original_response(content=_plain("\n".join(lines))[:1900], view=view)

    async def _import_link(self, interaction: discord.Interaction, link: str, name: str) -> None:
        """`/import link:`: the import job downloads the model, then checks it like a file."""
        who = _who(interaction)
        await interaction.response.defer(thinking=True)
        outcome = await self._run(importing.link_import, who, link.strip(), name)
        await self._outcome(interaction, who, outcome)

    async def _import(self, interaction: discord.Interaction, name: str, files) -> None:
        """`/import`: the model's files in one command; the import job starts at once."""
        who = _who(interaction)
        refused = self._refuse_files(interaction, files)
        if refused is None:
            for f in files:
                if Incoming(f.filename, None, None).suffix not in MODEL_SUFFIXES:
                    refused = Reply(said.NOT_A_MODEL)
        if refused is not None:
            await self._say(interaction, refused)
            return
        await interaction.response.defer(thinking=True)
        opened = await self._run(importing.import_command, who, name, False)  # no links
        upload = await asyncio.to_thread(api.current_upload, who.owner, self.s)
        if upload is None or upload.kind != "import":
            await self._say(interaction, opened)
            return
        outcome = None
        folder = self._scratch()
        try:
            for i, file in enumerate(files):
                local = await self._fetch(file, folder)
                source = f"discord:{interaction.id}:{i}"
                outcome = await self._run(
                    importing.model_downloaded, who, source, local, clean_filename(file.filename)
                )
                if isinstance(outcome, JobPlan):
                    break
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if not isinstance(outcome, JobPlan):
            outcome = await self._run(sessions.done, who)  # a .pth without its index
        if isinstance(outcome, Reply):
            await asyncio.to_thread(api.cancel_upload, who.owner, self.s)
        await self._outcome(interaction, who, outcome)

    # -- buttons (custom ids are `bots.payload` button data: they survive restarts)

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        if interaction.type is not discord.InteractionType.component:
            return
        data = (interaction.data or {}).get("custom_id") or ""
        who = _who(interaction)
        menu = interaction.message
        key = f"discord:{menu.id if menu is not None else interaction.id}"
        try:
            refused = await self._run(buttons.press_refusal, who, data)
            if refused is not None:  # another user's button, or junk: nothing happens
                await self._say(interaction, refused)
                return
            lock = self._locks.setdefault(who.owner, asyncio.Lock())
            async with lock:
                if await asyncio.to_thread(api.job_by_key, key, self.s) is not None:
                    await interaction.response.send_message(said.ALREADY_PRESSED, ephemeral=True)
                    return
                outcome = await self._decide(
                    interaction, buttons.pressed, who, data, component=True
                )
                if isinstance(outcome, JobPlan):
                    await self._start_job(interaction, who, outcome, key)
                elif outcome.text:
                    view = _view(outcome)  # None takes the pressed buttons away
                    text = _plain(outcome.text)
                    if interaction.response.is_done():
                        await interaction.edit_original_response(content=text, view=view)
                    else:
                        await interaction.response.edit_message(content=text, view=view)
                else:
                    await self._say(interaction, outcome)
        except Exception as exc:
            await self.on_error(interaction, exc)

    # -- errors

    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:
        log.error("handling a Discord interaction failed", exc_info=error)
        with contextlib.suppress(discord.HTTPException):
            if interaction.response.is_done():
                await interaction.followup.send(said.SOMETHING_WENT_WRONG, ephemeral=True)
            else:
                await interaction.response.send_message(said.SOMETHING_WENT_WRONG, ephemeral=True)


_NOVIEW = discord.utils.MISSING


def run(s=None) -> None:
    """Run the bot until interrupted."""
    bot = DiscordBot(s)
    if not bot.s.discord_token:
        raise ValueError("ENCORE_DISCORD_TOKEN is not set")
    point_at(bot.s)
    bot.client.run(bot.s.discord_token, log_handler=None)


def sync_commands(s=None) -> list[str]:
    """Register the slash commands with Discord; the names registered."""
    bot = DiscordBot(s)
    return [command.name for command in asyncio.run(bot.sync())]
