"""Reads through a real mount while one process rewrites the files: never torn, never stale.

SPEC "One leader, whole reads, damaged stores": a read through the mount returns
one complete stored version, never a mix or a cut, and after the attribute
timeout a new open sees the current version (on S3 too, for same-size rewrites
within one second).

A writer process rewrites three files (small, medium and large) in a loop,
each version a self-checking payload (tag, version, length, checksum) whose
size alternates between two values, while reader threads ``cat`` them (a real
``cat`` in a subprocess) and read them with Python's ``open``/``read``, each
read a fresh open. Every read is checked:

* torn: the bytes are not one complete version the writer stored (a version
  cut at another's length, or pages of two versions);
* stale: a version older than one whose write had completed more than the
  attribute timeout (plus slack) before the read opened the file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from toil.common import Config

from jobstore import JobStore
from tests.mountutil import Mount
from tests.reliability_lib import CorruptPayload, bound, make_payload, parse_payload, record

#: The mount's attribute timeout (the default of ``jobstore mount``).
ATTR_TIMEOUT = 1.0
#: A completed write older than this at open time must be seen (or a newer one).
STALE_AFTER = ATTR_TIMEOUT + 0.5
#: (tag, smaller size) of each file; every other version is a third larger.
FILES = (("small", 1024), ("medium", 300 * 1024), ("large", 3 * 1024 * 1024))
SECONDS = bound(20.0, 120.0)
#: The writer's bursts and the quiet spells between them.
BURST = 1.5
QUIET = STALE_AFTER + 1.0
READERS = 4


def size_of(base: int, version: int) -> int:
    return base + (base // 3) * (version % 2)


def writer_main(locator: str, ids: list[str], journal: str, seconds: float) -> None:
    """Rewrite every file in turn until ``seconds`` are up, journaling each completed write.

    Writes come in bursts of :data:`BURST` seconds with quiet spells of
    :data:`QUIET` seconds between them: in a burst reads race writes (torn
    reads), in a quiet spell a read must find the last version (stale reads).
    Run as its own process (see :func:`start_writer`). A journal line is
    ``tag version monotonic-time-of-completion``; CLOCK_MONOTONIC is one clock
    for every process of the machine.
    """
    store = JobStore(locator)
    store.resume()
    scratch = journal + ".src"
    version = 1
    deadline = time.monotonic() + seconds
    burst_started = time.monotonic()
    with open(journal, "a", buffering=1) as log:
        while time.monotonic() < deadline:
            if version > 1 and time.monotonic() - burst_started > BURST:
                time.sleep(QUIET)
                burst_started = time.monotonic()
            for (tag, base), file_id in zip(FILES, ids, strict=True):
                with open(scratch, "wb") as f:
                    f.write(make_payload(tag, version, size_of(base, version)))
                store.update_file(file_id, scratch)
                log.write(f"{tag} {version} {time.monotonic()}\n")
            version += 1


def start_writer(
    locator: str, ids: list[str], journal: Path, seconds: float
) -> subprocess.Popen[str]:
    code = (
        "import sys; from tests.test_reliability_mount import writer_main; "
        "writer_main(sys.argv[1], sys.argv[2].split(','), sys.argv[3], float(sys.argv[4]))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, locator, ",".join(ids), str(journal), str(seconds)],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        stderr=subprocess.PIPE,
        text=True,
    )


@dataclass
class Tally:
    reads: int = 0
    torn: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def completed_before(journal: Path, tag: str, moment: float) -> int:
    """The newest version of ``tag`` whose write had completed by ``moment`` (0: the first)."""
    newest = 0
    for line in journal.read_text().splitlines():
        name, version, done = line.split()
        if name == tag and float(done) < moment:
            newest = max(newest, int(version))
    return newest


def read_once(path: Path, how: str) -> bytes:
    if how == "cat":
        done = subprocess.run(["cat", str(path)], capture_output=True, timeout=60)
        if done.returncode:
            raise OSError(f"cat failed: {done.stderr.decode().strip()}")
        return done.stdout
    with open(path, "rb") as f:
        return f.read()


def reader(
    mount: Mount, ids: list[str], journal: Path, how: str, stop: threading.Event, tally: Tally
) -> None:
    i = 0
    while not stop.is_set():
        (tag, _), file_id = FILES[i % len(FILES)], ids[i % len(ids)]
        i += 1
        opened = time.monotonic()
        try:
            data = read_once(mount / "files" / file_id, how)
        except OSError as e:
            with tally.lock:
                tally.errors.append(f"{how} {tag}: {e}")
            continue
        must_see = completed_before(journal, tag, opened - STALE_AFTER)
        with tally.lock:
            tally.reads += 1
            try:
                got_tag, version = parse_payload(data)
            except CorruptPayload as e:
                tally.torn.append(f"{how} {tag}: {e}")
                continue
            if got_tag != tag:
                tally.torn.append(f"{how} {tag}: holds {got_tag}")
            elif version < must_see:
                tally.stale.append(f"{how} {tag}: v{version}, v{must_see} was written before")


@pytest.fixture
def consistency_store(store_locator: str, tmp_path: Path) -> Iterator[tuple[JobStore, list[str]]]:
    store = JobStore(store_locator)
    store.initialize(Config())
    ids = []
    for tag, base in FILES:
        source = tmp_path / tag
        source.write_bytes(make_payload(tag, 0, size_of(base, 0)))
        ids.append(store.write_file(str(source)))
    yield store, ids


def test_reads_are_whole_and_fresh_while_files_are_rewritten(
    consistency_store: tuple[JobStore, list[str]], tmp_path: Path
) -> None:
    store, ids = consistency_store
    backend = store.locator.partition(":")[0]
    journal = tmp_path / "journal"
    journal.touch()
    mount = Mount(store.locator, tmp_path / "mnt")
    tally = Tally()
    stop = threading.Event()
    try:
        writer = start_writer(store.locator, ids, journal, SECONDS)
        threads = [
            threading.Thread(
                target=reader,
                args=(mount, ids, journal, "cat" if n % 2 else "python", stop, tally),
            )
            for n in range(READERS)
        ]
        for t in threads:
            t.start()
        try:
            writer.wait(SECONDS + 120)
        finally:
            stop.set()
            for t in threads:
                t.join(120)
        _, stderr = writer.communicate()
        assert writer.returncode == 0, stderr
        assert mount.proc.poll() is None, mount.log_text()
    finally:
        stop.set()
        mount.close()
    writes = len(journal.read_text().splitlines())
    record(
        "mount",
        backend,
        writes=writes,
        reads=tally.reads,
        torn=len(tally.torn),
        stale=len(tally.stale),
        errors=len(tally.errors),
        bytes_lost=0,
    )
    print(
        f"{backend}: {writes} writes, {tally.reads} reads, {len(tally.torn)} torn, "
        f"{len(tally.stale)} stale, {len(tally.errors)} failed"
    )
    assert writes >= 3 * len(FILES) and tally.reads >= 20
    assert not tally.torn, f"{len(tally.torn)} torn of {tally.reads}: {tally.torn[:5]}"
    assert not tally.stale, f"{len(tally.stale)} stale of {tally.reads}: {tally.stale[:5]}"
    assert not tally.errors, tally.errors[:5]
