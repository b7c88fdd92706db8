//! The protocol operations: manifests, blob existence, mounts, uploads.

use super::session::{http_error, Call, Op, Outcome, Step};
use crate::digest::{Digest, Hasher};
use crate::error::Error;
use crate::http::SafeUrl;
use crate::http::{add_query, parse_range_end, resolve, Body, Method, Response};
use crate::image::MAX_MANIFEST_SIZE;
use crate::media::MANIFEST_ACCEPT;

/// `repository:NAME:pull`.
pub fn pull_scope(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

/// `repository:NAME:pull,push`.
pub fn push_scope(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

fn expect_response(o: Option<Outcome>, method: Method, what: &str) -> Result<Response, Error> {
    match o {
        Some(Ok(r)) => Ok(r),
        Some(Err(e)) => Err(Error::Protocol {
            reason: format!("{method} {what}: {e}"),
        }),
        None => Err(Error::Protocol {
            reason: format!("{method} {what}: no response"),
        }),
    }
}

/// A fetched manifest or index.
#[derive(Clone, Debug)]
pub struct FetchedManifest {
    /// The exact bytes.
    pub bytes: Vec<u8>,
    /// Their digest (verified against the reference's digest and `Docker-Content-Digest`).
    pub digest: Digest,
    /// `Content-Type` as sent by the registry.
    pub content_type: Option<String>,
}

/// `GET /v2/<repo>/manifests/<reference>` with the full `Accept` list; refuses bodies over
/// 4 MiB and verifies the digest.
#[derive(Debug)]
pub struct GetManifest {
    repo: String,
    reference: String,
    sent: bool,
}

impl GetManifest {
    /// `reference` is a tag or a digest.
    pub fn new(repo: &str, reference: &str) -> Self {
        GetManifest {
            repo: repo.into(),
            reference: reference.into(),
            sent: false,
        }
    }
}

impl Op for GetManifest {
    type Output = FetchedManifest;
    fn step(&mut self, o: Option<Outcome>, _: &str) -> Result<Step<FetchedManifest>, Error> {
        let path = format!("/v2/{}/manifests/{}", self.repo, self.reference);
        if !self.sent {
            self.sent = true;
            let mut c = Call::new(Method::Get, &path, vec![pull_scope(&self.repo)])
                .header("Accept", MANIFEST_ACCEPT);
            c.max_response_body = MAX_MANIFEST_SIZE + 1;
            return Ok(Step::Call(c));
        }
        let r = expect_response(o, Method::Get, &path)?;
        if r.status == 404 {
            return Err(Error::Http {
                method: "GET".into(),
                url: path.into(),
                status: 404,
                detail: format!(
                    "manifest {}:{} not found ({})",
                    self.repo,
                    self.reference,
                    r.error_detail()
                ),
            });
        }
        if r.status != 200 {
            return Err(http_error(Method::Get, &path, &r));
        }
        if r.truncated || r.body.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(Error::TooLarge {
                what: format!("manifest {}:{}", self.repo, self.reference),
                limit: MAX_MANIFEST_SIZE,
            });
        }
        if let Some(len) = r
            .header("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            if len != r.body.len() as u64 {
                return Err(Error::SizeMismatch {
                    what: format!("manifest {}:{}", self.repo, self.reference),
                    expected: len,
                    found: r.body.len() as u64,
                });
            }
        }
        let digest = Digest::of(&r.body);
        let what = format!("manifest {}@{}", self.repo, self.reference);
        if let Ok(want) = Digest::parse(&self.reference) {
            if want != digest {
                return Err(Error::DigestMismatch {
                    what,
                    expected: want,
                    found: digest,
                });
            }
        }
        if let Some(h) = r.header("docker-content-digest") {
            if let Ok(claimed) = Digest::parse(h.trim()) {
                if claimed != digest {
                    return Err(Error::DigestMismatch {
                        what: format!("{what} (Docker-Content-Digest)"),
                        expected: claimed,
                        found: digest,
                    });
                }
            }
        }
        Ok(Step::Done(FetchedManifest {
            content_type: r.header("content-type").map(str::to_string),
            bytes: r.body,
            digest,
        }))
    }
}

/// `GET` a small blob (an image config) into memory, verifying size limit and digest.
#[derive(Debug)]
pub struct GetBlob {
    repo: String,
    digest: Digest,
    limit: u64,
    sent: bool,
}

impl GetBlob {
    /// Fetches `digest` from `repo`, refusing more than `limit` bytes.
    pub fn new(repo: &str, digest: &Digest, limit: u64) -> Self {
        GetBlob {
            repo: repo.into(),
            digest: digest.clone(),
            limit,
            sent: false,
        }
    }
}

