//! `lamina ls`: the files of an image, read without downloading it.

use lamina_core::peek::report;
use lamina_core::untar::Kind;

use crate::commands::Ctx;
use crate::error::Result;
use crate::ops::peek::{self, Cost};
use crate::ui::progress::human;

/// List the files of an image or model artifact without downloading it.
///
/// The layers are applied in order as a container runtime applies them (whiteouts, opaque
/// directories, each path's topmost entry); a model artifact's files sit side by side. An
/// uncompressed tar layer is read header by header with HTTP Range requests (or seeks in an
/// oci: layout or archive): the files' contents are jumped over, so listing a 100 GB model
/// layer reads a few KiB. A raw artifact layer is its file (nothing is read). A zstd:chunked
/// layer (podman's --compression-format zstd:chunked) is read by its table of contents, one
/// Range request; an eStargz layer by its footer and table, two. Another gzip or zstd layer must be read whole as a stream (a note on stderr
/// says so); --layer picks layers.
///
/// Examples:
///   lamina ls registry.example.com/models/qwen:0.5b
///   lamina ls -l 127.0.0.1:5000/modelcar:v1 /models
///   lamina ls oci:./layout:v1 --layer 3 --json
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Image reference (a registry, oci:DIR[:TAG] or oci-archive:FILE[:TAG]).
    #[arg(value_name = "REF")]
    pub image: String,
    /// Only what is under this directory (or this one file).
    #[arg(value_name = "PATH")]
    pub path: Option<String>,
    /// Long listing: type and mode, size, the layer each file comes from, link targets.
    #[arg(short = 'l', long = "long")]
    pub long: bool,
    /// Only these layers (by index, as `lamina layers` shows them; repeatable).
    #[arg(long = "layer", value_name = "N")]
    pub layers: Vec<usize>,
    /// Platform of an index: os/arch[/variant] (default linux/amd64).
    #[arg(long)]
    pub platform: Option<String>,
    /// Print JSON: the entries, and what reading them cost.
    #[arg(long)]
    pub json: bool,
}

/// Runs `ls`.
pub fn run(ctx: &mut Ctx, a: Args) -> Result<()> {
    let image = ctx.source("image", &a.image)?;
    let (client, quiet) = (&mut ctx.client, ctx.quiet);
    let p = peek::open(client, &image, a.platform.as_deref(), "ls")?;
    report::check_layers(&p, &a.layers, &image.to_string())?;
    let mut cost = Cost::default();
    let only = (!a.layers.is_empty()).then_some(a.layers.as_slice());
    let tree = peek::tree(client, &image, &p, only, &mut cost, quiet)?;
    let dir = report::dir_arg(a.path.as_deref())?.unwrap_or_default();
    let rows = report::listing(&tree, &dir, &image.to_string())?;
    if a.json {
        outln!(
            "{}",
            report::ls_json(&image.to_string(), p.format, &rows, &cost)
        )?;
        return Ok(());
    }
    for (path, n) in &rows {
        let shown = match n.kind {
            Kind::Dir => format!("{path}/"),
            _ => path.to_string(),
        };
        if a.long {
            let (_, link) = report::kind_name(&n.kind);
            outln!(
                "{}{} {:>10} {:>4} {}{}",
                type_char(&n.kind),
                mode_string(n.mode),
                match n.kind {
                    Kind::File => human(n.size),
                    _ => "-".into(),
                },
                n.layer.map_or("-".to_string(), |l| format!("L{l}")),
                shown,
                link.map(|l| format!(" -> {l}")).unwrap_or_default()
            )?;
        } else {
            outln!("{shown}")?;
        }
    }
    if !quiet {
        let files = rows.iter().filter(|(_, n)| n.kind == Kind::File).count();
        let bytes: u64 = rows.iter().map(|(_, n)| n.size).sum();
        crate::ui::progress::warn(&format!(
            "{files} files ({}); read {} in {} range request(s){}",
            human(bytes),
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

fn type_char(k: &Kind) -> char {
    match k {
        Kind::File => '-',
        Kind::Dir => 'd',
        Kind::Symlink(_) => 'l',
        Kind::Hardlink(_) => 'h',
        Kind::Other(_) => '?',
    }
}

/// `rwxr-xr-x`.
fn mode_string(mode: u32) -> String {
    let mut s = String::with_capacity(9);
    for shift in [6, 3, 0] {
        let b = (mode >> shift) & 7;
        s.push(if b & 4 != 0 { 'r' } else { '-' });
        s.push(if b & 2 != 0 { 'w' } else { '-' });
        s.push(if b & 1 != 0 { 'x' } else { '-' });
    }
    s
}
