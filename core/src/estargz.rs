//! The table of contents of an eStargz layer (stargz-snapshotter's seekable gzip: nerdctl,
//! buildkit, `ctr-remote image optimize`): a gzip layer whose files each start gzip members of
//! their own, its last member a tar holding `stargz.index.json` (the table), and a 51-byte
//! footer (an empty gzip member whose extra field says `%016x` the table's offset, then
//! `STARGZ`). The layer's descriptor carries the sha256 of the table's JSON ([`TOC_DIGEST`]);
//! the manifest is verified by its digest, so a table that matches it is as trusted as the
//! manifest. Reading a layer costs two ranges (the footer, the table); a file's bytes are the
//! members from its `offset` up to the next file's (or the table), checked against the sha256
//! the table gives.
//!
//! The table lists what the tar holds but for itself: the tar's own `stargz.index.json`
//! entry is added, as a runtime that untars the layer has it (`.no.prefetch.landmark` and
//! `.prefetch.landmark` are in the table and the tar alike).
//!
//! What cannot be checked without reading the whole blob: that the tar stream the layer's
//! digest covers holds the same entries as the table.
//!
//! Written here rather than taken from a crate: no Rust reader of eStargz exists, and this is
//! a footer and the JSON table that [`crate::chunked`] also reads.

use std::ops::Range;

use serde_json::Value;

use crate::chunked::{self, Frames};
use crate::compress::Compression;
use crate::digest::Digest;
use crate::error::Error;
use crate::image::Descriptor;
use crate::untar::{Event, Header, Kind, TarReader};

/// The annotation with the sha256 of the table's JSON.
pub const TOC_DIGEST: &str = "containerd.io/snapshot/stargz/toc.digest";
/// The footer's length.
pub const FOOTER: u64 = 51;
/// The table's name in the tar.
pub const TOC_NAME: &str = "stargz.index.json";
/// The largest table read (compressed, and decoded).
pub const MAX: u64 = chunked::MAX;

/// The table's digest, when `d` is an eStargz layer lamina can trust the table of.
pub fn toc_digest(d: &Descriptor) -> Option<Digest> {
    let (_, v) = d.annotations.iter().find(|(k, _)| k == TOC_DIGEST)?;
    let digest = Digest::parse(v).ok()?;
    (d.size > FOOTER).then_some(digest)
}

/// The footer's bytes in the blob.
pub fn footer_range(d: &Descriptor) -> Range<u64> {
    d.size.saturating_sub(FOOTER)..d.size
}

fn what(idx: usize, d: &Descriptor) -> String {
    format!(
        "the eStargz table of contents of layer {idx} ({})",
        d.digest
    )
}

/// Where the table is, from the footer's bytes: its compressed bytes, up to the footer.
pub fn toc_range(idx: usize, d: &Descriptor, footer: &[u8]) -> Result<Range<u64>, Error> {
    let bad = |why: &str| Error::Tar {
        reason: format!("{}: {why}", what(idx, d)),
    };
    // an empty gzip member: magic, deflate, FEXTRA; XLEN 26; subfield "SG", 22 bytes:
    // %016x offset + "STARGZ"
    if footer.len() as u64 != FOOTER
        || footer[..4] != [0x1f, 0x8b, 8, 4]
        || footer[10..14] != [26, 0, b'S', b'G']
        || footer[14..16] != [22, 0]
        || &footer[32..38] != b"STARGZ"
    {
        return Err(bad("the layer does not end with an eStargz footer"));
    }
    let hex = std::str::from_utf8(&footer[16..32]).map_err(|_| bad("a footer that is not hex"))?;
    let off = u64::from_str_radix(hex, 16).map_err(|_| bad("a footer that is not hex"))?;
    let end = d.size - FOOTER;
    if off >= end || end - off > MAX {
        return Err(bad(&format!(
            "the footer puts the table at {off}, outside the blob"
        )));
    }
    Ok(off..end)
}

