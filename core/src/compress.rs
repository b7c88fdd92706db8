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
use std::io::Read as _;

use miniz_oxide::deflate::core::{create_comp_flags_from_zip_params, CompressorOxide};
use miniz_oxide::inflate::stream::InflateState;
use miniz_oxide::{DataFormat, MZError, MZFlush, MZStatus};

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

// ---------------------------------------------------------------------------------------
// Identity
// ---------------------------------------------------------------------------------------

/// Pass-through "codec" for [`Compression::None`] (splits input into [`MAX_PIECE`] pieces).
#[derive(Debug, Default)]
pub struct Identity {
    finished: bool,
}

impl Identity {
    /// A new pass-through codec.
    pub fn new() -> Self {
        Identity::default()
    }

    fn write_impl<E>(
        &mut self,
        input: &[u8],
        sink: &mut Sink<'_, E>,
    ) -> Result<(), StreamError<E>> {
        if self.finished {
            return Err(CodecError::new(Compression::None, CodecErrorKind::Aborted, 0).into());
        }
        emit(sink, input)
    }

    fn finish_impl<E>(&mut self) -> Result<(), StreamError<E>> {
        if self.finished {
            return Err(CodecError::new(Compression::None, CodecErrorKind::Aborted, 0).into());
        }
        self.finished = true;
        Ok(())
    }
}

impl<E> Encoder<E> for Identity {
    fn write(&mut self, input: &[u8], sink: &mut Sink<'_, E>) -> Result<(), StreamError<E>> {
        self.write_impl(input, sink)
    }
    fn finish(&mut self, _sink: &mut Sink<'_, E>) -> Result<(), StreamError<E>> {
        self.finish_impl()
    }
}

impl<E> Decoder<E> for Identity {
    fn write(&mut self, input: &[u8], sink: &mut Sink<'_, E>) -> Result<(), StreamError<E>> {
        self.write_impl(input, sink)
    }
    fn finish(&mut self, _sink: &mut Sink<'_, E>) -> Result<(), StreamError<E>> {
        self.finish_impl()
    }
}

// ---------------------------------------------------------------------------------------
// gzip
// ---------------------------------------------------------------------------------------

/// Deterministic gzip header: no name, mtime 0, XFL 0, OS 255 (unknown).
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff];

/// Streaming gzip compressor (miniz_oxide deflate, RFC 1952 framing, deterministic output).
pub struct GzipEncoder {
    comp: Box<CompressorOxide>,
    crc: crc32fast::Hasher,
    isize: u32,
    consumed: u64,
    header_done: bool,
    out: Vec<u8>,
    poison: Option<CodecError>,
}

impl fmt::Debug for GzipEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GzipEncoder")
            .field("consumed", &self.consumed)
            .finish_non_exhaustive()
    }
}

impl GzipEncoder {
    /// A gzip encoder at `level` 0-9 (clamped; 0 = stored, 1 fastest, 9 best).
    pub fn new(level: i32) -> Self {
        let level = level.clamp(0, 9);
        // window_bits < 0 selects a raw deflate stream; we write the gzip framing ourselves.
        let flags = create_comp_flags_from_zip_params(level, -15, 0);
        GzipEncoder {
            comp: Box::new(CompressorOxide::new(flags)),
            crc: crc32fast::Hasher::new(),
            isize: 0,
            consumed: 0,
            header_done: false,
            out: vec![0; MAX_PIECE],
            poison: None,
        }
    }

    fn header<E>(&mut self, sink: &mut Sink<'_, E>) -> Result<(), StreamError<E>> {
        if !self.header_done {
            self.header_done = true;
            sink(&GZIP_HEADER).map_err(StreamError::Sink)?;
        }
        Ok(())
    }

    fn deflate_err(&self, e: MZError) -> CodecError {
        CodecError::new(
            Compression::Gzip,
            CodecErrorKind::Corrupt(format!("deflate failed: {e:?}")),
            self.consumed,
        )
    }

    fn write_inner<E>(
        &mut self,
        mut input: &[u8],
        sink: &mut Sink<'_, E>,
    ) -> Result<(), StreamError<E>> {
        self.header(sink)?;
        self.crc.update(input);
        self.isize = self.isize.wrapping_add(input.len() as u32);
        while !input.is_empty() {
            let r = miniz_oxide::deflate::stream::deflate(
                &mut self.comp,
                input,
                &mut self.out,
                MZFlush::None,
            );
            input = &input[r.bytes_consumed..];
            self.consumed += r.bytes_consumed as u64;
            match r.status {
                Ok(_) | Err(MZError::Buf) => {}
                Err(e) => return Err(self.deflate_err(e).into()),
            }
            if r.bytes_written > 0 {
                sink(&self.out[..r.bytes_written]).map_err(StreamError::Sink)?;
            } else if r.bytes_consumed == 0 {
                // Cannot happen with a non-empty output buffer, but never spin.
                return Err(self.deflate_err(MZError::Buf).into());
            }
        }
        Ok(())
    }

    fn finish_inner<E>(&mut self, sink: &mut Sink<'_, E>) -> Result<(), StreamError<E>> {
        self.header(sink)?;
        loop {
            let r = miniz_oxide::deflate::stream::deflate(
                &mut self.comp,
                &[],
                &mut self.out,
                MZFlush::Finish,
            );
            if r.bytes_written > 0 {
                sink(&self.out[..r.bytes_written]).map_err(StreamError::Sink)?;
            }
            match r.status {
                Ok(MZStatus::StreamEnd) => break,
                Ok(_) => {}
                Err(e) => return Err(self.deflate_err(e).into()),
            }
        }
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.clone().finalize().to_le_bytes());
        trailer[4..].copy_from_slice(&self.isize.to_le_bytes());
        sink(&trailer).map_err(StreamError::Sink)?;
        Ok(())
    }
}

impl<E> Encoder<E> for GzipEncoder {
    fn write(&mut self, input: &[u8], sink: &mut Sink<'_, E>) -> Result<(), StreamError<E>> {
        check_poison(&self.poison)?;
        let r = self.write_inner(input, sink);
        record(Compression::Gzip, &mut self.poison, self.consumed, r)
    }

    fn finish(&mut self, sink: &mut Sink<'_, E>) -> Result<(), StreamError<E>> {
        check_poison(&self.poison)?;
        let r = self.finish_inner(sink);
        record(Compression::Gzip, &mut self.poison, self.consumed, r)?;
        self.poison = Some(CodecError::new(
            Compression::Gzip,
            CodecErrorKind::Aborted,
            self.consumed,
        ));
        Ok(())
    }
}

