//! Image workflows as sans-IO machines: resolve an image (manifest or index, the platforms
//! asked for), make sure its blobs are at a destination (mount, find, copy), and push edited
//! images (configs first, platform manifests by digest, the tag last, so a tag never points at
//! missing data).
//!
//! A workflow asks for what it needs ([`Need`]: a manifest, a config, "is this blob there?",
//! a mount, a copy, a push) and is given the [`Answer`]; it never says how. A driver maps each
//! need onto its stores: registry operations run through [`crate::registry::Transfer`], or an
//! OCI layout's files. So a command is written once, over every store and every runtime.
//!
//! ```text
//!   driver: loop { match flow.step(answer)? {
//!       Next::Need(n) => answer = Some(fulfil(n)?),   // GetManifest, GetBlob, HeadBlob, ...
//!       Next::Note(line) => log(line),
//!       Next::Done(out) => break out,
//!   } }
//! ```

use crate::compress::Compression;
use crate::digest::Digest;
use crate::error::Error;
use crate::image::{
    detect_kind, Config, Descriptor, History, Index, Manifest, Platform, MAX_CONFIG_SIZE,
};
use crate::media::{self, DocKind, Family};
use crate::registry::FetchedManifest;

/// What a workflow needs done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// The manifest or index `reference` (a tag or a digest) of the source.
    Manifest(String),
    /// A config blob of the source (answer: its bytes).
    Config(Descriptor),
    /// Is this blob at the destination?
    HasBlob(Descriptor),
    /// Mount this blob at the destination from the source's repository (same registry).
    Mount(Descriptor),
    /// Copy this blob from the source to the destination (streamed, verified).
    CopyBlob(Descriptor),
    /// Push these bytes as a blob at the destination (a config).
    PutBlob(Vec<u8>),
    /// Push a manifest or index at the destination, as `reference` (a tag or its digest).
    PutManifest {
        /// Tag or digest.
        reference: String,
        /// Its media type.
        media_type: &'static str,
        /// The exact bytes.
        bytes: Vec<u8>,
    },
}

/// What a need was answered with.
#[derive(Debug, Clone)]
pub enum Answer {
    /// A fetched manifest or index.
    Manifest(FetchedManifest),
    /// A blob's bytes (a config).
    Blob(Vec<u8>),
    /// Yes or no (`HasBlob`, `Mount`).
    Yes(bool),
    /// Done (`CopyBlob`).
    Done,
    /// Pushed, with this digest (`PutBlob`, `PutManifest`).
    Pushed(Digest),
}

/// What a workflow does next.
#[derive(Debug)]
pub enum Next<T> {
    /// Do this, then step with the answer.
    Need(Need),
    /// A line worth telling the user (then step with no answer).
    Note(String),
    /// Finished.
    Done(T),
}

/// A workflow: stepped first with `None`, then with the answer to each need.
pub trait Flow {
    /// What it ends with.
    type Output;
    /// Advances the workflow.
    fn step(&mut self, answer: Option<Answer>) -> Result<Next<Self::Output>, Error>;
}

fn wrong(what: &str, a: Option<Answer>) -> Error {
    Error::internal(format!("workflow: {what} expected, got {a:?}"))
}

/// One platform image.
#[derive(Debug, Clone)]
pub struct Image {
    /// Its manifest.
    pub manifest: Manifest,
    /// Its digest as fetched.
    pub digest: Digest,
    /// Position in the index, if it came from one.
    pub index_pos: Option<usize>,
    /// Platform from the index entry.
    pub platform: Option<Platform>,
}

/// The top of a reference: a single manifest or an index with its chosen children.
#[derive(Debug)]
pub enum Top {
    /// A single image.
    Single(Image),
    /// An index, with the children that were selected.
    Index {
        /// The index.
        index: Index,
        /// Its digest.
        digest: Digest,
        /// Selected children.
        children: Vec<Image>,
    },
}

impl Top {
    /// The images, in index order.
    pub fn images(&self) -> Vec<&Image> {
        match self {
            Top::Single(i) => vec![i],
            Top::Index { children, .. } => children.iter().collect(),
        }
    }
}

/// Which platforms to take from an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformSel {
    /// One platform.
    One(Platform),
    /// All real platforms (attestations, `unknown/unknown`, are left as they are).
    All,
    /// None: an index is taken as it is, with no children fetched (for a caller that edits
    /// single images only and refuses an index).
    None,
}

