//! The native driver: a thin blocking loop that sends what the core's machines ask for with
//! async reqwest on one current-thread tokio runtime (`block_on`), and feeds back responses,
//! errors and the time.

use std::collections::{HashMap, VecDeque};
use std::io::Read as _;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lamina_core::http::{Method, Request, Response, SafeUrl};
use lamina_core::layer::LayerInfo;
use lamina_core::reference::{Reference, Scheme};
use lamina_core::registry::{
    Action, Download, Event, NetError, Op, OpenBlob, Outgoing, Payload, Session, Sessions, Source,
    StreamEnd, Transfer, Upload, UploadConfig,
};
use lamina_core::{Digest, Error};

use crate::net::creds::{self, Given};
use crate::net::resume::ResumeFile;
use crate::ui::progress::Progress;

/// Global options that shape every connection.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Use plain HTTP for every registry.
    pub insecure: bool,
    /// Log every request (credentials redacted).
    pub verbose: bool,
    /// Credentials from flags and environment.
    pub given: Given,
    /// Connect and idle timeouts.
    pub timeouts: Timeouts,
    /// Most bytes in one streamed `PATCH` (0: [`SEGMENT`]).
    pub segment: u64,
    /// Which certificates to trust, per host.
    pub tls: crate::net::tls::TlsConfig,
}

/// Default size of a streamed upload's segments: each is one `PATCH` the registry confirms,
/// so a cut costs at most this much where the registry kept the session; large enough that
/// the round trip between segments costs nothing measurable.
pub const SEGMENT: u64 = 128 << 20;

/// How long lamina waits on the network before it calls a request failed (and retries it, or
/// resumes the upload, within the core's bounds).
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Establishing a connection (TCP and TLS).
    pub connect: Duration,
    /// No byte sent or received on a request for this long (a stalled server, a dead link).
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(30),
            idle: Duration::from_secs(120),
        }
    }
}

/// Messages from a producer of upload data.
#[derive(Debug)]
pub enum Data {
    /// The next bytes of the blob.
    Chunk(Bytes),
    /// The last bytes of the blob (possibly empty), and what the blob is.
    Done(Bytes, LayerInfo),
    /// The producer failed.
    Failed(Error),
}

/// Cuts a producer's bytes into exact-size chunks for the uploader (no over-allocation: memory
/// is the chunk being filled, the one in the channel, and the ones not yet confirmed).
#[derive(Debug)]
pub struct Chunker {
    cur: Vec<u8>,
    chunk: usize,
    tx: std::sync::mpsc::SyncSender<Data>,
    /// The uploader went away (it failed); stop producing.
    pub closed: bool,
}

impl Chunker {
    /// Chunks of `chunk` bytes into `tx`.
    pub fn new(chunk: usize, tx: std::sync::mpsc::SyncSender<Data>) -> Self {
        Chunker {
            cur: Vec::with_capacity(chunk),
            chunk: chunk.max(1),
            tx,
            closed: false,
        }
    }

    /// Adds bytes.
    pub fn push(&mut self, mut b: &[u8]) {
        while !b.is_empty() && !self.closed {
            let take = (self.chunk - self.cur.len()).min(b.len());
            self.cur.extend_from_slice(&b[..take]);
            b = &b[take..];
            if self.cur.len() == self.chunk {
                let full = std::mem::replace(&mut self.cur, Vec::with_capacity(self.chunk));
                if self.tx.send(Data::Chunk(Bytes::from(full))).is_err() {
                    self.closed = true;
                }
            }
        }
    }

    /// Ends the blob with its info, or reports the producer's error.
    pub fn done(mut self, r: Result<LayerInfo, Error>) {
        let msg = match r {
            Ok(info) => Data::Done(Bytes::from(std::mem::take(&mut self.cur)), info),
            Err(e) => Data::Failed(e),
        };
        let _ = self.tx.send(msg);
    }
}

/// Registry client: one session per registry host, reused across operations.
///
/// One HTTP stack: async reqwest on one tokio current-thread runtime, driven with `block_on`
/// from the driver's thread (and from whichever thread reads a [`BlobReader`], which shares the
/// runtime; a current-thread runtime lets several threads block on it, one driving its I/O).
pub struct Client {
    /// One client per registry host (each trusts what [`crate::net::tls`] says for it).
    http: HashMap<String, reqwest::Client>,
    opts: Options,
    sessions: Sessions,
    start: Instant,
    stream: Option<BodyReader>,
    rt: Arc<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("sessions", &self.sessions)
            .finish()
    }
}