impl Op for GetBlob {
    type Output = Vec<u8>;
    fn step(&mut self, o: Option<Outcome>, _: &str) -> Result<Step<Vec<u8>>, Error> {
        let path = format!("/v2/{}/blobs/{}", self.repo, self.digest);
        if !self.sent {
            self.sent = true;
            let mut c = Call::new(Method::Get, &path, vec![pull_scope(&self.repo)]);
            c.max_response_body = self.limit + 1;
            return Ok(Step::Call(c));
        }
        let r = expect_response(o, Method::Get, &path)?;
        if r.status != 200 {
            return Err(http_error(Method::Get, &path, &r));
        }
        if r.truncated || r.body.len() as u64 > self.limit {
            return Err(Error::TooLarge {
                what: format!("blob {}", self.digest),
                limit: self.limit,
            });
        }
        self.digest
            .verify(&r.body, &format!("blob {}@{}", self.repo, self.digest))?;
        Ok(Step::Done(r.body))
    }
}

/// Whether a `206` answers the one range asked for, from byte `start`: its `Content-Range`
/// says so, or it has none the driver can see. A browser shows a cross-origin response's
/// `Content-Range` only when the registry lists it in `Access-Control-Expose-Headers`, which
/// registries configured for browsers often do not; a 206 to a request of one range is that
/// range (RFC 9110 15.3.7: several ranges would be `multipart/byteranges`, and one is asked),
/// and the reader checks the length it needs. A `Content-Range` that names another start is a
/// registry answering something else: not taken.
fn range_starts_at(r: &Response, start: u64) -> bool {
    let Some(v) = r.header("content-range") else {
        return true;
    };
    let from = v
        .trim()
        .strip_prefix("bytes ")
        .and_then(|v| v.split('-').next())
        .and_then(|v| v.trim().parse::<u64>().ok());
    from == Some(start)
}

/// `GET` bytes `range` of a blob into memory (`Range: bytes=a-b`): a window of tar headers, a
/// weight file's header. At most the range's length is read, whatever the registry sends.
#[derive(Debug)]
pub struct GetRange {
    repo: String,
    digest: Digest,
    range: std::ops::Range<u64>,
    sent: bool,
}

/// What [`GetRange`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ranged {
    /// The bytes of the range (fewer at the blob's end).
    Bytes(Vec<u8>),
    /// The registry ignored `Range` and began sending the whole blob from its first byte (the
    /// driver stopped reading at the range's length); `head` is what came, the blob's first
    /// bytes. A reader that needs more goes on with a stream ([`OpenBlob`]).
    Ignored {
        /// The blob's first bytes.
        head: Vec<u8>,
    },
}

impl GetRange {
    /// Bytes `range` of `digest` in `repo` (an empty range asks for nothing and gets nothing).
    pub fn new(repo: &str, digest: &Digest, range: std::ops::Range<u64>) -> Self {
        GetRange {
            repo: repo.into(),
            digest: digest.clone(),
            range,
            sent: false,
        }
    }
}

impl Op for GetRange {
    type Output = Ranged;
    fn step(&mut self, o: Option<Outcome>, _: &str) -> Result<Step<Ranged>, Error> {
        let path = format!("/v2/{}/blobs/{}", self.repo, self.digest);
        let (start, end) = (self.range.start, self.range.end);
        if end <= start {
            return Ok(Step::Done(Ranged::Bytes(Vec::new())));
        }
        if !self.sent {
            self.sent = true;
            let mut c = Call::new(Method::Get, &path, vec![pull_scope(&self.repo)]);
            c.headers
                .push(("Range".into(), format!("bytes={start}-{}", end - 1)));
            c.max_response_body = end - start;
            return Ok(Step::Call(c));
        }
        let r = expect_response(o, Method::Get, &path)?;
        match r.status {
            200 => Ok(Step::Done(Ranged::Ignored { head: r.body })),
            206 => {
                if !range_starts_at(&r, start) {
                    return Err(Error::Protocol {
                        reason: format!(
                            "GET {path} bytes {start}-{}: the registry answered 206 with \
                             Content-Range {:?}",
                            end - 1,
                            r.header("content-range").unwrap_or("(none)")
                        ),
                    });
                }
                Ok(Step::Done(Ranged::Bytes(r.body)))
            }
            // a range that starts at or past the end: nothing there
            416 => Ok(Step::Done(Ranged::Bytes(Vec::new()))),
            _ => Err(http_error(Method::Get, &path, &r)),
        }
    }
}

/// `GET /v2/<repo>/blobs/<digest>` with the body left to the driver as a stream (layers are
/// never read into memory). Ends with the size the registry announced, if any; the caller
/// verifies the digest as the bytes stream (see [`Verifier`]).
///
/// [`OpenBlob::from_offset`] continues a download that was cut: it asks for `Range:
/// bytes=N-`. A `206` must start at `N`; a registry that ignores ranges answers `200` with the
/// whole blob, and [`OpenedBlob::skip`] tells the driver how many bytes to drop first.
#[derive(Debug)]
pub struct OpenBlob {
    repo: String,
    digest: Digest,
    start: u64,
    end: Option<u64>,
    sent: bool,
}

