//! Slice archives: `lamina-slice.json` and the core pieces a slice reader runs on an archive.
//!
//! Entry points: `slice::Meta::{parse, to_json, included_bytes, omitted_bytes}`, `slice::split`;
//! with flag bit 4 set, the payload is read as a slice archive the way `lamina slice load` does,
//! but with core's reader: `untar::TarReader`, then per member `Meta::parse`,
//! `layout::check_layout_file`, `layout::LayoutIndex::{parse, find}`, `Digest::parse` of the blob
//! name, `Digest::verify`, `image::detect_kind` and `Manifest`/`Index`/`Config::parse`.
//! Invariants: metadata that parses prints to JSON that parses to the same metadata; `split`
//! puts every layer in exactly one of its two lists.
#![no_main]

use libfuzzer_sys::fuzz_target;

use lamina_core::digest::Hasher;
use lamina_core::image::{detect_kind, Config, Descriptor, Index, Manifest};
use lamina_core::layout::{self, LayoutIndex};
use lamina_core::media::DocKind;
use lamina_core::slice::{self, Meta};
use lamina_core::untar::{Event, Kind, TarReader};
use lamina_core::{Digest, Error};

fn meta(raw: &[u8]) -> Option<Meta> {
    let m = Meta::parse(raw).ok()?;
    let _ = (m.included_bytes(), m.omitted_bytes());
    let json = m.to_json();
    assert_eq!(Meta::parse(&json).ok().as_ref(), Some(&m), "to_json/parse");

    // split: the included blobs as layers, the omitted ones as a base's
    let layers: Vec<Descriptor> = m
        .included
        .iter()
        .chain(&m.omitted)
        .filter_map(|b| {
            let d = Digest::parse(&b.digest).ok()?;
            Some(Descriptor::new(b.media_type.clone(), d, b.size))
        })
        .collect();
    let base: Vec<Digest> = m
        .omitted
        .iter()
        .filter_map(|b| Digest::parse(&b.digest).ok())
        .collect();
    let (inc, om) = slice::split(&layers, &[("base".to_string(), base.clone())]);
    for l in &layers {
        let d = l.digest.to_string();
        let n = inc.iter().chain(&om).filter(|b| b.digest == d).count();
        assert_eq!(n, 1, "{d} listed {n} times");
        assert_eq!(om.iter().any(|b| b.digest == d), base.contains(&l.digest));
    }
    Some(m)
}

/// A member being read: its name, and either its bytes (small members) or a running digest
/// (blobs the metadata lists as included).
enum Member {
    Small(String, Vec<u8>),
    Blob(String, Hasher, slice::Blob),
    Skip,
}

struct Reader {
    meta: Option<Meta>,
    current: Member,
    members: usize,
}

impl Reader {
    fn entry(&mut self, path: &str, kind: &Kind, size: u64) -> Result<(), Error> {
        let bad = |reason: String| Error::Tar { reason };
        self.members += 1;
        if matches!(kind, Kind::Dir) {
            self.current = Member::Skip;
            return Ok(());
        }
        let name = path.trim_start_matches("./").to_string();
        if self.meta.is_none() && name != layout::LAYOUT_FILE && name != slice::META_FILE {
            return Err(bad(format!("not a slice: {name:?} first")));
        }
        let blob = self.meta.as_ref().and_then(|m| {
            let hex = name.strip_prefix("blobs/sha256/")?;
            m.included
                .iter()
                .find(|b| b.digest == format!("sha256:{hex}"))
                .cloned()
        });
        self.current = match blob {
            Some(b) if b.size != size => return Err(bad("size differs".into())),
            Some(b) => Member::Blob(name, Hasher::new(), b),
            None => {
                let limit = if name == slice::META_FILE {
                    slice::MAX_META_SIZE
                } else {
                    lamina_core::image::MAX_MANIFEST_SIZE
                };
                if size > limit {
                    return Err(bad("too large".into()));
                }
                Member::Small(name, Vec::new())
            }
        };
        Ok(())
    }

    fn data(&mut self, d: &[u8]) {
        match &mut self.current {
            Member::Small(_, v) => v.extend_from_slice(d),
            Member::Blob(_, h, _) => h.update(d),
            Member::Skip => {}
        }
    }

    fn end(&mut self) -> Result<(), Error> {
        match std::mem::replace(&mut self.current, Member::Skip) {
            Member::Skip => Ok(()),
            Member::Blob(name, h, b) => {
                let want = Digest::parse(&b.digest)?;
                assert_eq!(h.len(), b.size, "{name}: the reader gave another size");
                let got = h.finish();
                if got != want {
                    return Err(Error::DigestMismatch {
                        what: name,
                        expected: want,
                        found: got,
                    });
                }
                Ok(())
            }
            Member::Small(name, v) => self.small(&name, v),
        }
    }

    fn small(&mut self, name: &str, v: Vec<u8>) -> Result<(), Error> {
        if name == slice::META_FILE {
            self.meta = Some(Meta::parse(&v)?);
        } else if name == layout::LAYOUT_FILE {
            layout::check_layout_file(&v)?;
        } else if name == layout::INDEX_FILE {
            let ix = LayoutIndex::parse(v)?;
            if let Some(m) = &self.meta {
                let _ = ix.find(&m.tag);
            }
        } else if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            let d = Digest::parse(&format!("sha256:{hex}"))?;
            // the fuzzer cannot forge digests: read the document whatever its name says
            let _ = d.verify(&v, name);
            match detect_kind(&v, None) {
                Ok((DocKind::Manifest(_), mt)) => {
                    let _ = Manifest::parse(v, &mt).map(|m| m.layers());
                }
                Ok((DocKind::Index(_), mt)) => {
                    let _ = Index::parse(v, &mt).map(|i| i.manifests());
                }
                Err(_) => {
                    let _ = Config::parse(v).map(|c| c.diff_ids());
                }
            }
        }
        Ok(())
    }
}

fn archive(pieces: &[&[u8]]) -> Result<(), Error> {
    let mut r = TarReader::new();
    let mut rd = Reader {
        meta: None,
        current: Member::Skip,
        members: 0,
    };
    for p in pieces {
        r.write(p, &mut |e| match e {
            Event::Entry(h) => rd.entry(&h.path, &h.kind, h.size),
            Event::Data(d) => {
                rd.data(d);
                Ok(())
            }
            Event::EntryEnd => rd.end(),
        })?;
    }
    r.finish()?;
    if rd.meta.is_none() {
        return Err(Error::Tar {
            reason: format!("no {} in {} members", slice::META_FILE, rd.members),
        });
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = lamina_fuzz::Input::new(data) else {
        return;
    };
    if input.flags & 0x10 != 0 {
        let _ = archive(&input.pieces());
    } else {
        let _ = meta(input.payload);
    }
});
