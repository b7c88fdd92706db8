//! Blob makers for uploads, each streaming from an [`Input`] (a fetched URL or a registry blob)
//! into the bytes the upload takes ([`Pieces`]); none holds more than the piece it is working
//! on. Each makes its blob in order and can make it again from the first byte
//! ([`Source::Restartable`]): when the registry loses an upload after bytes the Worker no
//! longer holds, the kernel asks for a restart and the producer opens its source again
//! ([`Open`]: the URL fetched again, the blob downloaded again with a driver of its own),
//! builds the same blob (tars, wraps, re-packs, recodes) and hashes it again. A lost upload
//! costs one more read of the source, not the job. A source read again must announce the
//! length it did the first time (a file that changed between two reads fails the job), and a
//! blob is verified against its digest on every read.

use std::collections::VecDeque;

use lamina_core::artifact::Packing;
use lamina_core::compress::{self, Compression, Decoder};
use lamina_core::digest::Hasher;
use lamina_core::hook::{PackFile, PackSource};
use lamina_core::image::Descriptor;
use lamina_core::layer::{LayerInfo, LayerWriter, TarInput};
use lamina_core::pack::{self, Facts, HeadReader};
use lamina_core::reference::Reference;
use lamina_core::registry::{OpenBlob, Source, Verifier};
use lamina_core::retar::{Mode, Reshape};
use lamina_core::tar::{plan, EntryKind, PlannedEntry, TarWriter};
use lamina_core::{Digest, Error};
use lamina_wasm::{Pieces, Producer, Reader};
use worker::js_sys::Uint8Array;
use worker::Fetch;

use crate::driver::{Driver, Progress};

/// A source that could not be fetched or read as it should.
fn io(what: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Io {
        what: what.into(),
        reason: reason.into(),
    }
}

/// Input bytes read a piece at a time (a fetched body, a registry blob).
#[allow(async_fn_in_trait)] // one thread: Send is not needed
pub trait Input: std::fmt::Debug {
    /// The next piece into `out` (replacing what it held); false at the end.
    async fn next_into(&mut self, out: &mut Vec<u8>) -> Result<bool, Error>;
    /// Bytes read so far.
    fn read(&self) -> u64;
    /// Stops reading (the rest is not wanted: the source is being read again).
    fn cancel(&self) {}
}

impl Input for Reader {
    async fn next_into(&mut self, out: &mut Vec<u8>) -> Result<bool, Error> {
        Reader::next_into(self, out).await
    }
    fn read(&self) -> u64 {
        self.read
    }
    fn cancel(&self) {
        Reader::cancel(self)
    }
}

/// Where a producer's input comes from: opened when the upload starts, and again from its first
/// byte each time the upload is restarted.
#[allow(async_fn_in_trait)]
pub trait Open: std::fmt::Debug {
    /// The input.
    type Input: Input;
    /// The input from its first byte, and the length its answer announced.
    async fn open(&mut self) -> Result<(Self::Input, Option<u64>), Error>;
    /// What it is, for errors.
    fn what(&self) -> String;
}

/// A URL, fetched (again) with no credentials: sources are public or carry their own token in
/// the URL.
#[derive(Debug, Clone)]
pub struct Url(pub String);

impl Open for Url {
    type Input = Reader;
    async fn open(&mut self) -> Result<(Reader, Option<u64>), Error> {
        open_url(&self.0).await
    }
    fn what(&self) -> String {
        redact(&self.0)
    }
}

/// A registry blob: the download the job opened first, then, for a restart, the blob
/// downloaded again with a driver of its own (the job's is busy with the upload); each
/// download is verified against the digest by the producer reading it.
#[derive(Debug)]
pub struct Blob {
    first: Option<Reader>,
    d: Driver,
    r: Reference,
    blob: Descriptor,
}

impl Blob {
    /// `blob` of `r`, whose first download is `first`; `d` downloads it again.
    pub fn new(first: Reader, d: Driver, r: &Reference, blob: &Descriptor) -> Blob {
        Blob {
            first: Some(first),
            d,
            r: r.clone(),
            blob: blob.clone(),
        }
    }
}

/// The progress of a download made again: none (the job's log says why it is made).
struct Quiet;

impl Progress for Quiet {
    async fn bytes(&self, _: u64, _: u64) {}
    async fn log(&self, _: &str) {}
}

impl Open for Blob {
    type Input = Reader;
    async fn open(&mut self) -> Result<(Reader, Option<u64>), Error> {
        let what = self.what();
        if let Some(rd) = self.first.take() {
            return Ok((rd, Some(self.blob.size)));
        }
        let op = OpenBlob::new(&self.r.repository, &self.blob.digest);
        let (_, stream) = self
            .d
            .run(&self.r, op, &Quiet)
            .await
            .map_err(|f| io(format!("downloading {what} again"), f.to_string()))?;
        let s = stream.ok_or_else(|| Error::Protocol {
            reason: format!("{what} came without a body"),
        })?;
        Ok((Reader::new(&s, &what), Some(self.blob.size)))
    }
    fn what(&self) -> String {
        format!("blob {}", self.blob.digest)
    }
}

/// An [`Open`] whose every later opening must announce the length the first did: a source that
/// changed between two reads would make another blob than the one the registry has part of.
#[derive(Debug)]
struct Again<O> {
    src: O,
    first: Option<Option<u64>>,
}

impl<O: Open> Again<O> {
    fn new(src: O) -> Again<O> {
        Again { src, first: None }
    }

    async fn open(&mut self) -> Result<(O::Input, Option<u64>), Error> {
        let (rd, len) = self.src.open().await?;
        match self.first {
            None => self.first = Some(len),
            Some(first) if first != len => {
                rd.cancel();
                let n =
                    |l: Option<u64>| l.map_or("no length".to_string(), |n| format!("{n} bytes"));
                return Err(io(
                    self.src.what(),
                    format!(
                        "it changed between two reads ({}, then {}): the upload cannot be made \
                         again",
                        n(first),
                        n(len)
                    ),
                ));
            }
            Some(_) => {}
        }
        Ok((rd, len))
    }
}

