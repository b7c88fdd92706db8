//! The page's `pack`: the dropped files straight into the destination as a CNCF ModelPack,
//! with no base image, the same artifact as `lamina pack DIR --dest REF --format modelpack`
//! makes of the same files with the same `SOURCE_DATE_EPOCH`: each file one raw layer (the
//! blob is the file, sent from it as it is and hashed on the way), the config from the weights'
//! headers and `config.json`, then the config blob and the manifest by its tag, last (a failed
//! run leaves no tag).
//!
//! The decisions are [`crate::model`]'s (pure) and the core's ([`target::assemble`]); this is
//! their driver: it reads the heads and `config.json` from the files and runs the uploads.

use lamina_core::artifact::Kind;
use lamina_core::media;
use lamina_core::pack::{self, Facts};
use lamina_core::reference::Reference;
use lamina_core::registry::{PutManifest, UploadConfig};
use lamina_core::target;
use lamina_core::Error;
use lamina_wasm::Failure;

use crate::driver::{Driver, Report};
use crate::model::{self, PackFile, Picked, CONFIG_MAX};
use crate::opts::Opts;
use crate::progress;
use crate::source::{read_bytes, LayerSource};

/// What the weight file `f`'s header says, read from as much of its head as the header needs,
/// as core's [`pack::HeadReader`] asks for it (the same steps as `lamina pack`).
async fn facts_of(f: &PackFile<web_sys::File>) -> Result<Option<Facts>, Error> {
    let mut h = pack::HeadReader::new(&f.path);
    while let Some(r) = h.next_read() {
        let end = r.end.min(f.size);
        if end > r.start {
            h.write(&read_bytes(&f.file, r.start, end).await?);
        }
        if end < r.end {
            break; // the file ended
        }
    }
    Ok(h.finish())
}

/// Packs `picked` into `dest` as `o` says; returns `dest@sha256:...`.
pub async fn pack(
    o: &Opts,
    dest: &Reference,
    d: &mut Driver,
    picked: Vec<Picked<web_sys::File>>,
    report: &Report,
) -> Result<String, Failure> {
    let target = o.target()?;
    let plan = model::plan(picked)?;
    if !plan.left_out.is_empty() {
        report.send(progress::left_out(&plan.left_out));
        report.send(progress::log(&format!(
            "left out (hidden files and caches, as modctl and lamina pack leave them): {}",
            plan.left_out.join(", ")
        )));
    }

    // 1. the config's facts: the weights' headers, config.json
    report.send(progress::phase("facts"));
    let mut facts = Vec::new();
    for f in plan.files.iter().filter(|f| f.kind == Kind::Weight) {
        facts.extend(facts_of(f).await?);
    }
    let config_json = match plan
        .files
        .iter()
        .find(|f| f.path == "config.json" && f.size < CONFIG_MAX)
    {
        Some(f) => Some(read_bytes(&f.file, 0, f.size).await?),
        None => None,
    };
    let name = o.model_name().or(plan.folder.clone());
    let model = model::describe(name, &facts, config_json.as_deref());

    // 2. a raw layer per file, in path order: the file's bytes as they are
    let chunk = o.chunk();
    let cfg = UploadConfig::whole_chunks(chunk);
    let mut layers = Vec::with_capacity(plan.files.len());
    for (i, f) in plan.files.iter().enumerate() {
        let mut src = LayerSource::raw(&f.name, f.file.clone(), chunk);
        report.send(progress::layer(i, &f.path, src.total));
        d.upload(dest, cfg, &mut src, report).await?;
        let info = src
            .info()
            .cloned()
            .ok_or_else(|| Error::internal(format!("{} did not finish", f.path)))?;
        report.send(progress::layer_done(i, &info.digest.to_string(), info.size));
        report.send(progress::log(&format!(
            "{} {} ({} bytes): {}",
            f.kind.name(),
            f.path,
            f.size,
            info.digest
        )));
        layers.push(model::file_layer(f, &info));
    }

    // 3. the config, then the manifest by its tag, last
    report.send(progress::phase("manifest"));
    let made = target::assemble(target, &model, &layers, o.mtime())?;
    d.upload_bytes(dest, made.config, report).await?;
    let put = PutManifest::new(
        &dest.repository,
        dest.tag_or_latest(),
        media::OCI_MANIFEST,
        made.manifest,
    );
    let (digest, _) = d.run(dest, put, report).await?;
    Ok(format!("{}@{digest}", dest.name()))
}
