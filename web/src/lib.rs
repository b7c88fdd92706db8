//! lamina in the browser. The page's Web Worker calls [`affix`] with the dropped files; this
//! crate is the driver: it reads the files as streams, feeds the core's tar and layer writers,
//! and runs the core's registry machines over `fetch`. The core does the protocol (auth,
//! chunked uploads, resume from the registry's `Range`), the image edits and the hashing.

use std::collections::HashMap;

use js_sys::{Array, Function, Object, Promise, Reflect, Uint8Array};
use lamina_core::auth::{Credentials, Secret};
use lamina_core::compress::Compression;
use lamina_core::http::{Body, Method, Request, Response};
use lamina_core::image::{detect_kind, Config, Descriptor, Index, Manifest, Platform};
use lamina_core::layer::{LayerInfo, LayerWriter};
use lamina_core::media::{self, DocKind, Family};
use lamina_core::modelcar::{self, CarLayer, Part};
use lamina_core::reference::Reference;
use lamina_core::registry::{
    Event, FetchedManifest, GetBlob, GetManifest, HeadBlob, Held, Machine, MountBlob, Op, Output,
    PutManifest, Session, Upload, UploadConfig,
};
use lamina_core::tar::{archive_path, plan, segments, EntryKind, PlannedEntry, Segment, TarWriter};
use lamina_core::Digest;
use serde::Deserialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

type Res<T> = Result<T, String>;
/// A file with its path in the layer.
type Named = (String, web_sys::File);

/// What the page asks for.
#[derive(Debug, Deserialize)]
struct Opts {
    base: String,
    /// Empty when only the base is inspected.
    #[serde(default)]
    dest: String,
    /// Where the files go (`/src/weights`, or `/models` for a modelcar).
    #[serde(default = "default_path")]
    path: String,
    /// One layer per file under /models, the card last (olot's modelcar shape).
    #[serde(default)]
    modelcar: bool,
    /// `none` or `gzip` for the model files.
    #[serde(default = "default_compression")]
    compression: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    /// A bearer token (sent as is).
    #[serde(default)]
    token: Option<String>,
    /// Same-origin proxy prefix (the edge worker): requests go to `{proxy}/{url}`.
    #[serde(default)]
    proxy: Option<String>,
    /// PATCH size in MiB (a Cloudflare Worker takes at most 100 MB per request).
    #[serde(default = "default_chunk")]
    chunk_mib: u64,
    /// Registry used for short names.
    #[serde(default = "default_registry")]
    registry: String,
    /// `created` of the history entries (the page passes its clock: the core reads none).
    #[serde(default)]
    created: Option<String>,
}

fn default_path() -> String {
    "/src/weights".into()
}
fn default_compression() -> String {
    "none".into()
}
fn default_chunk() -> u64 {
    64
}
fn default_registry() -> String {
    "r8.im".into()
}

fn js_err(e: JsValue) -> String {
    e.as_string()
        .or_else(|| {
            e.dyn_ref::<js_sys::Error>()
                .map(|x| String::from(x.message()))
        })
        .unwrap_or_else(|| format!("{e:?}"))
}

fn global() -> Object {
    js_sys::global()
}

async fn sleep_ms(ms: f64) {
    let p = Promise::new(&mut |resolve, _| {
        if let Ok(f) = Reflect::get(&global(), &"setTimeout".into()) {
            if let Some(f) = f.dyn_ref::<Function>() {
                let _ = f.call2(&JsValue::NULL, &resolve, &JsValue::from_f64(ms));
            }
        }
    });
    let _ = JsFuture::from(p).await;
}

/// Headers a page may not set (the browser does).
fn forbidden(h: &str) -> bool {
    matches!(
        h.to_ascii_lowercase().as_str(),
        "content-length" | "host" | "connection" | "accept-encoding" | "user-agent" | "expect"
    )
}

/// Progress to the page: a JSON object per call.
struct Report {
    f: Function,
}

impl Report {
    fn send(&self, v: serde_json::Value) {
        let _ = self
            .f
            .call1(&JsValue::NULL, &JsValue::from_str(&v.to_string()));
    }
    fn log(&self, msg: &str) {
        self.send(serde_json::json!({"kind": "log", "message": msg}));
    }
}

/// The layer's bytes the registry has not confirmed yet.
type Window = Held<Vec<u8>>;

/// Bytes `a..b` as JS byte arrays (one copy out of wasm memory, no gathering first).
fn js_parts(w: &Window, a: u64, b: u64) -> Res<Array> {
    let out = Array::new();
    for (p, r) in w.range(a, b).map_err(|e| e.to_string())? {
        out.push(&Uint8Array::from(&p[r]));
    }
    Ok(out)
}

/// Bytes of a file read (and hashed) at a time.
const READ: u64 = 16 << 20;

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
}

/// The segments of a layer (see [`segments`]) with the offset each starts at.
fn placed(entries: &[PlannedEntry<usize>]) -> Res<Vec<(u64, Segment<usize>)>> {
    let mut off = 0u64;
    let mut out = Vec::new();
    for sg in segments(entries, 0).map_err(|e| e.to_string())? {
        let n = sg.len();
        out.push((off, sg));
        off += n;
    }
    Ok(out)
}

