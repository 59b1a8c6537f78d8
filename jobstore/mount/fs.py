"""The pyfuse3 file system: inodes, handles, threads and errno over :mod:`jobstore.mount.view`.

* Inodes name paths of the view. The kernel's lookup count decides an inode's
  life: ``lookup`` and each accepted ``readdir`` entry add one, ``forget``
  takes them away, and an inode the kernel forgot is dropped, so the table
  holds what the kernel holds and no more.
* Every store call blocks, so it runs in a worker thread under a
  :class:`trio.CapacityLimiter`; the trio loop only moves requests around.
* One error boundary (:func:`_boundary`) wraps every handler: the view's
  refusals and Toil's "no such" exceptions become their errno, system errors
  (``OSError``) keep theirs (``EMFILE``, ``ENOSPC``, ``EROFS``...), a version
  replaced under an open handle is ``ESTALE``; anything unexpected is logged
  with its traceback and answered ``EIO``, and nothing a request does can end
  the daemon.
* Extended attributes are not supported (getxattr answers ENOSYS, which the
  kernel remembers): ``ls -l`` asks for ACLs of every entry otherwise.
* Liveness: entries and attributes are cached by the kernel for ``timeout``
  seconds (about one by default), never negatively. Content that can change
  in place (descriptions, shared files, the kill flag) is served with direct
  I/O, so ``cat`` always shows what the store holds now.
* Whole versions: an open handle reads one stored version (the view's
  ``open``). Through the page cache, which the kernel sizes by the attributes
  it holds, that is only safe when the kernel holds that version's
  attributes and pages: see :meth:`JobStoreFS.open` (docs/SEMANTICS.md).
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

import pyfuse3
import trio
from toil.jobStores.abstractJobStore import NoSuchFileException, NoSuchJobException

from jobstore import layout
from jobstore.backend import NotFound, VersionGone
from jobstore.mount import view as v
from jobstore.mount.source import Corrupt, Missing

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")
FS = TypeVar("FS", bound="JobStoreFS")

#: Entries fetched per worker-thread call while listing a directory.
READDIR_BATCH = 64
#: A read size hint for ``cat`` and friends: large requests cost fewer round trips.
BLKSIZE = 1 << 20

_ERRNO: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], int], ...] = (
    (
        (v.NoEntry, Missing, NotFound, NoSuchJobException, NoSuchFileException, layout.InvalidName),
        errno.ENOENT,
    ),
    (v.NotADir, errno.ENOTDIR),
    (v.IsADir, errno.EISDIR),
    (v.NotALink, errno.EINVAL),
    (v.ReadOnly, errno.EROFS),
    (v.BadKillWord, errno.EINVAL),
    (Corrupt, errno.EIO),  # logged where it was found, once per object
    (VersionGone, errno.ESTALE),
)


#: What the view and the store refuse, as opposed to what the system refuses them.
_DOMAIN = tuple(types for types, _ in _ERRNO)  # isinstance takes nested tuples
#: The daemon itself is out of descriptors: said as such wherever it surfaces (on S3,
#: deep inside botocore's connection errors).
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE})


def errno_for(exc: BaseException) -> int | None:
    """The errno that answers an error, or None for an unexpected one.

    A system error keeps its own errno (``EMFILE``, ``ENOSPC``, ``EACCES``, a
    store's directory gone: ``ENOENT``...): the caller can act on it, where
    ``EIO`` would only say "something broke".
    """
    for types, number in _ERRNO:
        if isinstance(exc, types):
            return number
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    cause, depth = exc.__cause__ or exc.__context__, 0
    while cause is not None and depth < 10:
        if isinstance(cause, OSError) and cause.errno in _EXHAUSTED:
            return cause.errno
        cause, depth = cause.__cause__ or cause.__context__, depth + 1
    return None


def _boundary(
    handler: Callable[Concatenate[FS, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[FS, P], Coroutine[Any, Any, T]]:
    """Answer every exception of a handler with an errno; log the unexpected ones."""

    @functools.wraps(handler)
    async def guarded(self: FS, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await handler(self, *args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except Exception as e:
            number = errno_for(e)
            if number is None:
                logger.exception("%s%r failed; answering EIO", handler.__name__, args)
                number = errno.EIO
            elif not isinstance(e, _DOMAIN):  # a system error: worth a line, not a traceback
                name = errno.errorcode.get(number, str(number))
                logger.warning("%s%r failed: %s; answering %s", handler.__name__, args, e, name)
            raise pyfuse3.FUSEError(number) from None

    return guarded


# ================================================================ inodes


class Node:
    """One inode: a path of the view and how many times the kernel looked it up.

    For files, what the kernel's page cache holds: the version its pages may be
    of (``cached``), and while handles read through it (``paged`` of them),
    the attributes of that version (``pinned``), the only ones the kernel is
    told meanwhile: it sizes page-cache reads by them.
    """

    __slots__ = ("cached", "ino", "lookups", "paged", "path", "pinned")

    def __init__(self, ino: int, path: v.Path) -> None:
        self.ino = ino
        self.path = path
        self.lookups = 0
        self.cached: str | None = None
        self.paged = 0
        self.pinned: v.Attr | None = None


class InodeTable:
    """Inodes by number and by path; numbers are never reused within a mount."""

    def __init__(self) -> None:
        root = Node(pyfuse3.ROOT_INODE, ())
        self._by_ino: dict[int, Node] = {root.ino: root}
        self._by_path: dict[v.Path, Node] = {(): root}
        self._next = pyfuse3.ROOT_INODE + 1

    def __len__(self) -> int:
        return len(self._by_ino)

    def node(self, ino: int) -> Node:
        try:
            return self._by_ino[ino]
        except KeyError:
            raise v.NoEntry(f"inode {ino}") from None

    def at(self, path: v.Path) -> Node:
        """The inode for ``path``, made if the kernel knows none (callers then add a lookup)."""
        node = self._by_path.get(path)
        if node is None:
            node = Node(self._next, path)
            self._next += 1
            self._by_ino[node.ino] = node
            self._by_path[path] = node
        return node

    def forget(self, ino: int, count: int) -> None:
        node = self._by_ino.get(ino)
        if node is None:
            return
        node.lookups -= count
        self.drop_if_unused(node)

    def drop_if_unused(self, node: Node) -> None:
        if node.lookups <= 0 and node.ino != pyfuse3.ROOT_INODE:
            del self._by_ino[node.ino]
            del self._by_path[node.path]


# =============================================================== handles


@dataclass
class FileHandle:
    node: Node
    content: v.Content
    #: Read through the page cache (counted in ``node.paged``), not with direct I/O.
    paged: bool = False
    lock: trio.Lock = field(default_factory=trio.Lock)


@dataclass
class KillFlagHandle:
    """``killflag`` opened for writing: what this handle wrote so far."""

    append: bool
    written: bytes = b""
    lock: trio.Lock = field(default_factory=trio.Lock)

    def after_write(self, offset: int, data: bytes) -> bytes:
        if self.append:
            offset = len(self.written)
        head = self.written[:offset].ljust(offset, b"\0")
        return head + data + self.written[offset + len(data) :]


@dataclass
class DirHandle:
    node: Node
    reader: v.DirReader
    lock: trio.Lock = field(default_factory=trio.Lock)


Handle = FileHandle | KillFlagHandle | DirHandle


# ============================================================ operations


class JobStoreFS(pyfuse3.Operations):
    """The FUSE face of a job store: read-only except for ``killflag``."""

    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(self, view: v.View, timeout: float = 1.0, threads: int = 8) -> None:
        super().__init__()
        self.view = view
        self.timeout = timeout
        self.inodes = InodeTable()
        self.uid = os.getuid()
        self.gid = os.getgid()
        self._limiter = trio.CapacityLimiter(threads)
        self._handles: dict[int, Handle] = {}
        self._next_fh = 1
        #: Whether a kernel is at the other end (not so for handlers awaited directly).
        self._mounted = False

    def init(self) -> None:
        """The kernel started the session: from now on it can be told to drop attributes."""
        self._mounted = True

    async def _call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a blocking view call in a worker thread."""
        # Abandoned when the mount stops: a call still running (a snapshot of a big
        # run, a stalled request) must not hold up the unmount; only reads run here,
        # and the kill flag's one write completes or not, as it would anyway.
        return await trio.to_thread.run_sync(
            functools.partial(fn, *args, **kwargs), limiter=self._limiter, abandon_on_cancel=True
        )

    def _entry(self, node: Node, attr: v.Attr) -> pyfuse3.EntryAttributes:
        if node.pinned is not None and not attr.is_dir:
            attr = node.pinned  # handles read this version through the page cache
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = node.ino
        entry.generation = 0
        entry.entry_timeout = self.timeout
        entry.attr_timeout = self.timeout
        kind = stat.S_IFDIR if attr.is_dir else stat.S_IFLNK if attr.is_link else stat.S_IFREG
        entry.st_mode = kind | attr.mode
        entry.st_nlink = 2 if attr.is_dir else 1
        entry.st_uid = self.uid
        entry.st_gid = self.gid
        entry.st_rdev = 0
        entry.st_size = attr.size
        entry.st_blksize = BLKSIZE
        entry.st_blocks = (attr.size + 511) // 512
        entry.st_atime_ns = entry.st_mtime_ns = entry.st_ctime_ns = attr.mtime_ns
        return entry

    def _add_handle(self, handle: Handle) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = handle
        return fh

    def _handle(self, fh: int, kind: type[T]) -> T:
        handle = self._handles.get(fh)
        if not isinstance(handle, kind):
            raise pyfuse3.FUSEError(errno.EBADF)
        return handle

    # -------------------------------------------------------------- names

    @_boundary
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self.inodes.node(parent_inode)
        component = os.fsdecode(name)
        if component == ".":
            path = parent.path
        elif component == "..":
            path = parent.path[:-1]
        else:
            path = (*parent.path, component)
        attr = await self._call(self.view.getattr, path)
        node = self.inodes.at(path)
        node.lookups += 1
        return self._entry(node, attr)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        try:
            for ino, count in inode_list:
                self.inodes.forget(ino, count)
        except Exception:
            logger.exception("forget%r failed", inode_list)

    @_boundary
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self.inodes.node(inode)
        if node.pinned is not None:  # no request: only these attributes may be told now
            return self._entry(node, node.pinned)
        return self._entry(node, await self._call(self.view.getattr, node.path))

    @_boundary
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        node = self.inodes.node(inode)
        return os.fsencode(await self._call(self.view.readlink, node.path))

    @_boundary
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        node = self.inodes.node(inode)
        # The kill flag accepts what `echo YES > killflag` and `touch` do to it:
        # truncation to nothing (O_TRUNC) and new times; both leave the flag as it is.
        if node.path != v.KILLFLAG or fields.update_mode or fields.update_uid or fields.update_gid:
            raise v.ReadOnly(node.path)
        if fields.update_size:
            if attr.st_size != 0:
                raise v.BadKillWord(f"truncate to {attr.st_size}")
            if fh is not None:
                handle = self._handles.get(fh)
                if isinstance(handle, KillFlagHandle):
                    handle.written = b""
        return self._entry(node, await self._call(self.view.getattr, node.path))

    # -------------------------------------------------------- directories

    @_boundary
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self.inodes.node(inode)
        listing = await self._call(self.view.listing, node.path)
        return self._add_handle(DirHandle(node, v.DirReader(listing)))

    @_boundary
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        handle = self._handle(fh, DirHandle)
        async with handle.lock:
            while True:
                entries = await self._call(handle.reader.read, start_id, READDIR_BATCH)
                if not entries:
                    return
                for e in entries:
                    node = self.inodes.at((*handle.node.path, e.name))
                    attrs = self._entry(node, e.attr)
                    if not pyfuse3.readdir_reply(token, os.fsencode(e.name), attrs, e.position):
                        self.inodes.drop_if_unused(node)
                        return
                    node.lookups += 1
                    start_id = e.position

    @_boundary
    async def releasedir(self, fh: int) -> None:
        self._handles.pop(fh, None)

    # -------------------------------------------------------------- files

    @_boundary
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self.inodes.node(inode)
        writing = flags & os.O_ACCMODE != os.O_RDONLY
        if node.path == v.KILLFLAG and writing:
            # Truncation needs no action: only a written word changes the flag.
            flag = KillFlagHandle(append=bool(flags & os.O_APPEND))
            return pyfuse3.FileInfo(fh=self._add_handle(flag), direct_io=True)
        if writing or flags & os.O_TRUNC:
            raise v.ReadOnly(node.path)
        attr, content = await self._call(self.view.open, node.path)
        handle = FileHandle(node, content)
        fh = self._add_handle(handle)
        # Content that changes in place, or a version other than the one whose pages
        # open handles are reading: past the page cache, sized by what we return.
        if attr.live or (node.pinned is not None and node.pinned.version != attr.version):
            return pyfuse3.FileInfo(fh=fh, direct_io=True)
        # Through the page cache, which the kernel sizes by the attributes it holds:
        # they must be this version's until the last such handle is released. From
        # now on only these are told (_entry); the kernel drops what it holds (any
        # reply computed before is ignored after this notice), and asks again
        # before its next read. Pages of another version are dropped at this open.
        if self._mounted:
            try:
                pyfuse3.invalidate_inode(node.ino, attr_only=True)
            except OSError:  # the kernel cannot be told: stay out of its page cache
                return pyfuse3.FileInfo(fh=fh, direct_io=True)
        handle.paged = True
        node.paged += 1
        node.pinned = attr
        keep = node.cached == attr.version
        node.cached = attr.version
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep)

    @_boundary
    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self._handles.get(fh)
        if isinstance(handle, KillFlagHandle):
            return (await self._call(self.view.kill_flag))[off : off + size]
        handle = self._handle(fh, FileHandle)
        content = handle.content
        if isinstance(content, v.BytesContent):
            return content.read(off, size)
        if isinstance(content, v.StreamContent) and content.concurrent:
            return await self._call(content.read, off, size)
        async with handle.lock:
            return await self._call(handle.content.read, off, size)

    @_boundary
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self._handles.get(fh)
        if not isinstance(handle, KillFlagHandle):
            raise v.ReadOnly(fh)
        # Each write is judged on all this handle wrote so far, so that a bad word
        # fails the write() that carries it, where the writer (bash's echo) sees it.
        async with handle.lock:
            written = handle.after_write(off, buf)
            await self._call(self.view.set_kill_flag, written)
            handle.written = written
            return len(buf)

    @_boundary
    async def release(self, fh: int) -> None:
        handle = self._handles.pop(fh, None)
        if isinstance(handle, FileHandle):
            if handle.paged:
                handle.node.paged -= 1
                if not handle.node.paged:
                    handle.node.pinned = None
            await self._call(handle.content.close)

    @_boundary
    async def fsync(self, fh: int, datasync: bool) -> None:
        pass

    @_boundary
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = BLKSIZE
        data.f_blocks = data.f_bfree = data.f_bavail = 0
        data.f_files = len(self.inodes)
        data.f_ffree = data.f_favail = 0
        data.f_namemax = 255
        return data

    # ------------------------------------------- everything else: read-only

    @_boundary
    async def setxattr(
        self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        raise v.ReadOnly(inode)

    @_boundary
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        raise v.ReadOnly(inode)

    @_boundary
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        raise v.ReadOnly(name)

    @_boundary
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        raise v.ReadOnly(name)

    @_boundary
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        raise v.ReadOnly(name)

    @_boundary
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        raise v.ReadOnly(name)

    @_boundary
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        raise v.ReadOnly(new_name)

    @_boundary
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        raise v.ReadOnly(name)

    @_boundary
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        raise v.ReadOnly(name)

    @_boundary
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        raise v.ReadOnly(name_old)
