//! The driver loop, natively: a fake registry as the transport, producers of each kind.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use lamina_core::http::{Method, Request, Response};
use lamina_core::reference::Reference;
use lamina_core::registry::{Event, GetManifest, NetError, Source, UploadConfig};
use lamina_core::{Digest, Error};

use crate::{block_on, Driver, Hook, NoBlob, Pieces, Producer, Timing, Transport};

/// A registry of one repository `a` holding upload sessions, and the faults it is told to make.
#[derive(Default)]
struct Fake {
    uploads: RefCell<HashMap<String, Vec<u8>>>,
    blobs: RefCell<HashMap<String, Vec<u8>>>,
    sessions: Cell<u32>,
    patches: Cell<u32>,
    requests: Cell<u32>,
    /// The nth PATCH (1-based) is stored, but its connection is cut before the answer.
    cut_patch: Option<u32>,
    /// The nth PATCH's connection is cut and the registry forgets the session.
    lose_at_patch: Option<u32>,
    /// The first n requests get no answer.
    unreachable: u32,
    /// A certificate the runtime does not trust.
    untrusted: bool,
    /// Bodies that were sent, as (method, path, bytes).
    sent: RefCell<Vec<(Method, String, usize)>>,
}

fn path(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.find('/').map_or("/", |i| &rest[i..])
}

impl Transport for Fake {
    type Body = Vec<u8>;
    type Stream = ();
    fn bytes_body(&self, parts: &[&[u8]]) -> Result<Vec<u8>, Error> {
        Ok(parts.concat())
    }
    async fn send(
        &self,
        req: &Request,
        body: Option<Vec<u8>>,
    ) -> Result<(Response, Option<()>), NetError> {
        let n = self.requests.get() + 1;
        self.requests.set(n);
        if self.untrusted {
            return Err(NetError::Certificate("unknown issuer".into()));
        }
        if n <= self.unreachable {
            return Err(NetError::Other("Failed to fetch".into()));
        }
        let body = body.unwrap_or_default();
        let full = path(&req.url).to_string();
        let (p, query) = full.split_once('?').unwrap_or((&full, ""));
        self.sent
            .borrow_mut()
            .push((req.method, p.to_string(), body.len()));
        let r = |status, headers: &[(&str, &str)]| Ok((Response::new(status, headers, b""), None));
        let mut ups = self.uploads.borrow_mut();
        match (req.method, p) {
            (Method::Get, "/v2/") => r(200, &[]),
            (Method::Get, "/v2/a/manifests/v1") => r(404, &[]),
            (Method::Post, "/v2/a/blobs/uploads/") => {
                let s = self.sessions.get() + 1;
                self.sessions.set(s);
                let loc = format!("/v2/a/blobs/uploads/u{s}");
                ups.insert(loc.clone(), Vec::new());
                r(202, &[("location", &loc)])
            }
            (m, p) if p.starts_with("/v2/a/blobs/uploads/u") => {
                let Some(have) = ups.get_mut(p) else {
                    return r(404, &[]);
                };
                let range = |n: usize| format!("0-{}", n.max(1) - 1);
                match m {
                    Method::Get => r(204, &[("location", p), ("range", &range(have.len()))]),
                    Method::Patch => {
                        let k = self.patches.get() + 1;
                        self.patches.set(k);
                        let start: usize = req
                            .header("content-range")
                            .and_then(|v| v.split('-').next())
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        if start != have.len() {
                            return r(416, &[]);
                        }
                        if self.lose_at_patch == Some(k) {
                            ups.remove(p);
                            return Err(NetError::Reset("connection reset by peer".into()));
                        }
                        have.extend_from_slice(&body);
                        if self.cut_patch == Some(k) {
                            return Err(NetError::Reset("connection reset by peer".into()));
                        }
                        r(202, &[("location", p), ("range", &range(have.len()))])
                    }
                    Method::Put => {
                        have.extend_from_slice(&body);
                        let d = query
                            .strip_prefix("digest=")
                            .unwrap_or("")
                            .replace("%3A", ":");
                        let got = Digest::of(have).to_string();
                        if got != d {
                            return r(400, &[]);
                        }
                        let blob = ups.remove(p).unwrap_or_default();
                        self.blobs.borrow_mut().insert(got.clone(), blob);
                        r(201, &[("docker-content-digest", &got)])
                    }
                    _ => r(405, &[]),
                }
            }
            _ => r(404, &[]),
        }
    }
}

/// A producer of `data`, `step` bytes at a time, as a pipe or files (it can start again).
struct Bytes {
    data: Vec<u8>,
    at: usize,
    step: usize,
    source: Source,
    restarts: u32,
}

impl Bytes {
    fn new(data: &[u8], step: usize, source: Source) -> Bytes {
        Bytes {
            data: data.to_vec(),
            at: 0,
            step,
            source,
            restarts: 0,
        }
    }
}

