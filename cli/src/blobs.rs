//! Making sure the base image's blobs exist in the destination repository: mounted across
//! repositories of one registry, found by HEAD, or streamed registry to registry (download and
//! upload in one pass, digest verified, never held in memory).

use std::io::Read as _;
use std::sync::mpsc::sync_channel;

use lamina_core::digest::Hasher;
use lamina_core::image::Descriptor;
use lamina_core::layer::LayerInfo;
use lamina_core::reference::Reference;
use lamina_core::registry::{HeadBlob, MountBlob, OpenBlob, Upload, UploadConfig};
use lamina_core::Error;

use crate::client::anyhow_like::Result;
use crate::client::{Client, Data};
use crate::progress::Progress;

/// Ensures every blob of `blobs` (found in `src`) is in `dst`'s repository.
pub fn ensure_blobs(
    client: &mut Client,
    src: &Reference,
    dst: &Reference,
    blobs: &[Descriptor],
    quiet: bool,
) -> Result<()> {
    if src.registry == dst.registry && src.repository == dst.repository {
        return Ok(()); // the manifest we read proves they are there
    }
    let same_registry = src.registry == dst.registry;
    let (mut mounted, mut present, mut copied) = (0, 0, 0);
    for b in blobs {
        if same_registry
            && client.run(
                dst,
                MountBlob::new(&dst.repository, &src.repository, &b.digest),
            )?
        {
            mounted += 1;
            continue;
        }
        if client
            .run(dst, HeadBlob::new(&dst.repository, &b.digest, true))?
            .is_some()
        {
            present += 1;
            continue;
        }
        copy_blob(client, src, dst, b, quiet)?;
        copied += 1;
    }
    if !quiet && !blobs.is_empty() {
        eprintln!(
            "base layers in {}: {mounted} mounted, {present} already there, {copied} copied",
            dst.name()
        );
    }
    Ok(())
}

/// Streams one blob from `src` to `dst`, verifying its digest and size on the way.
pub fn copy_blob(
    client: &mut Client,
    src: &Reference,
    dst: &Reference,
    b: &Descriptor,
    quiet: bool,
) -> Result<()> {
    client.run(src, OpenBlob::new(&src.repository, &b.digest))?;
    let mut body = client.take_stream()?;
    let (tx, rx) = sync_channel::<Data>(1);
    let want = b.clone();
    let chunk = 16usize << 20;
    let reader = std::thread::spawn(move || {
        let mut h = Hasher::new();
        let mut buf = bytes::BytesMut::with_capacity(chunk);
        let mut tmp = vec![0u8; 1 << 20];
        let r: std::result::Result<(), String> = (|| {
            loop {
                let n = body
                    .read(&mut tmp)
                    .map_err(|e| format!("downloading {}: {e}", want.digest))?;
                if n == 0 {
                    break;
                }
                h.update(&tmp[..n]);
                if h.len() > want.size {
                    return Err(format!(
                        "blob {} is larger than its descriptor says ({} bytes)",
                        want.digest, want.size
                    ));
                }
                buf.extend_from_slice(&tmp[..n]);
                if buf.len() >= chunk {
                    tx.send(Data::Chunk(buf.split_to(chunk).freeze()))
                        .map_err(|_| "upload stopped".to_string())?;
                }
            }
            Ok(())
        })();
        if let Err(e) = r {
            let _ = tx.send(Data::Failed(Error::Protocol { reason: e }));
            return;
        }
        let size = h.len();
        let digest = h.finish();
        if size != want.size {
            let _ = tx.send(Data::Failed(Error::SizeMismatch {
                what: format!("blob {}", want.digest),
                expected: want.size,
                found: size,
            }));
            return;
        }
        if digest != want.digest {
            let _ = tx.send(Data::Failed(Error::DigestMismatch {
                what: "blob downloaded from the base registry".to_string(),
                expected: want.digest.clone(),
                found: digest,
            }));
            return;
        }
        let _ = tx.send(Data::Done(
            buf.split().freeze(),
            LayerInfo {
                compression: lamina_core::compress::Compression::None,
                digest: digest.clone(),
                size,
                diff_id: digest,
                uncompressed_size: size,
            },
        ));
    });
    let cfg = UploadConfig {
        chunk_max: chunk as u64,
        monolithic_max: chunk as u64,
        ..UploadConfig::default()
    };
    let mut p = Progress::new(format!("copy {}", b.digest.short()), Some(b.size), quiet);
    let r = client.upload_stream(dst, Upload::new(&dst.repository, cfg), rx, &mut p);
    let _ = reader.join();
    r?;
    p.finish(b.size);
    Ok(())
}
