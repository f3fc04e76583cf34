"""A real node behind a real grpclib server on a free loopback port, and a client for it."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from grpclib.client import Channel
from grpclib.server import Server

from api import grpc_handlers
from peersync import Limits, Node, NodeConfig
from peersync.v1 import KvStub
from store import StoreOptions

# Seconds between heartbeats on an idle watch: short, so that tests see several quickly.
HEARTBEAT = 0.05
# Bound for anything a test waits for on the wire; generous so a slow machine does not flake.
WAIT = 10.0
# Small enough that a test can exceed it without moving megabytes.
MAX_VALUE_BYTES = 4096


def make_config(*, log_retention: int = 10_000) -> NodeConfig:
    return NodeConfig(
        store="memory",
        limits=Limits(max_value_bytes=MAX_VALUE_BYTES, max_list_limit=50),
        # A fast sweep so that expiry events arrive promptly.
        store_options=StoreOptions(sweep_interval=0.05, log_retention=log_retention),
    )


@dataclass
class Running:
    node: Node
    host: str
    port: int

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"


@asynccontextmanager
async def serving(config: NodeConfig) -> AsyncIterator[Running]:
    """Start ``config``'s node and serve its gRPC handlers until the block ends."""
    async with Node(config) as node:
        # Bind first so that the port is known without reading grpclib's internals.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        server = Server(grpc_handlers(node, HEARTBEAT))
        await server.start(sock=sock)
        try:
            yield Running(node, "127.0.0.1", sock.getsockname()[1])
        finally:
            server.close()
            await server.wait_closed()
            sock.close()


@asynccontextmanager
async def connected(running: Running) -> AsyncIterator[KvStub]:
    channel = Channel(running.host, running.port)
    try:
        yield KvStub(channel)
    finally:
        channel.close()


@pytest.fixture
async def server() -> AsyncIterator[Running]:
    async with serving(make_config()) as running:
        yield running


@pytest.fixture
async def kv(server: Running) -> AsyncIterator[KvStub]:
    async with connected(server) as stub:
        yield stub
