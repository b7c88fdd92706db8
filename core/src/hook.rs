//! Signed webhooks (the edge Worker's `/hooks/*`): HMAC-SHA256 signatures with a timestamp, and
//! the jobs a hook body describes.
//!
//! A caller signs `"{timestamp}.{body}"` with the shared secret and sends
//!
//! ```text
//! X-Lamina-Timestamp: 1795000000
//! X-Lamina-Signature: sha256=<hex of HMAC-SHA256(secret, "1795000000." + body)>
//! ```
//!
//! [`verify`] accepts a request only when the signature matches (compared in constant time) and
//! the timestamp is within [`TOLERANCE_SECS`] of the receiver's clock, which the driver passes in
//! (the core reads none). A signed request seen before is a replay: the receiver remembers each
//! signature for longer than the tolerance ([`job_id`] names the job after it), so the same bytes
//! are refused again inside the window and by their timestamp after it.

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::reference::Reference;

/// How far a timestamp may be from the receiver's clock, either way.
pub const TOLERANCE_SECS: u64 = 300;
/// Largest hook body (the job is kept in Durable Object storage, 128 KiB a value).
pub const MAX_BODY: usize = 96 * 1024;
/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-lamina-signature";
/// The timestamp header.
pub const TIMESTAMP_HEADER: &str = "x-lamina-timestamp";

const BLOCK: usize = 64;

/// HMAC-SHA256 (RFC 2104) of `msg` under `key`.
pub fn hmac_sha256(key: &[u8], msg: &[&[u8]]) -> [u8; 32] {
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    for m in msg {
        inner.update(m);
    }
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Equal in time that depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The `X-Lamina-Signature` value for `body` sent at `timestamp` (what a caller computes).
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    format!(
        "sha256={}",
        hex(&hmac_sha256(secret, &[ts.as_bytes(), b".", body]))
    )
}

/// Why a hook was refused. The messages name what was wrong and never echo the secret or the
/// expected signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No `X-Lamina-Signature` header.
    MissingSignature,
    /// No `X-Lamina-Timestamp` header, or not a number.
    BadTimestamp,
    /// The signature is not `sha256=<64 hex digits>`.
    MalformedSignature,
    /// The signature does not match the body and timestamp.
    WrongSignature,
    /// The timestamp is too far from now (seconds off).
    Stale(u64),
}

impl core::fmt::Display for Refusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Refusal::MissingSignature => write!(
                f,
                "missing X-Lamina-Signature (sha256=<hex HMAC-SHA256 of \"<timestamp>.<body>\">)"
            ),
            Refusal::BadTimestamp => {
                write!(f, "missing or malformed X-Lamina-Timestamp (unix seconds)")
            }
            Refusal::MalformedSignature => {
                write!(f, "X-Lamina-Signature is not sha256=<64 hex digits>")
            }
            Refusal::WrongSignature => write!(
                f,
                "X-Lamina-Signature does not match the body and timestamp (wrong secret, or the \
                 body was changed)"
            ),
            Refusal::Stale(off) => write!(
                f,
                "X-Lamina-Timestamp is {off}s from this server's clock (at most {TOLERANCE_SECS}s \
                 allowed): a replay or a wrong clock"
            ),
        }
    }
}

/// Checks a hook: `signature` and `timestamp` as sent (header values), `now` the receiver's
/// clock in unix seconds.
pub fn verify(
    secret: &[u8],
    signature: Option<&str>,
    timestamp: Option<&str>,
    body: &[u8],
    now: u64,
) -> Result<(), Refusal> {
    let sig = signature.ok_or(Refusal::MissingSignature)?.trim();
    let ts_s = timestamp.ok_or(Refusal::BadTimestamp)?.trim();
    let ts: u64 = ts_s.parse().map_err(|_| Refusal::BadTimestamp)?;
    let given = sig
        .strip_prefix("sha256=")
        .and_then(unhex)
        .filter(|b| b.len() == 32)
        .ok_or(Refusal::MalformedSignature)?;
    let want = hmac_sha256(secret, &[ts_s.as_bytes(), b".", body]);
    // the signature first: an unsigned caller learns nothing about the clock
    if !constant_time_eq(&given, &want) {
        return Err(Refusal::WrongSignature);
    }
    let off = now.abs_diff(ts);
    if off > TOLERANCE_SECS {
        return Err(Refusal::Stale(off));
    }
    Ok(())
}

