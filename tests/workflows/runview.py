"""A Toil workflow with every state of the run view in it: ``python runview.py LOCATOR --gate DIR``.

The root job has three children and one of them a follow-on:

* ``sleeper`` runs until ``DIR/open`` exists (``running`` for as long as a test wants);
* ``after``, its follow-on, waits for it (``waiting``);
* ``flaky`` fails its first attempt and succeeds the next (``retrying`` in between,
  for as long as ``--retryBackoffSeconds`` says);
* ``doomed`` fails every attempt (``failed`` once its tries are spent), so the
  workflow fails and, with Toil's default ``--clean onError`` off, keeps its store.
"""

from __future__ import annotations

import os
import time

from toil.common import Toil
from toil.job import Job

GATE_TIMEOUT = 120.0


def sleeper(job: Job, gate: str) -> str:
    deadline = time.monotonic() + GATE_TIMEOUT
    while not os.path.exists(os.path.join(gate, "open")):
        if time.monotonic() > deadline:
            raise RuntimeError("the gate never opened")
        time.sleep(0.05)
    return "slept"


def after(job: Job, slept: str) -> str:
    return slept + " and after"


def flaky(job: Job, gate: str) -> str:
    marker = os.path.join(gate, "flaky-failed-once")
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("flaky fails its first attempt")
    return "flaky made it"


def doomed(job: Job) -> None:
    raise RuntimeError("doomed always fails")


def root(job: Job, gate: str) -> None:
    slept = job.addChildJobFn(sleeper, gate)
    slept.addFollowOnJobFn(after, slept.rv())
    job.addChildJobFn(flaky, gate)
    job.addChildJobFn(doomed)


def main() -> None:
    parser = Job.Runner.getDefaultArgumentParser()
    parser.add_argument("--gate", required=True)
    options = parser.parse_args()
    with Toil(options) as toil:
        if options.restart:
            toil.restart()
        else:
            toil.start(Job.wrapJobFn(root, options.gate))


if __name__ == "__main__":
    main()