impl PlatformSel {
    /// Parses `--platform` (`all` or `os/arch[/variant]`; none: linux/amd64).
    pub fn parse(s: Option<&str>) -> Result<Self, Error> {
        match s {
            None => Ok(PlatformSel::One(Platform::linux_amd64())),
            Some("all") => Ok(PlatformSel::All),
            Some(p) => Ok(PlatformSel::One(Platform::parse(p)?)),
        }
    }
}

/// Refuses an explicit platform that a single-platform image is not (an index chooses by its
/// entries; a single manifest has only its config's platform). Without one, or with `all`, a
/// single image is taken as it is. `what` names the image.
pub fn check_platform(what: &str, asked: Option<&str>, config: &Config) -> Result<(), Error> {
    let Some(asked) = asked.filter(|p| *p != "all") else {
        return Ok(());
    };
    let want = Platform::parse(asked)?;
    match config.platform() {
        // found at run time (exit 1), as a platform missing from an index is
        Some(have) if !want.matches(&have) => Err(Error::NotThatPlatform {
            what: what.to_string(),
            wanted: want.to_string(),
            have: have.to_string(),
        }),
        _ => Ok(()),
    }
}

/// The config descriptor of `m`, refused when larger than lamina reads.
pub fn config_descriptor(what: &str, m: &Manifest) -> Result<Descriptor, Error> {
    let d = m.config()?;
    check_config_size(what, &d)?;
    Ok(d)
}

/// Refuses a config descriptor larger than lamina reads (`what` names the image).
pub fn check_config_size(what: &str, d: &Descriptor) -> Result<(), Error> {
    if d.size > MAX_CONFIG_SIZE {
        return Err(Error::TooLarge {
            what: format!("config {} of {what}", d.digest),
            limit: MAX_CONFIG_SIZE,
        });
    }
    Ok(())
}

#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per resolve, moved a few times
enum Rs {
    Start,
    Top,
    Child {
        index: Index,
        digest: Digest,
        picks: Vec<usize>,
        at: usize,
        entries: Vec<Descriptor>,
        children: Vec<Image>,
    },
    Done,
}

/// Resolves a reference to its image, or its index and the platform images `sel` chooses.
#[derive(Debug)]
pub struct Resolve {
    what: String,
    reference: String,
    sel: PlatformSel,
    state: Rs,
}

impl Resolve {
    /// Resolves `reference` (tag or digest) of the image `what` names (for errors).
    pub fn new(what: &str, reference: &str, sel: PlatformSel) -> Self {
        Resolve {
            what: what.into(),
            reference: reference.into(),
            sel,
            state: Rs::Start,
        }
    }

    fn next_child(&mut self) -> Result<Next<Top>, Error> {
        let Rs::Child {
            picks, at, entries, ..
        } = &self.state
        else {
            return Err(Error::internal("resolve: no index"));
        };
        match picks.get(*at) {
            Some(&i) => Ok(Next::Need(Need::Manifest(entries[i].digest.to_string()))),
            None => match std::mem::replace(&mut self.state, Rs::Done) {
                Rs::Child {
                    index,
                    digest,
                    children,
                    ..
                } => Ok(Next::Done(Top::Index {
                    index,
                    digest,
                    children,
                })),
                _ => Err(Error::internal("resolve: no index")),
            },
        }
    }
}