/// The job a signed request starts: named after its signature, so the same request sent again
/// names the same job (and is refused as a replay).
pub fn job_id(signature: &str) -> String {
    hex(&Sha256::digest(signature.trim().as_bytes())[..16])
}

/// True for a string [`job_id`] could have made.
pub fn is_job_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Registry credentials per host from a JSON object (the edge Worker's `REGISTRY_AUTH` secret):
/// `{"host[:port]": {"username": .., "password": ..} | {"token": ..} | {"cog_token": ..}}`.
/// Errors name the host or the position, never a value.
pub fn registry_auth(raw: &str) -> Result<Vec<(String, crate::auth::Credentials)>, String> {
    use crate::auth::{Credentials, Secret};
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Entry {
        username: Option<String>,
        password: Option<String>,
        token: Option<String>,
        cog_token: Option<String>,
    }
    if raw.trim().is_empty() {
        return Ok(Vec::new());
    }
    let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(raw).map_err(|e| {
        // only the position: serde's message may quote a value, and the values are secrets
        format!(
            "REGISTRY_AUTH is not a JSON object of hosts (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    let mut out = Vec::new();
    for (host, e) in v {
        let shape = || {
            format!(
                "REGISTRY_AUTH[{host}]: give {{username, password}}, {{token}} or {{cog_token}}, \
                 as strings"
            )
        };
        let e: Entry = serde_json::from_value(e).map_err(|_| shape())?;
        let c = match (e.username, e.password, e.token, e.cog_token) {
            (Some(username), Some(p), None, None) => Credentials::Basic {
                username,
                password: Secret::new(p),
            },
            (None, None, Some(t), None) => Credentials::Bearer(Secret::new(t)),
            (None, None, None, Some(t)) => Credentials::CogToken(Secret::new(t)),
            _ => return Err(shape()),
        };
        out.push((host.to_ascii_lowercase(), c));
    }
    Ok(out)
}

/// Where an affix hook's layer comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fetched {
    /// An `http(s)` URL.
    pub url: String,
}

/// One file of an affix hook's layer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Path in the layer, under the job's `path`.
    pub name: String,
    /// Fetched from here (the answer must carry `Content-Length`: the tar header needs the size).
    #[serde(default)]
    pub url: Option<String>,
    /// Or these bytes, base64, in the hook body itself (small files: model cards, configs).
    #[serde(default)]
    pub data: Option<String>,
}

/// `POST /hooks/affix`: a layer on top of `base`, pushed as `dest`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AffixJob {
    /// Base image.
    pub base: String,
    /// Destination.
    pub dest: String,
    /// A tar to add as the layer (a `.tar.gz` or `.tar.zst` is passed through as is).
    #[serde(default)]
    pub tar: Option<Fetched>,
    /// Or files, made into a tar under `path`.
    #[serde(default)]
    pub files: Vec<FileSpec>,
    /// Where the files go [default `/src/weights`].
    #[serde(default)]
    pub path: Option<String>,
    /// `none` (default: weights do not compress), `gzip` or `zstd`, for a layer lamina builds.
    #[serde(default)]
    pub compression: Option<String>,
}

/// `POST /hooks/remix`: the weights layers of `weights` on top of `base`, pushed as `dest`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemixJob {
    /// The image to add to.
    pub base: String,
    /// The image whose weights layers are taken.
    pub weights: String,
    /// Destination.
    pub dest: String,
    /// These layers of `weights` (indexes) instead of its weights layers.
    #[serde(default)]
    pub layers: Vec<usize>,
}

/// `POST /hooks/zstd`: every layer of `image` recompressed to zstd, pushed as `dest`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZstdJob {
    /// Source image.
    pub image: String,
    /// Destination.
    pub dest: String,
    /// Keep a layer uncompressed unless zstd makes it smaller than this fraction [0.9].
    #[serde(default)]
    pub min_ratio: Option<f64>,
}

/// One file of a pack hook's artifact.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackFileSpec {
    /// Its path in the artifact (relative; `unet/model.safetensors`).
    pub path: String,
    /// Fetched from here (a ModelKit's tars need the answer's `Content-Length`).
    #[serde(default)]
    pub url: Option<String>,
    /// Or these bytes, base64, in the hook body itself (small files).
    #[serde(default)]
    pub data: Option<String>,
    /// Mode 0755 instead of 0644 in the file's metadata (and its tar header).
    #[serde(default)]
    pub executable: bool,
}

