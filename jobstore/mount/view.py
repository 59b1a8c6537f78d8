"""The FUSE view's file system, as plain synchronous code over a :class:`JobStore`.

Everything here is a store query that maps a path to what the tree shows; none
of it knows about FUSE, inodes or trio, so it is tested directly and the FUSE
layer (:mod:`jobstore.mount.fs`) only adds inodes, handles, threads and errno. Each call
may block on storage: callers run it in a worker thread.

The tree (SPEC "The FUSE view")::

    jobs/<job-id>/{description.json,description.pickle,log}
    files/<file-id>          (an ID with '/' in it is a path of directories)
    shared/<name>
    logs/<entry>
    killflag

Nothing is cached across calls except rendered ``description.json`` documents,
keyed by the digest of the stored pickle, so every answer reflects what the
store holds now. An open file is one stored version: :meth:`View.open` takes its
attributes and its content from the same backend read (docs/SEMANTICS.md).
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from toil.jobStores.abstractJobStore import NoSuchJobException

from jobstore import layout
from jobstore.backend import Backend, NotFound, ObjectInfo

if TYPE_CHECKING:
    from toil.job import JobDescription

    from jobstore.store import JobStore

Path = tuple[str, ...]

ROOT_ENTRIES = ("files", "jobs", "killflag", "logs", "shared")
TOP_DIRS = frozenset(("files", "jobs", "logs", "shared"))
KILLFLAG = ("killflag",)
DESCRIPTION_JSON = "description.json"
DESCRIPTION_PICKLE = "description.pickle"
JOB_LOG = "log"

DIR_MODE = 0o555
FILE_MODE = 0o444
EXEC_MODE = 0o555
KILLFLAG_MODE = 0o644

#: Whitespace a kill flag word may carry after it (``echo`` adds a newline).
_TRAILING = b" \t\r\n"
_KILL_WORDS = {b"YES": True, b"NO": False}


# ================================================================== errors


class ViewError(Exception):
    """A request the view refuses; the FUSE layer answers it with an errno."""


class NoEntry(ViewError):
    """Nothing exists at this path (now)."""


class NotADir(ViewError):
    """A directory operation on a file."""


class IsADir(ViewError):
    """A file operation on a directory."""


class ReadOnly(ViewError):
    """A change to anything but the kill flag."""


class BadKillWord(ViewError):
    """The kill flag was given something other than ``YES`` or ``NO``."""


# ============================================================= attributes


@dataclass(frozen=True, slots=True)
class Attr:
    """What ``stat`` shows for one path."""

    is_dir: bool
    #: Permission bits only (the file type comes from ``is_dir``).
    mode: int
    size: int
    mtime_ns: int
    #: The stored version shown (:attr:`ObjectInfo.version`): equal for two looks at one
    #: version, different for two writes, whatever their sizes and times.
    version: str = ""
    #: The content may change while a reader has the file open or cached
    #: (descriptions, shared files, the kill flag): serve it without the page cache.
    live: bool = False


def parse_kill_word(data: bytes) -> bool | None:
    """What writing ``data`` to the kill flag means: True (kill), False (clear), None (neither)."""
    return _KILL_WORDS.get(data.rstrip(_TRAILING))


# ================================================================ content


class Content(Protocol):
    """An open file's bytes; ``read`` is called with one handle's requests one at a time."""

    def read(self, offset: int, size: int) -> bytes: ...

    def close(self) -> None: ...


class BytesContent:
    """Content rendered in full when the file was opened (small, generated files)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, offset: int, size: int) -> bytes:
        return self.data[offset : offset + size]

    def close(self) -> None:
        pass


