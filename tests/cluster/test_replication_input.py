"""Bad input on the node-to-node replication operations (replicate, fence, read_log, export,
install, release) gets a clear error with a stable reason and changes nothing on the receiver.

Every request goes over a real gRPC connection (the forwarding stream, as a peer would open it) to
a real ``peersync serve`` process that is a member of a cluster on a real Redis. What the receiver
holds is read back over HTTP (snapshot, namespace listing) and through ``export``, which also shows
the namespace's term.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.encoding.base import CodecBase
from grpclib.exceptions import GRPCError

from peersync._address import Address
from peersync._forwarding import FORWARD_ROUTE, PeerLink
from peersync.v1 import kv_pb2, node_pb2
from tests.support import NodeProcess, node_env

pytestmark = pytest.mark.slow

# Bound for one request or one answer on the wire: generous, so a slow machine does not flake.
WAIT = 10.0
# Records the member keeps per namespace: small, so a test passes the floor with a few writes.
LOG_RETENTION = 5
# Terms are Lamport clock values shifted left by this many bits (peersync._replication.TAG_BITS):
# adding 1 << TERM_SHIFT gives a term newer than any of the same clock value.
TERM_SHIFT = 20
# Larger than any term, revision or position the store can hold (its SQL columns are 64-bit signed).
HUGE = 2**64 - 1


def _start(root: Path, *args: str) -> NodeProcess:
    return NodeProcess(root, "--log-retention", str(LOG_RETENTION), *args, env=node_env()).start()


def _start_member(redis_url: str, root: Path) -> NodeProcess:
    """A one-member cluster: a real member (it replicates, fences, hands over), alone in its ring."""
    return _start(root, "--node-id", "m", "--redis-url", redis_url, "--cluster", f"t{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="module")
def member(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One member for the module's tests; each test keeps to namespaces of its own."""
    node = _start_member(redis_url, tmp_path_factory.mktemp("member"))
    yield node
    node.kill()


@pytest.fixture(scope="module")
def loner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node that is not a cluster member: no --redis-url."""
    node = _start(tmp_path_factory.mktemp("loner"))
    yield node
    node.kill()


@dataclass(frozen=True)
class Copy:
    """The receiver's copy of a namespace, as every reader sees it."""

    snapshot: Any
    listed: frozenset[str]
    head: tuple[int, int, int]  # revision, head term, term (from export)


class Peer:
    """What a peer node holds towards the receiver: its forwarding stream, and an HTTP client to
    look at the receiver's state."""

    def __init__(self, node: NodeProcess) -> None:
        self.node = node
        self.link = PeerLink("receiver", Address.parse(node.grpc_addr), connect_timeout=WAIT)
        self.http = httpx.AsyncClient(base_url=node.http_url, timeout=WAIT)

    async def close(self) -> None:
        await self.link.close()
        await self.http.aclose()

    async def call(self, request: node_pb2.ForwardRequest) -> node_pb2.ForwardReply:
        return await self.link.call(request, WAIT)

    async def refused(self, reason: str, request: node_pb2.ForwardRequest) -> node_pb2.Failure:
        """Send ``request``; it must fail with ``reason``. Returns the failure."""
        reply = await self.call(request)
        assert reply.WhichOneof("result") == "failure", f"expected {reason}, got a result: {reply}"
        assert reply.failure.reason == reason, f"expected {reason}, got {reply.failure}"
        assert reply.failure.detail, "a failure says what was wrong"
        return reply.failure

    async def export(self, namespace: str) -> node_pb2.NamespaceImage:
        reply = await self.call(node_pb2.ForwardRequest(export=node_pb2.ExportRequest(namespace=namespace)))
        assert reply.WhichOneof("result") == "export", reply
        return reply.export

    async def fill(self, count: int) -> str:
        """A fresh namespace with ``count`` keys written through HTTP (revisions 1..count)."""
        namespace = f"r{uuid.uuid4().hex[:12]}"
        for i in range(count):
            put = await self.http.put(f"/v1/namespaces/{namespace}/keys/k{i}", json={"value": i})
            assert put.status_code == 201, put.text
        return namespace

    async def copy(self, namespace: str) -> Copy:
        snap = await self.http.get(f"/v1/namespaces/{namespace}/snapshot")
        assert snap.status_code == 200, snap.text
        listing = await self.http.get("/v1/namespaces", params={"local": "true", "limit": 1000})
        assert listing.status_code == 200, listing.text
        image = await self.export(namespace)
        return Copy(
            snap.json(),
            frozenset(n["name"] for n in listing.json()["namespaces"]),
            (image.revision, image.head_term, image.term),
        )


