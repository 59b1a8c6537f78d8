"""Real FUSE mounts of real stores: ``jobstore mount`` in a subprocess, read with ``os``,
``bash`` and ``jq`` as a user would, on ``local:`` and on ``s3:`` (moto over HTTP).

Every mount is unmounted in teardown (``fusermount3 -u -z`` and the daemon
stopped), whatever the test did.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import resource
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from toil.common import Config

from jobstore import JobStore, layout
from jobstore.mount import daemon_lock_path, mount_device
from tests.mountutil import JOBSTORE, Mount, Populated, eventually, new_job, populate

#: How long a change may take to show (the kernel caches names for about a second).
LIVE = 2.5
VENV_BIN = os.path.dirname(sys.executable)


@pytest.fixture
def populated(store_locator: str, tmp_path: Path) -> Populated:
    (tmp_path / "work").mkdir()
    return populate(store_locator, tmp_path / "work")


@pytest.fixture
def mounted(populated: Populated, tmp_path: Path) -> Iterator[Mount]:
    m = Mount(populated.store.locator, tmp_path / "mnt")
    try:
        yield m
    finally:
        m.close()


def bash(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def store_snapshot(store: JobStore) -> dict[str, str]:
    """Every object of the store and a digest of its content."""
    return {
        k: hashlib.sha256(store.backend.get_bytes(k)).hexdigest() for k in store.backend.list("")
    }


# ==================================================================== the tree


def test_tree_is_the_store(populated: Populated, mounted: Mount) -> None:
    """Every path, content, mode and size is what the API says; nothing else is there."""
    store, mp = populated.store, mounted.mountpoint
    # The run view's generated files are checked below, and in tests/test_runview.py.
    expected: dict[str, bytes | None] = dict.fromkeys(("status.json", "graph.dot", "trace.tsv"))
    expected["killflag"] = b"NO\n"
    for job_id in store.job_ids():
        expected[f"jobs/{job_id}/description.pickle"] = store.load_job_bytes(job_id)
        expected[f"jobs/{job_id}/description.json"] = None
        expected[f"jobs/{job_id}/state"] = None
    expected[f"jobs/{populated.parent_id}/log"] = populated.files[populated.log_file_id][0]
    for file_id, (content, _) in populated.files.items():
        expected[f"files/{file_id}"] = content
    for name in store.shared_file_names():
        with store.read_shared_file_stream(name) as f:
            expected[f"shared/{name}"] = f.read()
    for key in store.log_keys():
        expected[key] = store.backend.get_bytes(key)
    assert len(list(store.log_keys())) == len(populated.logs)

    found: dict[str, os.stat_result] = {}
    for dirpath, _, filenames in os.walk(mp):
        st = os.stat(dirpath)
        assert stat.S_IMODE(st.st_mode) == 0o555 and st.st_uid == os.getuid(), dirpath
        for name in filenames:
            path = os.path.join(dirpath, name)
            found[os.path.relpath(path, mp)] = os.lstat(path)
    assert set(found) == set(expected)

    for rel, st in found.items():
        data = (mp / rel).read_bytes()
        assert st.st_size == len(data), rel
        assert stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid()
        if rel.endswith("description.json"):
            doc = json.loads(data)
            assert doc["id"] == rel.split("/")[1]
            assert doc["name"] == store.load_job(doc["id"]).jobName
            assert stat.S_IMODE(st.st_mode) == 0o444
            continue
        if rel.endswith("/state"):
            assert data in (b"waiting\n", b"ready\n"), rel  # nothing runs here
        elif rel == "status.json":
            assert json.loads(data)["counts"]["total"] == len(list(store.job_ids()))
        if expected[rel] is None:
            assert stat.S_IMODE(st.st_mode) == 0o444
            continue
        assert data == expected[rel], rel
        executable = rel.startswith("files/") and populated.files[rel[6:]][1]
        want = 0o644 if rel == "killflag" else 0o555 if executable else 0o444
        assert stat.S_IMODE(st.st_mode) == want, rel

    names = bash(f"jq -r .name {mp}/jobs/*/description.json", cwd=mp)
    assert names.returncode == 0, names.stderr
    job_names = sorted(store.load_job(j).jobName for j in store.job_ids())
    assert sorted(names.stdout.split()) == job_names
    listing = bash("ls -l jobs files shared logs && cat shared/pid.log", cwd=mp)
    assert listing.returncode == 0 and listing.stdout.endswith("4242")
    # Names that are no key (S3 keys are UTF-8) do not exist, rather than fail.
    for missing in (b"logs/\xff", b"files/\xff", b"shared/pid.log\xfe", b"jobs/\xff", b"\xff"):
        with pytest.raises(FileNotFoundError):
            os.stat(os.fsencode(mp) + b"/" + missing)


def test_writes_fail_and_change_nothing(populated: Populated, mounted: Mount) -> None:
    mp = mounted.mountpoint
    store = populated.store
    before = store_snapshot(store)
    job = populated.job_ids[0]
    file_id = next(iter(populated.files))
    target = mp / "shared" / "pid.log"
    attempts: dict[str, Callable[[], object]] = {
        "open for writing": lambda: open(target, "r+b"),  # noqa: SIM115
        "append": lambda: open(mp / "files" / file_id, "ab"),  # noqa: SIM115
        "create": lambda: open(mp / "shared" / "new", "xb"),  # noqa: SIM115
        "create at the root": lambda: open(mp / "new", "wb"),  # noqa: SIM115
        "truncate": lambda: os.truncate(target, 0),
        "mkdir": lambda: os.mkdir(mp / "jobs" / "new"),
        "rmdir": lambda: os.rmdir(mp / "jobs" / job),
        "unlink": lambda: os.unlink(mp / "jobs" / job / "description.pickle"),
        "unlink killflag": lambda: os.unlink(mp / "killflag"),
        "rename": lambda: os.rename(target, mp / "shared" / "moved"),
        "rename a job": lambda: os.rename(mp / "jobs" / job, mp / "jobs" / "other"),
        "symlink": lambda: os.symlink("pid.log", mp / "shared" / "link"),
        "hard link": lambda: os.link(target, mp / "shared" / "hard"),
        "chmod": lambda: os.chmod(target, 0o777),
        "chmod killflag": lambda: os.chmod(mp / "killflag", 0o600),
        "chmod dir": lambda: os.chmod(mp / "jobs", 0o777),
        "chown": lambda: os.chown(target, 1, 1),
        "utime": lambda: os.utime(target, (0, 0)),
        "mknod": lambda: os.mknod(mp / "shared" / "fifo", stat.S_IFIFO | 0o600),
        "setxattr": lambda: os.setxattr(target, "user.x", b"1"),
    }
    for what, attempt in attempts.items():
        with pytest.raises(OSError) as e:
            attempt()
        assert e.value.errno == errno.EROFS, what
    shell = bash("echo x > shared/pid.log; echo y >> jobs/*/description.json; rm -rf files", cwd=mp)
    assert shell.returncode != 0 and "Read-only file system" in shell.stderr
    assert store_snapshot(store) == before


def test_killflag_words(populated: Populated, mounted: Mount) -> None:
    store, mp = populated.store, mounted.mountpoint

    def flag() -> str:
        return (mp / "killflag").read_text()

    assert flag() == "NO\n" and not store.read_kill_flag()
    for script, kill in [
        ("echo YES > killflag", True),
        ("echo NO > killflag", False),
        ("printf 'YES  \\n' > killflag", True),
        ("printf NO > killflag", False),
    ]:
        done = bash(script, cwd=mp)
        assert done.returncode == 0, (script, done.stderr)
        assert store.read_kill_flag() is kill and flag() == ("YES\n" if kill else "NO\n")
    bash("echo YES > killflag", cwd=mp)
    for bad in [
        "echo yes > killflag",
        "echo MAYBE > killflag",
        "echo YESNO > killflag",
        "printf ' YES' > killflag",
        "printf YE > killflag",
    ]:
        done = bash(bad, cwd=mp)
        assert done.returncode != 0 and "Invalid argument" in done.stderr, bad
        assert store.read_kill_flag() and flag() == "YES\n", bad
    assert bash(": > killflag", cwd=mp).returncode == 0
    assert store.read_kill_flag()
    with open(mp / "killflag", "r+b", buffering=0) as f:
        assert f.write(b"NO\n") == 3
        f.seek(0)
        assert f.read() == b"NO\n"
    assert not store.read_kill_flag()


# ======================================================================== live


def test_changes_show_within_a_second(populated: Populated, mounted: Mount, tmp_path: Path) -> None:
    store, mp = populated.store, mounted.mountpoint
    assert (mp / "shared" / "pid.log").read_bytes() == b"4242"
    os.listdir(mp / "jobs")
    os.listdir(mp / "logs")

    job = new_job(store, "latecomer")
    store.create_job(job)
    seen = eventually(lambda: str(job.jobStoreID) in os.listdir(mp / "jobs"), LIVE)
    assert seen < LIVE

    source = tmp_path / "late.txt"
    source.write_bytes(b"late file\n")
    file_id = store.write_file(str(source))
    eventually(lambda: (mp / "files" / file_id).exists(), LIVE)
    assert (mp / "files" / file_id).read_bytes() == b"late file\n"

    logs_before = set(os.listdir(mp / "logs"))
    store.write_logs("late message")
    eventually(lambda: len(set(os.listdir(mp / "logs")) - logs_before) == 1, LIVE)

    # Content that changes in place is current at once, size change or not.
    with store.write_shared_file_stream("pid.log") as f:
        f.write(b"123456789")
    assert (mp / "shared" / "pid.log").read_bytes() == b"123456789"
    job.jobName = "renamed"
    store.update_job(job)
    doc = json.loads((mp / "jobs" / str(job.jobStoreID) / "description.json").read_bytes())
    assert doc["name"] == "renamed"
    source.write_bytes(b"a longer replacement of the late file\n")
    store.update_file(file_id, str(source))
    assert (mp / "files" / file_id).read_bytes() == source.read_bytes()

    store.delete_job(str(job.jobStoreID))
    assert str(job.jobStoreID) not in os.listdir(mp / "jobs")
    eventually(lambda: not (mp / "jobs" / str(job.jobStoreID)).exists(), LIVE)


def test_timeout_option(local_locator: str, tmp_path: Path) -> None:
    """-o timeout=0: the kernel caches no attribute, so a new size shows at once."""
    store = JobStore(local_locator)
    store.initialize(Config())
    m = Mount(local_locator, tmp_path / "mnt", "-o", "timeout=0")
    try:
        for content in (b"1", b"12345", b"123"):
            with store.write_shared_file_stream("pid.log") as f:
                f.write(content)
            assert os.stat(m / "shared" / "pid.log").st_size == len(content)
    finally:
        m.close()


def test_same_size_rewrite_within_a_second_shows_on_s3(s3_locator: str, tmp_path: Path) -> None:
    """S3 times are whole seconds: the page cache must be keyed by ETag, not size and time."""
    store = JobStore(s3_locator)
    store.initialize(Config())
    source = tmp_path / "v"
    source.write_bytes(b"A" * 5000)
    file_id = store.write_file(str(source))
    key = layout.file_key(file_id)
    m = Mount(s3_locator, tmp_path / "mnt")
    try:
        path = m / "files" / file_id
        # Until three rewrites fell within one S3 second (a loaded machine misses some).
        rewrites = 0
        letters = b"ACEGIKMOQSUWY"
        for old, new in zip(letters, letters[1:] + b"Z", strict=True):
            if rewrites >= 3:
                break
            source.write_bytes(bytes([old]) * 5000)
            store.update_file(file_id, str(source))
            before = store.backend.stat(key)
            assert path.read_bytes() == bytes([old]) * 5000  # now in the page cache
            source.write_bytes(bytes([new]) * 5000)
            store.update_file(file_id, str(source))
            after = store.backend.stat(key)
            rewrites += (after.size, after.mtime) == (before.size, before.mtime)
            time.sleep(1.5)  # the kernel's attributes expired: the next open is a fresh look
            assert path.read_bytes() == bytes([new]) * 5000
        assert rewrites >= 3, "too few rewrites within one second to prove anything"
    finally:
        m.close()


def test_held_open_file_keeps_its_version_and_new_opens_read_the_new_one(
    populated: Populated, mounted: Mount, tmp_path: Path
) -> None:
    """A handle reading through the page cache pins the attributes the kernel holds (they
    size its reads: the new, shorter size would cut it); an open meanwhile reads the new
    version whole all the same."""
    store = populated.store
    source = tmp_path / "shrinks"
    old, new = b"the longer, older version\n" * 5000, b"short\n" * 1000
    source.write_bytes(old)
    file_id = store.write_file(str(source))
    path = mounted / "files" / file_id
    with open(path, "rb", buffering=0) as held:  # each read a read(2)
        assert held.read(100) == old[:100]
        source.write_bytes(new)
        store.update_file(file_id, str(source))
        time.sleep(LIVE)
        assert path.read_bytes() == new  # a new open: the current version, whole
        assert held.read() == old[100:]  # not cut at the new size
        assert os.stat(path).st_size == len(old)  # while the old one is open
    time.sleep(LIVE)
    assert os.stat(path).st_size == len(new)
    assert path.read_bytes() == new


# ==================================================================== failures


def test_store_destroyed_under_the_mount_is_enoent(populated: Populated, mounted: Mount) -> None:
    """Not EIO: the objects are gone, and the kill flag brings no store back."""
    mp = mounted.mountpoint
    file_id = next(iter(populated.files))
    job = populated.job_ids[0]
    paths = [
        mp / "files" / file_id,
        mp / "shared" / "pid.log",
        mp / "jobs" / job / "description.json",
    ]
    for p in paths:
        p.read_bytes()
    populated.store.destroy()
    time.sleep(LIVE)
    for p in paths:
        done = subprocess.run(["cat", str(p)], capture_output=True, text=True)
        assert done.returncode == 1 and "No such file or directory" in done.stderr
        with pytest.raises(FileNotFoundError):
            p.read_bytes()
    done = bash("echo YES > killflag", mp)
    assert done.returncode == 1 and "No such file or directory" in done.stderr, done.stderr
    assert list(populated.store.backend.list("")) == []
    assert mounted.proc.poll() is None and "answering EIO" not in mounted.log_text()


def test_out_of_descriptors_in_the_daemon_is_emfile(local_locator: str, tmp_path: Path) -> None:
    """The daemon out of file descriptors: clients see EMFILE (and can close some), not EIO.

    The daemon takes all the hard limit allows: a soft limit of 16 under a hard one
    of 64 gives the same as 64."""
    (tmp_path / "work").mkdir()
    populated = populate(local_locator, tmp_path / "work")
    file_id, (content, _) = next(iter(populated.files.items()))

    def few_descriptors(soft: int) -> Callable[[], None]:
        return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, 64))

    m = Mount(local_locator, tmp_path / "mnt", preexec_fn=few_descriptors(16))
    opened: list[int] = []
    try:
        with pytest.raises(OSError) as e:
            for _ in range(200):
                opened.append(os.open(m / "files" / file_id, os.O_RDONLY))
        assert e.value.errno == errno.EMFILE and 10 < len(opened) < 64
        for fd in opened:
            os.close(fd)
        opened = []
        time.sleep(0.5)  # releases reach the daemon after close() returns
        assert (m / "files" / file_id).read_bytes() == content
        assert m.proc.poll() is None and "answering EIO" not in m.log_text()
    finally:
        for fd in opened:
            os.close(fd)
        m.close()


def test_store_errors_are_eio_and_the_daemon_keeps_serving(
    local_locator: str, tmp_path: Path
) -> None:
    (tmp_path / "work").mkdir()
    populated = populate(local_locator, tmp_path / "work")
    victim = populated.job_ids[0]
    populated.store.backend.put_bytes(layout.job_key(victim), b"\x80\x05 corrupt pickle")
    m = Mount(local_locator, tmp_path / "mnt")
    try:
        for _ in range(2):
            with pytest.raises(OSError) as e:
                (m / f"jobs/{victim}/description.json").read_bytes()
            assert e.value.errno == errno.EIO
        assert (m / f"jobs/{victim}/description.pickle").read_bytes().endswith(b"corrupt pickle")
        assert (m / "shared/pid.log").read_bytes() == b"4242"
        assert len(os.listdir(m / "jobs")) == len(populated.job_ids)
        assert m.proc.poll() is None
        # A corrupt job is named once in the log (key and job), however often it is read.
        assert m.log_text().count(f"corrupt job {victim} at key {layout.job_key(victim)!r}") == 1
    finally:
        m.close()


def test_bad_arguments_give_one_line_and_no_mount(local_locator: str, tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    populate(local_locator, tmp_path / "work")
    mp = tmp_path / "mnt"
    mp.mkdir()
    (tmp_path / "file").touch()
    cases = [
        (["nope:/x", str(mp)], "unknown jobstore scheme"),
        ([f"local:{tmp_path}/no-store", str(mp)], "no job store at"),
        ([local_locator, str(tmp_path / "missing")], "does not exist"),
        ([local_locator, str(tmp_path / "file")], "is not a directory"),
        ([local_locator, str(mp), "-o", "bogus"], "unknown mount option"),
        (
            [local_locator, str(mp), "--log-file", str(tmp_path / "file" / "x.log")],
            "cannot open the log file",
        ),
    ]
    for args, reason in cases:
        for mode in ([], ["--foreground"]):
            done = subprocess.run(
                [JOBSTORE, "mount", *args, *mode], capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 1, (args, mode, done.stderr)
            assert done.stderr.count("\n") == 1 and reason in done.stderr, done.stderr
            assert done.stderr.startswith("jobstore mount: ")
            assert mount_device(str(mp)) is None
    done = subprocess.run([JOBSTORE, "umount", str(mp)], capture_output=True, text=True)
    assert done.returncode == 1 and "is not a jobstore mount" in done.stderr


def test_missing_s3_store(s3_locator: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [JOBSTORE, "mount", s3_locator, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "no job store at s3:" in done.stderr
    assert mount_device(str(tmp_path)) is None


# ============================================================ daemon lifecycle


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_unmount(local_locator: str, tmp_path: Path, signum: int) -> None:
    JobStore(local_locator).initialize(Config())
    m = Mount(local_locator, tmp_path / "mnt")
    try:
        assert (m / "killflag").read_bytes() == b"NO\n"
        # SIGUSR1 only writes every thread's stack to the log, for a daemon that hangs.
        m.proc.send_signal(signal.SIGUSR1)
        eventually(lambda: "most recent call first" in m.log_text(), LIVE)
        assert (m / "killflag").read_bytes() == b"NO\n"
        m.proc.send_signal(signum)
        assert m.proc.wait(15) == 0
        assert mount_device(str(m.mountpoint)) is None
        assert "unmounted" in m.log_text()
        assert not daemon_lock_path(str(m.mountpoint)).exists()
    finally:
        m.close()


def test_a_signal_during_shutdown_changes_nothing(local_locator: str, tmp_path: Path) -> None:
    """Unmounted from outside, then told to stop while shutting down: still a clean exit."""
    JobStore(local_locator).initialize(Config())
    for _ in range(3):
        m = Mount(local_locator, tmp_path / "mnt")
        try:
            subprocess.run(["fusermount3", "-u", "-z", str(m.mountpoint)], check=True)
            m.proc.send_signal(signal.SIGTERM)
            assert m.proc.wait(15) == 0
            assert not daemon_lock_path(str(m.mountpoint)).exists()
        finally:
            m.close()


def test_daemon_mode_and_umount(tmp_path: Path) -> None:
    """Without --foreground the command returns once mounted; umount waits for the daemon.
    Relative paths mean what they mean where the command ran (the daemon works from /)."""
    JobStore(f"local:{tmp_path}/store").initialize(Config())
    mp = tmp_path / "mnt"
    mp.mkdir()
    log = tmp_path / "daemon.log"
    try:
        done = subprocess.run(
            [JOBSTORE, "mount", "local:store", "mnt", "--log-file", "daemon.log"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert done.returncode == 0 and done.stderr == "", done.stderr
        assert mount_device(str(mp)) is not None
        assert (mp / "killflag").read_bytes() == b"NO\n"
        pid = int(daemon_lock_path(str(mp)).read_text())
        assert "mounted" in log.read_text()
        again = subprocess.run(
            [JOBSTORE, "mount", "local:store", "mnt"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert again.returncode == 1 and "another jobstore daemon serves" in again.stderr
        assert (mp / "killflag").read_bytes() == b"NO\n"
        done = subprocess.run(
            [JOBSTORE, "umount", str(mp)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert mount_device(str(mp)) is None
        assert _gone(pid)
        assert not daemon_lock_path(str(mp)).exists()
    finally:
        if mount_device(str(mp)) is not None:
            subprocess.run(["fusermount3", "-u", "-z", str(mp)], check=False)


def test_a_dead_mount_says_what_to_do_and_umount_clears_it(tmp_path: Path) -> None:
    """A daemon that died leaves "Transport endpoint is not connected" behind: mounting
    again names the fix, and ``jobstore umount`` is that fix."""
    locator = f"local:{tmp_path}/store"
    JobStore(locator).initialize(Config())
    mp = tmp_path / "mnt"
    mp.mkdir()

    def jobstore(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([JOBSTORE, *args], capture_output=True, text=True, timeout=60)

    try:
        assert jobstore("mount", locator, str(mp)).returncode == 0
        os.kill(int(daemon_lock_path(str(mp)).read_text()), signal.SIGKILL)
        eventually(lambda: _errno(mp) == errno.ENOTCONN, LIVE)

        again = jobstore("mount", locator, str(mp))
        assert again.returncode == 1 and again.stderr.count("\n") == 1, again.stderr
        assert "dead mount" in again.stderr
        assert f"run `jobstore umount {mp}` (or `fusermount3 -u {mp}`)" in again.stderr

        done = jobstore("umount", str(mp))
        assert done.returncode == 0, done.stderr
        assert done.stderr == f"jobstore umount: {mp}: its daemon had died; unmounted\n"
        assert mount_device(str(mp)) is None and not daemon_lock_path(str(mp)).exists()
        assert jobstore("mount", locator, str(mp)).returncode == 0  # usable again
        assert jobstore("umount", str(mp)).stderr == ""
    finally:
        if mount_device(str(mp)) is not None:
            subprocess.run(["fusermount3", "-u", "-z", str(mp)], check=False)


def _errno(path: Path) -> int:
    try:
        os.stat(path)
    except OSError as e:
        return e.errno or 0
    return 0


def test_a_mountpoint_that_is_not_empty_is_mounted_with_a_warning(tmp_path: Path) -> None:
    locator = f"local:{tmp_path}/store"
    JobStore(locator).initialize(Config())
    mp = tmp_path / "mnt"
    mp.mkdir()
    (mp / "hidden").write_text("x")
    try:
        done = subprocess.run(
            [JOBSTORE, "mount", locator, str(mp)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0
        assert done.stderr == (
            f"jobstore mount: warning: {mp} is not empty; "
            "what is in it stays hidden until unmounted\n"
        )
        assert not (mp / "hidden").exists()
    finally:
        subprocess.run([JOBSTORE, "umount", str(mp)], check=False)
    assert (mp / "hidden").read_text() == "x"


def _gone(pid: int) -> bool:
    """Whether the process has exited (a zombie waiting for init to reap it counts)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _run_as_nobody(*cmd: str) -> subprocess.CompletedProcess[str]:
    def drop() -> None:
        os.setgid(65534)
        os.setuid(65534)

    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, preexec_fn=drop)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as another user")
