"""The gossip wire format: member records, the messages members exchange, and their envelope.

A message on the wire is one JSON object, the envelope::

    {"v": 1, "cluster": "prod", "sender": "node-a", "sent_at_ms": 1700000000000,
     "body": {"kind": "heartbeat", ...}, "sig": "<64 hex digits>" | null}

``sig`` is always the last member. It is the HMAC-SHA256, keyed with the cluster secret, of the
envelope's bytes exactly as sent up to ``sig`` (with the closing brace in its place), so a receiver
checks the bytes the sender signed rather than a re-encoding that could differ between versions.

Acceptance rules, in the order ``decode`` applies them; every refusal is one ``BadMessage`` whose
``why`` the receiver counts:

- larger than ``MAX_MESSAGE_BYTES``: ``too_large`` (checked before any parsing);
- not our JSON object, wrong field types or values out of range: ``malformed``;
- another envelope version: ``version``;
- another cluster's name: ``foreign_cluster``;
- a secret is set and the message has no signature: ``unsigned``; a wrong one: ``bad_signature``;
- the body speaks for someone other than the envelope's sender: ``sender_mismatch``.

Without a secret, signed messages are accepted (their signature cannot be checked, and refusing them
would split a cluster half-way through rolling a secret out). With a secret, only messages signed with
it are accepted.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from typing import Annotated, Final, Literal

import msgspec

from store import ClientError

# The envelope's version. A receiver drops other versions: a new version is a new wire format.
VERSION: Final = 1
# Anything larger is dropped unread. A heartbeat is a few hundred bytes.
MAX_MESSAGE_BYTES: Final = 64 * 1024

MemberId = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Addr = Annotated[str, msgspec.Meta(max_length=512)]
# Incarnations and timestamps fit a signed 64-bit integer everywhere (Redis scores, protobuf int64).
Incarnation = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Millis = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Digest = Annotated[str, msgspec.Meta(max_length=128)]

DropReason = Literal[
    "too_large", "malformed", "version", "foreign_cluster", "unsigned", "bad_signature", "sender_mismatch"
]


class BadMessage(ClientError):
    """A received message was refused; ``why`` says which rule it broke (see the module docstring).

    The fault is the sender's. The gossip loop drops such messages and counts them by ``why``.
    """

    reason = "BAD_MESSAGE"

    def __init__(self, why: DropReason, detail: str = "") -> None:
        super().__init__(f"{why}: {detail}" if detail else why)
        self.why: DropReason = why


class MemberRecord(msgspec.Struct, frozen=True):
    """What a member says about itself. ``id`` is stable across restarts; ``incarnation`` grows
    with every start and every refutation of a suspicion, so the newest record always wins."""

    id: MemberId
    grpc_addr: Addr
    http_addr: Addr
    incarnation: Incarnation
    # Wall-clock milliseconds of this process' start: tells one life of a member from the next.
    started_at: Millis


def new_record(member_id: str, grpc_addr: str, http_addr: str, *, now_ms: int | None = None) -> MemberRecord:
    """The record of a member starting now. Its incarnation is its start time in milliseconds, so
    a restarted member is newer than everything its previous life said (given a sane wall clock)."""
    started = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return MemberRecord(member_id, grpc_addr, http_addr, incarnation=started, started_at=started)


# Bodies are a tagged union on "kind". The tags are a wire contract: append new kinds, never rename
# or reuse one. A receiver that does not know a kind drops the message as malformed.
class Heartbeat(msgspec.Struct, frozen=True, tag="heartbeat", tag_field="kind"):
    """A member is alive: its record, a digest of its override table, and its Lamport clock."""

    member: MemberRecord
    digest: Digest
    clock: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class Suspect(msgspec.Struct, frozen=True, tag="suspect", tag_field="kind"):
    """``sender`` has not heard ``target_id`` at ``incarnation`` for too long."""

    target_id: MemberId
    incarnation: Incarnation
    sender: MemberId


class Left(msgspec.Struct, frozen=True, tag="left", tag_field="kind"):
    """A member is shutting down cleanly; it is gone at once, without suspicion."""

    member: MemberRecord


Message = Heartbeat | Suspect | Left


class _Header(msgspec.Struct):
    """What is read before anything else: the rest of the shape depends on the version."""

    v: int
    cluster: str


class _Envelope(msgspec.Struct, frozen=True):
    # Field order is the encoding order; "sig" is appended after these by encode().
    v: int
    cluster: str
    sender: MemberId
    sent_at_ms: Millis
    body: Message


_NULL_SIG: Final = b',"sig":null}'
_SIG: Final = re.compile(rb',"sig":"([0-9a-f]{64})"\}\Z')
_ENCODER: Final = msgspec.json.Encoder()
_HEADER: Final = msgspec.json.Decoder(_Header)
_ENVELOPE: Final = msgspec.json.Decoder(_Envelope)


def _sender_of(msg: Message) -> str:
    if isinstance(msg, Suspect):
        return msg.sender
    return msg.member.id


def _sign(secret: bytes, unsigned: bytes) -> str:
    return hmac.new(secret, unsigned, hashlib.sha256).hexdigest()


def encode(msg: Message, cluster: str, secret: bytes | None, *, now_ms: int | None = None) -> bytes:
    """The envelope of ``msg`` as bytes, signed when ``secret`` is given."""
    sent = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    unsigned = _ENCODER.encode(_Envelope(VERSION, cluster, _sender_of(msg), sent, msg))
    if secret is None:
        return unsigned[:-1] + _NULL_SIG
    return unsigned[:-1] + b',"sig":"' + _sign(secret, unsigned).encode() + b'"}'


def _split(data: bytes) -> tuple[bytes, str | None]:
    """The signed part of ``data`` (the envelope without "sig") and the signature, if any."""
    if data.endswith(_NULL_SIG):
        return data[: -len(_NULL_SIG)] + b"}", None
    match = _SIG.search(data, max(0, len(data) - 80))
    if match is None:
        raise BadMessage("malformed", "not an envelope ending with its signature")
    return data[: match.start()] + b"}", match.group(1).decode()


def decode(data: bytes, cluster: str, secret: bytes | None) -> Message:
    """The message in ``data`` if it passes every rule of the module docstring; else ``BadMessage``.

    Never raises anything else, whatever the bytes.
    """
    if len(data) > MAX_MESSAGE_BYTES:
        raise BadMessage("too_large", f"{len(data)} bytes")
    unsigned, sig = _split(bytes(data))
    # msgspec reports invalid UTF-8 inside a string as UnicodeDecodeError, not DecodeError, and
    # nesting deeper than the interpreter's recursion limit as RecursionError.
    try:
        header = _HEADER.decode(unsigned)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BadMessage("malformed", str(exc)) from exc
    if header.v != VERSION:
        raise BadMessage("version", f"version {header.v}")
    if header.cluster != cluster:
        raise BadMessage("foreign_cluster", f"cluster {header.cluster[:64]!r}")
    if secret is not None:
        if sig is None:
            raise BadMessage("unsigned")
        if not hmac.compare_digest(_sign(secret, unsigned), sig):
            raise BadMessage("bad_signature")
    try:
        envelope = _ENVELOPE.decode(unsigned)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BadMessage("malformed", str(exc)) from exc
    if _sender_of(envelope.body) != envelope.sender:
        raise BadMessage("sender_mismatch", f"{envelope.sender!r} speaking for {_sender_of(envelope.body)!r}")
    return envelope.body
