"""The delivery sweep each bot runs in the background: outcomes no job delivered get posted."""

from __future__ import annotations

import asyncio
import logging

from flows import api

log = logging.getLogger("encore.bots")

SWEEP_S = 120.0  # how often a bot posts outcomes that no job delivered (a dead process)


async def sweep_deliveries(s, every_s: float | None = None) -> None:
    """Forever: post the outcomes of jobs that ended without delivering them (their process
    died between the two), retry deliveries whose wait is over, and take over claims whose
    holder died. Each bot runs this as a background task (every SWEEP_S, scaled by
    `delivery_time_scale`)."""
    if every_s is None:
        every_s = max(0.2, SWEEP_S * min(1.0, s.delivery_time_scale))
    while True:
        try:
            posted = await asyncio.to_thread(api.recover, s)
            if posted:
                log.info("posted %d outcomes that no job had delivered", posted)
        except Exception:
            log.warning("delivery sweep failed", exc_info=True)
        await asyncio.sleep(every_s)
