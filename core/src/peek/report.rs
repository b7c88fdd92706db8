//! What `ls` and `inspect` answer, for every driver (the CLI, the Worker, the page): the rows
//! of a listing, the weight files of a tree, one path found from the top layer down
//! ([`locate`]), a weight file's header read by ranges or a stream ([`HeadRead`]), and the JSON
//! documents `lamina ls --json` and `lamina inspect --json` print. Sans-IO: a driver meets the
//! layer reads ([`super::LayerRead`]) and the header's ranges, and counts what they cost.

use std::ops::Range;

use serde_json::{json, Map, Value};

use super::{hides, normal, Holds, Node, Peeked, Place, Tree};
use crate::compress::{self, Compression};
use crate::digest::Digest;
use crate::error::Error;
use crate::pack::{param_size, Facts, HeadReader};
use crate::registry::Ranged;
use crate::untar::{Header, Kind};

/// A layer's entry, and where its bytes are (files).
pub type Entry = (Header, Option<Place>);

/// What reading cost (the `read` object of the JSON).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cost {
    /// Range requests (or seeks) made.
    pub ranges: u64,
    /// Blob bytes read by them.
    pub range_bytes: u64,
    /// Layers read whole as a stream (compressed, or a registry that ignores `Range`).
    pub streamed: Vec<usize>,
    /// Blob bytes read by streams.
    pub stream_bytes: u64,
}

impl Cost {
    /// `{"rangeRequests", "rangeBytes", "streamedLayers", "streamedBytes"}`.
    pub fn json(&self) -> Value {
        json!({
            "rangeRequests": self.ranges,
            "rangeBytes": self.range_bytes,
            "streamedLayers": self.streamed,
            "streamedBytes": self.stream_bytes,
        })
    }
}

/// An empty tree for `p`'s layers: merged as a runtime merges them, or side by side for a model
/// artifact.
pub fn tree_for(p: &Peeked) -> Tree {
    if p.artifact {
        Tree::side_by_side()
    } else {
        Tree::new()
    }
}

/// A `PATH` argument as the tree keeps it (`""`: the root; `None`: none given).
pub fn dir_arg(path: Option<&str>) -> Result<Option<String>, Error> {
    path.map(|d| {
        normal(d).ok_or_else(|| Error::Usage {
            reason: format!("PATH {d:?} climbs out of the root"),
        })
    })
    .transpose()
}

/// Checks `--layer` indices against `p` (`image` names it in the error).
pub fn check_layers(p: &Peeked, layers: &[usize], image: &str) -> Result<(), Error> {
    match layers.iter().find(|&&i| i >= p.layers.len()) {
        Some(bad) => Err(Error::Usage {
            reason: format!(
                "--layer {bad}: {image} has {} layers (0 to {})",
                p.layers.len(),
                p.layers.len().saturating_sub(1)
            ),
        }),
        None => Ok(()),
    }
}

/// What `ls` lists of `tree` under `dir` (`""`: all): the one file `dir` names, else what is
/// under it. `image` names the image in the error for a path not there.
pub fn listing<'a>(
    tree: &'a Tree,
    dir: &'a str,
    image: &str,
) -> Result<Vec<(&'a str, &'a Node)>, Error> {
    let mut rows: Vec<(&str, &Node)> = Vec::new();
    if !dir.is_empty() {
        match tree.get(dir) {
            None => {
                return Err(Error::NotFound {
                    what: format!("{dir} in {image}"),
                })
            }
            Some(n) if n.kind != Kind::Dir => rows.push((dir, n)),
            Some(_) => {}
        }
    }
    if rows.is_empty() {
        rows.extend(tree.under(dir));
    }
    Ok(rows)
}

/// The entry's type name and link target.
pub fn kind_name(k: &Kind) -> (&'static str, Option<&str>) {
    match k {
        Kind::File => ("file", None),
        Kind::Dir => ("dir", None),
        Kind::Symlink(t) => ("symlink", Some(t)),
        Kind::Hardlink(t) => ("hardlink", Some(t)),
        Kind::Other(_) => ("other", None),
    }
}

