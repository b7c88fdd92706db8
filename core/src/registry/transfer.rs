//! The transfer kernel: one registry operation run to its end for a driver that owns only the
//! sockets, the clock and the producer of the bytes.
//!
//! ```text
//!                 +------------------------ Transfer<Op, T> ------------------------+
//!   driver        |  Machine<Op>: auth, redirects, retries     Held<T>: the blob's   |
//!   -----------►  |  Source: none / once / restartable /       bytes the registry    |
//!   poll(now)     |          seekable (what the producer can)  has not confirmed     |
//!   ◄-----------  +-----------------------------------------------------------------+
//!   Action: Send(request + payload) | Wait(until) | Produce | Restart{from} | Event | Done
//!   inputs: handle_response / handle_error(NetError) / stream_ended / produced / produced_end
//!           / restarted
//! ```
//!
//! The driver contract, written once (and enforced: a call out of turn ends the transfer with
//! [`Error::Internal`] instead of being ignored):
//!
//! - Call [`Transfer::poll`] until it says [`Action::Done`]; act on each action before polling
//!   again.
//! - [`Action::Send`]: send the request with the [`Payload`] as its body (redirects not followed),
//!   then report exactly one of [`Transfer::handle_response`] or [`Transfer::handle_error`]. A
//!   [`Payload::Stream`] body is reported first with [`Transfer::stream_ended`]: where it
//!   stopped, and the bytes taken from the producer past its limit. While a request is on the
//!   wire the driver may produce the bytes [`Outgoing::ahead`] asks for and report them with
//!   [`Transfer::produced`] (the request's body is the driver's own copy or slices by then).
//! - [`Action::Produce`]: make the next bytes of the blob ([`Transfer::produced`], as many
//!   pieces as the driver likes) or its end ([`Transfer::produced_end`]), then poll.
//! - [`Action::Restart`]: start the producer again from the blob's first byte, call
//!   [`Transfer::restarted`], and report the bytes as it makes them; the kernel drops those the
//!   registry has (a streamed body is told how many to skip).
//! - [`Action::Wait`]: sleep until then. [`Action::Event`]: log it (`Display` gives the line).
//!
//! The kernel keeps the producer's bytes from the registry's confirmed offset on ([`Held`]),
//! decides when they must be made again and whether the producer can, and says so in events.

use std::collections::VecDeque;
use std::ops::Range;

use super::held::Held;
use super::ops::{OpenBlob, Upload};
use super::session::{backoff_ms, Event, Machine, NetError, Op, Output, Session};
use crate::digest::Digest;
use crate::error::Error;
use crate::http::{Body, Request, Response, SafeUrl};

/// What the driver's producer of upload bytes can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// There is nothing to upload (manifests, HEADs, mounts, downloads).
    None,
    /// The bytes come in order, once (a pipe): when the registry loses them, the upload fails
    /// with an error that says so.
    Once,
    /// The bytes come in order and can be made again from the first byte (files, a layer built
    /// deterministically, a blob downloaded again).
    Restartable,
    /// The driver gives any byte range itself (files sent as they are): the kernel holds
    /// nothing and asks for ranges ([`Payload::Range`]); `Produce` asks for the end (digest).
    Seekable {
        /// The blob's size.
        len: u64,
    },
}

/// A request the driver sends.
#[derive(Debug)]
pub struct Outgoing<'a, T> {
    /// Method, URL, headers (credentials included). Its `body` is left `Empty`: the body is
    /// the payload.
    pub request: Request,
    /// The body.
    pub payload: Payload<'a, T>,
    /// While this request is on the wire, produce the blob up to this offset if the producer
    /// can work meanwhile (the next chunk is made while this one travels).
    pub ahead: Option<u64>,
}

