//! `lamina extract`: the files of an image's weights layers (or any sub-tree, or the whole
//! flattened filesystem), streamed from the registry: download, verify, decompress and untar in
//! one pass, with whiteouts applied so later layers win.
//!
//! Nothing is ever written outside the output: entries that climb out (`..`), symlinks and hard
//! links that point out, and device files are skipped with a warning, and no file is written
//! through a symlink. Output goes to a temporary name next to the destination and is renamed
//! at the end; on any error it is removed, so a complete-looking output is a complete one.

use std::collections::HashSet;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::store::Loc;
use lamina_core::compress::{self, Compression};
use lamina_core::digest::Hasher;
use lamina_core::image::{weights_layers, Descriptor};
use lamina_core::untar::{resolve_link, safe_path, Event, Kind, TarReader};
use lamina_core::Error;
use lamina_core::{artifact, media};

use crate::commands::Ctx;
use crate::error::Result;
use crate::net::client::Client;
use crate::ops::resolve::{self, PlatformSel};
use crate::store::verify::read_verified_ahead;
use crate::ui::progress::{human, Progress};

/// Pull the weights out of an image (its files under src/weights, or /models for a
/// modelcar), or the files out of a model artifact.
///
/// Weights layers are found as r8im does (history `... # weights`, else `COPY . /src`); all
/// of them are applied in order with whiteouts, so later layers win. A modelcar (made by olot,
/// `lamina append` or `affix --modelcar`) gives the files under /models. A model artifact
/// (ModelPack, KitOps ModelKit, Docker model) gives each file at the path its manifest names
/// (--kind picks weights, configs, docs, ...); a path that is absolute or climbs out is refused.
/// Symlinks and hard links are kept; nothing is ever written outside the output.
///
/// Examples:
///   lamina extract r8.im/me/model -o weights/          (a directory)
///   lamina extract r8.im/me/model -o weights.tar       (a tar file)
///   lamina extract r8.im/me/model | tar -t             (a tar on stdout)
///   lamina extract 127.0.0.1:5000/modelcar --path /models -o models/
///   lamina extract docker.io/ai/smollm2 --kind weight --kind config -o model/
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Image reference.
    #[arg(value_name = "REF")]
    pub image: String,
    /// Output: a directory (existing, or ending in /) or a tar file; stdout when absent or -.
    #[arg(short, long, value_name = "FILE|DIR")]
    pub output: Option<String>,
    /// Sub-tree of the image to extract instead of src/weights (or /models).
    #[arg(long, value_name = "DIR")]
    pub path: Option<String>,
    /// Extract the whole flattened filesystem of all layers.
    #[arg(long)]
    pub all: bool,
    /// Of a model artifact, only the files of this kind (repeatable): weight, config, doc,
    /// code, dataset, prompt, other.
    #[arg(long = "kind", value_name = "KIND")]
    pub kinds: Vec<String>,
    /// Only the files matching this glob (repeatable): `*.json` matches names, `unet/*.json`
    /// paths as they come out (below --path; `*` stays within a directory, `**` crosses them).
    /// From an uncompressed layer only those files' bytes are fetched (Range requests); a
    /// compressed layer streams.
    #[arg(long = "include", value_name = "GLOB")]
    pub include: Vec<String>,
    /// Leave out the files matching this glob (repeatable; as --include).
    #[arg(long = "exclude", value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Platform of an index: os/arch[/variant] (default linux/amd64).
    #[arg(long)]
    pub platform: Option<String>,
    /// Print a JSON summary (on stderr when the tar goes to stdout).
    #[arg(long)]
    pub json: bool,
}

/// Runs `extract`.
pub fn run(ctx: &mut Ctx, mut a: Args) -> Result<()> {
    // `-o -` is stdout, as with tar and crane
    a.output = a.output.filter(|o| o != "-");
    let image = ctx.source("image", &a.image)?;
    let (client, quiet) = (&mut ctx.client, ctx.quiet);
    let sel = PlatformSel::parse(a.platform.as_deref())?;
    if matches!(sel, PlatformSel::All) {
        return Err(Box::new(Error::Usage {
            reason: "extract takes one platform (--platform os/arch)".into(),
        }));
    }
    let img = resolve::fetch_one(client, &image, &sel)?;
    let config = resolve::config(client, &image, &img.manifest)?;
    if img.index_pos.is_none() {
        resolve::check_platform(&image, a.platform.as_deref(), &config)?;
    }
    let read = artifact::read(&img.manifest, &config)?;
    if read.format.is_artifact() {
        let job = artifact_job(&a, &image, &img.manifest, &read, quiet)?;
        return unpack(client, &a, &image, quiet, &img, job);
    }
    if !a.kinds.is_empty() {
        return Err(Box::new(Error::Usage {
            reason: format!(
                "--kind picks the files of a model artifact; {image} is an image (see `lamina layers`)"
            ),
        }));
    }
    let (layers, diff_ids): (Vec<_>, Vec<_>) =
        resolve::layers_with_diff_ids(&image, &img.manifest, &config)?
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
            return Err(format!("{}: no weights layers (history `... # weights` or `COPY . /src`); use --path DIR or --all", image).into());
        }
        w
    };
    let job = Job {
        how: diff_ids
            .into_iter()
            .map(|d| Unpack::Image { diff_id: d })
            .collect(),
        layers,
        picked,
        prefix,
        artifact: false,
    };
    unpack(client, &a, &image, quiet, &img, job)
}

