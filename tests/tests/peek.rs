//! `lamina ls` and `lamina cat`: reading inside an image without downloading it. The layers
//! are built by GNU tar and pushed with curl (nothing of lamina's making), and the registry's
//! access log judges what was read.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use lamina_tests::artifacts::{self, gnu_tar, push_artifact, push_blob, Layer};
use lamina_tests::faultproxy::{Action, FaultProxy, Rule};
use lamina_tests::models;
use lamina_tests::*;

/// The GETs of `blob` in `repo` the registry served since the log had `from` lines: (count,
/// bytes sent).
fn served(repo: &str, blob: &str, from: usize) -> (usize, u64) {
    let lines = log_lines(PLAIN, &format!("/v2/{repo}/blobs/{blob}"));
    let mut n = 0;
    let mut bytes = 0;
    for l in lines.iter().skip(from).filter(|l| l.contains("\"GET ")) {
        n += 1;
        // ... "GET /v2/... HTTP/1.1" 206 32768 "" "lamina/..."
        let after = l.split("\" ").nth(1).unwrap_or("");
        bytes += after
            .split_whitespace()
            .nth(1)
            .and_then(|b| b.parse::<u64>().ok())
            .unwrap_or(0);
    }
    (n, bytes)
}

fn log_len(repo: &str, blob: &str) -> usize {
    log_lines(PLAIN, &format!("/v2/{repo}/blobs/{blob}")).len()
}

/// An OCI image: a gzip base layer (`etc/os-release`, `models/old.bin`) and an uncompressed
/// model layer: a 10 MiB safetensors, a 40 MiB shard, `config.json`, a tokenizer, a symlink,
/// and a whiteout of `models/old.bin`. Returns the reference, the top layer's digest and the
/// model files' bytes.
fn model_image(dir: &Path, repo: &str) -> (String, String, BTreeMap<String, Vec<u8>>) {
    let base = dir.join("base");
    std::fs::create_dir_all(base.join("etc")).unwrap();
    std::fs::create_dir_all(base.join("models")).unwrap();
    std::fs::write(base.join("etc/os-release"), b"ID=test\n").unwrap();
    std::fs::write(base.join("models/old.bin"), b"old weights").unwrap();
    let base_tar = gnu_tar(&base, &["etc", "models"], true);

    let top = dir.join("top");
    let m = top.join("models");
    std::fs::create_dir_all(&m).unwrap();
    let mut files = BTreeMap::new();
    let mut put = |name: &str, b: Vec<u8>| {
        std::fs::write(m.join(name), &b).unwrap();
        files.insert(format!("models/{name}"), b);
    };
    put(
        "model.safetensors",
        lamina_tests::models::safetensors("model.layers.0.weight", 2560 << 10, 1),
    );
    put("tiny.gguf", gguf());
    put("shard-2.safetensors", random_bytes(40 << 20, 2));
    put(
        "config.json",
        br#"{"model_type":"llama","hidden_size":64}"#.to_vec(),
    );
    put("tokenizer.json", random_bytes(200 << 10, 3));
    std::os::unix::fs::symlink("model.safetensors", m.join("latest")).unwrap();
    std::fs::write(m.join(".wh.old.bin"), b"").unwrap();
    let top_tar = gnu_tar(&top, &["models"], false);
    let top_digest = sha256(&top_tar);

    std::fs::write(dir.join("base.gz"), &base_tar).unwrap();
    let out = std::process::Command::new("sh")
        .args([
            "-c",
            &format!("gzip -dc {} | sha256sum", dir.join("base.gz").display()),
        ])
        .output()
        .unwrap();
    let base_diff = format!(
        "sha256:{}",
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
    );
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [base_diff, top_digest]},
    }))
    .unwrap();
    let r = push_artifact(
        PLAIN,
        repo,
        "v1",
        Some("application/vnd.oci.image.manifest.v1+json"),
        None,
        "application/vnd.oci.image.config.v1+json",
        &config,
        &[
            Layer::new("application/vnd.oci.image.layer.v1.tar+gzip", base_tar, &[]),
            Layer::new("application/vnd.oci.image.layer.v1.tar", top_tar, &[]),
        ],
        dir,
    );
    (r, top_digest, files)
}

/// A small GGUF v3 file as llama.cpp writes one: architecture `llama`, file type 15 (Q4_K_M),
/// a vocabulary array, two tensors, then their data.
fn gguf() -> Vec<u8> {
    let s = |v: &mut Vec<u8>, x: &str| {
        v.extend_from_slice(&(x.len() as u64).to_le_bytes());
        v.extend_from_slice(x.as_bytes());
    };
    let mut v = b"GGUF".to_vec();
    v.extend_from_slice(&3u32.to_le_bytes());
    v.extend_from_slice(&2u64.to_le_bytes()); // tensors
    v.extend_from_slice(&3u64.to_le_bytes()); // metadata entries
    s(&mut v, "general.architecture");
    v.extend_from_slice(&8u32.to_le_bytes());
    s(&mut v, "llama");
    s(&mut v, "tokenizer.ggml.tokens");
    v.extend_from_slice(&9u32.to_le_bytes());
    v.extend_from_slice(&8u32.to_le_bytes());
    v.extend_from_slice(&3u64.to_le_bytes());
    for t in ["<s>", "</s>", "hello"] {
        s(&mut v, t);
    }
    s(&mut v, "general.file_type");
    v.extend_from_slice(&4u32.to_le_bytes());
    v.extend_from_slice(&15u32.to_le_bytes());
    for (name, dims) in [("tok_embd", &[320u64, 64][..]), ("norm", &[64][..])] {
        s(&mut v, name);
        v.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            v.extend_from_slice(&d.to_le_bytes());
        }
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&0u64.to_le_bytes());
    }
    v.resize(v.len() + 90_000, 7);
    v
}

