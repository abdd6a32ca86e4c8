"""The peer a user would otherwise use: each request signs in itself with tableauserverclient's
JWTAuth (JWT made by PyJWT) against the Tableau double, and the time to a usable token is taken.

Usage: tsc_peer.py URL SITE USER CLIENT_ID SECRET_ID SECRET COUNT
Prints one JSON object: count, mean_ms, p50_ms, p99_ms. Run by `cargo run --release --bin bench`.

One TSC.Server is kept across requests (its HTTP connection is reused), which is the kindest
setting for the peer; no sign-out is done, since it is not on the way to a usable token.
"""

import json
import statistics
import sys
import time
import uuid

import jwt
import tableauserverclient as TSC


def main():
    url, site, user, client_id, secret_id, secret, count = sys.argv[1:8]
    count = int(count)
    server = TSC.Server(url)
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        now = int(time.time())
        claims = {
            "iss": client_id,
            "sub": user,
            "aud": "tableau",
            "iat": now,
            "exp": now + 300,
            "jti": str(uuid.uuid4()),
            "scp": ["tableau:content:read"],
        }
        token = jwt.encode(
            claims, secret, algorithm="HS256", headers={"kid": secret_id, "iss": client_id}
        )
        server.auth.sign_in(TSC.JWTAuth(token, site_id=site))
        assert server.auth_token
        times.append((time.perf_counter() - t0) * 1000.0)
    times.sort()
    print(
        json.dumps(
            {
                "count": count,
                "mean_ms": statistics.fmean(times),
                "p50_ms": times[len(times) // 2],
                "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))],
            }
        )
    )


if __name__ == "__main__":
    main()
