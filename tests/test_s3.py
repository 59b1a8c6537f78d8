"""The ``s3:`` backend against a moto server over real HTTP.

Requests are counted with a hook on the client's ``before-send`` event, which
fires once per HTTP request actually sent (retries included), so the request
budgets asserted here are what an S3 bill would show.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import tracemalloc
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from toil.common import Config
from toil.job import JobDescription
from toil.jobStores.abstractJobStore import (
    JobStoreExistsException,
    NoSuchFileException,
    NoSuchJobStoreException,
)

from jobstore import JobStore, layout
from jobstore.locator import parse_locator
from jobstore.s3 import EncryptionKeyError, S3Backend, S3Error

MiB = 1024 * 1024
SSE_HEADER = "x-amz-server-side-encryption-customer-algorithm"
REQUIREMENTS = {"memory": 1, "cores": 1, "disk": 1, "preemptible": False}


@dataclass
class Sent:
    """The HTTP requests a client sent: operation names, and keys that went with SSE-C or not."""

    ops: list[str] = field(default_factory=list)
    encrypted: set[str] = field(default_factory=set)
    clear: set[str] = field(default_factory=set)

    def __call__(self, event_name: str, request: Any, **kwargs: Any) -> None:
        self.ops.append(event_name.rsplit(".", 1)[-1])
        path = urllib.parse.unquote(urllib.parse.urlsplit(request.url).path)
        (self.encrypted if SSE_HEADER in request.headers else self.clear).add(path)


@contextlib.contextmanager
def sent(store: JobStore) -> Iterator[Sent]:
    record = Sent()
    events = store.backend.client.meta.events  # type: ignore[attr-defined]
    events.register("before-send.s3", record)
    try:
        yield record
    finally:
        events.unregister("before-send.s3", record)


def new_job(store: JobStore, name: str = "job") -> JobDescription:
    job = JobDescription(requirements=REQUIREMENTS, jobName=name)
    store.assign_job_id(job)
    store.create_job(job)
    return job


@pytest.fixture
def store(s3_locator: str) -> Iterator[JobStore]:
    s = JobStore(s3_locator)
    s.initialize(Config())
    yield s
    s.destroy()


def small_file(tmp_path: Path, content: bytes = b"small\n", executable: bool = False) -> str:
    path = tmp_path / f"in-{uuid.uuid4().hex[:6]}"
    path.write_bytes(content)
    path.chmod(0o700 if executable else 0o600)
    return str(path)


# ------------------------------------------------------------------ lifecycle


def test_stores_under_two_prefixes_see_nothing_of_each_other(moto_endpoint: str) -> None:
    # "run" and "run1": one name is a string prefix of the other, as keys they must not mix.
    base = f"s3:jobstore-tests/{uuid.uuid4().hex[:8]}"
    a, b = JobStore(f"{base}/run"), JobStore(f"{base}/run1")
    a.initialize(Config())
    b.initialize(Config())
    try:
        job_a, job_b = new_job(a, "a"), new_job(b, "b")
        with a.write_file_stream() as (f, file_a):
            f.write(b"A")
        with b.write_file_stream() as (f, file_b):
            f.write(b"B")
        for s, content in ((a, b"shared A"), (b, b"shared B")):
            with s.write_shared_file_stream("foo") as f:
                f.write(content)
        a.write_logs("log A")
        b.write_logs("log B")

        assert [j.jobStoreID for j in a.jobs()] == [job_a.jobStoreID]
        assert [j.jobStoreID for j in b.jobs()] == [job_b.jobStoreID]
        assert not a.job_exists(job_b.jobStoreID) and not b.job_exists(job_a.jobStoreID)
        assert not a.file_exists(file_b) and not b.file_exists(file_a)
        with a.read_shared_file_stream("foo") as f:
            assert f.read() == b"shared A"
        logs: list[bytes] = []
        a.read_logs(lambda m: logs.append(m.read()))
        assert logs == [b"log A"]

        a.destroy()
        with pytest.raises(NoSuchJobStoreException):
            JobStore(f"{base}/run").resume()
        resumed = JobStore(f"{base}/run1")
        resumed.resume()
        assert resumed.load_job(job_b.jobStoreID).jobName == "b"
        with resumed.read_file_stream(file_b) as f:
            assert f.read() == b"B"
        logs = []
        resumed.read_logs(lambda m: logs.append(m.read()))
        assert logs == [b"log B"]
    finally:
        a.destroy()
        b.destroy()


def test_initialize_refuses_a_used_prefix_and_resume_a_missing_one(store: JobStore) -> None:
    with pytest.raises(JobStoreExistsException):
        JobStore(store.locator).initialize(Config())
    with pytest.raises(NoSuchJobStoreException):
        JobStore(store.locator + "-other").resume()
    with pytest.raises(NoSuchJobStoreException):
        JobStore(f"s3:jobstore-missing-{uuid.uuid4().hex[:8]}/x").resume()


def test_initialize_creates_a_missing_bucket_without_touching_its_access(
    moto_endpoint: str,
) -> None:
    bucket = f"jobstore-new-{uuid.uuid4().hex[:8]}"
    s = JobStore(f"s3:{bucket}/run")
    with sent(s) as record:
        s.initialize(Config())
        new_job(s)
        s.destroy()
    assert "CreateBucket" in record.ops
    assert not [op for op in record.ops if "Acl" in op or "Policy" in op or "Public" in op]
    client: Any = s.backend.client  # type: ignore[attr-defined]
    grants = client.get_bucket_acl(Bucket=bucket)["Grants"]
    assert [g["Permission"] for g in grants] == ["FULL_CONTROL"]  # the owner, nobody else
    # destroy() emptied the prefix and left the bucket in place.
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    client.delete_bucket(Bucket=bucket)


def test_env_names_the_service_and_never_credentials(store: JobStore, moto_endpoint: str) -> None:
    env = store.get_env()
    assert env["AWS_ENDPOINT_URL"] == moto_endpoint
    assert env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert not [k for k in env if "SECRET" in k or "ACCESS_KEY" in k or "TOKEN" in k]
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in env.values()


# ---------------------------------------------------------------- encryption


def _key_file(path: Path, secret: bytes) -> str:
    path.write_bytes(secret)
    return str(path)


def test_sse_c_round_trip_and_reads_without_the_key_fail(s3_locator: str, tmp_path: Path) -> None:
    config = Config()
    config.sseKey = _key_file(tmp_path / "key", b"0123456789abcdef0123456789abcdef")
    writer = JobStore(s3_locator)
    try:
        with sent(writer) as record:
            writer.initialize(config)
            job = new_job(writer)
            file_id = writer.write_file(small_file(tmp_path, b"secret file"))
            with writer.write_file_stream() as (f, stream_id):
                f.write(b"secret stream")
            writer.write_logs("secret log")
        backend: Any = writer.backend
        prefix = f"/{backend.bucket}/{backend.prefix}"
        # Every object went encrypted except the config and the leader's claim (which
        # toil clean must read without the config); listings carry no object.
        assert {p for p in record.clear if p.startswith(prefix)} == {
            prefix + "shared/config.pickle",
            prefix + layout.leader_claim_key(1),
        }
        assert prefix + f"files/{file_id}" in record.encrypted

        # Another process finds the key through the config, which is stored in the clear.
        reader = JobStore(s3_locator)
        with sent(reader) as record:
            reader.resume()
            assert reader.load_job(job.jobStoreID).jobName == "job"
            with reader.read_file_stream(stream_id) as f:
                assert f.read() == b"secret stream"
            out = tmp_path / "out"
            reader.read_file(file_id, str(out))
            assert out.read_bytes() == b"secret file"
            logs: list[bytes] = []
            reader.read_logs(lambda m: logs.append(m.read()))
            assert logs == [b"secret log"]
        assert {p for p in record.clear if p.startswith(prefix)} == {
            prefix + "shared/config.pickle"
        }

        # Without the key, or with another one, reads fail and say why.
        reader.config.sseKey = None
        with (
            pytest.raises(EncryptionKeyError, match="no sseKey"),
            reader.read_file_stream(stream_id),
        ):
            pass
        reader.config.sseKey = _key_file(tmp_path / "other", b"x" * 32)
        with pytest.raises(EncryptionKeyError, match="different SSE-C key"):
            reader.load_job(job.jobStoreID)
        reader.config.sseKey = _key_file(tmp_path / "short", b"too short\n")
        with pytest.raises(EncryptionKeyError, match="holds 10 bytes"):
            reader.load_job(job.jobStoreID)
    finally:
        writer.destroy()


# ---------------------------------------------------------------- public URLs


def test_presigned_urls_download_with_urllib(store: JobStore, tmp_path: Path) -> None:
    file_id = store.write_file(small_file(tmp_path, b"via url"))
    with store.write_shared_file_stream("greeting") as f:
        f.write(b"hello")
    url = store.get_public_url(file_id)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert int(query["X-Amz-Expires"][0]) >= 3600
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"via url"
    with urllib.request.urlopen(store.get_shared_public_url("greeting"), timeout=10) as response:
        assert response.read() == b"hello"

    store.delete_file(file_id)
    with pytest.raises(NoSuchFileException):
        store.get_public_url(file_id)
    with pytest.raises(NoSuchFileException):
        store.get_shared_public_url("missing")


# ------------------------------------------------------------ large streams


def _small_part_store(locator: str) -> JobStore:
    """A store with S3's smallest part size, so that a multi-part file stays quick to move."""
    parsed = parse_locator(locator)
    backend = S3Backend(parsed.location, parsed.prefix, part_size=5 * MiB, stream_parts=2)
    store = JobStore(locator, backend=backend)
    store.initialize(Config())
    return store


