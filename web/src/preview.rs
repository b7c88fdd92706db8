//! What the destination will hold (pure: no JS): the base's merged file tree (what
//! [`lamina_wasm::peek::ls`] read of it, `lamina ls --json`'s entries) with the layer(s) the page
//! is about to build applied on top, or a ModelPack's files side by side, as `lamina ls --json
//! DEST` lists the result once it is pushed.
//!
//! The new layers' entries come from the same planning the upload runs ([`crate::source`]'s
//! [`planned`] of [`crate::affix::groups`], [`crate::model::plan`]), their headers as a
//! reader of the tar finds them ([`lamina_core::toc::of`]); the tree is the core's ([`Tree`]),
//! so the preview is the listing, not a guess at it.

use std::collections::BTreeMap;

use lamina_core::peek::report::{self, Cost};
use lamina_core::peek::Tree;
use lamina_core::untar::{Header, Kind};
use lamina_core::Error;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::affix::groups;
use crate::model::{self, Picked};
use crate::source::planned;

/// A file the page has: its name (a relative path), size, and the folder it came in.
#[derive(Debug, Clone, Deserialize)]
pub struct Pick {
    /// As the page lists it.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// The folder it came in (a ModelPack holds that folder's contents).
    #[serde(default)]
    pub root: Option<String>,
}

/// What the page asks a preview of.
#[derive(Debug, Clone, Deserialize)]
pub struct Ask {
    /// `modelpack`, `modelcar` or `weights`.
    pub layout: String,
    /// Where the files go in the layer (weights; a modelcar's is `/models`).
    #[serde(default)]
    pub path: String,
    /// The base's `ls --json` entries (none for a ModelPack).
    #[serde(default)]
    pub base: Vec<Value>,
    /// How many layers the base has (the new ones are numbered after them).
    #[serde(default)]
    pub base_layers: usize,
    /// The files.
    pub files: Vec<Pick>,
    /// A modelcar's model card.
    #[serde(default)]
    pub card: Option<Pick>,
}

/// A base entry of `ls --json` as a header of its layer, or `None` for a directory only
/// implied by the paths below it (the tree implies it again).
fn base_header(e: &Value) -> Result<Option<(usize, Header)>, Error> {
    let bad = |what: &str| Error::Usage {
        reason: format!("the base's listing: an entry without {what}: {e}"),
    };
    let Some(layer) = e["layer"].as_u64() else {
        return Ok(None);
    };
    let path = e["path"].as_str().ok_or_else(|| bad("a path"))?;
    let link = || e["link"].as_str().unwrap_or_default().to_string();
    let kind = match e["type"].as_str().ok_or_else(|| bad("a type"))? {
        "file" => Kind::File,
        "dir" => Kind::Dir,
        "symlink" => Kind::Symlink(link()),
        "hardlink" => Kind::Hardlink(link()),
        _ => Kind::Other(0),
    };
    let mode = e["mode"]
        .as_str()
        .and_then(|m| u32::from_str_radix(m, 8).ok())
        .ok_or_else(|| bad("a mode"))?;
    Ok(Some((
        layer as usize,
        Header {
            path: path.to_string(),
            kind,
            size: e["size"].as_u64().unwrap_or(0),
            mode,
            mtime: 0,
            at: 0,
        },
    )))
}

/// The preview: `{"entries"` (as `lamina ls --json DEST` will list them), `"layers"` (each new
/// layer's index and files), `"leftOut"` (a ModelPack's hidden files and caches)`}`.
pub fn preview(a: Ask) -> Result<Value, Error> {
    if a.layout == "modelpack" {
        let picked = a
            .files
            .into_iter()
            .map(|p| Picked {
                name: p.name,
                root: p.root,
                size: p.size,
                file: (),
            })
            .collect();
        let plan = model::plan(picked)?;
        let mut t = Tree::side_by_side();
        let mut layers = Vec::new();
        for (i, f) in plan.files.iter().enumerate() {
            t.begin(i);
            t.add(&Header::file(&f.path, f.size), None)?;
            layers.push(json!({"index": i, "files": [f.path]}));
        }
        t.end();
        return Ok(rows(&t, layers, plan.left_out));
    }
    let modelcar = a.layout == "modelcar";
    let path = if modelcar { "/models" } else { &a.path };
    let path = lamina_core::tar::archive_path(path)?;
    let mut t = Tree::new();
    let mut by_layer: BTreeMap<usize, Vec<Header>> = BTreeMap::new();
    for e in &a.base {
        if let Some((l, h)) = base_header(e)? {
            by_layer.entry(l).or_default().push(h);
        }
    }
    for (l, hs) in by_layer {
        t.begin(l);
        for h in hs {
            t.add(&h, None)?;
        }
    }
    let files = a.files.into_iter().map(|p| (p.name, p.size)).collect();
    let card = a.card.map(|c| (c.name, c.size));
    let mut layers = Vec::new();
    for (i, g) in groups(modelcar, files, card)
        .map_err(|f| f.error)?
        .into_iter()
        .enumerate()
    {
        let idx = a.base_layers + i;
        let names: Vec<&str> = g.files.iter().map(|(n, _)| n.as_str()).collect();
        layers.push(json!({"index": idx, "files": names}));
        t.begin(idx);
        for h in lamina_core::toc::of(&planned(&g.files, &path)?, 0)? {
            t.add(&h, None)?;
        }
    }
    t.end();
    Ok(rows(&t, layers, Vec::new()))
}

