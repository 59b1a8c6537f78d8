"""``jobstore mount LOCATOR MOUNTPOINT`` and ``jobstore umount MOUNTPOINT``.

Without ``--foreground`` the mount command forks a daemon and returns only
when the daemon reports, through a pipe, that the mount is ready, or exits
non-zero with the daemon's one-line reason when it is not; nothing is mounted
then. Toil, boto3 and pyfuse3 load only in the process that serves the mount.
"""

from __future__ import annotations

import argparse
import faulthandler
import fcntl
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from jobstore import patience
from jobstore.locator import InvalidLocator, parse_locator
from jobstore.mount import daemon_lock_path, mount_device

PROG = "jobstore"
READY = b"ready"
#: Options `-o` understands besides timeout=SECONDS, as FUSE tools spell them.
FLAG_OPTIONS = ("allow_other", "allow_root", "debug")


class CommandError(Exception):
    """A failure reported as one line and a non-zero exit."""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    patience.set_interactive()  # a person waits: report an unreachable store in seconds
    try:
        if args.command == "mount":
            return _mount(args)
        return _umount(args)
    except CommandError as e:
        print(f"{PROG} {args.command}: {e}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Browse a Toil job store as files.")
    commands = parser.add_subparsers(dest="command", required=True)

    m = commands.add_parser("mount", help="mount a job store as a live, read-only tree")
    m.add_argument("locator", help="local:<path> or s3:<bucket>[/<prefix>]")
    m.add_argument("mountpoint", help="an existing directory")
    m.add_argument(
        "-f",
        "--foreground",
        action="store_true",
        help="serve in this process until unmounted (default: run as a daemon)",
    )
    m.add_argument(
        "-o",
        dest="options",
        action="append",
        default=[],
        metavar="OPTIONS",
        help="comma-separated: allow_other, allow_root, debug, timeout=SECONDS",
    )
    m.add_argument(
        "--timeout",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="how long the kernel caches names and attributes (default: 1)",
    )
    m.add_argument(
        "--threads",
        type=int,
        default=0,
        metavar="N",
        help="store calls run at once (default: by backend)",
    )
    m.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    m.add_argument(
        "--log-file",
        metavar="PATH",
        help="daemon log (default: stderr in the foreground, else "
        "$XDG_STATE_HOME/jobstore/mount.log)",
    )
    m.add_argument(
        "--debug", action="store_true", help="log at DEBUG level, FUSE requests included"
    )
    m.set_defaults(allow_other=False, allow_root=False)

    u = commands.add_parser("umount", help="unmount and wait for the daemon to exit")
    u.add_argument("mountpoint")
    u.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for the daemon to exit (default: 60)",
    )
    return parser


# ================================================================= mount


def _mount(args: argparse.Namespace) -> int:
    # Paths are made absolute here: the daemon works from "/".
    args.mountpoint = os.path.realpath(args.mountpoint)
    try:
        args.locator = parse_locator(args.locator).canonical
    except InvalidLocator as e:
        raise CommandError(str(e)) from None
    if args.log_file is not None:
        args.log_file = os.path.abspath(args.log_file)
    for opt in ",".join(args.options).split(","):
        name, _, value = opt.partition("=")
        if name in FLAG_OPTIONS and not value:
            setattr(args, name, True)
        elif name == "timeout" and value:
            try:
                args.timeout = float(value)
            except ValueError:
                raise CommandError(f"not a number of seconds: -o {opt}") from None
        elif opt:
            raise CommandError(
                f"unknown mount option {opt!r} (known: {', '.join(FLAG_OPTIONS)}, timeout=SECONDS)"
            )
    if args.debug:
        args.log_level = "DEBUG"
    if args.foreground:
        _setup_logging(args.log_level, None if args.log_file is None else Path(args.log_file))
        return _serve(args, ready=None)
    return _daemonize(args)