/// What [`OpenBlob`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenedBlob {
    /// The body's length as announced (`Content-Length`), if any.
    pub content_length: Option<u64>,
    /// Bytes at the start of the body the caller already has (the registry ignored `Range`).
    pub skip: u64,
}

impl OpenBlob {
    /// Opens `digest` in `repo` for streaming.
    pub fn new(repo: &str, digest: &Digest) -> Self {
        Self::from_offset(repo, digest, 0)
    }

    /// Opens `digest` in `repo` from byte `start` on.
    pub fn from_offset(repo: &str, digest: &Digest, start: u64) -> Self {
        OpenBlob {
            repo: repo.into(),
            digest: digest.clone(),
            start,
            end: None,
            sent: false,
        }
    }

    /// Opens bytes `range` of `digest` in `repo` (`Range: bytes=start-(end-1)`): a file inside
    /// a layer. The driver reads `range.end - range.start` bytes (after [`OpenedBlob::skip`],
    /// when the registry ignored `Range`) and closes the body.
    pub fn range(repo: &str, digest: &Digest, range: std::ops::Range<u64>) -> Self {
        OpenBlob {
            end: Some(range.end),
            ..Self::from_offset(repo, digest, range.start)
        }
    }
}

impl Op for OpenBlob {
    type Output = OpenedBlob;
    fn step(&mut self, o: Option<Outcome>, _: &str) -> Result<Step<OpenedBlob>, Error> {
        let path = format!("/v2/{}/blobs/{}", self.repo, self.digest);
        if !self.sent {
            self.sent = true;
            let mut c = Call::new(Method::Get, &path, vec![pull_scope(&self.repo)]);
            match self.end {
                Some(end) if end > self.start => c
                    .headers
                    .push(("Range".into(), format!("bytes={}-{}", self.start, end - 1))),
                _ if self.start > 0 => c
                    .headers
                    .push(("Range".into(), format!("bytes={}-", self.start))),
                _ => {}
            }
            c.stream_response = true;
            return Ok(Step::Call(c));
        }
        let r = expect_response(o, Method::Get, &path)?;
        let content_length = r
            .header("content-length")
            .and_then(|v| v.trim().parse().ok());
        match r.status {
            200 => Ok(Step::Done(OpenedBlob {
                content_length,
                skip: self.start,
            })),
            206 if self.start > 0 || self.end.is_some() => {
                if !range_starts_at(&r, self.start) {
                    return Err(Error::Protocol {
                        reason: format!(
                            "GET {path} from byte {}: the registry answered 206 with \
                             Content-Range {:?}",
                            self.start,
                            r.header("content-range").unwrap_or("(none)")
                        ),
                    });
                }
                Ok(Step::Done(OpenedBlob {
                    content_length,
                    skip: 0,
                }))
            }
            _ => Err(http_error(Method::Get, &path, &r)),
        }
    }
}

/// `GET /v2/` with the session's credentials (a token without a scope on token registries):
/// checks that a registry takes them, as `docker login` does. Ends when the registry answers
/// 200; credentials it refuses end in [`Error::Auth`] from the session.
#[derive(Debug, Default)]
pub struct CheckLogin {
    sent: bool,
}

impl CheckLogin {
    /// A check.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Op for CheckLogin {
    type Output = ();
    fn step(&mut self, o: Option<Outcome>, _: &str) -> Result<Step<()>, Error> {
        if !self.sent {
            self.sent = true;
            return Ok(Step::Call(Call::new(Method::Get, "/v2/", Vec::new())));
        }
        let r = expect_response(o, Method::Get, "/v2/")?;
        match r.status {
            200 => Ok(Step::Done(())),
            _ => Err(http_error(Method::Get, "/v2/", &r)),
        }
    }
}

/// `HEAD /v2/<repo>/blobs/<digest>`: does the repository have it?
#[derive(Debug)]
pub struct HeadBlob {
    repo: String,
    digest: Digest,
    sent: bool,
    push: bool,
}

impl HeadBlob {
    /// Checks `digest` in `repo`. `for_push` asks for a push-scoped token (saves a token round
    /// trip when the same repository is pushed to next).
    pub fn new(repo: &str, digest: &Digest, for_push: bool) -> Self {
        HeadBlob {
            repo: repo.into(),
            digest: digest.clone(),
            sent: false,
            push: for_push,
        }
    }
}

