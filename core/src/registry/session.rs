//! Per-registry session state and the generic machine that runs an [`Op`] over it.

use crate::auth::{parse_challenge, Challenge, Credentials, Secret};
use crate::error::Error;
use crate::http::{add_query, resolve, split_url, Body, Method, Request, Response, SafeUrl};
use crate::reference::Scheme;

/// Most redirects followed for one request.
pub const MAX_REDIRECTS: u32 = 5;
/// Most attempts for one request that may be retried.
pub const MAX_ATTEMPTS: u32 = 5;
/// Longest a request is retried for, from its first failure (ms): a retry that would start
/// later is not made.
pub const MAX_RETRY_MS: u64 = 120_000;
/// Longest wait before one retry (ms): a `Retry-After` asking for more gives up at once (a retry
/// sooner than the registry asked would be refused again).
pub const MAX_RETRY_DELAY_MS: u64 = 60_000;
/// Response bodies the core reads by default (JSON answers, errors).
pub const SMALL_BODY: u64 = 1024 * 1024;

/// State shared by all operations against one registry: where it is, who we are, what it asked.
#[derive(Clone, Debug)]
pub struct Session {
    /// Host (and port) that serves the API.
    pub host: String,
    /// Scheme.
    pub scheme: Scheme,
    creds: Credentials,
    cog_username: Option<String>,
    pinged: bool,
    basic: bool,
    bearer: Option<(String, Option<String>)>,
    tokens: Vec<(String, Secret, Option<u64>)>,
    rng: u64,
    /// Never send `Authorization` (the ping showed the registry needs none).
    anonymous_ok: bool,
}

impl Session {
    /// A session for `host` (API host, with port) over `scheme`. `seed` feeds retry jitter (the
    /// core has no randomness of its own; any value works, a random one spreads retries).
    pub fn new(host: impl Into<String>, scheme: Scheme, creds: Credentials, seed: u64) -> Self {
        Session {
            host: host.into(),
            scheme,
            creds,
            cog_username: None,
            pinged: false,
            basic: false,
            bearer: None,
            tokens: Vec::new(),
            rng: seed | 1,
            anonymous_ok: false,
        }
    }

    /// Base URL, e.g. `https://r8.im`.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme.as_str(), self.host)
    }

    fn jitter(&mut self, max: u64) -> u64 {
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        if max == 0 {
            0
        } else {
            self.rng % max
        }
    }

    fn token_for(&self, key: &str, now: u64) -> Option<&Secret> {
        self.tokens
            .iter()
            .find(|(k, _, exp)| k == key && exp.is_none_or(|e| now < e))
            .map(|(_, t, _)| t)
    }

    fn auth_header(&self, scopes: &[String], now: u64) -> Option<String> {
        if let Credentials::Bearer(t) = &self.creds {
            return Some(format!("Bearer {}", t.expose()));
        }
        if self.bearer.is_some() {
            return self
                .token_for(&scope_key(scopes), now)
                .map(|t| format!("Bearer {}", t.expose()));
        }
        if self.basic {
            return self
                .basic_creds()
                .map(|(u, p)| Credentials::basic_header(&u, &p));
        }
        None
    }

    fn basic_creds(&self) -> Option<(String, Secret)> {
        match &self.creds {
            Credentials::Basic { username, password } => Some((username.clone(), password.clone())),
            Credentials::CogToken(t) => self.cog_username.clone().map(|u| (u, t.clone())),
            _ => None,
        }
    }
}

/// A driver's sessions: one per registry host, kept across operations (its tokens and what the
/// registry asked), each with its own jitter seed drawn from the driver's.
#[derive(Debug, Default)]
pub struct Sessions {
    map: std::collections::HashMap<String, Session>,
    seed: u64,
}

impl Sessions {
    /// No sessions yet; `seed` (a clock reading, a process id: anything that differs between
    /// runs) spreads retries of drivers that start together.
    pub fn new(seed: u64) -> Self {
        Sessions {
            map: Default::default(),
            seed,
        }
    }

