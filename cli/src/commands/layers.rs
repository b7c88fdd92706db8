//! `lamina layers`: what an image is made of.

use crate::store::Loc;
use lamina_core::{artifact, media};

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
        let config_desc = img.manifest.config()?;
        let artifact::Read {
            format,
            parts,
            about: a,
        } = artifact::read(&img.manifest, &config)?;
        let rows: Vec<serde_json::Value> = layers
            .iter()
            .zip(&parts)
            .enumerate()
            .map(|(i, (l, p))| {
                let h = hist.get(i).cloned().flatten();
                let mut row = serde_json::json!({
                    "index": i,
                    "digest": l.digest.to_string(),
                    "size": l.size,
                    "mediaType": l.media_type,
                    "createdBy": h.as_ref().and_then(|h| h.created_by.clone()),
                    "comment": h.as_ref().and_then(|h| h.comment.clone()),
                    "created": h.as_ref().and_then(|h| h.created.clone()),
                    "annotations": l.annotations.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
                });
                if format.is_artifact() {
                    row["kind"] = p.kind.name().into();
                    row["packing"] = p.packing.map(|p| p.name()).into();
                    row["path"] = p.path.clone().into();
                    if let Some(why) = &p.problem {
                        row["problem"] = why.clone().into();
                    }
                }
                row
            })
            .collect();
        let mut entry = serde_json::json!({
            "platform": img.platform.as_ref().map(|p| p.to_string()).or_else(|| config.platform().map(|p| p.to_string())),
            "digest": img.digest.to_string(),
            "mediaType": img.manifest.media_type(),
            "config": config_desc.digest.to_string(),
            "format": format.name(),
            "layers": rows,
        });
        if format.is_artifact() {
            entry["artifactType"] = img.manifest.artifact_type().into();
            entry["configMediaType"] = config_desc.media_type.clone().into();
            entry["model"] = serde_json::json!({
                "name": a.name,
                "family": a.family,
                "format": a.format,
                "paramSize": a.param_size,
                "precision": a.precision,
                "architecture": a.architecture,
                "quantization": a.quantization,
            });
        }
        out_images.push(entry);
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
        if img["model"].is_object() {
            show_artifact(img)?;
            continue;
        }
        outln!(
            "{:>3}  {:<19} {:>10}  {:<9} CREATED BY",
            "#",
            "DIGEST",
            "SIZE",
            "TYPE"
        )?;
        for l in img["layers"].as_array().into_iter().flatten() {
            let short = short_hex(l["digest"].as_str().unwrap_or(""));
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

/// A model artifact's layers: what the config says about the model, then each layer's kind,
/// packing and file.
fn show_artifact(img: &serde_json::Value) -> Result<()> {
    let m = &img["model"];
    let facts: Vec<String> = [
        ("name", "name"),
        ("family", "family"),
        ("format", "format"),
        ("paramSize", "params"),
        ("precision", "precision"),
        ("architecture", "architecture"),
        ("quantization", "quantization"),
    ]
    .iter()
    .filter_map(|(k, label)| Some(format!("{label} {}", m[*k].as_str()?)))
    .collect();
    outln!(
        "{} artifact{}{}",
        img["format"].as_str().unwrap_or("?"),
        if facts.is_empty() { "" } else { ": " },
        facts.join(", ")
    )?;
    outln!(
        "{:>3}  {:<19} {:>10}  {:<7} {:<9} PATH",
        "#",
        "DIGEST",
        "SIZE",
        "KIND",
        "PACKING"
    )?;
    for l in img["layers"].as_array().into_iter().flatten() {
        let short = short_hex(l["digest"].as_str().unwrap_or(""));
        let path = match (l["path"].as_str(), l["problem"].as_str()) {
            (Some(p), _) => p.to_string(),
            (None, Some(why)) => format!("(refused: {why})"),
            (None, None) => "(files named in the tar)".to_string(),
        };
        outln!(
            "{:>3}  sha256:{:<12} {:>10}  {:<7} {:<9} {}",
            l["index"].as_u64().unwrap_or(0),
            short,
            human(l["size"].as_u64().unwrap_or(0)),
            l["kind"].as_str().unwrap_or("?"),
            l["packing"]
                .as_str()
                .unwrap_or(l["mediaType"].as_str().unwrap_or("?")),
            path
        )?;
    }
    Ok(())
}

/// The first 12 hex digits of a `sha256:` digest.
fn short_hex(d: &str) -> &str {
    d.strip_prefix("sha256:")
        .map(|h| &h[..12.min(h.len())])
        .unwrap_or(d)
}
