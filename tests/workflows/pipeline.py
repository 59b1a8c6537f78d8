"""A small Toil workflow that touches every part of a job store a real run uses.

Run as ``python pipeline.py LOCATOR --workdir DIR [toil options]``. ``DIR`` holds
the state that must outlive the store: ``input.sh`` (imported), the ``attempts``
marker of the job that fails once, the ``gate`` file without which one job keeps
failing (so a run fails and can be finished with ``--restart``), and the results
the leader exports and writes (``result.json``, ``export/``).

Jobs: the root has three children (one writes a global file, one fails on its
first attempt, one fails while the gate is closed) and a follow-on that gets their
promises, reads the global file and the imported one, writes an executable
output and returns everything the test checks, including the locator its worker
process was started with.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from toil.common import Toil
from toil.fileStores import FileID
from toil.job import Job, Promise


def produce(job: Job, text: str) -> tuple[FileID, int]:
    path = job.fileStore.getLocalTempFile()
    Path(path).write_text(text)
    return job.fileStore.writeGlobalFile(path), len(text)


def flaky(job: Job, marker: str) -> int:
    """Fails on its first attempt only; the marker lives outside the store."""
    attempts = int(Path(marker).read_text()) + 1 if os.path.exists(marker) else 1
    Path(marker).write_text(str(attempts))
    if attempts == 1:
        raise RuntimeError("flaky job fails its first attempt on purpose")
    return attempts


def gated(job: Job, gate: str) -> str:
    if not os.path.exists(gate):
        raise RuntimeError("gate is closed: this job fails on purpose")
    return Path(gate).read_text()


def combine(
    job: Job, produced: FileID, length: int, attempts: int, gate: str, input_id: FileID
) -> dict[str, Any]:
    text = Path(job.fileStore.readGlobalFile(produced)).read_text()
    script = Path(job.fileStore.readGlobalFile(input_id)).read_text()
    out = job.fileStore.getLocalTempFile()
    Path(out).write_text(f"#!/bin/sh\n# {text} / {gate}\n{script}")
    os.chmod(out, 0o755)
    job.log(f"combine job saw {text!r}")
    return {
        "text": text,
        "length": length,
        "attempts": attempts,
        "gate": gate,
        "input_id": input_id,
        "output_id": job.fileStore.writeGlobalFile(out),
        # _toil_worker JOB_NAME LOCATOR JOB_ID: the locator exactly as the leader passed it.
        "worker_argv_locator": sys.argv[2],
    }


def root(job: Job, input_id: FileID, workdir: str) -> Promise:
    produced = job.addChildJobFn(produce, "written by a child job")
    attempts = job.addChildJobFn(flaky, os.path.join(workdir, "attempts"))
    gate = job.addChildJobFn(gated, os.path.join(workdir, "gate"))
    follow = job.addFollowOnJobFn(
        combine, produced.rv(0), produced.rv(1), attempts.rv(), gate.rv(), input_id
    )
    return follow.rv()


def main() -> None:
    parser = Job.Runner.getDefaultArgumentParser()
    parser.add_argument("--workdir", required=True)
    options = parser.parse_args()
    workdir = Path(options.workdir).absolute()
    with Toil(options) as toil:
        if options.restart:
            result = toil.restart()
        else:
            input_id = toil.importFile((workdir / "input.sh").as_uri())
            result = toil.start(Job.wrapJobFn(root, input_id, str(workdir)))
        export = workdir / "export"
        export.mkdir(exist_ok=True)
        toil.exportFile(result["input_id"], (export / "input.sh").as_uri())
        toil.exportFile(result["output_id"], (export / "output.sh").as_uri())
    (workdir / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
