"""The `encore` command line: covers, stems, karaoke, the catalog, voices and model weights.

A thin adapter: it parses arguments, calls the submission API or the registries, and shows
progress with rich. Errors print as one sentence; `--debug` shows tracebacks.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flows.errors import EXPECTED, ConsentNeeded, user_message
from flows.settings import get_settings

app = typer.Typer(help="Encore: AI cover songs.", no_args_is_help=True, add_completion=False)
songs_app = typer.Typer(help="The song catalog.", no_args_is_help=True)
voices_app = typer.Typer(help="Your voices.", no_args_is_help=True)
models_app = typer.Typer(help="Model weights.", no_args_is_help=True)
app.add_typer(songs_app, name="songs")
app.add_typer(voices_app, name="voices")
app.add_typer(models_app, name="models")

console = Console()
err_console = Console(stderr=True)
CLI_USER = "local"
HEAVY_COMMANDS = {"cover", "stems", "karaoke", "demo"}
SERVICE_COMMANDS = {"bot", "serve"}  # long-running: they log to the terminal (service_logging)
state = {"debug": False}


def service_logging(s=None) -> None:
    """A long-running service's log lines (the bots): INFO and up, none with a token (httpx
    is quieted unless `encore --debug`)."""
    from flows.logs import protect_logs

    protect_logs(s, debug=state.get("debug", False))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")


@app.callback()
def main(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option(help="Show tracebacks and library logs.")] = False,
):
    if ctx.invoked_subcommand in HEAVY_COMMANDS:
        # Demucs runs about 1.3x faster under tcmalloc, which must be loaded at process start.
        from gpu_worker.cpu import reexec_with_fast_allocator

        reexec_with_fast_allocator()
    state["debug"] = debug
    from flows.logs import log_to_file, protect_logs

    protect_logs(debug=debug)  # no token in any log line, whoever logs what
    # Prefect's and libraries' log lines go to the log file (before Prefect is imported), so
    # the terminal shows the progress bar and the results; `--debug` shows them too.
    if debug:
        logging.basicConfig(level=logging.DEBUG)
    if ctx.invoked_subcommand in SERVICE_COMMANDS:
        if not debug:  # Prefect's run logs belong in its UI, not in the service's log
            os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    else:
        with contextlib.suppress(OSError, ValueError):  # no log file is no reason to fail
            log_to_file(get_settings().log_path, logging.DEBUG if debug else logging.INFO)
    if ctx.invoked_subcommand in HEAVY_COMMANDS:
        from flows.recovery import recover_lost_jobs

        recover_lost_jobs(get_settings())  # jobs of an earlier run that was killed


def fail(message: str) -> None:
    err_console.print(f"[red]Error:[/red] {message}", highlight=False)
    raise typer.Exit(1)


def guarded(fn):
    """Run a command body, turning errors into one line (or a traceback with --debug)."""

    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except EXPECTED as exc:
            if state["debug"]:
                raise
            fail(user_message(exc))
        except KeyboardInterrupt:
            fail("Interrupted.")
        except Exception as exc:
            if state["debug"]:
                raise
            fail(f"Unexpected error ({type(exc).__name__}); run again with --debug for details.")

    return functools.wraps(fn)(wrapper)


def require(s, conversion: bool = True, training: bool = False) -> None:
    from flows.weights import require as require_models

    require_models(s, conversion, training)


def _song_id(song: str) -> str:
    """A local file is added to the catalog first, a link fetched first (`flows.links`, when
    the operator enabled links); anything else is looked up in the catalog."""
    from flows.catalog import add_song, resolve_song
    from flows.links import fetch_song, is_link

    s = get_settings()
    if is_link(song):
        with err_console.status("Fetching the song from the link"):
            return fetch_song(s, song.strip(), CLI_USER).id
    path = Path(song).expanduser()
    if path.exists():
        return add_song(s, path, owner=CLI_USER).id
    return resolve_song(s, song, owner=CLI_USER).id


def _follow(job_id: str):
    """Follow a job with a progress bar until it ends; Ctrl-C cancels it. Fails unless it
    succeeded, else returns its view."""
    from flows.chat.text import STEP_LABELS
    from flows.submit import follow

    s = get_settings()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("Queued", total=1.0)

        def show(job) -> None:
            bar.update(
                task, completed=job.progress, description=STEP_LABELS.get(job.step, job.step)
            )

        try:
            final = follow(job_id, on_change=show, s=s)
        except KeyboardInterrupt:
            from flows.jobs import cancel_job

            cancel_job(s, job_id)
            bar.update(task, description="Cancelling")
            follow(job_id, s=s)  # the flow stops at its next step or progress report
            fail("Cancelled.")
    if final.state != "succeeded":
        fail(final.reason or "The job did not finish; please try again.")
    return final


def _save(final, out: Path | None, default_dir: Path = Path(".")) -> Path:
    """Copy a finished job's file to `out` (or into `default_dir` under its own name)."""
    from flows.storage import open_storage

    s = get_settings()
    storage = open_storage(s.storage)
    target = out or default_dir / final.result["filename"]
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(storage.fetch(final.result["uri"], s.work_dir), target)
    return target


