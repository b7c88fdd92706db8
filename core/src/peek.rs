//! Reading inside an image without downloading it: a layer's tar headers walked by ranges, and
//! the image's merged file tree.
//!
//! An uncompressed tar says, in each 512-byte header, how long the entry's content is, so the
//! next header's offset is known without reading the content. [`Walk`] asks for the bytes it
//! needs as ranges of the blob: a window at each header (one request covers many headers when
//! the entries are small), then a jump over each large file's content. The same walk reads a
//! stream (a compressed layer, decoded, or a registry that ignores `Range`): the driver feeds
//! every byte in order and the walk keeps only the headers. Sans-IO: the driver reads, the walk
//! says what to read.
//!
//! ```text
//!   let mut w = Walk::new(blob_len);
//!   loop {
//!       match w.poll()? {
//!           Step::Need(range) => w.give(range.start, &read(range))?,  // or the stream's bytes
//!                                                      // (at its end: w.eof(bytes_read))
//!           Step::Entry(e) => tree.add(layer, e)?,
//!           Step::End => break,
//!       }
//!   }
//! ```
//!
//! [`Tree`] applies layers in order as a container runtime does: OCI whiteouts (`.wh.NAME`
//! removes NAME from the layers below, `.wh..wh..opq` empties a directory of them) and each
//! path's topmost entry; every node says which layer it comes from and where its bytes are.
//!
//! What a range read cannot check: a blob's digest covers all of its bytes, so bytes read by
//! range are not verified against it (only the tar checksums of the headers, and the sizes);
//! a reader that ends up reading a whole blob verifies its digest as ever.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;

use crate::artifact::{self, Packing};
use crate::chunked;
use crate::compress::{self, Compression};
use crate::digest::Hasher;
use crate::error::Error;
use crate::estargz;
use crate::image::{Config, Descriptor, Manifest};
use crate::media;
use crate::untar::{Event, Header, Kind, TarReader};

pub mod report;

/// Bytes asked for at each header: the header and, when entries are small, the next ones.
pub const WINDOW: u64 = 32 << 10;
/// Entries one layer may hold before the walk gives up (a tar of ten million empty files would
/// otherwise cost ten million headers of memory).
pub const MAX_ENTRIES: u64 = 1_000_000;

/// What the walk wants next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// The blob's bytes in this range (a driver reading a stream gives the bytes from where it
    /// is up to the range's end; the walk drops what it does not need).
    Need(Range<u64>),
    /// The next entry, with its content's offset in the blob ([`Header::at`]).
    Entry(Header),
    /// The tar ended (its end marker, or the blob's end after a whole entry).
    End,
}

/// A walk over one uncompressed tar's headers. See the module docs.
#[derive(Debug)]
pub struct Walk {
    reader: TarReader,
    len: Option<u64>,
    window: u64,
    found: std::collections::VecDeque<Header>,
    entries: u64,
    max_entries: u64,
    ended: bool,
}

impl Walk {
    /// A walk over a tar of `len` bytes (`None`: not known; the walk reads until the end
    /// marker, and a driver that reaches the end of its data says so with [`Walk::eof`]).
    pub fn new(len: Option<u64>) -> Walk {
        Walk {
            reader: TarReader::new(),
            len,
            window: WINDOW,
            found: Default::default(),
            entries: 0,
            max_entries: MAX_ENTRIES,
            ended: false,
        }
    }

    /// The same walk asking for `window` bytes at each header (at least one header).
    pub fn with_window(mut self, window: u64) -> Walk {
        self.window = window.max(512);
        self
    }

    /// The same walk refusing more than `max` entries.
    pub fn with_max_entries(mut self, max: u64) -> Walk {
        self.max_entries = max;
        self
    }

    /// Where the walk is in the blob: the bytes before it were read or jumped over.
    pub fn offset(&self) -> u64 {
        self.reader.offset()
    }

    /// What to do next.
    pub fn poll(&mut self) -> Result<Step, Error> {
        if let Some(h) = self.found.pop_front() {
            return Ok(Step::Entry(h));
        }
        if self.ended || self.reader.at_end() {
            self.ended = true;
            return Ok(Step::End);
        }
        // the rest of a file's content is not needed: jump over it
        let before = self.reader.offset();
        self.reader.skip_data(&mut |_| Ok(()))?;
        let at = self.reader.offset();
        if let Some(len) = self.len {
            if at > len {
                return Err(Error::Tar {
                    reason: format!(
                        "an entry's content ends at byte {at}, past the layer's end ({len}): \
                         the tar is truncated or its header lies (from byte {before})"
                    ),
                });
            }
            if at == len {
                self.reader.finish()?;
                self.ended = true;
                return Ok(Step::End);
            }
            return Ok(Step::Need(at..(at + self.window).min(len)));
        }
        Ok(Step::Need(at..at + self.window))
    }

    /// The blob's bytes from `at` on (`at` at or before [`offset`](Self::offset): what comes
    /// before the walk's place is dropped; after it is an error, bytes were missed).
    pub fn give(&mut self, at: u64, bytes: &[u8]) -> Result<(), Error> {
        let here = self.reader.offset();
        if at > here {
            return Err(Error::internal(format!(
                "tar walk: bytes at {at} given while the walk is at {here}"
            )));
        }
        let skip = (here - at).min(bytes.len() as u64) as usize;
        let mut rest = &bytes[skip..];
        if let Some(len) = self.len {
            let room = len.saturating_sub(here);
            rest = &rest[..(rest.len() as u64).min(room) as usize];
        }
        let (found, entries, max) = (&mut self.found, &mut self.entries, self.max_entries);
        self.reader.write(rest, &mut |e| {
            if let Event::Entry(h) = e {
                *entries += 1;
                if *entries > max {
                    return Err(Error::TooLarge {
                        what: format!("a tar layer with more than {max} entries"),
                        limit: max,
                    });
                }
                found.push_back(h.clone());
            }
            Ok(())
        })?;
        Ok(())
    }

    /// The data ended after `len` bytes (a stream of unknown length): fine after a whole entry,
    /// else an error (also when the walk jumped past the end: a file's content was cut).
    pub fn eof(&mut self, len: u64) -> Result<(), Error> {
        let at = self.reader.offset();
        if len < at {
            return Err(Error::Tar {
                reason: format!(
                    "the tar stream ends at byte {len}, inside an entry's content (to byte {at}): \
                     truncated"
                ),
            });
        }
        self.reader.finish()?;
        self.ended = true;
        Ok(())
    }
}

/// How a layer holds its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holds {
    /// A tar, compressed so.
    Tar(Compression),
    /// The blob is the file at this path (a raw model artifact layer).
    Raw(String),
    /// Nothing lamina reads (an unknown media type, a raw layer without a path): why.
    Nothing(String),
}

