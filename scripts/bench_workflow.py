"""Real Toil workflows end to end, on Toil's stores and ours, and the run ledger's cost.

Each run is ``python tests/workflows/bench.py LOCATOR ...`` in a subprocess, as
a user runs a workflow: a Toil leader with the ``single_machine`` batch system
starting a ``_toil_worker`` process per job (or per chain of jobs), Toil's
default job requirements and clean-up (the store is destroyed when the run
succeeds, and that is timed too). The time is the command's wall clock.

Three workflows, scaled by ``--n`` (the sizes the targets name are at 1,000):
``fanout`` (``n`` tiny jobs gathered by a follow-on), ``chain`` (``n / 5``
jobs, each the child of the one before), ``files`` (``n / 5`` jobs each
writing ``--files`` files of ``--file-mib`` MiB and reading them back).

Six stores: Toil's ``file:`` and our ``local:`` in one scratch directory;
Toil's ``aws:`` and our ``s3:`` on one moto server reached through a loopback
proxy that adds ``--delay-ms`` to every request (a thread per connection, so
any number wait at once) and counts them; and ``local:`` and ``s3:`` with
``JOBSTORE_LEDGER=0``, for what the run ledger costs. Within each round every
store runs each workflow once, in an order that reverses every round
(A B ... B A), so drifting load meets all alike. Ratios are paired: one per
round, from runs next to each other, with the median and its 95% interval
(the full range below six rounds).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from argparse import Namespace
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench_s3 import CountingProxy
from benchutil import (
    Results,
    Table,
    arg_parser,
    file_system,
    fmt_ratio,
    fmt_seconds,
    machine_note,
    median_interval,
    save_report,
    scratch_dir,
    spread_subdirectories,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobstore import layout
from tests.s3server import FAKE_CREDENTIALS, moto_server

WORKFLOW = Path(__file__).resolve().parent.parent / "tests" / "workflows" / "bench.py"
SHAPES = ("fanout", "chain", "files")
REGION = "us-west-2"
BUCKET = "jobstore-bench-workflow"
#: The proxy counts requests to ledger objects apart, and the attempts recorded (one PUT each).
LEDGER_MARK = f"^[A-Z]+ /{BUCKET}/[^?]*/(?:{layout.LEDGER_ATTEMPTS}|{layout.LEDGER_EVENTS})"
ATTEMPT_MARK = f"^PUT /{BUCKET}/[^?]*/{layout.LEDGER_ATTEMPTS}"
#: The ledger's budget: this much slower at most, this many extra requests per attempt
#: besides the leader's event batches, and this many of those a second.
LEDGER_SLOWDOWN = 1.05
LEDGER_REQUESTS = 1.0
LEDGER_BATCHES_PER_SECOND = 1.0


@dataclass(frozen=True)
class Store:
    """One of the stores a workflow runs on."""

    name: str
    scheme: str  # file, local, aws or s3
    ledger: bool = True

    @property
    def on_s3(self) -> bool:
        return self.scheme in ("aws", "s3")


FILE = Store("file:", "file")
LOCAL = Store("local:", "local")
LOCAL_OFF = Store("local: no ledger", "local", ledger=False)
AWS = Store("aws:", "aws")
S3 = Store("s3:", "s3")
S3_OFF = Store("s3: no ledger", "s3", ledger=False)
#: The stores each group of ``--pairs`` runs.
GROUPS = {
    "local": (FILE, LOCAL),
    "s3": (AWS, S3),
    "ledger": (LOCAL_OFF, LOCAL, S3, S3_OFF),
}
#: The comparisons: (group, A, B), A's time over B's.
PAIRS = (
    ("local", FILE, LOCAL),
    ("s3", AWS, S3),
    ("ledger", LOCAL, LOCAL_OFF),
    ("ledger", S3, S3_OFF),
)


def shape_jobs(shape: str, n: int) -> int:
    """The jobs a workflow of ``shape`` runs at scale ``n``, its root and gathering job aside."""
    return n if shape == "fanout" else max(1, n // 5)


def total_jobs(shape: str, n: int) -> int:
    """Every job of the run: fan-outs have a root and a follow-on besides their children."""
    return shape_jobs(shape, n) + (0 if shape == "chain" else 2)


@dataclass
class Run:
    """What one run of one workflow on one store took."""

    seconds: float
    requests: int = 0
    ledger_requests: int = 0
    attempts: int = 0


@dataclass
class Runs:
    """Every run of one workflow on one store, one per round."""

    runs: list[Run] = field(default_factory=list)

    @property
    def seconds(self) -> list[float]:
        return [r.seconds for r in self.runs]


class Runner:
    """Starts workflows on fresh stores and times them."""

    def __init__(self, scratch: Path, proxy: CountingProxy | None, args: Namespace) -> None:
        self.scratch = scratch
        self.proxy = proxy
        self.files: int = args.files
        self.file_mib: float = args.file_mib
        self.timeout: float = args.timeout
        self.runs = 0

    def locator(self, store: Store) -> str:
        name = f"bench-{uuid.uuid4().hex[:12]}"
        if store.scheme in ("file", "local"):
            return f"{store.scheme}:{self.scratch / name}"
        if store.scheme == "aws":
            return f"aws:{REGION}:{name}"
        return f"s3:{BUCKET}/{name}"

    def run(self, store: Store, shape: str, n: int) -> Run:
        """Run the workflow of ``shape`` at ``n`` on a fresh ``store``; fails if the run does."""
        self.runs += 1
        work = self.scratch / f"work-{self.runs}"
        work.mkdir()
        log = self.scratch / f"run-{self.runs}.log"
        env = dict(os.environ)
        env.pop("JOBSTORE_LEDGER", None)
        if not store.ledger:
            env["JOBSTORE_LEDGER"] = "0"
        command = [
            sys.executable,
            str(WORKFLOW),
            self.locator(store),
            f"--shape={shape}",
            f"--jobs={shape_jobs(shape, n)}",
            f"--files={self.files}",
            f"--file-mib={self.file_mib}",
            "--batchSystem=single_machine",
            f"--workDir={work}",
            "--logLevel=WARNING",
        ]
        counts = self._counts()
        start = time.perf_counter()
        with open(log, "wb") as out:
            done = subprocess.run(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=self.timeout
            )
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            tail = log.read_text(errors="replace").splitlines()[-20:]
            raise RuntimeError(
                f"{shape} on {store.name} exited {done.returncode}:\n" + "\n".join(tail)
            )
        requests, ledger_requests, attempts = (
            b - a for a, b in zip(counts, self._counts(), strict=True)
        )
        return Run(seconds, requests, ledger_requests, attempts)

    def _counts(self) -> tuple[int, int, int]:
        if self.proxy is None:
            return 0, 0, 0
        p = self.proxy
        return p.count, p.marked(LEDGER_MARK), p.marked(ATTEMPT_MARK)


def rounds(
    runner: Runner, stores: Sequence[Store], shape: str, n: int, repeat: int
) -> dict[Store, Runs]:
    """``repeat`` rounds of the workflow on every store, the order reversing every round."""
    results = {store: Runs() for store in stores}
    for r in range(repeat):
        for store in stores if r % 2 == 0 else stores[::-1]:
            results[store].runs.append(runner.run(store, shape, n))
    return results


# ------------------------------------------------------------------- report


def interval(values: Sequence[float], fmt: Callable[[float], str] = fmt_seconds) -> str:
    lo, hi = median_interval(values)
    return f"[{fmt(lo)}, {fmt(hi)}]"


def report(
    shape: str,
    n: int,
    results: dict[Store, Runs],
    pairs: Sequence[tuple[str, Store, Store]],
    repeat: int,
    figures: Results,
) -> tuple[str, list[str]]:
    """The tables for one workflow: each store's times, then each pair's ratio; targets missed."""
    jobs = total_jobs(shape, n)
    what = {
        "fanout": f"{shape_jobs(shape, n):,} tiny jobs gathered by a follow-on",
        "chain": f"a chain of {shape_jobs(shape, n):,} job(s)",
        "files": f"{shape_jobs(shape, n):,} jobs writing and reading files",
    }[shape]
    stores = Table(
        f"{shape}: {what}, {jobs:,} jobs in all; {repeat} rounds",
        ["store", "median", "95% interval", "per job", "req/job", "attempts"],
    )
    for store, runs in results.items():
        median = statistics.median(runs.seconds)
        figures.cost(store.name, shape, n, median / jobs)
        on_s3 = store.on_s3
        stores.row(
            store.name,
            fmt_seconds(median),
            interval(runs.seconds),
            fmt_seconds(median / jobs),
            f"{statistics.median(r.requests for r in runs.runs) / jobs:.3g}" if on_s3 else "-",
            f"{statistics.median(r.attempts for r in runs.runs):g}"
            if store.scheme == "s3" and store.ledger
            else "-",
        )
    missed: list[str] = []
    ratios = Table(
        "paired ratios, one per round: A's time over B's (ours faster above 1; "
        "the ledger's cost above 1)",
        ["A / B", "median", "95% interval", "target", ""],
    )
    for group, a, b in pairs:
        values = [
            x.seconds / y.seconds for x, y in zip(results[a].runs, results[b].runs, strict=True)
        ]
        ratio = statistics.median(values)
        if group != "ledger":  # Toil's store against ours (the ledger pairs are ours alone)
            figures.ratio(shape, n, values, f"{a.name} / {b.name}")
        if group == "ledger":
            target, ok = f"<= {LEDGER_SLOWDOWN:g}x", ratio <= LEDGER_SLOWDOWN
        else:
            target, ok = ">= 1x", ratio >= 1.0
        if not ok:
            missed.append(f"{shape} {a.name} / {b.name}: {target}")
        ratios.row(
            f"{a.name} / {b.name}",
            fmt_ratio(ratio),
            interval(values, fmt_ratio),
            target,
            "ok" if ok else "MISS",
        )
    text = [stores.render(), ratios.render()]
    if S3 in results and S3_OFF in results:
        text.append(ledger_requests(shape, jobs, results[S3], results[S3_OFF], missed))
    return "\n\n".join(text), missed


def ledger_requests(shape: str, jobs: int, on: Runs, off: Runs, missed: list[str]) -> str:
    """The ledger's requests on s3:, against its budget.

    That budget is two parts: at most one extra write per attempt (a worker's
    record of its start), and the leader's writes batched, about one a second
    whatever the job rate. Their sum per attempt is 1 + batches per attempt,
    so it stays above 1 by the batches: a chain of jobs ending more than a
    second apart takes a batch per attempt, since an attempt's end must reach
    the store within seconds (SPEC: a job leaves ``running`` within 2 s).
    """
    batches = [r.ledger_requests - r.attempts for r in on.runs]
    paired_extra = [x.requests - y.requests for x, y in zip(on.runs, off.runs, strict=True)]
    rows: list[tuple[str, list[float], float | None]] = [
        (
            "extra requests per attempt but the leader's batches (paired: s3: minus s3: no ledger)",
            [
                (e - b) / max(r.attempts, 1)
                for e, b, r in zip(paired_extra, batches, on.runs, strict=True)
            ],
            LEDGER_REQUESTS,
        ),
        (
            "the leader's event batches per second of run",
            [b / r.seconds for b, r in zip(batches, on.runs, strict=True)],
            LEDGER_BATCHES_PER_SECOND,
        ),
        (
            "requests to ledger/ keys per attempt (records and batches)",
            [r.ledger_requests / max(r.attempts, 1) for r in on.runs],
            None,
        ),
        (
            "  of them event batches per attempt",
            [b / max(r.attempts, 1) for b, r in zip(batches, on.runs, strict=True)],
            None,
        ),
        ("requests to ledger/ keys per job", [r.ledger_requests / jobs for r in on.runs], None),
    ]
    table = Table(
        "the run ledger's requests on s3: (attempts = worker processes that recorded one)",
        ["counted as", "median", "95% interval", "target", ""],
    )
    for label, values, budget in rows:
        median = statistics.median(values)
        ok = budget is None or median <= budget
        if not ok:
            missed.append(f"{shape} {label}: <= {budget:g}")
        table.row(
            label,
            f"{median:.3g}",
            interval(values, lambda v: f"{v:.3g}"),
            "" if budget is None else f"<= {budget:g}",
            "" if budget is None else ("ok" if ok else "MISS"),
        )
    return table.render()


# --------------------------------------------------------------------- main


@contextlib.contextmanager
def s3_endpoint(scratch: Path, delay: float) -> Iterator[CountingProxy]:
    """A moto server behind a counting, delaying proxy, with boto3 pointed at the proxy."""
    saved = dict(os.environ)
    with moto_server(str(scratch / "moto.log")) as moto:
        proxy = CountingProxy(moto, delay=delay, marks=(LEDGER_MARK, ATTEMPT_MARK))
        try:
            os.environ.update(FAKE_CREDENTIALS)
            os.environ.update(AWS_DEFAULT_REGION=REGION, AWS_ENDPOINT_URL=proxy.endpoint)
            for var in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
                os.environ.pop(var, None)
            yield proxy
        finally:
            proxy.close()
            os.environ.clear()
            os.environ.update(saved)


def main(argv: list[str] | None = None) -> int:
    parser = arg_parser(__doc__.split("\n", 1)[0])
    parser.set_defaults(n=[1000])
    parser.add_argument(
        "--shapes",
        default=",".join(SHAPES),
        help=f"workflows to run, comma-separated (default {','.join(SHAPES)})",
    )
    parser.add_argument(
        "--pairs",
        default=",".join(GROUPS),
        help="comparisons: local (file: vs local:), s3 (aws: vs s3:), ledger (on vs off); "
        f"default {','.join(GROUPS)}",
    )
    parser.add_argument(
        "--delay-ms", type=float, default=20.0, help="added to every S3 request (default 20)"
    )
    parser.add_argument("--files", type=int, default=10, help="files per job of 'files' (10)")
    parser.add_argument("--file-mib", type=float, default=1.0, help="MiB per file (1)")
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds one run may take (3600)"
    )
    args = parser.parse_args(argv)
    shapes = [s for s in args.shapes.split(",") if s]
    groups = [g for g in args.pairs.split(",") if g]
    for value, known, what in ((shapes, SHAPES, "shape"), (groups, tuple(GROUPS), "pair")):
        unknown = set(value) - set(known)
        if unknown or not value:
            parser.error(f"unknown {what}: {', '.join(sorted(unknown)) or '(none)'}")
    stores = [
        s for s in (FILE, LOCAL, LOCAL_OFF, S3_OFF, S3, AWS) if any(s in GROUPS[g] for g in groups)
    ]
    pairs = [p for p in PAIRS if p[0] in groups]

    lines: list[str] = []

    def emit(text: str) -> None:
        """Print as the run goes (a full run takes hours), and keep for the saved report."""
        print(text + "\n", flush=True)
        lines.append(text)

    emit(f"bench_workflow: real Toil workflows on each store\n{machine_note()}  (before)")
    missed: list[str] = []
    figures = Results()
    with scratch_dir("bench-workflow-", args.tmp) as scratch, contextlib.ExitStack() as stack:
        spread_subdirectories(scratch)
        free = shutil.disk_usage(scratch).free / 2**30
        notes = [
            f"local stores and work directories on {file_system(scratch)}, {free:.0f} GiB free"
        ]
        proxy = None
        if any(s.on_s3 for s in stores):
            proxy = stack.enter_context(s3_endpoint(scratch, args.delay_ms / 1000))
            notes.append(
                f"S3 stores on one moto server, {args.delay_ms:g} ms added to each request"
            )
        emit("\n".join(notes))
        runner = Runner(scratch, proxy, args)
        if args.repeat > 1:  # a single round is a smoke run, not a measurement
            runner.run(stores[0], "chain", 1)  # warms the page cache for what every run imports
        for n in args.n:
            for shape in shapes:
                results = rounds(runner, stores, shape, n, args.repeat)
                text, miss = report(shape, n, results, pairs, args.repeat, figures)
                emit(text)
                missed += miss
    emit(f"{machine_note()}  (after)\nTargets missed: " + ("; ".join(missed) or "none"))
    print(f"(report saved to {save_report('bench_workflow', chr(10).join(lines), figures)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
