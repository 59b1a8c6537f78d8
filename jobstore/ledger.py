"""The run ledger: who ran which attempt of which job, where and when, and how it ended.

Toil keeps what a run *does* in the leader's memory and in a message-bus file
on the leader's machine (``toil status`` reads that file, so it only works
there, and only while the file lasts). The ledger puts the same facts in the
store, so any machine that reaches the store can tell what runs, during the
run and after the leader died. It costs little:

* A worker writes one empty object when it starts an attempt. Everything
  about the attempt (start time, pid, the batch system's job ID, host) is in
  the object's *key*, so a listing reads attempts without a single GET::

      ledger/attempts/<shard>/<job-id>/<start-ns>_<pid>_<native-id>_<host>

* The leader tails its own message-bus file (``config.write_messages``, which
  Toil always writes) with Toil's own parser and stores what it saw (jobs
  issued with their batch IDs, attempts ended with their exit codes, jobs
  given up on) as one object per second at most, whatever the job rate.
  Only ends change what the view shows a job doing, so only they are stored
  that soon; issues (which give trace.tsv its submit times and batch IDs)
  wait up to :data:`HOLD_SECONDS` for the next end to go with, so that a run
  whose attempts end more than a second apart writes one batch per end, not
  one per end and one per issue::

      ledger/events/<time-ns>-<unique>     JSON lines

``JOBSTORE_LEDGER=0`` in the leader's environment (workers inherit it through
the store's ``get_env``) turns the ledger off: the run view then shows what the
job descriptions tell.

Times are those of the writer's clock: a worker's start is when it started,
an event's time is when the leader's tailer saw it (within
:data:`POLL_SECONDS` of Toil publishing it). A job that Toil chains into the
worker of its predecessor (a follow-on run in the same process) shares that
worker's attempt and has none of its own.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jobstore import layout
from jobstore.backend import NotFound

if TYPE_CHECKING:
    from jobstore.backend import Backend

logger = logging.getLogger(__name__)

#: How often the leader's tailer looks at the bus file (its messages' times are this exact).
POLL_SECONDS = 0.2
#: How often at most it stores what it saw: the leader's ledger writes per second.
FLUSH_SECONDS = 1.0
#: How long at most events that change no job's state (issues, batch IDs) wait for one that does.
HOLD_SECONDS = 5.0
#: The events that change a job's state in the run view: stored within FLUSH_SECONDS.
URGENT_KINDS = frozenset({"ended", "failed", "missing"})
#: Environment variables in which batch systems tell a job its own ID, most specific first.
NATIVE_ID_VARS = ("SLURM_JOB_ID", "LSB_JOBID", "PBS_JOBID", "JOB_ID", "FLUX_JOB_ID")
#: Key fields are separated by this; every field is quoted so none holds it.
_SEP = "_"
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-")


def enabled() -> bool:
    """Whether this process keeps the run ledger (``JOBSTORE_LEDGER=0`` turns it off)."""
    return os.environ.get("JOBSTORE_LEDGER", "1") not in ("0", "false", "no", "off")


def _quote(text: str) -> str:
    """A key-safe, still readable form of a host name or batch ID (``-`` when empty)."""
    if not text:
        return "-"
    if text == "-":  # "-" alone stands for empty
        return "%2D"
    return "".join(c if c in _SAFE else "".join(f"%{b:02X}" for b in c.encode()) for c in text)


def _unquote(text: str) -> str:
    if text == "-":
        return ""
    from urllib.parse import unquote

    return unquote(text)


# ============================================================== attempts


@dataclass(frozen=True)
class AttemptStart:
    """What a worker recorded when it started an attempt of a job."""

    job_id: str
    start_ns: int
    pid: int
    native_id: str
    host: str

    @property
    def name(self) -> str:
        """The object's name below the job's attempts prefix."""
        fields = (f"{self.start_ns:020d}", str(self.pid), _quote(self.native_id), _quote(self.host))
        return _SEP.join(fields)

    @classmethod
    def parse(cls, job_id: str, name: str) -> AttemptStart | None:
        """The record a name stands for, or None for a name no worker writes."""
        parts = name.split(_SEP)
        if len(parts) != 4 or not parts[0].isdigit() or not parts[1].isdigit():
            return None
        return cls(job_id, int(parts[0]), int(parts[1]), _unquote(parts[2]), _unquote(parts[3]))


def native_id_from_env() -> str:
    """The batch system's ID of the job this process runs in, when it says so."""
    for var in NATIVE_ID_VARS:
        value = os.environ.get(var)
        if value:
            return value
    return ""


