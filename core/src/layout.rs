//! OCI image layouts (`oci:DIR[:TAG]`): where blobs live, how `index.json` names images, and
//! how a tag is moved. The file work (temp files, renames) is the driver's; this module only
//! decides bytes and paths.

use crate::digest::Digest;
use crate::error::Error;
use crate::image::{Descriptor, Index};
use crate::media;

/// The `oci-layout` marker file.
pub const LAYOUT_FILE: &str = "oci-layout";
/// Its content.
pub const LAYOUT_FILE_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// The layout's index.
pub const INDEX_FILE: &str = "index.json";
/// Annotation naming an image in a layout.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Largest `index.json` read.
pub const MAX_INDEX_SIZE: u64 = 4 << 20;

/// Path of a blob inside the layout (`blobs/sha256/<hex>`).
pub fn blob_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm(), d.hex())
}

/// Checks the `oci-layout` file.
pub fn check_layout_file(raw: &[u8]) -> Result<(), Error> {
    let bad = |reason: String| Error::InvalidDocument {
        what: "oci-layout file".into(),
        reason,
    };
    let v: serde_json::Value =
        serde_json::from_slice(raw).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    match v.get("imageLayoutVersion").and_then(|v| v.as_str()) {
        Some(s) if s.starts_with("1.") => Ok(()),
        Some(s) => Err(bad(format!("unsupported imageLayoutVersion {s:?}"))),
        None => Err(bad("no imageLayoutVersion".into())),
    }
}

/// What a tag names in a layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// An entry of `index.json` (its position and descriptor).
    Entry(usize, Descriptor),
    /// `index.json` itself: its entries are the platform images of one untagged image (as some
    /// tools write multi-platform layouts).
    Whole,
}

/// A layout's `index.json`, edited losslessly.
pub struct LayoutIndex {
    index: Index,
}

impl core::fmt::Debug for LayoutIndex {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LayoutIndex").finish_non_exhaustive()
    }
}

impl LayoutIndex {
    /// Parses `index.json` (its `mediaType` is optional).
    pub fn parse(raw: Vec<u8>) -> Result<Self, Error> {
        if raw.len() as u64 > MAX_INDEX_SIZE {
            return Err(Error::TooLarge {
                what: "index.json".into(),
                limit: MAX_INDEX_SIZE,
            });
        }
        Ok(LayoutIndex {
            index: Index::parse(raw, media::OCI_INDEX)?,
        })
    }

    /// An empty index for a new layout.
    pub fn empty() -> Self {
        LayoutIndex {
            index: Index::new_oci(),
        }
    }

    /// The entries.
    pub fn entries(&self) -> Result<Vec<Descriptor>, Error> {
        self.index.manifests()
    }

    /// The tags (`ref.name` annotations) present.
    pub fn tags(&self) -> Result<Vec<String>, Error> {
        Ok(self
            .entries()?
            .iter()
            .filter_map(|d| ref_name(d).map(str::to_string))
            .collect())
    }

    /// Finds `tag`: the entry whose `ref.name` is `tag` (or ends in `:tag`, as tools that store
    /// whole references write); else, for `latest`, the only entry of a one-entry index; else,
    /// when no entry is named at all and every entry has a platform, the index itself.
    pub fn find(&self, tag: &str) -> Result<Found, Error> {
        let es = self.entries()?;
        let suffix = format!(":{tag}");
        let named = |d: &Descriptor| ref_name(d).is_some_and(|n| n == tag || n.ends_with(&suffix));
        if let Some(i) = es.iter().position(named) {
            return Ok(Found::Entry(i, es[i].clone()));
        }
        let any_named = es.iter().any(|d| ref_name(d).is_some());
        if tag == "latest" && es.len() == 1 {
            return Ok(Found::Entry(0, es[0].clone()));
        }
        if !any_named && !es.is_empty() && es.iter().all(|d| d.platform.is_some()) {
            return Ok(Found::Whole);
        }
        let tags = self.tags()?;
        Err(Error::NotFound {
            what: format!(
                "tag {tag:?} in the layout's index.json ({})",
                if tags.is_empty() {
                    format!("{} untagged entries", es.len())
                } else {
                    format!("tags: {}", tags.join(", "))
                }
            ),
        })
    }

    /// Points `tag` at `d`: entries carrying the tag are removed and a new entry named `tag` is
    /// appended (as skopeo does); other entries are kept.
    pub fn set_tag(&mut self, tag: &str, d: &Descriptor) -> Result<(), Error> {
        let es = self.entries()?;
        for i in (0..es.len()).rev() {
            if ref_name(&es[i]) == Some(tag) {
                self.index.remove(i);
            }
        }
        let mut e = Descriptor::new(d.media_type.clone(), d.digest.clone(), d.size);
        e.platform = d.platform.clone();
        e.artifact_type = d.artifact_type.clone();
        e.annotations.push((REF_NAME.into(), tag.into()));
        self.index.push(&e);
        Ok(())
    }

