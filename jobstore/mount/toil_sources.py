"""Toil's own job stores (``file:``, ``aws:``) as view sources: what both share, and the factory.

The view shows Toil's own stores with the same tree as ours (SPEC "Any Toil
store"), read-only but for the kill flag. Each store's layout is known to its
own module (:mod:`jobstore.mount.toil_file`, :mod:`jobstore.mount.toil_aws`);
what does not depend on the layout is here: the resumed Toil store object
(the config, the kill flag, the leader's shared files, all through Toil's own
reading API), turning stored bytes into a description, and the run view's state.

Toil's own stores keep no run ledger, so their runs show every state the
descriptions tell but ``running``, and no attempts (see :func:`jobstore.run.build_run`).
"""

from __future__ import annotations

import logging
import pickle
from abc import abstractmethod
from collections.abc import Iterator
from typing import TYPE_CHECKING

from toil.job import JobDescription

from jobstore.mount.source import Corrupt, Missing, Source
from jobstore.run import RunMemo, build_run, read_leader, root_finished
from jobstore.store import warn_once

if TYPE_CHECKING:
    from toil.common import Config
    from toil.jobStores.abstractJobStore import AbstractJobStore

    from jobstore.run import Run

logger = logging.getLogger(__name__)


class NoToilStore(Exception):
    """The locator names no Toil store that can be read (a one-line message)."""


class ToilStoreSource(Source):
    """What every Toil store's source shares; the layout is the subclass's."""

    def __init__(self, locator: str, store: AbstractJobStore) -> None:
        #: Toil's own store object, resumed: used only through methods that read,
        #: and ``write_kill_flag``.
        self.toil = store
        self.locator = locator

    @property
    def config(self) -> Config:
        return self.toil.config

    def job_from_bytes(self, job_id: str, data: bytes) -> JobDescription:
        """As Toil's ``load_job`` gives it: unpickled, with the store's config assigned."""
        try:
            job = pickle.loads(data)
        except Exception as e:
            raise self._corrupt(job_id, f"does not unpickle ({type(e).__name__}: {e})") from None
        if not isinstance(job, JobDescription):
            raise self._corrupt(job_id, f"holds a {type(job).__name__}, not a JobDescription")
        job.assignConfig(self.config)
        return job

    def _corrupt(self, job_id: str, why: str) -> Corrupt:
        message = f"corrupt job {job_id} in {self.locator}: {why}"
        warn_once(self.locator, job_id, message)
        return Corrupt(message)

    def kill_flag(self) -> bool:
        return bool(self.toil.read_kill_flag())

    def set_kill_flag(self, kill: bool) -> None:
        self.toil.write_kill_flag(kill=kill)

    @abstractmethod
    def pid_written_ns(self) -> int | None:
        """When the leader wrote ``pid.log`` (its mtime), or None without one."""

    def read_run(self, memo: RunMemo) -> Run:
        """The run from the descriptions alone: Toil's stores keep no ledger."""

        def load(job_id: str) -> tuple[str, JobDescription] | None:
            try:
                info, data = self.job_bytes(job_id)
            except Missing:
                return None  # gone since it was listed: finished
            return info.version, self.job_from_bytes(job_id, data)

        jobs = memo.summaries(self.job_versions(), load, self.concurrency)
        return build_run(
            config=self.config,
            leader=read_leader(self.toil, self.pid_written_ns()),
            killflag=self.kill_flag(),
            finished=root_finished(self.toil, jobs),
            jobs=jobs,
            starts=[],
            events=[],
        )

    def job_versions(self) -> Iterator[tuple[str, str | None]]:
        """Every job's ID, with its stored version where the listing tells it cheaply."""
        for _, name in self.job_names(0):  # from the first segment on: all of them
            yield self.job_id(name), None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.locator!r})"


def open_toil_source(locator: str) -> ToilStoreSource:
    """The source for a Toil store's locator (``file:PATH`` or ``aws:REGION:NAME``).

    Raises :class:`NoToilStore` with a one-line message for another kind of
    locator or a store that does not exist (or cannot be read).
    """
    kind, sep, rest = locator.partition(":")
    if not sep or not rest:
        raise NoToilStore(f"not a Toil store locator (file:PATH or aws:REGION:NAME): {locator!r}")
    if kind == "file":
        from jobstore.mount.toil_file import FileStoreSource

        return FileStoreSource(locator)
    if kind == "aws":
        from jobstore.mount.toil_aws import AwsStoreSource

        return AwsStoreSource(locator)
    raise NoToilStore(f"not a Toil store locator (file:PATH or aws:REGION:NAME): {locator!r}")
