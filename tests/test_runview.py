"""The run view: the ledger's records, the states they give, and real Toil runs read through them.

The real-run test drives ``workflows/runview.py`` (a sleeping job held by a
gate, its follow-on, a job failing once, a job failing always) through a
leader and ``_toil_worker`` processes on each backend, and reads the run from
the store alone while it runs and after the leader exited.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from jobstore import layout, ledger
from jobstore.ledger import AttemptStart, Event
from jobstore.run import (
    TRACE_COLUMNS,
    JobSummary,
    Leader,
    Run,
    RunMemo,
    assemble_attempts,
    build_run,
    read_run,
)
from jobstore.store import JobStore, open_store
from tests.mountutil import Mount, eventually
from tests.test_workflows import VENV_BIN, _env

WORKFLOW = Path(__file__).parent / "workflows" / "runview.py"
JOBSTORE = str(Path(VENV_BIN) / "jobstore")
S = 10**9

# ================================================================ records


@pytest.mark.parametrize(
    ("host", "native"),
    [("vm", ""), ("n1.cluster.example", "4711"), ("odd_host %x", "12.3[4]_5"), ("ü-host", "-")],
)
def test_attempt_keys_round_trip(host: str, native: str) -> None:
    record = AttemptStart("job-" + "a" * 32, 1_700_000_000_123_456_789, 4242, native, host)
    name = record.name
    assert "/" not in name and name.count("_") == 3
    assert AttemptStart.parse(record.job_id, name) == record


@pytest.mark.parametrize("name", ["", "x", "1_2_3", "a_2_-_h", "1_b_-_h", "1_2_-_h_extra"])
def test_names_no_worker_writes_are_not_attempts(name: str) -> None:
    assert AttemptStart.parse("job", name) is None


def test_events_round_trip() -> None:
    for e in (
        Event(5, "issued", "j", batch_id=3),
        Event(6, "native", batch_id=3, native_id="slurm-9"),
        Event(7, "ended", "j", exit=0),
        Event(8, "ended", "j", exit=137),
        Event(9, "failed", "j"),
    ):
        assert Event.from_json(e.to_json()) == e


def _start(at: int, host: str = "h", native: str = "") -> AttemptStart:
    return AttemptStart("j", at * S, 100 + at, native, host)


def test_attempts_pair_starts_with_ends_in_order() -> None:
    events = [
        Event(1 * S, "issued", "j", batch_id=1),
        Event(3 * S, "ended", "j", exit=1),
        Event(4 * S, "issued", "j", batch_id=2),
        Event(9 * S, "ended", "j", exit=0),
    ]
    natives = {1: "n-1", 2: "n-2"}
    a1, a2 = assemble_attempts("j", [_start(5), _start(2)], events, natives)
    assert (a1.number, a1.status, a1.exit, a1.start_ns, a1.complete_ns) == (
        1,
        "failed",
        1,
        2 * S,
        3 * S,
    )
    assert (a2.number, a2.status, a2.exit, a2.start_ns, a2.complete_ns) == (
        2,
        "completed",
        0,
        5 * S,
        9 * S,
    )
    assert (a1.submit_ns, a1.native_id) == (1 * S, "n-1")
    assert (a2.submit_ns, a2.native_id) == (4 * S, "n-2")


def test_an_attempt_without_an_end_runs_and_an_end_without_a_start_is_kept() -> None:
    # The first attempt's worker died before it recorded itself (more than the clock
    # skew before the second attempt started).
    events = [
        Event(1 * S, "issued", "j", batch_id=6),
        Event(2 * S, "ended", "j", exit=137),
        Event(3 * S, "issued", "j", batch_id=7),
    ]
    lost, running = assemble_attempts("j", [_start(10, native="99")], events, {6: "n-6"})
    assert (lost.status, lost.exit, lost.host, lost.start_ns) == ("failed", 137, "", None)
    assert (lost.submit_ns, lost.native_id) == (1 * S, "n-6")
    assert (running.status, running.exit, running.native_id) == ("running", None, "99")
    assert running.submit_ns == 3 * S


def test_worker_clock_ahead_of_leader_still_pairs() -> None:
    # The worker's clock runs 2 s ahead: its start is after the leader saw the end.
    (a,) = assemble_attempts("j", [_start(12)], [Event(10 * S, "ended", "j", exit=0)], {})
    assert (a.status, a.complete_ns) == ("completed", 10 * S)


def test_leader_stores_ends_within_a_second_and_holds_issues_for_them(
    local_locator: str, toil_config: object, tmp_path: Path
) -> None:
    """Ends reach the store a batch interval apart; an issue waits to go in the same batch.

    The bus file is written by Toil's own MessageBus, as the leader writes it.
    """
    from toil.bus import JobCompletedMessage, JobIssuedMessage, MessageBus

    store = JobStore(local_locator)
    store.initialize(toil_config)  # type: ignore[arg-type]
    bus, path = MessageBus(), tmp_path / "bus"
    keep = bus.connect_output_file(str(path))
    tailer = ledger.LeaderTailer(store.backend, str(path), flush_seconds=2.0, hold_seconds=4.0)

    def batches() -> list[list[str]]:
        return [
            [line.split('"kind":"')[1].split('"')[0] for line in text.splitlines()]
            for text in (
                store.backend.get_bytes(k).decode()
                for k in store.backend.list(layout.LEDGER_EVENTS)
            )
        ]

    def tick_for(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            tailer.tick()
            time.sleep(ledger.POLL_SECONDS)

    bus.publish(JobIssuedMessage("Job", "job-1", 1))
    bus.check()
    tick_for(1.0)
    assert batches() == []  # an issue alone is held
    bus.publish(JobCompletedMessage("Job", "job-1", 0))
    bus.publish(JobIssuedMessage("Job", "job-2", 2))
    bus.check()
    tick_for(0.5)
    assert batches() == [["issued", "ended", "issued"]]  # the end took the issues along
    bus.publish(JobCompletedMessage("Job", "job-2", 1))
    bus.check()
    tick_for(0.5)
    assert len(batches()) == 1  # a second end waits out the interval since the last batch
    tick_for(2.0)
    assert batches()[1] == ["ended"]
    bus.publish(JobIssuedMessage("Job", "job-3", 3))
    bus.check()
    tick_for(2.0)
    assert len(batches()) == 2
    tick_for(2.5)
    assert batches()[2:] == [["issued"]]  # an issue alone goes after hold_seconds
    del keep


def test_stray_ledger_objects_are_skipped(store_locator: str, toil_config: object) -> None:
    store = JobStore(store_locator)
    store.initialize(toil_config)  # type: ignore[arg-type]
    good = ledger.record_attempt(store.backend, "job-" + "b" * 32)
    store.backend.put_bytes(layout.LEDGER_ATTEMPTS + "stray", b"")
    store.backend.put_bytes(layout.attempts_prefix("job-x") + "not-an-attempt", b"")
    store.backend.put_bytes(layout.LEDGER_EVENTS + "junk", b"\x80 not json")
    assert list(ledger.read_attempts(store.backend)) == [good]
    assert ledger.read_events(store.backend) == []
    run = read_run(store)
    assert [a.job_id for a in run.attempts] == [good.job_id]
    store.destroy()


# ================================================================ real runs


def _wait_for(what: str, read: Callable[[], Run], ok: Callable[[Run], bool], timeout: float) -> Run:
    deadline = time.monotonic() + timeout
    while True:
        run = read()
        if ok(run):
            return run
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not seen in {timeout} s; last status {run.status()}")
        time.sleep(0.1)


def _state(run: Run, name: str) -> str | None:
    states = [j.state for j in run.jobs.values() if j.name == name]
    return states[0] if states else None


def test_a_real_run_read_from_the_store(store_locator: str, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    args = [
        sys.executable,
        str(WORKFLOW),
        store_locator,
        f"--gate={gate}",
        "--batchSystem=single_machine",
        "--maxCores=2",
        "--retryCount=1",
        "--retryBackoffSeconds=6",
        "--clean=never",
        "--logLevel=INFO",
        f"--workDir={tmp_path}",
    ]
    leader = subprocess.Popen(
        args, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    mount: Mount | None = None
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                store = open_store(store_locator)
                break
            except Exception:
                if time.monotonic() > deadline or leader.poll() is not None:
                    raise
                time.sleep(0.2)
        memo = RunMemo()

        def read() -> Run:
            return read_run(store, memo)

        run = _wait_for("sleeper running", read, lambda r: _state(r, "sleeper") == "running", 60)
        (sleeping,) = [j for j in run.jobs.values() if j.name == "sleeper"]
        assert sleeping.attempts[-1].host == socket.gethostname()
        assert _state(run, "after") == "waiting"  # its predecessor runs
        assert run.leader.alive is True and run.leader.pid is not None

        # The same, through the mount, from the store alone.
        mount = Mount(store_locator, tmp_path / "mnt")
        mp = mount.mountpoint
        sleeper_id = sleeping.job_id
        eventually(lambda: sleeper_id in os.listdir(mp / "by-state" / "running"))
        link = mp / "by-state" / "running" / sleeper_id
        assert os.readlink(link) == f"../../jobs/{sleeper_id}"
        assert (link / "state").read_text() == "running\n"  # followed into jobs/
        status_doc = json.loads((mp / "status.json").read_bytes())
        assert status_doc["counts"]["running"] >= 1 and status_doc["leader"]["alive"] is True
        attempt = json.loads((mp / "jobs" / sleeper_id / "attempts" / "1.json").read_bytes())
        assert attempt["host"] == socket.gethostname() and attempt["status"] == "running"

        _wait_for("flaky retrying", read, lambda r: _state(r, "flaky") == "retrying", 60)
        run = _wait_for("doomed failed", read, lambda r: _state(r, "doomed") == "failed", 60)
        (doomed_id,) = [j.job_id for j in run.jobs.values() if j.name == "doomed"]
        failed_link = mp / "by-state" / "failed" / doomed_id
        eventually(lambda: failed_link.exists())
        assert b"doomed always fails" in (failed_link / "log").read_bytes()
        assert sorted(os.listdir(failed_link / "attempts")) == ["1.json", "2.json"]
        run = _wait_for("flaky done", read, lambda r: _state(r, "flaky") is None, 60)
        assert _state(run, "sleeper") == "running"

        (gate / "open").touch()
        opened = time.monotonic()
        _wait_for("sleeper ended", read, lambda r: _state(r, "sleeper") != "running", 30)
        left_running = time.monotonic() - opened
        out, _ = leader.communicate(timeout=120)
        # After the leader: the trace and the graph, as files of the mount.
        trace = (mp / "trace.tsv").read_text().splitlines()
        dot_through_mount = (mp / "graph.dot").read_bytes()
        eventually(
            lambda: json.loads((mp / "status.json").read_bytes())["leader"]["alive"] is False
        )
    finally:
        if leader.poll() is None:
            leader.kill()
            leader.wait()
        if mount is not None:
            mount.close()
    assert leader.returncode != 0, out  # doomed failed the workflow
    # The goal is 2 s; a loaded machine gets some slack.
    assert left_running < 5, f"the sleeper left 'running' {left_running:.1f} s after its end"

    run = read_run(open_store(store_locator))
    assert run.leader.alive is False
    assert not run.finished
    assert run.counts()["failed"] == 1 and run.counts()["running"] == 0
    assert _state(run, "root") == "waiting"  # ran; its failed child keeps it
    by_name: dict[str, list[str]] = {}
    for a in run.attempts:
        name = run.names.get(a.job_id) or a.job_id.rsplit("-", 1)[0]
        by_name.setdefault(name, []).append(f"{a.status}:{a.exit}")
    assert by_name["flaky"] == ["failed:1", "completed:0"]
    assert by_name["doomed"] == ["failed:1", "failed:1"]
    assert by_name["sleeper"] == ["completed:0"]
    for a in run.attempts:
        assert a.host == socket.gethostname() and a.start_ns and a.complete_ns and a.submit_ns
        assert a.submit_ns <= a.start_ns + layout_slack() <= a.complete_ns + layout_slack()

    rows = [line.split("\t") for line in run.trace_tsv().decode().splitlines()]
    assert tuple(rows[0]) == TRACE_COLUMNS
    assert all(len(r) == len(TRACE_COLUMNS) for r in rows)
    assert len(rows) - 1 == len(run.attempts) >= 6

    # One write per attempt from the workers; the leader's at most about one a second.
    backend = run and open_store(store_locator).backend
    attempt_objects = list(backend.list(layout.LEDGER_ATTEMPTS))
    assert len(attempt_objects) == sum(1 for a in run.attempts if a.start_ns is not None)

    status = json.loads(
        subprocess.run(
            [JOBSTORE, "status", "--json", store_locator],
            env=_env(),
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
    )
    assert status["counts"] == run.counts()
    assert status["workflow_id"] == run.workflow_id and status["leader"]["alive"] is False
    human = subprocess.run(
        [JOBSTORE, "status", store_locator], env=_env(), capture_output=True, text=True, timeout=60
    )
    assert human.returncode == 0 and "failed:" in human.stdout and "doomed" in human.stdout

    assert trace[0].split("\t") == list(TRACE_COLUMNS) and len(trace) - 1 == len(run.attempts)
    assert dot_through_mount == run.graph_dot()

    dot = shutil.which("dot")
    assert dot is not None, "Graphviz's dot is installed by scripts/setup"
    svg = subprocess.run(
        [dot, "-Tsvg"], input=run.graph_dot(), capture_output=True, check=True, timeout=60
    )
    assert b"<svg" in svg.stdout and b"doomed" in svg.stdout


def layout_slack() -> int:
    """Times come from the tailer's polls and two clocks: allow half a second between them."""
    return S // 2