    /// Points entry `i` at a new manifest; its annotations (the tag) and platform are kept.
    pub fn replace(&mut self, i: usize, media_type: &str, digest: &Digest, size: u64) {
        self.index.replace(i, media_type, digest, size);
    }

    /// The index, for reading it as an image index ([`Found::Whole`]).
    pub fn as_index(&mut self) -> &mut Index {
        &mut self.index
    }

    /// Bytes to write (the original bytes when unedited).
    pub fn bytes(&mut self) -> &[u8] {
        self.index.bytes()
    }
}

/// The `ref.name` annotation of an index entry.
pub fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations
        .iter()
        .find(|(k, _)| k == REF_NAME)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn d(n: u8) -> Digest {
        Digest::of(&[n])
    }

    #[test]
    fn finds_tags_and_falls_back_like_skopeo() {
        let one = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{}","size":3}}]}}"#,
            media::OCI_MANIFEST,
            d(1)
        );
        let ix = LayoutIndex::parse(one.into_bytes()).unwrap();
        assert!(matches!(ix.find("latest").unwrap(), Found::Entry(0, _)));
        assert!(ix.find("v1").is_err());

        let tagged = format!(
            r#"{{"schemaVersion":2,"manifests":[
              {{"mediaType":"{m}","digest":"{a}","size":3,"annotations":{{"{r}":"v1"}}}},
              {{"mediaType":"{m}","digest":"{b}","size":4,"annotations":{{"{r}":"example.com/x:v2"}}}}]}}"#,
            m = media::OCI_MANIFEST,
            a = d(1),
            b = d(2),
            r = REF_NAME
        );
        let ix = LayoutIndex::parse(tagged.into_bytes()).unwrap();
        match ix.find("v2").unwrap() {
            Found::Entry(1, e) => assert_eq!(e.digest, d(2)),
            other => panic!("{other:?}"),
        }
        let e = ix.find("latest").unwrap_err().to_string();
        assert!(e.contains("v1") && e.contains("example.com/x:v2"), "{e}");

        let platforms = format!(
            r#"{{"schemaVersion":2,"manifests":[
              {{"mediaType":"{m}","digest":"{a}","size":3,"platform":{{"os":"linux","architecture":"amd64"}}}},
              {{"mediaType":"{m}","digest":"{b}","size":4,"platform":{{"os":"linux","architecture":"arm64"}}}}]}}"#,
            m = media::OCI_MANIFEST,
            a = d(1),
            b = d(2)
        );
        let ix = LayoutIndex::parse(platforms.into_bytes()).unwrap();
        assert_eq!(ix.find("latest").unwrap(), Found::Whole);
    }

    #[test]
    fn set_tag_moves_the_tag_and_keeps_the_rest_byte_for_byte() {
        let raw = format!(
            r#"{{"schemaVersion":2,"x-unknown":1,"manifests":[
              {{"mediaType":"{m}","digest":"{a}","size":3,"annotations":{{"{r}":"v1"}}}},
              {{"mediaType":"{m}","digest":"{b}","size":4,"annotations":{{"{r}":"v2"}}}}]}}"#,
            m = media::OCI_MANIFEST,
            a = d(1),
            b = d(2),
            r = REF_NAME
        );
        let mut ix = LayoutIndex::parse(raw.clone().into_bytes()).unwrap();
        assert_eq!(ix.bytes(), raw.as_bytes(), "unedited index keeps its bytes");
        ix.set_tag("v1", &Descriptor::new(media::OCI_MANIFEST, d(3), 5))
            .unwrap();
        let es = ix.entries().unwrap();
        assert_eq!(es.len(), 2);
        assert_eq!(es[0].digest, d(2));
        assert_eq!(es[1].digest, d(3));
        assert_eq!(ref_name(&es[1]), Some("v1"));
        let v: serde_json::Value = serde_json::from_slice(ix.bytes()).unwrap();
        assert_eq!(v["x-unknown"], 1);

        let mut empty = LayoutIndex::empty();
        empty
            .set_tag("latest", &Descriptor::new(media::OCI_INDEX, d(4), 9))
            .unwrap();
        assert!(matches!(empty.find("latest").unwrap(), Found::Entry(0, _)));
    }

    #[test]
    fn checks_the_layout_file_and_blob_paths() {
        check_layout_file(LAYOUT_FILE_CONTENT).unwrap();
        assert!(check_layout_file(br#"{"imageLayoutVersion":"2.0.0"}"#).is_err());
        assert!(check_layout_file(b"nope").is_err());
        assert_eq!(blob_path(&d(1)), format!("blobs/sha256/{}", d(1).hex()));
        let big = vec![b' '; (MAX_INDEX_SIZE + 1) as usize];
        assert!(LayoutIndex::parse(big).is_err());
    }
}
