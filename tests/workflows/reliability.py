"""A real Toil workflow for the reliability tests: ``python reliability.py LOCATOR --gate DIR``.

It touches the store the way workflows do: global files written from paths
and from streams, child jobs and follow-ons (job creation, updates and
deletion by the leader), job logs sent to the leader, promises. Every file
carries a checksum that the consumer checks, so a restart on a damaged store
cannot quietly succeed.

``--gate DIR``: the last job waits until ``DIR/open`` exists. A test starts the
workflow with the gate closed, kills the leader and its workers at a random
moment, opens the gate and ``--restart``\\ s: the first run can never finish
before the kill, whatever the timing.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

from toil.common import Toil
from toil.fileStores import FileID
from toil.job import Job

WIDTH = 6
GATE_TIMEOUT = 150.0


def content(i: int) -> bytes:
    """Input ``i``: some hundreds of kilobytes, different for each ``i``."""
    return hashlib.shake_256(b"input-%d" % i).digest(200_000 + 37_000 * i)


def expected() -> list[str]:
    return [hashlib.sha256(content(i)).hexdigest() for i in range(WIDTH)]


def _checked(data: bytes, digest: str) -> bytes:
    if hashlib.sha256(data).hexdigest() != digest:
        raise RuntimeError("a file came back different from what was written")
    return data


def produce(job: Job, i: int) -> tuple[FileID, str]:
    data = content(i)
    digest = hashlib.sha256(data).hexdigest()
    if i % 2:
        with job.fileStore.writeGlobalFileStream(basename=f"input-{i}") as (f, file_id):
            f.write(data)
    else:
        path = os.path.join(job.fileStore.getLocalTempDir(), f"input-{i}")
        with open(path, "wb") as f:
            f.write(data)
        file_id = job.fileStore.writeGlobalFile(path)
    job.log(f"produced input {i}")
    return file_id, digest


def consume(job: Job, produced: tuple[FileID, str]) -> FileID:
    file_id, digest = produced
    with job.fileStore.readGlobalFileStream(file_id) as f:
        data = _checked(f.read(), digest)
    out = job.fileStore.writeGlobalFile(_local(job, data))
    job.fileStore.deleteGlobalFile(file_id)
    return out


def _local(job: Job, data: bytes) -> str:
    path = os.path.join(job.fileStore.getLocalTempDir(), "output")
    with open(path, "wb") as f:
        f.write(data)
    return path


def gather(job: Job, gate: str, outputs: list[FileID]) -> list[str]:
    deadline = time.monotonic() + GATE_TIMEOUT
    while not os.path.exists(os.path.join(gate, "open")):
        if time.monotonic() > deadline:
            raise RuntimeError(f"gate {gate} stayed closed")
        time.sleep(0.1)
    digests = []
    for out in outputs:
        with job.fileStore.readGlobalFileStream(out) as f:
            digests.append(hashlib.sha256(f.read()).hexdigest())
    return digests


def root(job: Job, gate: str) -> object:
    outputs = []
    for i in range(WIDTH):
        produced = job.addChildJobFn(produce, i)
        outputs.append(produced.addFollowOnJobFn(consume, produced.rv()).rv())
    return job.addFollowOnJobFn(gather, gate, outputs).rv()


def main() -> None:
    parser = Job.Runner.getDefaultArgumentParser()
    parser.add_argument("--gate", required=True)
    options = parser.parse_args()
    os.makedirs(options.gate, exist_ok=True)
    with Toil(options) as toil:
        if options.restart:
            result = toil.restart()
        else:
            result = toil.start(Job.wrapJobFn(root, options.gate))
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
