//! The jobs a hook starts (`affix`, `remix`, `zstd`), registry to registry over the core's
//! machines: base layers are mounted (or streamed across registries), a new layer streams from
//! its source into a chunked upload, and the manifest goes last, so a failed job leaves no tag.

use base64::Engine as _;
use lamina_core::compress::Compression;
use lamina_core::hook::{AffixJob, Job, RemixJob, ZstdJob};
use lamina_core::image::{
    detect_kind, remixed_history, weights_layers, Config, Descriptor, History, Manifest,
};
use lamina_core::media::{self, DocKind};
use lamina_core::reference::Reference;
use lamina_core::registry::{GetBlob, GetManifest, HeadBlob, MountBlob, OpenBlob, PutManifest};
use lamina_core::tar::archive_path;
use lamina_core::Error;
use lamina_wasm::{Failure, Reader};

use crate::driver::{Driver, Progress, Result};
use crate::produce::{Built, Content, FromBlob, GivenTar};

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

/// One platform image.
struct Img {
    manifest: Manifest,
    config: Config,
}

fn reference(s: &str) -> Result<Reference> {
    Ok(Reference::parse(s, DEFAULT_REGISTRY)?)
}

async fn fetch_image<G: Progress>(c: &mut Ctx, r: &Reference, p: &G) -> Result<Img> {
    let (top, _) =
        c.d.run(r, GetManifest::new(&r.repository, &r.reference()), p)
            .await?;
    let (kind, mt) = detect_kind(&top.bytes, top.content_type.as_deref())?;
    if let DocKind::Index(_) = kind {
        return Err(Failure::usage(format!(
            "{} is a multi-platform index; the Worker edits one image: name the platform's \
             manifest by digest (`lamina layers --platform os/arch {}` shows it)",
            r.name(),
            r.name()
        )));
    }
    let manifest = Manifest::parse(top.bytes, &mt)?;
    let cd = manifest.config()?;
    let (raw, _) =
        c.d.run(
            r,
            GetBlob::new(
                &r.repository,
                &cd.digest,
                lamina_core::image::MAX_CONFIG_SIZE,
            ),
            p,
        )
        .await?;
    let config = Config::parse(raw)?;
    Ok(Img { manifest, config })
}

/// Makes sure `desc` (a blob of `from`) is in `to`'s repository: already there, mounted within
/// a registry, or streamed from one registry to the other.
async fn ensure_blob<G: Progress>(
    c: &mut Ctx,
    from: &Reference,
    to: &Reference,
    desc: &Descriptor,
    p: &G,
) -> Result<()> {
    if from.registry == to.registry {
        if from.repository == to.repository {
            return Ok(());
        }
        let (mounted, _) =
            c.d.run(
                to,
                MountBlob::new(&to.repository, &from.repository, &desc.digest),
                p,
            )
            .await?;
        if mounted {
            return Ok(());
        }
    }
    let (have, _) =
        c.d.run(to, HeadBlob::new(&to.repository, &desc.digest, true), p)
            .await?;
    if have.is_some() {
        return Ok(());
    }
    p.log(&format!(
        "copying {} ({} bytes) from {} to {}",
        desc.digest, desc.size, from.registry, to.registry
    ))
    .await;
    let rd = open_blob(c, from, desc, p).await?;
    let mut src = FromBlob::copy(rd, &desc.digest, desc.size);
    let chunk = c.chunk;
    let got = c.d.upload(to, &mut src, chunk, p).await?;
    if got != desc.digest {
        return Err(Error::Protocol {
            reason: format!("copied {} but the registry stored {got}", desc.digest),
        }
        .into());
    }
    Ok(())
}

