"""Python client of tableau-token-broker: Tableau credentials over mTLS in one line.

    from tableau_token_broker import BrokerClient

    client = BrokerClient.from_env()            # TTB_ADDR, TTB_CERT, TTB_KEY, TTB_CA
    creds = client.credentials("finance", "svc-renderer", ["tableau:content:read"])

`tableau_token_broker.tsc.server(...)` gives a signed-in tableauserverclient Server,
`tableau_token_broker.requests.BrokerAuth` an auth for requests, and `tableau_token_broker.aio`
the asyncio client.
"""

from ._core import RetryPolicy
from .client import BrokerClient
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

__version__ = "0.1.0"

__all__ = [
    "BrokerClient",
    "BrokerError",
    "ConfigurationError",
    "Credentials",
    "Grant",
    "Invalidation",
    "Jwt",
    "MethodInfo",
    "ResolvedScopes",
    "RetryPolicy",
    "ScopeInfo",
    "WhoAmI",
]
