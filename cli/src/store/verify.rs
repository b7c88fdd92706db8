//! Checking a blob's bytes against its descriptor as they are read (a leaf module: every
//! store and command reads blobs through it).

use std::io::Read;
use std::sync::mpsc::sync_channel;

use lamina_core::digest::Hasher;
use lamina_core::image::Descriptor;
use lamina_core::Error;

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