/// A request's body.
#[derive(Debug)]
pub enum Payload<'a, T> {
    /// None.
    Empty,
    /// These bytes (manifests, forms).
    Bytes(Vec<u8>),
    /// Bytes of the blob from the held pieces, each with the part of it in the body.
    Held(Vec<(&'a T, Range<usize>)>),
    /// Bytes `start..end` of the blob, from the driver's own ([`Source::Seekable`]) source.
    Range {
        /// First byte.
        start: u64,
        /// One past the last.
        end: u64,
    },
    /// The blob streamed from `start`: first the `held` parts, then, unless `producer_done`,
    /// the producer's next bytes after dropping `skip` of them, for at most `limit` bytes in
    /// all. Report [`Transfer::stream_ended`] before the answer.
    Stream {
        /// The held bytes from `start` on.
        held: Vec<(&'a T, Range<usize>)>,
        /// Offset of the body's first byte.
        start: u64,
        /// Producer bytes to drop before sending (a restarted producer makes the blob from
        /// byte 0; the body starts later).
        skip: u64,
        /// Most bytes in this body (`u64::MAX`: to the blob's end).
        limit: u64,
        /// The producer has made its last byte: the body is the held parts only.
        producer_done: bool,
    },
}

impl<T: AsRef<[u8]>> Payload<'_, T> {
    /// Bytes in the body (for a stream, those known up front).
    pub fn len(&self) -> u64 {
        match self {
            Payload::Empty => 0,
            Payload::Bytes(b) => b.len() as u64,
            Payload::Held(p) | Payload::Stream { held: p, .. } => {
                p.iter().map(|(_, r)| r.len() as u64).sum()
            }
            Payload::Range { start, end } => end - start,
        }
    }

    /// True when the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0 && !matches!(self, Payload::Stream { .. })
    }
}

/// How a streamed body ended, reported before its answer.
#[derive(Debug)]
pub struct StreamEnd<T> {
    /// The body stopped at its limit, at this offset of the blob (`None`: it ended with the
    /// blob, or was cut).
    pub limit_reached_at: Option<u64>,
    /// Bytes taken from the producer beyond the limit, in order: the next body starts with them.
    pub carry: Vec<T>,
    /// The body took bytes from the producer (not only held ones): after a cut those are lost.
    pub pulled: bool,
    /// The producer made its last byte during the body: the blob's digest and size.
    pub complete: Option<(Digest, u64)>,
}

/// What the driver does next.
#[derive(Debug)]
pub enum Action<'a, R, T> {
    /// Send a request, then report its answer.
    Send(Outgoing<'a, T>),
    /// Sleep until this time (ms on the driver's clock), then poll.
    Wait(u64),
    /// Make more of the blob ([`Transfer::produced`], [`Transfer::produced_end`]).
    Produce,
    /// Start the producer again from the blob's first byte, then call
    /// [`Transfer::restarted`]; sending goes on from byte `from`.
    Restart {
        /// Where sending goes on.
        from: u64,
    },
    /// Something to log.
    Event(Event),
    /// Finished.
    Done(Result<R, Error>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    /// A request is out; for a stream, whether its end was reported.
    Sending {
        stream: bool,
        ended: bool,
        blob: bool,
    },
    /// `Produce` was returned.
    Producing,
    /// `Restart` is due (`asked`: returned, waiting for `restarted`).
    Restart {
        from: u64,
        asked: bool,
    },
    Finished,
}

/// Every action but `Send`, owned (decided before the borrow of the held bytes is taken).
#[derive(Debug)]
enum Ctl<R> {
    Wait(u64),
    Produce,
    Restart(u64),
    Event(Event),
    Done(Result<R, Error>),
}

/// The body a request will have, decided before the borrow of the held bytes is taken.
#[derive(Debug)]
enum Spec {
    Empty,
    Bytes(Vec<u8>),
    Held { start: u64, end: u64 },
    Range { start: u64, end: u64 },
    Stream { start: u64, limit: u64 },
}

/// One operation run for a driver: see the [module docs](self).
pub struct Transfer<O: Op, T = Vec<u8>> {
    m: Machine<O>,
    held: Held<T>,
    source: Source,
    complete: Option<(Digest, u64)>,
    state: State,
    /// A request held back until the producer has restarted.
    next: Option<Request>,
    /// What the machine said, held back while events go first.
    stash: Option<Output<O::Output>>,
    events: VecDeque<Event>,
    fault: Option<Error>,
    /// The last [`Event::Confirmed`] reported.
    reported: Option<(u64, String)>,
    url: SafeUrl,
}

impl<O: Op, T: AsRef<[u8]>> core::fmt::Debug for Transfer<O, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Transfer")
            .field("source", &self.source)
            .field("state", &self.state)
            .field("held", &(self.held.start()..self.held.end()))
            .finish()
    }
}

