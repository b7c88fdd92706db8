//! The machines against an in-memory registry that can be made to misbehave: request sequences
//! (snapshots), auth flows, upload recovery, retries, redirects and lying registries.

use super::*;
use crate::auth::{Credentials, Secret};
use crate::digest::Digest;
use crate::error::Error;
use crate::http::{Method, Request, Response};
use crate::reference::Scheme;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

#[derive(Default)]
struct Fake {
    bearer: bool,
    basic: bool,
    cog: bool,
    token_ttl: u64,
    log: Vec<String>,
    upload: Vec<u8>,
    committed: Vec<(String, Vec<u8>)>,
    manifests: Vec<(String, Vec<u8>)>,
    /// answer the Nth PATCH with this status (then behave)
    patch_fail: Option<(usize, u16)>,
    /// drop the connection on the Nth PATCH after storing half of it
    patch_drop: Option<usize>,
    /// drop the connection on the Nth PATCH and forget the upload session (404 until a new POST)
    lose_session: Option<usize>,
    lost: bool,
    patches: usize,
    fail_get_manifest: Vec<u16>,
    lie_digest: bool,
    tokens_issued: usize,
    redirect_blob_to: Option<String>,
    token_body: Option<String>,
    seen_auth: Vec<(String, Option<String>)>,
}

enum Reply {
    R(Response),
    Drop,
}

impl Fake {
    fn path(url: &str) -> String {
        crate::http::split_url(url)
            .map(|(_, _, p)| p.to_string())
            .unwrap_or_default()
    }

