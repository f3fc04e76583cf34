"""Chaos: four node processes killed with SIGKILL and restarted (same id, same data) over and over
while clients write and compare-and-set through whichever nodes are up and a watcher follows one
namespace across the failovers. At the end nothing acknowledged is missing, no increment is lost or
doubled, and the watcher saw the namespace's log exactly as it is."""

from __future__ import annotations

import asyncio
import json
import random
import re
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import httpx
import pytest

from tests.support import Attempt, attempt, eventually, sse_messages

from .conftest import Harness
from .test_failover import (
    DEATH_BOUND,
    ENV,
    HEARTBEAT_INTERVAL,
    REBALANCE_BOUND,
    RECOVERY_BOUND,
    REQUEST_BOUND,
)
from .test_failover import FLAGS as FAILOVER_FLAGS

pytestmark = pytest.mark.slow

WATCH_HEARTBEAT_INTERVAL = 1.0
# The failover tests' timings and bounds, and a watch heartbeat short enough to notice a dead node.
FLAGS = (*FAILOVER_FLAGS, "--watch-heartbeat-interval", str(WATCH_HEARTBEAT_INTERVAL))

NODES = ("a", "b", "c", "d")
NAMESPACES = [f"chaos{i}" for i in range(20)]
WATCHED = NAMESPACES[0]
CYCLES = 4
# Writes on the whole cluster between two kills, and while a killed node is down.
CALM = 1.5
DOWN = 1.0


@dataclass
class Ledger:
    """What the clients were told."""

    sets_attempted: set[tuple[str, str]] = field(default_factory=set)
    sets_acked: dict[tuple[str, str], int] = field(default_factory=dict)
    increments_acked: dict[str, list[int]] = field(default_factory=dict)
    increments_in_doubt: dict[str, list[int]] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)

    def tally(self, kind: str, answer: Attempt) -> None:
        self.outcomes[f"{kind} {answer.status or answer.error} {answer.reason or ''}".strip()] += 1


@dataclass
class Watcher:
    """A client following ``WATCHED`` over SSE, resuming on another node after any disconnect."""

    events: list[dict[str, Any]] = field(default_factory=list)
    last_id: str | None = None
    node: str | None = None
    connections: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    @property
    def revision(self) -> int:
        return int(self.events[-1]["revision"]) if self.events else 0


def event_view(data: dict[str, Any]) -> tuple[Any, ...]:
    entry = data.get("entry") or {}
    return (data["revision"], data["type"], data["key"], entry.get("value"), entry.get("version"))


