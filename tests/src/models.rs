//! Model folders shaped like the ones users have: a Hugging Face repository checkout (sharded
//! safetensors with an index, a diffusers `unet/` + `vae/` + `text_encoder/` with same-named
//! files, a tokenizer, nested notes, links inside and out) and a Hugging Face hub cache (a
//! snapshot whose every file links into `blobs/`).
//!
//! Each builder returns what an image made from the folder must hold under its target path:
//! relative path -> the [`crate::tree_listing`] value (files `0644`, as lamina writes them).

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use crate::{random_bytes, sha256};

/// A safetensors file: the 8-byte header length, the JSON header, then `floats` F32 values.
pub fn safetensors(name: &str, floats: usize, seed: u64) -> Vec<u8> {
    let header = format!(
        r#"{{"{name}":{{"dtype":"F32","shape":[{floats}],"data_offsets":[0,{}]}},"__metadata__":{{"format":"pt"}}}}"#,
        floats * 4
    );
    let mut header = header.into_bytes();
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.extend_from_slice(&random_bytes(floats * 4, seed));
    out
}

fn put(root: &Path, rel: &str, bytes: &[u8], want: &mut BTreeMap<String, String>) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(&p, bytes).expect("write");
    add_dirs(rel, want);
    want.insert(rel.to_string(), format!("file {} 644", sha256(bytes)));
}

fn add_dirs(rel: &str, want: &mut BTreeMap<String, String>) {
    let mut acc = String::new();
    let parts: Vec<&str> = rel.split('/').collect();
    for c in &parts[..parts.len() - 1] {
        if !acc.is_empty() {
            acc.push('/');
        }
        acc.push_str(c);
        want.insert(acc.clone(), "dir".into());
    }
}

/// Writes a diffusers/transformers-shaped model folder at `dir` (created), plus a file outside
/// it (`dir/../outside-license.txt`) that a link inside points to. Returns what the folder's
/// contents must be in an image.
pub fn hf_folder(dir: &Path) -> BTreeMap<String, String> {
    let mut want = BTreeMap::new();
    std::fs::create_dir_all(dir).expect("mkdir");
    let shard1 = safetensors("model.layers.0.weight", 768 << 10, 11); // 3 MiB
    let shard2 = safetensors("model.layers.1.weight", 512 << 10, 12); // 2 MiB
    put(dir, "model-00001-of-00002.safetensors", &shard1, &mut want);
    put(dir, "model-00002-of-00002.safetensors", &shard2, &mut want);
    let index = r#"{"metadata":{"total_size":5242880},"weight_map":{"model.layers.0.weight":"model-00001-of-00002.safetensors","model.layers.1.weight":"model-00002-of-00002.safetensors"}}"#;
    put(
        dir,
        "model.safetensors.index.json",
        index.as_bytes(),
        &mut want,
    );
    put(
        dir,
        "config.json",
        br#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","torch_dtype":"float32"}"#,
        &mut want,
    );
    put(
        dir,
        "generation_config.json",
        br#"{"do_sample":true,"temperature":0.6}"#,
        &mut want,
    );
    let vocab: String = (0..2000).map(|i| format!("\"tok{i}\":{i},")).collect();
    put(
        dir,
        "tokenizer/tokenizer.json",
        format!("{{\"model\":{{\"vocab\":{{{vocab}\"end\":0}}}}}}").as_bytes(),
        &mut want,
    );
    put(
        dir,
        "tokenizer/tokenizer_config.json",
        br#"{"model_max_length":2048}"#,
        &mut want,
    );
    put(
        dir,
        "tokenizer/special_tokens_map.json",
        br#"{"bos_token":"<s>"}"#,
        &mut want,
    );
    put(
        dir,
        "text_encoder/config.json",
        br#"{"model_type":"clip_text_model"}"#,
        &mut want,
    );
    put(
        dir,
        "text_encoder/model.safetensors",
        &safetensors("te", 64 << 10, 13),
        &mut want,
    );
    put(
        dir,
        "unet/config.json",
        br#"{"_class_name":"UNet2DConditionModel"}"#,
        &mut want,
    );
    put(
        dir,
        "unet/diffusion_pytorch_model.safetensors",
        &safetensors("unet", 256 << 10, 14),
        &mut want,
    );
    put(
        dir,
        "vae/config.json",
        br#"{"_class_name":"AutoencoderKL"}"#,
        &mut want,
    );
    put(
        dir,
        "vae/diffusion_pytorch_model.safetensors",
        &safetensors("vae", 128 << 10, 15),
        &mut want,
    );
    put(
        dir,
        "sub/deeper/notes.txt",
        b"notes three levels down\n",
        &mut want,
    );
    // a link inside the folder stays a link; one pointing out is stored as the file
    symlink("../config.json", dir.join("tokenizer/config.json")).expect("symlink");
    want.insert("tokenizer/config.json".into(), "link ../config.json".into());
    let license = b"Apache-2.0 (outside the folder)\n";
    std::fs::write(dir.join("../outside-license.txt"), license).expect("write");
    symlink("../outside-license.txt", dir.join("LICENSE")).expect("symlink");
    want.insert("LICENSE".into(), format!("file {} 644", sha256(license)));
    want
}

/// Writes a Hugging Face hub cache under `hub` (`models--org--tiny/{blobs,refs,snapshots}`)
/// and returns the snapshot directory and what its contents must be in an image: every link
/// into `blobs/` stored as the file it points to, under the link's name.
pub fn hf_cache(hub: &Path) -> (PathBuf, BTreeMap<String, String>) {
    let repo = hub.join("models--org--tiny");
    let rev = "0123456789abcdef0123456789abcdef01234567";
    let snap = repo.join("snapshots").join(rev);
    std::fs::create_dir_all(repo.join("blobs")).expect("mkdir");
    std::fs::create_dir_all(repo.join("refs")).expect("mkdir");
    std::fs::write(repo.join("refs/main"), rev).expect("write");
    let mut want = BTreeMap::new();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("config.json", br#"{"model_type":"gpt2"}"#.to_vec()),
        ("model.safetensors", safetensors("h", 256 << 10, 21)),
        ("tokenizer.json", br#"{"model":{"vocab":{"a":0}}}"#.to_vec()),
        (
            "unet/config.json",
            br#"{"_class_name":"UNet2DModel"}"#.to_vec(),
        ),
    ];
    for (rel, bytes) in files {
        let hex = sha256(&bytes).trim_start_matches("sha256:").to_string();
        std::fs::write(repo.join("blobs").join(&hex), &bytes).expect("write blob");
        let link = snap.join(rel);
        std::fs::create_dir_all(link.parent().expect("parent")).expect("mkdir");
        let depth = rel.matches('/').count() + 2;
        let target = format!("{}blobs/{hex}", "../".repeat(depth));
        symlink(&target, &link).expect("symlink");
        add_dirs(rel, &mut want);
        want.insert(rel.to_string(), format!("file {} 644", sha256(&bytes)));
    }
    (snap, want)
}

/// `want` with every path put under `prefix` (`prefix` itself a directory).
pub fn under(prefix: &str, want: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    out.insert(prefix.to_string(), "dir".to_string());
    for (k, v) in want {
        out.insert(format!("{prefix}/{k}"), v.clone());
    }
    out
}
