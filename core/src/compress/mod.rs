//! Push-based, streaming, bounded-memory layer compression codecs (gzip and zstd).
//!
//! Every codec is a sans-IO state machine: the caller pushes compressed or uncompressed
//! bytes in with [`Encoder::write`] / [`Decoder::write`] in pieces of any size, and the
//! codec pushes its output into a caller-owned *sink* closure, in pieces of at most
//! [`MAX_PIECE`] (64 KiB) bytes. Nothing is accumulated beyond a fixed working set:
//!
//! | codec          | working memory                                                       |
//! |----------------|----------------------------------------------------------------------|
//! | gzip encoder   | miniz_oxide compressor (~300 KiB) + 64 KiB output buffer              |
//! | gzip decoder   | miniz_oxide inflate state (~45 KiB) + 64 KiB output buffer            |
//! | zstd encoder   | [`ZSTD_FRAME_SIZE`] (1 MiB) input + its compressed output + matcher   |
//! | zstd decoder   | the frame's window (at most [`ZSTD_DEFAULT_MAX_WINDOW`]) + one block |
//!
//! so a decompression bomb streams out in bounded pieces and is never held in memory.
//!
//! The sink returns `Result<(), E>`; a sink error stops the codec at once and is handed
//! back unchanged as [`StreamError::Sink`]. Infallible sinks use the default
//! `E = Infallible`. After any error a codec is poisoned: further calls fail with
//! [`CodecErrorKind::Aborted`] (or the same codec error again).
//!
//! ```
//! use lamina_core::compress::{decoder, encoder, Compression, Decoder, Encoder};
//! let mut gz = Vec::new();
//! let mut enc: Box<dyn Encoder> = encoder(Compression::Gzip, None);
//! enc.write(b"hello hello hello", &mut |b| { gz.extend_from_slice(b); Ok(()) }).unwrap();
//! enc.finish(&mut |b| { gz.extend_from_slice(b); Ok(()) }).unwrap();
//! let mut out = Vec::new();
//! let mut dec: Box<dyn Decoder> = decoder(Compression::Gzip);
//! for chunk in gz.chunks(5) {
//!     dec.write(chunk, &mut |b| { out.extend_from_slice(b); Ok(()) }).unwrap();
//! }
//! dec.finish(&mut |b| { out.extend_from_slice(b); Ok(()) }).unwrap();
//! assert_eq!(out, b"hello hello hello");
//! ```

use std::convert::Infallible;
use std::fmt;

// One codec per file; each depends only on the shared items below, never on another codec.
mod gzip;
mod identity;
mod zstd;

pub use self::gzip::{GzipDecoder, GzipEncoder};
pub use self::identity::Identity;
pub use self::zstd::{ZstdDecoder, ZstdEncoder};

/// Largest piece ever handed to a sink in one call (64 KiB).
pub const MAX_PIECE: usize = 64 * 1024;

/// Uncompressed bytes per zstd frame produced by the zstd encoder (see [`ZstdEncoder`]).
pub const ZSTD_FRAME_SIZE: usize = 1024 * 1024;

/// Default largest zstd window (1 GiB) a [`ZstdDecoder`] accepts; larger windows are refused.
pub const ZSTD_DEFAULT_MAX_WINDOW: u64 = 1 << 30;

/// Default gzip compression level.
pub const GZIP_DEFAULT_LEVEL: i32 = 6;

/// Layer compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// No compression (identity).
    None,
    /// gzip (RFC 1952, deflate).
    Gzip,
    /// Zstandard (RFC 8878).
    Zstd,
}

impl Compression {
    /// Lower-case name: `"none"`, `"gzip"` or `"zstd"`.
    pub fn name(&self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// Parse a name produced by [`Compression::name`] (case-sensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Compression::None),
            "gzip" => Some(Compression::Gzip),
            "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What was wrong with a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecErrorKind {
    /// The stream does not start with a valid header of its format.
    BadHeader(String),
    /// The compressed data is invalid.
    Corrupt(String),
    /// The stream ended before it was complete.
    Truncated,
    /// A stored checksum does not match the data (gzip CRC32 / header CRC16, zstd XXH64).
    ChecksumMismatch {
        /// Checksum stored in the stream.
        expected: u32,
        /// Checksum computed over the data.
        found: u32,
    },
    /// A stored uncompressed size does not match the data (gzip ISIZE, zstd content size).
    SizeMismatch {
        /// Size stored in the stream.
        expected: u64,
        /// Size actually decoded (gzip: modulo 2^32).
        found: u64,
    },
    /// A valid but unsupported feature (e.g. zstd dictionary, too large window).
    Unsupported(String),
    /// Bytes after the last complete member/frame that do not start another one.
    TrailingGarbage,
    /// The codec was stopped by an earlier error (sink error) or used after `finish`.
    Aborted,
}

/// A codec error: which kind of stream, what was wrong, and the compressed byte offset
/// (for decoders; for encoders the number of input bytes consumed) where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError {
    /// Which codec failed.
    pub codec: Compression,
    /// What was wrong.
    pub kind: CodecErrorKind,
    /// Byte offset in the compressed stream where the problem was found (best effort).
    pub offset: u64,
}

