//! Model artifacts as a registry may serve them: a manifest and its config (the input is the
//! manifest, a NUL, then the config).
//!
//! Entry points: `image::Manifest::parse`, `artifact::{read, safe_path, kitfile_slots}`,
//! `pack::attach` (nothing changed; the first layer dropped and a file added), and the weight
//! header readers `pack::facts` (safetensors, GGUF) over the whole input.
//! Invariants: nothing panics; one part per layer; a path that comes out is relative, names a
//! file, never climbs, holds no backslash or control character, and is its own `safe_path`;
//! the Kitfile slot walk gives one slot per layer and never the same entry twice; what
//! `attach` writes parses and reads back as the same format with the layers it says.
#![no_main]

use libfuzzer_sys::fuzz_target;

use lamina_core::artifact::{kitfile_slots, read, safe_path, Kind};
use lamina_core::image::{Config, Manifest};
use lamina_core::pack::{attach, facts, Changes, FileLayer, Model};
use lamina_core::target::Target;
use lamina_core::Digest;

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
    let descriptors = manifest.layers().unwrap_or_default();
    let kitfile = serde_json::Value::Object(config.doc().value().clone());
    let slots = kitfile_slots(&kitfile, &descriptors);
    assert_eq!(slots.len(), descriptors.len(), "a slot per layer");
    let mut seen = std::collections::HashSet::new();
    for s in slots.iter().flatten() {
        assert!(seen.insert(s.clone()), "two layers in the Kitfile entry {s:?}");
    }
    let Some(target) = Target::of(r.format) else {
        return;
    };
    let d = Digest::of(b"fuzz");
    let new = FileLayer {
        path: "fuzz/new.bin".into(),
        kind: Kind::Weight,
        guessed: false,
        packing: target.packing(false),
        digest: d.clone(),
        size: 4,
        diff_id: d,
        file_size: 4,
        executable: false,
        carried: None,
    };
    let a = r.about.clone();
    let model = Model {
        name: a.name,
        family: a.family,
        created_at: None,
        format: a.format,
        param_size: a.param_size,
        precision: a.precision,
        architecture: a.architecture,
        quantization: a.quantization,
    };
    let drop = [0usize];
    let add = [new];
    let cases = [
        Changes::default(),
        Changes {
            drop: if descriptors.is_empty() { &[] } else { &drop },
            add: &add,
            facts: Some(&model),
        },
    ];
    for c in &cases {
        let Ok(a) = attach(&manifest, &config, c, 0) else {
            continue;
        };
        let m2 = Manifest::parse(a.manifest, "application/vnd.oci.image.manifest.v1+json")
            .expect("attach wrote a manifest that does not parse");
        let c2 = Config::parse(a.config).expect("attach wrote a config that does not parse");
        let r2 = read(&m2, &c2).expect("attach wrote an artifact that does not read back");
        assert_eq!(r2.format, r.format, "attach changed the format");
        let n = m2.layers().map(|l| l.len()).unwrap_or(0);
        let want = descriptors.len() - c.drop.len() + c.add.len() - a.replaced.len();
        assert_eq!(n, want, "layers after attach");
        assert_eq!(r2.parts.len(), n);
    }
});
