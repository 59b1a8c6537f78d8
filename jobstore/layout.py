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
    ledger/attempts/<shard>/<job-id>/<attempt>   one empty object per attempt started
    ledger/events/<time>-<unique>       what the leader saw happen, batched
    quarantine/<stamp>/<key>            objects ``jobstore fsck --repair`` moved aside

Damage comes in two kinds, told apart here once for every reader:

* a *stray* key is one this layout cannot have produced (a name that is not a
  job ID, a job in the wrong shard, a file ID of no known shape, anything at
  the top level but the prefixes above). Stores skip it with a warning, so a
  stray object never stops a restart, ``toil status`` or the mount;
* a *corrupt* object sits at a key the layout produced but its bytes do not
  load (see :class:`jobstore.store.CorruptJobError`): that is an error.

Nothing reads ``quarantine/``: every listing of the store ignores it.

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
META = "meta/"
LOG_CURSOR = META + "log-cursor.json"
LEADER = META + "leader/"
QUARANTINE = "quarantine/"
LEDGER = "ledger/"
LEDGER_ATTEMPTS = LEDGER + "attempts/"
LEDGER_EVENTS = LEDGER + "events/"
CONFIG = SHARED + "config.pickle"
#: The names at the top of a store: everything else there is stray.
TOP_LEVEL = frozenset(
    p.rstrip("/") for p in (SHARED, JOBS, FILES, HINTS, LOGS, META, QUARANTINE, LEDGER)
)

ANON = "@anon"
JOB_FILES = "@job"

_JOB_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}")
_SHARED_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")
_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_SHARD = re.compile(r"[0-9a-f]{3}")
_UUID_HEX = re.compile(r"[0-9a-f]{32}")
_ANON_REST = re.compile(r"[0-9a-f]{29}")
_LOG_NAME = re.compile(r"[0-9]{20}-[0-9a-f]{12}")
#: One component of a hint string (see toil's HintedJobStore._sanitize_hint).
_HINT = re.compile(r"[A-Za-z0-9_.-]{1,40}")
_HINT_FILES, _HINT_DELETED = "files", "deleted"
_SLOT_NUMBER = re.compile(r"0|[1-9][0-9]*")
_BASENAME_CHARS = re.compile(r"[^\x00-\x1f\x7f/]+")
MAX_FILE_ID = 1024
MAX_BASENAME_BYTES = 200
#: No component we issue is longer (quoted basenames are cut to 200 bytes); longer ones would
#: fail on local file systems (NAME_MAX) with an error other than "no such file".
MAX_COMPONENT_BYTES = 255


class InvalidName(ValueError):
    """A name from outside that can never be a valid key."""


#: How many ``<shard>`` buckets there are (3 hex digits).
JOB_SHARDS = 16**3


def shard(name: str) -> str:
    """A stable 3-hex-digit bucket (:data:`JOB_SHARDS` of them) for any name."""
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


def job_id_from_key(key: str) -> str | None:
    """The job ID whose description lives at ``key``, or None for a stray key."""
    shard_name, sep, job_id = key.removeprefix(JOBS).partition("/")
    if key.startswith(JOBS) and sep and is_job_id(job_id) and shard(job_id) == shard_name:
        return job_id
    return None


def attempts_prefix(job_id: str) -> str:
    """Where the run ledger keeps the attempts of a job (see :mod:`jobstore.ledger`)."""
    return f"{LEDGER_ATTEMPTS}{shard(job_id)}/{job_id}/"


def job_files_prefix(job_id: str) -> str:
    return f"{FILES}{JOB_FILES}/{shard(job_id)}/{job_id}/"


def job_file_owner(key: str) -> str | None:
    """The job a ``cleanup=True`` file at ``key`` belongs to, or None for a stray key."""
    parts = key.removeprefix(FILES).split("/")
    if (
        key.startswith(FILES)
        and len(parts) == 5
        and parts[0] == JOB_FILES
        and is_job_id(parts[2])
        and shard(parts[2]) == parts[1]
        and _UUID_HEX.fullmatch(parts[3])
        and _is_basename(parts[4])
    ):
        return parts[2]
    return None


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


def _is_basename(name: str) -> bool:
    """Whether :func:`sanitize_basename` leaves ``name`` as it is (and does not default it)."""
    return (
        _BASENAME_CHARS.fullmatch(name) is not None
        and name == name.strip()
        and name not in (".", "..")
        and _is_utf8(name)
        and len(name.encode("utf-8")) <= MAX_BASENAME_BYTES
    )


def parse_hint_path(path: str) -> tuple[str, str] | None:
    """``(kind, slot)`` of a hint-tree path, or None when no hinted ID can have made it.

    ``kind`` is ``"files"`` for a slot (a hinted file ID and its claim) and
    ``"deleted"`` for a tombstone; ``slot`` is the file ID the path stands for.
    Shapes as toil's HintedJobStore makes them: ``<hint>/.../<kind>/[<n>/]<basename>``.
    """
    parts = path.split("/")
    i = next((i for i, p in enumerate(parts) if p in (_HINT_FILES, _HINT_DELETED)), None)
    if i is None:
        return None
    hints, kind, tail = parts[:i], parts[i], parts[i + 1 :]
    if not hints or not all(_HINT.fullmatch(h) and h not in (".", "..") for h in hints):
        return None
    if len("/".join(hints)) > 120 or len(tail) not in (1, 2) or not _is_basename(tail[-1]):
        return None
    if len(tail) == 2 and not _SLOT_NUMBER.fullmatch(tail[0]):
        return None
    return kind, "/".join([*hints, _HINT_FILES, *tail])


