"""Shared machinery of the reliability campaign (``tests/test_reliability_*.py``).

* Self-checking payloads: every object a campaign writes carries its tag, its
  version and a checksum, so any object read back proves by itself that it is a
  complete version and not a mix or a prefix of two.
* Budgets: every loop is bounded in count and in time. The CI profile is the
  default; ``JOBSTORE_RELIABILITY=long`` (set by ``scripts/reliability``) runs the
  long variants of the very same tests.
* Figures: with ``JOBSTORE_RELIABILITY_FIGURES=<file>`` each test appends what it
  did (kills, operations, faults, inputs, bytes lost) as JSON lines, from which
  ``scripts/reliability`` prints the table of ``docs/RELIABILITY.md``.
* Invariants every test checks after violence: the store's whole key space is
  made of valid objects and nothing temporary shows through the API.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import psutil

from jobstore import JobStore, layout

T = TypeVar("T")

LONG = os.environ.get("JOBSTORE_RELIABILITY", "ci") == "long"
VENV_BIN = os.path.dirname(sys.executable)


#: What the top level of a store may hold; anything else is debris showing through.
def bound(ci: T, long: T) -> T:
    """The CI or the long value of a budget, by the profile in use."""
    return long if LONG else ci


def record(section: str, name: str, **figures: object) -> None:
    """Append one line of figures for ``scripts/reliability`` (no-op unless asked for)."""
    out = os.environ.get("JOBSTORE_RELIABILITY_FIGURES")
    if not out:
        return
    line = json.dumps({"section": section, "name": name, "profile": bound("ci", "long"), **figures})
    with open(out, "a", encoding="utf-8") as f:
        f.write(line + "\n")


@dataclass
class Deadline:
    """A count and a time budget, whichever runs out first, but at least ``minimum`` rounds.

    The minimum keeps a loaded machine from turning a test into one that proves
    nothing; pytest-timeout still bounds the whole.
    """

    count: int
    seconds: float
    minimum: int = 3
    done: int = 0
    started: float = field(default_factory=time.monotonic)

    def more(self) -> bool:
        if self.done >= self.count:
            return False
        return self.done < self.minimum or time.monotonic() - self.started < self.seconds

    def elapsed(self) -> float:
        return time.monotonic() - self.started


# ------------------------------------------------------------------ payloads

MAGIC = b"JSREL1"
_HEADER = struct.Struct("!6s24sQQ32s")  # magic, tag, version, body length, sha256
HEADER_SIZE = _HEADER.size


class CorruptPayload(AssertionError):
    """An object that is not one complete version of what was written: data was lost."""


@lru_cache(maxsize=8)
def _body(parity: int, size: int) -> bytes:
    # Two different bodies, so that a torn write mixing neighbouring versions cannot pass.
    return hashlib.shake_256(b"jobstore-reliability-%d" % parity).digest(size)


def _digest(tag: bytes, version: int, body: bytes) -> bytes:
    h = hashlib.sha256(tag)
    h.update(version.to_bytes(8, "big"))
    h.update(body)
    return h.digest()


def make_payload(tag: str, version: int, size: int) -> bytes:
    """``size`` bytes of body plus a header naming ``tag``, ``version`` and their checksum."""
    tag_b = tag.encode()[:24].ljust(24, b"\0")
    body = _body(version % 2, size)
    return _HEADER.pack(MAGIC, tag_b, version, size, _digest(tag_b, version, body)) + body


def parse_payload(data: bytes) -> tuple[str, int]:
    """The (tag, version) of a complete payload; raises :class:`CorruptPayload` otherwise."""
    if len(data) < HEADER_SIZE:
        raise CorruptPayload(f"{len(data)} bytes: shorter than a payload header")
    magic, tag_b, version, size, digest = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptPayload(f"bad magic {magic!r}")
    body = data[HEADER_SIZE:]
    if len(body) != size:
        raise CorruptPayload(f"{tag_b!r} v{version}: {len(body)} bytes of body, header says {size}")
    if _digest(tag_b, version, body) != digest:
        raise CorruptPayload(f"{tag_b!r} v{version}: checksum mismatch")
    return tag_b.rstrip(b"\0").decode(), version


# ------------------------------------------------------------------- journal


@dataclass
class JournalView:
    """What a killed child had begun and finished, as its journal tells."""

    ended: dict[int, object]
    inflight: tuple[int, object] | None
    error: str | None


class Journal:
    """An append-only log a child writes before and after each store call.

    Each line goes out in one ``write`` on an ``O_APPEND`` descriptor, so a
    SIGKILL loses at most the line being written; page-cache writes survive the
    death of the process, no fsync needed.
    """

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _line(self, kind: str, seq: int, value: object) -> None:
        os.write(self._fd, f"{kind} {seq} {json.dumps(value)}\n".encode())

    def begin(self, seq: int, info: object = None) -> None:
        self._line("B", seq, info)

    def end(self, seq: int, result: object = None) -> None:
        self._line("E", seq, result)

    def error(self, text: str) -> None:
        self._line("X", 0, text)

    @staticmethod
    def read(path: str) -> JournalView:
        ended: dict[int, object] = {}
        begun: dict[int, object] = {}
        error = None
        with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as f:
            for line in f:
                if not line.endswith("\n"):
                    break  # the line the kill cut short
                kind, seq_s, value = line.rstrip("\n").split(" ", 2)
                if kind == "B":
                    begun[int(seq_s)] = json.loads(value)
                elif kind == "E":
                    ended[int(seq_s)] = json.loads(value)
                else:
                    error = json.loads(value)
        open_ops = [(s, v) for s, v in begun.items() if s not in ended]
        assert len(open_ops) <= 1, f"more than one store call in flight: {open_ops}"
        return JournalView(ended, open_ops[0] if open_ops else None, error)


# -------------------------------------------------------- killing processes

#: What the fork server imports once, so that each forked child starts in milliseconds.
PRELOAD = [
    "toil.common",
    "boto3.session",
    "boto3.s3.transfer",
    "botocore.config",
    "jobstore.store",
    "jobstore.local",
    "jobstore.s3",
    "jobstore.leader",
    "tests.reliability_lib",
    "tests.test_reliability_kill",
    "tests.test_reliability_concurrency",
    "tests.test_reliability_leader",
]


def forkserver() -> multiprocessing.context.ForkServerContext:
    """The context that forks the children the tests kill.

    A child forked from a server that imported Toil, boto3 and jobstore once is a
    real process running real code, and costs milliseconds instead of the second
    a fresh interpreter needs: that is what makes hundreds of kills affordable.
    """
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def store_env() -> dict[str, str]:
    """What a forked child needs to reach the store (the fork server's environment is older)."""
    keys = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    return {k: os.environ[k] for k in keys if k in os.environ}


def write_local(path: str, data: bytes, executable: bool) -> str:
    """A local file to store, private, with the owner's execute bit when asked."""
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o700 if executable else 0o600)
    return path


def kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant, as a crashing machine would.

    The root is stopped first so that it cannot start new children between
    the listing and the kill (Toil's workers run in sessions of their own).
    """
    try:
        root = psutil.Process(pid)
        root.suspend()
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(procs, timeout=10)


def toil_env() -> dict[str, str]:
    """Our environment with the venv's scripts (``_toil_worker``) on PATH."""
    return {**os.environ, "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", "")}


def run_workflow(
    locator: str, workdir: Path, *extra: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run ``tests/workflows/reliability.py`` to the end; the caller checks the outcome."""
    return subprocess.run(
        workflow_command(locator, workdir, *extra),
        cwd=workdir,
        env=toil_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def workflow_command(locator: str, workdir: Path, *extra: str) -> list[str]:
    script = str(Path(__file__).parent / "workflows" / "reliability.py")
    return [
        sys.executable,
        script,
        locator,
        f"--gate={workdir / 'gate'}",
        f"--workDir={workdir}",
        "--batchSystem=single_machine",
        "--maxCores=2",
        "--logLevel=WARNING",
        *extra,
    ]


def workflow_result(proc: subprocess.CompletedProcess[str]) -> object:
    """The root job's return value, printed by the workflow on a ``RESULT`` line."""
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise AssertionError(f"workflow printed no result (exit {proc.returncode}):\n{proc.stderr}")


# ---------------------------------------------------------------- invariants


def open_store(locator: str, like: JobStore | None = None) -> JobStore:
    """A fresh handle on an existing store, resumed as a restarted process resumes it.

    ``like`` lends its backend, so that a loop of resumes does not pay for a new
    S3 client (a tenth of a second) each time; ``resume`` itself runs in full.
    """
    store = JobStore(locator, backend=like.backend if like is not None else None)
    store.resume()
    return store


def toil_clean(store: JobStore) -> None:
    """``AbstractJobStore.clean`` as ``Toil.restart`` calls it: with every job loaded first."""
    store.clean(jobCache={job.jobStoreID: job for job in store.jobs()})


def file_ids(store: JobStore) -> Iterator[str]:
    return (k[len(layout.FILES) :] for k in store.backend.list(layout.FILES))


def read_whole(store: JobStore, file_id: str) -> bytes:
    with store.read_file_stream(file_id) as f:
        data: bytes = f.read()
    return data


def assert_no_debris_visible(store: JobStore) -> int:
    """Everything the API lists is an object of the layout; returns how many were listed.

    Writers' temporaries (``.tmp`` on ``local:``, unfinished multipart uploads on
    ``s3:``) must never show up as files, jobs, shared files or logs.
    """
    top = {e.name for e in store.backend.listdir("")}
    assert top <= layout.TOP_LEVEL, f"debris at the top of the store: {top - layout.TOP_LEVEL}"
    count = 0
    for file_id in file_ids(store):
        layout.check_path(file_id, "file ID")
        assert ".tmp" not in file_id.split("/"), file_id
        count += 1
    for job_id in store.job_ids():
        assert layout.is_job_id(job_id), f"listed job {job_id!r} is no job ID"
        count += 1
    for name in store.shared_file_names():
        layout.check_shared_name(name)
        count += 1
    for key in store.log_keys():
        assert key.startswith(layout.LOGS) and "/" not in key[len(layout.LOGS) :], key
        count += 1
    return count


def orphaned_job_files(store: JobStore) -> list[str]:
    """Files stored for cleanup with a job that does not exist."""
    live = set(store.job_ids())
    prefix = f"{layout.FILES}{layout.JOB_FILES}/"
    return [
        key[len(layout.FILES) :]
        for key in store.backend.list(prefix)
        if key[len(prefix) :].split("/")[1] not in live
    ]


def sweep_debris(store: JobStore) -> int:
    """Count, then remove, what killed writers left out of sight (no writer may be alive).

    On ``local:`` that is ``.tmp``; on ``s3:``, unfinished multipart uploads,
    which S3 keeps (and bills) until someone aborts them.
    """
    debris = list(store.backend.debris(older_than=-1))
    for item in debris:
        store.backend.clear_debris(item, keep_under=None)
    return len(debris)


# ------------------------------------------------------------------- figures


def table(lines: list[dict[str, Any]]) -> str:
    """The figures of one run as the Markdown table of docs/RELIABILITY.md."""
    by: dict[tuple[str, str], dict[str, Any]] = {(d["section"], d["name"]): d for d in lines}

    def get(section: str, name: str, fmt: str) -> str:
        d = by.get((section, name))
        return fmt.format(**d) if d else "n/a"

    rows = []
    paths = sorted({d["path"] for d in lines if d["section"] == "kill"}, key=_PATH_ORDER.index)
    for path in paths:
        rows.append(
            (
                f"SIGKILLed writers: `{path}` (kills, of which inside the call)",
                get("kill", f"local:{path}", "{kills} ({in_call})"),
                get("kill", f"s3:{path}", "{kills} ({in_call})"),
            )
        )
    restarts = {
        b: sum(d["restarts"] for d in lines if d["section"] == "restart" and d["backend"] == b)
        for b in ("local", "s3")
    }
    rows.append(("Killed Toil leaders restarted to the right result", *map(str, restarts.values())))
    rows.append(
        (
            "Concurrency: processes x operations (log messages read once)",
            get("concurrency", "local", "{processes} x {ops_per_process} ({log_messages})"),
            get("concurrency", "s3", "{processes} x {ops_per_process} ({log_messages})"),
        )
    )
    rows.append(
        (
            "Racing initializers: rounds x processes (rounds with exactly one winner)",
            get("leader", "initialize:local", "{rounds} x {racers} ({winners})"),
            get("leader", "initialize:s3", "{rounds} x {racers} ({winners})"),
        )
    )
    rows.append(
        (
            "Racing takeovers of a dead leader: rounds x processes (rounds with one winner)",
            get("leader", "takeover:local", "{rounds} x {racers} ({winners})"),
            get("leader", "takeover:s3", "{rounds} x {racers} ({winners})"),
        )
    )
    rows.append(
        (
            "Second Toil leader beside a live one: refused after (s)",
            get("leader", "refused:local", "{seconds}"),
            get("leader", "refused:s3", "{seconds}"),
        )
    )
    rows.append(
        (
            "S3 faults: injected / requests, over operations (operations failed clearly)",
            "n/a",
            get("faults", "operations", "{faults} / {requests} ({failed_clearly} of {operations})"),
        )
    )
    rows.append(
        (
            "S3 faults: injected / requests, during a Toil workflow that completed",
            "n/a",
            get("faults", "workflow", "{faults} / {requests}"),
        )
    )
    rows.append(
        (
            "Full disk: writes refused with ENOSPC, store intact (blocks / inodes)",
            f"{get('disk', 'blocks', '{enospc_failures}')} / "
            f"{get('disk', 'inodes', '{enospc_failures}')}",
            "n/a",
        )
    )
    rows.append(
        (
            "Mount: reads while one process rewrites the files (torn / stale)",
            get("mount", "local", "{reads} ({torn} / {stale})"),
            get("mount", "s3", "{reads} ({torn} / {stale})"),
        )
    )
    bad = {
        b: sum(
            d["inputs"]
            for d in lines
            if d["section"] == "badinput" and d["name"].split(":")[1:2] == [b]
        )
        for b in ("local", "s3")
    }
    rows.append(("Bad inputs: hostile names and sizes tried", str(bad["local"]), str(bad["s3"])))
    rows.append(
        (
            "Bad inputs: locators / requests to a mount",
            f"{get('badinput', 'locators', '{inputs}')} / "
            f"{get('badinput', 'mount_requests', '{inputs}')}",
            "n/a",
        )
    )
    rows.append(
        (
            "Security: objects an unprivileged user could read / public objects",
            get("security", "local", "{readable_by_others} of {objects_probed}"),
            " + ".join(
                get("security", n, "{public} of {objects_checked}")
                for n in ("s3:existing-bucket", "s3:new-bucket")
            ),
        )
    )
    lost = sum(d.get("bytes_lost", 0) for d in lines)
    out = ["| Campaign | `local:` | `s3:` |", "|---|---:|---:|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    out.append(f"| **Bytes lost or corrupted, all campaigns** | **{lost}** | **{lost}** |")
    return "\n".join(out)


#: Every API path that writes an object, in the order the campaigns report them.
WRITE_PATHS = [
    "write_file",
    "write_file_stream",
    "update_file",
    "update_file_stream",
    "update_job",
    "create_job",
    "write_shared_file_stream",
    "write_logs",
]
_PATH_ORDER = [*WRITE_PATHS, "delete_job"]


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        figures = [json.loads(line) for line in f if line.strip()]
    print(table(figures))
