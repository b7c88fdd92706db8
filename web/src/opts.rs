//! What the page asks for: its options (JSON from the page's worker), their defaults, and what
//! follows from them (pure: no JS).

use std::collections::HashMap;

use lamina_core::auth::{Credentials, Secret};
use lamina_core::compress::Compression;
use lamina_core::reference::Reference;
use lamina_core::target::Target;
use lamina_core::Error;
use serde::Deserialize;

/// Files of a ModelPack uploaded at once unless the page says otherwise: `lamina pack -j`'s
/// default.
pub const JOBS: usize = 4;

/// The most files uploaded at once: browsers open at most 6 connections to one host over
/// HTTP/1.1 (more uploads would wait for one, and hold their pieces meanwhile).
pub const JOBS_MAX: usize = 6;

/// The page's options.
#[derive(Debug, Deserialize)]
pub struct Opts {
    pub base: String,
    /// Empty when only the base is inspected.
    #[serde(default)]
    pub dest: String,
    /// Where the files go (`/src/weights`, or `/models` for a modelcar).
    #[serde(default = "default_path")]
    pub path: String,
    /// One layer per file under /models, the card last (olot's modelcar shape).
    #[serde(default)]
    pub modelcar: bool,
    /// `none` or `gzip` for the model files.
    #[serde(default = "default_compression")]
    pub compression: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// A bearer token (sent as is).
    #[serde(default)]
    pub token: Option<String>,
    /// Same-origin proxy prefix (the edge worker): requests go to `{proxy}/{url}`.
    #[serde(default)]
    pub proxy: Option<String>,
    /// PATCH size in MiB (a Cloudflare Worker takes at most 100 MB per request).
    #[serde(default = "default_chunk")]
    pub chunk_mib: u64,
    /// Registry used for short names.
    #[serde(default = "default_registry")]
    pub registry: String,
    /// `created` of the history entries (the page passes its clock: the core reads none).
    #[serde(default)]
    pub created: Option<String>,
    /// What `pack` makes (`modelpack`; the CLI's other formats are refused by name).
    #[serde(default = "default_format")]
    pub format: String,
    /// The model's name in a packed artifact's config (default: the dropped folder's name).
    #[serde(default)]
    pub name: Option<String>,
    /// The packed files' mtime in their metadata, in seconds (the CLI's `SOURCE_DATE_EPOCH`;
    /// 0 when not given, as there), so that the page and the CLI make the same digest.
    #[serde(default)]
    pub source_date_epoch: Option<u64>,
    /// How many of a ModelPack's files upload at once (the CLI's `lamina pack -j`).
    #[serde(default = "default_jobs")]
    pub jobs: u64,
}

fn default_path() -> String {
    "/src/weights".into()
}
fn default_compression() -> String {
    "none".into()
}
fn default_chunk() -> u64 {
    64
}
fn default_registry() -> String {
    "r8.im".into()
}
fn default_jobs() -> u64 {
    JOBS as u64
}
fn default_format() -> String {
    "modelpack".into()
}

impl Opts {
    /// The options from the page's JSON.
    pub fn parse(json: &str) -> Result<Opts, Error> {
        serde_json::from_str(json).map_err(|e| Error::Usage {
            reason: format!("options: {e}"),
        })
    }

    /// The base, and the destination (none when it is left empty).
    pub fn refs(&self) -> Result<(Reference, Option<Reference>), Error> {
        let base = Reference::parse(&self.base, &self.registry)?;
        let dest = match self.dest.trim() {
            "" => None,
            s => Some(Reference::parse(s, &self.registry)?),
        };
        Ok((base, dest))
    }

    /// The destination alone (`pack` has no base): refused when empty, or when it names a
    /// digest (an artifact's digest is known only once it is made).
    pub fn destination(&self) -> Result<Reference, Error> {
        let usage = |reason: &str| Error::Usage {
            reason: reason.into(),
        };
        let dest = match self.dest.trim() {
            "" => return Err(usage("fill in the destination")),
            s => Reference::parse(s, &self.registry)?,
        };
        if dest.digest.is_some() {
            return Err(usage(
                "the destination names a digest: give a tag (the artifact's digest is known \
                 only once it is made)",
            ));
        }
        Ok(dest)
    }

