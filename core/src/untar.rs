//! Push-based tar reading: bytes in, entry events out, in one pass with bounded memory.
//!
//! Reads ustar, GNU (long names `L`/`K`, base-256 numbers) and PAX (`path`, `linkpath`, `size`)
//! headers and verifies every header checksum. A stream that ends right after a complete entry,
//! without the two zero blocks of the end-of-archive marker, is accepted (umoci 0.4.7 writes such
//! layers); a stream that ends inside an entry is an error. Names are reported as they are in
//! the archive: callers decide what is safe to write (see [`safe_path`]).

use crate::error::Error;

const BLOCK: usize = 512;
/// Largest long name or PAX header lamina reads.
pub const MAX_META: u64 = 1 << 20;

/// The type of an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link to the target.
    Symlink(String),
    /// Hard link to another entry of the archive.
    Hardlink(String),
    /// Character or block device, FIFO, or an unknown type flag.
    Other(u8),
}

/// One entry's header, after long-name and PAX records are applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Path as in the archive.
    pub path: String,
    /// Type.
    pub kind: Kind,
    /// Content size (0 for all but files).
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time.
    pub mtime: u64,
    /// Where the entry's content starts in the stream (right after its header): a reader that
    /// can seek reads a file's bytes at `at..at + size`.
    pub at: u64,
}

impl Header {
    /// A regular file's entry with no tar around it (a raw artifact layer: the blob is the
    /// file), mode 0644, its content at offset 0.
    pub fn file(path: &str, size: u64) -> Header {
        Header {
            path: path.to_string(),
            kind: Kind::File,
            size,
            mode: 0o644,
            mtime: 0,
            at: 0,
        }
    }
}

/// What the reader found.
#[derive(Debug)]
pub enum Event<'a> {
    /// A new entry; for files, its content follows as `Data`.
    Entry(&'a Header),
    /// File content.
    Data(&'a [u8]),
    /// The end of the current entry's content.
    EntryEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Header,
    /// Content of an entry (file data, or a long name / PAX record being collected).
    Body {
        remaining: u64,
        pad: usize,
        meta: Option<u8>,
    },
    Pad(usize),
    End,
}

/// The reader.
#[derive(Debug)]
pub struct TarReader {
    st: St,
    hdr: Vec<u8>,
    meta: Vec<u8>,
    long_name: Option<String>,
    long_link: Option<String>,
    pax: Vec<(String, String)>,
    current: Option<Header>,
    offset: u64,
    zero_blocks: u8,
}

impl Default for TarReader {
    fn default() -> Self {
        Self::new()
    }
}

fn bad(offset: u64, why: impl Into<String>) -> Error {
    Error::Tar {
        reason: format!("{} (at byte {offset} of the tar stream)", why.into()),
    }
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn number(field: &[u8], offset: u64, what: &str) -> Result<u64, Error> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // GNU base-256; the first byte's high bit is the marker, the rest big-endian
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            if v > u64::MAX >> 8 {
                return Err(bad(offset, format!("{what} field does not fit in 64 bits")));
            }
            v = (v << 8) | u64::from(b);
        }
        return Ok(v);
    }
    let s = cstr(field);
    let s = s.trim_matches(|c: char| c == ' ' || c == '\0');
    if s.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(s, 8).map_err(|_| bad(offset, format!("invalid {what} field {s:?}")))
}

