"""The FUSE view of a ``local:`` store: reads, listings, stats and the daemon's memory.

Every figure comes from a real ``jobstore mount --foreground`` daemon read by
ordinary tools (``ls -l``, ``os.stat``, ``read()`` of 1 MiB) in other processes,
against the same store read through the Python API in this process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from benchutil import (
    Report,
    Samples,
    Table,
    Verdicts,
    arg_parser,
    file_system,
    fmt_bytes_rate,
    fmt_rate,
    fmt_ratio,
    fmt_seconds,
    scratch_dir,
)
from toil.common import Config
from toil.job import JobDescription

from jobstore import JobStore
from jobstore.mount import mount_device

JOBSTORE = os.path.join(os.path.dirname(sys.executable), "jobstore")
CHUNK = 2**20
#: Targets from the issue: read at least half the API's speed, `ls -l` of 10k jobs in
#: under a second, and a daemon under 150 MB after listing 100k jobs.
READ_RATIO_TARGET = 0.5
LS_JOBS = 10_000
LS_TARGET_S = 1.0
RSS_JOBS = 100_000
RSS_TARGET_MB = 150
NOTES = """\
How: one local: store per job count in a scratch directory, mounted by a fresh
`jobstore mount --foreground` daemon (default options: 1 s entry/attribute timeouts).
Large file: the API reads it with read_file_stream, the mount with read() of 1 MiB
through the kernel; "cold" is the first read after mounting (the stored file itself
is in the page cache for both), "warm" a read again while the kernel still caches the
file's pages (the daemon keeps them while the stored file is unchanged). ls -l: the
whole `ls -l MOUNT/jobs` command, first after mounting (cold) and again (warm; each
listing still reaches the daemon, the kernel does not cache directory contents).
stat: os.stat of every job's description.pickle, first time (a lookup in the
daemon per job) and of 500 of them again within the timeout (the kernel answers).
Peak RSS: the daemon's peak resident set (VmHWM) after the listings, and after the
stats too (an inode per file the kernel looked up)."""


@contextlib.contextmanager
def mounted(locator: str, mountpoint: Path) -> Iterator[int]:
    """A foreground daemon serving ``locator`` at ``mountpoint``; yields its pid."""
    mountpoint.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [JOBSTORE, "mount", locator, str(mountpoint), "--foreground", "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while mount_device(str(mountpoint)) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"could not mount {locator} at {mountpoint}")
            time.sleep(0.02)
        yield proc.pid
    finally:
        if mount_device(str(mountpoint)) is not None:
            subprocess.run([JOBSTORE, "umount", str(mountpoint)], check=False)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def new_store(root: Path, jobs: int) -> JobStore:
    store = JobStore(f"local:{root}")
    store.initialize(Config())
    with store.batch():
        for i in range(jobs):
            job = JobDescription(
                requirements={"memory": 2**20, "cores": 1, "disk": 2**20, "preemptible": False},
                jobName=f"bench{i % 10}",
            )
            store.assign_job_id(job)
            store.create_job(job)
    return store


def read_through(path: Path) -> float:
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.read(CHUNK):
            pass
    return time.perf_counter() - start


def read_api(store: JobStore, file_id: str) -> float:
    start = time.perf_counter()
    with store.read_file_stream(file_id) as f:
        while f.read(CHUNK):
            pass
    return time.perf_counter() - start


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for {pid}")


def timed_ls(directory: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["ls", "-l", str(directory)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def bench_large(base: Path, mib: int, repeat: int, verdicts: Verdicts) -> str:
    source = base / "large.bin"
    with open(source, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(CHUNK))
    store = new_store(base / "large-store", 0)
    file_id = store.write_file(str(source))
    source.unlink()
    api, cold, warm = Samples(), Samples(), Samples()
    for _ in range(repeat):
        with mounted(store.locator, base / "mnt") as _pid:
            path = base / "mnt" / "files" / file_id
            cold.add(read_through(path))
            api.add(read_api(store, file_id))
            warm.add(read_through(path))
    size = mib * CHUNK
    table = Table(
        f"Sequential read of a {mib} MiB stored file ({repeat} repeats, medians)",
        ["reader", "time", "throughput", "vs API", f">= {READ_RATIO_TARGET}x"],
    )
    table.row(
        "read_file_stream (API)",
        fmt_seconds(api.median),
        fmt_bytes_rate(size * api.rate),
        "1.00x",
        "",
    )
    for name, samples in (("mount, cold", cold), ("mount, warm", warm)):
        ratio = api.median / samples.median
        table.row(
            name,
            fmt_seconds(samples.median),
            fmt_bytes_rate(size * samples.rate),
            fmt_ratio(ratio),
            verdicts.check(f"{name} read at {ratio:.2f}x", ratio >= READ_RATIO_TARGET)
            if name.endswith("warm")
            else "",
        )
    return table.render()


def bench_jobs(base: Path, counts: list[int], repeat: int, verdicts: Verdicts) -> str:
    table = Table(
        f"Job listings and stats ({repeat} repeats of the warm figures, medians)",
        [
            "jobs",
            "ls -l cold",
            "ls -l warm",
            "peak RSS",
            "stat, first",
            "stat, cached",
            "peak RSS after",
        ],
    )
    for n in counts:
        print(f"  creating {n:,} jobs", file=sys.stderr, flush=True)
        store = new_store(base / f"jobs-{n}", n)
        mp = base / "mnt"
        with mounted(store.locator, mp) as pid:
            jobs = mp / "jobs"
            cold = timed_ls(jobs)
            warm = Samples()
            for _ in range(repeat):
                warm.add(timed_ls(jobs))
            listed_rss = peak_rss_mb(pid)
            paths = [jobs / j / "description.pickle" for j in store.job_ids()]
            first = Samples()
            with first.time(len(paths)):
                for p in paths:
                    os.stat(p)
            cached = Samples()
            sample = paths[:500]
            for _ in range(repeat):
                for p in sample:  # looked up just now, so within the kernel's timeout
                    os.stat(p)
                with cached.time(len(sample)):
                    for p in sample:
                        os.stat(p)
            rss = peak_rss_mb(pid)
        ls_note = ""
        if n == LS_JOBS:
            ls_note = " " + verdicts.check(
                f"ls -l of {n:,} jobs took {warm.median:.2f} s", warm.median < LS_TARGET_S
            )
        rss_note = ""
        if n == RSS_JOBS:
            rss_note = " " + verdicts.check(
                f"daemon peak RSS {listed_rss:.0f} MB after listing {n:,} jobs",
                listed_rss < RSS_TARGET_MB,
            )
        table.row(
            f"{n:,}",
            fmt_seconds(cold),
            fmt_seconds(warm.median) + ls_note,
            f"{listed_rss:.0f} MB{rss_note}",
            fmt_rate(first.rate),
            fmt_rate(cached.rate),
            f"{rss:.0f} MB",
        )
        store.destroy()
    return table.render()


def main(argv: list[str] | None = None) -> int:
    parser = arg_parser(__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--large-mib",
        type=int,
        default=1024,
        help="size of the large-file read in MiB (default 1024; 0 skips it)",
    )
    parser.add_argument(
        "--ls-jobs",
        type=int,
        default=LS_JOBS,
        help=f"also list this many jobs (default {LS_JOBS:,}; 0: only --n)",
    )
    parser.add_argument(
        "--rss-jobs",
        type=int,
        default=RSS_JOBS,
        help=f"also list this many jobs (default {RSS_JOBS:,}; 0: only --n)",
    )
    args = parser.parse_args(argv)

    report = Report("bench_mount", "bench_mount: the FUSE view of local:")
    emit = report.emit
    verdicts = Verdicts()
    with scratch_dir("jobstore-bench-mount-", args.tmp) as base:
        emit(f"{NOTES}\nScratch directory {base}: {file_system(base)}.")
        if args.large_mib > 0:
            emit(bench_large(base, args.large_mib, args.repeat, verdicts))
        counts = sorted({*args.n, *(c for c in (args.ls_jobs, args.rss_jobs) if c > 0)})
        emit(bench_jobs(base, counts, args.repeat, verdicts))
    return report.finish(verdicts)


if __name__ == "__main__":
    sys.exit(main())
