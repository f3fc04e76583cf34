"""RFC 9457 problem details: every error the HTTP API returns, with one status table."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from store import PeersyncError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

# The one mapping from a stable reason to an HTTP status.
HTTP_STATUS: dict[str, int] = {
    "INVALID_ARGUMENT": 400,
    "NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "KEY_EXISTS": 409,
    "CLAIM_CONFLICT": 409,
    "COMPACTED": 410,
    "VERSION_MISMATCH": 412,
    "VALUE_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "NOT_OWNER": 503,
    "OWNER_UNAVAILABLE": 503,
    "FENCED": 503,
    "LOG_GAP": 503,
    "LOG_DIVERGED": 503,
}
_TITLES = {
    "INVALID_ARGUMENT": "Invalid argument",
    "NOT_FOUND": "Not found",
    "METHOD_NOT_ALLOWED": "Method not allowed",
    "KEY_EXISTS": "Key exists",
    "COMPACTED": "History compacted",
    "VERSION_MISMATCH": "Version mismatch",
    "VALUE_TOO_LARGE": "Value too large",
    "UNSUPPORTED_MEDIA_TYPE": "Unsupported media type",
    "INTERNAL": "Internal error",
    "UNAVAILABLE": "Unavailable",
    "NOT_OWNER": "Not the owner",
    "OWNER_UNAVAILABLE": "Owner unavailable",
    "CLAIM_CONFLICT": "Claimed by another node",
    "FENCED": "Ownership moved",
    "LOG_GAP": "Replica behind",
    "LOG_DIVERGED": "Replica diverged",
}
# Framework errors (routing, body size) mapped onto the same reasons.
_REASON_FOR_STATUS = {
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "VALUE_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


def problem_parts(
    reason: str, detail: str, *, field: str | None = None, extra: dict[str, Any] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    """Status, body and extra headers of a problem response."""
    status = HTTP_STATUS.get(reason, 500)
    body: dict[str, Any] = {
        "type": f"urn:peersync:problem:{reason}",
        "title": _TITLES.get(reason, reason),
        "status": status,
        "reason": reason,
        "detail": detail,
    }
    if field is not None:
        body["field"] = field
    if extra:
        body.update(extra)
    headers = {"Retry-After": "1"} if status == 503 else {}
    return status, msgspec.json.encode(body), headers


def error_parts(exc: PeersyncError) -> tuple[int, bytes, dict[str, str]]:
    """The problem response for one of our errors, with what the client needs to act on it."""
    extra: dict[str, Any] = {"retriable": exc.retriable}
    current = getattr(exc, "current", None)
    if current is not None:
        extra["current_version"] = current
    floor = getattr(exc, "floor", None)
    if floor is not None:
        extra["namespace"] = getattr(exc, "namespace", None)
        extra["floor"] = floor
    for name in ("owner", "holder"):
        value = getattr(exc, name, None)
        if value is not None:
            extra[name] = value
    return problem_parts(exc.reason, exc.detail, field=exc.field, extra=extra)


def _response(parts: tuple[int, bytes, dict[str, str]]) -> Response[bytes]:
    status, body, headers = parts
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers or None)


def problem(
    reason: str, detail: str, *, field: str | None = None, extra: dict[str, Any] | None = None
) -> Response[bytes]:
    return _response(problem_parts(reason, detail, field=field, extra=extra))


def on_peersync_error(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    assert isinstance(exc, PeersyncError)
    return _response(error_parts(exc))


def on_validation_error(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    assert isinstance(exc, ValidationException)
    fields: list[str] = []
    messages: list[str] = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            if item.get("key"):
                fields.append(str(item["key"]))
            messages.append(f"{item.get('key', '?')}: {item.get('message', 'invalid')}")
    detail = "; ".join(messages) or str(exc.detail)
    return problem("INVALID_ARGUMENT", detail, field=fields[0] if fields else None)


def on_http_error(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    reason = _REASON_FOR_STATUS.get(status)
    if reason is None:
        reason = "INVALID_ARGUMENT" if 400 <= status < 500 else "INTERNAL"
    return problem(reason, str(exc.detail))


def on_unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.error("unhandled error serving %s %s", request.method, request.url.path, exc_info=exc)
    return problem("INTERNAL", "the server failed to handle this request; see its log")


EXCEPTION_HANDLERS = {
    PeersyncError: on_peersync_error,
    ValidationException: on_validation_error,
    HTTPException: on_http_error,
    Exception: on_unexpected_error,
}

__all__ = ["EXCEPTION_HANDLERS", "HTTP_STATUS", "PROBLEM_JSON", "error_parts", "problem", "problem_parts"]
