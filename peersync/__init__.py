"""The peersync node: configuration, the service layer every API calls, and the CLI."""

from ._address import Address
from ._cluster import Cluster, ClusterOptions, Placement
from ._codecs import Codec, codec_for
from ._config import NodeConfig
from ._cursors import decode_positions, encode_positions
from ._diff import Diff
from ._limits import Limits
from ._membership import MembershipOptions
from ._node import Node
from ._service import EntryPage, NamespacePage, Service

__all__ = [
    "Address",
    "Cluster",
    "ClusterOptions",
    "Codec",
    "Diff",
    "EntryPage",
    "Limits",
    "MembershipOptions",
    "NamespacePage",
    "Node",
    "NodeConfig",
    "Placement",
    "Service",
    "codec_for",
    "decode_positions",
    "encode_positions",
]
