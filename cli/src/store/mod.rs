//! Where images live: a registry repository, an OCI image layout directory (`oci:DIR[:TAG]`) or
//! a tar of one (`oci-archive:FILE[:TAG]`). Every command reads and writes through these
//! functions, so each works with each.
//!
//! Layout writes are atomic: a blob is written to a temporary file in `blobs/sha256/` and renamed
//! to its digest only once its bytes are verified; `index.json` is replaced by rename, last. An
//! interrupted run leaves the previous layout valid (at worst with an unreferenced temp file).
//! An `oci-archive:` destination is built as a layout in a temporary directory beside the file
//! and packed into place (temp file + rename) when the command succeeds; like skopeo, it
//! replaces the whole file.

pub mod cleanup;
pub mod known;
pub mod verify;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;

use lamina_core::image::{Descriptor, MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE};
use lamina_core::layer::LayerInfo;
use lamina_core::layout::{self, Found, LayoutIndex};
use lamina_core::media;
use lamina_core::reference::{ImageRef, Reference};
use lamina_core::registry::{
    FetchedManifest, GetBlob, GetManifest, GetRange, HeadBlob, PutManifest, Ranged, UploadConfig,
};
use lamina_core::{Digest, Error};

use crate::error::Result;
use crate::net::client::{Client, Data, Restart};
use crate::ui::progress::Progress;

/// An image location.
#[derive(Debug)]
pub enum Loc {
    /// A registry repository (with tag or digest).
    Registry(Reference),
    /// An OCI image layout (possibly unpacked from or packed into an archive).
    Layout(Layout),
}

/// An OCI image layout opened for reading or writing.
#[derive(Debug)]
pub struct Layout {
    /// The layout directory (a temporary one for an archive destination).
    dir: PathBuf,
    /// The tag.
    pub tag: String,
    /// `oci:DIR` or `oci-archive:FILE`, for messages.
    shown: String,
    archive: Option<Archive>,
    /// A destination is created on its first write, so a command that fails early leaves
    /// nothing behind.
    init: std::sync::Once,
    /// A temporary layout directory (an archive destination) goes on a signal too.
    _reg: Option<crate::store::cleanup::Registered>,
}

#[derive(Debug)]
enum Archive {
    /// Read in place: member name -> (offset, size).
    Source {
        file: PathBuf,
        members: HashMap<String, (u64, u64)>,
    },
    /// Packed into `file` by [`commit`]; the layout directory is removed on drop.
    Dest { file: PathBuf },
}

impl Drop for Layout {
    fn drop(&mut self) {
        if let Some(Archive::Dest { .. }) = &self.archive {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl std::fmt::Display for Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Loc::Registry(r) => write!(f, "{r}"),
            Loc::Layout(l) => write!(f, "{}:{}", l.shown, l.tag),
        }
    }
}

fn io_err(
    what: impl std::fmt::Display,
    e: std::io::Error,
) -> Box<dyn std::error::Error + Send + Sync> {
    format!("{what}: {e}").into()
}

impl Loc {
    /// Opens a location to read from. Registry references need no I/O here; layouts must exist.
    pub fn source(r: ImageRef) -> Result<Loc> {
        match r {
            ImageRef::Registry(r) => Ok(Loc::Registry(r)),
            ImageRef::OciLayout { path, tag } => {
                let dir = PathBuf::from(&path);
                check_layout(&dir, &format!("oci:{path}"))?;
                Ok(Loc::Layout(Layout {
                    dir,
                    tag,
                    shown: format!("oci:{path}"),
                    archive: None,
                    init: done_once(),
                    _reg: None,
                }))
            }
            ImageRef::OciArchive { path, tag } => {
                let members = index_archive(Path::new(&path))?;
                let shown = format!("oci-archive:{path}");
                let l = Layout {
                    dir: PathBuf::from(&path),
                    tag,
                    shown: shown.clone(),
                    archive: Some(Archive::Source {
                        file: PathBuf::from(&path),
                        members,
                    }),
                    init: done_once(),
                    _reg: None,
                };
                let marker = l.read_small(layout::LAYOUT_FILE, 4096)?;
                layout::check_layout_file(&marker).map_err(|e| format!("{shown}: {e}"))?;
                Ok(Loc::Layout(l))
            }
        }
    }

