from peersync.v1 import kv_pb2 as _kv_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OverrideKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OVERRIDE_KIND_UNSPECIFIED: _ClassVar[OverrideKind]
    OVERRIDE_KIND_CLAIM: _ClassVar[OverrideKind]
    OVERRIDE_KIND_PIN: _ClassVar[OverrideKind]
OVERRIDE_KIND_UNSPECIFIED: OverrideKind
OVERRIDE_KIND_CLAIM: OverrideKind
OVERRIDE_KIND_PIN: OverrideKind

class Caller(_message.Message):
    __slots__ = ("identity", "request_id", "origin")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    identity: str
    request_id: str
    origin: str
    def __init__(self, identity: _Optional[str] = ..., request_id: _Optional[str] = ..., origin: _Optional[str] = ...) -> None: ...

class ForwardRequest(_message.Message):
    __slots__ = ("id", "timeout_ms", "caller", "ring_version", "get", "set", "delete", "list", "delete_prefix", "get_versions", "diff", "snapshot", "set_alias", "get_alias", "delete_alias", "list_aliases", "local_namespaces", "replicate", "fence", "read_log", "export", "install", "replicate_batch", "release")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    RING_VERSION_FIELD_NUMBER: _ClassVar[int]
    GET_FIELD_NUMBER: _ClassVar[int]
    SET_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    LIST_FIELD_NUMBER: _ClassVar[int]
    DELETE_PREFIX_FIELD_NUMBER: _ClassVar[int]
    GET_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    DIFF_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    SET_ALIAS_FIELD_NUMBER: _ClassVar[int]
    GET_ALIAS_FIELD_NUMBER: _ClassVar[int]
    DELETE_ALIAS_FIELD_NUMBER: _ClassVar[int]
    LIST_ALIASES_FIELD_NUMBER: _ClassVar[int]
    LOCAL_NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    REPLICATE_FIELD_NUMBER: _ClassVar[int]
    FENCE_FIELD_NUMBER: _ClassVar[int]
    READ_LOG_FIELD_NUMBER: _ClassVar[int]
    EXPORT_FIELD_NUMBER: _ClassVar[int]
    INSTALL_FIELD_NUMBER: _ClassVar[int]
    REPLICATE_BATCH_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    id: int
    timeout_ms: int
    caller: Caller
    ring_version: str
    get: _kv_pb2.GetRequest
    set: _kv_pb2.SetRequest
    delete: _kv_pb2.DeleteRequest
    list: _kv_pb2.ListRequest
    delete_prefix: _kv_pb2.DeletePrefixRequest
    get_versions: _kv_pb2.GetVersionsRequest
    diff: _kv_pb2.DiffRequest
    snapshot: _kv_pb2.SnapshotRequest
    set_alias: _kv_pb2.SetAliasRequest
    get_alias: _kv_pb2.GetAliasRequest
    delete_alias: _kv_pb2.DeleteAliasRequest
    list_aliases: _kv_pb2.ListAliasesRequest
    local_namespaces: _kv_pb2.ListNamespacesRequest
    replicate: ReplicateRequest
    fence: FenceRequest
    read_log: ReadLogRequest
    export: ExportRequest
    install: InstallRequest
    replicate_batch: ReplicateBatch
    release: ReleaseRequest
    def __init__(self, id: _Optional[int] = ..., timeout_ms: _Optional[int] = ..., caller: _Optional[_Union[Caller, _Mapping]] = ..., ring_version: _Optional[str] = ..., get: _Optional[_Union[_kv_pb2.GetRequest, _Mapping]] = ..., set: _Optional[_Union[_kv_pb2.SetRequest, _Mapping]] = ..., delete: _Optional[_Union[_kv_pb2.DeleteRequest, _Mapping]] = ..., list: _Optional[_Union[_kv_pb2.ListRequest, _Mapping]] = ..., delete_prefix: _Optional[_Union[_kv_pb2.DeletePrefixRequest, _Mapping]] = ..., get_versions: _Optional[_Union[_kv_pb2.GetVersionsRequest, _Mapping]] = ..., diff: _Optional[_Union[_kv_pb2.DiffRequest, _Mapping]] = ..., snapshot: _Optional[_Union[_kv_pb2.SnapshotRequest, _Mapping]] = ..., set_alias: _Optional[_Union[_kv_pb2.SetAliasRequest, _Mapping]] = ..., get_alias: _Optional[_Union[_kv_pb2.GetAliasRequest, _Mapping]] = ..., delete_alias: _Optional[_Union[_kv_pb2.DeleteAliasRequest, _Mapping]] = ..., list_aliases: _Optional[_Union[_kv_pb2.ListAliasesRequest, _Mapping]] = ..., local_namespaces: _Optional[_Union[_kv_pb2.ListNamespacesRequest, _Mapping]] = ..., replicate: _Optional[_Union[ReplicateRequest, _Mapping]] = ..., fence: _Optional[_Union[FenceRequest, _Mapping]] = ..., read_log: _Optional[_Union[ReadLogRequest, _Mapping]] = ..., export: _Optional[_Union[ExportRequest, _Mapping]] = ..., install: _Optional[_Union[InstallRequest, _Mapping]] = ..., replicate_batch: _Optional[_Union[ReplicateBatch, _Mapping]] = ..., release: _Optional[_Union[ReleaseRequest, _Mapping]] = ...) -> None: ...

