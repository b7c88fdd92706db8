//! Building model artifacts: which kind a file is, what its header says about the model
//! (safetensors and GGUF headers are read, not guessed), and the ModelPack layer descriptors,
//! config and manifest.
//!
//! Kinds follow modctl's lists (`pkg/modelfile/constants.go`, matched case-insensitively on the
//! base name, the first list that matches wins: config, weight, code, doc); a file no list
//! names is a weight above 128 MB and code below, as modctl decides, and its layer says the
//! kind was guessed (`org.cncf.model.file.mediatype.untested: "true"`). The config lamina
//! writes holds only keys the ModelPack JSON schema allows (it forbids any other).

use serde_json::{json, Map, Value};

use crate::artifact::{
    Kind, Packing, ANN_FILEPATH, ANN_FILE_METADATA, ANN_TITLE, ANN_UNTESTED, MODELPACK_CONFIG,
    MODELPACK_MANIFEST,
};
use crate::image::Descriptor;
use crate::{media, Digest};

/// modctl's weight-config names.
const CONFIG: &[&str] = &[
    "*.json",
    "*.jsonl",
    "*.json5",
    "*.jsonc",
    "*.yaml",
    "*.yml",
    "*.toml",
    "*.ini",
    "*.config",
    "*.cfg",
    "*.conf",
    "*.properties",
    "*.props",
    "*.prop",
    "*.xml",
    "*.xsd",
    "*.rng",
    "*.modelcard",
    "*.meta",
    "*tokenizer.model*",
    "*.tiktoken",
    "vocab.txt",
    "merges.txt",
    "added_tokens.txt",
    "spiece.model",
    "sentencepiece*.model",
    "sentencepiece*.vocab",
    "tiktoken.model",
    "chat_template.jinja",
    "config.json.*",
    "*.hparams",
    "*.params",
    "*.hyperparams",
    "*.wandb",
    "*.mlflow",
    "*.tensorboard",
];

/// modctl's weight names.
const WEIGHT: &[&str] = &[
    "*.safetensors",
    "*.bin",
    "*.bin.*",
    "*.pt",
    "*.pth",
    "*.mar",
    "*.pte",
    "*.pt2",
    "*.ptl",
    "*.tflite",
    "*.h5",
    "*.hdf",
    "*.hdf5",
    "*.pb",
    "*.meta",
    "*.data-*",
    "*.index",
    "*.gguf",
    "*.gguf.*",
    "*.ggml",
    "*.ggmf",
    "*.ggjt",
    "*.q4_0",
    "*.q4_1",
    "*.q5_0",
    "*.q5_1",
    "*.q8_0",
    "*.f16",
    "*.f32",
    "*.ckpt",
    "*.checkpoint",
    "*.dist_ckpt",
    "tensor[0-9]*_[0-9]*",
    "*.tensor",
    "*.weights",
    "*.state",
    "*.embedding",
    "*.vocab",
    "*.ot",
    "*.engine",
    "*.trt",
    "*.onnx",
    "*.onnx_data*",
    "*.msgpack",
    "*.model",
    "*.pkl",
    "*.pickle",
    "*.keras",
    "*.joblib",
    "*.npy",
    "*.npz",
    "*.nc",
    "*.mlmodel",
    "*.coreml",
    "*.mil",
    "*.mleap",
    "*.surml",
    "*.llamafile",
    "*.llamafile.*",
    "*.caffemodel",
    "*.prototxt",
    "*.dlc",
    "*.circle",
    "*.nb",
    "*.arrow",
    "*.parquet",
    "*.ftz",
    "*.ark",
    "*.db",
];

/// modctl's code names.
const CODE: &[&str] = &[
    "*.py",
    "*.ipynb",
    "*.sh",
    "*.patch",
    "*.c",
    "*.h",
    "*.hxx",
    "*.cpp",
    "*.cc",
    "*.cxx",
    "*.c++",
    "*.hpp",
    "*.hh",
    "*.h++",
    "*.java",
    "*.js",
    "*.mjs",
    "*.cjs",
    "*.jsx",
    "*.ts",
    "*.tsx",
    "*.go",
    "*.rs",
    "*.swift",
    "*.rb",
    "*.php",
    "*.scala",
    "*.kt",
    "*.kts",
    "*.r",
    "*.m",
    "*.mm",
    "*.f",
    "*.f90",
    "*.f95",
    "*.f03",
    "*.f08",
    "*.jl",
    "*.lua",
    "*.pl",
    "*.pm",
    "*.cs",
    "*.vb",
    "*.dart",
    "*.groovy",
    "*.elm",
    "*.erl",
    "*.hrl",
    "*.ex",
    "*.exs",
    "*.hs",
    "*.lhs",
    "*.clj",
    "*.cljs",
    "*.cljc",
    "*.cl",
    "*.lisp",
    "*.lsp",
    "*.scm",
    "*.ss",
    "*.rkt",
    "*.sql",
    "*.psql",
    "*.mysql",
    "*.sqlite",
    "*.zig",
    "*.cu",
    "*.cuh",
    "*.bash",
    "*.zsh",
    "*.fish",
    "*.csh",
    "*.tcsh",
    "*.ksh",
    "*.ps1",
    "*.psm1",
    "*.psd1",
    "*.bat",
    "*.cmd",
    "*.vbs",
    "*.wsf",
    "*.applescript",
    "*.scpt",
    "*.awk",
    "*.sed",
    "*.expect",
    "*.env",
    "*.env.*",
    ".env*",
    "makefile*",
    "*.dockerfile",
    "dockerfile*",
    "*.mk",
    "*.cmake",
    "cmakelists.txt",
    "*.gradle",
    "*.gradle.kts",
    "build.gradle*",
    "settings.gradle*",
    "*.sbt",
    "*.mill",
    "*.bazel",
    "*.bzl",
    "build*",
    "workspace*",
    "*.buck",
    "buck*",
    "*.ninja",
    "*.gyp",
    "*.gypi",
    "*.waf",
    "wscript*",
    "package.json",
    "package-lock.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "requirements*.txt",
    "pipfile*",
    "pyproject.toml",
    "setup.cfg",
    "tox.ini",
    "poetry.lock",
    "cargo.toml",
    "cargo.lock",
    "go.mod",
    "go.sum",
    "composer.json",
    "composer.lock",
    "gemfile*",
    "*.gemspec",
    "mix.exs",
    "mix.lock",
    "rebar.config",
    "rebar.lock",
    "*.so",
    "*.dll",
    "*.dylib",
    "*.lib",
    "*.a",
];