    /// Opens a location to write to: a layout directory is created when missing (with an
    /// empty index), an archive gets a temporary layout beside it.
    pub fn dest(r: ImageRef) -> Result<Loc> {
        match r {
            ImageRef::Registry(r) => Ok(Loc::Registry(r)),
            ImageRef::OciLayout { path, tag } => {
                let dir = PathBuf::from(&path);
                let shown = format!("oci:{path}");
                if dir.join(layout::LAYOUT_FILE).exists() {
                    check_layout(&dir, &shown)?;
                } else if fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
                    return Err(format!(
                        "{shown}: the directory is not empty and is not an OCI image layout"
                    )
                    .into());
                }
                Ok(Loc::Layout(Layout {
                    dir,
                    tag,
                    shown,
                    archive: None,
                    init: std::sync::Once::new(),
                    _reg: None,
                }))
            }
            ImageRef::OciArchive { path, tag } => {
                let file = PathBuf::from(&path);
                if file.is_dir() {
                    return Err(format!("oci-archive:{path}: is a directory").into());
                }
                let dir = sibling(&file, &format!(".lamina-{}.d", std::process::id()));
                crate::store::cleanup::sweep_beside(&dir);
                let reg = Some(crate::store::cleanup::register(&dir));
                Ok(Loc::Layout(Layout {
                    _reg: reg,
                    dir,
                    tag,
                    shown: format!("oci-archive:{path}"),
                    archive: Some(Archive::Dest { file }),
                    init: std::sync::Once::new(),
                }))
            }
        }
    }

    /// The name without tag: `registry/repo`, `oci:DIR` or `oci-archive:FILE`.
    pub fn name(&self) -> String {
        match self {
            Loc::Registry(r) => r.name(),
            Loc::Layout(l) => l.shown.clone(),
        }
    }

    /// The tag to write.
    pub fn tag(&self) -> &str {
        match self {
            Loc::Registry(r) => r.tag_or_latest(),
            Loc::Layout(l) => &l.tag,
        }
    }

    /// The reference to read the top manifest by (tag or digest).
    pub fn reference(&self) -> String {
        match self {
            Loc::Registry(r) => r.reference(),
            Loc::Layout(l) => l.tag.clone(),
        }
    }

    /// True when both name the same repository or layout (blobs need no copying).
    pub fn same_store(&self, other: &Loc) -> bool {
        match (self, other) {
            (Loc::Registry(a), Loc::Registry(b)) => {
                a.registry == b.registry && a.repository == b.repository
            }
            (Loc::Layout(a), Loc::Layout(b)) => {
                a.archive.is_none()
                    && b.archive.is_none()
                    && matches!(
                        (fs::canonicalize(&a.dir), fs::canonicalize(&b.dir)),
                        (Ok(x), Ok(y)) if x == y
                    )
            }
            _ => false,
        }
    }
}

fn done_once() -> std::sync::Once {
    let o = std::sync::Once::new();
    o.call_once(|| {});
    o
}

fn sibling(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(suffix);
    file.with_file_name(name)
}

fn check_layout(dir: &Path, shown: &str) -> Result<()> {
    let marker = fs::read(dir.join(layout::LAYOUT_FILE)).map_err(|e| {
        io_err(
            format!("{shown}: not an OCI image layout (no readable oci-layout file)"),
            e,
        )
    })?;
    layout::check_layout_file(&marker).map_err(|e| format!("{shown}: {e}"))?;
    Ok(())
}

/// Creates a layout's directories and files where missing (an empty index).
fn init_layout(dir: &Path) -> Result<()> {
    let shown = dir.display();
    fs::create_dir_all(dir.join("blobs/sha256")).map_err(|e| io_err(&shown, e))?;
    if !dir.join(layout::INDEX_FILE).exists() {
        write_atomic(&dir.join(layout::INDEX_FILE), LayoutIndex::empty().bytes())?;
    }
    if !dir.join(layout::LAYOUT_FILE).exists() {
        write_atomic(&dir.join(layout::LAYOUT_FILE), layout::LAYOUT_FILE_CONTENT)?;
    }
    Ok(())
}

