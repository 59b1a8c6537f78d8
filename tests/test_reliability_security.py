"""Security: stores stay their owner's, on disk and in S3.

* ``local:``: a real unprivileged user (``nobody``) can neither list nor read
  anything of a store written under umask 0, although every directory above it
  is open to all; a file beside the store, readable by all, proves the check
  would see a leak.
* ``s3:``: a workload over every write path goes through a recording proxy:
  no request carries an ACL or grant header, or touches a bucket's ACL,
  policy or public-access settings; afterwards (asked through the API) the
  bucket's ACL, policy and public-access block are what they were, every
  object's ACL grants its owner alone, and shared URLs are signed and expire.

That no name reaches outside a store is proven by the bad-input tests; that a
mount is private unless ``-o allow_other`` is given, by ``tests/test_mount.py``
(as ``nobody``, with and without the option).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from toil.job import JobDescription

from jobstore import JobStore
from tests.faultproxy import FaultProxy
from tests.reliability_lib import make_payload, record

MiB = 1 << 20
REQUIREMENTS = {"memory": 1, "cores": 1, "disk": 1, "preemptible": False}
NOBODY = 65534
#: Tries every path given: prints the ones this user could open or list.
PROBE = """
import os, sys
for p in sys.argv[1:]:
    try:
        os.listdir(p) if os.path.isdir(p) else open(p, "rb").close()
    except OSError:
        continue
    print(p)
