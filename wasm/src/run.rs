//! The driver loop over the core's transfer kernel ([`Transfer`]), once for the page and the
//! Worker: what differs between them is a [`Transport`] (how a request goes out), a
//! [`Producer`] (where an upload's bytes come from) and a [`Hook`] (where events and progress
//! go).

use std::collections::HashMap;
use std::convert::Infallible;
use std::marker::PhantomData;

use futures_util::join;
use lamina_core::auth::Credentials;
use lamina_core::http::{Request, Response};
use lamina_core::reference::Reference;
use lamina_core::registry::{
    Action, Event, NetError, Op, Outgoing, Payload, Session, Sessions, Source, Transfer, Upload,
    UploadConfig,
};
use lamina_core::{Digest, Error};

use crate::js::{now_ms, sleep_ms};

/// How requests go out in one runtime.
#[allow(async_fn_in_trait)] // one thread: Send is not needed
pub trait Transport {
    /// A request body as this runtime sends it.
    type Body;
    /// A response body kept as a stream (a blob download).
    type Stream;
    /// A body of these bytes, in order (held pieces of a blob, a manifest).
    fn bytes_body(&self, parts: &[&[u8]]) -> Result<Self::Body, Error>;
    /// Sends `req` with `body` (redirects as the runtime handles them); a 2xx answer to a
    /// request that streams its response keeps its body as a stream.
    async fn send(
        &self,
        req: &Request,
        body: Option<Self::Body>,
    ) -> Result<(Response, Option<Self::Stream>), NetError>;
}

/// Bytes an upload's producer made, gathered into pieces of [`PIECE`] (codecs hand over small
/// slices).
#[derive(Debug, Default)]
pub struct Pieces {
    v: Vec<Vec<u8>>,
    len: u64,
}

/// Produced bytes are gathered into pieces of about this size.
pub const PIECE: usize = 1 << 20;

impl Pieces {
    /// Appends bytes, into the last piece while it has room.
    pub fn gather(&mut self, b: &[u8]) {
        self.len += b.len() as u64;
        if let Some(p) = lamina_core::registry::gather(self.v.last_mut(), b, PIECE) {
            self.v.push(p);
        }
    }

    /// Appends a piece as it is.
    pub fn push(&mut self, p: Vec<u8>) {
        if !p.is_empty() {
            self.len += p.len() as u64;
            self.v.push(p);
        }
    }

    /// Bytes in it.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn take(&mut self) -> Vec<Vec<u8>> {
        self.len = 0;
        std::mem::take(&mut self.v)
    }
}

/// Where an upload's bytes come from; what it can do is its [`Source`].
#[allow(async_fn_in_trait)]
pub trait Producer {
    /// The transport's body type ([`Producer::range`]).
    type Body;
    /// What the producer can do: the kernel decides from it what to hold, and whether an upload
    /// the registry lost can start over.
    fn source(&self) -> Source;
    /// Makes about `want` more bytes of the blob into `out` (fewer at its end), or finishes
    /// it; a [`Source::Seekable`] producer hashes `want` more bytes instead (it sends ranges).
    async fn produce(&mut self, out: &mut Pieces, want: u64) -> Result<(), Error>;
    /// [`Producer::produce`] while a request is on the wire (a producer may give the runtime
    /// turns meanwhile, so that the request goes on).
    async fn ahead(&mut self, out: &mut Pieces, want: u64) -> Result<(), Error> {
        self.produce(out, want).await
    }
    /// The blob's digest and size, once it is whole (made, or hashed).
    fn finished(&self) -> Option<(Digest, u64)>;
    /// Where the producer stands in the blob, when it keeps count itself (a seekable one: the
    /// bytes hashed); `None`: the bytes it handed over are the count.
    fn made(&self) -> Option<u64> {
        None
    }
    /// Input bytes read so far (for progress).
    fn read(&self) -> u64;
    /// Starts again from the blob's first byte ([`Source::Restartable`]).
    async fn restart(&mut self) -> Result<(), Error> {
        Err(Error::internal("this producer cannot start the blob again"))
    }
    /// Bytes `start..end` of the blob as a body ([`Source::Seekable`]).
    fn range(&self, start: u64, end: u64) -> Result<Self::Body, Error> {
        Err(Error::internal(format!(
            "bytes {start}..{end} asked of a producer that gives no ranges"
        )))
    }
}

/// The producer of operations that upload nothing (or bytes the kernel holds already).
#[derive(Debug)]
pub struct NoBlob<B>(PhantomData<B>);

impl<B> Default for NoBlob<B> {
    fn default() -> Self {
        NoBlob(PhantomData)
    }
}

impl<B> Producer for NoBlob<B> {
    type Body = B;
    fn source(&self) -> Source {
        Source::None
    }
    async fn produce(&mut self, _: &mut Pieces, _: u64) -> Result<(), Error> {
        Err(Error::internal(
            "the operation asked for upload bytes it has none of",
        ))
    }
    fn finished(&self) -> Option<(Digest, u64)> {
        None
    }
    fn read(&self) -> u64 {
        0
    }
}

