//! The page's `pack`: the dropped files straight into the destination as a CNCF ModelPack,
//! with no base image, the same artifact as `lamina pack DIR --dest REF --format modelpack`
//! makes of the same files with the same `SOURCE_DATE_EPOCH`: each file one raw layer (the
//! blob is the file, sent from it as it is and hashed on the way), the config from the weights'
//! headers and `config.json`, then the config blob and the manifest by its tag, last (a failed
//! run leaves no tag).
//!
//! The files upload [`Opts::jobs`] at a time (4, as `lamina pack -j` does by default): over a
//! long link one upload's stream is slow, several together fill it. WebAssembly here has one
//! thread, so the uploads are futures polled together, each a worker with its own driver (its
//! own registry session, its own connections) taking the next file in path order until none
//! is left; the layers go into the manifest in path order whatever order they finish in, so
//! the artifact is the same at any number of jobs. Each file is read as one upload alone read
//! it (slices of the `File`, never the whole file but for the small ones below), in pieces of
//! [`READ`] / jobs (at least 4 MiB), so that four uploads together hold about what one held;
//! the page's bars are one total over all the files ([`Tally`]) and a bar per file. The first
//! failure ends the job: the other uploads are dropped, and the page's worker aborts their
//! requests (`web/static/worker.js`), leaving their sessions to the registry as a cancel does.
//!
//! Whether the destination has a file's blob already, before sending it: a file's digest is
//! known only once it is read, and a large file is hashed as it uploads, so asking first
//! would read it twice. So the page asks (`HEAD` by digest) only where that is cheap:
//! - a file of at most [`SMALL`] bytes (configs, tokenizers, READMEs) is read whole and hashed
//!   first (one read, as its upload would make anyway), then `HEAD`; it is sent in one `PUT`
//!   from the bytes read only when the destination lacks it;
//! - a file this page (this worker) sent or found before, with the same name, size and time
//!   of modification, has its digest remembered in memory (as the CLI remembers on disk): a
//!   `HEAD` of that digest, and when the destination has it, the file is not read at all (a
//!   run again after a failure, or to another tag, sends only what is missing). The registry
//!   still checks every digest a manifest names.
//! - any other file is uploaded as it is read, and hashed on the way: no `HEAD` first, which
//!   would cost a second read of every large file. An upload that ends with the registry
//!   already holding the blob (the same file twice in the folder, uploaded together; another
//!   client's push meanwhile) is an upload like any other: the closing `PUT` is answered 201
//!   with the digest (distribution does, as the OCI spec says), which the core's upload takes
//!   as done, the digest checked (tested with a folder holding one file twice).
//!
//! The decisions are [`crate::model`]'s (pure) and the core's ([`target::assemble`]); this is
//! their driver: it reads the heads and `config.json` from the files and runs the uploads.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use futures_util::future::try_join_all;
use lamina_core::artifact::Kind;
use lamina_core::layer::LayerInfo;
use lamina_core::media;
use lamina_core::pack::{self, Facts, FileLayer};
use lamina_core::reference::Reference;
use lamina_core::registry::{Event, HeadBlob, PutManifest, UploadConfig};
use lamina_core::target;
use lamina_core::{Digest, Error};
use lamina_wasm::{Failure, Hook, Producer};

use crate::driver::{Browser, Driver, Report};
use crate::model::{self, PackFile, Picked, CONFIG_MAX};
use crate::opts::Opts;
use crate::progress::{self, Tally};
use crate::source::{read_bytes, LayerSource, READ};

/// Files up to this size are read whole and hashed before they are sent, and not sent when the
/// destination has them (see the module's docs): one `HEAD` costs less than their bytes over a
/// slow link, and they are one read either way. Several at once hold at most this each.
pub const SMALL: u64 = 4 << 20;

thread_local! {
    /// The digests of the files this worker sent or found in a destination, by
    /// [`remembered`]'s key: while the page's worker lives (a new one comes with a cancel or
    /// another layout), its memory only.
    static SENT: RefCell<HashMap<(String, u64, u64), Digest>> = RefCell::new(HashMap::new());
}

/// What a file is remembered by: its name on the page, its size, its time of modification as
/// the browser's `File` gives it (a file saved again and picked again has another; a `File`
/// picked before the file changed on disk is, to the page, what was picked, and the browser
/// would refuse to read it).
fn remembered(f: &PackFile<web_sys::File>) -> (String, u64, u64) {
    (f.name.clone(), f.size, f.file.last_modified().to_bits())
}