class ForwardBatch(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[ForwardRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[ForwardRequest, _Mapping]]] = ...) -> None: ...

class ForwardReplyBatch(_message.Message):
    __slots__ = ("replies",)
    REPLIES_FIELD_NUMBER: _ClassVar[int]
    replies: _containers.RepeatedCompositeFieldContainer[ForwardReply]
    def __init__(self, replies: _Optional[_Iterable[_Union[ForwardReply, _Mapping]]] = ...) -> None: ...

class ForwardReply(_message.Message):
    __slots__ = ("id", "get", "set", "delete", "list", "delete_prefix", "get_versions", "diff", "snapshot", "set_alias", "get_alias", "delete_alias", "list_aliases", "local_namespaces", "replicate", "fence", "read_log", "export", "install", "replicate_batch", "release", "failure")
    ID_FIELD_NUMBER: _ClassVar[int]
    GET_FIELD_NUMBER: _ClassVar[int]
    SET_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    LIST_FIELD_NUMBER: _ClassVar[int]
    DELETE_PREFIX_FIELD_NUMBER: _ClassVar[int]
    GET_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    DIFF_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    SET_ALIAS_FIELD_NUMBER: _ClassVar[int]
    GET_ALIAS_FIELD_NUMBER: _ClassVar[int]
    DELETE_ALIAS_FIELD_NUMBER: _ClassVar[int]
    LIST_ALIASES_FIELD_NUMBER: _ClassVar[int]
    LOCAL_NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    REPLICATE_FIELD_NUMBER: _ClassVar[int]
    FENCE_FIELD_NUMBER: _ClassVar[int]
    READ_LOG_FIELD_NUMBER: _ClassVar[int]
    EXPORT_FIELD_NUMBER: _ClassVar[int]
    INSTALL_FIELD_NUMBER: _ClassVar[int]
    REPLICATE_BATCH_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    id: int
    get: _kv_pb2.GetResponse
    set: _kv_pb2.SetResponse
    delete: _kv_pb2.DeleteResponse
    list: _kv_pb2.ListResponse
    delete_prefix: _kv_pb2.DeletePrefixResponse
    get_versions: _kv_pb2.GetVersionsResponse
    diff: _kv_pb2.DiffResponse
    snapshot: _kv_pb2.SnapshotResponse
    set_alias: _kv_pb2.SetAliasResponse
    get_alias: _kv_pb2.GetAliasResponse
    delete_alias: _kv_pb2.DeleteAliasResponse
    list_aliases: _kv_pb2.ListAliasesResponse
    local_namespaces: _kv_pb2.ListNamespacesResponse
    replicate: CopyHead
    fence: CopyHead
    read_log: ReadLogReply
    export: NamespaceImage
    install: CopyHead
    replicate_batch: ReplicateBatchReply
    release: CopyHead
    failure: Failure
    def __init__(self, id: _Optional[int] = ..., get: _Optional[_Union[_kv_pb2.GetResponse, _Mapping]] = ..., set: _Optional[_Union[_kv_pb2.SetResponse, _Mapping]] = ..., delete: _Optional[_Union[_kv_pb2.DeleteResponse, _Mapping]] = ..., list: _Optional[_Union[_kv_pb2.ListResponse, _Mapping]] = ..., delete_prefix: _Optional[_Union[_kv_pb2.DeletePrefixResponse, _Mapping]] = ..., get_versions: _Optional[_Union[_kv_pb2.GetVersionsResponse, _Mapping]] = ..., diff: _Optional[_Union[_kv_pb2.DiffResponse, _Mapping]] = ..., snapshot: _Optional[_Union[_kv_pb2.SnapshotResponse, _Mapping]] = ..., set_alias: _Optional[_Union[_kv_pb2.SetAliasResponse, _Mapping]] = ..., get_alias: _Optional[_Union[_kv_pb2.GetAliasResponse, _Mapping]] = ..., delete_alias: _Optional[_Union[_kv_pb2.DeleteAliasResponse, _Mapping]] = ..., list_aliases: _Optional[_Union[_kv_pb2.ListAliasesResponse, _Mapping]] = ..., local_namespaces: _Optional[_Union[_kv_pb2.ListNamespacesResponse, _Mapping]] = ..., replicate: _Optional[_Union[CopyHead, _Mapping]] = ..., fence: _Optional[_Union[CopyHead, _Mapping]] = ..., read_log: _Optional[_Union[ReadLogReply, _Mapping]] = ..., export: _Optional[_Union[NamespaceImage, _Mapping]] = ..., install: _Optional[_Union[CopyHead, _Mapping]] = ..., replicate_batch: _Optional[_Union[ReplicateBatchReply, _Mapping]] = ..., release: _Optional[_Union[CopyHead, _Mapping]] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ...) -> None: ...

