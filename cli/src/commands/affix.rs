//! `lamina affix`: a new layer of weights on top of an image, without pulling the base.

use std::path::PathBuf;
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use crate::commands::{kv, Ctx};
use lamina_core::compress::Compression;
use lamina_core::image::History;
use lamina_core::registry::UploadConfig;
use lamina_core::tar::PlannedEntry;

use crate::error::Result;
use crate::net::client::{Data, Restart};
use crate::ops::build::{build_files, build_tar, check_level, note_auto, source_date_epoch, usage};
use crate::ops::push::{push_images, NewLayer};
use crate::ops::resolve::{self, PlatformSel};
use crate::ui::progress::{human, Progress};

/// Add files (or a tar) as a new layer on top of a base image and push the result.
///
/// Only the new layer and the edited config and manifest are uploaded; the base layers are
/// mounted across repositories (or found there) and never downloaded.
///
/// Examples:
///   lamina affix --base r8.im/me/model --dest r8.im/me/model:v2 ./weights/
///   lamina affix --base 127.0.0.1:5000/base --dest 127.0.0.1:5000/out:v1 model.safetensors
///   tar -C out -c src | lamina affix --base me/base --dest me/model --tar -
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Base image reference.
    #[arg(short = 'b', long, value_name = "REF")]
    pub base: String,
    /// Destination reference (tag defaults to latest).
    #[arg(short = 'd', long, value_name = "REF")]
    pub dest: String,
    /// A tar (or .tar.gz / .tar.zst, passed through as is) to add as the layer; - reads stdin.
    #[arg(short = 'f', long, value_name = "FILE")]
    pub tar: Option<String>,
    /// Files and directories to add (a directory's contents go under --path).
    #[arg(value_name = "FILE_OR_DIR")]
    pub inputs: Vec<PathBuf>,
    /// Where the files land in the image [default: /src/weights, or /models with --modelcar].
    #[arg(long)]
    pub path: Option<String>,
    /// Make a modelcar (as `lamina append` does on a layout, olot-compatible): one layer per
    /// file or directory under /models, the model card (-m) last and gzipped, with
    /// olot's annotations. The result is OCI.
    #[arg(long)]
    pub modelcar: bool,
    /// The model card for --modelcar (README.md).
    #[arg(short = 'm', long, value_name = "FILE")]
    pub modelcard: Option<PathBuf>,
    /// With --modelcar: keep input paths relative to this directory.
    #[arg(long, value_name = "DIR")]
    pub root_dir: Option<PathBuf>,
    /// Layer compression: auto stores incompressible data (weights) uncompressed and gzips
    /// text [default: auto, or none with --modelcar, as olot; the card is always gzip].
    #[arg(long, value_parser = ["auto", "none", "gzip", "zstd"])]
    pub compression: Option<String>,
    /// Compression level (gzip 0-9, zstd 1-19).
    #[arg(long)]
    pub level: Option<i32>,
    /// Platform of an index to edit: os/arch[/variant], or all (default linux/amd64).
    #[arg(long)]
    pub platform: Option<String>,
    /// Manifest annotation key=value (repeatable; makes a Docker manifest OCI).
    #[arg(long = "annotation", value_name = "K=V")]
    pub annotations: Vec<String>,
    /// Config label key=value (repeatable).
    #[arg(long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
    /// Upload in chunks of --chunk-size (one PATCH each) instead of one streamed PATCH, for
    /// registries that refuse streamed uploads. Input from stdin always goes in chunks.
    #[arg(long)]
    pub chunked: bool,
    /// Chunk size in MiB: the unit of buffering (memory use is about three chunks) and of
    /// chunked uploads.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub chunk_size: u64,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Copy an image to a new reference, as r8im's clone: its config gets the label