impl Op for HeadBlob {
    type Output = Option<u64>;
    fn step(&mut self, o: Option<Outcome>, _: &str) -> Result<Step<Option<u64>>, Error> {
        let path = format!("/v2/{}/blobs/{}", self.repo, self.digest);
        if !self.sent {
            self.sent = true;
            let scope = if self.push {
                push_scope(&self.repo)
            } else {
                pull_scope(&self.repo)
            };
            return Ok(Step::Call(Call::new(Method::Head, &path, vec![scope])));
        }
        let r = expect_response(o, Method::Head, &path)?;
        match r.status {
            200 => Ok(Step::Done(Some(
                r.header("content-length")
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0),
            ))),
            404 => Ok(Step::Done(None)),
            _ => Err(http_error(Method::Head, &path, &r)),
        }
    }
}

/// `POST /v2/<repo>/blobs/uploads/?mount=<digest>&from=<source>`: a cross-repository mount.
/// Ends with `true` when mounted; `false` when the registry started an upload instead (that
/// session is cancelled; the caller must copy the blob).
#[derive(Debug)]
pub struct MountBlob {
    repo: String,
    from: String,
    digest: Digest,
    state: u8,
}

impl MountBlob {
    /// Mounts `digest` from repository `from` into `repo` (same registry).
    pub fn new(repo: &str, from: &str, digest: &Digest) -> Self {
        MountBlob {
            repo: repo.into(),
            from: from.into(),
            digest: digest.clone(),
            state: 0,
        }
    }
}

impl Op for MountBlob {
    type Output = bool;
    fn step(&mut self, o: Option<Outcome>, base: &str) -> Result<Step<bool>, Error> {
        let path = format!("/v2/{}/blobs/uploads/", self.repo);
        match self.state {
            0 => {
                self.state = 1;
                let target = add_query(
                    &add_query(&path, "mount", &self.digest.to_string()),
                    "from",
                    &self.from,
                );
                let mut c = Call::new(
                    Method::Post,
                    target,
                    vec![push_scope(&self.repo), pull_scope(&self.from)],
                );
                c.idempotent = true; // a repeated mount is harmless
                c.headers.push(("Content-Length".into(), "0".into()));
                Ok(Step::Call(c))
            }
            1 => {
                let r = expect_response(o, Method::Post, &path)?;
                match r.status {
                    201 => Ok(Step::Done(true)),
                    202 => {
                        // cancel the upload session that was opened instead
                        match r.header("location") {
                            Some(loc) => {
                                self.state = 2;
                                let url = resolve(&format!("{base}{path}"), loc);
                                Ok(Step::Call(Call::new(
                                    Method::Delete,
                                    url,
                                    vec![push_scope(&self.repo)],
                                )))
                            }
                            None => Ok(Step::Done(false)),
                        }
                    }
                    _ => Err(http_error(Method::Post, &path, &r)),
                }
            }
            _ => Ok(Step::Done(false)),
        }
    }
}

/// `PUT /v2/<repo>/manifests/<reference>` of exact bytes; checks the returned digest.
#[derive(Debug)]
pub struct PutManifest {
    repo: String,
    reference: String,
    media_type: String,
    bytes: Option<Vec<u8>>,
    digest: Digest,
}

impl PutManifest {
    /// Pushes `bytes` (already digested by the caller) as `reference` (tag or digest).
    pub fn new(repo: &str, reference: &str, media_type: &str, bytes: Vec<u8>) -> Self {
        let digest = Digest::of(&bytes);
        PutManifest {
            repo: repo.into(),
            reference: reference.into(),
            media_type: media_type.into(),
            bytes: Some(bytes),
            digest,
        }
    }
}

impl Op for PutManifest {
    type Output = Digest;
    fn step(&mut self, o: Option<Outcome>, _: &str) -> Result<Step<Digest>, Error> {
        let path = format!("/v2/{}/manifests/{}", self.repo, self.reference);
        if let Some(b) = self.bytes.take() {
            if b.len() as u64 > MAX_MANIFEST_SIZE {
                return Err(Error::TooLarge {
                    what: format!("manifest for {}:{}", self.repo, self.reference),
                    limit: MAX_MANIFEST_SIZE,
                });
            }
            let c = Call::new(Method::Put, &path, vec![push_scope(&self.repo)])
                .header("Content-Type", self.media_type.clone())
                .body(Body::Bytes(b));
            return Ok(Step::Call(c));
        }
        let r = expect_response(o, Method::Put, &path)?;
        if r.status != 201 && r.status != 200 {
            return Err(http_error(Method::Put, &path, &r));
        }
        if let Some(h) = r.header("docker-content-digest") {
            let claimed = Digest::parse(h.trim())?;
            if claimed != self.digest {
                return Err(Error::DigestMismatch {
                    what: format!(
                        "manifest pushed to {}:{} (registry's Docker-Content-Digest)",
                        self.repo, self.reference
                    ),
                    expected: self.digest.clone(),
                    found: claimed,
                });
            }
        }
        Ok(Step::Done(self.digest.clone()))
    }
}

