"""The ``s3:`` backend: a key prefix in an S3 bucket, on AWS or any S3-compatible service.

Everything goes through boto3's standard configuration (endpoint from
``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``, region, credentials, profiles)
and only the common S3 API, so MinIO and Ceph RGW work as AWS does.

Why it is fast where Toil's own S3 store is slow: a key maps straight to an
object (``<prefix><key>``), so reading, sizing, checking or deleting one object
is exactly one request and never a LIST; small writes, streamed or not, are
one PutObject; deletes of many objects go 1,000 to a DeleteObjects request.

Deleting a job costs two requests, not one, even when it has no files: its
DELETE, and a LIST of the prefix of the files written with ``cleanup=True``,
sent side by side (so the wait is one round trip), with the files deleted
only after the description. Only a request can tell whether another process
(a worker) wrote files for the job: a marker it leaves would have to be read,
and a flag carried in the description's metadata can be stale in the deleting
process (a worker that wrote files and died before updating the job), which
would leak those files. Putting the files under the description's key would
make every ``jobs()`` listing walk every job's files.

Atomicity comes from S3 itself: a PutObject or a completed multipart upload
replaces an object at once, and an aborted multipart upload leaves nothing.

Encryption: when Toil's config names an ``sseKey`` (a file holding a 32-byte
key), every object but ``shared/config.pickle`` is stored with SSE-C. As in
Toil's own store, the config is read live, so the config object stays the one
source of truth. Each encrypted object also records the MD5 of its key in its
metadata (S3 itself returns the same digest in a header), so a read with a
missing or wrong key fails with a clear error even on servers that do not
enforce SSE-C. Presigned URLs of SSE-C objects need the key headers as well, so
plain ``urllib`` cannot fetch them.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import logging
import os
import shutil
import stat
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, BinaryIO

from botocore.exceptions import BotoCoreError, ClientError
from s3transfer.subscribers import BaseSubscriber
from urllib3.exceptions import HTTPError as Urllib3Error

from jobstore import layout
from jobstore.backend import Backend, BackendError, DirEntry, NotFound, ObjectInfo, StoreExists

if TYPE_CHECKING:
    from toil.common import Config

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
#: Part size of multipart uploads and the size below which a write is a single PutObject.
PART_SIZE = 8 * MiB
#: Parts a streamed write keeps in flight; memory per stream is about (this + 1) parts.
STREAM_PARTS = 3
#: Threads of the transfer manager that moves whole files (``put_file``/``get_file``).
TRANSFER_THREADS = 8
#: Requests worth running side by side (``JobStore.jobs()`` loads this many at once).
CONCURRENCY = 16
#: Unfinished multipart uploads older than this are debris of killed writers (see local.py).
STALE_UPLOAD_SECONDS = 24 * 3600
#: S3's limit on keys per DeleteObjects request.
DELETE_BATCH = 1000
#: Lifetime of presigned URLs (SigV4 allows up to a week; temporary credentials end sooner).
URL_SECONDS = 24 * 3600
#: Retry attempts (botocore's standard mode: exponential backoff for throttling and 5xx).
MAX_ATTEMPTS = 8
#: Attempts at reading one response body. botocore retries a request whose
#: response never came, but not a body cut off mid-way (a reset or a proxy
#: giving up): that is retried here, resuming where the data stopped.
READ_ATTEMPTS = MAX_ATTEMPTS

#: What a body cut off mid-way raises, depending on where urllib3 notices.
_BODY_ERRORS = (BotoCoreError, Urllib3Error, ConnectionError)

_EXECUTABLE = "executable"
_SSE_MD5 = "sse-c-key-md5"
_NOT_FOUND = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchUpload", "NotFound", "404"})
_ENV_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION")


class S3Error(BackendError):
    """An S3 request failed after botocore's retries; names the object and the cause."""


class EncryptionKeyError(S3Error):
    """An object cannot be read with the SSE-C key (or lack of one) this store has."""


def _error_code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