impl Client {
    /// A client.
    pub fn new(opts: Options) -> crate::error::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the network runtime: {e}"))?;
        Ok(Client::on(opts, Arc::new(rt)))
    }

    /// A client on a runtime that already exists (a [`BlobReader`] reopening its blob).
    fn on(opts: Options, rt: Arc<tokio::runtime::Runtime>) -> Self {
        Client {
            http: HashMap::new(),
            sessions: Sessions::new(
                std::process::id() as u64 ^ (seed_time() << 17) ^ 0x9E37_79B9_7F4A_7C15,
            ),
            opts,
            start: Instant::now(),
            stream: None,
            rt,
        }
    }

    /// The options it was made with (a copy's re-download makes a driver of its own).
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// The client for `url`'s host. Its only timeout is the connect timeout: the idle timeout
    /// is the watchdog's in [`Client::send`] and [`BodyReader`]'s per chunk.
    fn http_for(&mut self, url: &str) -> Result<reqwest::Client, String> {
        let host = crate::net::tls::authority(url).to_string();
        if let Some(c) = self.http.get(&host) {
            return Ok(c.clone());
        }
        let t = self.opts.tls.for_host(&host)?;
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(self.opts.timeouts.connect)
            .tcp_keepalive(Duration::from_secs(30))
            .danger_accept_invalid_certs(t.no_verify)
            .user_agent(concat!("lamina/", env!("CARGO_PKG_VERSION")));
        for c in t.cas {
            b = b.add_root_certificate(c);
        }
        let c = b
            .build()
            .map_err(|e| format!("cannot set up HTTPS for {host}: {e}"))?;
        self.http.insert(host, c.clone());
        Ok(c)
    }

    /// Sends one request and reads its answer (or keeps a streamed answer's body for
    /// [`Client::take_stream`]).
    ///
    /// Nothing here waits for ever: an idle watchdog fails the request when no byte has moved
    /// either way for [`Timeouts::idle`] (a server that stopped reading, or stopped answering).
    ///
    /// A body pulled from the producer is fed by a pump thread (the producer's channel blocks)
    /// into a [`Tap`], the body's end that the connection task polls. A request that failed, or
    /// that was answered before its body was taken whole (a front end refusing it early), cuts
    /// the tap: that drops the channel's receiver, so the pump's pending or next send fails and
    /// the pump ends, and wakes the connection task, which finds an error in the body and drops
    /// the connection; only then (the pump joined) does this return. The runtime is not shut
    /// down for it (a download's response may live on it). (Regression: the pump stayed blocked
    /// on a channel that the abandoned connection task held, and joining it hung the upload for
    /// ever; the tap takes the channel from that task instead.)
    fn send(&mut self, req: &Request, body: SendBody) -> Result<Response, NetError> {
        let method = match req.method {
            Method::Get => reqwest::Method::GET,
            Method::Head => reqwest::Method::HEAD,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
        };
        let http = self.http_for(&req.url)?;
        let mut b = http.request(method, &req.url);
        for (k, v) in &req.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        let watch = Arc::new(Watch::new());
        let mut tap = None;
        let mut pump = None;
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        match body {
            SendBody::None => {
                if matches!(req.method, Method::Put | Method::Post | Method::Patch)
                    && req.header("content-length").is_none()
                {
                    b = b.header("Content-Length", "0");
                }
            }
            SendBody::Bytes(body) => {
                b = b.header("Content-Length", body.len().to_string());
                if body.len() <= PIECE {
                    b = b.body(body);
                } else {
                    // slices of the buffer, so the watchdog sees the upload move
                    let t = Tap::new(TapFeed::Pieces(body));
                    b = b.body(t.body(&watch));
                    tap = Some(t);
                }
            }
            SendBody::Stream(mut r) => {
                let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
                let t = Tap::new(TapFeed::Channel(rx));
                b = b.body(t.body(&watch));
                tap = Some(t);
                let cancel = Arc::clone(&cancel);
                pump = Some(std::thread::spawn(move || loop {
                    if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let next = r.next_chunk();
                    let end = !matches!(next, Ok(Some(_)));
                    // fails once the tap is cut
                    let sent = match next {
                        Ok(Some(b)) => tx.blocking_send(Ok(b)),
                        Ok(None) => Ok(()),
                        Err(e) => tx.blocking_send(Err(e)),
                    };
                    if end || sent.is_err() {
                        break;
                    }
                }));
            }
        }
        let max = req.max_response_body;
        let keep = req.stream_response;
        let idle = self.opts.timeouts.idle;
        let w = Arc::clone(&watch);
        let out = self.rt.block_on(async move {
            let work = async {
                let resp = b.send().await.map_err(net_error)?;
                w.touch();
                let mut out = Response {
                    status: resp.status().as_u16(),
                    headers: header_pairs(resp.headers()),
                    body: Vec::new(),
                    truncated: false,
                };
                if keep && (200..300).contains(&out.status) {
                    return Ok((out, Some(resp)));
                }
                let mut resp = resp;
                while let Some(c) = resp.chunk().await.map_err(net_error)? {
                    w.touch();
                    out.body.extend_from_slice(&c);
                    if out.body.len() as u64 > max {
                        break; // a hostile registry cannot make us read without end
                    }
                }
                out.truncated = out.body.len() as u64 > max;
                out.body.truncate(max as usize);
                Ok::<_, NetError>((out, None))
            };
            let dog = async {
                let tick = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
                loop {
                    tokio::time::sleep(tick).await;
                    if w.idle() >= idle {
                        return NetError::Timeout(idle_message(idle));
                    }
                }
            };
            let work = std::pin::pin!(work);
            let dog = std::pin::pin!(dog);
            match futures_util::future::select(work, dog).await {
                futures_util::future::Either::Left((r, _)) => r,
                futures_util::future::Either::Right((e, _)) => Err(e),
            }
        });
        if let Some(t) = &tap {
            // failed, or answered before the body was taken whole: the connection task may
            // still hold the body
            if out.is_err() || !t.ended() {
                cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                t.cut();
            }
        }
        if let Some(p) = pump {
            let _ = p.join();
        }
        let (resp, kept) = out?;
        if let Some(kept) = kept {
            self.stream = Some(BodyReader {
                rt: Arc::clone(&self.rt),
                resp: kept,
                chunk: Bytes::new(),
                idle,
            });
        }
        Ok(resp)
    }

    /// Opens a blob for reading, continuing where a cut download stopped (see [`BlobReader`]).
    pub fn open_blob(
        &mut self,
        r: &Reference,
        digest: &Digest,
    ) -> crate::error::Result<BlobReader> {
        let opened = self.run(r, OpenBlob::new(&r.repository, digest))?;
        let inner = self.take_stream()?;
        let mut b = BlobReader {
            inner,
            opts: self.opts.clone(),
            reference: r.clone(),
            dl: Download::new(&r.repository, digest),
        };
        b.skip(opened.skip).map_err(|e| e.to_string())?;
        Ok(b)
    }

    /// Opens bytes `range` of a blob, resumable as [`Client::open_blob`] is. The reader gives
    /// the range's bytes and ends there (also when the registry ignored `Range`).
    pub fn open_range(
        &mut self,
        r: &Reference,
        digest: &Digest,
        range: std::ops::Range<u64>,
    ) -> crate::error::Result<std::io::Take<BlobReader>> {
        let len = range.end.saturating_sub(range.start);
        let dl = Download::range(&r.repository, digest, range);
        let opened = self.run(r, dl.open())?;
        let inner = self.take_stream()?;
        let mut b = BlobReader {
            inner,
            opts: self.opts.clone(),
            reference: r.clone(),
            dl,
        };
        b.skip(opened.skip).map_err(|e| e.to_string())?;
        Ok(std::io::Read::take(b, len))
    }

    /// The body of the last streamed response (after an `OpenBlob`).
    fn take_stream(&mut self) -> crate::error::Result<BodyReader> {
        self.stream
            .take()
            .ok_or_else(|| Error::internal("no streamed response is waiting").into())
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn session_for(&mut self, r: &Reference) -> crate::error::Result<Session> {
        let scheme = if self.opts.insecure {
            Scheme::Http
        } else {
            r.default_scheme()
        };
        let given = &self.opts.given;
        self.sessions
            .take(r, scheme, || creds::for_registry(given, &r.registry))
            .map_err(Into::into)
    }

    /// Runs an operation that needs no upload data.
    pub fn run<O: Op>(&mut self, r: &Reference, op: O) -> crate::error::Result<O::Output> {
        let session = self.session_for(r)?;
        let mut t = Transfer::new(session, op, Source::None);
        let out = self.drive(&mut t, None);
        self.sessions.put(r, t.into_session());
        out
    }

    /// Uploads bytes held in memory (configs).
    pub fn upload_bytes(&mut self, r: &Reference, bytes: Vec<u8>) -> crate::error::Result<Digest> {
        let session = self.session_for(r)?;
        let (mut t, _) =
            Transfer::<Upload, Bytes>::upload_bytes(session, &r.repository, Bytes::from(bytes));
        let out = self.drive(&mut t, None);
        self.sessions.put(r, t.into_session());
        out
    }

    /// Uploads a blob while a producer makes it; returns the producer's final info. With a
    /// `restart` the producer can make the blob again from its first byte when the registry
    /// lost bytes it had been sent; without, such an upload fails and says so.
    ///
    /// With an `identity` (what the blob is made from, see [`crate::net::resume`]) the upload's state
    /// is kept in a file while it runs: a run that was killed or failed leaves it behind, and
    /// the same upload started again continues that session from the registry's offset.
    pub fn upload_stream(
        &mut self,
        r: &Reference,
        cfg: UploadConfig,
        rx: Receiver<Data>,
        restart: Option<Restart>,
        progress: &mut Progress,
        identity: Option<&str>,
    ) -> crate::error::Result<(Digest, LayerInfo)> {
        let mut cfg = cfg;
        if cfg.stream && cfg.segment == u64::MAX {
            cfg.segment = if self.opts.segment == 0 {
                SEGMENT
            } else {
                self.opts.segment
            };
        }
        let file = identity.and_then(|id| ResumeFile::new(&r.registry, &r.repository, id));
        let saved = file.as_ref().and_then(ResumeFile::load);
        let up = match &saved {
            Some(s) => {
                if !progress.quiet() {
                    eprintln!(
                        "resuming the upload an earlier run left at {} (state in {})",
                        crate::ui::progress::human(s.confirmed),
                        crate::net::resume::dir()
                            .map(|d| d.display().to_string())
                            .unwrap_or_default()
                    );
                }
                Upload::resume(&r.repository, cfg, &s.location)
            }
            None => Upload::new(&r.repository, cfg),
        };
        let source = if restart.is_some() {
            Source::Restartable
        } else {
            Source::Once
        };
        let session = self.session_for(r)?;
        let mut t = Transfer::new(session, up, source);
        let mut feed = Feed {
            rx: Arc::new(Mutex::new(rx)),
            info: None,
            restart,
            resume: file,
            progress,
        };
        let out = self.drive(&mut t, Some(&mut feed));
        if let Some(f) = &feed.resume {
            // kept after a failure that a later run can continue from; gone after success, and
            // after failures that the same session cannot get past: the registry dropped it or
            // refused its blob, or the bytes made were not the blob they claimed to be
            let hopeless = t.op().abandoned()
                || out.as_ref().err().is_some_and(|e| {
                    matches!(
                        e.downcast_ref::<Error>(),
                        Some(Error::DigestMismatch { .. })
                    )
                });
            if out.is_ok() || hopeless {
                f.remove();
            }
        }
        self.sessions.put(r, t.into_session());
        let d = out?;
        let info = feed
            .info
            .ok_or_else(|| Error::internal("upload finished before its data"))?;
        Ok((d, info))
    }

    /// The transport under the core's [`Transfer`] kernel: it sends what it is asked, streams
    /// bodies from the producer, and reports answers, time and bytes back.
    fn drive<O: Op>(
        &mut self,
        t: &mut Transfer<O, Bytes>,
        mut feed: Option<&mut Feed<'_>>,
    ) -> crate::error::Result<O::Output> {
        loop {
            match t.poll(self.now()) {
                Action::Send(Outgoing {
                    request, payload, ..
                }) => {
                    let (body, stream) = body_of(payload, feed.as_deref_mut())?;
                    if self.opts.verbose {
                        eprintln!(
                            "> {} {}",
                            request.method,
                            SafeUrl::new(request.url.as_str())
                        );
                    }
                    let res = self.send(&request, body);
                    if let Some(sh) = stream {
                        stream_ended(t, &sh, feed.as_deref_mut())?;
                    }
                    let now = self.now();
                    match res {
                        Ok(resp) => {
                            if self.opts.verbose {
                                eprintln!(
                                    "< {} {}",
                                    resp.status,
                                    SafeUrl::new(request.url.as_str())
                                );
                            }
                            t.handle_response(now, resp)?
                        }
                        Err(e) => t.handle_error(now, e)?,
                    }
                }
                Action::Wait(until) => {
                    let now = self.now();
                    if until > now {
                        std::thread::sleep(Duration::from_millis(until - now));
                    }
                }
                Action::Produce => produce(t, feed.as_deref_mut())?,
                Action::Restart { .. } => {
                    let f = feed
                        .as_deref_mut()
                        .ok_or_else(|| Error::internal("a restart without a producer"))?;
                    let restart = f
                        .restart
                        .as_mut()
                        .ok_or_else(|| Error::internal("a restart of a producer that cannot"))?;
                    f.rx = Arc::new(Mutex::new(restart()));
                    f.info = None;
                    t.restarted()?;
                }
                Action::Event(e) => self.event(&e, feed.as_deref_mut()),
                Action::Done(r) => return r.map_err(Into::into),
            }
        }
    }

    /// Logs an event, and keeps the resume file and progress where the registry stands.
    fn event(&self, e: &Event, feed: Option<&mut Feed<'_>>) {
        match e {
            Event::Retrying { .. } | Event::MakingAgain { .. } => {
                crate::ui::progress::warn(&e.to_string())
            }
            Event::Confirmed { bytes, location } => {
                if let Some(f) = feed {
                    // where the upload stands, before the next request (which may never come
                    // back)
                    if let Some(file) = f.resume.as_mut() {
                        file.save(location, *bytes);
                    }
                    f.progress.set(*bytes);
                }
                if self.opts.verbose {
                    eprintln!("  {e}");
                }
            }
            _ if self.opts.verbose => eprintln!("  {e}"),
            _ => {}
        }
    }
}

