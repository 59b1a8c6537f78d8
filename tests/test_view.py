"""The FUSE view without FUSE: the path layer over a real store, and the handlers' errno.

``jobstore.mount.view`` is plain code over a ``JobStore``; ``jobstore.mount.fs`` handlers are
coroutines that can be awaited directly under trio. Both run against a real
``local:`` store here; the mounted tests (test_mount.py) cover the kernel side.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import resource
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyfuse3
import pytest

from jobstore import layout
from jobstore.backend import BackendError, VersionGone
from jobstore.mount import view as v
from jobstore.mount.fs import JobStoreFS, errno_for
from jobstore.mount.ours import StoreSource
from tests.mountutil import Populated, new_job, populate


@pytest.fixture
def populated(local_locator: str, tmp_path: Path) -> Populated:
    return populate(local_locator, tmp_path)


@pytest.fixture
def view(populated: Populated) -> v.View:
    return v.View(StoreSource(populated.store))


def list_all(view: v.View, path: v.Path, limit: int = 1000) -> list[v.DirEntry]:
    reader = v.DirReader(view.listing(path))
    out: list[v.DirEntry] = []
    start = 0
    while batch := reader.read(start, limit):
        assert batch[0].position > start, "a listing must move on"
        out.extend(batch)
        start = batch[-1].position
    return out


def names(view: v.View, path: v.Path) -> set[str]:
    return {e.name for e in list_all(view, path)}


def read_all(view: v.View, path: v.Path) -> bytes:
    attr, content = view.open(path)
    try:
        return content.read(0, attr.size + 4096)
    finally:
        content.close()


# ================================================================ the tree


def test_root_and_top_directories(view: v.View, populated: Populated) -> None:
    assert names(view, ()) == {
        *("files", "jobs", "killflag", "logs", "shared"),
        *("status.json", "graph.dot", "trace.tsv", "by-state"),
    }
    assert names(view, ("jobs",)) == set(populated.job_ids)
    assert names(view, ("shared",)) == set(populated.store.shared_file_names())
    assert names(view, ("logs",)) == {
        k.removeprefix(layout.LOGS) for k in populated.store.log_keys()
    }
    for top in ("files", "jobs", "logs", "shared"):
        attr = view.getattr((top,))
        assert attr.is_dir and attr.mode == 0o555


def test_files_tree_is_the_file_ids(view: v.View, populated: Populated) -> None:
    """Every file ID is a path below files/, and nothing else is there (no hints/ claims)."""
    found: set[str] = set()

    def walk(path: v.Path) -> None:
        for e in list_all(view, path):
            if e.attr.is_dir:
                walk((*path, e.name))
            else:
                found.add("/".join((*path[1:], e.name)))

    walk(("files",))
    assert found == set(populated.files)
    for file_id, (content, executable) in populated.files.items():
        path = ("files", *file_id.split("/"))
        attr = view.getattr(path)
        assert attr.size == len(content)
        assert attr.mode == (0o555 if executable else 0o444)
        assert read_all(view, path) == content


def test_job_directory(view: v.View, populated: Populated) -> None:
    store = populated.store
    for job_id in populated.job_ids:
        expected = {"description.json", "description.pickle", "state", "attempts"}
        if job_id == populated.parent_id:
            expected.add("log")
        assert names(view, ("jobs", job_id)) == expected
        pickled = read_all(view, ("jobs", job_id, "description.pickle"))
        assert pickled == store.load_job_bytes(job_id)
        raw = read_all(view, ("jobs", job_id, "description.json"))
        assert view.getattr(("jobs", job_id, "description.json")).size == len(raw)
        doc = json.loads(raw)
        job = store.load_job(job_id)
        assert doc["id"] == job_id
        assert doc["name"] == job.jobName
        assert doc["unit"] == job.unitName
        assert doc["display_name"] == job.displayName
        assert doc["remaining_try_count"] == job.remainingTryCount
        assert doc["requirements"]["memory"] == job.memory == 2**20
        assert doc["requirements"]["cores"] == job.cores
        assert doc["requirements"]["disk"] == job.disk
        assert doc["requirements"]["preemptible"] is False
        assert doc["has_body"] is False
        assert doc["services"] == []
        assert isinstance(doc["version"], int) and doc["version"] >= 1
        assert doc["log_file_id"] == job.logJobStoreFileID


def test_parent_job_successors_and_log(view: v.View, populated: Populated) -> None:
    doc = json.loads(read_all(view, ("jobs", populated.parent_id, "description.json")))
    children = sorted(j for j in populated.job_ids if j != populated.parent_id)
    assert sorted(id_ for phase in doc["successors"] for id_ in phase) == children
    assert doc["requirements"]["cores"] == 2
    assert doc["requirements"]["accelerators"][0]["kind"] == "gpu"
    assert doc["log_file_id"] == populated.log_file_id
    log = read_all(view, ("jobs", populated.parent_id, "log"))
    assert log == populated.files[populated.log_file_id][0]


@pytest.mark.parametrize(
    "path",
    [
        ("nothing",),
        ("jobs", "no-such-job"),
        ("jobs", "bad id!"),
        ("jobs", ".."),
        ("files", "@anon", "zzz"),
        ("files", "..", "shared"),
        ("shared", "missing"),
        ("shared", "bad name!"),
        ("logs", "00000000000000000000-000000000000"),
        ("killflag", "below"),
        ("files", "\udcff"),
        ("shared", "pid.log\udcff"),
        ("logs", "\udcff"),
    ],
)
def test_missing_paths(view: v.View, path: v.Path) -> None:
    with pytest.raises(v.NoEntry):
        view.getattr(path)


def test_job_paths_that_do_not_exist(view: v.View, populated: Populated) -> None:
    child = next(j for j in populated.job_ids if j != populated.parent_id)
    for path in [
        ("jobs", child, "log"),
        ("jobs", child, "other"),
        ("jobs", child, "description.json", "x"),
    ]:
        with pytest.raises(v.NoEntry):
            view.getattr(path)
        with pytest.raises(v.NoEntry):
            view.open(path)
    with pytest.raises(v.NotADir):
        view.listing(("jobs", child, "description.json"))
    with pytest.raises(v.IsADir):
        view.open(("jobs", child))


def test_changes_show_at_once(view: v.View, populated: Populated, tmp_path: Path) -> None:
    store = populated.store
    job = new_job(store, "late")
    store.create_job(job)
    assert str(job.jobStoreID) in names(view, ("jobs",))
    with store.write_shared_file_stream("pid.log") as f:
        f.write(b"99")
    assert read_all(view, ("shared", "pid.log")) == b"99"
    job.jobName = "renamed"
    store.update_job(job)
    doc = json.loads(read_all(view, ("jobs", str(job.jobStoreID), "description.json")))
    assert doc["name"] == "renamed"
    store.delete_job(str(job.jobStoreID))
    assert str(job.jobStoreID) not in names(view, ("jobs",))
    with pytest.raises(v.NoEntry):
        view.getattr(("jobs", str(job.jobStoreID)))


def test_description_follows_rewrites_of_same_size_and_time(
    view: v.View, populated: Populated
) -> None:
    """Two versions of a job stored within one timestamp tick (a second on S3) differ."""
    store = populated.store
    child = next(j for j in populated.job_ids if j != populated.parent_id)
    path = ("jobs", child, "description.json")
    before = json.loads(read_all(view, path))
    stored = store.backend.local_path(layout.job_key(child))
    assert stored is not None
    st = os.stat(stored)
    job = store.load_job(child)
    job.jobName = "child9"  # as long as before: the pickle keeps its size
    store.update_job(job)
    os.utime(stored, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(stored).st_size == st.st_size
    after = json.loads(read_all(view, path))
    assert after["name"] == "child9" and after["version"] == before["version"] + 1


# ============================================================ the kill flag


def test_kill_flag(view: v.View, populated: Populated) -> None:
    assert read_all(view, v.KILLFLAG) == b"NO\n"
    for word, kill in [(b"YES\n", True), (b"NO", False), (b"YES  \n\n", True), (b"NO \n", False)]:
        view.set_kill_flag(word)
        assert populated.store.read_kill_flag() is kill
        assert read_all(view, v.KILLFLAG) == (b"YES\n" if kill else b"NO\n")
    for bad in [b"yes", b"YESS", b" YES", b"MAYBE\n", b"", b"\n", b"YES\nNO"]:
        view.set_kill_flag(b"YES")
        with pytest.raises(v.BadKillWord):
            view.set_kill_flag(bad)
        assert populated.store.read_kill_flag() is True
    attr = view.getattr(v.KILLFLAG)
    assert attr.mode == 0o644 and attr.live and not attr.is_dir


# ====================================================== listing positions


class SegmentedNames:
    """A listing whose entries a test changes between pages, as a live store would."""

    hash_bits = 50

    def __init__(self, by_segment: dict[int, set[str]]) -> None:
        self.by_segment = by_segment

    def entries(self, segment: int) -> Iterator[tuple[int, str, bool]]:
        # Lazily, segment by segment, as a paginated store listing sees a changing store.
        for s in range(segment, 1 << (63 - self.hash_bits)):
            for name in sorted(self.by_segment.get(s, ())):
                yield s, name, False

    def attr(self, name: str, is_dir: bool) -> v.Attr | None:
        present = any(name in names for names in self.by_segment.values())
        return v.Attr(False, 0o444, 0, 0) if present else None


@pytest.mark.parametrize("limit", [1, 3, 50])
def test_listing_resumes_while_entries_come_and_go(limit: int) -> None:
    """Entries present throughout are listed exactly once; nothing is listed twice."""
    entries = {s: {f"job-{s}-{i}" for i in range(s % 4)} for s in range(0, 4096, 37)}
    listing = SegmentedNames(entries)
    stable = {n for names in entries.values() for n in names if not n.endswith("-1")}
    reader = v.DirReader(listing)
    seen: list[str] = []
    start, step = 0, 0
    while batch := reader.read(start, limit):
        positions = [e.position for e in batch]
        assert positions == sorted(positions) and positions[0] > start
        seen.extend(e.name for e in batch)
        start = batch[-1].position
        step += 1
        # Churn: remove some names, add new ones before and after the current position.
        for s in list(entries):
            entries[s].discard(f"job-{s}-1")
        entries.setdefault(step * 97 % 4096, set()).add(f"new-{step}")
    assert len(seen) == len(set(seen))
    assert stable <= set(seen)


def test_listing_restarts_from_any_position_it_gave() -> None:
    entries = {s: {f"n{s}-{i}" for i in range(3)} for s in range(0, 4096, 512)}
    reader = v.DirReader(SegmentedNames(entries))
    everything = reader.read(0, 1000)
    for k, entry in enumerate(everything):
        # A fresh reader (another open of the directory) resumes from any handed-out position.
        rest = v.DirReader(SegmentedNames(entries)).read(entry.position, 1000)
        assert [e.name for e in rest] == [e.name for e in everything[k + 1 :]]


class CountingNames(SegmentedNames):
    """Counts the streams opened and the entries taken from them."""

    def __init__(self, by_segment: dict[int, set[str]]) -> None:
        super().__init__(by_segment)
        self.streams = 0
        self.taken = 0

    def entries(self, segment: int) -> Iterator[tuple[int, str, bool]]:
        self.streams += 1
        for entry in super().entries(segment):
            self.taken += 1
            yield entry

    def attr(self, name: str, is_dir: bool) -> v.Attr | None:
        return v.Attr(False, 0o444, 0, 0)  # nothing vanishes here


def test_listing_streams_instead_of_holding_the_directory() -> None:
    """Paging through 12,288 entries reads one stream, never far ahead of what was handed out."""
    listing = CountingNames({s: {f"j{s}-{i}" for i in range(3)} for s in range(4096)})
    reader = v.DirReader(listing)
    consumed: list[str] = []
    start = 0
    while batch := reader.read(start, 20):
        # The kernel's buffer often holds only part of a reply: it asks again from there.
        taken = batch[: len(batch) // 2 + 1]
        consumed.extend(e.name for e in taken)
        start = taken[-1].position
        # Never more taken from the store than handed out, plus the rest of one segment.
        assert listing.taken <= len(consumed) + 20 + 3 + 1
    assert listing.streams == 1
    assert sorted(consumed) == sorted(n for names in listing.by_segment.values() for n in names)


def test_local_listing_resumes_after_any_key(populated: Populated) -> None:
    """LocalBackend.list(start_after=...) skips whole shards, and gives what filtering would."""
    store = populated.store
    for i in range(40):
        store.create_job(new_job(store, f"extra{i}"))
    keys = list(store.backend.list(layout.JOBS))
    cuts = [
        layout.JOBS,
        "jobs/0",
        "jobs/7ff",
        "jobs/fff/",
        "zzz",
        *keys[::7],
        *(k + "0" for k in keys[::9]),
        *(k[:-1] for k in keys[::5]),
    ]
    for cut in cuts:
        resumed = list(store.backend.list(layout.JOBS, start_after=cut))
        assert resumed == [k for k in keys if k > cut], cut


def test_jobs_listing_spans_shards(populated: Populated) -> None:
    store = populated.store
    more = [new_job(store, f"many{i}") for i in range(150)]
    with store.batch():
        for job in more:
            store.create_job(job)
    view = v.View(StoreSource(store))
    listed = [e.name for e in list_all(view, ("jobs",), limit=7)]
    assert sorted(listed) == sorted([*populated.job_ids, *(str(j.jobStoreID) for j in more)])
    assert len({layout.shard(j) for j in listed}) > 50


# ================================================ handlers, errno, EIO


def fs_for(populated: Populated) -> JobStoreFS:
    return JobStoreFS(v.View(StoreSource(populated.store)), timeout=1.0, threads=2)


CTX: Any = None  # the handlers never look at the request context


async def lookup_path(fs: JobStoreFS, *names: str) -> pyfuse3.EntryAttributes:
    ino = pyfuse3.ROOT_INODE
    entry = None
    for name in names:
        entry = await fs.lookup(ino, os.fsencode(name), CTX)
        ino = entry.st_ino
    assert entry is not None
    return entry


async def fuse_errno(coro: Any) -> int:
    with pytest.raises(pyfuse3.FUSEError) as e:
        await coro
    return e.value.errno


@pytest.mark.trio
async def test_handlers_read_files(populated: Populated) -> None:
    fs = fs_for(populated)
    file_id, content = next((k, c) for k, (c, executable) in populated.files.items() if executable)
    entry = await lookup_path(fs, "files", *file_id.split("/"))
    assert stat.S_IMODE(entry.st_mode) == 0o555 and stat.S_ISREG(entry.st_mode)
    assert entry.st_size == len(content) and entry.st_uid == os.getuid()
    info = await fs.open(entry.st_ino, os.O_RDONLY, CTX)
    assert await fs.read(info.fh, 0, 5) + await fs.read(info.fh, 5, 10**6) == content
    await fs.release(info.fh)


@pytest.mark.trio
async def test_handlers_lookup_counts_and_forget(populated: Populated) -> None:
    fs = fs_for(populated)
    first = await lookup_path(fs, "shared")
    again = await lookup_path(fs, "shared")
    assert first.st_ino == again.st_ino
    size = len(fs.inodes)
    await fs.forget([(first.st_ino, 1)])
    assert (await fs.getattr(first.st_ino, CTX)).st_ino == first.st_ino
    await fs.forget([(first.st_ino, 1)])
    assert len(fs.inodes) == size - 1
    assert await fuse_errno(fs.getattr(first.st_ino, CTX)) == errno.ENOENT
    dot = await fs.lookup(pyfuse3.ROOT_INODE, b".", CTX)
    assert dot.st_ino == pyfuse3.ROOT_INODE


@pytest.mark.trio
async def test_handlers_answer_errno(populated: Populated) -> None:
    fs = fs_for(populated)
    root = pyfuse3.ROOT_INODE
    pid_log = (await lookup_path(fs, "shared", "pid.log")).st_ino
    shared = (await lookup_path(fs, "shared")).st_ino
    assert await fuse_errno(fs.lookup(root, b"missing", CTX)) == errno.ENOENT
    assert await fuse_errno(fs.lookup(shared, b"bad name!", CTX)) == errno.ENOENT
    assert await fuse_errno(fs.opendir(pid_log, CTX)) == errno.ENOTDIR
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC):
        assert await fuse_errno(fs.open(pid_log, flags, CTX)) == errno.EROFS
    read_only = [
        fs.create(shared, b"new", 0o644, os.O_WRONLY, CTX),
        fs.mknod(shared, b"new", stat.S_IFREG | 0o644, 0, CTX),
        fs.mkdir(root, b"dir", 0o755, CTX),
        fs.unlink(shared, b"pid.log", CTX),
        fs.rmdir(root, b"jobs", CTX),
        fs.rename(shared, b"pid.log", shared, b"other", 0, CTX),
        fs.symlink(shared, b"link", b"pid.log", CTX),
        fs.link(pid_log, shared, b"hard", CTX),
        fs.setxattr(pid_log, b"user.x", b"1", CTX),
        fs.setattr(
            pid_log,
            pyfuse3.EntryAttributes(),
            SimpleNamespace(
                update_mode=True, update_uid=False, update_gid=False, update_size=False
            ),
            None,
            CTX,
        ),
    ]
    for call in read_only:
        assert await fuse_errno(call) == errno.EROFS
    assert await fuse_errno(fs.read(12345, 0, 10)) == errno.EBADF
    with populated.store.read_shared_file_stream("pid.log") as f:
        assert f.read() == b"4242"
    assert sorted(populated.store.shared_file_names()) == ["config.pickle", "pid.log"]


@pytest.mark.trio
async def test_handlers_kill_flag(populated: Populated) -> None:
    fs = fs_for(populated)
    store = populated.store
    ino = (await lookup_path(fs, "killflag")).st_ino

    async def echo(*writes: bytes) -> int | None:
        """What bash's `echo WORD > killflag` does: open with O_TRUNC, truncate, write, close."""
        info = await fs.open(ino, os.O_WRONLY | os.O_TRUNC, CTX)
        assert info.direct_io
        size0 = SimpleNamespace(
            update_mode=False, update_uid=False, update_gid=False, update_size=True
        )
        attr = pyfuse3.EntryAttributes()
        attr.st_size = 0
        await fs.setattr(ino, attr, size0, info.fh, CTX)
        failed = None
        try:
            offset = 0
            for data in writes:
                assert await fs.write(info.fh, offset, data) == len(data)
                offset += len(data)
        except pyfuse3.FUSEError as e:
            failed = e.errno
        await fs.release(info.fh)
        return failed

    assert await echo(b"YES\n") is None and store.read_kill_flag()
    assert await echo(b"NO\n") is None and not store.read_kill_flag()
    assert await echo(b"YES", b"\n") is None and store.read_kill_flag()
    assert await echo(b"bogus\n") == errno.EINVAL and store.read_kill_flag()
    assert await echo(b"NO", b"PE") == errno.EINVAL and not store.read_kill_flag()
    assert await echo(b"YE") == errno.EINVAL and not store.read_kill_flag()
    assert await echo() is None and not store.read_kill_flag()
    info = await fs.open(ino, os.O_RDONLY, CTX)
    assert await fs.read(info.fh, 0, 100) == b"NO\n"
    await fs.release(info.fh)


