//! `lamina append`: olot's job (model files as layers onto an OCI image layout, for KServe
//! modelcars), done in place, atomically and streaming.
//!
//! Order of work, so an interrupted run leaves the previous layout valid:
//! 1. plan the inputs and read the layout (manifests, configs): every error that can be found
//!    before writing is found here;
//! 2. write the new layer blobs (temp file + rename each);
//! 3. write new configs, manifests and nested indexes as new blobs (old ones stay);
//! 4. replace `index.json` by rename, last.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use lamina_core::image::{
    detect_kind, Config, Descriptor, Index, Manifest, MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE,
};
use lamina_core::layout::{ref_name, Found};
use lamina_core::media::{DocKind, Family};
use lamina_core::modelcar::{self, CarLayer};
use lamina_core::reference::ImageRef;
use lamina_core::Digest;

use crate::commands::Ctx;
use crate::error::Result;
use crate::ops::modelcar::{build, plan, remove_originals};
use crate::store::{Layout, Loc};
use crate::ui::progress::human;

/// Append model files to an OCI image layout as modelcar layers (olot-compatible).
///
/// One layer per file or directory, under /models, uncompressed; the model card (-m) is the
/// last layer, gzipped, marked io.opendatahub.modelcar.layer.type=modelcard, and the
/// manifest's io.opendatahub.layers.modelcard points at it. Every image manifest of the
/// layout (through nested indexes) gets the layers; Docker-format manifests become OCI;
/// artifacts, attestations and manifests absent from a sparse layout are left alone.
///
/// Layers are deterministic (mtime SOURCE_DATE_EPOCH or 0, owner 0:0), so running again
/// on the same files adds nothing. A symlink (a Hugging Face cache snapshot) is stored as
/// the file it points to, under its own name. The layout is edited atomically: new blobs
/// first, index.json replaced last.
///
/// Examples:
///   skopeo copy docker://quay.io/me/base oci:layout:latest
///   lamina append layout model.safetensors config.json -m README.md
///   lamina append layout ~/.cache/huggingface/hub/models--x--y/snapshots/abc/ --modelpack
///   lamina append oci:layout:v1 --root-dir model model/onnx/model.onnx
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The OCI image layout directory (or oci:DIR:TAG to edit only that image).
    #[arg(value_name = "LAYOUT")]
    pub layout: String,
    /// Model files and directories, one layer each.
    #[arg(value_name = "FILE_OR_DIR")]
    pub files: Vec<PathBuf>,
    /// The model card (README.md), added as the last layer.
    #[arg(short = 'm', long, value_name = "FILE")]
    pub modelcard: Option<PathBuf>,
    /// Keep each input's path relative to this directory (default: just its name).
    #[arg(long, value_name = "DIR")]
    pub root_dir: Option<PathBuf>,
    /// Where the files go in the image.
    #[arg(long, default_value = "/models")]
    pub path: String,
    /// Delete the inputs after the layout is written: default (model files) or all (also
    /// the model card). A symlink given is removed, never what it points to. (olot's -r:
    /// here -r is r8im's --registry.)
    #[arg(long, value_name = "WHICH", num_args = 0..=1,
          default_missing_value = "default", value_parser = ["default", "all"],
          require_equals = true)]
    pub remove_originals: Option<String>,
    /// Also write a CNCF ModelPack manifest over the same blobs into index.json.
    #[arg(long)]
    pub modelpack: bool,
    /// The ref.name of the ModelPack manifest in index.json.
    #[arg(long, default_value = "modelpack", value_name = "TAG")]
    pub modelpack_tag: String,
    /// Compression of the model file layers (the card is always gzip).
    #[arg(long, default_value = "none", value_parser = ["auto", "none", "gzip", "zstd"])]
    pub compression: String,
    /// Compression level (gzip 0-9, zstd 1-19).
    #[arg(long)]
    pub level: Option<i32>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `append`.
