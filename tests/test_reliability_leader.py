"""One initializer wins, one leader runs: races between real processes and real Toil leaders.

* ``initialize``: rounds of four processes (forked by the fork server, each with
  its own ``JobStore``) released together on one fresh locator. Exactly one
  may win each round; every other gets Toil's ``JobStoreExistsException``, and
  the stored config is the winner's. CI runs 100 rounds per backend;
  ``scripts/reliability`` 500.
* Leaders: two Toil leaders started together on a fresh locator; ``--restart``
  and ``toil clean`` beside a live leader (refused), ``toil status`` beside it
  (works); ``--restart`` after a SIGKILL (takes over at once, a zombie too);
  claims from another machine, with a stale or a fresh heartbeat; a real
  leader's heartbeat renewed, released at exit, expired after a SIGKILL.

Every wait is bounded; Toil runs are the reliability workflow, whose last job
waits at a gate the test opens.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from toil.common import Config
from toil.jobStores.abstractJobStore import JobStoreExistsException

from jobstore import JobStore, layout, leader
from tests.reliability_lib import (
    bound,
    forkserver,
    kill_tree,
    record,
    run_workflow,
    toil_env,
    workflow_command,
    workflow_result,
)
from tests.workflows import reliability as reliability_workflow

RACERS = 4
ROUNDS = {"local": bound(100, 500), "s3": bound(100, 500)}
#: How long a refused second leader may take, Toil's own start-up included.
REFUSAL_SECONDS = 10.0


def _env() -> dict[str, str]:
    keys = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    return {k: os.environ[k] for k in keys if k in os.environ}


def racer_main(n: int, locators: list[str], env: dict[str, str], barrier: Any, out: Any) -> None:
    """One racing process: for each locator, wait for the others, then initialize."""
    os.environ.update(env)
    first: Any = None
    for round_no, locator in enumerate(locators):
        store = JobStore(locator)
        _share_connection(store, first)
        first = first or store.backend
        if locator.startswith("s3:"):
            store.backend.client  # noqa: B018 - connect before the start, not during the race
        config = Config()
        barrier.wait(60)
        try:
            store.initialize(config)
            out.put((round_no, n, "won", config.workflowID, os.getpid()))
        except JobStoreExistsException as e:
            out.put((round_no, n, "lost", str(e), os.getpid()))
        except BaseException:
            out.put((round_no, n, "error", traceback.format_exc(), os.getpid()))


def _share_connection(store: JobStore, other: Any) -> None:
    """Let ``store`` use the S3 client of ``other``: a new client costs more than a round."""
    if other is not None and hasattr(other, "_connected"):
        backend: Any = store.backend
        backend._connected = other._connected


def _race(main: Callable[..., None], locators: list[str]) -> list[Any]:
    """Run ``main`` in :data:`RACERS` processes, one round per locator, all starting each
    round together; every process's result of every round, none of them an error."""
    ctx = forkserver()
    barrier = ctx.Barrier(RACERS)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=main, args=(n, locators, _env(), barrier, out)) for n in range(RACERS)
    ]
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=120) for _ in range(len(locators) * RACERS)]
        for p in procs:
            p.join(60)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    errors = [r for r in results if r[2] == "error"]
    assert not errors, errors[0][3]
    return results


def test_exactly_one_initializer_wins(store_locator: str) -> None:
    backend = store_locator.split(":", 1)[0]
    rounds = ROUNDS[backend]
    locators = [f"{store_locator}-{i}" for i in range(rounds)]
    began = time.monotonic()
    results = _race(racer_main, locators)
    seconds = time.monotonic() - began
    several = 0
    first: Any = None
    for round_no, locator in enumerate(locators):
        mine = [r for r in results if r[0] == round_no]
        winners = [r for r in mine if r[2] == "won"]
        if len(winners) != 1:
            several += 1
            continue
        _, _, _, workflow_id, pid = winners[0]
        for loser in (r for r in mine if r[2] == "lost"):
            # Toil's own wording, with the locator once (not 'local:local:...').
            assert loser[3].startswith(f"The job store '{locator}' already exists."), loser[3]
        store = JobStore(locator)
        _share_connection(store, first)
        first = first or store.backend
        config = pickle.loads(store.backend.get_bytes(layout.CONFIG))
        assert config.workflowID == workflow_id, f"round {round_no}: config of a loser"
        generation, holder = leader.current(store.backend)
        assert generation == 1 and holder is not None and holder.pid == pid
    assert several == 0, f"{several} of {rounds} rounds had no or several winners"
    record(
        "leader",
        f"initialize:{backend}",
        backend=backend,
        rounds=rounds,
        racers=RACERS,
        winners=rounds,
        seconds=round(seconds, 1),
        bytes_lost=0,
    )


