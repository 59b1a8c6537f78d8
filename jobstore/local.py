"""The ``local:`` backend: a directory on a local or shared (NFS) file system.

Each key is a file below the store's root. Every write goes to a private
temporary file in ``<root>/.tmp`` (same file system) and is renamed into place,
so a reader or a process killed mid-write never sees a partial object; rename
is atomic on POSIX file systems and on NFS. Executability is the file's owner
execute bit. Store directories are 0700 and files 0600/0700: a job store holds
a workflow's data and credentials and is nobody else's business.

Set ``JOBSTORE_FSYNC=1`` to fsync every object before it is published (survives
machine crashes, costs a disk flush per write; Toil's own store never syncs).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from jobstore.backend import Backend, DirEntry, NotFound, ObjectInfo, StoreExists

TMP_DIR = ".tmp"
#: Temporary files older than this are debris of killed writers, removed when a workflow
#: restarts. A day, because a worker of the old run may still be copying a huge file.
STALE_TMP_SECONDS = 24 * 3600
_COPY_CHUNK = 8 * 1024 * 1024
_DIR_MODE = 0o700


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
                shutil.rmtree(self.root)
                return
            except FileNotFoundError:
                return
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EBUSY) or attempt == 4:
                    raise
                time.sleep(0.1 * (attempt + 1))

    def remove_debris(self) -> None:
        self.remove_stale_temporaries(STALE_TMP_SECONDS)

    def remove_stale_temporaries(self, older_than: float) -> None:
        """Delete what writers and deleters killed long ago left behind.

        Files are half-written objects; directories are subtrees that
        ``delete_prefix`` had moved aside but not yet removed. A directory keeps
        the mtime it had before the move, so it can look stale at once.
        """
        cutoff = time.time() - older_than
        with contextlib.suppress(FileNotFoundError), os.scandir(self._tmp) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        os.unlink(entry.path)

    # ---------------------------------------------------------------- paths

    def _path(self, key: str) -> str:
        return self._root_slash + key  # keys are relative and checked: no os.path.join per call

    def local_path(self, key: str) -> str:
        return self._path(key)

    def _publish(self, tmp_path: str, key: str, executable: bool) -> None:
        """Rename a finished temporary file into place, creating parents as needed."""
        if executable or _UMASK & 0o600:  # else it was created 0o600 already: spare a syscall
            os.chmod(tmp_path, 0o700 if executable else 0o600)
        dest = self._path(key)
        for _ in range(10):
            try:
                os.replace(tmp_path, dest)
                return
            except FileNotFoundError:
                if not os.path.exists(tmp_path):
                    raise
                # A parent is missing (new directory, or removed by a concurrent cleanup).
                _makedirs(os.path.dirname(dest))
        os.replace(tmp_path, dest)

    def _tmp_file(self) -> tuple[int, str]:
        path = os.path.join(self._tmp, os.urandom(16).hex())  # a uuid4's randomness, cheaper
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileNotFoundError:
            if not os.path.isdir(self.root):
                raise
            os.makedirs(self._tmp, mode=_DIR_MODE, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        return fd, path

    # --------------------------------------------------------------- writes

    @contextlib.contextmanager
    def writer(self, key: str, executable: bool = False) -> Iterator[BinaryIO]:
        fd, tmp_path = self._tmp_file()
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
                f.flush()
                if self._fsync:
                    os.fsync(f.fileno())
            self._publish(tmp_path, key, executable)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_path)
            raise

    def put_bytes(self, key: str, data: bytes, executable: bool = False) -> None:
        # writer() without its buffered file object: job descriptions and logs come this way.
        fd, tmp_path = self._tmp_file()
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            self._publish(tmp_path, key, executable)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_path)
            raise

    def put_file(self, key: str, path: str, executable: bool = False) -> None:
        with open(path, "rb") as src, self.writer(key, executable) as dst:
            # copyfileobj on real files uses sendfile/copy_file_range: kernel-side copies.
            _copy_fd(src, dst)

    def put_if_absent(self, key: str) -> bool:
        dest = self._path(key)
        for _ in range(10):
            try:
                os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                return True
            except FileExistsError:
                return False
            except FileNotFoundError:
                _makedirs(os.path.dirname(dest))
        raise OSError(errno.ENOENT, "could not create parent directory", dest)

    def put_symlink(self, key: str, target: str) -> bool:
        tmp_path = os.path.join(self._tmp, uuid.uuid4().hex)
        try:
            os.symlink(os.path.realpath(target), tmp_path)
        except OSError:
            return False
        dest = self._path(key)
        try:
            _makedirs(os.path.dirname(dest))
            os.replace(tmp_path, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_path)
            raise
        return True

    # ---------------------------------------------------------------- reads

    def get_bytes(self, key: str) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(key) from None

    def reader(self, key: str) -> BinaryIO:
        try:
            # A file is its own context manager: no generator around it on this hot path.
            return open(self._path(key), "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(key) from None

    def get_file(self, key: str, path: str) -> ObjectInfo:
        directory = os.path.dirname(os.path.abspath(path))
        tmp_path = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
        try:
            src = open(self._path(key), "rb")  # noqa: SIM115 - closed below
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(key) from None
        with src:
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

    def delete(self, key: str) -> None:
        # A directory is no object: deleting "it" deletes nothing, as for a missing key.
        with contextlib.suppress(FileNotFoundError, NotADirectoryError, IsADirectoryError):
            os.unlink(self._path(key))

    def delete_prefix(self, prefix: str) -> None:
        # One rename makes the whole subtree vanish at once; the removal follows.
        path = self._path(prefix.rstrip("/"))
        graveyard = os.path.join(self._tmp, "rm-" + uuid.uuid4().hex)
        try:
            os.rename(path, graveyard)
        except (FileNotFoundError, NotADirectoryError):
            return
        shutil.rmtree(graveyard, ignore_errors=True)

    def prune_empty_parents(self, key: str, stop: str) -> None:
        """Remove directories left empty by a delete, up to (not including) ``stop``.

        Keeps directories from accumulating when every file gets a directory of its own.
        """
        parent = os.path.dirname(self._path(key))
        stop_path = self._path(stop.rstrip("/"))
        while parent.startswith(stop_path + os.sep):
            try:
                os.rmdir(parent)
            except OSError:
                return
            parent = os.path.dirname(parent)

    # -------------------------------------------------------------- listing

    def list(self, prefix: str, start_after: str | None = None) -> Iterator[str]:
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        yield from self._walk(base, prefix, start_after)

    def _walk(self, path: str, key_prefix: str, start_after: str | None = None) -> Iterator[str]:
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
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


def _makedirs(path: str) -> None:
    """``os.makedirs(path, exist_ok=True)``, but every level it creates is private.

    ``os.makedirs`` gives only the last level ``mode``; the parents it creates
    get 0o777 minus the umask, readable by everyone under the usual umask.
    """
    try:
        os.mkdir(path, _DIR_MODE)
    except FileExistsError:
        return
    except FileNotFoundError:
        _makedirs(os.path.dirname(path))
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, _DIR_MODE)


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
