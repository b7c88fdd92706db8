//! The jobs a hook starts (`affix`, `remix`, `zstd`; `pack` and `convert` in [`crate::model`]),
//! registry to registry over the core's machines: base layers are mounted (or streamed across
//! registries), a new layer streams from its source into a chunked upload, and the manifest goes
//! last, so a failed job leaves no tag.
//! Fetching an image, placing blobs and pushing are the core's workflows
//! ([`lamina_wasm::flow`]); a job's [`Side`] logs their notes and streams a blob across
//! registries.

use base64::Engine as _;
use lamina_core::compress::Compression;
use lamina_core::flow::{Edit, Image, NewLayer, PlatformSel, Top};
use lamina_core::hook::{AffixJob, Job, RemixJob, ZstdJob};
use lamina_core::image::{remixed_history, weights_layers, Config, Descriptor, History};
use lamina_core::media::{self, Family};
use lamina_core::reference::Reference;
use lamina_core::registry::OpenBlob;
use lamina_core::tar::archive_path;
use lamina_core::Error;
use lamina_wasm::flow::{self, Side};
use lamina_wasm::{Failure, Reader};

use crate::driver::{self, Driver, Progress, Result, Workerd};
use crate::produce::{Blob, Built, Content, FromBlob, GivenTar, Url};

/// Registry used for short names (as the CLI: Replicate's).
pub const DEFAULT_REGISTRY: &str = "r8.im";

/// What a job runs with.
#[derive(Debug)]
pub struct Ctx {
    /// The registry driver (credentials per host from the Worker's secrets).
    pub d: Driver,
    /// PATCH size.
    pub chunk: u64,
    /// `created` for new history entries (the Worker's clock).
    pub created: String,
}

pub(crate) fn reference(s: &str) -> Result<Reference> {
    Ok(Reference::parse(s, DEFAULT_REGISTRY)?)
}

/// A job's side of the core's workflows: events and notes go to its log, and a blob of another
/// registry is streamed across.
pub(crate) struct Jobs<'a, G> {
    c: &'a mut Ctx,
    hook: driver::Job<'a, G>,
}

pub(crate) fn side<'a, G: Progress>(c: &'a mut Ctx, p: &'a G) -> Jobs<'a, G> {
    Jobs {
        c,
        hook: driver::Job(p),
    }
}

impl<'a, G: Progress> Side for Jobs<'a, G> {
    type X = Workerd;
    type Hook = driver::Job<'a, G>;
    fn driver(&mut self) -> (&mut lamina_wasm::Driver<Workerd>, &Self::Hook) {
        (self.c.d.shared(), &self.hook)
    }
    async fn note(&mut self, line: &str) {
        self.hook.0.log(line).await;
    }
    async fn copy(&mut self, from: &Reference, to: &Reference, blob: &Descriptor) -> Result<()> {
        let p = self.hook.0;
        p.log(&format!(
            "copying {} ({} bytes) from {} to {}",
            blob.digest, blob.size, from.registry, to.registry
        ))
        .await;
        let from_blob = blob_source(self.c, from, blob, p).await?;
        let mut src = FromBlob::copy(from_blob, &blob.digest, blob.size).await?;
        let chunk = self.c.chunk;
        let got = self.c.d.upload(to, &mut src, chunk, p).await?;
        if got != blob.digest {
            return Err(Error::Protocol {
                reason: format!("copied {} but the registry stored {got}", blob.digest),
            }
            .into());
        }
        Ok(())
    }
}

/// The single image `r` names, with its config (an index is refused).
pub(crate) async fn fetch_image<G: Progress>(
    c: &mut Ctx,
    r: &Reference,
    p: &G,
) -> Result<(Image, Config)> {
    let (top, mut configs) = flow::image(&mut side(c, p), r, PlatformSel::None).await?;
    let (Top::Single(image), Some(config)) = (top, configs.pop()) else {
        return Err(Failure::usage(format!(
            "{} is a multi-platform index; the Worker edits one image: name the platform's \
             manifest by digest (`lamina layers --platform os/arch {}` shows it)",
            r.name(),
            r.name()
        )));
    };
    Ok((image, config))
}