/// A request's body for a payload: bytes (held slices, zero-copy when they lie in one chunk),
/// or a stream from the producer with the state the driver reports when it ends.
fn body_of(
    payload: Payload<'_, Bytes>,
    feed: Option<&mut Feed<'_>>,
) -> crate::error::Result<(SendBody, Option<Arc<Mutex<StreamShared>>>)> {
    Ok(match payload {
        Payload::Empty => (SendBody::None, None),
        Payload::Bytes(b) => (SendBody::Bytes(Bytes::from(b)), None),
        Payload::Held(parts) => {
            let b = match parts.as_slice() {
                [(b, r)] => b.slice(r.clone()),
                _ => Bytes::from(
                    parts
                        .iter()
                        .flat_map(|(b, r)| b[r.clone()].iter().copied())
                        .collect::<Vec<u8>>(),
                ),
            };
            (SendBody::Bytes(b), None)
        }
        Payload::Range { .. } => {
            return Err(Error::internal("a byte range of a seekable source").into())
        }
        Payload::Stream {
            held,
            start,
            skip,
            limit,
            producer_done,
        } => {
            let f = feed.ok_or_else(|| Error::internal("a stream without a producer"))?;
            let shared = Arc::new(Mutex::new(StreamShared {
                done: producer_done,
                ..StreamShared::default()
            }));
            let body = SendBody::Stream(StreamReader {
                first: held.into_iter().map(|(b, r)| b.slice(r)).collect(),
                skip,
                rx: Arc::clone(&f.rx),
                shared: Arc::clone(&shared),
                offset: start,
                left: limit,
                progress: f.progress.clone(),
            });
            (body, Some(shared))
        }
    })
}