/// Where the gzip decoder is within the current member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GzState {
    /// Collecting the fixed 10-byte header (count collected so far in `hdr_len`).
    Fixed,
    /// Collecting the 2-byte FEXTRA length.
    ExtraLen,
    /// Skipping this many FEXTRA bytes.
    Extra(u16),
    /// Skipping a zero-terminated file name.
    Name,
    /// Skipping a zero-terminated comment.
    Comment,
    /// Collecting the 2-byte header CRC.
    HeaderCrc,
    /// Inflating the deflate body.
    Body,
    /// Collecting the 8-byte CRC32 + ISIZE trailer.
    Trailer,
}

/// Streaming gzip decompressor: RFC 1952 headers (FEXTRA, FNAME, FCOMMENT, FHCRC),
/// CRC32 and ISIZE verification, concatenated members; bounded memory.
pub struct GzipDecoder {
    inflate: Box<InflateState>,
    state: GzState,
    flags: u8,
    /// Small buffer for fixed-size header/trailer fields.
    small: [u8; 10],
    small_len: usize,
    /// CRC32 over the header bytes (for FHCRC), and its value before the CRC16 field.
    hcrc: crc32fast::Hasher,
    header_crc: u32,
    crc: crc32fast::Hasher,
    isize: u32,
    /// Compressed bytes consumed so far (offset of the next input byte).
    offset: u64,
    /// Offset where the current member started.
    member_start: u64,
    members: u64,
    out: Vec<u8>,
    poison: Option<CodecError>,
}

impl fmt::Debug for GzipDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GzipDecoder")
            .field("state", &self.state)
            .field("offset", &self.offset)
            .field("members", &self.members)
            .finish_non_exhaustive()
    }
}

impl Default for GzipDecoder {
    fn default() -> Self {
        Self::new()
    }
}

const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;
const FRESERVED: u8 = 0xe0;

impl GzipDecoder {
    /// A new gzip decoder.
    pub fn new() -> Self {
        GzipDecoder {
            inflate: InflateState::new_boxed(DataFormat::Raw),
            state: GzState::Fixed,
            flags: 0,
            small: [0; 10],
            small_len: 0,
            hcrc: crc32fast::Hasher::new(),
            header_crc: 0,
            crc: crc32fast::Hasher::new(),
            isize: 0,
            offset: 0,
            member_start: 0,
            members: 0,
            out: vec![0; MAX_PIECE],
            poison: None,
        }
    }

    fn err(&self, kind: CodecErrorKind, offset: u64) -> CodecError {
        CodecError::new(Compression::Gzip, kind, offset)
    }

    /// Copy up to `want - small_len` bytes from `input` into `small`; true when full.
    fn fill_small(&mut self, input: &mut &[u8], want: usize) -> bool {
        let n = (want - self.small_len).min(input.len());
        self.small[self.small_len..self.small_len + n].copy_from_slice(&input[..n]);
        if self.state != GzState::Trailer {
            self.hcrc.update(&input[..n]);
        }
        self.small_len += n;
        self.offset += n as u64;
        *input = &input[n..];
        self.small_len == want
    }

    /// The header state following `after` given the member's flags.
    fn next_header_state(&self, after: GzState) -> GzState {
        let order = [
            GzState::ExtraLen,
            GzState::Name,
            GzState::Comment,
            GzState::HeaderCrc,
        ];
        let start = match after {
            GzState::Fixed => 0,
            GzState::Extra(_) | GzState::ExtraLen => 1,
            GzState::Name => 2,
            GzState::Comment => 3,
            _ => 4,
        };
        for s in order.iter().skip(start) {
            let flag = match s {
                GzState::ExtraLen => FEXTRA,
                GzState::Name => FNAME,
                GzState::Comment => FCOMMENT,
                _ => FHCRC,
            };
            if self.flags & flag != 0 {
                return *s;
            }
        }
        GzState::Body
    }

    fn enter(&mut self, s: GzState) {
        if s == GzState::HeaderCrc {
            // FHCRC covers every header byte before the CRC16 itself.
            self.header_crc = self.hcrc.clone().finalize();
        }
        self.state = s;
        self.small_len = 0;
    }

