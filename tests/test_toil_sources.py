"""The view's sources over Toil's own stores, read back against Toil's own API.

Stores are written by real Toil runs of ``workflows/toilstore.py`` (files every
way Toil writes them, hints, shared files, job logs, a failed job so the store
is kept, a follow-on waiting for it), on ``file:`` and on ``aws:`` against the
moto server. Every source method is checked against what Toil's own API says
of the same store, and a whole session of reading must leave the store as it
was, byte for byte and time for time, except the kill flag when it is set.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from toil.common import Config
from toil.jobStores.abstractJobStore import AbstractJobStore
from toil.jobStores.fileJobStore import FileJobStore

from jobstore.backend import VersionGone
from jobstore.mount.source import Corrupt, Kind, Missing
from jobstore.mount.toil_sources import NoToilStore, ToilStoreSource, open_toil_source
from jobstore.mount.view import render_description
from jobstore.run import RunMemo
from tests.faultproxy import FaultProxy
from tests.mountutil import Mount
from tests.test_workflows import _env

WORKFLOW = Path(__file__).parent / "workflows" / "toilstore.py"
RUNVIEW_WORKFLOW = Path(__file__).parent / "workflows" / "runview.py"
RUN_TIMEOUT = 150
OPTIONS = [
    "--batchSystem=single_machine",
    "--maxCores=2",
    "--retryCount=0",
    "--clean=never",
    "--logLevel=INFO",
]
Path_ = tuple[str, ...]


def run_toilstore(
    locator: str, workdir: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The workflow on ``locator``; it fails (doomed does), leaving its store."""
    workdir.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, str(WORKFLOW), locator, "--out", str(workdir / "ids.json")]
    return subprocess.run(
        [*args, *OPTIONS, *extra],
        cwd=workdir,
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


@dataclass
class Written:
    """A store a finished (failed) run left, and what the run says it wrote."""

    locator: str
    ids: dict[str, str]
    toil: AbstractJobStore
    encrypted: bool = False


def _written(
    locator: str, workdir: Path, *extra: str, env: dict[str, str] | None = None
) -> Written:
    proc = run_toilstore(locator, workdir, *extra, env=env)
    assert proc.returncode != 0, "doomed must fail the run"
    assert "doomed always fails" in proc.stdout + proc.stderr
    from toil.common import Toil

    toil = Toil.getJobStore(locator)
    toil.resume()
    return Written(locator, json.loads((workdir / "ids.json").read_text()), toil)


# ============================================================ a session


@dataclass
class Session:
    """Everything one source shows, read through every method."""

    jobs: dict[str, bytes]
    files: dict[Path_, bytes]
    executable: set[Path_]
    shared: dict[str, bytes]
    logs: list[tuple[str, bytes]]


def read_everything(source: ToilStoreSource) -> Session:
    """Every job, file, shared file and log through the source, checking its methods agree."""
    jobs: dict[str, bytes] = {}
    for segment in range(source.job_segments()):
        for seg, name in source.job_names(segment):
            assert seg >= segment and "/" not in name and name not in jobs
            job_id = source.job_id(name)
            assert source.job_name(job_id) == name
            info, data = source.job_bytes(job_id)
            assert source.job_info(job_id) == info
            assert info.size == len(data)
            assert render_description(source.job_from_bytes(job_id, data))
            jobs[job_id] = data
        if segment == 0:
            break  # segment 0 went through them all
    files: dict[Path_, bytes] = {}
    executable: set[Path_] = set()

    def walk(path: Path_) -> None:
        names = [e.name for e in source.listdir(Kind.FILES, path)]
        assert names == sorted(names)
        for e in source.listdir(Kind.FILES, path):
            sub = (*path, e.name)
            info = source.stat(Kind.FILES, sub)
            if e.is_dir:
                assert info is None
                walk(sub)
                continue
            assert info is not None
            files[sub] = _read(source, Kind.FILES, sub)
            if info.executable:
                executable.add(sub)

    walk(())
    shared = {
        e.name: _read(source, Kind.SHARED, (e.name,)) for e in source.listdir(Kind.SHARED, ())
    }
    logs = [(e.name, _read(source, Kind.LOGS, (e.name,))) for e in source.listdir(Kind.LOGS, ())]
    source.kill_flag()
    source.read_run(RunMemo())
    return Session(jobs, files, executable, shared, logs)


def _read(source: ToilStoreSource, kind: Kind, path: Path_) -> bytes:
    """The object's bytes, also read from an offset pinned to the version first opened."""
    info = source.stat(kind, path)
    assert info is not None
    with source.open(kind, path) as (opened, f):
        data = f.read()
    assert opened.size == len(data) and opened.version == info.version
    if data:
        with source.open(kind, path, start=len(data) // 2, version=opened.version) as (again, f):
            assert again == opened and f.read() == data[len(data) // 2 :]
    with source.open(kind, path, start=len(data), version=opened.version) as (again, f):
        assert again == opened and f.read() == b""  # from the very end: nothing, same version
    return data


def check_against_toil(source: ToilStoreSource, written: Written, session: Session) -> None:
    """What the source showed is what Toil's own API says of the store."""
    toil = written.toil
    # Jobs: each Toil lists, with the same description; no other.
    toil_jobs = {str(j.jobStoreID): j for j in toil.jobs()}
    assert set(session.jobs) == set(toil_jobs)
    assert {j.jobName for j in toil_jobs.values()} >= {"doomed", "blocked"}
    for job_id, data in session.jobs.items():
        assert render_description(source.job_from_bytes(job_id, data)) == render_description(
            toil_jobs[job_id]
        )
    # Files: each ID the run wrote shows where file_path says, with Toil's bytes.
    for label, file_id in written.ids.items():
        path = source.file_path(file_id)
        assert path in session.files, (label, file_id, path)
        with toil.read_file_stream(file_id) as f:
            assert session.files[path] == f.read(), label
    if source.locator.startswith("file:"):
        assert session.executable == {source.file_path(written.ids["script"])}
    else:
        assert not session.executable  # AWSJobStore keeps executability in the FileID only
    assert source.file_path(written.ids["hinted"])[-1] == "a.bam"
    assert source.file_path(written.ids["hinted_again"])[-1] == "a.bam"
    # Every file shown is one Toil has (the failed job's log among them).
    for path, data in session.files.items():
        file_id = file_id_of(source, path)
        assert toil.file_exists(file_id), path
        with toil.read_file_stream(file_id) as f:
            assert f.read() == data
    logged = [j.logJobStoreFileID for j in toil_jobs.values() if j.logJobStoreFileID]
    assert logged, "the failed job's log is in the store"
    for log_id in logged:
        assert source.file_path(log_id) in session.files
    # Deleted hinted files leave tombstones, which are not files.
    hinted = source.file_path(written.ids["hinted"])
    hint_dir = hinted[: hinted.index("align")]  # .../sample1
    assert "deleted" not in [e.name for e in source.listdir(Kind.FILES, hint_dir)]
    with pytest.raises(Missing):
        source.stat(Kind.FILES, (*hint_dir, "deleted"))
    # Shared files: Toil's, with Toil's bytes.
    assert {"config.pickle", "rootJobStoreID", "pid.log", "my_shared.txt"} <= set(session.shared)
    for name, data in session.shared.items():
        with toil.read_shared_file_stream(name) as f:
            assert f.read() == data, name
    # Log messages: names in order, one carrying the job's messages.
    names = [name for name, _ in session.logs]
    assert names == sorted(names) and len(names) >= 2
    assert any(b"root wrote its files" in data for _, data in session.logs)
    # The run.
    run = source.read_run(RunMemo())
    states = Counter((job.name, job.state) for job in run.jobs.values())
    # Toil chains doomed into root's ID: the failed description carries either name.
    assert sum(n for (_, state), n in states.items() if state == "failed") == 1, states
    assert states[("doomed", "failed")] + states[("root", "failed")] == 1, states
    assert states[("blocked", "waiting")] == 1
    assert run.finished is False and run.killflag is False
    assert run.workflow_id == toil.config.workflowID
    assert run.leader.pid == toil.read_leader_pid()
    assert run.leader.alive is False  # the leader ran here and exited
    assert run.leader.since_ns == source.pid_written_ns() is not None


def file_id_of(source: ToilStoreSource, path: Path_) -> str:
    """The file ID a path under ``files/`` stands for (the inverse of ``file_path``)."""
    joined = "/".join(path)
    file_id = quote(joined) if source.locator.startswith("file:") else joined
    assert source.file_path(file_id) == path
    return file_id


def check_toil_logs(session: Session, read_all: Callable[..., int]) -> None:
    """The log messages are those Toil's ``read_logs(read_all=True)`` reads (a write: last)."""
    seen: list[bytes] = []
    read_all(lambda f: seen.append(f.read()), read_all=True)
    assert Counter(seen) == Counter(data for _, data in session.logs)


def check_bad_names(source: ToilStoreSource) -> None:
    for name in ("", ".", "..", "a/b", "nope", "kind-x+..", "kind-x+instance-y/z"):
        with pytest.raises(Missing):
            source.job_info(source.job_id(name))
    for kind in Kind:
        for path in (("..",), ("nope", "x"), ("",), (".",)):
            with pytest.raises(Missing):
                source.stat(kind, path)
            with pytest.raises(Missing), source.open(kind, path):
                pass


# ============================================================== file:


def snapshot_dir(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every file's digest, size, mode and times, every directory's names and times."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        st = os.lstat(dirpath)
        rel = os.path.relpath(dirpath, root)
        out[rel + "/"] = (sorted(dirnames + filenames), st.st_mtime_ns, st.st_mode)
        for name in filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            out[os.path.join(rel, name)] = (digest, st.st_size, st.st_mode, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def file_store(tmp_path_factory: pytest.TempPathFactory) -> Written:
    workdir = tmp_path_factory.mktemp("toil-file")
    return _written(f"file:{workdir / 'store'}", workdir)


def read_back(
    written: Written,
    snapshot: Callable[[], dict[str, Any]],
    kill_flag_changes: set[str],
    read_logs: Callable[..., int],
) -> None:
    """A whole session through the source: what Toil says, and the store unchanged by it."""
    before = snapshot()
    source = open_toil_source(written.locator)
    session = read_everything(source)
    check_bad_names(source)
    assert snapshot() == before, "reading changed the store"
    check_against_toil(source, written, session)

    # The kill flag is the one thing a source writes, through Toil.
    source.set_kill_flag(True)
    assert source.kill_flag() is True and written.toil.read_kill_flag() is True
    after = snapshot()
    assert {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)} == (
        kill_flag_changes
    )
    source.set_kill_flag(False)
    assert source.kill_flag() is False and written.toil.read_kill_flag() is False
    check_toil_logs(session, read_logs)


def test_file_store_read_back_against_toil(file_store: Written) -> None:
    root = Path(file_store.locator.removeprefix("file:"))
    source = open_toil_source(file_store.locator)
    assert all("+instance-" in name for _, name in source.job_names(0))
    shown = {e.name for e in source.listdir(Kind.SHARED, ())}
    assert shown == set(os.listdir(root / "shared"))  # no temporary file left after the run

    def read_logs_of_a_copy(callback: Callable[..., Any], read_all: bool) -> int:
        """Toil's read_logs moves what it reads: on a copy."""
        copy = root.parent / f"copy-{uuid.uuid4().hex}"
        shutil.copytree(root, copy, symlinks=True)
        toil_copy = FileJobStore(str(copy))
        toil_copy.resume()
        return int(toil_copy.read_logs(callback, read_all=read_all))

    read_back(
        file_store,
        lambda: snapshot_dir(root),
        {"shared/_toil_kill_flag", "shared/"},
        read_logs_of_a_copy,
    )


def test_file_store_missing_or_bad_locators(tmp_path: Path) -> None:
    for locator in (
        f"file:{tmp_path / 'nothing'}",
        f"file:{tmp_path}",
        "local:/x",
        "file:",
        "nonsense",
    ):
        with pytest.raises(NoToilStore) as e:
            open_toil_source(locator)
        assert "\n" not in str(e.value)
    assert not os.listdir(tmp_path)


def test_file_store_reads_never_tear(tmp_path: Path) -> None:
    """Files rewritten (update_file_stream) and jobs rewritten (update_job) while read."""
    from toil.job import JobDescription

    toil = FileJobStore(str(tmp_path / "store"))
    toil.initialize(Config())
    toil.write_leader_pid()
    job = JobDescription(requirements={"memory": 1, "cores": 1, "disk": 1}, jobName="rewritten")
    toil.assign_job_id(job)
    toil.create_job(job)
    with toil.write_file_stream(hints=["h"], basename="v.txt") as (f, file_id):
        f.write(b"0" * 100_000)
    source = open_toil_source(toil.locator if ":" in toil.locator else f"file:{toil.locator}")
    path = source.file_path(file_id)
    versions = {b"0" * 100_000}
    stop = threading.Event()

    def rewrite() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            data = str(n % 10).encode() * (100_000 + n % 7 * 1000)
            versions.add(data)
            with toil.update_file_stream(file_id) as f:
                f.write(data)
            job.remainingTryCount = n
            toil.update_job(job)

    writer = threading.Thread(target=rewrite)
    writer.start()
    reads = 0
    try:
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            with source.open(Kind.FILES, path) as (info, f):
                data = f.read()
            assert info.size == len(data) and data in versions
            job_info, job_data = source.job_bytes(str(job.jobStoreID))
            assert job_info.size == len(job_data)
            assert source.job_from_bytes(str(job.jobStoreID), job_data).jobName == "rewritten"
            reads += 1
    finally:
        stop.set()
        writer.join(10)
    assert reads > 10 and len(versions) > 10
    # A reader pinned to a version that was replaced is told so, never given the new one.
    with source.open(Kind.FILES, path) as (info, _):
        pass
    with toil.update_file_stream(file_id) as f:
        f.write(b"new")
    with pytest.raises(VersionGone), source.open(Kind.FILES, path, 1, info.version):
        pass


def test_file_store_live_jobs_show_up_within_a_second(tmp_path: Path) -> None:
    """A running workflow's new jobs are listed as soon as their files exist."""
    locator = f"file:{tmp_path / 'store'}"
    env = _env()
    out = str(tmp_path / "ids.json")
    proc = subprocess.Popen(
        [sys.executable, str(WORKFLOW), locator, "--out", out, "--chain", "8", *OPTIONS],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    jobs_dir = tmp_path / "store" / "jobs"
    on_disk: dict[str, float] = {}
    listed: dict[str, float] = {}
    source: ToilStoreSource | None = None
    try:
        deadline = time.monotonic() + 90
        while proc.poll() is None and time.monotonic() < deadline:
            now = time.monotonic()
            for job_file in jobs_dir.glob("kind-*/instance-*/job"):
                on_disk.setdefault(str(job_file.parent.relative_to(jobs_dir)), now)
            if source is None:
                with contextlib.suppress(NoToilStore):
                    source = open_toil_source(locator)
            if source is not None:
                for _, name in source.job_names(0):
                    listed.setdefault(source.job_id(name), time.monotonic())
                source.read_run(RunMemo())
            time.sleep(0.1)
        assert proc.poll() == 0, "the chain did not finish in time"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    chained = [j for j in on_disk if j.startswith("kind-link")]
    assert len(chained) >= 3, on_disk
    for job_id in chained:
        assert job_id in listed, job_id
        assert listed[job_id] - on_disk[job_id] < 1.0, job_id


# =============================================================== aws:


def snapshot_bucket(client: Any, bucket: str) -> dict[str, Any]:
    """Every object's ETag, size and time, and any multipart upload under way."""
    out: dict[str, Any] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            out[item["Key"]] = (item["ETag"], item["Size"], item["LastModified"])
    out["<uploads>"] = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return out


@pytest.fixture(scope="module")
def aws_stores(
    moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Written]:
    """Stores Toil's AWSJobStore wrote on moto (through a proxy that takes its SSE-C rule),
    by variant, each made once: ``plain``, or ``sse-c`` (every object but the config
    encrypted with a customer key)."""
    made: dict[str, Written] = {}

    def get(variant: str) -> Written:
        if variant not in made:
            workdir = tmp_path_factory.mktemp("toil-aws")
            locator = f"aws:us-east-1:toilsrc-{uuid.uuid4().hex[:12]}"
            extra: list[str] = []
            if variant == "sse-c":
                key = workdir / "sse.key"
                key.write_text(uuid.uuid4().hex)  # 32 characters, as Toil wants
                extra = [f"--sseKey={key}"]
            with FaultProxy(moto_endpoint) as proxy:
                env = {**_env(), "AWS_ENDPOINT_URL": proxy.url}
                written = _written(locator, workdir, *extra, env=env)
            written.encrypted = bool(extra)
            made[variant] = written
        return made[variant]

    return get


@pytest.fixture(params=["plain", "sse-c"])
def aws_store(request: pytest.FixtureRequest, aws_stores: Callable[[str], Written]) -> Written:
    """Each variant of :func:`aws_stores` in turn."""
    return aws_stores(request.param)


def test_aws_store_read_back_against_toil(aws_store: Written) -> None:
    source = open_toil_source(aws_store.locator)
    assert source.job_segments() == 16
    client, bucket = source.client, source.bucket  # type: ignore[attr-defined]
    top = {k for k in snapshot_bucket(client, bucket) if "/" not in k and k != "<uploads>"}
    assert {e.name for e in source.listdir(Kind.SHARED, ())} == top
    everything = list(source.job_names(0))
    assert [s for s, _ in everything] == sorted(s for s, _ in everything)
    for segment in range(16):  # a listing resumed at any segment has the rest, no more
        rest = sorted(n for s, n in everything if s >= segment)
        assert sorted(n for _, n in source.job_names(segment)) == rest
    read_back(
        aws_store,
        lambda: snapshot_bucket(client, bucket),
        {"_toil_kill_flag"},
        aws_store.toil.read_logs,
    )


def test_aws_store_missing_or_bad_locators(moto_endpoint: str) -> None:
    for locator in ("aws:us-east-1:no-such-store", "aws:nowhere-1:x", "aws:us-east-1:Bad_Name"):
        with pytest.raises(NoToilStore) as e:
            open_toil_source(locator)
        assert "\n" not in str(e.value)


def test_aws_store_reads_send_the_customer_key(
    aws_stores: Callable[[str], Written], moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With SSE-C, every GET sends the key but the config's (moto does not check: we do)."""
    aws_store = aws_stores("sse-c")
    with FaultProxy(moto_endpoint, record=True) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        source = open_toil_source(aws_store.locator)
        session = read_everything(source)
    assert session.files and session.jobs and session.logs
    bucket = source.bucket  # type: ignore[attr-defined]
    gets = [
        (path.split("?")[0].removeprefix(f"/{bucket}/"), headers)
        for method, path, headers in proxy.seen
        if method == "GET" and path.startswith(f"/{bucket}/") and "list-type" not in path
    ]
    assert len(gets) > len(session.files) + len(session.jobs)
    for key, headers in gets:
        sent = "x-amz-server-side-encryption-customer-key" in headers
        assert sent == (key != "config.pickle"), key


def test_aws_store_reads_stay_on_one_version(
    aws_stores: Callable[[str], Written],
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Bodies cut off mid-way resume on their version; a version replaced is never mixed in."""
    aws_store = aws_stores("plain")
    direct = open_toil_source(aws_store.locator)
    expected = read_everything(direct)
    with FaultProxy(moto_endpoint, rate=0.3, kinds=("truncate",), seed=7) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        cut = open_toil_source(aws_store.locator)
        for path, data in expected.files.items():
            with cut.open(Kind.FILES, path) as (info, f):
                assert f.read() == data and info.size == len(data), path
    assert proxy.faults["truncate"] > 3
    assert any("cut off" in r.getMessage() for r in caplog.records), "no body was resumed"

    # my_shared.txt is replaced (as Toil replaces any object: a new PUT) while a reader holds it.
    toil = aws_store.toil
    with direct.open(Kind.SHARED, ("my_shared.txt",)) as (info, f):
        first = f.read(3)
        with toil.write_shared_file_stream("my_shared.txt") as w:
            w.write(b"replaced, and longer than before\n")
        with (
            pytest.raises(VersionGone),
            direct.open(Kind.SHARED, ("my_shared.txt",), 3, info.version) as (_, g),
        ):
            g.read()
    assert first == expected.shared["my_shared.txt"][:3]
    with direct.open(Kind.SHARED, ("my_shared.txt",)) as (new, f):
        assert f.read() == b"replaced, and longer than before\n" and new.version != info.version


def test_file_store_spray_directories(tmp_path: Path) -> None:
    """Toil sprays jobs, files and logs over single-letter directories when one fills up."""
    from toil.job import JobDescription

    toil = FileJobStore(str(tmp_path / "store"), fanOut=2)
    toil.initialize(Config())
    jobs = []
    for i in range(12):
        job = JobDescription(
            requirements={"memory": 1, "cores": 1, "disk": 1}, jobName=f"name{i % 4}"
        )
        toil.assign_job_id(job)
        toil.create_job(job)
        jobs.append(str(job.jobStoreID))
    flat = []
    for i in range(8):
        with toil.write_file_stream(basename=f"f{i}") as (f, file_id):
            f.write(b"%d" % i)
        flat.append(file_id)
    for i in range(8):
        toil.write_logs(f"message {i}")
        time.sleep(0.002)  # the names' order is the files' times
    assert any(len(p.split("/")) > 2 for p in jobs), "no job went to a spray directory"
    assert any(len(p.split("/")) > 3 for p in flat), "no file went to a spray directory"

    source = open_toil_source(f"file:{tmp_path / 'store'}")
    assert sorted(source.job_id(n) for _, n in source.job_names(0)) == sorted(jobs)
    session = read_everything(source)
    assert set(session.jobs) == set(jobs)
    for i, file_id in enumerate(flat):
        assert session.files[source.file_path(file_id)] == b"%d" % i
    assert [data for _, data in session.logs] == [b"message %d" % i for i in range(8)]
    # The leader reads them: moves them from the inbox to the archive. Same names, same bytes.
    assert toil.read_logs(lambda f: None) == 8
    for name, data in session.logs:
        assert _read(source, Kind.LOGS, (name,)) == data
    assert [e.name for e in source.listdir(Kind.LOGS, ())] == [n for n, _ in session.logs]


def test_aws_store_run_view_fetches_only_changed_jobs(
    aws_stores: Callable[[str], Written], moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """read_run again: one listing, and a GET only of the description that changed."""
    aws_store = aws_stores("plain")
    with FaultProxy(moto_endpoint, record=True) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        source = open_toil_source(aws_store.locator)
        memo = RunMemo()
        first = source.read_run(memo)

        def job_gets() -> list[str]:
            gets = [p for m, p, _ in proxy.seen if m == "GET" and "/jobs/" in p]
            proxy.seen.clear()
            return gets

        assert len(job_gets()) == len(first.jobs) >= 3
        assert source.read_run(memo).counts() == first.counts()
        assert job_gets() == []
        blocked = next(j for j in aws_store.toil.jobs() if j.jobName == "blocked")
        blocked.remainingTryCount = 0
        aws_store.toil.update_job(blocked)
        proxy.seen.clear()
        again = source.read_run(memo)
        assert [p.rpartition("/")[2] for p in job_gets()] == [str(blocked.jobStoreID)]
        assert again.jobs[str(blocked.jobStoreID)].state == "failed"


def test_aws_store_job_listing_by_segment(aws_stores: Callable[[str], Written]) -> None:
    """Jobs spread over every segment: each resumed listing gives exactly the rest, in order."""
    aws_store = aws_stores("plain")
    from toil.job import JobDescription

    toil = aws_store.toil
    added = []
    for i in range(48):
        job = JobDescription(requirements={"memory": 1, "cores": 1, "disk": 1}, jobName=f"j{i}")
        toil.assign_job_id(job)
        toil.create_job(job)
        added.append(str(job.jobStoreID))
    try:
        source = open_toil_source(aws_store.locator)
        everything = list(source.job_names(0))
        assert set(added) <= {n for _, n in everything}
        assert len({s for s, _ in everything}) >= 12  # uuids start with any hex digit
        assert [s for s, _ in everything] == sorted(s for s, _ in everything)
        for segment in range(source.job_segments()):
            rest = [n for s, n in everything if s >= segment]
            assert [n for _, n in source.job_names(segment)] == rest
    finally:
        for job_id in added:
            toil.delete_job(job_id)


def test_file_store_damage_and_strays(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A corrupt job, a directory Toil never makes, a FIFO: skipped or refused, never a hang."""
    from toil.job import JobDescription

    toil = FileJobStore(str(tmp_path / "store"))
    toil.initialize(Config())
    ids = []
    for name in ("good", "corrupt"):
        job = JobDescription(requirements={"memory": 1, "cores": 1, "disk": 1}, jobName=name)
        toil.assign_job_id(job)
        toil.create_job(job)
        ids.append(str(job.jobStoreID))
    good, corrupt = ids
    (tmp_path / "store" / "jobs" / corrupt / "job").write_bytes(b"not a pickle")
    stray = tmp_path / "store" / "jobs" / "kind-a+b" / "instance-x"
    stray.mkdir(parents=True)
    (stray / "job").write_bytes(b"")
    fifo_dir = tmp_path / "store" / "files-flat" / "file-fifo"
    fifo_dir.mkdir()
    os.mkfifo(fifo_dir / "pipe")

    source = open_toil_source(f"file:{tmp_path / 'store'}")
    assert sorted(source.job_id(n) for _, n in source.job_names(0)) == sorted(ids)
    assert any("kind-a+b" in r.getMessage() for r in caplog.records)
    run = source.read_run(RunMemo())
    assert list(run.jobs) == [good]
    assert any(corrupt in r.getMessage() for r in caplog.records)
    with pytest.raises(Corrupt, match=f"corrupt job {corrupt} in file:.*does not unpickle"):
        source.job_from_bytes(corrupt, source.job_bytes(corrupt)[1])
    assert [e.name for e in source.listdir(Kind.FILES, ("files-flat", "file-fifo"))] == []
    with pytest.raises(Missing):
        source.stat(Kind.FILES, ("files-flat", "file-fifo", "pipe"))
    with pytest.raises(Missing), source.open(Kind.FILES, ("files-flat", "file-fifo", "pipe")):
        pass


# ======================================================== through the mount


def _mount_session(mp: Path) -> dict[str, bytes]:
    """What a user's ``find`` and ``cat`` of everything see: every file's bytes."""
    seen: dict[str, bytes] = {}
    for dirpath, _, filenames in os.walk(mp):
        for name in filenames:
            path = Path(dirpath) / name
            seen[str(path.relative_to(mp))] = path.read_bytes()
    return seen


def _check_mounted_run(mp: Path) -> None:
    names = subprocess.run(
        ["bash", "-c", "jq -r .name jobs/*/description.json"],
        cwd=mp,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert names.returncode == 0, names.stderr
    assert {"doomed", "blocked"} <= set(names.stdout.split())
    status = json.loads((mp / "status.json").read_bytes())
    assert status["counts"]["failed"] >= 1 and status["leader"]["alive"] is False
    # Toil may store doomed's failure under the root's ID too (it chains them): any will do.
    failed = mp / "by-state" / "failed"
    logs = [
        (failed / j / "log").read_bytes()
        for j in os.listdir(failed)
        if (failed / j / "log").exists()
    ]
    assert any(b"doomed always fails" in log for log in logs), os.listdir(failed)
    for job in os.listdir(mp / "jobs"):
        doc = json.loads((mp / "jobs" / job / "description.json").read_bytes())
        assert "/" not in job and doc["id"]  # one level deep; the ID itself inside


def test_file_store_through_the_mount(file_store: Written, tmp_path: Path) -> None:
    """Toil's own ``file:`` store, mounted: the run view's answers, and the store unchanged."""
    root = Path(file_store.locator.removeprefix("file:"))
    before = snapshot_dir(root)
    mount = Mount(file_store.locator, tmp_path / "mnt")
    try:
        seen = _mount_session(mount.mountpoint)
        assert any(k.startswith("files/") for k in seen) and "status.json" in seen
        _check_mounted_run(mount.mountpoint)
    finally:
        mount.close()
    assert snapshot_dir(root) == before, "the mount changed Toil's store"


def test_aws_store_through_the_mount(
    aws_stores: Callable[[str], Written], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws_store = aws_stores("plain")  # the sources' tests cover SSE-C
    source = open_toil_source(aws_store.locator)
    client, bucket = source.client, source.bucket  # type: ignore[attr-defined]
    before = snapshot_bucket(client, bucket)
    mount = Mount(aws_store.locator, tmp_path / "mnt")
    try:
        _mount_session(mount.mountpoint)
        _check_mounted_run(mount.mountpoint)
    finally:
        mount.close()
    assert snapshot_bucket(client, bucket) == before, "the mount changed Toil's store"


def test_killflag_stops_a_live_file_run(tmp_path: Path) -> None:
    """``echo YES > killflag`` through a mount of a running ``file:`` workflow stops its leader."""
    gate = tmp_path / "gate"
    gate.mkdir()
    locator = f"file:{tmp_path / 'store'}"
    leader = subprocess.Popen(
        [sys.executable, str(RUNVIEW_WORKFLOW), locator, f"--gate={gate}", *OPTIONS],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    mount = None
    try:
        deadline = time.monotonic() + 90
        while not (tmp_path / "store" / "shared" / "rootJobStoreID").exists():
            assert leader.poll() is None and time.monotonic() < deadline, "the run never started"
            time.sleep(0.2)
        mount = Mount(locator, tmp_path / "mnt")
        assert (mount.mountpoint / "killflag").read_text() == "NO\n"
        said = subprocess.run(
            ["bash", "-c", "echo YES > killflag"], cwd=mount.mountpoint, timeout=30
        )
        assert said.returncode == 0
        out, _ = leader.communicate(timeout=90)  # Toil looks at the flag every 5 s
        assert leader.returncode != 0 and "kill" in out.lower(), out[-3000:]
    finally:
        if leader.poll() is None:
            leader.kill()
            leader.wait()
        if mount is not None:
            mount.close()