/// An image (or model artifact) as reading inside it sees it: its layers and how each holds
/// its files.
#[derive(Debug, Clone)]
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

impl Peeked {
    /// How `manifest`'s layers hold their files (`config` tells an artifact's format).
    pub fn of(manifest: &Manifest, config: &Config) -> Result<Peeked, Error> {
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
}

/// Whether a layer's files are read by ranges (an uncompressed tar, a raw layer, a
/// zstd:chunked or eStargz layer with its table), not by streaming the whole layer.
pub fn by_ranges(d: &Descriptor, holds: &Holds) -> bool {
    match holds {
        Holds::Tar(Compression::None) | Holds::Raw(_) => true,
        Holds::Tar(Compression::Zstd) => chunked::position(d).is_some(),
        Holds::Tar(Compression::Gzip) => estargz::toc_digest(d).is_some(),
        Holds::Nothing(_) => false,
    }
}

/// What [`LayerRead`] wants next.
#[derive(Debug, PartialEq, Eq)]
pub enum Want {
    /// The blob's bytes in this range (a `Range` request, or a seek): answer with
    /// [`LayerRead::ranged`].
    Range(Range<u64>),
    /// The whole blob from its first byte, as a stream: give its bytes in order with
    /// [`LayerRead::stream`] (polling between pieces for the entries), then
    /// [`LayerRead::stream_end`].
    Stream,
    /// More of the stream.
    More,
    /// An entry of the layer, with where its bytes are (files).
    Entry(Header, Option<Place>),
    /// A line for the user (a layer read whole, a registry that ignores `Range`, a layer
    /// skipped).
    Note(String),
    /// The layer is read.
    Done,
}

/// Which table of a seekable compressed layer is being read.
#[derive(Debug, Clone)]
enum Table {
    /// zstd:chunked: the table, where the annotation says.
    Chunked(chunked::Position),
    /// eStargz: the footer, then the table it points at (its JSON's digest).
    Footer(crate::digest::Digest),
    Stargz(crate::digest::Digest, Range<u64>),
}

#[derive(Debug)]
enum Mode {
    Start,
    Ranged(Walk),
    /// A seekable layer's table of contents (or an eStargz footer) is asked for.
    Table(Table),
    /// The stream is to be opened.
    Open,
    Streaming {
        walk: Walk,
        dec: Box<dyn compress::Decoder<Error>>,
        hash: Hasher,
        pos: u64,
        ended: bool,
    },
    Done,
}

impl std::fmt::Debug for dyn compress::Decoder<Error> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Decoder")
    }
}

/// The entries of one layer, read as cheaply as the layer allows: an uncompressed tar by
/// ranges ([`Walk`]); a compressed one, or one from a registry that ignores `Range`, as a
/// stream decoded here, its digest and size checked at its end; a raw artifact layer from its
/// path, with no read; a layer lamina cannot read noted and skipped. Sans-IO: the driver
/// answers [`Want`]s.
#[derive(Debug)]
pub struct LayerRead {
    idx: usize,
    desc: Descriptor,
    holds: Holds,
    mode: Mode,
    out: VecDeque<Want>,
}

impl LayerRead {
    /// Reads layer `idx` of `p`.
    pub fn new(p: &Peeked, idx: usize) -> LayerRead {
        LayerRead {
            idx,
            desc: p.layers[idx].clone(),
            holds: p.holds[idx].clone(),
            mode: Mode::Start,
            out: VecDeque::new(),
        }
    }

    /// What to do next.
    pub fn poll(&mut self) -> Result<Want, Error> {
        if let Some(w) = self.out.pop_front() {
            return Ok(w);
        }
        let idx = self.idx;
        loop {
            match &mut self.mode {
                Mode::Start => match self.holds.clone() {
                    Holds::Raw(path) => {
                        self.mode = Mode::Done;
                        let h = Header::file(&path, self.desc.size);
                        return Ok(Want::Entry(h, Some(Place::Blob { layer: idx })));
                    }
                    Holds::Nothing(why) => {
                        self.mode = Mode::Done;
                        return Ok(Want::Note(format!("warning: layer {idx} skipped: {why}")));
                    }
                    Holds::Tar(Compression::None) => {
                        // a table of contents lamina wrote for this very layer: no request
                        if let Some(toc) = crate::toc::read(&self.desc) {
                            self.mode = Mode::Done;
                            for h in toc {
                                let at = h.at;
                                self.out
                                    .push_back(Want::Entry(h, Some(Place::Tar { layer: idx, at })));
                            }
                            self.out.push_back(Want::Done);
                            return self.poll();
                        }
                        self.mode = Mode::Ranged(Walk::new(Some(self.desc.size)));
                    }
                    Holds::Tar(Compression::Zstd) if chunked::position(&self.desc).is_some() => {
                        // a zstd:chunked layer: its table of contents is one range
                        let pos = chunked::position(&self.desc)
                            .ok_or_else(|| Error::internal("zstd:chunked position"))?;
                        let r = pos.range.clone();
                        self.mode = Mode::Table(Table::Chunked(pos));
                        return Ok(Want::Range(r));
                    }
                    Holds::Tar(Compression::Gzip) if estargz::toc_digest(&self.desc).is_some() => {
                        // an eStargz layer: its footer says where its table is
                        let digest = estargz::toc_digest(&self.desc)
                            .ok_or_else(|| Error::internal("eStargz digest"))?;
                        self.mode = Mode::Table(Table::Footer(digest));
                        return Ok(Want::Range(estargz::footer_range(&self.desc)));
                    }
                    Holds::Tar(c) => {
                        self.mode = Mode::Open;
                        return Ok(Want::Note(format!(
                            "note: layer {idx} is {}-compressed: it is read whole as a stream ({})",
                            c.name(),
                            crate::registry::human(self.desc.size)
                        )));
                    }
                },
                Mode::Ranged(w) => {
                    return Ok(match w.poll()? {
                        Step::Need(r) => Want::Range(r),
                        Step::Entry(h) => {
                            let at = h.at;
                            Want::Entry(h, Some(Place::Tar { layer: idx, at }))
                        }
                        Step::End => {
                            self.mode = Mode::Done;
                            Want::Done
                        }
                    })
                }
                Mode::Table(t) => {
                    return Ok(Want::Range(match t {
                        Table::Chunked(pos) => pos.range.clone(),
                        Table::Footer(_) => estargz::footer_range(&self.desc),
                        Table::Stargz(_, r) => r.clone(),
                    }))
                }
                Mode::Open => {
                    let c = match self.holds {
                        Holds::Tar(c) => c,
                        _ => Compression::None,
                    };
                    self.mode = Mode::Streaming {
                        walk: Walk::new(None),
                        dec: compress::decoder::<Error>(c),
                        hash: Hasher::new(),
                        pos: 0,
                        ended: false,
                    };
                    return Ok(Want::Stream);
                }
                Mode::Streaming { walk, ended, .. } => {
                    if *ended {
                        self.mode = Mode::Done;
                        return Ok(Want::Done);
                    }
                    return Ok(match walk.poll()? {
                        Step::Entry(h) => {
                            let at = h.at;
                            Want::Entry(h, Some(Place::Tar { layer: idx, at }))
                        }
                        Step::Need(_) | Step::End => Want::More,
                    });
                }
                Mode::Done => return Ok(Want::Done),
            }
        }
    }

