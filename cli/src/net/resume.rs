//! Upload state kept across runs: a blob upload that a killed or failed run left open is found
//! again when the same command runs again, and continues in the same upload session from the
//! registry's offset instead of sending the blob again.
//!
//! One small JSON file per upload in `$LAMINA_CACHE_DIR/uploads/` (default
//! `$XDG_CACHE_HOME/lamina/uploads/`, else `~/.cache/lamina/uploads/`), named by a hash of the
//! registry, the repository and what the blob is made from (the input files' names, sizes and
//! modification times and the layer options; a source blob's digest). It holds the upload's
//! `Location` and the bytes the registry confirmed, is written (atomically, mode 0600) after each
//! confirmed chunk, and removed when the blob is stored. A changed input gets another name, and
//! the registry checks the digest of the whole blob when it is closed, so a stale file can never
//! make a wrong blob.

use std::path::PathBuf;

use lamina_core::Digest;

/// What a saved upload holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Saved {
    /// Registry host.
    pub registry: String,
    /// Repository.
    pub repository: String,
    /// The upload session's URL.
    pub location: String,
    /// Bytes the registry confirmed.
    pub confirmed: u64,
}

/// The state file of one upload.
#[derive(Debug, Clone)]
pub struct ResumeFile {
    path: PathBuf,
    registry: String,
    repository: String,
    last: Option<(String, u64)>,
}

/// The directory for upload state, if one can be found.
pub fn dir() -> Option<PathBuf> {
    Some(cache_dir()?.join("uploads"))
}

/// lamina's cache directory: `$LAMINA_CACHE_DIR`, else `$XDG_CACHE_HOME/lamina`, else
/// `~/.cache/lamina`.
pub fn cache_dir() -> Option<PathBuf> {
    let base = if let Some(d) = std::env::var_os("LAMINA_CACHE_DIR").filter(|d| !d.is_empty()) {
        PathBuf::from(d)
    } else if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        PathBuf::from(d).join("lamina")
    } else {
        PathBuf::from(std::env::var_os("HOME").filter(|d| !d.is_empty())?)
            .join(".cache")
            .join("lamina")
    };
    Some(base)
}

impl ResumeFile {
    /// The state file for an upload into `registry/repository` of a blob made from `identity`.
    pub fn new(registry: &str, repository: &str, identity: &str) -> Option<Self> {
        let d = Digest::of(format!("{registry}\n{repository}\n{identity}").as_bytes());
        let name = format!("{}.json", &d.hex()[..32]);
        Some(ResumeFile {
            path: dir()?.join(name),
            registry: registry.to_string(),
            repository: repository.to_string(),
            last: None,
        })
    }

    /// The saved upload, if one exists for this registry and repository.
    pub fn load(&self) -> Option<Saved> {
        let raw = std::fs::read(&self.path).ok()?;
        let s: Saved = serde_json::from_slice(&raw).ok()?;
        (s.registry == self.registry && s.repository == self.repository).then_some(s)
    }

    /// Records where the upload stands (only when it changed). Failing to write is not an
    /// error: the upload goes on, it just cannot be resumed by a later run.
    pub fn save(&mut self, location: &str, confirmed: u64) {
        if self
            .last
            .as_ref()
            .is_some_and(|(l, c)| l == location && *c == confirmed)
        {
            return;
        }
        self.last = Some((location.to_string(), confirmed));
        let s = Saved {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            location: location.to_string(),
            confirmed,
        };
        let Ok(bytes) = serde_json::to_vec_pretty(&s) else {
            return;
        };
        if let Some(parent) = self.path.parent() {
            if std::fs::create_dir_all(parent).is_err() {
                return;
            }
        }
        let tmp = self
            .path
            .with_extension(format!("tmp{}", std::process::id()));
        let written = {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .and_then(|mut f| f.write_all(&bytes))
        };
        if written.is_err() || std::fs::rename(&tmp, &self.path).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }

    /// Forgets the upload (it finished, or its session cannot be used again).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_loads_and_removes_and_names_differ_by_input() {
        let d = std::env::temp_dir().join(format!("lamina-resume-{}", std::process::id()));
        std::env::set_var("LAMINA_CACHE_DIR", &d);
        let mut f = ResumeFile::new("r.example", "a/b", "files x 10").expect("dir");
        let g = ResumeFile::new("r.example", "a/b", "files x 11").expect("dir");
        assert_ne!(f.path, g.path);
        assert_eq!(f.load(), None);
        f.save("http://r.example/v2/a/b/blobs/uploads/u?_state=s", 1024);
        let s = f.load().expect("saved");
        assert_eq!(s.confirmed, 1024);
        assert_eq!(g.load(), None);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&f.path)
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        f.remove();
        assert_eq!(f.load(), None);
        let _ = std::fs::remove_dir_all(&d);
    }
}
