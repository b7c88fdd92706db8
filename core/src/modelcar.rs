//! Modelcars (KServe / Open Data Hub, as olot makes them) and CNCF ModelPack manifests: the
//! annotations, history entries and documents for layers of model files under `/models`.
//!
//! A modelcar is an ordinary image whose extra layers hold model files under `/models/`, one
//! layer per input, with the model card (README) as the last, gzipped layer. olot marks the
//! layers with `org.opencontainers.image.title` and its own `olot.layer.content.*` keys, the card
//! layer with `io.opendatahub.modelcar.layer.type=modelcard` and the manifest with
//! `io.opendatahub.layers.modelcard=<card digest>`; lamina writes the same keys.

use serde_json::{json, Value};

use crate::compress::Compression;
use crate::digest::Digest;
use crate::error::Error;
use crate::image::{Config, Descriptor, History, Manifest};
use crate::layer::LayerInfo;
use crate::media::{self, Family};

/// Layer title (the input's name).
pub const ANN_TITLE: &str = "org.opencontainers.image.title";
/// Marks the model card layer (`modelcard`).
pub const ANN_LAYER_TYPE: &str = "io.opendatahub.modelcar.layer.type";
/// Manifest annotation: the model card layer's digest.
pub const ANN_MODELCARD: &str = "io.opendatahub.layers.modelcard";
/// olot: `file` or `directory`.
pub const ANN_CONTENT_TYPE: &str = "olot.layer.content.type";
/// olot: the path of the input inside the layer (with a leading `/`).
pub const ANN_IN_LAYER_PATH: &str = "olot.layer.content.inlayerpath";
/// olot: the input's name.
pub const ANN_CONTENT_NAME: &str = "olot.layer.content.name";

/// ModelPack manifest `artifactType`.
pub const MODELPACK_ARTIFACT: &str = "application/vnd.cncf.model.manifest.v1+json";
/// ModelPack config media type.
pub const MODELPACK_CONFIG: &str = "application/vnd.cncf.model.config.v1+json";
/// ModelPack layer annotation: the file's path.
pub const ANN_FILEPATH: &str = "org.cncf.model.filepath";

/// What a layer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Model files.
    Weights,
    /// The model card.
    Card,
}

/// A built modelcar layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CarLayer {
    /// The input's name (`model.safetensors`, a directory's name, `README.md`).
    pub title: String,
    /// Where the input is in the layer, with a leading `/` (`/models/model.safetensors`).
    pub in_layer_path: String,
    /// The input was a directory.
    pub directory: bool,
    /// Weights or model card.
    pub part: Part,
    /// The blob.
    pub info: LayerInfo,
}

impl CarLayer {
    /// The layer descriptor for a manifest of `family`, with olot's annotations (in olot's
    /// order) where the family allows annotations.
    pub fn descriptor(&self, family: Family) -> Result<Descriptor, Error> {
        let mt = media::layer_type(family, self.info.compression).ok_or_else(|| Error::Usage {
            reason: format!(
                "a {} layer cannot go into a Docker v2 manifest",
                self.info.compression.name()
            ),
        })?;
        let mut d = Descriptor::new(mt, self.info.digest.clone(), self.info.size);
        if family == Family::Oci {
            d.annotations.push((ANN_TITLE.into(), self.title.clone()));
            if self.part == Part::Card {
                d.annotations
                    .push((ANN_LAYER_TYPE.into(), "modelcard".into()));
            }
            let kind = if self.directory { "directory" } else { "file" };
            d.annotations.push((ANN_CONTENT_TYPE.into(), kind.into()));
            d.annotations
                .push((ANN_IN_LAYER_PATH.into(), self.in_layer_path.clone()));
            d.annotations
                .push((ANN_CONTENT_NAME.into(), self.title.clone()));
        }
        Ok(d)
    }

    /// The history entry. `created_by` reads like the Dockerfile line that would have made the
    /// layer and ends in ` # weights` (or ` # modelcard`), the mark r8im and `lamina extract`
    /// look for.
    pub fn history(&self, created: &str) -> History {
        let (mark, comment) = match self.part {
            Part::Weights => ("weights", "weights"),
            Part::Card => ("modelcard", "modelcard"),
        };
        History {
            created: Some(created.to_string()),
            created_by: format!("COPY {} {} # {mark}", self.title, self.in_layer_path),
            comment: Some(comment.into()),
            author: None,
        }
    }
}

