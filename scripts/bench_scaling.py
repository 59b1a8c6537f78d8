"""Stores of 10,000 to a million jobs: what Toil's commands cost per job, local: and FileJobStore.

For each size ``N`` (``--n``) and store, as a user meets them, each a process
of its own:

* ``create``: ``N`` jobs written through the store's API by
  ``tests/workflows/scaling.py --make`` (a store made by ``Toil(options)``, the
  jobs a tree of ``--fanout`` children a job, every job finished: see that
  script), timed inside it, the job writes alone;
* ``jobs()``: every job loaded by ``jobs()`` in a fresh process (what a
  restarting leader does first), timed inside it;
* ``toil status LOCATOR``, ``toil clean LOCATOR`` and the restart (the
  workflow script with ``--restart``), timed as commands: wall clock from
  start to exit, and the process's peak memory (``wait4``).

The restart is a "no-op restart" in the one sense that has work to measure: a
restart of a workflow whose every job has run, its leader killed before it
retired them. Toil loads all jobs, cleans the store from its root, finds
nothing to run, and retires (deletes) every job, then returns the workflow's
value; no worker is started. (A restart of a workflow that finished is a
no-op too, but its store holds no jobs: it costs the same at any size.) The
restart is timed on a second store of the same size, made as the first:
``toil clean`` deletes the first one.

A command's cost per job is its time less the same command's time on a store
of one job (Python, Toil's imports and the leader's start-up: seconds that
would flatter the per-job cost of big stores), over ``N``. ``create`` and
``jobs()`` have no start-up in their time. Ratios are FileJobStore's cost over
ours, paired by repeat. Sizes above ``--once-above`` (100,000) jobs run once
whatever ``--repeat`` says (a million takes an hour); ``--ops`` leaves some
operations out (the restart is the longest). FileJobStore is skipped at a size
where its run would take longer than ``--file-limit``, as estimated from the
size before.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchutil import (
    Report,
    Table,
    Verdicts,
    arg_parser,
    file_system,
    fmt_ratio,
    fmt_seconds,
    median_interval,
    scratch_dir,
    spread_subdirectories,
)

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "tests" / "workflows" / "scaling.py"
#: The stores compared: name shown, locator scheme.
STORES = {"local:": "local", "FileJobStore": "file"}
OURS, THEIRS = "local:", "FileJobStore"
OPS = ("create", "jobs()", "toil status", "restart", "toil clean")
#: Commands whose time includes a process's start-up, taken off with the one-job baseline.
COMMANDS = ("toil status", "restart", "toil clean")
#: Our per-job cost may grow this much from the smallest size to the largest.
FLAT = 1.5


@dataclass
class Done:
    """A finished command: its wall-clock seconds, peak memory and standard output."""

    seconds: float
    max_rss_kib: int
    out: str


@dataclass
class Cell:
    """One store's samples of one operation at one size: seconds per job, peak memory (KiB)."""

    per_job: list[float] = field(default_factory=list)
    max_rss_kib: list[int] = field(default_factory=list)


