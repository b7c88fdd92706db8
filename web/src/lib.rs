//! lamina in the browser. The page's Web Worker calls [`affix`] (files on top of an image) or
//! [`pack`] (files as a ModelPack artifact of their own) with the dropped files; this crate is
//! the driver: it reads the files as streams, feeds the core's tar and layer writers, and runs
//! the core's transfer kernel over `fetch` (the loop shared with the edge Worker,
//! `lamina-wasm`). The core does the protocol (auth, chunked uploads, resume from the
//! registry's `Range`), the image edits, the artifact's config and manifest, and the hashing.
//!
//! - `opts`: what the page asks for;
//! - `source`: the layer's bytes from the files (sent as they are, or compressed);
//! - `driver`: the browser's transport, and the page's log and progress;
//! - `affix`: the job onto an image;
//! - `model` (pure) and `pack`: the ModelPack job;
//! - `preview` (pure): what the destination will hold, before anything is sent;
//! - `progress`: the JSON messages to the page.

use js_sys::{Array, Function};
use lamina_core::compress::Compression;
use lamina_core::reference::Reference;
use lamina_core::tar::archive_path;
use lamina_core::Error;
use lamina_wasm::{Failure, Pieces};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

mod affix;
mod driver;
mod model;
mod opts;
mod pack;
mod preview;
mod progress;
mod source;

use driver::{page_error, Browser, Driver, Report};
use opts::Opts;
use source::{LayerSource, Named};

/// The options, the base, the destination (none when it is left empty) and the driver.
fn setup(opts_json: &str) -> Result<(Opts, Reference, Option<Reference>, Driver), Failure> {
    let o = Opts::parse(opts_json)?;
    let (base, dest) = o.refs()?;
    let d = Driver::new(Browser::new(o.proxy()), o.creds_for(dest.as_ref()));
    Ok((o, base, dest, d))
}

/// The File objects of `files`, each with its name in `names` (a path relative to the layer's
/// directory; the file's own name when none is given).
fn named(files: &Array, names: &Array, check: bool) -> Result<Vec<Named>, Error> {
    let mut out = Vec::new();
    for (f, n) in files.iter().zip(names.iter()) {
        let f: web_sys::File = f.dyn_into().map_err(|_| Error::Usage {
            reason: "not a File".into(),
        })?;
        let name = n.as_string().unwrap_or_else(|| f.name());
        let name = if check { archive_path(&name)? } else { name };
        out.push((name, f));
    }
    Ok(out)
}

/// The base image's layers, for the page to show before uploading (JSON). The destination may
/// be left empty.
#[wasm_bindgen]
pub async fn inspect(opts_json: String, progress: Function) -> Result<String, JsValue> {
    let report = Report::new(progress);
    let (_, base, _, mut d) = setup(&opts_json).map_err(|f| page_error(&f))?;
    affix::inspect(&mut d, &base, &report)
        .await
        .map_err(|f| page_error(&f))
}

/// The base image's files (JSON: what `lamina ls --json BASE` prints), read inside its
/// layers without downloading them.
#[wasm_bindgen]
pub async fn base_files(opts_json: String, progress: Function) -> Result<String, JsValue> {
    let report = Report::new(progress);
    let (_, base, _, mut d) = setup(&opts_json).map_err(|f| page_error(&f))?;
    affix::files(&mut d, &base, &report)
        .await
        .map_err(|f| page_error(&f))
}

/// What the destination will hold (JSON, see [`preview::preview`]): `ask_json` names the
/// layout, the path, the base's `ls` entries and layer count, and the files (names, sizes,
/// folders). Reads nothing.
#[wasm_bindgen]
pub fn preview(ask_json: String) -> Result<String, JsError> {
    let a: preview::Ask =
        serde_json::from_str(&ask_json).map_err(|e| JsError::new(&format!("preview: {e}")))?;
    preview::preview(a)
        .map(|v| v.to_string())
        .map_err(|e| JsError::new(&e.to_string()))
}

/// Builds the layer(s) from `files` (File objects; `names` their paths in the layer, relative)
/// on top of the base and pushes the result; returns `dest@sha256:...`.
#[wasm_bindgen]
pub async fn affix(
    opts_json: String,
    files: Array,
    names: Array,
    modelcard: Option<web_sys::File>,
    progress: Function,
) -> Result<String, JsValue> {
    let report = Report::new(progress);
    let run = async {
        let (o, base, dest, mut d) = setup(&opts_json)?;
        let dest = dest.ok_or_else(|| Error::Usage {
            reason: "fill in the destination".into(),
        })?;
        let inputs = named(&files, &names, true)?;
        affix::affix(&o, &base, &dest, &mut d, inputs, modelcard, &report).await
    };
    run.await.map_err(|f| page_error(&f))
}

/// Packs `files` (File objects; `names` their names on the page, relative paths; `roots` the
/// folder each came in, or null for a file dropped alone) into the destination as a CNCF
/// ModelPack, one raw layer per file, with no base image: the artifact `lamina pack FOLDER
/// --format modelpack` makes of the same files. Returns `dest@sha256:...`.
#[wasm_bindgen]
pub async fn pack(
    opts_json: String,
    files: Array,
    names: Array,
    roots: Array,
    progress: Function,
) -> Result<String, JsValue> {
    let report = Report::new(progress);
    let run = async {
        let o = Opts::parse(&opts_json)?;
        let dest = o.destination()?;
        let mut d = Driver::new(Browser::new(o.proxy()), o.creds_for(Some(&dest)));
        let mut picked = Vec::new();
        for (i, (name, file)) in named(&files, &names, false)?.into_iter().enumerate() {
            picked.push(model::Picked {
                name,
                root: roots.get(i as u32).as_string(),
                size: file.size() as u64,
                file,
            });
        }
        pack::pack(&o, &dest, &mut d, picked, &report).await
    };
    run.await.map_err(|f: Failure| page_error(&f))
}

/// Builds the layer of `files` (`names` their paths under `dest` in the layer) without
/// uploading it and returns its digests and sizes and the time it took (JSON): the browser's
/// layer building and hashing throughput, for the benchmark.
#[wasm_bindgen]
pub async fn layer_digests(
    files: Array,
    names: Array,
    dest: String,
    compression: String,
) -> Result<String, JsError> {
    let js = |e: Error| JsError::new(&e.to_string());
    let inputs = named(&files, &names, false).map_err(js)?;
    let c = Compression::parse(&compression).ok_or_else(|| JsError::new("compression"))?;
    let t0 = js_sys::Date::now();
    let mut src = LayerSource::new(inputs, &dest, c, 8 << 20).map_err(js)?;
    while src.info().is_none() {
        // the bytes made are dropped at once
        src.fill(&mut Pieces::default(), 8 << 20)
            .await
            .map_err(js)?;
    }
    let ms = js_sys::Date::now() - t0;
    let info = src.info().ok_or_else(|| JsError::new("no layer"))?;
    Ok(serde_json::json!({
        "digest": info.digest.to_string(),
        "size": info.size,
        "diffId": info.diff_id.to_string(),
        "uncompressed": info.uncompressed_size,
        "ms": ms,
    })
    .to_string())
}
