//! The same model in another format, sending again only what must change.
//!
//! - A modelcar (an image whose model layers are uncompressed or gzipped tars under
//!   `/models`, marked by olot's annotations) becomes a ModelPack artifact over the very same
//!   blobs: each model layer is a `...v1.tar[+gzip]` layer of its kind (the card a doc), the
//!   config names the image's diff_ids for them, and the base image's layers are left out.
//!   Nothing but a config and a manifest is uploaded.
//! - A ModelPack becomes a modelcar on a base image: a tar layer whose files already sit under
//!   `models/` is kept as it is (a modelcar made ModelPack and back costs a config and a
//!   manifest); a raw layer, its blob the file, is wrapped into a tar holding it at
//!   `/models/<path>` as its bytes stream registry to registry ([`wrap_header`]).

use crate::artifact::{self, Kind, Packing};
use crate::compress::Compression;
use crate::image::{Config, Descriptor, History, Manifest};
use crate::modelcar::{ANN_CONTENT_NAME, ANN_IN_LAYER_PATH, ANN_LAYER_TYPE, ANN_TITLE};
use crate::pack::{self, Model};
use crate::{media, Digest, Error};

/// Where a modelcar keeps its files.
pub const MODELS: &str = "models";

/// A ModelPack made from a modelcar: its config, its layers (the modelcar's blobs).
#[derive(Clone, Debug)]
pub struct ToModelPack {
    /// The config's bytes.
    pub config: Vec<u8>,
    /// The layers, in the modelcar's order.
    pub layers: Vec<Descriptor>,
}

/// The model layers of a modelcar: those olot's annotations mark (a file or directory under
/// `/models`, or the model card).
pub fn modelcar_layers(layers: &[Descriptor]) -> Vec<usize> {
    (0..layers.len())
        .filter(|&i| {
            layers[i]
                .annotations
                .iter()
                .any(|(k, _)| k == ANN_IN_LAYER_PATH || k == ANN_LAYER_TYPE)
        })
        .collect()
}

fn annotation<'a>(d: &'a Descriptor, key: &str) -> Option<&'a str> {
    d.annotations
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The ModelPack over a modelcar's model layers (`manifest` and `config` the image's): kinds
/// from the files' names (the card a doc), paths from olot's in-layer path, the image's
/// diff_ids, the format from the weights' names. `name` goes into the config.
pub fn modelcar_to_modelpack(
    manifest: &Manifest,
    config: &Config,
    name: Option<&str>,
) -> Result<ToModelPack, Error> {
    let layers = manifest.layers()?;
    let diff_ids = config.diff_ids()?;
    let picked = modelcar_layers(&layers);
    if picked.is_empty() {
        return Err(Error::Usage {
            reason: "this image has no modelcar layers (olot's olot.layer.content.inlayerpath \
                     or io.opendatahub.modelcar.layer.type annotations)"
                .into(),
        });
    }
    let mut out = Vec::new();
    let mut ids = Vec::new();
    let mut formats = Vec::new();
    for i in picked {
        let l = &layers[i];
        let c =
            media::layer_compression(&l.media_type).ok_or_else(|| Error::UnsupportedMediaType {
                what: format!("modelcar layer {i}"),
                media_type: l.media_type.clone(),
            })?;
        let title = annotation(l, ANN_TITLE)
            .or_else(|| annotation(l, ANN_CONTENT_NAME))
            .unwrap_or("");
        let card = annotation(l, ANN_LAYER_TYPE) == Some("modelcard");
        let kind = if card {
            Kind::Doc
        } else if annotation(l, crate::modelcar::ANN_CONTENT_TYPE) == Some("directory") {
            Kind::Weight
        } else {
            pack::classify(title, l.size).0
        };
        let path = annotation(l, ANN_IN_LAYER_PATH)
            .map(|p| p.trim_start_matches('/').to_string())
            .unwrap_or_else(|| format!("{MODELS}/{title}"));
        let path = artifact::safe_path(&path).map_err(|why| Error::InvalidDocument {
            what: format!("modelcar layer {i}"),
            reason: format!("{why}: {path:?}"),
        })?;
        for ext in ["safetensors", "gguf", "onnx"] {
            if title.to_ascii_lowercase().ends_with(&format!(".{ext}")) {
                formats.push(ext);
            }
        }
        let mut d = Descriptor::new(
            pack::modelpack_layer_type(kind, Packing::Tar(c)),
            l.digest.clone(),
            l.size,
        );
        d.annotations = vec![
            (artifact::ANN_FILEPATH.into(), path),
            (ANN_TITLE.into(), title.to_string()),
        ];
        out.push(d);
        ids.push(
            diff_ids
                .get(i)
                .cloned()
                .ok_or_else(|| Error::InvalidDocument {
                    what: "image config".into(),
                    reason: format!("it lists no diff_id for layer {i}"),
                })?,
        );
    }
    let model = Model {
        name: name.map(str::to_string),
        format: formats.first().map(|f| f.to_string()),
        ..Model::default()
    };
    Ok(ToModelPack {
        config: pack::modelpack_config(&model, &ids),
        layers: out,
    })
}

