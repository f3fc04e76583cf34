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
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    numeric = {2, 3, 4, 5, 6, 7, 8, 9, 10}
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


def write_json(
    path: Path,
    meta: dict[str, Any],
    results: list[Measurement],
    runs: list[Measurement],
    max_other: float,
) -> None:
    """``results`` (one per operation and target) with their ratios to etcd, and every run."""
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
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