/// Makes sure `blobs` (of `from`) are in `to`'s repository: already there, mounted within a
/// registry, or streamed from one registry to the other.
pub(crate) async fn ensure<G: Progress>(
    c: &mut Ctx,
    from: &Reference,
    to: &Reference,
    blobs: Vec<Descriptor>,
    what: &str,
    p: &G,
) -> Result<()> {
    flow::ensure(&mut side(c, p), from, to, blobs, what).await?;
    Ok(())
}

/// Makes sure layer `i` of `from`, `l`, is in `to` as it is.
async fn keep<G: Progress>(
    c: &mut Ctx,
    from: &Reference,
    to: &Reference,
    i: usize,
    l: &Descriptor,
    p: &G,
) -> Result<()> {
    ensure(c, from, to, vec![l.clone()], &format!("layer {i}"), p).await
}

pub(crate) async fn open_blob<G: Progress>(
    c: &mut Ctx,
    r: &Reference,
    desc: &Descriptor,
    p: &G,
) -> Result<Reader> {
    let (_, stream) =
        c.d.run(r, OpenBlob::new(&r.repository, &desc.digest), p)
            .await?;
    let s = stream.ok_or_else(|| Error::Protocol {
        reason: format!("blob {} came without a body", desc.digest),
    })?;
    Ok(Reader::new(&s, &format!("blob {}", desc.digest)))
}

/// Blob `desc` of `r`, opened, and downloaded again (with a driver of its own) for an upload
/// that must be made again.
pub(crate) async fn blob_source<G: Progress>(
    c: &mut Ctx,
    r: &Reference,
    desc: &Descriptor,
    p: &G,
) -> Result<Blob> {
    let first = open_blob(c, r, desc, p).await?;
    Ok(Blob::new(first, c.d.fresh(), r, desc))
}

/// Config, then manifest (the tag last), with `edit` on both; returns `name@digest`.
async fn put_image<G: Progress>(
    c: &mut Ctx,
    dest: &Reference,
    mut img: Image,
    config: Config,
    edit: Edit,
    p: &G,
) -> Result<String> {
    img.manifest.ensure_media_type();
    flow::push(&mut side(c, p), dest, img, config, edit).await
}

/// A layer appended as it is (its blob at the destination already).
fn new_layer(
    compression: Compression,
    digest: &lamina_core::Digest,
    size: u64,
    diff_id: &lamina_core::Digest,
    history: History,
) -> NewLayer {
    NewLayer {
        compression,
        digest: digest.clone(),
        size,
        diff_id: diff_id.clone(),
        history,
        annotations: Vec::new(),
    }
}

/// The layer media type of `c` in an OCI manifest.
fn oci_layer_type(c: Compression) -> Result<&'static str> {
    media::layer_type(Family::Oci, c)
        .ok_or_else(|| Error::internal(format!("no layer media type for {}", c.name())).into())
}

/// Runs a job; returns the pushed image or artifact as `name@sha256:...`.
pub async fn run<G: Progress>(c: &mut Ctx, job: &Job, p: &G) -> Result<String> {
    match job {
        Job::Affix(j) => affix(c, j, p).await,
        Job::Remix(j) => remix(c, j, p).await,
        Job::Zstd(j) => zstd(c, j, p).await,
        Job::Pack(j) => crate::model::pack(c, j, p).await,
        Job::Convert(j) => crate::model::convert(c, j, p).await,
    }
}