    /// The session for `r`'s registry: the one kept from earlier operations, else a new one
    /// over `scheme` with the credentials `creds` looks up.
    pub fn take<E>(
        &mut self,
        r: &crate::reference::Reference,
        scheme: Scheme,
        creds: impl FnOnce() -> Result<Credentials, E>,
    ) -> Result<Session, E> {
        if let Some(s) = self.map.remove(&r.registry) {
            return Ok(s);
        }
        // an LCG step per session (Knuth's MMIX constants)
        self.seed = self
            .seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        Ok(Session::new(r.api_host(), scheme, creds()?, self.seed))
    }

    /// Keeps `s` for the next operation on `r`'s registry.
    pub fn put(&mut self, r: &crate::reference::Reference, s: Session) {
        self.map.insert(r.registry.clone(), s);
    }
}

fn scope_key(scopes: &[String]) -> String {
    let mut s: Vec<&str> = scopes.iter().map(String::as_str).collect();
    s.sort_unstable();
    s.dedup();
    s.join(" ")
}

/// A request an operation wants made; the machine adds auth, follows redirects and retries.
#[derive(Clone, Debug)]
pub struct Call {
    /// Method.
    pub method: Method,
    /// Path on the registry (`/v2/...`) or an absolute URL (upload locations).
    pub target: String,
    /// Headers (never `Authorization`).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Body,
    /// Token scopes this call needs (`repository:NAME:pull,push`).
    pub scopes: Vec<String>,
    /// Safe to send again after a network error or a 5xx.
    pub idempotent: bool,
    /// Most response bytes wanted.
    pub max_response_body: u64,
    /// Keep a 2xx body as a stream for the driver's caller (see [`crate::http::Request::stream_response`]).
    pub stream_response: bool,
    /// Wait this long (ms) before sending, and say why: an operation recovering from a failed
    /// request backs off as the machine's own retries do (`Retry-After` or exponential).
    pub wait_first: Option<(u64, String)>,
}

impl Call {
    /// A call with defaults (small response body; GET/HEAD/PUT are idempotent).
    pub fn new(method: Method, target: impl Into<String>, scopes: Vec<String>) -> Self {
        Call {
            method,
            target: target.into(),
            headers: Vec::new(),
            body: Body::Empty,
            scopes,
            idempotent: matches!(
                method,
                Method::Get | Method::Head | Method::Put | Method::Delete
            ),
            max_response_body: SMALL_BODY,
            stream_response: false,
            wait_first: None,
        }
    }
    /// Adds a header.
    pub fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.to_string(), v.into()));
        self
    }
    /// Sets the body.
    pub fn body(mut self, b: Body) -> Self {
        self.body = b;
        self
    }
}

/// What an operation does next.
#[derive(Debug)]
pub enum Step<T> {
    /// Make this call and give me its response.
    Call(Call),
    /// I need more upload data from the driver.
    NeedData,
    /// Finished.
    Done(T),
}

/// What a call ended with, as given to an operation.
pub type Outcome = Result<Response, String>;

/// Why a request got no response, as far as the driver can tell: typed, so the core decides what
/// retrying can fix (a certificate it does not trust will not become trusted) and errors say
/// what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NetError {
    /// Nothing was sent or received for the driver's idle timeout, or no connection came in
    /// its connect timeout.
    Timeout(String),
    /// The connection was reset, or closed in the middle of the exchange.
    Reset(String),
    /// Nothing listens there (connection refused).
    Refused(String),
    /// TLS failed on the server's certificate (untrusted issuer, expired, another name).
    Certificate(String),
    /// Anything else (name resolution, I/O).
    Other(String),
}

impl core::fmt::Display for NetError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            NetError::Timeout(m) => write!(f, "timed out: {m}"),
            NetError::Reset(m) => write!(f, "connection lost: {m}"),
            NetError::Refused(m) => write!(f, "connection refused: {m}"),
            NetError::Certificate(m) => write!(f, "certificate not accepted: {m}"),
            NetError::Other(m) => f.write_str(m),
        }
    }
}

impl From<String> for NetError {
    fn from(m: String) -> Self {
        NetError::Other(m)
    }
}

impl From<&str> for NetError {
    fn from(m: &str) -> Self {
        NetError::Other(m.to_string())
    }
}

