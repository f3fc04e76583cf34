"""What Ring promises: stable placement across processes, minimal movement, sane preference lists."""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peersync._ring import VNODES, Ring

REPO = Path(__file__).resolve().parents[2]

# Wall-clock limits would make these flaky on a loaded machine; pytest's timeout catches hangs.
# Fewer examples than Hypothesis' default: each builds rings, a few milliseconds apiece.
PROPERTY = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MEMBER_IDS = st.text(min_size=1, max_size=12)
MEMBER_SETS = st.sets(MEMBER_IDS, min_size=2, max_size=8)
NAMESPACES = st.lists(st.text(max_size=20), min_size=1, max_size=50, unique=True)
# Fixed names for the statistical checks, where a few hundred samples are needed.
SAMPLE = [f"ns-{i}" for i in range(1000)]


def reference_owner(members: list[str], namespace: str) -> str:
    """The placement rule the module docstring states, written out independently of uhashring."""

    def point(text: str) -> int:
        return int.from_bytes(hashlib.md5(text.encode()).digest(), "big")

    points = sorted((point(f"{m}-{i}"), m) for m in members for i in range(VNODES))
    keys = [p for p, _ in points]
    index = bisect.bisect_right(keys, point(namespace))
    return points[index % len(points)][1]


def test_empty_ring_owns_nothing() -> None:
    ring = Ring()
    assert ring.owner_of("orders") is None
    assert ring.preference_list("orders", 3) == []
    assert ring.members == ()
    assert len(ring) == 0


def test_known_placement() -> None:
    # Golden values: every node of a cluster must compute these, whatever its uhashring or Python
    # version. If this fails after an upgrade, nodes of mixed versions would disagree on owners.
    ring = Ring(["node-c", "node-a", "node-b"])
    assert ring.version == "8dce8e6805a21371"
    assert Ring().version == "12868de5d3a1ee88"
    assert ring.members == ("node-a", "node-b", "node-c")
    assert {ns: ring.preference_list(ns, 3) for ns in ("orders", "users", "billing", "sessions")} == {
        "orders": ["node-a", "node-c", "node-b"],
        "users": ["node-b", "node-a", "node-c"],
        "billing": ["node-c", "node-a", "node-b"],
        "sessions": ["node-c", "node-b", "node-a"],
    }


def test_bad_members_are_refused() -> None:
    with pytest.raises(TypeError):
        Ring("node-a")
    with pytest.raises(ValueError, match="non-empty"):
        Ring(["node-a", ""])
    with pytest.raises(ValueError, match="n must be >= 0"):
        Ring(["node-a"]).preference_list("orders", -1)


def test_preference_list_is_a_fresh_list() -> None:
    ring = Ring(["node-a", "node-b"])
    ring.preference_list("orders", 2).clear()
    assert len(ring.preference_list("orders", 2)) == 2


def test_equality_follows_members() -> None:
    assert Ring(["a", "b", "a"]) == Ring(["b", "a"])
    assert hash(Ring(["a", "b"])) == hash(Ring(["b", "a"]))
    assert Ring(["a", "b"]) != Ring(["a"])
    assert Ring(["a"]).version != Ring(["a", "b"]).version


@PROPERTY
@given(members=MEMBER_SETS, namespaces=NAMESPACES, data=st.data())
def test_order_of_members_does_not_matter(
    members: set[str], namespaces: list[str], data: st.DataObject
) -> None:
    listed = sorted(members)
    shuffled = data.draw(st.permutations(listed))
    a, b = Ring(listed), Ring(shuffled)
    assert a.version == b.version
    assert [a.preference_list(ns, 3) for ns in namespaces] == [b.preference_list(ns, 3) for ns in namespaces]


@settings(PROPERTY, max_examples=25)
@given(members=MEMBER_SETS, namespaces=NAMESPACES)
def test_placement_follows_the_documented_rule(members: set[str], namespaces: list[str]) -> None:
    ring = Ring(members)
    for ns in namespaces:
        assert ring.owner_of(ns) == reference_owner(sorted(members), ns)


