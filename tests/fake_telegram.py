"""A fake Telegram Bot API for tests: a real aiohttp server on 127.0.0.1, in its own thread.

It speaks the part of the Bot API that python-telegram-bot 22 and `flows.chat` use:
getMe, setMyCommands, deleteWebhook/setWebhook, getUpdates (a real long poll that honours
`offset` and lets go of waiting polls on shutdown), getFile and the file download,
sendMessage, editMessageText, sendAudio/sendDocument/sendVoice (multipart), sendChatAction,
answerCallbackQuery, getChatMember and deleteMessage. Like Telegram, it refuses downloads over
20 MB ("file is too big") and uploads over 50 MB (413), and says "message is not modified"
for an edit that changes nothing. Every request is recorded (`calls`), and tests can make the
next calls of a method fail (`fail_next`: a 429 with any `retry_after`, a 5xx), fail for a
while (`fail_for`: an outage), or be done but answered too late (`delay_next`: the answer
is lost past the client's read timeout).

Tests play the users: `send_text`, `send_voice`, `send_audio`, `send_document`, `press` and
`redeliver` push updates that the bot's long poll picks up, from any user id (`NAMES` gives
them first names; Telegram's placeholder senders and `sender_chat` included). `BotProcess`
runs a real `Application` in a thread of its own, started and stopped by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

NAMES = {1: "Ada", 2: "Bob", 1087968824: "Group", 136817688: "Channel", 777000: "Telegram"}
DOWNLOAD_LIMIT = 20 * 1024 * 1024
UPLOAD_LIMIT = 50 * 1024 * 1024
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)


@dataclass
class Call:
    """One request the bot (or a flow) made."""

    method: str
    params: dict[str, Any]
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    at: float = 0.0  # time.monotonic() when it arrived
    status: int = 200  # what the fake answered
    late: bool = False  # answered after a delay (`delay_next`): the client may not have seen it

    def int(self, name: str) -> int | None:
        value = self.params.get(name)
        return int(value) if value not in (None, "") else None


def _decode(value: str) -> Any:
    if value[:1] in ("{", "["):
        with contextlib.suppress(ValueError):
            return json.loads(value)
    return value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeTelegram:
    def __init__(self, token: str = "123456:TEST-token"):
        self.token = token
        self.bot_user = {
            "id": 424242,
            "is_bot": True,
            "first_name": "Encore",
            "username": "encore_test_bot",
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self.calls: list[Call] = []
        self.messages: dict[tuple[int, int], dict] = {}
        self.files: dict[str, tuple[str, bytes, int]] = {}  # file_id -> (path, bytes, size)
        self.admins: dict[int, set[int]] = {}
        self.owners: dict[int, int] = {}
        self.webhook: dict | None = None
        self.commands: list = []
        self._failures: dict[str, list[tuple[int, str, float | None]]] = {}
        self._outages: dict[str, tuple[float, int]] = {}  # method -> (until, code)
        self._delays: dict[str, list[float]] = {}
        self._updates: list[dict] = []
        self._update_id = 100
        self._message_ids: dict[int, int] = {}
        self._file_seq = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._changed: asyncio.Condition | None = None
        self._closing = False
        self.port = free_port()

    # -- lifecycle

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def file_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file/bot"

    def start(self) -> FakeTelegram:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._serve())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="fake-telegram", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake Telegram server did not start")
        return self

    async def _serve(self) -> None:
        self._changed = asyncio.Condition()
        app = web.Application(client_max_size=UPLOAD_LIMIT + 8 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def stop(self) -> None:
        if self._loop is None:
            return

        async def close() -> None:
            self._closing = True
            async with self._changed:
                self._changed.notify_all()  # waiting long polls answer at once
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    # -- what tests set up

    def fail_next(
        self,
        method: str,
        times: int = 1,
        code: int = 500,
        description: str = "Internal Server",
        retry_after: float | None = None,
    ) -> None:
        """Refuse the next `times` calls of `method` (a 429 says `retry_after`, default 1 s)."""
        if code == 429 and retry_after is None:
            retry_after = 1
        with self._lock:
            self._failures.setdefault(method, []).extend([(code, description, retry_after)] * times)

    def fail_for(self, method: str, seconds: float, code: int = 502) -> None:
        """Answer every call of `method` with `code` for the next `seconds` (an outage)."""
        with self._lock:
            self._outages[method] = (time.monotonic() + seconds, code)

    def delay_next(self, method: str, seconds: float, times: int = 1) -> None:
        """Do the next `times` calls of `method` (the message is sent) but answer `seconds`
        late: past a client's read timeout, its answer is lost."""
        with self._lock:
            self._delays.setdefault(method, []).extend([seconds] * times)

    def make_admin(self, chat_id: int, user_id: int, owner: bool = False) -> None:
        with self._lock:
            if owner:
                self.owners[chat_id] = user_id
            self.admins.setdefault(chat_id, set()).add(user_id)

    def _file_path(self, folder: str, filename: str) -> str:
        """Telegram names stored files itself (`documents/file_12.mp3`), never by the name the
        sender gave, which only travels as `file_name`."""
        suffix = filename.rpartition(".")[2] if "." in filename.strip(".") else ""
        tail = f".{suffix}" if suffix.isalnum() else ""
        return f"{folder}/file_{self._file_seq + 1}{tail}"

    def add_file(self, data: bytes, path: str, size: int | None = None) -> str:
        with self._lock:
            self._file_seq += 1
            file_id = f"file-{self._file_seq}"
            self.files[file_id] = (path, data, len(data) if size is None else size)
        return file_id

    # -- users talking to the bot

    @staticmethod
    def user(user_id: int = 1, first_name: str | None = None) -> dict:
        name = first_name or NAMES.get(user_id, f"User {user_id}")
        return {"id": user_id, "is_bot": False, "first_name": name, "language_code": "en"}

    @staticmethod
    def private_chat(user_id: int = 1, first_name: str = "Ada") -> dict:
        return {"id": user_id, "type": "private", "first_name": first_name}

    @staticmethod
    def group_chat(chat_id: int = -100777, title: str = "Friends") -> dict:
        return {"id": chat_id, "type": "supergroup", "title": title}

    def _next_message_id(self, chat_id: int) -> int:
        with self._lock:
            self._message_ids[chat_id] = self._message_ids.get(chat_id, 0) + 1
            return self._message_ids[chat_id]

    def _user_message(
        self,
        user_id: int,
        chat: dict | None,
        reply_to: dict | None,
        sender_chat: dict | None = None,
        **content,
    ) -> dict:
        chat = chat or self.private_chat(user_id)
        message = {
            "message_id": self._next_message_id(chat["id"]),
            "date": int(time.time()),
            "chat": chat,
            "from": self.user(user_id),
            **content,
        }
        if sender_chat is not None:  # sent on behalf of a chat (a channel, or the group)
            message["sender_chat"] = sender_chat
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        with self._lock:
            self.messages[(chat["id"], message["message_id"])] = message
        self._push({"message": message})
        return message

    def send_text(
        self,
        text: str,
        user_id: int = 1,
        chat: dict | None = None,
        reply_to: dict | None = None,
        sender_chat: dict | None = None,
    ) -> dict:
        content: dict[str, Any] = {"text": text}
        if text.startswith("/"):
            command = text.split()[0]
            content["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        return self._user_message(user_id, chat, reply_to, sender_chat, **content)

    def send_voice(
        self,
        data: bytes,
        duration: int,
        user_id: int = 1,
        chat: dict | None = None,
        size: int | None = None,
        announce_size: bool = True,
    ) -> dict:
        file_id = self.add_file(data, f"voice/file_{self._file_seq + 1}.oga", size)
        voice = {
            "file_id": file_id,
            "file_unique_id": f"u{file_id}",
            "duration": duration,
            "mime_type": "audio/ogg",
        }
        if announce_size:
            voice["file_size"] = len(data) if size is None else size
        return self._user_message(user_id, chat, None, voice=voice)

    def send_audio(
        self,
        data: bytes,
        filename: str,
        title: str | None = None,
        performer: str | None = None,
        user_id: int = 1,
        chat: dict | None = None,
    ) -> dict:
        file_id = self.add_file(data, self._file_path("music", filename))
        audio = {
            "file_id": file_id,
            "file_unique_id": f"u{file_id}",
            "duration": 4,
            "file_name": filename,
            "mime_type": "audio/mpeg",
            "file_size": len(data),
        }
        if title:
            audio["title"] = title
        if performer:
            audio["performer"] = performer
        return self._user_message(user_id, chat, None, audio=audio)

    def send_document(
        self,
        data: bytes,
        filename: str,
        mime: str = "application/octet-stream",
        user_id: int = 1,
        chat: dict | None = None,
    ) -> dict:
        file_id = self.add_file(data, self._file_path("documents", filename))
        document = {
            "file_id": file_id,
            "file_unique_id": f"u{file_id}",
            "file_name": filename,
            "mime_type": mime,
            "file_size": len(data),
        }
        return self._user_message(user_id, chat, None, document=document)

    def press(self, message: dict, data: str, user_id: int = 1) -> str:
        """Press an inline button of a message the bot sent (as it looks now), as `user_id`
        (anyone in the chat can); returns the callback query's id."""
        with self._lock:
            current = dict(self.messages[(message["chat"]["id"], message["message_id"])])
        query_id = f"cq{self._update_id + 1}"
        self._push(
            {
                "callback_query": {
                    "id": query_id,
                    "from": self.user(user_id),
                    "message": current,
                    "chat_instance": "ci-1",
                    "data": data,
                }
            }
        )
        return query_id

    def answer_to(self, query_id: str) -> str | None:
        """The text the bot answered a callback query with ("" for none), once it answered."""
        for call in self.calls_of("answerCallbackQuery"):
            if call.params.get("callback_query_id") == query_id:
                return str(call.params.get("text") or "")
        return None

    def redeliver(self, message: dict) -> None:
        """Deliver the same message again, as a new update (a double-submitted command)."""
        self._push({"message": message})

    def _push(self, body: dict) -> None:
        with self._lock:
            self._update_id += 1
            self._updates.append({"update_id": self._update_id, **body})

        async def wake() -> None:
            async with self._changed:
                self._changed.notify_all()

        asyncio.run_coroutine_threadsafe(wake(), self._loop).result(5)

    # -- what tests read

    def calls_of(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method and c.status == 200]

    def sent_texts(self, chat_id: int) -> list[str]:
        return [
            c.params["text"] for c in self.calls_of("sendMessage") if c.int("chat_id") == chat_id
        ]

    def edits(self, chat_id: int, message_id: int) -> list[str]:
        return [
            c.params["text"]
            for c in self.calls_of("editMessageText")
            if c.int("chat_id") == chat_id and c.int("message_id") == message_id
        ]

    def bot_message(self, chat_id: int, message_id: int) -> dict:
        with self._lock:
            return dict(self.messages[(chat_id, message_id)])

    def replies_to(self, message: dict) -> list[dict]:
        """Messages the bot sent in `message`'s chat after it, as they look now."""
        chat_id = message["chat"]["id"]
        with self._lock:
            return [
                dict(m)
                for (cid, mid), m in sorted(self.messages.items())
                if cid == chat_id
                and mid > message["message_id"]
                and m.get("from", {}).get("id") == self.bot_user["id"]
            ]

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what or predicate}")

    # -- the server

    async def _params(self, request: web.Request) -> tuple[dict, dict]:
        params: dict[str, Any] = {k: _decode(v) for k, v in request.query.items()}
        files: dict[str, tuple[str, bytes]] = {}
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                params.update(await request.json())
            else:
                form = await request.post()
                for key, value in form.items():
                    if isinstance(value, web.FileField):
                        files[key] = (value.filename, value.file.read())
                    else:
                        params[key] = _decode(value)
        return params, files

    def _error(self, call: Call, code: int, description: str, retry_after=None) -> web.Response:
        call.status = code
        body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
        if retry_after:
            body["parameters"] = {"retry_after": retry_after}
        return web.json_response(body, status=code)

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        try:
            params, files = await self._params(request)
        except web.HTTPRequestEntityTooLarge:
            call = Call(method, {}, {}, time.monotonic())
            with self._lock:
                self.calls.append(call)
            return self._error(call, 413, "Request Entity Too Large")
        call = Call(method, params, files, time.monotonic())
        with self._lock:
            self.calls.append(call)
            failing = self._failures.get(method)
            failure = failing.pop(0) if failing else None
            outage = self._outages.get(method)
            if failure is None and outage is not None and time.monotonic() < outage[0]:
                failure = (outage[1], "Bad Gateway", None)
            delays = self._delays.get(method)
            delay = delays.pop(0) if delays else 0.0
        if request.match_info["token"] != self.token:
            return self._error(call, 401, "Unauthorized")
        if failure is not None:
            return self._error(call, *failure)
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            return self._error(call, 404, "Not Found")
        try:
            result = (
                await handler(params, files) if method == "getUpdates" else handler(params, files)
            )
        except _ApiError as exc:
            return self._error(call, exc.code, exc.description)
        if delay:
            call.late = True  # done (the chat shows it), but its answer came too late
            await asyncio.sleep(delay)
        return web.json_response({"ok": True, "result": result})

    async def _download(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        path = request.match_info["path"]
        with self._lock:
            found = [data for p, data, _size in self.files.values() if p == path]
            self.calls.append(Call("download", {"path": path}, {}, time.monotonic()))
        if not found:
            return web.Response(status=404)
        return web.Response(body=found[0])

    # -- Bot API methods

    def _m_getMe(self, params, files):
        return self.bot_user

    def _m_logOut(self, params, files):
        return True

    def _m_close(self, params, files):
        return True

    def _m_deleteWebhook(self, params, files):
        self.webhook = None
        return True

    def _m_setWebhook(self, params, files):
        self.webhook = dict(params)
        return True

    def _m_getWebhookInfo(self, params, files):
        url = (self.webhook or {}).get("url", "")
        return {"url": url, "has_custom_certificate": False, "pending_update_count": 0}

    def _m_setMyCommands(self, params, files):
        self.commands = params.get("commands") or []
        return True

    def _m_sendChatAction(self, params, files):
        return True

    def _m_answerCallbackQuery(self, params, files):
        return True

    def _m_deleteMessage(self, params, files):
        with self._lock:
            self.messages.pop((int(params["chat_id"]), int(params["message_id"])), None)
        return True

    async def _m_getUpdates(self, params, files):
        offset = int(params.get("offset") or 0)
        timeout = float(params.get("timeout") or 0)
        limit = int(params.get("limit") or 100)
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if offset:
                    self._updates = [u for u in self._updates if u["update_id"] >= offset]
                pending = list(self._updates[:limit])
            left = deadline - time.monotonic()
            if pending or self._closing or left <= 0:
                return pending
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=min(left, 1.0))

    def _m_getFile(self, params, files):
        file_id = params.get("file_id")
        with self._lock:
            found = self.files.get(file_id)
        if found is None:
            raise _ApiError(400, "Bad Request: invalid file_id")
        path, _data, size = found
        if size > DOWNLOAD_LIMIT:
            raise _ApiError(400, "Bad Request: file is too big")
        return {
            "file_id": file_id,
            "file_unique_id": f"u{file_id}",
            "file_size": size,
            "file_path": path,
        }

    def _chat(self, chat_id: int) -> dict:
        if chat_id < 0:
            return self.group_chat(chat_id)
        return self.private_chat(chat_id)

    def _bot_message(self, params, **content) -> dict:
        chat_id = int(params["chat_id"])
        message = {
            "message_id": self._next_message_id(chat_id),
            "date": int(time.time()),
            "chat": self._chat(chat_id),
            "from": self.bot_user,
            **content,
        }
        reply = params.get("reply_parameters") or {}
        if isinstance(reply, dict) and reply.get("message_id"):
            with self._lock:
                original = self.messages.get((chat_id, int(reply["message_id"])))
            if original is not None:
                message["reply_to_message"] = original
        if isinstance(params.get("reply_markup"), dict):
            message["reply_markup"] = params["reply_markup"]
        with self._lock:
            self.messages[(chat_id, message["message_id"])] = message
        return message

    def _m_sendMessage(self, params, files):
        text = str(params.get("text") or "")
        if not text.strip():
            raise _ApiError(400, "Bad Request: message text is empty")
        return self._bot_message(params, text=text)

    def _m_editMessageText(self, params, files):
        key = (int(params["chat_id"]), int(params["message_id"]))
        markup = (
            params.get("reply_markup") if isinstance(params.get("reply_markup"), dict) else None
        )
        with self._lock:
            message = self.messages.get(key)
            if message is None:
                raise _ApiError(400, "Bad Request: message to edit not found")
            if message.get("text") == params.get("text") and message.get("reply_markup") == markup:
                raise _ApiError(400, NOT_MODIFIED)
            message["text"] = str(params["text"])
            message["edit_date"] = int(time.time())
            if markup is None:
                message.pop("reply_markup", None)
            else:
                message["reply_markup"] = markup
            return dict(message)

    def _upload(self, params, files, field_name: str, kind: str, extra: dict) -> dict:
        if field_name not in files:
            raise _ApiError(400, f"Bad Request: there is no {field_name} in the request")
        filename, data = files[field_name]
        if len(data) > UPLOAD_LIMIT:
            raise _ApiError(413, "Request Entity Too Large")
        file_id = self.add_file(data, f"{kind}/{filename}")
        media = {
            "file_id": file_id,
            "file_unique_id": f"u{file_id}",
            "file_name": filename,
            "file_size": len(data),
            **{k: v for k, v in extra.items() if v is not None},
        }
        content: dict[str, Any] = {kind: media}
        if params.get("caption"):
            content["caption"] = str(params["caption"])
        return self._bot_message(params, **content)

    def _m_sendAudio(self, params, files):
        extra = {
            "duration": int(params.get("duration") or 0),
            "title": params.get("title"),
            "performer": params.get("performer"),
            "mime_type": "audio/mpeg",
        }
        return self._upload(params, files, "audio", "audio", extra)

    def _m_sendVoice(self, params, files):
        extra = {"duration": int(params.get("duration") or 0), "mime_type": "audio/ogg"}
        return self._upload(params, files, "voice", "voice", extra)

    def _m_sendDocument(self, params, files):
        return self._upload(params, files, "document", "document", {})

    def _m_getChatMember(self, params, files):
        chat_id, user_id = int(params["chat_id"]), int(params["user_id"])
        user = self.user(user_id)
        with self._lock:
            owner = self.owners.get(chat_id) == user_id
            admin = user_id in self.admins.get(chat_id, set())
        if chat_id > 0 and chat_id == user_id:
            return {"status": "member", "user": user}
        if owner:
            return {"status": "creator", "user": user, "is_anonymous": False}
        if admin:
            rights = [
                "can_be_edited",
                "can_manage_chat",
                "can_delete_messages",
                "can_manage_video_chats",
                "can_restrict_members",
                "can_promote_members",
                "can_change_info",
                "can_invite_users",
                "can_post_stories",
                "can_edit_stories",
                "can_delete_stories",
            ]
            member = {"status": "administrator", "user": user, "is_anonymous": False}
            member.update(dict.fromkeys(rights, False))
            member["can_manage_chat"] = True
            return member
        return {"status": "member", "user": user}


class _ApiError(Exception):
    def __init__(self, code: int, description: str):
        super().__init__(description)
        self.code = code
        self.description = description


class BotProcess:
    """A real `Application` for `TelegramBot`, polling the fake from a thread of its own."""

    def __init__(self, settings):
        from bots.telegram import TelegramBot

        self.bot = TelegramBot(settings)
        self.app = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> BotProcess:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bot", daemon=True)
        self._thread.start()
        self.app = self.bot.build()
        self.run(self.bot.start(self.app, poll_timeout=2))
        return self

    def run(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop(self) -> None:
        if self._loop is None:
            return
        try:
            self.run(self.bot.stop(self.app))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
            self._loop = None
