"""A fan-out for a Slurm cluster: ``python cluster.py LOCATOR --leader-dir DIR [options]``.

The root job starts ``--width`` children side by side. Each sleeps ``--sleep``
seconds (so that they overlap and spread over the nodes), writes a global file
of its own (from a path or from a stream, in turn) and returns, through a
promise, the file's ID and checksum and where it ran: the host name, Slurm's
node and job ID, and whether it could see ``DIR`` (the leader's directory,
which workers on a cluster do not share). Child 0 fails its first attempt, so
a run needs ``--retryCount`` of 1 or more. A follow-on reads every file back
and checks it. Nothing but the store links the jobs: the workflow runs the
same with workers that share no directory with the leader.

The leader prints ``RESULT <json>`` at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from typing import Any

from toil.common import Toil
from toil.job import Job


def content(i: int) -> bytes:
    """Child ``i``'s file: some tens of kilobytes, different for each ``i``."""
    return hashlib.shake_256(b"cluster-%d" % i).digest(40_000 + 9_000 * i)


def where(leader_dir: str) -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "node": os.environ.get("SLURMD_NODENAME"),
        "slurm_job": os.environ.get("SLURM_JOB_ID"),
        "sees_leader_dir": os.path.exists(leader_dir),
    }


def first_attempt(job: Job) -> bool:
    """True on a job's first try: the leader lowers the remaining try count after a failure."""
    return job.description.remainingTryCount == job.fileStore.jobStore.config.retryCount + 1


def produce(job: Job, i: int, sleep: float, leader_dir: str) -> dict[str, Any]:
    if i == 0 and first_attempt(job):
        raise RuntimeError("child 0 fails its first attempt on purpose")
    time.sleep(sleep)
    data = content(i)
    if i % 2:
        with job.fileStore.writeGlobalFileStream(basename=f"part-{i}") as (f, file_id):
            f.write(data)
    else:
        path = os.path.join(job.fileStore.getLocalTempDir(), f"part-{i}")
        with open(path, "wb") as f:
            f.write(data)
        file_id = job.fileStore.writeGlobalFile(path)
    return {"file": file_id, "sha256": hashlib.sha256(data).hexdigest(), **where(leader_dir)}


def gather(job: Job, parts: list[dict[str, Any]], leader_dir: str) -> dict[str, Any]:
    total = 0
    for part in parts:
        with job.fileStore.readGlobalFileStream(part["file"]) as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != part["sha256"]:
            raise RuntimeError(f"file {part['file']} came back different from what was written")
        total += len(data)
    return {"parts": parts, "bytes": total, "gather": where(leader_dir)}


def root(job: Job, width: int, sleep: float, leader_dir: str) -> Any:
    parts = [job.addChildJobFn(produce, i, sleep, leader_dir).rv() for i in range(width)]
    return job.addFollowOnJobFn(gather, parts, leader_dir).rv()


def main() -> None:
    parser = Job.Runner.getDefaultArgumentParser()
    parser.add_argument("--leader-dir", required=True)
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--sleep", type=float, default=2.0)
    options = parser.parse_args()
    with Toil(options) as toil:
        if options.restart:
            result = toil.restart()
        else:
            result = toil.start(
                Job.wrapJobFn(root, options.width, options.sleep, options.leader_dir)
            )
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