"""


def workload(store: JobStore, scratch: Path) -> None:
    """One of every write, executable files and a multipart-sized one included."""
    job = JobDescription(requirements=REQUIREMENTS, jobName="secret")
    store.assign_job_id(job)
    store.create_job(job)
    script = scratch / "script.sh"
    script.write_bytes(b"#!/bin/sh\necho secret\n")
    script.chmod(0o777)
    store.write_file(str(script), job_id=str(job.jobStoreID), cleanup=True)
    big = scratch / "big"
    big.write_bytes(make_payload("big", 1, 9 * MiB))
    file_id = store.write_file(str(big), hints=["secret", "task"])
    with store.write_file_stream(basename="stream") as (f, _):
        f.write(make_payload("stream", 1, 9 * MiB))
    with store.update_file_stream(file_id) as f:
        f.write(b"updated")
    with store.write_shared_file_stream("rel-secret") as f:
        f.write(b"shared secret")
    store.write_logs("a secret log message")
    store.read_logs(lambda m: None)
    store.update_job(job)
    store.get_public_url(file_id)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None or not os.path.exists("/usr/bin/python3"),
    reason="needs root, setpriv and a system python to act as nobody",
)
def test_local_store_unreadable_by_another_user(toil_config: Any, tmp_path: Path) -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as base:
        os.chmod(base, 0o755)  # open to all: only the store's own modes can protect it
        control = Path(base, "readable-by-all")
        control.write_text("public")
        control.chmod(0o644)
        old = os.umask(0)
        try:
            store = JobStore(f"local:{base}/store")
            store.initialize(toil_config)
            workload(store, tmp_path)
        finally:
            os.umask(old)
        paths = [str(p) for p in Path(base, "store").rglob("*")]
        assert len(paths) > 15
        probe = subprocess.run(
            [
                "setpriv",
                f"--reuid={NOBODY}",
                f"--regid={NOBODY}",
                "--clear-groups",
                "/usr/bin/python3",
                "-c",
                PROBE,
                str(control),
                f"{base}/store",
                *paths,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        opened = probe.stdout.split()
        assert opened == [str(control)], f"another user could open: {opened[1:6]}"
        record("security", "local", objects_probed=len(paths) + 1, readable_by_others=0)
        store.destroy()


@pytest.fixture
def recorded(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[FaultProxy, Any]]:
    """A recording proxy in front of moto, and a client that bypasses it."""
    import boto3
    from botocore.config import Config

    direct = boto3.client(
        "s3", endpoint_url=moto_endpoint, config=Config(retries={"max_attempts": 1})
    )
    with FaultProxy(moto_endpoint, record=True) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        yield proxy, direct


def bucket_access(client: Any, bucket: str) -> dict[str, Any]:
    """Everything that decides who may read a bucket, as the API reports it."""
    access: dict[str, Any] = {"acl": client.get_bucket_acl(Bucket=bucket)["Grants"]}
    for name, call, missing in [
        ("policy", client.get_bucket_policy, "NoSuchBucketPolicy"),
        ("block", client.get_public_access_block, "NoSuchPublicAccessBlockConfiguration"),
    ]:
        try:
            response = call(Bucket=bucket)
            response.pop("ResponseMetadata", None)
            access[name] = response
        except ClientError as e:
            assert e.response["Error"]["Code"] == missing, e
            access[name] = None
    return access


@pytest.mark.parametrize("bucket_exists", [True, False])
def test_s3_never_makes_anything_public(
    recorded: tuple[FaultProxy, Any], toil_config: Any, tmp_path: Path, bucket_exists: bool
) -> None:
    proxy, direct = recorded
    bucket = f"jobstore-sec-{os.urandom(4).hex()}"
    locator = f"s3:{bucket}/run"
    if bucket_exists:  # the owner's settings must survive the store
        direct.create_bucket(Bucket=bucket)
        direct.put_public_access_block(
            Bucket=bucket,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
        before = bucket_access(direct, bucket)
    store = JobStore(locator)
    store.initialize(toil_config)
    workload(store, tmp_path)
    url = store.get_public_url(next(iter(_file_ids(store))))

    # No request asked for public access, or touched who may read the bucket.
    for method, path, headers in proxy.seen:
        query = urllib.parse.urlsplit(path).query
        assert not {h for h in headers if h == "x-amz-acl" or h.startswith("x-amz-grant-")}, path
        assert not {"acl", "policy", "publicAccessBlock", "ownershipControls", "cors"} & set(
            urllib.parse.parse_qs(query, keep_blank_values=True)
        ), f"{method} {path}"
    # Shared URLs are presigned, and expire.
    params = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert "X-Amz-Signature" in params and 0 < int(params["X-Amz-Expires"][0]) <= 7 * 24 * 3600

    # The API agrees: the bucket's access is as it was, each object is its owner's alone.
    after = bucket_access(direct, bucket)
    if bucket_exists:
        assert after == before
    else:
        assert after["policy"] is None
        assert [g["Permission"] for g in after["acl"]] == ["FULL_CONTROL"]
    owner = direct.get_bucket_acl(Bucket=bucket)["Owner"]["ID"]
    keys = [o["Key"] for o in direct.list_objects_v2(Bucket=bucket, Prefix="run/")["Contents"]]
    assert len(keys) > 8
    multipart = {
        urllib.parse.unquote(urllib.parse.urlsplit(path).path).split("/", 2)[2]
        for method, path, _ in proxy.seen
        if method == "POST" and "uploadId=" in path
    }
    unreported = 0
    for key in keys:
        try:
            grants = direct.get_object_acl(Bucket=bucket, Key=key)["Grants"]
        except ClientError as e:
            # moto keeps no ACL for objects made by multipart upload and fails to report
            # one; that no request ever set an ACL was checked above.
            assert key in multipart and e.response["Error"]["Code"] in ("500", "InternalError"), e
            unreported += 1
            continue
        assert [(g["Grantee"].get("ID"), g["Permission"]) for g in grants] == [
            (owner, "FULL_CONTROL")
        ], key
    record(
        "security",
        f"s3:{'existing' if bucket_exists else 'new'}-bucket",
        requests_checked=len(proxy.seen),
        objects_checked=len(keys),
        acl_not_reported_by_moto=unreported,
        public=0,
    )
    store.destroy()
    direct.delete_bucket(Bucket=bucket)


def _file_ids(store: JobStore) -> Iterator[str]:
    return (k.removeprefix("files/") for k in store.backend.list("files/"))
