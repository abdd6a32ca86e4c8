"""The requests adapter: X-Tableau-Auth from the broker, and a 401 recovered once."""

import requests
from ttb_testing import READ, USER, Counting

from tableau_token_broker.requests import BrokerAuth


def test_requests_with_the_brokers_token_and_a_401_recovered(system):
    counting = Counting()
    with system.client(interceptors=[counting]) as client:
        auth = BrokerAuth(client, site="finance", user=USER, scopes=[READ])
        creds = auth.credentials()
        url = f"{creds.server_url}/api/{creds.api_version}/sites/{creds.site_luid}/projects"
        with requests.Session() as http:
            # Per request: a REQUESTS_CA_BUNDLE in the environment would win over Session.verify.
            get = lambda u: http.get(u, auth=auth, timeout=30, verify=str(system.double_cert))  # noqa: E731
            first = get(url)
            assert first.status_code == 200, first.text
            assert first.request.headers["X-Tableau-Auth"] == auth.credentials().token
            old = first.request.headers["X-Tableau-Auth"]
            invalidations = counting.started["InvalidateCredentials"]
            signins = system.double_stats()["signins_ok"]

            system.end_tableau_sessions()
            again = get(url)

            assert again.status_code == 200, again.text
            assert [r.status_code for r in again.history] == [401]
            assert again.request.headers["X-Tableau-Auth"] != old
            assert counting.started["InvalidateCredentials"] == invalidations + 1
            assert system.double_stats()["signins_ok"] == signins + 1

            # A scope refusal (401002) is not a dead session: no invalidation, no retry.
            users = f"{creds.server_url}/api/{creds.api_version}/sites/{creds.site_luid}/users"
            refused = get(users)
            assert refused.status_code == 401 and 'code="401002"' in refused.text
            assert refused.history == []
            assert counting.started["InvalidateCredentials"] == invalidations + 1
