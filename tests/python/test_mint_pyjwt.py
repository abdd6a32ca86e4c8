"""A JWT minted by the broker, decoded by PyJWT (an implementation that is not ours)."""
import subprocess
import time
import uuid

import jwt

SECRET = "pyjwt-interop-secret-value-0123456789"


def write_config(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    cfg = tmp_path / "broker.toml"
    cfg.write_text(f"""
version = 1
[sites.finance]
server_url = "https://tableau.example.com"
api_version = "3.22"
content_url = "finance"
jwt_ttl = "7m"
[sites.finance.connected_app]
client_id = "8e1b7172-39c3-4a32-887e-fc2b4119f56d"
secret_id = "b0115bf9-3a4b-4c91-b009-cf0c170b1a56"
secret_file = "{secret}"
[[callers]]
identity = "spiffe://example.org/a"
[[callers.grants]]
sites = ["finance"]
users = ["rmohan@tableau.com"]
scopes = ["tableau:content:read"]
""")
    return cfg


def test_pyjwt_decodes_minted_token(tmp_path, ttb_bin):
    cfg = write_config(tmp_path)
    before = int(time.time())
    out = subprocess.run(
        [ttb_bin, "jwt", "--config", str(cfg), "--site", "finance", "--user", "rmohan@tableau.com",
         "--scope", "tableau:views:download", "--scope", "tableau:content:read", "--scope", "tableau:content:read"],
        check=True, capture_output=True, text=True,
    )
    token = out.stdout.strip()
    assert SECRET not in out.stdout + out.stderr

    header = jwt.get_unverified_header(token)
    assert header == {
        "alg": "HS256",
        "typ": "JWT",
        "kid": "b0115bf9-3a4b-4c91-b009-cf0c170b1a56",
        "iss": "8e1b7172-39c3-4a32-887e-fc2b4119f56d",
    }
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="tableau")
    assert claims["iss"] == "8e1b7172-39c3-4a32-887e-fc2b4119f56d"
    assert claims["sub"] == "rmohan@tableau.com"
    assert claims["aud"] == "tableau"
    assert claims["scp"] == ["tableau:content:read", "tableau:views:download"]
    assert isinstance(claims["scp"], list)
    assert uuid.UUID(claims["jti"]).version == 4
    assert claims["exp"] - claims["iat"] == 7 * 60
    assert before - 5 <= claims["iat"] <= int(time.time()) + 5


def test_wrong_secret_fails_verification(tmp_path, ttb_bin):
    cfg = write_config(tmp_path)
    token = subprocess.run(
        [ttb_bin, "jwt", "--config", str(cfg), "--site", "finance", "--user", "u", "--scope", "tableau:content:read"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    try:
        jwt.decode(token, "not-the-secret", algorithms=["HS256"], audience="tableau")
    except jwt.InvalidSignatureError:
        return
    raise AssertionError("a wrong secret verified")