impl TarReader {
    /// A reader at the start of a stream.
    pub fn new() -> Self {
        TarReader {
            st: St::Header,
            hdr: Vec::with_capacity(BLOCK),
            meta: Vec::new(),
            long_name: None,
            long_link: None,
            pax: Vec::new(),
            current: None,
            offset: 0,
            zero_blocks: 0,
        }
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether the end-of-archive marker (two zero blocks) was read.
    pub fn at_end(&self) -> bool {
        self.st == St::End
    }

    /// Feeds bytes; `on` gets the events in order (its errors stop the reader).
    pub fn write(
        &mut self,
        mut input: &[u8],
        on: &mut dyn FnMut(Event<'_>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        while !input.is_empty() {
            match self.st {
                St::End => {
                    // anything after the end marker is padding (often more zero blocks)
                    self.offset += input.len() as u64;
                    return Ok(());
                }
                St::Header => {
                    let take = (BLOCK - self.hdr.len()).min(input.len());
                    self.hdr.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    self.offset += take as u64;
                    if self.hdr.len() == BLOCK {
                        let block = std::mem::take(&mut self.hdr);
                        self.header(&block, on)?;
                        self.hdr = block;
                        self.hdr.clear();
                    }
                }
                St::Pad(n) => {
                    let take = n.min(input.len());
                    input = &input[take..];
                    self.offset += take as u64;
                    self.st = if n == take {
                        St::Header
                    } else {
                        St::Pad(n - take)
                    };
                }
                St::Body {
                    remaining,
                    pad,
                    meta,
                } => {
                    let take = (remaining.min(input.len() as u64)) as usize;
                    let (chunk, rest) = input.split_at(take);
                    input = rest;
                    self.offset += take as u64;
                    match meta {
                        Some(_) => self.meta.extend_from_slice(chunk),
                        None => {
                            if !chunk.is_empty() {
                                on(Event::Data(chunk))?;
                            }
                        }
                    }
                    let remaining = remaining - take as u64;
                    if remaining == 0 {
                        self.end_body(meta, on)?;
                        self.st = if pad > 0 { St::Pad(pad) } else { St::Header };
                    } else {
                        self.st = St::Body {
                            remaining,
                            pad,
                            meta,
                        };
                    }
                }
            }
        }
        Ok(())
    }

    fn end_body(
        &mut self,
        meta: Option<u8>,
        on: &mut dyn FnMut(Event<'_>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        match meta {
            None => {
                self.current = None;
                on(Event::EntryEnd)
            }
            Some(b'L') => {
                self.long_name = Some(cstr(&self.meta));
                Ok(())
            }
            Some(b'K') => {
                self.long_link = Some(cstr(&self.meta));
                Ok(())
            }
            Some(b'x') => {
                self.pax = parse_pax(&self.meta).map_err(|e| bad(self.offset, e))?;
                Ok(())
            }
            Some(_) => Ok(()), // global PAX header: ignored
        }
    }

    fn header(
        &mut self,
        b: &[u8],
        on: &mut dyn FnMut(Event<'_>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let at = self.offset - BLOCK as u64;
        if b.iter().all(|&x| x == 0) {
            self.zero_blocks += 1;
            if self.zero_blocks >= 2 {
                self.st = St::End;
            }
            return Ok(());
        }
        if self.zero_blocks > 0 {
            return Err(bad(at, "a header after a zero block"));
        }
        let stored = number(&b[148..156], at, "checksum")?;
        let sum: u64 = b
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(x)
                }
            })
            .sum();
        let signed: i64 = b
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    i64::from(x as i8)
                }
            })
            .sum();
        if stored != sum && stored as i64 != signed {
            return Err(bad(
                at,
                "invalid tar header checksum (not a tar, or corrupt)",
            ));
        }
        let typeflag = b[156];
        let mut size = number(&b[124..136], at, "size")?;
        let is_ustar = &b[257..262] == b"ustar";
        match typeflag {
            b'L' | b'K' | b'x' | b'g' => {
                if size > MAX_META {
                    return Err(bad(
                        at,
                        format!(
                            "a {} record of {size} bytes is larger than lamina reads",
                            typeflag as char
                        ),
                    ));
                }
                self.meta.clear();
                let pad = (BLOCK - (size % BLOCK as u64) as usize) % BLOCK;
                self.st = if size == 0 {
                    St::Header
                } else {
                    St::Body {
                        remaining: size,
                        pad,
                        meta: Some(typeflag),
                    }
                };
                if size == 0 {
                    self.end_body(Some(typeflag), on)?;
                }
                return Ok(());
            }
            _ => {}
        }
        let mut path = cstr(&b[..100]);
        if is_ustar && &b[257..263] == b"ustar\0" {
            let prefix = cstr(&b[345..500]);
            if !prefix.is_empty() {
                path = format!("{prefix}/{path}");
            }
        }
        let mut link = cstr(&b[157..257]);
        if let Some(n) = self.long_name.take() {
            path = n;
        }
        if let Some(l) = self.long_link.take() {
            link = l;
        }
        for (k, v) in std::mem::take(&mut self.pax) {
            match k.as_str() {
                "path" => path = v,
                "linkpath" => link = v,
                "size" => {
                    size = v
                        .parse()
                        .map_err(|_| bad(at, format!("invalid PAX size {v:?}")))?
                }
                _ => {}
            }
        }
        let kind = match typeflag {
            b'0' | 0 | b'7' => Kind::File,
            b'5' => Kind::Dir,
            b'2' => Kind::Symlink(link),
            b'1' => Kind::Hardlink(link),
            other => Kind::Other(other),
        };
        if typeflag == 0 && path.ends_with('/') {
            // old tars mark directories by a trailing slash
        }
        let data_size = if matches!(kind, Kind::File | Kind::Other(_))
            && !matches!(kind, Kind::Other(b'3' | b'4' | b'6'))
        {
            size
        } else {
            0
        };
        let h = Header {
            path,
            kind,
            size: data_size,
            mode: number(&b[100..108], at, "mode")? as u32,
            mtime: number(&b[136..148], at, "mtime").unwrap_or(0),
            at: self.offset,
        };
        on(Event::Entry(&h))?;
        self.current = Some(h);
        if data_size == 0 {
            self.current = None;
            on(Event::EntryEnd)?;
            self.st = St::Header;
        } else {
            let pad = (BLOCK - (data_size % BLOCK as u64) as usize) % BLOCK;
            self.st = St::Body {
                remaining: data_size,
                pad,
                meta: None,
            };
        }
        Ok(())
    }

    /// Bytes of the current file's content not yet fed, with the padding after it: a driver
    /// that can seek (a file, `Range` requests) passes them to [`TarReader::skip_data`] instead of
    /// reading them. `None` outside a file's content.
    pub fn data_remaining(&self) -> Option<(u64, usize)> {
        match self.st {
            St::Body {
                remaining,
                pad,
                meta: None,
            } => Some((remaining, pad)),
            _ => None,
        }
    }

    /// Skips the rest of the current file's content and its padding, as if they had been fed
    /// (no `Data` event; `EntryEnd` is sent), and returns how many stream bytes that was: the
    /// driver moves its own position by as much. Outside a file's content, skips nothing.
    pub fn skip_data(
        &mut self,
        on: &mut dyn FnMut(Event<'_>) -> Result<(), Error>,
    ) -> Result<u64, Error> {
        let Some((remaining, pad)) = self.data_remaining() else {
            return Ok(0);
        };
        self.offset += remaining + pad as u64;
        self.st = St::Header;
        self.end_body(None, on)?;
        Ok(remaining + pad as u64)
    }

    /// Ends the stream. Fine at the end marker or right after a complete entry (no footer);
    /// an error inside an entry or a header.
    pub fn finish(&self) -> Result<(), Error> {
        match self.st {
            St::End | St::Pad(_) | St::Header if self.hdr.is_empty() && self.current.is_none() => {
                if matches!(self.st, St::Pad(_)) {
                    return Err(bad(
                        self.offset,
                        "tar stream ends inside the padding of an entry (truncated)",
                    ));
                }
                Ok(())
            }
            St::Body { remaining, .. } => Err(bad(
                self.offset,
                format!(
                    "tar stream is truncated: {remaining} bytes of {:?} missing",
                    self.current
                        .as_ref()
                        .map(|c| c.path.as_str())
                        .unwrap_or("a header record")
                ),
            )),
            _ => Err(bad(self.offset, "tar stream is truncated inside a header")),
        }
    }
}