fn json_of(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// `ls` and `cat` on an image in a registry: the merged tree (the base's files, the whiteout
/// applied, the symlink shown), a model layer listed and a file read with a few KiB of range
/// requests (the registry's log counts what it sent), a symlink followed, the same from an
/// `oci:` layout and an `oci-archive:` (skopeo made them), and clear errors.
#[test]
fn ls_and_cat_read_a_model_layer_by_ranges() {
    harness();
    let dir = tempdir("peek-image");
    let name = repo("peek");
    let (r, top, files) = model_image(&dir, &name);

    // the whole tree: the base's file, no whited-out one, the model's files
    let out = lamina(&["ls", &r, "--json"]).ok();
    let j = json_of(&out.stdout);
    let paths: Vec<&str> = j["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"etc/os-release"), "{paths:?}");
    assert!(!paths.iter().any(|p| p.contains("old.bin")), "{paths:?}");
    for f in files.keys() {
        assert!(paths.contains(&f.as_str()), "{f} in {paths:?}");
    }
    assert!(out.stderr.contains("gzip-compressed"), "{}", out.stderr);
    let latest = j["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "models/latest")
        .unwrap();
    assert_eq!(latest["type"], "symlink");
    assert_eq!(latest["link"], "model.safetensors");
    assert_eq!(latest["layer"], 1);

    // only the model layer: its headers, a few KiB of a 50 MiB layer
    let mark = log_len(&name, &top);
    let out = lamina(&["ls", "-l", &r, "/models", "--layer", "1"]).ok();
    let (gets, bytes) = served(&name, &top, mark);
    assert!(bytes <= 256 << 10, "ls read {bytes} bytes in {gets} GETs");
    assert!(gets <= 8, "{gets} GETs");
    for f in files.keys() {
        let line = out
            .stdout
            .lines()
            .find(|l| l.ends_with(f.as_str()))
            .unwrap_or_else(|| panic!("{f} in {}", out.stdout));
        assert!(line.starts_with("-rw-r--r--"), "{line}");
        assert!(line.contains(" L1 "), "{line}");
    }
    assert!(
        out.stdout.contains("models/latest -> model.safetensors"),
        "{}",
        out.stdout
    );

    // cat: the file, found by ranges, its bytes one range
    let mark = log_len(&name, &top);
    let out = lamina(&["cat", &r, "/models/config.json"]).ok();
    assert_eq!(out.stdout.as_bytes(), &files["models/config.json"][..]);
    let (gets, bytes) = served(&name, &top, mark);
    assert!(bytes <= 256 << 10, "cat read {bytes} bytes in {gets} GETs");
    // the base layer (below the model layer) is not read at all
    let m = raw_manifest(&r, None);
    let base = m["layers"][0]["digest"].as_str().unwrap().to_string();
    let before = log_len(&name, &base);
    let big = std::process::Command::new(lamina_bin())
        .args(["cat", &r, "models/latest"])
        .output()
        .unwrap();
    assert!(big.status.success());
    assert_eq!(
        big.stdout, files["models/model.safetensors"],
        "a symlink followed"
    );
    assert_eq!(log_len(&name, &base), before, "the base layer was read");
    // a file of the base, through the gzip stream
    let out = lamina(&["cat", &r, "etc/os-release"]).ok();
    assert_eq!(out.stdout, "ID=test\n");

    // the same from a layout and an archive (seeks, no registry)
    let lay = dir.join("layout");
    let arc = dir.join("image.tar");
    for dest in [
        format!("oci:{}:v1", lay.display()),
        format!("oci-archive:{}:v1", arc.display()),
    ] {
        cmd(
            "skopeo",
            &[
                "copy",
                "--src-tls-verify=false",
                &format!("docker://{r}"),
                &dest,
            ],
        )
        .ok();
        let out = lamina(&["cat", &dest, "models/config.json"]).ok();
        assert_eq!(
            out.stdout.as_bytes(),
            &files["models/config.json"][..],
            "{dest}"
        );
        let out = lamina(&["ls", &dest, "models", "--json"]).ok();
        let n = json_of(&out.stdout)["entries"].as_array().unwrap().len();
        assert_eq!(n, files.len() + 1, "{dest}: {}", out.stdout);
        let big = std::process::Command::new(lamina_bin())
            .args(["cat", &dest, "models/shard-2.safetensors"])
            .output()
            .unwrap();
        assert_eq!(big.stdout, files["models/shard-2.safetensors"], "{dest}");
    }

    // errors: a missing file, a directory, a layer that is not there, a path out of the root
    let e = lamina(&["cat", &r, "models/nope.bin"]).fails();
    assert!(e.stderr.contains("models/nope.bin"), "{}", e.stderr);
    let e = lamina(&["cat", &r, "models/old.bin"]).fails();
    assert!(
        e.stderr.contains("not found") || e.stderr.contains("old.bin"),
        "{}",
        e.stderr
    );
    let e = lamina(&["cat", &r, "models"]).fails();
    assert!(e.stderr.contains("is a directory"), "{}", e.stderr);
    let e = lamina(&["ls", &r, "--layer", "7"]).fails();
    assert_eq!(e.code, 2, "{}", e.stderr);
    assert!(e.stderr.contains("--layer 7"), "{}", e.stderr);
    let e = lamina(&["ls", &r, "../../etc"]).fails();
    assert_eq!(e.code, 2, "{}", e.stderr);
}

/// What `ls` and `cat` say an image holds, in [`tree_listing`]'s shape: every entry's type, a
/// file's sha256 (its bytes from `cat`) and mode, a symlink's target.
fn lamina_listing(r: &str) -> BTreeMap<String, String> {
    let out = lamina(&["ls", "-q", r, "--json"]).ok();
    let mut got = BTreeMap::new();
    for e in json_of(&out.stdout)["entries"].as_array().unwrap() {
        let path = e["path"].as_str().unwrap().to_string();
        let v = match e["type"].as_str().unwrap() {
            "dir" => "dir".to_string(),
            "symlink" => format!("link {}", e["link"].as_str().unwrap()),
            "file" => {
                let b = std::process::Command::new(lamina_bin())
                    .args(["cat", "-q", r, &path])
                    .output()
                    .unwrap();
                assert!(b.status.success(), "cat {path}");
                let mode = u32::from_str_radix(e["mode"].as_str().unwrap(), 8).unwrap();
                format!("file {} {:o}", sha256(&b.stdout), mode & 0o777)
            }
            t => panic!("{path}: {t}"),
        };
        got.insert(path, v);
    }
    got
}

/// `ls` and `cat` show exactly what a container runtime lays out: podman pulls the image and
/// mounts it (overlayfs applying the layers, the whiteout, the symlink), and every path, type,
/// mode, link target and file's bytes agree with what lamina read without downloading it.
#[test]
fn ls_and_cat_agree_with_podman_image_mount() {
    harness();
    let dir = tempdir("peek-podman");
    let (r, _, _) = model_image(&dir, &repo("peek-podman"));
    let runtime = podman_listing(&r, "");
    assert!(runtime.contains_key("models/config.json"), "{runtime:?}");
    assert!(!runtime.contains_key("models/old.bin"), "{runtime:?}");
    assert_eq!(lamina_listing(&r), runtime);
}

/// `inspect` reads the weight files' headers by ranges: a safetensors' and a GGUF's facts (tensor
/// count, parameters, element type, architecture, quantization, metadata), a file with no
/// header said to have none, the total, with under 2 MiB of the 50 MiB layer served; one file
/// by PATH without the base read; the same from a layout.
#[test]
fn inspect_reads_weight_headers_by_ranges() {
    harness();
    let dir = tempdir("peek-inspect");
    let name = repo("peek-inspect");
    let (r, top, _) = model_image(&dir, &name);
    let mark = log_len(&name, &top);
    let out = lamina(&["inspect", &r, "--layer", "1", "--json"]).ok();
    let (gets, bytes) = served(&name, &top, mark);
    assert!(
        bytes <= 2 << 20,
        "inspect read {bytes} bytes in {gets} GETs"
    );
    let j = json_of(&out.stdout);
    let files = j["files"].as_array().unwrap();
    let by = |p: &str| {
        files
            .iter()
            .find(|f| f["path"] == p)
            .unwrap_or_else(|| panic!("{p}: {j:#}"))
    };
    let st = by("models/model.safetensors");
    assert_eq!(st["format"], "safetensors");
    assert_eq!(st["tensors"], 1);
    assert_eq!(st["params"], 2560 << 10);
    assert_eq!(st["precisions"][0]["dtype"], "float32");
    assert_eq!(st["metadata"]["format"], "pt");
    let g = by("models/tiny.gguf");
    assert_eq!(g["format"], "gguf");
    assert_eq!(g["tensors"], 2);
    assert_eq!(g["params"], 320 * 64 + 64);
    assert_eq!(g["architecture"], "llama");
    assert_eq!(g["quantization"], "Q4_K_M");
    assert_eq!(g["metadata"]["tokenizer.ggml.tokens"], "[3 × string]");
    let shard = by("models/shard-2.safetensors");
    assert_eq!(
        shard["format"],
        serde_json::Value::Null,
        "random bytes: no header"
    );
    assert_eq!(j["total"]["params"], (2560 << 10) + 320 * 64 + 64);

    // one file by its path: found from the top, the base not read
    let m = raw_manifest(&r, None);
    let base = m["layers"][0]["digest"].as_str().unwrap().to_string();
    let before = log_len(&name, &base);
    let out = lamina(&["inspect", &r, "/models/tiny.gguf"]).ok();
    assert!(
        out.stdout
            .contains("gguf, 2 tensors, 20.5K parameters, llama, Q4_K_M"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("general.architecture = llama"),
        "{}",
        out.stdout
    );
    assert_eq!(log_len(&name, &base), before, "the base layer was read");

    // from a layout
    let lay = format!("oci:{}:v1", dir.join("layout").display());
    cmd(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{r}"),
            &lay,
        ],
    )
    .ok();
    let out = lamina(&["inspect", &lay, "models", "--json"]).ok();
    assert_eq!(json_of(&out.stdout)["total"], j["total"]);
    // nothing to inspect
    let e = lamina(&["inspect", &r, "etc"]).fails();
    assert!(
        e.stderr.contains("no safetensors or GGUF files"),
        "{}",
        e.stderr
    );
}

/// `extract --include/--exclude`: from an uncompressed layer only the matching files' bytes
/// are fetched (under 1 MiB of the 50 MiB layer for `*.json`), the gzip base is streamed and
/// filtered, whiteouts still apply, a tar output holds the same files, and the summary says
/// what was read by range.
#[test]
fn extract_include_fetches_only_the_matching_files() {
    harness();
    let dir = tempdir("peek-include");
    let name = repo("peek-include");
    let (r, top, files) = model_image(&dir, &name);
    let mark = log_len(&name, &top);
    let out = lamina_in(
        &dir,
        &[
            "extract",
            &r,
            "--all",
            "--include",
            "*.json",
            "-o",
            "./json/",
        ],
        &[],
    )
    .ok();
    let (gets, bytes) = served(&name, &top, mark);
    assert!(
        bytes <= 1 << 20,
        "extract --include read {bytes} bytes in {gets} GETs"
    );
    assert!(
        out.stderr.contains("read by Range requests"),
        "{}",
        out.stderr
    );
    let got = tree_listing(&dir.join("json"));
    let names: Vec<&str> = got.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["models", "models/config.json", "models/tokenizer.json"],
        "{got:#?}"
    );
    for f in ["models/config.json", "models/tokenizer.json"] {
        assert_eq!(
            std::fs::read(dir.join("json").join(f)).unwrap(),
            files[f],
            "{f}"
        );
    }
    // whole paths and --exclude; the whited-out file stays out, the base's file comes from
    // its (streamed) layer
    lamina_in(
        &dir,
        &[
            "extract",
            &r,
            "--all",
            "--include",
            "models/**",
            "--include",
            "etc/*",
            "--exclude",
            "*.safetensors",
            "-o",
            "./some/",
        ],
        &[],
    )
    .ok();
    let got = tree_listing(&dir.join("some"));
    assert!(got.contains_key("etc/os-release"), "{got:#?}");
    assert!(got.contains_key("models/tiny.gguf"), "{got:#?}");
    assert!(got.contains_key("models/latest"), "the symlink: {got:#?}");
    assert!(!got.keys().any(|k| k.ends_with(".safetensors")), "{got:#?}");
    assert!(
        !got.keys().any(|k| k.contains("old.bin")),
        "whited out: {got:#?}"
    );
    // a tar out holds the same
    lamina_in(
        &dir,
        &[
            "extract",
            &r,
            "--all",
            "--include",
            "*.json",
            "-o",
            "json.tar",
        ],
        &[],
    )
    .ok();
    let t = cmd("tar", &["-tf", dir.join("json.tar").to_str().unwrap()]).ok();
    let mut listed: Vec<&str> = t.stdout.lines().filter(|l| !l.ends_with('/')).collect();
    listed.sort();
    assert_eq!(listed, ["models/config.json", "models/tokenizer.json"]);
    // nothing matches: a clear error, nothing written
    let e = lamina_in(
        &dir,
        &[
            "extract",
            &r,
            "--all",
            "--include",
            "*.onnx",
            "-o",
            "./none/",
        ],
        &[],
    )
    .fails();
    assert!(e.stderr.contains("nothing under"), "{}", e.stderr);
    assert!(!dir.join("none").exists());
}

/// A registry that ignores `Range` (a front end drops the header; the answer is 200 with the
/// whole blob): `ls` and `cat` still give the right answers, say so on stderr, and stop
/// reading a blob once they have what they need.
#[test]
fn a_registry_that_ignores_ranges_is_read_as_a_stream() {
    harness();
    let dir = tempdir("peek-norange");
    let name = repo("peek-norange");
    let (r, top, files) = model_image(&dir, &name);
    let p = FaultProxy::start(PLAIN);
    p.add(
        Rule::new("GET", "/blobs/sha256:")
            .times(1000)
            .action(Action::IgnoreRange),
    );
    let via = r.replace(PLAIN, p.addr());
    let out = lamina(&["ls", &via, "models", "--layer", "1", "--json"]).ok();
    assert!(
        out.stderr
            .contains("answers Range requests with the whole blob"),
        "{}",
        out.stderr
    );
    let n = json_of(&out.stdout)["entries"].as_array().unwrap().len();
    assert_eq!(n, files.len() + 1, "{}", out.stdout);
    let out = std::process::Command::new(lamina_bin())
        .args(["cat", &via, "models/tokenizer.json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, files["models/tokenizer.json"]);
    assert!(p.requests().iter().any(|l| l.fault.is_some()));
    let _ = top;
}

/// `ls` and `cat` on model artifacts: a ModelPack's raw layers are listed from their
/// annotations without a byte of them read, a file of one is one request; a ModelKit's tars
/// are walked by ranges.
#[test]
fn ls_and_cat_on_model_artifacts() {
    harness();
    let dir = tempdir("peek-artifacts");
    let name = repo("peek-mp");
    let (mp, want) = artifacts::modelpack(PLAIN, &name, false, &dir);
    let m = raw_manifest(&mp, None);
    let raw: Vec<String> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["mediaType"].as_str().unwrap().ends_with(".raw"))
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    assert!(!raw.is_empty());
    let marks: Vec<usize> = raw.iter().map(|d| log_len(&name, d)).collect();
    let out = lamina(&["ls", &mp, "--json"]).ok();
    let j = json_of(&out.stdout);
    let listed: BTreeMap<String, u64> = j["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "file")
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_string(),
                e["size"].as_u64().unwrap(),
            )
        })
        .collect();
    let files: Vec<&String> = want
        .iter()
        .filter(|(_, v)| v.starts_with("file"))
        .map(|(k, _)| k)
        .collect();
    for f in &files {
        assert!(listed.contains_key(f.as_str()), "{f} in {listed:?}");
    }
    for (d, mark) in raw.iter().zip(&marks) {
        assert_eq!(served(&name, d, *mark).0, 0, "raw layer {d} was read by ls");
    }
    // cat of a raw file and of a file in the tar layer
    for f in files.iter().take(3) {
        let out = std::process::Command::new(lamina_bin())
            .args(["cat", &mp, f])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            sha256(&out.stdout),
            want[f.as_str()].split_whitespace().nth(1).unwrap(),
            "{f}"
        );
    }

    let kname = repo("peek-kit");
    let (kit, kwant) = artifacts::modelkit(PLAIN, &kname, &dir);
    let out = lamina(&["ls", &kit, "--json"]).ok();
    let j = json_of(&out.stdout);
    let listed: Vec<&str> = j["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    for (k, v) in &kwant {
        if v.starts_with("file") {
            assert!(listed.contains(&k.as_str()), "{k} in {listed:?}");
        }
    }
}

