//! Model artifacts: what kind of thing a manifest is (a runnable image, a CNCF ModelPack
//! artifact, a KitOps ModelKit, a Docker model artifact), what each layer holds (a weight, a
//! weight's config, a doc, code, a dataset, a prompt) and how (one raw file, or a tar), and
//! where its file goes: the path a manifest names, checked before anything is written.
//!
//! The formats, as their writers make them (read from the spec and from modctl, kit and
//! Docker's model-runner; see the README's "Model artifacts"):
//! - ModelPack: manifest `artifactType` [`MODELPACK_MANIFEST`], config [`MODELPACK_CONFIG`],
//!   layers `application/vnd.cncf.model.{weight,weight.config,doc,code,dataset}.v1.{raw,tar,
//!   tar+gzip,tar+zstd}`, the file's path in `org.cncf.model.filepath`, diff_ids in
//!   `modelfs.diffIds`. The names before spec v0.0.7 (`vnd.cnai`, `org.cnai.model.filepath`,
//!   `modelfs.diff_ids`) are read too: Harbor reads only those.
//! - KitOps ModelKit: config [`MODELKIT_CONFIG`] (the Kitfile as JSON), layers
//!   `application/vnd.kitops.modelkit.{model,modelpart,dataset,code,docs,prompt}.v1.{tar,raw}
//!   [+gzip|+zstd]`; a layer's path is in the Kitfile (entries matched to layers by order within
//!   each kind), and tar entries are named from the packing root. kit 1.7 writes no manifest
//!   `mediaType` and no `artifactType`.
//! - Docker model artifacts: config `application/vnd.docker.ai.model.config.v0.{1,2}+json`
//!   (`rootfs.diff_ids`), raw layers `application/vnd.docker.ai.{gguf.v3,safetensors,dduf,
//!   mmproj,chat.template.jinja,license,model.file}`, tar layers `...vllm.config.tar` and
//!   `...dir.tar`; v0.2 names files by `org.cncf.model.filepath`, v0.1 by position.
//!
//! A path in an annotation or a Kitfile comes from whoever pushed the artifact: [`safe_path`]
//! refuses one that is absolute, climbs out (`..`), carries a NUL, a backslash or a drive
//! letter, before any file is made from it.

use serde_json::Value;

use crate::compress::Compression;
use crate::image::Descriptor;
use crate::Digest;

/// ModelPack's manifest `artifactType`.
pub const MODELPACK_MANIFEST: &str = "application/vnd.cncf.model.manifest.v1+json";
/// ModelPack's config media type.
pub const MODELPACK_CONFIG: &str = "application/vnd.cncf.model.config.v1+json";
/// ModelPack's manifest `artifactType` before spec v0.0.7.
pub const MODELPACK_MANIFEST_LEGACY: &str = "application/vnd.cnai.model.manifest.v1+json";
/// ModelPack's config media type before spec v0.0.7.
pub const MODELPACK_CONFIG_LEGACY: &str = "application/vnd.cnai.model.config.v1+json";
/// A ModelKit's config media type (the Kitfile as JSON).
pub const MODELKIT_CONFIG: &str = "application/vnd.kitops.modelkit.config.v1+json";
/// A ModelKit's manifest `artifactType` (newer kit versions).
pub const MODELKIT_MANIFEST: &str = "application/vnd.kitops.modelkit.manifest.v1+json";
/// Docker's model config, positional layers.
pub const DOCKER_MODEL_CONFIG_V1: &str = "application/vnd.docker.ai.model.config.v0.1+json";
/// Docker's model config, a layer per file named by `org.cncf.model.filepath`.
pub const DOCKER_MODEL_CONFIG_V2: &str = "application/vnd.docker.ai.model.config.v0.2+json";
/// The layer annotation naming a ModelPack layer's file (also Docker v0.2's).
pub const ANN_FILEPATH: &str = "org.cncf.model.filepath";
/// [`ANN_FILEPATH`] before spec v0.0.7 (CRI-O and Harbor read only this one).
pub const ANN_FILEPATH_LEGACY: &str = "org.cnai.model.filepath";
/// The OCI title annotation: a file's name (olot, CRI-O's artifact mounts).
pub const ANN_TITLE: &str = "org.opencontainers.image.title";
/// ModelPack's file metadata annotation (JSON: name, mode, uid, gid, size, mtime, typeflag).
pub const ANN_FILE_METADATA: &str = "org.cncf.model.file.metadata+json";
/// ModelPack's "the kind was guessed" annotation (`"true"`/`"false"`).
pub const ANN_UNTESTED: &str = "org.cncf.model.file.mediatype.untested";

/// What a manifest is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A container image (a modelcar is one too: files under `/models`).
    Image,
    /// A CNCF ModelPack artifact; `legacy` with the `vnd.cnai` names of spec v0.0.6 and before.
    ModelPack {
        /// `vnd.cnai` names.
        legacy: bool,
    },
    /// A KitOps ModelKit.
    ModelKit,
    /// A Docker model artifact, config v0.1 (positional) or v0.2 (a layer per named file).
    DockerModel {
        /// 1 or 2.
        version: u8,
    },
}