impl<O: Op, T: AsRef<[u8]>> Transfer<O, T> {
    /// Runs `op` on `session`; an upload takes its bytes from a producer that can do what
    /// `source` says.
    pub fn new(session: Session, mut op: O, source: Source) -> Self {
        if let Some(u) = op.as_upload_mut() {
            u.set_restartable(matches!(
                source,
                Source::Restartable | Source::Seekable { .. }
            ));
            if let Source::Seekable { len } = source {
                u.data_available(len);
            }
        }
        Transfer {
            m: Machine::new(session, op),
            held: Held::new(),
            source,
            complete: None,
            state: State::Idle,
            next: None,
            stash: None,
            events: VecDeque::new(),
            fault: None,
            reported: None,
            url: SafeUrl::default(),
        }
    }

    /// Uploads a blob the driver holds whole (a config, a small layer) into `repo`: one `PUT`.
    /// Returns the blob's digest too.
    pub fn upload_bytes(session: Session, repo: &str, bytes: T) -> (Transfer<Upload, T>, Digest) {
        let (up, digest) = super::ops::upload_bytes(repo, bytes.as_ref());
        let size = bytes.as_ref().len() as u64;
        let mut t = Transfer::new(session, up, Source::Restartable);
        t.held.push(bytes);
        t.complete = Some((digest.clone(), size));
        (t, digest)
    }

    /// The operation (e.g. an upload's state, for a state file, after the end).
    pub fn op(&self) -> &O {
        self.m.op()
    }

    /// The session back, with the tokens it gathered, for the next operation.
    pub fn into_session(self) -> Session {
        self.m.into_session()
    }

    /// One past the last byte the producer made (what `ahead` compares with).
    pub fn produced_to(&self) -> u64 {
        self.held.end()
    }

    /// Bytes held (made, not yet confirmed).
    pub fn held(&self) -> u64 {
        self.held.held()
    }

    fn misuse(&mut self, what: &str) -> Result<(), Error> {
        let e = Error::internal(format!("driver contract: {what}"));
        self.fault = Some(e.clone());
        Err(e)
    }

    fn confirmed(&self) -> u64 {
        self.m.op().as_upload().map_or(0, Upload::confirmed)
    }

