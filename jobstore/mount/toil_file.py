"""Toil's ``file:`` store (FileJobStore) as a view source, read-only but for the kill flag.

The layout (Toil 9.6, ``toil/jobStores/fileJobStore.py``), under the store's directory:

``jobs/[<spray>/]kind-<name>/[<spray>/]instance-<random>/job``
    a job's pickled description; its ID is the path of its directory below
    ``jobs/`` (so it holds ``/``). Written to ``job.new`` and renamed over
    ``job``: atomic. ``<spray>`` levels are single-character directories
    Toil adds when a directory fills up.
``files-flat/[<spray>/]file-<hex>/<basename>``
    files written without a job or hints;
``job-files/<job-id>/file-<hex>/<basename>``, ``job-files/<job-id>/cleanup/file-<hex>/<basename>``
    a job's files, kept after it or deleted with it (``cleanup``);
``files/<hint>/.../files/[<n>/]<basename>``
    files written with hints; ``files/<hint>/.../deleted/...`` holds empty
    tombstones of deleted ones, so their slots are never reused;
``shared/<name>``
    shared files (``config.pickle``, ``pid.log``, ``_toil_kill_flag``, ...);
``stats/inbox/[<spray>/]stats<hex>`` and ``stats/archive/...``
    one file per ``write_logs`` message (``.new`` while being written, then
    renamed); the leader's ``read_logs`` moves each from the inbox to the archive.

A file ID is the URL-quoted path of the file below the store's directory; the
view shows the path itself under ``files/`` (``files/files-flat/...``,
``files/job-files/...``, ``files/files/<hints>/files/...``), which quotes back
to the ID. Job IDs show under ``jobs/`` with ``/`` replaced by ``+``, a
character Toil never puts in one. Log messages show under ``logs/`` as
``<mtime, ISO 8601 with nanoseconds>-stats<hex>``: the file's name carries no
order, its modification time does (a rename keeps it), so the names sort in
the order the messages were written.

Nothing here writes to the store. Toil's ``load_job`` and ``jobs()`` are not
read-only (a ``job.new`` beside a job is deleted as debris, which races a
leader in mid-update) and wait 30 seconds for a missing job, and
``read_logs`` moves what it reads: so jobs and logs are read from the files
directly. Toil's own reading API serves the rest (config, kill flag, leader).

What a read returns: each open pins one file (open, then ``fstat`` of that
descriptor: the info and the bytes are one inode's). Jobs, shared files, logs
and files rewritten by ``update_file``/``update_file_stream`` are replaced by
rename, so a reader always gets one complete version. A file still being
written by its first ``write_file_stream`` (or ``get_empty_file_store_id``),
which Toil writes in place, shows what has been written so far -- as it would
to Toil's own ``read_file_stream``; it never changes once that writer is done.
A hinted file's slot is claimed with an empty file first: it shows empty
until its content replaces it.
Toil's temporary files (``<name>.<uuid>.tmp<ext>``, ``job.new``, ``*.new``
logs) and tombstones are not shown.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import time
from collections.abc import Iterator
from typing import BinaryIO
from urllib.parse import unquote

from toil.jobStores.abstractJobStore import (
    AbstractJobStore,
    HintedJobStore,
    NoSuchFileException,
    NoSuchJobStoreException,
)
from toil.jobStores.fileJobStore import FileJobStore

from jobstore.backend import ObjectInfo, VersionGone
from jobstore.mount.source import Entry, Kind, Missing
from jobstore.mount.toil_sources import NoToilStore, ToilStoreSource

logger = logging.getLogger(__name__)

#: What stands for ``/`` of a job ID in its ``jobs/`` name (never in Toil's IDs).
JOB_SEPARATOR = "+"
#: A component of a job ID as Toil makes them: job-name slugs, spray letters, mkdtemp names.
_ID_COMPONENT = re.compile(r"[A-Za-z0-9._-]+")
#: Toil's temporary files (``toil.lib.io.atomic_tmp_file``): ``<name>.<uuid4>.tmp<ext>``.
_TOIL_TMP = re.compile(
    r"(?P<base>.+)\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.tmp(?P<ext>.*)"
)
#: The trees of files under the store's directory, by the first component of a file's ID.
FILE_ROOTS = (FileJobStore.HINTED_FILES_DIR, FileJobStore.FILES_DIR, FileJobStore.JOB_FILES_DIR)
JOB_FILE = "job"
#: Length of a log name's time stamp: ``2026-12-01T05:08:15.123456789Z``.
_STAMP_LEN = 30


class FileStoreSource(ToilStoreSource):
    """A Toil ``file:`` store, read through its files."""

    def __init__(self, locator: str) -> None:
        root = os.path.abspath(locator.removeprefix("file:"))
        if not os.path.isdir(os.path.join(root, FileJobStore.JOBS_DIR)):
            raise NoToilStore(f"no Toil file: store at {root}")
        store = FileJobStore(root)
        try:
            store.resume()
        except (NoSuchJobStoreException, NoSuchFileException):
            raise NoToilStore(f"no Toil file: store at {root} (no config.pickle)") from None
        except Exception as e:
            raise NoToilStore(f"the Toil file: store at {root} does not open: {e}") from None
        super().__init__(locator, store)
        self.root = root
        self._jobs_dir = os.path.join(root, FileJobStore.JOBS_DIR)
        self._shared_dir = os.path.join(root, FileJobStore.SHARED_FILES_DIR)
        self._log_dirs = (
            os.path.join(root, FileJobStore.STATS_INBOX_DIR),
            os.path.join(root, FileJobStore.STATS_ARCHIVE_DIR),
        )
        self._strays_seen: set[str] = set()
        #: Where the last listing of ``logs/`` found each message, by file name.
        self._log_paths: dict[str, str] = {}

    # ------------------------------------------------------------------ jobs

    def job_segments(self) -> int:
        return 1

    def job_names(self, segment: int) -> Iterator[tuple[int, str]]:
        if segment != 0:
            return
        for job_dir, _ in self._job_dirs():
            job_id = os.path.relpath(job_dir, self._jobs_dir)
            if _valid_job_id(job_id):
                yield 0, self.job_name(job_id)
            elif job_id not in self._strays_seen:
                self._strays_seen.add(job_id)
                logger.warning("Skipping %s: not a job directory Toil makes", job_dir)

    def job_versions(self) -> Iterator[tuple[str, str | None]]:
        """The listing's ``stat``: the run view unpickles only descriptions that changed."""
        for job_dir, st in self._job_dirs():
            job_id = os.path.relpath(job_dir, self._jobs_dir)
            if _valid_job_id(job_id):
                yield job_id, _info(st).version

    def job_id(self, name: str) -> str:
        job_id = name.replace(JOB_SEPARATOR, "/")
        if "/" in name or not _valid_job_id(job_id):
            raise Missing(name)
        return job_id

    def job_name(self, job_id: str) -> str:
        if not _valid_job_id(job_id):
            raise Missing(job_id)
        return job_id.replace("/", JOB_SEPARATOR)

    def job_bytes(self, job_id: str) -> tuple[ObjectInfo, bytes]:
        with _open_regular(self._job_file(job_id)) as (info, f):
            return info, f.read()

    def job_info(self, job_id: str) -> ObjectInfo:
        return _stat_regular(self._job_file(job_id))

    def _job_file(self, job_id: str) -> str:
        if not _valid_job_id(job_id):
            raise Missing(job_id)
        return os.path.join(self._jobs_dir, job_id, JOB_FILE)

    def _job_dirs(self) -> Iterator[tuple[str, os.stat_result]]:
        """Every job's directory with a job in it, as Toil's ``jobs()`` walks them, and
        the ``stat`` of its job file."""
        for holder in self._spray(self._jobs_dir):
            for kind in _names(holder):
                if not kind.startswith(FileJobStore.JOB_NAME_DIR_PREFIX):
                    continue
                for parent in self._spray(os.path.join(holder, kind)):
                    for instance in _names(parent):
                        if instance.startswith(FileJobStore.JOB_DIR_PREFIX):
                            job_dir = os.path.join(parent, instance)
                            try:
                                st = os.stat(os.path.join(job_dir, JOB_FILE))
                            except OSError:
                                continue  # an ID assigned, no job stored (yet), or gone
                            if stat.S_ISREG(st.st_mode):
                                yield job_dir, st

    @staticmethod
    def _spray(root: str) -> Iterator[str]:
        """``root`` and every spray directory below it (Toil's ``_walk_dynamic_spray_dir``)."""
        yield root
        for name in _names(root):
            if name in FileJobStore.validDirsSet:
                yield from FileStoreSource._spray(os.path.join(root, name))

    # ------------------------------------------------------ stored objects

    def file_path(self, file_id: str) -> tuple[str, ...]:
        """The file's path below the store's directory: its ID unquoted."""
        return tuple(unquote(str(file_id)).split("/"))

    def listdir(self, kind: Kind, path: tuple[str, ...]) -> Iterator[Entry]:
        if kind is Kind.LOGS:
            if path:
                raise Missing(path)
            return iter([Entry(name, False) for name in sorted(self._logs())])
        directory = self._path(kind, path)
        entries: list[Entry] = []
        try:
            scan = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            raise Missing(path) from None
        for e in scan:
            if not self._shown(kind, (*path, e.name)):
                continue
            try:
                is_dir = e.is_dir()
                if not is_dir and not e.is_file():
                    continue
            except OSError:
                continue  # gone since it was listed
            if kind is Kind.SHARED and is_dir:
                continue
            entries.append(Entry(e.name, is_dir))
        entries.sort(key=lambda e: e.name)
        return iter(entries)

    def stat(self, kind: Kind, path: tuple[str, ...]) -> ObjectInfo | None:
        if not path:
            return None
        if kind is Kind.LOGS:
            with self._open_log(path, 0, None) as (info, _):
                return info
        try:
            st = os.stat(self._path(kind, path))
        except (FileNotFoundError, NotADirectoryError):
            raise Missing(path) from None
        if stat.S_ISDIR(st.st_mode) and kind is Kind.FILES:
            return None
        if not stat.S_ISREG(st.st_mode):
            raise Missing(path)
        return _info(st)

    def open(
        self, kind: Kind, path: tuple[str, ...], start: int = 0, version: str | None = None
    ) -> contextlib.AbstractContextManager[tuple[ObjectInfo, BinaryIO]]:
        if kind is Kind.LOGS:
            return self._open_log(path, start, version)
        if not path:
            raise IsADirectoryError(kind.value)
        return _open_regular(self._path(kind, path), start, version)

    def _path(self, kind: Kind, path: tuple[str, ...]) -> str:
        """Where a shown path of ``files/`` or ``shared/`` lives; :class:`Missing` if not shown."""
        for i in range(len(path)):
            if not _valid_component(path[i]) or not self._shown(kind, path[: i + 1]):
                raise Missing(path)
        if kind is Kind.SHARED:
            if len(path) > 1:
                raise Missing(path)
            return os.path.join(self._shared_dir, *path)
        if not path:
            return self.root  # files/: the file trees below it are all that is shown
        return os.path.join(self.root, *path)

    def _shown(self, kind: Kind, path: tuple[str, ...]) -> bool:
        """Whether the view shows ``path`` (given its parent is shown)."""
        name = path[-1]
        if _is_toil_tmp(name):
            return False
        if kind is Kind.SHARED:
            return len(path) == 1 and AbstractJobStore._validateSharedFileName(name)
        if len(path) == 1:
            return name in FILE_ROOTS
        if (
            path[0] == FileJobStore.HINTED_FILES_DIR
            and HintedJobStore._HINT_FILES_DIR not in path[1:-1]
        ):
            # Among the hints, before a hint list's files/: tombstones are not files.
            return name != HintedJobStore._HINT_DELETED_DIR
        return True

    # ---------------------------------------------------------------- logs

    def _log_files(self) -> Iterator[tuple[str, str]]:
        """``(file name, its path)`` of every finished log message: the inbox first.

        The leader moves messages from the inbox to the archive only, so a walk
        of the inbox and then of the archive misses none (one moved meanwhile
        may show twice: callers keep the first).
        """
        for top in self._log_dirs:
            for directory in self._spray(top):
                for name in _names(directory):
                    if (
                        name.startswith(FileJobStore.LOG_PREFIX)
                        and not name.endswith(FileJobStore.LOG_TEMP_SUFFIX)
                        and name not in FileJobStore.validDirsSet
                    ):
                        yield name, os.path.join(directory, name)

    def _logs(self) -> set[str]:
        names: dict[str, str] = {}
        paths: dict[str, str] = {}
        for name, path in self._log_files():
            if name in names:
                continue
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue  # moved to the archive since: found there (the walk is not over)
            if stat.S_ISREG(st.st_mode):
                names[name] = _stamp(st.st_mtime_ns) + "-" + name
                paths[name] = path
        self._log_paths = paths
        return set(names.values())

    @contextlib.contextmanager
    def _open_log(
        self, path: tuple[str, ...], start: int, version: str | None
    ) -> Iterator[tuple[ObjectInfo, BinaryIO]]:
        """The log message a ``logs/`` name shows, wherever it is now (inbox or archive)."""
        if len(path) != 1 or len(path[0]) <= _STAMP_LEN + 1 or "/" in path[0]:
            raise Missing(path)
        stamp, file_name = path[0][:_STAMP_LEN], path[0][_STAMP_LEN + 1 :]
        # Where the last listing saw it first (a listing stats every message, one by one);
        # then twice a walk, once more when the leader moved it between finding and opening.
        for attempt in range(3):
            if attempt == 0:
                found = self._log_paths.get(file_name)
            else:
                found = next((p for name, p in self._log_files() if name == file_name), None)
            if found is None:
                if attempt:
                    break
                continue
            try:
                info, f = _open_file(found, stamp)
            except Missing:
                continue
            with f:
                yield _pinned(found, info, f, start, version)
            return
        if version is not None:
            raise VersionGone(f"{path[0]}: version {version} is gone")
        raise Missing(path)

    # ------------------------------------------------------------ the run

    def pid_written_ns(self) -> int | None:
        try:
            return os.stat(os.path.join(self._shared_dir, "pid.log")).st_mtime_ns
        except OSError:
            return None


