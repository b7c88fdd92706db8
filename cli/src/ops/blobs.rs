//! Making sure an image's blobs exist at the destination: mounted across repositories of one
//! registry, found by HEAD (or in the layout), or streamed from wherever they are (download and
//! upload in one pass, digest verified, never held in memory).

use std::sync::mpsc::sync_channel;

use lamina_core::image::Descriptor;
use lamina_core::layer::LayerInfo;
use lamina_core::registry::UploadConfig;
use lamina_core::Error;

use crate::error::Result;
use crate::net::client::{Chunker, Client, Data};
use crate::store::verify::read_verified;
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
    let (tx, rx) = sync_channel::<Data>(1);
    let want = b.clone();
    let chunk = 16usize << 20;
    let reader = std::thread::spawn(move || {
        let mut ch = Chunker::new(chunk, tx);
        let r = (|| -> std::result::Result<LayerInfo, Error> {
            read_verified(&mut body, &want, &what, &mut |piece: &[u8]| {
                ch.push(piece);
                if ch.closed {
                    return Err(Error::Protocol {
                        reason: "upload stopped".into(),
                    });
                }
                Ok(())
            })?;
            let (digest, size) = (want.digest.clone(), want.size);
            Ok(LayerInfo {
                compression: lamina_core::compress::Compression::None,
                digest: digest.clone(),
                size,
                diff_id: digest,
                uncompressed_size: size,
            })
        })();
        ch.done(r);
    });
    let cfg = UploadConfig {
        chunk_max: chunk as u64,
        monolithic_max: chunk as u64,
        ..UploadConfig::default()
    };
    // a copy cut short is resumed by the next run (the source blob is fetched again, the bytes
    // the destination has are not sent again)
    let identity = format!("copy of {}", b.digest);
    let r = client.upload_stream(d, cfg, rx, None, &mut p, Some(&identity));
    let _ = reader.join();
    r?;
    p.finish(b.size);
    Ok(())
}
