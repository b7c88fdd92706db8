//! `lamina convert`: the same model in another format, in the registry, sending again only
//! what must change (see `lamina_core::convert`).

use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use lamina_core::artifact::Packing;
use lamina_core::compress::Compression;
use lamina_core::convert::{self, Made, Step, To};
use lamina_core::registry::UploadConfig;
use lamina_core::retar::{Mode, Reshape};
use lamina_core::{target, Error};

use crate::commands::Ctx;
use crate::error::{Result, WithContext as _};
use crate::net::client::{Chunker, Data, Restart};
use crate::ops::build::{stored, Shape};
use crate::ops::flows::ensure_blobs;
use crate::ops::push::push_images;
use crate::ops::resolve::{self, PlatformSel};
use crate::store::{self, Loc};
use crate::ui::progress::Progress;

/// Convert a model between formats in the registry: ModelPack, ModelKit, Docker model, modelcar.
///
/// Each layer keeps its bytes where the new format can hold them as they are: those blobs are
/// mounted, and only a config and a manifest are uploaded (a modelcar made ModelPack and back
/// costs nothing else). Where the packing must change, the layer streams registry to registry
/// with no local copy: a raw file is put into a tar (ModelKit, modelcar), a tar of one file
/// becomes the raw file (Docker), a tar not under models/ is re-packed there (modelcar), a
/// zstd tar is decompressed (ModelKit). Works from every format lamina reads, cnai-named
/// ModelPacks included.
///
/// Examples:
///   lamina convert reg/me/model-car:v1 reg/me/model:v1-modelpack --to modelpack
///   lamina convert reg/me/model:v1 reg/me/model-car:v1 --to modelcar --base reg/library/busybox
///   lamina convert reg/me/model:v1 reg/me/model:v1-kit --to modelkit
///   lamina convert reg/me/model:v1-kit reg/me/model:v1-docker --to docker
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
    #[arg(long, value_parser = ["modelpack", "modelkit", "docker", "modelcar"])]
    pub to: String,
    /// The image a modelcar's files go on (with --to modelcar).
    #[arg(short = 'b', long, value_name = "REF")]
    pub base: Option<String>,
    /// The model's name in the new config [default: the source's, or the repository's last
    /// part].
    #[arg(long)]
    pub name: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `convert`; prints `dest@sha256:...`.
