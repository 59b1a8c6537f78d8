"""What the FUSE view reads: one store's records by kind, with its key layout out of sight.

The view (:mod:`jobstore.mount.view`) turns paths into what ``ls`` and ``cat``
show; a :class:`Source` answers for the records behind them. There is one
source per kind of store: ours (any backend), Toil's ``file:`` store and
Toil's ``aws:`` store. Everything a source knows about where a record lives
stays in its own module, so the view is the same for all of them.

A source is read-only but for the kill flag, which it sets the way Toil does.
Every call may block on storage: the view runs them in worker threads.

Names are what the tree shows: one path component per job under ``jobs/``
(a source whose job IDs hold ``/`` maps them to one component and back),
file IDs as paths under ``files/``, shared file names under ``shared/`` and one
name per log message under ``logs/``, in the order they were written.
"""

from __future__ import annotations

import contextlib
import enum
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from toil.common import Config
    from toil.job import JobDescription

    from jobstore.backend import ObjectInfo
    from jobstore.run import Run, RunMemo


#: Schemes of Toil's own stores, which the view reads with sources of its own.
TOIL_SCHEMES = ("file", "aws")


class SourceUnavailable(Exception):
    """Why a locator names nothing to show, in one line for the user of a command."""


class Missing(Exception):
    """No record by that name (now): the view answers ENOENT."""


class Corrupt(Exception):
    """A record that is there but does not load; the source has logged it (once).

    The view still lists it and serves its stored bytes; what needs it loaded
    answers EIO.
    """


class Kind(enum.Enum):
    """The trees of stored objects a source lists and opens by path."""

    FILES = "files"
    SHARED = "shared"
    LOGS = "logs"


@dataclass(frozen=True, slots=True)
class Entry:
    """One name in a listing, and whether more names lie below it."""

    name: str
    is_dir: bool


class Source(ABC):
    """One store's records, for the view."""

    #: The locator the store was opened by (shown as the mount's file system name).
    locator: str
    #: How many calls are worth running side by side (remote stores: many).
    concurrency: int = 1

    @property
    @abstractmethod
    def config(self) -> Config:
        """The run's Toil configuration (workflow ID, retry count, ...)."""

    # ------------------------------------------------------------------ jobs

    @abstractmethod
    def job_segments(self) -> int:
        """How many segments the job listing has (1 when it is listed in one go).

        Segments let a huge ``jobs/`` be listed, and resumed, a part at a time:
        ours has one per shard of its layout.
        """

    @abstractmethod
    def job_names(self, segment: int) -> Iterator[tuple[int, str]]:
        """``(segment, name)`` of every job in ``segment`` and the segments after it, in order."""

    @abstractmethod
    def job_id(self, name: str) -> str:
        """The job ID a ``jobs/`` name stands for. Raises :class:`Missing` for no such name."""

    @abstractmethod
    def job_name(self, job_id: str) -> str:
        """The ``jobs/`` name of a job ID (the inverse of :meth:`job_id`)."""

    @abstractmethod
    def job_bytes(self, job_id: str) -> tuple[ObjectInfo, bytes]:
        """The job's stored description, one version: its info and its bytes. :class:`Missing`."""

    @abstractmethod
    def job_info(self, job_id: str) -> ObjectInfo:
        """The stored description's info alone (cheaper than its bytes). :class:`Missing`."""

    @abstractmethod
    def job_from_bytes(self, job_id: str, data: bytes) -> JobDescription:
        """The description of ``job_id`` those bytes hold, as Toil's ``load_job`` gives it.

        Raises :class:`Corrupt` when they hold none.
        """

    # ------------------------------------------------------ stored objects

    @abstractmethod
    def file_path(self, file_id: str) -> tuple[str, ...]:
        """Where a file ID (a job's log, say) shows under ``files/``."""

    @abstractmethod
    def listdir(self, kind: Kind, path: tuple[str, ...]) -> Iterator[Entry]:
        """The names one level below ``path`` of a tree, sorted. Raises :class:`Missing`.

        Only names a directory entry can have; a stray object the tree cannot
        show is left out (with a warning naming it, once).
        """

    @abstractmethod
    def stat(self, kind: Kind, path: tuple[str, ...]) -> ObjectInfo | None:
        """The object at ``path``: its info, or None for a directory. Raises :class:`Missing`."""

    @abstractmethod
    def open(
        self, kind: Kind, path: tuple[str, ...], start: int = 0, version: str | None = None
    ) -> contextlib.AbstractContextManager[tuple[ObjectInfo, BinaryIO]]:
        """One version of the object at ``path``: its info and its bytes from ``start`` on.

        As :meth:`jobstore.backend.Backend.open_version`: the info is that of the
        very version the stream reads; with ``version``, only that version is
        opened (else :class:`jobstore.backend.VersionGone`), so that a reader
        reopening further on never mixes two versions. Raises :class:`Missing`
        on entry when there is no object at ``path``.
        """

    # ------------------------------------------------------------ the run

    @abstractmethod
    def kill_flag(self) -> bool:
        """Whether the run was told to stop."""

    @abstractmethod
    def set_kill_flag(self, kill: bool) -> None:
        """Tell the run to stop (True) or clear that (False), as ``toil kill`` does."""

    @abstractmethod
    def read_run(self, memo: RunMemo) -> Run:
        """The run view's snapshot of the run (see :mod:`jobstore.run`).

        ``memo`` is what the last snapshot kept (summaries of job versions,
        events): only what changed since needs reading.
        """


def canonical(locator: str) -> str:
    """The locator as any process in any directory must see it (the daemon works from /)."""
    scheme, _, rest = locator.partition(":")
    if scheme == "file" and rest:
        import os

        return f"file:{os.path.abspath(os.path.expanduser(rest))}"
    if scheme in TOIL_SCHEMES:
        return locator
    from jobstore.locator import InvalidLocator, parse_locator

    try:
        return parse_locator(locator).canonical
    except InvalidLocator as e:
        raise SourceUnavailable(str(e)) from None


def open_source(locator: str) -> Source:
    """What to show for ``locator``: one of our stores, or one of Toil's own.

    Raises :class:`SourceUnavailable` with a one-line reason.
    """
    if locator.partition(":")[0] in TOIL_SCHEMES:
        from jobstore.mount.toil_sources import NoToilStore, open_toil_source

        try:
            return open_toil_source(locator)
        except NoToilStore as e:
            raise SourceUnavailable(str(e)) from None
    from jobstore.mount.ours import StoreSource
    from jobstore.store import StoreUnavailable, open_store

    try:
        return StoreSource(open_store(locator))
    except StoreUnavailable as e:
        raise SourceUnavailable(str(e)) from None
