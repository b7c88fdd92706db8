//! The table of contents of a zstd:chunked layer, as podman, buildah and skopeo write them
//! (`--compression-format zstd:chunked`; containers/storage `pkg/chunked`): a zstd layer
//! whose files each start a zstd frame of their own, with a zstd-compressed JSON table of every
//! entry near the blob's end. The layer's descriptor says where the table is and what its
//! compressed bytes hash to ([`POSITION`], [`CHECKSUM`]; older writers use the
//! `io.containers.` names). The manifest is verified by its digest, so a table whose bytes
//! match the checksum is as trustworthy as the manifest: `ls` reads one range per layer, and a
//! file's bytes are the frames at `offset..endOffset`, whose decoded content has the sha256
//! the table gives (checked by `cat` and `extract --include`).
//!
//! What cannot be checked without reading the whole blob: that the tar stream the layer's
//! digest covers holds the same entries as the table (a writer could make them differ; a
//! runtime that pulls the layer whole sees the tar).
//!
//! Written here rather than taken from a crate: there is no Rust reader of this format, and the
//! part needed is a JSON table behind one checksum.

use std::ops::Range;

use serde_json::Value;

use crate::compress::{self, Compression};
use crate::digest::Digest;
use crate::error::Error;
use crate::image::Descriptor;
use crate::untar::{Header, Kind};

/// Where the table is: `"OFFSET:LENGTH:UNCOMPRESSED_LENGTH:TYPE"` (type 1, the only one).
pub const POSITION: &str = "io.github.containers.zstd-chunked.manifest-position";
/// The sha256 of the table's compressed bytes.
pub const CHECKSUM: &str = "io.github.containers.zstd-chunked.manifest-checksum";
/// The names containers/storage used before 1.45 (skopeo 1.9, podman 4.3).
const OLD_POSITION: &str = "io.containers.zstd-chunked.manifest-position";
const OLD_CHECKSUM: &str = "io.containers.zstd-chunked.manifest-checksum";

/// The largest table read (compressed, and decoded): a table of a million entries is about
/// 300 MiB of JSON; real ones are a few hundred bytes per file.
pub const MAX: u64 = 256 << 20;
/// At most this many entries (as [`crate::peek::Walk`] allows).
pub const MAX_ENTRIES: usize = 1_000_000;

/// Where a layer's table is, and its checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The table's compressed bytes in the blob.
    pub range: Range<u64>,
    /// Its length decoded.
    pub decoded: u64,
    /// The sha256 of its compressed bytes.
    pub checksum: Digest,
}

fn annotation<'a>(d: &'a Descriptor, keys: [&str; 2]) -> Option<&'a str> {
    keys.iter().find_map(|k| {
        d.annotations
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    })
}

/// The table's position, when `d` is a zstd:chunked layer (both annotations there and well
/// formed, the table inside the blob); `None` otherwise (the layer is streamed).
pub fn position(d: &Descriptor) -> Option<Position> {
    let pos = annotation(d, [POSITION, OLD_POSITION])?;
    let checksum = Digest::parse(annotation(d, [CHECKSUM, OLD_CHECKSUM])?).ok()?;
    let mut f = pos.split(':').map(str::parse::<u64>);
    let (off, len, decoded, kind) = (
        f.next()?.ok()?,
        f.next()?.ok()?,
        f.next()?.ok()?,
        f.next()?.ok()?,
    );
    if f.next().is_some() || kind != 1 || len == 0 || len > MAX || decoded > MAX {
        return None;
    }
    let end = off.checked_add(len)?;
    (end <= d.size).then_some(Position {
        range: off..end,
        decoded,
        checksum,
    })
}

/// Where a file's bytes are in a seekable compressed layer (zstd:chunked, eStargz): whole
/// zstd frames or gzip members that decode to the file (after `skip` bytes), whose sha256 is
/// `digest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frames {
    /// The frames' bytes in the blob (empty for an empty file).
    pub range: Range<u64>,
    /// The sha256 of the file's content.
    pub digest: Option<Digest>,
    /// How they are compressed.
    pub compression: Compression,
    /// Decoded bytes before the file's first (0 but for eStargz's own `stargz.index.json`,
    /// behind its tar header).
    pub skip: u64,
}

