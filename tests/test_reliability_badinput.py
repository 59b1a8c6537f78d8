"""Bad input: hypothesis throws hostile names and sizes at the API of both backends.

Job IDs, file IDs, shared file names, basenames, hints and locators come from
unicode text, path tricks ('/', '..', '.tmp', absolute paths, NUL), very long
strings and lone surrogates. Every call either works as documented or fails
with the documented exception (``NoSuchJobException``, ``NoSuchFileException``,
``ValueError``, ``InvalidLocator``), and leaves the store, and everything
outside it, exactly as it was. Sizes 0, around and above an S3 multipart part
round-trip exactly.

Hypothesis runs derandomized and without its example database in CI (the same
examples every run, nothing written to ``.hypothesis``); ``scripts/reliability``
runs many more, random examples.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from toil.job import JobDescription
from toil.jobStores.abstractJobStore import (
    NoSuchFileException,
    NoSuchJobException,
    NoSuchJobStoreException,
)

from jobstore import JobStore, layout
from jobstore.locator import InvalidLocator, parse_locator
from tests.reliability_lib import LONG, bound, read_whole, record

MiB = 1 << 20
PART = 8 * MiB  # the s3 backend's part size: bigger objects are multipart uploads
REQUIREMENTS = {"memory": 1, "cores": 1, "disk": 1, "preemptible": False}

HOSTILE = [
    "",
    ".",
    "..",
    "/",
    "//",
    "a//b",
    "../x",
    "a/../../b",
    "./a",
    "a/.",
    "/etc/passwd",
    "~/x",
    ".tmp",
    ".tmp/x",
    "files/../../../x",
    "@anon/../../../x",
    "@job/x/../../..",
    "shared/config.pickle",
    "config.pickle/..",
    "a\x00b",
    "\x00",
    "a\nb",
    " ",
    "\\..\\x",
    "C:\\x",
    "*",
    "$HOME",
    "x" * 255,
    "x" * 256,
    "y" * 5000,
    "é" * 150,
    "\udc80",
    "\ud800",
    "a/\udcff/b",
    "\u202e\u0000",
]
names = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(max_size=60),
    st.text(alphabet="./\x00@a-_~", max_size=30),
    st.text(alphabet=st.characters(categories=["Cs", "Lu", "Po"]), max_size=20),
    st.text(alphabet="ab/.", min_size=300, max_size=3000),
)
PROFILE = settings(
    max_examples=bound(30, 1000),
    deadline=None,
    derandomize=not LONG,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Guarded:
    """A store plus a snapshot of everything it and its surroundings hold."""

    def __init__(self, locator: str, outside: Path, config: Any) -> None:
        self.locator = locator
        self.outside = outside
        self.store = JobStore(locator)
        self.store.initialize(config)
        with self.store.write_file_stream(basename="kept") as (f, file_id):
            f.write(b"kept")
        self.file_id = str(file_id)
        self.tried = 0

    def snapshot(self) -> tuple[frozenset[str], frozenset[str]]:
        """The store's keys; every path around it (the store and scratch/ aside).

        The one file the store holds is checked by content at the end.
        """
        backend = self.store.backend
        keys = frozenset(backend.list(""))
        skip = {self.outside / "scratch", Path(getattr(backend, "root", self.outside / "store"))}
        around = frozenset(
            str(Path(d, f).relative_to(self.outside))
            for d, dirs, files in os.walk(self.outside)
            if not any(Path(d) == s or s in Path(d).parents for s in skip)
            for f in [*dirs, *files]
        )
        return keys, around


@pytest.fixture
def guarded(
    store_locator: str, tmp_path: Path, toil_config: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Guarded]:
    """Relative paths land in an empty working directory that is watched too."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (tmp_path / "scratch").mkdir()
    monkeypatch.chdir(cwd)
    g = Guarded(store_locator, tmp_path, toil_config)
    yield g
    assert read_whole(g.store, g.file_id) == b"kept", "the one stored file changed"
    g.store.destroy()


def unchanged(g: Guarded, before: tuple[Any, Any], what: str) -> None:
    after = g.snapshot()
    assert after[0] == before[0], f"{what} changed the store: {set(after[0]) ^ set(before[0])}"
    assert after[1] == before[1], f"{what} wrote outside the store: {after[1] ^ before[1]}"
    g.tried += 1