/// Where a run's events and progress go (the page's log and bars, a job's status).
#[allow(async_fn_in_trait)]
pub trait Hook<P: ?Sized> {
    /// Something happened: its `Display` is the line to log; [`Event::Confirmed`] is how far
    /// the registry has the blob.
    async fn event(&self, e: &Event, p: &P);
    /// The producer made more; the registry has `confirmed` bytes.
    async fn produced(&self, _p: &P, _confirmed: u64) {}
    /// An upload with a producer ended (well or not), after `timing`.
    async fn ended(&self, _timing: &Timing) {}
}

/// No log, no progress.
impl<P: ?Sized> Hook<P> for () {
    async fn event(&self, _: &Event, _: &P) {}
}

/// Where an upload's time went.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Timing {
    /// In all (ms).
    pub total_ms: f64,
    /// Making bytes (ms).
    pub making_ms: f64,
    /// In requests (ms; the two overlap).
    pub requests_ms: f64,
}

impl core::fmt::Display for Timing {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "upload: {:.1}s in all, {:.1}s making bytes, {:.1}s in requests (the two overlap)",
            self.total_ms / 1000.0,
            self.making_ms / 1000.0,
            self.requests_ms / 1000.0
        )
    }
}

/// A run that failed: the error, and, when an operation on a registry failed, which one and
/// whether its last request got no answer at all (network, CORS).
#[derive(Debug)]
pub struct Failure {
    /// What went wrong.
    pub error: Error,
    /// The registry (as the reference names it) whose operation failed.
    pub registry: Option<String>,
    /// The last request got no answer.
    pub unanswered: bool,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure {
            error,
            registry: None,
            unanswered: false,
        }
    }
}

impl Failure {
    /// A job or a page asked for something that cannot be done ([`Error::Usage`]).
    pub fn usage(reason: impl Into<String>) -> Failure {
        Error::Usage {
            reason: reason.into(),
        }
        .into()
    }
}

impl core::fmt::Display for Failure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for Failure {}

/// Runs the core's operations over a [`Transport`], one session per registry, kept across
/// operations.
#[derive(Debug)]
pub struct Driver<X> {
    x: X,
    sessions: Sessions,
    creds: HashMap<String, Credentials>,
    t0: f64,
}

impl<X: Transport> Driver<X> {
    /// A driver sending with `x`, using `creds` (per registry, as references name it).
    pub fn new(x: X, creds: HashMap<String, Credentials>) -> Self {
        let t0 = now_ms();
        Driver {
            x,
            sessions: Sessions::new((t0 as u64) ^ 0x9E37_79B9_7F4A_7C15),
            creds,
            t0,
        }
    }

    /// The transport.
    pub fn transport(&self) -> &X {
        &self.x
    }

    fn now(&self) -> u64 {
        (now_ms() - self.t0).max(0.0) as u64
    }

    fn session(&mut self, r: &Reference) -> Session {
        let creds = self.creds.get(&r.registry).cloned().unwrap_or_default();
        match self
            .sessions
            .take(r, r.default_scheme(), || Ok::<_, Infallible>(creds))
        {
            Ok(s) => s,
            Err(e) => match e {},
        }
    }

    /// Runs `op` against `r`'s registry; returns its result and, for a streaming download, the
    /// body.
    pub async fn run<O: Op, H: Hook<NoBlob<X::Body>>>(
        &mut self,
        r: &Reference,
        op: O,
        hook: &H,
    ) -> Result<(O::Output, Option<X::Stream>), Failure> {
        let t = Transfer::new(self.session(r), op, Source::None);
        self.drive(
            r,
            t,
            &mut NoBlob::default(),
            0,
            hook,
            &mut Timing::default(),
        )
        .await
    }

    /// Uploads the blob `p` makes into `r`'s repository as `cfg` says (chunks of
    /// `cfg.chunk_max`, made one ahead while the last travels).
    pub async fn upload<P: Producer<Body = X::Body>, H: Hook<P>>(
        &mut self,
        r: &Reference,
        cfg: UploadConfig,
        p: &mut P,
        hook: &H,
    ) -> Result<Digest, Failure> {
        let t = Transfer::new(self.session(r), Upload::new(&r.repository, cfg), p.source());
        let t1 = now_ms();
        let mut timing = Timing::default();
        let out = self
            .drive(r, t, p, cfg.chunk_max.max(1), hook, &mut timing)
            .await;
        timing.total_ms = now_ms() - t1;
        hook.ended(&timing).await;
        out.map(|(d, _)| d)
    }

    /// Uploads small bytes (a config) in one request.
    pub async fn upload_bytes<H: Hook<NoBlob<X::Body>>>(
        &mut self,
        r: &Reference,
        bytes: Vec<u8>,
        hook: &H,
    ) -> Result<Digest, Failure> {
        let (t, digest) =
            Transfer::<Upload, _>::upload_bytes(self.session(r), &r.repository, bytes);
        self.drive(
            r,
            t,
            &mut NoBlob::default(),
            0,
            hook,
            &mut Timing::default(),
        )
        .await?;
        Ok(digest)
    }

