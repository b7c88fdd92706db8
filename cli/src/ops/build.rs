//! Building layer blobs from files or a tar on a thread, into a channel the uploader reads:
//! the one place that turns inputs into compressed, hashed layer bytes (affix, append and
//! modelcars all build here), and the options that shape it (level, `SOURCE_DATE_EPOCH`).

use std::io::Read as _;
use std::path::PathBuf;
use std::sync::mpsc::SyncSender;

use lamina_core::compress::Compression;
use lamina_core::layer::{LayerInfo, LayerWriter, TarInput};
use lamina_core::tar::{EntryKind, PlannedEntry, TarWriter};
use lamina_core::Error;

use crate::error::Result;
use crate::net::client::{Chunker, Data};
use crate::ops::zstdenc::NativeZstd;
use crate::ui::progress::human;

/// Refuses a `--level` the compression cannot take: gzip 0-9, zstd 1-19, none none (`auto`
/// may choose gzip, so 0-9). No compression given means the command's default.
pub fn check_level(compression: Option<&str>, level: Option<i32>) -> Result<()> {
    let Some(l) = level else { return Ok(()) };
    let (range, name) = match compression {
        Some("zstd") => (1..=19, "zstd"),
        Some("none") => {
            return Err(Box::new(usage(
                "--level goes with --compression gzip, zstd or auto, not none",
            )))
        }
        Some("gzip") => (0..=9, "gzip"),
        _ => (0..=9, "gzip (what auto may choose)"),
    };
    if !range.contains(&l) {
        return Err(Box::new(usage(&format!(
            "--level {l}: {name} takes levels {} to {}",
            range.start(),
            range.end()
        ))));
    }
    Ok(())
}

pub fn usage(msg: &str) -> Error {
    Error::Usage {
        reason: msg.to_string(),
    }
}

/// `SOURCE_DATE_EPOCH`, when set and valid.
pub fn source_date_epoch() -> Option<u64> {
    std::env::var("SOURCE_DATE_EPOCH").ok()?.trim().parse().ok()
}

pub const READ: usize = 1 << 20;

