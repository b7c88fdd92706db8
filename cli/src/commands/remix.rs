//! `lamina remix`: the weights layers of one image on top of another, without downloading a
//! layer: blobs are mounted across repositories, or streamed registry to registry.

use lamina_core::image::{remixed_history, weights_layers};
use lamina_core::media;
use lamina_core::Error;

use crate::commands::Ctx;
use crate::error::Result;
use crate::ops::flows::{copy_other_platforms, ensure_blobs};
use crate::ops::push::{push_images, NewLayer};
use crate::ops::resolve::{self, PlatformSel, Top};

/// Put the weights layers of one image on top of another, without downloading a layer.
///
/// Layers are mounted across repositories, or streamed registry to registry. The new history
/// entries keep the `# weights` mark, the diff_ids come from the weights image's config.
///
/// Example:
///   lamina remix --base r8.im/me/base --weights r8.im/me/model:v1 --dest r8.im/me/model:v2
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The image to add the weights to.
    #[arg(short = 'b', long, value_name = "REF")]
    pub base: String,
    /// The image to take the weights layers from.
    #[arg(short = 'w', long, value_name = "REF")]
    pub weights: String,
    /// Destination.
    #[arg(short = 'd', long, value_name = "REF")]
    pub dest: String,
    /// Take this layer of the weights image (by index, see `lamina layers`; repeatable)
    /// instead of its weights layers.
    #[arg(long = "layer", value_name = "N")]
    pub layers: Vec<usize>,
    /// Platform: os/arch[/variant], or all for every platform of the base (default linux/amd64).
    #[arg(long)]
    pub platform: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `remix`; prints `dest@sha256:...`.
pub fn run(ctx: &mut Ctx, a: Args) -> Result<()> {
    let base = ctx.source("--base", &a.base)?;
    let weights = ctx.source("--weights", &a.weights)?;
    let dest = ctx.dest("--dest", &a.dest)?;
    let (client, quiet) = (&mut ctx.client, ctx.quiet);
    let t0 = std::time::Instant::now();
    let sel = PlatformSel::parse(a.platform.as_deref())?;
    // the weights image: one platform (the one asked for, default linux/amd64)
    let wsel = match &sel {
        PlatformSel::All => PlatformSel::parse(None)?,
        one => one.clone(),
    };
    let w = resolve::fetch_one(client, &weights, &wsel)?;
    let wconfig = resolve::config(client, &weights, &w.manifest)?;
    let (wlayers, wdiff): (Vec<_>, Vec<_>) =
        resolve::layers_with_diff_ids(&weights, &w.manifest, &wconfig)?
            .into_iter()
            .unzip();
    let picked = if a.layers.is_empty() {
        let p = weights_layers(&wconfig);
        if p.is_empty() {
            return Err(format!("{}: no weights layers (history `... # weights` or `COPY . /src`); pick layers with --layer N (see `lamina layers`)", weights).into());
        }
        p
    } else {
        for &i in &a.layers {
            if i >= wlayers.len() {
                return Err(Box::new(Error::Usage {
                    reason: format!(
                        "--layer {i}: {} has {} layers (0..{})",
                        weights,
                        wlayers.len(),
                        wlayers.len().saturating_sub(1)
                    ),
                }));
            }
        }
        a.layers.clone()
    };
    let hist = wconfig.layer_history();

    let (mut images, mut index) = match resolve::fetch(client, &base, &sel)? {
        Top::Single(i) => (vec![i], None),
        Top::Index {
            index, children, ..
        } => (children, Some(index)),
    };
    let mut configs = Vec::new();
    for img in &images {
        configs.push(resolve::config(client, &base, &img.manifest)?);
        if index.is_none() {
            resolve::check_platform(&base, a.platform.as_deref(), &configs[0])?;
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
    ensure_blobs(client, &base, &dest, &base_blobs, quiet)?;
    copy_other_platforms(client, &base, &dest, index.as_ref(), &images, quiet)?;
    let take: Vec<_> = picked.iter().map(|&i| wlayers[i].clone()).collect();
    ensure_blobs(client, &weights, &dest, &take, quiet)?;

    let created = resolve::history_time();
    let mut new_layers = Vec::new();
    for &i in &picked {
        let l = &wlayers[i];
        let compression =
            media::layer_compression(&l.media_type).ok_or_else(|| Error::UnsupportedMediaType {
                what: format!("layer {i} of {}", weights),
                media_type: l.media_type.clone(),
            })?;
        let orig = hist.get(i).cloned().flatten().and_then(|h| h.created_by);
        let history = remixed_history(orig.as_deref(), i, &weights.to_string(), &created);
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
        &dest,
        &mut images,
        configs,
        &mut index,
        &new_layers,
        &[],
        &[],
        quiet,
    )?;
    crate::store::commit(&dest)?;
    let name = dest.name();
    if a.json {
        outln!(
            "{}",
            serde_json::json!({
                "image": format!("{name}@{d}"),
                "digest": d.to_string(),
                "tag": dest.tag(),
                "layers": new_layers.iter().map(|l| serde_json::json!({"digest": l.digest.to_string(), "size": l.size, "diffId": l.diff_id.to_string()})).collect::<Vec<_>>(),
                "seconds": t0.elapsed().as_secs_f64(),
            })
        )?;
    } else {
        outln!("{name}@{d}")?;
    }
    if !quiet {
        eprintln!(
            "added {} weights layer(s) from {} in {:.1}s",
            new_layers.len(),
            weights,
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
