//! `lamina pack`: a model folder (or files) straight into a registry as a model artifact
//! (ModelPack, ModelKit, Docker model; see `lamina_core::target`), with no local copy: one
//! uncompressed layer per file (raw for ModelPack, as modctl, Docker's `docker model package
//! --format cncf` and Docker Hub's `ai/*` models hold them), each file's kind
//! from its name (modctl's lists), the config filled from the files (the weights' headers for
//! the format, parameters and precision; `config.json` for the family), the layers uploaded in
//! parallel, each one resumable.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use lamina_core::artifact::{Kind, Packing};
use lamina_core::pack::{self, Facts, FileLayer, Model};
use lamina_core::registry::UploadConfig;
use lamina_core::tar::{EntryKind, PlannedEntry};
use lamina_core::target::{self, Target};
use lamina_core::{Digest, Error};

use crate::commands::Ctx;
use crate::error::Result;
use crate::net::client::{Chunker, Client, Data, Options, Restart};
use crate::ops::build::source_date_epoch;
use crate::store::known::{Known, Stat};
use crate::store::{self, Loc};
use crate::ui::progress::{human, Progress};

/// Pack model files into a registry as a model artifact, with no local copy.
///
/// One layer per file; each layer's kind (weight, config, doc, code) comes from the file's
/// name, its path is kept (unet/ and vae/ may hold files of the same name). The config says the
/// format, parameter count and precision the weights' headers (safetensors, GGUF) give, and the
/// family config.json gives. Layers upload in parallel (-j), each resumable by running the
/// command again; the manifest goes last. Hidden files, __pycache__ and *.pyc are left out, as
/// modctl does. Packing the same folder again reads and sends only the files that changed: each
/// file's blob digest is kept (in ~/.cache/lamina/digests, by the file's inode, size and times)
/// and a file that is unchanged, with its blob at the destination, is not read again.
///
/// Formats (--format):
///   modelpack  CNCF ModelPack, raw layers (what modctl, docker model package --format cncf and
///              Docker Hub's ai/* models hold); --tar puts each file in a tar
///   modelkit   KitOps ModelKit: a tar per file, the Kitfile (made from the files) as config
///   docker     Docker model, config v0.2: a raw layer per file (docker model pull, model-runner)
///   modelcar   an image with the files under /models on --base (KServe modelcars, olot)
///
/// Examples:
///   lamina pack ./Qwen2.5-0.5B/ --dest registry.example.com/models/qwen:0.5b
///   lamina pack ~/.cache/huggingface/hub/models--x--y/snapshots/abc/ --dest 127.0.0.1:5000/y --name y
///   lamina pack ./tiny/ --dest 127.0.0.1:5000/tiny:kit --format modelkit
///   lamina pack model.gguf README.md --dest oci:layout:tiny
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The model folder's contents, or files (each at its name).
    #[arg(value_name = "FILE_OR_DIR", required = true)]
    pub inputs: Vec<PathBuf>,
    /// Where to push the artifact (a registry reference, or oci:DIR[:TAG]).
    #[arg(short = 'd', long, value_name = "REF")]
    pub dest: String,
    /// The model's name in the config [default: the folder's name].
    #[arg(long)]
    pub name: Option<String>,
    /// Each file in a tar layer (`...v1.tar`, one entry at its path, owner 0:0, mtime
    /// SOURCE_DATE_EPOCH) instead of raw, for runtimes that unpack tars; Docker's model runner
    /// and CRI-O mount only raw layers.
    #[arg(long, conflicts_with = "raw")]
    pub tar: bool,
    /// Each file one raw layer, the blob the file itself (ModelPack's default, what modctl and
    /// Docker Hub's ai/* models hold); for a ModelKit or a modelcar, which hold tars, an error.
    #[arg(long)]
    pub raw: bool,
    /// The format to make: a CNCF ModelPack (raw layers), a KitOps ModelKit (a tar per file,
    /// the Kitfile as the config), a Docker model (config v0.2, a raw layer per file, what
    /// docker model pull and model-runner read), or a modelcar on --base (as affix --modelcar
    /// makes it).
    #[arg(long, default_value = "modelpack", value_parser = ["modelpack", "modelkit", "docker", "modelcar"])]
    pub format: String,
    /// The image a modelcar's files go on (with --format modelcar).
    #[arg(short = 'b', long, value_name = "REF")]
    pub base: Option<String>,
    /// Layers uploaded at once.
    #[arg(short, long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub jobs: u64,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One file to pack.
