"""The public surface of the ownership package changes only on purpose."""

from __future__ import annotations

import ownership


def test_ownership_surface() -> None:
    assert sorted(ownership.__all__) == [
        "Claim",
        "ClaimConflict",
        "MemoryOwnershipStore",
        "OwnershipError",
        "OwnershipStore",
        "OwnershipUnavailable",
        "SqlOwnershipStore",
    ]
    for name in ownership.__all__:
        assert hasattr(ownership, name), name
