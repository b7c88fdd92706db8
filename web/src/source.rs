//! A layer's bytes from the user's files: sent from the files as they are (uncompressed:
//! [`Composed`], a [`Source::Seekable`] blob hashed on the side), or tarred and compressed as
//! the files stream ([`LayerSource`], a [`Source::Restartable`] one: the files can be read
//! again). A model artifact's raw layer is one file as it is ([`LayerSource::raw`]); the
//! first bytes of a file, for its header, come from [`read_bytes`].

use js_sys::{Array, Function, Promise, Reflect, Uint8Array};
use lamina_core::compress::Compression;
use lamina_core::layer::{LayerInfo, LayerWriter};
use lamina_core::registry::Source;
use lamina_core::tar::{plan, segments, EntryKind, PlannedEntry, Segment, TarWriter};
use lamina_core::{Digest, Error};
use lamina_wasm::{js_err, sleep_ms, Pieces, Producer};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::progress;

/// A file with its path in the layer.
pub type Named = (String, web_sys::File);

/// Bytes of a file read (and hashed) at a time, at most: an upload from the files holds about
/// three such pieces (the one being hashed, its copy in wasm memory, the next one being read).
pub const READ: u64 = 16 << 20;

/// The segments of a layer (see [`segments`]) with the offset each starts at.
pub fn placed(entries: &[PlannedEntry<usize>]) -> Result<Vec<(u64, Segment<usize>)>, Error> {
    let mut off = 0u64;
    let mut out = Vec::new();
    for sg in segments(entries, 0)? {
        let n = sg.len();
        out.push((off, sg));
        off += n;
    }
    Ok(out)
}

/// A file that could not be read as it was picked.
fn unreadable(name: &str, reason: String) -> Error {
    Error::Io {
        what: name.to_string(),
        reason,
    }
}

/// An uncompressed layer sent straight from the user's files. A request body is a `Blob` made of
/// the tar's own bytes (headers, padding) and slices of the files, so the browser sends the
/// files from disk and nothing goes through wasm memory; the same bytes are read and hashed on
/// the side, for the digest the upload needs only at its end.
struct Composed {
    /// (offset in the layer, segment)
    segs: Vec<(u64, Segment<usize>)>,
    len: u64,
    /// hashing position: a segment, and the bytes of it hashed
    at: usize,
    off: u64,
    hashed: u64,
    /// The next file piece's read (segment, offset, length), asked for before the current piece
    /// is hashed.
    pending: Option<(usize, u64, u64, JsFuture)>,
    /// Reused for copying pieces into wasm memory.
    buf: Vec<u8>,
    lw: Option<LayerWriter>,
    /// Bytes of a file read at a time.
    piece: u64,
}

impl Composed {
    fn new(segs: Vec<(u64, Segment<usize>)>, piece: u64) -> Composed {
        let len = segs.last().map(|(o, s)| o + s.len()).unwrap_or(0);
        Composed {
            segs,
            len,
            at: 0,
            off: 0,
            hashed: 0,
            pending: None,
            buf: Vec::new(),
            lw: Some(LayerWriter::new(Compression::None, None)),
            piece: piece.clamp(1 << 20, READ),
        }
    }

    /// Bytes `a..b` of the layer as blob parts: copies of the tar's own bytes, slices of files.
    fn parts(&self, files: &[web_sys::File], a: u64, b: u64) -> Result<Array, Error> {
        let out = Array::new();
        for (start, sg) in &self.segs {
            let (s, e) = (*start, start + sg.len());
            if e <= a || s >= b {
                continue;
            }
            let (x, y) = (a.max(s) - s, b.min(e) - s);
            match sg {
                Segment::Bytes(v) => out.push(&Uint8Array::from(&v[x as usize..y as usize])),
                Segment::Content { source, .. } => {
                    let slice = files[*source]
                        .slice_with_f64_and_f64(x as f64, y as f64)
                        .map_err(|e| Error::internal(format!("a file slice: {}", js_err(e))))?;
                    out.push(&slice)
                }
            };
        }
        Ok(out)
    }

