"""Handoff: how long a node that joins a loaded cluster takes to take over its share of namespaces.

A three-node cluster (``--replicas 2``, the default) is loaded with ``--handoff-namespaces``
namespaces of ``--handoff-keys`` keys each, every write sent straight to its namespace's owner over
many keep-alive connections (``bulk_load``). Then a fourth node starts, and the clock runs from its
spawn until its ``rebalance`` object in ``/v1/cluster/ring`` is idle after at least one run, names
all four members, and has settled everything it owns (done == total, total > 0). The new node
takes over about a quarter of the namespaces, each caught up from the most advanced copy before it
serves. The old owners meanwhile bring the new node up to date on the namespaces they keep and it
now replicates; "cluster settled" is when every node has finished that too. Last, a sample of the
namespaces the new node took over is read back through it, and every key must be there with the
value written. The copies every node holds are counted before the join and after it, until each
namespace is back to its owner and replicas: the nodes it moved away from drop theirs.

Nodes and the loader are not pinned: four nodes and the poller share both CPUs, as they would on
a small host.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import statistics
import tempfile
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ._cluster import Admin, cluster_name, node, rebalances, start_cluster, wait_settled
from ._openloop import Connection
from ._report import markdown
from ._servers import PeersyncServer, Pinning

NODES = ("a", "b", "c")
JOINER = "d"
# Seconds the new node may take to settle what it owns before the run fails.
_HANDOFF_TIMEOUT = 120.0
# Seconds between polls of the rebalance progress: a time is late by up to this plus one request.
_POLL_INTERVAL = 0.02
# Keep-alive connections per node while loading: enough to keep each node busy and its batches big.
_LOAD_CONNECTIONS = 24
# Namespaces the new node took over that are read back through it.
_SAMPLE = 20


@dataclass(frozen=True, kw_only=True)
class Handoff:
    namespaces: int  # namespaces loaded before the join
    keys: int  # keys per namespace
    store: str
    load_s: float  # seconds the bulk load took
    # Seconds from the new node's spawn until its rebalance showed done == total (idle, runs >= 1).
    from_spawn: float
    # ... from its "peersync listening" line, and the start-up itself (spawn to that line).
    from_listening: float
    startup: float
    # Seconds from spawn until its "rebalance finished" log line was read (None without one).
    log_from_spawn: float | None
    rebalance_s: float | None  # the duration the new node reports for its last run
    settled: float  # seconds from spawn until every node's rebalance after the join was done
    total: int  # namespaces the new node owns after the join
    taken_over: int  # of those, taken over from the others
    failed: int  # the most failures any of its polled runs reported
    runs: int  # its rebalance runs until done
    sampled: int  # namespaces read back through the new node
    complete: int  # of those, with every key and value present
    copies_before: int  # namespace copies on all nodes before the join (namespaces x replicas)
    copies_peak: int  # ... once the new node settled, before the others dropped what they gave up
    copies_after: int  # ... at the end: namespaces x replicas again, unless a drop failed
    # Seconds from spawn until the copies were back to namespaces x replicas (None: they were not).
    trimmed: float | None


class HandoffBench:
    def __init__(self, args: argparse.Namespace) -> None:
        self._args = args
        self._pinning = Pinning(server_cpus=None, load_cpus=None)

    def run(self, redis_url: str) -> Handoff:
        with tempfile.TemporaryDirectory(prefix="peersync-bench-handoff-") as tmp:
            return self._run(redis_url, Path(tmp))

    def _node(self, node_id: str, redis_url: str, cluster: str, root: Path) -> PeersyncServer:
        args = self._args
        return node(
            node_id,
            redis_url=redis_url,
            cluster=cluster,
            store=args.handoff_store,
            root=root,
            pinning=self._pinning,
            extra_args=args.serve_arg,
        )

    def _run(self, redis_url: str, root: Path) -> Handoff:
        args = self._args
        name = cluster_name()
        nodes = [self._node(i, redis_url, name, root) for i in NODES]
        joiner = self._node(JOINER, redis_url, name, root)
        try:
            start_cluster(nodes)
            names = [f"h{i:05d}" for i in range(args.handoff_namespaces)]
            keys = [f"k{i}" for i in range(args.handoff_keys)]
            admin = Admin(nodes[0].base_url)
            try:
                owners = admin.owners(names)
            finally:
                admin.close()
            by_node = {n.base_url: [ns for ns in names if owners[ns] == n.label] for n in nodes}
            print(
                f"handoff ({args.handoff_store}): {', '.join(f'{n.label} pid {n.pid}' for n in nodes)}; "
                f"loading {len(names)} namespaces x {len(keys)} keys, each write to its owner "
                f"({', '.join(f'{n.label} {len(by_node[n.base_url])}' for n in nodes)})",
                flush=True,
            )
            started = time.monotonic()
            asyncio.run(bulk_load(by_node, keys, _LOAD_CONNECTIONS))
            load_s = time.monotonic() - started
            print(
                f"  loaded {len(names) * len(keys):,} keys in {load_s:.1f} s "
                f"({len(names) * len(keys) / load_s:,.0f} replicated writes/s)",
                flush=True,
            )
            wait_settled(nodes)
            copies_before = _copies(nodes)
            runs_before = {label: (p or {}).get("runs", 0) for label, p in rebalances(nodes).items()}

            joiner.spawn()
            joiner.wait_ready()
            assert joiner.spawned_at is not None
            assert joiner.listening_at is not None
            done_at, progress, failed = _wait_handed_over(joiner, {*NODES, JOINER}, names)
            everyone = [*nodes, joiner]
            settled_at = wait_settled(everyone, timeout=_HANDOFF_TIMEOUT, after=runs_before)
            copies_peak = _copies(everyone)
            admin = Admin(joiner.base_url)
            try:
                replicas = admin.ring()["replication"]["replicas"]
            finally:
                admin.close()
            trimmed_at = _wait_copies(everyone, len(names) * replicas)
            copies_after = _copies(everyone)
            lines = [line for line in joiner.rebalances if line.total]
            log_from_spawn = lines[0].seen_at - joiner.spawned_at if lines else None

            admin = Admin(joiner.base_url)
            try:
                mine = [ns for ns, o in admin.owners(names).items() if o == JOINER]
            finally:
                admin.close()
            step = max(1, len(mine) // _SAMPLE)
            sample = mine[::step][:_SAMPLE]
            complete = _read_back(joiner.base_url, sample, keys)
            result = Handoff(
                namespaces=len(names),
                keys=len(keys),
                store=args.handoff_store,
                load_s=load_s,
                from_spawn=done_at - joiner.spawned_at,
                from_listening=done_at - joiner.listening_at,
                startup=joiner.listening_at - joiner.spawned_at,
                log_from_spawn=log_from_spawn,
                rebalance_s=progress.get("duration_s"),
                settled=settled_at - joiner.spawned_at,
                total=progress["total"],
                taken_over=progress["taken_over"],
                failed=failed,
                runs=progress["runs"],
                sampled=len(sample),
                complete=complete,
                copies_before=copies_before,
                copies_peak=copies_peak,
                copies_after=copies_after,
                trimmed=None if trimmed_at is None else trimmed_at - joiner.spawned_at,
            )
            print(
                f"  {JOINER} took over {result.taken_over} of the {result.total} namespaces it owns "
                f"{result.from_spawn:.2f} s after spawn ({result.from_listening:.2f} s after its "
                f"listening line, start-up {result.startup:.2f} s; its own count {result.rebalance_s} s, "
                f"{result.runs} run(s), {result.failed} failed); cluster settled {result.settled:.2f} s "
                f"after spawn; {result.complete} of {result.sampled} sampled namespaces complete "
                f"through {JOINER}; copies {result.copies_before} before, {result.copies_peak} once settled, "
                f"{result.copies_after} at the end"
                + ("" if result.trimmed is None else f" ({result.trimmed:.2f} s after spawn)"),
                flush=True,
            )
            return result
        finally:
            for n in [joiner, *reversed(nodes)]:
                n.stop()


def _wait_handed_over(
    joiner: PeersyncServer, members: set[str], names: Sequence[str]
) -> tuple[float, dict[str, Any], int]:
    """Poll the new node's ring until its rebalance settled everything it owns among ``members``
    (something, unless it owns none of ``names``); the monotonic time that answer arrived, the
    rebalance object, and the most failures seen."""
    admin = Admin(joiner.base_url, timeout=10.0)
    deadline = time.monotonic() + _HANDOFF_TIMEOUT
    failed = 0
    last: dict[str, Any] | None = None
    try:
        while time.monotonic() < deadline:
            sent = time.monotonic()
            try:
                ring = admin.ring()
            except (OSError, http.client.HTTPException, ValueError):
                time.sleep(_POLL_INTERVAL)
                continue
            seen = time.monotonic()
            last = ring.get("rebalance")
            if last is None:
                raise RuntimeError(f"{joiner.label} reports no rebalance: is replication off?")
            failed = max(failed, last["failed"])
            if (
                set(ring["members"]) == members
                and last["state"] == "idle"
                and last["runs"] >= 1
                and last["done"] == last["total"]
                and (last["total"] > 0 or joiner.label not in admin.owners(names).values())
            ):
                return seen, last, failed
            time.sleep(max(0.0, sent + _POLL_INTERVAL - time.monotonic()))
    finally:
        admin.close()
    raise RuntimeError(
        f"{joiner.label} did not settle its namespaces within {_HANDOFF_TIMEOUT}s (last: {last}):\n"
        f"{joiner.log_tail()}"
    )


def _copies(nodes: Sequence[PeersyncServer]) -> int:
    """How many namespace copies (with keys) the nodes hold in all, by their own listings."""
    total = 0
    for n in nodes:
        admin = Admin(n.base_url)
        try:
            cursor = ""
            while True:
                page = admin.get(f"/v1/namespaces?local=true&limit=1000{cursor}")
                total += len(page["namespaces"])
                if not page["next_cursor"]:
                    break
                cursor = "&cursor=" + urllib.parse.quote(page["next_cursor"])
        finally:
            admin.close()
    return total


def _wait_copies(nodes: Sequence[PeersyncServer], expected: int, timeout: float = 60.0) -> float | None:
    """Until the nodes hold ``expected`` copies in all; the monotonic time it was first seen, or
    None if it was not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _copies(nodes) == expected:
            return time.monotonic()
        time.sleep(0.1)
    return None


