"""What the sync and the asyncio client share: addresses, certificate files, the cache's timing
rules, retry decisions and message conversions. Nothing here does I/O on the network."""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import os
import random
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import grpc
from google.protobuf import duration_pb2

from ._proto.v1 import broker_pb2 as pb
from .errors import BrokerError, ConfigurationError
from .models import (
    Credentials,
    Grant,
    Invalidation,
    Jwt,
    MethodInfo,
    ResolvedScopes,
    ScopeInfo,
    WhoAmI,
)

log = logging.getLogger("tableau_token_broker")

Seconds = Union[int, float, _dt.timedelta]
UTC = _dt.timezone.utc

# --- addresses and environment -------------------------------------------------------------------


def split_address(address: str) -> Tuple[str, str]:
    """The dial target (no scheme, no trailing slash) and its host, as the CLI reads `--addr`."""
    addr = address.strip()
    for scheme in ("https://", "http://"):
        if addr.startswith(scheme):
            addr = addr[len(scheme):]
    addr = addr.rstrip("/")
    host = addr.rsplit(":", 1)[0] if ":" in addr else addr
    return addr, host.strip("[]")


@dataclass(frozen=True)
class Settings:
    """How to reach the broker: what `BrokerClient(...)` and `from_env()` agree on."""

    address: str
    cert_file: str
    key_file: str
    ca_file: str
    server_name: Optional[str] = None


def settings_from_env(environ: Optional[dict] = None) -> Settings:
    """TTB_ADDR (default localhost:7443), TTB_CERT, TTB_KEY, TTB_CA and optional TTB_SERVER_NAME,
    the variables the broker's CLI reads."""
    env = os.environ if environ is None else environ
    missing = [v for v in ("TTB_CERT", "TTB_KEY", "TTB_CA") if not env.get(v)]
    if missing:
        raise ConfigurationError(
            f"{', '.join(missing)} not set: the client certificate, its key and the CA that signed "
            "the broker's certificate are read from TTB_CERT, TTB_KEY and TTB_CA"
        )
    return Settings(
        address=env.get("TTB_ADDR") or "localhost:7443",
        cert_file=env["TTB_CERT"],
        key_file=env["TTB_KEY"],
        ca_file=env["TTB_CA"],
        server_name=env.get("TTB_SERVER_NAME") or None,
    )


# --- certificate files ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """One consistent read of the CA, certificate and key files."""

    ca: bytes
    cert: bytes
    key: bytes = b""
    fingerprint: str = ""

    def __repr__(self) -> str:
        return f"Identity(fingerprint={self.fingerprint[:12]})"


def _stat(path: str) -> Tuple[int, int, int, int]:
    st = os.stat(path)  # follows symlinks: a Kubernetes ..data swap changes the inode
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class IdentityFiles:
    """Watches the three PEM files. `current()` is cheap (three stats) unless a file changed or
    `recheck_interval` passed, when the files are re-read and hashed; a new content hash is a new
    identity. A certificate that does not match its key (a rotation caught between two writes)
    is not taken: the previous identity stays until the pair is whole again."""

    def __init__(self, cert_file: str, key_file: str, ca_file: str, recheck_interval: float = 5.0):
        self.paths = (ca_file, cert_file, key_file)
        self.recheck_interval = recheck_interval
        self._lock = threading.Lock()
        self._stats: Optional[tuple] = None
        self._checked = 0.0
        self._identity: Optional[Identity] = None
        self.current()  # fail fast on unreadable files

    def _read(self, labels=("CA certificate", "client certificate", "client key")) -> Identity:
        contents = []
        for path, what in zip(self.paths, labels):
            try:
                with open(path, "rb") as f:
                    contents.append(f.read())
            except OSError as e:
                raise ConfigurationError(f"cannot read the {what} file {path}: {e}") from e
        digest = hashlib.sha256(b"\0".join(contents)).hexdigest()
        return Identity(contents[0], contents[1], contents[2], digest)

    def _pair_matches(self) -> bool:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            ctx.load_cert_chain(self.paths[1], self.paths[2], password=lambda: b"")
        except (ssl.SSLError, OSError) as e:
            log.warning("client certificate %s does not match key %s yet (%s); keeping the previous identity",
                        self.paths[1], self.paths[2], e)
            return False
        return True

    def current(self) -> Identity:
        now = time.monotonic()
        with self._lock:
            try:
                stats = tuple(_stat(p) for p in self.paths)
            except OSError:
                stats = None
            if (
                self._identity is not None
                and stats == self._stats
                and now - self._checked < self.recheck_interval
            ):
                return self._identity
            try:
                identity = self._read()
            except ConfigurationError:
                if self._identity is None:
                    raise
                log.warning("certificate files unreadable; keeping the previous identity", exc_info=True)
                return self._identity
            self._checked = now
            if self._identity is not None and identity.fingerprint == self._identity.fingerprint:
                self._stats = stats
                return self._identity
            if not self._pair_matches():
                if self._identity is None:
                    raise ConfigurationError(
                        f"the client certificate {self.paths[1]} does not match the key {self.paths[2]}"
                    )
                return self._identity
            if self._identity is not None:
                log.info("certificate files changed; new connections use the new identity")
            self._stats = stats
            self._identity = identity
            return identity


