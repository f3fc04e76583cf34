"""Every storage engine behind one fixture, so that each contract test runs on all of them."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from store import Store, StoreOptions
from tests.store.engines import ALL_ENGINES, DURABLE_ENGINES, Engine, OpenStore, open_engine


@pytest.fixture(params=ALL_ENGINES)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Engine]:
    async with open_engine(request.param, tmp_path) as found:
        yield found


@pytest.fixture(params=DURABLE_ENGINES)
async def durable_engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Engine]:
    async with open_engine(request.param, tmp_path) as found:
        yield found


@pytest.fixture
async def peer_engine(engine: Engine, tmp_path: Path) -> AsyncIterator[Engine]:
    """A second engine of the same kind as ``engine`` with storage of its own, for a store that
    follows another."""
    directory = tmp_path / "peer"
    directory.mkdir()
    async with open_engine(engine.name, directory) as found:
        yield found


@pytest.fixture
def open_store(engine: Engine) -> OpenStore:
    """Starts a store on ``engine`` with the given options and stops it on exit."""

    @asynccontextmanager
    async def open_(
        options: StoreOptions | None = None, *, clock: Callable[[], float] = time.time
    ) -> AsyncIterator[Store]:
        async with Store(engine.backend(), options, clock=clock) as store:
            yield store

    return open_


@pytest.fixture
async def store(open_store: OpenStore) -> AsyncIterator[Store]:
    async with open_store() as opened:
        yield opened
