//! Integration tests: one binary, one module per area, real HTTP/TLS on 127.0.0.1:0.

mod fake_tableau;