class Failure(_message.Message):
    __slots__ = ("reason", "detail", "field", "current_version", "owner", "ring_version", "namespace", "floor", "revision", "term")
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    RING_VERSION_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    FLOOR_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    reason: str
    detail: str
    field: str
    current_version: int
    owner: str
    ring_version: str
    namespace: str
    floor: int
    revision: int
    term: int
    def __init__(self, reason: _Optional[str] = ..., detail: _Optional[str] = ..., field: _Optional[str] = ..., current_version: _Optional[int] = ..., owner: _Optional[str] = ..., ring_version: _Optional[str] = ..., namespace: _Optional[str] = ..., floor: _Optional[int] = ..., revision: _Optional[int] = ..., term: _Optional[int] = ...) -> None: ...

class CopyHead(_message.Message):
    __slots__ = ("revision", "head_term", "term")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    HEAD_TERM_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    revision: int
    head_term: int
    term: int
    def __init__(self, revision: _Optional[int] = ..., head_term: _Optional[int] = ..., term: _Optional[int] = ...) -> None: ...

class ReplicateRequest(_message.Message):
    __slots__ = ("namespace", "term", "events", "prev_term")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    PREV_TERM_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    term: int
    events: _containers.RepeatedCompositeFieldContainer[_kv_pb2.Event]
    prev_term: int
    def __init__(self, namespace: _Optional[str] = ..., term: _Optional[int] = ..., events: _Optional[_Iterable[_Union[_kv_pb2.Event, _Mapping]]] = ..., prev_term: _Optional[int] = ...) -> None: ...

class ReplicateBatch(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ReplicateRequest]
    def __init__(self, items: _Optional[_Iterable[_Union[ReplicateRequest, _Mapping]]] = ...) -> None: ...

class ReplicateBatchReply(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ReplicateResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ReplicateResult, _Mapping]]] = ...) -> None: ...

class ReplicateResult(_message.Message):
    __slots__ = ("head", "failure")
    HEAD_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    head: CopyHead
    failure: Failure
    def __init__(self, head: _Optional[_Union[CopyHead, _Mapping]] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ...) -> None: ...

class FenceRequest(_message.Message):
    __slots__ = ("namespace", "term")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    term: int
    def __init__(self, namespace: _Optional[str] = ..., term: _Optional[int] = ...) -> None: ...

