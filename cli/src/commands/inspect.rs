//! `lamina inspect`: what the weight files of an image say in their headers, read without
//! downloading them.

use lamina_core::pack::{param_size, Facts};
use lamina_core::peek::report;

use crate::commands::Ctx;
use crate::error::Result;
use crate::ops::peek::{self, Cost};
use crate::ui::progress::human;

/// Show what the weight files of an image or model artifact say in their headers.
///
/// For each safetensors and GGUF file (or the one PATH names, or those under it): the tensor
/// count, the parameters, the element types, GGUF's architecture and quantization, and the
/// header's metadata; then the total. Only the headers are read: the files are found as `ls`
/// finds them (tar headers by HTTP Range requests), and each header is a Range request or two of
/// its file (a safetensors header says its own length). A file in a zstd:chunked or eStargz layer is
/// read from its own frames or members, 64 KiB at a time, up to its header's end; in another gzip or zstd layer,
/// from the layer's stream up to its header's end.
///
/// Examples:
///   lamina inspect 127.0.0.1:5000/modelcar:v1
///   lamina inspect registry.example.com/models/qwen:0.5b model.safetensors --json
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Image reference (a registry, oci:DIR[:TAG] or oci-archive:FILE[:TAG]).
    #[arg(value_name = "REF")]
    pub image: String,
    /// One weight file, or a directory of them.
    #[arg(value_name = "PATH")]
    pub path: Option<String>,
    /// Only these layers (by index, as `lamina layers` shows them; repeatable).
    #[arg(long = "layer", value_name = "N")]
    pub layers: Vec<usize>,
    /// Platform of an index: os/arch[/variant] (default linux/amd64).
    #[arg(long)]
    pub platform: Option<String>,
    /// Print JSON: every file's facts, the total, and what reading them cost.
    #[arg(long)]
    pub json: bool,
}

/// Runs `inspect`.
pub fn run(ctx: &mut Ctx, a: Args) -> Result<()> {
    let image = ctx.source("image", &a.image)?;
    let (client, quiet) = (&mut ctx.client, ctx.quiet);
    let p = peek::open(client, &image, a.platform.as_deref(), "inspect")?;
    report::check_layers(&p, &a.layers, &image.to_string())?;
    let mut cost = Cost::default();
    // the weight files: the one PATH names (found from the top down), else the tree's
    let wanted = report::dir_arg(a.path.as_deref())?;
    let files = if report::inspect_locates(wanted.as_deref(), &a.layers) {
        let f = wanted.as_deref().unwrap_or_default();
        let (path, h, place) = peek::locate(client, &image, &p, f, &mut cost, quiet)?;
        vec![(path, h.size, place)]
    } else {
        let only = (!a.layers.is_empty()).then_some(a.layers.as_slice());
        let tree = peek::tree(client, &image, &p, only, &mut cost, quiet)?;
        let dir = wanted.clone().unwrap_or_default();
        report::weight_files(&tree, &dir, &image.to_string())?
    };
    let mut rows = Vec::new();
    for (path, size, place) in &files {
        let f = peek::header_facts(client, &image, &p, path, place, *size, &mut cost)?;
        rows.push((path.clone(), *size, place.layer(), f));
    }
    let total = report::total_params(&rows);
    if a.json {
        outln!("{}", report::inspect_json(&image.to_string(), &rows, &cost))?;
        return Ok(());
    }
    if rows.is_empty() {
        return Err(format!(
            "{image}: no safetensors or GGUF files{}",
            wanted.map(|w| format!(" under {w}")).unwrap_or_default()
        )
        .into());
    }
    for (path, size, layer, f) in &rows {
        match f {
            Some(f) => {
                outln!("{path}  ({}, layer {layer})", human(*size))?;
                outln!("  {}", summary(f))?;
                for (k, v) in &f.metadata {
                    outln!("  {k} = {v}")?;
                }
            }
            None => outln!(
                "{path}  ({}, layer {layer})\n  no safetensors or GGUF header lamina reads",
                human(*size)
            )?,
        }
    }
    outln!(
        "total: {} files, {} parameters ({})",
        rows.len(),
        param_size(total),
        total
    )?;
    if !quiet {
        crate::ui::progress::warn(&format!(
            "read {} in {} range request(s){}",
            human(cost.range_bytes),
            cost.ranges,
            match cost.streamed.len() {
                0 => String::new(),
                n => format!(", {n} layer(s) streamed ({})", human(cost.stream_bytes)),
            }
        ));
    }
    Ok(())
}

/// `safetensors, 291 tensors, 1.24B parameters, bfloat16 (98%), float32`.
fn summary(f: &Facts) -> String {
    let mut parts = vec![f.format.clone().unwrap_or_default()];
    parts.push(format!("{} tensors", f.tensors));
    if let Some(n) = f.params {
        parts.push(format!("{} parameters", param_size(n)));
    }
    let all: u64 = f.precisions.iter().map(|(_, n)| n).sum();
    if !f.precisions.is_empty() {
        parts.push(
            f.precisions
                .iter()
                .map(|(d, n)| match all {
                    0 => d.clone(),
                    _ => format!("{d} ({:.0}%)", *n as f64 * 100.0 / all as f64),
                })
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    if let Some(a) = &f.architecture {
        parts.push(a.clone());
    }
    if let Some(q) = &f.quantization {
        parts.push(q.clone());
    }
    parts.join(", ")
}
