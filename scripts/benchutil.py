"""Small shared helpers for the ``scripts/bench_*.py`` benchmarks.

``scripts/bench`` runs every ``scripts/bench_<name>.py`` present as a script,
passing the same command line, so all of them parse it with :func:`arg_parser`
(``--n``, ``--repeat``, ``--tmp``, plus options of their own) and report the
same way:

* time a block of ``ops`` operations with :class:`Samples` (one sample per
  repeat, stored as seconds per operation; :class:`Stopwatch` sums many short
  blocks) and quote the median, because the machine is shared and single runs
  are noisy;
* compare two ``Samples`` with :func:`speedup` (> 1 means the first is faster),
  or paired measurements with :func:`median_interval`, and print ratios with
  :func:`fmt_ratio` (rates and times with :func:`fmt_rate`, :func:`fmt_seconds`,
  :func:`fmt_bytes_rate`);
* work in :func:`scratch_dir`; say where and when with :func:`file_system` and
  :func:`machine_note`; on ext4, :func:`spread_subdirectories` keeps stores
  from inheriting each other's freed inodes;
* lay results out with :class:`Table` and keep a copy with :func:`save_report`,
  with the figures that matter in :class:`Results` (saved as JSON beside the
  text, which ``scripts/bench --plot`` draws).

The helpers use only the standard library, so a benchmark's own imports decide
what it measures.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import datetime
import fcntl
import json
import math
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: Where :func:`save_report` keeps reports (git-ignored); JOBSTORE_BENCH_RESULTS moves them.
RESULTS_DIR = Path(
    os.environ.get("JOBSTORE_BENCH_RESULTS")
    or Path(__file__).resolve().parent.parent / "bench-results"
)


class Samples:
    """Per-operation times of one measurement, one sample per repeat."""

    def __init__(self) -> None:
        self.per_op: list[float] = []

    @contextlib.contextmanager
    def time(self, ops: int = 1) -> Iterator[None]:
        """Time the block as one sample of ``ops`` operations."""
        start = time.perf_counter()
        yield
        self.add(time.perf_counter() - start, ops)

    def add(self, seconds: float, ops: int = 1) -> None:
        """Record ``seconds`` spent on ``ops`` operations (for blocks timed piecewise)."""
        if ops <= 0:
            raise ValueError("a sample needs at least one operation")
        self.per_op.append(seconds / ops)

    @property
    def median(self) -> float:
        """Median seconds per operation over the repeats."""
        if not self.per_op:
            raise ValueError("no samples recorded")
        return statistics.median(self.per_op)

    @property
    def rate(self) -> float:
        """Operations per second at the median."""
        return 1.0 / self.median if self.median > 0 else float("inf")


class Stopwatch:
    """Accumulates time over many short timed blocks, leaving untimed work between them out."""

    def __init__(self) -> None:
        self.seconds = 0.0

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start


def speedup(ours: Samples, theirs: Samples) -> float:
    """How many times faster ``ours`` is than ``theirs`` (> 1: ours is faster)."""
    return theirs.median / ours.median if ours.median > 0 else float("inf")


def median_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """A distribution-free confidence interval for the median of ``values``.

    The usual order-statistic interval (binomial ranks): it assumes nothing
    about the shape of the noise. With fewer than six values it cannot reach
    95% and is the full range.
    """
    xs = sorted(values)
    if not xs:
        raise ValueError("no values")
    n = len(xs)

    def cdf(k: int) -> float:  # P(Binomial(n, 1/2) <= k)
        return sum(math.comb(n, i) for i in range(k + 1)) / 2**n

    r = 0  # 1-based rank of the lower bound: the largest with P(B <= r - 1) <= alpha / 2
    while r < n // 2 and 2 * cdf(r) <= 1 - confidence:
        r += 1
    lo = max(r - 1, 0)
    return xs[lo], xs[n - 1 - lo]


def fmt_rate(per_second: float, unit: str = "/s") -> str:
    """``3.4k/s``-style rates: three significant digits, k/M suffixes."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if per_second >= scale:
            return f"{per_second / scale:.3g}{suffix}{unit}"
    return f"{per_second:.3g}{unit}"


def fmt_seconds(seconds: float) -> str:
    """A duration with the unit that keeps it readable (ns to s)."""
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def fmt_bytes_rate(bytes_per_second: float) -> str:
    return f"{bytes_per_second / 2**20:.0f} MiB/s"


def fmt_ratio(ratio: float) -> str:
    return f"{ratio:.2f}x"


class Table:
    """A plain-text table: left-aligned first column, right-aligned others."""

    def __init__(self, title: str, columns: Sequence[str]) -> None:
        self.title = title
        self.columns = list(columns)
        self.rows: list[list[str]] = []

    def row(self, *cells: object) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        self.rows.append([str(c) for c in cells])

    def render(self) -> str:
        widths = [
            max(len(r[i]) for r in [self.columns, *self.rows]) for i in range(len(self.columns))
        ]

        def line(cells: Sequence[str]) -> str:
            first, *rest = (
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            return "  ".join([first, *rest]).rstrip()

        rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
        return "\n".join([self.title, rule, line(self.columns), rule, *map(line, self.rows), rule])


def arg_parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark module accepts (``scripts/bench`` passes them to all)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--n",
        type=_int_list,
        default=[2000],
        metavar="N[,N...]",
        help="job counts to run at, comma-separated (default 2000; the full run is 2000,100000)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="repeats per measurement; tables quote the median (default 3)",
    )
    parser.add_argument(
        "--tmp",
        default=None,
        help="directory for scratch stores (default: the system temporary directory)",
    )
    return parser


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}"
        ) from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"need positive integers: {text!r}")
    return values