class Runner:
    """Makes stores and runs Toil's commands on them, in their own processes, timed."""

    def __init__(self, scratch: Path, fanout: int) -> None:
        self.scratch = scratch
        self.fanout = fanout
        self.count = 0
        self.log = scratch / "commands.log"

    def run(self, command: Sequence[str]) -> Done:
        """Run ``command`` to its end; fails, with the end of its log, if it does."""
        self.count += 1
        out_path = self.scratch / f"out-{self.count}"
        with open(out_path, "wb") as out, open(self.log, "ab") as err:
            err.write(f"$ {' '.join(command)}\n".encode())
            err.flush()
            start = time.perf_counter()
            process = subprocess.Popen(command, stdout=out, stderr=err)
            # wait4, not wait: the child's own peak memory, not the largest of all children's.
            _, status, usage = os.wait4(process.pid, 0)
            seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        text = out_path.read_text()
        out_path.unlink()
        if process.returncode != 0:
            tail = self.log.read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError(
                f"{' '.join(command)} exited {process.returncode}:\n" + "\n".join(tail)
            )
        return Done(seconds, usage.ru_maxrss, text)

    def workflow(self, locator: str, *args: str) -> Done:
        return self.run([sys.executable, str(WORKFLOW), locator, *args, "--logLevel=WARNING"])

    def make(self, scheme: str, n: int) -> tuple[str, float, Done]:
        """A new store of ``n`` finished jobs: its locator, the seconds its jobs took."""
        self.count += 1
        locator = f"{scheme}:{self.scratch / f'{scheme}-{n}-{self.count}-{os.urandom(3).hex()}'}"
        done = self.workflow(locator, f"--make={n}", f"--fanout={self.fanout}")
        made = json.loads(done.out)
        if made["jobs"] != n:
            raise AssertionError(f"{locator}: made {made['jobs']} jobs of {n}")
        return locator, made["seconds"], done

    def list_jobs(self, locator: str, n: int) -> tuple[float, Done]:
        done = self.workflow(locator, "--list")
        listed = json.loads(done.out)
        if listed["jobs"] != n:
            raise AssertionError(f"{locator}: jobs() gave {listed['jobs']} jobs of {n}")
        return listed["seconds"], done

    def status(self, locator: str, n: int) -> Done:
        done = self.run(["toil", "status", locator, "--logLevel=WARNING"])
        if f"Of the {n} jobs considered" not in done.out:
            raise AssertionError(f"toil status {locator} did not report {n} jobs:\n{done.out}")
        return done

    def restart(self, locator: str, n: int) -> Done:
        work = self.scratch / f"work-{self.count}"
        work.mkdir()
        done = self.workflow(
            locator,
            "--restart",
            "--clean=never",
            "--batchSystem=single_machine",
            f"--workDir={work}",
        )
        shutil.rmtree(work)
        if json.loads(done.out) != {"returned": n}:
            raise AssertionError(f"the restart of {locator} returned {done.out!r}, not {n}")
        return done

    def clean(self, locator: str) -> Done:
        done = self.run(["toil", "clean", locator, "--logLevel=WARNING"])
        if os.path.exists(locator.split(":", 1)[1]):
            raise AssertionError(f"toil clean left {locator} behind")
        return done


class Bench:
    """Every operation on every store at every size; samples per (store, op, n)."""

    def __init__(self, runner: Runner, ops: Sequence[str]) -> None:
        self.runner = runner
        self.ops = ops
        self.cells: dict[tuple[str, str, int], Cell] = {}
        self.baseline: dict[tuple[str, str], float] = {}
        #: FileJobStore's wall-clock seconds for one repeat at each size it ran.
        self.repeat_seconds: dict[tuple[str, int], float] = {}

    def cell(self, store: str, op: str, n: int) -> Cell:
        return self.cells.setdefault((store, op, n), Cell())

    def measure_baseline(self, store: str, repeat: int) -> None:
        """Each command's seconds on a store of one job (median of ``repeat``)."""
        r = self.runner
        scheme = STORES[store]
        samples: dict[str, list[float]] = {op: [] for op in COMMANDS}
        for _ in range(repeat):
            locator, _, _ = r.make(scheme, 1)
            samples["toil status"].append(r.status(locator, 1).seconds)
            samples["toil clean"].append(r.clean(locator).seconds)
            if "restart" in self.ops:
                locator, _, _ = r.make(scheme, 1)
                samples["restart"].append(r.restart(locator, 1).seconds)
                r.clean(locator)
        for op, values in samples.items():
            if values:
                self.baseline[(store, op)] = statistics.median(values)

    def repeat_once(self, store: str, n: int) -> None:
        """One sample of every operation on ``store`` at ``n`` jobs (two stores made)."""
        r = self.runner
        scheme = STORES[store]
        start = time.perf_counter()

        def add(op: str, seconds: float, done: Done, command: bool = False) -> None:
            if command:
                seconds = max(seconds - self.baseline[(store, op)], 0.0)
            cell = self.cell(store, op, n)
            cell.per_job.append(seconds / n)
            cell.max_rss_kib.append(done.max_rss_kib)

        locator, seconds, done = r.make(scheme, n)
        add("create", seconds, done)
        seconds, done = r.list_jobs(locator, n)
        add("jobs()", seconds, done)
        if "toil status" in self.ops:
            done = r.status(locator, n)
            add("toil status", done.seconds, done, command=True)
        done = r.clean(locator)
        if "toil clean" in self.ops:
            add("toil clean", done.seconds, done, command=True)
        if "restart" in self.ops:
            locator, seconds, done = r.make(scheme, n)
            add("create", seconds, done)
            done = r.restart(locator, n)
            add("restart", done.seconds, done, command=True)
            r.clean(locator)  # what the restart left: the store, its jobs retired
        self.repeat_seconds[(store, n)] = time.perf_counter() - start