@pytest.mark.trio
async def test_unexpected_errors_are_eio_and_logged(
    populated: Populated, caplog: pytest.LogCaptureFixture
) -> None:
    """A corrupt description fails its own reads with EIO; everything else keeps working.

    The log names the corrupt key and the job in one line, once however often it is read.
    """
    fs = fs_for(populated)
    victim = populated.job_ids[0]
    populated.store.backend.put_bytes(layout.job_key(victim), b"not a pickle")
    job_dir = (await lookup_path(fs, "jobs", victim)).st_ino
    with caplog.at_level(logging.WARNING, logger="jobstore"):
        for _ in range(3):
            assert await fuse_errno(fs.lookup(job_dir, b"description.json", CTX)) == errno.EIO
    corrupt = [r.getMessage() for r in caplog.records if "UnpicklingError" in r.getMessage()]
    assert len(corrupt) == 1 and layout.job_key(victim) in corrupt[0] and victim in corrupt[0]
    pickle_entry = await fs.lookup(job_dir, b"description.pickle", CTX)
    info = await fs.open(pickle_entry.st_ino, os.O_RDONLY, CTX)
    assert await fs.read(info.fh, 0, 100) == b"not a pickle"
    other = await lookup_path(fs, "jobs", populated.job_ids[1], "description.json")
    assert other.st_size > 0