/// What to unpack: the layers, how each holds its files, which are picked (in order, base
/// first) and the sub-tree wanted.
struct Job {
    layers: Vec<Descriptor>,
    how: Vec<Unpack>,
    picked: Vec<usize>,
    prefix: Option<String>,
    /// A model artifact: files side by side (no whiteouts, no file of one layer replacing
    /// another's).
    artifact: bool,
}

/// How one layer holds its files.
#[derive(Debug, Clone)]
enum Unpack {
    /// An image layer (its compression from its media type), with the config's diff_id.
    Image { diff_id: lamina_core::Digest },
    /// A tar with this compression; the diff_id when the config states one.
    Tar {
        c: Compression,
        diff_id: Option<lamina_core::Digest>,
    },
    /// The blob is the file at `path`.
    Raw {
        path: String,
        diff_id: Option<lamina_core::Digest>,
    },
}

/// Which files of a model artifact to unpack: the layers of the kinds asked for (all by
/// default) whose paths pass, under `--path` when given; layers whose path was refused, or whose
/// media type lamina does not know, are skipped with a warning.
fn artifact_job(
    a: &Args,
    image: &Loc,
    manifest: &lamina_core::image::Manifest,
    read: &artifact::Read,
    quiet: bool,
) -> Result<Job> {
    let (format, parts) = (read.format, &read.parts);
    let mut kinds = Vec::new();
    for k in &a.kinds {
        kinds.push(artifact::Kind::parse(k).ok_or_else(|| Error::Usage {
            reason: format!(
                "--kind {k:?}: one of {}",
                artifact::Kind::ALL.map(|k| k.name()).join(", ")
            ),
        })?);
    }
    let layers = manifest.layers()?;
    let warn = |msg: String| {
        if !quiet {
            crate::ui::progress::warn(&format!("warning: {msg}"));
        }
    };
    let mut how = Vec::new();
    let mut picked = Vec::new();
    for p in parts {
        let wanted = kinds.is_empty() || kinds.contains(&p.kind);
        let h = match (p.packing, &p.path) {
            (Some(artifact::Packing::Raw), Some(path)) => Unpack::Raw {
                path: path.clone(),
                diff_id: p.diff_id.clone(),
            },
            (Some(artifact::Packing::Raw), None) => {
                if wanted {
                    warn(format!(
                        "skipped layer {} ({}): {}",
                        p.index,
                        layers[p.index].digest,
                        p.problem.as_deref().unwrap_or("no path")
                    ));
                }
                how.push(Unpack::Tar {
                    c: Compression::None,
                    diff_id: None,
                });
                continue;
            }
            (Some(artifact::Packing::Tar(c)), _) => Unpack::Tar {
                c,
                diff_id: p.diff_id.clone(),
            },
            (None, _) => {
                if wanted {
                    warn(format!(
                        "skipped layer {}: its media type {} is not one lamina unpacks",
                        p.index, layers[p.index].media_type
                    ));
                }
                how.push(Unpack::Tar {
                    c: Compression::None,
                    diff_id: None,
                });
                continue;
            }
        };
        how.push(h);
        if wanted {
            picked.push(p.index);
        }
    }
    let prefix = match a.path.as_deref() {
        Some(p) => Some(safe_path(p).ok_or("--path names no directory")?),
        None => None,
    };
    if picked.is_empty() {
        let have: std::collections::BTreeSet<&str> = parts.iter().map(|p| p.kind.name()).collect();
        return Err(format!(
            "{image}: no {} layers to extract from this {} artifact (it has: {})",
            if kinds.is_empty() {
                "unpackable".to_string()
            } else {
                kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join("/")
            },
            format.name(),
            have.into_iter().collect::<Vec<_>>().join(", ")
        )
        .into());
    }
    Ok(Job {
        layers,
        how,
        picked,
        prefix,
        artifact: true,
    })
}

