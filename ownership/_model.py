"""The one record an OwnershipStore keeps."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Claim:
    """``node_id`` is the persistent owner of ``namespace``.

    ``generation`` is the claiming node's Lamport clock at the time of the claim (the cluster layer
    supplies it). It strictly increases for as long as the row exists and is the version of the
    claim in the gossiped override table. ``updated_at`` is when the row was last written, in unix
    milliseconds.
    """

    namespace: str
    node_id: str
    generation: int
    updated_at: int
