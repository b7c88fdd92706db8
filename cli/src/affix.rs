//! `lamina affix`: a new layer of weights on top of an image, without pulling the base.

use std::io::Read as _;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use lamina_core::compress::Compression;
use lamina_core::image::{detect_kind, rfc3339, Descriptor, History, Index, Manifest};
use lamina_core::layer::{choose_auto, LayerInfo, LayerWriter, TarInput};
use lamina_core::media::{self, DocKind, Family};
use lamina_core::reference::Reference;
use lamina_core::registry::{GetManifest, PutManifest, Upload, UploadConfig};
use lamina_core::tar::{EntryKind, PlannedEntry, TarWriter};
use lamina_core::Error;

use crate::blobs::ensure_blobs;
use crate::client::anyhow_like::Result;
use crate::client::{Client, Data};
use crate::progress::{human, Progress};
use crate::resolve::{self, PlatformSel, Top};

/// What to add and where.
#[derive(Debug)]
pub struct Args {
    /// Base image.
    pub base: Reference,
    /// Destination.
    pub dest: Reference,
    /// A whole tar (path or `-`).
    pub tar: Option<String>,
    /// Files and directories.
    pub inputs: Vec<PathBuf>,
    /// Where inputs land in the image.
    pub path: String,
    /// `auto|none|gzip|zstd`.
    pub compression: String,
    /// Compression level.
    pub level: Option<i32>,
    /// `--platform`.
    pub platform: Option<String>,
    /// Manifest annotations.
    pub annotations: Vec<(String, String)>,
    /// Config labels.
    pub labels: Vec<(String, String)>,
    /// Upload chunk size.
    pub chunk_size: u64,
    /// Print JSON.
    pub json: bool,
    /// No progress.
    pub quiet: bool,
}

enum Source {
    Files(Vec<PlannedEntry<PathBuf>>),
    Tar(String),
}

