//! Integration tests: one binary, one module per area, real parts (TLS, HTTP on 127.0.0.1).

mod transport;
