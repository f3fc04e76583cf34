"""The servers under load: a real ``peersync serve`` process and a real etcd, each on loopback, each
pinned to the server CPU when pinning is on, each stopped with SIGTERM (SIGKILL only as a last resort).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ._load import Workload

_REPO_ROOT = Path(__file__).resolve().parent.parent.parent
_PEERSYNC_LISTENING = re.compile(r"peersync listening: http=(\S+) grpc=(\S+)")
_GOSSIP_SUBSCRIBED = "gossip subscribed"
# Logged by a cluster member each time it has handed over what a membership change gave it.
_REBALANCE_FINISHED = re.compile(
    r"rebalance finished: (\d+) namespaces owned here, (\d+) taken over, (\d+) failed, in ([\d.]+)s"
)

# Seconds a server gets to start, and to stop after SIGTERM before it is killed.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


@dataclass(frozen=True, kw_only=True)
class Pinning:
    """Which CPUs servers and load generators run on (``taskset -c`` lists), or no pinning."""

    # CPU list for the server under test, e.g. "0"; None leaves it to the scheduler.
    server_cpus: str | None
    # CPU list for the load generator, e.g. "1"; None leaves it to the scheduler.
    load_cpus: str | None

    @staticmethod
    def choose(enabled: bool, server_cpus: str = "0", load_cpus: str = "1") -> Pinning:
        """Pin when asked, taskset exists and there are at least two CPUs; otherwise do not."""
        if enabled and shutil.which("taskset") and len(os.sched_getaffinity(0)) >= 2:
            return Pinning(server_cpus=server_cpus, load_cpus=load_cpus)
        return Pinning(server_cpus=None, load_cpus=None)

    def server_prefix(self) -> list[str]:
        return ["taskset", "-c", self.server_cpus] if self.server_cpus else []

    def load_prefix(self) -> list[str]:
        return ["taskset", "-c", self.load_cpus] if self.load_cpus else []

    def describe(self) -> str:
        if not self.server_cpus:
            return "none (scheduler's choice)"
        return f"taskset: server on CPU {self.server_cpus}, load generator on CPU {self.load_cpus}"


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, all its threads, from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    hz = os.sysconf("SC_CLK_TCK")
    return utime / hz, stime / hz


def parse_cpus(cpus: str) -> set[int]:
    """A taskset CPU list ("0", "0-1", "0,2") as a set of CPU numbers."""
    out: set[int] = set()
    for part in cpus.split(","):
        low, _, high = part.partition("-")
        out.update(range(int(low), int(high or low) + 1))
    return out


@dataclass(frozen=True)
class CoreTicks:
    """Clock ticks of some CPUs from /proc/stat; subtract two readings for a period."""

    busy: int  # everything but idle and iowait
    interrupts: int  # irq and softirq, charged to no process: on loopback, much of the network stack
    total: int

    def __sub__(self, other: CoreTicks) -> CoreTicks:
        return CoreTicks(self.busy - other.busy, self.interrupts - other.interrupts, self.total - other.total)

    def busy_share(self) -> float | None:
        return self.busy / self.total if self.total else None

    def other_share(self, accounted: float) -> float | None:
        """The share of these CPUs busy with neither interrupts nor the ``accounted`` seconds of
        CPU of the processes measured: other work that disturbed the measurement."""
        if not self.total:
            return None
        other = self.busy - self.interrupts - accounted * os.sysconf("SC_CLK_TCK")
        return max(0.0, other / self.total)


def core_note(busy: float | None, other: float | None) -> str:
    """How busy the measured CPUs were, for a result line ("" when unknown)."""
    if busy is None or other is None:
        return ""
    return f", core busy {busy:.0%} (others {other:.0%})"


def core_ticks(cpus: set[int]) -> CoreTicks:
    busy = interrupts = total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu" and int(name[3:]) in cpus:
            user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in values[:8])
            total += user + nice + system + idle + iowait + irq + softirq + steal
            busy += user + nice + system + irq + softirq + steal
            interrupts += irq + softirq
    return CoreTicks(busy, interrupts, total)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """A server process whose output is collected; ``log_tail`` shows its end. Use ``with``."""

    label: str
    base_url: str

    def __init__(self, label: str, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.label = label
        self.base_url = ""
        self._argv = list(argv)
        self._env = {**os.environ, **(env or {})}
        self._proc: subprocess.Popen[str] | None = None
        self._lines: list[str] = []
        self._reader: threading.Thread | None = None
        # Monotonic time just before the process was started.
        self.spawned_at: float | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None, "not started"
        return self._proc.pid

    def start(self) -> None:
        self.spawn()
        self.wait_ready()

    def spawn(self) -> None:
        """Start the process and return at once; ``wait_ready`` waits until it serves."""
        self.spawned_at = time.monotonic()
        # taskset execs the command, so the pid is the server's own.
        self._proc = subprocess.Popen(
            self._argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self._env,
        )
        self._reader = threading.Thread(target=self._read, args=(self._proc,), daemon=True)
        self._reader.start()

    def wait_ready(self) -> None:
        assert self._proc is not None, "not spawned"
        deadline = time.monotonic() + START_TIMEOUT
        while not self._ready():
            if self._proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self._proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.label} did not start within {START_TIMEOUT}s:\n{self.log_tail()}")
            time.sleep(0.01)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> float:
        """SIGKILL, as a crash would; returns the monotonic time the signal was sent. Reaps it."""
        assert self._proc is not None, "not started"
        killed_at = time.monotonic()
        self._proc.kill()
        self._proc.wait(STOP_TIMEOUT)
        if self._reader is not None:
            self._reader.join(5)
        return killed_at

    def _ready(self) -> bool:
        raise NotImplementedError

    def _on_line(self, line: str) -> None:
        """Called for each line of output, from the reader thread."""

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            self._lines.append(line)
            self._on_line(line)

    def stop(self) -> int | None:
        """SIGTERM, wait, SIGKILL if it does not stop. Returns the exit status (None if never started)."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                print(f"{self.label} ignored SIGTERM for {STOP_TIMEOUT}s; killing it", file=sys.stderr)
                proc.kill()
                proc.wait(STOP_TIMEOUT)
        if self._reader is not None:
            self._reader.join(5)
        return proc.returncode

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self._lines[-lines:])

    def __enter__(self) -> ServerProcess:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        status = self.stop()
        if status not in (0, None, -signal.SIGTERM):
            print(f"{self.label} exited with status {status}:\n{self.log_tail()}", file=sys.stderr)

    # -- the HTTP shape of the key-value API -----------------------------------------------------

    def get_workload(self, keys: Sequence[str]) -> Workload:
        raise NotImplementedError

    def put_workload(self, keys: Sequence[str], value: str) -> Workload:
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class RebalanceLine:
    """A node's "rebalance finished" log line."""

    seen_at: float  # monotonic time the reader thread saw it
    total: int  # namespaces the node owns after the change
    taken_over: int  # of those, handed over to it
    failed: int
    duration: float  # seconds the node says the run took