/// Appends `layers` to an image (manifest and config) unless the manifest already has them
/// (same digest), so running twice on the same files adds nothing. Points the manifest's
/// modelcard annotation at the card layer. Returns how many layers were added.
pub fn apply(
    m: &mut Manifest,
    c: &mut Config,
    layers: &[CarLayer],
    created: &str,
) -> Result<usize, Error> {
    let have: Vec<Digest> = m.layers()?.into_iter().map(|d| d.digest).collect();
    let mut added = 0;
    for l in layers {
        if have.contains(&l.info.digest) {
            continue;
        }
        m.push_layer(&l.descriptor(m.family())?);
        c.push_layer(&l.info.diff_id, &l.history(created));
        added += 1;
    }
    if let Some(card) = layers.iter().rev().find(|l| l.part == Part::Card) {
        let want = card.info.digest.to_string();
        let now = m
            .annotations()
            .into_iter()
            .find(|(k, _)| k == ANN_MODELCARD)
            .map(|(_, v)| v);
        if now.as_deref() != Some(want.as_str()) {
            m.set_annotation(ANN_MODELCARD, &want)?;
        }
    }
    Ok(added)
}

/// The ModelPack layer media type for a layer.
pub fn modelpack_layer_type(part: Part, c: Compression) -> &'static str {
    match (part, c) {
        (Part::Weights, Compression::None) => "application/vnd.cncf.model.weight.v1.tar",
        (Part::Weights, Compression::Gzip) => "application/vnd.cncf.model.weight.v1.tar+gzip",
        (Part::Weights, Compression::Zstd) => "application/vnd.cncf.model.weight.v1.tar+zstd",
        (Part::Card, Compression::None) => "application/vnd.cncf.model.doc.v1.tar",
        (Part::Card, Compression::Gzip) => "application/vnd.cncf.model.doc.v1.tar+gzip",
        (Part::Card, Compression::Zstd) => "application/vnd.cncf.model.doc.v1.tar+zstd",
    }
}

/// A CNCF ModelPack artifact over the same layer blobs: its config bytes and manifest bytes
/// (the manifest names the config by digest). `name` goes into the config's descriptor.
pub fn modelpack(layers: &[CarLayer], created: &str, name: Option<&str>) -> (Vec<u8>, Vec<u8>) {
    // the schema's names (`diffIds`; regression: `diff_ids`, spec v0.0.6's, which the current
    // schema refuses)
    let model = crate::pack::Model {
        name: name.map(str::to_string),
        created_at: Some(created.to_string()),
        ..crate::pack::Model::default()
    };
    let diff_ids: Vec<Digest> = layers.iter().map(|l| l.info.diff_id.clone()).collect();
    let config = crate::pack::modelpack_config(&model, &diff_ids);
    let layer_values: Vec<Value> = layers
        .iter()
        .map(|l| {
            let mut d = Descriptor::new(
                modelpack_layer_type(l.part, l.info.compression),
                l.info.digest.clone(),
                l.info.size,
            );
            d.annotations.push((ANN_TITLE.into(), l.title.clone()));
            d.annotations.push((
                ANN_FILEPATH.into(),
                l.in_layer_path.trim_start_matches('/').to_string(),
            ));
            d.to_value()
        })
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "artifactType": MODELPACK_ARTIFACT,
        "config": {
            "mediaType": MODELPACK_CONFIG,
            "digest": Digest::of(&config).to_string(),
            "size": config.len(),
        },
        "layers": layer_values,
    });
    let manifest = serde_json::to_vec(&manifest).unwrap_or_default();
    (config, manifest)
}

