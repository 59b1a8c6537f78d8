"""Toil on a real Slurm: ``--batchSystem slurm`` with our stores, workers on other "hosts".

``scripts/cluster up`` starts Debian's Slurm on this machine (installing it when
missing): munged, slurmctld and two slurmd nodes, n1 and n2, each in mount and
UTS namespaces of its own, with a private /tmp and /run/lock. The test session
brings one up in a directory of its own under /var/tmp and takes it down at the
end. The nodes see the project and its environment but not the tests'
temporary directories (pytest's, under /tmp): on ``s3:`` the workers share
nothing with the leader but the store; on ``local:`` the store lives in a
directory every node sees, as on a cluster's shared file system.

Every job reports where it ran (host name, Slurm's node and job ID) and whether
it could see the leader's directory, so a run that quietly fell back to the
leader's machine fails. The workflows are small (a few jobs, seconds of
sleep): every Toil job costs a Slurm submission and a worker start-up.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from toil.jobStores.abstractJobStore import NoSuchJobStoreException

from jobstore import JobStore
from tests.mountutil import Mount

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "scripts" / "cluster"
WORKFLOWS = Path(__file__).parent / "workflows"
VENV_BIN = os.path.dirname(sys.executable)
NODES = {"n1", "n2"}
WIDTH = 4
RUN_TIMEOUT = 150.0
#: Toil's leader reads the kill flag every 5 s; then it cancels its Slurm jobs.
KILL_TIMEOUT = 60.0


def _missing() -> str | None:
    """What this machine lacks for a cluster, or None."""
    if os.geteuid() != 0:
        return "needs root: the nodes are mount namespaces and slurmd runs as root"
    for tool in ("unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"no {tool} on this machine"
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "no Slurm (slurmctld) and no apt-get to install Debian's slurm-wlm"
    probe = subprocess.run(
        ["unshare", "-m", "-u", "--propagation", "private", "true"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"cannot make mount namespaces here: {probe.stderr.strip()}"
    return None


MISSING = _missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=str(MISSING))


@dataclass
class Cluster:
    dir: Path
    conf: str
    #: A directory every node sees at the same path (for local: stores).
    shared: Path

    def script(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``scripts/cluster ARGS`` for this cluster, with our environment's Python first."""
        proc = subprocess.run(
            [str(CLUSTER), *args],
            env={**_path_env(), "JOBSTORE_CLUSTER_DIR": str(self.dir)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check and proc.returncode != 0:
            pytest.fail(f"scripts/cluster {' '.join(args)}: {proc.returncode}\n{proc.stderr}")
        return proc

    def env(self) -> dict[str, str]:
        """A leader's environment: the venv on PATH, the cluster's SLURM_CONF, moto's endpoint
        and credentials when the s3 fixture set them. No TMPDIR: Toil puts the Slurm jobs'
        output files under the leader's temporary directory, which must exist on the nodes."""
        env = {**_path_env(), "SLURM_CONF": self.conf}
        env.pop("TMPDIR", None)
        return env

    def slurm(self, *args: str) -> str:
        return subprocess.run(
            list(args), env=self.env(), capture_output=True, text=True, check=True, timeout=30
        ).stdout

    def queue(self) -> list[tuple[str, str, str]]:
        """(job ID, name, state) of every job Slurm has queued or running."""
        jobs = []
        for line in self.slurm("squeue", "-h", "-o", "%i %j %T").splitlines():
            if line.strip():
                job_id, name, state = line.split()
                jobs.append((job_id, name, state))
        return jobs

    def jobs(self) -> dict[str, dict[str, str]]:
        """Every job slurmctld still knows (finished ones for MinJobAge), by job ID."""
        jobs = {}
        for line in self.slurm("scontrol", "show", "job", "-o").splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            if "JobId" in fields:
                jobs[fields["JobId"]] = fields
        return jobs

    def node_processes(self) -> dict[int, tuple[str, list[str]]]:
        """Every process in the nodes' namespaces (as ``scripts/cluster`` recorded them: the
        namespace ids and the name of the node's /tmp): pid -> (node, argv)."""
        found = {}
        for node in sorted(NODES):
            mnt, uts, token = (self.dir / "run" / f"{node}.ns").read_text().split()
            for proc in Path("/proc").iterdir():
                try:
                    if (
                        proc.name.isdigit()
                        and os.readlink(proc / "ns" / "mnt") == mnt
                        and os.readlink(proc / "ns" / "uts") == uts
                        and f" - tmpfs {token} " in (proc / "mountinfo").read_text()
                    ):
                        argv = (proc / "cmdline").read_bytes().decode().split("\0")[:-1]
                        found[int(proc.name)] = (node, argv)
                except OSError:
                    continue
        return found

    def workers(self) -> list[str]:
        """What runs on the nodes besides slurmd itself."""
        return [
            f"{node}: {' '.join(argv)}"
            for node, argv in self.node_processes().values()
            if argv[:1] != ["slurmd"]
        ]


def _path_env() -> dict[str, str]:
    return {**os.environ, "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", "")}


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """A cluster of this session's own, so that no one else's is touched; down at the end."""
    directory = Path(tempfile.mkdtemp(prefix="jobstore-cluster-", dir="/var/tmp"))
    c = Cluster(directory, "", directory / "shared")
    try:
        up = c.script("up")
        last = up.stdout.strip().splitlines()[-1]
        assert last.startswith("export SLURM_CONF="), up.stdout
        c.conf = last.removeprefix("export SLURM_CONF=")
        yield c
    finally:
        c.script("down", check=False)
        shutil.rmtree(directory, ignore_errors=True)


def wait_for(what: str, predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.5)


class Leader:
    """A Toil leader process (its own session, so that it and its children can be killed)."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.log = cwd / f"leader-{uuid.uuid4().hex[:6]}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float = RUN_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the leader ran over {timeout} s:\n{self.output()[-5000:]}")

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def succeed(self) -> dict[str, object]:
        rc = self.wait()
        out = self.output()
        assert rc == 0, f"the leader exited {rc}:\n{out[-8000:]}"
        result = [line for line in out.splitlines() if line.startswith("RESULT ")]
        assert result, out[-5000:]
        return dict(json.loads(result[-1].removeprefix("RESULT ")))


def fan_out(
    cluster: Cluster, locator: str, leader_dir: Path, *extra: str, sleep: float = 1.0
) -> Leader:
    """``workflows/cluster.py`` on Slurm, the leader in ``leader_dir`` (which no node sees)."""
    args = [
        sys.executable,
        str(WORKFLOWS / "cluster.py"),
        locator,
        f"--leader-dir={leader_dir}",
        f"--width={WIDTH}",
        f"--sleep={sleep}",
        "--batchSystem=slurm",
        "--retryCount=1",
        "--logLevel=INFO",
        *extra,
    ]
    return Leader(args, leader_dir, cluster.env())


def expected_bytes() -> int:
    """What the workflow's children write, by the workflow's own definition."""
    spec = importlib.util.spec_from_file_location("cluster_workflow", WORKFLOWS / "cluster.py")
    assert spec and spec.loader
    workflow = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(workflow)
    return sum(len(workflow.content(i)) for i in range(WIDTH))


def check_ran_on_nodes(result: dict[str, object], cluster: Cluster) -> None:
    """Every job ran under Slurm on n1 or n2, side-by-side children on both, and none saw the
    leader's directory; Slurm agrees on where each job ran."""
    parts = result["parts"]
    assert isinstance(parts, list) and len(parts) == WIDTH
    gather = result["gather"]
    assert isinstance(gather, dict)
    known = cluster.jobs()
    for where in [*parts, gather]:
        assert where["host"] in NODES, where
        assert where["node"] == where["host"], where
        assert where["sees_leader_dir"] is False, where
        job = known[where["slurm_job"]]
        assert job["NodeList"] == where["host"], job
        assert job["JobName"].startswith("toil_job_"), job
    assert {p["host"] for p in parts} == NODES, parts
    assert result["bytes"] == expected_bytes()


def toil_jobs(cluster: Cluster) -> list[tuple[str, str, str]]:
    return [job for job in cluster.queue() if job[1].startswith("toil_job_")]


def running(cluster: Cluster, name: str) -> bool:
    """Whether a job of this name (or Toil's ``toil_job_<n>_<name>``) runs on Slurm."""
    return any(
        (job[1] == name or job[1].endswith(f"_{name}")) and job[2] == "RUNNING"
        for job in cluster.queue()
    )


def first_child_running(cluster: Cluster, leader: Leader) -> None:
    """Wait until a child of the fan-out runs on a node, the leader still running."""
    wait_for(
        "a child running on Slurm",
        lambda: leader.proc.poll() is not None or running(cluster, "produce"),
        RUN_TIMEOUT,
    )
    assert leader.proc.poll() is None, f"the leader exited early:\n{leader.output()[-5000:]}"


def test_fan_out_on_s3_shares_only_the_store(
    cluster: Cluster, s3_locator: str, tmp_path: Path
) -> None:
    """Children and promises, files written and read back on other nodes, a failed job
    retried: on ``s3:``, with workers that cannot see the leader's directory."""
    leader = fan_out(cluster, s3_locator, tmp_path)
    result = leader.succeed()
    check_ran_on_nodes(result, cluster)
    # The failed first attempt's log came back to the leader through the store.
    assert "child 0 fails its first attempt on purpose" in leader.output()
    assert toil_jobs(cluster) == []


def test_restart_after_the_leader_is_killed_on_local(cluster: Cluster, tmp_path: Path) -> None:
    """The leader is SIGKILLed while its jobs run on the nodes; they finish without it,
    writing to the ``local:`` store on the shared directory; ``--restart`` completes the run."""
    locator = f"local:{cluster.shared / uuid.uuid4().hex[:12] / 'store'}"
    first = fan_out(cluster, locator, tmp_path, sleep=6.0)
    first_child_running(cluster, first)
    first.kill()
    # Its Slurm jobs run on, as on any cluster whose leader dies, and finish.
    wait_for("the orphaned jobs to finish", lambda: toil_jobs(cluster) == [], RUN_TIMEOUT)

    result = fan_out(cluster, locator, tmp_path, "--restart").succeed()
    check_ran_on_nodes(result, cluster)
    assert toil_jobs(cluster) == []
    with pytest.raises(NoSuchJobStoreException):  # removed after the successful run
        JobStore(locator).resume()


def test_killflag_through_the_mount_stops_a_slurm_run(cluster: Cluster, tmp_path: Path) -> None:
    """``echo YES > killflag`` in ``jobstore mount`` of a ``local:`` store on the shared
    directory: the leader stops, and no Slurm job or worker process of its run is left."""
    locator = f"local:{cluster.shared / uuid.uuid4().hex[:12] / 'store'}"
    leader = fan_out(cluster, locator, tmp_path, sleep=300.0)
    try:
        first_child_running(cluster, leader)
        mount = Mount(locator, tmp_path / "mnt")
        try:
            # The run view: what runs, on which node, as which Slurm job.
            running_dir = mount / "by-state" / "running"
            wait_for("a job shown running", lambda: bool(os.listdir(running_dir)), 30)
            job = sorted(os.listdir(running_dir))[0]
            attempts = sorted(os.listdir(running_dir / job / "attempts"), key=len)
            attempt = json.loads((running_dir / job / "attempts" / attempts[-1]).read_bytes())
            assert attempt["status"] == "running" and attempt["host"] in NODES, attempt
            slurm = cluster.jobs()[attempt["native_id"]]
            assert slurm["NodeList"] == attempt["host"], (attempt, slurm)
            trace = (mount / "trace.tsv").read_text()
            assert f"\t{attempt['native_id']}\t" in trace
            assert (mount / "killflag").read_text() == "NO\n"
            (mount / "killflag").write_text("YES\n")
            start = time.monotonic()
            rc = leader.wait(KILL_TIMEOUT)
            took = time.monotonic() - start
        finally:
            mount.close()
        assert rc != 0, leader.output()[-3000:]
        assert "Received kill via job store" in leader.output()
        assert took < KILL_TIMEOUT
        assert toil_jobs(cluster) == []
        wait_for("the workers to go", lambda: cluster.workers() == [], 30)
    finally:
        leader.kill()


def test_cwl_runner_on_slurm_with_s3(cluster: Cluster, s3_locator: str, tmp_path: Path) -> None:
    """``toil-cwl-runner --batchSystem slurm`` on ``s3:``: the input is imported on the
    leader, the tool runs on a node that cannot see it, the output comes back."""
    (tmp_path / "in.txt").write_text("hello cwl\n")
    (tmp_path / "job.yml").write_text("text:\n  class: File\n  path: in.txt\n")
    before = set(cluster.jobs())
    leader = Leader(
        [
            os.path.join(VENV_BIN, "toil-cwl-runner"),
            "--jobStore",
            s3_locator,
            "--outdir",
            str(tmp_path / "out"),
            "--batchSystem=slurm",
            "--retryCount=0",
            "--logLevel=INFO",
            str(WORKFLOWS / "wc.cwl"),
            "job.yml",
        ],
        tmp_path,
        cluster.env(),
    )
    assert leader.wait() == 0, leader.output()[-5000:]
    assert (tmp_path / "out" / "count.txt").read_text().strip() == "10"
    new = {k: v for k, v in cluster.jobs().items() if k not in before}
    assert new, "no Slurm job ran"
    for job in new.values():
        assert job["JobState"] == "COMPLETED" and job["NodeList"] in NODES, job


def test_script_up_status_down_are_idempotent_and_leave_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    """``up`` twice, ``status``, ``down`` twice with a job running: every daemon and every
    process on the nodes is gone, and the job too. Runs last: it takes the cluster down."""
    again = cluster.script("up")
    assert again.stdout.strip().splitlines()[-1] == f"export SLURM_CONF={cluster.conf}"
    status = cluster.script("status")
    assert status.stdout.strip().splitlines()[-1] == f"export SLURM_CONF={cluster.conf}"

    cluster.slurm("sbatch", "-J", "sleeper", "-o", "/tmp/sleeper-%j", "--wrap", "sleep 300")
    wait_for("the sleeper to run", lambda: running(cluster, "sleeper"), 30)
    run = cluster.dir / "run"
    pids = [int((run / f).read_text()) for f in ("munged.pid", "slurmctld.pid")]
    pids += [int((run / f"slurmd-{n}.pid").read_text()) for n in sorted(NODES)]
    on_nodes = cluster.node_processes()
    assert ["sleep", "300"] in [argv for _, argv in on_nodes.values()], on_nodes

    cluster.script("down")
    left = [pid for pid in [*pids, *on_nodes] if Path(f"/proc/{pid}").exists()]
    assert left == [], f"left behind: {left}"
    cluster.script("down")
    assert cluster.script("status", check=False).returncode == 1


def test_cluster_in_a_loopback_only_network_namespace(tmp_path: Path) -> None:
    """In a network namespace with nothing but lo (where Slurm 22.05 resolves no address until
    lo gets a second one), a cluster comes up, runs a job on a node and goes down."""
    directory = Path(tempfile.mkdtemp(prefix="jobstore-cluster-netns-", dir="/var/tmp"))
    script = f"""
set -e
eval "$({CLUSTER} up | tail -1)"
sbatch --wait -w n2 -o {directory}/shared/out-%j --wrap 'hostname' >/dev/null
cat {directory}/shared/out-*
{CLUSTER} down
{CLUSTER} down
"""
    try:
        proc = subprocess.run(
            ["unshare", "-n", "bash", "-c", script],
            env={**_path_env(), "JOBSTORE_CLUSTER_DIR": str(directory)},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.strip() == "n2", proc.stdout + proc.stderr
    finally:
        subprocess.run(
            [str(CLUSTER), "down"],
            env={**_path_env(), "JOBSTORE_CLUSTER_DIR": str(directory)},
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(directory, ignore_errors=True)
