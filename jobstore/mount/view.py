"""The FUSE view's file system: paths resolved to nodes, over any :class:`Source`.

Everything here maps a path to what the tree shows; none of it knows about
FUSE, inodes or trio, so it is tested directly and the FUSE layer
(:mod:`jobstore.mount.fs`) only adds inodes, handles, threads and errno. Each
call may block on storage: callers run it in a worker thread.

A path is resolved once, from the root down, into a :class:`Node` that knows
its attributes, how to open it and how to list it: the shape of the tree is
the node classes below and nothing else. What lies behind a node comes from a
:class:`~jobstore.mount.source.Source` (our stores, or Toil's own), so the
view never sees a store's key layout. The tree (SPEC "The FUSE view" and
"The run view")::

    status.json  graph.dot  trace.tsv       the run, generated (see jobstore.run)
    by-state/<state>/<job>                  links to ../../jobs/<job>
    jobs/<job>/description.json             the stored description as JSON
    jobs/<job>/description.pickle           the bytes Toil stored
    jobs/<job>/log                          the job's failure log, when it has one
    jobs/<job>/state                        one state word
    jobs/<job>/attempts/<n>.json            one per attempt
    files/<file-id>                         (an ID with '/' in it is a path of directories)
    shared/<name>
    logs/<entry>
    killflag

Stored objects are read one version each (docs/SEMANTICS.md). Generated
files come from one snapshot of the run (:class:`RunCache`): the size and
the content of one open are those of one snapshot. Rendered
``description.json`` documents are cached by the stored description's version.
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
from typing import TYPE_CHECKING, BinaryIO, Protocol

from jobstore.mount.source import Corrupt, Kind, Missing, Source
from jobstore.run import STATES, JobSummary, RunMemo

if TYPE_CHECKING:
    from toil.job import JobDescription

    from jobstore.backend import ObjectInfo
    from jobstore.run import Run

Path = tuple[str, ...]

KILLFLAG = ("killflag",)

DIR_MODE = 0o555
FILE_MODE = 0o444
EXEC_MODE = 0o555
LINK_MODE = 0o777
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


class NotALink(ViewError):
    """``readlink`` of something that is not a link."""


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
    #: (descriptions, shared files, the kill flag, generated files): serve it
    #: without the page cache.
    live: bool = False
    #: A symbolic link (``is_dir`` False); its target comes from :meth:`View.readlink`.
    is_link: bool = False


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


#: Opens one version of a stored object from an offset: ``opener(start, version)``.
Opener = Callable[
    [int, "str | None"], contextlib.AbstractContextManager[tuple["ObjectInfo", BinaryIO]]
]


class StreamContent:
    """One version of a stored object, read through a stream kept open between reads.

    ``info`` is that version's (from the same read as the bytes), and every
    read returns bytes of that version or fails with
    :class:`~jobstore.backend.VersionGone`, never bytes of another.

    A stream over a real file is read with ``pread``: no shared position, so
    the kernel's concurrent read-ahead requests run side by side. Other streams
    (S3 bodies) only go forward: sequential reads (the common case) continue
    them, a jump forward skips, a jump back reopens the same version there; the
    caller runs one read of such a stream at a time (``concurrent`` is False).
    """

    _SKIP_CHUNK = 1 << 20

    def __init__(self, opener: Opener) -> None:
        self._opener = opener
        self._stack = contextlib.ExitStack()
        self._pos = 0
        self.info, self._stream = self._open(0, None)
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
        info, stream = self._stack.enter_context(self._opener(start, version))
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

    A segment is a part of the directory that is listed as a whole: one of a
    source's job segments for ``jobs/`` (a shard of our layout), the whole
    directory for the others.
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


# ================================================================ the run


class RunCache:
    """One snapshot of the run, shared by every generated file, and what is rendered of it.

    A snapshot reads every job description (and the ledger), so on a large
    store it takes a while: a new one is taken when the last is older than
    :attr:`MIN_AGE` seconds or three times what the last one took, whichever
    is longer, so that a busy reader never spends most of its time snapshotting.
    """

    MIN_AGE = 1.0

    def __init__(self, source: Source) -> None:
        self._source = source
        self._lock = threading.Lock()
        self._run: Run | None = None
        self._taken = 0.0
        self._cost = 0.0
        self._memo = RunMemo()
        self._rendered: dict[str, bytes] = {}

    def get(self, knowing: str | None = None) -> Run:
        """The current snapshot; a new one when it is old, or does not know job ``knowing``
        and is older than :attr:`MIN_AGE` (a job that appeared since)."""
        with self._lock:
            age = time.monotonic() - self._taken
            run = self._run
            if (
                run is None
                or age > max(self.MIN_AGE, 3 * self._cost)
                or (knowing is not None and knowing not in run.jobs and age > self.MIN_AGE)
            ):
                started = time.monotonic()
                run = self._run = self._source.read_run(self._memo)
                self._taken = time.monotonic()
                self._cost = self._taken - started
                self._rendered = {}
            return run

    def summary(self, job_id: str, version: str) -> JobSummary | None:
        """What the last snapshot knew of that version of a job, if it saw it."""
        with self._lock:
            return self._memo.jobs.get((job_id, version))

    def rendered(self, name: str, render: Callable[[Run], bytes]) -> tuple[Run, bytes]:
        """A rendering of the current snapshot, made once per snapshot."""
        run = self.get()
        with self._lock:
            if self._run is run and name in self._rendered:
                return run, self._rendered[name]
        data = render(run)
        with self._lock:
            if self._run is run:
                self._rendered[name] = data
        return run, data


# ================================================================== nodes


class Node:
    """One path of the tree, resolved: what it shows and what can be done with it."""

    def __init__(self, view: View, path: Path) -> None:
        self.view = view
        self.path = path

    def attr(self) -> Attr:
        raise NotImplementedError

    def child(self, name: str) -> Node:
        raise NoEntry((*self.path, name))  # nothing lies below a file

    def listing(self) -> Listing:
        raise NotADir(self.path)

    def open(self) -> tuple[Attr, Content]:
        raise NotImplementedError

    def readlink(self) -> str:
        raise NotALink(self.path)


class Dir(Node):
    """A directory: shown with the mount's time (listings do not ask the store for times)."""

    def attr(self) -> Attr:
        return Attr(True, DIR_MODE, 0, self.view.mount_time_ns)

    def open(self) -> tuple[Attr, Content]:
        raise IsADir(self.path)


