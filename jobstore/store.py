"""Toil's job store semantics, written once over any :class:`~jobstore.backend.Backend`.

What this adds over Toil's own stores:

* a missing job or file fails at once: backends answer existence directly,
  there is no spin-waiting for eventually-consistent listings;
* a file ID is its key, so reading, sizing or deleting a file is one request;
* log messages are one immutable object each, read in write order through a
  cursor, so reading them never rewrites or moves them;
* every name from outside goes through :mod:`jobstore.layout` before it can
  become a key, so no ID reaches outside the store;
* damage is told apart (see :mod:`jobstore.layout`): every listing skips a
  stray key with a warning naming it (:func:`warn_stray`), so a stray object
  never stops a restart, ``toil status`` or ``toil clean``; a job key the
  layout produced whose bytes do not load as that job's description raises
  :class:`CorruptJobError`, naming the key and the job.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import pickle
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, TYPE_CHECKING, Any, TypeVar
from urllib.parse import ParseResult, unquote

from toil.fileStores import FileID
from toil.job import JobDescription, TemporaryID
from toil.jobStores.abstractJobStore import (
    AbstractJobStore,
    HintedJobStore,
    JobStoreExistsException,
    NoSuchFileException,
    NoSuchJobException,
    NoSuchJobStoreException,
)

from jobstore import layout, leader, ledger
from jobstore.backend import Backend, NotFound, StoreExists
from jobstore.locator import InvalidLocator, Locator, parse_locator

if TYPE_CHECKING:
    from toil.common import Config
    from toil.lib.url import URLAccess

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: A log message whose key was minted longer ago than this is assumed visible.
#: Bounds how far clocks of writers may disagree and how long a single log write may take.
LOG_GRACE_NS = 120 * 10**9


class InvalidJobID(NoSuchJobException, ValueError):
    """A job ID this store could never have issued; no such job can exist."""

    def __init__(self, job_id: object) -> None:
        super().__init__(str(job_id))
        self.args = (f"not a job ID of this store: {job_id!r}",)


class InvalidFileID(NoSuchFileException, ValueError):
    """A file ID this store could never have issued; no such file can exist."""

    def __init__(self, file_id: object) -> None:
        super().__init__(str(file_id))
        self.args = (f"not a file ID of this store: {file_id!r}",)


class CorruptObjectError(ValueError):
    """A key the layout produced holds bytes that do not load as what the key stands for.

    ``jobstore fsck`` finds these and ``--repair`` moves them aside.
    """

    def __init__(self, key: str, message: str, why: str) -> None:
        super().__init__(message)
        self.key = key
        self.why = why


class CorruptJobError(CorruptObjectError):
    """A job key holds bytes that are not that job's description.

    Not a :class:`NoSuchJobException`: Toil would take the job for finished and
    carry on without it.
    """

    def __init__(self, key: str, job_id: str, why: str) -> None:
        super().__init__(key, f"corrupt job {job_id} at key {key!r}: {why}", why)
        self.job_id = job_id


class CorruptLogError(CorruptObjectError):
    """The reader of log messages (Toil's leader) failed on the message at ``key``."""

    def __init__(self, key: str, error: Exception) -> None:
        why = f"{type(error).__name__}: {error}"
        super().__init__(key, f"corrupt log message at key {key!r}: {why}", why)


_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def warn_once(locator: str, key: str, message: str) -> None:
    """Log a warning about an object once in this process, not on every access."""
    with _warned_lock:
        if (locator, key) in _warned:
            return
        _warned.add((locator, key))
    logger.warning("%s", message)


def warn_stray(locator: str, key: str, why: str) -> None:
    """Log that the stray object at ``key`` of a store is skipped (once per key and process)."""
    warn_once(locator, key, f"Skipping stray object {key!r} in {locator}: {why}")


def check_job(key: str, job_id: str, data: bytes) -> JobDescription:
    """The description of ``job_id`` stored at ``key`` as ``data``; CorruptJobError if it is not.

    Unpickling junk can raise nearly anything (UnpicklingError, EOFError,
    ValueError, ImportError, ...): every such failure is corruption here.
    """
    try:
        job = pickle.loads(data)
    except Exception as e:
        raise CorruptJobError(key, job_id, f"does not unpickle ({type(e).__name__}: {e})") from e
    if not isinstance(job, JobDescription):
        raise CorruptJobError(key, job_id, f"holds a {type(job).__name__}, not a JobDescription")
    if job.jobStoreID != job_id:
        raise CorruptJobError(key, job_id, f"holds the description of {job.jobStoreID!r}")
    return job


class JobStore(AbstractJobStore, HintedJobStore):
    """A Toil job store on any backend registered in :data:`jobstore.locator.BACKENDS`.

    ``JobStore(locator)`` touches no storage; call ``initialize`` or ``resume``
    as with any Toil job store.
    """

    def __init__(self, locator: str, backend: Backend | None = None) -> None:
        self._parsed: Locator = parse_locator(locator)
        super().__init__(self._parsed.canonical)
        self.backend: Backend = backend if backend is not None else self._parsed.open_backend()
        self._batch: list[JobDescription] | None = None
        self._ledger: ledger.LeaderTailer | None = None
        #: The log cursor as this process last advanced it, and the version of the stored
        #: cursor it started from (see read_logs).
        self._log_cursor: tuple[str | None, set[str]] | None = None
        self._log_cursor_stored: str | None = None
        self._creating = False

    def __repr__(self) -> str:
        return f"JobStore({self.locator!r})"

    # ============================================================ lifecycle

    def initialize(self, config: Config) -> None:
        """Create the store, atomically: of several racing initializers exactly one wins.

        The winner is the one whose config object is created (``put_if_absent``);
        it becomes the store's leader. Everyone else gets JobStoreExistsException.
        """
        try:
            self.backend.initialize()
        except StoreExists as e:
            raise JobStoreExistsException(*self._locator_parts()) from e
        # Before the config is written: backends store config.pickle as it is (in
        # the clear) so that resume() can read it, and apply settings to the rest.
        self.backend.configure(config)
        self._creating = True
        try:
            super().initialize(config)  # calls write_config()
        finally:
            self._creating = False
        leader.claim(self.backend, self.locator)

    def write_config(self) -> None:
        """Create the config (initialize), or rewrite it as the store's one leader (restart).

        Toil's ``--restart`` rewrites the config before it announces itself with
        ``write_leader_pid``: the claim must come first, or a second leader
        would overwrite a running one's config before being refused.
        """
        if self._creating:
            data = pickle.dumps(self.config, pickle.HIGHEST_PROTOCOL)
            if not self.backend.put_if_absent(layout.CONFIG, data):
                raise JobStoreExistsException(*self._locator_parts())
            return
        leader.claim(self.backend, self.locator)
        super().write_config()

    def write_leader_pid(self) -> None:
        """Announce the leader (and hold its claim), and keep the run ledger from now on.

        Only a leader calls this (at start and restart), so the ledger's tailer
        of Toil's message bus runs in the leader and nowhere else.
        """
        leader.announce(self.backend, self.locator)
        super().write_leader_pid()
        bus_path = getattr(self.config, "write_messages", None)
        if self._ledger is None and bus_path and ledger.enabled():
            self._ledger = ledger.LeaderTailer(self.backend, bus_path)
            self._ledger.start()

    def resume(self) -> None:
        try:
            super().resume()
        except NoSuchFileException:
            raise NoSuchJobStoreException(*self._locator_parts()) from None
        self.backend.configure(self.config)

    def destroy(self) -> None:
        """Delete the store; refused (LeaderRunning) while another process leads it."""
        leader.check_destroy(self.backend, self.locator)
        if self._ledger is not None:  # it would write the store anew
            self._ledger.stop(flush=False)
            self._ledger = None
        self.backend.destroy()

    def _locator_parts(self) -> tuple[str, str]:
        """(locator without its scheme, scheme): what Toil's locator exceptions join with ':'."""
        return self.locator.split(":", 1)[1], self._parsed.scheme

    # ========================================================== run ledger

    def record_attempt(self, job_id: str) -> None:
        """Note in the run ledger that this worker process starts an attempt of ``job_id``."""
        if not layout.is_job_id(job_id):
            raise InvalidJobID(job_id)
        if ledger.enabled():
            ledger.record_attempt(self.backend, job_id)

    def get_env(self) -> dict[str, str]:
        env = self.backend.env()
        if not ledger.enabled():
            env["JOBSTORE_LEDGER"] = "0"
        return env

    def default_caching(self) -> bool:
        return self.backend.prefers_caching

    def _config_flag(self, name: str) -> bool:
        try:
            return bool(getattr(self.config, name, False))
        except AttributeError:  # neither initialized nor resumed yet
            return False

    # ================================================================= jobs

    def assign_job_id(self, job_description: JobDescription) -> None:
        job_description.jobStoreID = layout.new_job_id(job_description.jobName)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        self._batch = []
        try:
            yield
            batch = self._batch
        finally:
            self._batch = None
        for _ in self._map(self._write_job, batch):
            pass

    def create_job(self, job_description: JobDescription) -> JobDescription:
        if self._batch is not None:
            job_description.pre_update_hook()
            self._batch.append(job_description)
        else:
            self.update_job(job_description)
        return job_description

    def update_job(self, job_description: JobDescription) -> None:
        job_description.pre_update_hook()
        self._write_job(job_description)

    def _write_job(self, job_description: JobDescription) -> None:
        job_id = job_description.jobStoreID
        if isinstance(job_id, TemporaryID) or not layout.is_job_id(job_id):
            raise InvalidJobID(job_id)
        self.backend.put_bytes(
            layout.job_key(job_id), pickle.dumps(job_description, pickle.HIGHEST_PROTOCOL)
        )

    def job_exists(self, job_id: str) -> bool:
        return layout.is_job_id(job_id) and self.backend.exists(layout.job_key(job_id))

    def load_job(self, job_id: str) -> JobDescription:
        key = self._job_key(job_id)
        try:
            data = self.backend.get_bytes(key)
        except NotFound:
            raise NoSuchJobException(job_id) from None
        return self._unpickle_job(key, job_id, data)

    def load_job_bytes(self, job_id: str) -> bytes:
        """The pickled description exactly as stored (for tools such as the FUSE view)."""
        try:
            return self.backend.get_bytes(self._job_key(job_id))
        except NotFound:
            raise NoSuchJobException(job_id) from None

    def job_from_bytes(self, job_id: str, data: bytes) -> JobDescription:
        """The description in bytes from :meth:`load_job_bytes`, as :meth:`load_job` gives it."""
        return self._unpickle_job(self._job_key(job_id), job_id, data)

    def _unpickle_job(self, key: str, job_id: str, data: bytes) -> JobDescription:
        job = check_job(key, job_id, data)
        job.assignConfig(self.config)
        return job

    def delete_job(self, job_id: str) -> None:
        key = self._job_key(job_id)
        files = layout.job_files_prefix(job_id)
        # The description goes first: once it is gone the job is gone, even if we
        # are killed before its files are; clean() then finds those files orphaned.
        self.backend.delete_with_prefix(key, files)

    def jobs(self) -> Iterator[JobDescription]:
        def load(item: tuple[str, str]) -> JobDescription | None:
            key, job_id = item
            try:
                return self._unpickle_job(key, job_id, self.backend.get_bytes(key))
            except NotFound:  # deleted while we were listing
                return None

        for job in self._map(load, self._job_keys()):
            if job is not None:
                yield job

    def job_ids(self) -> Iterator[str]:
        """Every job ID in the store, without loading any description."""
        return (job_id for _, job_id in self._job_keys())

    def _job_keys(self) -> Iterator[tuple[str, str]]:
        """``(key, job ID)`` of every job key the layout produced; stray keys are skipped."""
        for key in self.backend.list(layout.JOBS):
            job_id = layout.job_id_from_key(key)
            if job_id is None:
                warn_stray(self.locator, key, layout.stray_reason(key) or "not a job key")
            else:
                yield key, job_id

    def clean(
        self, jobCache: dict[str | TemporaryID, JobDescription] | None = None
    ) -> JobDescription:
        root = super().clean(jobCache)
        self._delete_orphaned_job_files()
        # Here, not in resume(): every worker and the read-only FUSE view resume too.
        self.backend.remove_debris()
        return root

    def _delete_orphaned_job_files(self) -> None:
        """Delete files kept for cleanup with a job that does not exist.

        A worker writes a new job's body before the job's description, and
        ``delete_job`` removes the description before the files: a process
        killed in between leaves files that no job will ever delete. ``clean``
        runs on restart, when no process of the old run writes any more.
        """
        live = set(self.job_ids())
        orphans: set[str] = set()
        for key in self.backend.list(f"{layout.FILES}{layout.JOB_FILES}/"):
            job_id = layout.job_file_owner(key)
            if job_id is None:
                warn_stray(self.locator, key, layout.stray_reason(key) or "not a cleanup file key")
            elif job_id not in live:
                orphans.add(job_id)
        for job_id in sorted(orphans):
            # What delete_job would have deleted, had it finished.
            self.backend.delete_prefix(layout.job_files_prefix(job_id))

    def _job_key(self, job_id: str) -> str:
        if not layout.is_job_id(job_id):
            raise InvalidJobID(job_id)
        return layout.job_key(job_id)

    # ================================================================ files

    def _new_file_id(
        self,
        basename: str,
        job_id: str | None,
        cleanup: bool,
        hints: list[str] | None,
    ) -> str:
        basename = layout.sanitize_basename(basename)
        if job_id is not None and cleanup:
            if not layout.is_job_id(job_id):
                raise InvalidJobID(job_id)
            return layout.new_file_id(basename, job_id)
        hints_str = self.hints_to_string(hints)
        if hints_str:
            return self.claim_hinted_slot(hints_str, basename)
        return layout.new_file_id(basename)

    def _file_key(self, file_id: str) -> str:
        try:
            return layout.file_key(file_id)
        except layout.InvalidName:
            raise InvalidFileID(file_id) from None

    def write_file(
        self,
        local_path: str,
        job_id: str | None = None,
        cleanup: bool = False,
        hints: list[str] | None = None,
    ) -> str:
        executable = _is_executable(local_path)
        file_id = self._new_file_id(os.path.basename(local_path), job_id, cleanup, hints)
        try:
            self.backend.put_file(self._file_key(file_id), local_path, executable)
        except BaseException:
            if layout.is_hinted(file_id):
                self._hint_tree_delete(file_id)  # never handed out: the name is free again
            raise
        return file_id

    @contextlib.contextmanager
    def write_file_stream(
        self,
        job_id: str | None = None,
        cleanup: bool = False,
        hints: list[str] | None = None,
        basename: str | None = None,
        encoding: str | None = None,
        errors: str | None = None,
    ) -> Iterator[tuple[IO[Any], str]]:
        file_id = self._new_file_id(basename or "stream", job_id, cleanup, hints)
        with self.backend.writer(self._file_key(file_id)) as f, _text(f, encoding, errors) as t:
            yield t, file_id

    def get_empty_file_store_id(
        self,
        job_id: str | None = None,
        cleanup: bool = False,
        basename: str | None = None,
        hints: list[str] | None = None,
    ) -> str:
        file_id = self._new_file_id(basename or "empty", job_id, cleanup, hints)
        self.backend.put_bytes(self._file_key(file_id), b"")
        return file_id

    def update_file(self, file_id: str, local_path: str) -> None:
        key = self._existing_file_key(file_id)
        self.backend.put_file(key, local_path, _is_executable(local_path))

    @contextlib.contextmanager
    def update_file_stream(
        self, file_id: str, encoding: str | None = None, errors: str | None = None
    ) -> Iterator[IO[Any]]:
        key = self._existing_file_key(file_id)
        executable = self.backend.stat(key).executable
        with self.backend.writer(key, executable) as f, _text(f, encoding, errors) as t:
            yield t

    def _existing_file_key(self, file_id: str) -> str:
        key = self._file_key(file_id)
        if not self.backend.exists(key):
            raise NoSuchFileException(file_id)
        return key

    def read_file(self, file_id: str, local_path: str, symlink: bool = False) -> None:
        key = self._file_key(file_id)
        store_path = self.backend.local_path(key)
        # A link at local_path is replaced (by get_file's rename) unless a link is wanted;
        # it is never removed before we know the file exists.
        if (
            store_path is not None
            and os.path.lexists(local_path)
            and (symlink or not os.path.islink(local_path))
            and os.path.exists(store_path)
            and os.path.samefile(store_path, local_path)
        ):
            return  # already that very file
        if symlink and store_path is not None and self._config_flag("symlink_job_store_reads"):
            if not os.path.isfile(store_path):
                raise NoSuchFileException(file_id)
            try:
                os.symlink(store_path, local_path)
            except FileExistsError:  # rare: spare the common case an unlink that fails
                os.unlink(local_path)
                os.symlink(store_path, local_path)
            return
        try:
            self.backend.get_file(key, local_path)
        except NotFound:
            raise NoSuchFileException(file_id) from None

    def read_file_stream(
        self, file_id: str, encoding: str | None = None, errors: str | None = None
    ) -> contextlib.AbstractContextManager[IO[Any]]:
        return self._read_stream(self._file_key(file_id), file_id, encoding, errors)

    @contextlib.contextmanager
    def _read_stream(
        self, key: str, name: str, encoding: str | None, errors: str | None
    ) -> Iterator[IO[Any]]:
        """Open ``key`` for reading; only a missing object becomes NoSuchFileException(name).

        Errors raised by the caller's own block pass through untouched.
        """
        opened = False  # cheaper than an ExitStack on this hot path
        try:
            with self.backend.reader(key) as f:
                opened = True
                yield f if encoding is None else io.TextIOWrapper(f, encoding, errors)
        except NotFound:
            if opened:
                raise
            raise NoSuchFileException(name) from None

    def delete_file(self, file_id: str) -> None:
        key = self._file_key(file_id)
        if layout.is_hinted(file_id):
            if not (self._hint_tree_exists(file_id) or self.backend.exists(key)):
                return  # never issued, or deleted (and tombstoned) before
            # Never hand this hinted ID out again: Toil may replay a journalled delete.
            self.tombstone(file_id)
            self.backend.delete(key)
            self._hint_tree_delete(file_id)
        else:
            self.backend.delete(key)
        self.backend.prune_empty_parents(key, layout.FILES)

    def file_exists(self, file_id: str) -> bool:
        try:
            return self.backend.exists(layout.file_key(file_id))
        except layout.InvalidName:
            return False

    def get_file_size(self, file_id: str) -> int:
        try:
            return self.backend.stat(layout.file_key(file_id)).size
        except (NotFound, layout.InvalidName):
            return 0

    def file_is_executable(self, file_id: str) -> bool:
        try:
            return self.backend.stat(self._file_key(file_id)).executable
        except NotFound:
            raise NoSuchFileException(file_id) from None

    def get_public_url(self, file_name: str) -> str:
        try:
            return self.backend.url(self._file_key(file_name))
        except NotFound:
            raise NoSuchFileException(file_name) from None

    # ======================================================== import/export

    def _import_file(
        self,
        otherCls: type[URLAccess],
        uri: ParseResult,
        shared_file_name: str | None = None,
        hardlink: bool = False,
        symlink: bool = True,
    ) -> FileID | None:
        if uri.scheme not in ("file", ""):
            return super()._import_file(otherCls, uri, shared_file_name, hardlink, symlink)
        path = unquote(uri.path)
        if os.path.isdir(path):
            raise IsADirectoryError(f"{uri.geturl()} is a directory, not a file")
        st = os.stat(path)  # FileNotFoundError, as Toil documents
        executable = bool(st.st_mode & stat.S_IXUSR)
        if shared_file_name is None:
            file_id = self._new_file_id(os.path.basename(path), None, False, None)
            key = self._file_key(file_id)
        else:
            key = self._shared_key(shared_file_name)
        linked = (
            symlink
            and not hardlink
            and self._config_flag("symlinkImports")
            and path != "/dev/null"
            and self.backend.put_symlink(key, path)
        )
        if not linked:
            self.backend.put_file(key, path, executable)
        if shared_file_name is not None:
            return None
        return FileID(file_id, st.st_size, executable)

    def _export_file(
        self, otherCls: type[URLAccess], jobStoreFileID: FileID, url: ParseResult
    ) -> None:
        if url.scheme not in ("file", ""):
            executable = self.file_is_executable(jobStoreFileID)
            with self.read_file_stream(jobStoreFileID) as readable:
                otherCls._write_to_url(readable, url, executable)
            return
        dest = unquote(url.path)
        key = self._file_key(jobStoreFileID)
        directory = os.path.dirname(dest) or "."
        if not os.path.isdir(directory):
            # A failed export must not leave directories behind.
            if not self.backend.exists(key):
                raise NoSuchFileException(jobStoreFileID)
            os.makedirs(directory, exist_ok=True)
        try:
            self.backend.get_file(key, dest)
        except NotFound:
            raise NoSuchFileException(jobStoreFileID) from None

    # ========================================================= shared files

    def _shared_key(self, name: str) -> str:
        try:
            return layout.shared_key(name)
        except layout.InvalidName as e:
            raise ValueError(str(e)) from None

    @contextlib.contextmanager
    def write_shared_file_stream(
        self,
        shared_file_name: str,
        encrypted: bool | None = None,
        encoding: str | None = None,
        errors: str | None = None,
    ) -> Iterator[IO[Any]]:
        key = self._shared_key(shared_file_name)
        with self.backend.writer(key) as f, _text(f, encoding, errors) as t:
            yield t

    def read_shared_file_stream(
        self,
        shared_file_name: str,
        encoding: str | None = None,
        errors: str | None = None,
    ) -> contextlib.AbstractContextManager[IO[Any]]:
        key = self._shared_key(shared_file_name)
        return self._read_stream(key, shared_file_name, encoding, errors)

    def get_shared_public_url(self, shared_file_name: str) -> str:
        try:
            return self.backend.url(self._shared_key(shared_file_name))
        except NotFound:
            raise NoSuchFileException(shared_file_name) from None

    def shared_file_names(self) -> Iterator[str]:
        for key in self.backend.list(layout.SHARED):
            name = layout.shared_name_from_key(key)
            if name is None:
                warn_stray(self.locator, key, "not a shared file name")
            else:
                yield name

    # ================================================================= logs

    def write_logs(self, msg: str | bytes) -> None:
        data = msg.encode("utf-8") if isinstance(msg, str) else msg
        # The key is minted right before the write so that write order is key order.
        self.backend.put_bytes(layout.new_log_key(), data)

    def read_logs(self, callback: Callable[..., Any], read_all: bool = False) -> int:
        """Hand each unread message to ``callback`` once, in write order.

        Messages are never moved or rewritten: a cursor object records what
        was read. Messages newer than the grace window are remembered by name
        too, so one whose writer minted its key a little before a faster
        writer's is still read exactly once. Assumes one reader at a time (the
        leader). It keeps the cursor in memory and stores it only when a poll
        read something: Toil polls twice a second, and an empty poll costs a
        look at the stored cursor's version (another reader may have moved
        it) and a listing. A restarted leader starts from the stored cursor,
        which names every message read since its mark.
        A message the callback fails on raises :class:`CorruptLogError` naming
        its key; the messages before it stay read.
        """
        if self._log_cursor is not None and self._log_cursor_version() != self._log_cursor_stored:
            self._log_cursor = None  # another reader (or this one, just now) stored it since
        if self._log_cursor is None:
            self._log_cursor, self._log_cursor_stored = self._load_log_cursor()
        mark, seen = self._log_cursor
        start_after = None if read_all or mark is None else mark
        now = time.time_ns()
        read: list[str] = []
        try:
            for key in self.log_keys(start_after):
                if not read_all and key in seen:
                    continue
                try:
                    data = self.backend.get_bytes(key)
                except NotFound:
                    continue
                try:
                    callback(io.BytesIO(data))
                except Exception as e:
                    raise CorruptLogError(key, e) from e
                read.append(key)
        except CorruptLogError:
            # Remember what was read, but keep the mark: nothing after the bad one is skipped.
            self._advance_log_cursor(seen, mark, read)
            raise
        new_mark = layout.log_key_floor(now - LOG_GRACE_NS)
        if mark is not None and mark > new_mark:
            new_mark = mark
        self._advance_log_cursor(seen, new_mark, read)
        return len(read)

    def _advance_log_cursor(self, seen: set[str], new_mark: str | None, read: list[str]) -> None:
        """Move the cursor on; store it when messages were read (see :meth:`read_logs`)."""
        new_seen = {k for k in (*seen, *read) if new_mark is None or k > new_mark}
        if read:
            cursor = {"mark": new_mark, "seen": sorted(new_seen)}
            self.backend.put_bytes(layout.LOG_CURSOR, json.dumps(cursor).encode())
            self._log_cursor_stored = ""  # its version is learnt by reading it back, next poll
        self._log_cursor = (new_mark, new_seen)

    def _log_cursor_version(self) -> str | None:
        try:
            return self.backend.stat(layout.LOG_CURSOR).version
        except NotFound:
            return None

    def _load_log_cursor(self) -> tuple[tuple[str | None, set[str]], str | None]:
        """The stored cursor (its mark and the keys read after it) and its version.

        None and nothing when missing or damaged: a damaged cursor costs messages
        read twice, never a message lost or a leader stopped; ``jobstore fsck``
        reports it.
        """
        try:
            with self.backend.open_version(layout.LOG_CURSOR) as (info, stream):
                data, version = stream.read(), info.version
        except NotFound:
            return (None, set()), None
        try:
            return parse_log_cursor(data), version
        except ValueError as e:
            warn_once(
                self.locator,
                layout.LOG_CURSOR,
                f"Unreadable log cursor {layout.LOG_CURSOR!r} in {self.locator} ({e}): "
                "every log message is read again",
            )
            return (None, set()), version

    def log_keys(self, start_after: str | None = None) -> Iterator[str]:
        """Every stored log message's key, read or not, in write order; stray keys skipped."""
        for key in self.backend.list(layout.LOGS, start_after=start_after):
            if layout.is_log_key(key):
                yield key
            else:
                warn_stray(self.locator, key, "not a log message key")

    # ========================================================== hint tree

    def _hint_tree_put_if_absent(self, path: str) -> bool:
        return self.backend.put_if_absent(layout.HINTS + layout.check_path(path, "hint path"))

    def _hint_tree_exists(self, path: str) -> bool:
        return self.backend.exists(layout.HINTS + layout.check_path(path, "hint path"))

    def _hint_tree_delete(self, path: str) -> None:
        key = layout.HINTS + layout.check_path(path, "hint path")
        self.backend.delete(key)
        self.backend.prune_empty_parents(key, layout.HINTS)

    # ============================================================= helpers

    def _map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """``map`` that runs up to ``backend.concurrency`` calls at once, in order, lazily."""
        workers = self.backend.concurrency
        if workers <= 1:
            yield from map(fn, items)
            return
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="jobstore") as pool:
            pending: deque[Future[R]] = deque()
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()