    /// The file piece to read at segment `at`, offset `off`, or at the next file content after.
    fn piece_from(&self, mut at: usize, mut off: u64) -> Option<(usize, u64, u64)> {
        while at < self.segs.len() {
            if let Segment::Content { len, .. } = &self.segs[at].1 {
                if off < *len {
                    return Some((at, off, (len - off).min(self.piece)));
                }
            }
            at += 1;
            off = 0;
        }
        None
    }

    fn read(
        &self,
        files: &[web_sys::File],
        at: usize,
        off: u64,
        n: u64,
    ) -> Result<JsFuture, Error> {
        let Segment::Content { source, .. } = &self.segs[at].1 else {
            return Err(Error::internal("reading a made segment from a file"));
        };
        let file = &files[*source];
        let failed =
            |e: JsValue| unreadable(&file.name(), format!("could not be read ({})", js_err(e)));
        // the page's reader worker when there is one (see web/static/worker.js)
        if let Ok(f) = Reflect::get(&js_sys::global(), &"laminaReadSlice".into()) {
            if let Some(f) = f.dyn_ref::<Function>() {
                let p = f
                    .call3(
                        &JsValue::NULL,
                        file,
                        &JsValue::from_f64(off as f64),
                        &JsValue::from_f64((off + n) as f64),
                    )
                    .map_err(failed)?;
                let p: Promise = p
                    .dyn_into()
                    .map_err(|_| Error::internal("laminaReadSlice gave no promise"))?;
                return Ok(JsFuture::from(p));
            }
        }
        let blob = file
            .slice_with_f64_and_f64(off as f64, (off + n) as f64)
            .map_err(failed)?;
        Ok(JsFuture::from(blob.array_buffer()))
    }

    /// Hashes the next piece: a run of the tar's own bytes, or up to `piece` bytes of a file
    /// (reading the piece after it meanwhile). Gives the layer's digests after the last.
    async fn hash_piece(&mut self, files: &[web_sys::File]) -> Result<Option<LayerInfo>, Error> {
        let finished = || Error::internal("layer already finished");
        let lw = self.lw.as_mut().ok_or_else(finished)?;
        let Some((_, sg)) = self.segs.get(self.at) else {
            let lw = self.lw.take().ok_or_else(finished)?;
            return lw.finish(&mut |_| {}).map(Some);
        };
        let source = match sg {
            Segment::Bytes(v) => {
                lw.write(v, &mut |_| {})?;
                self.hashed += v.len() as u64;
                self.at += 1;
                self.off = 0;
                return Ok(None);
            }
            Segment::Content { source, .. } => *source,
        };
        let (at, off, n) = self
            .piece_from(self.at, self.off)
            .ok_or_else(|| Error::internal("no file piece where one was expected"))?;
        let fut = match self.pending.take() {
            Some((pa, po, pn, f)) if (pa, po, pn) == (at, off, n) => f,
            _ => self.read(files, at, off, n)?,
        };
        if let Some((na, no, nn)) = self.piece_from(at, off + n) {
            self.pending = Some((na, no, nn, self.read(files, na, no, nn)?));
        }
        let name = files[source].name();
        let ab = fut.await.map_err(|e| {
            unreadable(
                &name,
                format!(
                    "could not be read ({}): was it changed or moved after it was picked?",
                    js_err(e)
                ),
            )
        })?;
        let v = Uint8Array::new(&ab);
        if u64::from(v.length()) != n {
            return Err(unreadable(
                &name,
                format!(
                    "changed while it was being read (got {} bytes where {n} were expected)",
                    v.length()
                ),
            ));
        }
        // one copy into wasm memory, for the hash
        let n = n as usize;
        if self.buf.len() < n {
            self.buf.resize(n, 0);
        }
        v.copy_to(&mut self.buf[..n]);
        let lw = self.lw.as_mut().ok_or_else(finished)?;
        lw.write(&self.buf[..n], &mut |_| {})?;
        self.hashed += n as u64;
        self.off = off + n as u64;
        if matches!(&self.segs[at].1, Segment::Content { len, .. } if *len == self.off) {
            self.at += 1;
            self.off = 0;
        }
        Ok(None)
    }
}

