//! gzip (RFC 1952): a deterministic streaming encoder and a streaming decoder of
//! concatenated members, both on miniz_oxide's raw deflate.

use std::fmt;

use miniz_oxide::deflate::core::{create_comp_flags_from_zip_params, CompressorOxide};
use miniz_oxide::inflate::stream::InflateState;
use miniz_oxide::{DataFormat, MZError, MZFlush, MZStatus};

use super::{
    check_poison, record, CodecError, CodecErrorKind, Compression, Decoder, Encoder, Sink,
    StreamError, MAX_PIECE,
};

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

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
    fn gzip_cli_vectors() {
        cli_vectors(
            Compression::Gzip,
            &[
                (
                    "gzip -n",
                    &include_bytes!("../../tests/data/compress/plain.gzip-n.gz")[..],
                ),
                (
                    "pigz",
                    &include_bytes!("../../tests/data/compress/plain.pigz.gz")[..],
                ),
                (
                    "fname",
                    &include_bytes!("../../tests/data/compress/plain.fname.gz")[..],
                ),
            ],
            include_bytes!("../../tests/data/compress/multi.gz"),
            include_bytes!("../../tests/data/compress/empty.gz"),
            include_bytes!("../../tests/data/compress/small.gz"),
        );
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
        let member = include_bytes!("../../tests/data/compress/plain.gzip-n.gz");
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
        let good = include_bytes!("../../tests/data/compress/plain.gzip-n.gz").to_vec();
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
}
