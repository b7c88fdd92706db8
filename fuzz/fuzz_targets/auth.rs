//! `WWW-Authenticate` challenges and credentials.
//!
//! Entry points: `auth::parse_challenge`, `auth::Credentials::basic_header`.
//! Invariants: surrounding whitespace does not change the answer; a Bearer challenge always has
//! its realm; secrets never print.
#![no_main]

use libfuzzer_sys::fuzz_target;

use lamina_core::auth::{parse_challenge, Challenge, Credentials, Secret};

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let s = s.as_ref();
    let c = parse_challenge(s);
    assert_eq!(parse_challenge(&format!(" \t{s}\r\n ")), c, "{s:?}");
    if let Some(Challenge::Bearer { realm, .. }) = &c {
        // the realm came from the header
        assert!(s.len() >= realm.len(), "{s:?} gave realm {realm:?}");
    }
    let (user, pass) = s.split_once(':').unwrap_or((s, ""));
    let h = Credentials::basic_header(user, &Secret::new(pass));
    assert!(h.starts_with("Basic "));
    let printed = format!(
        "{:?} {}",
        Credentials::Bearer(Secret::new(pass)),
        Secret::new(pass)
    );
    assert_eq!(printed, "Bearer(<redacted>) <redacted>");
});
