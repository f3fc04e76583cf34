"""A real node serving HTTP and gRPC on free loopback ports, in the test's event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from api import NodeServer
from peersync import Address, Limits, NodeConfig
from store import StoreOptions

LOOPBACK = Address("127.0.0.1", 0)


def make_config(tmp_path: Path, store: str = "memory", **overrides: object) -> NodeConfig:
    config = NodeConfig(
        http_addr=LOOPBACK,
        grpc_addr=LOOPBACK,
        data_dir=tmp_path / "data",
        store=store,
        watch_heartbeat_interval=0.2,
        store_options=StoreOptions(sweep_interval=0.05),
        limits=Limits(),
    )
    return replace(config, **overrides)  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "sqlite"])
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[NodeServer]:
    async with NodeServer(make_config(tmp_path, request.param)) as running:
        yield running


@pytest.fixture
async def client(server: NodeServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://{server.http_addr}", timeout=10) as http:
        yield http
