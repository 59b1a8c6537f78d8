"""``jobstore mount LOCATOR MOUNTPOINT``, ``jobstore umount MOUNTPOINT``, ``jobstore fsck LOCATOR``.

``fsck`` is :mod:`jobstore.fsck`; this only parses its arguments.

Without ``--foreground`` the mount command forks a daemon and returns only
when the daemon reports, through a pipe, that the mount is ready, or exits
non-zero with the daemon's one-line reason when it is not; nothing is mounted
then. Toil, boto3 and pyfuse3 load only in the process that serves the mount.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import faulthandler
import fcntl
import logging
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from jobstore import patience
from jobstore.locator import InvalidLocator, parse_locator, usage
from jobstore.mount import daemon_lock_path, mount_device
from jobstore.mount.source import SourceUnavailable, canonical, open_source

PROG = "jobstore"
READY = b"ready"
#: Options `-o` understands besides timeout=SECONDS, as FUSE tools spell them.
FLAG_OPTIONS = ("allow_other", "allow_root", "debug")


class CommandError(Exception):
    """A failure reported as one line and a non-zero exit (``code``)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    patience.set_interactive()  # a person waits: report an unreachable store in seconds
    try:
        if args.command == "mount":
            return _mount(args)
        if args.command == "fsck":
            return _fsck(args)
        if args.command == "status":
            return _status(args)
        return _umount(args)
    except CommandError as e:
        print(f"{PROG} {args.command}: {e}", file=sys.stderr)
        return e.code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Browse a Toil job store as files.")
    commands = parser.add_subparsers(dest="command", required=True)

    m = commands.add_parser("mount", help="mount a job store as a live, read-only tree")
    m.add_argument("locator", help=f"{usage()}; or a Toil store: file:<path>, aws:<region>:<name>")
    m.add_argument("mountpoint", help="an existing directory, best empty (it hides what is in it)")
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

    f = commands.add_parser(
        "fsck",
        help="check every object of a store; exit 1 when there is a problem",
        description="Check every object of a job store and list each problem. "
        "Exit 0 when clean, 1 when there are problems, 2 when the store cannot be read.",
    )
    f.add_argument("locator", help="local:<path> or s3:<bucket>[/<prefix>]")
    f.add_argument(
        "--repair",
        action="store_true",
        help="move bad objects under quarantine/ in the store (never deletes data); "
        "for a stopped run only",
    )
    f.add_argument(
        "--debris-age",
        type=float,
        default=None,
        metavar="SECONDS",
        help="temporaries and uploads older than this are debris (default: a day)",
    )

    s = commands.add_parser(
        "status", help="what a run is doing: leader, job states, attempts (no FUSE needed)"
    )
    s.add_argument("locator", help=f"{usage()}; or a Toil store: file:<path>, aws:<region>:<name>")
    s.add_argument("--json", action="store_true", help="print status.json, as the mount shows it")
    s.add_argument(
        "--watch",
        nargs="?",
        const=2.0,
        type=float,
        metavar="SECONDS",
        help="refresh every SECONDS (default 2) until interrupted",
    )

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
        args.locator = canonical(args.locator)
    except SourceUnavailable as e:
        raise CommandError(str(e)) from None
    _check_mountpoint(args.mountpoint)
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


def _check_mountpoint(mountpoint: str) -> None:
    """Refuse a mountpoint that cannot take the mount, saying what to do; warn if it hides files."""
    try:
        st = os.stat(mountpoint)
    except FileNotFoundError:
        raise CommandError(f"mountpoint {mountpoint} does not exist (mkdir it first)") from None
    except OSError as e:
        if e.errno != errno.ENOTCONN:
            raise CommandError(f"mountpoint {mountpoint}: {e.strerror}") from None
        fix = f"`fusermount3 -u {mountpoint}`"
        if mount_device(mountpoint) is not None:
            fix = f"`{PROG} umount {mountpoint}` (or {fix})"
        raise CommandError(
            f"{mountpoint} is a dead mount (its daemon died): run {fix}, then mount again"
        ) from None
    if not stat.S_ISDIR(st.st_mode):
        raise CommandError(f"mountpoint {mountpoint} is not a directory")
    with contextlib.suppress(OSError), os.scandir(mountpoint) as entries:
        if any(entries):
            print(
                f"{PROG} mount: warning: {mountpoint} is not empty; "
                "what is in it stays hidden until unmounted",
                file=sys.stderr,
            )


