"""The Backend contract (jobstore/backend.py), run on every registered backend.

The store trusts its backend for atomicity, visibility across processes and
fast failure; these tests hold each backend to that directly, below the store,
with real processes where the promise is about processes. A new backend in
``jobstore.locator.BACKENDS`` runs them once the suite has a ``<scheme>_locator``
fixture for it (tests/conftest.py). The last test adds a third backend the way a
contributor would: one module (here, a class in this file) and one registration.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import BinaryIO

import pytest
from toil.common import Config, Toil
from toil.job import JobDescription

from jobstore import JobStore, layout
from jobstore.backend import Backend, DirEntry, NotFound, ObjectInfo, StoreExists, VersionGone
from jobstore.locator import BACKENDS, InvalidLocator, Locator, Registration, parse_locator
from tests.reliability_lib import forkserver, store_env

#: "At once": generous for a machine shared by parallel test runs (a request to moto
#: takes milliseconds), and far below any waiting for consistency (Toil's waits ~30 s).
FAST_FAILURE_SECONDS = 0.2
#: Keys with what s3ql's backend tests also throw at a store: spaces, '=', '%', non-ASCII.
ODD_KEYS = ("a b/c=d%20e", "ünï/cødé", "x+y/@z/~q")
#: Streamed writes go in pieces this big, so that a non-atomic one would show its parts.
CHUNK = 64 << 10


@pytest.fixture
def locator(store_locator: str) -> str:
    return store_locator


@pytest.fixture
def backend(locator: str) -> Iterator[Backend]:
    b = parse_locator(locator).open_backend()
    b.initialize()
    yield b
    b.destroy()


def open_backend(locator: str, env: dict[str, str] | None = None) -> Backend:
    """What another process does to reach the same objects (with ``env``: a forked child)."""
    os.environ.update(env or {})
    return parse_locator(locator).open_backend()


def keys(backend: Backend) -> list[str]:
    return list(backend.list(""))


# ================================================================ writes


def test_every_write_path_reads_back_every_way(backend: Backend, tmp_path: Path) -> None:
    source = tmp_path / "source"
    for i, key in enumerate(ODD_KEYS):
        data = os.urandom(1000 + i)
        how = i % 3
        if how == 0:
            backend.put_bytes(key, data)
        elif how == 1:
            source.write_bytes(data)
            backend.put_file(key, str(source))
        else:
            with backend.writer(key) as f:
                f.write(data[:10])
                f.write(data[10:])
        assert backend.get_bytes(key) == data
        with backend.reader(key) as r:
            assert r.read() == data
        info = backend.get_file(key, str(tmp_path / "copy"))
        assert (tmp_path / "copy").read_bytes() == data and info.size == len(data)
        assert backend.stat(key).size == len(data)
    assert keys(backend) == sorted(ODD_KEYS)


def test_a_put_replaces_the_whole_object(backend: Backend) -> None:
    backend.put_bytes("k", b"long old content")
    backend.put_bytes("k", b"new")
    assert backend.get_bytes("k") == b"new"
    assert backend.stat("k").size == 3


def _rewrite_forever(
    locator: str, env: dict[str, str], key: str, versions: list[bytes], stop: Connection
) -> int:
    """Write the versions in turn, streamed in small pieces, until told to stop."""
    b = open_backend(locator, env)
    writes = 0
    while not stop.poll():
        data = versions[writes % len(versions)]
        if writes % 2:
            b.put_bytes(key, data)
        else:
            with b.writer(key) as f:
                for start in range(0, len(data), CHUNK):
                    f.write(data[start : start + CHUNK])
        writes += 1
    return writes


def test_a_reader_racing_a_writer_sees_old_or_new_never_a_part(
    backend: Backend, locator: str
) -> None:
    size = 1 << 20
    versions = [bytes([65 + i]) * size for i in range(3)]
    backend.put_bytes("race", versions[0])
    ctx = forkserver()
    stop_recv, stop_send = ctx.Pipe(duplex=False)
    with ctx.Pool(1) as pool:
        writer = pool.apply_async(
            _rewrite_forever, (locator, store_env(), "race", versions, stop_recv)
        )
        reads, seen = 0, set()
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline or len(seen) < 2:
            if reads % 2:
                data = backend.get_bytes("race")
            else:
                with backend.reader("race") as r:
                    data = r.read()
            assert data in versions, f"read {len(data)} bytes that are no version"
            seen.add(data[:1])
            reads += 1
            assert time.monotonic() < deadline + 30, "the writer never got a version through"
        stop_send.send(True)
        writes = writer.get(timeout=60)
    assert writes >= 2 and reads >= 2


def test_an_aborted_writer_leaves_nothing(backend: Backend) -> None:
    backend.put_bytes("kept", b"old")
    for key in ("kept", "new"):
        with pytest.raises(RuntimeError), backend.writer(key) as f:
            f.write(b"half of it")
            raise RuntimeError("the job failed")
    assert backend.get_bytes("kept") == b"old"
    assert not backend.exists("new")
    assert keys(backend) == ["kept"]


# ========================================================== processes


def _write_on_cue(locator: str, env: dict[str, str], count: int, cue: Connection) -> None:
    b = open_backend(locator, env)
    for i in range(count):
        b.put_bytes(f"ryw/{i}", str(i).encode())
        cue.send(i)
        cue.recv()  # the other process has read it


def test_read_your_writes_across_processes(backend: Backend, locator: str) -> None:
    ctx = forkserver()
    here, there = ctx.Pipe()
    count = 20
    child = ctx.Process(target=_write_on_cue, args=(locator, store_env(), count, there))
    child.start()
    try:
        for i in range(count):
            assert here.poll(60), "the writer process stopped"
            assert here.recv() == i
            # The write completed in another process: visible here at once, every way.
            assert backend.exists(f"ryw/{i}")
            assert backend.get_bytes(f"ryw/{i}") == str(i).encode()
            assert f"ryw/{i}" in backend.list("ryw/")
            here.send(True)
    finally:
        child.join(30)
    assert child.exitcode == 0


def _claim(locator: str, env: dict[str, str], key: str, start: float, data: bytes) -> bool:
    b = open_backend(locator, env)
    b.exists("warm-up")  # connect before the start line
    time.sleep(max(0.0, start - time.time()))
    return b.put_if_absent(key, data)


@pytest.mark.parametrize("size", [0, 300_000])
def test_put_if_absent_has_one_winner_among_processes(
    backend: Backend, locator: str, size: int
) -> None:
    """Exactly one of racing creators wins, and the object is all of the winner's bytes."""
    ctx = forkserver()
    with ctx.Pool(4) as pool:
        for round_ in range(5):
            key = f"claims/{size}/{round_}"
            start = time.time() + 0.5
            payloads = [bytes([65 + i]) * size for i in range(4)]
            won = pool.starmap(
                _claim, [(locator, store_env(), key, start, p) for p in payloads], chunksize=1
            )
            assert won.count(True) == 1, won
            assert backend.get_bytes(key) == payloads[won.index(True)]
            assert backend.put_if_absent(key, b"late") is False