/// Writes a file by temp file + rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = sibling(path, &format!(".lamina-tmp-{}", std::process::id()));
    let _reg = crate::store::cleanup::register(&tmp);
    let r = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.flush()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = r {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(path.display(), e));
    }
    Ok(())
}

/// Indexes a tar archive's regular files by name (offsets of their data), reading headers only.
fn index_archive(file: &Path) -> Result<HashMap<String, (u64, u64)>> {
    let shown = format!("oci-archive:{}", file.display());
    let f = File::open(file).map_err(|e| io_err(&shown, e))?;
    let mut ar = tar::Archive::new(f);
    let mut members = HashMap::new();
    let entries = ar
        .entries_with_seek()
        .map_err(|e| io_err(format!("{shown}: not a tar"), e))?;
    for e in entries {
        let e = e.map_err(|e| io_err(format!("{shown}: not a readable tar"), e))?;
        if !e.header().entry_type().is_file() {
            continue;
        }
        let name = e
            .path()
            .map_err(|e| io_err(&shown, e))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        members.insert(name, (e.raw_file_position(), e.size()));
    }
    Ok(members)
}

impl Layout {
    /// Creates a destination layout on first write.
    fn ready(&self) -> Result<()> {
        let mut r = Ok(());
        self.init.call_once(|| {
            r = init_layout(&self.dir);
            // temporaries a killed run left here
            crate::store::cleanup::sweep(&self.dir);
            crate::store::cleanup::sweep(&self.dir.join("blobs/sha256"));
        });
        r
    }