/// Runs `affix`; prints `dest@sha256:...`.
pub fn run(client: &mut Client, a: Args) -> Result<()> {
    let t0 = Instant::now();
    let sel = PlatformSel::parse(a.platform.as_deref())?;
    // Inputs are checked before any network traffic.
    let path = a.path.trim_end_matches('/').to_string();
    let path = if path.is_empty() {
        "/".to_string()
    } else {
        path
    };
    let source = match (&a.tar, a.inputs.is_empty()) {
        (Some(_), false) => return Err(Box::new(usage("give either --tar or files, not both"))),
        (None, true) => {
            return Err(Box::new(usage(
                "nothing to add: give files or directories, or --tar FILE",
            )))
        }
        (Some(t), true) => {
            if t != "-" {
                std::fs::metadata(t).map_err(|e| format!("{t}: {e}"))?;
            }
            Source::Tar(t.clone())
        }
        (None, false) => Source::Files(crate::inputs::collect(&a.inputs, &path)?),
    };
    let compression = match a.compression.as_str() {
        "auto" => match &source {
            Source::Files(e) => choose_auto(&crate::inputs::sample(e)),
            Source::Tar(_) => Compression::Gzip,
        },
        other => Compression::parse(other).ok_or_else(|| {
            usage(&format!(
                "unknown compression {other:?} (auto, none, gzip, zstd)"
            ))
        })?,
    };

    // 1. the base: manifest(s) and config(s); no layer is downloaded
    let top = resolve::fetch(client, &a.base, &sel)?;
    let (mut images, mut index) = match top {
        Top::Single(i) => (vec![i], None),
        Top::Index {
            index, children, ..
        } => (children, Some(index)),
    };
    if images.is_empty() {
        return Err(format!(
            "{}: the index has no platform images to add a layer to",
            a.base
        )
        .into());
    }
    let mut configs = Vec::new();
    for img in &images {
        configs.push(resolve::config(client, &a.base, &img.manifest)?);
    }
    // Docker manifests have no zstd layers and no annotations: such images become OCI.
    let needs_oci = compression == Compression::Zstd || !a.annotations.is_empty();
    if needs_oci && images.iter().any(|i| i.manifest.family() == Family::Docker) {
        if !a.quiet {
            eprintln!(
                "note: converting the Docker v2 manifest to OCI ({})",
                if compression == Compression::Zstd {
                    "zstd layers"
                } else {
                    "annotations"
                }
            );
        }
        for i in &mut images {
            i.manifest.convert_to_oci();
        }
        if let Some(ix) = &mut index {
            ix.convert_to_oci();
        }
    }

    // 2. base blobs must exist in the destination repository (mounted, never downloaded)
    let mut base_blobs = Vec::new();
    for img in &images {
        for l in img.manifest.layers()? {
            if !base_blobs.iter().any(|b: &Descriptor| b.digest == l.digest) {
                base_blobs.push(l);
            }
        }
    }
    ensure_blobs(client, &a.base, &a.dest, &base_blobs, a.quiet)?;
    // platforms of an index that are not edited must exist in the destination repository too
    if let Some(ix) = &index {
        let picked: Vec<usize> = images.iter().filter_map(|i| i.index_pos).collect();
        for (i, e) in ix.manifests()?.iter().enumerate() {
            if !picked.contains(&i) {
                copy_manifest(client, &a.base, &a.dest, e, a.quiet)?;
            }
        }
    }

    // 3. build the layer and upload it as it is made
    let (tx, rx) = sync_channel::<Data>(1);
    let chunk = a.chunk_size.max(1) as usize;
    let total = match &source {
        Source::Files(e) => Some(crate::inputs::tar_size(e)),
        Source::Tar(t) if t != "-" => std::fs::metadata(t).ok().map(|m| m.len()),
        Source::Tar(_) => None,
    };
    let (created_by, producer) = match source {
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
            let level = a.level;
            (
                format!("COPY {what} {path} # weights"),
                std::thread::spawn(move || {
                    build_files(entries, compression, level, mtime, chunk, tx)
                }),
            )
        }
        Source::Tar(t) => {
            let level = a.level;
            let name = if t == "-" {
                "stdin".to_string()
            } else {
                PathBuf::from(&t)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            };
            (
                format!("ADD {name} / # weights"),
                std::thread::spawn(move || build_tar(&t, compression, level, chunk, tx)),
            )
        }
    };
    let cfg = UploadConfig {
        chunk_max: a.chunk_size,
        monolithic_max: a.chunk_size,
        ..UploadConfig::default()
    };
    let mut progress = Progress::new("layer", total, a.quiet);
    let upload = client.upload_stream(
        &a.dest,
        Upload::new(&a.dest.repository, cfg),
        rx,
        &mut progress,
    );
    let _ = producer.join();
    let (_digest, info) = upload?;
    progress.finish(info.size);
    if !a.quiet {
        eprintln!(
            "layer {} ({}, {} uncompressed, {}) uploaded",
            info.digest,
            human(info.size),
            human(info.uncompressed_size),
            info.compression.name()
        );
    }

    // 4. edit configs and manifests, push them (blobs first, manifests last)
    let created = source_date_epoch().map(rfc3339).unwrap_or_else(|| {
        rfc3339(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        )
    });
    let history = History {
        created: Some(created),
        created_by,
        comment: Some("weights".into()),
        author: None,
    };
    let mut pushed = Vec::new();
    for (img, mut config) in images.iter_mut().zip(configs) {
        config.push_layer(&info.diff_id, &history);
        for (k, v) in &a.labels {
            config.set_label(k, v);
        }
        let cbytes = config.bytes().to_vec();
        let cdigest = client.upload_bytes(&a.dest, cbytes.clone())?;
        let m = &mut img.manifest;
        m.set_config(&cdigest, cbytes.len() as u64);
        let lt = media::layer_type(m.family(), info.compression)
            .ok_or("no layer media type for this manifest family")?;
        m.push_layer(&Descriptor::new(lt, info.digest.clone(), info.size));
        for (k, v) in &a.annotations {
            m.set_annotation(k, v)?;
        }
        let bytes = m.bytes().to_vec();
        let reference = if index.is_some() {
            m.digest().to_string()
        } else {
            a.dest.tag_or_latest().to_string()
        };
        let d = client.run(
            &a.dest,
            PutManifest::new(
                &a.dest.repository,
                &reference,
                m.media_type(),
                bytes.clone(),
            ),
        )?;
        pushed.push((img.index_pos, d, bytes.len() as u64, m.media_type()));
    }
    let final_digest = match &mut index {
        Some(ix) => {
            for (pos, d, size, mt) in &pushed {
                if let Some(p) = pos {
                    ix.replace(*p, mt, d, *size);
                }
            }
            let bytes = ix.bytes().to_vec();
            client.run(
                &a.dest,
                PutManifest::new(
                    &a.dest.repository,
                    a.dest.tag_or_latest(),
                    ix.media_type(),
                    bytes,
                ),
            )?
        }
        None => pushed[0].1.clone(),
    };
    let name = a.dest.name();
    if a.json {
        let v = serde_json::json!({
            "image": format!("{name}@{final_digest}"),
            "digest": final_digest.to_string(),
            "tag": a.dest.tag_or_latest(),
            "layer": {
                "digest": info.digest.to_string(),
                "size": info.size,
                "diff_id": info.diff_id.to_string(),
                "uncompressed_size": info.uncompressed_size,
                "compression": info.compression.name(),
            },
            "platforms": pushed.len(),
            "seconds": t0.elapsed().as_secs_f64(),
        });
        println!("{v}");
    } else {
        println!("{name}@{final_digest}");
    }
    if !a.quiet {
        eprintln!("done in {:.1}s", t0.elapsed().as_secs_f64());
    }
    Ok(())
}

