from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetCredentialsRequest(_message.Message):
    __slots__ = ("site", "user", "scopes", "min_remaining", "force_refresh", "attributes", "groups", "on_demand_access")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: AttributeValues
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[AttributeValues, _Mapping]] = ...) -> None: ...
    SITE_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    MIN_REMAINING_FIELD_NUMBER: _ClassVar[int]
    FORCE_REFRESH_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    ON_DEMAND_ACCESS_FIELD_NUMBER: _ClassVar[int]
    site: str
    user: str
    scopes: _containers.RepeatedScalarFieldContainer[str]
    min_remaining: _duration_pb2.Duration
    force_refresh: bool
    attributes: _containers.MessageMap[str, AttributeValues]
    groups: _containers.RepeatedScalarFieldContainer[str]
    on_demand_access: bool
    def __init__(self, site: _Optional[str] = ..., user: _Optional[str] = ..., scopes: _Optional[_Iterable[str]] = ..., min_remaining: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., force_refresh: bool = ..., attributes: _Optional[_Mapping[str, AttributeValues]] = ..., groups: _Optional[_Iterable[str]] = ..., on_demand_access: bool = ...) -> None: ...

class AttributeValues(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class GetCredentialsResponse(_message.Message):
    __slots__ = ("token", "site_luid", "site_content_url", "user_luid", "server_url", "api_version", "expires_at", "scopes", "from_cache")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SITE_LUID_FIELD_NUMBER: _ClassVar[int]
    SITE_CONTENT_URL_FIELD_NUMBER: _ClassVar[int]
    USER_LUID_FIELD_NUMBER: _ClassVar[int]
    SERVER_URL_FIELD_NUMBER: _ClassVar[int]
    API_VERSION_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    FROM_CACHE_FIELD_NUMBER: _ClassVar[int]
    token: str
    site_luid: str
    site_content_url: str
    user_luid: str
    server_url: str
    api_version: str
    expires_at: _timestamp_pb2.Timestamp
    scopes: _containers.RepeatedScalarFieldContainer[str]
    from_cache: bool
    def __init__(self, token: _Optional[str] = ..., site_luid: _Optional[str] = ..., site_content_url: _Optional[str] = ..., user_luid: _Optional[str] = ..., server_url: _Optional[str] = ..., api_version: _Optional[str] = ..., expires_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., scopes: _Optional[_Iterable[str]] = ..., from_cache: bool = ...) -> None: ...

class MintJwtRequest(_message.Message):
    __slots__ = ("site", "user", "scopes", "ttl", "attributes", "groups", "on_demand_access")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: AttributeValues
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[AttributeValues, _Mapping]] = ...) -> None: ...
    SITE_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    ON_DEMAND_ACCESS_FIELD_NUMBER: _ClassVar[int]
    site: str
    user: str
    scopes: _containers.RepeatedScalarFieldContainer[str]
    ttl: _duration_pb2.Duration
    attributes: _containers.MessageMap[str, AttributeValues]
    groups: _containers.RepeatedScalarFieldContainer[str]
    on_demand_access: bool
    def __init__(self, site: _Optional[str] = ..., user: _Optional[str] = ..., scopes: _Optional[_Iterable[str]] = ..., ttl: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., attributes: _Optional[_Mapping[str, AttributeValues]] = ..., groups: _Optional[_Iterable[str]] = ..., on_demand_access: bool = ...) -> None: ...