def test_bad_job_ids(guarded: Guarded) -> None:
    g = guarded

    @PROFILE
    @given(job_id=names)
    def check(job_id: str) -> None:
        before = g.snapshot()
        assert not g.store.job_exists(job_id)
        with pytest.raises(NoSuchJobException):
            g.store.load_job(job_id)
        with pytest.raises(NoSuchJobException):
            g.store.load_job_bytes(job_id)
        with contextlib.suppress(NoSuchJobException):  # a missing job is no error
            g.store.delete_job(job_id)
        if not layout.is_job_id(job_id):
            job = JobDescription(requirements=REQUIREMENTS, jobName="bad")
            job.jobStoreID = job_id
            with pytest.raises((NoSuchJobException, ValueError)):
                g.store.update_job(job)
        unchanged(g, before, f"job ID {job_id!r}")

    check()
    record("badinput", f"job_ids:{backend_of(g)}", inputs=g.tried, bytes_lost=0)


def test_bad_file_ids(guarded: Guarded, tmp_path: Path) -> None:
    g = guarded
    local = tmp_path / "local-copy"
    source = tmp_path / "scratch" / "source"
    source.write_bytes(b"must never be stored")

    @PROFILE
    @given(file_id=names)
    @example(file_id="\ud800")  # leaked UnicodeEncodeError once
    def check(file_id: str) -> None:
        before = g.snapshot()
        assert not g.store.file_exists(file_id)
        assert g.store.get_file_size(file_id) == 0
        for call in (
            lambda: g.store.read_file(file_id, str(local)),
            lambda: read_whole(g.store, file_id),
            lambda: g.store.update_file(file_id, str(source)),
            lambda: g.store.file_is_executable(file_id),
            lambda: g.store.get_public_url(file_id),
        ):
            with pytest.raises(NoSuchFileException):
                call()
        with pytest.raises(NoSuchFileException), g.store.update_file_stream(file_id) as f:
            f.write(b"must never be stored")
        with contextlib.suppress(NoSuchFileException):  # a missing file is no error
            g.store.delete_file(file_id)
        assert not local.exists()
        unchanged(g, before, f"file ID {file_id!r}")

    check()
    record("badinput", f"file_ids:{backend_of(g)}", inputs=g.tried, bytes_lost=0)


def test_bad_shared_names(guarded: Guarded) -> None:
    g = guarded

    @PROFILE
    @given(name=names)
    def check(name: str) -> None:
        before = g.snapshot()
        if not _valid_shared(name):
            with pytest.raises(ValueError), g.store.write_shared_file_stream(name) as f:
                f.write(b"must never be stored")
            with pytest.raises((ValueError, NoSuchFileException)):
                g.store.get_shared_public_url(name)
            with (
                pytest.raises((ValueError, NoSuchFileException)),
                g.store.read_shared_file_stream(name) as f,
            ):
                f.read()
            unchanged(g, before, f"shared name {name!r}")
            return
        # A valid name is stored under shared/ and nowhere else.
        with g.store.write_shared_file_stream(name) as f:
            f.write(name.encode())
        with g.store.read_shared_file_stream(name) as f:
            assert f.read() == name.encode()
        assert name in set(g.store.shared_file_names())
        g.store.backend.delete(layout.shared_key(name))
        unchanged(g, before, f"shared name {name!r}")

    check()
    record("badinput", f"shared_names:{backend_of(g)}", inputs=g.tried, bytes_lost=0)


def _valid_shared(name: str) -> bool:
    try:
        layout.check_shared_name(name)
    except layout.InvalidName:
        return False
    return True


def test_hostile_basenames_and_hints(guarded: Guarded, tmp_path: Path) -> None:
    """Any basename and hints make a valid file ID under files/, readable back."""
    g = guarded

    @PROFILE
    @given(basename=names, hints=st.lists(names, max_size=4))
    def check(basename: str, hints: list[str]) -> None:
        before_keys, before_around = g.snapshot()
        data = basename.encode("utf-8", "surrogatepass")
        with g.store.write_file_stream(basename=basename, hints=hints or None) as (f, file_id):
            f.write(data)
        empty = g.store.get_empty_file_store_id(basename=basename, hints=hints or None)
        ids = [str(file_id), empty]
        local_name = _local_name(basename)
        if local_name is not None:
            path = tmp_path / "scratch" / local_name
            path.write_bytes(data)
            ids.append(g.store.write_file(str(path), hints=hints or None))
            path.unlink()
        for fid in ids:
            layout.check_path(fid, "file ID")
            assert g.store.file_exists(fid), fid
        assert read_whole(g.store, ids[0]) == data
        assert read_whole(g.store, ids[1]) == b""
        if len(ids) == 3:
            assert read_whole(g.store, ids[2]) == data
        new = g.snapshot()[0] - before_keys
        assert all(k.startswith((layout.FILES, layout.HINTS)) for k in new), new
        for fid in ids:
            g.store.delete_file(fid)
        assert not any(g.store.file_exists(fid) for fid in ids)
        assert g.snapshot()[1] == before_around, "wrote outside the store"
        g.tried += 1

    check()
    record("badinput", f"basenames_hints:{backend_of(g)}", inputs=g.tried, bytes_lost=0)


