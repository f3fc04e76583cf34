"""The Python open-loop load generator, run as its own process when wrk is absent:
``python -m tests.bench._openloop URL SPEC.json --duration S --rate R --connections C``.

Prints one ``OPENLOOP_RESULT {json}`` line. A minimal HTTP/1.1 client on asyncio streams (uvloop when
installed) rather than httpx: on the reference machine httpx managed about 400 req/s over 32
connections, so it would have measured itself instead of the server.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
import urllib.parse
from typing import Any

RESULT_MARK = "OPENLOOP_RESULT "
# Due requests beyond this many waiting per connection are dropped and counted, so an overloaded
# server cannot make the generator's memory grow without bound.
_BACKLOG_PER_CONNECTION = 8


def _percentile(ordered: list[float], pct: float) -> float:
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[index]


class Connection:
    """One keep-alive HTTP/1.1 connection: a request out, its response read whole."""

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def send(self, request: bytes) -> int:
        """Send ``request`` and return the response status; reconnects when the server closed."""
        if self._writer is None or self._reader is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        reader = self._reader
        self._writer.write(request)
        status_line = await reader.readline()
        if not status_line:
            self.close()
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split(b" ", 2)[1])
        length, chunked, close = 0, False, False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        if chunked:
            while size := int((await reader.readline()).split(b";")[0], 16):
                await reader.readexactly(size + 2)
            await reader.readline()
        else:
            await reader.readexactly(length)
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


async def _drive(
    url: str, spec: dict[str, Any], duration: float, rate: float, connections: int
) -> dict[str, Any]:
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    body = base64.b64decode(spec["body_b64"]) if spec["body_b64"] is not None else b""
    head = f"Host: {host}:{port}\r\n"
    if spec["content_type"]:
        head += f"Content-Type: {spec['content_type']}\r\nContent-Length: {len(body)}\r\n"
    requests = [f"{spec['method']} {path} HTTP/1.1\r\n{head}\r\n".encode() + body for path in spec["paths"]]
    latencies: list[float] = []
    errors = dropped = 0
    max_backlog = connections * _BACKLOG_PER_CONNECTION
    # One worker per connection takes due requests in order; the schedule never waits for them.
    due_times: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()

    async def worker() -> None:
        nonlocal errors
        conn = Connection(host, port)
        try:
            while (item := await due_times.get()) is not None:
                i, due = item
                try:
                    if await conn.send(requests[i % len(requests)]) >= 400:
                        errors += 1
                except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                    errors += 1
                    conn.close()
                latencies.append(time.perf_counter() - due)
        finally:
            conn.close()

    start = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(connections):
            group.create_task(worker())
        i = 0
        while (due := start + i / rate) < start + duration:
            delay = due - time.perf_counter()
            # Yield even when late, so the workers run while the schedule catches up.
            await asyncio.sleep(max(0.0, delay))
            if due_times.qsize() >= max_backlog:
                dropped += 1
            else:
                due_times.put_nowait((i, due))
            i += 1
        for _ in range(connections):
            due_times.put_nowait(None)
    elapsed = time.perf_counter() - start

    latencies.sort()
    return {
        "requests": len(latencies),
        "duration": elapsed,
        "errors": errors,
        "dropped": dropped,
        "max_backlog": max_backlog,
        "p50_ms": _percentile(latencies, 50) * 1000,
        "p99_ms": _percentile(latencies, 99) * 1000,
        "mean_ms": sum(latencies) / len(latencies) * 1000 if latencies else 0.0,
        "max_ms": latencies[-1] * 1000 if latencies else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("spec")
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--connections", type=int, required=True)
    args = parser.parse_args()
    with open(args.spec) as f:
        spec = json.load(f)
    drive = _drive(args.url, spec, args.duration, args.rate, args.connections)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(drive)
    else:
        result = uvloop.run(drive)
    print(RESULT_MARK + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
