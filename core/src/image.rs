//! Lossless editing of manifests, indexes and image configs.
//!
//! A document keeps the bytes it was parsed from. Until it is edited, [`Doc::bytes`] returns those
//! exact bytes, so its digest is unchanged. Edits go through a `serde_json` value that keeps key
//! order (`preserve_order`) and number spelling (`arbitrary_precision`), so unknown fields survive.

use serde_json::{Map, Value};

use crate::digest::Digest;
use crate::error::Error;
use crate::media::{self, DocKind, Family};

/// Largest manifest or index lamina reads (the distribution spec's minimum for registries).
pub const MAX_MANIFEST_SIZE: u64 = 4 * 1024 * 1024;
/// Largest image config lamina reads into memory.
pub const MAX_CONFIG_SIZE: u64 = 16 * 1024 * 1024;

/// A JSON document with its original bytes.
#[derive(Clone, Debug)]
pub struct Doc {
    raw: Vec<u8>,
    value: Map<String, Value>,
    dirty: bool,
    what: &'static str,
}

impl Doc {
    /// Parses a JSON object. `what` names the document in errors.
    pub fn parse(raw: Vec<u8>, what: &'static str) -> Result<Self, Error> {
        let value: Value = serde_json::from_slice(&raw).map_err(|e| Error::InvalidDocument {
            what: what.into(),
            reason: format!("not valid JSON: {e}"),
        })?;
        match value {
            Value::Object(value) => Ok(Doc {
                raw,
                value,
                dirty: false,
                what,
            }),
            _ => Err(Error::InvalidDocument {
                what: what.into(),
                reason: "not a JSON object".into(),
            }),
        }
    }

    /// A new document from a value (serialised compactly).
    pub fn from_value(value: Map<String, Value>, what: &'static str) -> Self {
        let mut d = Doc {
            raw: Vec::new(),
            value,
            dirty: true,
            what,
        };
        d.bytes();
        d
    }

    /// The bytes: the original ones if unedited, else a compact serialisation.
    pub fn bytes(&mut self) -> &[u8] {
        if self.dirty {
            // serialising a Value cannot fail (all keys are strings)
            self.raw = serde_json::to_vec(&self.value).unwrap_or_default();
            self.dirty = false;
        }
        &self.raw
    }

    /// The digest of [`Doc::bytes`].
    pub fn digest(&mut self) -> Digest {
        Digest::of(self.bytes())
    }

    /// Read access.
    pub fn value(&self) -> &Map<String, Value> {
        &self.value
    }

    /// Write access; marks the document edited.
    pub fn value_mut(&mut self) -> &mut Map<String, Value> {
        self.dirty = true;
        &mut self.value
    }

    fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::InvalidDocument {
            what: self.what.into(),
            reason: reason.into(),
        }
    }

    fn str_field(&self, k: &str) -> Option<&str> {
        self.value.get(k).and_then(Value::as_str)
    }
}

/// An OCI platform (`os/arch[/variant]`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Platform {
    /// e.g. `linux`.
    pub os: String,
    /// e.g. `amd64`.
    pub architecture: String,
    /// e.g. `v8`.
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || Error::Usage {
            reason: format!("invalid platform {s:?}: expected os/arch[/variant], e.g. linux/amd64"),
        };
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        match parts.as_slice() {
            [os, arch] => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => Err(bad()),
        }
    }

    /// linux/amd64, the default as in Docker.
    pub fn linux_amd64() -> Self {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }

    fn from_value(v: &Value) -> Option<Self> {
        Some(Platform {
            os: v.get("os")?.as_str()?.to_string(),
            architecture: v.get("architecture")?.as_str()?.to_string(),
            variant: v.get("variant").and_then(Value::as_str).map(str::to_string),
        })
    }

    /// Does an index entry's platform satisfy this request? An unset variant matches any, and
    /// arm64 treats a missing variant as `v8`.
    pub fn matches(&self, other: &Platform) -> bool {
        if self.os != other.os || self.architecture != other.architecture {
            return false;
        }
        let norm = |p: &Platform| -> Option<String> {
            match (p.architecture.as_str(), p.variant.as_deref()) {
                ("arm64", None) => Some("v8".into()),
                (_, v) => v.map(str::to_string),
            }
        };
        match &self.variant {
            None => true,
            Some(_) => norm(self) == norm(other),
        }
    }
}

