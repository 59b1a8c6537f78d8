"""The ``local:`` backend: a directory on a local or shared (NFS) file system.

Each key is a file below the store's root. Every write goes to a private
temporary file in ``<root>/.tmp`` (same file system) and is renamed into place,
so a reader or a process killed mid-write never sees a partial object; rename
is atomic on POSIX file systems and on NFS. Executability is the file's owner
execute bit. Store directories are 0700 and files 0600/0700: a job store holds
a workflow's data and credentials and is nobody else's business.

Symbolic links: the store's path may be a link or run through links (the
user's way to their disk, kept as given so that every machine resolves it its
own way). Below the root no link is ever followed to change anything: every
write, rename and delete opens the directories on the way one by one with
``O_NOFOLLOW`` and works relative to them, so a link planted inside the store
(a shard directory, ``.tmp``) makes a write fail with ``ELOOP`` naming the link
and a delete leave what lies behind it alone. Links the store makes itself
(``symlinkImports``) are leaves: deleting one unlinks the link. ``destroy`` of
a store whose root is a link empties the directory the link points to and
keeps both the link and that directory: they are the user's, only their
contents are the store's. Reads may follow links: they change nothing.

Set ``JOBSTORE_FSYNC=1`` to fsync every object before it is published (survives
machine crashes, costs a disk flush per write; Toil's own store never syncs).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from jobstore.backend import (
    Backend,
    Debris,
    DirEntry,
    NotFound,
    ObjectInfo,
    StoreExists,
    VersionGone,
)
from jobstore.layout import MAX_FILE_ID
from jobstore.locator import InvalidLocator, Locator

logger = logging.getLogger(__name__)

TMP_DIR = ".tmp"
_COPY_CHUNK = 8 * 1024 * 1024
_DIR_MODE = 0o700
#: Longest file name (bytes) that Linux file systems accept, and longest store path: what
#: leaves room, within Linux's 4,095-byte paths, for the longest key below it.
_NAME_MAX = 255
_ROOT_MAX = 4095 - len("/files/") - MAX_FILE_ID
#: Opening a directory below the root: never through a link, never inherited by children.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: What opening a path whose component is not a directory of the store raises.
_NOT_A_STORE_DIR = (FileNotFoundError, NotADirectoryError)


def _fsync_enabled() -> bool:
    return os.environ.get("JOBSTORE_FSYNC", "") not in ("", "0", "false", "no")


class LocalBackend(Backend):
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self._tmp = os.path.join(self.root, TMP_DIR)
        self._root_slash = os.path.join(self.root, "")
        self._fsync = _fsync_enabled()

    def __repr__(self) -> str:
        return f"LocalBackend({self.root!r})"

    @classmethod
    def parse_location(cls, rest: str, locator: str) -> tuple[str, str]:
        """``local:<path>``: the path made absolute, here on the leader, before workers see it."""
        if not rest:
            raise InvalidLocator(f"local: needs a path, as in local:/tmp/run1 (got {locator!r})")
        path = os.path.abspath(os.path.expanduser(rest))
        try:
            encoded = os.fsencode(path)
        except UnicodeEncodeError:
            raise InvalidLocator(f"not a path this system can name: {locator!r}") from None
        if len(encoded) > _ROOT_MAX or max(map(len, encoded.split(b"/"))) > _NAME_MAX:
            raise InvalidLocator(f"path too long for a file system: {locator[:80]!r}...")
        return path, ""

    @classmethod
    def from_locator(cls, locator: Locator) -> LocalBackend:
        return cls(locator.location)

    def env(self) -> dict[str, str]:
        return {"JOBSTORE_FSYNC": "1"} if self._fsync else {}

    # ----------------------------------------------------------- lifecycle

    def initialize(self) -> None:
        try:
            os.makedirs(self.root, mode=_DIR_MODE)
        except FileExistsError:
            if not os.path.isdir(self.root):
                raise StoreExists(f"{self.root} exists and is not a directory") from None
            if any(os.scandir(self.root)):
                raise StoreExists(f"{self.root} is not empty") from None
            os.chmod(self.root, _DIR_MODE)
        os.makedirs(self._tmp, mode=_DIR_MODE, exist_ok=True)

    def destroy(self) -> None:
        # Retry: a worker may still be creating files while we remove the tree.
        for attempt in range(5):
            try:
                if os.path.islink(self.root):
                    self._empty_root()  # the link and its directory are the user's
                else:
                    shutil.rmtree(self.root)  # never follows a link below the root
                return
            except FileNotFoundError:
                return
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EBUSY) or attempt == 4:
                    raise
                time.sleep(0.1 * (attempt + 1))

    def _empty_root(self) -> None:
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for name in os.listdir(fd):
                with contextlib.suppress(FileNotFoundError):  # removed by someone else
                    _remove_entry(fd, name)
        finally:
            os.close(fd)

    def debris(self, older_than: float) -> Iterator[Debris]:
        """Files in ``.tmp`` are half-written objects; directories are subtrees that
        ``delete_prefix`` had moved aside but not yet removed. A directory keeps
        the mtime it had before the move, so it can look stale at once. A
        ``.tmp`` that is a link is damage: the link goes, never what it points to.
        """
        now = time.time()
        if os.path.islink(self._tmp):  # never list (or later remove) what a link points to
            logger.warning(
                "removing %s: a symbolic link where the store keeps its temporaries", self._tmp
            )
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)
            return
        with contextlib.suppress(FileNotFoundError), os.scandir(self._tmp) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    age = now - entry.stat(follow_symlinks=False).st_mtime
                    if age > older_than:
                        yield Debris(f"{TMP_DIR}/{entry.name}", age, entry.path)

    def clear_debris(self, item: Debris, keep_under: str | None) -> bool:
        with contextlib.suppress(FileNotFoundError):
            if keep_under is not None:
                dest = keep_under + item.name
                os.close(self._open_dir(os.path.dirname(dest), create=True))
                os.rename(item.handle, self._path(dest))
                return True
            tmp_fd = self._open_tmp()
            try:
                _remove_entry(tmp_fd, os.path.basename(item.handle))  # never through a link
            finally:
                os.close(tmp_fd)
        return False

    # ---------------------------------------------------------------- paths

    def _path(self, key: str) -> str:
        return self._root_slash + key  # keys are relative and checked: no os.path.join per call

    def local_path(self, key: str) -> str:
        return self._path(key)

    def _open_dir(self, relative: str, create: bool = False) -> int:
        """The directory ``relative`` below the root, opened without following any link.

        Each component is opened relative to the one before with ``O_NOFOLLOW``
        (the root itself may be a link: the user's). Missing levels are made,
        private, when ``create``; otherwise ``FileNotFoundError``. A link on the
        way raises ``OSError(ELOOP)`` naming it; a file, ``NotADirectoryError``.
        """
        if not relative:
            return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        parts = relative.split("/")
        path = self._root_slash + parts[0]
        fd = _open_level(path, None, path, create)
        try:
            for part in parts[1:]:
                path += "/" + part
                parent = fd
                fd = _open_level(part, parent, path, create)
                os.close(parent)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _publish(self, tmp: _Temporary, key: str, executable: bool) -> None:
        """Rename a finished temporary file into place, creating parents as needed."""
        if executable or _UMASK & 0o600:  # else it was created 0o600 already: spare a syscall
            os.chmod(tmp.name, 0o700 if executable else 0o600, dir_fd=tmp.dir_fd)
        parent, name = _split(key)
        for attempt in range(10):
            dir_fd = self._open_dir(parent, create=True)
            try:
                os.replace(tmp.name, name, src_dir_fd=tmp.dir_fd, dst_dir_fd=dir_fd)
                return
            except FileNotFoundError:
                # The directory was removed under us by a concurrent cleanup: open it anew.
                if attempt == 9 or not _lexists(tmp.name, tmp.dir_fd):
                    raise
            finally:
                os.close(dir_fd)

    def _open_tmp(self) -> int:
        """``.tmp``, opened without following a link (made anew if it went missing)."""
        return _open_level(self._tmp, None, self._tmp, create=True)

    def _tmp_file(self) -> tuple[int, _Temporary]:
        """A new private file in ``.tmp``: its descriptor, and where it is."""
        tmp = _Temporary(self._open_tmp(), os.urandom(16).hex())  # a uuid4's randomness
        try:
            fd = os.open(tmp.name, _NEW_FILE, 0o600, dir_fd=tmp.dir_fd)
        except BaseException:
            os.close(tmp.dir_fd)
            raise
        return fd, tmp

    # --------------------------------------------------------------- writes

    @contextlib.contextmanager
    def writer(self, key: str, executable: bool = False) -> Iterator[BinaryIO]:
        fd, tmp = self._tmp_file()
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
                f.flush()
                if self._fsync:
                    os.fsync(f.fileno())
            self._publish(tmp, key, executable)
        except BaseException:
            tmp.discard()
            raise
        finally:
            os.close(tmp.dir_fd)

    def put_bytes(self, key: str, data: bytes, executable: bool = False) -> None:
        # writer() without its buffered file object: job descriptions and logs come this way.
        fd, tmp = self._tmp_file()
        try:
            self._fill(fd, data)
            self._publish(tmp, key, executable)
        except BaseException:
            tmp.discard()
            raise
        finally:
            os.close(tmp.dir_fd)

    def _fill(self, fd: int, data: bytes) -> None:
        """Write all of ``data`` to a new temporary file and close it."""
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self._fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def put_file(self, key: str, path: str, executable: bool = False) -> None:
        with open(path, "rb") as src, self.writer(key, executable) as dst:
            # copyfileobj on real files uses sendfile/copy_file_range: kernel-side copies.
            _copy_fd(src, dst)

    def put_if_absent(self, key: str, data: bytes = b"") -> bool:
        if not data:  # hint claims: one O_EXCL create, nothing to be seen half-written
            return self._create_new(
                key, lambda dir_fd, name: os.close(os.open(name, _NEW_FILE, 0o600, dir_fd=dir_fd))
            )
        # With data, the complete object is linked into place: link(2) fails when the
        # name exists (atomically, on NFS too), and a reader never sees a partial file.
        fd, tmp = self._tmp_file()

        def link(dir_fd: int, name: str) -> None:
            try:
                os.link(tmp.name, name, src_dir_fd=tmp.dir_fd, dst_dir_fd=dir_fd)
            except FileExistsError:
                # NFS may answer a retransmitted, successful link with EEXIST; the link
                # count of our own file tells (open(2)'s advice for lock files on NFS).
                if os.stat(tmp.name, dir_fd=tmp.dir_fd).st_nlink < 2:
                    raise

        try:
            self._fill(fd, data)
            return self._create_new(key, link)
        finally:
            tmp.discard()
            os.close(tmp.dir_fd)

    def _create_new(self, key: str, create: Callable[[int, str], None]) -> bool:
        """Run ``create(dir_fd, name)`` in the key's directory, made (never through a link)
        as needed; False when the object exists."""
        parent, name = _split(key)
        for _ in range(10):
            dir_fd = self._open_dir(parent, create=True)
            try:
                create(dir_fd, name)
                return True
            except FileExistsError:
                return False
            except FileNotFoundError:
                continue  # removed under us by a concurrent cleanup: open it anew
            finally:
                os.close(dir_fd)
        raise OSError(errno.ENOENT, "could not create parent directory", self._path(parent))

    def put_symlink(self, key: str, target: str) -> bool:
        try:
            tmp = _Temporary(self._open_tmp(), uuid.uuid4().hex)
        except OSError:
            return False
        try:
            try:
                os.symlink(os.path.realpath(target), tmp.name, dir_fd=tmp.dir_fd)
            except OSError:
                return False
            parent, name = _split(key)
            try:
                dir_fd = self._open_dir(parent, create=True)
                try:
                    os.replace(tmp.name, name, src_dir_fd=tmp.dir_fd, dst_dir_fd=dir_fd)
                finally:
                    os.close(dir_fd)
            except BaseException:
                tmp.discard()
                raise
        finally:
            os.close(tmp.dir_fd)
        return True

    # ---------------------------------------------------------------- reads

    def get_bytes(self, key: str) -> bytes:
        with self.reader(key) as f:
            return f.read()

    def reader(self, key: str) -> BinaryIO:
        # A file is its own context manager: no generator around it on this hot path.
        return _open_object(self._path(key), key)

    @contextlib.contextmanager
    def open_version(
        self, key: str, start: int = 0, version: str | None = None
    ) -> Iterator[tuple[ObjectInfo, BinaryIO]]:
        """The open file and its fstat: a rewrite renames a new file in place, and this
        descriptor keeps reading the old one (deleted or not) to its end."""
        try:
            f = _open_object(self._path(key), key)
        except NotFound:
            if version is not None:
                raise VersionGone(f"{self._path(key)}: version {version} was replaced") from None
            raise
        with f:
            info = _info(os.fstat(f.fileno()))
            if version is not None and info.version != version:
                raise VersionGone(f"{self._path(key)}: version {version} was replaced")
            if start:
                f.seek(start)
            yield info, f

    def get_file(self, key: str, path: str) -> ObjectInfo:
        directory = os.path.dirname(os.path.abspath(path))
        tmp_path = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
        with _open_object(self._path(key), key) as src:
            info = _info(os.fstat(src.fileno()))
            try:
                with open(tmp_path, "xb") as dst:
                    _copy_fd(src, dst)
                if info.executable:  # open() made it 0o666 & ~umask, right for the rest
                    os.chmod(tmp_path, 0o777 & ~_UMASK)
                os.replace(tmp_path, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp_path)
                raise
        return info

    def stat(self, key: str) -> ObjectInfo:
        try:
            st = os.stat(self._path(key))
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(key) from None
        if not stat.S_ISREG(st.st_mode):
            raise NotFound(key)
        return _info(st)

    def exists(self, key: str) -> bool:
        return os.path.isfile(self._path(key))

    def url(self, key: str) -> str:
        path = self._path(key)
        if not os.path.isfile(path):
            raise NotFound(key)
        return Path(path).as_uri()

    # -------------------------------------------------------------- deletes

    def _open_dir_to_delete(self, parent: str, what: str) -> int | None:
        """``parent`` opened as :meth:`_open_dir` does, or None when nothing of the store
        can be below it: it is missing, a file, or behind a link (logged: damage)."""
        try:
            return self._open_dir(parent)
        except _NOT_A_STORE_DIR:
            return None
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            logger.warning("not deleting %s: %s", what, e)
            return None

    def delete(self, key: str) -> None:
        # A directory is no object: deleting "it" deletes nothing, as for a missing key.
        # Nor is anything behind a link on the way: not followed, it is not the store's.
        parent, name = _split(key)
        dir_fd = self._open_dir_to_delete(parent, key)
        if dir_fd is None:
            return
        try:
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                os.unlink(name, dir_fd=dir_fd)  # a link itself, never what it points to
        finally:
            os.close(dir_fd)

    def delete_prefix(self, prefix: str) -> None:
        # One rename makes the whole subtree vanish at once; the removal follows.
        parent, name = _split(prefix.rstrip("/"))
        dir_fd = self._open_dir_to_delete(parent, prefix)
        if dir_fd is None:
            return
        try:
            tmp_fd = self._open_tmp()
        except BaseException:
            os.close(dir_fd)
            raise
        grave = "rm-" + uuid.uuid4().hex
        try:
            try:
                os.rename(name, grave, src_dir_fd=dir_fd, dst_dir_fd=tmp_fd)
            except (FileNotFoundError, NotADirectoryError):
                return
            # A link moved here is unlinked, a directory removed without following links.
            with contextlib.suppress(OSError):
                _remove_entry(tmp_fd, grave)
        finally:
            os.close(dir_fd)
            os.close(tmp_fd)

    def move(self, src: str, dst: str) -> None:
        """One rename (same file system), parents created and emptied ones removed."""
        os.close(self._open_dir(_split(dst)[0], create=True))  # no link followed on the way
        try:
            os.rename(self._path(src), self._path(dst))
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(src) from None
        self.prune_empty_parents(src, src.split("/", 1)[0] + "/")

    def prune_empty_parents(self, key: str, stop: str) -> None:
        """Remove directories left empty by a delete, up to (not including) ``stop``.

        Keeps directories from accumulating when every file gets a directory of its own.
        """
        stop = stop.rstrip("/")
        parts = _split(key)[0][len(stop) + 1 :].split("/") if key.startswith(stop + "/") else []
        parts = [p for p in parts if p]
        if not parts:
            return
        fds: list[int] = []
        try:
            fds.append(self._open_dir(stop))
            for part in parts[:-1]:
                fds.append(os.open(part, _DIR_FLAGS, dir_fd=fds[-1]))
            for dir_fd, part in zip(reversed(fds), reversed(parts), strict=True):
                os.rmdir(part, dir_fd=dir_fd)  # never a link: rmdir refuses those
        except OSError:
            return
        finally:
            for fd in fds:
                os.close(fd)

    # -------------------------------------------------------------- listing

    def list(self, prefix: str, start_after: str | None = None) -> Iterator[str]:
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        yield from self._walk(base, prefix, start_after)

    def _walk(self, path: str, key_prefix: str, start_after: str | None = None) -> Iterator[str]:
        try:
            with os.scandir(path) as it:
                # A directory sorts as its keys do, by "name/": "a-b" comes before "a/c".
                entries = sorted(it, key=_key_order)
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if not key_prefix and entry.name == TMP_DIR:
                continue
            key = f"{key_prefix}{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                below = key + "/"
                # Enter a subtree only if a key in it can sort after start_after: a listing
                # resumed deep into jobs/ then costs nothing for the shards before.
                if start_after is None or below > start_after or start_after.startswith(below):
                    yield from self._walk(entry.path, below, start_after)
            elif not (entry.is_file(follow_symlinks=False) or entry.is_symlink()):
                _warn_not_an_object(entry.path)
            elif start_after is None or key > start_after:
                yield key

    def listdir(self, prefix: str) -> Iterator[DirEntry]:
        path = self._path(prefix.rstrip("/")) if prefix else self.root
        try:
            with os.scandir(path) as it:
                entries = sorted(
                    (DirEntry(e.name, e.is_dir(follow_symlinks=False)) for e in it),
                    key=lambda e: e.name,
                )
        except (FileNotFoundError, NotADirectoryError):
            return
        yield from (e for e in entries if prefix or e.name != TMP_DIR)


def _open_object(path: str, key: str) -> BinaryIO:
    """The object at ``path`` open for reading; NotFound for anything but a regular file.

    ``O_NONBLOCK`` because opening a FIFO for reading waits for a writer
    forever: a FIFO someone made in the store must not hang a leader.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise NotFound(key) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotFound(key)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


_warned_not_objects: set[str] = set()


def _warn_not_an_object(path: str) -> None:
    """Say once per process that a FIFO, socket or device in the store is not listed."""
    if path not in _warned_not_objects:
        _warned_not_objects.add(path)
        logger.warning("Skipping %s: not a regular file, so not an object of the store", path)


def _key_order(entry: os.DirEntry[str]) -> str:
    return entry.name + "/" if entry.is_dir(follow_symlinks=False) else entry.name


class _Temporary:
    """A temporary file's name in ``.tmp`` and the descriptor of ``.tmp`` it was made in."""

    __slots__ = ("dir_fd", "name")

    def __init__(self, dir_fd: int, name: str) -> None:
        self.dir_fd = dir_fd
        self.name = name

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.name, dir_fd=self.dir_fd)


