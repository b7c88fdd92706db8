//! What a ModelPack made in the page is made of (pure: no JS): the picked files' paths and
//! kinds, how much of a weight file's head to read for its header, and the config's facts.
//!
//! Each step gives what `lamina pack DIR --format modelpack` gives for the same files (see
//! `cli/src/commands/pack.rs`), so that the page and the CLI make the same artifact, digest for
//! digest: a dropped folder is the `DIR` (its files at their paths inside it, its name the
//! model's), files dropped alone sit at their names; hidden files and caches are left out as
//! modctl leaves them; the paths go in byte order; the kinds come from the names by modctl's
//! lists ([`pack::classify`]); the facts from the weights' headers ([`pack::facts`]) and
//! `config.json`.

use lamina_core::artifact::{safe_path, Kind, Packing};
use lamina_core::layer::LayerInfo;
use lamina_core::pack::{self, Facts, FileLayer, Model};
use lamina_core::tar::archive_path;
use lamina_core::Error;

/// A file the user picked: its name on the page (a relative path, the dropped folder's name
/// first when it came in one), that folder's name, its size, and the driver's handle for it.
#[derive(Debug, Clone)]
pub struct Picked<T> {
    /// As the page lists it (`tiny/unet/x.safetensors`, or `README.md` dropped alone).
    pub name: String,
    /// The folder it came in (dropped or picked whole), whose contents the artifact holds.
    pub root: Option<String>,
    /// Bytes.
    pub size: u64,
    /// The driver's handle (a browser `File`).
    pub file: T,
}

/// A file to pack: its path in the artifact, its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackFile<T> {
    /// Its path in the artifact (`unet/x.safetensors`).
    pub path: String,
    /// Its name on the page (for the page's per-file progress).
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// From its name, by modctl's lists.
    pub kind: Kind,
    /// No list names it.
    pub guessed: bool,
    /// The driver's handle.
    pub file: T,
}

/// The files of an artifact, in path order, what was left out, and the folder's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan<T> {
    /// In path order (bytes), as `lamina pack` orders its layers.
    pub files: Vec<PackFile<T>>,
    /// The names of the files left out (hidden, caches), as the page lists them.
    pub left_out: Vec<String>,
    /// The first folder picked: the model's name unless one is given (`lamina pack DIR` names
    /// the model after `DIR`).
    pub folder: Option<String>,
}

/// The files to pack from what was picked: a folder's files at their paths inside it, a file
/// alone at its name; hidden files and caches left out ([`pack::skipped`], for every part of
/// the path); sorted by path. A path no reader would take (`..`, a backslash, a control
/// character), two files at one path, and nothing left to pack are errors that say so.
pub fn plan<T>(picked: Vec<Picked<T>>) -> Result<Plan<T>, Error> {
    let usage = |reason: String| Error::Usage { reason };
    if picked.is_empty() {
        return Err(usage(
            "nothing to pack: drop model files or a folder first".into(),
        ));
    }
    let folder = picked
        .iter()
        .find_map(|p| p.root.clone().filter(|r| !r.is_empty()));
    let mut files: Vec<PackFile<T>> = Vec::new();
    let mut left_out = Vec::new();
    for p in picked {
        let inside = p
            .root
            .as_deref()
            .filter(|r| !r.is_empty())
            .and_then(|r| p.name.strip_prefix(r)?.strip_prefix('/'));
        let rel = inside.unwrap_or(&p.name);
        let path = archive_path(rel).map_err(|e| usage(format!("{}: {e}", p.name)))?;
        let path = safe_path(&path).map_err(|e| usage(format!("{}: {e}", p.name)))?;
        if path.split('/').any(pack::skipped) {
            left_out.push(p.name);
            continue;
        }
        if let Some(other) = files.iter().find(|f| f.path == path) {
            return Err(usage(format!(
                "{} and {} would both be {path:?} in the artifact: remove one",
                other.name, p.name
            )));
        }
        let base = path.rsplit('/').next().unwrap_or(&path);
        let (kind, guessed) = pack::classify(base, p.size);
        files.push(PackFile {
            path,
            name: p.name,
            size: p.size,
            kind,
            guessed,
            file: p.file,
        });
    }
    if files.is_empty() {
        return Err(usage(
            "nothing to pack: every file was left out (hidden files and caches are, as modctl \
             leaves them)"
                .into(),
        ));
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Plan {
        files,
        left_out,
        folder,
    })
}

/// The largest `config.json` read for the model's family: the CLI's and the Worker's bound,
/// from core.
pub use lamina_core::pack::CONFIG_JSON_MAX as CONFIG_MAX;