class StreamContent:
    """One version of a stored object, read through the backend's stream kept open between reads.

    ``info`` is that version's (from the same backend read as the bytes), and
    every read returns bytes of that version or fails with
    :class:`~jobstore.backend.VersionGone`, never bytes of another.

    A stream over a real file is read with ``pread``: no shared position, so
    the kernel's concurrent read-ahead requests run side by side. Other streams
    (S3 bodies) only go forward: sequential reads (the common case) continue
    them, a jump forward skips, a jump back reopens the same version there; the
    caller runs one read of such a stream at a time (``concurrent`` is False).
    """

    _SKIP_CHUNK = 1 << 20

    def __init__(self, backend: Backend, key: str) -> None:
        self._backend = backend
        self._key = key
        self._stack = contextlib.ExitStack()
        self.info, self._stream = self._open(0, None)
        self._pos = 0
        self._fd: int | None = None
        with contextlib.suppress(OSError, ValueError, AttributeError):
            fd = self._stream.fileno()
            os.pread(fd, 0, 0)
            self._fd = fd

    @property
    def concurrent(self) -> bool:
        return self._fd is not None

    def _open(self, start: int, version: str | None) -> tuple[ObjectInfo, BinaryIO]:
        self._stack.close()
        self._stack = contextlib.ExitStack()
        info, stream = self._stack.enter_context(
            self._backend.open_version(self._key, start, version)
        )
        self._pos = start
        return info, stream

    def read(self, offset: int, size: int) -> bytes:
        if self._fd is not None:
            return os.pread(self._fd, size, offset)
        if offset != self._pos:
            self._move_to(offset)
        chunks: list[bytes] = []
        want = size
        while want > 0:
            chunk = self._stream.read(want)
            if not chunk:
                break
            chunks.append(chunk)
            want -= len(chunk)
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._pos += len(data)
        return data

    def _move_to(self, offset: int) -> None:
        if offset < self._pos:
            _, self._stream = self._open(offset, self.info.version)
        while self._pos < offset:
            skipped = len(self._stream.read(min(self._SKIP_CHUNK, offset - self._pos)))
            if not skipped:
                return  # past the end: the read that follows returns b""
            self._pos += skipped

    def close(self) -> None:
        self._stack.close()


# ========================================================== dir listings


@dataclass(frozen=True, slots=True)
class DirEntry:
    name: str
    #: This entry's place in the directory; a listing resumes after it.
    position: int
    attr: Attr


class Listing(Protocol):
    """One directory's contents as a stream of entries, segment by segment.

    A segment is a part of the directory that is listed as a whole: one
    ``jobs/<shard>/`` directory of the store for ``jobs/``, the whole directory
    for the others.
    """

    #: Bits of an entry's position that hold its name's hash (the rest: its segment).
    hash_bits: int

    def entries(self, segment: int) -> Iterable[tuple[int, str, bool]]:
        """``(segment, name, is_dir)`` of every entry in ``segment`` and after, in segment order."""
        ...

    def attr(self, name: str, is_dir: bool) -> Attr | None:
        """The attributes of one entry, or None when it vanished since it was listed."""
        ...