/// Copies one manifest (and its blobs) that is kept unchanged into the destination repository.
fn copy_manifest(
    client: &mut Client,
    src: &Reference,
    dst: &Reference,
    d: &Descriptor,
    quiet: bool,
) -> Result<()> {
    if src.registry == dst.registry && src.repository == dst.repository {
        return Ok(());
    }
    let f = client.run(
        src,
        GetManifest::new(&src.repository, &d.digest.to_string()),
    )?;
    let (kind, mt) = detect_kind(&f.bytes, f.content_type.as_deref().or(Some(&d.media_type)))?;
    match kind {
        DocKind::Manifest(_) => {
            let m = Manifest::parse(f.bytes.clone(), &mt)?;
            let mut blobs = vec![m.config()?];
            blobs.extend(m.layers()?);
            ensure_blobs(client, src, dst, &blobs, quiet)?;
        }
        DocKind::Index(_) => {
            let ix = Index::parse(f.bytes.clone(), &mt)?;
            for e in ix.manifests()? {
                copy_manifest(client, src, dst, &e, quiet)?;
            }
        }
    }
    client.run(
        dst,
        PutManifest::new(&dst.repository, &d.digest.to_string(), &mt, f.bytes),
    )?;
    Ok(())
}

fn usage(msg: &str) -> Error {
    Error::Usage {
        reason: msg.to_string(),
    }
}

/// `SOURCE_DATE_EPOCH`, when set and valid.
pub fn source_date_epoch() -> Option<u64> {
    std::env::var("SOURCE_DATE_EPOCH").ok()?.trim().parse().ok()
}

/// Collects blob bytes into fixed-size chunks and sends them to the uploader.
struct Chunker {
    buf: BytesMut,
    chunk: usize,
    tx: SyncSender<Data>,
    closed: bool,
}