    /// The answer to [`Want::Range`]`(r)`: the bytes, or that the registry ignored `Range`
    /// (the layer is then read as a stream: the next poll says [`Want::Stream`]).
    pub fn ranged(&mut self, r: Range<u64>, got: crate::registry::Ranged) -> Result<(), Error> {
        if let Mode::Table(t) = &self.mode {
            return self.table(r, t.clone(), got);
        }
        let Mode::Ranged(w) = &mut self.mode else {
            return Err(Error::internal("LayerRead::ranged without a range asked"));
        };
        match got {
            crate::registry::Ranged::Bytes(b) => {
                if b.is_empty() {
                    return Err(Error::Tar {
                        reason: format!(
                            "layer {} ({}): the tar goes on past byte {} but the blob has no \
                             more bytes",
                            self.idx, self.desc.digest, r.start
                        ),
                    });
                }
                w.give(r.start, &b)
            }
            crate::registry::Ranged::Ignored { .. } => {
                self.out.push_back(Want::Note(format!(
                    "note: the registry answers Range requests with the whole blob: layer {} \
                     is read as a stream",
                    self.idx
                )));
                self.mode = Mode::Open;
                Ok(())
            }
        }
    }

    /// The answer to the range of a seekable layer's table: its entries, each file with its
    /// frames (an eStargz footer: the table's range, asked next); or the layer streamed, when
    /// the registry ignored `Range`.
    fn table(
        &mut self,
        r: Range<u64>,
        t: Table,
        got: crate::registry::Ranged,
    ) -> Result<(), Error> {
        let idx = self.idx;
        let b = match got {
            crate::registry::Ranged::Bytes(b) => b,
            crate::registry::Ranged::Ignored { .. } => {
                self.out.push_back(Want::Note(format!(
                    "note: the registry answers Range requests with the whole blob: layer \
                     {idx} is read as a stream"
                )));
                self.mode = Mode::Open;
                return Ok(());
            }
        };
        if b.len() as u64 != r.end - r.start {
            return Err(Error::SizeMismatch {
                what: format!(
                    "the table of contents of layer {idx} ({}) at {r:?}",
                    self.desc.digest
                ),
                expected: r.end - r.start,
                found: b.len() as u64,
            });
        }
        let entries = match t {
            Table::Chunked(pos) => chunked::entries(idx, &self.desc, &pos, &b)?,
            Table::Footer(digest) => {
                let toc = estargz::toc_range(idx, &self.desc, &b)?;
                self.mode = Mode::Table(Table::Stargz(digest, toc));
                return Ok(());
            }
            Table::Stargz(digest, toc) => estargz::entries(idx, &self.desc, &digest, toc, &b)?,
        };
        for (h, frames) in entries {
            let place = frames.map(|frames| Place::Frames { layer: idx, frames });
            self.out.push_back(Want::Entry(h, place));
        }
        self.out.push_back(Want::Done);
        self.mode = Mode::Done;
        Ok(())
    }

    /// After a piece of the stream: the entries it completed (into `out`) and the notes to
    /// show, polled until the machine wants more. Anything else it could want mid-stream is a
    /// bug ([`Error::Internal`]).
    pub fn drain(&mut self, out: &mut Vec<(Header, Option<Place>)>) -> Result<Vec<String>, Error> {
        let mut notes = Vec::new();
        loop {
            match self.poll()? {
                Want::Entry(h, place) => out.push((h, place)),
                Want::Note(n) => notes.push(n),
                Want::More => return Ok(notes),
                w => return Err(Error::internal(format!("LayerRead wants {w:?} mid-stream"))),
            }
        }
    }

    /// The blob's next bytes, in order (after [`Want::Stream`]); poll between pieces.
    pub fn stream(&mut self, b: &[u8]) -> Result<(), Error> {
        let Mode::Streaming {
            walk,
            dec,
            hash,
            pos,
            ..
        } = &mut self.mode
        else {
            return Err(Error::internal("LayerRead::stream without a stream asked"));
        };
        hash.update(b);
        let mut feed = |o: &[u8]| -> Result<(), Error> {
            walk.give(*pos, o)?;
            *pos += o.len() as u64;
            Ok(())
        };
        dec.write(b, &mut feed).map_err(flatten)
    }

    /// The stream ended: its digest and size are checked, and the tar must have ended well.
    pub fn stream_end(&mut self) -> Result<(), Error> {
        let desc = self.desc.clone();
        let idx = self.idx;
        let Mode::Streaming {
            walk,
            dec,
            hash,
            pos,
            ended,
        } = &mut self.mode
        else {
            return Err(Error::internal(
                "LayerRead::stream_end without a stream asked",
            ));
        };
        let mut feed = |o: &[u8]| -> Result<(), Error> {
            walk.give(*pos, o)?;
            *pos += o.len() as u64;
            Ok(())
        };
        dec.finish(&mut feed).map_err(flatten)?;
        let h = std::mem::take(hash);
        let len = h.len();
        let found = h.finish();
        if len != desc.size {
            return Err(Error::SizeMismatch {
                what: format!("layer {idx} ({})", desc.digest),
                expected: desc.size,
                found: len,
            });
        }
        if found != desc.digest {
            return Err(Error::DigestMismatch {
                what: format!("layer {idx}"),
                expected: desc.digest,
                found,
            });
        }
        // the entries the end may still give, then the end
        let at = *pos;
        if !walk.reader.at_end() {
            walk.eof(at)?;
        }
        while let Step::Entry(h) = walk.poll()? {
            let at = h.at;
            self.out
                .push_back(Want::Entry(h, Some(Place::Tar { layer: idx, at })));
        }
        *ended = true;
        Ok(())
    }
}

fn flatten(e: compress::StreamError<Error>) -> Error {
    match e {
        compress::StreamError::Codec(c) => Error::Codec(c),
        compress::StreamError::Sink(e) => e,
    }
}

/// Where a file's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// In layer `layer`'s tar at `at..at + size`.
    Tar {
        /// The layer's index in the manifest.
        layer: usize,
        /// The content's offset in the (uncompressed) tar.
        at: u64,
    },
    /// In layer `layer`'s zstd:chunked blob: whole zstd frames that decode to the file.
    Frames {
        /// The layer's index in the manifest.
        layer: usize,
        /// Where, and the content's digest.
        frames: chunked::Frames,
    },
    /// Layer `layer`'s blob is the file (a raw model artifact layer).
    Blob {
        /// The layer's index in the manifest.
        layer: usize,
    },
}

