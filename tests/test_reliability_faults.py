"""S3 faults: the store talks to moto through ``tests/faultproxy.py``, which injects errors.

* Operations under a 20% fault rate of every kind (500, 503 SlowDown, resets
  before and after the request was applied, stalls, truncated bodies), from
  several threads at once: each operation succeeds, or fails with a clear error
  (an ``S3Error`` naming the object); afterwards every object, read without the
  proxy, is a complete version that some write produced (a failed write may
  have happened or not, never half), nothing unknown is stored, and every log
  message written is read (twice only if a ``read_logs`` call failed half-way).
* A real Toil workflow (leader and workers all going through the proxy)
  completes with the right result while 5% of its requests are faulted.
* A GET whose body breaks off half-way is resumed where it stopped, not handed
  to the caller as an error.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from toil.job import JobDescription

from jobstore import JobStore, layout
from jobstore.backend import BackendError, VersionGone
from tests.faultproxy import KINDS, FaultProxy
from tests.reliability_lib import (
    HEADER_SIZE,
    assert_no_debris_visible,
    bound,
    file_ids,
    make_payload,
    parse_payload,
    read_whole,
    record,
    run_workflow,
    workflow_result,
)
from tests.workflows import reliability as reliability_workflow

MiB = 1 << 20
THREADS = 6
ROUNDS = bound(1, 6)
OP_RATE = 0.2
WORKFLOW_RATE = 0.05
REQUIREMENTS = {"memory": 1, "cores": 1, "disk": 1, "preemptible": False}
ABSENT = "absent"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def proxied(
    s3_locator: str, moto_endpoint: str, toil_config: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[FaultProxy, str, JobStore]]:
    """An initialised store, a proxy in front of moto, and a handle that bypasses the proxy."""
    truth = JobStore(s3_locator)
    truth.initialize(toil_config)
    truth.backend.client  # noqa: B018 - bound to moto itself, before the endpoint moves
    with FaultProxy(moto_endpoint, rate=0.0, stall_seconds=0.3) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        yield proxy, s3_locator, truth
    truth.destroy()


class Exerciser:
    """One thread's operations, and what each of its objects may hold afterwards.

    ``expect`` maps each file ID to the digests it may hold: one after a
    successful write, old and new after a failed one (``ABSENT`` when there
    was no old), collapsing to the one seen whenever a read succeeds.
    """

    def __init__(self, store: JobStore, n: int, rng: random.Random, tmp: Path) -> None:
        self.store = store
        self.n = n
        self.rng = rng
        self.tmp = tmp
        self.version = 0
        self.expect: dict[str, set[str]] = {}
        self.jobs: dict[str, set[str]] = {}
        self.logs_written: set[tuple[str, int]] = set()
        self.logs_maybe: set[tuple[str, int]] = set()
        self.ok: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.unclear: list[str] = []

    def payload(self, size: int) -> bytes:
        self.version += 1
        return make_payload(f"t{self.n}", self.version, size)

    def attempt(self, name: str, fn: Callable[[], Any]) -> tuple[bool, Any]:
        """Run one operation; a failure must be an S3Error that names the object."""
        try:
            result = fn()
        except BackendError as e:
            if "s3://" not in str(e):
                self.unclear.append(f"{name}: {e!r}")
            self.failed[name] += 1
            return False, None
        except Exception as e:
            self.unclear.append(f"{name}: {type(e).__module__}.{type(e).__name__}: {e}")
            self.failed[name] += 1
            return False, None
        self.ok[name] += 1
        return True, result

    # ------------------------------------------------------------ files

    def new_file(self, size: int, hinted: bool = False) -> None:
        data = self.payload(size)
        ids: list[str] = []

        def write() -> None:
            hints = ["faults", f"t{self.n}"] if hinted else None
            with self.store.write_file_stream(hints=hints, basename="f") as (f, file_id):
                ids.append(str(file_id))
                f.write(data)

        ok, _ = self.attempt("write_file_stream", write)
        if ids:
            self.expect[ids[0]] = {digest(data)} if ok else {ABSENT, digest(data)}

    def new_file_from_path(self, size: int) -> None:
        data = self.payload(size)
        path = self.tmp / f"t{self.n}-{self.version}"
        path.write_bytes(data)
        ok, file_id = self.attempt("write_file", lambda: self.store.write_file(str(path)))
        if ok:
            self.expect[file_id] = {digest(data)}
        # A failed write_file gives no ID to track: the final sweep checks what it left.

    def update(self, file_id: str, size: int, stream: bool) -> None:
        data = self.payload(size)
        if stream:

            def write() -> None:
                with self.store.update_file_stream(file_id) as f:
                    f.write(data)

            ok, _ = self.attempt("update_file_stream", write)
        else:
            path = self.tmp / f"t{self.n}-{self.version}"
            path.write_bytes(data)
            ok, _ = self.attempt("update_file", lambda: self.store.update_file(file_id, str(path)))
        self.expect[file_id] = {digest(data)} if ok else {*self.expect[file_id], digest(data)}

    def read(self, file_id: str, stream: bool) -> None:
        if stream:
            ok, data = self.attempt("read_file_stream", lambda: read_whole(self.store, file_id))
        else:
            path = self.tmp / f"t{self.n}-read"

            def read_file() -> bytes:
                self.store.read_file(file_id, str(path))
                return path.read_bytes()

            ok, data = self.attempt("read_file", read_file)
        if ok:
            assert digest(data) in self.expect[file_id], f"{file_id} read back wrong"
            self.expect[file_id] = {digest(data)}

    def probe(self, file_id: str) -> None:
        ok, exists = self.attempt("file_exists", lambda: self.store.file_exists(file_id))
        if ok and ABSENT not in self.expect[file_id]:
            assert exists, f"{file_id} vanished"
        if ok and exists:
            self.attempt("get_file_size", lambda: self.store.get_file_size(file_id))

    def delete(self, file_id: str) -> None:
        ok, _ = self.attempt("delete_file", lambda: self.store.delete_file(file_id))
        self.expect[file_id] = {ABSENT} if ok else {*self.expect[file_id], ABSENT}

    # ------------------------------------------------- jobs, logs, shared

    def job_cycle(self) -> None:
        job = JobDescription(requirements=REQUIREMENTS, jobName=f"faults-t{self.n}")
        self.store.assign_job_id(job)
        job_id = str(job.jobStoreID)
        job.reliability_payload = self.payload(1000)  # type: ignore[attr-defined]
        ok, _ = self.attempt("create_job", lambda: self.store.create_job(job))
        first = digest(job.reliability_payload)  # type: ignore[attr-defined]
        self.jobs[job_id] = {first} if ok else {ABSENT, first}
        job.reliability_payload = self.payload(50_000)  # type: ignore[attr-defined]
        ok, _ = self.attempt("update_job", lambda: self.store.update_job(job))
        second = digest(job.reliability_payload)  # type: ignore[attr-defined]
        self.jobs[job_id] = {second} if ok else {*self.jobs[job_id], second}
        ok, loaded = self.attempt("load_job", lambda: self.store.load_job(job_id))
        if ok:
            assert digest(loaded.reliability_payload) in self.jobs[job_id]
        if self.rng.random() < 0.5:
            ok, _ = self.attempt("delete_job", lambda: self.store.delete_job(job_id))
            self.jobs[job_id] = {ABSENT} if ok else {*self.jobs[job_id], ABSENT}

    def logs(self) -> None:
        for _ in range(3):
            data = self.payload(self.rng.choice((200, 20_000)))
            ok, _ = self.attempt("write_logs", lambda data=data: self.store.write_logs(data))
            (self.logs_written if ok else self.logs_maybe).add(parse_payload(data))

    def shared(self) -> None:
        data = self.payload(self.rng.choice((1000, 2 * MiB)))
        name = f"rel-fault-{self.n}"

        def write() -> None:
            with self.store.write_shared_file_stream(name) as f:
                f.write(data)

        ok, _ = self.attempt("write_shared_file_stream", write)
        if ok:

            def read() -> bytes:
                with self.store.read_shared_file_stream(name) as f:
                    return bytes(f.read())

            ok, back = self.attempt("read_shared_file_stream", read)
            if ok:
                assert back == data, "shared file read back wrong"

    def round(self) -> None:
        for size in (1000, MiB, 9 * MiB):  # 9 MiB: a multipart upload
            self.new_file(size)
        self.new_file(1000, hinted=True)
        self.new_file_from_path(9 * MiB)
        live = [f for f, e in self.expect.items() if e != {ABSENT}]
        for file_id in live:
            self.update(file_id, self.rng.choice((500, MiB)), stream=self.rng.random() < 0.5)
            self.read(file_id, stream=self.rng.random() < 0.5)
            self.probe(file_id)
        if live:
            self.delete(self.rng.choice(live))
        self.job_cycle()
        self.logs()
        self.shared()


def test_operations_through_faults(
    proxied: tuple[FaultProxy, str, JobStore], tmp_path: Path
) -> None:
    proxy, locator, truth = proxied
    seed = random.randrange(2**32)
    exercisers = []
    for n in range(THREADS):
        store = JobStore(locator)
        store.resume()
        exercisers.append(Exerciser(store, n, random.Random(seed + n), tmp_path))
    proxy.rate = OP_RATE
    reader = exercisers[0].store  # the one log reader
    read: list[tuple[str, int]] = []
    read_in_failed_calls: set[tuple[str, int]] = set()
    errors: list[BaseException] = []

    def work(e: Exerciser) -> None:
        try:
            for _ in range(ROUNDS):
                e.round()
        except BaseException as err:
            errors.append(err)

    began = time.monotonic()
    threads = [threading.Thread(target=work, args=(e,)) for e in exercisers]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        batch: list[tuple[str, int]] = []
        try:
            reader.read_logs(lambda s, batch=batch: batch.append(parse_payload(s.read())))
        except BackendError:
            read_in_failed_calls.update(batch)
        read.extend(batch)
        time.sleep(0.2)
    for t in threads:
        t.join()
    seconds = time.monotonic() - began
    proxy.rate = 0.0
    assert not errors, errors
    unclear = [u for e in exercisers for u in e.unclear]
    assert not unclear, f"errors that do not say what failed (seed {seed}): {unclear[:5]}"

    # What the store holds, read without the proxy.
    reader.read_logs(lambda s: read.append(parse_payload(s.read())))
    tracked: dict[str, set[str]] = {}
    for e in exercisers:
        tracked.update(e.expect)
    stored = set(file_ids(truth))
    for file_id, allowed in tracked.items():
        if file_id in stored:
            assert digest(read_whole(truth, file_id)) in allowed, f"{file_id} is corrupt"
        else:
            assert ABSENT in allowed, f"{file_id} was lost"
    for file_id in stored - set(tracked):
        # A failed write_file gave no ID, or a hinted write lost its reply: complete anyway.
        parse_payload(read_whole(truth, file_id))
    for e in exercisers:
        for job_id, allowed in e.jobs.items():
            if truth.job_exists(job_id):
                payload = truth.load_job(job_id).reliability_payload
                assert digest(payload) in allowed, f"job {job_id} is corrupt"
            else:
                assert ABSENT in allowed, f"job {job_id} was lost"
    written = {m for e in exercisers for m in e.logs_written}
    maybe = {m for e in exercisers for m in e.logs_maybe}
    assert written <= set(read), "log messages lost"
    assert set(read) <= written | maybe, "log messages invented"
    twice = {m for m in read if read.count(m) > 1}
    assert twice <= read_in_failed_calls, "a log message was read twice"
    assert_no_debris_visible(truth)
    backend: Any = truth.backend
    uploads = backend.client.list_multipart_uploads(Bucket=backend.bucket, Prefix=backend.prefix)
    ok = sum(sum(e.ok.values()) for e in exercisers)
    failed = sum(sum(e.failed.values()) for e in exercisers)
    record(
        "faults",
        "operations",
        requests=proxy.requests,
        faults=sum(proxy.faults.values()),
        by_kind=dict(proxy.faults),
        operations=ok + failed,
        failed_clearly=failed,
        dangling_uploads=len(uploads.get("Uploads", [])),
        seconds=round(seconds, 1),
        seed=seed,
        bytes_lost=0,
    )
    assert sum(proxy.faults.values()) >= 20, "too few faults to prove anything"


def test_workflow_completes_with_faults(
    proxied: tuple[FaultProxy, str, JobStore], tmp_path: Path
) -> None:
    proxy, _, truth = proxied
    proxy.kinds = KINDS  # truncated bodies too: one cut GET unretried in the leader ends it
    proxy.stall_seconds = 1.0
    proxy.rate = WORKFLOW_RATE
    (tmp_path / "gate").mkdir()
    (tmp_path / "gate" / "open").touch()
    locator = f"s3:{truth.backend.bucket}/wf-{os.urandom(4).hex()}"  # type: ignore[attr-defined]
    proc = run_workflow(locator, tmp_path)
    assert proc.returncode == 0, f"{dict(proxy.faults)}\n{proc.stderr[-5000:]}"
    assert workflow_result(proc) == reliability_workflow.expected()
    record(
        "faults",
        "workflow",
        requests=proxy.requests,
        faults=sum(proxy.faults.values()),
        by_kind=dict(proxy.faults),
        bytes_lost=0,
    )
    assert sum(proxy.faults.values()) >= 5, "too few faults to prove anything"


def test_truncated_get_is_retried(proxied: tuple[FaultProxy, str, JobStore]) -> None:
    """One cut GET must not fail a read: the leader dies on the first one otherwise."""
    proxy, locator, truth = proxied
    job = JobDescription(requirements=REQUIREMENTS, jobName="cut")
    truth.assign_job_id(job)
    truth.create_job(job)
    with truth.write_file_stream() as (f, file_id):
        f.write(make_payload("cut", 1, MiB))
    store = JobStore(locator)
    store.resume()
    proxy.kinds = ("truncate",)
    proxy.rate = 0.25
    for _ in range(10):
        store.load_job(str(job.jobStoreID))
        parse_payload(read_whole(store, file_id))
        assert store.backend.get_bytes(layout.CONFIG)
    assert proxy.faults["truncate"] > 0


@pytest.mark.parametrize("change", ["replace", "delete"])
def test_cut_get_of_a_version_gone_fails_clearly(
    proxied: tuple[FaultProxy, str, JobStore], change: str
) -> None:
    """A cut body is resumed only in its own version: gone since, the read fails with
    VersionGone and never goes on in the new bytes (a mix)."""
    proxy, locator, truth = proxied
    with truth.write_file_stream() as (f, file_id):
        f.write(make_payload("gone", 1, MiB))
    key = layout.file_key(file_id)
    store = JobStore(locator)
    store.resume()
    proxy.kinds = ("truncate",)
    proxy.rate = 1.0
    with store.backend.open_version(key) as (info, stream):
        proxy.rate = 0.0
        assert info.size == MiB + HEADER_SIZE
        if change == "replace":
            truth.backend.put_bytes(key, make_payload("gone", 2, MiB))
        else:
            truth.backend.delete(key)
        with pytest.raises(VersionGone, match="replaced or deleted"):
            stream.read()
    assert proxy.faults["truncate"] == 1
