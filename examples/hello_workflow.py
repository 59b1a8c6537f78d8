"""A small real Toil workflow for the demo: fan out, pass files, follow on, log.

Run it on any jobstore locator:  python examples/hello_workflow.py local:/tmp/run1
Add ``--sleep N`` to make each worker job linger, so a live run can be browsed.
"""

from __future__ import annotations

import os
import time

from toil.common import Toil
from toil.fileStores.abstractFileStore import AbstractFileStore
from toil.job import Job


def count_words(job: Job, text: str, sleep: float) -> str:
    """A leaf job: writes its result as a global file so the next job reads it."""
    time.sleep(sleep)
    store: AbstractFileStore = job.fileStore
    store.log_to_leader(f"counting words of {text!r}")
    # A real name: the file ID carries it, so the store and the mount show words-the-quick-....txt.
    path = os.path.join(store.getLocalTempDir(), f"words-{'-'.join(text.split()[:3])}.txt")
    with open(path, "w") as f:
        f.write(f"{text}: {len(text.split())} words\n")
    return str(store.writeGlobalFile(path))


def gather(job: Job, file_ids: list[str]) -> str:
    """The follow-on: reads every child's file and returns the report."""
    lines = []
    for file_id in file_ids:
        with job.fileStore.readGlobalFileStream(file_id, encoding="utf-8") as f:
            lines.append(f.read())
    job.fileStore.log_to_leader(f"gathered {len(lines)} reports")
    return "".join(lines)


def root(job: Job, sentences: list[str], sleep: float) -> str:
    ids = [job.addChildJobFn(count_words, s, sleep).rv() for s in sentences]
    return job.addFollowOnJobFn(gather, ids).rv()


def main() -> None:
    parser = Job.Runner.getDefaultArgumentParser()
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds each leaf job lingers")
    options = parser.parse_args()
    sentences = [
        "the quick brown fox",
        "jumps over the lazy dog",
        "a job store you can ls",
    ]
    with Toil(options) as toil:
        if options.restart:
            report = toil.restart()
        else:
            report = toil.start(Job.wrapJobFn(root, sentences, options.sleep))
    print(report, end="")


if __name__ == "__main__":
    main()
