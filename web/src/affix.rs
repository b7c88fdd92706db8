//! The page's job: the base's manifest and config, its layers mounted into the destination,
//! the new layer(s) built from the files as they upload, then config and manifest.

use lamina_core::compress::Compression;
use lamina_core::image::{detect_kind, Config, Descriptor, Index, Manifest, Platform};
use lamina_core::media::{self, DocKind, Family};
use lamina_core::modelcar::{self, CarLayer, Part};
use lamina_core::reference::Reference;
use lamina_core::registry::{
    FetchedManifest, GetBlob, GetManifest, HeadBlob, MountBlob, PutManifest, UploadConfig,
};
use lamina_core::tar::archive_path;
use lamina_core::Error;
use lamina_wasm::Failure;

use crate::driver::{Driver, Report};
use crate::opts::Opts;
use crate::progress;
use crate::source::{LayerSource, Named};

/// One platform image of the base.
pub struct Img {
    pub manifest: Manifest,
    pub config: Config,
}

/// The base's top manifest, the index and the chosen entry when it is one, and its image.
pub async fn fetch_base(
    d: &mut Driver,
    base: &Reference,
    report: &Report,
) -> Result<(FetchedManifest, Option<(Index, usize)>, Img), Failure> {
    let (top, _) = d
        .run(
            base,
            GetManifest::new(&base.repository, &base.reference()),
            report,
        )
        .await?;
    let (kind, mt) = detect_kind(&top.bytes, top.content_type.as_deref())?;
    let (ix, man_bytes, man_mt) = match kind {
        DocKind::Manifest(_) => (None, top.bytes.clone(), mt),
        DocKind::Index(_) => {
            let ix = Index::parse(top.bytes.clone(), &mt)?;
            let i = ix.select(&Platform::linux_amd64())?;
            let e = &ix.manifests()?[i];
            let (f, _) = d
                .run(
                    base,
                    GetManifest::new(&base.repository, &e.digest.to_string()),
                    report,
                )
                .await?;
            let (_, cmt) =
                detect_kind(&f.bytes, f.content_type.as_deref().or(Some(&e.media_type)))?;
            (Some((ix, i)), f.bytes, cmt)
        }
    };
    let manifest = Manifest::parse(man_bytes, &man_mt)?;
    let c = manifest.config()?;
    let (raw, _) = d
        .run(
            base,
            GetBlob::new(
                &base.repository,
                &c.digest,
                lamina_core::image::MAX_CONFIG_SIZE,
            ),
            report,
        )
        .await?;
    let config = Config::parse(raw)?;
    Ok((top, ix, Img { manifest, config }))
}

/// The base image's layers, for the page to show before uploading (JSON).
pub async fn inspect(d: &mut Driver, base: &Reference, report: &Report) -> Result<String, Failure> {
    let (top, ix, img) = fetch_base(d, base, report).await?;
    let hist = img.config.layer_history();
    let layers: Vec<serde_json::Value> = img
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
        "digest": top.digest.to_string(),
        "index": ix.is_some(),
        "layers": layers,
    })
    .to_string())
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
    let (_top, ix, mut img) = fetch_base(d, base, report).await?;
    // 2. base layers into the destination repository: mounted, or already there
    report.send(progress::phase("mount"));
    let mut blobs = img.manifest.layers()?;
    if ix.is_some() {
        return Err(Failure::usage(
            "the base is a multi-platform index: the browser edits single images (use the CLI's --platform all)",
        ));
    }
    blobs.push(img.manifest.config()?);
    if base.registry != dest.registry || base.repository != dest.repository {
        for b in &blobs {
            if base.registry == dest.registry
                && d.run(
                    dest,
                    MountBlob::new(&dest.repository, &base.repository, &b.digest),
                    report,
                )
                .await?
                .0
            {
                continue;
            }
            let (have, _) = d
                .run(
                    dest,
                    HeadBlob::new(&dest.repository, &b.digest, true),
                    report,
                )
                .await?;
            if have.is_none() {
                return Err(Failure::usage(format!(
                    "base blob {} is not in {} and cannot be mounted from another registry in \
                     the browser; push the base there first",
                    b.digest,
                    dest.name()
                )));
            }
        }
    }

    // 3. the layer(s): built as the files stream, uploaded in chunks
    // (files, weights or card, title)
    type Group = (Vec<Named>, Part, String);
    let mut groups: Vec<Group> = Vec::new();
    if o.modelcar {
        for (n, f) in inputs {
            let title = n.rsplit('/').next().unwrap_or(&n).to_string();
            groups.push((vec![(n, f)], Part::Weights, title));
        }
        if let Some(c) = modelcard {
            let n = c.name();
            groups.push((vec![(n.clone(), c)], Part::Card, n));
        }
    } else {
        if modelcard.is_some() {
            return Err(Failure::usage("a model card goes with the modelcar layout"));
        }
        groups.push((inputs, Part::Weights, String::new()));
    }
    let chunk = o.chunk();
    // whole chunks only (but the last): no small PATCH for the bytes a fill overshot
    let cfg = UploadConfig::whole_chunks(chunk);
    let mut built: Vec<CarLayer> = Vec::new();
    for (i, (files, part, title)) in groups.into_iter().enumerate() {
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
        d.upload(dest, cfg, &mut src, report).await?;
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

    // 4. config and manifest, last
    report.send(progress::phase("manifest"));
    if o.modelcar && img.manifest.family() == Family::Docker {
        img.manifest.convert_to_oci();
    }
    for l in &built {
        img.config.push_layer(&l.info.diff_id, &l.history(&created));
        let desc = if o.modelcar {
            l.descriptor(img.manifest.family())?
        } else {
            let mt = media::layer_type(img.manifest.family(), l.info.compression)
                .ok_or_else(|| Error::internal("no layer media type"))?;
            Descriptor::new(mt, l.info.digest.clone(), l.info.size)
        };
        img.manifest.push_layer(&desc);
    }
    if let Some(card) = built.iter().rev().find(|l| l.part == Part::Card) {
        img.manifest
            .set_annotation(modelcar::ANN_MODELCARD, &card.info.digest.to_string())?;
    }
    let cbytes = img.config.bytes().to_vec();
    let csize = cbytes.len() as u64;
    let cd = d.upload_bytes(dest, cbytes, report).await?;
    img.manifest.set_config(&cd, csize);
    let mbytes = img.manifest.bytes().to_vec();
    let mt = img.manifest.media_type();
    let (digest, _) = d
        .run(
            dest,
            PutManifest::new(&dest.repository, dest.tag_or_latest(), mt, mbytes),
            report,
        )
        .await?;
    Ok(format!("{}@{digest}", dest.name()))
}