impl Producer for Bytes {
    type Body = Vec<u8>;
    fn source(&self) -> Source {
        self.source
    }
    async fn produce(&mut self, out: &mut Pieces, want: u64) -> Result<(), Error> {
        let goal = out.len() + want;
        while out.len() < goal && self.at < self.data.len() {
            let n = self.step.min(self.data.len() - self.at);
            out.gather(&self.data[self.at..self.at + n]);
            self.at += n;
        }
        Ok(())
    }
    fn finished(&self) -> Option<(Digest, u64)> {
        (self.at == self.data.len()).then(|| (Digest::of(&self.data), self.data.len() as u64))
    }
    fn read(&self) -> u64 {
        self.at as u64
    }
    async fn restart(&mut self) -> Result<(), Error> {
        if self.source != Source::Restartable {
            return Err(Error::internal("a pipe"));
        }
        self.restarts += 1;
        self.at = 0;
        Ok(())
    }
}

/// Files sent as they are: ranges, hashed on the side.
struct Slices {
    data: Vec<u8>,
    hashed: usize,
}

impl Producer for Slices {
    type Body = Vec<u8>;
    fn source(&self) -> Source {
        Source::Seekable {
            len: self.data.len() as u64,
        }
    }
    async fn produce(&mut self, _: &mut Pieces, want: u64) -> Result<(), Error> {
        self.hashed = (self.hashed + want as usize).min(self.data.len());
        Ok(())
    }
    fn finished(&self) -> Option<(Digest, u64)> {
        (self.hashed == self.data.len()).then(|| (Digest::of(&self.data), self.data.len() as u64))
    }
    fn made(&self) -> Option<u64> {
        Some(self.hashed as u64)
    }
    fn read(&self) -> u64 {
        self.hashed as u64
    }
    fn range(&self, start: u64, end: u64) -> Result<Vec<u8>, Error> {
        Ok(self.data[start as usize..end as usize].to_vec())
    }
}

/// The lines and progress a page or a job would show.
#[derive(Default)]
struct Log {
    lines: RefCell<Vec<String>>,
    confirmed: RefCell<Vec<u64>>,
    produced: Cell<u32>,
    ended: Cell<u32>,
}

impl<P: Producer> Hook<P> for Log {
    async fn event(&self, e: &Event, _: &P) {
        match e {
            Event::Confirmed { bytes, .. } => self.confirmed.borrow_mut().push(*bytes),
            e => self.lines.borrow_mut().push(e.to_string()),
        }
    }
    async fn produced(&self, _: &P, _: u64) {
        self.produced.set(self.produced.get() + 1);
    }
    async fn ended(&self, t: &Timing) {
        assert!(t.to_string().starts_with("upload: "), "{t}");
        self.ended.set(self.ended.get() + 1);
    }
}

fn reference() -> Reference {
    Reference::parse("127.0.0.1:5000/a:v1", "r8.im").unwrap()
}

