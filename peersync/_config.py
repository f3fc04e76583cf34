"""Node configuration: addresses, storage and limits, validated once at start."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from store import StoreOptions

from ._address import Address
from ._cluster import ClusterOptions
from ._limits import Limits


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    http_addr: Address = Address("127.0.0.1", 8080)  # noqa: RUF009 - a frozen value
    grpc_addr: Address = Address("127.0.0.1", 9090)  # noqa: RUF009 - a frozen value
    # Where the SQLite store lives (ignored by the memory and PostgreSQL stores).
    data_dir: Path = Path("peersync-data")
    # "memory" (nothing survives a restart), "sqlite" (a file in data_dir), or a PostgreSQL URL.
    store: str = "sqlite"
    # SQLite synchronous mode: "full" survives power loss, "normal" only a crash of the process
    # (and is faster on slow disks). Either way an acknowledged write survives kill -9.
    sqlite_sync: str = "full"
    # Where claims are kept: "sqlite" (a file in data_dir, the default), "memory" (the default with
    # the memory store: claims do not survive a restart), or a postgresql:// URL the cluster shares.
    ownership_store: str | None = None
    cluster: ClusterOptions = field(default_factory=ClusterOptions)
    limits: Limits = field(default_factory=Limits)
    store_options: StoreOptions = field(default_factory=StoreOptions)
    # Seconds between SSE/stream heartbeats on an idle watch; bounds how long a dead client
    # holds a watch open.
    watch_heartbeat_interval: float = 15.0
    # Reconnect delay suggested to SSE clients, in seconds.
    sse_retry: float = 2.0
    # Serve on non-loopback addresses without authentication. Off by default, as Redis'
    # protected mode: anyone who can reach the port could read and write everything.
    allow_insecure_bind: bool = False

    def __post_init__(self) -> None:
        if not (
            self.store in ("memory", "sqlite") or self.store.startswith(("postgresql://", "postgres://"))
        ):
            raise ValueError(f"store must be memory, sqlite or a postgresql:// URL, not {self.store!r}")
        own = self.ownership_store
        if own is not None and not (
            own in ("memory", "sqlite") or own.startswith(("postgresql://", "postgres://"))
        ):
            raise ValueError(f"ownership store must be memory, sqlite or a postgresql:// URL, not {own!r}")
        if self.sqlite_sync not in ("full", "normal"):
            raise ValueError("sqlite_sync must be full or normal")
        if self.watch_heartbeat_interval <= 0 or self.sse_retry <= 0:
            raise ValueError("watch_heartbeat_interval and sse_retry must be positive")
        exposed = [str(a) for a in (self.http_addr, self.grpc_addr) if not a.is_loopback]
        if exposed and not self.allow_insecure_bind:
            raise ValueError(
                f"refusing to listen on {', '.join(exposed)}: peersync has no authentication configured, "
                "so anyone who can reach that address could read and change every key. Listen on a "
                "loopback address, or pass --allow-insecure-bind (PEERSYNC_ALLOW_INSECURE_BIND=1) if "
                "the network itself is trusted."
            )