@pytest.mark.timeout(180)
async def test_chaos_kill_and_restart_lose_nothing_acknowledged(harness: Harness) -> None:
    started = time.monotonic()
    harness.env.update(ENV)
    await asyncio.gather(*(asyncio.to_thread(harness.start, n, *FLAGS) for n in NODES))
    await eventually(lambda: all(harness.alive_view(n) == set(NODES) for n in NODES), timeout=5)

    rng = random.Random(44)
    alive = set(NODES)
    ledger = Ledger()
    watcher = Watcher()
    problems: list[str] = []
    timeline: list[str] = []
    stop = asyncio.Event()

    def now() -> str:
        return f"{time.monotonic() - started:5.1f}s"

    def pick() -> str:
        return rng.choice(sorted(alive))

    async with httpx.AsyncClient(timeout=REQUEST_BOUND + 2) as client:

        def keys_url(node: str, ns: str, key: str) -> str:
            return f"{harness.url(node)}/v1/namespaces/{ns}/keys/{key}"

        async def setter(w: int) -> None:
            # Every write has a key of its own: an acknowledged one must be there with its value.
            i = 0
            while not stop.is_set():
                node, ns, key = pick(), rng.choice(NAMESPACES), f"s{w}/{i}"
                ledger.sets_attempted.add((ns, key))
                answer = await attempt(client, node, "PUT", keys_url(node, ns, key), json={"value": i})
                ledger.tally("set", answer)
                if answer.ok:
                    ledger.sets_acked[ns, key] = i
                i += 1
                await asyncio.sleep(0.01)

        async def incrementer() -> None:
            while not stop.is_set():
                ns = WATCHED if rng.random() < 0.3 else rng.choice(NAMESPACES)
                node = pick()
                read = await attempt(client, node, "GET", keys_url(node, ns, "counter"))
                if read.ok:
                    value, version = read.body["value"], read.body["version"]
                elif read.status == 404:
                    value, version = 0, 0
                else:
                    ledger.tally("read", read)
                    await asyncio.sleep(0.05)
                    continue
                node = pick()
                body = {"value": value + 1, "if_version": version}
                answer = await attempt(client, node, "PUT", keys_url(node, ns, "counter"), json=body)
                ledger.tally("cas", answer)
                if answer.ok:
                    ledger.increments_acked.setdefault(ns, []).append(value + 1)
                elif answer.in_doubt:
                    ledger.increments_in_doubt.setdefault(ns, []).append(value + 1)
                await asyncio.sleep(0.01)

        async def follow() -> None:
            while True:
                choices = sorted(alive - {watcher.node or ""}) or sorted(alive)
                watcher.node = node = rng.choice(choices)
                params: dict[str, Any] = {"namespaces": WATCHED}
                headers = {}
                if watcher.last_id is None:
                    params["after"] = 0
                else:
                    headers["Last-Event-ID"] = watcher.last_id
                # A stream that carries not even a heartbeat for three intervals is dead.
                timeout = httpx.Timeout(REQUEST_BOUND, read=3 * WATCH_HEARTBEAT_INTERVAL)
                try:
                    async with client.stream(
                        "GET",
                        f"{harness.url(node)}/v1/watch",
                        params=params,
                        headers=headers,
                        timeout=timeout,
                    ) as response:
                        watcher.connections[f"{node} {response.status_code}"] += 1
                        if response.status_code != 200:
                            await asyncio.sleep(0.1)
                            continue
                        async for message in sse_messages(response):
                            if message.event is None:
                                continue
                            data = json.loads(message.data)
                            if message.event == "compacted":
                                watcher.problems.append(f"compacted at {watcher.revision} on {node}: {data}")
                                return
                            if data["revision"] <= watcher.revision:
                                watcher.problems.append(
                                    f"revision {data['revision']} after {watcher.revision}, on {node} "
                                    f"resumed from {headers.get('Last-Event-ID')}: {data}"
                                )
                            watcher.events.append(data)
                            watcher.last_id = message.id
                except httpx.HTTPError as exc:
                    watcher.connections[f"{node} {type(exc).__name__}"] += 1
                    await asyncio.sleep(0.05)

        async def settled() -> None:
            async def quiet() -> bool:
                for node in sorted(alive):
                    try:
                        ring = await harness.aget(client, node, "/v1/cluster/ring")
                    except httpx.HTTPError:
                        return False
                    if set(ring["members"]) != set(NODES):
                        return False
                    progress = ring.get("rebalance")
                    if progress is not None and progress["state"] != "idle":
                        return False
                return True

            try:
                # Twice, a couple of heartbeats apart: a rebalance may start a little after the
                # membership change that causes it.
                await eventually(quiet, REBALANCE_BOUND, interval=0.1)
                await asyncio.sleep(2 * HEARTBEAT_INTERVAL)
                await eventually(quiet, REBALANCE_BOUND, interval=0.1)
            except AssertionError:
                problems.append(f"{now()} not settled within {REBALANCE_BOUND}s")

        tasks = [asyncio.create_task(setter(w)) for w in range(3)]
        tasks += [asyncio.create_task(incrementer()) for _ in range(3)]
        following = asyncio.create_task(follow())
        try:
            for cycle in range(CYCLES):
                await asyncio.sleep(CALM)
                if cycle == 0:
                    victim = (await harness.aget(client, "a", f"/v1/cluster/owner/{WATCHED}"))["owner"]
                elif cycle == 1 and watcher.node is not None:
                    victim = watcher.node
                else:
                    victim = rng.choice(NODES)
                alive.discard(victim)
                harness.nodes[victim].signal(signal.SIGKILL)
                await asyncio.to_thread(harness.nodes[victim].wait, 10)
                timeline.append(f"{now()} cycle {cycle}: killed {victim}")
                if cycle % 2 == 0:
                    # Down until everyone declares it dead and its namespaces move.
                    async def dead(victim: str = victim) -> bool:
                        try:
                            states = [await harness.astates(client, n) for n in sorted(alive)]
                        except httpx.HTTPError:
                            return False
                        return all(s.get(victim) == "dead" for s in states)

                    try:
                        await eventually(dead, DEATH_BOUND)
                        timeline.append(f"{now()} cycle {cycle}: {victim} dead everywhere")
                    except AssertionError:
                        problems.append(f"{now()} {victim} not declared dead within {DEATH_BOUND}s")
                    await asyncio.sleep(DOWN)
                await asyncio.to_thread(harness.restart, victim)
                alive.add(victim)
                timeline.append(f"{now()} cycle {cycle}: restarted {victim}")
                await settled()
                timeline.append(f"{now()} cycle {cycle}: settled")
            await asyncio.sleep(CALM)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        timeline.append(f"{now()} writers stopped")
        await settled()

        # Final state, through every node.
        problems += await harness.missing(client, NODES, ledger.sets_acked, RECOVERY_BOUND)
        final: dict[str, dict[str, Any]] = {}
        for ns in NAMESPACES:
            got = await harness.snapshot(client, rng.choice(NODES), ns)
            if not got.ok:
                problems.append(f"snapshot of {ns}: {got}")
                continue
            final[ns] = got.body
            keys = {e["key"] for e in got.body["entries"]}
            phantom = keys - {k for n, k in ledger.sets_attempted if n == ns} - {"counter"}
            if phantom:
                problems.append(f"{ns} holds keys nobody wrote: {sorted(phantom)[:5]}")
            counter = next((e for e in got.body["entries"] if e["key"] == "counter"), None)
            final_value = counter["value"] if counter else 0
            acked = ledger.increments_acked.get(ns, [])
            in_doubt = ledger.increments_in_doubt.get(ns, [])
            if counter is not None and counter["version"] != counter["value"]:
                problems.append(f"{ns} counter {counter['value']} at version {counter['version']}")
            if len(set(acked)) != len(acked):
                doubled = sorted(v for v, n in Counter(acked).items() if n > 1)
                problems.append(
                    f"{ns}: {len(doubled)} increments acknowledged more than once, e.g. to {doubled[:10]}"
                )
            if not len(acked) <= final_value <= len(acked) + len(in_doubt):
                problems.append(
                    f"{ns}: counter {final_value} after {len(acked)} acknowledged and {len(in_doubt)} "
                    "in-doubt increments"
                )
            if acked and max(acked) > final_value:
                problems.append(f"{ns}: counter {final_value} below the acknowledged {max(acked)}")

        # The watcher catches up with the final revision, then the whole log is read again.
        final_revision = int(final.get(WATCHED, {}).get("revision", 0))
        try:
            await eventually(lambda: watcher.revision >= final_revision, RECOVERY_BOUND)
        except AssertionError:
            problems.append(
                f"the watcher stayed at revision {watcher.revision} of {final_revision} "
                f"(connected to {watcher.node})"
            )
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
        problems += watcher.problems

        log, incomplete = await replay(
            harness, client, {ns: int(body["revision"]) for ns, body in final.items()}
        )
        if incomplete:
            problems.append(f"replaying the logs from revision 0 did not reach the end of {incomplete}")
        problems += check_log(log, final, ledger)
        counted = [
            e["entry"]["value"] for e in watcher.events if e["key"] == "counter" and e["type"] == "set"
        ]
        final_counter = [
            e["value"] for e in final.get(WATCHED, {}).get("entries", []) if e["key"] == "counter"
        ]
        wanted = list(range(1, final_counter[0] + 1)) if final_counter else []
        if counted != wanted:
            at = next((i for i, (c, w) in enumerate(zip(counted, wanted, strict=False)) if c != w), None)
            at = min(len(counted), len(wanted)) if at is None else at
            problems.append(
                f"the watcher saw {len(counted)} values of the counter of {WATCHED}, which ends at "
                f"{final_counter}; from position {at} on it saw {counted[at : at + 5]}"
            )
        seen = [event_view(e) for e in watcher.events]
        expected = [event_view(e) for e in log.get(WATCHED, [])]
        if seen != expected:
            first = next((i for i, (s, e) in enumerate(zip(seen, expected, strict=False)) if s != e), None)
            at = min(len(seen), len(expected)) if first is None else first
            problems.append(
                f"the watcher saw {len(seen)} events, the log of {WATCHED} holds {len(expected)}; "
                f"first difference at {at}: saw {seen[at : at + 3]}, log {expected[at : at + 3]}"
            )

    print("\n".join(timeline))
    print(f"outcomes: {dict(sorted(ledger.outcomes.items()))}")
    print(f"sets: {len(ledger.sets_acked)} acknowledged of {len(ledger.sets_attempted)}")
    print(
        f"increments: {sum(map(len, ledger.increments_acked.values()))} acknowledged, "
        f"{sum(map(len, ledger.increments_in_doubt.values()))} in doubt"
    )
    print(f"watcher: {len(watcher.events)} events; connections {dict(watcher.connections)}")
    print(f"took {time.monotonic() - started:.1f}s")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(digest(problems))


