"""``local:`` stores and symbolic links: a link on the way to a store is the user's and
works; a link inside a store is never followed to change or delete what lies outside.

* A store whose root is a link, or whose path runs through one, is initialised,
  written, resumed, mounted, cleaned and destroyed like any other; a real workflow
  on it succeeds (its ``destroy`` used to ``rmtree`` the link and fail the run).
  Destroying a store whose root is a link empties the directory the link points to
  and keeps both: the user made them, the store only filled the directory.
* Links planted inside a store (a shard directory, a job's file directory, a leaf,
  ``.tmp`` itself) pointing at a victim directory: every deleting operation
  (``delete_file``, ``delete_job``, ``delete_prefix``, ``clean``, ``remove_debris``,
  ``destroy``) and every write leaves the victim as it was.
* A file imported as a link (``symlinkImports``) is the user's file: deleting it,
  its job or the store unlinks the link only.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from toil.common import Config
from toil.job import JobDescription
from toil.jobStores.abstractJobStore import NoSuchJobStoreException

from jobstore import JobStore, layout
from tests.mountutil import Mount
from tests.test_workflows import pipeline, prepare

REQUIREMENTS = {"memory": 1, "cores": 1, "disk": 1, "preemptible": False}


def new_job(store: JobStore, name: str = "job") -> JobDescription:
    job = JobDescription(requirements=REQUIREMENTS, jobName=name)
    store.assign_job_id(job)
    store.create_job(job)
    return job


def tree(root: Path) -> dict[str, tuple[str, bytes | str]]:
    """Everything below ``root``: kind and content (or link target) of each entry."""
    found: dict[str, tuple[str, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                found[rel] = ("dir", b"")
            else:
                found[rel] = ("file", path.read_bytes())
    return found


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A directory of someone's data that links inside a store point at."""
    v = tmp_path / "victim"
    (v / "sub").mkdir(parents=True)
    (v / "precious.txt").write_bytes(b"precious")
    (v / "sub" / "deep.txt").write_bytes(b"deep")
    old = 1_000_000_000  # looks like debris of a writer killed long ago
    os.utime(v / "precious.txt", (old, old))
    os.utime(v / "sub", (old, old))
    return v


# ================================================= a link on the way to the store


@pytest.mark.parametrize("where", ["root", "parent"])
def test_store_through_a_link_works_and_destroy_keeps_the_users_link(
    tmp_path: Path, where: str
) -> None:
    real = tmp_path / "disk" / "run"
    real.mkdir(parents=True)
    if where == "root":
        path = tmp_path / "run"
        path.symlink_to(real)
    else:
        (tmp_path / "scratch").symlink_to(tmp_path / "disk")
        real.rmdir()
        path = tmp_path / "scratch" / "run"
    locator = f"local:{path}"
    store = JobStore(locator)
    store.initialize(Config())
    job = new_job(store)
    source = tmp_path / "in.txt"
    source.write_bytes(b"data")
    file_id = store.write_file(str(source), job.jobStoreID, cleanup=True)
    other = JobStore(locator)
    other.resume()
    assert other.load_job(job.jobStoreID).jobStoreID == job.jobStoreID
    with other.read_file_stream(file_id) as f:
        assert f.read() == b"data"
    other.delete_job(job.jobStoreID)
    assert not store.file_exists(file_id)

    store.destroy()
    with pytest.raises(NoSuchJobStoreException):
        JobStore(locator).resume()
    if where == "root":
        assert path.is_symlink() and real.is_dir() and not any(real.iterdir())
        JobStore(locator).initialize(Config())  # the emptied directory takes a new store
    else:
        assert not real.exists() and (tmp_path / "scratch").is_symlink()
    assert source.read_bytes() == b"data"