@pytest.fixture
async def peer(member: NodeProcess, request: pytest.FixtureRequest) -> AsyncIterator[Peer]:
    p = Peer(member)
    try:
        yield p
    finally:
        await p.close()
        report = getattr(request.node, "rep_call", None)
        if report is None or report.failed:
            print(f"--- log tail of the member ---\n{member.log_tail(60)}")


# -- building requests ---------------------------------------------------------------------------


def record(
    namespace: str,
    revision: int,
    term: int,
    *,
    key: str = "x",
    kind: int = kv_pb2.EVENT_TYPE_SET,
    entry: kv_pb2.Entry | None = None,
) -> kv_pb2.Event:
    """A log record; a SET carries an entry of its key written at ``revision`` unless given one."""
    event = kv_pb2.Event(
        type=cast(kv_pb2.EventType, kind), namespace=namespace, key=key, revision=revision, at=1, term=term
    )
    if entry is not None:
        event.entry.CopyFrom(entry)
    elif kind == kv_pb2.EVENT_TYPE_SET:
        event.entry.CopyFrom(an_entry(namespace, key, revision))
    return event


def an_entry(namespace: str, key: str, revision: int, *, version: int = 1) -> kv_pb2.Entry:
    return kv_pb2.Entry(
        namespace=namespace,
        key=key,
        value=b'"v"',
        codec="json",
        version=version,
        revision=revision,
        created_at=1,
        updated_at=1,
    )


def replicate(namespace: str, term: int, *events: kv_pb2.Event) -> node_pb2.ForwardRequest:
    return node_pb2.ForwardRequest(
        replicate=node_pb2.ReplicateRequest(namespace=namespace, term=term, events=events)
    )


def fence(namespace: str, term: int) -> node_pb2.ForwardRequest:
    return node_pb2.ForwardRequest(fence=node_pb2.FenceRequest(namespace=namespace, term=term))


def install(image: node_pb2.NamespaceImage) -> node_pb2.ForwardRequest:
    return node_pb2.ForwardRequest(install=node_pb2.InstallRequest(image=image))


def read_log(namespace: str, after: int, limit: int = 100) -> node_pb2.ForwardRequest:
    return node_pb2.ForwardRequest(
        read_log=node_pb2.ReadLogRequest(namespace=namespace, after=after, limit=limit)
    )


def newer(term: int) -> int:
    return term + (1 << TERM_SHIFT)


# -- replicate -------------------------------------------------------------------------------------


async def test_records_of_another_namespace_are_refused(peer: Peer) -> None:
    ns = await peer.fill(3)
    other = f"o{uuid.uuid4().hex[:12]}"
    before = await peer.copy(ns)
    revision, _, term = before.head
    failure = await peer.refused(
        "INVALID_ARGUMENT",
        replicate(ns, term, record(ns, revision + 1, term), record(other, revision + 2, term, key="y")),
    )
    assert failure.field == "events"
    assert await peer.copy(ns) == before, "nothing applied, and no namespace appeared"


async def test_records_with_revisions_that_do_not_follow_each_other_are_refused(peer: Peer) -> None:
    ns = await peer.fill(3)
    before = await peer.copy(ns)
    revision, _, term = before.head
    await peer.refused(
        "INVALID_ARGUMENT",
        replicate(ns, term, record(ns, revision + 1, term), record(ns, revision + 3, term, key="y")),
    )
    assert await peer.copy(ns) == before


