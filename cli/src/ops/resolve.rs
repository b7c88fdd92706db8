//! Fetching an image's manifest(s) and config from a registry or a layout.

use lamina_core::flow::{Configs, Resolve};
use lamina_core::image::{Config, Descriptor, Manifest};
use lamina_core::Digest;

use crate::error::{Result, WithContext as _};
use crate::net::client::Client;
use crate::store::{self, Loc};

pub use lamina_core::flow::{Image, PlatformSel, Top};

/// Refuses an explicit `--platform` that a single-platform image is not (see
/// [`lamina_core::flow::check_platform`]).
pub fn check_platform(r: &Loc, asked: Option<&str>, config: &Config) -> Result<()> {
    Ok(lamina_core::flow::check_platform(
        &r.to_string(),
        asked,
        config,
    )?)
}

/// Fetches `r` and the manifests selected by `sel`.
pub fn fetch(client: &mut Client, r: &Loc, sel: &PlatformSel) -> Result<Top> {
    let flow = Resolve::new(&r.to_string(), &r.reference(), sel.clone());
    crate::ops::flows::run(client, r, r, flow, true)
}

/// Fetches and parses an image's config.
pub fn config(client: &mut Client, r: &Loc, m: &Manifest) -> Result<Config> {
    let flow = Configs::new(&r.to_string(), &[m])?;
    let mut v = crate::ops::flows::run(client, r, r, flow, true)?;
    v.pop().ok_or_else(|| "no config".into())
}

/// Fetches a config blob's bytes, refusing one larger than lamina reads.
pub fn config_bytes(client: &mut Client, r: &Loc, d: &Descriptor) -> Result<Vec<u8>> {
    lamina_core::flow::check_config_size(&r.to_string(), d)?;
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
    let format = lamina_core::artifact::read(m, c)?.format;
    if format.is_artifact() {
        // its layers are files, not a filesystem's changes
        return Err(Box::new(lamina_core::Error::Usage {
            reason: format!(
                "{r} is a {} artifact, not an image: this command works on images (for \
                 artifacts: layers, extract, affix, remix, zstd, convert, slice)",
                format.name()
            ),
        }));
    }
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
    lamina_core::image::rfc3339(crate::ops::build::source_date_epoch().unwrap_or_else(now))
}

/// A codec error, or the error of the sink it fed.
pub fn flatten(e: lamina_core::compress::StreamError<lamina_core::Error>) -> lamina_core::Error {
    match e {
        lamina_core::compress::StreamError::Codec(c) => lamina_core::Error::Codec(c),
        lamina_core::compress::StreamError::Sink(e) => e,
    }
}

/// The base's platform images (those `sel` picks), its index if it has one, and their configs,
/// with every blob they need present in `dest` (mounted, or streamed registry to registry;
/// never downloaded) and the index's other platforms copied there. Errors name `--base` or
/// `--dest`.
#[allow(clippy::type_complexity)]
pub fn base_at_dest(
    client: &mut Client,
    base: &Loc,
    dest: &Loc,
    sel: &PlatformSel,
    platform: Option<&str>,
    quiet: bool,
) -> Result<(
    Vec<Image>,
    Option<lamina_core::image::Index>,
    Vec<lamina_core::image::Config>,
)> {
    let top = fetch(client, base, sel).context(|| format!("--base {base}"))?;
    let (images, index) = match top {
        Top::Single(i) => (vec![i], None),
        Top::Index {
            index, children, ..
        } => (children, Some(index)),
    };
    if images.is_empty() {
        return Err(format!(
            "{base}: the index has no platform images (only attestations or unknown platforms)"
        )
        .into());
    }
    let mut configs = Vec::new();
    for img in &images {
        configs.push(config(client, base, &img.manifest).context(|| format!("--base {base}"))?);
    }
    if index.is_none() {
        check_platform(base, platform, &configs[0])?;
    }
    let mut blobs: Vec<Descriptor> = Vec::new();
    for img in &images {
        for l in img.manifest.layers()? {
            if !blobs.iter().any(|b| b.digest == l.digest) {
                blobs.push(l);
            }
        }
    }
    crate::ops::flows::ensure_blobs(client, base, dest, &blobs, quiet)
        .context(|| format!("--dest {dest}"))?;
    crate::ops::flows::copy_other_platforms(client, base, dest, index.as_ref(), &images, quiet)
        .context(|| format!("--dest {dest}"))?;
    Ok((images, index, configs))
}