impl Composed {
    fn new(segs: Vec<(u64, Segment<usize>)>) -> Composed {
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
        }
    }

    /// Bytes `a..b` of the layer as blob parts: copies of the tar's own bytes, slices of files.
    fn parts(&self, files: &[web_sys::File], a: u64, b: u64) -> Res<Array> {
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
                        .map_err(js_err)?;
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
                    return Some((at, off, (len - off).min(READ)));
                }
            }
            at += 1;
            off = 0;
        }
        None
    }

    fn read(&self, files: &[web_sys::File], at: usize, off: u64, n: u64) -> Res<JsFuture> {
        let Segment::Content { source, .. } = &self.segs[at].1 else {
            return Err("internal error: reading a made segment from a file".into());
        };
        let file = &files[*source];
        // the page's reader worker when there is one (see web/static/worker.js)
        if let Ok(f) = Reflect::get(&global(), &"laminaReadSlice".into()) {
            if let Some(f) = f.dyn_ref::<Function>() {
                let p = f
                    .call3(
                        &JsValue::NULL,
                        file,
                        &JsValue::from_f64(off as f64),
                        &JsValue::from_f64((off + n) as f64),
                    )
                    .map_err(js_err)?;
                let p: Promise = p
                    .dyn_into()
                    .map_err(|_| "laminaReadSlice gave no promise")?;
                return Ok(JsFuture::from(p));
            }
        }
        let blob = file
            .slice_with_f64_and_f64(off as f64, (off + n) as f64)
            .map_err(js_err)?;
        Ok(JsFuture::from(blob.array_buffer()))
    }

    /// Hashes the next piece: a run of the tar's own bytes, or up to [`READ`] bytes of a file
    /// (reading the piece after it meanwhile). Gives the layer's digests after the last.
    async fn hash_piece(&mut self, files: &[web_sys::File]) -> Res<Option<LayerInfo>> {
        let lw = self.lw.as_mut().ok_or("layer already finished")?;
        let Some((_, sg)) = self.segs.get(self.at) else {
            let lw = self.lw.take().ok_or("layer already finished")?;
            return lw.finish(&mut |_| {}).map(Some).map_err(|e| e.to_string());
        };
        let source = match sg {
            Segment::Bytes(v) => {
                lw.write(v, &mut |_| {}).map_err(|e| e.to_string())?;
                self.hashed += v.len() as u64;
                self.at += 1;
                self.off = 0;
                return Ok(None);
            }
            Segment::Content { source, .. } => *source,
        };
        let (at, off, n) = self
            .piece_from(self.at, self.off)
            .ok_or("internal error: no file piece where one was expected")?;
        let fut = match self.pending.take() {
            Some((pa, po, pn, f)) if (pa, po, pn) == (at, off, n) => f,
            _ => self.read(files, at, off, n)?,
        };
        if let Some((na, no, nn)) = self.piece_from(at, off + n) {
            self.pending = Some((na, no, nn, self.read(files, na, no, nn)?));
        }
        let name = files[source].name();
        let ab = fut.await.map_err(|e| {
            format!(
                "reading {name} failed ({}): was it changed or moved after it was picked?",
                js_err(e)
            )
        })?;
        let v = Uint8Array::new(&ab);
        if u64::from(v.length()) != n {
            return Err(format!(
                "{name} changed while it was being read (got {} bytes where {n} were expected)",
                v.length()
            ));
        }
        // one copy into wasm memory, for the hash
        let n = n as usize;
        if self.buf.len() < n {
            self.buf.resize(n, 0);
        }
        v.copy_to(&mut self.buf[..n]);
        let lw = self.lw.as_mut().ok_or("layer already finished")?;
        lw.write(&self.buf[..n], &mut |_| {})
            .map_err(|e| e.to_string())?;
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
struct LayerSource {
    entries: Vec<PlannedEntry<usize>>,
    files: Vec<web_sys::File>,
    next: usize,
    reader: Option<web_sys::ReadableStreamDefaultReader>,
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
    total: u64,
    compression: Compression,
    /// An uncompressed layer: sent from the files as they are (see [`Composed`]).
    composed: Option<Composed>,
    /// Each file's name (as given) and bytes in the uncompressed tar.
    spans: Vec<(String, u64, u64)>,
}

impl LayerSource {
    fn new(files: Vec<Named>, dest: &str, c: Compression) -> Res<LayerSource> {
        let mut entries = Vec::new();
        let mut fs = Vec::new();
        let mut names = Vec::new();
        let mut total = 0u64;
        for (i, (name, f)) in files.into_iter().enumerate() {
            names.push(name.clone());
            let size = f.size() as u64;
            total += size;
            entries.push(PlannedEntry {
                path: format!("{dest}/{name}"),
                kind: EntryKind::File {
                    size,
                    executable: false,
                },
                source: Some(i),
            });
            fs.push(f);
        }
        let entries = plan(entries).map_err(|e| e.to_string())?;
        let segs = placed(&entries)?;
        // where each file's bytes are in the tar, for per-file progress
        let spans = segs
            .iter()
            .filter_map(|(at, sg)| match sg {
                Segment::Content { source, len } => Some((names[*source].clone(), *at, *len)),
                Segment::Bytes(_) => None,
            })
            .collect();
        let composed = match c {
            Compression::None => Some(Composed::new(segs)),
            _ => None,
        };

        Ok(LayerSource {
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
        })
    }

    /// Bytes of the blob that can be asked for now.
    fn available(&self, win: &Window) -> u64 {
        match &self.composed {
            Some(c) => c.len,
            None => win.end(),
        }
    }

    /// Bytes `a..b` of the blob as blob parts (see [`js_parts`], [`Composed::parts`]).
    async fn body(&mut self, win: &mut Window, a: u64, b: u64, chunk: u64) -> Res<Array> {
        if let Some(c) = &self.composed {
            return c.parts(&self.files, a, b);
        }
        if a < win.start() || b > win.end() {
            self.ensure(win, a, b, chunk).await?;
        }
        js_parts(win, a, b)
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
    fn per_file(&self, confirmed: u64) -> serde_json::Value {
        let at = self.tar_at(confirmed);
        serde_json::Value::Array(
            self.spans
                .iter()
                .map(|(name, start, len)| {
                    serde_json::json!({
                        "name": name, "done": at.saturating_sub(*start).min(*len), "size": len
                    })
                })
                .collect(),
        )
    }

    /// Where producing (or, for a composed layer, hashing) the blob has got to.
    fn produced(&self, win: &Window) -> u64 {
        match &self.composed {
            Some(c) => c.hashed,
            None => win.end(),
        }
    }

    /// Starts the layer again from its first byte (the registry lost the upload session): the
    /// files are read again and, the layer being deterministic, give the same bytes.
    fn restart(&mut self) {
        if self.composed.is_some() {
            // any range can be made again from the files; the hashing goes on as it was
            return;
        }
        if let Some(r) = self.reader.take() {
            let _ = r.cancel();
        }
        self.pending = None;
        self.next = 0;
        self.tw = TarWriter::new(0);
        self.lw = Some(LayerWriter::new(self.compression, None));
        self.done = None;
        self.read = 0;
    }

    /// Makes bytes `start..end` of the blob available in `win`, starting over when they were
    /// dropped already.
    async fn ensure(&mut self, win: &mut Window, start: u64, end: u64, chunk: u64) -> Res<()> {
        if start < win.start() {
            if self.entries.is_empty() {
                return Err(
                    "the upload must start over, and these bytes cannot be made again".into(),
                );
            }
            self.restart();
            *win = Window::default();
        }
        while win.end() < end && self.done.is_none() {
            self.fill(win, chunk as usize).await?;
        }
        Ok(())
    }

    /// Produces at least some more blob bytes into `win` (or finishes the layer).
    async fn fill(&mut self, win: &mut Window, want: usize) -> Res<()> {
        if let Some(c) = self.composed.as_mut() {
            let goal = c.hashed + want as u64;
            while c.hashed < goal && self.done.is_none() {
                self.done = c.hash_piece(&self.files).await?;
                self.read = c.hashed.min(self.total);
            }
            return Ok(());
        }
        let mut out: Vec<u8> = Vec::with_capacity(want.max(1 << 16) + (4 << 20));
        while out.len() < want && self.done.is_none() {
            let lw = self.lw.as_mut().ok_or("layer already finished")?;
            let mut err = None;
            if let Some(r) = &self.reader {
                let fut = match self.pending.take() {
                    Some(f) => f,
                    None => JsFuture::from(r.read()),
                };
                let res = fut.await.map_err(js_err)?;
                let done = Reflect::get(&res, &"done".into())
                    .map_err(js_err)?
                    .as_bool()
                    .unwrap_or(true);
                if done {
                    self.tw.end_file().map_err(|e| e.to_string())?;
                    self.reader = None;
                    continue;
                }
                // ask for the next piece now: the browser reads it while this one is hashed
                self.pending = Some(JsFuture::from(r.read()));
                let v: Uint8Array = Reflect::get(&res, &"value".into())
                    .map_err(js_err)?
                    .dyn_into()
                    .map_err(|_| "a file stream gave something else than bytes")?;
                let n = v.length() as usize;
                if self.buf.len() < n {
                    self.buf.resize(n, 0);
                }
                v.copy_to(&mut self.buf[..n]);
                let chunk = &self.buf[..n];
                self.read += n as u64;
                self.tw
                    .data(chunk, &mut |b| {
                        if err.is_none() {
                            if let Err(e) = lw.write(b, &mut |o| out.extend_from_slice(o)) {
                                err = Some(e);
                            }
                        }
                    })
                    .map_err(|e| e.to_string())?;
            } else if self.next < self.entries.len() {
                let e = &self.entries[self.next];
                self.next += 1;
                self.tw
                    .entry(&e.path, &e.kind, &mut |b| {
                        if err.is_none() {
                            if let Err(e) = lw.write(b, &mut |o| out.extend_from_slice(o)) {
                                err = Some(e);
                            }
                        }
                    })
                    .map_err(|e| e.to_string())?;
                if let (EntryKind::File { size, .. }, Some(i)) = (&e.kind, e.source) {
                    if *size > 0 {
                        let stream = self.files[i].stream();
                        let reader: web_sys::ReadableStreamDefaultReader = stream
                            .get_reader()
                            .dyn_into()
                            .map_err(|_| "no stream reader for a file")?;
                        self.reader = Some(reader);
                    }
                }
            } else {
                self.tw
                    .finish(&mut |b| {
                        if err.is_none() {
                            if let Err(e) = lw.write(b, &mut |o| out.extend_from_slice(o)) {
                                err = Some(e);
                            }
                        }
                    })
                    .map_err(|e| e.to_string())?;
                let lw = self.lw.take().ok_or("layer already finished")?;
                let info = lw
                    .finish(&mut |o| out.extend_from_slice(o))
                    .map_err(|e| e.to_string())?;
                self.done = Some(info);
            }
            if let Some(e) = err {
                return Err(e.to_string());
            }
        }
        win.push(out);
        Ok(())
    }
}

/// Gives an operation the upload data it asks for (only uploads take any).
trait Feedable {
    fn data(&mut self, _end: u64, _complete: Option<(Digest, u64)>) {}
    fn confirmed_bytes(&self) -> Option<u64> {
        None
    }
}
impl Feedable for GetManifest {}
impl Feedable for GetBlob {}
impl Feedable for HeadBlob {}
impl Feedable for MountBlob {}
impl Feedable for PutManifest {}
impl Feedable for Upload {
    fn data(&mut self, end: u64, complete: Option<(Digest, u64)>) {
        match complete {
            Some((d, size)) => self.data_complete(d, size),
            None => self.data_available(end),
        }
    }
    fn confirmed_bytes(&self) -> Option<u64> {
        Some(self.confirmed())
    }
}

/// Tells the upload how much of the blob is there (and, at the end, what it is); reports it.
fn offer<O: Op + Feedable>(m: &mut Machine<O>, s: &LayerSource, w: &Window, report: &Report) {
    let confirmed = m.op().confirmed_bytes().unwrap_or(0);
    report.send(serde_json::json!({
        "kind": "read", "read": s.read, "total": s.total, "files": s.per_file(confirmed)
    }));
    match &s.done {
        Some(info) => m
            .op_mut()
            .data(s.available(w), Some((info.digest.clone(), info.size))),
        None => m.op_mut().data(s.available(w), None),
    }
}

/// Runs the core's machines over `fetch`.
struct Driver {
    sessions: HashMap<String, Session>,
    creds: HashMap<String, Credentials>,
    proxy: Option<String>,
    t0: f64,
    seed: u64,
    /// The registry whose operation failed, for the page (see [`Failure`]).
    failed: Option<Failure>,
}

/// Which registry failed, and how: the page names it and classifies the error by these, never
/// by the message's text.
struct Failure {
    registry: String,
    /// The HTTP status the registry answered, when the failure is an answer.
    status: Option<u16>,
    /// Authentication failed (credentials missing or refused, token server refused).
    auth: bool,
    /// The requests failed without an answer (network, CORS).
    network: bool,
}

impl Failure {
    fn of(registry: &str, e: &lamina_core::Error, network: bool) -> Failure {
        use lamina_core::Error as E;
        let mut f = Failure {
            registry: registry.to_string(),
            status: None,
            auth: false,
            network,
        };
        let mut e = e;
        while let E::RetriesExhausted { last, .. } = e {
            e = last;
        }
        match e {
            E::Http { status, .. } => f.status = Some(*status),
            E::Auth { .. } => f.auth = true,
            _ => {}
        }
        f
    }
}

/// The page's error: a JS `Error` with the message, and `registry`, `status`, `auth` and
/// `network` when a registry's operation failed.
fn page_error(msg: &str, f: Option<&Failure>) -> JsValue {
    let e = js_sys::Error::new(msg);
    if let Some(f) = f {
        let set = |k: &str, v: JsValue| {
            let _ = Reflect::set(&e, &k.into(), &v);
        };
        set("registry", f.registry.as_str().into());
        if let Some(s) = f.status {
            set("status", s.into());
        }
        set("auth", f.auth.into());
        set("network", f.network.into());
    }
    e.into()
}

impl Driver {
    fn now(&self) -> u64 {
        (js_sys::Date::now() - self.t0).max(0.0) as u64
    }

    fn session(&mut self, r: &Reference) -> Session {
        if let Some(s) = self.sessions.remove(&r.registry) {
            return s;
        }
        let creds = self.creds.get(&r.registry).cloned().unwrap_or_default();
        self.seed = self.seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        Session::new(r.api_host(), r.default_scheme(), creds, self.seed)
    }

    /// What the proxy puts before a registry URL (`{proxy}/`).
    fn proxy_prefix(&self) -> Option<String> {
        self.proxy
            .as_ref()
            .map(|p| format!("{}/", p.trim_end_matches('/')))
    }

    fn url(&self, u: &str) -> String {
        match self.proxy_prefix() {
            Some(p) => format!("{p}{u}"),
            None => u.to_string(),
        }
    }

    /// Starts a request; the browser sends it while the caller goes on.
    fn start(&self, req: &Request, body: Option<Array>) -> Res<Promise> {
        let init = Object::new();
        let set = |k: &str, v: &JsValue| Reflect::set(&init, &k.into(), v).map_err(js_err);
        set("method", &req.method.as_str().into())?;
        let headers = Object::new();
        for (k, v) in &req.headers {
            if !forbidden(k) {
                Reflect::set(&headers, &k.as_str().into(), &v.as_str().into()).map_err(js_err)?;
            }
        }
        set("headers", &headers)?;
        set("cache", &"no-store".into())?;
        if let Some(parts) = body {
            // a Blob body: Chromium uploads an ArrayBuffer body at ~20 MB/s here, the same
            // bytes as a Blob at ~200 MB/s (measured, 64 MiB PATCH to a local server)
            let blob = web_sys::Blob::new_with_u8_array_sequence(&parts).map_err(js_err)?;
            set("body", &blob)?;
        }
        let fetch: Function = Reflect::get(&global(), &"fetch".into())
            .map_err(js_err)?
            .dyn_into()
            .map_err(|_| "no fetch in this context")?;
        let url = self.url(&req.url);
        fetch
            .call2(&JsValue::NULL, &url.into(), &init)
            .map_err(js_err)?
            .dyn_into()
            .map_err(|_| "fetch did not return a promise".into())
    }

    /// Waits for a started request's response.
    async fn finish(&self, req: &Request, p: Promise) -> Res<Response> {
        let resp = JsFuture::from(p).await.map_err(|e| {
            format!(
                "network error or blocked by CORS ({}): the registry may need the proxy",
                js_err(e)
            )
        })?;
        let status = Reflect::get(&resp, &"status".into())
            .map_err(js_err)?
            .as_f64()
            .unwrap_or(0.0) as u16;
        let hs = Reflect::get(&resp, &"headers".into()).map_err(js_err)?;
        let entries: Function = Reflect::get(&hs, &"entries".into())
            .map_err(js_err)?
            .dyn_into()
            .map_err(|_| "no headers")?;
        let it = entries.call0(&hs).map_err(js_err)?;
        let mut headers = Vec::new();
        if let Some(iter) = js_sys::try_iter(&it).map_err(js_err)? {
            for pair in iter {
                let pair: Array = pair.map_err(js_err)?.dyn_into().map_err(|_| "header")?;
                let mut name = pair.get(0).as_string().unwrap_or_default();
                // the edge proxy hands a browser the registry's challenge under another name
                // (a same-origin Basic challenge would open the browser's login dialog)
                if self.proxy.is_some() && name.eq_ignore_ascii_case("x-lamina-www-authenticate") {
                    name = "www-authenticate".into();
                }
                let mut value = pair.get(1).as_string().unwrap_or_default();
                // the proxy sends Locations through itself; the machines keep the registry's
                if let (Some(prefix), true) =
                    (self.proxy_prefix(), name.eq_ignore_ascii_case("location"))
                {
                    if let Some(real) = value.strip_prefix(&prefix) {
                        value = real.to_string();
                    }
                }
                headers.push((name, value));
            }
        }
        let ab: Function = Reflect::get(&resp, &"arrayBuffer".into())
            .map_err(js_err)?
            .dyn_into()
            .map_err(|_| "no body")?;
        let buf = JsFuture::from(
            ab.call0(&resp)
                .map_err(js_err)?
                .dyn_into::<Promise>()
                .map_err(|_| "no body promise")?,
        )
        .await
        .map_err(js_err)?;
        let mut body = Uint8Array::new(&buf).to_vec();
        let truncated = body.len() as u64 > req.max_response_body;
        if truncated {
            body.truncate(req.max_response_body as usize);
        }
        Ok(Response {
            status,
            headers,
            body,
            truncated,
        })
    }

    /// Runs an operation; uploads take their bytes from `src` through `win`.
    async fn run<O: Op + Feedable>(
        &mut self,
        r: &Reference,
        op: O,
        mut src: Option<(&mut LayerSource, &mut Window, u64)>,
        report: &Report,
    ) -> Res<O::Output> {
        let session = self.session(r);
        let mut m = Machine::new(session, op);
        // the last request got no answer (network error, CORS)
        let mut unanswered = false;
        let out = loop {
            match m.poll(self.now()) {
                Output::Send(req) => {
                    let body = match &req.body {
                        Body::Empty => None,
                        Body::Bytes(b) => Some(Array::of1(&Uint8Array::from(b.as_slice()))),
                        Body::Blob { start, end } => {
                            let (s, w, chunk) = src
                                .as_mut()
                                .ok_or("the machine asked for upload data that does not exist")?;
                            if s.composed.is_none() && *start < w.start() {
                                report.log("the registry lost the upload: starting it over");
                            }
                            Some(s.body(w, *start, *end, *chunk).await?)
                        }
                        Body::Stream { .. } => {
                            break Err("streamed request bodies are not used in the browser".into())
                        }
                    };
                    let started = self.start(&req, body);
                    // while a chunk is on the wire, build the next one (the browser uploads on
                    // its network thread; this thread tars and hashes)
                    // (a composed layer is sent from the files: hash up to a chunk past this one)
                    if let (Ok(_), Some((s, w, chunk)), Body::Blob { end, .. }) =
                        (&started, src.as_mut(), &req.body)
                    {
                        let goal = if s.composed.is_some() {
                            end + *chunk
                        } else if w.held() < 2 * *chunk {
                            w.end() + *chunk
                        } else {
                            0
                        };
                        if s.done.is_none() && s.produced(w) < goal {
                            // work in pieces, giving the event loop a turn between them: the
                            // browser only gets on with the request (its preflight, its body)
                            // when the worker yields; awaiting ready stream reads does not
                            let piece = (*chunk / 8).clamp(1 << 20, READ);
                            while s.produced(w) < goal && s.done.is_none() {
                                sleep_ms(0.0).await;
                                s.fill(w, piece as usize).await?;
                            }
                            offer(&mut m, s, w, report);
                        }
                    }
                    let res = match started {
                        Ok(p) => self.finish(&req, p).await,
                        Err(e) => Err(e),
                    };
                    unanswered = res.is_err();
                    match res {
                        Ok(resp) => {
                            if req.method == Method::Patch && matches!(resp.status, 404 | 416) {
                                report.log(&format!(
                                    "the registry refused a chunk (HTTP {}; the connection was \
                                     probably cut and the browser sent it again): resuming from \
                                     the registry's offset",
                                    resp.status
                                ));
                            }
                            m.handle_response(self.now(), resp)
                        }
                        Err(e) => {
                            report.log(&format!("request failed: {e}"));
                            m.handle_error(self.now(), e)
                        }
                    }
                    if let (Some((s, w, _)), Some(c)) = (src.as_mut(), m.op().confirmed_bytes()) {
                        w.drop_before(c);
                        report.send(serde_json::json!({
                            "kind": "upload", "confirmed": c, "read": s.read, "total": s.total,
                            "files": s.per_file(c)
                        }));
                    }
                }
                Output::Wait(until) => {
                    let now = self.now();
                    if until > now {
                        sleep_ms((until - now) as f64).await;
                    }
                }
                Output::NeedData => {
                    let (s, w, chunk) = src
                        .as_mut()
                        .ok_or("the machine asked for more data than there is")?;
                    s.fill(w, *chunk as usize).await?;
                    offer(&mut m, s, w, report);
                    m.data_ready();
                }
                Output::Event(Event::Retrying {
                    reason,
                    attempt,
                    delay_ms,
                }) => report.log(&format!(
                    "retrying ({attempt}) in {:.1}s: {reason}",
                    delay_ms as f64 / 1000.0
                )),
                Output::Event(_) => {}
                Output::Done(done) => {
                    break done.map_err(|e| {
                        self.failed = Some(Failure::of(&r.registry, &e, unanswered));
                        e.to_string()
                    })
                }
                Output::Pending => break Err("internal error: request in flight".into()),
            }
        };
        self.sessions.insert(r.registry.clone(), m.into_session());
        out
    }

    async fn upload_bytes(
        &mut self,
        r: &Reference,
        bytes: Vec<u8>,
        report: &Report,
    ) -> Res<Digest> {
        let (up, _) = lamina_core::registry::upload_bytes(&r.repository, &bytes);
        let mut src = LayerSource {
            entries: Vec::new(),
            files: Vec::new(),
            next: 0,
            reader: None,
            pending: None,
            buf: Vec::new(),
            tw: TarWriter::new(0),
            lw: None,
            done: None,
            read: 0,
            total: 0,
            compression: Compression::None,
            composed: None,
            spans: Vec::new(),
        };
        let mut win = Window::default();
        win.push(bytes);
        self.run(r, up, Some((&mut src, &mut win, 0)), report).await
    }
}

fn creds_for(o: &Opts) -> Credentials {
    match (&o.username, &o.password, &o.token) {
        (_, _, Some(t)) if !t.is_empty() => Credentials::Bearer(Secret::new(t.clone())),
        (Some(u), Some(p), _) if !u.is_empty() => Credentials::Basic {
            username: u.clone(),
            password: Secret::new(p.clone()),
        },
        _ => Credentials::Anonymous,
    }
}

/// One platform image of the base.
struct Img {
    manifest: Manifest,
    config: Config,
}

async fn fetch_base(
    d: &mut Driver,
    base: &Reference,
    report: &Report,
) -> Res<(FetchedManifest, Option<(Index, usize)>, Img)> {
    let top = d
        .run(
            base,
            GetManifest::new(&base.repository, &base.reference()),
            None,
            report,
        )
        .await?;
    let (kind, mt) =
        detect_kind(&top.bytes, top.content_type.as_deref()).map_err(|e| e.to_string())?;
    let (ix, man_bytes, man_mt) = match kind {
        DocKind::Manifest(_) => (None, top.bytes.clone(), mt),
        DocKind::Index(_) => {
            let ix = Index::parse(top.bytes.clone(), &mt).map_err(|e| e.to_string())?;
            let i = ix
                .select(&Platform::linux_amd64())
                .map_err(|e| e.to_string())?;
            let e = &ix.manifests().map_err(|e| e.to_string())?[i];
            let f = d
                .run(
                    base,
                    GetManifest::new(&base.repository, &e.digest.to_string()),
                    None,
                    report,
                )
                .await?;
            let (_, cmt) = detect_kind(&f.bytes, f.content_type.as_deref().or(Some(&e.media_type)))
                .map_err(|e| e.to_string())?;
            (Some((ix, i)), f.bytes, cmt)
        }
    };
    let manifest = Manifest::parse(man_bytes, &man_mt).map_err(|e| e.to_string())?;
    let c = manifest.config().map_err(|e| e.to_string())?;
    let raw = d
        .run(
            base,
            GetBlob::new(
                &base.repository,
                &c.digest,
                lamina_core::image::MAX_CONFIG_SIZE,
            ),
            None,
            report,
        )
        .await?;
    let config = Config::parse(raw).map_err(|e| e.to_string())?;
    Ok((top, ix, Img { manifest, config }))
}

/// The options, the base, the destination (none when it is left empty) and the driver.
fn setup(opts_json: &str) -> Res<(Opts, Reference, Option<Reference>, Driver)> {
    let o: Opts = serde_json::from_str(opts_json).map_err(|e| format!("options: {e}"))?;
    let base = Reference::parse(&o.base, &o.registry).map_err(|e| e.to_string())?;
    let dest = match o.dest.trim() {
        "" => None,
        s => Some(Reference::parse(s, &o.registry).map_err(|e| e.to_string())?),
    };
    let mut creds = HashMap::new();
    // credentials belong to the destination registry only
    if let Some(dest) = &dest {
        creds.insert(dest.registry.clone(), creds_for(&o));
    }
    let d = Driver {
        sessions: HashMap::new(),
        creds,
        proxy: o.proxy.clone().filter(|p| !p.is_empty()),
        t0: js_sys::Date::now(),
        seed: js_sys::Date::now() as u64 ^ 0x9E37_79B9_7F4A_7C15,
        failed: None,
    };
    Ok((o, base, dest, d))
}

/// The base image's layers, for the page to show before uploading (JSON). The destination may
/// be left empty.
#[wasm_bindgen]
pub async fn inspect(opts_json: String, progress: Function) -> Result<String, JsValue> {
    let report = Report { f: progress };
    let (_, base, _, mut d) = setup(&opts_json).map_err(|e| page_error(&e, None))?;
    let (top, ix, img) = fetch_base(&mut d, &base, &report)
        .await
        .map_err(|e| page_error(&e, d.failed.as_ref()))?;
    let hist = img.config.layer_history();
    let layers: Vec<serde_json::Value> = img
        .manifest
        .layers()
        .map_err(|e| page_error(&e.to_string(), None))?
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let h = hist.get(i).cloned().flatten();
            serde_json::json!({
                "digest": l.digest.to_string(),
                "size": l.size,
                "mediaType": l.media_type,
                "createdBy": h.as_ref().and_then(|h| h.created_by.clone()),
            })
        })
        .collect();
    Ok(serde_json::json!({
        "digest": top.digest.to_string(),
        "index": ix.is_some(),
        "layers": layers,
    })
    .to_string())
}

