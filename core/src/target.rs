//! The model artifact formats lamina writes, and how one is put together from its files.
//!
//! [`assemble`] takes the files already stored as blobs ([`FileLayer`]s: a path, a kind, raw or
//! tar, the digest, the diff_id) and the model's facts, and gives the config and the manifest
//! of a [`Target`] format. `lamina pack` uploads the files and then assembles; `lamina
//! convert` re-types the source's blobs (or re-packs the few that must change) and assembles.
//! One function per format, so the formats agree on everything but their own names:
//!
//! - **ModelPack**: raw layers by default (`--tar` for tars), `application/vnd.cncf.model.*`
//!   types, the config of [`pack::modelpack_config`].
//! - **ModelKit**, as kit 1.7 and later read it: the Kitfile as the config
//!   (`application/vnd.kitops.modelkit.config.v1+json`), one uncompressed tar layer per file
//!   holding it at its path with the directories above it, in kit's layer order (the first
//!   weight as `model`, the other weights and the weight configs as `model.parts`, then
//!   `code`, `datasets`, `docs`), each Kitfile entry with the `digest` and `diffId` of its
//!   layer, as kit records them. A weight config's part says `"type": "config"` so that its
//!   kind survives a round trip; the facts lamina read from the headers go in
//!   `model.parameters`.
//! - **Docker model** (config v0.2, what `docker model package --safetensors-dir` writes and
//!   model-runner unpacks a layer per file): a raw layer per file typed by its name
//!   (`gguf.v3`, `safetensors`, `dduf`, `mmproj`, `license`, `chat.template.jinja`, else
//!   `model.file`), `org.cncf.model.filepath` and the file metadata on each, `rootfs.diff_ids`
//!   equal to the layers' digests (model-runner stores blobs under them). A tar layer (a
//!   folder) is a `dir.tar`, which model-runner still reads.

use serde_json::{json, Map, Value};

use crate::artifact::{self, Kind, Packing, ANN_FILEPATH, ANN_TITLE};
use crate::compress::Compression;
use crate::image::Descriptor;
use crate::pack::{self, FileLayer, Model};
use crate::{media, Digest, Error};

/// A ModelKit's layer media types start so.
const KIT: &str = "application/vnd.kitops.modelkit";
/// A Docker model's layer media types start so.
const DOCKER: &str = "application/vnd.docker.ai";

/// A format lamina writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// CNCF ModelPack.
    ModelPack,
    /// KitOps ModelKit.
    ModelKit,
    /// Docker model artifact, config v0.2.
    Docker,
}

impl Target {
    /// Every target, for messages.
    pub const ALL: [Target; 3] = [Target::ModelPack, Target::ModelKit, Target::Docker];

    /// `modelpack`, `modelkit`, `docker`.
    pub fn name(&self) -> &'static str {
        match self {
            Target::ModelPack => "modelpack",
            Target::ModelKit => "modelkit",
            Target::Docker => "docker",
        }
    }

    /// The format an artifact of `format` is written in, to add files to it: `None` for an
    /// image, a cnai-named ModelPack and a positional Docker v0.1 model (convert those first).
    pub fn of(format: artifact::Format) -> Option<Target> {
        use artifact::Format as F;
        match format {
            F::ModelPack { legacy: false } => Some(Target::ModelPack),
            F::ModelKit => Some(Target::ModelKit),
            F::DockerModel { version: 2 } => Some(Target::Docker),
            _ => None,
        }
    }

    /// The target a name gives.
    pub fn parse(s: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == s)
    }

    /// How a new file goes into this format: ModelPack raw (a tar with `tar`), a ModelKit an
    /// uncompressed tar, a Docker model raw.
    pub fn packing(&self, tar: bool) -> Packing {
        match self {
            Target::ModelPack if !tar => Packing::Raw,
            Target::ModelPack | Target::ModelKit => Packing::Tar(Compression::None),
            Target::Docker => Packing::Raw,
        }
    }

    /// Whether a blob packed so can be a layer of this format as it is: ModelPack takes every
    /// packing; kit reads tars, gzipped or not (kit 1.7 knows neither raw nor zstd layers);
    /// model-runner reads raw files and uncompressed tars (`dir.tar`) only, since it stores a
    /// blob under its diff_id.
    pub fn takes(&self, packing: Packing) -> bool {
        match self {
            Target::ModelPack => true,
            Target::ModelKit => matches!(
                packing,
                Packing::Tar(Compression::None) | Packing::Tar(Compression::Gzip)
            ),
            Target::Docker => matches!(packing, Packing::Raw | Packing::Tar(Compression::None)),
        }
    }

    /// The config media type this format writes.
    pub fn config_media_type(&self) -> &'static str {
        match self {
            Target::ModelPack => artifact::MODELPACK_CONFIG,
            Target::ModelKit => artifact::MODELKIT_CONFIG,
            Target::Docker => artifact::DOCKER_MODEL_CONFIG_V2,
        }
    }
}