    fn write_inner<E>(
        &mut self,
        mut input: &[u8],
        sink: &mut Sink<'_, E>,
    ) -> Result<(), StreamError<E>> {
        while !input.is_empty() {
            match self.state {
                GzState::Fixed => {
                    if self.small_len == 0 {
                        self.member_start = self.offset;
                        self.hcrc = crc32fast::Hasher::new();
                    }
                    // Check the magic as early as possible so garbage is reported promptly.
                    let had = self.small_len;
                    let full = self.fill_small(&mut input, 10);
                    let magic_ok = self.small[..self.small_len.min(2)]
                        .iter()
                        .zip([0x1f, 0x8b])
                        .all(|(a, b)| *a == b);
                    if !magic_ok {
                        let kind = if self.members > 0 {
                            CodecErrorKind::TrailingGarbage
                        } else {
                            CodecErrorKind::BadHeader("not a gzip stream (bad magic)".into())
                        };
                        return Err(self.err(kind, self.member_start).into());
                    }
                    if had < 3 && self.small_len >= 3 && self.small[2] != 8 {
                        let m = format!("unknown compression method {}", self.small[2]);
                        return Err(self
                            .err(CodecErrorKind::BadHeader(m), self.member_start + 2)
                            .into());
                    }
                    if !full {
                        continue;
                    }
                    self.flags = self.small[3];
                    if self.flags & FRESERVED != 0 {
                        let m = format!("reserved flag bits set ({:#04x})", self.flags);
                        return Err(self
                            .err(CodecErrorKind::BadHeader(m), self.member_start + 3)
                            .into());
                    }
                    let next = self.next_header_state(GzState::Fixed);
                    self.enter(next);
                }
                GzState::ExtraLen => {
                    if self.fill_small(&mut input, 2) {
                        let n = u16::from_le_bytes([self.small[0], self.small[1]]);
                        let next = if n == 0 {
                            self.next_header_state(GzState::ExtraLen)
                        } else {
                            GzState::Extra(n)
                        };
                        self.enter(next);
                    }
                }
                GzState::Extra(left) => {
                    let n = (left as usize).min(input.len());
                    self.hcrc.update(&input[..n]);
                    self.offset += n as u64;
                    input = &input[n..];
                    let left = left - n as u16;
                    if left == 0 {
                        let next = self.next_header_state(GzState::ExtraLen);
                        self.enter(next);
                    } else {
                        self.state = GzState::Extra(left);
                    }
                }
                GzState::Name | GzState::Comment => {
                    let (n, done) = match input.iter().position(|&b| b == 0) {
                        Some(p) => (p + 1, true),
                        None => (input.len(), false),
                    };
                    self.hcrc.update(&input[..n]);
                    self.offset += n as u64;
                    input = &input[n..];
                    if done {
                        let next = self.next_header_state(self.state);
                        self.enter(next);
                    }
                }
                GzState::HeaderCrc => {
                    if self.fill_small(&mut input, 2) {
                        let stored = u16::from_le_bytes([self.small[0], self.small[1]]);
                        let computed = (self.header_crc & 0xffff) as u16;
                        if stored != computed {
                            return Err(self
                                .err(
                                    CodecErrorKind::ChecksumMismatch {
                                        expected: u32::from(stored),
                                        found: u32::from(computed),
                                    },
                                    self.offset.saturating_sub(2),
                                )
                                .into());
                        }
                        self.enter(GzState::Body);
                    }
                }
                GzState::Body => self.inflate_some(&mut input, sink)?,
                GzState::Trailer => {
                    if self.fill_small(&mut input, 8) {
                        let s = self.small;
                        let stored_crc = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                        let stored_len = u32::from_le_bytes([s[4], s[5], s[6], s[7]]);
                        let crc =
                            std::mem::replace(&mut self.crc, crc32fast::Hasher::new()).finalize();
                        if stored_crc != crc {
                            let kind = CodecErrorKind::ChecksumMismatch {
                                expected: stored_crc,
                                found: crc,
                            };
                            return Err(self.err(kind, self.offset.saturating_sub(8)).into());
                        }
                        if stored_len != self.isize {
                            let kind = CodecErrorKind::SizeMismatch {
                                expected: u64::from(stored_len),
                                found: u64::from(self.isize),
                            };
                            return Err(self.err(kind, self.offset.saturating_sub(4)).into());
                        }
                        self.members += 1;
                        self.isize = 0;
                        self.inflate.reset(DataFormat::Raw);
                        self.enter(GzState::Fixed);
                    }
                }
            }
        }
        // Drain anything inflate still holds (its output buffer may have filled up).
        if self.state == GzState::Body {
            self.inflate_some(&mut input, sink)?;
        }
        Ok(())
    }

    /// Run inflate over `input` until it is consumed and no output is pending, or the
    /// deflate stream ends.
    fn inflate_some<E>(
        &mut self,
        input: &mut &[u8],
        sink: &mut Sink<'_, E>,
    ) -> Result<(), StreamError<E>> {
        loop {
            let r = miniz_oxide::inflate::stream::inflate(
                &mut self.inflate,
                input,
                &mut self.out,
                MZFlush::None,
            );
            *input = &input[r.bytes_consumed..];
            self.offset += r.bytes_consumed as u64;
            if r.bytes_written > 0 {
                let out = &self.out[..r.bytes_written];
                self.crc.update(out);
                self.isize = self.isize.wrapping_add(r.bytes_written as u32);
                sink(out).map_err(StreamError::Sink)?;
            }
            match r.status {
                Ok(MZStatus::StreamEnd) => {
                    self.enter(GzState::Trailer);
                    return Ok(());
                }
                Ok(_) => {
                    if r.bytes_consumed == 0 && r.bytes_written == 0 {
                        return Ok(());
                    }
                }
                Err(MZError::Buf) => return Ok(()), // needs more input
                Err(e) => {
                    let m = format!("invalid deflate data ({e:?})");
                    return Err(self.err(CodecErrorKind::Corrupt(m), self.offset).into());
                }
            }
        }
    }

    fn finish_inner<E>(&mut self) -> Result<(), StreamError<E>> {
        if self.state == GzState::Fixed && self.small_len == 0 && self.members > 0 {
            return Ok(());
        }
        Err(self.err(CodecErrorKind::Truncated, self.offset).into())
    }
}

impl<E> Decoder<E> for GzipDecoder {
    fn write(&mut self, input: &[u8], sink: &mut Sink<'_, E>) -> Result<(), StreamError<E>> {
        check_poison(&self.poison)?;
        let r = self.write_inner(input, sink);
        record(Compression::Gzip, &mut self.poison, self.offset, r)
    }

    fn finish(&mut self, _sink: &mut Sink<'_, E>) -> Result<(), StreamError<E>> {
        check_poison(&self.poison)?;
        let r = self.finish_inner();
        record(Compression::Gzip, &mut self.poison, self.offset, r)?;
        self.poison = Some(self.err(CodecErrorKind::Aborted, self.offset));
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// zstd
// ---------------------------------------------------------------------------------------

type RuzstdCompressor = ruzstd::encoding::FrameCompressor<
    std::io::Cursor<Vec<u8>>,
    Vec<u8>,
    ruzstd::encoding::MatchGeneratorDriver,
>;

/// Streaming zstd compressor built on ruzstd's frame compressor.
///
/// ruzstd 0.9 only offers a whole-frame `Read -> Write` compressor and implements only the
/// `Uncompressed` and `Fastest` levels, so input is buffered into [`ZSTD_FRAME_SIZE`] pieces,
/// each emitted as a complete frame with a content checksum; concatenated frames are a
/// valid zstd stream. Every requested level maps to `Fastest` (about `zstd -1`).
pub struct ZstdEncoder {
    comp: Option<RuzstdCompressor>,
    buf: Vec<u8>,
    out: Vec<u8>,
    frames: u64,
    consumed: u64,
    poison: Option<CodecError>,
}

impl fmt::Debug for ZstdEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZstdEncoder")
            .field("frames", &self.frames)
            .field("consumed", &self.consumed)
            .finish_non_exhaustive()
    }
}

impl ZstdEncoder {
    /// A zstd encoder; `level` is accepted for API symmetry and mapped to `Fastest`.
    pub fn new(level: Option<i32>) -> Self {
        let _ = level;
        ZstdEncoder {
            comp: None,
            buf: Vec::new(),
            out: Vec::new(),
            frames: 0,
            consumed: 0,
            poison: None,
        }
    }

