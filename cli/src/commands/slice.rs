//! `lamina slice save|load|ls`: delta archives holding only the blobs above shared base images
//! (see `lamina_core::slice` for the format).

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use lamina_core::image::{detect_kind, Descriptor, Index, Manifest, MAX_MANIFEST_SIZE};
use lamina_core::layer::LayerInfo;
use lamina_core::layout::{self, LayoutIndex};
use lamina_core::media::{self, DocKind};
use lamina_core::registry::{MountBlob, UploadConfig};
use lamina_core::slice::{self, Base, Blob, Meta};
use lamina_core::tar::{EntryKind, TarWriter};
use lamina_core::{Digest, Error};

use crate::commands::{Ctx, Roles};
use crate::error::Result;
use crate::net::client::{Chunker, Client, Data};
use crate::ops::resolve::{self, PlatformSel};
use crate::store::verify::read_verified;
use crate::store::{self, Loc};
use crate::ui::progress::{human, Progress};

/// One manifest, index or config of the sliced image.
#[derive(Debug, Clone)]
struct Doc {
    digest: Digest,
    media_type: String,
    bytes: Vec<u8>,
}

/// What an image is made of: its manifests and indexes (top first, children after their index),
/// its configs' and layers' descriptors.
struct Parts {
    docs: Vec<Doc>,
    configs: Vec<Descriptor>,
    layers: Vec<Descriptor>,
}

/// The parts of an image, every platform of an index unless `sel` picks one (the slice's top is
/// then that platform's manifest). Only manifests are read; configs and layers are named.
fn collect(client: &mut Client, loc: &Loc, sel: Option<&PlatformSel>) -> Result<Parts> {
    let top = store::get_manifest(client, loc, &loc.reference())?;
    let (kind, mt) = detect_kind(&top.bytes, top.content_type.as_deref())?;
    let (mut docs, mut configs, mut layers) = (Vec::new(), Vec::new(), Vec::new());
    let first = match (kind, sel) {
        (DocKind::Index(_), Some(PlatformSel::One(p))) => {
            let ix = Index::parse(top.bytes.clone(), &mt)?;
            ix.manifests()?.swap_remove(ix.select(p)?)
        }
        _ => Descriptor::new(mt, top.digest.clone(), top.bytes.len() as u64),
    };
    let mut todo = vec![first];
    let mut seen = HashSet::new();
    while let Some(d) = todo.pop() {
        if !seen.insert(d.digest.clone()) {
            continue;
        }
        let f = if d.digest == top.digest {
            top.clone()
        } else {
            store::get_manifest(client, loc, &d.digest.to_string())?
        };
        let (kind, mt) = detect_kind(&f.bytes, f.content_type.as_deref().or(Some(&d.media_type)))?;
        match kind {
            DocKind::Index(_) => {
                let ix = Index::parse(f.bytes.clone(), &mt)?;
                let mut children = ix.manifests()?;
                children.reverse();
                todo.extend(children);
            }
            DocKind::Manifest(_) => {
                let m = Manifest::parse(f.bytes.clone(), &mt)?;
                let c = m.config()?;
                if !configs.iter().any(|x: &Descriptor| x.digest == c.digest) {
                    configs.push(c);
                }
                layers.extend(m.layers()?);
            }
        }
        docs.push(Doc {
            digest: f.digest,
            media_type: mt,
            bytes: f.bytes,
        });
    }
    // the top was handled first, so it is docs[0]; children follow their index
    Ok(Parts {
        docs,
        configs,
        layers,
    })
}

/// Delta archives for offline sites: only the blobs above shared base images.
///
/// `save` writes an OCI layout tar (skopeo and oras read it) holding the image's manifests,
/// config and only the blobs no base image has, plus lamina-slice.json listing what was left
/// out. `load` checks that the destination has every blob left out and stops before writing
/// anything if not, then uploads the blobs (digests verified as they stream) and the
/// manifests; the image keeps its digest.
///
/// Examples:
///   lamina slice save r8.im/me/model:v2 --base r8.im/me/base -o model-v2.slice.tar
///   lamina slice save me/model --base nvidia/cuda:12 --base me/torch -o - | ssh site lamina slice load - --dest reg.local/me/model
///   lamina slice ls model-v2.slice.tar
///   lamina slice load model-v2.slice.tar --dest 10.0.0.5:5000/me/model:v2 --from me/base
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

