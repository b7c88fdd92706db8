//! The Worker's driver for the core's registry machines: each request a machine asks for goes
//! out through the Worker's `fetch` (redirects manual: the core follows them and keeps
//! credentials on their host), and each response goes back in. Blobs stream: a download's body
//! is handed to the caller as a `ReadableStream`, and an upload takes its bytes from a
//! [`Produce`]r through a [`Window`] that holds only what the registry has not confirmed yet.

use std::collections::HashMap;
use std::time::Duration;

use lamina_core::auth::Credentials;
use lamina_core::http::{Body, Request, Response};
use lamina_core::reference::Reference;
use lamina_core::registry::{Event, Held, Machine, Op, Output, Session, Upload, UploadConfig};
use lamina_core::Digest;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use worker::js_sys::{Reflect, Uint8Array};
use worker::{Delay, Fetch};

/// Errors as text, for a job's status.
pub type Res<T> = std::result::Result<T, String>;

/// A JS exception as text.
pub fn js_err(e: impl Into<wasm_bindgen::JsValue>) -> String {
    let e: wasm_bindgen::JsValue = e.into();
    e.as_string()
        .or_else(|| {
            e.dyn_ref::<worker::js_sys::Error>()
                .map(|x| String::from(x.message()))
        })
        .unwrap_or_else(|| format!("{e:?}"))
}

/// Milliseconds since the epoch (the Worker's clock; the core reads none).
pub fn now_ms() -> f64 {
    worker::js_sys::Date::now()
}

/// Bytes of WebAssembly memory this instance has (it grows and never shrinks: its peak).
pub fn wasm_memory() -> u64 {
    #[cfg(target_arch = "wasm32")]
    {
        core::arch::wasm32::memory_size(0) as u64 * 65536
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        0
    }
}

/// Bytes asked for per read: workerd hands a fetched body over in pieces of a few KiB, and each
/// read is a trip through JS; a BYOB read of at least this much is one trip per MiB.
const READ_AT_LEAST: u32 = 1 << 20;

/// Reads a `ReadableStream` of bytes a large piece at a time: with a BYOB reader and workerd's
/// `readAtLeast` where the stream offers them, else with the default reader.
#[derive(Debug)]
pub struct Reader {
    r: worker::js_sys::Object,
    /// `readAtLeast` of a BYOB reader, and the buffer it fills (handed back after each read)
    byob: Option<(worker::js_sys::Function, Option<Uint8Array>)>,
    what: String,
    /// Bytes read so far.
    pub read: u64,
}

impl Reader {
    /// A reader over `s` (`what` names it in errors).
    pub fn new(s: &web_sys::ReadableStream, what: &str) -> Reader {
        let opts = worker::js_sys::Object::new();
        let _ = Reflect::set(&opts, &"mode".into(), &"byob".into());
        let byob = Reflect::get(s, &"getReader".into())
            .ok()
            .and_then(|f| f.dyn_into::<worker::js_sys::Function>().ok())
            .and_then(|f| f.call1(s, &opts).ok())
            .and_then(|r| {
                let f = Reflect::get(&r, &"readAtLeast".into()).ok()?;
                let f = f.dyn_into::<worker::js_sys::Function>().ok()?;
                Some((r, f))
            });
        match byob {
            Some((r, f)) => Reader {
                r: r.unchecked_into(),
                byob: Some((f, None)),
                what: what.into(),
                read: 0,
            },
            None => Reader {
                r: s.get_reader(),
                byob: None,
                what: what.into(),
                read: 0,
            },
        }
    }

    /// The next piece into `out` (replacing what it held); false at the end.
    pub async fn next_into(&mut self, out: &mut Vec<u8>) -> Res<bool> {
        let promise = match &mut self.byob {
            Some((f, buf)) => {
                let view = buf
                    .take()
                    .unwrap_or_else(|| Uint8Array::new_with_length(READ_AT_LEAST));
                f.call2(&self.r, &READ_AT_LEAST.into(), &view)
                    .map_err(|e| format!("reading {}: {}", self.what, js_err(e)))?
            }
            None => {
                let r: &web_sys::ReadableStreamDefaultReader = self.r.unchecked_ref();
                r.read().into()
            }
        };
        let v = JsFuture::from(worker::js_sys::Promise::from(promise))
            .await
            .map_err(|e| format!("reading {}: {}", self.what, js_err(e)))?;
        let value = Reflect::get(&v, &"value".into()).map_err(js_err)?;
        let done = Reflect::get(&v, &"done".into())
            .map_err(js_err)?
            .as_bool()
            .unwrap_or(true);
        let value: Option<Uint8Array> = value.dyn_into().ok();
        let n = value.as_ref().map_or(0, |v| v.length() as usize);
        out.resize(n, 0);
        if let Some(v) = &value {
            v.copy_to(&mut out[..]);
            // the buffer was handed over; the next read fills it again
            if let Some((_, buf)) = &mut self.byob {
                *buf = Some(Uint8Array::new(&v.buffer()));
            }
        }
        self.read += n as u64;
        Ok(!(done && n == 0))
    }

