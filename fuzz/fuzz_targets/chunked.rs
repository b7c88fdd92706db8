//! A zstd:chunked layer's table of contents (what `lamina ls` reads of a layer podman or
//! skopeo compressed with `zstd:chunked`), from a hostile registry or writer.
//!
//! Entry points: `chunked::position`, `chunked::entries`.
//! Input: byte 0's bit 0 says whether the payload is the table's JSON (compressed here, so the
//! parser is reached) or its compressed bytes as they came; bits 1..3 shrink the decoded
//! length the position claims. The position annotation is built around the payload, with its
//! checksum.
//! Invariants: nothing panics; no more is decoded than the position says; at most
//! `chunked::MAX_ENTRIES` entries; every file's frames lie before the table, inside the blob.
#![no_main]

use libfuzzer_sys::fuzz_target;

use lamina_core::chunked::{self, POSITION, CHECKSUM};
use lamina_core::compress::{self, Compression};
use lamina_core::image::Descriptor;
use lamina_core::Digest;

fn zstd(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut e = compress::encoder::<std::convert::Infallible>(Compression::Zstd, None);
    let mut sink = |x: &[u8]| -> Result<(), std::convert::Infallible> {
        out.extend_from_slice(x);
        Ok(())
    };
    let _ = e.write(b, &mut sink);
    let _ = e.finish(&mut sink);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, payload)) = data.split_first() else {
        return;
    };
    let table = if sel & 1 == 1 { zstd(payload) } else { payload.to_vec() };
    if table.is_empty() {
        return;
    }
    let decoded = (payload.len() as u64) >> ((sel >> 1) & 7);
    let at = 4096u64;
    let size = at + table.len() as u64 + 64;
    let mut d = Descriptor::new(
        "application/vnd.oci.image.layer.v1.tar+zstd",
        Digest::of(&table),
        size,
    );
    d.annotations.push((
        POSITION.to_string(),
        format!("{at}:{}:{decoded}:1", table.len()),
    ));
    d.annotations
        .push((CHECKSUM.to_string(), Digest::of(&table).to_string()));
    let Some(pos) = chunked::position(&d) else {
        return;
    };
    assert_eq!(pos.range, at..at + table.len() as u64);
    if let Ok(entries) = chunked::entries(0, &d, &pos, &table) {
        assert!(entries.len() <= chunked::MAX_ENTRIES);
        for (h, frames) in entries {
            if let Some(f) = frames {
                assert!(f.range.start <= f.range.end && f.range.end <= at, "{f:?}");
                assert!(h.size == 0 || !f.range.is_empty(), "{h:?}");
            }
        }
    }
});
