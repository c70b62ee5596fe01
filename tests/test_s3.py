"""S3 storage against a real S3 HTTP API: moto's server on 127.0.0.1, boto3 over HTTP.

Round trips, multipart uploads, signed links fetched with urllib, the lifecycle rule for
`tmp/`, retries through a proxy that answers 503, and a whole cover job stored in S3.
"""

from __future__ import annotations

import hashlib
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from botocore.exceptions import ClientError

from flows.storage import S3Storage, open_storage
from tests.conftest import S3_REGION as REGION
from tests.conftest import s3_client
from tests.faulty_s3 import FaultyS3


@pytest.fixture
def bucket(moto_endpoint) -> str:
    name = f"encore-test-{uuid.uuid4().hex[:12]}"
    s3_client(moto_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def store(moto_endpoint, bucket) -> S3Storage:
    return S3Storage(bucket, "encore", endpoint_url=moto_endpoint, region=REGION)


def _keys(endpoint: str, bucket: str, prefix: str = "") -> list[str]:
    pages = s3_client(endpoint).get_paginator("list_objects_v2")
    return sorted(
        item["Key"]
        for page in pages.paginate(Bucket=bucket, Prefix=prefix)
        for item in page.get("Contents", [])
    )


def _file(path: Path, size: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    block = hashlib.sha256(str(seed).encode()).digest()
    data = bytearray()
    while len(data) < size:
        block = hashlib.sha256(block).digest()
        data += block
    path.write_bytes(bytes(data[:size]))
    return path


def test_put_fetch_exists_delete_round_trip(store, moto_endpoint, bucket, tmp_path):
    src = _file(tmp_path / "in" / "cover.wav", 10_000, seed=1)
    name = "Band - Song #1 (ü cover).wav"
    uri = store.put(src, f"covers/j1/{name}")
    assert uri.startswith(f"s3://{bucket}/encore/covers/j1/")
    assert unquote(urlparse(uri).path) == f"/encore/covers/j1/{name}"
    assert _keys(moto_endpoint, bucket) == [f"encore/covers/j1/{name}"]
    head = s3_client(moto_endpoint).head_object(Bucket=bucket, Key=f"encore/covers/j1/{name}")
    assert head["ContentType"] in ("audio/x-wav", "audio/wav")
    assert store.exists(uri)

    work = tmp_path / "work"
    local = store.fetch(uri, work)
    assert local.is_relative_to(work) and local.name == name
    assert local.read_bytes() == src.read_bytes()
    assert not [p for p in work.rglob(".part-*")]  # the download was renamed into place
    # Two objects with one file name land in two places.
    other = store.put(_file(tmp_path / "in" / "b.wav", 500, seed=2), "covers/j2/" + name)
    assert store.fetch(other, work) != local
    assert store.fetch(other, work).read_bytes() != local.read_bytes()

    store.delete(uri)
    assert not store.exists(uri)
    with pytest.raises(FileNotFoundError):
        store.fetch(uri, work)
    store.delete(uri)  # deleting what is gone is fine


def test_delete_prefix_removes_that_prefix_only(store, moto_endpoint, bucket, tmp_path):
    src = _file(tmp_path / "x.bin", 100)
    for key in ("tmp/jobs/j1/a.wav", "tmp/jobs/j1/sub/b.wav", "tmp/jobs/j10/c.wav", "tmp/jobs/j1"):
        store.put(src, key)
    store.delete_prefix("tmp/jobs/j1")
    assert _keys(moto_endpoint, bucket) == ["encore/tmp/jobs/j10/c.wav"]
    store.delete_prefix("tmp/jobs/nothing-here")


def test_keys_and_uris_stay_inside_the_store(store, bucket, tmp_path):
    src = _file(tmp_path / "x.bin", 10)
    for key in ("../escape.wav", "a/../../b", "", "/"):
        with pytest.raises(ValueError):
            store.put(src, key)
    with pytest.raises(ValueError):
        store.delete_prefix("..")
    for uri in (
        "s3://another-bucket/encore/covers/x.wav",  # another bucket
        f"s3://{bucket}/elsewhere/x.wav",  # outside the prefix
        f"s3://{bucket}/encore/../elsewhere/x.wav",
        f"s3://{bucket}/encore/%2E%2E/x.wav",
        "file:///etc/passwd",
    ):
        with pytest.raises(ValueError):
            store.exists(uri)
        with pytest.raises(ValueError):
            store.fetch(uri, tmp_path)
    # A key with `/./` and doubled slashes is normalised, not refused.
    uri = store.put(src, "covers//./j/x.bin")
    assert uri == f"s3://{bucket}/encore/covers/j/x.bin"


def test_large_file_goes_up_in_parts_and_comes_back_equal(moto_endpoint, bucket, tmp_path):
    mib = 1024 * 1024
    store = S3Storage(
        bucket,
        "big",
        endpoint_url=moto_endpoint,
        region=REGION,
        multipart_threshold=5 * mib,
        multipart_chunksize=5 * mib,
    )
    big = _file(tmp_path / "stems.zip", 12 * mib + 123, seed=7)
    uri = store.put(big, "results/j/stems.zip")
    head = s3_client(moto_endpoint).head_object(Bucket=bucket, Key="big/results/j/stems.zip")
    assert head["ETag"].strip('"').endswith("-3")  # a multipart upload of three parts
    assert head["ContentLength"] == big.stat().st_size
    back = store.fetch(uri, tmp_path / "work")
    assert hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(big.read_bytes()).digest()

    small = _file(tmp_path / "small.wav", mib, seed=8)
    store.put(small, "results/j/small.wav")
    head = s3_client(moto_endpoint).head_object(Bucket=bucket, Key="big/results/j/small.wav")
    assert "-" not in head["ETag"]  # under the threshold: one plain PUT


def test_signed_link_downloads_the_file_over_http(store, tmp_path):
    src = _file(tmp_path / "cover.mp3", 4321, seed=3)
    uri = store.put(src, "covers/j9/Band - Song (alice cover).mp3")
    link = store.link(uri, 600)
    assert link.startswith("http://127.0.0.1:")
    assert "X-Amz-Expires=600" in link and "X-Amz-Signature=" in link
    with urllib.request.urlopen(link, timeout=10) as resp:
        assert resp.status == 200
        assert resp.read() == src.read_bytes()
        disposition = resp.headers["Content-Disposition"]
    assert 'filename="Band - Song (alice cover).mp3"' in disposition
    assert "X-Amz-Expires=604800" in store.link(uri, 10**9)  # capped at S3's 7 days


def test_lifecycle_rule_expires_tmp_and_keeps_other_rules(store, moto_endpoint, bucket):
    client = s3_client(moto_endpoint)
    theirs = {
        "ID": "someone-elses",
        "Filter": {"Prefix": "logs/"},
        "Status": "Enabled",
        "Expiration": {"Days": 30},
    }
    client.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": [theirs]}
    )
    store.ensure_lifecycle(2)
    store.ensure_lifecycle(3)  # again: replaces our rule, adds no second one
    rules = {r["ID"]: r for r in client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert set(rules) == {
        "someone-elses",
        "encore-tmp-expiry:encore/",
        "encore-abort-multipart:encore/",
    }
    tmp_rule = rules["encore-tmp-expiry:encore/"]
    assert tmp_rule["Filter"]["Prefix"] == "encore/tmp/"
    assert tmp_rule["Expiration"]["Days"] == 3
    assert tmp_rule["Status"] == "Enabled"
    abort = rules["encore-abort-multipart:encore/"]
    assert abort["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 1
    assert rules["someone-elses"]["Expiration"]["Days"] == 30
    with pytest.raises(ValueError):
        store.ensure_lifecycle(0)


def test_transient_errors_are_retried(store, moto_endpoint, bucket, tmp_path):
    src = _file(tmp_path / "a.wav", 2000, seed=5)
    uri = store.put(src, "covers/j/a.wav")

    flaky = FaultyS3(moto_endpoint, failures=2)
    try:
        patient = S3Storage(bucket, "encore", endpoint_url=flaky.url, region=REGION, max_attempts=3)
        retries = patient.client.meta.config.retries
        assert retries == {"mode": "standard", "total_max_attempts": 3}
        assert patient.exists(uri)  # two 503s, then the answer
        assert flaky.requests == 3
        assert patient.fetch(uri, tmp_path / "w").read_bytes() == src.read_bytes()
    finally:
        flaky.shutdown()

    flaky = FaultyS3(moto_endpoint, failures=1)
    try:
        hasty = S3Storage(bucket, "encore", endpoint_url=flaky.url, region=REGION, max_attempts=1)
        with pytest.raises(ClientError) as err:
            hasty.exists(uri)  # no retry: the 503 reaches the caller, not a false "missing"
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert flaky.requests == 1
    finally:
        flaky.shutdown()


@pytest.fixture
def s3_settings(settings, moto_endpoint, bucket, monkeypatch):
    """The embedded settings with storage moved to s3://<bucket>/encore on moto."""
    from flows.settings import get_settings

    monkeypatch.setenv("ENCORE_STORAGE_URL", f"s3://{bucket}/encore")
    monkeypatch.setenv("ENCORE_S3_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("ENCORE_S3_REGION", REGION)
    monkeypatch.setenv("ENCORE_S3_MAX_ATTEMPTS", "4")
    get_settings.cache_clear()
    return get_settings()


def test_settings_pick_the_s3_store(s3_settings, bucket):
    store = open_storage(s3_settings.storage)
    assert isinstance(store, S3Storage)
    assert (store.bucket, store.prefix) == (bucket, "encore")
    assert store.client.meta.config.retries["total_max_attempts"] == 4
    assert store.client.meta.endpoint_url == s3_settings.s3_endpoint_url
    with pytest.raises(ValueError):
        open_storage("ftp://example/x")


def test_cover_job_stores_in_s3_and_cleans_its_tmp(s3_settings, song_wav, voice_files, bucket):
    from flows.catalog import add_song
    from flows.jobs import step_runs
    from flows.submit import follow, submit_cover
    from flows.voices import import_voice
    from gpu_worker.audio import decode

    s = s3_settings
    endpoint = s.s3_endpoint_url
    pth, index = voice_files["alice"]
    voice = import_voice(s, "u1", "alice", [pth, index])
    song = add_song(s, song_wav, title="Cloud Song", artist="Tester")
    assert song.uri.startswith(f"s3://{bucket}/encore/songs/")
    assert voice.pth_uri.startswith(f"s3://{bucket}/encore/")

    job = follow(submit_cover("u1", song.id, voice.id, {"pitch": 1}, s=s), s=s)
    assert job.state == "succeeded", job.reason
    assert job.result["uri"].startswith(f"s3://{bucket}/encore/covers/{job.id}/")
    cover = open_storage(s.storage).fetch(job.result["uri"], s.work_dir / "check")
    assert cover.name == job.result["filename"] == "Tester - Cloud Song (alice cover, +1).mp3"
    samples = decode(cover, 44100, 2).shape[1]  # decoded: the encoder's padding trimmed
    assert abs(samples - decode(song_wav, 44100, 2).shape[1]) <= 0.010 * 44100

    assert [r.cached for r in step_runs(s, job.id) if r.step == "separating"] == [False]
    assert _keys(endpoint, bucket, f"encore/tmp/jobs/{job.id}/") == []  # the job's scratch
    stems = _keys(endpoint, bucket, f"encore/tmp/stems/{song.content_hash}/")
    assert any(k.endswith("/vocals.wav") for k in stems)  # the stems cache stays (lifecycle)
    assert not (s.data_dir / "files").exists()  # nothing went to the local folder
    assert not (s.work_dir / job.id).exists()
