"""The storage interface that every backend implements.

A backend stores whole objects under '/'-separated keys, nothing more. All of
Toil's semantics (job IDs, file IDs, hints, cleanup, logs, the kill flag) are
written once, in :mod:`jobstore.store`, on top of this interface, so a new
backend only has to be a faithful object store:

* a write is atomic: readers see the complete old or the complete new object,
  never a part, and a writer killed half-way leaves the old object (or none);
* a completed write is visible at once to every other process (read-your-writes);
* a missing object raises :class:`NotFound` at once, without waiting;
* a read can be pinned to one version (:meth:`Backend.open_version`): its size,
  times and bytes all come from that version, however the object is rewritten
  meanwhile.

Keys are produced by the store layer and validated there; backends may assume
components are non-empty and never ``.`` or ``..``. A "directory" is no object:
it exists only as the prefix of keys below it, and never shows in
:meth:`Backend.list` or as a key that :meth:`Backend.stat` finds.

Errors, the same on every backend as far as callers can tell:

* :class:`NotFound` (a ``KeyError``): the object does not exist. Nothing else
  means that, and it comes at once.
* :class:`StoreExists`: ``initialize`` found a store or foreign data.
* :class:`~jobstore.locator.InvalidLocator` (a ``ValueError``): from
  :meth:`Backend.parse_location`, before any I/O.
* Any other failure of the storage: a remote backend raises a
  :class:`BackendError` subclass naming the object and the cause (``s3:``
  raises ``S3Error`` once botocore's retries are spent); the ``local:`` backend
  lets the ``OSError`` of the failing system call through (``PermissionError``,
  ``ENOSPC``, ...), because its errno is what a user of a file system acts on
  and what the FUSE view answers with.

To add a backend, subclass :class:`Backend` in a module of its own and register
it in :data:`jobstore.locator.BACKENDS`.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from toil.common import Config

    from jobstore.locator import Locator


class BackendError(Exception):
    """A storage operation failed for a reason other than a missing object."""


class NotFound(KeyError):
    """The object does not exist."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return f"no object at key {self.key!r}"


class VersionGone(BackendError):
    """The version of an object a reader is pinned to is stored no more (replaced or deleted).

    Raised instead of reading on in another version, which would return a mix.
    """


class StoreExists(BackendError):
    """``initialize`` found a store (or foreign data) where it should create one."""


@dataclass(frozen=True)
class ObjectInfo:
    """What a single metadata request tells about one version of an object."""

    size: int
    executable: bool
    mtime: float
    #: The version's identity: equal for two infos of one stored version, different for
    #: two writes (whatever their sizes and times; S3 times are whole seconds).
    version: str


@dataclass(frozen=True)
class Debris:
    """What a killed writer or deleter left outside every key (no listing shows it)."""

    #: How reports name it (the backend's own words: a temporary file, an upload).
    name: str
    #: Seconds since it was last written.
    age: float
    #: What the backend needs to remove it.
    handle: str


@dataclass(frozen=True)
class DirEntry:
    """One level of a key listing: a name and whether more keys lie below it."""

    name: str
    is_dir: bool