impl core::fmt::Display for Platform {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A content descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// Media type.
    pub media_type: String,
    /// Digest.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Annotations, in order.
    pub annotations: Vec<(String, String)>,
    /// Platform (index entries only).
    pub platform: Option<Platform>,
    /// `artifactType` (artifact manifests and their index entries).
    pub artifact_type: Option<String>,
}

impl Descriptor {
    /// A descriptor without annotations or platform.
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            annotations: Vec::new(),
            platform: None,
            artifact_type: None,
        }
    }

    fn from_value(v: &Value, what: &str) -> Result<Self, Error> {
        let bad = |r: &str| Error::InvalidDocument {
            what: what.into(),
            reason: r.into(),
        };
        let o = v
            .as_object()
            .ok_or_else(|| bad("descriptor is not an object"))?;
        let media_type = o
            .get("mediaType")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("descriptor without mediaType"))?;
        let digest = o
            .get("digest")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("descriptor without digest"))?;
        let digest = Digest::parse(digest)?;
        let size = o
            .get("size")
            .and_then(|s| s.as_u64().or_else(|| s.to_string().parse().ok()))
            .ok_or_else(|| bad("descriptor without a valid size"))?;
        let annotations = o
            .get("annotations")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let platform = o.get("platform").and_then(Platform::from_value);
        let artifact_type = o
            .get("artifactType")
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            annotations,
            platform,
            artifact_type,
        })
    }

    /// The descriptor as JSON (`mediaType`, `digest`, `size`, `annotations`).
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("mediaType".into(), Value::String(self.media_type.clone()));
        m.insert("digest".into(), Value::String(self.digest.to_string()));
        m.insert("size".into(), Value::from(self.size));
        if let Some(t) = &self.artifact_type {
            m.insert("artifactType".into(), Value::String(t.clone()));
        }
        if !self.annotations.is_empty() {
            let a: Map<String, Value> = self
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            m.insert("annotations".into(), Value::Object(a));
        }
        if let Some(p) = &self.platform {
            let mut pm = Map::new();
            pm.insert("architecture".into(), Value::String(p.architecture.clone()));
            pm.insert("os".into(), Value::String(p.os.clone()));
            if let Some(v) = &p.variant {
                pm.insert("variant".into(), Value::String(v.clone()));
            }
            m.insert("platform".into(), Value::Object(pm));
        }
        Value::Object(m)
    }
}

/// Detects the kind of a manifest document from its `mediaType` field, falling back to the HTTP
/// `Content-Type` and then to its shape.
pub fn detect_kind(raw: &[u8], content_type: Option<&str>) -> Result<(DocKind, String), Error> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
        #[serde(rename = "schemaVersion")]
        schema_version: Option<u32>,
    }
    let p: Probe = serde_json::from_slice(raw).map_err(|e| Error::InvalidDocument {
        what: "manifest".into(),
        reason: format!("not valid JSON: {e}"),
    })?;
    if p.schema_version == Some(1) {
        return Err(Error::UnsupportedMediaType {
            what: "manifest".into(),
            media_type: "Docker schema 1 (deprecated; push the image again with a current tool)"
                .into(),
        });
    }
    let mt = p
        .media_type
        .or_else(|| {
            content_type
                .map(|c| c.split(';').next().unwrap_or("").trim().to_string())
                .filter(|c| media::doc_kind(c).is_some())
        })
        .unwrap_or_else(|| {
            if p.manifests.is_some() {
                media::OCI_INDEX.into()
            } else {
                media::OCI_MANIFEST.into()
            }
        });
    match media::doc_kind(&mt) {
        Some(k) => Ok((k, mt)),
        None => Err(Error::UnsupportedMediaType {
            what: "manifest".into(),
            media_type: mt,
        }),
    }
}