def tombstone_path(slot: str) -> str:
    """The hint-tree path of the tombstone of a slot from :func:`parse_hint_path`."""
    kind, found = parse_hint_path(slot) or ("", "")
    if kind != _HINT_FILES or found != slot:
        raise InvalidName(f"not a hinted file ID: {slot!r}")
    hints, _, rest = slot.partition(f"/{_HINT_FILES}/")
    return f"{hints}/{_HINT_DELETED}/{rest}"


def _file_id_stray_reason(file_id: str) -> str | None:
    parts = file_id.split("/")
    if parts[0] == JOB_FILES:
        if job_file_owner(FILES + file_id) is None:
            return "not a cleanup file ID (@job/<shard>/<job-id>/<uuid>/<basename>)"
        return None
    if parts[0] == ANON:
        if (
            len(parts) == 4
            and _SHARD.fullmatch(parts[1])
            and _ANON_REST.fullmatch(parts[2])
            and _is_basename(parts[3])
        ):
            return None
        return "not an anonymous file ID (@anon/<abc>/<uuid>/<basename>)"
    if parse_hint_path(file_id) == (_HINT_FILES, file_id):
        return None
    return "not a file ID of this store"


# ----------------------------------------------------------------- shared


def check_shared_name(name: object) -> str:
    if not isinstance(name, str) or not _SHARED_NAME.fullmatch(name) or name in (".", ".."):
        raise InvalidName(f"Not a valid shared file name: {name!r}")
    return name


def shared_key(name: str) -> str:
    return SHARED + check_shared_name(name)


def shared_name_from_key(key: str) -> str | None:
    """The shared file name stored at ``key``, or None for a stray key."""
    name = key.removeprefix(SHARED)
    if key.startswith(SHARED) and _SHARED_NAME.fullmatch(name) and name not in (".", ".."):
        return name
    return None


# ------------------------------------------------------------------- logs


def new_log_key(now_ns: int | None = None) -> str:
    """A log key that sorts after every key made earlier, on any machine whose clock agrees."""
    stamp = time.time_ns() if now_ns is None else now_ns
    return f"{LOGS}{stamp:020d}-{uuid.uuid4().hex[:12]}"


def is_log_name(name: str) -> bool:
    """Whether ``logs/<name>`` is a key :func:`new_log_key` can have made."""
    return _LOG_NAME.fullmatch(name) is not None


def is_log_key(key: str) -> bool:
    return key.startswith(LOGS) and is_log_name(key[len(LOGS) :])


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


# ----------------------------------------------------------------- damage


def stray_reason(key: str) -> str | None:
    """Why this layout cannot have produced ``key``, or None when it can have.

    Keys under :data:`QUARANTINE` are none of the store's business: None.
    """
    if key.startswith(QUARANTINE):
        return None
    if key.startswith(JOBS):
        if job_id_from_key(key) is not None:
            return None
        job_id = key.rsplit("/", 1)[-1]
        if key.count("/") == 2 and is_job_id(job_id):
            return f"job in the wrong shard (belongs at {job_key(job_id)})"
        return "not a job key (jobs/<shard>/<job-id>)"
    if key.startswith(FILES):
        return _file_id_stray_reason(key[len(FILES) :])
    if key.startswith(HINTS):
        if parse_hint_path(key[len(HINTS) :]) is None:
            return "not a hint claim or tombstone (<hints>/files|deleted/[<n>/]<basename>)"
        return None
    if key.startswith(SHARED):
        return None if shared_name_from_key(key) else "not a shared file name"
    if key.startswith(LOGS):
        return None if is_log_key(key) else "not a log message key (<time>-<unique>)"
    if key == LOG_CURSOR:
        return None
    if key.startswith(LEADER):
        claim = key.removesuffix(".beat")
        if leader_generation(claim) is not None:
            return None
        return "not a leader claim or heartbeat (meta/leader/<generation>[.beat])"
    if key.startswith(LEDGER_ATTEMPTS):
        return _attempt_stray_reason(key)
    if key.startswith(LEDGER_EVENTS):
        name = key[len(LEDGER_EVENTS) :]
        return None if _LOG_NAME.fullmatch(name) else "not a ledger event batch (<time>-<unique>)"
    return "outside every prefix of the store's layout"


def _attempt_stray_reason(key: str) -> str | None:
    from jobstore.ledger import AttemptStart  # the attempt names' format is the ledger's

    parts = key[len(LEDGER_ATTEMPTS) :].split("/")
    if (
        len(parts) == 3
        and is_job_id(parts[1])
        and shard(parts[1]) == parts[0]
        and AttemptStart.parse(parts[1], parts[2]) is not None
    ):
        return None
    return "not an attempt record (ledger/attempts/<shard>/<job-id>/<attempt>)"


def new_ledger_events_key(now_ns: int | None = None) -> str:
    """A key for a batch of the leader's events, sorting in the order they were stored."""
    stamp = time.time_ns() if now_ns is None else now_ns
    return f"{LEDGER_EVENTS}{stamp:020d}-{uuid.uuid4().hex[:12]}"