class MintJwtResponse(_message.Message):
    __slots__ = ("jwt", "jti", "expires_at")
    JWT_FIELD_NUMBER: _ClassVar[int]
    JTI_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    jwt: str
    jti: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, jwt: _Optional[str] = ..., jti: _Optional[str] = ..., expires_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class InvalidateCredentialsRequest(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class InvalidateCredentialsResponse(_message.Message):
    __slots__ = ("evicted", "signed_out")
    EVICTED_FIELD_NUMBER: _ClassVar[int]
    SIGNED_OUT_FIELD_NUMBER: _ClassVar[int]
    evicted: bool
    signed_out: bool
    def __init__(self, evicted: bool = ..., signed_out: bool = ...) -> None: ...

class WhoAmIRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WhoAmIResponse(_message.Message):
    __slots__ = ("identity", "grants", "matched_entry", "source")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    MATCHED_ENTRY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    identity: str
    grants: _containers.RepeatedCompositeFieldContainer[Grant]
    matched_entry: str
    source: str
    def __init__(self, identity: _Optional[str] = ..., grants: _Optional[_Iterable[_Union[Grant, _Mapping]]] = ..., matched_entry: _Optional[str] = ..., source: _Optional[str] = ...) -> None: ...

class Grant(_message.Message):
    __slots__ = ("sites", "users", "scopes", "deny_scopes", "max_jwt_ttl", "attributes", "groups", "on_demand_access")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: AttributeValues
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[AttributeValues, _Mapping]] = ...) -> None: ...
    SITES_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    DENY_SCOPES_FIELD_NUMBER: _ClassVar[int]
    MAX_JWT_TTL_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    ON_DEMAND_ACCESS_FIELD_NUMBER: _ClassVar[int]
    sites: _containers.RepeatedScalarFieldContainer[str]
    users: _containers.RepeatedScalarFieldContainer[str]
    scopes: _containers.RepeatedScalarFieldContainer[str]
    deny_scopes: _containers.RepeatedScalarFieldContainer[str]
    max_jwt_ttl: _duration_pb2.Duration
    attributes: _containers.MessageMap[str, AttributeValues]
    groups: _containers.RepeatedScalarFieldContainer[str]
    on_demand_access: bool
    def __init__(self, sites: _Optional[_Iterable[str]] = ..., users: _Optional[_Iterable[str]] = ..., scopes: _Optional[_Iterable[str]] = ..., deny_scopes: _Optional[_Iterable[str]] = ..., max_jwt_ttl: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., attributes: _Optional[_Mapping[str, AttributeValues]] = ..., groups: _Optional[_Iterable[str]] = ..., on_demand_access: bool = ...) -> None: ...

class ResolveScopesRequest(_message.Message):
    __slots__ = ("methods", "scopes")
    METHODS_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    methods: _containers.RepeatedScalarFieldContainer[str]
    scopes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, methods: _Optional[_Iterable[str]] = ..., scopes: _Optional[_Iterable[str]] = ...) -> None: ...

class ResolveScopesResponse(_message.Message):
    __slots__ = ("required_scopes", "scopes", "unknown")
    REQUIRED_SCOPES_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    required_scopes: _containers.RepeatedScalarFieldContainer[str]
    scopes: _containers.RepeatedCompositeFieldContainer[ScopeInfo]
    unknown: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, required_scopes: _Optional[_Iterable[str]] = ..., scopes: _Optional[_Iterable[_Union[ScopeInfo, _Mapping]]] = ..., unknown: _Optional[_Iterable[str]] = ...) -> None: ...

class ScopeInfo(_message.Message):
    __slots__ = ("scope", "kind", "methods", "notes")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    scope: str
    kind: str
    methods: _containers.RepeatedCompositeFieldContainer[MethodInfo]
    notes: str
    def __init__(self, scope: _Optional[str] = ..., kind: _Optional[str] = ..., methods: _Optional[_Iterable[_Union[MethodInfo, _Mapping]]] = ..., notes: _Optional[str] = ...) -> None: ...

class MethodInfo(_message.Message):
    __slots__ = ("name", "category", "http_method", "uri")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    HTTP_METHOD_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    name: str
    category: str
    http_method: str
    uri: str
    def __init__(self, name: _Optional[str] = ..., category: _Optional[str] = ..., http_method: _Optional[str] = ..., uri: _Optional[str] = ...) -> None: ...
