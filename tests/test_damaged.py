"""Damaged stores, on every backend: stray objects are skipped, corrupt jobs are named, fsck.

Damage is planted straight through the backend, as a bug, a crash or a hand in
the store would leave it. SPEC "One leader, whole reads, damaged stores": a
stray object never stops a restart (``clean``), ``toil status`` (``jobs``,
``load_job``) or the mount (the view's listings and lookups), and is skipped
with a warning naming its key, once per process; a corrupt job is an error
naming its key and job; ``jobstore fsck`` lists every problem and ``--repair``
moves bad objects aside without deleting any.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from toil.common import Config
from toil.job import JobDescription
from toil.jobStores.abstractJobStore import NoSuchFileException, NoSuchJobException

from jobstore import JobStore, layout
from jobstore.mount import view as v
from jobstore.mount.ours import StoreSource
from jobstore.mount.source import Corrupt
from jobstore.s3 import S3Backend
from jobstore.store import CorruptJobError, CorruptLogError
from tests.test_store import WEIRD_BASENAMES, new_job
from tests.test_view import list_all, read_all

JOBSTORE = os.path.join(os.path.dirname(sys.executable), "jobstore")


@pytest.fixture
def store(store_locator: str, toil_config: Config) -> Iterator[JobStore]:
    s = JobStore(store_locator)
    s.initialize(toil_config)
    yield s
    s.destroy()


def is_local(store: JobStore) -> bool:
    return store.locator.startswith("local:")


@dataclass
class Planted:
    """A small healthy store (root job with a cleanup file, shared files, logs) and strays."""

    root: JobDescription
    cleanup_file: str
    logs: int
    stray: dict[str, bytes] = field(default_factory=dict)

    def plant(self, store: JobStore, key: str, data: bytes = b"stray") -> None:
        store.backend.put_bytes(key, data)
        self.stray[key] = data


def healthy(store: JobStore, tmp_path: Path) -> Planted:
    root = new_job(store, "root")
    store.set_root_job(root.jobStoreID)
    path = tmp_path / "cleanup.txt"
    path.write_bytes(b"cleanup")
    cleanup_file = store.write_file(str(path), root.jobStoreID, cleanup=True)
    store.write_logs(json.dumps("message one"))  # Toil's leader reads messages as JSON
    store.write_logs(json.dumps("message two"))
    return Planted(root, cleanup_file, 2)


def plant_strays(store: JobStore, planted: Planted) -> None:
    """A stray at every level of every prefix the store lists."""
    other = layout.new_job_id("other")
    wrong_shard = "000" if layout.shard(other) != "000" else "001"
    good_pickle = pickle.dumps(planted.root)
    for key, data in [
        ("jobs/stray", b"x"),  # a file where a shard directory belongs
        (f"jobs/{wrong_shard}/{other}", good_pickle),  # a job ID in the wrong shard
        (f"jobs/{layout.shard(other)}/{other}/extra", b"x"),  # a directory where a job belongs
        (f"jobs/{layout.shard(other)}/not a job id!", b"x"),
        ("files/@job/stray", b"x"),  # the one that crashed every --restart
        (f"files/@job/{layout.shard(other)}/{other}", b"x"),  # a job's directory as a file
        (f"files/@job/{wrong_shard}/{other}/{uuid.uuid4().hex}/f", b"x"),
        ("shared/not a name", b"x"),
        ("shared/dir/inside", b"x"),  # a directory where a shared file belongs
        ("logs/stray", b"x"),
        ("logs/dir/inside", b"x"),
        ("meta/unknown", b"x"),
        ("unknown-top-level", b"x"),
    ]:
        planted.plant(store, key, data)
    if not is_local(store):  # keys no file system can hold
        for key in [
            "jobs//empty-shard",
            f"jobs/{layout.shard(other)}/",
            "files/@job//x",
            "files/a//b",
            "files/./dot",
            "shared/",
            "logs/odd ?&=+%ü",
            "/leading-slash",
        ]:
            planted.plant(store, key)


def test_stray_objects_are_skipped_by_every_listing(
    store: JobStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    planted = healthy(store, tmp_path)
    plant_strays(store, planted)
    caplog.set_level(logging.WARNING, logger="jobstore")
    other = JobStore(store.locator)  # a second process: restart, toil status
    other.resume()
    root_id = planted.root.jobStoreID

    for _ in range(2):
        assert list(other.job_ids()) == [root_id]
        assert [j.jobStoreID for j in other.jobs()] == [root_id]
        assert sorted(other.shared_file_names()) == ["config.pickle", "rootJobStoreID"]
        assert len(list(other.log_keys())) == planted.logs
    messages: list[bytes] = []
    assert other.read_logs(lambda f: messages.append(f.read())) == planted.logs
    assert messages == [b'"message one"', b'"message two"']

    # What a restart does: Toil's clean over jobs(), then our orphan and debris clean-up.
    cache = {j.jobStoreID: j for j in other.jobs()}
    assert other.clean(cache).jobStoreID == root_id
    assert other.file_exists(planted.cleanup_file)
    for key, data in planted.stray.items():  # skipped, so left alone
        assert store.backend.get_bytes(key) == data, key

    # Every stray key under a listed prefix is named in a warning, once per key.
    warned = [r.getMessage() for r in caplog.records if "stray object" in r.getMessage()]
    for key in planted.stray:
        if key.startswith(("jobs/", "files/@job/", "shared/", "logs/")):
            assert sum(repr(key) in m for m in warned) == 1, (key, warned)


def test_stray_objects_never_reach_the_view(store: JobStore, tmp_path: Path) -> None:
    planted = healthy(store, tmp_path)
    plant_strays(store, planted)
    view = v.View(StoreSource(store))
    root_id = planted.root.jobStoreID

    def names(path: v.Path) -> list[str]:
        found = [e.name for e in list_all(view, path)]
        assert len(found) == len(set(found)), f"duplicate names in {path}: {found}"
        for name in found:  # everything listed can be looked up
            view.getattr((*path, name))
        return found

    assert names(("jobs",)) == [root_id]
    assert sorted(names(("shared",))) == ["config.pickle", "rootJobStoreID"]
    assert len(names(("logs",))) == planted.logs
    for top in ("files",):
        for name in names((top,)):
            assert name not in ("", ".", "..")
    for path in [("jobs", "stray"), ("shared", "not a name"), ("shared", "dir"), ("logs", "stray")]:
        with pytest.raises(v.NoEntry):
            view.getattr(path)
    assert read_all(view, ("jobs", root_id, "description.pickle")) == store.load_job_bytes(root_id)


def test_view_file_and_directory_of_one_name(s3_locator: str, toil_config: Config) -> None:
    """S3 holds ``files/x`` and ``files/x/y`` at once: the view shows one ``x``, the file."""
    store = JobStore(s3_locator)
    store.initialize(toil_config)
    store.backend.put_bytes("files/x", b"file")
    store.backend.put_bytes("files/x/y", b"below")
    view = v.View(StoreSource(store))
    entries = list_all(view, ("files",))
    assert [(e.name, e.attr.is_dir) for e in entries] == [("x", False)]
    assert read_all(view, ("files", "x")) == b"file"


def corrupt_payloads(store: JobStore, job: JobDescription) -> dict[str, bytes]:
    whole = store.load_job_bytes(job.jobStoreID)
    someone_else = JobDescription(
        requirements={"memory": 1, "disk": 1, "cores": 1, "preemptible": False}, jobName="x"
    )
    store.assign_job_id(someone_else)
    return {
        "not a pickle": b"this is not a pickle",
        "truncated": whole[: len(whole) // 2],
        "empty": b"",
        "wrong type": pickle.dumps(["a", "list"]),
        "another job": pickle.dumps(someone_else),
    }


def test_corrupt_job_is_an_error_naming_key_and_job(store: JobStore) -> None:
    job = new_job(store, "victim")
    key = layout.job_key(job.jobStoreID)
    view = v.View(StoreSource(store))
    for what, data in corrupt_payloads(store, job).items():
        store.backend.put_bytes(key, data)
        for call in (lambda: store.load_job(job.jobStoreID), lambda: list(store.jobs())):
            with pytest.raises(CorruptJobError) as e:
                call()
            message = str(e.value)
            assert key in message and job.jobStoreID in message, (what, message)
            assert "\n" not in message
            assert not isinstance(e.value, NoSuchJobException)
            assert e.value.key == key and e.value.job_id == job.jobStoreID
        # The mount: the job is listed, its pickle reads, its JSON is an I/O error.
        assert [e.name for e in list_all(view, ("jobs",))] == [job.jobStoreID]
        # No state: the run view skips (with a warning) a job whose description does not load.
        assert {e.name for e in list_all(view, ("jobs", job.jobStoreID))} == {
            "attempts",
            "description.json",
            "description.pickle",
        }
        assert read_all(view, ("jobs", job.jobStoreID, "description.pickle")) == data
        with pytest.raises(Corrupt):
            view.open(("jobs", job.jobStoreID, "description.json"))


def test_corrupt_log_message_is_an_error_naming_its_key(store: JobStore) -> None:
    """Toil's leader reads each message as JSON: one that is not stops it by name, once fixed
    (fsck --repair) reading goes on, and no message is delivered twice or skipped."""
    store.write_logs(json.dumps(1))
    bad = layout.new_log_key()
    store.backend.put_bytes(bad, b"{truncated")
    store.write_logs(json.dumps(2))
    got: list[object] = []

    def toil_like(f: Any) -> None:
        got.append(json.loads(f.read()))

    for _ in range(2):
        with pytest.raises(CorruptLogError) as e:
            store.read_logs(toil_like)
        assert bad in str(e.value) and "JSONDecodeError" in str(e.value)
        assert got == [1]
    assert fsck(store.locator, "--repair").returncode == 0
    assert store.read_logs(toil_like) == 1
    assert got == [1, 2]


def test_damaged_log_cursor_rereads_instead_of_failing(store: JobStore) -> None:
    store.write_logs("once")
    assert store.read_logs(lambda f: None) == 1
    store.backend.put_bytes(layout.LOG_CURSOR, b"{not json")
    assert store.read_logs(lambda f: None) == 1  # read again: never lost, never a crash
    assert store.read_logs(lambda f: None) == 0  # and the cursor is whole again


def _plant_directory(path: Path, data: bytes) -> None:
    path.mkdir(parents=True)
    (path / path.name).write_bytes(data)


def _plant_fifo(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("plant", [_plant_directory, _plant_fifo], ids=["directory", "fifo"])
def test_local_non_files_where_objects_belong(
    local_locator: str, toil_config: Config, plant: Callable[[Path, bytes], None]
) -> None:
    """A directory (holding a job's pickle) or a FIFO at a job's key and a shared file's name.

    Neither is an object: never listed, loaded or cleaned away, and never a
    hang (an open of a FIFO for reading waits for a writer forever).
    """
    store = JobStore(local_locator)
    store.initialize(toil_config)
    root = Path(local_locator.removeprefix("local:"))
    job = new_job(store)
    store.set_root_job(job.jobStoreID)
    planted = root / layout.job_key("odd-job")
    plant(planted, store.load_job_bytes(job.jobStoreID))
    plant(root / "shared" / "odd", b"x")
    assert list(store.job_ids()) == [job.jobStoreID]
    assert [j.jobStoreID for j in store.jobs()] == [job.jobStoreID]
    assert not store.job_exists("odd-job")
    with pytest.raises(NoSuchJobException):
        store.load_job("odd-job")
    with pytest.raises(NoSuchFileException), store.read_shared_file_stream("odd"):
        pass
    assert sorted(store.shared_file_names()) == ["config.pickle", "rootJobStoreID"]
    assert store.clean().jobStoreID == job.jobStoreID
    assert os.path.lexists(planted)


# ================================================================= fsck


def fsck(locator: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [JOBSTORE, "fsck", locator, *args], capture_output=True, text=True, timeout=120
    )


def every_object(store: JobStore) -> dict[str, bytes]:
    return {k: store.backend.get_bytes(k) for k in store.backend.list("")}


def plant_every_problem(store: JobStore, tmp_path: Path) -> dict[str, str]:
    """One problem of each kind fsck knows, but config; returns key -> kind."""
    planted = healthy(store, tmp_path)
    b = store.backend
    problems: dict[str, str] = {}
    b.put_bytes("files/@job/stray", b"stray")
    problems["files/@job/stray"] = "stray"
    wrong = f"jobs/{'000' if layout.shard('x-1') != '000' else '001'}/x-1"
    b.put_bytes(wrong, b"stray")
    problems[wrong] = "stray"
    victim = new_job(store, "victim")
    store.backend.put_bytes(layout.job_key(victim.jobStoreID), b"corrupt")
    problems[layout.job_key(victim.jobStoreID)] = "corrupt"
    # The victim's cleanup files are orphans once its description does not load.
    path = tmp_path / "v.txt"
    path.write_bytes(b"victim's")
    problems[layout.file_key(store.write_file(str(path), victim.jobStoreID, cleanup=True))] = (
        "orphan"
    )
    gone = new_job(store, "gone")
    orphan = store.write_file(str(path), gone.jobStoreID, cleanup=True)
    b.delete(layout.job_key(gone.jobStoreID))  # killed between the two deletes of delete_job
    problems[layout.file_key(orphan)] = "orphan"
    # Hints: a file without claim, a claim without file, a deleted file still there.
    unclaimed = store.write_file(str(path), hints=["unclaimed"])
    b.delete(layout.HINTS + unclaimed)
    problems[layout.file_key(unclaimed)] = "hint"
    b.put_if_absent(layout.HINTS + "dangling/files/f")
    problems[layout.HINTS + "dangling/files/f"] = "hint"
    undead = store.write_file(str(path), hints=["undead"])
    b.put_if_absent(layout.HINTS + layout.tombstone_path(undead))
    problems[layout.file_key(undead)] = "hint"
    b.put_bytes(layout.LOG_CURSOR, b"[]")
    problems[layout.LOG_CURSOR] = "cursor"
    junk_log = layout.new_log_key()
    b.put_bytes(junk_log, b"\xff not JSON")
    problems[junk_log] = "corrupt"
    if not is_local(store):  # keys no file system can hold
        for key in ("jobs/", "files/a//b", "/leading-slash", "logs/odd ?&=+%ü", "shared/./x"):
            b.put_bytes(key, b"odd")
            problems[key] = "stray"
    # Debris: a temporary of a killed writer (local), an unfinished upload (s3).
    if is_local(store):
        tmp = Path(store.locator.removeprefix("local:")) / ".tmp" / "killed-writer"
        tmp.write_bytes(b"half")
        os.utime(tmp, (time.time() - 3600, time.time() - 3600))
        problems[".tmp/killed-writer"] = "debris"
    else:
        s3 = store.backend
        assert isinstance(s3, S3Backend)
        s3.client.create_multipart_upload(Bucket=s3.bucket, Key=s3.prefix + "files/@anon/half")
        problems["files/@anon/half"] = "debris"
    assert store.file_exists(planted.cleanup_file)
    return problems


def test_fsck_finds_every_problem_and_repair_moves_never_deletes(
    store: JobStore, tmp_path: Path
) -> None:
    assert fsck(store.locator).returncode == 0
    problems = plant_every_problem(store, tmp_path)
    before = every_object(store)

    found = fsck(store.locator, "--debris-age=60")
    assert found.returncode == 1, found.stdout + found.stderr
    lines = found.stdout.splitlines()
    for key, kind in problems.items():
        assert any(line.startswith(f"{kind} {key}") for line in lines), (key, kind, lines)
    assert len(lines) == len(problems) + 1, lines  # one line each, then the summary
    assert lines[-1].startswith(f"{len(problems)} problems")

    repaired = fsck(store.locator, "--repair", "--debris-age=60")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert repaired.stdout.splitlines()[-1].startswith("after repair: clean")
    after = every_object(store)
    quarantined = {k.split("/", 2)[2]: d for k, d in after.items() if k.startswith("quarantine/")}
    for key, data in before.items():  # nothing lost: in place or set aside, same bytes
        assert after.get(key, quarantined.get(key)) == data, key
    for key, kind in problems.items():
        if kind in ("stray", "corrupt", "orphan", "cursor"):
            assert key not in after and quarantined[key] == before[key], key
    if is_local(store):
        assert quarantined[".tmp/killed-writer"] == b"half"

    clean = fsck(store.locator)
    assert clean.returncode == 0 and clean.stdout.startswith("clean:"), clean.stdout
    # The repaired store restarts: nothing but the quarantine is left that any listing reads.
    other = JobStore(store.locator)
    other.resume()
    assert other.clean({j.jobStoreID: j for j in other.jobs()}).jobName == "root"


def test_fsck_config_and_unusable_stores(store: JobStore, tmp_path: Path) -> None:
    store.backend.put_bytes(layout.CONFIG, b"garbage")
    broken = fsck(store.locator, "--repair")
    assert broken.returncode == 1
    assert f"config {layout.CONFIG}:" in broken.stdout
    assert store.backend.get_bytes(layout.CONFIG) == b"garbage"  # nothing to repair it with

    for locator in (f"local:{tmp_path / 'nothing'}", "nonsense:x", "s3:Bad_Bucket"):
        done = fsck(locator)
        assert done.returncode == 2, (locator, done.stdout, done.stderr)
        assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1, done.stderr
    usage = subprocess.run([JOBSTORE, "fsck"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2


def test_fsck_finds_nothing_wrong_with_what_the_store_writes(
    store: JobStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No false alarm: every shape of name the store issues passes the layout's checks.

    A false ``stray`` would have ``--repair`` set live data aside.
    """
    job = new_job(store)
    store.set_root_job(job.jobStoreID)
    for hints in (None, ["wf", "task"], ["..", "files", "ünï", "x" * 500, "deleted", "a/b"]):
        for basename in WEIRD_BASENAMES:
            store.get_empty_file_store_id(job.jobStoreID, cleanup=True, basename=basename)
            kept = store.get_empty_file_store_id(hints=hints, basename=basename)
            with store.write_file_stream(hints=hints, basename=basename) as (f, gone):
                f.write(b"x")
            store.delete_file(gone)  # a tombstone, for hinted IDs
            assert store.file_exists(kept)
    for name in ["ünïcödé 🙂.sh", "new\nline", "..x", " spaced "]:
        path = tmp_path / name
        path.write_bytes(b"imported")
        store.import_file(path.as_uri())
    store.write_logs(json.dumps({"a": 1}))
    store.read_logs(lambda f: None)  # writes the cursor
    caplog.set_level(logging.WARNING, logger="jobstore")
    assert list(store.job_ids()) == [job.jobStoreID]
    store.clean()
    assert not [r for r in caplog.records if r.name.startswith("jobstore")]
    done = fsck(store.locator)
    assert (done.returncode, done.stderr) == (0, ""), done.stdout