/// Fetches `url` (no credentials: sources are public or carry their own token in the URL) and
/// returns its body with the length it announced.
pub async fn open_url(url: &str) -> Result<(Reader, Option<u64>), Error> {
    let what = || format!("fetching {}", redact(url));
    let parsed = worker::Url::parse(url).map_err(|e| Error::Usage {
        reason: format!("{}: {e}", redact(url)),
    })?;
    let resp = Fetch::Url(parsed)
        .send()
        .await
        .map_err(|e| io(what(), e.to_string()))?;
    let status = resp.status_code();
    if status != 200 {
        return Err(io(what(), format!("HTTP {status}")));
    }
    let len = resp
        .headers()
        .get("content-length")
        .map_err(|e| io(what(), e.to_string()))?
        .and_then(|v| v.trim().parse().ok());
    let inner: web_sys::Response = resp.into();
    let body = inner.body().ok_or_else(|| io(what(), "no body"))?;
    Ok((Reader::new(&body, &redact(url)), len))
}

/// A URL for messages: its query (which may carry a signed token) left out.
pub fn redact(url: &str) -> String {
    match url.split_once('?') {
        Some((a, _)) => format!("{a}?<query>"),
        None => url.to_string(),
    }
}

/// A tar given by URL: an uncompressed one is compressed as asked; a `.tar.gz` / `.tar.zst` is
/// passed through as is (the core's [`TarInput`]).
#[derive(Debug)]
pub struct GivenTar<O: Open = Url> {
    src: Again<O>,
    rd: O::Input,
    announced: Option<u64>,
    want: Compression,
    ti: Option<TarInput>,
    info: Option<LayerInfo>,
    buf: Vec<u8>,
    /// Bytes read by earlier passes.
    earlier: u64,
}

impl GivenTar<Url> {
    /// Streams the tar at `url`.
    pub async fn open(url: &str, want: Compression) -> Result<GivenTar, Error> {
        GivenTar::from(Url(url.to_string()), want).await
    }
}

impl<O: Open> GivenTar<O> {
    /// Streams the tar `src` gives.
    pub async fn from(src: O, want: Compression) -> Result<GivenTar<O>, Error> {
        let mut src = Again::new(src);
        let (rd, announced) = src.open().await?;
        Ok(GivenTar {
            src,
            rd,
            announced,
            want,
            ti: Some(TarInput::new(want, None)),
            info: None,
            buf: Vec::new(),
            earlier: 0,
        })
    }
    /// The layer, once made.
    pub fn info(&self) -> Option<&LayerInfo> {
        self.info.as_ref()
    }
}

impl<O: Open> Producer for GivenTar<O> {
    type Body = Uint8Array;
    fn source(&self) -> Source {
        Source::Restartable
    }
    async fn produce(&mut self, out: &mut Pieces, want: u64) -> Result<(), Error> {
        let goal = out.len() + want;
        while out.len() < goal && self.info.is_none() {
            let Some(ti) = self.ti.as_mut() else { break };
            match self.rd.next_into(&mut self.buf).await? {
                true => ti.write(&self.buf, &mut |b| out.gather(b))?,
                false => {
                    let read = self.rd.read();
                    if let Some(n) = self.announced.filter(|n| *n != read) {
                        return Err(io(
                            self.src.src.what(),
                            format!(
                                "the tar ended after {read} of the {n} bytes its Content-Length \
                                 announced"
                            ),
                        ));
                    }
                    let ti = self
                        .ti
                        .take()
                        .ok_or_else(|| Error::internal("tar finished twice"))?;
                    self.info = Some(ti.finish(&mut |b| out.gather(b))?);
                }
            }
        }
        Ok(())
    }
    fn finished(&self) -> Option<(Digest, u64)> {
        self.info.as_ref().map(|i| (i.digest.clone(), i.size))
    }
    fn read(&self) -> u64 {
        self.earlier + self.rd.read()
    }
    async fn restart(&mut self) -> Result<(), Error> {
        self.rd.cancel();
        self.earlier += self.rd.read();
        (self.rd, self.announced) = self.src.open().await?;
        self.ti = Some(TarInput::new(self.want, None));
        self.info = None;
        Ok(())
    }
}

/// Where a file of a built layer comes from.
#[derive(Debug, Clone)]
pub enum Content<O = Url> {
    /// Fetched (its `Content-Length` is the size in the tar header).
    Fetched(O),
    /// Given inline.
    Inline(Vec<u8>),
}

/// A layer made of files (under a directory) as a deterministic tar, compressed as asked.
#[derive(Debug)]
pub struct Built<O: Open = Url> {
    /// The tar's entries as planned (each pass starts from them).
    planned: Vec<PlannedEntry<usize>>,
    entries: VecDeque<PlannedEntry<usize>>,
    contents: Vec<Content<Again<O>>>,
    compression: Compression,
    /// the file being streamed: its reader, bytes still owed, its name
    cur: Option<(O::Input, u64, String)>,
    tw: TarWriter,
    lw: Option<LayerWriter>,
    info: Option<LayerInfo>,
    read: u64,
    buf: Vec<u8>,
    /// (path in the layer, size) of each file, as fetched
    pub files: Vec<(String, u64)>,
}

impl<O: Open> Built<O> {
    /// A layer of `files` (path in the layer, content), compressed with `c`.
    pub fn new(files: Vec<(String, Content<O>)>, c: Compression) -> Result<Built<O>, Error> {
        let mut entries = Vec::new();
        let mut contents = Vec::new();
        for (i, (path, content)) in files.into_iter().enumerate() {
            let (size, content) = match content {
                Content::Inline(b) => (b.len() as u64, Content::Inline(b)),
                // the real size comes with the answer
                Content::Fetched(o) => (0, Content::Fetched(Again::new(o))),
            };
            entries.push(PlannedEntry {
                path,
                kind: EntryKind::File {
                    size,
                    executable: false,
                },
                source: Some(i),
            });
            contents.push(content);
        }
        let planned = plan(entries)?;
        Ok(Built {
            entries: planned.clone().into(),
            planned,
            contents,
            compression: c,
            cur: None,
            tw: TarWriter::new(0),
            lw: Some(LayerWriter::new(c, None)),
            info: None,
            read: 0,
            buf: Vec::new(),
            files: Vec::new(),
        })
    }

