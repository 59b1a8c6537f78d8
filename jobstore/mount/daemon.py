"""Opening a store, mounting it and serving the mount until it is unmounted.

The steps are separate so that ``jobstore mount`` can report the first one
that fails as a one-line error and leave no mount behind, and can tell its
caller that the mount is ready between mounting and serving.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import resource
import signal
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING

import pyfuse3
import trio

from jobstore.mount import FSTYPE, daemon_lock_path, mount_device

if TYPE_CHECKING:
    from jobstore.mount.fs import JobStoreFS

logger = logging.getLogger(__name__)

#: Read-ahead for the mount, so that big sequential reads take few round trips.
READ_AHEAD_KB = 1024
#: Signals that unmount cleanly (SIGHUP: the terminal of a foreground mount went away).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class MountError(Exception):
    """Why a store cannot be mounted, in one line for the user."""


def fuse_options(
    locator: str, allow_other: bool = False, allow_root: bool = False, debug: bool = False
) -> set[str]:
    options = set(pyfuse3.default_options)  # default_permissions: the kernel checks modes
    # libfuse splits options at commas; a backslash keeps one in the name.
    fsname = locator.replace("\\", "\\\\").replace(",", "\\,")
    options |= {f"fsname={fsname}", f"subtype={FSTYPE.removeprefix('fuse.')}", "noatime"}
    if allow_other:
        options.add("allow_other")
    if allow_root:
        options.add("allow_root")
    if debug:
        options.add("debug")
    return options


def hold_daemon_lock(mountpoint: str) -> int:
    """Take the lock that tells ``jobstore umount`` this daemon lives; held until exit."""
    path = daemon_lock_path(mountpoint)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise MountError(f"another jobstore daemon serves {mountpoint}") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def release_daemon_lock(mountpoint: str, fd: int) -> None:
    """Remove the lock file on the way out; the lock itself goes with the process."""
    with contextlib.suppress(OSError):
        os.unlink(daemon_lock_path(mountpoint))
    os.close(fd)


def mount(fs: JobStoreFS, mountpoint: str, options: set[str]) -> None:
    """Mount ``fs``; the kernel queues requests until :func:`serve` answers them."""
    # libfuse says why a mount failed on stderr only: catch that for the one-line error.
    with tempfile.TemporaryFile() as err:
        saved = os.dup(2)
        os.dup2(err.fileno(), 2)
        try:
            pyfuse3.init(fs, mountpoint, options)
            failure = None
        except RuntimeError as e:
            failure = e
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        err.seek(0)
        said = err.read().decode(errors="replace").strip()
    if failure is not None:
        reason = said.splitlines()[-1] if said else failure
        raise MountError(f"cannot mount at {mountpoint}: {reason}")
    if said:
        logger.debug("libfuse: %s", said)


def _raise_read_ahead(mountpoint: str) -> None:
    """Let the kernel read ahead in 1 MiB requests instead of 128 KiB (root only).

    A sequential read of a big file through the page cache is bound by round
    trips to this daemon; fewer, bigger requests make it several times faster.
    The kernel sets read-ahead when the session starts: this runs after that.
    """
    try:
        os.stat(mountpoint)  # answered only once the session has started
        with open(f"/sys/class/bdi/{mount_device(mountpoint)}/read_ahead_kb", "w") as f:
            f.write(str(READ_AHEAD_KB))
    except OSError as e:
        logger.debug("keeping the kernel's read-ahead: %s", e)


def raise_descriptor_limit() -> None:
    """Take every file descriptor the hard limit allows.

    Each open file of the mount holds one in the daemon (the stored file on
    ``local:``, a connection on ``s3:``), and many systems set a soft limit of
    1,024 under a far higher hard one. Past the hard limit, opens fail with
    ``EMFILE``, which is what the client is told.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as e:  # an infinite hard limit is above nr_open
            logger.debug("keeping %d file descriptors: %s", soft, e)


def serve(mountpoint: str, ready: Callable[[], None] | None = None) -> None:
    """Call ``ready``, then answer requests until the mount is unmounted or a stop signal
    arrives; unmount however that ends (also when telling ``ready`` fails).

    From here on a stop signal never kills the process outright: before serving
    it is noted and acted on once serving starts, and once serving is over it is
    ignored, so that the mount is always undone and the lock file removed.
    """
    raise_descriptor_limit()
    noted: list[int] = []
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda number, frame: noted.append(number))
    try:
        if ready is not None:
            ready()
        trio.run(_serve, mountpoint, noted)
    finally:
        # Stopping already; ignored (unlike a Python handler) until the very exit.
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        # Unmounts when a signal (or an error) ended the loop; a no-op after `umount`.
        pyfuse3.close(unmount=True)
    logger.info("unmounted")


async def _serve(mountpoint: str, noted: list[int]) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, noted)
        # Abandoned if the mount stops first: the stat would wait for an answer forever.
        nursery.start_soon(
            functools.partial(trio.to_thread.run_sync, abandon_on_cancel=True),
            _raise_read_ahead,
            mountpoint,
        )
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


async def _stop_on_signal(noted: list[int]) -> None:
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        if noted:  # it came before we listened
            _stop(noted[0])
            return
        async for signum in signals:
            _stop(signum)
            return


def _stop(signum: int) -> None:
    logger.info("%s: unmounting", signal.Signals(signum).name)
    pyfuse3.terminate()