def test_workflow_and_mount_on_a_linked_root(tmp_path: Path) -> None:
    """The reported failure: every successful run on a linked root exited 1 in destroy."""
    real = tmp_path / "disk" / "run"
    real.mkdir(parents=True)
    link = tmp_path / "run"
    link.symlink_to(real)
    locator = f"local:{link}"
    workdir = tmp_path / "work"
    prepare(workdir)
    (workdir / "gate").write_text("open")
    (workdir / "attempts").write_text("1")
    pipeline(locator, workdir, "--clean=never")
    assert json.loads((workdir / "result.json").read_text())["attempts"] == 2

    m = Mount(locator, tmp_path / "mnt")
    try:
        assert (m / "killflag").read_bytes() == b"NO\n"
        assert "config.pickle" in os.listdir(m / "shared")
    finally:
        m.close()

    # What `toil clean` runs; it used to fail with "Cannot call rmtree on a symbolic link".
    pipeline(locator, workdir, "--restart", "--clean=always")
    assert link.is_symlink() and real.is_dir() and not any(real.iterdir())


# ==================================================== links planted inside a store


def _store(tmp_path: Path) -> tuple[JobStore, Path]:
    root = tmp_path / "store"
    store = JobStore(f"local:{root}")
    store.initialize(Config())
    return store, root


def _replace_with_link(path: Path, target: Path) -> None:
    shutil.rmtree(path)
    path.symlink_to(target)


def _job_with_file(store: JobStore, tmp_path: Path) -> tuple[JobDescription, str]:
    job = new_job(store)
    source = tmp_path / "payload"
    source.write_bytes(b"payload")
    return job, store.write_file(str(source), job.jobStoreID, cleanup=True)


Action = Callable[[], None]


def _shard_dir_link(store: JobStore, root: Path, victim: Path, tmp_path: Path) -> Action:
    """jobs/<shard> is a link to the victim, which holds a file named like the job."""
    job = new_job(store)
    key = layout.job_key(job.jobStoreID)
    (victim / job.jobStoreID).write_bytes(b"victim's, named like a job")
    _replace_with_link(root / key.rsplit("/", 1)[0], victim)

    def act() -> None:
        store.delete_job(job.jobStoreID)
        with pytest.raises(OSError, match="symbolic link"):
            store.update_job(job)  # a write through the link would land in the victim

    return act


def _job_files_link(store: JobStore, root: Path, victim: Path, tmp_path: Path) -> Action:
    """files/@job/<shard>/<job> (the job's files) is a link to the victim."""
    job, _ = _job_with_file(store, tmp_path)
    prefix = layout.job_files_prefix(job.jobStoreID)
    _replace_with_link(root / prefix.rstrip("/"), victim)

    def act() -> None:
        store.delete_job(job.jobStoreID)
        store.backend.delete_prefix(prefix)

    return act


def _job_shard_link(store: JobStore, root: Path, victim: Path, tmp_path: Path) -> Action:
    """files/@job/<shard> is a link to the victim, which holds the job's file tree."""
    job, file_id = _job_with_file(store, tmp_path)
    prefix = layout.job_files_prefix(job.jobStoreID).rstrip("/")
    shutil.copytree(root / prefix, victim / job.jobStoreID)
    _replace_with_link(root / prefix.rsplit("/", 1)[0], victim)

    def act() -> None:
        store.delete_file(file_id)
        store.delete_job(job.jobStoreID)
        store.backend.delete_prefix(prefix + "/")

    return act


def _anon_link(store: JobStore, root: Path, victim: Path, tmp_path: Path) -> Action:
    """files/@anon/<abc> is a link to the victim, which holds what a file's ID names."""
    source = tmp_path / "anon"
    source.write_bytes(b"anon")
    file_id = store.write_file(str(source))
    abc_id, rest = file_id.rsplit("/", 2)[0], file_id.rsplit("/", 2)[1]
    abc = root / layout.FILES / abc_id
    shutil.copytree(abc / rest, victim / rest)
    _replace_with_link(abc, victim)

    def act() -> None:
        store.delete_file(file_id)
        store.backend.delete_prefix(f"{layout.FILES}{abc_id}/{rest}/")
        with pytest.raises(OSError, match="symbolic link"):
            store.backend.put_bytes(f"{layout.FILES}{abc_id}/new/file", b"new")

    return act