def digest(problems: list[str], per_kind: int = 6) -> list[str]:
    """The first few problems of each kind (lines alike but for node, namespace and numbers)."""
    kinds: dict[str, list[str]] = {}
    for line in problems:
        kinds.setdefault(re.sub(r"\b(chaos\d+|[a-d])\b|\d+", "#", line)[:40], []).append(line)
    out = []
    for lines in kinds.values():
        out += lines[:per_kind]
        if len(lines) > per_kind:
            out.append(f"... and {len(lines) - per_kind} more like it")
    return out


async def replay(
    h: Harness, client: httpx.AsyncClient, revisions: dict[str, int]
) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Every event of the namespaces from the start of their logs up to ``revisions``, by namespace,
    and the namespaces whose replay did not get that far within the bound."""
    log: dict[str, list[dict[str, Any]]] = {ns: [] for ns in revisions}
    pending = {ns for ns, revision in revisions.items() if revision > 0}
    deadline = time.monotonic() + RECOVERY_BOUND
    last_id: str | None = None
    while pending and time.monotonic() < deadline:
        params: dict[str, Any] = {"namespaces": ",".join(sorted(revisions))}
        headers = {"Last-Event-ID": last_id} if last_id else {}
        if last_id is None:
            params["after"] = 0
        try:
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                async with client.stream(
                    "GET", f"{h.url(random.choice(NODES))}/v1/watch", params=params, headers=headers
                ) as response:
                    if response.status_code != 200:
                        await asyncio.sleep(0.2)
                        continue
                    async for message in sse_messages(response):
                        if message.event is None:
                            continue
                        data = json.loads(message.data)
                        ns = data["namespace"]
                        log[ns].append(data)
                        last_id = message.id
                        if data["revision"] >= revisions[ns]:
                            pending.discard(ns)
                        if not pending:
                            break
        except (httpx.HTTPError, TimeoutError):
            await asyncio.sleep(0.2)
    return log, sorted(pending)


def check_log(
    log: dict[str, list[dict[str, Any]]], final: dict[str, dict[str, Any]], ledger: Ledger
) -> list[str]:
    """Revisions strictly increase, the counter went 1, 2, ... F, and every acknowledged set is there."""
    problems = []
    for ns, events in sorted(log.items()):
        revisions = [e["revision"] for e in events]
        if any(later <= earlier for earlier, later in pairwise(revisions)):
            problems.append(f"{ns}: revisions of the log do not strictly increase: {revisions[:50]}")
        if revisions and revisions[-1] != int(final[ns]["revision"]):
            problems.append(
                f"{ns}: the log ends at {revisions[-1]}, the snapshot is at {final[ns]['revision']}"
            )
        counted = [e["entry"]["value"] for e in events if e["key"] == "counter" and e["type"] == "set"]
        if counted != list(range(1, len(counted) + 1)):
            problems.append(f"{ns}: counter values in the log are not 1, 2, ...: {counted[:60]}")
        final_counter = [e["value"] for e in final[ns]["entries"] if e["key"] == "counter"]
        if counted[-1:] != final_counter:
            problems.append(
                f"{ns}: the log's counter ends at {counted[-1:]}, the snapshot's is {final_counter}"
            )
        written = {e["key"]: e["entry"]["value"] for e in events if e["type"] == "set"}
        lost = sorted(
            key for (n, key), value in ledger.sets_acked.items() if n == ns and written.get(key) != value
        )
        if lost:
            problems.append(f"{ns}: {len(lost)} acknowledged sets not in the log, e.g. {lost[:5]}")
    return problems