/// An artifact put together: its config, its layers in the order they go, its manifest.
#[derive(Clone, Debug)]
pub struct Assembled {
    /// The config's bytes.
    pub config: Vec<u8>,
    /// The layers, in manifest order (a ModelKit's in kit's order, not the input's).
    pub layers: Vec<Descriptor>,
    /// The manifest's bytes.
    pub manifest: Vec<u8>,
}

/// The `target` artifact over `files` (stored already) with the facts of `model`; `mtime`
/// stamps the file metadata and Docker's `created`. A file packed in a way the format does not
/// take ([`Target::takes`]) is a bug of the caller's.
pub fn assemble(
    target: Target,
    model: &Model,
    files: &[FileLayer],
    mtime: u64,
) -> Result<Assembled, Error> {
    if let Some(f) = files.iter().find(|f| !target.takes(f.packing)) {
        return Err(Error::internal(format!(
            "{} is a {} layer, which a {} cannot hold",
            f.path,
            f.packing.name(),
            target.name()
        )));
    }
    let (config, layers) = match target {
        Target::ModelPack => {
            let layers: Vec<Descriptor> = files.iter().map(|f| f.descriptor(mtime)).collect();
            let ids: Vec<Digest> = files.iter().map(|f| f.diff_id.clone()).collect();
            (pack::modelpack_config(model, &ids), layers)
        }
        Target::ModelKit => modelkit(model, files),
        Target::Docker => docker(model, files, mtime),
    };
    let manifest = manifest(target, &config, &layers);
    Ok(Assembled {
        config,
        layers,
        manifest,
    })
}

/// The manifest of `target` over `config` (its bytes) and `layers`: OCI, with ModelPack's and
/// kit's `artifactType` (model-runner sets none on its own format).
pub fn manifest(target: Target, config: &[u8], layers: &[Descriptor]) -> Vec<u8> {
    let mut v = Map::new();
    v.insert("schemaVersion".into(), json!(2));
    v.insert("mediaType".into(), json!(media::OCI_MANIFEST));
    match target {
        Target::ModelPack => {
            v.insert("artifactType".into(), json!(artifact::MODELPACK_MANIFEST));
        }
        Target::ModelKit => {
            v.insert("artifactType".into(), json!(artifact::MODELKIT_MANIFEST));
        }
        Target::Docker => {}
    }
    v.insert(
        "config".into(),
        json!({
            "mediaType": target.config_media_type(),
            "digest": Digest::of(config).to_string(),
            "size": config.len(),
        }),
    );
    v.insert(
        "layers".into(),
        layers.iter().map(Descriptor::to_value).collect(),
    );
    serde_json::to_vec(&Value::Object(v)).unwrap_or_default()
}

/// The Kitfile list a new file of `kind` goes in (`model` when `first_weight` and it is a
/// weight).
pub fn kit_slot(kind: Kind, first_weight: bool) -> String {
    match kind {
        Kind::Weight if first_weight => "model",
        Kind::Weight | Kind::Config | Kind::Other => "parts",
        Kind::Code | Kind::Prompt => "code",
        Kind::Dataset => "datasets",
        Kind::Doc => "docs",
    }
    .into()
}

/// Where a Kitfile list's layers go in kit's layer order (model, parts, code, datasets, docs,
/// prompts).
pub fn kit_rank(list: &str) -> usize {
    ["model", "parts", "code", "datasets", "docs", "prompts"]
        .iter()
        .position(|l| *l == list)
        .unwrap_or(6)
}