#[derive(Debug, Clone)]
struct Input {
    path: String,
    source: PathBuf,
    size: u64,
    executable: bool,
    kind: Kind,
    guessed: bool,
    /// Raw, or in a tar.
    packing: Packing,
    /// A tar holds the directories above the file (kit's do; modctl's do not).
    dirs: bool,
    /// A tar holds the file under this folder (a modelcar's `models`).
    under: Option<&'static str>,
}

/// Runs `pack`; prints `dest@sha256:...`.
pub fn run(ctx: &mut Ctx, a: Args) -> Result<()> {
    let t0 = Instant::now();
    let target = match (a.format.as_str(), &a.base) {
        ("modelcar", Some(_)) if a.tar => {
            return Err(crate::commands::usage(
                "--tar is for ModelPack: a modelcar always holds its files in tars",
            ))
        }
        ("modelcar", _) if a.raw => {
            return Err(crate::commands::usage(
                "--raw: a modelcar always holds its files in tars",
            ))
        }
        ("modelcar", Some(base)) => {
            let base = ctx.source("--base", base)?;
            return modelcar(ctx, &a, &base, t0);
        }
        ("modelcar", None) => {
            return Err(crate::commands::usage(
                "--format modelcar needs --base IMAGE: the image the model files go on \
                 (busybox, a serving runtime)",
            ))
        }
        (_, Some(_)) => return Err(crate::commands::usage("--base goes with --format modelcar")),
        (f, None) => {
            Target::parse(f).ok_or_else(|| Error::internal(format!("--format {f} passed clap")))?
        }
    };
    if a.raw && target.packing(false) != Packing::Raw {
        return Err(crate::commands::usage(format!(
            "--raw: a {} always holds its files in tars",
            target.name()
        )));
    }
    if a.tar && target != Target::ModelPack {
        return Err(crate::commands::usage(format!(
            "--tar is for ModelPack: a {} always holds its files {}",
            target.name(),
            match target.packing(false) {
                Packing::Raw => "raw",
                _ => "in tars",
            }
        )));
    }
    let dest = ctx.dest("--dest", &a.dest)?;
    let quiet = ctx.quiet;
    let mut inputs = planned(&a.inputs, "", quiet)?;
    pack_as(
        &mut inputs,
        target.packing(a.tar),
        target == Target::ModelKit,
        None,
    );
    let model = describe(&a, &inputs)?;
    let Uploaded {
        layers,
        total,
        reused,
    } = upload_counted(ctx, &dest, &inputs, a.jobs as usize, "pack")?;
    let mtime = source_date_epoch().unwrap_or(0);
    let made = target::assemble(target, &model, &layers, mtime)?;
    let d = store::put_artifact(&mut ctx.client, &dest, made)?;
    crate::commands::pushed(
        &dest,
        &d,
        a.json,
        serde_json::json!({
            "format": target.name(),
            "model": {
                "name": model.name, "family": model.family, "format": model.format,
                "paramSize": model.param_size, "precision": model.precision,
                "architecture": model.architecture, "quantization": model.quantization,
            },
            "layers": layers.iter().map(|l| serde_json::json!({
                "path": l.path, "kind": l.kind.name(), "guessed": l.guessed,
                "digest": l.digest.to_string(), "size": l.size,
            })).collect::<Vec<_>>(),
            "reused": reused,
            "seconds": t0.elapsed().as_secs_f64(),
        }),
    )?;
    if !quiet {
        eprintln!(
            "packed {} files ({}){} in {:.1}s",
            layers.len(),
            human(total),
            reused_note(reused),
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// `pack --format modelcar`: each file in a tar at `/models/<path>` (the directories above it
/// included), uploaded as the other formats' layers are, then the image: `base` with those
/// layers on top, olot's annotations on each.
fn modelcar(ctx: &mut Ctx, a: &Args, base: &Loc, t0: Instant) -> Result<()> {
    use lamina_core::convert;
    if a.name.is_some() {
        return Err(crate::commands::usage(
            "--name is not for --format modelcar: an image has no model name",
        ));
    }
    let dest = ctx.dest("--dest", &a.dest)?;
    let quiet = ctx.quiet;
    let mut inputs = planned(&a.inputs, "", quiet)?;
    let tar = Packing::Tar(lamina_core::compress::Compression::None);
    pack_as(&mut inputs, tar, true, Some(convert::MODELS));
    let sel = crate::ops::resolve::PlatformSel::parse(None)?;
    let (mut images, mut index, configs) =
        crate::ops::resolve::base_at_dest(&mut ctx.client, base, &dest, &sel, None, quiet)?;
    let Uploaded {
        layers,
        total,
        reused,
    } = upload_counted(ctx, &dest, &inputs, a.jobs as usize, "pack")?;
    let created = crate::ops::resolve::history_time();
    let new: Vec<crate::ops::push::NewLayer> = layers
        .iter()
        .map(|l| crate::ops::push::NewLayer {
            compression: lamina_core::compress::Compression::None,
            digest: l.digest.clone(),
            size: l.size,
            diff_id: l.diff_id.clone(),
            history: convert::car_history(&l.path, &created),
            annotations: convert::car_annotations(&l.path),
        })
        .collect();
    let d = crate::ops::push::push_images(
        &mut ctx.client,
        &dest,
        &mut images,
        configs,
        &mut index,
        &new,
        &[],
        &[],
        quiet,
    )?;
    crate::commands::pushed(
        &dest,
        &d,
        a.json,
        serde_json::json!({
            "format": "modelcar",
            "layers": layers.iter().map(|l| serde_json::json!({
                "path": format!("/{}/{}", convert::MODELS, l.path), "kind": l.kind.name(),
                "digest": l.digest.to_string(), "size": l.size,
            })).collect::<Vec<_>>(),
            "reused": reused,
            "seconds": t0.elapsed().as_secs_f64(),
        }),
    )?;
    if !quiet {
        eprintln!(
            "packed {} files ({}){} onto {base} in {:.1}s",
            layers.len(),
            human(total),
            reused_note(reused),
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// How the files go into their layers: raw or in a tar, the tar with the directories above
/// the file (`dirs`), under a folder (`under`).
fn pack_as(inputs: &mut [Input], packing: Packing, dirs: bool, under: Option<&'static str>) {
    for i in inputs {
        i.packing = packing;
        i.dirs = dirs;
        i.under = under;
    }
}

/// [`upload_progress`] with the command's client and options.
fn upload_counted(
    ctx: &mut Ctx,
    dest: &Loc,
    inputs: &[Input],
    jobs: usize,
    verb: &str,
) -> Result<Uploaded> {
    let quiet = ctx.quiet;
    upload_progress(&mut ctx.client, &ctx.opts, dest, inputs, jobs, verb, quiet)
}

/// What [`upload_progress`] did: the layers, the files' total size, and how many of the files
/// were not sent because an earlier run made their blobs and the destination has them.
struct Uploaded {
    layers: Vec<FileLayer>,
    total: u64,
    reused: usize,
}

/// Uploads the files ([`upload_all`]) under one progress line, `verb N files`.
fn upload_progress(
    client: &mut Client,
    opts: &Options,
    dest: &Loc,
    inputs: &[Input],
    jobs: usize,
    verb: &str,
    quiet: bool,
) -> Result<Uploaded> {
    let total: u64 = inputs.iter().map(|i| i.size).sum();
    let mut progress = Progress::new(format!("{verb} {} files", inputs.len()), Some(total), quiet);
    let sent = upload_all(client, opts, dest, inputs, jobs, &mut progress)?;
    progress.finish(total);
    Ok(Uploaded {
        reused: sent.iter().filter(|s| s.reused).count(),
        layers: sent.into_iter().map(|s| s.layer).collect(),
        total,
    })
}

/// `, N unchanged (not sent again)` when some files were there already.
fn reused_note(reused: usize) -> String {
    match reused {
        0 => String::new(),
        n => format!(", {n} unchanged (not sent again)"),
    }
}

/// One file's layer, and whether it was there already ([`already_there`]).
#[derive(Debug, Clone)]
struct Sent {
    layer: FileLayer,
    reused: bool,
}

/// [`plan`], saying how many files were left out.
fn planned(args: &[PathBuf], prefix: &str, quiet: bool) -> Result<Vec<Input>> {
    let (inputs, left_out) = plan(args, prefix)?;
    if !quiet && left_out > 0 {
        crate::ui::progress::warn(&format!(
            "note: {left_out} hidden or cache file(s) left out (as modctl does)"
        ));
    }
    Ok(inputs)
}

/// The files to pack, in path order, and how many were left out. A folder's contents keep
/// their paths; links that point out of it (a Hugging Face cache snapshot's) are followed; a
/// link inside it is packed as the file it names.
fn plan(args: &[PathBuf], prefix: &str) -> Result<(Vec<Input>, usize)> {
    let entries: Vec<PlannedEntry<PathBuf>> = crate::ops::inputs::collect(args, prefix)?;
    let sources: std::collections::HashMap<&str, (&PathBuf, u64, bool)> = entries
        .iter()
        .filter_map(|e| match (&e.kind, &e.source) {
            (EntryKind::File { size, executable }, Some(s)) => {
                Some((e.path.as_str(), (s, *size, *executable)))
            }
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    let mut left_out = 0;
    for e in &entries {
        if e.path.split('/').any(pack::skipped) {
            if !matches!(e.kind, EntryKind::Dir) {
                left_out += 1;
            }
            continue;
        }
        let (source, size, executable) = match &e.kind {
            EntryKind::File { .. } | EntryKind::Hardlink(_) | EntryKind::Symlink(_) => {
                let key = match &e.kind {
                    EntryKind::Hardlink(t) => t.clone(),
                    EntryKind::Symlink(t) => {
                        lamina_core::untar::resolve_link(&e.path, t).unwrap_or_default()
                    }
                    _ => e.path.clone(),
                };
                match sources.get(key.as_str()) {
                    Some((s, size, x)) => ((*s).clone(), *size, *x),
                    None => {
                        return Err(format!(
                            "{}: a link to {key:?}, which is not a file being packed",
                            e.path
                        )
                        .into())
                    }
                }
            }
            EntryKind::Dir => continue,
        };
        let base = e.path.rsplit('/').next().unwrap_or(&e.path);
        let (kind, guessed) = pack::classify(base, size);
        out.push(Input {
            path: e.path.clone(),
            source,
            size,
            executable,
            kind,
            guessed,
            packing: Packing::Raw,
            dirs: false,
            under: None,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    if out.is_empty() {
        return Err("nothing to pack: every file was left out (hidden or caches)".into());
    }
    Ok((out, left_out))
}

/// The config's facts: the name given or the folder's, the weights' headers, `config.json`'s
/// family and dtype.
fn describe(a: &Args, inputs: &[Input]) -> Result<Model> {
    use std::io::Read as _;
    let mut facts: Vec<Facts> = Vec::new();
    for i in inputs.iter().filter(|i| i.kind == Kind::Weight) {
        // as much of the head as the header needs, as core's reader asks for it
        let err = |e: std::io::Error| format!("{}: {e}", i.source.display());
        let mut f = std::fs::File::open(&i.source).map_err(err)?;
        let mut h = pack::HeadReader::new(&i.path);
        let mut buf = Vec::new();
        while let Some(r) = h.next_read() {
            buf.clear();
            let n = (&mut f)
                .take(r.end - r.start)
                .read_to_end(&mut buf)
                .map_err(err)?;
            h.write(&buf);
            if (n as u64) < r.end - r.start {
                break; // the file ended
            }
        }
        facts.extend(h.finish());
    }
    let folder = a
        .inputs
        .iter()
        .find(|p| p.is_dir())
        .and_then(|p| p.canonicalize().ok())
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let mut m = Model {
        name: a.name.clone().or(folder).filter(|n| !n.is_empty()),
        ..Model::default()
    };
    m.fill_from(&facts);
    // transformers' config.json: the family and, when the headers said nothing, the dtype
    if let Some(c) = inputs.iter().find(|i| i.path == "config.json") {
        if c.size < lamina_core::pack::CONFIG_JSON_MAX {
            m.fill_from_config_json(&std::fs::read(&c.source).unwrap_or_default());
        }
    }
    Ok(m)
}

/// Reads `path` into chunks for the uploader as a raw layer's blob (the file itself), or with
/// `wrap` (a tar header and trailer) as a tar layer of it, counting the file's bytes in `done`.
fn build_raw(
    path: PathBuf,
    wrap: Option<(Vec<u8>, Vec<u8>)>,
    chunk: usize,
    done: Arc<AtomicU64>,
    tx: std::sync::mpsc::SyncSender<Data>,
) {
    let mut ch = Chunker::new(chunk, tx);
    let what = path.display().to_string();
    let r = std::fs::File::open(&path)
        .map_err(|e| Error::Io {
            what: what.clone(),
            reason: e.to_string(),
        })
        .and_then(|f| {
            crate::ops::build::stored(
                Box::new(f),
                &what,
                None,
                match wrap.as_ref() {
                    Some(w) => crate::ops::build::Shape::Wrap(w),
                    None => crate::ops::build::Shape::AsIs,
                },
                Some(&done),
                &mut ch,
            )
        });
    ch.done(r);
}

/// Uploads one file as a raw layer of `dest`, restartable (the file is read again) and
/// resumable across runs (named by path, size and modification time).
fn upload_one(client: &mut Client, dest: &Loc, i: &Input, done: &Arc<AtomicU64>) -> Result<Sent> {
    // a streamed upload needs no chunk-sized buffers: 1 MiB pieces keep memory small at any -j
    let chunk = 1usize << 20;
    let mtime = source_date_epoch().unwrap_or(0);
    let wrap = match (i.packing, i.dirs) {
        (Packing::Raw, _) => None,
        (_, false) => Some(pack::file_tar(&i.path, i.size, i.executable, mtime)?),
        // kit's tars hold the directories above the file too
        (_, true) => Some((
            lamina_core::convert::wrap_header(i.under, &i.path, i.size, i.executable, mtime)?,
            pack::tar_trailer(i.size),
        )),
    };
    let spawn = {
        let (path, done) = (i.source.clone(), Arc::clone(done));
        move || {
            let (tx, rx) = sync_channel::<Data>(1);
            let (path, done, wrap) = (path.clone(), Arc::clone(&done), wrap.clone());
            std::thread::spawn(move || build_raw(path, wrap, chunk, done, tx));
            rx
        }
    };
    // what this file made last time, if it is unchanged and the destination still has it
    let stat = Stat::of(&i.source);
    let known = Known::new(
        &i.source,
        &format!(
            "pack {} {} dirs={} under={:?} x={} mtime={mtime}",
            i.packing.name(),
            i.path,
            i.dirs,
            i.under,
            i.executable
        ),
    );
    if let Some(layer) = already_there(client, dest, i, known.as_ref(), stat.as_ref())? {
        done.fetch_add(i.size, Ordering::Relaxed);
        return Ok(Sent {
            layer,
            reused: true,
        });
    }
    let mut spawn: Restart = Box::new(spawn);
    let rx = spawn();
    let cfg = UploadConfig {
        chunk_max: chunk as u64,
        monolithic_max: chunk as u64,
        stream: true,
        ..UploadConfig::default()
    };
    let mtime = std::fs::metadata(&i.source)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let identity = format!(
        "pack {} {} {} {} {mtime}",
        i.packing.name(),
        i.path,
        i.source.display(),
        i.size
    );
    let mut quiet = Progress::new("", Some(i.size), true);
    let (digest, info) = store::put_stream(
        client,
        dest,
        cfg,
        rx,
        Some(spawn),
        &mut quiet,
        Some(&identity),
    )
    .map_err(|e| -> crate::error::Error { format!("{}: {e}", i.path).into() })?;
    if let (Some(k), Some(st)) = (&known, &stat) {
        k.put(st, Stat::of(&i.source).as_ref(), &digest, info.size);
    }
    Ok(Sent {
        layer: file_layer(i, digest, info.size, info.diff_id),
        reused: false,
    })
}

/// The layer of `i` stored as `digest` (uncompressed: raw, or a tar of it).
fn file_layer(i: &Input, digest: Digest, size: u64, diff_id: Digest) -> FileLayer {
    FileLayer {
        path: i.path.clone(),
        kind: i.kind,
        guessed: i.guessed,
        packing: i.packing,
        digest,
        size,
        diff_id,
        file_size: i.size,
        executable: i.executable,
        carried: None,
    }
}

/// The layer `i` made on an earlier run ([`Known`]), when the file is unchanged since and
/// `dest` holds that blob at that size: packing a folder again sends and hashes only what
/// changed.
fn already_there(
    client: &mut Client,
    dest: &Loc,
    i: &Input,
    known: Option<&Known>,
    stat: Option<&Stat>,
) -> Result<Option<FileLayer>> {
    let (Some(k), Some(st)) = (known, stat) else {
        return Ok(None);
    };
    let Some((digest, size)) = k.get(st) else {
        return Ok(None);
    };
    let d = lamina_core::image::Descriptor::new("", digest.clone(), size);
    if !store::has_blob(client, dest, &d, true)? {
        return Ok(None);
    }
    Ok(Some(file_layer(i, digest.clone(), size, digest)))
}

/// Uploads the files as raw layers of `dest`: in parallel to a registry, in turn to a layout.
fn upload_all(
    client: &mut Client,
    opts: &Options,
    dest: &Loc,
    inputs: &[Input],
    jobs: usize,
    progress: &mut Progress,
) -> Result<Vec<Sent>> {
    match dest {
        Loc::Registry(r) => upload_parallel(opts, r, inputs, jobs, progress),
        Loc::Layout(_) => {
            let mut out = Vec::new();
            let done = Arc::new(AtomicU64::new(0));
            for i in inputs {
                out.push(upload_one(client, dest, i, &done)?);
                progress.set(done.load(Ordering::Relaxed));
            }
            Ok(out)
        }
    }
}

/// `lamina affix` onto a model artifact (modctl's `attach`, for ModelPack, ModelKit and Docker
/// v0.2 models): each file is a layer at `prefix/` + its path, packed as the format packs its
/// files, replacing the layer of the same path or going in; the rest of the artifact, config
/// included, is kept (see [`pack::attach`]). The base's blobs are at `dest` already.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attach(
    client: &mut Client,
    opts: &Options,
    dest: &Loc,
    base: &crate::ops::resolve::Image,
    config: &lamina_core::image::Config,
    files: &[PathBuf],
    prefix: &str,
    json: bool,
    quiet: bool,
) -> Result<()> {
    let t0 = Instant::now();
    let format = lamina_core::artifact::read(&base.manifest, config)?.format;
    let Some(target) = Target::of(format) else {
        return Err(crate::commands::usage(format!(
            "adding files to a {} artifact is not done: `lamina convert` it to a current format \
             first",
            format.name()
        )));
    };
    let mut inputs = planned(files, prefix, quiet)?;
    pack_as(
        &mut inputs,
        target.packing(false),
        target == Target::ModelKit,
        None,
    );
    let Uploaded { layers, .. } = upload_progress(client, opts, dest, &inputs, 4, "attach", quiet)?;
    let mtime = source_date_epoch().unwrap_or(0);
    let pack::Attached {
        config,
        manifest,
        replaced,
        ..
    } = pack::attach(
        &base.manifest,
        config,
        &pack::Changes {
            add: &layers,
            ..pack::Changes::default()
        },
        mtime,
    )?;
    for p in &replaced {
        crate::ui::progress::warn(&format!("replaced {p}"));
    }
    store::put_bytes(client, dest, config)?;
    let d = store::put_manifest(
        client,
        dest,
        dest.tag(),
        lamina_core::media::OCI_MANIFEST,
        manifest,
    )?;
    crate::commands::pushed(
        dest,
        &d,
        json,
        serde_json::json!({
            "format": target.name(),
            "replaced": replaced,
            "layers": layers.iter().map(|l| serde_json::json!({
                "path": l.path, "kind": l.kind.name(), "digest": l.digest.to_string(), "size": l.size,
            })).collect::<Vec<_>>(),
            "seconds": t0.elapsed().as_secs_f64(),
        }),
    )?;
    Ok(())
}

/// Uploads the files with `jobs` workers, each with its own connections; the total's progress
/// here, a line per file done. The first failure stops the others at their next file.
fn upload_parallel(
    opts: &Options,
    r: &lamina_core::reference::Reference,
    inputs: &[Input],
    jobs: usize,
    progress: &mut Progress,
) -> Result<Vec<Sent>> {
    let queue = Arc::new(Mutex::new(
        (0..inputs.len()).collect::<std::collections::VecDeque<_>>(),
    ));
    let done = Arc::new(AtomicU64::new(0));
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<Sent>)>();
    let inputs = Arc::new(inputs.to_vec());
    let mut workers = Vec::new();
    for _ in 0..jobs.clamp(1, inputs.len()) {
        let (queue, done, tx, inputs) = (
            Arc::clone(&queue),
            Arc::clone(&done),
            tx.clone(),
            Arc::clone(&inputs),
        );
        let opts = opts.clone();
        let dest = Loc::Registry(r.clone());
        workers.push(std::thread::spawn(move || {
            let mut c = match Client::new(opts) {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send((usize::MAX, Err(e)));
                    return;
                }
            };
            loop {
                let Some(i) = queue.lock().ok().and_then(|mut q| q.pop_front()) else {
                    return;
                };
                let r = upload_one(&mut c, &dest, &inputs[i], &done);
                let failed = r.is_err();
                if tx.send((i, r)).is_err() || failed {
                    return;
                }
            }
        }));
    }
    drop(tx);
    let mut out: Vec<Option<Sent>> = vec![None; inputs.len()];
    let mut first_err = None;
    loop {
        match rx.recv_timeout(std::time::Duration::from_millis(200)) {
            Ok((i, Ok(sent))) => {
                if !progress.quiet() {
                    let l = &sent.layer;
                    crate::ui::progress::warn(&format!(
                        "{} {} ({}{})",
                        l.kind.name(),
                        l.path,
                        human(l.file_size),
                        if sent.reused {
                            ", unchanged: not sent again"
                        } else {
                            ""
                        }
                    ));
                }
                out[i] = Some(sent);
            }
            Ok((_, Err(e))) => {
                if first_err.is_none() {
                    // the other workers stop at their next file
                    if let Ok(mut q) = queue.lock() {
                        q.clear();
                    }
                    first_err = Some(e);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        progress.set(done.load(Ordering::Relaxed));
    }
    for w in workers {
        let _ = w.join();
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    out.into_iter()
        .zip(inputs.iter())
        .map(|(l, i)| {
            l.ok_or_else(|| Error::internal(format!("{} was not uploaded", i.path)).into())
        })
        .collect()
}
