//! The pass-through "codec" of [`Compression::None`]: input goes out unchanged, in pieces.

use super::{emit, CodecError, CodecErrorKind, Compression, Decoder, Encoder, Sink, StreamError};

/// Pass-through "codec" for [`Compression::None`] (splits input into
/// [`MAX_PIECE`](super::MAX_PIECE) pieces).
#[derive(Debug, Default)]
pub struct Identity {
    finished: bool,
}

impl Identity {
    /// A new pass-through codec.
    pub fn new() -> Self {
        Identity::default()
    }

    fn write_impl<E>(
        &mut self,
        input: &[u8],
        sink: &mut Sink<'_, E>,
    ) -> Result<(), StreamError<E>> {
        if self.finished {
            return Err(CodecError::new(Compression::None, CodecErrorKind::Aborted, 0).into());
        }
        emit(sink, input)
    }

    fn finish_impl<E>(&mut self) -> Result<(), StreamError<E>> {
        if self.finished {
            return Err(CodecError::new(Compression::None, CodecErrorKind::Aborted, 0).into());
        }
        self.finished = true;
        Ok(())
    }
}

impl<E> Encoder<E> for Identity {
    fn write(&mut self, input: &[u8], sink: &mut Sink<'_, E>) -> Result<(), StreamError<E>> {
        self.write_impl(input, sink)
    }
    fn finish(&mut self, _sink: &mut Sink<'_, E>) -> Result<(), StreamError<E>> {
        self.finish_impl()
    }
}

impl<E> Decoder<E> for Identity {
    fn write(&mut self, input: &[u8], sink: &mut Sink<'_, E>) -> Result<(), StreamError<E>> {
        self.write_impl(input, sink)
    }
    fn finish(&mut self, _sink: &mut Sink<'_, E>) -> Result<(), StreamError<E>> {
        self.finish_impl()
    }
}
