"""requests with the broker's session: `BrokerAuth(client, site=..., user=..., scopes=[...])`.

    auth = BrokerAuth(client, site="finance", user="svc-renderer", scopes=["tableau:content:read"])
    creds = auth.credentials()
    requests.get(f"{creds.server_url}/api/{creds.api_version}/sites/{creds.site_luid}/projects", auth=auth)

Each request gets `X-Tableau-Auth` from the client's cache. A 401 (other than a scope refusal,
401002) invalidates the token at the broker, takes a new one and sends the request once more.
Install with `pip install tableau-token-broker[requests]`.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, List, Optional

try:
    import requests as _requests
    from requests.auth import AuthBase
except ImportError as e:  # pragma: no cover
    raise ImportError(f"tableau_token_broker.requests needs requests: pip install 'tableau-token-broker[requests]' ({e})") from e

from . import _core, _tableau
from ._core import Attributes, Seconds
from .client import BrokerClient
from .models import Credentials

__all__ = ["BrokerAuth"]

log = logging.getLogger("tableau_token_broker.requests")

_RETRIED = "_ttb_retried"


class BrokerAuth(AuthBase):
    """An `AuthBase` that sends the broker's token as `X-Tableau-Auth`."""

    def __init__(self, client: BrokerClient, *, site: str, user: str, scopes: Iterable[str],
                 min_remaining: Optional[Seconds] = None, attributes: Optional[Attributes] = None,
                 groups: Optional[Iterable[str]] = None, on_demand_access: bool = False) -> None:
        self.client = client
        self.site = site
        self.user = user
        self.scopes: List[str] = [scopes] if isinstance(scopes, str) else list(scopes)
        self.min_remaining = min_remaining
        # The claims beyond `scp` (see `BrokerClient.credentials`), normalized once and sent with
        # every credentials() and renew(): a token renewed after a 401 keeps the same claims.
        self.claims = _core.normalize_claims(attributes, groups, on_demand_access)

    def __repr__(self) -> str:
        claims = f", claims={self.claims!r}" if self.claims else ""
        return f"BrokerAuth(site={self.site!r}, user={self.user!r}, scopes={self.scopes!r}{claims})"

    def credentials(self) -> Credentials:
        """The current credentials (server URL, API version, site LUID to build URLs with)."""
        c = self.claims
        return self.client.credentials(self.site, self.user, self.scopes, self.min_remaining,
                                       attributes=c.attribute_map(), groups=c.groups,
                                       on_demand_access=c.on_demand_access)

    def __call__(self, r: _requests.PreparedRequest) -> _requests.PreparedRequest:
        r.headers[_tableau.TABLEAU_AUTH] = self.credentials().token
        tell = getattr(r.body, "tell", None)
        position = None
        if callable(tell):
            try:
                position = tell()
            except (OSError, ValueError):
                position = None
        r.register_hook("response", lambda resp, **kw: self._on_response(resp, position, **kw))
        return r

    def _on_response(self, resp: _requests.Response, position: Optional[int], **kwargs: Any) -> _requests.Response:
        if resp.status_code != 401 or getattr(resp.request, _RETRIED, False):
            return resp
        code, _, detail = _tableau.error_of(resp.content)
        if code == _tableau.SCOPE_CODE:
            log.warning(_tableau.scope_explanation(self.scopes, resp.request.method or "", resp.url, code, detail))
            return resp
        refused = _tableau.header(resp.request.headers)
        if refused is None:
            return resp
        log.info("Tableau refused the broker's token (%s); invalidating it and retrying once", code)
        c = self.claims
        fresh = self.client.renew(self.site, self.user, self.scopes, refused, self.min_remaining,
                                  attributes=c.attribute_map(), groups=c.groups,
                                  on_demand_access=c.on_demand_access)
        body = resp.request.body
        if body is not None and not isinstance(body, (bytes, str)):
            if position is None:
                return resp  # a streamed body cannot be sent twice
            body.seek(position)
        resp.content  # noqa: B018  (read the body so the connection can be reused)
        resp.close()
        prep = resp.request.copy()
        prep.headers[_tableau.TABLEAU_AUTH] = fresh.token
        setattr(prep, _RETRIED, True)
        retried = resp.connection.send(prep, **kwargs)
        retried.history.append(resp)
        retried.request = prep
        return retried
