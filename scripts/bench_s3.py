"""Toil's AWSJobStore and our ``s3:`` store, side by side, against one moto server.

Both stores talk to the same moto server on loopback through a counting HTTP
proxy (a child process, so that it takes no CPU from the stores' own process),
which they reach through boto3's standard ``AWS_ENDPOINT_URL``. The proxy counts
every HTTP request, whoever sends it, so the requests quoted per operation are
what each store really costs on S3, retries and listings included.

Within each repeat the two stores take turns (the order alternates), on fresh
stores, with the same inputs. ``jobs()`` is timed over ``--jobs`` jobs (1,000 by
default, the size the targets name); the per-operation tables do not depend on
the job count, so ``--n`` is not used here. Times are wall-clock medians over
the repeats; ratios are AWSJobStore's time over ours (above 1 we are faster).
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import math
import multiprocessing
import os
import re
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

from benchutil import (
    Results,
    Samples,
    Stopwatch,
    Table,
    arg_parser,
    fmt_ratio,
    fmt_seconds,
    machine_note,
    save_report,
    scratch_dir,
    speedup,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.s3server import FAKE_CREDENTIALS, free_port, moto_server

T = TypeVar("T")

AWS = "AWSJobStore"
OURS = "s3:"
KINDS = (AWS, OURS)
REGION = "us-west-2"
BUCKET = "jobstore-bench"
SMALL = b"x" * 4096
SHARED = b"s" * 1024
#: Hop-by-hop headers a proxy must not pass on (RFC 9110), plus Expect: we answer 100-continue.
_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "expect"}


# ------------------------------------------------------------ counting proxy


def _serve_proxy(
    port: int,
    upstream: str,
    counter: Any,
    ready: Any,
    delay: float = 0.0,
    marked: tuple[tuple[str, Any], ...] = (),
) -> None:
    """Forward every request to ``upstream`` after ``delay`` seconds, counting each one.

    ``counter`` counts them all; each ``(mark, counter)`` of ``marked`` counts
    those whose ``METHOD /path?query`` the regular expression ``mark`` matches.
    A thread serves each connection, so the delay holds up no other request.
    """
    host, _, upstream_port = upstream.removeprefix("http://").partition(":")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes: without this, Nagle's
        # algorithm and the client's delayed ACKs add 40 ms to many responses.
        disable_nagle_algorithm = True

        def log_message(self, *args: Any) -> None:
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _forward(self) -> None:
            request = f"{self.command} {self.path}"
            for mark, count in ((None, counter), *marked):
                if mark is None or re.search(mark, request):
                    with count.get_lock():
                        count.value += 1
            body = self._body()
            if delay:
                time.sleep(delay)
            if self.command == "PUT" and b"BlockedEncryptionTypes" in body:
                # Toil unblocks SSE-C on the buckets it creates with a rule that AWS
                # added in 2025 and moto cannot parse yet: accept it here, as AWS does.
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            headers = {
                k: v
                for k, v in self.headers.items()
                if k.lower() not in _HOP and k.lower() != "transfer-encoding"
            }
            headers["Content-Length"] = str(len(body))
            # moto's server (werkzeug) closes every connection after one response.
            upstream_conn = http.client.HTTPConnection(host, int(upstream_port))
            upstream_conn.connect()
            upstream_conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with contextlib.closing(upstream_conn):
                upstream_conn.request(self.command, self.path, body=body, headers=headers)
                response = upstream_conn.getresponse()
                data = response.read()
            self.send_response(response.status, response.reason)
            for k, v in response.getheaders():
                if k.lower() not in _HOP and k.lower() not in (
                    "transfer-encoding",
                    "content-length",
                ):
                    self.send_header(k, v)
            length = response.getheader("Content-Length")
            self.send_header(
                "Content-Length", length if self.command == "HEAD" and length else str(len(data))
            )
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    ready.set()
    server.serve_forever()


class CountingProxy:
    """A loopback HTTP proxy in a child process; ``count`` is the requests it has forwarded.

    ``delay`` seconds are added to every request, as a network's round trip
    would (the moto server is on loopback); ``marks`` are regular expressions
    for the ``METHOD /path?query`` of requests that :meth:`marked` counts apart.
    """

    def __init__(self, upstream: str, delay: float = 0.0, marks: tuple[str, ...] = ()) -> None:
        ctx = multiprocessing.get_context("fork")
        self._counter = ctx.Value("q", 0)
        self._marked = {mark: ctx.Value("q", 0) for mark in marks}
        ready = ctx.Event()
        port = free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        self._process = ctx.Process(
            target=_serve_proxy,
            args=(port, upstream, self._counter, ready, delay, tuple(self._marked.items())),
            daemon=True,
        )
        self._process.start()
        if not ready.wait(30):
            raise RuntimeError("the counting proxy did not start")

    @property
    def count(self) -> int:
        return int(self._counter.value)

    def marked(self, mark: str) -> int:
        """The requests forwarded so far that ``mark`` matched."""
        return int(self._marked[mark].value)

    def close(self) -> None:
        self._process.terminate()
        self._process.join(10)


# ------------------------------------------------------------------- stores


def new_name() -> str:
    return f"bench-{uuid.uuid4().hex[:12]}"


def open_store(kind: str, name: str, new: bool = True) -> Any:
    """The store ``name`` of ``kind``: initialised when ``new``, else resumed."""
    from toil.common import Config, Toil

    from jobstore import JobStore

    store = (
        Toil.getJobStore(f"aws:{REGION}:{name}") if kind == AWS else JobStore(f"s3:{BUCKET}/{name}")
    )
    if new:
        store.initialize(Config())
    else:
        store.resume()
    return store


@contextlib.contextmanager
def endpoint(url: str) -> Iterator[None]:
    """Clients made in the block reach ``url`` (clients keep the endpoint they were made with)."""
    saved = os.environ["AWS_ENDPOINT_URL"]
    os.environ["AWS_ENDPOINT_URL"] = url
    try:
        yield
    finally:
        os.environ["AWS_ENDPOINT_URL"] = saved


def new_description(i: int) -> Any:
    from toil.job import JobDescription

    return JobDescription(
        requirements={"memory": 2**31, "cores": 1, "disk": 2**31, "preemptible": False},
        jobName="bench_job",
        unitName=f"unit{i}",
    )


# -------------------------------------------------------------- measurement


@dataclass
class Result:
    """One operation on one store: time per operation and requests per operation, per repeat."""

    times: Samples = field(default_factory=Samples)
    requests: list[float] = field(default_factory=list)

    @property
    def requests_per_op(self) -> float:
        return sorted(self.requests)[len(self.requests) // 2]


class Meter:
    """Every result of a run, by store and operation, in the order first measured."""

    def __init__(self, proxy: CountingProxy) -> None:
        self.proxy = proxy
        self.results: dict[tuple[str, str], Result] = {}
        self.order: list[str] = []
        #: Objects each kind of store held when destroyed (the same in every repeat).
        self.destroyed_objects: dict[str, int] = {}

    def result(self, kind: str, op: str) -> Result:
        if op not in self.order:
            self.order.append(op)
        return self.results.setdefault((kind, op), Result())

    def measure(
        self,
        kind: str,
        op: str,
        ops: int,
        fn: Callable[[], T],
        timed: bool = True,
        counted: bool = True,
    ) -> T:
        """Time ``fn`` (doing ``ops`` operations), count the requests it sent; its result."""
        result = self.result(kind, op)
        before = self.proxy.count
        start = time.perf_counter()
        value = fn()
        if timed:
            result.times.add(time.perf_counter() - start, ops)
        if counted:
            result.requests.append((self.proxy.count - before) / ops)
        return value

    def alternate(
        self,
        op: str,
        ops: int,
        slices: int,
        work: Mapping[str, Callable[[range], object]],
    ) -> None:
        """Run ``ops`` operations on each store in slices, the order flipping every slice.

        So both stores meet the same background load, however it drifts.
        """
        watches = {kind: Stopwatch() for kind in work}
        requests = dict.fromkeys(work, 0)
        size = math.ceil(ops / slices)
        for n, first in enumerate(range(0, ops, size)):
            span = range(first, min(ops, first + size))
            for kind in KINDS if n % 2 == 0 else KINDS[::-1]:
                before = self.proxy.count
                with watches[kind].running():
                    work[kind](span)
                requests[kind] += self.proxy.count - before
        for kind, watch in watches.items():
            result = self.result(kind, op)
            result.times.add(watch.seconds, ops)
            result.requests.append(requests[kind] / ops)

    def __getitem__(self, key: tuple[str, str]) -> Result:
        return self.results[key]


@dataclass
class State:
    """What one store's earlier steps left for the later ones."""

    jobs: list[Any] = field(default_factory=list)
    streams: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    logs: list[bytes] = field(default_factory=list)