def test_private_unless_allow_other(local_locator: str, tmp_path: Path) -> None:
    JobStore(local_locator).initialize(Config())
    with tempfile.TemporaryDirectory(dir="/tmp") as base:
        os.chmod(base, 0o755)
        for options, readable in [((), False), (("-o", "allow_other"), True)]:
            m = Mount(local_locator, Path(base) / "mnt", *options)
            try:
                done = _run_as_nobody("cat", str(m / "killflag"))
                assert (done.returncode == 0) is readable, done.stderr
                if readable:
                    assert done.stdout == "NO\n"
                    # Modes hold for other users: nobody may not write the kill flag.
                    done = _run_as_nobody("bash", "-c", f"echo YES > {m / 'killflag'}")
                    assert done.returncode != 0 and "Permission denied" in done.stderr
            finally:
                m.close()


# ================================================== a live Toil run, stopped

SLEEPER = """
import os
import sys
import time

from toil.common import Toil
from toil.job import Job


def sleeper(job, marker):
    with open(marker + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(marker + ".tmp", marker)
    time.sleep(600)


if __name__ == "__main__":
    parser = Job.Runner.getDefaultArgumentParser()
    parser.add_argument("marker")
    options = parser.parse_args()
    with Toil(options) as toil:
        toil.start(Job.wrapJobFn(sleeper, options.marker))
"""