/// A ModelKit layer's descriptor for file `f` in Kitfile list `list`.
pub fn kit_descriptor(f: &FileLayer, list: &str) -> Descriptor {
    let base = match list {
        "model" => "model",
        "parts" => "modelpart",
        "datasets" => "dataset",
        "docs" => "docs",
        "prompts" => "prompt",
        _ => "code",
    };
    let mut d = Descriptor::new(
        format!("{KIT}.{base}.v1.{}", f.packing.name()),
        f.digest.clone(),
        f.size,
    );
    d.annotations = vec![
        (ANN_FILEPATH.into(), f.path.clone()),
        (ANN_TITLE.into(), f.path.clone()),
    ];
    d
}

/// Writes the facts `model` knows of its weights (format, parameters, precision,
/// architecture, quantization, family) into a `target` config, where each format keeps them;
/// the config's name and the facts `model` does not know stay.
pub fn set_facts(target: Target, config: &mut Map<String, Value>, model: &Model) {
    let object = |v: &mut Value| {
        if !v.is_object() {
            *v = Value::Object(Map::new());
        }
    };
    let facts = [
        ("architecture", &model.architecture),
        ("format", &model.format),
        ("paramSize", &model.param_size),
        ("precision", &model.precision),
        ("quantization", &model.quantization),
    ];
    match target {
        Target::ModelPack => {
            let d = config.entry("descriptor").or_insert(Value::Null);
            object(d);
            if let Some(d) = d.as_object_mut() {
                pack::put_some(d, "family", &model.family);
            }
            let c = config.entry("config").or_insert(Value::Null);
            object(c);
            if let Some(c) = c.as_object_mut() {
                for (k, v) in facts {
                    pack::put_some(c, k, v);
                }
            }
        }
        Target::ModelKit => {
            let m = config.entry("model").or_insert(Value::Null);
            object(m);
            if let Some(m) = m.as_object_mut() {
                pack::put_some(m, "format", &model.format);
                let p = m.entry("parameters").or_insert(Value::Null);
                object(p);
                if let Some(p) = p.as_object_mut() {
                    for (k, v) in facts.iter().filter(|(k, _)| *k != "format") {
                        pack::put_some(p, k, v);
                    }
                    pack::put_some(p, "family", &model.family);
                }
            }
        }
        Target::Docker => {
            let c = config.entry("config").or_insert(Value::Null);
            object(c);
            if let Some(c) = c.as_object_mut() {
                pack::put_some(c, "format", &model.format);
                pack::put_some(c, "quantization", &model.quantization);
                pack::put_some(c, "parameters", &model.param_size);
                pack::put_some(c, "architecture", &model.architecture);
            }
        }
    }
}

/// A Docker model config's `size`: the weights' bytes among `layers` (model-runner's sum of
/// its GGUF, safetensors and DDUF layers).
pub fn docker_weights_size(config: &mut Map<String, Value>, layers: &[Descriptor]) {
    let weights: u64 = layers
        .iter()
        .filter(|l| {
            [".gguf.v3", ".safetensors", ".dduf"]
                .iter()
                .any(|t| l.media_type.ends_with(t))
        })
        .map(|l| l.size)
        .sum();
    if let Some(c) = config.get_mut("config").and_then(Value::as_object_mut) {
        if weights > 0 {
            c.insert("size".into(), json!(decimal_size(weights)));
        } else {
            c.remove("size");
        }
    }
}

/// Removes entry `n` of Kitfile list `list` (of `model`: its `path`, `digest` and `diffId`;
/// its name, parameters and parts stay).
pub fn kit_remove_entry(kitfile: &mut Map<String, Value>, list: &str, n: usize) {
    let remove = |a: Option<&mut Value>| {
        if let Some(a) = a.and_then(Value::as_array_mut) {
            if n < a.len() {
                a.remove(n);
            }
        }
    };
    match list {
        "model" => {
            if let Some(m) = kitfile.get_mut("model").and_then(Value::as_object_mut) {
                for k in ["path", "digest", "diffId"] {
                    m.remove(k);
                }
            }
        }
        "parts" => remove(kitfile.get_mut("model").and_then(|m| m.get_mut("parts"))),
        l => remove(kitfile.get_mut(l)),
    }
}

