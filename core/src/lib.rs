//! # lamina-core
//!
//! The sans-IO core of lamina. It does no I/O, reads no clock and spawns nothing: it turns
//! inputs (bytes, HTTP responses, the time a driver reports) into outputs (bytes, HTTP requests,
//! waits). The same code runs in the native CLI (reqwest), in the browser (fetch) and in a
//! Cloudflare Worker; it builds and runs its tests on `wasm32-unknown-unknown`.
//!
//! ```text
//!  upload:
//!   files / tar ──► tar::TarWriter ──► layer::LayerWriter ──► blob bytes ─┐ produced(piece)
//!                   (deterministic)     (gzip|zstd|none,                   ▼
//!                                        diff_id + digest)   registry::Transfer ◄─ poll(now)
//!   image::{Manifest, Index, Config} edits ──► PutManifest    (kernel: Machine<Op> + Held
//!   (lossless JSON)                                            bytes + Source) ──► Action:
//!                                                              Send | Wait | Produce |
//!                                                              Restart | Event | Done
//!  download:
//!   registry ──► driver ──► OpenBlob (Range from a cut) ──► bytes ──► registry::Verifier /
//!                           registry::Download (where to    compress decoder ──► untar::
//!                           reopen, how long to wait)       TarReader (path safety) ──► files
//! ```
//!
//! A driver is a transport: it sends what [`registry::Transfer`] asks, with the clock and the
//! sockets it owns, and reports answers, typed network errors and produced bytes back. The same
//! kernel runs under the CLI (reqwest), the browser (fetch) and the Worker.
//!
//! Modules, one concept each:
//! - [`reference`]: image references and transports
//! - [`digest`]: sha256 digests and streaming hashing
//! - [`media`]: OCI and Docker media types
//! - [`image`]: lossless manifest / index / config editing
//! - [`tar`]: deterministic streaming tar writing
//! - [`untar`]: push-based tar reading and path safety
//! - [`compress`]: push-based gzip and zstd encoders and decoders
//! - [`layer`]: layer blobs with diff_id and digest in one pass
//! - [`layout`]: OCI image layouts (`index.json`, blob paths, tags)
//! - [`modelcar`]: modelcar (olot) layers and CNCF ModelPack manifests
//! - [`artifact`]: model artifacts (ModelPack, ModelKit, Docker models): kinds, files, paths
//! - [`pack`]: building them: file kinds, weight headers, ModelPack configs and manifests
//! - [`peek`]: reading inside images without downloading them: tar headers by ranges, the
//!   merged file tree
//! - [`convert`]: modelcar <-> ModelPack over the same blobs where the bytes can stay
//! - [`hook`]: signed webhooks (HMAC-SHA256, timestamps) and the jobs they start
//! - [`http`], [`auth`]: requests, responses, credentials, challenges
//! - [`registry`]: the distribution protocol as state machines, and the transfer kernel drivers
//!   run them with
//! - [`flow`]: image workflows (resolve, blobs at a destination, push) over any store
//! - [`slice`]: delta archives (the blobs above shared base images)
//! - [`toc`]: a layer's table of contents in its descriptor (written by affix, read by peek)
//! - [`chunked`]: a zstd:chunked layer's table of contents (podman's), read by peek
//! - [`estargz`]: an eStargz layer's footer and table of contents, read by peek
//!
//! Errors are values ([`Error`]); no input makes the core panic.

pub mod artifact;
pub mod auth;
pub mod chunked;
pub mod compress;
pub mod convert;
pub mod digest;
pub mod error;
pub mod estargz;
pub mod flow;
pub mod hook;
pub mod http;
pub mod image;
pub mod layer;
pub mod layout;
pub mod media;
pub mod modelcar;
pub mod pack;
pub mod peek;
pub mod reference;
pub mod registry;
pub mod retar;
pub mod slice;
pub mod tar;
pub mod target;
pub mod toc;
pub mod untar;

pub use digest::Digest;
pub use error::Error;
