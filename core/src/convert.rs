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
use crate::pack::{self, FileLayer, Model};
use crate::target::Target;
use crate::{media, Digest, Error};

/// Where a modelcar keeps its files.
pub const MODELS: &str = "models";

/// What a conversion makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum To {
    /// A model artifact of this format.
    Artifact(Target),
    /// A modelcar: an image with the files under `/models`, on a base image.
    Modelcar,
}

impl To {
    /// `modelpack`, `modelkit`, `docker`, `modelcar`.
    pub fn name(&self) -> &'static str {
        match self {
            To::Artifact(t) => t.name(),
            To::Modelcar => "modelcar",
        }
    }

    /// The format a name gives.
    pub fn parse(s: &str) -> Option<To> {
        match s {
            "modelcar" => Some(To::Modelcar),
            s => Target::parse(s).map(To::Artifact),
        }
    }
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

/// A layer of the model being converted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// Its index among the manifest's layers.
    pub index: usize,
    /// The source's layer.
    pub layer: Descriptor,
    /// What its file is for.
    pub kind: Kind,
    /// How it holds its file.
    pub packing: Packing,
    /// Its path in the artifact (a modelcar's: under `models/`).
    pub path: String,
    /// Its uncompressed digest.
    pub diff_id: Digest,
    /// The file annotations it carries (metadata, guessed kind), kept on the new layer.
    pub carried: Vec<(String, String)>,
}

/// The model of a source: what it is, its layers, what its config says.
#[derive(Clone, Debug)]
pub struct Origin {
    /// The source's format (a modelcar is an [`artifact::Format::Image`]).
    pub format: artifact::Format,
    /// Its model layers (a modelcar's base image layers are not).
    pub layers: Vec<Source>,
    /// The facts for the new config.
    pub model: Model,
}

