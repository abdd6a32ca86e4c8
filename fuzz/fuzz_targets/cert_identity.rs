//! Identity extraction from a client certificate never panics, and what it returns keeps its
//! source's promise: a SPIFFE ID is valid and came from the URI SAN; a DNS SAN or CN is never
//! URI-shaped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tableau_token_broker::transport::identity::{
    IdentitySource, IdentitySources, identity_from_cert, validate_spiffe_id,
};

fuzz_target!(|data: &[u8]| {
    let sources = IdentitySources::default();
    if let Ok(id) = identity_from_cert(data, &sources) {
        match id.source {
            IdentitySource::Spiffe => assert!(validate_spiffe_id(&id.id).is_ok(), "{id}"),
            IdentitySource::Dns | IdentitySource::CommonName => {
                assert!(!id.id.contains("://"), "{id}");
                assert!(!id.id.is_empty());
            }
        }
    }
    let only_cn = IdentitySources::new(vec![IdentitySource::CommonName]).unwrap_or_default();
    if let Ok(id) = identity_from_cert(data, &only_cn) {
        assert_eq!(id.source, IdentitySource::CommonName);
    }
});