def channel_credentials(identity: Identity) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=identity.ca, private_key=identity.key, certificate_chain=identity.cert
    )


def channel_options(server_name: Optional[str], extra: Sequence[Tuple[str, object]] = ()) -> List[Tuple[str, object]]:
    # A channel of its own subchannels: a new identity never reuses a connection of the old one.
    opts: List[Tuple[str, object]] = [("grpc.use_local_subchannel_pool", 1)]
    if server_name:
        opts.append(("grpc.ssl_target_name_override", server_name))
    opts.extend(extra)
    return opts


# --- requests and the cache's rules --------------------------------------------------------------


def seconds(value: Optional[Seconds]) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    return float(value)


def duration(value: Optional[float]) -> Optional[duration_pb2.Duration]:
    if value is None:
        return None
    d = duration_pb2.Duration()
    d.FromTimedelta(_dt.timedelta(seconds=value))
    return d


#: What `attributes=` takes: attribute name -> one value (a string) or several.
Attributes = Mapping[str, Union[str, Iterable[str]]]


@dataclass(frozen=True)
class Claims:
    """Claims beyond `scp` a request asks the broker to put in the JWT: user attributes (read by
    `USERATTRIBUTE`/`USERATTRIBUTEINCLUDES` in data policies), groups (dynamic group membership)
    and on-demand access.

    Normalized as the broker normalizes them (attribute names sorted, each attribute's values and
    the groups sorted and deduplicated), so that two requests for the same claims, written in a
    different order, are one cache key here as they are one session at the broker. Values are
    sent verbatim (not stripped): they are compared with the grant's allowlist and Tableau's data
    policies exactly. `repr` shows attribute names and counts, never values, like the broker's
    logs: values can say who a user is and what they may see."""

    attributes: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()
    groups: Tuple[str, ...] = ()
    on_demand_access: bool = False

    def __bool__(self) -> bool:
        return bool(self.attributes or self.groups or self.on_demand_access)

    def __repr__(self) -> str:
        names = [name for name, _ in self.attributes]
        return f"Claims(attributes={names!r}, groups={len(self.groups)}, on_demand_access={self.on_demand_access})"

    def attribute_map(self) -> Dict[str, Tuple[str, ...]]:
        """The attributes as a dict, as `credentials(attributes=...)` takes them back."""
        return dict(self.attributes)


NO_CLAIMS = Claims()


def _strings(what: str, values: Union[str, Iterable[str]]) -> Tuple[str, ...]:
    """Sorted, deduplicated strings; a lone string is one value, not its characters."""
    if isinstance(values, str):
        values = [values]
    out = set()
    for v in values:
        if not isinstance(v, str):
            # Checked here so the error names the claim; protobuf's would not.
            raise TypeError(f"{what} must be strings, got {type(v).__name__} {v!r}")
        out.add(v)
    return tuple(sorted(out))


