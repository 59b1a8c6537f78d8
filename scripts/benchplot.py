"""Draws the benchmarks' saved figures for the README: ``scripts/bench --plot DIR``.

Reads the newest JSON report of each module in ``bench-results/`` (what
:func:`benchutil.save_report` keeps beside each text report) and writes, in DIR:

* ``ratios.png``: Toil's store's time over ours for each operation, one panel
  per module, on a log scale with a line at 1x (right of it ours is faster);
  the bars are the ratios' 95% intervals, the colours the sizes measured;
* ``scaling.png``: cost per job against the number of jobs in the store,
  log-log, one panel per module and store with figures at two sizes or more, a
  line per operation: flat lines are costs that do not grow with the store.

A module without such figures gets no panel; a picture with no panel at all is
not written (and says so).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display needed

import matplotlib.pyplot as plt
from benchutil import RESULTS_DIR

Report = dict[str, Any]


def newest_reports(results: Path) -> list[Report]:
    """The newest report of each module in ``results``, by module name."""
    newest: dict[str, tuple[str, Report]] = {}
    for path in sorted(results.glob("*.json")):
        try:
            data = json.loads(path.read_text())
            module = data["module"]
        except (OSError, ValueError, KeyError, TypeError):
            print(f"benchplot: skipping {path}: not a benchmark report", file=sys.stderr)
            continue
        if module not in newest or data.get("when", "") >= newest[module][0]:
            newest[module] = (data.get("when", ""), data)
    return [newest[m][1] for m in sorted(newest)]


def caption(report: Report) -> str:
    load = report.get("load") or [float("nan")]
    return f"{report['module']}  ({report.get('when', '?')}, load {load[0]:.1f})"


def plot_ratios(reports: list[Report], path: Path) -> bool:
    """One panel per module with ratios; False when there are none."""
    panels = [r for r in reports if r.get("ratios")]
    if not panels:
        return False
    heights = [max(1.5, 0.28 * len({x["op"] for x in r["ratios"]}) + 1.0) for r in panels]
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(8, sum(heights)),
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    for ax, report in zip(axes[:, 0], panels, strict=True):
        ops = list(dict.fromkeys(x["op"] for x in report["ratios"]))
        sizes = sorted({x["n"] for x in report["ratios"]}, key=lambda n: (n is None, n or 0))
        for k, n in enumerate(sizes):
            rows = [x for x in report["ratios"] if x["n"] == n]
            offset = (k - (len(sizes) - 1) / 2) * 0.8 / max(len(sizes), 1)
            y = [ops.index(x["op"]) + offset for x in rows]
            ratio = [x["ratio"] for x in rows]
            errors = [
                [max(x["ratio"] - x["low"], 0) for x in rows],
                [max(x["high"] - x["ratio"], 0) for x in rows],
            ]
            label = f"N = {n:,}" if n is not None else "per operation"
            ax.errorbar(ratio, y, xerr=errors, fmt="o", capsize=2, markersize=4, label=label)
        ax.axvline(1.0, color="black", linewidth=1)
        ax.set_xscale("log")
        ax.set_yticks(range(len(ops)), ops, fontsize=8)
        ax.invert_yaxis()
        pairs = sorted({x["pair"] for x in report["ratios"]})
        ax.set_title(f"{caption(report)}: {', '.join(pairs)}", fontsize=9)
        ax.grid(axis="x", which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[-1, 0].set_xlabel("Toil's time / ours (log scale; > 1: ours faster)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_scaling(reports: list[Report], path: Path) -> bool:
    """One panel per module and store with costs at two sizes or more; False when none."""
    panels: list[tuple[Report, str, dict[str, list[tuple[int, float]]]]] = []
    for report in reports:
        by_store: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(
            lambda: defaultdict(list)
        )
        for c in report.get("costs", []):
            by_store[c["store"]][c["op"]].append((c["n"], c["seconds"]))
        for store, ops in by_store.items():
            curves = {
                op: sorted(points)
                for op, points in ops.items()
                if len({n for n, _ in points}) > 1 and all(s > 0 for _, s in points)
            }
            if curves:
                panels.append((report, store, curves))
    if not panels:
        return False
    # One colour per operation in every panel.
    ops = sorted({op for _, _, curves in panels for op in curves})
    palette = plt.get_cmap("tab10" if len(ops) <= 10 else "tab20")
    colour = {op: palette(i % palette.N) for i, op in enumerate(ops)}
    columns = min(2, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6 * columns, 4 * rows), squeeze=False)
    for ax, (report, store, curves) in zip(axes.flat, panels, strict=False):
        for op, points in curves.items():
            ax.plot(
                [n for n, _ in points],
                [s for _, s in points],
                "o-",
                label=op,
                markersize=3,
                color=colour[op],
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("jobs in the store")
        ax.set_ylabel("seconds per job")
        ax.set_title(f"{store} in {caption(report)}", fontsize=9)
        ax.grid(which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("out", type=Path, help="directory for ratios.png and scaling.png")
    parser.add_argument(
        "--results", type=Path, default=RESULTS_DIR, help=f"reports to draw (default {RESULTS_DIR})"
    )
    args = parser.parse_args(argv)
    reports = newest_reports(args.results)
    if not reports:
        print(
            f"benchplot: no JSON reports in {args.results}: run a benchmark first", file=sys.stderr
        )
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    drawn = 0
    for name, plot in (("ratios.png", plot_ratios), ("scaling.png", plot_scaling)):
        target = args.out / name
        if plot(reports, target):
            print(f"wrote {target}")
            drawn += 1
        else:
            print(f"benchplot: nothing for {name} in {args.results}", file=sys.stderr)
    return 0 if drawn else 1


if __name__ == "__main__":
    sys.exit(main())
