"""Load generators: wrk driven by a generated Lua script, or the Python open-loop generator when wrk
is absent. Both run as their own process (pinned to the load CPU when pinning is on) and report the
same LoadResult.
"""

from __future__ import annotations

import base64
import http.client
import json
import resource
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ._openloop import RESULT_MARK

_REPO_ROOT = Path(__file__).resolve().parent.parent.parent
_WRK_MARK = "WRK_RESULT "


@dataclass(frozen=True, kw_only=True)
class Workload:
    """Requests to send, cycling through ``paths`` in order."""

    method: str
    paths: tuple[str, ...]
    # Content-Type of ``body``; None for requests without one.
    content_type: str | None
    body: bytes | None


@dataclass(frozen=True, kw_only=True)
class LoadResult:
    requests: int  # completed requests, whatever their status
    duration: float  # seconds the generator ran
    errors: int  # non-2xx/3xx answers, socket errors and timeouts
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    output: str  # the generator's own report, for the log

    @property
    def rps(self) -> float:
        return self.requests / self.duration if self.duration > 0 else 0.0


class LoadGenerator(Protocol):
    name: str

    def run(self, base_url: str, workload: Workload, duration: float, connections: int) -> LoadResult: ...


def children_cpu() -> float:
    """CPU seconds of every child process waited for so far: the generator runs as one."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def preload(base_url: str, workload: Workload) -> None:
    """Send each request of ``workload`` once, over one keep-alive connection; fail on an error status."""
    url = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=10)
    headers = {"Content-Type": workload.content_type} if workload.content_type else {}
    try:
        for path in workload.paths:
            conn.request(workload.method, path, body=workload.body, headers=headers)
            reply = conn.getresponse()
            data = reply.read()
            if reply.status >= 300:
                raise RuntimeError(f"{workload.method} {path} answered {reply.status}: {data[:200]!r}")
    finally:
        conn.close()


def _lua_string(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return '"' + "".join(f"\\{b}" for b in raw) + '"'


# Prebuilds every request once per thread, cycles through them, and prints one machine-readable line
# at the end (latency in microseconds) so nothing depends on wrk's human formatting.
_WRK_SCRIPT = """\
local method = {method}
local paths = {{{paths}}}
local headers = {{{headers}}}
local body = {body}
local requests = {{}}
local n = 0

init = function(args)
  for i, path in ipairs(paths) do
    requests[i] = wrk.format(method, path, headers, body)
  end
end

request = function()
  n = n + 1
  if n > #requests then n = 1 end
  return requests[n]
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "{mark}%d %d %d %d %d %d %d %d %d %.1f %d\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
"""


class Wrk:
    """wrk with one thread (``--latency``), pinned with ``prefix`` (e.g. ``taskset -c 1``)."""

    name = "wrk"

    def __init__(self, binary: str, prefix: Sequence[str] = (), threads: int = 1) -> None:
        self._binary = binary
        self._prefix = list(prefix)
        self._threads = threads

    def run(self, base_url: str, workload: Workload, duration: float, connections: int) -> LoadResult:
        headers = {"Content-Type": workload.content_type} if workload.content_type else {}
        script = _WRK_SCRIPT.format(
            method=_lua_string(workload.method),
            paths=", ".join(_lua_string(p) for p in workload.paths),
            headers=", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()),
            body=_lua_string(workload.body) if workload.body is not None else "nil",
            mark=_WRK_MARK,
        )
        with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="peersync-bench-") as lua:
            lua.write(script)
            lua.flush()
            argv = [
                *self._prefix,
                self._binary,
                f"--threads={self._threads}",
                f"--connections={connections}",
                f"--duration={max(1, round(duration))}s",
                "--timeout=10s",
                "--latency",
                f"--script={lua.name}",
                base_url,
            ]
            out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=duration + 60)
        if out.returncode != 0:
            raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
        return _parse_wrk(out.stdout)


def _parse_wrk(output: str) -> LoadResult:
    lines = [line for line in output.splitlines() if line.startswith(_WRK_MARK)]
    if not lines:
        raise RuntimeError(f"no result line in wrk's output:\n{output}")
    fields = lines[-1][len(_WRK_MARK) :].split()
    requests, duration_us, connect, read, write, status, timeout, p50, p99 = (int(f) for f in fields[:9])
    mean, peak = float(fields[9]), int(fields[10])
    human = "\n".join(line for line in output.splitlines() if not line.startswith(_WRK_MARK))
    return LoadResult(
        requests=requests,
        duration=duration_us / 1e6,
        errors=connect + read + write + status + timeout,
        p50_ms=p50 / 1000,
        p99_ms=p99 / 1000,
        mean_ms=mean / 1000,
        max_ms=peak / 1000,
        output=human,
    )


class OpenLoop:
    """The Python open-loop generator (``tests.bench._openloop``, stdlib only) at a fixed ``rate``.

    Open loop: request i is due at i/rate whatever happened to earlier ones, and its latency counts
    from when it was due, so a slow server shows as latency, not as a politely lower offered load.
    """

    name = "python-openloop"

    def __init__(self, rate: float, prefix: Sequence[str] = ()) -> None:
        self.rate = rate
        self._prefix = list(prefix)

    def run(self, base_url: str, workload: Workload, duration: float, connections: int) -> LoadResult:
        spec = {
            "method": workload.method,
            "paths": list(workload.paths),
            "content_type": workload.content_type,
            "body_b64": base64.b64encode(workload.body).decode() if workload.body is not None else None,
        }
        with tempfile.TemporaryDirectory(prefix="peersync-bench-") as tmp:
            spec_path = Path(tmp) / "spec.json"
            spec_path.write_text(json.dumps(spec))
            argv = [
                *self._prefix,
                sys.executable,
                "-m",
                "tests.bench._openloop",
                base_url,
                str(spec_path),
                f"--duration={duration}",
                f"--rate={self.rate}",
                f"--connections={connections}",
            ]
            out = subprocess.run(
                argv, capture_output=True, text=True, check=False, timeout=duration + 120, cwd=_REPO_ROOT
            )
        lines = [line for line in out.stdout.splitlines() if line.startswith(RESULT_MARK)]
        if out.returncode != 0 or not lines:
            raise RuntimeError(f"the open-loop generator failed ({out.returncode}): {out.stderr}")
        data = json.loads(lines[-1][len(RESULT_MARK) :])
        return LoadResult(
            requests=data["requests"],
            duration=data["duration"],
            errors=data["errors"],
            p50_ms=data["p50_ms"],
            p99_ms=data["p99_ms"],
            mean_ms=data["mean_ms"],
            max_ms=data["max_ms"],
            output=f"offered {self.rate:g} req/s open loop, {data['dropped']} requests dropped "
            f"(more than {data['max_backlog']} waiting)",
        )
