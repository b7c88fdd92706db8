//! Deterministic, push-based tar writing.
//!
//! Entries are written with uid/gid 0, empty user and group names, a fixed mtime, and modes 0644
//! (files), 0755 (directories and executables) and 0777 (symlinks). Names over 100 bytes and link
//! targets over 100 bytes use GNU long-name entries; sizes over 8 GiB use GNU base-256 sizes. The
//! caller sorts and completes the entry list with [`plan`], then streams file contents in chunks of
//! any size: nothing is buffered beyond one 512-byte header.

use std::collections::BTreeSet;

use crate::error::Error;

const BLOCK: usize = 512;

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file of this size; `executable` chooses 0755 over 0644.
    File {
        /// Size in bytes.
        size: u64,
        /// Any execute bit set in the source.
        executable: bool,
    },
    /// A symbolic link to this target (kept as given).
    Symlink(String),
    /// A hard link to an earlier entry of the archive (its archive path).
    Hardlink(String),
}

/// One entry of a planned archive. `source` is the driver's own handle (a path, an index).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedEntry<S> {
    /// Path inside the archive, relative, `/`-separated, no trailing slash.
    pub path: String,
    /// Kind.
    pub kind: EntryKind,
    /// Where the driver gets the content from (`None` for directories added by the plan).
    pub source: Option<S>,
}

/// Normalises a path for the archive: strips leading `/` and `./`, refuses `..`, empty names and
/// NUL bytes.
pub fn archive_path(p: &str) -> Result<String, Error> {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(Error::Usage {
                    reason: format!("path {p:?} contains '..'"),
                })
            }
            c if c.contains('\0') => {
                return Err(Error::Usage {
                    reason: format!("path {p:?} contains a NUL byte"),
                })
            }
            c => out.push(c),
        }
    }
    if out.is_empty() {
        return Err(Error::Usage {
            reason: format!("path {p:?} names no file"),
        });
    }
    Ok(out.join("/"))
}