/// One protocol operation. `step` is called first with `None`, then with the outcome of each
/// call it asked for (after auth, redirects and retries), or with `None` after new data.
/// Network errors reach the operation only for calls that are not idempotent.
pub trait Op {
    /// Result of the operation.
    type Output;
    /// Advances the operation.
    fn step(
        &mut self,
        outcome: Option<Outcome>,
        base_url: &str,
    ) -> Result<Step<Self::Output>, Error>;
    /// The blob upload this operation is, if it is one (it takes bytes from a producer).
    fn as_upload(&self) -> Option<&super::Upload> {
        None
    }
    /// See [`Op::as_upload`].
    fn as_upload_mut(&mut self) -> Option<&mut super::Upload> {
        None
    }
}

/// What the machine wants next (the [`super::Transfer`] kernel acts on it for the driver).
#[derive(Debug)]
pub(crate) enum Output<T> {
    /// Send this request and report its response or failure.
    Send(Request),
    /// Sleep until this time (ms, on the driver's clock), then poll.
    Wait(u64),
    /// The operation needs more upload data.
    NeedData,
    /// Something worth logging.
    Event(Event),
    /// The operation finished.
    Done(Result<T, Error>),
    /// A request is in flight: its response must be reported first.
    Pending,
}

/// Things that happened, for logs and progress. `Display` gives the line a driver logs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A request will be retried after a delay.
    Retrying {
        /// Why.
        reason: String,
        /// Attempt number that failed.
        attempt: u32,
        /// Delay in ms.
        delay_ms: u64,
    },
    /// A token was obtained for these scopes.
    Authenticated {
        /// Space-separated scopes.
        scopes: String,
    },
    /// A redirect was followed to this URL (credentials kept only on the same host).
    Redirected {
        /// Where to.
        to: SafeUrl,
    },
    /// A request got no response (the machine retries it, or the upload asks where it stands).
    RequestFailed {
        /// The URL.
        url: SafeUrl,
        /// What the driver reported.
        error: NetError,
    },
    /// The registry refused a chunk of an upload (HTTP 404 or 416: the connection was probably
    /// cut after part of it was stored, and the request was sent again); the upload goes on from
    /// the registry's offset.
    ChunkRefused {
        /// The status.
        status: u16,
    },
    /// The blob's bytes must be made again to send them from this offset (the registry lost
    /// the upload session, or a cut stream took bytes that are no longer held).
    MakingAgain {
        /// The offset sending starts from.
        from: u64,
    },
    /// The registry confirmed this much of the blob being uploaded, in this session: what
    /// progress shows, and what a state file records (a later run can go on from there).
    Confirmed {
        /// Bytes the registry has.
        bytes: u64,
        /// The upload session's URL.
        location: String,
    },
}

impl core::fmt::Display for Event {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Event::Retrying {
                reason,
                attempt,
                delay_ms,
            } => write!(
                f,
                "retrying ({attempt}) in {:.1}s: {reason}",
                *delay_ms as f64 / 1000.0
            ),
            Event::Authenticated { scopes } => write!(f, "authenticated for {scopes}"),
            Event::Redirected { to } => write!(f, "redirected to {to}"),
            Event::RequestFailed { url, error } => write!(f, "request failed: {url}: {error}"),
            Event::ChunkRefused { status } => write!(
                f,
                "the registry refused a chunk (HTTP {status}; the connection was probably cut \
                 and the request sent again): resuming from the registry's offset"
            ),
            Event::MakingAgain { from: 0 } => {
                f.write_str("the registry lost the upload: starting it over")
            }
            Event::MakingAgain { from } => write!(
                f,
                "making the layer again to send it from byte {from} ({} confirmed by the registry)",
                human(*from)
            ),
            Event::Confirmed { bytes, .. } => write!(f, "the registry has {}", human(*bytes)),
        }
    }
}

/// `16.0 MiB`, `512 B`: sizes in log lines.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

