"""Locators: ``local:<path>`` and ``s3:<bucket>[/<prefix>]``.

Parsing is pure and cheap (no Toil, no boto3 imports) because it runs in the
hook that every Toil process goes through.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jobstore.layout import MAX_FILE_ID

if TYPE_CHECKING:
    from jobstore.backend import Backend

SCHEMES = ("local", "s3")

# S3's own bucket naming rules (lowercase, digits, dots, hyphens; 3-63 characters).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
#: Longest file name (bytes) that Linux file systems accept, and longest store path: what
#: leaves room, within Linux's 4,095-byte paths, for the longest key below it.
_NAME_MAX = 255
_ROOT_MAX = 4095 - len("/files/") - MAX_FILE_ID


class InvalidLocator(ValueError):
    """A locator that names no store this package can open."""


@dataclass(frozen=True)
class Locator:
    scheme: str
    #: Absolute directory for ``local``; bucket name for ``s3``.
    location: str
    #: Key prefix inside the bucket for ``s3`` ('' or ending in '/'); '' for ``local``.
    prefix: str = ""

    @property
    def canonical(self) -> str:
        """The locator as workers on any machine and in any directory must see it."""
        if self.scheme == "local":
            return f"local:{self.location}"
        return f"s3:{self.location}/{self.prefix}".rstrip("/")

    def open_backend(self) -> Backend:
        if self.scheme == "local":
            from jobstore.local import LocalBackend

            return LocalBackend(self.location)
        from jobstore.s3 import S3Backend

        return S3Backend(self.location, self.prefix)


def parse_locator(locator: str) -> Locator:
    """Parse and validate a locator; relative ``local:`` paths become absolute."""
    if not isinstance(locator, str) or ":" not in locator:
        raise InvalidLocator(
            f"not a jobstore locator (want local:<path> or s3:<bucket>[/<prefix>]): {locator!r}"
        )
    scheme, rest = locator.split(":", 1)
    if "\x00" in rest:
        raise InvalidLocator(f"NUL byte in locator {locator!r}")
    if scheme == "local":
        if not rest:
            raise InvalidLocator("local: needs a path, as in local:/tmp/run1")
        path = os.path.abspath(os.path.expanduser(rest))
        try:
            encoded = os.fsencode(path)
        except UnicodeEncodeError:
            raise InvalidLocator(f"not a path this system can name: {locator!r}") from None
        if len(encoded) > _ROOT_MAX or max(map(len, encoded.split(b"/"))) > _NAME_MAX:
            raise InvalidLocator(f"path too long for a file system: {locator[:80]!r}...")
        return Locator("local", path)
    if scheme == "s3":
        rest = rest.removeprefix("//")
        bucket, _, prefix = rest.partition("/")
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise InvalidLocator(f"not a valid S3 bucket name in {locator!r}")
        try:
            prefix.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidLocator(f"an S3 prefix must be valid UTF-8: {locator!r}") from None
        parts = [p for p in prefix.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise InvalidLocator(f"'.' and '..' are not allowed in an S3 prefix: {locator!r}")
        return Locator("s3", bucket, "".join(p + "/" for p in parts))
    raise InvalidLocator(f"unknown jobstore scheme {scheme!r} in {locator!r} (want local: or s3:)")


def canonical_locator(locator: str) -> str:
    return parse_locator(locator).canonical
