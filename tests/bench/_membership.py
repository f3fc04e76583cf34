"""Membership timings on a real cluster: how long until every member lists a new node alive, and a
killed node dead.

One cluster serves every trial. It starts with ``members - 1`` nodes; each trial then

1. starts a node under a new id and times until every other running node lists it ``alive``, both
   from the process's spawn and from its "peersync listening" line;
2. waits until all ``members`` nodes agree, then ``kill -9``s the longest-running node and times
   until every survivor lists it ``dead`` (and, on the way, ``suspect``).

The survivors carry on into the next trial, so each trial costs one node start, not a cluster's. A
new id per trial makes every join a first join: a restarted id would be a known member coming back,
which the others may treat differently.

Each observer is a thread polling one node's ``/v1/cluster/members`` every ``poll_interval`` over a
keep-alive connection. A state counts from the moment the answer showing it arrived, so a time is
late by up to one poll interval plus one request's latency.
"""

from __future__ import annotations

import argparse
import http.client
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._cluster import Admin, cluster_name, node, wait_converged
from ._report import markdown
from ._servers import PeersyncServer, Pinning

# Seconds an observer waits for a state before the trial fails.
_WATCH_TIMEOUT = 30.0


@dataclass(frozen=True, kw_only=True)
class Trial:
    joined: str  # id of the node started in this trial
    # Seconds from spawn / from its listening line until the first and until the last observer
    # listed the new node alive. From the listening line may be negative: the node joins the
    # cluster before its HTTP server is up and logs that line.
    join_first_from_spawn: float
    join_all_from_spawn: float
    join_all_from_listening: float
    # ... from its "gossip subscribed" log line, when it logs one: the join itself, without start-up.
    join_all_from_subscribed: float | None
    startup: float  # seconds from spawn to the listening line
    killed: str  # id of the node killed in this trial
    # Seconds from SIGKILL until the first / every survivor listed it suspect, and dead.
    suspect_all: float
    dead_first: float
    dead_all: float


@dataclass
class _Watch:
    """A thread polling one node's member list until ``target`` reaches ``until``."""

    name: str
    base_url: str
    target: str
    until: str
    interval: float
    # Monotonic time each state of ``target`` was first seen in.
    first_seen: dict[str, float] = field(default_factory=dict)
    polls: int = 0
    error: str | None = None

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"watch-{self.name}", daemon=True)
        self._ready = threading.Event()

    def start(self) -> None:
        """Start polling; returns after the first answer, so that the clock starts on a live watch."""
        self._thread.start()
        if not self._ready.wait(_WATCH_TIMEOUT):
            raise RuntimeError(f"{self.name} never answered /v1/cluster/members")

    def _run(self) -> None:
        admin = Admin(self.base_url, timeout=2.0)
        deadline = time.monotonic() + _WATCH_TIMEOUT
        try:
            while time.monotonic() < deadline:
                sent = time.monotonic()
                try:
                    states = admin.states()
                except (OSError, http.client.HTTPException, ValueError) as exc:
                    self.error = repr(exc)
                    time.sleep(self.interval)
                    continue
                seen = time.monotonic()
                self.polls += 1
                self._ready.set()
                state = states.get(self.target)
                if state is not None and state not in self.first_seen:
                    self.first_seen[state] = seen
                if self.until in self.first_seen:
                    return
                time.sleep(max(0.0, sent + self.interval - time.monotonic()))
            self.error = f"{self.target} not {self.until} within {_WATCH_TIMEOUT}s (last error: {self.error})"
        finally:
            self._ready.set()
            admin.close()

    def wait(self) -> float:
        """Monotonic time ``target`` was first seen in state ``until``."""
        self._thread.join(_WATCH_TIMEOUT + 5)
        if self.until not in self.first_seen:
            raise RuntimeError(f"watch on {self.name}: {self.error or 'no answer'}")
        return self.first_seen[self.until]


def _watch_all(observers: Sequence[PeersyncServer], target: str, until: str, interval: float) -> list[_Watch]:
    watches = [_Watch(o.label, o.base_url, target, until, interval) for o in observers]
    for w in watches:
        w.start()
    return watches