def _local_name(basename: str) -> str | None:
    """``basename`` if the local file system can hold a file of that name."""
    if basename in ("", ".", "..") or "/" in basename or "\x00" in basename:
        return None
    try:
        encoded = os.fsencode(basename)
    except UnicodeEncodeError:
        return None
    return basename if len(encoded) <= 255 else None


def test_bad_locators(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Locators parse to a store that does not exist, or fail to parse; nothing is created."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    tried = 0

    @PROFILE
    @given(
        rest=names,
        scheme=st.sampled_from(["local:", "s3:", "s3://", "file:", "", "LOCAL:", "aws:"]),
    )
    @example(rest="\ud800", scheme="local:")  # these two leaked OSErrors from resume() once
    @example(rest="x" * 256, scheme="local:")
    @example(rest="bucket/\ud800", scheme="s3:")
    def check(rest: str, scheme: str) -> None:
        nonlocal tried
        tried += 1
        locator = scheme + rest
        try:
            parsed = parse_locator(locator)
        except InvalidLocator:
            with pytest.raises(ValueError):
                JobStore(locator)
            return
        assert parse_locator(parsed.canonical) == parsed
        if parsed.scheme == "local":
            assert os.path.isabs(parsed.location)
            if not os.path.exists(parsed.location):
                with pytest.raises(NoSuchJobStoreException):
                    JobStore(locator).resume()
                assert not os.path.exists(parsed.location)
        else:
            assert parsed.prefix == "" or parsed.prefix.endswith("/")
            assert ".." not in parsed.prefix.split("/")
            parsed.prefix.encode("utf-8")  # S3 keys are UTF-8
        assert not any(cwd.iterdir()), "a locator created something"

    check()
    record("badinput", "locators", inputs=tried, bytes_lost=0)


@pytest.mark.parametrize("size", [0, 1, PART - 1, PART, PART + 1, 2 * PART + 12345])
def test_sizes(store_locator: str, toil_config: Any, tmp_path: Path, size: int) -> None:
    """Empty, just-below, exactly and above one multipart part: exact round trips."""
    store = JobStore(store_locator)
    store.initialize(toil_config)
    data = random.Random(size).randbytes(size)
    path = tmp_path / "data"
    path.write_bytes(data)
    from_path = store.write_file(str(path))
    with store.write_file_stream() as (f, from_stream):
        f.write(data)
    for file_id in (from_path, str(from_stream)):
        assert store.get_file_size(file_id) == size
        assert read_whole(store, file_id) == data
        out = tmp_path / "out"
        store.read_file(file_id, str(out))
        assert out.read_bytes() == data
    with store.update_file_stream(from_path) as f:
        f.write(data[::-1])
    assert read_whole(store, from_path) == data[::-1]
    record("badinput", f"size:{store_locator.split(':')[0]}:{size}", inputs=1, bytes_lost=0)
    store.destroy()


def backend_of(g: Guarded) -> str:
    return g.locator.split(":", 1)[0]


# ============================================================ the FUSE view

#: What may answer a change to the read-only tree (ENOENT/ENOTDIR: no such parent).
REFUSALS = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EISDIR}
MOUNT_OPS = [
    "stat",
    "listdir",
    "read",
    "open_write",
    "create",
    "mkdir",
    "rmdir",
    "unlink",
    "rename",
    "chmod",
    "truncate",
    "symlink",
    "link",
    "utime",
    "setxattr",
    "killflag",
]
components = names.filter(
    lambda n: n not in ("", ".", "..") and "/" not in n and "\x00" not in n and _fs_ok(n)
)


def _fs_ok(name: str) -> bool:
    try:
        os.fsencode(name)
    except UnicodeEncodeError:
        return False
    return True


