//! Turns the files and directories on the command line into the entries of a layer.
//!
//! A file lands at `PATH/NAME`; a directory's contents (not the directory itself) land under
//! `PATH`, keeping relative paths. Symlinks inside a directory that point inside it are kept as
//! symlinks; ones that point outside (a Hugging Face cache snapshot links every file into
//! `../../blobs/`) are followed and stored as the file's content, so the image never holds a
//! dangling link.
//!
//! One way of naming paths throughout: a walk carries two things side by side, the directory on
//! disk it reads (`read_dir` joined with each name, never re-derived) and the entry's path
//! relative to the input's root in the layer (built from names, never by stripping a prefix off
//! a disk path). Whether the user typed `./weights/`, `weights`, `.`, `../x`, an absolute path
//! or a path through a symlink changes only where the walk starts reading, never the layer.
//! (Regression: the relative path was once found by stripping the canonical root off the path
//! as typed; `strip_prefix` failed for every spelling but an absolute canonical one, an
//! `unwrap_or("")` hid it, and every nested file landed at the top of the layer.)

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use lamina_core::tar::{plan, EntryKind, PlannedEntry};
use lamina_core::untar::resolve_link;

use crate::error::Result;

/// Collects and plans the entries for `args` under `dest` (e.g. `/src/weights`). Every file is
/// opened once here, so an unreadable input fails before any network work.
pub fn collect(args: &[PathBuf], dest: &str) -> Result<Vec<PlannedEntry<PathBuf>>> {
    let mut out = Vec::new();
    for a in args {
        let meta = std::fs::metadata(a).map_err(|e| format!("{}: {e}", a.display()))?;
        if meta.is_dir() {
            let root = a
                .canonicalize()
                .map_err(|e| format!("{}: {e}", a.display()))?;
            let mut w = Walk {
                root: root.clone(),
                dest,
                out: &mut out,
                stack: vec![root.clone()],
                followed: 0,
            };
            w.dir(&root, "")?;
        } else if meta.is_file() {
            let name = a
                .file_name()
                .ok_or_else(|| format!("{}: has no file name", a.display()))?
                .to_str()
                .ok_or_else(|| format!("{}: file name is not UTF-8", a.display()))?;
            check_readable(a)?;
            out.push(file_entry(join(dest, name), &meta, a.clone()));
        } else {
            return Err(format!("{}: not a regular file or directory", a.display()).into());
        }
    }
    if out.is_empty() {
        return Err("no files to add (the directories given are empty)".into());
    }
    Ok(plan(out)?)
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn check_readable(p: &Path) -> Result<()> {
    std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(())
}

/// One input directory being walked.
struct Walk<'a> {
    /// The input directory, canonical: symlinks resolving under it are kept as links.
    root: PathBuf,
    /// Where the input's contents land in the layer.
    dest: &'a str,
    out: &'a mut Vec<PlannedEntry<PathBuf>>,
    /// Canonical directories being walked, outermost first (a followed link into one of them
    /// is a loop).
    stack: Vec<PathBuf>,
    /// How many followed directory links the walk is inside (their contents are not under
    /// `root` on disk, so relative links in them are never kept as links).
    followed: usize,
}