# ============================================================== reads


def test_a_missing_object_fails_at_once(backend: Backend, tmp_path: Path) -> None:
    backend.put_bytes("dir/present", b"x")
    calls: list[Callable[[str], object]] = [
        backend.get_bytes,
        backend.stat,
        backend.url,
        lambda k: backend.get_file(k, str(tmp_path / "out")),
        lambda k: backend.reader(k).__enter__(),
    ]
    for call in calls:
        for key in ("missing", "dir/missing", "dir", "dir/present/below"):
            times = []
            for _ in range(3):
                start = time.perf_counter()
                with pytest.raises(NotFound) as info:
                    call(key)
                times.append(time.perf_counter() - start)
            assert info.value.key == key
            assert statistics.median(times) < FAST_FAILURE_SECONDS, (key, times)
        assert not backend.exists("missing")
    assert not (tmp_path / "out").exists()


def test_stat_exists_and_executable(backend: Backend, tmp_path: Path) -> None:
    source = tmp_path / "tool"
    source.write_bytes(b"#!/bin/sh\n")
    before = time.time()
    for executable in (True, False):
        backend.put_bytes(f"b/{executable}", b"12345", executable)
        backend.put_file(f"f/{executable}", str(source), executable)
        with backend.writer(f"w/{executable}", executable) as f:
            f.write(b"1")
    for key, size in (("b", 5), ("f", 10), ("w", 1)):
        for executable in (True, False):
            info = backend.stat(f"{key}/{executable}")
            assert (info.size, info.executable) == (size, executable) and info.version
            assert before - 5 < info.mtime < time.time() + 5
            assert backend.exists(f"{key}/{executable}")
            out = tmp_path / f"{key}-{executable}"
            assert backend.get_file(f"{key}/{executable}", str(out)).executable is executable
            assert bool(out.stat().st_mode & 0o100) is executable


# ============================================================ listing


