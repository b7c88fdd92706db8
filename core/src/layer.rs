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

impl LayerInfo {
    /// A blob stored as it is (uncompressed: its diff_id is its digest), such as a raw file or
    /// a blob copied byte for byte.
    pub fn stored(digest: Digest, size: u64) -> Self {
        LayerInfo {
            compression: Compression::None,
            diff_id: digest.clone(),
            digest,
            size,
            uncompressed_size: size,
        }
    }
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

/// Picks a compression for `auto` from one sample of bytes: data that deflate (level 1)
/// shrinks by less than 10% (weights, already compressed files) is stored uncompressed, as r8im
/// and ModelPack do, anything else is gzipped. For a set of files, use [`choose_auto_files`],
/// which weighs each file by its size.
pub fn choose_auto(sample: &[u8]) -> Compression {
    if sample.is_empty() {
        return Compression::Gzip;
    }
    if deflate_ratio(sample) >= 0.9 {
        Compression::None
    } else {
        Compression::Gzip
    }
}

/// Extensions of model weight formats. `auto` never compresses these: their bytes are
/// floating-point tensors (or already packed), deflate gains a few percent at a large CPU
/// cost, and uncompressed layers let registries dedupe and readers seek.
pub const WEIGHT_EXTENSIONS: &[&str] = &[
    "safetensors",
    "gguf",
    "ggml",
    "bin",
    "pt",
    "pth",
    "ckpt",
    "onnx",
    "h5",
    "msgpack",
    "npz",
    "npy",
    "tflite",
    "pb",
    "keras",
    "mlmodel",
    "engine",
    "plan",
    "nemo",
    "dduf",
];

/// Whether `path` names a weights file, by its extension (case-insensitive).
pub fn is_weight_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => WEIGHT_EXTENSIONS
            .iter()
            .any(|w| w.eq_ignore_ascii_case(ext)),
        _ => false,
    }
}

/// Most bytes `auto` samples from one file.
pub const AUTO_SAMPLE_PER_FILE: u64 = 256 << 10;
/// Most bytes `auto` samples in all.
pub const AUTO_SAMPLE_TOTAL: u64 = 2 << 20;

/// Which files `auto` wants to sample, and how many bytes from the start of each: the
/// largest files that are not weights ([`is_weight_file`]), up to [`AUTO_SAMPLE_PER_FILE`]
/// each and [`AUTO_SAMPLE_TOTAL`] in all. `files` are `(path, size)`; the answer is
/// `(index into files, bytes)`, largest files first.
pub fn auto_sample_plan(files: &[(&str, u64)]) -> Vec<(usize, u64)> {
    let mut order: Vec<usize> = (0..files.len())
        .filter(|&i| files[i].1 > 0 && !is_weight_file(files[i].0))
        .collect();
    order.sort_by(|&a, &b| files[b].1.cmp(&files[a].1).then(a.cmp(&b)));
    let mut budget = AUTO_SAMPLE_TOTAL;
    let mut out = Vec::new();
    for i in order {
        if budget == 0 {
            break;
        }
        let n = files[i].1.min(AUTO_SAMPLE_PER_FILE).min(budget);
        budget -= n;
        out.push((i, n));
    }
    out
}

/// One file as `auto` sees it: its path, its size, and the bytes sampled from its start (empty
/// when it was not sampled).
#[derive(Debug, Clone, Copy)]
pub struct AutoFile<'a> {
    /// Path (only its extension matters).
    pub path: &'a str,
    /// Size in bytes.
    pub size: u64,
    /// The first bytes of the file, as [`auto_sample_plan`] asked.
    pub sample: &'a [u8],
}

/// What `auto` decided, and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AutoChoice {
    /// The compression.
    pub compression: Compression,
    /// Bytes in all.
    pub total: u64,
    /// Bytes of weights files (never compressed).
    pub weights: u64,
    /// Bytes gzip is estimated to save over the whole layer.
    pub saving: u64,
}

