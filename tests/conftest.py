"""Fixtures shared by the whole suite.

``store_locator`` runs a test on every backend of ``jobstore.locator.BACKENDS``,
each through its ``<scheme>_locator`` fixture: ``local:`` in a temporary
directory and ``s3:`` on a moto server on 127.0.0.1 (started once per session,
reached over HTTP through ``AWS_ENDPOINT_URL``, as any S3 service would be).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Toil's own job store tests are unittest classes that ask for this fixture.
from toil.test.conftest import rootpath  # noqa: F401

from jobstore.locator import BACKENDS
from tests.s3server import FAKE_CREDENTIALS, moto_server


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server on loopback, with the environment pointing boto3 (and workers) at it."""
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    saved = {k: os.environ.get(k) for k in (*FAKE_CREDENTIALS, "AWS_ENDPOINT_URL")}
    with moto_server(str(log)) as endpoint:
        os.environ.update(FAKE_CREDENTIALS)
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        try:
            yield endpoint
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@pytest.fixture
def local_locator(tmp_path: Path) -> str:
    return f"local:{tmp_path / 'store'}"


@pytest.fixture
def s3_locator(moto_endpoint: str) -> str:
    """A fresh prefix in a shared test bucket: stores under prefixes must not see each other."""
    return f"s3:jobstore-tests/{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=list(BACKENDS))
def store_locator(request: pytest.FixtureRequest) -> str:
    """A locator for a store that does not exist yet, on each backend in turn."""
    return str(request.getfixturevalue(f"{request.param}_locator"))


@pytest.fixture
def toil_config() -> object:
    from toil.common import Config

    return Config()
