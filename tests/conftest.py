"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# Toil's own job store tests are unittest classes that ask for this fixture.
from toil.test.conftest import rootpath  # noqa: F401


@pytest.fixture
def local_locator(tmp_path: os.PathLike[str]) -> str:
    return f"local:{os.path.join(tmp_path, 'store')}"


@pytest.fixture
def toil_config() -> Iterator[object]:
    from toil.common import Config

    yield Config()