/// The entries of the table whose compressed bytes are `bytes` (the blob's at `range`), in
/// the order of the tar, each file with its [`Frames`]: the table's JSON checked against
/// `digest`.
pub fn entries(
    idx: usize,
    d: &Descriptor,
    digest: &Digest,
    range: Range<u64>,
    bytes: &[u8],
) -> Result<Vec<(Header, Option<Frames>)>, Error> {
    let what = what(idx, d);
    let bad = |why: String| Error::Tar {
        reason: format!("{what}: {why}"),
    };
    // the member is a tar of one entry, the table
    let tar = chunked::decode(Compression::Gzip, bytes, MAX, &bad)?;
    let mut r = TarReader::new();
    let (mut json, mut at, mut mode) = (Vec::new(), 0u64, 0u32);
    let (mut inside, mut seen) = (false, false);
    r.write(&tar, &mut |e| {
        match e {
            Event::Entry(h) => {
                inside = h.path == TOC_NAME && h.kind == Kind::File && !seen;
                if inside {
                    (seen, at, mode) = (true, h.at, h.mode);
                }
            }
            Event::Data(b) if inside => json.extend_from_slice(b),
            _ => {}
        }
        Ok(())
    })?;
    if !seen {
        return Err(bad(format!("its last member holds no {TOC_NAME}")));
    }
    let got = Digest::of(&json);
    if got != *digest {
        return Err(Error::DigestMismatch {
            what,
            expected: digest.clone(),
            found: got,
        });
    }
    let v: Value = serde_json::from_slice(&json).map_err(|e| bad(format!("not JSON: {e}")))?;
    let list = v
        .get("entries")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no \"entries\" list".into()))?;
    if list.len() > chunked::MAX_ENTRIES {
        return Err(bad(format!("over {} entries", chunked::MAX_ENTRIES)));
    }
    // where each piece of content starts: a file ends where the next piece after its own
    // pieces starts, or at the table
    let offset = |e: &Value| e.get("offset").and_then(Value::as_u64);
    let mut starts: Vec<u64> = list.iter().filter_map(offset).collect();
    starts.sort_unstable();
    let mut out: Vec<(Header, Option<Frames>)> = Vec::new();
    for (i, e) in list.iter().enumerate() {
        let Some(h) = chunked::header(e, i, &bad)? else {
            // a chunk: its file's frames go on through it
            if let (Some(o), Some((_, Some(f)))) = (offset(e), out.last_mut()) {
                if o < f.range.start || o >= range.start {
                    return Err(bad(format!("entry {i}: a chunk at {o}, out of place")));
                }
                f.range.end = next_start(&starts, o, range.start);
            }
            continue;
        };
        let frames = if h.kind == Kind::File {
            let range = match offset(e) {
                _ if h.size == 0 => 0..0,
                Some(o) if o < range.start => o..next_start(&starts, o, range.start),
                _ => {
                    return Err(bad(format!(
                        "{}: its {} bytes have no members inside the blob",
                        h.path, h.size
                    )))
                }
            };
            Some(Frames {
                range,
                digest: chunked::content_digest(e, &h.path, &bad)?,
                compression: Compression::Gzip,
                skip: 0,
            })
        } else {
            None
        };
        out.push((h, frames));
    }
    // the tar's own entry for the table, as a runtime that untars the layer has it
    let size = json.len() as u64;
    out.push((
        Header {
            path: TOC_NAME.into(),
            kind: Kind::File,
            size,
            mode,
            mtime: 0,
            at: 0,
        },
        Some(Frames {
            range,
            digest: Some(got),
            compression: Compression::Gzip,
            skip: at,
        }),
    ));
    Ok(out)
}