# ------------------------------------------------------------------- report


def fmt_per_job(seconds: float) -> str:
    return fmt_seconds(seconds)


def size_table(bench: Bench, n: int, stores: Sequence[str], report: Report) -> str:
    reps = len(bench.cell(stores[0], "jobs()", n).per_job)
    table = Table(
        f"N = {n:,} jobs: cost per job, median of {reps} repeat(s) (create: of every store "
        "made) with its range; peak memory of the process; ratio = FileJobStore's cost over "
        "ours, paired by repeat",
        ["operation"]
        + [c for s in stores for c in (f"{s} per job", "range", "peak RSS")]
        + (["ratio", "range"] if len(stores) > 1 else []),
    )
    for op in (op for op in OPS if (stores[0], op, n) in bench.cells):
        cells: list[str] = []
        for store in stores:
            cell = bench.cell(store, op, n)
            lo, hi = median_interval(cell.per_job)
            cells += [
                fmt_per_job(statistics.median(cell.per_job)),
                f"{fmt_per_job(lo)}-{fmt_per_job(hi)}",
                f"{max(cell.max_rss_kib) / 1024:.0f} MiB",
            ]
            report.results.cost(store, op, n, statistics.median(cell.per_job))
        if len(stores) > 1:
            ours, theirs = bench.cell(OURS, op, n).per_job, bench.cell(THEIRS, op, n).per_job
            ratios = [t / o for o, t in zip(ours, theirs, strict=True) if o > 0]
            if ratios:
                lo, hi = median_interval(ratios)
                cells += [fmt_ratio(statistics.median(ratios)), f"{lo:.2f}-{hi:.2f}"]
                report.results.ratio(op, n, ratios, f"{THEIRS} / {OURS}")
            else:
                cells += ["-", ""]
        table.row(op, *cells)
    text = table.render()
    if any(0.0 in c.per_job for (_, op, m), c in bench.cells.items() if m == n and op in COMMANDS):
        text += (
            "\n0 ns: the command took less than on a store of one job (its start-up varied "
            "more than its work: the load); a size too small to tell"
        )
    return text


def scaling_table(bench: Bench, sizes: Sequence[int], store: str, verdicts: Verdicts) -> str:
    ran = [n for n in sizes if (store, "create", n) in bench.cells]
    small, large = ran[0], ran[-1]
    ours = store == OURS
    table = Table(
        f"{store}: cost per job by size, and at {large:,} over at {small:,}"
        + (f" (target <= {FLAT:g}x)" if ours else ""),
        ["operation", *(f"{n:,}" for n in ran), "growth", *([""] if ours else [])],
    )
    for op in OPS:
        measured = [n for n in ran if (store, op, n) in bench.cells]
        if len(measured) < 2:
            continue
        small, large = measured[0], measured[-1]
        medians = [statistics.median(bench.cell(store, op, n).per_job) for n in measured]
        growth = medians[-1] / medians[0] if medians[0] > 0 else float("inf")
        verdict = []
        if ours:
            verdict = [
                verdicts.check(
                    f"{store} {op}: per-job cost at {large:,} within {FLAT:g}x of {small:,} "
                    f"({fmt_ratio(growth)})",
                    growth <= FLAT,
                )
            ]
        shown = iter(map(fmt_per_job, medians))
        cells = [next(shown) if n in measured else "-" for n in ran]
        table.row(op, *cells, fmt_ratio(growth), *verdict)
    return table.render()


