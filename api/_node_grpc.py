"""The node-to-node gRPC service (``peersync.v1.Node``): forwarded requests, state sync, claims.

A forwarded request is served inside a context that marks it forwarded: the service then answers
NOT_OWNER instead of forwarding again, and errors come back as a ``Failure`` carrying everything the
sender needs. The ``Forward`` stream speaks protobuf's own message classes (see
:mod:`peersync._forwarding`): get, set and delete are served straight from them; the other operations
go through the same :class:`~api.KvService` handler a client's request would.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from google.protobuf.message import DecodeError
from grpclib import GRPCError, Status
from grpclib.const import Cardinality, Handler

from peersync import Node, v1
from peersync._cluster import override_to_wire
from peersync._forwarding import FORWARD_ROUTE, FORWARDED, MAX_BATCH, failure_from_error, which
from peersync._replication import REPLICATION_OPS
from peersync._wire import entry_into_pb, from_pb, mode_from_wire, to_pb
from peersync.v1 import kv_pb2, node_pb2
from store import PeersyncError

from ._grpc import KvService, status_from_errors, to_grpc_error

if TYPE_CHECKING:
    from grpclib.server import Stream

log = logging.getLogger(__name__)

# Most forwarded requests one stream serves at once; more wait for a slot, which pushes back on the
# sender instead of queueing without bound.
_IN_FLIGHT = 512


class NodeService(v1.NodeBase):
    def __init__(self, node: Node, kv: KvService) -> None:
        self._node = node
        self._kv = kv
        # Served from protobuf messages directly: the operations clients send most.
        self._hot: dict[str, Callable[[Any, node_pb2.ForwardReply], Awaitable[None]]] = {
            "get": self._get,
            "set": self._set,
            "delete": self._delete,
            # Replication and handoff: about the receiver's own copy, never routed.
            **{name: self._replication(name) for name in REPLICATION_OPS},
        }
        self._ops: dict[str, Callable[[Any], Awaitable[Any]]] = {
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

    def __mapping__(self) -> dict[str, Handler]:
        mapping = super().__mapping__()
        # The generated handler would decode with betterproto2; this stream uses protobuf's classes.
        mapping[FORWARD_ROUTE] = Handler(
            self._forward,
            Cardinality.STREAM_STREAM,
            node_pb2.ForwardBatch,
            node_pb2.ForwardReplyBatch,
        )
        return mapping

    async def _forward(self, stream: Stream[node_pb2.ForwardBatch, node_pb2.ForwardReplyBatch]) -> None:
        """Serve a peer's forwarding stream: every request concurrently, replies batched as they are
        ready (all that finished while the previous batch was being sent go out together)."""
        ready: list[node_pb2.ForwardReply] = []
        wakeup = asyncio.Event()
        slots = asyncio.Semaphore(_IN_FLIGHT)
        running: set[asyncio.Task[None]] = set()

        async def serve(request: node_pb2.ForwardRequest, name: str | None, slotted: bool) -> None:
            try:
                ready.append(await self._serve(request, name))
                wakeup.set()
            finally:
                if slotted:
                    slots.release()

        async def read() -> None:
            try:
                async for batch in stream:
                    for request in batch.requests:
                        name = request.WhichOneof("op")
                        if name == "get":
                            # Most reads are answered from memory at once: no task, no timer.
                            answered = self._get_now(request)
                            if answered is not None:
                                ready.append(answered)
                                wakeup.set()
                                continue
                        # Replication never waits behind forwarded writes: those may be waiting
                        # for the very replication the sender asks for on the other stream.
                        slotted = name not in REPLICATION_OPS
                        if slotted:
                            await slots.acquire()
                        task = asyncio.create_task(serve(request, name, slotted))
                        running.add(task)
                        task.add_done_callback(running.discard)
                if running:
                    await asyncio.gather(*running, return_exceptions=True)
            finally:
                wakeup.set()

        reader = asyncio.create_task(read(), name="forward-receiver")
        try:
            while True:
                await wakeup.wait()
                # As on the sending side: let what is about to finish join this batch.
                await asyncio.sleep(0)
                wakeup.clear()
                while ready:
                    batch = ready[:MAX_BATCH]
                    del ready[:MAX_BATCH]
                    await stream.send_message(node_pb2.ForwardReplyBatch(replies=batch))
                if reader.done():
                    break
        finally:
            reader.cancel()
            for task in list(running):
                task.cancel()
        if reader.done() and not reader.cancelled() and (error := reader.exception()) is not None:
            if isinstance(error, DecodeError):
                raise GRPCError(
                    Status.INVALID_ARGUMENT,
                    f"INVALID_ARGUMENT: a forwarding stream message is unreadable: {error}",
                )
            log.info("forwarding stream from a peer ended: %r", error)

    async def _serve(self, request: node_pb2.ForwardRequest, name: str | None) -> node_pb2.ForwardReply:
        """Serve one forwarded request (``name`` is its operation) in the task :meth:`_forward` gave
        it, within its deadline."""
        reply = node_pb2.ForwardReply()
        reply.id = request.id
        hot = self._hot.get(name or "")
        handler = None if hot is not None else self._ops.get(name or "")
        if name is None or (hot is None and handler is None):
            reply.failure.reason = "INVALID_ARGUMENT"
            reply.failure.detail = f"unknown forwarded operation {name!r}"
            return reply
        caller = request.caller
        token = FORWARDED.set(caller)
        # The deadline as a bare timer that cancels this task (which serves nothing else), not
        # asyncio.timeout(): this runs for every forwarded request and replicated batch.
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        deadline = _Deadline(task)
        timer = asyncio.get_running_loop().call_later(max(request.timeout_ms, 1) / 1000, deadline.expire)
        try:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("forwarded %s from %s request_id=%s", name, caller.origin, caller.request_id)
            if hot is not None:
                await hot(getattr(request, name), reply)
            else:
                assert handler is not None
                reply = await self._bridged(request, name, handler)
            return reply
        except PeersyncError as exc:
            failure = failure_from_error(exc)
        except asyncio.CancelledError:
            # Only the deadline's own cancellation becomes an answer; another one (the stream
            # closing, the node stopping) that came with it still ends the task.
            if not deadline.expired or task.uncancel() > cancelling:
                raise
            failure = node_pb2.Failure(
                reason="UNAVAILABLE", detail="the owner did not finish within the deadline"
            )
        except Exception:
            log.exception("forwarded %s failed", name)
            failure = _internal_failure()
        finally:
            timer.cancel()
            FORWARDED.reset(token)
        reply = node_pb2.ForwardReply(id=request.id)
        reply.failure.CopyFrom(failure)
        return reply

    def _get_now(self, request: node_pb2.ForwardRequest) -> node_pb2.ForwardReply | None:
        """The reply to a forwarded get if this node can give it without waiting (see
        :meth:`~peersync.Service.get_held`), else None: then it is served as any other request."""
        op = request.get
        reply = node_pb2.ForwardReply()
        reply.id = request.id
        try:
            entry = self._node.service.get_held(op.namespace, op.key)
            if entry is None:
                return None  # the task that serves it logs it
            entry_into_pb(entry, reply.get.entry)
        except PeersyncError as exc:
            reply.failure.CopyFrom(failure_from_error(exc))
        except Exception:
            log.exception("forwarded get failed")
            reply.failure.CopyFrom(_internal_failure())
        if log.isEnabledFor(logging.DEBUG):
            caller = request.caller
            log.debug("forwarded get from %s request_id=%s", caller.origin, caller.request_id)
        return reply

    async def _bridged(
        self, request: node_pb2.ForwardRequest, name: str, handler: Callable[[Any], Awaitable[Any]]
    ) -> node_pb2.ForwardReply:
        """Serve a request through the client API's handler, in betterproto2's classes."""
        _, op = which(from_pb(request, v1.ForwardRequest), "op")
        result = await handler(op)
        return to_pb(v1.ForwardReply(id=request.id, **{name: result}), node_pb2.ForwardReply)

    def _replication(self, name: str) -> Callable[[Any, node_pb2.ForwardReply], Awaitable[None]]:
        async def handle(op: Any, reply: node_pb2.ForwardReply) -> None:
            await self._node.replicator.handlers[name](op, reply)

        return handle

    async def _get(self, op: kv_pb2.GetRequest, reply: node_pb2.ForwardReply) -> None:
        entry = await self._node.service.get(op.namespace, op.key)
        entry_into_pb(entry, reply.get.entry)

    async def _set(self, op: kv_pb2.SetRequest, reply: node_pb2.ForwardReply) -> None:
        entry, created = await self._node.service.set(
            op.namespace,
            op.key,
            op.value,
            op.codec,
            mode=mode_from_wire(op.mode),
            if_version=op.if_version if op.HasField("if_version") else None,
            ttl=op.ttl_seconds if op.HasField("ttl_seconds") else None,
        )
        entry_into_pb(entry, reply.set.entry)
        reply.set.created = created

    async def _delete(self, op: kv_pb2.DeleteRequest, reply: node_pb2.ForwardReply) -> None:
        entry = await self._node.service.delete(
            op.namespace, op.key, if_version=op.if_version if op.HasField("if_version") else None
        )
        entry_into_pb(entry, reply.delete.entry)

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
        token = FORWARDED.set(node_pb2.Caller())
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


def _internal_failure() -> node_pb2.Failure:
    """What a forwarded request that failed on a bug of this node answers (the log has the rest)."""
    return node_pb2.Failure(reason="INTERNAL", detail="the owner failed to handle the request; see its log")


class _Deadline:
    """Cancels the task serving a forwarded request when its deadline passes, and remembers that
    it did, so that the task tells that cancellation from one of its own."""

    __slots__ = ("_task", "expired")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self._task = task
        self.expired = False

    def expire(self) -> None:
        self.expired = True
        self._task.cancel()
