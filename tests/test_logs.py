"""The `encore` CLI's log file: what the terminal does not show is there, and no token is."""

from __future__ import annotations

import logging
import warnings
from types import SimpleNamespace

from flows.logs import close_log_file, log_file, log_to_file, protect_logs

TOKEN = "123456789:AAEhBP0av28fVO0JwZc1JakqWxUpPyYH4Jc"


def test_the_log_file_gets_library_lines_and_warnings_without_tokens(tmp_path):
    protect_logs(SimpleNamespace(telegram_token=TOKEN, discord_token=None,
                                 telegram_webhook_secret=None))  # fmt: skip
    path = tmp_path / "logs" / "encore.log"
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)
    log_to_file(path)
    try:
        assert log_file() == path
        logging.getLogger("prefect.flow_runs").info("Beginning flow run 'cover-1'")
        logging.getLogger("httpx").warning(f"POST https://api.telegram.org/bot{TOKEN}/sendAudio")
        logging.getLogger("some.library").info("token=%s", TOKEN)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("an old API", DeprecationWarning, stacklevel=1)
        try:
            raise RuntimeError(f"failed at /bot{TOKEN}/getFile")
        except RuntimeError:
            logging.getLogger("telegram.ext").exception("Error while getting updates")
    finally:
        close_log_file()
    text = path.read_text()
    assert log_file() is None and root.level == logging.WARNING
    root.setLevel(level)
    assert "INFO prefect.flow_runs: Beginning flow run 'cover-1'" in text
    assert "sendAudio" in text and "an old API" in text and "RuntimeError" in text
    assert TOKEN not in text and TOKEN.split(":")[1] not in text
    assert text.count("<redacted>") >= 3
