"""Hypothesis drives a whole cluster of Membership tables through time, crashes, restarts,
departures, outages and forged suspicions, delivering every broadcast to every running member the
way a pub/sub channel does, and checks the promises that must hold after every step."""

from __future__ import annotations

from collections import deque

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from peersync._membership import Broadcast, Membership, MembershipOptions, Refute, State
from peersync._messages import Heartbeat, Left, Message, Suspect, new_record

OPTS = MembershipOptions(heartbeat_interval=1.0, suspect_after=3.0, dead_after=2.0, forget_after=10.0)
IDS = ["n0", "n1", "n2", "n3"]
# The longest step of the clock: ticks happen at least this often.
MAX_STEP = 0.5


class Cluster(RuleBasedStateMachine):
    @initialize()
    def boot(self) -> None:
        self.now = 0.0
        self.started = 0
        self.nodes: dict[str, Membership] = {}
        self.last_beat: dict[str, float] = {}
        # Members that stopped without a goodbye, and when they last spoke.
        self.crashed: dict[str, float] = {}
        for member_id in IDS:
            self._start(member_id)

    # -- the network -------------------------------------------------------------------------------

    def _start(self, member_id: str) -> None:
        self.started += 1
        # Each start is a later wall-clock millisecond: a fresh, larger incarnation.
        record = new_record(member_id, f"{member_id}:9090", f"{member_id}:8080", now_ms=1000 * self.started)
        node = Membership(record, OPTS, now=self.now)
        # A starting member reads the registry: the latest heartbeat of every running member.
        for other in self.nodes.values():
            self._deliver(
                self._publish(member_id, node.on_heartbeat(Heartbeat(other.local, "", 0), self.now))
            )
        self.nodes[member_id] = node
        self.crashed.pop(member_id, None)
        self._heartbeat(member_id)

    def _heartbeat(self, member_id: str) -> None:
        self.last_beat[member_id] = self.now
        self._deliver([Heartbeat(self.nodes[member_id].local, "", 0)])

    def _deliver(self, messages: list[Message]) -> None:
        """Every running member hears every message, its sender included, in publication order."""
        queue = deque(messages)
        while queue:
            msg = queue.popleft()
            for member_id, node in list(self.nodes.items()):
                before_ids, before_version = node.alive_ids(), node.version
                before_incarnation = node.local.incarnation
                if isinstance(msg, Heartbeat):
                    out = node.on_heartbeat(msg, self.now)
                elif isinstance(msg, Suspect):
                    out = node.on_suspect(msg, self.now)
                else:
                    out = node.on_left(msg, self.now)
                self._check_transition(node, before_ids, before_version)
                if isinstance(msg, Suspect) and msg.target_id == member_id:
                    # Refutation always raises the incarnation above the suspected one.
                    if msg.incarnation >= before_incarnation:
                        assert node.local.incarnation > msg.incarnation
                        assert out == [Refute(node.local)]
                    else:
                        assert node.local.incarnation == before_incarnation
                queue.extend(self._publish(member_id, out))

    def _publish(self, member_id: str, out: list[Broadcast]) -> list[Message]:
        published: list[Message] = []
        for broadcast in out:
            if isinstance(broadcast, Refute):
                self.last_beat[member_id] = self.now
                published.append(Heartbeat(broadcast.member, "", 0))
            else:
                published.append(broadcast)
        return published

    @staticmethod
    def _check_transition(node: Membership, before_ids: list[str], before_version: int) -> None:
        if node.alive_ids() != before_ids:
            assert node.version > before_version

    # -- what happens ------------------------------------------------------------------------------

    @rule(step=st.floats(min_value=0.0, max_value=MAX_STEP))
    def time_passes(self, step: float) -> None:
        self.now += step
        for member_id in list(self.nodes):
            if self.now - self.last_beat[member_id] >= OPTS.heartbeat_interval:
                self._heartbeat(member_id)
        for member_id, node in list(self.nodes.items()):
            before_ids, before_version = node.alive_ids(), node.version
            out = node.tick(self.now)
            self._check_transition(node, before_ids, before_version)
            # Silence is suspected only where there is silence: never a member that heartbeats.
            assert not [b for b in out if isinstance(b, Suspect) and b.target_id in self.nodes], out
            self._deliver(self._publish(member_id, out))

    @precondition(lambda self: len(self.nodes) > 2)
    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        member_id = data.draw(st.sampled_from(sorted(self.nodes)))
        del self.nodes[member_id]
        self.crashed[member_id] = self.last_beat[member_id]

    @precondition(lambda self: len(self.nodes) > 2)
    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        member_id = data.draw(st.sampled_from(sorted(self.nodes)))
        node = self.nodes.pop(member_id)
        self._deliver([Left(node.local)])
        for other in self.nodes.values():
            assert other.get(member_id) is not None
            assert member_id not in other.alive_ids()

    @precondition(lambda self: len(self.nodes) < len(IDS))
    @rule(data=st.data())
    def restart(self, data: st.DataObject) -> None:
        self._start(data.draw(st.sampled_from(sorted(set(IDS) - set(self.nodes)))))

    @rule(data=st.data(), delta=st.integers(min_value=-2, max_value=2))
    def someone_suspects(self, data: st.DataObject, delta: int) -> None:
        """Any suspicion, true or false, current, stale or about a future incarnation."""
        target = data.draw(st.sampled_from(IDS))
        sender = data.draw(st.sampled_from(IDS))
        base = self.nodes[target].local.incarnation if target in self.nodes else 1000 * self.started
        self._deliver([Suspect(target, max(0, base + delta), sender)])

    @rule(duration=st.floats(min_value=0.0, max_value=3 * OPTS.failure_bound))
    def transport_outage(self, duration: float) -> None:
        """Nobody hears anybody for a while; then everybody resyncs."""
        for node in self.nodes.values():
            node.freeze()
        end = self.now + duration
        while self.now < end:
            self.now = min(end, self.now + MAX_STEP)
            for node in self.nodes.values():
                assert node.tick(self.now) == []
        for member_id, node in list(self.nodes.items()):
            self._deliver(self._publish(member_id, node.thaw(self.now)))
        # Thawing restarts every timer: the crashed are detected again, from now.
        for member_id in self.crashed:
            self.crashed[member_id] = self.now

    # -- what must hold ----------------------------------------------------------------------------

    @invariant()
    def everyone_sees_itself_alive(self) -> None:
        for member_id, node in self.nodes.items():
            view = node.get(member_id)
            assert view is not None
            assert view.state is State.ALIVE
            assert member_id in node.alive_ids()

    @invariant()
    def no_running_member_is_declared_gone(self) -> None:
        for node in self.nodes.values():
            for member_id in self.nodes:
                assert member_id in node.alive_ids(), (member_id, node.get(member_id))

    @invariant()
    def a_crashed_member_is_dead_within_the_bound(self) -> None:
        # Each of the two timers fires at the first tick after its deadline.
        bound = OPTS.failure_bound + 2 * MAX_STEP
        for member_id, last_beat in self.crashed.items():
            if self.now - last_beat > bound:
                for node in self.nodes.values():
                    view = node.get(member_id)
                    assert view is None or view.state in (State.DEAD, State.LEFT), view


TestCluster = Cluster.TestCase
TestCluster.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
