//! The streaming gzip decoder (and, on the side, the encoder).
//!
//! Entry points: `compress::decoder(Compression::Gzip)` (`GzipDecoder::{write, finish}`),
//! `compress::encoder(Compression::Gzip, level)`, `compress::sniff`.
//! Input: see `lamina_fuzz::Input`; the control bytes cut the payload into the pieces written.
//! Flag bit 4 set: the payload is compressed at level `flags >> 5` and decoded back instead.
//! Invariants: the outcome and output do not depend on the split; sink pieces are at most
//! 64 KiB; after an error or `finish` every call fails; what the encoder writes decodes back.
#![no_main]

use libfuzzer_sys::fuzz_target;

use lamina_core::compress::{decoder, sniff, Compression};
use lamina_fuzz::{decode, round_trip, same_decoding, Input};

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::new(data) else {
        return;
    };
    let pieces = input.pieces();
    if input.flags & 0x10 != 0 {
        let level = i32::from(input.flags >> 5) + 2;
        round_trip(Compression::Gzip, Some(level), &pieces, input.ctl);
        return;
    }
    let _ = sniff(input.payload);
    let whole = decode(decoder(Compression::Gzip), &[input.payload]);
    let split = decode(decoder(Compression::Gzip), &pieces);
    same_decoding(&whole, &split);
});