class PeersyncServer(ServerProcess):
    """``peersync serve`` on free loopback ports; ``store`` is ``sqlite`` (in ``data_dir``) or ``memory``."""

    def __init__(
        self,
        *,
        store: str,
        data_dir: Path,
        pinning: Pinning,
        extra_args: Sequence[str] = (),
        label: str | None = None,
    ) -> None:
        argv = [
            *pinning.server_prefix(),
            sys.executable,
            "-m",
            "peersync",
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--data-dir",
            str(data_dir),
            "--store",
            store,
            *extra_args,
        ]
        # The source tree first, so the benchmark measures the checkout it lives in.
        pythonpath = os.pathsep.join(p for p in (str(_REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        env = {"PYTHONPATH": pythonpath, "PYTHONUNBUFFERED": "1"}
        super().__init__(label or f"peersync-{store}", argv, env=env)
        self._listening = threading.Event()
        # Monotonic time the reader thread saw the "peersync listening" line.
        self.listening_at: float | None = None
        # ... and the first "gossip subscribed" line (a cluster member's gossip is connected).
        self.subscribed_at: float | None = None
        # Each "rebalance finished" line: monotonic time seen, and its counts.
        self.rebalances: list[RebalanceLine] = []

    def _on_line(self, line: str) -> None:
        if self.subscribed_at is None and _GOSSIP_SUBSCRIBED in line:
            self.subscribed_at = time.monotonic()
        finished = _REBALANCE_FINISHED.search(line)
        if finished:
            total, taken_over, failed = (int(finished.group(i)) for i in (1, 2, 3))
            self.rebalances.append(
                RebalanceLine(
                    seen_at=time.monotonic(),
                    total=total,
                    taken_over=taken_over,
                    failed=failed,
                    duration=float(finished.group(4)),
                )
            )
        found = _PEERSYNC_LISTENING.search(line)
        if found:
            self.listening_at = time.monotonic()
            self.base_url = f"http://{found.group(1)}"
            self._listening.set()

    def _ready(self) -> bool:
        return self._listening.is_set()

    def get_workload(self, keys: Sequence[str]) -> Workload:
        return Workload(
            method="GET",
            paths=tuple(f"/v1/namespaces/bench/keys/{k}" for k in keys),
            content_type=None,
            body=None,
        )

    def put_workload(self, keys: Sequence[str], value: str) -> Workload:
        return Workload(
            method="PUT",
            paths=tuple(f"/v1/namespaces/bench/keys/{k}" for k in keys),
            content_type="application/json",
            body=f'{{"value": "{value}"}}'.encode(),
        )


class EtcdServer(ServerProcess):
    """A single-member etcd with the v2 keys API (``--enable-v2``) on free loopback ports."""

    def __init__(self, *, binary: str, data_dir: Path, pinning: Pinning) -> None:
        client_url = f"http://127.0.0.1:{free_port()}"
        peer_url = f"http://127.0.0.1:{free_port()}"
        argv = [
            *pinning.server_prefix(),
            binary,
            "--name",
            "default",
            "--enable-v2",
            "--data-dir",
            str(data_dir),
            "--listen-client-urls",
            client_url,
            "--advertise-client-urls",
            client_url,
            "--listen-peer-urls",
            peer_url,
            "--initial-advertise-peer-urls",
            peer_url,
            "--initial-cluster",
            f"default={peer_url}",
            "--logger",
            "zap",
            "--log-level",
            "warn",
        ]
        super().__init__("etcd", argv)
        self.base_url = client_url

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/health", timeout=1) as reply:
                return b'"true"' in reply.read()
        except (OSError, urllib.error.URLError):
            return False

    def get_workload(self, keys: Sequence[str]) -> Workload:
        return Workload(
            method="GET", paths=tuple(f"/v2/keys/bench/{k}" for k in keys), content_type=None, body=None
        )

    def put_workload(self, keys: Sequence[str], value: str) -> Workload:
        return Workload(
            method="PUT",
            paths=tuple(f"/v2/keys/bench/{k}" for k in keys),
            content_type="application/x-www-form-urlencoded",
            body=f"value={value}".encode(),
        )


def etcd_version(binary: str) -> str:
    """``etcd --version``'s first line, e.g. "etcd Version: 3.4.23"."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False, timeout=10)
    return (out.stdout or out.stderr).splitlines()[0].strip() if (out.stdout or out.stderr) else "unknown"