pub fn run(ctx: &mut Ctx, a: Args) -> Result<()> {
    let (client, quiet) = (&mut ctx.client, ctx.quiet);
    let t0 = Instant::now();
    crate::ops::build::check_level(Some(&a.compression), a.level)?;
    let (dir, tag) = match a.layout.strip_prefix("oci:") {
        Some(_) => match ImageRef::parse(&a.layout, "")? {
            ImageRef::OciLayout { path, tag } => {
                // an explicit tag limits the edit to that image
                let explicit = a.layout.len() > "oci:".len() + path.len();
                (path, explicit.then_some(tag))
            }
            _ => return Err("expected oci:DIR[:TAG]".into()),
        },
        None => (a.layout.clone(), None),
    };
    let loc = Loc::source(ImageRef::OciLayout {
        path: dir.clone(),
        tag: tag.clone().unwrap_or_else(|| "latest".into()),
    })?;
    let Loc::Layout(layout) = &loc else {
        return Err("not a layout".into());
    };
    // 1. plan and read
    let planned = plan(
        &a.files,
        a.modelcard.as_deref(),
        a.root_dir.as_deref(),
        &a.path,
        quiet,
    )?;
    let mut ix = layout.index()?;
    let entries = ix.entries()?;
    let roots: Vec<usize> = match &tag {
        None => (0..entries.len()).collect(),
        Some(t) => match ix.find(t).map_err(|e| format!("oci:{dir}: {e}"))? {
            Found::Entry(i, _) => vec![i],
            Found::Whole => (0..entries.len()).collect(),
        },
    };
    let created = crate::ops::resolve::history_time();
    let mut dry = Walker::new(layout, &[], &created, false);
    for &i in &roots {
        dry.visit(&entries[i])?;
    }
    if dry.images == 0 {
        let why = if dry.notes.is_empty() {
            "the index lists no manifests".to_string()
        } else {
            dry.notes.join("; ")
        };
        return Err(format!("oci:{dir}: no image manifest to append to ({why})").into());
    }
    let with_card = match a.remove_originals.as_deref() {
        None | Some("default") => false,
        Some("all") => true,
        Some(o) => return Err(format!("--remove-originals {o:?}: expected default or all").into()),
    };

    // 2. layer blobs
    let mut layers: Vec<CarLayer> = Vec::new();
    for p in &planned {
        layers.push(build(client, &loc, p, &a.compression, a.level, quiet)?);
    }

    // 3. configs, manifests, nested indexes
    let mut w = Walker::new(layout, &layers, &created, true);
    let mut changed = false;
    for &i in &roots {
        if let Some(n) = w.visit(&entries[i])? {
            ix.replace(i, &n.media_type, &n.digest, n.size);
            changed = true;
        }
    }
    let mut modelpack = None;
    if a.modelpack {
        let name = ix.tags()?.into_iter().find(|t| t != &a.modelpack_tag);
        let (cfg, man) = modelcar::modelpack(&layers, &created, name.as_deref());
        layout.write_blob(&cfg)?;
        let size = man.len() as u64;
        let d = layout.write_blob(&man)?;
        let already = ix
            .entries()?
            .iter()
            .any(|e| e.digest == d && ref_name(e) == Some(a.modelpack_tag.as_str()));
        if !already {
            let mut desc = Descriptor::new(lamina_core::media::OCI_MANIFEST, d.clone(), size);
            desc.artifact_type = Some(modelcar::MODELPACK_ARTIFACT.into());
            ix.set_tag(&a.modelpack_tag, &desc)?;
            changed = true;
        }
        modelpack = Some(d);
    }

    // 4. index.json, last
    if changed {
        layout.write_index(&mut ix)?;
    }
    if a.remove_originals.is_some() {
        remove_originals(&planned, with_card)?;
    }

    if !quiet {
        for n in &w.notes {
            eprintln!("note: {n}");
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    if a.json {
        let v = serde_json::json!({
            "layout": dir,
            "layers": layers.iter().map(|l| serde_json::json!({
                "title": l.title,
                "path": l.in_layer_path,
                "digest": l.info.digest.to_string(),
                "size": l.info.size,
                "diffId": l.info.diff_id.to_string(),
                "compression": l.info.compression.name(),
                "modelcard": l.part == modelcar::Part::Card,
            })).collect::<Vec<_>>(),
            "images": w.images,
            "updated": w.updated,
            "unchanged": w.images - w.updated,
            "modelpack": modelpack.map(|d| d.to_string()),
            "notes": w.notes,
            "seconds": secs,
        });
        outln!("{v}")?;
    } else {
        let bytes: u64 = layers.iter().map(|l| l.info.size).sum();
        outln!(
            "oci:{dir}: {} layer{} ({}) on {} image{}: {} updated, {} already had them",
            layers.len(),
            if layers.len() == 1 { "" } else { "s" },
            human(bytes),
            w.images,
            if w.images == 1 { "" } else { "s" },
            w.updated,
            w.images - w.updated
        )?;
        if let Some(d) = modelpack {
            outln!("modelpack manifest {d} (ref.name {})", a.modelpack_tag)?;
        }
        if !quiet {
            eprintln!("done in {secs:.1}s");
        }
    }
    Ok(())
}

/// Walks an index tree, appending the layers to every image manifest. Each manifest is handled
/// once however often it is listed; a manifest whose blob is absent (a sparse layout) and
/// non-images (artifacts, attestations) are left as they are, with a note.
struct Walker<'a> {
    l: &'a Layout,
    layers: &'a [CarLayer],
    created: &'a str,
    write: bool,
    memo: HashMap<Digest, Option<Descriptor>>,
    images: usize,
    updated: usize,
    notes: Vec<String>,
}

impl<'a> Walker<'a> {
    fn new(l: &'a Layout, layers: &'a [CarLayer], created: &'a str, write: bool) -> Self {
        Walker {
            l,
            layers,
            created,
            write,
            memo: HashMap::new(),
            images: 0,
            updated: 0,
            notes: Vec::new(),
        }
    }

    /// The new descriptor for `d` if it changed.
    fn visit(&mut self, d: &Descriptor) -> Result<Option<Descriptor>> {
        if let Some(r) = self.memo.get(&d.digest) {
            return Ok(r.clone());
        }
        let r = self.visit_new(d)?;
        self.memo.insert(d.digest.clone(), r.clone());
        Ok(r)
    }

    fn visit_new(&mut self, d: &Descriptor) -> Result<Option<Descriptor>> {
        if !self.l.has_blob(&d.digest, Some(d.size)) {
            self.notes.push(format!(
                "{} is not in the layout (sparse), left as it is",
                d.digest
            ));
            return Ok(None);
        }
        if d.platform.as_ref().is_some_and(|p| p.os == "unknown") {
            self.notes
                .push(format!("{} is an attestation, left as it is", d.digest));
            return Ok(None);
        }
        let raw = self.l.read_blob(&d.digest, MAX_MANIFEST_SIZE)?;
        let (kind, mt) = detect_kind(&raw, Some(&d.media_type))?;
        match kind {
            DocKind::Index(_) => {
                let mut ix = Index::parse(raw.clone(), &mt)?;
                let mut changed = false;
                for (i, e) in ix.manifests()?.iter().enumerate() {
                    if let Some(n) = self.visit(e)? {
                        ix.replace(i, &n.media_type, &n.digest, n.size);
                        changed = true;
                    }
                }
                if !changed {
                    return Ok(None);
                }
                ix.convert_to_oci();
                let bytes = ix.bytes().to_vec();
                let size = bytes.len() as u64;
                let digest = if self.write {
                    self.l.write_blob(&bytes)?
                } else {
                    Digest::of(&bytes)
                };
                Ok(Some(Descriptor::new(ix.media_type(), digest, size)))
            }
            DocKind::Manifest(_) => {
                let mut m = Manifest::parse(raw.clone(), &mt)?;
                if let Some(why) = modelcar::not_an_image(&m) {
                    self.notes
                        .push(format!("{} is {why}, left as it is", d.digest));
                    return Ok(None);
                }
                self.images += 1;
                let cd = m.config()?;
                let craw = self
                    .l
                    .read_blob(&cd.digest, MAX_CONFIG_SIZE)
                    .map_err(|e| format!("the config of image manifest {}: {e}", d.digest))?;
                let mut c = Config::parse(craw.clone())?;
                if m.family() == Family::Docker {
                    m.convert_to_oci();
                }
                modelcar::apply(&mut m, &mut c, self.layers, self.created)?;
                if c.bytes() != craw.as_slice() {
                    let cbytes = c.bytes().to_vec();
                    let cdig = if self.write {
                        self.l.write_blob(&cbytes)?
                    } else {
                        Digest::of(&cbytes)
                    };
                    m.set_config(&cdig, cbytes.len() as u64);
                }
                let bytes = m.bytes().to_vec();
                if bytes == raw {
                    return Ok(None);
                }
                self.updated += 1;
                let size = bytes.len() as u64;
                let digest = if self.write {
                    self.l.write_blob(&bytes)?
                } else {
                    Digest::of(&bytes)
                };
                Ok(Some(Descriptor::new(m.media_type(), digest, size)))
            }
        }
    }
}
