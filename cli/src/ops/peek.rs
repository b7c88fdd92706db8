//! Reading inside an image without downloading it, over any store: each layer's entries
//! (an uncompressed tar by `Range` requests or seeks, [`peek::Walk`]; a compressed one
//! streamed and decoded; a raw artifact layer from its annotations, no read at all), the merged
//! tree ([`peek::Tree`]), and one file's bytes.

use std::io::Read;

use lamina_core::compress::{self, Compression};
use lamina_core::peek::{self, LayerRead, Place, Tree, Want};
use lamina_core::registry::Ranged;
use lamina_core::untar::{Header, Kind};
use lamina_core::Error;

use crate::error::Result;
use crate::net::client::Client;
use crate::ops::resolve::{self, PlatformSel};
use crate::store::{self, Loc};

pub use lamina_core::peek::{Holds, Peeked};

/// A layer's entry, and where its bytes are (files).
pub type Entry = (Header, Option<Place>);

/// What reading cost, for `--json` and the benchmark.
#[derive(Debug, Default, Clone)]
pub struct Cost {
    /// Range requests (or seeks) made.
    pub ranges: u64,
    /// Blob bytes read by them.
    pub range_bytes: u64,
    /// Layers read whole as a stream (compressed, or a registry that ignores `Range`).
    pub streamed: Vec<usize>,
    /// Blob bytes read by streams.
    pub stream_bytes: u64,
}

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
                    loop {
                        match lr.poll()? {
                            Want::Entry(h, place) => out.push((h, place)),
                            Want::Note(n) if !quiet => crate::ui::progress::warn(&n),
                            Want::More | Want::Note(_) => break,
                            w => {
                                return Err(Error::internal(format!(
                                    "LayerRead wants {w:?} mid-stream"
                                ))
                                .into())
                            }
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
    let mut t = if p.artifact {
        Tree::side_by_side()
    } else {
        Tree::new()
    };
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

/// A reader of the file `node` names (`size` bytes): one range of its layer, or the layer's
/// blob; for a compressed layer, the layer streamed and decoded up to the file.
pub fn open_file(
    client: &mut Client,
    loc: &Loc,
    p: &Peeked,
    place: &Place,
    size: u64,
    cost: &mut Cost,
) -> Result<Box<dyn Read + Send>> {
    match place {
        Place::Blob { layer } => {
            cost.ranges += 1;
            cost.range_bytes += size;
            store::open_range(client, loc, &p.layers[*layer].digest, 0..size)
        }
        Place::Tar { layer, at } => match &p.holds[*layer] {
            Holds::Tar(Compression::None) => {
                cost.ranges += 1;
                cost.range_bytes += size;
                store::open_range(client, loc, &p.layers[*layer].digest, *at..*at + size)
            }
            Holds::Tar(c) => {
                cost.streamed.push(*layer);
                let body = store::open_blob(client, loc, &p.layers[*layer].digest)?;
                Ok(Box::new(DecodedRange::new(body, *c, *at, size)))
            }
            other => Err(Error::internal(format!("a file in a layer that holds {other:?}")).into()),
        },
    }
}

/// Bytes `at..at + len` of a compressed blob's decoded stream, read as they are needed.
struct DecodedRange {
    body: Box<dyn Read + Send>,
    dec: Box<dyn compress::Decoder<Error>>,
    pos: u64,
    at: u64,
    left: u64,
    out: Vec<u8>,
    off: usize,
    done: bool,
}

impl DecodedRange {
    fn new(body: Box<dyn Read + Send>, c: Compression, at: u64, len: u64) -> Self {
        DecodedRange {
            body,
            dec: compress::decoder::<Error>(c),
            pos: 0,
            at,
            left: len,
            out: Vec::new(),
            off: 0,
            done: false,
        }
    }
}

impl Read for DecodedRange {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.left == 0 {
                return Ok(0);
            }
            if self.off < self.out.len() {
                let n = (self.out.len() - self.off)
                    .min(buf.len())
                    .min(self.left as usize);
                buf[..n].copy_from_slice(&self.out[self.off..self.off + n]);
                self.off += n;
                self.left -= n as u64;
                return Ok(n);
            }
            if self.done {
                return Err(std::io::Error::other(
                    "the layer ended before the file's last byte",
                ));
            }
            self.out.clear();
            self.off = 0;
            let mut raw = vec![0u8; 256 << 10];
            let n = self.body.read(&mut raw)?;
            let (pos, at, out) = (&mut self.pos, self.at, &mut self.out);
            let mut keep = |o: &[u8]| -> std::result::Result<(), Error> {
                let start = *pos;
                let end = start + o.len() as u64;
                if end > at {
                    let from = at.saturating_sub(start) as usize;
                    out.extend_from_slice(&o[from..]);
                }
                *pos = end;
                Ok(())
            };
            let r = if n == 0 {
                self.done = true;
                self.dec.finish(&mut keep)
            } else {
                self.dec.write(&raw[..n], &mut keep)
            };
            r.map_err(|e| std::io::Error::other(resolve::flatten(e).to_string()))?;
        }
    }
}