async fn affix<G: Progress>(c: &mut Ctx, j: &AffixJob, p: &G) -> Result<String> {
    let (base, dest) = (reference(&j.base)?, reference(&j.dest)?);
    p.log(&format!("base {}", base.name())).await;
    let (img, config) = fetch_image(c, &base, p).await?;
    flow::ensure_base(&mut side(c, p), &base, &dest, &img.manifest).await?;
    let compression = match j.compression.as_deref() {
        None | Some("none") => Compression::None,
        Some("gzip") => Compression::Gzip,
        Some("zstd") => Compression::Zstd,
        Some(other) => return Err(Failure::usage(format!("compression {other:?}"))),
    };
    let chunk = c.chunk;
    let (info, created_by) = if let Some(t) = &j.tar {
        p.log("layer: the given tar").await;
        let mut src = GivenTar::open(&t.url, compression).await?;
        c.d.upload(&dest, &mut src, chunk, p).await?;
        let name = t
            .url
            .split('?')
            .next()
            .and_then(|u| u.rsplit('/').next())
            .filter(|n| !n.is_empty())
            .unwrap_or("layer.tar")
            .to_string();
        let info = src
            .info()
            .cloned()
            .ok_or_else(|| Error::internal("the tar did not finish"))?;
        (info, format!("ADD {name} / # weights"))
    } else {
        let dir = archive_path(j.path.as_deref().unwrap_or("/src/weights"))?;
        let mut files = Vec::new();
        let mut names = Vec::new();
        for f in &j.files {
            let name = archive_path(&f.name)?;
            let content = match (&f.url, &f.data) {
                (Some(u), _) => Content::Fetched(Url(u.clone())),
                (None, Some(d)) => Content::Inline(
                    base64::engine::general_purpose::STANDARD
                        .decode(d)
                        .map_err(|e| Failure::usage(format!("{name}: {e}")))?,
                ),
                (None, None) => return Err(Failure::usage(format!("{name}: no url or data"))),
            };
            files.push((format!("{dir}/{name}"), content));
            names.push(name);
        }
        p.log(&format!("layer: {} file(s) under /{dir}", names.len()))
            .await;
        let mut src = Built::new(files, compression)?;
        c.d.upload(&dest, &mut src, chunk, p).await?;
        let info = src
            .info()
            .cloned()
            .ok_or_else(|| Error::internal("the layer did not finish"))?;
        (info, format!("COPY {} /{dir} # weights", names.join(" ")))
    };
    p.log(&format!(
        "layer {} ({} bytes, {})",
        info.digest,
        info.size,
        info.compression.name()
    ))
    .await;
    let history = History {
        created: Some(c.created.clone()),
        created_by,
        comment: Some("weights".into()),
        author: None,
    };
    let edit = Edit {
        layers: vec![new_layer(
            info.compression,
            &info.digest,
            info.size,
            &info.diff_id,
            history,
        )],
        ..Edit::default()
    };
    put_image(c, &dest, img, config, edit, p).await
}

async fn remix<G: Progress>(c: &mut Ctx, j: &RemixJob, p: &G) -> Result<String> {
    let (base, weights, dest) = (
        reference(&j.base)?,
        reference(&j.weights)?,
        reference(&j.dest)?,
    );
    let (w, wconfig) = fetch_image(c, &weights, p).await?;
    let wlayers = w.manifest.layers()?;
    let wdiff = wconfig.diff_ids()?;
    if wdiff.len() != wlayers.len() {
        return Err(Failure::usage(format!(
            "{}: {} layers but {} diff_ids in its config",
            weights.name(),
            wlayers.len(),
            wdiff.len()
        )));
    }
    let picked = if j.layers.is_empty() {
        let p = weights_layers(&wconfig);
        if p.is_empty() {
            return Err(Failure::usage(format!(
                "{}: no weights layers (history `... # weights` or `COPY . /src`); pick layers \
                 with \"layers\": [N] (see `lamina layers`)",
                weights.name()
            )));
        }
        p
    } else {
        if let Some(&i) = j.layers.iter().find(|&&i| i >= wlayers.len()) {
            return Err(Failure::usage(format!(
                "layer {i}: {} has {} layers",
                weights.name(),
                wlayers.len()
            )));
        }
        j.layers.clone()
    };
    let (img, config) = fetch_image(c, &base, p).await?;
    flow::ensure_base(&mut side(c, p), &base, &dest, &img.manifest).await?;
    let hist = wconfig.layer_history();
    let mut edit = Edit::default();
    for &i in &picked {
        let l = &wlayers[i];
        let comp = media::layer_compression(&l.media_type).ok_or_else(|| {
            Failure::usage(format!(
                "layer {i} of {}: media type {}",
                weights.name(),
                l.media_type
            ))
        })?;
        let orig = hist.get(i).cloned().flatten().and_then(|h| h.created_by);
        let h = remixed_history(orig.as_deref(), i, &weights.name(), &c.created);
        edit.layers
            .push(new_layer(comp, &l.digest, l.size, &wdiff[i], h));
    }
    let wblobs = picked.iter().map(|&i| wlayers[i].clone()).collect();
    ensure(c, &weights, &dest, wblobs, "weights layers", p).await?;
    p.log(&format!(
        "{} weights layer(s) from {}",
        picked.len(),
        weights.name()
    ))
    .await;
    put_image(c, &dest, img, config, edit, p).await
}