    /// The next thing for the driver to do.
    pub fn poll(&mut self, now: u64) -> Action<'_, O::Output, T> {
        let (mut req, spec) = match self.next_spec(now) {
            Ok(x) => x,
            Err(Ctl::Wait(t)) => return Action::Wait(t),
            Err(Ctl::Produce) => return Action::Produce,
            Err(Ctl::Restart(from)) => return Action::Restart { from },
            Err(Ctl::Event(e)) => return Action::Event(e),
            Err(Ctl::Done(r)) => return Action::Done(r),
        };
        let payload = match spec {
            Spec::Empty => Payload::Empty,
            Spec::Bytes(b) => Payload::Bytes(b),
            Spec::Range { start, end } => Payload::Range { start, end },
            Spec::Held { start, end } => match self.held.range(start, end) {
                Ok(p) => Payload::Held(p),
                Err(e) => {
                    self.state = State::Finished;
                    return Action::Done(Err(e));
                }
            },
            Spec::Stream { start, limit } => {
                let from = start.min(self.held.end());
                match self.held.range(from, self.held.end()) {
                    Ok(p) => Payload::Stream {
                        held: p,
                        start,
                        skip: start - from,
                        limit,
                        producer_done: self.complete.is_some(),
                    },
                    Err(e) => {
                        self.state = State::Finished;
                        return Action::Done(Err(e));
                    }
                }
            }
        };
        let ahead = match (&payload, self.source) {
            _ if self.complete.is_some() => None,
            (Payload::Range { start, end }, Source::Seekable { .. }) => Some(end + (end - start)),
            (Payload::Held(_), _) => {
                let n = req_len(&req);
                (self.held.held() < 2 * n).then(|| self.held.end() + n)
            }
            _ => None,
        };
        req.body = Body::Empty;
        Action::Send(Outgoing {
            request: req,
            payload,
            ahead,
        })
    }

    /// A request to send and its body, or (as `Err`) any other action.
    fn next_spec(&mut self, now: u64) -> Result<(Request, Spec), Ctl<O::Output>> {
        loop {
            if let Some(e) = self.fault.take() {
                self.state = State::Finished;
                return Err(Ctl::Done(Err(e)));
            }
            if let Some(ev) = self.events.pop_front() {
                return Err(Ctl::Event(ev));
            }
            match self.state {
                State::Finished => {
                    return Err(Ctl::Done(Err(Error::internal(
                        "driver contract: poll after the transfer finished",
                    ))))
                }
                State::Sending { .. } => {
                    self.state = State::Finished;
                    return Err(Ctl::Done(Err(Error::internal(
                        "driver contract: poll while a request is on the wire (report its answer first)",
                    ))));
                }
                State::Restart { from, asked: false } => {
                    self.state = State::Restart { from, asked: true };
                    return Err(Ctl::Restart(from));
                }
                State::Restart { asked: true, .. } => {
                    self.state = State::Finished;
                    return Err(Ctl::Done(Err(Error::internal(
                        "driver contract: poll before the producer restarted (call restarted)",
                    ))));
                }
                State::Producing | State::Idle => {}
            }
            let req = match self.next.take() {
                Some(r) => r,
                None => {
                    let out = match self.stash.take() {
                        Some(o) => o,
                        None => {
                            let o = self.m.poll(now);
                            // the operation has taken in the last answer: report where an
                            // upload stands first
                            if self.track() {
                                self.stash = Some(o);
                                continue;
                            }
                            o
                        }
                    };
                    match out {
                        Output::Send(r) => r,
                        Output::Wait(t) => return Err(Ctl::Wait(t)),
                        Output::Event(e) => return Err(Ctl::Event(e)),
                        Output::Done(r) => {
                            self.state = State::Finished;
                            return Err(Ctl::Done(r));
                        }
                        Output::NeedData => {
                            if matches!(self.source, Source::None) || self.complete.is_some() {
                                self.state = State::Finished;
                                return Err(Ctl::Done(Err(Error::internal(
                                    "the operation asked for more upload data than there is",
                                ))));
                            }
                            self.state = State::Producing;
                            return Err(Ctl::Produce);
                        }
                        Output::Pending => {
                            self.state = State::Finished;
                            return Err(Ctl::Done(Err(Error::internal(
                                "the machine waits for an answer that was not asked for",
                            ))));
                        }
                    }
                }
            };
            let (spec, start) = match &req.body {
                Body::Empty => (Spec::Empty, None),
                Body::Bytes(b) => (Spec::Bytes(b.clone()), None),
                Body::Blob { start, end } => match self.source {
                    Source::Seekable { .. } => (
                        Spec::Range {
                            start: *start,
                            end: *end,
                        },
                        None,
                    ),
                    _ => {
                        if *end > self.held.end()
                            && *start >= self.held.start()
                            && self.held.end() != u64::MAX
                        {
                            // a restarted producer has not made them yet
                            if self.complete.is_some() {
                                self.state = State::Finished;
                                return Err(Ctl::Done(Err(Error::internal(format!(
                                    "the upload asked for bytes {start}..{end} of a {}-byte blob",
                                    self.held.end()
                                )))));
                            }
                            self.next = Some(req);
                            self.state = State::Producing;
                            return Err(Ctl::Produce);
                        }
                        (
                            Spec::Held {
                                start: *start,
                                end: *end,
                            },
                            Some(*start),
                        )
                    }
                },
                Body::Stream { start, limit } => (
                    Spec::Stream {
                        start: *start,
                        limit: *limit,
                    },
                    Some(*start),
                ),
            };
            // bytes no longer held must be made again, if the producer can
            if let Some(start) = start {
                if start < self.held.start() || self.held.end() == u64::MAX {
                    if self.source != Source::Restartable {
                        self.state = State::Finished;
                        return Err(Ctl::Done(Err(Error::Io {
                            what: "the upload".into(),
                            reason: format!(
                                "it was interrupted at byte {start} and its input cannot be \
                                 read again (a pipe); run the command again"
                            ),
                        })));
                    }
                    self.events.push_back(Event::MakingAgain { from: start });
                    self.state = State::Restart {
                        from: start,
                        asked: false,
                    };
                    self.next = Some(req);
                    continue;
                }
            }
            let stream = matches!(spec, Spec::Stream { .. });
            let blob = !matches!(spec, Spec::Empty | Spec::Bytes(_));
            self.state = State::Sending {
                stream,
                ended: !stream,
                blob,
            };
            self.url = SafeUrl::new(req.url.clone());
            return Ok((req, spec));
        }
    }

    /// Reports how a [`Payload::Stream`] body ended (before its answer).
    pub fn stream_ended(&mut self, end: StreamEnd<T>) -> Result<(), Error> {
        let State::Sending {
            stream: true,
            ended: false,
            blob,
        } = self.state
        else {
            return self.misuse("stream_ended without a streamed request on the wire");
        };
        self.state = State::Sending {
            stream: true,
            ended: true,
            blob,
        };
        match end.limit_reached_at {
            Some(at) => {
                // the segment went whole: the bytes made past it come next
                self.held.clear_to(at);
                for c in end.carry {
                    self.held.push(c);
                }
            }
            // the stream took bytes past the held ones: only a restart can give them again
            None if end.pulled => self.held.clear_to(u64::MAX),
            None => {}
        }
        if let Some(u) = self.m.op_mut().as_upload_mut() {
            if self.held.end() != u64::MAX {
                u.data_available(self.held.end());
            }
        }
        if let Some((d, n)) = end.complete {
            self.complete_with(d, n);
        }
        Ok(())
    }

    fn answered(&mut self) -> Result<bool, Error> {
        match self.state {
            State::Sending {
                ended: true, blob, ..
            } => {
                self.state = State::Idle;
                Ok(blob)
            }
            State::Sending { ended: false, .. } => self
                .misuse("the answer to a streamed request before stream_ended")
                .map(|_| false),
            _ => self
                .misuse("an answer reported when no request was on the wire")
                .map(|_| false),
        }
    }

    /// The answer to the request of the last [`Action::Send`].
    pub fn handle_response(&mut self, now: u64, resp: Response) -> Result<(), Error> {
        let blob = self.answered()?;
        if blob && matches!(resp.status, 404 | 416) {
            self.events.push_back(Event::ChunkRefused {
                status: resp.status,
            });
        }
        self.m.handle_response(now, resp);
        Ok(())
    }

    /// The request of the last [`Action::Send`] got no answer.
    pub fn handle_error(&mut self, now: u64, error: NetError) -> Result<(), Error> {
        self.answered()?;
        self.events.push_back(Event::RequestFailed {
            url: self.url.clone(),
            error: error.clone(),
        });
        self.m.handle_error(now, error);
        Ok(())
    }

    /// Drops the bytes the registry confirmed; true when that is news (an event is queued).
    fn track(&mut self) -> bool {
        let Some(u) = self.m.op().as_upload() else {
            return false;
        };
        let (c, loc) = (u.confirmed(), u.location().map(str::to_string));
        if self.held.end() != u64::MAX {
            self.held.drop_before(c);
        }
        match loc {
            Some(loc) if self.reported.as_ref() != Some(&(c, loc.clone())) => {
                self.reported = Some((c, loc.clone()));
                self.events.push_back(Event::Confirmed {
                    bytes: c,
                    location: loc,
                });
                true
            }
            _ => false,
        }
    }

    fn ready(&mut self) {
        if self.state == State::Producing {
            self.state = State::Idle;
            self.m.data_ready();
        }
    }

    /// The producer's next bytes.
    pub fn produced(&mut self, piece: T) -> Result<(), Error> {
        self.may_produce()?;
        self.held.push(piece);
        self.took_bytes();
        Ok(())
    }

    /// Refuses bytes out of turn: for a transfer without a sequential producer, while a
    /// restart is due, after the end.
    fn may_produce(&mut self) -> Result<(), Error> {
        if !matches!(self.source, Source::Once | Source::Restartable) {
            return self.misuse("bytes produced for a transfer without a sequential producer");
        }
        if matches!(self.state, State::Finished | State::Restart { .. }) {
            return self.misuse("bytes produced while a restart is due or after the end");
        }
        if self.complete.is_some() {
            return self.misuse("bytes produced after the end of the blob");
        }
        Ok(())
    }

    /// New bytes are held: those the registry has go, the upload learns how far the blob is.
    fn took_bytes(&mut self) {
        let c = self.confirmed();
        self.held.drop_before(c);
        let end = self.held.end();
        if let Some(u) = self.m.op_mut().as_upload_mut() {
            u.data_available(end);
        }
        self.ready();
    }

    /// The blob is whole: `size` bytes with `digest` (after its last [`Transfer::produced`];
    /// for a [`Source::Seekable`] producer, once it has hashed the blob).
    pub fn produced_end(&mut self, digest: Digest, size: u64) -> Result<(), Error> {
        match self.source {
            Source::None => return self.misuse("a blob's end for a transfer without a producer"),
            Source::Seekable { len } if len != size => {
                return self.misuse("a seekable blob ended at another size than it was given")
            }
            Source::Once | Source::Restartable if self.held.end() != size => {
                let e = Error::SizeMismatch {
                    what: format!("blob {digest} as produced"),
                    expected: size,
                    found: self.held.end(),
                };
                self.fault = Some(e.clone());
                return Err(e);
            }
            _ => {}
        }
        if matches!(self.state, State::Finished | State::Restart { .. }) {
            return self.misuse("a blob's end while a restart is due or after the end");
        }
        self.complete_with(digest, size);
        self.ready();
        Ok(())
    }

    fn complete_with(&mut self, digest: Digest, size: u64) {
        if let Some(u) = self.m.op_mut().as_upload_mut() {
            u.data_complete(digest.clone(), size);
        }
        self.complete = Some((digest, size));
    }

    /// The producer was started again from the blob's first byte (after [`Action::Restart`]).
    pub fn restarted(&mut self) -> Result<(), Error> {
        let State::Restart { asked: true, .. } = self.state else {
            return self.misuse("restarted without a Restart asked for");
        };
        self.held.clear_to(0);
        self.complete = None;
        self.state = State::Idle;
        Ok(())
    }
}