    /// Stops reading (the rest of the body is not wanted).
    pub fn cancel(&self) {
        if let Ok(f) = Reflect::get(&self.r, &"cancel".into()) {
            if let Ok(f) = f.dyn_into::<worker::js_sys::Function>() {
                let _ = f.call0(&self.r);
            }
        }
    }
}

/// The blob's bytes the registry has not confirmed yet, gathered into pieces of [`PIECE`].
pub type Window = Held<Vec<u8>>;

/// Produced bytes are gathered into pieces of about this size (the codecs hand over small
/// slices).
pub const PIECE: usize = 1 << 20;

/// Bytes `a..b` as one JS byte array (one copy out of wasm memory).
fn js_bytes(w: &Window, a: u64, b: u64) -> Res<Uint8Array> {
    let out = Uint8Array::new_with_length((b - a) as u32);
    let mut at = 0u32;
    for (p, r) in w.range(a, b).map_err(e2s)? {
        let n = r.len() as u32;
        out.set(&Uint8Array::from(&p[r]), at);
        at += n;
    }
    Ok(out)
}

/// Makes a blob's bytes as the upload needs them.
#[allow(async_fn_in_trait)] // one thread: Send is not needed
pub trait Produce {
    /// Adds about `want` more bytes to `w` (fewer at the end), or finishes the blob.
    async fn produce(&mut self, w: &mut Window, want: u64) -> Res<()>;
    /// The blob's digest and size, once it is whole.
    fn finished(&self) -> Option<(Digest, u64)>;
    /// Input bytes read so far (for progress).
    fn read(&self) -> u64;
}

/// Where a long job reports how far it got.
#[allow(async_fn_in_trait)]
pub trait Progress {
    /// `sent` bytes of the current blob confirmed by the registry, `read` input bytes read.
    async fn bytes(&self, sent: u64, read: u64);
    /// A line for the job's log.
    async fn log(&self, line: &str);
}

/// Runs the core's machines over the Worker's `fetch`, one session per registry.
#[derive(Debug)]
pub struct Driver {
    sessions: HashMap<String, Session>,
    creds: HashMap<String, Credentials>,
    seed: u64,
    t0: f64,
}

impl Driver {
    /// A driver using `creds` (per registry host) for the registries it talks to.
    pub fn new(creds: HashMap<String, Credentials>) -> Driver {
        let t0 = now_ms();
        Driver {
            sessions: HashMap::new(),
            creds,
            seed: (t0 as u64) ^ 0x9E37_79B9_7F4A_7C15,
            t0,
        }
    }

    fn now(&self) -> u64 {
        (now_ms() - self.t0).max(0.0) as u64
    }

    fn session(&mut self, r: &Reference) -> Session {
        if let Some(s) = self.sessions.remove(&r.registry) {
            return s;
        }
        let creds = self.creds.get(&r.registry).cloned().unwrap_or_default();
        self.seed = self.seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        Session::new(r.api_host(), r.default_scheme(), creds, self.seed)
    }