def test_list_is_sorted_by_key_and_resumes_after_any_key(backend: Backend) -> None:
    # Names that sort before '/' ('-', '.', ' ') beside a directory of the same stem:
    # a walk that sorts each directory by name alone yields these out of key order.
    stored = ["d/a/b", "d/a-c", "d/a.e", "d/a b", "d/ab", "d/a/c/d", "e", "c", "d0", *ODD_KEYS]
    for key in random.sample(stored, len(stored)):
        backend.put_bytes(key, key.encode())
    assert keys(backend) == sorted(stored)
    assert list(backend.list("d/")) == sorted(k for k in stored if k.startswith("d/"))
    assert list(backend.list("d/a/")) == ["d/a/b", "d/a/c/d"]
    assert list(backend.list("nothing/")) == []
    for after in [*stored, "", "d/", "d/a/", "d/a/bb", "zzz", "0"]:
        assert list(backend.list("", start_after=after)) == [k for k in sorted(stored) if k > after]


def test_listdir_is_one_sorted_level(backend: Backend) -> None:
    for key in ("top/x", "top/sub/y", "top/sub/z/w", "top/a-b", "top/sub-", "other"):
        backend.put_bytes(key, b"")
    assert list(backend.listdir("top/")) == [
        DirEntry("a-b", False),
        DirEntry("sub", True),
        DirEntry("sub-", False),
        DirEntry("x", False),
    ]
    assert [e.name for e in backend.listdir("")] == ["other", "top"]
    assert list(backend.listdir("none/")) == []


def test_delete_prefix_deletes_that_prefix_only(backend: Backend) -> None:
    stored = ["p/1", "p/q/2", "p-x", "pq/3", "p.y", "o/p/4"]
    for key in stored:
        backend.put_bytes(key, b"x")
    backend.delete_prefix("p/")
    assert keys(backend) == sorted(["p-x", "pq/3", "p.y", "o/p/4"])
    backend.delete_prefix("p/")  # nothing there: no error
    backend.delete_prefix("missing/")
    backend.delete("missing")
    backend.delete_many(["p-x", "pq/3", "never"])
    assert keys(backend) == ["o/p/4", "p.y"]


def test_delete_with_prefix_deletes_the_key_first(backend: Backend) -> None:
    backend.put_bytes("jobs/j", b"description")
    for i in range(3):
        backend.put_bytes(f"files/j/{i}", b"x")
    backend.put_bytes("files/j2/0", b"kept")
    backend.delete_with_prefix("jobs/j", "files/j/")
    assert keys(backend) == ["files/j2/0"]


def test_empty_directories_are_not_objects(backend: Backend) -> None:
    backend.put_bytes("t/d/e/f", b"x")
    backend.put_bytes("t/g/h", b"x")
    backend.delete("t/d/e/f")
    assert keys(backend) == ["t/g/h"]
    for key in ("t", "t/d", "t/d/e", "t/g"):
        assert not backend.exists(key)
        with pytest.raises(NotFound):
            backend.stat(key)
        backend.delete(key)  # deleting a directory deletes nothing, as for a missing key
    assert keys(backend) == ["t/g/h"]
    # The store's hook after a delete: nothing empty is left to show in a listing.
    backend.prune_empty_parents("t/d/e/f", "t/")
    assert list(backend.listdir("t/")) == [DirEntry("g", True)]


def test_initialize_refuses_a_store_that_exists(backend: Backend, locator: str) -> None:
    backend.put_bytes("shared/x", b"x")
    with pytest.raises(StoreExists):
        open_backend(locator).initialize()
    assert backend.get_bytes("shared/x") == b"x"


# ======================================================== a third backend


