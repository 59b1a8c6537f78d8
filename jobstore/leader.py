"""One leader per store: who may start, restart or destroy a workflow.

Toil has no lock of its own (DataBiosphere/toil#1187), and two leaders on one
store corrupt it. So the store records each leader in a *claim*,
``meta/leader/<generation>``, created with the backend's atomic
``put_if_absent`` and never rewritten: of two processes that both find
generation ``n`` dead, exactly one creates ``n + 1``, and the other then finds
``n + 1`` alive and is refused. Claims are never deleted (one per leader start),
so generations only grow and the highest claim is the current one. Only the
atomic create is needed from a backend; no lock service, no compare-and-swap.

A claim is held while its process lives, as seen

* from the same machine (same boot, same PID namespace): the PID is alive and
  started when the claim says, which defeats PID reuse. A killed leader's
  claim is free at once;
* from any other machine: the holder's heartbeat ``<claim>.beat``, which it
  rewrites every :data:`RENEW` seconds from the moment it announces itself
  (Toil's ``write_leader_pid``), or the claim itself before that, is younger
  than :data:`EXPIRY`. Clocks must agree within ``EXPIRY - RENEW``.

A leader that exits normally marks its heartbeat released, so the next leader
may start at once from anywhere.

Who claims (see :class:`jobstore.store.JobStore`): ``initialize`` (the
initializer leads), and on ``--restart`` ``write_config`` (Toil rewrites the
config before it announces itself) and ``write_leader_pid``. ``destroy`` asks
:func:`check_destroy`. Readers (workers, ``toil status``, the mount) never
come here: nothing in this module costs a job or file operation a request.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass

import psutil

from jobstore import layout
from jobstore.backend import Backend, NotFound

logger = logging.getLogger(__name__)

#: How often a leader rewrites its heartbeat.
RENEW = 10.0
#: A heartbeat (or, before the first one, a claim) older than this is a dead leader's.
EXPIRY = 60.0
#: Rounds of "find the current claim, create the next" before giving up on a store
#: where claims keep appearing (each lost round means another leader won).
_ATTEMPTS = 5


class LeaderRunning(RuntimeError):
    """A live leader holds the store: a second one, or a destroy by anyone else, is refused."""


@dataclass(frozen=True)
class Holder:
    """Who made a claim, from where, and when."""

    generation: int
    #: For people: the host name.
    host: str
    #: Where a PID names one process: boot ID and PID namespace.
    node: str
    pid: int
    #: The process's start time, to tell it from a later process with the same PID.
    started: float
    #: When it claimed the store.
    since: float

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, generation: int, data: bytes) -> Holder:
        d = json.loads(data)
        return cls(
            generation,
            str(d["host"]),
            str(d["node"]),
            int(d["pid"]),
            float(d["started"]),
            float(d["since"]),
        )

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since))
        return f"pid {self.pid} on host {self.host} since {when}"


def _node() -> str:
    """This machine's boot and PID namespace: same node, same meaning of a PID."""
    parts = []
    with contextlib.suppress(OSError), open("/proc/sys/kernel/random/boot_id") as f:
        parts.append(f.read().strip())
    with contextlib.suppress(OSError):
        parts.append(os.readlink("/proc/self/ns/pid"))
    return "/".join(parts) or socket.gethostname()


