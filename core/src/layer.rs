//! Layer blobs built in one streaming pass: uncompressed tar in, compressed bytes out, with the
//! uncompressed digest (diff_id), the compressed digest and both sizes computed on the way.

use crate::compress::{self, CodecError, Compression, Decoder, Encoder};
use crate::digest::{Digest, Hasher};
use crate::error::Error;

/// What a finished layer is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerInfo {
    /// Compression of the blob.
    pub compression: Compression,
    /// Digest of the blob (compressed bytes).
    pub digest: Digest,
    /// Size of the blob.
    pub size: u64,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
}

/// Takes uncompressed tar bytes, gives blob bytes to a sink.
pub struct LayerWriter {
    compression: Compression,
    enc: Box<dyn Encoder>,
    diff: Hasher,
    /// `None` for an uncompressed layer, whose blob is its tar: one hash serves both digests.
    blob: Option<Hasher>,
}

impl core::fmt::Debug for LayerWriter {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LayerWriter")
            .field("compression", &self.compression)
            .field("in", &self.diff.len())
            .finish()
    }
}

impl LayerWriter {
    /// A writer for `compression` at `level` (codec default when `None`).
    pub fn new(compression: Compression, level: Option<i32>) -> Self {
        LayerWriter {
            compression,
            enc: compress::encoder(compression, level),
            diff: Hasher::new(),
            blob: blob_hasher(compression),
        }
    }

    /// A writer with a caller-supplied encoder for `compression` (e.g. a native libzstd one in
    /// the CLI; the core's own codecs are the default).
    pub fn with_encoder(compression: Compression, enc: Box<dyn Encoder>) -> Self {
        LayerWriter {
            compression,
            enc,
            diff: Hasher::new(),
            blob: blob_hasher(compression),
        }
    }

    /// Uncompressed bytes in; blob bytes go to `sink`.
    pub fn write(&mut self, tar: &[u8], sink: &mut dyn FnMut(&[u8])) -> Result<(), Error> {
        self.diff.update(tar);
        let blob = &mut self.blob;
        self.enc
            .write(tar, &mut |b: &[u8]| {
                if let Some(h) = blob.as_mut() {
                    h.update(b);
                }
                sink(b);
                Ok(())
            })
            .map_err(CodecError::from)?;
        Ok(())
    }

    /// Uncompressed bytes taken so far.
    pub fn uncompressed_len(&self) -> u64 {
        self.diff.len()
    }

    /// Flushes the compressor and returns the layer's digests and sizes.
    pub fn finish(mut self, sink: &mut dyn FnMut(&[u8])) -> Result<LayerInfo, Error> {
        let blob = &mut self.blob;
        self.enc
            .finish(&mut |b: &[u8]| {
                if let Some(h) = blob.as_mut() {
                    h.update(b);
                }
                sink(b);
                Ok(())
            })
            .map_err(CodecError::from)?;
        let uncompressed_size = self.diff.len();
        let diff_id = self.diff.finish();
        let (digest, size) = match self.blob {
            Some(h) => {
                let size = h.len();
                (h.finish(), size)
            }
            None => (diff_id.clone(), uncompressed_size),
        };
        Ok(LayerInfo {
            compression: self.compression,
            digest,
            size,
            diff_id,
            uncompressed_size,
        })
    }
}

fn blob_hasher(compression: Compression) -> Option<Hasher> {
    (compression != Compression::None).then(Hasher::new)
}

/// Picks a compression for `auto`: samples of the content are deflated at level 1; data that
/// shrinks by less than 10% (weights, already compressed files) is stored uncompressed, as r8im
/// and ModelPack do, anything else is gzipped.
pub fn choose_auto(sample: &[u8]) -> Compression {
    if sample.is_empty() {
        return Compression::Gzip;
    }
    let packed = miniz_oxide::deflate::compress_to_vec(sample, 1);
    if packed.len() as f64 >= sample.len() as f64 * 0.9 {
        Compression::None
    } else {
        Compression::Gzip
    }
}

enum Mode {
    Sniffing(Vec<u8>),
    Plain(LayerWriter),
    Compressed {
        compression: Compression,
        dec: Box<dyn Decoder>,
        blob: Hasher,
        diff: Hasher,
        head: Vec<u8>,
    },
}