def _run(job_id: str, out: Path | None, default_dir: Path = Path(".")) -> Path:
    """Follow a job with a progress bar; copy its result to `out` (or `default_dir`). A note
    the job left (an a cappella song, for one) is printed."""
    final = _follow(job_id)
    if (final.result or {}).get("note"):
        console.print(final.result["note"], highlight=False)
    return _save(final, out, default_dir)


@app.command()
@guarded
def cover(
    song: Annotated[
        str,
        typer.Argument(help="An audio file, a song in the catalog, or a link (if enabled)."),
    ],
    voice: Annotated[str, typer.Option("--voice", "-v", help="The voice that sings.")],
    pitch: Annotated[int, typer.Option(min=-24, max=24, help="Shift in semitones.")] = 0,
    output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
    f0_method: Annotated[str | None, typer.Option(help="rmvpe, swiftf0 or pm.")] = None,
    index_rate: Annotated[float, typer.Option(min=0, max=1)] = 0.75,
    protect: Annotated[float, typer.Option(min=0, max=0.5)] = 0.33,
    rms_mix: Annotated[float, typer.Option(min=0, max=1)] = 0.25,
    filter_radius: Annotated[int, typer.Option(min=0, max=7)] = 3,
    reverb: Annotated[float, typer.Option(min=0, max=1)] = 0.0,
    vocal_gain: Annotated[float, typer.Option(help="Vocal gain in dB.")] = 0.0,
    fmt: Annotated[str | None, typer.Option("--format", help="mp3, ogg, m4a, wav, flac.")] = None,
):
    """Make a cover of SONG sung by VOICE."""
    from flows.submit import submit_cover
    from flows.voices import get_voice

    s = get_settings()
    require(s)
    found = get_voice(s, CLI_USER, voice)
    if found is None:
        fail(f"No voice called {voice!r}; see `encore voices list` or import one.")
    options = {
        "pitch": pitch,
        "f0_method": f0_method,
        "index_rate": index_rate,
        "protect": protect,
        "rms_mix": rms_mix,
        "filter_radius": filter_radius,
        "reverb": reverb,
        "vocal_gain_db": vocal_gain,
        "format": fmt or (output.suffix.lstrip(".").lower() if output else None),
    }
    job_id = submit_cover(CLI_USER, _song_id(song), found.id, options, s=s)
    console.print(f"Cover written to [bold]{_run(job_id, output)}[/bold]")


@app.command()
@guarded
def stems(
    song: Annotated[str, typer.Argument(help="An audio file, a song in the catalog, or a link.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="The zip to write.")] = None,
    six: Annotated[
        bool, typer.Option("--six", help="Six stems: guitar and piano too (htdemucs_6s).")
    ] = False,
):
    """Separate SONG into stems (a zip of FLAC files)."""
    from flows.submit import submit_stems
    from flows.weights import require_six_stems

    s = get_settings()
    require(s, conversion=False)
    if six:
        require_six_stems(s)
    job_id = submit_stems(CLI_USER, _song_id(song), options={"six": True} if six else None)
    console.print(f"Stems written to [bold]{_run(job_id, output)}[/bold]")


@app.command()
@guarded
def karaoke(
    song: Annotated[str, typer.Argument(help="An audio file, or a song in the catalog.")],
    output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="mp3, ogg, m4a, wav, flac.")] = None,
):
    """Make a karaoke track (the song without its lead vocal)."""
    from flows.submit import submit_karaoke

    require(get_settings(), conversion=False)
    fmt = fmt or (output.suffix.lstrip(".").lower() if output else None)
    job_id = submit_karaoke(CLI_USER, _song_id(song), {"format": fmt})
    console.print(f"Karaoke track written to [bold]{_run(job_id, output)}[/bold]")


