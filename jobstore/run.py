"""The run at a glance: each job's state, each attempt, the leader, from the store alone.

What a user asks of a running (or dead) workflow -- what runs, what failed and
why, where and when -- answered from what the store holds, so that it reads
the same from any machine: the job descriptions Toil stores, Toil's shared
files (config, pid.log, the kill flag, the root job's ID) and the run ledger
(:mod:`jobstore.ledger`). A store without a ledger (an older one) still gets
every state the descriptions tell; attempts then are unknown.

States of a job still in the store (SPEC "The run view"):

``running``   an attempt of it was started by a worker and has not ended;
``failed``    Toil gave up on it (no tries left);
``retrying``  an attempt failed, tries remain, it does not run now;
``waiting``   a predecessor has not finished, or it has run and waits for
              its successors;
``ready``     it could run now and does not.

An attempt ends when the leader says so. When the leader is gone, an
attempt whose worker ran on this host and is no longer alive has ended too;
one on another host is shown running until someone says otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from toil.jobStores.abstractJobStore import NoSuchFileException

from jobstore import layout, ledger
from jobstore.backend import NotFound
from jobstore.ledger import AttemptStart, Event

if TYPE_CHECKING:
    from toil.job import JobDescription
    from toil.jobStores.abstractJobStore import AbstractJobStore

    from jobstore.store import JobStore

logger = logging.getLogger(__name__)

STATES = ("running", "failed", "retrying", "waiting", "ready")
TRACE_COLUMNS = (
    "job_id",
    "name",
    "attempt",
    "status",
    "exit",
    "host",
    "native_id",
    "submit",
    "start",
    "complete",
    "duration",
    "realtime",
)
#: How far the clocks of the leader's and a worker's machines may disagree when
#: an attempt's start (worker's clock) is matched with its end (leader's clock).
CLOCK_SKEW_NS = 5 * 10**9
#: Graphviz fill colours by state.
STATE_COLOURS = {
    "running": "#8fd18f",
    "failed": "#f08080",
    "retrying": "#f5c26b",
    "waiting": "#d9d9d9",
    "ready": "#9ec5f0",
}


# ============================================================== attempts


@dataclass
class Attempt:
    """One attempt of a job, from its worker's record and the leader's events."""

    job_id: str
    number: int = 0
    status: str = "running"
    exit: int | None = None
    host: str = ""
    pid: int | None = None
    native_id: str = ""
    submit_ns: int | None = None
    start_ns: int | None = None
    complete_ns: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "attempt": self.number,
            "status": self.status,
            "exit": self.exit,
            "host": self.host or None,
            "pid": self.pid,
            "native_id": self.native_id or None,
            "submit": iso(self.submit_ns),
            "start": iso(self.start_ns),
            "end": iso(self.complete_ns),
        }


def assemble_attempts(
    job_id: str, starts: list[AttemptStart], events: list[Event], natives: dict[int, str]
) -> list[Attempt]:
    """Pair a job's recorded starts with the leader's ``issued`` and ``ended`` events.

    The n-th end belongs to the earliest start not yet ended that began before
    it (give or take clock skew); an end with no such start is an attempt whose
    worker never recorded itself (it died first). The leader issues each
    attempt once, so the n-th ``issued`` event is the n-th attempt's submission.
    """
    attempts = [
        Attempt(job_id, host=s.host, pid=s.pid, native_id=s.native_id, start_ns=s.start_ns)
        for s in sorted(starts, key=lambda s: s.start_ns)
    ]
    issued = sorted((e for e in events if e.kind == "issued"), key=lambda e: e.time_ns)
    for e in sorted((e for e in events if e.kind == "ended"), key=lambda e: e.time_ns):
        for a in attempts:
            assert a.start_ns is not None or a.complete_ns is not None
            if a.complete_ns is None and (a.start_ns or 0) <= e.time_ns + CLOCK_SKEW_NS:
                a.complete_ns, a.exit = e.time_ns, e.exit
                break
        else:
            attempts.append(Attempt(job_id, complete_ns=e.time_ns, exit=e.exit))
    attempts.sort(key=lambda a: a.start_ns if a.start_ns is not None else a.complete_ns or 0)
    for a, e in zip(attempts, issued, strict=False):  # each attempt was issued once, in order
        a.submit_ns = e.time_ns
        if not a.native_id and e.batch_id is not None:
            a.native_id = natives.get(e.batch_id, "")
    for n, a in enumerate(attempts, 1):
        a.number = n
        if a.complete_ns is not None:
            a.status = "completed" if a.exit == 0 else "failed"
    return attempts


def pid_alive_since(pid: int, since_ns: int) -> bool:
    """Whether process ``pid`` of this host is alive and was started by ``since_ns``.

    A process started later is another one that got the same pid.
    """
    if not _pid_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            start_ticks = int(f.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/stat", "rb") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith(b"btime"))
    except (OSError, ValueError, StopIteration, IndexError):
        return True
    started_ns = (boot + start_ticks / os.sysconf("SC_CLK_TCK")) * 1e9
    return started_ns <= since_ns + 2 * 10**9  # btime and ticks are coarse


# ================================================================== jobs


@dataclass(frozen=True, slots=True)
class JobSummary:
    """What the run view needs of one stored version of a job description.

    Kept per version (:class:`RunMemo`), so that a new snapshot of the run
    reads and unpickles only the descriptions that changed since the last.
    """

    name: str
    has_body: bool
    remaining_try_count: int
    successors: tuple[tuple[int, str], ...]
    services: tuple[str, ...]
    log_id: str | None

    @classmethod
    def of(cls, job: JobDescription) -> JobSummary:
        log_id = job.logJobStoreFileID
        return cls(
            name=job.jobName,
            has_body=job.has_body(),
            remaining_try_count=job.remainingTryCount,
            successors=tuple(job.successors_by_phase()),
            services=tuple(str(s) for s in job.services),
            log_id=None if log_id is None else str(log_id),
        )


@dataclass
class RunMemo:
    """What one snapshot of a run keeps for the next: summaries by job version, events by key."""

    jobs: dict[tuple[str, str], JobSummary] = field(default_factory=dict)
    events: dict[str, list[Event]] = field(default_factory=dict)

    def summaries(
        self,
        versions: Iterable[tuple[str, str | None]],
        load: Callable[[str], tuple[str, JobDescription] | None],
        concurrency: int = 1,
    ) -> dict[str, JobSummary]:
        """The summary of every listed ``(job ID, version)``; ``load`` reads what is new.

        A version of None means the listing could not tell it: the job is read.
        ``load(job_id)`` returns the version it read with the description, or
        None for a job gone since it was listed; one whose description does not
        load is skipped with a warning naming it (it must not hide the run).
        Up to ``concurrency`` loads run side by side (remote stores).
        """
        kept: dict[tuple[str, str], JobSummary] = {}
        todo: list[str] = []
        for job_id, version in versions:
            summary = None if version is None else self.jobs.get((job_id, version))
            if version is None or summary is None:
                todo.append(job_id)
            else:
                kept[(job_id, version)] = summary

        def summarize(job_id: str) -> tuple[str, JobSummary] | None:
            try:
                loaded = load(job_id)
            except Exception as e:
                logger.warning("Skipping job %s: its description does not load: %s", job_id, e)
                return None
            return None if loaded is None else (loaded[0], JobSummary.of(loaded[1]))

        with ThreadPoolExecutor(max(1, min(concurrency, len(todo)))) as pool:
            for job_id, done in zip(todo, pool.map(summarize, todo), strict=True):
                if done is not None:
                    kept[(job_id, done[0])] = done[1]
        self.jobs = kept
        return {job_id: summary for (job_id, _), summary in kept.items()}


# ================================================================ leader


@dataclass
class Leader:
    host: str | None = None
    pid: int | None = None
    alive: bool | None = None
    since_ns: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "pid": self.pid,
            "alive": self.alive,
            "since": iso(self.since_ns),
        }


def read_leader(store: AbstractJobStore, since_ns: int | None = None) -> Leader:
    """Who leads the run, from Toil's ``pid.log`` and ``leader_node_id.log``.

    Works on any Toil job store (through its API, reading only). Toil records
    the leader's pid and its machine's boot ID, not its name: the leader is
    known alive or dead only when it ran on this machine. ``since_ns`` is when
    ``pid.log`` was written, where the store can tell.
    """
    from toil.common import getNodeID

    try:
        pid = store.read_leader_pid()
    except (NoSuchFileException, ValueError):
        return Leader()
    try:
        node = store.read_leader_node_id()
    except NoSuchFileException:
        node = ""
    if node and node == getNodeID():
        alive = pid_alive_since(pid, since_ns) if since_ns is not None else _pid_alive(pid)
        return Leader(socket.gethostname(), pid, alive, since_ns)
    return Leader(None, pid, None, since_ns)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


# =================================================================== run


@dataclass
class JobRecord:
    """A job still in the store: its description and what the run view says of it."""

    job_id: str
    name: str
    state: str
    attempts: list[Attempt]
    successors: list[tuple[int, str]]
    services: list[str]
    log_id: str | None


@dataclass
class Run:
    workflow_id: str | None
    leader: Leader
    killflag: bool
    finished: bool
    jobs: dict[str, JobRecord]
    #: Every attempt ever recorded, of jobs in the store and of jobs long gone.
    attempts: list[Attempt]
    names: dict[str, str]
    updated_ns: int | None
    read_ns: int = field(default_factory=time.time_ns)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for job in self.jobs.values():
            counts[job.state] += 1
        counts["total"] = len(self.jobs)
        return counts

    def by_state(self, state: str) -> list[str]:
        return sorted(j.job_id for j in self.jobs.values() if j.state == state)

    def status(self) -> dict[str, Any]:
        """``status.json``."""
        return {
            "workflow_id": self.workflow_id,
            "leader": self.leader.to_json(),
            "killflag": self.killflag,
            "counts": self.counts(),
            "updated": iso(self.updated_ns),
            "finished": self.finished,
        }

    def status_json(self) -> bytes:
        return (json.dumps(self.status(), indent=2) + "\n").encode()

    def trace_tsv(self) -> bytes:
        """``trace.tsv``: one row per attempt, in the order they started."""
        rows = ["\t".join(TRACE_COLUMNS)]
        for a in self.attempts:
            complete = a.complete_ns
            rows.append(
                "\t".join(
                    _cell(v)
                    for v in (
                        a.job_id,
                        self.names.get(a.job_id) or job_name_from_id(a.job_id),
                        a.number,
                        a.status,
                        a.exit,
                        a.host,
                        a.native_id,
                        iso(a.submit_ns),
                        iso(a.start_ns),
                        iso(complete),
                        _seconds(a.submit_ns, complete),
                        _seconds(a.start_ns, complete),
                    )
                )
            )
        return ("\n".join(rows) + "\n").encode()

    def graph_dot(self) -> bytes:
        """``graph.dot``: the jobs still in the store and their edges, filled by state."""
        lines = [
            "digraph workflow {",
            "  rankdir=TB;",
            '  node [shape=box, style="rounded,filled", fontname="Helvetica"];',
        ]
        for job in sorted(self.jobs.values(), key=lambda j: j.job_id):
            label = f'"{_dot_escape(job.name)}\\n{job.state}"'
            colour = STATE_COLOURS[job.state]
            lines.append(f'  {_dot_id(job.job_id)} [label={label}, fillcolor="{colour}"];')
        for job in sorted(self.jobs.values(), key=lambda j: j.job_id):
            for phase, successor in job.successors:
                if successor in self.jobs:
                    lines.append(
                        f'  {_dot_id(job.job_id)} -> {_dot_id(successor)} [label="{phase}"];'
                    )
            for service in job.services:
                if service in self.jobs:
                    lines.append(f"  {_dot_id(job.job_id)} -> {_dot_id(service)} [style=dashed];")
        lines.append("}")
        return ("\n".join(lines) + "\n").encode()


def read_run(store: JobStore, memo: RunMemo | None = None) -> Run:
    """The run as one of our stores tells it now: its records and its ledger.

    With the ``memo`` of the last snapshot, only what changed since is read.
    """
    memo = RunMemo() if memo is None else memo
    backend = store.backend

    def load(job_id: str) -> tuple[str, JobDescription] | None:
        try:
            with backend.open_version(layout.job_key(job_id)) as (info, stream):
                return info.version, store.job_from_bytes(job_id, stream.read())
        except NotFound:
            return None

    versions = (
        (job_id, version)
        for key, version in backend.list_versions(layout.JOBS)
        if (job_id := layout.job_id_from_key(key)) is not None  # strays: see jobstore fsck
    )
    jobs = memo.summaries(versions, load, backend.concurrency)
    return build_run(
        config=store.config,
        leader=_our_leader(store),
        killflag=store.read_kill_flag(),
        finished=root_finished(store, jobs),
        jobs=jobs,
        starts=list(ledger.read_attempts(backend)),
        events=ledger.read_events(backend, memo.events),
    )


def build_run(
    config: Any,
    leader: Leader,
    killflag: bool,
    finished: bool,
    jobs: dict[str, JobSummary],
    starts: list[AttemptStart],
    events: list[Event],
) -> Run:
    """The run from what any store can tell: its jobs, and the ledger's records if any.

    A store without a ledger (Toil's own) passes no starts and no events: its
    jobs then get every state but ``running``, and no attempts.
    """
    natives = {
        e.batch_id: e.native_id for e in events if e.kind == "native" and e.batch_id is not None
    }
    events_by_job: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        if e.job_id:
            events_by_job[e.job_id].append(e)
    starts_by_job: dict[str, list[AttemptStart]] = defaultdict(list)
    for s in starts:
        starts_by_job[s.job_id].append(s)
    here = socket.gethostname()
    try:
        tries: int | None = int(config.retryCount) + 1
    except (AttributeError, TypeError, ValueError):
        tries = None

    attempts: list[Attempt] = []
    attempts_by_job: dict[str, list[Attempt]] = {}
    for job_id in sorted(set(starts_by_job) | set(events_by_job)):
        found = assemble_attempts(job_id, starts_by_job[job_id], events_by_job[job_id], natives)
        for a in found:
            if a.status == "running" and not _may_run(a, leader, here):
                # Ended with no one to say how: the job's record tells (gone or its body
                # run: it completed; its body still to run: that attempt failed).
                job = jobs.get(job_id)
                a.status = "failed" if job is not None and job.has_body else "completed"
        attempts_by_job[job_id] = found
        attempts.extend(found)
    attempts.sort(key=lambda a: (a.start_ns or a.complete_ns or 0, a.job_id, a.number))

    blocked = _blocked_jobs(jobs)
    records: dict[str, JobRecord] = {}
    for job_id, job in jobs.items():
        mine = attempts_by_job.get(job_id, [])
        records[job_id] = JobRecord(
            job_id,
            job.name,
            _state(job, mine, job_id in blocked, tries),
            mine,
            list(job.successors),
            list(job.services),
            job.log_id,
        )
    moments = [e.time_ns for e in events] + [s.start_ns for s in starts]
    workflow_id = getattr(config, "workflowID", None)
    return Run(
        workflow_id=None if workflow_id is None else str(workflow_id),
        leader=leader,
        killflag=killflag,
        finished=finished,
        jobs=records,
        attempts=attempts,
        names={job_id: job.name for job_id, job in jobs.items()},
        updated_ns=max(moments, default=None),
    )


def _may_run(attempt: Attempt, leader: Leader, here: str) -> bool:
    """Whether an attempt with no end may still be running.

    While the leader lives it reports every end (within about a second): until
    then, running. Without it, only a worker of this host can be seen gone; one
    elsewhere (a cluster's job outlives its leader) is taken to run on.
    """
    if leader.alive or attempt.host != here or attempt.pid is None or attempt.start_ns is None:
        return True
    return pid_alive_since(attempt.pid, attempt.start_ns)


def _blocked_jobs(jobs: dict[str, JobSummary]) -> set[str]:
    """Jobs that wait for a predecessor: one with a body to run, or an earlier phase to finish.

    A predecessor runs its successor phases from the highest number down, one
    at a time; finished successors are gone from the store, so a phase whose
    jobs are all gone counts as done.
    """
    blocked: set[str] = set()
    for job in jobs.values():
        phases: dict[int, list[str]] = defaultdict(list)
        for phase, successor in job.successors:
            if successor in jobs:
                phases[phase].append(successor)
        if not phases:
            continue
        current = None if job.has_body else max(phases)
        for phase, successors in phases.items():
            if phase != current:
                blocked.update(successors)
    return blocked


def _state(job: JobSummary, attempts: list[Attempt], blocked: bool, tries: int | None) -> str:
    if attempts and attempts[-1].status == "running":
        return "running"
    if job.remaining_try_count == 0:
        return "failed"
    if not job.has_body or blocked:
        return "waiting"
    failed_before = any(a.status == "failed" for a in attempts) or (
        tries is not None and job.remaining_try_count < tries
    )
    return "retrying" if failed_before else "ready"


def _our_leader(store: JobStore) -> Leader:
    """Who leads one of our stores: its leader claim says, and whether it lives, from anywhere.

    Where no claim was ever made (a store older than claims), Toil's ``pid.log`` tells.
    """
    from jobstore import leader

    _, holder = leader.current(store.backend)
    if holder is None:
        return read_leader(store, _written_ns(store, "pid.log"))
    alive = leader.alive(store.backend, holder)
    return Leader(holder.host, holder.pid, alive, int(holder.since * 1e9))


def _written_ns(store: JobStore, shared_name: str) -> int | None:
    try:
        return int(store.backend.stat(layout.shared_key(shared_name)).mtime * 1e9)
    except NotFound:
        return None


def root_finished(store: AbstractJobStore, jobs: dict[str, JobSummary]) -> bool:
    """Whether the root job has finished, so that its return value is stored."""
    try:
        with store.read_shared_file_stream("rootJobStoreID") as f:
            root = f.read().decode().strip()
    except NoSuchFileException:
        return False
    return bool(root) and root not in jobs and not store.job_exists(root)


# ============================================================== summary


def render_summary(run: Run, locator: str) -> str:
    """What ``jobstore status`` prints: the run at a glance, then what runs and what failed."""
    leader = run.leader
    alive = {True: "alive", False: "dead", None: "alive or dead: unknown here"}[leader.alive]
    lines = [
        f"workflow  {run.workflow_id or '-'}  on {locator}",
        f"leader    {leader.host or '-'} pid {leader.pid or '-'} ({alive})"
        f" since {iso(leader.since_ns) or '-'}",
        f"killflag  {'YES' if run.killflag else 'NO'}"
        f"    finished  {'yes' if run.finished else 'no'}"
        f"    updated  {iso(run.updated_ns) or '-'}",
        "jobs      " + "  ".join(f"{k} {v}" for k, v in run.counts().items()),
    ]
    for state in ("running", "retrying", "failed"):
        ids = run.by_state(state)
        if not ids:
            continue
        lines.append("")
        lines.append(f"{state}:")
        for job_id in ids:
            job = run.jobs[job_id]
            last = job.attempts[-1] if job.attempts else None
            where = ""
            if last is not None:
                where = f"  attempt {last.number} on {last.host or '-'}"
                if last.native_id:
                    where += f" ({last.native_id})"
                if state == "running":
                    where += f" since {iso(last.start_ns) or '-'}"
                elif last.exit is not None:
                    where += f" exit {last.exit}"
            lines.append(f"  {job_id}  {job.name}{where}")
    return "\n".join(lines) + "\n"


# =============================================================== helpers


def iso(ns: int | None) -> str | None:
    """An ISO 8601 UTC time with milliseconds, or None."""
    if ns is None:
        return None
    return (
        datetime.fromtimestamp(ns / 1e9, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def job_name_from_id(job_id: str) -> str:
    """The job name this store's IDs carry (``<name>-<32 hex digits>``)."""
    name, _, tail = job_id.rpartition("-")
    return name if name and len(tail) == 32 else job_id


def _seconds(start: int | None, end: int | None) -> str | None:
    if start is None or end is None:
        return None
    return f"{max(0, end - start) / 1e9:.3f}"


def _cell(value: object) -> str:
    if value is None or value == "":
        return "-"
    return str(value).replace("\t", " ").replace("\n", " ")


def _dot_escape(text: str) -> str:
    """Text for inside a DOT double-quoted string."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def _dot_id(job_id: str) -> str:
    return f'"{_dot_escape(job_id)}"'