/// modctl's doc names.
const DOC: &[&str] = &[
    "*.txt",
    "*.md",
    "*.pdf",
    "license*",
    "readme*",
    "setup*",
    "*requirements*",
    "*.log",
    "*.tfevents*",
    "*.doc",
    "*.docx",
    "*.docm",
    "*.dot",
    "*.dotx",
    "*.dotm",
    "*.rtf",
    "*.odt",
    "*.ott",
    "*.fodt",
    "*.pages",
    "*.wpd",
    "*.xls",
    "*.xlsx",
    "*.xlsm",
    "*.xlsb",
    "*.xlt",
    "*.xltx",
    "*.xltm",
    "*.ods",
    "*.ots",
    "*.fods",
    "*.numbers",
    "*.csv",
    "*.ppt",
    "*.pptx",
    "*.pptm",
    "*.pps",
    "*.ppsx",
    "*.ppsm",
    "*.pot",
    "*.potx",
    "*.potm",
    "*.odp",
    "*.otp",
    "*.fodp",
    "*.key",
    "*.epub",
    "*.mobi",
    "*.azw",
    "*.azw3",
    "*.fb2",
    "*.fb3",
    "*.lit",
    "*.pdb",
    "*.djvu",
    "*.djv",
    "*.html",
    "*.htm",
    "*.xhtml",
    "*.mhtml",
    "*.mht",
    "*.xsl",
    "*.xslt",
    "*.tex",
    "*.latex",
    "*.ltx",
    "*.bib",
    "*.rst",
    "*.asciidoc",
    "*.adoc",
    "*.textile",
    "*.wiki",
    "*.mediawiki",
    "*.org",
    "*.texi",
    "*.texinfo",
    "*.info",
    "*.man",
    "*.chm",
    "*.hlp",
    "*.xps",
    "*.jpg",
    "*.jpeg",
    "*.png",
    "*.gif",
    "*.bmp",
    "*.tiff",
    "*.ico",
    "*.webp",
    "*.heic",
    "*.heif",
    "*.hevc",
    "*.svg",
    "*.mp4",
    "*.mov",
    "*.avi",
    "*.mkv",
    "*.webm",
    "*.m4v",
    "*.flv",
    "*.wmv",
    "*.mpg",
    "*.mpeg",
];

/// Files modctl leaves out of a model: hidden files, its Modelfile, Python caches.
pub fn skipped(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.starts_with('.')
        || n == "modelfile"
        || n == "__pycache__"
        || [".pyc", ".pyo", ".pyd"].iter().any(|e| n.ends_with(e))
}

/// Above this size a file no list names is taken for a weight (modctl's threshold).
pub const WEIGHT_GUESS: u64 = 128_000_000;

/// The kind of the file `name` (a base name) of `size` bytes, and whether it was guessed
/// (no list names it).
pub fn classify(name: &str, size: u64) -> (Kind, bool) {
    let n = name.to_ascii_lowercase();
    for (list, kind) in [
        (CONFIG, Kind::Config),
        (WEIGHT, Kind::Weight),
        (CODE, Kind::Code),
        (DOC, Kind::Doc),
    ] {
        if list.iter().any(|p| glob(p.as_bytes(), n.as_bytes())) {
            return (kind, false);
        }
    }
    (
        if size > WEIGHT_GUESS {
            Kind::Weight
        } else {
            Kind::Code
        },
        true,
    )
}

/// `*`, `?` and `[0-9]`-style classes, over bytes (the lists are ASCII).
fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') => (0..=s.len()).any(|i| glob(&p[1..], &s[i..])),
        Some(b'?') => !s.is_empty() && glob(&p[1..], &s[1..]),
        Some(b'[') => {
            let Some(end) = p.iter().position(|c| *c == b']') else {
                return false;
            };
            let class = &p[1..end];
            let Some(&c) = s.first() else { return false };
            let hit = class
                .windows(3)
                .any(|w| w[1] == b'-' && w[0] <= c && c <= w[2])
                || class.contains(&c);
            hit && glob(&p[end + 1..], &s[1..])
        }
        Some(&c) => s.first() == Some(&c) && glob(&p[1..], &s[1..]),
    }
}

/// What a weight file's header says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// `safetensors`, `gguf`.
    pub format: Option<String>,
    /// Parameters (the tensors' element counts summed).
    pub params: Option<u64>,
    /// Element types, most parameters first (`bfloat16`, `float8_e4m3`).
    pub precisions: Vec<(String, u64)>,
    /// GGUF's `general.architecture`.
    pub architecture: Option<String>,
    /// GGUF's file type (`Q4_K_M`).
    pub quantization: Option<String>,
    /// How many tensors the header lists.
    pub tensors: u64,
    /// The header's metadata, in order: safetensors' `__metadata__` strings; GGUF's keys with
    /// their scalar values, an array as `[N × type]` ([`MAX_METADATA`] entries at most, values
    /// cut at [`MAX_METADATA_VALUE`] bytes).
    pub metadata: Vec<(String, String)>,
    /// The header's length in bytes (where the tensor data starts, for safetensors).
    pub header_len: u64,
}

/// Most metadata entries a weight header's [`Facts`] keep.
pub const MAX_METADATA: usize = 256;
/// Longest metadata value kept, in bytes (longer ones are cut, with `…`).
pub const MAX_METADATA_VALUE: usize = 200;

/// `v` cut at [`MAX_METADATA_VALUE`] bytes on a character boundary.
fn short_value(v: &str) -> String {
    if v.len() <= MAX_METADATA_VALUE {
        return v.to_string();
    }
    let mut end = MAX_METADATA_VALUE;
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &v[..end])
}

/// Reads a weight file's header from its first bytes: `None` when the bytes are not a
/// safetensors or GGUF header, or end before it does (give more of the file).
pub fn facts(name: &str, head: &[u8]) -> Option<Facts> {
    if head.starts_with(b"GGUF") {
        return gguf(head);
    }
    if name.to_ascii_lowercase().ends_with(".safetensors") {
        return safetensors(head);
    }
    None
}

/// Bytes of a weight file's head read first for its header ([`HeadReader`]).
pub const HEAD_FIRST: u64 = 256 << 10;
/// Most of a weight file's head read for its header (GGUF metadata holds the vocabulary).
pub const HEAD_MAX: u64 = 64 << 20;
/// A `config.json` this size or larger is not read for the family.
pub const CONFIG_JSON_MAX: u64 = 16 << 20;

/// Reads a weight file's header facts ([`facts`]) from the file's bytes as they stream by,
/// holding only the head the header needs: [`HEAD_FIRST`] bytes first; then, when that was not
/// enough, a safetensors header's own length, or a GGUF head 8 times longer, up to
/// [`HEAD_MAX`]. (`lamina pack` reads a file's head the same steps; a driver that has the bytes
/// streaming anyway gives them here.)
///
/// ```text
///   let mut h = HeadReader::new(path);
///   for chunk in file { h.write(chunk); }   // h.wants_more() false: the rest is not needed
///   let facts = h.finish();                 // the file's end (or all there was)
/// ```
#[derive(Debug)]
pub struct HeadReader {
    name: String,
    head: Vec<u8>,
    want: u64,
    out: Option<Option<Facts>>,
}