/// `lamina ls --json`: `{"image", "format", "entries": [{path, type, size, mode, layer,
/// link}], "read"}`.
pub fn ls_json(image: &str, format: &str, rows: &[(&str, &Node)], cost: &Cost) -> Value {
    let entries: Vec<Value> = rows
        .iter()
        .map(|(path, n)| {
            let (t, link) = kind_name(&n.kind);
            json!({
                "path": path, "type": t, "size": n.size, "mode": format!("{:04o}", n.mode),
                "layer": n.layer, "link": link,
            })
        })
        .collect();
    json!({"image": image, "format": format, "entries": entries, "read": cost.json()})
}

/// Whether `path` names a weight file whose header lamina reads (safetensors, GGUF).
pub fn has_header(path: &str) -> bool {
    let p = path.to_ascii_lowercase();
    p.ends_with(".safetensors") || p.ends_with(".gguf")
}

/// A weight file `inspect` reads: its path, size and where its bytes are.
pub type WeightFile = (String, u64, Place);

/// Whether `inspect` finds the one weight file `path` names from the top layer down
/// ([`locate`], reading only the layers it must) rather than from the whole tree.
pub fn inspect_locates(path: Option<&str>, layers: &[usize]) -> bool {
    path.is_some_and(has_header) && layers.is_empty()
}

/// The weight files of `tree` at or under `dir` (`""`: all), in path order.
pub fn weight_files(tree: &Tree, dir: &str, image: &str) -> Result<Vec<WeightFile>, Error> {
    if !dir.is_empty() && tree.get(dir).is_none() {
        return Err(Error::NotFound {
            what: format!("{dir} in {image}"),
        });
    }
    let mut files = Vec::new();
    for (path, n) in tree.under(dir).chain(tree.get(dir).map(|n| (dir, n))) {
        if n.kind == Kind::File && has_header(path) {
            if let Some(place) = &n.place {
                files.push((path.to_string(), n.size, place.clone()));
            }
        }
    }
    Ok(files)
}

/// One row of `inspect`: a weight file, its layer, and what its header says.
pub type Inspected = (String, u64, usize, Option<Facts>);

/// `lamina inspect --json`: `{"image", "files": [{path, size, layer, format, tensors, params,
/// paramSize, precisions, architecture, quantization, metadata, headerBytes}], "total",
/// "read"}`.
pub fn inspect_json(image: &str, rows: &[Inspected], cost: &Cost) -> Value {
    let files: Vec<Value> = rows
        .iter()
        .map(|(path, size, layer, f)| match f {
            Some(f) => json!({
                "path": path, "size": size, "layer": layer, "format": f.format,
                "tensors": f.tensors, "params": f.params,
                "paramSize": f.params.map(param_size),
                "precisions": f.precisions.iter()
                    .map(|(d, n)| json!({"dtype": d, "params": n})).collect::<Vec<_>>(),
                "architecture": f.architecture, "quantization": f.quantization,
                "metadata": f.metadata.iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<Map<_, _>>(),
                "headerBytes": f.header_len,
            }),
            None => json!({
                "path": path, "size": size, "layer": layer, "format": null,
                "error": "no safetensors or GGUF header lamina reads",
            }),
        })
        .collect();
    let total = total_params(rows);
    json!({
        "image": image,
        "files": files,
        "total": {"files": rows.len(), "params": total, "paramSize": param_size(total)},
        "read": cost.json(),
    })
}

/// The parameters of all the rows.
pub fn total_params(rows: &[Inspected]) -> u64 {
    rows.iter()
        .filter_map(|(_, _, _, f)| f.as_ref().and_then(|f| f.params))
        .sum()
}

/// What [`locate`] found, or the layer it must read first.
#[derive(Debug, PartialEq, Eq)]
pub enum Located {
    /// Give [`locate`] this layer's entries and call it again.
    Need(usize),
    /// The path found (after links), its entry, and where its bytes are.
    Found(String, Header, Place),
}

