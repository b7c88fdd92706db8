//! `lamina remix`: the weights layers of one image on top of another, without downloading a
//! layer: blobs are mounted across repositories, or streamed registry to registry.

use lamina_core::artifact::{self, Kind};
use lamina_core::convert::{self, To};
use lamina_core::image::{remixed_history, weights_layers};
use lamina_core::media;
use lamina_core::pack;
use lamina_core::target::Target;
use lamina_core::Error;

use crate::commands::convert::make;
use crate::commands::Ctx;
use crate::error::{Result, WithContext as _};
use crate::net::client::Client;
use crate::ops::flows::{copy_other_platforms, ensure_blobs};
use crate::ops::push::{push_images, NewLayer};
use crate::ops::resolve::{self, Image, PlatformSel, Top};
use crate::store::{self, Loc};

/// Put the weights layers of one image on top of another, without downloading a layer.
///
/// Layers are mounted across repositories, or streamed registry to registry. The new history
/// entries keep the `# weights` mark, the diff_ids come from the weights image's config.
///
/// With a model artifact (ModelPack, ModelKit, Docker model) or a modelcar as --weights, its
/// weight and weight config files move: onto an image as modelcar layers under /models, onto
/// an artifact in place of its own weights and weight configs (its docs, code and data stay;
/// the config takes the new weights' facts). Files picked with --layer instead replace the
/// base's files of the same path and are added beside the others. A layer is re-packed, as it
/// streams, only where the base's format cannot hold it as it is.
///
/// Examples:
///   lamina remix --base r8.im/me/base --weights r8.im/me/model:v1 --dest r8.im/me/model:v2
///   lamina remix --base reg/library/busybox --weights reg/me/model:v1-modelpack --dest reg/me/car:v1
///   lamina remix --base reg/me/model:v1-kit --weights reg/me/finetune:v2 --dest reg/me/model:v2-kit
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
    /// instead of its weights layers (of an artifact: its weights and weight configs).
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
    let top = resolve::fetch(client, &base, &sel)?;
    // a model artifact on either side: its files move as files
    let wformat = artifact::read(&w.manifest, &wconfig)?.format;
    let base_artifact = match &top {
        Top::Single(i) => {
            let c = resolve::config(client, &base, &i.manifest)?;
            artifact::read(&i.manifest, &c)?
                .format
                .is_artifact()
                .then_some((i.clone(), c))
        }
        Top::Index { .. } => None,
    };
    if wformat.is_artifact() || base_artifact.is_some() {
        let m = Model {
            weights: &weights,
            w: &w,
            wconfig: &wconfig,
            base: &base,
            dest: &dest,
        };
        return remix_model(client, m, base_artifact, &sel, &a, quiet, t0);
    }
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

    let (mut images, mut index) = match top {
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
    crate::commands::pushed(
        &dest,
        &d,
        a.json,
        serde_json::json!({
            "layers": new_layers.iter().map(|l| serde_json::json!({"digest": l.digest.to_string(), "size": l.size, "diffId": l.diff_id.to_string()})).collect::<Vec<_>>(),
            "seconds": t0.elapsed().as_secs_f64(),
        }),
    )?;
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

/// The two sides of a remix with a model artifact in it.
struct Model<'a> {
    weights: &'a Loc,
    w: &'a Image,
    wconfig: &'a lamina_core::image::Config,
    base: &'a Loc,
    dest: &'a Loc,
}