# ============================================== whole versions, system errno


@pytest.fixture
def any_populated(store_locator: str, tmp_path: Path) -> Populated:
    return populate(store_locator, tmp_path)


def test_open_is_one_version(any_populated: Populated, tmp_path: Path) -> None:
    """Attributes and bytes of an open file come from one version, whatever is written after."""
    store = any_populated.store
    old = b"old version\n" * 1000
    source = tmp_path / "v"
    source.write_bytes(old)
    file_id = store.write_file(str(source))
    path = ("files", *file_id.split("/"))
    view = v.View(StoreSource(store))
    attr, content = view.open(path)
    source.write_bytes(b"new, longer version\n" * 2000)
    store.update_file(file_id, str(source))
    try:
        assert (attr.size, content.read(0, 1 << 20)) == (len(old), old)
    finally:
        content.close()
    new_attr, new_content = view.open(path)
    try:
        assert new_content.read(0, 1 << 20) == source.read_bytes() and new_attr.size == 40000
    finally:
        new_content.close()
    assert new_attr.version != attr.version
    assert view.getattr(path).version == new_attr.version


@pytest.mark.trio
async def test_replaced_while_open_reads_old_or_fails_stale(
    any_populated: Populated, tmp_path: Path
) -> None:
    """A handle never reads on in another version: local: keeps the old file, s3: a GET of
    the old version (by ETag) after a replacement or deletion fails with ESTALE."""
    store = any_populated.store
    old = os.urandom(1 << 20)
    source = tmp_path / "big"
    source.write_bytes(old)
    file_id = store.write_file(str(source))
    fs = fs_for(any_populated)
    ino = (await lookup_path(fs, "files", *file_id.split("/"))).st_ino
    for change in ("replace", "delete"):
        info = await fs.open(ino, os.O_RDONLY, CTX)
        assert await fs.read(info.fh, 0, 4096) == old[:4096]
        if change == "replace":
            source.write_bytes(os.urandom(len(old)))
            store.update_file(file_id, str(source))
        else:
            store.delete_file(file_id)
        # Onwards: the stream already open goes on in the version it began.
        assert await fs.read(info.fh, 4096, 4096) == old[4096:8192]
        if store.locator.startswith("local:"):
            assert await fs.read(info.fh, 0, len(old)) == old
        else:
            assert await fuse_errno(fs.read(info.fh, 0, 4096)) == errno.ESTALE
        await fs.release(info.fh)
        if change == "replace":
            source.write_bytes(old)
            store.update_file(file_id, str(source))


