//! Modelcar layers from files on disk: one layer per input under `/models` (a directory is one
//! layer), the model card last and gzipped. Shared by `lamina append` (a layout) and
//! `lamina affix --modelcar` (a registry).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;

use lamina_core::compress::Compression;
use lamina_core::modelcar::{CarLayer, Part};
use lamina_core::registry::UploadConfig;
use lamina_core::tar::{plan as plan_entries, EntryKind, PlannedEntry};

use crate::error::Result;
use crate::net::client::{Client, Data, Restart};
use crate::store::{self, Loc};
use crate::ui::progress::{human, Progress};

/// One planned layer.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The input's name.
    pub title: String,
    /// `/models/NAME` (or `/models/REL/NAME` with a root directory).
    pub in_layer_path: String,
    /// The input is a directory.
    pub directory: bool,
    /// Weights or card.
    pub part: Part,
    /// The tar entries.
    pub entries: Vec<PlannedEntry<PathBuf>>,
    /// The path as given (what `--remove-originals` removes).
    pub given: PathBuf,
}

fn name_of(p: &Path) -> Result<String> {
    let n = match p.file_name() {
        Some(n) => n.to_os_string(),
        // `.` or `dir/..`: the name of what it resolves to
        None => p
            .canonicalize()
            .map_err(|e| format!("{}: {e}", p.display()))?
            .file_name()
            .map(|n| n.to_os_string())
            .ok_or_else(|| format!("{}: has no name", p.display()))?,
    };
    n.into_string()
        .map_err(|_| ())
        .map_err(|_| format!("{}: file name is not UTF-8", p.display()).into())
}

/// The input's own location with its directory resolved but not its last component (a symlink
/// keeps its name; its content is what it points to).
fn located(p: &Path) -> Result<PathBuf> {
    let parent = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dir = parent
        .canonicalize()
        .map_err(|e| format!("{}: {e}", p.display()))?;
    match p.file_name() {
        Some(n) => Ok(dir.join(n)),
        None => p
            .canonicalize()
            .map_err(|e| format!("{}: {e}", p.display()).into()),
    }
}

/// Plans the layers: one per input (in the order given; the same input twice counts once; the
/// model card listed among the inputs is added only as the card), then the card. Two inputs that
/// would put different files at one path are refused, naming both.
pub fn plan(
    inputs: &[PathBuf],
    card: Option<&Path>,
    root_dir: Option<&Path>,
    path: &str,
    quiet: bool,
) -> Result<Vec<Planned>> {
    let base = lamina_core::tar::archive_path(path)?;
    if base.is_empty() {
        return Err(Box::new(lamina_core::Error::Usage {
            reason: "--path must name a directory such as /models".into(),
        }));
    }
    let root = match root_dir {
        Some(r) => Some(
            r.canonicalize()
                .map_err(|e| format!("--root-dir {}: {e}", r.display()))?,
        ),
        None => None,
    };
    let card_at = match card {
        Some(c) => {
            if !std::fs::metadata(c)
                .map_err(|e| format!("model card {}: {e}", c.display()))?
                .is_file()
            {
                return Err(format!("model card {}: not a file", c.display()).into());
            }
            Some(located(c)?)
        }
        None => None,
    };
    let mut seen = Vec::new();
    let mut out = Vec::new();
    let mut inputs: Vec<(PathBuf, Part)> =
        inputs.iter().map(|p| (p.clone(), Part::Weights)).collect();
    if let Some(c) = card {
        inputs.push((c.to_path_buf(), Part::Card));
    }
    for (p, part) in inputs {
        let meta = std::fs::metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        let at = located(&p)?;
        if part == Part::Weights && card_at.as_ref() == Some(&at) {
            if !quiet {
                eprintln!(
                    "note: {} is the model card; it is added once, as the card layer",
                    p.display()
                );
            }
            continue;
        }
        if seen.contains(&at) {
            continue;
        }
        seen.push(at.clone());
        let title = name_of(&p)?;
        let rel = match (&root, part) {
            (Some(r), Part::Weights) => {
                let rel = at.strip_prefix(r).map_err(|_| {
                    format!("{} is not under --root-dir {}", p.display(), r.display())
                })?;
                let rel = rel
                    .to_str()
                    .ok_or_else(|| format!("{}: path is not UTF-8", p.display()))?;
                if rel.is_empty() {
                    title.clone()
                } else {
                    rel.to_string()
                }
            }
            _ => title.clone(),
        };
        let in_layer = format!("{base}/{rel}");
        let (entries, directory) = if meta.is_dir() {
            (
                crate::ops::inputs::collect(std::slice::from_ref(&p), &in_layer)?,
                true,
            )
        } else if meta.is_file() {
            let e = crate::ops::inputs::file_entry(in_layer.clone(), &meta, p.clone());
            (plan_entries(vec![e])?, false)
        } else {
            return Err(format!("{}: not a regular file or directory", p.display()).into());
        };
        out.push(Planned {
            title,
            in_layer_path: format!("/{in_layer}"),
            directory,
            part,
            entries,
            given: p,
        });
    }
    // the same path from two inputs: the later layer would hide the earlier one
    let mut owner: HashMap<&str, &Path> = HashMap::new();
    for l in &out {
        for e in &l.entries {
            if matches!(e.kind, EntryKind::Dir) {
                continue;
            }
            if let Some(prev) = owner.insert(&e.path, &l.given) {
                return Err(Box::new(lamina_core::Error::Usage {
                    reason: format!(
                        "{} and {} would both be /{} in the image; give --root-dir to keep \
                         their directories apart",
                        prev.display(),
                        l.given.display(),
                        e.path
                    ),
                }));
            }
        }
    }
    if out.is_empty() {
        return Err(Box::new(lamina_core::Error::Usage {
            reason: "nothing to add: give model files or directories, or --modelcard".into(),
        }));
    }
    Ok(out)
}

