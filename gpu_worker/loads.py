"""How many models this process has loaded: Demucs models, HuBERT, pitch models, voices and
indexes, counted where they are loaded (a cache hit counts nothing).

A long-lived worker keeps them loaded between steps; a step that loads none ran warm. The
count only grows; a caller compares it before and after a piece of work.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_count = 0


def count(n: int = 1) -> None:
    """Record `n` models loaded just now."""
    global _count
    if n > 0:
        with _lock:
            _count += n


def total() -> int:
    """Models loaded by this process so far."""
    return _count