def normalize_claims(
    attributes: Optional[Attributes] = None,
    groups: Optional[Iterable[str]] = None,
    on_demand_access: bool = False,
) -> Claims:
    """The normalized `Claims` of a call's `attributes=`, `groups=` and `on_demand_access=`."""
    attrs: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()
    if attributes:
        for name in attributes:
            if not isinstance(name, str):
                raise TypeError(f"attribute names must be strings, got {type(name).__name__} {name!r}")
        attrs = tuple(
            (name, _strings(f"the values of attribute {name!r}", attributes[name]))
            for name in sorted(attributes)
        )
    return Claims(
        attributes=attrs,
        groups=_strings("groups", groups) if groups else (),
        on_demand_access=bool(on_demand_access),
    )


class CacheKey(NamedTuple):
    """What the client caches credentials under. The claims are part of it because the broker
    signs in a separate session for each claim set (a token signed in with `region=emea` must
    never be handed to a caller that asked for `region=us`, or for no attributes at all)."""

    site: str
    user: str
    scopes: Tuple[str, ...]
    claims: Claims = NO_CLAIMS


def cache_key(site: str, user: str, scopes: Iterable[str], claims: Claims = NO_CLAIMS) -> CacheKey:
    if isinstance(scopes, str):
        scopes = [scopes]
    scopes = tuple(sorted({s.strip() for s in scopes}))
    return CacheKey(site, user, scopes, claims)


def _fill_claims(req, c: Claims) -> None:
    """Sets the claim fields shared by GetCredentialsRequest and MintJwtRequest."""
    for name, values in c.attributes:
        req.attributes[name].values.extend(values)
    req.groups.extend(c.groups)
    req.on_demand_access = c.on_demand_access


@dataclass(frozen=True)
class CachePolicy:
    """When a cached token is served, refreshed in the background, or replaced before use.

    A token is served while it has more than `min_remaining` left. It is refreshed (in the
    background, while callers keep getting it) from `refresh_ahead` before that point, but never
    before half of its usable life has passed, so a short-lived token is not refreshed over and
    over."""

    refresh_ahead: float = 300.0

    def refresh_at(self, fetched_at: float, expires_at: float, min_remaining: float) -> float:
        last_use = expires_at - min_remaining
        return max(last_use - self.refresh_ahead, fetched_at + (last_use - fetched_at) / 2)


@dataclass
class Entry:
    """A cached answer and its schedule (epoch seconds)."""

    credentials: Credentials
    fetched_at: float
    min_remaining: float
    refresh_at: float
    used: bool = True  # used since it was fetched: worth refreshing ahead

    @property
    def expires_at(self) -> float:
        return self.credentials.expires_at.timestamp()

    def usable(self, now: float, min_remaining: float) -> bool:
        return self.expires_at - now > min_remaining


def refresh_min_remaining(entry: Entry, now: float) -> float:
    """What a refresh asks the broker for: a token with more life than the one held, so the
    broker replaces its own cached copy of this one, yet returns a newer one that another client
    already took."""
    return max(entry.min_remaining, entry.expires_at - now + 1.0)


def credentials_request(key: CacheKey, min_remaining: Optional[float], force_refresh: bool = False):
    req = pb.GetCredentialsRequest(site=key.site, user=key.user, scopes=list(key.scopes), force_refresh=force_refresh)
    _fill_claims(req, key.claims)
    if min_remaining:
        req.min_remaining.CopyFrom(duration(min_remaining))
    return req


def mint_request(site: str, user: str, scopes: Iterable[str], ttl: Optional[Seconds], claims: Claims = NO_CLAIMS):
    if isinstance(scopes, str):
        scopes = [scopes]
    req = pb.MintJwtRequest(site=site, user=user, scopes=list(scopes))
    _fill_claims(req, claims)
    t = seconds(ttl)
    if t is not None:
        req.ttl.CopyFrom(duration(t))
    return req


def resolve_request(methods: Iterable[str], scopes: Iterable[str]):
    if isinstance(methods, str):
        methods = [methods]
    if isinstance(scopes, str):
        scopes = [scopes]
    return pb.ResolveScopesRequest(methods=list(methods), scopes=list(scopes))


