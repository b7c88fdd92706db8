//! The model artifact jobs: `pack` (files from URLs made a ModelPack, a ModelKit or a Docker
//! model straight into the registry) and `convert` (a model in another format), each making
//! what `lamina pack --format F` and `lamina convert SRC DEST --to T` make of the same input
//! with `SOURCE_DATE_EPOCH` set to the job's `mtime`: the same layers, config and manifest,
//! byte for byte, so the same digest.
//!
//! Both are the core's pieces in the CLI's order: [`lamina_core::hook::PackJob::plan`] (the
//! files, checked and sorted as `lamina pack` sorts them), [`pack::classify`], a
//! [`pack::HeadReader`] over each file's first bytes as they stream up (the weights' header
//! facts, holding only the header) and [`Model::fill_from_config_json`], then
//! [`target::assemble`]; for a conversion [`convert::source`], [`convert::plan`] and
//! [`convert::file_layer`]. Blobs go first and the manifest last
//! ([`lamina_wasm::flow::push_artifact`]), so a failed job leaves no tag.
//!
//! A conversion sends no byte of a layer the new format holds as it is ([`Step::Keep`]:
//! mounted within a registry, or streamed across registries by the job's side); each other
//! layer streams from the source registry into the destination, verified against its digest
//! as it comes and made over as it goes ([`crate::produce::Shape`]): a raw file wrapped into a
//! tar, a tar decompressed or put under `models/`, a tar of one file made the file. Nothing is
//! held but the chunks on the wire.

use lamina_core::artifact::{Format, Kind, Packing};
use lamina_core::compress::Compression;
use lamina_core::convert::{self, Made, Step, To};
use lamina_core::flow::Edit;
use lamina_core::hook::{ConvertJob, PackJob};
use lamina_core::image::rfc3339;
use lamina_core::pack::{self, FileLayer, Model};
use lamina_core::reference::Reference;
use lamina_core::retar::Mode;
use lamina_core::target::{self, Target};
use lamina_core::Error;
use lamina_wasm::{flow, Failure, Producer as _};

use crate::driver::{Progress, Result};
use crate::produce::{FromBlob, FromFile, Shape};
use crate::work::{self, reference, side, Ctx};

/// `/hooks/pack`: each file uploaded as its layer (raw, or in a tar as the format packs it),
/// one at a time, then the config and the manifest. Returns `name@sha256:...`.
pub(crate) async fn pack<G: Progress>(c: &mut Ctx, j: &PackJob, p: &G) -> Result<String> {
    let plan = j.plan()?;
    let dest = reference(&j.dest)?;
    if !plan.left_out.is_empty() {
        p.log(&format!(
            "left out {} hidden or cache file(s), as lamina pack and modctl do: {}",
            plan.left_out.len(),
            plan.left_out.join(", ")
        ))
        .await;
    }
    // kit's tars hold the directories above the file; a ModelPack's `--tar` ones do not
    let dirs = plan.target == Target::ModelKit;
    let chunk = c.chunk;
    let mut layers = Vec::new();
    let mut facts = Vec::new();
    let mut config_json = None;
    for f in &plan.files {
        let mut src = FromFile::open(f, plan.packing, dirs, plan.mtime).await?;
        let digest = c.d.upload(&dest, &mut src, chunk, p).await?;
        let (_, size) = src
            .finished()
            .ok_or_else(|| Error::internal(format!("{}: the upload ended unmade", f.path)))?;
        let file_size = src.file_size();
        let (kind, guessed) =
            pack::classify(f.path.rsplit('/').next().unwrap_or(&f.path), file_size);
        if kind == Kind::Weight {
            facts.extend(src.facts());
        }
        if let Some(b) = src.config_json() {
            config_json = Some(b);
        }
        p.log(&format!(
            "{} {} ({file_size} bytes) as {} {digest}",
            kind.name(),
            f.path,
            plan.packing.name()
        ))
        .await;
        layers.push(FileLayer {
            path: f.path.clone(),
            kind,
            guessed,
            packing: plan.packing,
            digest: digest.clone(),
            size,
            diff_id: digest,
            file_size,
            executable: f.executable,
            carried: None,
        });
    }
    let mut model = Model {
        name: j.name.clone().filter(|n| !n.is_empty()),
        ..Model::default()
    };
    model.fill_from(&facts);
    if let Some(b) = config_json {
        model.fill_from_config_json(&b);
    }
    let made = target::assemble(plan.target, &model, &layers, plan.mtime)?;
    p.log(&format!(
        "{} of {} file(s): format {}, params {}",
        plan.target.name(),
        layers.len(),
        model.format.as_deref().unwrap_or("-"),
        model.param_size.as_deref().unwrap_or("-")
    ))
    .await;
    flow::push_artifact(&mut side(c, p), &dest, made).await
}