class S3Backend(Backend):
    """Objects under ``<prefix>`` in ``bucket``.

    Constructing one touches nothing: the client is created on first use, so
    ``JobStore(locator)`` stays cheap. Stores must not nest: a store's
    ``destroy`` deletes every key under its prefix, and a store at the root of
    a bucket owns the whole bucket.
    """

    concurrency = CONCURRENCY
    prefers_caching = True

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        part_size: int = PART_SIZE,
        stream_parts: int = STREAM_PARTS,
    ) -> None:
        if prefix and not prefix.endswith("/"):
            raise ValueError(f"an S3 prefix must end in '/': {prefix!r}")
        self.bucket = bucket
        self.prefix = prefix
        self.part_size = part_size
        self.stream_parts = stream_parts
        self._config: Config | None = None
        self._keys: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._connected: tuple[Any, Any, int] | None = None

    def __repr__(self) -> str:
        return f"S3Backend({self.bucket!r}, {self.prefix!r})"

    # --------------------------------------------------------------- client

    @property
    def client(self) -> Any:
        """The boto3 S3 client, made on first use (and anew in a forked child)."""
        return self._connection()[0]

    @property
    def transfer(self) -> Any:
        """boto3's transfer manager over the same client: concurrent parts for whole files."""
        return self._connection()[1]

    def _connection(self) -> tuple[Any, Any]:
        connection = self._connected
        if connection is None or connection[2] != os.getpid():
            with self._lock:
                connection = self._connected
                if connection is None or connection[2] != os.getpid():
                    connection = self._connected = self._connect()
        return connection[0], connection[1]

    def _connect(self) -> tuple[Any, Any, int]:
        import boto3.session
        from boto3.s3.transfer import TransferConfig, create_transfer_manager
        from botocore.config import Config as BotoConfig

        client = boto3.session.Session().client(
            "s3",
            config=BotoConfig(
                retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
                # SigV4 everywhere, presigned URLs included (SigV2 is gone from newer regions).
                signature_version="s3v4",
                max_pool_connections=CONCURRENCY + TRANSFER_THREADS,
            ),
        )
        transfer_config = TransferConfig(
            multipart_threshold=self.part_size,
            multipart_chunksize=self.part_size,
            max_concurrency=TRANSFER_THREADS,
            # The CRT client would bypass this client's configuration and event hooks.
            preferred_transfer_client="classic",
        )
        return client, create_transfer_manager(client, transfer_config), os.getpid()

    def _url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    @contextlib.contextmanager
    def _errors(self, op: str, key: str, missing_ok: bool = False) -> Iterator[None]:
        """Turn botocore's exceptions into ours.

        A 404 is :class:`NotFound`, or nothing at all with ``missing_ok``;
        except for writes, where it means the bucket is gone: an error like
        any other.
        """
        try:
            yield
        except ClientError as e:
            code = _error_code(e)
            if code in _NOT_FOUND and op != "PUT":
                if not missing_ok:
                    raise NotFound(key) from None
                return
            raise self._failure(op, key, e) from e
        except BotoCoreError as e:
            raise self._failure(op, key, e) from e

    def _failure(self, op: str, key: str, e: Exception) -> S3Error:
        hint = ""
        if (
            isinstance(e, ClientError)
            and op in ("GET", "HEAD")
            and key != layout.CONFIG
            and e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (400, 403)
        ):
            hint = " (objects stored with SSE-C need the sseKey they were written with)"
        return S3Error(f"S3 {op} {self._url(key)} failed: {e}{hint}")

    # ----------------------------------------------------------- encryption

    def configure(self, config: Config) -> None:
        """Use Toil's config for SSE-C from now on (read live, as Toil's own store does)."""
        self._config = config

    def _sse_key(self, key: str) -> bytes | None:
        if key == layout.CONFIG or self._config is None:
            return None
        path = getattr(self._config, "sseKey", None)
        if not path:
            return None
        secret = self._keys.get(path)
        if secret is None:
            with open(path, "rb") as f:
                secret = f.read()
            if len(secret) != 32:
                raise EncryptionKeyError(
                    f"the sseKey file {path} holds {len(secret)} bytes; SSE-C needs exactly 32"
                )
            self._keys[path] = secret
        return secret

    def _sse(self, key: str) -> dict[str, Any]:
        secret = self._sse_key(key)
        if secret is None:
            return {}
        return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": secret}

    def _metadata(self, key: str, executable: bool) -> dict[str, str]:
        meta = {_EXECUTABLE: "1"} if executable else {}
        secret = self._sse_key(key)
        if secret is not None:
            meta[_SSE_MD5] = _md5(secret)
        return meta

    def _check_key(self, key: str, metadata: dict[str, str]) -> None:
        secret = self._sse_key(key)
        ours = None if secret is None else _md5(secret)
        stored = metadata.get(_SSE_MD5)
        if stored == ours:
            return
        if ours is None:
            why = "is encrypted with SSE-C, but this store has no sseKey in its config"
        elif stored is None:
            why = "is stored without encryption, but this store's config names an sseKey"
        else:
            why = "is encrypted with a different SSE-C key than this store's sseKey"
        raise EncryptionKeyError(f"{self._url(key)} {why}")

    # ----------------------------------------------------------- lifecycle

    def initialize(self) -> None:
        """Create the bucket when missing; refuse a prefix that already holds objects.

        The bucket is created with S3's defaults (private, public access
        blocked on AWS); its ACLs, policy and public-access settings are never
        touched.
        """
        for _ in range(3):
            try:
                with self._errors("LIST", ""):
                    page = self.client.list_objects_v2(
                        Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1
                    )
            except NotFound:  # no such bucket
                self._create_bucket()
                continue
            if page.get("KeyCount", 0):
                raise StoreExists(f"s3://{self.bucket}/{self.prefix} already holds objects")
            return
        raise S3Error(f"the bucket {self.bucket} was created but cannot be listed")

    def _create_bucket(self) -> None:
        region = self.client.meta.region_name
        args: dict[str, Any] = {}
        if region not in (None, "us-east-1", "aws-global"):
            args["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self.client.create_bucket(Bucket=self.bucket, **args)
        except ClientError as e:
            if _error_code(e) != "BucketAlreadyOwnedByYou":  # a concurrent initialize
                raise S3Error(f"cannot create the bucket {self.bucket}: {e}") from e
        except BotoCoreError as e:
            raise S3Error(f"cannot create the bucket {self.bucket}: {e}") from e
        logger.info("Created the S3 bucket %s", self.bucket)

    def destroy(self) -> None:
        """Delete every object under the prefix and abort unfinished uploads there.

        The bucket itself is left in place, even when empty: it may hold other
        stores or other data, and its settings are its owner's. Idempotent: a
        missing bucket or an empty prefix is nothing to do.
        """
        self.delete_prefix("")
        self._abort_uploads(started_before=None)

    def remove_debris(self) -> None:
        """Abort multipart uploads that writers killed long ago left open (S3 bills them)."""
        self._abort_uploads(started_before=time.time() - STALE_UPLOAD_SECONDS)

    def _abort_uploads(self, started_before: float | None) -> None:
        paginator = self.client.get_paginator("list_multipart_uploads")
        with self._errors("LIST-UPLOADS", "", missing_ok=True):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for upload in page.get("Uploads", []):
                    initiated = upload.get("Initiated")
                    if started_before is not None and (
                        initiated is None or initiated.timestamp() >= started_before
                    ):
                        continue
                    with self._errors("ABORT", upload["Key"], missing_ok=True):
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )

    def env(self) -> dict[str, str]:
        """Where the service is (endpoint, region), never credentials."""
        return {k: os.environ[k] for k in _ENV_VARS if os.environ.get(k)}

    # --------------------------------------------------------------- writes

    def put_bytes(self, key: str, data: bytes | bytearray, executable: bool = False) -> None:
        with self._errors("PUT", key):
            self.client.put_object(
                Bucket=self.bucket,
                Key=self.prefix + key,
                Body=data,
                Metadata=self._metadata(key, executable),
                **self._sse(key),
            )

    def put_file(self, key: str, path: str, executable: bool = False) -> None:
        """One PutObject for a small file; boto3's concurrent multipart upload for a large one."""
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):  # a pipe or device: its size says nothing
                with self.writer(key, executable) as out:
                    shutil.copyfileobj(f, out, MiB)
                return
            if st.st_size < self.part_size:
                # What the transfer manager would send, without its hand-offs between threads.
                self.put_bytes(key, f.read(), executable)
                return
        extra = {"Metadata": self._metadata(key, executable), **self._sse(key)}
        with self._errors("PUT", key):
            self.transfer.upload(path, self.bucket, self.prefix + key, extra_args=extra).result()

    @contextlib.contextmanager
    def writer(self, key: str, executable: bool = False) -> Iterator[BinaryIO]:
        upload = _StreamUpload(self, key, executable)
        try:
            yield upload  # type: ignore[misc]
            upload.finish()
        except BaseException:
            upload.abort()
            raise

    def put_if_absent(self, key: str) -> bool:
        # A conditional write: S3 (since 2024), MinIO and Ceph RGW refuse it with
        # 412 when the key exists, so two racing claimants cannot both win.
        for _ in range(5):
            try:
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=self.prefix + key,
                    Body=b"",
                    IfNoneMatch="*",
                    Metadata=self._metadata(key, False),
                    **self._sse(key),
                )
                return True
            except ClientError as e:
                code = _error_code(e)
                if code == "PreconditionFailed":
                    return False
                if code != "ConditionalRequestConflict":  # 409: a racing write; ask again
                    raise self._failure("PUT", key, e) from e
            except BotoCoreError as e:
                raise self._failure("PUT", key, e) from e
        raise S3Error(f"S3 PUT {self._url(key)} kept conflicting with concurrent writes")

    # ---------------------------------------------------------------- reads

    def _get(self, key: str) -> dict[str, Any]:
        with self._errors("GET", key):
            response: dict[str, Any] = self.client.get_object(
                Bucket=self.bucket, Key=self.prefix + key, **self._sse(key)
            )
        try:
            self._check_key(key, response.get("Metadata", {}))
        except EncryptionKeyError:
            response["Body"].close()
            raise
        return response

    def get_bytes(self, key: str) -> bytes:
        for attempt in range(1, READ_ATTEMPTS + 1):
            response = self._get(key)
            try:
                with contextlib.closing(response["Body"]) as body:
                    data: bytes = body.read()
                return data
            except _BODY_ERRORS as e:
                self._body_failed(key, attempt, e)
        raise AssertionError("unreachable")

    def _body_failed(self, key: str, attempt: int, e: Exception) -> None:
        """Back off before reading a cut-off body again, or give up with a clear error."""
        if attempt >= READ_ATTEMPTS:
            raise S3Error(
                f"S3 GET {self._url(key)} failed: body cut off {attempt} times: {e}"
            ) from e
        logger.warning("S3 GET %s: body cut off (%s); retrying", self._url(key), e)
        time.sleep(min(0.05 * 2**attempt, 2.0))

    def _get_range(self, key: str, start: int, etag: str | None) -> Any:
        """The object's body from ``start`` on, refusing a different version than ``etag``."""
        extra: dict[str, Any] = {"Range": f"bytes={start}-"}
        if etag:
            extra["IfMatch"] = etag
        with self._errors("GET", key):
            response = self.client.get_object(
                Bucket=self.bucket, Key=self.prefix + key, **extra, **self._sse(key)
            )
        return response["Body"]

    @contextlib.contextmanager
    def reader(self, key: str) -> Iterator[BinaryIO]:
        response = self._get(key)
        raw = _BodyReader(self, key, response["Body"], response.get("ETag"))
        try:
            yield io.BufferedReader(raw, buffer_size=256 * 1024)
        finally:
            raw.close()

    def get_file(self, key: str, path: str) -> ObjectInfo:
        """One GET for a small object; boto3's concurrent ranged GETs for a large one.

        The GET that finds the object also says its size, so the transfer
        manager needs no HEAD, and its ranged GETs are pinned to that version
        by ETag. Either way the data lands in a temporary file next to
        ``path`` that is renamed over it when complete.
        """
        response = self._get(key)
        info = _info(response)
        directory = os.path.dirname(os.path.abspath(path))
        tmp_path = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
        body = response["Body"]
        try:
            # The kernel applies the umask, as it would to any file the user creates.
            mode = 0o777 if info.executable else 0o666
            fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as f:
                if info.size < self.part_size:
                    raw = _BodyReader(self, key, body, response.get("ETag"))
                    shutil.copyfileobj(raw, f, MiB)
                    body = raw  # closes whichever body it ended with
                else:
                    body.close()
                    known = _KnownObject(info.size, response.get("ETag"))
                    with self._errors("GET", key):
                        self.transfer.download(
                            self.bucket,
                            self.prefix + key,
                            f,
                            extra_args=self._sse(key),
                            subscribers=[known],
                        ).result()
            os.replace(tmp_path, path)
        except BaseException:
            body.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_path)
            raise
        return info

    def _head(self, key: str) -> dict[str, Any]:
        with self._errors("HEAD", key):
            response: dict[str, Any] = self.client.head_object(
                Bucket=self.bucket, Key=self.prefix + key, **self._sse(key)
            )
        return response

    def stat(self, key: str) -> ObjectInfo:
        return _info(self._head(key))

    def url(self, key: str) -> str:
        self._head(key)
        with self._errors("PRESIGN", key):
            url: str = self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self.prefix + key},
                ExpiresIn=URL_SECONDS,
            )
        return url

    # -------------------------------------------------------------- deletes

    def delete(self, key: str) -> None:
        with self._errors("DELETE", key, missing_ok=True):
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)

    def delete_many(self, keys: Iterable[str]) -> None:
        batch: list[str] = []
        for key in keys:
            batch.append(key)
            if len(batch) == DELETE_BATCH:
                self._delete_batch(batch)
                batch = []
        if batch:
            self._delete_batch(batch)

    def _delete_batch(self, keys: list[str]) -> None:
        with self._errors("DELETE", keys[0], missing_ok=True):
            response = self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": self.prefix + k} for k in keys], "Quiet": True},
            )
            errors = response.get("Errors", [])
            if errors:
                first = errors[0]
                raise S3Error(
                    f"S3 DELETE of {len(errors)} objects failed, the first "
                    f"s3://{self.bucket}/{first.get('Key')}: {first.get('Code')}: "
                    f"{first.get('Message')}"
                )

    def delete_prefix(self, prefix: str) -> None:
        # Each listed page (up to 1,000 keys) goes out as one DeleteObjects.
        for page in self._pages(prefix):
            keys = [obj["Key"][len(self.prefix) :] for obj in page.get("Contents", [])]
            if keys:
                self._delete_batch(keys)

    # -------------------------------------------------------------- listing

    def _pages(self, prefix: str, **args: Any) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix, **args)
        with self._errors("LIST", prefix, missing_ok=True):  # no bucket: no keys
            yield from pages

    def list(self, prefix: str, start_after: str | None = None) -> Iterator[str]:
        args = {} if start_after is None else {"StartAfter": self.prefix + start_after}
        cut = len(self.prefix)
        for page in self._pages(prefix, **args):
            for obj in page.get("Contents", []):
                yield obj["Key"][cut:]

    def listdir(self, prefix: str) -> Iterator[DirEntry]:
        cut = len(self.prefix) + len(prefix)
        for page in self._pages(prefix, Delimiter="/"):
            entries = [DirEntry(p["Prefix"][cut:-1], True) for p in page.get("CommonPrefixes", [])]
            entries += [DirEntry(o["Key"][cut:], False) for o in page.get("Contents", [])]
            yield from sorted(entries, key=lambda e: e.name)