class MembershipBench:
    def __init__(self, args: argparse.Namespace, pinning: Pinning) -> None:
        self._args = args
        self._pinning = pinning
        self._random = random.Random(args.seed)

    def run(self, redis_url: str) -> list[Trial]:
        with tempfile.TemporaryDirectory(prefix="peersync-bench-members-") as tmp:
            return self._run(redis_url, Path(tmp))

    def _run(self, redis_url: str, root: Path) -> list[Trial]:
        args = self._args
        name = cluster_name()
        serial = 0
        running: list[PeersyncServer] = []
        everyone: list[PeersyncServer] = []

        def new_node() -> PeersyncServer:
            nonlocal serial
            serial += 1
            n = node(
                f"n{serial}",
                redis_url=redis_url,
                cluster=name,
                store=args.membership_store,
                root=root,
                pinning=self._pinning,
                extra_args=args.serve_arg,
            )
            everyone.append(n)
            return n

        trials: list[Trial] = []
        try:
            for _ in range(args.members - 1):
                n = new_node()
                n.spawn()
                running.append(n)
            for n in running:
                n.wait_ready()
            wait_converged(running)
            print(
                f"membership: {len(running)} nodes up ({', '.join(n.label for n in running)}), "
                f"{args.trials} trials of join + kill -9 with {args.members} nodes, "
                f"polling every {args.poll_interval * 1000:g} ms",
                flush=True,
            )
            for t in range(args.trials):
                trial = self._trial(running, new_node)
                trials.append(trial)
                print(
                    f"  trial {t + 1}: {trial.joined} alive on all {trial.join_all_from_spawn:.3f} s "
                    f"after spawn ({trial.join_all_from_listening:+.3f} s after its listening line, "
                    f"start-up {trial.startup:.3f} s); {trial.killed} dead on all "
                    f"{trial.dead_all:.3f} s after kill -9 (suspect on all {trial.suspect_all:.3f} s)",
                    flush=True,
                )
        finally:
            for n in everyone:
                n.stop()
        return trials

    def _trial(self, running: list[PeersyncServer], new_node: Callable[[], PeersyncServer]) -> Trial:
        args = self._args
        # A random phase against the heartbeat timers, so that trials sample it instead of
        # repeating one alignment.
        time.sleep(self._random.uniform(0.0, 0.5))
        joining = new_node()
        watches = _watch_all(running, joining.label, "alive", args.poll_interval)
        joining.spawn()
        joining.wait_ready()
        seen = [w.wait() for w in watches]
        assert joining.spawned_at is not None
        assert joining.listening_at is not None
        running.append(joining)
        wait_converged(running)

        time.sleep(0.5 + self._random.uniform(0.0, 0.5))
        victim = running.pop(0)
        watches = _watch_all(running, victim.label, "dead", args.poll_interval)
        killed_at = victim.kill()
        dead = [w.wait() for w in watches]
        suspect = [w.first_seen.get("suspect", w.first_seen["dead"]) for w in watches]
        return Trial(
            joined=joining.label,
            join_first_from_spawn=min(seen) - joining.spawned_at,
            join_all_from_spawn=max(seen) - joining.spawned_at,
            join_all_from_listening=max(seen) - joining.listening_at,
            join_all_from_subscribed=(
                max(seen) - joining.subscribed_at if joining.subscribed_at is not None else None
            ),
            startup=joining.listening_at - joining.spawned_at,
            killed=victim.label,
            suspect_all=max(suspect) - killed_at,
            dead_first=min(dead) - killed_at,
            dead_all=max(dead) - killed_at,
        )


@dataclass(frozen=True)
class Summary:
    name: str
    values: tuple[float, ...]

    @property
    def p90(self) -> float:
        """Nearest rank: the smallest value at least 90% of the trials are at or below."""
        ordered = sorted(self.values)
        return ordered[max(0, -(-len(ordered) * 9 // 10) - 1)]

    @property
    def median(self) -> float:
        return statistics.median(self.values)


def summaries(trials: Sequence[Trial]) -> list[Summary]:
    def pick(name: str, attr: str) -> Summary:
        return Summary(name, tuple(v for t in trials if (v := getattr(t, attr)) is not None))

    out = [
        pick("new node alive on all others, from spawn", "join_all_from_spawn"),
        pick("new node alive on all others, from its listening line", "join_all_from_listening"),
        pick("new node alive on all others, from its gossip-subscribed line", "join_all_from_subscribed"),
        pick("(new node alive on the first other, from spawn)", "join_first_from_spawn"),
        pick("(process start-up: spawn to listening line)", "startup"),
        pick("killed node dead on all survivors, from kill -9", "dead_all"),
        pick("(killed node dead on the first survivor)", "dead_first"),
        pick("(killed node suspect on all survivors)", "suspect_all"),
    ]
    return [s for s in out if s.values]


def membership_table(trials: Sequence[Trial]) -> str:
    """Min, median, p90 and max of each timing over the trials, as a Markdown table."""
    rows = [["measure (seconds)", "min", "median", "p90", "max"]]
    for s in summaries(trials):
        rows.append([s.name, *(f"{v:.3f}" for v in (min(s.values), s.median, s.p90, max(s.values)))])
    return markdown(rows, numeric={1, 2, 3, 4})


def membership_json(trials: Sequence[Trial]) -> dict[str, Any]:
    return {
        "summary": [
            {
                "measure": s.name,
                "min": min(s.values),
                "median": s.median,
                "p90": s.p90,
                "max": max(s.values),
            }
            for s in summaries(trials)
        ],
        "trials": [asdict(t) for t in trials],
    }
