"""Kill tests: writers SIGKILLed at random points, then the store must be whole.

For each write path of the API and each backend, a child process loops on
that path (alternating versions of self-checking payloads, some large enough
to take several requests) and is SIGKILLed after a random delay, over and
over. Most kills wait, after the delay, until the child is inside a store call.
After every kill:

* the store resumes in a fresh handle, as a restarted process gets it;
* every object reads back as a complete old or complete new version
  (checksums), and its version is one the child's journal allows;
* nothing temporary shows through the API (listings, ``jobs()``) or through a
  ``jobstore mount`` of the store: the mounted tree lists exactly the store's
  files, jobs, shared files and logs, and sampled objects read the same there;
* Toil's ``clean()`` (the store is a real workflow's, with a root job) succeeds,
  deletes the campaign's unreachable jobs and leaves no file of a deleted job.

The store is that of a real Toil workflow whose leader and workers were
SIGKILLed first. Once every path has been hammered, ``--restart`` of that
workflow must finish it with the right result, and the workflow's own files
must not have changed during the campaign.

Children are forked by a ``multiprocessing`` fork server that imported Toil,
boto3 and jobstore once: each child is a real Python process using
``jobstore.JobStore``, started in milliseconds instead of a second.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from toil.job import JobDescription

from jobstore import JobStore, layout
from tests.mountutil import Mount
from tests.reliability_lib import (
    Deadline,
    Journal,
    JournalView,
    assert_no_debris_visible,
    bound,
    file_ids,
    forkserver,
    kill_tree,
    make_payload,
    open_store,
    orphaned_job_files,
    parse_payload,
    read_whole,
    record,
    run_workflow,
    store_env,
    sweep_debris,
    toil_clean,
    toil_env,
    workflow_command,
    workflow_result,
    write_local,
)
from tests.workflows import reliability as reliability_workflow

CAMPAIGN_JOB = "reliability"
REQUIREMENTS = {"memory": 1, "cores": 1, "disk": 1, "preemptible": False}
SEED = int(os.environ.get("JOBSTORE_RELIABILITY_SEED", random.randrange(2**32)))
MiB = 1 << 20


@dataclass(frozen=True)
class Profile:
    """How hard to hit one backend: payload sizes, kill delays and budgets per path."""

    #: Payload sizes to pick from: small, medium, large (on s3: more than one 8 MiB part).
    sizes: tuple[int, ...]
    #: A kill comes uniformly within this many seconds of the child being ready.
    window: float
    kills: int
    seconds: float


PROFILES = {
    "local": Profile((64 << 10, MiB, 4 * MiB), 0.2, bound(12, 400), bound(6.0, 400.0)),
    "s3": Profile((16 << 10, MiB, 9 * MiB), 0.35, bound(5, 200), bound(10.0, 900.0)),
}
#: Share of the kills that, after the random delay, wait for the child to be inside a call.
AIMED = 0.75
#: On ``local:``, walk the whole mounted ``files/`` after every kill in CI, every tenth in the
#: long run: job and file shard directories pile up over hundreds of kills, and a walk
#: through FUSE of thousands of them takes seconds.
WALK_EVERY = bound(1, 10)
#: A request the child sent just before its death may still take effect in the S3 server
#: (as on AWS): give it this long before looking, so that checks see where it landed.
S3_SETTLE = 0.25


# ===================================================================== campaigns


class Campaign:
    """One write path: what the child loops on and what the parent checks after a kill.

    The instance travels to the child by pickle, so the child starts from the
    versions the parent last saw.
    """

    path: ClassVar[str]

    def __init__(self, profile: Profile, scratch: Path) -> None:
        self.profile = profile
        self.scratch = scratch
        self.round = 0
        self.seed = 0

    # --------------------------------------------------------- parent side

    def prepare(self, store: JobStore) -> None:
        """Create what the child works on (runs in the parent before each child)."""

    def check(self, store: JobStore, view: JournalView) -> None:
        raise NotImplementedError

    # ---------------------------------------------------------- child side

    def run(self, store: JobStore, journal: Journal) -> None:
        raise NotImplementedError

    def size(self, rng: random.Random) -> int:
        return rng.choice(self.profile.sizes)

    def local_file(self, name: str, data: bytes, executable: bool) -> str:
        return write_local(str(self.scratch / name), data, executable)


def seqs(view: JournalView) -> set[int]:
    """Every operation the child finished or began."""
    return {*view.ended, *([view.inflight[0]] if view.inflight else [])}


def allowed_versions(view: JournalView, last: int, only: set[int] | None = None) -> set[int]:
    """The versions an object may hold: the last one finished, or the one in flight.

    ``only`` restricts the journal to the operations that wrote this object.
    """
    ended = [s for s in view.ended if only is None or s in only]
    allowed = {max(ended, default=last)}
    if view.inflight is not None and (only is None or view.inflight[0] in only):
        allowed.add(view.inflight[0])
    return allowed


def new_job(store: JobStore, name: str, payload: bytes) -> JobDescription:
    job = JobDescription(requirements=REQUIREMENTS, jobName=f"{CAMPAIGN_JOB}-{name}")
    job.reliability_payload = payload  # type: ignore[attr-defined]
    store.assign_job_id(job)
    return job


def campaign_jobs(store: JobStore, name: str) -> list[JobDescription]:
    return [j for j in store.jobs() if j.jobName == f"{CAMPAIGN_JOB}-{name}"]


def write_chunked(f: Any, data: bytes, chunk: int = 256 << 10) -> None:
    view = memoryview(data)
    for start in range(0, len(view), chunk):
        f.write(view[start : start + chunk])


class _NewFiles(Campaign):
    """write_file and write_file_stream: new files, anonymous, owned by a job, or hinted."""

    tag: ClassVar[str]
    #: Whether the executable bit of the source travels with the file.
    keeps_mode: ClassVar[bool] = True

    def prepare(self, store: JobStore) -> None:
        owner = new_job(store, "owner", b"")
        store.create_job(owner)
        self.owner = str(owner.jobStoreID)

    def run(self, store: JobStore, journal: Journal) -> None:
        rng = random.Random(self.seed)
        for seq in range(10**9):
            data = make_payload(self.tag, seq, self.size(rng))
            basename = f"rel-{self.tag}-{self.round}-{seq}"
            where: dict[str, Any] = [
                {},
                {"job_id": self.owner, "cleanup": True},
                {"hints": ["reliability", self.path]},
            ][seq % 3]
            self.write(store, journal, seq, basename, data, where)

    def write(
        self,
        store: JobStore,
        journal: Journal,
        seq: int,
        basename: str,
        data: bytes,
        where: dict[str, Any],
    ) -> None:
        raise NotImplementedError

    def check(self, store: JobStore, view: JournalView) -> None:
        prefix = f"rel-{self.tag}-{self.round}-"
        found: dict[int, str] = {}
        for file_id in file_ids(store):
            if not file_id.rsplit("/", 1)[-1].startswith(prefix):
                continue
            tag, version = parse_payload(read_whole(store, file_id))
            assert tag == self.tag
            assert store.file_is_executable(file_id) == (version % 2 == 1 and self.keeps_mode)
            found[version] = file_id
        for seq, file_id in view.ended.items():
            assert found.get(seq) == file_id, f"finished write {seq} ({file_id}) is missing"
        extra = set(found) - set(view.ended)
        assert extra <= ({view.inflight[0]} if view.inflight else set()), extra
        if view.inflight and view.inflight[1] and store.file_exists(str(view.inflight[1])):
            # A stream cut short is there whole, or not at all.
            data = read_whole(store, str(view.inflight[1]))
            assert parse_payload(data) == (self.tag, view.inflight[0])
        for file_id in found.values():
            store.delete_file(file_id)


class WriteFile(_NewFiles):
    path = "write_file"
    tag = "wf"

    def write(
        self,
        store: JobStore,
        journal: Journal,
        seq: int,
        basename: str,
        data: bytes,
        where: dict[str, Any],
    ) -> None:
        local = self.local_file(basename, data, seq % 2 == 1)
        journal.begin(seq)
        file_id = store.write_file(local, **where)
        journal.end(seq, file_id)
        os.unlink(local)


class WriteFileStream(_NewFiles):
    path = "write_file_stream"
    tag = "wfs"
    keeps_mode = False  # a stream has no mode: never executable

    def write(
        self,
        store: JobStore,
        journal: Journal,
        seq: int,
        basename: str,
        data: bytes,
        where: dict[str, Any],
    ) -> None:
        with store.write_file_stream(basename=basename, **where) as (f, file_id):
            journal.begin(seq, str(file_id))  # the ID is known before the file exists
            write_chunked(f, data)
        journal.end(seq, str(file_id))


class _UpdateFile(Campaign):
    """update_file and update_file_stream: one file rewritten over and over."""

    tag: ClassVar[str]

    def __init__(self, profile: Profile, scratch: Path) -> None:
        super().__init__(profile, scratch)
        self.file_id = ""
        self.version = 0

    def prepare(self, store: JobStore) -> None:
        if not self.file_id:
            local = self.local_file(f"rel-{self.tag}", make_payload(self.tag, 0, 1000), True)
            self.file_id = store.write_file(local)

    def run(self, store: JobStore, journal: Journal) -> None:
        rng = random.Random(self.seed)
        for seq in range(self.version + 1, 10**9):
            self.update(store, journal, seq, make_payload(self.tag, seq, self.size(rng)))

    def update(self, store: JobStore, journal: Journal, seq: int, data: bytes) -> None:
        raise NotImplementedError

    def check(self, store: JobStore, view: JournalView) -> None:
        tag, version = parse_payload(read_whole(store, self.file_id))
        assert tag == self.tag
        assert version in allowed_versions(view, self.version), (version, view)
        assert store.file_is_executable(self.file_id) == self.executable(version)
        self.version = version

    def executable(self, version: int) -> bool:
        raise NotImplementedError


class UpdateFile(_UpdateFile):
    path = "update_file"
    tag = "uf"

    def update(self, store: JobStore, journal: Journal, seq: int, data: bytes) -> None:
        local = self.local_file(f"rel-uf-{seq}", data, self.executable(seq))
        journal.begin(seq)
        store.update_file(self.file_id, local)
        journal.end(seq)
        os.unlink(local)

    def executable(self, version: int) -> bool:
        return version % 2 == 0  # the mode of the local file travels with each update


class UpdateFileStream(_UpdateFile):
    path = "update_file_stream"
    tag = "ufs"

    def update(self, store: JobStore, journal: Journal, seq: int, data: bytes) -> None:
        journal.begin(seq)
        with store.update_file_stream(self.file_id) as f:
            write_chunked(f, data)
        journal.end(seq)

    def executable(self, version: int) -> bool:
        return True  # a stream update keeps the file's mode, and it was made executable


class UpdateJob(Campaign):
    """update_job of a campaign job with a big payload, and of the workflow's real root job."""

    path = "update_job"

    def __init__(self, profile: Profile, scratch: Path) -> None:
        super().__init__(profile, scratch)
        self.version = 0  # of the campaign job's payload
        self.next_seq = 1
        self.job_id = ""

    def prepare(self, store: JobStore) -> None:
        # clean() deletes the unreachable campaign job after every round: write it anew.
        job = new_job(store, "update", make_payload("uj", self.version, 1000))
        store.create_job(job)
        self.job_id = str(job.jobStoreID)

    def run(self, store: JobStore, journal: Journal) -> None:
        rng = random.Random(self.seed)
        job = store.load_job(self.job_id)
        root = store.load_root_job()
        for seq in range(self.next_seq, 10**9):
            target = job if seq % 2 else root
            tag, size = ("uj", self.size(rng)) if seq % 2 else ("root", 2000)
            target.reliability_payload = make_payload(tag, seq, size)  # type: ignore[attr-defined]
            journal.begin(seq)
            store.update_job(target)
            journal.end(seq)

    def check(self, store: JobStore, view: JournalView) -> None:
        job = store.load_job(self.job_id)
        tag, version = parse_payload(job.reliability_payload)  # type: ignore[attr-defined]
        odd = {s for s in seqs(view) if s % 2}
        assert tag == "uj"
        assert version in allowed_versions(view, self.version, odd), (version, view)
        root = store.load_root_job()
        if hasattr(root, "reliability_payload"):
            assert parse_payload(root.reliability_payload)[0] == "root"
        self.version = version
        self.next_seq = max(seqs(view), default=self.next_seq) + 1