    /// Sends one request; a 2xx answer to a streaming request keeps its body as a stream.
    async fn send(
        &self,
        req: &Request,
        body: Option<Uint8Array>,
    ) -> Res<(Response, Option<web_sys::ReadableStream>)> {
        let headers = web_sys::Headers::new().map_err(js_err)?;
        for (k, v) in &req.headers {
            if !k.eq_ignore_ascii_case("content-length") && !k.eq_ignore_ascii_case("host") {
                headers.append(k, v).map_err(js_err)?;
            }
        }
        let init = web_sys::RequestInit::new();
        init.set_method(req.method.as_str());
        init.set_headers(&headers);
        init.set_redirect(web_sys::RequestRedirect::Manual);
        if let Some(b) = &body {
            init.set_body(b);
        }
        let out = web_sys::Request::new_with_str_and_init(&req.url, &init).map_err(js_err)?;
        let resp = Fetch::Request(worker::Request::from(out))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let inner: web_sys::Response = resp.into();
        let status = inner.status();
        let headers = header_pairs(&inner.headers())?;
        let stream = inner.body();
        if req.stream_response && (200..300).contains(&status) {
            let r = Response {
                status,
                headers,
                body: Vec::new(),
                truncated: false,
            };
            return Ok((r, stream));
        }
        let mut body = Vec::new();
        let mut truncated = false;
        if let Some(s) = stream {
            let mut rd = Reader::new(&s, &format!("the answer from {}", req.url));
            let mut c = Vec::new();
            while rd.next_into(&mut c).await? {
                body.extend_from_slice(&c);
                if body.len() as u64 > req.max_response_body {
                    body.truncate(req.max_response_body as usize);
                    truncated = true;
                    rd.cancel();
                    break;
                }
            }
        }
        Ok((
            Response {
                status,
                headers,
                body,
                truncated,
            },
            None,
        ))
    }

    /// Runs `op` against `r`'s registry; returns its result and, for a streaming download, the
    /// body.
    pub async fn run<O: Op>(
        &mut self,
        r: &Reference,
        op: O,
    ) -> Res<(O::Output, Option<web_sys::ReadableStream>)> {
        self.run_with(r, op, None).await
    }

    /// [`Driver::run`], with `blob` the bytes an upload op asks for.
    async fn run_with<O: Op>(
        &mut self,
        r: &Reference,
        op: O,
        blob: Option<&[u8]>,
    ) -> Res<(O::Output, Option<web_sys::ReadableStream>)> {
        let mut m = Machine::new(self.session(r), op);
        let mut stream = None;
        let out = loop {
            match m.poll(self.now()) {
                Output::Send(req) => {
                    let body = request_body(&req.body, |a, b| {
                        blob.and_then(|x| x.get(a as usize..b as usize))
                            .map(Uint8Array::from)
                            .ok_or_else(|| format!("internal error: no bytes {a}..{b}"))
                    });
                    let body = match body {
                        Ok(b) => b,
                        Err(e) => break Err(e),
                    };
                    match self.send(&req, body).await {
                        Ok((resp, s)) => {
                            stream = s;
                            m.handle_response(self.now(), resp)
                        }
                        Err(e) => m.handle_error(self.now(), e),
                    }
                }
                Output::Wait(until) => self.sleep_until(until).await,
                Output::Done(d) => break d.map_err(|e| e.to_string()),
                Output::Event(_) => {}
                Output::NeedData | Output::Pending => {
                    break Err("internal error: the machine waits for nothing".into())
                }
            }
        };
        self.sessions.insert(r.registry.clone(), m.into_session());
        out.map(|o| (o, stream))
    }

    async fn sleep_until(&self, until: u64) {
        let now = self.now();
        if until > now {
            Delay::from(Duration::from_millis(until - now)).await;
        }
    }

