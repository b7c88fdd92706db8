//! Manifests, indexes, configs and layout indexes: parsing and editing.
//!
//! Entry points: `image::detect_kind`, `image::Doc::parse`, `Manifest::parse` and its edits
//! (`push_layer`, `set_layer`, `set_config`, `set_annotation`, `ensure_media_type`,
//! `convert_to_oci`), `Index::parse` and its edits (`select`, `replace`, `remove`, `push`,
//! `convert_to_oci`), `Config::parse` and its edits (`push_layer`, `set_label`, history),
//! `image::weights_layers`, `modelcar::not_an_image`, `layout::LayoutIndex` (`find`, `set_tag`)
//! and `layout::check_layout_file`.
//!
//! Input: byte 0 chooses the content type and the document kind to try, byte 1 the edits; the
//! rest is the document.
//! Invariants: an unedited document gives back its exact bytes; an edited one serialises to bytes
//! that parse again as the same kind, with the layer / entry / diff_id added.
#![no_main]

use libfuzzer_sys::fuzz_target;

use lamina_core::image::{
    detect_kind, remixed_history, weights_layers, Config, Descriptor, Doc, History, Index,
    Manifest, Platform,
};
use lamina_core::layout::{self, Found, LayoutIndex};
use lamina_core::media::{self, DocKind, Family};
use lamina_core::{modelcar, Digest};

const CONTENT_TYPES: [Option<&str>; 6] = [
    None,
    Some(media::OCI_MANIFEST),
    Some(media::OCI_INDEX),
    Some("application/vnd.docker.distribution.manifest.v2+json; charset=utf-8"),
    Some(media::DOCKER_LIST),
    Some("text/plain"),
];

const MEDIA_TYPES: [&str; 4] = [
    media::OCI_MANIFEST,
    media::DOCKER_MANIFEST,
    media::OCI_INDEX,
    media::DOCKER_LIST,
];

const TAGS: [&str; 3] = ["latest", "v1", "x"];

fn descriptor(raw: &[u8], edits: u8) -> Descriptor {
    let mut d = Descriptor::new(media::OCI_LAYER_GZIP, Digest::of(raw), raw.len() as u64 * 3);
    if edits & 0x80 != 0 {
        d.annotations
            .push(("org.opencontainers.image.title".into(), "w.bin".into()));
    }
    if edits & 0x40 != 0 {
        d.platform = Some(Platform::linux_amd64());
    }
    d
}

fn manifest(raw: &[u8], mt: &str, edits: u8) {
    let Ok(mut m) = Manifest::parse(raw.to_vec(), mt) else {
        return;
    };
    assert_eq!(m.bytes(), raw, "an unedited manifest keeps its bytes");
    assert_eq!(m.digest(), Digest::of(raw));
    let layers = m.layers().expect("parse checked the layers");
    m.config().expect("parse checked the config");
    let _ = m.annotations();
    let _ = modelcar::not_an_image(&m);

    let d = descriptor(raw, edits);
    if edits & 1 != 0 {
        m.push_layer(&d);
    }
    if edits & 2 != 0 && !layers.is_empty() {
        let i = usize::from(edits >> 4) % layers.len();
        m.set_layer(i, media::OCI_LAYER_ZSTD, &d.digest, 7);
        assert_eq!(m.layers().expect("layers")[i].digest, d.digest);
    }
    if edits & 4 != 0 {
        m.set_config(&d.digest, 9);
    }
    if edits & 8 != 0 {
        let _ = m.set_annotation("org.example", "v");
    }
    if edits & 0x10 != 0 {
        m.ensure_media_type();
    }
    if edits & 0x20 != 0 {
        m.convert_to_oci();
        assert_eq!(m.family(), Family::Oci);
    }
    let after = m.layers().expect("edits keep the layers readable");
    if edits & 1 != 0 {
        assert_eq!(after.len(), layers.len() + 1);
        let last = after.last().expect("pushed");
        assert_eq!(last.digest, d.digest);
        assert_eq!(last.annotations, d.annotations);
    } else {
        assert_eq!(after.len(), layers.len());
    }
    let mt = m.media_type();
    let bytes = m.bytes().to_vec();
    let again = Manifest::parse(bytes.clone(), mt)
        .unwrap_or_else(|e| panic!("edited manifest does not parse again: {e}"));
    assert_eq!(again.layers().expect("layers"), after);
    let _ = detect_kind(&bytes, Some(mt));
}