/// Tells the kernel where a streamed body stopped and what it took from the producer.
fn stream_ended<O: Op>(
    t: &mut Transfer<O, Bytes>,
    sh: &Mutex<StreamShared>,
    feed: Option<&mut Feed<'_>>,
) -> crate::error::Result<()> {
    let mut sh = sh.lock().map_err(|_| "lock")?;
    if let Some(e) = sh.err.take() {
        return Err(e.into());
    }
    let info = sh.info.take();
    t.stream_ended(StreamEnd {
        limit_reached_at: sh.limit_at,
        carry: sh.carry.drain(..).collect(),
        pulled: sh.pulled,
        complete: info.as_ref().map(|i| (i.digest.clone(), i.size)),
    })?;
    if let (Some(info), Some(f)) = (info, feed) {
        f.info = Some(info);
    }
    Ok(())
}

/// Hands the kernel the producer's next bytes, or its end.
fn produce<O: Op>(
    t: &mut Transfer<O, Bytes>,
    feed: Option<&mut Feed<'_>>,
) -> crate::error::Result<()> {
    let f = feed.ok_or_else(|| Error::internal("upload data asked for without a producer"))?;
    let msg = f.rx.lock().map_err(|_| "lock")?.recv();
    match msg {
        Ok(Data::Chunk(b)) => t.produced(b)?,
        Ok(Data::Done(rest, info)) => {
            if !rest.is_empty() {
                t.produced(rest)?;
            }
            t.produced_end(info.digest.clone(), info.size)?;
            f.info = Some(info);
        }
        Ok(Data::Failed(e)) => return Err(e.into()),
        // it ends with Done or Failed; a closed channel is a panic there
        Err(_) => return Err(Error::internal("the layer builder stopped unexpectedly").into()),
    }
    Ok(())
}