def create_jobs(store: Any, st: State, span: range) -> None:
    for job in st.jobs[span.start : span.stop]:
        store.assign_job_id(job)
        store.create_job(job)


def load_jobs(store: Any, st: State, span: range) -> None:
    for job in st.jobs[span.start : span.stop]:
        store.load_job(job.jobStoreID)


def update_jobs(store: Any, st: State, span: range) -> None:
    for job in st.jobs[span.start : span.stop]:
        store.update_job(job)


def write_streams(store: Any, st: State, span: range) -> None:
    for _ in span:
        with store.write_file_stream() as (f, file_id):
            f.write(SMALL)
        st.streams.append(file_id)


def write_files(store: Any, st: State, span: range, src: Path) -> None:
    st.files.extend(store.write_file(str(src)) for _ in span)


def read_files(store: Any, st: State, span: range, out: Path) -> None:
    for file_id in st.files[span.start : span.stop]:
        store.read_file(file_id, str(out))


def read_streams(store: Any, st: State, span: range) -> None:
    for file_id in st.streams[span.start : span.stop]:
        with store.read_file_stream(file_id) as r:
            if r.read() != SMALL:
                raise AssertionError("read_file_stream returned other bytes")


def check_files(store: Any, st: State, span: range) -> None:
    if not all(store.file_exists(f) for f in st.streams[span.start : span.stop]):
        raise AssertionError("a file does not exist")


