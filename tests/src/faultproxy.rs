//! A fault-injecting HTTP/1.1 proxy for the end-to-end tests: it listens on 127.0.0.1, forwards
//! requests to a real registry (or token server), and breaks chosen exchanges the way networks and
//! registries break: connections reset part-way through a request body or a response, 5xx and
//! 429 answers, 416 on a chunk, slow answers, bodies cut short, a `Docker-Content-Digest` that
//! does not match, redirects, and answers it makes up itself (a lying registry).
//!
//! Every request is logged (method, path, headers, body size, and small bodies in full), so a
//! test can count the bytes sent again after a fault, or look for credentials where they must not
//! be. Each connection upstream carries one request (`Connection: close`); the client side keeps
//! its connection alive as long as the answer's length is known.
//!
//! ```no_run
//! use lamina_tests::faultproxy::{Action, FaultProxy, Rule};
//! let p = FaultProxy::start("127.0.0.1:5100");
//! p.add(Rule::new("PATCH", "/blobs/uploads/").nth(2).action(Action::Status(503)));
//! // ... run lamina against p.addr() ...
//! assert!(p.requests().iter().any(|r| r.status == 503));
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Request bodies up to this size are kept in the log in full.
pub const LOGGED_BODY: usize = 64 * 1024;

/// What to do with a matching exchange.
#[derive(Clone, Debug)]
pub enum Action {
    /// Answer this status with no body and never forward the request.
    Status(u16),
    /// Answer this status with `Retry-After: <secs>`, never forwarding.
    RetryAfter(u16, u64),
    /// Answer with these status, headers and body, never forwarding.
    Respond(u16, Vec<(String, String)>, Vec<u8>),
    /// Answer this status and headers, and claim a `Content-Length` of `.2` bytes, then send zero
    /// bytes for as long as the client reads (a registry that would send without end).
    Endless(u16, Vec<(String, String)>, u64),
    /// Read this many bytes of the request body, forward nothing, and reset the connection (a
    /// connection lost between the client and a buffering front end such as nginx).
    ResetRequestBuffered(u64),
    /// Forward the request, but cut both connections after this many bytes of its body (the
    /// registry sees a request cut short).
    ResetRequestForwarded(u64),
    /// Forward the exchange, then cut the connection after this many bytes of the response body
    /// (the head is sent whole).
    ResetResponse(u64),
    /// Forward the exchange, wait this long before answering.
    Delay(Duration),
    /// Forward the exchange, replacing the `Docker-Content-Digest` header with a wrong one.
    WrongDigest,
    /// Forward the exchange, replacing `.1` by `.2` in the value of the response header `.0`.
    RewriteHeader(String, String, String),
    /// Answer `302` to this URL, with `{path}` replaced by the request's path and query.
    Redirect(String),
    /// Read the request body, then answer nothing for this long and drop the connection (a
    /// hung registry; a test kills its client meanwhile).
    Stall(Duration),
    /// Read this many bytes of the request body, then answer this status at once (with
    /// `Connection: close`) while the client is still sending, stop reading, and close the
    /// connection a second later (nginx refusing a body that is too large; a front end giving
    /// up on a client whose link dropped).
    AnswerEarly(u16, u64),
    /// Read this many bytes of the request body, then stop reading and hold the connection open
    /// for this long before resetting it (a stalled server: the client's writes block).
    StopReading(u64, Duration),
    /// Forward the exchange, send the answer's head and this many bytes of its body, then send
    /// nothing for this long and reset (a download that stalls).
    StallResponse(u64, Duration),
    /// Forward the exchange, reading the request's body at most this many bytes a second (one
    /// TCP stream over a long path: what parallel uploads are for).
    Throttle(u64),
    /// Forward the request without its `Range` header (a front end or registry that ignores
    /// ranges: the answer is `200` with the whole blob).
    IgnoreRange,
}

/// When a rule applies: method, a substring of the path (with query), which matches to skip and
/// how many to break.
#[derive(Clone, Debug)]
pub struct Rule {
    method: String,
    path_contains: String,
    skip: u32,
    times: u32,
    action: Action,
}

