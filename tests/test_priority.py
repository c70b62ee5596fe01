"""A bot that runs jobs in-process keeps answering: job threads run at a lower CPU priority."""

from __future__ import annotations

import os
import threading

from flows import submit
from flows.settings import Settings


def _nice_of_job_thread(s: Settings) -> tuple[int, int]:
    seen: dict[str, int] = {}
    done = threading.Event()

    def flow(**_kwargs) -> None:
        seen["job"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        child = threading.Thread(
            target=lambda: seen.setdefault(
                "child", os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            )
        )
        child.start()
        child.join()
        done.set()

    submit._start(s, "priority-probe", flow, {})
    assert done.wait(60), "the job thread never ran"
    submit._threads.pop("priority-probe").join(10)
    return seen["job"], seen["child"]


def test_job_threads_and_what_they_start_run_below_the_bot(tmp_path):
    base = os.getpriority(os.PRIO_PROCESS, 0)
    s = Settings(data_dir=tmp_path, job_nice=10)
    job, child = _nice_of_job_thread(s)
    assert job == min(19, base + 10)
    assert child == job  # Prefect's and the engine's threads inherit it
    assert os.getpriority(os.PRIO_PROCESS, 0) == base  # the process itself is untouched


def test_job_nice_zero_keeps_the_bots_priority(tmp_path):
    base = os.getpriority(os.PRIO_PROCESS, 0)
    s = Settings(data_dir=tmp_path, job_nice=0)
    assert _nice_of_job_thread(s) == (base, base)
