"""The node-to-node gRPC service (``peersync.v1.Node``): forwarded requests, state sync, claims.

A forwarded request is served by the same :class:`~api.KvService` handler a client's request would
be, inside a context that marks it forwarded: the service then answers NOT_OWNER instead of
forwarding again, and errors come back as a ``Failure`` carrying everything the sender needs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from grpclib import GRPCError, Status

from peersync import Node, v1
from peersync._cluster import override_to_wire
from peersync._forwarding import FORWARDED, failure_from_error, which
from store import PeersyncError

from ._grpc import KvService, status_from_errors, to_grpc_error

log = logging.getLogger(__name__)

# Most forwarded requests one stream serves at once; more wait for a slot, which pushes back on the
# sender instead of queueing without bound.
_IN_FLIGHT = 512


class NodeService(v1.NodeBase):
    def __init__(self, node: Node, kv: KvService) -> None:
        self._node = node
        self._kv = kv
        self._ops: dict[str, Callable[[Any], Awaitable[Any]]] = {
            "get": kv.get,
            "set": kv.set,
            "delete": kv.delete,
            "list": kv.list,
            "delete_prefix": kv.delete_prefix,
            "get_versions": kv.get_versions,
            "diff": kv.diff,
            "snapshot": kv.snapshot,
            "set_alias": kv.set_alias,
            "get_alias": kv.get_alias,
            "delete_alias": kv.delete_alias,
            "list_aliases": kv.list_aliases,
            "local_namespaces": kv.list_namespaces,
        }

    async def forward(self, messages: AsyncIterator[v1.ForwardRequest]) -> AsyncIterator[v1.ForwardReply]:
        replies: asyncio.Queue[v1.ForwardReply | None] = asyncio.Queue()
        slots = asyncio.Semaphore(_IN_FLIGHT)
        running: set[asyncio.Task[None]] = set()

        async def serve(request: v1.ForwardRequest) -> None:
            try:
                replies.put_nowait(await self._serve(request))
            finally:
                slots.release()

        async def read() -> None:
            try:
                async for request in messages:
                    await slots.acquire()
                    task = asyncio.create_task(serve(request))
                    running.add(task)
                    task.add_done_callback(running.discard)
                if running:
                    await asyncio.gather(*running, return_exceptions=True)
            finally:
                replies.put_nowait(None)

        reader = asyncio.create_task(read(), name="forward-receiver")
        try:
            while (reply := await replies.get()) is not None:
                yield reply
        finally:
            reader.cancel()
            for task in list(running):
                task.cancel()

    async def _serve(self, request: v1.ForwardRequest) -> v1.ForwardReply:
        name, op = which(request, "op")
        handler = self._ops.get(name)
        if handler is None:
            failure = v1.Failure(reason="INVALID_ARGUMENT", detail=f"unknown forwarded operation {name!r}")
            return v1.ForwardReply(id=request.id, failure=failure)
        caller = request.caller or v1.Caller()
        token = FORWARDED.set(caller)
        try:
            log.debug("forwarded %s from %s request_id=%s", name, caller.origin, caller.request_id)
            async with asyncio.timeout(max(request.timeout_ms, 1) / 1000):
                result = await handler(op)
            return v1.ForwardReply(id=request.id, **{name: result})
        except PeersyncError as exc:
            return v1.ForwardReply(id=request.id, failure=failure_from_error(exc))
        except TimeoutError:
            failure = v1.Failure(reason="UNAVAILABLE", detail="the owner did not finish within the deadline")
            return v1.ForwardReply(id=request.id, failure=failure)
        except Exception:
            log.exception("forwarded %s failed", name)
            failure = v1.Failure(
                reason="INTERNAL", detail="the owner failed to handle the request; see its log"
            )
            return v1.ForwardReply(id=request.id, failure=failure)
        finally:
            FORWARDED.reset(token)

    async def get_state(self, message: v1.GetStateRequest) -> v1.ClusterState:
        with status_from_errors("GetState"):
            return self._node.cluster.state()

    async def claim(self, message: v1.ClaimRequest) -> v1.ClaimReply:
        with status_from_errors("Claim"):
            entry = await self._node.cluster.claim(message.namespace, force=message.force)
            return v1.ClaimReply(entry=override_to_wire(entry))

    async def unclaim(self, message: v1.UnclaimRequest) -> v1.UnclaimReply:
        with status_from_errors("Unclaim"):
            entry = await self._node.cluster.unclaim(message.namespace, force=message.force)
            return v1.UnclaimReply(entry=override_to_wire(entry))

    async def watch(self, message: v1.WatchRequest) -> AsyncIterator[v1.WatchResponse]:
        token = FORWARDED.set(v1.Caller())
        try:
            async for reply in self._kv.watch(message):
                yield reply
        except GRPCError:
            raise
        except PeersyncError as exc:
            raise to_grpc_error(exc, "Node.Watch") from exc
        except Exception as exc:
            log.exception("node watch failed")
            raise GRPCError(Status.INTERNAL, "INTERNAL: the node watch failed") from exc
        finally:
            FORWARDED.reset(token)