impl Flow for Resolve {
    type Output = Top;
    fn step(&mut self, answer: Option<Answer>) -> Result<Next<Top>, Error> {
        match std::mem::replace(&mut self.state, Rs::Done) {
            Rs::Start => {
                self.state = Rs::Top;
                Ok(Next::Need(Need::Manifest(self.reference.clone())))
            }
            Rs::Top => {
                let Some(Answer::Manifest(top)) = answer else {
                    return Err(wrong("a manifest", answer));
                };
                let (kind, mt) = detect_kind(&top.bytes, top.content_type.as_deref())?;
                match kind {
                    DocKind::Manifest(_) => Ok(Next::Done(Top::Single(Image {
                        manifest: Manifest::parse(top.bytes, &mt)?,
                        digest: top.digest,
                        index_pos: None,
                        platform: None,
                    }))),
                    DocKind::Index(_) => {
                        let index = Index::parse(top.bytes, &mt)?;
                        let entries = index.manifests()?;
                        let picks: Vec<usize> = match &self.sel {
                            PlatformSel::One(p) => vec![index.select(p)?],
                            PlatformSel::All => entries
                                .iter()
                                .enumerate()
                                .filter(|(_, e)| {
                                    e.platform.as_ref().is_some_and(|p| p.os != "unknown")
                                })
                                .map(|(i, _)| i)
                                .collect(),
                            PlatformSel::None => Vec::new(),
                        };
                        self.state = Rs::Child {
                            index,
                            digest: top.digest,
                            picks,
                            at: 0,
                            entries,
                            children: Vec::new(),
                        };
                        self.next_child()
                    }
                }
            }
            Rs::Child {
                index,
                digest,
                picks,
                at,
                entries,
                mut children,
            } => {
                let Some(Answer::Manifest(f)) = answer else {
                    return Err(wrong("a manifest", answer));
                };
                let i = picks[at];
                let e = &entries[i];
                let (k, cmt) =
                    detect_kind(&f.bytes, f.content_type.as_deref().or(Some(&e.media_type)))?;
                if !matches!(k, DocKind::Manifest(_)) {
                    return Err(Error::UnsupportedMediaType {
                        what: format!(
                            "{}: entry {i} of the index (nested indexes are not supported)",
                            self.what
                        ),
                        media_type: cmt,
                    });
                }
                children.push(Image {
                    manifest: Manifest::parse(f.bytes, &cmt)?,
                    digest: f.digest,
                    index_pos: Some(i),
                    platform: e.platform.clone(),
                });
                self.state = Rs::Child {
                    index,
                    digest,
                    picks,
                    at: at + 1,
                    entries,
                    children,
                };
                self.next_child()
            }
            Rs::Done => Err(Error::internal("resolve: stepped after the end")),
        }
    }
}

/// Fetches the configs of `images` (in order), each verified and size-checked.
#[derive(Debug)]
pub struct Configs {
    what: String,
    wanted: Vec<Descriptor>,
    got: Vec<Config>,
}

impl Configs {
    /// The configs of `images`, of the image `what` names.
    pub fn new(what: &str, images: &[&Manifest]) -> Result<Self, Error> {
        Ok(Configs {
            what: what.into(),
            wanted: images
                .iter()
                .map(|m| config_descriptor(what, m))
                .collect::<Result<_, _>>()?,
            got: Vec::new(),
        })
    }
}

impl Flow for Configs {
    type Output = Vec<Config>;
    fn step(&mut self, answer: Option<Answer>) -> Result<Next<Vec<Config>>, Error> {
        if let Some(a) = answer {
            let Answer::Blob(bytes) = a else {
                return Err(wrong("a config", Some(a)));
            };
            let d = &self.wanted[self.got.len()];
            if bytes.len() as u64 > d.size.max(MAX_CONFIG_SIZE) {
                return Err(Error::TooLarge {
                    what: format!("config {} of {}", d.digest, self.what),
                    limit: MAX_CONFIG_SIZE,
                });
            }
            d.digest
                .verify(&bytes, &format!("config {} of {}", d.digest, self.what))?;
            self.got.push(Config::parse(bytes)?);
        }
        match self.wanted.get(self.got.len()) {
            Some(d) => Ok(Next::Need(Need::Config(d.clone()))),
            None => Ok(Next::Done(std::mem::take(&mut self.got))),
        }
    }
}

/// Where a source's blobs stand relative to a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Source and destination are one store (one repository, one layout): nothing to do.
    pub same_store: bool,
    /// Same registry, other repository: a mount costs no bytes.
    pub same_registry: bool,
    /// The destination is a registry (the summary counts mounts).
    pub dest_is_registry: bool,
}

/// How the blobs got to the destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Placed {
    /// Mounted from the source repository.
    pub mounted: usize,
    /// Already there.
    pub present: usize,
    /// Copied.
    pub copied: usize,
}

/// Makes sure each blob is at the destination: mounted across repositories of one registry,
/// found there, or copied from the source. Ends with a note of what it did.
#[derive(Debug)]
pub struct EnsureBlobs {
    blobs: Vec<Descriptor>,
    place: Placement,
    dest: String,
    /// what the note calls the blobs
    what: String,
    at: usize,
    /// what was asked for blob `at`
    asked: Option<u8>,
    placed: Placed,
    noted: bool,
}

impl EnsureBlobs {
    /// `blobs` into the destination `dest` names (for the note).
    pub fn new(blobs: Vec<Descriptor>, place: Placement, dest: &str) -> Self {
        EnsureBlobs {
            blobs,
            place,
            dest: dest.into(),
            what: "base layers".into(),
            at: 0,
            asked: None,
            placed: Placed::default(),
            noted: false,
        }
    }

    /// Names the blobs in the note (`base layers` unless told: `weights layers`, `layer 3`).
    pub fn of(mut self, what: &str) -> Self {
        self.what = what.into();
        self
    }
}

