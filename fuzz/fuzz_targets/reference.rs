//! Image references and the other small string parsers next to them.
//!
//! Entry points: `reference::Reference::parse`, `reference::ImageRef::parse`, `Digest::parse`,
//! `image::Platform::parse`, `compress::Compression::parse`.
//! Invariants: a parsed reference prints to a string that parses back to the same reference
//! (less the forced scheme, which `Display` leaves out), and prints the same again; the same for
//! layout transports, digests and platforms.
#![no_main]

use libfuzzer_sys::fuzz_target;

use lamina_core::compress::Compression;
use lamina_core::image::Platform;
use lamina_core::reference::{ImageRef, Reference, DEFAULT_REGISTRY, DOCKER_HUB};
use lamina_core::Digest;

// Defaults that look like hosts: a name printed with a non-host default registry would read back
// as a repository component.
const DEFAULTS: [&str; 4] = [DEFAULT_REGISTRY, DOCKER_HUB, "localhost:5000", "[::1]:5000"];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let s = String::from_utf8_lossy(rest);
    let s = s.as_ref();
    let default = DEFAULTS[usize::from(sel) % DEFAULTS.len()];

    if let Ok(r) = Reference::parse(s, default) {
        let printed = r.to_string();
        let back = Reference::parse(&printed, default)
            .unwrap_or_else(|e| panic!("{s:?} printed as {printed:?}, which does not parse: {e}"));
        let want = Reference {
            scheme: None,
            ..r.clone()
        };
        assert_eq!(back, want, "{s:?} -> {printed:?}");
        assert_eq!(back.to_string(), printed);
        // under any other default too: the printed form names its registry
        let other = DEFAULTS[(usize::from(sel) + 1) % DEFAULTS.len()];
        assert_eq!(Reference::parse(&printed, other).ok(), Some(want));
        let _ = (r.reference(), r.tag_or_latest(), r.api_host(), r.name());
        let _ = r.default_scheme();
        let d = Digest::of(rest);
        assert_eq!(r.with_digest(d.clone()).reference(), d.to_string());
    }

    match ImageRef::parse(s, default) {
        Ok(ImageRef::OciLayout { path, tag }) => {
            let printed = format!("oci:{path}:{tag}");
            assert_eq!(
                ImageRef::parse(&printed, default).ok(),
                Some(ImageRef::OciLayout { path, tag }),
                "{s:?} -> {printed:?}"
            );
        }
        Ok(ImageRef::OciArchive { path, tag }) => {
            let printed = format!("oci-archive:{path}:{tag}");
            assert_eq!(
                ImageRef::parse(&printed, default).ok(),
                Some(ImageRef::OciArchive { path, tag }),
                "{s:?} -> {printed:?}"
            );
        }
        Ok(ImageRef::Registry(r)) => {
            assert_eq!(Reference::parse(s, default).ok(), Some(r));
        }
        Err(_) => {}
    }

    if let Ok(d) = Digest::parse(s) {
        assert_eq!(d.to_string(), s);
        assert_eq!(d.short().len(), 12);
        assert_eq!(s.parse::<Digest>().ok(), Some(d));
    }

    if let Ok(p) = Platform::parse(s) {
        assert_eq!(p.to_string(), s);
        assert!(p.matches(&p), "{p} does not match itself");
    }

    if let Some(c) = Compression::parse(s) {
        assert_eq!(c.name(), s);
    }
});