/// Sorts entries (component-wise, so a directory precedes its contents), adds a directory entry
/// for every missing parent, and refuses duplicates.
pub fn plan<S>(entries: Vec<PlannedEntry<S>>) -> Result<Vec<PlannedEntry<S>>, Error> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let path = archive_path(&e.path)?;
        if !seen.insert(path.clone()) {
            return Err(Error::Usage {
                reason: format!("two inputs would both be written to {path:?} in the layer"),
            });
        }
        out.push(PlannedEntry { path, ..e });
    }
    let mut parents = BTreeSet::new();
    for e in &out {
        let mut p = e.path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            if !seen.contains(parent) {
                parents.insert(parent.to_string());
            }
            p = parent;
        }
    }
    for p in parents {
        seen.insert(p.clone());
        out.push(PlannedEntry {
            path: p,
            kind: EntryKind::Dir,
            source: None,
        });
    }
    // a path that is both a file and a parent directory
    for e in &out {
        if !matches!(e.kind, EntryKind::Dir) {
            let prefix = format!("{}/", e.path);
            if let Some(child) = out.iter().find(|o| o.path.starts_with(&prefix)) {
                return Err(Error::Usage {
                    reason: format!(
                        "{:?} is not a directory but {:?} would be inside it",
                        e.path, child.path
                    ),
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.split('/').cmp(b.path.split('/')));
    Ok(out)
}

/// Push-based deterministic tar writer.
#[derive(Debug)]
pub struct TarWriter {
    mtime: u64,
    /// bytes still owed for the current file
    remaining: u64,
    /// padding after the current file
    pad: usize,
    current: Option<String>,
    finished: bool,
}

impl TarWriter {
    /// A writer whose entries carry `mtime` (e.g. `SOURCE_DATE_EPOCH`, default 0).
    pub fn new(mtime: u64) -> Self {
        TarWriter {
            mtime,
            remaining: 0,
            pad: 0,
            current: None,
            finished: false,
        }
    }

    fn check_idle(&self) -> Result<(), Error> {
        if let Some(c) = &self.current {
            return Err(Error::Tar {
                reason: format!("entry {c:?} still has {} bytes to come", self.remaining),
            });
        }
        if self.finished {
            return Err(Error::Internal {
                reason: "the tar archive was already finished".into(),
            });
        }
        Ok(())
    }

    /// Writes the header(s) of an entry. For files, follow with [`TarWriter::data`] for exactly
    /// `size` bytes, then [`TarWriter::end_file`].
    pub fn entry(
        &mut self,
        path: &str,
        kind: &EntryKind,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<(), Error> {
        self.check_idle()?;
        let path = archive_path(path)?;
        let (name, size, typeflag, mode, link) = match kind {
            EntryKind::Dir => (format!("{path}/"), 0, b'5', 0o755, ""),
            EntryKind::File { size, executable } => (
                path.clone(),
                *size,
                b'0',
                if *executable { 0o755 } else { 0o644 },
                "",
            ),
            EntryKind::Symlink(target) => {
                if target.is_empty() || target.contains('\0') {
                    return Err(Error::Tar {
                        reason: format!("symlink {path:?} has an invalid target"),
                    });
                }
                (path.clone(), 0, b'2', 0o777, target.as_str())
            }
            EntryKind::Hardlink(target) => {
                if target.is_empty() || target.contains('\0') {
                    return Err(Error::Tar {
                        reason: format!("hard link {path:?} has an invalid target"),
                    });
                }
                (path.clone(), 0, b'1', 0o644, target.as_str())
            }
        };
        if link.len() > 100 {
            long_entry(b'K', link, self.mtime, sink);
        }
        if name.len() > 100 {
            long_entry(b'L', &name, self.mtime, sink);
        }
        sink(&header(&name, mode, size, self.mtime, typeflag, link));
        if size > 0 {
            self.current = Some(path);
            self.remaining = size;
            self.pad = (BLOCK - (size % BLOCK as u64) as usize) % BLOCK;
        }
        Ok(())
    }

    /// File content, in chunks of any size.
    pub fn data(&mut self, chunk: &[u8], sink: &mut dyn FnMut(&[u8])) -> Result<(), Error> {
        self.advance(chunk.len() as u64, Some(chunk), sink)
    }

    /// Accounts for `n` bytes of file content that the caller places in the archive itself
    /// (see [`segments`]); only the padding after the file's last byte goes to `sink`.
    pub fn skip(&mut self, n: u64, sink: &mut dyn FnMut(&[u8])) -> Result<(), Error> {
        self.advance(n, None, sink)
    }

    fn advance(
        &mut self,
        n: u64,
        chunk: Option<&[u8]>,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<(), Error> {
        let Some(path) = &self.current else {
            return Err(Error::Internal {
                reason: "tar file data outside of a file entry".into(),
            });
        };
        if n > self.remaining {
            return Err(Error::Tar {
                reason: format!("{path:?} grew while it was being read (more bytes than its size)"),
            });
        }
        self.remaining -= n;
        if let Some(c) = chunk {
            sink(c);
        }
        if self.remaining == 0 {
            sink(&[0u8; BLOCK][..self.pad]);
            self.current = None;
        }
        Ok(())
    }

    /// Ends a file; errors if fewer bytes than announced were given.
    pub fn end_file(&mut self) -> Result<(), Error> {
        match &self.current {
            Some(p) => Err(Error::Tar {
                reason: format!(
                    "{p:?} shrank while it was being read ({} bytes missing)",
                    self.remaining
                ),
            }),
            None => Ok(()),
        }
    }

    /// Writes the end-of-archive marker (two zero blocks).
    pub fn finish(&mut self, sink: &mut dyn FnMut(&[u8])) -> Result<(), Error> {
        self.check_idle()?;
        sink(&[0u8; 2 * BLOCK]);
        self.finished = true;
        Ok(())
    }
}

/// One stretch of an uncompressed layer, as [`segments`] lays it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment<S> {
    /// Bytes made here: headers, padding, the end-of-archive marker.
    Bytes(Vec<u8>),
    /// The whole content of a file entry, `len` bytes, taken as they are from `source`.
    Content {
        /// The driver's handle for the file.
        source: S,
        /// Its size.
        len: u64,
    },
}

impl<S> Segment<S> {
    /// Bytes of the archive it stands for.
    pub fn len(&self) -> u64 {
        match self {
            Segment::Bytes(b) => b.len() as u64,
            Segment::Content { len, .. } => *len,
        }
    }

    /// No bytes (never the case for what [`segments`] gives).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Lays out the uncompressed tar of planned `entries` (see [`plan`]) without reading any file:
/// the archive is the concatenation of the segments, with each [`Segment::Content`] replaced by
/// that file's bytes. A driver that can send a file without copying it (a browser `Blob`
/// slice, `sendfile`) uploads the layer from this and hashes the same bytes on the side.
pub fn segments<S: Clone>(
    entries: &[PlannedEntry<S>],
    mtime: u64,
) -> Result<Vec<Segment<S>>, Error> {
    let mut out: Vec<Segment<S>> = Vec::new();
    let mut bytes: Vec<u8> = Vec::new();
    let mut tw = TarWriter::new(mtime);
    for e in entries {
        tw.entry(&e.path, &e.kind, &mut |b| bytes.extend_from_slice(b))?;
        if let EntryKind::File { size, .. } = e.kind {
            if size > 0 {
                let source = e.source.clone().ok_or_else(|| Error::Tar {
                    reason: format!("file {:?} has no source", e.path),
                })?;
                out.push(Segment::Bytes(core::mem::take(&mut bytes)));
                out.push(Segment::Content { source, len: size });
                tw.skip(size, &mut |b| bytes.extend_from_slice(b))?;
            }
        }
    }
    tw.finish(&mut |b| bytes.extend_from_slice(b))?;
    out.push(Segment::Bytes(bytes));
    out.retain(|s| !s.is_empty());
    Ok(out)
}

fn long_entry(kind: u8, name: &str, mtime: u64, sink: &mut dyn FnMut(&[u8])) {
    let len = name.len() + 1;
    sink(&header("././@LongLink", 0o644, len as u64, mtime, kind, ""));
    sink(name.as_bytes());
    let pad = (BLOCK - len % BLOCK) % BLOCK;
    sink(&[0u8; BLOCK][..pad + 1]);
}

/// Writes `value` as zero-padded octal in `field` (NUL-terminated), or, for numbers that do not
/// fit (sizes of 8 GiB and more), as GNU base-256: a 0x80 marker, then big-endian binary.
fn numeric(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    if digits >= 22 || value < 1u64 << (3 * digits) {
        let s = format!("{value:0digits$o}");
        field[..digits].copy_from_slice(s.as_bytes());
        field[digits] = 0;
    } else {
        field.fill(0);
        field[0] = 0x80;
        let b = value.to_be_bytes();
        let n = field.len();
        field[n - 8..].copy_from_slice(&b);
    }
}

/// One GNU tar header block. Names and link targets longer than 100 bytes are cut here; the
/// caller writes a GNU long-name entry before.
fn header(name: &str, mode: u32, size: u64, mtime: u64, typeflag: u8, link: &str) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    let nb = name.as_bytes();
    h[..nb.len().min(100)].copy_from_slice(&nb[..nb.len().min(100)]);
    numeric(&mut h[100..108], u64::from(mode));
    numeric(&mut h[108..116], 0); // uid
    numeric(&mut h[116..124], 0); // gid
    numeric(&mut h[124..136], size);
    numeric(&mut h[136..148], mtime);
    h[156] = typeflag;
    let lb = link.as_bytes();
    h[157..157 + lb.len().min(100)].copy_from_slice(&lb[..lb.len().min(100)]);
    h[257..263].copy_from_slice(b"ustar ");
    h[263..265].copy_from_slice(b" \0");
    // uname and gname stay empty
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let c = format!("{sum:06o}");
    h[148..154].copy_from_slice(c.as_bytes());
    h[154] = 0;
    h[155] = b' ';
    h
}

/// Checks that a 512-byte block is a tar header with a valid checksum (or an all-zero block).
pub fn looks_like_tar_header(block: &[u8]) -> bool {
    if block.len() < BLOCK {
        return false;
    }
    if block[..BLOCK].iter().all(|&b| b == 0) {
        return true;
    }
    let stored = &block[148..156];
    let s = core::str::from_utf8(stored).unwrap_or("");
    let s = s.trim_matches(|c: char| c == '\0' || c == ' ');
    let Ok(stored) = u32::from_str_radix(s, 8) else {
        return false;
    };
    let sum: u32 = block[..BLOCK]
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    sum == stored
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn e(path: &str, kind: EntryKind) -> PlannedEntry<u32> {
        PlannedEntry {
            path: path.into(),
            kind,
            source: Some(0),
        }
    }

    #[test]
    fn plan_adds_parents_and_sorts_componentwise() {
        let p = plan(vec![
            e(
                "src/weights/b.bin",
                EntryKind::File {
                    size: 1,
                    executable: false,
                },
            ),
            e(
                "/src/weights/a-b/x",
                EntryKind::File {
                    size: 1,
                    executable: false,
                },
            ),
            e("src/weights/a", EntryKind::Symlink("b.bin".into())),
        ])
        .unwrap();
        let paths: Vec<&str> = p.iter().map(|x| x.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "src",
                "src/weights",
                "src/weights/a",
                "src/weights/a-b",
                "src/weights/a-b/x",
                "src/weights/b.bin"
            ]
        );
        assert!(plan(vec![e("a/b", EntryKind::Dir), e("/a/b/", EntryKind::Dir)]).is_err());
        assert!(plan(vec![e("a/../b", EntryKind::Dir)]).is_err());
        assert!(plan(vec![
            e(
                "a",
                EntryKind::File {
                    size: 0,
                    executable: false
                }
            ),
            e("a/b", EntryKind::Dir)
        ])
        .is_err());
    }

    fn build(chunk: usize, size: usize, long: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut sink = |b: &[u8]| out.extend_from_slice(b);
        let mut w = TarWriter::new(946_684_800);
        let name = if long {
            format!("models/{}/w.bin", "d".repeat(120))
        } else {
            "models/w.bin".into()
        };
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        w.entry("models", &EntryKind::Dir, &mut sink).unwrap();
        w.entry(
            &name,
            &EntryKind::File {
                size: size as u64,
                executable: false,
            },
            &mut sink,
        )
        .unwrap();
        for c in data.chunks(chunk.max(1)) {
            w.data(c, &mut sink).unwrap();
        }
        w.end_file().unwrap();
        w.entry(
            "models/link",
            &EntryKind::Symlink(format!("{}/target", "t".repeat(150))),
            &mut sink,
        )
        .unwrap();
        w.finish(&mut sink).unwrap();
        out
    }

    #[test]
    fn output_is_identical_at_every_chunk_size_and_reads_back_with_the_tar_crate() {
        for long in [false, true] {
            let whole = build(usize::MAX, 10_000, long);
            for chunk in [1, 7, 4096] {
                assert_eq!(build(chunk, 10_000, long), whole);
            }
            assert_eq!(whole.len() % 512, 0);
            let mut ar = tar::Archive::new(&whole[..]);
            let mut names = Vec::new();
            for ent in ar.entries().unwrap() {
                let mut ent = ent.unwrap();
                let h = ent.header();
                assert_eq!(
                    (h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap()),
                    (0, 0, 946_684_800)
                );
                assert_eq!(h.username().unwrap(), Some(""));
                let path = ent.path().unwrap().to_string_lossy().into_owned();
                if path.ends_with("w.bin") {
                    let mut v = Vec::new();
                    std::io::Read::read_to_end(&mut ent, &mut v).unwrap();
                    assert_eq!(v.len(), 10_000);
                    assert_eq!(v[300], (300 % 251) as u8);
                    assert_eq!(ent.header().mode().unwrap(), 0o644);
                }
                if path.ends_with("link") {
                    assert!(ent
                        .link_name()
                        .unwrap()
                        .unwrap()
                        .to_string_lossy()
                        .ends_with("/target"));
                }
                names.push(path);
            }
            assert_eq!(names.len(), 3, "{names:?}");
            assert!(looks_like_tar_header(&whole[..512]));
        }
    }

    #[test]
    fn size_mismatches_are_errors() {
        let mut sink = |_: &[u8]| {};
        let mut w = TarWriter::new(0);
        w.entry(
            "a",
            &EntryKind::File {
                size: 3,
                executable: true,
            },
            &mut sink,
        )
        .unwrap();
        assert!(w
            .data(b"abcd", &mut sink)
            .unwrap_err()
            .to_string()
            .contains("grew"));
        w.data(b"ab", &mut sink).unwrap();
        assert!(w.end_file().unwrap_err().to_string().contains("shrank"));
        assert!(w.finish(&mut sink).is_err());
    }

    #[test]
    fn huge_file_header_uses_gnu_binary_size() {
        let mut out = Vec::new();
        let mut w = TarWriter::new(0);
        let size = 9u64 << 30;
        w.entry(
            "big",
            &EntryKind::File {
                size,
                executable: false,
            },
            &mut |b: &[u8]| out.extend_from_slice(b),
        )
        .unwrap();
        let h = tar::Header::from_byte_slice(&out[..512]);
        assert_eq!(h.size().unwrap(), size);
        assert!(looks_like_tar_header(&out));
    }
    #[test]
    fn segments_filled_with_the_files_are_the_streamed_archive() {
        let content = |i: usize, len: u64| -> Vec<u8> {
            (0..len).map(|j| (j as usize * 7 + i) as u8).collect()
        };
        let long = format!("models/{}/deep.bin", "d".repeat(120));
        let sizes = [
            (long.as_str(), 1000u64),
            ("models/a.bin", 512),
            ("models/empty", 0),
        ];
        let entries = plan(
            sizes
                .iter()
                .enumerate()
                .map(|(i, (p, size))| PlannedEntry {
                    path: (*p).into(),
                    kind: EntryKind::File {
                        size: *size,
                        executable: false,
                    },
                    source: Some(i),
                })
                .collect(),
        )
        .unwrap();
        // the archive written the ordinary way
        let mut streamed = Vec::new();
        let mut w = TarWriter::new(7);
        for e in &entries {
            let mut sink = |b: &[u8]| streamed.extend_from_slice(b);
            w.entry(&e.path, &e.kind, &mut sink).unwrap();
            if let (EntryKind::File { size, .. }, Some(i)) = (&e.kind, e.source) {
                if *size > 0 {
                    w.data(&content(i, *size), &mut sink).unwrap();
                }
            }
            w.end_file().unwrap();
        }
        w.finish(&mut |b: &[u8]| streamed.extend_from_slice(b))
            .unwrap();
        // the same from segments
        let segs = segments(&entries, 7).unwrap();
        let mut composed = Vec::new();
        let mut contents = 0;
        for s in &segs {
            match s {
                Segment::Bytes(b) => {
                    assert!(!b.is_empty());
                    composed.extend_from_slice(b)
                }
                Segment::Content { source, len } => {
                    contents += 1;
                    composed.extend_from_slice(&content(*source, *len))
                }
            }
        }
        assert_eq!(contents, 2, "empty files have no content segment");
        assert_eq!(composed, streamed);
    }

    #[test]
    fn misuse_is_an_internal_error() {
        // a driver's bug, not bad input: drivers tell it apart (the CLI exits 70)
        let mut tw = TarWriter::new(0);
        let mut sink = |_: &[u8]| {};
        let internal = |r: Result<(), Error>| matches!(r, Err(Error::Internal { .. }));
        assert!(internal(tw.data(b"x", &mut sink)), "data before any entry");
        tw.finish(&mut sink).unwrap();
        assert!(internal(tw.finish(&mut sink)), "finished twice");
        assert!(internal(tw.entry("a", &EntryKind::Dir, &mut sink)));
    }
}
