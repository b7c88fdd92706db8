//! Media types of OCI and Docker v2 images.

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI layer, uncompressed tar.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI layer, gzip.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI layer, zstd.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// OCI non-distributable layer (deprecated but seen), gzip.
pub const OCI_LAYER_NONDIST_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
/// OCI non-distributable layer, uncompressed.
pub const OCI_LAYER_NONDIST_TAR: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
/// Docker v2 schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker layer, gzip.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker layer, uncompressed (accepted by containerd and containers/image).
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker foreign layer.
pub const DOCKER_LAYER_FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// The `Accept` header for manifest GETs: every type lamina reads. Distribution answers 404 for
/// an OCI manifest unless its type is listed.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

use crate::compress::Compression;

/// Family of a manifest: decides the media types of layers added to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// OCI image spec.
    Oci,
    /// Docker v2 schema 2.
    Docker,
}

/// Kind of a top-level document fetched from `/manifests/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DocKind {
    /// An image manifest.
    Manifest(Family),
    /// An index / manifest list.
    Index(Family),
}

/// Classifies a manifest media type.
pub fn doc_kind(media_type: &str) -> Option<DocKind> {
    Some(match media_type {
        OCI_MANIFEST => DocKind::Manifest(Family::Oci),
        DOCKER_MANIFEST => DocKind::Manifest(Family::Docker),
        OCI_INDEX => DocKind::Index(Family::Oci),
        DOCKER_LIST => DocKind::Index(Family::Docker),
        _ => return None,
    })
}

/// Layer media type for a family and compression, or `None` where the family has no such type
/// (Docker has no zstd layers: convert the manifest to OCI first).
pub fn layer_type(family: Family, c: Compression) -> Option<&'static str> {
    Some(match (family, c) {
        (Family::Oci, Compression::None) => OCI_LAYER_TAR,
        (Family::Oci, Compression::Gzip) => OCI_LAYER_GZIP,
        (Family::Oci, Compression::Zstd) => OCI_LAYER_ZSTD,
        (Family::Docker, Compression::None) => DOCKER_LAYER_TAR,
        (Family::Docker, Compression::Gzip) => DOCKER_LAYER_GZIP,
        (Family::Docker, Compression::Zstd) => return None,
    })
}

/// Compression of a layer media type, or `None` if it is not a layer type lamina knows.
pub fn layer_compression(media_type: &str) -> Option<Compression> {
    Some(match media_type {
        OCI_LAYER_TAR | OCI_LAYER_NONDIST_TAR | DOCKER_LAYER_TAR => Compression::None,
        OCI_LAYER_GZIP | OCI_LAYER_NONDIST_GZIP | DOCKER_LAYER_GZIP | DOCKER_LAYER_FOREIGN => {
            Compression::Gzip
        }
        OCI_LAYER_ZSTD => Compression::Zstd,
        _ => return None,
    })
}

/// The OCI equivalent of a Docker media type (unchanged for anything else).
pub fn to_oci(media_type: &str) -> &str {
    match media_type {
        DOCKER_MANIFEST => OCI_MANIFEST,
        DOCKER_LIST => OCI_INDEX,
        DOCKER_CONFIG => OCI_CONFIG,
        DOCKER_LAYER_GZIP => OCI_LAYER_GZIP,
        DOCKER_LAYER_TAR => OCI_LAYER_TAR,
        DOCKER_LAYER_FOREIGN => OCI_LAYER_NONDIST_GZIP,
        other => other,
    }
}

/// A short name for tables: `tar`, `tar+gzip`, `tar+zstd`, `oci-manifest`, ...
pub fn short(media_type: &str) -> &str {
    match media_type {
        OCI_LAYER_TAR | DOCKER_LAYER_TAR => "tar",
        OCI_LAYER_GZIP | DOCKER_LAYER_GZIP => "tar+gzip",
        OCI_LAYER_ZSTD => "tar+zstd",
        OCI_MANIFEST => "oci-manifest",
        DOCKER_MANIFEST => "docker-manifest",
        OCI_INDEX => "oci-index",
        DOCKER_LIST => "docker-list",
        other => other,
    }
}

/// Whether a media type is that of an image layer (OCI or Docker, any compression).
pub fn is_layer(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.")
        || media_type.starts_with("application/vnd.docker.image.rootfs.")
}

/// Whether a media type is that of a manifest, an index or an image config: never a layer's
/// (a descriptor with one points at the wrong kind of blob).
pub fn is_document(media_type: &str) -> bool {
    doc_kind(media_type).is_some() || media_type == OCI_CONFIG || media_type == DOCKER_CONFIG
}