/// A ModelPack over another artifact's blobs (a ModelKit, a Docker model, a ModelPack with the
/// `cnai` names): each layer keeps its bytes and gets the ModelPack type of its kind and
/// packing, its path as `org.cncf.model.filepath` and title; the facts the source's config
/// states go into the new config. Nothing but a config and a manifest has to be sent.
pub fn artifact_to_modelpack(
    read: &artifact::Read,
    layers: &[Descriptor],
    name: Option<&str>,
) -> Result<ToModelPack, Error> {
    let mut out = Vec::new();
    let mut ids = Vec::new();
    for p in &read.parts {
        let l = &layers[p.index];
        let packing = p.packing.ok_or_else(|| Error::UnsupportedMediaType {
            what: format!("layer {}", p.index),
            media_type: l.media_type.clone(),
        })?;
        let path = part_path(p)?;
        let diff_id = match (&p.diff_id, packing) {
            (Some(d), _) => d.clone(),
            (None, Packing::Raw | Packing::Tar(Compression::None)) => l.digest.clone(),
            (None, Packing::Tar(_)) => {
                return Err(Error::InvalidDocument {
                    what: format!("layer {}", p.index),
                    reason: "a compressed tar without a diff_id in the config".into(),
                })
            }
        };
        let mut d = Descriptor::new(
            pack::modelpack_layer_type(p.kind, packing),
            l.digest.clone(),
            l.size,
        );
        d.annotations = vec![
            (artifact::ANN_FILEPATH.into(), path.clone()),
            (ANN_TITLE.into(), path),
        ];
        // what the source says of the file (its metadata) stays with it
        d.annotations.extend(
            l.annotations
                .iter()
                .filter(|(k, _)| k == artifact::ANN_FILE_METADATA || k == artifact::ANN_UNTESTED)
                .cloned(),
        );
        out.push(d);
        ids.push(diff_id);
    }
    let a = &read.about;
    let model = Model {
        name: name.map(str::to_string).or_else(|| a.name.clone()),
        family: a.family.clone(),
        format: a.format.clone(),
        param_size: a.param_size.clone(),
        precision: a.precision.clone(),
        architecture: a.architecture.clone(),
        quantization: a.quantization.clone(),
        created_at: None,
    };
    Ok(ToModelPack {
        config: pack::modelpack_config(&model, &ids),
        layers: out,
    })
}

/// A part's checked path, or why it has none.
fn part_path(p: &artifact::Part) -> Result<String, Error> {
    p.path.clone().ok_or_else(|| Error::InvalidDocument {
        what: format!("layer {}", p.index),
        reason: p
            .problem
            .clone()
            .unwrap_or_else(|| "it names no path".into()),
    })
}

/// How one ModelPack layer becomes a modelcar layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToCar {
    /// A tar already under `models/`: the same blob.
    Keep {
        /// The source layer.
        source: Descriptor,
        /// Its compression.
        compression: Compression,
        /// Its diff_id (the config's, or its digest when uncompressed).
        diff_id: Digest,
        /// Its path in the artifact.
        path: String,
    },
    /// A raw file: wrapped into a tar holding it at `models/<path>`.
    Wrap {
        /// The source layer (the file).
        source: Descriptor,
        /// Its path in the artifact.
        path: String,
    },
}