/// Where the file at `path` is, reading layers from the top down only as far as needed (a
/// model layer on a compressed base finds its files without the base being read): the topmost
/// entry of the path wins unless a layer above hides it ([`hides`]); symlinks (and hard links)
/// are followed, 40 at most. Of a model artifact, the first layer holding the path, as
/// `extract` keeps it. `read[i]` holds layer `i`'s entries once read; until the answer is
/// [`Located::Found`], read the layer [`Located::Need`] names and ask again. `image` names the
/// image in errors.
pub fn locate(
    p: &Peeked,
    path: &str,
    read: &[Option<Vec<Entry>>],
    image: &str,
) -> Result<Located, Error> {
    let order: Vec<usize> = if p.artifact {
        (0..p.layers.len()).collect()
    } else {
        (0..p.layers.len()).rev().collect()
    };
    let not_found = |what: &str| Error::NotFound {
        what: format!("{what} in {image}"),
    };
    let mut want = normal(path).ok_or_else(|| not_found(path))?;
    'hops: for _ in 0..40 {
        for &idx in &order {
            let Some(es) = read.get(idx).and_then(|e| e.as_deref()) else {
                return Ok(Located::Need(idx));
            };
            // the layer's own last entry of the path is the file; else whatever it hides
            let mine = es
                .iter()
                .rev()
                .find(|(h, _)| normal(&h.path).as_deref() == Some(want.as_str()));
            if let Some((h, place)) = mine {
                match &h.kind {
                    Kind::File => {
                        let place = place.clone().ok_or_else(|| not_found(&want))?;
                        return Ok(Located::Found(want, h.clone(), place));
                    }
                    Kind::Dir => {
                        return Err(Error::Usage {
                            reason: format!("{want} is a directory in {image} (see `lamina ls`)"),
                        })
                    }
                    Kind::Symlink(t) => {
                        let base = want.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                        let next = if t.starts_with('/') || base.is_empty() {
                            t.clone()
                        } else {
                            format!("{base}/{t}")
                        };
                        want = normal(&next).ok_or_else(|| not_found(&next))?;
                        continue 'hops;
                    }
                    Kind::Hardlink(t) => {
                        want = normal(t).ok_or_else(|| not_found(t))?;
                        continue 'hops;
                    }
                    Kind::Other(_) => {
                        return Err(Error::Usage {
                            reason: format!("{want} in {image} is not a regular file"),
                        })
                    }
                }
            }
            if !p.artifact && es.iter().any(|(h, _)| hides(h, &want)) {
                return Err(not_found(&want));
            }
        }
        return Err(not_found(&want));
    }
    Err(Error::Usage {
        reason: format!("{path} in {image}: more than 40 symbolic links"),
    })
}

/// What [`HeadRead`] wants next.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadWant {
    /// Bytes `range` of layer `layer`'s blob: answer with [`HeadRead::ranged`].
    Range(usize, Range<u64>),
    /// The file's bytes from its first, as a stream: [`FileBytes`] says how to open them; give
    /// them to [`HeadRead::file`] while [`HeadRead::wants_more`] (and the stream lasts), then
    /// poll again.
    Stream(FileBytes),
    /// The header was read (or there was none lamina reads).
    Done(Option<Facts>),
}

/// A weight file's header facts read as [`HeadReader`] asks: by ranges of its layer (a few
/// KiB to the header's length) when the layer is uncompressed or the file is a raw layer, else
/// (a compressed layer, or a registry that ignores `Range`) from the file's bytes as a stream,
/// read no further than the header. Sans-IO: the driver answers [`HeadWant`]s.
#[derive(Debug)]
pub struct HeadRead {
    path: String,
    size: u64,
    h: Option<HeadReader>,
    /// The layer and the file's offset in its blob, while reading by ranges.
    ranged: Option<(usize, u64)>,
    /// A zstd:chunked file's frames, read by ranges from their first byte and decoded.
    frames: Option<FramesRead>,
    stream: FileBytes,
    asked: Option<Range<u64>>,
    streaming: bool,
    done: bool,
}

