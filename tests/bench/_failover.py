"""Failover: how long after ``kill -9`` of an owner its namespaces accept writes again.

One three-node cluster (``--replicas 2``, the default) serves every trial. Each trial picks the
victim in turn (a, b, c, a, ...) and ``--failover-namespaces`` namespaces it owns, writes keys to
them through the victim (every write acknowledged, so on a replica too), then ``kill -9``s it. One
asyncio task per namespace then PUTs to it through a survivor in a tight loop (a new request as
soon as the last one answered, 5 ms after an error) until a write succeeds; another polls that
survivor's member list for the victim's death. Reported per trial: the survivor listing the victim
dead, the first and the last namespace writable again, all from the kill, and whether every write
acknowledged before the kill reads back through the survivor. The victim then restarts with its
data under the same id and the cluster settles before the next trial.

The bound is the membership settings: a silent node is suspected ``suspect_after`` after its last
heartbeat and dead ``dead_after`` later; its last heartbeat went out up to ``heartbeat_interval``
before the kill. Then the new owner fences the other copies and catches up before it serves, which
``handoff_timeout`` bounds. Nodes and the pollers are not pinned.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._cluster import Admin, cluster_name, node, owned_by, start_cluster, wait_converged, wait_settled
from ._openloop import Connection
from ._report import markdown
from ._servers import PeersyncServer, Pinning

NODES = ("a", "b", "c")
# Keys written to each sampled namespace through the victim before it is killed.
_KEYS_BEFORE = 10
# Seconds after the kill by which every sampled namespace must accept writes, or the trial fails.
_RECOVERY_TIMEOUT = 30.0
# Seconds one polling request may take (a request can wait up to the handoff timeout for a new
# owner to catch up, then answer 503).
_REQUEST_TIMEOUT = 15.0
# Seconds between the pollers' requests after an error answer, and between member-list polls.
_ERROR_PAUSE = 0.005
_MEMBERS_INTERVAL = 0.02


@dataclass(frozen=True, kw_only=True)
class FailoverTrial:
    victim: str  # the node killed
    entry: str  # the survivor the writes went through
    namespaces: int  # sampled namespaces owned by the victim
    dead: float | None  # seconds from kill -9 until the entry survivor listed the victim dead
    first_writable: float  # ... until the first sampled namespace accepted a write
    all_writable: float  # ... until every sampled namespace had accepted one
    # Answers to the polling writes before each namespace recovered, by HTTP status (0: no answer).
    errors: dict[str, int] = field(default_factory=dict)
    acknowledged: int  # writes acknowledged before the kill
    lost: int  # of those, not read back through the survivor afterwards


@dataclass(frozen=True, kw_only=True)
class FailoverSettings:
    """The membership and handoff settings the cluster ran with, which bound the times."""

    heartbeat_interval: float
    suspect_after: float
    dead_after: float
    handoff_timeout: float


class FailoverBench:
    def __init__(self, args: argparse.Namespace, settings: FailoverSettings) -> None:
        self._args = args
        self._settings = settings
        self._pinning = Pinning(server_cpus=None, load_cpus=None)
        self._random = random.Random(args.seed)

    def run(self, redis_url: str) -> list[FailoverTrial]:
        with tempfile.TemporaryDirectory(prefix="peersync-bench-failover-") as tmp:
            return self._run(redis_url, Path(tmp))

    def _run(self, redis_url: str, root: Path) -> list[FailoverTrial]:
        args = self._args
        name = cluster_name()
        s = self._settings
        flags = [
            *args.serve_arg,
            "--heartbeat-interval",
            str(s.heartbeat_interval),
            "--suspect-after",
            str(s.suspect_after),
            "--dead-after",
            str(s.dead_after),
            "--handoff-timeout",
            str(s.handoff_timeout),
        ]

        def new_node(node_id: str) -> PeersyncServer:
            return node(
                node_id,
                redis_url=redis_url,
                cluster=name,
                store=args.handoff_store,
                root=root,
                pinning=self._pinning,
                extra_args=flags,
            )

        running = {i: new_node(i) for i in NODES}
        everyone = list(running.values())
        trials: list[FailoverTrial] = []
        try:
            start_cluster(everyone)
            print(
                f"failover ({args.handoff_store}): {', '.join(f'{n.label} pid {n.pid}' for n in everyone)}; "
                f"{args.failover_trials} trials of kill -9, {args.failover_namespaces} namespaces each",
                flush=True,
            )
            for t in range(args.failover_trials):
                victim = NODES[t % len(NODES)]
                trial = self._trial(t, running, victim)
                trials.append(trial)
                errors = ", ".join(f"{n} x {status}" for status, n in sorted(trial.errors.items()))
                print(
                    f"  trial {t + 1}: kill -9 {victim}; dead on {trial.entry} after "
                    f"{_seconds(trial.dead)}, first namespace writable through {trial.entry} after "
                    f"{trial.first_writable:.3f} s, all {trial.namespaces} after {trial.all_writable:.3f} s "
                    f"(answers before: {errors or 'none'}); {trial.lost} of {trial.acknowledged} "
                    f"acknowledged writes lost",
                    flush=True,
                )
                # Back with its data, under the same id; settle before the next trial.
                again = new_node(victim)
                everyone.append(again)
                again.start()
                running[victim] = again
                wait_converged(list(running.values()))
                wait_settled(list(running.values()))
        finally:
            for n in everyone:
                n.stop()
        return trials

    def _trial(self, t: int, running: dict[str, PeersyncServer], victim: str) -> FailoverTrial:
        args = self._args
        survivors = [running[i] for i in NODES if i != victim]
        entry = survivors[t % len(survivors)]
        namespaces = owned_by(list(running.values()), victim, args.failover_namespaces, f"fo{t}-")
        acknowledged: dict[tuple[str, str], str] = {}
        admin = Admin(running[victim].base_url)
        try:
            for ns in namespaces:
                for k in range(_KEYS_BEFORE):
                    value = f"before-{t}-{k}"
                    status, body = admin.send(
                        "PUT", f"/v1/namespaces/{ns}/keys/k{k}", json.dumps({"value": value}).encode()
                    )
                    if status >= 300:
                        raise RuntimeError(f"PUT {ns}/k{k} to {victim} answered {status}: {body[:200]!r}")
                    acknowledged[ns, f"k{k}"] = value
        finally:
            admin.close()
        # A random phase against the heartbeat timer, so that trials sample it.
        time.sleep(self._random.uniform(0.0, self._settings.heartbeat_interval))
        killed_at = running[victim].kill()
        dead_at, writable, errors = asyncio.run(_poll(entry.base_url, victim, namespaces, t))
        lost = _lost(entry.base_url, acknowledged)
        return FailoverTrial(
            victim=victim,
            entry=entry.label,
            namespaces=len(namespaces),
            dead=dead_at - killed_at if dead_at is not None else None,
            first_writable=min(writable) - killed_at,
            all_writable=max(writable) - killed_at,
            errors={str(k): v for k, v in sorted(errors.items())},
            acknowledged=len(acknowledged),
            lost=lost,
        )


async def _poll(
    base_url: str, victim: str, namespaces: Sequence[str], trial: int
) -> tuple[float | None, list[float], Counter[int]]:
    """Write to each namespace through ``base_url`` until it succeeds, while watching its member
    list for ``victim``'s death: (time seen dead, time each namespace succeeded, error answers)."""
    url = urllib.parse.urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    errors: Counter[int] = Counter()
    writable: list[float] = []
    dead_at: float | None = None
    deadline = time.monotonic() + _RECOVERY_TIMEOUT

    async def write(ns: str) -> None:
        conn = Connection(host, port)
        body = json.dumps({"value": f"after-{trial}"}).encode()
        request = (
            f"PUT /v1/namespaces/{ns}/keys/after HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        try:
            while time.monotonic() < deadline:
                try:
                    status = await asyncio.wait_for(conn.send(request), _REQUEST_TIMEOUT)
                except (OSError, ValueError, asyncio.IncompleteReadError, TimeoutError):
                    conn.close()
                    status = 0
                if 200 <= status < 300:
                    writable.append(time.monotonic())
                    return
                errors[status] += 1
                await asyncio.sleep(_ERROR_PAUSE)
            raise RuntimeError(f"{ns} did not accept a write within {_RECOVERY_TIMEOUT}s")
        finally:
            conn.close()

    async def watch() -> None:
        nonlocal dead_at
        admin = Admin(base_url, timeout=2.0)
        try:
            while dead_at is None and time.monotonic() < deadline and len(writable) < len(namespaces):
                try:
                    states = await asyncio.to_thread(admin.states)
                except (OSError, ValueError) as exc:
                    print(f"    members of {base_url}: {exc!r}", flush=True)
                else:
                    if states.get(victim) == "dead":
                        dead_at = time.monotonic()
                await asyncio.sleep(_MEMBERS_INTERVAL)
        finally:
            admin.close()

    async with asyncio.TaskGroup() as group:
        group.create_task(watch())
        for ns in namespaces:
            group.create_task(write(ns))
    return dead_at, writable, errors


def _lost(base_url: str, acknowledged: dict[tuple[str, str], str]) -> int:
    """How many acknowledged writes the snapshots through ``base_url`` do not show."""
    admin = Admin(base_url, timeout=_REQUEST_TIMEOUT)
    lost = 0
    try:
        for ns in sorted({ns for ns, _ in acknowledged}):
            status, body = admin.send("GET", f"/v1/namespaces/{ns}/snapshot")
            values = {e["key"]: e.get("value") for e in json.loads(body)["entries"]} if status == 200 else {}
            lost += sum(1 for (n, k), v in acknowledged.items() if n == ns and values.get(k) != v)
    finally:
        admin.close()
    return lost


def _seconds(value: float | None) -> str:
    return f"{value:.3f} s" if value is not None else "(not seen)"


def failover_table(trials: Sequence[FailoverTrial], settings: FailoverSettings) -> str:
    """Min, median and max over the trials, next to the settings that bound them."""
    death = settings.suspect_after + settings.dead_after
    rows = [["measure (seconds from kill -9)", "min", "median", "max", "bound from the settings"]]

    def row(label: str, values: Sequence[float], bound: str) -> None:
        if values:
            rows.append(
                [label, *(f"{v:.3f}" for v in (min(values), statistics.median(values), max(values))), bound]
            )

    row(
        "victim listed dead by the entry survivor",
        [t.dead for t in trials if t.dead is not None],
        f"{death - settings.heartbeat_interval:g}-{death:g} (suspect_after + dead_after after its last "
        "heartbeat)",
    )
    row("first sampled namespace writable again", [t.first_writable for t in trials], "")
    row(
        "every sampled namespace writable again",
        [t.all_writable for t in trials],
        f"<= {death:g} + handoff (handoff_timeout {settings.handoff_timeout:g})",
    )
    row(
        "(every one writable, from the survivor listing the victim dead)",
        [t.all_writable - t.dead for t in trials if t.dead is not None],
        "",
    )
    lost = sum(t.lost for t in trials)
    acked = sum(t.acknowledged for t in trials)
    return (
        markdown(rows, numeric={1, 2, 3})
        + f"\n\nacknowledged writes lost: {lost} of {acked}; heartbeat_interval "
        f"{settings.heartbeat_interval:g} s, suspect_after {settings.suspect_after:g} s, dead_after "
        f"{settings.dead_after:g} s"
    )


def failover_json(trials: Sequence[FailoverTrial], settings: FailoverSettings) -> dict[str, Any]:
    return {"settings": asdict(settings), "trials": [asdict(t) for t in trials]}
