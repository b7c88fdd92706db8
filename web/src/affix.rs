//! The page's job: the base's manifest and config, its layers mounted into the destination,
//! the new layer(s) built from the files as they upload, then config and manifest. The base,
//! the mounts and the push are the core's workflows ([`lamina_wasm::flow`]); the page's
//! [`Side`] sends their events and notes to the log.

use lamina_core::compress::Compression;
use lamina_core::flow::{Edit, Image, NewLayer, PlatformSel, Top};
use lamina_core::image::{Config, Descriptor, Platform};
use lamina_core::media::Family;
use lamina_core::modelcar::{self, CarLayer, Part};
use lamina_core::reference::Reference;
use lamina_core::registry::UploadConfig;
use lamina_core::tar::archive_path;
use lamina_core::{Digest, Error};
use lamina_wasm::flow::{self, Side};
use lamina_wasm::Failure;

use crate::driver::{Browser, Driver, Report};
use crate::opts::Opts;
use crate::progress;
use crate::source::{LayerSource, Named};

/// The page's side of the core's workflows: events and notes go to the log; a blob that is in
/// another registry cannot be copied from here.
struct Page<'a> {
    d: &'a mut Driver,
    report: &'a Report,
}

impl Side for Page<'_> {
    type X = Browser;
    type Hook = Report;
    fn driver(&mut self) -> (&mut Driver, &Report) {
        (self.d, self.report)
    }
    async fn note(&mut self, line: &str) {
        self.report.send(progress::log(line));
    }
    async fn copy(
        &mut self,
        _: &Reference,
        to: &Reference,
        blob: &Descriptor,
    ) -> Result<(), Failure> {
        Err(not_copied(&blob.digest, to))
    }
}

impl lamina_wasm::peek::Streams for Page<'_> {
    type Body = lamina_wasm::Reader;
    fn body(&self, s: web_sys::ReadableStream, what: &str) -> lamina_wasm::Reader {
        lamina_wasm::Reader::new(&s, what)
    }
}

/// The base's files: `lamina ls --json BASE` (linux/amd64 of an index), read inside its
/// layers without downloading them ([`lamina_wasm::peek::ls`]: tar headers by `Range`
/// requests, a compressed layer streamed, each noted in the log).
pub async fn files(d: &mut Driver, base: &Reference, report: &Report) -> Result<String, Failure> {
    let mut s = Page { d, report };
    let v = lamina_wasm::peek::ls(&mut s, base, None, &[], None).await?;
    Ok(v.to_string())
}

/// Why the page stops at a base blob the destination lacks.
fn not_copied(digest: &Digest, to: &Reference) -> Failure {
    Failure::usage(format!(
        "base blob {digest} is not in {} and cannot be mounted from another registry in the \
         browser; push the base there first",
        to.name()
    ))
}

/// The base: its top's digest, whether that is an index, and the image (linux/amd64 of an
/// index) with its config.
struct Base {
    digest: Digest,
    index: bool,
    image: Image,
    config: Config,
}

async fn fetch_base(s: &mut Page<'_>, base: &Reference) -> Result<Base, Failure> {
    let sel = PlatformSel::One(Platform::linux_amd64());
    let (top, mut configs) = flow::image(s, base, sel).await?;
    let (digest, index, image) = match top {
        Top::Single(i) => (i.digest.clone(), false, i),
        Top::Index {
            digest,
            mut children,
            ..
        } => (
            digest,
            true,
            children.pop().ok_or_else(|| Error::internal("no image"))?,
        ),
    };
    let config = configs.pop().ok_or_else(|| Error::internal("no config"))?;
    Ok(Base {
        digest,
        index,
        image,
        config,
    })
}

/// The base image's layers, for the page to show before uploading (JSON).
pub async fn inspect(d: &mut Driver, base: &Reference, report: &Report) -> Result<String, Failure> {
    let b = fetch_base(&mut Page { d, report }, base).await?;
    let hist = b.config.layer_history();
    let layers: Vec<serde_json::Value> = b
        .image
        .manifest
        .layers()?
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let h = hist.get(i).cloned().flatten();
            serde_json::json!({
                "digest": l.digest.to_string(),
                "size": l.size,
                "mediaType": l.media_type,
                "createdBy": h.as_ref().and_then(|h| h.created_by.clone()),
            })
        })
        .collect();
    Ok(serde_json::json!({
        "digest": b.digest.to_string(),
        "index": b.index,
        "layers": layers,
    })
    .to_string())
}

/// One layer the page builds: its files (each its name under the layer's path, and the
/// driver's handle), whether it holds weights or the model card, and its title (a modelcar's
/// file name).
#[derive(Debug)]
pub struct Group<T> {
    /// The files.
    pub files: Vec<(String, T)>,
    /// Weights or the card.
    pub part: Part,
    /// A modelcar layer's file name.
    pub title: String,
}

