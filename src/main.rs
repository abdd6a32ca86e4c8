//! The `tableau-token-broker` command.
fn main() {}
