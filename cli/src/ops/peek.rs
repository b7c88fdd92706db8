//! Reading inside an image without downloading it, over any store: each layer's entries
//! (an uncompressed tar by `Range` requests or seeks, [`peek::Walk`]; a compressed one
//! streamed and decoded; a raw artifact layer from its annotations, no read at all), the merged
//! tree ([`peek::Tree`]), and one file's bytes.

use std::io::Read;

use lamina_core::artifact::{self, Packing};
use lamina_core::compress::{self, Compression};
use lamina_core::image::{Descriptor, Manifest};
use lamina_core::media;
use lamina_core::peek::{self, Place, Step, Tree, Walk};
use lamina_core::registry::Ranged;
use lamina_core::untar::{Header, Kind};
use lamina_core::Error;

use crate::error::Result;
use crate::net::client::Client;
use crate::ops::resolve::{self, PlatformSel};
use crate::store::{self, Loc};

/// How a layer holds its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holds {
    /// A tar, compressed so.
    Tar(Compression),
    /// The blob is the file at this path (a raw model artifact layer).
    Raw(String),
    /// Nothing lamina reads (an unknown media type, a raw layer without a path).
    Nothing(String),
}

/// An image opened for reading inside.
#[derive(Debug)]
pub struct Peeked {
    /// The manifest's layers.
    pub layers: Vec<Descriptor>,
    /// How each holds its files.
    pub holds: Vec<Holds>,
    /// A model artifact (files side by side) rather than an image (layers over each other).
    pub artifact: bool,
    /// The artifact's format name, or "image".
    pub format: &'static str,
}

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
    peeked(&img.manifest, &config)
}

/// How `manifest`'s layers hold their files.
pub fn peeked(manifest: &Manifest, config: &lamina_core::image::Config) -> Result<Peeked> {
    let read = artifact::read(manifest, config)?;
    let layers = manifest.layers()?;
    if !read.format.is_artifact() {
        let holds = layers
            .iter()
            .map(|d| match media::layer_compression(&d.media_type) {
                Some(c) => Holds::Tar(c),
                None => Holds::Nothing(format!("media type {}", d.media_type)),
            })
            .collect();
        return Ok(Peeked {
            layers,
            holds,
            artifact: false,
            format: "image",
        });
    }
    let mut holds = vec![Holds::Nothing("not listed".into()); layers.len()];
    for p in &read.parts {
        holds[p.index] = match (p.packing, &p.path) {
            (Some(Packing::Raw), Some(path)) => Holds::Raw(path.clone()),
            (Some(Packing::Raw), None) => {
                Holds::Nothing(p.problem.clone().unwrap_or_else(|| "no path".into()))
            }
            (Some(Packing::Tar(c)), _) => Holds::Tar(c),
            (None, _) => Holds::Nothing(format!("media type {}", layers[p.index].media_type)),
        };
    }
    Ok(Peeked {
        layers,
        holds,
        artifact: true,
        format: read.format.name(),
    })
}

/// The entries of layer `idx`, each with where its bytes are.
pub fn entries(
    client: &mut Client,
    loc: &Loc,
    p: &Peeked,
    idx: usize,
    cost: &mut Cost,
    quiet: bool,
) -> Result<Vec<Entry>> {
    let d = &p.layers[idx];
    let mut out = Vec::new();
    match &p.holds[idx] {
        Holds::Raw(path) => out.push((
            Header {
                path: path.clone(),
                kind: Kind::File,
                size: d.size,
                mode: 0o644,
                mtime: 0,
                at: 0,
            },
            Some(Place::Blob { layer: idx }),
        )),
        Holds::Nothing(why) => {
            if !quiet {
                crate::ui::progress::warn(&format!("warning: layer {idx} skipped: {why}"));
            }
        }
        Holds::Tar(Compression::None) => {
            let mut w = Walk::new(Some(d.size));
            loop {
                match w.poll()? {
                    Step::Entry(h) => {
                        let at = h.at;
                        out.push((h, Some(Place::Tar { layer: idx, at })));
                    }
                    Step::End => break,
                    Step::Need(r) => {
                        cost.ranges += 1;
                        match store::read_range(client, loc, &d.digest, r.clone())? {
                            Ranged::Bytes(b) => {
                                cost.range_bytes += b.len() as u64;
                                if b.is_empty() {
                                    return Err(truncated(idx, d, r.start));
                                }
                                w.give(r.start, &b)?;
                            }
                            Ranged::Ignored { .. } => {
                                if !quiet {
                                    crate::ui::progress::warn(&format!(
                                        "note: {loc} answers Range requests with the whole \
                                         blob: layer {idx} is read as a stream"
                                    ));
                                }
                                return streamed(client, loc, p, idx, Compression::None, cost);
                            }
                        }
                    }
                }
            }
        }
        Holds::Tar(c) => {
            if !quiet {
                crate::ui::progress::warn(&format!(
                    "note: layer {idx} is {}-compressed: it is read whole as a stream ({})",
                    c.name(),
                    crate::ui::progress::human(d.size)
                ));
            }
            return streamed(client, loc, p, idx, *c, cost);
        }
    }
    Ok(out)
}

fn truncated(idx: usize, d: &Descriptor, at: u64) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(Error::Tar {
        reason: format!(
            "layer {idx} ({}): the tar goes on past byte {at} but the blob has no more bytes",
            d.digest
        ),
    })
}

/// The entries of layer `idx` read whole as a stream (decoded as `c` says), its digest checked.
fn streamed(
    client: &mut Client,
    loc: &Loc,
    p: &Peeked,
    idx: usize,
    c: Compression,
    cost: &mut Cost,
) -> Result<Vec<Entry>> {
    let d = &p.layers[idx];
    cost.streamed.push(idx);
    let body = store::open_blob(client, loc, &d.digest)?;
    let mut w = Walk::new(None);
    let mut dec = compress::decoder::<Error>(c);
    let mut out = Vec::new();
    let mut pos = 0u64;
    let mut ended = false;
    let mut feed = |data: &[u8]| -> std::result::Result<(), Error> {
        if ended {
            return Ok(()); // padding after the end marker
        }
        w.give(pos, data)?;
        pos += data.len() as u64;
        loop {
            match w.poll()? {
                Step::Entry(h) => {
                    let at = h.at;
                    out.push((h, Some(Place::Tar { layer: idx, at })));
                }
                Step::Need(_) => return Ok(()),
                Step::End => {
                    ended = true;
                    return Ok(());
                }
            }
        }
    };
    let mut read = 0u64;
    crate::store::verify::read_verified_ahead(
        body,
        d,
        &format!("layer {idx} ({}) from {loc}", d.digest),
        &mut |piece: &[u8]| {
            read += piece.len() as u64;
            dec.write(piece, &mut |o: &[u8]| feed(o))
                .map_err(resolve::flatten)
        },
    )?;
    dec.finish(&mut |o: &[u8]| feed(o))
        .map_err(resolve::flatten)?;
    cost.stream_bytes += read;
    if !ended {
        w.eof(pos)?;
        while let Step::Entry(h) = w.poll()? {
            let at = h.at;
            out.push((h, Some(Place::Tar { layer: idx, at })));
        }
    }
    Ok(out)
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