/// The entries of the table `bytes` (the blob's bytes at `pos.range`) of layer `idx` (`d`),
/// in the order of the tar: checked against the checksum, decoded (no more than
/// `pos.decoded` bytes), each file with its [`Frames`].
pub fn entries(
    idx: usize,
    d: &Descriptor,
    pos: &Position,
    bytes: &[u8],
) -> Result<Vec<(Header, Option<Frames>)>, Error> {
    let what = format!(
        "the zstd:chunked table of contents of layer {idx} ({})",
        d.digest
    );
    let bad = |why: String| Error::Tar {
        reason: format!("{what}: {why}"),
    };
    let found = Digest::of(bytes);
    if found != pos.checksum {
        return Err(Error::DigestMismatch {
            what: what.clone(),
            expected: pos.checksum.clone(),
            found,
        });
    }
    let json = decode(Compression::Zstd, bytes, pos.decoded, &bad)?;
    let v: Value = serde_json::from_slice(&json).map_err(|e| bad(format!("not JSON: {e}")))?;
    let list = v
        .get("entries")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no \"entries\" list".into()))?;
    if list.len() > MAX_ENTRIES {
        return Err(bad(format!("over {MAX_ENTRIES} entries")));
    }
    let mut out = Vec::new();
    for (i, e) in list.iter().enumerate() {
        let Some(h) = header(e, i, &bad)? else {
            continue; // a later piece of the file before it: its frames are in its range
        };
        let n = |k: &str| e.get(k).and_then(Value::as_u64);
        let frames = if h.kind == Kind::File {
            let range = match (n("offset"), n("endOffset")) {
                _ if h.size == 0 => 0..0,
                (Some(a), Some(b)) if a < b && b <= pos.range.start => a..b,
                _ => {
                    return Err(bad(format!(
                        "{}: its {} bytes have no frames inside the blob",
                        h.path, h.size
                    )))
                }
            };
            Some(Frames {
                range,
                digest: content_digest(e, &h.path, &bad)?,
                compression: Compression::Zstd,
                skip: 0,
            })
        } else {
            None
        };
        out.push((h, frames));
    }
    Ok(out)
}

/// An entry of a table (zstd:chunked's or eStargz's, which share the format): its header, or
/// `None` for a `chunk` (a later piece of the file before it). `bad` words an error.
pub(crate) fn header(
    e: &Value,
    i: usize,
    bad: &dyn Fn(String) -> Error,
) -> Result<Option<Header>, Error> {
    let s = |k: &str| e.get(k).and_then(Value::as_str);
    let n = |k: &str| e.get(k).and_then(Value::as_u64);
    let t = s("type").ok_or_else(|| bad(format!("entry {i} has no type")))?;
    if t == "chunk" {
        return Ok(None);
    }
    let name = s("name").ok_or_else(|| bad(format!("entry {i} has no name")))?;
    let link = || {
        s("linkName")
            .map(str::to_string)
            .ok_or_else(|| bad(format!("{name}: a link without a target")))
    };
    let kind = match t {
        "reg" => Kind::File,
        "dir" => Kind::Dir,
        "symlink" => Kind::Symlink(link()?),
        "hardlink" => Kind::Hardlink(link()?),
        "char" => Kind::Other(b'3'),
        "block" => Kind::Other(b'4'),
        "fifo" => Kind::Other(b'6'),
        t => return Err(bad(format!("{name}: unknown type {t:?}"))),
    };
    let size = if kind == Kind::File {
        n("size").unwrap_or(0)
    } else {
        0
    };
    let mode = n("mode").and_then(|m| u32::try_from(m).ok()).unwrap_or(0) & 0o7777;
    Ok(Some(Header {
        path: name.to_string(),
        kind,
        size,
        mode,
        mtime: 0,
        at: 0,
    }))
}

/// A file entry's content digest, when it gives one.
pub(crate) fn content_digest(
    e: &Value,
    name: &str,
    bad: &dyn Fn(String) -> Error,
) -> Result<Option<Digest>, Error> {
    let d = e.get("digest").and_then(Value::as_str);
    d.map(Digest::parse)
        .transpose()
        .map_err(|_| bad(format!("{name}: the digest {d:?} is not a sha256")))
}

