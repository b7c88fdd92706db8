//! `lamina layers`: what an image is made of.

use crate::store::Loc;
use lamina_core::media;

use crate::commands::Ctx;
use crate::error::Result;
use crate::net::client::Client;
use crate::ops::resolve::{self, PlatformSel, Top};
use crate::ui::progress::human;

/// List the layers of an image (and the platforms of an index).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Image reference.
    #[arg(value_name = "REF")]
    pub image: String,
    /// Platform of an index to show: os/arch[/variant] or all (default linux/amd64).
    #[arg(long)]
    pub platform: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `layers`.
pub fn run(ctx: &mut Ctx, a: Args) -> Result<()> {
    let image = ctx.source("image", &a.image)?;
    show(&mut ctx.client, &image, a.platform.as_deref(), a.json)
}

/// Prints the layers of `r` (for an index: its platforms, then the selected platform's layers).
fn show(client: &mut Client, r: &Loc, platform: Option<&str>, json: bool) -> Result<()> {
    let sel = PlatformSel::parse(platform)?;
    let top = resolve::fetch(client, r, &sel)?;
    let (platforms, images, top_digest, top_type) = match top {
        Top::Single(i) => {
            let c = crate::ops::resolve::config(client, r, &i.manifest)?;
            crate::ops::resolve::check_platform(r, platform, &c)?;
            (
                Vec::new(),
                vec![i.clone()],
                i.digest.clone(),
                i.manifest.media_type(),
            )
        }
        Top::Index {
            index,
            digest,
            children,
        } => {
            let ps: Vec<serde_json::Value> = index
                .manifests()?
                .iter()
                .map(|m| {
                    serde_json::json!({
                        "platform": m.platform.as_ref().map(|p| p.to_string()),
                        "digest": m.digest.to_string(),
                        "size": m.size,
                        "mediaType": m.media_type,
                    })
                })
                .collect();
            (ps, children, digest, index.media_type())
        }
    };
    let mut out_images = Vec::new();
    for img in &images {
        let config = resolve::config(client, r, &img.manifest)?;
        let hist = config.layer_history();
        let layers = img.manifest.layers()?;
        let rows: Vec<serde_json::Value> = layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let h = hist.get(i).cloned().flatten();
                serde_json::json!({
                    "index": i,
                    "digest": l.digest.to_string(),
                    "size": l.size,
                    "mediaType": l.media_type,
                    "createdBy": h.as_ref().and_then(|h| h.created_by.clone()),
                    "comment": h.as_ref().and_then(|h| h.comment.clone()),
                    "created": h.as_ref().and_then(|h| h.created.clone()),
                    "annotations": l.annotations.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
                })
            })
            .collect();
        out_images.push(serde_json::json!({
            "platform": img.platform.as_ref().map(|p| p.to_string()).or_else(|| config.platform().map(|p| p.to_string())),
            "digest": img.digest.to_string(),
            "mediaType": img.manifest.media_type(),
            "config": img.manifest.config()?.digest.to_string(),
            "layers": rows,
        }));
    }
    if json {
        let v = serde_json::json!({
            "reference": r.to_string(),
            "digest": top_digest.to_string(),
            "mediaType": top_type,
            "platforms": platforms,
            "images": out_images,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    outln!("{} {} ({})", r, top_digest, media::short(top_type))?;
    if !platforms.is_empty() {
        outln!("platforms:")?;
        for p in &platforms {
            outln!(
                "  {:<16} {}  {}",
                p["platform"].as_str().unwrap_or("-"),
                p["digest"].as_str().unwrap_or(""),
                human(p["size"].as_u64().unwrap_or(0))
            )?;
        }
    }
    for img in &out_images {
        if !platforms.is_empty() {
            outln!(
                "layers of {} ({}):",
                img["platform"].as_str().unwrap_or("?"),
                img["digest"].as_str().unwrap_or("")
            )?;
        }
        outln!(
            "{:>3}  {:<19} {:>10}  {:<9} CREATED BY",
            "#",
            "DIGEST",
            "SIZE",
            "TYPE"
        )?;
        for l in img["layers"].as_array().into_iter().flatten() {
            let d = l["digest"].as_str().unwrap_or("");
            let short = d
                .strip_prefix("sha256:")
                .map(|h| &h[..12.min(h.len())])
                .unwrap_or(d);
            let mut cb = l["createdBy"].as_str().unwrap_or("").to_string();
            if let Some(c) = l["comment"].as_str() {
                cb.push_str(&format!("  [{c}]"));
            }
            outln!(
                "{:>3}  sha256:{:<12} {:>10}  {:<9} {}",
                l["index"].as_u64().unwrap_or(0),
                short,
                human(l["size"].as_u64().unwrap_or(0)),
                media::short(l["mediaType"].as_str().unwrap_or("")),
                cb
            )?;
        }
    }
    Ok(())
}