/// `slice`'s subcommands.
#[derive(clap::Subcommand, Debug)]
enum Cmd {
    Save(SaveArgs),
    Load(LoadArgs),
    Ls(LsArgs),
}

/// Runs `slice save|load|ls`.
pub fn run(ctx: &mut Ctx, a: Args) -> Result<()> {
    match a.cmd {
        Cmd::Save(a) => save(ctx, a),
        Cmd::Load(a) => load(ctx, a),
        Cmd::Ls(a) => ls(a),
    }
}

impl Args {
    /// The images `slice save` reads, and the image it writes or `slice load`'s destination.
    pub fn roles(&self) -> Roles<'_> {
        match &self.cmd {
            Cmd::Save(s) => Roles {
                dest: Some(&s.image),
                sources: std::iter::once(s.image.as_str())
                    .chain(s.bases.iter().map(String::as_str))
                    .collect(),
            },
            Cmd::Load(l) => Roles {
                dest: Some(&l.dest),
                sources: Vec::new(),
            },
            Cmd::Ls(_) => Roles::default(),
        }
    }
}

/// Write a delta archive of IMAGE against one or more base images.
#[derive(clap::Args, Debug)]
pub struct SaveArgs {
    /// The image to ship.
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// A base image the offline site already has (repeatable).
    #[arg(long = "base", value_name = "REF", required = true)]
    pub bases: Vec<String>,
    /// The archive to write (- for stdout).
    #[arg(short, long, value_name = "FILE")]
    pub output: String,
    /// One platform of an index (os/arch[/variant]), or all [default: all].
    #[arg(long)]
    pub platform: Option<String>,
    /// Print a JSON summary (on stderr with -o -, whose stdout is the archive).
    #[arg(long)]
    pub json: bool,
}

