"""Measurements, the targets they are judged against, and the table and JSON they are reported as."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ._load import LoadResult

ETCD = "etcd"

# Throughput targets as ratios of peersync's req/s to etcd's in the same run, by (operation, target).
# The GET target holds whatever the engine; the PUT target is for the default (SQLite) engine.
TARGETS: dict[tuple[str, str], float] = {
    ("GET", "peersync-sqlite"): 0.6,
    ("GET", "peersync-memory"): 0.6,
    ("PUT", "peersync-sqlite"): 0.5,
}


@dataclass(frozen=True, kw_only=True)
class Measurement:
    operation: str  # GET or PUT
    target: str  # peersync-sqlite, peersync-memory or etcd
    load: LoadResult
    server_cpu: float  # seconds of server CPU (user + system, all threads) during the run
    server_system: float  # the part of server_cpu spent in the kernel (system calls)
    generator_cpu: float  # seconds of load-generator CPU during the run
    # Shares of the server's pinned CPU(s) during the run (None when not pinned): busy at all
    # (interrupts included), and busy with neither the server nor interrupts, i.e. other processes
    # or the hypervisor stealing time, which slows the server down.
    core_busy: float | None
    core_other: float | None

    @property
    def generator_share(self) -> float:
        """Generator CPU time over wall time: near 1.0 (its one core) means the generator was the limit."""
        return self.generator_cpu / self.load.duration if self.load.duration else 0.0

    @property
    def cpu_us_per_request(self) -> float:
        return self.server_cpu / self.load.requests * 1e6 if self.load.requests else 0.0

    @property
    def system_us_per_request(self) -> float:
        return self.server_system / self.load.requests * 1e6 if self.load.requests else 0.0

    @property
    def cpu_share(self) -> float:
        """Server CPU time over wall time: 1.0 is one core busy all the time."""
        return self.server_cpu / self.load.duration if self.load.duration else 0.0


@dataclass(frozen=True, kw_only=True)
class Verdict:
    operation: str
    target: str
    ratio: float  # peersync req/s over etcd req/s
    goal: float | None  # the target ratio, None where there is none
    errors: int  # failed requests on either side: a ratio of runs with errors proves nothing
    # Whether other processes took more than the allowed share of either side's CPU: such a ratio
    # says more about the neighbours than about the servers.
    disturbed: bool

    @property
    def result(self) -> str:
        """PASS, MISS, ERRORS, NOISY, or "" where there is no goal."""
        if self.goal is None:
            return ""
        if self.errors:
            return "ERRORS"
        if self.disturbed:
            return "NOISY"
        return "PASS" if self.ratio >= self.goal else "MISS"


# Forwarded req/s as a ratio of direct req/s for the same operation, store and settings.
FORWARDED_TARGET = 0.7


@dataclass(frozen=True, kw_only=True)
class NodesMeasurement:
    """What a cluster run measured: the load, the owner ``a``'s CPU and the generator's, in seconds
    (user + system, all threads) during the run. A subclass adds the other nodes as ``rest_cpu``."""

    load: LoadResult
    owner_cpu: float
    owner_system: float
    generator_cpu: float
    # Shares of the nodes' pinned CPU(s), as in Measurement; "other" excludes the nodes.
    core_busy: float | None
    core_other: float | None

    @property
    def rest_cpu(self) -> float:
        """The other nodes' CPU seconds."""
        raise NotImplementedError

    def _per_request(self, seconds: float) -> float:
        return seconds / self.load.requests * 1e6 if self.load.requests else 0.0

    def _share(self, seconds: float) -> float:
        return seconds / self.load.duration if self.load.duration else 0.0

    @property
    def owner_us(self) -> float:
        return self._per_request(self.owner_cpu)

    @property
    def total_us(self) -> float:
        return self._per_request(self.owner_cpu + self.rest_cpu)

    @property
    def nodes_share(self) -> float:
        """The nodes' CPU time over wall time: 1.0 is one core busy all the time."""
        return self._share(self.owner_cpu + self.rest_cpu)

    @property
    def generator_share(self) -> float:
        return self._share(self.generator_cpu)


@dataclass(frozen=True, kw_only=True)
class RouteMeasurement(NodesMeasurement):
    """One load run against a two-node cluster: sent to the owner ``a`` (direct), or to ``b``,
    which forwards every request to ``a`` (forwarded). Both nodes are measured either way."""

    operation: str  # GET or PUT
    store: str  # the nodes' engine: memory or sqlite
    route: str  # direct or forwarded
    # The other node: the entry node of a forwarded run; idle but for gossip in a direct run.
    peer_cpu: float
    peer_system: float

    @property
    def rest_cpu(self) -> float:
        return self.peer_cpu

    @property
    def peer_us(self) -> float:
        return self._per_request(self.peer_cpu)

    @property
    def owner_system_us(self) -> float:
        return self._per_request(self.owner_system)

    @property
    def peer_system_us(self) -> float:
        return self._per_request(self.peer_system)