impl Walk<'_> {
    /// Walks `disk` (a directory to read) whose contents are at `rel` (relative to the input's
    /// root; empty for the root itself).
    fn dir(&mut self, disk: &Path, rel: &str) -> Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(disk)
            .map_err(|e| format!("{}: {e}", disk.display()))?
            .collect::<std::io::Result<_>>()
            .map_err(|e| format!("{}: {e}", disk.display()))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name();
            let p = disk.join(&name);
            let name = name
                .to_str()
                .ok_or_else(|| format!("{}: file name is not UTF-8", p.display()))?;
            let rel = join(rel, name);
            let archive = join(self.dest, &rel);
            let lmeta =
                std::fs::symlink_metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            let ft = lmeta.file_type();
            if ft.is_symlink() {
                self.symlink(&p, &rel, archive)?;
            } else if ft.is_dir() {
                self.out.push(dir_entry(archive));
                self.dir(&p, &rel)?;
            } else if ft.is_file() {
                check_readable(&p)?;
                self.out.push(file_entry(archive, &lmeta, p));
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

    fn symlink(&mut self, p: &Path, rel: &str, archive: String) -> Result<()> {
        let target = std::fs::read_link(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let resolved = match p.canonicalize() {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                crate::ui::progress::warn(&format!(
                    "warning: {} is a dangling symlink; kept as a symlink",
                    p.display()
                ));
                let t = target
                    .to_str()
                    .ok_or_else(|| format!("{}: link target is not UTF-8", p.display()))?;
                self.out.push(PlannedEntry {
                    path: archive,
                    kind: EntryKind::Symlink(t.to_string()),
                    source: None,
                });
                return Ok(());
            }
            Err(e) => return Err(format!("{}: {e}", p.display()).into()),
        };
        if let Some(t) = self.kept_link(&target, rel, &resolved) {
            self.out.push(PlannedEntry {
                path: archive,
                kind: EntryKind::Symlink(t),
                source: None,
            });
            return Ok(());
        }
        // points outside the tree (or is absolute): store what it points to, under the
        // link's own name
        let m = std::fs::metadata(&resolved).map_err(|e| format!("{}: {e}", resolved.display()))?;
        if m.is_dir() {
            if self.stack.contains(&resolved) {
                return Err(format!(
                    "{}: symlink loop (it links to {}, which contains it)",
                    p.display(),
                    resolved.display()
                )
                .into());
            }
            self.out.push(dir_entry(archive));
            self.stack.push(resolved.clone());
            self.followed += 1;
            let r = self.dir(&resolved, rel);
            self.followed -= 1;
            self.stack.pop();
            r
        } else if m.is_file() {
            check_readable(&resolved)?;
            self.out.push(file_entry(archive, &m, resolved));
            Ok(())
        } else {
            Err(format!(
                "{}: links to something that is not a file or directory",
                p.display()
            )
            .into())
        }
    }

    /// The link's target when it can stay a link: relative, found in the layer where it is
    /// found on disk (its lexical resolution from `rel` stays inside the input and names the
    /// same file as the link does on disk), and not inside a followed directory.
    fn kept_link(&self, target: &Path, rel: &str, resolved: &Path) -> Option<String> {
        if self.followed > 0 || !target.is_relative() || !resolved.starts_with(&self.root) {
            return None;
        }
        let t = target.to_str()?;
        let in_layer = resolve_link(rel, t)?;
        let there = if in_layer.is_empty() {
            self.root.clone()
        } else {
            self.root.join(&in_layer)
        };
        (there.canonicalize().ok()? == resolved).then(|| t.to_string())
    }
}

