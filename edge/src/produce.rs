//! Blob makers for uploads, each streaming from a `ReadableStream` (a fetched URL or a registry
//! blob) into the bytes the upload takes ([`Pieces`]); none holds more than the piece it is
//! working on. Each makes its blob once, in order ([`Source::Once`]): a lost upload fails
//! saying so.

use std::collections::VecDeque;

use lamina_core::artifact::Packing;
use lamina_core::compress::{self, Compression, Decoder};
use lamina_core::digest::Hasher;
use lamina_core::hook::{PackFile, PackSource};
use lamina_core::layer::{LayerInfo, LayerWriter, TarInput};
use lamina_core::pack::{self, Facts, HeadReader};
use lamina_core::registry::{Source, Verifier};
use lamina_core::retar::Reshape;
use lamina_core::tar::{plan, EntryKind, PlannedEntry, TarWriter};
use lamina_core::{Digest, Error};
use lamina_wasm::{Pieces, Producer, Reader};
use worker::js_sys::Uint8Array;
use worker::Fetch;

/// A source that could not be fetched or read as it should.
fn io(what: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Io {
        what: what.into(),
        reason: reason.into(),
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
pub struct GivenTar {
    rd: Reader,
    announced: Option<u64>,
    ti: Option<TarInput>,
    info: Option<LayerInfo>,
    buf: Vec<u8>,
    /// The URL, for errors.
    what: String,
}

impl GivenTar {
    /// Streams the tar at `url`.
    pub async fn open(url: &str, want: Compression) -> Result<GivenTar, Error> {
        let (rd, announced) = open_url(url).await?;
        Ok(GivenTar {
            what: redact(url),
            rd,
            announced,
            ti: Some(TarInput::new(want, None)),
            info: None,
            buf: Vec::new(),
        })
    }
    /// The layer, once made.
    pub fn info(&self) -> Option<&LayerInfo> {
        self.info.as_ref()
    }
}

impl Producer for GivenTar {
    type Body = Uint8Array;
    fn source(&self) -> Source {
        Source::Once
    }
    async fn produce(&mut self, out: &mut Pieces, want: u64) -> Result<(), Error> {
        let goal = out.len() + want;
        while out.len() < goal && self.info.is_none() {
            let Some(ti) = self.ti.as_mut() else { break };
            match self.rd.next_into(&mut self.buf).await? {
                true => ti.write(&self.buf, &mut |b| out.gather(b))?,
                false => {
                    if let Some(n) = self.announced.filter(|n| *n != self.rd.read) {
                        return Err(io(
                            &self.what,
                            format!(
                                "the tar ended after {} of the {n} bytes its Content-Length \
                                 announced",
                                self.rd.read
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
        self.rd.read
    }
}

/// Where a file of a built layer comes from.
#[derive(Debug, Clone)]
pub enum Content {
    /// Fetched (its `Content-Length` is the size in the tar header).
    Url(String),
    /// Given inline.
    Inline(Vec<u8>),
}

/// A layer made of files (under a directory) as a deterministic tar, compressed as asked.
#[derive(Debug)]
pub struct Built {
    entries: VecDeque<PlannedEntry<usize>>,
    contents: Vec<Content>,
    /// the file being streamed: its reader, bytes still owed, its name
    cur: Option<(Reader, u64, String)>,
    tw: TarWriter,
    lw: Option<LayerWriter>,
    info: Option<LayerInfo>,
    read: u64,
    buf: Vec<u8>,
    /// (path in the layer, size) of each file, as fetched
    pub files: Vec<(String, u64)>,
}

impl Built {
    /// A layer of `files` (path in the layer, content), compressed with `c`.
    pub fn new(files: Vec<(String, Content)>, c: Compression) -> Result<Built, Error> {
        let mut entries = Vec::new();
        let mut contents = Vec::new();
        for (i, (path, content)) in files.into_iter().enumerate() {
            let size = match &content {
                Content::Inline(b) => b.len() as u64,
                // the real size comes with the answer
                Content::Url(_) => 0,
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
        Ok(Built {
            entries: plan(entries)?.into(),
            contents,
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

impl Producer for Built {
    type Body = Uint8Array;
    fn source(&self) -> Source {
        Source::Once
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
            match self.contents[i].clone() {
                Content::Inline(b) => {
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
                Content::Url(u) => {
                    let (rd, len) = open_url(&u).await?;
                    let size = len.ok_or_else(|| {
                        io(
                            redact(&u),
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
                    self.cur = Some((rd, size, redact(&u)));
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
}

/// How a stored blob's bytes come from its source's, uncompressed (so its diff_id is its
/// digest): as they are, a raw file wrapped into a tar (a header, the file, a trailer: see
/// [`lamina_core::convert::wrap_header`] and [`pack::file_tar`]), or a tar re-packed as it
/// streams ([`Reshape`]: decompressed, put under `models/`, or its one file taken out).
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
    /// The source's tar re-packed.
    Reshape(Box<Reshape>),
}

impl std::fmt::Debug for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shape::AsIs => f.write_str("AsIs"),
            Shape::Wrap { header, .. } => write!(f, "Wrap({} header bytes)", header.len()),
            Shape::Reshape(r) => r.fmt(f),
        }
    }
}

/// A [`Shape`] at work: source bytes in, the blob's bytes out into the upload's [`Pieces`],
/// hashed on the way (unless the blob is the source, verified already).
#[derive(Debug)]
struct Shaper {
    shape: Shape,
    started: bool,
    hash: Option<Hasher>,
}

impl Shaper {
    fn new(shape: Shape, hash: bool) -> Shaper {
        Shaper {
            shape,
            started: false,
            hash: hash.then(Hasher::new),
        }
    }

    fn write(&mut self, b: &[u8], w: &mut Pieces) -> Result<(), Error> {
        let Shaper {
            shape,
            started,
            hash,
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
        match shape {
            Shape::AsIs | Shape::Wrap { .. } => {
                put(b);
                Ok(())
            }
            Shape::Reshape(r) => r.write(b, &mut put),
        }
    }

    /// The source's end: the rest of the blob, and its digest and size when this hashed it.
    fn finish(&mut self, w: &mut Pieces) -> Result<Option<(Digest, u64)>, Error> {
        let Shaper {
            shape,
            started,
            hash,
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
        match shape {
            Shape::AsIs => {}
            Shape::Wrap { trailer, .. } => put(trailer),
            Shape::Reshape(r) => r.finish(&mut put)?,
        }
        Ok(hash.take().map(|h| {
            let n = h.len();
            (h.finish(), n)
        }))
    }

    /// The one file a [`lamina_core::retar::Mode::File`] re-pack found.
    fn file(&self) -> Option<(String, u64)> {
        match &self.shape {
            Shape::Reshape(r) => r.file().cloned(),
            _ => None,
        }
    }
}

/// One file of a pack hook streamed into its layer: fetched (or given inline), stored raw or
/// wrapped into a tar, hashed on the way; the head of its bytes is read for the weights'
/// header facts ([`HeadReader`]) and a `config.json` is kept (it is small) for the family.
#[derive(Debug)]
pub struct FromFile {
    rd: Option<Reader>,
    data: Option<Vec<u8>>,
    what: String,
    announced: Option<u64>,
    shaper: Shaper,
    head: Option<HeadReader>,
    config: Option<Vec<u8>>,
    read: u64,
    done: Option<(Digest, u64)>,
    buf: Vec<u8>,
}

impl FromFile {
    /// Opens `f` to be stored packed so (a tar of it holding the directories above it with
    /// `dirs`, as a ModelKit's do; `mtime` in its header).
    pub async fn open(
        f: &PackFile,
        packing: Packing,
        dirs: bool,
        mtime: u64,
    ) -> Result<FromFile, Error> {
        let (rd, data, announced, what) = match &f.source {
            PackSource::Url(u) => {
                let (rd, len) = open_url(u).await?;
                (Some(rd), None, len, redact(u))
            }
            PackSource::Data(d) => (None, Some(d.clone()), Some(d.len() as u64), f.path.clone()),
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
                        lamina_core::convert::wrap_header(
                            None,
                            &f.path,
                            size,
                            f.executable,
                            mtime,
                        )?,
                        pack::tar_trailer(size),
                    )
                } else {
                    pack::file_tar(&f.path, size, f.executable, mtime)?
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
            rd,
            data,
            what,
            announced,
            shaper: Shaper::new(shape, true),
            head: Some(HeadReader::new(&f.path)),
            config: (f.path == "config.json").then(Vec::new),
            read: 0,
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

impl Producer for FromFile {
    type Body = Uint8Array;
    fn source(&self) -> Source {
        Source::Once
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
            self.rd = None;
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
        self.read
    }
}

/// A registry blob streamed into another upload: copied as it is (verified against its
/// digest), decompressed and compressed again (`lamina zstd`), its diff_id computed on the
/// way, or made over by a [`Shape`] (`lamina convert`: wrapped, re-packed, unwrapped).
pub struct FromBlob {
    rd: Reader,
    digest: Digest,
    size: u64,
    verify: Option<Verifier>,
    recode: Option<(Box<dyn Decoder>, LayerWriter)>,
    shaper: Option<Shaper>,
    done: Option<(Digest, u64)>,
    info: Option<LayerInfo>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for FromBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FromBlob")
            .field("digest", &self.digest)
            .field("read", &self.rd.read)
            .field("recode", &self.recode.is_some())
            .finish()
    }
}

impl FromBlob {
    /// The blob `digest` of `size` bytes, read from `rd`, copied unchanged.
    pub fn copy(rd: Reader, digest: &Digest, size: u64) -> FromBlob {
        FromBlob {
            rd,
            digest: digest.clone(),
            size,
            verify: Some(Verifier::default()),
            recode: None,
            shaper: None,
            done: None,
            info: None,
            buf: Vec::new(),
        }
    }
    /// The layer blob `digest` (compressed with `from`) made into a `to` layer.
    pub fn recode(
        rd: Reader,
        digest: &Digest,
        size: u64,
        from: Compression,
        to: Compression,
    ) -> FromBlob {
        FromBlob {
            recode: Some((compress::decoder(from), LayerWriter::new(to, None))),
            ..FromBlob::copy(rd, digest, size)
        }
    }
    /// The blob `digest` (of `size` bytes, verified as it comes) made over by `shape`
    /// into an uncompressed blob.
    pub fn shaped(rd: Reader, digest: &Digest, size: u64, shape: Shape) -> FromBlob {
        FromBlob {
            shaper: Some(Shaper::new(shape, true)),
            ..FromBlob::copy(rd, digest, size)
        }
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

impl Producer for FromBlob {
    type Body = Uint8Array;
    fn source(&self) -> Source {
        Source::Once
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
        self.rd.read
    }
}

#[cfg(test)]
mod tests {
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
        let mut sh = Shaper::new(shape, true);
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
        let unwrap = || {
            let r = Reshape::new(Compression::None, Some(lamina_core::retar::Mode::File), 0);
            Shape::Reshape(Box::new(r.expect("reshape")))
        };
        for chunk in [1, 7, 4096, data.len()] {
            let (done, sent) = shaped(wrap(), &data, chunk);
            assert_eq!(
                done,
                Some((Digest::of(&tar), tar.len() as u64)),
                "wrap, {chunk}"
            );
            assert_eq!(sent, tar.len() as u64);
            let mut sh = Shaper::new(unwrap(), true);
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
}
