//! Model artifacts as a registry may serve them: a manifest and its config (the input is the
//! manifest, a NUL, then the config).
//!
//! Entry points: `image::Manifest::parse`, `artifact::{read, safe_path}`, and the weight
//! header readers `pack::facts` (safetensors, GGUF) over the whole input.
//! Invariants: nothing panics; one part per layer; a path that comes out is relative, names a
//! file, never climbs, holds no backslash or control character, and is its own `safe_path`.
#![no_main]

use libfuzzer_sys::fuzz_target;

use lamina_core::artifact::{read, safe_path};
use lamina_core::image::{Config, Manifest};
use lamina_core::pack::facts;

fn check(p: &str) {
    assert!(!p.is_empty() && !p.starts_with('/'), "{p:?}");
    assert!(!p.split('/').any(|c| c == ".." || c == "." || c.is_empty()), "{p:?}");
    assert!(!p.contains('\\') && !p.chars().any(char::is_control), "{p:?}");
    assert_eq!(safe_path(p).as_deref(), Ok(p));
}

fuzz_target!(|data: &[u8]| {
    let (m, c) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"{}"[..]),
    };
    for name in ["x.safetensors", "x.gguf"] {
        if let Some(f) = facts(name, data) {
            // what a header says is bounded by what it holds
            assert!(f.precisions.iter().all(|(p, n)| !p.is_empty() && *n <= f.params.unwrap_or(0)));
        }
    }
    if let Ok(p) = safe_path(&String::from_utf8_lossy(m)) {
        check(&p);
    }
    let Ok(manifest) = Manifest::parse(m.to_vec(), "application/vnd.oci.image.manifest.v1+json") else {
        return;
    };
    let Ok(config) = Config::parse(c.to_vec()).or_else(|_| Config::parse(b"{}".to_vec())) else {
        return;
    };
    let Ok(r) = read(&manifest, &config) else {
        return;
    };
    let layers = manifest.layers().map(|l| l.len()).unwrap_or(0);
    assert_eq!(r.parts.len(), layers);
    for (i, p) in r.parts.iter().enumerate() {
        assert_eq!(p.index, i);
        if let Some(path) = &p.path {
            check(path);
        }
    }
});
