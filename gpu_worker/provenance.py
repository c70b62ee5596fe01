"""Provenance: a signed Content Credentials (C2PA) manifest saying a result is AI-generated.

This module owns the machine-readable AI marking that the EU AI Act (Art. 50(2)) asks of
synthetic audio, with c2pa-python:

- `sign(path, tags, credentials)` embeds a manifest in an mp3, wav, m4a or flac file (the
  formats the C2PA SDK embeds in; ogg/opus carry tags only): a `c2pa.actions` assertion
  whose `c2pa.created` action has the IPTC digital source type `trainedAlgorithmicMedia`,
  and the source song and the voice as ingredients;
- `ensure_credentials(cert, key)`: the operator's signing certificate. C2PA refuses a bare
  self-signed certificate; it wants an ES256 end-entity certificate (digitalSignature, the
  emailProtection purpose, key identifiers) issued by a CA. When none is configured, one is
  made on first use, issued by a local CA made with it, and the caller warns that
  validators will not trust it (they trust certificates from the C2PA trust list only);
- `read(path)`: what a file's manifest says and whether its signature holds
  (`Provenance`); a file with no manifest (re-encoded, or never marked) reads as unmarked.

Sign after tagging (`gpu_worker.tags`): the manifest's hash covers every byte but its own.
"""

from __future__ import annotations

import datetime
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from gpu_worker.errors import EngineError
from gpu_worker.tags import SOFTWARE, TRAINED_ALGORITHMIC_MEDIA, ResultTags

MIME = {"mp3": "audio/mpeg", "wav": "audio/wav", "m4a": "audio/mp4", "flac": "audio/flac"}
SIGNABLE = tuple(MIME)
CREATED = "c2pa.created"
UNTRUSTED = "signingCredential.untrusted"
CERT_DAYS = 3 * 365