async def test_a_record_of_an_unknown_type_is_refused(peer: Peer) -> None:
    ns = await peer.fill(3)
    before = await peer.copy(ns)
    revision, _, term = before.head
    failure = await peer.refused(
        "INVALID_ARGUMENT",
        replicate(ns, term, record(ns, revision + 1, term), record(ns, revision + 2, term, kind=42)),
    )
    assert "42" in failure.detail
    assert await peer.copy(ns) == before


@pytest.mark.parametrize(
    "defect",
    ["revision 0", "set without its entry", "entry of another key", "newer than the sender's term"],
)
async def test_a_malformed_record_is_refused(peer: Peer, defect: str) -> None:
    ns = await peer.fill(3)
    before = await peer.copy(ns)
    revision, _, term = before.head
    good = record(ns, revision + 1, term)
    if defect == "revision 0":
        bad = [record(ns, 0, term)]
    elif defect == "set without its entry":
        bare = record(ns, revision + 2, term, key="y")
        bare.ClearField("entry")
        bad = [good, bare]
    elif defect == "entry of another key":
        bad = [good, record(ns, revision + 2, term, key="y", entry=an_entry(ns, "z", revision + 2))]
    else:
        bad = [good, record(ns, revision + 2, newer(term), key="y")]
    await peer.refused("INVALID_ARGUMENT", replicate(ns, term, *bad))
    assert await peer.copy(ns) == before


async def test_a_set_record_whose_entry_was_written_at_another_revision_is_refused(peer: Peer) -> None:
    """A SET record's entry is the key as that record left it: written at the record's revision.
    An entry claiming a later revision would make every image of the namespace impossible (no
    entry may be newer than its image), so no other copy could be caught up by image again."""
    ns = await peer.fill(3)
    before = await peer.copy(ns)
    revision, _, term = before.head
    entry = an_entry(ns, "x", revision + 99)
    await peer.refused("INVALID_ARGUMENT", replicate(ns, term, record(ns, revision + 1, term, entry=entry)))
    assert await peer.copy(ns) == before


async def test_records_of_an_older_term_are_fenced(peer: Peer) -> None:
    ns = await peer.fill(3)
    before = await peer.copy(ns)
    revision, _, term = before.head
    old = term - 1
    failure = await peer.refused("FENCED", replicate(ns, old, record(ns, revision + 1, old)))
    assert failure.term == term, "the failure names the newer term the receiver knows"
    assert await peer.copy(ns) == before


async def test_records_past_the_head_are_a_gap(peer: Peer) -> None:
    ns = await peer.fill(3)
    before = await peer.copy(ns)
    revision, head_term, term = before.head
    failure = await peer.refused("LOG_GAP", replicate(ns, term, record(ns, revision + 2, term)))
    assert (failure.revision, failure.term) == (revision, head_term), "the gap names the receiver's head"
    assert await peer.copy(ns) == before


async def test_records_after_a_last_record_the_sender_does_not_have_are_refused(peer: Peer) -> None:
    """The sender names the term of its record before the ones it sends: if the receiver's last
    record at that revision is of another term, it has a record the sender does not, and appending
    after it would hide that (its head would equal the sender's)."""
    ns = await peer.fill(3)
    before = await peer.copy(ns)
    revision, head_term, term = before.head
    later = newer(term)
    request = replicate(ns, later, record(ns, revision + 1, later))
    request.replicate.prev_term = newer(head_term) + 1
    failure = await peer.refused("LOG_DIVERGED", request)
    assert (failure.revision, failure.term) == (revision, head_term), "it names the receiver's head"
    assert await peer.copy(ns) == before, "nothing applied, the newer term included"
    batch = node_pb2.ForwardRequest(replicate_batch=node_pb2.ReplicateBatch(items=[request.replicate]))
    reply = await peer.call(batch)
    [result] = reply.replicate_batch.results
    assert result.failure.reason == "LOG_DIVERGED", result
    assert await peer.copy(ns) == before
    request.replicate.prev_term = head_term
    reply = await peer.call(request)
    assert (reply.replicate.revision, reply.replicate.head_term) == (revision + 1, later), reply


