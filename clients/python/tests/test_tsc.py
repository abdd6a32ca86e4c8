"""The TSC adapter: a signed-in tableauserverclient Server from the broker's token, a token the
double ended recovered with one invalidation and one new sign-in, and scope errors explained."""

import pytest
import tableauserverclient as TSC
from tableauserverclient.server.endpoint.exceptions import FailedSignInError, ServerResponseError
from ttb_testing import FINANCE_LUID, READ, RENDERER_LUID, USER, Counting

from tableau_token_broker import tsc


def make_server(system, client, scopes=(READ,)):
    return tsc.server(client, site="finance", user=USER, scopes=list(scopes),
                      http_options={"verify": str(system.double_cert)})


def test_lists_workbooks_and_projects(system):
    with system.client() as client:
        creds = client.credentials("finance", USER, [READ])
        server = make_server(system, client)
        assert server.is_signed_in()
        assert server.auth_token == creds.token
        assert server.site_id == FINANCE_LUID and server.user_id == RENDERER_LUID
        assert server.site_url == "finance"
        assert server.version == creds.api_version
        assert server.server_address == system.double and server.server_address.startswith("https://")

        projects, pagination = server.projects.get()
        assert [p.name for p in projects] == ["Default", "Finance", "Quarterly"]
        assert pagination.total_available == 3
        workbooks = list(TSC.Pager(server.workbooks))
        assert {w.name for w in workbooks} == {"Superstore", "Budget"}
        assert all(w.owner_id == RENDERER_LUID for w in workbooks)


def test_an_ended_session_is_recovered_with_one_invalidation_and_one_sign_in(system):
    counting = Counting()
    with system.client(interceptors=[counting]) as client:
        server = make_server(system, client)
        server.projects.get()
        old = server.auth_token
        rpcs = dict(counting.started)
        double_before = system.double_stats()
        invalidations = system.rpcs("InvalidateCredentials")
        sign_ins = system.metric("sign_ins_total", site="finance", outcome="ok")
        audited = len(system.audit_records("InvalidateCredentials"))

        system.end_tableau_sessions()  # the token now gets 401000
        projects, _ = server.projects.get()

        assert [p.name for p in projects] == ["Default", "Finance", "Quarterly"]
        assert server.auth_token != old
        double_after = system.double_stats()
        assert double_after["signins_ok"] == double_before["signins_ok"] + 1, double_after
        # The 401000 (the broker's sign-out of the ended session may add one more).
        assert double_after["unauthenticated"] >= double_before["unauthenticated"] + 1, double_after
        # Client side: one InvalidateCredentials, one GetCredentials.
        assert counting.started["InvalidateCredentials"] == rpcs.get("InvalidateCredentials", 0) + 1
        assert counting.started["GetCredentials"] == rpcs.get("GetCredentials", 0) + 1
        # Broker side: one invalidation (metrics and audit), one sign-in at Tableau.
        assert system.rpcs("InvalidateCredentials") == invalidations + 1
        assert system.metric("sign_ins_total", site="finance", outcome="ok") == sign_ins + 1
        records = system.audit_records("InvalidateCredentials")[audited:]
        assert len(records) == 1 and records[0]["outcome"] == "ok", records
        # The new token is the client's cached one.
        assert client.credentials("finance", USER, [READ]).token == server.auth_token


def test_scope_errors_name_the_scopes_asked_for(system):
    with system.client() as client:
        server = make_server(system, client)
        with pytest.raises(tsc.ScopeError) as refused:
            server.users.get()  # needs tableau:users:read
        e = refused.value
        assert isinstance(e, ServerResponseError) and isinstance(e, FailedSignInError)
        assert e.code == "401002" and e.scopes == (READ,)
        assert READ in str(e) and "GET" in str(e) and "scopes" in str(e)


def test_sign_out_leaves_the_brokers_session(system):
    with system.client() as client:
        server = make_server(system, client)
        token = server.auth_token
        signouts = system.double_stats()["signouts"]
        server.auth.sign_out()
        assert not server.is_signed_in()
        assert system.double_stats()["signouts"] == signouts
        assert client.credentials("finance", USER, [READ]).token == token
