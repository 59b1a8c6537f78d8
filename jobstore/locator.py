"""Locators (``<scheme>:<rest>``) and the registry of the backends that serve them.

Adding a backend is writing one module with a :class:`~jobstore.backend.Backend`
subclass (which parses the ``<rest>`` of its locators and opens itself from the
result) and adding one line to :data:`BACKENDS`. Nothing else in the package
lists schemes: the Toil hook, the ``jobstore`` command's help and the error
messages all read this table.

The table names modules as strings, so reading it imports nothing: the hook
that every Toil process goes through, and a ``local:`` locator, never load
boto3. A backend module is imported when a locator of its scheme is parsed.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobstore.backend import Backend


@dataclass(frozen=True)
class Registration:
    """What is known about a backend without importing it."""

    #: ``"module:Class"`` of its :class:`~jobstore.backend.Backend` subclass.
    backend: str
    #: What follows ``<scheme>:`` in its locators, for help texts and error messages.
    syntax: str


#: Every backend, by the scheme of its locators.
BACKENDS: dict[str, Registration] = {
    "local": Registration("jobstore.local:LocalBackend", "<path>"),
    "s3": Registration("jobstore.s3:S3Backend", "<bucket>[/<prefix>]"),
}


class InvalidLocator(ValueError):
    """A locator that names no store this package can open."""


@dataclass(frozen=True)
class Locator:
    scheme: str
    #: Where the store is, as its backend parsed it (an absolute directory, a bucket).
    location: str
    #: Key prefix inside ``location`` ('' or ending in '/').
    prefix: str = ""

    @property
    def canonical(self) -> str:
        """The locator as workers on any machine and in any directory must see it."""
        tail = "/" + self.prefix.rstrip("/") if self.prefix else ""
        return f"{self.scheme}:{self.location}{tail}"

    def open_backend(self) -> Backend:
        return backend_class(self.scheme).from_locator(self)


def usage() -> str:
    """Every locator form, as in ``local:<path> or s3:<bucket>[/<prefix>]``."""
    return " or ".join(f"{scheme}:{r.syntax}" for scheme, r in BACKENDS.items())


def backend_class(scheme: str) -> type[Backend]:
    """The Backend subclass registered for ``scheme``, imported on first use."""
    module, _, name = BACKENDS[scheme].backend.partition(":")
    cls: type[Backend] = getattr(importlib.import_module(module), name)
    return cls


def parse_locator(locator: str) -> Locator:
    """Parse and validate a locator; relative ``local:`` paths become absolute."""
    if not isinstance(locator, str) or ":" not in locator:
        raise InvalidLocator(f"not a jobstore locator (want {usage()}): {locator!r}")
    scheme, rest = locator.split(":", 1)
    if "\x00" in rest:
        raise InvalidLocator(f"NUL byte in locator {locator!r}")
    if scheme not in BACKENDS:
        raise InvalidLocator(f"unknown jobstore scheme {scheme!r} in {locator!r} (want {usage()})")
    location, prefix = backend_class(scheme).parse_location(rest, locator)
    return Locator(scheme, location, prefix)


def canonical_locator(locator: str) -> str:
    return parse_locator(locator).canonical