async def test_a_batch_of_namespaces_fails_only_the_items_at_fault(peer: Peer) -> None:
    good, gap = await peer.fill(2), await peer.fill(2)
    good_before, gap_before = await peer.copy(good), await peer.copy(gap)
    good_revision, _, good_term = good_before.head
    gap_revision, gap_head_term, gap_term = gap_before.head
    batch = node_pb2.ReplicateBatch(
        items=[
            node_pb2.ReplicateRequest(
                namespace=good, term=good_term, events=[record(good, good_revision + 1, good_term)]
            ),
            node_pb2.ReplicateRequest(
                namespace=gap, term=gap_term, events=[record(gap, gap_revision + 2, gap_term)]
            ),
            node_pb2.ReplicateRequest(namespace="not a name", term=1),
        ]
    )
    reply = await peer.call(node_pb2.ForwardRequest(replicate_batch=batch))
    assert reply.WhichOneof("result") == "replicate_batch", reply
    results = reply.replicate_batch.results
    assert [r.WhichOneof("result") for r in results] == ["head", "failure", "failure"]
    assert (results[0].head.revision, results[0].head.head_term) == (good_revision + 1, good_term)
    assert results[1].failure.reason == "LOG_GAP"
    assert (results[1].failure.revision, results[1].failure.term) == (gap_revision, gap_head_term)
    assert results[2].failure.reason == "INVALID_ARGUMENT"
    assert await peer.copy(gap) == gap_before, "the refused item changed nothing"
    assert (await peer.copy(good)).head[0] == good_revision + 1


async def test_records_that_contradict_the_log_below_its_head_are_diverged(peer: Peer) -> None:
    """Records 1 and 2 of a newer term than the receiver's last record (3) cannot be the ones it
    holds: along a log terms never decrease, so its records 1 and 2 are of an older term. Taking
    them as duplicates would acknowledge records the receiver does not have."""
    ns = await peer.fill(3)
    before = await peer.copy(ns)
    _, _, term = before.head
    later = newer(term)
    failure = await peer.refused(
        "LOG_DIVERGED", replicate(ns, later, record(ns, 1, later), record(ns, 2, later, key="y"))
    )
    assert failure.revision == 3
    assert await peer.copy(ns) == before, "nothing applied, and the term is not adopted"


# Names the client API refuses (empty, a space, too long, a slash); the operations between nodes
# must not let them into the store either.
BAD_NAMES = ["", "has space", "x" * 65, "slash/in/it"]


@pytest.mark.parametrize("op", ["replicate", "fence", "install"])
async def test_a_namespace_no_client_could_name_is_refused(peer: Peer, op: str) -> None:
    ns = await peer.fill(1)
    before = await peer.copy(ns)
    term = newer(before.head[2])
    answers: dict[str, str] = {}
    for name in BAD_NAMES:
        if op == "replicate":
            request = replicate(name, term, record(name, 1, term))
        elif op == "fence":
            request = fence(name, term)
        else:
            image = node_pb2.NamespaceImage(
                namespace=name, revision=1, term=term, head_term=term, entries=[an_entry(name, "x", 1)]
            )
            request = install(image)
        reply = await peer.call(request)
        result = reply.WhichOneof("result")
        answers[name] = reply.failure.reason if result == "failure" else f"accepted ({result})"
    assert answers == dict.fromkeys(BAD_NAMES, "INVALID_ARGUMENT")
    assert (await peer.copy(ns)).listed == before.listed


# -- fence ---------------------------------------------------------------------------------------


