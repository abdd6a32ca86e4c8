"""tableauserverclient against the Tableau double.

Starts the `tableau-double` program (binary from $DOUBLE_BIN, default target/debug/tableau-double),
signs in with TSC.JWTAuth using a JWT made by PyJWT (not the
broker's minting code), lists content, is refused a method its scopes do not cover, signs out,
and checks that a wrong aud, kid, iss, or an exp 11 minutes out each give their documented
sub-code.
"""

import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import jwt
import pytest
import tableauserverclient as TSC
from support import Double
from tableauserverclient.server.endpoint.exceptions import FailedSignInError, ServerResponseError

# TSC raises FailedSignInError for every 401 (sign-in or not), ServerResponseError for other errors.
TABLEAU_ERRORS = (FailedSignInError, ServerResponseError)

CONFIG = Path(__file__).resolve().parent / "fake-tableau.toml"

CLIENT_ID = "8e1b7172-39c3-4a32-887e-fc2b4119f56d"
SECRET_ID = "b0115bf9-3a4b-4c91-b009-cf0c170b1a56"
SECRET = "python-test-secret-value"
SITE = "finance"
SITE_LUID = "9a8b7c6d-5e4f-4a2b-8c0d-9e8f7a6b5c4d"
USER = "alice@example.com"
USER_LUID = "9f9e9d9c-8b8a-4f8e-8d7c-7b7a6f6d6e6d"


@pytest.fixture(scope="module")
def fake_url(double_bin):
    double = Double(double_bin, CONFIG)
    try:
        yield double.url
    finally:
        code = double.stop()
    assert code == 0, f"fake-tableau exited with {code} on SIGTERM"


def make_jwt(scopes, *, aud="tableau", kid=SECRET_ID, iss=CLIENT_ID, lifetime=300, secret=SECRET):
    now = int(time.time())
    claims = {
        "iss": iss,
        "sub": USER,
        "aud": aud,
        "iat": now,
        "exp": now + lifetime,
        "jti": str(uuid.uuid4()),
        "scp": scopes,
    }
    return jwt.encode(claims, secret, algorithm="HS256", headers={"kid": kid, "iss": iss})


def stats(url):
    with urllib.request.urlopen(f"{url}/_fake/stats", timeout=10) as resp:
        return json.load(resp)


def test_sign_in_list_refused_and_sign_out(fake_url):
    server = TSC.Server(fake_url)
    server.auth.sign_in(TSC.JWTAuth(make_jwt(["tableau:content:read"]), site_id=SITE))
    assert server.site_id == SITE_LUID
    assert server.user_id == USER_LUID
    token = server.auth_token
    assert len(token) == 32 and all(c in "0123456789abcdef" for c in token)

    projects, pagination = server.projects.get()
    assert [p.name for p in projects] == ["Default", "Finance", "Quarterly"]
    assert pagination.total_available == 3
    workbooks = list(TSC.Pager(server.workbooks))
    assert {w.name for w in workbooks} == {"Superstore", "Budget"}
    superstore = next(w for w in workbooks if w.name == "Superstore")
    assert superstore.project_name == "Default"
    assert superstore.owner_id == USER_LUID
    assert superstore.tags == {"sales", "sample"}
    server.workbooks.populate_views(superstore)
    assert [v.name for v in superstore.views] == ["Overview", "Product"]

    # Users need tableau:users:read, which this JWT lacks.
    with pytest.raises(TABLEAU_ERRORS) as refused:
        server.users.get()
    assert refused.value.code == "401002"

    server.auth.sign_out()
    assert not server.is_signed_in()

    # The ended token is refused with 401000.
    req = urllib.request.Request(
        f"{fake_url}/api/3.17/sites/{SITE_LUID}/projects", headers={"X-Tableau-Auth": token}
    )
    with pytest.raises(urllib.error.HTTPError) as ended:
        urllib.request.urlopen(req, timeout=10)
    assert ended.value.code == 401
    assert 'code="401000"' in ended.value.read().decode()

    s = stats(fake_url)
    assert s["signouts"] >= 1
    assert s["denied_by_scope"] >= 1
    assert s["requests"]["Query Projects"] >= 1


@pytest.mark.parametrize(
    "name, kwargs, sub_code",
    [
        ("wrong aud", {"aud": "tableau-server"}, 10084),
        ("wrong kid", {"kid": "00000000-0000-4000-8000-000000000000"}, 10085),
        ("wrong iss", {"iss": "00000000-0000-4000-8000-0000000000ff"}, 10085),
        ("exp 11 minutes out", {"lifetime": 11 * 60}, 16),
        ("wrong secret", {"secret": "not-the-secret"}, 10084),
    ],
)
def test_bad_jwts_give_documented_sub_codes(fake_url, name, kwargs, sub_code):
    before = stats(fake_url)["signins_failed"].get(str(sub_code), 0)
    server = TSC.Server(fake_url)
    with pytest.raises(TABLEAU_ERRORS) as failed:
        server.auth.sign_in(TSC.JWTAuth(make_jwt(["tableau:content:read"], **kwargs), site_id=SITE))
    assert failed.value.code == "401001", name
    assert failed.value.detail.endswith(f"({sub_code})"), f"{name}: {failed.value.detail}"
    assert stats(fake_url)["signins_failed"][str(sub_code)] == before + 1