/// True for manifests that are not container images: artifacts (an `artifactType`, or a config
/// that is not an image config) and attestations. Appending model layers to them would make
/// nonsense, so they are left alone.
pub fn not_an_image(m: &Manifest) -> Option<String> {
    let v = m.doc().value();
    if let Some(at) = v.get("artifactType").and_then(Value::as_str) {
        return Some(format!("an artifact ({at})"));
    }
    let cfg = m.config().ok()?;
    if cfg.media_type != media::OCI_CONFIG && cfg.media_type != media::DOCKER_CONFIG {
        return Some(format!("an artifact (config {})", cfg.media_type));
    }
    let layers = m.layers().ok()?;
    if layers
        .first()
        .is_some_and(|l| l.media_type == "application/vnd.in-toto+json")
    {
        return Some("an attestation".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn layer(part: Part, c: Compression, n: u8) -> CarLayer {
        let d = Digest::of(&[n]);
        CarLayer {
            title: format!("f{n}"),
            in_layer_path: format!("/models/f{n}"),
            directory: false,
            part,
            info: LayerInfo {
                compression: c,
                digest: d.clone(),
                size: 10,
                diff_id: if c == Compression::None {
                    d
                } else {
                    Digest::of(&[n, n])
                },
                uncompressed_size: 10,
            },
        }
    }

    fn image() -> (Manifest, Config) {
        let cfg = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"history":[]}"#;
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{}","size":{}}},"layers":[]}}"#,
            media::OCI_MANIFEST,
            media::OCI_CONFIG,
            Digest::of(cfg),
            cfg.len()
        );
        (
            Manifest::parse(m.into_bytes(), media::OCI_MANIFEST).unwrap(),
            Config::parse(cfg.to_vec()).unwrap(),
        )
    }

    #[test]
    fn apply_adds_layers_once_and_marks_the_card() {
        let (mut m, mut c) = image();
        let ls = vec![
            layer(Part::Weights, Compression::None, 1),
            layer(Part::Card, Compression::Gzip, 2),
        ];
        assert_eq!(
            apply(&mut m, &mut c, &ls, "2026-01-01T00:00:00Z").unwrap(),
            2
        );
        let (m1, c1) = (m.bytes().to_vec(), c.bytes().to_vec());
        // idempotent: nothing added the second time, documents unchanged
        assert_eq!(
            apply(&mut m, &mut c, &ls, "2027-01-01T00:00:00Z").unwrap(),
            0
        );
        assert_eq!(m.bytes(), &m1[..]);
        assert_eq!(c.bytes(), &c1[..]);

        let v: Value = serde_json::from_slice(&m1).unwrap();
        let l0 = &v["layers"][0];
        assert_eq!(l0["mediaType"], media::OCI_LAYER_TAR);
        assert_eq!(l0["annotations"][ANN_TITLE], "f1");
        assert_eq!(l0["annotations"][ANN_IN_LAYER_PATH], "/models/f1");
        assert!(l0["annotations"].get(ANN_LAYER_TYPE).is_none());
        let l1 = &v["layers"][1];
        assert_eq!(l1["mediaType"], media::OCI_LAYER_GZIP);
        assert_eq!(l1["annotations"][ANN_LAYER_TYPE], "modelcard");
        assert_eq!(
            v["annotations"][ANN_MODELCARD],
            Digest::of(&[2]).to_string()
        );
        let cv: Value = serde_json::from_slice(&c1).unwrap();
        assert_eq!(cv["rootfs"]["diff_ids"][1], Digest::of(&[2, 2]).to_string());
        assert_eq!(
            cv["history"][0]["created_by"],
            "COPY f1 /models/f1 # weights"
        );
        assert_eq!(cv["history"][1]["comment"], "modelcard");
    }

    #[test]
    fn modelpack_shares_the_blobs_and_names_the_config() {
        let ls = vec![
            layer(Part::Weights, Compression::None, 1),
            layer(Part::Card, Compression::Gzip, 2),
        ];
        let (cfg, man) = modelpack(&ls, "2026-01-01T00:00:00Z", Some("m"));
        let c: Value = serde_json::from_slice(&cfg).unwrap();
        assert_eq!(c["modelfs"]["type"], "layers");
        assert_eq!(c["modelfs"]["diffIds"][1], Digest::of(&[2, 2]).to_string());
        assert_eq!(c["descriptor"]["name"], "m");
        let m: Value = serde_json::from_slice(&man).unwrap();
        assert_eq!(m["artifactType"], MODELPACK_ARTIFACT);
        assert_eq!(m["config"]["digest"], Digest::of(&cfg).to_string());
        assert_eq!(m["config"]["mediaType"], MODELPACK_CONFIG);
        assert_eq!(
            m["layers"][0]["mediaType"],
            "application/vnd.cncf.model.weight.v1.tar"
        );
        assert_eq!(m["layers"][0]["digest"], Digest::of(&[1]).to_string());
        assert_eq!(m["layers"][0]["annotations"][ANN_FILEPATH], "models/f1");
        assert_eq!(
            m["layers"][1]["mediaType"],
            "application/vnd.cncf.model.doc.v1.tar+gzip"
        );
    }

    #[test]
    fn artifacts_and_attestations_are_not_images() {
        let (m, _) = image();
        assert_eq!(not_an_image(&m), None);
        let art = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","artifactType":"application/x","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{}","size":2}},"layers":[]}}"#,
            media::OCI_MANIFEST,
            Digest::of(b"{}")
        );
        let a = Manifest::parse(art.into_bytes(), media::OCI_MANIFEST).unwrap();
        assert!(not_an_image(&a).unwrap().contains("artifact"));
    }
}