class FixedDir(Dir):
    """A directory whose names are known up front (or from one look at the store)."""

    def names(self) -> list[str]:
        raise NotImplementedError

    def listing(self) -> Listing:
        return _FixedListing(self)


class Generated(Node):
    """A small file rendered from the run's snapshot; its size is that rendering's.

    Served past the page cache (``live``): its next open may show another snapshot.
    """

    def render(self, run: Run) -> bytes:
        raise NotImplementedError

    def _attr(self, run: Run, data: bytes) -> Attr:
        mtime = run.updated_ns or self.view.mount_time_ns
        return Attr(False, FILE_MODE, len(data), mtime, live=True)

    def attr(self) -> Attr:
        return self._attr(*self._rendered())

    def open(self) -> tuple[Attr, Content]:
        run, data = self._rendered()
        return self._attr(run, data), BytesContent(data)

    def _rendered(self) -> tuple[Run, bytes]:
        run = self.view.runs.get()
        return run, self.render(run)


class RunFile(Generated):
    """``status.json``, ``graph.dot``, ``trace.tsv``: the whole run, rendered once per snapshot."""

    RENDERINGS: dict[str, Callable[[Run], bytes]] = {
        "status.json": lambda run: run.status_json(),
        "graph.dot": lambda run: run.graph_dot(),
        "trace.tsv": lambda run: run.trace_tsv(),
    }

    def _rendered(self) -> tuple[Run, bytes]:
        name = self.path[-1]
        return self.view.runs.rendered(name, self.RENDERINGS[name])


