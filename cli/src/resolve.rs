//! Fetching an image's manifest(s) and config from a registry or a layout.

use lamina_core::image::{
    detect_kind, Config, Descriptor, Index, Manifest, Platform, MAX_CONFIG_SIZE,
};
use lamina_core::media::DocKind;
use lamina_core::Digest;

use crate::client::anyhow_like::Result;
use crate::client::Client;
use crate::store::{self, Loc};

/// One platform image.
#[derive(Debug, Clone)]
pub struct Image {
    /// Its manifest.
    pub manifest: Manifest,
    /// Its digest as fetched.
    pub digest: Digest,
    /// Position in the index, if it came from one.
    pub index_pos: Option<usize>,
    /// Platform from the index entry (or the config).
    pub platform: Option<Platform>,
}

/// The top of a reference: a single manifest or an index with its children.
#[derive(Debug)]
pub enum Top {
    /// A single image.
    Single(Image),
    /// An index, with the children that were selected.
    Index {
        /// The index.
        index: Index,
        /// Its digest.
        digest: Digest,
        /// Selected children.
        children: Vec<Image>,
    },
}

/// Which platforms to take from an index.
#[derive(Debug, Clone)]
pub enum PlatformSel {
    /// One platform.
    One(Platform),
    /// All real platforms (attestations `unknown/unknown` are left as they are).
    All,
}

impl PlatformSel {
    /// Parses `--platform` (`all` or `os/arch[/variant]`).
    pub fn parse(s: Option<&str>) -> Result<Self> {
        match s {
            None => Ok(PlatformSel::One(Platform::linux_amd64())),
            Some("all") => Ok(PlatformSel::All),
            Some(p) => Ok(PlatformSel::One(Platform::parse(p)?)),
        }
    }
}

/// Refuses an explicit `--platform` that a single-platform image is not (an index chooses by
/// its entries; a single manifest has only its config's platform). Without `--platform`, or
/// with `all`, a single image is taken as it is.
pub fn check_platform(r: &Loc, asked: Option<&str>, config: &Config) -> Result<()> {
    let Some(asked) = asked.filter(|p| *p != "all") else {
        return Ok(());
    };
    let want = Platform::parse(asked)?;
    match config.platform() {
        Some(have) if !want.matches(&have) => Err(format!(
            "{r}: --platform {want}: the image is a single-platform image for {have}, not an \
             index; drop --platform to use it"
        )
        .into()),
        _ => Ok(()),
    }
}

/// Fetches `r` and the manifests selected by `sel`.
pub fn fetch(client: &mut Client, r: &Loc, sel: &PlatformSel) -> Result<Top> {
    let top = store::get_manifest(client, r, &r.reference())?;
    let (kind, mt) = detect_kind(&top.bytes, top.content_type.as_deref())?;
    match kind {
        DocKind::Manifest(_) => {
            let manifest = Manifest::parse(top.bytes, &mt)?;
            Ok(Top::Single(Image {
                manifest,
                digest: top.digest,
                index_pos: None,
                platform: None,
            }))
        }
        DocKind::Index(_) => {
            let index = Index::parse(top.bytes, &mt)?;
            let entries = index.manifests()?;
            let picks: Vec<usize> = match sel {
                PlatformSel::One(p) => vec![index.select(p)?],
                PlatformSel::All => entries
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| e.platform.as_ref().is_some_and(|p| p.os != "unknown"))
                    .map(|(i, _)| i)
                    .collect(),
            };
            let mut children = Vec::new();
            for i in picks {
                let e = &entries[i];
                let f = store::get_manifest(client, r, &e.digest.to_string())?;
                let (k, cmt) =
                    detect_kind(&f.bytes, f.content_type.as_deref().or(Some(&e.media_type)))?;
                if !matches!(k, DocKind::Manifest(_)) {
                    return Err(format!(
                        "{r}: nested indexes are not supported (entry {i} is an index)"
                    )
                    .into());
                }
                children.push(Image {
                    manifest: Manifest::parse(f.bytes, &cmt)?,
                    digest: f.digest,
                    index_pos: Some(i),
                    platform: e.platform.clone(),
                });
            }
            Ok(Top::Index {
                index,
                digest: top.digest,
                children,
            })
        }
    }
}

/// Fetches and parses an image's config.
pub fn config(client: &mut Client, r: &Loc, m: &Manifest) -> Result<Config> {
    Ok(Config::parse(config_bytes(client, r, &m.config()?)?)?)
}

/// Fetches a config blob's bytes, refusing one larger than lamina reads.
pub fn config_bytes(client: &mut Client, r: &Loc, d: &Descriptor) -> Result<Vec<u8>> {
    if d.size > MAX_CONFIG_SIZE {
        return Err(Box::new(lamina_core::Error::TooLarge {
            what: format!("config {} of {r}", d.digest),
            limit: MAX_CONFIG_SIZE,
        }));
    }
    store::get_config(client, r, &d.digest)
}

/// Fetches the one image `sel` names (an index is resolved to its platform).
pub fn fetch_one(client: &mut Client, r: &Loc, sel: &PlatformSel) -> Result<Image> {
    match fetch(client, r, sel)? {
        Top::Single(i) => Ok(i),
        Top::Index { mut children, .. } => children
            .pop()
            .ok_or_else(|| format!("{r}: the index has no image for the platform").into()),
    }
}

/// The layers of an image paired with their diff_ids from its config (checked to agree).
pub fn layers_with_diff_ids(
    r: &Loc,
    m: &Manifest,
    c: &Config,
) -> Result<Vec<(lamina_core::image::Descriptor, Digest)>> {
    let layers = m.layers()?;
    let ids = c.diff_ids()?;
    if ids.len() != layers.len() {
        return Err(format!(
            "{r}: the config lists {} diff_ids for {} layers",
            ids.len(),
            layers.len()
        )
        .into());
    }
    Ok(layers.into_iter().zip(ids).collect())
}

/// `created` for new history entries: `SOURCE_DATE_EPOCH` when set, else now.
pub fn history_time() -> String {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    lamina_core::image::rfc3339(crate::affix::source_date_epoch().unwrap_or_else(now))
}

/// A codec error, or the error of the sink it fed.
pub fn flatten(e: lamina_core::compress::StreamError<lamina_core::Error>) -> lamina_core::Error {
    match e {
        lamina_core::compress::StreamError::Codec(c) => lamina_core::Error::Codec(c),
        lamina_core::compress::StreamError::Sink(e) => e,
    }
}