/// cloned=true (so the copy has a digest of its own); layers are mounted or streamed
/// registry to registry, never downloaded.
///
/// Example:
///   lamina clone -b r8.im/me/model@sha256:... -d r8.im/me/model-copy
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct CloneArgs {
    /// The image to copy.
    #[arg(short = 'b', long, value_name = "REF")]
    pub base: String,
    /// Destination.
    #[arg(short = 'd', long, value_name = "REF")]
    pub dest: String,
    /// Platform: os/arch[/variant], or all (default linux/amd64).
    #[arg(long)]
    pub platform: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

enum Source {
    Files(Vec<PlannedEntry<PathBuf>>),
    Tar(String),
}

/// Runs `affix`; prints `dest@sha256:...`.
pub fn run(ctx: &mut Ctx, a: Args) -> Result<()> {
    let base = ctx.source("--base", &a.base)?;
    let dest = ctx.dest("--dest", &a.dest)?;
    let annotations = kv(&a.annotations, "annotation")?;
    let labels = kv(&a.labels, "label")?;
    let (client, quiet) = (&mut ctx.client, ctx.quiet);
    let chunk_size = a.chunk_size << 20;
    let t0 = Instant::now();
    // a modelcar goes on every platform by default, as `lamina append` and olot do
    let sel = match (a.modelcar, a.platform.as_deref()) {
        (true, None) => PlatformSel::All,
        (_, p) => PlatformSel::parse(p)?,
    };
    // Inputs are checked before any network traffic.
    let default_path = if a.modelcar {
        "/models"
    } else {
        "/src/weights"
    };
    let path = a.path.as_deref().unwrap_or(default_path);
    let path = path.trim_end_matches('/').to_string();
    let path = if path.is_empty() {
        "/".to_string()
    } else {
        path
    };
    if a.tar.is_some() && a.path.is_some() {
        return Err(Box::new(usage(
            "--path places files; a --tar layer keeps the paths inside the tar (make the tar \
             with them, e.g. tar -C dir -c --transform 's,^,src/weights/,' .)",
        )));
    }
    check_level(a.compression.as_deref(), a.level)?;
    if !a.modelcar && (a.modelcard.is_some() || a.root_dir.is_some()) {
        return Err(Box::new(usage(
            "--modelcard and --root-dir go with --modelcar",
        )));
    }
    let car_plan = if a.modelcar {
        if a.tar.is_some() {
            return Err(Box::new(usage("--modelcar takes files, not --tar")));
        }
        Some(crate::ops::modelcar::plan(
            &a.inputs,
            a.modelcard.as_deref(),
            a.root_dir.as_deref(),
            &path,
            quiet,
        )?)
    } else {
        None
    };
    let source = match (&a.tar, a.inputs.is_empty() && car_plan.is_none()) {
        (Some(_), false) => return Err(Box::new(usage("give either --tar or files, not both"))),
        (None, true) => {
            return Err(Box::new(usage(
                "nothing to add: give files or directories, or --tar FILE",
            )))
        }
        (Some(t), true) => {
            if t != "-" {
                // readable, and a file: checked before anything is sent
                let f = std::fs::File::open(t).map_err(|e| format!("--tar {t}: {e}"))?;
                if f.metadata()
                    .map_err(|e| format!("--tar {t}: {e}"))?
                    .is_dir()
                {
                    return Err(format!("--tar {t}: is a directory (give it without --tar)").into());
                }
            }
            Source::Tar(t.clone())
        }
        (None, false) if car_plan.is_some() => Source::Files(Vec::new()),
        (None, false) => Source::Files(crate::ops::inputs::collect(&a.inputs, &path)?),
    };
    let compression_arg = a
        .compression
        .clone()
        .unwrap_or_else(|| if a.modelcar { "none" } else { "auto" }.to_string());
    // `auto` on stdin or a pipe decides inside the builder, from the tar's first bytes
    let mut auto_stdin = false;
    // said once the base is known to be an image (an artifact's files go raw)
    let mut auto_note = None;
    let compression = match compression_arg.as_str() {
        // a modelcar decides per layer (crate::ops::modelcar::build)
        "auto" if car_plan.is_some() => Compression::None,
        "auto" => {
            let choice = match &source {
                Source::Files(e) => Some(crate::ops::inputs::choose_auto(e)?),
                Source::Tar(t) if std::fs::metadata(t).is_ok_and(|m| m.is_file()) => Some(
                    crate::ops::inputs::choose_auto_tar(std::path::Path::new(t))?,
                ),
                // stdin or a pipe: judged from its first bytes as they are read
                Source::Tar(_) => None,
            };
            match choice {
                Some(c) => {
                    let chosen = c.compression;
                    auto_note = Some(c);
                    chosen
                }
                None => {
                    auto_stdin = true;
                    Compression::Gzip
                }
            }
        }
        other => Compression::parse(other).ok_or_else(|| {
            usage(&format!(
                "unknown compression {other:?} (auto, none, gzip, zstd)"
            ))
        })?,
    };

    // 1. the base: manifest(s) and config(s); no layer is downloaded. 2. base blobs must exist
    // in the destination repository (mounted, never downloaded)
    let (mut images, mut index, configs) = crate::ops::resolve::base_at_dest(
        client,
        &base,
        &dest,
        &sel,
        a.platform.as_deref(),
        quiet,
    )?;

    // a model artifact gets its files as layers of its own kind (modctl's attach), not as an
    // image layer
    if let ([img], [config]) = (images.as_slice(), configs.as_slice()) {
        let format = lamina_core::artifact::read(&img.manifest, config)?.format;
        if format.is_artifact() {
            if a.tar.is_some() || a.modelcar {
                return Err(Box::new(usage(
                    "a model artifact takes files (each a layer at its path), not --tar or \
                     --modelcar",
                )));
            }
            let prefix = a.path.as_deref().unwrap_or("").trim_matches('/');
            return crate::commands::pack::attach(
                client, &ctx.opts, &dest, img, config, &a.inputs, prefix, a.json, quiet,
            );
        }
    }

    if let (Some(c), false) = (&auto_note, quiet) {
        note_auto(c);
    }

    if let Some(planned) = car_plan {
        // modelcar: one layer per input, the card last (see `lamina append`)
        let mut layers = Vec::new();
        let mut annotations = annotations.clone();
        let created = resolve::history_time();
        for p in &planned {
            let l =
                crate::ops::modelcar::build(client, &dest, p, &compression_arg, a.level, quiet)?;
            let d = l.descriptor(lamina_core::media::Family::Oci)?;
            if l.part == lamina_core::modelcar::Part::Card {
                annotations.retain(|(k, _)| k != lamina_core::modelcar::ANN_MODELCARD);
                annotations.push((
                    lamina_core::modelcar::ANN_MODELCARD.into(),
                    l.info.digest.to_string(),
                ));
            }
            layers.push(NewLayer {
                compression: l.info.compression,
                digest: l.info.digest.clone(),
                size: l.info.size,
                diff_id: l.info.diff_id.clone(),
                history: l.history(&created),
                annotations: d.annotations,
            });
        }
        let final_digest = push_images(
            client,
            &dest,
            &mut images,
            configs,
            &mut index,
            &layers,
            &labels,
            &annotations,
            quiet,
        )?;
        crate::commands::pushed(
            &dest,
            &final_digest,
            a.json,
            serde_json::json!({
                "layers": layers.iter().map(|l| serde_json::json!({
                    "digest": l.digest.to_string(),
                    "size": l.size,
                    "diffId": l.diff_id.to_string(),
                    "compression": l.compression.name(),
                    "createdBy": l.history.created_by,
                })).collect::<Vec<_>>(),
                "platforms": images.len(),
                "seconds": t0.elapsed().as_secs_f64(),
            }),
        )?;
        done_in(quiet, t0);
        return Ok(());
    }

    // 3. build the layer and upload it as it is made. The producer can be started again (files
    // and tar files are read again; the layer is deterministic), so a streamed upload that is cut
    // resumes from the registry's offset; stdin cannot be read twice and goes in chunks.
    let streamed = !a.chunked && !matches!(&source, Source::Tar(t) if t == "-");
    // a streamed upload needs no chunk-sized buffers: 1 MiB pieces keep memory small
    let chunk = if streamed {
        1 << 20
    } else {
        chunk_size.max(1) as usize
    };
    let total = match &source {
        Source::Files(e) => Some(crate::ops::inputs::tar_size(e)),
        Source::Tar(t) if t != "-" => std::fs::metadata(t).ok().map(|m| m.len()),
        Source::Tar(_) => None,
    };
    let level = a.level;
    let identity = upload_identity(&source, compression, level, source_date_epoch());
    // an uncompressed layer of files gets its table of contents (core::toc): later reads find
    // its files with no request
    let toc = match (&source, compression) {
        (Source::Files(e), Compression::None) => {
            lamina_core::toc::of(e, source_date_epoch().unwrap_or(0)).ok()
        }
        _ => None,
    };
    let (created_by, mut spawn, rewindable): (String, Restart, bool) = match source {
        Source::Files(entries) => {
            let names: Vec<String> = a
                .inputs
                .iter()
                .map(|p| {
                    p.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                })
                .collect();
            let what = if a.inputs.len() == 1 && a.inputs[0].is_dir() {
                ".".to_string()
            } else {
                names.join(" ")
            };
            let mtime = source_date_epoch().unwrap_or(0);
            (
                format!("COPY {what} {path} # weights"),
                Box::new(move || {
                    let (tx, rx) = sync_channel::<Data>(1);
                    let entries = entries.clone();
                    std::thread::spawn(move || {
                        build_files(entries, compression, level, mtime, chunk, tx)
                    });
                    rx
                }),
                true,
            )
        }
        Source::Tar(t) => {
            let name = if t == "-" {
                "stdin".to_string()
            } else {
                PathBuf::from(&t)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            };
            // a pipe (`--tar <(...)`, /dev/stdin) cannot be read twice, like stdin
            let rewindable = t != "-" && std::fs::metadata(&t).is_ok_and(|m| m.is_file());
            (
                format!("ADD {name} / # weights"),
                Box::new(move || {
                    let (tx, rx) = sync_channel::<Data>(1);
                    let t = t.clone();
                    std::thread::spawn(move || {
                        build_tar(&t, compression, auto_stdin, level, chunk, tx)
                    });
                    rx
                }),
                rewindable,
            )
        }
    };
    let cfg = UploadConfig {
        chunk_max: chunk_size,
        monolithic_max: chunk as u64,
        stream: streamed,
        ..UploadConfig::default()
    };
    let mut progress = Progress::new("layer", total, quiet);
    let rx = spawn();
    let upload = crate::store::put_stream(
        client,
        &dest,
        cfg,
        rx,
        if rewindable { Some(spawn) } else { None },
        &mut progress,
        identity.as_deref(),
    );
    let (_digest, info) = upload?;
    progress.finish(info.size);
    if !quiet {
        eprintln!(
            "layer {} ({}, {} uncompressed, {}) uploaded",
            info.digest,
            human(info.size),
            human(info.uncompressed_size),
            info.compression.name()
        );
    }

    // 4. edit configs and manifests, push them (blobs first, manifests last)
    let created = resolve::history_time();
    let history = History {
        created: Some(created),
        created_by,
        comment: Some("weights".into()),
        author: None,
    };
    // a Docker manifest has no annotations: the table goes only into OCI ones
    let all_oci = images
        .iter()
        .all(|i| i.manifest.media_type() == lamina_core::media::OCI_MANIFEST);
    let toc_annotations = toc
        .filter(|_| info.compression == Compression::None && all_oci)
        .and_then(|t| lamina_core::toc::annotation(&info.digest, &t))
        .map(|v| vec![(lamina_core::toc::ANNOTATION.to_string(), v)])
        .unwrap_or_default();
    let layer = NewLayer {
        compression: info.compression,
        digest: info.digest.clone(),
        size: info.size,
        diff_id: info.diff_id.clone(),
        history,
        annotations: toc_annotations,
    };
    let final_digest = push_images(
        client,
        &dest,
        &mut images,
        configs,
        &mut index,
        &[layer],
        &labels,
        &annotations,
        quiet,
    )?;
    let platforms = images.len();
    crate::commands::pushed(
        &dest,
        &final_digest,
        a.json,
        serde_json::json!({
            "layer": {
                "digest": info.digest.to_string(),
                "size": info.size,
                "diffId": info.diff_id.to_string(),
                "uncompressedSize": info.uncompressed_size,
                "compression": info.compression.name(),
            },
            "platforms": platforms,
            "seconds": t0.elapsed().as_secs_f64(),
        }),
    )?;
    done_in(quiet, t0);
    Ok(())
}

/// The time the command took, on stderr.
fn done_in(quiet: bool, t0: Instant) {
    if !quiet {
        eprintln!("done in {:.1}s", t0.elapsed().as_secs_f64());
    }
}

/// What the layer is made from, for resuming its upload in a later run (see [`crate::net::resume`]):
/// each input's path in the layer, where it is read from, its size and modification time, and
/// the layer's options. `None` for stdin, which cannot be read again.
fn upload_identity(
    source: &Source,
    compression: Compression,
    level: Option<i32>,
    mtime: Option<u64>,
) -> Option<String> {
    use std::fmt::Write as _;
    let stamp = |p: &std::path::Path| -> Option<String> {
        let m = std::fs::metadata(p).ok()?;
        let t = m
            .modified()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        Some(format!(
            "{} {}.{:09}",
            m.len(),
            t.as_secs(),
            t.subsec_nanos()
        ))
    };
    let mut id = format!(
        "affix layer v1\n{}\n{level:?}\n{mtime:?}\n",
        compression.name()
    );
    match source {
        Source::Files(entries) => {
            for e in entries {
                let from = match &e.source {
                    Some(p) => format!("{} {}", p.display(), stamp(p)?),
                    None => String::new(),
                };
                let _ = writeln!(id, "{} {:?} {from}", e.path, e.kind);
            }
        }
        Source::Tar(t) if t == "-" => return None,
        Source::Tar(t) => {
            let p = std::path::Path::new(t);
            let full = p.canonicalize().ok()?;
            let _ = writeln!(id, "tar {} {}", full.display(), stamp(p)?);
        }
    }
    Some(id)
}

/// `lamina clone` (r8im's): the image copied to `dest` with the config label `cloned=true`;
/// blobs are mounted or streamed, never downloaded. Prints `dest@sha256:...`.
pub fn clone(ctx: &mut Ctx, a: CloneArgs) -> Result<()> {
    let base = ctx.source("--base", &a.base)?;
    let dest = ctx.dest("--dest", &a.dest)?;
    let (client, quiet) = (&mut ctx.client, ctx.quiet);
    let t0 = Instant::now();
    let sel = PlatformSel::parse(a.platform.as_deref())?;
    let (mut images, mut index, configs) = crate::ops::resolve::base_at_dest(
        client,
        &base,
        &dest,
        &sel,
        a.platform.as_deref(),
        quiet,
    )?;
    let labels = vec![("cloned".to_string(), "true".to_string())];
    let d = push_images(
        client,
        &dest,
        &mut images,
        configs,
        &mut index,
        &[],
        &labels,
        &[],
        quiet,
    )?;
    crate::commands::pushed(&dest, &d, a.json, serde_json::json!({}))?;
    done_in(quiet, t0);
    Ok(())
}