def _serve(args: argparse.Namespace, ready: Callable[[], None] | None) -> int:
    """Open, mount, report readiness, serve; raise CommandError before the mount is ready."""
    from jobstore.mount import daemon as d
    from jobstore.mount.fs import JobStoreFS
    from jobstore.mount.view import View

    try:
        source = open_source(args.locator)
        threads = args.threads or max(8, 2 * source.concurrency)
        fs = JobStoreFS(View(source), timeout=args.timeout, threads=threads)
        options = d.fuse_options(source.locator, args.allow_other, args.allow_root, args.debug)
        lock = d.hold_daemon_lock(args.mountpoint)
    except (d.MountError, SourceUnavailable) as e:
        raise CommandError(str(e)) from None
    try:
        try:
            d.mount(fs, args.mountpoint, options)
        except d.MountError as e:
            raise CommandError(str(e)) from None
        logging.getLogger("jobstore.mount").info(
            "mounted %s at %s", source.locator, args.mountpoint
        )
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


# ================================================================== fsck


def _fsck(args: argparse.Namespace) -> int:
    try:
        locator = parse_locator(args.locator).canonical
    except InvalidLocator as e:
        raise CommandError(str(e), code=2) from None
    from jobstore import fsck  # Toil loads here, not for mount's parent or umount

    try:
        return fsck.run(locator, args.repair, args.debris_age, sys.stdout)
    except fsck.Unusable as e:
        raise CommandError(str(e), code=2) from None


# ================================================================ status


def _status(args: argparse.Namespace) -> int:
    from jobstore.run import RunMemo, render_summary

    try:
        source = open_source(canonical(args.locator))
    except SourceUnavailable as e:
        raise CommandError(str(e)) from None
    memo = RunMemo()
    try:
        while True:
            run = source.read_run(memo)
            text = run.status_json().decode() if args.json else render_summary(run, source.locator)
            if args.watch is None:
                sys.stdout.write(text)
                return 0
            sys.stdout.write("\x1b[H\x1b[2J" + text)  # home, clear: a screen that refreshes
            sys.stdout.flush()
            time.sleep(args.watch)
    except KeyboardInterrupt:  # how one stops --watch: whatever it was doing, no traceback
        return 0


# ================================================================ umount


def _umount(args: argparse.Namespace) -> int:
    mountpoint = os.path.realpath(args.mountpoint)
    if mount_device(mountpoint) is None:
        raise CommandError(f"{mountpoint} is not a jobstore mount")
    lock_path = daemon_lock_path(mountpoint)
    try:
        lock: int | None = os.open(lock_path, os.O_RDONLY)
    except FileNotFoundError:
        lock = None
    # A daemon that was killed left its lock file behind, unlocked: the mount is dead
    # ("Transport endpoint is not connected") and unmounting it is all there is to do.
    dead = lock is not None and _wait_for_lock(lock, 0)
    try:
        done = subprocess.run(["fusermount3", "-u", mountpoint], capture_output=True, text=True)
        if done.returncode:
            said = done.stderr.strip().splitlines()
            raise CommandError(said[-1] if said else f"fusermount3 -u exited {done.returncode}")
        if lock is not None and not dead and not _wait_for_lock(lock, args.timeout):
            raise CommandError(f"the daemon is still running {args.timeout:g} s after unmounting")
    finally:
        if lock is not None:
            os.close(lock)
    if dead:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)  # the dead daemon's; a live one removes its own
        print(f"{PROG} umount: {mountpoint}: its daemon had died; unmounted", file=sys.stderr)
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
