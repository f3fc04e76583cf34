"""Sampling profiles of a peersync server under load (py-spy), and a text summary of where time goes.

py-spy runs beside the load generator, without pausing the server (``--nonblocking``), and writes
collapsed stacks (``--format raw``: one ``frame;frame;...;leaf COUNT`` line per distinct stack). Idle
samples (a thread waiting in epoll or on a lock) are left out, so the summary is of busy time.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

# Where a leaf frame's file puts its sample, first match wins. Paths are py-spy's shortened ones.
# C code has no frame of its own: msgspec's time lands on the handler line that called it, SQLite's
# on aiosqlite's worker line.
_BUCKETS: tuple[tuple[str, str], ...] = (
    # The node-to-node path of a forwarded request: peersync's link and stream code, grpclib's
    # HTTP/2 gRPC, h2's framing (with hyperframe) and hpack's header coding, and protobuf messages
    # (betterproto2 and the generated peersync/v1).
    ("peersync/_forwarding.py", "peersync forwarding (links, streams)"),
    ("api/_node_grpc.py", "peersync forwarding (links, streams)"),
    ("grpclib/", "grpclib (gRPC over HTTP/2)"),
    ("h2/", "h2 + hyperframe + hpack (HTTP/2 frames, headers)"),
    ("hpack/", "h2 + hyperframe + hpack (HTTP/2 frames, headers)"),
    ("hyperframe/", "h2 + hyperframe + hpack (HTTP/2 frames, headers)"),
    ("betterproto2", "betterproto2 (protobuf encode/decode)"),
    ("peersync/v1/", "betterproto2 (protobuf encode/decode)"),
    ("uvicorn/", "uvicorn + httptools (HTTP parsing, ASGI glue)"),
    ("httptools", "uvicorn + httptools (HTTP parsing, ASGI glue)"),
    ("litestar/", "Litestar (routing, kwargs, response)"),
    ("api/", "peersync api (handlers)"),
    ("peersync/", "peersync service"),
    ("store/", "peersync store"),
    ("sqlalchemy/", "SQLAlchemy"),
    ("aiosqlite/", "aiosqlite (thread hand-off)"),
    # uvloop's loop is native code, so its own time (epoll, socket syscalls, callbacks) shows as the
    # frame that entered it when native frames are not sampled.
    ("asyncio/runners.py", "event loop (uvloop, native: epoll, socket I/O, callbacks)"),
    ("uvloop", "event loop (uvloop, native: epoll, socket I/O, callbacks)"),
    ("asyncio/", "asyncio (futures, queues, tasks)"),
    ("threading.py", "threads (queue, locks)"),
    ("queue.py", "threads (queue, locks)"),
)
# Frames every sample of the main thread sits under: the command line and the loop's entry. They
# would head the inclusive ranking and say nothing.
_LAUNCHER = (
    "<frozen runpy>",
    "click/",
    "peersync/cli.py",
    "peersync/__main__.py",
    "uvloop/__init__.py",
    "asyncio/runners.py",
)
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


class Profiler:
    """``py-spy record`` of one process for one run; ``stop`` waits for its output file."""

    def __init__(self, binary: str, out_dir: Path, prefix: Sequence[str] = ()) -> None:
        self._binary = binary
        self._out_dir = out_dir
        self._prefix = list(prefix)

    def start(self, pid: int, name: str, duration: float) -> tuple[subprocess.Popen[str], Path]:
        self._out_dir.mkdir(parents=True, exist_ok=True)
        out = self._out_dir / f"{name}.txt"
        argv = [
            *self._prefix,
            self._binary,
            "record",
            f"--pid={pid}",
            f"--duration={max(1, round(duration))}",
            "--rate=200",
            # Not --native: it pauses the server for every sample (here it fell from thousands of
            # req/s to tens). C time (sqlite3, msgspec, uvloop) is charged to the calling line.
            "--nonblocking",
            "--threads",
            "--format=raw",
            f"--output={out}",
        ]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return proc, out

    @staticmethod
    def stop(proc: subprocess.Popen[str], timeout: float) -> None:
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"py-spy failed ({proc.returncode}): {output}")


def _stacks(path: Path) -> list[tuple[list[str], int]]:
    out = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            out.append((stack.split(";"), int(count)))
    return out


def _bucket(frame: str) -> str:
    found = _FRAME.match(frame)
    file = found.group("file") if found else frame
    for needle, bucket in _BUCKETS:
        if needle in file:
            return bucket
    return f"other ({file})"


def _without_line(frame: str) -> str:
    found = _FRAME.match(frame)
    return f"{found.group('func')} ({found.group('file')})" if found else frame


def summarize(path: Path, top: int = 15) -> str:
    """Busy samples by thread, by leaf bucket, the hottest leaf lines, and inclusive time by function."""
    stacks = _stacks(path)
    total = sum(count for _, count in stacks)
    if not total:
        return f"{path.name}: no busy samples"
    threads: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, count in stacks:
        thread = frames[0] if frames and frames[0].startswith("thread ") else "thread ?"
        body = frames[1:] if frames and frames[0].startswith("thread ") else frames
        threads[thread] += count
        if not body:
            continue
        buckets[_bucket(body[-1])] += count
        leaves[body[-1]] += count
        for name in {_without_line(f) for f in body if not any(x in f for x in _LAUNCHER)}:
            inclusive[name] += count

    def block(title: str, counter: Counter[str], n: int) -> list[str]:
        rows = [f"  {c / total:6.1%}  {name}" for name, c in counter.most_common(n)]
        return [title, *rows]

    lines = [f"{path.name}: {total} busy samples"]
    lines += block(" by thread:", threads, 5)
    lines += block(" self time by layer (leaf frame's file):", buckets, 12)
    lines += block(" hottest leaf lines:", leaves, top)
    # py-spy often cuts coroutine stacks short (a resumed task shows from some frame down), so a
    # function's inclusive share is a lower bound; the self-time shares above are exact.
    lines += block(" inclusive time by function (a lower bound for coroutines):", inclusive, top + 10)
    return "\n".join(lines)
