//! The streaming zstd decoder (and, on the side, the encoder).
//!
//! Entry points: `compress::decoder(Compression::Zstd)`, `compress::ZstdDecoder::with_max_window`
//! (`write`, `finish`), `compress::encoder(Compression::Zstd, None)`, `compress::sniff`.
//! Input: see `lamina_fuzz::Input`; the control bytes cut the payload into the pieces written.
//! Flags: bit 4 set, the payload is compressed and decoded back instead; bits 5-7 pick the
//! window limit (7: the default 1 GiB of `decoder`, else 128 KiB << n).
//! Invariants: the outcome and output do not depend on the split; sink pieces are at most
//! 64 KiB; after an error or `finish` every call fails; what the encoder writes decodes back.
#![no_main]

use libfuzzer_sys::fuzz_target;

use lamina_core::compress::{decoder, sniff, Compression, Decoder, ZstdDecoder};
use lamina_fuzz::{decode, round_trip, same_decoding, Input};

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::new(data) else {
        return;
    };
    let pieces = input.pieces();
    if input.flags & 0x10 != 0 {
        round_trip(Compression::Zstd, None, &pieces, input.ctl);
        return;
    }
    let _ = sniff(input.payload);
    let w = input.flags >> 5;
    let new = || -> Box<dyn Decoder<()>> {
        if w == 7 {
            decoder(Compression::Zstd)
        } else {
            Box::new(ZstdDecoder::with_max_window(128 << 10 << w))
        }
    };
    let whole = decode(new(), &[input.payload]);
    let split = decode(new(), &pieces);
    same_decoding(&whole, &split);
});
