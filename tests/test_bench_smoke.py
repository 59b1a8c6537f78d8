"""The benchmarks run end to end at their tiniest sizes, and their figures can be drawn.

The workflow benchmark takes hours at full size and stays out of CI; this only
keeps it from rotting: one chain of one job on ``local:`` and ``s3:``, each
with the run ledger on and off, through the delaying, counting proxy. The
plots are drawn from what a tiny real run of ``bench_local`` saved.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_workflow_prints_its_tables(tmp_path: Path) -> None:
    command = [
        sys.executable,
        str(ROOT / "scripts" / "bench_workflow.py"),
        "--n=1",
        "--repeat=1",
        "--shapes=chain",
        "--pairs=ledger",
        "--delay-ms=1",
        f"--tmp={tmp_path}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "chain: a chain of 1 job(s), 1 jobs in all; 1 rounds" in out
    # Each store's row: a time, and on s3: the requests per job and the one attempt recorded.
    for store in ("local:", "local: no ledger", "s3: no ledger"):
        assert re.search(rf"^{store} +[\d.]+ m?s ", out, re.M), out
    assert re.search(r"^s3: +[\d.]+ m?s .* [\d.]+ +1$", out, re.M), out
    for pair in ("local: / local: no ledger", "s3: / s3: no ledger"):
        assert re.search(rf"^{pair} +[\d.]+x ", out, re.M), out
    assert "requests to ledger/ keys per attempt" in out
    assert "Targets missed:" in out


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG file; AssertionError if it is not one."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13, f"{path}: no PNG header chunk"
    width, height = struct.unpack(">II", data[16:24])
    assert data[-8:-4] == b"IEND", f"{path}: cut short"
    return width, height


def test_bench_plot_draws_ratios_and_scaling(tmp_path: Path) -> None:
    results = tmp_path / "results"
    env = dict(os.environ, JOBSTORE_BENCH_RESULTS=str(results))
    bench = [
        sys.executable,
        str(ROOT / "scripts" / "bench_local.py"),
        "--n=10,20",
        "--repeat=1",
        "--files=10",
        "--large-mib=0",
        "--fsync-ops=0",
        "--skip-missing-wait",
        f"--tmp={tmp_path}",
    ]
    done = subprocess.run(bench, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    (saved,) = results.glob("bench_local-*.json")
    figures = json.loads(saved.read_text())
    assert {c["n"] for c in figures["costs"]} == {10, 20}
    assert any(r["op"] == "create_job" and r["ratio"] > 0 for r in figures["ratios"])

    plots = tmp_path / "plots"
    plot = [sys.executable, str(ROOT / "scripts" / "benchplot.py"), str(plots)]
    done = subprocess.run(
        [*plot, f"--results={results}"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("ratios.png", "scaling.png"):
        width, height = png_size(plots / name)
        assert width >= 400 and height >= 200, (name, width, height)

    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run(
        [*plot, f"--results={empty}"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1 and "no JSON reports" in done.stderr