def _anon_leaf_link(store: JobStore, root: Path, victim: Path, tmp_path: Path) -> Action:
    """files/@anon/<abc>/evil is a link to the victim directory."""
    file_id = store.get_empty_file_store_id()
    abc_id = file_id.rsplit("/", 2)[0]
    (root / layout.FILES / abc_id / "evil").symlink_to(victim)

    def act() -> None:
        store.delete_file(f"{abc_id}/evil/sub/deep.txt")
        store.backend.delete_prefix(f"{layout.FILES}{abc_id}/evil/sub/")
        store.backend.delete_prefix(f"{layout.FILES}{abc_id}/evil/")
        store.delete_file(f"{abc_id}/evil")

    return act


def _tmp_link(store: JobStore, root: Path, victim: Path, tmp_path: Path) -> Action:
    """.tmp is a link to the victim, whose entries look like stale debris."""
    _replace_with_link(root / ".tmp", victim)

    def act() -> None:
        with pytest.raises(OSError, match="symbolic link"):
            _job_with_file(store, tmp_path)  # no temporary file lands in the victim
        store.backend.remove_debris()  # removes the link, nothing behind it
        assert not (root / ".tmp").is_symlink()
        job, _ = _job_with_file(store, tmp_path)
        store.delete_job(job.jobStoreID)

    return act


def _clean_and_destroy(store: JobStore, root: Path, victim: Path, tmp_path: Path) -> Action:
    """Links everywhere, then Toil's clean (orphans, debris) and destroy."""
    root_job = new_job(store, "root")
    store.set_root_job(root_job.jobStoreID)
    orphan, _ = _job_with_file(store, tmp_path)
    (root / layout.JOBS / "fff").mkdir(exist_ok=True)
    (root / layout.JOBS / "fff" / "evil").symlink_to(victim)
    (root / layout.FILES / layout.JOB_FILES / "fff").mkdir(exist_ok=True)
    (root / layout.FILES / layout.JOB_FILES / "fff" / "gone-job").symlink_to(victim)
    (root / ".tmp" / "old-debris").symlink_to(victim)
    os.utime(root / ".tmp" / "old-debris", (1, 1), follow_symlinks=False)

    def act() -> None:
        store.clean()
        assert not store.job_exists(orphan.jobStoreID)
        store.destroy()
        assert not root.exists()

    return act


SCENARIOS: dict[str, Callable[[JobStore, Path, Path, Path], Action]] = {
    "jobs-shard": _shard_dir_link,
    "job-files": _job_files_link,
    "job-files-shard": _job_shard_link,
    "anon-shard": _anon_link,
    "anon-leaf": _anon_leaf_link,
    "tmp": _tmp_link,
    "clean-destroy": _clean_and_destroy,
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_links_inside_a_store_are_never_followed(
    tmp_path: Path, victim: Path, scenario: str
) -> None:
    store, root = _store(tmp_path)
    act = SCENARIOS[scenario](store, root, victim, tmp_path)
    before = tree(victim)
    act()
    assert tree(victim) == before
    if root.exists():
        store.destroy()
    assert tree(victim) == before


def test_imported_links_are_unlinked_never_their_targets(tmp_path: Path, victim: Path) -> None:
    config = Config()
    config.symlinkImports = True
    store = JobStore(f"local:{tmp_path / 'store'}")
    store.initialize(config)
    before = tree(victim)
    kept = store.import_file((victim / "precious.txt").as_uri())
    deleted = store.import_file((victim / "sub" / "deep.txt").as_uri())
    assert kept is not None and deleted is not None
    assert os.path.islink(store.backend.local_path(layout.file_key(kept)))  # type: ignore[arg-type]
    store.delete_file(deleted)
    assert not store.file_exists(deleted)
    store.destroy()
    assert tree(victim) == before