impl HeadRead {
    /// Reads the header of the file `path` (`size` bytes) at `place` of `p`.
    pub fn new(p: &Peeked, path: &str, place: &Place, size: u64) -> HeadRead {
        let ranged = match place {
            Place::Blob { layer } => Some((*layer, 0)),
            Place::Tar { layer, at } => {
                matches!(p.holds[*layer], Holds::Tar(Compression::None)).then_some((*layer, *at))
            }
            Place::Frames { .. } => None,
        };
        let frames = match place {
            Place::Frames { layer, frames } => Some(FramesRead {
                layer: *layer,
                range: frames.range.clone(),
                fed: 0,
                window: FileWindow::new(frames.compression, frames.skip..frames.skip + size),
            }),
            _ => None,
        };
        HeadRead {
            path: path.to_string(),
            size,
            h: Some(HeadReader::new(path)),
            ranged,
            frames,
            stream: FileBytes::of(p, place, size),
            asked: None,
            streaming: false,
            done: false,
        }
    }

    fn finish(&mut self) -> HeadWant {
        self.done = true;
        HeadWant::Done(self.h.take().and_then(HeadReader::finish))
    }

    /// What to do next.
    pub fn poll(&mut self) -> Result<HeadWant, Error> {
        if self.done {
            return Err(Error::internal("HeadRead polled after it was done"));
        }
        if self.streaming {
            return Ok(self.finish());
        }
        if let Some(f) = &self.frames {
            let left = f.range.end - f.range.start - f.fed;
            if left == 0 || !self.wants_more() {
                return Ok(self.finish());
            }
            let at = f.range.start + f.fed;
            let r = at..at + left.min(FRAMES_WINDOW);
            self.asked = Some(r.clone());
            return Ok(HeadWant::Range(f.layer, r));
        }
        let Some((layer, base)) = self.ranged else {
            self.streaming = true;
            return Ok(HeadWant::Stream(self.stream.clone()));
        };
        let next = self.h.as_ref().and_then(HeadReader::next_read);
        let Some(r) = next else {
            return Ok(self.finish());
        };
        let end = r.end.min(self.size);
        if end <= r.start {
            return Ok(self.finish());
        }
        self.asked = Some(r.start..end);
        Ok(HeadWant::Range(layer, base + r.start..base + end))
    }

    /// The answer to [`HeadWant::Range`]: the bytes, or that the registry ignored `Range` (the
    /// file is then read as a stream: the next poll says so).
    pub fn ranged(&mut self, got: Ranged) -> Result<(), Error> {
        if self.frames.is_some() {
            return self.frames_ranged(got);
        }
        let (Some(r), Some((layer, _)), Some(h)) = (self.asked.take(), self.ranged, &mut self.h)
        else {
            return Err(Error::internal("HeadRead::ranged without a range asked"));
        };
        match got {
            Ranged::Bytes(b) => {
                let short = (b.len() as u64) < r.end - r.start;
                h.write(&b);
                if short {
                    return Err(Error::Protocol {
                        reason: format!(
                            "{}: layer {layer} ended inside the file's header",
                            self.path
                        ),
                    });
                }
                if r.end == self.size {
                    // the file ended: what it held is all there is
                    self.ranged = None;
                    self.streaming = true;
                }
            }
            Ranged::Ignored { .. } => {
                self.ranged = None;
                self.h = Some(HeadReader::new(&self.path));
            }
        }
        Ok(())
    }

