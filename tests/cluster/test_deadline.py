"""The deadline a sender puts on a forwarded request holds on the owner: a request the owner cannot
finish in time is answered with a retryable UNAVAILABLE when the deadline passes, and the other
requests of the stream are served meanwhile."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from peersync.v1 import kv_pb2, node_pb2
from tests.cluster.conftest import Harness
from tests.cluster.test_replication_input import forward_raw
from tests.support import eventually

pytestmark = pytest.mark.slow

WAIT = 10.0
# The deadline of the write that cannot finish: its one replica is stopped.
DEADLINE = 0.3
# Membership timings long enough that the stopped replica stays a member throughout.
TIMINGS = ("--suspect-after", "15", "--dead-after", "10")


async def test_a_forwarded_write_past_its_deadline_gets_unavailable_and_the_stream_goes_on(
    harness: Harness,
) -> None:
    harness.start("a", *TIMINGS)
    harness.start("b", *TIMINGS)
    async with httpx.AsyncClient(timeout=WAIT) as client:

        async def formed() -> bool:
            views = [await harness.astates(client, n) for n in ("a", "b")]
            return all(v.get("a") == v.get("b") == "alive" for v in views)

        await eventually(formed, WAIT)
        ns = next(f"deadline-{i}" for i in range(100) if harness.owner("a", f"deadline-{i}")["owner"] == "a")
        put = await client.put(f"{harness.url('a')}/v1/namespaces/{ns}/keys/k", json={"value": 1})
        assert put.status_code in (200, 201), put.text

        harness.nodes["b"].signal(signal.SIGSTOP)
        try:
            late = node_pb2.ForwardRequest(
                id=1,
                timeout_ms=int(DEADLINE * 1000),
                set=kv_pb2.SetRequest(namespace=ns, key="late", value=b"2", codec="json"),
            )
            quick = node_pb2.ForwardRequest(
                id=2, timeout_ms=int(WAIT * 1000), get=kv_pb2.GetRequest(namespace=ns, key="k")
            )
            batch = node_pb2.ForwardBatch(requests=[late, quick]).SerializeToString()
            began = time.monotonic()
            replies, error = await forward_raw(harness.nodes["a"], batch)
            took = time.monotonic() - began
        finally:
            harness.nodes["b"].signal(signal.SIGCONT)

    assert error is None, error
    answers = {reply.id: reply for message in replies for reply in message.replies}
    assert set(answers) == {1, 2}
    assert answers[1].failure.reason == "UNAVAILABLE", answers[1]
    assert "deadline" in answers[1].failure.detail, answers[1].failure.detail
    # Answered at its deadline, not when the owner's own wait for the replica (5 s) gave up.
    assert took < 5.0, f"the late write was answered after {took:.2f}s"
    assert answers[2].WhichOneof("result") == "get", answers[2]
    assert answers[2].get.entry.value == b"1"
