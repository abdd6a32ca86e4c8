//! Integration tests: one binary, one module per area, real sockets on 127.0.0.1.

mod tableau_client;