impl CodecError {
    fn new(codec: Compression, kind: CodecErrorKind, offset: u64) -> Self {
        CodecError {
            codec,
            kind,
            offset,
        }
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.codec.name();
        let at = self.offset;
        match &self.kind {
            CodecErrorKind::BadHeader(m) => {
                write!(f, "bad {c} header at compressed byte {at}: {m}")
            }
            CodecErrorKind::Corrupt(m) => {
                write!(f, "corrupt {c} stream at compressed byte {at}: {m}")
            }
            CodecErrorKind::Truncated => {
                write!(f, "truncated {c} stream: ended at compressed byte {at}")
            }
            CodecErrorKind::ChecksumMismatch { expected, found } => write!(
                f,
                "{c} checksum mismatch at compressed byte {at}: stored {expected:#010x}, computed {found:#010x}"
            ),
            CodecErrorKind::SizeMismatch { expected, found } => write!(
                f,
                "{c} size mismatch at compressed byte {at}: stored {expected}, decoded {found}"
            ),
            CodecErrorKind::Unsupported(m) => {
                write!(f, "unsupported {c} stream at compressed byte {at}: {m}")
            }
            CodecErrorKind::TrailingGarbage => {
                write!(f, "trailing garbage after {c} stream at compressed byte {at}")
            }
            CodecErrorKind::Aborted => {
                write!(f, "{c} codec used after an earlier error or after finish")
            }
        }
    }
}

impl std::error::Error for CodecError {}

/// Error of a codec call: either the codec failed, or the caller's sink did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamError<E> {
    /// The data (or the codec's use) was wrong.
    Codec(CodecError),
    /// The sink returned this error; the codec stopped at once.
    Sink(E),
}

impl<E> From<CodecError> for StreamError<E> {
    fn from(e: CodecError) -> Self {
        StreamError::Codec(e)
    }
}

impl From<StreamError<Infallible>> for CodecError {
    fn from(e: StreamError<Infallible>) -> Self {
        match e {
            StreamError::Codec(c) => c,
            StreamError::Sink(never) => match never {},
        }
    }
}

impl<E: fmt::Display> fmt::Display for StreamError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Codec(c) => c.fmt(f),
            StreamError::Sink(e) => write!(f, "output sink failed: {e}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for StreamError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StreamError::Codec(c) => Some(c),
            StreamError::Sink(e) => Some(e),
        }
    }
}

/// A caller-owned output sink: receives pieces of at most [`MAX_PIECE`] bytes, in order.
pub type Sink<'a, E> = dyn FnMut(&[u8]) -> Result<(), E> + 'a;

