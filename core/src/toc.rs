//! A layer's table of contents, kept in its descriptor: where lamina writes an uncompressed tar
//! layer of many files (`affix --compression none`, the default for weights), it records each
//! entry's path, type, size, mode and content offset in the layer's annotation
//! [`ANNOTATION`], so a later `ls`, `cat` or `inspect` needs no request to find a file (only
//! the file's own range). The layer's bytes are not changed, and readers need none: images from
//! other tools have no table, and lamina walks their tar headers instead.
//!
//! The table names the digest of the layer it describes, and is used only for that digest: a
//! tool that rewrites the layer and keeps the annotations (a recompression) leaves a table that
//! is ignored. Tables over [`MAX`] bytes are not written (the manifest stays small; the walk is
//! cheap anyway). The value is compact JSON: `{"layer": DIGEST, "entries": [[path, type, size,
//! mode, offset], ...]}` with type `f` (file), `d`, `l` (symlink; the target follows the offset)
//! or `h` (hard link; likewise).

use serde_json::{json, Value};

use crate::digest::Digest;
use crate::error::Error;
use crate::image::Descriptor;
use crate::tar::{archive_path, EntryKind, PlannedEntry, TarWriter};
use crate::untar::{Header, Kind};

/// The layer annotation that holds the table.
pub const ANNOTATION: &str = "dev.lamina.toc.v1";
/// Largest table written, in bytes of JSON.
pub const MAX: usize = 64 << 10;

/// The entries of the tar that [`crate::tar::segments`] makes of `entries` (what the layer
/// builders write), with their content offsets, as a reader of the tar's headers finds them
/// (a test walks the bytes to check it).
pub fn of<S: Clone>(entries: &[PlannedEntry<S>], mtime: u64) -> Result<Vec<Header>, Error> {
    let mut tw = TarWriter::new(mtime);
    let mut pos = 0u64;
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let mut n = 0u64;
        tw.entry(&e.path, &e.kind, &mut |b| n += b.len() as u64)?;
        pos += n;
        let path = archive_path(&e.path)?;
        let (kind, size, mode, path) = match &e.kind {
            EntryKind::Dir => (Kind::Dir, 0, 0o755, format!("{path}/")),
            EntryKind::File { size, executable } => (
                Kind::File,
                *size,
                if *executable { 0o755 } else { 0o644 },
                path,
            ),
            EntryKind::Symlink(t) => (Kind::Symlink(t.clone()), 0, 0o777, path),
            EntryKind::Hardlink(t) => (Kind::Hardlink(t.clone()), 0, 0o644, path),
        };
        out.push(Header {
            path,
            kind,
            size,
            mode,
            mtime,
            at: pos,
        });
        if size > 0 {
            let mut k = 0u64;
            tw.skip(size, &mut |b| k += b.len() as u64)?;
            pos += size + k;
        }
    }
    Ok(out)
}

/// The annotation's value for the layer `digest` holding `entries`, or `None` when the table
/// would be over [`MAX`] bytes.
pub fn annotation(digest: &Digest, entries: &[Header]) -> Option<String> {
    let rows: Vec<Value> = entries
        .iter()
        .map(|h| {
            let (t, link) = match &h.kind {
                Kind::File => ("f", None),
                Kind::Dir => ("d", None),
                Kind::Symlink(t) => ("l", Some(t)),
                Kind::Hardlink(t) => ("h", Some(t)),
                Kind::Other(_) => ("o", None),
            };
            let mut row = json!([h.path, t, h.size, h.mode, h.at]);
            if let (Some(l), Some(a)) = (link, row.as_array_mut()) {
                a.push(Value::String(l.clone()));
            }
            row
        })
        .collect();
    let v = json!({"layer": digest.to_string(), "entries": rows}).to_string();
    (v.len() <= MAX).then_some(v)
}

