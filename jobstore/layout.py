"""Where everything lives: the mapping from Toil's names to backend keys.

One module owns the key layout so that the store, the FUSE view and the tests
agree on it, and so that every name coming from outside is checked here before
it can become a key. Nothing that passes these checks can point outside the
store: components are never empty, ``.``, ``..``, and never hold ``/`` or NUL.

Layout (every backend stores the same keys)::

    shared/<name>                       shared files (config.pickle, pid.log, ...)
    jobs/<shard>/<job-id>               pickled JobDescription
    files/<file-id>                     file contents; the file ID *is* the path
    hints/<hint-path>                   slot claims and tombstones for hinted IDs
    logs/<time>-<unique>                one object per log message, in write order
    meta/log-cursor.json                which log messages the leader has read

File IDs come in three shapes, told apart by their first component (hints are
sanitised to ``[A-Za-z0-9_.-]`` so they can never start with ``@``)::

    @anon/<abc>/<uuid>/<basename>        a file not cleaned up with a job
    @job/<shard>/<job-id>/<uuid>/<basename>  deleted together with its job
    <hint>/.../files/[<n>/]<basename>   a hinted file (see toil's HintedJobStore)

``<basename>`` is the file's own name, URL-quoted where Toil's and CWL's
carriers would break it (:func:`sanitize_basename`): ``item%20%231.txt``.
``<shard>`` spreads jobs over 4,096 directories so that no directory grows
past a few hundred entries at a million jobs, and creating one costs O(1).
``<abc>`` does the same for anonymous files, a run of files at a time.
"""

from __future__ import annotations

import hashlib
import re
import string
import time
import uuid

SHARED = "shared/"
JOBS = "jobs/"
FILES = "files/"
HINTS = "hints/"
LOGS = "logs/"
LOG_CURSOR = "meta/log-cursor.json"
CONFIG = SHARED + "config.pickle"

ANON = "@anon"
JOB_FILES = "@job"

_JOB_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}")
_SHARED_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")
_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
MAX_FILE_ID = 1024
MAX_BASENAME_BYTES = 200
#: No component we issue is longer (quoted basenames are cut to 200 bytes); longer ones would
#: fail on local file systems (NAME_MAX) with an error other than "no such file".
MAX_COMPONENT_BYTES = 255


class InvalidName(ValueError):
    """A name from outside that can never be a valid key."""


def shard(name: str) -> str:
    """A stable 3-hex-digit bucket (4,096 of them) for any name."""
    return hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=2).hexdigest()[:3]


# ------------------------------------------------------------------- jobs


def new_job_id(job_name: str | None) -> str:
    """A fresh job ID that names the job, so ``ls jobs/`` is readable."""
    slug = _SLUG_UNSAFE.sub("_", job_name or "").strip("._-")[:40] or "job"
    return f"{slug}-{uuid.uuid4().hex}"


def is_job_id(job_id: object) -> bool:
    return isinstance(job_id, str) and _JOB_ID.fullmatch(job_id) is not None


def job_key(job_id: str) -> str:
    if not is_job_id(job_id):
        raise InvalidName(f"not a job ID of this store: {job_id!r}")
    return f"{JOBS}{shard(job_id)}/{job_id}"


def job_id_from_key(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def job_files_prefix(job_id: str) -> str:
    return f"{FILES}{JOB_FILES}/{shard(job_id)}/{job_id}/"


# ------------------------------------------------------------------ files


def sanitize_basename(basename: str | None, default: str = "file") -> str:
    """A file's name as the last component of its ID: URL-quoted where a carrier would break.

    Toil carries file IDs in ``toilfile:<size>:<x>:<id>`` URLs and CWL locations,
    where a raw ``#`` starts a fragment (cwltool cut ``item #1.txt`` to ``item ``),
    ``?`` a query, ``;`` parameters and ``%`` an escape; in command lines, where spaces
    and shell characters split or expand; and in the mount's paths, where ``/`` and
    NUL cannot be. So, as Toil's own ``file:`` store does, every character but RFC
    3986's unreserved ones (letters, digits, ``_.-~``) is percent-encoded (its UTF-8
    bytes; an undecodable file name's raw bytes) -- except printable non-ASCII letters,
    which no carrier breaks on and which keep names in other scripts readable.
    ``unquote`` of the result gives the name back, ``.`` and ``..`` included (``%2E``).
    IDs minted before quoting hold raw characters and still resolve: an ID is its key.
    """
    pieces = [_quote_char(c) for c in basename or ""]
    name = "".join(pieces)
    while len(name.encode("utf-8")) > MAX_BASENAME_BYTES:  # cut whole escapes only
        pieces.pop()
        name = "".join(pieces)
    if name in (".", ".."):
        return name.replace(".", "%2E")
    return name or default


#: RFC 3986's unreserved characters: never quoted (the rest of ASCII always is).
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "_.-~")