/// Reads the model a manifest holds, for converting: an artifact's layers (each must have a
/// packing and a path lamina knows), or a modelcar's model layers (those olot's annotations
/// mark: a file or directory under `/models`, or the model card) with the image's diff_ids.
pub fn source(manifest: &Manifest, config: &Config, name: Option<&str>) -> Result<Origin, Error> {
    let read = artifact::read(manifest, config)?;
    let layers = manifest.layers()?;
    if read.format.is_artifact() {
        let mut out = Vec::new();
        for p in &read.parts {
            let l = &layers[p.index];
            let packing = p.packing.ok_or_else(|| Error::UnsupportedMediaType {
                what: format!("layer {}", p.index),
                media_type: l.media_type.clone(),
            })?;
            out.push(Source {
                index: p.index,
                layer: l.clone(),
                kind: p.kind,
                packing,
                path: part_path(p)?,
                diff_id: diff_id_of(p.index, l, packing, p.diff_id.as_ref())?,
                carried: l
                    .annotations
                    .iter()
                    .filter(|(k, _)| {
                        k == artifact::ANN_FILE_METADATA || k == artifact::ANN_UNTESTED
                    })
                    .cloned()
                    .collect(),
            });
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
        return Ok(Origin {
            format: read.format,
            layers: out,
            model,
        });
    }
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
        let kind = if annotation(l, ANN_LAYER_TYPE) == Some("modelcard") {
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
        let diff_id = diff_ids
            .get(i)
            .cloned()
            .ok_or_else(|| Error::InvalidDocument {
                what: "image config".into(),
                reason: format!("it lists no diff_id for layer {i}"),
            })?;
        out.push(Source {
            index: i,
            layer: l.clone(),
            kind,
            packing: Packing::Tar(c),
            path,
            diff_id,
            carried: Vec::new(),
        });
    }
    Ok(Origin {
        format: read.format,
        layers: out,
        model: Model {
            name: name.map(str::to_string),
            format: formats.first().map(|f| f.to_string()),
            ..Model::default()
        },
    })
}

/// The diff_id of layer `i`: the one the config states, else its digest when it is not
/// compressed.
fn diff_id_of(
    i: usize,
    l: &Descriptor,
    packing: Packing,
    stated: Option<&Digest>,
) -> Result<Digest, Error> {
    match (stated, packing) {
        (Some(d), _) => Ok(d.clone()),
        (None, Packing::Raw | Packing::Tar(Compression::None)) => Ok(l.digest.clone()),
        (None, Packing::Tar(_)) => Err(Error::InvalidDocument {
            what: format!("layer {i}"),
            reason: "a compressed tar without a diff_id in the config".into(),
        }),
    }
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

/// What becomes of one layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The same blob: mounted, never sent.
    Keep,
    /// A raw file put into a tar holding it at its path (under `models/` for a modelcar), as
    /// it streams ([`wrap_header`]).
    Wrap,
    /// A tar's entries put under `models/` ([`crate::retar::Mode::Under`]), uncompressed.
    Under,
    /// A compressed tar made the same tar uncompressed.
    Plain,
    /// A tar of one file made the file ([`crate::retar::Mode::File`]); if it holds more,
    /// [`Step::fallback`].
    Unwrap,
}

impl Step {
    /// What to do with a layer [`Step::Unwrap`] found more than one file in: keep it as a
    /// folder's tar, uncompressed.
    pub fn fallback(packing: Packing) -> Step {
        match packing {
            Packing::Tar(Compression::None) => Step::Keep,
            _ => Step::Plain,
        }
    }

    /// Whether this step sends bytes (all but [`Step::Keep`]).
    pub fn sends(&self) -> bool {
        !matches!(self, Step::Keep)
    }
}

/// What becomes of each layer of `from` to make `to`. The same format is refused (a
/// ModelPack with the `cnai` names may become one with today's names).
pub fn plan(from: &Origin, to: To) -> Result<Vec<Step>, Error> {
    use artifact::Format as F;
    let same = matches!(
        (from.format, to),
        (
            F::ModelPack { legacy: false },
            To::Artifact(Target::ModelPack)
        ) | (F::ModelKit, To::Artifact(Target::ModelKit))
            | (F::DockerModel { .. }, To::Artifact(Target::Docker))
            | (F::Image, To::Modelcar)
    );
    if same {
        let what = match to {
            To::Artifact(Target::ModelPack) => "ModelPack artifact",
            To::Artifact(Target::ModelKit) => "ModelKit",
            To::Artifact(Target::Docker) => "Docker model",
            To::Modelcar => "modelcar",
        };
        return Err(Error::Usage {
            reason: format!("it is a {what} already"),
        });
    }
    Ok(from.layers.iter().map(|s| step(s, to)).collect())
}

/// What becomes of one layer `s` put into a `to`: kept where `to` holds its packing as it is,
/// else re-packed. (Unlike [`plan`], the same format is no error: every layer is kept, as when
/// `lamina remix` moves weights between two ModelPacks.)
pub fn step(s: &Source, to: To) -> Step {
    match (to, s.packing) {
        (To::Artifact(Target::ModelPack), _) => Step::Keep,
        (To::Artifact(Target::ModelKit), Packing::Raw) => Step::Wrap,
        (To::Artifact(Target::ModelKit), p) if Target::ModelKit.takes(p) => Step::Keep,
        (To::Artifact(Target::ModelKit), _) => Step::Plain,
        (To::Artifact(Target::Docker), Packing::Raw) => Step::Keep,
        (To::Artifact(Target::Docker), Packing::Tar(_)) => Step::Unwrap,
        (To::Modelcar, Packing::Raw) => Step::Wrap,
        (To::Modelcar, Packing::Tar(_)) if under_models(&s.path) => Step::Keep,
        (To::Modelcar, Packing::Tar(_)) => Step::Under,
    }
}

fn under_models(path: &str) -> bool {
    path == MODELS || path.starts_with("models/")
}

/// A layer a step made (or kept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Made {
    /// The blob's digest and size.
    pub digest: Digest,
    /// The blob's size.
    pub size: u64,
    /// Its uncompressed digest.
    pub diff_id: Digest,
    /// How it holds its file.
    pub packing: Packing,
    /// For [`Step::Unwrap`]: the file's path in the tar it came out of.
    pub file: Option<(String, u64)>,
}

impl Made {
    /// The source's own blob.
    pub fn kept(s: &Source) -> Made {
        Made {
            digest: s.layer.digest.clone(),
            size: s.layer.size,
            diff_id: s.diff_id.clone(),
            packing: s.packing,
            file: None,
        }
    }
}

/// The file layer of the new artifact for source `s` made into `made`: its path the source's,
/// or for a file taken out of a tar the file's own (out of `models/` when the source is a
/// modelcar, whose files are there only because a modelcar needs them there).
pub fn file_layer(from: &Origin, s: &Source, made: Made) -> Result<FileLayer, Error> {
    let path = match &made.file {
        Some((p, _)) => {
            let p = untar_path(p)?;
            match (from.format, p.strip_prefix("models/")) {
                (artifact::Format::Image, Some(rest)) => rest.to_string(),
                _ => p,
            }
        }
        None => s.path.clone(),
    };
    let file_size = match (&made.file, made.packing) {
        (Some((_, n)), _) => *n,
        (None, Packing::Raw) => made.size,
        (None, _) => 0,
    };
    // a file out of a tar is typed by its name; the rest keep the source's kind
    let (kind, guessed) = match (&made.file, s.kind) {
        (Some(_), Kind::Other | Kind::Weight) => {
            pack::classify(path.rsplit('/').next().unwrap_or(&path), file_size)
        }
        (_, k) => (k, false),
    };
    Ok(FileLayer {
        path,
        kind,
        guessed,
        packing: made.packing,
        digest: made.digest,
        size: made.size,
        diff_id: made.diff_id,
        file_size,
        executable: false,
        carried: match (&made.file, made.packing) {
            (None, Packing::Raw) if !s.carried.is_empty() => Some(s.carried.clone()),
            (None, Packing::Tar(_)) => Some(s.carried.clone()),
            _ => None,
        },
    })
}