impl Client {}

/// Nanoseconds of the wall clock, to seed retry jitter (runs started together spread apart).
fn seed_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// What a failed request was, for the core to decide (see [`NetError`]): a certificate the TLS
/// library refused, a timeout, a refused or reset connection, or something else.
fn net_error(e: reqwest::Error) -> NetError {
    if let Some(r) = crate::net::tls::certificate_failure(&e) {
        return NetError::Certificate(r);
    }
    let timeout = e.is_timeout();
    let kind = io_kind(&e);
    let msg = error_chain(&e.without_url());
    match kind {
        _ if timeout => NetError::Timeout(msg),
        Some(std::io::ErrorKind::ConnectionRefused) => NetError::Refused(msg),
        Some(
            std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::UnexpectedEof,
        ) => NetError::Reset(msg),
        Some(std::io::ErrorKind::TimedOut) => NetError::Timeout(msg),
        _ => NetError::Other(msg),
    }
}

/// The kind of the first I/O error in a chain (looking inside io::Errors, whose `source()`
/// skips the error they wrap).
fn io_kind(e: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if io.get_ref().and_then(|i| io_kind(i)).is_none() {
                return Some(io.kind());
            }
            return io.get_ref().and_then(|i| io_kind(i));
        }
        cur = c.source();
    }
    None
}