/// `cat` of a 40 MiB file through cut and stalled connections: a download cut midway (the
/// front end resets it after 1 MiB) goes on from where it was cut, a stalled one times out and
/// is retried, and the bytes are the file's; nothing hangs.
#[test]
fn cat_goes_on_through_cut_and_stalled_downloads() {
    harness();
    let dir = tempdir("peek-faults");
    let name = repo("peek-faults");
    let (r, top, files) = model_image(&dir, &name);
    let want = &files["models/shard-2.safetensors"];
    for action in [
        Action::ResetResponse(1 << 20),
        Action::StallResponse(1 << 20, Duration::from_secs(120)),
    ] {
        let p = FaultProxy::start(PLAIN);
        let via = r.replace(PLAIN, p.addr());
        // an undisturbed run counts the header windows read before the file's own download
        let clean = std::process::Command::new(lamina_bin())
            .args(["cat", "-q", &via, "models/shard-2.safetensors"])
            .output()
            .unwrap();
        assert!(clean.stdout == *want);
        let gets = p
            .requests()
            .iter()
            .filter(|l| l.path.contains(&top))
            .count() as u32;
        p.clear();
        p.add(
            Rule::new("GET", &format!("/blobs/{top}"))
                .nth(gets)
                .action(action.clone()),
        );
        let t0 = Instant::now();
        let out = std::process::Command::new(lamina_bin())
            .args(["cat", "--timeout", "2", &via, "models/shard-2.safetensors"])
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "{action:?}: {:?}",
            t0.elapsed()
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{action:?}: {err}");
        let log: Vec<String> = p
            .requests()
            .iter()
            .map(|l| format!("{} {} {:?}", l.method, l.path, l.fault))
            .collect();
        assert!(
            err.contains("cut at byte") || err.contains("retrying") || err.contains("timed out"),
            "{action:?}: {err} {log:#?}"
        );
        assert_eq!(out.stdout.len(), want.len(), "{action:?}");
        assert!(out.stdout == *want, "{action:?}: other bytes");
        assert!(
            p.requests().iter().any(|l| l.fault.is_some()),
            "{action:?} never applied"
        );
    }
}

