"""The chat side of Encore's flows: what a chat is told about its jobs, and how.

A flow never speaks to a chat itself. The job runner (`flows.jobs.run_job`) tells a job's
observers how it goes and when it ends, and the eraser (`flows.erase`) tells its listeners
when a `/forget` is done; this package registers, for every chat platform, the observer that
turns those events into messages. The bots (`bots/`) take part in none of it: a bot restart
loses nothing.

- `text`: every sentence a chat user reads from the flows, per platform where they differ;
- `client`: what the platforms' HTTP clients share (errors, quick retries);
- `courier`: the status message while a job runs, and its outcome when it ends;
- `ledger`: the delivery ledger, so that an outcome is posted once and survives crashes;
- `delivery`: which courier speaks for a job, and the sweep of deliveries still due;
- one module per platform (`telegram`, `discord`): its client and its courier.

Importing this package loads every module in it, so a platform is added by adding its module
here (a `Courier` subclass registered with `flows.chat.delivery.platform`, its `Wording` in
`text`) and its bot in `bots/`. The modules that run jobs or sweeps import this package.
"""

from __future__ import annotations

import importlib
import pkgutil

from flows import erase, jobs
from flows.chat.delivery import courier_for, deliver, deliver_pending, say_all_gone

__all__ = ["courier_for", "deliver", "deliver_pending"]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")  # each platform registers itself

jobs.observe_jobs(courier_for)
erase.when_all_gone(say_all_gone)
