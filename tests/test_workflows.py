"""Real Toil workflows on our stores: a leader process, ``_toil_worker`` processes, Toil's CLI.

Each run is a subprocess of its own, exactly as a user starts one, so the
``.pth`` hook, locator canonicalisation and cross-process visibility are all
exercised for real. One workflow (``workflows/pipeline.py``) covers children,
follow-ons and promises, global files, import/export, a retried job, job logs
and a failed run finished with ``--restart``; ``toil-cwl-runner`` runs a CWL
tool. The tests keep the number of Toil start-ups small because each costs seconds.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from toil.jobStores.abstractJobStore import NoSuchJobStoreException

from jobstore import JobStore, layout

WORKFLOWS = Path(__file__).parent / "workflows"
VENV_BIN = os.path.dirname(sys.executable)
JOBSTORE = os.path.join(VENV_BIN, "jobstore")
RUN_TIMEOUT = 180
COMMON_OPTIONS = [
    "--logLevel=INFO",
    "--batchSystem=single_machine",
    "--maxCores=2",
    "--retryCount=1",
]


def _env() -> dict[str, str]:
    """Our environment (moto's endpoint included), with _toil_worker and toil on PATH."""
    return {**os.environ, "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", "")}


def run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT
    )
    if check and proc.returncode != 0:
        pytest.fail(f"{args} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def pipeline(
    locator: str, workdir: Path, *extra: str, cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    script = str(WORKFLOWS / "pipeline.py")
    args = [sys.executable, script, locator, f"--workdir={workdir}", f"--workDir={workdir}"]
    return run([*args, *COMMON_OPTIONS, *extra], cwd=cwd or workdir, check=check)


def toil_cli(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([os.path.join(VENV_BIN, "toil"), *args], cwd=cwd, check=check)


def prepare(workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    script = workdir / "input.sh"
    script.write_text("echo imported script\n")
    script.chmod(0o700)


def test_failed_run_restart_status_clean(store_locator: str, tmp_path: Path) -> None:
    """The whole life of a workflow: fail, inspect, restart to success, inspect, clean.

    Also Toil's tools on our store: status, debug-job, stats, clean.
    """
    workdir = tmp_path / "work"
    prepare(workdir)

    # 1. The gate is closed: 'gated' fails on both tries, 'flaky' fails once and then succeeds.
    first = pipeline(store_locator, workdir, "--stats", check=False)
    assert first.returncode != 0, first.stderr
    output = first.stdout + first.stderr
    assert "FailedJobsException" in output
    # The failed job's log travelled through the store to the leader.
    assert "gate is closed: this job fails on purpose" in output
    assert (workdir / "attempts").read_text() == "2"

    status = toil_cli(
        "status", "--failed", "--failIfNotComplete", store_locator, cwd=workdir, check=False
    )
    assert status.returncode == 1, status.stdout + status.stderr
    assert "1 completely failed jobs" in status.stdout
    assert "gated" in status.stdout + status.stderr
    # debug-job finds the failed job by name in the store and runs it again, here.
    debug = toil_cli("debug-job", store_locator, "gated", cwd=workdir, check=False)
    assert "gate is closed: this job fails on purpose" in debug.stdout + debug.stderr

    # 2. Open the gate and finish the same workflow.
    (workdir / "gate").write_text("gate opened before the restart")
    second = pipeline(store_locator, workdir, "--restart", "--clean=never", "--stats")
    result = json.loads((workdir / "result.json").read_text())
    assert result["text"] == "written by a child job"  # a global file, across jobs
    assert result["length"] == len("written by a child job")  # an indexed promise
    assert result["attempts"] == 2  # the retried job's promise survived the restart
    assert result["gate"] == "gate opened before the restart"
    assert "combine job saw 'written by a child job'" in second.stdout + second.stderr

    exported_input = workdir / "export" / "input.sh"
    assert exported_input.read_text() == "echo imported script\n"
    assert exported_input.stat().st_mode & stat.S_IXUSR
    exported_output = workdir / "export" / "output.sh"
    assert exported_output.read_text().endswith("echo imported script\n")
    assert exported_output.stat().st_mode & stat.S_IXUSR
    assert (
        subprocess.run([str(exported_output)], capture_output=True, text=True, timeout=10).stdout
        == "imported script\n"
    )

    store = JobStore(store_locator)
    store.resume()
    assert store.file_exists(result["output_id"])
    assert list(store.job_ids()) == []  # every job finished and was deleted

    done = toil_cli("status", "--failIfNotComplete", store_locator, cwd=workdir)
    assert "0 completely failed jobs" in done.stdout
    # toil stats re-reads every stats message of both runs (read_logs(read_all=True)).
    stats = json.loads(toil_cli("stats", "--raw", store_locator, cwd=workdir).stdout)
    runs = {
        name.rsplit(".", 1)[-1]: int(t["total_number"]) for name, t in stats["job_types"].items()
    }
    # gated: two tries in the failed run, one under debug-job, one after the restart.
    assert runs == {"root": 1, "produce": 1, "flaky": 2, "gated": 4, "combine": 1}

    # 3. toil clean removes the store: the API no longer finds it.
    toil_cli("clean", store_locator, cwd=workdir)
    with pytest.raises(NoSuchJobStoreException):
        JobStore(store_locator).resume()
    if store_locator.startswith("local:"):
        assert not os.path.exists(store_locator.removeprefix("local:"))


def test_relative_local_locator_reaches_workers_absolute(tmp_path: Path) -> None:
    """``local:rel/store`` on the leader's command line reaches workers as an absolute path."""
    workdir = tmp_path / "work"
    prepare(workdir)
    (workdir / "gate").write_text("open")
    (workdir / "attempts").write_text("1")  # no failure, no retry back-off: just the locator
    pipeline("local:rel/store", workdir, "--clean=never", cwd=tmp_path)

    store_dir = tmp_path / "rel" / "store"
    result = json.loads((workdir / "result.json").read_text())
    assert result["worker_argv_locator"] == f"local:{store_dir}"
    assert result["attempts"] == 2
    store = JobStore(f"local:{store_dir}")
    store.resume()
    assert store.file_exists(result["output_id"])


def test_cwl_runner(store_locator: str, tmp_path: Path) -> None:
    """``toil-cwl-runner --jobStore <our locator>`` imports, runs, exports and cleans up."""
    (tmp_path / "in.txt").write_text("hello cwl\n")
    (tmp_path / "job.yml").write_text("text:\n  class: File\n  path: in.txt\n")
    proc = run(
        [
            os.path.join(VENV_BIN, "toil-cwl-runner"),
            "--jobStore",
            store_locator,
            "--outdir",
            str(tmp_path / "out"),
            *COMMON_OPTIONS,
            str(WORKFLOWS / "wc.cwl"),
            "job.yml",
        ],
        cwd=tmp_path,
    )
    outputs = json.loads(proc.stdout)
    assert outputs["count"]["size"] == 3
    assert (tmp_path / "out" / "count.txt").read_text().strip() == "10"
    with pytest.raises(NoSuchJobStoreException):  # removed after the successful run
        JobStore(store_locator).resume()


def test_damaged_store_restarts(store_locator: str, tmp_path: Path) -> None:
    """Stray objects do not stop ``toil status`` or ``--restart``; a corrupt job does, by name.

    Then ``jobstore fsck`` finds exactly the strays planted in the real run's store, and
    ``--repair`` sets them aside.
    """
    workdir = tmp_path / "work"
    prepare(workdir)
    first = pipeline(store_locator, workdir, check=False)
    assert first.returncode != 0, first.stderr

    store = JobStore(store_locator)
    store.resume()
    strays = ["files/@job/stray", "jobs/stray", "jobs/000/not-a-job"]
    for key in strays:
        store.backend.put_bytes(key, b"stray bytes")

    status = toil_cli("status", "--failed", store_locator, cwd=workdir, check=False)
    output = status.stdout + status.stderr
    assert "1 completely failed jobs" in status.stdout, output
    assert "Traceback" not in output  # toil status walks the graph from the root: no listing

    # A corrupt job stops the restart with its key and ID, before anything is changed.
    (gated,) = [j for j in store.jobs() if j.jobName.endswith("gated")]
    key = layout.job_key(gated.jobStoreID)
    original = store.backend.get_bytes(key)
    store.backend.put_bytes(key, original[:20])
    (workdir / "gate").write_text("gate opened before the restart")
    refused = pipeline(store_locator, workdir, "--restart", check=False)
    assert refused.returncode != 0
    assert f"corrupt job {gated.jobStoreID} at key {key!r}" in refused.stdout + refused.stderr
    store.backend.put_bytes(key, original)

    second = pipeline(store_locator, workdir, "--restart", "--clean=never")
    output = second.stdout + second.stderr
    for key in strays:
        assert output.count(repr(key)) == 1, (key, output)  # one warning per key and process
    assert json.loads((workdir / "result.json").read_text())["gate"].startswith("gate opened")
    toil_cli("status", "--failIfNotComplete", store_locator, cwd=workdir)

    found = run([JOBSTORE, "fsck", store_locator], cwd=workdir, check=False)
    assert found.returncode == 1
    assert sorted(
        line.split(" ", 2)[1].rstrip(":") for line in found.stdout.splitlines()[:-1]
    ) == sorted(strays), found.stdout
    run([JOBSTORE, "fsck", "--repair", store_locator], cwd=workdir)
    assert run([JOBSTORE, "fsck", store_locator], cwd=workdir).stdout.startswith("clean:")

    store.backend.put_bytes("jobs/stray-again", b"stray bytes")
    toil_cli("clean", store_locator, cwd=workdir)
    with pytest.raises(NoSuchJobStoreException):
        JobStore(store_locator).resume()


#: File names that CWL's carriers (``toilfile:`` URLs, locations, command lines) break on.
AWKWARD_NAMES = ["item #1.txt", "a?b.txt", "50%.txt", "sp ace.txt", "été.txt"]


def test_cwl_runner_awkward_file_names(store_locator: str, tmp_path: Path) -> None:
    """Inputs named with '#', '?', '%', a space and accents reach the tool; outputs so named
    come back (Toil's own ``file:`` store passes this very run).

    CWL's conformance test ``filename_with_hash_mark``, widened: a '#' in a file ID once
    cut every ``toilfile:`` location short (``KeyError: 'toilfile:...item '``).
    """
    inputs = tmp_path / "in"
    inputs.mkdir()
    job = ["files:"]
    for name in AWKWARD_NAMES:
        (inputs / name).write_text(f"content of {name}\n")
        # As in CWL's octo.yml: a location is a URL, quoted ("item %231.txt").
        job += ["  - class: File", f"    location: {json.dumps('in/' + quote(name))}"]
    (tmp_path / "job.yml").write_text("\n".join(job) + "\n")
    out = tmp_path / "out"
    proc = run(
        [
            os.path.join(VENV_BIN, "toil-cwl-runner"),
            "--jobStore",
            store_locator,
            "--outdir",
            str(out),
            *COMMON_OPTIONS,
            "--relax-path-checks",  # cwltool's strict mode refuses these names itself
            str(WORKFLOWS / "names.cwl"),
            "job.yml",
        ],
        cwd=tmp_path,
    )
    outputs = json.loads(proc.stdout)
    expected_index = "".join(f"{name}=content of {name}\n" for name in AWKWARD_NAMES)
    assert (out / "index.out").read_text() == expected_index
    copies = sorted(f"copy of {name}" for name in AWKWARD_NAMES)
    assert sorted(c["basename"] for c in outputs["copies"]) == copies
    for name in AWKWARD_NAMES:
        assert (out / f"copy of {name}").read_text() == f"content of {name}\n"