/// Decodes `bytes` (compressed with `c`) into at most `limit` bytes.
pub(crate) fn decode(
    c: Compression,
    bytes: &[u8],
    limit: u64,
    bad: &dyn Fn(String) -> Error,
) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    let mut dec = compress::decoder::<Error>(c);
    let mut sink = |b: &[u8]| -> Result<(), Error> {
        if out.len() as u64 + b.len() as u64 > limit {
            return Err(Error::Tar {
                reason: format!("decodes to more than the {limit} bytes its position says"),
            });
        }
        out.extend_from_slice(b);
        Ok(())
    };
    dec.write(bytes, &mut sink)
        .and_then(|()| dec.finish(&mut sink))
        .map_err(|e| match e {
            compress::StreamError::Codec(c) => bad(c.to_string()),
            compress::StreamError::Sink(e) => bad(e.to_string()),
        })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zstd(b: &[u8]) -> Vec<u8> {
        compress::testutil::encode(Compression::Zstd, None, b, usize::MAX)
    }

    /// A table as containers/storage writes it (skopeo 1.9's, trimmed): its compressed bytes,
    /// and a descriptor whose annotations say where it is.
    fn layer(table: &str, names: [&str; 2]) -> (Descriptor, Vec<u8>) {
        let mut blob = vec![0u8; 1000];
        let z = zstd(table.as_bytes());
        let at = blob.len() as u64;
        blob.extend_from_slice(&z);
        blob.extend_from_slice(&[0u8; 64]);
        let mut d = Descriptor::new(
            "application/vnd.oci.image.layer.v1.tar+zstd",
            Digest::of(&blob),
            blob.len() as u64,
        );
        d.annotations.push((
            names[0].to_string(),
            format!("{at}:{}:{}:1", z.len(), table.len()),
        ));
        d.annotations
            .push((names[1].to_string(), Digest::of(&z).to_string()));
        (d, blob)
    }

    const TABLE: &str = r#"{"version":1,"entries":[
        {"type":"dir","name":"src/weights/","mode":493},
        {"type":"reg","name":"src/weights/config.json","mode":420,"size":8,
         "digest":"sha256:e346432021b04179518d9614f3560ccd71354a4ee101ddcb893d6959a9d6301c",
         "offset":112,"endOffset":133},
        {"type":"symlink","name":"src/weights/link.json","linkName":"config.json","mode":511},
        {"type":"reg","name":"src/weights/empty","mode":420},
        {"type":"reg","name":"src/weights/w.bin","mode":420,"size":300000,
         "offset":390,"endOffset":900,"chunkSize":100},
        {"type":"chunk","name":"src/weights/w.bin","offset":500,"chunkSize":100,"chunkOffset":100}
    ]}"#;

    #[test]
    fn a_table_gives_entries_with_their_frames() {
        for names in [[POSITION, CHECKSUM], [OLD_POSITION, OLD_CHECKSUM]] {
            let (d, blob) = layer(TABLE, names);
            let pos = position(&d).unwrap();
            let got = entries(
                2,
                &d,
                &pos,
                &blob[pos.range.start as usize..pos.range.end as usize],
            )
            .unwrap();
            let names: Vec<&str> = got.iter().map(|(h, _)| h.path.as_str()).collect();
            assert_eq!(
                names,
                [
                    "src/weights/",
                    "src/weights/config.json",
                    "src/weights/link.json",
                    "src/weights/empty",
                    "src/weights/w.bin"
                ]
            );
            assert_eq!(got[0].0.kind, Kind::Dir);
            assert_eq!(got[1].0.size, 8);
            assert_eq!(got[1].0.mode, 0o644);
            assert_eq!(got[1].1.as_ref().unwrap().range, 112..133);
            assert!(got[1].1.as_ref().unwrap().digest.is_some());
            assert_eq!(got[2].0.kind, Kind::Symlink("config.json".into()));
            assert_eq!(got[3].1.as_ref().unwrap().range, 0..0);
            assert_eq!(got[4].1.as_ref().unwrap().range, 390..900);
        }
    }

    #[test]
    fn a_table_that_does_not_match_its_checksum_is_refused() {
        let (d, blob) = layer(TABLE, [POSITION, CHECKSUM]);
        let pos = position(&d).unwrap();
        let mut b = blob[pos.range.start as usize..pos.range.end as usize].to_vec();
        let last = b.len() - 1;
        b[last] ^= 1;
        let e = entries(0, &d, &pos, &b).unwrap_err();
        assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    }

    #[test]
    fn bad_positions_and_hostile_tables_are_not_used_or_refused() {
        let (d, blob) = layer(TABLE, [POSITION, CHECKSUM]);
        for bad in [
            "1000:10",
            "1000:10:10:2",
            "x:1:1:1",
            "1000:0:0:1",
            "99999:10:10:1",
        ] {
            let mut d2 = d.clone();
            d2.annotations[0].1 = bad.to_string();
            assert_eq!(position(&d2), None, "{bad}");
        }
        let mut d2 = d.clone();
        d2.annotations.pop();
        assert_eq!(position(&d2), None, "no checksum");
        // a position that says the table is smaller than it decodes to
        let pos = position(&d).unwrap();
        let small = Position {
            decoded: 10,
            ..pos.clone()
        };
        let b = &blob[pos.range.start as usize..pos.range.end as usize];
        assert!(entries(0, &d, &small, b).is_err());
        // frames past the table, a file with no frames, an unknown type, not JSON
        for t in [
            r#"{"entries":[{"type":"reg","name":"a","size":5,"offset":10,"endOffset":99999}]}"#,
            r#"{"entries":[{"type":"reg","name":"a","size":5}]}"#,
            r#"{"entries":[{"type":"weird","name":"a"}]}"#,
            r#"{"entries":[{"type":"symlink","name":"a"}]}"#,
            "not json",
        ] {
            let (d, blob) = layer(t, [POSITION, CHECKSUM]);
            let pos = position(&d).unwrap();
            let b = &blob[pos.range.start as usize..pos.range.end as usize];
            assert!(entries(0, &d, &pos, b).is_err(), "{t}");
        }
    }
}