#[derive(Debug)]
enum Phase {
    /// Ask the op for its next step, giving it this outcome.
    Step(Option<Outcome>),
    /// Decide what to send for the current call.
    Prepare,
    /// Waiting for a response of this kind.
    Await(Awaiting),
    /// Sleeping until, then Prepare.
    Sleep(u64),
    /// The op asked for data.
    NeedData,
    Finished,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    Ping,
    Cog,
    Token,
    Main,
}

/// Runs one [`Op`] over a [`Session`]: auth, redirects, retries. Drivers use it through the
/// [`super::Transfer`] kernel.
#[derive(Debug)]
pub(crate) struct Machine<O: Op> {
    session: Session,
    op: O,
    phase: Phase,
    call: Option<Call>,
    url: String,
    foreign: bool,
    attempts: u32,
    /// when the current call first failed (ms), for [`MAX_RETRY_MS`]
    failing_since: Option<u64>,
    /// the registry asked to wait longer than [`MAX_RETRY_DELAY_MS`] (ms)
    asked_too_long: Option<u64>,
    redirects: u32,
    auth_retries: u32,
    events: Vec<Event>,
    done: Option<Result<O::Output, Error>>,
    last_url: String,
}

impl<O: Op> Machine<O> {
    /// Starts `op` on `session`.
    pub fn new(session: Session, op: O) -> Self {
        Machine {
            session,
            op,
            phase: Phase::Step(None),
            call: None,
            url: String::new(),
            foreign: false,
            attempts: 0,
            failing_since: None,
            asked_too_long: None,
            redirects: 0,
            auth_retries: 0,
            events: Vec::new(),
            done: None,
            last_url: String::new(),
        }
    }

    /// The operation (e.g. to give an upload more data).
    pub fn op_mut(&mut self) -> &mut O {
        &mut self.op
    }

    /// The operation.
    pub fn op(&self) -> &O {
        &self.op
    }

    /// Tells the machine that new data was made available after `Output::NeedData`.
    pub fn data_ready(&mut self) {
        if matches!(self.phase, Phase::NeedData) {
            self.phase = Phase::Step(None);
        }
    }

    /// The session back, with the tokens it gathered, for the next operation.
    pub fn into_session(self) -> Session {
        self.session
    }

    /// The next thing for the driver to do.
    pub fn poll(&mut self, now: u64) -> Output<O::Output> {
        loop {
            if let Some(e) = self.events.pop() {
                return Output::Event(e);
            }
            if let Some(d) = self.done.take() {
                self.phase = Phase::Finished;
                return Output::Done(d);
            }
            match std::mem::replace(&mut self.phase, Phase::Finished) {
                Phase::Finished => {
                    return Output::Done(Err(Error::Internal {
                        reason: "operation already finished".into(),
                    }));
                }
                Phase::NeedData => {
                    self.phase = Phase::NeedData;
                    return Output::NeedData;
                }
                Phase::Await(a) => {
                    self.phase = Phase::Await(a);
                    return Output::Pending;
                }
                Phase::Sleep(until) => {
                    if now < until {
                        self.phase = Phase::Sleep(until);
                        return Output::Wait(until);
                    }
                    self.phase = Phase::Prepare;
                }
                Phase::Step(outcome) => {
                    let base = self.session.base_url();
                    match self.op.step(outcome, &base) {
                        // an HTTP error names the whole URL, host included
                        Err(Error::Http {
                            method,
                            url,
                            status,
                            detail,
                        }) if url.expose().starts_with('/') => {
                            self.done = Some(Err(Error::Http {
                                method,
                                url: SafeUrl::new(format!("{base}{}", url.expose())),
                                status,
                                detail,
                            }))
                        }
                        Err(e) => self.done = Some(Err(e)),
                        Ok(Step::Done(v)) => self.done = Some(Ok(v)),
                        Ok(Step::NeedData) => self.phase = Phase::NeedData,
                        Ok(Step::Call(mut c)) => {
                            let wait = c.wait_first.take();
                            self.url = if c.target.contains("://") {
                                c.target.clone()
                            } else {
                                format!("{base}{}", c.target)
                            };
                            self.foreign = !same_authority(&self.url, &base);
                            self.call = Some(c);
                            self.attempts = 0;
                            self.failing_since = None;
                            self.redirects = 0;
                            self.auth_retries = 0;
                            self.phase = Phase::Prepare;
                            if let Some((ms, reason)) = wait {
                                let delay = ms.min(MAX_RETRY_DELAY_MS);
                                let delay = delay + self.session.jitter(delay / 4 + 1);
                                self.events.push(Event::Retrying {
                                    reason,
                                    attempt: 1,
                                    delay_ms: delay,
                                });
                                self.phase = Phase::Sleep(now + delay);
                            }
                        }
                    }
                }
                Phase::Prepare => return self.prepare(now),
            }
        }
    }