# ------------------------------------------------------------ Toil leaders


class Leader:
    """A Toil leader of ``tests/workflows/reliability.py``, its last job held at a closed gate."""

    def __init__(self, locator: str, workdir: Path, *extra: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.locator = locator
        self.workdir = workdir
        self.log = workdir / "leader.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                workflow_command(locator, workdir, *extra),
                cwd=workdir,
                env=toil_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_running(self, timeout: float = 90) -> None:
        """Until the leader has announced itself and registered its root job."""
        backend = JobStore(self.locator).backend
        deadline = time.monotonic() + timeout
        while not (
            backend.exists(layout.shared_key("rootJobStoreID"))
            and _read(backend, layout.shared_key("pid.log")) == str(self.proc.pid).encode()
        ):
            assert self.proc.poll() is None, self.output()
            assert time.monotonic() < deadline, "the leader never started its workflow"
            time.sleep(0.1)

    def finish(self, timeout: float = 180) -> object:
        """Open the gate and wait for the workflow's result."""
        (self.workdir / "gate").mkdir(exist_ok=True)
        (self.workdir / "gate" / "open").touch()
        try:
            self.proc.wait(timeout)
        finally:
            self.kill()
        assert self.proc.returncode == 0, self.output()[-5000:]
        return workflow_result(
            subprocess.CompletedProcess(self.proc.args, 0, self.output(), self.output())
        )

    def kill(self) -> None:
        if self.proc.poll() is None:
            kill_tree(self.proc.pid)
            self.proc.wait(10)


def _read(backend: Any, key: str) -> bytes | None:
    try:
        data: bytes = backend.get_bytes(key)
    except KeyError:
        return None
    return data


def _toil(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    toil = os.path.join(os.path.dirname(sys.executable), "toil")
    return subprocess.run(
        [toil, *args], cwd=cwd, env=toil_env(), capture_output=True, text=True, timeout=timeout
    )


def _refusal_line(output: str) -> str:
    """The one line that says why a leader or a clean was refused."""
    lines = [line for line in output.splitlines() if "LeaderRunning:" in line]
    assert lines, output[-3000:]
    return lines[-1]


def _names_holder(line: str, pid: int) -> None:
    assert f"pid {pid} on host {socket.gethostname()} since 20" in line, line
    assert "toil kill" in line, line


def test_one_leader_at_a_time(store_locator: str, tmp_path: Path) -> None:
    """Two Toil leaders started together on a fresh locator: one runs, the other stops.
    Beside the live one, --restart and toil clean are refused and toil status works; the
    live leader finishes unharmed, and toil clean after it removes the store."""
    leaders = [Leader(store_locator, tmp_path / name, "--clean=never") for name in ("a", "b")]
    try:
        deadline = time.monotonic() + 90
        while all(x.proc.poll() is None for x in leaders):
            assert time.monotonic() < deadline, "neither leader stopped"
            time.sleep(0.1)
        loser = next(x for x in leaders if x.proc.poll() is not None)
        first = next(x for x in leaders if x is not loser)
        assert loser.proc.returncode != 0
        assert f"JobStoreExistsException: The job store '{store_locator}' already exists" in (
            loser.output()
        )
        first.wait_running()

        began = time.monotonic()
        second = run_workflow(store_locator, tmp_path, "--restart", timeout=60)
        took = time.monotonic() - began
        assert second.returncode != 0
        _names_holder(_refusal_line(second.stdout + second.stderr), first.proc.pid)
        assert took < REFUSAL_SECONDS, f"refused after {took:.1f} s"

        status = _toil("status", store_locator, cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        assert "jobs ready to run" in status.stdout, status.stdout

        clean = _toil("clean", store_locator, cwd=tmp_path)
        assert clean.returncode != 0
        line = _refusal_line(clean.stderr)
        assert f"refusing to destroy {store_locator}" in line
        _names_holder(line, first.proc.pid)

        assert first.finish() == reliability_workflow.expected()
    finally:
        for x in leaders:
            x.kill()
    record("leader", f"refused:{store_locator.split(':')[0]}", seconds=round(took, 1))
    clean = _toil("clean", store_locator, cwd=tmp_path)
    assert clean.returncode == 0, clean.stderr
    assert not JobStore(store_locator).backend.exists(layout.CONFIG)


def test_restart_takes_over_from_a_killed_leader(store_locator: str, tmp_path: Path) -> None:
    """After a SIGKILL the next --restart on the same host leads at once, no clean-up needed."""
    first = Leader(store_locator, tmp_path)
    try:
        first.wait_running()
    finally:
        first.kill()
    (tmp_path / "gate" / "open").touch()
    proc = run_workflow(store_locator, tmp_path, "--restart")
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert workflow_result(proc) == reliability_workflow.expected()
    assert f"from its dead leader (pid {first.proc.pid} on host" in proc.stderr


# ------------------------------------------------------ other machines


def _foreign_claim(store: JobStore, beat_age: float) -> leader.Holder:
    """A claim as a leader on another machine makes it, its heartbeat ``beat_age`` s old."""
    generation, _ = leader.current(store.backend)
    now = time.time()
    holder = leader.Holder(
        generation + 1, "elsewhere.example", "another-boot/pid:[1]", 4242, 1.0, now - 3600
    )
    assert store.backend.put_if_absent(
        layout.leader_claim_key(holder.generation), holder.to_bytes()
    )
    beat = {"time": now - beat_age, "released": False}
    store.backend.put_bytes(layout.leader_beat_key(holder.generation), json.dumps(beat).encode())
    return holder


def _initialized_by_a_dead_process(locator: str) -> None:
    """A store whose initializer (its first leader) has exited, as after a failed run."""
    ctx = forkserver()
    p = ctx.Process(target=_initialize, args=(locator, _env()))
    p.start()
    p.join(60)
    assert p.exitcode == 0


def _initialize(locator: str, env: dict[str, str]) -> None:
    os.environ.update(env)
    JobStore(locator).initialize(Config())


def test_claim_of_another_machine(store_locator: str) -> None:
    """Another machine's leader is judged by its heartbeat: fresh refuses, stale is taken over."""
    _initialized_by_a_dead_process(store_locator)
    store = JobStore(store_locator)
    store.resume()
    fresh = _foreign_claim(store, beat_age=5)
    with pytest.raises(leader.LeaderRunning) as refused:
        store.write_config()  # what --restart does first
    message = str(refused.value)
    assert "\n" not in message
    assert "pid 4242 on host elsewhere.example since 20" in message
    assert f"toil kill {store_locator}" in message
    with pytest.raises(leader.LeaderRunning, match="refusing to destroy"):
        JobStore(store_locator).destroy()
    assert leader.current(store.backend) == (fresh.generation, fresh)  # nothing changed

    stale = _foreign_claim(store, beat_age=leader.EXPIRY + 1)
    store.write_config()
    generation, holder = leader.current(store.backend)
    assert generation == stale.generation + 1
    assert holder is not None and holder.pid == os.getpid()
    store.write_leader_pid()
    JobStore(store_locator).destroy()  # the holder's own process may


def test_heartbeat_keeps_a_leader_alive_for_other_machines(
    store_locator: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live leader renews its heartbeat; seen from elsewhere it leads until the beats stop,
    and releases its claim when it exits."""
    code = (
        "import sys; from jobstore import JobStore, leader; from toil.common import Config\n"
        "leader.RENEW = 0.3\n"
        f"s = JobStore({store_locator!r}); s.initialize(Config()); s.write_leader_pid()\n"
        "print('leading', flush=True); sys.stdin.readline()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        env=toil_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "leading\n"
        store = JobStore(store_locator)
        store.resume()
        _, holder = leader.current(store.backend)
        assert holder is not None and holder.pid == child.pid
        beats = [_beat_time(store, holder)]
        time.sleep(1.0)
        beats.append(_beat_time(store, holder))
        assert beats[1] > beats[0], "the heartbeat was not renewed"

        # Seen from another machine (another node ID), with a short expiry.
        monkeypatch.setattr(leader, "_node", lambda: "another-boot/pid:[1]")
        monkeypatch.setattr(leader, "EXPIRY", 1.5)
        assert leader.alive(store.backend, holder)
        with pytest.raises(leader.LeaderRunning, match=f"pid {child.pid} on host"):
            store.write_config()
        assert child.stdin is not None
        child.stdin.write("\n")  # exit normally: atexit marks the claim released
        child.stdin.flush()
        assert child.wait(30) == 0
        assert not leader.alive(store.backend, holder)
        assert json.loads(store.backend.get_bytes(layout.leader_beat_key(holder.generation)))[
            "released"
        ]
        store.write_config()  # taken over at once, no expiry to wait for
        assert leader.current(store.backend)[0] == holder.generation + 1
    finally:
        child.kill()
        child.wait()


def test_killed_leader_on_another_machine_expires(
    store_locator: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGKILLed leader seen from another machine: alive while its heartbeat is fresh,
    free once it is older than the expiry."""
    code = (
        "from jobstore import JobStore, leader; from toil.common import Config; import time\n"
        "leader.RENEW = 0.3\n"
        f"s = JobStore({store_locator!r}); s.initialize(Config()); s.write_leader_pid()\n"
        "print('leading', flush=True); time.sleep(120)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], env=toil_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "leading\n"
        store = JobStore(store_locator)
        store.resume()
        _, holder = leader.current(store.backend)
        assert holder is not None
        monkeypatch.setattr(leader, "_node", lambda: "another-boot/pid:[1]")
        monkeypatch.setattr(leader, "EXPIRY", 2.0)
        time.sleep(2.5)  # longer than the expiry: only the renewals keep it alive
        assert leader.alive(store.backend, holder)
    finally:
        child.kill()
        child.wait()
    assert leader.alive(store.backend, holder)  # the last beat is still fresh
    deadline = time.monotonic() + 10
    while leader.alive(store.backend, holder):
        assert time.monotonic() < deadline, "a dead leader's heartbeat never expired"
        time.sleep(0.2)
    store.write_config()
    assert leader.current(store.backend)[0] == holder.generation + 1


def _beat_time(store: JobStore, holder: leader.Holder) -> float:
    beat = json.loads(store.backend.get_bytes(layout.leader_beat_key(holder.generation)))
    return float(beat["time"])


def test_unreaped_killed_leader_is_dead(store_locator: str) -> None:
    """A SIGKILLed leader whose parent has not reaped it yet (a zombie) leads no more."""
    code = (
        "from jobstore import JobStore; from toil.common import Config; import time\n"
        f"s = JobStore({store_locator!r}); s.initialize(Config()); s.write_leader_pid()\n"
        "print('leading', flush=True); time.sleep(120)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], env=toil_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "leading\n"
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the killed child never became a zombie"
            time.sleep(0.05)
        store = JobStore(store_locator)
        store.resume()
        store.write_config()  # not refused: the zombie runs no more
        _, holder = leader.current(store.backend)
        assert holder is not None and holder.pid == os.getpid()
    finally:
        child.kill()
        child.wait()


TAKEOVER_ROUNDS = bound(25, 200)


def takeover_main(n: int, locators: list[str], env: dict[str, str], barrier: Any, out: Any) -> None:
    """One racing process: for each store (its leader dead), restart it as Toil does."""
    os.environ.update(env)
    first: Any = None
    for round_no, locator in enumerate(locators):
        store = JobStore(locator)
        _share_connection(store, first)
        first = first or store.backend
        store.resume()
        barrier.wait(60)
        try:
            store.write_config()  # the first thing --restart writes
            out.put((round_no, n, "won", "", os.getpid()))
        except leader.LeaderRunning as e:
            out.put((round_no, n, "lost", str(e), os.getpid()))
        except BaseException:
            out.put((round_no, n, "error", traceback.format_exc(), os.getpid()))
    barrier.wait(60)  # a winner that exited would be a dead leader, rightly taken over


def test_racing_takeovers_one_wins(store_locator: str) -> None:
    """Several restarts find the leader dead at once: exactly one takes over, the rest are
    refused naming it."""
    locators = [f"{store_locator}-{i}" for i in range(TAKEOVER_ROUNDS)]
    for locator in locators:
        store = JobStore(locator)
        store.initialize(Config())
        _foreign_claim(store, beat_age=leader.EXPIRY + 1)  # its last leader: dead
    results = _race(takeover_main, locators)
    for round_no, locator in enumerate(locators):
        mine = [r for r in results if r[0] == round_no]
        winners = [r for r in mine if r[2] == "won"]
        assert len(winners) == 1, f"round {round_no}: {len(winners)} leaders took over: {mine}"
        pid = winners[0][4]
        for loser in (r for r in mine if r[2] == "lost"):
            assert f"is led by pid {pid} on host" in loser[3], loser[3]
        generation, holder = leader.current(JobStore(locator).backend)
        assert generation == 3 and holder is not None and holder.pid == pid
    record(
        "leader",
        f"takeover:{store_locator.split(':')[0]}",
        rounds=TAKEOVER_ROUNDS,
        racers=RACERS,
        winners=TAKEOVER_ROUNDS,
    )