/// Unpacks `job` into `-o`: a directory, a tar file, or a tar on stdout.
fn unpack(
    client: &mut Client,
    a: &Args,
    image: &Loc,
    quiet: bool,
    img: &resolve::Image,
    job: Job,
) -> Result<()> {
    if a.output.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(Box::new(Error::Usage {
            reason: "refusing to write a tar to the terminal: give -o FILE|DIR/ or pipe the output"
                .into(),
        }));
    }
    // a directory is unpacked under a temporary name beside it; a tar (a file or stdout)
    // streams, layers from the top down, with no copy of the tree
    let d = match &a.output {
        Some(o) if o.ends_with('/') || Path::new(o).is_dir() => {
            PathBuf::from(o.trim_end_matches('/'))
        }
        o => {
            let file = o.as_ref().map(PathBuf::from);
            return tar_out(client, a, image, quiet, img, &job, file);
        }
    };
    let Job {
        layers,
        how,
        picked,
        prefix,
        artifact,
    } = job;
    let tmp_root = {
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
        crate::store::cleanup::sweep(parent);
        parent.join(format!(".{name}.lamina-partial-{}", std::process::id()))
    };
    let _reg = crate::store::cleanup::register(&tmp_root);
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
    let mut files = Files::new(artifact);
    let globs = Globs::of(a, prefix.as_deref());
    let mut ranged = 0u64;
    for &i in &picked {
        ex.this_layer.clear();
        files.next_layer(i);
        let mut sink = files.over(&mut ex);
        let pick = Pick {
            layers: &layers,
            how: &how,
            globs: &globs,
        };
        picked_layer(client, image, &pick, i, &mut sink, &mut ranged, quiet)?;
    }
    ex.warnings += files.warnings;
    let found_any = std::fs::read_dir(&tmp_root)
        .map(|mut r| r.next().is_some())
        .unwrap_or(false);
    if !found_any {
        return Err(format!(
            "{}: nothing under /{} in layer(s) {:?}; see `lamina layers`, or use --path or --all",
            image,
            prefix.as_deref().unwrap_or(""),
            picked
        )
        .into());
    }

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
    drop(guard);
    report(
        a,
        image,
        quiet,
        img,
        prefix.as_deref(),
        &picked,
        (ex.files, ex.bytes, ex.warnings),
        &by_range(ranged),
    )
}