    /// The format `pack` makes: a ModelPack (the page makes no other; the CLI does).
    pub fn target(&self) -> Result<Target, Error> {
        match Target::parse(&self.format) {
            Some(Target::ModelPack) => Ok(Target::ModelPack),
            Some(t) => Err(Error::Usage {
                reason: format!(
                    "the page packs ModelPack artifacts only: use `lamina pack --format {}`",
                    t.name()
                ),
            }),
            None => Err(Error::Usage {
                reason: format!("format {:?}: the page packs modelpack", self.format),
            }),
        }
    }

    /// The packed files' mtime (seconds): `source_date_epoch`, else 0.
    pub fn mtime(&self) -> u64 {
        self.source_date_epoch.unwrap_or(0)
    }

    /// The model's name given, if any (an empty one is none).
    pub fn model_name(&self) -> Option<String> {
        self.name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(String::from)
    }

    /// The credentials given: a token alone is a bearer token, a username goes with the
    /// password.
    pub fn creds(&self) -> Credentials {
        match (&self.username, &self.password, &self.token) {
            (_, _, Some(t)) if !t.is_empty() => Credentials::Bearer(Secret::new(t.clone())),
            (Some(u), Some(p), _) if !u.is_empty() => Credentials::Basic {
                username: u.clone(),
                password: Secret::new(p.clone()),
            },
            _ => Credentials::Anonymous,
        }
    }

    /// Credentials per registry: they belong to the destination's only.
    pub fn creds_for(&self, dest: Option<&Reference>) -> HashMap<String, Credentials> {
        dest.map(|d| (d.registry.clone(), self.creds()))
            .into_iter()
            .collect()
    }

    /// The proxy, when one is given.
    pub fn proxy(&self) -> Option<&str> {
        self.proxy.as_deref().filter(|p| !p.is_empty())
    }

    /// The model files' compression (a model card is always gzip).
    pub fn compression(&self) -> Result<Compression, Error> {
        match self.compression.as_str() {
            "gzip" => Ok(Compression::Gzip),
            "none" => Ok(Compression::None),
            other => Err(Error::Usage {
                reason: format!("compression {other:?}: none or gzip in the browser"),
            }),
        }
    }

    /// How many files upload at once: 1 to [`JOBS_MAX`].
    pub fn jobs(&self) -> usize {
        self.jobs.clamp(1, JOBS_MAX as u64) as usize
    }