/// The same reads on the image recompressed to zstd by `lamina zstd` (its base layer becomes
/// zstd, read as a stream) and copied as a Docker v2s2 image by skopeo (Docker media types).
#[test]
fn ls_and_cat_read_zstd_layers_and_docker_images() {
    harness();
    let dir = tempdir("peek-zstd");
    let name = repo("peek-zstd");
    let (r, _, files) = model_image(&dir, &name);
    let z = format!("{PLAIN}/{name}:zstd");
    lamina(&["zstd", "-q", &r, &z]).ok();
    let m = raw_manifest(&z, None);
    assert!(
        m["layers"][0]["mediaType"]
            .as_str()
            .unwrap()
            .ends_with("zstd"),
        "{m:#}"
    );
    let d = format!("{PLAIN}/{name}:docker");
    cmd(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--format",
            "v2s2",
            &format!("docker://{r}"),
            &format!("docker://{d}"),
        ],
    )
    .ok();
    assert!(raw_manifest(&d, None)["mediaType"]
        .as_str()
        .unwrap()
        .contains("docker"));
    for img in [&z, &d] {
        let out = lamina(&["ls", img, "--json"]).ok();
        let j = json_of(&out.stdout);
        let paths: Vec<&str> = j["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap())
            .collect();
        assert!(paths.contains(&"etc/os-release"), "{img}: {paths:?}");
        assert!(
            !paths.iter().any(|p| p.contains("old.bin")),
            "{img}: {paths:?}"
        );
        let out = lamina(&["cat", img, "etc/os-release"]).ok();
        assert_eq!(out.stdout, "ID=test\n", "{img}");
        let out = std::process::Command::new(lamina_bin())
            .args(["cat", img, "models/config.json"])
            .output()
            .unwrap();
        assert_eq!(out.stdout, files["models/config.json"], "{img}");
    }
}

