"""A workflow store of any size, for ``scripts/bench_scaling.py``, made and used as Toil does.

``python scaling.py LOCATOR --make N [--fanout B] [toil options]`` makes the
store of a workflow caught at its end: ``N`` jobs (the root among them) in a
tree where every job has up to ``B`` children, each of which ran, and a leader
that died before it retired any of them. Every job is in the store, none has
anything left to run (a job whose body ran is stored without one, as Toil's
worker leaves it). The store is made by ``Toil(options)`` (config, workflow
ID, as any run's), the jobs by the store's API, as Toil's leader saves a job
graph; running ``N`` real jobs first would take a worker process each. Prints
the seconds the jobs took to create, and keeps the store (``--clean=never``
is forced).

A tree, not one root with ``N`` children: Toil's leader retires a child by
filtering its parent's list of successors (``_updatePredecessorStatus``), so
its work per job grows with the fan-out, and a restart of one root with a
million children would take it hours whatever the store.

``python scaling.py LOCATOR --restart [toil options]`` is the restart a user
runs on such a store: Toil loads every job (``jobs()``), cleans the store
from its root, finds nothing to run and retires (deletes) every job; the
workflow's return value, ``N``, is checked.

``python scaling.py LOCATOR --list`` resumes the store and prints how many
jobs ``jobs()`` yields and the seconds that took.
"""

from __future__ import annotations

import json
import pickle
import sys
import time

from toil.common import Toil
from toil.job import Job, JobDescription

#: Toil's default requirements, as a job without its own gets them.
REQUIREMENTS = {"memory": 2**31, "cores": 1, "disk": 2**31, "preemptible": False}
#: Jobs stored per ``batch()``.
BATCH = 1000


def description(name: str, i: int) -> JobDescription:
    return JobDescription(
        requirements=dict(REQUIREMENTS, accelerators=[]),
        jobName=name,
        unitName=f"{name}{i}",
        displayName=f"{name} {i}",
    )


def make(toil: Toil, n: int, fanout: int) -> float:
    """``n`` finished jobs in a tree with ``fanout`` children a job; seconds spent on jobs.

    Job ``i`` of the tree (in breadth-first order, the root being 0) has children
    ``fanout * i + 1`` to ``fanout * i + fanout``. They are made last first, so
    that a job's children have IDs before it is stored, in batches of
    :data:`BATCH` (as Toil's leader saves a job graph: ``batch()``, which our
    store writes concurrently), keeping only IDs in memory.
    """
    store = toil._jobStore
    ids = [""] * n
    start = time.perf_counter()
    for end in range(n, 0, -BATCH):
        with store.batch():
            for i in range(end - 1, max(end - BATCH, 0) - 1, -1):
                job = description("root" if i == 0 else "job", i)
                store.assign_job_id(job)
                for child in range(fanout * i + 1, min(fanout * i + fanout, n - 1) + 1):
                    job.addChild(ids[child])
                store.create_job(job)
                ids[i] = str(job.jobStoreID)
    seconds = time.perf_counter() - start
    # What Toil.start stores before the first job: the root's (here fulfilled) return value.
    with store.write_shared_file_stream("rootJobReturnValue") as f:
        pickle.dump(n, f, protocol=pickle.HIGHEST_PROTOCOL)
    store.set_root_job(ids[0])
    return seconds


def count_jobs(locator: str) -> tuple[int, float]:
    store = Toil.resumeJobStore(locator)
    start = time.perf_counter()
    count = sum(1 for _ in store.jobs())
    return count, time.perf_counter() - start


def main() -> None:
    parser = Job.Runner.getDefaultArgumentParser()
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--make", type=int, metavar="N", help="make a store of N finished jobs")
    parser.add_argument("--fanout", type=int, default=100, help="children a job (100)")
    mode.add_argument("--list", action="store_true", help="count jobs() and time it")
    options = parser.parse_args()
    if not (options.list or options.make is not None or options.restart):
        parser.error("one of --make N, --list or --restart is needed")
    if options.list:
        count, seconds = count_jobs(options.jobStore)
        print(json.dumps({"jobs": count, "seconds": seconds}))
        return
    if options.make is not None:
        options.clean = "never"
        with Toil(options) as toil:
            seconds = make(toil, options.make, options.fanout)
        print(json.dumps({"jobs": options.make, "seconds": seconds}))
        return
    with Toil(options) as toil:
        result = toil.restart()
    if not isinstance(result, int):
        sys.exit(f"the restart returned {result!r}, not a job count")
    print(json.dumps({"returned": result}))


if __name__ == "__main__":
    main()