/// Builds the layer(s) from `files` (File objects; `names` their paths in the layer, relative)
/// on top of the base and pushes the result; returns `dest@sha256:...`.
#[wasm_bindgen]
pub async fn affix(
    opts_json: String,
    files: Array,
    names: Array,
    modelcard: Option<web_sys::File>,
    progress: Function,
) -> Result<String, JsValue> {
    let (o, base, dest, mut d) = setup(&opts_json).map_err(|e| page_error(&e, None))?;
    let dest = dest.ok_or_else(|| page_error("fill in the destination", None))?;
    run_affix(o, base, dest, &mut d, files, names, modelcard, progress)
        .await
        .map_err(|e| page_error(&e, d.failed.as_ref()))
}

#[allow(clippy::too_many_arguments)]
async fn run_affix(
    o: Opts,
    base: Reference,
    dest: Reference,
    d: &mut Driver,
    files: Array,
    names: Array,
    modelcard: Option<web_sys::File>,
    progress: Function,
) -> Res<String> {
    let report = Report { f: progress };
    let mut inputs: Vec<Named> = Vec::new();
    for (f, n) in files.iter().zip(names.iter()) {
        let f: web_sys::File = f.dyn_into().map_err(|_| "not a File")?;
        let name = n.as_string().unwrap_or_else(|| f.name());
        let name = archive_path(&name).map_err(|e| e.to_string())?;
        inputs.push((name, f));
    }
    if inputs.is_empty() && modelcard.is_none() {
        return Err("nothing to add: drop model files first".into());
    }
    let compression = match o.compression.as_str() {
        "gzip" => Compression::Gzip,
        "none" => Compression::None,
        other => {
            return Err(format!(
                "compression {other:?}: none or gzip in the browser"
            ))
        }
    };
    let path = archive_path(&o.path).map_err(|e| e.to_string())?;
    let created = o
        .created
        .clone()
        .unwrap_or_else(|| lamina_core::image::rfc3339((js_sys::Date::now() / 1000.0) as u64));

    // 1. the base (manifest and config); its layers stay in the registry
    report.send(serde_json::json!({"kind": "phase", "phase": "base"}));
    let (_top, ix, mut img) = fetch_base(d, &base, &report).await?;
    // 2. base layers into the destination repository: mounted, or already there
    report.send(serde_json::json!({"kind": "phase", "phase": "mount"}));
    let mut blobs = img.manifest.layers().map_err(|e| e.to_string())?;
    if ix.is_some() {
        return Err(
            "the base is a multi-platform index: the browser edits single images (use the CLI's --platform all)"
                .into(),
        );
    }
    blobs.push(img.manifest.config().map_err(|e| e.to_string())?);
    if base.registry != dest.registry || base.repository != dest.repository {
        for b in &blobs {
            if base.registry == dest.registry
                && d.run(
                    &dest,
                    MountBlob::new(&dest.repository, &base.repository, &b.digest),
                    None,
                    &report,
                )
                .await?
            {
                continue;
            }
            if d.run(
                &dest,
                HeadBlob::new(&dest.repository, &b.digest, true),
                None,
                &report,
            )
            .await?
            .is_none()
            {
                return Err(format!(
                    "base blob {} is not in {} and cannot be mounted from another registry in \
                     the browser; push the base there first",
                    b.digest,
                    dest.name()
                ));
            }
        }
    }

    // 3. the layer(s): built as the files stream, uploaded in chunks
    // (files, weights or card, title)
    type Group = (Vec<Named>, Part, String);
    let mut groups: Vec<Group> = Vec::new();
    if o.modelcar {
        for (n, f) in inputs {
            let title = n.rsplit('/').next().unwrap_or(&n).to_string();
            groups.push((vec![(n, f)], Part::Weights, title));
        }
        if let Some(c) = modelcard {
            let n = c.name();
            groups.push((vec![(n.clone(), c)], Part::Card, n));
        }
    } else {
        if modelcard.is_some() {
            return Err("a model card goes with the modelcar layout".into());
        }
        groups.push((inputs, Part::Weights, String::new()));
    }
    let chunk = o.chunk_mib.clamp(1, 512) << 20;
    let mut built: Vec<CarLayer> = Vec::new();
    for (i, (files, part, title)) in groups.into_iter().enumerate() {
        let c = if part == Part::Card {
            Compression::Gzip
        } else {
            compression
        };
        let what = files
            .iter()
            .map(|(n, _)| n.clone())
            .collect::<Vec<_>>()
            .join(" ");
        let mut src = LayerSource::new(files, &path, c)?;
        report.send(serde_json::json!({
            "kind": "layer", "index": i, "files": what, "total": src.total
        }));
        let mut win = Window::default();
        let cfg = UploadConfig {
            monolithic_max: 0,
            chunk_max: chunk,
            // whole chunks only (but the last): no small PATCH for the bytes a fill overshot
            chunk_min: chunk,
            stream: false,
            // the files can be read again: if the registry loses the session, start over
            restartable: true,
            ..UploadConfig::default()
        };
        let up = Upload::new(&dest.repository, cfg);
        let _ = d
            .run(&dest, up, Some((&mut src, &mut win, chunk)), &report)
            .await?;
        let info = src.done.clone().ok_or("the layer did not finish")?;
        report.send(serde_json::json!({
            "kind": "layerDone", "index": i, "digest": info.digest.to_string(), "size": info.size
        }));
        // a modelcar layer is one file under /models; a weights layer is all the files under
        // the path, its history `COPY <names> <path> # weights` as r8im writes it
        let (title, in_layer) = if o.modelcar {
            (title, format!("/{path}/{what}"))
        } else {
            (what, format!("/{path}"))
        };
        built.push(CarLayer {
            title,
            in_layer_path: in_layer,
            directory: false,
            part,
            info,
        });
    }

    // 4. config and manifest, last
    report.send(serde_json::json!({"kind": "phase", "phase": "manifest"}));
    if o.modelcar && img.manifest.family() == Family::Docker {
        img.manifest.convert_to_oci();
    }
    for l in &built {
        img.config.push_layer(&l.info.diff_id, &l.history(&created));
        let desc = if o.modelcar {
            l.descriptor(img.manifest.family())
                .map_err(|e| e.to_string())?
        } else {
            let mt = media::layer_type(img.manifest.family(), l.info.compression)
                .ok_or("no layer media type")?;
            Descriptor::new(mt, l.info.digest.clone(), l.info.size)
        };
        img.manifest.push_layer(&desc);
    }
    if let Some(card) = built.iter().rev().find(|l| l.part == Part::Card) {
        img.manifest
            .set_annotation(modelcar::ANN_MODELCARD, &card.info.digest.to_string())
            .map_err(|e| e.to_string())?;
    }
    let cbytes = img.config.bytes().to_vec();
    let csize = cbytes.len() as u64;
    let cd = d.upload_bytes(&dest, cbytes, &report).await?;
    img.manifest.set_config(&cd, csize);
    let mbytes = img.manifest.bytes().to_vec();
    let mt = img.manifest.media_type();
    let digest = d
        .run(
            &dest,
            PutManifest::new(&dest.repository, dest.tag_or_latest(), mt, mbytes),
            None,
            &report,
        )
        .await?;
    Ok(format!("{}@{digest}", dest.name()))
}

