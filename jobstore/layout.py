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
    meta/leader/<generation>            one object per leader, never rewritten
    meta/leader/<generation>.beat       that leader's heartbeat, rewritten by it alone

File IDs come in three shapes, told apart by their first component (hints are
sanitised to ``[A-Za-z0-9_.-]`` so they can never start with ``@``)::

    @anon/<abc>/<uuid>/<basename>        a file not cleaned up with a job
    @job/<shard>/<job-id>/<uuid>/<basename>  deleted together with its job
    <hint>/.../files/[<n>/]<basename>   a hinted file (see toil's HintedJobStore)

``<shard>`` spreads jobs over 4,096 directories so that no directory grows
past a few hundred entries at a million jobs, and creating one costs O(1).
``<abc>`` does the same for anonymous files, a run of files at a time.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid

SHARED = "shared/"
JOBS = "jobs/"
FILES = "files/"
HINTS = "hints/"
LOGS = "logs/"
META = "meta/"
LOG_CURSOR = META + "log-cursor.json"
LEADER = META + "leader/"
CONFIG = SHARED + "config.pickle"

ANON = "@anon"
JOB_FILES = "@job"

_JOB_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}")
_SHARED_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")
_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
MAX_FILE_ID = 1024
MAX_BASENAME_BYTES = 200
#: No component we issue is longer (basenames are cut to 200 bytes); longer ones would
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
    """A basename safe as one path component, keeping it recognisable."""
    name = "".join("_" if c == "/" or ord(c) < 32 or c == "\x7f" else c for c in basename or "")
    name = name.strip()
    while len(name.encode("utf-8", "surrogatepass")) > MAX_BASENAME_BYTES:
        name = name[:-1]
    if name in ("", ".", ".."):
        return default
    # Lone surrogates (undecodable file names) cannot be stored on S3: replace them.
    return name.encode("utf-8", "replace").decode("utf-8")


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


# ----------------------------------------------------------------- leader

_GENERATION = re.compile(r"[0-9]{12}")


def leader_claim_key(generation: int) -> str:
    """The claim of the ``generation``-th leader; zero-padded so keys sort by generation."""
    return f"{LEADER}{generation:012d}"


def leader_beat_key(generation: int) -> str:
    return leader_claim_key(generation) + ".beat"


def leader_generation(key: str) -> int | None:
    """The generation a claim key names; None for heartbeats and anything else."""
    name = key[len(LEADER) :] if key.startswith(LEADER) else ""
    return int(name) if _GENERATION.fullmatch(name) else None


def stored_in_clear(key: str) -> bool:
    """Whether an encrypting backend must store ``key`` unencrypted.

    The config (it names the key) and the leader's claims: any process, even
    one that has not read the config (``toil clean``), must tell who leads.
    """
    return key == CONFIG or key.startswith(LEADER)
