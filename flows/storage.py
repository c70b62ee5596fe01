"""Where files live between steps, addressed by URI: `file://...` (a local folder) or
`s3://bucket/...` (S3 through boto3).

Steps exchange URIs, never bytes. `fetch` gives a local path for a URI; `put` stores a local
file under a key and returns its URI. Writes are atomic: a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import mimetypes
import os
import re
import shutil
import threading
import time
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, unquote, urlparse


class Storage(Protocol):
    def put(self, local: Path, key: str) -> str: ...
    def uri(self, key: str) -> str: ...
    def fetch(self, uri: str, workdir: Path) -> Path: ...
    def exists(self, uri: str) -> bool: ...
    def delete(self, uri: str) -> None: ...
    def delete_prefix(self, key_prefix: str) -> None: ...
    def link(self, uri: str, expires_s: int) -> str | None: ...
    def expire(self, key_prefix: str, older_than_s: float) -> int: ...


def _safe_key(key: str) -> str:
    parts = [p for p in key.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise ValueError(f"unsafe storage key: {key!r}")
    return "/".join(parts)


class LocalStorage:
    """A folder on this machine: the embedded default.

    `public_url`, when set, is where a web server publishes this folder; only then can
    `link` hand out a download address for a stored file.
    """

    def __init__(self, root: Path, public_url: str | None = None):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.public_url = public_url.rstrip("/") if public_url else None

    def _path(self, uri: str) -> Path:
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            raise ValueError(f"not a local file URI: {uri}")
        path = Path(unquote(parsed.path)).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"URI outside the storage root: {uri}")
        return path

    def put(self, local: Path, key: str) -> str:
        dst = self.root / _safe_key(key)
        tmp = dst.with_name(f".part-{uuid.uuid4().hex}-{dst.name}")
        for attempt in range(3):  # a concurrent delete may prune the folder just made
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(local, tmp)
                os.replace(tmp, dst)
                break
            except FileNotFoundError:
                if attempt == 2 or not Path(local).is_file():
                    raise
            finally:
                tmp.unlink(missing_ok=True)
        return dst.as_uri()

    def uri(self, key: str) -> str:
        """The URI `put` gives a file stored under `key`."""
        return (self.root / _safe_key(key)).as_uri()

    def fetch(self, uri: str, workdir: Path) -> Path:
        """Local files need no copy: the stored path itself is returned (read it only)."""
        path = self._path(uri)
        if not path.is_file():
            raise FileNotFoundError(uri)
        return path

    def exists(self, uri: str) -> bool:
        return self._path(uri).is_file()

    def delete(self, uri: str) -> None:
        path = self._path(uri)
        path.unlink(missing_ok=True)
        self._prune(path.parent)

    def delete_prefix(self, key_prefix: str) -> None:
        """Remove the file or folder `key_prefix`; an error other than "already gone" raises
        (a deletion must not be skipped silently, see `flows.erase`)."""
        target = self.root / _safe_key(key_prefix)
        if target.is_dir():
            shutil.rmtree(target, onerror=_unless_missing)
        else:
            target.unlink(missing_ok=True)
        self._prune(target.parent)

    def _prune(self, folder: Path) -> None:
        """Remove `folder` and its parents while they are empty, up to the root: a deleted
        file leaves no empty folder behind."""
        while folder != self.root and folder.is_relative_to(self.root):
            try:
                folder.rmdir()
            except OSError:  # not empty (or gone): the folders above are not empty either
                return
            folder = folder.parent

    def expire(self, key_prefix: str, older_than_s: float) -> int:
        """Delete files under `key_prefix` last written more than `older_than_s` seconds ago,
        and the folders they leave empty; how many files went. (S3 does this with its
        lifecycle rule, `S3Storage.ensure_lifecycle`.)"""
        top = self.root / _safe_key(key_prefix)
        if not top.is_dir():
            return 0
        cutoff = time.time() - older_than_s
        gone = 0
        for folder, _dirs, files in os.walk(top, topdown=False):
            for name in files:
                path = Path(folder) / name
                try:
                    if path.lstat().st_mtime < cutoff:
                        path.unlink()
                        gone += 1
                except FileNotFoundError:
                    continue
            if Path(folder) != top:
                with contextlib.suppress(OSError):  # not empty: kept
                    Path(folder).rmdir()
        return gone

    def link(self, uri: str, expires_s: int) -> str | None:
        """A download address for a stored file, or None when the folder is not published.

        The folder's web server decides how long its files stay reachable; results live under
        `covers/` and `results/`, so a lifecycle rule there bounds a link's life. `expires_s`
        is honoured by stores that sign their links (S3).
        """
        if self.public_url is None:
            return None
        relative = self._path(uri).relative_to(self.root).as_posix()
        return f"{self.public_url}/{quote(relative)}"


def _unless_missing(_function, _path, exc_info) -> None:
    if not isinstance(exc_info[1], FileNotFoundError):
        raise exc_info[1]


class S3Storage:
    """A bucket, or a prefix in one: the cluster's store, through boto3.

    URIs are `s3://<bucket>/<prefix>/<key>`, the key percent-encoded as in `file://` URIs.
    Large files go up and down in parallel parts (multipart above `multipart_threshold`);
    transient errors (throttling, 5xx, dropped connections) are retried with backoff up to
    `max_attempts` tries per request. `link` signs a GET URL that expires. Everything under
    `<prefix>/tmp/` is scratch that `ensure_lifecycle` lets S3 expire.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        max_attempts: int = 5,
        multipart_threshold: int = 16 * 1024 * 1024,
        multipart_chunksize: int = 8 * 1024 * 1024,
    ):
        from boto3.s3.transfer import TransferConfig

        if not bucket or "/" in bucket:
            raise ValueError(f"bad bucket name: {bucket!r}")
        self.bucket = bucket
        self.prefix = _safe_key(prefix) if prefix.strip("/") else ""
        self.client = _s3_client(endpoint_url, region, max(1, int(max_attempts)))
        self.transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
            max_concurrency=4,
        )

    def _full(self, key: str) -> str:
        key = _safe_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _uri(self, full_key: str) -> str:
        return f"s3://{self.bucket}/{quote(full_key)}"

    def _key(self, uri: str) -> str:
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or parsed.netloc != self.bucket:
            raise ValueError(f"not a URI in bucket {self.bucket}: {uri}")
        key = unquote(parsed.path).lstrip("/")
        if _safe_key(key) != key or (self.prefix and not key.startswith(self.prefix + "/")):
            raise ValueError(f"URI outside the storage prefix: {uri}")
        return key

    def put(self, local: Path, key: str) -> str:
        """Upload `local`; an object appears whole or not at all (multipart included)."""
        full = self._full(key)
        kind = mimetypes.guess_type(full)[0] or "application/octet-stream"
        self.client.upload_file(
            str(local), self.bucket, full, ExtraArgs={"ContentType": kind}, Config=self.transfer
        )
        return self._uri(full)

    def uri(self, key: str) -> str:
        """The URI `put` gives an object stored under `key`."""
        return self._uri(self._full(key))

    def fetch(self, uri: str, workdir: Path) -> Path:
        """Download into `workdir` under the object's own file name, atomically.

        Each key gets its own folder, so two objects with one file name never collide.
        """
        from botocore.exceptions import ClientError

        key = self._key(uri)
        folder = Path(workdir) / ".s3" / hashlib.sha256(key.encode()).hexdigest()[:16]
        folder.mkdir(parents=True, exist_ok=True)
        dst = folder / key.rsplit("/", 1)[-1]
        tmp = folder / f".part-{uuid.uuid4().hex}"
        try:
            self.client.download_file(self.bucket, key, str(tmp), Config=self.transfer)
            os.replace(tmp, dst)
        except ClientError as exc:
            if _missing(exc):
                raise FileNotFoundError(uri) from exc
            raise
        finally:
            tmp.unlink(missing_ok=True)
        return dst

    def exists(self, uri: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(uri))
        except ClientError as exc:
            if _missing(exc):
                return False
            raise
        return True

    def delete(self, uri: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(uri))

    def delete_prefix(self, key_prefix: str) -> None:
        """Remove the object `key_prefix` and everything under `key_prefix/`."""
        full = self._full(key_prefix)
        self.client.delete_object(Bucket=self.bucket, Key=full)
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=full + "/"
        )
        for page in pages:
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if not keys:
                continue
            answer = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True}
            )
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise OSError(f"could not delete {first.get('Key')}: {first.get('Message')}")

    def link(self, uri: str, expires_s: int) -> str | None:
        """A signed GET address valid for `expires_s` seconds (at most 7 days, S3's limit).

        The download carries the object's file name, so a browser saves it under that name.
        """
        key = self._key(uri)
        name = key.rsplit("/", 1)[-1]
        fallback = name.encode("ascii", "ignore").decode().replace('"', "") or "download"
        disposition = f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name)}"
        return self.client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "ResponseContentDisposition": disposition,
            },
            ExpiresIn=max(1, min(int(expires_s), 7 * 24 * 3600)),
        )

    def expire(self, key_prefix: str, older_than_s: float) -> int:
        """Nothing to do here: S3 expires `tmp/` itself (`ensure_lifecycle`, or the
        Terraform module's rule), without listing the bucket every sweep."""
        return 0

    def ensure_lifecycle(self, days: int) -> None:
        """Have S3 expire `<prefix>/tmp/` objects after `days` days and drop abandoned
        multipart uploads after one day; other rules on the bucket are kept."""
        from botocore.exceptions import ClientError

        if int(days) < 1:
            raise ValueError("lifecycle expiry needs at least 1 day")
        base = f"{self.prefix}/" if self.prefix else ""
        ours = {
            f"encore-tmp-expiry:{base}"[:255]: {
                "Filter": {"Prefix": f"{base}tmp/"},
                "Status": "Enabled",
                "Expiration": {"Days": int(days)},
            },
            f"encore-abort-multipart:{base}"[:255]: {
                "Filter": {"Prefix": base},
                "Status": "Enabled",
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
            },
        }
        try:
            rules = self.client.get_bucket_lifecycle_configuration(Bucket=self.bucket)["Rules"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchLifecycleConfiguration":
                raise
            rules = []
        kept = [rule for rule in rules if rule.get("ID") not in ours]
        kept += [{"ID": rule_id, **rule} for rule_id, rule in ours.items()]
        self.client.put_bucket_lifecycle_configuration(
            Bucket=self.bucket, LifecycleConfiguration={"Rules": kept}
        )


def _missing(exc: Exception) -> bool:
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


_s3_lock = threading.Lock()


@lru_cache(maxsize=16)
def _s3_client(endpoint_url: str | None, region: str | None, max_attempts: int):
    """One client per configuration and process (clients are thread-safe; making one is not).

    A custom endpoint (MinIO, moto, a gateway) gets path-style addressing.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        region_name=region,
        retries={"mode": "standard", "total_max_attempts": max_attempts},  # tries, not retries
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        signature_version="s3v4",
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=16,
    )
    with _s3_lock:
        return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


def open_storage(url: str, public_url: str | None = None, settings=None) -> Storage:
    """The store `url` names: `file:///path` or `s3://bucket/prefix`.

    S3 options (endpoint, region, retries, multipart sizes) come from `settings`, or from
    the process's settings when none are given.
    """
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalStorage(Path(unquote(parsed.path)), public_url)
    if parsed.scheme == "s3":
        from flows.settings import get_settings

        s = settings or get_settings()
        return S3Storage(
            parsed.netloc,
            unquote(parsed.path),
            endpoint_url=s.s3_endpoint_url,
            region=s.s3_region,
            max_attempts=s.s3_max_attempts,
            multipart_threshold=s.s3_multipart_threshold_bytes,
            multipart_chunksize=s.s3_multipart_chunk_bytes,
        )
    raise ValueError(f"unsupported storage URL {url!r}: use file:///path or s3://bucket/prefix")


_SAFE = re.compile(r"[^\w.-]")


def upload_key(owner: str, filename: str) -> str:
    """A fresh storage key for a file `owner` sent: `tmp/uploads/<owner>/<random>/<name>`."""
    safe = _SAFE.sub("_", Path(filename).name)[-80:]
    if not safe.strip("."):  # "", "." and ".." name no file
        safe = "upload"
    return f"tmp/uploads/{_SAFE.sub('_', owner)[:60]}/{uuid.uuid4().hex}/{safe}"
