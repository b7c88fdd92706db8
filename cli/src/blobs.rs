//! Making sure an image's blobs exist at the destination: mounted across repositories of one
//! registry, found by HEAD (or in the layout), or streamed from wherever they are (download and
//! upload in one pass, digest verified, never held in memory).

use std::io::Read;
use std::sync::mpsc::sync_channel;

use lamina_core::digest::Hasher;
use lamina_core::image::{detect_kind, Descriptor, Index, Manifest};
use lamina_core::layer::LayerInfo;
use lamina_core::media::DocKind;
use lamina_core::registry::{MountBlob, UploadConfig};
use lamina_core::Error;

use crate::client::anyhow_like::Result;
use crate::client::{Chunker, Client, Data};
use crate::progress::Progress;
use crate::resolve::Image;
use crate::store::{self, Loc};

/// Ensures every blob of `blobs` (found in `src`) is in `dst`.
pub fn ensure_blobs(
    client: &mut Client,
    src: &Loc,
    dst: &Loc,
    blobs: &[Descriptor],
    quiet: bool,
) -> Result<()> {
    if src.same_store(dst) {
        return Ok(()); // the manifest we read proves they are there
    }
    let (mut mounted, mut present, mut copied) = (0, 0, 0);
    for b in blobs {
        if let (Loc::Registry(s), Loc::Registry(d)) = (src, dst) {
            if s.registry == d.registry
                && client.run(d, MountBlob::new(&d.repository, &s.repository, &b.digest))?
            {
                mounted += 1;
                continue;
            }
        }
        if store::has_blob(client, dst, b, true)? {
            present += 1;
            continue;
        }
        copy_blob(client, src, dst, b, quiet)?;
        copied += 1;
    }
    if !quiet && !blobs.is_empty() {
        let mounted = if matches!(dst, Loc::Registry(_)) {
            format!("{mounted} mounted, ")
        } else {
            String::new()
        };
        eprintln!(
            "base layers in {}: {mounted}{present} already there, {copied} copied",
            dst.name()
        );
    }
    Ok(())
}

/// Reads a blob's body to its end, handing each piece to `each`, and checks it against its
/// descriptor: never more bytes than its size (a lying registry cannot make us read without
/// end), then exactly its size and digest. `what` names the blob in errors.
pub fn read_verified(
    body: &mut dyn Read,
    want: &Descriptor,
    what: &str,
    each: &mut dyn FnMut(&[u8]) -> std::result::Result<(), Error>,
) -> std::result::Result<(), Error> {
    let mut v = Verify::new(want, what);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = body.read(&mut buf).map_err(|e| v.read_error(e))?;
        if n == 0 {
            break;
        }
        v.update(&buf[..n])?;
        each(&buf[..n])?;
    }
    v.finish()
}