/// Pushes `m` (a manifest, edited) as `registry/repo:tag` with curl.
fn put_manifest(repo: &str, tag: &str, m: &serde_json::Value, dir: &Path) {
    let f = dir.join(format!("manifest-{tag}.json"));
    std::fs::write(&f, serde_json::to_vec(m).unwrap()).unwrap();
    cmd(
        "curl",
        &[
            "-sSf",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
            "--data-binary",
            &format!("@{}", f.display()),
            &format!("http://{PLAIN}/v2/{repo}/manifests/{tag}"),
        ],
    )
    .ok();
}

/// `affix` of a folder into an uncompressed layer records its table of contents in the layer's
/// annotation: `ls` of that layer then makes no request at all and lists what a walk of the
/// tar lists (the same image with the annotation taken out), `cat` reads only the file's range,
/// and a table that names another layer (a rewritten layer that kept it) is ignored.
#[test]
fn a_table_of_contents_written_by_affix_makes_reads_free() {
    harness();
    let dir = tempdir("peek-toc");
    models::hf_folder(&dir.join("model"));
    let name = repo("peek-toc");
    let r = format!("{PLAIN}/{name}:v1");
    let base = format!("{PLAIN}/fixtures/base:latest");
    lamina_in(
        &dir,
        &[
            "affix",
            "-q",
            "--base",
            &base,
            "--dest",
            &r,
            "--compression",
            "none",
            "./model/",
        ],
        &[],
    )
    .ok();
    let m = raw_manifest(&r, None);
    let top = m["layers"].as_array().unwrap().len() - 1;
    let layer = m["layers"][top]["digest"].as_str().unwrap().to_string();
    let toc = m["layers"][top]["annotations"]["dev.lamina.toc.v1"]
        .as_str()
        .unwrap_or_else(|| panic!("no table: {m:#}"));
    assert!(toc.contains(&layer), "{toc}");
    let n = top.to_string();
    let listing = |img: &str| {
        let j = json_of(&lamina(&["ls", img, "--layer", &n, "--json"]).ok().stdout);
        (
            j["entries"].clone(),
            j["read"]["rangeRequests"].as_u64().unwrap(),
        )
    };
    let (with, requests) = listing(&r);
    assert_eq!(requests, 0, "a table read, no request");
    // the same layer with no table: the walk finds the same entries
    let mut bare = m.clone();
    bare["layers"][top]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    put_manifest(&name, "bare", &bare, &dir);
    let (walked, requests) = listing(&format!("{PLAIN}/{name}:bare"));
    assert!(requests > 0);
    assert_eq!(with, walked);
    // cat: only the file's own range of the layer
    let mark = log_len(&name, &layer);
    let out = std::process::Command::new(lamina_bin())
        .args(["cat", &r, "src/weights/unet/config.json"])
        .output()
        .unwrap();
    assert_eq!(
        out.stdout,
        std::fs::read(dir.join("model/unet/config.json")).unwrap()
    );
    assert_eq!(served(&name, &layer, mark).0, 1, "one GET: the file");
    // a table that names another layer is not used (and the answer is still right)
    let mut stale = m.clone();
    let other = toc.replace(&layer, &sha256(b"another layer"));
    stale["layers"][top]["annotations"]["dev.lamina.toc.v1"] = other.into();
    put_manifest(&name, "stale", &stale, &dir);
    let (got, requests) = listing(&format!("{PLAIN}/{name}:stale"));
    assert!(requests > 0, "a stale table was used");
    assert_eq!(got, walked);
}