    /// The layer, once made.
    pub fn info(&self) -> Option<&LayerInfo> {
        self.info.as_ref()
    }

    /// Tar bytes through the layer writer into `out`.
    fn emit(lw: &mut Option<LayerWriter>, out: &mut Pieces, tar: &[u8]) -> Result<(), Error> {
        let lw = lw
            .as_mut()
            .ok_or_else(|| Error::internal("layer already finished"))?;
        lw.write(tar, &mut |b| out.gather(b))
    }

    fn tar_op(
        &mut self,
        out: &mut Pieces,
        f: impl FnOnce(&mut TarWriter, &mut dyn FnMut(&[u8])) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut err = None;
        let lw = &mut self.lw;
        f(&mut self.tw, &mut |t: &[u8]| {
            if err.is_none() {
                if let Err(e) = Self::emit(lw, out, t) {
                    err = Some(e);
                }
            }
        })?;
        err.map_or(Ok(()), Err)
    }
}

impl<O: Open> Producer for Built<O> {
    type Body = Uint8Array;
    fn source(&self) -> Source {
        Source::Restartable
    }
    async fn produce(&mut self, w: &mut Pieces, want: u64) -> Result<(), Error> {
        let goal = w.len() + want;
        while w.len() < goal && self.info.is_none() {
            if let Some((rd, left, name)) = self.cur.as_mut() {
                let mut c = std::mem::take(&mut self.buf);
                match rd.next_into(&mut c).await? {
                    true => {
                        if c.len() as u64 > *left {
                            return Err(io(
                                name.as_str(),
                                "the download is longer than its Content-Length",
                            ));
                        }
                        *left -= c.len() as u64;
                        self.read += c.len() as u64;
                        self.tar_op(w, |tw, s| tw.data(&c, s))?;
                        self.buf = c;
                    }
                    false => {
                        if *left != 0 {
                            return Err(io(
                                name.as_str(),
                                format!(
                                    "the download ended {left} bytes short of its Content-Length"
                                ),
                            ));
                        }
                        self.cur = None;
                        self.tar_op(w, |tw, _| tw.end_file())?;
                    }
                }
                continue;
            }
            let Some(e) = self.entries.pop_front() else {
                self.tar_op(w, |tw, s| tw.finish(s))?;
                let lw = self
                    .lw
                    .take()
                    .ok_or_else(|| Error::internal("layer finished twice"))?;
                self.info = Some(lw.finish(&mut |b| w.gather(b))?);
                break;
            };
            let Some(i) = e.source else {
                self.tar_op(w, |tw, s| tw.entry(&e.path, &EntryKind::Dir, s))?;
                continue;
            };
            match &mut self.contents[i] {
                Content::Inline(b) => {
                    let b = b.clone();
                    let kind = EntryKind::File {
                        size: b.len() as u64,
                        executable: false,
                    };
                    self.tar_op(w, |tw, s| tw.entry(&e.path, &kind, s))?;
                    self.tar_op(w, |tw, s| tw.data(&b, s))?;
                    self.tar_op(w, |tw, _| tw.end_file())?;
                    self.read += b.len() as u64;
                    self.files.push((e.path.clone(), b.len() as u64));
                }
                Content::Fetched(src) => {
                    let what = src.src.what();
                    let (rd, len) = src.open().await?;
                    let size = len.ok_or_else(|| {
                        io(
                            &what,
                            "the answer has no Content-Length (the tar header needs the size \
                             before the bytes; use a tar URL instead)",
                        )
                    })?;
                    let kind = EntryKind::File {
                        size,
                        executable: false,
                    };
                    self.tar_op(w, |tw, s| tw.entry(&e.path, &kind, s))?;
                    self.files.push((e.path.clone(), size));
                    self.cur = Some((rd, size, what));
                }
            }
        }
        Ok(())
    }
    fn finished(&self) -> Option<(Digest, u64)> {
        self.info.as_ref().map(|i| (i.digest.clone(), i.size))
    }
    fn read(&self) -> u64 {
        self.read
    }
    async fn restart(&mut self) -> Result<(), Error> {
        if let Some((rd, _, _)) = self.cur.take() {
            rd.cancel();
        }
        self.entries = self.planned.clone().into();
        self.tw = TarWriter::new(0);
        self.lw = Some(LayerWriter::new(self.compression, None));
        self.info = None;
        self.files.clear();
        Ok(())
    }
}

/// How a stored blob's bytes come from its source's, uncompressed (so its diff_id is its
/// digest): as they are, a raw file wrapped into a tar (a header, the file, a trailer: see
/// [`lamina_core::convert::wrap_header`] and [`pack::file_tar`]), or a tar re-packed as it
/// streams ([`Reshape`]: decompressed, put under `models/`, or its one file taken out).
#[derive(Debug, Clone)]
pub enum Shape {
    /// The source's bytes.
    AsIs,
    /// The source's bytes between these.
    Wrap {
        /// The tar header blocks before the file.
        header: Vec<u8>,
        /// The padding and end blocks after it.
        trailer: Vec<u8>,
    },
    /// The source's tar re-packed: decompressed from `from`, then by `mode` (see
    /// [`Reshape::new`]).
    Reshape {
        /// The source's compression.
        from: Compression,
        /// What becomes of its entries (`None`: the plain tar as it is).
        mode: Option<Mode>,
        /// The metadata time of entries it makes.
        mtime: u64,
    },
}

/// A [`Shape`] at work: source bytes in, the blob's bytes out into the upload's [`Pieces`],
/// hashed on the way (unless the blob is the source, verified already). [`Shaper::restart`]
/// makes it new, for the source read again from its first byte.
#[derive(Debug)]
struct Shaper {
    shape: Shape,
    re: Option<Box<Reshape>>,
    started: bool,
    hashing: bool,
    hash: Option<Hasher>,
}

impl Shaper {
    fn new(shape: Shape, hash: bool) -> Result<Shaper, Error> {
        let re = match &shape {
            Shape::Reshape { from, mode, mtime } => {
                Some(Box::new(Reshape::new(*from, mode.clone(), *mtime)?))
            }
            _ => None,
        };
        Ok(Shaper {
            shape,
            re,
            started: false,
            hashing: hash,
            hash: hash.then(Hasher::new),
        })
    }