/// The layers of `inputs` (and a modelcar's `card`, last): all the files in one layer, or one
/// layer per file (`modelcar`). A card outside the modelcar layout is an error.
pub fn groups<T>(
    modelcar: bool,
    inputs: Vec<(String, T)>,
    card: Option<(String, T)>,
) -> Result<Vec<Group<T>>, Failure> {
    if !modelcar {
        if card.is_some() {
            return Err(Failure::usage("a model card goes with the modelcar layout"));
        }
        return Ok(vec![Group {
            files: inputs,
            part: Part::Weights,
            title: String::new(),
        }]);
    }
    let mut out = Vec::new();
    for (n, f) in inputs {
        let title = n.rsplit('/').next().unwrap_or(&n).to_string();
        out.push(Group {
            files: vec![(n, f)],
            part: Part::Weights,
            title,
        });
    }
    if let Some((n, c)) = card {
        out.push(Group {
            files: vec![(n.clone(), c)],
            part: Part::Card,
            title: n,
        });
    }
    Ok(out)
}

/// Builds the layer(s) of `inputs` (and the model card) on top of the base, pushes the result
/// to `dest`; returns `dest@sha256:...`.
pub async fn affix(
    o: &Opts,
    base: &Reference,
    dest: &Reference,
    d: &mut Driver,
    inputs: Vec<Named>,
    modelcard: Option<web_sys::File>,
    report: &Report,
) -> Result<String, Failure> {
    if inputs.is_empty() && modelcard.is_none() {
        return Err(Failure::usage("nothing to add: drop model files first"));
    }
    let compression = o.compression()?;
    let path = archive_path(&o.path)?;
    let created = o
        .created
        .clone()
        .unwrap_or_else(|| lamina_core::image::rfc3339((js_sys::Date::now() / 1000.0) as u64));

    // 1. the base (manifest and config); its layers stay in the registry
    report.send(progress::phase("base"));
    let mut s = Page { d, report };
    let b = fetch_base(&mut s, base).await?;
    // 2. base layers into the destination repository: mounted, or already there
    report.send(progress::phase("mount"));
    if b.index {
        return Err(Failure::usage(
            "the base is a multi-platform index: the browser edits single images (use the CLI's --platform all)",
        ));
    }
    flow::ensure_base(&mut s, base, dest, &b.image.manifest).await?;

    // 3. the layer(s): built as the files stream, uploaded in chunks
    let card = modelcard.map(|c| (c.name(), c));
    let layers = groups(o.modelcar, inputs, card)?;
    let chunk = o.chunk();
    // whole chunks only (but the last): no small PATCH for the bytes a fill overshot
    let cfg = UploadConfig::whole_chunks(chunk);
    let mut built: Vec<CarLayer> = Vec::new();
    for (i, Group { files, part, title }) in layers.into_iter().enumerate() {
        let c = if part == Part::Card {
            Compression::Gzip
        } else {
            compression
        };
        let what = files
            .iter()
            .map(|(n, _)| n.clone())
            .collect::<Vec<_>>()
            .join(" ");
        let mut src = LayerSource::new(files, &path, c, chunk)?;
        report.send(progress::layer(i, &what, src.total));
        s.d.upload(dest, cfg, &mut src, report).await?;
        let info = src
            .info()
            .cloned()
            .ok_or_else(|| Error::internal("the layer did not finish"))?;
        report.send(progress::layer_done(i, &info.digest.to_string(), info.size));
        // a modelcar layer is one file under /models; a weights layer is all the files under
        // the path, its history `COPY <names> <path> # weights` as r8im writes it
        let (title, in_layer) = if o.modelcar {
            (title, format!("/{path}/{what}"))
        } else {
            (what, format!("/{path}"))
        };
        built.push(CarLayer {
            title,
            in_layer_path: in_layer,
            directory: false,
            part,
            info,
        });
    }

    // 4. config and manifest, last (a modelcar's annotations make a Docker manifest OCI)
    report.send(progress::phase("manifest"));
    let mut edit = Edit::default();
    for l in &built {
        let annotations = if o.modelcar {
            l.descriptor(Family::Oci)?.annotations
        } else {
            Vec::new()
        };
        edit.layers.push(NewLayer {
            compression: l.info.compression,
            digest: l.info.digest.clone(),
            size: l.info.size,
            diff_id: l.info.diff_id.clone(),
            history: l.history(&created),
            annotations,
        });
    }
    if let Some(card) = built.iter().rev().find(|l| l.part == Part::Card) {
        edit.annotations
            .push((modelcar::ANN_MODELCARD.into(), card.info.digest.to_string()));
    }
    flow::push(&mut s, dest, b.image, b.config, edit).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_of_another_registry_stops_the_page_with_what_to_do() {
        let to = Reference::parse("127.0.0.1:5100/e2e/x:v1", "r8.im").unwrap();
        let d = Digest::of(b"layer");
        let f = not_copied(&d, &to);
        assert!(matches!(f.error, Error::Usage { .. }), "{}", f.error);
        assert_eq!(
            f.to_string(),
            format!(
                "base blob {d} is not in 127.0.0.1:5100/e2e/x and cannot be mounted from another \
                 registry in the browser; push the base there first"
            )
        );
    }
}