    /// Compress `self.buf` as one frame and push it out.
    fn flush_frame<E>(&mut self, sink: &mut Sink<'_, E>) -> Result<(), StreamError<E>> {
        let comp = self.comp.get_or_insert_with(|| {
            ruzstd::encoding::FrameCompressor::new(ruzstd::encoding::CompressionLevel::Fastest)
        });
        let data = std::mem::take(&mut self.buf);
        let out = std::mem::take(&mut self.out);
        comp.set_source(std::io::Cursor::new(data));
        comp.set_drain(out);
        comp.compress();
        let mut data = comp
            .take_source()
            .map(|c| c.into_inner())
            .unwrap_or_default();
        let mut out = comp.take_drain().unwrap_or_default();
        data.clear();
        self.buf = data;
        self.frames += 1;
        let r = emit(sink, &out);
        out.clear();
        self.out = out;
        r
    }

    fn write_inner<E>(
        &mut self,
        mut input: &[u8],
        sink: &mut Sink<'_, E>,
    ) -> Result<(), StreamError<E>> {
        while !input.is_empty() {
            if self.buf.capacity() < ZSTD_FRAME_SIZE {
                self.buf.reserve_exact(ZSTD_FRAME_SIZE - self.buf.len());
            }
            let n = (ZSTD_FRAME_SIZE - self.buf.len()).min(input.len());
            self.buf.extend_from_slice(&input[..n]);
            input = &input[n..];
            self.consumed += n as u64;
            if self.buf.len() == ZSTD_FRAME_SIZE {
                self.flush_frame(sink)?;
            }
        }
        Ok(())
    }

    fn finish_inner<E>(&mut self, sink: &mut Sink<'_, E>) -> Result<(), StreamError<E>> {
        // Always end with at least one frame so empty input gives a valid (empty) stream.
        if !self.buf.is_empty() || self.frames == 0 {
            self.flush_frame(sink)?;
        }
        // Release the (large) working buffers.
        self.comp = None;
        self.buf = Vec::new();
        self.out = Vec::new();
        Ok(())
    }
}

impl<E> Encoder<E> for ZstdEncoder {
    fn write(&mut self, input: &[u8], sink: &mut Sink<'_, E>) -> Result<(), StreamError<E>> {
        check_poison(&self.poison)?;
        let r = self.write_inner(input, sink);
        record(Compression::Zstd, &mut self.poison, self.consumed, r)
    }

    fn finish(&mut self, sink: &mut Sink<'_, E>) -> Result<(), StreamError<E>> {
        check_poison(&self.poison)?;
        let r = self.finish_inner(sink);
        record(Compression::Zstd, &mut self.poison, self.consumed, r)?;
        self.poison = Some(CodecError::new(
            Compression::Zstd,
            CodecErrorKind::Aborted,
            self.consumed,
        ));
        Ok(())
    }
}

const ZSTD_MAGIC: u32 = 0xFD2F_B528;
const ZSTD_MAX_BLOCK: usize = 128 * 1024;

/// Where the zstd decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ZsState {
    /// Collecting a 4-byte magic number.
    Magic,
    /// Collecting a frame header of `small_len`..=this length (first only the descriptor).
    FrameHeader(usize),
    /// Collecting a skippable frame's 4-byte size.
    SkipLen,
    /// Skipping this many bytes of a skippable frame.
    Skip(u64),
    /// Collecting a 3-byte block header.
    BlockHeader,
    /// Collecting a block (header included) of this total length into `block`.
    Block(usize),
}

/// Streaming zstd decompressor (ruzstd `FrameDecoder`, driven block by block).
///
/// Handles concatenated and skippable frames, verifies the content checksum when present
/// and the frame content size when declared. Memory is the frame's window plus one block;
/// windows larger than the limit (default [`ZSTD_DEFAULT_MAX_WINDOW`]) are refused with
/// [`CodecErrorKind::Unsupported`]. A frame that declares its content size gets a window of
/// at most `max(content size, 128 KiB)`, so small frames never reserve a huge window.
pub struct ZstdDecoder {
    dec: Box<ruzstd::decoding::FrameDecoder>,
    max_window: u64,
    state: ZsState,
    small: [u8; 18],
    small_len: usize,
    block: Vec<u8>,
    /// Current frame: has content checksum; declared content size; bytes decoded.
    checksum: bool,
    content_size: Option<u64>,
    produced: u64,
    frame_start: u64,
    /// Offset of the unit (header/block) being collected.
    unit_start: u64,
    offset: u64,
    frames: u64,
    out: Vec<u8>,
    poison: Option<CodecError>,
}

impl fmt::Debug for ZstdDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZstdDecoder")
            .field("state", &self.state)
            .field("offset", &self.offset)
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

impl Default for ZstdDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ZstdDecoder {
    /// A decoder with the default window limit ([`ZSTD_DEFAULT_MAX_WINDOW`]).
    pub fn new() -> Self {
        Self::with_max_window(ZSTD_DEFAULT_MAX_WINDOW)
    }

    /// A decoder refusing frames whose window exceeds `max_window` bytes.
    pub fn with_max_window(max_window: u64) -> Self {
        let mut dec = Box::new(ruzstd::decoding::FrameDecoder::new());
        dec.set_max_window_size(max_window);
        ZstdDecoder {
            dec,
            max_window,
            state: ZsState::Magic,
            small: [0; 18],
            small_len: 0,
            block: Vec::new(),
            checksum: false,
            content_size: None,
            produced: 0,
            frame_start: 0,
            unit_start: 0,
            offset: 0,
            frames: 0,
            out: Vec::new(),
            poison: None,
        }
    }

    fn err(&self, kind: CodecErrorKind, offset: u64) -> CodecError {
        CodecError::new(Compression::Zstd, kind, offset)
    }

    fn fill_small(&mut self, input: &mut &[u8], want: usize) -> bool {
        if self.small_len == 0 {
            self.unit_start = self.offset;
        }
        let n = (want - self.small_len).min(input.len());
        self.small[self.small_len..self.small_len + n].copy_from_slice(&input[..n]);
        self.small_len += n;
        self.offset += n as u64;
        *input = &input[n..];
        self.small_len == want
    }

    /// Length of the frame header (magic included) given its descriptor byte.
    fn header_len(fhd: u8) -> usize {
        let single = fhd & 0x20 != 0;
        let did = [0, 1, 2, 4][usize::from(fhd & 3)];
        let fcs = match fhd >> 6 {
            0 => usize::from(single),
            1 => 2,
            2 => 4,
            _ => 8,
        };
        4 + 1 + usize::from(!single) + did + fcs
    }

