"""A fake Discord REST API and gateway for tests: a real aiohttp server on 127.0.0.1.

It speaks the part of Discord that discord.py 2.7 and `flows.chat` use: `/users/@me`,
`/oauth2/applications/@me`, `PUT /applications/{app}/commands` (recorded: the command schema),
the interaction callback, follow-ups (`POST /webhooks/{app}/{token}`, JSON or multipart),
`PATCH`/`DELETE .../messages/@original`, `POST /channels/{id}/messages` (bot token required)
and attachment downloads. The gateway is a websocket speaking JSON text frames: HELLO,
heartbeat/ACK, IDENTIFY → READY, then the `INTERACTION_CREATE` events a test pushes.

Like Discord, it refuses an interaction callback later than 3 s after the interaction was
sent (10062 Unknown interaction) or a second one (40060), follow-ups on a token older than
15 minutes (50027; tests age tokens with `expire`), and uploads over the interaction's
`attachment_size_limit` (413, 40005). It replies with `Content-Type: application/json` exactly.
Tests can refuse a request (`fail_next`: a 429 with its `retry_after`, a 5xx) and read every
message body posted or edited (`message_payloads`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

APP_ID = 900000000000000001
BOT_ID = 900000000000000002
GUILD_ID = 700000000000000001
CHANNEL_ID = 700000000000000002
UPLOAD_LIMIT = 10 * 1024 * 1024
TOKEN_LIFETIME_S = 15 * 60
DEADLINE_S = 3.0
BOT_TOKEN = "fake.discord.token"
DISCORD_EPOCH_MS = 1420070400000
NAMES = {1: "ada", 2: "bob"}  # users tests play, by id


@dataclass
class Call:
    method: str
    path: str
    json: Any = None
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    auth: str | None = None
    status: int = 200
    at: float = field(default_factory=time.monotonic)


@dataclass
class Pending:
    """An interaction sent to the bot: its deadline and what was answered."""

    id: int
    token: str
    sent_at: float
    limit: int
    callbacks: list[dict] = field(default_factory=list)
    original: dict | None = None
    followups: list[dict] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"}
    )


def _error(status: int, code: int, message: str) -> web.Response:
    return _json({"code": code, "message": message}, status)


class FakeDiscord:
    """The fake service; tests play users with `command`, `autocomplete` and `press`."""

    def __init__(self):
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.api_url = f"{self.base}/api/v10"
        self.gateway_url = f"ws://127.0.0.1:{self.port}/gateway"
        self.calls: list[Call] = []
        self.commands: list[dict] | None = None  # the schema last synced
        self.interactions: dict[str, Pending] = {}  # by token
        self.channel_messages: list[dict] = []
        self.attachments: dict[str, bytes] = {}
        self.identified = threading.Event()
        self._failures: list[tuple[str, str, int, float | None]] = []  # see fail_next
        self._counter = itertools.count(1)
        self._seq = itertools.count(1)
        self._ws: web.WebSocketResponse | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._lock = threading.Lock()

    def _snowflake(self) -> int:
        """A Discord id: milliseconds since 2015 in the high bits, so it tells its time."""
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return (ms << 22) | (next(self._counter) & 0x3FFFFF)

    # -- running

    def start(self) -> FakeDiscord:
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve():
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._serve())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="fake-discord", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    async def _serve(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", "/api/v10/{path:.*}", self._rest)
        app.router.add_get("/attachments/{name}", self._download)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def stop(self) -> None:
        if self._loop is None:
            return

        async def close():
            if self._ws is not None:
                await self._ws.close()
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what or predicate}")

    # -- playing users

    def user(self, user_id: int = 1, name: str | None = None) -> dict:
        name = name or NAMES.get(user_id, f"user{user_id}")
        return {"id": str(user_id), "username": name, "global_name": name.title(),
                "discriminator": "0", "avatar": None}  # fmt: skip

    def _interaction(
        self, itype: int, data: dict, user_id: int, permissions: int, limit: int
    ) -> Pending:
        iid = self._snowflake()
        token = f"tok{iid}"
        payload = {
            "id": str(iid),
            "application_id": str(APP_ID),
            "type": itype,
            "data": data,
            "guild_id": str(GUILD_ID),
            "channel_id": str(CHANNEL_ID),
            "channel": {
                "id": str(CHANNEL_ID),
                "type": 0,
                "guild_id": str(GUILD_ID),
                "name": "general",
                "position": 0,
                "permission_overwrites": [],
                "nsfw": False,
                "parent_id": None,
            },  # fmt: skip
            "member": {
                "user": self.user(user_id),
                "roles": [],
                "joined_at": "2024-01-01T00:00:00+00:00",
                "deaf": False,
                "mute": False,
                "flags": 0,
                "permissions": str(permissions),
            },
            "token": token,
            "version": 1,
            "app_permissions": str((1 << 53) - 1),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(GUILD_ID)},
            "context": 0,
            "attachment_size_limit": limit,
        }
        pending = Pending(iid, token, time.monotonic(), limit)
        with self._lock:
            self.interactions[token] = pending
        self._dispatch("INTERACTION_CREATE", payload)
        return pending

    def command(
        self,
        name: str,
        options: list[dict] | None = None,
        user_id: int = 1,
        permissions: int = 0,
        attachments: dict[str, tuple[str, bytes, str]] | None = None,
        limit: int = UPLOAD_LIMIT,
    ) -> Pending:
        """A slash command; `attachments` maps option name to (filename, bytes, mime)."""
        options = [dict(o) for o in options or []]
        target = options  # a subcommand's attachments go inside it
        if options and options[0].get("type") == 1:
            target = options[0]["options"] = list(options[0].get("options") or [])
        resolved: dict[str, dict] = {}
        for option, (filename, data, mime) in (attachments or {}).items():
            aid = str(self._snowflake())
            key = f"{aid}-{filename}"
            self.attachments[key] = data
            url = f"{self.base}/attachments/{key}"
            resolved[aid] = {"id": aid, "filename": filename, "size": len(data), "url": url,
                             "proxy_url": url, "content_type": mime}  # fmt: skip
            target.append({"name": option, "type": 11, "value": aid})
        data = {"id": "1", "name": name, "type": 1, "options": options}
        if resolved:
            data["resolved"] = {"attachments": resolved}
        return self._interaction(2, data, user_id, permissions, limit)

    def autocomplete(self, name: str, options: list[dict], user_id: int = 1) -> Pending:
        data = {"id": "1", "name": name, "type": 1, "options": options}
        return self._interaction(4, data, user_id, 0, UPLOAD_LIMIT)

    def press(self, message: dict, custom_id: str, user_id: int = 1) -> Pending:
        data = {"custom_id": custom_id, "component_type": 2}
        iid = self._snowflake()
        token = f"tok{iid}"
        pending = Pending(iid, token, time.monotonic(), UPLOAD_LIMIT, original=message)
        payload = {
            "id": str(iid),
            "application_id": str(APP_ID),
            "type": 3,
            "data": data,
            "guild_id": str(GUILD_ID),
            "channel_id": str(CHANNEL_ID),
            "member": {
                "user": self.user(user_id),
                "roles": [],
                "flags": 0,
                "deaf": False,
                "mute": False,
                "joined_at": "2024-01-01T00:00:00+00:00",
                "permissions": "0",
            },  # fmt: skip
            "message": message,
            "token": token,
            "version": 1,
            "app_permissions": str((1 << 53) - 1),
            "locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(GUILD_ID)},
            "context": 0,
            "attachment_size_limit": UPLOAD_LIMIT,
        }
        with self._lock:
            self.interactions[token] = pending
        self._dispatch("INTERACTION_CREATE", payload)
        return pending

    def expire(self, pending: Pending) -> None:
        """Age the interaction's token past its 15 minutes."""
        pending.sent_at -= TOKEN_LIFETIME_S + 1

    def fail_next(
        self, method: str, fragment: str, status: int = 429, retry_after: float | None = 1.0
    ) -> None:
        """Refuse the next `method` request whose path has `fragment`: a 429 says
        `retry_after` (in Discord's body), another status is a bare server error."""
        with self._lock:
            self._failures.append((method, fragment, status, retry_after))

    def calls_to(self, method: str, fragment: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and fragment in c.path]

    def message_payloads(self) -> list[tuple[Call, dict]]:
        """Every message body that was posted or edited (JSON or multipart `payload_json`):
        interaction responses with content, follow-ups, edits and channel posts."""
        out = []
        for call in list(self.calls):
            body = call.json if isinstance(call.json, dict) else {}
            if call.path.endswith("/callback"):
                body = body.get("data") or {}
            if "content" in body:
                out.append((call, body))
        return out

    # -- the gateway

    def _dispatch(self, event: str, data: dict) -> None:
        self.identified.wait(10)
        frame = {"op": 0, "t": event, "s": next(self._seq), "d": data}

        async def send():
            await self._ws.send_str(json.dumps(frame))

        asyncio.run_coroutine_threadsafe(send(), self._loop).result(5)

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 40000}}))
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                break
            frame = json.loads(msg.data)
            if frame["op"] == 1:
                await ws.send_str(json.dumps({"op": 11}))
            elif frame["op"] == 2:
                self._ws = ws
                ready = {
                    "v": 10,
                    "user": {**self.user(BOT_ID, "encore"), "bot": True},
                    "guilds": [],
                    "session_id": "session",
                    "resume_gateway_url": self.gateway_url,
                    "application": {"id": str(APP_ID), "flags": 0},
                }
                await ws.send_str(
                    json.dumps({"op": 0, "t": "READY", "s": next(self._seq), "d": ready})
                )
                self.identified.set()
        return ws

    # -- REST

    async def _download(self, request: web.Request) -> web.Response:
        data = self.attachments.get(request.match_info["name"])
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, content_type="application/octet-stream")

    def _message(self, content: str, author_id: int = BOT_ID, **extra) -> dict:
        return {
            "id": str(self._snowflake()),
            "channel_id": str(CHANNEL_ID),
            "author": {**self.user(author_id, "encore"), "bot": True},
            "content": content,
            "timestamp": "2024-01-01T00:00:00+00:00",
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "type": 0,
            "components": [],
            **extra,
        }

    async def _body(self, request: web.Request) -> tuple[Any, dict[str, tuple[str, bytes]]]:
        if not request.can_read_body:
            return None, {}
        if request.content_type == "application/json":
            return await request.json(), {}
        body: Any = None
        files: dict[str, tuple[str, bytes]] = {}
        reader = await request.multipart()
        async for part in reader:
            if part.name == "payload_json":
                body = json.loads(await part.text())
            else:
                files[part.name] = (part.filename or part.name, await part.read())
        return body, files

    async def _rest(self, request: web.Request) -> web.Response:
        body, files = await self._body(request)
        path = "/" + request.match_info["path"]
        call = Call(request.method, path, body, files, request.headers.get("Authorization"))
        self.calls.append(call)
        with self._lock:
            failure = next(
                (f for f in self._failures if f[0] == request.method and f[1] in path), None
            )
            if failure is not None:
                self._failures.remove(failure)
        if failure is not None and failure[2] == 429:
            limited = {"message": "You are being rate limited.", "retry_after": failure[3],
                       "global": False}  # fmt: skip
            response = _json(limited, 429)
        elif failure is not None:
            response = _error(failure[2], 0, f"{failure[2]}: Server Error")
        else:
            response = self._route(request.method, path, body or {}, files, call)
        call.status = response.status
        return response

    def _attach(self, body: dict, files: dict) -> list[dict]:
        out = []
        for i, (_name, (filename, data)) in enumerate(files.items()):
            key = f"out{self._snowflake()}-{filename}"
            self.attachments[key] = data
            url = f"{self.base}/attachments/{key}"
            out.append({"id": str(i), "filename": filename, "size": len(data), "url": url,
                        "proxy_url": url})  # fmt: skip
        return out

    def _route(self, method: str, path: str, body: dict, files: dict, call: Call):  # noqa: C901
        parts = path.strip("/").split("/")
        if path == "/users/@me":
            return _json({**self.user(BOT_ID, "encore"), "bot": True})
        if path == "/oauth2/applications/@me":
            return _json({"id": str(APP_ID), "name": "Encore", "description": "", "icon": None,
                          "bot_public": True, "bot_require_code_grant": False,
                          "verify_key": "00", "flags": 0,
                          "owner": self.user(5, "owner")})  # fmt: skip
        if parts[0] == "applications" and parts[-1] == "commands" and method == "PUT":
            if call.auth != f"Bot {BOT_TOKEN}":
                return _error(401, 0, "401: Unauthorized")
            self.commands = body
            out = [{**c, "id": str(self._snowflake()), "application_id": str(APP_ID),
                    "version": "1", "default_member_permissions": c.get(
                        "default_member_permissions")} for c in body]  # fmt: skip
            return _json(out)
        if parts[0] == "interactions" and parts[-1] == "callback":
            pending = self.interactions.get(parts[2])
            if pending is None or str(pending.id) != parts[1]:
                return _error(404, 10062, "Unknown interaction")
            if time.monotonic() - pending.sent_at > DEADLINE_S:
                return _error(404, 10062, "Unknown interaction")
            if pending.callbacks:
                return _error(400, 40060, "Interaction has already been acknowledged.")
            if files and sum(len(d) for _f, d in files.values()) > pending.limit:
                return _error(413, 40005, "Request entity too large")
            pending.callbacks.append(body)
            ctype = body.get("type")
            data = body.get("data") or {}
            ephemeral = bool((data.get("flags") or 0) & 64)
            resource: dict = {"type": ctype}
            if ctype in (4, 5):
                pending.original = self._message(data.get("content") or "", flags=data.get("flags"))
                pending.original["components"] = data.get("components") or []
                resource["message"] = pending.original
            elif ctype in (6, 7) and pending.original is not None:
                pending.original = {
                    **pending.original,
                    **{k: v for k, v in data.items() if k in ("content", "components")},
                }
                resource["message"] = pending.original
            interaction = {"id": str(pending.id), "type": 2, "response_message_loading": ctype == 5,
                           "response_message_ephemeral": ephemeral}  # fmt: skip
            return _json({"interaction": interaction, "resource": resource})
        if parts[0] == "webhooks" and len(parts) >= 3:
            pending = self.interactions.get(parts[2])
            if pending is None or parts[1] != str(APP_ID):
                return _error(404, 10015, "Unknown Webhook")
            if time.monotonic() - pending.sent_at > TOKEN_LIFETIME_S:
                return _error(401, 50027, "Invalid Webhook Token")
            if files and max(len(d) for _f, d in files.values()) > pending.limit:
                return _error(413, 40005, "Request entity too large")
            if len(parts) == 3 and method == "POST":
                message = self._message(body.get("content") or "", flags=body.get("flags"))
                message["attachments"] = self._attach(body, files)
                message["components"] = body.get("components") or []
                pending.followups.append(message)
                return _json(message)
            if parts[3:] == ["messages", "@original"]:
                if pending.original is None:
                    return _error(404, 10008, "Unknown Message")
                if method == "PATCH":
                    for key in ("content", "components"):
                        if key in body:
                            pending.original[key] = body[key]
                    if files:
                        pending.original["attachments"] = self._attach(body, files)
                    return _json(pending.original)
                if method == "DELETE":
                    pending.original = None
                    return web.Response(status=204)
                return _json(pending.original)
        if parts[0] == "channels" and parts[-1] == "messages" and method == "POST":
            if call.auth != f"Bot {BOT_TOKEN}":
                return _error(401, 0, "401: Unauthorized")
            if files and max(len(d) for _f, d in files.values()) > UPLOAD_LIMIT:
                return _error(413, 40005, "Request entity too large")
            message = self._message(body.get("content") or "", channel_id=parts[1])
            message["attachments"] = self._attach(body, files)
            message["allowed_mentions"] = body.get("allowed_mentions")
            self.channel_messages.append(message)
            return _json(message)
        return _error(404, 0, f"404: Not Found ({method} {path})")

    def attachment(self, attachment: dict) -> bytes:
        return self.attachments[attachment["url"].rsplit("/", 1)[1]]
