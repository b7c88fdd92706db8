//! Zstandard (RFC 8878): an encoder writing one frame per [`ZSTD_FRAME_SIZE`] of input and a
//! block-by-block decoder with a bounded window, both on ruzstd.

use std::fmt;
use std::io::Read as _;

use super::{
    check_poison, emit, record, CodecError, CodecErrorKind, Compression, Decoder, Encoder, Sink,
    StreamError, MAX_PIECE, ZSTD_DEFAULT_MAX_WINDOW, ZSTD_FRAME_SIZE,
};

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
    use super::super::sniff;
    use super::super::testutil::*;
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

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
    fn zstd_cli_vectors() {
        cli_vectors(
            Compression::Zstd,
            &[
                (
                    "zstd -3",
                    &include_bytes!("../../tests/data/compress/plain.zst")[..],
                ),
                (
                    "no checksum",
                    &include_bytes!("../../tests/data/compress/plain.nocheck.zst")[..],
                ),
                (
                    "-19 --long",
                    &include_bytes!("../../tests/data/compress/plain.l19.zst")[..],
                ),
            ],
            include_bytes!("../../tests/data/compress/multi.zst"),
            include_bytes!("../../tests/data/compress/empty.zst"),
            include_bytes!("../../tests/data/compress/small.zst"),
        );
    }

    #[test]
    fn zstd_skippable_frames() {
        let frame = include_bytes!("../../tests/data/compress/small.zst");
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

    #[test]
    fn zstd_errors() {
        let good = include_bytes!("../../tests/data/compress/plain.zst").to_vec();
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
}