def _process_started(pid: int) -> float | None:
    """When process ``pid`` started; None when it is gone (a zombie is gone: it runs no more)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return round(process.create_time(), 2)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        return -1.0  # alive, start unknown (another user's process)


def _me(generation: int) -> Holder:
    pid = os.getpid()
    return Holder(
        generation,
        socket.gethostname(),
        _node(),
        pid,
        _process_started(pid) or 0.0,
        time.time(),
    )


def _is_me(holder: Holder) -> bool:
    pid = os.getpid()
    return holder.pid == pid and holder.node == _node() and holder.started == _process_started(pid)


# ------------------------------------------------------------------- reading


def current(backend: Backend) -> tuple[int, Holder | None]:
    """The highest claim's generation (0: none yet) and its holder (None: unreadable).

    An unreadable claim is a damaged store's, never a reason to stop: it counts
    as dead, with a warning naming its key.
    """
    generation = 0
    for key in backend.list(layout.LEADER):
        found = layout.leader_generation(key)
        if found is not None and found > generation:
            generation = found
    if generation == 0:
        return 0, None
    key = layout.leader_claim_key(generation)
    try:
        return generation, Holder.from_bytes(generation, backend.get_bytes(key))
    except NotFound:
        return generation, None
    except (ValueError, KeyError, TypeError) as e:
        logger.warning("Ignoring the unreadable leader claim %s: %s", key, e)
        return generation, None


def alive(backend: Backend, holder: Holder) -> bool:
    """Whether the holder of a claim still leads (see the module's docstring)."""
    try:
        beat = json.loads(backend.get_bytes(layout.leader_beat_key(holder.generation)))
    except NotFound:
        beat = {}
    except ValueError as e:
        logger.warning("Ignoring the unreadable heartbeat of leader %d: %s", holder.generation, e)
        beat = {}
    if not isinstance(beat, dict):
        beat = {}
    if beat.get("released"):
        return False
    if holder.node == _node():
        started = _process_started(holder.pid)
        return started is not None and started in (holder.started, -1.0)
    beat_time = beat.get("time")
    last = max(holder.since, beat_time if isinstance(beat_time, (int, float)) else 0.0)
    return time.time() - last < EXPIRY


# ------------------------------------------------------------------ claiming


@dataclass
class _Lease:
    """A claim this process holds, and the backend to renew it through."""

    backend: Backend
    holder: Holder
    beating: bool = False


_held: dict[str, _Lease] = {}
#: Guards ``_held``, and is held across each heartbeat write, so that once
#: ``check_destroy`` drops a lease no heartbeat of it can land in the store.
_lock = threading.Lock()
_beater: threading.Thread | None = None


def claim(backend: Backend, locator: str) -> Holder:
    """Make this process the store's leader, unless a live leader holds it.

    Raises :class:`LeaderRunning` naming the live holder. Idempotent: a
    process that leads already gets its own claim back.
    """
    for _ in range(_ATTEMPTS):
        generation, holder = current(backend)
        if holder is not None:
            if _is_me(holder):
                break
            if alive(backend, holder):
                raise LeaderRunning(_refusal(locator, holder))
        mine = _me(generation + 1)
        if backend.put_if_absent(layout.leader_claim_key(mine.generation), mine.to_bytes()):
            if holder is not None:
                logger.warning("Took over %s from its dead leader (%s)", locator, holder.describe())
            holder = mine
            break
    else:
        raise LeaderRunning(f"{locator}: {_ATTEMPTS} leader claims lost in a row; try again")
    with _lock:
        lease = _held.get(locator)
        if lease is None or lease.holder != holder:
            _held[locator] = _Lease(backend, holder)
    return holder


def announce(backend: Backend, locator: str) -> None:
    """Claim the store if this process does not lead it yet, and keep the claim alive."""
    with _lock:
        lease = _held.get(locator)
    if lease is None or lease.holder.pid != os.getpid():
        claim(backend, locator)
    global _beater
    with _lock:
        _held[locator].beating = True
        if _beater is None or not _beater.is_alive():  # none yet, or forked: threads die
            _beater = threading.Thread(target=_beat_forever, name="jobstore-leader", daemon=True)
            _beater.start()
    _renew(locator)


def check_destroy(backend: Backend, locator: str) -> None:
    """Refuse to destroy a store that another live leader holds; stop our own heartbeat.

    Destroying is for the leader itself (Toil's ``--clean``) or for when no
    leader lives (``toil clean`` after a run).
    """
    with _lock:
        _held.pop(locator, None)
    # Asked of the store even by a process that claimed it: its claim may have lapsed.
    _, holder = current(backend)
    if holder is not None and not _is_me(holder) and alive(backend, holder):
        raise LeaderRunning(
            f"refusing to destroy {locator}: its leader, {holder.describe()}, is running; "
            f"stop it first with 'toil kill {locator}', or wait for it to end"
        )


def _refusal(locator: str, holder: Holder) -> str:
    return (
        f"{locator} is led by {holder.describe()}: only one leader may run a workflow; "
        f"stop that one with 'toil kill {locator}', or wait for it to end"
    )


# ----------------------------------------------------------------- heartbeat


def _beat_forever() -> None:
    while True:
        time.sleep(RENEW)
        with _lock:
            locators = [k for k, lease in _held.items() if lease.beating]
        for locator in locators:
            _renew(locator)


def _renew(locator: str, released: bool = False) -> None:
    """Rewrite one lease's heartbeat; give it up when the store is gone or taken over."""
    with _lock:
        lease = _held.get(locator)
        if lease is None or lease.holder.pid != os.getpid():
            return
        gen = lease.holder.generation
        beat = {"time": time.time(), "released": released}
        try:
            lease.backend.put_bytes(layout.leader_beat_key(gen), json.dumps(beat).encode())
            newer = not released and lease.backend.exists(layout.leader_claim_key(gen + 1))
        except FileNotFoundError:  # a local store removed from under us
            del _held[locator]
            return
        except Exception as e:  # keep trying: a network can come back within EXPIRY
            logger.warning("Could not renew the leader claim of %s: %s", locator, e)
            return
        if newer or released:
            del _held[locator]
    if newer:
        logger.error(
            "This leader (%s) lost %s to a newer leader: its heartbeat was not seen for "
            "%d s; stop this process, the other one runs the workflow now",
            lease.holder.describe(),
            locator,
            EXPIRY,
        )


@atexit.register
def _release_all() -> None:
    """Mark the heartbeats of this process's leases released, so the next leader starts at once."""
    with _lock:
        locators = [k for k, lease in _held.items() if lease.beating]
    for locator in locators:
        _renew(locator, released=True)