async fn zstd<G: Progress>(c: &mut Ctx, j: &ZstdJob, p: &G) -> Result<String> {
    let (src, dest) = (reference(&j.image)?, reference(&j.dest)?);
    let min_ratio = j.min_ratio.unwrap_or(0.9);
    let (mut img, config) = fetch_image(c, &src, p).await?;
    let layers = img.manifest.layers()?;
    let diffs = config.diff_ids()?;
    if diffs.len() != layers.len() {
        return Err(Failure::usage(format!(
            "{}: {} layers but {} diff_ids in its config",
            src.name(),
            layers.len(),
            diffs.len()
        )));
    }
    img.manifest.convert_to_oci();
    let chunk = c.chunk;
    for (i, l) in layers.iter().enumerate() {
        let from = media::layer_compression(&l.media_type)
            .ok_or_else(|| Failure::usage(format!("layer {i}: media type {}", l.media_type)))?;
        if from == Compression::Zstd {
            keep(c, &src, &dest, i, l, p).await?;
            img.manifest
                .set_layer(i, oci_layer_type(from)?, &l.digest, l.size);
            p.log(&format!("layer {i}: already zstd, kept")).await;
            continue;
        }
        let from_blob = blob_source(c, &src, l, p).await?;
        let mut s = FromBlob::recode(from_blob, &l.digest, l.size, from, Compression::Zstd).await?;
        c.d.upload(&dest, &mut s, chunk, p).await?;
        let info = s
            .info()
            .cloned()
            .ok_or_else(|| Error::internal("the layer did not finish"))?;
        if info.diff_id != diffs[i] {
            return Err(Error::InvalidDocument {
                what: format!("config of {}", src.name()),
                reason: format!(
                    "layer {i}: its content is {} but the config says {}",
                    info.diff_id, diffs[i]
                ),
            }
            .into());
        }
        let (comp, digest, size, note) = if (info.size as f64)
            < min_ratio * info.uncompressed_size as f64
            && from != Compression::None
            && info.size >= l.size
        {
            // zstd (ruzstd's fastest level) is not smaller than the layer as it was: keep
            // the original
            keep(c, &src, &dest, i, l, p).await?;
            (from, l.digest.clone(), l.size, "kept (zstd is not smaller)")
        } else if (info.size as f64) < min_ratio * info.uncompressed_size as f64 {
            (Compression::Zstd, info.digest, info.size, "zstd")
        } else if from == Compression::None {
            keep(c, &src, &dest, i, l, p).await?;
            (
                from,
                l.digest.clone(),
                l.size,
                "kept uncompressed (zstd saves too little)",
            )
        } else {
            // stored uncompressed: a second pass
            let from_blob = blob_source(c, &src, l, p).await?;
            let mut s =
                FromBlob::recode(from_blob, &l.digest, l.size, from, Compression::None).await?;
            c.d.upload(&dest, &mut s, chunk, p).await?;
            let u = s
                .info()
                .cloned()
                .ok_or_else(|| Error::internal("the layer did not finish"))?;
            (
                Compression::None,
                u.digest,
                u.size,
                "stored uncompressed (zstd saves too little)",
            )
        };
        p.log(&format!(
            "layer {i}: {} -> {digest} ({size} bytes, {note})",
            l.digest
        ))
        .await;
        img.manifest
            .set_layer(i, oci_layer_type(comp)?, &digest, size);
    }
    put_image(c, &dest, img, config, Edit::default(), p).await
}
