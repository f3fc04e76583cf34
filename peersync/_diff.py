"""Differences between two versions of a value, in the form that suits its codec."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from store import Entry

from ._codecs import codec_for


@dataclass(frozen=True, slots=True)
class Diff:
    namespace: str
    key: str
    from_version: int
    to_version: int
    from_codec: str
    to_codec: str
    equal: bool
    # RFC 6902 operations turning the old document into the new one (json and yaml codecs).
    patch: list[dict[str, Any]] | None
    # A unified diff of the text (text and yaml codecs).
    unified: str | None


def diff_entries(old: Entry, new: Entry) -> Diff:
    equal = old.value == new.value and old.codec == new.codec
    patch: list[dict[str, Any]] | None = None
    unified: str | None = None
    if old.codec == new.codec:
        codec = codec_for(new.codec)
        if codec.name in ("json", "yaml") and codec.parse is not None:
            patch = json_patch(codec.parse(old.value), codec.parse(new.value))
        if codec.name in ("text", "yaml"):
            unified = "".join(
                difflib.unified_diff(
                    old.value.decode("utf-8").splitlines(keepends=True),
                    new.value.decode("utf-8").splitlines(keepends=True),
                    fromfile=f"{new.key}@{old.version}",
                    tofile=f"{new.key}@{new.version}",
                )
            )
    return Diff(new.namespace, new.key, old.version, new.version, old.codec, new.codec, equal, patch, unified)


def json_patch(old: Any, new: Any, path: str = "") -> list[dict[str, Any]]:
    """A JSON Patch (RFC 6902) from ``old`` to ``new``; minimal per object member and list index."""
    if isinstance(old, dict) and isinstance(new, dict):
        ops: list[dict[str, Any]] = []
        for name in old:
            if name not in new:
                ops.append({"op": "remove", "path": f"{path}/{_escape(name)}"})
        for name, value in new.items():
            child = f"{path}/{_escape(name)}"
            if name not in old:
                ops.append({"op": "add", "path": child, "value": value})
            else:
                ops.extend(json_patch(old[name], value, child))
        return ops
    if isinstance(old, list) and isinstance(new, list):
        ops = []
        for index in range(min(len(old), len(new))):
            ops.extend(json_patch(old[index], new[index], f"{path}/{index}"))
        # Remove from the end first so that earlier indices stay valid while the patch applies.
        ops.extend({"op": "remove", "path": f"{path}/{i}"} for i in range(len(old) - 1, len(new) - 1, -1))
        ops.extend({"op": "add", "path": f"{path}/-", "value": v} for v in new[len(old) :])
        return ops
    # type() too: JSON tells 1 from true and 1 from 1.0, Python's == does not.
    if type(old) is type(new) and old == new:
        return []
    return [{"op": "replace", "path": path, "value": new}]


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")
