//! `lamina remix`: the weights layers of one image on top of another, without downloading a
//! layer: blobs are mounted across repositories, or streamed registry to registry.

use crate::store::Loc;
use lamina_core::image::{remixed_history, weights_layers};
use lamina_core::media;
use lamina_core::Error;

use crate::client::Client;
use crate::error::Result;
use crate::flows::{copy_other_platforms, ensure_blobs};
use crate::push::{push_images, NewLayer};
use crate::resolve::{self, PlatformSel, Top};

/// What to combine.
#[derive(Debug)]
pub struct Args {
    /// The image to add to.
    pub base: Loc,
    /// The image whose weights layers are taken.
    pub weights: Loc,
    /// Destination.
    pub dest: Loc,
    /// Take only these layers of the weights image (by index) instead of its weights layers.
    pub layers: Vec<usize>,
    /// Platform.
    pub platform: Option<String>,
    /// Print JSON.
    pub json: bool,
    /// No progress.
    pub quiet: bool,
}

/// Runs `remix`; prints `dest@sha256:...`.
pub fn run(client: &mut Client, a: Args) -> Result<()> {
    let t0 = std::time::Instant::now();
    let sel = PlatformSel::parse(a.platform.as_deref())?;
    // the weights image: one platform (the one asked for, default linux/amd64)
    let wsel = match &sel {
        PlatformSel::All => PlatformSel::parse(None)?,
        one => one.clone(),
    };
    let w = resolve::fetch_one(client, &a.weights, &wsel)?;
    let wconfig = resolve::config(client, &a.weights, &w.manifest)?;
    let (wlayers, wdiff): (Vec<_>, Vec<_>) =
        resolve::layers_with_diff_ids(&a.weights, &w.manifest, &wconfig)?
            .into_iter()
            .unzip();
    let picked = if a.layers.is_empty() {
        let p = weights_layers(&wconfig);
        if p.is_empty() {
            return Err(format!("{}: no weights layers (history `... # weights` or `COPY . /src`); pick layers with --layer N (see `lamina layers`)", a.weights).into());
        }
        p
    } else {
        for &i in &a.layers {
            if i >= wlayers.len() {
                return Err(Box::new(Error::Usage {
                    reason: format!(
                        "--layer {i}: {} has {} layers (0..{})",
                        a.weights,
                        wlayers.len(),
                        wlayers.len().saturating_sub(1)
                    ),
                }));
            }
        }
        a.layers.clone()
    };
    let hist = wconfig.layer_history();

    let (mut images, mut index) = match resolve::fetch(client, &a.base, &sel)? {
        Top::Single(i) => (vec![i], None),
        Top::Index {
            index, children, ..
        } => (children, Some(index)),
    };
    let mut configs = Vec::new();
    for img in &images {
        configs.push(resolve::config(client, &a.base, &img.manifest)?);
        if index.is_none() {
            resolve::check_platform(&a.base, a.platform.as_deref(), &configs[0])?;
        }
    }

    // blobs: the base's, then the weights layers, into the destination repository
    let mut base_blobs = Vec::new();
    for img in &images {
        for l in img.manifest.layers()? {
            if !base_blobs
                .iter()
                .any(|b: &lamina_core::image::Descriptor| b.digest == l.digest)
            {
                base_blobs.push(l);
            }
        }
    }
    ensure_blobs(client, &a.base, &a.dest, &base_blobs, a.quiet)?;
    copy_other_platforms(client, &a.base, &a.dest, index.as_ref(), &images, a.quiet)?;
    let take: Vec<_> = picked.iter().map(|&i| wlayers[i].clone()).collect();
    ensure_blobs(client, &a.weights, &a.dest, &take, a.quiet)?;

    let created = resolve::history_time();
    let mut new_layers = Vec::new();
    for &i in &picked {
        let l = &wlayers[i];
        let compression =
            media::layer_compression(&l.media_type).ok_or_else(|| Error::UnsupportedMediaType {
                what: format!("layer {i} of {}", a.weights),
                media_type: l.media_type.clone(),
            })?;
        let orig = hist.get(i).cloned().flatten().and_then(|h| h.created_by);
        let history = remixed_history(orig.as_deref(), i, &a.weights.to_string(), &created);
        new_layers.push(NewLayer {
            compression,
            digest: l.digest.clone(),
            size: l.size,
            diff_id: wdiff[i].clone(),
            annotations: l.annotations.clone(),
            history,
        });
    }
    let d = push_images(
        client,
        &a.dest,
        &mut images,
        configs,
        &mut index,
        &new_layers,
        &[],
        &[],
        a.quiet,
    )?;
    crate::store::commit(&a.dest)?;
    let name = a.dest.name();
    if a.json {
        outln!(
            "{}",
            serde_json::json!({
                "image": format!("{name}@{d}"),
                "digest": d.to_string(),
                "tag": a.dest.tag(),
                "layers": new_layers.iter().map(|l| serde_json::json!({"digest": l.digest.to_string(), "size": l.size, "diffId": l.diff_id.to_string()})).collect::<Vec<_>>(),
                "seconds": t0.elapsed().as_secs_f64(),
            })
        )?;
    } else {
        outln!("{name}@{d}")?;
    }
    if !a.quiet {
        eprintln!(
            "added {} weights layer(s) from {} in {:.1}s",
            new_layers.len(),
            a.weights,
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