/// Where the file at `path` is, reading layers from the top down only as far as needed (a
/// model layer on a compressed base finds its files without the base being read): the topmost
/// entry of the path wins unless a layer above hides it ([`peek::hides`]); symlinks (and hard
/// links) are followed, 40 at most. Of a model artifact, the first layer holding the path, as
/// `extract` keeps it. Gives the path found (after links) and its entry.
pub fn locate(
    client: &mut Client,
    loc: &Loc,
    p: &Peeked,
    path: &str,
    cost: &mut Cost,
    quiet: bool,
) -> Result<(String, Header, Place)> {
    let mut cache: Vec<Option<Vec<Entry>>> = vec![None; p.layers.len()];
    let order: Vec<usize> = if p.artifact {
        (0..p.layers.len()).collect()
    } else {
        (0..p.layers.len()).rev().collect()
    };
    let not_found = |what: &str| -> Box<dyn std::error::Error + Send + Sync> {
        Box::new(Error::NotFound {
            what: format!("{what} in {loc}"),
        })
    };
    let mut want = peek::normal(path).ok_or_else(|| not_found(path))?;
    'hops: for _ in 0..40 {
        for &idx in &order {
            if cache[idx].is_none() {
                cache[idx] = Some(entries(client, loc, p, idx, cost, quiet)?);
            }
            let es = cache[idx].as_deref().unwrap_or_default();
            // the layer's own last entry of the path is the file; else whatever it hides
            let mine = es
                .iter()
                .rev()
                .find(|(h, _)| peek::normal(&h.path).as_deref() == Some(want.as_str()));
            if let Some((h, place)) = mine {
                match &h.kind {
                    Kind::File => {
                        let place = place.clone().ok_or_else(|| not_found(&want))?;
                        return Ok((want, h.clone(), place));
                    }
                    Kind::Dir => {
                        return Err(Box::new(Error::Usage {
                            reason: format!("{want} is a directory in {loc} (see `lamina ls`)"),
                        }))
                    }
                    Kind::Symlink(t) => {
                        let base = want.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                        let next = if t.starts_with('/') || base.is_empty() {
                            t.clone()
                        } else {
                            format!("{base}/{t}")
                        };
                        want = peek::normal(&next).ok_or_else(|| not_found(&next))?;
                        continue 'hops;
                    }
                    Kind::Hardlink(t) => {
                        want = peek::normal(t).ok_or_else(|| not_found(t))?;
                        continue 'hops;
                    }
                    Kind::Other(_) => {
                        return Err(format!("{want} in {loc} is not a regular file").into())
                    }
                }
            }
            if !p.artifact && es.iter().any(|(h, _)| peek::hides(h, &want)) {
                return Err(not_found(&want));
            }
        }
        return Err(not_found(&want));
    }
    Err(format!("{path} in {loc}: more than 40 symbolic links").into())
}

/// Whether `path` names a weight file whose header lamina reads (safetensors, GGUF).
pub fn has_header(path: &str) -> bool {
    let p = path.to_ascii_lowercase();
    p.ends_with(".safetensors") || p.ends_with(".gguf")
}

/// What the header of the weight file at `place` (`size` bytes, named `path`) says, read as
/// [`lamina_core::pack::HeadReader`] asks: by ranges of its layer (a few KiB to the header's
/// length), or from the layer's stream when it is compressed or the registry ignores `Range`.
pub fn header_facts(
    client: &mut Client,
    loc: &Loc,
    p: &Peeked,
    path: &str,
    place: &Place,
    size: u64,
    cost: &mut Cost,
) -> Result<Option<lamina_core::pack::Facts>> {
    let mut h = lamina_core::pack::HeadReader::new(path);
    let ranged = match place {
        Place::Blob { layer } => Some((*layer, 0)),
        Place::Tar { layer, at } => {
            matches!(p.holds[*layer], Holds::Tar(Compression::None)).then_some((*layer, *at))
        }
    };
    if let Some((layer, base)) = ranged {
        let d = &p.layers[layer].digest;
        while let Some(r) = h.next_read() {
            let end = r.end.min(size);
            if end <= r.start {
                break;
            }
            cost.ranges += 1;
            match store::read_range(client, loc, d, base + r.start..base + end)? {
                Ranged::Bytes(b) => {
                    cost.range_bytes += b.len() as u64;
                    let short = (b.len() as u64) < end - r.start;
                    h.write(&b);
                    if short {
                        return Err(format!(
                            "{path}: layer {layer} ended inside the file's header"
                        )
                        .into());
                    }
                }
                Ranged::Ignored { .. } => {
                    return streamed_facts(client, loc, p, path, place, size, cost)
                }
            }
            if end < r.end {
                break; // the file ended
            }
        }
        return Ok(h.finish());
    }
    streamed_facts(client, loc, p, path, place, size, cost)
}

/// [`header_facts`] from the file's bytes as a stream, read no further than the header.
fn streamed_facts(
    client: &mut Client,
    loc: &Loc,
    p: &Peeked,
    path: &str,
    place: &Place,
    size: u64,
    cost: &mut Cost,
) -> Result<Option<lamina_core::pack::Facts>> {
    let mut h = lamina_core::pack::HeadReader::new(path);
    let mut r = open_file(client, loc, p, place, size, cost)?;
    let mut buf = vec![0u8; 256 << 10];
    while h.wants_more() {
        let n = r.read(&mut buf).map_err(|e| format!("{path}: {e}"))?;
        if n == 0 {
            break;
        }
        cost.stream_bytes += n as u64;
        h.write(&buf[..n]);
    }
    Ok(h.finish())
}