def mount_op(root: Path, path: Path, op: str, data: bytes) -> None:
    """One request to the mounted tree; raises the OSError the kernel passes on."""
    if op == "stat":
        os.lstat(path)
    elif op == "listdir":
        os.listdir(path)
    elif op == "read":
        path.read_bytes()
    elif op == "open_write":
        os.close(os.open(path, os.O_WRONLY))
    elif op == "create":
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    elif op == "mkdir":
        os.mkdir(path)
    elif op == "rmdir":
        os.rmdir(path)
    elif op == "unlink":
        os.unlink(path)
    elif op == "rename":
        os.rename(path, path.with_name(path.name + "-renamed"))
    elif op == "chmod":
        os.chmod(path, 0o777)
    elif op == "truncate":
        os.truncate(path, 0)
    elif op == "symlink":
        os.symlink("/etc/passwd", path)
    elif op == "link":
        os.link(root / "killflag", path)
    elif op == "utime":
        os.utime(path, (0, 0))
    elif op == "setxattr":
        os.setxattr(path, "user.x", b"1")
    else:
        fd = os.open(root / "killflag", os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


MUTATIONS = set(MOUNT_OPS) - {"stat", "listdir", "read", "killflag"}
#: Requests to a mount are cheap: many more of them.
MOUNT_PROFILE = settings(PROFILE, max_examples=bound(300, 5000))


def test_mount_serves_hostile_requests(
    local_locator: str, toil_config: Any, tmp_path: Path
) -> None:
    """Random paths, opens and writes: the right errno each time, and the daemon serves on."""
    from tests.mountutil import Mount

    store = JobStore(local_locator)
    store.initialize(toil_config)
    with store.write_file_stream(basename="known") as (f, known):
        f.write(b"known content")
    job = JobDescription(requirements=REQUIREMENTS, jobName="known")
    store.assign_job_id(job)
    store.create_job(job)
    with store.write_shared_file_stream("rel-known") as f:
        f.write(b"shared")
    store.write_logs("a log message")
    keys = set(store.backend.list(""))
    flag = [False]
    prefixes = [
        "",
        "files/",
        "files/@anon/",
        "jobs/",
        f"jobs/{job.jobStoreID}/",
        "shared/",
        "logs/",
        "killflag/",
        f"files/{known}/",
    ]
    mount = Mount(local_locator, tmp_path / "mnt")
    root = mount.mountpoint
    tried = 0
    try:

        @MOUNT_PROFILE
        @given(
            prefix=st.sampled_from(prefixes),
            name=st.one_of(components, st.sampled_from(["known", "description.json", "log"])),
            op=st.sampled_from(MOUNT_OPS),
            data=st.one_of(st.sampled_from([b"YES\n", b"NO", b"YES  \n", b"yes"]), st.binary()),
        )
        def check(prefix: str, name: str, op: str, data: bytes) -> None:
            nonlocal tried
            tried += 1
            path = root / (prefix + name)
            try:
                mount_op(root, path, op, data)
            except OSError as e:
                assert e.errno != errno.EIO, f"{op} {prefix + name!r}: EIO"
                if op == "killflag":
                    assert e.errno == errno.EINVAL, f"killflag {data!r}: {e!r}"
                elif op in MUTATIONS:
                    assert e.errno in REFUSALS | {errno.ENAMETOOLONG, errno.EEXIST}, (op, e)
                else:
                    assert e.errno in {
                        errno.ENOENT,
                        errno.ENOTDIR,
                        errno.EISDIR,
                        errno.ENAMETOOLONG,
                    }, (op, e)
            else:
                assert op not in MUTATIONS, f"{op} {prefix + name!r} succeeded on a read-only tree"
                if op == "killflag" and data:  # opening it empty leaves the flag as it was
                    word = data.rstrip(b" \t\r\n")
                    assert word in (b"YES", b"NO"), f"killflag took {data!r}"
                    flag[0] = word == b"YES"
            assert mount.proc.poll() is None, "the daemon died"
            assert (root / "files" / known).read_bytes() == b"known content"
            assert (root / "killflag").read_bytes() == (b"YES\n" if flag[0] else b"NO\n")

        check()
    finally:
        mount.close()
    kill_flag = layout.shared_key("_toil_kill_flag")  # the one thing writable through a mount
    assert set(store.backend.list("")) - {kill_flag} == keys - {kill_flag}, "the mount wrote"
    record("badinput", "mount_requests", inputs=tried, bytes_lost=0)
    store.destroy()
