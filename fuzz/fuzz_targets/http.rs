//! The small HTTP helpers the registry state machines use on what servers send.
//!
//! Entry points: `http::parse_range_end`, `http::split_url`, `http::resolve`,
//! `http::encode_query`, `http::add_query`, `http::Response::error_detail`.
//! Input: byte 0 chooses the base URL; the rest is `location` (and header value), optionally
//! followed by a NUL and a base URL of its own.
//! Invariants: a `Range` end prints back to the same count; `split_url` parts join back to the
//! URL; `resolve` gives an absolute URL for an absolute base; encoded query text is URL-safe.
#![no_main]

use libfuzzer_sys::fuzz_target;

use lamina_core::http::{
    add_query, encode_query, parse_range_end, resolve, split_url, Body, Response,
};

const BASES: [&str; 4] = [
    "http://127.0.0.1:5000/v2/a/blobs/uploads/",
    "https://registry.example/v2/x/y/manifests/latest?q=1",
    "http://h",
    "https://h:443/",
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let s = String::from_utf8_lossy(rest);
    let (v, own_base) = lamina_fuzz::split2(&s, '\0');
    let base = if own_base.is_empty() {
        BASES[usize::from(sel) % BASES.len()]
    } else {
        own_base
    };

    if let Some(n) = parse_range_end(v) {
        let printed = if n == 0 {
            "0-0".to_string()
        } else {
            format!("0-{}", n - 1)
        };
        assert_eq!(parse_range_end(&printed), Some(n), "{v:?}");
        assert_eq!(parse_range_end(&format!("bytes={printed}")), Some(n));
    }

    for u in [v, base] {
        if let Some((scheme, authority, path)) = split_url(u) {
            assert_eq!(format!("{scheme}://{authority}{path}"), u);
            assert!(!authority.contains('/'));
            assert!(path.is_empty() || path.starts_with('/'));
        }
    }

    let r = resolve(base, v);
    if split_url(base).is_some() {
        assert!(r.contains("://"), "resolve({base:?}, {v:?}) = {r:?}");
    }

    let q = encode_query(v);
    assert!(q
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b)));
    let _ = add_query(base, "scope", v);

    let resp = Response::new(u16::from(sel) + 400, &[("Range", v)], rest);
    let _ = resp.header("range");
    let _ = resp.headers_named("Range").count();
    let detail = resp.error_detail();
    let _ = detail.len();

    let b = Body::Bytes(rest.to_vec());
    assert_eq!(b.len(), rest.len() as u64);
});
