//! `lamina extract`: the files of an image's weights layers (or any sub-tree, or the whole
//! flattened filesystem), streamed from the registry: download, verify, decompress and untar in
//! one pass, with whiteouts applied so later layers win.
//!
//! Nothing is ever written outside the output: entries that climb out (`..`), symlinks and hard
//! links that point out, and device files are skipped with a warning, and no file is written
//! through a symlink. Output goes to a temporary name next to the destination and is renamed
//! at the end; on any error it is removed, so a complete-looking output is a complete one.

use std::collections::HashSet;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::store::Loc;
use lamina_core::compress::{self, Compression};
use lamina_core::digest::Hasher;
use lamina_core::image::{weights_layers, Descriptor};
use lamina_core::media;
use lamina_core::untar::{resolve_link, safe_path, Event, Kind, TarReader};
use lamina_core::Error;

use crate::blobs::read_verified;
use crate::client::anyhow_like::Result;
use crate::client::Client;
use crate::progress::{human, Progress};
use crate::resolve::{self, PlatformSel};

/// What to extract.
#[derive(Debug)]
pub struct Args {
    /// Image.
    pub image: Loc,
    /// `-o`: a directory (existing or with a trailing slash) or a tar file; stdout if absent.
    pub output: Option<String>,
    /// Sub-tree to extract (default `src/weights`).
    pub path: Option<String>,
    /// The whole flattened filesystem.
    pub all: bool,
    /// Platform of an index.
    pub platform: Option<String>,
    /// Print a JSON summary (stderr when the tar goes to stdout).
    pub json: bool,
    /// No progress.
    pub quiet: bool,
}