/// `/hooks/convert`: the source's layers kept, or re-packed as they stream, then the new
/// format's config and manifest (a modelcar: the base image with the layers on top). Returns
/// `name@sha256:...`.
pub(crate) async fn convert<G: Progress>(c: &mut Ctx, j: &ConvertJob, p: &G) -> Result<String> {
    let to = j.target()?;
    let (src, dest) = (reference(&j.src)?, reference(&j.dest)?);
    let mtime = j.mtime.unwrap_or(0);
    let (img, config) = work::fetch_image(c, &src, p).await?;
    let mut origin = convert::source(&img.manifest, &config, j.name.as_deref())?;
    if origin.model.name.is_none() {
        origin.model.name = src.name().rsplit('/').next().map(str::to_string);
    }
    let from = match origin.format {
        Format::Image => "modelcar",
        f => f.short(),
    };
    p.log(&format!(
        "{}: a {from} of {} layer(s), made a {}",
        src.name(),
        origin.layers.len(),
        to.name()
    ))
    .await;
    let steps = convert::plan(&origin, to)?;
    let made = make(c, &src, &dest, &origin.layers, &steps, to, mtime, p).await?;
    match to {
        To::Artifact(t) => {
            let files = origin
                .layers
                .iter()
                .zip(made)
                .map(|(s, m)| convert::file_layer(&origin, s, m))
                .collect::<std::result::Result<Vec<_>, Error>>()?;
            let out = target::assemble(t, &origin.model, &files, mtime)?;
            flow::push_artifact(&mut side(c, p), &dest, out).await
        }
        To::Modelcar => {
            let base = j
                .base
                .as_deref()
                .ok_or_else(|| Failure::usage("to \"modelcar\" needs base"))?;
            let base = reference(base)?;
            let (img, config) = work::fetch_image(c, &base, p).await?;
            flow::ensure_base(&mut side(c, p), &base, &dest, &img.manifest).await?;
            // as lamina convert's history: SOURCE_DATE_EPOCH, else the clock
            let created = j.mtime.map_or_else(|| c.created.clone(), rfc3339);
            let edit = Edit {
                layers: convert::car_layers(&origin.layers, made, &created),
                ..Edit::default()
            };
            // the base's manifest as it is (as lamina convert pushes it; no media type added)
            flow::push(&mut side(c, p), &dest, img, config, edit).await
        }
    }
}

/// Whether a re-pack to one raw file failed because the tar holds several (then it stays a
/// tar).
fn several_files(f: &Failure) -> bool {
    let mut e = &f.error;
    while let Error::RetriesExhausted { last, .. } = e {
        e = last;
    }
    matches!(e, Error::SeveralFiles { .. })
}