class Backend(ABC):
    """An object store holding one job store's objects."""

    #: How many requests are worth running side by side (1 for local disks).
    concurrency: int = 1
    #: Whether Toil's caching file store pays off on top of this backend.
    prefers_caching: bool = False

    # ------------------------------------------------------------- locators

    @classmethod
    @abstractmethod
    def parse_location(cls, rest: str, locator: str) -> tuple[str, str]:
        """``(location, prefix)`` of a locator whose text after ``<scheme>:`` is ``rest``.

        Pure and quick (it runs in every Toil process that sees a locator);
        raises :class:`~jobstore.locator.InvalidLocator`, quoting ``locator``,
        for what this backend cannot open. The prefix is '' or ends in '/'.
        """

    @classmethod
    @abstractmethod
    def from_locator(cls, locator: Locator) -> Backend:
        """The backend for a parsed locator; touches no storage yet."""

    # ----------------------------------------------------------- lifecycle

    @abstractmethod
    def initialize(self) -> None:
        """Create the container for a new store.

        Raises :class:`StoreExists` when the location already holds data. This
        check is only a quick, clear refusal: two racing initializers may both
        pass it. The race is decided by creating the store's config with
        :meth:`put_if_absent` (see ``JobStore.initialize``).
        """

    @abstractmethod
    def destroy(self) -> None:
        """Delete every object of the store; idempotent, safe to call again after a failure."""

    #: Debris younger than this may belong to a writer still at work (one copying
    #: a huge file for hours): only older debris is removed on restart.
    stale_debris_seconds: float = 24 * 3600

    def remove_debris(self) -> None:
        """Remove what writers killed long ago left behind, where the backend can see it.

        Called when a workflow restarts. Debris is never visible through the
        other methods; this only gives the space back.
        """
        for item in list(self.debris(self.stale_debris_seconds)):
            self.clear_debris(item, keep_under=None)

    def debris(self, older_than: float) -> Iterator[Debris]:
        """Debris last written more than ``older_than`` seconds ago."""
        return iter(())

    def clear_debris(self, item: Debris, keep_under: str | None) -> bool:
        """Remove ``item``; with ``keep_under``, move it to ``keep_under + item.name`` instead.

        Backends that cannot keep an item (an unfinished S3 upload holds no
        object) remove it either way. True when the item was kept.
        """
        raise NotImplementedError  # only backends whose debris() finds anything get here

    def env(self) -> dict[str, str]:
        """Environment variables a worker on another machine needs to reach this backend."""
        return {}

    def configure(self, config: Config) -> None:  # noqa: B027 - optional hook
        """Take note of the store's Toil config once it is known (after initialize/resume).

        For settings that change how objects are stored, such as an encryption key.
        """

    # --------------------------------------------------------------- writes

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, executable: bool = False) -> None:
        """Store ``data`` at ``key`` atomically, replacing any old object."""

    @abstractmethod
    def put_file(self, key: str, path: str, executable: bool = False) -> None:
        """Store a copy of the local file at ``path`` atomically."""

    @abstractmethod
    def writer(
        self, key: str, executable: bool = False
    ) -> contextlib.AbstractContextManager[BinaryIO]:
        """Stream an object in; it appears only when the block exits without an exception."""

    @abstractmethod
    def put_if_absent(self, key: str, data: bytes = b"") -> bool:
        """Create an object holding ``data`` unless one exists; True when this call created it.

        Atomic against every other writer of ``key``: of several racing calls
        exactly one returns True, and nobody ever sees the object part-written.
        Claims (hinted file names, a new store's config, the leader) rest on this.
        """

    def put_symlink(self, key: str, target: str) -> bool:
        """Store a link to the local file ``target`` instead of a copy, where the backend can.

        Returns False when it cannot, and the caller copies instead.
        """
        return False

    # ---------------------------------------------------------------- reads

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """The whole object. Raises :class:`NotFound`."""

    @abstractmethod
    def reader(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """A readable stream of the object. Raises :class:`NotFound` on entry."""

    @abstractmethod
    def open_version(
        self, key: str, start: int = 0, version: str | None = None
    ) -> contextlib.AbstractContextManager[tuple[ObjectInfo, BinaryIO]]:
        """One version of the object: its info and a stream of its bytes from ``start`` on.

        The info describes the very version the stream reads (never a separate
        stat, which a rewrite in between would make another version's), so a
        reader that sizes its read by it gets one whole version. The stream
        never moves to another version: where it would have to (a resumed S3
        body), it raises :class:`VersionGone`. With ``version``, only that
        version is opened, else :class:`VersionGone`; without, a missing object
        raises :class:`NotFound` on entry.
        """

    @abstractmethod
    def get_file(self, key: str, path: str) -> ObjectInfo:
        """Copy the object to the local ``path`` atomically. Raises :class:`NotFound`."""

    def local_path(self, key: str) -> str | None:
        """Where the object lives on a local file system, when it does (for links)."""
        return None

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Size, executability, modification time and version. Raises :class:`NotFound`."""

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except NotFound:
            return False
        return True

    @abstractmethod
    def url(self, key: str) -> str:
        """A URL that reads the object for at least an hour. Raises :class:`NotFound`."""

    # -------------------------------------------------------------- deletes

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove one object; missing objects are not an error."""

    def delete_many(self, keys: Iterable[str]) -> None:
        """Remove several objects; backends batch this where they can."""
        for key in keys:
            self.delete(key)

    def move(self, src: str, dst: str) -> None:
        """Move the object at ``src`` to ``dst`` (a new key): copied whole, then deleted.

        Raises :class:`NotFound`. Backends with a rename override this.
        """
        executable = self.stat(src).executable
        with self.reader(src) as f, self.writer(dst, executable) as out:
            while chunk := f.read(1 << 20):
                out.write(chunk)
        self.delete(src)

    def delete_prefix(self, prefix: str) -> None:
        """Remove every object whose key starts with ``prefix`` (a '/'-terminated prefix)."""
        self.delete_many(list(self.list(prefix)))

    def delete_with_prefix(self, key: str, prefix: str) -> None:
        """Remove ``key``, then every object under ``prefix``.

        ``key`` is gone before anything under ``prefix`` is: a caller killed
        half-way leaves objects under ``prefix`` without ``key``, never the
        reverse. Remote backends overlap the listing with the delete.
        """
        self.delete(key)
        self.delete_prefix(prefix)

    def prune_empty_parents(self, key: str, stop: str) -> None:  # noqa: B027 - optional hook
        """After ``key`` was deleted: give back what held it, up to (not including) ``stop``.

        For backends with real directories (``local:``), where a directory per
        file would otherwise pile up empty; object stores have nothing to do.
        """

    # -------------------------------------------------------------- listing

    @abstractmethod
    def list(self, prefix: str, start_after: str | None = None) -> Iterator[str]:
        """Every key under ``prefix``, in sorted order, after ``start_after`` if given."""

    def list_versions(self, prefix: str) -> Iterator[tuple[str, str]]:
        """Every key under ``prefix`` with its version (:attr:`ObjectInfo.version`), sorted.

        For readers that keep what they derived from each version and want to
        know what changed. Backends whose listings carry versions (S3's ETags)
        answer without a request per key.
        """
        for key in self.list(prefix):
            try:
                yield key, self.stat(key).version
            except NotFound:  # deleted since it was listed
                continue

    @abstractmethod
    def listdir(self, prefix: str) -> Iterator[DirEntry]:
        """One level below ``prefix`` (a '/'-terminated prefix, or ''), in sorted order."""
