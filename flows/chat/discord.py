"""Discord: a small REST client for flows, and the courier that speaks through it.

The bot itself uses discord.py (`bots/discord_bot.py`). A job's status message is the
interaction's deferred response: while the interaction token is fresh, the courier edits it
and posts results as follow-ups on the interaction's webhook; later, results go to the
channel with a mention of the user who asked. Nothing posted pings anyone else
(`allowed_mentions`): text in it (a song title) pings nobody.
"""

from __future__ import annotations

import json
import mimetypes
import time
from pathlib import Path

from flows.chat.client import BotApiError, NoBotToken, http_client, quickly
from flows.chat.courier import Courier
from flows.chat.delivery import platform
from flows.settings import Settings

# Every message Encore posts on Discord says this: text in it (a song title) pings nobody.
NO_MENTIONS: dict = {"parse": []}


class DiscordApi:
    """A small synchronous Discord REST client for flows.

    Like `TelegramApi`, `call` makes one request; `quick=True` retries briefly."""

    def __init__(self, s: Settings):
        self.s = s
        self._base = s.discord_api_url.rstrip("/")
        self._http = http_client(s)

    def close(self) -> None:
        self._http.close()

    def call(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        files: dict[str, tuple[Path, str]] | None = None,
        bot: bool = False,
        quick: bool = False,
    ):
        """Call the REST API; raises BotApiError for a refusal, httpx errors for a failed
        request."""
        if quick:
            return quickly(lambda: self._once(method, path, body, files, bot))
        return self._once(method, path, body, files, bot)

    def _once(self, method, path, body, files, bot):
        headers = {}
        if bot:
            if not self.s.discord_token:
                raise NoBotToken("ENCORE_DISCORD_TOKEN is not set; results cannot be posted.")
            headers["Authorization"] = f"Bot {self.s.discord_token}"
        url = f"{self._base}{path}"
        if files:
            handles = {}
            try:
                payload = dict(body or {})
                payload["attachments"] = [
                    {"id": i, "filename": name} for i, (_path, name) in enumerate(files.values())
                ]
                for i, (path_, name) in enumerate(files.values()):
                    mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
                    handles[f"files[{i}]"] = (name, open(path_, "rb"), mime)  # noqa: SIM115
                response = self._http.request(
                    method,
                    url,
                    headers=headers,
                    data={"payload_json": json.dumps(payload)},
                    files=handles,
                )
            finally:
                for _name, handle, _mime in handles.values():
                    handle.close()
        else:
            response = self._http.request(method, url, headers=headers, json=body)
        if response.status_code == 204:
            return None
        try:
            data = response.json()
        except ValueError:
            if response.is_success:
                return None
            raise BotApiError(response.status_code, response.text[:200]) from None
        if response.is_success:
            return data
        data = data if isinstance(data, dict) else {}
        raise BotApiError(
            response.status_code, str(data.get("message") or ""), data.get("retry_after")
        )


@platform
class DiscordCourier(Courier):
    """A Courier for a Discord interaction.

    `reply_to` holds `application_id`, `interaction_token`, `token_at` (epoch seconds),
    `channel_id`, `user_id` and `upload_limit` (the interaction's `attachment_size_limit`).
    While the token is fresh, the deferred response is the status message and results are
    follow-ups. Later, results go to the channel with a mention of the user.
    """

    platform = "discord"
    api_class: type = DiscordApi

    @classmethod
    def chat_target(cls, chat_id: str, head: str) -> dict:
        # posted to the channel by the bot, mentioning nobody
        return {**super().chat_target(chat_id, head), "channel_id": chat_id}

    @property
    def upload_limit(self) -> int:
        return int(self.reply_to.get("upload_limit") or self.s.discord_upload_limit_bytes)

    @property
    def chat_id(self):
        return self.reply_to.get("channel_id")

    def fresh(self) -> bool:
        age = time.time() - float(self.reply_to.get("token_at") or 0)
        return age < self.s.discord_token_fresh_s

    def unprompted(self) -> bool:
        return not self.reply_to.get("interaction_token")

    def _webhook(self) -> str:
        return f"/webhooks/{self.reply_to['application_id']}/{self.reply_to['interaction_token']}"

    def edit(self, text: str, wait: bool = False) -> bool:
        if self._message_gone or not self.reply_to.get("interaction_token"):
            return False
        if not self.fresh():
            self._message_gone = True
            return False
        if text == self._shown:
            return True
        if wait:
            self._wait_edit()
        try:
            self.api.call(
                "PATCH",
                f"{self._webhook()}/messages/@original",
                {"content": text, "allowed_mentions": NO_MENTIONS},
                quick=True,
            )
        except BotApiError as exc:
            if exc.code in (401, 404):  # the token expired, or the message was deleted
                self._message_gone = True
                return False
            raise
        self._edited(text)
        return True

    def _send(self, method: str, data: dict, files: dict[str, tuple[Path, str]] | None = None):
        if method == "sendMessage":
            content = data.get("text") or ""
        elif data.get("caption"):
            content = data["caption"]
        elif data.get("title"):
            content = f"🎧 {data['title']}"
        else:
            content = ""
        content = content[:1900]
        if self.fresh() and self.reply_to.get("interaction_token"):
            try:
                path = f"{self._webhook()}?wait=true"
                body = {"content": content, "allowed_mentions": NO_MENTIONS}
                return self.api.call("POST", path, body, files)
            except BotApiError as exc:
                if exc.code not in (401, 404):
                    raise
        user = self.reply_to.get("user_id")
        body = {
            "content": f"<@{user}> {content}" if user else content,
            # the user who asked is pinged; nobody a song title names (@everyone, roles, users)
            "allowed_mentions": {"parse": [], "users": [str(user)] if user else []},
        }
        return self.api.call("POST", f"/channels/{self.chat_id}/messages", body, files, bot=True)