impl Place {
    /// The layer the bytes are in.
    pub fn layer(&self) -> usize {
        match self {
            Place::Tar { layer, .. } | Place::Frames { layer, .. } | Place::Blob { layer } => {
                *layer
            }
        }
    }
}

/// One path of the merged tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The entry's type (a link's target in it).
    pub kind: Kind,
    /// Content size (files).
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time (seconds since the epoch).
    pub mtime: u64,
    /// The layer the entry comes from; `None` for a directory only implied by the paths below
    /// it.
    pub layer: Option<usize>,
    /// Where a file's bytes are.
    pub place: Option<Place>,
}

impl Node {
    /// A directory no entry names, there because paths below it are.
    fn implied_dir() -> Node {
        Node {
            kind: Kind::Dir,
            size: 0,
            mode: 0o755,
            mtime: 0,
            layer: None,
            place: None,
        }
    }
}

/// The merged file tree of an image's layers, applied bottom to top (see the module docs).
/// Paths are relative, without `./`, a leading `/` or a trailing `/`; the root is `""`.
#[derive(Debug, Default, Clone)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
    layer: Option<usize>,
    pending: Vec<(String, Node)>,
    whiteouts: Vec<String>,
    opaque: Vec<String>,
    side_by_side: bool,
    warnings: Vec<String>,
}

const WH: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// A path as the tree keeps it, or `None` for one that climbs out (`..`) or is empty.
pub fn normal(path: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => out.push(c),
        }
    }
    Some(out.join("/"))
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Tree {
        Tree::default()
    }

    /// An empty tree for a model artifact's files, which sit side by side as `lamina extract`
    /// writes them: no whiteouts (a `.wh.` entry is skipped), and a path another layer has
    /// already is skipped (the first layer's file stays), each with a warning.
    pub fn side_by_side() -> Tree {
        Tree {
            side_by_side: true,
            ..Tree::default()
        }
    }

    /// What was skipped (side by side), in order.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Starts layer `layer` (above the ones before); its entries come with [`Tree::add`].
    pub fn begin(&mut self, layer: usize) {
        self.end();
        self.layer = Some(layer);
    }

    /// An entry of the current layer. A whiteout removes what the layers below have there;
    /// paths that climb out of the root are refused (a hostile tar), as extract refuses them.
    pub fn add(&mut self, h: &Header, place: Option<Place>) -> Result<(), Error> {
        let layer = self
            .layer
            .ok_or_else(|| Error::internal("Tree::add before Tree::begin"))?;
        let Some(path) = normal(&h.path) else {
            return Err(Error::Tar {
                reason: format!(
                    "layer {layer}: the path {:?} climbs out of the root",
                    h.path
                ),
            });
        };
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (d.to_string(), n),
            None => (String::new(), path.as_str()),
        };
        if self.side_by_side && name.starts_with(WH) {
            self.warnings.push(format!(
                "layer {layer}: whiteout {path:?} skipped (a model artifact's layers do not \
                 delete each other's files)"
            ));
            return Ok(());
        }
        if name == OPAQUE {
            self.opaque.push(dir);
            return Ok(());
        }
        if let Some(hidden) = name.strip_prefix(WH) {
            self.whiteouts.push(join(&dir, hidden));
            return Ok(());
        }
        if path.is_empty() {
            return Ok(()); // the root itself
        }
        self.pending.push((
            path,
            Node {
                kind: h.kind.clone(),
                size: h.size,
                mode: h.mode,
                mtime: h.mtime,
                layer: Some(layer),
                place: if h.kind == Kind::File { place } else { None },
            },
        ));
        Ok(())
    }

    /// Ends the current layer: its whiteouts apply to the layers below, then its entries go
    /// in (a later entry of the same path in one layer wins, as tar extraction has it).
    pub fn end(&mut self) {
        for dir in std::mem::take(&mut self.opaque) {
            let below: Vec<String> = self
                .nodes
                .keys()
                .filter(|k| under(k, &dir) && k.as_str() != dir)
                .cloned()
                .collect();
            for k in below {
                self.nodes.remove(&k);
            }
        }
        for p in std::mem::take(&mut self.whiteouts) {
            let gone: Vec<String> = self
                .nodes
                .range(p.clone()..)
                .map(|(k, _)| k)
                .take_while(|k| k.starts_with(&p))
                .filter(|k| under(k, &p))
                .cloned()
                .collect();
            for k in gone {
                self.nodes.remove(&k);
            }
        }
        for (path, node) in std::mem::take(&mut self.pending) {
            if self.side_by_side {
                if let Some(had) = self.nodes.get(&path) {
                    let both_dirs = had.kind == Kind::Dir && node.kind == Kind::Dir;
                    if !both_dirs && had.layer != node.layer {
                        self.warnings.push(format!(
                            "layer {}: {path:?} skipped: layer {} has it already",
                            node.layer.unwrap_or(0),
                            had.layer.map_or("below".to_string(), |l| l.to_string())
                        ));
                        continue;
                    }
                }
            }
            // a file or link over a directory replaces the directory and what was in it
            if !matches!(node.kind, Kind::Dir) {
                let inside: Vec<String> = self
                    .nodes
                    .range(format!("{path}/")..)
                    .map(|(k, _)| k)
                    .take_while(|k| k.starts_with(&format!("{path}/")))
                    .cloned()
                    .collect();
                for k in inside {
                    self.nodes.remove(&k);
                }
            }
            // the directories above it exist
            let mut d = path.as_str();
            while let Some((parent, _)) = d.rsplit_once('/') {
                let e = self
                    .nodes
                    .entry(parent.to_string())
                    .or_insert_with(Node::implied_dir);
                if e.kind != Kind::Dir {
                    *e = Node::implied_dir();
                }
                d = parent;
            }
            self.nodes.insert(path, node);
        }
    }

    /// The node at `path` (normalised), after [`Tree::end`].
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(&normal(path)?)
    }

    /// Every path under `dir` (`""`: the whole tree), in path order, with its node.
    pub fn under<'a>(&'a self, dir: &'a str) -> impl Iterator<Item = (&'a str, &'a Node)> + 'a {
        self.nodes
            .iter()
            .filter(move |(k, _)| dir.is_empty() || (under(k, dir) && k.as_str() != dir))
            .map(|(k, v)| (k.as_str(), v))
    }

    /// The direct children of `dir`.
    pub fn children<'a>(&'a self, dir: &'a str) -> impl Iterator<Item = (&'a str, &'a Node)> + 'a {
        self.under(dir).filter(move |(k, _)| {
            let rest = if dir.is_empty() {
                *k
            } else {
                &k[dir.len() + 1..]
            };
            !rest.contains('/')
        })
    }

    /// How many paths the tree holds.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the tree is empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Follows symlinks from `path` to the node they end at (at most 40 hops, as Linux), with
    /// the path it has there. `None`: nothing there, or a loop.
    pub fn resolve(&self, path: &str) -> Option<(String, &Node)> {
        let mut p = normal(path)?;
        for _ in 0..40 {
            let n = self.nodes.get(&p)?;
            match &n.kind {
                Kind::Symlink(t) => {
                    let base = p.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                    p = if t.starts_with('/') {
                        normal(t)?
                    } else {
                        normal(&join(base, t))?
                    };
                }
                Kind::Hardlink(t) => p = normal(t)?,
                _ => return Some((p, n)),
            }
        }
        None
    }
}