fn header_pairs(h: &reqwest::header::HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

/// Makes the blob's bytes again from the start (deterministic producers: files, re-downloads).
pub type Restart = Box<dyn FnMut() -> Receiver<Data>>;

enum SendBody {
    None,
    Bytes(Bytes),
    Stream(StreamReader),
}

/// Byte bodies larger than this go out in slices of this size, so that the idle watchdog
/// sees the upload move.
const PIECE: usize = 256 << 10;

/// What the watchdog says when it fails a request.
fn idle_message(idle: Duration) -> String {
    format!("nothing sent or received for {} (--timeout)", secs(idle))
}

/// Where a request body's bytes come from.
enum TapFeed {
    /// A large buffer, handed over in [`PIECE`]s.
    Pieces(Bytes),
    /// The pump thread's channel (a body pulled from the producer).
    Channel(tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>),
}

/// A request body's end that the connection task polls, and that the driver can cut off (see
/// [`Client::send`]).
#[derive(Clone)]
struct Tap(Arc<Mutex<TapState>>);

struct TapState {
    /// `None` once cut.
    feed: Option<TapFeed>,
    /// The connection task's waker from its last poll, to wake it when the body is cut.
    waker: Option<std::task::Waker>,
    /// The body was taken whole.
    ended: bool,
}

impl Tap {
    fn new(feed: TapFeed) -> Self {
        Tap(Arc::new(Mutex::new(TapState {
            feed: Some(feed),
            waker: None,
            ended: false,
        })))
    }

    /// The request body, which touches `watch` at every piece the connection takes.
    fn body(&self, watch: &Arc<Watch>) -> reqwest::Body {
        let tap = self.clone();
        let watch = Arc::clone(watch);
        reqwest::Body::wrap_stream(futures_util::stream::poll_fn(move |cx| {
            let next = tap.poll_next(cx);
            if next.is_ready() {
                watch.touch();
            }
            next
        }))
    }

    fn poll_next(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::io::Result<Bytes>>> {
        use std::task::Poll;
        let Ok(mut st) = self.0.lock() else {
            return Poll::Ready(Some(Err(std::io::Error::other("lock"))));
        };
        let st = &mut *st;
        let next = match st.feed.as_mut() {
            None => Some(Err(std::io::Error::other("the request was abandoned"))),
            Some(TapFeed::Pieces(b)) => {
                let piece = b.split_to(b.len().min(PIECE));
                (!piece.is_empty()).then_some(Ok(piece))
            }
            Some(TapFeed::Channel(rx)) => match rx.poll_recv(cx) {
                Poll::Ready(x) => x,
                Poll::Pending => {
                    st.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            },
        };
        if next.is_none() {
            st.ended = true;
        }
        Poll::Ready(next)
    }

    fn ended(&self) -> bool {
        self.0.lock().map(|st| st.ended).unwrap_or(false)
    }

    /// Ends the body for good: drops its feed (the pump's pending or next send fails, and it
    /// stops) and wakes the connection task, which then finds an error in the body and drops
    /// the connection.
    fn cut(&self) {
        let (feed, waker) = match self.0.lock() {
            Ok(mut st) => (st.feed.take(), st.waker.take()),
            Err(_) => (None, None),
        };
        drop(feed);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// A streamed response body read synchronously: one `block_on` per chunk the connection
/// hands over, copied straight into the reader's buffer. A chunk that does not come within the
/// idle timeout fails the read.
struct BodyReader {
    rt: Arc<tokio::runtime::Runtime>,
    resp: reqwest::Response,
    /// What is left of the last chunk.
    chunk: Bytes,
    idle: Duration,
}

impl std::io::Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.chunk.is_empty() {
            let (resp, idle) = (&mut self.resp, self.idle);
            match self
                .rt
                .block_on(async { tokio::time::timeout(idle, resp.chunk()).await })
            {
                Ok(Ok(Some(c))) => self.chunk = c,
                Ok(Ok(None)) => return Ok(0),
                Ok(Err(e)) => return Err(std::io::Error::other(e)),
                Err(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        NetError::Timeout(idle_message(idle)).to_string(),
                    ))
                }
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        bytes::Buf::advance(&mut self.chunk, n);
        Ok(n)
    }
}

/// When bytes last moved on a request, for the idle watchdog.
struct Watch {
    start: Instant,
    last_ms: std::sync::atomic::AtomicU64,
}

impl Watch {
    fn new() -> Self {
        Watch {
            start: Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }
    fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last_ms
            .store(now, std::sync::atomic::Ordering::Relaxed);
    }
    fn idle(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(
            now.saturating_sub(self.last_ms.load(std::sync::atomic::Ordering::Relaxed)),
        )
    }
}

/// `90 s`, `1.5 s`.
fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// The producer of an upload, as the driver holds it.
struct Feed<'a> {
    rx: Arc<Mutex<Receiver<Data>>>,
    info: Option<LayerInfo>,
    restart: Option<Restart>,
    resume: Option<ResumeFile>,
    progress: &'a mut Progress,
}

/// State a streamed request body shares with the driver.
#[derive(Default)]
struct StreamShared {
    info: Option<LayerInfo>,
    err: Option<Error>,
    /// The producer sent its last bytes: nothing more to take from it.
    done: bool,
    /// Bytes were taken from the producer (after a cut, only a restart gives them again).
    pulled: bool,
    /// The body stopped at its limit, at this blob offset; `carry` holds the bytes taken from
    /// the producer beyond it, for the next segment.
    limit_at: Option<u64>,
    carry: VecDeque<Bytes>,
}

/// A request body that pulls the blob's chunks from the producer as the socket takes them.
struct StreamReader {
    first: VecDeque<Bytes>,
    skip: u64,
    rx: Arc<Mutex<Receiver<Data>>>,
    shared: Arc<Mutex<StreamShared>>,
    offset: u64,
    /// Bytes this body may still carry (the segment's limit).
    left: u64,
    progress: Progress,
}

impl StreamReader {
    /// The next piece of the body (whole chunks, no copy), `None` at the end.
    fn next_chunk(&mut self) -> std::io::Result<Option<Bytes>> {
        loop {
            if self.left == 0 {
                // the segment is full: what was taken beyond it waits for the next one
                let mut sh = self
                    .shared
                    .lock()
                    .map_err(|_| std::io::Error::other("lock"))?;
                sh.limit_at = Some(self.offset);
                sh.carry = std::mem::take(&mut self.first);
                return Ok(None);
            }
            if let Some(mut b) = self.first.pop_front() {
                if b.is_empty() {
                    continue;
                }
                if b.len() as u64 > self.left {
                    let rest = b.split_off(self.left as usize);
                    self.first.push_front(rest);
                }
                self.offset += b.len() as u64;
                self.left -= b.len() as u64;
                self.progress.set(self.offset);
                return Ok(Some(b));
            }
            let mut sh = self
                .shared
                .lock()
                .map_err(|_| std::io::Error::other("lock"))?;
            if sh.done {
                return Ok(None);
            }
            let msg = self
                .rx
                .lock()
                .map_err(|_| std::io::Error::other("lock"))?
                .recv();
            sh.pulled = true;
            let skip = &mut self.skip;
            let take = |b: Bytes, skip: &mut u64| -> Bytes {
                let k = (*skip).min(b.len() as u64) as usize;
                *skip -= k as u64;
                b.slice(k..)
            };
            match msg {
                Ok(Data::Chunk(b)) => self.first.push_back(take(b, skip)),
                Ok(Data::Done(rest, info)) => {
                    self.first.push_back(take(rest, skip));
                    sh.info = Some(info);
                    sh.done = true;
                }
                Ok(Data::Failed(e)) => {
                    sh.err = Some(e);
                    sh.done = true;
                    return Err(std::io::Error::other("the layer could not be built"));
                }
                Err(_) => return Err(std::io::Error::other("the layer builder stopped")),
            }
        }
    }
}

/// A blob download that continues where it was cut: a read that fails (a reset, a body cut
/// short, nothing received for the idle timeout) reopens the blob with `Range: bytes=N-` from
/// the byte it stopped at, after a backoff, as the core's [`Download`] decides; a registry that
/// ignores ranges sends the whole blob again and the bytes already read are dropped. The
/// caller still verifies the digest of everything it read, so a resumed download is checked
/// as a whole.
pub struct BlobReader {
    inner: BodyReader,
    opts: Options,
    reference: Reference,
    dl: Download,
}

impl std::fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobReader").field("dl", &self.dl).finish()
    }
}

