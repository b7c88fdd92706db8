//! `lamina convert`: the same model in another format, in the registry, sending again only
//! what must change (see `lamina_core::convert`).

use std::sync::mpsc::sync_channel;
use std::time::Instant;

use lamina_core::artifact;
use lamina_core::convert::{self, ToCar};
use lamina_core::image::Descriptor;
use lamina_core::layer::LayerInfo;
use lamina_core::registry::UploadConfig;
use lamina_core::Error;

use crate::commands::Ctx;
use crate::error::{Result, WithContext as _};
use crate::net::client::{Chunker, Data, Restart};
use crate::ops::flows::ensure_blobs;
use crate::ops::push::{push_images, NewLayer};
use crate::ops::resolve::{self, PlatformSel};
use crate::store::{self, Loc};
use crate::ui::progress::Progress;

/// Convert a model between formats in the registry: to ModelPack, or to a modelcar.
///
/// --to modelpack: a modelcar (olot's, or lamina's append / affix --modelcar) becomes a
/// ModelPack artifact over the very same blobs (its model layers as ModelPack tar layers, the
/// base image's layers left out), and so do a KitOps ModelKit, a Docker model and a ModelPack
/// with the old cnai names: only a config and a manifest are uploaded, the layers are mounted. --to modelcar: a ModelPack goes onto --base as a modelcar: tar layers already under
/// models/ are mounted, raw files are wrapped into tars at /models/PATH as they stream registry
/// to registry, with no local copy.
///
/// Examples:
///   lamina convert reg/me/model-car:v1 reg/me/model:v1-modelpack --to modelpack
///   lamina convert reg/me/model:v1 reg/me/model-car:v1 --to modelcar --base reg/library/busybox
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The model to convert.
    #[arg(value_name = "SRC")]
    pub src: String,
    /// Where the converted model goes.
    #[arg(value_name = "DEST")]
    pub dest: String,
    /// The format to make.
    #[arg(long, value_parser = ["modelpack", "modelcar"])]
    pub to: String,
    /// The image a modelcar's files go on (with --to modelcar).
    #[arg(short = 'b', long, value_name = "REF")]
    pub base: Option<String>,
    /// The model's name in a ModelPack config [default: the repository's last part].
    #[arg(long)]
    pub name: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `convert`; prints `dest@sha256:...`.
pub fn run(ctx: &mut Ctx, a: Args) -> Result<()> {
    let t0 = Instant::now();
    let src = ctx.source("SRC", &a.src)?;
    let dest = ctx.dest("DEST", &a.dest)?;
    let base = match (a.to.as_str(), &a.base) {
        ("modelcar", Some(b)) => Some(ctx.source("--base", b)?),
        ("modelcar", None) => {
            return Err(crate::commands::usage(
                "--to modelcar needs --base IMAGE: the image the model files go on (busybox, \
                 a serving runtime)",
            ))
        }
        (_, Some(_)) => return Err(crate::commands::usage("--base goes with --to modelcar")),
        _ => None,
    };
    let quiet = ctx.quiet;
    let client = &mut ctx.client;
    let img = resolve::fetch_one(client, &src, &PlatformSel::parse(None)?)?;
    let config = resolve::config(client, &src, &img.manifest)?;
    let read = artifact::read(&img.manifest, &config)?;
    let (digest, sent) = match base {
        None => {
            if matches!(read.format, artifact::Format::ModelPack { legacy: false }) {
                return Err(format!("{src} is a ModelPack artifact already").into());
            }
            let mp = if read.format.is_artifact() {
                // a ModelKit, a Docker model, a ModelPack with the cnai names
                convert::artifact_to_modelpack(&read, &img.manifest.layers()?, a.name.as_deref())
            } else {
                let name = a
                    .name
                    .clone()
                    .or_else(|| src.name().rsplit('/').next().map(str::to_string));
                convert::modelcar_to_modelpack(&img.manifest, &config, name.as_deref())
            }
            .context(|| format!("SRC {src}"))?;
            ensure_blobs(client, &src, &dest, &mp.layers, quiet)?;
            let d = store::put_modelpack(client, &dest, mp.config, &mp.layers)?;
            (d, 0u64)
        }
        Some(base) => {
            if !matches!(read.format, artifact::Format::ModelPack { .. }) {
                return Err(format!(
                    "{src} is a {}, not a ModelPack artifact",
                    read.format.name()
                )
                .into());
            }
            let plan = convert::modelpack_to_modelcar(&read, &img.manifest.layers()?)
                .context(|| format!("SRC {src}"))?;
            let (mut images, mut index, configs) = crate::commands::affix::base_at_dest(
                client,
                &base,
                &dest,
                &PlatformSel::parse(None)?,
                None,
                quiet,
            )?;
            let keep: Vec<Descriptor> = plan
                .iter()
                .filter_map(|p| match p {
                    ToCar::Keep { source, .. } => Some(source.clone()),
                    ToCar::Wrap { .. } => None,
                })
                .collect();
            ensure_blobs(client, &src, &dest, &keep, quiet)?;
            let created = resolve::history_time();
            let mut layers = Vec::new();
            let mut sent = 0u64;
            for p in &plan {
                layers.push(match p {
                    ToCar::Keep {
                        source,
                        compression,
                        diff_id,
                        path,
                    } => NewLayer {
                        compression: *compression,
                        digest: source.digest.clone(),
                        size: source.size,
                        diff_id: diff_id.clone(),
                        history: convert::car_history(path, &created),
                        annotations: convert::car_annotations(path),
                    },
                    ToCar::Wrap { source, path } => {
                        let info = wrap(client, &src, &dest, source, path, quiet)?;
                        sent += info.size;
                        NewLayer {
                            compression: info.compression,
                            digest: info.digest,
                            size: info.size,
                            diff_id: info.diff_id,
                            history: convert::car_history(path, &created),
                            annotations: convert::car_annotations(path),
                        }
                    }
                });
            }
            let d = push_images(
                client,
                &dest,
                &mut images,
                configs,
                &mut index,
                &layers,
                &[],
                &[],
                quiet,
            )?;
            (d, sent)
        }
    };
    crate::commands::pushed(
        &dest,
        &digest,
        a.json,
        serde_json::json!({
            "format": a.to,
            "bytesSent": sent,
            "seconds": t0.elapsed().as_secs_f64(),
        }),
    )?;
    if !quiet {
        eprintln!(
            "converted to {} in {:.1}s ({} of layer bytes sent, the rest mounted or found)",
            a.to,
            t0.elapsed().as_secs_f64(),
            crate::ui::progress::human(sent)
        );
    }
    Ok(())
}