def _md5(secret: bytes) -> str:
    return base64.b64encode(hashlib.md5(secret).digest()).decode("ascii")


def _info(response: dict[str, Any]) -> ObjectInfo:
    """The object's info from a HEAD's or GET's headers (a ranged GET's total size)."""
    content_range = response.get("ContentRange")  # "bytes 100-199/200"
    return ObjectInfo(
        size=int(content_range.rpartition("/")[2] if content_range else response["ContentLength"]),
        executable=response.get("Metadata", {}).get(_EXECUTABLE) == "1",
        mtime=response["LastModified"].timestamp(),
        # Content identity: two writes within one second (S3 times are whole seconds) differ.
        version=response["ETag"],
    )


class _KnownObject(BaseSubscriber):
    """Tells the transfer manager the size and ETag a GET already found (so no HEAD)."""

    def __init__(self, size: int, etag: str | None) -> None:
        self.size = size
        self.etag = etag

    def on_queued(self, future: Any, **kwargs: Any) -> None:
        future.meta.provide_transfer_size(self.size)
        if self.etag is not None:
            future.meta.provide_object_etag(self.etag)


class _BodyReader(io.RawIOBase):
    """A GET body as a raw stream, so it can be buffered and wrapped for text.

    A body cut off mid-way is resumed with a ranged GET of the same version
    (by ETag) from the first byte not yet delivered.
    """

    def __init__(self, backend: S3Backend, key: str, body: Any, etag: str | None) -> None:
        self._backend = backend
        self._key = key
        self._body = body
        self._etag = etag
        self._pos = 0
        self._failures = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with memoryview(buffer) as view:
            while True:
                try:
                    data = self._body.read(len(view))
                    break
                except _BODY_ERRORS as e:
                    self._failures += 1
                    self._backend._body_failed(self._key, self._failures, e)
                    self._body.close()
                    self._body = self._backend._get_range(self._key, self._pos, self._etag)
            view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()