    /// The answer to a range of a zstd:chunked file's frames: decoded into the header reader;
    /// or, when the registry ignored `Range`, the frames read as a stream.
    fn frames_ranged(&mut self, got: Ranged) -> Result<(), Error> {
        let (Some(r), Some(f), Some(h)) = (self.asked.take(), &mut self.frames, &mut self.h) else {
            return Err(Error::internal("HeadRead::ranged without a range asked"));
        };
        match got {
            Ranged::Bytes(b) => {
                if (b.len() as u64) != r.end - r.start {
                    return Err(Error::Protocol {
                        reason: format!(
                            "{}: layer {} sent {} bytes of its frames for {} asked",
                            self.path,
                            f.layer,
                            b.len(),
                            r.end - r.start
                        ),
                    });
                }
                let mut out = Vec::new();
                f.window.write(&b, &mut out)?;
                f.fed += b.len() as u64;
                if f.fed == f.range.end - f.range.start {
                    f.window.finish(&mut out)?;
                }
                h.write(&out);
            }
            Ranged::Ignored { .. } => {
                // the next poll gives the stream
                self.frames = None;
                self.h = Some(HeadReader::new(&self.path));
            }
        }
        Ok(())
    }

    /// Whether more of the file's stream is wanted.
    pub fn wants_more(&self) -> bool {
        self.h.as_ref().is_some_and(HeadReader::wants_more)
    }

    /// The file's next bytes, in order (after [`HeadWant::Stream`]).
    pub fn file(&mut self, b: &[u8]) {
        if let Some(h) = &mut self.h {
            h.write(b);
        }
    }
}

/// How much of a zstd:chunked file's frames one range asks for, while its header is read.
const FRAMES_WINDOW: u64 = 64 << 10;

/// A zstd:chunked file's frames being read by ranges: the layer, the frames' range in the
/// blob, how many bytes of them were decoded.
#[derive(Debug)]
struct FramesRead {
    layer: usize,
    range: Range<u64>,
    fed: u64,
    window: FileWindow,
}

/// How a file's bytes are coded in the part of the blob that holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Coding {
    /// The blob's bytes `range` are the file (a raw layer, an uncompressed tar).
    Plain,
    /// The whole blob is decoded; the file is bytes `range` of what it decodes to.
    Whole(Compression),
    /// The blob's bytes `range` are zstd frames or gzip members that decode to the file after
    /// `skip` bytes (zstd:chunked, eStargz).
    Frames(Compression, u64),
}

/// How to stream a file's bytes: which bytes of layer `layer`'s blob to read
/// ([`FileBytes::blob_range`]: a range, or the whole blob), and how to get the file out of
/// them ([`FileBytes::window`]); the content's digest when the layer's table gives one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileBytes {
    /// The layer.
    pub layer: usize,
    /// The file's bytes in the blob, or in the decoded blob ([`Coding::Whole`]).
    pub range: Range<u64>,
    /// How they are coded.
    pub coding: Coding,
    /// The file's length.
    pub len: u64,
    /// The sha256 of the file's content, when known without reading the layer whole.
    pub digest: Option<Digest>,
}

impl FileBytes {
    /// Where the bytes of the file at `place` (`size` bytes) of `p` are.
    pub fn of(p: &Peeked, place: &Place, size: u64) -> FileBytes {
        let (layer, range, coding, digest) = match place {
            Place::Blob { layer } => (*layer, 0..size, Coding::Plain, None),
            Place::Frames { layer, frames } => (
                *layer,
                frames.range.clone(),
                Coding::Frames(frames.compression, frames.skip),
                frames.digest.clone(),
            ),
            Place::Tar { layer, at } => (
                *layer,
                *at..*at + size,
                match p.holds[*layer] {
                    Holds::Tar(Compression::None) => Coding::Plain,
                    Holds::Tar(c) => Coding::Whole(c),
                    _ => Coding::Plain,
                },
                None,
            ),
        };
        FileBytes {
            layer,
            range,
            coding,
            len: size,
            digest,
        }
    }

    /// The blob's bytes to read: a range, or `None` for the whole blob.
    pub fn blob_range(&self) -> Option<Range<u64>> {
        match self.coding {
            Coding::Plain | Coding::Frames(..) => Some(self.range.clone()),
            Coding::Whole(_) => None,
        }
    }

    /// What turns those bytes into the file's: `None` when they are the file's.
    pub fn window(&self) -> Option<FileWindow> {
        match self.coding {
            Coding::Plain => None,
            Coding::Whole(c) => Some(FileWindow::new(c, self.range.clone())),
            Coding::Frames(c, skip) => Some(FileWindow::new(c, skip..skip + self.len)),
        }
    }
}