/// A push-based compressor.
pub trait Encoder<E = Infallible>: Send {
    /// Compress `input` (any length, including empty), pushing any output produced to `sink`.
    fn write(&mut self, input: &[u8], sink: &mut Sink<'_, E>) -> Result<(), StreamError<E>>;
    /// End the stream, pushing the remaining output (and trailer) to `sink`.
    /// Further calls of `write`/`finish` fail with [`CodecErrorKind::Aborted`].
    fn finish(&mut self, sink: &mut Sink<'_, E>) -> Result<(), StreamError<E>>;
}

/// A push-based decompressor.
pub trait Decoder<E = Infallible>: Send {
    /// Decompress `input` (any length, split anywhere), pushing output to `sink`.
    fn write(&mut self, input: &[u8], sink: &mut Sink<'_, E>) -> Result<(), StreamError<E>>;
    /// Declare the end of the input. Fails with [`CodecErrorKind::Truncated`] if the
    /// stream is incomplete (including an empty gzip/zstd stream).
    fn finish(&mut self, sink: &mut Sink<'_, E>) -> Result<(), StreamError<E>>;
}

/// A boxed encoder for `c`. `level`: gzip 0-9 (default 6, out-of-range values are
/// clamped); zstd levels are all mapped onto ruzstd's only compressing level
/// (`Fastest`, roughly zstd -1); ignored for [`Compression::None`].
pub fn encoder<E: 'static>(c: Compression, level: Option<i32>) -> Box<dyn Encoder<E>> {
    match c {
        Compression::None => Box::new(Identity::new()),
        Compression::Gzip => Box::new(GzipEncoder::new(level.unwrap_or(GZIP_DEFAULT_LEVEL))),
        Compression::Zstd => Box::new(ZstdEncoder::new(level)),
    }
}

/// A boxed decoder for `c` (zstd with the default window limit [`ZSTD_DEFAULT_MAX_WINDOW`]).
pub fn decoder<E: 'static>(c: Compression) -> Box<dyn Decoder<E>> {
    match c {
        Compression::None => Box::new(Identity::new()),
        Compression::Gzip => Box::new(GzipDecoder::new()),
        Compression::Zstd => Box::new(ZstdDecoder::new()),
    }
}

/// Recognise a compressed stream from its first bytes: gzip (`1f 8b 08`), a zstd frame
/// (`28 b5 2f fd`) or a zstd skippable frame (`5? 2a 4d 18`). `None` if not recognised
/// or if `prefix` is too short to tell (give it at least 4 bytes).
pub fn sniff(prefix: &[u8]) -> Option<Compression> {
    match prefix {
        [0x1f, 0x8b, 0x08, ..] => Some(Compression::Gzip),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Some(Compression::Zstd),
        [m, 0x2a, 0x4d, 0x18, ..] if m & 0xf0 == 0x50 => Some(Compression::Zstd),
        _ => None,
    }
}

/// Hand `data` to `sink` in pieces of at most [`MAX_PIECE`] bytes.
fn emit<E>(sink: &mut Sink<'_, E>, data: &[u8]) -> Result<(), StreamError<E>> {
    for piece in data.chunks(MAX_PIECE) {
        sink(piece).map_err(StreamError::Sink)?;
    }
    Ok(())
}

/// Shared poisoning logic: `state` is `None` while healthy.
fn check_poison<E>(poison: &Option<CodecError>) -> Result<(), StreamError<E>> {
    match poison {
        None => Ok(()),
        Some(e) => Err(StreamError::Codec(e.clone())),
    }
}

/// Record an error result in `poison` (sink errors poison as [`CodecErrorKind::Aborted`]).
fn record<E>(
    codec: Compression,
    poison: &mut Option<CodecError>,
    offset: u64,
    r: Result<(), StreamError<E>>,
) -> Result<(), StreamError<E>> {
    match &r {
        Ok(()) => {}
        Err(StreamError::Codec(e)) => *poison = Some(e.clone()),
        Err(StreamError::Sink(_)) => {
            *poison = Some(CodecError::new(codec, CodecErrorKind::Aborted, offset))
        }
    }
    r
}

/// Test data and helpers shared by the codecs' tests.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod testutil {
    use super::*;

    pub(super) const PLAIN: &[u8] = include_bytes!("../../tests/data/compress/plain.txt");

    /// Files the real CLI tools made, as `codec` decodes them at every chunk size: `vectors`
    /// (name, bytes) hold [`PLAIN`]; `multi` holds [`PLAIN`] then `hello, lamina\n` as two
    /// members or frames; `empty` nothing; `small` the short line alone.
    pub(super) fn cli_vectors(
        codec: Compression,
        vectors: &[(&str, &[u8])],
        multi: &[u8],
        empty: &[u8],
        small: &[u8],
    ) {
        let line = b"hello, lamina\n";
        for (name, v) in vectors {
            assert_eq!(sniff(v), Some(codec), "{name}");
            for chunk in [1, 7, 4096, usize::MAX] {
                assert!(decode(codec, v, chunk).unwrap() == PLAIN, "{name} {chunk}");
            }
        }
        let mut want = PLAIN.to_vec();
        want.extend_from_slice(line);
        for chunk in [1, 7, 4096, usize::MAX] {
            assert_eq!(decode(codec, multi, chunk).unwrap(), want);
        }
        assert_eq!(decode(codec, empty, 1).unwrap(), b"");
        for chunk in [1, 2, 3, usize::MAX] {
            assert_eq!(decode(codec, small, chunk).unwrap(), line);
        }
    }

    /// Deterministic xorshift64* generator.
    pub(super) struct Rng(pub(super) u64);
    impl Rng {
        pub(super) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
    }

    pub(super) fn random_data(n: usize, seed: u64) -> Vec<u8> {
        let mut r = Rng(seed | 1);
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&r.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }

    pub(super) fn text_data(n: usize, seed: u64) -> Vec<u8> {
        const WORDS: &[&str] = &[
            "layer",
            "manifest",
            "digest",
            "sha256:",
            "blob",
            "registry",
            "image",
            "index",
            "config",
            "tar",
            "usr/lib/",
            "bin/sh",
            "the",
            "a",
            "of",
            "and",
            "0644",
            "root",
            "{\"mediaType\":",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "\n",
        ];
        let mut r = Rng(seed | 1);
        let mut v = Vec::with_capacity(n + 64);
        while v.len() < n {
            let x = r.next();
            v.extend_from_slice(WORDS[(x % WORDS.len() as u64) as usize].as_bytes());
            if x & 0x300 == 0 {
                v.extend_from_slice(format!("{:x}", x >> 20).as_bytes());
            }
            v.push(b' ');
        }
        v.truncate(n);
        v
    }

    /// Push `data` through `enc` in `chunk`-sized writes; check piece sizes.
    pub(crate) fn encode(c: Compression, level: Option<i32>, data: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc: Box<dyn Encoder> = encoder(c, level);
        let mut sink = |b: &[u8]| {
            assert!(b.len() <= MAX_PIECE);
            out.extend_from_slice(b);
            Ok(())
        };
        for piece in data.chunks(chunk.max(1)) {
            enc.write(piece, &mut sink).unwrap();
        }
        enc.finish(&mut sink).unwrap();
        out
    }

    pub(super) fn decode(c: Compression, data: &[u8], chunk: usize) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::new();
        let mut dec: Box<dyn Decoder> = decoder(c);
        let mut sink = |b: &[u8]| {
            assert!(b.len() <= MAX_PIECE);
            out.extend_from_slice(b);
            Ok(())
        };
        for piece in data.chunks(chunk.max(1)) {
            dec.write(piece, &mut sink)?;
        }
        dec.finish(&mut sink)?;
        Ok(out)
    }