    fn prepare(&mut self, now: u64) -> Output<O::Output> {
        let Some(call) = &self.call else {
            self.phase = Phase::Step(None);
            return Output::Pending;
        };
        let s = &self.session;
        let needs_auth =
            !self.foreign && !s.anonymous_ok && !matches!(s.creds, Credentials::Bearer(_));
        // Ping first so a large body is never sent only to be answered 401.
        if needs_auth && !s.pinged {
            self.phase = Phase::Await(Awaiting::Ping);
            return Output::Send(self.request(
                Method::Get,
                format!("{}/v2/", s.base_url()),
                vec![],
                Body::Empty,
                SMALL_BODY,
            ));
        }
        if needs_auth {
            if let Some((realm, service)) = &s.bearer {
                let key = scope_key(&call.scopes);
                if s.token_for(&key, now).is_none() {
                    if let (Credentials::CogToken(t), None) = (&s.creds, &s.cog_username) {
                        let body = format!("token={}", crate::http::encode_query(t.expose()));
                        let mut r = self.request(
                            Method::Post,
                            format!("{}/cog/v1/verify-token", s.base_url()),
                            vec![(
                                "Content-Type".into(),
                                "application/x-www-form-urlencoded".into(),
                            )],
                            Body::Bytes(body.into_bytes()),
                            SMALL_BODY,
                        );
                        r.headers.push(("Accept".into(), "application/json".into()));
                        self.phase = Phase::Await(Awaiting::Cog);
                        return Output::Send(r);
                    }
                    let mut url = realm.clone();
                    if let Some(sv) = service {
                        url = add_query(&url, "service", sv);
                    }
                    for sc in &call.scopes {
                        url = add_query(&url, "scope", sc);
                    }
                    let mut headers = vec![("Accept".into(), "application/json".into())];
                    if let Some((u, p)) = s.basic_creds() {
                        headers.push(("Authorization".into(), Credentials::basic_header(&u, &p)));
                    }
                    self.phase = Phase::Await(Awaiting::Token);
                    let mut r = self.request(Method::Get, url, vec![], Body::Empty, SMALL_BODY);
                    r.headers = headers;
                    return Output::Send(r);
                }
            }
        }
        let mut headers = call.headers.clone();
        if !self.foreign {
            if let Some(a) = s.auth_header(&call.scopes, now) {
                headers.push(("Authorization".into(), a));
            }
        }
        let (method, body, max, stream) = (
            call.method,
            call.body.clone(),
            call.max_response_body,
            call.stream_response,
        );
        self.phase = Phase::Await(Awaiting::Main);
        let mut r = self.request(method, self.url.clone(), headers, body, max);
        r.stream_response = stream;
        Output::Send(r)
    }

    fn request(
        &mut self,
        method: Method,
        url: String,
        headers: Vec<(String, String)>,
        body: Body,
        max: u64,
    ) -> Request {
        self.last_url = url.clone();
        Request {
            method,
            url,
            headers,
            body,
            max_response_body: max,
            stream_response: false,
        }
    }

    fn fail(&mut self, e: Error) {
        self.done = Some(Err(e));
        self.phase = Phase::Finished;
    }

    fn auth_error(&self, reason: impl Into<String>) -> Error {
        Error::Auth {
            registry: self.session.host.clone(),
            reason: reason.into(),
        }
    }