fn index(raw: &[u8], mt: &str, edits: u8) {
    let Ok(mut i) = Index::parse(raw.to_vec(), mt) else {
        return;
    };
    assert_eq!(i.bytes(), raw, "an unedited index keeps its bytes");
    let ms = i.manifests().expect("parse checked the entries");
    for p in ["linux/amd64", "linux/arm64", "linux/arm/v7"] {
        if let Ok(n) = i.select(&Platform::parse(p).expect("platform")) {
            assert!(n < ms.len());
        }
    }
    let d = descriptor(raw, edits);
    let mut n = ms.len();
    if edits & 1 != 0 && n > 0 {
        i.replace(usize::from(edits >> 4) % n, mt, &d.digest, 5);
    }
    if edits & 2 != 0 && n > 0 {
        i.remove(usize::from(edits >> 4) % n);
        n -= 1;
    }
    if edits & 4 != 0 {
        i.push(&d);
        n += 1;
    }
    if edits & 8 != 0 {
        i.convert_to_oci();
    }
    let mt = i.media_type();
    let bytes = i.bytes().to_vec();
    let again = Index::parse(bytes, mt)
        .unwrap_or_else(|e| panic!("edited index does not parse again: {e}"));
    assert_eq!(again.manifests().expect("entries").len(), n);
}

fn config(raw: &[u8], edits: u8) {
    let Ok(mut c) = Config::parse(raw.to_vec()) else {
        return;
    };
    assert_eq!(c.bytes(), raw, "an unedited config keeps its bytes");
    let ids = c.diff_ids().expect("parse checked the diff_ids");
    let _ = (c.platform(), c.history());
    assert_eq!(c.layer_history().len(), ids.len());
    let _ = weights_layers(&c);
    // push_layer adds a diff_id where there is a place for it (no rootfs, or rootfs an object
    // with no diff_ids or an array of them)
    let rootfs = c.doc().value().get("rootfs");
    let pushable = match rootfs {
        None => true,
        Some(r) => r.as_object().is_some_and(|o| match o.get("diff_ids") {
            None => true,
            Some(v) => v.is_array(),
        }),
    };
    let d = Digest::of(raw);
    if edits & 1 != 0 {
        let h = remixed_history(
            c.history().first().and_then(|h| h.created_by.as_deref()),
            usize::from(edits),
            "src",
            "1970-01-01T00:00:00Z",
        );
        c.push_layer(&d, &h);
    }
    if edits & 2 != 0 {
        c.set_label("org.example", "v");
    }
    if edits & 4 != 0 {
        c.push_layer(
            &d,
            &History {
                created: None,
                created_by: "COPY . /src".into(),
                comment: None,
                author: Some("a".into()),
            },
        );
    }
    let pushed = usize::from(edits & 1 != 0) + usize::from(edits & 4 != 0);
    let bytes = c.bytes().to_vec();
    let again =
        Config::parse(bytes).unwrap_or_else(|e| panic!("edited config does not parse again: {e}"));
    let after = again.diff_ids().expect("diff_ids");
    if pushable {
        assert_eq!(after.len(), ids.len() + pushed);
    }
    assert_eq!(again.layer_history().len(), after.len());
    let _ = weights_layers(&again);
}

fn layout_index(raw: &[u8], edits: u8) {
    let _ = layout::check_layout_file(raw);
    let Ok(mut ix) = LayoutIndex::parse(raw.to_vec()) else {
        return;
    };
    let es = ix.entries().expect("parse checked the entries");
    let tag = TAGS[usize::from(edits) % TAGS.len()];
    match ix.find(tag) {
        Ok(Found::Entry(i, d)) => assert_eq!(es[i], d),
        Ok(Found::Whole) => assert!(!es.is_empty()),
        Err(_) => {}
    }
    let _ = ix.tags();
    if edits & 0x10 != 0 {
        let d = descriptor(raw, edits);
        ix.set_tag(tag, &d).expect("set_tag on a parsed index");
        let es = ix.entries().expect("entries");
        let last = es.last().expect("set_tag appends");
        assert_eq!(last.digest, d.digest);
        assert_eq!(layout::ref_name(last), Some(tag));
        assert!(ix.tags().expect("tags").iter().any(|t| t == tag));
        let bytes = ix.bytes().to_vec();
        LayoutIndex::parse(bytes).expect("an edited layout index parses again");
    }
}

fuzz_target!(|data: &[u8]| {
    let [sel, edits, raw @ ..] = data else {
        return;
    };
    let (sel, edits) = (*sel, *edits);
    let ct = CONTENT_TYPES[usize::from(sel) % CONTENT_TYPES.len()];

    if let Ok(mut doc) = Doc::parse(raw.to_vec(), "document") {
        assert_eq!(doc.bytes(), raw);
        let _ = doc.value();
    }

    match sel >> 5 {
        // as the registry code reads a manifest GET: detect, then parse as that kind
        0..=3 => match detect_kind(raw, ct) {
            Ok((DocKind::Manifest(_), mt)) => manifest(raw, &mt, edits),
            Ok((DocKind::Index(_), mt)) => index(raw, &mt, edits),
            Err(_) => {}
        },
        // as a descriptor's media type says
        4 | 5 => {
            let mt = MEDIA_TYPES[usize::from(sel) % MEDIA_TYPES.len()];
            manifest(raw, mt, edits);
            index(raw, mt, edits);
        }
        6 => config(raw, edits),
        _ => layout_index(raw, edits),
    }
});
