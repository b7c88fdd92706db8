//! The bytes of a blob that an upload may still ask for.

use std::collections::VecDeque;
use std::ops::Range;

use crate::error::Error;

/// The bytes of a blob being uploaded from the registry's confirmed offset on, in the pieces the
/// driver made them in (`Vec<u8>`, `bytes::Bytes`, ...). An [`super::Upload`] asks for ranges at
/// or after its confirmed offset ([`super::Upload::confirmed`]); a driver pushes what it makes,
/// drops what the registry confirmed, and turns a range into its own request body (zero-copy
/// slices, JS arrays) with [`Held::range`].
#[derive(Debug, Clone)]
pub struct Held<T> {
    start: u64,
    pieces: VecDeque<T>,
    end: u64,
}

impl<T> Default for Held<T> {
    fn default() -> Self {
        Held {
            start: 0,
            pieces: VecDeque::new(),
            end: 0,
        }
    }
}

impl<T: AsRef<[u8]>> Held<T> {
    /// Nothing held yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Offset of the first byte held.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// One past the last byte made.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Bytes held.
    pub fn held(&self) -> u64 {
        self.end - self.start
    }

    /// Appends the next piece of the blob; returns the new end (after `clear_to(u64::MAX)`,
    /// nothing is held and the end stays there).
    pub fn push(&mut self, piece: T) -> u64 {
        let n = piece.as_ref().len() as u64;
        if n > 0 && self.end != u64::MAX {
            self.end = self.end.saturating_add(n);
            self.pieces.push_back(piece);
        }
        self.end
    }

    /// Forgets the pieces that lie wholly before `confirmed`.
    pub fn drop_before(&mut self, confirmed: u64) {
        while let Some(f) = self.pieces.front() {
            let n = f.as_ref().len() as u64;
            if self.start + n > confirmed {
                break;
            }
            self.start += n;
            self.pieces.pop_front();
        }
    }

    /// Forgets everything; the next byte pushed is byte `offset` of the blob (`u64::MAX`: no
    /// range can be had any more until the driver starts the bytes again).
    pub fn clear_to(&mut self, offset: u64) {
        self.pieces.clear();
        self.start = offset;
        self.end = offset;
    }

    /// Bytes `a..b` as the pieces that hold them, each with the part of it in the range; an
    /// error names the bytes when some are no longer (or not yet) held.
    pub fn range(&self, a: u64, b: u64) -> Result<Vec<(&T, Range<usize>)>, Error> {
        if a < self.start || b > self.end || a > b {
            return Err(Error::Internal {
                reason: format!(
                    "bytes {a}..{b} of the blob are no longer held (have {}..{})",
                    self.start, self.end
                ),
            });
        }
        let mut out = Vec::new();
        let mut off = self.start;
        for p in &self.pieces {
            let (ps, pe) = (off, off + p.as_ref().len() as u64);
            if pe > a && ps < b {
                out.push((p, (a.max(ps) - ps) as usize..(b.min(pe) - ps) as usize));
            }
            if pe >= b {
                break;
            }
            off = pe;
        }
        Ok(out)
    }

    /// Bytes `a..b` copied into one buffer.
    pub fn copy(&self, a: u64, b: u64) -> Result<Vec<u8>, Error> {
        let mut v = Vec::with_capacity((b.saturating_sub(a)) as usize);
        for (p, r) in self.range(a, b)? {
            v.extend_from_slice(&p.as_ref()[r]);
        }
        Ok(v)
    }
}

impl Held<Vec<u8>> {
    /// Appends bytes, gathering small slices (codecs hand over a few KiB at a time) into pieces
    /// of at least `piece` bytes.
    pub fn gather(&mut self, b: &[u8], piece: usize) {
        self.end += b.len() as u64;
        if let Some(p) = gather(self.pieces.back_mut(), b, piece) {
            self.pieces.push_back(p);
        }
    }
}

/// Appends `b` to `last` while it has room (it was made with a capacity of `piece`), else
/// returns a new piece holding `b` for the caller to append: small slices gathered into pieces
/// of at least `piece` bytes, so a body is a few large buffers, not thousands of small ones.
pub fn gather(last: Option<&mut Vec<u8>>, b: &[u8], piece: usize) -> Option<Vec<u8>> {
    if b.is_empty() {
        return None;
    }
    match last {
        Some(last) if last.len() + b.len() <= last.capacity() => {
            last.extend_from_slice(b);
            None
        }
        _ => {
            let mut v = Vec::with_capacity(piece.max(b.len()));
            v.extend_from_slice(b);
            Some(v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn ranges_across_pieces_and_after_drops() {
        let mut h: Held<Vec<u8>> = Held::new();
        assert_eq!(h.push(b"0123".to_vec()), 4);
        h.push(Vec::new());
        assert_eq!(h.push(b"4567".to_vec()), 8);
        h.push(b"89".to_vec());
        assert_eq!(h.copy(2, 9).unwrap(), b"2345678");
        assert_eq!(h.range(4, 8).unwrap().len(), 1, "one piece, no gathering");
        assert_eq!(h.copy(10, 10).unwrap(), b"");
        h.drop_before(5); // the piece 0..4 goes, 4..8 stays
        assert_eq!(h.start(), 4);
        assert_eq!(h.held(), 6);
        assert_eq!(h.copy(5, 10).unwrap(), b"56789");
        let e = h.range(3, 6).unwrap_err().to_string();
        assert!(e.contains("3..6") && e.contains("4..10"), "{e}");
        assert!(h.range(9, 11).is_err(), "not made yet");
        h.clear_to(u64::MAX);
        assert!(h.range(10, 10).is_err());
        assert_eq!(h.push(b"x".to_vec()), u64::MAX);
        assert_eq!(h.held(), 0);
    }

    #[test]
    fn gather_fills_pieces_then_starts_new_ones() {
        let mut h: Held<Vec<u8>> = Held::new();
        for i in 0..10u8 {
            h.gather(&[i; 3], 8);
        }
        assert_eq!(h.end(), 30);
        let want: Vec<u8> = (0..10u8).flat_map(|i| [i; 3]).collect();
        assert_eq!(h.copy(0, 30).unwrap(), want);
        assert!(h.pieces.iter().all(|p| p.len() <= 9));
        assert!(h.pieces.len() < 10, "small slices were gathered");
    }
}