@dataclass(frozen=True)
class Credentials:
    """The operator's signing certificate chain (PEM: end-entity first) and its EC key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Provenance:
    """What a file's Content Credentials say.

    marked: it carries a manifest. valid: its signature and hashes hold (the file is as it
    was signed). trusted: its certificate chains to a trust anchor the reader knows.
    ai_generated: its actions declare trained algorithmic media. supported: the format can
    carry a manifest at all (ogg cannot).
    """

    marked: bool
    supported: bool = True
    valid: bool = False
    trusted: bool = False
    ai_generated: bool = False
    title: str = ""
    ingredients: tuple[str, ...] = ()
    signer: str = ""
    issuer: str = ""
    generator: str = ""
    problems: tuple[str, ...] = field(default=())


def available() -> bool:
    """Whether c2pa-python (and its native library) loads here."""
    try:
        import c2pa  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Certificates


def _name(common_name: str, organization: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        ]
    )


def _key_usage(*, sign: bool):
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=not sign,
        crl_sign=not sign,
        encipher_only=False,
        decipher_only=False,
    )


def make_credentials(cert: Path, key: Path, organization: str = "Encore operator") -> Credentials:
    """Write a new ES256 signing certificate (issued by a new local CA) and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=CERT_DAYS)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"{organization} local CA", organization)
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(sign=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    signing_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{organization} ({SOFTWARE})", organization))
        .issuer_name(ca_name)
        .public_key(signing_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(sign=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(signing_key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    chain = leaf.public_bytes(pem) + ca.public_bytes(pem)
    secret = signing_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    cert, key = Path(cert), Path(key)
    for path, data, mode in ((key, secret, 0o600), (cert, chain, 0o644)):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    return Credentials(cert, key)


def ensure_credentials(cert: Path, key: Path) -> bool:
    """Make the signing certificate and key if neither exists; whether they were made now.

    One present without the other is the operator's mistake, not something to overwrite.
    """
    cert, key = Path(cert), Path(key)
    if cert.is_file() and key.is_file():
        return False
    if cert.exists() or key.exists():
        raise EngineError("signing_half_missing", cert=str(cert), key=str(key))
    make_credentials(cert, key)
    return True


# ---------------------------------------------------------------------------------------------
# Signing


def manifest(tags: ResultTags, fmt: str) -> dict:
    """The manifest definition: the AI-generated action and the ingredients."""
    ingredients = [
        {"title": tags.source_song, "format": "audio/*", "relationship": "inputTo"},
    ]
    if tags.voice:
        ingredients.append(
            {
                "title": f"{tags.voice} (RVC voice model)",
                "format": "application/octet-stream",
                "relationship": "inputTo",
            }
        )
    action = {
        "action": CREATED,
        "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
        "softwareAgent": {"name": SOFTWARE},
        "description": tags.comment,
    }
    return {
        "claim_generator_info": [{"name": SOFTWARE}],
        "title": f"{tags.artist} - {tags.title}",
        "format": MIME[fmt],
        "ingredients": ingredients,
        "assertions": [{"label": "c2pa.actions", "data": {"actions": [action]}}],
    }


def _signer(credentials: Credentials):
    import c2pa

    try:
        chain = Path(credentials.cert).read_bytes()
        secret = Path(credentials.key).read_bytes()
    except OSError as exc:
        raise EngineError("signing_unreadable", error=exc.strerror) from exc
    info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain, secret, None)
    try:
        return c2pa.Signer.from_info(info)
    except c2pa.C2paError as exc:
        raise EngineError("signing_refused", error=str(exc)) from exc


def sign(path: Path, tags: ResultTags, credentials: Credentials) -> Path:
    """Embed a signed manifest in the file at `path`, in place (atomically); returns `path`."""
    import c2pa

    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in MIME:
        raise EngineError("manifest_format", fmt=fmt)
    tmp = path.with_name(f".signed-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        with (
            _signer(credentials) as signer,
            c2pa.Builder(manifest(tags, fmt)) as builder,
            open(path, "rb") as src,
            open(tmp, "w+b") as dst,
        ):
            builder.sign(signer, MIME[fmt], src, dst)
        os.replace(tmp, path)
    except c2pa.C2paError as exc:
        raise EngineError("signing_failed", error=str(exc)) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return path


# ---------------------------------------------------------------------------------------------
# Reading


def read(path: Path) -> Provenance:
    """The file's Content Credentials; `Provenance(marked=False)` when it has none."""
    import c2pa

    try:
        reader = c2pa.Reader.try_create(str(path))
    except c2pa.C2paError.NotSupported:
        return Provenance(marked=False, supported=False)
    except c2pa.C2paError as exc:  # a manifest is there but cannot be parsed
        return Provenance(marked=True, problems=(f"unreadable manifest ({exc})",))
    if reader is None:
        return Provenance(marked=False)
    with reader:
        store = json.loads(reader.json())
        state = reader.get_validation_state() or ""
    active = store.get("manifests", {}).get(store.get("active_manifest", ""), {})
    statuses = [s.get("code", "") for s in store.get("validation_status") or []]
    problems = tuple(code for code in statuses if code != UNTRUSTED)
    actions = [
        action
        for assertion in active.get("assertions", [])
        if assertion.get("label", "").startswith("c2pa.actions")
        for action in assertion.get("data", {}).get("actions", [])
    ]
    ai = any(a.get("digitalSourceType") == TRAINED_ALGORITHMIC_MEDIA for a in actions)
    signature = active.get("signature_info", {})
    generator = ", ".join(g.get("name", "") for g in active.get("claim_generator_info", []))
    return Provenance(
        marked=True,
        valid=state in ("Valid", "Trusted") and not problems,
        trusted=state == "Trusted",
        ai_generated=ai,
        title=active.get("title", ""),
        ingredients=tuple(i.get("title", "") for i in active.get("ingredients", [])),
        signer=signature.get("common_name", ""),
        issuer=signature.get("issuer", ""),
        generator=generator,
        problems=problems,
    )