impl HeadReader {
    /// A reader for the file at `path` (its name tells safetensors).
    pub fn new(path: &str) -> HeadReader {
        HeadReader {
            name: path.to_string(),
            head: Vec::new(),
            want: HEAD_FIRST,
            out: None,
        }
    }

    /// Whether more of the file could change the facts.
    pub fn wants_more(&self) -> bool {
        self.out.is_none()
    }

    /// For a driver that reads the file itself: the head's next bytes wanted, as the range
    /// `held..end` of the file (`None`: enough was read). Give them to [`write`](Self::write);
    /// when the file ends first, give what there was and [`finish`](Self::finish).
    pub fn next_read(&self) -> Option<std::ops::Range<u64>> {
        self.out
            .is_none()
            .then_some(self.head.len() as u64..self.want)
    }

    /// The file's next bytes.
    pub fn write(&mut self, mut b: &[u8]) {
        while self.out.is_none() && !b.is_empty() {
            let room = (self.want as usize).saturating_sub(self.head.len());
            let n = room.min(b.len());
            self.head.extend_from_slice(&b[..n]);
            b = &b[n..];
            if self.head.len() as u64 >= self.want || self.safetensors_whole() {
                self.step();
            }
        }
    }

    /// Whether the head holds a whole safetensors header already (before [`HEAD_FIRST`]
    /// bytes): a stream, or a zstd:chunked file's frames, need be read no further.
    fn safetensors_whole(&self) -> bool {
        let n = self
            .head
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes);
        matches!(n, Some(n) if n.saturating_add(8) <= self.head.len() as u64)
            && self.name.to_ascii_lowercase().ends_with(".safetensors")
    }

    /// The head is as long as it was wanted: the facts, or how much more to read.
    fn step(&mut self) {
        if let Some(f) = facts(&self.name, &self.head) {
            return self.decide(Some(f));
        }
        if self.want >= HEAD_MAX {
            return self.decide(None);
        }
        let next = if self.name.to_ascii_lowercase().ends_with(".safetensors") {
            match self
                .head
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
            {
                Some(n) if n + 8 <= HEAD_MAX && n + 8 > self.want => n + 8,
                _ => return self.decide(None),
            }
        } else if self.head.starts_with(b"GGUF") {
            (self.want * 8).min(HEAD_MAX)
        } else {
            return self.decide(None);
        };
        self.want = next;
    }

    fn decide(&mut self, f: Option<Facts>) {
        self.out = Some(f);
        self.head = Vec::new();
    }

    /// The facts, at the file's end (or once nothing more was wanted).
    pub fn finish(self) -> Option<Facts> {
        match self.out {
            Some(f) => f,
            None => facts(&self.name, &self.head),
        }
    }
}

fn add_precision(v: &mut Vec<(String, u64)>, p: &str, n: u64) {
    match v.iter_mut().find(|(q, _)| q == p) {
        Some((_, m)) => *m = m.saturating_add(n),
        None => v.push((p.to_string(), n)),
    }
}

fn safetensors(head: &[u8]) -> Option<Facts> {
    let n = u64::from_le_bytes(head.get(..8)?.try_into().ok()?);
    if n > 100 << 20 {
        return None;
    }
    let json: Value = serde_json::from_slice(head.get(8..8 + n as usize)?).ok()?;
    let mut f = Facts {
        format: Some("safetensors".into()),
        ..Facts::default()
    };
    f.header_len = 8 + n;
    let mut total = 0u64;
    for (k, t) in json.as_object()? {
        if k == "__metadata__" {
            for (mk, mv) in t.as_object().into_iter().flatten() {
                if f.metadata.len() < MAX_METADATA {
                    let v = mv
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| mv.to_string());
                    f.metadata.push((mk.clone(), short_value(&v)));
                }
            }
            continue;
        }
        f.tensors += 1;
        let count = t
            .get("shape")?
            .as_array()?
            .iter()
            .try_fold(1u64, |a, d| a.checked_mul(d.as_u64()?))?;
        total = total.checked_add(count)?;
        let p = match t.get("dtype")?.as_str()? {
            "F64" => "float64",
            "F32" => "float32",
            "F16" => "float16",
            "BF16" => "bfloat16",
            "F8_E4M3" => "float8_e4m3",
            "F8_E5M2" => "float8_e5m2",
            "I64" => "int64",
            "I32" => "int32",
            "I16" => "int16",
            "I8" => "int8",
            "U8" => "uint8",
            "BOOL" => "bool",
            other => other,
        };
        add_precision(&mut f.precisions, &p.to_ascii_lowercase(), count);
    }
    f.params = Some(total);
    f.precisions
        .sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Some(f)
}

/// A cursor over a GGUF header.
struct Gguf<'a> {
    b: &'a [u8],
    at: usize,
}

impl Gguf<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.b.get(self.at..end)?;
        self.at = end;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn string(&mut self) -> Option<String> {
        let n = self.u64()?;
        let n = usize::try_from(n).ok()?;
        Some(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
    /// A value of type `t`: scalars and strings kept (an array's items are read past, and it
    /// is kept as `"[N × type]"`).
    fn value(&mut self, t: u32, depth: u8) -> Option<Option<Value>> {
        Some(match t {
            0 => Some(Value::from(self.take(1)?[0])),
            1 => Some(Value::from(self.take(1)?[0] as i8)),
            2 => Some(Value::from(u16::from_le_bytes(
                self.take(2)?.try_into().ok()?,
            ))),
            3 => Some(Value::from(i16::from_le_bytes(
                self.take(2)?.try_into().ok()?,
            ))),
            4 => Some(Value::from(self.u32()?)),
            5 => Some(Value::from(i32::from_le_bytes(
                self.take(4)?.try_into().ok()?,
            ))),
            6 => Some(Value::from(
                f32::from_le_bytes(self.take(4)?.try_into().ok()?) as f64,
            )),
            7 => Some(Value::Bool(self.take(1)?[0] != 0)),
            8 => Some(Value::String(self.string()?)),
            9 => {
                if depth > 2 {
                    return None;
                }
                let it = self.u32()?;
                let n = self.u64()?;
                for _ in 0..n {
                    self.value(it, depth + 1)?;
                }
                Some(Value::String(format!("[{n} × {}]", gguf_type_name(it))))
            }
            10 => Some(Value::from(self.u64()?)),
            11 => Some(Value::from(i64::from_le_bytes(
                self.take(8)?.try_into().ok()?,
            ))),
            12 => Some(Value::from(f64::from_le_bytes(
                self.take(8)?.try_into().ok()?,
            ))),
            _ => return None,
        })
    }
}

/// GGUF's metadata value type names.
fn gguf_type_name(t: u32) -> &'static str {
    match t {
        0 => "uint8",
        1 => "int8",
        2 => "uint16",
        3 => "int16",
        4 => "uint32",
        5 => "int32",
        6 => "float32",
        7 => "bool",
        8 => "string",
        9 => "array",
        10 => "uint64",
        11 => "int64",
        12 => "float64",
        _ => "unknown",
    }
}