/// The summary of an extract: JSON with `--json` (on stderr when the tar is on stdout), a line
/// on stderr unless `-q`. `counts` are files, bytes and entries skipped.
#[allow(clippy::too_many_arguments)]
fn report(
    a: &Args,
    image: &Loc,
    quiet: bool,
    img: &resolve::Image,
    prefix: Option<&str>,
    picked: &[usize],
    (files, bytes, skipped): (u64, u64, u64),
    how: &str,
) -> Result<()> {
    if a.json {
        let j = serde_json::json!({
            "image": format!("{}@{}", image.name(), img.digest),
            "digest": img.digest.to_string(),
            "output": a.output.as_deref().unwrap_or("-"),
            "path": prefix.map(|p| format!("/{p}")),
            "layers": picked,
            "files": files,
            "bytes": bytes,
            "skipped": skipped,
        });
        if a.output.is_none() {
            eprintln!("{j}");
        } else {
            outln!("{j}")?;
        }
    }
    if !quiet {
        eprintln!(
            "extracted {files} files ({}) from {} layer(s){how}{}",
            human(bytes),
            picked.len(),
            if skipped > 0 {
                format!(", {skipped} entries skipped (see warnings)")
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// Maps an image path into the output under `prefix` (stripped); `None` if outside it, `""`
/// for the prefix itself.
fn map_prefix(prefix: Option<&str>, image_path: &str) -> Option<String> {
    match prefix {
        None => Some(image_path.to_string()),
        Some(p) if image_path == p => Some(String::new()),
        Some(p) => image_path
            .strip_prefix(&format!("{p}/"))
            .map(str::to_string),
    }
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

/// `, N read by range (...)` when some files were.
fn by_range(n: u64) -> String {
    match n {
        0 => String::new(),
        n => format!(
            " ({n} read by Range requests: their sizes and tar headers checked; the layer's \
             digest covers bytes not read, so it could not be)"
        ),
    }
}

/// `--include` and `--exclude`.
struct Globs {
    include: Vec<String>,
    exclude: Vec<String>,
    /// The sub-tree extracted: paths are matched as they come out, below it.
    prefix: Option<String>,
}

impl Globs {
    fn of(a: &Args, prefix: Option<&str>) -> Globs {
        Globs {
            include: a.include.clone(),
            exclude: a.exclude.clone(),
            prefix: prefix.map(str::to_string),
        }
    }

    fn active(&self) -> bool {
        !self.include.is_empty() || !self.exclude.is_empty()
    }

    /// Whether the entry at image path `path` goes out: whiteouts always do (they remove
    /// what lower layers wrote), directories only when a glob names them.
    fn wants(&self, h: &lamina_core::untar::Header) -> bool {
        let name = h
            .path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("");
        if name.starts_with(".wh.") {
            return true;
        }
        // the path as it comes out: below --path (or the default sub-tree)
        let Some(path) = lamina_core::peek::normal(&h.path) else {
            return true; // the extractor refuses it, with a warning
        };
        let Some(out) = map_prefix(self.prefix.as_deref(), &path) else {
            return false; // outside the sub-tree: not extracted anyway
        };
        if out.is_empty() {
            return true; // the sub-tree's own directory
        }
        let m = |g: &String| lamina_core::peek::glob(g, &out);
        (self.include.is_empty() || self.include.iter().any(m)) && !self.exclude.iter().any(m)
    }
}

/// What [`picked_layer`] reads from.
struct Pick<'a> {
    layers: &'a [Descriptor],
    how: &'a [Unpack],
    globs: &'a Globs,
}

/// Layer `idx` into the sink: whole ([`layer`]), or with `--include`/`--exclude` only the
/// matching entries. From an uncompressed layer those are found by its tar headers (Range
/// requests) and only their bytes are fetched (counted in `ranged`; sizes and header checksums
/// are checked, the layer's digest cannot be: it covers bytes not read); a compressed layer is
/// streamed and verified whole, its other entries dropped.
fn picked_layer(
    client: &mut Client,
    image: &Loc,
    pick: &Pick<'_>,
    idx: usize,
    sink: &mut dyn EventSink,
    ranged: &mut u64,
    quiet: bool,
) -> Result<()> {
    let (d, how) = (&pick.layers[idx], &pick.how[idx]);
    if !pick.globs.active() {
        return layer(client, image, d, how, idx, sink, quiet);
    }
    let holds = match how {
        Unpack::Image { .. } => match media::layer_compression(&d.media_type) {
            Some(c) => crate::ops::peek::Holds::Tar(c),
            None => {
                return Err(Box::new(Error::UnsupportedMediaType {
                    what: format!("layer {idx}"),
                    media_type: d.media_type.clone(),
                }))
            }
        },
        Unpack::Tar { c, .. } => crate::ops::peek::Holds::Tar(*c),
        Unpack::Raw { path, .. } => {
            // the blob is the file: read whole, its digest verified, or not at all
            let h = lamina_core::untar::Header::file(path, d.size);
            if pick.globs.wants(&h) {
                return layer(client, image, d, how, idx, sink, quiet);
            }
            return Ok(());
        }
    };
    // a compressed layer is streamed whole, unless it is seekable (zstd:chunked, eStargz: its
    // table of contents and each file's frames are ranges)
    if !lamina_core::peek::by_ranges(d, &holds) {
        let mut f = GlobSink {
            globs: pick.globs,
            inner: sink,
            dropping: false,
        };
        return layer(client, image, d, how, idx, &mut f, quiet);
    }
    // a one-layer view of the image for ops::peek
    let mut holds_all = vec![crate::ops::peek::Holds::Nothing(String::new()); pick.layers.len()];
    holds_all[idx] = holds;
    let p = crate::ops::peek::Peeked {
        layers: pick.layers.to_vec(),
        holds: holds_all,
        artifact: false,
        format: "image",
    };
    let mut cost = crate::ops::peek::Cost::default();
    for (h, place) in crate::ops::peek::entries(client, image, &p, idx, &mut cost, quiet)? {
        if !pick.globs.wants(&h) {
            continue;
        }
        sink.event(Event::Entry(&h))?;
        if let (Kind::File, Some(place)) = (&h.kind, &place) {
            if h.size > 0 {
                let r = crate::ops::peek::open_file(client, image, &p, place, h.size, &mut cost)?;
                // a zstd:chunked or eStargz file's content is checked against its table's digest
                let checked = r.1.is_some();
                let what = format!("{} in layer {idx} ({})", h.path, d.digest);
                crate::ops::peek::copy_file(r, h.size, &what, &mut |b| {
                    Ok(sink.event(Event::Data(b))?)
                })?;
                if !checked {
                    *ranged += 1;
                }
            }
        }
        sink.event(Event::EntryEnd)?;
    }
    Ok(())
}

/// A sink that passes on only the entries [`Globs::wants`] (a compressed layer's stream).
struct GlobSink<'a> {
    globs: &'a Globs,
    inner: &'a mut dyn EventSink,
    dropping: bool,
}

impl EventSink for GlobSink<'_> {
    fn event(&mut self, e: Event<'_>) -> std::result::Result<(), Error> {
        match e {
            Event::Entry(h) => {
                self.dropping = !self.globs.wants(h);
                if self.dropping {
                    return Ok(());
                }
                self.inner.event(Event::Entry(h))
            }
            Event::Data(_) | Event::EntryEnd if self.dropping => Ok(()),
            e => self.inner.event(e),
        }
    }
}

/// Streams one layer into the extractor, verifying digest, size and diff_id.
///
/// The download and its digest run on a thread of their own ([`read_verified_ahead`]), so
/// that hashing overlaps with untarring and writing here. An uncompressed layer is hashed
/// once: its bytes are the blob, whose digest is verified, so its diff_id must be that digest
/// (checked before anything is downloaded), and it goes straight to the tar reader.
fn layer(
    client: &mut Client,
    r: &Loc,
    d: &Descriptor,
    how: &Unpack,
    idx: usize,
    ex: &mut dyn EventSink,
    quiet: bool,
) -> Result<()> {
    let (c, diff_id, raw) = match how {
        Unpack::Image { diff_id } => {
            let c = media::layer_compression(&d.media_type).ok_or_else(|| {
                Error::UnsupportedMediaType {
                    what: format!("layer {idx}"),
                    media_type: d.media_type.clone(),
                }
            })?;
            (c, Some(diff_id), None)
        }
        Unpack::Tar { c, diff_id } => (*c, diff_id.as_ref(), None),
        Unpack::Raw { path, diff_id } => (Compression::None, diff_id.as_ref(), Some(path)),
    };
    let diff_mismatch = |expected: &lamina_core::Digest, found: lamina_core::Digest| {
        Box::new(Error::DigestMismatch {
            what: format!("uncompressed layer {idx} (diff_id in the config)"),
            expected: expected.clone(),
            found,
        })
    };
    if let Some(want) = diff_id.filter(|w| c == Compression::None && **w != d.digest) {
        return Err(diff_mismatch(want, d.digest.clone()));
    }
    let body = crate::store::open_blob(client, r, &d.digest)?;
    if let Some(path) = raw {
        // the blob is the file: one entry, its bytes as they are verified
        let h = lamina_core::untar::Header::file(path, d.size);
        ex.event(Event::Entry(&h))?;
        let mut p = Progress::new(format!("{path} {}", d.digest.short()), Some(d.size), quiet);
        let mut read = 0u64;
        read_verified_ahead(
            body,
            d,
            &format!("layer {idx} ({}) downloaded from {r}", d.digest),
            &mut |piece: &[u8]| {
                read += piece.len() as u64;
                p.set(read);
                ex.event(Event::Data(piece))
            },
        )?;
        ex.event(Event::EntryEnd)?;
        p.finish(d.size);
        return Ok(());
    }
    // the diff_id of a compressed layer, hashed here as it is decompressed
    let mut diff = (c != Compression::None).then(Hasher::new);
    let mut dec = compress::decoder::<Error>(c);
    let mut tar = TarReader::new();
    let mut p = Progress::new(
        format!("layer {idx} {}", d.digest.short()),
        Some(d.size),
        quiet,
    );
    let mut feed = |data: &[u8]| -> std::result::Result<(), Error> {
        if let Some(h) = diff.as_mut() {
            h.update(data);
        }
        tar.write(data, &mut |e| ex.event(e))
    };
    let mut read = 0u64;
    read_verified_ahead(
        body,
        d,
        &format!("layer {idx} ({}) downloaded from {r}", d.digest),
        &mut |piece: &[u8]| {
            read += piece.len() as u64;
            p.set(read);
            if c == Compression::None {
                return feed(piece);
            }
            dec.write(piece, &mut |o: &[u8]| feed(o))
                .map_err(resolve::flatten)
        },
    )?;
    dec.finish(&mut |o: &[u8]| feed(o))
        .map_err(resolve::flatten)?;
    if let (Some(got), Some(want)) = (diff.map(Hasher::finish), diff_id) {
        if &got != want {
            return Err(diff_mismatch(want, got));
        }
    }
    tar.finish()?;
    p.finish(d.size);
    if c != Compression::None && !quiet {
        eprintln!("layer {idx}: {} verified", d.digest);
    }
    Ok(())
}

/// The rule of a model artifact's files, between the layers and where their events go: the
/// files sit side by side, so a layer never deletes another's (a whiteout entry is skipped) and
/// never replaces a file another layer has (the second one is skipped with a warning, whatever
/// order the layers are read in). For an image, events pass untouched.
struct Files {
    artifact: bool,
    /// File path -> the layer that has it.
    owner: std::collections::HashMap<String, usize>,
    layer: usize,
    skipping: bool,
    warnings: u64,
}

impl Files {
    fn new(artifact: bool) -> Self {
        Files {
            artifact,
            owner: std::collections::HashMap::new(),
            layer: 0,
            skipping: false,
            warnings: 0,
        }
    }

    fn next_layer(&mut self, i: usize) {
        self.layer = i;
        self.skipping = false;
    }

    fn over<'a>(&'a mut self, inner: &'a mut dyn EventSink) -> FilesSink<'a> {
        FilesSink { files: self, inner }
    }

    fn warn(&mut self, msg: String) {
        self.warnings += 1;
        crate::ui::progress::warn(&format!("warning: {msg}"));
    }
}

/// [`Files`] in front of a sink, for one layer.
struct FilesSink<'a> {
    files: &'a mut Files,
    inner: &'a mut dyn EventSink,
}

impl EventSink for FilesSink<'_> {
    fn event(&mut self, e: Event<'_>) -> std::result::Result<(), Error> {
        let f = &mut *self.files;
        if !f.artifact {
            return self.inner.event(e);
        }
        match e {
            Event::Entry(h) => {
                f.skipping = false;
                let Some(p) = safe_path(&h.path) else {
                    // the sink says why
                    return self.inner.event(e);
                };
                let base = p.rsplit('/').next().unwrap_or(&p);
                if base.starts_with(".wh.") {
                    f.warn(format!(
                        "skipped {:?} in layer {}: a model artifact's layer deletes nothing",
                        h.path, f.layer
                    ));
                    f.skipping = true;
                    return Ok(());
                }
                if !matches!(h.kind, Kind::Dir) {
                    match f.owner.get(&p) {
                        Some(&other) if other != f.layer => {
                            f.warn(format!(
                                "skipped {p:?} in layer {}: layer {other} has that file",
                                f.layer
                            ));
                            f.skipping = true;
                            return Ok(());
                        }
                        _ => {
                            f.owner.insert(p, f.layer);
                        }
                    }
                }
                self.inner.event(e)
            }
            Event::Data(_) if f.skipping => Ok(()),
            Event::EntryEnd if f.skipping => {
                f.skipping = false;
                Ok(())
            }
            e => self.inner.event(e),
        }
    }
}