    /// Schedules a retry if attempts and time remain; returns false if not. The delay doubles
    /// from 250 ms (to at most 8 s) plus up to half again of jitter, or is what `Retry-After`
    /// asked (at most [`MAX_RETRY_DELAY_MS`]).
    fn retry(&mut self, now: u64, reason: String, retry_after_ms: Option<u64>) -> bool {
        self.attempts += 1;
        if self.attempts >= MAX_ATTEMPTS {
            return false;
        }
        let since = *self.failing_since.get_or_insert(now);
        if let Some(ra) = retry_after_ms.filter(|ra| *ra > MAX_RETRY_DELAY_MS) {
            self.asked_too_long = Some(ra);
            return false;
        }
        let delay = retry_after_ms.unwrap_or_else(|| {
            let base = backoff_ms(self.attempts);
            base + self.session.jitter(base / 2 + 1)
        });
        if now + delay > since + MAX_RETRY_MS {
            return false;
        }
        self.events.push(Event::Retrying {
            reason,
            attempt: self.attempts,
            delay_ms: delay,
        });
        self.phase = Phase::Sleep(now + delay);
        true
    }

    /// Feeds the response to the request last returned by [`Machine::poll`].
    pub fn handle_response(&mut self, now: u64, resp: Response) {
        let awaiting = match &self.phase {
            Phase::Await(a) => *a,
            _ => return,
        };
        match awaiting {
            Awaiting::Ping => {
                self.session.pinged = true;
                match resp.status {
                    200..=299 => {
                        self.session.anonymous_ok = true;
                        self.phase = Phase::Prepare;
                    }
                    401 => match self.learn_challenge(&resp) {
                        Ok(()) => self.phase = Phase::Prepare,
                        Err(e) => self.fail(e),
                    },
                    s if is_retryable(s) => {
                        self.session.pinged = false;
                        if !self.retry(now, format!("GET /v2/: HTTP {s}"), retry_after(&resp)) {
                            let e = http_error(Method::Get, &self.last_url, &resp);
                            self.fail(e);
                        }
                    }
                    _ => {
                        let e = http_error(Method::Get, &self.last_url, &resp);
                        self.fail(e);
                    }
                }
            }
            Awaiting::Cog => {
                #[derive(serde::Deserialize)]
                struct V {
                    username: String,
                }
                if resp.status == 404 {
                    let e = self.auth_error(format!(
                        "{} has no Cog token endpoint (HTTP 404 for /cog/v1/verify-token): a \
                         Cog token (--token, COG_TOKEN) works only with Replicate's registry; \
                         give --username/--password or log in instead",
                        self.session.host
                    ));
                    return self.fail(e);
                }
                if resp.status != 200 {
                    let e = self.auth_error(format!(
                        "the Cog token was refused by {} (HTTP {}); check --token or COG_TOKEN",
                        self.session.host, resp.status
                    ));
                    return self.fail(e);
                }
                match serde_json::from_slice::<V>(&resp.body) {
                    Ok(v) => {
                        self.session.cog_username = Some(v.username);
                        self.phase = Phase::Prepare;
                    }
                    Err(_) => {
                        let e = self.auth_error("the Cog token check answered without a username");
                        self.fail(e)
                    }
                }
            }
            Awaiting::Token => {
                if is_retryable(resp.status) {
                    if !self.retry(
                        now,
                        format!("token request: HTTP {}", resp.status),
                        retry_after(&resp),
                    ) {
                        let e =
                            self.auth_error(format!("token server answered HTTP {}", resp.status));
                        self.fail(e);
                    }
                    return;
                }
                if resp.status == 401 || resp.status == 403 {
                    let e = self.auth_error(match self.session.creds {
                        Credentials::Anonymous => {
                            "the token server refused anonymous access; give credentials"
                                .to_string()
                        }
                        _ => format!(
                            "the token server refused the credentials (HTTP {})",
                            resp.status
                        ),
                    });
                    return self.fail(e);
                }
                #[derive(serde::Deserialize)]
                struct T {
                    token: Option<String>,
                    access_token: Option<String>,
                    expires_in: Option<u64>,
                }
                let t: Option<T> = if resp.status == 200 {
                    serde_json::from_slice(&resp.body).ok()
                } else {
                    None
                };
                let Some(t) = t else {
                    let e = self.auth_error(format!(
                        "token server answered HTTP {} without a JSON token",
                        resp.status
                    ));
                    return self.fail(e);
                };
                let Some(tok) = t.token.or(t.access_token).filter(|t| !t.is_empty()) else {
                    let e = self.auth_error("token answer holds no token");
                    return self.fail(e);
                };
                let scopes = self
                    .call
                    .as_ref()
                    .map(|c| scope_key(&c.scopes))
                    .unwrap_or_default();
                // expire a little early; default lifetime 60 s as the token spec says
                let ttl = t.expires_in.unwrap_or(60).max(10);
                let exp = now + (ttl - ttl.min(5)) * 1000;
                self.session.tokens.retain(|(k, _, _)| k != &scopes);
                self.session
                    .tokens
                    .push((scopes.clone(), Secret::new(tok), Some(exp)));
                self.events.push(Event::Authenticated { scopes });
                self.phase = Phase::Prepare;
            }
            Awaiting::Main => self.handle_main(now, resp),
        }
    }

