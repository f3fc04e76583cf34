"""Every ownership engine behind one fixture, so that each contract test runs on all of them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ownership import OwnershipStore
from tests.ownership.engines import ALL_ENGINES, SQL_ENGINES, Engine, open_engine


@pytest.fixture(params=ALL_ENGINES)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Engine]:
    async with open_engine(request.param, tmp_path) as found:
        yield found


@pytest.fixture(params=SQL_ENGINES)
async def sql_engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Engine]:
    async with open_engine(request.param, tmp_path) as found:
        yield found


@pytest.fixture
async def store(engine: Engine) -> AsyncIterator[OwnershipStore]:
    async with engine.connect() as started:
        yield started