/// The first start after `o`, or `end`.
fn next_start(starts: &[u64], o: u64, end: u64) -> u64 {
    let i = starts.partition_point(|&s| s <= o);
    starts.get(i).copied().unwrap_or(end).min(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress;
    use crate::tar::{EntryKind, TarWriter};

    fn gzip(b: &[u8]) -> Vec<u8> {
        compress::testutil::encode(Compression::Gzip, None, b, usize::MAX)
    }

    fn footer(off: u64) -> Vec<u8> {
        let mut f = vec![
            0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff, 26, 0, b'S', b'G', 22, 0,
        ];
        f.extend_from_slice(format!("{off:016x}STARGZ").as_bytes());
        f.extend_from_slice(&[1, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(f.len() as u64, FOOTER);
        f
    }

    /// A layer as stargz-snapshotter lays one out: each file's content in members of its own
    /// (here one member for `a`, two chunks for `b`), the table, the footer.
    fn layer(table: &str) -> (Descriptor, Vec<u8>, Range<u64>) {
        let mut blob = gzip(&[0u8; 512]); // a header's member
        let a = blob.len();
        blob.extend(gzip(b"hello"));
        let b = blob.len();
        blob.extend(gzip(&[1u8; 100]));
        let b2 = blob.len();
        blob.extend(gzip(&[1u8; 50]));
        let table = table
            .replace("A_OFF", &a.to_string())
            .replace("B_OFF", &b.to_string())
            .replace("B2_OFF", &b2.to_string());
        let mut tar = Vec::new();
        let mut sink = |x: &[u8]| tar.extend_from_slice(x);
        let mut w = TarWriter::new(0);
        let kind = EntryKind::File {
            size: table.len() as u64,
            executable: false,
        };
        w.entry(TOC_NAME, &kind, &mut sink).unwrap();
        w.data(table.as_bytes(), &mut sink).unwrap();
        w.end_file().unwrap();
        w.finish(&mut sink).unwrap();
        let off = blob.len() as u64;
        blob.extend(gzip(&tar));
        let end = blob.len() as u64;
        blob.extend(footer(off));
        let mut d = Descriptor::new(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            Digest::of(&blob),
            blob.len() as u64,
        );
        d.annotations
            .push((TOC_DIGEST.into(), Digest::of(table.as_bytes()).to_string()));
        (d, blob, off..end)
    }

    const TABLE: &str = r#"{"version":1,"entries":[
        {"name":".no.prefetch.landmark","type":"reg","size":1,"offset":A_OFF},
        {"name":"./","type":"dir","mode":493},
        {"name":"./l","type":"symlink","linkName":"a","mode":511},
        {"name":"./a","type":"reg","size":5,"mode":420,"offset":A_OFF,
         "digest":"sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"},
        {"name":"./b","type":"reg","size":150,"mode":420,"offset":B_OFF,"chunkSize":100},
        {"name":"./b","type":"chunk","offset":B2_OFF,"chunkOffset":100}
    ]}"#;

    fn read(table: &str) -> Result<Vec<(Header, Option<Frames>)>, Error> {
        let (d, blob, range) = layer(table);
        let digest = toc_digest(&d).unwrap();
        let f = footer_range(&d);
        let r = toc_range(0, &d, &blob[f.start as usize..])?;
        assert_eq!(r, range);
        entries(
            0,
            &d,
            &digest,
            r.clone(),
            &blob[r.start as usize..r.end as usize],
        )
    }

    #[test]
    fn a_table_gives_entries_with_their_members() {
        let (_, blob, toc) = layer(TABLE);
        let got = read(TABLE).unwrap();
        let names: Vec<&str> = got.iter().map(|(h, _)| h.path.as_str()).collect();
        assert_eq!(
            names,
            [".no.prefetch.landmark", "./", "./l", "./a", "./b", TOC_NAME]
        );
        let decode = |f: &Frames, len: u64| {
            let b = &blob[f.range.start as usize..f.range.end as usize];
            let all = chunked::decode(f.compression, b, 1 << 20, &|w| Error::internal(w)).unwrap();
            all[f.skip as usize..(f.skip + len) as usize].to_vec()
        };
        let a = got[3].1.as_ref().unwrap();
        assert_eq!(decode(a, 5), b"hello");
        assert!(a.digest.is_some());
        let b = got[4].1.as_ref().unwrap();
        assert_eq!(b.range.end, toc.start, "through its chunk, to the table");
        assert_eq!(decode(b, 150), [1u8; 150]);
        let t = got[5].1.as_ref().unwrap();
        assert_eq!(t.skip, 512);
        assert!(decode(t, got[5].0.size).starts_with(b"{\"version\""));
        assert_eq!(got[2].0.kind, Kind::Symlink("a".into()));
    }

    #[test]
    fn a_table_that_is_not_the_annotated_one_or_a_bad_footer_is_refused() {
        let (mut d, blob, range) = layer(TABLE);
        d.annotations[0].1 = Digest::of(b"other").to_string();
        let digest = toc_digest(&d).unwrap();
        let e = entries(
            0,
            &d,
            &digest,
            range.clone(),
            &blob[range.start as usize..range.end as usize],
        )
        .unwrap_err();
        assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
        let f = footer_range(&d);
        let mut foot = blob[f.start as usize..].to_vec();
        foot[33] = b'x';
        assert!(toc_range(0, &d, &foot).is_err());
        let mut far = footer(1 << 40);
        far.truncate(FOOTER as usize);
        assert!(toc_range(0, &d, &far).is_err(), "a table past the blob");
        assert!(toc_range(0, &d, &foot[..10]).is_err());
        // files without members, chunks out of place, unknown types
        for t in [
            r#"{"entries":[{"name":"a","type":"reg","size":5}]}"#,
            r#"{"entries":[{"name":"a","type":"reg","size":5,"offset":99999999}]}"#,
            r#"{"entries":[{"name":"a","type":"reg","size":5,"offset":B_OFF},{"name":"a","type":"chunk","offset":1}]}"#,
            r#"{"entries":[{"name":"a","type":"weird"}]}"#,
            "not json",
        ] {
            assert!(read(t).is_err(), "{t}");
        }
    }
}