# --------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = arg_parser(__doc__.split("\n", 1)[0])
    parser.set_defaults(n=[10_000, 100_000])
    parser.add_argument(
        "--stores",
        default=",".join(STORES.values()),
        help="stores to run: local (ours), file (Toil's FileJobStore); default local,file",
    )
    parser.add_argument(
        "--fanout", type=int, default=100, help="children a job in the stores' trees (100)"
    )
    parser.add_argument(
        "--file-limit",
        type=float,
        default=600.0,
        help="skip FileJobStore at a size estimated to take longer than this (seconds, 600)",
    )
    parser.add_argument(
        "--ops",
        default=",".join(OPS),
        help=f"operations to time (default all: {','.join(OPS)}); create and jobs() always run",
    )
    parser.add_argument(
        "--once-above",
        type=int,
        default=100_000,
        help="sizes above this run once whatever --repeat says (default 100000)",
    )
    args = parser.parse_args(argv)
    ops = [op for op in args.ops.split(",") if op]
    if set(ops) - set(OPS):
        parser.error(f"unknown operation: {', '.join(sorted(set(ops) - set(OPS)))}")
    schemes = [s for s in args.stores.split(",") if s]
    unknown = set(schemes) - set(STORES.values())
    if unknown or not schemes:
        parser.error(f"unknown store: {', '.join(sorted(unknown)) or '(none)'}")
    stores = [name for name, scheme in STORES.items() if scheme in schemes]
    sizes = sorted(set(args.n))

    report = Report("bench_scaling", "bench_scaling: Toil's commands on big stores")
    verdicts = Verdicts()
    with scratch_dir("bench-scaling-", args.tmp) as scratch:
        spread = spread_subdirectories(scratch)
        disk = shutil.disk_usage(scratch)
        fs = os.statvfs(scratch)
        report.emit(
            f"Stores in {scratch}: {file_system(scratch)}; {disk.free / 2**30:.0f} GiB and "
            f"{fs.f_favail / 1e6:.1f}M inodes free; stores spread over fresh inodes: "
            f"{'yes' if spread else 'no'}. Jobs in a tree of fan-out {args.fanout}. "
            f"Sizes above {args.once_above:,} run once."
        )
        runner = Runner(scratch, args.fanout)
        bench = Bench(runner, ops)
        for store in stores:
            bench.measure_baseline(store, args.repeat)
        report.emit(
            "One-job baselines taken off the commands' times: "
            + "; ".join(
                f"{store} "
                + ", ".join(
                    f"{op} {fmt_seconds(bench.baseline[(store, op)])}"
                    for op in COMMANDS
                    if (store, op) in bench.baseline
                )
                for store in stores
            )
        )
        skipped: list[str] = []
        last: dict[str, int] = {}
        for n in sizes:
            running = []
            for store in stores:
                if store == THEIRS and store in last:
                    before = last[store]
                    estimate = bench.repeat_seconds[(store, before)] * n / before
                    if estimate > args.file_limit:
                        skipped.append(
                            f"{store} skipped at N = {n:,}: about {estimate / 60:.0f} min by "
                            f"its time at N = {before:,}, over --file-limit "
                            f"{args.file_limit:g} s"
                        )
                        report.emit(skipped[-1])
                        continue
                running.append(store)
            reps = args.repeat if n <= args.once_above else 1
            for rep in range(reps):
                for store in running if rep % 2 == 0 else running[::-1]:
                    print(
                        f"  N={n:,} {store}: repeat {rep + 1} of {reps}",
                        file=sys.stderr,
                        flush=True,
                    )
                    bench.repeat_once(store, n)
                    last[store] = n
            report.emit(f"{size_table(bench, n, running, report)}\n(load {os.getloadavg()[0]:.2f})")
        if len(sizes) > 1:
            for store in stores:
                if sum((store, "create", n) in bench.cells for n in sizes) > 1:
                    report.emit(scaling_table(bench, sizes, store, verdicts))
    return report.finish(verdicts)


if __name__ == "__main__":
    sys.exit(main())