class CreateJob(Campaign):
    """create_job, alone and in batches of three."""

    path = "create_job"

    def run(self, store: JobStore, journal: Journal) -> None:
        rng = random.Random(self.seed)
        for seq in range(10**9):
            tag = f"cj-{self.round}"
            jobs = [
                new_job(store, "create", make_payload(tag, seq, self.size(rng) // 4))
                for _ in range(1 if seq % 2 else 3)
            ]
            journal.begin(seq)
            if len(jobs) == 1:
                store.create_job(jobs[0])
            else:
                with store.batch():
                    for job in jobs:
                        store.create_job(job)
            journal.end(seq, [str(j.jobStoreID) for j in jobs])

    def check(self, store: JobStore, view: JournalView) -> None:
        found: dict[str, int] = {}
        for job in campaign_jobs(store, "create"):
            tag, version = parse_payload(job.reliability_payload)  # type: ignore[attr-defined]
            if tag == f"cj-{self.round}":
                found[str(job.jobStoreID)] = version
        for seq, ids in view.ended.items():
            for job_id in ids:  # type: ignore[attr-defined]
                assert found.pop(job_id, None) == seq, f"created job {job_id} is missing"
        inflight = view.inflight[0] if view.inflight else None
        assert all(v == inflight for v in found.values()), found


class WriteSharedFileStream(Campaign):
    """A big campaign shared file, and config.pickle rewritten with its own bytes."""

    path = "write_shared_file_stream"

    def __init__(self, profile: Profile, scratch: Path) -> None:
        super().__init__(profile, scratch)
        self.version = -1  # of rel-shared.bin; -1 while there is none
        self.next_seq = 0
        self.config = b""

    def prepare(self, store: JobStore) -> None:
        if not self.config:
            with store.read_shared_file_stream("config.pickle") as f:
                self.config = f.read()

    def run(self, store: JobStore, journal: Journal) -> None:
        rng = random.Random(self.seed)
        for seq in range(self.next_seq, 10**9):
            name, data = (
                ("config.pickle", self.config)
                if seq % 2
                else ("rel-shared.bin", make_payload("sh", seq, self.size(rng)))
            )
            journal.begin(seq)
            with store.write_shared_file_stream(name) as f:
                write_chunked(f, data)
            journal.end(seq)

    def check(self, store: JobStore, view: JournalView) -> None:
        with store.read_shared_file_stream("config.pickle") as f:
            assert f.read() == self.config, "config.pickle changed"
        self.next_seq = max(seqs(view), default=self.next_seq - 1) + 1
        if "rel-shared.bin" not in set(store.shared_file_names()):
            assert self.version < 0, "the shared file vanished"
            assert not any(s % 2 == 0 for s in view.ended), "a finished shared file is missing"
            return
        with store.read_shared_file_stream("rel-shared.bin") as f:
            tag, version = parse_payload(f.read())
        even = {s for s in seqs(view) if s % 2 == 0}
        assert tag == "sh"
        assert version in allowed_versions(view, self.version, even), (version, view)
        self.version = version


class WriteLogs(Campaign):
    """write_logs; the parent, as the one reader, must read each message exactly once."""

    path = "write_logs"

    def __init__(self, profile: Profile, scratch: Path) -> None:
        super().__init__(profile, scratch)
        self.read: set[tuple[str, int]] = set()
        self.foreign = 0

    def run(self, store: JobStore, journal: Journal) -> None:
        rng = random.Random(self.seed)
        for seq in range(10**9):
            # Log messages are small in real life; some are large, to be cut mid-write.
            size = self.size(rng) if seq % 4 == 0 else rng.randrange(100, 5000)
            message = make_payload(f"log-{self.round}", seq, size)
            journal.begin(seq)
            store.write_logs(message)
            journal.end(seq)

    def check(self, store: JobStore, view: JournalView) -> None:
        got: list[tuple[str, int]] = []

        def callback(stream: Any) -> None:
            data = stream.read()
            if data.startswith(b"JSREL1"):
                got.append(parse_payload(data))
            else:
                self.foreign += 1  # the killed workflow's own messages

        store.read_logs(callback)
        assert len(got) == len(set(got)), "a message was read twice in one call"
        twice = self.read & set(got)
        assert not twice, f"messages read again: {sorted(twice)[:5]}"
        self.read.update(got)
        mine = {v for t, v in got if t == f"log-{self.round}"}
        assert set(view.ended) <= mine, f"messages lost: {sorted(set(view.ended) - mine)[:5]}"
        assert mine - set(view.ended) <= ({view.inflight[0]} if view.inflight else set())


class DeleteJob(Campaign):
    """delete_job of jobs that own files; clean() must finish what a killed delete began."""

    path = "delete_job"
    FILES_PER_JOB = 6

    def run(self, store: JobStore, journal: Journal) -> None:
        rng = random.Random(self.seed)
        for n in range(10**9):
            job = new_job(store, "delete", make_payload("dj", n, 100))
            job_id = str(job.jobStoreID)
            datas = [make_payload("djf", n, self.size(rng) // 8) for _ in range(self.FILES_PER_JOB)]
            files = []
            journal.begin(2 * n)
            store.create_job(job)
            for i, data in enumerate(datas):
                with store.write_file_stream(job_id, cleanup=True, basename=f"rel-dj-{i}") as (
                    f,
                    file_id,
                ):
                    write_chunked(f, data)
                files.append(str(file_id))
            journal.end(2 * n, [job_id, files])
            journal.begin(2 * n + 1, job_id)
            store.delete_job(job_id)
            journal.end(2 * n + 1)

    def check(self, store: JobStore, view: JournalView) -> None:
        for seq, value in view.ended.items():
            if seq % 2:
                continue
            job_id, files = value  # type: ignore[misc]
            present = [f for f in files if store.file_exists(f)]
            for file_id in present:
                parse_payload(read_whole(store, file_id))
            if seq + 1 in view.ended:
                assert not store.job_exists(job_id) and not present, f"{job_id} half deleted"
            elif store.job_exists(job_id):
                # Not deleted yet, or killed before the description went: all there.
                assert present == files, f"{job_id} lost files before its deletion"


CAMPAIGNS: dict[str, type[Campaign]] = {
    c.path: c
    for c in (
        WriteFile,
        WriteFileStream,
        UpdateFile,
        UpdateFileStream,
        UpdateJob,
        CreateJob,
        WriteSharedFileStream,
        DeleteJob,
        WriteLogs,  # last: the messages it leaves make every later listing longer
    )
}


# ========================================================================= child


def child_main(
    campaign: Campaign, locator: str, env: dict[str, str], journal_path: str, ready: Any
) -> None:
    """Entry point of a child to be killed (a process forked by the fork server)."""
    os.environ.update(env)
    journal = Journal(journal_path)
    try:
        store = JobStore(locator)
        store.resume()
        ready.set()
        campaign.run(store, journal)
    except BaseException:
        journal.error(traceback.format_exc())
        raise


# ======================================================================== parent


@dataclass
class Victim:
    """The store of a real workflow whose leader and workers were killed mid-run, mounted."""

    backend: str
    locator: str
    workdir: Path
    mount: Mount


#: Which paths to hammer (all by default). ``scripts/reliability`` runs the long variant
#: once per path, so that each path gets a killed workflow and a restart of its own.
PATHS = os.environ.get("JOBSTORE_RELIABILITY_PATHS", ",".join(CAMPAIGNS)).split(",")


@pytest.fixture(scope="module", params=["local", "s3"])
def victim(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Victim]:
    backend = request.param
    if backend == "s3":
        request.getfixturevalue("moto_endpoint")
    workdir = tmp_path_factory.mktemp(f"victim-{backend}")
    if backend == "s3":
        locator = f"s3:jobstore-tests/victim-{os.urandom(6).hex()}"
    else:
        locator = f"local:{workdir / 'store'}"
    rng = random.Random(SEED)
    with open(workdir / "leader.log", "wb") as log:
        leader = subprocess.Popen(
            workflow_command(locator, workdir),
            cwd=workdir,
            env=toil_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        backend_handle = JobStore(locator).backend
        deadline = time.monotonic() + 60
        while not backend_handle.exists(layout.shared_key("rootJobStoreID")):
            assert leader.poll() is None, (workdir / "leader.log").read_text()
            assert time.monotonic() < deadline, "the workflow never registered its root job"
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 3))
    finally:
        kill_tree(leader.pid)
    toil_clean(open_store(locator))
    # No kernel caching: the tree must show the store as it is right after each kill.
    mount = Mount(locator, workdir / "mnt", "-o", "timeout=0")
    try:
        yield Victim(backend, locator, workdir, mount)
    finally:
        mount.close()
        JobStore(locator).destroy()


def wait_in_call(journal_path: str, timeout: float) -> None:
    """Wait (briefly) until the child's journal says it is inside a store call."""
    deadline = time.monotonic() + timeout
    with open(journal_path, "rb") as f:
        while time.monotonic() < deadline:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
            lines = f.read().splitlines()
            if len(lines) and lines[-1][:2] == b"B ":
                return
            time.sleep(0.001)


@pytest.mark.parametrize("path", PATHS)
def test_kill(victim: Victim, path: str, tmp_path: Path) -> None:
    profile = PROFILES[victim.backend]
    campaign = CAMPAIGNS[path](profile, tmp_path)
    ctx = forkserver()
    rng = random.Random(f"{SEED}-{path}-{victim.backend}")
    store = open_store(victim.locator)
    snapshot = workflow_snapshot(store)
    budget = Deadline(profile.kills, profile.seconds)
    in_call = debris = checked = 0
    while budget.more():
        campaign.round = budget.done
        campaign.seed = rng.randrange(2**32)
        campaign.prepare(store)
        journal_path = str(tmp_path / f"journal-{budget.done}")
        ready = ctx.Event()
        child = ctx.Process(
            target=child_main, args=(campaign, victim.locator, store_env(), journal_path, ready)
        )
        child.start()
        try:
            assert ready.wait(60), "the child never became ready"
            time.sleep(rng.uniform(0, profile.window))
            if rng.random() < AIMED:
                wait_in_call(journal_path, timeout=2.0)
        finally:
            child.kill()
            child.join(30)
        view = Journal.read(journal_path)
        assert view.error is None, view.error
        assert child.exitcode == -signal.SIGKILL, f"child exited {child.exitcode} before the kill"
        in_call += view.inflight is not None
        if victim.backend == "s3":
            time.sleep(S3_SETTLE)

        store = open_store(victim.locator, like=store)  # the store resumes
        try:
            campaign.check(store, view)
            checked += assert_no_debris_visible(store)
            if victim.backend == "local":
                check_mount(victim.mount, store, rng, walk=budget.done % WALK_EVERY == 0)
            elif budget.done == 0:  # see check_mount
                check_mount(victim.mount, store, rng, walk=False)
            toil_clean(store)
            assert not campaign_jobs_left(store), "clean() left campaign jobs"
            assert not orphaned_job_files(store), "files of deleted jobs survived clean()"
        except Exception as e:  # say which kill, and how to replay it
            raise AssertionError(f"after kill {budget.done} (seed {SEED}): {e!r}") from e
        debris += sweep_debris(store)
        budget.done += 1
    assert workflow_snapshot(store) == snapshot, "the workflow's own objects changed"
    record(
        "kill",
        f"{victim.backend}:{path}",
        backend=victim.backend,
        path=path,
        kills=budget.done,
        in_call=in_call,
        debris=debris,
        objects_checked=checked,
        seconds=round(budget.elapsed(), 1),
        seed=SEED,
        bytes_lost=0,
    )
    assert in_call >= budget.done // 3, f"only {in_call} of {budget.done} kills inside a call"


def test_restart_after_kills(victim: Victim) -> None:
    """The killed workflow, its store hammered by every campaign, finishes on ``--restart``."""
    (victim.workdir / "gate" / "open").touch()
    proc = run_workflow(victim.locator, victim.workdir, "--restart")
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert workflow_result(proc) == reliability_workflow.expected()
    record("restart", victim.backend, backend=victim.backend, restarts=1)


def workflow_snapshot(store: JobStore) -> dict[str, str]:
    """Checksums of the workflow's own files and shared files (not the campaign's)."""
    snap = {}
    for file_id in file_ids(store):
        if not file_id.rsplit("/", 1)[-1].startswith("rel-"):
            snap[file_id] = hashlib.sha256(read_whole(store, file_id)).hexdigest()
    for name in store.shared_file_names():
        if not name.startswith("rel-"):
            with store.read_shared_file_stream(name) as f:
                snap["shared:" + name] = hashlib.sha256(f.read()).hexdigest()
    return snap


def check_mount(mount: Mount, store: JobStore, rng: random.Random, walk: bool) -> None:
    """The mounted tree lists what the store holds, and samples read the same there.

    ``walk``: compare the whole ``files/`` tree; else only the directories that
    hold the sampled files (a walk through the view costs the s3 backend
    thousands of requests, see docs/RELIABILITY.md).
    """
    root = mount.mountpoint
    api_files = set(file_ids(store))
    if walk:
        files = {
            str(Path(d, f).relative_to(root / "files"))
            for d, _, names in os.walk(root / "files")
            for f in names
        }
        assert files == api_files, f"the mount shows other files: {files ^ api_files}"
    assert set(os.listdir(root / "jobs")) == set(store.job_ids())
    assert set(os.listdir(root / "shared")) == set(store.shared_file_names())
    assert len(os.listdir(root / "logs")) == len(list(store.log_keys()))
    ours = sorted(f for f in api_files if f.rsplit("/", 1)[-1].startswith("rel-"))
    for file_id in rng.sample(ours, min(2, len(ours))):
        assert (root / "files" / file_id).read_bytes() == read_whole(store, file_id), file_id
        parent = file_id.rsplit("/", 1)[0] + "/"
        beside = {e.name for e in store.backend.listdir(layout.FILES + parent)}
        assert set(os.listdir(root / "files" / parent)) == beside, parent
    for name in store.shared_file_names():
        if name.startswith("rel-"):
            with store.read_shared_file_stream(name) as f:
                assert (root / "shared" / name).read_bytes() == f.read(), name
    jobs = sorted(j for j in store.job_ids() if j.startswith(CAMPAIGN_JOB + "-"))
    for job_id in rng.sample(jobs, min(1, len(jobs))):
        pickled = (root / "jobs" / job_id / "description.pickle").read_bytes()
        assert pickled == store.load_job_bytes(job_id), job_id


def campaign_jobs_left(store: JobStore) -> list[str]:
    return [j for j in store.job_ids() if j.startswith(CAMPAIGN_JOB + "-")]


# ============================================================ regression tests


def test_clean_deletes_files_no_job_owns(store_locator: str, toil_config: Any) -> None:
    """Files of a job never created, or whose delete was killed, go on clean().

    Toil writes a new job's body before its description, and delete_job drops
    the description before the files: a kill in between left them for ever.
    """
    store = JobStore(store_locator)
    store.initialize(toil_config)
    root = new_job(store, "root", b"")
    store.create_job(root)
    store.set_root_job(str(root.jobStoreID))
    kept = store.get_empty_file_store_id(str(root.jobStoreID), cleanup=True)
    never = new_job(store, "never-created", b"")
    with store.write_file_stream(str(never.jobStoreID), cleanup=True) as (f, unborn):
        f.write(b"body of a job whose description was never written")
    half = new_job(store, "half-deleted", b"")
    store.create_job(half)
    orphan = store.get_empty_file_store_id(str(half.jobStoreID), cleanup=True)
    store.backend.delete(layout.job_key(str(half.jobStoreID)))  # killed after this step
    assert sorted(orphaned_job_files(store)) == sorted([unborn, orphan])

    store.clean()
    assert orphaned_job_files(store) == []
    assert store.file_exists(kept) and not store.file_exists(unborn)
    store.destroy()


def test_restart_removes_half_deleted_subtree(local_locator: str, toil_config: Any) -> None:
    """A delete_prefix killed mid-removal leaves its subtree in .tmp; a restart removes it.

    The moved directory keeps its old mtime, so it counts as stale at once, and
    removing debris used to fail on it with IsADirectoryError.
    """
    store = JobStore(local_locator)
    store.initialize(toil_config)
    root = new_job(store, "root", b"")
    store.create_job(root)
    store.set_root_job(str(root.jobStoreID))
    tmp = Path(store.backend.root) / ".tmp"  # type: ignore[attr-defined]
    (tmp / "rm-killed" / "files").mkdir(parents=True)
    (tmp / "rm-killed" / "files" / "data").write_bytes(b"x")
    old = time.time() - 3 * 24 * 3600
    os.utime(tmp / "rm-killed", (old, old))
    toil_clean(open_store(local_locator))
    assert not (tmp / "rm-killed").exists()
    store.destroy()
