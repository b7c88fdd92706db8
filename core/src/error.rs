//! The one error type of `lamina-core`. Every variant names what was wrong (a reference, a URL, a
//! digest, an HTTP status and registry error code) so a driver can print it as one clear line.

use core::fmt;

use crate::compress::CodecError;
use crate::digest::Digest;

/// Errors from parsing, editing, building and the registry protocol. Input never panics; it errors.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// An image reference that does not parse.
    InvalidReference {
        /// The input as given (truncated).
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A digest string that does not parse.
    InvalidDigest {
        /// The input as given (truncated).
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Bytes that do not hash to the digest they were announced with.
    DigestMismatch {
        /// What was checked ("manifest from https://...", "blob sha256:..").
        what: String,
        /// The digest that was expected.
        expected: Digest,
        /// The digest of the bytes received.
        found: Digest,
    },
    /// A size that differs from the descriptor's.
    SizeMismatch {
        /// What was checked.
        what: String,
        /// Announced size.
        expected: u64,
        /// Size seen.
        found: u64,
    },
    /// A JSON document (manifest, index, config, token answer) that is malformed or of the wrong shape.
    InvalidDocument {
        /// Which document.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A media type lamina cannot handle in this place.
    UnsupportedMediaType {
        /// Where it was found.
        what: String,
        /// The media type.
        media_type: String,
    },
    /// No manifest in an index matches the requested platform.
    PlatformNotFound {
        /// The platform asked for.
        wanted: String,
        /// The platforms the index has.
        available: Vec<String>,
    },
    /// `--platform` names a platform a single-platform image is not.
    NotThatPlatform {
        /// The image.
        what: String,
        /// The platform asked for.
        wanted: String,
        /// The image's platform.
        have: String,
    },
    /// A registry answered with an unexpected HTTP status.
    Http {
        /// Request method.
        method: String,
        /// Request URL (displays without its query or credentials).
        url: crate::http::SafeUrl,
        /// HTTP status.
        status: u16,
        /// The registry's error code(s) and message(s) from the body, if any.
        detail: String,
    },
    /// Authentication failed or a token answer was unusable.
    Auth {
        /// Registry host.
        registry: String,
        /// What happened.
        reason: String,
    },
    /// Something looked for is not there (a tag in a layout, a blob file).
    NotFound {
        /// What was looked for, and where.
        what: String,
    },
    /// Something larger than lamina accepts (e.g. a manifest over 4 MiB).
    TooLarge {
        /// What.
        what: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// A compressed stream that is corrupt or truncated.
    Codec(CodecError),
    /// A tar stream or tar entry lamina cannot read or write.
    Tar {
        /// What is wrong.
        reason: String,
    },
    /// A tar layer that was to become one raw file holds more than one file (a folder's tar);
    /// a converter keeps such a layer a tar ([`crate::convert::Step::fallback`]).
    SeveralFiles {
        /// The first file.
        first: String,
        /// The second.
        second: String,
    },
    /// The registry broke the protocol (missing header, bad Range, redirect loop, ...).
    Protocol {
        /// What the registry did.
        reason: String,
    },
    /// A TLS connection to a registry failed for a reason retrying cannot fix (a certificate
    /// that is not trusted, expired, or for another name).
    Tls {
        /// The host.
        host: String,
        /// Why, as the TLS library said it.
        reason: String,
    },
    /// The driver could not read or write something it was given (a file, a stream): a
    /// runtime failure, not a usage error.
    Io {
        /// What was read or written (a path).
        what: String,
        /// What the system said.
        reason: String,
    },
    /// A caller asked for something that cannot be done with these inputs.
    Usage {
        /// What and why.
        reason: String,
    },
    /// A driver used the core in a way it must not (a bug in lamina, not in its input): data for
    /// a finished archive, an operation polled after it finished. Drivers report it apart from
    /// usage errors and runtime failures (the CLI exits 70, `EX_SOFTWARE`).
    Internal {
        /// What was done wrong.
        reason: String,
    },
    /// Retries were exhausted; holds the last failure.
    RetriesExhausted {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: Box<Error>,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidReference { input, reason } => {
                write!(f, "invalid image reference {input:?}: {reason}")
            }
            Error::InvalidDigest { input, reason } => {
                write!(f, "invalid digest {input:?}: {reason}")
            }
            Error::DigestMismatch {
                what,
                expected,
                found,
            } => {
                write!(
                    f,
                    "digest mismatch for {what}: expected {expected}, got {found}"
                )
            }
            Error::SizeMismatch {
                what,
                expected,
                found,
            } => {
                write!(
                    f,
                    "size mismatch for {what}: expected {expected} bytes, got {found}"
                )
            }
            Error::InvalidDocument { what, reason } => write!(f, "invalid {what}: {reason}"),
            Error::UnsupportedMediaType { what, media_type } => {
                write!(f, "unsupported media type {media_type:?} for {what}")
            }
            Error::PlatformNotFound { wanted, available } => write!(
                f,
                "no manifest for platform {wanted} in the index (it has: {})",
                if available.is_empty() {
                    "none".to_string()
                } else {
                    available.join(", ")
                }
            ),
            Error::NotThatPlatform { what, wanted, have } => write!(
                f,
                "{what}: --platform {wanted}: the image is a single-platform image for {have}, \
                 not an index; drop --platform to use it"
            ),
            Error::Http {
                method,
                url,
                status,
                detail,
            } => {
                write!(f, "{method} {url}: HTTP {status}")?;
                if !detail.is_empty() {
                    write!(f, ": {detail}")?;
                }
                Ok(())
            }
            Error::Auth { registry, reason } => {
                write!(f, "authentication with {registry} failed: {reason}")
            }
            Error::NotFound { what } => write!(f, "not found: {what}"),
            Error::TooLarge { what, limit } if limit % (1 << 20) == 0 => write!(
                f,
                "{what} is larger than the limit of {} MiB ({limit} bytes); it was not read further",
                limit >> 20
            ),
            Error::TooLarge { what, limit } => {
                write!(f, "{what} is larger than the limit of {limit} bytes")
            }
            Error::Codec(e) => write!(f, "{e}"),
            Error::Tar { reason } => write!(f, "tar: {reason}"),
            Error::SeveralFiles { first, second } => write!(
                f,
                "tar: the layer holds more than one file ({first:?}, {second:?}): it cannot be \
                 one raw file"
            ),
            Error::Protocol { reason } => write!(f, "registry protocol error: {reason}"),
            Error::Io { what, reason } => write!(f, "{what}: {reason}"),
            Error::Tls { host, reason } => write!(f, "TLS with {host} failed: {reason}"),
            Error::Usage { reason } => write!(f, "{reason}"),
            Error::Internal { reason } => write!(f, "internal error: {reason}"),
            Error::RetriesExhausted { attempts, last } => {
                write!(f, "gave up after {attempts} attempts: {last}")
            }
        }
    }
}

impl std::error::Error for Error {}

impl From<CodecError> for Error {
    fn from(e: CodecError) -> Self {
        Error::Codec(e)
    }
}

impl Error {
    /// An [`Error::Internal`].
    pub fn internal(reason: impl Into<String>) -> Self {
        Error::Internal {
            reason: reason.into(),
        }
    }
}

/// Result alias.
pub type Result<T, E = Error> = core::result::Result<T, E>;
