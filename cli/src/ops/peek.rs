//! Reading inside an image without downloading it, over any store: each layer's entries
//! (an uncompressed tar by `Range` requests or seeks, [`peek::Walk`]; a compressed one
//! streamed and decoded; a raw artifact layer from its annotations, no read at all), the merged
//! tree ([`peek::Tree`]), and one file's bytes.

use std::io::Read;

use lamina_core::digest::Hasher;
use lamina_core::peek::report::{self, FileBytes, HeadRead, HeadWant, Located};
use lamina_core::peek::{LayerRead, Place, Tree, Want};
use lamina_core::registry::Ranged;
use lamina_core::untar::Header;
use lamina_core::{Digest, Error};

use crate::error::Result;
use crate::net::client::Client;
use crate::ops::resolve::{self, PlatformSel};
use crate::store::{self, Loc};

pub use lamina_core::peek::{Holds, Peeked};

pub use lamina_core::peek::report::{Cost, Entry};

/// Opens `loc`'s image for the platform `platform` names (one: `all` is refused, as `cmd`
/// reads one image).
pub fn open(client: &mut Client, loc: &Loc, platform: Option<&str>, cmd: &str) -> Result<Peeked> {
    let sel = PlatformSel::parse(platform)?;
    if matches!(sel, PlatformSel::All) {
        return Err(Box::new(Error::Usage {
            reason: format!("{cmd} reads one platform (--platform os/arch)"),
        }));
    }
    let img = resolve::fetch_one(client, loc, &sel)?;
    let config = resolve::config(client, loc, &img.manifest)?;
    Ok(Peeked::of(&img.manifest, &config)?)
}

/// The entries of layer `idx`, each with where its bytes are: core's [`LayerRead`] met with
/// the store's ranges (or seeks) and streams.
pub fn entries(
    client: &mut Client,
    loc: &Loc,
    p: &Peeked,
    idx: usize,
    cost: &mut Cost,
    quiet: bool,
) -> Result<Vec<Entry>> {
    let d = &p.layers[idx];
    let mut lr = LayerRead::new(p, idx);
    let mut out = Vec::new();
    loop {
        match lr.poll()? {
            Want::Entry(h, place) => out.push((h, place)),
            Want::Note(n) => {
                if !quiet {
                    crate::ui::progress::warn(&n.replace("the registry", &loc.to_string()));
                }
            }
            Want::Range(r) => {
                cost.ranges += 1;
                let got = store::read_range(client, loc, &d.digest, r.clone())?;
                if let Ranged::Bytes(b) = &got {
                    cost.range_bytes += b.len() as u64;
                }
                lr.ranged(r, got)?;
            }
            Want::Stream => {
                cost.streamed.push(idx);
                let mut body = store::open_blob(client, loc, &d.digest)?;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = body
                        .read(&mut buf)
                        .map_err(|e| format!("layer {idx} ({}) from {loc}: {e}", d.digest))?;
                    if n == 0 {
                        break;
                    }
                    cost.stream_bytes += n as u64;
                    lr.stream(&buf[..n])?;
                    for n in lr.drain(&mut out)? {
                        if !quiet {
                            crate::ui::progress::warn(&n);
                        }
                    }
                }
                lr.stream_end()?;
            }
            Want::More => {
                return Err(Error::internal("LayerRead wants more of a stream not opened").into())
            }
            Want::Done => return Ok(out),
        }
    }
}

/// The merged tree of the layers `only` names (all when `None`), bottom to top.
pub fn tree(
    client: &mut Client,
    loc: &Loc,
    p: &Peeked,
    only: Option<&[usize]>,
    cost: &mut Cost,
    quiet: bool,
) -> Result<Tree> {
    let mut t = report::tree_for(p);
    for idx in 0..p.layers.len() {
        if only.is_some_and(|o| !o.contains(&idx)) {
            continue;
        }
        t.begin(idx);
        for (h, place) in entries(client, loc, p, idx, cost, quiet)? {
            t.add(&h, place)?;
        }
    }
    t.end();
    if !quiet {
        for w in t.warnings() {
            crate::ui::progress::warn(&format!("warning: {w}"));
        }
    }
    Ok(t)
}

/// A reader of the file at `place` (`size` bytes): one range of its layer, or the layer's
/// blob; for a compressed layer, the layer streamed and decoded up to the file; for a
/// zstd:chunked one, the file's frames (one range) decoded. With it, the content's digest when
/// the layer's table gives one ([`copy_file`] checks it).
pub fn open_file(
    client: &mut Client,
    loc: &Loc,
    p: &Peeked,
    place: &Place,
    size: u64,
    cost: &mut Cost,
) -> Result<(Box<dyn Read + Send>, Option<Digest>)> {
    let fb = FileBytes::of(p, place, size);
    if size == 0 {
        return Ok((Box::new(std::io::empty()), fb.digest));
    }
    if let Holds::Nothing(why) = &p.holds[fb.layer] {
        return Err(
            Error::internal(format!("a file in a layer lamina does not read: {why}")).into(),
        );
    }
    let digest = &p.layers[fb.layer].digest;
    let body = match fb.blob_range() {
        Some(r) => {
            cost.ranges += 1;
            cost.range_bytes += r.end - r.start;
            store::open_range(client, loc, digest, r)?
        }
        None => {
            cost.streamed.push(fb.layer);
            store::open_blob(client, loc, digest)?
        }
    };
    let r: Box<dyn Read + Send> = match fb.window() {
        None => body,
        Some(w) => Box::new(DecodedRange::new(body, w)),
    };
    Ok((r, fb.digest))
}

