//! Delta archives ("slices"): an image's manifests and config and only the blobs that are not in
//! a set of base images, for sites that already hold the bases (DockerSlice / DockerDiff's job,
//! done through the registry API with digests checked end to end).
//!
//! A slice is an OCI image layout in a tar, so skopeo and oras read its manifest, plus
//! `lamina-slice.json` describing what was left out. Members come in this order, so a reader can
//! check everything before the big blobs stream past:
//!
//! ```text
//! oci-layout, lamina-slice.json, index.json,
//! blobs/sha256/<manifests, indexes, configs>   (small, listed in `documents`)
//! blobs/sha256/<layers not in any base>        (listed in `included`)
//! ```

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::Error;
use crate::image::Descriptor;

/// Name of the metadata member.
pub const META_FILE: &str = "lamina-slice.json";
/// Format version written.
pub const VERSION: u32 = 1;
/// Largest metadata member read.
pub const MAX_META_SIZE: u64 = 4 << 20;

/// A blob named in the metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blob {
    /// Digest.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Media type (as the manifest gives it).
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// The base image it belongs to (omitted blobs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
}

/// A base image the slice was cut against.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Base {
    /// Its reference as given.
    pub reference: String,
    /// The digest it resolved to.
    pub digest: String,
}

/// `lamina-slice.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Format version.
    pub lamina_slice: u32,
    /// The sliced image, as given.
    pub image: String,
    /// Its top digest (manifest or index): a load gives the same.
    pub digest: String,
    /// Its top media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// The tag in `index.json`.
    pub tag: String,
    /// Bases.
    pub bases: Vec<Base>,
    /// Manifests, indexes and configs in the archive (small; first).
    pub documents: Vec<Blob>,
    /// Layer blobs in the archive.
    pub included: Vec<Blob>,
    /// Blobs left out: the destination must have them.
    pub omitted: Vec<Blob>,
}

impl Meta {
    /// Serialises the metadata.
    pub fn to_json(&self) -> Vec<u8> {
        // a struct of strings and numbers always serialises
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Parses and checks the metadata.
    pub fn parse(raw: &[u8]) -> Result<Self, Error> {
        let bad = |reason: String| Error::InvalidDocument {
            what: META_FILE.into(),
            reason,
        };
        let m: Meta = serde_json::from_slice(raw).map_err(|e| bad(e.to_string()))?;
        if m.lamina_slice != VERSION {
            return Err(bad(format!(
                "format version {} (this lamina reads {VERSION})",
                m.lamina_slice
            )));
        }
        Digest::parse(&m.digest)?;
        for b in m.documents.iter().chain(&m.included).chain(&m.omitted) {
            Digest::parse(&b.digest)?;
        }
        Ok(m)
    }

    /// Bytes in the archive (documents and included blobs); sizes no archive can have add up to
    /// at most `u64::MAX`.
    pub fn included_bytes(&self) -> u64 {
        self.documents
            .iter()
            .chain(&self.included)
            .fold(0, |n, b| n.saturating_add(b.size))
    }

    /// Bytes left out.
    pub fn omitted_bytes(&self) -> u64 {
        self.omitted.iter().fold(0, |n, b| n.saturating_add(b.size))
    }
}

/// Splits an image's layer blobs into those to ship and those a base already has. `bases` pairs
/// each base's name with its blob digests. Each blob appears once, in first-seen order.
pub fn split(layers: &[Descriptor], bases: &[(String, Vec<Digest>)]) -> (Vec<Blob>, Vec<Blob>) {
    let mut included: Vec<Blob> = Vec::new();
    let mut omitted: Vec<Blob> = Vec::new();
    for l in layers {
        let d = l.digest.to_string();
        if included.iter().chain(&omitted).any(|b| b.digest == d) {
            continue;
        }
        let blob = Blob {
            digest: d,
            size: l.size,
            media_type: l.media_type.clone(),
            base: None,
        };
        match bases.iter().find(|(_, ds)| ds.contains(&l.digest)) {
            Some((name, _)) => omitted.push(Blob {
                base: Some(name.clone()),
                ..blob
            }),
            None => included.push(blob),
        }
    }
    (included, omitted)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn split_ships_only_what_no_base_has() {
        let d = |n: u8| Digest::of(&[n]);
        let l = |n: u8| {
            Descriptor::new(
                "application/vnd.oci.image.layer.v1.tar",
                d(n),
                10 + n as u64,
            )
        };
        let layers = vec![l(1), l(2), l(3), l(2), l(4)];
        let bases = vec![
            ("cuda".to_string(), vec![d(1)]),
            ("torch".to_string(), vec![d(1), d(2)]),
        ];
        let (inc, om) = split(&layers, &bases);
        assert_eq!(
            inc.iter().map(|b| b.digest.clone()).collect::<Vec<_>>(),
            vec![d(3).to_string(), d(4).to_string()]
        );
        assert_eq!(om.len(), 2);
        assert_eq!(om[0].base.as_deref(), Some("cuda"));
        assert_eq!(om[1].base.as_deref(), Some("torch"));
    }

    #[test]
    fn metadata_round_trips_and_refuses_other_versions() {
        let m = Meta {
            lamina_slice: VERSION,
            image: "r/x:1".into(),
            digest: Digest::of(b"m").to_string(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            tag: "1".into(),
            bases: vec![Base {
                reference: "r/base".into(),
                digest: Digest::of(b"b").to_string(),
            }],
            documents: vec![],
            included: vec![Blob {
                digest: Digest::of(b"l").to_string(),
                size: 5,
                media_type: "t".into(),
                base: None,
            }],
            omitted: vec![],
        };
        let j = m.to_json();
        assert_eq!(Meta::parse(&j).unwrap(), m);
        assert_eq!(Meta::parse(&j).unwrap().included_bytes(), 5);
        let other = String::from_utf8(j)
            .unwrap()
            .replace("\"lamina_slice\": 1", "\"lamina_slice\": 2");
        assert!(Meta::parse(other.as_bytes()).is_err());
        assert!(Meta::parse(b"{").is_err());
    }

    #[test]
    fn fuzz_sizes_that_overflow_add_up_without_a_panic() {
        // fuzz/seeds/slice/sizes-overflow (found reading the code, replayed through the fuzz
        // target): `sum()` of the blob sizes overflowed, a panic in debug builds
        let input: &[u8] = br#"{"lamina_slice": 1, "image": "x", "digest": "sha256:1111111111111111111111111111111111111111111111111111111111111111", "mediaType": "m", "tag": "t", "bases": [], "documents": [], "included": [{"digest": "sha256:2222222222222222222222222222222222222222222222222222222222222222", "size": 18446744073709551615, "mediaType": "m"}, {"digest": "sha256:3333333333333333333333333333333333333333333333333333333333333333", "size": 1, "mediaType": "m"}], "omitted": [{"digest": "sha256:2222222222222222222222222222222222222222222222222222222222222222", "size": 18446744073709551615, "mediaType": "m"}, {"digest": "sha256:3333333333333333333333333333333333333333333333333333333333333333", "size": 2, "mediaType": "m"}]}"#;
        let m = Meta::parse(input).unwrap();
        assert_eq!(m.included_bytes(), u64::MAX);
        assert_eq!(m.omitted_bytes(), u64::MAX);
    }
}