impl Chunker {
    fn push(&mut self, b: &[u8]) {
        if self.closed {
            return;
        }
        self.buf.extend_from_slice(b);
        while self.buf.len() >= self.chunk {
            let full: Bytes = self.buf.split_to(self.chunk).freeze();
            if self.tx.send(Data::Chunk(full)).is_err() {
                self.closed = true;
                return;
            }
        }
    }
    fn done(mut self, r: std::result::Result<LayerInfo, Error>) {
        match r {
            Ok(info) => {
                let rest = self.buf.split().freeze();
                let _ = self.tx.send(Data::Done(rest, info));
            }
            Err(e) => {
                let _ = self.tx.send(Data::Failed(e));
            }
        }
    }
}

const READ: usize = 1 << 20;

fn build_files(
    entries: Vec<PlannedEntry<PathBuf>>,
    c: Compression,
    level: Option<i32>,
    mtime: u64,
    chunk: usize,
    tx: SyncSender<Data>,
) {
    let mut ch = Chunker {
        buf: BytesMut::with_capacity(chunk),
        chunk,
        tx,
        closed: false,
    };
    let r = (|| -> std::result::Result<LayerInfo, Error> {
        let mut lw = LayerWriter::new(c, level);
        let mut tw = TarWriter::new(mtime);
        let mut err: Option<Error> = None;
        let mut buf = vec![0u8; READ];
        for e in &entries {
            {
                let mut sink = |b: &[u8]| {
                    if err.is_none() {
                        if let Err(x) = lw.write(b, &mut |o: &[u8]| ch.push(o)) {
                            err = Some(x);
                        }
                    }
                };
                tw.entry(&e.path, &e.kind, &mut sink)?;
                if let (EntryKind::File { .. }, Some(src)) = (&e.kind, &e.source) {
                    let mut f = std::fs::File::open(src).map_err(|x| io(src, x))?;
                    loop {
                        let n = f.read(&mut buf).map_err(|x| io(src, x))?;
                        if n == 0 {
                            break;
                        }
                        tw.data(&buf[..n], &mut sink)?;
                    }
                    tw.end_file()?;
                }
            }
            if let Some(x) = err.take() {
                return Err(x);
            }
            if ch.closed {
                return Err(Error::Usage {
                    reason: "upload stopped".into(),
                });
            }
        }
        tw.finish(&mut |b: &[u8]| {
            if err.is_none() {
                if let Err(x) = lw.write(b, &mut |o: &[u8]| ch.push(o)) {
                    err = Some(x);
                }
            }
        })?;
        if let Some(x) = err.take() {
            return Err(x);
        }
        lw.finish(&mut |o: &[u8]| ch.push(o))
    })();
    ch.done(r);
}

fn build_tar(path: &str, c: Compression, level: Option<i32>, chunk: usize, tx: SyncSender<Data>) {
    let mut ch = Chunker {
        buf: BytesMut::with_capacity(chunk),
        chunk,
        tx,
        closed: false,
    };
    let r = (|| -> std::result::Result<LayerInfo, Error> {
        let mut input: Box<dyn std::io::Read> = if path == "-" {
            Box::new(std::io::stdin().lock())
        } else {
            Box::new(std::fs::File::open(path).map_err(|x| io(std::path::Path::new(path), x))?)
        };
        let mut t = TarInput::new(c, level);
        let mut buf = vec![0u8; READ];
        loop {
            let n = input
                .read(&mut buf)
                .map_err(|x| io(std::path::Path::new(path), x))?;
            if n == 0 {
                break;
            }
            t.write(&buf[..n], &mut |o: &[u8]| ch.push(o))?;
            if ch.closed {
                return Err(Error::Usage {
                    reason: "upload stopped".into(),
                });
            }
        }
        t.finish(&mut |o: &[u8]| ch.push(o))
    })();
    ch.done(r);
}

fn io(p: &std::path::Path, e: std::io::Error) -> Error {
    Error::Usage {
        reason: format!("{}: {e}", p.display()),
    }
}