    /// The same shape from its start.
    fn restart(&mut self) -> Result<(), Error> {
        *self = Shaper::new(self.shape.clone(), self.hashing)?;
        Ok(())
    }

    fn write(&mut self, b: &[u8], w: &mut Pieces) -> Result<(), Error> {
        let Shaper {
            shape,
            re,
            started,
            hash,
            ..
        } = self;
        let mut put = |o: &[u8]| {
            if let Some(h) = hash.as_mut() {
                h.update(o);
            }
            w.gather(o);
        };
        if !std::mem::replace(started, true) {
            if let Shape::Wrap { header, .. } = shape {
                put(header);
            }
        }
        match re {
            Some(r) => r.write(b, &mut put),
            None => {
                put(b);
                Ok(())
            }
        }
    }

    /// The source's end: the rest of the blob, and its digest and size when this hashed it.
    fn finish(&mut self, w: &mut Pieces) -> Result<Option<(Digest, u64)>, Error> {
        let Shaper {
            shape,
            re,
            started,
            hash,
            ..
        } = self;
        let mut put = |o: &[u8]| {
            if let Some(h) = hash.as_mut() {
                h.update(o);
            }
            w.gather(o);
        };
        if !std::mem::replace(started, true) {
            // an empty file: its header still goes first
            if let Shape::Wrap { header, .. } = shape {
                put(header);
            }
        }
        match (shape, re) {
            (_, Some(r)) => r.finish(&mut put)?,
            (Shape::Wrap { trailer, .. }, None) => put(trailer),
            _ => {}
        }
        Ok(hash.take().map(|h| {
            let n = h.len();
            (h.finish(), n)
        }))
    }

    /// The one file a [`lamina_core::retar::Mode::File`] re-pack found.
    fn file(&self) -> Option<(String, u64)> {
        self.re.as_ref().and_then(|r| r.file().cloned())
    }
}

/// Where a file to pack comes from: an [`Open`] (a URL), or bytes given inline.
#[derive(Debug)]
pub enum FileSource<O> {
    /// Read (again) from here.
    Open(O),
    /// These bytes.
    Data(Vec<u8>),
}

/// One file of a pack hook streamed into its layer: fetched (or given inline), stored raw or
/// wrapped into a tar, hashed on the way; the head of its bytes is read for the weights'
/// header facts ([`HeadReader`]) and a `config.json` is kept (it is small) for the family.
#[derive(Debug)]
pub struct FromFile<O: Open = Url> {
    src: Option<Again<O>>,
    rd: Option<O::Input>,
    /// The file given inline (each pass takes a copy).
    inline: Option<Vec<u8>>,
    data: Option<Vec<u8>>,
    path: String,
    what: String,
    announced: Option<u64>,
    shaper: Shaper,
    head: Option<HeadReader>,
    config: Option<Vec<u8>>,
    /// The file's bytes read by this pass.
    read: u64,
    /// Bytes read by earlier passes.
    earlier: u64,
    done: Option<(Digest, u64)>,
    buf: Vec<u8>,
}

impl FromFile<Url> {
    /// Opens `f` to be stored packed so (a tar of it holding the directories above it with
    /// `dirs`, as a ModelKit's do; `mtime` in its header).
    pub async fn open(
        f: &PackFile,
        packing: Packing,
        dirs: bool,
        mtime: u64,
    ) -> Result<FromFile, Error> {
        let src = match &f.source {
            PackSource::Url(u) => FileSource::Open(Url(u.clone())),
            PackSource::Data(d) => FileSource::Data(d.clone()),
        };
        FromFile::from(&f.path, f.executable, src, packing, dirs, mtime).await
    }
}

impl<O: Open> FromFile<O> {
    /// The file at `path` in the artifact (mode 0755 when `executable`) from `src`, stored
    /// packed so (see [`FromFile::open`]).
    pub async fn from(
        path: &str,
        executable: bool,
        src: FileSource<O>,
        packing: Packing,
        dirs: bool,
        mtime: u64,
    ) -> Result<FromFile<O>, Error> {
        let (src, rd, inline, announced, what) = match src {
            FileSource::Open(o) => {
                let mut o = Again::new(o);
                let what = o.src.what();
                let (rd, len) = o.open().await?;
                (Some(o), Some(rd), None, len, what)
            }
            FileSource::Data(d) => {
                let n = d.len() as u64;
                (None, None, Some(d), Some(n), path.to_string())
            }
        };
        let shape = match packing {
            Packing::Raw => Shape::AsIs,
            Packing::Tar(Compression::None) => {
                let size = announced.ok_or_else(|| {
                    io(
                        &what,
                        "the answer has no Content-Length (a tar header needs the file's size \
                         before its bytes)",
                    )
                })?;
                let (header, trailer) = if dirs {
                    (
                        lamina_core::convert::wrap_header(None, path, size, executable, mtime)?,
                        pack::tar_trailer(size),
                    )
                } else {
                    pack::file_tar(path, size, executable, mtime)?
                };
                Shape::Wrap { header, trailer }
            }
            Packing::Tar(c) => {
                return Err(Error::internal(format!(
                    "packing a file into a {} tar",
                    c.name()
                )))
            }
        };
        Ok(FromFile {
            src,
            rd,
            data: inline.clone(),
            inline,
            path: path.to_string(),
            what,
            announced,
            shaper: Shaper::new(shape, true)?,
            head: Some(HeadReader::new(path)),
            config: (path == "config.json").then(Vec::new),
            read: 0,
            earlier: 0,
            done: None,
            buf: Vec::new(),
        })
    }

    /// The file's size (once stored).
    pub fn file_size(&self) -> u64 {
        self.read
    }

    /// What the file's header says of the weights (once stored; taken).
    pub fn facts(&mut self) -> Option<Facts> {
        self.head.take().and_then(HeadReader::finish)
    }

    /// The bytes of a `config.json` under [`pack::CONFIG_JSON_MAX`] (once stored; taken).
    pub fn config_json(&mut self) -> Option<Vec<u8>> {
        self.config.take()
    }