def _quote_char(c: str) -> str:
    if c in _UNRESERVED or (c >= "\x80" and c.isprintable()):  # surrogates are not printable
        return c
    try:
        data = c.encode("utf-8", "surrogateescape")  # os.fsdecode's escapes: the raw byte
    except UnicodeEncodeError:
        data = c.encode("utf-8", "surrogatepass")
    return "".join(f"%{b:02X}" for b in data)


#: Anonymous files written one after another share an ``<abc>`` directory for this many
#: files before a random other one takes over, so that writing a file seldom creates that
#: directory and deleting one seldom removes it, while all 4,096 still fill evenly.
ANON_SHARD_RUN = 256


class _AnonShard:
    """The ``<abc>`` directory this process fills, and how many more files go there.

    Threads racing here at most pick a shard early; uniqueness comes from the rest of the ID.
    """

    name = ""
    left = 0


def _anon_shard() -> str:
    if _AnonShard.left <= 0:
        _AnonShard.name, _AnonShard.left = uuid.uuid4().hex[:3], ANON_SHARD_RUN
    _AnonShard.left -= 1
    return _AnonShard.name


def new_file_id(basename: str, job_id: str | None = None) -> str:
    u = uuid.uuid4().hex
    if job_id is not None:
        if not is_job_id(job_id):
            raise InvalidName(f"not a job ID of this store: {job_id!r}")
        return f"{JOB_FILES}/{shard(job_id)}/{job_id}/{u}/{basename}"
    return f"{ANON}/{_anon_shard()}/{u[3:]}/{basename}"


def check_path(path: object, what: str) -> str:
    """Check a '/'-separated relative path from outside; returns it unchanged."""
    if (
        not isinstance(path, str)
        or not path
        or len(path.encode("utf-8", "surrogatepass")) > MAX_FILE_ID  # S3 keys count bytes
        or not _is_utf8(path)  # lone surrogates: no name this store issues has them
    ):
        raise InvalidName(f"not a valid {what}: {path!r}")
    for part in path.split("/"):
        if (
            part in ("", ".", "..")
            or "\x00" in part
            or len(part.encode("utf-8", "surrogatepass")) > MAX_COMPONENT_BYTES
        ):
            raise InvalidName(f"not a valid {what}: {path!r}")
    return path


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def file_key(file_id: str) -> str:
    return FILES + check_path(str(file_id), "file ID")


def is_hinted(file_id: str) -> bool:
    return not file_id.startswith("@")


# ----------------------------------------------------------------- shared


def check_shared_name(name: object) -> str:
    if not isinstance(name, str) or not _SHARED_NAME.fullmatch(name) or name in (".", ".."):
        raise InvalidName(f"Not a valid shared file name: {name!r}")
    return name


def shared_key(name: str) -> str:
    return SHARED + check_shared_name(name)


# ------------------------------------------------------------------- logs


def new_log_key(now_ns: int | None = None) -> str:
    """A log key that sorts after every key made earlier, on any machine whose clock agrees."""
    stamp = time.time_ns() if now_ns is None else now_ns
    return f"{LOGS}{stamp:020d}-{uuid.uuid4().hex[:12]}"


def log_key_floor(now_ns: int) -> str:
    """The smallest log key that a message written at ``now_ns`` or later can have."""
    return f"{LOGS}{now_ns:020d}"
