"""The tags that end terms: members that know the same ids never share one."""

from __future__ import annotations

import functools

from hypothesis import given
from hypothesis import strategies as st

from peersync._replication import TAG_BITS, own_tag, term_tag
from tests.support import ids_by_term_tag


@functools.cache
def colliding_pool() -> list[str]:
    """Ids in groups of three that share a tag, and ids whose own tag is the next value after a
    group's (where a displaced member would otherwise go)."""
    by_tag = ids_by_term_tag()
    groups = [ids[:3] for ids in by_tag.values() if len(ids) >= 3][:4]
    pool = [member for group in groups for member in group]
    for group in groups:
        after = by_tag.get(term_tag(group[0]) + 1)
        if after:
            pool.append(after[0])
    return pool


def test_the_pool_holds_collisions_and_neighbours() -> None:
    tags = [term_tag(member) for member in colliding_pool()]
    assert len(set(tags)) < len(tags) - 4
    assert any(tag + 1 in tags for tag in tags)


@given(
    st.deferred(lambda: st.sets(st.sampled_from(colliding_pool()), min_size=1)),
    st.sets(st.text(min_size=1, max_size=8), max_size=5),
)
def test_members_that_know_the_same_ids_have_distinct_tags(colliding: set[str], others: set[str]) -> None:
    known = colliding | others
    tags = {member: own_tag(member, known) for member in known}
    assert len(set(tags.values())) == len(known), tags
    for member, tag in tags.items():
        assert 0 <= tag < 1 << TAG_BITS
        smaller_sharer = any(m < member and term_tag(m) == term_tag(member) for m in known)
        # A member keeps its own tag unless a smaller id has it, and nobody takes another's own tag.
        assert (tag == term_tag(member)) is not smaller_sharer
        if smaller_sharer:
            assert tag not in {term_tag(m) for m in known}


def test_a_node_that_knows_no_sharer_keeps_its_own_tag() -> None:
    assert own_tag("a", []) == term_tag("a")
    assert own_tag("a", ["a", "b", "c"]) == term_tag("a")
