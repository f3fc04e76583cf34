"""The rules of a claim, shared by every OwnershipStore so that they cannot drift apart.

``settle`` is the whole decision as a pure function of the stored claim. The in-memory store
applies it under its lock; the SQL store encodes the same rules in one conditional statement and
calls ``settle`` only to explain a statement that changed nothing.
"""

from __future__ import annotations

import time

from ._errors import ClaimConflict
from ._model import Claim

# Generations and timestamps are stored as signed 64-bit integers (BIGINT).
MAX_GENERATION = 2**63 - 1


def check_name(value: str, what: str) -> None:
    """Refuse what no database can store as a key: an empty string or one with a NUL character."""
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ValueError(f"{what} must be a non-empty string without NUL characters, not {value!r}")


def check_claim(namespace: str, node_id: str, generation: int, expected: int | None) -> None:
    check_name(namespace, "namespace")
    check_name(node_id, "node_id")
    if not 1 <= generation <= MAX_GENERATION:
        raise ValueError(f"generation must be between 1 and {MAX_GENERATION}, not {generation}")
    if expected is not None and not 0 <= expected <= MAX_GENERATION:
        raise ValueError(f"expected must be between 0 and {MAX_GENERATION}, not {expected}")


def settle(
    current: Claim | None,
    namespace: str,
    node_id: str,
    generation: int,
    *,
    expected: int | None,
    force: bool,
    now: int,
) -> Claim:
    """The claim to store when ``current`` is stored: ``current`` itself when the call is a re-claim
    that changes nothing, a new claim otherwise. Raises ClaimConflict when the call must fail."""
    held = 0 if current is None else current.generation
    # With an expected generation the caller has decided the holder question itself.
    if expected is not None and held != expected:
        raise ClaimConflict(
            f"namespace {namespace!r}: expected generation {expected}, found {held}", current=current
        )
    if expected is None and current is not None and current.node_id != node_id and not force:
        raise ClaimConflict(
            f"namespace {namespace!r} is claimed by {current.node_id!r} at generation {held}",
            current=current,
        )
    if generation <= held:
        # A node re-announcing its own claim with an older clock keeps the claim as it is.
        if expected is None and current is not None and current.node_id == node_id:
            return current
        # A stale claim never overwrites a newer one.
        raise ClaimConflict(
            f"namespace {namespace!r}: generation {generation} is not newer than {held}", current=current
        )
    return Claim(namespace, node_id, generation, now)


def now_ms() -> int:
    return time.time_ns() // 1_000_000
