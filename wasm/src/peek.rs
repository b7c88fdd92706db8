//! Reading inside an image without downloading it, over the shared [`Driver`](crate::Driver):
//! what `lamina ls` and `lamina inspect` do, for the Worker (`GET /ls`, `GET /inspect`) and the
//! page. The core's machines say what to read ([`LayerRead`], [`report::locate`],
//! [`HeadRead`]); this meets their wants with registry operations ([`GetRange`] for a range, a
//! streamed [`OpenBlob`] for a layer read whole) and builds the same JSON documents as the
//! CLI's `--json` ([`report::ls_json`], [`report::inspect_json`]).

use lamina_core::flow::{PlatformSel, Top};
use lamina_core::peek::report::{
    self, Cost, Entry, HeadRead, HeadWant, Inspected, Located, WeightFile,
};
use lamina_core::peek::{LayerRead, Peeked, Place, Tree, Want};
use lamina_core::reference::Reference;
use lamina_core::registry::{GetRange, OpenBlob, Ranged};
use lamina_core::Error;
use serde_json::Value;

use crate::flow::{self, Side};
use crate::run::{Failure, Transport};

/// A download's body, read a piece at a time.
#[allow(async_fn_in_trait)] // one thread: Send is not needed
pub trait Body {
    /// The next piece into `out` (replacing what it held); false at the end.
    async fn next_into(&mut self, out: &mut Vec<u8>) -> Result<bool, Error>;
    /// The rest is not wanted.
    fn cancel(&self) {}
}

impl Body for crate::js::Reader {
    async fn next_into(&mut self, out: &mut Vec<u8>) -> Result<bool, Error> {
        crate::js::Reader::next_into(self, out).await
    }
    fn cancel(&self) {
        crate::js::Reader::cancel(self)
    }
}

/// A runtime's side of reading inside an image: a workflow [`Side`] (its driver, and where
/// notes go), and how a streamed download's body is read.
pub trait Streams: Side {
    /// A body being read.
    type Body: Body;
    /// The body of a download (`what` names it in errors).
    fn body(&self, s: <Self::X as Transport>::Stream, what: &str) -> Self::Body;
}

/// The one image `r` names for `platform` (`os/arch[/variant]`; linux/amd64 by default), as
/// [`Peeked`] layers.
pub async fn open<S: Side>(
    s: &mut S,
    r: &Reference,
    platform: Option<&str>,
) -> Result<Peeked, Failure> {
    let sel = PlatformSel::parse(platform)?;
    if matches!(sel, PlatformSel::All) {
        return Err(Failure::usage(
            "reading inside reads one platform (os/arch)",
        ));
    }
    let (top, mut configs) = flow::image(s, r, sel).await?;
    let image = match top {
        Top::Single(i) => i,
        Top::Index { mut children, .. } => children.pop().ok_or_else(|| {
            Failure::from(Error::NotFound {
                what: format!("an image for the platform in {r}"),
            })
        })?,
    };
    let config = configs
        .pop()
        .ok_or_else(|| Error::internal("an image without its config"))?;
    Ok(Peeked::of(&image.manifest, &config)?)
}

/// The stream of a download that must have one.
fn stream<S: Streams>(
    s: &S,
    st: Option<<S::X as Transport>::Stream>,
    what: &str,
) -> Result<S::Body, Failure> {
    let st = st.ok_or_else(|| Error::Protocol {
        reason: format!("{what} came without a body"),
    })?;
    Ok(s.body(st, what))
}

/// The entries of layer `idx` of `p`, each with where its bytes are.
pub async fn entries<S: Streams>(
    s: &mut S,
    r: &Reference,
    p: &Peeked,
    idx: usize,
    cost: &mut Cost,
) -> Result<Vec<Entry>, Failure> {
    let digest = p.layers[idx].digest.clone();
    let mut lr = LayerRead::new(p, idx);
    let mut out = Vec::new();
    loop {
        match lr.poll()? {
            Want::Entry(h, place) => out.push((h, place)),
            Want::Note(n) => s.note(&n.replace("the registry", &r.registry)).await,
            Want::Range(range) => {
                cost.ranges += 1;
                let (d, hook) = s.driver();
                let op = GetRange::new(&r.repository, &digest, range.clone());
                let (got, _) = d.run(r, op, hook).await?;
                if let Ranged::Bytes(b) = &got {
                    cost.range_bytes += b.len() as u64;
                }
                lr.ranged(range, got)?;
            }
            Want::Stream => {
                cost.streamed.push(idx);
                let (d, hook) = s.driver();
                let (_, st) = d
                    .run(r, OpenBlob::new(&r.repository, &digest), hook)
                    .await?;
                let mut body = stream(s, st, &format!("layer {idx} ({digest})"))?;
                let mut buf = Vec::new();
                while body.next_into(&mut buf).await? {
                    cost.stream_bytes += buf.len() as u64;
                    lr.stream(&buf)?;
                    for n in lr.drain(&mut out)? {
                        s.note(&n).await;
                    }
                }
                lr.stream_end()?;
            }
            Want::More => {
                return Err(Error::internal("LayerRead wants more of a stream not opened").into())
            }
            Want::Done => return Ok(out),
        }
    }
}

/// The merged tree of the layers `only` names (all when `None`), bottom to top.
pub async fn tree<S: Streams>(
    s: &mut S,
    r: &Reference,
    p: &Peeked,
    only: Option<&[usize]>,
    cost: &mut Cost,
) -> Result<Tree, Failure> {
    let mut t = report::tree_for(p);
    for idx in 0..p.layers.len() {
        if only.is_some_and(|o| !o.contains(&idx)) {
            continue;
        }
        t.begin(idx);
        for (h, place) in entries(s, r, p, idx, cost).await? {
            t.add(&h, place)?;
        }
    }
    t.end();
    for w in t.warnings().to_vec() {
        s.note(&format!("warning: {w}")).await;
    }
    Ok(t)
}

