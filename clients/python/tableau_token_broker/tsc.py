"""tableauserverclient (TSC) with the broker's session: `server(client, site=..., user=..., scopes=[...])`.

TSC cannot be seeded with an existing token through its public API, so the adapter sets the
session the way TSC's own sign-in does (`Server._set_auth`) and hooks the requests session that
every TSC endpoint sends through (`Server.session`, made by its `session_factory`):

- each request that carries the broker's token first asks the client's cache for the current one,
  so a refreshed token is picked up without a new `Server`;
- a 401 for that token (401000: expired or ended session) invalidates it at the broker, takes a
  new one and sends the request once more;
- a scope refusal (Tableau code 401002) raises `ScopeError`, which says which scopes were asked
  for; it is a TSC `ServerResponseError` and `FailedSignInError`, so existing handlers still work.

`server.auth.sign_out()` only forgets the token in this `Server`: the session belongs to the
broker, which shares it with other callers and signs it out itself.

Install with `pip install tableau-token-broker[tsc]`.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, List, Optional

try:
    import requests as _requests
    import tableauserverclient as TSC
    from tableauserverclient.server.endpoint.exceptions import FailedSignInError, ServerResponseError
except ImportError as e:  # pragma: no cover
    raise ImportError(f"tableau_token_broker.tsc needs tableauserverclient: pip install 'tableau-token-broker[tsc]' ({e})") from e

from . import _core, _tableau
from ._core import Attributes, Seconds
from .client import BrokerClient
from .models import Credentials

__all__ = ["server", "ScopeError", "BrokerSession"]

log = logging.getLogger("tableau_token_broker.tsc")


class ScopeError(ServerResponseError, FailedSignInError):
    """Tableau refused a call because the token's scopes do not cover it (code 401002)."""

    def __init__(self, code: str, summary: str, detail: str, url: Optional[str], scopes: Iterable[str], method: str):
        self.scopes = tuple(scopes)
        self.method = method
        super().__init__(code, summary, detail, url)

    def __str__(self) -> str:
        return _tableau.scope_explanation(self.scopes, self.method, self.url or "", self.code, self.detail)


class BrokerSession:
    """The broker's side of one TSC `Server`: which credentials it asks for, and the hook on its
    requests sessions. Reach it as `server.broker`."""

    def __init__(self, client: BrokerClient, site: str, user: str, scopes: Iterable[str],
                 min_remaining: Optional[Seconds] = None, *, attributes: Optional[Attributes] = None,
                 groups: Optional[Iterable[str]] = None, on_demand_access: bool = False):
        self.client = client
        self.site = site
        self.user = user
        self.scopes: List[str] = [scopes] if isinstance(scopes, str) else list(scopes)
        self.min_remaining = min_remaining
        # Normalized once (a generator of groups would otherwise be used up by the first call),
        # and passed to every credentials() and renew(): a renewed token must carry the claims
        # the Server was set up with, not fall back to a session without them.
        self.claims = _core.normalize_claims(attributes, groups, on_demand_access)
        self.server: Optional[TSC.Server] = None
        self._tokens: List[str] = []  # tokens this Server was given, newest last

    def credentials(self) -> Credentials:
        c = self.claims
        return self.client.credentials(self.site, self.user, self.scopes, self.min_remaining,
                                       attributes=c.attribute_map(), groups=c.groups,
                                       on_demand_access=c.on_demand_access)

    def renew(self, refused_token: str) -> Credentials:
        """New credentials (same scopes and claims) after Tableau refused `refused_token`."""
        c = self.claims
        return self.client.renew(self.site, self.user, self.scopes, refused_token, self.min_remaining,
                                 attributes=c.attribute_map(), groups=c.groups,
                                 on_demand_access=c.on_demand_access)

    def adopt(self, creds: Credentials) -> None:
        """Puts `creds` in the Server, as TSC's sign-in would."""
        assert self.server is not None
        self.server._set_auth(creds.site_luid, creds.user_luid, creds.token, creds.site_content_url)
        self._tokens = (self._tokens + [creds.token])[-8:]

    def owns(self, token: Optional[str]) -> bool:
        return token is not None and token in self._tokens

    def sign_out(self) -> None:
        """Forgets the token in this Server; the broker keeps (and shares) the session."""
        assert self.server is not None
        self.server._clear_auth()
        self._tokens = []

    def hook(self, session: _requests.Session) -> _requests.Session:
        """Wraps `session.request`, through which `get`, `post`, ... and so every TSC call go."""
        send = session.request

        def request(method: str, url: str, *args: Any, **kwargs: Any):
            headers = kwargs.get("headers")
            token = _tableau.header(headers)
            if not self.owns(token):
                return send(method, url, *args, **kwargs)  # not the broker's session: TSC's own
            creds = self.credentials()
            if creds.token != token:  # refreshed ahead of expiry, or renewed by another call
                self.adopt(creds)
                _tableau.set_header(headers, creds.token)
            position = _tell(kwargs.get("data"))
            resp = send(method, url, *args, **kwargs)
            if resp.status_code not in (401, 403):
                return resp
            code, summary, detail = _tableau.error_of(resp.content)
            if code == _tableau.SCOPE_CODE:
                raise ScopeError(code, summary, detail, url, self.scopes, method.upper())
            if resp.status_code != 401:
                return resp
            log.info("Tableau refused the broker's token (%s); invalidating it and retrying once", code)
            fresh = self.renew(creds.token)
            self.adopt(fresh)
            if not _rewind(kwargs.get("data"), position):
                return resp  # a streamed body cannot be sent twice; the next call uses the new token
            _tableau.set_header(headers, fresh.token)
            resp.close()
            retried = send(method, url, *args, **kwargs)
            if retried.status_code in (401, 403):
                code, summary, detail = _tableau.error_of(retried.content)
                if code == _tableau.SCOPE_CODE:
                    raise ScopeError(code, summary, detail, url, self.scopes, method.upper())
            return retried

        session.request = request  # type: ignore[method-assign,assignment]
        return session


