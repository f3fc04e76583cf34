"""Google's grpcio client against our grpclib server, with stubs generated from the same .proto.

This is the check that the wire format is standard gRPC and protobuf, not just whatever betterproto2
agrees with itself about: field numbers, optional presence, bytes, oneofs, status codes, streaming.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from grpc_tools import protoc

from peersync.v1 import kv_pb2
from tests.support import eventually

from .conftest import WAIT, Running, make_config, serving

PROTO_ROOT = Path(__file__).resolve().parents[2] / "proto"
# NULs and invalid UTF-8 (a stray continuation byte, a broken sequence): bytes must stay bytes.
BINARY = b"\x00\xff\xfe\x80\xc3\x28 tail \x00"


class Stubs:
    def __init__(self, pb2: ModuleType, pb2_grpc: ModuleType) -> None:
        self.pb2 = pb2
        self.pb2_grpc = pb2_grpc


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> Stubs:
    """grpcio's client stubs for kv.proto, generated now, over protobuf's message classes.

    The messages are the committed peersync.v1.kv_pb2 (which `nox -s proto` keeps equal to what
    protoc writes): protobuf's registry refuses a second definition of the same message names."""
    out = tmp_path_factory.mktemp("grpcio-stubs")
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"--proto_path={PROTO_ROOT}",
            f"--grpc_python_out={out}",
            str(PROTO_ROOT / "peersync" / "v1" / "kv.proto"),
        ]
    )
    assert status == 0, "protoc failed"
    path = out / "peersync" / "v1" / "kv_pb2_grpc.py"
    spec = importlib.util.spec_from_file_location("kv_pb2_grpc", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return Stubs(kv_pb2, module)


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    async with serving(make_config(log_retention=2)) as server:
        yield server


@pytest.fixture
async def kv(running: Running, stubs: Stubs) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(running.target) as channel:
        yield stubs.pb2_grpc.KVStub(channel)
    # grpcio closes the TCP connection from its own threads some time after close() returns. Wait
    # until the server has seen that and closed its end: otherwise its socket outlives this test's
    # event loop and is reported as unclosed (a ResourceWarning) in whichever test collects it.
    await eventually(lambda: not server_connections(running.port), WAIT)


async def rpc_error(call: Awaitable[object]) -> tuple[grpc.StatusCode, str]:
    """The status and details ``call`` fails with.

    Not pytest.raises: an AioRpcError keeps its call, and so the TCP connection, alive for as long
    as it lives, and ExceptionInfo's reference cycle would keep it past the end of the test.
    """
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    raise AssertionError("the call succeeded")


def server_connections(port: int) -> list[str]:
    """The kernel's open TCP connections whose local port is ``port`` (Linux ``/proc/net``)."""
    found = []
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue
        for row in table.read_text().splitlines()[1:]:
            fields = row.split()
            local, remote, state = fields[1], fields[2], fields[3]
            # ESTABLISHED or CLOSE_WAIT (the peer closed, we have not yet).
            if int(local.rsplit(":", 1)[1], 16) == port and state in ("01", "08"):
                found.append(remote)
    return found


async def test_binary_values_round_trip(kv: Any, stubs: Stubs) -> None:
    pb2 = stubs.pb2
    response = await kv.Set(
        pb2.SetRequest(namespace="app", key="bin/1", value=BINARY, codec="raw"), timeout=WAIT
    )
    assert response.created
    assert response.entry.value == BINARY
    assert not response.entry.HasField("expire_at")

    got = await kv.Get(pb2.GetRequest(namespace="app", key="bin/1"), timeout=WAIT)
    assert got.entry.value == BINARY
    assert (got.entry.namespace, got.entry.key, got.entry.codec) == ("app", "bin/1", "raw")
    assert (got.entry.version, got.entry.revision) == (1, 1)
    assert got.entry.created_at > 0


async def test_optional_fields_and_enums_cross_the_wire(kv: Any, stubs: Stubs) -> None:
    pb2 = stubs.pb2
    first = await kv.Set(
        pb2.SetRequest(
            namespace="app",
            key="k",
            value=b"{}",
            codec="json",
            ttl_seconds=60.0,
            mode=pb2.MODE_CREATE,
            if_version=0,
        ),
        timeout=WAIT,
    )
    assert first.entry.HasField("expire_at")
    assert first.entry.expire_at - first.entry.updated_at == 60_000
    versions = await kv.GetVersions(pb2.GetVersionsRequest(namespace="app", key="k", version=1), timeout=WAIT)
    assert [e.version for e in versions.entries] == [1]


@pytest.mark.parametrize(
    ("request_fields", "code", "reason"),
    [
        ({"namespace": "app", "key": "missing"}, grpc.StatusCode.NOT_FOUND, "NOT_FOUND"),
        ({"namespace": "bad name", "key": "k"}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    ],
)
async def test_errors_are_standard_status_codes(
    kv: Any, stubs: Stubs, request_fields: dict[str, str], code: grpc.StatusCode, reason: str
) -> None:
    status, details = await rpc_error(kv.Get(stubs.pb2.GetRequest(**request_fields), timeout=WAIT))
    assert status == code
    assert details.startswith(f"{reason}: ")


async def test_compare_and_set_and_unknown_modes(kv: Any, stubs: Stubs) -> None:
    pb2 = stubs.pb2
    await kv.Set(pb2.SetRequest(namespace="app", key="k", value=b"1", codec="json"), timeout=WAIT)
    status, details = await rpc_error(
        kv.Set(pb2.SetRequest(namespace="app", key="k", value=b"2", codec="json", if_version=5), timeout=WAIT)
    )
    assert status == grpc.StatusCode.FAILED_PRECONDITION
    assert details.startswith("VERSION_MISMATCH: ")
    # A newer client's mode this server does not know (proto3 enums are open).
    status, details = await rpc_error(
        kv.Set(pb2.SetRequest(namespace="app", key="k", value=b"2", codec="json", mode=9), timeout=WAIT)
    )
    assert status == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("INVALID_ARGUMENT: ")


async def test_watch_stream(kv: Any, stubs: Stubs) -> None:
    pb2 = stubs.pb2
    await kv.Set(pb2.SetRequest(namespace="app", key="a", value=BINARY, codec="raw"), timeout=WAIT)
    call = kv.Watch(pb2.WatchRequest(namespaces=["app"], start={"app": 0}))
    try:
        async with asyncio.timeout(WAIT):
            started = await call.read()
            assert started.WhichOneof("kind") == "heartbeat"
            assert dict(started.heartbeat.positions) == {"app": 0}

            replayed = await call.read()
            assert replayed.WhichOneof("kind") == "event"
            assert replayed.event.type == pb2.EVENT_TYPE_SET
            assert (replayed.event.key, replayed.event.revision) == ("a", 1)
            assert replayed.event.entry.value == BINARY

            await kv.Delete(pb2.DeleteRequest(namespace="app", key="a"), timeout=WAIT)
            live = await call.read()
            while live.WhichOneof("kind") == "heartbeat":
                live = await call.read()
            assert live.event.type == pb2.EVENT_TYPE_DELETE
            assert (live.event.key, live.event.revision) == ("a", 2)
    finally:
        call.cancel()


async def test_watch_ends_with_compacted(kv: Any, stubs: Stubs) -> None:
    pb2 = stubs.pb2
    for n in range(5):
        await kv.Set(
            pb2.SetRequest(namespace="app", key="k", value=str(n).encode(), codec="json"), timeout=WAIT
        )
    call = kv.Watch(pb2.WatchRequest(namespaces=["app"], start={"app": 0}))
    async with asyncio.timeout(WAIT):
        messages = [message async for message in call]
    assert [m.WhichOneof("kind") for m in messages] == ["compacted"]
    assert messages[0].compacted.namespace == "app"
    assert messages[0].compacted.floor >= 1
    assert await call.code() == grpc.StatusCode.OK