def test_large_file_streams_both_ways_in_bounded_memory(s3_locator: str, tmp_path: Path) -> None:
    size, chunk = 40 * MiB, MiB  # 8 parts
    store = _small_part_store(s3_locator)
    try:
        digest = hashlib.sha256()
        tracemalloc.start()
        try:
            with sent(store) as record, store.write_file_stream() as (f, file_id):
                for i in range(size // chunk):
                    block = i.to_bytes(4, "big") * (chunk // 4)
                    digest.update(block)
                    f.write(block)
            _, write_peak = tracemalloc.get_traced_memory()
            assert record.ops.count("UploadPart") == 8
            assert store.get_file_size(file_id) == size

            tracemalloc.reset_peak()
            readback = hashlib.sha256()
            with store.read_file_stream(file_id) as f:
                while block := f.read(chunk):
                    readback.update(block)
            _, read_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert readback.hexdigest() == digest.hexdigest()
        # One part buffered plus two in flight, never the whole file.
        assert write_peak < 20 * MiB, write_peak
        assert read_peak < 4 * MiB, read_peak

        # Whole-file reads use concurrent ranged GETs (and no HEAD: the first GET sized it).
        out = tmp_path / "out"
        with sent(store) as record:
            store.read_file(file_id, str(out))
        assert hashlib.sha256(out.read_bytes()).hexdigest() == digest.hexdigest()
        assert "HeadObject" not in record.ops and record.ops.count("GetObject") > 2
    finally:
        store.destroy()


def test_failed_stream_leaves_no_object_and_no_upload(s3_locator: str) -> None:
    store = _small_part_store(s3_locator)
    try:
        with (
            pytest.raises(RuntimeError, match="writer failed"),
            sent(store) as record,
            store.write_file_stream() as (f, file_id),
        ):
            for _ in range(16):
                f.write(b"x" * MiB)
            raise RuntimeError("writer failed")
        # Parts were uploaded (a part still queued at the failure is cancelled), then aborted.
        assert record.ops[0] == "CreateMultipartUpload" and "UploadPart" in record.ops
        assert record.ops[-1] == "AbortMultipartUpload"
        assert not store.file_exists(file_id)
        backend: Any = store.backend
        uploads = backend.client.list_multipart_uploads(
            Bucket=backend.bucket, Prefix=backend.prefix
        )
        assert not uploads.get("Uploads")
    finally:
        store.destroy()


# ------------------------------------------------------------- request counts


def ops_of(store: JobStore, fn: Any, *args: Any) -> list[str]:
    with sent(store) as record:
        fn(*args)
    return record.ops


def test_single_object_operations_are_one_request(store: JobStore, tmp_path: Path) -> None:
    job = new_job(store)
    file_id = store.write_file(small_file(tmp_path, b"x" * 4096))
    out = str(tmp_path / "out")

    def read_stream() -> None:
        with store.read_file_stream(file_id) as f:
            assert f.read() == b"x" * 4096

    def write_stream() -> None:
        with store.write_file_stream(job.jobStoreID, cleanup=True) as (f, _):
            f.write(b"y" * 4096)

    def write_shared() -> None:
        with store.write_shared_file_stream("shared") as f:
            f.write(b"z" * 4096)

    assert ops_of(store, store.read_file, file_id, out) == ["GetObject"]
    assert ops_of(store, read_stream) == ["GetObject"]
    assert ops_of(store, store.file_exists, file_id) == ["HeadObject"]
    assert ops_of(store, store.get_file_size, file_id) == ["HeadObject"]
    assert ops_of(store, store.get_public_url, file_id) == ["HeadObject"]
    assert ops_of(store, write_stream) == ["PutObject"]
    assert ops_of(store, write_shared) == ["PutObject"]
    assert ops_of(store, store.write_file, small_file(tmp_path)) == ["PutObject"]
    assert ops_of(store, store.load_job, job.jobStoreID) == ["GetObject"]
    assert ops_of(store, store.job_exists, job.jobStoreID) == ["HeadObject"]
    assert ops_of(store, store.update_job, job) == ["PutObject"]
    assert ops_of(store, store.delete_file, file_id) == ["DeleteObject"]
    # The job's files are listed while its description goes, then deleted in one batch.
    deleted = ops_of(store, store.delete_job, job.jobStoreID)
    assert sorted(deleted[:2]) == ["DeleteObject", "ListObjectsV2"]
    assert deleted[2:] == ["DeleteObjects"]
    # Without files: the delete and the listing, side by side (jobstore/s3.py says why 2).
    bare = new_job(store)
    assert sorted(ops_of(store, store.delete_job, bare.jobStoreID)) == [
        "DeleteObject",
        "ListObjectsV2",
    ]
    assert not store.job_exists(bare.jobStoreID)
    # A missing file fails at once, after one request.
    assert ops_of(store, store.file_exists, file_id) == ["HeadObject"]
    with sent(store) as record, pytest.raises(NoSuchFileException):
        store.read_file(file_id, out)
    assert record.ops == ["GetObject"]


def test_logs_cost_one_request_per_message(store: JobStore) -> None:
    for i in range(20):
        store.write_logs(f"message {i}")
    seen: list[bytes] = []
    with sent(store) as record:
        assert store.read_logs(lambda m: seen.append(m.read())) == 20
    assert seen == [f"message {i}".encode() for i in range(20)]
    # Cursor GET, one listing, a GET per message, cursor PUT.
    assert len(record.ops) == 20 + 3


def test_deletes_are_batched(store: JobStore) -> None:
    for i in range(30):
        store.backend.put_bytes(f"files/@anon/x/{i}", b"")
    backend: Any = store.backend
    with sent(store) as record:
        backend.delete_many(f"files/@anon/y/{i}" for i in range(2500))
    assert record.ops == ["DeleteObjects"] * 3
    with sent(store) as record:
        store.destroy()
    # Who leads (the claims, the current one), then the deletes.
    assert record.ops == [
        "ListObjectsV2",
        "GetObject",
        "ListObjectsV2",
        "DeleteObjects",
        "ListMultipartUploads",
    ]
    assert list(backend.list("")) == []


# ---------------------------------------------------------- races and errors


def test_put_if_absent_has_exactly_one_winner(store: JobStore) -> None:
    backend = store.backend
    barrier = threading.Barrier(8)
    results: list[bool] = []

    def claim() -> None:
        barrier.wait()
        results.append(backend.put_if_absent("hints/race/slot"))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]


def test_failures_name_the_object_and_the_cause(moto_endpoint: str) -> None:
    bucket = f"jobstore-missing-{uuid.uuid4().hex[:8]}"
    store = JobStore(f"s3:{bucket}/run")
    with pytest.raises(S3Error) as caught, store.write_shared_file_stream("foo") as f:
        f.write(b"nowhere to go")
    assert f"s3://{bucket}/run/shared/foo" in str(caught.value)
    assert "NoSuchBucket" in str(caught.value)


def test_executability_survives_the_round_trip(store: JobStore, tmp_path: Path) -> None:
    script = small_file(tmp_path, b"#!/bin/sh\necho hi\n", executable=True)
    plain = small_file(tmp_path)
    script_id, plain_id = store.write_file(script), store.write_file(plain)
    assert store.file_is_executable(script_id) and not store.file_is_executable(plain_id)
    out = tmp_path / "out.sh"
    store.read_file(script_id, str(out))
    assert os.access(out, os.X_OK)
