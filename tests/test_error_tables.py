"""Every error reason maps to an HTTP and a gRPC status, so no reason falls through to a 500."""

from __future__ import annotations

from grpclib import Status

import store
from api import HTTP_STATUS
from api._grpc import STATUS_BY_REASON

# BAD_MESSAGE belongs to gossip: such messages are dropped and counted, never an answer to a client.
# INTERNAL is the base classes' placeholder, not a reason anything raises.
_NEVER_ANSWERED = {"BAD_MESSAGE", "INTERNAL"}


def _reasons() -> set[str]:
    return {cls.reason for cls in _classes()} - _NEVER_ANSWERED


def test_every_reason_has_an_http_status() -> None:
    for reason in _reasons():
        assert reason in HTTP_STATUS, reason
        status = HTTP_STATUS[reason]
        cls_faults = {c.fault for c in _classes() if c.reason == reason}
        assert status < 500 if cls_faults == {"client"} else status == 503, (reason, status)


def test_every_reason_has_a_grpc_status() -> None:
    for reason in _reasons():
        assert STATUS_BY_REASON.get(reason, Status.INTERNAL) is not Status.INTERNAL, reason


def _classes() -> list[type[store.PeersyncError]]:
    out: list[type[store.PeersyncError]] = []
    pending: list[type[store.PeersyncError]] = [store.PeersyncError]
    while pending:
        cls = pending.pop()
        out.append(cls)
        pending.extend(cls.__subclasses__())
    return out