@PROPERTY
@given(members=MEMBER_SETS, namespaces=NAMESPACES, n=st.integers(0, 10))
def test_preference_list_shape(members: set[str], namespaces: list[str], n: int) -> None:
    ring = Ring(members)
    for ns in namespaces:
        prefs = ring.preference_list(ns, n)
        assert len(prefs) == min(n, len(members))
        assert len(set(prefs)) == len(prefs)
        assert set(prefs) <= members
        if prefs:
            assert prefs[0] == ring.owner_of(ns)
        # A shorter list is a prefix of a longer one: replicas do not reshuffle when n grows.
        assert ring.preference_list(ns, len(members))[: len(prefs)] == prefs


@PROPERTY
@given(members=MEMBER_SETS, namespaces=NAMESPACES, data=st.data())
def test_removing_a_member_moves_only_its_namespaces(
    members: set[str], namespaces: list[str], data: st.DataObject
) -> None:
    gone = data.draw(st.sampled_from(sorted(members)))
    before, after = Ring(members), Ring(members - {gone})
    for ns in namespaces:
        owner = before.owner_of(ns)
        if owner == gone:
            assert after.owner_of(ns) != gone
        else:
            assert after.owner_of(ns) == owner
        # Replicas are stable too: the removed member simply drops out of the list.
        assert after.preference_list(ns, 2) == [m for m in before.preference_list(ns, 3) if m != gone][:2]


@settings(PROPERTY, max_examples=20)
@given(members=MEMBER_SETS, newcomer=MEMBER_IDS)
def test_adding_a_member_moves_about_one_nth_and_only_to_it(members: set[str], newcomer: str) -> None:
    members.discard(newcomer)
    before, after = Ring(members), Ring(members | {newcomer})
    moved = 0
    for ns in SAMPLE:
        owner = after.owner_of(ns)
        if owner != before.owner_of(ns):
            assert owner == newcomer
            moved += 1
    # The newcomer's share is 1/N on average, N counting it. Bounds at half and double are many
    # standard deviations wide at 160 points per member and 1000 samples, so this never flakes.
    expected = len(SAMPLE) / len(after)
    assert expected / 2 <= moved <= expected * 2


def test_shares_are_balanced() -> None:
    ring = Ring([f"node-{i}" for i in range(5)])
    shares: dict[str, int] = {}
    for ns in SAMPLE:
        owner = ring.owner_of(ns)
        assert owner is not None
        shares[owner] = shares.get(owner, 0) + 1
    assert sorted(shares) == list(ring.members)
    assert all(100 <= count <= 300 for count in shares.values()), shares


# The child loads _ring.py by path: importing the peersync package would also import the whole node
# (HTTP stack included) and make this the slowest test by far, for nothing the ring depends on.
_CHILD = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("_ring", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
Ring = module.Ring
job = json.load(sys.stdin)
ring = Ring(job["members"])
json.dump({"version": ring.version, "owners": [ring.preference_list(ns, 3) for ns in job["namespaces"]]},
          sys.stdout)
"""


def test_placement_does_not_depend_on_the_hash_seed() -> None:
    members = ["node-a", "node-b", "node-c", "node-d", "node-e"]
    namespaces = [f"tenant-{i}/config" for i in range(200)]
    ring = Ring(members)
    expected = {"version": ring.version, "owners": [ring.preference_list(ns, 3) for ns in namespaces]}
    job = json.dumps({"members": members, "namespaces": namespaces})
    children = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        children.append(
            subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(REPO / "peersync" / "_ring.py")],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=REPO,
                text=True,
            )
        )
    for child in children:
        out, err = child.communicate(job, timeout=30)
        assert child.returncode == 0, err
        assert json.loads(out) == expected