/// What the weight file `f`'s header says, read from as much of its head as the header needs,
/// as core's [`pack::HeadReader`] asks for it (the same steps as `lamina pack`).
async fn facts_of(f: &PackFile<web_sys::File>) -> Result<Option<Facts>, Error> {
    let mut h = pack::HeadReader::new(&f.path);
    while let Some(r) = h.next_read() {
        let end = r.end.min(f.size);
        if end > r.start {
            h.write(&read_bytes(&f.file, r.start, end).await?);
        }
        if end < r.end {
            break; // the file ended
        }
    }
    Ok(h.finish())
}

/// Packs `picked` into `dest` as `o` says; returns `dest@sha256:...`.
pub async fn pack(
    o: &Opts,
    dest: &Reference,
    d: &mut Driver,
    picked: Vec<Picked<web_sys::File>>,
    report: &Report,
) -> Result<String, Failure> {
    let target = o.target()?;
    let plan = model::plan(picked)?;
    if !plan.left_out.is_empty() {
        report.send(progress::left_out(&plan.left_out));
        report.send(progress::log(&format!(
            "left out (hidden files and caches, as modctl and lamina pack leave them): {}",
            plan.left_out.join(", ")
        )));
    }

    // 1. the config's facts: the weights' headers, config.json
    report.send(progress::phase("facts"));
    let mut facts = Vec::new();
    for f in plan.files.iter().filter(|f| f.kind == Kind::Weight) {
        facts.extend(facts_of(f).await?);
    }
    let config_json = match plan
        .files
        .iter()
        .find(|f| f.path == "config.json" && f.size < CONFIG_MAX)
    {
        Some(f) => Some(read_bytes(&f.file, 0, f.size).await?),
        None => None,
    };
    let name = o.model_name().or(plan.folder.clone());
    let model = model::describe(name, &facts, config_json.as_deref());

    // 2. a raw layer per file, `jobs` at a time, in path order in the manifest
    let layers = upload_files(o, dest, &plan.files, report).await?;

    // 3. the config, then the manifest by its tag, last
    report.send(progress::phase("manifest"));
    let made = target::assemble(target, &model, &layers, o.mtime())?;
    d.upload_bytes(dest, made.config, report).await?;
    let put = PutManifest::new(
        &dest.repository,
        dest.tag_or_latest(),
        media::OCI_MANIFEST,
        made.manifest,
    );
    let (digest, _) = d.run(dest, put, report).await?;
    Ok(format!("{}@{digest}", dest.name()))
}

/// Uploads `files` into `dest`, [`Opts::jobs`] at a time; gives their layers in `files`'
/// order. The first failure ends the others (their sessions are left to the registry, as a
/// cancelled page leaves them).
async fn upload_files(
    o: &Opts,
    dest: &Reference,
    files: &[PackFile<web_sys::File>],
    report: &Report,
) -> Result<Vec<FileLayer>, Failure> {
    let jobs = o.jobs().min(files.len()).max(1);
    let chunk = o.chunk();
    let u = Uploads {
        o,
        dest,
        files,
        report,
        tally: RefCell::new(Tally::new(files.iter().map(|f| (f.name.clone(), f.size)))),
        next: Cell::new(0),
        cfg: UploadConfig::whole_chunks(chunk),
        chunk,
        read: (READ / jobs as u64).max(4 << 20),
    };
    let what = match (files.len(), jobs) {
        (1, _) => files[0].path.clone(),
        (n, 1) => format!("{n} files, one at a time"),
        (n, j) => format!("{n} files, {j} at a time"),
    };
    report.send(progress::layer(0, &what, u.tally.borrow().total()));
    let out: RefCell<Vec<Option<FileLayer>>> = RefCell::new(files.iter().map(|_| None).collect());
    try_join_all((0..jobs).map(|_| u.worker(&out))).await?;
    out.into_inner()
        .into_iter()
        .zip(files)
        .map(|(l, f)| {
            l.ok_or_else(|| Error::internal(format!("{} was not uploaded", f.path)).into())
        })
        .collect()
}

/// The uploads of one `pack`: what the workers share (one thread: cells, never borrowed
/// across an await).
struct Uploads<'a> {
    o: &'a Opts,
    dest: &'a Reference,
    files: &'a [PackFile<web_sys::File>],
    report: &'a Report,
    tally: RefCell<Tally>,
    /// The next file to take.
    next: Cell<usize>,
    cfg: UploadConfig,
    chunk: u64,
    /// Bytes of a file read at a time.
    read: u64,
}