# --- conversions ---------------------------------------------------------------------------------


def _timestamp(ts) -> _dt.datetime:
    return ts.ToDatetime(tzinfo=UTC)


def to_credentials(r) -> Credentials:
    return Credentials(
        token=r.token,
        site_luid=r.site_luid,
        site_content_url=r.site_content_url,
        user_luid=r.user_luid,
        server_url=r.server_url,
        api_version=r.api_version,
        expires_at=_timestamp(r.expires_at),
        scopes=tuple(r.scopes),
        from_cache=r.from_cache,
    )


def to_jwt(r) -> Jwt:
    return Jwt(jwt=r.jwt, jti=r.jti, expires_at=_timestamp(r.expires_at))


def to_invalidation(r) -> Invalidation:
    return Invalidation(evicted=r.evicted, signed_out=r.signed_out)


def to_whoami(r) -> WhoAmI:
    return WhoAmI(
        identity=r.identity,
        grants=tuple(
            Grant(
                sites=tuple(g.sites),
                users=tuple(g.users),
                scopes=tuple(g.scopes),
                deny_scopes=tuple(g.deny_scopes),
                max_jwt_ttl=g.max_jwt_ttl.ToTimedelta() if g.HasField("max_jwt_ttl") else None,
                attributes={n: tuple(v.values) for n, v in sorted(g.attributes.items())},
                groups=tuple(g.groups),
                on_demand_access=g.on_demand_access,
            )
            for g in r.grants
        ),
        matched_entry=r.matched_entry,
        source=r.source,
    )


def to_resolved(r) -> ResolvedScopes:
    return ResolvedScopes(
        required_scopes=tuple(r.required_scopes),
        scopes=tuple(
            ScopeInfo(
                scope=s.scope,
                kind=s.kind,
                methods=tuple(MethodInfo(m.name, m.category, m.http_method, m.uri) for m in s.methods),
                notes=s.notes,
            )
            for s in r.scopes
        ),
        unknown=tuple(r.unknown),
    )


# --- retries -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """UNAVAILABLE is retried with exponential backoff and full jitter; RESOURCE_EXHAUSTED waits
    as long as its RetryInfo says (and is not retried without one). At most `max_attempts`
    calls, and no single wait longer than `max_wait` (a longer RetryInfo is raised at once)."""

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0
    max_wait: float = 30.0

    def delay(self, attempt: int, err: BrokerError, rand: Callable[[], float] = random.random) -> Optional[float]:
        """Seconds to wait before attempt `attempt + 1` (attempts count from 1), or None to raise."""
        if attempt >= self.max_attempts:
            return None
        if err.code == grpc.StatusCode.UNAVAILABLE:
            cap = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
            return cap * rand()
        if err.code == grpc.StatusCode.RESOURCE_EXHAUSTED and err.retry_delay is not None:
            return err.retry_delay if err.retry_delay <= self.max_wait else None
        return None


NO_RETRY = RetryPolicy(max_attempts=1)


# --- cache decisions -----------------------------------------------------------------------------

HIT, HIT_AND_REFRESH, FETCH = "hit", "hit+refresh", "fetch"


def decide(entry: Optional[Entry], now: float, min_remaining: float, refreshing: bool) -> str:
    """What a `credentials` call does with the cached entry for its key."""
    if entry is None or not entry.usable(now, min_remaining):
        return FETCH
    entry.used = True
    if now >= entry.refresh_at and not refreshing:
        return HIT_AND_REFRESH
    return HIT


def make_entry(creds: Credentials, now: float, min_remaining: float, policy: CachePolicy, used: bool) -> Entry:
    expires = creds.expires_at.timestamp()
    return Entry(
        credentials=creds,
        fetched_at=now,
        min_remaining=min_remaining,
        refresh_at=policy.refresh_at(now, expires, min_remaining),
        used=used,
    )


def retry_refresh_at(entry: Entry, now: float) -> float:
    """After a failed background refresh: try again a quarter of the way to the last use."""
    return now + max(1.0, (entry.expires_at - entry.min_remaining - now) / 4)