/// An image manifest (OCI or Docker v2 schema 2).
#[derive(Clone, Debug)]
pub struct Manifest {
    doc: Doc,
    family: Family,
}

impl Manifest {
    /// Parses a manifest; `media_type` from [`detect_kind`] or the descriptor that pointed here.
    pub fn parse(raw: Vec<u8>, media_type: &str) -> Result<Self, Error> {
        let family = match media::doc_kind(media_type) {
            Some(DocKind::Manifest(f)) => f,
            _ => {
                return Err(Error::UnsupportedMediaType {
                    what: "image manifest".into(),
                    media_type: media_type.into(),
                })
            }
        };
        let doc = Doc::parse(raw, "image manifest")?;
        let m = Manifest { doc, family };
        m.config()?;
        m.layers()?;
        Ok(m)
    }

    /// OCI or Docker.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The manifest's media type.
    pub fn media_type(&self) -> &'static str {
        match self.family {
            Family::Oci => media::OCI_MANIFEST,
            Family::Docker => media::DOCKER_MANIFEST,
        }
    }

    /// The config descriptor.
    pub fn config(&self) -> Result<Descriptor, Error> {
        let c = self
            .doc
            .value
            .get("config")
            .ok_or_else(|| self.doc.invalid("no config descriptor"))?;
        let d = Descriptor::from_value(c, "image manifest config descriptor")?;
        if media::is_layer(&d.media_type) || media::doc_kind(&d.media_type).is_some() {
            return Err(self.doc.invalid(format!(
                "its config descriptor has media type {}, which is not a config's",
                d.media_type
            )));
        }
        Ok(d)
    }

    /// The layer descriptors, in order (base first).
    pub fn layers(&self) -> Result<Vec<Descriptor>, Error> {
        match self.doc.value.get("layers") {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let d = Descriptor::from_value(l, "image manifest layer")?;
                    if media::is_document(&d.media_type) {
                        return Err(self.doc.invalid(format!(
                            "layer {i} has media type {}, which is not a layer's",
                            d.media_type
                        )));
                    }
                    Ok(d)
                })
                .collect(),
            Some(_) => Err(self.doc.invalid("layers is not an array")),
        }
    }

    /// `artifactType` (model artifacts and other OCI artifacts set it).
    pub fn artifact_type(&self) -> Option<&str> {
        self.doc.value.get("artifactType").and_then(Value::as_str)
    }

    /// Manifest-level annotations.
    pub fn annotations(&self) -> Vec<(String, String)> {
        self.doc
            .value
            .get("annotations")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Appends a layer descriptor.
    pub fn push_layer(&mut self, layer: &Descriptor) {
        let v = self.doc.value_mut();
        let layers = v
            .entry("layers")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(a) = layers {
            a.push(layer.to_value());
        }
    }

    /// Points layer `i` at another blob (media type, digest, size; annotations kept).
    pub fn set_layer(&mut self, i: usize, media_type: &str, digest: &Digest, size: u64) {
        if let Some(Value::Array(a)) = self.doc.value_mut().get_mut("layers") {
            if let Some(Value::Object(l)) = a.get_mut(i) {
                l.insert("mediaType".into(), Value::String(media_type.into()));
                l.insert("digest".into(), Value::String(digest.to_string()));
                l.insert("size".into(), Value::from(size));
            }
        }
    }

    /// Replaces the config descriptor (digest and size; other fields kept).
    pub fn set_config(&mut self, digest: &Digest, size: u64) {
        if let Some(Value::Object(c)) = self.doc.value_mut().get_mut("config") {
            c.insert("digest".into(), Value::String(digest.to_string()));
            c.insert("size".into(), Value::from(size));
        }
    }

    /// Sets a manifest annotation (OCI only; Docker v2 manifests cannot carry annotations).
    pub fn set_annotation(&mut self, key: &str, value: &str) -> Result<(), Error> {
        if self.family == Family::Docker {
            return Err(Error::Usage {
                reason: "Docker v2 manifests cannot carry annotations; use --label, or convert the image to OCI".into(),
            });
        }
        let v = self.doc.value_mut();
        let a = v
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(a) = a {
            a.insert(key.into(), Value::String(value.into()));
        }
        Ok(())
    }

    /// Writes the optional `mediaType` field if the manifest lacks it (umoci leaves it out; the
    /// image spec says it SHOULD be there).
    pub fn ensure_media_type(&mut self) {
        if !self.doc.value.contains_key("mediaType") {
            let mt = self.media_type();
            self.doc
                .value_mut()
                .insert("mediaType".into(), Value::String(mt.into()));
        }
    }

    /// Converts a Docker v2 manifest to OCI (config and layer media types; layer blobs unchanged).
    pub fn convert_to_oci(&mut self) {
        if self.family == Family::Oci {
            return;
        }
        let v = self.doc.value_mut();
        if v.contains_key("mediaType") {
            v.insert(
                "mediaType".into(),
                Value::String(media::OCI_MANIFEST.into()),
            );
        }
        let fix = |d: &mut Value| {
            if let Some(Value::String(mt)) = d.get_mut("mediaType") {
                *mt = media::to_oci(mt).to_string();
            }
        };
        if let Some(c) = v.get_mut("config") {
            fix(c);
        }
        if let Some(Value::Array(ls)) = v.get_mut("layers") {
            ls.iter_mut().for_each(fix);
        }
        self.family = Family::Oci;
    }

    /// Exact bytes to push.
    pub fn bytes(&mut self) -> &[u8] {
        self.doc.bytes()
    }

    /// Digest of [`Manifest::bytes`].
    pub fn digest(&mut self) -> Digest {
        self.doc.digest()
    }

    /// The underlying document.
    pub fn doc(&self) -> &Doc {
        &self.doc
    }
}