/// Streams raw file `source` of `src` into `dest` as a tar layer holding it at
/// `/models/<path>`: tar header, the file's bytes (verified as they come), padding and end
/// blocks, hashed as they go up. A lost upload downloads the file again.
fn wrap(
    client: &mut crate::net::client::Client,
    src: &Loc,
    dest: &Loc,
    source: &Descriptor,
    path: &str,
    quiet: bool,
) -> Result<LayerInfo> {
    let mtime = crate::ops::build::source_date_epoch().unwrap_or(0);
    let header = convert::wrap_header(path, source.size, mtime)?;
    let trailer = lamina_core::pack::tar_trailer(source.size);
    // streamed: 1 MiB pieces, not chunk-sized buffers
    let chunk = 1usize << 20;
    let mut reopen = store::reopener(client, src, &source.digest);
    let what = format!("{path} ({}) from {src}", source.digest);
    let (size, digest) = (source.size, source.digest.clone());
    let source = source.clone();
    let make = move |body: std::result::Result<
        Box<dyn std::io::Read + Send>,
        crate::error::Error,
    >| {
        let (tx, rx) = sync_channel::<Data>(1);
        let (header, trailer, want, what) = (
            header.clone(),
            trailer.clone(),
            source.clone(),
            what.clone(),
        );
        std::thread::spawn(move || {
            let mut ch = Chunker::new(chunk, tx);
            let wrap = (header, trailer);
            let r = body
                .map_err(|e| Error::Io {
                    what: what.clone(),
                    reason: e.to_string(),
                })
                .and_then(|body| {
                    crate::ops::build::stored(body, &what, Some(&want), Some(&wrap), None, &mut ch)
                });
            ch.done(r);
        });
        rx
    };
    let first = store::open_blob(client, src, &digest)?;
    let rx = make(Ok(first));
    let restart: Restart = Box::new(move || make(reopen()));
    let cfg = UploadConfig {
        chunk_max: chunk as u64,
        monolithic_max: chunk as u64,
        stream: true,
        ..UploadConfig::default()
    };
    let mut p = Progress::new(format!("wrap {path}"), Some(size), quiet);
    let identity = format!("modelcar wrap of {digest} at {path}");
    let (_, info) = store::put_stream(
        client,
        dest,
        cfg,
        rx,
        Some(restart),
        &mut p,
        Some(&identity),
    )?;
    p.finish(info.size);
    Ok(info)
}
