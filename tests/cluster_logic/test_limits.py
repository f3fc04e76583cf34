"""Key checks: the one-match path for plain keys decides exactly as the general checks do."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from peersync._limits import Limits
from store import InvalidArgument

LIMITS = Limits(max_key_bytes=24)
# Mostly printable ASCII and slashes (the plain path), with some control characters and non-ASCII
# text (the general path), up to past the byte limit.
KEYS = st.lists(
    st.sampled_from(["a", "~ .", "/", "/", "\x00", "\x7f", "\x9f", "é", "☃", "versions", "diff", "x" * 9]),
    max_size=8,
).map("".join)


def general(key: str) -> str | None:
    """The reason the general checks alone give for ``key``; None when they accept it."""
    try:
        LIMITS._key_text(key, "key", allow_empty=False)
        segments = key.split("/")
        if "" in segments:
            return "empty segment"
        if len(segments) > 1 and segments[-1] in ("versions", "diff"):
            return "reserved"
    except InvalidArgument as exc:
        return exc.detail
    return None


@settings(max_examples=1000)
@given(KEYS)
@example("a/versions")
@example("versions")
@example("a/diff/b")
@example("x" * 24)
@example("x" * 25)
@example("é" * 12)
@example("é" * 13)
def test_plain_keys_are_decided_as_the_general_checks_decide(key: str) -> None:
    try:
        LIMITS.key(key)
        accepted = True
    except InvalidArgument:
        accepted = False
    assert accepted == (general(key) is None)