    fn take_in(&mut self, c: &[u8]) {
        self.read += c.len() as u64;
        if let Some(h) = self.head.as_mut().filter(|h| h.wants_more()) {
            h.write(c);
        }
        if let Some(k) = self.config.as_mut() {
            if self.read < pack::CONFIG_JSON_MAX {
                k.extend_from_slice(c);
            } else {
                self.config = None;
            }
        }
    }
}

impl<O: Open> Producer for FromFile<O> {
    type Body = Uint8Array;
    fn source(&self) -> Source {
        Source::Restartable
    }
    async fn produce(&mut self, w: &mut Pieces, want: u64) -> Result<(), Error> {
        let goal = w.len() + want;
        while w.len() < goal && self.done.is_none() {
            let more = match (self.data.take(), self.rd.as_mut()) {
                (Some(d), _) => {
                    self.buf = d;
                    true
                }
                (None, Some(rd)) => rd.next_into(&mut self.buf).await?,
                (None, None) => false,
            };
            if more {
                let c = std::mem::take(&mut self.buf);
                if self
                    .announced
                    .is_some_and(|n| self.read + c.len() as u64 > n)
                {
                    return Err(io(
                        &self.what,
                        "the download is longer than its Content-Length",
                    ));
                }
                self.take_in(&c);
                self.shaper.write(&c, w)?;
                self.buf = c;
                continue;
            }
            if let Some(n) = self.announced.filter(|n| *n != self.read) {
                return Err(io(
                    &self.what,
                    format!(
                        "the download ended {} bytes short of its Content-Length",
                        n - self.read
                    ),
                ));
            }
            self.done = self.shaper.finish(w)?;
            if self.done.is_none() {
                return Err(Error::internal("a packed file was not hashed"));
            }
        }
        Ok(())
    }
    fn finished(&self) -> Option<(Digest, u64)> {
        self.done.clone()
    }
    fn read(&self) -> u64 {
        self.earlier + self.read
    }
    async fn restart(&mut self) -> Result<(), Error> {
        if let Some(rd) = self.rd.take() {
            rd.cancel();
        }
        if let Some(src) = self.src.as_mut() {
            let (rd, announced) = src.open().await?;
            self.rd = Some(rd);
            self.announced = announced;
        }
        self.data = self.inline.clone();
        self.earlier += self.read;
        self.read = 0;
        self.shaper.restart()?;
        self.head = Some(HeadReader::new(&self.path));
        self.config = (self.path == "config.json").then(Vec::new);
        self.done = None;
        Ok(())
    }
}

/// A registry blob streamed into another upload: copied as it is (verified against its
/// digest), decompressed and compressed again (`lamina zstd`), its diff_id computed on the
/// way, or made over by a [`Shape`] (`lamina convert`: wrapped, re-packed, unwrapped). A
/// restart downloads it again ([`Blob`]).
pub struct FromBlob<O: Open = Blob> {
    src: Again<O>,
    rd: O::Input,
    digest: Digest,
    size: u64,
    verify: Option<Verifier>,
    /// (from, to) of a recode, and its codecs at work.
    codecs: Option<(Compression, Compression)>,
    recode: Option<(Box<dyn Decoder>, LayerWriter)>,
    shaper: Option<Shaper>,
    done: Option<(Digest, u64)>,
    info: Option<LayerInfo>,
    buf: Vec<u8>,
    /// Bytes read by earlier passes.
    earlier: u64,
}

impl<O: Open> std::fmt::Debug for FromBlob<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FromBlob")
            .field("digest", &self.digest)
            .field("read", &self.rd.read())
            .field("recode", &self.codecs)
            .finish()
    }
}

impl<O: Open> FromBlob<O> {
    /// The blob `digest` of `size` bytes `src` gives, copied unchanged.
    pub async fn copy(src: O, digest: &Digest, size: u64) -> Result<FromBlob<O>, Error> {
        let mut src = Again::new(src);
        let (rd, _) = src.open().await?;
        Ok(FromBlob {
            src,
            rd,
            digest: digest.clone(),
            size,
            verify: Some(Verifier::default()),
            codecs: None,
            recode: None,
            shaper: None,
            done: None,
            info: None,
            buf: Vec::new(),
            earlier: 0,
        })
    }
    /// The layer blob `digest` (compressed with `from`) made into a `to` layer.
    pub async fn recode(
        src: O,
        digest: &Digest,
        size: u64,
        from: Compression,
        to: Compression,
    ) -> Result<FromBlob<O>, Error> {
        Ok(FromBlob {
            codecs: Some((from, to)),
            recode: Some((compress::decoder(from), LayerWriter::new(to, None))),
            ..FromBlob::copy(src, digest, size).await?
        })
    }
    /// The blob `digest` (of `size` bytes, verified as it comes) made over by `shape`
    /// into an uncompressed blob.
    pub async fn shaped(
        src: O,
        digest: &Digest,
        size: u64,
        shape: Shape,
    ) -> Result<FromBlob<O>, Error> {
        let shaper = Shaper::new(shape, true)?;
        Ok(FromBlob {
            shaper: Some(shaper),
            ..FromBlob::copy(src, digest, size).await?
        })
    }
    /// The new layer (for a recoded one), once made.
    pub fn info(&self) -> Option<&LayerInfo> {
        self.info.as_ref()
    }
    /// The file a re-pack to one raw file found: its path in the tar and its size.
    pub fn file(&self) -> Option<(String, u64)> {
        self.shaper.as_ref().and_then(Shaper::file)
    }
}

fn recode_into(
    dec: &mut Box<dyn Decoder>,
    lw: &mut LayerWriter,
    w: &mut Pieces,
    input: &[u8],
    last: bool,
) -> Result<(), Error> {
    let mut err = None;
    let mut sink = |t: &[u8]| -> Result<(), std::convert::Infallible> {
        if err.is_none() {
            if let Err(e) = lw.write(t, &mut |b| w.gather(b)) {
                err = Some(e);
            }
        }
        Ok(())
    };
    let r = if last {
        dec.finish(&mut sink)
    } else {
        dec.write(input, &mut sink)
    };
    r.map_err(|e| io("decompressing the layer", e.to_string()))?;
    err.map_or(Ok(()), Err)
}