/// Makes a layer from browser files as their streams are read.
pub struct LayerSource {
    entries: Vec<PlannedEntry<usize>>,
    files: Vec<web_sys::File>,
    next: usize,
    /// The file being read, and its name.
    reader: Option<(web_sys::ReadableStreamDefaultReader, String)>,
    /// The next read, asked for before the current chunk is hashed (the browser reads ahead
    /// while the wasm hashes).
    pending: Option<JsFuture>,
    /// Reused for copying chunks out of JS.
    buf: Vec<u8>,
    tw: TarWriter,
    lw: Option<LayerWriter>,
    done: Option<LayerInfo>,
    /// Uncompressed bytes read so far (for progress).
    read: u64,
    /// The files' bytes.
    pub total: u64,
    compression: Compression,
    /// An uncompressed layer: sent from the files as they are (see [`Composed`]).
    composed: Option<Composed>,
    /// Each file's name (as given) and bytes in the uncompressed tar.
    spans: Vec<(String, u64, u64)>,
    /// Bytes made between two turns of the event loop while a request is on the wire.
    piece: u64,
}

/// The tar entries of `files` (each a name, relative to `dest`, and a size) under `dest`, the
/// directories above them added, as the layer holds them (each file's source its index).
pub fn planned<T>(files: &[(String, T)], dest: &str) -> Result<Vec<PlannedEntry<usize>>, Error>
where
    T: Copy + Into<u64>,
{
    let entries = files
        .iter()
        .enumerate()
        .map(|(i, (name, size))| PlannedEntry {
            path: format!("{dest}/{name}"),
            kind: EntryKind::File {
                size: (*size).into(),
                executable: false,
            },
            source: Some(i),
        })
        .collect();
    plan(entries)
}

impl LayerSource {
    /// The layer of `files` under `dest`, compressed with `c`; `chunk` is the upload's PATCH
    /// size.
    pub fn new(
        files: Vec<Named>,
        dest: &str,
        c: Compression,
        chunk: u64,
    ) -> Result<LayerSource, Error> {
        let sized: Vec<(String, u64)> = files
            .iter()
            .map(|(n, f)| (n.clone(), f.size() as u64))
            .collect();
        let entries = planned(&sized, dest)?;
        let total = sized.iter().map(|(_, s)| s).sum();
        let (names, fs): (Vec<String>, Vec<web_sys::File>) = files.into_iter().unzip();
        let segs = placed(&entries)?;
        // where each file's bytes are in the tar, for per-file progress
        let spans = progress::spans(&segs, &names);
        let composed = match c {
            Compression::None => Some(Composed::new(segs, READ)),
            _ => None,
        };
        Ok(LayerSource::of(
            entries, fs, total, c, composed, spans, chunk,
        ))
    }

    /// The blob that is `file` itself (a raw layer of a model artifact: its digest is the
    /// file's SHA-256, its diff_id the same), sent from the file as it is and hashed on the
    /// side, `read` bytes of it read at a time (1 MiB to [`READ`]; several uploads at once
    /// take smaller pieces, so that together they hold what one does); `name` is the file's
    /// name on the page (its progress bar).
    pub fn raw(name: &str, file: web_sys::File, chunk: u64, read: u64) -> LayerSource {
        let size = file.size() as u64;
        // an empty file is a blob of no segment
        let segs: Vec<(u64, Segment<usize>)> = match size {
            0 => Vec::new(),
            len => vec![(0, Segment::Content { source: 0, len })],
        };
        let spans = vec![(name.to_string(), 0, size)];
        let composed = Some(Composed::new(segs, read));
        LayerSource::of(
            Vec::new(),
            vec![file],
            size,
            Compression::None,
            composed,
            spans,
            chunk,
        )
    }