impl Format {
    /// `image`, `modelpack`, `modelpack (cnai names)`, `modelkit`, `docker-model v0.2`.
    pub fn name(&self) -> &'static str {
        match self {
            Format::Image => "image",
            Format::ModelPack { legacy: false } => "modelpack",
            Format::ModelPack { legacy: true } => "modelpack (cnai names)",
            Format::ModelKit => "modelkit",
            Format::DockerModel { version: 1 } => "docker-model v0.1",
            Format::DockerModel { .. } => "docker-model v0.2",
        }
    }

    /// The format's short name, as `--format` and `--to` spell it: `image`, `modelpack`,
    /// `modelkit`, `docker`.
    pub fn short(&self) -> &'static str {
        match self {
            Format::Image => "image",
            Format::ModelPack { .. } => "modelpack",
            Format::ModelKit => "modelkit",
            Format::DockerModel { .. } => "docker",
        }
    }

    /// Whether it is a model artifact (not a runnable image).
    pub fn is_artifact(&self) -> bool {
        !matches!(self, Format::Image)
    }
}

/// Tells what a manifest is, from its `artifactType` and its config's media type (either is
/// enough: kit 1.7 sets neither `artifactType` nor `mediaType`, Docker sets no `artifactType`
/// on its own format).
pub fn detect(artifact_type: Option<&str>, config_media_type: &str) -> Format {
    match (artifact_type.unwrap_or(""), config_media_type) {
        (MODELPACK_MANIFEST, _) | (_, MODELPACK_CONFIG) => Format::ModelPack { legacy: false },
        (MODELPACK_MANIFEST_LEGACY, _) | (_, MODELPACK_CONFIG_LEGACY) => {
            Format::ModelPack { legacy: true }
        }
        (MODELKIT_MANIFEST, _) | (_, MODELKIT_CONFIG) => Format::ModelKit,
        (_, DOCKER_MODEL_CONFIG_V1) => Format::DockerModel { version: 1 },
        (_, DOCKER_MODEL_CONFIG_V2) => Format::DockerModel { version: 2 },
        _ => Format::Image,
    }
}

/// What a layer's file is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Model weights (safetensors, GGUF, ONNX, ...).
    Weight,
    /// A weight's configuration: `config.json`, tokenizers, chat templates.
    Config,
    /// Documentation: README, LICENSE, model cards.
    Doc,
    /// Code: scripts, notebooks.
    Code,
    /// A dataset.
    Dataset,
    /// A prompt (ModelKit).
    Prompt,
    /// An image layer, or a file of no stated kind.
    Other,
}

impl Kind {
    /// Every kind, for `--kind` and for messages.
    pub const ALL: [Kind; 7] = [
        Kind::Weight,
        Kind::Config,
        Kind::Doc,
        Kind::Code,
        Kind::Dataset,
        Kind::Prompt,
        Kind::Other,
    ];

    /// `weight`, `config`, `doc`, `code`, `dataset`, `prompt`, `other`.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Weight => "weight",
            Kind::Config => "config",
            Kind::Doc => "doc",
            Kind::Code => "code",
            Kind::Dataset => "dataset",
            Kind::Prompt => "prompt",
            Kind::Other => "other",
        }
    }

    /// The kind a name gives (`weight`, `weights`, `config`, `doc`, `docs`, ...).
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "weight" | "weights" | "model" => Kind::Weight,
            "config" | "weight.config" | "configs" => Kind::Config,
            "doc" | "docs" => Kind::Doc,
            "code" => Kind::Code,
            "dataset" | "datasets" => Kind::Dataset,
            "prompt" | "prompts" => Kind::Prompt,
            "other" => Kind::Other,
            _ => return None,
        })
    }
}

/// How a layer holds its files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packing {
    /// The blob is the file itself, uncompressed.
    Raw,
    /// A tar, with this compression.
    Tar(Compression),
}

impl Packing {
    /// `raw`, `tar`, `tar+gzip`, `tar+zstd`.
    pub fn name(&self) -> &'static str {
        match self {
            Packing::Raw => "raw",
            Packing::Tar(Compression::None) => "tar",
            Packing::Tar(Compression::Gzip) => "tar+gzip",
            Packing::Tar(Compression::Zstd) => "tar+zstd",
        }
    }
}

