//! zstd through libzstd (the `zstd` crate) for the native CLI, behind the core's push-based
//! [`Encoder`] trait. The core's own encoder (ruzstd) only has its fastest level and compresses
//! at about 30 MB/s with a ~40% worse ratio than `zstd -3`; libzstd level 3 runs at ~400 MB/s
//! here (measured, see README). The browser and the Worker keep ruzstd.

use lamina_core::compress::{CodecError, CodecErrorKind, Compression, Encoder, Sink, StreamError};
use zstd::stream::raw::{Encoder as Raw, InBuffer, Operation, OutBuffer};

/// A streaming libzstd encoder (one frame, content checksum on).
pub struct NativeZstd {
    raw: Raw<'static>,
    out: Vec<u8>,
    consumed: u64,
    done: bool,
}

impl std::fmt::Debug for NativeZstd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeZstd")
            .field("consumed", &self.consumed)
            .finish()
    }
}

impl NativeZstd {
    /// An encoder at `level` (1-19; default 3), using `threads` worker threads (0: none).
    pub fn new(level: Option<i32>, threads: u32) -> std::io::Result<Self> {
        let mut raw = Raw::new(level.unwrap_or(3).clamp(1, 19))?;
        raw.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))?;
        if threads > 0 {
            let _ = raw.set_parameter(zstd::zstd_safe::CParameter::NbWorkers(threads));
        }
        Ok(NativeZstd {
            raw,
            out: vec![0u8; 256 << 10],
            consumed: 0,
            done: false,
        })
    }

    fn err<E>(&self, e: std::io::Error) -> StreamError<E> {
        StreamError::Codec(CodecError {
            codec: Compression::Zstd,
            kind: CodecErrorKind::Corrupt(e.to_string()),
            offset: self.consumed,
        })
    }
}

impl<E> Encoder<E> for NativeZstd {
    fn write(&mut self, input: &[u8], sink: &mut Sink<'_, E>) -> Result<(), StreamError<E>> {
        if self.done {
            return Err(StreamError::Codec(CodecError {
                codec: Compression::Zstd,
                kind: CodecErrorKind::Aborted,
                offset: self.consumed,
            }));
        }
        let mut inb = InBuffer::around(input);
        while inb.pos() < input.len() {
            let mut outb = OutBuffer::around(&mut self.out[..]);
            let r = self.raw.run(&mut inb, &mut outb);
            let n = outb.pos();
            if let Err(e) = r {
                return Err(self.err(e));
            }
            if n > 0 {
                sink(&self.out[..n]).map_err(StreamError::Sink)?;
            }
        }
        self.consumed += input.len() as u64;
        Ok(())
    }

    fn finish(&mut self, sink: &mut Sink<'_, E>) -> Result<(), StreamError<E>> {
        if self.done {
            return Err(StreamError::Codec(CodecError {
                codec: Compression::Zstd,
                kind: CodecErrorKind::Aborted,
                offset: self.consumed,
            }));
        }
        loop {
            let mut outb = OutBuffer::around(&mut self.out[..]);
            let r = self.raw.finish(&mut outb, true);
            let n = outb.pos();
            let left = match r {
                Ok(left) => left,
                Err(e) => return Err(self.err(e)),
            };
            if n > 0 {
                sink(&self.out[..n]).map_err(StreamError::Sink)?;
            }
            if left == 0 {
                break;
            }
        }
        self.done = true;
        Ok(())
    }
}
