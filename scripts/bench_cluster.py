"""Toil on Slurm against single_machine: one workflow's wall time, and S3 requests per job.

``tests/workflows/cluster.py`` (``--width`` children side by side, one of which fails
once and is retried, and a follow-on that reads every child's file back) runs on
each backend with ``--batchSystem single_machine`` and with ``--batchSystem
slurm`` on the cluster of ``scripts/cluster`` (brought up if it is down, and then
taken down again). ``local:`` stores live in the cluster's shared directory;
``s3:`` stores on one moto server, reached through a recording proxy
(``tests/faultproxy.py``, no faults), so that every HTTP request of the leader
and of the workers is counted. Times are wall-clock medians over the repeats;
the two batch systems take turns, the order alternating. ``--n`` is not used
here. Needs root (the cluster does).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path

from benchutil import Table, arg_parser, fmt_ratio, machine_note, save_report, scratch_dir

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jobstore import layout  # noqa: E402
from tests.faultproxy import FaultProxy  # noqa: E402
from tests.s3server import FAKE_CREDENTIALS, moto_server  # noqa: E402

CLUSTER = ROOT / "scripts" / "cluster"
WORKFLOW = ROOT / "tests" / "workflows" / "cluster.py"
BATCH_SYSTEMS = ("single_machine", "slurm")
BACKENDS = ("local", "s3")
BUCKET = "bench-cluster"


def venv_env() -> dict[str, str]:
    """Our environment with this Python's scripts first (``_toil_worker`` on every node)."""
    bin_dir = os.path.dirname(sys.executable)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    env.pop("TMPDIR", None)  # Slurm's job logs go under the leader's; every node has /tmp
    return env


def cluster(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLUSTER), command], env=venv_env(), capture_output=True, text=True)


def log_reading(method: str, path: str, prefix: str) -> bool:
    """Whether a request is the leader reading log messages: listing ``logs/``, fetching a
    message, or reading or writing the cursor (workers' PUTs of messages are not). ``prefix``
    is the store's key prefix: in the path of an object request, in the query of a listing."""
    url = urllib.parse.unquote(path)
    logs, cursor = f"{prefix}/{layout.LOGS}", f"{prefix}/{layout.LOG_CURSOR}"
    if cursor in url:
        return True
    return method == "GET" and logs in url


@dataclass
class Run:
    """One workflow run: its wall time, Toil's job count, and the requests it sent."""

    seconds: float
    jobs: int
    requests: int
    log_requests: int


def run_workflow(
    backend: str,
    batch_system: str,
    width: int,
    shared: Path,
    scratch: Path,
    proxy: FaultProxy,
    env: dict[str, str],
) -> Run:
    name = uuid.uuid4().hex[:12]
    locator = f"local:{shared / 'bench' / name}" if backend == "local" else f"s3:{BUCKET}/{name}"
    leader_dir = scratch / name
    leader_dir.mkdir()
    before = len(proxy.seen)
    start = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            str(WORKFLOW),
            locator,
            f"--leader-dir={leader_dir}",
            f"--width={width}",
            "--sleep=1",
            f"--batchSystem={batch_system}",
            "--retryCount=1",
            "--logLevel=INFO",
        ],
        cwd=leader_dir,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{backend} on {batch_system} failed:\n{proc.stderr[-4000:]}")
    seen = proxy.seen[before:]
    logs = sum(1 for method, path, _ in seen if log_reading(method, path, name))
    return Run(seconds, proc.stderr.count("Issued job"), len(seen), logs)


def main(argv: list[str] | None = None) -> int:
    parser = arg_parser(__doc__.split("\n", 1)[0])
    parser.add_argument("--width", type=int, default=4, help="children side by side (default 4)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_cluster: skipped, scripts/cluster needs root")
        return 0

    was_up = cluster("status").returncode == 0
    up = cluster("up")
    if up.returncode != 0:
        print(f"bench_cluster: scripts/cluster up failed:\n{up.stderr}", file=sys.stderr)
        return 1
    conf = up.stdout.strip().splitlines()[-1].removeprefix("export SLURM_CONF=")
    shared = Path(conf).parent.parent / "shared"
    lines = [f"bench_cluster: Toil on Slurm vs single_machine  {machine_note()}"]
    runs: dict[tuple[str, str], list[Run]] = {}
    try:
        with (
            scratch_dir("bench-cluster-", args.tmp) as scratch,
            moto_server(str(scratch / "moto.log")) as moto,
            FaultProxy(moto, record=True) as proxy,
        ):
            env = {**venv_env(), **FAKE_CREDENTIALS, "AWS_ENDPOINT_URL": proxy.url}
            env["SLURM_CONF"] = conf
            for r in range(args.repeat):
                for backend in BACKENDS:
                    order = BATCH_SYSTEMS if r % 2 == 0 else BATCH_SYSTEMS[::-1]
                    for batch_system in order:
                        run = run_workflow(
                            backend, batch_system, args.width, shared, scratch, proxy, env
                        )
                        runs.setdefault((backend, batch_system), []).append(run)
    finally:
        if not was_up:
            cluster("down")

    table = Table(
        f"tests/workflows/cluster.py, median of {args.repeat} runs; requests per Toil job on s3:"
        " all / without the leader's log reading",
        ["backend", "children", "jobs", *BATCH_SYSTEMS, "slurm/single", *BATCH_SYSTEMS],
    )
    for backend in BACKENDS:
        medians = []
        per_job = []
        for batch_system in BATCH_SYSTEMS:
            done = runs[(backend, batch_system)]
            medians.append(statistics.median(r.seconds for r in done))
            all_requests = statistics.median(r.requests / r.jobs for r in done)
            no_logs = statistics.median((r.requests - r.log_requests) / r.jobs for r in done)
            per_job.append(f"{all_requests:.1f} / {no_logs:.1f}" if backend == "s3" else "-")
        jobs = statistics.median(r.jobs for r in runs[(backend, "slurm")])
        times = [f"{m:.1f} s" for m in medians]
        ratio = fmt_ratio(medians[1] / medians[0])
        table.row(backend, args.width, f"{jobs:g}", *times, ratio, *per_job)
    lines.append(table.render())
    text = "\n\n".join(lines)
    print(text)
    print(f"\n(report saved to {save_report('bench_cluster', text)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