/// [`read_verified`] with the reading and hashing on a thread of their own, so that they
/// overlap with what `each` does (untar and write files): hashing a blob costs about as much
/// as writing it, and done in turn with the writes it made `extract -o DIR/` take 1.4x the
/// time of `curl | tar -x`. The same checks, and the same errors: `each`'s first error stops
/// the download and is returned at once (the reader ends at its next read); otherwise the
/// reader's (a cut download, a size or digest mismatch, which as with [`read_verified`] comes
/// after `each` saw every byte). Memory is [`AHEAD_BUFS`] buffers of [`AHEAD_BUF`] bytes,
/// whatever the blob's size.
pub fn read_verified_ahead(
    mut body: Box<dyn Read + Send>,
    want: &Descriptor,
    what: &str,
    each: &mut dyn FnMut(&[u8]) -> std::result::Result<(), Error>,
) -> std::result::Result<(), Error> {
    let (full_tx, full_rx) = sync_channel::<(Vec<u8>, usize)>(AHEAD_BUFS);
    let (free_tx, free_rx) = sync_channel::<Vec<u8>>(AHEAD_BUFS);
    for _ in 0..AHEAD_BUFS {
        let _ = free_tx.send(vec![0u8; AHEAD_BUF]);
    }
    let (want_r, what_r) = (want.clone(), what.to_string());
    let reader = std::thread::spawn(move || {
        let mut v = Verify::new(&want_r, &what_r);
        // stops when `each` failed: no buffer comes back, or none is taken
        while let Ok(mut buf) = free_rx.recv() {
            let n = fill(&mut *body, &mut buf).map_err(|e| v.read_error(e))?;
            if n == 0 {
                return v.finish();
            }
            v.update(&buf[..n])?;
            if full_tx.send((buf, n)).is_err() {
                break;
            }
        }
        Ok(())
    });
    for (buf, n) in full_rx {
        each(&buf[..n])?;
        let _ = free_tx.send(buf);
    }
    reader
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// Size of the buffers of [`read_verified_ahead`], and so of `each`'s pieces (an uncompressed
/// layer's file writes). Not larger: with 1 MiB buffers, the kernel's part of the file writes
/// measured two to three times slower (`scripts/bench-extract.sh`); 64 KiB ones were no faster.
const AHEAD_BUF: usize = 128 << 10;
/// Buffers in [`read_verified_ahead`]: the reader runs ahead of `each` by up to this many.
const AHEAD_BUFS: usize = 8;

/// Reads until `buf` is full or the body ends; the bytes read.
fn fill(body: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match body.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The checks of [`read_verified`], fed piece by piece.
struct Verify<'a> {
    h: Hasher,
    want: &'a Descriptor,
    what: &'a str,
}

impl<'a> Verify<'a> {
    fn new(want: &'a Descriptor, what: &'a str) -> Self {
        Verify {
            h: Hasher::new(),
            want,
            what,
        }
    }

    fn read_error(&self, e: std::io::Error) -> Error {
        Error::Protocol {
            reason: format!("downloading {}: {e}", self.what),
        }
    }

    /// Hashes `piece`; an error as soon as the blob is longer than its size.
    fn update(&mut self, piece: &[u8]) -> std::result::Result<(), Error> {
        self.h.update(piece);
        if self.h.len() > self.want.size {
            return Err(Error::SizeMismatch {
                what: self.what.to_string(),
                expected: self.want.size,
                found: self.h.len(),
            });
        }
        Ok(())
    }

    /// Checks the size and the digest once the body ended.
    fn finish(self) -> std::result::Result<(), Error> {
        let size = self.h.len();
        if size != self.want.size {
            return Err(Error::SizeMismatch {
                what: self.what.to_string(),
                expected: self.want.size,
                found: size,
            });
        }
        let found = self.h.finish();
        if found != self.want.digest {
            return Err(Error::DigestMismatch {
                what: self.what.to_string(),
                expected: self.want.digest.clone(),
                found,
            });
        }
        Ok(())
    }
}

/// Streams one blob from `src` to `dst`, verifying its digest and size on the way.
pub fn copy_blob(
    client: &mut Client,
    src: &Loc,
    dst: &Loc,
    b: &Descriptor,
    quiet: bool,
) -> Result<()> {
    let mut body = store::open_blob(client, src, &b.digest)?;
    let what = format!("blob {} from {}", b.digest, src.name());
    let mut p = Progress::new(format!("copy {}", b.digest.short()), Some(b.size), quiet);
    let d = match dst {
        Loc::Layout(l) => {
            l.write_blob_from(&mut body, b, &what, &mut p)?;
            p.finish(b.size);
            return Ok(());
        }
        Loc::Registry(d) => d,
    };
    let (tx, rx) = sync_channel::<Data>(1);
    let want = b.clone();
    let chunk = 16usize << 20;
    let reader = std::thread::spawn(move || {
        let mut ch = Chunker::new(chunk, tx);
        let r = (|| -> std::result::Result<LayerInfo, Error> {
            read_verified(&mut body, &want, &what, &mut |piece: &[u8]| {
                ch.push(piece);
                if ch.closed {
                    return Err(Error::Protocol {
                        reason: "upload stopped".into(),
                    });
                }
                Ok(())
            })?;
            let (digest, size) = (want.digest.clone(), want.size);
            Ok(LayerInfo {
                compression: lamina_core::compress::Compression::None,
                digest: digest.clone(),
                size,
                diff_id: digest,
                uncompressed_size: size,
            })
        })();
        ch.done(r);
    });
    let cfg = UploadConfig {
        chunk_max: chunk as u64,
        monolithic_max: chunk as u64,
        ..UploadConfig::default()
    };
    // a copy cut short is resumed by the next run (the source blob is fetched again, the bytes
    // the destination has are not sent again)
    let identity = format!("copy of {}", b.digest);
    let r = client.upload_stream(d, cfg, rx, None, &mut p, Some(&identity));
    let _ = reader.join();
    r?;
    p.finish(b.size);
    Ok(())
}

/// Copies the platforms of an index that are not being edited (`images` are) into the
/// destination, with their blobs, so the new index points at nothing missing.
pub fn copy_other_platforms(
    client: &mut Client,
    src: &Loc,
    dst: &Loc,
    index: Option<&Index>,
    images: &[Image],
    quiet: bool,
) -> Result<()> {
    let Some(ix) = index else { return Ok(()) };
    let picked: Vec<usize> = images.iter().filter_map(|i| i.index_pos).collect();
    for (i, e) in ix.manifests()?.iter().enumerate() {
        if !picked.contains(&i) {
            copy_manifest(client, src, dst, e, quiet)?;
        }
    }
    Ok(())
}

/// Copies one manifest (and its blobs, or an index and everything under it) unchanged into the
/// destination.
pub fn copy_manifest(
    client: &mut Client,
    src: &Loc,
    dst: &Loc,
    d: &Descriptor,
    quiet: bool,
) -> Result<()> {
    if src.same_store(dst) {
        return Ok(());
    }
    let f = store::get_manifest(client, src, &d.digest.to_string())?;
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
    store::put_manifest(client, dst, &d.digest.to_string(), &mt, f.bytes)?;
    Ok(())
}
