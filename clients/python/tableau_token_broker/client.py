"""The synchronous client: `BrokerClient`."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import grpc

from . import _core
from ._core import Attributes, CacheKey, CachePolicy, Entry, RetryPolicy, Seconds, Settings
from ._proto.v1 import broker_pb2 as pb
from ._proto.v1 import broker_pb2_grpc as pb_grpc
from .errors import BrokerError, from_rpc_error
from .models import Credentials, Invalidation, Jwt, ResolvedScopes, WhoAmI

__all__ = ["BrokerClient"]


class _Channel:
    """A channel for one identity, and the calls running on it."""

    def __init__(self, fingerprint: str, channel: grpc.Channel):
        self.fingerprint = fingerprint
        self.channel = channel
        self.stub = pb_grpc.TokenBrokerStub(channel)
        self.calls = 0
        self.retired = False


class BrokerClient:
    """Tableau credentials from tableau-token-broker, over mTLS.

    `credentials()` answers from an in-process cache keyed by (site, user, scopes): one RPC per key
    at a time however many threads ask (single flight), a background refresh before the token
    reaches its `min_remaining` point, retries of UNAVAILABLE with backoff and of
    RESOURCE_EXHAUSTED after its RetryInfo. Errors raise `BrokerError` with the broker's
    `reason`. The certificate files are checked before each call; when they change (a rotated
    SVID), new calls use a new channel, so new connections present the new certificate.

    Thread-safe; share one per process. `close()` (or `with`) ends its channels and timers.
    """

    def __init__(
        self,
        address: str,
        cert_file: str,
        key_file: str,
        ca_file: str,
        *,
        server_name: Optional[str] = None,
        timeout: float = 30.0,
        refresh_ahead: Seconds = 300.0,
        retry: RetryPolicy = RetryPolicy(),
        interceptors: Sequence[grpc.UnaryUnaryClientInterceptor] = (),
        options: Sequence[Tuple[str, object]] = (),
        recheck_interval: float = 5.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.address, _ = _core.split_address(address)
        self.server_name = server_name
        self.timeout = timeout
        self.retry = retry
        self.policy = CachePolicy(refresh_ahead=_core.seconds(refresh_ahead) or 0.0)
        self._files = _core.IdentityFiles(cert_file, key_file, ca_file, recheck_interval)
        self._interceptors = list(interceptors)
        self._options = list(options)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._channel: Optional[_Channel] = None
        self._entries: Dict[CacheKey, Entry] = {}
        self._inflight: Dict[CacheKey, concurrent.futures.Future] = {}
        self._renewals: Dict[Tuple[CacheKey, str], concurrent.futures.Future] = {}
        self._timers: Dict[CacheKey, threading.Timer] = {}
        self._closed = False

    @classmethod
    def from_env(cls, **kwargs) -> "BrokerClient":
        """A client from TTB_ADDR (default localhost:7443), TTB_CERT, TTB_KEY, TTB_CA and
        TTB_SERVER_NAME (default: the host of TTB_ADDR), as the broker's CLI reads them."""
        s: Settings = _core.settings_from_env()
        kwargs.setdefault("server_name", s.server_name)
        return cls(s.address, s.cert_file, s.key_file, s.ca_file, **kwargs)

    def __repr__(self) -> str:
        return f"BrokerClient({self.address!r})"

    def __enter__(self) -> "BrokerClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Cancels refresh timers and closes the channels; cached credentials are dropped."""
        with self._lock:
            self._closed = True
            timers, self._timers = list(self._timers.values()), {}
            chan, self._channel = self._channel, None
            self._entries.clear()
        for t in timers:
            t.cancel()
        if chan is not None:
            chan.channel.close()

    # --- channels --------------------------------------------------------------------------------

    def _acquire(self) -> _Channel:
        identity = self._files.current()
        retired = None
        with self._lock:
            if self._closed:
                raise RuntimeError("BrokerClient is closed")
            chan = self._channel
            if chan is None or chan.fingerprint != identity.fingerprint:
                channel = grpc.secure_channel(
                    self.address,
                    _core.channel_credentials(identity),
                    options=_core.channel_options(self.server_name, self._options),
                )
                if self._interceptors:
                    channel = grpc.intercept_channel(channel, *self._interceptors)
                if chan is not None:
                    chan.retired = True
                    if chan.calls == 0:
                        retired = chan
                chan = self._channel = _Channel(identity.fingerprint, channel)
            chan.calls += 1
        if retired is not None:
            retired.channel.close()
        return chan

    def _release(self, chan: _Channel) -> None:
        with self._lock:
            chan.calls -= 1
            done = chan.retired and chan.calls == 0
        if done:
            chan.channel.close()

    def _call(self, method: str, request, timeout: Optional[float] = None):
        attempt = 0
        while True:
            attempt += 1
            chan = self._acquire()
            try:
                return getattr(chan.stub, method)(request, timeout=timeout or self.timeout)
            except grpc.RpcError as e:
                err = from_rpc_error(e)
            finally:
                self._release(chan)
            delay = self.retry.delay(attempt, err)
            if delay is None:
                raise err
            _core.log.info("%s failed with %s; retry %d in %.2fs", method, err.code_name, attempt, delay)
            self._sleep(delay)

    # --- credentials and the cache ---------------------------------------------------------------

    def credentials(
        self,
        site: str,
        user: str,
        scopes: Iterable[str],
        min_remaining: Optional[Seconds] = None,
        *,
        force_refresh: bool = False,
        attributes: Optional[Attributes] = None,
        groups: Optional[Iterable[str]] = None,
        on_demand_access: bool = False,
    ) -> Credentials:
        """Credentials for `user` on the broker's `site` with `scopes`, with more than
        `min_remaining` (seconds or a timedelta) of life left. Cached in the process.

        `attributes` (name -> a value or several), `groups` and `on_demand_access` ask for claims
        beyond `scp` in the JWT the broker signs in with; the caller's grant must allow each one
        (else `BrokerError` with reason `ATTRIBUTE_NOT_ALLOWED`, `GROUP_NOT_ALLOWED` or
        `ON_DEMAND_ACCESS_NOT_ALLOWED`). They are part of the cache key, as they are of the
        broker's: a token is only ever served to callers that asked for the same claims."""
        key = _core.cache_key(site, user, scopes, _core.normalize_claims(attributes, groups, on_demand_access))
        return self._credentials(key, _core.seconds(min_remaining) or 0.0, force_refresh)

    def _credentials(self, key: CacheKey, m: float, force_refresh: bool = False) -> Credentials:
        """`credentials()` for a normalized key: the cache, single flight and refresh ahead."""
        if force_refresh:
            return self._fetch(key, m, force_refresh=True)
        while True:
            with self._lock:
                now = self._clock()
                entry = self._entries.get(key)
                fut = self._inflight.get(key)
                action = _core.decide(entry, now, m, refreshing=fut is not None)
                if action != _core.FETCH:
                    assert entry is not None
                    if action == _core.HIT_AND_REFRESH:
                        self._start_refresh(key, entry, now)
                    return entry.credentials
                leader = fut is None
                if leader:
                    fut = self._inflight[key] = concurrent.futures.Future()
            assert fut is not None
            if leader:
                self._run_fetch(key, fut, m, used=True)
            got: Entry = fut.result()
            if leader or got.usable(self._clock(), m):
                return got.credentials
            # A fetch for another caller's min_remaining: not enough for this one; ask again.

    def _fetch(self, key: CacheKey, m: float, force_refresh: bool = False) -> Credentials:
        resp = self._call("GetCredentials", _core.credentials_request(key, m, force_refresh))
        entry = self._store(key, _core.to_credentials(resp), m, used=True)
        return entry.credentials

    def _run_fetch(self, key: CacheKey, fut: concurrent.futures.Future, m: float, used: bool,
                   ask: Optional[float] = None) -> None:
        """The leader's RPC; its result (or error) goes to every caller waiting on `fut`."""
        try:
            try:
                resp = self._call("GetCredentials", _core.credentials_request(key, ask if ask is not None else m))
            except BrokerError as e:
                if ask is None or e.reason != "INVALID_REQUEST":
                    raise
                # A refresh asked for more life than the site hands out: ask as the caller did.
                resp = self._call("GetCredentials", _core.credentials_request(key, m))
            entry = self._store(key, _core.to_credentials(resp), m, used=used)
        except BaseException as e:
            with self._lock:
                if self._inflight.get(key) is fut:
                    del self._inflight[key]
            fut.set_exception(e)
            if not isinstance(e, Exception):
                raise
            return
        with self._lock:
            if self._inflight.get(key) is fut:
                del self._inflight[key]
        fut.set_result(entry)

    def _store(self, key: CacheKey, creds: Credentials, m: float, used: bool) -> Entry:
        now = self._clock()
        entry = _core.make_entry(creds, now, m, self.policy, used)
        with self._lock:
            if self._closed:
                return entry
            self._entries[key] = entry
            self._schedule(key, entry, now)
        return entry

    def _schedule(self, key: CacheKey, entry: Entry, now: float) -> None:
        """A timer that refreshes `entry` at its refresh point if it was used by then (locked)."""
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        timer = threading.Timer(max(0.0, entry.refresh_at - now), self._refresh_due, (key, entry))
        timer.daemon = True
        self._timers[key] = timer
        timer.start()

    def _refresh_due(self, key: CacheKey, entry: Entry) -> None:
        with self._lock:
            if self._closed or self._entries.get(key) is not entry or key in self._inflight:
                return
            self._timers.pop(key, None)
            if not entry.used:
                return  # nobody used this token: let it lapse rather than sign in for nobody
            self._start_refresh(key, entry, self._clock())

    def _start_refresh(self, key: CacheKey, entry: Entry, now: float) -> None:
        """Starts a background refresh of `entry` (locked); callers keep getting it meanwhile."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._inflight[key] = fut
        ask = _core.refresh_min_remaining(entry, now)

        def run() -> None:
            self._run_fetch(key, fut, entry.min_remaining, used=False, ask=ask)
            err = fut.exception()
            if err is not None:
                _core.log.warning("background refresh of credentials for %s/%s failed: %s", key.site, key.user, err)
                with self._lock:
                    if self._entries.get(key) is entry:
                        entry.refresh_at = _core.retry_refresh_at(entry, self._clock())
                        self._schedule(key, entry, self._clock())

        threading.Thread(target=run, name="ttb-refresh", daemon=True).start()

    def renew(
        self,
        site: str,
        user: str,
        scopes: Iterable[str],
        refused_token: str,
        min_remaining: Optional[Seconds] = None,
        *,
        attributes: Optional[Attributes] = None,
        groups: Optional[Iterable[str]] = None,
        on_demand_access: bool = False,
    ) -> Credentials:
        """Tableau refused `refused_token` (401): invalidates it at the broker and returns new
        credentials. Callers reporting the same token at once share one invalidation and one
        new token; a caller whose cache already moved on gets the newer token without an RPC.
        Pass the claims the refused token was asked for: the new one replaces that cache key."""
        key = _core.cache_key(site, user, scopes, _core.normalize_claims(attributes, groups, on_demand_access))
        m = _core.seconds(min_remaining) or 0.0
        rkey = (key, refused_token)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.credentials.token != refused_token and entry.usable(self._clock(), m):
                return entry.credentials
            found = self._renewals.get(rkey)
            leader = found is None
            fut = self._renewals[rkey] = found or concurrent.futures.Future()
        if not leader:
            return fut.result()
        try:
            try:
                self.invalidate(refused_token)
            except BrokerError as e:  # the force refresh below still replaces the token
                _core.log.warning("invalidating a refused token failed: %s", e)
            creds = self._credentials(key, m)
            if creds.token == refused_token:  # the broker still held it (another replica?)
                creds = self._credentials(key, m, force_refresh=True)
            fut.set_result(creds)
            return creds
        except BaseException as e:
            fut.set_exception(e)
            raise
        finally:
            with self._lock:
                self._renewals.pop(rkey, None)

    # --- the other RPCs --------------------------------------------------------------------------

    def invalidate(self, token: str) -> Invalidation:
        """Reports a token Tableau refused: the broker evicts it and signs the session out. Also
        drops it from this client's cache."""
        with self._lock:
            for key in [k for k, e in self._entries.items() if e.credentials.token == token]:
                del self._entries[key]
                t = self._timers.pop(key, None)
                if t is not None:
                    t.cancel()
        return _core.to_invalidation(self._call("InvalidateCredentials", pb.InvalidateCredentialsRequest(token=token)))

    def mint_jwt(
        self,
        site: str,
        user: str,
        scopes: Iterable[str],
        ttl: Optional[Seconds] = None,
        *,
        attributes: Optional[Attributes] = None,
        groups: Optional[Iterable[str]] = None,
        on_demand_access: bool = False,
    ) -> Jwt:
        """A connected-app JWT (not cached: each one is single-use at Tableau), with the same
        claims beyond `scp` as `credentials()` takes, checked against the same grant."""
        c = _core.normalize_claims(attributes, groups, on_demand_access)
        return _core.to_jwt(self._call("MintJwt", _core.mint_request(site, user, scopes, ttl, c)))

    def whoami(self) -> WhoAmI:
        """The identity the broker read from this client's certificate, and its grants."""
        return _core.to_whoami(self._call("WhoAmI", pb.WhoAmIRequest()))

    def resolve_scopes(self, methods: Iterable[str] = (), scopes: Iterable[str] = ()) -> ResolvedScopes:
        """The smallest scope set for REST `methods`, and what each of `scopes` enables."""
        return _core.to_resolved(self._call("ResolveScopes", _core.resolve_request(methods, scopes)))

    def cached(self) -> List[Tuple[CacheKey, Credentials]]:
        """The cache's keys and credentials (for diagnostics; tokens stay out of repr)."""
        with self._lock:
            return [(k, e.credentials) for k, e in self._entries.items()]