/// `skopeo copy` with a cold blob-info cache of its own (a tmpfs over its cache directory in a
/// private mount namespace, or an empty `XDG_DATA_HOME`), so that it compresses what it is
/// asked to rather than reusing blobs it saw before.
fn skopeo_cold(args: &[&str], dir: &Path) {
    // skopeo's zstd:chunked writer fails now and then under load ("writing blob: Patch ...:
    // happened during read: short write", its own compressor's pipe): that one is tried again
    for _ in 0..2 {
        let out = skopeo_cold_once(args, dir);
        if out.status.success() {
            return;
        }
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(e.contains("short write"), "skopeo {args:?}: {e}");
        eprintln!("skopeo {args:?} failed ({e}); once more");
    }
    let out = skopeo_cold_once(args, dir);
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn skopeo_cold_once(args: &[&str], dir: &Path) -> std::process::Output {
    let root = cmd("id", &["-u"]).ok().stdout.trim() == "0";
    let mut c = if root {
        let mut c = std::process::Command::new("unshare");
        c.args([
            "-m",
            "sh",
            "-c",
            "mount -t tmpfs tmpfs /var/lib/containers/cache && exec skopeo \"$@\"",
            "sh",
        ]);
        std::fs::create_dir_all("/var/lib/containers/cache").unwrap();
        c
    } else {
        let mut c = std::process::Command::new("skopeo");
        c.env("XDG_DATA_HOME", dir.join("xdg"));
        c
    };
    c.args(args).output().unwrap()
}

/// The entries of `ls --json` without what reading them cost.
fn entries_of(r: &str) -> (Vec<serde_json::Value>, serde_json::Value) {
    let j = json_of(&lamina(&["ls", "-q", r, "--json"]).ok().stdout);
    (j["entries"].as_array().unwrap().clone(), j["read"].clone())
}

/// A zstd:chunked image, as `skopeo copy --dest-compress-format zstd:chunked` (podman's
/// `--compression-format zstd:chunked`) makes it: `ls` reads each layer's table of contents
/// with one range request and lists what a walk of the original image lists; `cat`,
/// `inspect` and `extract --include` fetch only a file's frames, and its content is checked
/// against the table's digest; podman mounts the same files. A table that does not match its
/// checksum, and a file whose frames do not match the table's digest (a lying layer), are
/// errors that name them.
#[test]
fn zstd_chunked_layers_are_read_by_their_table_of_contents() {
    harness();
    let dir = tempdir("peek-chunked");
    let name = repo("peek-chunked");
    let (r, _, files) = model_image(&dir, &name);
    // another repository: skopeo would keep a blob the destination has as it is
    let zname = format!("{name}-z");
    let z = format!("{PLAIN}/{zname}:chunked");
    skopeo_cold(
        &[
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--dest-compress-format",
            "zstd:chunked",
            &format!("docker://{r}"),
            &format!("docker://{z}"),
        ],
        &dir,
    );
    let m = raw_manifest(&z, None);
    let layers = m["layers"].as_array().unwrap();
    for l in layers {
        let ann = l["annotations"].as_object().cloned().unwrap_or_default();
        assert!(
            ann.keys()
                .any(|k| k.ends_with("zstd-chunked.manifest-position")),
            "skopeo wrote no zstd:chunked layer: {l}"
        );
    }
    let top = layers[1]["digest"].as_str().unwrap().to_string();
    let top_size = layers[1]["size"].as_u64().unwrap();

    // ls: one range per layer (the tables), nothing streamed, the walk's entries
    let (want, _) = entries_of(&r);
    let (got, read) = entries_of(&z);
    assert_eq!(got, want);
    assert_eq!(read["rangeRequests"], 2, "{read}");
    assert_eq!(read["streamedLayers"], serde_json::json!([]), "{read}");

    // cat: the table and the file's frames, the content checked
    cat_each(
        &z,
        (&zname, &top),
        &files,
        (2, "the table and the frames"),
        |n| n + (64 << 10),
    );

    // inspect: the same facts as from the uncompressed original
    assert_eq!(facts(&z), facts(&r));

    // extract --include: the matching files' frames only
    let out = extract_json(&z, (&zname, &top), top_size, &files, &dir);
    assert!(!out.join("model.safetensors").exists());

    // a container runtime sees the same files
    assert_eq!(lamina_listing(&z), podman_listing(&z, ""));

    // a table that does not match its checksum
    let mut bad = m.clone();
    let ann = bad["layers"][1]["annotations"].as_object_mut().unwrap();
    let key = ann
        .keys()
        .find(|k| k.ends_with("manifest-checksum"))
        .unwrap()
        .clone();
    ann.insert(key, format!("sha256:{}", "0".repeat(64)).into());
    put_manifest(&zname, "badtable", &bad, &dir);
    let e = lamina(&["ls", &format!("{PLAIN}/{zname}:badtable")]).fails();
    assert!(
        e.stderr.contains("table of contents of layer 1"),
        "{}",
        e.stderr
    );
    assert!(e.stderr.contains("digest"), "{}", e.stderr);

    // a lying layer: the blob with a table appended that gives config.json another digest
    let blob = cmd(
        "curl",
        &[
            "-sSf",
            &format!("http://{PLAIN}/v2/{zname}/blobs/{top}"),
            "-o",
            dir.join("top.zst").to_str().unwrap(),
        ],
    );
    drop(blob);
    let mut layer = std::fs::read(dir.join("top.zst")).unwrap();
    let pos_key = ann_key(&m["layers"][1], "manifest-position");
    let pos: Vec<u64> = m["layers"][1]["annotations"][&pos_key]
        .as_str()
        .unwrap()
        .split(':')
        .map(|x| x.parse().unwrap())
        .collect();
    let table = &layer[pos[0] as usize..(pos[0] + pos[1]) as usize];
    std::fs::write(dir.join("table.zst"), table).unwrap();
    let json = cmd("zstd", &["-dc", dir.join("table.zst").to_str().unwrap()])
        .ok()
        .stdout;
    let mut t: serde_json::Value = serde_json::from_str(&json).unwrap();
    for e in t["entries"].as_array_mut().unwrap() {
        if e["name"] == "models/config.json" {
            e["digest"] = format!("sha256:{}", "1".repeat(64)).into();
        }
    }
    std::fs::write(dir.join("lie.json"), serde_json::to_vec(&t).unwrap()).unwrap();
    cmd(
        "zstd",
        &[
            "-qf",
            dir.join("lie.json").to_str().unwrap(),
            "-o",
            dir.join("lie.zst").to_str().unwrap(),
        ],
    )
    .ok();
    let lie = std::fs::read(dir.join("lie.zst")).unwrap();
    let at = layer.len();
    layer.extend_from_slice(&lie);
    let lying = push_blob(PLAIN, &zname, &layer, &dir);
    let mut bad = m.clone();
    let l = &mut bad["layers"][1];
    l["digest"] = lying.clone().into();
    l["size"] = layer.len().into();
    let chk_key = ann_key(&m["layers"][1], "manifest-checksum");
    l["annotations"][&pos_key] = format!(
        "{at}:{}:{}:1",
        lie.len(),
        serde_json::to_vec(&t).unwrap().len()
    )
    .into();
    l["annotations"][&chk_key] = sha256(&lie).into();
    put_manifest(&zname, "lying", &bad, &dir);
    let liar = format!("{PLAIN}/{zname}:lying");
    let e = lamina(&["cat", &liar, "models/config.json"]).fails();
    assert!(e.stderr.contains("models/config.json"), "{}", e.stderr);
    assert!(e.stderr.contains("digest"), "{}", e.stderr);
    let out = dir.join("lied");
    let e = lamina(&[
        "extract",
        &liar,
        "--path",
        "/models",
        "--include",
        "config.json",
        "-o",
        &format!("{}/", out.display()),
    ])
    .fails();
    assert!(e.stderr.contains("digest"), "{}", e.stderr);
    assert!(
        !out.join("config.json").exists(),
        "a file that failed its check was left"
    );
}

/// `cat` of each of `files` from `z` gives its bytes, in `gets` GETs of the layer `blob` of
/// `repo` (`what` says which), serving at most `most(size)` bytes.
fn cat_each(
    z: &str,
    (repo, blob): (&str, &str),
    files: &std::collections::BTreeMap<String, Vec<u8>>,
    (gets, what): (usize, &str),
    most: impl Fn(u64) -> u64,
) {
    for (path, bytes) in files {
        let mark = log_len(repo, blob);
        let out = std::process::Command::new(lamina_bin())
            .args(["cat", z, path])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout == *bytes, "{path}: other bytes");
        let (got, served_bytes) = served(repo, blob, mark);
        assert_eq!(got, gets, "{path}: {what}");
        assert!(
            served_bytes <= most(bytes.len() as u64),
            "{path}: {served_bytes} bytes served for {} bytes",
            bytes.len()
        );
    }
}