/// `POST /hooks/pack`: files made a model artifact at `dest`, as `lamina pack --format F`
/// makes it of the same files with `SOURCE_DATE_EPOCH=mtime`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackJob {
    /// Destination.
    pub dest: String,
    /// `modelpack` (default), `modelkit` or `docker`.
    #[serde(default)]
    pub format: Option<String>,
    /// The model's name in the config (`lamina pack --name`; none by default).
    #[serde(default)]
    pub name: Option<String>,
    /// Unix seconds every file's metadata (and a Docker model's `created`) says: `lamina
    /// pack`'s `SOURCE_DATE_EPOCH` [0].
    #[serde(default)]
    pub mtime: Option<u64>,
    /// Each file in a tar layer (ModelPack only: `lamina pack --tar`).
    #[serde(default)]
    pub tar: bool,
    /// The files.
    pub files: Vec<PackFileSpec>,
}

/// Where a file to pack comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackSource {
    /// Fetched from this `http(s)` URL.
    Url(String),
    /// These bytes.
    Data(Vec<u8>),
}

/// A file to pack, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackFile {
    /// Its path in the artifact, checked and normalised ([`crate::artifact::safe_path`]).
    pub path: String,
    /// Where its bytes come from.
    pub source: PackSource,
    /// Mode 0755.
    pub executable: bool,
}

/// What a pack hook packs: the format, the files in path order (as `lamina pack` orders
/// them), and the paths left out as `lamina pack` (and modctl) leaves them out: hidden files,
/// `__pycache__`, `*.pyc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackPlan {
    /// The format.
    pub target: crate::target::Target,
    /// How each file goes into its layer ([`crate::target::Target::packing`]).
    pub packing: crate::artifact::Packing,
    /// The files, sorted by path.
    pub files: Vec<PackFile>,
    /// The paths left out.
    pub left_out: Vec<String>,
    /// The files' metadata time.
    pub mtime: u64,
}

impl PackJob {
    /// The format, the files checked and in order: a path must be relative and stay inside
    /// the artifact, each file named once, each with a URL or data.
    pub fn plan(&self) -> Result<PackPlan, crate::Error> {
        use crate::target::Target;
        let target = match self.format.as_deref() {
            None => Target::ModelPack,
            Some("modelcar") => {
                return Err(bad(
                    "format \"modelcar\": the pack hook makes modelpack, modelkit or \
                     docker; for a modelcar, pack a ModelPack and /hooks/convert it (to: \
                     \"modelcar\", base: IMAGE)"
                        .into(),
                ))
            }
            Some(f) => Target::parse(f).ok_or_else(|| {
                bad(format!(
                    "format {f:?}: modelpack (the default), modelkit or docker"
                ))
            })?,
        };
        if self.tar && target != Target::ModelPack {
            return Err(bad(format!(
                "tar is for modelpack: a {} always holds its files {}",
                target.name(),
                if target == Target::ModelKit {
                    "in tars"
                } else {
                    "raw"
                }
            )));
        }
        if self.files.is_empty() {
            return Err(bad(
                "pack: nothing to pack (give files: [{path, url|data}])".into(),
            ));
        }
        let mut files: Vec<PackFile> = Vec::new();
        let mut left_out = Vec::new();
        for f in &self.files {
            let path = crate::artifact::safe_path(&f.path)
                .map_err(|why| bad(format!("files: {:?}: {why}", f.path)))?;
            let source = match (&f.url, &f.data) {
                (Some(u), None) => {
                    check_url(u, &format!("files: {path}"))?;
                    PackSource::Url(u.clone())
                }
                (None, Some(d)) => {
                    use base64::Engine as _;
                    PackSource::Data(
                        base64::engine::general_purpose::STANDARD
                            .decode(d)
                            .map_err(|e| bad(format!("files: {path}: data is not base64: {e}")))?,
                    )
                }
                _ => {
                    return Err(bad(format!(
                        "files: {path}: give url or data (base64), one of them"
                    )))
                }
            };
            if path.split('/').any(crate::pack::skipped) {
                left_out.push(path);
                continue;
            }
            files.push(PackFile {
                path,
                source,
                executable: f.executable,
            });
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        if let Some(w) = files.windows(2).find(|w| w[0].path == w[1].path) {
            return Err(bad(format!("files: {:?} is named twice", w[0].path)));
        }
        // a file and a folder of one name cannot both be in the artifact
        let paths: std::collections::BTreeSet<&str> =
            files.iter().map(|f| f.path.as_str()).collect();
        for f in &files {
            let mut dir = f.path.as_str();
            while let Some((up, _)) = dir.rsplit_once('/') {
                if paths.contains(up) {
                    return Err(bad(format!(
                        "files: {up:?} is a file and a folder (of {:?})",
                        f.path
                    )));
                }
                dir = up;
            }
        }
        if files.is_empty() {
            return Err(bad(
                "pack: nothing to pack: every file was left out (hidden or caches, as lamina \
                 pack and modctl leave them out)"
                    .into(),
            ));
        }
        Ok(PackPlan {
            target,
            packing: target.packing(self.tar),
            files,
            left_out,
            mtime: self.mtime.unwrap_or(0),
        })
    }
}

/// `POST /hooks/convert`: the model `src` in another format at `dest`, as `lamina convert SRC
/// DEST --to T` makes it with `SOURCE_DATE_EPOCH=mtime`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvertJob {
    /// The model to convert.
    pub src: String,
    /// Destination.
    pub dest: String,
    /// `modelpack`, `modelkit`, `docker` or `modelcar`.
    pub to: String,
    /// The image a modelcar's files go on (with `to: modelcar` only).
    #[serde(default)]
    pub base: Option<String>,
    /// The model's name in the new config [the source's, or its repository's last part].
    #[serde(default)]
    pub name: Option<String>,
    /// Unix seconds for the files' metadata and a Docker model's `created` [0], and a
    /// modelcar's history [the Worker's clock]: `lamina convert`'s `SOURCE_DATE_EPOCH`.
    #[serde(default)]
    pub mtime: Option<u64>,
}