    pub(super) fn decode_err(c: Compression, data: &[u8]) -> CodecError {
        for chunk in [data.len(), 1, 7, 4096] {
            if let Ok(v) = decode(c, data, chunk) {
                panic!("decoding succeeded ({} bytes) with chunk {chunk}", v.len());
            }
        }
        decode(c, data, data.len().max(1)).unwrap_err()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::testutil::*;
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn names_and_parse() {
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            assert_eq!(Compression::parse(c.name()), Some(c));
            assert_eq!(c.to_string(), c.name());
        }
        assert_eq!(Compression::parse("GZIP"), None);
        assert_eq!(Compression::parse("xz"), None);
    }

    #[test]
    fn round_trips() {
        let datasets: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("one", vec![42]),
            ("text", text_data(1_300_000, 1)),
            ("random", random_data(1_100_000, 2)),
            ("zeros", vec![0; 300_000]),
        ];
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            for (name, data) in &datasets {
                for chunk in [1usize, 7, 4096, usize::MAX] {
                    // Byte-at-a-time on megabytes is slow in debug builds: use a prefix.
                    let data = if chunk < 16 {
                        &data[..data.len().min(150_000)]
                    } else {
                        &data[..]
                    };
                    let enc = encode(c, None, data, chunk);
                    if c != Compression::None {
                        assert_eq!(sniff(&enc), Some(c), "{c} {name}");
                    }
                    let dec = decode(c, &enc, chunk)
                        .unwrap_or_else(|e| panic!("{c} {name} {chunk}: {e}"));
                    assert!(dec == data, "{c} {name} chunk {chunk}: round trip differs");
                }
            }
        }
    }

    #[test]
    fn errors_poison_and_sink_errors_pass_through() {
        let good = encode(Compression::Gzip, None, &text_data(300_000, 5), 4096);
        let mut dec: Box<dyn Decoder<&'static str>> = decoder(Compression::Gzip);
        let mut calls = 0;
        let r = dec.write(&good, &mut |_b| {
            calls += 1;
            if calls == 2 {
                Err("disk full")
            } else {
                Ok(())
            }
        });
        assert_eq!(r, Err(StreamError::Sink("disk full")));
        assert_eq!(calls, 2, "the codec stops at the first sink error");
        let r = dec.write(&good, &mut |_b| Ok(()));
        assert!(matches!(
            r,
            Err(StreamError::Codec(CodecError {
                kind: CodecErrorKind::Aborted,
                ..
            }))
        ));

        let mut dec: Box<dyn Decoder> = decoder(Compression::Zstd);
        let e = dec.write(b"junkjunk", &mut |_b| Ok(())).unwrap_err();
        assert_eq!(dec.write(b"", &mut |_b| Ok(())).unwrap_err(), e);
        let e: CodecError = e.into();
        assert!(matches!(e.kind, CodecErrorKind::BadHeader(_)));

        let mut enc: Box<dyn Encoder> = encoder(Compression::Zstd, None);
        enc.finish(&mut |_b| Ok(())).unwrap();
        assert!(enc.write(b"x", &mut |_b| Ok(())).is_err());
    }

    /// 64 MiB of zeros: streams out in pieces of at most 64 KiB.
    #[test]
    fn bombs_stream_in_bounded_pieces() {
        const SIZE: usize = 64 << 20;
        let zeros = vec![0u8; 1 << 20];
        for c in [Compression::Gzip, Compression::Zstd] {
            let mut bomb = Vec::new();
            let mut enc: Box<dyn Encoder> = encoder(c, Some(9));
            let mut sink = |b: &[u8]| {
                bomb.extend_from_slice(b);
                Ok(())
            };
            for _ in 0..SIZE / zeros.len() {
                enc.write(&zeros, &mut sink).unwrap();
            }
            enc.finish(&mut sink).unwrap();
            assert!(bomb.len() < SIZE / 100, "{c}: {}", bomb.len());

            let mut total = 0usize;
            let mut largest = 0usize;
            let mut dec: Box<dyn Decoder> = decoder(c);
            let mut sink = |b: &[u8]| {
                assert!(b.len() <= MAX_PIECE);
                assert!(b.iter().all(|&x| x == 0));
                largest = largest.max(b.len());
                total += b.len();
                Ok(())
            };
            dec.write(&bomb, &mut sink).unwrap();
            dec.finish(&mut sink).unwrap();
            assert_eq!(total, SIZE, "{c}");
            assert!(largest > 0 && largest <= MAX_PIECE);
        }
    }

    /// Hostile input: mutated and random streams give errors, never panics.
    #[test]
    fn hostile_input_never_panics() {
        let gz = include_bytes!("../../tests/data/compress/plain.gzip-n.gz");
        let zs = include_bytes!("../../tests/data/compress/plain.zst");
        let mut r = Rng(99);
        for (c, good) in [(Compression::Gzip, &gz[..]), (Compression::Zstd, &zs[..])] {
            for _ in 0..60 {
                let mut v = good.to_vec();
                for _ in 0..(1 + r.next() % 4) {
                    let pos = (r.next() % v.len() as u64) as usize;
                    v[pos] = r.next() as u8;
                }
                let cut = (r.next() % v.len() as u64) as usize;
                let chunk = 1 + (r.next() % 5000) as usize;
                let _ = decode(c, &v, chunk);
                let _ = decode(c, &v[..cut], chunk);
            }
            for _ in 0..200 {
                let len = (r.next() % 300) as usize;
                let mut v = random_data(len, r.next());
                if len >= 6 {
                    v[..4].copy_from_slice(&good[..4]);
                    if c == Compression::Zstd {
                        v[4] &= !0x0b; // no dictionary, reserved bit clear
                    } else {
                        v[2] = 8;
                        v[3] = 0;
                    }
                }
                let _ = decode(c, &v, 1 + len / 3);
            }
        }
    }

    #[test]
    fn sniffing() {
        assert_eq!(sniff(&[0x1f, 0x8b, 0x08, 0x00]), Some(Compression::Gzip));
        assert_eq!(sniff(&[0x1f, 0x8b]), None);
        assert_eq!(sniff(&[0x1f, 0x8b, 0x07]), None);
        assert_eq!(
            sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0x04]),
            Some(Compression::Zstd)
        );
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f]), None);
        assert_eq!(sniff(&[0x5a, 0x2a, 0x4d, 0x18]), Some(Compression::Zstd));
        assert_eq!(sniff(&[0x60, 0x2a, 0x4d, 0x18]), None);
        assert_eq!(sniff(b"ustar\0"), None);
        assert_eq!(sniff(b""), None);
    }
}
