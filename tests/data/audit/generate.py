"""Writes trail.jsonl, the fixture trail for `audit review` (tests/it/audit.rs).

Run from this folder: python3 generate.py. The records follow docs/audit-schema.v1.json; the
test reviews them against broker.toml since 2026-03-01 and compares with review.expected.txt.
"""
import json

RENDERER = "spiffe://example.org/ns/reports/sa/renderer"
OPS_ENTRY = "spiffe://example.org/ns/ops/*"
OPS = "spiffe://example.org/ns/ops/sa/scheduler"
EXPORTER = "exporter.example.org"
EXPORTER_ENTRY = "dns:exporter.example.org"

lines = []
n = 0


def record(time, event="rpc", rpc="GetCredentials", identity=None, source="uri_san", entry=None,
           site=None, user=None, asked=None, granted=None, outcome="granted", reason="OK",
           from_cache=None, generation=1, **extra):
    global n
    n += 1
    r = {
        "schema_version": 1,
        "time": time,
        "request_id": f"00000000-0000-4000-8000-{n:012d}" if event in ("rpc", "sign_in") else None,
        "event": event,
        "rpc": rpc if event == "rpc" else None,
        "caller": None if identity is None else {
            "identity": identity, "source": source, "entry": entry,
            "cert_serial": "01ab", "peer": "10.0.0.7:51234",
        },
        "site": site, "user": user,
        "scopes_requested": asked, "scopes_granted": granted,
        "outcome": outcome, "reason": reason,
        "message": None if reason == "OK" else f"refused: {reason}",
        "from_cache": from_cache,
        "jti": None, "token_fp": None, "expires_at": None,
        "config_generation": generation, "evicted": None, "signed_out": None,
    }
    r.update(extra)
    lines.append(json.dumps(r, separators=(",", ":")))


def granted(time, identity, entry, site, user, scopes, rpc="GetCredentials", cache=True, source="uri_san"):
    record(time, rpc=rpc, identity=identity, entry=entry, site=site, user=user, asked=scopes,
           granted=sorted(scopes), from_cache=cache if rpc == "GetCredentials" else None,
           token_fp="0123456789abcdef" if rpc == "GetCredentials" else None, source=source,
           expires_at="2026-12-31T00:00:00.000Z",
           jti="11111111-2222-4333-8444-555555555555" if rpc == "MintJwt" else None)


def denied(time, identity, entry, site, user, scopes, reason, source="uri_san"):
    record(time, identity=identity, entry=entry, site=site, user=user, asked=scopes,
           outcome="denied", reason=reason, from_cache=False, source=source)


record("2026-01-01T00:00:00.000Z", event="start", outcome="ok")
# Before the window: the renderer's admin grant was used then, so it counts as unused now.
granted("2026-02-01T10:00:00.000Z", RENDERER, RENDERER, "finance", "svc-admin", ["tableau:users:read"])
granted("2026-02-01T10:00:01.000Z", RENDERER, RENDERER, "marketing", "svc-renderer", ["tableau:views:download"])
# In the window.
for i in range(3):
    granted(f"2026-03-02T09:00:0{i}.000Z", RENDERER, RENDERER, "finance", "svc-renderer",
            ["tableau:content:read"], cache=i > 0)
record("2026-03-02T09:00:00.500Z", event="sign_in", identity=RENDERER, entry=RENDERER, site="finance",
       user="svc-renderer", granted=["tableau:content:read"], outcome="ok")
granted("2026-03-03T09:00:00.000Z", RENDERER, RENDERER, "finance", "ann@example.com",
        ["tableau:content:read"], rpc="MintJwt")
denied("2026-03-03T09:01:00.000Z", RENDERER, RENDERER, "finance", "svc-renderer",
       ["tableau:users:read"], "SCOPE_NOT_ALLOWED")
denied("2026-03-03T09:02:00.000Z", RENDERER, RENDERER, "finance", "mallory",
       ["tableau:content:read"], "USER_NOT_ALLOWED")
denied("2026-03-03T09:03:00.000Z", RENDERER, RENDERER, "finance", "mallory",
       ["tableau:content:read"], "USER_NOT_ALLOWED")
record("2026-03-03T09:04:00.000Z", identity=RENDERER, entry=RENDERER, site="finance", user="ghost",
       asked=["tableau:content:read"], outcome="failed", reason="TABLEAU_SIGNIN_16", from_cache=False)
# Invalidations and sign-outs are not uses of a grant.
record("2026-03-03T09:05:00.000Z", rpc="InvalidateCredentials", identity=RENDERER, entry=RENDERER,
       site="finance", user="svc-renderer", granted=["tableau:content:read"], outcome="ok",
       token_fp="0123456789abcdef", evicted=True, signed_out=True)
record("2026-03-03T09:05:00.100Z", event="sign_out", site="finance", user="svc-renderer",
       granted=["tableau:content:read"], outcome="ok", token_fp="0123456789abcdef", signed_out=True)
# A record cut short by a failed write (disk full), then a blank line.
lines.append('{"schema_version":1,"time":"2026-03-04T00:00:00.000Z","event":"rp')
lines.append("")
record("2026-03-04T10:00:00.000Z", event="reload", outcome="ok", generation=2)
granted("2026-03-05T08:00:00.000Z", OPS, OPS_ENTRY, "marketing", "ops-bot", ["tableau:tasks:run"])
granted("2026-03-05T08:00:01.000Z", OPS, OPS_ENTRY, "finance", "ops-bot",
        ["tableau:tasks:run", "tableau:content:read"])
denied("2026-03-05T08:01:00.000Z", OPS, OPS_ENTRY, "finance", "ops-bot", ["tableau:tasks:delete"],
       "SCOPE_NOT_ALLOWED")
record("2026-03-05T08:02:00.000Z", identity=OPS, entry=OPS_ENTRY, site="finance", user="ops-bot",
       asked=["tableau:tasks:run"], outcome="failed", reason="TABLEAU_UNAVAILABLE", from_cache=False)
denied("2026-03-06T08:00:00.000Z", EXPORTER, EXPORTER_ENTRY, "finance", "svc-exporter",
       ["tableau:views:download"], "SITE_NOT_ALLOWED", source="dns_san")
denied("2026-03-06T08:00:01.000Z", "intruder.example.org", None, "finance", "svc-renderer",
       ["tableau:content:read"], "CALLER_NOT_ALLOWED", source="dns_san")

with open("trail.jsonl", "w") as f:
    f.write("\n".join(lines) + "\n")
