"""Toil's FileJobStore and our ``local:`` store, side by side, through the public API.

Ratios are FileJobStore's time over ours: above 1 we are faster. How it measures
(printed with every report, see ``NOTES``): one process, one file system, the
same inputs; the two stores take turns slice by slice within each operation.

Job descriptions are real ``toil.job.JobDescription`` objects with a real
``Config``, so ``load_job`` and ``jobs()`` pay Toil's unpickling as they do in a
workflow.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchutil import (
    Report,
    Results,
    Samples,
    Stopwatch,
    Table,
    Verdicts,
    arg_parser,
    file_system,
    fmt_bytes_rate,
    fmt_rate,
    fmt_ratio,
    fmt_seconds,
    scratch_dir,
    speedup,
    spread_subdirectories,
)
from toil.common import Config
from toil.job import JobDescription
from toil.jobStores.abstractJobStore import AbstractJobStore, NoSuchJobException
from toil.jobStores.fileJobStore import FileJobStore

from jobstore import JobStore

FILE = "FileJobStore"
OURS = "local:"
KINDS = (FILE, OURS)
#: At most this many jobs per slice (built outside the timed blocks: bounds memory at 100k).
CHUNK = 1000
SMALL_FILE_BYTES = 4096
STREAM_BYTES = 2**20
SHARED_FILE_BYTES = 1024
#: Above this per-op ratio an operation "matches" a rival bound by the same unpickling.
MATCH_TOLERANCE = 0.95
NOTES = """\
How: both stores in one scratch directory, each store in a directory of its own that
ext4 places on fresh inodes (chattr +T on the scratch directory), kept until the run
ends so that later stores do not land on the inodes it freed: on ext4 without a journal
every inode allocation scans past the inodes freed in its block group in the last
minute or more (recently_deleted() in fs/ext4/ialloc.c). Leave a minute between runs.
One process; the two stores take turns slice by slice within each operation, so that
other load on the machine hits both alike. Warm runs: page caches are not dropped.
create_job = assign_job_id + create_job, as Toil's leader does it (FileJobStore makes
the job's directory in assign_job_id). Deletes are timed after a sync, on objects that
reached the disk as nearly all objects a workflow deletes have: with delayed allocation,
deleting a file written a moment ago frees no block, and on file systems mounted with
'discard' freeing one costs a request to the device. read_file copies in local:;
FileJobStore hard-links the stored file when it can (same file system), so the caller
and the store then share one inode. FileJobStore's missing job is timed once per run
(it waits ~30 s for the job to appear)."""


def open_store(kind: str, root: Path, fsync: bool = False) -> AbstractJobStore:
    """A freshly initialised store of ``kind`` at ``root``; ``fsync`` only applies to ours."""
    store: AbstractJobStore
    if kind == FILE:
        store = FileJobStore(str(root))
    else:
        saved = os.environ.get("JOBSTORE_FSYNC")
        os.environ["JOBSTORE_FSYNC"] = "1" if fsync else "0"
        try:
            store = JobStore(f"local:{root}")  # the backend reads the switch when opened
        finally:
            if saved is None:
                del os.environ["JOBSTORE_FSYNC"]
            else:
                os.environ["JOBSTORE_FSYNC"] = saved
    store.initialize(Config())
    return store


def fresh_root(base: Path, name: str) -> Path:
    """A new store directory in ``base``, named so that it lands on inodes no earlier run used.

    ext4 starts its search for a top directory's block group at a hash of the
    name; a fixed name would put every run's store where the last one was freed.
    """
    return base / f"{name}-{os.urandom(4).hex()}"


def new_description(i: int) -> JobDescription:
    return JobDescription(
        requirements={
            "memory": 2**31,
            "cores": 1,
            "disk": 2**31,
            "preemptible": False,
            "accelerators": [],
        },
        jobName="bench_job",
        unitName=f"unit{i}",
        displayName=f"bench_job {i}",
    )


@dataclass
class Inputs:
    """Local files both stores write, made once per run."""

    small: list[Path]
    stream_block: bytes
    shared_block: bytes
    base: Path  # the scratch directory, where read_file's copies go too


@dataclass
class Run:
    """Samples of every operation for one store at one N, across repeats."""

    samples: dict[str, Samples] = field(default_factory=dict)
    logs_in_order: list[bool] = field(default_factory=list)
    #: FileJobStore's time over ours for each slice of an operation (kept in our Run).
    slice_ratios: dict[str, list[float]] = field(default_factory=dict)

    def __getitem__(self, op: str) -> Samples:
        return self.samples.setdefault(op, Samples())


class Phase:
    """Times one operation on both stores, in alternating slices of work.

    Each slice runs on one store, then at once on the other, and the order
    flips every slice. The ratio quoted is the median over slices of the two
    stores' times in the same slice: load from other users of the machine,
    which comes and goes over seconds, then hits both sides of each ratio alike.
    """

    def __init__(self, runs: dict[str, Run], op: str, ops: int) -> None:
        self.runs = runs
        self.op = op
        self.ops = ops
        self.watches = {kind: Stopwatch() for kind in KINDS}
        self.slices = 0
        self.slice_start = {kind: 0.0 for kind in KINDS}

    def order(self) -> tuple[str, ...]:
        """Start a slice: the order in which the stores take their turns in it."""
        self._end_slice()
        self.slices += 1
        self.slice_start = {kind: watch.seconds for kind, watch in self.watches.items()}
        return KINDS if self.slices % 2 else KINDS[::-1]

    def timing(self, kind: str) -> contextlib.AbstractContextManager[None]:
        return self.watches[kind].running()

    def _end_slice(self) -> None:
        file, ours = (self.watches[k].seconds - self.slice_start[k] for k in (FILE, OURS))
        if file > 0 and ours > 0:
            self.runs[OURS].slice_ratios.setdefault(self.op, []).append(file / ours)

    def done(self) -> None:
        self._end_slice()
        for kind, watch in self.watches.items():
            self.runs[kind][self.op].add(watch.seconds, self.ops)


def spans(total: int, size: int) -> Iterator[range]:
    for start in range(0, total, size):
        yield range(start, min(total, start + size))


def bench_repeat(
    base: Path,
    tag: str,
    n: int,
    files: int,
    inputs: Inputs,
    runs: dict[str, Run],
    time_file_missing: bool,
) -> None:
    """One repeat of every per-job and per-file operation, on a fresh pair of stores."""
    stores = {kind: open_store(kind, fresh_root(base, kind.strip(":") + tag)) for kind in KINDS}
    ids: dict[str, list[str]] = {kind: [] for kind in KINDS}
    slice_jobs = max(1, min(CHUNK, n // 20))

    phase = Phase(runs, "create_job", n)
    for span in spans(n, slice_jobs):
        for kind in phase.order():
            batch = [new_description(i) for i in span]
            with phase.timing(kind):
                for job in batch:
                    stores[kind].assign_job_id(job)
                    stores[kind].create_job(job)
            ids[kind].extend(str(job.jobStoreID) for job in batch)
    phase.done()

    phase = Phase(runs, "load_job", n)
    for span in spans(n, slice_jobs):
        for kind in phase.order():
            store, chunk = stores[kind], ids[kind][span.start : span.stop]
            with phase.timing(kind):
                for job_id in chunk:
                    store.load_job(job_id)
    phase.done()

    phase = Phase(runs, "update_job", n)
    for span in spans(n, slice_jobs):
        for kind in phase.order():
            store = stores[kind]
            loaded = [store.load_job(job_id) for job_id in ids[kind][span.start : span.stop]]
            for job in loaded:
                job.remainingTryCount = 1
            with phase.timing(kind):
                for job in loaded:
                    store.update_job(job)
    phase.done()

    phase = Phase(runs, "jobs()", n)
    for kind in phase.order():
        with phase.timing(kind):
            count = sum(1 for _ in stores[kind].jobs())
        if count != n:
            raise AssertionError(f"{kind}: jobs() returned {count} of {n} jobs")
    phase.done()

    bench_files(stores, ids, files, inputs, runs)

    os.sync()  # see NOTES
    phase = Phase(runs, "delete_job", n)
    for span in spans(n, slice_jobs):
        for kind in phase.order():
            store, chunk = stores[kind], ids[kind][span.start : span.stop]
            with phase.timing(kind):
                for job_id in chunk:
                    store.delete_job(job_id)
    phase.done()

    missing = ids[OURS][:200]
    with runs[OURS]["load missing job"].time(len(missing)):
        for job_id in missing:
            expect_missing(stores[OURS], job_id)
    if time_file_missing:
        # FileJobStore spin-waits ~30 s for a missing job: one call is all it takes to see.
        with runs[FILE]["load missing job"].time(1):
            expect_missing(stores[FILE], ids[FILE][0])
    # The stores' empty directories stay until the scratch directory goes: ext4 then places
    # the next repeat's stores elsewhere than on the inodes this one just freed.


def expect_missing(store: AbstractJobStore, job_id: str) -> None:
    try:
        store.load_job(job_id)
    except NoSuchJobException:
        return
    raise AssertionError(f"deleted job {job_id} still loads")


def bench_files(
    stores: dict[str, AbstractJobStore],
    ids: dict[str, list[str]],
    files: int,
    inputs: Inputs,
    runs: dict[str, Run],
) -> None:
    """Small files, streams, shared files and logs, in stores that hold the N jobs."""
    slice_files = max(1, files // 20)
    # Like the stores, on fresh inodes and kept until the run ends.
    outs = {kind: fresh_root(inputs.base, "read-" + kind.strip(":")) for kind in KINDS}
    for out in outs.values():
        out.mkdir()
    srcs = [str(inputs.small[i % len(inputs.small)]) for i in range(files)]

    def owner(kind: str, i: int) -> str:
        return ids[kind][i % len(ids[kind])]

    file_ids: dict[str, list[str]] = {kind: [] for kind in KINDS}
    phase = Phase(runs, "write_file 4 KiB", files)
    for span in spans(files, slice_files):
        for kind in phase.order():
            store, owners = stores[kind], [owner(kind, i) for i in span]
            with phase.timing(kind):
                new = [store.write_file(srcs[i], job) for i, job in zip(span, owners, strict=True)]
            file_ids[kind].extend(new)
    phase.done()

    for op, prefix, symlink in (("read_file 4 KiB", "c", False), ("read_file symlink", "s", True)):
        phase = Phase(runs, op, files)
        for span in spans(files, slice_files):
            for kind in phase.order():
                store, out = stores[kind], outs[kind]
                targets = [(file_ids[kind][i], str(out / f"{prefix}{i}")) for i in span]
                with phase.timing(kind):
                    for file_id, target in targets:
                        store.read_file(file_id, target, symlink=symlink)
        phase.done()

    streams = max(1, files // 10)
    stream_ids: dict[str, list[str]] = {kind: [] for kind in KINDS}
    phase = Phase(runs, "write_file_stream 1 MiB", streams)
    for span in spans(streams, max(1, streams // 10)):
        for kind in phase.order():
            store, owners = stores[kind], [owner(kind, i) for i in span]
            with phase.timing(kind):
                for job in owners:
                    with store.write_file_stream(job) as (f, file_id):
                        f.write(inputs.stream_block)
                    stream_ids[kind].append(file_id)
    phase.done()

    phase = Phase(runs, "read_file_stream 1 MiB", streams)
    for span in spans(streams, max(1, streams // 10)):
        for kind in phase.order():
            store, chunk = stores[kind], stream_ids[kind][span.start : span.stop]
            with phase.timing(kind):
                for file_id in chunk:
                    with store.read_file_stream(file_id) as r:
                        data = r.read()
                    if len(data) != STREAM_BYTES:
                        raise AssertionError(f"{kind}: short stream read")
    phase.done()

    names = [f"bench-{i}" for i in range(files)]
    phase = Phase(runs, "write shared file", files)
    for span in spans(files, slice_files):
        for kind in phase.order():
            with phase.timing(kind):
                for i in span:
                    with stores[kind].write_shared_file_stream(names[i]) as w:
                        w.write(inputs.shared_block)
    phase.done()

    phase = Phase(runs, "read shared file", files)
    for span in spans(files, slice_files):
        for kind in phase.order():
            with phase.timing(kind):
                for i in span:
                    with stores[kind].read_shared_file_stream(names[i]) as r:
                        r.read()
    phase.done()

    messages = [f"log message {i:08d}".encode() for i in range(files)]
    phase = Phase(runs, "write_logs", files)
    for span in spans(files, slice_files):
        for kind in phase.order():
            with phase.timing(kind):
                for i in span:
                    stores[kind].write_logs(messages[i])
    phase.done()

    phase = Phase(runs, "read_logs (per message)", files)
    for kind in phase.order():
        received: list[bytes] = []
        with phase.timing(kind):
            stores[kind].read_logs(lambda f, received=received: received.append(f.read()))
        if sorted(received) != messages:
            raise AssertionError(f"{kind}: read_logs returned {len(received)} of {files} messages")
        runs[kind].logs_in_order.append(received == messages)
    phase.done()

    os.sync()  # see NOTES
    phase = Phase(runs, "delete_file", files)
    for span in spans(files, slice_files):
        for kind in phase.order():
            store, chunk = stores[kind], file_ids[kind][span.start : span.stop]
            with phase.timing(kind):
                for file_id in chunk:
                    store.delete_file(file_id)
    phase.done()


# ------------------------------------------------------------------ large file


def make_file(path: Path, size: int, block: int = 16 * 2**20) -> None:
    with open(path, "wb") as f:
        for offset in range(0, size, block):
            f.write(os.urandom(min(block, size - offset)))


@dataclass
class LargeResults:
    samples: dict[str, Samples] = field(default_factory=dict)
    #: For each store operation, a plain copy's time over the operation's, timed back to back.
    ratios: dict[str, list[float]] = field(default_factory=dict)


def bench_large(base: Path, size: int, repeat: int) -> LargeResults:
    results = LargeResults()
    src = base / "large.bin"
    make_file(src, size)
    dest = base / "large.copy"

    def add(name: str, seconds: float) -> None:
        results.samples.setdefault(name, Samples()).add(seconds)

    for rep in range(repeat):
        for kind in KINDS if rep % 2 == 0 else KINDS[::-1]:
            store = open_store(kind, fresh_root(base, f"large-{kind.strip(':')}-{rep}"))
            file_id = ""
            for op in ("write_file", "read_file"):
                # Dirty pages are flushed before each timing so that no write-back lands in it.
                os.sync()
                start = time.perf_counter()
                shutil.copyfile(src, dest)
                copy_seconds = time.perf_counter() - start
                dest.unlink()
                os.sync()
                start = time.perf_counter()
                if op == "write_file":
                    file_id = store.write_file(str(src))
                else:
                    store.read_file(file_id, str(dest))
                seconds = time.perf_counter() - start
                if op == "read_file":
                    if dest.stat().st_size != size:
                        raise AssertionError(f"{kind}: read_file returned a short file")
                    dest.unlink()
                add("plain copy", copy_seconds)
                add(f"{kind} {op}", seconds)
                results.ratios.setdefault(f"{kind} {op}", []).append(copy_seconds / seconds)
            store.destroy()
    src.unlink()
    return results


# ----------------------------------------------------------------------- fsync


def bench_fsync(base: Path, count: int, small: Path, repeat: int) -> dict[str, Samples]:
    results: dict[str, Samples] = {}
    for rep in range(repeat):
        for fsync in (False, True) if rep % 2 == 0 else (True, False):
            label = "fsync" if fsync else "no fsync"
            store = open_store(OURS, fresh_root(base, f"fsync-{fsync}-{rep}"), fsync=fsync)
            jobs = [new_description(i) for i in range(count)]
            with results.setdefault(f"create_job {label}", Samples()).time(count):
                for job in jobs:
                    store.assign_job_id(job)
                    store.create_job(job)
            with results.setdefault(f"write_file 4 KiB {label}", Samples()).time(count):
                for _ in range(count):
                    store.write_file(str(small))
            store.destroy()
    return results


# ---------------------------------------------------------------------- report


#: The order of the rows in a table.
ROWS = [
    "create_job",
    "load_job",
    "update_job",
    "jobs()",
    "delete_job",
    "load missing job",
    "write_file 4 KiB",
    "read_file 4 KiB",
    "read_file symlink",
    "delete_file",
    "write_file_stream 1 MiB",
    "read_file_stream 1 MiB",
    "write shared file",
    "read shared file",
    "write_logs",
    "read_logs (per message)",
]
#: Operations whose unit is jobs listed rather than calls.
PER_JOB_LISTED = {"jobs()"}
#: Operations bound by Toil's unpickling, where matching FileJobStore is the goal.
UNPICKLING_BOUND = {"load_job", "jobs()"}
#: Operations on jobs, whose cost per job should not grow with the number of jobs in the store.
SCALING_OPS = ("create_job", "load_job", "update_job", "jobs()", "delete_job")
#: Minimum speed-ups over FileJobStore.
FAST_TARGETS = {"create_job": 2.0, "delete_job": 2.0}


def job_table(n: int, runs: dict[str, Run], verdicts: Verdicts, results: Results) -> str:
    table = Table(
        f"N = {n:,} jobs: rates and times per operation are medians of "
        f"{len(runs[OURS]['create_job'].per_op)} repeats; ratio = median over paired slices "
        "of FileJobStore's time / ours, with its 95% interval",
        ["operation", FILE, "per op", OURS, "per op", "ratio", "target", ""],
    )
    for op in sorted(runs[OURS].samples, key=ROWS.index):
        ours, theirs = runs[OURS].samples[op], runs[FILE].samples.get(op)
        unit = " jobs/s" if op in PER_JOB_LISTED else "/s"
        if op == "load missing job":
            rival = fmt_seconds(theirs.median) if theirs else "(not timed)"
            ok = verdicts.check(f"N={n}: missing job < 10 ms", ours.median < 0.010)
            table.row(op, rival, "", fmt_seconds(ours.median), "", "", "< 10 ms", ok)
            continue
        assert theirs is not None
        ratios = runs[OURS].slice_ratios[op]
        results.ratio(op, n, ratios, f"{FILE} / {OURS}")
        if op in SCALING_OPS:
            for kind, samples in ((FILE, theirs), (OURS, ours)):
                results.cost(kind, op, n, samples.median)
        if op in FAST_TARGETS:
            target = FAST_TARGETS[op]
            ok, shown = verdicts.check_ratio(f"N={n}: {op} >= {target:g}x", ratios, target)
            label = f">= {target:g}x"
        elif op in UNPICKLING_BOUND:
            ok, shown = verdicts.check_ratio(f"N={n}: {op} matches", ratios, MATCH_TOLERANCE)
            label = f">= {MATCH_TOLERANCE}x"
        else:
            ok, shown = verdicts.check_ratio(f"N={n}: {op} not slower", ratios, 1.0)
            label = ">= 1x"
        table.row(
            op,
            fmt_rate(theirs.rate, unit),
            fmt_seconds(theirs.median),
            fmt_rate(ours.rate, unit),
            fmt_seconds(ours.median),
            shown,
            label,
            ok,
        )
    lines = [table.render()]
    for kind in KINDS:
        order = runs[kind].logs_in_order
        lines.append(
            f"{kind}: read_logs gave messages in write order in {sum(order)} of {len(order)} runs"
        )
    verdicts.check(f"N={n}: our logs in write order", all(runs[OURS].logs_in_order))
    return "\n".join(lines)


def scaling_table(by_n: dict[int, dict[str, Run]], verdicts: Verdicts) -> str:
    small, large = min(by_n), max(by_n)
    table = Table(
        f"Scaling: per-job cost at N = {large:,} over N = {small:,} (target for ours <= 1.2x)",
        [
            "operation",
            f"{FILE} {small:,}",
            f"{FILE} {large:,}",
            "",
            f"{OURS} {small:,}",
            f"{OURS} {large:,}",
            "",
            "",
        ],
    )
    for op in SCALING_OPS:
        cells: list[str] = []
        growth = 0.0
        for kind in KINDS:
            a, b = by_n[small][kind][op].median, by_n[large][kind][op].median
            growth = b / a
            cells += [fmt_seconds(a), fmt_seconds(b), fmt_ratio(growth)]
        ok = ""
        if op in ("create_job", "jobs()"):
            ok = verdicts.check(f"{op} scales flat from {small:,} to {large:,} jobs", growth <= 1.2)
        table.row(op, *cells, ok)
    return table.render()


def large_table(size: int, results: LargeResults, verdicts: Verdicts) -> str:
    copy = results.samples["plain copy"]
    table = Table(
        f"One {size // 2**20} MiB file vs shutil.copyfile of it: times are medians of "
        f"{len(copy.per_op)}, ratios medians (and ranges) of a plain copy's time over the "
        "operation's, timed back to back; page cache warm, dirty pages flushed before each",
        ["operation", "time", "throughput", "vs plain copy", "target", ""],
    )
    table.row("plain copy", fmt_seconds(copy.median), fmt_bytes_rate(size * copy.rate), "", "", "")
    for kind in KINDS:
        for op in ("write_file", "read_file"):
            samples, ratios = results.samples[f"{kind} {op}"], results.ratios[f"{kind} {op}"]
            ratio = statistics.median(ratios)
            target, ok = "", ""
            if kind == OURS and op == "write_file":
                target = ">= 0.9x"
                ok = verdicts.check("large write_file >= 0.9x a plain copy", ratio >= 0.9)
            table.row(
                f"{kind} {op}",
                fmt_seconds(samples.median),
                fmt_bytes_rate(size * samples.rate),
                f"{fmt_ratio(ratio)} ({min(ratios):.2f}-{max(ratios):.2f})",
                target,
                ok,
            )
    return table.render()


def fsync_table(count: int, results: dict[str, Samples]) -> str:
    table = Table(
        f"{OURS} with JOBSTORE_FSYNC=1 ({count} operations, median of "
        f"{len(results['create_job fsync'].per_op)})",
        ["operation", "no fsync", "fsync", "fsync time / no-fsync time"],
    )
    for op in ("create_job", "write_file 4 KiB"):
        off, on = results[f"{op} no fsync"], results[f"{op} fsync"]
        table.row(op, fmt_rate(off.rate), fmt_rate(on.rate), fmt_ratio(speedup(off, on)))
    return table.render()


# ------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = arg_parser(__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--files",
        type=int,
        default=500,
        help="small files, shared files and log "
        "messages per repeat (default 500; a tenth as many 1 MiB streams)",
    )
    parser.add_argument(
        "--large-mib",
        type=int,
        default=1024,
        help="size of the large-file test in MiB (default 1024; 0 skips it)",
    )
    parser.add_argument(
        "--fsync-ops",
        type=int,
        default=200,
        help="operations in the fsync test (default 200; 0 skips it)",
    )
    parser.add_argument(
        "--skip-missing-wait",
        action="store_true",
        help="do not time FileJobStore's ~30 s wait for a missing job",
    )
    args = parser.parse_args(argv)

    report = Report("bench_local", "bench_local: FileJobStore vs local:")
    emit = report.emit
    verdicts = Verdicts()
    by_n: dict[int, dict[str, Run]] = {}
    with scratch_dir("jobstore-bench-", args.tmp) as base:
        spread = spread_subdirectories(base)
        emit(
            f"{NOTES}\nScratch directory {base}: {file_system(base)}; "
            f"stores spread over fresh inodes: {'yes' if spread else 'no'}."
        )
        inputs_dir = base / "inputs"
        inputs_dir.mkdir()
        small = []
        for i in range(16):
            path = inputs_dir / f"small{i}.dat"
            path.write_bytes(os.urandom(SMALL_FILE_BYTES))
            small.append(path)
        inputs = Inputs(small, os.urandom(STREAM_BYTES), os.urandom(SHARED_FILE_BYTES), base)

        file_missing_timed = args.skip_missing_wait
        for n in args.n:
            runs = by_n[n] = {kind: Run() for kind in KINDS}
            for rep in range(args.repeat):
                print(f"  N={n:,}: repeat {rep + 1} of {args.repeat}", file=sys.stderr, flush=True)
                bench_repeat(
                    base, f"-{n}-{rep}", n, args.files, inputs, runs, not file_missing_timed
                )
                file_missing_timed = True
            emit(job_table(n, runs, verdicts, report.results))
        if len(by_n) > 1:
            emit(scaling_table(by_n, verdicts))
        if args.large_mib > 0:
            size = args.large_mib * 2**20
            emit(large_table(size, bench_large(base, size, args.repeat), verdicts))
        if args.fsync_ops > 0:
            emit(
                fsync_table(
                    args.fsync_ops, bench_fsync(base, args.fsync_ops, small[0], args.repeat)
                )
            )
    return report.finish(verdicts)


if __name__ == "__main__":
    sys.exit(main())