fn req_len(r: &Request) -> u64 {
    r.body.len()
}

impl<O: Op> Transfer<O, Vec<u8>> {
    /// [`Transfer::produced`] for small slices (codecs hand over a few KiB at a time),
    /// gathered into pieces of at least `piece` bytes.
    pub fn produced_slice(&mut self, b: &[u8], piece: usize) -> Result<(), Error> {
        self.may_produce()?;
        self.held.gather(b, piece);
        self.took_bytes();
        Ok(())
    }
}

/// Most times a cut download is continued before its error is final.
pub const DOWNLOAD_RESUMES: u32 = 5;

/// A blob download that continues where it was cut: the driver counts the bytes it read
/// ([`Download::read`]); when a read fails, [`Download::failed`] says whether to reopen the blob
/// from that byte ([`OpenBlob::from_offset`]) and after what wait, within
/// [`DOWNLOAD_RESUMES`]. The caller verifies the digest of everything read, so a resumed
/// download is checked as a whole.
#[derive(Debug, Clone)]
pub struct Download {
    repo: String,
    digest: Digest,
    pos: u64,
    end: Option<u64>,
    attempts: u32,
}

/// What to do about a cut download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reopen {
    /// Reopen from this byte.
    pub from: u64,
    /// After this wait (ms).
    pub wait_ms: u64,
    /// The line to log.
    pub event: Event,
}

