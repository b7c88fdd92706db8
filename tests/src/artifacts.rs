//! Model artifacts built by hand, the way their own tools lay them out (read from the ModelPack
//! spec, modctl, kit and Docker's model-runner), not with lamina: the manifests and configs are
//! JSON written here, tar layers are made by GNU tar, and everything is pushed to the registry
//! with curl's plain blob and manifest uploads.
//!
//! Each builder returns the reference it pushed and what `lamina extract -o DIR/` must give:
//! relative path -> the [`crate::tree_listing`] value.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use crate::models::safetensors;
use crate::{cmd, random_bytes, sha256};

/// A layer to push: media type, bytes, annotations.
#[derive(Debug)]
pub struct Layer {
    /// Media type.
    pub media_type: String,
    /// The blob.
    pub bytes: Vec<u8>,
    /// Layer annotations.
    pub annotations: Vec<(String, String)>,
}

impl Layer {
    /// A layer of `media_type` holding `bytes`, annotated with `ann`.
    pub fn new(media_type: &str, bytes: Vec<u8>, ann: &[(&str, &str)]) -> Self {
        Layer {
            media_type: media_type.into(),
            bytes,
            annotations: ann
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn descriptor(&self) -> Value {
        let mut d = json!({
            "mediaType": self.media_type,
            "digest": sha256(&self.bytes),
            "size": self.bytes.len(),
        });
        if !self.annotations.is_empty() {
            d["annotations"] = self
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        d
    }
}

/// `sha256:<hex>` of `b`.
pub fn digest(b: &[u8]) -> String {
    sha256(b)
}

/// Uploads `bytes` as a blob of `registry/repo` (POST, then PUT with the digest) with curl.
pub fn push_blob(registry: &str, repo: &str, bytes: &[u8], dir: &Path) -> String {
    let d = digest(bytes);
    let f = dir.join(format!("blob-{}", &d[7..19]));
    std::fs::write(&f, bytes).expect("write blob");
    let loc = cmd(
        "curl",
        &[
            "-sS",
            "--fail-with-body",
            "-X",
            "POST",
            "-o",
            "/dev/null",
            "-w",
            "%header{location}",
            &format!("http://{registry}/v2/{repo}/blobs/uploads/"),
        ],
    )
    .ok()
    .stdout;
    let loc = loc.trim();
    let url = if loc.starts_with("http") {
        loc.to_string()
    } else {
        format!("http://{registry}{loc}")
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    cmd(
        "curl",
        &[
            "-sS",
            "--fail-with-body",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &format!("@{}", f.display()),
            &format!("{url}{sep}digest={}", d.replace(':', "%3A")),
        ],
    )
    .ok();
    d
}

/// Pushes a manifest over `layers` and `config` to `registry/repo:tag` with curl: the
/// manifest JSON is written here. `artifact_type` goes in the manifest when given;
/// `media_type` is left out with `None` (as kit 1.7 writes its manifests). Returns the
/// reference `registry/repo:tag`.
#[allow(clippy::too_many_arguments)]
pub fn push_artifact(
    registry: &str,
    repo: &str,
    tag: &str,
    media_type: Option<&str>,
    artifact_type: Option<&str>,
    config_media_type: &str,
    config: &[u8],
    layers: &[Layer],
    dir: &Path,
) -> String {
    push_blob(registry, repo, config, dir);
    for l in layers {
        push_blob(registry, repo, &l.bytes, dir);
    }
    let mut m = json!({"schemaVersion": 2});
    if let Some(mt) = media_type {
        m["mediaType"] = mt.into();
    }
    if let Some(at) = artifact_type {
        m["artifactType"] = at.into();
    }
    m["config"] = json!({
        "mediaType": config_media_type,
        "digest": digest(config),
        "size": config.len(),
    });
    m["layers"] = layers
        .iter()
        .map(Layer::descriptor)
        .collect::<Vec<_>>()
        .into();
    let f = dir.join(format!("manifest-{tag}.json"));
    std::fs::write(&f, serde_json::to_vec(&m).expect("json")).expect("write manifest");
    cmd(
        "curl",
        &[
            "-sS",
            "--fail-with-body",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
            "--data-binary",
            &format!("@{}", f.display()),
            &format!("http://{registry}/v2/{repo}/manifests/{tag}"),
        ],
    )
    .ok();
    format!("{registry}/{repo}:{tag}")
}

/// A tar of `paths` under `root`, made by GNU tar with what kit writes (uid 1000, gid 0, no
/// names, mtime 0), in name order, parent directories included.
pub fn gnu_tar(root: &Path, paths: &[&str], gzip: bool) -> Vec<u8> {
    let out = root.join(format!(
        "../{}.tar",
        &sha256(paths.join(",").as_bytes())[7..23]
    ));
    let mut args = vec![
        "-C".to_string(),
        root.display().to_string(),
        "--sort=name".into(),
        "--owner=1000".into(),
        "--group=0".into(),
        "--numeric-owner".into(),
        "--mtime=@0".into(),
        "--format=gnu".into(),
    ];
    if gzip {
        args.push("-z".into());
    }
    args.push("-cf".into());
    args.push(out.display().to_string());
    args.extend(paths.iter().map(|p| p.to_string()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    cmd("tar", &a).ok();
    std::fs::read(&out).expect("read tar")
}

fn file(root: &Path, rel: &str, bytes: &[u8], want: &mut BTreeMap<String, String>) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(&p, bytes).expect("write");
    let mut acc = String::new();
    for c in rel
        .split('/')
        .collect::<Vec<_>>()
        .split_last()
        .expect("name")
        .1
    {
        if !acc.is_empty() {
            acc.push('/');
        }
        acc.push_str(c);
        want.insert(acc.clone(), "dir".into());
    }
    want.insert(rel.into(), format!("file {} 644", sha256(bytes)));
}

/// The uncompressed tar's digest of a gzipped tar (its diff_id), by gunzip.
fn gunzip_digest(gz: &[u8], dir: &Path) -> String {
    let f = dir.join(format!("gz-{}", &sha256(gz)[7..19]));
    std::fs::write(&f, gz).expect("write");
    let out = std::process::Command::new("gzip")
        .args(["-dc", f.to_str().expect("utf-8")])
        .output()
        .expect("gzip");
    digest(&out.stdout)
}

/// A diffusers-shaped ModelPack as modctl lays it out: one raw layer per file
/// (`unet/` and `vae/` with same-named weights, `config.json`, `README.md`), a tokenizer as a
/// tar `weight.config` layer, code as a tar+gzip layer. `legacy` writes spec v0.0.6's names
/// (`vnd.cnai`, `org.cnai.model.filepath`, `modelfs.diff_ids`), as Harbor reads them.
pub fn modelpack(
    registry: &str,
    repo: &str,
    legacy: bool,
    dir: &Path,
) -> (String, BTreeMap<String, String>) {
    let (ns, fp) = if legacy {
        ("application/vnd.cnai.model", "org.cnai.model.filepath")
    } else {
        ("application/vnd.cncf.model", "org.cncf.model.filepath")
    };
    let src = dir.join(format!("modelpack-src-{legacy}"));
    let mut want = BTreeMap::new();
    let unet = safetensors("unet", 3000, 11);
    let vae = safetensors("vae", 2000, 12);
    let cfg = br#"{"model_type": "unet", "torch_dtype": "float16"}"#.to_vec();
    let readme = b"# A model\n\nBuilt by hand for lamina's tests.\n".to_vec();
    for (rel, b) in [
        ("unet/diffusion_pytorch_model.safetensors", &unet),
        ("vae/diffusion_pytorch_model.safetensors", &vae),
        ("config.json", &cfg),
        ("README.md", &readme),
    ] {
        file(&src, rel, b, &mut want);
    }
    file(
        &src,
        "tokenizer/tokenizer.json",
        br#"{"version": "1.0"}"#,
        &mut want,
    );
    file(
        &src,
        "tokenizer/special_tokens_map.json",
        br#"{"bos_token": "<s>"}"#,
        &mut want,
    );
    file(&src, "scripts/run.py", b"print('hello')\n", &mut want);
    let tok = gnu_tar(&src, &["tokenizer"], false);
    let code = gnu_tar(&src, &["scripts"], true);
    let raw = |kind: &str, b: &[u8], path: &str| {
        Layer::new(
            &format!("{ns}.{kind}.v1.raw"),
            b.to_vec(),
            &[(fp, path), ("org.opencontainers.image.title", path)],
        )
    };
    let layers = vec![
        raw("weight", &unet, "unet/diffusion_pytorch_model.safetensors"),
        raw("weight", &vae, "vae/diffusion_pytorch_model.safetensors"),
        raw("weight.config", &cfg, "config.json"),
        Layer::new(
            &format!("{ns}.weight.config.v1.tar"),
            tok.clone(),
            &[(fp, "tokenizer")],
        ),
        Layer::new(
            &format!("{ns}.code.v1.tar+gzip"),
            code.clone(),
            &[(fp, "scripts")],
        ),
        raw("doc", &readme, "README.md"),
    ];
    let ids: Vec<String> = vec![
        digest(&unet),
        digest(&vae),
        digest(&cfg),
        digest(&tok),
        gunzip_digest(&code, dir),
        digest(&readme),
    ];
    let config = json!({
        "descriptor": {"name": "tiny-diffuser", "family": "unet"},
        "config": {"format": "safetensors", "paramSize": "5k", "precision": "float32"},
        "modelfs": if legacy { json!({"type": "layers", "diff_ids": ids}) } else { json!({"type": "layers", "diffIds": ids}) },
    });
    let r = push_artifact(
        registry,
        repo,
        "v1",
        Some("application/vnd.oci.image.manifest.v1+json"),
        Some(&format!("{ns}.manifest.v1+json")),
        &format!("{ns}.config.v1+json"),
        &serde_json::to_vec(&config).expect("json"),
        &layers,
        dir,
    );
    (r, want)
}

/// A ModelKit as kit 1.7 packs it: the Kitfile as the config, one tar layer per Kitfile entry
/// named from the packing root (parent directories included), docs gzipped, and a manifest
/// without `mediaType` or `artifactType`.
pub fn modelkit(registry: &str, repo: &str, dir: &Path) -> (String, BTreeMap<String, String>) {
    let src = dir.join("modelkit-src");
    let mut want = BTreeMap::new();
    let gguf = [b"GGUF".to_vec(), random_bytes(50_000, 21)].concat();
    file(&src, "models/tiny.gguf", &gguf, &mut want);
    file(&src, "models/tokenizer.json", br#"{"v": 1}"#, &mut want);
    file(&src, "src/serve.py", b"import sys\n", &mut want);
    // a folder's tar of two files: one that cannot become one raw file
    file(&src, "src/util.py", b"def f():\n    return 1\n", &mut want);
    file(&src, "data/train.csv", b"a,b\n1,2\n", &mut want);
    file(&src, "README.md", b"# tiny\n", &mut want);
    let model = gnu_tar(&src, &["models/tiny.gguf"], false);
    let part = gnu_tar(&src, &["models/tokenizer.json"], false);
    let code = gnu_tar(&src, &["src"], false);
    let data = gnu_tar(&src, &["data"], false);
    let docs = gnu_tar(&src, &["README.md"], true);
    let kit = "application/vnd.kitops.modelkit";
    let layers = vec![
        Layer::new(&format!("{kit}.model.v1.tar"), model.clone(), &[]),
        Layer::new(&format!("{kit}.modelpart.v1.tar"), part.clone(), &[]),
        Layer::new(&format!("{kit}.code.v1.tar"), code.clone(), &[]),
        Layer::new(&format!("{kit}.dataset.v1.tar"), data.clone(), &[]),
        Layer::new(&format!("{kit}.docs.v1.tar+gzip"), docs.clone(), &[]),
    ];
    let e = |path: &str, b: &[u8], diff: String| json!({"path": path, "digest": digest(b), "diffId": diff});
    let kitfile = json!({
        "manifestVersion": "1.0.0",
        "package": {"name": "tiny-kit", "authors": ["lamina tests"]},
        "model": {
            "name": "tiny", "path": "models/tiny.gguf", "format": "gguf",
            "digest": digest(&model), "diffId": digest(&model),
            "parts": [e("models/tokenizer.json", &part, digest(&part))],
        },
        "code": [e("src", &code, digest(&code))],
        "datasets": [e("data", &data, digest(&data))],
        "docs": [e("README.md", &docs, gunzip_digest(&docs, dir))],
    });
    // the parent directory entries GNU tar writes for models/tiny.gguf: only the file itself
    // here (tar was given the file), so `models` comes from the tokenizer layer as well
    let r = push_artifact(
        registry,
        repo,
        "v1",
        None,
        None,
        "application/vnd.kitops.modelkit.config.v1+json",
        &serde_json::to_vec(&kitfile).expect("json"),
        &layers,
        dir,
    );
    (r, want)
}

/// A Docker model artifact as `docker model package --gguf` makes it (config v0.1, a raw
/// GGUF layer and a raw license, named by `org.cncf.model.filepath`), and one as
/// `--safetensors-dir` makes it (config v0.2, a raw layer per file, nested paths kept).
pub fn docker_models(
    registry: &str,
    repo: &str,
    dir: &Path,
) -> [(String, BTreeMap<String, String>); 2] {
    let src = dir.join("docker-src");
    let mut want_gguf = BTreeMap::new();
    let gguf = [b"GGUF".to_vec(), random_bytes(40_000, 31)].concat();
    let license = b"Apache License 2.0\n".to_vec();
    file(&src, "gguf/model.gguf", &gguf, &mut BTreeMap::new());
    want_gguf.insert("model.gguf".into(), format!("file {} 644", sha256(&gguf)));
    want_gguf.insert("LICENSE".into(), format!("file {} 644", sha256(&license)));
    let meta = |name: &str, size: usize| {
        json!({"name": name, "mode": 420, "uid": 0, "gid": 0, "size": size,
               "mtime": "2025-01-01T00:00:00Z", "typeflag": 0})
        .to_string()
    };
    let ann = |path: &str, size: usize| -> Vec<(String, String)> {
        vec![
            ("org.cncf.model.filepath".into(), path.into()),
            ("org.cncf.model.file.metadata+json".into(), meta(path, size)),
            (
                "org.cncf.model.file.mediatype.untested".into(),
                "false".into(),
            ),
        ]
    };
    let layer = |mt: &str, b: &[u8], path: &str| Layer {
        media_type: mt.into(),
        bytes: b.to_vec(),
        annotations: ann(path, b.len()),
    };
    let v1 = json!({
        "config": {"format": "gguf", "quantization": "Q4_K_M", "parameters": "8.03B",
                   "architecture": "llama", "size": "40KiB"},
        "descriptor": {"created": "2025-01-01T00:00:00Z"},
        "rootfs": {"type": "rootfs", "diff_ids": [digest(&gguf), digest(&license)]},
    });
    let gguf_ref = push_artifact(
        registry,
        repo,
        "gguf",
        Some("application/vnd.oci.image.manifest.v1+json"),
        None,
        "application/vnd.docker.ai.model.config.v0.1+json",
        &serde_json::to_vec(&v1).expect("json"),
        &[
            layer("application/vnd.docker.ai.gguf.v3", &gguf, "model.gguf"),
            layer("application/vnd.docker.ai.license", &license, "LICENSE"),
        ],
        dir,
    );
    let mut want_st = BTreeMap::new();
    let a = safetensors("a", 1000, 32);
    let b = safetensors("b", 1000, 33);
    let index = br#"{"weight_map": {"a": "model-00001-of-00002.safetensors"}}"#.to_vec();
    let te = safetensors("te", 500, 34);
    let files: Vec<(&str, &str, &Vec<u8>)> = vec![
        (
            "application/vnd.docker.ai.safetensors",
            "model-00001-of-00002.safetensors",
            &a,
        ),
        (
            "application/vnd.docker.ai.safetensors",
            "model-00002-of-00002.safetensors",
            &b,
        ),
        (
            "application/vnd.docker.ai.model.file",
            "model.safetensors.index.json",
            &index,
        ),
        (
            "application/vnd.docker.ai.safetensors",
            "text_encoder/model.safetensors",
            &te,
        ),
    ];
    let mut layers = Vec::new();
    for (mt, path, bytes) in &files {
        file(&src.join("st"), path, bytes, &mut want_st);
        layers.push(layer(mt, bytes, path));
    }
    let v2 = json!({
        "config": {"format": "safetensors", "parameters": "3.5K", "architecture": "llama"},
        "descriptor": {"created": "2025-01-01T00:00:00Z"},
        "rootfs": {"type": "rootfs", "diff_ids": files.iter().map(|(_, _, b)| digest(b)).collect::<Vec<_>>()},
    });
    let st_ref = push_artifact(
        registry,
        repo,
        "safetensors",
        Some("application/vnd.oci.image.manifest.v1+json"),
        None,
        "application/vnd.docker.ai.model.config.v0.2+json",
        &serde_json::to_vec(&v2).expect("json"),
        &layers,
        dir,
    );
    [(gguf_ref, want_gguf), (st_ref, want_st)]
}