/// The table of the layer `d` describes, when it has one for its own digest and the table is
/// well formed (every entry inside the blob); `None` otherwise: the reader walks the tar.
pub fn read(d: &Descriptor) -> Option<Vec<Header>> {
    let (_, v) = d.annotations.iter().find(|(k, _)| k == ANNOTATION)?;
    if v.len() > MAX {
        return None;
    }
    let v: Value = serde_json::from_str(v).ok()?;
    if v.get("layer")?.as_str()? != d.digest.to_string() {
        return None;
    }
    let mut out = Vec::new();
    for row in v.get("entries")?.as_array()? {
        let r = row.as_array()?;
        let path = r.first()?.as_str()?.to_string();
        let size = r.get(2)?.as_u64()?;
        let mode = u32::try_from(r.get(3)?.as_u64()?).ok()?;
        let at = r.get(4)?.as_u64()?;
        let link = || r.get(5).and_then(Value::as_str).map(str::to_string);
        let kind = match r.get(1)?.as_str()? {
            "f" => Kind::File,
            "d" => Kind::Dir,
            "l" => Kind::Symlink(link()?),
            "h" => Kind::Hardlink(link()?),
            _ => Kind::Other(0),
        };
        if at.checked_add(size)? > d.size {
            return None;
        }
        out.push(Header {
            path,
            kind,
            size,
            mode,
            mtime: 0,
            at,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peek::{Step, Walk};
    use crate::tar::{segments, Segment};

    fn planned() -> Vec<PlannedEntry<usize>> {
        let e = |p: &str, kind: EntryKind, s: Option<usize>| PlannedEntry {
            path: p.into(),
            kind,
            source: s,
        };
        let file = |size| EntryKind::File {
            size,
            executable: false,
        };
        vec![
            e("models", EntryKind::Dir, None),
            e("models/config.json", file(23), Some(0)),
            e(
                "models/latest",
                EntryKind::Symlink("model.safetensors".into()),
                None,
            ),
            e("models/model.safetensors", file(5 << 20), Some(1)),
            e(&format!("models/{}", "n".repeat(150)), file(0), Some(2)),
        ]
    }

    #[test]
    fn the_table_is_what_a_walk_of_the_bytes_finds_and_reads_back() {
        let entries = planned();
        let toc = of(&entries, 0).unwrap();
        assert_eq!(toc.len(), 5);
        // the same as walking the tar itself (its content zero-filled here)
        let mut tar = Vec::new();
        for s in segments(&entries, 0).unwrap() {
            match s {
                Segment::Bytes(b) => tar.extend(b),
                Segment::Content { len, .. } => tar.resize(tar.len() + len as usize, 0),
            }
        }
        let mut w = Walk::new(Some(tar.len() as u64));
        let mut walked = Vec::new();
        loop {
            match w.poll().unwrap() {
                Step::Need(r) => w
                    .give(r.start, &tar[r.start as usize..r.end as usize])
                    .unwrap(),
                Step::Entry(h) => walked.push(h),
                Step::End => break,
            }
        }
        assert_eq!(toc, walked);
        let digest = Digest::of(&tar);
        let mut d = Descriptor::new(
            crate::media::OCI_LAYER_TAR,
            digest.clone(),
            tar.len() as u64,
        );
        d.annotations
            .push((ANNOTATION.into(), annotation(&digest, &toc).unwrap()));
        let back = read(&d).unwrap();
        let strip = |v: &[Header]| -> Vec<(String, Kind, u64, u32, u64)> {
            v.iter()
                .map(|h| (h.path.clone(), h.kind.clone(), h.size, h.mode, h.at))
                .collect()
        };
        assert_eq!(strip(&back), strip(&toc));
        // another layer's table, or one that points past the blob, is not used
        let mut other = d.clone();
        other.digest = Digest::of(b"another layer");
        assert!(read(&other).is_none());
        let mut short = d.clone();
        short.size = 1024;
        assert!(read(&short).is_none());
        let mut junk = d;
        junk.annotations[0].1 = "{\"layer\": 1".into();
        assert!(read(&junk).is_none());
    }

    #[test]
    fn a_table_too_large_for_the_manifest_is_not_written() {
        let many: Vec<Header> = (0..5000)
            .map(|i| Header {
                path: format!("models/shard-{i:05}.bin"),
                kind: Kind::File,
                size: 1,
                mode: 0o644,
                mtime: 0,
                at: i * 1024,
            })
            .collect();
        assert!(annotation(&Digest::of(b"x"), &many).is_none());
        assert!(annotation(&Digest::of(b"x"), &many[..10]).is_some());
    }
}