    /// The loop of the kernel's driver contract (see [`Transfer`]).
    async fn drive<O: Op, P: Producer<Body = X::Body>, H: Hook<P>>(
        &mut self,
        r: &Reference,
        mut t: Transfer<O>,
        p: &mut P,
        want: u64,
        hook: &H,
        timing: &mut Timing,
    ) -> Result<(O::Output, Option<X::Stream>), Failure> {
        let mut out = Pieces::default();
        // the blob's end was reported (after a restart, not yet)
        let mut ended = false;
        let mut stream = None;
        // the last request got no answer
        let mut unanswered = false;
        let result: Result<O::Output, Failure> = loop {
            match t.poll(self.now()) {
                Action::Send(o) => {
                    let Outgoing {
                        request,
                        payload,
                        ahead,
                    } = o;
                    let body = match body(&self.x, &payload, p) {
                        Ok(b) => b,
                        Err(e) => break Err(e.into()),
                    };
                    let x = &self.x;
                    let send = async {
                        let t1 = now_ms();
                        let res = x.send(&request, body).await;
                        (res, now_ms() - t1)
                    };
                    // the next bytes are made while this request travels
                    let more = async {
                        let Some(to) = ahead else {
                            return (Ok(false), 0.0);
                        };
                        let t1 = now_ms();
                        let at = p.made().unwrap_or_else(|| t.produced_to());
                        let res = if at < to && p.finished().is_none() {
                            match p.ahead(&mut out, to - at).await {
                                Ok(()) => feed(&mut t, p, &mut out, &mut ended).map(|_| true),
                                Err(e) => Err(e),
                            }
                        } else {
                            Ok(false)
                        };
                        (res, now_ms() - t1)
                    };
                    let ((res, sent_ms), (made, made_ms)) = join!(send, more);
                    timing.requests_ms += sent_ms;
                    timing.making_ms += made_ms;
                    match made {
                        Ok(true) => hook.produced(p, confirmed(&t)).await,
                        Ok(false) => {}
                        Err(e) => break Err(e.into()),
                    }
                    unanswered = res.is_err();
                    let now = self.now();
                    let answered = match res {
                        Ok((resp, s)) => {
                            stream = s;
                            t.handle_response(now, resp)
                        }
                        Err(e) => t.handle_error(now, e),
                    };
                    if let Err(e) = answered {
                        break Err(e.into());
                    }
                }
                Action::Wait(until) => {
                    let now = self.now();
                    if until > now {
                        sleep_ms((until - now) as f64).await;
                    }
                }
                Action::Produce => {
                    let t1 = now_ms();
                    let made = match p.produce(&mut out, want).await {
                        Ok(()) => feed(&mut t, p, &mut out, &mut ended),
                        Err(e) => Err(e),
                    };
                    timing.making_ms += now_ms() - t1;
                    if let Err(e) = made {
                        break Err(e.into());
                    }
                    hook.produced(p, confirmed(&t)).await;
                }
                Action::Restart { .. } => {
                    let restarted = match p.restart().await {
                        Ok(()) => t.restarted(),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = restarted {
                        break Err(e.into());
                    }
                    out = Pieces::default();
                    ended = false;
                }
                Action::Event(e) => hook.event(&e, p).await,
                Action::Done(d) => {
                    break d.map_err(|error| Failure {
                        error,
                        registry: Some(r.registry.clone()),
                        unanswered,
                    })
                }
            }
        };
        self.sessions.put(r, t.into_session());
        result.map(|o| (o, stream))
    }
}

/// The bytes the registry has of the blob being uploaded.
fn confirmed<O: Op>(t: &Transfer<O>) -> u64 {
    t.op().as_upload().map_or(0, Upload::confirmed)
}

/// Hands the kernel what the producer made, and the blob's end once it is whole.
fn feed<O: Op, P: Producer>(
    t: &mut Transfer<O>,
    p: &P,
    out: &mut Pieces,
    ended: &mut bool,
) -> Result<(), Error> {
    for piece in out.take() {
        t.produced(piece)?;
    }
    if !*ended {
        if let Some((digest, size)) = p.finished() {
            t.produced_end(digest, size)?;
            *ended = true;
        }
    }
    Ok(())
}

/// A request's payload as the transport's body.
fn body<X: Transport, P: Producer<Body = X::Body>>(
    x: &X,
    payload: &Payload<'_, Vec<u8>>,
    p: &P,
) -> Result<Option<X::Body>, Error> {
    match payload {
        Payload::Empty => Ok(None),
        Payload::Bytes(b) => x.bytes_body(&[b]).map(Some),
        Payload::Held(parts) => {
            let parts: Vec<&[u8]> = parts.iter().map(|(p, r)| &p[r.clone()]).collect();
            x.bytes_body(&parts).map(Some)
        }
        Payload::Range { start, end } => p.range(*start, *end).map(Some),
        Payload::Stream { .. } => Err(Error::internal(
            "a streamed request body in WebAssembly (uploads here go in chunks)",
        )),
    }
}