/// Bytes `range` of a compressed blob's decoded stream: the blob's bytes go in, the range's
/// come out.
pub struct FileWindow {
    dec: Box<dyn compress::Decoder<Error>>,
    pos: u64,
    range: Range<u64>,
}

impl std::fmt::Debug for FileWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileWindow({:?} at {})", self.range, self.pos)
    }
}

impl FileWindow {
    /// Decodes `c` and keeps `range` of the output.
    pub fn new(c: Compression, range: Range<u64>) -> FileWindow {
        FileWindow {
            dec: compress::decoder::<Error>(c),
            pos: 0,
            range,
        }
    }

    /// Whether the window's last byte has come out.
    pub fn full(&self) -> bool {
        self.range.is_empty() || self.pos >= self.range.end
    }

    fn keep<'a>(
        pos: &'a mut u64,
        range: &'a Range<u64>,
        out: &'a mut Vec<u8>,
    ) -> impl FnMut(&[u8]) -> Result<(), Error> + 'a {
        move |o: &[u8]| {
            let start = *pos;
            let end = start + o.len() as u64;
            if end > range.start && start < range.end {
                let from = range.start.saturating_sub(start) as usize;
                let to = (range.end.min(end) - start) as usize;
                out.extend_from_slice(&o[from..to]);
            }
            *pos = end;
            Ok(())
        }
    }

    /// The blob's next bytes; the window's bytes among what they decode to are appended to
    /// `out`.
    pub fn write(&mut self, b: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        let mut keep = Self::keep(&mut self.pos, &self.range, out);
        self.dec.write(b, &mut keep).map_err(super::flatten)
    }

    /// The blob ended; the last bytes it decodes to are appended to `out`.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        let mut keep = Self::keep(&mut self.pos, &self.range, out);
        self.dec.finish(&mut keep).map_err(super::flatten)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{Config, Manifest};

    fn header(path: &str, kind: Kind, size: u64) -> Header {
        Header {
            path: path.into(),
            kind,
            size,
            mode: 0o644,
            mtime: 0,
            at: 512,
        }
    }

    fn peeked(layers: usize, holds: Holds) -> Peeked {
        let layer = r#"{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":100000}"#;
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":2}},"layers":[{}]}}"#,
            vec![layer; layers].join(",")
        );
        let ids = vec![
            r#""sha256:0000000000000000000000000000000000000000000000000000000000000000""#;
            layers
        ]
        .join(",");
        let c = format!(r#"{{"rootfs":{{"type":"layers","diff_ids":[{ids}]}}}}"#);
        let m =
            Manifest::parse(m.into_bytes(), "application/vnd.oci.image.manifest.v1+json").unwrap();
        let c = Config::parse(c.into_bytes()).unwrap();
        let mut p = Peeked::of(&m, &c).unwrap();
        p.holds = vec![holds; layers];
        p
    }

    #[test]
    fn locate_reads_from_the_top_down_and_follows_links() {
        let p = peeked(2, Holds::Tar(Compression::None));
        let mut read: Vec<Option<Vec<Entry>>> = vec![None, None];
        assert_eq!(
            locate(&p, "/m/w.safetensors", &read, "img").unwrap(),
            Located::Need(1)
        );
        read[1] = Some(vec![(
            header(
                "m/w.safetensors",
                Kind::Symlink("real.safetensors".into()),
                0,
            ),
            None,
        )]);
        assert_eq!(
            locate(&p, "m/w.safetensors", &read, "img").unwrap(),
            Located::Need(0)
        );
        let file = header("m/real.safetensors", Kind::File, 40);
        read[0] = Some(vec![(file.clone(), Some(Place::Tar { layer: 0, at: 512 }))]);
        assert_eq!(
            locate(&p, "m/w.safetensors", &read, "img").unwrap(),
            Located::Found(
                "m/real.safetensors".into(),
                file,
                Place::Tar { layer: 0, at: 512 }
            )
        );
        // a whiteout above hides the file below
        read[1] = Some(vec![(
            header("m/.wh.real.safetensors", Kind::File, 0),
            None,
        )]);
        let e = locate(&p, "m/real.safetensors", &read, "img").unwrap_err();
        assert!(e.to_string().contains("m/real.safetensors in img"), "{e}");
    }

    #[test]
    fn a_header_is_read_by_ranges_to_its_length() {
        let p = peeked(1, Holds::Tar(Compression::None));
        let hdr = br#"{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}}"#;
        let mut file = (hdr.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(hdr);
        file.extend_from_slice(&[0u8; 24]);
        let size = file.len() as u64;
        let mut h = HeadRead::new(
            &p,
            "w.safetensors",
            &Place::Tar { layer: 0, at: 1024 },
            size,
        );
        let HeadWant::Range(0, r) = h.poll().unwrap() else {
            panic!("a range first")
        };
        assert_eq!(r, 1024..1024 + size, "the head, cut at the file's end");
        h.ranged(Ranged::Bytes(file.clone())).unwrap();
        let HeadWant::Done(Some(f)) = h.poll().unwrap() else {
            panic!("the facts")
        };
        assert_eq!((f.tensors, f.params), (1, Some(6)));
        // a registry that ignores Range: the file is streamed instead
        let mut h = HeadRead::new(
            &p,
            "w.safetensors",
            &Place::Tar { layer: 0, at: 1024 },
            size,
        );
        assert!(matches!(h.poll().unwrap(), HeadWant::Range(..)));
        h.ranged(Ranged::Ignored { head: vec![0; 10] }).unwrap();
        let HeadWant::Stream(fb) = h.poll().unwrap() else {
            panic!("a stream")
        };
        assert_eq!((fb.range, fb.coding), (1024..1024 + size, Coding::Plain));
        h.file(&file);
        assert!(
            !h.wants_more(),
            "the whole safetensors header is in: no more is wanted"
        );
        assert!(matches!(h.poll().unwrap(), HeadWant::Done(Some(_))));
        // a short answer is an error
        let mut h = HeadRead::new(&p, "w.safetensors", &Place::Blob { layer: 0 }, size);
        assert_eq!(h.poll().unwrap(), HeadWant::Range(0, 0..size));
        assert!(h.ranged(Ranged::Bytes(file[..10].to_vec())).is_err());
    }

    #[test]
    fn a_compressed_layers_file_comes_out_of_its_window() {
        let p = peeked(1, Holds::Tar(Compression::Gzip));
        let mut h = HeadRead::new(&p, "w.gguf", &Place::Tar { layer: 0, at: 3 }, 4);
        let HeadWant::Stream(fb) = h.poll().unwrap() else {
            panic!("a stream")
        };
        assert_eq!(fb.coding, Coding::Whole(Compression::Gzip));
        let data: Vec<u8> = (0u8..20).collect();
        let gz = {
            let mut e = compress::encoder::<std::convert::Infallible>(Compression::Gzip, None);
            let mut out = Vec::new();
            e.write(&data, &mut |b: &[u8]| {
                out.extend_from_slice(b);
                Ok(())
            })
            .unwrap();
            e.finish(&mut |b: &[u8]| {
                out.extend_from_slice(b);
                Ok(())
            })
            .unwrap();
            out
        };
        let mut w = FileWindow::new(Compression::Gzip, fb.range);
        let mut out = Vec::new();
        for piece in gz.chunks(3) {
            w.write(piece, &mut out).unwrap();
        }
        w.finish(&mut out).unwrap();
        assert_eq!(out, [3, 4, 5, 6]);
        assert!(w.full());
    }

    /// A zstd:chunked file's header: ranges of its frames from their first byte, decoded,
    /// no further than the header needs; a registry that ignores `Range` streams them.
    #[test]
    fn a_zstd_chunked_files_header_is_read_by_ranges_of_its_frames() {
        let p = peeked(1, Holds::Tar(Compression::Zstd));
        let hdr = br#"{"w":{"dtype":"F16","shape":[4096,128],"data_offsets":[0,1048576]}}"#;
        let mut file = (hdr.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(hdr);
        // data that does not compress: the frames are about as long as the file
        let mut x = 1u64;
        file.extend((0..1 << 20).map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 56) as u8
        }));
        let size = file.len() as u64;
        // as containers/storage writes a file: chunks of it, each a zstd frame of its own
        let mut z = Vec::new();
        for chunk in file.chunks(64 << 10) {
            z.extend(compress::testutil::encode(
                Compression::Zstd,
                None,
                chunk,
                usize::MAX,
            ));
        }
        let mut blob = vec![0u8; 5000];
        blob.extend_from_slice(&z);
        let frames = crate::chunked::Frames {
            range: 5000..blob.len() as u64,
            digest: None,
            compression: Compression::Zstd,
            skip: 0,
        };
        let place = Place::Frames { layer: 0, frames };
        let mut h = HeadRead::new(&p, "w.safetensors", &place, size);
        let mut asked = 0u64;
        let facts = loop {
            match h.poll().unwrap() {
                HeadWant::Range(0, r) => {
                    assert!(r.start >= 5000 && r.end <= blob.len() as u64, "{r:?}");
                    asked += r.end - r.start;
                    h.ranged(Ranged::Bytes(
                        blob[r.start as usize..r.end as usize].to_vec(),
                    ))
                    .unwrap();
                }
                HeadWant::Done(f) => break f.unwrap(),
                w => panic!("{w:?}"),
            }
        };
        assert_eq!((facts.tensors, facts.params), (1, Some(4096 * 128)));
        assert!(
            asked <= 128 << 10,
            "{asked} of {} bytes of frames asked",
            z.len()
        );
        // a registry that ignores Range: the frames as a stream
        let mut h = HeadRead::new(&p, "w.safetensors", &place, size);
        assert!(matches!(h.poll().unwrap(), HeadWant::Range(..)));
        h.ranged(Ranged::Ignored { head: Vec::new() }).unwrap();
        let HeadWant::Stream(fb) = h.poll().unwrap() else {
            panic!("a stream")
        };
        assert_eq!(
            (fb.coding.clone(), fb.blob_range()),
            (
                Coding::Frames(Compression::Zstd, 0),
                Some(5000..blob.len() as u64)
            )
        );
        let mut w = fb.window().unwrap();
        let mut out = Vec::new();
        w.write(&blob[5000..], &mut out).unwrap();
        w.finish(&mut out).unwrap();
        assert!(out == file);
    }

    #[test]
    fn listings_and_their_json() {
        let mut t = Tree::new();
        t.begin(0);
        t.add(
            &header("a/b.json", Kind::File, 3),
            Some(Place::Tar { layer: 0, at: 512 }),
        )
        .unwrap();
        t.add(&header("a/l", Kind::Symlink("b.json".into()), 0), None)
            .unwrap();
        t.end();
        let rows = listing(&t, "", "img").unwrap();
        let v = ls_json("img", "image", &rows, &Cost::default());
        assert_eq!(
            v["entries"],
            json!([
                {"path": "a", "type": "dir", "size": 0, "mode": "0755", "layer": null, "link": null},
                {"path": "a/b.json", "type": "file", "size": 3, "mode": "0644", "layer": 0, "link": null},
                {"path": "a/l", "type": "symlink", "size": 0, "mode": "0644", "layer": 0, "link": "b.json"},
            ])
        );
        assert_eq!(listing(&t, "a/b.json", "img").unwrap().len(), 1);
        assert!(listing(&t, "nope", "img").is_err());
        assert!(weight_files(&t, "", "img").unwrap().is_empty());
        assert!(dir_arg(Some("../x")).is_err());
        assert!(inspect_locates(Some("x.GGUF"), &[]));
        assert!(!inspect_locates(Some("x.GGUF"), &[1]));
    }
}
