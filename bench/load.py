"""Benchmark: a crowd of /cover commands against one Telegram bot, embedded mode.

    python bench/load.py [--commands 50] [--users 20] [--seconds 3] [--rate-limit 2]

Prints one JSON object. It starts the fake Telegram Bot API (tests/fake_telegram.py), builds
the tiny random-weight model folder the tests use, fills the catalog with a few short songs,
gives every user the demo voice, and starts the real `encore bot telegram` process (jobs run
inside it, the default). Then `--commands` /cover commands from `--users` users arrive at
once, spread round-robin over the users and the songs.

It reports:

- `first_reply_s`: per command, from the command reaching the fake to the bot's first message
  in that chat (the i-th command of a chat is matched with the bot's i-th message there):
  p50, p95, max. Goal: p95 under 1 s on 2 cores.
- `jobs_created`, `refused`: jobs in the database, and commands answered with a limit;
- `quotas_held`: no user got more jobs than `--rate-limit` allows;
- `jobs_lost`: jobs that did not end with their cover in the chat (must be 0);
- `bot_rss_mb`: the bot process's resident memory before the burst, after it, and its peak.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

GOAL_P95_S = 1.0
SR = 44100
FIRST_USER = 5000


def _rss_mb(pid: int) -> dict:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _song(path: Path, seconds: float, seed: int) -> Path:
    import numpy as np

    from gpu_worker.audio import write_wav

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    tone = 0.2 * np.sin(2 * np.pi * (220 + 40 * seed) * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))
    noise = 0.05 * rng.standard_normal((2, t.size))
    return write_wav(path, (tone + noise).astype("float32"), SR)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=50)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--songs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each song")
    parser.add_argument("--rate-limit", type=int, default=2, help="jobs per user per window")
    parser.add_argument("--timeout", type=float, default=1200.0)
    args = parser.parse_args()

    from tests.conftest import build_model_folder
    from tests.fake_telegram import FakeTelegram

    work = Path(tempfile.mkdtemp(prefix="encore-load-"))
    fake = FakeTelegram().start()
    env = {
        **os.environ,
        "ENCORE_DATA_DIR": str(work / "data"),
        "ENCORE_MODEL_DIR": str(build_model_folder(work / "models")),
        "ENCORE_DEVICE": "cpu",
        "ENCORE_F0_METHOD": "pm",
        "ENCORE_TELEGRAM_TOKEN": fake.token,
        "ENCORE_TELEGRAM_API_URL": fake.api_url,
        "ENCORE_TELEGRAM_FILE_URL": fake.file_url,
        "ENCORE_RATE_LIMIT_JOBS": str(args.rate_limit),
        "ENCORE_RATE_LIMIT_WINDOW_S": "3600",
        "ENCORE_MAX_ACTIVE_JOBS": str(max(args.rate_limit, 1)),
    }
    os.environ.update({k: v for k, v in env.items() if k.startswith("ENCORE_")})
    from flows.catalog import add_song
    from flows.db import Job, session
    from flows.demo import ensure_demo_voice
    from flows.settings import get_settings
    from flows.users import ensure_user, set_default_voice_id

    s = get_settings()
    titles = []
    for i in range(args.songs):
        title = ("Amber Harbour", "Copper Lanterns", "Velvet Thunder", "Northern Glass")[i % 4]
        add_song(s, _song(work / f"song{i}.wav", args.seconds, i), title=title, artist="Bench")
        titles.append(title)
    demo = ensure_demo_voice(s)
    users = [FIRST_USER + i for i in range(args.users)]
    for uid in users:
        ensure_user(s, f"telegram:{uid}", f"User {uid}")
        set_default_voice_id(s, f"telegram:{uid}", demo.id)

    encore = str(Path(sys.executable).with_name("encore"))
    log = open(work / "bot.log", "w")  # noqa: SIM115 - lives with the bot
    bot = subprocess.Popen([encore, "bot", "telegram"], env=env, stdout=log, stderr=log)
    try:
        fake.send_text("/start", user_id=users[0])
        fake.wait_for(lambda: fake.sent_texts(users[0]), 180, "the bot to start")
        before = _rss_mb(bot.pid)

        sent: dict[int, list[float]] = {uid: [] for uid in users}
        start = time.monotonic()
        for n in range(args.commands):
            uid = users[n % len(users)]
            fake.send_text(f"/cover {titles[n % len(titles)].lower()}", user_id=uid)
            sent[uid].append(time.monotonic())
        burst_s = time.monotonic() - start

        def replies(uid: int) -> list[float]:
            return [
                c.at
                for c in fake.calls_of("sendMessage")
                if c.int("chat_id") == uid and c.at >= start
            ]

        fake.wait_for(
            lambda: all(len(replies(u)) >= len(sent[u]) for u in users), 120, "every reply"
        )
        first = [
            reply - command
            for uid in users
            for command, reply in zip(sent[uid], replies(uid), strict=False)
        ]

        def jobs() -> list:
            with session(s.database) as db:
                return list(db.query(Job).filter(Job.owner.like("telegram:%")))

        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            if all(j.state in ("succeeded", "failed", "cancelled") for j in jobs()):
                break
            time.sleep(0.5)
        fake.wait_for(
            lambda: len(fake.calls_of("sendAudio")) >= sum(j.state == "succeeded" for j in jobs()),
            120,
            "the covers",
        )
        after = _rss_mb(bot.pid)
        made = jobs()
        covers_per_chat: dict[int, int] = {}
        for call in fake.calls_of("sendAudio"):
            covers_per_chat[call.int("chat_id")] = covers_per_chat.get(call.int("chat_id"), 0) + 1
        per_user: dict[str, int] = {}
        succeeded: dict[str, int] = {}
        for job in made:
            per_user[job.owner] = per_user.get(job.owner, 0) + 1
            succeeded[job.owner] = succeeded.get(job.owner, 0) + (job.state == "succeeded")
        # A job is lost when it did not succeed, or succeeded without its cover in the chat.
        lost = sum(job.state != "succeeded" for job in made) + sum(
            max(0, succeeded.get(f"telegram:{uid}", 0) - covers_per_chat.get(uid, 0))
            for uid in users
        )
        reasons = sorted({job.reason for job in made if job.state != "succeeded"})
        refused = args.commands - len(made)
        result = {
            "commands": args.commands,
            "users": args.users,
            "burst_s": round(burst_s, 3),
            "first_reply_s": {
                "p50": round(statistics.median(first), 3),
                "p95": round(_percentile(first, 0.95), 3),
                "max": round(max(first), 3),
                "goal_p95": GOAL_P95_S,
                "met": _percentile(first, 0.95) <= GOAL_P95_S,
            },
            "jobs_created": len(made),
            "refused": refused,
            "quotas_held": all(n <= args.rate_limit for n in per_user.values()),
            "jobs_lost": lost,
            "lost_reasons": reasons,
            "covers_delivered": len(fake.calls_of("sendAudio")),
            "all_done_s": round(time.monotonic() - start, 1),
            "bot_rss_mb": {
                "before": round(before["VmRSS"]),
                "after": round(after["VmRSS"]),
                "peak": round(after["VmHWM"]),
            },
        }
        if refused:
            texts = {t for uid in users for t in fake.sent_texts(uid) if "Queued" not in t}
            result["refusals"] = sorted(texts)[:5]
        print(json.dumps(result, indent=2))
    finally:
        bot.terminate()
        try:
            bot.wait(60)
        except subprocess.TimeoutExpired:
            bot.kill()
        log.close()
        fake.stop()


if __name__ == "__main__":
    main()
