//! Helpers the test modules share for driving the real `serve` binary: a child process's output as
//! lines on a channel, and waiting for a JSON log line with a deadline (never a fixed sleep).

use std::io::BufRead;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

/// Sends each line of `stream` to `tx` from a thread of its own, so a test can wait for a line with
/// a deadline instead of blocking on the pipe.
pub(crate) fn forward_lines(stream: impl std::io::Read + Send + 'static, tx: Sender<String>) {
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stream)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
}

/// The lines of `stream`, as they come.
pub(crate) fn lines_of(stream: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    forward_lines(stream, tx);
    rx
}

/// Waits at most `timeout` for the JSON log line whose message is `message` and returns it; every
/// line read on the way is kept in `seen`.
pub(crate) fn wait_for_message(
    rx: &Receiver<String>,
    message: &str,
    timeout: Duration,
    seen: &mut Vec<String>,
) -> serde_json::Value {
    loop {
        let line = rx
            .recv_timeout(timeout)
            .unwrap_or_else(|_| panic!("no {message:?} line within {timeout:?}; saw {seen:#?}"));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        seen.push(line);
        if v["fields"]["message"] == message {
            return v;
        }
    }
}

/// The address a `serve` process listens on, from its "broker listening (mTLS)" line.
pub(crate) fn listening_addr(
    rx: &Receiver<String>,
    timeout: Duration,
    seen: &mut Vec<String>,
) -> String {
    let v = wait_for_message(rx, "broker listening (mTLS)", timeout, seen);
    v["fields"]["addr"].as_str().unwrap().to_owned()
}