/// A tar entry's path checked as an artifact path.
fn untar_path(p: &str) -> Result<String, Error> {
    artifact::safe_path(p).map_err(|why| Error::Tar {
        reason: format!("{why}: {p:?}"),
    })
}

/// The modelcar path (under `/models`) of a layer of `path`.
pub fn car_path(path: &str) -> &str {
    path.strip_prefix("models/").unwrap_or(path)
}

/// The tar header blocks that put a raw file of `size` bytes at `<under>/<path>` (mode 0644
/// or 0755,
/// owner 0:0, mtime `mtime`), with the directories above it; the file's bytes follow, then
/// [`pack::tar_trailer`]. Deterministic, so a conversion run twice gives the same layer.
pub fn wrap_header(
    under: Option<&str>,
    path: &str,
    size: u64,
    executable: bool,
    mtime: u64,
) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    let mut tw = crate::tar::TarWriter::new(mtime);
    let full = match under {
        Some(u) => format!("{u}/{path}"),
        None => path.to_string(),
    };
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
        &crate::tar::EntryKind::File { size, executable },
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

/// The source layers of `sources` that `steps` keep as they are: what a driver mounts (or
/// finds, or copies) into the destination before it streams the others.
pub fn kept_layers(sources: &[Source], steps: &[Step]) -> Vec<Descriptor> {
    sources
        .iter()
        .zip(steps)
        .filter(|(_, st)| !st.sends())
        .map(|(s, _)| s.layer.clone())
        .collect()
}

/// The modelcar layers (a file or folder under `/models` each, with olot's annotations and a
/// history entry of time `created`) of `sources` made into `made`, to go on a base image.
pub fn car_layers(
    sources: &[Source],
    made: Vec<Made>,
    created: &str,
) -> Vec<crate::flow::NewLayer> {
    sources
        .iter()
        .zip(made)
        .map(|(s, m)| {
            let path = car_path(&s.path);
            crate::flow::NewLayer {
                compression: match m.packing {
                    Packing::Tar(c) => c,
                    Packing::Raw => Compression::None,
                },
                digest: m.digest,
                size: m.size,
                diff_id: m.diff_id,
                history: car_history(path, created),
                annotations: car_annotations(path),
            }
        })
        .collect()
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
        let mut tar = wrap_header(
            Some(MODELS),
            "unet/model.safetensors",
            data.len() as u64,
            false,
            0,
        )
        .unwrap();
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
    #[test]
    fn modelcar_layers_sit_under_models_once_with_olots_annotations() {
        let d = Digest::of(b"tar");
        let src = |path: &str| Source {
            index: 0,
            layer: Descriptor::new(media::OCI_LAYER_TAR, d.clone(), 3),
            kind: Kind::Weight,
            packing: Packing::Tar(Compression::None),
            path: path.into(),
            diff_id: d.clone(),
            carried: Vec::new(),
        };
        let sources = [src("unet/x.safetensors"), src("models/config.json")];
        let made: Vec<Made> = sources.iter().map(Made::kept).collect();
        let l = car_layers(&sources, made, "2000-01-01T00:00:00Z");
        assert_eq!(l.len(), 2);
        let at = |n: &crate::flow::NewLayer| {
            n.annotations
                .iter()
                .find(|(k, _)| k == ANN_IN_LAYER_PATH)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(at(&l[0]).as_deref(), Some("/models/unet/x.safetensors"));
        assert_eq!(at(&l[1]).as_deref(), Some("/models/config.json"));
        assert_eq!(
            l[0].history.created_by,
            "COPY unet/x.safetensors /models/unet/x.safetensors # weights"
        );
        assert_eq!(
            l[1].history.created.as_deref(),
            Some("2000-01-01T00:00:00Z")
        );
        assert_eq!((l[0].compression, &l[0].digest), (Compression::None, &d));
    }
}