    /// Uploads the blob `p` makes into `r`'s repository in chunks of `chunk` bytes; while one
    /// chunk is on the wire the next is made. Holds at most about two chunks.
    pub async fn upload<P: Produce, G: Progress>(
        &mut self,
        r: &Reference,
        p: &mut P,
        chunk: u64,
        progress: &G,
    ) -> Res<Digest> {
        let cfg = UploadConfig {
            monolithic_max: 0,
            chunk_max: chunk,
            // whole chunks only (but the last)
            chunk_min: chunk,
            stream: false,
            restartable: false,
            ..UploadConfig::default()
        };
        let mut m = Machine::new(self.session(r), Upload::new(&r.repository, cfg));
        let mut w = Window::default();
        // where the time goes, for the job's log: making bytes, and the registry
        let (mut making, mut waiting, t0) = (0.0f64, 0.0f64, now_ms());
        let offer = |m: &mut Machine<Upload>, p: &P, w: &Window| match p.finished() {
            Some((d, n)) => m.op_mut().data_complete(d, n),
            None => m.op_mut().data_available(w.end()),
        };
        let out = loop {
            match m.poll(self.now()) {
                Output::Send(req) => {
                    let body = match request_body(&req.body, |a, b| js_bytes(&w, a, b)) {
                        Ok(b) => b,
                        Err(e) => break Err(e),
                    };
                    // the next chunk is made while this one travels
                    let more = async {
                        let t = now_ms();
                        let r = if p.finished().is_none() && w.held() < 2 * chunk {
                            p.produce(&mut w, chunk).await
                        } else {
                            Ok(())
                        };
                        (r, now_ms() - t)
                    };
                    let sent = async {
                        let t = now_ms();
                        let r = self.send(&req, body).await;
                        (r, now_ms() - t)
                    };
                    let ((res, ws), (made, ms)) = futures_util::join!(sent, more);
                    making += ms;
                    waiting += ws;
                    if let Err(e) = made {
                        break Err(e);
                    }
                    offer(&mut m, p, &w);
                    match res {
                        Ok((resp, _)) => m.handle_response(self.now(), resp),
                        Err(e) => {
                            progress.log(&format!("request failed: {e}")).await;
                            m.handle_error(self.now(), e)
                        }
                    }
                    let c = m.op().confirmed();
                    w.drop_before(c);
                    progress.bytes(c, p.read()).await;
                }
                Output::NeedData => {
                    let t = now_ms();
                    if let Err(e) = p.produce(&mut w, chunk).await {
                        break Err(e);
                    }
                    making += now_ms() - t;
                    offer(&mut m, p, &w);
                    m.data_ready();
                }
                Output::Wait(until) => self.sleep_until(until).await,
                Output::Event(Event::Retrying {
                    reason,
                    attempt,
                    delay_ms,
                }) => {
                    progress
                        .log(&format!(
                            "retrying ({attempt}) in {:.1}s: {reason}",
                            delay_ms as f64 / 1000.0
                        ))
                        .await
                }
                Output::Event(_) => {}
                Output::Done(d) => break d.map_err(|e| e.to_string()),
                Output::Pending => break Err("internal error: request in flight".into()),
            }
        };
        self.sessions.insert(r.registry.clone(), m.into_session());
        progress
            .log(&format!(
                "upload: {:.1}s in all, {:.1}s making bytes, {:.1}s in requests (the two overlap)",
                (now_ms() - t0) / 1000.0,
                making / 1000.0,
                waiting / 1000.0
            ))
            .await;
        out
    }

    /// Uploads small bytes (a config) in one request.
    pub async fn upload_bytes(&mut self, r: &Reference, bytes: &[u8]) -> Res<Digest> {
        let (up, d) = lamina_core::registry::upload_bytes(&r.repository, bytes);
        let (got, _) = self.run_with(r, up, Some(bytes)).await?;
        if got != d {
            return Err(format!("the registry stored {got} for a blob of {d}"));
        }
        Ok(d)
    }
}

/// A request's body as JS bytes; `blob` gives bytes `a..b` of the blob being uploaded.
fn request_body(
    body: &Body,
    blob: impl FnOnce(u64, u64) -> Res<Uint8Array>,
) -> Res<Option<Uint8Array>> {
    match body {
        Body::Empty => Ok(None),
        Body::Bytes(b) => Ok(Some(Uint8Array::from(b.as_slice()))),
        Body::Blob { start, end } => blob(*start, *end).map(Some),
        Body::Stream { .. } => Err("internal error: streamed bodies are not used here".into()),
    }
}

/// A core error as text.
pub fn e2s(e: lamina_core::Error) -> String {
    e.to_string()
}

/// A `Headers` object's (name, value) pairs.
pub fn header_pairs(h: &web_sys::Headers) -> Res<Vec<(String, String)>> {
    let mut out = Vec::new();
    let entries = Reflect::get(h, &"entries".into()).map_err(js_err)?;
    let f: worker::js_sys::Function = entries
        .dyn_into()
        .map_err(|_| "Headers has no entries()".to_string())?;
    let it = f.call0(h).map_err(js_err)?;
    if let Some(iter) = worker::js_sys::try_iter(&it).map_err(js_err)? {
        for pair in iter {
            let pair: worker::js_sys::Array = pair
                .map_err(js_err)?
                .dyn_into()
                .map_err(|_| "a header is not a pair".to_string())?;
            out.push((
                pair.get(0).as_string().unwrap_or_default(),
                pair.get(1).as_string().unwrap_or_default(),
            ));
        }
    }
    Ok(out)
}
