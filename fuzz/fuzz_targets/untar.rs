//! The push-based tar reader and the path checks applied to what it reads.
//!
//! Entry points: `untar::TarReader::{write, finish}`, `untar::safe_path`, `untar::resolve_link`,
//! `tar::archive_path`, `tar::looks_like_tar_header`.
//! Input: see `lamina_fuzz::Input` (control bytes cut the payload into the pieces fed to
//! `write`; bit 4 of the flags makes the callback fail at the event the flags' top bits pick).
//! Invariants: the events and the outcome do not depend on how the stream is split; a walk that
//! skips every file's content (`skip_data`, as a reader that seeks does) sees the same headers
//! and never a content byte; callback errors come back unchanged; `safe_path` and `archive_path` agree and never climb out;
//! `resolve_link` never gives a `..`.
#![no_main]

use libfuzzer_sys::fuzz_target;

use lamina_core::untar::{resolve_link, safe_path, Event, Header, Kind, TarReader};
use lamina_core::{tar, Error};

#[derive(Debug, PartialEq)]
enum Ev {
    Entry(Header),
    Data(Vec<u8>),
    End,
}

fn push(evs: &mut Vec<Ev>, e: Event<'_>) {
    match e {
        Event::Entry(h) => evs.push(Ev::Entry(h.clone())),
        Event::Data(d) => {
            assert!(!d.is_empty(), "empty Data event");
            match evs.last_mut() {
                Some(Ev::Data(v)) => v.extend_from_slice(d),
                _ => evs.push(Ev::Data(d.to_vec())),
            }
        }
        Event::EntryEnd => evs.push(Ev::End),
    }
}

/// Reads `pieces`; the callback fails at event `fail_at` if given.
fn read(pieces: &[&[u8]], fail_at: Option<usize>) -> (Vec<Ev>, Result<(), Error>) {
    let mut r = TarReader::new();
    let mut evs = Vec::new();
    let mut n = 0usize;
    let mut fed = 0u64;
    for p in pieces {
        let res = r.write(p, &mut |e| {
            if Some(n) == fail_at {
                return Err(Error::Usage {
                    reason: "stop".into(),
                });
            }
            n += 1;
            push(&mut evs, e);
            Ok(())
        });
        if let Err(e) = res {
            return (evs, Err(e));
        }
        fed += p.len() as u64;
        assert_eq!(r.offset(), fed, "offset counts every byte fed");
    }
    let res = r.finish();
    (evs, res)
}

/// Walks `payload` as a reader that can seek does: a block at a time, skipping each file's
/// content with `skip_data`. The headers seen, and whether the walk got through.
fn walk(payload: &[u8]) -> (Vec<Header>, bool) {
    let mut r = TarReader::new();
    let mut pos = 0u64;
    let mut hs = Vec::new();
    while pos < payload.len() as u64 {
        let start = pos as usize;
        let end = (start + 512).min(payload.len());
        let res = r.write(&payload[start..end], &mut |e| {
            assert!(!matches!(e, Event::Data(_)), "content fed to a walk that skips it");
            if let Event::Entry(h) = e {
                hs.push(h.clone());
            }
            Ok(())
        });
        if res.is_err() {
            return (hs, false);
        }
        pos = end as u64;
        let skipped = r.skip_data(&mut |_| Ok(())).unwrap_or(0);
        pos = pos.saturating_add(skipped);
        assert_eq!(r.offset(), pos, "offset counts skipped bytes");
    }
    (hs, true)
}

fn check_path(p: &str) {
    let safe = safe_path(p);
    if let Some(s) = &safe {
        assert!(!s.is_empty() && !s.starts_with('/'), "{p:?} -> {s:?}");
        assert!(
            s.split('/').all(|c| !matches!(c, "" | "." | "..")),
            "{p:?} -> {s:?}"
        );
        assert_eq!(safe_path(s).as_deref(), Some(s.as_str()), "not idempotent");
    }
    if !p.contains('\0') {
        assert_eq!(tar::archive_path(p).ok(), safe, "{p:?}");
    }
}

fn check_link(path: &str, target: &str) {
    if let Some(r) = resolve_link(path, target) {
        assert!(
            r.is_empty() || r.split('/').all(|c| !matches!(c, "" | "." | "..")),
            "resolve_link({path:?}, {target:?}) = {r:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = lamina_fuzz::Input::new(data) else {
        return;
    };
    let payload = input.payload;
    let _ = tar::looks_like_tar_header(payload);

    let (whole, whole_res) = read(&[payload], None);
    let pieces = input.pieces();
    let (split, split_res) = read(&pieces, None);
    assert_eq!(whole, split, "events depend on the split");
    assert_eq!(
        whole_res.is_ok(),
        split_res.is_ok(),
        "{whole_res:?} vs {split_res:?}"
    );

    let (walked, walked_ok) = walk(payload);
    if whole_res.is_ok() {
        let headers: Vec<&Header> = whole
            .iter()
            .filter_map(|e| match e {
                Ev::Entry(h) => Some(h),
                _ => None,
            })
            .collect();
        assert!(walked_ok, "a walk failed where a read did not");
        assert_eq!(walked.iter().collect::<Vec<_>>(), headers, "a walk saw other headers");
    }

    if input.flags & 0x10 != 0 {
        let at = usize::from(input.flags >> 5);
        let (_, res) = read(&pieces, Some(at));
        if let Err(Error::Usage { reason }) = &res {
            assert_eq!(reason, "stop");
        }
    }

    for e in &whole {
        if let Ev::Entry(h) = e {
            check_path(&h.path);
            if let Kind::Symlink(t) | Kind::Hardlink(t) = &h.kind {
                check_path(t);
                check_link(&h.path, t);
            }
        }
    }
    // the paths themselves, without a tar around them
    let s = String::from_utf8_lossy(payload);
    let (a, b) = lamina_fuzz::split2(&s, '\n');
    check_path(a);
    check_link(a, b);
});
