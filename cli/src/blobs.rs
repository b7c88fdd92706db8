//! Making sure the base image's blobs exist in the destination repository: mounted across
//! repositories of one registry, found by HEAD, or streamed registry to registry (download and
//! upload in one pass, digest verified, never held in memory).

use std::io::Read;
use std::sync::mpsc::sync_channel;

use lamina_core::digest::Hasher;
use lamina_core::image::{detect_kind, Descriptor, Index, Manifest};
use lamina_core::layer::LayerInfo;
use lamina_core::media::DocKind;
use lamina_core::reference::Reference;
use lamina_core::registry::{
    GetManifest, HeadBlob, MountBlob, OpenBlob, PutManifest, Upload, UploadConfig,
};
use lamina_core::Error;

use crate::client::anyhow_like::Result;
use crate::client::{Chunker, Client, Data};
use crate::progress::Progress;
use crate::resolve::Image;

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
    let src_name = src.name();
    let chunk = 16usize << 20;
    let reader = std::thread::spawn(move || {
        let mut ch = Chunker::new(chunk, tx);
        let r = (|| -> std::result::Result<LayerInfo, Error> {
            let what = format!("blob {} downloaded from {src_name}", want.digest);
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
    let mut p = Progress::new(format!("copy {}", b.digest.short()), Some(b.size), quiet);
    let r = client.upload_stream(dst, Upload::new(&dst.repository, cfg), rx, None, &mut p);
    let _ = reader.join();
    r?;
    p.finish(b.size);
    Ok(())
}

/// Copies the platforms of an index that are not being edited (`images` are) into the
/// destination repository, with their blobs, so the new index points at nothing missing.
pub fn copy_other_platforms(
    client: &mut Client,
    src: &Reference,
    dst: &Reference,
    index: Option<&Index>,
    images: &[Image],
    quiet: bool,
) -> Result<()> {
    let Some(ix) = index else { return Ok(()) };
    let picked: Vec<usize> = images.iter().filter_map(|i| i.index_pos).collect();
    for (i, e) in ix.manifests()?.iter().enumerate() {
        if !picked.contains(&i) {
            copy_manifest(client, src, dst, e, quiet)?;
        }
    }
    Ok(())
}

/// Copies one manifest (and its blobs, or an index and everything under it) unchanged into the
/// destination repository.
pub fn copy_manifest(
    client: &mut Client,
    src: &Reference,
    dst: &Reference,
    d: &Descriptor,
    quiet: bool,
) -> Result<()> {
    if src.registry == dst.registry && src.repository == dst.repository {
        return Ok(());
    }
    let f = client.run(
        src,
        GetManifest::new(&src.repository, &d.digest.to_string()),
    )?;
    let (kind, mt) = detect_kind(&f.bytes, f.content_type.as_deref().or(Some(&d.media_type)))?;
    match kind {
        DocKind::Manifest(_) => {
            let m = Manifest::parse(f.bytes.clone(), &mt)?;
            let mut blobs = vec![m.config()?];
            blobs.extend(m.layers()?);
            ensure_blobs(client, src, dst, &blobs, quiet)?;
        }
        DocKind::Index(_) => {
            let ix = Index::parse(f.bytes.clone(), &mt)?;
            for e in ix.manifests()? {
                copy_manifest(client, src, dst, &e, quiet)?;
            }
        }
    }
    client.run(
        dst,
        PutManifest::new(&dst.repository, &d.digest.to_string(), &mt, f.bytes),
    )?;
    Ok(())
}