/// Whether the entry `h` of an upper layer hides `path` of the layers below it: a whiteout of
/// it or of a directory above it, an opaque marker in a directory above it, or a file or link
/// where a directory above it was. (Its own entry for `path` is not hiding: it is the file.)
pub fn hides(h: &Header, path: &str) -> bool {
    let (Some(e), Some(p)) = (normal(&h.path), normal(path)) else {
        return false;
    };
    let (dir, name) = match e.rsplit_once('/') {
        Some((d, n)) => (d, n),
        None => ("", e.as_str()),
    };
    if name == OPAQUE {
        return under(&p, dir) && p != dir;
    }
    if let Some(hidden) = name.strip_prefix(WH) {
        return under(&p, &join(dir, hidden));
    }
    h.kind != Kind::Dir && under(&p, &e) && p != e
}

/// Whether `path` (an image path) matches `pattern`, as `extract --include` and `--exclude`
/// take them: a pattern without `/` is matched against the file's name (`*.json`), one with `/`
/// against the whole path from the root (`models/unet/*`; a leading `/` is the root). `*` is
/// any run of characters but `/`, `**` any run at all, `?` one character, `[a-z0-9]` a class.
/// Matching is over characters with a table of positions, so no pattern takes longer than
/// pattern × path steps (a pattern of many `*` cannot blow up as recursive matchers do).
pub fn glob(pattern: &str, path: &str) -> bool {
    let Some(path) = normal(path) else {
        return false;
    };
    let (p, s) = if pattern.contains('/') {
        (
            pattern.trim_start_matches("./").trim_start_matches('/'),
            path.as_str(),
        )
    } else {
        (pattern, path.rsplit('/').next().unwrap_or(""))
    };
    let p: Vec<char> = p.chars().collect();
    let s: Vec<char> = s.chars().collect();
    // can[j]: the pattern so far matches s[..j]
    let mut can = vec![false; s.len() + 1];
    can[0] = true;
    let mut i = 0;
    while i < p.len() {
        let mut next = vec![false; s.len() + 1];
        match p[i] {
            '*' => {
                // `**`: any run; `*`: a run without '/'. next[j]: some k <= j matched and s[k..j]
                // may be taken by the run
                let any = p.get(i + 1) == Some(&'*');
                let mut on = false;
                for j in 0..=s.len() {
                    on |= can[j];
                    next[j] = on;
                    if !any && j < s.len() && s[j] == '/' {
                        on = false;
                    }
                }
                i += if any { 2 } else { 1 };
            }
            '?' => {
                for j in 0..s.len() {
                    next[j + 1] = can[j] && s[j] != '/';
                }
                i += 1;
            }
            '[' => {
                let Some(end) = p[i + 1..].iter().position(|&c| c == ']').map(|e| i + 1 + e) else {
                    return false;
                };
                let class = &p[i + 1..end];
                for j in 0..s.len() {
                    let c = s[j];
                    let hit = class
                        .windows(3)
                        .any(|w| w[1] == '-' && w[0] <= c && c <= w[2])
                        || class.contains(&c);
                    next[j + 1] = can[j] && hit;
                }
                i = end + 1;
            }
            c => {
                for j in 0..s.len() {
                    next[j + 1] = can[j] && s[j] == c;
                }
                i += 1;
            }
        }
        can = next;
    }
    can[s.len()]
}