impl Rule {
    /// A rule for requests with `method` (or `*`) whose path contains `path_contains`; by
    /// default it breaks the first match only, with a 500.
    pub fn new(method: &str, path_contains: &str) -> Self {
        Rule {
            method: method.to_string(),
            path_contains: path_contains.to_string(),
            skip: 0,
            times: 1,
            action: Action::Status(500),
        }
    }
    /// Let the first `n - 1` matches through; break the `n`th (1-based).
    pub fn nth(mut self, n: u32) -> Self {
        self.skip = n.saturating_sub(1);
        self
    }
    /// Break this many matches in a row (`u32::MAX` for all).
    pub fn times(mut self, n: u32) -> Self {
        self.times = n;
        self
    }
    /// What to do.
    pub fn action(mut self, a: Action) -> Self {
        self.action = a;
        self
    }
    fn matches(&self, method: &str, path: &str) -> bool {
        (self.method == "*" || self.method.eq_ignore_ascii_case(method))
            && path.contains(&self.path_contains)
    }
}

/// One request as the proxy saw it.
#[derive(Clone, Debug)]
pub struct Logged {
    /// Method.
    pub method: String,
    /// Path with query.
    pub path: String,
    /// Request headers as received.
    pub headers: Vec<(String, String)>,
    /// Body bytes received from the client.
    pub body_bytes: u64,
    /// The body, when at most [`LOGGED_BODY`] bytes.
    pub body: Vec<u8>,
    /// Status answered (0 when the connection was cut before an answer).
    pub status: u16,
    /// When the request arrived.
    pub at: std::time::Instant,
    /// Whether its body arrived whole.
    pub body_complete: bool,
    /// The start of the answer's body (at most [`LOGGED_BODY`] bytes), for answers forwarded.
    pub response_body: Vec<u8>,
    /// The fault applied, if any.
    pub fault: Option<String>,
}

impl Logged {
    /// A request header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    log: Vec<Logged>,
    /// Response body bytes sent to clients.
    sent: u64,
}