/// A whole tar given by the user (`--tar`): an uncompressed tar is compressed as asked; a tar that
/// is already gzip or zstd is recognised from its first bytes and passed through unchanged, its
/// diff_id computed by decompressing as it streams. The first header is checked, so a file that is
/// not a tar is refused.
pub struct TarInput {
    mode: Mode,
    want: Compression,
    level: Option<i32>,
}

impl core::fmt::Debug for TarInput {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TarInput")
            .field("want", &self.want)
            .finish()
    }
}

const HEAD: usize = 512;

impl TarInput {
    /// `want` applies to an uncompressed input only.
    pub fn new(want: Compression, level: Option<i32>) -> Self {
        TarInput {
            mode: Mode::Sniffing(Vec::new()),
            want,
            level,
        }
    }

    /// Input bytes in; blob bytes to `sink`.
    pub fn write(&mut self, mut input: &[u8], sink: &mut dyn FnMut(&[u8])) -> Result<(), Error> {
        if let Mode::Sniffing(buf) = &mut self.mode {
            let take = (HEAD - buf.len()).min(input.len());
            buf.extend_from_slice(&input[..take]);
            input = &input[take..];
            if buf.len() < HEAD {
                return Ok(());
            }
            let head = std::mem::take(buf);
            self.decide(&head, sink)?;
        }
        self.feed(input, sink)
    }

    fn decide(&mut self, head: &[u8], sink: &mut dyn FnMut(&[u8])) -> Result<(), Error> {
        self.mode = match compress::sniff(head) {
            Some(c) if c != Compression::None => Mode::Compressed {
                compression: c,
                dec: compress::decoder(c),
                blob: Hasher::new(),
                diff: Hasher::new(),
                head: Vec::new(),
            },
            _ => {
                if !crate::tar::looks_like_tar_header(head) {
                    return Err(Error::Tar {
                        reason: "input is not a tar archive (nor a gzip or zstd compressed one)"
                            .into(),
                    });
                }
                Mode::Plain(LayerWriter::new(self.want, self.level))
            }
        };
        self.feed(head, sink)
    }

    fn feed(&mut self, input: &[u8], sink: &mut dyn FnMut(&[u8])) -> Result<(), Error> {
        match &mut self.mode {
            Mode::Sniffing(_) => Ok(()),
            Mode::Plain(w) => w.write(input, sink),
            Mode::Compressed {
                dec,
                blob,
                diff,
                head,
                ..
            } => {
                blob.update(input);
                sink(input);
                dec.write(input, &mut |b: &[u8]| {
                    if head.len() < HEAD {
                        let t = (HEAD - head.len()).min(b.len());
                        head.extend_from_slice(&b[..t]);
                    }
                    diff.update(b);
                    Ok(())
                })
                .map_err(CodecError::from)?;
                Ok(())
            }
        }
    }

