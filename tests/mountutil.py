"""A populated store and real mounts of it, for the FUSE view's tests.

``populate`` writes one of everything the view shows through the public
``JobStore`` API; ``Mount`` runs ``jobstore mount --foreground`` as a user
would and always unmounts in ``close``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from toil.common import Config
from toil.job import JobDescription

from jobstore import JobStore
from jobstore.mount import mount_device

JOBSTORE = os.path.join(os.path.dirname(sys.executable), "jobstore")
MOUNT_TIMEOUT = 30.0


@dataclass
class Populated:
    store: JobStore
    job_ids: list[str]
    #: The job that has successors and a failure log.
    parent_id: str
    log_file_id: str
    #: file ID -> (content, executable)
    files: dict[str, tuple[bytes, bool]] = field(default_factory=dict)
    logs: list[bytes] = field(default_factory=list)


def new_job(store: JobStore, name: str, **requirements: object) -> JobDescription:
    reqs = {"memory": 2**20, "cores": 1, "disk": 2**20, "preemptible": False, **requirements}
    job = JobDescription(
        requirements=reqs, jobName=name, unitName=f"{name}-unit", displayName=f"{name} display"
    )
    store.assign_job_id(job)
    return job


def populate(locator: str, workdir: Path) -> Populated:
    """A store with jobs (one with successors and a failure log), files of every
    ID shape, executable and not, shared files and log messages."""
    store = JobStore(locator)
    store.initialize(Config())
    children = [new_job(store, f"child{i}") for i in range(2)]
    parent = new_job(store, "parent", cores=2, accelerators=[{"count": 1, "kind": "gpu"}])
    for child in children:
        store.create_job(child)
        parent.addChild(child.jobStoreID)
    store.create_job(parent)

    files: dict[str, tuple[bytes, bool]] = {}

    def write(name: str, content: bytes, executable: bool, **kwargs: object) -> str:
        path = workdir / name
        path.write_bytes(content)
        path.chmod(0o755 if executable else 0o644)
        file_id = store.write_file(str(path), **kwargs)  # type: ignore[arg-type]
        files[file_id] = (content, executable)
        return file_id

    write("data.txt", b"plain data\n", False)
    write("run.sh", b"#!/bin/sh\necho hi\n", True, job_id=children[0].jobStoreID, cleanup=True)
    write("hinted.bin", bytes(range(256)) * 40, False, hints=["align", "sample 1"])
    write("résumé data.txt", "ünïcode\n".encode(), False)
    write("empty", b"", False)
    log_id = write(
        "failure.log", b"Traceback: it failed\n", False, job_id=parent.jobStoreID, cleanup=True
    )
    parent.logJobStoreFileID = log_id
    store.update_job(parent)

    with store.write_shared_file_stream("pid.log") as f:
        f.write(b"4242")
    logs = [f"message {i}".encode() for i in range(3)]
    for message in logs:
        store.write_logs(message)
    return Populated(
        store,
        [*(c.jobStoreID for c in children), parent.jobStoreID],
        str(parent.jobStoreID),
        log_id,
        files,
        logs,
    )


class Mount:
    """``jobstore mount LOCATOR MOUNTPOINT --foreground`` in a subprocess."""

    def __init__(
        self,
        locator: str,
        mountpoint: Path,
        *args: str,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.mountpoint = mountpoint
        self.log = mountpoint.parent / f"{mountpoint.name}.log"
        mountpoint.mkdir(exist_ok=True)
        self.proc = subprocess.Popen(
            [
                JOBSTORE,
                "mount",
                locator,
                str(mountpoint),
                "--foreground",
                "--log-file",
                str(self.log),
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=preexec_fn,
        )
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while mount_device(str(mountpoint)) is None:
            if self.proc.poll() is not None:
                said = self.proc.stderr.read() if self.proc.stderr else ""
                raise RuntimeError(f"mount failed: {said}{self.log_text()}")
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"not mounted after {MOUNT_TIMEOUT} s: {self.log_text()}")
            time.sleep(0.05)

    def __truediv__(self, path: str) -> Path:
        return self.mountpoint / path

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def close(self) -> None:
        if mount_device(str(self.mountpoint)) is not None:
            subprocess.run(
                ["fusermount3", "-u", "-z", str(self.mountpoint)], check=False, capture_output=True
            )
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> float:
    """Seconds until ``check()`` held; fails the test after ``timeout``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not true after {timeout} s: {check}")
        time.sleep(0.02)
    return time.monotonic() - start