/// `remix` with a model artifact (or a modelcar's files) on a side: the weights' files, and
/// their configs (`config.json`, tokenizers), packed as the base's format holds files.
/// Onto an image they become modelcar layers under `/models`; onto an artifact they take the
/// place of its weights and weight configs (those go, with their diff_ids and Kitfile
/// entries), its docs, code and data stay, and the config takes the weights' facts. Layers
/// whose packing the base's format holds are mounted; the others stream registry to registry.
fn remix_model(
    client: &mut Client,
    m: Model<'_>,
    base_artifact: Option<(Image, lamina_core::image::Config)>,
    sel: &PlatformSel,
    a: &Args,
    quiet: bool,
    t0: std::time::Instant,
) -> Result<()> {
    let Model {
        weights,
        w,
        wconfig,
        base,
        dest,
    } = m;
    let origin = match convert::source(&w.manifest, wconfig, None) {
        Err(Error::Usage { reason }) => {
            return Err(crate::commands::usage(format!(
                "--weights {weights}: {reason}; weights go between images as `# weights` \
                 layers, and into a model artifact from an artifact or a modelcar"
            )))
        }
        r => r.context(|| format!("--weights {weights}"))?,
    };
    let picked: Vec<convert::Source> = if a.layers.is_empty() {
        origin
            .layers
            .iter()
            .filter(|s| matches!(s.kind, Kind::Weight | Kind::Config))
            .cloned()
            .collect()
    } else {
        let mut out = Vec::new();
        for &i in &a.layers {
            let s = origin.layers.iter().find(|s| s.index == i).ok_or_else(|| {
                crate::commands::usage(format!(
                    "--layer {i}: not a file layer of {weights} (see `lamina layers {weights}`)"
                ))
            })?;
            out.push(s.clone());
        }
        out
    };
    if picked.is_empty() {
        return Err(crate::commands::usage(format!(
            "{weights}: no weight or weight config layers; pick layers with --layer N (see \
             `lamina layers {weights}`)"
        )));
    }
    let from = match origin.format {
        artifact::Format::Image => "modelcar",
        f => f.short(),
    };
    let (digest, format, sent, dropped) = match base_artifact {
        None => {
            let to = To::Modelcar;
            let steps: Vec<_> = picked.iter().map(|s| convert::step(s, to)).collect();
            let (mut images, mut index, configs) =
                resolve::base_at_dest(client, base, dest, sel, a.platform.as_deref(), quiet)?;
            let (made, sent) = make(client, weights, dest, &picked, &steps, to, quiet)?;
            let layers = convert::car_layers(&picked, made, &resolve::history_time());
            let d = push_images(
                client,
                dest,
                &mut images,
                configs,
                &mut index,
                &layers,
                &[],
                &[],
                quiet,
            )?;
            (d, "modelcar", sent, Vec::new())
        }
        Some((b, bconfig)) => {
            if a.platform.is_some() {
                return Err(crate::commands::usage(format!(
                    "--platform: --base {base} is a model artifact, which has no platforms"
                )));
            }
            let read = artifact::read(&b.manifest, &bconfig)?;
            let target = Target::of(read.format).ok_or_else(|| {
                crate::commands::usage(format!(
                    "--base {base}: a {} artifact takes no new files: `lamina convert` it to a \
                     current format first",
                    read.format.name()
                ))
            })?;
            let to = To::Artifact(target);
            // the weights (the default): the base's weights and weight configs go, the rest
            // stays; layers picked with --layer replace the base's files of the same path
            // only (as affix does) and the others are added
            let gone: Vec<&artifact::Part> = if a.layers.is_empty() {
                read.parts
                    .iter()
                    .filter(|p| matches!(p.kind, Kind::Weight | Kind::Config))
                    .collect()
            } else {
                Vec::new()
            };
            let drop: Vec<usize> = gone.iter().map(|p| p.index).collect();
            let dropped: Vec<String> = gone
                .iter()
                .map(|p| {
                    p.path
                        .clone()
                        .unwrap_or_else(|| format!("layer {}", p.index))
                })
                .collect();
            // the weights' facts (parameters, precision...) go with all of its weights only
            let all_weights = origin
                .layers
                .iter()
                .filter(|s| s.kind == Kind::Weight)
                .all(|s| picked.iter().any(|p| p.index == s.index));
            let stay: Vec<_> = b
                .manifest
                .layers()?
                .into_iter()
                .enumerate()
                .filter(|(i, _)| !drop.contains(i))
                .map(|(_, l)| l)
                .collect();
            ensure_blobs(client, base, dest, &stay, quiet).context(|| format!("--base {base}"))?;
            let steps: Vec<_> = picked.iter().map(|s| convert::step(s, to)).collect();
            let (made, sent) = make(client, weights, dest, &picked, &steps, to, quiet)?;
            let files = picked
                .iter()
                .zip(made)
                .map(|(s, m)| convert::file_layer(&origin, s, m))
                .collect::<std::result::Result<Vec<_>, _>>()
                .context(|| format!("--weights {weights}"))?;
            let mtime = crate::ops::build::source_date_epoch().unwrap_or(0);
            let att = pack::attach(
                &b.manifest,
                &bconfig,
                &pack::Changes {
                    drop: &drop,
                    add: &files,
                    facts: all_weights.then_some(&origin.model),
                },
                mtime,
            )?;
            store::put_bytes(client, dest, att.config)?;
            let d =
                store::put_manifest(client, dest, dest.tag(), media::OCI_MANIFEST, att.manifest)?;
            (d, target.name(), sent, dropped)
        }
    };
    crate::commands::pushed(
        dest,
        &digest,
        a.json,
        serde_json::json!({
            "format": format,
            "from": from,
            "layers": picked.iter().map(|s| serde_json::json!({
                "path": s.path, "kind": s.kind.name(), "from": s.index,
            })).collect::<Vec<_>>(),
            "dropped": dropped,
            "bytesSent": sent,
            "seconds": t0.elapsed().as_secs_f64(),
        }),
    )?;
    if !quiet {
        eprintln!(
            "put {} file layer(s) of {weights} into {format} {dest} in {:.1}s ({} sent, the rest \
             mounted or found){}",
            picked.len(),
            t0.elapsed().as_secs_f64(),
            crate::ui::progress::human(sent),
            if dropped.is_empty() {
                String::new()
            } else {
                format!("; replaced {}", dropped.join(", "))
            }
        );
    }
    Ok(())
}