    /// Validate the complete header in `small`, then start ruzstd on it.
    fn start_frame(&mut self) -> Result<(), CodecError> {
        let len = self.small_len;
        let h = self.small;
        let at = self.unit_start;
        let fhd = h[4];
        if fhd & 0x08 != 0 {
            return Err(self.err(
                CodecErrorKind::BadHeader("reserved frame header bit set".into()),
                at + 4,
            ));
        }
        let single = fhd & 0x20 != 0;
        let mut pos = 5;
        let window_desc = if single {
            None
        } else {
            pos += 1;
            Some(h[5])
        };
        let did_len = [0, 1, 2, 4][usize::from(fhd & 3)];
        let mut dict_id = 0u32;
        for i in 0..did_len {
            dict_id |= u32::from(h[pos + i]) << (8 * i);
        }
        pos += did_len;
        let fcs_len = len - pos;
        let mut fcs = 0u64;
        for i in 0..fcs_len {
            fcs |= u64::from(h[pos + i]) << (8 * i);
        }
        if fcs_len == 2 {
            fcs += 256;
        }
        let content_size = (fcs_len > 0).then_some(fcs);
        if dict_id != 0 {
            let m = format!("frame needs dictionary {dict_id}, dictionaries are not supported");
            return Err(self.err(CodecErrorKind::Unsupported(m), at));
        }
        let window = match window_desc {
            Some(wd) => {
                let log = 10 + u32::from(wd >> 3);
                let base = 1u64 << log;
                base + (base / 8) * u64::from(wd & 7)
            }
            None => fcs,
        };
        if window > self.max_window {
            let m = format!(
                "window size {window} exceeds the limit of {} bytes",
                self.max_window
            );
            return Err(self.err(CodecErrorKind::Unsupported(m), at));
        }
        // ruzstd reserves the whole window up front: shrink the advertised window of a frame
        // whose declared content is smaller (matches cannot reach further back than the
        // content anyway). Keep >= 128 KiB so block size limits are unchanged.
        let mut hdr = h;
        if let (Some(_), Some(cs)) = (window_desc, content_size) {
            let want = cs
                .max(ZSTD_MAX_BLOCK as u64)
                .checked_next_power_of_two()
                .unwrap_or(u64::MAX);
            if want < window {
                let log = want.trailing_zeros();
                hdr[5] = ((log - 10) as u8) << 3;
            }
        }
        self.dec.reset(&hdr[..len]).map_err(|e| {
            self.err(
                CodecErrorKind::BadHeader(format!("invalid frame header: {e}")),
                at,
            )
        })?;
        self.checksum = fhd & 0x04 != 0;
        self.content_size = content_size;
        self.produced = 0;
        self.frame_start = at;
        Ok(())
    }

    /// Decode one complete block unit: its 3 header bytes `hdr`, then `tail` (the body,
    /// plus the frame checksum if this is the last block and the frame has one).
    fn decode_unit<E>(
        &mut self,
        hdr: &[u8],
        tail: &[u8],
        last: bool,
        sink: &mut Sink<'_, E>,
    ) -> Result<(), StreamError<E>> {
        let at = self.unit_start;
        let mut src = hdr.chain(tail);
        let res = self.dec.decode_blocks(
            &mut src,
            ruzstd::decoding::BlockDecodingStrategy::UptoBlocks(1),
        );
        if let Err(e) = res {
            let m = format!("invalid block: {e}");
            return Err(self.err(CodecErrorKind::Corrupt(m), at).into());
        }
        let (a, b) = src.into_inner();
        if !a.is_empty() || !b.is_empty() {
            // ruzstd read less than the block we framed: the block is malformed.
            let m = "block length does not match its content".to_string();
            return Err(self.err(CodecErrorKind::Corrupt(m), at).into());
        }
        self.drain(sink)?;
        if last {
            self.end_frame()?;
        } else {
            self.state = ZsState::BlockHeader;
        }
        Ok(())
    }

    /// Push all collectable output (everything beyond the window, or all at frame end).
    fn drain<E>(&mut self, sink: &mut Sink<'_, E>) -> Result<(), StreamError<E>> {
        if self.out.len() != MAX_PIECE {
            self.out = vec![0; MAX_PIECE];
        }
        loop {
            let n = self.dec.read(&mut self.out).map_err(|e| {
                self.err(
                    CodecErrorKind::Corrupt(format!("decode buffer: {e}")),
                    self.unit_start,
                )
            })?;
            if n == 0 {
                return Ok(());
            }
            self.produced += n as u64;
            if let Some(cs) = self.content_size {
                if self.produced > cs {
                    let kind = CodecErrorKind::SizeMismatch {
                        expected: cs,
                        found: self.produced,
                    };
                    return Err(self.err(kind, self.unit_start).into());
                }
            }
            sink(&self.out[..n]).map_err(StreamError::Sink)?;
        }
    }

    fn end_frame(&mut self) -> Result<(), CodecError> {
        if self.dec.can_collect() != 0 {
            return Err(self.err(
                CodecErrorKind::Corrupt("undrained output at frame end".into()),
                self.offset,
            ));
        }
        if let Some(cs) = self.content_size {
            if cs != self.produced {
                let kind = CodecErrorKind::SizeMismatch {
                    expected: cs,
                    found: self.produced,
                };
                return Err(self.err(kind, self.frame_start));
            }
        }
        if self.checksum {
            let stored = self.dec.get_checksum_from_data();
            let computed = self.dec.get_calculated_checksum();
            if let (Some(expected), Some(found)) = (stored, computed) {
                if expected != found {
                    let kind = CodecErrorKind::ChecksumMismatch { expected, found };
                    return Err(self.err(kind, self.offset.saturating_sub(4)));
                }
            } else {
                let m = "content checksum missing".to_string();
                return Err(self.err(CodecErrorKind::Corrupt(m), self.offset));
            }
        }
        self.frames += 1;
        self.state = ZsState::Magic;
        self.small_len = 0;
        Ok(())
    }