/// The layers `sources` of `src` made into `to`'s at `dest`, each by its step: kept ones
/// mounted (or found, or streamed across registries), the rest re-packed as they stream; a tar
/// [`Step::Unwrap`] finds several files in stays a folder's tar (as `lamina convert` does).
#[allow(clippy::too_many_arguments)]
async fn make<G: Progress>(
    c: &mut Ctx,
    src: &Reference,
    dest: &Reference,
    sources: &[convert::Source],
    steps: &[Step],
    to: To,
    mtime: u64,
    p: &G,
) -> Result<Vec<Made>> {
    let keep = convert::kept_layers(sources, steps);
    if !keep.is_empty() {
        work::ensure(c, src, dest, keep, "kept layers", p).await?;
    }
    let mut made = Vec::new();
    let mut sent = 0u64;
    for (s, step) in sources.iter().zip(steps) {
        let m = match step {
            Step::Keep => Made::kept(s),
            Step::Unwrap => match repack(c, src, dest, s, step, to, mtime, p).await {
                Ok(m) => m,
                Err(f) if several_files(&f) => {
                    p.log(&format!(
                        "{} holds more than one file: it goes as a folder's tar",
                        s.path
                    ))
                    .await;
                    let again = Step::fallback(s.packing);
                    if again.sends() {
                        repack(c, src, dest, s, &again, to, mtime, p).await?
                    } else {
                        let what = format!("layer {}", s.index);
                        work::ensure(c, src, dest, vec![s.layer.clone()], &what, p).await?;
                        Made::kept(s)
                    }
                }
                Err(e) => return Err(e),
            },
            _ => repack(c, src, dest, s, step, to, mtime, p).await?,
        };
        if step.sends() {
            sent += m.size;
        }
        made.push(m);
    }
    p.log(&format!(
        "{sent} bytes of layers sent; the rest mounted or found"
    ))
    .await;
    Ok(made)
}

/// Streams layer `s` of `src` into `dest` made over by `step` (see [`convert::Step`]): the
/// source's bytes verified as they come, decompressed, wrapped or re-packed, hashed as they go
/// up.
#[allow(clippy::too_many_arguments)]
async fn repack<G: Progress>(
    c: &mut Ctx,
    src: &Reference,
    dest: &Reference,
    s: &convert::Source,
    step: &Step,
    to: To,
    mtime: u64,
    p: &G,
) -> Result<Made> {
    let compression = match s.packing {
        Packing::Tar(c) => c,
        Packing::Raw => Compression::None,
    };
    let reshape = |mode: Option<Mode>| -> std::result::Result<Shape, Error> {
        Ok(Shape::Reshape {
            from: compression,
            mode,
            mtime,
        })
    };
    let (shape, verb) = match step {
        Step::Wrap => {
            let under = (to == To::Modelcar).then_some(convert::MODELS);
            let header = convert::wrap_header(under, &s.path, s.layer.size, false, mtime)?;
            let trailer = pack::tar_trailer(s.layer.size);
            (Shape::Wrap { header, trailer }, "wrapping")
        }
        Step::Under => (
            reshape(Some(Mode::Under(convert::MODELS.into())))?,
            "re-packing",
        ),
        Step::Unwrap => (reshape(Some(Mode::File))?, "unwrapping"),
        Step::Plain => (reshape(None)?, "decompressing"),
        Step::Keep => return Err(Error::internal("a kept layer re-packed").into()),
    };
    p.log(&format!(
        "{verb} {} ({}, {} bytes)",
        s.path, s.layer.digest, s.layer.size
    ))
    .await;
    let from_blob = work::blob_source(c, src, &s.layer, p).await?;
    let mut up = FromBlob::shaped(from_blob, &s.layer.digest, s.layer.size, shape).await?;
    let chunk = c.chunk;
    let digest = c.d.upload(dest, &mut up, chunk, p).await?;
    let (_, size) = up
        .finished()
        .ok_or_else(|| Error::internal(format!("{}: the upload ended unmade", s.path)))?;
    Ok(Made {
        digest: digest.clone(),
        size,
        diff_id: digest,
        packing: if matches!(step, Step::Unwrap) {
            Packing::Raw
        } else {
            Packing::Tar(Compression::None)
        },
        file: up.file(),
    })
}