# =============================================================== helpers


def _valid_job_id(job_id: str) -> bool:
    parts = job_id.split("/")
    return (
        len(parts) >= 2
        and all(_ID_COMPONENT.fullmatch(p) and p not in (".", "..") for p in parts)
        and parts[-1].startswith(FileJobStore.JOB_DIR_PREFIX)
    )


def _valid_component(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name


def _is_toil_tmp(name: str) -> bool:
    m = _TOIL_TMP.fullmatch(name)
    return m is not None and m["ext"] == os.path.splitext(m["base"])[1]


def _names(directory: str) -> list[str]:
    try:
        return os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _info(st: os.stat_result) -> ObjectInfo:
    return ObjectInfo(
        st.st_size,
        bool(st.st_mode & stat.S_IXUSR),
        st.st_mtime,
        f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}",
    )


def _stamp(ns: int) -> str:
    """A log name's time stamp: ISO 8601 UTC with nanoseconds, fixed width, so names sort."""
    seconds, fraction = divmod(ns, 10**9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


def _stat_regular(path: str) -> ObjectInfo:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise Missing(path) from None
    if not stat.S_ISREG(st.st_mode):
        raise Missing(path)
    return _info(st)


@contextlib.contextmanager
def _open_regular(
    path: str, start: int = 0, version: str | None = None
) -> Iterator[tuple[ObjectInfo, BinaryIO]]:
    try:
        info, f = _open_file(path)
    except Missing:
        if version is not None:
            raise VersionGone(f"{path}: version {version} is gone") from None
        raise
    with f:
        yield _pinned(path, info, f, start, version)


def _pinned(
    path: str, info: ObjectInfo, f: BinaryIO, start: int, version: str | None
) -> tuple[ObjectInfo, BinaryIO]:
    """The open file from ``start`` on, when it is the ``version`` asked for (if any)."""
    if version is not None and info.version != version:
        raise VersionGone(f"{path}: version {version} was replaced by {info.version}")
    if start:
        f.seek(start)
    return info, f


def _open_file(path: str, stamp: str | None = None) -> tuple[ObjectInfo, BinaryIO]:
    """The file open for reading and the ``fstat`` of that very descriptor.

    ``O_NONBLOCK`` so that a FIFO someone put in the store cannot hang the
    open; anything but a regular file is not shown, nor a log message whose
    time is not ``stamp``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise Missing(path) from None
    f = os.fdopen(fd, "rb")
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (stamp is not None and _stamp(st.st_mtime_ns) != stamp):
        f.close()
        raise Missing(path)
    os.set_blocking(fd, True)
    return _info(st), f