/// Upload settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadConfig {
    /// Blobs up to this size, when whole before the upload starts, go in one `PUT`.
    pub monolithic_max: u64,
    /// Largest `PATCH` body.
    pub chunk_max: u64,
    /// Smallest `PATCH` body (except the last); raised by `OCI-Chunk-Min-Length`.
    pub chunk_min: u64,
    /// Most times the upload is resumed after an error before giving up.
    pub max_resumes: u32,
    /// Send the blob in one streaming `PATCH` ([`Body::Stream`]) instead of chunks: no
    /// per-chunk round trips and no chunk held in memory, at the price that after an error the
    /// driver must produce the bytes again from the registry's offset.
    pub stream: bool,
    /// With `stream`: the most bytes one streamed `PATCH` carries (`u64::MAX`: the whole blob in
    /// one). The registry confirms each, so a cut costs at most one segment where it kept the
    /// session, without a chunk held in memory.
    pub segment: u64,
}

impl UploadConfig {
    /// Chunks of exactly `chunk` bytes (but the last), never one `PUT`: what a driver that
    /// makes the blob as it goes and sends each chunk whole uses (the browser, the Worker,
    /// whose requests are bounded in size).
    pub fn whole_chunks(chunk: u64) -> Self {
        UploadConfig {
            monolithic_max: 0,
            chunk_max: chunk,
            chunk_min: chunk,
            stream: false,
            ..UploadConfig::default()
        }
    }
}

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig {
            monolithic_max: 8 << 20,
            chunk_max: 16 << 20,
            chunk_min: 0,
            max_resumes: 8,
            stream: false,
            segment: u64::MAX,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Up {
    Start,
    Started,
    Put,
    Patch { end: u64 },
    Status,
    Commit,
    Done,
}

/// Uploads one blob, monolithic or chunked, while the driver produces its bytes.
///
/// The driver tells the upload how many bytes exist with [`Upload::data_available`] and, once
/// the blob is whole, its digest with [`Upload::data_complete`]. The upload asks for byte ranges
/// with [`Body::Blob`]; a range starts at or after the registry's last confirmed offset, so a
/// driver needs to keep only the bytes from there on (after an error, at most one chunk is sent
/// again). Chunks follow the newest `Location`, carry `Content-Range`, honour
/// `OCI-Chunk-Min-Length`, and a 416 or a lost connection is recovered from the upload's status
/// (`GET <location>` -> `Range`).
#[derive(Debug)]
pub struct Upload {
    repo: String,
    cfg: UploadConfig,
    location: String,
    state: Up,
    available: u64,
    complete: Option<(Digest, u64)>,
    confirmed: u64,
    resumes: u32,
    /// bytes of each chunk sent, for progress
    sent_bytes: u64,
    /// resumed from a saved session that may be gone: a 404 on its status starts over
    saved: bool,
    /// the registry will not take this session any further (gone, or its blob refused)
    abandoned: bool,
    /// the driver can make the blob again from its first byte
    restartable: bool,
}

impl Upload {
    /// An upload into `repo`.
    pub fn new(repo: &str, cfg: UploadConfig) -> Self {
        Upload {
            repo: repo.into(),
            cfg,
            location: String::new(),
            state: Up::Start,
            available: 0,
            complete: None,
            confirmed: 0,
            resumes: 0,
            sent_bytes: 0,
            saved: false,
            abandoned: false,
            restartable: false,
        }
    }

    /// Resumes an upload session that exists already at `location` (e.g. from a state file):
    /// the first call asks the registry where the upload stands, and the upload goes on from its
    /// `Range`. A session the registry no longer has (404) starts over with a new one; the first
    /// status is asked before any data is wanted, so the driver still has every byte.
    pub fn resume(repo: &str, cfg: UploadConfig, location: &str) -> Self {
        let mut u = Upload::new(repo, cfg);
        u.location = location.into();
        u.state = Up::Started;
        u.saved = true;
        u
    }

    /// Bytes `0..n` of the blob can be requested.
    pub fn data_available(&mut self, n: u64) {
        self.available = self.available.max(n);
    }

    /// The blob is whole: `size` bytes with `digest`.
    pub fn data_complete(&mut self, digest: Digest, size: u64) {
        self.available = self.available.max(size);
        self.complete = Some((digest, size));
    }

    /// Whether the driver can make the blob again from its first byte (see
    /// its source): when the registry lost the session, the upload starts over instead of
    /// failing.
    pub(crate) fn set_restartable(&mut self, yes: bool) {
        self.restartable = yes;
    }

    /// Bytes the registry has confirmed.
    pub fn confirmed(&self) -> u64 {
        self.confirmed
    }

    /// Total bytes put on the wire, including any sent again after an error.
    pub fn sent_bytes(&self) -> u64 {
        self.sent_bytes
    }

    /// Whether the registry will not take this upload session any further: it forgot the
    /// session, or refused the blob when it was closed (a state file of it is of no use).
    pub fn abandoned(&self) -> bool {
        self.abandoned
    }

    /// The upload session's URL (for a state file), once started.
    pub fn location(&self) -> Option<&str> {
        (!self.location.is_empty()).then_some(self.location.as_str())
    }

    fn scopes(&self) -> Vec<String> {
        vec![push_scope(&self.repo)]
    }

    fn set_location(&mut self, r: &Response, base: &str) -> Result<(), Error> {
        let loc = r.header("location").ok_or_else(|| Error::Protocol {
            reason: format!(
                "upload to {} answered HTTP {} without a Location",
                self.repo, r.status
            ),
        })?;
        let prev = if self.location.is_empty() {
            format!("{base}/v2/{}/blobs/uploads/", self.repo)
        } else {
            self.location.clone()
        };
        self.location = resolve(&prev, loc);
        Ok(())
    }

    fn next_send(&mut self) -> Result<Step<Digest>, Error> {
        if let Some((digest, size)) = &self.complete {
            if self.confirmed == 0 && *size <= self.cfg.monolithic_max && self.sent_bytes == 0 {
                self.state = Up::Put;
                self.sent_bytes += size;
                let url = add_query(&self.location, "digest", &digest.to_string());
                let c = Call::new(Method::Put, url, self.scopes())
                    .header("Content-Type", "application/octet-stream")
                    .body(Body::Blob {
                        start: 0,
                        end: *size,
                    });
                return Ok(Step::Call(c));
            }
            if self.confirmed == *size {
                self.state = Up::Commit;
                let url = add_query(&self.location, "digest", &digest.to_string());
                let mut c = Call::new(Method::Put, url, self.scopes());
                c.headers.push(("Content-Length".into(), "0".into()));
                return Ok(Step::Call(c));
            }
            if self.confirmed > *size {
                return Err(Error::Protocol {
                    reason: format!(
                        "registry reports {} bytes of a {size}-byte blob",
                        self.confirmed
                    ),
                });
            }
        }
        if self.cfg.stream {
            // wait for the first bytes, so a blob that is complete at once still goes in one PUT
            if self.available <= self.confirmed && self.complete.is_none() {
                return Ok(Step::NeedData);
            }
            let start = self.confirmed;
            let limit = self.cfg.segment.max(1);
            self.state = Up::Patch {
                end: start.saturating_add(limit),
            };
            let mut c = Call::new(Method::Patch, self.location.clone(), self.scopes())
                .header("Content-Type", "application/octet-stream")
                .body(Body::Stream { start, limit });
            c.idempotent = false;
            return Ok(Step::Call(c));
        }
        let pending = self.available - self.confirmed.min(self.available);
        let last = self.complete.is_some();
        if pending == 0 || (!last && pending < self.cfg.chunk_min.max(1)) {
            return Ok(Step::NeedData);
        }
        // With more data to come, only send a full chunk's worth of at least the minimum.
        let len = pending.min(self.cfg.chunk_max.max(1));
        if !last && len < self.cfg.chunk_min {
            return Ok(Step::NeedData);
        }
        let start = self.confirmed;
        let end = start + len;
        self.state = Up::Patch { end };
        self.sent_bytes += len;
        let mut c = Call::new(Method::Patch, self.location.clone(), self.scopes())
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", format!("{start}-{}", end - 1))
            .body(Body::Blob { start, end });
        c.idempotent = false;
        Ok(Step::Call(c))
    }

    /// Asks where the upload stands after a failed chunk, backing off first: as `Retry-After`
    /// asks, else exponentially (after a refused range, at once).
    fn recover(&mut self, why: String, wait: Option<u64>) -> Result<Step<Digest>, Error> {
        self.resumes += 1;
        if self.resumes > self.cfg.max_resumes {
            return Err(Error::RetriesExhausted {
                attempts: self.resumes,
                last: Box::new(Error::Protocol {
                    reason: format!("upload to {}: {why}", self.repo),
                }),
            });
        }
        self.state = Up::Status;
        let mut c = Call::new(Method::Get, self.location.clone(), self.scopes());
        let wait = wait.unwrap_or_else(|| super::session::backoff_ms(self.resumes));
        if wait > 0 {
            c.wait_first = Some((wait, format!("upload to {}: {why}", self.repo)));
        }
        Ok(Step::Call(c))
    }
}

impl Op for Upload {
    type Output = Digest;
    fn as_upload(&self) -> Option<&Upload> {
        Some(self)
    }
    fn as_upload_mut(&mut self) -> Option<&mut Upload> {
        Some(self)
    }
    fn step(&mut self, o: Option<Outcome>, base: &str) -> Result<Step<Digest>, Error> {
        let upath = format!("/v2/{}/blobs/uploads/", self.repo);
        match self.state {
            Up::Start => {
                self.state = Up::Started;
                let mut c = Call::new(Method::Post, &upath, self.scopes());
                c.idempotent = true; // a lost POST only leaves an unused session behind
                c.headers.push(("Content-Length".into(), "0".into()));
                Ok(Step::Call(c))
            }
            Up::Started if o.is_some() => {
                let r = expect_response(o, Method::Post, &upath)?;
                if r.status != 202 {
                    return Err(http_error(Method::Post, &upath, &r));
                }
                self.set_location(&r, base)?;
                if let Some(min) = r
                    .header("oci-chunk-min-length")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                {
                    self.cfg.chunk_min = self.cfg.chunk_min.max(min);
                    self.cfg.chunk_max = self.cfg.chunk_max.max(min);
                }
                if r.header("oci-chunk-max-length").is_some()
                    || r.header("oci-chunk-min-length").is_some()
                {
                    // a registry with chunk rules (serverless ones) gets chunks, not a stream
                    self.cfg.stream = false;
                }
                if let Some(max) = r
                    .header("oci-chunk-max-length")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                {
                    if max > 0 {
                        self.cfg.chunk_max = self.cfg.chunk_max.min(max).max(self.cfg.chunk_min);
                        self.cfg.monolithic_max = self.cfg.monolithic_max.min(max);
                    }
                }
                self.state = Up::Patch { end: 0 };
                self.next_send()
            }
            Up::Started => {
                // resumed session: ask where it stands
                self.state = Up::Status;
                Ok(Step::Call(Call::new(
                    Method::Get,
                    self.location.clone(),
                    self.scopes(),
                )))
            }
            Up::Patch { end } => {
                match o {
                    None => self.next_send(),
                    Some(Err(e)) => self.recover(format!("PATCH failed: {e}"), None),
                    Some(Ok(r)) => match r.status {
                        202 | 204 => {
                            self.set_location(&r, base)?;
                            // a streamed PATCH sent the whole blob (the driver reported its
                            // size), or a segment of it that may have ended with the blob
                            let size = self.complete.as_ref().map(|c| c.1);
                            let end = if end == u64::MAX {
                                size.unwrap_or(self.available)
                            } else {
                                size.map_or(end, |s| end.min(s))
                            };
                            // distribution answers "0-0" both for 0 and for 1 byte; after
                            // sending bytes 0..1 it can only mean 1
                            let got = r
                                .header("range")
                                .and_then(parse_range_end)
                                .map(|g| if g == 0 && end == 1 { 1 } else { g })
                                .unwrap_or(end);
                            // the registry may have kept less than was sent: continue from its count
                            self.confirmed = got;
                            self.next_send()
                        }
                        416 => self.recover(
                            "registry answered 416 (range not satisfiable)".into(),
                            Some(0),
                        ),
                        // distribution answers 404 BLOB_UPLOAD_INVALID to a chunk sent at an
                        // offset it no longer has, e.g. when a browser transparently resent a
                        // PATCH whose connection was cut after part of it was stored: ask where
                        // the upload stands (a session that is really gone answers 404 there too)
                        404 => self.recover(
                            "PATCH answered 404 (chunk at a stale offset)".into(),
                            Some(0),
                        ),
                        s if matches!(s, 408 | 429 | 500 | 502 | 503 | 504) => self.recover(
                            format!("PATCH answered HTTP {s}"),
                            super::session::retry_after(&r),
                        ),
                        _ => Err(http_error(Method::Patch, &self.location, &r)),
                    },
                }
            }
            Up::Status => {
                let r = expect_response(
                    o,
                    Method::Get,
                    &SafeUrl::new(self.location.clone()).to_string(),
                )?;
                match r.status {
                    204 | 200 => {
                        self.saved = false;
                        self.set_location(&r, base).ok();
                        let got = r.header("range").and_then(parse_range_end).unwrap_or(0);
                        self.confirmed = got;
                        self.state = Up::Patch { end: got };
                        self.next_send()
                    }
                    404 if self.restartable || self.saved => {
                        self.saved = false;
                        // the registry lost the session (distribution does when a PATCH was cut
                        // before it could save its hash state): start over; the driver can
                        // produce the bytes again
                        self.location.clear();
                        self.confirmed = 0;
                        self.state = Up::Started;
                        let mut c = Call::new(
                            Method::Post,
                            format!("/v2/{}/blobs/uploads/", self.repo),
                            self.scopes(),
                        );
                        c.idempotent = true;
                        c.headers.push(("Content-Length".into(), "0".into()));
                        Ok(Step::Call(c))
                    }
                    404 => {
                        self.abandoned = true;
                        Err(Error::Protocol {
                            reason: format!(
                                "the upload session for {} is gone (HTTP 404); start again",
                                self.repo
                            ),
                        })
                    }
                    _ => Err(http_error(Method::Get, &self.location, &r)),
                }
            }
            Up::Put | Up::Commit => {
                let r = expect_response(
                    o,
                    Method::Put,
                    &SafeUrl::new(self.location.clone()).to_string(),
                )?;
                if r.status != 201 && r.status != 204 && r.status != 200 {
                    // 400: the registry refused the blob (DIGEST_INVALID, ...)
                    self.abandoned = r.status == 400;
                    return Err(http_error(Method::Put, &self.location, &r));
                }
                let (digest, size) = self.complete.clone().ok_or_else(|| {
                    // the PUT is sent only once the data is complete: a bug, not the registry
                    Error::internal("upload committed before completion")
                })?;
                if let Some(h) = r.header("docker-content-digest") {
                    let claimed = Digest::parse(h.trim())?;
                    if claimed != digest {
                        self.abandoned = true;
                        return Err(Error::DigestMismatch {
                            what: format!(
                                "blob uploaded to {} (registry's Docker-Content-Digest)",
                                self.repo
                            ),
                            expected: digest,
                            found: claimed,
                        });
                    }
                }
                if self.state == Up::Put {
                    self.confirmed = size;
                }
                self.state = Up::Done;
                Ok(Step::Done(digest))
            }
            Up::Done => Err(Error::Internal {
                reason: "upload already finished".into(),
            }),
        }
    }
}

/// Uploads a blob held in memory (configs, small layers): mounts nothing, sends one `PUT`.
pub fn upload_bytes(repo: &str, bytes: &[u8]) -> (Upload, Digest) {
    let digest = Digest::of(bytes);
    let mut u = Upload::new(
        repo,
        UploadConfig {
            monolithic_max: u64::MAX,
            ..UploadConfig::default()
        },
    );
    u.data_complete(digest.clone(), bytes.len() as u64);
    (u, digest)
}

/// Verifies streamed bytes against a digest and size as they pass.
#[derive(Debug, Default)]
pub struct Verifier {
    h: Hasher,
}

impl Verifier {
    /// Feeds bytes.
    pub fn update(&mut self, b: &[u8]) {
        self.h.update(b)
    }
    /// Checks the total.
    pub fn check(self, what: &str, digest: &Digest, size: Option<u64>) -> Result<(), Error> {
        let n = self.h.len();
        if let Some(s) = size {
            if s != n {
                return Err(Error::SizeMismatch {
                    what: what.into(),
                    expected: s,
                    found: n,
                });
            }
        }
        let found = self.h.finish();
        if &found != digest {
            return Err(Error::DigestMismatch {
                what: what.into(),
                expected: digest.clone(),
                found,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range_answer(r: Response) -> Result<Ranged, Error> {
        let d = Digest::of(b"blob");
        let mut op = GetRange::new("a/b", &d, 100..200);
        assert!(matches!(op.step(None, "").unwrap(), Step::Call(_)));
        match op.step(Some(Ok(r)), "")? {
            Step::Done(got) => Ok(got),
            _ => panic!("GetRange wants more after its answer"),
        }
    }

    fn open_answer(r: Response) -> Result<OpenedBlob, Error> {
        let d = Digest::of(b"blob");
        let mut op = OpenBlob::range("a/b", &d, 100..200);
        assert!(matches!(op.step(None, "").unwrap(), Step::Call(_)));
        match op.step(Some(Ok(r)), "")? {
            Step::Done(got) => Ok(got),
            _ => panic!("OpenBlob wants more after its answer"),
        }
    }

    #[test]
    fn a_206_whose_content_range_a_browser_hides_is_the_range_asked_for() {
        // (the page's CORS fetch: the registry does not expose Content-Range)
        let got = range_answer(Response::new(206, &[], b"xyz")).unwrap();
        assert_eq!(got, Ranged::Bytes(b"xyz".to_vec()));
        let r = Response::new(206, &[("Content-Range", "bytes 100-102/300")], b"xyz");
        assert_eq!(range_answer(r).unwrap(), Ranged::Bytes(b"xyz".to_vec()));
        assert_eq!(open_answer(Response::new(206, &[], b"")).unwrap().skip, 0);
    }

    #[test]
    fn a_206_from_another_byte_is_an_error_naming_it() {
        let r = Response::new(206, &[("Content-Range", "bytes 0-99/300")], b"x");
        let e = range_answer(r).unwrap_err().to_string();
        assert!(
            e.contains("bytes 100-199") && e.contains("bytes 0-99/300"),
            "{e}"
        );
        let r = Response::new(206, &[("Content-Range", "bytes 0-99/300")], b"x");
        let e = open_answer(r).unwrap_err().to_string();
        assert!(
            e.contains("from byte 100") && e.contains("bytes 0-99/300"),
            "{e}"
        );
    }
}
