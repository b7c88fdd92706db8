//! The core's image workflows ([`lamina_core::flow`]) run over the CLI's stores: each need a
//! workflow has is met with a registry operation, an OCI layout's files, or a streamed copy.

use lamina_core::flow::{Answer, Flow, Need, Next, Placed, Placement};
use lamina_core::image::{detect_kind, Descriptor, Index, Manifest};
use lamina_core::media::DocKind;
use lamina_core::registry::MountBlob;

use crate::error::Result;
use crate::net::client::Client;
use crate::ops::blobs::copy_blob;
use crate::store::{self, Loc};
use lamina_core::flow::Image;

/// Runs `flow`, reading from `src` and writing to `dst`; notes go to stderr unless `quiet`.
pub fn run<F: Flow>(
    client: &mut Client,
    src: &Loc,
    dst: &Loc,
    mut flow: F,
    quiet: bool,
) -> Result<F::Output> {
    let mut answer = None;
    loop {
        match flow.step(answer.take())? {
            Next::Done(out) => return Ok(out),
            Next::Note(line) => {
                if !quiet {
                    eprintln!("{line}");
                }
            }
            Next::Need(need) => answer = Some(fulfil(client, src, dst, need, quiet)?),
        }
    }
}

fn fulfil(client: &mut Client, src: &Loc, dst: &Loc, need: Need, quiet: bool) -> Result<Answer> {
    Ok(match need {
        Need::Manifest(reference) => {
            Answer::Manifest(store::get_manifest(client, src, &reference)?)
        }
        Need::Config(d) => Answer::Blob(store::get_config(client, src, &d.digest)?),
        Need::HasBlob(d) => Answer::Yes(store::has_blob(client, dst, &d, true)?),
        Need::Mount(d) => match (src, dst) {
            (Loc::Registry(s), Loc::Registry(t)) => {
                Answer::Yes(client.run(t, MountBlob::new(&t.repository, &s.repository, &d.digest))?)
            }
            _ => Answer::Yes(false),
        },
        Need::CopyBlob(d) => {
            copy_blob(client, src, dst, &d, quiet)?;
            Answer::Done
        }
        Need::PutBlob(bytes) => Answer::Pushed(store::put_bytes(client, dst, bytes)?),
        Need::PutManifest {
            reference,
            media_type,
            bytes,
        } => Answer::Pushed(store::put_manifest(
            client, dst, &reference, media_type, bytes,
        )?),
    })
}

/// Ensures every blob of `blobs` (found in `src`) is in `dst`: mounted across repositories of
/// one registry, found there, or streamed from `src`.
pub fn ensure_blobs(
    client: &mut Client,
    src: &Loc,
    dst: &Loc,
    blobs: &[Descriptor],
    quiet: bool,
) -> Result<Placed> {
    let same_registry =
        matches!((src, dst), (Loc::Registry(s), Loc::Registry(d)) if s.registry == d.registry);
    let place = Placement {
        same_store: src.same_store(dst),
        same_registry,
        dest_is_registry: matches!(dst, Loc::Registry(_)),
    };
    let flow = lamina_core::flow::EnsureBlobs::new(blobs.to_vec(), place, &dst.name());
    run(client, src, dst, flow, quiet)
}

/// Copies the platforms of an index that are not being edited (`images` are) into the
/// destination, with their blobs, so the new index points at nothing missing.
pub fn copy_other_platforms(
    client: &mut Client,
    src: &Loc,
    dst: &Loc,
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
/// destination.
pub fn copy_manifest(
    client: &mut Client,
    src: &Loc,
    dst: &Loc,
    d: &Descriptor,
    quiet: bool,
) -> Result<()> {
    if src.same_store(dst) {
        return Ok(());
    }
    let f = store::get_manifest(client, src, &d.digest.to_string())?;
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
    store::put_manifest(client, dst, &d.digest.to_string(), &mt, f.bytes)?;
    Ok(())
}