@pytest.mark.trio
async def test_destroyed_store_answers_enoent(any_populated: Populated) -> None:
    store = any_populated.store
    fs = fs_for(any_populated)
    file_id = next(iter(any_populated.files))
    file_ino = (await lookup_path(fs, "files", *file_id.split("/"))).st_ino
    job_dir = (await lookup_path(fs, "jobs", any_populated.job_ids[0])).st_ino
    flag = (await lookup_path(fs, "killflag")).st_ino
    store.destroy()
    assert await fuse_errno(fs.getattr(file_ino, CTX)) == errno.ENOENT
    assert await fuse_errno(fs.open(file_ino, os.O_RDONLY, CTX)) == errno.ENOENT
    assert await fuse_errno(fs.lookup(job_dir, b"description.json", CTX)) == errno.ENOENT
    info = await fs.open(flag, os.O_WRONLY, CTX)
    assert await fuse_errno(fs.write(info.fh, 0, b"YES\n")) == errno.ENOENT
    await fs.release(info.fh)
    assert list(store.backend.list("")) == []  # the flag did not bring a store back


@pytest.mark.trio
async def test_out_of_descriptors_is_emfile(populated: Populated) -> None:
    """EMFILE reaches the client, which can close something and retry; EIO would not say so."""
    fs = fs_for(populated)
    file_id = next(iter(populated.files))
    ino = (await lookup_path(fs, "files", *file_id.split("/"))).st_ino
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    handles = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8, hard))
        with pytest.raises(pyfuse3.FUSEError) as e:
            for _ in range(100):
                handles.append((await fs.open(ino, os.O_RDONLY, CTX)).fh)
        assert e.value.errno == errno.EMFILE and len(handles) > 0
    finally:
        for fh in handles:
            await fs.release(fh)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    info = await fs.open(ino, os.O_RDONLY, CTX)
    assert await fs.read(info.fh, 0, 1 << 20) == populated.files[file_id][0]
    await fs.release(info.fh)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted (lazily if busy) afterwards."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mountpoint = tmp_path / "tmpfs"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


