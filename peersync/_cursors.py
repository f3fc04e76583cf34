"""Opaque cursors for paged listings, and the position tokens that resume a watch."""

from __future__ import annotations

import base64
import re

from store import InvalidArgument

_WATCH_ITEM = re.compile(r"([A-Za-z0-9_-]{1,64}):(\d{1,19})")


def encode_cursor(kind: str, value: str) -> str:
    """A token for "continue after ``value``" in a listing of ``kind`` (keys, versions, ...)."""
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode("ascii").rstrip("=")


def decode_cursor(kind: str, token: str | None) -> str | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("utf-8")
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument("cursor is not one this server issued", field="cursor") from exc
    found_kind, sep, value = raw.partition(":")
    if not sep or found_kind != kind:
        raise InvalidArgument("cursor is not one this server issued for this listing", field="cursor")
    return value


def encode_positions(positions: dict[str, int]) -> str:
    """A watch position as ``ns:revision,ns:revision`` — used as the SSE event id."""
    return ",".join(f"{ns}:{rev}" for ns, rev in sorted(positions.items()))


def decode_positions(token: str, field: str = "Last-Event-ID") -> dict[str, int]:
    positions: dict[str, int] = {}
    for item in token.split(","):
        match = _WATCH_ITEM.fullmatch(item.strip())
        if match is None:
            raise InvalidArgument(
                f"{field} {token[:80]!r} is not a watch position this server issued", field=field
            )
        positions[match.group(1)] = int(match.group(2))
    return positions