/// What `inspect --json` says of `r`'s weight files (not what it read, nor the image's name).
fn facts(r: &str) -> serde_json::Value {
    let mut j = json_of(&lamina(&["inspect", "-q", r, "--json"]).ok().stdout);
    j.as_object_mut().unwrap().remove("read");
    j.as_object_mut().unwrap().remove("image");
    j
}

/// `extract z --path /models --include '*.json'` into `dir/out` reads less than 1/8 of the
/// layer `blob` of `repo` (`size` bytes) and writes config.json and tokenizer.json as `files`
/// hold them; gives the directory.
fn extract_json(
    z: &str,
    (repo, blob): (&str, &str),
    size: u64,
    files: &std::collections::BTreeMap<String, Vec<u8>>,
    dir: &Path,
) -> std::path::PathBuf {
    let mark = log_len(repo, blob);
    let out = dir.join("out");
    lamina(&[
        "extract",
        z,
        "--path",
        "/models",
        "--include",
        "*.json",
        "-o",
        &format!("{}/", out.display()),
    ])
    .ok();
    let (_, served_bytes) = served(repo, blob, mark);
    assert!(served_bytes < size / 8, "{served_bytes} of {size}");
    for f in ["config.json", "tokenizer.json"] {
        assert!(
            std::fs::read(out.join(f)).unwrap() == files[&format!("models/{f}")],
            "{f}"
        );
    }
    out
}