/// Builds the layer of `files` (`names` their paths under `dest` in the layer) without
/// uploading it and returns its digests and sizes and the time it took (JSON): the browser's
/// layer building and hashing throughput, for the benchmark.
#[wasm_bindgen]
pub async fn layer_digests(
    files: Array,
    names: Array,
    dest: String,
    compression: String,
) -> Result<String, JsError> {
    let mut inputs: Vec<Named> = Vec::new();
    for (f, n) in files.iter().zip(names.iter()) {
        let f: web_sys::File = f.dyn_into().map_err(|_| JsError::new("not a File"))?;
        inputs.push((n.as_string().unwrap_or_else(|| f.name()), f));
    }
    let c = Compression::parse(&compression).ok_or_else(|| JsError::new("compression"))?;
    let t0 = js_sys::Date::now();
    let mut src = LayerSource::new(inputs, &dest, c).map_err(|e| JsError::new(&e))?;
    let mut win = Window::default();
    while src.done.is_none() {
        src.fill(&mut win, 8 << 20)
            .await
            .map_err(|e| JsError::new(&e))?;
        win.drop_before(win.end());
    }
    let ms = js_sys::Date::now() - t0;
    let info = src.done.clone().ok_or_else(|| JsError::new("no layer"))?;
    Ok(serde_json::json!({
        "digest": info.digest.to_string(),
        "size": info.size,
        "diffId": info.diff_id.to_string(),
        "uncompressed": info.uncompressed_size,
        "ms": ms,
    })
    .to_string())
}
