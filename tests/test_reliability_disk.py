"""Full disk on ``local:``: a small tmpfs, mounted by the test, runs out of blocks or inodes.

For every write path, with the file system full: the call fails with
``OSError(ENOSPC)``, the store is exactly as before (same objects, same
contents, nothing new visible), and the failing writer removed its temporary
file from ``.tmp``. Once space is freed, the very same calls succeed and read
back intact.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from toil.job import JobDescription

from jobstore import JobStore
from tests.reliability_lib import (
    WRITE_PATHS,
    assert_no_debris_visible,
    file_ids,
    make_payload,
    parse_payload,
    read_whole,
    record,
)

MiB = 1 << 20
TMPFS_SIZE = 8 * MiB
REQUIREMENTS = {"memory": 1, "cores": 1, "disk": 1, "preemptible": False}

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mount") is None, reason="mounting a tmpfs needs root"
)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs with few inodes, unmounted (lazily if need be) afterwards."""
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    options = f"size={TMPFS_SIZE},nr_inodes=200,mode=0700"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", str(mountpoint)], check=False).returncode:
            subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(path: Path, leave: int) -> None:
    """Write a filler file until at most ``leave`` bytes of the file system are free."""
    with open(path, "ab") as f:
        while True:
            st = os.statvfs(path)
            free = st.f_bavail * st.f_frsize
            if free <= leave:
                return
            try:
                f.write(b"\0" * min(free - leave, MiB))
                f.flush()
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                return


def fill_inodes(directory: Path) -> None:
    """Create empty files until the file system has no inode left."""
    directory.mkdir()
    n = 0
    while True:
        try:
            (directory / str(n)).touch()
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            return
        n += 1


class Subject:
    """A store with some content, and a fingerprint of everything visible in it."""

    def __init__(self, store: JobStore, scratch: Path) -> None:
        self.store = store
        self.scratch = scratch
        with store.write_file_stream(basename="kept") as (f, file_id):
            f.write(make_payload("kept", 0, 64 << 10))
        self.file_id = str(file_id)
        job = JobDescription(requirements=REQUIREMENTS, jobName="kept")
        job.reliability_payload = make_payload("job", 0, 1000)  # type: ignore[attr-defined]
        store.assign_job_id(job)
        store.create_job(job)
        self.job = job
        with store.write_shared_file_stream("rel-shared") as f:
            f.write(make_payload("shared", 0, 1000))
        store.write_logs(make_payload("log", 0, 100))
        self.big = make_payload("big", 1, MiB)
        self.big_path = scratch / "big"
        self.big_path.write_bytes(self.big)

    def fingerprint(self) -> dict[str, str]:
        store = self.store
        fp = {
            f"file:{f}": hashlib.sha256(read_whole(store, f)).hexdigest() for f in file_ids(store)
        }
        for job_id in store.job_ids():
            fp[f"job:{job_id}"] = hashlib.sha256(store.load_job_bytes(job_id)).hexdigest()
        for name in store.shared_file_names():
            with store.read_shared_file_stream(name) as f:
                fp[f"shared:{name}"] = hashlib.sha256(f.read()).hexdigest()
        for key in store.log_keys():
            fp[f"log:{key}"] = ""
        return fp

    # Each write path, writing more than the disk has left; returns how to check success.

    def write_file(self) -> Callable[[], None]:
        file_id = self.store.write_file(str(self.big_path))
        return lambda: self.expect_new_file(file_id)

    def write_file_stream(self) -> Callable[[], None]:
        with self.store.write_file_stream() as (f, file_id):
            for start in range(0, len(self.big), 256 << 10):
                f.write(self.big[start : start + (256 << 10)])
        return lambda: self.expect_new_file(str(file_id))

    def update_file(self) -> Callable[[], None]:
        self.store.update_file(self.file_id, str(self.big_path))
        return lambda: self.expect_file(self.file_id, self.big)

    def update_file_stream(self) -> Callable[[], None]:
        with self.store.update_file_stream(self.file_id) as f:
            f.write(self.big)
        return lambda: self.expect_file(self.file_id, self.big)

    def update_job(self) -> Callable[[], None]:
        self.job.reliability_payload = self.big  # type: ignore[attr-defined]
        self.store.update_job(self.job)
        job_id = str(self.job.jobStoreID)
        return lambda: self.expect_job(job_id)

    def create_job(self) -> Callable[[], None]:
        job = JobDescription(requirements=REQUIREMENTS, jobName="new")
        job.reliability_payload = self.big  # type: ignore[attr-defined]
        self.store.assign_job_id(job)
        self.store.create_job(job)
        job_id = str(job.jobStoreID)

        def check() -> None:
            self.expect_job(job_id)
            self.store.delete_job(job_id)  # make room for the next path

        return check

    def write_shared_file_stream(self) -> Callable[[], None]:
        with self.store.write_shared_file_stream("rel-shared") as f:
            f.write(self.big)

        def check() -> None:
            with self.store.read_shared_file_stream("rel-shared") as f:
                assert f.read() == self.big

        return check

    def write_logs(self) -> Callable[[], None]:
        self.store.write_logs(self.big)

        def check() -> None:
            got: list[bytes] = []
            self.store.read_logs(lambda s: got.append(s.read()), read_all=True)
            assert self.big in got

        return check

    def expect_file(self, file_id: str, data: bytes) -> None:
        assert read_whole(self.store, file_id) == data

    def expect_new_file(self, file_id: str) -> None:
        self.expect_file(file_id, self.big)
        self.store.delete_file(file_id)  # make room for the next path

    def expect_job(self, job_id: str) -> None:
        job = self.store.load_job(job_id)
        assert parse_payload(job.reliability_payload) == ("big", 1)  # type: ignore[attr-defined]


def temporaries(store: JobStore) -> list[str]:
    tmp = Path(store.backend.root) / ".tmp"  # type: ignore[attr-defined]
    return sorted(os.listdir(tmp)) if tmp.is_dir() else []


@pytest.mark.parametrize("exhausted", ["blocks", "inodes"])
def test_full_disk(tmpfs: Path, tmp_path: Path, toil_config: Any, exhausted: str) -> None:
    store = JobStore(f"local:{tmpfs / 'store'}")
    store.initialize(toil_config)
    subject = Subject(store, tmp_path)
    filler = tmpfs / "filler"
    failures = 0
    for path in WRITE_PATHS:
        if exhausted == "blocks":
            fill(filler, leave=256 << 10)
        else:
            fill_inodes(filler)
        before = subject.fingerprint()
        with pytest.raises(OSError) as raised:
            getattr(subject, path)()
        assert raised.value.errno == errno.ENOSPC, f"{path}: {raised.value!r}"
        failures += 1
        assert subject.fingerprint() == before, f"{path} changed the store while failing"
        assert temporaries(store) == [], f"{path} left its temporary file"
        assert_no_debris_visible(store)

        # Space again: the same call succeeds, and the store reads back whole.
        if filler.is_dir():
            shutil.rmtree(filler)
        else:
            filler.unlink()
        check = getattr(subject, path)()
        check()
        assert temporaries(store) == []
    record("disk", exhausted, exhausted=exhausted, enospc_failures=failures, bytes_lost=0)
    store.destroy()