    fn of(
        entries: Vec<PlannedEntry<usize>>,
        fs: Vec<web_sys::File>,
        total: u64,
        c: Compression,
        composed: Option<Composed>,
        spans: Vec<(String, u64, u64)>,
        chunk: u64,
    ) -> LayerSource {
        LayerSource {
            entries,
            files: fs,
            next: 0,
            reader: None,
            pending: None,
            buf: Vec::new(),
            tw: TarWriter::new(0),
            lw: Some(LayerWriter::new(c, None)),
            done: None,
            read: 0,
            total,
            compression: c,
            composed,
            spans,
            // work in pieces, giving the event loop a turn between them: the browser only gets
            // on with a request (its preflight, its body) when the worker yields; awaiting
            // ready stream reads does not
            piece: (chunk / 8).clamp(1 << 20, READ),
        }
    }

    /// The layer, once made.
    pub fn info(&self) -> Option<&LayerInfo> {
        self.done.as_ref()
    }

    /// How far the uncompressed tar has got, for per-file progress: for a layer sent from the
    /// files, the bytes the registry confirmed; else the bytes read, tarred and compressed.
    fn tar_at(&self, confirmed: u64) -> u64 {
        match (&self.composed, &self.lw) {
            (Some(_), _) => confirmed,
            (None, Some(lw)) => lw.uncompressed_len(),
            (None, None) => u64::MAX,
        }
    }

    /// Files as `{name, done, size}`: bytes of each that are done (see [`Self::tar_at`]).
    pub fn per_file(&self, confirmed: u64) -> serde_json::Value {
        progress::per_file(&self.spans, self.tar_at(confirmed))
    }

    /// Where this call of [`Self::fill`] started from, to count what it made.
    fn at(&self, out: &Pieces) -> u64 {
        match &self.composed {
            Some(c) => c.hashed,
            None => out.len(),
        }
    }

    /// Produces at least `want` more blob bytes into `out` (a composed layer: hashes them), or
    /// finishes the layer.
    pub async fn fill(&mut self, out: &mut Pieces, want: u64) -> Result<(), Error> {
        let finished = || Error::internal("layer already finished");
        if let Some(c) = self.composed.as_mut() {
            let goal = c.hashed + want;
            while c.hashed < goal && self.done.is_none() {
                self.done = c.hash_piece(&self.files).await?;
                self.read = c.hashed.min(self.total);
            }
            return Ok(());
        }
        let want = want as usize;
        let mut made: Vec<u8> = Vec::with_capacity(want.max(1 << 16) + (4 << 20));
        while made.len() < want && self.done.is_none() {
            let lw = self.lw.as_mut().ok_or_else(finished)?;
            let mut err = None;
            let mut sink = |b: &[u8]| {
                if err.is_none() {
                    if let Err(e) = lw.write(b, &mut |o| made.extend_from_slice(o)) {
                        err = Some(e);
                    }
                }
            };
            if let Some((r, name)) = &self.reader {
                let failed =
                    |e: JsValue| unreadable(name, format!("could not be read ({})", js_err(e)));
                let fut = match self.pending.take() {
                    Some(f) => f,
                    None => JsFuture::from(r.read()),
                };
                let res = fut.await.map_err(failed)?;
                let done = Reflect::get(&res, &"done".into())
                    .map_err(failed)?
                    .as_bool()
                    .unwrap_or(true);
                if done {
                    self.tw.end_file()?;
                    self.reader = None;
                    continue;
                }
                // ask for the next piece now: the browser reads it while this one is hashed
                self.pending = Some(JsFuture::from(r.read()));
                let v: Uint8Array = Reflect::get(&res, &"value".into())
                    .map_err(failed)?
                    .dyn_into()
                    .map_err(|_| Error::internal("a file stream gave something else than bytes"))?;
                let n = v.length() as usize;
                if self.buf.len() < n {
                    self.buf.resize(n, 0);
                }
                v.copy_to(&mut self.buf[..n]);
                self.read += n as u64;
                self.tw.data(&self.buf[..n], &mut sink)?;
            } else if self.next < self.entries.len() {
                let e = &self.entries[self.next];
                self.next += 1;
                self.tw.entry(&e.path, &e.kind, &mut sink)?;
                if let (EntryKind::File { size, .. }, Some(i)) = (&e.kind, e.source) {
                    if *size > 0 {
                        let reader: web_sys::ReadableStreamDefaultReader = self.files[i]
                            .stream()
                            .get_reader()
                            .dyn_into()
                            .map_err(|_| Error::internal("no stream reader for a file"))?;
                        self.reader = Some((reader, self.files[i].name()));
                    }
                }
            } else {
                self.tw.finish(&mut sink)?;
                if let Some(e) = err.take() {
                    return Err(e);
                }
                let lw = self.lw.take().ok_or_else(finished)?;
                self.done = Some(lw.finish(&mut |o| made.extend_from_slice(o))?);
            }
            if let Some(e) = err {
                return Err(e);
            }
        }
        out.push(made);
        Ok(())
    }
}