pub fn run(ctx: &mut Ctx, a: Args) -> Result<()> {
    let t0 = Instant::now();
    let to = To::parse(&a.to).ok_or_else(|| Error::internal("an unknown --to passed clap"))?;
    let src = ctx.source("SRC", &a.src)?;
    let dest = ctx.dest("DEST", &a.dest)?;
    let base = match (to, &a.base) {
        (To::Modelcar, Some(b)) => Some(ctx.source("--base", b)?),
        (To::Modelcar, None) => {
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
    let mut origin = convert::source(&img.manifest, &config, a.name.as_deref())
        .context(|| format!("SRC {src}"))?;
    if origin.model.name.is_none() {
        origin.model.name = src.name().rsplit('/').next().map(str::to_string);
    }
    let from = match origin.format {
        lamina_core::artifact::Format::Image => "modelcar",
        f => f.short(),
    };
    let steps = convert::plan(&origin, to).context(|| format!("SRC {src}"))?;
    let (made, sent) = make(client, &src, &dest, &origin.layers, &steps, to, quiet)?;
    let digest = match (to, base) {
        (To::Artifact(t), _) => {
            let files = origin
                .layers
                .iter()
                .zip(made)
                .map(|(s, m)| convert::file_layer(&origin, s, m))
                .collect::<std::result::Result<Vec<_>, _>>()
                .context(|| format!("SRC {src}"))?;
            let mtime = crate::ops::build::source_date_epoch().unwrap_or(0);
            let out = target::assemble(t, &origin.model, &files, mtime)?;
            store::put_artifact(client, &dest, out)?
        }
        (To::Modelcar, Some(base)) => {
            let (mut images, mut index, configs) = crate::ops::resolve::base_at_dest(
                client,
                &base,
                &dest,
                &PlatformSel::parse(None)?,
                None,
                quiet,
            )?;
            let layers = convert::car_layers(&origin.layers, made, &resolve::history_time());
            push_images(
                client,
                &dest,
                &mut images,
                configs,
                &mut index,
                &layers,
                &[],
                &[],
                quiet,
            )?
        }
        (To::Modelcar, None) => return Err(Error::internal("a modelcar without a base").into()),
    };
    crate::commands::pushed(
        &dest,
        &digest,
        a.json,
        serde_json::json!({
            "format": to.name(),
            "from": from,
            "bytesSent": sent,
            "seconds": t0.elapsed().as_secs_f64(),
        }),
    )?;
    if !quiet {
        eprintln!(
            "converted {} to {} in {:.1}s ({} of layer bytes sent, the rest mounted or found)",
            from,
            to.name(),
            t0.elapsed().as_secs_f64(),
            crate::ui::progress::human(sent)
        );
    }
    Ok(())
}

/// The layers `sources` of `src` made into `to`'s at `dest`, each by its step: kept ones
/// mounted (or found), the rest re-packed as they stream; a tar [`Step::Unwrap`] finds several
/// files in stays a folder's tar. Gives what each became, and the layer bytes sent.
pub(crate) fn make(
    client: &mut crate::net::client::Client,
    src: &Loc,
    dest: &Loc,
    sources: &[convert::Source],
    steps: &[Step],
    to: To,
    quiet: bool,
) -> Result<(Vec<Made>, u64)> {
    let keep = convert::kept_layers(sources, steps);
    ensure_blobs(client, src, dest, &keep, quiet)?;
    let mut made = Vec::new();
    let mut sent = 0u64;
    for (s, step) in sources.iter().zip(steps) {
        let m = match step {
            Step::Keep => Made::kept(s),
            Step::Unwrap => match repack(client, src, dest, s, step, to, quiet) {
                Ok(m) => m,
                // a folder's tar: a tar it stays, uncompressed
                Err(e) if several_files(&e) => {
                    let again = Step::fallback(s.packing);
                    if !quiet {
                        crate::ui::progress::warn(&format!(
                            "{} holds more than one file: it goes as a folder's tar",
                            s.path
                        ));
                    }
                    if again.sends() {
                        repack(client, src, dest, s, &again, to, quiet)?
                    } else {
                        ensure_blobs(client, src, dest, std::slice::from_ref(&s.layer), quiet)?;
                        Made::kept(s)
                    }
                }
                Err(e) => return Err(e),
            },
            _ => repack(client, src, dest, s, step, to, quiet)?,
        };
        if step.sends() {
            sent += m.size;
        }
        made.push(m);
    }
    Ok((made, sent))
}

/// Whether `e` is, or was caused by, a tar of more than one file that was to be one raw file.
fn several_files(e: &crate::error::Error) -> bool {
    crate::ui::report::chain(e).any(|c| {
        let mut core = c.downcast_ref::<Error>();
        while let Some(Error::RetriesExhausted { last, .. }) = core {
            core = Some(&**last);
        }
        matches!(core, Some(Error::SeveralFiles { .. }))
    })
}

/// Streams layer `s` of `src` into `dest` made over by `step` (see [`convert::Step`]): the
/// source's bytes verified as they come, decompressed or wrapped, hashed as they go up. A lost
/// upload downloads the layer again.
fn repack(
    client: &mut crate::net::client::Client,
    src: &Loc,
    dest: &Loc,
    s: &convert::Source,
    step: &Step,
    to: To,
    quiet: bool,
) -> Result<Made> {
    let mtime = crate::ops::build::source_date_epoch().unwrap_or(0);
    let compression = match s.packing {
        Packing::Tar(c) => c,
        Packing::Raw => Compression::None,
    };
    let under = (to == To::Modelcar).then_some(convert::MODELS);
    let wrap = match step {
        Step::Wrap => Some((
            convert::wrap_header(under, &s.path, s.layer.size, false, mtime)?,
            lamina_core::pack::tar_trailer(s.layer.size),
        )),
        _ => None,
    };
    // a wrapped file's tar is as long as we know; what a re-packed tar becomes is not known
    // before it is read
    let total = wrap
        .as_ref()
        .map(|(h, t)| h.len() as u64 + s.layer.size + t.len() as u64);
    let mode = match step {
        Step::Under => Some(Mode::Under(convert::MODELS.into())),
        Step::Unwrap => Some(Mode::File),
        _ => None,
    };
    let found: Arc<Mutex<Option<(String, u64)>>> = Arc::new(Mutex::new(None));
    // streamed: 1 MiB pieces, not chunk-sized buffers
    let chunk = 1usize << 20;
    let mut reopen = store::reopener(client, src, &s.layer.digest);
    let what = format!("{} ({}) from {src}", s.path, s.layer.digest);
    let make = {
        let (want, what, found) = (s.layer.clone(), what.clone(), Arc::clone(&found));
        move |body: std::result::Result<Box<dyn std::io::Read + Send>, crate::error::Error>| {
            let (tx, rx) = sync_channel::<Data>(1);
            let (wrap, mode, want, what, found) = (
                wrap.clone(),
                mode.clone(),
                want.clone(),
                what.clone(),
                Arc::clone(&found),
            );
            std::thread::spawn(move || {
                let mut ch = Chunker::new(chunk, tx);
                let r = body
                    .map_err(|e| Error::Io {
                        what: what.clone(),
                        reason: e.to_string(),
                    })
                    .and_then(|body| match &wrap {
                        Some(w) => stored(body, &what, Some(&want), Shape::Wrap(w), None, &mut ch),
                        // every other step re-packs the source's tar
                        None => {
                            let mut re = Reshape::new(compression, mode, mtime)?;
                            let shape = Shape::Reshape(&mut re);
                            let r = stored(body, &what, Some(&want), shape, None, &mut ch);
                            if let (Ok(mut f), Some(file)) = (found.lock(), re.file()) {
                                *f = Some(file.clone());
                            }
                            r
                        }
                    });
                ch.done(r);
            });
            rx
        }
    };
    let first = store::open_blob(client, src, &s.layer.digest)?;
    let rx = make(Ok(first));
    let restart: Restart = Box::new(move || make(reopen()));
    let cfg = UploadConfig {
        chunk_max: chunk as u64,
        monolithic_max: chunk as u64,
        stream: true,
        ..UploadConfig::default()
    };
    let verb = match step {
        Step::Wrap => "wrap",
        Step::Unwrap => "unwrap",
        Step::Under => "re-pack",
        _ => "decompress",
    };
    let mut p = Progress::new(format!("{verb} {}", s.path), total, quiet);
    let identity = format!("convert {verb} of {} to {}", s.layer.digest, to.name());
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
    let file = found.lock().ok().and_then(|f| f.clone());
    Ok(Made {
        digest: info.digest,
        size: info.size,
        diff_id: info.diff_id,
        packing: if matches!(step, Step::Unwrap) {
            Packing::Raw
        } else {
            Packing::Tar(Compression::None)
        },
        file,
    })
}