class Link(Node):
    """A symbolic link to another path of the tree."""

    def __init__(self, view: View, path: Path, target: str) -> None:
        super().__init__(view, path)
        self.target = target

    def attr(self) -> Attr:
        size = len(self.target.encode())
        return Attr(False, LINK_MODE, size, self.view.mount_time_ns, is_link=True)

    def readlink(self) -> str:
        return self.target


class KillFlag(Node):
    """``killflag``: ``YES`` or ``NO``, and the one file that takes writes."""

    def attr(self) -> Attr:
        return self._attr(self.view.kill_flag())

    def _attr(self, data: bytes) -> Attr:
        now = self.view.mount_time_ns
        return Attr(False, KILLFLAG_MODE, len(data), now, version=data.decode(), live=True)

    def open(self) -> tuple[Attr, Content]:
        data = self.view.kill_flag()
        return self._attr(data), BytesContent(data)


class Root(FixedDir):
    def names(self) -> list[str]:
        return sorted(self.CHILDREN)

    def child(self, name: str) -> Node:
        make = self.CHILDREN.get(name)
        if make is None:
            raise NoEntry((*self.path, name))
        return make(self.view, (*self.path, name))

    CHILDREN: dict[str, Callable[[View, Path], Node]] = {
        "status.json": RunFile,
        "graph.dot": RunFile,
        "trace.tsv": RunFile,
        "killflag": KillFlag,
        "by-state": lambda view, path: ByState(view, path),
        "jobs": lambda view, path: JobsDir(view, path),
        "files": lambda view, path: TreeDir(view, path, Kind.FILES, ()),
        "shared": lambda view, path: TreeDir(view, path, Kind.SHARED, ()),
        "logs": lambda view, path: TreeDir(view, path, Kind.LOGS, ()),
    }


# ------------------------------------------------------------- by-state


class ByState(FixedDir):
    def names(self) -> list[str]:
        return list(STATES)

    def child(self, name: str) -> Node:
        if name not in STATES:
            raise NoEntry((*self.path, name))
        return StateDir(self.view, (*self.path, name))


class StateDir(Dir):
    """``by-state/<state>/``: a link to ``../../jobs/<job>`` for every job in that state."""

    def listing(self) -> Listing:
        run = self.view.runs.get()
        names = [self.view.source.job_name(j) for j in run.by_state(self.path[-1])]
        return _NamesListing(self, names)

    def child(self, name: str) -> Node:
        job_id = _job_id(self.view.source, name, self.path)
        run = self.view.runs.get(knowing=job_id)
        job = run.jobs.get(job_id)
        if job is None or job.state != self.path[-1]:
            raise NoEntry((*self.path, name))
        return Link(self.view, (*self.path, name), f"../../jobs/{name}")


# ------------------------------------------------------------------ jobs


class JobsDir(Dir):
    def listing(self) -> Listing:
        return _JobsListing(self)

    def child(self, name: str) -> Node:
        path = (*self.path, name)
        job_id = _job_id(self.view.source, name, path)
        try:
            info = self.view.source.job_info(job_id)
        except Missing:
            raise NoEntry(path) from None
        return JobDir(self.view, path, job_id, info)


class JobDir(FixedDir):
    """``jobs/<job>/``: the stored description two ways, its log, its state, its attempts."""

    def __init__(self, view: View, path: Path, job_id: str, info: ObjectInfo) -> None:
        super().__init__(view, path)
        self.job_id = job_id
        self.info = info

    def names(self) -> list[str]:
        names = ["attempts", "description.json", "description.pickle", "state"]
        with contextlib.suppress(Corrupt):  # a corrupt job is listed, without a log
            if self.view.log_id(self.job_id, self.info) is not None:
                names.append("log")
        return sorted(names)

    def child(self, name: str) -> Node:
        path = (*self.path, name)
        if name == "description.json":
            return DescriptionJson(self.view, path, self.job_id, self.info)
        if name == "description.pickle":
            return DescriptionPickle(self.view, path, self.job_id, self.info)
        if name == "state":
            return StateFile(self.view, path, self.job_id)
        if name == "attempts":
            return AttemptsDir(self.view, path, self.job_id)
        if name == "log":
            log_id = self.view.log_id(self.job_id, self.info)
            if log_id is not None:
                source = self.view.source
                return TreeFile(self.view, path, Kind.FILES, source.file_path(log_id), live=True)
        raise NoEntry(path)