    fn learn_challenge(&mut self, resp: &Response) -> Result<(), Error> {
        let ch = resp
            .headers_named("www-authenticate")
            .filter_map(parse_challenge)
            .min_by_key(|c| match c {
                Challenge::Bearer { .. } => 0,
                Challenge::Basic => 1,
            });
        match ch {
            Some(Challenge::Bearer { realm, service, .. }) => {
                if !realm.starts_with("http://") && !realm.starts_with("https://") {
                    return Err(
                        self.auth_error(format!("token realm {realm:?} is not an http(s) URL"))
                    );
                }
                self.session.bearer = Some((realm, service));
                Ok(())
            }
            Some(Challenge::Basic) => {
                if self.session.basic_creds().is_none()
                    && !matches!(self.session.creds, Credentials::CogToken(_))
                {
                    return Err(self.auth_error(
                        "the registry requires a username and password, and none were given for it",
                    ));
                }
                if matches!(self.session.creds, Credentials::CogToken(_))
                    && self.session.cog_username.is_none()
                {
                    return Err(self.auth_error(
                        "the registry asked for Basic auth; a Cog token needs a Bearer token flow",
                    ));
                }
                self.session.basic = true;
                Ok(())
            }
            None => Err(self.auth_error("HTTP 401 without a usable WWW-Authenticate challenge")),
        }
    }

    fn handle_main(&mut self, now: u64, resp: Response) {
        let Some(call) = self.call.clone() else {
            return;
        };
        let status = resp.status;
        if status == 401 && !self.foreign {
            self.auth_retries += 1;
            let had_auth = self.session.auth_header(&call.scopes, now).is_some();
            if self.auth_retries > 2 || (had_auth && self.auth_retries > 1 && self.session.basic) {
                let anonymous = matches!(self.session.creds, Credentials::Anonymous);
                let e = self.auth_error(format!(
                    "{} {} was refused (HTTP 401){}",
                    call.method,
                    SafeUrl::new(self.url.clone()),
                    if anonymous {
                        ": anonymous access was refused; log in (lamina login HOST) or give \
                         credentials for this registry"
                    } else if had_auth {
                        " although credentials were sent: they are wrong or lack access"
                    } else {
                        ""
                    }
                ));
                return self.fail(e);
            }
            // a token that was refused (expired, or too narrow) is dropped and fetched again
            let key = scope_key(&call.scopes);
            self.session.tokens.retain(|(k, _, _)| k != &key);
            self.session.anonymous_ok = false;
            match self.learn_challenge(&resp) {
                Ok(()) => self.phase = Phase::Prepare,
                Err(e) => self.fail(e),
            }
            return;
        }
        if matches!(status, 301 | 302 | 303 | 307 | 308)
            && matches!(call.method, Method::Get | Method::Head)
        {
            if let Some(loc) = resp.header("location") {
                self.redirects += 1;
                if self.redirects > MAX_REDIRECTS {
                    return self.fail(Error::Protocol {
                        reason: format!(
                            "more than {MAX_REDIRECTS} redirects for {} {}",
                            call.method, call.target
                        ),
                    });
                }
                let to = resolve(&self.url, loc);
                if !to.starts_with("http://") && !to.starts_with("https://") {
                    return self.fail(Error::Protocol {
                        reason: format!("redirect to a non-http URL {to:?}"),
                    });
                }
                let base = self.session.base_url();
                self.foreign = !same_authority(&to, &base);
                self.events.push(Event::Redirected {
                    to: SafeUrl::new(to.clone()),
                });
                self.url = to;
                self.phase = Phase::Prepare;
                return;
            }
        }
        if is_retryable(status) && call.idempotent {
            if !self.retry(
                now,
                format!(
                    "{} {}: HTTP {status}",
                    call.method,
                    SafeUrl::new(self.url.clone())
                ),
                retry_after(&resp),
            ) {
                let last = http_error(call.method, &self.url, &resp);
                let e = match self.asked_too_long {
                    Some(ms) => Error::Protocol {
                        reason: format!(
                            "{last}; the registry asked to try again in {} s, longer than lamina waits ({} s): try again later",
                            ms / 1000,
                            MAX_RETRY_DELAY_MS / 1000
                        ),
                    },
                    None => Error::RetriesExhausted {
                        attempts: self.attempts,
                        last: Box::new(last),
                    },
                };
                self.fail(e);
            }
            return;
        }
        self.phase = Phase::Step(Some(Ok(resp)));
    }

