"""Mark: say in the result file itself what it is, before it is stored.

Every result gets tags (`gpu_worker.tags`). A result a voice sang (a cover, a preview) is
AI-generated, and in mp3, wav, m4a and flac it also gets a signed Content Credentials
manifest (`gpu_worker.provenance`) with the operator's certificate (the settings name it; one
is made on first use, with a warning that validators will not trust it).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from flows.settings import Settings
from gpu_worker import provenance
from gpu_worker.tags import ResultTags, write_tags

log = logging.getLogger("encore.mark")

SELF_MADE = (
    "Made a signing certificate for Content Credentials in %s, issued by a local CA: "
    "C2PA validators will not trust it. Set ENCORE_C2PA_CERT and ENCORE_C2PA_KEY to a "
    "certificate from a CA on the C2PA trust list to be trusted."
)
_credentials_lock = threading.Lock()


def credentials(s: Settings) -> provenance.Credentials:
    """The operator's signing credentials, made on first use."""
    with _credentials_lock:
        if provenance.ensure_credentials(s.signing_cert, s.signing_key):
            log.warning(SELF_MADE, s.signing_cert.parent)
    return provenance.Credentials(s.signing_cert, s.signing_key)


def signs(s: Settings, path: Path, tags: ResultTags) -> bool:
    """Whether this result gets a manifest: an AI-generated one, in a format that holds it."""
    fmt = Path(path).suffix.lstrip(".").lower()
    return s.c2pa_enabled and tags.ai_generated and fmt in provenance.SIGNABLE


def mark(s: Settings, path: Path, tags: ResultTags) -> dict:
    """Tag the file at `path` in place, and sign it where `signs` says; what was done."""
    write_tags(path, tags)
    if not signs(s, path, tags):
        return {"tagged": True, "signed": False}
    if not provenance.available():
        log.warning("c2pa-python is not installed: %s is tagged but carries no manifest", path)
        return {"tagged": True, "signed": False}
    provenance.sign(path, tags, credentials(s))
    return {"tagged": True, "signed": True}