    fn handle(&mut self, req: &Request, body: &[u8]) -> Reply {
        let path = Self::path(&req.url);
        let auth = req.header("authorization").map(str::to_string);
        self.seen_auth.push((req.url.clone(), auth.clone()));
        let shown = match (&auth, req.method) {
            (Some(a), _) if a.starts_with("Bearer") => " [bearer]",
            (Some(a), _) if a.starts_with("Basic") => " [basic]",
            _ => "",
        };
        let short_path = path.split("?_state").next().unwrap_or(&path).to_string();
        let cr = req
            .header("content-range")
            .map(|c| format!(" range={c}"))
            .unwrap_or_default();
        self.log.push(format!(
            "{} {}{}{}{}",
            req.method,
            short_path,
            cr,
            if body.is_empty() {
                String::new()
            } else {
                format!(" ({} B)", body.len())
            },
            shown
        ));
        let r = |s: u16, h: &[(&str, &str)], b: &[u8]| Reply::R(Response::new(s, h, b));
        if path.starts_with("/token") {
            self.tokens_issued += 1;
            if let Some(b) = &self.token_body {
                return r(200, &[], b.clone().as_bytes());
            }
            if self.cog
                && auth.as_deref()
                    != Some(&Credentials::basic_header(
                        "cog-user",
                        &Secret::new("r8_tok"),
                    ))
            {
                return r(401, &[], b"");
            }
            let body = format!(
                "{{\"token\":\"tok{}\",\"expires_in\":{}}}",
                self.tokens_issued,
                self.token_ttl.max(60)
            );
            return r(200, &[], body.as_bytes());
        }
        if path == "/cog/v1/verify-token" {
            return if body == b"token=r8_tok" {
                r(200, &[], br#"{"username":"cog-user"}"#)
            } else {
                r(401, &[], b"")
            };
        }
        let authed = match &auth {
            Some(a) if self.bearer => a.starts_with("Bearer tok"),
            Some(a) if self.basic => a == &Credentials::basic_header("u", &Secret::new("p")),
            None => !self.bearer && !self.basic,
            _ => false,
        };
        if !authed {
            if let Some(host) = req
                .url
                .split("://")
                .nth(1)
                .and_then(|r| r.split('/').next())
            {
                if host.starts_with("storage") {
                    return r(200, &[], b"blobdata");
                }
            }
            let ch = if self.bearer {
                "Bearer realm=\"https://auth.example/token\",service=\"reg\",scope=\"repository:a/b:pull\"".to_string()
            } else {
                "Basic realm=\"x\"".into()
            };
            return r(
                401,
                &[("WWW-Authenticate", &ch)],
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            );
        }
        if path == "/v2/" {
            return r(200, &[], b"{}");
        }
        if path.starts_with("/v2/a/b/blobs/uploads/") && req.method == Method::Post {
            if path.contains("mount=") {
                return r(201, &[], b"");
            }
            self.upload.clear();
            self.lost = false;
            return r(
                202,
                &[
                    ("Location", "/v2/a/b/blobs/uploads/u1?_state=0"),
                    ("Range", "0-0"),
                ],
                b"",
            );
        }
        if path.starts_with("/v2/a/b/blobs/uploads/u1") {
            if self.lost {
                return r(404, &[], br#"{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN","message":"blob upload unknown"}]}"#);
            }
            match req.method {
                Method::Patch => {
                    self.patches += 1;
                    if self.lose_session == Some(self.patches) {
                        self.lost = true;
                        self.upload.clear();
                        return Reply::Drop;
                    }
                    if self.patch_drop == Some(self.patches) {
                        self.upload.extend_from_slice(&body[..body.len() / 2]);
                        return Reply::Drop;
                    }
                    if let Some((n, s)) = self.patch_fail {
                        if n == self.patches {
                            return r(s, &[], b"");
                        }
                    }
                    let start: usize = if req.header("content-range").is_none() {
                        self.upload.len()
                    } else {
                        req.header("content-range")
                            .and_then(|c| c.split('-').next())
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(0)
                    };
                    if start != self.upload.len() {
                        return r(416, &[], b"");
                    }
                    self.upload.extend_from_slice(body);
                    let range = format!("0-{}", self.upload.len() - 1);
                    let loc = format!("/v2/a/b/blobs/uploads/u1?_state={}", self.upload.len());
                    return r(202, &[("Location", &loc), ("Range", &range)], b"");
                }
                Method::Get => {
                    let range = format!("0-{}", self.upload.len().saturating_sub(1));
                    return r(
                        204,
                        &[
                            ("Range", &range),
                            ("Location", "/v2/a/b/blobs/uploads/u1?_state=s"),
                        ],
                        b"",
                    );
                }
                Method::Put => {
                    self.upload.extend_from_slice(body);
                    let d = Digest::of(&self.upload);
                    let want = path
                        .split("digest=")
                        .nth(1)
                        .unwrap_or("")
                        .replace("%3A", ":");
                    if d.to_string() != want {
                        return r(400, &[], br#"{"errors":[{"code":"DIGEST_INVALID","message":"provided digest did not match uploaded content"}]}"#);
                    }
                    let shown = if self.lie_digest {
                        Digest::of(b"lie").to_string()
                    } else {
                        d.to_string()
                    };
                    self.committed
                        .push((d.to_string(), std::mem::take(&mut self.upload)));
                    return r(201, &[("Docker-Content-Digest", &shown)], b"");
                }
                _ => {}
            }
        }
        if let Some(reference) = path.strip_prefix("/v2/a/b/manifests/") {
            match req.method {
                Method::Put => {
                    self.manifests.push((reference.to_string(), body.to_vec()));
                    let d = if self.lie_digest {
                        Digest::of(b"lie")
                    } else {
                        Digest::of(body)
                    };
                    return r(201, &[("Docker-Content-Digest", &d.to_string())], b"");
                }
                Method::Get => {
                    if let Some(s) = self.fail_get_manifest.pop() {
                        return r(s, &[("Retry-After", "2")], b"");
                    }
                    let m = self
                        .manifests
                        .iter()
                        .find(|(t, _)| t == reference)
                        .map(|(_, b)| b.clone());
                    return match m {
                        Some(b) => {
                            let d = if self.lie_digest { Digest::of(b"lie") } else { Digest::of(&b) };
                            r(200, &[("Docker-Content-Digest", &d.to_string()), ("Content-Type", crate::media::OCI_MANIFEST)], &b)
                        }
                        None => r(404, &[], br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#),
                    };
                }
                _ => {}
            }
        }
        if path.starts_with("/v2/a/b/blobs/sha256:") {
            if let Some(to) = &self.redirect_blob_to {
                return r(307, &[("Location", to)], b"");
            }
            return r(404, &[], b"");
        }
        r(404, &[], b"")
    }
}

struct Run<T> {
    result: Result<T, Error>,
    sent_blob_bytes: u64,
    waits: Vec<u64>,
    /// What the driver saw and did, one line each (runs of `produce` folded).
    transcript: Vec<String>,
}

/// [`drive`] of an anonymous upload to `a/b` whose producer can start again.
fn upload(fake: &mut Fake, cfg: UploadConfig, data: &[u8], step: usize) -> (Run<Digest>, Session) {
    drive(
        fake,
        session(Credentials::Anonymous),
        Upload::new("a/b", cfg),
        data,
        step,
        Source::Restartable,
    )
}

/// A driver over the transfer kernel and the fake: it produces the blob `step` bytes at a
/// time (`usize::MAX`: all of it before the first poll, as for blobs held in memory), makes
/// what `ahead` asks while a request travels, streams bodies from the producer, restarts it
/// when asked, and writes down each action.
fn drive<O: Op>(
    fake: &mut Fake,
    session: Session,
    op: O,
    data: &[u8],
    step: usize,
    source: Source,
) -> (Run<O::Output>, Session) {
    let mut t: Transfer<O, Vec<u8>> = Transfer::new(session, op, source);
    let mut now = 1_000u64;
    let len = data.len();
    let digest = Digest::of(data);
    let mut made = 0usize;
    let mut sent_blob_bytes = 0;
    let mut waits = Vec::new();
    let mut answered = now;
    let mut log: Vec<String> = Vec::new();
    let note = |log: &mut Vec<String>, line: String| match log.last_mut() {
        Some(last) if line == "produce" && (last == "produce" || last.starts_with("produce ×")) => {
            let n: usize = last
                .strip_prefix("produce ×")
                .map_or(1, |n| n.parse().unwrap());
            *last = format!("produce ×{}", n + 1);
        }
        _ => log.push(line),
    };
    if step == usize::MAX && source != Source::None {
        t.produced(data.to_vec()).unwrap();
        t.produced_end(digest.clone(), len as u64).unwrap();
        made = len;
    }
    let step = step.clamp(1, len.max(1));
    for _ in 0..200_000 {
        match t.poll(now) {
            Action::Send(o) => {
                let Outgoing {
                    request: req,
                    payload,
                    ahead,
                } = o;
                let mut streamed = None;
                let shown = match &payload {
                    Payload::Empty => String::new(),
                    Payload::Bytes(b) => format!(" bytes {}", b.len()),
                    Payload::Held(_) => format!(" held {}", payload.len()),
                    Payload::Range { start, end } => format!(" range {start}..{end}"),
                    Payload::Stream {
                        start, skip, limit, ..
                    } => format!(
                        " stream from {start} skip {skip} limit {}",
                        if *limit == u64::MAX {
                            "-".to_string()
                        } else {
                            limit.to_string()
                        }
                    ),
                };
                let body: Vec<u8> = match payload {
                    Payload::Empty => Vec::new(),
                    Payload::Bytes(b) => b,
                    Payload::Held(parts) => parts
                        .iter()
                        .flat_map(|(p, r)| p[r.clone()].to_vec())
                        .collect(),
                    Payload::Range { start, end } => data[start as usize..end as usize].to_vec(),
                    Payload::Stream {
                        held,
                        start,
                        mut skip,
                        limit,
                        producer_done,
                    } => {
                        let mut body: Vec<u8> = held
                            .iter()
                            .flat_map(|(p, r)| p[r.clone()].to_vec())
                            .collect();
                        let mut carry = Vec::new();
                        let mut pulled = false;
                        let mut at = None;
                        if body.len() as u64 > limit {
                            carry.push(body.split_off(limit as usize));
                        }
                        while !producer_done && (body.len() as u64) < limit && made < len {
                            let n = step.min(len - made);
                            let mut piece = &data[made..made + n];
                            made += n;
                            pulled = true;
                            let k = (skip as usize).min(piece.len());
                            skip -= k as u64;
                            piece = &piece[k..];
                            let room = (limit - body.len() as u64).min(piece.len() as u64) as usize;
                            body.extend_from_slice(&piece[..room]);
                            if room < piece.len() {
                                carry.push(piece[room..].to_vec());
                            }
                        }
                        if body.len() as u64 == limit {
                            at = Some(start + limit);
                        }
                        let complete =
                            (!producer_done && made == len).then(|| (digest.clone(), len as u64));
                        streamed = Some(StreamEnd {
                            limit_reached_at: at,
                            carry,
                            pulled,
                            complete,
                        });
                        body
                    }
                };
                if req.method == Method::Patch || req.method == Method::Put {
                    sent_blob_bytes +=
                        if req.header("content-type") == Some("application/octet-stream") {
                            body.len() as u64
                        } else {
                            0
                        };
                }
                note(
                    &mut log,
                    format!(
                        "send {} {}{shown}{}",
                        req.method,
                        Fake::path(&req.url).split('?').next().unwrap_or(""),
                        ahead.map(|a| format!(" ahead {a}")).unwrap_or_default()
                    ),
                );
                // the next bytes are made while the request travels
                if let Some(a) = ahead {
                    let seekable = matches!(source, Source::Seekable { .. });
                    while (made as u64) < a && made < len {
                        let n = step.min(len - made);
                        // a seekable source only hashes ahead
                        if !seekable {
                            t.produced(data[made..made + n].to_vec()).unwrap();
                        }
                        made += n;
                    }
                    if made == len {
                        t.produced_end(digest.clone(), len as u64).unwrap();
                    }
                }
                if let Some(end) = streamed {
                    note(
                        &mut log,
                        format!(
                            "stream ended at {:?} carry {} pulled {} complete {}",
                            end.limit_reached_at,
                            end.carry.iter().map(Vec::len).sum::<usize>(),
                            end.pulled,
                            end.complete.is_some()
                        ),
                    );
                    t.stream_ended(end).unwrap();
                }
                answered = now;
                match fake.handle(&req, &body) {
                    Reply::R(r) => {
                        note(
                            &mut log,
                            format!(
                                "← {}{}",
                                r.status,
                                r.header("range")
                                    .map(|g| format!(" range {g}"))
                                    .unwrap_or_default()
                            ),
                        );
                        t.handle_response(now, r).unwrap()
                    }
                    Reply::Drop => {
                        note(&mut log, "← cut".into());
                        t.handle_error(now, NetError::Reset("connection reset by peer".into()))
                            .unwrap()
                    }
                }
            }
            Action::Wait(w) => {
                note(&mut log, format!("wait {}", w - answered));
                waits.push(w - answered);
                now = w;
            }
            Action::Produce => {
                note(&mut log, "produce".into());
                if let Source::Seekable { .. } = source {
                    t.produced_end(digest.clone(), len as u64).unwrap();
                } else if made < len {
                    let n = step.min(len - made);
                    t.produced(data[made..made + n].to_vec()).unwrap();
                    made += n;
                    if made == len {
                        t.produced_end(digest.clone(), len as u64).unwrap();
                    }
                } else {
                    t.produced_end(digest.clone(), len as u64).unwrap();
                }
            }
            Action::Restart { from } => {
                note(&mut log, format!("restart (send from {from})"));
                made = 0;
                t.restarted().unwrap();
            }
            Action::Event(e) => {
                let line = match &e {
                    // jitter differs by seed; the line says the kind
                    Event::Retrying { attempt, .. } => format!("event retrying ({attempt})"),
                    other => format!("event {other}"),
                };
                note(&mut log, line);
            }
            Action::Done(r) => {
                note(
                    &mut log,
                    match &r {
                        Ok(_) => "done".to_string(),
                        Err(e) => format!("failed: {e}"),
                    },
                );
                return (
                    Run {
                        result: r,
                        sent_blob_bytes,
                        waits,
                        transcript: log,
                    },
                    t.into_session(),
                );
            }
        }
        now += 1;
    }
    panic!("transfer did not finish: {log:#?}");
}

fn session(creds: Credentials) -> Session {
    Session::new("reg.example", Scheme::Https, creds, 42)
}

fn cfg(chunk: u64) -> UploadConfig {
    UploadConfig {
        monolithic_max: 0,
        chunk_max: chunk,
        chunk_min: 0,
        max_resumes: 4,
        stream: false,
        segment: u64::MAX,
    }
}

#[test]
fn chunked_push_with_bearer_auth_request_sequence() {
    let mut fake = Fake {
        bearer: true,
        ..Fake::default()
    };
    let data = b"0123456789".to_vec();
    let creds = Credentials::Basic {
        username: "u".into(),
        password: Secret::new("p"),
    };
    let (run, s) = drive(
        &mut fake,
        session(creds),
        Upload::new("a/b", cfg(4)),
        &data,
        4,
        Source::Restartable,
    );
    assert_eq!(run.result.unwrap(), Digest::of(&data));
    let (run2, _) = drive(
        &mut fake,
        s,
        PutManifest::new("a/b", "v1", crate::media::OCI_MANIFEST, b"{}".to_vec()),
        &[],
        1,
        Source::None,
    );
    run2.result.unwrap();
    let want = [
        "GET /v2/",
        "GET /token?service=reg&scope=repository%3Aa%2Fb%3Apull%2Cpush [basic]",
        "POST /v2/a/b/blobs/uploads/ [bearer]",
        "PATCH /v2/a/b/blobs/uploads/u1 range=0-3 (4 B) [bearer]",
        "PATCH /v2/a/b/blobs/uploads/u1 range=4-7 (4 B) [bearer]",
        "PATCH /v2/a/b/blobs/uploads/u1 range=8-9 (2 B) [bearer]",
        "PUT /v2/a/b/blobs/uploads/u1 [bearer]",
        "PUT /v2/a/b/manifests/v1 (2 B) [bearer]",
    ];
    let got: Vec<String> = fake
        .log
        .iter()
        .map(|l| {
            l.replace("?digest=sha256%3A", "")
                .split("?digest")
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    let got: Vec<String> = got
        .iter()
        .map(|l| {
            if l.starts_with("PUT /v2/a/b/blobs/uploads/u1") {
                "PUT /v2/a/b/blobs/uploads/u1 [bearer]".into()
            } else {
                l.clone()
            }
        })
        .collect();
    assert_eq!(
        got,
        want,
        "request sequence changed:\n{}",
        fake.log.join("\n")
    );
    assert_eq!(fake.committed[0].1, data);
    assert_eq!(
        fake.tokens_issued, 1,
        "the token is reused for the manifest push"
    );
}

#[test]
fn uploads_agree_at_every_feed_size_and_small_blobs_go_monolithic() {
    let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 256) as u8).collect();
    for step in [1usize, 7, 4096, data.len()] {
        let mut fake = Fake::default();
        let (run, _) = drive(
            &mut fake,
            session(Credentials::Anonymous),
            Upload::new("a/b", cfg(1000)),
            &data,
            step,
            Source::Restartable,
        );
        assert_eq!(run.result.unwrap(), Digest::of(&data), "step {step}");
        assert_eq!(fake.committed[0].1, data);
        assert_eq!(run.sent_blob_bytes, data.len() as u64, "nothing sent twice");
    }
    let mut fake = Fake::default();
    let (u, d) = upload_bytes("a/b", b"config");
    let (run, _) = drive(
        &mut fake,
        session(Credentials::Anonymous),
        u,
        b"config",
        usize::MAX,
        Source::Restartable,
    );
    assert_eq!(run.result.unwrap(), d);
    assert!(
        fake.log.iter().all(|l| !l.starts_with("PATCH")),
        "{:?}",
        fake.log
    );
}

#[test]
fn a_refused_chunk_is_recovered_from_the_upload_status() {
    // 416: out of order; 404: distribution's answer to a chunk at a stale offset, e.g. when a
    // browser resent a cut PATCH on its own with an old `_state`
    for status in [416, 404] {
        let data: Vec<u8> = (0..100u8).collect();
        let mut fake = Fake {
            patch_fail: Some((2, status)),
            ..Fake::default()
        };
        let (run, _) = drive(
            &mut fake,
            session(Credentials::Anonymous),
            Upload::new("a/b", cfg(30)),
            &data,
            100,
            Source::Restartable,
        );
        assert_eq!(run.result.unwrap(), Digest::of(&data), "{status}");
        assert!(
            fake.log
                .iter()
                .any(|l| l.starts_with("GET /v2/a/b/blobs/uploads/u1")),
            "{status}: {:?}",
            fake.log
        );
        assert_eq!(fake.committed[0].1, data);
    }
}

#[test]
fn a_lost_session_starts_over_when_the_driver_can_make_the_bytes_again() {
    let data: Vec<u8> = (0..200u8).collect();
    for restartable in [true, false] {
        let mut fake = Fake {
            lose_session: Some(3),
            ..Fake::default()
        };
        let (run, _) = drive(
            &mut fake,
            session(Credentials::Anonymous),
            Upload::new("a/b", cfg(50)),
            &data,
            200,
            if restartable {
                Source::Restartable
            } else {
                Source::Once
            },
        );
        if restartable {
            assert_eq!(run.result.unwrap(), Digest::of(&data));
            assert_eq!(fake.committed[0].1, data);
            assert_eq!(
                fake.log.iter().filter(|l| l.starts_with("POST")).count(),
                2,
                "a second session: {:?}",
                fake.log
            );
        } else {
            let e = run.result.unwrap_err().to_string();
            assert!(e.contains("gone"), "{e}");
        }
    }
}

#[test]
fn a_dropped_connection_mid_chunk_resends_at_most_one_chunk() {
    let data: Vec<u8> = (0..200u8).collect();
    let mut fake = Fake {
        patch_drop: Some(3),
        ..Fake::default()
    };
    let (run, _) = drive(
        &mut fake,
        session(Credentials::Anonymous),
        Upload::new("a/b", cfg(50)),
        &data,
        200,
        Source::Restartable,
    );
    assert_eq!(run.result.unwrap(), Digest::of(&data));
    assert_eq!(fake.committed[0].1, data);
    assert!(
        run.sent_blob_bytes - data.len() as u64 <= 50,
        "resent {} bytes",
        run.sent_blob_bytes - 200
    );
}

#[test]
fn retries_5xx_with_retry_after_then_succeeds() {
    let mut fake = Fake {
        fail_get_manifest: vec![503, 429],
        ..Fake::default()
    };
    fake.manifests
        .push(("v1".into(), b"{\"schemaVersion\":2}".to_vec()));
    let (run, _) = drive(
        &mut fake,
        session(Credentials::Anonymous),
        GetManifest::new("a/b", "v1"),
        &[],
        1,
        Source::None,
    );
    assert_eq!(run.result.unwrap().bytes, b"{\"schemaVersion\":2}");
    assert_eq!(run.waits, vec![2000, 2000], "Retry-After honoured");
    // without end: bounded
    let mut fake = Fake {
        fail_get_manifest: vec![500; 20],
        ..Fake::default()
    };
    let (run, _) = drive(
        &mut fake,
        session(Credentials::Anonymous),
        GetManifest::new("a/b", "v1"),
        &[],
        1,
        Source::None,
    );
    let e = run.result.unwrap_err();
    assert!(
        matches!(e, Error::RetriesExhausted { attempts: 5, .. }),
        "{e}"
    );
}

#[test]
fn cog_token_flow_verifies_then_uses_basic_for_the_token() {
    let mut fake = Fake {
        bearer: true,
        cog: true,
        ..Fake::default()
    };
    fake.manifests.push(("v1".into(), b"{}".to_vec()));
    let (run, _) = drive(
        &mut fake,
        session(Credentials::CogToken(Secret::new("r8_tok"))),
        GetManifest::new("a/b", "v1"),
        &[],
        1,
        Source::None,
    );
    run.result.unwrap();
    assert_eq!(fake.log[1], "POST /cog/v1/verify-token (12 B)");
    assert!(
        fake.log[2].starts_with("GET /token") && fake.log[2].ends_with("[basic]"),
        "{:?}",
        fake.log
    );
    let mut fake = Fake {
        bearer: true,
        cog: true,
        ..Fake::default()
    };
    let (run, _) = drive(
        &mut fake,
        session(Credentials::CogToken(Secret::new("wrong"))),
        GetManifest::new("a/b", "v1"),
        &[],
        1,
        Source::None,
    );
    let e = run.result.unwrap_err().to_string();
    assert!(
        e.contains("Cog token was refused") && !e.contains("wrong"),
        "{e}"
    );
}

#[test]
fn expired_tokens_are_fetched_again() {
    let mut fake = Fake {
        bearer: true,
        token_ttl: 60,
        ..Fake::default()
    };
    fake.manifests.push(("v1".into(), b"{}".to_vec()));
    let creds = Credentials::Basic {
        username: "u".into(),
        password: Secret::new("p"),
    };
    let (_, mut s) = drive(
        &mut fake,
        session(creds),
        GetManifest::new("a/b", "v1"),
        &[],
        1,
        Source::None,
    );
    assert_eq!(fake.tokens_issued, 1);
    // same scopes, time moved past expiry: the machine fetches a new one before sending
    let mut m = Machine::new(s.clone(), GetManifest::new("a/b", "v1"));
    match m.poll(120_000) {
        Output::Send(r) => assert!(r.url.contains("/token"), "{r:?}"),
        o => panic!("{o:?}"),
    }
    // and within the lifetime it reuses the token
    s = m.into_session();
    let mut m = Machine::new(s, GetManifest::new("a/b", "v1"));
    match m.poll(2_000) {
        Output::Send(r) => {
            assert!(r.url.ends_with("/manifests/v1") && r.header("authorization").is_some())
        }
        o => panic!("{o:?}"),
    }
}

#[test]
fn redirects_to_another_host_carry_no_credentials_and_loops_end() {
    let mut fake = Fake {
        basic: true,
        redirect_blob_to: Some("https://storage.example/blob?sig=1".into()),
        ..Fake::default()
    };
    let d = Digest::of(b"blobdata");
    let creds = Credentials::Basic {
        username: "u".into(),
        password: Secret::new("p"),
    };
    let (run, _) = drive(
        &mut fake,
        session(creds.clone()),
        GetBlob::new("a/b", &d, 100),
        &[],
        1,
        Source::None,
    );
    assert_eq!(run.result.unwrap(), b"blobdata");
    let storage: Vec<_> = fake
        .seen_auth
        .iter()
        .filter(|(u, _)| u.contains("storage.example"))
        .collect();
    assert_eq!(storage.len(), 1);
    assert_eq!(
        storage[0].1, None,
        "Authorization must not follow a redirect to another host"
    );
    let mut fake = Fake {
        redirect_blob_to: Some("/v2/a/b/blobs/sha256:loop".into()),
        ..Fake::default()
    };
    let (run, _) = drive(
        &mut fake,
        session(Credentials::Anonymous),
        GetBlob::new("a/b", &d, 100),
        &[],
        1,
        Source::None,
    );
    assert!(run.result.unwrap_err().to_string().contains("redirects"));
}

#[test]
fn lying_registries_are_caught() {
    let mut fake = Fake {
        lie_digest: true,
        ..Fake::default()
    };
    fake.manifests.push(("v1".into(), b"{}".to_vec()));
    let (run, _) = drive(
        &mut fake,
        session(Credentials::Anonymous),
        GetManifest::new("a/b", "v1"),
        &[],
        1,
        Source::None,
    );
    assert!(matches!(
        run.result.unwrap_err(),
        Error::DigestMismatch { .. }
    ));
    let (run, _) = drive(
        &mut fake,
        session(Credentials::Anonymous),
        PutManifest::new("a/b", "v2", crate::media::OCI_MANIFEST, b"{}".to_vec()),
        &[],
        1,
        Source::None,
    );
    assert!(matches!(
        run.result.unwrap_err(),
        Error::DigestMismatch { .. }
    ));
    let data = b"abc".to_vec();
    let (run, _) = drive(
        &mut fake,
        session(Credentials::Anonymous),
        Upload::new("a/b", cfg(2)),
        &data,
        3,
        Source::Restartable,
    );
    assert!(matches!(
        run.result.unwrap_err(),
        Error::DigestMismatch { .. }
    ));
    // a manifest over 4 MiB is refused
    let mut fake = Fake::default();
    fake.manifests
        .push(("big".into(), vec![b' '; (4 << 20) + 10]));
    let (run, _) = drive(
        &mut fake,
        session(Credentials::Anonymous),
        GetManifest::new("a/b", "big"),
        &[],
        1,
        Source::None,
    );
    assert!(matches!(run.result.unwrap_err(), Error::TooLarge { .. }));
    // a token answer without a token
    let mut fake = Fake {
        bearer: true,
        token_body: Some("{\"expires_in\":60}".into()),
        ..Fake::default()
    };
    let (run, _) = drive(
        &mut fake,
        session(Credentials::Anonymous),
        GetManifest::new("a/b", "v1"),
        &[],
        1,
        Source::None,
    );
    assert!(run
        .result
        .unwrap_err()
        .to_string()
        .contains("holds no token"));
}

#[test]
fn secrets_stay_out_of_errors_and_debug_output() {
    let mut fake = Fake {
        bearer: true,
        ..Fake::default()
    };
    let creds = Credentials::Basic {
        username: "u".into(),
        password: Secret::new("hunter2-secret"),
    };
    let s = session(creds);
    assert!(!format!("{s:?}").contains("hunter2"));
    let (run, s) = drive(
        &mut fake,
        s,
        GetManifest::new("a/b", "missing"),
        &[],
        1,
        Source::None,
    );
    let e = run.result.unwrap_err().to_string();
    assert!(
        e.contains("404") && !e.contains("hunter2") && !e.contains("tok1"),
        "{e}"
    );
    assert!(!format!("{s:?}").contains("tok1"), "tokens are secrets too");
}

#[test]
fn mount_is_one_post_with_from() {
    let mut fake = Fake::default();
    let d = Digest::of(b"x");
    let (run, _) = drive(
        &mut fake,
        session(Credentials::Anonymous),
        MountBlob::new("a/b", "c/d", &d),
        &[],
        1,
        Source::None,
    );
    assert!(run.result.unwrap());
    assert!(
        fake.log
            .last()
            .unwrap()
            .contains(&format!("mount=sha256%3A{}&from=c%2Fd", d.hex())),
        "{:?}",
        fake.log
    );
}

#[test]
fn streamed_upload_is_one_patch_and_resumes_from_the_registry_offset() {
    let data: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
    let scfg = UploadConfig {
        stream: true,
        monolithic_max: 1000,
        ..cfg(4096)
    };
    let mut fake = Fake::default();
    let (run, _) = upload(&mut fake, scfg, &data, 4096);
    assert_eq!(run.result.unwrap(), Digest::of(&data));
    assert_eq!(fake.committed[0].1, data);
    let patches: Vec<_> = fake.log.iter().filter(|l| l.starts_with("PATCH")).collect();
    assert_eq!(patches.len(), 1, "{:?}", fake.log);
    assert!(
        !patches[0].contains("range="),
        "a streamed PATCH has no Content-Range"
    );
    // the connection drops half way: the upload asks the registry where it stands and streams
    // the rest from there
    let mut fake = Fake {
        patch_drop: Some(1),
        ..Fake::default()
    };
    let (run, _) = upload(&mut fake, scfg, &data, 4096);
    assert_eq!(run.result.unwrap(), Digest::of(&data));
    assert_eq!(fake.committed[0].1, data);
    assert!(
        fake.log
            .iter()
            .any(|l| l.starts_with("GET /v2/a/b/blobs/uploads/u1")),
        "{:?}",
        fake.log
    );
    assert_eq!(
        run.sent_blob_bytes,
        data.len() as u64 + data.len() as u64 / 2,
        "only the unconfirmed half was sent again"
    );
    // a small blob still goes in one PUT
    let mut fake = Fake::default();
    let (run, _) = upload(&mut fake, scfg, &data[..500], 4096);
    run.result.unwrap();
    assert!(
        fake.log.iter().all(|l| !l.starts_with("PATCH")),
        "{:?}",
        fake.log
    );
}

#[test]
fn a_segmented_stream_is_one_patch_per_segment_and_a_cut_costs_one_segment() {
    let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let scfg = UploadConfig {
        stream: true,
        segment: 16_384,
        monolithic_max: 1000,
        ..cfg(4096)
    };
    for step in [1, 7, 4096, 20_000, usize::MAX] {
        let mut fake = Fake::default();
        let (run, _) = upload(&mut fake, scfg, &data, step);
        assert_eq!(run.result.unwrap(), Digest::of(&data), "step {step}");
        assert_eq!(fake.committed[0].1, data);
        let patches = fake.log.iter().filter(|l| l.starts_with("PATCH")).count();
        if step != usize::MAX {
            assert_eq!(
                patches, 4,
                "50000 bytes in 16384-byte segments: {:?}",
                fake.log
            );
            assert_eq!(run.sent_blob_bytes, data.len() as u64);
        }
    }
    // the second segment's connection drops half way: only that segment's unconfirmed part
    // is sent again
    let mut fake = Fake {
        patch_drop: Some(2),
        ..Fake::default()
    };
    let (run, _) = upload(&mut fake, scfg, &data, 4096);
    assert_eq!(run.result.unwrap(), Digest::of(&data));
    assert_eq!(fake.committed[0].1, data);
    let again = run.sent_blob_bytes - data.len() as u64;
    assert!(again > 0 && again <= 16_384, "sent again: {again}");
}

#[test]
fn a_saved_session_is_resumed_from_its_range_or_started_again_when_gone() {
    let data: Vec<u8> = (0..200u8).collect();
    let resume = |fake: &mut Fake| {
        let up = Upload::resume("a/b", cfg(50), "/v2/a/b/blobs/uploads/u1?_state=100");
        drive(
            fake,
            session(Credentials::Anonymous),
            up,
            &data,
            50,
            // a producer that cannot start over: only the saved session's first status may
            // send it back to byte 0 (it has every byte then)
            Source::Once,
        )
        .0
    };
    // a run that stopped after 100 bytes left the session behind
    let mut fake = Fake {
        upload: data[..100].to_vec(),
        ..Fake::default()
    };
    let run = resume(&mut fake);
    assert_eq!(run.result.unwrap(), Digest::of(&data));
    assert_eq!(fake.committed[0].1, data);
    assert_eq!(run.sent_blob_bytes, 100, "only the rest is sent");
    assert!(
        fake.log[0] == "GET /v2/" && fake.log[1].starts_with("GET /v2/a/b/blobs/uploads/u1"),
        "{:?}",
        fake.log
    );
    assert!(
        !fake.log.iter().any(|l| l.starts_with("POST")),
        "{:?}",
        fake.log
    );

    // the registry forgot the session: a new one, with every byte (not restartable otherwise)
    let mut fake = Fake {
        lost: true,
        ..Fake::default()
    };
    let run = resume(&mut fake);
    assert_eq!(run.result.unwrap(), Digest::of(&data));
    assert_eq!(fake.committed[0].1, data);
    assert_eq!(run.sent_blob_bytes, 200);
    assert_eq!(fake.log.iter().filter(|l| l.starts_with("POST")).count(), 1);

    // once the resumed session answered, losing it later is the ordinary case again
    let mut fake = Fake {
        upload: data[..100].to_vec(),
        lose_session: Some(1),
        ..Fake::default()
    };
    assert!(resume(&mut fake)
        .result
        .unwrap_err()
        .to_string()
        .contains("gone"));
}

#[test]
fn an_untrusted_certificate_ends_the_operation_at_once_and_a_timeout_is_retried() {
    // a certificate the driver does not trust: no retry, Error::Tls naming the host
    let mut m = Machine::new(
        session(Credentials::Anonymous),
        GetManifest::new("a/b", "latest"),
    );
    assert!(matches!(m.poll(0), Output::Send(_)));
    m.handle_error(
        0,
        NetError::Certificate("invalid peer certificate: UnknownIssuer".into()),
    );
    let mut out = m.poll(0);
    while let Output::Event(_) = out {
        out = m.poll(0);
    }
    match out {
        Output::Done(Err(Error::Tls { host, reason })) => {
            assert_eq!(host, "reg.example");
            assert!(reason.contains("UnknownIssuer"), "{reason}");
        }
        other => panic!("expected a TLS error at once, got {other:?}"),
    }
    // a timeout (or a reset, a refusal) is retried after a backoff, and says what it was
    for e in [
        NetError::Timeout("nothing for 120 s".into()),
        NetError::Reset("reset by peer".into()),
        NetError::Refused("127.0.0.1:1".into()),
        "plain".into(),
    ] {
        let mut m = Machine::new(
            session(Credentials::Anonymous),
            GetManifest::new("a/b", "latest"),
        );
        assert!(matches!(m.poll(0), Output::Send(_)));
        let shown = e.to_string();
        m.handle_error(0, e);
        let mut saw = None;
        let out = loop {
            match m.poll(0) {
                Output::Event(Event::Retrying { reason, .. }) => saw = Some(reason),
                Output::Event(_) => {}
                other => break other,
            }
        };
        assert!(matches!(out, Output::Wait(_)), "{shown}: {out:?}");
        assert!(saw.is_some_and(|r| r.contains(&shown)), "{shown}");
    }
}

/// The kernel over every produce size, upload mode and fault: the transcript (actions,
/// requests, answers, events) of each mode and fault is a snapshot, the same for every produce
/// size once the produce steps are left out, and every run ends with the blob whole.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn kernel_transcripts_at_every_produce_size_mode_and_fault() {
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let modes: [(&str, UploadConfig); 3] = [
        (
            "chunked",
            UploadConfig {
                chunk_min: 3000,
                ..cfg(3000)
            },
        ),
        (
            "stream",
            UploadConfig {
                stream: true,
                ..cfg(3000)
            },
        ),
        (
            "segments",
            UploadConfig {
                stream: true,
                segment: 4000,
                ..cfg(3000)
            },
        ),
    ];
    // the fault meets the second PATCH (the first of a whole stream)
    type Fault = fn(&mut Fake, usize);
    let faults: [(&str, Fault); 6] = [
        ("none", |_, _| {}),
        ("reset", |f, n| f.patch_drop = Some(n)),
        ("5xx", |f, n| f.patch_fail = Some((n, 503))),
        ("416", |f, n| f.patch_fail = Some((n, 416))),
        ("404", |f, n| f.patch_fail = Some((n, 404))),
        ("lost-session", |f, n| f.lose_session = Some(n)),
    ];
    for (mode, c) in modes {
        for (fault, set) in faults {
            let mut first: Option<(usize, Vec<String>)> = None;
            for step in [1usize, 7, 4096, usize::MAX] {
                let mut fake = Fake::default();
                set(&mut fake, if mode == "stream" { 1 } else { 2 });
                let (run, _) = upload(&mut fake, c, &data, step);
                let what = format!("{mode}, {fault}, produce {step}");
                assert_eq!(
                    run.result.as_ref().ok(),
                    Some(&Digest::of(&data)),
                    "{what}: {:#?}",
                    run.transcript
                );
                assert_eq!(fake.committed[0].1, data, "{what}");
                // requests and answers do not depend on how the bytes were produced, but for
                // where a stream ends (a producer making the blob at once ends it in the body)
                let wire: Vec<String> = run
                    .transcript
                    .iter()
                    .filter(|l| l.starts_with("send") || l.starts_with('←'))
                    .map(|l| l.split(" ahead").next().unwrap_or(l).to_string())
                    .collect();
                match &first {
                    None => {
                        insta::assert_snapshot!(
                            format!("kernel-{mode}-{fault}"),
                            run.transcript.join("\n")
                        );
                        first = Some((step, wire));
                    }
                    Some((s, w)) if step != usize::MAX => {
                        assert_eq!(w, &wire, "{what} against produce {s}")
                    }
                    Some(_) => {}
                }
            }
        }
    }
}

#[test]
fn driver_contract_misuse_is_an_internal_error_not_ignored() {
    let fresh = || {
        Transfer::<_, Vec<u8>>::new(
            session(Credentials::Anonymous),
            GetManifest::new("a/b", "v1"),
            Source::None,
        )
    };
    // an answer when nothing was sent
    let mut t = fresh();
    let e = t
        .handle_response(0, Response::new(200, &[], b""))
        .unwrap_err();
    assert!(matches!(e, Error::Internal { .. }), "{e}");
    assert!(matches!(
        t.poll(0),
        Action::Done(Err(Error::Internal { .. }))
    ));
    // polling while a request is on the wire
    let mut t = fresh();
    assert!(matches!(t.poll(0), Action::Send(_)));
    assert!(matches!(
        t.poll(0),
        Action::Done(Err(Error::Internal { .. }))
    ));
    // bytes for an operation that takes none
    let mut t = fresh();
    assert!(t.produced(vec![1]).is_err());
    // a restart that was not asked for
    let mut t = fresh();
    assert!(t.restarted().is_err());
    // the end of a stream when the request was not one
    let mut t = fresh();
    assert!(matches!(t.poll(0), Action::Send(_)));
    let e = t
        .stream_ended(StreamEnd {
            limit_reached_at: None,
            carry: Vec::new(),
            pulled: false,
            complete: None,
        })
        .unwrap_err();
    assert!(e.to_string().contains("driver contract"), "{e}");
    // a producer that ends at another size than it made
    let mut t = Transfer::<_, Vec<u8>>::new(
        session(Credentials::Anonymous),
        Upload::new("a/b", cfg(10)),
        Source::Once,
    );
    t.produced(vec![0; 5]).unwrap();
    let e = t.produced_end(Digest::of(b"x"), 6).unwrap_err();
    assert!(matches!(e, Error::SizeMismatch { .. }), "{e}");
}

#[test]
fn a_pipe_that_must_be_read_again_fails_with_a_clear_error() {
    // a streamed upload from a pipe, cut after the first segment's bytes were pulled: the
    // bytes are gone and the producer cannot make them again
    let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    let mut fake = Fake {
        patch_drop: Some(1),
        ..Fake::default()
    };
    let (run, _) = drive(
        &mut fake,
        session(Credentials::Anonymous),
        Upload::new(
            "a/b",
            UploadConfig {
                stream: true,
                ..cfg(3000)
            },
        ),
        &data,
        1000,
        Source::Once,
    );
    let e = run.result.unwrap_err().to_string();
    assert!(e.contains("cannot be read again"), "{e}");
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn a_seekable_source_is_sent_by_range_and_hashed_at_the_end() {
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 13) as u8).collect();
    let mut fake = Fake {
        patch_drop: Some(2),
        ..Fake::default()
    };
    let (run, _) = drive(
        &mut fake,
        session(Credentials::Anonymous),
        Upload::new(
            "a/b",
            UploadConfig {
                chunk_min: 4000,
                ..cfg(4000)
            },
        ),
        &data,
        4096,
        Source::Seekable {
            len: data.len() as u64,
        },
    );
    assert_eq!(run.result.unwrap(), Digest::of(&data));
    assert_eq!(fake.committed[0].1, data);
    insta::assert_snapshot!("kernel-seekable-reset", run.transcript.join("\n"));
}