impl ConvertJob {
    /// The format to make, checked with its base.
    pub fn target(&self) -> Result<crate::convert::To, crate::Error> {
        use crate::convert::To;
        let to = To::parse(&self.to).ok_or_else(|| {
            bad(format!(
                "to {:?}: modelpack, modelkit, docker or modelcar",
                self.to
            ))
        })?;
        match (to, &self.base) {
            (To::Modelcar, None) => Err(bad(
                "to \"modelcar\" needs base: the image the model files go on (busybox, a \
                 serving runtime)"
                    .into(),
            )),
            (To::Artifact(_), Some(_)) => Err(bad("base goes with to \"modelcar\"".into())),
            _ => Ok(to),
        }
    }
}

/// A job, as a hook's path and body describe it.
#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    /// `/hooks/affix`.
    Affix(AffixJob),
    /// `/hooks/remix`.
    Remix(RemixJob),
    /// `/hooks/zstd`.
    Zstd(ZstdJob),
    /// `/hooks/pack`.
    Pack(PackJob),
    /// `/hooks/convert`.
    Convert(ConvertJob),
}

/// Every field a job names as an image reference, with its role (`base`, `dest`, ...).
fn refs(job: &Job) -> Vec<(&'static str, &str)> {
    match job {
        Job::Affix(j) => vec![("base", &j.base), ("dest", &j.dest)],
        Job::Remix(j) => vec![
            ("base", &j.base),
            ("weights", &j.weights),
            ("dest", &j.dest),
        ],
        Job::Zstd(j) => vec![("image", &j.image), ("dest", &j.dest)],
        Job::Pack(j) => vec![("dest", &j.dest)],
        Job::Convert(j) => {
            let mut v = vec![("src", j.src.as_str()), ("dest", j.dest.as_str())];
            if let Some(b) = &j.base {
                v.push(("base", b));
            }
            v
        }
    }
}

fn bad(reason: String) -> crate::Error {
    crate::Error::Usage { reason }
}

fn check_url(u: &str, what: &str) -> Result<(), crate::Error> {
    if u.starts_with("https://") || u.starts_with("http://") {
        Ok(())
    } else {
        Err(bad(format!("{what}: {u:?} is not an http(s) URL")))
    }
}

