"""The FUSE view of a job store and the ``jobstore`` command.

What the daemon and ``jobstore umount`` share lives here, so that the command
finds a mount's daemon without importing Toil or pyfuse3.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path

#: The file system type mounts show in /proc/self/mountinfo.
FSTYPE = "fuse.jobstore"


def daemon_lock_path(mountpoint: str) -> Path:
    """The lock file a mount's daemon holds for as long as it lives.

    ``jobstore umount`` waits on this lock to know the daemon has exited: the
    kernel drops the lock when the process ends, however it ends. It lives in
    the user's runtime directory, named after the mount point.
    """
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        base = Path(runtime) / "jobstore"
    else:
        base = Path(tempfile.gettempdir()) / f"jobstore-{os.getuid()}"
    base.mkdir(mode=0o700, exist_ok=True)
    st = os.lstat(base)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise PermissionError(f"{base} is not a directory of this user")
    digest = hashlib.sha256(os.fsencode(os.path.realpath(mountpoint))).hexdigest()[:24]
    return base / f"mount-{digest}.lock"


def mount_device(mountpoint: str) -> str | None:
    """The ``major:minor`` device of the jobstore mount at ``mountpoint`` (the newest), or None."""
    found = None
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if fstype == FSTYPE and _unescape(fields[4]) == mountpoint:
                found = fields[2]
    return found


def _unescape(field: str) -> str:
    """Undo mountinfo's octal escapes (``\\040`` for a space)."""
    raw = field.encode("utf-8", "surrogateescape").decode("unicode_escape")
    return raw.encode("latin-1").decode("utf-8", "surrogateescape")