/// GGUF's `general.file_type` names (llama.cpp's `llama_ftype`).
fn gguf_file_type(t: u32) -> Option<&'static str> {
    Some(match t {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        _ => return None,
    })
}

fn gguf(head: &[u8]) -> Option<Facts> {
    let mut g = Gguf { b: head, at: 4 };
    let version = g.u32()?;
    if !(2..=3).contains(&version) {
        return None;
    }
    let tensors = g.u64()?;
    let kvs = g.u64()?;
    let mut f = Facts {
        format: Some("gguf".into()),
        ..Facts::default()
    };
    f.tensors = tensors;
    for _ in 0..kvs {
        let key = g.string()?;
        let t = g.u32()?;
        let v = g.value(t, 0)?;
        if let Some(v) = &v {
            if f.metadata.len() < MAX_METADATA {
                let s = v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string());
                f.metadata.push((key.clone(), short_value(&s)));
            }
        }
        match (key.as_str(), v) {
            ("general.architecture", Some(Value::String(a))) => f.architecture = Some(a),
            ("general.file_type", Some(Value::Number(n))) => {
                f.quantization = n
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .and_then(gguf_file_type)
                    .map(str::to_string);
            }
            _ => {}
        }
    }
    let mut total = 0u64;
    for _ in 0..tensors {
        g.string()?;
        let dims = g.u32()?;
        if dims > 8 {
            return None;
        }
        let mut n = 1u64;
        for _ in 0..dims {
            n = n.checked_mul(g.u64()?)?;
        }
        g.u32()?; // the element type
        g.u64()?; // the offset
        total = total.checked_add(n)?;
    }
    f.params = Some(total);
    f.header_len = g.at as u64;
    Some(f)
}

/// A parameter count as ModelPack writes it: `<count><scale>` with three significant digits at
/// most (`8.03B`, `124M`, `5K`, `1.5T`, `900`).
pub fn param_size(n: u64) -> String {
    for (scale, suffix) in [(1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")] {
        let v = n as f64 / scale;
        if v >= 1.0 {
            let s = if v >= 100.0 {
                format!("{v:.0}")
            } else if v >= 10.0 {
                format!("{v:.1}")
            } else {
                format!("{v:.2}")
            };
            let s = if s.contains('.') {
                s.trim_end_matches('0').trim_end_matches('.').to_string()
            } else {
                s
            };
            return format!("{s}{suffix}");
        }
    }
    n.to_string()
}

/// The ModelPack layer media type for a kind and packing (`Other` is packed as a weight
/// config, as model-runner does for files of no known kind).
pub fn modelpack_layer_type(kind: Kind, packing: Packing) -> String {
    let k = match kind {
        Kind::Weight => "weight",
        Kind::Config | Kind::Other => "weight.config",
        Kind::Doc => "doc",
        Kind::Code | Kind::Prompt => "code",
        Kind::Dataset => "dataset",
    };
    format!("application/vnd.cncf.model.{k}.v1.{}", packing.name())
}

/// A file of an artifact being built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileLayer {
    /// Its path in the artifact (relative, checked).
    pub path: String,
    /// Its kind.
    pub kind: Kind,
    /// Whether the kind was guessed.
    pub guessed: bool,
    /// Raw or tar.
    pub packing: Packing,
    /// The blob's digest and size.
    pub digest: Digest,
    /// The blob's size.
    pub size: u64,
    /// The uncompressed digest (the digest itself for raw and plain tar layers).
    pub diff_id: Digest,
    /// The file's size.
    pub file_size: u64,
    /// Executable.
    pub executable: bool,
    /// The file's annotations carried from the artifact it was converted from (its metadata,
    /// whether its kind was guessed), instead of the ones a packed file gets.
    pub carried: Option<Vec<(String, String)>>,
}

impl FileLayer {
    /// Its descriptor: the media type, the path (`org.cncf.model.filepath`, and the OCI title
    /// for CRI-O), the file's metadata normalised (owner 0:0, mode 0644/0755, mtime `mtime`),
    /// and whether the kind was guessed.
    pub fn descriptor(&self, mtime: u64) -> Descriptor {
        let mut d = Descriptor::new(
            modelpack_layer_type(self.kind, self.packing),
            self.digest.clone(),
            self.size,
        );
        let name = self.path.rsplit('/').next().unwrap_or(&self.path);
        let meta = json!({
            "name": name,
            "mode": if self.executable { 0o755 } else { 0o644 },
            "uid": 0,
            "gid": 0,
            "size": self.file_size,
            "mtime": crate::image::rfc3339(mtime),
            "typeflag": 0,
        });
        d.annotations = vec![
            (ANN_FILEPATH.into(), self.path.clone()),
            (ANN_TITLE.into(), self.path.clone()),
        ];
        match &self.carried {
            Some(c) => d.annotations.extend(c.iter().cloned()),
            None => d.annotations.extend([
                (ANN_FILE_METADATA.into(), meta.to_string()),
                (ANN_UNTESTED.into(), self.guessed.to_string()),
            ]),
        }
        d
    }
}

/// What goes into a ModelPack config besides the diff_ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Model {
    /// `descriptor.name` (the schema wants it non-empty when present).
    pub name: Option<String>,
    /// `descriptor.family`.
    pub family: Option<String>,
    /// `descriptor.createdAt` (RFC 3339).
    pub created_at: Option<String>,
    /// `config.format`.
    pub format: Option<String>,
    /// `config.paramSize`.
    pub param_size: Option<String>,
    /// `config.precision`.
    pub precision: Option<String>,
    /// `config.architecture`.
    pub architecture: Option<String>,
    /// `config.quantization`.
    pub quantization: Option<String>,
}

