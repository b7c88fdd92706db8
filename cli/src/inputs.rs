//! Turns the files and directories on the command line into the entries of a layer.
//!
//! A file lands at `PATH/NAME`; a directory's contents (not the directory itself) land under
//! `PATH`, keeping relative paths. Symlinks inside a directory that point inside it are kept as
//! symlinks; ones that point outside (a Hugging Face cache snapshot links every file into
//! `../../blobs/`) are followed and stored as the file's content, so the image never holds a
//! dangling link.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use lamina_core::tar::{plan, EntryKind, PlannedEntry};

use crate::client::anyhow_like::Result;

/// Collects and plans the entries for `args` under `dest` (e.g. `/src/weights`).
pub fn collect(args: &[PathBuf], dest: &str) -> Result<Vec<PlannedEntry<PathBuf>>> {
    let mut out = Vec::new();
    for a in args {
        let meta = std::fs::metadata(a).map_err(|e| format!("{}: {e}", a.display()))?;
        if meta.is_dir() {
            let root = a
                .canonicalize()
                .map_err(|e| format!("{}: {e}", a.display()))?;
            let mut seen = HashSet::new();
            seen.insert(root.clone());
            walk(&root, a, &root, dest, &mut out, &mut seen)?;
        } else if meta.is_file() {
            let name = a
                .file_name()
                .ok_or_else(|| format!("{}: has no file name", a.display()))?
                .to_str()
                .ok_or_else(|| format!("{}: file name is not UTF-8", a.display()))?;
            out.push(file_entry(format!("{dest}/{name}"), &meta, a.clone()));
        } else {
            return Err(format!("{}: not a regular file or directory", a.display()).into());
        }
    }
    if out.is_empty() {
        return Err("no files to add (the directories given are empty)".into());
    }
    Ok(plan(out)?)
}

fn walk(
    root: &Path,
    dir: &Path,
    rel_root: &Path,
    dest: &str,
    out: &mut Vec<PlannedEntry<PathBuf>>,
    seen: &mut HashSet<PathBuf>,
) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .collect::<std::io::Result<_>>()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let name = e.file_name();
        let name = name
            .to_str()
            .ok_or_else(|| format!("{}: file name is not UTF-8", p.display()))?;
        let rel = rel_of(dir, rel_root, name);
        let archive = format!("{dest}/{rel}");
        let lmeta = std::fs::symlink_metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        let ft = lmeta.file_type();
        if ft.is_symlink() {
            let target = std::fs::read_link(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            let resolved = p.canonicalize().ok();
            match resolved {
                Some(r) if r.starts_with(root) && target.is_relative() => {
                    let t = target
                        .to_str()
                        .ok_or_else(|| format!("{}: link target is not UTF-8", p.display()))?;
                    out.push(PlannedEntry {
                        path: archive,
                        kind: EntryKind::Symlink(t.to_string()),
                        source: None,
                    });
                }
                Some(r) => {
                    // points outside the tree (or is absolute): store what it points to
                    let m = std::fs::metadata(&r).map_err(|e| format!("{}: {e}", r.display()))?;
                    if m.is_dir() {
                        if !seen.insert(r.clone()) {
                            return Err(format!("{}: symlink loop", p.display()).into());
                        }
                        out.push(PlannedEntry {
                            path: archive.clone(),
                            kind: EntryKind::Dir,
                            source: None,
                        });
                        walk_into(root, &r, &archive, out, seen)?;
                    } else if m.is_file() {
                        out.push(file_entry(archive, &m, r));
                    } else {
                        return Err(format!(
                            "{}: links to something that is not a file or directory",
                            p.display()
                        )
                        .into());
                    }
                }
                None => {
                    eprintln!(
                        "warning: {} is a dangling symlink; kept as a symlink",
                        p.display()
                    );
                    let t = target
                        .to_str()
                        .ok_or_else(|| format!("{}: link target is not UTF-8", p.display()))?;
                    out.push(PlannedEntry {
                        path: archive,
                        kind: EntryKind::Symlink(t.to_string()),
                        source: None,
                    });
                }
            }
        } else if ft.is_dir() {
            out.push(PlannedEntry {
                path: archive,
                kind: EntryKind::Dir,
                source: None,
            });
            walk(root, &p, rel_root, dest, out, seen)?;
        } else if ft.is_file() {
            out.push(file_entry(archive, &lmeta, p));
        } else {
            return Err(format!(
                "{}: unsupported file type (device, socket or pipe)",
                p.display()
            )
            .into());
        }
    }
    Ok(())
}

/// A regular file's entry: its size, and 0755 if any execute bit is set.
pub fn file_entry(path: String, m: &std::fs::Metadata, source: PathBuf) -> PlannedEntry<PathBuf> {
    PlannedEntry {
        path,
        kind: EntryKind::File {
            size: m.len(),
            executable: m.permissions().mode() & 0o111 != 0,
        },
        source: Some(source),
    }
}

/// Walks a directory reached through a symlink, placing its contents under `archive`.
fn walk_into(
    root: &Path,
    dir: &Path,
    archive: &str,
    out: &mut Vec<PlannedEntry<PathBuf>>,
    seen: &mut HashSet<PathBuf>,
) -> Result<()> {
    walk(root, dir, dir, archive, out, seen)
}

fn rel_of(dir: &Path, rel_root: &Path, name: &str) -> String {
    let rel_dir = dir.strip_prefix(rel_root).unwrap_or(Path::new(""));
    let mut s = rel_dir.to_string_lossy().into_owned();
    if !s.is_empty() {
        s.push('/');
    }
    s.push_str(name);
    s
}

/// Reads a sample of the files (start of each, up to 1 MiB in all) for `--compression auto`.
pub fn sample(entries: &[PlannedEntry<PathBuf>]) -> Vec<u8> {
    use std::io::Read as _;
    let mut out = Vec::new();
    let files: Vec<_> = entries.iter().filter_map(|e| e.source.as_ref()).collect();
    if files.is_empty() {
        return out;
    }
    let per = ((1 << 20) / files.len()).clamp(4096, 256 << 10);
    for f in files {
        if out.len() >= 1 << 20 {
            break;
        }
        if let Ok(fh) = std::fs::File::open(f) {
            let _ = fh.take(per as u64).read_to_end(&mut out);
        }
    }
    out
}

/// Size of the uncompressed tar for these entries (for progress).
pub fn tar_size(entries: &[PlannedEntry<PathBuf>]) -> u64 {
    let mut n = 1024u64;
    for e in entries {
        let name_len = e.path.len() + usize::from(matches!(e.kind, EntryKind::Dir));
        if name_len > 100 {
            n += 512 + (name_len as u64 + 1).div_ceil(512) * 512;
        }
        n += 512;
        match &e.kind {
            EntryKind::File { size, .. } => n += size.div_ceil(512) * 512,
            EntryKind::Symlink(t) if t.len() > 100 => {
                n += 512 + (t.len() as u64 + 1).div_ceil(512) * 512
            }
            _ => {}
        }
    }
    n
}
