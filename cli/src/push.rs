//! Pushing edited images: configs and manifests get the new layers, configs are uploaded, then
//! the platform manifests, then the index. Blobs first, manifests last, so a tag never points at
//! missing data.

use lamina_core::compress::Compression;
use lamina_core::image::{Config, Descriptor, History, Index};
use lamina_core::media::{self, Family};
use lamina_core::Digest;

use crate::client::anyhow_like::Result;
use crate::client::Client;
use crate::resolve::Image;
use crate::store::{self, Loc};

/// A layer to append (its blob is already in the destination repository).
#[derive(Debug, Clone)]
pub struct NewLayer {
    /// Compression of the blob.
    pub compression: Compression,
    /// Blob digest.
    pub digest: Digest,
    /// Blob size.
    pub size: u64,
    /// Uncompressed digest.
    pub diff_id: Digest,
    /// History entry.
    pub history: History,
    /// Layer annotations (an OCI manifest carries them; a Docker one is converted).
    pub annotations: Vec<(String, String)>,
}

/// Docker manifests have no zstd layer type and no annotations: turn images (and their index)
/// into OCI when the new content needs it. Layer blobs stay the same.
pub fn convert_if_needed(
    images: &mut [Image],
    index: &mut Option<Index>,
    zstd: bool,
    annotations: bool,
    quiet: bool,
) {
    if (zstd || annotations) && images.iter().any(|i| i.manifest.family() == Family::Docker) {
        if !quiet {
            eprintln!(
                "note: converting the Docker v2 manifest to OCI ({})",
                if zstd { "zstd layers" } else { "annotations" }
            );
        }
        for i in images.iter_mut() {
            i.manifest.convert_to_oci();
        }
        if let Some(ix) = index {
            ix.convert_to_oci();
        }
    }
}

/// Appends `layers` to every image, pushes configs, manifests and the index (if any) to `dest`;
/// returns the digest of what the tag points at.
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
    let zstd = layers.iter().any(|l| l.compression == Compression::Zstd);
    let annotated = !annotations.is_empty() || layers.iter().any(|l| !l.annotations.is_empty());
    convert_if_needed(images, index, zstd, annotated, quiet);
    let mut pushed = Vec::new();
    for (img, mut config) in images.iter_mut().zip(configs) {
        for l in layers {
            config.push_layer(&l.diff_id, &l.history);
        }
        for (k, v) in labels {
            config.set_label(k, v);
        }
        let cbytes = config.bytes().to_vec();
        let csize = cbytes.len() as u64;
        let cdigest = store::put_bytes(client, dest, cbytes)?;
        let m = &mut img.manifest;
        m.set_config(&cdigest, csize);
        for l in layers {
            let lt = media::layer_type(m.family(), l.compression)
                .ok_or("no layer media type for this manifest family")?;
            let mut d = Descriptor::new(lt, l.digest.clone(), l.size);
            d.annotations = l.annotations.clone();
            m.push_layer(&d);
        }
        for (k, v) in annotations {
            m.set_annotation(k, v)?;
        }
        pushed.push(push_manifest_of(client, dest, img, index.is_some())?);
    }
    match index {
        Some(ix) => {
            for (pos, d, size, mt) in &pushed {
                if let Some(p) = pos {
                    ix.replace(*p, mt, d, *size);
                }
            }
            let bytes = ix.bytes().to_vec();
            store::put_manifest(client, dest, dest.tag(), ix.media_type(), bytes)
        }
        None => Ok(pushed[0].1.clone()),
    }
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
