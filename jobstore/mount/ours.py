"""The view's source for our own stores: a :class:`JobStore` and the keys of its layout.

Every key the view needs is made here, by :mod:`jobstore.layout`; a name that
no key can come from (checked there) is simply :class:`Missing`.

Damage (see :mod:`jobstore.layout`): stray keys under ``jobs/``, ``shared/``
and ``logs/`` are left out of listings and lookups with a warning naming the
key, as are names no directory entry can have (empty, ``.``, ``..``, too long)
and, on S3, a "directory" that shares its name with a file (the file wins).
``files/`` shows every other key, stray or not: it is a plain tree of keys.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, BinaryIO

from jobstore import layout, run
from jobstore.backend import NotFound
from jobstore.mount.source import Corrupt, Entry, Kind, Missing, Source
from jobstore.store import CorruptJobError, warn_once, warn_stray

if TYPE_CHECKING:
    from toil.common import Config
    from toil.job import JobDescription

    from jobstore.backend import ObjectInfo
    from jobstore.store import JobStore

_PREFIXES = {Kind.FILES: layout.FILES, Kind.SHARED: layout.SHARED, Kind.LOGS: layout.LOGS}
#: Which names of the flat trees are the store's objects (any other is stray).
_VALID: dict[Kind, Callable[[str], bool]] = {
    Kind.SHARED: lambda name: layout.shared_name_from_key(layout.SHARED + name) is not None,
    Kind.LOGS: layout.is_log_name,
}


class StoreSource(Source):
    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.backend = store.backend
        self.locator = store.locator
        self.concurrency = store.backend.concurrency

    @property
    def config(self) -> Config:
        return self.store.config

    # ------------------------------------------------------------------ jobs

    def job_segments(self) -> int:
        return layout.JOB_SHARDS

    def job_names(self, segment: int) -> Iterator[tuple[int, str]]:
        # "jobs/<shard>" sorts after every key of earlier shards and before the shard's own.
        start_after = f"{layout.JOBS}{segment:03x}" if segment else None
        for key in self.backend.list(layout.JOBS, start_after=start_after):
            job_id = layout.job_id_from_key(key)
            if job_id is None:
                warn_stray(self.locator, key, layout.stray_reason(key) or "not a job key")
            else:
                yield int(layout.shard(job_id), 16), job_id

    def job_id(self, name: str) -> str:
        if not layout.is_job_id(name):
            raise Missing(name)
        return name

    def job_name(self, job_id: str) -> str:
        return job_id

    def job_info(self, job_id: str) -> ObjectInfo:
        return _found(self.backend.stat, layout.job_key(self.job_id(job_id)))

    def job_bytes(self, job_id: str) -> tuple[ObjectInfo, bytes]:
        key = layout.job_key(self.job_id(job_id))
        try:
            with self.backend.open_version(key) as (info, stream):
                return info, stream.read()
        except NotFound:
            raise Missing(key) from None

    def job_from_bytes(self, job_id: str, data: bytes) -> JobDescription:
        try:
            return self.store.job_from_bytes(job_id, data)
        except CorruptJobError as e:
            warn_once(self.locator, e.key, f"{e} in {self.locator}")
            raise Corrupt(str(e)) from None

    # ------------------------------------------------------ stored objects

    def file_path(self, file_id: str) -> tuple[str, ...]:
        return tuple(str(file_id).split("/"))

    def _key(self, kind: Kind, path: tuple[str, ...]) -> str:
        """The key of the object at ``path``; :class:`Missing` for a path no key has."""
        if kind is not Kind.FILES and (len(path) != 1 or not _VALID[kind](path[0])):
            raise Missing(path)
        try:
            return _PREFIXES[kind] + layout.check_path("/".join(path), "path")
        except layout.InvalidName:
            raise Missing(path) from None

    def listdir(self, kind: Kind, path: tuple[str, ...]) -> Iterator[Entry]:
        prefix = self._key(kind, path) + "/" if path else _PREFIXES[kind]
        valid = _VALID.get(kind)
        held: Entry | None = None  # S3 lists a file and a "directory" of one name apart
        for e in self.backend.listdir(prefix):
            key = prefix + e.name + ("/" if e.is_dir else "")
            if valid is not None and (e.is_dir or not valid(e.name)):
                warn_stray(self.locator, key, f"no {kind.value}/ entry can be named so")
            elif not _is_entry_name(e.name):
                warn_stray(self.locator, key, "not a name a directory entry can have")
            elif held is not None and e.name == held.name:
                # The file wins, as in stat; the keys below the directory stay unseen.
                warn_stray(self.locator, prefix + e.name + "/", "a file of the same name hides it")
                held = held if not held.is_dir else Entry(e.name, e.is_dir)
            else:
                if held is not None:
                    yield held
                held = Entry(e.name, e.is_dir)
        if held is not None:
            yield held

    def stat(self, kind: Kind, path: tuple[str, ...]) -> ObjectInfo | None:
        key = self._key(kind, path)
        try:
            return self.backend.stat(key)
        except NotFound:
            pass
        # No object: a directory when some file ID continues below it.
        if kind is Kind.FILES and next(iter(self.backend.listdir(key + "/")), None) is not None:
            return None
        raise Missing(key)

    @contextlib.contextmanager
    def open(
        self, kind: Kind, path: tuple[str, ...], start: int = 0, version: str | None = None
    ) -> Iterator[tuple[ObjectInfo, BinaryIO]]:
        key = self._key(kind, path)
        opened = False
        try:
            with self.backend.open_version(key, start, version) as found:
                opened = True
                yield found
        except NotFound:
            if opened:
                raise
            raise Missing(key) from None

    # ------------------------------------------------------------ the run

    def kill_flag(self) -> bool:
        return self.store.read_kill_flag()

    def set_kill_flag(self, kill: bool) -> None:
        if not self.backend.exists(layout.CONFIG):
            # Destroyed under the mount: the flag would be the only object of a store
            # that is no more (on S3 a put succeeds wherever the bucket is).
            raise Missing(layout.CONFIG)
        self.store.write_kill_flag(kill=kill)

    def read_run(self, memo: run.RunMemo) -> run.Run:
        return run.read_run(self.store, memo)


def _found(call: Callable[[str], ObjectInfo], key: str) -> ObjectInfo:
    try:
        return call(key)
    except NotFound:
        raise Missing(key) from None


def _is_entry_name(name: str) -> bool:
    return (
        name not in ("", ".", "..")
        and "\x00" not in name
        and len(name.encode("utf-8", "surrogateescape")) <= layout.MAX_COMPONENT_BYTES
    )
