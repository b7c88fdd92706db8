//! `lamina cat`: one file of an image to stdout, read without downloading the image.

use std::io::Write as _;

use crate::commands::Ctx;
use crate::error::Result;
use crate::ops::peek::{self, Cost};

/// Print one file of an image or model artifact, fetched with one Range request.
///
/// The file is found from the top layer down, as a container runtime sees it (symlinks
/// followed), reading tar headers by HTTP Range requests; its bytes are then one Range
/// request. Layers below the one holding it are not read. A file in a zstd:chunked or eStargz
/// layer is its own frames or gzip members (one Range request), its content checked against
/// the digest the layer's table gives; in another gzip or zstd layer it is streamed out of
/// the layer. Bytes read by range
/// cannot be checked against the layer's digest (that takes the whole layer); the file's size
/// and the tar headers' checksums are checked. The bytes go to stdout as they come: a check
/// that fails at the end exits 1.
///
/// Examples:
///   lamina cat 127.0.0.1:5000/modelcar:v1 /models/config.json
///   lamina cat registry.example.com/models/qwen:0.5b tokenizer.json | jq .
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Image reference (a registry, oci:DIR[:TAG] or oci-archive:FILE[:TAG]).
    #[arg(value_name = "REF")]
    pub image: String,
    /// The file's path in the image.
    #[arg(value_name = "PATH")]
    pub path: String,
    /// Platform of an index: os/arch[/variant] (default linux/amd64).
    #[arg(long)]
    pub platform: Option<String>,
}

/// Runs `cat`.
pub fn run(ctx: &mut Ctx, a: Args) -> Result<()> {
    let image = ctx.source("image", &a.image)?;
    let (client, quiet) = (&mut ctx.client, ctx.quiet);
    let p = peek::open(client, &image, a.platform.as_deref(), "cat")?;
    let mut cost = Cost::default();
    let (path, h, place) = peek::locate(client, &image, &p, &a.path, &mut cost, quiet)?;
    let r = peek::open_file(client, &image, &p, &place, h.size, &mut cost)?;
    let mut out = std::io::stdout().lock();
    peek::copy_file(r, h.size, &format!("{path} in {image}"), &mut |b| {
        out.write_all(b).map_err(|e| crate::ui::out::io(&e))
    })?;
    out.flush().map_err(|e| crate::ui::out::io(&e))?;
    Ok(())
}