async def test_a_fence_older_than_the_receivers_term_is_fenced(peer: Peer) -> None:
    ns = await peer.fill(3)
    before = await peer.copy(ns)
    term = before.head[2]
    failure = await peer.refused("FENCED", fence(ns, term - 1))
    assert failure.term == term
    assert await peer.copy(ns) == before


@pytest.mark.parametrize("op", ["fence", "replicate", "install"])
async def test_a_term_no_node_could_pick_is_refused_and_leaves_the_node_serving(
    redis_url: str, tmp_path: Path, op: str
) -> None:
    """A term beyond what the store and the wire can hold is a peer's mistake (INVALID_ARGUMENT),
    and must not leak into this node's clock: every later takeover picks a term above the clock,
    so a term near 2**64 would leave no namespace able to change owner again."""
    node = _start_member(redis_url, tmp_path / "m")
    peer = Peer(node)
    try:
        ns = await peer.fill(1)
        before = await peer.copy(ns)
        if op == "fence":
            request = fence(ns, HUGE)
        elif op == "replicate":
            request = replicate(ns, HUGE, record(ns, 2, HUGE))
        else:
            request = install(
                node_pb2.NamespaceImage(
                    namespace=ns, revision=2, term=HUGE, head_term=HUGE, entries=[an_entry(ns, "x", 2)]
                )
            )
        reply = await peer.call(request)
        after = await peer.copy(ns)
        # A namespace this node has never held: serving it means taking it over with a new term.
        fresh = f"f{uuid.uuid4().hex[:12]}"
        put = await peer.http.put(f"/v1/namespaces/{fresh}/keys/k", json={"value": 1})
        problems = []
        if reply.WhichOneof("result") != "failure" or reply.failure.reason != "INVALID_ARGUMENT":
            problems.append(f"the {op} was answered {reply}")
        if after != before:
            problems.append(f"the namespace changed: {before} -> {after}")
        if put.status_code != 201:
            problems.append(f"a write to a fresh namespace then got {put.status_code} {put.text}")
        assert not problems, problems
    except BaseException:
        print(f"--- log tail of the member ---\n{node.log_tail(60)}")
        raise
    finally:
        await peer.close()
        node.kill()


# -- install -------------------------------------------------------------------------------------


IMAGE_DEFECTS = [
    "entry of another namespace",
    "entry newer than the image",
    "alias of another namespace",
    "alias newer than the image",
    "head term newer than the term",
]


@pytest.mark.parametrize("defect", IMAGE_DEFECTS)
async def test_an_impossible_image_is_refused(peer: Peer, defect: str) -> None:
    ns = await peer.fill(3)
    before = await peer.copy(ns)
    revision, _, term = before.head
    # A newer owner's image, one record ahead: installed, it would replace what the receiver shows.
    later, head = newer(term), revision + 1
    image = node_pb2.NamespaceImage(
        namespace=ns, revision=head, term=later, head_term=later, entries=[an_entry(ns, "new", head)]
    )
    if defect == "entry of another namespace":
        image.entries.append(an_entry("elsewhere", "k", head))
    elif defect == "entry newer than the image":
        image.entries.append(an_entry(ns, "k", head + 1))
    elif defect == "alias of another namespace":
        image.aliases.append(kv_pb2.Alias(namespace="elsewhere", alias="a", target="new", revision=head))
    elif defect == "alias newer than the image":
        image.aliases.append(kv_pb2.Alias(namespace=ns, alias="a", target="new", revision=head + 1))
    else:
        image.head_term = later + 1
    failure = await peer.refused("INVALID_ARGUMENT", install(image))
    assert failure.field == "image"
    assert await peer.copy(ns) == before


async def test_an_image_of_an_older_term_is_fenced(peer: Peer) -> None:
    ns = await peer.fill(3)
    before = await peer.copy(ns)
    revision, _, term = before.head
    old = term - 1
    image = node_pb2.NamespaceImage(
        namespace=ns,
        revision=revision + 5,
        term=old,
        head_term=old,
        entries=[an_entry(ns, "k", revision + 5)],
    )
    failure = await peer.refused("FENCED", install(image))
    assert failure.term == term
    assert await peer.copy(ns) == before