/// A window of what a compressed blob (or a file's frames) decodes to ([`report::FileWindow`]),
/// read as it is needed.
struct DecodedRange {
    body: Box<dyn Read + Send>,
    window: report::FileWindow,
    /// The compressed bytes read last (kept: one allocation for the whole file).
    raw: Vec<u8>,
    out: Vec<u8>,
    off: usize,
    done: bool,
}

impl DecodedRange {
    fn new(body: Box<dyn Read + Send>, window: report::FileWindow) -> Self {
        DecodedRange {
            body,
            window,
            raw: vec![0u8; 256 << 10],
            out: Vec::new(),
            off: 0,
            done: false,
        }
    }
}

impl Read for DecodedRange {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.off < self.out.len() {
                let n = (self.out.len() - self.off).min(buf.len());
                buf[..n].copy_from_slice(&self.out[self.off..self.off + n]);
                self.off += n;
                return Ok(n);
            }
            if self.window.full() {
                return Ok(0);
            }
            if self.done {
                return Err(std::io::Error::other(
                    "the layer ended before the file's last byte",
                ));
            }
            self.out.clear();
            self.off = 0;
            let n = self.body.read(&mut self.raw)?;
            let r = if n == 0 {
                self.done = true;
                self.window.finish(&mut self.out)
            } else {
                self.window.write(&self.raw[..n], &mut self.out)
            };
            r.map_err(|e| std::io::Error::other(e.to_string()))?;
        }
    }
}

/// The `size` bytes of a file [`open_file`] opened, each piece to `each`: exactly `size`, or an
/// error naming `what` (a range read cannot be checked against the layer's digest; its length
/// can, and its content's `digest` when the layer's table gives one).
pub fn copy_file(
    (mut r, digest): (Box<dyn Read + Send>, Option<Digest>),
    size: u64,
    what: &str,
    each: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    let mut hash = digest.as_ref().map(|_| Hasher::new());
    loop {
        let n = r.read(&mut buf).map_err(|e| Error::Io {
            what: what.to_string(),
            reason: e.to_string(),
        })?;
        if n == 0 {
            break;
        }
        got += n as u64;
        if let Some(h) = &mut hash {
            h.update(&buf[..n]);
        }
        each(&buf[..n])?;
    }
    if got != size {
        return Err(Box::new(Error::SizeMismatch {
            what: what.to_string(),
            expected: size,
            found: got,
        }));
    }
    if let (Some(h), Some(want)) = (hash, digest) {
        let found = h.finish();
        if found != want {
            return Err(Box::new(Error::DigestMismatch {
                what: what.to_string(),
                expected: want,
                found,
            }));
        }
    }
    Ok(())
}

/// Where the file at `path` is ([`report::locate`]: from the top layer down, only as far as
/// needed; links followed): the path found (after links) and its entry.
pub fn locate(
    client: &mut Client,
    loc: &Loc,
    p: &Peeked,
    path: &str,
    cost: &mut Cost,
    quiet: bool,
) -> Result<(String, Header, Place)> {
    let mut read: Vec<Option<Vec<Entry>>> = vec![None; p.layers.len()];
    let image = loc.to_string();
    loop {
        match report::locate(p, path, &read, &image)? {
            Located::Need(idx) => read[idx] = Some(entries(client, loc, p, idx, cost, quiet)?),
            Located::Found(path, h, place) => return Ok((path, h, place)),
        }
    }
}

/// What the header of the weight file at `place` (`size` bytes, named `path`) says, read as
/// [`HeadRead`] asks: by ranges of its layer (a few KiB to the header's length), or from the
/// file's bytes as a stream when its layer is compressed or the registry ignores `Range`.
pub fn header_facts(
    client: &mut Client,
    loc: &Loc,
    p: &Peeked,
    path: &str,
    place: &Place,
    size: u64,
    cost: &mut Cost,
) -> Result<Option<lamina_core::pack::Facts>> {
    let mut h = HeadRead::new(p, path, place, size);
    loop {
        match h.poll()? {
            HeadWant::Range(layer, r) => {
                cost.ranges += 1;
                let got = store::read_range(client, loc, &p.layers[layer].digest, r)?;
                if let Ranged::Bytes(b) = &got {
                    cost.range_bytes += b.len() as u64;
                }
                h.ranged(got)?;
            }
            HeadWant::Stream(_) => {
                let (mut r, _) = open_file(client, loc, p, place, size, cost)?;
                let mut buf = vec![0u8; 256 << 10];
                while h.wants_more() {
                    let n = r.read(&mut buf).map_err(|e| format!("{path}: {e}"))?;
                    if n == 0 {
                        break;
                    }
                    cost.stream_bytes += n as u64;
                    h.file(&buf[..n]);
                }
            }
            HeadWant::Done(f) => return Ok(f),
        }
    }
}