/// The config's facts: `name` (given, or the folder's; an empty one is none), what the
/// weights' headers say, and transformers' `config.json`: the family (`model_type`), the
/// precision when the headers said none (`torch_dtype`), `transformer` as the architecture
/// when it names a `transformers_version` and the headers named none. A `config.json` that is
/// not JSON says nothing.
pub fn describe(name: Option<String>, facts: &[Facts], config_json: Option<&[u8]>) -> Model {
    let mut m = Model {
        name: name.filter(|n| !n.is_empty()),
        ..Model::default()
    };
    m.fill_from(facts);
    if let Some(b) = config_json {
        m.fill_from_config_json(b);
    }
    m
}

/// The artifact's layer of `f`, stored raw as `info` says (the blob is the file: its digest is
/// its diff_id). The browser cannot see a file's mode: every file is 0644.
pub fn file_layer<T>(f: &PackFile<T>, info: &LayerInfo) -> FileLayer {
    FileLayer {
        path: f.path.clone(),
        kind: f.kind,
        guessed: f.guessed,
        packing: Packing::Raw,
        digest: info.digest.clone(),
        size: info.size,
        diff_id: info.diff_id.clone(),
        file_size: f.size,
        executable: false,
        carried: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lamina_core::target::{self, Target};
    use lamina_core::Digest;

    fn picked(name: &str, root: Option<&str>, size: u64) -> Picked<u32> {
        Picked {
            name: name.into(),
            root: root.map(String::from),
            size,
            file: size as u32,
        }
    }

    fn paths<T>(p: &Plan<T>) -> Vec<&str> {
        p.files.iter().map(|f| f.path.as_str()).collect()
    }

    #[test]
    fn a_folder_is_its_contents_sorted_with_caches_and_hidden_files_left_out() {
        let p = plan(vec![
            picked("tiny/unet/x.safetensors", Some("tiny"), 91),
            picked("tiny/config.json", Some("tiny"), 92),
            picked("tiny/.gitattributes", Some("tiny"), 3),
            picked("tiny/__pycache__/m.cpython-311.pyc", Some("tiny"), 5),
            picked("tiny/README.md", Some("tiny"), 7),
            picked("tiny/model.safetensors", Some("tiny"), 300_000),
            picked("tiny/blob.qq", Some("tiny"), 4),
            picked("LICENSE", None, 11),
        ])
        .unwrap();
        assert_eq!(
            paths(&p),
            [
                "LICENSE",
                "README.md",
                "blob.qq",
                "config.json",
                "model.safetensors",
                "unet/x.safetensors"
            ],
            "byte order, as lamina pack puts them"
        );
        assert_eq!(
            p.left_out,
            ["tiny/.gitattributes", "tiny/__pycache__/m.cpython-311.pyc"]
        );
        assert_eq!(p.folder.as_deref(), Some("tiny"));
        let kinds: Vec<(Kind, bool)> = p.files.iter().map(|f| (f.kind, f.guessed)).collect();
        assert_eq!(
            kinds,
            [
                (Kind::Doc, false),
                (Kind::Doc, false),
                (Kind::Code, true),
                (Kind::Config, false),
                (Kind::Weight, false),
                (Kind::Weight, false)
            ]
        );
        // the page's names stay, for its progress bars; the handles go with them
        let x = p
            .files
            .iter()
            .find(|f| f.path == "unet/x.safetensors")
            .unwrap();
        assert_eq!(
            (x.name.as_str(), x.size, x.file),
            ("tiny/unet/x.safetensors", 91, 91)
        );
    }

    #[test]
    fn files_dropped_alone_sit_at_their_names_and_the_model_has_no_folder_name() {
        let p = plan(vec![
            picked("model.gguf", None, 1),
            picked("README.md", None, 2),
        ])
        .unwrap();
        assert_eq!(paths(&p), ["README.md", "model.gguf"]);
        assert_eq!(p.folder, None);
        // a root the name does not start with is no folder of it
        let p = plan(vec![picked("other/a.json", Some("tiny"), 1)]).unwrap();
        assert_eq!(paths(&p), ["other/a.json"]);
        // an empty root is none
        let p = plan(vec![picked("a.json", Some(""), 1)]).unwrap();
        assert_eq!((paths(&p), p.folder.as_deref()), (vec!["a.json"], None));
    }

    #[test]
    fn nothing_to_pack_two_files_at_one_path_and_bad_paths_say_so() {
        let e = plan(Vec::<Picked<u32>>::new()).unwrap_err().to_string();
        assert_eq!(e, "nothing to pack: drop model files or a folder first");
        let e = plan(vec![picked("m/.hidden", Some("m"), 1)])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("nothing to pack: every file was left out"),
            "{e}"
        );
        // a folder's config.json and a config.json dropped alone
        let e = plan(vec![
            picked("tiny/config.json", Some("tiny"), 1),
            picked("config.json", None, 2),
        ])
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "tiny/config.json and config.json would both be \"config.json\" in the artifact: \
             remove one"
        );
        let e = plan(vec![picked("../x.bin", None, 1)])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "../x.bin: path \"../x.bin\" contains '..'");
        let e = plan(vec![picked("a\\b.bin", None, 1)])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "a\\b.bin: the path holds a backslash");
        let e = plan(vec![picked("a\nb.bin", None, 1)])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "a\nb.bin: the path holds a control character");
        assert!(matches!(
            plan(vec![picked("/", None, 1)]),
            Err(Error::Usage { .. })
        ));
    }

    #[test]
    fn the_config_takes_the_headers_then_config_json_then_the_folder_name() {
        let facts = [Facts {
            format: Some("safetensors".into()),
            params: Some(42),
            precisions: vec![("bfloat16".into(), 32), ("float16".into(), 10)],
            ..Facts::default()
        }];
        let cj = br#"{"architectures":["LlamaForCausalLM"],"model_type":"llama",
                      "transformers_version":"4.46.0","torch_dtype":"float32"}"#;
        let m = describe(Some("tiny".into()), &facts, Some(cj));
        assert_eq!(m.name.as_deref(), Some("tiny"));
        assert_eq!(m.family.as_deref(), Some("llama"));
        assert_eq!(m.format.as_deref(), Some("safetensors"));
        assert_eq!(m.param_size.as_deref(), Some("42"));
        assert_eq!(
            m.precision.as_deref(),
            Some("bfloat16,float16"),
            "the headers' precision wins over torch_dtype"
        );
        assert_eq!(m.architecture.as_deref(), Some("transformer"));
        assert_eq!(
            m.created_at, None,
            "no time in the config: the same files, the same digest"
        );
        // no weights: torch_dtype is the precision; no transformers_version: no architecture
        let m = describe(
            None,
            &[],
            Some(br#"{"model_type":"bert","torch_dtype":"float16"}"#),
        );
        assert_eq!(
            (
                m.name,
                m.family.as_deref(),
                m.precision.as_deref(),
                m.architecture
            ),
            (None, Some("bert"), Some("float16"), None)
        );
        // GGUF's architecture stays; a config.json that is no JSON says nothing; "" is no name
        let gguf = [Facts {
            format: Some("gguf".into()),
            architecture: Some("llama".into()),
            ..Facts::default()
        }];
        let m = describe(Some(String::new()), &gguf, Some(b"{not json"));
        assert_eq!(m.architecture.as_deref(), Some("llama"));
        assert_eq!((m.name, m.family), (None, None));
    }

    #[test]
    fn a_raw_layer_is_the_file_and_assembles_into_a_modelpack_with_its_path() {
        let p = plan(vec![
            picked("tiny/unet/x.safetensors", Some("tiny"), 3),
            picked("tiny/README.md", Some("tiny"), 2),
        ])
        .unwrap();
        let layers: Vec<FileLayer> = p
            .files
            .iter()
            .map(|f| {
                let bytes = vec![b'x'; f.size as usize];
                file_layer(f, &LayerInfo::stored(Digest::of(&bytes), f.size))
            })
            .collect();
        assert!(layers
            .iter()
            .all(|l| l.digest == l.diff_id && !l.executable));
        let model = describe(p.folder.clone(), &[], None);
        let a = target::assemble(Target::ModelPack, &model, &layers, 1_700_000_000).unwrap();
        let m: serde_json::Value = serde_json::from_slice(&a.manifest).unwrap();
        assert_eq!(
            m["artifactType"],
            "application/vnd.cncf.model.manifest.v1+json"
        );
        let l = &m["layers"][1];
        assert_eq!(l["mediaType"], "application/vnd.cncf.model.weight.v1.raw");
        assert_eq!(l["digest"], Digest::of(b"xxx").to_string());
        assert_eq!(
            l["annotations"]["org.cncf.model.filepath"],
            "unet/x.safetensors"
        );
        let meta: serde_json::Value = serde_json::from_str(
            l["annotations"]["org.cncf.model.file.metadata+json"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(meta["mtime"], "2023-11-14T22:13:20Z");
        assert_eq!(
            (meta["name"].as_str(), meta["mode"].as_u64()),
            (Some("x.safetensors"), Some(0o644))
        );
        let c: serde_json::Value = serde_json::from_slice(&a.config).unwrap();
        assert_eq!(c["descriptor"]["name"], "tiny");
        assert_eq!(c["modelfs"]["diffIds"][0], Digest::of(b"xx").to_string());
    }
}
