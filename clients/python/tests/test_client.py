"""The sync client's calls, errors and single flight against the real broker."""

import datetime as dt
import threading

import grpc
import pytest
from ttb_testing import DOWNLOAD, FINANCE_LUID, READ, RENDERER, RENDERER_LUID, USER, Counting, CountingClock

from tableau_token_broker import BrokerClient, BrokerError, ConfigurationError, Credentials


def test_credentials_whoami_mint_and_resolve(system):
    with system.client() as client:
        creds = client.credentials("finance", USER, [READ])
        assert isinstance(creds, Credentials)
        assert creds.site_luid == FINANCE_LUID and creds.user_luid == RENDERER_LUID
        assert creds.site_content_url == "finance"
        assert creds.server_url == system.double and creds.api_version
        assert creds.scopes == (READ,)
        assert len(creds.token) == 32
        assert creds.expires_at > dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=200)
        assert creds.token not in repr(creds) and "token" not in repr(creds), repr(creds)
        # Cached in the process: the same object, no second RPC.
        assert client.credentials("finance", USER, [READ, READ]) is creds

        me = client.whoami()
        assert me.identity == RENDERER and me.source == "uri_san" and me.matched_entry == RENDERER
        assert me.grants[0].sites == ("finance", "short")

        jwt = client.mint_jwt("finance", USER, [READ], ttl=dt.timedelta(minutes=2))
        assert jwt.jwt.count(".") == 2 and jwt.jti and jwt.jwt not in repr(jwt)

        resolved = client.resolve_scopes(methods=["Query Projects", "No Such Method"], scopes=[READ])
        assert resolved.required_scopes == (READ,)
        assert resolved.unknown == ("No Such Method",)
        assert any(m.name == "Query Projects" for m in resolved.scopes[0].methods)


def test_errors_carry_the_brokers_reason(system):
    with system.client() as client:
        with pytest.raises(BrokerError) as refused:
            client.credentials("finance", USER, ["tableau:users:read"])
        e = refused.value
        assert e.code == grpc.StatusCode.PERMISSION_DENIED
        assert e.reason == "SCOPE_NOT_ALLOWED"
        assert "tableau:users:read" in e.message
        assert str(e).startswith("PERMISSION_DENIED (SCOPE_NOT_ALLOWED): ")
        with pytest.raises(BrokerError) as unknown:
            client.credentials("nowhere", USER, [READ])
        # A site outside the grant is refused before the broker looks it up.
        assert unknown.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert unknown.value.reason == "SITE_NOT_ALLOWED"


def test_from_env_reads_the_clis_variables(system, monkeypatch):
    cert, key = system.cert("ops")
    for var in ("TTB_CERT", "TTB_KEY", "TTB_CA", "TTB_SERVER_NAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TTB_ADDR", system.addr)
    with pytest.raises(ConfigurationError, match="TTB_CERT, TTB_KEY, TTB_CA"):
        BrokerClient.from_env()
    monkeypatch.setenv("TTB_CERT", cert)
    monkeypatch.setenv("TTB_KEY", key)
    monkeypatch.setenv("TTB_CA", system.ca)
    monkeypatch.setenv("TTB_SERVER_NAME", "localhost")
    with BrokerClient.from_env() as client:
        assert client.server_name == "localhost"
        assert client.whoami().identity == "spiffe://demo.local/ns/ops/sa/admin"


def test_fifty_concurrent_callers_of_one_key_cause_one_rpc(system):
    clock = CountingClock()
    # The one GetCredentials is held until all 50 callers have decided (each reads the clock
    # once, under the client's lock): every one of them found it in flight.
    counting = Counting(gate=lambda method: clock.wait_for(50) if method == "GetCredentials" else None)
    before = system.rpcs("GetCredentials")
    with system.client(interceptors=[counting], clock=clock) as client:
        start = threading.Barrier(50)
        results, errors = [], []

        def call():
            start.wait()
            try:
                results.append(client.credentials("finance", USER, [DOWNLOAD, READ]))
            except Exception as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=call) for _ in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors
        assert len(results) == 50 and len({c.token for c in results}) == 1
    assert counting.started["GetCredentials"] == 1, counting.started
    assert system.rpcs("GetCredentials") == before + 1
