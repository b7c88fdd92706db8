//! `lamina zstd`: every layer recompressed to zstd, registry to registry, in parallel.
//!
//! Each layer is one streaming pass (download, verify, decompress, hash the diff_id, compress
//! with libzstd, hash, upload in chunks); no layer touches the disk or sits in memory whole. A
//! layer whose zstd size is not below `--min-ratio` of its uncompressed size is stored
//! uncompressed (r8im's rule): an uncompressed source layer is then simply kept, a gzip one is
//! decompressed and uploaded in a second pass. Layers already zstd are kept. diff_ids are checked
//! against the config and stay the same; config, history and `created` are kept. The output is
//! always a valid OCI manifest (a Docker v2 image is converted).

use std::collections::BTreeMap;
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};

use crate::store::{self, Loc};
use lamina_core::artifact;
use lamina_core::compress::{self, Compression};
use lamina_core::image::Descriptor;
use lamina_core::layer::{LayerInfo, LayerWriter};
use lamina_core::media;
use lamina_core::registry::UploadConfig;
use lamina_core::{Digest, Error};

use crate::commands::{usage, Ctx};
use crate::error::Result;
use crate::net::client::{Chunker, Client, Data};
use crate::ops::flows::{copy_other_platforms, ensure_blobs};
use crate::ops::push::push_manifest_of;
use crate::ops::resolve::{self, PlatformSel, Top};
use crate::ops::zstdenc::NativeZstd;
use crate::store::verify::read_verified;
use crate::ui::progress::{human, Progress};

/// Recompress every layer of an image to zstd, registry to registry.
///
/// Layers are processed in parallel, each in one streaming pass. A layer that zstd does not
/// shrink below --min-ratio of its uncompressed size is stored uncompressed; layers already
/// zstd are kept. The result is an OCI manifest (Docker v2 images are converted); config,
/// history and diff_ids are unchanged.
///
/// A ModelPack artifact's tar layers are recompressed the same way, but its weights, which do
/// not compress, and its raw files stay as they are (mounted). A ModelKit (kit reads tar and
/// tar+gzip only) and a Docker model (raw files) are refused.
///
/// Example:
///   lamina zstd r8.im/me/model:v1 r8.im/me/model:v1-zstd --level 9
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Source image.
    #[arg(value_name = "REF")]
    pub image: String,
    /// Destination.
    #[arg(value_name = "DEST")]
    pub dest: String,
    /// zstd level.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub level: i32,
    /// Platform: os/arch[/variant] or all (default linux/amd64).
    #[arg(long)]
    pub platform: Option<String>,
    /// Store a layer uncompressed unless zstd makes it smaller than this fraction. (r8im's
    /// NO_COMPRESSION=1 stores every layer uncompressed.)
    #[arg(long, default_value_t = 0.9)]
    pub min_ratio: f64,
    /// Layers recompressed at once (default: one per core).
    #[arg(short, long)]
    pub jobs: Option<usize>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

const CHUNK: usize = 16 << 20;

#[derive(Debug, Clone)]
struct Outcome {
    compression: Compression,
    digest: Digest,
    size: u64,
    note: &'static str,
}