/// Builds one planned layer and stores it at `dst` (a layout or a registry), streaming; returns
/// the layer. The card is gzipped; weights use `compression` (`auto` decides per layer).
pub fn build(
    client: &mut Client,
    dst: &Loc,
    p: &Planned,
    compression: &str,
    level: Option<i32>,
    quiet: bool,
) -> Result<CarLayer> {
    let c = match (p.part, compression) {
        (Part::Card, _) => Compression::Gzip,
        (_, "auto") => {
            let c = crate::ops::inputs::choose_auto(&p.entries)?;
            if !quiet {
                crate::ops::build::note_auto(&c);
            }
            c.compression
        }
        (_, other) => Compression::parse(other)
            .ok_or_else(|| format!("unknown compression {other:?} (auto, none, gzip, zstd)"))?,
    };
    let mtime = crate::ops::build::source_date_epoch().unwrap_or(0);
    // a registry upload sends 1 MiB pieces; a layout's disk needs less buffering
    let chunk: usize = match dst {
        Loc::Registry(_) => 1 << 20,
        Loc::Layout(_) => 256 << 10,
    };
    let entries = p.entries.clone();
    let mut spawn: Restart = Box::new(move || {
        let (tx, rx) = sync_channel::<Data>(1);
        let entries = entries.clone();
        std::thread::spawn(move || {
            crate::ops::build::build_files(entries, c, level, mtime, chunk, tx)
        });
        rx
    });
    let total = crate::ops::inputs::tar_size(&p.entries);
    let mut progress = Progress::new(p.title.clone(), Some(total), quiet);
    let cfg = UploadConfig {
        chunk_max: 8 << 20,
        monolithic_max: chunk as u64,
        stream: true,
        ..UploadConfig::default()
    };
    let rx = spawn();
    let (_, info) = store::put_stream(client, dst, cfg, rx, Some(spawn), &mut progress, None)?;
    progress.finish(info.size);
    if !quiet {
        eprintln!(
            "layer {} {} ({}, {})",
            info.digest,
            p.in_layer_path,
            human(info.size),
            info.compression.name()
        );
    }
    Ok(CarLayer {
        title: p.title.clone(),
        in_layer_path: p.in_layer_path.clone(),
        directory: p.directory,
        part: p.part,
        info,
    })
}

/// Removes the inputs (as given: a symlink is removed, never what it points to).
pub fn remove_originals(planned: &[Planned], with_card: bool) -> Result<()> {
    for p in planned {
        if p.part == Part::Card && !with_card {
            continue;
        }
        let m = std::fs::symlink_metadata(&p.given)
            .map_err(|e| format!("removing {}: {e}", p.given.display()))?;
        let r = if m.is_dir() {
            std::fs::remove_dir_all(&p.given)
        } else {
            std::fs::remove_file(&p.given)
        };
        r.map_err(|e| format!("removing {}: {e}", p.given.display()))?;
    }
    Ok(())
}