const MOUNT: u8 = 0;
const HAS: u8 = 1;
const COPY: u8 = 2;

impl Flow for EnsureBlobs {
    type Output = Placed;
    fn step(&mut self, answer: Option<Answer>) -> Result<Next<Placed>, Error> {
        if self.place.same_store {
            // the manifest that was read proves they are there
            return Ok(Next::Done(self.placed));
        }
        let next = match (self.asked.take(), answer) {
            (None, None) => Some(if self.place.same_registry { MOUNT } else { HAS }),
            (Some(MOUNT), Some(Answer::Yes(true))) => {
                self.placed.mounted += 1;
                self.at += 1;
                None
            }
            (Some(MOUNT), Some(Answer::Yes(false))) => Some(HAS),
            (Some(HAS), Some(Answer::Yes(true))) => {
                self.placed.present += 1;
                self.at += 1;
                None
            }
            (Some(HAS), Some(Answer::Yes(false))) => Some(COPY),
            (Some(COPY), Some(Answer::Done)) => {
                self.placed.copied += 1;
                self.at += 1;
                None
            }
            (_, a) => return Err(wrong("an answer about a blob", a)),
        };
        let ask = match next {
            Some(k) => k,
            None if self.at < self.blobs.len() => {
                if self.place.same_registry {
                    MOUNT
                } else {
                    HAS
                }
            }
            None => {
                if !self.noted && !self.blobs.is_empty() {
                    self.noted = true;
                    let p = self.placed;
                    let mounted = if self.place.dest_is_registry {
                        format!("{} mounted, ", p.mounted)
                    } else {
                        String::new()
                    };
                    return Ok(Next::Note(format!(
                        "{} in {}: {mounted}{} already there, {} copied",
                        self.what, self.dest, p.present, p.copied
                    )));
                }
                return Ok(Next::Done(self.placed));
            }
        };
        let Some(b) = self.blobs.get(self.at) else {
            return Ok(Next::Done(self.placed));
        };
        self.asked = Some(ask);
        Ok(Next::Need(match ask {
            MOUNT => Need::Mount(b.clone()),
            HAS => Need::HasBlob(b.clone()),
            _ => Need::CopyBlob(b.clone()),
        }))
    }
}

/// A layer to append (its blob is already at the destination).
#[derive(Debug, Clone)]
pub struct NewLayer {
    /// Compression of the blob.
    pub compression: Compression,
    /// Blob digest.
    pub digest: Digest,
    /// Blob size.
    pub size: u64,
    /// Uncompressed digest.
    pub diff_id: Digest,
    /// History entry.
    pub history: History,
    /// Layer annotations (an OCI manifest carries them; a Docker one is converted).
    pub annotations: Vec<(String, String)>,
}

/// Docker manifests have no zstd layer type and no annotations: turns images (and their
/// index) into OCI when the new content needs it. Layer blobs stay the same. Returns the note
/// to show, if it converted.
pub fn convert_if_needed(
    images: &mut [Image],
    index: &mut Option<Index>,
    zstd: bool,
    annotations: bool,
) -> Option<String> {
    if (zstd || annotations) && images.iter().any(|i| i.manifest.family() == Family::Docker) {
        for i in images.iter_mut() {
            i.manifest.convert_to_oci();
        }
        if let Some(ix) = index {
            ix.convert_to_oci();
        }
        return Some(format!(
            "note: converting the Docker v2 manifest to OCI ({})",
            if zstd { "zstd layers" } else { "annotations" }
        ));
    }
    None
}

/// What an edit adds to every image.
#[derive(Debug, Clone, Default)]
pub struct Edit {
    /// Layers appended (in order).
    pub layers: Vec<NewLayer>,
    /// Config labels set.
    pub labels: Vec<(String, String)>,
    /// Manifest annotations set.
    pub annotations: Vec<(String, String)>,
}

#[derive(Debug)]
enum Ps {
    Start,
    Config { i: usize },
    Manifest { i: usize },
    Index,
    Done,
}

