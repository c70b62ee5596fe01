"""The threads a bot's handlers run their blocking calls on (the database, storage, files).

asyncio's default pool has `cpu_count + 4` threads: six on two cores. A burst of commands
then waits in line for a thread while each call takes milliseconds, so the bots install a
larger pool once per event loop, before they take commands.
"""

from __future__ import annotations

import asyncio
import weakref
from concurrent.futures import ThreadPoolExecutor

COMMAND_THREADS = 32

_installed: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def use_command_threads() -> None:
    """Make `asyncio.to_thread` in the running loop use the bots' pool (once per loop)."""
    loop = asyncio.get_running_loop()
    if loop in _installed:
        return
    loop.set_default_executor(
        ThreadPoolExecutor(COMMAND_THREADS, thread_name_prefix="encore-command")
    )
    _installed.add(loop)
