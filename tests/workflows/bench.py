"""The workflows ``scripts/bench_workflow.py`` times, run as a user runs any Toil workflow.

``python bench.py LOCATOR --shape SHAPE --jobs N [--files F --file-mib M] [toil options]``

* ``fanout``: a root job with ``N`` tiny children (what a scatter costs per job);
* ``chain``: ``N`` jobs, each the only child of the one before (Toil chains them
  into as few workers as it can, so this is the store's cost per job, one after another);
* ``files``: a root job with ``N`` children that each write ``F`` files of ``M`` MiB
  with ``writeGlobalFile`` and read every one back with ``readGlobalFile``.

Every job keeps Toil's default requirements, and the script checks what it ran
(the leader's return value), so a store that loses work fails the benchmark
instead of making it faster.
"""

from __future__ import annotations

import os

from toil.common import Toil
from toil.job import Job, Promise

SHAPES = ("fanout", "chain", "files")


def tiny(job: Job, i: int) -> int:
    return i


def gather(job: Job, values: list[int]) -> int:
    if sorted(values) != list(range(len(values))):
        raise RuntimeError("the children returned other values")
    return len(values)


def fanout(job: Job, n: int) -> Promise:
    """Scatter ``n`` tiny jobs and gather what they return (in a follow-on)."""
    values = [job.addChildJobFn(tiny, i).rv() for i in range(n)]
    return job.addFollowOnJobFn(gather, values).rv()


def link(job: Job, i: int, n: int) -> int | Promise:
    """Job ``i`` of the chain: returns the chain's length, counted by the last job."""
    if i + 1 < n:
        return job.addChildJobFn(link, i + 1, n).rv()
    return n


def write_read(job: Job, files: int, size: int) -> int:
    """Writes ``files`` files of ``size`` bytes to the store, then reads each back; bytes read."""
    ids = []
    for _ in range(files):
        path = job.fileStore.getLocalTempFile()
        with open(path, "wb") as f:
            f.write(os.urandom(size))
        ids.append(job.fileStore.writeGlobalFile(path))
    total = 0
    for file_id in ids:
        total += os.path.getsize(job.fileStore.readGlobalFile(file_id))
    if total != files * size:
        raise RuntimeError(f"read back {total} bytes of {files * size}")
    return total


def add_up(job: Job, sizes: list[int]) -> int:
    return len(sizes)


def scatter_files(job: Job, n: int, files: int, size: int) -> Promise:
    sizes = [job.addChildJobFn(write_read, files, size).rv() for _ in range(n)]
    return job.addFollowOnJobFn(add_up, sizes).rv()


def main() -> None:
    parser = Job.Runner.getDefaultArgumentParser()
    parser.add_argument("--shape", choices=SHAPES, required=True)
    parser.add_argument("--jobs", type=int, required=True, help="jobs besides the root")
    parser.add_argument("--files", type=int, default=10, help="files per job of 'files'")
    parser.add_argument("--file-mib", type=float, default=1.0, help="MiB per file of 'files'")
    options = parser.parse_args()
    size = int(options.file_mib * 2**20)
    if options.shape == "fanout":
        root = Job.wrapJobFn(fanout, options.jobs)
    elif options.shape == "chain":
        root = Job.wrapJobFn(link, 0, options.jobs)
    else:
        root = Job.wrapJobFn(scatter_files, options.jobs, options.files, size)
    with Toil(options) as toil:
        result = toil.start(root)
    if result != options.jobs:
        raise SystemExit(f"the workflow returned {result!r}, not {options.jobs}")


if __name__ == "__main__":
    main()