class ReadLogRequest(_message.Message):
    __slots__ = ("namespace", "after", "limit")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    after: int
    limit: int
    def __init__(self, namespace: _Optional[str] = ..., after: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class ReadLogReply(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_kv_pb2.Event]
    def __init__(self, events: _Optional[_Iterable[_Union[_kv_pb2.Event, _Mapping]]] = ...) -> None: ...

class ExportRequest(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ...) -> None: ...

class NamespaceImage(_message.Message):
    __slots__ = ("namespace", "revision", "term", "head_term", "entries", "aliases")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    HEAD_TERM_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    revision: int
    term: int
    head_term: int
    entries: _containers.RepeatedCompositeFieldContainer[_kv_pb2.Entry]
    aliases: _containers.RepeatedCompositeFieldContainer[_kv_pb2.Alias]
    def __init__(self, namespace: _Optional[str] = ..., revision: _Optional[int] = ..., term: _Optional[int] = ..., head_term: _Optional[int] = ..., entries: _Optional[_Iterable[_Union[_kv_pb2.Entry, _Mapping]]] = ..., aliases: _Optional[_Iterable[_Union[_kv_pb2.Alias, _Mapping]]] = ...) -> None: ...

class InstallRequest(_message.Message):
    __slots__ = ("image",)
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    image: NamespaceImage
    def __init__(self, image: _Optional[_Union[NamespaceImage, _Mapping]] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("namespace", "node", "revision", "head_term", "term")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    HEAD_TERM_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    node: str
    revision: int
    head_term: int
    term: int
    def __init__(self, namespace: _Optional[str] = ..., node: _Optional[str] = ..., revision: _Optional[int] = ..., head_term: _Optional[int] = ..., term: _Optional[int] = ...) -> None: ...

class OverrideEntry(_message.Message):
    __slots__ = ("namespace", "kind", "node", "clock", "origin")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    CLOCK_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    kind: OverrideKind
    node: str
    clock: int
    origin: str
    def __init__(self, namespace: _Optional[str] = ..., kind: _Optional[_Union[OverrideKind, str]] = ..., node: _Optional[str] = ..., clock: _Optional[int] = ..., origin: _Optional[str] = ...) -> None: ...

class MemberInfo(_message.Message):
    __slots__ = ("id", "grpc_addr", "http_addr", "incarnation", "state")
    ID_FIELD_NUMBER: _ClassVar[int]
    GRPC_ADDR_FIELD_NUMBER: _ClassVar[int]
    HTTP_ADDR_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    id: str
    grpc_addr: str
    http_addr: str
    incarnation: int
    state: str
    def __init__(self, id: _Optional[str] = ..., grpc_addr: _Optional[str] = ..., http_addr: _Optional[str] = ..., incarnation: _Optional[int] = ..., state: _Optional[str] = ...) -> None: ...

class GetStateRequest(_message.Message):
    __slots__ = ()
    FROM_FIELD_NUMBER: _ClassVar[int]
    def __init__(self, **kwargs) -> None: ...

class ClusterState(_message.Message):
    __slots__ = ("node", "clock", "digest", "overrides", "members", "ring_version")
    NODE_FIELD_NUMBER: _ClassVar[int]
    CLOCK_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    RING_VERSION_FIELD_NUMBER: _ClassVar[int]
    node: str
    clock: int
    digest: str
    overrides: _containers.RepeatedCompositeFieldContainer[OverrideEntry]
    members: _containers.RepeatedCompositeFieldContainer[MemberInfo]
    ring_version: str
    def __init__(self, node: _Optional[str] = ..., clock: _Optional[int] = ..., digest: _Optional[str] = ..., overrides: _Optional[_Iterable[_Union[OverrideEntry, _Mapping]]] = ..., members: _Optional[_Iterable[_Union[MemberInfo, _Mapping]]] = ..., ring_version: _Optional[str] = ...) -> None: ...

class ClaimRequest(_message.Message):
    __slots__ = ("namespace", "force", "caller")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    force: bool
    caller: Caller
    def __init__(self, namespace: _Optional[str] = ..., force: _Optional[bool] = ..., caller: _Optional[_Union[Caller, _Mapping]] = ...) -> None: ...

class ClaimReply(_message.Message):
    __slots__ = ("entry",)
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    entry: OverrideEntry
    def __init__(self, entry: _Optional[_Union[OverrideEntry, _Mapping]] = ...) -> None: ...

class UnclaimRequest(_message.Message):
    __slots__ = ("namespace", "force", "caller")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    force: bool
    caller: Caller
    def __init__(self, namespace: _Optional[str] = ..., force: _Optional[bool] = ..., caller: _Optional[_Union[Caller, _Mapping]] = ...) -> None: ...

class UnclaimReply(_message.Message):
    __slots__ = ("entry",)
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    entry: OverrideEntry
    def __init__(self, entry: _Optional[_Union[OverrideEntry, _Mapping]] = ...) -> None: ...