/// An image index or Docker manifest list.
#[derive(Clone, Debug)]
pub struct Index {
    doc: Doc,
    family: Family,
}

impl Index {
    /// Parses an index.
    pub fn parse(raw: Vec<u8>, media_type: &str) -> Result<Self, Error> {
        let family = match media::doc_kind(media_type) {
            Some(DocKind::Index(f)) => f,
            _ => {
                return Err(Error::UnsupportedMediaType {
                    what: "image index".into(),
                    media_type: media_type.into(),
                })
            }
        };
        let i = Index {
            doc: Doc::parse(raw, "image index")?,
            family,
        };
        i.manifests()?;
        Ok(i)
    }

    /// A new, empty OCI index.
    pub fn new_oci() -> Self {
        let mut m = Map::new();
        m.insert("schemaVersion".into(), Value::from(2));
        m.insert("mediaType".into(), Value::String(media::OCI_INDEX.into()));
        m.insert("manifests".into(), Value::Array(Vec::new()));
        Index {
            doc: Doc::from_value(m, "image index"),
            family: Family::Oci,
        }
    }

    /// OCI or Docker.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The index's media type.
    pub fn media_type(&self) -> &'static str {
        match self.family {
            Family::Oci => media::OCI_INDEX,
            Family::Docker => media::DOCKER_LIST,
        }
    }

    /// The entries.
    pub fn manifests(&self) -> Result<Vec<Descriptor>, Error> {
        match self.doc.value.get("manifests") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|m| Descriptor::from_value(m, "image index entry"))
                .collect(),
            _ => Err(self.doc.invalid("no manifests array")),
        }
    }

    /// Index of the entry for `platform` (first match; attestation manifests with platform
    /// `unknown/unknown` never match).
    pub fn select(&self, platform: &Platform) -> Result<usize, Error> {
        let ms = self.manifests()?;
        ms.iter()
            .position(|m| m.platform.as_ref().is_some_and(|p| platform.matches(p)))
            .ok_or_else(|| Error::PlatformNotFound {
                wanted: platform.to_string(),
                available: ms
                    .iter()
                    .filter_map(|m| m.platform.as_ref().map(|p| p.to_string()))
                    .collect(),
            })
    }

    /// Points entry `i` at a new manifest (digest, size, media type); platform and annotations kept.
    pub fn replace(&mut self, i: usize, media_type: &str, digest: &Digest, size: u64) {
        if let Some(Value::Array(a)) = self.doc.value_mut().get_mut("manifests") {
            if let Some(Value::Object(e)) = a.get_mut(i) {
                e.insert("mediaType".into(), Value::String(media_type.into()));
                e.insert("digest".into(), Value::String(digest.to_string()));
                e.insert("size".into(), Value::from(size));
            }
        }
    }

    /// Removes entry `i`.
    pub fn remove(&mut self, i: usize) {
        if let Some(Value::Array(a)) = self.doc.value_mut().get_mut("manifests") {
            if i < a.len() {
                a.remove(i);
            }
        }
    }

    /// Appends an entry.
    pub fn push(&mut self, d: &Descriptor) {
        if let Some(Value::Array(a)) = self.doc.value_mut().get_mut("manifests") {
            a.push(d.to_value());
        }
    }

    /// Converts a Docker manifest list to an OCI index (entries must be converted by the caller).
    pub fn convert_to_oci(&mut self) {
        if self.family == Family::Oci {
            return;
        }
        let v = self.doc.value_mut();
        v.insert("mediaType".into(), Value::String(media::OCI_INDEX.into()));
        self.family = Family::Oci;
    }

    /// Exact bytes to push.
    pub fn bytes(&mut self) -> &[u8] {
        self.doc.bytes()
    }

    /// Digest of [`Index::bytes`].
    pub fn digest(&mut self) -> Digest {
        self.doc.digest()
    }
}

