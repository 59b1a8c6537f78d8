"""Concurrency: 8 processes hammer one store with mixed operations, then everything is counted.

Each worker process (forked by the fork server, a real process with its own
``JobStore``) runs a seeded random mix of every write and read path on its
own jobs and files, and on objects all workers share: one file and one job
that everybody rewrites while everybody reads them back, a shared file, and
one hinted name that all workers claim at once. Meanwhile the test process,
the one log reader, calls ``read_logs`` in a loop.

Afterwards: every job and file a worker kept exists with the version it last
wrote (and the executable bit it should have), nothing a worker deleted is
left (no files of deleted jobs either), every read of a shared object saw a
complete version, no two workers ever got the same file ID, every log message
was read exactly once, and no temporary shows through the API or is left on disk.

CI runs 8 x 150 operations on ``local:`` and 8 x 60 on ``s3:`` (moto in one
Python process is the bottleneck); ``scripts/reliability`` runs 8 x 500 on both.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

from toil.job import JobDescription

from jobstore import JobStore
from tests.reliability_lib import (
    assert_no_debris_visible,
    bound,
    file_ids,
    forkserver,
    make_payload,
    open_store,
    orphaned_job_files,
    parse_payload,
    read_whole,
    record,
    store_env,
    write_local,
)

WORKERS = 8
OPS = {"local": bound(150, 500), "s3": bound(60, 500)}
REQUIREMENTS = {"memory": 1, "cores": 1, "disk": 1, "preemptible": False}
SIZES = (100, 4 << 10, 64 << 10, 1 << 20)
SIZE_WEIGHTS = (4, 4, 2, 1)
#: How often each operation is picked.
MIX = {
    "create_job": 8,
    "update_job": 8,
    "delete_job": 4,
    "write_file": 6,
    "write_file_stream": 6,
    "write_hinted": 3,
    "update_file": 6,
    "update_file_stream": 6,
    "read_file": 8,
    "delete_file": 4,
    "write_logs": 10,
    "write_shared": 4,
    "update_common_file": 4,
    "read_common_file": 6,
    "update_common_job": 3,
    "load_common_job": 4,
}


class Worker:
    """One process's share of the load, and what it believes the store holds afterwards."""

    def __init__(self, store: JobStore, n: int, seed: int, common: dict[str, str], tmp: str):
        self.store = store
        self.n = n
        self.rng = random.Random(seed)
        self.common = common
        self.tmp = tmp
        self.jobs: dict[str, int] = {}
        #: file ID -> (version, executable, owning job or "")
        self.files: dict[str, tuple[int, bool, str]] = {}
        self.created_files: list[str] = []
        self.logs: list[int] = []
        self.shared = -1
        self.seq = 0
        self.counts: Counter[str] = Counter()

    def payload(self, what: str) -> bytes:
        self.seq += 1
        size = self.rng.choices(SIZES, SIZE_WEIGHTS)[0]
        return make_payload(f"w{self.n}-{what}", self.seq, size)

    def local(self, data: bytes, executable: bool) -> str:
        return write_local(os.path.join(self.tmp, f"w{self.n}-{self.seq}"), data, executable)

    def run(self, ops: int) -> None:
        names = list(MIX)
        weights = list(MIX.values())
        while sum(self.counts.values()) < ops:
            op = self.rng.choices(names, weights)[0]
            if getattr(self, op)() is not False:
                self.counts[op] += 1

    # ----------------------------------------------------------------- jobs

    def new_job(self) -> JobDescription:
        job = JobDescription(requirements=REQUIREMENTS, jobName=f"conc-w{self.n}")
        job.reliability_payload = self.payload("job")  # type: ignore[attr-defined]
        self.store.assign_job_id(job)
        return job

    def create_job(self) -> None:
        jobs = [self.new_job() for _ in range(self.rng.choice((1, 1, 3)))]
        with self.store.batch():
            for job in jobs:
                self.store.create_job(job)
        for job in jobs:
            self.jobs[str(job.jobStoreID)] = parse_payload(job.reliability_payload)[1]  # type: ignore[attr-defined]

    def update_job(self) -> bool:
        if not self.jobs:
            return False
        job = self.store.load_job(self.rng.choice(sorted(self.jobs)))
        assert parse_payload(job.reliability_payload)[1] == self.jobs[str(job.jobStoreID)]  # type: ignore[attr-defined]
        job.reliability_payload = self.payload("job")  # type: ignore[attr-defined]
        self.store.update_job(job)
        self.jobs[str(job.jobStoreID)] = self.seq
        return True

    def delete_job(self) -> bool:
        if not self.jobs:
            return False
        job_id = self.rng.choice(sorted(self.jobs))
        self.store.delete_job(job_id)
        del self.jobs[job_id]
        for file_id in [f for f, (_, _, owner) in self.files.items() if owner == job_id]:
            del self.files[file_id]
        return True

    def update_common_job(self) -> None:
        job = self.store.load_job(self.common["job"])
        job.reliability_payload = self.payload("cjob")  # type: ignore[attr-defined]
        self.store.update_job(job)

    def load_common_job(self) -> None:
        job = self.store.load_job(self.common["job"])
        parse_payload(job.reliability_payload)  # type: ignore[attr-defined]

    # ---------------------------------------------------------------- files

    def where(self) -> tuple[dict[str, Any], str]:
        if self.jobs and self.rng.random() < 0.4:
            owner = self.rng.choice(sorted(self.jobs))
            return {"job_id": owner, "cleanup": True}, owner
        return {}, ""

    def write_file(self) -> None:
        where, owner = self.where()
        executable = self.rng.random() < 0.3
        path = self.local(self.payload("file"), executable)
        file_id = self.store.write_file(path, **where)
        os.unlink(path)
        self.remember(file_id, executable, owner)

    def write_file_stream(self) -> None:
        where, owner = self.where()
        data = self.payload("file")
        with self.store.write_file_stream(basename=f"w{self.n}", **where) as (f, file_id):
            f.write(data)
        self.remember(str(file_id), False, owner)

    def write_hinted(self) -> None:
        # Every worker claims the same hinted name: each must get an ID of its own.
        data = self.payload("file")
        with self.store.write_file_stream(hints=["conc", "all"], basename="same") as (f, file_id):
            f.write(data)
        self.remember(str(file_id), False, "")

    def remember(self, file_id: str, executable: bool, owner: str) -> None:
        self.files[file_id] = (self.seq, executable, owner)
        self.created_files.append(file_id)

    def pick_file(self) -> str | None:
        return self.rng.choice(sorted(self.files)) if self.files else None

    def update_file(self) -> bool:
        file_id = self.pick_file()
        if file_id is None:
            return False
        executable = self.rng.random() < 0.5
        path = self.local(self.payload("file"), executable)
        self.store.update_file(file_id, path)
        os.unlink(path)
        self.files[file_id] = (self.seq, executable, self.files[file_id][2])
        return True

    def update_file_stream(self) -> bool:
        file_id = self.pick_file()
        if file_id is None:
            return False
        with self.store.update_file_stream(file_id) as f:
            f.write(self.payload("file"))
        _, executable, owner = self.files[file_id]
        self.files[file_id] = (self.seq, executable, owner)
        return True

    def read_file(self) -> bool:
        file_id = self.pick_file()
        if file_id is None:
            return False
        path = os.path.join(self.tmp, f"w{self.n}-read")
        self.store.read_file(file_id, path)
        with open(path, "rb") as f:
            version = parse_payload(f.read())[1]
        version_expected, executable, _ = self.files[file_id]
        assert version == version_expected, (file_id, version, version_expected)
        assert bool(os.stat(path).st_mode & 0o100) == executable, file_id
        os.unlink(path)
        return True

    def delete_file(self) -> bool:
        file_id = self.pick_file()
        if file_id is None:
            return False
        self.store.delete_file(file_id)
        del self.files[file_id]
        return True

    def update_common_file(self) -> None:
        with self.store.update_file_stream(self.common["file"]) as f:
            f.write(self.payload("cfile"))

    def read_common_file(self) -> None:
        parse_payload(read_whole(self.store, self.common["file"]))  # complete, whoever wrote it

    # ------------------------------------------------------ logs and shared

    def write_logs(self) -> None:
        self.store.write_logs(self.payload("log"))
        self.logs.append(self.seq)

    def write_shared(self) -> None:
        name = self.rng.choice((f"rel-w{self.n}", "rel-common"))
        data = self.payload("shared")
        with self.store.write_shared_file_stream(name) as f:
            f.write(data)
        if name != "rel-common":
            self.shared = self.seq

    def result(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "files": self.files,
            "created_files": self.created_files,
            "logs": self.logs,
            "shared": self.shared,
            "counts": dict(self.counts),
        }