/// What a layer media type says: the file's kind and how the layer holds it. `None` for a type
/// lamina does not know (it is listed, and left alone).
pub fn layer_type(media_type: &str) -> Option<(Kind, Packing)> {
    if let Some(c) = crate::media::layer_compression(media_type) {
        return Some((Kind::Other, Packing::Tar(c)));
    }
    let packing = |suffix: &str| -> Option<Packing> {
        Some(match suffix {
            "raw" => Packing::Raw,
            "tar" => Packing::Tar(Compression::None),
            "tar+gzip" => Packing::Tar(Compression::Gzip),
            "tar+zstd" => Packing::Tar(Compression::Zstd),
            _ => return None,
        })
    };
    for prefix in ["application/vnd.cncf.model.", "application/vnd.cnai.model."] {
        if let Some(rest) = media_type.strip_prefix(prefix) {
            let (kind, rest) = if let Some(r) = rest.strip_prefix("weight.config.v1.") {
                (Kind::Config, r)
            } else if let Some((k, r)) = rest.split_once(".v1.") {
                let kind = match k {
                    "weight" => Kind::Weight,
                    "doc" => Kind::Doc,
                    "code" => Kind::Code,
                    "dataset" => Kind::Dataset,
                    // spec v0.0.1's one layer type (ramalama still writes it)
                    "layer" => Kind::Other,
                    _ => return None,
                };
                (kind, r)
            } else {
                return None;
            };
            // model-runner's own raw weight types, read for the artifacts it made
            if kind == Kind::Weight && (rest == "gguf" || rest == "safetensors") {
                return Some((Kind::Weight, Packing::Raw));
            }
            return Some((kind, packing(rest)?));
        }
    }
    if let Some(rest) = media_type.strip_prefix("application/vnd.kitops.modelkit.") {
        let (k, rest) = rest.split_once(".v1.")?;
        let kind = match k {
            "model" | "modelpart" => Kind::Weight,
            "dataset" => Kind::Dataset,
            "code" => Kind::Code,
            "docs" => Kind::Doc,
            "prompt" => Kind::Prompt,
            _ => return None,
        };
        return Some((kind, packing(rest)?));
    }
    if let Some(rest) = media_type.strip_prefix("application/vnd.docker.ai.") {
        return Some(match rest {
            "gguf.v3" | "safetensors" | "dduf" | "mmproj" => (Kind::Weight, Packing::Raw),
            "chat.template.jinja" => (Kind::Config, Packing::Raw),
            "license" => (Kind::Doc, Packing::Raw),
            "model.file" => (Kind::Other, Packing::Raw),
            "vllm.config.tar" => (Kind::Config, Packing::Tar(Compression::None)),
            "dir.tar" => (Kind::Other, Packing::Tar(Compression::None)),
            _ => return None,
        });
    }
    None
}

/// Checks a path taken from an artifact (an annotation, a Kitfile) and gives it relative and
/// `/`-separated, without `.` parts: `Err` names what is wrong with it. Refused: an empty path,
/// an absolute one, one that climbs (`..`), a NUL or other control character, a backslash (a
/// Windows separator a Linux runtime reads as part of a name), a drive letter (`C:`).
pub fn safe_path(p: &str) -> Result<String, String> {
    if p.is_empty() {
        return Err("the path is empty".into());
    }
    if p.chars().any(|c| c.is_control()) {
        return Err("the path holds a control character".into());
    }
    if p.contains('\\') {
        return Err("the path holds a backslash".into());
    }
    if p.starts_with('/') {
        return Err("the path is absolute".into());
    }
    let b = p.as_bytes();
    if b.len() >= 2 && b[1] == b':' && b[0].is_ascii_alphabetic() {
        return Err("the path starts with a drive letter".into());
    }
    let mut parts = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err("the path climbs out of the output (..)".into()),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err("the path names no file".into());
    }
    Ok(parts.join("/"))
}

/// The path a layer's annotations give its file, as written (check it with [`safe_path`]):
/// `org.cncf.model.filepath`, else the `cnai` name, else the OCI title.
pub fn annotated_path(d: &Descriptor) -> Option<&str> {
    [ANN_FILEPATH, ANN_FILEPATH_LEGACY, ANN_TITLE]
        .iter()
        .find_map(|k| d.annotations.iter().find(|(a, _)| a == k))
        .map(|(_, v)| v.as_str())
}

/// One layer of an artifact, as lamina reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// Its index in the manifest.
    pub index: usize,
    /// What its file is for.
    pub kind: Kind,
    /// Raw or tar; `None` for a media type lamina does not know.
    pub packing: Option<Packing>,
    /// Its file's path, checked ([`safe_path`]); for a tar, where its files come from (the
    /// entries carry their own names).
    pub path: Option<String>,
    /// Why there is no path where one was expected: the path refused, or none given.
    pub problem: Option<String>,
    /// The uncompressed digest the config states, where it states one.
    pub diff_id: Option<Digest>,
}