def _summary(has_body: bool) -> JobSummary:
    return JobSummary("j", has_body, 2, (), (), None)


@pytest.mark.parametrize(
    ("leader_alive", "job", "status"),
    [
        # The leader lives: it reports the end within about a second; until then, running.
        (True, _summary(has_body=True), "running"),
        # The leader is dead and the worker gone: the job's record tells how it ended.
        (False, _summary(has_body=True), "failed"),
        (False, _summary(has_body=False), "completed"),
        (False, None, "completed"),
    ],
)
def test_an_attempt_whose_worker_is_gone(
    leader_alive: bool, job: JobSummary | None, status: str
) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid of this host that no longer runs
    start = AttemptStart("j", time.time_ns() - S, dead.pid, "", socket.gethostname())
    jobs = {} if job is None else {"j": job}
    leader = Leader(socket.gethostname(), 1, leader_alive, 0)
    run = build_run(None, leader, False, False, jobs, [start], [])
    assert [a.status for a in run.attempts] == [status]


def test_status_watch_refreshes_until_interrupted(local_locator: str, toil_config: object) -> None:
    """``jobstore status --watch`` redraws its screen until Ctrl-C, which ends it quietly."""
    store = JobStore(local_locator)
    store.initialize(toil_config)  # type: ignore[arg-type]
    watch = subprocess.Popen(
        [JOBSTORE, "status", "--watch", "0", local_locator],  # no pause: Ctrl-C lands anywhere
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert watch.stdout is not None
        screens = b""
        deadline = time.monotonic() + 60
        while screens.count(b"\x1b[2J") < 3:  # several screens drawn
            assert time.monotonic() < deadline and watch.poll() is None, screens[-2000:]
            screens += os.read(watch.stdout.fileno(), 65536)
        watch.send_signal(signal.SIGINT)
        _, err = watch.communicate(timeout=30)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    assert watch.returncode == 0 and b"Traceback" not in err, err
    assert b"jobs      running 0" in screens
    store.destroy()