def test_killflag_stops_a_running_workflow(local_locator: str, tmp_path: Path) -> None:
    """`echo YES > killflag` on the mount stops a live leader and its worker, like `toil kill`."""
    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER)
    marker = tmp_path / "worker.pid"
    env = {**os.environ, "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", "")}
    leader = subprocess.Popen(
        [
            sys.executable,
            str(script),
            local_locator,
            str(marker),
            "--batchSystem=single_machine",
            "--maxCores=1",
            "--logLevel=INFO",
            f"--workDir={tmp_path}",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    m = None
    try:
        eventually(lambda: marker.exists() or leader.poll() is not None, timeout=120)
        assert leader.poll() is None, leader.communicate()[0]
        worker = int(marker.read_text())
        m = Mount(local_locator, tmp_path / "mnt")
        assert (m / "killflag").read_text() == "NO\n"
        jobs = os.listdir(m / "jobs")
        assert any(
            json.loads((m / "jobs" / j / "description.json").read_bytes())["name"] == "sleeper"
            for j in jobs
        )
        killed_at = time.monotonic()
        done = bash(f"echo YES > {m / 'killflag'}", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        output = leader.communicate(timeout=60)[0]
        took = time.monotonic() - killed_at
        assert took < 15, f"the leader took {took:.1f} s to stop"
        # What Toil reports for a kill: the leader's KeyboardInterrupt, so death by SIGINT.
        assert leader.returncode == -signal.SIGINT, output[-3000:]
        assert "Received kill via job store" in output
        assert "KeyboardInterrupt: killed via job store" in output
        eventually(lambda: _gone(worker), timeout=10)
    finally:
        if leader.poll() is None:
            leader.kill()
            leader.communicate()
        if m is not None:
            m.close()
