"""Cluster administration over REST: members, ring, owners, claims and pins, and health."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, delete, get, put
from litestar.params import FromPath, FromQuery

from peersync import Node
from peersync._cluster import Cluster
from peersync._overrides import Override
from store import InvalidArgument, Unavailable

from ._http import _decode, _json, _node, _split


def placement_json(cluster: Cluster, namespace: str) -> dict[str, Any]:
    """Who owns ``namespace`` in this node's view, why, and which members keep its other copies."""
    place = cluster.placement(namespace)
    return {
        "namespace": place.namespace,
        "owner": place.owner,
        "source": place.source,
        "available": place.available,
        "replicas": cluster.replicas_of(namespace, place.owner),
    }


def override_json(entry: Override) -> dict[str, Any]:
    return {
        "namespace": entry.namespace,
        "kind": entry.kind.value,
        "node": entry.node,
        "clock": entry.clock,
        "origin": entry.origin,
    }


class ClaimBody(msgspec.Struct, forbid_unknown_fields=True):
    # The node that becomes the owner; the node receiving the request when omitted.
    node: str | None = None
    force: bool = False


class PinBody(msgspec.Struct, forbid_unknown_fields=True):
    node: str


_claim_decoder = msgspec.json.Decoder(ClaimBody)
_pin_decoder = msgspec.json.Decoder(PinBody)


@get("/v1/cluster/members", summary="Members as this node sees them")
async def members(request: Request[Any, Any, Any]) -> Response[bytes]:
    cluster = _node(request).cluster
    return _json(
        {
            "node": cluster.node_id,
            "members": [
                {
                    "id": view.record.id,
                    "state": view.state.value,
                    "grpc_addr": view.record.grpc_addr,
                    "http_addr": view.record.http_addr,
                    "incarnation": view.record.incarnation,
                }
                for view in cluster.members()
            ],
        }
    )


@get(
    "/v1/cluster/ring",
    summary="Owners of namespaces, the overrides and the ring version",
    description="?namespaces=a,b names namespaces; ?prefix= lists the cluster's namespaces with that prefix.",
)
async def ring(
    request: Request[Any, Any, Any],
    namespaces: FromQuery[list[str] | None] = None,
    prefix: FromQuery[str | None] = None,
) -> Response[bytes]:
    node = _node(request)
    cluster = node.cluster
    names = _split(namespaces)
    limits = node.config.limits
    for name in names:
        limits.namespace(name, "namespaces")
    if len(names) > limits.max_list_limit:
        raise InvalidArgument(f"name at most {limits.max_list_limit} namespaces", field="namespaces")
    if prefix is not None:
        page = await node.service.namespaces(prefix, limit=limits.max_list_limit)
        names = sorted({*names, *(info.name for info in page.namespaces)})
    return _json(
        {
            "node": cluster.node_id,
            "ring_version": cluster.ring_version,
            "members": list(cluster.ring.members),
            "owners": [placement_json(cluster, name) for name in names],
            "overrides": [override_json(e) for e in cluster.overrides.entries() if e.node is not None],
            "replication": {
                "replicas": cluster.options.replicas,
                "replica_acks": cluster.options.required_acks,
            },
            "rebalance": _rebalance(node),
        }
    )


def _rebalance(node: Node) -> dict[str, Any] | None:
    """Progress of this node's last handover after a membership change; None without replication."""
    try:
        return node.replicator.progress()
    except Unavailable:
        return None


@get("/v1/cluster/owner/{ns:str}", summary="Who owns a namespace, and whether by ring, claim or pin")
async def owner(request: Request[Any, Any, Any], ns: FromPath[str]) -> Response[bytes]:
    node = _node(request)
    node.config.limits.namespace(ns)
    return _json(placement_json(node.cluster, ns))


@put(
    "/v1/cluster/claims/{ns:str}",
    summary="Claim a namespace for a node (persistent)",
    description='Body {"node": ID, "force": false}; node defaults to the receiving node. force takes over '
    "a claim held by another node, for example a dead one.",
)
async def put_claim(request: Request[Any, Any, Any], ns: FromPath[str]) -> Response[bytes]:
    node = _node(request)
    node.config.limits.namespace(ns)
    raw = await request.body()
    body: ClaimBody = _decode(_claim_decoder, raw) if raw.strip() else ClaimBody()
    target = body.node or node.cluster.node_id
    entry = await node.cluster.claim_at(target, ns, force=body.force)
    return _json(override_json(entry))


@delete("/v1/cluster/claims/{ns:str}", status_code=200, summary="Remove the claim on a namespace")
async def delete_claim(
    request: Request[Any, Any, Any], ns: FromPath[str], force: FromQuery[bool] = False
) -> Response[bytes]:
    node = _node(request)
    node.config.limits.namespace(ns)
    return _json(override_json(await node.cluster.unclaim_at(ns, force=force)))


@put("/v1/cluster/pins/{ns:str}", summary="Pin a namespace to a node (temporary, not stored)")
async def put_pin(request: Request[Any, Any, Any], ns: FromPath[str]) -> Response[bytes]:
    node = _node(request)
    node.config.limits.namespace(ns)
    body: PinBody = _decode(_pin_decoder, await request.body())
    return _json(override_json(node.cluster.pin(ns, body.node)))


@delete("/v1/cluster/pins/{ns:str}", status_code=200, summary="Remove the pin on a namespace")
async def delete_pin(request: Request[Any, Any, Any], ns: FromPath[str]) -> Response[bytes]:
    node = _node(request)
    node.config.limits.namespace(ns)
    return _json(override_json(node.cluster.unpin(ns)))


@get("/health", summary="Liveness, store, gossip transport and peers")
async def health(request: Request[Any, Any, Any]) -> Response[bytes]:
    node = _node(request)
    try:
        cluster = node.cluster
    except Unavailable as exc:
        return _json({"status": "unavailable", "detail": exc.detail}, 503)
    views = cluster.members()
    return _json(
        {
            "status": "ok",
            "node": cluster.node_id,
            "store": node.config.store if "://" not in node.config.store else "postgresql",
            "gossip": {
                "transport": "redis" if cluster.options.redis_url else "in-process",
                "connected": cluster.gossip.connected,
                "dropped": dict(cluster.gossip.counters),
            },
            "peers": {
                state: sum(1 for v in views if v.state.value == state and v.id != cluster.node_id)
                for state in ("alive", "suspect", "dead", "left")
            },
            "ring_version": cluster.ring_version,
        }
    )


ADMIN_HANDLERS = [members, ring, owner, put_claim, delete_claim, put_pin, delete_pin, health]