def position(segment: int, name: str, hash_bits: int) -> int:
    """A positive 63-bit position for ``name``: its segment, then a hash of the name.

    Positions depend on nothing but the name, so a listing can resume after any
    position it handed out however entries come and go in between: nothing is
    skipped or repeated (two names of one segment sharing a hash would be;
    with 50 or more bits of hash that is vanishingly rare).
    """
    digest = hashlib.blake2b(name.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return (segment << hash_bits) | (int.from_bytes(digest, "big") % ((1 << hash_bits) - 1) + 1)


class DirReader:
    """Reads one open directory in pages, resuming after any position it handed out.

    Keeps a window of whole segments, sorted by position, and the stream that
    continues after it: reading on takes the next segments from that stream (one
    request per 1,000 jobs on S3), so a directory of 100,000 jobs is never held
    at once. A position outside the window (a seek, or the kernel coming back
    to an older position) starts a new stream at its segment.
    """

    def __init__(self, listing: Listing) -> None:
        self._listing = listing
        self._bits = listing.hash_bits
        self._last_segment = (1 << (63 - self._bits)) - 1
        self._source: Iterator[tuple[int, str, bool]] | None = None
        self._ahead: tuple[int, str, bool] | None = None  # first entry after the window
        # The window: every entry of segments [lo, hi], sorted by position.
        self._lo, self._hi = 0, -1
        self._positions: list[int] = []
        self._entries: list[tuple[int, str, bool]] = []

    def read(self, start: int, limit: int) -> list[DirEntry]:
        """Up to ``limit`` entries after position ``start`` (0: from the beginning)."""
        segment = start >> self._bits
        if start == 0 or not self._lo <= segment <= self._hi:
            self._source = iter(self._listing.entries(segment))
            self._ahead = None
            self._lo, self._hi = segment, segment - 1
            self._positions, self._entries = [], []
        out: list[DirEntry] = []
        i = bisect.bisect_right(self._positions, start)
        while len(out) < limit:
            if i == len(self._entries):
                if not self._advance(limit - len(out)):
                    break
                i = bisect.bisect_right(self._positions, start)
                continue
            pos, name, is_dir = self._entries[i]
            i += 1
            attr = self._listing.attr(name, is_dir)
            if attr is not None:
                out.append(DirEntry(name, pos, attr))
                start = pos
        return out

    def _advance(self, want: int) -> bool:
        """Move the window on by whole segments holding ``want`` entries or more.

        The last segment of the old window stays in it: the kernel may come back
        for its end when our reply did not fit. False when the stream is done.
        """
        if self._source is None:
            return False
        batch: list[tuple[int, str, bool]] = []
        segment = -1
        while True:
            item = self._ahead if self._ahead is not None else next(self._source, None)
            self._ahead = None
            if item is None:
                self._source = None
                break
            if item[0] != segment and len(batch) >= want:
                self._ahead = item
                break
            segment = item[0]
            batch.append((position(segment, item[1], self._bits), item[1], item[2]))
        if not batch:
            self._hi = self._last_segment
            return False
        batch.sort()
        tail_segment = self._entries[-1][0] >> self._bits if self._entries else None
        tail = [e for e in self._entries if e[0] >> self._bits == tail_segment]
        self._lo = self._hi + 1 if tail_segment is None else tail_segment
        self._hi = self._last_segment if self._source is None else segment
        self._entries = tail + batch
        self._positions = [e[0] for e in self._entries]
        return True


# ================================================================= the view


class View:
    """Paths of the mounted tree, answered from a resumed :class:`JobStore`."""

    #: How many rendered descriptions to keep (re-rendering means unpickling).
    JSON_CACHE_SIZE = 256

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.backend = store.backend
        self.mount_time_ns = time.time_ns()
        self._json_cache: OrderedDict[bytes, bytes] = OrderedDict()
        self._json_lock = threading.Lock()

    # -------------------------------------------------------------- getattr

    def getattr(self, path: Path) -> Attr:
        if not path:
            return self._dir()
        top, rest = path[0], path[1:]
        if path == KILLFLAG:
            return self._kill_flag_attr(self.kill_flag())
        if top not in TOP_DIRS:
            raise NoEntry(path)
        if not rest:
            return self._dir()
        if top == "jobs":
            return self._job_attr(rest)
        if top == "shared":
            if len(rest) != 1:
                raise NoEntry(path)
            return self._object_attr(_checked(layout.shared_key, rest[0]), live=True)
        if top == "logs":
            if len(rest) != 1:
                raise NoEntry(path)
            return self._object_attr(_checked(_log_key, rest[0]))
        return self._files_attr(rest)

    def _dir(self) -> Attr:
        return Attr(True, DIR_MODE, 0, self.mount_time_ns)

    def _kill_flag_attr(self, data: bytes) -> Attr:
        return Attr(False, KILLFLAG_MODE, len(data), self.mount_time_ns, data.decode(), live=True)

    def _object_attr(self, key: str, live: bool = False) -> Attr:
        try:
            info = self.backend.stat(key)
        except NotFound:
            raise NoEntry(key) from None
        return _file_attr(info, live)

    def _files_attr(self, rest: Path) -> Attr:
        key = _checked(layout.file_key, "/".join(rest))
        try:
            return _file_attr(self.backend.stat(key))
        except NotFound:
            pass
        # No object: a directory when some file ID continues below it.
        if next(iter(self.backend.listdir(key + "/")), None) is None:
            raise NoEntry(key)
        return self._dir()

    def _job_info(self, job_id: str) -> ObjectInfo:
        key = _checked(layout.job_key, job_id)
        try:
            return self.backend.stat(key)
        except NotFound:
            raise NoEntry(key) from None

    def _job_version(self, job_id: str) -> tuple[ObjectInfo, bytes]:
        """The stored job as it is now, and that very version's info (one request on S3)."""
        key = _checked(layout.job_key, job_id)
        try:
            with self.backend.open_version(key) as (info, stream):
                return info, stream.read()
        except NotFound:
            raise NoEntry(key) from None

    def _job_attr(self, rest: Path) -> Attr:
        if len(rest) > 2:
            raise NoEntry(rest)
        job_id = rest[0]
        name = rest[1] if len(rest) == 2 else None
        if name == DESCRIPTION_JSON:
            info, data = self._job_version(job_id)
            return _json_attr(self._render(data), info)
        info = self._job_info(job_id)
        if name is None:
            # The mount's time, as in listings (which do not stat each job); the job's
            # own time is on its description files.
            return self._dir()
        if name == DESCRIPTION_PICKLE:
            return _file_attr(info, live=True)
        if name == JOB_LOG:
            log_id = self._job_log_id(job_id)
            return self._object_attr(layout.file_key(log_id), live=True)
        raise NoEntry(rest)

    # ------------------------------------------------------------- listing

    def listing(self, path: Path) -> Listing:
        """The listing of the directory at ``path`` (NotADir for a file, NoEntry when missing)."""
        if not self.getattr(path).is_dir:
            raise NotADir(path)
        if not path:
            return _FixedListing(self, path, [(n, n in TOP_DIRS) for n in ROOT_ENTRIES])
        if path == ("jobs",):
            return _JobsListing(self)
        if path[0] == "jobs":
            names = [DESCRIPTION_JSON, DESCRIPTION_PICKLE]
            if self._job_log_id(path[1], missing_ok=True) is not None:
                names.append(JOB_LOG)
            return _FixedListing(self, path, [(n, False) for n in names])
        prefix = {"shared": layout.SHARED, "logs": layout.LOGS}.get(path[0])
        if prefix is None:  # files/...
            prefix = layout.FILES + "".join(p + "/" for p in path[1:])
        return _BackendListing(self, path, prefix)

    # ---------------------------------------------------------------- open

    def open(self, path: Path) -> tuple[Attr, Content]:
        """One version of the file at ``path``: its attributes and its content, from one read.

        The attributes describe exactly the bytes the content returns, however
        the store changes meanwhile: a stat before opening could be another
        version's, whose size would cut this one short or pad it.
        """
        if path == KILLFLAG:
            data = self.kill_flag()
            return self._kill_flag_attr(data), BytesContent(data)
        if len(path) < 2 or (path[0] == "jobs" and len(path) == 2):
            self.getattr(path)  # NoEntry when it is not there
            raise IsADir(path)
        if len(path) == 3 and path[0] == "jobs" and path[2] == DESCRIPTION_JSON:
            info, data = self._job_version(path[1])
            rendered = self._render(data)
            return _json_attr(rendered, info), BytesContent(rendered)
        key, live = self._key_of(path)
        try:
            content = StreamContent(self.backend, key)
        except NotFound:
            if self.getattr(path).is_dir:  # files/<a directory of file IDs>
                raise IsADir(path) from None
            raise NoEntry(key) from None
        return _file_attr(content.info, live), content

    def _key_of(self, path: Path) -> tuple[str, bool]:
        """The key of the stored object a file path shows, and whether it changes in place."""
        top, rest = path[0], path[1:]
        if top == "jobs" and len(rest) == 2:
            job_id, name = rest
            if name == DESCRIPTION_PICKLE:
                return _checked(layout.job_key, job_id), True
            if name == JOB_LOG:
                return layout.file_key(self._job_log_id(job_id)), True
            raise NoEntry(path)
        if top in ("shared", "logs") and len(rest) != 1:
            raise NoEntry(path)
        if top == "shared":
            return _checked(layout.shared_key, rest[0]), True
        if top == "logs":
            return _checked(_log_key, rest[0]), False
        if top == "files":
            return _checked(layout.file_key, "/".join(rest)), False
        raise NoEntry(path)

    # ------------------------------------------------------------ killflag

    def kill_flag(self) -> bytes:
        return b"YES\n" if self.store.read_kill_flag() else b"NO\n"

    def set_kill_flag(self, data: bytes) -> None:
        """Act on a word written to ``killflag``: ``YES`` kills the run, ``NO`` clears the flag."""
        kill = parse_kill_word(data)
        if kill is None:
            raise BadKillWord(data[:20])
        if not self.backend.exists(layout.CONFIG):
            # Destroyed under the mount: the flag would be the only object of a store
            # that is no more (on S3 a put succeeds wherever the bucket is).
            raise NoEntry(layout.CONFIG)
        self.store.write_kill_flag(kill=kill)

    # ---------------------------------------------------------------- jobs

    def _load_job(self, job_id: str) -> JobDescription:
        try:
            return self.store.load_job(job_id)
        except NoSuchJobException:
            raise NoEntry(job_id) from None

    def _job_log_id(self, job_id: str, missing_ok: bool = False) -> Any:
        log_id = self._load_job(job_id).logJobStoreFileID
        if log_id is None and not missing_ok:
            raise NoEntry((job_id, JOB_LOG))
        return log_id

    def _render(self, data: bytes) -> bytes:
        """The description stored as ``data`` (a pickled job), rendered as JSON.

        Renders are cached by the stored bytes' digest: unpickling is the costly
        part, and a size and time do not tell two versions apart (S3 times are
        whole seconds).
        """
        digest = hashlib.blake2b(data, digest_size=16).digest()
        with self._json_lock:
            cached = self._json_cache.get(digest)
            if cached is not None:
                self._json_cache.move_to_end(digest)
                return cached
        rendered = render_description(self.store.job_from_bytes(data))
        with self._json_lock:
            self._json_cache[digest] = rendered
            while len(self._json_cache) > self.JSON_CACHE_SIZE:
                self._json_cache.popitem(last=False)
        return rendered


def render_description(job: JobDescription) -> bytes:
    """A job description as JSON, from Toil's public JobDescription API."""
    phases: dict[int, list[str]] = {}
    for phase, successor in job.successors_by_phase():
        phases.setdefault(phase, []).append(str(successor))
    doc = {
        "id": str(job.jobStoreID),
        "name": job.jobName,
        "unit": job.unitName,
        "display_name": job.displayName,
        "type": type(job).__name__,
        "remaining_try_count": job.remainingTryCount,
        "requirements": {
            "memory": job.memory,
            "cores": job.cores,
            "disk": job.disk,
            "preemptible": job.preemptible,
            "accelerators": [dict(a) for a in job.accelerators],
        },
        "local": job.local,
        # Phases run from the highest number down to 0.
        "successors": [sorted(phases.get(i, [])) for i in range(len(job.successor_phases))],
        "services": sorted(str(s) for s in job.services),
        "predecessor_number": job.predecessorNumber,
        "has_body": job.has_body(),
        # Toil keeps the version only as this attribute (it prints it in str(job)).
        "version": getattr(job, "_job_version", None),
        "log_file_id": job.logJobStoreFileID,
        "files_to_delete": list(job.filesToDelete),
    }
    return (json.dumps(doc, indent=2, default=str) + "\n").encode()


# ============================================================ listings


class _FixedListing:
    """A small directory whose entries are known up front (root, one job)."""

    hash_bits = 62

    def __init__(self, view: View, path: Path, names: list[tuple[str, bool]]) -> None:
        self._view, self._path, self._names = view, path, names

    def entries(self, segment: int) -> Iterable[tuple[int, str, bool]]:
        return [(0, name, is_dir) for name, is_dir in self._names] if segment == 0 else []

    def attr(self, name: str, is_dir: bool) -> Attr | None:
        with contextlib.suppress(NoEntry):
            return self._view.getattr((*self._path, name))
        return None


class _BackendListing:
    """One level of backend keys below a prefix (``files/...``, ``shared/``, ``logs/``)."""

    hash_bits = 62

    def __init__(self, view: View, path: Path, prefix: str) -> None:
        self._view, self._path, self._prefix = view, path, prefix

    def entries(self, segment: int) -> Iterable[tuple[int, str, bool]]:
        if segment != 0:
            return
        for e in self._view.backend.listdir(self._prefix):
            yield 0, e.name, e.is_dir

    def attr(self, name: str, is_dir: bool) -> Attr | None:
        if is_dir:
            return self._view._dir()
        try:
            info = self._view.backend.stat(self._prefix + name)
        except NotFound:
            return None
        return _file_attr(info, live=self._prefix == layout.SHARED)


class _JobsListing:
    """``jobs/``: job IDs, one segment per ``jobs/<shard>/`` of the store, in one key listing."""

    hash_bits = 50  # 12 bits of shard above them: positions stay below 2**62

    def __init__(self, view: View) -> None:
        self._view = view

    def entries(self, segment: int) -> Iterable[tuple[int, str, bool]]:
        # "jobs/<shard>" sorts after every key of earlier shards and before the shard's own.
        start_after = f"{layout.JOBS}{segment:03x}" if segment else None
        for key in self._view.backend.list(layout.JOBS, start_after=start_after):
            shard, _, job_id = key[len(layout.JOBS) :].partition("/")
            if len(shard) == 3 and layout.is_job_id(job_id):
                with contextlib.suppress(ValueError):
                    yield int(shard, 16), job_id, True

    def attr(self, name: str, is_dir: bool) -> Attr | None:
        # Listed from the store a moment ago; getattr checks again when asked.
        return self._view._dir()


# ============================================================== helpers


def _json_attr(rendered: bytes, info: ObjectInfo) -> Attr:
    return Attr(False, FILE_MODE, len(rendered), int(info.mtime * 1e9), info.version, live=True)


def _file_attr(info: ObjectInfo, live: bool = False) -> Attr:
    mode = EXEC_MODE if info.executable else FILE_MODE
    return Attr(False, mode, info.size, int(info.mtime * 1e9), info.version, live=live)


def _log_key(name: str) -> str:
    return layout.LOGS + layout.check_path(name, "log name")


def _checked(make_key: Callable[[str], str], name: str) -> str:
    """A key from a name that came from a path; names that can never be keys do not exist."""
    try:
        return make_key(name)
    except layout.InvalidName:
        raise NoEntry(name) from None