fn dir_entry(path: String) -> PlannedEntry<PathBuf> {
    PlannedEntry {
        path,
        kind: EntryKind::Dir,
        source: None,
    }
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

/// Decides `--compression auto` for these entries: the largest files that are not weights are
/// sampled from their start and each file weighs by its size (see
/// [`lamina_core::layer::choose_auto_files`]).
pub fn choose_auto(entries: &[PlannedEntry<PathBuf>]) -> Result<lamina_core::layer::AutoChoice> {
    use lamina_core::layer::{auto_sample_plan, choose_auto_files, AutoFile};
    use std::io::Read as _;
    let files: Vec<(&str, u64, &PathBuf)> = entries
        .iter()
        .filter_map(|e| match (&e.kind, &e.source) {
            (EntryKind::File { size, .. }, Some(src)) => Some((e.path.as_str(), *size, src)),
            _ => None,
        })
        .collect();
    let sizes: Vec<(&str, u64)> = files.iter().map(|f| (f.0, f.1)).collect();
    let mut samples: Vec<Vec<u8>> = vec![Vec::new(); files.len()];
    for (i, n) in auto_sample_plan(&sizes) {
        let src = files[i].2;
        let fh = std::fs::File::open(src).map_err(|e| format!("{}: {e}", src.display()))?;
        fh.take(n)
            .read_to_end(&mut samples[i])
            .map_err(|e| format!("{}: {e}", src.display()))?;
    }
    let auto: Vec<AutoFile<'_>> = files
        .iter()
        .zip(&samples)
        .map(|(f, s)| AutoFile {
            path: f.0,
            size: f.1,
            sample: s,
        })
        .collect();
    Ok(choose_auto_files(&auto))
}

/// Decides `--compression auto` for a plain tar file the same way, from its entries: headers
/// are walked (seeking past the content), then the largest entries that are not weights are
/// sampled where their content starts. A compressed tar is passed through whatever this says.
pub fn choose_auto_tar(path: &Path) -> Result<lamina_core::layer::AutoChoice> {
    use lamina_core::layer::{auto_sample_plan, choose_auto_files, AutoFile};
    use lamina_core::untar::{Event, TarReader};
    use std::io::{Read as _, Seek as _, SeekFrom};
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut f = std::fs::File::open(path).map_err(err)?;
    let len = f.metadata().map_err(err)?.len();
    // (path, size, offset of the content)
    let mut found: Vec<(String, u64, u64)> = Vec::new();
    let mut r = TarReader::new();
    let mut block = [0u8; 512];
    let mut pos = 0u64;
    const MAX_ENTRIES: usize = 100_000;
    while pos < len && found.len() < MAX_ENTRIES {
        let n = f.read(&mut block).map_err(err)?;
        if n == 0 {
            break;
        }
        let mut entry = None;
        let fed = r.write(&block[..n], &mut |e| {
            if let Event::Entry(h) = e {
                if h.size > 0 {
                    entry = Some((h.path.clone(), h.size));
                }
            }
            Ok(())
        });
        if fed.is_err() {
            // not a plain tar (compressed, or corrupt): the layer builder says what is wrong
            break;
        }
        pos += n as u64;
        if let Some((p, s)) = entry {
            // the first bytes of the content came with the header block (none: blocks align)
            found.push((p, s, pos));
        }
        let skip = r.skip_data(&mut |_| Ok(())).unwrap_or(0);
        if skip > 0 {
            pos += skip;
            f.seek(SeekFrom::Start(pos)).map_err(err)?;
        }
    }
    let sizes: Vec<(&str, u64)> = found.iter().map(|(p, s, _)| (p.as_str(), *s)).collect();
    let mut samples: Vec<Vec<u8>> = vec![Vec::new(); found.len()];
    for (i, n) in auto_sample_plan(&sizes) {
        f.seek(SeekFrom::Start(found[i].2)).map_err(err)?;
        (&mut f).take(n).read_to_end(&mut samples[i]).map_err(err)?;
    }
    let auto: Vec<AutoFile<'_>> = found
        .iter()
        .zip(&samples)
        .map(|((p, s, _), sample)| AutoFile {
            path: p,
            size: *s,
            sample,
        })
        .collect();
    Ok(choose_auto_files(&auto))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn paths(e: &[PlannedEntry<PathBuf>]) -> Vec<String> {
        e.iter()
            .map(|e| match &e.kind {
                EntryKind::Symlink(t) => format!("{} -> {t}", e.path),
                EntryKind::Dir => format!("{}/", e.path),
                _ => e.path.clone(),
            })
            .collect()
    }

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let w = t.path().join("weights");
        std::fs::create_dir_all(w.join("sub/deeper")).unwrap();
        std::fs::create_dir_all(w.join("unet")).unwrap();
        std::fs::create_dir_all(w.join("vae")).unwrap();
        std::fs::write(w.join("top.txt"), "t").unwrap();
        std::fs::write(w.join("sub/deeper/notes.txt"), "n").unwrap();
        std::fs::write(w.join("unet/config.json"), "{}").unwrap();
        std::fs::write(w.join("vae/config.json"), "{}").unwrap();
        symlink("unet/config.json", w.join("link.json")).unwrap();
        t
    }

    const WANT: &[&str] = &[
        "src/",
        "src/weights/",
        "src/weights/link.json -> unet/config.json",
        "src/weights/sub/",
        "src/weights/sub/deeper/",
        "src/weights/sub/deeper/notes.txt",
        "src/weights/top.txt",
        "src/weights/unet/",
        "src/weights/unet/config.json",
        "src/weights/vae/",
        "src/weights/vae/config.json",
    ];

    /// Regression: a nested folder given as `./weights/` (or any spelling but an absolute
    /// canonical path) was flattened: `sub/deeper/notes.txt` landed at `src/weights/notes.txt`.
    #[test]
    fn nested_folder_keeps_its_tree_for_every_spelling() {
        let t = tree();
        let base = t.path().canonicalize().unwrap();
        symlink(base.join("weights"), base.join("alias")).unwrap();
        symlink(&base, base.join("parent-link")).unwrap();
        for given in [
            base.join("weights"),
            base.join("weights/"),
            base.join("./weights/"),
            base.join("weights/sub/.."),
            base.join("alias"),
            base.join("alias/"),
            base.join("parent-link/weights"),
        ] {
            let e = collect(std::slice::from_ref(&given), "/src/weights").unwrap();
            assert_eq!(paths(&e), WANT, "{}", given.display());
        }
    }

    #[test]
    fn links_out_of_the_tree_are_followed_under_their_own_name() {
        let t = tempfile::tempdir().unwrap();
        let b = t.path().canonicalize().unwrap();
        std::fs::create_dir_all(b.join("blobs")).unwrap();
        std::fs::create_dir_all(b.join("snap/sub")).unwrap();
        std::fs::write(b.join("blobs/abc"), "weights").unwrap();
        std::fs::create_dir_all(b.join("outside/d")).unwrap();
        std::fs::write(b.join("outside/d/f"), "f").unwrap();
        // a relative link inside a followed directory that resolves back into the tree: on
        // disk and in the layer it would name different files, so it is followed too
        symlink("../../snap/sub/x", b.join("outside/d/back")).unwrap();
        std::fs::write(b.join("snap/sub/x"), "x").unwrap();
        symlink("../../blobs/abc", b.join("snap/sub/model.safetensors")).unwrap();
        symlink("../outside/d", b.join("snap/dir")).unwrap();
        symlink("dir", b.join("snap/dir-again")).unwrap();
        let e = collect(&[b.join("snap")], "m").unwrap();
        assert_eq!(
            paths(&e),
            [
                "m/",
                "m/dir/",
                "m/dir/back",
                "m/dir/f",
                "m/dir-again/",
                "m/dir-again/back",
                "m/dir-again/f",
                "m/sub/",
                "m/sub/model.safetensors",
                "m/sub/x",
            ]
        );
        let src = |p: &str| e.iter().find(|e| e.path == p).unwrap().source.clone();
        assert_eq!(src("m/sub/model.safetensors"), Some(b.join("blobs/abc")));
        assert_eq!(src("m/dir/back"), Some(b.join("snap/sub/x")));
    }

    #[test]
    fn a_link_to_an_enclosing_directory_is_a_loop() {
        let t = tempfile::tempdir().unwrap();
        let b = t.path().canonicalize().unwrap();
        std::fs::create_dir_all(b.join("a/b")).unwrap();
        symlink(&b, b.join("a/b/up")).unwrap();
        let err = collect(&[b.join("a")], "x").unwrap_err().to_string();
        assert!(err.contains("symlink loop"), "{err}");
    }

    #[test]
    fn an_unreadable_file_fails_while_collecting() {
        if is_root() {
            return; // root reads anything; the CLI test covers it with a dangling input
        }
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("f"), "x").unwrap();
        std::fs::set_permissions(t.path().join("f"), std::fs::Permissions::from_mode(0o000))
            .unwrap();
        let err = collect(&[t.path().to_path_buf()], "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("Permission denied"), "{err}");
    }

    fn is_root() -> bool {
        std::fs::read_to_string("/proc/self/status")
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
            })
            .unwrap_or(false)
    }
}
