"""What the override table promises: convergence in any delivery order, and who wins a namespace."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peersync._overrides import (
    Kind,
    LamportClock,
    Override,
    OverrideTable,
    claim,
    pin,
    unclaim,
    unpin,
)

# Wall-clock limits would make these flaky on a loaded machine; pytest's timeout catches hangs.
PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
NAMESPACE_NAMES = ["a", "b", "c"]
NODE_IDS = ["n1", "n2", "n3"]
NAMESPACES = st.sampled_from(NAMESPACE_NAMES)
NODES = st.sampled_from(NODE_IDS)
# Few namespaces, nodes and clocks, so that slots collide, versions tie and duplicates are common.
ENTRIES = st.builds(
    Override,
    namespace=NAMESPACES,
    kind=st.sampled_from(Kind),
    node=st.none() | NODES,
    clock=st.integers(0, 5),
    origin=NODES,
)


def table_of(entries: Iterable[Override]) -> OverrideTable:
    table = OverrideTable()
    for entry in entries:
        table.merge(entry)
    return table


def expected_effective(entries: list[Override], namespace: str) -> Override | None:
    """The rule, for entries whose versions are all distinct: per slot the newest entry stands;
    of the slots whose newest entry is live, the newest applies."""
    newest = []
    for kind in Kind:
        slot = [e for e in entries if e.namespace == namespace and e.kind is kind]
        if slot:
            newest.append(max(slot, key=lambda e: e.version))
    return max((e for e in newest if not e.removed), key=lambda e: e.version, default=None)


@PROPERTY
@given(entries=st.lists(ENTRIES, min_size=1, max_size=30), data=st.data())
def test_any_delivery_order_with_duplicates_converges(entries: list[Override], data: st.DataObject) -> None:
    duplicates = data.draw(st.lists(st.sampled_from(entries), max_size=10))
    delivered = data.draw(st.permutations(entries + duplicates))
    reference, table = table_of(entries), table_of(delivered)
    assert table.entries() == reference.entries()
    assert table.digest() == reference.digest()
    assert [table.effective(ns) for ns in NAMESPACE_NAMES] == [
        reference.effective(ns) for ns in NAMESPACE_NAMES
    ]
    # Idempotent: whatever was delivered once changes nothing the second time.
    assert not any(table.merge(entry) for entry in delivered)


@PROPERTY
@given(entries=st.lists(ENTRIES, max_size=30), data=st.data())
def test_grouping_does_not_matter(entries: list[Override], data: st.DataObject) -> None:
    # Nodes that each merged a part, then exchanged whole tables (anti-entropy), end up equal.
    cuts = sorted(data.draw(st.lists(st.integers(0, len(entries)), max_size=4)))
    parts = [entries[i:j] for i, j in zip([0, *cuts], [*cuts, len(entries)], strict=True)]
    tables = [table_of(part) for part in parts]
    combined = table_of(entry for t in data.draw(st.permutations(tables)) for entry in t.entries())
    assert combined.entries() == table_of(entries).entries()
    assert combined.digest() == table_of(entries).digest()


@PROPERTY
@given(left=st.lists(ENTRIES, max_size=8), right=st.lists(ENTRIES, max_size=8))
def test_digest_tells_tables_apart(left: list[Override], right: list[Override]) -> None:
    a, b = table_of(left), table_of(right)
    assert (a.digest() == b.digest()) == (a.entries() == b.entries())


def test_every_field_feeds_the_digest() -> None:
    base = Override("ns", Kind.CLAIM, "n1", 3, "n1")
    variants = [
        Override("ns2", Kind.CLAIM, "n1", 3, "n1"),
        Override("ns", Kind.PIN, "n1", 3, "n1"),
        Override("ns", Kind.CLAIM, "n2", 3, "n1"),
        Override("ns", Kind.CLAIM, None, 3, "n1"),
        Override("ns", Kind.CLAIM, "n1", 4, "n1"),
        Override("ns", Kind.CLAIM, "n1", 3, "n2"),
    ]
    digests = {table_of([entry]).digest() for entry in [base, *variants]}
    assert len(digests) == 1 + len(variants)


@PROPERTY
@given(entries=st.lists(ENTRIES, max_size=30, unique_by=lambda e: e.version))
def test_effective_is_the_newest_live_slot(entries: list[Override]) -> None:
    table = table_of(entries)
    for ns in NAMESPACE_NAMES:
        expected = expected_effective(entries, ns)
        assert table.effective(ns) == expected
        assert table.owner_of(ns) == (None if expected is None else (expected.node, expected.kind))
    assert table.namespaces() == [ns for ns in NAMESPACE_NAMES if expected_effective(entries, ns)]


def test_a_newer_tombstone_removes_and_an_older_one_does_not() -> None:
    table = OverrideTable()
    assert table.merge(Override("ns", Kind.PIN, "n1", 5, "n1"))
    assert not table.merge(Override("ns", Kind.PIN, None, 4, "n2"))
    assert table.owner_of("ns") == ("n1", Kind.PIN)
    assert table.merge(Override("ns", Kind.PIN, None, 5, "n2"))  # same clock, higher origin: newer
    assert table.owner_of("ns") is None
    assert table.slot("ns", Kind.PIN) == Override("ns", Kind.PIN, None, 5, "n2")
    # A live entry older than the tombstone cannot bring the pin back.
    assert not table.merge(Override("ns", Kind.PIN, "n3", 5, "n1"))
    assert table.owner_of("ns") is None
    assert table.namespaces() == []


@PROPERTY
@given(
    claim_clock=st.integers(0, 6),
    pin_clock=st.integers(0, 6),
    claimer=NODES,
    pinner=NODES,
    claim_first=st.booleans(),
)
def test_a_claim_wins_over_a_pin_only_if_newer(
    claim_clock: int, pin_clock: int, claimer: str, pinner: str, claim_first: bool
) -> None:
    c = Override("ns", Kind.CLAIM, "claimed-owner", claim_clock, claimer)
    p = Override("ns", Kind.PIN, "pinned-owner", pin_clock, pinner)
    table = table_of([c, p] if claim_first else [p, c])
    winner = c if c.version > p.version else p  # an exact tie goes to the pin
    assert table.owner_of("ns") == (winner.node, winner.kind)
    # Unpinning (from a node whose clock knows nothing yet) restores the claim, then unclaiming
    # hands the namespace back to the ring.
    unpin(table, LamportClock(), "n9", "ns")
    assert table.owner_of("ns") == ("claimed-owner", Kind.CLAIM)
    unclaim(table, LamportClock(), "n9", "ns")
    assert table.owner_of("ns") is None


def test_claim_and_pin_across_two_nodes() -> None:
    tables = {"a": OverrideTable(), "b": OverrideTable()}
    clocks = {"a": LamportClock(), "b": LamportClock()}

    def gossip(entry: Override) -> None:
        for node_id, table in tables.items():
            clocks[node_id].observe(entry.clock)
            table.merge(entry)

    gossip(claim(tables["a"], clocks["a"], "a", "orders", "a"))
    stale_claim = claim(OverrideTable(), LamportClock(), "a", "orders", "stale")  # clock 1: old news
    gossip(pin(tables["b"], clocks["b"], "b", "orders", "b"))
    assert tables["a"].owner_of("orders") == ("b", Kind.PIN)

    gossip(stale_claim)  # a claim older than the pin does not win
    assert tables["a"].owner_of("orders") == ("b", Kind.PIN)

    gossip(claim(tables["a"], clocks["a"], "a", "orders", "a"))  # a newer claim does
    assert tables["b"].owner_of("orders") == ("a", Kind.CLAIM)

    gossip(pin(tables["b"], clocks["b"], "b", "orders", "b"))
    gossip(unpin(tables["a"], clocks["a"], "a", "orders"))  # unpin brings the claim back
    assert [t.owner_of("orders") for t in tables.values()] == [("a", Kind.CLAIM)] * 2
    assert tables["a"].digest() == tables["b"].digest()


OPS = st.tuples(
    st.sampled_from(["a", "b"]),  # the node where an operator acts
    st.sampled_from(["claim", "pin", "unclaim", "unpin"]),
    NAMESPACES,
    NODES,  # the target of a claim or pin
    st.booleans(),  # gossip the change to the other node at once
)


@PROPERTY
@given(ops=st.lists(OPS, max_size=25), data=st.data())
def test_concurrent_operators_converge(
    ops: list[tuple[str, str, str, str, bool]], data: st.DataObject
) -> None:
    tables = {"a": OverrideTable(), "b": OverrideTable()}
    clocks = {"a": LamportClock(), "b": LamportClock()}
    made: list[Override] = []
    for node_id, op, namespace, target, deliver in ops:
        table, clock = tables[node_id], clocks[node_id]
        if op == "claim":
            entry = claim(table, clock, node_id, namespace, target)
        elif op == "pin":
            entry = pin(table, clock, node_id, namespace, target)
        elif op == "unclaim":
            entry = unclaim(table, clock, node_id, namespace)
        else:
            entry = unpin(table, clock, node_id, namespace)
        made.append(entry)
        if deliver:
            other = "b" if node_id == "a" else "a"
            clocks[other].observe(entry.clock)
            tables[other].merge(entry)
    # Every origin ticks its own clock, so no two changes share a version.
    assert len({entry.version for entry in made}) == len(made)
    for node_id, table in tables.items():
        for entry in data.draw(st.permutations(made), label=f"late delivery to {node_id}"):
            table.merge(entry)
    assert tables["a"].digest() == tables["b"].digest() == table_of(made).digest()


@PROPERTY
@given(entries=st.lists(ENTRIES, max_size=30), later=st.lists(ENTRIES, max_size=10), bound=st.integers(0, 6))
def test_compact_drops_only_old_tombstones_and_changes_no_outcome(
    entries: list[Override], later: list[Override], bound: int
) -> None:
    kept, compacted = table_of(entries), table_of(entries)
    dropped = compacted.compact(bound)
    assert dropped == sum(1 for e in kept.entries() if e.removed and e.clock < bound)
    assert [e for e in kept.entries() if not (e.removed and e.clock < bound)] == compacted.entries()
    assert compacted.max_clock == kept.max_clock
    # Under its precondition (nothing older than the bound arrives any more), later changes lead
    # both tables to the same owners.
    for entry in (e for e in later if e.clock >= bound):
        kept.merge(entry)
        compacted.merge(entry)
    for ns in NAMESPACE_NAMES:
        assert compacted.effective(ns) == kept.effective(ns)


def test_version_counts_changes_and_digest_follows_them() -> None:
    table = OverrideTable()
    empty = table.digest()
    assert table.version == 0
    entry = Override("ns", Kind.CLAIM, "n1", 1, "n1")
    assert table.merge(entry)
    assert not table.merge(entry)
    assert table.version == 1
    assert table.digest() != empty
    assert table.max_clock == 1
    assert len(table) == 1
    unclaim(table, LamportClock(), "n1", "ns")
    assert table.version == 2
    assert table.compact(table.max_clock + 1) == 1
    assert table.version == 3
    assert table.digest() == empty


def test_helpers_tick_past_everything_the_table_has_seen() -> None:
    table = table_of([Override("ns", Kind.PIN, "n2", 41, "n2")])
    clock = LamportClock()
    entry = pin(table, clock, "n1", "other", "n1")
    assert (entry.clock, clock.now) == (42, 42)
    assert entry == Override("other", Kind.PIN, "n1", 42, "n1")


def test_lamport_clock() -> None:
    clock = LamportClock()
    assert clock.now == 0
    assert clock.tick() == 1
    clock.observe(10)
    clock.observe(3)
    assert clock.now == 10
    assert clock.tick() == 11
    with pytest.raises(ValueError, match="now must be >= 0"):
        LamportClock(-1)


def test_bad_entries_are_refused() -> None:
    with pytest.raises(ValueError, match="clock"):
        Override("ns", Kind.CLAIM, "n1", -1, "n1")
    with pytest.raises(ValueError, match="origin"):
        Override("ns", Kind.CLAIM, "n1", 1, "")
    with pytest.raises(ValueError, match="tombstone"):
        Override("ns", Kind.CLAIM, "", 1, "n1")
    with pytest.raises(TypeError, match="Kind"):
        Override("ns", "claim", "n1", 1, "n1")  # type: ignore[arg-type]
