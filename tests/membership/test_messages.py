"""The wire format: what round-trips, and every way a message is refused."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from peersync._messages import (
    MAX_MESSAGE_BYTES,
    BadMessage,
    DropReason,
    Heartbeat,
    Left,
    MemberRecord,
    Message,
    Suspect,
    decode,
    encode,
    new_record,
)

CLUSTER = "blue"
SECRET = b"correct horse battery staple"
RECORD = new_record("node-a", "127.0.0.1:9090", "127.0.0.1:8080", now_ms=1_700_000_000_000)
MESSAGES: list[Message] = [
    Heartbeat(RECORD, digest="d41d8cd9", clock=42),
    Suspect("node-b", incarnation=7, sender="node-a"),
    Left(RECORD),
]


def refused(data: bytes, *, cluster: str = CLUSTER, secret: bytes | None = None) -> DropReason:
    with pytest.raises(BadMessage) as caught:
        decode(data, cluster, secret)
    return caught.value.why


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("secret", [None, SECRET], ids=["unsigned", "signed"])
def test_round_trip(msg: Message, secret: bytes | None) -> None:
    assert decode(encode(msg, CLUSTER, secret), CLUSTER, secret) == msg


def test_the_envelope_is_versioned_names_the_cluster_and_ends_with_the_signature() -> None:
    data = encode(MESSAGES[0], CLUSTER, SECRET, now_ms=5)
    envelope = msgspec.json.decode(data)
    assert list(envelope) == ["v", "cluster", "sender", "sent_at_ms", "body", "sig"]
    assert envelope["v"] == 1
    assert envelope["cluster"] == CLUSTER
    assert envelope["sender"] == "node-a"
    assert envelope["sent_at_ms"] == 5
    assert envelope["body"]["kind"] == "heartbeat"
    assert len(envelope["sig"]) == 64
    assert msgspec.json.decode(encode(MESSAGES[0], CLUSTER, None))["sig"] is None


def test_a_signed_message_is_accepted_without_a_secret() -> None:
    # Decided: a member without a secret cannot check signatures, and refusing them would split
    # a cluster half-way through rolling a secret out.
    assert decode(encode(MESSAGES[0], CLUSTER, SECRET), CLUSTER, None) == MESSAGES[0]


def test_foreign_cluster() -> None:
    assert refused(encode(MESSAGES[0], "green", None)) == "foreign_cluster"
    assert refused(encode(MESSAGES[0], "green", SECRET), secret=SECRET) == "foreign_cluster"


def test_unsigned_when_a_secret_is_set() -> None:
    assert refused(encode(MESSAGES[0], CLUSTER, None), secret=SECRET) == "unsigned"


def test_wrong_secret() -> None:
    assert refused(encode(MESSAGES[0], CLUSTER, b"guess"), secret=SECRET) == "bad_signature"


def test_tampered_body_breaks_the_signature() -> None:
    data = encode(MESSAGES[1], CLUSTER, SECRET)
    tampered = data.replace(b'"incarnation":7', b'"incarnation":9')
    assert tampered != data
    assert refused(tampered, secret=SECRET) == "bad_signature"


def test_wrong_version() -> None:
    data = encode(MESSAGES[0], CLUSTER, SECRET).replace(b'{"v":1,', b'{"v":2,', 1)
    assert refused(data, secret=SECRET) == "version"


def test_oversized_is_refused_before_parsing() -> None:
    assert refused(b"x" * (MAX_MESSAGE_BYTES + 1)) == "too_large"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        b"\xff\xfe\x00",
        b"[]",
        b'{"sig":null}',
        b'{"v":1,"cluster":"blue","sig":null}',
        b'{"v":"1","cluster":"blue","sender":"a","sent_at_ms":0,"body":{},"sig":null}',
        b'{"v":1,"cluster":"blue","sender":"a","sent_at_ms":0,"body":{"kind":"gossip"},"sig":null}',
        # Nesting deeper than the interpreter's recursion limit, in a field the header skips and
        # in the body.
        b'{"v":1,"extra":' + b"[" * 30_000 + b"]" * 30_000 + b',"sig":null}',
        b'{"v":1,"cluster":"blue","sender":"a","sent_at_ms":0,"body":'
        + b"[" * 30_000
        + b"]" * 30_000
        + b',"sig":null}',
    ],
)
def test_garbage_is_malformed(data: bytes) -> None:
    assert refused(data) == "malformed"


def envelope_with(body: Mapping[str, object], sender: str = "node-a") -> bytes:
    unsigned = msgspec.json.encode(
        {"v": 1, "cluster": CLUSTER, "sender": sender, "sent_at_ms": 0, "body": body}
    )
    return unsigned[:-1] + b',"sig":null}'


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "suspect", "target_id": "b", "incarnation": "7", "sender": "node-a"},
        {"kind": "suspect", "target_id": "b", "incarnation": -1, "sender": "node-a"},
        {"kind": "suspect", "target_id": "", "incarnation": 1, "sender": "node-a"},
        {"kind": "suspect", "target_id": "b", "incarnation": 2**64, "sender": "node-a"},
        {"kind": "heartbeat", "member": {"id": "node-a"}, "digest": "", "clock": 0},
        {"kind": "heartbeat", "member": msgspec.to_builtins(RECORD), "digest": "x" * 129, "clock": 0},
        {"kind": "left", "member": None},
    ],
)
def test_wrong_types_and_ranges_are_malformed(body: dict[str, object]) -> None:
    assert refused(envelope_with(body)) == "malformed"


def test_a_body_speaking_for_someone_else_is_refused() -> None:
    body = msgspec.to_builtins(MESSAGES[0])
    assert refused(envelope_with(body, sender="node-z")) == "sender_mismatch"


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    record = {**msgspec.to_builtins(RECORD), "zone": "eu-1"}
    body = {"kind": "left", "member": record, "reason": "upgrade"}
    assert decode(envelope_with(body), CLUSTER, None) == Left(RECORD)


def test_bad_message_belongs_to_the_error_tree() -> None:
    error = BadMessage("unsigned")
    assert error.why == "unsigned"
    assert error.reason == "BAD_MESSAGE"
    assert error.fault == "client"


@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_raise_anything_but_bad_message(data: bytes) -> None:
    for secret in (None, SECRET):
        with contextlib.suppress(BadMessage):
            decode(data, CLUSTER, secret)


@given(st.binary(max_size=64), st.integers(min_value=0, max_value=300))
def test_corrupting_a_signed_message_is_always_caught(junk: bytes, at: int) -> None:
    data = encode(MESSAGES[0], CLUSTER, SECRET)
    at = min(at, len(data))
    corrupted = data[:at] + junk + data[at:]
    if corrupted == data:
        return
    try:
        msg = decode(corrupted, CLUSTER, SECRET)
    except BadMessage:
        return
    # Inserting bytes where JSON ignores them (nowhere, in our compact encoding) is the only way.
    assert msg == MESSAGES[0]


def test_member_record_is_ordered_by_restart() -> None:
    first = new_record("n", "g", "h", now_ms=1000)
    later = new_record("n", "g", "h", now_ms=2000)
    assert later.incarnation > first.incarnation
    assert isinstance(first, MemberRecord)