/// What each layer of a ModelPack becomes in a modelcar. A tar layer whose files are not under
/// `models/` (its path annotation says where) would have to be unpacked and packed again under
/// `/models`, which lamina does not do yet: it is refused, naming it.
pub fn modelpack_to_modelcar(
    read: &artifact::Read,
    layers: &[Descriptor],
) -> Result<Vec<ToCar>, Error> {
    let mut out = Vec::new();
    for p in &read.parts {
        let l = &layers[p.index];
        let path = part_path(p)?;
        match p.packing {
            Some(Packing::Raw) => out.push(ToCar::Wrap {
                source: l.clone(),
                path,
            }),
            Some(Packing::Tar(c)) if path == MODELS || path.starts_with("models/") => {
                let diff_id = match (&p.diff_id, c) {
                    (Some(d), _) => d.clone(),
                    (None, Compression::None) => l.digest.clone(),
                    (None, _) => {
                        return Err(Error::InvalidDocument {
                            what: format!("layer {}", p.index),
                            reason: "a compressed tar without a diff_id in the config".into(),
                        })
                    }
                };
                out.push(ToCar::Keep {
                    source: l.clone(),
                    compression: c,
                    diff_id,
                    path,
                });
            }
            Some(Packing::Tar(_)) => {
                return Err(Error::Usage {
                    reason: format!(
                        "layer {} is a tar of {path:?}, not under models/: a modelcar needs its \
                         files under /models, and re-packing a tar layer is not done yet",
                        p.index
                    ),
                })
            }
            None => {
                return Err(Error::UnsupportedMediaType {
                    what: format!("layer {}", p.index),
                    media_type: l.media_type.clone(),
                })
            }
        }
    }
    Ok(out)
}

/// The tar header blocks that put a raw file of `size` bytes at `models/<path>` (mode 0644,
/// owner 0:0, mtime `mtime`), with the directories above it; the file's bytes follow, then
/// [`pack::tar_trailer`]. Deterministic, so a conversion run twice gives the same layer.
pub fn wrap_header(path: &str, size: u64, mtime: u64) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    let mut tw = crate::tar::TarWriter::new(mtime);
    let full = format!("{MODELS}/{path}");
    let parts: Vec<&str> = full.split('/').collect();
    for n in 1..parts.len() {
        tw.entry(
            &parts[..n].join("/"),
            &crate::tar::EntryKind::Dir,
            &mut |b| out.extend_from_slice(b),
        )?;
    }
    tw.entry(
        &full,
        &crate::tar::EntryKind::File {
            size,
            executable: false,
        },
        &mut |b| out.extend_from_slice(b),
    )?;
    Ok(out)
}

/// The history entry of a modelcar layer made from an artifact's file.
pub fn car_history(path: &str, created: &str) -> History {
    History {
        created: Some(created.to_string()),
        created_by: format!("COPY {path} /{MODELS}/{path} # weights"),
        comment: Some("weights".into()),
        author: None,
    }
}

/// olot's annotations for a modelcar layer of `path` (a file).
pub fn car_annotations(path: &str) -> Vec<(String, String)> {
    let name = path.rsplit('/').next().unwrap_or(path).to_string();
    vec![
        (ANN_TITLE.into(), name.clone()),
        (crate::modelcar::ANN_CONTENT_TYPE.into(), "file".into()),
        (ANN_IN_LAYER_PATH.into(), format!("/{MODELS}/{path}")),
        (ANN_CONTENT_NAME.into(), name),
    ]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn a_wrapped_file_is_a_tar_gnu_tar_would_read() {
        let data = b"hello weights";
        let mut tar = wrap_header("unet/model.safetensors", data.len() as u64, 0).unwrap();
        tar.extend_from_slice(data);
        tar.extend_from_slice(&pack::tar_trailer(data.len() as u64));
        assert_eq!(tar.len() % 512, 0);
        let mut r = crate::untar::TarReader::new();
        let mut seen = Vec::new();
        r.write(&tar, &mut |e| {
            if let crate::untar::Event::Entry(h) = e {
                seen.push(h.path.clone());
            }
            Ok(())
        })
        .unwrap();
        r.finish().unwrap();
        let seen: Vec<&str> = seen.iter().map(|s| s.trim_end_matches('/')).collect();
        assert_eq!(
            seen,
            ["models", "models/unet", "models/unet/model.safetensors"]
        );
    }
}