def _serve(args: argparse.Namespace, ready: Callable[[], None] | None) -> int:
    """Open, mount, report readiness, serve; raise CommandError before the mount is ready."""
    from jobstore.mount import daemon as d
    from jobstore.mount.fs import JobStoreFS
    from jobstore.mount.view import View

    try:
        d.check_mountpoint(args.mountpoint)
        store = d.open_store(args.locator)
        threads = args.threads or max(8, 2 * store.backend.concurrency)
        fs = JobStoreFS(View(store), timeout=args.timeout, threads=threads)
        options = d.fuse_options(store.locator, args.allow_other, args.allow_root, args.debug)
        lock = d.hold_daemon_lock(args.mountpoint)
    except d.MountError as e:
        raise CommandError(str(e)) from None
    try:
        try:
            d.mount(fs, args.mountpoint, options)
        except d.MountError as e:
            raise CommandError(str(e)) from None
        logging.getLogger("jobstore.mount").info("mounted %s at %s", store.locator, args.mountpoint)
        d.serve(args.mountpoint, ready)
    finally:
        d.release_daemon_lock(args.mountpoint, lock)
    return 0


def _daemonize(args: argparse.Namespace) -> int:
    """Fork the daemon, and return once it says the mount is ready (or why it is not)."""
    log_file = Path(args.log_file) if args.log_file else _default_log_file()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            said = pipe.read()
        if said == READY:
            return 0
        os.waitpid(pid, 0)
        reason = said.decode(errors="replace").strip()
        raise CommandError(reason or "the daemon exited before the mount was ready")

    # The daemon: its own session, so the caller's terminal and signals do not reach it.
    os.close(read_end)
    os.setsid()
    os.chdir("/")
    code = 1
    try:
        # Away from the caller's terminal: input from nowhere, any other output
        # (libfuse's messages with --debug) to the log.
        with open(os.devnull, "rb") as null:
            os.dup2(null.fileno(), 0)
        _setup_logging(args.log_level, log_file)
        log_fd = os.open(log_file, os.O_WRONLY | os.O_APPEND)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)

        def ready() -> None:
            os.write(write_end, READY)
            os.close(write_end)

        code = _serve(args, ready)
    except CommandError as e:
        os.write(write_end, str(e).encode())
    except BaseException:
        logging.getLogger("jobstore.mount").exception("the mount daemon failed")
    finally:
        os._exit(code)


def _default_log_file() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(state) / "jobstore" / "mount.log"


def _setup_logging(level: str, log_file: Path | None) -> None:
    """Log to ``log_file`` (else stderr); SIGUSR1 and crashes write every thread's stack there."""
    stream = sys.stderr
    if log_file is not None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as e:
            raise CommandError(f"cannot open the log file {log_file}: {e.strerror}") from None
        # Line-buffered and open for the process's life: faulthandler writes to its fd.
        stream = os.fdopen(fd, "a", buffering=1)
    logging.basicConfig(
        level=level,
        stream=stream,
        format="%(asctime)s jobstore-mount[%(process)d] %(levelname)s %(name)s: %(message)s",
    )
    # `kill -USR1 <daemon>` shows where a hanging daemon is stuck.
    faulthandler.enable(stream)
    faulthandler.register(signal.SIGUSR1, file=stream, all_threads=True)


# ================================================================ umount


def _umount(args: argparse.Namespace) -> int:
    mountpoint = os.path.realpath(args.mountpoint)
    if mount_device(mountpoint) is None:
        raise CommandError(f"{mountpoint} is not a jobstore mount")
    try:
        lock: int | None = os.open(daemon_lock_path(mountpoint), os.O_RDONLY)
    except FileNotFoundError:
        lock = None  # no daemon (it died): unmounting the dead mount is all there is to do
    try:
        done = subprocess.run(["fusermount3", "-u", mountpoint], capture_output=True, text=True)
        if done.returncode:
            said = done.stderr.strip().splitlines()
            raise CommandError(said[-1] if said else f"fusermount3 -u exited {done.returncode}")
        if lock is not None and not _wait_for_lock(lock, args.timeout):
            raise CommandError(f"the daemon is still running {args.timeout:g} s after unmounting")
    finally:
        if lock is not None:
            os.close(lock)
    return 0


def _wait_for_lock(fd: int, timeout: float) -> bool:
    """Whether the daemon let go of its lock (by exiting) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
