from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_UPSERT: _ClassVar[Mode]
    MODE_CREATE: _ClassVar[Mode]
    MODE_UPDATE: _ClassVar[Mode]

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_SET: _ClassVar[EventType]
    EVENT_TYPE_DELETE: _ClassVar[EventType]
    EVENT_TYPE_EXPIRE: _ClassVar[EventType]
    EVENT_TYPE_ALIAS_SET: _ClassVar[EventType]
    EVENT_TYPE_ALIAS_DELETE: _ClassVar[EventType]
MODE_UNSPECIFIED: Mode
MODE_UPSERT: Mode
MODE_CREATE: Mode
MODE_UPDATE: Mode
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_SET: EventType
EVENT_TYPE_DELETE: EventType
EVENT_TYPE_EXPIRE: EventType
EVENT_TYPE_ALIAS_SET: EventType
EVENT_TYPE_ALIAS_DELETE: EventType

class Entry(_message.Message):
    __slots__ = ("namespace", "key", "value", "codec", "version", "revision", "created_at", "updated_at", "expire_at")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_AT_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    key: str
    value: bytes
    codec: str
    version: int
    revision: int
    created_at: int
    updated_at: int
    expire_at: int
    def __init__(self, namespace: _Optional[str] = ..., key: _Optional[str] = ..., value: _Optional[bytes] = ..., codec: _Optional[str] = ..., version: _Optional[int] = ..., revision: _Optional[int] = ..., created_at: _Optional[int] = ..., updated_at: _Optional[int] = ..., expire_at: _Optional[int] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("namespace", "key")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    key: str
    def __init__(self, namespace: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("entry",)
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    entry: Entry
    def __init__(self, entry: _Optional[_Union[Entry, _Mapping]] = ...) -> None: ...

class SetRequest(_message.Message):
    __slots__ = ("namespace", "key", "value", "codec", "ttl_seconds", "mode", "if_version")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    IF_VERSION_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    key: str
    value: bytes
    codec: str
    ttl_seconds: float
    mode: Mode
    if_version: int
    def __init__(self, namespace: _Optional[str] = ..., key: _Optional[str] = ..., value: _Optional[bytes] = ..., codec: _Optional[str] = ..., ttl_seconds: _Optional[float] = ..., mode: _Optional[_Union[Mode, str]] = ..., if_version: _Optional[int] = ...) -> None: ...

class SetResponse(_message.Message):
    __slots__ = ("entry", "created")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    entry: Entry
    created: bool
    def __init__(self, entry: _Optional[_Union[Entry, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("namespace", "key", "if_version")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    IF_VERSION_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    key: str
    if_version: int
    def __init__(self, namespace: _Optional[str] = ..., key: _Optional[str] = ..., if_version: _Optional[int] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("entry",)
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    entry: Entry
    def __init__(self, entry: _Optional[_Union[Entry, _Mapping]] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("namespace", "prefix", "limit", "cursor")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    prefix: str
    limit: int
    cursor: str
    def __init__(self, namespace: _Optional[str] = ..., prefix: _Optional[str] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ...) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ("entries", "next_cursor")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[Entry]
    next_cursor: str
    def __init__(self, entries: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class DeletePrefixRequest(_message.Message):
    __slots__ = ("namespace", "prefix")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    prefix: str
    def __init__(self, namespace: _Optional[str] = ..., prefix: _Optional[str] = ...) -> None: ...

class DeletePrefixResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class GetVersionsRequest(_message.Message):
    __slots__ = ("namespace", "key", "version", "limit", "cursor")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    key: str
    version: int
    limit: int
    cursor: str
    def __init__(self, namespace: _Optional[str] = ..., key: _Optional[str] = ..., version: _Optional[int] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ...) -> None: ...

class GetVersionsResponse(_message.Message):
    __slots__ = ("entries", "next_cursor")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[Entry]
    next_cursor: str
    def __init__(self, entries: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class DiffRequest(_message.Message):
    __slots__ = ("namespace", "key", "from_version", "to_version")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    TO_VERSION_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    key: str
    from_version: int
    to_version: int
    def __init__(self, namespace: _Optional[str] = ..., key: _Optional[str] = ..., from_version: _Optional[int] = ..., to_version: _Optional[int] = ...) -> None: ...

class DiffResponse(_message.Message):
    __slots__ = ("namespace", "key", "equal", "from_version", "to_version", "from_codec", "to_codec", "patch_json", "unified")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    EQUAL_FIELD_NUMBER: _ClassVar[int]
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    TO_VERSION_FIELD_NUMBER: _ClassVar[int]
    FROM_CODEC_FIELD_NUMBER: _ClassVar[int]
    TO_CODEC_FIELD_NUMBER: _ClassVar[int]
    PATCH_JSON_FIELD_NUMBER: _ClassVar[int]
    UNIFIED_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    key: str
    equal: bool
    from_version: int
    to_version: int
    from_codec: str
    to_codec: str
    patch_json: str
    unified: str
    def __init__(self, namespace: _Optional[str] = ..., key: _Optional[str] = ..., equal: _Optional[bool] = ..., from_version: _Optional[int] = ..., to_version: _Optional[int] = ..., from_codec: _Optional[str] = ..., to_codec: _Optional[str] = ..., patch_json: _Optional[str] = ..., unified: _Optional[str] = ...) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = ("namespace", "if_none_match")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    IF_NONE_MATCH_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    if_none_match: str
    def __init__(self, namespace: _Optional[str] = ..., if_none_match: _Optional[str] = ...) -> None: ...

class SnapshotResponse(_message.Message):
    __slots__ = ("namespace", "revision", "etag", "entries", "not_modified")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NOT_MODIFIED_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    revision: int
    etag: str
    entries: _containers.RepeatedCompositeFieldContainer[Entry]
    not_modified: bool
    def __init__(self, namespace: _Optional[str] = ..., revision: _Optional[int] = ..., etag: _Optional[str] = ..., entries: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ..., not_modified: _Optional[bool] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("namespaces", "prefixes", "start")
    class StartEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    PREFIXES_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    namespaces: _containers.RepeatedScalarFieldContainer[str]
    prefixes: _containers.RepeatedScalarFieldContainer[str]
    start: _containers.ScalarMap[str, int]
    def __init__(self, namespaces: _Optional[_Iterable[str]] = ..., prefixes: _Optional[_Iterable[str]] = ..., start: _Optional[_Mapping[str, int]] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("event", "compacted", "heartbeat")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    COMPACTED_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    event: Event
    compacted: Compacted
    heartbeat: Heartbeat
    def __init__(self, event: _Optional[_Union[Event, _Mapping]] = ..., compacted: _Optional[_Union[Compacted, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("type", "namespace", "key", "revision", "at", "entry", "created", "target", "term")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    type: EventType
    namespace: str
    key: str
    revision: int
    at: int
    entry: Entry
    created: bool
    target: str
    term: int
    def __init__(self, type: _Optional[_Union[EventType, str]] = ..., namespace: _Optional[str] = ..., key: _Optional[str] = ..., revision: _Optional[int] = ..., at: _Optional[int] = ..., entry: _Optional[_Union[Entry, _Mapping]] = ..., created: _Optional[bool] = ..., target: _Optional[str] = ..., term: _Optional[int] = ...) -> None: ...

class Compacted(_message.Message):
    __slots__ = ("namespace", "floor")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    FLOOR_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    floor: int
    def __init__(self, namespace: _Optional[str] = ..., floor: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("positions",)
    class PositionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    positions: _containers.ScalarMap[str, int]
    def __init__(self, positions: _Optional[_Mapping[str, int]] = ...) -> None: ...

class ListNamespacesRequest(_message.Message):
    __slots__ = ("prefix", "limit", "cursor", "with_history")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    WITH_HISTORY_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    limit: int
    cursor: str
    with_history: bool
    def __init__(self, prefix: _Optional[str] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ..., with_history: _Optional[bool] = ...) -> None: ...

class ListNamespacesResponse(_message.Message):
    __slots__ = ("namespaces", "next_cursor")
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    namespaces: _containers.RepeatedCompositeFieldContainer[NamespaceInfo]
    next_cursor: str
    def __init__(self, namespaces: _Optional[_Iterable[_Union[NamespaceInfo, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class NamespaceInfo(_message.Message):
    __slots__ = ("name", "revision", "keys", "aliases")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    name: str
    revision: int
    keys: int
    aliases: int
    def __init__(self, name: _Optional[str] = ..., revision: _Optional[int] = ..., keys: _Optional[int] = ..., aliases: _Optional[int] = ...) -> None: ...

class ListCodecsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCodecsResponse(_message.Message):
    __slots__ = ("codecs",)
    CODECS_FIELD_NUMBER: _ClassVar[int]
    codecs: _containers.RepeatedCompositeFieldContainer[Codec]
    def __init__(self, codecs: _Optional[_Iterable[_Union[Codec, _Mapping]]] = ...) -> None: ...

class Codec(_message.Message):
    __slots__ = ("name", "media_type", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    media_type: str
    description: str
    def __init__(self, name: _Optional[str] = ..., media_type: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class Alias(_message.Message):
    __slots__ = ("namespace", "alias", "target", "revision")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    alias: str
    target: str
    revision: int
    def __init__(self, namespace: _Optional[str] = ..., alias: _Optional[str] = ..., target: _Optional[str] = ..., revision: _Optional[int] = ...) -> None: ...

class SetAliasRequest(_message.Message):
    __slots__ = ("namespace", "alias", "target")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    alias: str
    target: str
    def __init__(self, namespace: _Optional[str] = ..., alias: _Optional[str] = ..., target: _Optional[str] = ...) -> None: ...

class SetAliasResponse(_message.Message):
    __slots__ = ("alias",)
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    alias: Alias
    def __init__(self, alias: _Optional[_Union[Alias, _Mapping]] = ...) -> None: ...

class GetAliasRequest(_message.Message):
    __slots__ = ("namespace", "alias")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    alias: str
    def __init__(self, namespace: _Optional[str] = ..., alias: _Optional[str] = ...) -> None: ...

class GetAliasResponse(_message.Message):
    __slots__ = ("alias",)
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    alias: Alias
    def __init__(self, alias: _Optional[_Union[Alias, _Mapping]] = ...) -> None: ...

class DeleteAliasRequest(_message.Message):
    __slots__ = ("namespace", "alias")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    alias: str
    def __init__(self, namespace: _Optional[str] = ..., alias: _Optional[str] = ...) -> None: ...

class DeleteAliasResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAliasesRequest(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ...) -> None: ...

class ListAliasesResponse(_message.Message):
    __slots__ = ("aliases",)
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    aliases: _containers.RepeatedCompositeFieldContainer[Alias]
    def __init__(self, aliases: _Optional[_Iterable[_Union[Alias, _Mapping]]] = ...) -> None: ...
