"""A workflow leaving every kind of record in its store: ``python toilstore.py LOCATOR --out F``.

Run on Toil's own stores (``file:``, ``aws:``) to read them back through the
view's sources. It imports a file and a shared file, then the root job writes
files every way Toil offers (plain, executable, ``cleanup``, hinted, hinted
twice with one name, hinted and deleted, streamed) and logs to the leader; its
child ``doomed`` fails (so the run fails and the store is kept, with the job's
failure log in it) and ``blocked``, doomed's follow-on, waits for it forever.
``--chain N`` instead runs a chain of N jobs, each adding the next after a
pause (a store whose jobs come and go while it is read).

The file IDs written go to ``--out`` as JSON (``{label: file ID}``).
"""

from __future__ import annotations

import json
import os
import time

from toil.common import Toil
from toil.job import Job


def doomed(job: Job) -> None:
    raise RuntimeError("doomed always fails")


def blocked(job: Job) -> None:
    pass


def root(job: Job, out: str, imported: str) -> None:
    fs = job.fileStore
    ids: dict[str, str] = {"imported": imported}
    tmp = fs.getLocalTempDir()

    def local(name: str, text: str, executable: bool = False) -> str:
        path = os.path.join(tmp, name)
        with open(path, "w") as f:
            f.write(text)
        if executable:
            os.chmod(path, 0o755)
        return path

    ids["plain"] = fs.writeGlobalFile(local("plain.txt", "plain\n"))
    ids["script"] = fs.writeGlobalFile(local("run.sh", "echo hi\n", executable=True))
    ids["cleanup"] = fs.writeGlobalFile(local("scratch.dat", "scratch\n"), cleanup=True)
    ids["hinted"] = fs.writeGlobalFile(local("a.bam", "bam 1\n"), hints=["sample1", "align"])
    ids["hinted_again"] = fs.writeGlobalFile(local("a.bam", "bam 2\n"), hints=["sample1", "align"])
    gone = fs.writeGlobalFile(local("gone.txt", "gone\n"), hints=["sample1"])
    fs.deleteGlobalFile(gone)
    with fs.writeGlobalFileStream(basename="streamed.txt") as (stream, stream_id):
        stream.write(b"streamed " * 1000)
    ids["streamed"] = stream_id
    with open(out, "w") as f:
        json.dump({k: str(v) for k, v in ids.items()}, f)
    job.log("root wrote its files")
    job.log("root's second message")
    job.addChildJobFn(doomed).addFollowOnJobFn(blocked)


def link(job: Job, i: int, n: int, pause: float) -> None:
    time.sleep(pause)
    if i + 1 < n:
        job.addChildJobFn(link, i + 1, n, pause)


def main() -> None:
    parser = Job.Runner.getDefaultArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--chain", type=int, default=0)
    options = parser.parse_args()
    with Toil(options) as toil:
        if options.chain:
            toil.start(Job.wrapJobFn(link, 0, options.chain, 0.3))
            return
        data = os.path.join(os.path.dirname(options.out), "input.txt")
        with open(data, "w") as f:
            f.write("imported\n")
        imported = toil.import_file("file://" + data)
        toil.import_file("file://" + data, shared_file_name="my_shared.txt")
        toil.start(Job.wrapJobFn(root, options.out, str(imported)))


if __name__ == "__main__":
    main()