pub fn build_files(
    entries: Vec<PlannedEntry<PathBuf>>,
    c: Compression,
    level: Option<i32>,
    mtime: u64,
    chunk: usize,
    tx: SyncSender<Data>,
) {
    let mut ch = Chunker::new(chunk, tx);
    let r = (|| -> std::result::Result<LayerInfo, Error> {
        let mut lw = match c {
            // libzstd (one worker thread, so compression overlaps tar building and hashing)
            Compression::Zstd => LayerWriter::with_encoder(
                c,
                Box::new(NativeZstd::new(level, 1).map_err(|e| Error::Protocol {
                    reason: format!("libzstd: {e}"),
                })?),
            ),
            _ => LayerWriter::new(c, level),
        };
        let mut tw = TarWriter::new(mtime);
        let mut err: Option<Error> = None;
        // read in pieces no larger than the chunks handed on: memory stays a few chunks
        let mut buf = vec![0u8; READ.min(chunk.max(64 << 10))];
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
                return Err(Error::Io {
                    what: "the layer".into(),
                    reason: "its upload stopped".into(),
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

/// Says what `--compression auto` chose and why (stderr).
pub fn note_auto(c: &lamina_core::layer::AutoChoice) {
    let pct = |n: u64| {
        if c.total == 0 {
            0.0
        } else {
            n as f64 * 100.0 / c.total as f64
        }
    };
    eprintln!(
        "compression auto: {} ({:.0}% of {} is weights; gzip would save about {:.0}%)",
        c.compression.name(),
        pct(c.weights),
        human(c.total),
        pct(c.saving)
    );
}

/// Most bytes of stdin read ahead to decide `--compression auto` on a plain tar.
const AUTO_PREFIX: usize = 4 << 20;

pub fn build_tar(
    path: &str,
    c: Compression,
    auto: bool,
    level: Option<i32>,
    chunk: usize,
    tx: SyncSender<Data>,
) {
    let mut ch = Chunker::new(chunk, tx);
    let r = (|| -> std::result::Result<LayerInfo, Error> {
        let mut input: Box<dyn std::io::Read> = if path == "-" {
            Box::new(std::io::stdin().lock())
        } else {
            Box::new(std::fs::File::open(path).map_err(|x| io(std::path::Path::new(path), x))?)
        };
        let mut c = c;
        if auto {
            // read ahead, decide from the entries seen, then go on with those bytes first
            let mut head = Vec::with_capacity(AUTO_PREFIX);
            (&mut input)
                .take(AUTO_PREFIX as u64)
                .read_to_end(&mut head)
                .map_err(|x| io(std::path::Path::new(path), x))?;
            c = lamina_core::layer::choose_auto_tar_prefix(&head).compression;
            input = Box::new(std::io::Cursor::new(head).chain(input));
        }
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
                return Err(Error::Io {
                    what: "the layer".into(),
                    reason: "its upload stopped".into(),
                });
            }
        }
        t.finish(&mut |o: &[u8]| ch.push(o))
    })();
    ch.done(r);
}

pub fn io(p: &std::path::Path, e: std::io::Error) -> Error {
    Error::Io {
        what: p.display().to_string(),
        reason: e.to_string(),
    }
}

/// How [`stored`] makes a blob of the bytes it reads.
pub enum Shape<'a> {
    /// As they are.
    AsIs,
    /// Between a tar header and trailer (a file made a tar layer).
    Wrap(&'a (Vec<u8>, Vec<u8>)),
    /// Decompressed and re-packed as they stream (see `lamina_core::retar`).
    Reshape(&'a mut lamina_core::retar::Reshape),
}

/// A blob made of `body`'s bytes, into `ch` for the uploader: the bytes checked against `want`
/// as they are read when it is given, then shaped by `shape`. The new blob is uncompressed, so
/// its diff_id is its digest. The bytes are hashed here only when they are not `want`'s
/// verified ones; `done` counts the body's bytes. Stops when the uploader went away. (One loop
/// for a copied blob, a packed file, a wrapped one and a re-packed one.)
pub fn stored(
    mut body: Box<dyn std::io::Read + Send>,
    what: &str,
    want: Option<&lamina_core::image::Descriptor>,
    mut shape: Shape<'_>,
    done: Option<&std::sync::atomic::AtomicU64>,
    ch: &mut Chunker,
) -> std::result::Result<LayerInfo, Error> {
    let as_is = matches!(shape, Shape::AsIs);
    let mut h = (!as_is || want.is_none()).then(lamina_core::digest::Hasher::new);
    let mut size = 0u64;
    let stopped = || Error::Io {
        what: what.to_string(),
        reason: "its upload stopped".into(),
    };
    let mut put = |b: &[u8], ch: &mut Chunker| {
        if let Some(h) = h.as_mut() {
            h.update(b);
        }
        size += b.len() as u64;
        ch.push(b);
    };
    if let Shape::Wrap((header, _)) = &shape {
        put(header, ch);
    }
    let mut piece = |b: &[u8]| -> std::result::Result<(), Error> {
        match &mut shape {
            Shape::AsIs | Shape::Wrap(_) => put(b, ch),
            Shape::Reshape(r) => r.write(b, &mut |o| put(o, ch))?,
        }
        if ch.closed {
            return Err(stopped());
        }
        if let Some(d) = done {
            d.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    };
    match want {
        Some(want) => crate::store::verify::read_verified(&mut body, want, what, &mut piece)?,
        None => {
            let mut buf = vec![0u8; READ];
            loop {
                let n = body.read(&mut buf).map_err(|e| Error::Io {
                    what: what.to_string(),
                    reason: e.to_string(),
                })?;
                if n == 0 {
                    break;
                }
                piece(&buf[..n])?;
            }
        }
    }
    match &mut shape {
        Shape::AsIs => {}
        Shape::Wrap((_, trailer)) => put(trailer, ch),
        Shape::Reshape(r) => r.finish(&mut |o| put(o, ch))?,
    }
    if ch.closed {
        return Err(stopped());
    }
    let digest = match (h, want) {
        (Some(h), _) => h.finish(),
        (None, Some(w)) => w.digest.clone(),
        (None, None) => return Err(Error::internal("a stored blob with no digest")),
    };
    Ok(LayerInfo::stored(digest, size))
}