def _value(namespace: str, key: str) -> str:
    return f"{namespace}/{key}"


async def bulk_load(by_node: Mapping[str, Sequence[str]], keys: Sequence[str], connections: int) -> None:
    """PUT every key of every namespace to the node listed for it (base URL to namespaces), over
    ``connections`` keep-alive connections per node. The connections of a node take the next write
    from one queue, namespace after namespace, so the writes in flight on a node are mostly to one
    namespace and its store replicates them in batches. A failed write is retried a few times."""

    async def load(base_url: str, namespaces: Sequence[str]) -> None:
        url = urllib.parse.urlsplit(base_url)
        host, port = url.hostname or "127.0.0.1", url.port or 80
        work = iter([(ns, k) for ns in namespaces for k in keys])

        async def worker() -> None:
            conn = Connection(host, port)
            try:
                for ns, key in work:
                    body = json.dumps({"value": _value(ns, key)}).encode()
                    request = (
                        f"PUT /v1/namespaces/{ns}/keys/{key} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                    ).encode() + body
                    for attempt in range(5):
                        try:
                            status = await conn.send(request)
                        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
                            conn.close()
                            status, error = 0, repr(exc)
                        else:
                            error = f"status {status}"
                        if 200 <= status < 300:
                            break
                        await asyncio.sleep(0.05 * (attempt + 1))
                    else:
                        raise RuntimeError(f"PUT {ns}/{key} to {base_url} failed 5 times: {error}")
            finally:
                conn.close()

        async with asyncio.TaskGroup() as group:
            for _ in range(connections):
                group.create_task(worker())

    async with asyncio.TaskGroup() as group:
        for base_url, namespaces in by_node.items():
            group.create_task(load(base_url, namespaces))


def _read_back(base_url: str, namespaces: Sequence[str], keys: Sequence[str]) -> int:
    """How many of ``namespaces`` show, through ``base_url``, every key with the value loaded."""
    admin = Admin(base_url, timeout=10.0)
    complete = 0
    try:
        for ns in namespaces:
            status, body = admin.send("GET", f"/v1/namespaces/{ns}/snapshot")
            if status != 200:
                print(f"    {ns}: snapshot answered {status}: {body[:200]!r}", flush=True)
                continue
            values = {e["key"]: e.get("value") for e in json.loads(body)["entries"]}
            wrong = [k for k in keys if values.get(k) != _value(ns, k)]
            if wrong:
                print(f"    {ns}: {len(wrong)} of {len(keys)} keys missing or wrong, e.g. {wrong[:3]}")
            else:
                complete += 1
    finally:
        admin.close()
    return complete


def handoff_table(runs: Sequence[Handoff]) -> str:
    """Min, median and max of each timing over the runs, and the counts of the median run."""
    rows = [["measure", "min", "median", "max"]]

    def row(label: str, values: Sequence[float], fmt: str = "{:.2f}") -> None:
        if values:
            rows.append(
                [label, *(fmt.format(v) for v in (min(values), statistics.median(values), max(values)))]
            )

    row("new node settled what it owns, from spawn (s)", [r.from_spawn for r in runs])
    row("  ... from its listening line (s)", [r.from_listening for r in runs])
    row("  ... its own count of the rebalance run (s)", [r.rebalance_s for r in runs if r.rebalance_s])
    row(
        "  (its 'rebalance finished' log line, from spawn) (s)",
        [r.log_from_spawn for r in runs if r.log_from_spawn],
    )
    row("  (process start-up: spawn to listening line) (s)", [r.startup for r in runs])
    row("every node settled, from spawn (s)", [r.settled for r in runs])
    row("namespaces the new node owns", [r.total for r in runs], "{:.0f}")
    row("  ... taken over from the others", [r.taken_over for r in runs], "{:.0f}")
    row("  ... failed on a run (retried)", [r.failed for r in runs], "{:.0f}")
    row("sampled namespaces complete through the new node", [r.complete for r in runs], "{:.0f}")
    row("  ... of sampled", [r.sampled for r in runs], "{:.0f}")
    row("copies back to namespaces x replicas, from spawn (s)", [r.trimmed for r in runs if r.trimmed])
    row("namespace copies on all nodes before the join", [r.copies_before for r in runs], "{:.0f}")
    row("  ... once every node settled", [r.copies_peak for r in runs], "{:.0f}")
    row("  ... at the end", [r.copies_after for r in runs], "{:.0f}")
    row("bulk load before the join (s)", [r.load_s for r in runs], "{:.1f}")
    return markdown(rows, numeric={1, 2, 3})


def handoff_json(runs: Sequence[Handoff]) -> dict[str, Any]:
    return {"runs": [asdict(r) for r in runs]}