/// The layers of a manifest of `format` with its config `config` (the config JSON): each with
/// its kind, packing, checked path and stated diff_id.
pub fn parts(format: Format, layers: &[Descriptor], config: &Value) -> Vec<Part> {
    let diff_ids = stated_diff_ids(format, config);
    let kit = matches!(format, Format::ModelKit).then(|| kitfile_paths(config, layers));
    let mut seen: Vec<String> = Vec::new();
    layers
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let t = layer_type(&d.media_type);
            let (mut kind, packing) = match t {
                Some((k, p)) => (k, Some(p)),
                None => (Kind::Other, None),
            };
            let given = match &kit {
                Some(paths) => paths.get(i).cloned().flatten().map(|(p, t)| {
                    // a part's type says a weight config (lamina writes "config")
                    if kind == Kind::Weight && matches!(t.as_str(), "config" | "tokenizer") {
                        kind = Kind::Config;
                    }
                    p
                }),
                None => annotated_path(d).map(str::to_string),
            }
            .or_else(|| {
                // v0.1 names files by position, as model-runner unpacks them
                (format == Format::DockerModel { version: 1 } && packing == Some(Packing::Raw))
                    .then(|| docker_v1_name(layers, i))
            });
            let (mut path, mut problem) = match given.as_deref().map(safe_path) {
                Some(Ok(p)) => (Some(p), None),
                Some(Err(why)) => (
                    None,
                    Some(format!("{why}: {:?}", given.unwrap_or_default())),
                ),
                None => (None, None),
            };
            // model-runner types only weights and licenses: the rest are "model files", whose
            // kind their names tell (as `lamina pack` tells it)
            if matches!(format, Format::DockerModel { .. }) && kind == Kind::Other {
                if let Some(p) = path.as_deref().filter(|_| packing == Some(Packing::Raw)) {
                    kind = crate::pack::classify(p.rsplit('/').next().unwrap_or(p), d.size).0;
                }
            }
            if let Some(p) = &path {
                if packing == Some(Packing::Raw) && seen.contains(p) {
                    problem = Some(format!("another layer is the file {p:?} already"));
                    path = None;
                } else {
                    seen.push(p.clone());
                }
            }
            if path.is_none() && problem.is_none() && packing == Some(Packing::Raw) {
                problem = Some("the layer names no file (no org.cncf.model.filepath)".into());
            }
            Part {
                index: i,
                kind,
                packing,
                path,
                problem,
                diff_id: diff_ids.get(i).cloned(),
            }
        })
        .collect()
}

/// The file name model-runner gives layer `i` of a Docker v0.1 model that names none:
/// `model.gguf`, or `model-00001-of-00003.gguf` for shards, `model.mmproj`, `template.jinja`;
/// lamina's own for the rest (`LICENSE`, `LICENSE-2`, `layer-N`).
fn docker_v1_name(layers: &[Descriptor], i: usize) -> String {
    let mt = layers[i].media_type.as_str();
    let same: Vec<usize> = (0..layers.len())
        .filter(|&j| layers[j].media_type == mt)
        .collect();
    let (k, n) = (
        same.iter().position(|&j| j == i).unwrap_or(0) + 1,
        same.len(),
    );
    let one = |name: &str, ext: &str| {
        if n == 1 {
            format!("{name}.{ext}")
        } else {
            format!("{name}-{k:05}-of-{n:05}.{ext}")
        }
    };
    match mt {
        "application/vnd.docker.ai.gguf.v3" => one("model", "gguf"),
        "application/vnd.docker.ai.safetensors" => one("model", "safetensors"),
        "application/vnd.docker.ai.mmproj" => one("model", "mmproj"),
        "application/vnd.docker.ai.chat.template.jinja" => one("template", "jinja"),
        "application/vnd.docker.ai.license" if k == 1 => "LICENSE".into(),
        "application/vnd.docker.ai.license" => format!("LICENSE-{k}"),
        _ => format!("layer-{i}"),
    }
}

