"""Toil's own job store test suite (from the toil wheel), run against our backends.

The module is imported, not its classes, so pytest does not also collect
Toil's own FileJobStoreTest/AWSJobStoreTest/GoogleJobStoreTest here.
"""

from __future__ import annotations

import http.server  # noqa: F401  (jobStoreTest uses http.server without importing it)
import os
import tempfile

import pytest

from jobstore import JobStore

toil_suite = pytest.importorskip("toil.test.jobStores.jobStoreTest")


class TestLocalJobStore(toil_suite.AbstractJobStoreTest.Test):
    """Every behaviour Toil checks of a job store, on ``local:``."""

    def _createJobStore(self) -> JobStore:
        return JobStore(f"local:{os.path.join(tempfile.gettempdir(), self.namePrefix)}")

    def _corruptJobStore(self) -> None:
        store = self.jobstore_initialized
        # Remove the jobs and shared files but leave the rest: destroy() must cope.
        for part in ("jobs", "shared"):
            path = os.path.join(store.backend.root, part)
            if os.path.isdir(path):
                import shutil

                shutil.rmtree(path)

    # Import/export against plain local files, as Toil's FileJobStoreTest does.
    _prepareTestFile = toil_suite.FileJobStoreTest._prepareTestFile
    _hashTestFile = toil_suite.FileJobStoreTest._hashTestFile
    _createExternalStore = toil_suite.FileJobStoreTest._createExternalStore
    _cleanUpExternalStore = toil_suite.FileJobStoreTest._cleanUpExternalStore


@pytest.mark.usefixtures("moto_endpoint")
class TestS3JobStore(toil_suite.AbstractJobStoreTest.Test):
    """Every behaviour Toil checks of a job store, on ``s3:`` against moto over HTTP."""

    def _createJobStore(self) -> JobStore:
        # A prefix of one shared bucket per test: stores under prefixes must stay apart.
        return JobStore(f"s3:jobstore-toil-suite/{self.namePrefix}")

    def _corruptJobStore(self) -> None:
        # Lose the jobs and shared files but leave the rest: destroy() must cope.
        backend = self.jobstore_initialized.backend
        for part in ("jobs/", "shared/"):
            backend.delete_prefix(part)

    # Import/export against plain local files, as for local:.
    _prepareTestFile = toil_suite.FileJobStoreTest._prepareTestFile
    _hashTestFile = toil_suite.FileJobStoreTest._hashTestFile
    _createExternalStore = toil_suite.FileJobStoreTest._createExternalStore
    _cleanUpExternalStore = toil_suite.FileJobStoreTest._cleanUpExternalStore