fn parse_pax(b: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut rest = b;
    while !rest.is_empty() {
        let sp = rest
            .iter()
            .position(|&c| c == b' ')
            .ok_or("malformed PAX record")?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("malformed PAX record length")?;
        if len <= sp + 1 || len > rest.len() {
            return Err("PAX record length out of range".into());
        }
        let rec = &rest[sp + 1..len];
        let rec = rec.strip_suffix(b"\n").unwrap_or(rec);
        let eq = rec
            .iter()
            .position(|&c| c == b'=')
            .ok_or("PAX record without '='")?;
        out.push((
            String::from_utf8_lossy(&rec[..eq]).into_owned(),
            String::from_utf8_lossy(&rec[eq + 1..]).into_owned(),
        ));
        rest = &rest[len..];
    }
    Ok(out)
}

/// A path from an archive made safe to join under an output directory: leading `/` and `./`
/// removed, `.` components dropped. `None` for paths that climb out (`..`) or name nothing.
pub fn safe_path(p: &str) -> Option<String> {
    let mut out = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => out.push(c),
        }
    }
    if out.is_empty() {
        None
    } else {
        Some(out.join("/"))
    }
}

/// Where a symlink at `link_path` (relative to the output root) pointing at `target` lands,
/// relative to the root; `None` if it escapes the root (absolute targets are resolved against
/// the root, as in the image's own filesystem).
pub fn resolve_link(link_path: &str, target: &str) -> Option<String> {
    // `.` and `..` count in the link's own path too: `a/../b` is at `b`, `a/../../b` outside
    fn walk<'a>(stack: &mut Vec<&'a str>, path: &'a str) -> Option<()> {
        for c in path.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    stack.pop()?;
                }
                c => stack.push(c),
            }
        }
        Some(())
    }
    let mut stack: Vec<&str> = Vec::new();
    if !target.starts_with('/') {
        walk(&mut stack, link_path)?;
        stack.pop();
    }
    walk(&mut stack, target)?;
    Some(stack.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tar::{EntryKind, TarWriter};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn sample() -> Vec<u8> {
        let mut out = Vec::new();
        let mut s = |b: &[u8]| out.extend_from_slice(b);
        let mut w = TarWriter::new(5);
        w.entry("a", &EntryKind::Dir, &mut s).unwrap();
        let long = format!("a/{}/f.bin", "x".repeat(150));
        w.entry(
            &long,
            &EntryKind::File {
                size: 1000,
                executable: true,
            },
            &mut s,
        )
        .unwrap();
        w.data(&[7u8; 1000], &mut s).unwrap();
        w.entry(
            "a/link",
            &EntryKind::Symlink(format!("{}/t", "y".repeat(120))),
            &mut s,
        )
        .unwrap();
        w.entry(
            "a/empty",
            &EntryKind::File {
                size: 0,
                executable: false,
            },
            &mut s,
        )
        .unwrap();
        w.finish(&mut s).unwrap();
        out
    }

    fn read(data: &[u8], chunk: usize) -> Result<Vec<(String, Kind, u64, usize)>, Error> {
        let mut r = TarReader::new();
        let mut got: Vec<(String, Kind, u64, usize)> = Vec::new();
        for c in data.chunks(chunk.max(1)) {
            r.write(c, &mut |e| {
                match e {
                    Event::Entry(h) => got.push((h.path.clone(), h.kind.clone(), h.size, 0)),
                    Event::Data(d) => got.last_mut().unwrap().3 += d.len(),
                    Event::EntryEnd => {}
                }
                Ok(())
            })?;
        }
        r.finish()?;
        Ok(got)
    }

    #[test]
    fn reads_what_the_writer_wrote_at_every_chunk_size() {
        let data = sample();
        let whole = read(&data, data.len()).unwrap();
        assert_eq!(whole.len(), 4);
        assert!(whole[1].0.ends_with("/f.bin") && whole[1].0.len() > 150);
        assert_eq!(whole[1].3, 1000);
        assert!(matches!(&whole[2].1, Kind::Symlink(t) if t.len() > 120));
        for chunk in [1, 7, 4096] {
            assert_eq!(read(&data, chunk).unwrap(), whole);
        }
    }

    #[test]
    fn accepts_a_missing_footer_and_refuses_truncation_and_garbage() {
        let data = sample();
        let no_footer = &data[..data.len() - 1024];
        assert_eq!(read(no_footer, 4096).unwrap().len(), 4);
        let cut = &data[..1500];
        assert!(read(cut, 7).unwrap_err().to_string().contains("truncated"));
        let mut bad = data.clone();
        bad[520] ^= 0xff; // inside the second header
        assert!(read(&bad, 4096)
            .unwrap_err()
            .to_string()
            .contains("checksum"));
        assert!(read(&[b'x'; 1024], 4096)
            .unwrap_err()
            .to_string()
            .contains("checksum"));
        assert!(read(&data[..100], 4096)
            .unwrap_err()
            .to_string()
            .contains("inside a header"));
    }

    #[test]
    fn reads_gnu_tar_and_pax_and_ustar_prefix() {
        // a PAX header with a path, then a ustar header with a prefix field
        let mut out = Vec::new();
        let rec = "31 path=pax/overrides/name.txt\n";
        assert_eq!(rec.len(), 31);
        out.extend_from_slice(&raw_header("PaxHeaders/x", b'x', rec.len() as u64, false));
        let mut body = rec.as_bytes().to_vec();
        body.resize(512, 0);
        out.extend_from_slice(&body);
        out.extend_from_slice(&raw_header("short", b'0', 3, false));
        out.extend_from_slice(&{
            let mut b = b"abc".to_vec();
            b.resize(512, 0);
            b
        });
        out.extend_from_slice(&raw_header("name.txt", b'0', 0, true));
        let got = read(&out, 13).unwrap();
        assert_eq!(got[0].0, "pax/overrides/name.txt");
        assert_eq!(got[0].3, 3);
        assert_eq!(got[1].0, "some/prefix/name.txt");
    }

    fn raw_header(name: &str, typeflag: u8, size: u64, prefix: bool) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = typeflag;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        if prefix {
            h[345..356].copy_from_slice(b"some/prefix");
        }
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h
    }

    #[test]
    fn hostile_input_never_panics() {
        let data = sample();
        for i in 0..data.len().min(3000) {
            let mut d = data.clone();
            d[i] = d[i].wrapping_add(0x41);
            let _ = read(&d, 511);
            let _ = read(&data[..i], 97);
        }
        let _ = parse_pax(b"99999999999999999999 x=y\n");
        let _ = parse_pax(b"5 x\n");
    }

    #[test]
    fn safe_paths_and_link_resolution() {
        assert_eq!(safe_path("/src/weights/./a"), Some("src/weights/a".into()));
        assert_eq!(safe_path("../../etc/passwd"), None);
        assert_eq!(safe_path("a/../../b"), None);
        assert_eq!(safe_path("./"), None);
        assert_eq!(resolve_link("models/a", "b"), Some("models/b".into()));
        assert_eq!(resolve_link("models/a", "../../x"), None);
        assert_eq!(
            resolve_link("models/a", "/etc/passwd"),
            Some("etc/passwd".into())
        );
        assert_eq!(resolve_link("a/b/c", "../d"), Some("a/d".into()));
    }

    #[test]
    fn fuzz_resolve_link_reads_dot_dot_in_the_link_path() {
        // fuzz/seeds/untar/resolve-link-dots: a link at "/src/./weights/../a" to
        // "../../etc/passwd" resolved to "src/./etc/passwd" (the link's own `.` and `..` were
        // kept as names); it is at "src/a", so the target climbs out of the root
        let input: &[u8] = b"\x00/src/./weights/../a\n../../etc/passwd";
        let s = std::str::from_utf8(&input[1..]).unwrap();
        let (link, target) = s.split_once('\n').unwrap();
        assert_eq!(resolve_link(link, target), None);
        assert_eq!(resolve_link(link, "../b/./c"), Some("b/c".into()));
        assert_eq!(resolve_link("a/../../x", "y"), None);
        assert_eq!(resolve_link("a/../x", "y"), Some("y".into()));
    }

    #[test]
    fn skip_data_walks_headers_without_the_content() {
        let data = sample();
        // feed header by header, skipping each file's content: the same entries, positions
        // that match the stream's
        let mut all = Vec::new();
        let mut r = TarReader::new();
        r.write(&data, &mut |e| {
            if let Event::Entry(h) = e {
                all.push((h.path.clone(), h.size));
            }
            Ok(())
        })
        .unwrap();
        let mut seen = Vec::new();
        let mut r = TarReader::new();
        let mut pos = 0usize;
        while pos < data.len() {
            let end = (pos + BLOCK).min(data.len());
            r.write(&data[pos..end], &mut |e| {
                if let Event::Entry(h) = e {
                    seen.push((h.path.clone(), h.size));
                }
                assert!(!matches!(e, Event::Data(_)), "no content is fed");
                Ok(())
            })
            .unwrap();
            pos = end;
            let skipped = r.skip_data(&mut |_| Ok(())).unwrap();
            pos += skipped as usize;
            assert_eq!(r.offset(), pos as u64);
        }
        r.finish().unwrap();
        assert_eq!(seen, all);
        assert!(
            seen.iter().any(|(_, s)| *s > 0),
            "the sample has file content"
        );
    }
}