@contextlib.contextmanager
def scratch_dir(prefix: str, parent: str | None = None) -> Iterator[Path]:
    """A fresh directory, removed afterwards; stores compared in one run share its file system."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_FS_TOPDIR_FL = 0x00020000


def spread_subdirectories(path: Path) -> bool:
    """Mark ``path`` as a top of directory hierarchies (``chattr +T``); True if that worked.

    ext4 then places each subdirectory in a block group of its own choosing
    (the Orlov allocator) instead of next to its parent, so each store starts
    on fresh inodes. Without it, stores and repeats share one group, and on
    ext4 without a journal every inode allocation there scans past all inodes
    freed in the last minutes (``recently_deleted`` in fs/ext4/ialloc.c):
    whichever store or repeat runs after another's deletions pays for them.
    Other file systems ignore or reject the flag; that is fine.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        flags = array.array("i", [0])  # the kernel reads an int, whatever the ioctl's name says
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags, True)
        flags[0] |= _FS_TOPDIR_FL
        fcntl.ioctl(fd, _FS_IOC_SETFLAGS, flags)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def file_system(path: Path) -> str:
    """The file system holding ``path``, as /proc/mounts describes it (type, device, options)."""
    best = ("", "unknown file system")
    with contextlib.suppress(OSError), open("/proc/mounts") as mounts:
        for line in mounts:
            device, mount_point, fs_type, options = line.split()[:4]
            inside = str(path.resolve()).startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) >= len(best[0]):
                best = (mount_point, f"{fs_type} on {device} ({options})")
    return best[1]


def machine_note() -> str:
    """One line on the conditions a result was measured under."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    now = datetime.datetime.now().isoformat(timespec="seconds")
    return f"{now}  cpus={os.cpu_count()}  load={load}"


@dataclass
class Verdicts:
    """Targets met or missed; a ratio is "within noise" when its interval reaches the target."""

    missed: list[str] = field(default_factory=list)
    noisy: list[str] = field(default_factory=list)

    def check(self, what: str, ok: bool) -> str:
        if not ok:
            self.missed.append(what)
        return "ok" if ok else "MISS"

    def check_ratio(self, what: str, ratios: list[float], target: float) -> tuple[str, str]:
        """The verdict on the median of paired ratios, and the ratio with its 95% interval."""
        ratio = statistics.median(ratios)
        lo, hi = median_interval(ratios)
        shown = f"{fmt_ratio(ratio)} ({lo:.2f}-{hi:.2f})"
        if ratio >= target:
            return "ok", shown
        if hi >= target:
            self.noisy.append(f"{what}: {shown}")
            return "~", shown
        self.missed.append(f"{what}: {shown}")
        return "MISS", shown


@dataclass
class Ratio:
    """One comparison of ours with Toil's: ``theirs`` time over ``ours`` (above 1: ours faster)."""

    op: str
    n: int | None
    ratio: float
    low: float
    high: float
    pair: str


@dataclass
class Cost:
    """What one operation cost one store per job (or per operation) at ``n`` jobs."""

    store: str
    op: str
    n: int
    seconds: float


@dataclass
class Results:
    """A report's figures in numbers, kept as JSON beside its text for ``scripts/bench --plot``."""

    ratios: list[Ratio] = field(default_factory=list)
    costs: list[Cost] = field(default_factory=list)

    def ratio(self, op: str, n: int | None, values: Sequence[float], pair: str) -> None:
        """Keep the median of paired ratios ``values`` and its 95% interval."""
        lo, hi = median_interval(values)
        self.ratios.append(Ratio(op, n, statistics.median(values), lo, hi, pair))

    def cost(self, store: str, op: str, n: int, seconds: float) -> None:
        self.costs.append(Cost(store, op, n, seconds))


class Report:
    """A benchmark's report: printed as it grows, and saved whole by :meth:`finish`."""

    def __init__(self, name: str, title: str) -> None:
        self.name = name
        self.results = Results()
        self.parts = [f"{title}  {machine_note()}\n"]
        print(self.parts[0], flush=True)

    def emit(self, text: str) -> None:
        print(text + "\n", flush=True)
        self.parts.append(text + "\n")

    def finish(self, verdicts: Verdicts) -> int:
        """Close with the targets missed (and those within noise); print where it is saved."""
        if verdicts.noisy:
            self.emit(
                "Within noise (median below the target, its 95% interval reaching it):\n"
                + "\n".join(f"  - {m}" for m in verdicts.noisy)
            )
        if verdicts.missed:
            self.emit("Targets missed:\n" + "\n".join(f"  - {m}" for m in verdicts.missed))
        else:
            self.emit("No target missed.")
        print(f"report saved to {save_report(self.name, ''.join(self.parts), self.results)}")
        return 0


def save_report(name: str, text: str, results: Results | None = None) -> Path:
    """Keep a copy of a printed report in ``bench-results/`` for later comparison.

    With ``results``, their figures go to a JSON file of the same name beside it.
    """
    RESULTS_DIR.mkdir(exist_ok=True)
    now = datetime.datetime.now()
    path = RESULTS_DIR / f"{name}-{now.strftime('%Y%m%d-%H%M%S')}.txt"
    path.write_text(text + "\n")
    if results is not None:
        data = {
            "module": name,
            "when": now.isoformat(timespec="seconds"),
            "cpus": os.cpu_count(),
            "load": list(os.getloadavg()),
            "ratios": [asdict(r) for r in results.ratios],
            "costs": [asdict(c) for c in results.costs],
        }
        path.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    return path