impl<O: Open> Producer for FromBlob<O> {
    type Body = Uint8Array;
    fn source(&self) -> Source {
        Source::Restartable
    }
    async fn produce(&mut self, w: &mut Pieces, want: u64) -> Result<(), Error> {
        let goal = w.len() + want;
        while w.len() < goal && self.done.is_none() {
            match self.rd.next_into(&mut self.buf).await? {
                true => {
                    let c = &self.buf;
                    if let Some(v) = self.verify.as_mut() {
                        v.update(c);
                    }
                    match (self.recode.as_mut(), self.shaper.as_mut()) {
                        (Some((dec, lw)), _) => recode_into(dec, lw, w, c, false)?,
                        (None, Some(sh)) => sh.write(c, w)?,
                        (None, None) => w.gather(c),
                    }
                }
                false => {
                    let v = self
                        .verify
                        .take()
                        .ok_or_else(|| Error::internal("blob finished twice"))?;
                    v.check(
                        &format!("blob {}", self.digest),
                        &self.digest,
                        Some(self.size),
                    )?;
                    if let Some(sh) = self.shaper.as_mut() {
                        self.done =
                            Some(sh.finish(w)?.ok_or_else(|| {
                                Error::internal("a re-packed blob was not hashed")
                            })?);
                        continue;
                    }
                    match self.recode.take() {
                        None => self.done = Some((self.digest.clone(), self.size)),
                        Some((mut dec, mut lw)) => {
                            recode_into(&mut dec, &mut lw, w, &[], true)?;
                            let info = lw.finish(&mut |b| w.gather(b))?;
                            self.done = Some((info.digest.clone(), info.size));
                            self.info = Some(info);
                        }
                    }
                }
            }
        }
        Ok(())
    }
    fn finished(&self) -> Option<(Digest, u64)> {
        self.done.clone()
    }
    fn read(&self) -> u64 {
        self.earlier + self.rd.read()
    }
    async fn restart(&mut self) -> Result<(), Error> {
        self.rd.cancel();
        self.earlier += self.rd.read();
        (self.rd, _) = self.src.open().await?;
        self.verify = Some(Verifier::default());
        self.recode = self
            .codecs
            .map(|(from, to)| (compress::decoder(from), LayerWriter::new(to, None)));
        if let Some(sh) = self.shaper.as_mut() {
            sh.restart()?;
        }
        self.done = None;
        self.info = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use lamina_wasm::block_on;

    use super::*;

    #[test]
    fn urls_in_messages_leave_their_query_out() {
        assert_eq!(
            redact("https://files.example/m.bin?X-Amz-Signature=secret"),
            "https://files.example/m.bin?<query>"
        );
        assert_eq!(
            redact("http://127.0.0.1:8000/f/a"),
            "http://127.0.0.1:8000/f/a"
        );
    }
    /// What a [`Shaper`] makes of `input` fed `chunk` bytes at a time: the blob's digest and
    /// size, and the bytes handed to the upload.
    fn shaped(shape: Shape, input: &[u8], chunk: usize) -> (Option<(Digest, u64)>, u64) {
        let mut sh = Shaper::new(shape, true).expect("shaper");
        let mut w = Pieces::default();
        for c in input.chunks(chunk) {
            sh.write(c, &mut w).expect("write");
        }
        let done = sh.finish(&mut w).expect("finish");
        (done, w.len())
    }

    #[test]
    fn a_file_wrapped_or_unwrapped_as_it_streams_is_the_same_blob_in_every_chunk_size() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let header =
            lamina_core::convert::wrap_header(Some("models"), "unet/x.bin", 10_000, false, 5)
                .expect("header");
        let trailer = pack::tar_trailer(10_000);
        let tar = [header.clone(), data.clone(), trailer.clone()].concat();
        let wrap = || Shape::Wrap {
            header: header.clone(),
            trailer: trailer.clone(),
        };
        let unwrap = || Shape::Reshape {
            from: Compression::None,
            mode: Some(Mode::File),
            mtime: 0,
        };
        for chunk in [1, 7, 4096, data.len()] {
            let (done, sent) = shaped(wrap(), &data, chunk);
            assert_eq!(
                done,
                Some((Digest::of(&tar), tar.len() as u64)),
                "wrap, {chunk}"
            );
            assert_eq!(sent, tar.len() as u64);
            let mut sh = Shaper::new(unwrap(), true).expect("shaper");
            let mut w = Pieces::default();
            for c in tar.chunks(chunk) {
                sh.write(c, &mut w).expect("write");
            }
            let done = sh.finish(&mut w).expect("finish");
            assert_eq!(
                done,
                Some((Digest::of(&data), data.len() as u64)),
                "unwrap, {chunk}"
            );
            assert_eq!(
                sh.file(),
                Some(("models/unet/x.bin".to_string(), data.len() as u64))
            );
            let (done, _) = shaped(Shape::AsIs, &data, chunk);
            assert_eq!(
                done,
                Some((Digest::of(&data), data.len() as u64)),
                "as is, {chunk}"
            );
        }
        // an empty file still gets its header
        let (h, t) = pack::file_tar("empty", 0, false, 0).expect("tar");
        let (done, _) = shaped(
            Shape::Wrap {
                header: h.clone(),
                trailer: t.clone(),
            },
            &[],
            1,
        );
        assert_eq!(done.map(|d| d.0), Some(Digest::of(&[h, t].concat())));
    }

    /// A source of `data` read `piece` bytes at a time, announcing its length; it counts its
    /// openings and the inputs cancelled, and after its first opening holds `grow` bytes more
    /// (a file changed between two reads).
    #[derive(Debug, Clone)]
    struct Fake {
        data: Vec<u8>,
        piece: usize,
        grow: usize,
        opened: Rc<Cell<u32>>,
        cancelled: Rc<Cell<u32>>,
    }

    impl Fake {
        fn new(data: &[u8], piece: usize) -> Fake {
            Fake {
                data: data.to_vec(),
                piece,
                grow: 0,
                opened: Rc::default(),
                cancelled: Rc::default(),
            }
        }
    }