/// `lamina slice save`.
pub fn save(ctx: &mut Ctx, a: SaveArgs) -> Result<()> {
    let image = ctx.source("image", &a.image)?;
    let mut opened = Vec::new();
    for b in &a.bases {
        opened.push((b.clone(), ctx.source("--base", b)?));
    }
    let (client, quiet) = (&mut ctx.client, ctx.quiet);
    let t0 = std::time::Instant::now();
    let sel = match a.platform.as_deref() {
        None | Some("all") => None,
        Some(p) => Some(PlatformSel::parse(Some(p))?),
    };
    let Parts {
        mut docs,
        configs,
        layers,
    } = collect(client, &image, sel.as_ref())?;
    // the configs travel in the archive, after the manifests
    for c in configs {
        let bytes = resolve::config_bytes(client, &image, &c)?;
        docs.push(Doc {
            digest: c.digest,
            media_type: c.media_type,
            bytes,
        });
    }
    // of the bases, only what their manifests name is needed
    let mut bases = Vec::new();
    let mut base_meta = Vec::new();
    for (name, loc) in &opened {
        let b = collect(client, loc, None)?;
        let ds: Vec<Digest> = (b.layers.iter().chain(&b.configs))
            .map(|d| d.digest.clone())
            .chain(b.docs.iter().map(|d| d.digest.clone()))
            .collect();
        base_meta.push(Base {
            reference: name.clone(),
            digest: b.docs[0].digest.to_string(),
        });
        bases.push((name.clone(), ds));
    }
    let (included, omitted) = slice::split(&layers, &bases);
    let tag = image.tag().to_string();
    let top = &docs[0];
    let meta = Meta {
        lamina_slice: slice::VERSION,
        image: a.image.clone(),
        digest: top.digest.to_string(),
        media_type: top.media_type.clone(),
        tag: tag.clone(),
        bases: base_meta,
        documents: docs
            .iter()
            .map(|d| Blob {
                digest: d.digest.to_string(),
                size: d.bytes.len() as u64,
                media_type: d.media_type.clone(),
                base: None,
            })
            .collect(),
        included: included.clone(),
        omitted,
    };
    let mut ix = LayoutIndex::empty();
    ix.set_tag(
        &tag,
        &Descriptor::new(
            top.media_type.clone(),
            top.digest.clone(),
            top.bytes.len() as u64,
        ),
    )?;

    // the archive: to a temp file renamed at the end, or to stdout
    let to_stdout = a.output == "-";
    if to_stdout && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(Box::new(Error::Usage {
            reason: "refusing to write an archive to the terminal: give -o FILE or pipe it".into(),
        }));
    }
    let out_path = PathBuf::from(&a.output);
    let tmp = out_path.with_file_name(format!(
        "{}.lamina-tmp-{}",
        out_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let _reg = crate::store::cleanup::register(&tmp);
    if !to_stdout {
        crate::store::cleanup::sweep_beside(&tmp);
    }
    let mut sink: Box<dyn Write> = if to_stdout {
        Box::new(std::io::BufWriter::with_capacity(
            1 << 20,
            std::io::stdout().lock(),
        ))
    } else {
        Box::new(std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?,
        ))
    };
    let r = write_archive(
        client, &a, &image, quiet, &mut *sink, &meta, &mut ix, &docs, &included,
    );
    let r = r.and_then(|()| {
        sink.flush().map_err(|e| {
            if to_stdout {
                crate::ui::out::io(&e)
            } else {
                format!("writing the archive: {e}").into()
            }
        })
    });
    drop(sink);
    if let Err(e) = r {
        if !to_stdout {
            let _ = std::fs::remove_file(&tmp);
        }
        return Err(e);
    }
    if !to_stdout {
        std::fs::rename(&tmp, &out_path).map_err(|e| format!("{}: {e}", out_path.display()))?;
    }
    let (inc, om) = (meta.included_bytes(), meta.omitted_bytes());
    let saved = if inc + om == 0 {
        0.0
    } else {
        100.0 * om as f64 / (inc + om) as f64
    };
    if a.json {
        let j = serde_json::json!({
            "archive": a.output,
            "image": meta.image,
            "digest": meta.digest,
            "included": {"blobs": meta.documents.len() + meta.included.len(), "bytes": inc},
            "omitted": {"blobs": meta.omitted.len(), "bytes": om},
            "seconds": t0.elapsed().as_secs_f64(),
        });
        // stdout is the archive with -o -: the summary goes to stderr
        if to_stdout {
            eprintln!("{j}");
        } else {
            outln!("{j}")?;
        }
    } else if !quiet || !to_stdout {
        let line =
            format!(
            "{}: {} blobs, {} in the archive; {} blobs, {} left to the bases ({saved:.1}% saved)",
            if to_stdout { "stdout" } else { a.output.as_str() },
            meta.documents.len() + meta.included.len(),
            human(inc),
            meta.omitted.len(),
            human(om),
        );
        if to_stdout {
            eprintln!("{line}");
        } else {
            outln!("{line}")?;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn write_archive(
    client: &mut Client,
    a: &SaveArgs,
    image: &Loc,
    quiet: bool,
    out: &mut dyn Write,
    meta: &Meta,
    ix: &mut LayoutIndex,
    docs: &[Doc],
    included: &[Blob],
) -> Result<()> {
    let mtime = crate::ops::build::source_date_epoch().unwrap_or(0);
    let mut tw = TarWriter::new(mtime);
    // the first write error; the archive stops at the next blob piece (a closed pipe: `| head`)
    let err: std::cell::RefCell<Option<std::io::Error>> = std::cell::RefCell::new(None);
    let failed = || -> Option<crate::error::Error> {
        err.borrow_mut().take().map(|e| {
            if a.output == "-" {
                crate::ui::out::io(&e)
            } else {
                format!("writing the archive: {e}").into()
            }
        })
    };
    let mut put = |b: &[u8]| {
        if err.borrow().is_none() {
            if let Err(e) = out.write_all(b) {
                *err.borrow_mut() = Some(e);
            }
        }
    };
    small(
        &mut tw,
        layout::LAYOUT_FILE,
        layout::LAYOUT_FILE_CONTENT,
        &mut put,
    )?;
    small(&mut tw, slice::META_FILE, &meta.to_json(), &mut put)?;
    small(&mut tw, layout::INDEX_FILE, ix.bytes(), &mut put)?;
    tw.entry("blobs", &EntryKind::Dir, &mut put)?;
    tw.entry("blobs/sha256", &EntryKind::Dir, &mut put)?;
    for d in docs {
        small(&mut tw, &layout::blob_path(&d.digest), &d.bytes, &mut put)?;
    }
    for b in included {
        let digest = Digest::parse(&b.digest)?;
        let want = Descriptor::new(b.media_type.clone(), digest.clone(), b.size);
        let mut body = store::open_blob(client, image, &digest)?;
        tw.entry(
            &layout::blob_path(&digest),
            &EntryKind::File {
                size: b.size,
                executable: false,
            },
            &mut put,
        )?;
        let mut p = Progress::new(format!("blob {}", digest.short()), Some(b.size), quiet);
        let mut done = 0u64;
        let r = read_verified(
            &mut body,
            &want,
            &format!("blob {digest} of {}", image),
            &mut |piece: &[u8]| {
                done += piece.len() as u64;
                p.set(done);
                tw.data(piece, &mut put)?;
                if err.borrow().is_some() {
                    // reported as the write error below, not as this
                    return Err(Error::Protocol {
                        reason: "the archive could not be written".into(),
                    });
                }
                Ok(())
            },
        );
        if let Some(e) = failed() {
            // no more downloads for an archive no one reads
            return Err(e);
        }
        r?;
        if b.size > 0 {
            tw.end_file()?;
        }
        p.finish(b.size);
    }
    tw.finish(&mut put)?;
    failed().map_or(Ok(()), Err)
}

fn small(tw: &mut TarWriter, name: &str, bytes: &[u8], put: &mut dyn FnMut(&[u8])) -> Result<()> {
    tw.entry(
        name,
        &EntryKind::File {
            size: bytes.len() as u64,
            executable: false,
        },
        put,
    )?;
    if !bytes.is_empty() {
        tw.data(bytes, put)?;
        tw.end_file()?;
    }
    Ok(())
}

/// Members of a slice as a reader thread hands them over.
enum Member {
    /// The metadata, `index.json`, and the documents (verified).
    Small(String, Vec<u8>),
    /// An included blob, streaming (verified against its name by the reader).
    Blob(Blob, Receiver<Data>),
    /// The archive ended (with its end-of-archive marker or not).
    End,
    /// The archive could not be read.
    Failed(String),
}

fn open_input(input: &str) -> Result<Box<dyn Read + Send>> {
    if input == "-" {
        Ok(Box::new(std::io::stdin()))
    } else {
        Ok(Box::new(
            std::fs::File::open(input).map_err(|e| format!("{input}: {e}"))?,
        ))
    }
}

/// Reads the archive on its own thread, handing members over one by one. Small members are read
/// whole (up to the manifest size limit); blobs stream through a channel of 1 MiB pieces with
/// their digest and size checked against their name and the metadata.
fn reader(input: Box<dyn Read + Send>, tx: SyncSender<Member>) {
    let fail = |tx: &SyncSender<Member>, e: String| {
        let _ = tx.send(Member::Failed(e));
    };
    let mut ar = tar::Archive::new(input);
    let entries = match ar.entries() {
        Ok(e) => e,
        Err(e) => return fail(&tx, format!("not a tar: {e}")),
    };
    let mut meta: Option<Meta> = None;
    for e in entries {
        let mut e = match e {
            Ok(e) => e,
            Err(e) => return fail(&tx, format!("the archive is damaged or truncated: {e}")),
        };
        if e.header().entry_type().is_dir() {
            continue;
        }
        let name = match e.path() {
            Ok(p) => p.to_string_lossy().trim_start_matches("./").to_string(),
            Err(err) => return fail(&tx, format!("a member has an unreadable name: {err}")),
        };
        let size = e.size();
        if meta.is_none() && name != layout::LAYOUT_FILE && name != slice::META_FILE {
            return fail(
                &tx,
                format!(
                    "not a lamina slice: {} comes first in one, found {name:?}",
                    slice::META_FILE
                ),
            );
        }
        let blob = meta.as_ref().and_then(|m| {
            name.strip_prefix("blobs/sha256/")
                .and_then(|hex| {
                    m.included
                        .iter()
                        .find(|b| b.digest == format!("sha256:{hex}"))
                })
                .cloned()
        });
        if let Some(b) = blob {
            if size != b.size {
                return fail(
                    &tx,
                    format!(
                        "{name}: {size} bytes in the archive, the metadata says {}",
                        b.size
                    ),
                );
            }
            let (btx, brx) = sync_channel::<Data>(1);
            if tx.send(Member::Blob(b.clone(), brx)).is_err() {
                return;
            }
            let mut ch = Chunker::new(1 << 20, btx);
            let want = match Digest::parse(&b.digest) {
                Ok(d) => Descriptor::new(b.media_type.clone(), d, b.size),
                Err(err) => return fail(&tx, err.to_string()),
            };
            let r = read_verified(&mut e, &want, &format!("{name} in the archive"), &mut |p| {
                ch.push(p);
                if ch.closed {
                    return Err(Error::Protocol {
                        reason: "upload stopped".into(),
                    });
                }
                Ok(())
            })
            .map(|()| LayerInfo {
                compression: lamina_core::compress::Compression::None,
                digest: want.digest.clone(),
                size: want.size,
                diff_id: want.digest.clone(),
                uncompressed_size: want.size,
            });
            let failed = r.is_err();
            ch.done(r);
            if failed {
                return;
            }
            continue;
        }
        let limit = if name == slice::META_FILE {
            slice::MAX_META_SIZE
        } else {
            MAX_MANIFEST_SIZE
        };
        if size > limit {
            return fail(
                &tx,
                format!(
                    "{name}: {size} bytes, not a blob the metadata lists and too large for a \
                     manifest or config"
                ),
            );
        }
        let mut v = Vec::with_capacity(size as usize);
        if let Err(err) = (&mut e).take(limit + 1).read_to_end(&mut v) {
            return fail(
                &tx,
                format!("the archive is damaged or truncated at {name}: {err}"),
            );
        }
        if v.len() as u64 != size {
            return fail(&tx, format!("the archive is truncated at {name}"));
        }
        if name == slice::META_FILE {
            match Meta::parse(&v) {
                Ok(m) => meta = Some(m),
                Err(err) => return fail(&tx, err.to_string()),
            }
        }
        if tx.send(Member::Small(name, v)).is_err() {
            return;
        }
    }
    let _ = tx.send(Member::End);
}

/// Load a delta archive into a registry or a layout whose base blobs are there.
#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// The archive (- for stdin).
    #[arg(value_name = "FILE")]
    pub input: String,
    /// Where to put the image (a registry reference or oci:DIR[:TAG]).
    #[arg(long, value_name = "REF")]
    pub dest: String,
    /// A repository of the destination registry holding the base blobs, to mount them from
    /// (`me/base`, or a reference there such as `HOST/mirror/base:stable`). Without it, each
    /// base's own repository path is tried.
    #[arg(long, value_name = "REPO|REF")]
    pub from: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Show what an archive holds and what it needs.
#[derive(clap::Args, Debug)]
pub struct LsArgs {
    /// The archive (- for stdin).
    #[arg(value_name = "FILE")]
    pub input: String,
    /// Print the metadata as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `lamina slice load`.
pub fn load(ctx: &mut Ctx, a: LoadArgs) -> Result<()> {
    let dest = ctx.dest("--dest", &a.dest)?;
    let (client, quiet) = (&mut ctx.client, ctx.quiet);
    let t0 = std::time::Instant::now();
    let (tx, rx) = sync_channel::<Member>(1);
    let input = open_input(&a.input)?;
    let th = std::thread::spawn(move || reader(input, tx));
    let r = load_from(client, &a, &dest, quiet, &rx);
    drop(rx); // stops the reader if it is still going
    let _ = th.join();
    let (meta, digest, uploaded) = r?;
    crate::commands::pushed(
        &dest,
        &digest,
        a.json,
        serde_json::json!({
            "source": meta.image,
            "uploaded": {"blobs": uploaded.0, "bytes": uploaded.1},
            "seconds": t0.elapsed().as_secs_f64(),
        }),
    )
}

type Loaded = (Meta, Digest, (usize, u64));

fn load_from(
    client: &mut Client,
    a: &LoadArgs,
    dest: &Loc,
    quiet: bool,
    rx: &Receiver<Member>,
) -> Result<Loaded> {
    let mut meta: Option<Meta> = None;
    let mut docs: HashMap<String, Vec<u8>> = HashMap::new();
    let mut checked = false;
    let mut stored: HashSet<String> = HashSet::new();
    let mut bytes = 0u64;
    loop {
        let m = rx
            .recv()
            // it ends with a last member or Failed; a closed channel is a panic there
            .map_err(|_| Error::internal("the archive reader stopped unexpectedly"))?;
        match m {
            Member::Failed(e) => return Err(format!("{}: {e}", a.input).into()),
            Member::Small(name, v) => {
                if name == slice::META_FILE {
                    meta = Some(Meta::parse(&v)?);
                } else if name == layout::LAYOUT_FILE {
                    layout::check_layout_file(&v)?;
                } else if let Some(hex) = name.strip_prefix("blobs/sha256/") {
                    let d = Digest::parse(&format!("sha256:{hex}"))?;
                    d.verify(&v, &format!("{name} in the archive"))?;
                    docs.insert(d.to_string(), v);
                }
            }
            Member::Blob(b, brx) => {
                let m = meta
                    .as_ref()
                    .ok_or("not a lamina slice: no lamina-slice.json")?;
                if !checked {
                    preflight(client, a, dest, m, &docs)?;
                    checked = true;
                }
                let mut p = Progress::new(
                    format!(
                        "blob {}",
                        b.digest
                            .trim_start_matches("sha256:")
                            .get(..12)
                            .unwrap_or("")
                    ),
                    Some(b.size),
                    quiet,
                );
                let desc = Descriptor::new(b.media_type.clone(), Digest::parse(&b.digest)?, b.size);
                if store::has_blob(client, dest, &desc, true)? {
                    // drain it (the reader still verifies it)
                    while let Ok(d) = brx.recv() {
                        match d {
                            Data::Failed(e) => return Err(Box::new(e)),
                            Data::Done(..) => break,
                            Data::Chunk(_) => {}
                        }
                    }
                } else {
                    let cfg = UploadConfig {
                        chunk_max: 16 << 20,
                        monolithic_max: 1 << 20,
                        stream: true,
                        ..UploadConfig::default()
                    };
                    store::put_stream(client, dest, cfg, brx, None, &mut p, None)?;
                    bytes += b.size;
                }
                p.finish(b.size);
                stored.insert(b.digest);
            }
            Member::End => break,
        }
    }
    let m = meta.ok_or("not a lamina slice: no lamina-slice.json")?;
    if !checked {
        preflight(client, a, dest, &m, &docs)?;
    }
    let missing: Vec<&Blob> = m
        .included
        .iter()
        .filter(|b| !stored.contains(&b.digest))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{}: the archive is truncated: {} of its {} blobs are missing (first: {})",
            a.input,
            missing.len(),
            m.included.len(),
            missing[0].digest
        )
        .into());
    }
    // configs (blobs), then manifests children first, the top last under the tag
    let mut uploaded = m.included.len();
    let mut manifests: Vec<&Blob> = Vec::new();
    for d in &m.documents {
        match media::doc_kind(&d.media_type) {
            Some(_) => manifests.push(d),
            None => {
                let bytes = docs[&d.digest].clone();
                let desc = Descriptor::new(d.media_type.clone(), Digest::parse(&d.digest)?, d.size);
                if !store::has_blob(client, dest, &desc, true)? {
                    store::put_bytes(client, dest, bytes)?;
                    uploaded += 1;
                }
            }
        }
    }
    let mut top = None;
    for d in manifests.iter().rev() {
        let bytes = docs[&d.digest].clone();
        let is_top = d.digest == m.digest;
        let reference = if is_top {
            dest.tag().to_string()
        } else {
            d.digest.clone()
        };
        let got = store::put_manifest(client, dest, &reference, &d.media_type, bytes)?;
        if is_top {
            top = Some(got);
        }
    }
    let top = top.ok_or("the metadata's top manifest is not among its documents")?;
    if top.to_string() != m.digest {
        return Err(format!("pushed {top}, but the slice's image is {}", m.digest).into());
    }
    Ok((m, top, (uploaded, bytes)))
}

/// Before anything is written: every document is in the archive and hashes to its name; every
/// blob a manifest references is in the archive or among the omitted ones; every omitted blob is
/// at the destination (or mounted there from `--from`).
fn preflight(
    client: &mut Client,
    a: &LoadArgs,
    dest: &Loc,
    m: &Meta,
    docs: &HashMap<String, Vec<u8>>,
) -> Result<()> {
    let known: HashSet<&str> = m
        .documents
        .iter()
        .chain(&m.included)
        .chain(&m.omitted)
        .map(|b| b.digest.as_str())
        .collect();
    for d in &m.documents {
        let bytes = docs.get(&d.digest).ok_or_else(|| {
            format!(
                "{}: document {} is missing from the archive (truncated?)",
                a.input, d.digest
            )
        })?;
        match media::doc_kind(&d.media_type) {
            Some(DocKind::Manifest(_)) => {
                let man = Manifest::parse(bytes.clone(), &d.media_type)?;
                let mut refs = vec![man.config()?];
                refs.extend(man.layers()?);
                for r in refs {
                    if !known.contains(r.digest.to_string().as_str()) {
                        return Err(format!(
                            "manifest {} references {}, which is neither in the archive nor \
                             listed as omitted",
                            d.digest, r.digest
                        )
                        .into());
                    }
                }
            }
            Some(DocKind::Index(_)) => {
                let ix = Index::parse(bytes.clone(), &d.media_type)?;
                for e in ix.manifests()? {
                    if !known.contains(e.digest.to_string().as_str()) {
                        return Err(format!(
                            "index {} references {}, which is not in the archive",
                            d.digest, e.digest
                        )
                        .into());
                    }
                }
            }
            None => {}
        }
    }
    // where omitted blobs may be mounted from: --from, then each base's own repository path
    // in the destination registry (a site that mirrored r8.im/me/base as HOST/me/base)
    let from_repo = match (&a.from, &dest) {
        (Some(f), Loc::Registry(d)) => Some(from_repository(f, d)?),
        (Some(_), _) => {
            return Err(Box::new(lamina_core::Error::Usage {
                reason: "--from names a repository of the destination registry; the \
                         destination is a layout"
                    .into(),
            }))
        }
        (None, _) => None,
    };
    let mut missing = Vec::new();
    for b in &m.omitted {
        let digest = Digest::parse(&b.digest)?;
        if let Loc::Registry(d) = &dest {
            let mut candidates: Vec<String> = from_repo.iter().cloned().collect();
            if let Some(base) = b.base.as_deref() {
                if let Ok(lamina_core::reference::ImageRef::Registry(r)) =
                    lamina_core::reference::ImageRef::parse(base, &d.registry)
                {
                    if r.repository != d.repository && !candidates.contains(&r.repository) {
                        candidates.push(r.repository);
                    }
                }
            }
            let mut mounted = false;
            for from in &candidates {
                if client.run(d, MountBlob::new(&d.repository, from, &digest))? {
                    mounted = true;
                    break;
                }
            }
            if mounted {
                continue;
            }
        }
        let desc = Descriptor::new(b.media_type.clone(), digest, b.size);
        if !store::has_blob(client, dest, &desc, true)? {
            missing.push(b);
        }
    }
    if !missing.is_empty() {
        let list: Vec<String> = missing
            .iter()
            .map(|b| {
                format!(
                    "  {} ({}, from base {})",
                    b.digest,
                    human(b.size),
                    b.base.as_deref().unwrap_or("?")
                )
            })
            .collect();
        return Err(format!(
            "{} lacks {} of the {} base blobs this slice leaves out; nothing was written. Load \
             the base image(s) there first{}:\n{}",
            dest,
            missing.len(),
            m.omitted.len(),
            if a.from.is_none() && matches!(dest, Loc::Registry(_)) {
                " (or name a repository holding them with --from)"
            } else {
                ""
            },
            list.join("\n")
        )
        .into());
    }
    Ok(())
}

/// `lamina slice ls`: reads only the first members.
pub fn ls(a: LsArgs) -> Result<()> {
    let (input, json) = (a.input.as_str(), a.json);
    let (tx, rx) = sync_channel::<Member>(1);
    let inp = open_input(input)?;
    let th = std::thread::spawn(move || reader(inp, tx));
    let mut meta = None;
    while let Ok(m) = rx.recv() {
        match m {
            Member::Small(name, v) if name == slice::META_FILE => {
                meta = Some(Meta::parse(&v)?);
                break;
            }
            Member::Small(..) => {}
            Member::Failed(e) => return Err(format!("{input}: {e}").into()),
            Member::Blob(..) | Member::End => break,
        }
    }
    drop(rx);
    let _ = th.join();
    let m = meta.ok_or_else(|| format!("{input}: not a lamina slice (no {})", slice::META_FILE))?;
    let (inc, om) = (m.included_bytes(), m.omitted_bytes());
    if json {
        outln!("{}", String::from_utf8_lossy(&m.to_json()))?;
        return Ok(());
    }
    outln!("{} ({}) tag {}", m.image, m.digest, m.tag)?;
    outln!(
        "in the archive: {} documents, {} layer blobs, {}",
        m.documents.len(),
        m.included.len(),
        human(inc)
    )?;
    for b in &m.included {
        outln!("  {}  {:>10}  {}", b.digest, human(b.size), b.media_type)?;
    }
    outln!(
        "needed at the destination (left out): {} blobs, {}",
        m.omitted.len(),
        human(om)
    )?;
    for base in &m.bases {
        let n: Vec<&Blob> = m
            .omitted
            .iter()
            .filter(|b| b.base.as_deref() == Some(base.reference.as_str()))
            .collect();
        outln!(
            "  base {} ({}): {} blobs, {}",
            base.reference,
            base.digest,
            n.len(),
            human(n.iter().map(|b| b.size).sum())
        )?;
    }
    let full = inc + om;
    outln!(
        "saved {} of a full export of {} ({:.1}%)",
        human(om),
        human(full),
        if full == 0 {
            0.0
        } else {
            100.0 * om as f64 / full as f64
        }
    )?;
    Ok(())
}

/// The repository `--from` names: a bare repository (`me/base`), or a reference in the
/// destination registry (`HOST/me/base:stable`, `me/base@sha256:...`; the tag or digest only
/// says which image, blobs are mounted by repository).
fn from_repository(from: &str, dest: &lamina_core::reference::Reference) -> Result<String> {
    use lamina_core::reference::ImageRef;
    let r = match ImageRef::parse(from, &dest.registry) {
        Ok(ImageRef::Registry(r)) => r,
        Ok(_) => {
            return Err(format!(
                "--from {from}: names a layout; give a repository of {}",
                dest.registry
            )
            .into())
        }
        Err(e) => {
            return Err(Box::new(lamina_core::Error::Usage {
                reason: format!("--from: {e}"),
            }))
        }
    };
    if r.registry != dest.registry {
        return Err(Box::new(lamina_core::Error::Usage {
            reason: format!(
                "--from {from} is in {}, but the destination is in {}: blobs are mounted within \
                 one registry; give a repository of {} (e.g. --from {})",
                r.registry, dest.registry, dest.registry, r.repository
            ),
        }));
    }
    Ok(r.repository)
}
