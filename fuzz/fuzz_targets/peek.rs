//! Reading a tar's headers by ranges and as a stream (what `lamina ls` and `cat` do to an
//! uncompressed layer), and merging what they find into a tree.
//!
//! Entry points: `peek::Walk::{new, with_window, with_max_entries, poll, give, eof}` and
//! `peek::Tree::{new, side_by_side, begin, add, end, resolve}`, `peek::hides`.
//! Input: see `lamina_fuzz::Input`; the payload is the tar; control byte 0 picks the window
//! (512 B to 64 KiB), the pieces split the stream; bit 4 of the flags makes the tree side by
//! side.
//! Invariants: nothing panics; no range asked reaches past the blob's end or before the walk's
//! place; the walk ends within a bounded number of steps; every entry's content lies inside
//! the blob; when the ranged walk and the streamed walk both succeed they find the same
//! entries; the tree takes any entries without panicking and resolves any path.
#![no_main]

use libfuzzer_sys::fuzz_target;

use lamina_core::peek::{self, Place, Step, Tree, Walk};
use lamina_core::untar::Header;

fn ranged(tar: &[u8], window: u64) -> Result<Vec<Header>, ()> {
    let len = tar.len() as u64;
    let mut w = Walk::new(Some(len))
        .with_window(window)
        .with_max_entries(10_000);
    let mut out = Vec::new();
    for _ in 0..1_000_000 {
        match w.poll().map_err(|_| ())? {
            Step::Need(r) => {
                assert!(r.start < r.end && r.end <= len, "{r:?} of {len}");
                assert_eq!(r.start, w.offset());
                w.give(r.start, &tar[r.start as usize..r.end as usize])
                    .map_err(|_| ())?;
            }
            Step::Entry(h) => {
                assert!(h.at <= len, "content at {} of {len}", h.at);
                out.push(h);
            }
            Step::End => return Ok(out),
        }
    }
    panic!("the walk did not end");
}

fn streamed(pieces: &[&[u8]]) -> Result<Vec<Header>, ()> {
    let mut w = Walk::new(None).with_max_entries(10_000);
    let mut out = Vec::new();
    let mut pos = 0u64;
    let mut i = 0;
    for _ in 0..1_000_000 {
        match w.poll().map_err(|_| ())? {
            Step::Need(r) => {
                assert!(r.start >= pos || r.start == w.offset());
                if i == pieces.len() {
                    w.eof(pos).map_err(|_| ())?;
                    continue;
                }
                w.give(pos, pieces[i]).map_err(|_| ())?;
                pos += pieces[i].len() as u64;
                i += 1;
            }
            Step::Entry(h) => out.push(h),
            Step::End => return Ok(out),
        }
    }
    panic!("the walk did not end");
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = lamina_fuzz::Input::new(data) else {
        return;
    };
    let tar = input.payload;
    let window = 512u64 << (input.ctl(0) % 8);
    let by_range = ranged(tar, window);
    let pieces = input.pieces();
    let by_stream = streamed(&pieces);
    if let (Ok(a), Ok(b)) = (&by_range, &by_stream) {
        assert_eq!(a, b, "ranges and a stream found different entries");
    }
    if let Ok(a) = &by_range {
        // a walk that ended well read no entry whose content leaves the blob
        for h in a {
            assert!(h.at + h.size <= tar.len() as u64, "{h:?} in {}", tar.len());
        }
    }
    let Ok(entries) = by_range.or(by_stream) else {
        return;
    };
    let mut t = if input.flags & 0x10 != 0 {
        Tree::side_by_side()
    } else {
        Tree::new()
    };
    for (layer, chunk) in entries.chunks(3).enumerate() {
        t.begin(layer);
        for h in chunk {
            let _ = t.add(h, Some(Place::Tar { layer, at: h.at }));
        }
    }
    t.end();
    for h in &entries {
        let _ = t.resolve(&h.path);
        let _ = t.get(&h.path);
        for o in &entries {
            let _ = peek::hides(h, &o.path);
        }
    }
    let _ = t.under("").count();
});
