"""The workflow benchmark runs end to end and prints its tables (its tiniest size, once).

The benchmark itself takes hours at full size and stays out of CI; this only
keeps it from rotting: one chain of one job on ``local:`` and ``s3:``, each
with the run ledger on and off, through the delaying, counting proxy.
"""

from __future__ import annotations

import re
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
