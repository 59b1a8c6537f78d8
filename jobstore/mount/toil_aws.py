"""Toil's ``aws:REGION:NAME`` store (AWSJobStore) as a view source, read-only but for the kill flag.

The layout (Toil 9.6, ``toil/jobStores/aws/jobStore.py``): one S3 bucket,
``<NAME>--toil``, in REGION, holding

``jobs/<uuid4>``
    a job's pickled description; its ID is the uuid (no ``/``);
``files-flat/<uuid4>/<basename>``
    a file written without hints; its ID is the uuid alone (Toil finds the
    key by listing the uuid's prefix);
``files/<hint>/.../files/[<n>/]<basename>``
    a file written with hints; its ID is the key below ``files/``. Claiming
    the slot puts an empty object there first (shown as an empty file until
    the content replaces it); ``files/<hint>/.../deleted/...`` holds empty
    tombstones of deleted ones;
``job-associations/<job-id>.<file-id>``
    empty markers of the files deleted with their job (``cleanup``);
``logs/<local date>_<time><uuid4>``
    one object per ``write_logs`` message; the date first, so keys sort in the
    order written. ``read_logs`` reads them in key order and records the last
    key it read in the shared file ``most_recently_read_log.marker``;
``<name>`` at the top of the bucket
    shared files (``config.pickle``, ``pid.log``, ``_toil_kill_flag``, ...).

With ``--sseKey`` every object but ``config.pickle`` is encrypted with that
customer key (SSE-C), so reads send it (Toil's ``_get_encryption_args`` reads
it from the file the config names). Toil stores no executable bit on S3 (a
FileID carries it), so nothing shows executable here. Every write is a PUT or
a completed multipart upload: objects are replaced whole, never changed in place.

The view shows file IDs as paths under ``files/``: a flat file as its uuid, a
hinted one as its path of hints; job IDs and log keys as they are. A stat is
one request: a HEAD, or for a flat file the listing of its uuid that finds its
key; each open is one GET whose own headers are the info, and its stream
stays on that version: a body cut off is resumed by a ranged GET with
``IfMatch`` on its ETag, and a version replaced meanwhile raises
:class:`~jobstore.backend.VersionGone` rather than read on in another.

``jobs/`` is listed in 16 segments, by the first hex digit of the uuid, so a
huge listing is taken (and resumed) a part at a time.

Nothing here writes to the bucket: Toil's ``read_logs`` writes its marker,
so logs are listed and read directly; Toil's own reading API serves the
config, the kill flag and the leader's shared files.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import io
import logging
from collections.abc import Iterator
from typing import Any, BinaryIO

from botocore.exceptions import BotoCoreError, ClientError
from toil.jobStores.abstractJobStore import AbstractJobStore, HintedJobStore
from toil.jobStores.aws.jobStore import AWSJobStore
from urllib3.exceptions import HTTPError as Urllib3Error

from jobstore.backend import ObjectInfo, VersionGone
from jobstore.mount.source import Entry, Kind, Missing
from jobstore.mount.toil_sources import NoToilStore, ToilStoreSource

logger = logging.getLogger(__name__)

#: The first characters that start a segment of the job listing (uuid4s start with a hex digit).
_SEGMENT_STARTS = "0123456789abcdef"
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_GONE = {"412", "PreconditionFailed"}
#: Written without encryption whatever the config says (Toil reads it before it knows the key).
_UNENCRYPTED = "config.pickle"
#: Times a cut-off body is resumed before the read fails.
_RESUMES = 3


class AwsStoreSource(ToilStoreSource):
    """A Toil ``aws:`` store, read through its bucket."""

    #: GETs of descriptions side by side (boto3 clients are thread-safe; S3 takes many).
    concurrency = 16

    def __init__(self, locator: str) -> None:
        try:
            store = AWSJobStore(locator.removeprefix("aws:"))
        except ValueError as e:
            raise NoToilStore(f"not a Toil aws: locator ({e}): {locator!r}") from None
        try:
            store.resume()
        except Exception as e:
            raise NoToilStore(f"no readable Toil store at {locator}: {e}") from None
        super().__init__(locator, store)
        self._store = store
        self.client = store.s3_client
        self.bucket = store.bucket_name
        self._jobs = store.job_key_prefix
        self._flat = store.flat_content_key_prefix
        self._hinted = store.hierarchical_content_key_prefix
        self._logs = store.logs_key_prefix
        self._strays_seen: set[str] = set()

    # ------------------------------------------------------------------ jobs

    def job_segments(self) -> int:
        return len(_SEGMENT_STARTS)

    def job_names(self, segment: int) -> Iterator[tuple[int, str]]:
        """One listing from the segment's first possible key on; 1,000 jobs a request."""
        if segment >= len(_SEGMENT_STARTS):
            return
        # Every key of this segment or a later one sorts after this one.
        start_after = self._jobs + chr(ord(_SEGMENT_STARTS[segment]) - 1) + "~" if segment else None
        for item in self._list(self._jobs, start_after=start_after):
            job_id = item["Key"][len(self._jobs) :]
            if not _valid_name(job_id):
                self._stray(item["Key"])
                continue
            found = _segment(job_id)
            if found >= segment:
                yield found, job_id

    def job_versions(self) -> Iterator[tuple[str, str | None]]:
        """The listing's ETags: the run view fetches only descriptions that changed."""
        for item in self._list(self._jobs):
            job_id = item["Key"][len(self._jobs) :]
            if _valid_name(job_id):
                yield job_id, item["ETag"]

    def job_id(self, name: str) -> str:
        if not _valid_name(name):
            raise Missing(name)
        return name

    def job_name(self, job_id: str) -> str:
        return self.job_id(job_id)

    def job_bytes(self, job_id: str) -> tuple[ObjectInfo, bytes]:
        with self._open_key(self._jobs + self.job_id(job_id)) as (info, f):
            return info, f.read()

    def job_info(self, job_id: str) -> ObjectInfo:
        return self._info(self._jobs + self.job_id(job_id))

    # ------------------------------------------------------ stored objects

    def file_path(self, file_id: str) -> tuple[str, ...]:
        return tuple(str(file_id).split("/"))

    def listdir(self, kind: Kind, path: tuple[str, ...]) -> Iterator[Entry]:
        if any(not _valid_name(p) for p in path):
            raise Missing(path)
        entries: dict[str, Entry] = {}
        if kind is Kind.SHARED:
            if path:
                raise Missing(path)
            for item in self._list("", delimiter="/"):
                name = item.get("Key")
                if name and AbstractJobStore._validateSharedFileName(name):
                    entries[name] = Entry(name, False)
        elif kind is Kind.LOGS:
            if path:
                raise Missing(path)
            for item in self._list(self._logs, delimiter="/"):
                if "Key" in item and _valid_name(item["Key"][len(self._logs) :]):
                    entries[item["Key"][len(self._logs) :]] = Entry(
                        item["Key"][len(self._logs) :], False
                    )
        else:
            self._list_files(path, entries)
        return iter(sorted(entries.values(), key=lambda e: e.name))

    def _list_files(self, path: tuple[str, ...], entries: dict[str, Entry]) -> None:
        prefix = self._hinted + "".join(p + "/" for p in path)
        in_slots = HintedJobStore._HINT_FILES_DIR in path
        if not path:
            # Flat files' IDs first: a hint that looks like a uuid is shadowed by the file.
            for item in self._list(self._flat, delimiter="/"):
                if "Prefix" in item:
                    name = item["Prefix"][len(self._flat) : -1]
                    if _valid_name(name):
                        entries[name] = Entry(name, False)
        for item in self._list(prefix, delimiter="/"):
            if "Prefix" in item:
                name, is_dir = item["Prefix"][len(prefix) : -1], True
                if not in_slots and name == HintedJobStore._HINT_DELETED_DIR:
                    continue  # tombstones
            elif in_slots:
                name, is_dir = item["Key"][len(prefix) :], False
            else:
                continue  # an object among the hints: not a file Toil made
            if _valid_name(name):
                entries.setdefault(name, Entry(name, is_dir))
        if path and not entries:
            raise Missing(path)

    def stat(self, kind: Kind, path: tuple[str, ...]) -> ObjectInfo | None:
        if not path:
            return None
        if kind is not Kind.FILES:
            return self._info(self._key(kind, path))
        key, info = self._file(path)
        if info is not None:
            return info  # a flat file: the listing that found it told all
        if key is not None:
            with contextlib.suppress(Missing):
                return self._info(key)
        if self._first_key(self._hinted + "/".join(path) + "/") is not None:
            return None
        raise Missing(path)

    def open(
        self, kind: Kind, path: tuple[str, ...], start: int = 0, version: str | None = None
    ) -> contextlib.AbstractContextManager[tuple[ObjectInfo, BinaryIO]]:
        if not path:
            raise IsADirectoryError(kind.value)
        if kind is not Kind.FILES:
            return self._open_key(self._key(kind, path), start, version)
        key, _ = self._file(path)
        if key is None:
            raise Missing(path)
        return self._open_key(key, start, version)

    def _key(self, kind: Kind, path: tuple[str, ...]) -> str:
        """The key of a shared file or log message; :class:`Missing` for a name that is neither."""
        if len(path) != 1 or not _valid_name(path[0]):
            raise Missing(path)
        if kind is Kind.SHARED:
            if not AbstractJobStore._validateSharedFileName(path[0]):
                raise Missing(path)
            return path[0]
        return self._logs + path[0]

    def _file(self, path: tuple[str, ...]) -> tuple[str | None, ObjectInfo | None]:
        """Where a file at ``files/<path>`` would be: a flat file's key and info (one
        listing of its uuid), else the hinted key when the path can be a hinted file's;
        :class:`Missing` for a path no file or directory can have."""
        if any(not _valid_name(p) for p in path):
            raise Missing(path)
        if len(path) == 1:
            items = list(self._list(self._flat + path[0] + "/", max_keys=2))
            if len(items) == 1:
                item = items[0]
                info = ObjectInfo(
                    item["Size"], False, item["LastModified"].timestamp(), item["ETag"]
                )
                return item["Key"], info
        slots = HintedJobStore._HINT_FILES_DIR
        files_at = path.index(slots) if slots in path else len(path)
        if HintedJobStore._HINT_DELETED_DIR in path[:files_at]:
            raise Missing(path)  # tombstones
        if files_at < len(path) - 1:  # hints, files/, then at least a name
            return self._hinted + "/".join(path), None
        return None, None

    # ------------------------------------------------------------ requests

    def _list(
        self,
        prefix: str,
        delimiter: str | None = None,
        start_after: str | None = None,
        max_keys: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Objects (``Key``) and, with a delimiter, common prefixes (``Prefix``), page by page."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        if start_after:
            kwargs["StartAfter"] = start_after
        if max_keys:
            kwargs["MaxKeys"] = max_keys
        while True:
            page = self.client.list_objects_v2(**kwargs)
            yield from page.get("CommonPrefixes", [])
            yield from page.get("Contents", [])
            if max_keys or not page.get("IsTruncated"):
                return
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    def _first_key(self, prefix: str) -> str | None:
        return next((item["Key"] for item in self._list(prefix, max_keys=1)), None)

    def _info(self, key: str) -> ObjectInfo:
        """The object's info from a HEAD; :class:`Missing`."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key, **self._sse(key))
        except ClientError as e:
            if str(e.response.get("Error", {}).get("Code", "")) in _NOT_FOUND:
                raise Missing(key) from None
            raise
        return ObjectInfo(
            head["ContentLength"], False, head["LastModified"].timestamp(), head["ETag"]
        )

    def _sse(self, key: str) -> dict[str, Any]:
        return {} if key == _UNENCRYPTED else dict(self._store._get_encryption_args())

    def _get(self, key: str, start: int = 0, etag: str | None = None) -> dict[str, Any]:
        """A GET of the object from byte ``start`` on, of version ``etag`` only when given."""
        extra: dict[str, Any] = self._sse(key)
        if start:
            extra["Range"] = f"bytes={start}-"
        if etag is not None:
            extra["IfMatch"] = etag
        try:
            response: dict[str, Any] = self.client.get_object(Bucket=self.bucket, Key=key, **extra)
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if etag is not None and code in _GONE | _NOT_FOUND:
                raise VersionGone(f"s3://{self.bucket}/{key}: version {etag} is gone") from None
            if code in _NOT_FOUND:
                raise Missing(key) from None
            if code in {"416", "InvalidRange"} and start:
                # From the very end on: nothing to read, but the version must be there.
                response = self._get(key, 0, etag)
                response["Body"].close()
                response["Body"] = io.BytesIO()
                return response
            raise
        return response

    @contextlib.contextmanager
    def _open_key(
        self, key: str, start: int = 0, version: str | None = None
    ) -> Iterator[tuple[ObjectInfo, BinaryIO]]:
        response = self._get(key, start, version)
        content_range = response.get("ContentRange")  # "bytes 100-199/200"
        size = int(content_range.rpartition("/")[2] if content_range else response["ContentLength"])
        if start and not content_range:
            size = int(response["ContentLength"])  # the 416 case: the whole object's length
        info = ObjectInfo(size, False, response["LastModified"].timestamp(), response["ETag"])
        raw = _PinnedBody(self, key, response["Body"], info.version, min(start, size), size)
        try:
            yield info, io.BufferedReader(raw, buffer_size=256 * 1024)
        finally:
            raw.close()

    def _stray(self, key: str) -> None:
        if key not in self._strays_seen:
            self._strays_seen.add(key)
            logger.warning("Skipping s3://%s/%s: not a key Toil makes", self.bucket, key)

    # ------------------------------------------------------------ the run

    def pid_written_ns(self) -> int | None:
        try:
            return int(self._info("pid.log").mtime * 1e9)
        except Missing:
            return None


class _PinnedBody(io.RawIOBase):
    """A GET's body that stays on its version: cut off, it resumes by ``Range`` and ``IfMatch``."""

    def __init__(
        self, source: AwsStoreSource, key: str, body: Any, etag: str, pos: int, size: int
    ) -> None:
        self._source, self._key, self._body, self._etag = source, key, body, etag
        self._pos, self._size = pos, size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        for attempt in range(_RESUMES + 1):
            try:
                data = self._body.read(want)
            except (BotoCoreError, Urllib3Error, OSError) as e:
                data, why = b"", str(e)
            else:
                why = "the body ended early"
            if data:
                buffer[: len(data)] = data
                self._pos += len(data)
                return len(data)
            self._body.close()
            if attempt == _RESUMES:
                break
            logger.warning("S3 GET %s cut off at %d (%s); resuming", self._key, self._pos, why)
            self._body = self._source._get(self._key, self._pos, self._etag)["Body"]
        raise OSError(errno.EIO, f"S3 GET {self._key}: cut off at byte {self._pos} of {self._size}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._body.close()
        super().close()


def _valid_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name


def _segment(job_id: str) -> int:
    """The listing segment of a job ID: by its first character, in key order."""
    return max(0, bisect.bisect_right(_SEGMENT_STARTS, job_id[0]) - 1)