    #[derive(Debug)]
    struct FakeIn {
        data: Vec<u8>,
        at: usize,
        piece: usize,
        cancelled: Rc<Cell<u32>>,
    }

    impl Input for FakeIn {
        async fn next_into(&mut self, out: &mut Vec<u8>) -> Result<bool, Error> {
            let end = (self.at + self.piece).min(self.data.len());
            out.clear();
            out.extend_from_slice(&self.data[self.at..end]);
            self.at = end;
            Ok(!out.is_empty())
        }
        fn read(&self) -> u64 {
            self.at as u64
        }
        fn cancel(&self) {
            self.cancelled.set(self.cancelled.get() + 1);
        }
    }

    impl Open for Fake {
        type Input = FakeIn;
        async fn open(&mut self) -> Result<(FakeIn, Option<u64>), Error> {
            let mut data = self.data.clone();
            if self.opened.get() > 0 {
                data.extend(std::iter::repeat_n(7u8, self.grow));
            }
            self.opened.set(self.opened.get() + 1);
            let n = data.len() as u64;
            let input = FakeIn {
                data,
                at: 0,
                piece: self.piece,
                cancelled: Rc::clone(&self.cancelled),
            };
            Ok((input, Some(n)))
        }
        fn what(&self) -> String {
            "the fake source".into()
        }
    }

    /// Makes `p`'s blob, asking `want` bytes at a time; once `cut` bytes of it were made (the
    /// registry lost them), starts it again. Gives the blob's digest and size and the bytes
    /// the last pass made.
    fn make<P: Producer>(p: &mut P, want: u64, mut cut: Option<u64>) -> ((Digest, u64), u64) {
        assert_eq!(p.source(), Source::Restartable);
        let mut made = 0;
        loop {
            let mut w = Pieces::default();
            block_on(p.produce(&mut w, want)).expect("produce");
            made += w.len();
            if cut.is_some_and(|c| made >= c) {
                block_on(p.restart()).expect("restart");
                (made, cut) = (0, None);
                continue;
            }
            if let Some(d) = p.finished() {
                return (d, made);
            }
        }
    }