/// The diff_ids a config states, by layer position: ModelPack's `modelfs.diffIds` (or the
/// older `diff_ids`), Docker's and images' `rootfs.diff_ids`, a Kitfile's per-entry `diffId`
/// (in layer order: model, parts, code, datasets, docs, prompts). Entries that are not digests
/// end the list where they stand.
pub fn stated_diff_ids(format: Format, config: &Value) -> Vec<Digest> {
    let list = match format {
        Format::ModelPack { .. } => config
            .get("modelfs")
            .and_then(|m| m.get("diffIds").or_else(|| m.get("diff_ids"))),
        Format::ModelKit => {
            return kitfile_entries(config)
                .into_iter()
                .map_while(|e| {
                    e.get("diffId")?
                        .as_str()
                        .and_then(|s| Digest::parse(s).ok())
                })
                .collect()
        }
        Format::Image | Format::DockerModel { .. } => {
            config.get("rootfs").and_then(|r| r.get("diff_ids"))
        }
    };
    list.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map_while(|v| v.as_str().and_then(|s| Digest::parse(s).ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// A Kitfile's entries in the order kit packs them as layers: `model`, `model.parts`, `code`,
/// `datasets`, `docs`, `prompts`.
fn kitfile_entries(kitfile: &Value) -> Vec<&Value> {
    let mut v = Vec::new();
    if let Some(m) = kitfile.get("model") {
        if m.get("path").is_some() {
            v.push(m);
        }
        v.extend(
            m.get("parts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten(),
        );
    }
    for k in ["code", "datasets", "docs", "prompts"] {
        v.extend(
            kitfile
                .get(k)
                .and_then(Value::as_array)
                .into_iter()
                .flatten(),
        );
    }
    v
}

/// The Kitfile path (and the entry's `type`) of each layer of a ModelKit: layers are matched
/// to the Kitfile's entries by order within each kind, as kit unpacks them (the first `model`
/// layer is `model.path`, the next ones `model.parts`, then `code`, `datasets`, `docs`,
/// `prompts` in turn).
fn kitfile_paths(kitfile: &Value, layers: &[Descriptor]) -> Vec<Option<(String, String)>> {
    kitfile_slots(kitfile, layers)
        .into_iter()
        .map(|slot| {
            let (list, n) = slot?;
            let e = match list.as_str() {
                "model" => kitfile.get("model"),
                "parts" => kitfile.get("model")?.get("parts")?.get(n),
                l => kitfile.get(l)?.get(n),
            }?;
            let p = e.get("path")?.as_str()?.to_string();
            let t = e.get("type").and_then(Value::as_str).unwrap_or("");
            Some((p, t.to_string()))
        })
        .collect()
}

/// Where each layer of a ModelKit is in its Kitfile: the list (`model` for `model` itself,
/// `parts` for `model.parts`, `code`, `datasets`, `docs`, `prompts`) and the entry's index
/// in it, matched as [`kitfile_paths`] matches them; `None` for a layer with no entry (and for
/// every layer of a config that is no Kitfile).
pub fn kitfile_slots(kitfile: &Value, layers: &[Descriptor]) -> Vec<Option<(String, usize)>> {
    let len = |k: &str| -> usize {
        let v = match k {
            "model" => return usize::from(kitfile.get("model").is_some()),
            "parts" => kitfile.get("model").and_then(|m| m.get("parts")),
            k => kitfile.get(k),
        };
        v.and_then(Value::as_array).map_or(0, Vec::len)
    };
    let mut seen: Vec<(&str, usize)> = Vec::new();
    layers
        .iter()
        .map(|d| {
            let base = d
                .media_type
                .strip_prefix("application/vnd.kitops.modelkit.")
                .and_then(|r| r.split_once(".v1."))
                .map(|(b, _)| b)?;
            let list = match base {
                "model" => "model",
                "modelpart" => "parts",
                "code" => "code",
                "dataset" => "datasets",
                "docs" => "docs",
                "prompt" => "prompts",
                _ => return None,
            };
            let n = match seen.iter_mut().find(|(l, _)| *l == list) {
                Some((_, n)) => {
                    *n += 1;
                    *n - 1
                }
                None => {
                    seen.push((list, 1));
                    0
                }
            };
            (n < len(list)).then(|| (list.to_string(), n))
        })
        .collect()
}

/// A manifest read as a model artifact: its format, its layers' parts, what its config says.
#[derive(Clone, Debug)]
pub struct Read {
    /// What the manifest is.
    pub format: Format,
    /// One per layer, in order.
    pub parts: Vec<Part>,
    /// What the config says about the model.
    pub about: About,
}

/// Reads `manifest` (with its `config`) as an artifact; an image reads as [`Format::Image`]
/// with parts of kind [`Kind::Other`].
pub fn read(
    manifest: &crate::image::Manifest,
    config: &crate::image::Config,
) -> Result<Read, crate::Error> {
    let format = detect(manifest.artifact_type(), &manifest.config()?.media_type);
    let value = Value::Object(config.doc().value().clone());
    Ok(Read {
        format,
        parts: parts(format, &manifest.layers()?, &value),
        about: about(format, &value),
    })
}

/// What a model artifact's config says about the model, for `lamina layers`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct About {
    /// The model's name.
    pub name: Option<String>,
    /// Its family (`llama`, `qwen2`).
    pub family: Option<String>,
    /// The weights' format (`safetensors`, `gguf`).
    pub format: Option<String>,
    /// Parameter count (`8b`, `8.03B`).
    pub param_size: Option<String>,
    /// Precision (`bfloat16`).
    pub precision: Option<String>,
    /// Architecture (`transformer`, `llama`).
    pub architecture: Option<String>,
    /// Quantization (`Q4_K_M`, `gptq`).
    pub quantization: Option<String>,
}

/// What the config of a `format` artifact says about its model.
pub fn about(format: Format, config: &Value) -> About {
    let s = |v: Option<&Value>| -> Option<String> {
        v.and_then(|v| match v {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
    };
    let at = |path: &[&str]| -> Option<&Value> {
        let mut v = config;
        for p in path {
            v = v.get(p)?;
        }
        Some(v)
    };
    match format {
        Format::ModelPack { .. } => About {
            name: s(at(&["descriptor", "name"])),
            family: s(at(&["descriptor", "family"])),
            format: s(at(&["config", "format"])),
            param_size: s(at(&["config", "paramSize"])),
            precision: s(at(&["config", "precision"])),
            architecture: s(at(&["config", "architecture"])),
            quantization: s(at(&["config", "quantization"])),
        },
        // kit has no fields for these: lamina writes them in model.parameters
        Format::ModelKit => About {
            name: s(at(&["package", "name"])).or_else(|| s(at(&["model", "name"]))),
            family: s(at(&["model", "parameters", "family"])),
            format: s(at(&["model", "format"])),
            param_size: s(at(&["model", "parameters", "paramSize"])),
            precision: s(at(&["model", "parameters", "precision"])),
            architecture: s(at(&["model", "parameters", "architecture"]))
                .or_else(|| s(at(&["model", "framework"]))),
            quantization: s(at(&["model", "parameters", "quantization"])),
        },
        Format::DockerModel { .. } => About {
            name: None,
            family: None,
            format: s(at(&["config", "format"])),
            param_size: s(at(&["config", "parameters"])),
            precision: None,
            architecture: s(at(&["config", "architecture"])),
            quantization: s(at(&["config", "quantization"])),
        },
        Format::Image => About::default(),
    }
}

/// A layer `lamina zstd` recompresses: where it is, how it is compressed now, and its
/// uncompressed digest (which stays: the config is kept whole).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recompress {
    /// Its index in the manifest.
    pub index: usize,
    /// How it is compressed now.
    pub from: Compression,
    /// Its uncompressed digest.
    pub diff_id: Digest,
}

/// The layers of an artifact `lamina zstd` recompresses: a ModelPack's tar layers but its
/// weights (weights do not compress, and stay as they are, raw or tar); raw layers are files
/// and stay too. A ModelKit (kit reads only `tar` and `tar+gzip`) and a Docker model (raw files
/// and tars model-runner reads uncompressed) are refused.
pub fn recompressible(read: &Read) -> Result<Vec<Recompress>, crate::Error> {
    match read.format {
        Format::ModelPack { .. } => {}
        Format::ModelKit => {
            return Err(crate::Error::Usage {
                reason: "a ModelKit's layers stay tar or tar+gzip: kit (1.7) reads no zstd \
                         layer"
                    .into(),
            })
        }
        Format::DockerModel { .. } => {
            return Err(crate::Error::Usage {
                reason: "a Docker model's layers are files model-runner reads as they are: \
                         there is no zstd kind of them"
                    .into(),
            })
        }
        Format::Image => return Err(crate::Error::internal("an image is not an artifact")),
    }
    let mut out = Vec::new();
    for p in &read.parts {
        let Some(Packing::Tar(from)) = p.packing else {
            continue;
        };
        if p.kind == Kind::Weight {
            continue;
        }
        let diff_id = p
            .diff_id
            .clone()
            .ok_or_else(|| crate::Error::InvalidDocument {
                what: format!("layer {}", p.index),
                reason: "the config states no diff_id for it".into(),
            })?;
        out.push(Recompress {
            index: p.index,
            from,
            diff_id,
        });
    }
    Ok(out)
}

/// An artifact layer's media type for the same kind of file in a tar compressed with `c`
/// (`...v1.tar+gzip` to `...v1.tar+zstd`); the naming (`cncf`, `cnai`) stays.
pub fn with_compression(media_type: &str, c: Compression) -> String {
    let stem = media_type
        .strip_suffix("+gzip")
        .or_else(|| media_type.strip_suffix("+zstd"))
        .unwrap_or(media_type);
    match c {
        Compression::None => stem.to_string(),
        c => format!("{stem}+{}", c.name()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn layer(media_type: &str, ann: &[(&str, &str)]) -> Descriptor {
        let mut d = Descriptor::new(media_type, Digest::of(media_type.as_bytes()), 1);
        d.annotations = ann
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        d
    }

    #[test]
    fn zstd_takes_a_modelpacks_tars_but_weights_and_refuses_kit_and_docker() {
        let mt = |k: &str| format!("application/vnd.cncf.model.{k}");
        let layers = [
            layer(&mt("weight.v1.raw"), &[(ANN_FILEPATH, "model.gguf")]),
            layer(&mt("weight.v1.tar"), &[(ANN_FILEPATH, "shard.safetensors")]),
            layer(
                &mt("weight.config.v1.tar"),
                &[(ANN_FILEPATH, "config.json")],
            ),
            layer(&mt("doc.v1.tar+gzip"), &[(ANN_FILEPATH, "README.md")]),
            layer(&mt("code.v1.raw"), &[(ANN_FILEPATH, "serve.py")]),
        ];
        let ids: Vec<String> = (0..5).map(|i| Digest::of(&[i]).to_string()).collect();
        let config = serde_json::json!({"modelfs": {"type": "layers", "diffIds": ids}});
        let format = Format::ModelPack { legacy: false };
        let read = Read {
            format,
            parts: parts(format, &layers, &config),
            about: About::default(),
        };
        let r = recompressible(&read).unwrap();
        assert_eq!(
            r,
            [
                Recompress {
                    index: 2,
                    from: Compression::None,
                    diff_id: Digest::of(&[2]),
                },
                Recompress {
                    index: 3,
                    from: Compression::Gzip,
                    diff_id: Digest::of(&[3]),
                },
            ]
        );
        assert_eq!(
            with_compression(&mt("doc.v1.tar+gzip"), Compression::Zstd),
            mt("doc.v1.tar+zstd")
        );
        assert_eq!(
            with_compression("application/vnd.cnai.model.doc.v1.tar", Compression::Zstd),
            "application/vnd.cnai.model.doc.v1.tar+zstd"
        );
        assert_eq!(
            with_compression(&mt("doc.v1.tar+gzip"), Compression::None),
            mt("doc.v1.tar")
        );
        for format in [Format::ModelKit, Format::DockerModel { version: 2 }] {
            let read = Read {
                format,
                parts: Vec::new(),
                about: About::default(),
            };
            assert!(matches!(
                recompressible(&read),
                Err(crate::Error::Usage { .. })
            ));
        }
    }

    #[test]
    fn formats_are_told_by_artifact_type_or_config() {
        assert_eq!(
            detect(
                Some(MODELPACK_MANIFEST),
                "application/vnd.oci.empty.v1+json"
            ),
            Format::ModelPack { legacy: false }
        );
        assert_eq!(
            detect(None, MODELPACK_CONFIG),
            Format::ModelPack { legacy: false }
        );
        assert_eq!(
            detect(None, MODELPACK_CONFIG_LEGACY),
            Format::ModelPack { legacy: true }
        );
        // kit 1.7: no artifactType, only the config says it
        assert_eq!(detect(None, MODELKIT_CONFIG), Format::ModelKit);
        assert_eq!(
            detect(None, DOCKER_MODEL_CONFIG_V2),
            Format::DockerModel { version: 2 }
        );
        assert_eq!(
            detect(None, "application/vnd.oci.image.config.v1+json"),
            Format::Image
        );
    }

    #[test]
    fn layer_types_of_every_format() {
        use Compression::*;
        for (mt, want) in [
            (
                "application/vnd.cncf.model.weight.v1.raw",
                (Kind::Weight, Packing::Raw),
            ),
            (
                "application/vnd.cncf.model.weight.config.v1.tar+zstd",
                (Kind::Config, Packing::Tar(Zstd)),
            ),
            (
                "application/vnd.cncf.model.doc.v1.tar+gzip",
                (Kind::Doc, Packing::Tar(Gzip)),
            ),
            (
                "application/vnd.cncf.model.code.v1.tar",
                (Kind::Code, Packing::Tar(None)),
            ),
            (
                "application/vnd.cncf.model.dataset.v1.raw",
                (Kind::Dataset, Packing::Raw),
            ),
            (
                "application/vnd.cnai.model.weight.v1.tar",
                (Kind::Weight, Packing::Tar(None)),
            ),
            (
                "application/vnd.cnai.model.layer.v1.tar+gzip",
                (Kind::Other, Packing::Tar(Gzip)),
            ),
            (
                "application/vnd.cncf.model.weight.v1.gguf",
                (Kind::Weight, Packing::Raw),
            ),
            (
                "application/vnd.kitops.modelkit.model.v1.tar",
                (Kind::Weight, Packing::Tar(None)),
            ),
            (
                "application/vnd.kitops.modelkit.docs.v1.tar+gzip",
                (Kind::Doc, Packing::Tar(Gzip)),
            ),
            (
                "application/vnd.kitops.modelkit.dataset.v1.raw",
                (Kind::Dataset, Packing::Raw),
            ),
            (
                "application/vnd.docker.ai.gguf.v3",
                (Kind::Weight, Packing::Raw),
            ),
            (
                "application/vnd.docker.ai.license",
                (Kind::Doc, Packing::Raw),
            ),
            (
                "application/vnd.docker.ai.dir.tar",
                (Kind::Other, Packing::Tar(None)),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                (Kind::Other, Packing::Tar(Gzip)),
            ),
        ] {
            assert_eq!(layer_type(mt), Some(want), "{mt}");
        }
        for mt in [
            "application/vnd.cncf.model.weight.v1.raw+gzip",
            "application/vnd.cncf.model.secret.v1.tar",
            "application/vnd.kitops.modelkit.model.v2.tar",
            "application/octet-stream",
            "",
        ] {
            assert_eq!(layer_type(mt), Option::None, "{mt}");
        }
    }

    #[test]
    fn hostile_paths_are_refused() {
        assert_eq!(safe_path("a/b.safetensors").unwrap(), "a/b.safetensors");
        assert_eq!(safe_path("./a//b/./c").unwrap(), "a/b/c");
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/..",
            "a\0b",
            "a\\b",
            "C:x",
            "c:/windows",
            ".",
            "./",
            "a\nb",
        ] {
            assert!(safe_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn modelpack_parts_carry_kind_path_and_diff_id() {
        let w = layer(
            "application/vnd.cncf.model.weight.v1.raw",
            &[(ANN_FILEPATH, "unet/model.safetensors")],
        );
        let c = layer(
            "application/vnd.cnai.model.weight.config.v1.raw",
            &[(ANN_FILEPATH_LEGACY, "unet/config.json")],
        );
        let evil = layer(
            "application/vnd.cncf.model.doc.v1.raw",
            &[(ANN_FILEPATH, "../../etc/motd")],
        );
        let dup = layer(
            "application/vnd.cncf.model.weight.v1.raw",
            &[(ANN_FILEPATH, "./unet/model.safetensors")],
        );
        let none = layer("application/vnd.cncf.model.code.v1.raw", &[]);
        let t = layer("application/vnd.cncf.model.doc.v1.tar", &[]);
        let config = serde_json::json!({"modelfs": {"type": "layers", "diffIds": [
            w.digest.to_string(), c.digest.to_string()]}});
        let p = parts(
            Format::ModelPack { legacy: false },
            &[w.clone(), c, evil, dup, none, t],
            &config,
        );
        assert_eq!(p[0].path.as_deref(), Some("unet/model.safetensors"));
        assert_eq!(p[0].kind, Kind::Weight);
        assert_eq!(p[0].diff_id.as_ref(), Some(&w.digest));
        assert_eq!(p[1].kind, Kind::Config);
        assert_eq!(p[1].path.as_deref(), Some("unet/config.json"));
        assert!(p[2].path.is_none());
        assert!(
            p[2].problem.as_deref().unwrap().contains("climbs"),
            "{:?}",
            p[2]
        );
        assert!(p[3].path.is_none(), "the same file twice");
        assert!(p[3].problem.as_deref().unwrap().contains("already"));
        assert!(p[4].problem.as_deref().unwrap().contains("names no file"));
        assert_eq!(p[5].problem, None, "a tar names its own files");
        assert_eq!(p[5].diff_id, None);
    }

    #[test]
    fn modelkit_layers_take_their_paths_from_the_kitfile_by_order() {
        let kitfile = serde_json::json!({
            "manifestVersion": "1.0.0",
            "package": {"name": "tiny"},
            "model": {"path": "models/tiny.gguf", "format": "gguf",
                      "parts": [{"path": "models/tokenizer.json"}]},
            "code": [{"path": "src"}],
            "docs": [{"path": "README.md"}, {"path": "../LICENSE"}],
        });
        let ls = [
            layer("application/vnd.kitops.modelkit.model.v1.tar", &[]),
            layer("application/vnd.kitops.modelkit.modelpart.v1.tar", &[]),
            layer("application/vnd.kitops.modelkit.code.v1.tar+gzip", &[]),
            layer("application/vnd.kitops.modelkit.docs.v1.tar", &[]),
            layer("application/vnd.kitops.modelkit.docs.v1.tar", &[]),
        ];
        let p = parts(Format::ModelKit, &ls, &kitfile);
        let paths: Vec<_> = p.iter().map(|p| p.path.as_deref()).collect();
        assert_eq!(
            paths,
            [
                Some("models/tiny.gguf"),
                Some("models/tokenizer.json"),
                Some("src"),
                Some("README.md"),
                None
            ]
        );
        assert!(p[4].problem.as_deref().unwrap().contains("climbs"));
        assert_eq!(
            about(Format::ModelKit, &kitfile).name.as_deref(),
            Some("tiny")
        );
        assert_eq!(
            about(Format::ModelKit, &kitfile).format.as_deref(),
            Some("gguf")
        );
    }

    #[test]
    fn docker_v1_names_files_by_position() {
        let ls = [
            layer("application/vnd.docker.ai.gguf.v3", &[]),
            layer("application/vnd.docker.ai.license", &[]),
        ];
        let p = parts(
            Format::DockerModel { version: 1 },
            &ls,
            &serde_json::json!({}),
        );
        assert_eq!(p[0].path.as_deref(), Some("model.gguf"));
        assert_eq!(p[1].path.as_deref(), Some("LICENSE"));
        let mut shard = layer("application/vnd.docker.ai.gguf.v3", &[]);
        shard.digest = Digest::of(b"second shard");
        let ls = [ls[0].clone(), shard, ls[1].clone()];
        let p = parts(
            Format::DockerModel { version: 1 },
            &ls,
            &serde_json::json!({}),
        );
        let names: Vec<_> = p.iter().map(|p| p.path.as_deref().unwrap()).collect();
        assert_eq!(
            names,
            [
                "model-00001-of-00002.gguf",
                "model-00002-of-00002.gguf",
                "LICENSE"
            ]
        );
        let c = serde_json::json!({"config": {"format": "gguf", "parameters": "8.03B",
            "quantization": "Q4_K_M", "architecture": "llama"}});
        let a = about(Format::DockerModel { version: 1 }, &c);
        assert_eq!(
            (
                a.format.as_deref(),
                a.param_size.as_deref(),
                a.quantization.as_deref()
            ),
            (Some("gguf"), Some("8.03B"), Some("Q4_K_M"))
        );
    }

    #[test]
    fn diff_ids_from_each_config_shape() {
        let d = Digest::of(b"x");
        let s = d.to_string();
        assert_eq!(
            stated_diff_ids(
                Format::ModelPack { legacy: true },
                &serde_json::json!({"modelfs": {"diff_ids": [s]}})
            ),
            vec![d.clone()]
        );
        assert_eq!(
            stated_diff_ids(
                Format::DockerModel { version: 2 },
                &serde_json::json!({"rootfs": {"type": "rootfs", "diff_ids": [s, "junk", s]}})
            ),
            vec![d.clone()],
            "a list stops at what is not a digest"
        );
        assert_eq!(
            stated_diff_ids(
                Format::ModelKit,
                &serde_json::json!({"model": {"path": "m", "diffId": s}, "docs": [{"path": "r", "diffId": s}]})
            ),
            vec![d.clone(), d]
        );
    }
}
