"""Telegram: a small Bot API client for flows, and the courier that speaks through it.

The bot itself uses python-telegram-bot (`bots/telegram.py`); flows post over plain HTTP, so
a bot restart loses nothing. The status message is the bot's reply to the command, edited in
place; results are replies to the command's message.
"""

from __future__ import annotations

import json
import mimetypes
from pathlib import Path
from typing import Any

from flows.chat.client import BotApiError, NoBotToken, http_client, quickly
from flows.chat.courier import Courier
from flows.chat.delivery import platform
from flows.settings import Settings


class TelegramApi:
    """A small synchronous Bot API client for flows.

    `call` makes one request (retrying is the delivery's business, which knows what was sent);
    `quick=True` retries briefly, for status edits."""

    def __init__(self, s: Settings):
        if not s.telegram_token:
            raise NoBotToken("ENCORE_TELEGRAM_TOKEN is not set; results cannot be posted.")
        self._base = f"{s.telegram_api_url}{s.telegram_token}"
        self._http = http_client(s)

    def close(self) -> None:
        self._http.close()

    def call(
        self,
        method: str,
        data: dict[str, Any],
        files: dict[str, tuple[Path, str]] | None = None,
        quick: bool = False,
    ):
        """Call `method`; raises BotApiError for a refusal, httpx errors for a failed request."""
        if quick:
            return quickly(lambda: self._once(method, data, files))
        return self._once(method, data, files)

    def _once(self, method: str, data: dict[str, Any], files: dict[str, tuple[Path, str]] | None):
        form = {
            key: json.dumps(value) if isinstance(value, dict | list) else str(value)
            for key, value in data.items()
            if value is not None
        }
        handles = {}
        try:
            for field, (path, filename) in (files or {}).items():
                mime = mimetypes.guess_type(filename)[0] or "application/octet-stream"
                handles[field] = (filename, open(path, "rb"), mime)  # noqa: SIM115
            response = self._http.post(f"{self._base}/{method}", data=form, files=handles or None)
        finally:
            for _name, handle, _mime in handles.values():
                handle.close()
        try:
            body = response.json()
        except ValueError:
            raise BotApiError(response.status_code, response.text[:200]) from None
        if body.get("ok"):
            return body.get("result")
        retry_after = (body.get("parameters") or {}).get("retry_after")
        raise BotApiError(
            int(body.get("error_code") or response.status_code),
            str(body.get("description") or ""),
            retry_after,
        )


@platform
class TelegramCourier(Courier):
    """A Courier for a Telegram chat: `reply_to` holds `chat_id`, and for a job asked for in
    the chat `status_message_id` and `reply_to_message_id`."""

    platform = "telegram"
    api_class: type = TelegramApi

    @classmethod
    def chat_target(cls, chat_id: str, head: str) -> dict:
        target = super().chat_target(chat_id, head)
        if chat_id.lstrip("-").isdigit():
            target["chat_id"] = int(chat_id)
        return target

    @property
    def upload_limit(self) -> int:
        return self.s.telegram_upload_limit_bytes

    @property
    def chat_id(self):
        return self.reply_to.get("chat_id")

    def unprompted(self) -> bool:
        return not self.reply_to.get("status_message_id")

    def edit(self, text: str, wait: bool = False) -> bool:
        message_id = self.reply_to.get("status_message_id")
        if not message_id or self._message_gone:
            return False
        if text == self._shown:
            return True
        if wait:
            self._wait_edit()
        try:
            self.api.call(
                "editMessageText",
                {"chat_id": self.chat_id, "message_id": message_id, "text": text},
                quick=True,
            )
        except BotApiError as exc:
            lowered = exc.description.lower()
            if "not modified" not in lowered:
                if "not found" in lowered or "can't be edited" in lowered:
                    self._message_gone = True
                    return False
                raise
        self._edited(text)
        return True

    def _send(self, method: str, data: dict, files: dict[str, tuple[Path, str]] | None = None):
        data = {"chat_id": self.chat_id, **data}
        reply_id = self.reply_to.get("reply_to_message_id")
        if reply_id:
            data["reply_parameters"] = {"message_id": reply_id, "allow_sending_without_reply": True}
        return self.api.call(method, data, files)