# -- read_log --------------------------------------------------------------------------------------


async def test_reading_the_log_below_its_floor_is_compacted(peer: Peer) -> None:
    writes = LOG_RETENTION + 3
    ns = await peer.fill(writes)
    before = await peer.copy(ns)
    floor = writes - LOG_RETENTION
    failure = await peer.refused("COMPACTED", read_log(ns, floor - 1))
    assert (failure.namespace, failure.floor) == (ns, floor)
    # From the floor on, the log is there.
    reply = await peer.call(read_log(ns, floor))
    assert [e.revision for e in reply.read_log.events] == list(range(floor + 1, writes + 1))
    assert await peer.copy(ns) == before


async def test_reading_the_log_past_any_revision_is_not_an_internal_error(peer: Peer) -> None:
    ns = await peer.fill(3)
    before = await peer.copy(ns)
    reply = await peer.call(read_log(ns, HUGE))
    result = reply.WhichOneof("result")
    if result == "failure":
        assert reply.failure.reason == "INVALID_ARGUMENT", reply.failure
    else:
        assert result == "read_log"
        assert not reply.read_log.events, "no record comes after every revision"
    assert await peer.copy(ns) == before


# -- release -------------------------------------------------------------------------------------


def release(namespace: str, node: str, head: tuple[int, int, int]) -> node_pb2.ForwardRequest:
    revision, head_term, term = head
    return node_pb2.ForwardRequest(
        release=node_pb2.ReleaseRequest(
            namespace=namespace, node=node, revision=revision, head_term=head_term, term=term
        )
    )


async def test_a_release_the_owner_cannot_vouch_for_is_refused_and_changes_nothing(peer: Peer) -> None:
    """The member, alone, owns every namespace and holds the only copy: it never tells a node to
    drop a copy unless that node is another member and the copy holds records; nor does it answer
    to a bad name. A refused ask takes nothing over."""
    ns = await peer.fill(3)
    before = await peer.copy(ns)
    unheld = f"r{uuid.uuid4().hex[:12]}"
    asks = {
        "a node that is not a member": (release(ns, "elsewhere", before.head), "not a member"),
        "its own copy": (release(ns, "m", before.head), "holds one of the copies"),
        "a copy ahead of it, from a stranger": (release(ns, "elsewhere", (HUGE, HUGE, HUGE)), "not a member"),
        "an empty copy": (release(ns, "m", (0, 0, 0)), "holds no record"),
        "its own copy of a namespace it does not hold": (release(unheld, "m", (1, 1, 1)), "holds one of"),
    }
    for what, (request, why) in asks.items():
        failure = await peer.refused("UNAVAILABLE", request)
        assert why in failure.detail, (what, failure.detail)
    answers: dict[str, str] = {}
    for name in BAD_NAMES:
        reply = await peer.call(release(name, "elsewhere", (1, 1, 1)))
        result = reply.WhichOneof("result")
        answers[name] = reply.failure.reason if result == "failure" else f"accepted ({result})"
    assert answers == dict.fromkeys(BAD_NAMES, "INVALID_ARGUMENT")
    assert await peer.copy(ns) == before
    # Asking about a namespace it did not hold took nothing over: no term, no record.
    assert (await peer.copy(unheld)).head == (0, 0, 0)


# -- the stream itself -----------------------------------------------------------------------------


