"""Codecs: what a stored value's bytes mean. The store keeps bytes; this layer checks them."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import yaml

from store import InvalidArgument

CLIENT_PREFIX = "client:"


@dataclass(frozen=True, slots=True)
class Codec:
    name: str
    media_type: str
    description: str
    # Parses the bytes into a structure for diffing; raises ValueError when they are not valid.
    parse: Callable[[bytes], Any] | None
    text: bool
    # Raises ValueError when the bytes are not valid, more cheaply than parse; None: parse checks.
    check: Callable[[bytes], None] | None = None


def _parse_json(data: bytes) -> Any:
    return json.loads(data.decode("utf-8"))


def _check_json(data: bytes) -> None:
    """Raise ValueError unless ``data`` is a JSON text (RFC 8259). msgspec's parser (in C, several
    times faster) decides most values; what it refuses, the standard library's parser decides,
    since msgspec also refuses numbers out of a double's range, which are valid JSON. ``NaN`` and
    ``Infinity`` are refused: they are not JSON, and a GET would return them inside its JSON body."""
    try:
        msgspec.json.decode(data)
    except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
        json.loads(data.decode("utf-8"), parse_constant=_not_json)


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _parse_yaml(data: bytes) -> Any:
    try:
        return yaml.safe_load(data.decode("utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from exc


def _parse_text(data: bytes) -> str:
    return data.decode("utf-8")


CODECS: dict[str, Codec] = {
    c.name: c
    for c in (
        Codec(
            "json",
            "application/json",
            "A JSON document; checked on write, diffed as JSON Patch.",
            _parse_json,
            True,
            _check_json,
        ),
        Codec(
            "yaml",
            "application/yaml",
            "A YAML document; checked on write, diffed as JSON Patch.",
            _parse_yaml,
            True,
        ),
        Codec(
            "text",
            "text/plain; charset=utf-8",
            "UTF-8 text; checked on write, diffed line by line.",
            _parse_text,
            True,
        ),
        Codec("raw", "application/octet-stream", "Opaque bytes; stored and returned exactly.", None, False),
    )
}
_CLIENT = Codec(
    CLIENT_PREFIX + "*",
    "application/octet-stream",
    "Any name starting with 'client:' is the client's own encoding: stored as opaque bytes.",
    None,
    False,
)


def codec_for(name: str) -> Codec:
    """The codec called ``name``; raises INVALID_ARGUMENT for unknown names."""
    known = CODECS.get(name)
    if known is not None:
        return known
    if name.startswith(CLIENT_PREFIX) and 0 < len(name) - len(CLIENT_PREFIX) <= 64 and name.isprintable():
        return _CLIENT
    raise InvalidArgument(
        f"unknown codec {name[:80]!r}: use one of {', '.join(CODECS)} "
        f"or a name starting with {CLIENT_PREFIX!r}",
        field="codec",
    )


def check_value(codec_name: str, value: bytes) -> None:
    """Refuse bytes that the named codec cannot parse, so a stored json value always is JSON."""
    codec = codec_for(codec_name)
    check = codec.check or codec.parse
    if check is None:
        return
    try:
        check(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"value is not valid {codec.name}: {exc}", field="value") from exc
    except RecursionError as exc:
        raise InvalidArgument(
            f"value is nested too deeply to be checked as {codec.name}", field="value"
        ) from exc


def all_codecs() -> list[Codec]:
    return [*CODECS.values(), _CLIENT]