def record_attempt(backend: Backend, job_id: str) -> AttemptStart:
    """Store that this process starts an attempt of ``job_id`` now (one write)."""
    attempt = AttemptStart(
        job_id, time.time_ns(), os.getpid(), native_id_from_env(), socket.gethostname()
    )
    backend.put_bytes(layout.attempts_prefix(job_id) + attempt.name, b"")
    return attempt


def read_attempts(backend: Backend, job_id: str | None = None) -> Iterator[AttemptStart]:
    """Every recorded attempt start (of one job, or of all), skipping names no worker writes."""
    prefix = layout.LEDGER_ATTEMPTS if job_id is None else layout.attempts_prefix(job_id)
    for key in backend.list(prefix):
        parts = key[len(layout.LEDGER_ATTEMPTS) :].split("/")
        attempt = AttemptStart.parse(parts[1], parts[2]) if len(parts) == 3 else None
        if attempt is None:
            logger.warning("Skipping %s: not an attempt record", key)
            continue
        yield attempt


# ================================================================ events


@dataclass(frozen=True)
class Event:
    """One thing the leader announced about a job.

    ``kind`` is ``issued`` (with ``batch_id``), ``native`` (a batch ID's
    native ID), ``ended`` (an attempt ended, with ``exit``), ``failed``
    (Toil gave up on the job) or ``missing`` (the batch system lost it).
    """

    time_ns: int
    kind: str
    job_id: str = ""
    batch_id: int | None = None
    native_id: str = ""
    exit: int | None = None

    def to_json(self) -> str:
        doc: dict[str, Any] = {"t": self.time_ns, "kind": self.kind}
        if self.job_id:
            doc["job"] = self.job_id
        if self.batch_id is not None:
            doc["batch"] = self.batch_id
        if self.native_id:
            doc["native"] = self.native_id
        if self.exit is not None:
            doc["exit"] = self.exit
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> Event:
        doc = json.loads(line)
        return cls(
            time_ns=int(doc["t"]),
            kind=str(doc["kind"]),
            job_id=str(doc.get("job", "")),
            batch_id=None if doc.get("batch") is None else int(doc["batch"]),
            native_id=str(doc.get("native", "")),
            exit=None if doc.get("exit") is None else int(doc["exit"]),
        )


def events_from_bus(messages: Iterator[Any], now_ns: int) -> Iterator[Event]:
    """The ledger's events for Toil bus messages (of the types :data:`BUS_TYPES` names)."""
    from toil.bus import (
        ExternalBatchIdMessage,
        JobCompletedMessage,
        JobFailedMessage,
        JobIssuedMessage,
        JobMissingMessage,
    )

    for m in messages:
        if isinstance(m, JobIssuedMessage):
            yield Event(now_ns, "issued", m.job_id, batch_id=int(m.toil_batch_id))
        elif isinstance(m, ExternalBatchIdMessage):
            yield Event(
                now_ns, "native", batch_id=int(m.toil_batch_id), native_id=m.external_batch_id
            )
        elif isinstance(m, JobCompletedMessage):
            yield Event(now_ns, "ended", m.job_id, exit=int(m.exit_code))
        elif isinstance(m, JobFailedMessage):
            yield Event(now_ns, "failed", m.job_id)
        elif isinstance(m, JobMissingMessage):
            yield Event(now_ns, "missing", m.job_id)


def bus_types() -> list[type]:
    from toil.bus import (
        ExternalBatchIdMessage,
        JobCompletedMessage,
        JobFailedMessage,
        JobIssuedMessage,
        JobMissingMessage,
    )

    return [
        JobIssuedMessage,
        ExternalBatchIdMessage,
        JobCompletedMessage,
        JobFailedMessage,
        JobMissingMessage,
    ]