/// Runs `extract`.
pub fn run(client: &mut Client, a: Args) -> Result<()> {
    let sel = PlatformSel::parse(a.platform.as_deref())?;
    if matches!(sel, PlatformSel::All) {
        return Err(Box::new(Error::Usage {
            reason: "extract takes one platform (--platform os/arch)".into(),
        }));
    }
    let img = resolve::fetch_one(client, &a.image, &sel)?;
    let config = resolve::config(client, &a.image, &img.manifest)?;
    if img.index_pos.is_none() {
        resolve::check_platform(&a.image, a.platform.as_deref(), &config)?;
    }
    let (layers, diff_ids): (Vec<_>, Vec<_>) =
        resolve::layers_with_diff_ids(&a.image, &img.manifest, &config)?
            .into_iter()
            .unzip();
    // a modelcar (olot's, or lamina's append / affix --modelcar) keeps its files under /models
    let modelcar = img
        .manifest
        .annotations()
        .iter()
        .any(|(k, _)| k == lamina_core::modelcar::ANN_MODELCARD)
        || img.manifest.layers()?.iter().any(|l| {
            l.annotations
                .iter()
                .any(|(k, _)| k == lamina_core::modelcar::ANN_IN_LAYER_PATH)
        });
    let default_path = if modelcar { "models" } else { "src/weights" };
    let prefix = if a.all {
        a.path.as_deref().and_then(safe_path)
    } else {
        Some(
            safe_path(a.path.as_deref().unwrap_or(default_path))
                .ok_or("--path names no directory")?,
        )
    };
    // weights layers for the default src/weights; every layer (flattened) for --all, --path or
    // a modelcar's /models
    let picked: Vec<usize> = if a.all || a.path.is_some() || modelcar {
        (0..layers.len()).collect()
    } else {
        let w = weights_layers(&config);
        if w.is_empty() {
            return Err(format!("{}: no weights layers (history `... # weights` or `COPY . /src`); use --path DIR or --all", a.image).into());
        }
        w
    };
    if a.output.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(Box::new(Error::Usage {
            reason: "refusing to write a tar to the terminal: give -o FILE|DIR/ or pipe the output"
                .into(),
        }));
    }
    // where the files go first
    let (final_dest, as_dir) = match &a.output {
        Some(o) if o.ends_with('/') || Path::new(o).is_dir() => {
            (Some(PathBuf::from(o.trim_end_matches('/'))), true)
        }
        Some(o) => (Some(PathBuf::from(o)), false),
        None => (None, false),
    };
    let tmp_root = match &final_dest {
        Some(d) => {
            let parent = d
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
            let name = d
                .file_name()
                .ok_or("-o names no file")?
                .to_string_lossy()
                .into_owned();
            crate::cleanup::sweep(parent);
            parent.join(format!(".{name}.lamina-partial-{}", std::process::id()))
        }
        None => {
            crate::cleanup::sweep(&std::env::temp_dir());
            std::env::temp_dir().join(format!("lamina-extract-{}", std::process::id()))
        }
    };
    let _reg = crate::cleanup::register(&tmp_root);
    let guard = Cleanup(vec![tmp_root.clone()]);
    let _ = std::fs::remove_dir_all(&tmp_root);
    std::fs::create_dir_all(&tmp_root).map_err(|e| format!("{}: {e}", tmp_root.display()))?;

    let mut ex = Extractor {
        root: tmp_root.clone(),
        prefix: prefix.clone(),
        this_layer: HashSet::new(),
        warnings: 0,
        files: 0,
        bytes: 0,
        current: None,
    };
    for &i in &picked {
        ex.this_layer.clear();
        layer(
            client,
            &a.image,
            &layers[i],
            &diff_ids[i],
            i,
            &mut ex,
            a.quiet,
        )?;
    }
    let found_any = std::fs::read_dir(&tmp_root)
        .map(|mut r| r.next().is_some())
        .unwrap_or(false);
    if !found_any {
        return Err(format!(
            "{}: nothing under /{} in layer(s) {:?}; see `lamina layers`, or use --path or --all",
            a.image,
            prefix.as_deref().unwrap_or(""),
            picked
        )
        .into());
    }

    match (final_dest, as_dir) {
        (Some(d), true) => {
            if d.exists() {
                let empty = std::fs::read_dir(&d)
                    .map(|mut r| r.next().is_none())
                    .unwrap_or(false);
                if !empty {
                    // move entries into the existing directory, refusing to overwrite
                    for e in std::fs::read_dir(&tmp_root)? {
                        let e = e?;
                        let to = d.join(e.file_name());
                        if to.symlink_metadata().is_ok() {
                            return Err(format!(
                                "{} exists already; extract into an empty or new directory",
                                to.display()
                            )
                            .into());
                        }
                    }
                    for e in std::fs::read_dir(&tmp_root)? {
                        let e = e?;
                        std::fs::rename(e.path(), d.join(e.file_name()))?;
                    }
                } else {
                    std::fs::remove_dir(&d)?;
                    std::fs::rename(&tmp_root, &d)?;
                }
            } else {
                std::fs::rename(&tmp_root, &d)?;
            }
        }
        (Some(f), false) => {
            let part = f.with_file_name(format!(
                ".{}.lamina-partial-{}.tar",
                f.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                std::process::id()
            ));
            let _reg2 = crate::cleanup::register(&part);
            let mut guard2 = Cleanup(vec![part.clone()]);
            let mut out = std::io::BufWriter::with_capacity(
                1 << 20,
                std::fs::File::create(&part).map_err(|e| format!("{}: {e}", part.display()))?,
            );
            write_tar(&tmp_root, &mut out)?;
            out.flush()?;
            out.into_inner().map_err(|e| e.to_string())?.sync_all()?;
            std::fs::rename(&part, &f)?;
            guard2.0.clear();
        }
        (None, _) => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
            write_tar(&tmp_root, &mut out)?;
            out.flush()?;
        }
    }
    drop(guard);
    if a.json {
        let j = serde_json::json!({
            "image": format!("{}@{}", a.image.name(), img.digest),
            "digest": img.digest.to_string(),
            "output": a.output.as_deref().unwrap_or("-"),
            "path": prefix.as_deref().map(|p| format!("/{p}")),
            "layers": picked,
            "files": ex.files,
            "bytes": ex.bytes,
            "skipped": ex.warnings,
        });
        if a.output.is_none() {
            eprintln!("{j}");
        } else {
            println!("{j}");
        }
    }
    if !a.quiet {
        eprintln!(
            "extracted {} files ({}) from {} layer(s){}",
            ex.files,
            human(ex.bytes),
            picked.len(),
            if ex.warnings > 0 {
                format!(", {} entries skipped (see warnings)", ex.warnings)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// Removes paths when dropped (unless cleared).
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            if p.is_dir() {
                let _ = std::fs::remove_dir_all(p);
            } else {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

fn write_tar(root: &Path, out: &mut dyn std::io::Write) -> Result<()> {
    use lamina_core::tar::{EntryKind, TarWriter};
    let has_any = std::fs::read_dir(root)?.next().is_some();
    let mut entries = if has_any {
        crate::inputs::collect(&[root.to_path_buf()], "")?
    } else {
        Vec::new()
    };
    // files that are hard links of each other stay hard links in the tar
    let mut seen: std::collections::HashMap<(u64, u64), String> = std::collections::HashMap::new();
    for e in &mut entries {
        if let (EntryKind::File { .. }, Some(src)) = (&e.kind, &e.source) {
            use std::os::unix::fs::MetadataExt as _;
            let m = std::fs::symlink_metadata(src)?;
            if m.nlink() > 1 {
                match seen.get(&(m.dev(), m.ino())) {
                    Some(first) => e.kind = EntryKind::Hardlink(first.clone()),
                    None => {
                        seen.insert((m.dev(), m.ino()), e.path.clone());
                    }
                }
            }
        }
    }
    let mut tw = TarWriter::new(crate::affix::source_date_epoch().unwrap_or(0));
    let mut err: Option<std::io::Error> = None;
    let mut sink = |b: &[u8]| {
        if err.is_none() {
            if let Err(e) = out.write_all(b) {
                err = Some(e);
            }
        }
    };
    let mut buf = vec![0u8; 1 << 20];
    for e in &entries {
        tw.entry(&e.path, &e.kind, &mut sink)?;
        if let (EntryKind::File { .. }, Some(src)) = (&e.kind, &e.source) {
            let mut f = std::fs::File::open(src)?;
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                tw.data(&buf[..n], &mut sink)?;
            }
            tw.end_file()?;
        }
    }
    tw.finish(&mut sink)?;
    match err {
        Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Streams one layer into the extractor, verifying digest, size and diff_id.
fn layer(
    client: &mut Client,
    r: &Loc,
    d: &Descriptor,
    diff_id: &lamina_core::Digest,
    idx: usize,
    ex: &mut Extractor,
    quiet: bool,
) -> Result<()> {
    let c = media::layer_compression(&d.media_type).ok_or_else(|| Error::UnsupportedMediaType {
        what: format!("layer {idx}"),
        media_type: d.media_type.clone(),
    })?;
    let mut body = crate::store::open_blob(client, r, &d.digest)?;
    let mut diff = Hasher::new();
    let mut dec = compress::decoder::<Error>(c);
    let mut tar = TarReader::new();
    let mut p = Progress::new(
        format!("layer {idx} {}", d.digest.short()),
        Some(d.size),
        quiet,
    );
    let feed = |data: &[u8],
                tar: &mut TarReader,
                diff: &mut Hasher,
                ex: &mut Extractor|
     -> std::result::Result<(), Error> {
        diff.update(data);
        tar.write(data, &mut |e| ex.event(e))
    };
    let mut read = 0u64;
    read_verified(
        &mut body,
        d,
        &format!("layer {idx} ({}) downloaded from {r}", d.digest),
        &mut |piece: &[u8]| {
            read += piece.len() as u64;
            p.set(read);
            dec.write(piece, &mut |o: &[u8]| feed(o, &mut tar, &mut diff, ex))
                .map_err(resolve::flatten)
        },
    )?;
    dec.finish(&mut |o: &[u8]| feed(o, &mut tar, &mut diff, ex))
        .map_err(resolve::flatten)?;
    let size = d.size;
    let got = diff.finish();
    if &got != diff_id {
        return Err(Box::new(Error::DigestMismatch {
            what: format!("uncompressed layer {idx} (diff_id in the config)"),
            expected: diff_id.clone(),
            found: got,
        }));
    }
    tar.finish()?;
    p.finish(size);
    if c != Compression::None && !quiet {
        eprintln!("layer {idx}: {} verified", d.digest);
    }
    Ok(())
}

struct Extractor {
    root: PathBuf,
    prefix: Option<String>,
    this_layer: HashSet<String>,
    warnings: u64,
    files: u64,
    bytes: u64,
    current: Option<std::fs::File>,
}

impl Extractor {
    fn warn(&mut self, msg: String) {
        self.warnings += 1;
        crate::progress::warn(&format!("warning: {msg}"));
    }

    /// Maps an image path into the output (prefix stripped); `None` if outside the sub-tree.
    fn map(&self, image_path: &str) -> Option<String> {
        match &self.prefix {
            None => Some(image_path.to_string()),
            Some(p) => {
                if image_path == p {
                    Some(String::new())
                } else {
                    image_path
                        .strip_prefix(&format!("{p}/"))
                        .map(str::to_string)
                }
            }
        }
    }

    /// Refuses to write through symlinks: every existing ancestor must be a real directory.
    fn prepare_parent(&self, rel: &str) -> std::result::Result<PathBuf, Error> {
        let mut cur = self.root.clone();
        let parts: Vec<&str> = rel.split('/').collect();
        for c in &parts[..parts.len() - 1] {
            cur.push(c);
            match std::fs::symlink_metadata(&cur) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(Error::Tar {
                        reason: format!("{rel:?} would be written through the symlink {c:?}"),
                    });
                }
                Ok(_) => {
                    std::fs::remove_file(&cur).map_err(|e| io(&cur, e))?;
                    std::fs::create_dir(&cur).map_err(|e| io(&cur, e))?;
                }
                Err(_) => std::fs::create_dir(&cur).map_err(|e| io(&cur, e))?,
            }
        }
        Ok(self.root.join(rel))
    }

    fn remove(&self, p: &Path) {
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => {
                let _ = std::fs::remove_dir_all(p);
            }
            Ok(_) => {
                let _ = std::fs::remove_file(p);
            }
            Err(_) => {}
        }
    }

    fn event(&mut self, e: Event<'_>) -> std::result::Result<(), Error> {
        match e {
            Event::Entry(h) => {
                self.current = None;
                let Some(image_path) = safe_path(&h.path) else {
                    if !matches!(h.path.trim_matches('/'), "" | ".") {
                        self.warn(format!(
                            "skipped {:?}: the path climbs out of the image root",
                            h.path
                        ));
                    }
                    return Ok(());
                };
                let (dir, base) = match image_path.rsplit_once('/') {
                    Some((d, b)) => (Some(d), b),
                    None => (None, image_path.as_str()),
                };
                // whiteouts
                if let Some(name) = base.strip_prefix(".wh.") {
                    let target_dir = dir.map(str::to_string).unwrap_or_default();
                    if name == ".wh..opq" {
                        let Some(rel) = self.map(&target_dir).or_else(|| {
                            if self.prefix.as_deref().is_some_and(|p| {
                                p.starts_with(&format!("{target_dir}/")) || target_dir.is_empty()
                            }) {
                                Some(String::new())
                            } else {
                                None
                            }
                        }) else {
                            return Ok(());
                        };
                        let d = if rel.is_empty() {
                            self.root.clone()
                        } else {
                            self.root.join(&rel)
                        };
                        if let Ok(rd) = std::fs::read_dir(&d) {
                            for ent in rd.flatten() {
                                let child = if rel.is_empty() {
                                    ent.file_name().to_string_lossy().into_owned()
                                } else {
                                    format!("{rel}/{}", ent.file_name().to_string_lossy())
                                };
                                if !self.this_layer.contains(&child) {
                                    self.remove(&ent.path());
                                }
                            }
                        }
                    } else {
                        let gone = if target_dir.is_empty() {
                            name.to_string()
                        } else {
                            format!("{target_dir}/{name}")
                        };
                        if let Some(rel) = self.map(&gone).filter(|r| !r.is_empty()) {
                            self.remove(&self.root.join(rel));
                        } else if self
                            .prefix
                            .as_deref()
                            .is_some_and(|p| p == gone || p.starts_with(&format!("{gone}/")))
                        {
                            // the whole sub-tree was deleted
                            if let Ok(rd) = std::fs::read_dir(&self.root) {
                                for ent in rd.flatten() {
                                    self.remove(&ent.path());
                                }
                            }
                        }
                    }
                    return Ok(());
                }
                let Some(rel) = self.map(&image_path) else {
                    return Ok(());
                };
                if rel.is_empty() {
                    return Ok(());
                }
                self.this_layer.insert(rel.clone());
                match &h.kind {
                    Kind::Dir => {
                        let p = self.prepare_parent(&rel)?;
                        match std::fs::symlink_metadata(&p) {
                            Ok(m) if m.is_dir() => {}
                            Ok(_) => {
                                self.remove(&p);
                                std::fs::create_dir(&p).map_err(|e| io(&p, e))?;
                            }
                            Err(_) => std::fs::create_dir(&p).map_err(|e| io(&p, e))?,
                        }
                    }
                    Kind::File => {
                        let p = self.prepare_parent(&rel)?;
                        self.remove(&p);
                        let f = std::fs::OpenOptions::new().write(true).create_new(true).open(&p).map_err(|e| io(&p, e))?;
                        let _ = f.set_permissions(std::fs::Permissions::from_mode((h.mode & 0o777) | 0o600));
                        self.files += 1;
                        self.current = Some(f);
                    }
                    Kind::Symlink(target) => match resolve_link(&image_path, target).and_then(|t| self.map(&t)) {
                        Some(_) => {
                            let p = self.prepare_parent(&rel)?;
                            self.remove(&p);
                            let t = if target.starts_with('/') {
                                // an absolute link inside the image becomes relative here
                                let to = resolve_link(&image_path, target).unwrap_or_default();
                                relative(&image_path, &to)
                            } else {
                                target.clone()
                            };
                            std::os::unix::fs::symlink(&t, &p).map_err(|e| io(&p, e))?;
                        }
                        None => self.warn(format!("skipped symlink {:?} -> {target:?}: it points outside the extracted tree", h.path)),
                    },
                    Kind::Hardlink(target) => {
                        let src = safe_path(target).and_then(|t| self.map(&t)).filter(|t| !t.is_empty());
                        match src.map(|s| self.root.join(s)).filter(|s| std::fs::symlink_metadata(s).is_ok_and(|m| m.is_file())) {
                            Some(s) => {
                                let p = self.prepare_parent(&rel)?;
                                self.remove(&p);
                                std::fs::hard_link(&s, &p).map_err(|e| io(&p, e))?;
                                self.files += 1;
                            }
                            None => self.warn(format!("skipped hard link {:?} -> {target:?}: its target is not an extracted file", h.path)),
                        }
                    }
                    Kind::Other(t) => self.warn(format!("skipped {:?}: device, FIFO or unknown entry type {:?}", h.path, *t as char)),
                }
                Ok(())
            }
            Event::Data(d) => {
                self.bytes += d.len() as u64;
                match self.current.as_mut() {
                    Some(f) => f.write_all(d).map_err(|e| Error::Tar {
                        reason: format!("writing: {e}"),
                    }),
                    None => Ok(()),
                }
            }
            Event::EntryEnd => {
                self.current = None;
                Ok(())
            }
        }
    }
}

/// A relative link from `from` (a link's path) to `to` (both relative to the root).
fn relative(from: &str, to: &str) -> String {
    let f: Vec<&str> = from.split('/').collect();
    let t: Vec<&str> = to.split('/').collect();
    let fdir = &f[..f.len() - 1];
    let common = fdir.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<&str> = vec![".."; fdir.len() - common];
    parts.extend(&t[common..]);
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

fn io(p: &Path, e: std::io::Error) -> Error {
    Error::Tar {
        reason: format!("{}: {e}", p.display()),
    }
}
