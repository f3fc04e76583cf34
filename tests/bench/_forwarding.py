"""Forwarding: the same GET and PUT load sent to a namespace's owner (direct) and to the other node of
a two-node cluster, which forwards every request to the owner over its gRPC link (forwarded).

Both nodes run on the server CPUs and the load generator on the load CPUs, for direct and forwarded
runs alike. So a forwarded run does two nodes' work on the one core a direct run gives to one: the
ratio measures what forwarding costs in total CPU, not what a second idle core could hide.
"""

from __future__ import annotations

import argparse
import http.client
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from ._cluster import Admin, cluster_name, node, start_cluster
from ._load import LoadGenerator, Workload, children_cpu, preload
from ._profile import Profiler, summarize
from ._report import RouteMeasurement
from ._servers import PeersyncServer, Pinning, core_note, core_ticks, cpu_times, parse_cpus

OWNER, PEER = "a", "b"
# Namespaces tried, in order, until enough are owned by the owner node.
_CANDIDATES = 200


class ForwardingBench:
    """Starts a two-node cluster per store and measures GET then PUT, each direct and forwarded."""

    def __init__(
        self,
        args: argparse.Namespace,
        generator: LoadGenerator,
        pinning: Pinning,
        profiler: Profiler | None,
    ) -> None:
        self._args = args
        self._generator = generator
        self._pinning = pinning
        self._cores = parse_cpus(pinning.server_cpus) if pinning.server_cpus else set()
        # Node b on its own CPUs (--peer-cpu), an experiment: by default it shares the owner's.
        self._peer_pinning = pinning
        if args.peer_cpu and pinning.server_cpus:
            self._peer_pinning = Pinning(server_cpus=args.peer_cpu, load_cpus=pinning.load_cpus)
        # Whether b's CPU time is part of what the server CPUs' ticks show.
        self._peer_on_cores = not self._cores or self._peer_pinning.server_cpus == pinning.server_cpus
        self._profiler = profiler

    def run(self, store: str, redis_url: str, round_no: int) -> list[RouteMeasurement]:
        args = self._args
        name = cluster_name()
        with tempfile.TemporaryDirectory(prefix="peersync-bench-cluster-") as tmp:
            nodes = [
                node(
                    node_id,
                    redis_url=redis_url,
                    cluster=name,
                    store=store,
                    root=Path(tmp),
                    pinning=self._pinning if node_id == OWNER else self._peer_pinning,
                    # Forwarding alone, as before replication existed: with a second copy, b would
                    # hold a's namespaces as their replica and every PUT would also wait for it
                    # (the replication part measures that).
                    extra_args=["--replicas", "1", *args.serve_arg],
                )
                for node_id in (OWNER, PEER)
            ]
            try:
                start_cluster(nodes, settle=False)
                owner, peer = nodes
                print(
                    f"cluster-{store}: {OWNER} on {owner.base_url} (pid {owner.pid}), "
                    f"{PEER} on {peer.base_url} (pid {peer.pid}); CPUs: {OWNER} "
                    f"{self._pinning.server_cpus or 'any'}, {PEER} {self._peer_pinning.server_cpus or 'any'}",
                    flush=True,
                )
                namespaces = _owned_by(owner, peer, args.namespaces)
                keys = [f"k{i}" for i in range(args.keys)]
                paths = tuple(
                    f"/v1/namespaces/{namespaces[i % len(namespaces)]}/keys/{k}" for i, k in enumerate(keys)
                )
                value = "x" * args.value_bytes
                put = Workload(
                    method="PUT",
                    paths=paths,
                    content_type="application/json",
                    body=f'{{"value": "{value}"}}'.encode(),
                )
                get = Workload(method="GET", paths=paths, content_type=None, body=None)
                preload(owner.base_url, put)  # every GET finds its key
                # Alternate which route goes first, so that neither always runs on a warmer node.
                routes = ("direct", "forwarded") if round_no % 2 == 0 else ("forwarded", "direct")
                out = []
                for operation, workload in (("GET", get), ("PUT", put)):
                    for route in routes:
                        out.append(self._measure(store, operation, route, workload, owner, peer))
                _check_not_held(peer, namespaces)
                return out
            finally:
                for n in reversed(nodes):
                    n.stop()

    def _measure(
        self,
        store: str,
        operation: str,
        route: str,
        workload: Workload,
        owner: PeersyncServer,
        peer: PeersyncServer,
    ) -> RouteMeasurement:
        args = self._args
        entry = owner if route == "direct" else peer
        if args.warmup > 0:
            self._generator.run(entry.base_url, workload, args.warmup, args.connections)
        best: RouteMeasurement | None = None
        for attempt in range(args.retries + 1):
            m = self._measure_once(store, operation, route, workload, owner, peer)
            if best is None or (m.core_other or 0) < (best.core_other or 0):
                best = m
            if m.core_other is None or m.core_other <= args.max_other:
                break
            again = "again" if attempt < args.retries else "keeping the least disturbed run"
            print(f"    other processes took {m.core_other:.0%} of the nodes' CPU: {again}", flush=True)
        assert best is not None
        return best

    def _measure_once(
        self,
        store: str,
        operation: str,
        route: str,
        workload: Workload,
        owner: PeersyncServer,
        peer: PeersyncServer,
    ) -> RouteMeasurement:
        args = self._args
        entry = owner if route == "direct" else peer
        spies = []
        if self._profiler is not None:
            # Every node that serves the run: the owner, and the entry node when it forwards.
            for role, server in (("owner-a", owner), ("entry-b", peer)):
                if route == "forwarded" or server is owner:
                    name = f"cluster-{store}-{operation.lower()}-{route}-{role}"
                    spies.append(self._profiler.start(server.pid, name, args.duration))
            time.sleep(0.5)  # py-spy attaches before the load starts
        owner_before, peer_before = cpu_times(owner.pid), cpu_times(peer.pid)
        generator_before = children_cpu()
        ticks_before = core_ticks(self._cores)
        load = self._generator.run(entry.base_url, workload, args.duration, args.connections)
        owner_after, peer_after = cpu_times(owner.pid), cpu_times(peer.pid)
        generator_cpu = children_cpu() - generator_before
        ticks = core_ticks(self._cores) - ticks_before
        owner_system = owner_after[1] - owner_before[1]
        owner_cpu = owner_after[0] - owner_before[0] + owner_system
        peer_system = peer_after[1] - peer_before[1]
        peer_cpu = peer_after[0] - peer_before[0] + peer_system
        on_cores = owner_cpu + (peer_cpu if self._peer_on_cores else 0.0)
        for proc, path in spies:
            Profiler.stop(proc, timeout=args.duration + 30)
            print(summarize(path), flush=True)
        if args.verbose:
            print(load.output, flush=True)
        m = RouteMeasurement(
            operation=operation,
            store=store,
            route=route,
            load=load,
            owner_cpu=owner_cpu,
            owner_system=owner_system,
            peer_cpu=peer_cpu,
            peer_system=peer_system,
            generator_cpu=generator_cpu,
            core_busy=ticks.busy_share(),
            core_other=ticks.other_share(on_cores),
        )
        core = core_note(m.core_busy, m.core_other)
        print(
            f"  {operation} {route:9} ({store}): {load.rps:,.0f} req/s, p50 {load.p50_ms:.2f} ms, "
            f"p99 {load.p99_ms:.2f} ms, CPU µs/req (in the kernel): {OWNER} (owner) {m.owner_us:,.0f} "
            f"({m.owner_system_us:,.0f}), {PEER} {m.peer_us:,.0f} ({m.peer_system_us:,.0f}), "
            f"both {m.total_us:,.0f}; nodes CPU {m.nodes_share:.0%}{core}, "
            f"generator CPU {m.generator_share:.0%}, {load.errors} errors",
            flush=True,
        )
        return m


