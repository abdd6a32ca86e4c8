"""The broker as an OAuth 2.0 issuer (EAS), checked by an implementation that is not ours: PyJWT's
PyJWKClient, pointed at the `jwks_uri` of the demo's issuer metadata, verifies a JWT that MintJwt
returned for the demo's EAS site `cloud`."""
import json
import ssl
import urllib.request
import uuid

import jwt

from support import generate_stubs, mtls_channel

CLOUD_LUID = "c10bd000-5e4f-4a2b-8c0d-9e8f7a6b5c4d"


def test_pyjwk_client_verifies_an_eas_jwt_from_mint_jwt(demo, tmp_path):
    assert demo.issuer, "the demo did not print its issuer"
    ctx = ssl.create_default_context(cafile=str(demo.state / "pki" / "ca.crt"))
    with urllib.request.urlopen(f"{demo.issuer}/.well-known/openid-configuration", context=ctx, timeout=10) as r:
        assert "max-age" in r.headers["Cache-Control"]
        metadata = json.load(r)
    assert metadata["issuer"] == demo.issuer
    with urllib.request.urlopen(f"{demo.issuer}/.well-known/oauth-authorization-server", context=ctx, timeout=10) as r:
        assert json.load(r) == metadata

    pb2, pb2_grpc = generate_stubs(tmp_path / "stubs")
    with mtls_channel(demo.state, "renderer", demo.addr) as channel:
        minted = pb2_grpc.TokenBrokerStub(channel).MintJwt(
            pb2.MintJwtRequest(site="cloud", user="svc-renderer", scopes=["tableau:views:embed"]),
            timeout=30,
        )
    token = minted.jwt
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256" and header["kid"], header

    jwks = jwt.PyJWKClient(metadata["jwks_uri"], ssl_context=ctx)
    key = jwks.get_signing_key_from_jwt(token)
    assert key.key_id == header["kid"]
    claims = jwt.decode(
        token, key.key, algorithms=["ES256", "RS256"],
        audience=f"tableau:{CLOUD_LUID}", issuer=metadata["issuer"],
    )
    assert claims["sub"] == "svc-renderer"
    assert claims["scp"] == ["tableau:views:embed"]
    assert uuid.UUID(claims["jti"]).version == 4
    assert claims["exp"] - claims["iat"] <= 10 * 60 + 5

    # Another key does not verify it.
    for other in jwt.PyJWKClient(metadata["jwks_uri"], ssl_context=ctx).get_signing_keys():
        assert other.key_id == header["kid"]
    try:
        jwt.decode(token, key.key, algorithms=["ES256"], audience="tableau:someone-else", issuer=metadata["issuer"])
    except jwt.InvalidAudienceError:
        return
    raise AssertionError("a JWT for another audience verified")