/// Runs `zstd`.
pub fn run(ctx: &mut Ctx, a: Args) -> Result<()> {
    let image = ctx.source("image", &a.image)?;
    let dest = ctx.dest("DEST", &a.dest)?;
    let (client, opts, quiet) = (&mut ctx.client, &ctx.opts, ctx.quiet);
    // r8im's switch: every layer uncompressed
    let min_ratio = if std::env::var_os("NO_COMPRESSION").is_some_and(|v| !v.is_empty()) {
        0.0
    } else {
        a.min_ratio
    };
    let jobs = a.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let t0 = std::time::Instant::now();
    let sel = PlatformSel::parse(a.platform.as_deref())?;
    let (mut images, mut index) = match resolve::fetch(client, &image, &sel)? {
        Top::Single(i) => (vec![i], None),
        Top::Index {
            index, children, ..
        } => (children, Some(index)),
    };
    // unique layers, with the diff_id each config gives them and how they are compressed
    let mut layers: BTreeMap<Digest, (Descriptor, Digest, Compression)> = BTreeMap::new();
    let mut configs = Vec::new();
    // an artifact's layers that stay as they are (its weights, its raw files)
    let mut kept = Vec::new();
    let mut is_artifact = false;
    for img in &images {
        let cfg = resolve::config(client, &image, &img.manifest)?;
        let read = artifact::read(&img.manifest, &cfg)?;
        if read.format.is_artifact() {
            is_artifact = true;
            let ls = img.manifest.layers()?;
            let some = artifact::recompressible(&read).map_err(|e| match e {
                Error::Usage { reason } => usage(format!("{image}: {reason}")),
                e => e.into(),
            })?;
            for (i, l) in ls.into_iter().enumerate() {
                match some.iter().find(|x| x.index == i) {
                    Some(x) => {
                        layers
                            .entry(l.digest.clone())
                            .or_insert((l, x.diff_id.clone(), x.from));
                    }
                    None => kept.push(l),
                }
            }
            configs.push(img.manifest.config()?);
            continue;
        }
        if index.is_none() {
            resolve::check_platform(&image, a.platform.as_deref(), &cfg)?;
        }
        for (l, id) in resolve::layers_with_diff_ids(&image, &img.manifest, &cfg)? {
            let from = media::layer_compression(&l.media_type).ok_or_else(|| {
                Error::UnsupportedMediaType {
                    what: format!("layer {}", l.digest),
                    media_type: l.media_type.clone(),
                }
            })?;
            layers.entry(l.digest.clone()).or_insert((l, id, from));
        }
        configs.push(img.manifest.config()?);
    }
    configs.extend(kept.iter().cloned());
    ensure_blobs(client, &image, &dest, &configs, quiet)?;
    copy_other_platforms(client, &image, &dest, index.as_ref(), &images, quiet)?;

    // recompress in parallel: a queue of layers, `jobs` workers each with its own connections
    let queue: Arc<Mutex<Vec<(Descriptor, Digest, Compression)>>> =
        Arc::new(Mutex::new(layers.values().cloned().collect()));
    let results: Arc<Mutex<BTreeMap<Digest, Result<Outcome, String>>>> =
        Arc::new(Mutex::new(BTreeMap::new()));
    let jobs = jobs.clamp(1, layers.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..jobs {
            let queue = Arc::clone(&queue);
            let results = Arc::clone(&results);
            let (src, dst) = (&image, &dest);
            let opts = opts.clone();
            let (level, min_ratio, quiet) = (a.level, min_ratio, quiet);
            s.spawn(move || {
                let mut c = match Client::new(opts) {
                    Ok(c) => c,
                    Err(e) => {
                        results
                            .lock()
                            .map(|mut r| r.insert(Digest::of(b""), Err(e.to_string())))
                            .ok();
                        return;
                    }
                };
                loop {
                    let next = queue.lock().ok().and_then(|mut q| q.pop());
                    let Some((l, diff_id, from)) = next else {
                        break;
                    };
                    let r = one_layer(
                        &mut c, src, dst, &l, &diff_id, from, level, min_ratio, quiet,
                    )
                    .map_err(|e| e.to_string());
                    let failed = r.is_err();
                    if let Ok(mut m) = results.lock() {
                        m.insert(l.digest.clone(), r);
                    }
                    if failed {
                        if let Ok(mut q) = queue.lock() {
                            q.clear(); // stop early: the image cannot be pushed anyway
                        }
                    }
                }
            });
        }
    });
    let results = Arc::try_unwrap(results)
        .map_err(|_| "worker still running")?
        .into_inner()
        .map_err(|_| "worker panicked")?;
    let mut done: BTreeMap<Digest, Outcome> = BTreeMap::new();
    for (d, r) in results {
        done.insert(
            d,
            r.map_err(|e| format!("layer recompression failed: {e}"))?,
        );
    }
    if done.len() != layers.len() {
        return Err("not every layer was recompressed".into());
    }

    // manifests: OCI, new layer descriptors, configs unchanged
    let mut pushed = Vec::new();
    for img in images.iter_mut() {
        img.manifest.convert_to_oci();
        img.manifest.ensure_media_type();
        for (i, l) in img.manifest.layers()?.iter().enumerate() {
            let Some(o) = done
                .get(&l.digest)
                .filter(|_| layers.contains_key(&l.digest))
            else {
                continue; // an artifact's layer that stays
            };
            let mt = if is_artifact {
                artifact::with_compression(&l.media_type, o.compression)
            } else {
                media::layer_type(media::Family::Oci, o.compression)
                    .ok_or("no media type")?
                    .to_string()
            };
            img.manifest.set_layer(i, &mt, &o.digest, o.size);
        }
        pushed.push(push_manifest_of(client, &dest, img, index.is_some())?);
    }
    let d = match &mut index {
        Some(ix) => {
            ix.convert_to_oci();
            for (pos, d, size, mt) in &pushed {
                if let Some(p) = pos {
                    ix.replace(*p, mt, d, *size);
                }
            }
            let bytes = ix.bytes().to_vec();
            store::put_manifest(client, &dest, dest.tag(), ix.media_type(), bytes)?
        }
        None => pushed[0].1.clone(),
    };
    let before: u64 = layers.values().map(|(l, _, _)| l.size).sum();
    let after: u64 = done.values().map(|o| o.size).sum();
    let rows: Vec<_> = layers
        .values()
        .map(|(l, _, _)| {
            let o = &done[&l.digest];
            serde_json::json!({"from": l.digest.to_string(), "from_size": l.size, "to": o.digest.to_string(), "size": o.size, "compression": o.compression.name(), "note": o.note})
        })
        .collect();
    crate::commands::pushed(
        &dest,
        &d,
        a.json,
        serde_json::json!({"layers": rows, "kept": kept.iter().map(|l| l.digest.to_string()).collect::<Vec<_>>(), "bytes_before": before, "bytes_after": after, "seconds": t0.elapsed().as_secs_f64()}),
    )?;
    if !quiet {
        eprintln!(
            "{} layers: {} -> {} in {:.1}s{}",
            layers.len(),
            human(before),
            human(after),
            t0.elapsed().as_secs_f64(),
            match kept.len() {
                0 => String::new(),
                n => format!(" ({n} weight or raw layer(s) kept as they are)"),
            }
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn one_layer(
    c: &mut Client,
    src: &Loc,
    dst: &Loc,
    l: &Descriptor,
    diff_id: &Digest,
    from: Compression,
    level: i32,
    min_ratio: f64,
    quiet: bool,
) -> Result<Outcome> {
    if from == Compression::Zstd {
        ensure_blobs(c, src, dst, std::slice::from_ref(l), true)?;
        return Ok(Outcome {
            compression: Compression::Zstd,
            digest: l.digest.clone(),
            size: l.size,
            note: "already zstd",
        });
    }
    if from == Compression::None {
        // an uncompressed layer zstd would not shrink is kept as it is (mounted, not sent
        // again): judge from its first bytes before streaming anything
        if !judge_uncompressed(c, src, l, level, min_ratio)? {
            ensure_blobs(c, src, dst, std::slice::from_ref(l), true)?;
            return Ok(Outcome {
                compression: Compression::None,
                digest: l.digest.clone(),
                size: l.size,
                note: "kept uncompressed (ratio)",
            });
        }
    }
    // one download: the first bytes decide zstd or uncompressed as they stream
    let info = stream(
        c,
        src,
        dst,
        (l, from),
        diff_id,
        Some(level),
        Some(min_ratio),
        quiet,
    )?;
    let pays = (info.size as f64) < min_ratio * info.uncompressed_size as f64;
    if info.compression == Compression::Zstd && pays {
        if from != Compression::None && info.size >= l.size {
            // zstd at this level is larger than the layer as it was: keep the original
            ensure_blobs(c, src, dst, std::slice::from_ref(l), true)?;
            return Ok(Outcome {
                compression: from,
                digest: l.digest.clone(),
                size: l.size,
                note: "kept (zstd is not smaller)",
            });
        }
        return Ok(Outcome {
            compression: Compression::Zstd,
            digest: info.digest,
            size: info.size,
            note: "zstd",
        });
    }
    if info.compression == Compression::None {
        return Ok(Outcome {
            compression: Compression::None,
            digest: info.digest,
            size: info.size,
            note: "stored uncompressed (ratio)",
        });
    }
    // the first bytes promised more than the whole layer gave (rare): the rule still holds
    if from == Compression::None {
        ensure_blobs(c, src, dst, std::slice::from_ref(l), true)?;
        return Ok(Outcome {
            compression: Compression::None,
            digest: l.digest.clone(),
            size: l.size,
            note: "kept uncompressed (ratio)",
        });
    }
    let info = stream(c, src, dst, (l, from), diff_id, None, None, quiet)?;
    Ok(Outcome {
        compression: Compression::None,
        digest: info.digest,
        size: info.size,
        note: "stored uncompressed (ratio)",
    })
}

/// Bytes of a layer's uncompressed content `zstd_pays` judges from.
const JUDGE: usize = 4 << 20;

/// Whether zstd at `level` shrinks `sample` below `min_ratio` of its size.
fn zstd_pays(sample: &[u8], level: i32, min_ratio: f64) -> bool {
    if sample.is_empty() {
        return true;
    }
    match zstd::bulk::compress(sample, level) {
        Ok(z) => (z.len() as f64) < min_ratio * sample.len() as f64,
        Err(_) => true, // let the real pass say what is wrong
    }
}

/// Whether zstd pays for an uncompressed layer, judged from its first [`JUDGE`] bytes. When it
/// does not, the rest of the same download is read and the whole layer verified (digest and
/// size), so a layer that is kept as it is was still checked, in one download; when it does,
/// the download is dropped after its first bytes and the layer is streamed through zstd.
fn judge_uncompressed(
    c: &mut Client,
    src: &Loc,
    l: &Descriptor,
    level: i32,
    min_ratio: f64,
) -> Result<bool> {
    use std::io::Read as _;
    let mut body = store::open_blob(c, src, &l.digest)?;
    let mut head = Vec::with_capacity(JUDGE.min(l.size as usize));
    (&mut body)
        .take(JUDGE as u64)
        .read_to_end(&mut head)
        .map_err(|e| format!("downloading layer {}: {e}", l.digest))?;
    if zstd_pays(&head, level, min_ratio) {
        return Ok(true);
    }
    // the bytes read so far, then the rest of the same download, verified as one blob
    let mut whole = std::io::Cursor::new(head).chain(body);
    read_verified(
        &mut whole,
        l,
        &format!("layer {} downloaded from {}", l.digest, src.name()),
        &mut |_| Ok(()),
    )?;
    Ok(false)
}

/// Download -> verify -> decompress -> (zstd at `level`, or nothing) -> upload, in one pass.
#[allow(clippy::too_many_arguments)]
fn stream(
    c: &mut Client,
    src: &Loc,
    dst: &Loc,
    (l, from): (&Descriptor, Compression),
    diff_id: &Digest,
    level: Option<i32>,
    judge: Option<f64>,
    quiet: bool,
) -> Result<LayerInfo> {
    let mut body = store::open_blob(c, src, &l.digest)?;
    let (tx, rx) = sync_channel::<Data>(1);
    let want = l.clone();
    let want_diff = diff_id.clone();
    let src_name = src.name();
    let producer = std::thread::spawn(move || {
        let mut ch = Chunker::new(CHUNK, tx);
        let r = (|| -> std::result::Result<LayerInfo, Error> {
            let zstd_writer = |lv: i32| -> std::result::Result<LayerWriter, Error> {
                Ok(LayerWriter::with_encoder(
                    Compression::Zstd,
                    Box::new(NativeZstd::new(Some(lv), 1).map_err(|e| Error::Protocol {
                        reason: format!("libzstd: {e}"),
                    })?),
                ))
            };
            // with `judge`, the first JUDGE bytes of content are held, and decide zstd or none
            let mut held: Option<Vec<u8>> = judge.map(|_| Vec::new());
            let mut lw = match (level, judge) {
                (Some(lv), None) => Some(zstd_writer(lv)?),
                (None, _) => Some(LayerWriter::new(Compression::None, None)),
                (Some(_), Some(_)) => None,
            };
            let decide = |held: &mut Option<Vec<u8>>,
                          lw: &mut Option<LayerWriter>,
                          ch: &mut Chunker|
             -> std::result::Result<(), Error> {
                if let (Some(h), Some(lv), Some(ratio)) = (held.take(), level, judge) {
                    let mut w = if zstd_pays(&h, lv, ratio) {
                        zstd_writer(lv)?
                    } else {
                        LayerWriter::new(Compression::None, None)
                    };
                    w.write(&h, &mut |z: &[u8]| ch.push(z))?;
                    *lw = Some(w);
                }
                Ok(())
            };
            let mut dec = compress::decoder::<Error>(from);
            let what = format!("layer {} downloaded from {src_name}", want.digest);
            read_verified(&mut body, &want, &what, &mut |piece: &[u8]| {
                dec.write(piece, &mut |o: &[u8]| {
                    if let Some(h) = held.as_mut() {
                        h.extend_from_slice(o);
                        if h.len() >= JUDGE {
                            decide(&mut held, &mut lw, &mut ch)?;
                        }
                        return Ok(());
                    }
                    match lw.as_mut() {
                        Some(w) => w.write(o, &mut |z: &[u8]| ch.push(z)),
                        None => Ok(()),
                    }
                })
                .map_err(resolve::flatten)
            })?;
            dec.finish(&mut |o: &[u8]| {
                if let Some(h) = held.as_mut() {
                    h.extend_from_slice(o);
                    return Ok(());
                }
                match lw.as_mut() {
                    Some(w) => w.write(o, &mut |z: &[u8]| ch.push(z)),
                    None => Ok(()),
                }
            })
            .map_err(resolve::flatten)?;
            decide(&mut held, &mut lw, &mut ch)?;
            let lw = lw.ok_or_else(|| Error::Protocol {
                reason: "no layer writer".into(),
            })?;
            let info = lw.finish(&mut |z: &[u8]| ch.push(z))?;
            if info.diff_id != want_diff {
                return Err(Error::DigestMismatch {
                    what: format!("uncompressed layer {} (diff_id in the config)", want.digest),
                    expected: want_diff.clone(),
                    found: info.diff_id,
                });
            }
            Ok(info)
        })();
        ch.done(r);
    });
    let cfg = UploadConfig {
        chunk_max: CHUNK as u64,
        monolithic_max: CHUNK as u64,
        ..UploadConfig::default()
    };
    let label = format!(
        "{} {}",
        if level.is_some() { "zstd" } else { "tar" },
        l.digest.short()
    );
    let identity = format!("{label} of {} at level {level:?}", l.digest);
    let mut p = Progress::new(label, None, quiet);
    let r = store::put_stream(c, dst, cfg, rx, None, &mut p, Some(&identity));
    let _ = producer.join();
    let (_, info) = r?;
    p.finish(info.size);
    Ok(info)
}