fn rows(t: &Tree, layers: Vec<Value>, left_out: Vec<String>) -> Value {
    let rows: Vec<_> = t.under("").collect();
    let mut v = report::ls_json("", "", &rows, &Cost::default());
    json!({"entries": v["entries"].take(), "layers": layers, "leftOut": left_out})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(name: &str, size: u64, root: Option<&str>) -> Pick {
        Pick {
            name: name.into(),
            size,
            root: root.map(str::to_string),
        }
    }

    fn entry(path: &str, t: &str, size: u64, mode: &str, layer: Option<usize>) -> Value {
        json!({"path": path, "type": t, "size": size, "mode": mode, "layer": layer, "link": null})
    }

    fn paths(v: &Value) -> Vec<(String, Value)> {
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["path"].as_str().unwrap().to_string(), e["layer"].clone()))
            .collect()
    }

    #[test]
    fn nested_folder_keeps_its_paths_under_the_weights_path_over_the_base() {
        let base = vec![
            entry("bin", "dir", 0, "0755", Some(0)),
            entry("bin/sh", "file", 10, "0755", Some(0)),
            entry("src", "dir", 0, "0755", None),
            entry("src/weights", "file", 3, "0644", Some(1)),
        ];
        let v = preview(Ask {
            layout: "weights".into(),
            path: "/src/weights".into(),
            base,
            base_layers: 2,
            files: vec![
                pick("m/unet/config.json", 5, Some("m")),
                pick("m/w.bin", 9, Some("m")),
            ],
            card: None,
        })
        .unwrap();
        let p = paths(&v);
        // the base's file at src/weights is replaced by the new directory
        assert_eq!(
            p,
            [
                ("bin".into(), json!(0)),
                ("bin/sh".into(), json!(0)),
                ("src".into(), json!(2)),
                ("src/weights".into(), json!(2)),
                ("src/weights/m".into(), json!(2)),
                ("src/weights/m/unet".into(), json!(2)),
                ("src/weights/m/unet/config.json".into(), json!(2)),
                ("src/weights/m/w.bin".into(), json!(2)),
            ]
        );
        assert_eq!(
            v["layers"],
            json!([{"index": 2, "files": ["m/unet/config.json", "m/w.bin"]}])
        );
    }

    #[test]
    fn modelcar_is_a_layer_per_file_and_the_card_last() {
        let v = preview(Ask {
            layout: "modelcar".into(),
            path: String::new(),
            base: vec![entry("bin", "dir", 0, "0755", Some(0))],
            base_layers: 1,
            files: vec![pick("a.gguf", 5, None), pick("b.gguf", 6, None)],
            card: Some(pick("README.md", 7, None)),
        })
        .unwrap();
        let p = paths(&v);
        assert!(p.contains(&("models/a.gguf".into(), json!(1))), "{p:?}");
        assert!(p.contains(&("models/b.gguf".into(), json!(2))), "{p:?}");
        assert!(p.contains(&("models/README.md".into(), json!(3))), "{p:?}");
        assert_eq!(v["layers"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn modelpack_files_sit_side_by_side_hidden_ones_left_out() {
        let v = preview(Ask {
            layout: "modelpack".into(),
            path: String::new(),
            base: Vec::new(),
            base_layers: 0,
            files: vec![
                pick("tiny/vae/x.safetensors", 5, Some("tiny")),
                pick("tiny/.git/HEAD", 5, Some("tiny")),
                pick("tiny/README.md", 5, Some("tiny")),
            ],
            card: None,
        })
        .unwrap();
        assert_eq!(
            paths(&v),
            [
                ("README.md".into(), json!(0)),
                ("vae".into(), Value::Null),
                ("vae/x.safetensors".into(), json!(1)),
            ]
        );
        assert_eq!(v["leftOut"], json!(["tiny/.git/HEAD"]));
    }

    #[test]
    fn a_bad_base_entry_is_an_error_naming_it() {
        let e = preview(Ask {
            layout: "weights".into(),
            path: "/w".into(),
            base: vec![json!({"path": "x", "layer": 0, "type": "file"})],
            base_layers: 1,
            files: vec![pick("a", 1, None)],
            card: None,
        })
        .unwrap_err();
        assert!(e.to_string().contains("without a mode"), "{e}");
    }
}