def parse_log_cursor(data: bytes) -> tuple[str | None, set[str]]:
    """The mark and seen keys of a stored log cursor; ValueError when it is not one."""
    try:
        cursor = json.loads(data)
        mark, seen = cursor["mark"], cursor["seen"]
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"not a log cursor: {e}") from None
    if not (mark is None or isinstance(mark, str)) or not isinstance(seen, list):
        raise ValueError("not a log cursor: wrong types")
    if not all(isinstance(k, str) for k in seen):
        raise ValueError("not a log cursor: wrong types")
    return mark, set(seen)


def _is_executable(path: str) -> bool:
    return bool(os.stat(path).st_mode & stat.S_IXUSR)


@contextlib.contextmanager
def _text(f: IO[bytes], encoding: str | None, errors: str | None) -> Iterator[IO[Any]]:
    """Wrap a binary stream for text when asked, flushing into it without closing it."""
    if encoding is None:
        yield f
        return
    wrapper = io.TextIOWrapper(f, encoding=encoding, errors=errors)
    yield wrapper
    wrapper.flush()
    wrapper.detach()


class StoreUnavailable(Exception):
    """Why a store cannot be opened, in one line for the user of a command."""


def open_store(locator: str) -> JobStore:
    """A resumed store for ``locator`` (for commands: mount, status), or why there is none."""
    try:
        store = JobStore(locator)
    except InvalidLocator as e:
        raise StoreUnavailable(str(e)) from None
    try:
        store.resume()
    except NoSuchJobStoreException:
        raise StoreUnavailable(f"no job store at {store.locator}") from None
    except Exception as e:
        logger.debug("resuming %s failed", locator, exc_info=True)
        raise StoreUnavailable(f"cannot open {store.locator}: {_one_line(e)}") from None
    return store


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