@app.command()
@guarded
def verify(
    file: Annotated[Path, typer.Argument(help="An audio file (a cover, or any other).")],
):
    """Say what FILE is: its Content Credentials (C2PA manifest) and its tags."""
    from flows.chat import tags_text as text
    from gpu_worker import provenance
    from gpu_worker.tags import AI_GENERATED, SOURCE_SONG, VOICE, read_tags

    if not file.is_file():
        fail(f"No file at {file}; give the path of an audio file.")
    if not provenance.available():
        fail("Reading Content Credentials needs c2pa-python; run scripts/setup again.")
    found = provenance.read(file)
    lines = []
    if not found.marked:
        lines.append(text.UNMARKED if found.supported else text.NO_PLACE)
    elif not found.valid:
        lines.append(text.TAMPERED.format(why=", ".join(found.problems) or "no valid signature"))
    else:
        lines.append(text.SIGNED.format(signer=found.signer, issuer=found.issuer))
        lines.append(text.TRUSTED if found.trusted else text.UNTRUSTED)
    if found.marked:
        lines.append(text.AI_DECLARED if found.ai_generated else text.NOT_AI_DECLARED)
        if found.ingredients:
            lines.append(text.INGREDIENTS.format(ingredients="; ".join(found.ingredients)))
    tags = read_tags(file)
    if tags.get(AI_GENERATED) == "yes" and tags.get(VOICE):
        source = tags.get(SOURCE_SONG, "an unnamed song")
        lines.append(text.TAGS_AI.format(source=source, voice=tags[VOICE]))
    elif tags.get("title") or tags.get("artist"):
        title, artist = tags.get("title", "?"), tags.get("artist", "?")
        lines.append(text.TAGS_OTHER.format(title=title, artist=artist))
    else:
        lines.append(text.NO_TAGS)
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)
    if found.marked and not found.valid:
        raise typer.Exit(2)


@songs_app.command("add")
@guarded
def songs_add(
    file: Annotated[Path, typer.Argument(exists=False)],
    title: Annotated[str | None, typer.Option()] = None,
    artist: Annotated[str, typer.Option()] = "",
):
    """Add an audio file to the public catalog."""
    from flows.catalog import add_song, label

    song = add_song(get_settings(), file, title=title, artist=artist)
    console.print(f"Added [bold]{label(song)}[/bold] ({song.duration:.1f} s), id {song.id}")


@songs_app.command("list")
@guarded
def songs_list():
    """List the catalog."""
    from flows.catalog import list_songs

    table = Table("id", "artist", "title", "length")
    for song in list_songs(get_settings(), CLI_USER):
        table.add_row(song.id, song.artist, song.title, f"{song.duration:.0f} s")
    console.print(table)


@voices_app.command("import")
@guarded
def voices_import(
    files: Annotated[
        list[str], typer.Argument(help="A .pth (and .index), or a .zip: files or links.")
    ],
    name: Annotated[str | None, typer.Option(help="Defaults to the file's name.")] = None,
):
    """Import an RVC v2 (or v1) model as one of your voices (links: if enabled)."""
    from flows.links import is_link, model_name
    from flows.submit import stage_upload, submit_import

    s = get_settings()
    links = [f.strip() for f in files if is_link(f)]
    paths = [Path(f) for f in files if not is_link(f)]
    uris = [stage_upload(CLI_USER, _existing(f), f.name, s=s) for f in paths]
    default = paths[0].stem if paths else model_name(links[0])
    if not (name or default):
        fail("Name the voice with --name; the link has no file name to take it from.")
    final = _follow(submit_import(CLI_USER, name or default, uris, s=s, links=links))
    result = final.result
    index = "with index" if result["index"] else "no index"
    console.print(
        f"Imported voice [bold]{result['voice']}[/bold] "
        f"(RVC {result['version']}, {result['sample_rate'] // 1000} kHz, {index})"
    )


