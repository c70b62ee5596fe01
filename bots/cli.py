"""The `encore` console command: the backend's CLI (`flows.cli`) plus `encore bot ...`.

This module owns the console entry point. `flows` must not import `bots`, so the command
that starts a chat bot (`encore bot telegram`, `encore bot discord [--sync]`) and `encore
serve`, which runs the bots beside a Prefect server and its workers, are added here, on top
of the flows CLI's typer app.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from typing import Annotated

import typer

from flows.cli import app

bot_app = typer.Typer(help="Run a chat bot.", no_args_is_help=True)
app.add_typer(bot_app, name="bot")

NO_TOKEN = (
    "Set ENCORE_TELEGRAM_TOKEN to the token BotFather gave your bot "
    "(see the README's Telegram section)."
)


def _logging(s) -> None:
    """Log lines at INFO, none with a token (httpx is quieted unless `encore --debug`)."""
    from flows.logs import protect_logs

    protect_logs(s)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")


@bot_app.command("telegram")
def telegram(
    webhook_url: Annotated[
        str | None,
        typer.Option(
            help="Public HTTPS URL that Telegram posts updates to (webhook mode). "
            "Without it the bot polls, which needs no public address."
        ),
    ] = None,
    listen: Annotated[str, typer.Option(help="Webhook mode: address to listen on.")] = "0.0.0.0",
    port: Annotated[int, typer.Option(help="Webhook mode: port to listen on.")] = 8443,
):
    """Run the Telegram bot (token in ENCORE_TELEGRAM_TOKEN) until Ctrl-C."""
    from flows import api

    s = api.settings()
    if not s.telegram_token:
        typer.echo(f"Error: {NO_TOKEN}", err=True)
        raise typer.Exit(1)
    _logging(s)
    _prepare(api)
    from bots.telegram import run

    mode = f"webhook at {webhook_url}" if webhook_url else "polling"
    typer.echo(f"Encore's Telegram bot is running ({mode}); Ctrl-C stops it.")
    run(s, webhook_url=webhook_url, listen=listen, port=port)  # returns on Ctrl-C or SIGTERM
    _stop_jobs(api)


def _prepare(api) -> None:
    """Before the bot accepts work: the process's Prefect backend, and jobs to resume."""
    try:
        resumed = api.prepare_process()
    except RuntimeError as exc:  # the process's Prefect backend did not start
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None
    if resumed:
        typer.echo(f"Resuming {resumed} job(s) that were running when Encore stopped.")


def _stop_jobs(api) -> None:
    """The bot stopped: stop the jobs running here. They stay open, and the next start of
    Encore runs them again (their chats are told); nothing is marked failed."""
    running = api.jobs_in_process()
    if running:
        typer.echo(
            f"Stopping {len(running)} running job(s); they continue when Encore starts again."
        )
    with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C leaves now; a start resumes
        api.stop_jobs()


NO_DISCORD_TOKEN = (
    "Set ENCORE_DISCORD_TOKEN to your application's bot token from the Discord Developer "
    "Portal (see the README's Discord section)."
)


@bot_app.command("discord")
def discord_bot(
    sync: Annotated[
        bool,
        typer.Option(
            "--sync",
            help="Register the slash commands with Discord and exit (once per deploy, "
            "not on every start).",
        ),
    ] = False,
):
    """Run the Discord bot (token in ENCORE_DISCORD_TOKEN) until Ctrl-C."""
    from flows import api

    s = api.settings()
    if not s.discord_token:
        typer.echo(f"Error: {NO_DISCORD_TOKEN}", err=True)
        raise typer.Exit(1)
    _logging(s)
    if sync:
        from bots.discord_bot import sync_commands

        names = sync_commands(s)
        typer.echo(f"Registered {len(names)} slash commands: {', '.join('/' + n for n in names)}")
        return
    _prepare(api)
    from bots.discord_bot import run

    def stop(*_):
        raise KeyboardInterrupt  # discord.py stops cleanly on it

    signal.signal(signal.SIGTERM, stop)
    typer.echo("Encore's Discord bot is running; Ctrl-C stops it.")
    run(s)
    _stop_jobs(api)


@app.command()
def serve(
    port: Annotated[
        int, typer.Option(help="Port of the Prefect server started here (and of its UI).")
    ] = 4200,
):
    """Run Encore as a service on this machine: the Prefect server (unless PREFECT_API_URL is
    set), the deployments, a worker per work pool, and the bots whose tokens are set."""
    # Not flows.api, which imports Prefect: this process never talks to it (see flows.serve).
    from flows.cli import get_settings
    from flows.serve import Service, Supervisor

    s = get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    encore = [sys.executable, "-m", "bots.cli"]
    bots = []
    if s.telegram_token:
        bots.append(Service("telegram bot", [*encore, "bot", "telegram"]))
    if s.discord_token:
        bots.append(Service("discord bot", [*encore, "bot", "discord"]))
    supervisor = Supervisor(s, extra=bots, port=port)

    def stop(*_):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not cut the stop
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        api_url = supervisor.start()
        ui = api_url.removesuffix("/api")
        names = (
            ", ".join(b.name for b in bots)
            or "no bots (set ENCORE_TELEGRAM_TOKEN or ENCORE_DISCORD_TOKEN)"
        )
        typer.echo(
            f"Encore is serving: Prefect UI at {ui}; workers for {s.cpu_pool} and "
            f"{s.gpu_pool}; {names}. Ctrl-C stops it."
        )
        supervisor.watch()
    except KeyboardInterrupt:
        typer.echo("Stopping…")
    except RuntimeError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        supervisor.stop()


if __name__ == "__main__":
    sys.exit(app())
