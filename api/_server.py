"""Runs a node with its HTTP and gRPC servers in one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from collections.abc import Iterator

import uvicorn
from grpclib.server import Server as GrpcServer

from peersync import Address, Node, NodeConfig

from ._fastpath import create_asgi
from ._grpc import grpc_handlers

log = logging.getLogger("peersync")

# Seconds in-flight HTTP requests get to finish on shutdown before their connections are closed.
_GRACEFUL_TIMEOUT = 5


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the owner of the NodeServer decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class NodeServer:
    """A node serving HTTP and gRPC. ``http_addr``/``grpc_addr`` hold the bound addresses (a port
    of 0 in the configuration picks a free one). Use as ``async with``."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.node = Node(config)
        self.http_addr = config.http_addr
        self.grpc_addr = config.grpc_addr
        self._grpc: GrpcServer | None = None
        self._http: _Uvicorn | None = None
        self._http_task: asyncio.Task[None] | None = None
        self._http_sock: socket.socket | None = None

    async def start(self) -> None:
        cfg = self.config
        # Bind both ports and start serving first (requests are answered UNAVAILABLE until the node
        # is up), so that when the node joins and peers learn its addresses, both accept connections.
        self._http_sock = _bind(cfg.http_addr)
        self.http_addr = Address(cfg.http_addr.host, self._http_sock.getsockname()[1])
        self._grpc = GrpcServer(grpc_handlers(self.node, cfg.watch_heartbeat_interval))
        await self._grpc.start(cfg.grpc_addr.host, cfg.grpc_addr.port)
        self.grpc_addr = Address(cfg.grpc_addr.host, _grpc_port(self._grpc, cfg.grpc_addr.port))
        self._http = _Uvicorn(
            uvicorn.Config(
                create_asgi(self.node),
                log_level="warning",
                access_log=False,
                lifespan="on",
                timeout_graceful_shutdown=_GRACEFUL_TIMEOUT,
                server_header=False,
            )
        )
        self._http_task = asyncio.create_task(self._http.serve(sockets=[self._http_sock]), name="http")
        # uvicorn exposes readiness only as a flag.
        while not self._http.started and not self._http_task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if self._http_task.done():
            await self._http_task  # re-raises the start-up failure
            raise RuntimeError("the HTTP server stopped during start-up")
        await self.node.start(self.grpc_addr, self.http_addr)
        log.info(
            "peersync listening: http=%s grpc=%s node=%s store=%s%s",
            self.http_addr,
            self.grpc_addr,
            cfg.cluster.node_id,
            cfg.store if "://" not in cfg.store else "postgresql",
            f" data-dir={cfg.data_dir}" if cfg.store == "sqlite" else "",
        )

    async def wait(self) -> None:
        """Return when the HTTP server stops on its own (it failed)."""
        if self._http_task is not None:
            await asyncio.shield(self._http_task)

    async def stop(self) -> None:
        """Stop accepting, end open watches, let in-flight requests finish, close the store."""
        log.info("peersync shutting down")
        # Open watches would hold the HTTP server's graceful shutdown; end them first.
        self.node.end_watches()
        if self._grpc is not None:
            self._grpc.close()
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            with contextlib.suppress(Exception):
                await self._http_task
        if self._grpc is not None:
            await self._grpc.wait_closed()
        await self.node.stop()
        if self._http_sock is not None:
            self._http_sock.close()
        self._grpc = self._http = self._http_task = self._http_sock = None
        log.info("peersync stopped")

    async def __aenter__(self) -> NodeServer:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


async def serve(config: NodeConfig) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with NodeServer(config) as server:
        # What is alive now (modules, the app, the node) lives as long as the process: keep it out
        # of the cycle collector's full collections, which would otherwise scan it every time.
        gc.freeze()
        stopped = asyncio.create_task(stop.wait(), name="stop-signal")
        failed = asyncio.create_task(server.wait(), name="http-watch")
        await asyncio.wait([stopped, failed], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        failed.cancel()


def _bind(address: Address) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address.host, address.port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {address}: {exc.strerror}") from exc
    return sock


def _grpc_port(server: GrpcServer, asked: int) -> int:
    inner = getattr(server, "_server", None)
    sockets = getattr(inner, "sockets", None) or []
    return int(sockets[0].getsockname()[1]) if sockets else asked