impl Download {
    /// A download of `digest` from `repo`.
    pub fn new(repo: &str, digest: &Digest) -> Self {
        Download {
            repo: repo.into(),
            digest: digest.clone(),
            pos: 0,
            end: None,
            attempts: 0,
        }
    }

    /// A download of bytes `range` of `digest` ([`OpenBlob::range`]); a cut one reopens the
    /// rest of the range.
    pub fn range(repo: &str, digest: &Digest, range: std::ops::Range<u64>) -> Self {
        Download {
            pos: range.start,
            end: Some(range.end),
            ..Self::new(repo, digest)
        }
    }

    /// `n` more bytes were read.
    pub fn read(&mut self, n: u64) {
        self.pos += n;
    }

    /// Bytes read so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Attempts made to continue.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// A read (or a reopening) failed with `error`: reopen, or give up with the final error.
    pub fn failed(&mut self, error: &str) -> Result<Reopen, Error> {
        if self.attempts >= DOWNLOAD_RESUMES {
            return Err(Error::RetriesExhausted {
                attempts: self.attempts,
                last: Box::new(Error::Protocol {
                    reason: format!(
                        "download of {} cut at byte {}: {error}",
                        self.digest, self.pos
                    ),
                }),
            });
        }
        self.attempts += 1;
        let wait_ms = backoff_ms(self.attempts);
        Ok(Reopen {
            from: self.pos,
            wait_ms,
            event: Event::Retrying {
                reason: format!(
                    "download of {} cut at byte {}: {error}",
                    self.digest, self.pos
                ),
                attempt: self.attempts,
                delay_ms: wait_ms,
            },
        })
    }

    /// The operation that reopens the blob where the download stands.
    pub fn reopen(&self) -> OpenBlob {
        match self.end {
            Some(end) => OpenBlob::range(&self.repo, &self.digest, self.pos..end),
            None => OpenBlob::from_offset(&self.repo, &self.digest, self.pos),
        }
    }

    /// The operation that opens the download at its start.
    pub fn open(&self) -> OpenBlob {
        self.reopen()
    }
}
