"""What the broker answers, as plain typed values. Secrets (tokens, JWTs) stay out of `repr`."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Mapping, Optional, Tuple

__all__ = [
    "Credentials",
    "Jwt",
    "Invalidation",
    "Grant",
    "WhoAmI",
    "MethodInfo",
    "ScopeInfo",
    "ResolvedScopes",
]


@dataclass(frozen=True)
class Credentials:
    """A Tableau session from the broker. Send `token` as `X-Tableau-Auth`; never log it."""

    token: str = field(repr=False)
    site_luid: str
    site_content_url: str
    user_luid: str
    server_url: str
    api_version: str
    expires_at: _dt.datetime
    scopes: Tuple[str, ...]
    #: True when the broker answered from its cache rather than a fresh sign-in.
    from_cache: bool = field(default=False, compare=False)

    def remaining(self, now: Optional[_dt.datetime] = None) -> _dt.timedelta:
        """How long the broker still vouches for the token."""
        return self.expires_at - (now or _dt.datetime.now(_dt.timezone.utc))


@dataclass(frozen=True)
class Jwt:
    """A connected-app JWT; `jti` is safe to log, `jwt` is not."""

    jwt: str = field(repr=False)
    jti: str
    expires_at: _dt.datetime


@dataclass(frozen=True)
class Invalidation:
    """What `invalidate` did at the broker."""

    evicted: bool
    signed_out: bool


@dataclass(frozen=True)
class Grant:
    """One allowlist entry of the caller."""

    sites: Tuple[str, ...]
    users: Tuple[str, ...]
    scopes: Tuple[str, ...]
    deny_scopes: Tuple[str, ...]
    max_jwt_ttl: Optional[_dt.timedelta]
    #: User attributes the grant allows, each with its allowed values ("*": any value).
    attributes: Mapping[str, Tuple[str, ...]] = field(default_factory=dict, hash=False)
    #: Group name globs the grant allows in ``https://tableau.com/groups``.
    groups: Tuple[str, ...] = ()
    #: Whether the grant allows on-demand access (``https://tableau.com/oda``).
    on_demand_access: bool = False


@dataclass(frozen=True)
class WhoAmI:
    """The caller as the broker sees it (from its client certificate)."""

    identity: str
    grants: Tuple[Grant, ...]
    matched_entry: str
    source: str


@dataclass(frozen=True)
class MethodInfo:
    """A Tableau REST method."""

    name: str
    category: str
    http_method: str
    uri: str


@dataclass(frozen=True)
class ScopeInfo:
    """A scope and the methods it enables."""

    scope: str
    kind: str
    methods: Tuple[MethodInfo, ...]
    notes: str


@dataclass(frozen=True)
class ResolvedScopes:
    """`resolve_scopes`: the smallest scope set for the methods, each scope explained."""

    required_scopes: Tuple[str, ...]
    scopes: Tuple[ScopeInfo, ...]
    unknown: Tuple[str, ...]