def worker_main(
    locator: str,
    env: dict[str, str],
    n: int,
    ops: int,
    seed: int,
    common: dict[str, str],
    tmp: str,
    start: Any,
) -> None:
    """Entry point of worker ``n`` (a process forked by the fork server)."""
    os.environ.update(env)
    out = os.path.join(tmp, f"result-{n}.json")
    try:
        store = JobStore(locator)
        store.resume()
        worker = Worker(store, n, seed, common, tmp)
        start.wait(60)
        worker.run(ops)
        result = worker.result()
    except BaseException:
        result = {"error": traceback.format_exc()}
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f)


class LogReader(threading.Thread):
    """The one reader of log messages, reading while the workers write."""

    def __init__(self, store: JobStore) -> None:
        super().__init__(daemon=True)
        self.store = store
        self.messages: list[tuple[str, int]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def read(self) -> None:
        self.store.read_logs(lambda stream: self.messages.append(parse_payload(stream.read())))

    def run(self) -> None:
        try:
            while not self.stop.wait(0.05):
                self.read()
        except BaseException as e:
            self.error = e


def test_concurrent_processes(store_locator: str, toil_config: Any, tmp_path: Path) -> None:
    backend = store_locator.split(":", 1)[0]
    ops = OPS[backend]
    store = JobStore(store_locator)
    store.initialize(toil_config)
    common_job = JobDescription(requirements=REQUIREMENTS, jobName="conc-common")
    common_job.reliability_payload = make_payload("common-job", 0, 100)  # type: ignore[attr-defined]
    store.assign_job_id(common_job)
    store.create_job(common_job)
    store.set_root_job(str(common_job.jobStoreID))
    with store.write_file_stream(basename="common") as (f, common_file):
        f.write(make_payload("common-file", 0, 100))
    common = {"job": str(common_job.jobStoreID), "file": str(common_file)}

    ctx = forkserver()
    start = ctx.Event()
    seed = random.randrange(2**32)
    procs = [
        ctx.Process(
            target=worker_main,
            args=(store_locator, store_env(), n, ops, seed + n, common, str(tmp_path), start),
        )
        for n in range(WORKERS)
    ]
    reader = LogReader(open_store(store_locator))
    began = time.monotonic()
    for p in procs:
        p.start()
    reader.start()
    start.set()
    try:
        for p in procs:
            p.join(240)
            assert p.exitcode == 0, f"worker exited {p.exitcode}"
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        reader.stop.set()
        reader.join(60)
    seconds = time.monotonic() - began
    assert reader.error is None, reader.error
    reader.read()  # what came in after the last pass

    results = [json.loads((tmp_path / f"result-{n}.json").read_text()) for n in range(WORKERS)]
    for n, r in enumerate(results):
        assert "error" not in r, f"worker {n} failed (seed {seed}):\n{r['error']}"
    store = open_store(store_locator)

    # Jobs: exactly the ones kept, each at its last version.
    expected_jobs = {j: v for r in results for j, v in r["jobs"].items()}
    stored_jobs = {str(j.jobStoreID): j for j in store.jobs()}
    assert set(stored_jobs) == {*expected_jobs, common["job"]}
    for job_id, version in expected_jobs.items():
        assert parse_payload(stored_jobs[job_id].reliability_payload)[1] == version
    parse_payload(stored_jobs[common["job"]].reliability_payload)

    # Files: exactly the ones kept, each at its last version and mode; IDs never shared.
    created = [f for r in results for f in r["created_files"]]
    assert len(created) == len(set(created)), "two writers got the same file ID"
    expected_files = {f: v for r in results for f, v in r["files"].items()}
    assert set(file_ids(store)) == {*expected_files, common["file"]}
    for file_id, (version, executable, _) in expected_files.items():
        assert parse_payload(read_whole(store, file_id))[1] == version, file_id
        assert store.file_is_executable(file_id) == executable, file_id
    parse_payload(read_whole(store, common["file"]))
    assert orphaned_job_files(store) == []

    # Logs: every message read once, none invented.
    written = {(f"w{n}-log", s) for n, r in enumerate(results) for s in r["logs"]}
    assert len(reader.messages) == len(set(reader.messages)), "a log message was read twice"
    assert set(reader.messages) == written, "log messages lost or invented"

    # Shared files: each worker's at its last version; the common one complete.
    for n, r in enumerate(results):
        if r["shared"] >= 0:
            with store.read_shared_file_stream(f"rel-w{n}") as f:
                assert parse_payload(f.read()) == (f"w{n}-shared", r["shared"])
    with store.read_shared_file_stream("rel-common") as f:
        parse_payload(f.read())

    assert_no_debris_visible(store)
    leftovers = _temporaries(store)
    assert not leftovers, f"temporaries left behind by writers that finished: {leftovers}"
    counts: Counter[str] = Counter()
    for r in results:
        counts.update(r["counts"])
    record(
        "concurrency",
        backend,
        backend=backend,
        processes=WORKERS,
        ops_per_process=ops,
        operations=sum(counts.values()),
        log_messages=len(written),
        seconds=round(seconds, 1),
        seed=seed,
        bytes_lost=0,
    )
    store.destroy()


def _temporaries(store: JobStore) -> list[str]:
    backend: Any = store.backend
    if hasattr(backend, "root"):
        tmp = os.path.join(backend.root, ".tmp")
        return os.listdir(tmp) if os.path.isdir(tmp) else []
    uploads = backend.client.list_multipart_uploads(Bucket=backend.bucket, Prefix=backend.prefix)
    return [u["Key"] for u in uploads.get("Uploads", [])]