/// The name of `layer`'s zstd:chunked annotation ending in `suffix` (old or new prefix).
fn ann_key(layer: &serde_json::Value, suffix: &str) -> String {
    layer["annotations"]
        .as_object()
        .unwrap()
        .keys()
        .find(|k| k.ends_with(suffix))
        .unwrap()
        .clone()
}

/// An eStargz image (its model layer converted by stargz-snapshotter's own library, the base
/// left gzip): `ls` reads the layer's footer and table (two ranges) and lists exactly what a
/// walk of its tar stream lists (the same image through a front end that ignores `Range`);
/// `cat` of each file is its own members, its content checked; `inspect` and `extract
/// --include` read only what they need; podman mounts what `ls` and `cat` show; a table that
/// is not the annotated one is an error naming it.
#[test]
fn estargz_layers_are_read_by_their_table_of_contents() {
    harness();
    let dir = tempdir("peek-estargz");
    let name = repo("peek-estargz");
    let (r, top, files) = model_image(&dir, &name);
    // the model layer as eStargz, in a copy of the image
    let tar = cmd(
        "curl",
        &[
            "-sSf",
            "-o",
            dir.join("top.tar").to_str().unwrap(),
            &format!("http://{PLAIN}/v2/{name}/blobs/{top}"),
        ],
    );
    drop(tar);
    let (blob, toc, diff) = estargz(&std::fs::read(dir.join("top.tar")).unwrap(), &dir);
    // (its tar is not the original's: eStargz adds its landmark and table, and orders files)
    let esgz = push_blob(PLAIN, &name, &blob, &dir);
    let mut m = raw_manifest(&r, None);
    let cd = m["config"]["digest"].as_str().unwrap().to_string();
    let out = cmd(
        "curl",
        &["-sSf", &format!("http://{PLAIN}/v2/{name}/blobs/{cd}")],
    )
    .ok();
    let mut config: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    config["rootfs"]["diff_ids"][1] = diff.into();
    let config = serde_json::to_vec(&config).unwrap();
    m["config"]["digest"] = push_blob(PLAIN, &name, &config, &dir).into();
    m["config"]["size"] = config.len().into();
    m["layers"][1] = serde_json::json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": esgz, "size": blob.len(),
        "annotations": {"containerd.io/snapshot/stargz/toc.digest": toc},
    });
    put_manifest(&name, "esgz", &m, &dir);
    let z = format!("{PLAIN}/{name}:esgz");

    // ls: the footer and the table; the same entries as a walk of the stream
    let (got, read) = entries_of(&z);
    assert_eq!(read["rangeRequests"], 2, "{read}");
    assert_eq!(read["streamedLayers"], serde_json::json!([0]), "{read}");
    let p = FaultProxy::start(PLAIN);
    p.add(
        Rule::new("GET", &format!("/blobs/{esgz}"))
            .times(u32::MAX)
            .action(Action::IgnoreRange),
    );
    let (walked, read) = entries_of(&z.replace(PLAIN, p.addr()));
    assert_eq!(read["streamedLayers"], serde_json::json!([0, 1]), "{read}");
    assert_eq!(got, walked);
    let paths: Vec<&str> = got.iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert!(paths.contains(&"stargz.index.json"), "{paths:?}");
    for f in files.keys() {
        assert!(paths.contains(&f.as_str()), "{f} in {paths:?}");
    }

    // cat: footer, table and the file's members; the content checked
    // (gzip members of random bytes are a little larger than the bytes)
    let what = (3, "the footer, the table and the file");
    cat_each(&z, (&name, &esgz), &files, what, |n| {
        n * 101 / 100 + (64 << 10)
    });

    // inspect: the original's facts
    assert_eq!(facts(&z), facts(&r));

    // extract --include: the matching files' members only
    extract_json(&z, (&name, &esgz), blob.len() as u64, &files, &dir);

    // a container runtime sees the same files (the table's own entry too)
    assert_eq!(lamina_listing(&z), podman_listing(&z, ""));

    // a table that is not the annotated one
    let mut bad = m.clone();
    bad["layers"][1]["annotations"]["containerd.io/snapshot/stargz/toc.digest"] =
        format!("sha256:{}", "0".repeat(64)).into();
    put_manifest(&name, "badtoc", &bad, &dir);
    let e = lamina(&["ls", &format!("{PLAIN}/{name}:badtoc")]).fails();
    assert!(
        e.stderr.contains("eStargz table of contents of layer 1"),
        "{}",
        e.stderr
    );
}
