//! What a file made last time: the digest and size of the blob `lamina pack` built from a file,
//! kept across runs so that packing the same folder again hashes and sends only the files that
//! changed (a 100 GB model whose README changed costs one small upload, not 100 GB read again).
//!
//! One small JSON file per blob-making in `$LAMINA_CACHE_DIR/digests/` (see
//! [`cache_dir`](crate::net::resume::cache_dir)), named by a hash of what the blob is made from
//! (the packing and its options, the path in the artifact, the source file's canonical path). It
//! holds the file's identity as `stat` gives it (device, inode, size, modification and change
//! times in nanoseconds) and the blob's digest and size. A record is used only when every one of
//! those is the same, as git's index does; a file changed in the same instant its record was
//! written cannot be told from an unchanged one, so no record is written for a file modified in
//! the last [`SETTLE`] (git's "racily clean" rule).
//!
//! A record is a hint, never trusted alone: the blob is used only when the destination says it
//! holds that digest at that size, and a file whose record is wrong would have to keep its
//! inode, size and both times through the change. The registry checks digests of what is sent,
//! so a wrong record can at worst name a blob the destination has, never make a wrong blob.
//! Written here (not a crate) because it is a few stat fields and a file per record, the same
//! shape as the upload state beside it.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use lamina_core::Digest;

/// How long after its last change a file's digest is recorded.
pub const SETTLE: Duration = Duration::from_secs(2);

/// A file as `stat` names it: a change to the file changes one of these.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stat {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stat {
    /// The file's identity now (following links, as the file is read).
    pub fn of(path: &Path) -> Option<Stat> {
        use std::os::unix::fs::MetadataExt as _;
        let m = std::fs::metadata(path).ok()?;
        Some(Stat {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
        })
    }

    /// Whether the file changed within [`SETTLE`] of `now` (or after it: a clock set back).
    fn unsettled(&self, now: SystemTime) -> bool {
        let now = match now.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(_) => return true,
        };
        let last = self.mtime_ns.max(self.ctime_ns);
        now - last < SETTLE.as_nanos() as i128
    }
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Record {
    what: String,
    stat: Stat,
    digest: String,
    size: u64,
}

/// The record of one blob-making: `what` says what the blob is made from.
#[derive(Debug, Clone)]
pub struct Known {
    path: PathBuf,
    what: String,
}

impl Known {
    /// The record for a blob made from the file at `source` as `what` says (packing, options,
    /// path in the artifact); `None` when there is no cache directory.
    pub fn new(source: &Path, what: &str) -> Option<Known> {
        Self::in_dir(
            &crate::net::resume::cache_dir()?.join("digests"),
            source,
            what,
        )
    }

    fn in_dir(dir: &Path, source: &Path, what: &str) -> Option<Known> {
        let canon = source.canonicalize().ok()?;
        let what = format!("{what}\n{}", canon.display());
        let name = format!("{}.json", &Digest::of(what.as_bytes()).hex()[..32]);
        Some(Known {
            path: dir.join(name),
            what,
        })
    }

    /// The digest and size recorded for the file as it is now, if any.
    pub fn get(&self, now: &Stat) -> Option<(Digest, u64)> {
        let b = std::fs::read(&self.path).ok()?;
        let r: Record = serde_json::from_slice(&b).ok()?;
        if r.what != self.what || &r.stat != now || r.size < now.size {
            return None;
        }
        Some((Digest::parse(&r.digest).ok()?, r.size))
    }

    /// Records what the file `stat` (taken before it was read) made, unless it changed too
    /// recently to tell, or changed while it was read (`after`, taken when it was read).
    /// Failing to write is no error: the next run hashes again.
    pub fn put(&self, stat: &Stat, after: Option<&Stat>, digest: &Digest, size: u64) {
        if after != Some(stat) || stat.unsettled(SystemTime::now()) {
            return;
        }
        let r = Record {
            what: self.what.clone(),
            stat: stat.clone(),
            digest: digest.to_string(),
            size,
        };
        let Ok(bytes) = serde_json::to_vec(&r) else {
            return;
        };
        if let Some(d) = self.path.parent() {
            if std::fs::create_dir_all(d).is_err() {
                return;
            }
        }
        let tmp = self
            .path
            .with_extension(format!("tmp-{}", std::process::id()));
        if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, &self.path).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `st` as if the file had last changed a minute ago.
    fn aged(st: &Stat) -> Stat {
        let mut old = st.clone();
        old.mtime_ns -= 60 * 1_000_000_000;
        old.ctime_ns -= 60 * 1_000_000_000;
        old
    }

    #[test]
    fn a_record_is_used_only_for_the_same_file_unchanged() {
        let t = tempfile::tempdir().unwrap();
        let (dir, f) = (t.path().join("digests"), t.path().join("model.safetensors"));
        std::fs::write(&f, b"weights").unwrap();
        let st = aged(&Stat::of(&f).unwrap());
        let k = Known::in_dir(&dir, &f, "pack raw model.safetensors").unwrap();
        let d = Digest::of(b"weights");
        assert_eq!(k.get(&st), None, "nothing recorded yet");
        k.put(&st, Some(&st), &d, 7);
        assert_eq!(k.get(&st), Some((d.clone(), 7)));
        // the same file named through a link is the same record
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        let via = Known::in_dir(&dir, &link, "pack raw model.safetensors").unwrap();
        assert_eq!(via.get(&st), Some((d.clone(), 7)));
        // another packing of the same file is another record
        let other = Known::in_dir(&dir, &f, "pack tar model.safetensors").unwrap();
        assert_eq!(other.get(&st), None);
        // the file changed: each field of its stat on its own
        for change in 0..5 {
            let mut c = st.clone();
            match change {
                0 => c.dev += 1,
                1 => c.ino += 1,
                2 => c.size += 1,
                3 => c.mtime_ns += 1,
                _ => c.ctime_ns += 1,
            }
            assert_eq!(k.get(&c), None, "change {change}");
        }
        // a record that is not JSON is no record
        std::fs::write(&k.path, b"{").unwrap();
        assert_eq!(k.get(&st), None);
    }

    #[test]
    fn a_file_changed_just_now_or_while_read_is_not_recorded() {
        let t = tempfile::tempdir().unwrap();
        let (dir, f) = (t.path().join("digests"), t.path().join("w.bin"));
        std::fs::write(&f, b"abc").unwrap();
        let now = Stat::of(&f).unwrap();
        let k = Known::in_dir(&dir, &f, "pack raw w.bin").unwrap();
        k.put(&now, Some(&now), &Digest::of(b"abc"), 3);
        assert_eq!(k.get(&now), None, "modified within SETTLE: racily clean");
        let mut moved = now.clone();
        moved.size = 4;
        let old = aged(&now);
        k.put(&old, Some(&moved), &Digest::of(b"abc"), 3);
        assert_eq!(k.get(&old), None, "changed while it was read");
        k.put(&old, Some(&old), &Digest::of(b"abc"), 3);
        assert_eq!(k.get(&old), Some((Digest::of(b"abc"), 3)));
    }
}