    /// A safetensors file: a header naming one F16 tensor of `n` values, and its data.
    fn safetensors(n: usize) -> Vec<u8> {
        let json = format!(
            r#"{{"w":{{"dtype":"F16","shape":[{n}],"data_offsets":[0,{}]}}}}"#,
            2 * n
        );
        let mut out = (json.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(json.as_bytes());
        out.extend((0..2 * n).map(|i| (i * 31 % 251) as u8));
        out
    }

    /// The bytes a layer writer makes of `data`.
    fn compressed(data: &[u8], c: Compression) -> Vec<u8> {
        let mut out = Vec::new();
        let mut lw = LayerWriter::new(c, None);
        lw.write(data, &mut |b| out.extend_from_slice(b))
            .expect("write");
        lw.finish(&mut |b| out.extend_from_slice(b))
            .expect("finish");
        out
    }

    #[test]
    fn a_packed_file_started_again_midway_is_the_same_blob_with_the_same_facts() {
        let weights = safetensors(40_000);
        let config = br#"{"model_type": "llama"}"#.to_vec();
        let cases: Vec<(&str, Vec<u8>, Packing, bool, bool)> = vec![
            (
                "model.safetensors",
                weights.clone(),
                Packing::Raw,
                false,
                false,
            ),
            (
                "unet/x.safetensors",
                weights.clone(),
                Packing::Tar(Compression::None),
                true,
                false,
            ),
            (
                "model.safetensors",
                weights.clone(),
                Packing::Tar(Compression::None),
                false,
                false,
            ),
            ("config.json", config.clone(), Packing::Raw, false, false),
            // given inline: the same bytes again
            (
                "model.safetensors",
                weights.clone(),
                Packing::Raw,
                false,
                true,
            ),
        ];
        for (path, data, packing, dirs, inline) in cases {
            let fake = Fake::new(&data, 4096);
            let what = format!("{path} {} dirs {dirs} inline {inline}", packing.name());
            let open = |f: &Fake| {
                let src = if inline {
                    FileSource::Data(data.clone())
                } else {
                    FileSource::Open(f.clone())
                };
                block_on(FromFile::from(path, false, src, packing, dirs, 5)).expect("open")
            };
            let mut clean = open(&Fake::new(&data, 4096));
            let (want, _) = make(&mut clean, 1 << 20, None);
            let mut p = open(&fake);
            // cut in the middle (in a few KiB asked at a time), and after the end
            let (got, again) = make(&mut p, 3000, Some(data.len() as u64 / 2));
            assert_eq!(got, want, "{what}");
            assert_eq!(again, want.1, "{what}: the last pass made the whole blob");
            assert_eq!(p.file_size(), data.len() as u64, "{what}");
            assert_eq!(p.facts(), clean.facts(), "{what}");
            assert_eq!(p.config_json(), clean.config_json(), "{what}");
            if !inline {
                assert_eq!(fake.opened.get(), 2, "{what}: opened again");
                assert_eq!(fake.cancelled.get(), 1, "{what}: the first read stopped");
                assert!(p.read() > data.len() as u64, "{what}: both reads count");
            }
            let mut p = open(&Fake::new(&data, 4096));
            let (got, _) = make(&mut p, 1 << 20, Some(want.1));
            assert_eq!(got, want, "{what}: started again after its end");
        }
        // the facts come from the header, read again
        let mut p = block_on(FromFile::from(
            "model.safetensors",
            false,
            FileSource::Open(Fake::new(&weights, 100)),
            Packing::Raw,
            false,
            0,
        ))
        .expect("open");
        make(&mut p, 50, Some(weights.len() as u64 - 1));
        assert_eq!(p.facts().and_then(|f| f.params), Some(40_000));
    }

    #[test]
    fn a_built_layer_or_a_given_tar_started_again_midway_is_the_same_layer() {
        // a.bin incompressible (so a cut at half the layer falls in it, however compressed)
        let mut x = 1u32;
        let a: Vec<u8> = (0..70_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let b = b"tokens\n".repeat(3000);
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let files = |fa: &Fake, fb: &Fake| {
                vec![
                    (
                        "src/weights/a.bin".to_string(),
                        Content::Fetched(fa.clone()),
                    ),
                    (
                        "src/weights/README.md".to_string(),
                        Content::Inline(b"# x\n".to_vec()),
                    ),
                    (
                        "src/weights/sub/b.txt".to_string(),
                        Content::Fetched(fb.clone()),
                    ),
                ]
            };
            let mut clean =
                Built::new(files(&Fake::new(&a, 999), &Fake::new(&b, 999)), c).expect("built");
            let (want, _) = make(&mut clean, 1 << 20, None);
            let (fa, fb) = (Fake::new(&a, 999), Fake::new(&b, 999));
            let mut p = Built::new(files(&fa, &fb), c).expect("built");
            let (got, _) = make(&mut p, 500, Some(want.1 / 2));
            assert_eq!(got, want, "{}", c.name());
            assert_eq!(p.info(), clean.info(), "{}", c.name());
            assert_eq!(p.files, clean.files, "each file once");
            assert_eq!(fa.opened.get(), 2, "{}", c.name());
            if c == Compression::None {
                // cut within a.bin: b.txt had not been fetched yet, and is fetched once
                assert_eq!(fb.opened.get(), 1);
            }
        }
        // a tar given by URL, compressed as asked as it streams
        let (h, t) = pack::file_tar("a.bin", a.len() as u64, false, 0).expect("tar");
        let tar = [h, a.clone(), t].concat();
        for c in [Compression::None, Compression::Gzip] {
            let mut clean = block_on(GivenTar::from(Fake::new(&tar, 4096), c)).expect("tar");
            let (want, _) = make(&mut clean, 1 << 20, None);
            let fake = Fake::new(&tar, 4096);
            let mut p = block_on(GivenTar::from(fake.clone(), c)).expect("tar");
            let (got, _) = make(&mut p, 1000, Some(want.1 / 3));
            assert_eq!(got, want, "{}", c.name());
            assert_eq!(p.info().map(|i| &i.diff_id), Some(&Digest::of(&tar)));
            assert_eq!(fake.opened.get(), 2);
        }
    }

    #[test]
    fn a_registry_blob_copied_recoded_or_re_packed_started_again_midway_is_the_same_blob() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 97) as u8).collect();
        let (h, t) = pack::file_tar("w.bin", data.len() as u64, false, 0).expect("tar");
        let tar = [h, data.clone(), t].concat();
        let gz = compressed(&tar, Compression::Gzip);
        let header = lamina_core::convert::wrap_header(None, "w.bin", data.len() as u64, false, 0)
            .expect("header");
        let wrap = Shape::Wrap {
            header,
            trailer: pack::tar_trailer(data.len() as u64),
        };
        let unwrap = Shape::Reshape {
            from: Compression::Gzip,
            mode: Some(Mode::File),
            mtime: 0,
        };
        type Make = fn(Fake, &Digest, u64, &Shape) -> FromBlob<Fake>;
        let cases: Vec<(&str, Vec<u8>, Shape, Make)> = vec![
            ("copy", data.clone(), Shape::AsIs, |f, d, n, _| {
                block_on(FromBlob::copy(f, d, n)).expect("copy")
            }),
            ("recode", gz.clone(), Shape::AsIs, |f, d, n, _| {
                block_on(FromBlob::recode(
                    f,
                    d,
                    n,
                    Compression::Gzip,
                    Compression::Zstd,
                ))
                .expect("recode")
            }),
            ("wrap", data.clone(), wrap, |f, d, n, s| {
                block_on(FromBlob::shaped(f, d, n, s.clone())).expect("wrap")
            }),
            ("unwrap", gz.clone(), unwrap, |f, d, n, s| {
                block_on(FromBlob::shaped(f, d, n, s.clone())).expect("unwrap")
            }),
        ];
        for (what, blob, shape, new) in cases {
            let d = Digest::of(&blob);
            let n = blob.len() as u64;
            let mut clean = new(Fake::new(&blob, 8192), &d, n, &shape);
            let (want, _) = make(&mut clean, 1 << 20, None);
            let fake = Fake::new(&blob, 8192);
            let mut p = new(fake.clone(), &d, n, &shape);
            let (got, again) = make(&mut p, 4096, Some(want.1 / 2));
            assert_eq!(got, want, "{what}");
            assert_eq!(again, want.1, "{what}");
            assert_eq!(p.info(), clean.info(), "{what}");
            assert_eq!(p.file(), clean.file(), "{what}");
            assert_eq!(fake.opened.get(), 2, "{what}: downloaded again");
            assert!(p.read() > n, "{what}: both downloads count as read");
        }
        // the re-packs are what they say
        let mut p = block_on(FromBlob::shaped(
            Fake::new(&gz, 8192),
            &Digest::of(&gz),
            gz.len() as u64,
            Shape::Reshape {
                from: Compression::Gzip,
                mode: Some(Mode::File),
                mtime: 0,
            },
        ))
        .expect("unwrap");
        let (got, _) = make(&mut p, 4096, Some(1000));
        assert_eq!(got, (Digest::of(&data), data.len() as u64));
    }

    #[test]
    fn a_source_that_changed_between_two_reads_is_not_made_again() {
        let data = vec![1u8; 50_000];
        let mut f = Fake::new(&data, 4096);
        f.grow = 10;
        let mut p = block_on(FromFile::from(
            "m.bin",
            false,
            FileSource::Open(f.clone()),
            Packing::Raw,
            false,
            0,
        ))
        .expect("open");
        block_on(p.produce(&mut Pieces::default(), 10_000)).expect("produce");
        let e = block_on(p.restart()).expect_err("a longer file");
        assert!(
            e.to_string()
                .contains("changed between two reads (50000 bytes, then 50010 bytes)"),
            "{e}"
        );
        assert_eq!(f.cancelled.get(), 2, "both reads stopped");
        // nor a blob
        let mut f = Fake::new(&data, 4096);
        f.grow = 10;
        let mut p = block_on(FromBlob::copy(f, &Digest::of(&data), 50_000)).expect("copy");
        block_on(p.produce(&mut Pieces::default(), 10_000)).expect("produce");
        assert!(block_on(p.restart()).is_err());
    }
}