def route_medians(measurements: list[RouteMeasurement]) -> list[RouteMeasurement]:
    """For each (operation, store, route), the run with the median req/s (the lower of an even count)."""
    groups: dict[tuple[str, str, str], list[RouteMeasurement]] = {}
    for m in measurements:
        groups.setdefault((m.operation, m.store, m.route), []).append(m)
    out = []
    for runs in groups.values():
        ordered = sorted(runs, key=lambda m: m.load.rps)
        out.append(ordered[(len(ordered) - 1) // 2])
    return out


def route_verdicts(measurements: list[RouteMeasurement], max_other: float) -> list[Verdict]:
    """Forwarded over direct req/s for each operation and store measured both ways."""
    direct = {(m.operation, m.store): m for m in measurements if m.route == "direct"}
    out = []
    for m in measurements:
        base = direct.get((m.operation, m.store))
        if m.route == "forwarded" and base is not None and base.load.rps:
            out.append(
                Verdict(
                    operation=m.operation,
                    target=m.store,
                    ratio=m.load.rps / base.load.rps,
                    goal=FORWARDED_TARGET,
                    errors=m.load.errors + base.load.errors,
                    disturbed=any((x.core_other or 0) > max_other for x in (m, base)),
                )
            )
    return out


def route_table(measurements: list[RouteMeasurement], max_other: float) -> str:
    """A Markdown table of direct and forwarded runs, forwarded with its ratio to direct."""
    by_key = {(v.operation, v.target): v for v in route_verdicts(measurements, max_other)}
    header = [
        "operation",
        "store",
        "route",
        "req/s",
        "p50 ms",
        "p99 ms",
        "a (owner) µs/req",
        "b µs/req",
        "a+b µs/req",
        "a+b CPU",
        "other CPU",
        "gen CPU",
        "errors",
        "vs direct",
        "goal",
        "result",
    ]
    rows = [header]
    order = {"direct": 0, "forwarded": 1}
    for m in sorted(measurements, key=lambda m: (m.operation, m.store, order.get(m.route, 2))):
        v = by_key.get((m.operation, m.store)) if m.route == "forwarded" else None
        rows.append(
            [
                m.operation,
                m.store,
                "direct to a" if m.route == "direct" else "b -> a",
                f"{m.load.rps:,.0f}",
                f"{m.load.p50_ms:.2f}",
                f"{m.load.p99_ms:.2f}",
                f"{m.owner_us:,.0f}",
                f"{m.peer_us:,.0f}",
                f"{m.total_us:,.0f}",
                f"{m.nodes_share:.0%}",
                f"{m.core_other:.0%}" if m.core_other is not None else "",
                f"{m.generator_share:.0%}",
                str(m.load.errors),
                f"{v.ratio:.2f}x" if v else "",
                f">= {v.goal}x" if v else "",
                v.result if v else "",
            ]
        )
    return markdown(rows, numeric=set(range(3, 14)))


def verdicts(measurements: list[Measurement], max_other: float) -> list[Verdict]:
    """The ratio to etcd of every peersync measurement that has an etcd counterpart; ``max_other``
    is the share of the server CPU other processes may take before the ratio is called noisy."""
    etcd = {m.operation: m for m in measurements if m.target == ETCD}
    out = []
    for m in measurements:
        base = etcd.get(m.operation)
        if m.target != ETCD and base is not None and base.load.rps:
            out.append(
                Verdict(
                    operation=m.operation,
                    target=m.target,
                    ratio=m.load.rps / base.load.rps,
                    goal=TARGETS.get((m.operation, m.target)),
                    errors=m.load.errors + base.load.errors,
                    disturbed=any((x.core_other or 0) > max_other for x in (m, base)),
                )
            )
    return out


def medians(measurements: list[Measurement]) -> list[Measurement]:
    """For each (operation, target), the run with the median req/s (the lower one of an even count)."""
    groups: dict[tuple[str, str], list[Measurement]] = {}
    for m in measurements:
        groups.setdefault((m.operation, m.target), []).append(m)
    out = []
    for runs in groups.values():
        ordered = sorted(runs, key=lambda m: m.load.rps)
        out.append(ordered[(len(ordered) - 1) // 2])
    return out


def table(measurements: list[Measurement], max_other: float) -> str:
    """A Markdown table, readable as it is in a terminal."""
    by_key = {(v.operation, v.target): v for v in verdicts(measurements, max_other)}
    header = [
        "operation",
        "target",
        "req/s",
        "p50 ms",
        "p99 ms",
        "CPU µs/req",
        "server CPU",
        "other CPU",
        "gen CPU",
        "errors",
        "vs etcd",
        "goal",
        "result",
    ]
    rows = [header]
    for m in sorted(measurements, key=lambda m: (m.operation, m.target != ETCD, m.target)):
        v = by_key.get((m.operation, m.target))
        goal = TARGETS.get((m.operation, m.target))
        rows.append(
            [
                m.operation,
                m.target,
                f"{m.load.rps:,.0f}",
                f"{m.load.p50_ms:.2f}",
                f"{m.load.p99_ms:.2f}",
                f"{m.cpu_us_per_request:,.0f}",
                f"{m.cpu_share:.0%}",
                f"{m.core_other:.0%}" if m.core_other is not None else "",
                f"{m.generator_share:.0%}",
                str(m.load.errors),
                f"{v.ratio:.2f}x" if v else "",
                f">= {goal}x" if goal is not None else "",
                v.result if v else "",
            ]
        )
    return markdown(rows, numeric={2, 3, 4, 5, 6, 7, 8, 9, 10})


def markdown(rows: list[list[str]], numeric: set[int]) -> str:
    """``rows`` (the first is the header) as a Markdown table, numeric columns right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            c.rjust(w) if i in numeric and n else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("| " + " | ".join(cells) + " |")
        if n == 0:
            lines.append(
                "|"
                + "|".join("-" * (w + 1) + (":" if i in numeric else "-") for i, w in enumerate(widths))
                + "|"
            )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
            break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def git_commit(root: Path) -> str:
    out = subprocess.run(
        ["git", "-C", str(root), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or "unknown"


def _as_json(m: Measurement) -> dict[str, Any]:
    load = asdict(m.load)
    load.pop("output")
    return {
        "operation": m.operation,
        "target": m.target,
        **load,
        "rps": m.load.rps,
        "server_cpu_seconds": m.server_cpu,
        "cpu_us_per_request": m.cpu_us_per_request,
        "server_system_seconds": m.server_system,
        "system_us_per_request": m.system_us_per_request,
        "server_cpu_share": m.cpu_share,
        "server_core_busy_share": m.core_busy,
        "server_core_other_share": m.core_other,
        "generator_cpu_seconds": m.generator_cpu,
        "generator_cpu_share": m.generator_share,
    }


def route_json(m: RouteMeasurement) -> dict[str, Any]:
    load = asdict(m.load)
    load.pop("output")
    return {
        "operation": m.operation,
        "store": m.store,
        "route": m.route,
        **load,
        "rps": m.load.rps,
        "owner_cpu_seconds": m.owner_cpu,
        "owner_system_seconds": m.owner_system,
        "peer_cpu_seconds": m.peer_cpu,
        "peer_system_seconds": m.peer_system,
        "owner_cpu_us_per_request": m.owner_us,
        "peer_cpu_us_per_request": m.peer_us,
        "owner_system_us_per_request": m.owner_system_us,
        "peer_system_us_per_request": m.peer_system_us,
        "nodes_cpu_us_per_request": m.total_us,
        "nodes_cpu_share": m.nodes_share,
        "server_core_busy_share": m.core_busy,
        "server_core_other_share": m.core_other,
        "generator_cpu_seconds": m.generator_cpu,
        "generator_cpu_share": m.generator_share,
    }


def forwarding_json(
    results: list[RouteMeasurement], runs: list[RouteMeasurement], max_other: float
) -> dict[str, Any]:
    return {
        "results": [route_json(m) for m in results],
        "ratios": [
            {
                "operation": v.operation,
                "store": v.target,
                "forwarded_over_direct": v.ratio,
                "goal": v.goal,
                "result": v.result,
            }
            for v in route_verdicts(results, max_other)
        ],
        "runs": [route_json(m) for m in runs],
    }


def write_json(
    path: Path,
    meta: dict[str, Any],
    results: list[Measurement],
    runs: list[Measurement],
    max_other: float,
    extra: dict[str, Any] | None = None,
) -> None:
    """``results`` (one per operation and target) with their ratios to etcd, every run, and
    ``extra`` (the cluster parts' sections)."""
    ratios = [
        {
            "operation": v.operation,
            "target": v.target,
            "ratio_to_etcd": v.ratio,
            "goal": v.goal,
            "result": v.result or None,
        }
        for v in verdicts(results, max_other)
    ]
    document = {
        **meta,
        "results": [_as_json(m) for m in results],
        "ratios": ratios,
        "runs": [_as_json(m) for m in runs],
        **(extra or {}),
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