def _owned_by(owner: PeersyncServer, peer: PeersyncServer, count: int) -> list[str]:
    """``count`` namespaces both nodes agree ``owner`` owns."""
    found: list[str] = []
    on_owner, on_peer = Admin(owner.base_url), Admin(peer.base_url)
    try:
        for i in range(_CANDIDATES):
            ns = f"bench{i}"
            if on_owner.owner(ns) == OWNER and on_peer.owner(ns) == OWNER:
                found.append(ns)
                if len(found) == count:
                    return found
    finally:
        on_owner.close()
        on_peer.close()
    raise RuntimeError(f"only {len(found)} of {_CANDIDATES} namespaces are owned by {OWNER}")


def _check_not_held(peer: PeersyncServer, namespaces: Sequence[str]) -> None:
    """The entry node must hold none of the namespaces, or the forwarded runs were not forwarded."""
    admin = Admin(peer.base_url)
    try:
        held = admin.get("/v1/namespaces?local=true&limit=1000")["namespaces"]
    except (OSError, http.client.HTTPException, json.JSONDecodeError) as exc:
        raise RuntimeError(f"cannot list {PEER}'s own namespaces: {exc}") from exc
    finally:
        admin.close()
    wrong = sorted({n["name"] for n in held} & set(namespaces))
    if wrong:
        raise RuntimeError(f"{PEER} holds {wrong} itself: the forwarded runs were not all forwarded")
