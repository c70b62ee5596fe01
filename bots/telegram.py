"""The Telegram front end: python-telegram-bot 22 handlers that leave every decision to `bots`.

This module owns the Telegram wiring only. It turns updates into calls of the handlers in
`bots` (songs, voices, training, ...; `ONE_REPLY` maps most commands to theirs), renders
their replies and inline buttons, downloads the files users send (within the Bot API's 20 MB
limit), posts the one status message of a new job and submits the job with the chat's
`reply_to`. Progress and results are posted by the job itself (`flows.chat`), not by this
process, so restarting the bot loses nothing.

A user's updates are handled one at a time (different users in parallel), so a command
delivered twice is seen twice in order and makes one job (its idempotency key is the
message's chat and id). Every failure ends in one sentence in the chat; tracebacks go to the
log. `run` polls (local use) or serves a webhook that checks Telegram's secret-token header.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import secrets
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlparse

from telegram import (
    Audio,
    BotCommand,
    CallbackQuery,
    Document,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    Update,
    Voice,
)
from telegram.constants import ChatAction, ChatMemberStatus, ChatType
from telegram.error import BadRequest, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bots import (
    buttons,
    catalog_menu,
    chart_menu,
    help,
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
from bots.messages import Download, Incoming, JobPlan, Reply, Who
from bots.sweep import sweep_deliveries
from bots.threads import use_command_threads
from flows import api
from flows.chat import text as said

log = logging.getLogger("encore.telegram")

SONG_VERBS = ("cover", "stems", "karaoke")
TELEGRAM = said.replies("telegram")

# Commands answered by one reply (or a job plan): name → (handler, whether it takes the
# text after the command).
ONE_REPLY = {
    "voices": (voices.voices, False),
    "voice": (voices.set_voice, True),
    "train": (training.train, True),
    "done": (sessions.done, False),
    "import": (importing.import_command, True),
    "status": (status.status, False),
    "cancel": (status.cancel, False),
    "forget": (privacy.forget, False),
    "songs": (catalog_menu.songs, True),
}


def _markup(reply: Reply) -> InlineKeyboardMarkup | None:
    if not reply.buttons:
        return None
    rows = [
        [InlineKeyboardButton(b.label, callback_data=b.data) for b in row] for row in reply.buttons
    ]
    return InlineKeyboardMarkup(rows)


# Ids Telegram puts in `from` for senders who are not a person: a group's anonymous admins
# (GroupAnonymousBot), messages sent on behalf of a channel or chat, a channel's automatic
# forwards into its discussion group. Such messages also carry `sender_chat`.
PLACEHOLDER_IDS = frozenset({1087968824, 136817688, 777000})


def _who(update: Update) -> Who:
    user = update.effective_user
    chat = update.effective_chat
    message = update.message or update.edited_message  # not a button's message: the bot's
    sender_chat = message.sender_chat if message is not None else None
    placeholder = user is None or user.id in PLACEHOLDER_IDS or sender_chat is not None
    if placeholder:
        name = (sender_chat.title or sender_chat.username or "") if sender_chat else ""
    else:
        name = user.full_name or user.username or ""
    return Who(
        platform="telegram",
        user_id=str(user.id if user is not None else 0),
        chat_id=str(chat.id),
        name=name[:100],
        private=chat.type == ChatType.PRIVATE,
        placeholder=placeholder,
    )


def _args(message: Message) -> str:
    parts = (message.text or message.caption or "").split(maxsplit=1)
    return parts[1] if len(parts) > 1 else ""


def _media(message: Message | None) -> Voice | Audio | Document | None:
    if message is None:
        return None
    return message.voice or message.audio or message.document


def _incoming(message: Message) -> Incoming | None:
    if message.voice is not None:
        v = message.voice
        return Incoming(f"voice-{message.message_id}.ogg", v.file_size, v.mime_type, True)
    if message.audio is not None:
        a = message.audio
        name = a.file_name or f"audio-{message.message_id}.mp3"
        return Incoming(name, a.file_size, a.mime_type)
    if message.document is not None:
        d = message.document
        return Incoming(d.file_name or f"file-{message.message_id}", d.file_size, d.mime_type)
    return None


def _key(chat_id: int | str, message_id: int) -> str:
    return f"telegram:{chat_id}:{message_id}"


class TelegramBot:
    """The bot: build an `Application` with `build`, then `run` it or `start`/`stop` it."""

    def __init__(self, s=None):
        self.s = s or api.settings()
        self._locks: dict[str, asyncio.Lock] = {}
        self._submit_locks: dict[str, asyncio.Lock] = {}
        self._submits: set[asyncio.Task] = set()
        self._pending: set[str] = set()  # commands answered whose jobs are being made
        self._sweeper: asyncio.Task | None = None

    # -- building and running

    def build(self) -> Application:
        if not self.s.telegram_token:
            raise ValueError("ENCORE_TELEGRAM_TOKEN is not set")
        app = (
            ApplicationBuilder()
            .token(self.s.telegram_token)
            .base_url(self.s.telegram_api_url)
            .base_file_url(self.s.telegram_file_url)
            .concurrent_updates(64)  # one at a time per user: `_serial`
            .post_init(self._post_init)
            .post_stop(self._post_stop)
            .build()
        )
        new = filters.UpdateType.MESSAGE  # edits of old commands start nothing
        for name in ("start", "help"):
            app.add_handler(CommandHandler(name, self.on_help, filters=new))
        for verb in SONG_VERBS:
            callback = functools.partial(self._song_command, verb)
            app.add_handler(CommandHandler(verb, callback, filters=new))
        for name, (handler, with_args) in ONE_REPLY.items():
            callback = functools.partial(self._simple, handler, with_args)
            app.add_handler(CommandHandler(name, callback, filters=new))
        app.add_handler(CommandHandler("trending", self.on_trending, filters=new))
        app.add_handler(CommandHandler("charts", self.on_charts, filters=new))
        app.add_handler(CallbackQueryHandler(self.on_button))
        files = filters.VOICE | filters.AUDIO | filters.Document.ALL
        app.add_handler(MessageHandler(new & files, self.on_file))
        app.add_handler(MessageHandler(new & filters.COMMAND, self.on_unknown))
        app.add_handler(MessageHandler(new & filters.TEXT & filters.ChatType.PRIVATE, self.on_text))
        app.add_error_handler(self.on_error)
        return app

    async def start(self, app: Application, poll_timeout: float = 10.0) -> None:
        """Start polling inside a running event loop (what `run_polling` does, minus signals)."""
        await app.initialize()
        await self._post_init(app)
        await app.start()
        await app.updater.start_polling(timeout=poll_timeout, allowed_updates=Update.ALL_TYPES)

    async def stop(self, app: Application) -> None:
        if app.updater.running:
            await app.updater.stop()
        if app.running:
            await app.stop()
        if self._submits:  # commands already answered: their jobs are made before we go
            await asyncio.wait(set(self._submits), timeout=60)
        await self._post_stop(app)
        await app.shutdown()

    async def _post_init(self, app: Application) -> None:
        use_command_threads()
        menu = [BotCommand(name, description) for name, description in said.TELEGRAM_MENU]
        await app.bot.set_my_commands(menu)
        self._sweeper = asyncio.create_task(sweep_deliveries(self.s), name="encore-delivery-sweep")

    async def _post_stop(self, app: Application) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sweeper
            self._sweeper = None

    # -- helpers

    @contextlib.asynccontextmanager
    async def _serial(self, who: Who) -> AsyncIterator[None]:
        """One update at a time per user, in the order they arrived."""
        lock = self._locks.setdefault(who.owner, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and len(self._locks) > 1000:
                self._locks.pop(who.owner, None)

    async def _run(self, handler, *args):
        """A handler `(s, ...)`, run off the event loop (they block on the database)."""
        return await asyncio.to_thread(handler, self.s, *args)

    async def _reply(self, message: Message, reply: Reply | None) -> None:
        if reply is not None and reply.text:
            await message.reply_text(reply.text, reply_markup=_markup(reply))

    async def _seen(self, key: str) -> bool:
        """Whether the command or press `key` was taken already (its job made, or being made)."""
        if key in self._pending:
            return True
        return await asyncio.to_thread(api.job_by_key, key, self.s) is not None

    async def _outcome(self, message: Message, who: Who, outcome, key: str) -> None:
        if isinstance(outcome, JobPlan):
            await self._start_job(who, outcome, key, message, message.message_id)
        else:
            await self._reply(message, outcome)

    async def _start_job(
        self,
        who: Who,
        plan: JobPlan,
        key: str,
        anchor: Message,
        command_id: int,
        status: Message | None = None,
    ) -> None:
        """Post the status message (or turn the menu `status` into it), then submit."""
        if await self._seen(key):
            return  # the same command again: its job and status message exist
        self._pending.add(key)  # (until its job is made: `_submit`)
        try:
            if status is None:
                status = await anchor.reply_text(plan.status)
            else:
                await status.edit_text(plan.status)
        except BaseException:
            self._pending.discard(key)
            raise
        reply_to = {
            "platform": "telegram",
            "chat_id": status.chat_id,
            "status_message_id": status.message_id,
            "reply_to_message_id": command_id,
            "headline": plan.headline,
        }
        # The user has their answer: the job is made in the background, so the user's next
        # command is answered without waiting for it. Their jobs are still made one at a
        # time, in the order of their commands (the quotas go to the earlier ones): the
        # submission takes its place in the user's line before this command lets go of hers.
        line = self._submit_locks.setdefault(who.owner, asyncio.Lock())
        await line.acquire()
        task = asyncio.create_task(self._submit(line, plan, key, reply_to, status))
        self._submits.add(task)
        task.add_done_callback(self._submits.discard)

    async def _submit(
        self, line: asyncio.Lock, plan: JobPlan, key: str, reply_to: dict, status: Message
    ) -> None:
        try:
            submitted = await self._run(submission.submit_plan, plan, key, reply_to)
            if isinstance(submitted, Reply):
                await status.edit_text(submitted.text)
                return
            _job_id, fresh = submitted
            if not fresh:
                await status.edit_text(said.ALREADY_ON_IT)
        except Exception:  # the command was answered: say on its status message what failed
            log.exception("submitting %s failed", key)
            with contextlib.suppress(TelegramError):
                await status.edit_text(said.SOMETHING_WENT_WRONG)
        finally:
            self._pending.discard(key)
            line.release()
            if not line.locked() and len(self._submit_locks) > 1000:
                self._submit_locks.pop(plan.owner, None)

    async def _download(
        self, context: ContextTypes.DEFAULT_TYPE, media, filename: str, folder: Path
    ) -> Path | Reply:
        limit = self.s.telegram_download_limit_bytes
        if media.file_size and media.file_size > limit:
            return Reply(TELEGRAM.too_big(media.file_size, limit))
        safe = re.sub(r"[^\w.-]", "_", Path(filename).name)[-80:] or "upload"
        local = folder / safe
        try:
            remote = await context.bot.get_file(media.file_id)
        except BadRequest as exc:
            if "too big" in exc.message.lower():
                return Reply(TELEGRAM.too_big(media.file_size or limit + 1, limit))
            raise
        await remote.download_to_drive(local)
        return local

    def _scratch(self) -> Path:
        folder = self.s.work_dir / "telegram" / uuid.uuid4().hex
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    # -- commands

    async def on_help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        who = _who(update)
        await self._reply(update.effective_message, await self._run(help.help_command, who))

    async def _song_command(
        self, verb: str, update: Update, context: ContextTypes.DEFAULT_TYPE
    ) -> None:
        """`/cover`, `/stems`, `/karaoke`: with a song's name, or as a reply to its file."""
        message = update.effective_message
        who = _who(update)
        key = _key(message.chat_id, message.message_id)
        args = _args(message)
        async with self._serial(who):
            if await self._seen(key):
                return
            replied = message.reply_to_message
            incoming = _incoming(replied) if replied is not None else None
            if incoming is None:
                outcome = await self._run(songs.song_command, who, verb, args)
                await self._outcome(message, who, outcome, key)
                return
            decision = await self._run(songs.song_file, who, verb, args, incoming)
            if isinstance(decision, Reply):
                await self._reply(message, decision)
                return
            await message.chat.send_action(ChatAction.TYPING)
            folder = self._scratch()
            try:
                local = await self._download(context, _media(replied), incoming.filename, folder)
                if isinstance(local, Reply):
                    await self._reply(message, local)
                    return
                audio = replied.audio
                title = (audio.title if audio else None) or Path(incoming.filename).stem
                artist = (audio.performer if audio else None) or ""
                outcome = await self._run(
                    songs.song_downloaded, who, verb, args, local, title, artist
                )
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            await self._outcome(message, who, outcome, key)

    async def _simple(
        self, handler, with_args: bool, update: Update, context: ContextTypes.DEFAULT_TYPE
    ) -> None:
        """A command of `ONE_REPLY`: one reply (or a plan) from its handler."""
        message = update.effective_message
        args = (_args(message),) if with_args else ()
        await self._one_reply(update, handler, *args)

    async def _one_reply(self, update: Update, handler, *args) -> None:
        message = update.effective_message
        who = _who(update)
        async with self._serial(who):
            outcome = await self._run(handler, who, *args)
            await self._outcome(message, who, outcome, _key(message.chat_id, message.message_id))

    async def on_trending(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        who = _who(update)
        args = _args(message)
        is_admin = who.private
        if not who.private and not who.placeholder and args.strip().lower() in ("on", "off"):
            member = await context.bot.get_chat_member(message.chat_id, int(who.user_id))
            is_admin = member.status in (ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR)
        await self._one_reply(update, trending.trending, args, is_admin)

    async def on_charts(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        who = _who(update)
        args = _args(message)
        is_admin = who.private
        if not who.private and not who.placeholder and args.strip():  # may set the default
            member = await context.bot.get_chat_member(message.chat_id, int(who.user_id))
            is_admin = member.status in (ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR)
        await self._one_reply(update, chart_menu.charts, args, is_admin)

    async def on_unknown(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        token = (message.text or "").split(maxsplit=1)[0].lstrip("/")
        command, _at, addressee = token.partition("@")
        if addressee and addressee.lower() != (context.bot.username or "").lower():
            return  # meant for another bot
        if not addressee and not _who(update).private:
            return  # in a group, a bare unknown command may be another bot's
        await self._reply(message, help.unknown_command(self.s, _who(update), command))

    async def on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._reply(update.effective_message, help.chatter(self.s, _who(update)))

    # -- files

    async def on_file(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        who = _who(update)
        incoming = _incoming(message)
        if incoming is None:
            return
        source = _key(message.chat_id, message.message_id)
        async with self._serial(who):
            decision = await self._run(sessions.loose_file, who, incoming)
            if not isinstance(decision, Download):
                await self._reply(message, decision)
                return
            await message.chat.send_action(ChatAction.TYPING)
            folder = self._scratch()
            try:
                local = await self._download(context, _media(message), incoming.filename, folder)
                if isinstance(local, Reply):
                    await self._reply(message, local)
                    return
                if decision.purpose == "sample":
                    took = training.sample_downloaded
                else:
                    took = importing.model_downloaded
                outcome = await self._run(took, who, source, local, incoming.filename)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            await self._outcome(message, who, outcome, source)

    # -- buttons

    async def on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query: CallbackQuery = update.callback_query
        who = _who(update)
        menu = query.message if isinstance(query.message, Message) else None
        if menu is None:
            await query.answer(said.BUTTON_EXPIRED)
            return
        refused = await self._run(buttons.press_refusal, who, query.data or "")
        if refused is not None:  # another user's button, or junk: nothing happens
            await query.answer(refused.toast)
            return
        key = _key(menu.chat_id, menu.message_id)
        async with self._serial(who):
            if await self._seen(key):
                await query.answer(said.ALREADY_PRESSED)
                return
            outcome = await self._run(buttons.pressed, who, query.data or "")
            if isinstance(outcome, JobPlan):
                await query.answer()
                command = menu.reply_to_message
                command_id = command.message_id if command is not None else menu.message_id
                await self._start_job(who, outcome, key, menu, command_id, status=menu)
                return
            await query.answer(outcome.toast)
            if outcome.text:
                await query.edit_message_text(outcome.text, reply_markup=_markup(outcome))

    # -- errors

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("handling a Telegram update failed", exc_info=context.error)
        if not isinstance(update, Update):
            return
        with contextlib.suppress(TelegramError):
            if update.callback_query is not None:
                await update.callback_query.answer(said.SOMETHING_WENT_WRONG[:190])
            elif update.effective_chat is not None:
                chat_id = update.effective_chat.id
                await context.bot.send_message(chat_id, said.SOMETHING_WENT_WRONG)


def run(s=None, webhook_url: str | None = None, listen: str = "0.0.0.0", port: int = 8443) -> None:
    """Run the bot until interrupted: long polling, or a webhook at `webhook_url`."""
    bot = TelegramBot(s)
    app = bot.build()
    if webhook_url is None:
        app.run_polling(allowed_updates=Update.ALL_TYPES)
        return
    secret = bot.s.telegram_webhook_secret or secrets.token_urlsafe(32)
    app.run_webhook(
        listen=listen,
        port=port,
        url_path=urlparse(webhook_url).path.lstrip("/"),
        webhook_url=webhook_url,
        secret_token=secret,
        allowed_updates=Update.ALL_TYPES,
    )