def size_files(store: Any, st: State, span: range) -> None:
    if any(store.get_file_size(f) != len(SMALL) for f in st.streams[span.start : span.stop]):
        raise AssertionError("a file has another size")


def delete_files(store: Any, st: State, span: range) -> None:
    for file_id in st.files[span.start : span.stop]:
        store.delete_file(file_id)


def write_shared(store: Any, st: State, span: range) -> None:
    for i in span:
        with store.write_shared_file_stream(f"bench-{i}") as w:
            w.write(SHARED)


def read_shared(store: Any, st: State, span: range) -> None:
    for i in span:
        with store.read_shared_file_stream(f"bench-{i}") as r:
            r.read()


def log_message(i: int) -> bytes:
    return f"log message {i:06d}".encode()


def write_logs(store: Any, st: State, span: range) -> None:
    for i in span:
        store.write_logs(log_message(i))


def read_logs(store: Any, st: State, span: range) -> None:
    """Reads every message at once (one slice): the per-call costs spread over all of them."""
    store.read_logs(lambda f: st.logs.append(f.read()))
    if st.logs != [log_message(i) for i in span]:
        raise AssertionError(f"read_logs returned {len(st.logs)} of {len(span)} messages")


def delete_jobs(store: Any, st: State, span: range) -> None:
    for job in st.jobs[span.start : span.stop]:
        store.delete_job(job.jobStoreID)


Step = Callable[[Any, State, range], None]


def bench_operations(meter: Meter, ops: int, slices: int, scratch: Path, moto: str) -> None:
    """Every per-operation measurement on a fresh pair of stores, ending with their destroy."""
    stores = {kind: open_store(kind, new_name()) for kind in KINDS}
    states = {kind: State(jobs=[new_description(i) for i in range(ops)]) for kind in KINDS}
    src = scratch / "small"
    src.write_bytes(SMALL)
    steps: list[tuple[str, Step]] = [
        ("create_job", create_jobs),
        ("load_job", load_jobs),
        ("update_job", update_jobs),
        ("write_file_stream 4 KiB", write_streams),
        ("write_file 4 KiB", functools.partial(write_files, src=src)),
        ("read_file", functools.partial(read_files, out=scratch / "out")),
        ("read_file_stream", read_streams),
        ("file_exists", check_files),
        ("get_file_size", size_files),
        ("delete_file", delete_files),
        ("write shared file 1 KiB", write_shared),
        ("read shared file", read_shared),
        ("write_logs", write_logs),
        ("read_logs (per message)", read_logs),
        ("delete_job (no files)", delete_jobs),
    ]
    for op, step in steps:
        work = {kind: functools.partial(step, stores[kind], states[kind]) for kind in KINDS}
        meter.alternate(op, ops, 1 if step is read_logs else slices, work)
    for kind, store in stores.items():
        objects = count_objects(store, moto)
        meter.measure(kind, "destroy (per object)", objects, store.destroy)
        meter.destroyed_objects[kind] = objects


def count_objects(store: Any, moto: str) -> int:
    """How many objects the store holds, counted straight at moto (not through the proxy)."""
    import boto3

    client = boto3.session.Session().client("s3", endpoint_url=moto)
    if hasattr(store, "backend"):
        bucket, prefix = store.backend.bucket, store.backend.prefix
    else:
        bucket, prefix = store.bucket_name, ""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sum(len(page.get("Contents", [])) for page in pages)


def count_jobs(store: Any) -> int:
    return sum(1 for _ in store.jobs())


def bench_jobs(meter: Meter, n: int, repeat: int, moto: str) -> None:
    """``jobs()`` over ``n`` jobs, in stores filled once, taking turns.

    Requests are counted in one pass through the proxy; the timed passes go
    straight to moto, because the proxy (one Python process) would itself cap
    how much concurrent loading can gain.
    """
    op = f"jobs() over {n:,} jobs"
    names = {kind: new_name() for kind in KINDS}
    stores = {kind: open_store(kind, names[kind]) for kind in KINDS}
    for kind, store in stores.items():
        for job in (new_description(i) for i in range(n)):
            store.assign_job_id(job)
            store.create_job(job)
        listed = meter.measure(kind, op, 1, functools.partial(count_jobs, store), timed=False)
        if listed != n:
            raise AssertionError(f"{kind}: jobs() returned {listed} of {n} jobs")
    with endpoint(moto):
        direct = {kind: open_store(kind, names[kind], new=False) for kind in KINDS}
    for rep in range(repeat):
        for kind in KINDS if rep % 2 == 0 else KINDS[::-1]:
            jobs = functools.partial(count_jobs, direct[kind])
            if meter.measure(kind, op, 1, jobs, counted=False) != n:
                raise AssertionError(f"{kind}: jobs() lost jobs")
    for store in stores.values():
        store.destroy()