class _StreamUpload(io.BufferedIOBase):
    """A streamed write: one PutObject when small, else a multipart upload.

    Holds at most one part in its buffer plus ``stream_parts`` parts in
    flight, so memory stays bounded whatever the stream's length.
    """

    def __init__(self, backend: S3Backend, key: str, executable: bool) -> None:
        self._backend = backend
        self._key = key
        self._executable = executable
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[Future[dict[str, Any]]] = []
        self._pool: ThreadPoolExecutor | None = None
        self._slots = threading.BoundedSemaphore(backend.stream_parts)

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError("write to a closed stream")
        with memoryview(data) as whole:
            view = whole.cast("B")
            size = len(view)
            part_size = self._backend.part_size
            while view:
                # Ship a full buffer only when more data comes: a stream of
                # exactly one part stays a single PutObject.
                if len(self._buffer) >= part_size:
                    self._ship()
                room = part_size - len(self._buffer)
                self._buffer += view[:room]
                view = view[room:]
        return size

    def _ship(self) -> None:
        b = self._backend
        if self._upload_id is None:
            with b._errors("PUT", self._key):
                started = b.client.create_multipart_upload(
                    Bucket=b.bucket,
                    Key=b.prefix + self._key,
                    Metadata=b._metadata(self._key, self._executable),
                    **b._sse(self._key),
                )
            self._upload_id = started["UploadId"]
            self._pool = ThreadPoolExecutor(b.stream_parts, thread_name_prefix="jobstore-part")
        for done in self._parts:  # fail early when a part already failed
            if done.done() and done.exception() is not None:
                done.result()
        assert self._pool is not None
        part, self._buffer = self._buffer, bytearray()
        number = len(self._parts) + 1
        self._slots.acquire()
        try:
            future = self._pool.submit(self._upload_part, number, part)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        self._parts.append(future)

    def _upload_part(self, number: int, data: bytearray) -> dict[str, Any]:
        b = self._backend
        with b._errors("PUT", self._key):
            response = b.client.upload_part(
                Bucket=b.bucket,
                Key=b.prefix + self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=data,
                **b._sse(self._key),
            )
        return {"PartNumber": number, "ETag": response["ETag"]}

    def finish(self) -> None:
        b = self._backend
        if self._upload_id is None:
            b.put_bytes(self._key, self._buffer, self._executable)
            self._buffer = bytearray()
            return
        self._ship()
        parts = [f.result() for f in self._parts]
        with b._errors("PUT", self._key):
            b.client.complete_multipart_upload(
                Bucket=b.bucket,
                Key=b.prefix + self._key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": parts},
                **b._sse(self._key),
            )
        self._upload_id = None
        self._close_pool()

    def abort(self) -> None:
        """Drop everything: no object appears, and S3 keeps no parts."""
        self._buffer = bytearray()
        if self._upload_id is None:
            return
        for future in self._parts:
            future.cancel()
        self._close_pool()
        b = self._backend
        try:
            b.client.abort_multipart_upload(
                Bucket=b.bucket, Key=b.prefix + self._key, UploadId=self._upload_id
            )
        except (ClientError, BotoCoreError) as e:
            logger.warning(
                "Could not abort the upload %s of %s: %s", self._upload_id, b._url(self._key), e
            )
        self._upload_id = None

    def _close_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