    fn write_inner<E>(
        &mut self,
        mut input: &[u8],
        sink: &mut Sink<'_, E>,
    ) -> Result<(), StreamError<E>> {
        while !input.is_empty() {
            match self.state {
                ZsState::Magic => {
                    if !self.fill_small(&mut input, 4) {
                        continue;
                    }
                    let magic = u32::from_le_bytes([
                        self.small[0],
                        self.small[1],
                        self.small[2],
                        self.small[3],
                    ]);
                    if magic == ZSTD_MAGIC {
                        self.state = ZsState::FrameHeader(5);
                    } else if magic & 0xFFFF_FFF0 == 0x184D_2A50 {
                        self.state = ZsState::SkipLen;
                        self.small_len = 0;
                    } else if self.frames > 0 {
                        return Err(self
                            .err(CodecErrorKind::TrailingGarbage, self.unit_start)
                            .into());
                    } else {
                        let m = "not a zstd stream (bad magic)".to_string();
                        return Err(self
                            .err(CodecErrorKind::BadHeader(m), self.unit_start)
                            .into());
                    }
                }
                ZsState::FrameHeader(want) => {
                    if !self.fill_small(&mut input, want) {
                        continue;
                    }
                    if want == 5 {
                        let full = Self::header_len(self.small[4]);
                        if full > 5 {
                            self.state = ZsState::FrameHeader(full);
                            continue;
                        }
                    }
                    self.start_frame()?;
                    self.state = ZsState::BlockHeader;
                    self.small_len = 0;
                }
                ZsState::SkipLen => {
                    if self.fill_small(&mut input, 4) {
                        let n = u32::from_le_bytes([
                            self.small[0],
                            self.small[1],
                            self.small[2],
                            self.small[3],
                        ]);
                        self.small_len = 0;
                        self.state = ZsState::Skip(u64::from(n));
                        if n == 0 {
                            self.frames += 1;
                            self.state = ZsState::Magic;
                        }
                    }
                }
                ZsState::Skip(left) => {
                    let n = left.min(input.len() as u64);
                    input = &input[n as usize..];
                    self.offset += n;
                    if left == n {
                        self.frames += 1;
                        self.state = ZsState::Magic;
                        self.small_len = 0;
                    } else {
                        self.state = ZsState::Skip(left - n);
                    }
                }
                ZsState::BlockHeader => {
                    if !self.fill_small(&mut input, 3) {
                        continue;
                    }
                    let h = u32::from(self.small[0])
                        | u32::from(self.small[1]) << 8
                        | u32::from(self.small[2]) << 16;
                    let last = h & 1 != 0;
                    let btype = (h >> 1) & 3;
                    let size = (h >> 3) as usize;
                    let body = match btype {
                        0 | 2 if size > ZSTD_MAX_BLOCK => {
                            let m = format!("block size {size} exceeds 128 KiB");
                            return Err(self
                                .err(CodecErrorKind::Corrupt(m), self.unit_start)
                                .into());
                        }
                        0 | 2 => size,
                        1 => 1,
                        _ => {
                            let m = "reserved block type".to_string();
                            return Err(self
                                .err(CodecErrorKind::Corrupt(m), self.unit_start)
                                .into());
                        }
                    };
                    let total = 3 + body + if last && self.checksum { 4 } else { 0 };
                    self.small_len = 0;
                    let rest = total - 3;
                    if input.len() >= rest {
                        // Fast path: the whole block is in `input`; decode it in place.
                        let hdr = [self.small[0], self.small[1], self.small[2]];
                        let (tail, after) = input.split_at(rest);
                        input = after;
                        self.offset += rest as u64;
                        self.decode_unit(&hdr, tail, last, sink)?;
                    } else {
                        self.block.clear();
                        self.block.reserve(total);
                        self.block.extend_from_slice(&self.small[..3]);
                        self.state = ZsState::Block(total);
                    }
                }
                ZsState::Block(total) => {
                    let n = (total - self.block.len()).min(input.len());
                    self.block.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.offset += n as u64;
                    if self.block.len() == total {
                        let last = self.block[0] & 1 != 0;
                        let unit = std::mem::take(&mut self.block);
                        let r = self.decode_unit(&unit[..3], &unit[3..], last, sink);
                        self.block = unit;
                        r?;
                    }
                }
            }
        }
        Ok(())
    }

    fn finish_inner<E>(&mut self) -> Result<(), StreamError<E>> {
        if self.state == ZsState::Magic && self.small_len == 0 && self.frames > 0 {
            return Ok(());
        }
        Err(self.err(CodecErrorKind::Truncated, self.offset).into())
    }
}

impl<E> Decoder<E> for ZstdDecoder {
    fn write(&mut self, input: &[u8], sink: &mut Sink<'_, E>) -> Result<(), StreamError<E>> {
        check_poison(&self.poison)?;
        let r = self.write_inner(input, sink);
        record(Compression::Zstd, &mut self.poison, self.offset, r)
    }

    fn finish(&mut self, _sink: &mut Sink<'_, E>) -> Result<(), StreamError<E>> {
        check_poison(&self.poison)?;
        let r = self.finish_inner();
        record(Compression::Zstd, &mut self.poison, self.offset, r)?;
        // Release the window.
        *self.dec = ruzstd::decoding::FrameDecoder::new();
        self.block = Vec::new();
        self.out = Vec::new();
        self.poison = Some(self.err(CodecErrorKind::Aborted, self.offset));
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const PLAIN: &[u8] = include_bytes!("../tests/data/compress/plain.txt");

    /// Deterministic xorshift64* generator.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
    }

    fn random_data(n: usize, seed: u64) -> Vec<u8> {
        let mut r = Rng(seed | 1);
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&r.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }

    fn text_data(n: usize, seed: u64) -> Vec<u8> {
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
    fn encode(c: Compression, level: Option<i32>, data: &[u8], chunk: usize) -> Vec<u8> {
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

    fn decode(c: Compression, data: &[u8], chunk: usize) -> Result<Vec<u8>, CodecError> {
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

    fn decode_err(c: Compression, data: &[u8]) -> CodecError {
        for chunk in [data.len(), 1, 7, 4096] {
            if let Ok(v) = decode(c, data, chunk) {
                panic!("decoding succeeded ({} bytes) with chunk {chunk}", v.len());
            }
        }
        decode(c, data, data.len().max(1)).unwrap_err()
    }

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
    fn gzip_levels_and_determinism() {
        let data = text_data(200_000, 3);
        let mut sizes = Vec::new();
        for level in [-5, 0, 1, 6, 9, 42] {
            let a = encode(Compression::Gzip, Some(level), &data, 4096);
            let b = encode(Compression::Gzip, Some(level), &data, 1000);
            assert_eq!(a, b, "output must not depend on write sizes");
            assert_eq!(&a[..10], &GZIP_HEADER);
            assert_eq!(decode(Compression::Gzip, &a, 999).unwrap(), data);
            sizes.push(a.len());
        }
        assert!(sizes[1] > data.len(), "level 0 stores");
        assert!(sizes[3] < sizes[2], "level 6 beats level 1");
        assert_eq!(encode(Compression::Gzip, None, &data, 4096).len(), sizes[3]);
    }

    #[test]
    fn zstd_levels_never_panic() {
        let data = text_data(10_000, 4);
        for level in [
            None,
            Some(-7),
            Some(0),
            Some(1),
            Some(3),
            Some(19),
            Some(22),
            Some(i32::MAX),
        ] {
            let enc = encode(Compression::Zstd, level, &data, 4096);
            assert_eq!(decode(Compression::Zstd, &enc, 333).unwrap(), data);
        }
    }

    #[test]
    fn gzip_cli_vectors() {
        let small = b"hello, lamina\n";
        for (name, v) in [
            (
                "gzip -n",
                &include_bytes!("../tests/data/compress/plain.gzip-n.gz")[..],
            ),
            (
                "pigz",
                &include_bytes!("../tests/data/compress/plain.pigz.gz")[..],
            ),
            (
                "fname",
                &include_bytes!("../tests/data/compress/plain.fname.gz")[..],
            ),
        ] {
            assert_eq!(sniff(v), Some(Compression::Gzip));
            for chunk in [1, 7, 4096, usize::MAX] {
                assert!(
                    decode(Compression::Gzip, v, chunk).unwrap() == PLAIN,
                    "{name} {chunk}"
                );
            }
        }
        let multi = include_bytes!("../tests/data/compress/multi.gz");
        let mut want = PLAIN.to_vec();
        want.extend_from_slice(small);
        for chunk in [1, 7, 4096, usize::MAX] {
            assert_eq!(decode(Compression::Gzip, multi, chunk).unwrap(), want);
        }
        let empty = include_bytes!("../tests/data/compress/empty.gz");
        assert_eq!(decode(Compression::Gzip, empty, 1).unwrap(), b"");
        assert_eq!(
            decode(
                Compression::Gzip,
                include_bytes!("../tests/data/compress/small.gz"),
                3
            )
            .unwrap(),
            small
        );
    }

    #[test]
    fn zstd_cli_vectors() {
        let small = b"hello, lamina\n";
        for (name, v) in [
            (
                "zstd -3",
                &include_bytes!("../tests/data/compress/plain.zst")[..],
            ),
            (
                "no checksum",
                &include_bytes!("../tests/data/compress/plain.nocheck.zst")[..],
            ),
            (
                "-19 --long",
                &include_bytes!("../tests/data/compress/plain.l19.zst")[..],
            ),
        ] {
            assert_eq!(sniff(v), Some(Compression::Zstd));
            for chunk in [1, 7, 4096, usize::MAX] {
                assert!(
                    decode(Compression::Zstd, v, chunk).unwrap() == PLAIN,
                    "{name} {chunk}"
                );
            }
        }
        let multi = include_bytes!("../tests/data/compress/multi.zst");
        let mut want = PLAIN.to_vec();
        want.extend_from_slice(small);
        for chunk in [1, 7, 4096, usize::MAX] {
            assert_eq!(decode(Compression::Zstd, multi, chunk).unwrap(), want);
        }
        let empty = include_bytes!("../tests/data/compress/empty.zst");
        assert_eq!(decode(Compression::Zstd, empty, 1).unwrap(), b"");
        assert_eq!(
            decode(
                Compression::Zstd,
                include_bytes!("../tests/data/compress/small.zst"),
                2
            )
            .unwrap(),
            small
        );
    }

    #[test]
    fn zstd_skippable_frames() {
        let frame = include_bytes!("../tests/data/compress/small.zst");
        let skip = |n: u8, len: u32| {
            let mut v = vec![0x50 | n, 0x2a, 0x4d, 0x18];
            v.extend_from_slice(&len.to_le_bytes());
            v.extend((0..len).map(|i| i as u8));
            v
        };
        let mut s = skip(0, 100);
        assert_eq!(sniff(&s), Some(Compression::Zstd));
        s.extend_from_slice(frame);
        s.extend(skip(0xf, 0));
        s.extend_from_slice(frame);
        s.extend(skip(3, 5));
        for chunk in [1, 7, 4096, usize::MAX] {
            assert_eq!(
                decode(Compression::Zstd, &s, chunk).unwrap(),
                b"hello, lamina\nhello, lamina\n"
            );
        }
        // A stream of only a skippable frame is valid and empty.
        assert_eq!(decode(Compression::Zstd, &skip(1, 3), 1).unwrap(), b"");
        // Truncated inside a skippable frame.
        let e = decode_err(Compression::Zstd, &skip(1, 3)[..9]);
        assert_eq!(e.kind, CodecErrorKind::Truncated);
    }

    /// A gzip member with FEXTRA, FNAME, FCOMMENT and FHCRC around `body` (raw deflate +
    /// trailer taken from another gzip member).
    fn gzip_with_all_flags(member: &[u8], hcrc_delta: u16) -> Vec<u8> {
        let mut h = vec![
            0x1f,
            0x8b,
            8,
            FEXTRA | FNAME | FCOMMENT | FHCRC,
            1,
            2,
            3,
            4,
            2,
            3,
        ];
        h.extend_from_slice(&6u16.to_le_bytes());
        h.extend_from_slice(b"AB\x02\x00xy");
        h.extend_from_slice(b"file.tar\0");
        h.extend_from_slice(b"a comment\0");
        let crc = (crc32fast::hash(&h) & 0xffff) as u16;
        h.extend_from_slice(&crc.wrapping_add(hcrc_delta).to_le_bytes());
        assert_eq!(member[3], 0, "member must have no flags");
        h.extend_from_slice(&member[10..]);
        h
    }

    #[test]
    fn gzip_all_header_fields() {
        let member = include_bytes!("../tests/data/compress/plain.gzip-n.gz");
        let v = gzip_with_all_flags(member, 0);
        for chunk in [1, 7, 4096, usize::MAX] {
            assert!(decode(Compression::Gzip, &v, chunk).unwrap() == PLAIN);
        }
        let e = decode_err(Compression::Gzip, &gzip_with_all_flags(member, 1));
        assert!(
            matches!(e.kind, CodecErrorKind::ChecksumMismatch { .. }),
            "{e}"
        );
        assert_eq!(e.offset, 10 + 2 + 6 + 9 + 10);
    }

    #[test]
    fn gzip_errors() {
        let good = include_bytes!("../tests/data/compress/plain.gzip-n.gz").to_vec();
        let n = good.len();

        // Bad headers.
        let e = decode_err(Compression::Gzip, b"hello world, not gzip");
        assert!(matches!(e.kind, CodecErrorKind::BadHeader(_)), "{e}");
        assert_eq!(e.offset, 0);
        let mut v = good.clone();
        v[2] = 7;
        assert!(matches!(
            decode_err(Compression::Gzip, &v).kind,
            CodecErrorKind::BadHeader(_)
        ));
        let mut v = good.clone();
        v[3] = 0x20;
        assert!(matches!(
            decode_err(Compression::Gzip, &v).kind,
            CodecErrorKind::BadHeader(_)
        ));

        // Corrupt deflate data: an invalid block type (BTYPE = 11) right after the header.
        let mut v = good.clone();
        v[10] = 0x07;
        let e = decode_err(Compression::Gzip, &v);
        assert!(matches!(e.kind, CodecErrorKind::Corrupt(_)), "{e}");
        assert!(
            e.to_string()
                .starts_with("corrupt gzip stream at compressed byte"),
            "{e}"
        );

        // A flipped byte in the middle: invalid deflate, a CRC mismatch, or (when the end of
        // the deflate stream is damaged and it runs on into the trailer) truncation.
        for pos in [100, 5000, n / 2, n - 20] {
            let mut v = good.clone();
            v[pos] ^= 0x55;
            let e = decode_err(Compression::Gzip, &v);
            assert!(
                matches!(
                    e.kind,
                    CodecErrorKind::Corrupt(_)
                        | CodecErrorKind::ChecksumMismatch { .. }
                        | CodecErrorKind::SizeMismatch { .. }
                        | CodecErrorKind::Truncated
                ),
                "{pos}: {e}"
            );
        }

        // Truncation anywhere, including inside the header and the trailer.
        for cut in [0, 1, 5, 10, 11, n / 2, n - 8, n - 1] {
            let e = decode_err(Compression::Gzip, &good[..cut]);
            assert_eq!(e.kind, CodecErrorKind::Truncated, "cut {cut}: {e}");
            assert_eq!(e.offset, cut as u64);
        }

        // CRC mismatch and ISIZE mismatch.
        let mut v = good.clone();
        v[n - 8] ^= 1;
        let e = decode_err(Compression::Gzip, &v);
        assert!(
            matches!(e.kind, CodecErrorKind::ChecksumMismatch { .. }),
            "{e}"
        );
        assert_eq!(e.offset, (n - 8) as u64);
        let mut v = good.clone();
        v[n - 1] ^= 1;
        assert!(matches!(
            decode_err(Compression::Gzip, &v).kind,
            CodecErrorKind::SizeMismatch { .. }
        ));

        // Trailing garbage (not another member), including zero padding.
        for tail in [
            &b"garbage"[..],
            &[0u8; 512][..],
            &[0x1f][..],
            &[0x1f, 0x8c][..],
        ] {
            let mut v = good.clone();
            v.extend_from_slice(tail);
            let e = decode_err(Compression::Gzip, &v);
            let want = if tail == [0x1f] {
                CodecErrorKind::Truncated
            } else {
                CodecErrorKind::TrailingGarbage
            };
            assert_eq!(e.kind, want, "{tail:?}");
            if want == CodecErrorKind::TrailingGarbage {
                assert_eq!(e.offset, n as u64);
            }
        }
    }

    #[test]
    fn zstd_errors() {
        let good = include_bytes!("../tests/data/compress/plain.zst").to_vec();
        let n = good.len();

        let e = decode_err(Compression::Zstd, b"hello world, not zstd");
        assert!(matches!(e.kind, CodecErrorKind::BadHeader(_)), "{e}");

        // Corrupt bytes: never success.
        for pos in [20, 1000, n / 2, n - 10] {
            let mut v = good.clone();
            v[pos] ^= 0x55;
            let e = decode_err(Compression::Zstd, &v);
            assert!(
                matches!(
                    e.kind,
                    CodecErrorKind::Corrupt(_)
                        | CodecErrorKind::ChecksumMismatch { .. }
                        | CodecErrorKind::SizeMismatch { .. }
                ),
                "{pos}: {e}"
            );
        }
        // Reserved block type.
        let mut v = good.clone();
        let fhd = v[4];
        let block_at = Self_header_len(fhd);
        v[block_at] |= 0b110;
        assert!(matches!(
            decode_err(Compression::Zstd, &v).kind,
            CodecErrorKind::Corrupt(_)
        ));

        for cut in [0, 1, 4, 5, 7, n / 2, n - 4, n - 1] {
            let e = decode_err(Compression::Zstd, &good[..cut]);
            assert_eq!(e.kind, CodecErrorKind::Truncated, "cut {cut}: {e}");
            assert_eq!(e.offset, cut as u64);
        }

        let mut v = good.clone();
        v[n - 1] ^= 1;
        let e = decode_err(Compression::Zstd, &v);
        assert!(
            matches!(e.kind, CodecErrorKind::ChecksumMismatch { .. }),
            "{e}"
        );
        assert!(e.to_string().contains("zstd checksum mismatch"), "{e}");

        for tail in [&b"garbage"[..], &[0u8; 64][..]] {
            let mut v = good.clone();
            v.extend_from_slice(tail);
            let e = decode_err(Compression::Zstd, &v);
            assert_eq!(e.kind, CodecErrorKind::TrailingGarbage);
            assert_eq!(e.offset, n as u64);
        }

        // Absurd window (2 GiB): refused before anything is allocated.
        let v = [
            0x28,
            0xb5,
            0x2f,
            0xfd,
            0x00,
            (31 - 10) << 3,
            0x01,
            0x00,
            0x00,
        ];
        let e = decode_err(Compression::Zstd, &v);
        assert!(
            matches!(&e.kind, CodecErrorKind::Unsupported(m) if m.contains("window")),
            "{e}"
        );
        // Dictionary id.
        let v = [0x28, 0xb5, 0x2f, 0xfd, 0x01, 0x00, 0x07, 0x01, 0x00, 0x00];
        assert!(matches!(
            decode_err(Compression::Zstd, &v).kind,
            CodecErrorKind::Unsupported(_)
        ));
        // Reserved header bit.
        let v = [0x28, 0xb5, 0x2f, 0xfd, 0x08, 0x00, 0x01, 0x00, 0x00];
        assert!(matches!(
            decode_err(Compression::Zstd, &v).kind,
            CodecErrorKind::BadHeader(_)
        ));
    }

    #[allow(non_snake_case)]
    fn Self_header_len(fhd: u8) -> usize {
        ZstdDecoder::header_len(fhd)
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
        let gz = include_bytes!("../tests/data/compress/plain.gzip-n.gz");
        let zs = include_bytes!("../tests/data/compress/plain.zst");
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
