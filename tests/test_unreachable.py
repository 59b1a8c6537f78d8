"""An S3 endpoint that refuses or stalls: people are told fast, workflows wait it out.

* ``jobstore mount`` and ``toil status`` against a closed port (refusing) and
  against a listener that accepts and never answers (stalling) exit non-zero
  within 10 s with one line naming the endpoint (they took 35-56 s refusing,
  minutes stalling).
* In an interactive process, a request made while every connection is reset
  gives up within seconds, with an error naming the endpoint.
* A real Toil workflow on ``s3:`` behind ``tests/faultproxy.py`` survives a
  60 s outage mid-run: leader and workers keep retrying and the result is right
  (about 90 s; it runs once).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from toil.common import Config

from jobstore import JobStore, layout, patience
from jobstore.s3 import S3Backend, S3Error
from tests.faultproxy import FaultProxy
from tests.mountutil import JOBSTORE
from tests.reliability_lib import toil_env, workflow_command, workflow_result
from tests.s3server import free_port
from tests.workflows import reliability as reliability_workflow

#: What the SPEC's "report in seconds" means for an interactive command.
REPORT_SECONDS = 10.0
OUTAGE_SECONDS = 60.0
TOIL = os.path.join(os.path.dirname(JOBSTORE), "toil")


@contextlib.contextmanager
def stalling_endpoint() -> Iterator[str]:
    """A listener that accepts every connection and never says a word."""
    server = socket.create_server(("127.0.0.1", 0), backlog=64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


@contextlib.contextmanager
def unreachable(kind: str) -> Iterator[str]:
    if kind == "refusing":
        yield f"http://127.0.0.1:{free_port()}"  # nothing listens there
    else:
        with stalling_endpoint() as endpoint:
            yield endpoint


@pytest.mark.parametrize("kind", ["refusing", "stalling"])
def test_interactive_commands_report_an_unreachable_endpoint_fast(
    kind: str, tmp_path: Path, moto_endpoint: str
) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    with unreachable(kind) as endpoint:
        env = {**toil_env(), "AWS_ENDPOINT_URL": endpoint}
        for command in (
            [JOBSTORE, "mount", "s3:jobstore-tests/unreachable", str(mountpoint)],
            [TOIL, "status", "s3:jobstore-tests/unreachable"],
        ):
            start = time.monotonic()
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
            seconds = time.monotonic() - start
            name = os.path.basename(command[0]) + " " + command[1]
            assert done.returncode == 1, done.stderr
            lines = done.stderr.strip().splitlines()
            assert lines and lines[-1].startswith(f"{name}: "), done.stderr
            assert endpoint in lines[-1], done.stderr
            assert "Traceback" not in done.stderr, done.stderr
            assert seconds < REPORT_SECONDS, f"{name} took {seconds:.1f} s: {done.stderr}"
            assert not os.path.ismount(mountpoint)


@pytest.fixture
def behind_proxy(s3_locator: str, moto_endpoint: str) -> Iterator[tuple[FaultProxy, str]]:
    """A store with one object, and a proxy in front of moto that the test can cut."""
    truth = JobStore(s3_locator)
    truth.initialize(Config())
    truth.backend.put_bytes("meta/probe", b"here")
    with FaultProxy(moto_endpoint, rate=0.0, kinds=("reset",)) as proxy:
        yield proxy, s3_locator
    truth.destroy()


def _backend(locator: str, endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3Backend:
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    bucket, _, prefix = locator.removeprefix("s3:").partition("/")
    backend = S3Backend(bucket, prefix + "/")
    backend.client  # noqa: B018 - made now, with this process's patience
    return backend


def _outage(proxy: FaultProxy, seconds: float) -> threading.Thread:
    """Reset every connection through the proxy for ``seconds``, starting now."""
    proxy.rate = 1.0

    def end() -> None:
        time.sleep(seconds)
        proxy.rate = 0.0

    thread = threading.Thread(target=end, daemon=True)
    thread.start()
    return thread


def test_an_interactive_request_gives_up_within_seconds(
    behind_proxy: tuple[FaultProxy, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy, locator = behind_proxy
    monkeypatch.setattr(patience, "_current", patience.INTERACTIVE)
    backend = _backend(locator, proxy.url, monkeypatch)
    proxy.rate = 1.0  # every connection reset, for as long as the test takes
    start = time.monotonic()
    with pytest.raises(S3Error, match=f"no answer from the endpoint {proxy.url}"):
        backend.get_bytes("meta/probe")
    assert time.monotonic() - start < patience.INTERACTIVE.retry_seconds + 2
    assert proxy.faults["reset"] >= 2


def test_workflow_rides_out_a_minute_long_outage(
    behind_proxy: tuple[FaultProxy, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mid-run, every request to the store fails for 60 s; the run must not notice.

    About 100 s; one test, not parametrized, so a CI run pays for it once.
    """
    proxy, locator = behind_proxy
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    gate = tmp_path / "gate"
    gate.mkdir()
    wf_locator = f"{locator}-wf"
    proc = subprocess.Popen(
        workflow_command(wf_locator, tmp_path),
        cwd=tmp_path,
        env=toil_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        watcher = JobStore(wf_locator, backend=_backend(wf_locator, proxy.url, monkeypatch))
        _wait_for_files(watcher, proc)  # mid-run: jobs ran and wrote files
        requests_before = proxy.requests
        ended = _outage(proxy, OUTAGE_SECONDS)
        time.sleep(5)
        (gate / "open").touch()  # the last job may now finish, but cannot reach the store
        ended.join()
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    faulted = proxy.faults["reset"]
    assert proc.returncode == 0, err[-5000:]
    assert workflow_result(subprocess.CompletedProcess([], 0, out, err)) == (
        reliability_workflow.expected()
    )
    assert faulted >= 20 and proxy.requests > requests_before + faulted, dict(proxy.faults)


def _wait_for_files(store: JobStore, proc: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + 120
    while not any(True for _ in store.backend.list(layout.FILES)):
        assert proc.poll() is None, proc.communicate()[1][-5000:]
        assert time.monotonic() < deadline, "the workflow wrote no file in 120 s"
        time.sleep(0.5)