impl Uploads<'_> {
    /// One worker: its own driver (session, connections), the next file until none is left.
    async fn worker(&self, out: &RefCell<Vec<Option<FileLayer>>>) -> Result<(), Failure> {
        let mut d = Driver::new(
            Browser::new(self.o.proxy()),
            self.o.creds_for(Some(self.dest)),
        );
        loop {
            let i = self.next.get();
            let Some(f) = self.files.get(i) else {
                return Ok(());
            };
            self.next.set(i + 1);
            let l = self.one(&mut d, i, f).await?;
            out.borrow_mut()[i] = Some(l);
        }
    }

    /// Whether the destination has `digest` (of `size` bytes).
    async fn has(&self, d: &mut Driver, digest: &Digest, size: u64) -> Result<bool, Failure> {
        let head = HeadBlob::new(&self.dest.repository, digest, true);
        let (got, _) = d.run(self.dest, head, self.report).await?;
        // (a registry that gives no length says nothing against it)
        Ok(matches!(got, Some(n) if n == size || n == 0))
    }

    /// File `i`: found in the destination, or sent; its layer.
    async fn one(
        &self,
        d: &mut Driver,
        i: usize,
        f: &PackFile<web_sys::File>,
    ) -> Result<FileLayer, Failure> {
        let key = remembered(f);
        let known = SENT.with(|s| s.borrow().get(&key).cloned());
        let mut found = None;
        if let Some(digest) = known {
            if self.has(d, &digest, f.size).await? {
                found = Some(LayerInfo::stored(digest, f.size));
            }
        }
        let (info, sent) = match found {
            Some(info) => (info, false),
            None if f.size <= SMALL => {
                // one read, hashed, then asked for
                let bytes = read_bytes(&f.file, 0, f.size).await?;
                let info = LayerInfo::stored(Digest::of(&bytes), f.size);
                self.tally.borrow_mut().set(i, f.size, 0);
                self.report.send(self.tally.borrow().read_msg(i));
                if self.has(d, &info.digest, f.size).await? {
                    (info, false)
                } else {
                    d.upload_bytes(self.dest, bytes, self.report).await?;
                    (info, true)
                }
            }
            None => {
                let mut src = LayerSource::raw(&f.name, f.file.clone(), self.chunk, self.read);
                let hook = FileHook {
                    i,
                    path: &f.path,
                    tally: &self.tally,
                    report: self.report,
                };
                d.upload(self.dest, self.cfg, &mut src, &hook).await?;
                let info = src
                    .info()
                    .cloned()
                    .ok_or_else(|| Error::internal(format!("{} did not finish", f.path)))?;
                (info, true)
            }
        };
        SENT.with(|s| s.borrow_mut().insert(key, info.digest.clone()));
        self.tally.borrow_mut().finish(i);
        self.report.send(self.tally.borrow().upload_msg(i));
        let digest = info.digest.to_string();
        self.report.send(progress::file_done(
            i, &f.name, &f.path, &digest, info.size, sent,
        ));
        self.report.send(progress::log(&format!(
            "{} {} ({} bytes): {digest}{}",
            f.kind.name(),
            f.path,
            f.size,
            if sent {
                ""
            } else {
                " (in the destination already: not sent)"
            }
        )));
        Ok(model::file_layer(f, &info))
    }
}

/// One file's upload among several: its bytes go into the tally, the page gets the sums and
/// this file's bar; its events go to the log under its path.
struct FileHook<'a> {
    i: usize,
    path: &'a str,
    tally: &'a RefCell<Tally>,
    report: &'a Report,
}

impl Hook<LayerSource> for FileHook<'_> {
    async fn event(&self, e: &Event, s: &LayerSource) {
        match e {
            Event::Confirmed { bytes, .. } => {
                self.tally.borrow_mut().set(self.i, s.read(), *bytes);
                self.report.send(self.tally.borrow().upload_msg(self.i));
            }
            e => self
                .report
                .send(progress::log(&format!("{}: {e}", self.path))),
        }
    }

    async fn produced(&self, s: &LayerSource, confirmed: u64) {
        self.tally.borrow_mut().set(self.i, s.read(), confirmed);
        self.report.send(self.tally.borrow().read_msg(self.i));
    }
}