class DescriptionPickle(Node):
    """The description's bytes as stored; opened as one version."""

    def __init__(self, view: View, path: Path, job_id: str, info: ObjectInfo) -> None:
        super().__init__(view, path)
        self.job_id = job_id
        self.info = info

    def attr(self) -> Attr:
        return _file_attr(self.info, live=True)

    def open(self) -> tuple[Attr, Content]:
        try:
            info, data = self.view.source.job_bytes(self.job_id)
        except Missing:
            raise NoEntry(self.path) from None
        return _file_attr(info, live=True), BytesContent(data)


class DescriptionJson(Node):
    """The description rendered as JSON; size, time and content from one stored version.

    Its attributes are those of the version the job's lookup saw (rendered
    once per version); an open reads the version stored now.
    """

    def __init__(self, view: View, path: Path, job_id: str, info: ObjectInfo) -> None:
        super().__init__(view, path)
        self.job_id = job_id
        self.info = info

    def attr(self) -> Attr:
        return self._attr(self.view.described(self.job_id, self.info))

    def open(self) -> tuple[Attr, Content]:
        described = self.view.described(self.job_id)
        return self._attr(described), BytesContent(described.json)

    def _attr(self, d: Described) -> Attr:
        return Attr(
            False, FILE_MODE, len(d.json), int(d.info.mtime * 1e9), d.info.version, live=True
        )


class StateFile(Generated):
    """``jobs/<job>/state``: the job's state word, from the run's snapshot."""

    def __init__(self, view: View, path: Path, job_id: str) -> None:
        super().__init__(view, path)
        self.job_id = job_id

    def _rendered(self) -> tuple[Run, bytes]:
        run = self.view.runs.get(knowing=self.job_id)
        job = run.jobs.get(self.job_id)
        if job is None:  # gone since, or newer than any snapshot yet
            raise NoEntry(self.path)
        return run, job.state.encode() + b"\n"


class AttemptsDir(Dir):
    """``jobs/<job>/attempts/``: ``<n>.json`` for every attempt the ledger knows of."""

    def __init__(self, view: View, path: Path, job_id: str) -> None:
        super().__init__(view, path)
        self.job_id = job_id

    def listing(self) -> Listing:
        job = self.view.runs.get(knowing=self.job_id).jobs.get(self.job_id)
        names = [f"{a.number}.json" for a in job.attempts] if job is not None else []
        return _NamesListing(self, names)

    def child(self, name: str) -> Node:
        number, dot, suffix = name.partition(".")
        if dot and suffix == "json" and number.isdigit() and not number.startswith("0"):
            return AttemptFile(self.view, (*self.path, name), self.job_id, int(number))
        raise NoEntry((*self.path, name))


class AttemptFile(Generated):
    def __init__(self, view: View, path: Path, job_id: str, number: int) -> None:
        super().__init__(view, path)
        self.job_id = job_id
        self.number = number

    def _rendered(self) -> tuple[Run, bytes]:
        run = self.view.runs.get(knowing=self.job_id)
        job = run.jobs.get(self.job_id)
        if job is None or not 0 < self.number <= len(job.attempts):
            raise NoEntry(self.path)
        doc = job.attempts[self.number - 1].to_json()
        return run, (json.dumps(doc, indent=2) + "\n").encode()


# -------------------------------------------------- files, shared, logs