impl Producer for LayerSource {
    type Body = Array;

    fn source(&self) -> Source {
        match &self.composed {
            Some(c) => Source::Seekable { len: c.len },
            None => Source::Restartable,
        }
    }

    async fn produce(&mut self, out: &mut Pieces, want: u64) -> Result<(), Error> {
        self.fill(out, want).await
    }

    async fn ahead(&mut self, out: &mut Pieces, want: u64) -> Result<(), Error> {
        let goal = self.at(out) + want;
        while self.at(out) < goal && self.done.is_none() {
            sleep_ms(0.0).await;
            let n = self.piece.min(goal - self.at(out));
            self.fill(out, n).await?;
        }
        Ok(())
    }

    fn finished(&self) -> Option<(Digest, u64)> {
        self.done.as_ref().map(|i| (i.digest.clone(), i.size))
    }

    fn made(&self) -> Option<u64> {
        self.composed.as_ref().map(|c| c.hashed)
    }

    fn read(&self) -> u64 {
        self.read
    }

    /// Starts the layer again from its first byte (the registry lost the upload session): the
    /// files are read again and, the layer being deterministic, give the same bytes.
    async fn restart(&mut self) -> Result<(), Error> {
        if self.composed.is_some() {
            // any range can be had from the files; the hashing goes on as it was
            return Ok(());
        }
        if let Some((r, _)) = self.reader.take() {
            let _ = r.cancel();
        }
        self.pending = None;
        self.next = 0;
        self.tw = TarWriter::new(0);
        self.lw = Some(LayerWriter::new(self.compression, None));
        self.done = None;
        self.read = 0;
        Ok(())
    }

    fn range(&self, start: u64, end: u64) -> Result<Array, Error> {
        match &self.composed {
            Some(c) => c.parts(&self.files, start, end),
            None => Err(Error::internal(
                "a range of a compressed layer (it is sent from the bytes made)",
            )),
        }
    }
}

/// Bytes `start..end` of `file` (a weight's head, `config.json`), read whole into wasm memory.
pub async fn read_bytes(file: &web_sys::File, start: u64, end: u64) -> Result<Vec<u8>, Error> {
    let failed = |e: JsValue| {
        unreadable(
            &file.name(),
            format!(
                "could not be read ({}): was it changed or moved after it was picked?",
                js_err(e)
            ),
        )
    };
    let blob = file
        .slice_with_f64_and_f64(start as f64, end as f64)
        .map_err(failed)?;
    let ab = JsFuture::from(blob.array_buffer()).await.map_err(failed)?;
    let v = Uint8Array::new(&ab).to_vec();
    if v.len() as u64 != end.saturating_sub(start) {
        return Err(unreadable(
            &file.name(),
            format!(
                "changed while it was being read (got {} bytes where {} were expected)",
                v.len(),
                end.saturating_sub(start)
            ),
        ));
    }
    Ok(v)
}