class MemoryBackend(Backend):
    """``mem:<name>``: objects in this process's memory, shared by instances of one name.

    A backend as a contributor would write one: this class, and its line in
    ``BACKENDS``, are all it takes for ``JobStore`` and Toil to use it.
    """

    _stores: dict[str, dict[str, tuple[bytes, bool, float, str]]] = {}
    _lock = threading.Lock()

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def parse_location(cls, rest: str, locator: str) -> tuple[str, str]:
        if not rest.isidentifier():
            raise InvalidLocator(f"mem: needs a name, as in mem:run1 (got {locator!r})")
        return rest, ""

    @classmethod
    def from_locator(cls, locator: Locator) -> MemoryBackend:
        return cls(locator.location)

    @property
    def _objects(self) -> dict[str, tuple[bytes, bool, float, str]]:
        return self._stores.setdefault(self.name, {})

    def initialize(self) -> None:
        with self._lock:
            if self._objects:
                raise StoreExists(f"mem:{self.name} holds data")

    def destroy(self) -> None:
        self._stores.pop(self.name, None)

    def put_bytes(self, key: str, data: bytes, executable: bool = False) -> None:
        self._objects[key] = (bytes(data), executable, time.time(), uuid.uuid4().hex)

    def put_file(self, key: str, path: str, executable: bool = False) -> None:
        self.put_bytes(key, Path(path).read_bytes(), executable)

    @contextlib.contextmanager
    def writer(self, key: str, executable: bool = False) -> Iterator[BinaryIO]:
        buffer = io.BytesIO()
        yield buffer
        self.put_bytes(key, buffer.getvalue(), executable)

    def put_if_absent(self, key: str, data: bytes = b"") -> bool:
        with self._lock:
            if key in self._objects:
                return False
            self.put_bytes(key, data)
            return True

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._objects[key][0]
        except KeyError:
            raise NotFound(key) from None

    def reader(self, key: str) -> BinaryIO:
        return io.BytesIO(self.get_bytes(key))

    @contextlib.contextmanager
    def open_version(
        self, key: str, start: int = 0, version: str | None = None
    ) -> Iterator[tuple[ObjectInfo, BinaryIO]]:
        info = self.stat(key)
        data = self.get_bytes(key)
        if version is not None and info.version != version:
            raise VersionGone(key)
        yield info, io.BytesIO(data[start:])

    def get_file(self, key: str, path: str) -> ObjectInfo:
        info = self.stat(key)
        Path(path).write_bytes(self.get_bytes(key))
        os.chmod(path, 0o755 if info.executable else 0o644)
        return info

    def stat(self, key: str) -> ObjectInfo:
        try:
            data, executable, mtime, version = self._objects[key]
        except KeyError:
            raise NotFound(key) from None
        return ObjectInfo(len(data), executable, mtime, version)

    def url(self, key: str) -> str:
        self.stat(key)
        return f"mem:{self.name}/{key}"

    def delete(self, key: str) -> None:
        self._objects.pop(key, None)

    def list(self, prefix: str, start_after: str | None = None) -> Iterator[str]:
        after = start_after or ""
        return iter(sorted(k for k in list(self._objects) if k.startswith(prefix) and k > after))

    def listdir(self, prefix: str) -> Iterator[DirEntry]:
        entries: dict[str, bool] = {}
        for key in self.list(prefix):
            name, slash, _ = key[len(prefix) :].partition("/")
            entries[name] = entries.get(name, False) or bool(slash)
        return (DirEntry(n, d) for n, d in sorted(entries.items()))


def test_a_third_backend_is_one_module_and_one_registration(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(BACKENDS, "mem", Registration(f"{__name__}:MemoryBackend", "<name>"))

    # Toil resolves it through the hook, as it does local: and s3:.
    store = Toil.getJobStore("mem:run1")
    assert isinstance(store, JobStore) and isinstance(store.backend, MemoryBackend)
    with pytest.raises(InvalidLocator, match=r"unknown jobstore scheme 'nope'.* or mem:<name>\)$"):
        parse_locator("nope:x")
    with pytest.raises(InvalidLocator, match="mem: needs a name"):
        JobStore("mem:")

    store.initialize(Config())
    job = JobDescription(
        requirements={"memory": 1, "cores": 1, "disk": 1, "preemptible": False}, jobName="hello"
    )
    store.assign_job_id(job)
    store.create_job(job)
    source = tmp_path / "input.txt"
    source.write_text("some data\n")
    file_id = store.write_file(str(source), job.jobStoreID, cleanup=True)
    with store.write_shared_file_stream("pid.log") as f:
        f.write(b"42")
    store.write_logs("a message")

    other = JobStore("mem:run1")  # a second instance sees it all
    other.resume()
    assert other.load_job(job.jobStoreID).jobName == "hello"
    with other.read_file_stream(file_id) as r:
        assert r.read() == b"some data\n"
    messages: list[bytes] = []
    assert other.read_logs(lambda m: messages.append(m.read())) == 1
    assert messages == [b"a message"]
    assert sorted(other.shared_file_names()) == ["config.pickle", "pid.log"]

    other.delete_job(job.jobStoreID)
    assert not store.job_exists(job.jobStoreID) and not store.file_exists(file_id)
    assert list(store.backend.list(layout.FILES)) == []
    store.destroy()
    with pytest.raises(Exception, match="mem:run1"):
        JobStore("mem:run1").resume()
