//! Helpers shared by the fuzz targets: turning the first bytes of an input into choices (which
//! mode, how to split the rest into pieces) so one flat byte string drives a whole scenario.

/// An input split into a few control bytes and the payload.
///
/// Layout: byte 0 is `flags`; its low 4 bits give `n`, the number of control bytes that follow
/// (used for piece sizes); everything after is the payload.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// Free bits for the target's own choices (the high 4 bits are not used for `n`).
    pub flags: u8,
    /// Control bytes: piece sizes and other small numbers.
    pub ctl: &'a [u8],
    /// The bytes under test.
    pub payload: &'a [u8],
}

impl<'a> Input<'a> {
    /// Splits `data`; `None` if it is empty.
    pub fn new(data: &'a [u8]) -> Option<Self> {
        let (&flags, rest) = data.split_first()?;
        let n = usize::from(flags & 0x0f).min(rest.len());
        let (ctl, payload) = rest.split_at(n);
        Some(Input {
            flags,
            ctl,
            payload,
        })
    }

    /// Control byte `i` (cycling), or 0 when there are none.
    pub fn ctl(&self, i: usize) -> u8 {
        if self.ctl.is_empty() {
            0
        } else {
            self.ctl[i % self.ctl.len()]
        }
    }

    /// The payload cut into pieces whose lengths the control bytes give (cycling through them;
    /// empty pieces included, to exercise empty writes). No control bytes: one piece.
    pub fn pieces(&self) -> Vec<&'a [u8]> {
        pieces(self.payload, self.ctl)
    }
}

/// Cuts `data` into pieces with lengths taken from `ctl` (cycling): `0b00xxxxxx` is 0..=63 bytes,
/// `0b01xxxxxx` 1..=64, `0b10xxxxxx` up to ~1 KiB, `0b11xxxxxx` up to ~64 KiB. At most 4096
/// pieces; the last piece takes whatever remains.
pub fn pieces<'a>(mut data: &'a [u8], ctl: &[u8]) -> Vec<&'a [u8]> {
    if ctl.is_empty() {
        return vec![data];
    }
    let mut out = Vec::new();
    let mut i = 0;
    while !data.is_empty() && out.len() < 4096 {
        let b = ctl[i % ctl.len()];
        i += 1;
        let v = usize::from(b & 0x3f);
        let len = match b >> 6 {
            0 => v,
            1 => v + 1,
            2 => v * 17 + 1,
            _ => v * 1031 + 1,
        };
        let (a, rest) = data.split_at(len.min(data.len()));
        out.push(a);
        data = rest;
    }
    if !data.is_empty() {
        out.push(data);
    }
    out
}

/// Splits `s` at the first `sep` into (before, after); all of `s` and "" when absent.
pub fn split2(s: &str, sep: char) -> (&str, &str) {
    s.split_once(sep).unwrap_or((s, ""))
}

/// What decoding a stream gave.
#[derive(Debug)]
pub struct Decoded {
    /// The output (at most [`OUTPUT_LIMIT`] bytes, plus one piece).
    pub out: Vec<u8>,
    /// The outcome; `Sink(())` when the output limit stopped the decoder.
    pub res: Result<(), lamina_core::compress::StreamError<()>>,
}

/// Decoders stop (through a sink error) after this much output, so bombs stay fast.
pub const OUTPUT_LIMIT: usize = 4 << 20;

/// Feeds `pieces` to `dec` then finishes it, checking the codec contract on the way: pieces of
/// at most `MAX_PIECE` bytes, none empty, a sink error handed back unchanged, and a codec that
/// refuses any further call after an error or after `finish`.
pub fn decode(mut dec: Box<dyn lamina_core::compress::Decoder<()>>, pieces: &[&[u8]]) -> Decoded {
    use lamina_core::compress::{CodecErrorKind, StreamError, MAX_PIECE};
    let mut out = Vec::new();
    let mut sink = |b: &[u8]| {
        assert!(
            !b.is_empty() && b.len() <= MAX_PIECE,
            "a piece of {} bytes",
            b.len()
        );
        if out.len() >= OUTPUT_LIMIT {
            return Err(());
        }
        out.extend_from_slice(b);
        Ok(())
    };
    let mut res = Ok(());
    for p in pieces {
        res = dec.write(p, &mut sink);
        if res.is_err() {
            break;
        }
    }
    if res.is_ok() {
        res = dec.finish(&mut sink);
    }
    // poisoned (or finished): every further call fails, with no output
    let mut none = |_: &[u8]| -> Result<(), ()> { panic!("output after an error or finish") };
    let again = dec.write(b"\x1f\x8b\x08\x00\x28\xb5\x2f\xfd", &mut none);
    assert!(again.is_err(), "write after {res:?} succeeded");
    if let (Err(StreamError::Sink(())), Err(StreamError::Codec(e))) = (&res, &again) {
        assert_eq!(e.kind, CodecErrorKind::Aborted);
    }
    assert!(
        dec.finish(&mut none).is_err(),
        "finish after {res:?} succeeded"
    );
    Decoded { out, res }
}

/// Checks that two decodings of the same stream, split differently, agree: the same outcome
/// (the same error kind), the same output (up to where the output limit cut either).
pub fn same_decoding(a: &Decoded, b: &Decoded) {
    use lamina_core::compress::StreamError;
    let limited = |d: &Decoded| matches!(d.res, Err(StreamError::Sink(())));
    if limited(a) || limited(b) {
        let n = a.out.len().min(b.out.len());
        assert!(a.out[..n] == b.out[..n], "outputs differ before the limit");
        return;
    }
    match (&a.res, &b.res) {
        (Ok(()), Ok(())) => assert!(a.out == b.out, "outputs differ"),
        (Err(StreamError::Codec(x)), Err(StreamError::Codec(y))) => {
            assert_eq!(x.kind, y.kind, "the split changed the error");
        }
        (x, y) => panic!("the split changed the outcome: {x:?} vs {y:?}"),
    }
}

/// Compresses `input` with `c` at `level`, then decodes the result (split by `ctl`): the
/// original bytes come back.
pub fn round_trip(
    c: lamina_core::compress::Compression,
    level: Option<i32>,
    input: &[&[u8]],
    ctl: &[u8],
) {
    use lamina_core::compress::{decoder, encoder, MAX_PIECE};
    let mut z = Vec::new();
    let mut sink = |b: &[u8]| -> Result<(), ()> {
        assert!(b.len() <= MAX_PIECE);
        z.extend_from_slice(b);
        Ok(())
    };
    let mut enc = encoder::<()>(c, level);
    for p in input {
        enc.write(p, &mut sink).expect("compressing never fails");
    }
    enc.finish(&mut sink).expect("finishing never fails");
    let original: Vec<u8> = input.concat();
    assert_eq!(lamina_core::compress::sniff(&z), Some(c));
    let d = decode(decoder(c), &pieces(&z, ctl));
    assert!(d.res.is_ok(), "own output does not decode: {:?}", d.res);
    assert!(d.out == original, "round trip changed the data");
}