    /// Opens a member (`index.json`, `blobs/sha256/...`) for reading; its size.
    fn open(&self, name: &str) -> Result<Option<(Box<dyn Read + Send>, u64)>> {
        match &self.archive {
            Some(Archive::Source { file, members }) => {
                let Some(&(off, size)) = members.get(name) else {
                    return Ok(None);
                };
                let mut f = File::open(file).map_err(|e| io_err(&self.shown, e))?;
                f.seek(SeekFrom::Start(off))
                    .map_err(|e| io_err(&self.shown, e))?;
                Ok(Some((Box::new(f.take(size)), size)))
            }
            _ => {
                let p = self.dir.join(name);
                match File::open(&p) {
                    Ok(f) => {
                        let size = f.metadata().map_err(|e| io_err(p.display(), e))?.len();
                        Ok(Some((Box::new(f), size)))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(io_err(p.display(), e)),
                }
            }
        }
    }

    /// Opens bytes `range` of the member `name` (seeking, in a directory or an archive); the
    /// reader ends at the range's end or the member's.
    fn open_range(
        &self,
        name: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Option<Box<dyn Read + Send>>> {
        let (mut f, base, size) = match &self.archive {
            Some(Archive::Source { file, members }) => {
                let Some(&(off, size)) = members.get(name) else {
                    return Ok(None);
                };
                (
                    File::open(file).map_err(|e| io_err(&self.shown, e))?,
                    off,
                    size,
                )
            }
            _ => {
                let p = self.dir.join(name);
                match File::open(&p) {
                    Ok(f) => {
                        let size = f.metadata().map_err(|e| io_err(p.display(), e))?.len();
                        (f, 0, size)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(io_err(p.display(), e)),
                }
            }
        };
        let start = range.start.min(size);
        let end = range.end.clamp(start, size);
        f.seek(SeekFrom::Start(base + start))
            .map_err(|e| io_err(&self.shown, e))?;
        Ok(Some(Box::new(f.take(end - start))))
    }

    fn read_small(&self, name: &str, limit: u64) -> Result<Vec<u8>> {
        let opened = self
            .open(name)?
            .ok_or_else(|| format!("{}: no {name}", self.shown))?;
        self.read_opened(name, opened, limit)
    }

    fn read_opened(
        &self,
        name: &str,
        (mut r, size): (Box<dyn Read + Send>, u64),
        limit: u64,
    ) -> Result<Vec<u8>> {
        if size > limit {
            return Err(Box::new(Error::TooLarge {
                what: format!("{} in {}", name, self.shown),
                limit,
            }));
        }
        let mut v = Vec::with_capacity(size as usize);
        r.read_to_end(&mut v)
            .map_err(|e| io_err(format!("{}: {name}", self.shown), e))?;
        Ok(v)
    }

    /// The layout's `index.json` (empty for a destination not written yet).
    pub fn index(&self) -> Result<LayoutIndex> {
        let raw = match self.open(layout::INDEX_FILE)? {
            Some(opened) => self.read_opened(layout::INDEX_FILE, opened, layout::MAX_INDEX_SIZE)?,
            None if !self.init.is_completed() => return Ok(LayoutIndex::empty()),
            None => return Err(format!("{}: no {}", self.shown, layout::INDEX_FILE).into()),
        };
        LayoutIndex::parse(raw).map_err(|e| format!("{}: {e}", self.shown).into())
    }

    /// Replaces `index.json` (atomically).
    pub fn write_index(&self, ix: &mut LayoutIndex) -> Result<()> {
        self.ready()?;
        write_atomic(&self.dir.join(layout::INDEX_FILE), ix.bytes())
    }

    /// True when the blob is present (with the right size when known).
    pub fn has_blob(&self, d: &Digest, size: Option<u64>) -> bool {
        let name = layout::blob_path(d);
        match &self.archive {
            Some(Archive::Source { members, .. }) => members
                .get(&name)
                .is_some_and(|&(_, s)| size.is_none_or(|w| w == s)),
            _ => fs::metadata(self.dir.join(name))
                .is_ok_and(|m| m.is_file() && size.is_none_or(|w| w == m.len())),
        }
    }

    /// Opens a blob; a clear error when the layout lacks it (sparse layouts hold manifests only).
    pub fn open_blob(&self, d: &Digest) -> Result<(Box<dyn Read + Send>, u64)> {
        self.open(&layout::blob_path(d))?.ok_or_else(|| {
            format!(
                "{}: blob {d} is not in the layout (a sparse layout holds only manifests and \
                 configs; copy the image with its layers, e.g. skopeo copy)",
                self.shown
            )
            .into()
        })
    }

    /// Opens bytes `range` of a blob (see [`Layout::open_blob`] for a missing one).
    pub fn blob_range(
        &self,
        d: &Digest,
        range: std::ops::Range<u64>,
    ) -> Result<Box<dyn Read + Send>> {
        self.open_range(&layout::blob_path(d), range)?
            .ok_or_else(|| {
                format!(
                    "{}: blob {d} is not in the layout (a sparse layout holds only manifests and \
                 configs)",
                    self.shown
                )
                .into()
            })
    }

    /// Reads a small blob (manifest, config) and verifies its digest.
    pub fn read_blob(&self, d: &Digest, limit: u64) -> Result<Vec<u8>> {
        let v = self.read_opened(&layout::blob_path(d), self.open_blob(d)?, limit)?;
        d.verify(&v, &format!("blob {d} in {}", self.shown))?;
        Ok(v)
    }

    /// Writes a blob held in memory (idempotent).
    pub fn write_blob(&self, bytes: &[u8]) -> Result<Digest> {
        self.ready()?;
        let d = Digest::of(bytes);
        if !self.has_blob(&d, Some(bytes.len() as u64)) {
            write_atomic(&self.dir.join(layout::blob_path(&d)), bytes)?;
        }
        Ok(d)
    }

    /// Streams a blob from `r` into the layout: temp file, verified against `want` (digest and
    /// size), then renamed into place.
    pub fn write_blob_from(
        &self,
        r: &mut dyn Read,
        want: &Descriptor,
        what: &str,
        progress: &mut Progress,
    ) -> Result<()> {
        if self.has_blob(&want.digest, Some(want.size)) {
            return Ok(());
        }
        let mut w = self.blob_writer()?;
        let mut done = 0u64;
        crate::store::verify::read_verified(r, want, what, &mut |piece: &[u8]| {
            done += piece.len() as u64;
            progress.set(done);
            w.write(piece)
        })?;
        w.commit(&want.digest)
    }

    /// A writer for a new blob, named once finished.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        self.ready()?;
        let tmp = self.dir.join(format!(
            "blobs/sha256/.lamina-tmp-{}-{}",
            std::process::id(),
            TMP_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let reg = crate::store::cleanup::register(&tmp);
        let f = File::create(&tmp).map_err(|e| io_err(tmp.display(), e))?;
        Ok(BlobWriter {
            f: Some(f),
            _reg: reg,
            tmp,
            dir: self.dir.clone(),
            len: 0,
        })
    }
}

static TMP_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A blob being written to a layout; removed unless committed. It does not hash: its callers
/// know the digest (a producer computed it over the same bytes, or `read_verified` checked it).
#[derive(Debug)]
pub struct BlobWriter {
    // unbuffered: every caller writes pieces of 256 KiB to 1 MiB
    f: Option<File>,
    _reg: crate::store::cleanup::Registered,
    tmp: PathBuf,
    dir: PathBuf,
    len: u64,
}

impl BlobWriter {
    /// Appends bytes.
    pub fn write(&mut self, b: &[u8]) -> std::result::Result<(), Error> {
        self.len += b.len() as u64;
        let f = self.f.as_mut().ok_or_else(|| Error::Protocol {
            reason: "blob writer already closed".into(),
        })?;
        f.write_all(b).map_err(|e| Error::Protocol {
            reason: format!("writing {}: {e}", self.tmp.display()),
        })
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Names the finished file by its digest (already verified by the caller).
    pub fn commit(mut self, want: &Digest) -> Result<()> {
        let mut f = self.f.take().ok_or("blob writer already closed")?;
        f.flush().map_err(|e| io_err(self.tmp.display(), e))?;
        drop(f);
        let to = self.dir.join(layout::blob_path(want));
        fs::rename(&self.tmp, &to).map_err(|e| io_err(to.display(), e))?;
        Ok(())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.f.is_some() || self.tmp.exists() {
            self.f = None;
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Fetches a manifest by tag or digest. For a layout, a tag is looked up in `index.json`
/// (see [`LayoutIndex::find`]); an untagged multi-platform `index.json` is read as the index.
pub fn get_manifest(client: &mut Client, loc: &Loc, reference: &str) -> Result<FetchedManifest> {
    match loc {
        Loc::Registry(r) => client.run(r, GetManifest::new(&r.repository, reference)),
        Loc::Layout(l) => {
            if let Ok(d) = Digest::parse(reference) {
                let bytes = l.read_blob(&d, MAX_MANIFEST_SIZE)?;
                return Ok(FetchedManifest {
                    bytes,
                    digest: d,
                    content_type: None,
                });
            }
            let mut ix = l.index()?;
            match ix
                .find(reference)
                .map_err(|e| format!("{}: {e}", l.shown))?
            {
                Found::Entry(_, e) => {
                    let bytes = l.read_blob(&e.digest, MAX_MANIFEST_SIZE)?;
                    Ok(FetchedManifest {
                        bytes,
                        digest: e.digest,
                        content_type: Some(e.media_type),
                    })
                }
                Found::Whole => {
                    let i = ix.as_index();
                    Ok(FetchedManifest {
                        bytes: i.bytes().to_vec(),
                        digest: i.digest(),
                        content_type: Some(media::OCI_INDEX.into()),
                    })
                }
            }
        }
    }
}

/// Fetches a config blob.
pub fn get_config(client: &mut Client, loc: &Loc, d: &Digest) -> Result<Vec<u8>> {
    match loc {
        Loc::Registry(r) => client.run(r, GetBlob::new(&r.repository, d, MAX_CONFIG_SIZE)),
        Loc::Layout(l) => l.read_blob(d, MAX_CONFIG_SIZE),
    }
}

/// Opens a blob again and again, on any thread: what a copy needs to make its bytes again when
/// the destination lost the upload (a new driver for a registry, the file for a layout).
pub type Reopen = Box<dyn FnMut() -> Result<Box<dyn Read + Send>> + Send>;

/// A [`Reopen`] of blob `d` of `loc`, with `client`'s options.
pub fn reopener(client: &Client, loc: &Loc, d: &Digest) -> Reopen {
    let d = d.clone();
    match loc {
        Loc::Registry(r) => {
            let (opts, r) = (client.options().clone(), r.clone());
            Box::new(move || Ok(Box::new(Client::new(opts.clone())?.open_blob(&r, &d)?)))
        }
        Loc::Layout(l) => {
            let (file, shown) = match &l.archive {
                Some(Archive::Source { file, members }) => {
                    let at = members.get(&layout::blob_path(&d)).copied();
                    (Ok((file.clone(), at)), l.shown.clone())
                }
                _ => (Err(l.dir.join(layout::blob_path(&d))), l.shown.clone()),
            };
            Box::new(move || -> Result<Box<dyn Read + Send>> {
                match &file {
                    Ok((archive, Some((off, size)))) => {
                        let mut f = File::open(archive).map_err(|e| io_err(&shown, e))?;
                        f.seek(SeekFrom::Start(*off))
                            .map_err(|e| io_err(&shown, e))?;
                        Ok(Box::new(f.take(*size)))
                    }
                    Ok((_, None)) => Err(format!("{shown}: blob {d} is not in the archive").into()),
                    Err(path) => Ok(Box::new(
                        File::open(path).map_err(|e| io_err(path.display(), e))?,
                    )),
                }
            })
        }
    }
}

/// Opens a blob for streaming; the caller verifies it (see `verify::read_verified`).
pub fn open_blob(client: &mut Client, loc: &Loc, d: &Digest) -> Result<Box<dyn Read + Send>> {
    match loc {
        Loc::Registry(r) => Ok(Box::new(client.open_blob(r, d)?)),
        Loc::Layout(l) => Ok(l.open_blob(d)?.0),
    }
}

/// Bytes `range` of blob `d` in memory (fewer at the blob's end): a window of tar headers, a
/// weight file's header. A registry that ignores `Range` gives [`Ranged::Ignored`].
pub fn read_range(
    client: &mut Client,
    loc: &Loc,
    d: &Digest,
    range: std::ops::Range<u64>,
) -> Result<Ranged> {
    match loc {
        Loc::Registry(r) => Ok(client.run(r, GetRange::new(&r.repository, d, range))?),
        Loc::Layout(l) => {
            let mut out = Vec::new();
            l.blob_range(d, range)?
                .read_to_end(&mut out)
                .map_err(|e| io_err(format!("blob {d} in {}", l.shown), e))?;
            Ok(Ranged::Bytes(out))
        }
    }
}

/// A reader of bytes `range` of blob `d` (a file inside a layer), resumable in a registry.
pub fn open_range(
    client: &mut Client,
    loc: &Loc,
    d: &Digest,
    range: std::ops::Range<u64>,
) -> Result<Box<dyn Read + Send>> {
    match loc {
        Loc::Registry(r) => Ok(Box::new(client.open_range(r, d, range)?)),
        Loc::Layout(l) => l.blob_range(d, range),
    }
}

/// True when the blob is there (`HEAD` in a registry, with push access when `for_push`) at the
/// descriptor's size (a registry that states another length does not hold that blob; one that
/// states none is taken at its word).
pub fn has_blob(client: &mut Client, loc: &Loc, d: &Descriptor, for_push: bool) -> Result<bool> {
    match loc {
        Loc::Registry(r) => Ok(matches!(
            client.run(r, HeadBlob::new(&r.repository, &d.digest, for_push))?,
            Some(n) if n == d.size || n == 0
        )),
        Loc::Layout(l) => Ok(l.has_blob(&d.digest, Some(d.size))),
    }
}

/// Stores bytes held in memory (configs) as a blob.
pub fn put_bytes(client: &mut Client, loc: &Loc, bytes: Vec<u8>) -> Result<Digest> {
    match loc {
        Loc::Registry(r) => client.upload_bytes(r, bytes),
        Loc::Layout(l) => l.write_blob(&bytes),
    }
}

/// Stores a blob while a producer makes it. A layout takes it into a temp file, checks its size
/// against the producer's, then names it by the producer's digest. A registry upload with an
/// `identity` can be resumed by a later run (see [`crate::net::resume`]).
pub fn put_stream(
    client: &mut Client,
    loc: &Loc,
    cfg: UploadConfig,
    rx: Receiver<Data>,
    restart: Option<Restart>,
    progress: &mut Progress,
    identity: Option<&str>,
) -> Result<(Digest, LayerInfo)> {
    match loc {
        Loc::Registry(r) => client.upload_stream(r, cfg, rx, restart, progress, identity),
        Loc::Layout(l) => l.take_stream(rx, progress),
    }
}

impl Layout {
    /// Takes a blob from a producer: into a temp file, named by the producer's digest when it
    /// finishes (the producer hashed the very bytes it sent).
    pub fn take_stream(
        &self,
        rx: Receiver<Data>,
        progress: &mut Progress,
    ) -> Result<(Digest, LayerInfo)> {
        let mut w = self.blob_writer()?;
        loop {
            match rx.recv() {
                Ok(Data::Chunk(b)) => {
                    w.write(&b)?;
                    progress.set(w.len());
                }
                Ok(Data::Done(b, info)) => {
                    w.write(&b)?;
                    progress.set(w.len());
                    if w.len() != info.size {
                        return Err(Box::new(Error::SizeMismatch {
                            what: "layer written to the layout".into(),
                            expected: info.size,
                            found: w.len(),
                        }));
                    }
                    let d = info.digest.clone();
                    w.commit(&d)?;
                    return Ok((d, info));
                }
                Ok(Data::Failed(e)) => return Err(Box::new(e)),
                Err(_) => return Err("the layer producer stopped without a result".into()),
            }
        }
    }
}

/// Stores a manifest, under `reference` (a tag or its digest). In a layout a tag moves in
/// `index.json`; a digest only stores the blob.
pub fn put_manifest(
    client: &mut Client,
    loc: &Loc,
    reference: &str,
    media_type: &str,
    bytes: Vec<u8>,
) -> Result<Digest> {
    match loc {
        Loc::Registry(r) => client.run(
            r,
            PutManifest::new(&r.repository, reference, media_type, bytes),
        ),
        Loc::Layout(l) => {
            if bytes.len() as u64 > MAX_MANIFEST_SIZE {
                return Err(Box::new(Error::TooLarge {
                    what: format!("manifest for {loc}"),
                    limit: MAX_MANIFEST_SIZE,
                }));
            }
            let size = bytes.len() as u64;
            let d = l.write_blob(&bytes)?;
            if Digest::parse(reference).is_err() {
                let mut ix = l.index()?;
                ix.set_tag(reference, &Descriptor::new(media_type, d.clone(), size))?;
                l.write_index(&mut ix)?;
            }
            Ok(d)
        }
    }
}

/// Finishes a destination: packs an archive into place. Registries and layout directories are
/// complete already.
pub fn commit(loc: &Loc) -> Result<()> {
    let Loc::Layout(l) = loc else { return Ok(()) };
    let Some(Archive::Dest { file }) = &l.archive else {
        return Ok(());
    };
    let tmp = sibling(file, &format!(".lamina-tmp-{}", std::process::id()));
    let _reg = crate::store::cleanup::register(&tmp);
    let r = pack(&l.dir, &tmp)
        .and_then(|_| fs::rename(&tmp, &*file).map_err(|e| io_err(file.display(), e)));
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r
}

/// Tars a layout directory: `oci-layout`, `index.json`, then the blobs, with deterministic
/// headers.
fn pack(dir: &Path, to: &Path) -> Result<()> {
    let f = File::create(to).map_err(|e| io_err(to.display(), e))?;
    let mut b = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, f));
    b.mode(tar::HeaderMode::Deterministic);
    b.follow_symlinks(false);
    let err = |e: std::io::Error| io_err(to.display(), e);
    b.append_path_with_name(dir.join(layout::LAYOUT_FILE), layout::LAYOUT_FILE)
        .map_err(err)?;
    b.append_path_with_name(dir.join(layout::INDEX_FILE), layout::INDEX_FILE)
        .map_err(err)?;
    let mut names: Vec<_> = fs::read_dir(dir.join("blobs/sha256"))
        .map_err(err)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    for n in names {
        b.append_path_with_name(
            dir.join("blobs/sha256").join(&n),
            format!("blobs/sha256/{n}"),
        )
        .map_err(err)?;
    }
    let w = b.into_inner().map_err(err)?;
    let f = w
        .into_inner()
        .map_err(|e| io_err(to.display(), e.into_error()))?;
    f.sync_all().map_err(err)?;
    Ok(())
}

/// Pushes an assembled artifact: its config, then its manifest at the tag `loc` names (the
/// layers are there already); returns the manifest's digest.
pub fn put_artifact(
    client: &mut Client,
    loc: &Loc,
    a: lamina_core::target::Assembled,
) -> Result<Digest> {
    put_bytes(client, loc, a.config)?;
    put_manifest(client, loc, loc.tag(), media::OCI_MANIFEST, a.manifest)
}
