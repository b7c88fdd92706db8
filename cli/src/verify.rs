//! Checking a blob's bytes against its descriptor as they are read (a leaf module: every
//! store and command reads blobs through it).

use std::io::Read;

use lamina_core::digest::Hasher;
use lamina_core::image::Descriptor;
use lamina_core::Error;

/// Reads a blob's body to its end, handing each piece to `each`, and checks it against its
/// descriptor: never more bytes than its size (a lying registry cannot make us read without
/// end), then exactly its size and digest. `what` names the blob in errors.
pub fn read_verified(
    body: &mut dyn Read,
    want: &Descriptor,
    what: &str,
    each: &mut dyn FnMut(&[u8]) -> std::result::Result<(), Error>,
) -> std::result::Result<(), Error> {
    let mut h = Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = body.read(&mut buf).map_err(|e| Error::Protocol {
            reason: format!("downloading {what}: {e}"),
        })?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        if h.len() > want.size {
            return Err(Error::SizeMismatch {
                what: what.to_string(),
                expected: want.size,
                found: h.len(),
            });
        }
        each(&buf[..n])?;
    }
    let size = h.len();
    if size != want.size {
        return Err(Error::SizeMismatch {
            what: what.to_string(),
            expected: want.size,
            found: size,
        });
    }
    let found = h.finish();
    if found != want.digest {
        return Err(Error::DigestMismatch {
            what: what.to_string(),
            expected: want.digest.clone(),
            found,
        });
    }
    Ok(())
}