async fn open_blob<G: Progress>(
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

/// Every blob of `img` (layers, config) into `to`.
async fn ensure_all<G: Progress>(
    c: &mut Ctx,
    from: &Reference,
    to: &Reference,
    img: &Img,
    p: &G,
) -> Result<()> {
    let mut blobs = img.manifest.layers()?;
    blobs.push(img.manifest.config()?);
    for b in &blobs {
        ensure_blob(c, from, to, b, p).await?;
    }
    Ok(())
}

/// Config, then manifest (the tag last); returns `name@digest`.
async fn put_image<G: Progress>(
    c: &mut Ctx,
    dest: &Reference,
    img: &mut Img,
    p: &G,
) -> Result<String> {
    let cbytes = img.config.bytes().to_vec();
    let csize = cbytes.len() as u64;
    let cd = c.d.upload_bytes(dest, cbytes, p).await?;
    img.manifest.set_config(&cd, csize);
    img.manifest.ensure_media_type();
    let mbytes = img.manifest.bytes().to_vec();
    let mt = img.manifest.media_type();
    let (digest, _) =
        c.d.run(
            dest,
            PutManifest::new(&dest.repository, dest.tag_or_latest(), mt, mbytes),
            p,
        )
        .await?;
    Ok(format!("{}@{digest}", dest.name()))
}

fn layer_desc(
    img: &mut Img,
    c: Compression,
    digest: &lamina_core::Digest,
    size: u64,
) -> Result<Descriptor> {
    if media::layer_type(img.manifest.family(), c).is_none() {
        // zstd layers exist in OCI only
        img.manifest.convert_to_oci();
    }
    let mt = media::layer_type(img.manifest.family(), c)
        .ok_or_else(|| Error::internal(format!("no layer media type for {}", c.name())))?;
    Ok(Descriptor::new(mt, digest.clone(), size))
}

/// Runs a job; returns the pushed image as `name@sha256:...`.
pub async fn run<G: Progress>(c: &mut Ctx, job: &Job, p: &G) -> Result<String> {
    match job {
        Job::Affix(j) => affix(c, j, p).await,
        Job::Remix(j) => remix(c, j, p).await,
        Job::Zstd(j) => zstd(c, j, p).await,
    }
}

async fn affix<G: Progress>(c: &mut Ctx, j: &AffixJob, p: &G) -> Result<String> {
    let (base, dest) = (reference(&j.base)?, reference(&j.dest)?);
    p.log(&format!("base {}", base.name())).await;
    let mut img = fetch_image(c, &base, p).await?;
    ensure_all(c, &base, &dest, &img, p).await?;
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
                (Some(u), _) => Content::Url(u.clone()),
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
    let desc = layer_desc(&mut img, info.compression, &info.digest, info.size)?;
    img.config.push_layer(
        &info.diff_id,
        &History {
            created: Some(c.created.clone()),
            created_by,
            comment: Some("weights".into()),
            author: None,
        },
    );
    img.manifest.push_layer(&desc);
    put_image(c, &dest, &mut img, p).await
}

async fn remix<G: Progress>(c: &mut Ctx, j: &RemixJob, p: &G) -> Result<String> {
    let (base, weights, dest) = (
        reference(&j.base)?,
        reference(&j.weights)?,
        reference(&j.dest)?,
    );
    let w = fetch_image(c, &weights, p).await?;
    let wlayers = w.manifest.layers()?;
    let wdiff = w.config.diff_ids()?;
    if wdiff.len() != wlayers.len() {
        return Err(Failure::usage(format!(
            "{}: {} layers but {} diff_ids in its config",
            weights.name(),
            wlayers.len(),
            wdiff.len()
        )));
    }
    let picked = if j.layers.is_empty() {
        let p = weights_layers(&w.config);
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
    let mut img = fetch_image(c, &base, p).await?;
    ensure_all(c, &base, &dest, &img, p).await?;
    let hist = w.config.layer_history();
    for &i in &picked {
        let l = &wlayers[i];
        ensure_blob(c, &weights, &dest, l, p).await?;
        let comp = media::layer_compression(&l.media_type).ok_or_else(|| {
            Failure::usage(format!(
                "layer {i} of {}: media type {}",
                weights.name(),
                l.media_type
            ))
        })?;
        let orig = hist.get(i).cloned().flatten().and_then(|h| h.created_by);
        let h = remixed_history(orig.as_deref(), i, &weights.name(), &c.created);
        let desc = layer_desc(&mut img, comp, &l.digest, l.size)?;
        img.config.push_layer(&wdiff[i], &h);
        img.manifest.push_layer(&desc);
    }
    p.log(&format!(
        "{} weights layer(s) from {}",
        picked.len(),
        weights.name()
    ))
    .await;
    put_image(c, &dest, &mut img, p).await
}

async fn zstd<G: Progress>(c: &mut Ctx, j: &ZstdJob, p: &G) -> Result<String> {
    let (src, dest) = (reference(&j.image)?, reference(&j.dest)?);
    let min_ratio = j.min_ratio.unwrap_or(0.9);
    let mut img = fetch_image(c, &src, p).await?;
    let layers = img.manifest.layers()?;
    let diffs = img.config.diff_ids()?;
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
            ensure_blob(c, &src, &dest, l, p).await?;
            let d = layer_desc(&mut img, from, &l.digest, l.size)?;
            img.manifest.set_layer(i, &d.media_type, &l.digest, l.size);
            p.log(&format!("layer {i}: already zstd, kept")).await;
            continue;
        }
        let rd = open_blob(c, &src, l, p).await?;
        let mut s = FromBlob::recode(rd, &l.digest, l.size, from, Compression::Zstd);
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
            ensure_blob(c, &src, &dest, l, p).await?;
            (from, l.digest.clone(), l.size, "kept (zstd is not smaller)")
        } else if (info.size as f64) < min_ratio * info.uncompressed_size as f64 {
            (Compression::Zstd, info.digest, info.size, "zstd")
        } else if from == Compression::None {
            ensure_blob(c, &src, &dest, l, p).await?;
            (
                from,
                l.digest.clone(),
                l.size,
                "kept uncompressed (zstd saves too little)",
            )
        } else {
            // stored uncompressed: a second pass
            let rd = open_blob(c, &src, l, p).await?;
            let mut s = FromBlob::recode(rd, &l.digest, l.size, from, Compression::None);
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
        let d = layer_desc(&mut img, comp, &digest, size)?;
        img.manifest.set_layer(i, &d.media_type, &digest, size);
    }
    put_image(c, &dest, &mut img, p).await
}