    /// Reports that the request last returned by [`Machine::poll`] failed without a response.
    /// A [`NetError::Certificate`] ends the operation at once ([`Error::Tls`] naming the host it
    /// was for); the other kinds are retried when the request is safe to repeat, else handed
    /// to the operation (an upload asks where it stands). A plain `String` is
    /// [`NetError::Other`].
    pub fn handle_error(&mut self, now: u64, error: impl Into<NetError>) {
        let awaiting = match &self.phase {
            Phase::Await(a) => *a,
            _ => return,
        };
        let error = match error.into() {
            NetError::Certificate(reason) => {
                let host = split_url(&self.last_url)
                    .map(|(_, authority, _)| authority.to_string())
                    .unwrap_or_else(|| self.session.host.clone());
                return self.fail(Error::Tls { host, reason });
            }
            other => other.to_string(),
        };
        let idempotent =
            awaiting != Awaiting::Main || self.call.as_ref().is_some_and(|c| c.idempotent);
        if idempotent {
            if awaiting == Awaiting::Ping {
                self.session.pinged = false;
            }
            let url = SafeUrl::new(self.last_url.clone());
            if !self.retry(now, format!("{url}: {error}"), None) {
                let e = Error::RetriesExhausted {
                    attempts: self.attempts,
                    last: Box::new(Error::Protocol {
                        reason: format!("{url}: {error}"),
                    }),
                };
                self.fail(e);
            }
        } else {
            self.phase = Phase::Step(Some(Err(error)));
        }
    }
}

fn same_authority(a: &str, b: &str) -> bool {
    match (split_url(a), split_url(b)) {
        (Some((sa, aa, _)), Some((sb, ab, _))) => sa == sb && aa.eq_ignore_ascii_case(ab),
        _ => false,
    }
}

/// The wait before retry number `attempt` (1-based) without jitter: 250 ms doubling, at most
/// 8 s.
pub fn backoff_ms(attempt: u32) -> u64 {
    (250u64 << attempt.saturating_sub(1).min(6)).min(8_000)
}

fn is_retryable(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// A `Retry-After` in seconds, as ms (an HTTP date is not understood: the core has no clock
/// of the wall, so the usual backoff applies).
pub(crate) fn retry_after(resp: &Response) -> Option<u64> {
    let v = resp.header("retry-after")?;
    v.trim().parse::<u64>().ok().map(|s| s.min(86_400) * 1000)
}

/// An error for an unexpected HTTP status, with the registry's error codes.
pub fn http_error(method: Method, url: &str, resp: &Response) -> Error {
    Error::Http {
        method: method.to_string(),
        url: SafeUrl::new(url),
        status: resp.status,
        detail: resp.error_detail(),
    }
}