/// Decides `auto` for a layer made of `files`, weighing each file by its size: weights files
/// save nothing; a sampled file saves `size * (1 - deflate ratio of its sample)`; a file not
/// sampled counts at the mean ratio of those that were. The layer is gzipped only when that
/// saves at least 10% of its bytes; a layer whose bytes are mostly weights is stored
/// uncompressed. An empty set (or only empty files) is gzipped (tar headers shrink well).
pub fn choose_auto_files(files: &[AutoFile<'_>]) -> AutoChoice {
    let total: u64 = files.iter().map(|f| f.size).sum();
    let weights: u64 = files
        .iter()
        .filter(|f| is_weight_file(f.path))
        .map(|f| f.size)
        .sum();
    let mut ratios = Vec::new();
    let mut saving = 0f64;
    let mut unsampled = 0u64;
    for f in files {
        if is_weight_file(f.path) || f.size == 0 {
            continue;
        }
        if f.sample.is_empty() {
            unsampled += f.size;
            continue;
        }
        let r = deflate_ratio(f.sample).min(1.0);
        ratios.push(r);
        saving += f.size as f64 * (1.0 - r);
    }
    if unsampled > 0 {
        let mean = if ratios.is_empty() {
            // nothing sampled (the driver could not): assume text-like data
            0.5
        } else {
            ratios.iter().sum::<f64>() / ratios.len() as f64
        };
        saving += unsampled as f64 * (1.0 - mean);
    }
    let saving = saving.max(0.0) as u64;
    let compression = if total == 0 || saving as f64 >= total as f64 * 0.1 {
        Compression::Gzip
    } else {
        Compression::None
    };
    AutoChoice {
        compression,
        total,
        weights,
        saving,
    }
}

/// Decides `auto` for a plain tar from its first bytes only (stdin cannot be read twice): the
/// entries whose headers are in `prefix`, each sampled with the content `prefix` holds of it.
/// A prefix that is not a plain tar decides gzip (a compressed tar is passed through anyway).
pub fn choose_auto_tar_prefix(prefix: &[u8]) -> AutoChoice {
    use crate::untar::{Event, TarReader};
    let mut files: Vec<(String, u64, Vec<u8>)> = Vec::new();
    let mut r = TarReader::new();
    let _ = r.write(prefix, &mut |e| {
        match e {
            Event::Entry(h) if h.size > 0 => files.push((h.path.clone(), h.size, Vec::new())),
            Event::Data(d) => {
                if let Some(f) = files.last_mut() {
                    let room = (AUTO_SAMPLE_PER_FILE as usize).saturating_sub(f.2.len());
                    f.2.extend_from_slice(&d[..d.len().min(room)]);
                }
            }
            _ => {}
        }
        Ok(())
    });
    let auto: Vec<AutoFile<'_>> = files
        .iter()
        .map(|(p, s, sample)| AutoFile {
            path: p,
            size: *s,
            sample,
        })
        .collect();
    choose_auto_files(&auto)
}

/// Deflated size (level 1) over input size.
fn deflate_ratio(sample: &[u8]) -> f64 {
    let packed = miniz_oxide::deflate::compress_to_vec(sample, 1);
    packed.len() as f64 / sample.len().max(1) as f64
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

    fn random(n: usize) -> Vec<u8> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn weight_extensions_are_recognised_case_insensitively() {
        for p in [
            "model-00001-of-00002.safetensors",
            "unet/diffusion_pytorch_model.SafeTensors",
            "m.gguf",
            "pytorch_model.bin",
            "w.pt",
            "w.pth",
            "model.onnx",
            "tf_model.h5",
            "flax_model.msgpack",
            "a.npz",
            "m.tflite",
        ] {
            assert!(is_weight_file(p), "{p}");
        }
        for p in [
            "config.json",
            "tokenizer.json",
            "README.md",
            ".bin",
            "safetensors",
            "x.py",
        ] {
            assert!(!is_weight_file(p), "{p}");
        }
    }

    /// Regression: `auto` sampled equal bytes per file, so on a folder with one big weights
    /// file and a few text files the text outvoted the weights and the layer was gzipped (6x
    /// slower for 0.3% smaller).
    #[test]
    fn auto_gzipped_weights_when_small_text_files_outvoted_them() {
        let text = "{\"vocab\": [\"hello\", \"world\"]}\n".repeat(4000);
        let noise = random(64 << 10);
        let files = [
            AutoFile {
                path: "config.json",
                size: 700,
                sample: &text.as_bytes()[..700],
            },
            AutoFile {
                path: "tokenizer.json",
                size: 2 << 20,
                sample: text.as_bytes(),
            },
            AutoFile {
                path: "tokenizer_config.json",
                size: 1000,
                sample: &text.as_bytes()[..1000],
            },
            AutoFile {
                path: "model.safetensors",
                size: 1 << 30,
                sample: &[],
            },
        ];
        let c = choose_auto_files(&files);
        assert_eq!(c.compression, Compression::None, "{c:?}");
        assert_eq!(c.weights, 1 << 30);
        // the same weights under a name that is not a weights format are sampled as noise
        let files = [
            AutoFile {
                path: "config.json",
                size: 700,
                sample: &text.as_bytes()[..700],
            },
            AutoFile {
                path: "blob",
                size: 1 << 30,
                sample: &noise,
            },
        ];
        assert_eq!(choose_auto_files(&files).compression, Compression::None);
        // mostly text: gzip
        let files = [
            AutoFile {
                path: "tokenizer.json",
                size: 8 << 20,
                sample: text.as_bytes(),
            },
            AutoFile {
                path: "model.safetensors",
                size: 1 << 20,
                sample: &[],
            },
        ];
        assert_eq!(choose_auto_files(&files).compression, Compression::Gzip);
        assert_eq!(choose_auto_files(&[]).compression, Compression::Gzip);
    }

    #[test]
    fn auto_sample_plan_takes_the_largest_non_weights_files_within_budget() {
        let files = [
            ("a.json", 10u64),
            ("model.safetensors", 5 << 30),
            ("big.txt", 10 << 20),
            ("empty", 0),
            ("mid.txt", 100 << 10),
        ];
        let plan = auto_sample_plan(&files);
        assert_eq!(
            plan,
            vec![(2, AUTO_SAMPLE_PER_FILE), (4, 100 << 10), (0, 10)]
        );
        let many: Vec<(String, u64)> = (0..100).map(|i| (format!("f{i}.txt"), 1 << 20)).collect();
        let many: Vec<(&str, u64)> = many.iter().map(|(p, s)| (p.as_str(), *s)).collect();
        let plan = auto_sample_plan(&many);
        assert_eq!(plan.iter().map(|p| p.1).sum::<u64>(), AUTO_SAMPLE_TOTAL);
    }

    #[test]
    fn auto_on_a_tar_prefix_weighs_the_entries_it_sees() {
        let mut tar = Vec::new();
        let mut s = |b: &[u8]| tar.extend_from_slice(b);
        let mut w = TarWriter::new(0);
        let text = "{\"a\": 1}\n".repeat(100);
        w.entry(
            "config.json",
            &EntryKind::File {
                size: text.len() as u64,
                executable: false,
            },
            &mut s,
        )
        .unwrap();
        w.data(text.as_bytes(), &mut s).unwrap();
        w.end_file().unwrap();
        let noise = random(3 << 20);
        w.entry(
            "blob",
            &EntryKind::File {
                size: noise.len() as u64,
                executable: false,
            },
            &mut s,
        )
        .unwrap();
        w.data(&noise, &mut s).unwrap();
        w.end_file().unwrap();
        w.finish(&mut s).unwrap();
        // only the first MiB is seen: the big entry's sample is noise
        assert_eq!(
            choose_auto_tar_prefix(&tar[..1 << 20]).compression,
            Compression::None
        );
        assert_eq!(choose_auto_tar_prefix(&tar).compression, Compression::None);
        assert_eq!(
            choose_auto_tar_prefix(&tar[..2048]).compression,
            Compression::Gzip
        );
        assert_eq!(
            choose_auto_tar_prefix(b"not a tar").compression,
            Compression::Gzip
        );
    }
}