class TreeDir(Dir):
    """A directory of stored objects: ``files/...``, ``shared/``, ``logs/``."""

    def __init__(self, view: View, path: Path, kind: Kind, rel: Path) -> None:
        super().__init__(view, path)
        self.kind = kind
        self.rel = rel

    def listing(self) -> Listing:
        return _TreeListing(self)

    def child(self, name: str) -> Node:
        rel = (*self.rel, name)
        path = (*self.path, name)
        try:
            info = self.view.source.stat(self.kind, rel)
        except Missing:
            raise NoEntry(path) from None
        if info is None:
            return TreeDir(self.view, path, self.kind, rel)
        return TreeFile(self.view, path, self.kind, rel, info, live=self.kind is Kind.SHARED)


class TreeFile(Node):
    """A stored object; an open reads one version of it."""

    def __init__(
        self,
        view: View,
        path: Path,
        kind: Kind,
        rel: Path,
        info: ObjectInfo | None = None,
        live: bool = False,
    ) -> None:
        super().__init__(view, path)
        self.kind = kind
        self.rel = rel
        self.info = info
        self.live = live

    def attr(self) -> Attr:
        info = self.info
        if info is None:
            try:
                info = self.view.source.stat(self.kind, self.rel)
            except Missing:
                raise NoEntry(self.path) from None
            if info is None:
                raise NoEntry(self.path)  # a directory where a job's log should be
        return _file_attr(info, self.live)

    def open(self) -> tuple[Attr, Content]:
        source, kind, rel = self.view.source, self.kind, self.rel
        try:
            content = StreamContent(lambda start, version: source.open(kind, rel, start, version))
        except Missing:
            raise NoEntry(self.path) from None
        return _file_attr(content.info, self.live), content


# ================================================================ the view


@dataclass(frozen=True, slots=True)
class Described:
    """What the view keeps of one stored version of a job description."""

    info: ObjectInfo
    json: bytes
    log_id: str | None


class View:
    """Paths of the mounted tree, answered from a :class:`Source`."""

    #: How many rendered descriptions to keep (re-rendering means reading and unpickling).
    DESCRIBED_CACHE_SIZE = 4096

    def __init__(self, source: Source) -> None:
        self.source = source
        self.mount_time_ns = time.time_ns()
        self.runs = RunCache(source)
        self._described: OrderedDict[tuple[str, str], Described] = OrderedDict()
        self._lock = threading.Lock()

    def resolve(self, path: Path) -> Node:
        """The node at ``path``, resolved from the root down (NoEntry where nothing is)."""
        node: Node = Root(self, ())
        for name in path:
            node = node.child(name)
        return node

    def getattr(self, path: Path) -> Attr:
        return self.resolve(path).attr()

    def listing(self, path: Path) -> Listing:
        """The listing of the directory at ``path`` (NotADir for a file, NoEntry when missing)."""
        return self.resolve(path).listing()

    def open(self, path: Path) -> tuple[Attr, Content]:
        """One version of the file at ``path``: its attributes and its content, from one read."""
        return self.resolve(path).open()

    def readlink(self, path: Path) -> str:
        return self.resolve(path).readlink()

    # ------------------------------------------------------------ killflag

    def kill_flag(self) -> bytes:
        return b"YES\n" if self.source.kill_flag() else b"NO\n"

    def set_kill_flag(self, data: bytes) -> None:
        """Act on a word written to ``killflag``: ``YES`` kills the run, ``NO`` clears the flag."""
        kill = parse_kill_word(data)
        if kill is None:
            raise BadKillWord(data[:20])
        try:
            self.source.set_kill_flag(kill)
        except Missing:
            raise NoEntry(KILLFLAG) from None

    # ---------------------------------------------------------------- jobs

    def log_id(self, job_id: str, info: ObjectInfo) -> str | None:
        """The file ID of the job's log in version ``info``, unpickling only when no
        snapshot of the run has seen that version."""
        summary = self.runs.summary(job_id, info.version)
        if summary is not None:
            return summary.log_id
        return self.described(job_id, info).log_id

    def described(self, job_id: str, info: ObjectInfo | None = None) -> Described:
        """The job's description as stored now (or in the version ``info`` names).

        Cached by version: unpickling and rendering are the costly part, and
        with a known ``info`` a cached version costs no request at all.
        """
        if info is not None:
            with self._lock:
                cached = self._described.get((job_id, info.version))
            if cached is not None:
                return cached
        try:
            info, data = self.source.job_bytes(job_id)
        except Missing:
            raise NoEntry(job_id) from None
        key = (job_id, info.version)
        with self._lock:
            cached = self._described.get(key)
            if cached is not None:
                self._described.move_to_end(key)
                return cached
        job = self.source.job_from_bytes(job_id, data)
        log_id = job.logJobStoreFileID
        described = Described(
            info, render_description(job), None if log_id is None else str(log_id)
        )
        with self._lock:
            self._described[key] = described
            while len(self._described) > self.DESCRIBED_CACHE_SIZE:
                self._described.popitem(last=False)
        return described


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
    """A directory whose names its node knows; each entry's attributes come from its node."""

    hash_bits = 62

    def __init__(self, node: FixedDir) -> None:
        self._node = node
        self._names = node.names()

    def entries(self, segment: int) -> Iterable[tuple[int, str, bool]]:
        return [(0, name, False) for name in self._names] if segment == 0 else []

    def attr(self, name: str, is_dir: bool) -> Attr | None:
        try:
            return self._node.child(name).attr()
        except (NoEntry, Missing):
            return None
        except Corrupt:  # a corrupt job's description.json: listed, looking it up is EIO
            return Attr(False, FILE_MODE, 0, self._node.view.mount_time_ns, live=True)


