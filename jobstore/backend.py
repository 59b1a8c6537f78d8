"""The storage interface that every backend implements.

A backend stores whole objects under '/'-separated keys, nothing more. All of
Toil's semantics (job IDs, file IDs, hints, cleanup, logs, the kill flag) are
written once, in :mod:`jobstore.store`, on top of this interface, so a new
backend only has to be a faithful object store:

* a write is atomic: readers see the complete old or the complete new object,
  never a part, and a writer killed half-way leaves the old object (or none);
* a completed write is visible at once to every other process (read-your-writes);
* a missing object raises :class:`NotFound` at once, without waiting.

Keys are produced by the store layer and validated there; backends may assume
components are non-empty and never ``.`` or ``..``.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from toil.common import Config


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

    # ----------------------------------------------------------- lifecycle

    @abstractmethod
    def initialize(self) -> None:
        """Create the container for a new store.

        Raises :class:`StoreExists` when the location already holds data.
        """

    @abstractmethod
    def destroy(self) -> None:
        """Delete every object of the store; idempotent, safe to call again after a failure."""

    def remove_debris(self) -> None:  # noqa: B027 - optional hook
        """Remove what writers killed long ago left behind, where the backend can see it.

        Called when a workflow restarts. Debris is never visible through the
        other methods; this only gives the space back.
        """

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
    def put_if_absent(self, key: str) -> bool:
        """Create an empty object unless one exists; True when this call created it."""

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
    def get_file(self, key: str, path: str) -> ObjectInfo:
        """Copy the object to the local ``path`` atomically. Raises :class:`NotFound`."""

    def local_path(self, key: str) -> str | None:
        """Where the object lives on a local file system, when it does (for links)."""
        return None

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Size, executability and modification time. Raises :class:`NotFound`."""

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

    def delete_prefix(self, prefix: str) -> None:
        """Remove every object whose key starts with ``prefix`` (a '/'-terminated prefix)."""
        self.delete_many(list(self.list(prefix)))

    # -------------------------------------------------------------- listing

    @abstractmethod
    def list(self, prefix: str, start_after: str | None = None) -> Iterator[str]:
        """Every key under ``prefix``, in sorted order, after ``start_after`` if given."""

    @abstractmethod
    def listdir(self, prefix: str) -> Iterator[DirEntry]:
        """One level below ``prefix`` (a '/'-terminated prefix, or ''), in sorted order."""