/// The running proxy; it stops accepting when the test process ends.
#[derive(Clone)]
pub struct FaultProxy {
    addr: String,
    upstream: String,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FaultProxy({} -> {})", self.addr, self.upstream)
    }
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port in front of `upstream` (`host:port`).
    pub fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let p = FaultProxy {
            addr,
            upstream: upstream.to_string(),
            state: Arc::new(Mutex::new(State::default())),
        };
        let q = p.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let q = q.clone();
                std::thread::spawn(move || {
                    let _ = q.serve(conn);
                });
            }
        });
        p
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Adds a rule (rules are tried in the order added; the first that matches and still has
    /// faults to give applies).
    pub fn add(&self, r: Rule) -> &Self {
        self.lock().rules.push(r);
        self
    }

    /// Removes all rules.
    pub fn clear(&self) {
        self.lock().rules.clear();
    }

    /// The requests seen so far.
    pub fn requests(&self) -> Vec<Logged> {
        self.lock().log.clone()
    }

    /// Response body bytes sent to clients so far.
    pub fn response_bytes(&self) -> u64 {
        self.lock().sent
    }

    /// Forgets the log.
    pub fn clear_log(&self) {
        self.lock().log.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pick(&self, method: &str, path: &str) -> Option<Action> {
        let mut st = self.lock();
        for r in st.rules.iter_mut() {
            if r.times == 0 || !r.matches(method, path) {
                continue;
            }
            if r.skip > 0 {
                r.skip -= 1;
                continue;
            }
            r.times -= 1;
            return Some(r.action.clone());
        }
        None
    }

    fn record(&self, l: Logged) -> usize {
        let mut st = self.lock();
        st.log.push(l);
        st.log.len() - 1
    }

    fn set_status(&self, i: usize, status: u16) {
        if let Some(l) = self.lock().log.get_mut(i) {
            l.status = status;
        }
    }

    fn set_complete(&self, i: usize, whole: bool) {
        if let Some(l) = self.lock().log.get_mut(i) {
            l.body_complete = whole;
        }
    }

    fn add_body(&self, i: usize, n: u64, bytes: &[u8]) {
        if let Some(l) = self.lock().log.get_mut(i) {
            l.body_bytes += n;
            if l.body.len() + bytes.len() <= LOGGED_BODY {
                l.body.extend_from_slice(bytes);
            }
        }
    }

    fn add_response(&self, i: usize, bytes: &[u8]) {
        if let Some(l) = self.lock().log.get_mut(i) {
            let room = LOGGED_BODY.saturating_sub(l.response_body.len());
            l.response_body
                .extend_from_slice(&bytes[..room.min(bytes.len())]);
        }
    }

    fn add_sent(&self, n: u64) {
        self.lock().sent += n;
    }

    /// Serves one client connection (several requests while it stays alive).
    fn serve(&self, conn: TcpStream) -> std::io::Result<()> {
        let mut client = BufReader::new(conn.try_clone()?);
        let mut out = conn;
        loop {
            let Some(head) = read_head(&mut client)? else {
                return Ok(());
            };
            let keep = self.exchange(&head, &mut client, &mut out)?;
            if !keep {
                let _ = out.shutdown(Shutdown::Both);
                return Ok(());
            }
        }
    }

    /// One request/response; returns whether the client connection can carry another.
    fn exchange(
        &self,
        head: &Head,
        client: &mut BufReader<TcpStream>,
        out: &mut TcpStream,
    ) -> std::io::Result<bool> {
        let action = self.pick(&head.method, &head.path);
        let i = self.record(Logged {
            method: head.method.clone(),
            path: head.path.clone(),
            headers: head.headers.clone(),
            body_bytes: 0,
            body: Vec::new(),
            status: 0,
            at: std::time::Instant::now(),
            body_complete: false,
            response_body: Vec::new(),
            fault: action.as_ref().map(|a| format!("{a:?}")),
        });
        let framing = head.request_framing();
        // answers made up here: the body is read (or not) and never forwarded
        let made_up = match &action {
            Some(Action::Status(s)) => Some((*s, vec![], vec![])),
            Some(Action::RetryAfter(s, secs)) => Some((
                *s,
                vec![("Retry-After".to_string(), secs.to_string())],
                vec![],
            )),
            Some(Action::Respond(s, h, b)) => Some((*s, h.clone(), b.clone())),
            Some(Action::Redirect(to)) => Some((
                302,
                vec![("Location".to_string(), to.replace("{path}", &head.path))],
                vec![],
            )),
            _ => None,
        };
        if let Some((status, headers, body)) = made_up {
            let mut sink = std::io::sink();
            let whole = relay_body(client, &mut sink, framing, None, |n, b| {
                self.add_body(i, n, b)
            })?;
            self.set_complete(i, whole);
            self.set_status(i, status);
            let mut h = format!("HTTP/1.1 {status} {}\r\n", reason(status));
            for (k, v) in &headers {
                h.push_str(&format!("{k}: {v}\r\n"));
            }
            h.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            out.write_all(h.as_bytes())?;
            if head.method != "HEAD" {
                out.write_all(&body)?;
                self.add_sent(body.len() as u64);
            }
            out.flush()?;
            return Ok(true);
        }
        if let Some(Action::Endless(status, headers, claimed)) = &action {
            let mut sink = std::io::sink();
            relay_body(client, &mut sink, framing, None, |n, b| {
                self.add_body(i, n, b)
            })?;
            self.set_status(i, *status);
            let mut h = format!("HTTP/1.1 {status} {}\r\n", reason(*status));
            for (k, v) in headers {
                h.push_str(&format!("{k}: {v}\r\n"));
            }
            h.push_str(&format!("Content-Length: {claimed}\r\n\r\n"));
            out.write_all(h.as_bytes())?;
            let zeros = vec![b' '; 64 * 1024];
            let mut left = *claimed;
            while left > 0 {
                let n = left.min(zeros.len() as u64) as usize;
                if out.write_all(&zeros[..n]).is_err() {
                    break;
                }
                self.add_sent(n as u64);
                left -= n as u64;
            }
            return Ok(false);
        }
        if let Some(Action::Stall(d)) = &action {
            let mut sink = std::io::sink();
            let whole = relay_body(client, &mut sink, framing, None, |n, b| {
                self.add_body(i, n, b)
            })?;
            self.set_complete(i, whole);
            std::thread::sleep(*d);
            reset(out);
            return Ok(false);
        }
        if let Some(Action::AnswerEarly(status, n)) = &action {
            let mut sink = std::io::sink();
            let _ = relay_body(client, &mut sink, framing, Some(*n), |k, b| {
                self.add_body(i, k, b)
            });
            self.set_status(i, *status);
            let _ = out.write_all(
                format!(
                    "HTTP/1.1 {status} Early\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            );
            let _ = out.flush();
            std::thread::sleep(Duration::from_secs(1));
            reset(out);
            return Ok(false);
        }
        if let Some(Action::StopReading(n, d)) = &action {
            let mut sink = std::io::sink();
            let _ = relay_body(client, &mut sink, framing, Some(*n), |k, b| {
                self.add_body(i, k, b)
            });
            std::thread::sleep(*d);
            reset(out);
            return Ok(false);
        }
        if let Some(Action::ResetRequestBuffered(n)) = &action {
            let mut sink = std::io::sink();
            let _ = relay_body(client, &mut sink, framing, Some(*n), |k, b| {
                self.add_body(i, k, b)
            });
            reset(out);
            return Ok(false);
        }

        // forward
        let mut up = TcpStream::connect(&self.upstream)?;
        up.set_nodelay(true)?;
        let mut h = format!("{} {} HTTP/1.1\r\n", head.method, head.path);
        for (k, v) in &head.headers {
            if k.eq_ignore_ascii_case("connection") || k.eq_ignore_ascii_case("keep-alive") {
                continue;
            }
            if k.eq_ignore_ascii_case("range") && matches!(action, Some(Action::IgnoreRange)) {
                continue;
            }
            h.push_str(&format!("{k}: {v}\r\n"));
        }
        h.push_str("Connection: close\r\n\r\n");
        up.write_all(h.as_bytes())?;
        let cut = match &action {
            Some(Action::ResetRequestForwarded(n)) => Some(*n),
            _ => None,
        };
        let rate = match &action {
            Some(Action::Throttle(r)) => Some(*r as f64),
            _ => None,
        };
        let t0 = std::time::Instant::now();
        let mut moved = 0u64;
        let complete = {
            let mut w = std::io::BufWriter::with_capacity(256 * 1024, &mut up);
            let r = relay_body(client, &mut w, framing, cut, |n, b| {
                self.add_body(i, n, b);
                moved += n;
                if let Some(rate) = rate {
                    let due = Duration::from_secs_f64(moved as f64 / rate);
                    if let Some(wait) = due.checked_sub(t0.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
            })?;
            w.flush()?;
            r
        };
        self.set_complete(i, complete);
        if !complete {
            reset(&up);
            reset(out);
            return Ok(false);
        }
        let mut upr = BufReader::with_capacity(256 * 1024, up);
        let Some(mut resp) = read_status_head(&mut upr)? else {
            reset(out);
            return Ok(false);
        };
        self.set_status(i, resp.status);
        match &action {
            Some(Action::Delay(d)) => std::thread::sleep(*d),
            Some(Action::WrongDigest) => {
                for (k, v) in resp.headers.iter_mut() {
                    if k.eq_ignore_ascii_case("docker-content-digest") {
                        *v = "sha256:0000000000000000000000000000000000000000000000000000000000000bad"
                            .to_string();
                    }
                }
            }
            Some(Action::RewriteHeader(name, from, to)) => {
                for (k, v) in resp.headers.iter_mut() {
                    if k.eq_ignore_ascii_case(name) {
                        *v = v.replace(from.as_str(), to);
                    }
                }
            }
            _ => {}
        }
        let framing = resp.framing(&head.method);
        let keep = !matches!(framing, Framing::UntilClose);
        let mut h = format!("HTTP/1.1 {} {}\r\n", resp.status, resp.reason);
        for (k, v) in &resp.headers {
            if k.eq_ignore_ascii_case("connection") && keep {
                continue;
            }
            h.push_str(&format!("{k}: {v}\r\n"));
        }
        h.push_str("\r\n");
        out.write_all(h.as_bytes())?;
        let cut = match &action {
            Some(Action::ResetResponse(n)) | Some(Action::StallResponse(n, _)) => Some(*n),
            _ => None,
        };
        let complete = {
            let mut w = std::io::BufWriter::with_capacity(256 * 1024, &mut *out);
            // a chunked answer is relayed with its framing, as bytes until the upstream closes
            let f = match framing {
                Framing::Chunked => Framing::UntilClose,
                f => f,
            };
            let r = relay_body(&mut upr, &mut w, f, cut, |n, b| {
                self.add_sent(n);
                self.add_response(i, b);
            })?;
            w.flush()?;
            r
        };
        if !complete {
            if let Some(Action::StallResponse(_, d)) = &action {
                std::thread::sleep(*d);
            }
            reset(out);
            return Ok(false);
        }
        Ok(keep)
    }
}

/// Cuts a connection (with unread data in its buffer, the kernel answers with a reset).
fn reset(s: &TcpStream) {
    let _ = s.shutdown(Shutdown::Both);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

struct Head {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn request_framing(&self) -> Framing {
        if self
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            Framing::Chunked
        } else if let Some(n) = self
            .header("content-length")
            .and_then(|v| v.trim().parse().ok())
        {
            Framing::Length(n)
        } else {
            Framing::None
        }
    }
}

struct RespHead {
    status: u16,
    reason: String,
    headers: Vec<(String, String)>,
}

impl RespHead {
    fn framing(&self, method: &str) -> Framing {
        let h = |name: &str| {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        if method == "HEAD" || self.status == 204 || self.status == 304 || self.status < 200 {
            Framing::None
        } else if h("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            Framing::Chunked
        } else if let Some(n) = h("content-length").and_then(|v| v.trim().parse().ok()) {
            Framing::Length(n)
        } else {
            Framing::UntilClose
        }
    }
}

fn read_lines(r: &mut impl BufRead) -> std::io::Result<Option<Vec<String>>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line)?;
        if n == 0 {
            return Ok(if lines.is_empty() { None } else { Some(lines) });
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            if lines.is_empty() {
                continue;
            }
            return Ok(Some(lines));
        }
        lines.push(line);
    }
}

fn split_headers(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<Head>> {
    let Some(lines) = read_lines(r)? else {
        return Ok(None);
    };
    let mut first = lines[0].split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let path = first.next().unwrap_or_default().to_string();
    Ok(Some(Head {
        method,
        path,
        headers: split_headers(&lines[1..]),
    }))
}

fn read_status_head(r: &mut impl BufRead) -> std::io::Result<Option<RespHead>> {
    let Some(lines) = read_lines(r)? else {
        return Ok(None);
    };
    let mut first = lines[0].splitn(3, ' ');
    let _version = first.next();
    let status = first.next().and_then(|s| s.parse().ok()).unwrap_or(502);
    let reason = first.next().unwrap_or_default().to_string();
    Ok(Some(RespHead {
        status,
        reason,
        headers: split_headers(&lines[1..]),
    }))
}

/// Copies a body from `r` to `w` by its framing, re-framing chunked bodies as they came; stops
/// after `cut` payload bytes when given. Returns whether the whole body went through.
fn relay_body(
    r: &mut impl BufRead,
    w: &mut impl Write,
    framing: Framing,
    cut: Option<u64>,
    mut seen: impl FnMut(u64, &[u8]),
) -> std::io::Result<bool> {
    let mut budget = cut.unwrap_or(u64::MAX);
    let mut buf = vec![0u8; 64 * 1024];
    let mut copy = |r: &mut dyn BufRead,
                    w: &mut dyn Write,
                    len: Option<u64>,
                    budget: &mut u64|
     -> std::io::Result<bool> {
        let mut left = len.unwrap_or(u64::MAX);
        while left > 0 {
            let want = (left.min(buf.len() as u64)).min(*budget) as usize;
            if want == 0 {
                return Ok(false); // cut here
            }
            let n = r.read(&mut buf[..want])?;
            if n == 0 {
                return Ok(len.is_none());
            }
            w.write_all(&buf[..n])?;
            seen(n as u64, &buf[..n]);
            left -= n as u64;
            *budget -= n as u64;
        }
        Ok(true)
    };
    match framing {
        Framing::None => Ok(true),
        Framing::Length(n) => copy(r, w, Some(n), &mut budget),
        Framing::UntilClose => copy(r, w, None, &mut budget),
        Framing::Chunked => loop {
            let mut line = String::new();
            if r.read_line(&mut line)? == 0 {
                return Ok(false);
            }
            let size = u64::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|_| std::io::Error::other("bad chunk size"))?;
            w.write_all(line.as_bytes())?;
            if size == 0 {
                // trailers, then the empty line
                loop {
                    let mut t = String::new();
                    if r.read_line(&mut t)? == 0 {
                        return Ok(true);
                    }
                    w.write_all(t.as_bytes())?;
                    if t.trim().is_empty() {
                        return Ok(true);
                    }
                }
            }
            if !copy(r, w, Some(size), &mut budget)? {
                return Ok(false);
            }
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
            w.write_all(&crlf)?;
        },
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        302 => "Found",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        408 => "Request Timeout",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}
