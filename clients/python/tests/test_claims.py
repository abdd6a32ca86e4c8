"""Claims beyond scp (attributes, groups, on-demand access): sent to the broker, checked against
the renderer's claims grant (ttb_testing.broker_toml), signed into the JWT Tableau sees (the
double's /_fake/session/claims), and part of the client's cache key."""

import asyncio
import base64
import json
import threading
import uuid

import grpc
import pytest
import requests
from ttb_testing import DOWNLOAD, GROUP_GLOB, READ, REGIONS, USER, AioCounting, Counting, CountingClock

from tableau_token_broker import BrokerError, _core, tsc
from tableau_token_broker.requests import BrokerAuth

GROUPS_CLAIM = "https://tableau.com/groups"
ODA_CLAIM = "https://tableau.com/oda"


def unique(prefix="dept"):
    """A department value no other test asked for: the broker's cache (shared by the whole
    session) cannot already hold a session for these claims, so a new one means a sign-in."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def jwt_claims(jwt):
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


# --- the cache key, without the broker -----------------------------------------------------------


def test_cache_key_differs_by_claims_and_ignores_their_order():
    key = lambda *a, **kw: _core.cache_key("finance", USER, [READ], _core.normalize_claims(*a, **kw))  # noqa: E731

    plain = _core.cache_key("finance", USER, [READ])
    assert key() == plain and key({}, [], False) == plain
    emea = key({"region": ["emea"]})
    assert emea != plain
    assert key({"region": ["us"]}) != emea
    assert key({"region": ["emea"], "department": "x"}) != emea
    assert key(groups=["Finance-EU"]) != plain
    assert key(groups=["Finance-EU"]) != key(groups=["Finance-US"])
    assert key(on_demand_access=True) != plain
    # Order and repetition do not matter: attribute names, values, groups.
    assert key({"region": ["us", "emea"], "department": "x"}, ["b", "a"], True) == key(
        {"department": ["x", "x"], "region": ("emea", "us", "emea")}, ("a", "b", "a"), True
    )
    # A lone string is one value (not its characters), for attributes and groups alike.
    assert key({"region": "emea"}) == emea
    assert key({"region": "emea"}) != key({"region": ["e", "m", "a"]})
    assert key(groups="Finance-EU") == key(groups=["Finance-EU"])
    # Values are not stripped: " emea" is a different value at the broker and in Tableau.
    assert key({"region": [" emea"]}) != emea
    with pytest.raises(TypeError, match="region"):
        key({"region": [1]})
    # Values stay out of repr (the cache key shows in cached() and logs).
    assert "emea" not in repr(emea) and "region" in repr(emea)


def test_requests_carry_the_normalized_claims():
    c = _core.normalize_claims({"region": ["us", "emea", "us"], "department": "x"}, ["b", "a", "a"], True)
    for req in (
        _core.credentials_request(_core.cache_key("finance", USER, [READ], c), 60),
        _core.mint_request("finance", USER, [READ], None, c),
    ):
        assert {k: list(v.values) for k, v in req.attributes.items()} == {"region": ["emea", "us"], "department": ["x"]}
        assert list(req.groups) == ["a", "b"] and req.on_demand_access is True
    plain = _core.credentials_request(_core.cache_key("finance", USER, [READ]), None)
    assert not plain.attributes and not plain.groups and not plain.on_demand_access


# --- against the broker --------------------------------------------------------------------------


def test_allowed_claims_get_credentials_signed_in_with_them(system):
    dept = unique()
    with system.client() as client:
        creds = client.credentials("finance", USER, [READ], attributes={"region": ["us", "emea"], "department": dept},
                                   groups=["Finance-EU", "Finance-EU"], on_demand_access=True)
        assert not creds.from_cache
        claims = system.session_claims(creds.token)
        assert claims["region"] == ["emea", "us"]  # several values: an array
        assert claims["department"] == dept  # one value: a string
        assert claims[GROUPS_CLAIM] == ["Finance-EU"]
        assert claims[ODA_CLAIM] == "true"
        # A session without claims is another session, whose JWT carries none of them.
        plain = client.credentials("finance", USER, [READ])
        assert plain.token != creds.token
        assert not {"region", "department", GROUPS_CLAIM, ODA_CLAIM} & set(system.session_claims(plain.token))

        jwt = client.mint_jwt("finance", USER, [READ], attributes={"region": "emea"}, groups=["Finance-US"],
                              on_demand_access=True)
        minted = jwt_claims(jwt.jwt)
        assert minted["region"] == "emea" and minted[GROUPS_CLAIM] == ["Finance-US"] and minted[ODA_CLAIM] == "true"


def test_whoami_shows_the_claims_each_grant_allows(system):
    with system.client() as client:
        grants = client.whoami().grants
    plain, with_claims = grants
    assert (plain.attributes, plain.groups, plain.on_demand_access) == ({}, (), False)
    assert with_claims.attributes == {"department": ("*",), "region": REGIONS}
    assert with_claims.groups == (GROUP_GLOB,)
    assert with_claims.on_demand_access is True
    hash(with_claims)  # a Grant stays hashable, its attributes left out of the hash


def test_claims_outside_the_grant_are_refused_with_the_brokers_reason(system):
    with system.client() as client:
        # The message names the attribute (not always the value: the broker reports what the first
        # grant covering the request refuses, here the renderer's grant without claims).
        cases = [
            (dict(attributes={"region": "apac"}), "ATTRIBUTE_NOT_ALLOWED", "region"),
            (dict(attributes={"team": "x"}), "ATTRIBUTE_NOT_ALLOWED", "team"),
            (dict(groups=["HR-Team"]), "GROUP_NOT_ALLOWED", "HR-Team"),
        ]
        for kwargs, reason, named in cases:
            for call in (client.credentials, client.mint_jwt):
                with pytest.raises(BrokerError) as refused:
                    call("finance", USER, [READ], **kwargs)
                e = refused.value
                assert e.code == grpc.StatusCode.PERMISSION_DENIED, (call, kwargs, e)
                assert e.reason == reason, (call, kwargs, e)
                assert named in e.message, (call, kwargs, e)
        # On-demand access is allowed on finance only: "short" has the grant without claims.
        with pytest.raises(BrokerError) as refused:
            client.credentials("short", USER, [READ], on_demand_access=True)
        assert refused.value.reason == "ON_DEMAND_ACCESS_NOT_ALLOWED"
        assert client.credentials("finance", USER, [READ], on_demand_access=True).token
        # Nothing refused was cached.
        assert all(k.claims.attribute_map().get("region") != ("apac",) for k, _ in client.cached())


def test_different_claims_sign_in_apart_and_the_same_claims_are_cached(system):
    dept = unique()
    counting = Counting()
    with system.client(interceptors=[counting]) as client:
        signins = system.double_stats()["signins_ok"]
        emea = client.credentials("finance", USER, [READ], attributes={"region": "emea", "department": dept})
        us = client.credentials("finance", USER, [READ], attributes={"region": "us", "department": dept})
        assert emea.token != us.token
        assert system.double_stats()["signins_ok"] == signins + 2
        assert counting.started["GetCredentials"] == 2
        assert system.session_claims(emea.token)["region"] == "emea"
        assert system.session_claims(us.token)["region"] == "us"
        # The same claims written differently: the client's cache, no RPC.
        again = client.credentials("finance", USER, [READ],
                                   attributes={"department": [dept, dept], "region": ["emea"]})
        assert again is emea
        assert counting.started["GetCredentials"] == 2
        assert system.double_stats()["signins_ok"] == signins + 2


def test_single_flight_is_per_claim_set(system):
    dept = unique()
    clock = CountingClock()
    # Each GetCredentials is held until all 20 callers have decided: 10 per claim set, so each
    # set's followers find their leader's call in flight.
    counting = Counting(gate=lambda method: clock.wait_for(20) if method == "GetCredentials" else None)
    with system.client(interceptors=[counting], clock=clock) as client:
        start = threading.Barrier(20)
        results, errors = {"emea": [], "us": []}, []

        def call(region):
            start.wait()
            try:
                results[region].append(client.credentials(
                    "finance", USER, [READ, DOWNLOAD], attributes={"region": region, "department": dept}))
            except Exception as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=call, args=(r,)) for r in ("emea", "us") for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors
        tokens = {r: {c.token for c in cs} for r, cs in results.items()}
        assert all(len(results[r]) == 10 and len(tokens[r]) == 1 for r in results), tokens
        assert tokens["emea"] != tokens["us"]
    assert counting.started["GetCredentials"] == 2, counting.started


def test_aio_claims(system):
    dept = unique()

    async def main():
        counting = AioCounting()
        async with system.aio_client(interceptors=[counting]) as client:
            emea = await client.credentials("finance", USER, [READ], attributes={"region": "emea", "department": dept})
            us = await client.credentials("finance", USER, [READ], attributes={"region": "us", "department": dept})
            assert emea.token != us.token and counting.started["GetCredentials"] == 2
            again = await client.credentials("finance", USER, [READ], attributes={"department": dept, "region": ["emea"]})
            assert again is emea and counting.started["GetCredentials"] == 2
            assert system.session_claims(us.token)["region"] == "us"
            with pytest.raises(BrokerError) as refused:
                await client.credentials("finance", USER, [READ], attributes={"region": "apac"})
            assert refused.value.reason == "ATTRIBUTE_NOT_ALLOWED"
            jwt = await client.mint_jwt("finance", USER, [READ], groups=["Finance-EU"])
            assert jwt_claims(jwt.jwt)[GROUPS_CLAIM] == ["Finance-EU"]
            with pytest.raises(BrokerError) as refused:
                await client.mint_jwt("finance", USER, [READ], groups=["HR-Team"])
            assert refused.value.reason == "GROUP_NOT_ALLOWED"

    asyncio.run(main())


# --- the adapters --------------------------------------------------------------------------------


def test_tsc_server_keeps_its_claims_across_a_renewal(system):
    dept = unique()
    claims = dict(attributes={"region": "emea", "department": dept}, groups=["Finance-EU"], on_demand_access=True)
    with system.client() as client:
        server = tsc.server(client, site="finance", user=USER, scopes=[READ],
                            http_options={"verify": str(system.double_cert)}, **claims)
        assert server.auth_token == client.credentials("finance", USER, [READ], **claims).token
        assert server.auth_token != client.credentials("finance", USER, [READ]).token
        seen = system.session_claims(server.auth_token)
        assert seen["department"] == dept and seen[GROUPS_CLAIM] == ["Finance-EU"] and seen[ODA_CLAIM] == "true"
        old = server.auth_token

        system.end_tableau_sessions()  # the token now gets 401000: renewed with the same claims
        projects, _ = server.projects.get()

        assert [p.name for p in projects] == ["Default", "Finance", "Quarterly"]
        assert server.auth_token != old
        seen = system.session_claims(server.auth_token)
        assert seen["region"] == "emea" and seen["department"] == dept and seen[ODA_CLAIM] == "true"
        assert client.credentials("finance", USER, [READ], **claims).token == server.auth_token


def test_requests_auth_keeps_its_claims_across_a_renewal(system):
    dept = unique()
    with system.client() as client:
        auth = BrokerAuth(client, site="finance", user=USER, scopes=[READ],
                          attributes={"region": ["us"], "department": dept}, groups="Finance-US")
        assert "department" in repr(auth) and dept not in repr(auth)
        creds = auth.credentials()
        assert system.session_claims(creds.token)["department"] == dept
        url = f"{creds.server_url}/api/{creds.api_version}/sites/{creds.site_luid}/projects"
        with requests.Session() as http:
            get = lambda u: http.get(u, auth=auth, timeout=30, verify=str(system.double_cert))  # noqa: E731
            assert get(url).status_code == 200
            system.end_tableau_sessions()
            again = get(url)
            assert again.status_code == 200, again.text
            assert [r.status_code for r in again.history] == [401]
            token = again.request.headers["X-Tableau-Auth"]
            assert token != creds.token
            seen = system.session_claims(token)
            assert seen["region"] == "us" and seen["department"] == dept and seen[GROUPS_CLAIM] == ["Finance-US"]