@pytest.mark.trio
async def test_read_only_and_full_stores_keep_their_errno(
    small_tmpfs: Path, tmp_path: Path
) -> None:
    """The kill flag written to a store on a full or read-only file system: ENOSPC, EROFS."""
    populated = populate(f"local:{small_tmpfs / 'store'}", tmp_path)
    fs = fs_for(populated)
    flag = (await lookup_path(fs, "killflag")).st_ino

    async def write_flag() -> int:
        info = await fs.open(flag, os.O_WRONLY, CTX)
        try:
            return await fuse_errno(fs.write(info.fh, 0, b"YES\n"))
        finally:
            await fs.release(info.fh)

    filler = small_tmpfs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    with contextlib.suppress(OSError):
        while os.write(fd, b"\0" * 4096):
            pass
    os.close(fd)
    assert await write_flag() == errno.ENOSPC
    filler.unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    assert await write_flag() == errno.EROFS
    assert not populated.store.read_kill_flag()


def test_errno_for_system_errors() -> None:
    """An errno is kept; running out of descriptors is said even from deep in a chain
    (botocore's connection error on s3:); anything else unexpected is None (EIO)."""
    assert errno_for(OSError(errno.ENOSPC, "full")) == errno.ENOSPC
    assert errno_for(VersionGone("replaced")) == errno.ESTALE
    try:
        try:
            raise OSError(errno.EMFILE, "Too many open files")
        except OSError as e:
            raise BackendError("S3 GET failed: could not connect") from e
    except BackendError as e:
        assert errno_for(e) == errno.EMFILE
    assert errno_for(BackendError("S3 GET failed: 500")) is None
    assert errno_for(OSError("no errno")) is None