/// Appends an [`Edit`] to every image and pushes configs, then each image's manifest (by
/// digest when an index will point at it, else by the tag), then the index by the tag. Ends
/// with the digest the tag points at.
#[derive(Debug)]
pub struct PushImages {
    images: Vec<Image>,
    configs: Vec<Config>,
    index: Option<Index>,
    edit: Edit,
    tag: String,
    state: Ps,
    /// (index position, digest, size, media type) of each pushed manifest
    pushed: Vec<(Option<usize>, Digest, u64, &'static str)>,
    /// The first config's push, asked for after the conversion note.
    pending: Option<Need>,
}

impl PushImages {
    /// Pushes `images` (each with its config, in order) and their `index`, if any, as `tag`.
    pub fn new(
        images: Vec<Image>,
        configs: Vec<Config>,
        index: Option<Index>,
        edit: Edit,
        tag: &str,
    ) -> Result<Self, Error> {
        if images.len() != configs.len() || images.is_empty() {
            return Err(Error::internal(format!(
                "push: {} images with {} configs",
                images.len(),
                configs.len()
            )));
        }
        Ok(PushImages {
            images,
            configs,
            index,
            edit,
            tag: tag.into(),
            state: Ps::Start,
            pushed: Vec::new(),
            pending: None,
        })
    }