@voices_app.command("train")
@guarded
def voices_train(
    name: Annotated[str, typer.Argument(help="The new voice's name.")],
    samples: Annotated[
        list[Path], typer.Argument(help="Recordings of the voice: wav, mp3, ogg/opus, m4a.")
    ],
    consent: Annotated[
        bool,
        typer.Option(
            "--consent",
            help="Confirm the voice is yours, or that you have its owner's permission.",
        ),
    ] = False,
    isolate: Annotated[
        bool | None,
        typer.Option("--isolate/--no-isolate", help="Remove background music first."),
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Training epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    save_every: Annotated[int | None, typer.Option(min=1, help="Epochs per checkpoint.")] = None,
    preview: Annotated[
        Path | None, typer.Option(help="Where to write the preview (default: current folder).")
    ] = None,
):
    """Train a voice from recordings (a minute at least; 5-10 minutes is best).

    Run it again with the same samples after an interruption: it resumes from the last
    checkpoint.
    """
    from flows.recovery import recover_lost_jobs
    from flows.submit import stage_upload, submit_training

    s = get_settings()
    if not consent:
        fail(f"{user_message(ConsentNeeded())} Add --consent.")
    require(s, training=True)
    recover_lost_jobs(s)
    uris = [stage_upload(CLI_USER, _existing(f), f.name, s=s) for f in samples]
    options = {
        "isolate": isolate,
        "epochs": epochs,
        "batch_size": batch_size,
        "save_every": save_every,
    }
    options = {k: v for k, v in options.items() if v is not None}
    final = _follow(submit_training(CLI_USER, name, uris, consent=True, options=options, s=s))
    result = final.result
    resumed = result.get("resumed_from_epoch") or 0
    note = f", resumed from epoch {resumed}" if resumed else ""
    console.print(
        f"Trained voice [bold]{result['voice']}[/bold] from {result['voiced_seconds']:.0f} s "
        f"of voice ({result['epochs']} epochs{note})."
    )
    console.print(f"Preview written to [bold]{_save(final, preview)}[/bold]")
    console.print(f"Make a cover with: encore cover SONG --voice {shlex.quote(result['voice'])}")


def _existing(path: Path) -> Path:
    if not path.is_file():
        fail(f"{path} is not a file; check the path.")
    return path


@voices_app.command("list")
@guarded
def voices_list():
    """List your voices."""
    from flows.voices import list_voices

    table = Table("name", "version", "rate", "index", "source", "owner")
    for v in list_voices(get_settings(), CLI_USER):
        rate = f"{v.sample_rate // 1000} kHz"
        index = "yes" if v.index_uri else "no"
        table.add_row(v.name, v.version, rate, index, v.source, v.owner)
    console.print(table)


@voices_app.command("delete")
@guarded
def voices_delete(name: str):
    """Delete one of your voices and its files."""
    from flows.voices import delete_voice

    if not delete_voice(get_settings(), CLI_USER, name):
        fail(f"You have no voice called {name!r}.")
    console.print(f"Deleted voice {name}.")


@app.command()
@guarded
def deploy(
    schedules: Annotated[
        bool, typer.Option(help="Schedule the trending drop and the janitor.")
    ] = True,
):
    """Create or update the work pools and deployments on the Prefect server (PREFECT_API_URL)."""
    if not os.environ.get("PREFECT_API_URL"):
        fail("Set PREFECT_API_URL to your Prefect server's API (or run `encore serve`).")
    from flows.deployments import deploy as deploy_all

    s = get_settings()
    names = deploy_all(s, schedules=schedules)
    console.print(
        f"Deployed {len(names)} flows: parents on pool {s.cpu_pool}, heavy steps on "
        f"{s.gpu_pool} (at most {s.gpus()} at once)."
    )
    for name in names:
        console.print(f"  {name}", highlight=False)


@models_app.command("download")
@guarded
def models_download():
    """Fetch the separation and voice models into the model folder."""
    from flows.weights import download

    download(get_settings(), console)


@models_app.command("status")
@guarded
def models_status():
    """Show which model files are present."""
    from flows.weights import status

    table = Table("part", "state", "where")
    ready = True
    for row in status(get_settings()):
        table.add_row(row.part, "ready" if row.ok else "[red]missing[/red]", str(row.path))
        ready &= row.ok
    console.print(table)
    if not ready:
        console.print("Run `encore models download` to fetch what is missing.")


@app.command()
@guarded
def demo(output: Annotated[Path, typer.Option("--output", "-o")] = Path("encore-demo.mp3")):
    """Make a first cover: a short synthesised song, sung by the demo voice."""
    from flows.demo import prepare_demo
    from flows.submit import submit_cover

    s = get_settings()
    require(s)
    song_id, voice_id = prepare_demo(s)
    job_id = submit_cover(CLI_USER, song_id, voice_id, {"format": output.suffix[1:] or None}, s=s)
    console.print(f"Demo cover written to [bold]{_run(job_id, output)}[/bold]")


@app.command("charts")
@guarded
def charts_list(
    name: Annotated[
        str | None, typer.Argument(help="Which chart (ENCORE_CHARTS); default: the default one.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the chart as JSON.")] = False,
):
    """Show a chart, numbered, with the songs that are ready to cover (in the catalog) marked.

    Cover one with `encore cover "<artist> <title>" --voice NAME`.
    """
    import json

    from flows.catalog import label, list_songs
    from flows.charts import configured, current, match

    s = get_settings()
    found, entries = current(s, name)
    matched, _missing = match(entries, list_songs(s), s.chart_match_score)
    songs = {m.entry.rank: m.song for m in matched}
    if as_json:
        rows = [
            {
                "rank": e.rank,
                "artist": e.artist,
                "title": e.title,
                "link": e.link,
                "ready": e.rank in songs,
                "song_id": songs[e.rank].id if e.rank in songs else None,
            }
            for e in entries
        ]
        typer.echo(json.dumps({"chart": found, "entries": rows}, indent=2, ensure_ascii=False))
        return
    from rich.markup import escape

    table = Table("#", "", "chart entry", "catalog song", title=f"Chart {escape(found)}")
    for e in entries:
        song = songs.get(e.rank)
        shown = f"{e.artist} - {e.title}" if e.artist else e.title
        table.add_row(
            str(e.rank), "✅" if song else "", escape(shown), escape(label(song)) if song else ""
        )
    console.print(table)
    others = [n for n in configured(s) if n != found]
    console.print(
        f"{len(songs)} of {len(entries)} ready to cover (✅: in the catalog)."
        + (f" Other charts: {', '.join(others)}." if others else ""),
        highlight=False,
    )


# ------------------------------------------------------------------------------------------
# Trending drops

trending_app = typer.Typer(help="Trending chart drops to subscribed chats.", no_args_is_help=True)
app.add_typer(trending_app, name="trending")


@trending_app.command("run")
@guarded
def trending_run(
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the covers until they are posted.")
    ] = False,
    day: Annotated[
        str | None, typer.Option("--date", help="The drop's date (YYYY-MM-DD); default today.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
):
    """Run one trending drop now: covers of the chart's catalog songs for subscribed chats.

    Embedded, the covers are made in this process, so it stays until they are posted.
    """
    import json

    from flows.recovery import recover_lost_jobs
    from flows.submit import follow
    from flows.trending import trending_drop

    s = get_settings()
    recover_lost_jobs(s)
    summary = trending_drop(day=day)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        from rich.markup import escape

        def entry(m: dict) -> str:
            return escape(f"{m['artist']} - {m['title']}" if m["artist"] else m["title"])

        table = Table("#", "chart entry", "catalog song", "score")
        for m in summary["matched"]:
            table.add_row(str(m["rank"]), entry(m), escape(m["song"]), str(m["score"]))
        for m in summary["missing"]:
            table.add_row(str(m["rank"]), entry(m), f"[yellow]{escape(m['reason'])}[/yellow]", "")
        console.print(table)
        console.print(
            f"Drop {summary['date']}: {len(summary['matched'])} of {summary['chart']} chart songs "
            f"in the catalog; {len(summary['submitted'])} covers submitted, "
            f"{len(summary['existing'])} already submitted today.",
            highlight=False,
        )
        for chat in summary["skipped"]:
            console.print(
                f"Skipped {chat['platform']} chat {chat['chat_id']}: {escape(chat['reason'])}.",
                highlight=False,
            )
    jobs = summary["submitted"] + summary["existing"]
    if not (wait or s.run_mode == "embedded") or not jobs:
        return
    failed = 0
    for row in jobs:
        final = follow(row["job_id"], s=s)
        failed += final.state != "succeeded"
        if not as_json:
            reason = f": {final.reason}" if final.reason and final.state != "succeeded" else ""
            console.print(
                f"{row['platform']} {row['chat_id']} #{row['rank']}: {final.state}{reason}",
                highlight=False,
            )
    if failed:
        fail(f"{failed} of {len(jobs)} covers did not succeed.")


if __name__ == "__main__":
    sys.exit(app())