impl Job {
    /// Parses and checks the body of `/hooks/<kind>`; references are parsed with
    /// `default_registry` for short names.
    pub fn parse(kind: &str, body: &[u8], default_registry: &str) -> Result<Job, crate::Error> {
        let json = |e: serde_json::Error| bad(format!("{kind} hook body: {e}"));
        let job = match kind {
            "affix" => Job::Affix(serde_json::from_slice(body).map_err(json)?),
            "remix" => Job::Remix(serde_json::from_slice(body).map_err(json)?),
            "zstd" => Job::Zstd(serde_json::from_slice(body).map_err(json)?),
            "pack" => Job::Pack(serde_json::from_slice(body).map_err(json)?),
            "convert" => Job::Convert(serde_json::from_slice(body).map_err(json)?),
            other => {
                return Err(bad(format!(
                    "no hook {other:?}: the hooks are affix, remix, zstd, pack and convert"
                )))
            }
        };
        for (role, r) in refs(&job) {
            Reference::parse(r, default_registry).map_err(|e| bad(format!("{role}: {e}")))?;
        }
        match &job {
            Job::Affix(j) => {
                match (&j.tar, j.files.is_empty()) {
                    (Some(_), false) => {
                        return Err(bad("affix: give tar or files, not both".into()))
                    }
                    (None, true) => {
                        return Err(bad(
                            "affix: nothing to add (give tar: {url} or files: [{name, url|data}])"
                                .into(),
                        ))
                    }
                    (Some(t), true) => check_url(&t.url, "tar.url")?,
                    (None, false) => {}
                }
                for f in &j.files {
                    crate::tar::archive_path(&f.name)
                        .map_err(|e| bad(format!("files: {:?}: {e}", f.name)))?;
                    match (&f.url, &f.data) {
                        (Some(u), None) => check_url(u, &format!("files: {}", f.name))?,
                        (None, Some(d)) => {
                            use base64::Engine as _;
                            base64::engine::general_purpose::STANDARD
                                .decode(d)
                                .map_err(|e| {
                                    bad(format!("files: {}: data is not base64: {e}", f.name))
                                })?;
                        }
                        _ => {
                            return Err(bad(format!(
                                "files: {}: give url or data (base64), one of them",
                                f.name
                            )))
                        }
                    }
                }
                if let Some(c) = &j.compression {
                    if !matches!(c.as_str(), "none" | "gzip" | "zstd") {
                        return Err(bad(format!("compression {c:?}: none, gzip or zstd")));
                    }
                }
                if let Some(p) = &j.path {
                    crate::tar::archive_path(p).map_err(|e| bad(format!("path: {e}")))?;
                }
            }
            Job::Remix(_) => {}
            Job::Pack(j) => {
                j.plan()?;
            }
            Job::Convert(j) => {
                j.target()?;
            }
            Job::Zstd(j) => {
                if let Some(r) = j.min_ratio {
                    if !(r > 0.0 && r <= 1.0) {
                        return Err(bad(format!("min_ratio {r}: between 0 (exclusive) and 1")));
                    }
                }
            }
        }
        Ok(job)
    }

