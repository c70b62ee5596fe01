"""Importing a community RVC model: the `/import [name]` session and its files.

A `.zip` (of the `.pth` and its `.index`) starts the import at once; a `.pth` waits for its
`.index` (or `/done`); the voice is named by the user or after the model's file.
"""

from __future__ import annotations

import re
from pathlib import Path

from bots.checks import personal, quota_refusal
from bots.inputs import MODEL_SUFFIXES, clean_arg, clean_filename
from bots.messages import Download, Incoming, JobPlan, Outcome, Reply, Who
from bots.training import new_voice_name
from flows import api
from flows.api import UserError
from flows.chat import links_text
from flows.chat import text as said


@personal
def import_command(s, who: Who, args: str, links: bool = True) -> Outcome:
    """`/import [name]`: open a session that waits for the model's files. `/import <link>
    [name]` (`links`: where the command's text may carry one) imports from the link."""
    api.ensure_user(who.owner, who.name, s=s)
    try:
        raw = clean_arg(args)
    except UserError as exc:
        return Reply(exc.message)
    if links and raw and api.is_link(raw.split()[0]):
        url = raw.split()[0]
        return link_import(s, who, url, raw[len(url) :].strip())
    name = ""
    if raw:
        name = new_voice_name(s, who, raw)
        if isinstance(name, Reply):
            return name
    refused = quota_refusal(s, who, "import")
    if refused:
        return refused
    api.open_upload(who.owner, "import", name, s=s)
    limit = s.telegram_download_limit_bytes if who.platform == "telegram" else None
    return Reply(said.replies(who.platform).import_started(name, limit, bool(s.link_sources)))


def link_import(s, who: Who, url: str, raw_name: str) -> Outcome:
    """`/import <link> [name]`: the job downloads the model, then checks it like an upload
    (progress in the status message)."""
    try:
        link = api.check_link(url, model=True, s=s)
    except UserError as exc:
        return Reply(exc.message)
    name = raw_name or api.voice_name_from_link(link)
    if not name:
        return Reply(links_text.NAME_FROM_LINK)
    name = new_voice_name(s, who, name)
    if isinstance(name, Reply):
        return name
    refused = quota_refusal(s, who, "import")
    if refused:
        return refused
    api.cancel_upload(who.owner, s=s)  # a session waiting for files is replaced
    return JobPlan(
        kind="import",
        owner=who.owner,
        headline=api.headline("import", name=name),
        name=name,
        links=(link,),
    )


@personal
def model_incoming(s, who: Who, incoming: Incoming) -> Reply | Download:
    """A model file: download it, or say why not."""
    if incoming.suffix not in MODEL_SUFFIXES:
        return Reply(said.NOT_A_MODEL)
    limit = s.telegram_download_limit_bytes
    if incoming.size and incoming.size > limit:
        return Reply(said.replies(who.platform).too_big(incoming.size, limit))
    return Download("model", incoming.filename)


@personal
def model_downloaded(s, who: Who, source: str, local: Path, filename: str) -> Outcome | None:
    """A downloaded model file: the import job once the model is whole, else what to send
    next; None for the same message again."""
    filename = clean_filename(filename)  # as the platform named it: made safe here too
    upload = api.current_upload(who.owner, s=s)
    if upload is None or upload.kind != "import":
        refused = quota_refusal(s, who, "import")
        if refused:
            return refused
        upload = api.open_upload(who.owner, "import", "", s=s)
    try:
        upload, fresh = api.add_model_file(upload.id, who.owner, source, local, filename, s=s)
    except UserError as exc:
        return Reply(exc.message)
    if not fresh:
        return None
    suffix = Path(filename).suffix.lower()
    if suffix == ".zip" or (upload.has(".pth") and upload.has(".index")):
        return import_plan(s, who, upload)
    if suffix == ".pth":
        return Reply(said.replies(who.platform).got_model())
    return Reply(said.GOT_INDEX)


def import_plan(s, who: Who, upload: api.UploadInfo) -> Outcome:
    """The import job of a session whose model is whole, or why it cannot start."""
    say = said.replies(who.platform)
    name = upload.name
    if not name:
        model = next(
            (f for f in upload.files if f.filename.lower().endswith((".pth", ".zip"))), None
        )
        stem = Path(model.filename).stem if model else ""
        stem = re.sub(r"[^\w .'-]", " ", stem).strip()[:40]
        try:
            name = api.valid_voice_name(stem)
        except UserError:
            return Reply(say.name_the_import())
    if api.get_voice(who.owner, name, include_public=False, s=s) is not None:
        api.cancel_upload(who.owner, s=s)
        return Reply(say.import_name_taken(name))
    claimed = api.claim_upload(upload.id, who.owner, s=s)
    if claimed is None:
        return Reply(said.ALREADY_IMPORTING)
    return JobPlan(
        kind="import",
        owner=who.owner,
        headline=api.headline("import", name=name),
        name=name,
        files=tuple(f.uri for f in claimed.files),
        upload_id=claimed.id,
    )
