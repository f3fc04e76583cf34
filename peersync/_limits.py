"""Limits on client input, and the checks that enforce them before anything is stored."""

from __future__ import annotations

import re
from dataclasses import dataclass

from store import InvalidArgument, ValueTooLarge

_NAMESPACE = re.compile(r"[A-Za-z0-9_-]{1,64}")
# C0 and C1 control characters and DEL.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Printable ASCII segments joined by single slashes: most keys, checked in one match (one byte
# per character, no control character, no empty segment) before the general checks below.
_PLAIN_KEY = re.compile(r"[\x20-\x2e\x30-\x7e]+(?:/[\x20-\x2e\x30-\x7e]+)*")
# The last segment of a multi-segment key may not be one of these: REST addresses a key's history
# and diff as /keys/{key}/versions and /keys/{key}/diff.
RESERVED_SUFFIXES = frozenset({"versions", "diff"})


@dataclass(frozen=True, kw_only=True)
class Limits:
    # Longest key in UTF-8 bytes. Keys are held in memory and in every log record.
    max_key_bytes: int = 512
    # Largest value in bytes. Each write keeps the value in the log and the history too.
    max_value_bytes: int = 1 << 20
    # Longest TTL in seconds.
    max_ttl: float = 365 * 24 * 3600.0
    # Most items one listing returns; larger pages hold the event loop longer.
    max_list_limit: int = 1000
    # Most namespaces, and most key prefixes, one watch may name.
    max_watch_filters: int = 100

    def __post_init__(self) -> None:
        for name in ("max_key_bytes", "max_value_bytes", "max_list_limit", "max_watch_filters"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_ttl <= 0:
            raise ValueError("max_ttl must be positive")

    def namespace(self, name: str, field: str = "namespace") -> str:
        if not _NAMESPACE.fullmatch(name):
            raise InvalidArgument(
                f"namespace {name[:80]!r} is invalid: use 1-64 characters from A-Z a-z 0-9 _ -", field=field
            )
        return name

    def key(self, key: str, field: str = "key") -> str:
        if (
            len(key) <= self.max_key_bytes
            and _PLAIN_KEY.fullmatch(key)
            and ("/" not in key or key.rpartition("/")[2] not in RESERVED_SUFFIXES)
        ):
            return key
        self._key_text(key, field, allow_empty=False)
        segments = key.split("/")
        if "" in segments:
            raise InvalidArgument(
                f"{field} {key[:80]!r} has an empty segment (leading, trailing or double '/')", field=field
            )
        if len(segments) > 1 and segments[-1] in RESERVED_SUFFIXES:
            raise InvalidArgument(
                f"{field} {key[:80]!r} ends in the reserved segment {segments[-1]!r}", field=field
            )
        return key

    def prefix(self, prefix: str, field: str = "prefix") -> str:
        """A key prefix: like a key, but may be empty and may end with '/'."""
        self._key_text(prefix, field, allow_empty=True)
        return prefix

    def _key_text(self, text: str, field: str, *, allow_empty: bool) -> None:
        if not text and not allow_empty:
            raise InvalidArgument(f"{field} must not be empty", field=field)
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise InvalidArgument(f"{field} is not valid Unicode text", field=field) from exc
        if size > self.max_key_bytes:
            raise InvalidArgument(f"{field} is {size} bytes; the limit is {self.max_key_bytes}", field=field)
        if _CONTROL.search(text):
            raise InvalidArgument(f"{field} contains a control character", field=field)

    def value(self, value: bytes) -> bytes:
        if len(value) > self.max_value_bytes:
            raise ValueTooLarge(
                f"value is {len(value)} bytes; the limit is {self.max_value_bytes}", field="value"
            )
        return value

    def ttl(self, ttl: float | None) -> float | None:
        if ttl is None:
            return None
        if not ttl > 0:  # also rejects NaN
            raise InvalidArgument("ttl must be a positive number of seconds", field="ttl")
        if ttl > self.max_ttl:
            raise InvalidArgument(f"ttl {ttl:g}s exceeds the limit of {self.max_ttl:g}s", field="ttl")
        return ttl

    def list_limit(self, limit: int | None, default: int = 100) -> int:
        if limit is None:
            return min(default, self.max_list_limit)
        if not 1 <= limit <= self.max_list_limit:
            raise InvalidArgument(f"limit must be between 1 and {self.max_list_limit}", field="limit")
        return limit

    def version(self, version: int | None, field: str) -> int | None:
        if version is not None and version < 0:
            raise InvalidArgument(f"{field} must not be negative", field=field)
        return version

    def watch_filters(self, namespaces: list[str], prefixes: list[str]) -> None:
        if not namespaces:
            raise InvalidArgument("name at least one namespace to watch", field="namespaces")
        for name, items in (("namespaces", namespaces), ("prefixes", prefixes)):
            if len(items) > self.max_watch_filters:
                raise InvalidArgument(
                    f"{len(items)} {name} given; a watch may name at most {self.max_watch_filters}",
                    field=name,
                )
        for ns in namespaces:
            self.namespace(ns, "namespaces")
        for prefix in prefixes:
            self.prefix(prefix, "prefixes")
