//! Pushing edited images: configs and manifests get the new layers, configs are uploaded, then
//! the platform manifests, then the index. Blobs first, manifests last, so a tag never points at
//! missing data.

use lamina_core::flow::{Edit, PushImages};
use lamina_core::image::{Config, Index};
use lamina_core::Digest;

use crate::error::Result;
use crate::net::client::Client;
use crate::ops::resolve::Image;
use crate::store::{self, Loc};

pub use lamina_core::flow::NewLayer;

/// Appends `layers` to every image, pushes configs, manifests and the index (if any) to `dest`
/// (the core's [`PushImages`] workflow); returns the digest of what the tag points at.
#[allow(clippy::too_many_arguments)]
pub fn push_images(
    client: &mut Client,
    dest: &Loc,
    images: &mut [Image],
    configs: Vec<Config>,
    index: &mut Option<Index>,
    layers: &[NewLayer],
    labels: &[(String, String)],
    annotations: &[(String, String)],
    quiet: bool,
) -> Result<Digest> {
    let edit = Edit {
        layers: layers.to_vec(),
        labels: labels.to_vec(),
        annotations: annotations.to_vec(),
    };
    let flow = PushImages::new(images.to_vec(), configs, index.take(), edit, dest.tag())?;
    crate::ops::flows::run(client, dest, dest, flow, quiet)
}

/// Pushes one image's manifest: by digest when an index will point at it, else by tag.
pub fn push_manifest_of(
    client: &mut Client,
    dest: &Loc,
    img: &mut Image,
    in_index: bool,
) -> Result<(Option<usize>, Digest, u64, &'static str)> {
    let m = &mut img.manifest;
    let bytes = m.bytes().to_vec();
    let reference = if in_index {
        m.digest().to_string()
    } else {
        dest.tag().to_string()
    };
    let size = bytes.len() as u64;
    let d = store::put_manifest(client, dest, &reference, m.media_type(), bytes)?;
    Ok((img.index_pos, d, size, m.media_type()))
}
