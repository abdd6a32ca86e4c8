"""The asyncio client: `tableau_token_broker.aio.BrokerClient`, the sync client's twin on
`grpc.aio`. Use it from one event loop."""

from __future__ import annotations

import asyncio
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import grpc
import grpc.aio

from . import _core
from ._core import Attributes, CacheKey, CachePolicy, Entry, RetryPolicy, Seconds, Settings
from ._proto.v1 import broker_pb2 as pb
from ._proto.v1 import broker_pb2_grpc as pb_grpc
from .errors import BrokerError, from_rpc_error
from .models import Credentials, Invalidation, Jwt, ResolvedScopes, WhoAmI

__all__ = ["BrokerClient"]

_CLOSE_GRACE = 5.0


class _Channel:
    def __init__(self, fingerprint: str, channel: grpc.aio.Channel):
        self.fingerprint = fingerprint
        self.channel = channel
        self.stub = pb_grpc.TokenBrokerStub(channel)
        self.calls = 0
        self.retired = False


class BrokerClient:
    """Tableau credentials from tableau-token-broker over mTLS, on asyncio.

    The same contract as `tableau_token_broker.BrokerClient`: a per-key cache shared by concurrent
    tasks (one RPC per key at a time), refresh ahead of expiry, retries of UNAVAILABLE and
    RESOURCE_EXHAUSTED, `BrokerError` with the broker's `reason`, and certificate files re-read
    when they change. `await client.close()` (or `async with`) ends it.
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
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
        options: Sequence[Tuple[str, object]] = (),
        recheck_interval: float = 5.0,
        clock: Callable[[], float] = time.time,
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
        self._channel: Optional[_Channel] = None
        self._entries: Dict[CacheKey, Entry] = {}
        self._inflight: Dict[CacheKey, "asyncio.Future[Entry]"] = {}
        self._renewals: Dict[Tuple[CacheKey, str], "asyncio.Future[Credentials]"] = {}
        self._timers: Dict[CacheKey, asyncio.TimerHandle] = {}
        self._tasks: set = set()
        self._closed = False

    @classmethod
    def from_env(cls, **kwargs) -> "BrokerClient":
        """A client from TTB_ADDR, TTB_CERT, TTB_KEY, TTB_CA and TTB_SERVER_NAME, as the CLI."""
        s: Settings = _core.settings_from_env()
        kwargs.setdefault("server_name", s.server_name)
        return cls(s.address, s.cert_file, s.key_file, s.ca_file, **kwargs)

    def __repr__(self) -> str:
        return f"aio.BrokerClient({self.address!r})"

    async def __aenter__(self) -> "BrokerClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        for t in self._timers.values():
            t.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        self._entries.clear()
        chan, self._channel = self._channel, None
        if chan is not None:
            await chan.channel.close()

    def _spawn(self, coro) -> "asyncio.Task":
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- channels --------------------------------------------------------------------------------

    def _acquire(self) -> _Channel:
        if self._closed:
            raise RuntimeError("BrokerClient is closed")
        identity = self._files.current()
        chan = self._channel
        if chan is None or chan.fingerprint != identity.fingerprint:
            channel = grpc.aio.secure_channel(
                self.address,
                _core.channel_credentials(identity),
                options=_core.channel_options(self.server_name, self._options),
                interceptors=self._interceptors or None,
            )
            if chan is not None:
                chan.retired = True
                if chan.calls == 0:
                    self._spawn(chan.channel.close(_CLOSE_GRACE))
            chan = self._channel = _Channel(identity.fingerprint, channel)
        chan.calls += 1
        return chan

    def _release(self, chan: _Channel) -> None:
        chan.calls -= 1
        if chan.retired and chan.calls == 0:
            self._spawn(chan.channel.close(_CLOSE_GRACE))

    async def _call(self, method: str, request, timeout: Optional[float] = None):
        attempt = 0
        while True:
            attempt += 1
            chan = self._acquire()
            try:
                return await getattr(chan.stub, method)(request, timeout=timeout or self.timeout)
            except grpc.RpcError as e:
                err = from_rpc_error(e)
            finally:
                self._release(chan)
            delay = self.retry.delay(attempt, err)
            if delay is None:
                raise err
            _core.log.info("%s failed with %s; retry %d in %.2fs", method, err.code_name, attempt, delay)
            await asyncio.sleep(delay)

    # --- credentials and the cache ---------------------------------------------------------------

    async def credentials(
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
        """Credentials for `user` on `site` with `scopes` and more than `min_remaining` left.

        `attributes`, `groups` and `on_demand_access` ask for claims beyond `scp`, as in the sync
        client; they are part of the cache key, so a token is only served for the same claims."""
        key = _core.cache_key(site, user, scopes, _core.normalize_claims(attributes, groups, on_demand_access))
        return await self._credentials(key, _core.seconds(min_remaining) or 0.0, force_refresh)

    async def _credentials(self, key: CacheKey, m: float, force_refresh: bool = False) -> Credentials:
        """`credentials()` for a normalized key: the cache, single flight and refresh ahead."""
        if force_refresh:
            resp = await self._call("GetCredentials", _core.credentials_request(key, m, True))
            return self._store(key, _core.to_credentials(resp), m, used=True).credentials
        while True:
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
                fut = self._inflight[key] = asyncio.get_running_loop().create_future()
                # A task of its own: a cancelled leader does not cancel the callers sharing it.
                self._spawn(self._run_fetch(key, fut, m, used=True))
            assert fut is not None
            got = await asyncio.shield(fut)
            if leader or got.usable(self._clock(), m):
                return got.credentials

    async def _run_fetch(self, key: CacheKey, fut: "asyncio.Future[Entry]", m: float, used: bool,
                         ask: Optional[float] = None) -> None:
        try:
            try:
                resp = await self._call("GetCredentials", _core.credentials_request(key, ask if ask is not None else m))
            except BrokerError as e:
                if ask is None or e.reason != "INVALID_REQUEST":
                    raise
                resp = await self._call("GetCredentials", _core.credentials_request(key, m))
            entry = self._store(key, _core.to_credentials(resp), m, used=used)
        except BaseException as e:
            if self._inflight.get(key) is fut:
                del self._inflight[key]
            if not fut.done():
                if isinstance(e, asyncio.CancelledError):
                    fut.cancel()
                else:
                    fut.set_exception(e)
                    fut.exception()  # retrieved: no "never retrieved" warning without waiters
            if not isinstance(e, Exception):
                raise
            return
        if self._inflight.get(key) is fut:
            del self._inflight[key]
        if not fut.done():
            fut.set_result(entry)

    def _store(self, key: CacheKey, creds: Credentials, m: float, used: bool) -> Entry:
        now = self._clock()
        entry = _core.make_entry(creds, now, m, self.policy, used)
        if not self._closed:
            self._entries[key] = entry
            self._schedule(key, entry, now)
        return entry

    def _schedule(self, key: CacheKey, entry: Entry, now: float) -> None:
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(max(0.0, entry.refresh_at - now), self._refresh_due, key, entry)

    def _refresh_due(self, key: CacheKey, entry: Entry) -> None:
        self._timers.pop(key, None)
        if self._closed or self._entries.get(key) is not entry or key in self._inflight or not entry.used:
            return
        self._start_refresh(key, entry, self._clock())

    def _start_refresh(self, key: CacheKey, entry: Entry, now: float) -> None:
        fut = self._inflight[key] = asyncio.get_running_loop().create_future()
        ask = _core.refresh_min_remaining(entry, now)

        async def run() -> None:
            await self._run_fetch(key, fut, entry.min_remaining, used=False, ask=ask)
            if fut.cancelled():
                return
            err = fut.exception()
            if err is not None:
                _core.log.warning("background refresh of credentials for %s/%s failed: %s", key.site, key.user, err)
                if self._entries.get(key) is entry:
                    entry.refresh_at = _core.retry_refresh_at(entry, self._clock())
                    self._schedule(key, entry, self._clock())

        self._spawn(run())

    async def renew(
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
        """Tableau refused `refused_token`: invalidate it and return new credentials (shared by
        every task reporting the same token). Pass the claims the refused token was asked for."""
        key = _core.cache_key(site, user, scopes, _core.normalize_claims(attributes, groups, on_demand_access))
        m = _core.seconds(min_remaining) or 0.0
        entry = self._entries.get(key)
        if entry is not None and entry.credentials.token != refused_token and entry.usable(self._clock(), m):
            return entry.credentials
        rkey = (key, refused_token)
        fut = self._renewals.get(rkey)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = self._renewals[rkey] = asyncio.get_running_loop().create_future()
        try:
            try:
                await self.invalidate(refused_token)
            except BrokerError as e:
                _core.log.warning("invalidating a refused token failed: %s", e)
            creds = await self._credentials(key, m)
            if creds.token == refused_token:
                creds = await self._credentials(key, m, force_refresh=True)
            fut.set_result(creds)
            return creds
        except BaseException as e:
            if not fut.done():
                fut.set_exception(e)
                fut.exception()
            raise
        finally:
            self._renewals.pop(rkey, None)

    # --- the other RPCs --------------------------------------------------------------------------

    async def invalidate(self, token: str) -> Invalidation:
        for key in [k for k, e in self._entries.items() if e.credentials.token == token]:
            del self._entries[key]
            t = self._timers.pop(key, None)
            if t is not None:
                t.cancel()
        resp = await self._call("InvalidateCredentials", pb.InvalidateCredentialsRequest(token=token))
        return _core.to_invalidation(resp)

    async def mint_jwt(
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
        """A connected-app JWT (never cached), with claims beyond `scp` as `credentials()`."""
        c = _core.normalize_claims(attributes, groups, on_demand_access)
        return _core.to_jwt(await self._call("MintJwt", _core.mint_request(site, user, scopes, ttl, c)))

    async def whoami(self) -> WhoAmI:
        return _core.to_whoami(await self._call("WhoAmI", pb.WhoAmIRequest()))

    async def resolve_scopes(self, methods: Iterable[str] = (), scopes: Iterable[str] = ()) -> ResolvedScopes:
        return _core.to_resolved(await self._call("ResolveScopes", _core.resolve_request(methods, scopes)))

    def cached(self) -> List[Tuple[CacheKey, Credentials]]:
        return [(k, e.credentials) for k, e in self._entries.items()]
