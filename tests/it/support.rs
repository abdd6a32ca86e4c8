//! Helpers the test modules share: the real `serve` binary as a started process ([`Served`]) whose
//! output lines come on a channel, so a test waits for a log line with a deadline (never a fixed
//! sleep), calls it over mTLS and stops it by SIGTERM; and a slow Tableau double.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use tableau_double::{FakeTableauHandle, Faults, Latency};
use tableau_token_broker::devkit::certs::{CertPair, DevPki};
use tableau_token_broker::devkit::local;
use tableau_token_broker::grpc::pb::token_broker_client::TokenBrokerClient;
use tonic::transport::Channel;

/// Sends each line of `stream` to `tx` from a thread of its own, so a test can wait for a line with
/// a deadline instead of blocking on the pipe.
fn forward_lines(stream: impl std::io::Read + Send + 'static, tx: Sender<String>) {
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stream)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
}

/// `tableau-token-broker serve --config <config>` with `RUST_LOG` removed, so the configuration
/// file alone decides the logging, and stdout discarded; a test that reads stdout pipes it again.
pub(crate) fn serve_command(config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tableau-token-broker"));
    cmd.args(["serve", "--config"])
        .arg(config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null());
    cmd
}

/// An mTLS client of the broker at `addr` as the holder of `pair`.
pub(crate) async fn client(
    pki: &DevPki,
    addr: SocketAddr,
    pair: &CertPair,
) -> TokenBrokerClient<Channel> {
    TokenBrokerClient::new(local::connect(pki, addr, pair).await.unwrap())
}

/// A `serve` process a test started, its output lines on a channel (stderr, and stdout when the
/// command pipes it) and every line read so far in `seen`. The tests that run the real binary
/// start, wait, call and stop it the same way; this is that way, once. Killed on drop, so a test
/// that fails half-way leaves no broker behind.
pub(crate) struct Served {
    child: Option<Child>,
    lines: Receiver<String>,
    pub(crate) seen: Vec<String>,
}

impl Served {
    /// Spawns `cmd` with stderr piped.
    pub(crate) fn spawn(cmd: &mut Command) -> Served {
        let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
        let (tx, lines) = channel();
        forward_lines(child.stderr.take().unwrap(), tx.clone());
        if let Some(stdout) = child.stdout.take() {
            forward_lines(stdout, tx);
        }
        Served {
            child: Some(child),
            lines,
            seen: Vec::new(),
        }
    }

    /// The next line within `timeout` (kept in `seen`), for logs that are not JSON.
    pub(crate) fn next_line(&mut self, timeout: Duration) -> String {
        let line = self
            .lines
            .recv_timeout(timeout)
            .unwrap_or_else(|_| panic!("no line within {timeout:?}; saw {:#?}", self.seen));
        self.seen.push(line.clone());
        line
    }

    /// Waits at most `timeout` for the next JSON log line whose message is `message` and
    /// returns it; the lines read on the way stay in `seen`.
    pub(crate) fn wait_for(&mut self, message: &str, timeout: Duration) -> serde_json::Value {
        loop {
            let line = self.lines.recv_timeout(timeout).unwrap_or_else(|_| {
                panic!(
                    "no {message:?} line within {timeout:?}; saw {:#?}",
                    self.seen
                )
            });
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            self.seen.push(line);
            if v["fields"]["message"] == message {
                return v;
            }
        }
    }

    /// The address from the JSON "broker listening (mTLS)" line, within `timeout`.
    pub(crate) fn listening_addr(&mut self, timeout: Duration) -> SocketAddr {
        let v = self.wait_for("broker listening (mTLS)", timeout);
        v["fields"]["addr"].as_str().unwrap().parse().unwrap()
    }

    /// SIGTERM (through the shell's `kill`, as an operator sends it), so the broker drains; the
    /// exit must be 0. The wait runs off the test's runtime, which may still have to answer the
    /// broker during the drain. Returns every line the process wrote.
    pub(crate) async fn stop(mut self) -> Vec<String> {
        let mut child = self.child.take().unwrap();
        let pid = child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "SIGTERM exits 0: {status:?}");
        // The process is gone: its pipes end, and the forwarding threads with them.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => break,
            }
        }
        std::mem::take(&mut self.seen)
    }

    /// SIGKILL, no drain: the process dies where it stands.
    pub(crate) fn kill(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Makes every sign-in at the double take `latency`: a slow Tableau, for the tests of what waits
/// on a sign-in (coalescing, caps, leases, drains).
pub(crate) fn slow_signins(double: &FakeTableauHandle, latency: Duration) {
    let faults = Faults {
        latency: Some(Latency::Fixed(latency)),
        ..Faults::default()
    };
    double.set_faults("signin", faults).unwrap();
}

/// An HTTP client for tests that talk to the double or the admin port. The broker's crypto stack
/// is aws-lc-rs and reqwest is built without a provider of its own, so tests install it as the
/// process default first (the broker itself hands reqwest an explicit configuration).
pub(crate) fn http() -> reqwest::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::new()
}