/// Sets the `digest` and `diffId` of entry `n` of Kitfile list `list` to `f`'s.
pub fn kit_entry_digests(kitfile: &mut Map<String, Value>, list: &str, n: usize, f: &FileLayer) {
    let entry = match list {
        "model" => kitfile.get_mut("model"),
        "parts" => kitfile
            .get_mut("model")
            .and_then(|m| m.get_mut("parts"))
            .and_then(|p| p.get_mut(n)),
        l => kitfile.get_mut(l).and_then(|p| p.get_mut(n)),
    };
    if let Some(e) = entry.and_then(Value::as_object_mut) {
        set_digests(e, f);
    }
}

/// A Kitfile entry's `digest` and `diffId`: `f`'s, as kit records its layers.
fn set_digests(e: &mut Map<String, Value>, f: &FileLayer) {
    e.insert("digest".into(), json!(f.digest.to_string()));
    e.insert("diffId".into(), json!(f.diff_id.to_string()));
}

/// The Kitfile entry of file `f` (a weight config's says `"type": "config"`).
fn kit_entry(f: &FileLayer) -> Map<String, Value> {
    let mut e = Map::new();
    e.insert("path".into(), json!(f.path));
    if f.kind == Kind::Config {
        e.insert("type".into(), json!("config"));
    }
    set_digests(&mut e, f);
    e
}

/// Adds an entry for new file `f` to the Kitfile (in the list of its kind, `model` itself
/// when there is none and it is a weight); gives the list and the entry's index.
pub fn kit_add_entry(kitfile: &mut Map<String, Value>, f: &FileLayer) -> (String, usize) {
    let has_model = kitfile
        .get("model")
        .is_some_and(|m| m.get("path").is_some());
    let list = kit_slot(f.kind, !has_model);
    let e = kit_entry(f);
    let push = |arr: &mut Value, e: Map<String, Value>| -> usize {
        if !arr.is_array() {
            *arr = Value::Array(Vec::new());
        }
        let a = arr.as_array_mut().map(|a| {
            a.push(Value::Object(e));
            a.len() - 1
        });
        a.unwrap_or(0)
    };
    let n = match list.as_str() {
        "model" => {
            let m = kitfile.entry("model").or_insert_with(|| json!({}));
            if let Some(m) = m.as_object_mut() {
                m.extend(e);
            }
            0
        }
        "parts" => {
            let m = kitfile.entry("model").or_insert_with(|| json!({}));
            match m.as_object_mut() {
                Some(m) => push(m.entry("parts").or_insert(Value::Null), e),
                None => 0,
            }
        }
        l => push(kitfile.entry(l).or_insert(Value::Null), e),
    };
    (list, n)
}

/// A Docker model layer's descriptor for file `f`.
pub fn docker_descriptor(f: &FileLayer, mtime: u64) -> Descriptor {
    let mut d = f.descriptor(mtime);
    d.media_type = docker_layer_type(&f.path, f.packing);
    // model-runner sets no title; the path is in org.cncf.model.filepath
    d.annotations.retain(|(k, _)| k != ANN_TITLE);
    d
}

/// The ModelKit's Kitfile and layers: see the module docs.
fn modelkit(model: &Model, files: &[FileLayer]) -> (Vec<u8>, Vec<Descriptor>) {
    let first_weight = files.iter().position(|f| f.kind == Kind::Weight);
    let mut slotted: Vec<(String, usize)> = files
        .iter()
        .enumerate()
        .map(|(i, f)| (kit_slot(f.kind, Some(i) == first_weight), i))
        .collect();
    // kit's order: the model, its parts, code, datasets, docs; the input's order within each
    slotted.sort_by_key(|(list, i)| (kit_rank(list), *i));
    let mut kit_model = Map::new();
    pack::put_some(&mut kit_model, "name", &model.name);
    let mut lists: [(&str, Vec<Value>); 4] = [
        ("parts", vec![]),
        ("code", vec![]),
        ("datasets", vec![]),
        ("docs", vec![]),
    ];
    let mut layers = Vec::new();
    for (list, i) in &slotted {
        let f = &files[*i];
        if list == "model" {
            kit_model.insert("path".into(), json!(f.path));
            pack::put_some(&mut kit_model, "format", &model.format);
        } else if let Some((_, entries)) = lists.iter_mut().find(|(l, _)| l == list) {
            entries.push(Value::Object(kit_entry(f)));
        }
        layers.push(kit_descriptor(f, list));
    }
    let mut params = Map::new();
    pack::put_some(&mut params, "paramSize", &model.param_size);
    pack::put_some(&mut params, "precision", &model.precision);
    pack::put_some(&mut params, "architecture", &model.architecture);
    pack::put_some(&mut params, "family", &model.family);
    pack::put_some(&mut params, "quantization", &model.quantization);
    if !params.is_empty() {
        kit_model.insert("parameters".into(), Value::Object(params));
    }
    let [(_, parts), code, datasets, docs] = lists;
    if !parts.is_empty() {
        kit_model.insert("parts".into(), Value::Array(parts));
    }
    if let Some((_, i)) = slotted.first().filter(|(l, _)| l == "model") {
        set_digests(&mut kit_model, &files[*i]);
    }
    let mut kitfile = Map::new();
    kitfile.insert("manifestVersion".into(), json!("1.0.0"));
    let mut package = Map::new();
    pack::put_some(&mut package, "name", &model.name);
    kitfile.insert("package".into(), Value::Object(package));
    if kit_model.contains_key("path") || kit_model.contains_key("parts") {
        kitfile.insert("model".into(), Value::Object(kit_model));
    }
    for (k, list) in [code, datasets, docs] {
        if !list.is_empty() {
            kitfile.insert(k.into(), Value::Array(list));
        }
    }
    (
        serde_json::to_vec(&Value::Object(kitfile)).unwrap_or_default(),
        layers,
    )
}