impl Model {
    /// What the weight files' headers say, where this says nothing yet: the format of the
    /// weights holding most parameters, parameters summed, precisions by parameters.
    pub fn fill_from(&mut self, facts: &[Facts]) {
        let mut formats: Vec<(String, u64)> = Vec::new();
        let mut precisions: Vec<(String, u64)> = Vec::new();
        let mut params = 0u64;
        for f in facts {
            let n = f.params.unwrap_or(0);
            params = params.saturating_add(n);
            if let Some(fmt) = &f.format {
                add_precision(&mut formats, fmt, n.max(1));
            }
            for (p, k) in &f.precisions {
                add_precision(&mut precisions, p, *k);
            }
            if self.architecture.is_none() {
                self.architecture = f.architecture.clone();
            }
            if self.quantization.is_none() {
                self.quantization = f.quantization.clone();
            }
        }
        formats.sort_by_key(|f| std::cmp::Reverse(f.1));
        precisions.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        if self.format.is_none() {
            self.format = formats.first().map(|f| f.0.clone());
        }
        if self.param_size.is_none() && params > 0 {
            self.param_size = Some(param_size(params));
        }
        if self.precision.is_none() && !precisions.is_empty() {
            self.precision = Some(
                precisions
                    .iter()
                    .map(|p| p.0.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
    }
}

impl Model {
    /// What a transformers `config.json` (its bytes; one [`CONFIG_JSON_MAX`] or larger is not
    /// read) says, where this says nothing yet: the family (`model_type`), the precision
    /// (`torch_dtype`), and `transformer` for the architecture when `transformers_version` is
    /// there. Bytes that are not JSON say nothing.
    pub fn fill_from_config_json(&mut self, bytes: &[u8]) {
        let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
            return;
        };
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        self.family = self.family.take().or_else(|| s("model_type"));
        self.precision = self.precision.take().or_else(|| s("torch_dtype"));
        if v.get("transformers_version").is_some() && self.architecture.is_none() {
            self.architecture = Some("transformer".into());
        }
    }
}

/// Puts `k: v` into `m` when `v` is there and not empty (configs leave unknown facts out).
pub fn put_some(m: &mut Map<String, Value>, k: &str, v: &Option<String>) {
    if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
        m.insert(k.into(), Value::String(v.clone()));
    }
}

/// The ModelPack config: `descriptor`, `config` and `modelfs` (`type: layers`, the diff_ids in
/// layer order), with no key the schema does not allow.
pub fn modelpack_config(model: &Model, diff_ids: &[Digest]) -> Vec<u8> {
    let mut descriptor = Map::new();
    let put = put_some;
    put(&mut descriptor, "createdAt", &model.created_at);
    put(&mut descriptor, "name", &model.name);
    put(&mut descriptor, "family", &model.family);
    let mut config = Map::new();
    put(&mut config, "architecture", &model.architecture);
    put(&mut config, "format", &model.format);
    put(&mut config, "paramSize", &model.param_size);
    put(&mut config, "precision", &model.precision);
    put(&mut config, "quantization", &model.quantization);
    let v = json!({
        "descriptor": descriptor,
        "config": config,
        "modelfs": {
            "type": "layers",
            "diffIds": diff_ids.iter().map(Digest::to_string).collect::<Vec<_>>(),
        },
    });
    // serialising a Value cannot fail
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The ModelPack manifest over `config` (its bytes) and `layers`.
pub fn modelpack_manifest(config: &[u8], layers: &[Descriptor]) -> Vec<u8> {
    let v = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "artifactType": MODELPACK_MANIFEST,
        "config": {
            "mediaType": MODELPACK_CONFIG,
            "digest": Digest::of(config).to_string(),
            "size": config.len(),
        },
        "layers": layers.iter().map(Descriptor::to_value).collect::<Vec<_>>(),
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The tar around one file for a `...v1.tar` layer, as modctl makes it (one entry named by the
/// file's path, no directory entries) but reproducible: owner 0:0, mode 0644 or 0755, mtime
/// `mtime`. The file's bytes go between the header and the trailer (its padding and the end
/// blocks).
pub fn file_tar(
    path: &str,
    size: u64,
    executable: bool,
    mtime: u64,
) -> Result<(Vec<u8>, Vec<u8>), crate::Error> {
    let mut header = Vec::new();
    crate::tar::TarWriter::new(mtime).entry(
        path,
        &crate::tar::EntryKind::File { size, executable },
        &mut |b| header.extend_from_slice(b),
    )?;
    Ok((header, tar_trailer(size)))
}

/// What follows a tar's last file of `size` bytes: its padding to a block, then the two zero
/// end blocks.
pub fn tar_trailer(size: u64) -> Vec<u8> {
    let pad = (512 - (size % 512) as usize) % 512;
    vec![0u8; pad + 1024]
}

/// An artifact with files added, as modctl's `attach` and `lamina affix` onto an artifact do
/// it, but keeping the config whole: each new file (stored already, packed as
/// [`crate::target::Target::packing`] says for the format) replaces the layer that has the same
/// path, in its place, or goes last; only the config's diff_ids follow (ModelPack's
/// `modelfs.diffIds`, a Docker model's `rootfs.diff_ids`, a Kitfile entry's `digest` and
/// `diffId`, with a new entry for a new file in the list of its kind); nothing else in it
/// changes, and the manifest keeps its annotations and `artifactType`.
///
/// With [`Changes::drop`], some layers go first; with [`Changes::facts`], the config takes
/// another model's facts (as `lamina remix` puts other weights in).
pub fn attach(
    manifest: &crate::image::Manifest,
    config: &crate::image::Config,
    changes: &Changes<'_>,
    mtime: u64,
) -> Result<Attached, crate::Error> {
    let Changes {
        drop,
        add: new,
        facts,
    } = *changes;
    use crate::target::Target;
    let read = crate::artifact::read(manifest, config)?;
    let target = Target::of(read.format).ok_or_else(|| crate::Error::Usage {
        reason: format!(
            "adding files to a {} artifact is not done: `lamina convert` it to a current \
             format first",
            read.format.name()
        ),
    })?;
    if let Some(f) = new.iter().find(|f| !target.takes(f.packing)) {
        return Err(crate::Error::internal(format!(
            "{} is a {} layer, which a {} cannot hold",
            f.path,
            f.packing.name(),
            target.name()
        )));
    }
    let mut layers = manifest.layers()?;
    let mut c = config.doc().value().clone();
    let cv = Value::Object(c.clone());
    let mut ids = crate::artifact::stated_diff_ids(read.format, &cv);
    if ids.len() != layers.len() {
        return Err(crate::Error::InvalidDocument {
            what: format!("{} config", read.format.name()),
            reason: format!(
                "it states {} diff_ids for {} layers",
                ids.len(),
                layers.len()
            ),
        });
    }
    // a Kitfile entry per layer, to update in place
    let mut slots = crate::artifact::kitfile_slots(&cv, &layers);
    let mut paths: Vec<Option<String>> = read.parts.iter().map(|p| p.path.clone()).collect();
    if let Some(&i) = drop.iter().find(|&&i| i >= layers.len()) {
        return Err(crate::Error::internal(format!(
            "layer {i} to drop of {} layers",
            layers.len()
        )));
    }
    if !drop.is_empty() {
        let mut gone: Vec<usize> = drop.to_vec();
        gone.sort_unstable();
        gone.dedup();
        // Kitfile entries last to first, so that the indices of those before stay right
        let mut entries: Vec<(String, usize)> =
            gone.iter().filter_map(|&i| slots[i].clone()).collect();
        entries.sort_by_key(|e| std::cmp::Reverse(e.1));
        for (list, n) in entries {
            crate::target::kit_remove_entry(&mut c, &list, n);
        }
        for &i in gone.iter().rev() {
            layers.remove(i);
            ids.remove(i);
            paths.remove(i);
        }
        slots = crate::artifact::kitfile_slots(&Value::Object(c.clone()), &layers);
    }
    let mut replaced = Vec::new();
    for f in new {
        let at = paths
            .iter()
            .position(|q| q.as_deref() == Some(f.path.as_str()));
        let d = match target {
            Target::ModelPack => f.descriptor(mtime),
            Target::Docker => crate::target::docker_descriptor(f, mtime),
            Target::ModelKit => {
                // a replacement keeps its slot; a new weight is the model when there is none
                let slot = match at.and_then(|i| slots.get(i).cloned().flatten()) {
                    Some(s) => s.0,
                    None => crate::target::kit_slot(
                        f.kind,
                        !slots.iter().flatten().any(|s| s.0 == "model"),
                    ),
                };
                crate::target::kit_descriptor(f, &slot)
            }
        };
        match at {
            Some(i) => {
                replaced.push(f.path.clone());
                layers[i] = d;
                ids[i] = f.diff_id.clone();
                if let Some((list, n)) = slots.get(i).cloned().flatten() {
                    crate::target::kit_entry_digests(&mut c, &list, n, f);
                }
            }
            None if target == Target::ModelKit => {
                // in kit's layer order: after the last layer of its list or of one before it
                let s = crate::target::kit_add_entry(&mut c, f);
                let rank = crate::target::kit_rank(&s.0);
                let i = slots
                    .iter()
                    .rposition(|x| {
                        x.as_ref()
                            .is_some_and(|x| crate::target::kit_rank(&x.0) <= rank)
                    })
                    .map_or(0, |i| i + 1);
                layers.insert(i, d);
                ids.insert(i, f.diff_id.clone());
                slots.insert(i, Some(s));
                paths.insert(i, Some(f.path.clone()));
            }
            None => {
                layers.push(d);
                ids.push(f.diff_id.clone());
                slots.push(None);
                paths.push(Some(f.path.clone()));
            }
        }
    }
    match target {
        Target::ModelPack => {
            let fs = c
                .entry("modelfs")
                .or_insert_with(|| json!({"type": "layers"}));
            if let Some(o) = fs.as_object_mut() {
                o.remove("diff_ids");
                o.insert(
                    "diffIds".into(),
                    ids.iter().map(|d| Value::String(d.to_string())).collect(),
                );
            }
        }
        Target::Docker => {
            let fs = c
                .entry("rootfs")
                .or_insert_with(|| json!({"type": "rootfs"}));
            if let Some(o) = fs.as_object_mut() {
                o.insert(
                    "diff_ids".into(),
                    ids.iter().map(|d| Value::String(d.to_string())).collect(),
                );
            }
        }
        Target::ModelKit => {}
    }
    if let Some(model) = facts {
        crate::target::set_facts(target, &mut c, model);
        if target == Target::Docker {
            crate::target::docker_weights_size(&mut c, &layers);
        }
    }
    let config_bytes = serde_json::to_vec(&Value::Object(c)).unwrap_or_default();
    let mut m = manifest.doc().value().clone();
    m.insert(
        "layers".into(),
        layers.iter().map(Descriptor::to_value).collect(),
    );
    if let Some(cd) = m.get_mut("config").and_then(Value::as_object_mut) {
        cd.insert(
            "digest".into(),
            Value::String(Digest::of(&config_bytes).to_string()),
        );
        cd.insert("size".into(), Value::from(config_bytes.len()));
    }
    let manifest_bytes = serde_json::to_vec(&Value::Object(m)).unwrap_or_default();
    Ok(Attached {
        config: config_bytes,
        manifest: manifest_bytes,
        replaced,
        target,
    })
}

/// What [`attach`] does to an artifact.
#[derive(Clone, Copy, Debug, Default)]
pub struct Changes<'a> {
    /// The indices of the layers that go, with their diff_ids and Kitfile entries.
    pub drop: &'a [usize],
    /// The files added, or put in place of those with the same path.
    pub add: &'a [FileLayer],
    /// Facts that replace the config's, where they are known (name and family stay).
    pub facts: Option<&'a Model>,
}

/// What [`attach`] makes.
#[derive(Clone, Debug)]
pub struct Attached {
    /// The config's bytes.
    pub config: Vec<u8>,
    /// The manifest's bytes.
    pub manifest: Vec<u8>,
    /// The paths whose layers were replaced.
    pub replaced: Vec<String>,
    /// The artifact's format.
    pub target: crate::target::Target,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn kinds_follow_modctls_lists() {
        for (name, want) in [
            ("model-00001-of-00002.safetensors", Kind::Weight),
            ("config.json", Kind::Config),
            ("tokenizer.json", Kind::Config),
            ("tokenizer.model", Kind::Config),
            ("vocab.txt", Kind::Config),
            ("generation_config.json", Kind::Config),
            ("README.md", Kind::Doc),
            ("LICENSE", Kind::Doc),
            ("run.py", Kind::Code),
            ("requirements.txt", Kind::Code),
            ("model.gguf", Kind::Weight),
            ("tensor0_1", Kind::Weight),
            ("model.onnx_data", Kind::Weight),
            ("package.json", Kind::Config),
        ] {
            assert_eq!(classify(name, 10), (want, false), "{name}");
        }
        assert_eq!(classify("blob", 200_000_000), (Kind::Weight, true));
        assert_eq!(classify("blob", 20), (Kind::Code, true));
        assert!(skipped(".gitattributes") && skipped("x.pyc") && skipped("Modelfile"));
        assert!(!skipped("model.safetensors"));
        assert!(glob(b"tensor[0-9]*_[0-9]*", b"tensor12_3"));
        assert!(!glob(b"tensor[0-9]*_[0-9]*", b"tensorx_3"));
    }

    fn st(tensors: &[(&str, &str, &[u64])]) -> Vec<u8> {
        let mut m = Map::new();
        for (n, d, s) in tensors {
            m.insert(
                (*n).into(),
                json!({"dtype": d, "shape": s, "data_offsets": [0, 0]}),
            );
        }
        m.insert("__metadata__".into(), json!({"format": "pt"}));
        let h = serde_json::to_vec(&m).unwrap();
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&h);
        out
    }

    #[test]
    fn safetensors_headers_give_params_and_precision() {
        let h = st(&[("a", "BF16", &[4096, 4096]), ("b", "F32", &[4096])]);
        let f = facts("model.safetensors", &h).unwrap();
        assert_eq!(f.params, Some(4096 * 4096 + 4096));
        assert_eq!(f.precisions[0].0, "bfloat16");
        assert_eq!(f.format.as_deref(), Some("safetensors"));
        // cut short: not enough to say
        assert_eq!(facts("model.safetensors", &h[..h.len() - 3]), None);
        assert_eq!(facts("model.safetensors", b"junk"), None);
        assert_eq!(f.tensors, 2);
        assert_eq!(f.header_len, h.len() as u64);
        assert_eq!(f.metadata, [("format".to_string(), "pt".to_string())]);
        let mut m = Model::default();
        m.fill_from(&[f]);
        assert_eq!(m.param_size.as_deref(), Some("16.8M"));
        assert_eq!(m.precision.as_deref(), Some("bfloat16,float32"));
    }

    #[test]
    fn a_gguf_header_gives_its_tensor_count_and_metadata() {
        let h = gguf_bytes();
        let f = facts("m.gguf", &h).unwrap();
        assert_eq!(f.tensors, 2);
        assert_eq!(f.header_len, h.len() as u64);
        assert_eq!(
            f.metadata,
            [
                ("general.architecture".to_string(), "llama".to_string()),
                (
                    "tokenizer.ggml.tokens".to_string(),
                    "[2 × string]".to_string()
                ),
                ("general.file_type".to_string(), "15".to_string()),
            ]
        );
        // a long value is cut
        assert_eq!(short_value(&"é".repeat(200)).chars().count(), 101);
    }

    fn gguf_bytes() -> Vec<u8> {
        let s = |v: &mut Vec<u8>, x: &str| {
            v.extend_from_slice(&(x.len() as u64).to_le_bytes());
            v.extend_from_slice(x.as_bytes());
        };
        let mut v = b"GGUF".to_vec();
        v.extend_from_slice(&3u32.to_le_bytes());
        v.extend_from_slice(&2u64.to_le_bytes()); // tensors
        v.extend_from_slice(&3u64.to_le_bytes()); // kvs
        s(&mut v, "general.architecture");
        v.extend_from_slice(&8u32.to_le_bytes());
        s(&mut v, "llama");
        s(&mut v, "tokenizer.ggml.tokens");
        v.extend_from_slice(&9u32.to_le_bytes());
        v.extend_from_slice(&8u32.to_le_bytes());
        v.extend_from_slice(&2u64.to_le_bytes());
        s(&mut v, "<s>");
        s(&mut v, "</s>");
        s(&mut v, "general.file_type");
        v.extend_from_slice(&4u32.to_le_bytes());
        v.extend_from_slice(&15u32.to_le_bytes());
        for (name, dims) in [("tok", &[32000u64, 4096][..]), ("norm", &[4096][..])] {
            s(&mut v, name);
            v.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                v.extend_from_slice(&d.to_le_bytes());
            }
            v.extend_from_slice(&12u32.to_le_bytes());
            v.extend_from_slice(&0u64.to_le_bytes());
        }
        v
    }

    #[test]
    fn gguf_headers_give_architecture_quantization_and_params() {
        let g = gguf_bytes();
        let f = facts("anything", &g).unwrap();
        assert_eq!(f.architecture.as_deref(), Some("llama"));
        assert_eq!(f.quantization.as_deref(), Some("Q4_K_M"));
        assert_eq!(f.params, Some(32000 * 4096 + 4096));
        for cut in [5, 20, g.len() - 1] {
            assert_eq!(facts("x.gguf", &g[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn param_sizes_read_as_people_write_them() {
        for (n, want) in [
            (8_030_000_000, "8.03B"),
            (124_439_808, "124M"),
            (5_000, "5K"),
            (1_500_000_000_000, "1.5T"),
            (900, "900"),
            (70_000_000_000, "70B"),
            (16_781_312, "16.8M"),
        ] {
            assert_eq!(param_size(n), want);
        }
    }

    #[test]
    fn configs_hold_only_what_the_schema_allows() {
        let m = Model {
            name: Some("m".into()),
            format: Some("safetensors".into()),
            param_size: Some("8B".into()),
            family: Some(String::new()),
            ..Model::default()
        };
        let c: Value = serde_json::from_slice(&modelpack_config(&m, &[Digest::of(b"x")])).unwrap();
        assert_eq!(
            c.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["descriptor", "config", "modelfs"]
        );
        assert_eq!(
            c["descriptor"],
            json!({"name": "m"}),
            "empty values left out"
        );
        assert_eq!(c["modelfs"]["diffIds"][0], Digest::of(b"x").to_string());
        let l = FileLayer {
            path: "unet/model.safetensors".into(),
            kind: Kind::Weight,
            guessed: false,
            packing: Packing::Raw,
            digest: Digest::of(b"x"),
            size: 1,
            diff_id: Digest::of(b"x"),
            file_size: 1,
            executable: false,
            carried: None,
        };
        let d = l.descriptor(0);
        assert_eq!(d.media_type, "application/vnd.cncf.model.weight.v1.raw");
        let meta: Value = serde_json::from_str(
            &d.annotations
                .iter()
                .find(|(k, _)| k == ANN_FILE_METADATA)
                .unwrap()
                .1,
        )
        .unwrap();
        assert_eq!(meta["name"], "model.safetensors");
        assert_eq!(meta["mode"], 420);
        let man: Value = serde_json::from_slice(&modelpack_manifest(b"{}", &[d])).unwrap();
        assert_eq!(man["artifactType"], MODELPACK_MANIFEST);
        assert_eq!(
            man["layers"][0]["annotations"][ANN_FILEPATH],
            "unet/model.safetensors"
        );
    }

    #[test]
    fn attach_replaces_by_path_keeps_the_rest_and_the_config() {
        let file = |p: &str, b: &[u8]| FileLayer {
            path: p.into(),
            kind: Kind::Doc,
            guessed: false,
            packing: Packing::Raw,
            digest: Digest::of(b),
            size: b.len() as u64,
            diff_id: Digest::of(b),
            file_size: b.len() as u64,
            executable: false,
            carried: None,
        };
        let layer = |p: &str, b: &[u8]| file(p, b).descriptor(0);
        let (a, b) = (layer("README.md", b"a"), layer("w.bin", b"b"));
        let model = Model {
            name: Some("m".into()),
            family: Some("llama".into()),
            ..Model::default()
        };
        let cfg = modelpack_config(&model, &[a.digest.clone(), b.digest.clone()]);
        let man = modelpack_manifest(&cfg, &[a.clone(), b.clone()]);
        let m = crate::image::Manifest::parse(man, crate::media::OCI_MANIFEST).unwrap();
        let c = crate::image::Config::parse(cfg).unwrap();
        let readme2 = layer("README.md", b"a2");
        let extra = layer("extra.txt", b"x");
        let Attached {
            config: cfg2,
            manifest: man2,
            replaced,
            ..
        } = attach(
            &m,
            &c,
            &Changes {
                add: &[file("README.md", b"a2"), file("extra.txt", b"x")],
                ..Changes::default()
            },
            0,
        )
        .unwrap();
        assert_eq!(replaced, ["README.md"]);
        let c2: Value = serde_json::from_slice(&cfg2).unwrap();
        assert_eq!(
            c2["descriptor"]["family"], "llama",
            "the rest of the config is kept"
        );
        let ids: Vec<&str> = c2["modelfs"]["diffIds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            [
                readme2.digest.to_string(),
                b.digest.to_string(),
                extra.digest.to_string()
            ]
        );
        let m2: Value = serde_json::from_slice(&man2).unwrap();
        assert_eq!(m2["artifactType"], MODELPACK_MANIFEST);
        assert_eq!(m2["config"]["digest"], Digest::of(&cfg2).to_string());
        assert_eq!(m2["layers"].as_array().unwrap().len(), 3);
        assert_eq!(m2["layers"][0]["digest"], readme2.digest.to_string());
    }
    /// A GGUF file whose vocabulary of `tokens` entries makes its header long, then `body`
    /// bytes of tensor data.
    fn long_gguf(tokens: u64, body: usize) -> Vec<u8> {
        let s = |v: &mut Vec<u8>, x: &str| {
            v.extend_from_slice(&(x.len() as u64).to_le_bytes());
            v.extend_from_slice(x.as_bytes());
        };
        let mut v = b"GGUF".to_vec();
        v.extend_from_slice(&3u32.to_le_bytes());
        v.extend_from_slice(&1u64.to_le_bytes());
        v.extend_from_slice(&2u64.to_le_bytes());
        s(&mut v, "tokenizer.ggml.tokens");
        v.extend_from_slice(&9u32.to_le_bytes());
        v.extend_from_slice(&8u32.to_le_bytes());
        v.extend_from_slice(&tokens.to_le_bytes());
        for t in 0..tokens {
            s(&mut v, &format!("token-{t:08}"));
        }
        s(&mut v, "general.architecture");
        v.extend_from_slice(&8u32.to_le_bytes());
        s(&mut v, "qwen2");
        s(&mut v, "w");
        v.extend_from_slice(&1u32.to_le_bytes());
        v.extend_from_slice(&77u64.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&0u64.to_le_bytes());
        v.resize(v.len() + body, 0xab);
        v
    }

    /// The facts of `file` read through a [`HeadReader`] `chunk` bytes at a time, and the most
    /// it held.
    fn streamed(path: &str, file: &[u8], chunk: usize) -> (Option<Facts>, usize) {
        let mut h = HeadReader::new(path);
        let mut most = 0;
        for c in file.chunks(chunk) {
            h.write(c);
            most = most.max(h.head.capacity());
        }
        (h.finish(), most)
    }

    /// The facts of `file` read as [`HeadReader::next_read`] asks, and how much was read.
    fn pulled(path: &str, file: &[u8]) -> (Option<Facts>, usize) {
        let mut h = HeadReader::new(path);
        let mut read = 0;
        while let Some(r) = h.next_read() {
            assert_eq!(r.start as usize, read, "{path}: reads follow on");
            let end = (r.end as usize).min(file.len());
            h.write(&file[read..end]);
            read = end;
            if end < r.end as usize {
                break; // the file ended
            }
        }
        (h.finish(), read)
    }

    #[test]
    fn a_head_read_as_it_streams_gives_the_facts_of_the_header_in_every_chunk_size() {
        let small = {
            let mut f = st(&[("a", "BF16", &[64, 64])]);
            f.resize(f.len() + (3 << 20), 1);
            f
        };
        // a safetensors header longer than the first read: its own length is read next
        let long = {
            let names: Vec<String> = (0..12000).map(|i| format!("layers.{i}.weight")).collect();
            let t: Vec<(&str, &str, &[u64])> = names
                .iter()
                .map(|n| (n.as_str(), "F16", &[8u64, 8][..]))
                .collect();
            let mut f = st(&t);
            assert!(f.len() as u64 > HEAD_FIRST, "{}", f.len());
            f.resize(f.len() + (1 << 20), 2);
            f
        };
        // a GGUF header past the first read: read on 8x at a time
        let gguf = long_gguf(40_000, 1 << 20);
        let cases: [(&str, &[u8]); 6] = [
            ("model.safetensors", &small),
            ("unet/x.safetensors", &long),
            ("m.gguf", &gguf),
            ("m.gguf", &gguf_bytes()),
            ("cut.safetensors", &small[..20]),
            ("notes.bin", &[7u8; 300_000]),
        ];
        for (path, file) in cases {
            // what reading the whole file at once says
            let whole = facts(path, file);
            for chunk in [1usize, 7, 4096, file.len().max(1)] {
                if chunk == 1 && file.len() > 2 << 20 {
                    continue; // a byte at a time through megabytes: slow, and 7 covers it
                }
                let (got, most) = streamed(path, file, chunk);
                assert_eq!(got, whole, "{path} in {chunk}-byte chunks");
                assert!(most as u64 <= HEAD_MAX, "{path}: held {most}");
            }
            // a driver that reads what next_read asks (lamina pack, the page) says the same,
            // and reads no more of the file than the head
            let (got, read) = pulled(path, file);
            assert_eq!(got, whole, "{path} read as next_read asks");
            assert!(read as u64 <= HEAD_MAX, "{path}: read {read}");
        }
        assert_eq!(
            facts("m.gguf", &gguf).unwrap().architecture.as_deref(),
            Some("qwen2")
        );
        assert_eq!(facts("m.gguf", &gguf).unwrap().params, Some(77));
        assert_eq!(
            facts("unet/x.safetensors", &long).unwrap().params,
            Some(12000 * 64)
        );
        // only the header is held: a safetensors head is its header's length, not the file's
        let (_, most) = streamed("unet/x.safetensors", &long, 4096);
        assert!((most as u64) < long.len() as u64 - (1 << 19), "held {most}");
        let (_, most) = streamed("notes.bin", &[7u8; 300_000], 4096);
        assert!(
            most as u64 <= HEAD_FIRST,
            "held {most} of a file with no header"
        );
        // once decided, nothing more is wanted
        let mut h = HeadReader::new("model.safetensors");
        h.write(&small[..1 << 20]);
        assert!(!h.wants_more());
    }

    #[test]
    fn a_head_past_the_most_read_gives_no_facts_as_lamina_pack_reads_none() {
        // a safetensors header that says it is longer than HEAD_MAX
        let mut f = (HEAD_MAX).to_le_bytes().to_vec();
        f.resize(HEAD_FIRST as usize + 10, b' ');
        let (got, most) = streamed("big.safetensors", &f, 4096);
        assert_eq!(got, None);
        assert!(most as u64 <= HEAD_FIRST);
    }

    #[test]
    fn a_config_json_gives_the_family_and_dtype_only_where_the_headers_said_nothing() {
        let cfg =
            br#"{"model_type":"qwen2","torch_dtype":"bfloat16","transformers_version":"4.4"}"#;
        let mut m = Model::default();
        m.fill_from_config_json(cfg);
        assert_eq!(m.family.as_deref(), Some("qwen2"));
        assert_eq!(m.precision.as_deref(), Some("bfloat16"));
        assert_eq!(m.architecture.as_deref(), Some("transformer"));
        let mut m = Model {
            precision: Some("float16".into()),
            architecture: Some("llama".into()),
            ..Model::default()
        };
        m.fill_from_config_json(cfg);
        assert_eq!(m.precision.as_deref(), Some("float16"));
        assert_eq!(m.architecture.as_deref(), Some("llama"));
        let mut m = Model::default();
        m.fill_from_config_json(b"not json");
        assert_eq!(m, Model::default());
    }
}
