//! Which certificates lamina trusts, per registry host.
//!
//! - The system's CA store (with `SSL_CERT_FILE` / `SSL_CERT_DIR` when set, as OpenSSL reads
//!   them) and Mozilla's roots (webpki-roots), for every host.
//! - `--ca-file FILE` (PEM, one or more certificates), for every host of the command.
//! - The per-host directories Docker, Podman and containerd users already have:
//!   `/etc/docker/certs.d/HOST[:PORT]/*.crt`, `~/.docker/certs.d/HOST[:PORT]/*.crt`,
//!   `/etc/containers/certs.d/HOST[:PORT]/*.crt`, for that host only.
//! - `--tls-verify=false` turns verification off for every registry of the command;
//!   `--src-tls-verify=false` / `--dest-tls-verify=false` (skopeo's names) for the registries
//!   read from or written to. Only for test registries: nothing then proves whom lamina talks to.
//!
//! A certificate that is not trusted is never retried (it will not become trusted): the error
//! names the host, what the TLS library said, and the options above.

use std::path::{Path, PathBuf};

/// The TLS settings of a command.
#[derive(Clone, Debug, Default)]
pub struct TlsConfig {
    /// Certificates from `--ca-file`, trusted for every host.
    pub cas: Vec<reqwest::Certificate>,
    /// Verification is off for every host.
    pub no_verify_all: bool,
    /// Hosts (`host[:port]`) whose certificates are not verified.
    pub no_verify: Vec<String>,
}

/// What one host's connections trust.
#[derive(Debug)]
pub struct HostTls {
    /// Certificates to trust besides the system's.
    pub cas: Vec<reqwest::Certificate>,
    /// Accept any certificate.
    pub no_verify: bool,
}

impl TlsConfig {
    /// Reads `--ca-file` files (PEM bundles).
    pub fn with_ca_files(mut self, files: &[PathBuf]) -> Result<Self, String> {
        for f in files {
            self.cas.extend(read_pem(f, "--ca-file")?);
        }
        Ok(self)
    }

    /// The settings for `host` (`host[:port]`, as in the URL).
    pub fn for_host(&self, host: &str) -> Result<HostTls, String> {
        let mut cas = self.cas.clone();
        for dir in certs_d_dirs() {
            let d = dir.join(host);
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "crt"))
                .collect();
            files.sort();
            for f in files {
                cas.extend(read_pem(&f, "certs.d")?);
            }
        }
        Ok(HostTls {
            cas,
            no_verify: self.no_verify_all || self.no_verify.iter().any(|h| h == host),
        })
    }
}

fn certs_d_dirs() -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from("/etc/docker/certs.d")];
    if let Some(h) = std::env::var_os("HOME") {
        v.push(PathBuf::from(h).join(".docker/certs.d"));
    }
    v.push(PathBuf::from("/etc/containers/certs.d"));
    v
}

fn read_pem(f: &Path, what: &str) -> Result<Vec<reqwest::Certificate>, String> {
    let raw = std::fs::read(f).map_err(|e| format!("{what} {}: {e}", f.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&raw)
        .map_err(|e| format!("{what} {}: not PEM certificates: {e}", f.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} {}: holds no PEM certificate", f.display()));
    }
    Ok(certs)
}

/// The TLS library's reason when `e` failed on a certificate (not worth retrying).
pub fn certificate_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(r) = c.downcast_ref::<rustls::Error>() {
            return Some(r.to_string());
        }
        // an io::Error's source() skips the error it wraps (hyper nests them): look inside
        cur = match c.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|i| i as &(dyn std::error::Error + 'static)),
            None => c.source(),
        };
    }
    None
}

/// The authority (`host[:port]`) of an `http(s)://` URL.
pub fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest.split(['/', '?', '#']).next().unwrap_or(rest)
}