/// The file at `path`, found from the top layer down ([`report::locate`]).
pub async fn locate<S: Streams>(
    s: &mut S,
    r: &Reference,
    p: &Peeked,
    path: &str,
    cost: &mut Cost,
) -> Result<WeightFile, Failure> {
    let mut read: Vec<Option<Vec<Entry>>> = vec![None; p.layers.len()];
    let image = r.to_string();
    loop {
        match report::locate(p, path, &read, &image)? {
            Located::Need(idx) => read[idx] = Some(entries(s, r, p, idx, cost).await?),
            Located::Found(path, h, place) => return Ok((path, h.size, place)),
        }
    }
}

/// What the header of the weight file `path` (`size` bytes at `place`) says ([`HeadRead`]).
pub async fn header_facts<S: Streams>(
    s: &mut S,
    r: &Reference,
    p: &Peeked,
    path: &str,
    place: &Place,
    size: u64,
    cost: &mut Cost,
) -> Result<Option<lamina_core::pack::Facts>, Failure> {
    let mut h = HeadRead::new(p, path, place, size);
    loop {
        match h.poll()? {
            HeadWant::Range(layer, range) => {
                cost.ranges += 1;
                let (d, hook) = s.driver();
                let op = GetRange::new(&r.repository, &p.layers[layer].digest, range);
                let (got, _) = d.run(r, op, hook).await?;
                if let Ranged::Bytes(b) = &got {
                    cost.range_bytes += b.len() as u64;
                }
                h.ranged(got)?;
            }
            HeadWant::Stream(fb) => {
                let digest = p.layers[fb.layer].digest.clone();
                let what = format!("{path} in layer {} ({digest})", fb.layer);
                let (d, hook) = s.driver();
                let mut window = fb.window();
                let op = match fb.blob_range() {
                    Some(range) => {
                        // the file's bytes, or its frames: one range (the registry may send
                        // the whole blob)
                        cost.ranges += 1;
                        cost.range_bytes += range.end - range.start;
                        OpenBlob::range(&r.repository, &digest, range)
                    }
                    None => {
                        cost.streamed.push(fb.layer);
                        OpenBlob::new(&r.repository, &digest)
                    }
                };
                let (opened, st) = d.run(r, op, hook).await?;
                let mut body = stream(s, st, &what)?;
                let (mut skip, mut left) = (opened.skip, fb.len);
                let (mut buf, mut out) = (Vec::new(), Vec::new());
                while h.wants_more() && left > 0 && body.next_into(&mut buf).await? {
                    let mut b = &buf[..];
                    let n = (skip.min(b.len() as u64)) as usize;
                    skip -= n as u64;
                    b = &b[n..];
                    match &mut window {
                        None => {
                            let b = &b[..(left.min(b.len() as u64)) as usize];
                            cost.stream_bytes += b.len() as u64;
                            left -= b.len() as u64;
                            h.file(b);
                        }
                        Some(w) => {
                            out.clear();
                            w.write(b, &mut out)?;
                            cost.stream_bytes += out.len() as u64;
                            left -= (out.len() as u64).min(left);
                            h.file(&out);
                        }
                    }
                }
                body.cancel();
            }
            HeadWant::Done(f) => return Ok(f),
        }
    }
}

/// `lamina ls REF [PATH] [--layer N] --json`: the entries under `path` (all when `None`).
pub async fn ls<S: Streams>(
    s: &mut S,
    r: &Reference,
    path: Option<&str>,
    layers: &[usize],
    platform: Option<&str>,
) -> Result<Value, Failure> {
    let p = open(s, r, platform).await?;
    let image = r.to_string();
    report::check_layers(&p, layers, &image)?;
    let mut cost = Cost::default();
    let only = (!layers.is_empty()).then_some(layers);
    let tree = tree(s, r, &p, only, &mut cost).await?;
    let dir = report::dir_arg(path)?.unwrap_or_default();
    let rows = report::listing(&tree, &dir, &image)?;
    Ok(report::ls_json(&image, p.format, &rows, &cost))
}

/// `lamina inspect REF [PATH] [--layer N] --json`: the weight files' header facts.
pub async fn inspect<S: Streams>(
    s: &mut S,
    r: &Reference,
    path: Option<&str>,
    layers: &[usize],
    platform: Option<&str>,
) -> Result<Value, Failure> {
    let p = open(s, r, platform).await?;
    let image = r.to_string();
    report::check_layers(&p, layers, &image)?;
    let mut cost = Cost::default();
    let wanted = report::dir_arg(path)?;
    let files = if report::inspect_locates(wanted.as_deref(), layers) {
        vec![locate(s, r, &p, wanted.as_deref().unwrap_or_default(), &mut cost).await?]
    } else {
        let only = (!layers.is_empty()).then_some(layers);
        let tree = tree(s, r, &p, only, &mut cost).await?;
        report::weight_files(&tree, &wanted.unwrap_or_default(), &image)?
    };
    let mut rows: Vec<Inspected> = Vec::new();
    for (path, size, place) in files {
        let f = header_facts(s, r, &p, &path, &place, size, &mut cost).await?;
        rows.push((path, size, place.layer(), f));
    }
    Ok(report::inspect_json(&image, &rows, &cost))
}