class _RawCodec(CodecBase):
    """Sends bytes as they are: what a broken or foreign peer might put on the stream."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        return message if isinstance(message, bytes) else bytes(message.SerializeToString())

    def decode(self, data: bytes, message_type: Any) -> Any:
        return message_type.FromString(data)


async def forward_raw(
    node: NodeProcess, payload: bytes
) -> tuple[list[node_pb2.ForwardReplyBatch], GRPCError | None]:
    """Send ``payload`` as one message of a fresh forwarding stream and end it; the replies, and
    the error the stream ended with (None for OK)."""
    address = Address.parse(node.grpc_addr)
    channel = Channel(address.host, address.port, codec=_RawCodec())
    replies: list[node_pb2.ForwardReplyBatch] = []
    try:
        async with asyncio.timeout(WAIT):
            stream = channel.request(
                FORWARD_ROUTE, Cardinality.STREAM_STREAM, bytes, node_pb2.ForwardReplyBatch
            )
            try:
                async with stream:
                    await stream.send_message(payload, end=True)
                    while (batch := await stream.recv_message()) is not None:
                        replies.append(batch)
                    await stream.recv_trailing_metadata()
            except GRPCError as exc:
                return replies, exc
        return replies, None
    finally:
        channel.close()


async def test_garbage_on_the_forward_stream_ends_it_with_invalid_argument(peer: Peer) -> None:
    ns = await peer.fill(3)
    before = await peer.copy(ns)
    replies, error = await forward_raw(peer.node, b"\xff\xff\xff\xff not a ForwardBatch")
    assert not replies
    assert error is not None, "the stream ended OK: the sender cannot tell its message was unreadable"
    assert error.status is Status.INVALID_ARGUMENT, error
    assert (error.message or "").startswith("INVALID_ARGUMENT"), error.message
    # The node goes on serving other streams, and nothing changed.
    assert await peer.copy(ns) == before


async def test_an_operation_the_receiver_does_not_know_is_refused(peer: Peer) -> None:
    ns = await peer.fill(1)
    before = await peer.copy(ns)
    # Field 99 of ForwardRequest, length-delimited and empty: an operation from a newer peer.
    unknown = node_pb2.ForwardRequest.FromString(bytes([0x9A, 0x06, 0x00]))
    await peer.refused("INVALID_ARGUMENT", unknown)
    await peer.refused("INVALID_ARGUMENT", node_pb2.ForwardRequest())
    # The same through raw bytes, on a stream of its own.
    request = node_pb2.ForwardRequest(id=7, timeout_ms=int(WAIT * 1000))
    batch = node_pb2.ForwardBatch(requests=[request]).SerializeToString()
    replies, error = await forward_raw(peer.node, batch)
    assert error is None
    [reply] = [r for b in replies for r in b.replies]
    assert (reply.id, reply.failure.reason) == (7, "INVALID_ARGUMENT")
    assert await peer.copy(ns) == before


# -- a node outside any cluster --------------------------------------------------------------------


@pytest.mark.parametrize("op", ["replicate", "fence", "read_log", "export", "install", "release"])
async def test_a_node_outside_a_cluster_answers_replication_with_unavailable(
    loner: NodeProcess, op: str
) -> None:
    peer = Peer(loner)
    try:
        put = await peer.http.put("/v1/namespaces/solo/keys/k", json={"value": 1})
        assert put.status_code in (200, 201), put.text
        before = (await peer.http.get("/v1/namespaces/solo/snapshot")).json()
        requests = {
            "replicate": replicate("solo", 1 << 40, record("solo", 2, 1 << 40)),
            "fence": fence("solo", 1 << 40),
            "read_log": read_log("solo", 0),
            "export": node_pb2.ForwardRequest(export=node_pb2.ExportRequest(namespace="solo")),
            "release": release("solo", "elsewhere", (1, 1, 1)),
            "install": install(
                node_pb2.NamespaceImage(
                    namespace="solo",
                    revision=9,
                    term=1 << 40,
                    head_term=1 << 40,
                    entries=[an_entry("solo", "z", 9)],
                )
            ),
        }
        failure = await peer.refused("UNAVAILABLE", requests[op])
        assert "member" in failure.detail, failure.detail
        assert (await peer.http.get("/v1/namespaces/solo/snapshot")).json() == before
    except BaseException:
        print(f"--- log tail of the node ---\n{loner.log_tail(60)}")
        raise
    finally:
        await peer.close()