# ------------------------------------------------------------------- report

#: Our request budget per operation (the targets); destroy's is computed from the object count.
ONE_REQUEST = {
    "read_file",
    "read_file_stream",
    "file_exists",
    "get_file_size",
    "delete_file",
    "write_file_stream 4 KiB",
    "write shared file 1 KiB",
    "delete_job (no files)",
}
LOG_BUDGET = 1.1
JOBS_SPEEDUP = 2.0


def report(
    meter: Meter, repeat: int, jobs_n: int, ops: int, results: Results
) -> tuple[str, list[str]]:
    missed: list[str] = []
    table = Table(
        f"{ops} operations per repeat, median of {repeat} repeats; requests counted at the proxy",
        ["operation", AWS, "req/op", OURS, "req/op", "ratio", "target", ""],
    )
    for op in meter.order:
        theirs, ours = meter[(AWS, op)], meter[(OURS, op)]
        ratio = speedup(ours.times, theirs.times)
        # Paired by sample where the two stores took as many (one per repeat or slice).
        paired = zip(ours.times.per_op, theirs.times.per_op, strict=False)
        samples = len(ours.times.per_op) == len(theirs.times.per_op)
        values = [t / o for o, t in paired if o > 0] if samples else [ratio]
        results.ratio(op, jobs_n if op.startswith("jobs()") else None, values, f"{AWS} / {OURS}")
        checks: list[tuple[str, bool]] = []
        if op.startswith("jobs()"):
            checks.append((f">= {JOBS_SPEEDUP:g}x", ratio >= JOBS_SPEEDUP))
        else:
            checks.append((">= 1x", ratio >= 1.0))
        if op in ONE_REQUEST:
            checks.append(("1 req", ours.requests_per_op <= 1.0))
        elif op == "read_logs (per message)":
            checks.append((f"<= {LOG_BUDGET} req", ours.requests_per_op <= LOG_BUDGET))
        elif op == "destroy (per object)":
            objects = meter.destroyed_objects[OURS]
            budget = (2 * math.ceil(objects / 1000) + 1) / objects
            checks.append((f"<= {budget:.3g} req", ours.requests_per_op <= budget))
        for what, ok in checks:
            if not ok:
                missed.append(f"{op}: {what}")
        table.row(
            op,
            fmt_seconds(theirs.times.median),
            f"{theirs.requests_per_op:.3g}",
            fmt_seconds(ours.times.median),
            f"{ours.requests_per_op:.3g}",
            fmt_ratio(ratio),
            ", ".join(w for w, _ in checks),
            "ok" if all(ok for _, ok in checks) else "MISS",
        )
    return table.render(), missed


# --------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = arg_parser(__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--ops", type=int, default=100, help="operations per measurement (default 100)"
    )
    parser.add_argument(
        "--jobs", type=int, default=1000, help="jobs listed by jobs() (default 1000)"
    )
    parser.add_argument(
        "--slices",
        type=int,
        default=10,
        help="slices each measurement is cut into, the stores taking turns (default 10)",
    )
    args = parser.parse_args(argv)

    os.environ.update(FAKE_CREDENTIALS)
    os.environ["AWS_DEFAULT_REGION"] = REGION
    for var in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        os.environ.pop(var, None)
    lines = [f"bench_s3: Toil's AWSJobStore vs s3: on moto  {machine_note()}"]
    with (
        scratch_dir("bench-s3-", args.tmp) as scratch,
        moto_server(str(scratch / "moto.log")) as moto,
    ):
        proxy = CountingProxy(moto)
        try:
            os.environ["AWS_ENDPOINT_URL"] = proxy.endpoint
            meter = Meter(proxy)
            for _ in range(args.repeat):
                bench_operations(meter, args.ops, args.slices, scratch, moto)
            bench_jobs(meter, args.jobs, args.repeat, moto)
        finally:
            proxy.close()
    results = Results()
    table, missed = report(meter, args.repeat, args.jobs, args.ops, results)
    lines += [table, "Targets missed: " + ("; ".join(missed) if missed else "none")]
    text = "\n\n".join(lines)
    print(text)
    print(f"\n(report saved to {save_report('bench_s3', text, results)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