fn chunks(n: u64) -> UploadConfig {
    UploadConfig {
        monolithic_max: 0,
        chunk_max: n,
        chunk_min: n,
        stream: false,
        ..UploadConfig::default()
    }
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

fn driver(fake: Fake) -> Driver<Fake> {
    Driver::new(fake, HashMap::new())
}

#[test]
fn a_chunked_upload_is_made_ahead_and_confirmed_chunk_by_chunk() {
    let data = data(3500);
    let mut d = driver(Fake::default());
    let mut p = Bytes::new(&data, 300, Source::Once);
    let log = Log::default();
    let got = block_on(d.upload(&reference(), chunks(1000), &mut p, &log)).unwrap();
    assert_eq!(got, Digest::of(&data));
    assert_eq!(d.transport().blobs.borrow()[&got.to_string()], data);
    // four PATCHes of whole chunks (the last shorter), then the commit
    let patches: Vec<usize> = d
        .transport()
        .sent
        .borrow()
        .iter()
        .filter(|(m, _, _)| *m == Method::Patch)
        .map(|(_, _, n)| *n)
        .collect();
    assert_eq!(patches, [1000, 1000, 1000, 500]);
    assert_eq!(*log.confirmed.borrow(), [0, 1000, 2000, 3000, 3500]);
    assert!(log.produced.get() > 0);
    assert_eq!(log.ended.get(), 1);
    assert!(log.lines.borrow().is_empty(), "{:?}", log.lines.borrow());
}

#[test]
fn a_cut_chunk_resumes_from_the_registrys_offset() {
    let data = data(3500);
    let mut d = driver(Fake {
        cut_patch: Some(2),
        ..Fake::default()
    });
    let mut p = Bytes::new(&data, 300, Source::Once);
    let log = Log::default();
    let got = block_on(d.upload(&reference(), chunks(1000), &mut p, &log)).unwrap();
    assert_eq!(d.transport().blobs.borrow()[&got.to_string()], data);
    let lines = log.lines.borrow();
    assert!(
        lines.iter().any(|l| l.starts_with("request failed: ")
            && l.contains("/v2/a/blobs/uploads/u1")
            && l.contains("connection lost")),
        "{lines:?}"
    );
}

#[test]
fn a_lost_session_starts_a_restartable_producer_over() {
    let data = data(3500);
    let mut d = driver(Fake {
        lose_at_patch: Some(3),
        ..Fake::default()
    });
    let mut p = Bytes::new(&data, 300, Source::Restartable);
    let log = Log::default();
    let got = block_on(d.upload(&reference(), chunks(1000), &mut p, &log)).unwrap();
    assert_eq!(d.transport().blobs.borrow()[&got.to_string()], data);
    assert_eq!(p.restarts, 1);
    assert_eq!(d.transport().sessions.get(), 2);
    let lines = log.lines.borrow();
    assert!(
        lines
            .iter()
            .any(|l| l == "the registry lost the upload: starting it over"),
        "{lines:?}"
    );
}

#[test]
fn a_lost_session_fails_a_pipe_naming_the_registry() {
    let data = data(3500);
    let mut d = driver(Fake {
        lose_at_patch: Some(3),
        ..Fake::default()
    });
    let mut p = Bytes::new(&data, 300, Source::Once);
    let e = block_on(d.upload(&reference(), chunks(1000), &mut p, &())).unwrap_err();
    assert_eq!(e.registry.as_deref(), Some("127.0.0.1:5000"));
    assert!(!e.unanswered, "the registry answered the status request");
    assert!(e.to_string().contains("is gone"), "{e}");
    assert_eq!(p.restarts, 0);
}

#[test]
fn files_sent_as_ranges_are_hashed_ahead() {
    let data = data(3500);
    let mut d = driver(Fake {
        cut_patch: Some(1),
        ..Fake::default()
    });
    let mut p = Slices {
        data: data.clone(),
        hashed: 0,
    };
    let log = Log::default();
    let got = block_on(d.upload(&reference(), chunks(1000), &mut p, &log)).unwrap();
    assert_eq!(got, Digest::of(&data));
    assert_eq!(d.transport().blobs.borrow()[&got.to_string()], data);
    assert_eq!(p.hashed, data.len());
}

#[test]
fn small_bytes_go_in_one_put_and_sessions_are_kept() {
    let mut d = driver(Fake::default());
    let got = block_on(d.upload_bytes(&reference(), b"{}".to_vec(), &())).unwrap();
    assert_eq!(got, Digest::of(b"{}"));
    // the second operation on the registry does not ping it again
    let e = block_on(d.run(&reference(), GetManifest::new("a", "v1"), &())).unwrap_err();
    let sent = d.transport().sent.borrow();
    assert_eq!(
        sent.iter().filter(|(_, p, _)| p == "/v2/").count(),
        1,
        "{sent:?}"
    );
    assert!(
        matches!(e.error, Error::Http { status: 404, .. }),
        "{}",
        e.error
    );
    assert_eq!(e.registry.as_deref(), Some("127.0.0.1:5000"));
}

#[test]
fn a_request_without_an_answer_is_retried_and_said() {
    let mut d = driver(Fake {
        unreachable: 1,
        ..Fake::default()
    });
    let log = Log::default();
    let e = block_on(d.run::<_, Log>(&reference(), GetManifest::new("a", "v1"), &log)).unwrap_err();
    assert!(matches!(e.error, Error::Http { status: 404, .. }));
    let lines = log.lines.borrow();
    assert_eq!(
        lines[0],
        "request failed: http://127.0.0.1:5000/v2/: Failed to fetch"
    );
    assert!(lines[1].starts_with("retrying (1) in "), "{lines:?}");
}

#[test]
fn an_untrusted_certificate_fails_at_once_unanswered() {
    let mut d = driver(Fake {
        untrusted: true,
        ..Fake::default()
    });
    let e = block_on(d.run(&reference(), GetManifest::new("a", "v1"), &())).unwrap_err();
    assert!(matches!(e.error, Error::Tls { .. }), "{}", e.error);
    assert!(e.unanswered);
    assert_eq!(d.transport().requests.get(), 1);
}

#[test]
fn no_blob_cannot_produce() {
    let mut p: NoBlob<Vec<u8>> = NoBlob::default();
    assert!(block_on(p.produce(&mut Pieces::default(), 1)).is_err());
    assert_eq!(p.source(), Source::None);
}

#[test]
fn pieces_gather_small_slices() {
    let mut p = Pieces::default();
    for _ in 0..10 {
        p.gather(&[1; 1000]);
    }
    p.gather(&[]);
    p.push(vec![2; 5]);
    p.push(Vec::new());
    assert_eq!(p.len(), 10_005);
    let v = p.take();
    assert_eq!(v.len(), 2, "one gathered piece and the pushed one");
    assert!(p.is_empty());
}