    /// The PATCH size in bytes: 1 to 512 MiB.
    pub fn chunk(&self) -> u64 {
        self.chunk_mib.clamp(1, 512) << 20
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in_what_the_page_leaves_out() {
        let o = Opts::parse(r#"{"base": "me/base"}"#).unwrap();
        assert_eq!(o.path, "/src/weights");
        assert_eq!(o.compression().unwrap(), Compression::None);
        assert_eq!(o.chunk(), 64 << 20);
        assert!(!o.modelcar);
        assert_eq!(o.proxy(), None);
        let (base, dest) = o.refs().unwrap();
        assert_eq!(base.registry, "r8.im", "short names go to r8.im");
        assert!(dest.is_none(), "an empty destination: inspect only");
        assert!(matches!(o.creds(), Credentials::Anonymous));
        assert!(o.creds_for(dest.as_ref()).is_empty());
    }

    #[test]
    fn options_as_the_page_sends_them() {
        let o = Opts::parse(
            r#"{"base": "127.0.0.1:5100/fixtures/base:latest", "dest": " 127.0.0.1:5101/e2e/x:v1 ",
                "path": "/models", "modelcar": true, "compression": "gzip", "username": "u",
                "password": "p", "token": null, "registry": "r8.im", "proxy": "",
                "chunk_mib": 9999, "created": "2025-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(o.compression().unwrap(), Compression::Gzip);
        assert_eq!(o.chunk(), 512 << 20, "at most 512 MiB");
        assert_eq!(o.proxy(), None, "an empty proxy is none");
        let (base, dest) = o.refs().unwrap();
        let dest = dest.unwrap();
        assert_eq!(dest.registry, "127.0.0.1:5101");
        let creds = o.creds_for(Some(&dest));
        assert!(matches!(
            creds.get("127.0.0.1:5101"),
            Some(Credentials::Basic { username, .. }) if username == "u"
        ));
        assert!(
            !creds.contains_key(&base.registry),
            "the base's registry gets no credentials"
        );
        let o = Opts::parse(r#"{"base": "a/b", "token": "t", "username": "", "chunk_mib": 0}"#)
            .unwrap();
        assert!(matches!(o.creds(), Credentials::Bearer(_)));
        assert_eq!(o.chunk(), 1 << 20, "at least 1 MiB");
    }

    #[test]
    fn bad_options_say_what_is_wrong() {
        let e = Opts::parse(r#"{"dest": "x"}"#).unwrap_err().to_string();
        assert!(e.starts_with("options: missing field `base`"), "{e}");
        let o = Opts::parse(r#"{"base": "a/b", "compression": "zstd"}"#).unwrap();
        let e = o.compression().unwrap_err().to_string();
        assert_eq!(e, "compression \"zstd\": none or gzip in the browser");
        let o = Opts::parse(r#"{"base": "UPPER/Case"}"#).unwrap();
        assert!(o.refs().is_err());
    }

    #[test]
    fn pack_options_need_only_a_destination_and_default_to_a_modelpack_at_time_zero() {
        let o = Opts::parse(r#"{"base": "", "dest": " 127.0.0.1:5100/me/tiny:v1 "}"#).unwrap();
        assert_eq!(o.target().unwrap(), Target::ModelPack);
        assert_eq!(o.mtime(), 0, "SOURCE_DATE_EPOCH unset is 0, as in the CLI");
        assert_eq!(o.jobs(), 4, "lamina pack -j's default");
        assert_eq!(o.model_name(), None);
        let d = o.destination().unwrap();
        assert_eq!(
            (
                d.registry.as_str(),
                d.repository.as_str(),
                d.tag_or_latest()
            ),
            ("127.0.0.1:5100", "me/tiny", "v1")
        );
        assert!(
            o.refs().is_err(),
            "an empty base is no image: pack does not read one"
        );
        let o = Opts::parse(
            r#"{"base": "", "dest": "me/tiny", "format": "modelpack", "name": " tiny ",
                "source_date_epoch": 1700000000}"#,
        )
        .unwrap();
        assert_eq!(o.mtime(), 1_700_000_000);
        let jobs = |j: &str| {
            let o = Opts::parse(&format!(r#"{{"base": "", "jobs": {j}}}"#)).unwrap();
            o.jobs()
        };
        assert_eq!((jobs("0"), jobs("1"), jobs("6"), jobs("99")), (1, 1, 6, 6));
        assert_eq!(o.model_name().as_deref(), Some("tiny"));
        assert_eq!(o.destination().unwrap().registry, "r8.im");
        let o = Opts::parse(r#"{"base": "", "dest": "me/tiny", "name": "  "}"#).unwrap();
        assert_eq!(
            o.model_name(),
            None,
            "a blank name is none: the folder's is used"
        );
    }

    #[test]
    fn bad_pack_options_say_what_to_do() {
        let e = |json: &str| {
            let o = Opts::parse(json).unwrap();
            o.target().and(o.destination()).unwrap_err().to_string()
        };
        assert_eq!(e(r#"{"base": "", "dest": " "}"#), "fill in the destination");
        let digest = format!("127.0.0.1:5100/me/tiny@{}", lamina_core::Digest::of(b"x"));
        assert_eq!(
            e(&format!(r#"{{"base": "", "dest": "{digest}"}}"#)),
            "the destination names a digest: give a tag (the artifact's digest is known only \
             once it is made)"
        );
        assert_eq!(
            e(r#"{"base": "", "dest": "a/b", "format": "modelkit"}"#),
            "the page packs ModelPack artifacts only: use `lamina pack --format modelkit`"
        );
        assert_eq!(
            e(r#"{"base": "", "dest": "a/b", "format": "tarball"}"#),
            "format \"tarball\": the page packs modelpack"
        );
        let e = Opts::parse(r#"{"base": "", "dest": "a/b", "source_date_epoch": -1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("options: invalid value: integer `-1`"), "{e}");
    }
}