/// A history entry to append with a layer. `created` is passed in: the core never reads a clock.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// RFC 3339 time, e.g. from `SOURCE_DATE_EPOCH`.
    pub created: Option<String>,
    /// What made the layer.
    pub created_by: String,
    /// Free text (`weights` marks a weights layer, as r8im does).
    pub comment: Option<String>,
    /// Author.
    pub author: Option<String>,
}

/// One history entry as read from a config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryEntry {
    /// `created`.
    pub created: Option<String>,
    /// `created_by`.
    pub created_by: Option<String>,
    /// `comment`.
    pub comment: Option<String>,
    /// `empty_layer`.
    pub empty_layer: bool,
}

/// An image config (OCI or Docker; the same JSON).
#[derive(Clone, Debug)]
pub struct Config {
    doc: Doc,
}

impl Config {
    /// Parses a config.
    pub fn parse(raw: Vec<u8>) -> Result<Self, Error> {
        let c = Config {
            doc: Doc::parse(raw, "image config")?,
        };
        c.diff_ids()?;
        Ok(c)
    }

    /// `rootfs.diff_ids`.
    pub fn diff_ids(&self) -> Result<Vec<Digest>, Error> {
        let ids = self.doc.value.get("rootfs").and_then(|r| r.get("diff_ids"));
        match ids {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|d| {
                    d.as_str()
                        .ok_or_else(|| self.doc.invalid("diff_id is not a string"))
                        .and_then(Digest::parse)
                })
                .collect(),
            Some(_) => Err(self.doc.invalid("rootfs.diff_ids is not an array")),
        }
    }

    /// `os/architecture[/variant]`, when present.
    pub fn platform(&self) -> Option<Platform> {
        Some(Platform {
            os: self.doc.str_field("os")?.to_string(),
            architecture: self.doc.str_field("architecture")?.to_string(),
            variant: self.doc.str_field("variant").map(str::to_string),
        })
    }

    /// All history entries.
    pub fn history(&self) -> Vec<HistoryEntry> {
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        match self.doc.value.get("history") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|h| HistoryEntry {
                    created: s(h, "created"),
                    created_by: s(h, "created_by"),
                    comment: s(h, "comment"),
                    empty_layer: h
                        .get("empty_layer")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The history entry of each layer (entries with `empty_layer` skipped); `None` where the
    /// config has fewer entries than layers.
    pub fn layer_history(&self) -> Vec<Option<HistoryEntry>> {
        let n = self.diff_ids().map(|d| d.len()).unwrap_or(0);
        let mut it = self.history().into_iter().filter(|h| !h.empty_layer);
        (0..n).map(|_| it.next()).collect()
    }

    /// Appends a layer: its diff_id to `rootfs.diff_ids` and a history entry. If the config's
    /// history is shorter than its layers, placeholder entries keep the two aligned.
    pub fn push_layer(&mut self, diff_id: &Digest, history: &History) {
        let layers_before = self.diff_ids().map(|d| d.len()).unwrap_or(0);
        let with_history = self.history().iter().filter(|h| !h.empty_layer).count();
        let v = self.doc.value_mut();
        let rootfs = v.entry("rootfs").or_insert_with(|| {
            let mut m = Map::new();
            m.insert("type".into(), Value::String("layers".into()));
            Value::Object(m)
        });
        if let Value::Object(r) = rootfs {
            let ids = r
                .entry("diff_ids")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(a) = ids {
                a.push(Value::String(diff_id.to_string()));
            }
        }
        let hist = v
            .entry("history")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(a) = hist {
            for _ in with_history..layers_before {
                let mut m = Map::new();
                m.insert(
                    "comment".into(),
                    Value::String("history entry added by lamina for a layer that had none".into()),
                );
                a.push(Value::Object(m));
            }
            let mut m = Map::new();
            if let Some(c) = &history.created {
                m.insert("created".into(), Value::String(c.clone()));
            }
            if let Some(a) = &history.author {
                m.insert("author".into(), Value::String(a.clone()));
            }
            m.insert(
                "created_by".into(),
                Value::String(history.created_by.clone()),
            );
            if let Some(c) = &history.comment {
                m.insert("comment".into(), Value::String(c.clone()));
            }
            a.push(Value::Object(m));
        }
    }

    /// Sets a label in `config.Labels`.
    pub fn set_label(&mut self, key: &str, value: &str) {
        let v = self.doc.value_mut();
        let c = v
            .entry("config")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(c) = c {
            let l = c
                .entry("Labels")
                .or_insert_with(|| Value::Object(Map::new()));
            if l.is_null() {
                *l = Value::Object(Map::new());
            }
            if let Value::Object(l) = l {
                l.insert(key.into(), Value::String(value.into()));
            }
        }
    }

    /// Exact bytes to push.
    pub fn bytes(&mut self) -> &[u8] {
        self.doc.bytes()
    }

    /// Digest of [`Config::bytes`].
    pub fn digest(&mut self) -> Digest {
        self.doc.digest()
    }

    /// The underlying document.
    pub fn doc(&self) -> &Doc {
        &self.doc
    }
}

/// The weights layers of a Cog/Replicate image, as r8im finds them: layers whose history
/// `created_by` ends in ` # weights`, else layers whose `created_by` starts with `COPY . /src`.
/// Indexes into the manifest's layers, in order.
pub fn weights_layers(config: &Config) -> Vec<usize> {
    let hist = config.layer_history();
    let pick = |f: &dyn Fn(&str) -> bool| -> Vec<usize> {
        hist.iter()
            .enumerate()
            .filter(|(_, h)| {
                h.as_ref()
                    .and_then(|h| h.created_by.as_deref())
                    .is_some_and(f)
            })
            .map(|(i, _)| i)
            .collect()
    };
    let marked = pick(&|c: &str| c.trim_end().ends_with(" # weights"));
    if !marked.is_empty() {
        return marked;
    }
    pick(&|c: &str| c.starts_with("COPY . /src"))
}

/// The history entry for layer `i` of `from` taken into another image (`lamina remix`): its
/// original `created_by`, marked ` # weights` so the result's weights layers are found again.
pub fn remixed_history(original: Option<&str>, i: usize, from: &str, created: &str) -> History {
    let orig = original.unwrap_or_default();
    let created_by = if orig.trim_end().ends_with(" # weights") {
        orig.to_string()
    } else if orig.is_empty() {
        format!("layer {i} of {from} # weights")
    } else {
        format!("{orig} # weights")
    };
    History {
        created: Some(created.to_string()),
        created_by,
        comment: Some("weights".into()),
        author: None,
    }
}

/// RFC 3339 UTC time (`1970-01-01T00:00:00Z`) for a Unix time, e.g. `SOURCE_DATE_EPOCH`.
pub fn rfc3339(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // civil from days (Howard Hinnant's algorithm)
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn oci_manifest() -> Vec<u8> {
        format!(
            "{{\n  \"schemaVersion\": 2,\n  \"zzz-unknown\": {{\"b\": 1.50, \"a\": [123456789012345678901234567890]}},\n  \"config\": {{\"mediaType\": \"{}\", \"digest\": \"{D1}\", \"size\": 7}},\n  \"layers\": [{{\"mediaType\": \"{}\", \"digest\": \"{D2}\", \"size\": 12, \"x-extra\": true}}]\n}}\n",
            media::OCI_CONFIG,
            media::OCI_LAYER_GZIP
        )
        .into_bytes()
    }

    #[test]
    fn unedited_document_keeps_bytes_and_digest() {
        let raw = oci_manifest();
        let (kind, mt) = detect_kind(&raw, None).unwrap();
        assert_eq!(kind, DocKind::Manifest(Family::Oci));
        let mut m = Manifest::parse(raw.clone(), &mt).unwrap();
        assert_eq!(m.bytes(), &raw[..]);
        assert_eq!(m.digest(), Digest::of(&raw));
    }

    #[test]
    fn edits_keep_unknown_fields_key_order_and_numbers() {
        let mut m = Manifest::parse(oci_manifest(), media::OCI_MANIFEST).unwrap();
        let d3 = Digest::of(b"layer");
        m.push_layer(&Descriptor {
            annotations: vec![("org.opencontainers.image.title".into(), "w.bin".into())],
            ..Descriptor::new(media::OCI_LAYER_TAR, d3.clone(), 5)
        });
        m.set_annotation("k", "v").unwrap();
        let s = String::from_utf8(m.bytes().to_vec()).unwrap();
        assert!(s.starts_with(r#"{"schemaVersion":2,"zzz-unknown":{"b":1.50,"a":[123456789012345678901234567890]},"config""#), "{s}");
        assert!(s.contains(r#""x-extra":true"#));
        assert!(s.ends_with(&format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d3}","size":5,"annotations":{{"org.opencontainers.image.title":"w.bin"}}}}],"annotations":{{"k":"v"}}}}"#
        )), "{s}");
        assert_eq!(m.layers().unwrap().len(), 2);
    }

    #[test]
    fn docker_manifest_refuses_annotations_and_converts() {
        let raw = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","size":7,"digest":"{D1}"}},"layers":[{{"mediaType":"{}","size":12,"digest":"{D2}"}}]}}"#,
            media::DOCKER_MANIFEST,
            media::DOCKER_CONFIG,
            media::DOCKER_LAYER_GZIP
        );
        let (_, mt) = detect_kind(raw.as_bytes(), None).unwrap();
        let mut m = Manifest::parse(raw.into_bytes(), &mt).unwrap();
        assert!(m.set_annotation("a", "b").is_err());
        m.convert_to_oci();
        assert_eq!(m.media_type(), media::OCI_MANIFEST);
        assert_eq!(m.config().unwrap().media_type, media::OCI_CONFIG);
        assert_eq!(m.layers().unwrap()[0].media_type, media::OCI_LAYER_GZIP);
        let s = String::from_utf8(m.bytes().to_vec()).unwrap();
        assert!(
            s.contains(media::OCI_MANIFEST) && !s.contains("docker"),
            "{s}"
        );
    }

    #[test]
    fn config_push_layer_aligns_history() {
        let raw = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{D1}","{D2}"]}},"history":[{{"created_by":"a"}},{{"created_by":"env","empty_layer":true}}]}}"#
        );
        let mut c = Config::parse(raw.into_bytes()).unwrap();
        let d = Digest::of(b"x");
        c.push_layer(
            &d,
            &History {
                created: Some(rfc3339(0)),
                created_by: "COPY w /src/weights # weights".into(),
                comment: Some("weights".into()),
                author: None,
            },
        );
        c.set_label("org.example", "1");
        assert_eq!(c.diff_ids().unwrap().len(), 3);
        let lh = c.layer_history();
        assert_eq!(lh.len(), 3);
        assert_eq!(lh[0].as_ref().unwrap().created_by.as_deref(), Some("a"));
        assert!(lh[1]
            .as_ref()
            .unwrap()
            .comment
            .as_deref()
            .unwrap()
            .contains("had none"));
        assert_eq!(lh[2].as_ref().unwrap().comment.as_deref(), Some("weights"));
        assert_eq!(
            lh[2].as_ref().unwrap().created.as_deref(),
            Some("1970-01-01T00:00:00Z")
        );
        let s = String::from_utf8(c.bytes().to_vec()).unwrap();
        assert!(
            s.contains(r#""config":{"Labels":{"org.example":"1"}}"#),
            "{s}"
        );
        assert_eq!(c.platform(), Some(Platform::linux_amd64()));
    }

    #[test]
    fn index_platform_selection() {
        let raw = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{m}","digest":"{D1}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}},{{"mediaType":"{m}","digest":"{D2}","size":2,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}}]}}"#,
            media::OCI_INDEX,
            m = media::OCI_MANIFEST
        );
        let mut i = Index::parse(raw.clone().into_bytes(), media::OCI_INDEX).unwrap();
        assert_eq!(i.select(&Platform::linux_amd64()).unwrap(), 0);
        assert_eq!(
            i.select(&Platform::parse("linux/arm64").unwrap()).unwrap(),
            1
        );
        assert_eq!(
            i.select(&Platform::parse("linux/arm64/v8").unwrap())
                .unwrap(),
            1
        );
        let e = i
            .select(&Platform::parse("linux/s390x").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("linux/amd64, linux/arm64/v8"), "{e}");
        assert_eq!(i.bytes(), raw.as_bytes());
        i.replace(1, media::OCI_MANIFEST, &Digest::of(b"n"), 9);
        assert_eq!(
            i.manifests().unwrap()[1].platform,
            Some(Platform::parse("linux/arm64/v8").unwrap())
        );
        assert_eq!(i.manifests().unwrap()[1].size, 9);
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux//x").is_err());
    }

    #[test]
    fn malformed_documents_error_not_panic() {
        for raw in [
            &b"[]"[..],
            b"{",
            b"{\"config\":1}",
            b"{\"config\":{\"mediaType\":\"x\",\"digest\":\"sha256:1\",\"size\":1}}",
            b"\xff",
        ] {
            assert!(Manifest::parse(raw.to_vec(), media::OCI_MANIFEST).is_err());
        }
        assert!(detect_kind(br#"{"schemaVersion":1}"#, None)
            .unwrap_err()
            .to_string()
            .contains("schema 1"));
    }

    #[test]
    fn rfc3339_formats_known_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(946_684_800), "2000-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_709_251_199), "2024-02-29T23:59:59Z");
    }
}