    /// Ends the input; returns the layer's digests and sizes.
    pub fn finish(mut self, sink: &mut dyn FnMut(&[u8])) -> Result<LayerInfo, Error> {
        if let Mode::Sniffing(buf) = &mut self.mode {
            let head = std::mem::take(buf);
            if head.is_empty() {
                return Err(Error::Tar {
                    reason: "input is empty".into(),
                });
            }
            self.decide(&head, sink)?;
        }
        match self.mode {
            Mode::Sniffing(_) => Err(Error::Tar {
                reason: "input is empty".into(),
            }),
            Mode::Plain(w) => w.finish(sink),
            Mode::Compressed {
                compression,
                mut dec,
                blob,
                mut diff,
                mut head,
            } => {
                dec.finish(&mut |b: &[u8]| {
                    if head.len() < HEAD {
                        let t = (HEAD - head.len()).min(b.len());
                        head.extend_from_slice(&b[..t]);
                    }
                    diff.update(b);
                    Ok(())
                })
                .map_err(CodecError::from)?;
                if !crate::tar::looks_like_tar_header(&head) {
                    return Err(Error::Tar {
                        reason: format!(
                            "input is {} data but not a compressed tar archive",
                            compression.name()
                        ),
                    });
                }
                let size = blob.len();
                let uncompressed_size = diff.len();
                Ok(LayerInfo {
                    compression,
                    digest: blob.finish(),
                    size,
                    diff_id: diff.finish(),
                    uncompressed_size,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tar::{EntryKind, TarWriter};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn sample_tar() -> Vec<u8> {
        let mut out = Vec::new();
        let mut sink = |b: &[u8]| out.extend_from_slice(b);
        let mut w = TarWriter::new(0);
        let text = "weights = [1, 2, 3]\n".repeat(2000);
        w.entry(
            "src/weights/config.txt",
            &EntryKind::File {
                size: text.len() as u64,
                executable: false,
            },
            &mut sink,
        )
        .unwrap();
        w.data(text.as_bytes(), &mut sink).unwrap();
        w.finish(&mut sink).unwrap();
        out
    }

    fn run(c: Compression, chunk: usize, tar: &[u8]) -> (Vec<u8>, LayerInfo) {
        let mut blob = Vec::new();
        let mut w = LayerWriter::new(c, None);
        for ch in tar.chunks(chunk) {
            w.write(ch, &mut |b: &[u8]| blob.extend_from_slice(b))
                .unwrap();
        }
        let info = w.finish(&mut |b: &[u8]| blob.extend_from_slice(b)).unwrap();
        (blob, info)
    }

    #[test]
    fn digests_and_sizes_agree_with_the_bytes_at_every_chunk_size() {
        let tar = sample_tar();
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let (whole_blob, whole) = run(c, tar.len(), &tar);
            for chunk in [1, 7, 4096] {
                let (blob, info) = run(c, chunk, &tar);
                assert_eq!(info.digest, Digest::of(&blob), "{c:?} {chunk}");
                assert_eq!(info.size, blob.len() as u64);
                assert_eq!(info.diff_id, Digest::of(&tar));
                assert_eq!(info.uncompressed_size, tar.len() as u64);
                if c != Compression::Zstd || chunk == tar.len() {
                    assert_eq!(blob, whole_blob, "{c:?} deterministic at chunk {chunk}");
                }
            }
            assert_eq!(whole.compression, c);
            if c == Compression::None {
                assert_eq!(whole.digest, whole.diff_id);
            } else {
                assert!(whole.size < tar.len() as u64 / 4, "{c:?} compresses text");
            }
        }
    }

    #[test]
    fn tar_input_passes_compressed_tars_through_and_computes_the_diff_id() {
        let tar = sample_tar();
        for c in [Compression::Gzip, Compression::Zstd] {
            let (gz, _) = run(c, tar.len(), &tar);
            for chunk in [1, 7, 4096, gz.len()] {
                let mut out = Vec::new();
                let mut t = TarInput::new(Compression::Zstd, None);
                for ch in gz.chunks(chunk) {
                    t.write(ch, &mut |b: &[u8]| out.extend_from_slice(b))
                        .unwrap();
                }
                let info = t.finish(&mut |b: &[u8]| out.extend_from_slice(b)).unwrap();
                assert_eq!(out, gz, "passed through unchanged");
                assert_eq!(info.compression, c);
                assert_eq!(info.diff_id, Digest::of(&tar));
                assert_eq!(info.digest, Digest::of(&gz));
            }
        }
        // an uncompressed tar is compressed as asked
        let mut out = Vec::new();
        let mut t = TarInput::new(Compression::Gzip, None);
        t.write(&tar, &mut |b: &[u8]| out.extend_from_slice(b))
            .unwrap();
        let info = t.finish(&mut |b: &[u8]| out.extend_from_slice(b)).unwrap();
        assert_eq!(info.compression, Compression::Gzip);
        assert_eq!(info.diff_id, Digest::of(&tar));
    }

    #[test]
    fn tar_input_refuses_non_tars_and_corrupt_streams() {
        let mut t = TarInput::new(Compression::None, None);
        t.write(&[b'x'; 2000], &mut |_: &[u8]| {})
            .map(|_| ())
            .unwrap_err();
        assert!(TarInput::new(Compression::None, None)
            .finish(&mut |_: &[u8]| {})
            .is_err());
        let tar = sample_tar();
        let (mut gz, _) = run(Compression::Gzip, tar.len(), &tar);
        let n = gz.len();
        gz.truncate(n - 10);
        let mut t = TarInput::new(Compression::None, None);
        t.write(&gz, &mut |_: &[u8]| {}).unwrap();
        assert!(
            t.finish(&mut |_: &[u8]| {}).is_err(),
            "truncated gzip must fail"
        );
    }

    #[test]
    fn auto_compression_stores_random_data_uncompressed() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let random: Vec<u8> = (0..65536)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert_eq!(choose_auto(&random), Compression::None);
        assert_eq!(
            choose_auto("hello world ".repeat(1000).as_bytes()),
            Compression::Gzip
        );
    }
}