def read_events(backend: Backend, cache: dict[str, list[Event]] | None = None) -> list[Event]:
    """Every stored event, in the order the leader saw them.

    Event objects never change once written, so a caller that reads often
    (the mount) passes a ``cache`` and pays only for objects it has not seen.
    """
    cache = {} if cache is None else cache
    events: list[Event] = []
    for key in backend.list(layout.LEDGER_EVENTS):
        batch = cache.get(key)
        if batch is None:
            try:
                text = backend.get_bytes(key).decode("utf-8")
                batch = [Event.from_json(line) for line in text.splitlines() if line]
            except NotFound:
                continue
            except (ValueError, KeyError, TypeError) as e:
                logger.warning("Skipping %s: not a ledger event batch (%s)", key, e)
                batch = []
            cache[key] = batch
        events.extend(batch)
    return events


class LeaderTailer:
    """Copies the leader's bus messages into the store, one batch a second at most.

    Runs in a daemon thread of the leader process. The bus file carries no
    times, so the tailer looks at it often (every :data:`POLL_SECONDS`) and
    stamps each message when it first sees it; it stores what it saw at most
    once every :data:`FLUSH_SECONDS`, and events no state depends on after
    :data:`HOLD_SECONDS` at the latest. Toil opens (and empties) the bus file when
    its leader starts, so the tailer reads from the beginning of whatever file
    is there and starts over when the file shrinks or is replaced.
    """

    def __init__(
        self,
        backend: Backend,
        bus_path: str,
        flush_seconds: float = FLUSH_SECONDS,
        hold_seconds: float = HOLD_SECONDS,
    ) -> None:
        self._backend = backend
        self._path = bus_path
        self._every = flush_seconds
        self._hold = hold_seconds
        self._offset = 0
        self._inode: int | None = None
        self._pending: list[Event] = []
        self._pending_since = 0.0
        self._urgent = False
        self._written = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="jobstore-ledger", daemon=True)

    def start(self) -> None:
        self._thread.start()
        atexit.register(self.stop)

    def stop(self, flush: bool = True) -> None:
        """Stop tailing; store what is new first unless ``flush`` is False (the store is going)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if flush:
            with contextlib.suppress(Exception):
                self.flush()
        atexit.unregister(self.stop)

    def _run(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            try:
                self.tick()
            except Exception:
                logger.warning("Could not store the run ledger's events", exc_info=True)

    def tick(self) -> bool:
        """Take in what is new, and store what is pending if it is due; whether it stored."""
        self.poll()
        now = time.monotonic()
        with self._lock:
            if not self._pending:
                return False
            if self._urgent:
                due = now - self._written >= self._every
            else:
                due = now - self._pending_since >= self._hold
        return due and self.flush() > 0

    def poll(self) -> None:
        """Take in the bus messages written since the last look, stamped with the time now."""
        with self._lock:
            lines = self._new_lines()
            if lines:
                from toil.bus import MessageBus

                messages = MessageBus.scan_bus_messages(io.BytesIO(lines), bus_types())
                new = list(events_from_bus(messages, time.time_ns()))
                if new and not self._pending:
                    self._pending_since = time.monotonic()
                self._urgent = self._urgent or any(e.kind in URGENT_KINDS for e in new)
                self._pending.extend(new)

    def flush(self) -> int:
        """Store every event taken in and not yet stored, as one object; how many."""
        self.poll()
        with self._lock:
            events, self._pending = self._pending, []
            urgent, self._urgent = self._urgent, False
            self._written = time.monotonic()
            if not events:
                return 0
            body = "".join(e.to_json() + "\n" for e in events).encode()
            key = layout.new_ledger_events_key()
            try:
                self._backend.put_bytes(key, body)
            except BaseException:
                self._pending[:0] = events  # kept for the next try
                self._urgent = urgent
                raise
            return len(events)

    def _new_lines(self) -> bytes:
        """Whole lines appended to the bus file since the last call."""
        try:
            with open(self._path, "rb") as f:
                st = os.fstat(f.fileno())
                if st.st_ino != self._inode or st.st_size < self._offset:
                    self._inode, self._offset = st.st_ino, 0  # a new or emptied file
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return b""
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next call
        self._offset += end
        return data[:end]
