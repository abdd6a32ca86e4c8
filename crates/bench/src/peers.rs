//! Against the peers: HS256 minting vs PyJWT, and a request that signs in itself with
//! tableauserverclient vs a broker cache hit.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use secrecy::SecretString;
use tableau_token_broker::clock;
use tableau_token_broker::config::ConnectedApp;
use tableau_token_broker::mint::Minter;
use tableau_token_broker::scope;

use crate::setup::{CLIENT_ID, SCOPE, SECRET, SECRET_ID};

/// Rust minting rate (JWTs per second, one thread).
pub(crate) fn mint_rate(n: usize) -> anyhow::Result<f64> {
    let minter = Minter::new(clock::system());
    let app = ConnectedApp {
        client_id: CLIENT_ID.into(),
        secret_id: SECRET_ID.into(),
        secret: SecretString::from(SECRET.to_owned()),
        secret_source: "bench".into(),
    };
    let scopes = scope::normalize([SCOPE])?;
    let ttl = Duration::from_secs(300);
    // Warm up allocator and caches.
    for _ in 0..n / 10 {
        std::hint::black_box(minter.mint(&app, "user-0", &scopes, ttl)?);
    }
    let t0 = Instant::now();
    for _ in 0..n {
        std::hint::black_box(minter.mint(&app, "user-0", &scopes, ttl)?);
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

const PYJWT: &str = r#"
import sys, time, uuid, jwt
n, cid, sid, secret = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def one():
    now = int(time.time())
    claims = {"iss": cid, "sub": "user-0", "aud": "tableau", "iat": now, "exp": now + 300,
              "jti": str(uuid.uuid4()), "scp": ["tableau:content:read"]}
    return jwt.encode(claims, secret, algorithm="HS256", headers={"kid": sid, "iss": cid})
for _ in range(n // 10): one()
t0 = time.perf_counter()
for _ in range(n): one()
print(n / (time.perf_counter() - t0))
"#;

/// PyJWT's minting rate for the same header and claims, or why it could not be measured.
pub(crate) fn pyjwt_rate(n: usize) -> Result<f64, String> {
    let out = Command::new("python3")
        .args(["-c", PYJWT, &n.to_string(), CLIENT_ID, SECRET_ID, SECRET])
        .output()
        .map_err(|e| format!("python3 not runnable: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "PyJWT run failed (pip install pyjwt): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse::<f64>()
        .map_err(|e| format!("PyJWT run printed no rate: {e}"))
}

/// What the tableauserverclient peer measured.
#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct TscPeer {
    /// Sign-ins done.
    pub count: u64,
    /// Mean time to a usable token.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    #[allow(dead_code)]
    pub p99_ms: f64,
}

/// Runs `crates/bench/tsc_peer.py` `count` times against the double at `url`.
pub(crate) fn tsc_peer(url: &str, site: &str, user: &str, count: usize) -> anyhow::Result<TscPeer> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tsc_peer.py");
    let out = Command::new("python3")
        .args([
            script,
            url,
            site,
            user,
            CLIENT_ID,
            SECRET_ID,
            SECRET,
            &count.to_string(),
        ])
        .output()
        .context("running python3 crates/bench/tsc_peer.py")?;
    anyhow::ensure!(
        out.status.success(),
        "crates/bench/tsc_peer.py failed (pip install -r tests/python/requirements.txt): {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}