impl BlobReader {
    fn skip(&mut self, mut n: u64) -> std::io::Result<()> {
        let mut buf = vec![0u8; 64 << 10];
        while n > 0 {
            let k = self.inner.read(&mut buf[..(n.min(64 << 10) as usize)])?;
            if k == 0 {
                return Err(std::io::Error::other(format!(
                    "the registry sent the blob again but it ended before byte {}",
                    self.dl.position()
                )));
            }
            n -= k as u64;
        }
        Ok(())
    }

    fn reopen(&mut self) -> crate::error::Result<()> {
        let mut c = Client::on(self.opts.clone(), Arc::clone(&self.inner.rt));
        let opened = c.run(&self.reference, self.dl.reopen())?;
        self.inner = c.take_stream()?;
        self.skip(opened.skip)?;
        Ok(())
    }
}

impl std::io::Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.inner.read(buf) {
                Ok(n) => {
                    self.dl.read(n as u64);
                    return Ok(n);
                }
                Err(e) => {
                    let mut why = error_chain(&e);
                    loop {
                        let again = self.dl.failed(&why).map_err(std::io::Error::other)?;
                        crate::ui::progress::warn(&again.event.to_string());
                        std::thread::sleep(Duration::from_millis(again.wait_ms));
                        match self.reopen() {
                            Ok(()) => break,
                            // counts another attempt
                            Err(e) => why = format!("reopening it failed: {e}"),
                        }
                    }
                }
            }
        }
    }
}