/// `dir/name`, or `name` at the root.
fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Whether `path` is `dir` or inside it.
fn under(path: &str, dir: &str) -> bool {
    dir.is_empty()
        || path == dir
        || (path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tar::{EntryKind, TarWriter};

    /// A tar of (path, content) files; a path ending in `/` is a directory, `-> target` a link.
    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = TarWriter::new(0);
        let mut out = Vec::new();
        for (p, data) in entries {
            let mut sink = |b: &[u8]| out.extend_from_slice(b);
            if let Some(d) = p.strip_suffix('/') {
                w.entry(d, &EntryKind::Dir, &mut sink).unwrap();
            } else if let Some((p, t)) = p.split_once(" -> ") {
                w.entry(p, &EntryKind::Symlink(t.into()), &mut sink)
                    .unwrap();
            } else {
                let kind = EntryKind::File {
                    size: data.len() as u64,
                    executable: false,
                };
                w.entry(p, &kind, &mut sink).unwrap();
                if !data.is_empty() {
                    w.data(data, &mut sink).unwrap();
                    w.end_file().unwrap();
                }
            }
        }
        w.finish(&mut |b| out.extend_from_slice(b)).unwrap();
        out
    }

    /// The entries of `tar` walked by ranges (as a registry with `Range`), and the ranges asked.
    fn walk_ranges(tar: &[u8], window: u64) -> (Vec<Header>, Vec<Range<u64>>) {
        let mut w = Walk::new(Some(tar.len() as u64)).with_window(window);
        let (mut out, mut asked) = (Vec::new(), Vec::new());
        loop {
            match w.poll().unwrap() {
                Step::Need(r) => {
                    asked.push(r.clone());
                    w.give(r.start, &tar[r.start as usize..r.end as usize])
                        .unwrap();
                }
                Step::Entry(h) => out.push(h),
                Step::End => return (out, asked),
            }
        }
    }

    /// The entries of `tar` fed as a stream in `chunk`-byte pieces (length unknown).
    fn walk_stream(tar: &[u8], chunk: usize) -> Result<Vec<Header>, Error> {
        let mut w = Walk::new(None);
        let mut out = Vec::new();
        let mut pos = 0usize;
        loop {
            match w.poll()? {
                Step::Need(r) => {
                    // a stream cannot jump: it reads on to the range's end, the walk drops
                    // what it does not need
                    if pos >= tar.len() {
                        w.eof(pos as u64)?;
                        continue;
                    }
                    let end = (r.end as usize).min(tar.len());
                    while pos < end {
                        let n = chunk.min(end - pos);
                        w.give(pos as u64, &tar[pos..pos + n])?;
                        pos += n;
                    }
                }
                Step::Entry(h) => out.push(h),
                Step::End => return Ok(out),
            }
        }
    }

    fn model_tar() -> Vec<u8> {
        let big = vec![7u8; 3 << 20];
        let shard = vec![9u8; 5 << 20];
        tar_of(&[
            ("models/", b""),
            ("models/model.safetensors", &big),
            ("models/shard-2.safetensors", &shard),
            ("models/config.json", br#"{"model_type":"llama"}"#),
            ("models/tokenizer.json", &[b'{'; 3000]),
            ("models/latest -> model.safetensors", b""),
        ])
    }

    #[test]
    fn a_walk_by_ranges_jumps_over_content_and_reads_little() {
        let tar = model_tar();
        let (entries, asked) = walk_ranges(&tar, WINDOW);
        let names: Vec<&str> = entries.iter().map(|h| h.path.as_str()).collect();
        assert_eq!(
            names,
            [
                "models/",
                "models/model.safetensors",
                "models/shard-2.safetensors",
                "models/config.json",
                "models/tokenizer.json",
                "models/latest"
            ]
        );
        // each file's content is where the header says
        for h in &entries {
            if h.kind == Kind::File {
                let got = &tar[h.at as usize..(h.at + h.size) as usize];
                assert_eq!(got.len() as u64, h.size, "{}", h.path);
                if h.path.ends_with("config.json") {
                    assert_eq!(got, br#"{"model_type":"llama"}"#);
                }
            }
        }
        // three windows: at the start, after the first file, after the second (the small
        // files after it are in that window)
        assert_eq!(asked.len(), 3, "{asked:?}");
        let read: u64 = asked.iter().map(|r| r.end - r.start).sum();
        assert!(read <= 3 * WINDOW, "read {read} of {}", tar.len());
    }

    #[test]
    fn a_walk_gives_the_same_entries_by_ranges_and_streamed_at_every_chunk_size() {
        let tar = model_tar();
        let (want, _) = walk_ranges(&tar, WINDOW);
        for window in [512, 1000, 4096, 1 << 20] {
            assert_eq!(walk_ranges(&tar, window).0, want, "window {window}");
        }
        for chunk in [1usize, 7, 511, 512, 4096, 1 << 20, tar.len()] {
            if chunk == 1 {
                // a byte at a time over 8 MiB is slow; the small tar covers it
                let small = tar_of(&[("a", b"x"), ("b/", b""), ("b/c", &[1; 1500])]);
                let (w, _) = walk_ranges(&small, 512);
                assert_eq!(walk_stream(&small, 1).unwrap(), w);
                continue;
            }
            assert_eq!(walk_stream(&tar, chunk).unwrap(), want, "chunk {chunk}");
        }
    }

    #[test]
    fn a_truncated_or_hostile_tar_is_an_error_not_a_hang() {
        let tar = model_tar();
        // cut inside the second file's content: the stream ends early
        let cut = &tar[..(4 << 20)];
        assert!(walk_stream(cut, 4096).is_err());
        // a header claiming a 2^60-byte file in a small blob: the walk ends, no request past
        // the blob's end, no allocation of the claim
        let mut h = tar_of(&[("huge", b"")]);
        let size = format!("{:011o}\0", (1u64 << 33) - 1); // 8 GiB, the most octal holds
        h[124..136].copy_from_slice(size.as_bytes());
        let sum: u32 = h[..512]
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    b as u32
                }
            })
            .sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let mut w = Walk::new(Some(h.len() as u64));
        let mut asked = Vec::new();
        let r = loop {
            match w.poll() {
                Ok(Step::Need(r)) => {
                    assert!(r.end <= h.len() as u64);
                    asked.push(r.clone());
                    w.give(r.start, &h[r.start as usize..r.end as usize])
                        .unwrap();
                }
                Ok(Step::Entry(_)) => {}
                Ok(Step::End) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        assert!(r.is_err(), "a file past the blob's end: {r:?}");
        assert!(asked.len() <= 2);
        // more entries than allowed
        let many: Vec<(String, Vec<u8>)> = (0..50).map(|i| (format!("f{i}"), vec![])).collect();
        let refs: Vec<(&str, &[u8])> = many
            .iter()
            .map(|(p, d)| (p.as_str(), d.as_slice()))
            .collect();
        let t = tar_of(&refs);
        let mut w = Walk::new(Some(t.len() as u64)).with_max_entries(10);
        let e = loop {
            match w.poll() {
                Ok(Step::Need(r)) => {
                    if let Err(e) = w.give(r.start, &t[r.start as usize..r.end as usize]) {
                        break e;
                    }
                }
                Ok(Step::Entry(_)) => {}
                Ok(Step::End) => panic!("50 entries passed a limit of 10"),
                Err(e) => break e,
            }
        };
        assert!(matches!(e, Error::TooLarge { .. }), "{e}");
        // bytes given past the walk's place are a driver bug
        let mut w = Walk::new(Some(t.len() as u64));
        assert!(matches!(
            w.give(1024, &t[1024..2048]),
            Err(Error::Internal { .. })
        ));
    }

    fn hdr(path: &str, kind: Kind, size: u64) -> Header {
        Header {
            path: path.into(),
            kind,
            size,
            mode: 0o644,
            mtime: 0,
            at: 0,
        }
    }

    #[test]
    fn the_tree_applies_layers_whiteouts_and_opaque_directories() {
        let mut t = Tree::new();
        t.begin(0);
        for (p, k) in [
            ("etc/", Kind::Dir),
            ("etc/passwd", Kind::File),
            ("etc/hosts", Kind::File),
            ("opt/app/a", Kind::File),
            ("opt/app/b", Kind::File),
            ("bin/sh", Kind::File),
            ("./usr/lib/x", Kind::File),
        ] {
            t.add(&hdr(p, k, 1), Some(Place::Tar { layer: 0, at: 0 }))
                .unwrap();
        }
        t.begin(1);
        // a whiteout and an opaque directory hide the layer below only, not this layer's
        // own entries (here the new opt/app/c comes before the opaque marker)
        t.add(&hdr("opt/app/c", Kind::File, 2), None).unwrap();
        t.add(&hdr("opt/app/.wh..wh..opq", Kind::File, 0), None)
            .unwrap();
        t.add(&hdr("etc/.wh.hosts", Kind::File, 0), None).unwrap();
        t.add(&hdr("bin/sh", Kind::Symlink("busybox".into()), 0), None)
            .unwrap();
        t.add(&hdr("bin/busybox", Kind::File, 9), None).unwrap();
        t.add(&hdr("/usr", Kind::File, 3), None).unwrap(); // a file over a directory
        t.end();
        let paths: Vec<&str> = t.under("").map(|(p, _)| p).collect();
        assert_eq!(
            paths,
            [
                "bin",
                "bin/busybox",
                "bin/sh",
                "etc",
                "etc/passwd",
                "opt",
                "opt/app",
                "opt/app/c",
                "usr"
            ]
        );
        assert_eq!(t.get("etc/passwd").unwrap().layer, Some(0));
        assert_eq!(t.get("/opt/app/c").unwrap().layer, Some(1));
        assert_eq!(t.get("opt").unwrap().layer, None, "implied by its files");
        let (p, n) = t.resolve("bin/sh").unwrap();
        assert_eq!((p.as_str(), n.size), ("bin/busybox", 9));
        let kids: Vec<&str> = t.children("bin").map(|(p, _)| p).collect();
        assert_eq!(kids, ["bin/busybox", "bin/sh"]);
        let top: Vec<&str> = t.children("").map(|(p, _)| p).collect();
        assert_eq!(top, ["bin", "etc", "opt", "usr"]);
        // a whole directory whited out, and a path that climbs out refused
        t.begin(2);
        t.add(&hdr(".wh.opt", Kind::File, 0), None).unwrap();
        assert!(t
            .add(&hdr("../../etc/shadow", Kind::File, 1), None)
            .is_err());
        t.end();
        assert!(t.get("opt").is_none() && t.get("opt/app/c").is_none());
        // a symlink loop resolves to nothing
        t.begin(3);
        t.add(&hdr("l1", Kind::Symlink("l2".into()), 0), None)
            .unwrap();
        t.add(&hdr("l2", Kind::Symlink("/l1".into()), 0), None)
            .unwrap();
        t.end();
        assert!(t.resolve("l1").is_none());
    }

    /// A layer of `blob` with media type `mt`, read by `LayerRead` the way a driver does:
    /// ranges (`ignore`: a registry that ignores them) and streams in `chunk`-byte pieces.
    fn read_layer(
        mt: &str,
        blob: &[u8],
        ignore: bool,
        chunk: usize,
    ) -> Result<(Vec<Header>, Vec<Want>), Error> {
        let d = Descriptor::new(mt, crate::Digest::of(blob), blob.len() as u64);
        let p = Peeked {
            holds: vec![match media::layer_compression(mt) {
                Some(c) => Holds::Tar(c),
                None => Holds::Nothing("?".into()),
            }],
            layers: vec![d],
            artifact: false,
            format: "image",
        };
        let mut lr = LayerRead::new(&p, 0);
        let (mut entries, mut asked) = (Vec::new(), Vec::new());
        loop {
            match lr.poll()? {
                Want::Entry(h, _) => entries.push(h),
                Want::Range(r) => {
                    asked.push(Want::Range(r.clone()));
                    let got = if ignore {
                        crate::registry::Ranged::Ignored {
                            head: blob[..(r.end - r.start).min(blob.len() as u64) as usize]
                                .to_vec(),
                        }
                    } else {
                        crate::registry::Ranged::Bytes(
                            blob[r.start as usize..r.end as usize].to_vec(),
                        )
                    };
                    lr.ranged(r, got)?;
                }
                Want::Stream => {
                    asked.push(Want::Stream);
                    for c in blob.chunks(chunk) {
                        lr.stream(c)?;
                        let mut got = Vec::new();
                        for n in lr.drain(&mut got)? {
                            asked.push(Want::Note(n));
                        }
                        entries.extend(got.into_iter().map(|(h, _)| h));
                    }
                    lr.stream_end()?;
                }
                Want::Note(n) => asked.push(Want::Note(n)),
                Want::More => panic!("More before a stream"),
                Want::Done => return Ok((entries, asked)),
            }
        }
    }

    fn gzip(b: &[u8]) -> Vec<u8> {
        compress::testutil::encode(Compression::Gzip, None, b, usize::MAX)
    }

    #[test]
    fn a_layer_is_read_by_ranges_or_as_a_stream_with_the_same_entries() {
        let tar = model_tar();
        let (want, asked) = read_layer(media::OCI_LAYER_TAR, &tar, false, 0).unwrap();
        assert_eq!(want.len(), 6);
        assert!(
            asked.iter().all(|w| matches!(w, Want::Range(_))),
            "{asked:?}"
        );
        // a registry that ignores ranges: one range asked, then the stream
        for chunk in [1 << 20, 4096, 7] {
            let small = tar_of(&[("a", b"x"), ("b/", b""), ("b/c", &[1; 1500])]);
            let (t, blob) = if chunk == 7 {
                (walk_ranges(&small, WINDOW).0, small)
            } else {
                (want.clone(), tar.clone())
            };
            let (got, asked) = read_layer(media::OCI_LAYER_TAR, &blob, true, chunk).unwrap();
            assert_eq!(got, t, "chunk {chunk}");
            assert!(asked.contains(&Want::Stream));
            assert!(asked.iter().any(
                |w| matches!(w, Want::Note(n) if n.contains("ignores") || n.contains("whole blob"))
            ));
        }
        // gzip: streamed, decoded, verified; the same entries at every piece size
        let gz = gzip(&tar);
        for chunk in [1 << 20, 4096, 7] {
            let (got, asked) = read_layer(media::OCI_LAYER_GZIP, &gz, false, chunk).unwrap();
            assert_eq!(got, want, "chunk {chunk}");
            assert!(asked
                .iter()
                .any(|w| matches!(w, Want::Note(n) if n.contains("gzip-compressed"))));
        }
        // a stream that is not the blob the manifest names: its digest is refused
        let mut bad = gz.clone();
        let d = Descriptor::new(
            media::OCI_LAYER_GZIP,
            crate::Digest::of(b"other"),
            bad.len() as u64,
        );
        let p = Peeked {
            holds: vec![Holds::Tar(Compression::Gzip)],
            layers: vec![d],
            artifact: false,
            format: "image",
        };
        let mut lr = LayerRead::new(&p, 0);
        assert!(matches!(lr.poll().unwrap(), Want::Note(_)));
        assert_eq!(lr.poll().unwrap(), Want::Stream);
        lr.stream(&bad).unwrap();
        while lr.poll().unwrap() != Want::More {}
        assert!(matches!(lr.stream_end(), Err(Error::DigestMismatch { .. })));
        // a cut stream is an error, not an empty layer
        bad.truncate(bad.len() / 2);
        assert!(read_layer(media::OCI_LAYER_GZIP, &bad, false, 4096).is_err());
        // answers that were not asked for are driver bugs
        let mut lr = LayerRead::new(&p, 0);
        assert!(matches!(lr.stream(b"x"), Err(Error::Internal { .. })));
    }

    fn zstd(b: &[u8]) -> Vec<u8> {
        compress::testutil::encode(Compression::Zstd, None, b, usize::MAX)
    }

    /// A zstd:chunked layer's entries come from its table of contents, one range; a registry
    /// that ignores `Range` has the layer streamed instead, with the same entries; a short
    /// answer is an error.
    #[test]
    fn a_zstd_chunked_layer_is_read_by_its_table_with_the_walks_entries() {
        let tar = tar_of(&[("a", b"x"), ("b/", b""), ("b/c", &[1; 1500])]);
        let mut blob = zstd(&tar);
        let frames_end = blob.len();
        let table = format!(
            r#"{{"version":1,"entries":[
            {{"type":"reg","name":"a","mode":420,"size":1,"offset":0,"endOffset":{frames_end}}},
            {{"type":"dir","name":"b/","mode":493}},
            {{"type":"reg","name":"b/c","mode":420,"size":1500,"offset":0,"endOffset":{frames_end}}}]}}"#
        );
        let z = zstd(table.as_bytes());
        // a skippable frame holds it, as containers/storage writes it
        blob.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
        blob.extend_from_slice(&(z.len() as u32).to_le_bytes());
        let at = blob.len();
        blob.extend_from_slice(&z);
        let mut d = Descriptor::new(
            media::OCI_LAYER_ZSTD,
            crate::Digest::of(&blob),
            blob.len() as u64,
        );
        d.annotations.push((
            chunked::POSITION.into(),
            format!("{at}:{}:{}:1", z.len(), table.len()),
        ));
        d.annotations
            .push((chunked::CHECKSUM.into(), crate::Digest::of(&z).to_string()));
        let p = Peeked {
            holds: vec![Holds::Tar(Compression::Zstd)],
            layers: vec![d],
            artifact: false,
            format: "image",
        };
        let key = |h: &Header| (normal(&h.path), h.kind.clone(), h.size, h.mode);
        let walked: Vec<_> = walk_ranges(&tar, WINDOW).0.iter().map(key).collect();
        for ignore in [false, true] {
            let mut lr = LayerRead::new(&p, 0);
            let mut got = Vec::new();
            let mut places = Vec::new();
            let mut streamed = false;
            loop {
                match lr.poll().unwrap() {
                    Want::Range(r) => {
                        assert_eq!(r, at as u64..(at + z.len()) as u64);
                        let ans = if ignore {
                            crate::registry::Ranged::Ignored { head: Vec::new() }
                        } else {
                            crate::registry::Ranged::Bytes(blob[at..at + z.len()].to_vec())
                        };
                        lr.ranged(r, ans).unwrap();
                    }
                    Want::Entry(h, place) => {
                        got.push(key(&h));
                        places.push(place);
                    }
                    Want::Stream => {
                        streamed = true;
                        for c in blob.chunks(100) {
                            lr.stream(c).unwrap();
                            let mut e = Vec::new();
                            lr.drain(&mut e).unwrap();
                            for (h, place) in e {
                                got.push(key(&h));
                                places.push(place);
                            }
                        }
                        lr.stream_end().unwrap();
                    }
                    Want::Note(_) => {}
                    Want::More => panic!("More"),
                    Want::Done => break,
                }
            }
            assert_eq!(got, walked, "ignore {ignore}");
            assert_eq!(streamed, ignore);
            let frames = places
                .iter()
                .filter(|p| matches!(p, Some(Place::Frames { .. })));
            assert_eq!(frames.count(), if ignore { 0 } else { 2 });
        }
        // a short answer
        let mut lr = LayerRead::new(&p, 0);
        let Want::Range(r) = lr.poll().unwrap() else {
            panic!("the table first")
        };
        let short = crate::registry::Ranged::Bytes(blob[at..at + 3].to_vec());
        assert!(matches!(
            lr.ranged(r, short),
            Err(Error::SizeMismatch { .. })
        ));
    }

    #[test]
    fn globs_match_names_or_whole_paths() {
        assert!(glob("*.json", "models/config.json"));
        assert!(glob("*.json", "/models/unet/config.json"));
        assert!(!glob("*.json", "models/config.json.bak"));
        assert!(glob("models/*.json", "models/config.json"));
        assert!(
            !glob("models/*.json", "models/unet/config.json"),
            "* stops at /"
        );
        assert!(glob("models/**.json", "models/unet/config.json"));
        assert!(glob("/models/**", "models/unet/config.json"));
        assert!(glob(
            "model-0000[0-9]-of-*.safetensors",
            "m/model-00001-of-00002.safetensors"
        ));
        assert!(glob("?.bin", "a.bin") && !glob("?.bin", "ab.bin"));
        assert!(
            !glob("*.json", "../etc/x.json"),
            "a path that climbs out matches nothing"
        );
        // many stars over a long name: pattern x path steps, not exponential
        let long = "a".repeat(3000);
        assert!(!glob(&format!("{}b", "*a".repeat(40)), &long));
        assert!(glob("*a*a*a*a*a*a*a*a*a*a*", &long));
    }

    #[test]
    fn what_an_upper_layer_hides() {
        let f = |p: &str| hdr(p, Kind::File, 0);
        assert!(hides(&f("etc/.wh.hosts"), "etc/hosts"));
        assert!(hides(&f(".wh.opt"), "opt/app/c"));
        assert!(!hides(&f(".wh.opt"), "optional"));
        assert!(hides(&f("opt/.wh..wh..opq"), "opt/app"));
        assert!(!hides(&f("opt/.wh..wh..opq"), "opt"));
        assert!(
            hides(&f("usr"), "usr/lib/x"),
            "a file where a directory was"
        );
        assert!(!hides(&f("usr"), "usr"), "the entry itself is the file");
        assert!(!hides(&hdr("usr", Kind::Dir, 0), "usr/lib/x"));
        assert!(!hides(&f("etc/hosts"), "etc/passwd"));
    }

    #[test]
    fn an_artifacts_files_sit_side_by_side_the_first_layers_file_kept() {
        let mut t = Tree::side_by_side();
        t.begin(0);
        t.add(
            &hdr("model.safetensors", Kind::File, 5),
            Some(Place::Blob { layer: 0 }),
        )
        .unwrap();
        t.begin(1);
        t.add(
            &hdr("model.safetensors", Kind::File, 9),
            Some(Place::Blob { layer: 1 }),
        )
        .unwrap();
        t.add(&hdr(".wh.model.safetensors", Kind::File, 0), None)
            .unwrap();
        t.add(&hdr("docs/README.md", Kind::File, 3), None).unwrap();
        t.end();
        let n = t.get("model.safetensors").unwrap();
        assert_eq!(
            (n.size, n.place.clone()),
            (5, Some(Place::Blob { layer: 0 }))
        );
        assert!(t.get("docs/README.md").is_some());
        assert_eq!(t.warnings().len(), 2, "{:?}", t.warnings());
    }
}