/// The Docker model layer type of a raw file, from its name, as `docker model package` types
/// them.
pub fn docker_layer_type(path: &str, packing: Packing) -> String {
    if packing != Packing::Raw {
        return format!("{DOCKER}.dir.tar");
    }
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    let t = if name.ends_with(".gguf") && name.contains("mmproj") {
        "mmproj"
    } else if name.ends_with(".gguf") {
        "gguf.v3"
    } else if name.ends_with(".safetensors") {
        "safetensors"
    } else if name.ends_with(".dduf") {
        "dduf"
    } else if name.ends_with(".jinja") {
        "chat.template.jinja"
    } else if name.starts_with("license") || name.starts_with("copying") {
        "license"
    } else {
        "model.file"
    };
    format!("{DOCKER}.{t}")
}

/// The Docker model's config (v0.2) and layers: see the module docs.
fn docker(model: &Model, files: &[FileLayer], mtime: u64) -> (Vec<u8>, Vec<Descriptor>) {
    let layers: Vec<Descriptor> = files.iter().map(|f| docker_descriptor(f, mtime)).collect();
    let mut config = Map::new();
    pack::put_some(&mut config, "format", &model.format);
    pack::put_some(&mut config, "quantization", &model.quantization);
    pack::put_some(&mut config, "parameters", &model.param_size);
    pack::put_some(&mut config, "architecture", &model.architecture);
    let weights: u64 = files
        .iter()
        .filter(|f| f.kind == Kind::Weight)
        .map(|f| f.file_size)
        .sum();
    if weights > 0 {
        config.insert("size".into(), json!(decimal_size(weights)));
    }
    let v = json!({
        "config": config,
        "descriptor": {"created": crate::image::rfc3339(mtime)},
        "rootfs": {
            "type": "rootfs",
            "diff_ids": files.iter().map(|f| f.diff_id.to_string()).collect::<Vec<_>>(),
        },
    });
    (serde_json::to_vec(&v).unwrap_or_default(), layers)
}