def _tell(data: Any) -> Optional[int]:
    try:
        return data.tell() if hasattr(data, "seek") else None
    except (OSError, ValueError):
        return None


def _rewind(data: Any, position: Optional[int]) -> bool:
    """Whether the request body can be sent again (rewound if it is a file)."""
    if data is None or isinstance(data, (bytes, bytearray, str, dict, list, tuple)):
        return True
    if position is not None:
        try:
            data.seek(position)
            return True
        except (OSError, ValueError):
            return False
    return False


def server(
    client: BrokerClient,
    *,
    site: str,
    user: str,
    scopes: Iterable[str],
    min_remaining: Optional[Seconds] = None,
    http_options: Optional[dict] = None,
    session_factory: Optional[Callable[[], _requests.Session]] = None,
    attributes: Optional[Attributes] = None,
    groups: Optional[Iterable[str]] = None,
    on_demand_access: bool = False,
) -> TSC.Server:
    """A `tableauserverclient.Server` signed in with the broker's token for `user` on the broker's
    `site` with `scopes`: its auth token, site ID (LUID), user ID and site URL are set, its API
    version is the one the broker signed in with, and 401s are recovered (see the module doc).

    `http_options` go to TSC (e.g. `{"verify": "/path/to/ca.pem"}`); `session_factory` makes the
    requests sessions the adapter hooks (default `requests.Session`). `attributes`, `groups` and
    `on_demand_access` are the claims beyond `scp` of `BrokerClient.credentials()`: the session,
    and every token that replaces it, is signed in with them."""
    broker = BrokerSession(client, site, user, scopes, min_remaining, attributes=attributes,
                           groups=groups, on_demand_access=on_demand_access)
    creds = broker.credentials()
    make = session_factory or _requests.Session
    srv = TSC.Server(
        creds.server_url,
        use_server_version=False,
        http_options=http_options,
        session_factory=lambda: broker.hook(make()),
    )
    srv.version = creds.api_version
    broker.server = srv
    broker.adopt(creds)
    srv.auth.sign_out = broker.sign_out  # type: ignore[method-assign]
    srv.broker = broker  # type: ignore[attr-defined]
    return srv