class _NamesListing(_FixedListing):
    """A directory of names found when it was opened (``by-state/<state>/``, ``attempts/``)."""

    def __init__(self, node: Node, names: list[str]) -> None:
        self._node = node  # type: ignore[assignment]
        self._names = names


class _TreeListing:
    """One level of stored objects below a path of ``files/``, ``shared/`` or ``logs/``."""

    hash_bits = 62

    def __init__(self, node: TreeDir) -> None:
        self._node = node

    def entries(self, segment: int) -> Iterable[tuple[int, str, bool]]:
        if segment != 0:
            return
        node = self._node
        with contextlib.suppress(Missing):
            for e in node.view.source.listdir(node.kind, node.rel):
                yield 0, e.name, e.is_dir

    def attr(self, name: str, is_dir: bool) -> Attr | None:
        node = self._node
        if is_dir:
            return Attr(True, DIR_MODE, 0, node.view.mount_time_ns)
        try:
            info = node.view.source.stat(node.kind, (*node.rel, name))
        except Missing:
            return None
        if info is None:
            return Attr(True, DIR_MODE, 0, node.view.mount_time_ns)
        return _file_attr(info, live=node.kind is Kind.SHARED)


class _JobsListing:
    """``jobs/``: one segment per job segment of the source, listed a segment at a time."""

    def __init__(self, node: JobsDir) -> None:
        self._node = node
        segments = node.view.source.job_segments()
        self.hash_bits = 62 - max(1, segments - 1).bit_length()

    def entries(self, segment: int) -> Iterable[tuple[int, str, bool]]:
        for seg, name in self._node.view.source.job_names(segment):
            yield seg, name, True

    def attr(self, name: str, is_dir: bool) -> Attr | None:
        # Listed from the store a moment ago; lookup checks again when asked.
        return Attr(True, DIR_MODE, 0, self._node.view.mount_time_ns)


# ============================================================== helpers


def _file_attr(info: ObjectInfo, live: bool = False) -> Attr:
    mode = EXEC_MODE if info.executable else FILE_MODE
    return Attr(False, mode, info.size, int(info.mtime * 1e9), info.version, live)


def _job_id(source: Source, name: str, path: Path) -> str:
    try:
        return source.job_id(name)
    except Missing:
        raise NoEntry(path) from None
