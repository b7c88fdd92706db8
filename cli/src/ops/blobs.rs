//! Making sure an image's blobs exist at the destination: mounted across repositories of one
//! registry, found by HEAD (or in the layout), or streamed from wherever they are (download and
//! upload in one pass, digest verified, never held in memory).

use std::sync::mpsc::sync_channel;

use lamina_core::image::Descriptor;
use lamina_core::registry::UploadConfig;
use lamina_core::Error;

use crate::error::Result;
use crate::net::client::{Chunker, Client, Data, Restart};
use crate::store::{self, Loc};
use crate::ui::progress::Progress;

/// Streams one blob from `src` to `dst`, verifying its digest and size on the way.
pub fn copy_blob(
    client: &mut Client,
    src: &Loc,
    dst: &Loc,
    b: &Descriptor,
    quiet: bool,
) -> Result<()> {
    let mut body = store::open_blob(client, src, &b.digest)?;
    let what = format!("blob {} from {}", b.digest, src.name());
    let mut p = Progress::new(format!("copy {}", b.digest.short()), Some(b.size), quiet);
    let d = match dst {
        Loc::Layout(l) => {
            l.write_blob_from(&mut body, b, &what, &mut p)?;
            p.finish(b.size);
            return Ok(());
        }
        Loc::Registry(d) => d,
    };
    // the blob can be read again: if the destination loses the upload after it confirmed
    // bytes that are no longer held, the kernel restarts the copy from a new download
    let mut reopen = store::reopener(client, src, &b.digest);
    let chunk = 16usize << 20;
    let rx = pump(body, b.clone(), what.clone(), chunk);
    let (want, again) = (b.clone(), what);
    let restart: Restart = Box::new(move || match reopen() {
        Ok(body) => pump(body, want.clone(), again.clone(), chunk),
        Err(e) => {
            let (tx, rx) = sync_channel::<Data>(1);
            let failed = Error::Io {
                what: again.clone(),
                reason: format!("reading it again: {e}"),
            };
            Chunker::new(chunk, tx).done(Err(failed));
            rx
        }
    });
    let cfg = UploadConfig {
        chunk_max: chunk as u64,
        monolithic_max: chunk as u64,
        ..UploadConfig::default()
    };
    // a copy cut short is resumed by the next run (the source blob is fetched again, the bytes
    // the destination has are not sent again)
    let identity = format!("copy of {}", b.digest);
    client.upload_stream(d, cfg, rx, Some(restart), &mut p, Some(&identity))?;
    p.finish(b.size);
    Ok(())
}

/// Reads `body` on a thread, verifying it is blob `want`, into chunks of `chunk` bytes for the
/// uploader. The thread ends when the blob does, or when the uploader stops taking chunks.
fn pump(
    body: Box<dyn std::io::Read + Send>,
    want: Descriptor,
    what: String,
    chunk: usize,
) -> std::sync::mpsc::Receiver<Data> {
    let (tx, rx) = sync_channel::<Data>(1);
    std::thread::spawn(move || {
        let mut ch = Chunker::new(chunk, tx);
        let r = crate::ops::build::stored(
            body,
            &what,
            Some(&want),
            crate::ops::build::Shape::AsIs,
            None,
            &mut ch,
        );
        ch.done(r);
    });
    rx
}