    fn config_need(&mut self, i: usize) -> Need {
        let c = &mut self.configs[i];
        for l in &self.edit.layers {
            c.push_layer(&l.diff_id, &l.history);
        }
        for (k, v) in &self.edit.labels {
            c.set_label(k, v);
        }
        self.state = Ps::Config { i };
        Need::PutBlob(c.bytes().to_vec())
    }
}

impl Flow for PushImages {
    type Output = Digest;
    fn step(&mut self, answer: Option<Answer>) -> Result<Next<Digest>, Error> {
        match std::mem::replace(&mut self.state, Ps::Done) {
            Ps::Start => {
                let zstd = self
                    .edit
                    .layers
                    .iter()
                    .any(|l| l.compression == Compression::Zstd);
                let annotated = !self.edit.annotations.is_empty()
                    || self.edit.layers.iter().any(|l| !l.annotations.is_empty());
                let note = convert_if_needed(&mut self.images, &mut self.index, zstd, annotated);
                let need = self.config_need(0);
                if let Some(n) = note {
                    // the config need is asked right after the note
                    self.state = Ps::Config { i: usize::MAX };
                    self.pending = Some(need);
                    return Ok(Next::Note(n));
                }
                Ok(Next::Need(need))
            }
            Ps::Config { i: usize::MAX } => {
                self.state = Ps::Config { i: 0 };
                Ok(Next::Need(self.pending.take().ok_or_else(|| {
                    Error::internal("push: no config to push after the note")
                })?))
            }
            Ps::Config { i } => {
                let Some(Answer::Pushed(cdigest)) = answer else {
                    return Err(wrong("a pushed config", answer));
                };
                let csize = self.configs[i].bytes().len() as u64;
                let in_index = self.index.is_some();
                let m = &mut self.images[i].manifest;
                m.set_config(&cdigest, csize);
                for l in &self.edit.layers {
                    let lt = media::layer_type(m.family(), l.compression).ok_or_else(|| {
                        Error::UnsupportedMediaType {
                            what: "a new layer".into(),
                            media_type: format!(
                                "{:?} in a {:?} manifest",
                                l.compression,
                                m.family()
                            ),
                        }
                    })?;
                    let mut d = Descriptor::new(lt, l.digest.clone(), l.size);
                    d.annotations = l.annotations.clone();
                    m.push_layer(&d);
                }
                for (k, v) in &self.edit.annotations {
                    m.set_annotation(k, v)?;
                }
                let reference = if in_index {
                    m.digest().to_string()
                } else {
                    self.tag.clone()
                };
                self.state = Ps::Manifest { i };
                Ok(Next::Need(Need::PutManifest {
                    reference,
                    media_type: m.media_type(),
                    bytes: m.bytes().to_vec(),
                }))
            }
            Ps::Manifest { i } => {
                let Some(Answer::Pushed(d)) = answer else {
                    return Err(wrong("a pushed manifest", answer));
                };
                let img = &mut self.images[i];
                let size = img.manifest.bytes().len() as u64;
                self.pushed
                    .push((img.index_pos, d, size, img.manifest.media_type()));
                if i + 1 < self.images.len() {
                    return Ok(Next::Need(self.config_need(i + 1)));
                }
                match &mut self.index {
                    Some(ix) => {
                        for (pos, d, size, mt) in &self.pushed {
                            if let Some(p) = pos {
                                ix.replace(*p, mt, d, *size);
                            }
                        }
                        self.state = Ps::Index;
                        Ok(Next::Need(Need::PutManifest {
                            reference: self.tag.clone(),
                            media_type: ix.media_type(),
                            bytes: ix.bytes().to_vec(),
                        }))
                    }
                    None => Ok(Next::Done(self.pushed[0].1.clone())),
                }
            }
            Ps::Index => {
                let Some(Answer::Pushed(d)) = answer else {
                    return Err(wrong("a pushed index", answer));
                };
                Ok(Next::Done(d))
            }
            Ps::Done => Err(Error::internal("push: stepped after the end")),
        }
    }
}

/// Pushes a model artifact put together already ([`crate::target::Assembled`]): its config,
/// then its manifest by the tag (its layers are at the destination already). Ends with the
/// manifest's digest.
#[derive(Debug)]
pub struct PushArtifact {
    config: Option<Vec<u8>>,
    manifest: Option<Vec<u8>>,
    config_digest: Digest,
    tag: String,
}

impl PushArtifact {
    /// Pushes `a` as `tag`.
    pub fn new(a: crate::target::Assembled, tag: &str) -> Self {
        PushArtifact {
            config_digest: Digest::of(&a.config),
            config: Some(a.config),
            manifest: Some(a.manifest),
            tag: tag.into(),
        }
    }
}

impl Flow for PushArtifact {
    type Output = Digest;
    fn step(&mut self, answer: Option<Answer>) -> Result<Next<Digest>, Error> {
        if let Some(c) = self.config.take() {
            return Ok(Next::Need(Need::PutBlob(c)));
        }
        match (self.manifest.take(), answer) {
            (Some(m), Some(Answer::Pushed(d))) => {
                if d != self.config_digest {
                    return Err(Error::DigestMismatch {
                        what: "the artifact's config, as the registry stored it".into(),
                        expected: self.config_digest.clone(),
                        found: d,
                    });
                }
                Ok(Next::Need(Need::PutManifest {
                    reference: self.tag.clone(),
                    media_type: media::OCI_MANIFEST,
                    bytes: m,
                }))
            }
            (None, Some(Answer::Pushed(d))) => Ok(Next::Done(d)),
            (_, a) => Err(wrong("a pushed config or manifest", a)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// A store in memory: manifests by reference, blobs by digest; every need is written down.
    #[derive(Default)]
    struct Store {
        manifests: Vec<(String, Vec<u8>, &'static str)>,
        blobs: Vec<(Digest, Vec<u8>)>,
        at_dest: Vec<Digest>,
        mountable: bool,
        log: Vec<String>,
    }

    impl Store {
        fn run<F: Flow>(&mut self, mut f: F) -> Result<F::Output, Error> {
            let mut answer = None;
            loop {
                match f.step(answer.take())? {
                    Next::Done(o) => return Ok(o),
                    Next::Note(n) => self.log.push(format!("note {n}")),
                    Next::Need(n) => answer = Some(self.fulfil(n)),
                }
            }
        }

        fn fulfil(&mut self, n: Need) -> Answer {
            match n {
                Need::Manifest(r) => {
                    self.log.push(format!("manifest {r}"));
                    let (_, b, mt) = self
                        .manifests
                        .iter()
                        .find(|(k, b, _)| *k == r || Digest::of(b).to_string() == r)
                        .cloned()
                        .expect("manifest");
                    Answer::Manifest(FetchedManifest {
                        digest: Digest::of(&b),
                        bytes: b,
                        content_type: Some(mt.into()),
                    })
                }
                Need::Config(d) => {
                    self.log.push(format!("config {}", d.digest.short()));
                    let b = self
                        .blobs
                        .iter()
                        .find(|(k, _)| *k == d.digest)
                        .expect("blob");
                    Answer::Blob(b.1.clone())
                }
                Need::HasBlob(d) => {
                    self.log.push(format!("has {}", d.digest.short()));
                    Answer::Yes(self.at_dest.contains(&d.digest))
                }
                Need::Mount(d) => {
                    self.log.push(format!("mount {}", d.digest.short()));
                    Answer::Yes(self.mountable)
                }
                Need::CopyBlob(d) => {
                    self.log.push(format!("copy {}", d.digest.short()));
                    self.at_dest.push(d.digest);
                    Answer::Done
                }
                Need::PutBlob(b) => {
                    let d = Digest::of(&b);
                    self.log.push(format!("put blob {}", d.short()));
                    Answer::Pushed(d)
                }
                Need::PutManifest {
                    reference, bytes, ..
                } => {
                    let d = Digest::of(&bytes);
                    let shown = if reference.starts_with("sha256:") {
                        "digest".to_string()
                    } else {
                        reference
                    };
                    self.log.push(format!("put manifest by {shown}"));
                    Answer::Pushed(d)
                }
            }
        }
    }

    fn config_bytes(arch: &str) -> Vec<u8> {
        format!(
            r#"{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}}}}"#
        )
        .into_bytes()
    }

    fn manifest_bytes(config: &[u8]) -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{}","size":{}}},"layers":[]}}"#,
            media::OCI_MANIFEST,
            media::OCI_CONFIG,
            Digest::of(config),
            config.len()
        )
        .into_bytes()
    }

    /// An index of amd64, arm64 and an attestation (`unknown/unknown`).
    fn store() -> Store {
        let mut s = Store::default();
        let mut entries = Vec::new();
        for arch in ["amd64", "arm64", "unknown"] {
            let c = config_bytes(arch);
            let m = manifest_bytes(&c);
            let os = if arch == "unknown" {
                "unknown"
            } else {
                "linux"
            };
            entries.push(format!(
                r#"{{"mediaType":"{}","digest":"{}","size":{},"platform":{{"architecture":"{arch}","os":"{os}"}}}}"#,
                media::OCI_MANIFEST,
                Digest::of(&m),
                m.len()
            ));
            s.blobs.push((Digest::of(&c), c));
            s.manifests.push((arch.into(), m, media::OCI_MANIFEST));
        }
        let ix = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{}]}}"#,
            media::OCI_INDEX,
            entries.join(",")
        );
        s.manifests
            .push(("latest".into(), ix.into_bytes(), media::OCI_INDEX));
        s
    }

    #[test]
    fn resolve_takes_the_platforms_asked_for_and_leaves_attestations() {
        let mut s = store();
        let top = s
            .run(Resolve::new("img", "latest", PlatformSel::All))
            .unwrap();
        let Top::Index { children, .. } = &top else {
            panic!("an index")
        };
        assert_eq!(
            children.iter().map(|c| c.index_pos).collect::<Vec<_>>(),
            [Some(0), Some(1)]
        );
        let one = PlatformSel::parse(Some("linux/arm64")).unwrap();
        let top = s.run(Resolve::new("img", "latest", one)).unwrap();
        assert_eq!(top.images().len(), 1);
        assert_eq!(top.images()[0].index_pos, Some(1));
        // a single manifest is itself
        let top = s
            .run(Resolve::new("img", "amd64", PlatformSel::All))
            .unwrap();
        assert!(matches!(top, Top::Single(_)));
        // configs are verified as they come
        let ms: Vec<Manifest> = top.images().iter().map(|i| i.manifest.clone()).collect();
        let refs: Vec<&Manifest> = ms.iter().collect();
        let cs = s.run(Configs::new("img", &refs).unwrap()).unwrap();
        assert_eq!(cs[0].platform().unwrap().architecture, "amd64");
        s.blobs[0].1 = config_bytes("s390x");
        let e = s.run(Configs::new("img", &refs).unwrap()).unwrap_err();
        assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    }

    #[test]
    fn no_platform_takes_an_index_as_it_is_and_fetches_no_child() {
        let mut s = store();
        let top = s
            .run(Resolve::new("img", "latest", PlatformSel::None))
            .unwrap();
        let Top::Index {
            index, children, ..
        } = &top
        else {
            panic!("an index")
        };
        assert_eq!(index.manifests().unwrap().len(), 3);
        assert!(children.is_empty() && top.images().is_empty());
        assert_eq!(s.log, ["manifest latest"]);
        // no configs to fetch
        assert!(s.run(Configs::new("img", &[]).unwrap()).unwrap().is_empty());
        // a single manifest is itself
        let top = s
            .run(Resolve::new("img", "arm64", PlatformSel::None))
            .unwrap();
        assert!(matches!(top, Top::Single(_)));
    }

    #[test]
    fn the_note_names_the_blobs_as_told() {
        let ds = vec![Descriptor::new(media::OCI_LAYER_GZIP, Digest::of(b"w"), 1)];
        let mut s = Store::default();
        let place = Placement {
            same_store: false,
            same_registry: false,
            dest_is_registry: true,
        };
        let p = s
            .run(EnsureBlobs::new(ds, place, "reg/x").of("weights layers"))
            .unwrap();
        assert_eq!(p.copied, 1);
        assert_eq!(
            s.log.last().unwrap(),
            "note weights layers in reg/x: 0 mounted, 0 already there, 1 copied"
        );
    }

    #[test]
    fn blobs_are_mounted_found_or_copied_in_that_order() {
        let ds: Vec<Descriptor> = (0..3u8)
            .map(|i| Descriptor::new(media::OCI_LAYER_GZIP, Digest::of(&[i]), 1))
            .collect();
        let mut s = Store {
            at_dest: vec![ds[1].digest.clone()],
            ..Store::default()
        };
        let place = Placement {
            same_store: false,
            same_registry: false,
            dest_is_registry: true,
        };
        let p = s.run(EnsureBlobs::new(ds.clone(), place, "reg/x")).unwrap();
        assert_eq!((p.mounted, p.present, p.copied), (0, 1, 2));
        assert_eq!(
            s.log.last().unwrap(),
            "note base layers in reg/x: 0 mounted, 1 already there, 2 copied"
        );
        // one registry: a mount first, and nothing else when it works
        let mut s = Store {
            mountable: true,
            ..Store::default()
        };
        let place = Placement {
            same_registry: true,
            ..place
        };
        let p = s.run(EnsureBlobs::new(ds.clone(), place, "reg/x")).unwrap();
        assert_eq!(p.mounted, 3);
        assert!(s
            .log
            .iter()
            .all(|l| l.starts_with("mount") || l.starts_with("note")));
        // one store: nothing to do, nothing asked
        let mut s = Store::default();
        let place = Placement {
            same_store: true,
            ..place
        };
        s.run(EnsureBlobs::new(ds, place, "reg/x")).unwrap();
        assert!(s.log.is_empty());
    }

    #[test]
    fn a_push_sends_configs_and_children_first_and_the_tag_last() {
        let mut s = store();
        let top = s
            .run(Resolve::new("img", "latest", PlatformSel::All))
            .unwrap();
        let Top::Index {
            index, children, ..
        } = top
        else {
            panic!("an index")
        };
        let refs: Vec<&Manifest> = children.iter().map(|i| &i.manifest).collect();
        let configs = s.run(Configs::new("img", &refs).unwrap()).unwrap();
        s.log.clear();
        let layer = NewLayer {
            compression: Compression::Zstd,
            digest: Digest::of(b"layer"),
            size: 5,
            diff_id: Digest::of(b"diff"),
            history: History::default(),
            annotations: Vec::new(),
        };
        let edit = Edit {
            layers: vec![layer],
            ..Edit::default()
        };
        let d = s
            .run(PushImages::new(children, configs, Some(index), edit, "v2").unwrap())
            .unwrap();
        let order: Vec<&str> = s
            .log
            .iter()
            .map(|l| {
                if l.starts_with("put blob") {
                    "put blob"
                } else {
                    l
                }
            })
            .collect();
        assert_eq!(
            order,
            [
                "put blob",
                "put manifest by digest",
                "put blob",
                "put manifest by digest",
                "put manifest by v2"
            ]
        );
        assert_eq!(d.to_string().len(), 71);
    }

    #[test]
    fn a_platform_a_single_platform_image_is_not_fails_at_run_time() {
        let config = Config::parse(
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
                .to_vec(),
        )
        .unwrap();
        assert!(check_platform("img", Some("linux/amd64"), &config).is_ok());
        assert!(check_platform("img", Some("all"), &config).is_ok());
        assert!(check_platform("img", None, &config).is_ok());
        let e = check_platform("img", Some("linux/arm64"), &config).unwrap_err();
        // exit 1 like a platform missing from an index, not a usage error (exit 2)
        assert!(
            matches!(&e, Error::NotThatPlatform { wanted, have, .. } if wanted == "linux/arm64" && have == "linux/amd64"),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "img: --platform linux/arm64: the image is a single-platform image for linux/amd64, not an index; drop --platform to use it");
    }
    #[test]
    fn an_artifact_push_sends_its_config_then_its_manifest_by_the_tag() {
        let a = crate::target::Assembled {
            config: b"{\"descriptor\":{}}".to_vec(),
            layers: Vec::new(),
            manifest: b"{\"schemaVersion\":2}".to_vec(),
        };
        let want = Digest::of(&a.manifest);
        let mut s = Store::default();
        let got = s.run(PushArtifact::new(a.clone(), "v1")).unwrap();
        assert_eq!(got, want);
        assert_eq!(
            s.log,
            [
                format!("put blob {}", Digest::of(&a.config).short()),
                "put manifest by v1".to_string()
            ]
        );
        // a registry that stored other bytes for the config stops the push before the tag
        let mut f = PushArtifact::new(a, "v1");
        assert!(matches!(f.step(None), Ok(Next::Need(Need::PutBlob(_)))));
        let e = f
            .step(Some(Answer::Pushed(Digest::of(b"other"))))
            .unwrap_err();
        assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    }
}