/// A size as model-runner writes it for safetensors: base 1000, two decimals (`14.48GB`).
fn decimal_size(n: u64) -> String {
    for (scale, unit) in [(1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")] {
        if n as f64 >= scale {
            return format!("{:.2}{unit}", n as f64 / scale);
        }
    }
    format!("{n}B")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::image::{Config, Manifest};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn file(path: &str, kind: Kind, packing: Packing) -> FileLayer {
        let digest = Digest::of(path.as_bytes());
        FileLayer {
            path: path.into(),
            kind,
            guessed: false,
            packing,
            digest: digest.clone(),
            size: 100,
            diff_id: digest,
            file_size: 100,
            executable: false,
            carried: None,
        }
    }

    fn model() -> Model {
        Model {
            name: Some("tiny".into()),
            format: Some("safetensors".into()),
            param_size: Some("1.5K".into()),
            precision: Some("F32".into()),
            family: Some("qwen2".into()),
            ..Model::default()
        }
    }

    /// What lamina reads back from an assembled artifact: (path, kind, packing) per layer in
    /// manifest order, and what it says of the model.
    fn read_back(
        a: &Assembled,
    ) -> (
        Vec<(String, Kind, Packing)>,
        artifact::About,
        artifact::Format,
    ) {
        let m = Manifest::parse(a.manifest.clone(), media::OCI_MANIFEST).unwrap();
        let c = Config::parse(a.config.clone()).unwrap();
        let r = artifact::read(&m, &c).unwrap();
        let mut ids =
            artifact::stated_diff_ids(r.format, &serde_json::from_slice(&a.config).unwrap());
        let layers = m.layers().unwrap();
        assert_eq!(ids.len(), layers.len(), "a diff_id per layer");
        for (l, id) in layers.iter().zip(ids.drain(..)) {
            assert_eq!(
                l.digest, id,
                "raw and plain tar layers: the digest is the diff_id"
            );
        }
        (
            r.parts
                .iter()
                .map(|p| (p.path.clone().unwrap(), p.kind, p.packing.unwrap()))
                .collect(),
            r.about,
            r.format,
        )
    }

    fn folder(packing: Packing) -> Vec<FileLayer> {
        vec![
            file("README.md", Kind::Doc, packing),
            file("config.json", Kind::Config, packing),
            file("model-00001-of-00002.safetensors", Kind::Weight, packing),
            file("model-00002-of-00002.safetensors", Kind::Weight, packing),
            file("serve.py", Kind::Code, packing),
            file("data/train.csv", Kind::Dataset, packing),
        ]
    }

    #[test]
    fn every_target_reads_back_with_the_same_paths_kinds_and_facts() {
        for target in Target::ALL {
            let files = folder(target.packing(false));
            let a = assemble(target, &model(), &files, 0).unwrap();
            let (parts, about, format) = read_back(&a);
            let mut got: Vec<(String, Kind)> =
                parts.iter().map(|(p, k, _)| (p.clone(), *k)).collect();
            got.sort();
            let mut want: Vec<(String, Kind)> =
                files.iter().map(|f| (f.path.clone(), f.kind)).collect();
            want.sort();
            // Docker has no kinds but weights and licenses: the rest read back by their names
            if target == Target::Docker {
                for w in &mut want {
                    if w.1 != Kind::Weight {
                        w.1 = pack::classify(w.0.rsplit('/').next().unwrap(), 100).0;
                    }
                }
            }
            assert_eq!(got, want, "{target:?}");
            assert_eq!(about.format.as_deref(), Some("safetensors"), "{target:?}");
            if target != Target::Docker {
                assert_eq!(about.name.as_deref(), Some("tiny"), "{target:?}");
            }
            assert_eq!(about.param_size.as_deref(), Some("1.5K"), "{target:?}");
            let want_format = match target {
                Target::ModelPack => artifact::Format::ModelPack { legacy: false },
                Target::ModelKit => artifact::Format::ModelKit,
                Target::Docker => artifact::Format::DockerModel { version: 2 },
            };
            assert_eq!(format, want_format);
        }
    }

    #[test]
    fn a_modelkit_goes_in_kits_layer_order_with_digests_in_the_kitfile() {
        let files = folder(Packing::Tar(Compression::None));
        let a = assemble(Target::ModelKit, &model(), &files, 0).unwrap();
        let types: Vec<&str> = a.layers.iter().map(|l| l.media_type.as_str()).collect();
        assert_eq!(
            types,
            [
                "application/vnd.kitops.modelkit.model.v1.tar",
                "application/vnd.kitops.modelkit.modelpart.v1.tar",
                "application/vnd.kitops.modelkit.modelpart.v1.tar",
                "application/vnd.kitops.modelkit.code.v1.tar",
                "application/vnd.kitops.modelkit.dataset.v1.tar",
                "application/vnd.kitops.modelkit.docs.v1.tar",
            ]
        );
        let k: Value = serde_json::from_slice(&a.config).unwrap();
        assert_eq!(k["manifestVersion"], "1.0.0");
        assert_eq!(k["package"]["name"], "tiny");
        assert_eq!(k["model"]["path"], "model-00001-of-00002.safetensors");
        assert_eq!(k["model"]["parameters"]["paramSize"], "1.5K");
        assert_eq!(k["model"]["parts"][0]["path"], "config.json");
        assert_eq!(k["model"]["parts"][0]["type"], "config");
        assert_eq!(
            k["model"]["digest"],
            Digest::of(b"model-00001-of-00002.safetensors").to_string()
        );
        assert_eq!(k["docs"][0]["path"], "README.md");
        let m: Value = serde_json::from_slice(&a.manifest).unwrap();
        assert_eq!(m["artifactType"], artifact::MODELKIT_MANIFEST);
        assert_eq!(m["config"]["mediaType"], artifact::MODELKIT_CONFIG);
    }

    #[test]
    fn docker_layers_are_typed_by_name_and_diff_ids_are_digests() {
        for (name, want) in [
            ("model.gguf", "application/vnd.docker.ai.gguf.v3"),
            ("mmproj-model-f16.gguf", "application/vnd.docker.ai.mmproj"),
            (
                "unet/model.safetensors",
                "application/vnd.docker.ai.safetensors",
            ),
            ("model.dduf", "application/vnd.docker.ai.dduf"),
            ("LICENSE", "application/vnd.docker.ai.license"),
            (
                "template.jinja",
                "application/vnd.docker.ai.chat.template.jinja",
            ),
            ("tokenizer.json", "application/vnd.docker.ai.model.file"),
        ] {
            assert_eq!(docker_layer_type(name, Packing::Raw), want, "{name}");
        }
        let a = assemble(Target::Docker, &model(), &folder(Packing::Raw), 0).unwrap();
        let c: Value = serde_json::from_slice(&a.config).unwrap();
        assert_eq!(c["rootfs"]["type"], "rootfs");
        assert_eq!(c["config"]["parameters"], "1.5K");
        assert_eq!(c["config"]["size"], "200B");
        assert_eq!(c["descriptor"]["created"], "1970-01-01T00:00:00Z");
        // model-runner takes a config with these for a ModelPack one
        assert!(c.get("modelfs").is_none() && c["config"].get("paramSize").is_none());
        let m: Value = serde_json::from_slice(&a.manifest).unwrap();
        assert!(m.get("artifactType").is_none());
        assert_eq!(decimal_size(14_480_000_000), "14.48GB");
    }

    #[test]
    fn attach_to_a_modelkit_and_a_docker_model_keeps_the_config_and_follows_the_digests() {
        for target in [Target::ModelKit, Target::Docker] {
            let packing = target.packing(false);
            let a = assemble(target, &model(), &folder(packing), 0).unwrap();
            // a field lamina does not write stays
            let mut cfg: Value = serde_json::from_slice(&a.config).unwrap();
            cfg["extra"] = json!({"kept": true});
            let cfg = serde_json::to_vec(&cfg).unwrap();
            let mut man: Value = serde_json::from_slice(&a.manifest).unwrap();
            man["config"]["digest"] = json!(Digest::of(&cfg).to_string());
            man["config"]["size"] = json!(cfg.len());
            let m =
                Manifest::parse(serde_json::to_vec(&man).unwrap(), media::OCI_MANIFEST).unwrap();
            let c = Config::parse(cfg).unwrap();
            let mut readme = file("README.md", Kind::Doc, packing);
            readme.digest = Digest::of(b"new readme");
            readme.diff_id = readme.digest.clone();
            let new = [
                readme.clone(),
                file("tokenizer.json", Kind::Config, packing),
                file("notes/more.md", Kind::Doc, packing),
            ];
            let att = pack::attach(
                &m,
                &c,
                &pack::Changes {
                    add: &new,
                    ..pack::Changes::default()
                },
                0,
            )
            .unwrap();
            assert_eq!(att.replaced, ["README.md"], "{target:?}");
            assert_eq!(att.target, target);
            let back = Assembled {
                config: att.config.clone(),
                layers: vec![],
                manifest: att.manifest.clone(),
            };
            // read_back checks a diff_id per layer, each the layer's digest
            let (parts, about, _) = read_back(&back);
            let paths: Vec<&str> = parts.iter().map(|p| p.0.as_str()).collect();
            assert_eq!(paths.len(), 8, "{target:?}: {paths:?}");
            assert!(paths.contains(&"notes/more.md") && paths.contains(&"tokenizer.json"));
            let readme_at = parts.iter().position(|p| p.0 == "README.md").unwrap();
            let ml: Value = serde_json::from_slice(&att.manifest).unwrap();
            assert_eq!(
                ml["layers"][readme_at]["digest"],
                readme.digest.to_string(),
                "{target:?}: replaced in place"
            );
            if target == Target::ModelKit {
                let tok = parts.iter().find(|p| p.0 == "tokenizer.json").unwrap();
                assert_eq!(tok.1, Kind::Config, "the part's type says config");
            }
            assert_eq!(about.param_size.as_deref(), Some("1.5K"));
            let c2: Value = serde_json::from_slice(&att.config).unwrap();
            assert_eq!(c2["extra"]["kept"], true, "{target:?}");
        }
    }

    /// `lamina remix` onto an artifact: the base's weights and weight configs go (their
    /// diff_ids and Kitfile entries with them), the new model's come in with its facts, the
    /// docs, code and data stay.
    #[test]
    fn weights_swapped_in_every_target_leave_no_stale_entry() {
        for target in Target::ALL {
            let packing = target.packing(false);
            let a = assemble(target, &model(), &folder(packing), 0).unwrap();
            let m = Manifest::parse(a.manifest.clone(), media::OCI_MANIFEST).unwrap();
            let c = Config::parse(a.config.clone()).unwrap();
            let (parts, _, _) = read_back(&a);
            let drop: Vec<usize> = parts
                .iter()
                .enumerate()
                .filter(|(_, p)| matches!(p.1, Kind::Weight | Kind::Config))
                .map(|(i, _)| i)
                .collect();
            assert_eq!(drop.len(), 3, "{target:?}: {parts:?}");
            let new = [
                file("model.safetensors", Kind::Weight, packing),
                file("config.json", Kind::Config, packing),
            ];
            let facts = Model {
                param_size: Some("7B".into()),
                precision: Some("BF16".into()),
                family: Some("mistral".into()),
                ..Model::default()
            };
            let att = pack::attach(
                &m,
                &c,
                &pack::Changes {
                    drop: &drop,
                    add: &new,
                    facts: Some(&facts),
                },
                0,
            )
            .unwrap();
            assert!(att.replaced.is_empty(), "{target:?}: dropped, not replaced");
            let back = Assembled {
                config: att.config.clone(),
                layers: vec![],
                manifest: att.manifest.clone(),
            };
            let (parts, about, _) = read_back(&back);
            let mut paths: Vec<&str> = parts.iter().map(|p| p.0.as_str()).collect();
            paths.sort_unstable();
            assert_eq!(
                paths,
                [
                    "README.md",
                    "config.json",
                    "data/train.csv",
                    "model.safetensors",
                    "serve.py"
                ],
                "{target:?}"
            );
            assert_eq!(about.param_size.as_deref(), Some("7B"), "{target:?}");
            if target != Target::Docker {
                assert_eq!(about.family.as_deref(), Some("mistral"), "{target:?}");
            }
            let cv: Value = serde_json::from_slice(&att.config).unwrap();
            let text = cv.to_string();
            assert!(!text.contains("model-0000"), "{target:?}: {text}");
            if target == Target::Docker {
                assert_eq!(cv["config"]["size"], "100B", "one weight of 100 bytes");
            }
            if target == Target::ModelKit {
                assert_eq!(cv["model"]["path"], "model.safetensors");
                assert_eq!(cv["model"]["parts"].as_array().unwrap().len(), 1);
                assert_eq!(cv["model"]["parameters"]["precision"], "BF16");
                assert_eq!(cv["package"]["name"], "tiny", "the name stays");
                let ml: Value = serde_json::from_slice(&att.manifest).unwrap();
                let types: Vec<&str> = ml["layers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l["mediaType"].as_str().unwrap())
                    .collect();
                assert!(
                    types[0].contains(".model.v1.") && types[1].contains(".modelpart.v1."),
                    "kit's order: {types:?}"
                );
            }
        }
    }

    #[test]
    fn a_layer_a_format_cannot_hold_is_a_bug_not_an_artifact() {
        let f = [file("model.gguf", Kind::Weight, Packing::Raw)];
        assert!(matches!(
            assemble(Target::ModelKit, &model(), &f, 0),
            Err(Error::Internal { .. })
        ));
        let f = [file("x", Kind::Weight, Packing::Tar(Compression::Gzip))];
        assert!(matches!(
            assemble(Target::Docker, &model(), &f, 0),
            Err(Error::Internal { .. })
        ));
    }
}