/// Where a layer's tar events go: a directory ([`Extractor`]) or a merged tar ([`TarMerge`]).
trait EventSink {
    fn event(&mut self, e: Event<'_>) -> std::result::Result<(), Error>;
}

impl EventSink for Extractor {
    fn event(&mut self, e: Event<'_>) -> std::result::Result<(), Error> {
        Extractor::event(self, e)
    }
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
        crate::ui::progress::warn(&format!("warning: {msg}"));
    }

    /// Maps an image path into the output (prefix stripped); `None` if outside the sub-tree.
    fn map(&self, image_path: &str) -> Option<String> {
        map_prefix(self.prefix.as_deref(), image_path)
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

/// Writes the extracted tree as one tar straight from the layers, without a copy on disk:
/// layers are read from the top down, and an entry is written unless a higher layer already
/// wrote its path, whited it (or an ancestor) out, made an ancestor opaque, or put a
/// non-directory where an ancestor would be. Duplicates within one layer are written again (the
/// later one wins when the tar is unpacked, as in the layer). The same safety rules as for a
/// directory apply (paths that climb out, links that point out, devices).
fn tar_out(
    client: &mut Client,
    a: &Args,
    image: &Loc,
    quiet: bool,
    img: &resolve::Image,
    job: &Job,
    file: Option<PathBuf>,
) -> Result<()> {
    let (layers, picked, prefix) = (&job.layers, &job.picked, job.prefix.clone());
    let part = match &file {
        Some(f) => {
            let parent = f
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
            crate::store::cleanup::sweep(parent);
            Some(f.with_file_name(format!(
                ".{}.lamina-partial-{}.tar",
                f.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                std::process::id()
            )))
        }
        None => None,
    };
    let _reg = part.as_ref().map(|p| crate::store::cleanup::register(p));
    let mut guard = Cleanup(part.iter().cloned().collect());
    let out: Box<dyn std::io::Write> = match &part {
        Some(p) => Box::new(std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::with_capacity(
            1 << 20,
            std::io::stdout().lock(),
        )),
    };
    let mut m = TarMerge {
        tw: lamina_core::tar::TarWriter::new(crate::ops::build::source_date_epoch().unwrap_or(0)),
        out,
        out_err: None,
        prefix: prefix.clone(),
        layer: 0,
        written: std::collections::HashMap::new(),
        whited: HashSet::new(),
        opaque: HashSet::new(),
        pending_whited: Vec::new(),
        pending_opaque: Vec::new(),
        in_file: false,
        entries: 0,
        files: 0,
        bytes: 0,
        warnings: 0,
    };
    let mut files = Files::new(job.artifact);
    let globs = Globs::of(a, prefix.as_deref());
    let mut ranged = 0u64;
    for &i in picked.iter().rev() {
        m.layer = i;
        files.next_layer(i);
        let mut sink = files.over(&mut m);
        let pick = Pick {
            layers,
            how: &job.how,
            globs: &globs,
        };
        let r = picked_layer(client, image, &pick, i, &mut sink, &mut ranged, quiet);
        if file.is_none() && m.broken_pipe() {
            // the reader went away (`| head`): not an error, and nothing more to download
            return Err(Box::new(crate::ui::out::Closed));
        }
        r?;
        m.end_layer();
    }
    if m.entries == 0 {
        return Err(format!(
            "{}: nothing under /{} in layer(s) {:?}; see `lamina layers`, or use --path or --all",
            image,
            prefix.as_deref().unwrap_or(""),
            picked
        )
        .into());
    }
    m.warnings += files.warnings;
    let r = m.finish();
    if file.is_none() && m.broken_pipe() {
        return Err(Box::new(crate::ui::out::Closed));
    }
    r?;
    let mut out = m.out;
    out.flush().map_err(|e| match &file {
        None => crate::ui::out::io(&e),
        Some(_) => format!("writing the tar: {e}").into(),
    })?;
    drop(out);
    if let (Some(p), Some(f)) = (&part, &file) {
        std::fs::File::open(p)
            .and_then(|h| h.sync_all())
            .map_err(|e| format!("{}: {e}", p.display()))?;
        std::fs::rename(p, f).map_err(|e| format!("{}: {e}", f.display()))?;
        guard.0.clear();
    }
    report(
        a,
        image,
        quiet,
        img,
        prefix.as_deref(),
        picked,
        (m.files, m.bytes, m.warnings),
        &format!(" as a tar{}", by_range(ranged)),
    )
}

/// See [`tar_out`]. Paths are image paths (relative, no leading `/`) until [`TarMerge::map`].
struct TarMerge {
    tw: lamina_core::tar::TarWriter,
    out: Box<dyn std::io::Write>,
    out_err: Option<std::io::Error>,
    prefix: Option<String>,
    layer: usize,
    /// Image path -> (the layer that wrote it, whether it is a directory).
    written: std::collections::HashMap<String, (usize, bool)>,
    /// Paths whited out by a higher layer (with everything below them).
    whited: HashSet<String>,
    /// Directories a higher layer made opaque (what lower layers have below them is hidden).
    opaque: HashSet<String>,
    pending_whited: Vec<String>,
    pending_opaque: Vec<String>,
    in_file: bool,
    entries: u64,
    files: u64,
    bytes: u64,
    warnings: u64,
}

impl TarMerge {
    fn warn(&mut self, msg: String) {
        self.warnings += 1;
        crate::ui::progress::warn(&format!("warning: {msg}"));
    }

    fn broken_pipe(&self) -> bool {
        self.out_err
            .as_ref()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    }

    /// The layer is done: its whiteouts and opaque markers now apply to the layers below.
    fn end_layer(&mut self) {
        self.whited.extend(self.pending_whited.drain(..));
        self.opaque.extend(self.pending_opaque.drain(..));
    }

    fn map(&self, image_path: &str) -> Option<String> {
        map_prefix(self.prefix.as_deref(), image_path)
    }

    /// Whether a higher layer hides `path`.
    fn hidden(&self, path: &str) -> bool {
        if let Some(&(l, _)) = self.written.get(path) {
            if l != self.layer {
                return true;
            }
        }
        let mut anc = path;
        let mut first = true;
        loop {
            if self.whited.contains(anc) {
                return true;
            }
            if !first {
                if self.opaque.contains(anc) {
                    return true;
                }
                if let Some(&(l, false)) = self.written.get(anc) {
                    if l != self.layer {
                        return true;
                    }
                }
            }
            first = false;
            match anc.rsplit_once('/') {
                Some((d, _)) => anc = d,
                None => break,
            }
        }
        // the root's opaque marker hides everything below
        self.opaque.contains("")
    }

    fn write(
        &mut self,
        f: impl FnOnce(
            &mut lamina_core::tar::TarWriter,
            &mut dyn FnMut(&[u8]),
        ) -> std::result::Result<(), Error>,
    ) -> std::result::Result<(), Error> {
        let out = &mut self.out;
        let err = &mut self.out_err;
        let mut sink = |b: &[u8]| {
            if err.is_none() {
                if let Err(e) = out.write_all(b) {
                    *err = Some(e);
                }
            }
        };
        f(&mut self.tw, &mut sink)?;
        // any write error stops the layer; `tar_out` tells a closed stdout from a failure
        match &self.out_err {
            Some(e) => Err(Error::Io {
                what: "the tar output".into(),
                reason: e.to_string(),
            }),
            None => Ok(()),
        }
    }

    fn finish(&mut self) -> std::result::Result<(), Error> {
        self.write(|tw, sink| tw.finish(sink))
    }
}

impl EventSink for TarMerge {
    fn event(&mut self, e: Event<'_>) -> std::result::Result<(), Error> {
        use lamina_core::tar::EntryKind;
        match e {
            Event::Entry(h) => {
                self.in_file = false;
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
                    Some((d, b)) => (d.to_string(), b.to_string()),
                    None => (String::new(), image_path.clone()),
                };
                if let Some(name) = base.strip_prefix(".wh.") {
                    if name == ".wh..opq" {
                        self.pending_opaque.push(dir);
                    } else if dir.is_empty() {
                        self.pending_whited.push(name.to_string());
                    } else {
                        self.pending_whited.push(format!("{dir}/{name}"));
                    }
                    return Ok(());
                }
                if self.hidden(&image_path) {
                    return Ok(());
                }
                let Some(rel) = self.map(&image_path).filter(|r| !r.is_empty()) else {
                    return Ok(());
                };
                let kind = match &h.kind {
                    Kind::Dir => EntryKind::Dir,
                    Kind::File => EntryKind::File {
                        size: h.size,
                        executable: h.mode & 0o111 != 0,
                    },
                    Kind::Symlink(target) => {
                        match resolve_link(&image_path, target).and_then(|t| self.map(&t)) {
                            Some(_) if target.starts_with('/') => {
                                let to = resolve_link(&image_path, target).unwrap_or_default();
                                EntryKind::Symlink(relative(&image_path, &to))
                            }
                            Some(_) => EntryKind::Symlink(target.clone()),
                            None => {
                                self.warn(format!("skipped symlink {:?} -> {target:?}: it points outside the extracted tree", h.path));
                                return Ok(());
                            }
                        }
                    }
                    Kind::Hardlink(target) => {
                        // the target must be in this tar already, from this same layer
                        let t = safe_path(target);
                        let ok = t.as_deref().and_then(|t| {
                            let (l, is_dir) = *self.written.get(t)?;
                            (l == self.layer && !is_dir).then(|| self.map(t)).flatten()
                        });
                        match ok.filter(|t| !t.is_empty()) {
                            Some(t) => EntryKind::Hardlink(t),
                            None => {
                                self.warn(format!("skipped hard link {:?} -> {target:?}: its target is not an extracted file of the same layer", h.path));
                                return Ok(());
                            }
                        }
                    }
                    Kind::Other(t) => {
                        self.warn(format!(
                            "skipped {:?}: device, FIFO or unknown entry type {:?}",
                            h.path, *t as char
                        ));
                        return Ok(());
                    }
                };
                let is_dir = matches!(kind, EntryKind::Dir);
                let is_file = matches!(kind, EntryKind::File { .. });
                if matches!(kind, EntryKind::File { .. } | EntryKind::Hardlink(_)) {
                    self.files += 1;
                }
                self.written.insert(image_path, (self.layer, is_dir));
                self.entries += 1;
                self.write(|tw, sink| tw.entry(&rel, &kind, sink))?;
                self.in_file = is_file;
                Ok(())
            }
            Event::Data(d) => {
                if !self.in_file {
                    return Ok(());
                }
                self.bytes += d.len() as u64;
                self.write(|tw, sink| tw.data(d, sink))
            }
            Event::EntryEnd => {
                if std::mem::take(&mut self.in_file) {
                    self.tw.end_file()?;
                }
                Ok(())
            }
        }
    }
}