    /// The hook's name.
    pub fn kind(&self) -> &'static str {
        match self {
            Job::Affix(_) => "affix",
            Job::Remix(_) => "remix",
            Job::Zstd(_) => "zstd",
            Job::Pack(_) => "pack",
            Job::Convert(_) => "convert",
        }
    }

    /// The registries (`host[:port]`) the job talks to.
    pub fn registries(&self, default_registry: &str) -> Vec<String> {
        let mut out: Vec<String> = refs(self)
            .into_iter()
            .filter_map(|(_, r)| Reference::parse(r, default_registry).ok())
            .map(|r| r.registry)
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex_ok(s: &str) -> Vec<u8> {
        unhex(s).expect("hex")
    }

    #[test]
    fn hmac_matches_rfc4231() {
        // test case 2
        let m = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex(&m),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // test case 6: a key longer than a block is hashed first
        let key = [0xaau8; 131];
        let m = hmac_sha256(
            &key,
            &[b"Test Using Larger Than Block-Size Key - Hash Key First"],
        );
        assert_eq!(
            hex(&m),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        assert_eq!(unhex_ok("00ff"), vec![0, 255]);
        assert!(unhex("0g").is_none() && unhex("abc").is_none());
    }

    #[test]
    fn verify_accepts_only_the_right_signature_in_time() {
        let body = br#"{"base":"a","dest":"b"}"#;
        let sig = sign(b"s3cret", 1000, body);
        assert_eq!(
            verify(b"s3cret", Some(&sig), Some("1000"), body, 1100),
            Ok(())
        );
        assert_eq!(
            verify(b"s3cret", Some(&sig), Some("1000"), body, 900),
            Ok(())
        );
        assert_eq!(
            verify(b"other", Some(&sig), Some("1000"), body, 1000),
            Err(Refusal::WrongSignature)
        );
        assert_eq!(
            verify(b"s3cret", Some(&sig), Some("1000"), b"{}", 1000),
            Err(Refusal::WrongSignature)
        );
        // the timestamp is signed: moving it breaks the signature
        assert_eq!(
            verify(b"s3cret", Some(&sig), Some("1001"), body, 1000),
            Err(Refusal::WrongSignature)
        );
        assert_eq!(
            verify(
                b"s3cret",
                Some(&sig),
                Some("1000"),
                body,
                1000 + TOLERANCE_SECS + 1
            ),
            Err(Refusal::Stale(TOLERANCE_SECS + 1))
        );
        assert_eq!(
            verify(b"s3cret", None, Some("1000"), body, 1000),
            Err(Refusal::MissingSignature)
        );
        assert_eq!(
            verify(b"s3cret", Some(&sig), None, body, 1000),
            Err(Refusal::BadTimestamp)
        );
        assert_eq!(
            verify(b"s3cret", Some(&sig), Some("soon"), body, 1000),
            Err(Refusal::BadTimestamp)
        );
        for bad in ["sha1=00", "sha256=zz", "sha256=abcd", &sig[7..]] {
            assert_eq!(
                verify(b"s3cret", Some(bad), Some("1000"), body, 1000),
                Err(Refusal::MalformedSignature),
                "{bad}"
            );
        }
        // the refusal never names the expected signature
        let msg = Refusal::WrongSignature.to_string();
        assert!(!msg.contains(&sig[7..]));
    }

    #[test]
    fn registry_auth_reads_hosts_and_never_quotes_a_secret() {
        let ok = registry_auth(
            r#"{"R8.im":{"cog_token":"c"},"h:5001":{"username":"u","password":"p"},"g":{"token":"t"}}"#,
        )
        .expect("parses");
        assert_eq!(ok.len(), 3);
        assert!(ok
            .iter()
            .any(|(h, c)| h == "r8.im" && matches!(c, crate::auth::Credentials::CogToken(_))));
        assert!(registry_auth("  ").expect("empty").is_empty());
        for bad in [
            r#"{"h":"s3cret-value"}"#,
            r#"{"h":{"username":"u","password":"s3cret-value","token":"s3cret-value"}}"#,
            r#"{"h":{"password":"s3cret-value"}}"#,
            r#"{"h":{"username":"u","password":"s3cret-value","extra":1}}"#,
            r#"["s3cret-value"]"#,
            r#"{"h": s3cret-value}"#,
        ] {
            let e = registry_auth(bad).expect_err(bad);
            assert!(!e.contains("s3cret"), "{e}");
            assert!(e.contains("REGISTRY_AUTH"), "{e}");
        }
    }

    #[test]
    fn job_ids_follow_signatures() {
        let a = job_id("sha256=aa");
        assert!(is_job_id(&a));
        assert_eq!(a, job_id(" sha256=aa "));
        assert_ne!(a, job_id("sha256=ab"));
        assert!(!is_job_id("../x") && !is_job_id(&a.to_uppercase()));
    }

    #[test]
    fn jobs_parse_and_refuse_what_they_cannot_run() {
        let ok = br#"{"base":"127.0.0.1:5000/a:1","dest":"127.0.0.1:5000/b:2","tar":{"url":"http://h/l.tar"}}"#;
        let j = Job::parse("affix", ok, "r8.im").expect("affix");
        assert_eq!(j.kind(), "affix");
        assert_eq!(j.registries("r8.im"), vec!["127.0.0.1:5000".to_string()]);
        let files = br#"{"base":"a","dest":"b","files":[{"name":"w.bin","url":"https://x/w"},{"name":"README.md","data":"aGk="}]}"#;
        assert!(Job::parse("affix", files, "r8.im").is_ok());
        let refused: &[(&str, &[u8], &str)] = &[
            ("affix", br#"{"base":"a","dest":"b"}"#, "nothing to add"),
            ("affix", br#"{"base":"a","dest":"b","tar":{"url":"http://h/t"},"files":[{"name":"x","data":""}]}"#, "not both"),
            ("affix", br#"{"base":"a","dest":"b","tar":{"url":"file:///etc/passwd"}}"#, "not an http(s) URL"),
            ("affix", br#"{"base":"a","dest":"b","files":[{"name":"../x","data":""}]}"#, "../x"),
            ("affix", br#"{"base":"a","dest":"b","files":[{"name":"x"}]}"#, "one of them"),
            ("affix", br#"{"base":"a","dest":"b","files":[{"name":"x","data":"!!"}]}"#, "not base64"),
            ("affix", br#"{"base":"a","dest":"b","tar":{"url":"http://h"},"compression":"lz4"}"#, "lz4"),
            ("affix", br#"{"base":"A B","dest":"b","tar":{"url":"http://h"}}"#, "base:"),
            ("affix", br#"{"base":"a","dest":"b","tar":{"url":"http://h"},"extra":1}"#, "unknown field"),
            ("remix", br#"{"base":"a","dest":"b"}"#, "weights"),
            ("zstd", br#"{"image":"a","dest":"b","min_ratio":2}"#, "min_ratio"),
            ("zstd", b"not json", "zstd hook body"),
            ("delete", b"{}", "no hook"),
        ];
        for (kind, body, want) in refused {
            let e = Job::parse(kind, body, "r8.im").expect_err(want).to_string();
            assert!(
                e.contains(want),
                "{kind} {}: {e}",
                String::from_utf8_lossy(body)
            );
        }
    }
    #[test]
    fn a_pack_body_gives_its_files_in_path_order_with_hidden_ones_left_out() {
        let body = br#"{"dest":"127.0.0.1:5100/m:pack","name":"tiny","mtime":946684800,
            "files":[{"path":"unet/x.safetensors","url":"http://h/x"},
                     {"path":"./config.json","url":"https://h/c"},
                     {"path":"run.sh","data":"IyEvYmluL3NoCg==","executable":true},
                     {"path":".gitattributes","data":""},
                     {"path":"__pycache__/m.pyc","data":""}]}"#;
        let j = Job::parse("pack", body, "r8.im").expect("pack");
        assert_eq!(j.kind(), "pack");
        assert_eq!(j.registries("r8.im"), ["127.0.0.1:5100"]);
        let Job::Pack(p) = j else {
            panic!("a pack job")
        };
        let plan = p.plan().expect("plan");
        assert_eq!(plan.target, crate::target::Target::ModelPack);
        assert_eq!(plan.packing, crate::artifact::Packing::Raw);
        assert_eq!(plan.mtime, 946684800);
        let paths: Vec<&str> = plan.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["config.json", "run.sh", "unet/x.safetensors"]);
        assert_eq!(plan.left_out, [".gitattributes", "__pycache__/m.pyc"]);
        assert_eq!(plan.files[0].source, PackSource::Url("https://h/c".into()));
        assert_eq!(
            plan.files[1].source,
            PackSource::Data(b"#!/bin/sh\n".to_vec())
        );
        assert!(plan.files[1].executable && !plan.files[0].executable);
        let kit =
            br#"{"dest":"d","format":"modelkit","files":[{"path":"a.gguf","url":"http://h/a"}]}"#;
        let Job::Pack(k) = Job::parse("pack", kit, "r8.im").expect("kit") else {
            panic!("a pack job")
        };
        let plan = k.plan().expect("plan");
        assert_eq!(plan.target, crate::target::Target::ModelKit);
        assert_eq!(
            plan.packing,
            crate::artifact::Packing::Tar(crate::compress::Compression::None)
        );
        assert_eq!(plan.mtime, 0, "as lamina pack without SOURCE_DATE_EPOCH");
        let tar = br#"{"dest":"d","tar":true,"files":[{"path":"a","url":"http://h/a"}]}"#;
        let Job::Pack(t) = Job::parse("pack", tar, "r8.im").expect("tar") else {
            panic!("a pack job")
        };
        assert_eq!(
            t.plan().expect("plan").packing,
            crate::artifact::Packing::Tar(crate::compress::Compression::None)
        );
    }

    #[test]
    fn pack_and_convert_bodies_that_cannot_run_are_refused_saying_why() {
        let f = r#""files":[{"path":"a.safetensors","url":"http://h/a"}]"#;
        let body = |rest: &str| format!("{{{rest}}}");
        let refused: Vec<(&str, String, &str)> = vec![
            ("pack", body(f), "missing field `dest`"),
            (
                "pack",
                body(&format!(r#""dest":"d","format":"zip",{f}"#)),
                "format \"zip\": modelpack (the default), modelkit or docker",
            ),
            (
                "pack",
                body(&format!(r#""dest":"d","format":"modelcar",{f}"#)),
                "/hooks/convert",
            ),
            (
                "pack",
                body(&format!(r#""dest":"d","format":"docker","tar":true,{f}"#)),
                "tar is for modelpack: a docker always holds its files raw",
            ),
            (
                "pack",
                body(&format!(r#""dest":"d","format":"modelkit","tar":true,{f}"#)),
                "in tars",
            ),
            ("pack", body(r#""dest":"d","files":[]"#), "nothing to pack"),
            (
                "pack",
                body(r#""dest":"d","files":[{"path":"../x","url":"http://h/x"}]"#),
                "\"../x\": the path climbs out",
            ),
            (
                "pack",
                body(r#""dest":"d","files":[{"path":"a/../../x","url":"http://h/x"}]"#),
                "climbs out",
            ),
            (
                "pack",
                body(r#""dest":"d","files":[{"path":"/etc/passwd","url":"http://h/x"}]"#),
                "\"/etc/passwd\": the path is absolute",
            ),
            (
                "pack",
                body(r#""dest":"d","files":[{"path":"C:/x","url":"http://h/x"}]"#),
                "drive letter",
            ),
            (
                "pack",
                body(r#""dest":"d","files":[{"path":"a\\b","url":"http://h/x"}]"#),
                "backslash",
            ),
            (
                "pack",
                body(r#""dest":"d","files":[{"path":"","url":"http://h/x"}]"#),
                "empty",
            ),
            (
                "pack",
                body(
                    r#""dest":"d","files":[{"path":"a","url":"http://h/x"},{"path":"./a","data":""}]"#,
                ),
                "\"a\" is named twice",
            ),
            (
                "pack",
                body(
                    r#""dest":"d","files":[{"path":"a","url":"http://h/x"},{"path":"a/b","data":""}]"#,
                ),
                "\"a\" is a file and a folder",
            ),
            (
                "pack",
                body(r#""dest":"d","files":[{"path":".env","data":""}]"#),
                "every file was left out",
            ),
            (
                "pack",
                body(r#""dest":"d","files":[{"path":"a","url":"file:///etc/passwd"}]"#),
                "not an http(s) URL",
            ),
            (
                "pack",
                body(r#""dest":"d","files":[{"path":"a"}]"#),
                "one of them",
            ),
            (
                "pack",
                body(r#""dest":"d","files":[{"path":"a","data":"!!"}]"#),
                "not base64",
            ),
            (
                "pack",
                body(r#""dest":"d","files":[{"name":"a","data":""}]"#),
                "unknown field `name`",
            ),
            (
                "pack",
                body(&format!(r#""dest":"d","password":"x",{f}"#)),
                "unknown field `password`",
            ),
            ("pack", body(&format!(r#""dest":"A B",{f}"#)), "dest:"),
            (
                "convert",
                body(r#""dest":"d","to":"modelkit""#),
                "missing field `src`",
            ),
            (
                "convert",
                body(r#""src":"s","to":"modelkit""#),
                "missing field `dest`",
            ),
            (
                "convert",
                body(r#""src":"s","dest":"d""#),
                "missing field `to`",
            ),
            (
                "convert",
                body(r#""src":"s","dest":"d","to":"zip""#),
                "to \"zip\": modelpack, modelkit, docker or modelcar",
            ),
            (
                "convert",
                body(r#""src":"s","dest":"d","to":"modelcar""#),
                "needs base",
            ),
            (
                "convert",
                body(r#""src":"s","dest":"d","to":"docker","base":"b""#),
                "base goes with to \"modelcar\"",
            ),
            (
                "convert",
                body(r#""src":"s","dest":"d","to":"modelcar","base":"A B""#),
                "base:",
            ),
        ];
        for (kind, body, want) in &refused {
            let e = Job::parse(kind, body.as_bytes(), "r8.im")
                .expect_err(body)
                .to_string();
            assert!(e.contains(want), "{kind} {body}: {e}");
        }
    }

    #[test]
    fn a_convert_body_names_every_registry_it_touches() {
        let body = br#"{"src":"127.0.0.1:5100/m:pack","dest":"127.0.0.1:5101/m:car","to":"modelcar","base":"127.0.0.1:5102/busybox"}"#;
        let j = Job::parse("convert", body, "r8.im").expect("convert");
        assert_eq!(j.kind(), "convert");
        assert_eq!(
            j.registries("r8.im"),
            ["127.0.0.1:5100", "127.0.0.1:5101", "127.0.0.1:5102"]
        );
        let Job::Convert(c) = j else {
            panic!("a convert job")
        };
        assert_eq!(c.target().expect("to"), crate::convert::To::Modelcar);
        let kit = br#"{"src":"s","dest":"d","to":"modelkit","name":"n","mtime":5}"#;
        let Job::Convert(k) = Job::parse("convert", kit, "r8.im").expect("kit") else {
            panic!("a convert job")
        };
        assert_eq!(
            k.target().expect("to"),
            crate::convert::To::Artifact(crate::target::Target::ModelKit)
        );
        assert_eq!((k.name.as_deref(), k.mtime), (Some("n"), Some(5)));
    }
}