_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def _open_level(name: str, dir_fd: int | None, path: str, create: bool) -> int:
    """Open the directory ``name`` (in ``dir_fd``) without following a link; ``path`` names it."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            raise
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, _DIR_MODE, dir_fd=dir_fd)
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as e:
        # O_NOFOLLOW|O_DIRECTORY on a link fails with ENOTDIR (or ELOOP): tell them apart.
        if e.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(path):
            raise _link_error(path) from None
        raise


def _split(key: str) -> tuple[str, str]:
    """A key's directory (below the root) and last name."""
    parent, _, name = key.rpartition("/")
    return parent, name


def _lexists(name: str, dir_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _remove_entry(dir_fd: int, name: str) -> None:
    """Remove ``name`` in ``dir_fd``: a directory with all below it, anything else unlinked.

    Never follows a link: ``shutil.rmtree`` with ``dir_fd`` opens every level with
    ``O_NOFOLLOW`` and unlinks the links it meets.
    """
    if stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def _link_error(path: str) -> OSError:
    return OSError(errno.ELOOP, "a symbolic link inside the store; not followed", path)


def _info(st: os.stat_result) -> ObjectInfo:
    # Every write renames a new file into place: a new inode, whatever the size and time.
    version = f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"
    return ObjectInfo(st.st_size, bool(st.st_mode & stat.S_IXUSR), st.st_mtime, version)


def _copy_fd(src: BinaryIO, dst: BinaryIO) -> None:
    """Copy between two real files, in the kernel where it can."""
    dst.flush()
    try:
        while os.copy_file_range(src.fileno(), dst.fileno(), _COPY_CHUNK):
            pass
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
        shutil.copyfileobj(src, dst, _COPY_CHUNK)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask is process-wide and not safe to toggle from threads.
_UMASK = _read_umask()
