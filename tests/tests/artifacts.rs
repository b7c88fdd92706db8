//! Model artifacts made by hand as their own tools make them (ModelPack with current and
//! legacy names, a KitOps ModelKit, Docker model artifacts): `lamina layers` names each
//! layer's kind and file, `lamina extract` gives every file at its path byte for byte (to a
//! directory and as a tar that GNU tar unpacks), `--kind` picks, and hostile paths are refused.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::Path;

use lamina_tests::artifacts::{self, Layer};
use lamina_tests::models;
use lamina_tests::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `extract REF -o DIR/`, then as a tar unpacked by GNU tar: both trees.
fn extract_both(
    r: &str,
    dir: &Path,
    extra: &[&str],
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let out = dir.join(format!(
        "out-{}",
        sha256(format!("{r}{extra:?}").as_bytes())
    ));
    let mut args = vec!["extract", r, "-o"];
    let o = format!("{}/", out.display());
    args.push(&o);
    args.extend_from_slice(extra);
    lamina(&args).ok();
    let tar = dir.join(format!("{}.tar", out.display()));
    let mut targs = vec!["extract", r, "-o", s(&tar)];
    targs.extend_from_slice(extra);
    lamina(&targs).ok();
    let x = dir.join(format!("{}-x", out.display()));
    std::fs::create_dir_all(&x).unwrap();
    cmd("tar", &["-xf", s(&tar), "-C", s(&x)]).ok();
    (tree_listing(&out), tree_listing(&x))
}

/// Files only (GNU tar makes the directories a tar names implicitly with other modes).
fn files(t: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    t.iter()
        .filter(|(_, v)| v.starts_with("file"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[test]
fn every_format_lists_and_extracts_byte_for_byte() {
    harness();
    let dir = tempdir("artifacts-all");
    let mut cases = Vec::new();
    for legacy in [false, true] {
        let (r, want) = artifacts::modelpack(PLAIN, &repo(&format!("mp-{legacy}")), legacy, &dir);
        cases.push((
            r,
            want,
            if legacy {
                "modelpack (cnai names)"
            } else {
                "modelpack"
            },
        ));
    }
    let (r, want) = artifacts::modelkit(PLAIN, &repo("kit"), &dir);
    cases.push((r, want, "modelkit"));
    let [(g, gw), (st, sw)] = artifacts::docker_models(PLAIN, &repo("docker"), &dir);
    cases.push((g, gw, "docker-model v0.1"));
    cases.push((st, sw, "docker-model v0.2"));
    for (r, want, format) in &cases {
        let v: serde_json::Value =
            serde_json::from_str(&lamina(&["layers", r, "--json"]).ok().stdout).unwrap();
        let img = &v["images"][0];
        assert_eq!(img["format"], *format, "{r}");
        for l in img["layers"].as_array().unwrap() {
            assert!(l["kind"].is_string(), "{r}: {l}");
            assert!(l.get("problem").is_none(), "{r}: {l}");
        }
        let text = lamina(&["layers", r]).ok().stdout;
        assert!(text.contains(&format!("{format} artifact")), "{text}");
        let (d, t) = extract_both(r, &dir, &[]);
        assert_eq!(d, *want, "{r}: the directory");
        assert_eq!(files(&t), files(want), "{r}: the tar");
    }
    // each one as a ModelPack over its own blobs: mounts only, the same files, a valid config
    for (r, want, format) in &cases[1..] {
        let to = repo(&format!("to-mp-{}", &sha256(format.as_bytes())[7..15]));
        let dest = format!("{PLAIN}/{to}:v1");
        lamina(&["convert", r, &dest, "--to", "modelpack"]).ok();
        let (sent, mounts) = uploads(&to);
        assert_eq!(
            sent.len(),
            1,
            "{format}: only the config is uploaded: {sent:#?}"
        );
        assert!(!mounts.is_empty(), "{format}");
        assert_schema_valid(&config_of(&dest), &dir);
        let (d, _) = extract_both(&dest, &dir, &[]);
        assert_eq!(files(&d), files(want), "{format} as a ModelPack");
    }
    // the ModelKit as a Docker model: each tar of one file unwrapped to the raw file, the code
    // folder's tar of two files kept a tar (`dir.tar`), with a warning naming it
    let kit_docker = format!("{PLAIN}/{}:v1", repo("kit-to-docker"));
    let out = lamina(&["convert", &cases[2].0, &kit_docker, "--to", "docker"]).ok();
    assert!(
        out.stderr
            .contains("src holds more than one file: it goes as a folder's tar"),
        "{}",
        out.stderr
    );
    let m = raw_manifest(&kit_docker, None);
    let types: BTreeMap<&str, &str> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["annotations"]["org.cncf.model.filepath"]
                    .as_str()
                    .unwrap(),
                l["mediaType"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        types["src"], "application/vnd.docker.ai.dir.tar",
        "{types:?}"
    );
    assert_eq!(
        types["models/tiny.gguf"], "application/vnd.docker.ai.gguf.v3",
        "{types:?}"
    );
    assert_eq!(
        types["README.md"], "application/vnd.docker.ai.model.file",
        "{types:?}"
    );
    let (d, t) = extract_both(&kit_docker, &dir, &[]);
    assert_eq!(files(&d), files(&cases[2].1), "the kit as a Docker model");
    assert_eq!(
        files(&t),
        files(&cases[2].1),
        "the kit as a Docker model, by GNU tar"
    );
    // the ModelPack's facts and kinds, as the config and media types say them
    let v: serde_json::Value =
        serde_json::from_str(&lamina(&["layers", &cases[0].0, "--json"]).ok().stdout).unwrap();
    let img = &v["images"][0];
    assert_eq!(img["model"]["name"], "tiny-diffuser");
    assert_eq!(img["model"]["format"], "safetensors");
    let kinds: Vec<&str> = img["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["weight", "weight", "config", "config", "code", "doc"]
    );
    assert_eq!(
        img["layers"][0]["path"],
        "unet/diffusion_pytorch_model.safetensors"
    );
    assert_eq!(img["layers"][0]["packing"], "raw");
    // --kind picks; --path narrows (and strips), as for images
    let (d, _) = extract_both(&cases[0].0, &dir, &["--kind", "weight"]);
    assert_eq!(
        d.keys()
            .filter(|k| d[*k].starts_with("file"))
            .cloned()
            .collect::<Vec<_>>(),
        [
            "unet/diffusion_pytorch_model.safetensors",
            "vae/diffusion_pytorch_model.safetensors"
        ]
    );
    let (d, _) = extract_both(&cases[0].0, &dir, &["--path", "vae"]);
    assert_eq!(
        d.keys().cloned().collect::<Vec<_>>(),
        ["diffusion_pytorch_model.safetensors"]
    );
    // a kind that is not there, and one that does not exist
    let e = lamina(&[
        "extract",
        &cases[2].0,
        "--kind",
        "prompt",
        "-o",
        s(&dir.join("none/")),
    ]);
    assert_eq!(e.code, 1, "{}", e.stderr);
    assert!(
        e.stderr.contains("no prompt layers")
            && e.stderr.contains("it has: code, dataset, doc, weight"),
        "{}",
        e.stderr
    );
    let e = lamina(&[
        "extract",
        &cases[2].0,
        "--kind",
        "weights2",
        "-o",
        s(&dir.join("none/")),
    ]);
    assert_eq!(e.code, 2, "{}", e.stderr);
    // --kind on an image is a usage error
    let e = lamina(&[
        "extract",
        &format!("{PLAIN}/fixtures/base:latest"),
        "--kind",
        "weight",
        "-o",
        s(&dir.join("none/")),
    ]);
    assert_eq!(e.code, 2, "{}", e.stderr);
    assert!(!dir.join("none").exists());
}

/// Paths an artifact names come from whoever pushed it: absolute, climbing, the same file twice,
/// a tar entry climbing out, a whiteout in a tar layer, a tar file over a raw layer's file.
/// Each is skipped with a warning naming it; the rest is extracted; nothing lands outside.
#[test]
fn hostile_artifact_paths_are_refused_and_nothing_escapes() {
    harness();
    let dir = tempdir("artifacts-hostile");
    let good = b"good weights".to_vec();
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/.wh.good.bin"), b"").unwrap();
    std::fs::write(src.join("good.bin"), b"a different good.bin").unwrap();
    let wh = artifacts::gnu_tar(&src, &["sub", "good.bin"], false);
    // a tar whose member climbs out (GNU tar keeps it with -P)
    std::fs::write(dir.join("escape.txt"), b"escaped").unwrap();
    let evil_tar_path = dir.join("evil.tar");
    cmd(
        "tar",
        &[
            "-C",
            s(&src),
            "-P",
            "-cf",
            s(&evil_tar_path),
            "../escape.txt",
        ],
    )
    .ok();
    let evil_tar = std::fs::read(&evil_tar_path).unwrap();
    let fp = "org.cncf.model.filepath";
    let raw = "application/vnd.cncf.model.weight.v1.raw";
    let layers = vec![
        Layer::new(raw, good.clone(), &[(fp, "good.bin")]),
        Layer::new(raw, b"abs".to_vec(), &[(fp, "/etc/lamina-test-abs")]),
        Layer::new(raw, b"climb".to_vec(), &[(fp, "../../lamina-test-climb")]),
        Layer::new(raw, b"twice".to_vec(), &[(fp, "./good.bin")]),
        Layer::new(raw, b"nul".to_vec(), &[(fp, "a\\b")]),
        Layer::new("application/vnd.cncf.model.doc.v1.tar", wh, &[]),
        Layer::new("application/vnd.cncf.model.code.v1.tar", evil_tar, &[]),
    ];
    let config = serde_json::json!({"descriptor": {"name": "hostile"}, "config": {}, "modelfs": {"type": "layers", "diffIds": []}});
    let r = artifacts::push_artifact(
        PLAIN,
        &repo("hostile"),
        "v1",
        Some("application/vnd.oci.image.manifest.v1+json"),
        Some("application/vnd.cncf.model.manifest.v1+json"),
        "application/vnd.cncf.model.config.v1+json",
        &serde_json::to_vec(&config).unwrap(),
        &layers,
        &dir,
    );
    let listing = lamina(&["layers", &r]).ok().stdout;
    assert!(
        listing.contains("(refused: the path is absolute"),
        "{listing}"
    );
    assert!(
        listing.contains("(refused: the path climbs out"),
        "{listing}"
    );
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let out = lamina_in(&work, &["extract", &r, "-o", "out/"], &[]).ok();
    for why in [
        "the path is absolute",
        "the path climbs out",
        "another layer is the file \"good.bin\" already",
        "the path holds a backslash",
        "a model artifact's layer deletes nothing",
        "layer 0 has that file",
        "climbs out of the image root",
    ] {
        assert!(out.stderr.contains(why), "{why}: {}", out.stderr);
    }
    let t = tree_listing(&work.join("out"));
    assert_eq!(
        t.get("good.bin").map(String::as_str),
        Some(format!("file {} 644", sha256(&good)).as_str()),
        "{t:?}"
    );
    assert!(!t.keys().any(|k| k.contains(".wh.")), "{t:?}");
    assert!(!Path::new("/etc/lamina-test-abs").exists());
    assert!(!dir.join("lamina-test-climb").exists() && !work.join("../lamina-test-climb").exists());
    // the escaping member: only the original outside file, unchanged
    assert_eq!(std::fs::read(dir.join("escape.txt")).unwrap(), b"escaped");
    assert!(!work.join("escape.txt").exists());
}

/// A raw layer whose stated diff_id is not its digest, and one whose bytes the registry got
/// wrong: a clear error, exit 1, and no output directory.
#[test]
fn a_raw_layer_that_is_not_what_the_config_says_leaves_nothing() {
    harness();
    let dir = tempdir("artifacts-lying");
    let w = b"weights".to_vec();
    let layers = vec![Layer::new(
        "application/vnd.cncf.model.weight.v1.raw",
        w,
        &[("org.cncf.model.filepath", "w.bin")],
    )];
    let config = serde_json::json!({"descriptor": {}, "config": {}, "modelfs": {"type": "layers",
        "diffIds": [artifacts::digest(b"something else")]}});
    let r = artifacts::push_artifact(
        PLAIN,
        &repo("lying"),
        "v1",
        Some("application/vnd.oci.image.manifest.v1+json"),
        Some("application/vnd.cncf.model.manifest.v1+json"),
        "application/vnd.cncf.model.config.v1+json",
        &serde_json::to_vec(&config).unwrap(),
        &layers,
        &dir,
    );
    let e = lamina(&["extract", &r, "-o", s(&dir.join("out/"))]);
    assert_eq!(e.code, 1, "{}", e.stderr);
    assert!(
        e.stderr.contains("digest mismatch") || e.stderr.contains("diff_id"),
        "{}",
        e.stderr
    );
    assert!(!dir.join("out").exists());
}

/// What a packed folder must extract to: its files, with a link inside it packed as the file it
/// names, hidden files left out.
fn packed(want: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in want {
        if k.split('/').any(|c| c.starts_with('.')) {
            continue;
        }
        if v.starts_with("file") {
            out.insert(k.clone(), v.clone());
        } else if let Some(t) = v.strip_prefix("link ") {
            let dir = k.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            let mut parts: Vec<&str> = dir.split('/').filter(|c| !c.is_empty()).collect();
            for c in t.split('/') {
                match c {
                    ".." => {
                        parts.pop();
                    }
                    "." | "" => {}
                    c => parts.push(c),
                }
            }
            out.insert(k.clone(), want[&parts.join("/")].clone());
        }
    }
    out
}

/// The config validates against ModelPack's own JSON schema (tests/fixtures/model-spec, from
/// the spec's repository), with formats (date-time) checked.
fn assert_schema_valid(config: &[u8], dir: &Path) {
    let f = dir.join(format!("config-{}.json", &sha256(config)[7..19]));
    std::fs::write(&f, config).unwrap();
    let schema = root().join("tests/fixtures/model-spec/config-schema.json");
    let check = "import json,sys,jsonschema\n\
        s=json.load(open(sys.argv[1])); c=json.load(open(sys.argv[2]))\n\
        jsonschema.Draft202012Validator(s, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER).validate(c)\n";
    // the Python that has jsonschema (install-deps.sh installs Debian's python3-jsonschema)
    let py = ["python3", "/usr/bin/python3"]
        .into_iter()
        .find(|p| {
            std::process::Command::new(p)
                .args(["-c", "import jsonschema"])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("a python3 with jsonschema (tests/harness/install-deps.sh installs it)");
    let out = std::process::Command::new(py)
        .args(["-c", check, s(&schema), s(&f)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the config fails ModelPack's schema: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(config)
    );
}

fn config_of(r: &str) -> Vec<u8> {
    let m = raw_manifest(r, None);
    let (name, _) = r.rsplit_once(':').unwrap();
    let (reg, repo) = name.split_once('/').unwrap();
    let digest = m["config"]["digest"].as_str().unwrap();
    let out = std::process::Command::new("curl")
        .args(["-sf", &format!("http://{reg}/v2/{repo}/blobs/{digest}")])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(sha256(&out.stdout), digest);
    out.stdout
}

/// `lamina pack` of a Hugging Face-shaped folder, typed as users type it (`./model/` from its
/// parent): a ModelPack artifact whose every layer is one raw file at its path with its kind,
/// the title annotation beside the ModelPack path, a config that passes the spec's schema and
/// says what the safetensors headers and config.json say, the same digest at -j 1 and -j 4 and
/// on a second run, and files that extract byte for byte. A schema check of `append
/// --modelpack`'s config too (regression: it wrote spec v0.0.6's `diff_ids`).
#[test]
fn pack_makes_a_modelpack_that_extracts_to_the_folder() {
    harness();
    let dir = tempdir("artifacts-pack");
    let want = models::hf_folder(&dir.join("model"));
    std::fs::write(
        dir.join("model/.gitattributes"),
        b"*.safetensors filter=lfs\n",
    )
    .unwrap();
    let dest = format!("{PLAIN}/{}:v1", repo("pack"));
    let out = lamina_in(&dir, &["pack", "./model/", "--dest", &dest, "--json"], &[]).ok();
    let j: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(
        out.stderr.contains("1 hidden or cache file(s) left out"),
        "{}",
        out.stderr
    );
    assert_eq!(j["model"]["name"], "model");
    assert_eq!(j["model"]["format"], "safetensors");
    assert_eq!(j["model"]["family"], "llama");
    assert_eq!(j["model"]["precision"], "float32");
    let m = raw_manifest(&dest, None);
    assert_eq!(
        m["artifactType"],
        "application/vnd.cncf.model.manifest.v1+json"
    );
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.cncf.model.config.v1+json"
    );
    let layers = m["layers"].as_array().unwrap();
    let expect = packed(&want);
    assert_eq!(
        layers.len(),
        expect.len(),
        "one layer per file: {layers:#?}"
    );
    for l in layers {
        let a = &l["annotations"];
        let p = a["org.cncf.model.filepath"].as_str().unwrap();
        assert_eq!(
            a["org.opencontainers.image.title"], p,
            "CRI-O names files by title"
        );
        assert!(l["mediaType"].as_str().unwrap().ends_with(".v1.raw"), "{l}");
        let meta: serde_json::Value =
            serde_json::from_str(a["org.cncf.model.file.metadata+json"].as_str().unwrap()).unwrap();
        assert_eq!(
            (meta["uid"].as_u64(), meta["gid"].as_u64()),
            (Some(0), Some(0))
        );
        assert!(expect.contains_key(p), "{p}");
        if p.ends_with(".safetensors") {
            assert_eq!(l["mediaType"], "application/vnd.cncf.model.weight.v1.raw");
        }
        if p == "config.json" || p.starts_with("tokenizer/") {
            assert_eq!(
                l["mediaType"], "application/vnd.cncf.model.weight.config.v1.raw",
                "{p}"
            );
        }
    }
    let config = config_of(&dest);
    assert_schema_valid(&config, &dir);
    let c: serde_json::Value = serde_json::from_slice(&config).unwrap();
    let ids: Vec<&str> = c["modelfs"]["diffIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    let digests: Vec<&str> = layers
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    assert_eq!(ids, digests, "a raw layer's diff_id is its digest");
    // the extract, by lamina and as a tar unpacked by GNU tar
    let (d, t) = extract_both(&dest, &dir, &[]);
    assert_eq!(files(&d), expect);
    assert_eq!(files(&t), expect);
    // deterministic: -j 1, and again
    let one = format!("{PLAIN}/{}:j1", repo("pack"));
    let a1 = lamina_in(&dir, &["pack", "model", "--dest", &one, "-j", "1"], &[]).ok();
    let again = lamina_in(
        &dir.join("model"),
        &["pack", ".", "--dest", &one, "--name", "model"],
        &[],
    )
    .ok();
    assert_eq!(
        a1.stdout.rsplit('@').next(),
        j["digest"].as_str().map(|d| format!("{d}\n")).as_deref()
    );
    assert_eq!(again.stdout, a1.stdout);
    // --tar: each file in a tar layer, the same files out
    let tarred = format!("{PLAIN}/{}:tar", repo("pack"));
    lamina_in(&dir, &["pack", "./model/", "--dest", &tarred, "--tar"], &[]).ok();
    let mt = raw_manifest(&tarred, None);
    assert!(
        mt["layers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["mediaType"].as_str().unwrap().ends_with(".v1.tar")),
        "{mt:#}"
    );
    assert_schema_valid(&config_of(&tarred), &dir);
    let (d, t) = extract_both(&tarred, &dir, &[]);
    assert_eq!(files(&d), expect);
    assert_eq!(files(&t), expect);
    // append --modelpack's config passes the schema too
    let layout = dir.join("layout");
    cmd(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{PLAIN}/fixtures/base:latest"),
            &format!("oci:{}:latest", layout.display()),
        ],
    )
    .ok();
    lamina(&[
        "append",
        s(&layout),
        s(&dir.join("model/config.json")),
        "--modelpack",
    ])
    .ok();
    let ix: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mp = ix["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == "modelpack")
        .unwrap();
    let blob = |d: &str| std::fs::read(layout.join("blobs/sha256").join(&d[7..])).unwrap();
    let man: serde_json::Value =
        serde_json::from_slice(&blob(mp["digest"].as_str().unwrap())).unwrap();
    assert_schema_valid(&blob(man["config"]["digest"].as_str().unwrap()), &dir);
}

/// The schema check fails a config that breaks the schema (so the check above can fail).
#[test]
fn the_schema_check_catches_a_bad_config() {
    let dir = tempdir("artifacts-schema");
    let bad =
        br#"{"descriptor":{},"config":{},"modelfs":{"type":"layers","diff_ids":["sha256:00"]}}"#;
    let r = std::panic::catch_unwind(|| assert_schema_valid(bad, &dir));
    assert!(
        r.is_err(),
        "spec v0.0.6's diff_ids must fail the current schema"
    );
}

/// The registry's access-log lines for uploads into `repo`: (blob PUTs and PATCHes, mounts).
fn uploads(repo: &str) -> (Vec<String>, Vec<String>) {
    let sent = log_lines(PLAIN, &format!("/v2/{repo}/blobs/uploads/"))
        .into_iter()
        .filter(|l| l.contains("\"PUT ") || l.contains("\"PATCH "))
        .collect();
    let mounts = log_lines(PLAIN, &format!("/v2/{repo}/blobs/uploads/?mount="));
    (sent, mounts)
}

/// The layer digests of what `pack --json` printed, by path.
fn packed_digests(j: &serde_json::Value) -> BTreeMap<String, String> {
    j["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["path"].as_str().unwrap().to_string(),
                l["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Which of `digests` were sent to `repo` since the access log had `from` lines (the PUT that
/// closes an upload names its digest).
fn sent_since(repo: &str, from: usize, digests: &BTreeMap<String, String>) -> Vec<String> {
    let (sent, _) = uploads(repo);
    digests
        .iter()
        .filter(|(_, d)| {
            let hex = d.trim_start_matches("sha256:");
            sent[from.min(sent.len())..].iter().any(|l| l.contains(hex))
        })
        .map(|(p, _)| p.clone())
        .collect()
}

/// Packing a folder again reads and sends only the files that changed (regression: every run
/// hashed and sent every file again): a second run of an unchanged folder sends no layer and
/// makes the same digest; after one file changes, only that file is sent; to another
/// repository, which has none of the blobs, everything is sent; a file changed just before the
/// run is not taken from the record (its digest is made again).
#[test]
fn pack_again_reads_and_sends_only_the_files_that_changed() {
    harness();
    let dir = tempdir("artifacts-repack");
    models::hf_folder(&dir.join("model"));
    let cache = dir.join("cache");
    let env = [("LAMINA_CACHE_DIR", s(&cache))];
    // a file changed in the last 2 s is never recorded (it could change again unseen)
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let name = repo("repack");
    let dest = format!("{PLAIN}/{name}:v1");
    let pack = |dest: &str| {
        let out = lamina_in(&dir, &["pack", "./model/", "--dest", dest, "--json"], &env).ok();
        let j: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        (j, out.stderr)
    };
    let (j1, _) = pack(&dest);
    assert_eq!(j1["reused"], 0);
    let d1 = packed_digests(&j1);
    assert_eq!(
        sent_since(&name, 0, &d1).len(),
        d1.len(),
        "the first run sends all"
    );
    let m1 = raw_manifest(&dest, None);

    let mark = uploads(&name).0.len();
    let (j2, err) = pack(&dest);
    assert_eq!(j2["reused"], d1.len(), "{j2:#}");
    assert_eq!(packed_digests(&j2), d1);
    assert_eq!(sent_since(&name, mark, &d1), Vec::<String>::new());
    assert_eq!(raw_manifest(&dest, None), m1, "the same artifact");
    assert!(err.contains("unchanged: not sent again"), "{err}");
    assert!(
        err.contains(&format!("{} unchanged (not sent again)", d1.len())),
        "{err}"
    );

    // one file changes: only it is sent, the others are taken as recorded
    let readme = dir.join("model/sub/deeper/notes.txt");
    let mut text = std::fs::read(&readme).unwrap();
    text.extend_from_slice(b"\nFine-tuned.\n");
    std::fs::write(&readme, &text).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let mark = uploads(&name).0.len();
    let (j3, _) = pack(&dest);
    let d3 = packed_digests(&j3);
    assert_eq!(j3["reused"], d1.len() - 1);
    assert_ne!(d3["sub/deeper/notes.txt"], d1["sub/deeper/notes.txt"]);
    assert_eq!(
        sent_since(&name, mark, &d3),
        vec!["sub/deeper/notes.txt".to_string()]
    );
    let out = dir.join("out");
    lamina_in(&dir, &["extract", &dest, "-o", "./out/"], &[]).ok();
    assert_eq!(
        std::fs::read(out.join("sub/deeper/notes.txt")).unwrap(),
        text
    );

    // another repository has none of the blobs: the record alone sends nothing short
    let other = repo("repack-other");
    let (j4, _) = pack(&format!("{PLAIN}/{other}:v1"));
    assert_eq!(packed_digests(&j4), d3);
    // every blob is sent there (a link in the folder and the file it names are one blob,
    // sent once: the second finds it there)
    assert_eq!(sent_since(&other, 0, &d3).len(), d3.len());

    // a file changed just now, even to the same size, is hashed again
    let cfg = dir.join("model/config.json");
    let mut c = std::fs::read(&cfg).unwrap();
    let at = c.iter().position(|&b| b == b'L').unwrap(); // LlamaForCausalLM: same size
    c[at] = b'l';
    std::fs::write(&cfg, &c).unwrap();
    let (j5, _) = pack(&dest);
    let d5 = packed_digests(&j5);
    assert_eq!(d5["config.json"], sha256(&c));
    assert_ne!(d5["config.json"], d3["config.json"]);
}

/// `convert --to modelpack` of a modelcar uploads no layer: its model layers are mounted (the
/// registry's access log shows one blob upload, the config), the base image's are left out, and
/// the files extract as the modelcar's do. Back with `--to modelcar`: mounts only again, the same
/// files under /models. A packed (raw) ModelPack converted to a modelcar streams each file into a
/// tar at /models/PATH, and the files come out byte for byte.
#[test]
fn convert_between_modelcar_and_modelpack_mounts_what_it_can() {
    harness();
    let dir = tempdir("artifacts-convert");
    let m = dir.join("m");
    std::fs::create_dir_all(&m).unwrap();
    let weights = models::safetensors("w", 200_000, 41);
    std::fs::write(m.join("model.safetensors"), &weights).unwrap();
    std::fs::write(m.join("config.json"), br#"{"model_type": "llama"}"#).unwrap();
    std::fs::write(m.join("README.md"), b"# card\n").unwrap();
    let base = format!("{PLAIN}/fixtures/base:latest");
    let car_repo = repo("convert-car");
    let car = format!("{PLAIN}/{car_repo}:v1");
    lamina(&[
        "affix",
        "--modelcar",
        "--base",
        &base,
        "--dest",
        &car,
        s(&m.join("model.safetensors")),
        s(&m.join("config.json")),
        "-m",
        s(&m.join("README.md")),
    ])
    .ok();
    let mp_repo = repo("convert-mp");
    let mp = format!("{PLAIN}/{mp_repo}:v1");
    lamina(&["convert", &car, &mp, "--to", "modelpack"]).ok();
    let (sent, mounts) = uploads(&mp_repo);
    assert_eq!(sent.len(), 1, "only the config is uploaded: {sent:#?}");
    assert_eq!(
        mounts.len(),
        3,
        "the three model layers are mounted: {mounts:#?}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&lamina(&["layers", &mp, "--json"]).ok().stdout).unwrap();
    let img = &v["images"][0];
    assert_eq!(img["format"], "modelpack");
    let kinds: Vec<&str> = img["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["weight", "config", "doc"]);
    assert_schema_valid(&config_of(&mp), &dir);
    let from_car = dir.join("from-car");
    lamina(&["extract", &car, "-o", &format!("{}/", from_car.display())]).ok();
    let (from_mp, _) = extract_both(&mp, &dir, &["--path", "models"]);
    assert_eq!(files(&from_mp), files(&tree_listing(&from_car)));
    assert_eq!(
        files(&from_mp).get("model.safetensors").map(String::as_str),
        Some(format!("file {} 644", sha256(&weights)).as_str())
    );
    // and back: mounts only
    let back_repo = repo("convert-back");
    let back = format!("{PLAIN}/{back_repo}:v1");
    lamina(&["convert", &mp, &back, "--to", "modelcar", "--base", &base]).ok();
    let (sent, _) = uploads(&back_repo);
    assert!(
        sent.iter().all(|l| !l.contains("\"PATCH ")),
        "no layer streamed: {sent:#?}"
    );
    let again = dir.join("again");
    lamina(&["extract", &back, "-o", &format!("{}/", again.display())]).ok();
    assert_eq!(
        files(&tree_listing(&again)),
        files(&tree_listing(&from_car))
    );
    // a packed ModelPack (raw layers) onto a base as a modelcar: files wrapped at /models/PATH
    let packed_ref = format!("{PLAIN}/{}:v1", repo("convert-packed"));
    lamina(&["pack", s(&m), "--dest", &packed_ref]).ok();
    let car2 = format!("{PLAIN}/{}:v1", repo("convert-car2"));
    let out = lamina(&[
        "convert",
        &packed_ref,
        &car2,
        "--to",
        "modelcar",
        "--base",
        &base,
        "--json",
    ])
    .ok();
    let j: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(j["bytesSent"].as_u64().unwrap() > weights.len() as u64);
    let got = dir.join("car2");
    lamina(&["extract", &car2, "-o", &format!("{}/", got.display())]).ok();
    let want: BTreeMap<String, String> = ["model.safetensors", "config.json", "README.md"]
        .iter()
        .map(|n| {
            (
                n.to_string(),
                format!("file {} 644", sha256(&std::fs::read(m.join(n)).unwrap())),
            )
        })
        .collect();
    assert_eq!(files(&tree_listing(&got)), want);
    // podman sees the files where a runtime puts them
    let pl = podman_listing(&car2, "models");
    assert_eq!(files(&pl), want);
    // wrong directions are refused before anything is written
    let e = lamina(&[
        "convert",
        &mp,
        &format!("{PLAIN}/{}:x", repo("convert-bad")),
        "--to",
        "modelcar",
    ]);
    assert_eq!(e.code, 2, "{}", e.stderr);
    let e = lamina(&[
        "convert",
        &mp,
        &format!("{PLAIN}/{}:x", repo("convert-bad")),
        "--to",
        "modelpack",
    ]);
    assert_eq!(e.code, 1, "{}", e.stderr);
    assert!(
        e.stderr.contains("is a ModelPack artifact already"),
        "{}",
        e.stderr
    );
}

/// `affix` onto a ModelPack (modctl's attach, without its losses): the files become raw layers
/// at their paths, one of the same path is replaced in place, the rest of the artifact and its
/// config are kept and the config still passes the schema (regression: affix made an image
/// layer and wrote `rootfs` into the ModelPack config). A slice of the result against the
/// original carries only the new blobs and loads with the same digest. Commands for images
/// refuse an artifact, naming it.
#[test]
fn affix_onto_a_modelpack_attaches_and_slice_carries_it() {
    harness();
    let dir = tempdir("artifacts-attach");
    let m = dir.join("m");
    std::fs::create_dir_all(m.join("unet")).unwrap();
    std::fs::write(
        m.join("unet/model.safetensors"),
        models::safetensors("u", 5000, 51),
    )
    .unwrap();
    std::fs::write(m.join("README.md"), b"# v1\n").unwrap();
    let v1 = format!("{PLAIN}/{}:v1", repo("attach"));
    lamina(&["pack", s(&m), "--dest", &v1]).ok();
    let add = dir.join("add");
    std::fs::create_dir_all(&add).unwrap();
    std::fs::write(add.join("README.md"), b"# v2\n").unwrap();
    std::fs::write(add.join("LICENSE"), b"MIT\n").unwrap();
    let v2 = format!("{PLAIN}/{}:v2", repo("attach"));
    let out = lamina(&[
        "affix",
        "--base",
        &v1,
        "--dest",
        &v2,
        "--json",
        s(&add.join("README.md")),
        s(&add.join("LICENSE")),
    ])
    .ok();
    let j: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(j["replaced"], serde_json::json!(["README.md"]));
    assert!(
        !out.stderr.contains("compression auto"),
        "files go raw: {}",
        out.stderr
    );
    let before = raw_manifest(&v1, None);
    let after = raw_manifest(&v2, None);
    assert_eq!(after["artifactType"], before["artifactType"]);
    let paths = |m: &serde_json::Value| -> Vec<String> {
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                l["annotations"]["org.cncf.model.filepath"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    assert_eq!(paths(&before), ["README.md", "unet/model.safetensors"]);
    assert_eq!(
        paths(&after),
        ["README.md", "unet/model.safetensors", "LICENSE"]
    );
    assert_eq!(
        after["layers"][1], before["layers"][1],
        "the weights layer is kept as it was"
    );
    let c1: serde_json::Value = serde_json::from_slice(&config_of(&v1)).unwrap();
    let c2b = config_of(&v2);
    assert_schema_valid(&c2b, &dir);
    let c2: serde_json::Value = serde_json::from_slice(&c2b).unwrap();
    assert_eq!(c2["descriptor"], c1["descriptor"]);
    assert_eq!(c2["config"], c1["config"]);
    let (d, _) = extract_both(&v2, &dir, &[]);
    assert_eq!(
        d.get("README.md").map(String::as_str),
        Some(format!("file {} 644", sha256(b"# v2\n")).as_str())
    );
    assert!(d.contains_key("LICENSE") && d.contains_key("unet/model.safetensors"));
    // a delta archive against v1 holds the two new files' blobs, the config and the manifest
    let archive = dir.join("v2.slice.tar");
    lamina(&["slice", "save", &v2, "--base", &v1, "-o", s(&archive)]).ok();
    let ls: serde_json::Value =
        serde_json::from_str(&lamina(&["slice", "ls", s(&archive), "--json"]).ok().stdout).unwrap();
    assert_eq!(ls["omitted"].as_array().unwrap().len(), 1, "{ls}");
    let loaded = format!("{PLAIN}/{}:v2", repo("attach-loaded"));
    let r = lamina(&[
        "slice",
        "load",
        s(&archive),
        "--dest",
        &loaded,
        "--from",
        &v1,
    ])
    .ok();
    assert_eq!(
        r.stdout.trim().rsplit('@').next(),
        j["digest"].as_str(),
        "the loaded artifact keeps its digest"
    );
    // zstd leaves raw files alone: a ModelPack of raw layers comes out the same artifact
    let z = lamina(&[
        "zstd",
        &v2,
        &format!("{PLAIN}/{}:z", repo("attach")),
        "--json",
    ])
    .ok();
    let zj: serde_json::Value = serde_json::from_str(&z.stdout).unwrap();
    assert_eq!(zj["digest"], j["digest"], "{zj}");
    assert_eq!(zj["layers"].as_array().unwrap().len(), 0, "{zj}");
    let e = lamina(&[
        "affix",
        "--base",
        &v1,
        "--dest",
        &format!("{PLAIN}/{}:t", repo("attach")),
        "--tar",
        s(&archive),
    ]);
    assert_eq!(e.code, 2, "{}", e.stderr);
}

/// `pack --format F` of a Hugging Face-shaped folder (`./model/` typed from its parent), for
/// every format lamina writes, extracts to the folder byte for byte; each result converted to
/// every other format extracts to it too. Blobs are mounted where the packing can stay (the
/// registry's access log shows no layer upload and `bytesSent` is 0), streamed otherwise. Each
/// format is what its own tools read: a ModelPack config passes the spec's schema, a Kitfile
/// names each layer's digest in kit's layer order and GNU tar lists each kit tar with the
/// directories above its file, a Docker model's diff_ids are its raw layers' digests, and
/// podman mounts the modelcar with the files under /models.
#[test]
fn every_format_round_trips_through_pack_extract_and_convert() {
    harness();
    let dir = tempdir("artifacts-roundtrip");
    let want = files(&packed(&models::hf_folder(&dir.join("model"))));
    let base = format!("{PLAIN}/fixtures/base:latest");
    let formats = ["modelpack", "modelkit", "docker", "modelcar"];
    // a modelcar's files are under /models: extract gives them at the top of -o for an image,
    // under models/ for an artifact made from one
    let tree_of = |r: &str, under_models: bool| -> BTreeMap<String, String> {
        let extra: &[&str] = if under_models {
            &["--path", "models"]
        } else {
            &[]
        };
        let (t, x) = extract_both(r, &dir, extra);
        assert_eq!(files(&t), files(&x), "{r}: GNU tar unpacks the same files");
        files(&t)
    };
    let mut packed_refs = Vec::new();
    for f in formats {
        let r = format!("{PLAIN}/{}:v1", repo(&format!("rt-{f}")));
        let mut args = vec!["pack", "./model/", "--dest", &r, "--format", f, "--json"];
        if f == "modelcar" {
            args.extend(["--base", &base]);
        }
        let out = lamina_in(&dir, &args, &[]).ok();
        let j: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(j["format"], f);
        assert_eq!(tree_of(&r, false), want, "pack --format {f}");
        let m = raw_manifest(&r, None);
        let layers = m["layers"].as_array().unwrap().clone();
        let digests: Vec<&str> = layers
            .iter()
            .map(|l| l["digest"].as_str().unwrap())
            .collect();
        match f {
            "modelpack" => assert_schema_valid(&config_of(&r), &dir),
            "modelkit" => {
                let k: serde_json::Value = serde_json::from_slice(&config_of(&r)).unwrap();
                assert_eq!(k["manifestVersion"], "1.0.0");
                assert_eq!(k["package"]["name"], "model");
                // kit's order: model, parts, code, datasets, docs; each entry its layer's digest
                let mut entries = vec![k["model"].clone()];
                entries.extend(k["model"]["parts"].as_array().unwrap().iter().cloned());
                for key in ["code", "datasets", "docs"] {
                    entries.extend(k[key].as_array().into_iter().flatten().cloned());
                }
                let named: Vec<&str> = entries
                    .iter()
                    .map(|e| e["digest"].as_str().unwrap())
                    .collect();
                assert_eq!(named, digests, "the Kitfile's digests, in layer order");
                assert!(layers[0]["mediaType"]
                    .as_str()
                    .unwrap()
                    .starts_with("application/vnd.kitops.modelkit.model.v1.tar"));
                // GNU tar: the directories above a nested file, then the file
                let (reg, name) = r.split_once('/').unwrap();
                let name = name.rsplit_once(':').unwrap().0;
                let nested = entries
                    .iter()
                    .position(|e| e["path"] == "unet/config.json")
                    .unwrap();
                let blob = dir.join("kit-layer.tar");
                cmd(
                    "curl",
                    &[
                        "-sfo",
                        s(&blob),
                        &format!("http://{reg}/v2/{name}/blobs/{}", digests[nested]),
                    ],
                )
                .ok();
                let listing = cmd("tar", &["-tf", s(&blob)]).ok().stdout;
                assert_eq!(listing, "unet/\nunet/config.json\n");
            }
            "docker" => {
                let c: serde_json::Value = serde_json::from_slice(&config_of(&r)).unwrap();
                let ids: Vec<&str> = c["rootfs"]["diff_ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_str().unwrap())
                    .collect();
                assert_eq!(
                    ids, digests,
                    "model-runner stores each blob under its diff_id"
                );
                assert_eq!(
                    m["config"]["mediaType"],
                    "application/vnd.docker.ai.model.config.v0.2+json"
                );
                assert_eq!(c["config"]["format"], "safetensors");
                for l in &layers {
                    let p = l["annotations"]["org.cncf.model.filepath"]
                        .as_str()
                        .unwrap();
                    if p.ends_with(".safetensors") {
                        assert_eq!(l["mediaType"], "application/vnd.docker.ai.safetensors");
                    }
                }
            }
            _ => assert_eq!(files(&podman_listing(&r, "models")), want),
        }
        packed_refs.push((f, r));
    }
    // every format into every other: mounted where the packing stays
    let mounted_only = |from: &str, to: &str| {
        matches!(
            (from, to),
            (_, "modelpack") | ("modelcar", "modelkit") | ("modelpack", "docker")
        )
    };
    for (from, src) in &packed_refs {
        for to in formats.iter().filter(|t| *t != from) {
            let dest_repo = repo(&format!("rt-{from}-to-{to}"));
            let dest = format!("{PLAIN}/{dest_repo}:v1");
            let mut args = vec!["convert", src, &dest, "--to", to, "--json"];
            if *to == "modelcar" {
                args.extend(["--base", &base]);
            }
            let out = lamina(&args).ok();
            let j: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
            assert_eq!(j["from"], *from);
            let sent = j["bytesSent"].as_u64().unwrap();
            let (puts, _) = uploads(&dest_repo);
            let streamed = puts.iter().filter(|l| l.contains("\"PATCH ")).count();
            if mounted_only(from, to) {
                assert_eq!((sent, streamed), (0, 0), "{from} -> {to}: {puts:#?}");
            } else {
                assert!(
                    sent > 0 && streamed > 0,
                    "{from} -> {to} streams its layers"
                );
            }
            let under_models = *from == "modelcar" && *to != "docker" && *to != "modelcar";
            assert_eq!(tree_of(&dest, under_models), want, "{from} -> {to}");
            if *to == "modelpack" {
                assert_schema_valid(&config_of(&dest), &dir);
            }
            if *to == "modelcar" {
                assert_eq!(
                    files(&podman_listing(&dest, "models")),
                    want,
                    "{from} -> {to}"
                );
            }
        }
    }
}

/// `affix` onto a ModelKit (kit's own shape, built by hand) and a Docker v0.2 model: a file of
/// the same path replaces its layer in place, a new one goes in (a ModelKit's as a tar in kit's
/// layer order, its Kitfile entry beside the others; a Docker model's raw), the config keeps
/// what lamina does not write (the Kitfile's authors, Docker's architecture), and the result
/// extracts to the old files with the new ones. A positional v0.1 model is refused, naming
/// `convert`.
#[test]
fn affix_onto_a_modelkit_and_a_docker_model_attaches() {
    harness();
    let dir = tempdir("artifacts-attach-more");
    let (kit, kit_want) = artifacts::modelkit(PLAIN, &repo("attach-kit"), &dir);
    let [(v1, _), (v2, v2_want)] = artifacts::docker_models(PLAIN, &repo("attach-docker"), &dir);
    let add = dir.join("add");
    std::fs::create_dir_all(add.join("notes")).unwrap();
    std::fs::write(add.join("README.md"), b"# replaced\n").unwrap();
    std::fs::write(add.join("notes/eval.md"), b"scores\n").unwrap();
    let file = |b: &[u8]| format!("file {} 644", sha256(b));
    for (src, want, kept) in [
        (&kit, &kit_want, "authors"),
        (&v2, &v2_want, "architecture"),
    ] {
        let dest = format!("{src}-attached");
        let out = lamina_in(
            &add,
            &[
                "affix",
                "--base",
                src,
                "--dest",
                &dest,
                "./README.md",
                "notes/",
                "--json",
            ],
            &[],
        )
        .ok();
        let j: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let mut want = files(want);
        if want.contains_key("README.md") {
            assert_eq!(j["replaced"], serde_json::json!(["README.md"]), "{src}");
        }
        want.insert("README.md".into(), file(b"# replaced\n"));
        // a folder's contents go at the top, as `pack ./model/` puts them
        want.insert("eval.md".into(), file(b"scores\n"));
        let (t, x) = extract_both(&dest, &dir, &[]);
        assert_eq!(files(&t), want, "{src}");
        assert_eq!(files(&x), want, "{src}: GNU tar");
        let config = String::from_utf8(config_of(&dest)).unwrap();
        assert!(config.contains(kept), "{src}: {config}");
        let m = raw_manifest(&dest, None);
        let layers = m["layers"].as_array().unwrap();
        let c: serde_json::Value = serde_json::from_str(&config).unwrap();
        if src == &kit {
            // kit's order: docs last, the new doc after the old one; the Kitfile names it
            let types: Vec<&str> = layers
                .iter()
                .map(|l| l["mediaType"].as_str().unwrap())
                .collect();
            assert!(types.last().unwrap().contains(".docs.v1.tar"), "{types:?}");
            let docs = c["docs"].as_array().unwrap();
            assert_eq!(docs.len(), 2);
            assert_eq!(docs[1]["path"], "eval.md");
            assert_eq!(docs[1]["digest"], layers.last().unwrap()["digest"]);
        } else {
            let ids = c["rootfs"]["diff_ids"].as_array().unwrap();
            assert_eq!(ids.len(), layers.len());
            for (l, id) in layers.iter().zip(ids) {
                assert_eq!(&l["digest"], id, "a raw layer's diff_id is its digest");
            }
        }
    }
    let e = lamina_in(
        &add,
        &[
            "affix",
            "--base",
            &v1,
            "--dest",
            &format!("{v1}-x"),
            "./README.md",
        ],
        &[],
    );
    assert_eq!(e.code, 2, "{}", e.stderr);
    assert!(e.stderr.contains("convert"), "{}", e.stderr);
}

/// Each file of `r` (an artifact) with its kind, from `lamina layers --json`.
fn kinds_of(r: &str) -> BTreeMap<String, String> {
    let v: serde_json::Value =
        serde_json::from_str(&lamina(&["layers", r, "--json"]).ok().stdout).unwrap();
    v["images"][0]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["path"].as_str().unwrap().to_string(),
                l["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `remix` with model artifacts on either side. A ModelPack's weights and weight configs go
/// into a ModelKit in place of its own (re-packed as kit's tars as they stream; the kit's
/// README stays; the Kitfile names every layer and takes the new weights' facts); a ModelKit's
/// go into a ModelPack, mounted (the registry's access log shows no PATCH), the config still
/// passing the spec's schema with the new facts; a ModelKit's weights onto a runnable image
/// become modelcar layers that podman mounts under /models. `--layer N` picks by the index
/// `lamina layers` shows; a bad index and `--platform` with an artifact base are refused
/// before anything is written.
#[test]
fn remix_moves_weights_between_artifacts_and_images() {
    harness();
    let dir = tempdir("artifacts-remix");
    let a_files = files(&packed(&models::hf_folder(&dir.join("model"))));
    let a = format!("{PLAIN}/{}:v1", repo("remix-a"));
    lamina_in(&dir, &["pack", "./model/", "--dest", &a], &[]).ok();
    let a_kinds = kinds_of(&a);
    // a second model, a ModelKit: one weight of another size, its config, a card
    let b_dir = dir.join("finetune");
    std::fs::create_dir_all(&b_dir).unwrap();
    let b_weights = models::safetensors("ft", 300_000, 61);
    std::fs::write(b_dir.join("model.safetensors"), &b_weights).unwrap();
    std::fs::write(
        b_dir.join("config.json"),
        br#"{"architectures":["MistralForCausalLM"],"model_type":"mistral"}"#,
    )
    .unwrap();
    std::fs::write(b_dir.join("README.md"), b"# the finetune\n").unwrap();
    let b_files = tree_listing(&b_dir);
    let b = format!("{PLAIN}/{}:v1", repo("remix-b"));
    lamina_in(
        &dir,
        &["pack", "finetune", "--dest", &b, "--format", "modelkit"],
        &[],
    )
    .ok();
    let moves = |k: &str| k == "weight" || k == "config";

    // A's weights into the kit: the kit's card stays, its weights and config go
    let c_repo = repo("remix-a-into-b");
    let c = format!("{PLAIN}/{c_repo}:v1");
    let out = lamina(&[
        "remix",
        "--base",
        &b,
        "--weights",
        &a,
        "--dest",
        &c,
        "--json",
    ])
    .ok();
    let j: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (&j["format"], &j["from"]),
        (&"modelkit".into(), &"modelpack".into()),
        "{j}"
    );
    assert_eq!(
        j["dropped"],
        serde_json::json!(["model.safetensors", "config.json"]),
        "{j}"
    );
    assert!(
        j["bytesSent"].as_u64().unwrap() > 0,
        "raw files are wrapped in tars: {j}"
    );
    let mut want: BTreeMap<String, String> = a_files
        .iter()
        .filter(|(p, _)| moves(&a_kinds[*p]))
        .map(|(p, v)| (p.clone(), v.clone()))
        .collect();
    want.insert("README.md".into(), b_files["README.md"].clone());
    let (t, x) = extract_both(&c, &dir, &[]);
    assert_eq!(files(&t), want, "lamina extract of the remixed kit");
    assert_eq!(files(&x), want, "GNU tar of the remixed kit");
    let kit: serde_json::Value = serde_json::from_slice(&config_of(&c)).unwrap();
    let m = raw_manifest(&c, None);
    let mut entries = vec![kit["model"].clone()];
    entries.extend(kit["model"]["parts"].as_array().unwrap().iter().cloned());
    for key in ["code", "datasets", "docs"] {
        entries.extend(kit[key].as_array().into_iter().flatten().cloned());
    }
    let named: Vec<&str> = entries
        .iter()
        .map(|e| e["digest"].as_str().unwrap())
        .collect();
    let digests: Vec<&str> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    assert_eq!(
        named, digests,
        "the Kitfile names every layer, in layer order"
    );
    let a_config: serde_json::Value = serde_json::from_slice(&config_of(&a)).unwrap();
    assert_eq!(
        kit["model"]["parameters"]["paramSize"], a_config["config"]["paramSize"],
        "the kit takes the new weights' facts: {kit}"
    );
    assert_eq!(
        kit["package"]["name"], "finetune",
        "the kit's own name stays"
    );

    // the kit's weights into the ModelPack: mounted, A's docs and code stay
    let d_repo = repo("remix-b-into-a");
    let d = format!("{PLAIN}/{d_repo}:v1");
    let out = lamina(&[
        "remix",
        "--base",
        &a,
        "--weights",
        &b,
        "--dest",
        &d,
        "--json",
    ])
    .ok();
    let j: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (&j["format"], &j["bytesSent"]),
        (&"modelpack".into(), &0.into()),
        "{j}"
    );
    let (sent, mounts) = uploads(&d_repo);
    assert!(
        sent.iter().all(|l| !l.contains("\"PATCH ")),
        "no layer streamed: {sent:#?}"
    );
    assert!(!mounts.is_empty(), "the kit's layers are mounted");
    let mut want: BTreeMap<String, String> = a_files
        .iter()
        .filter(|(p, _)| !moves(&a_kinds[*p]))
        .map(|(p, v)| (p.clone(), v.clone()))
        .collect();
    want.insert(
        "model.safetensors".into(),
        b_files["model.safetensors"].clone(),
    );
    want.insert("config.json".into(), b_files["config.json"].clone());
    let (t, x) = extract_both(&d, &dir, &[]);
    assert_eq!(files(&t), want, "lamina extract of the remixed ModelPack");
    assert_eq!(files(&x), want, "GNU tar of the remixed ModelPack");
    let cfg = config_of(&d);
    assert_schema_valid(&cfg, &dir);
    let cfg: serde_json::Value = serde_json::from_slice(&cfg).unwrap();
    let b_kit: serde_json::Value = serde_json::from_slice(&config_of(&b)).unwrap();
    assert_eq!(
        cfg["config"]["paramSize"], b_kit["model"]["parameters"]["paramSize"],
        "the ModelPack takes the new weights' facts: {cfg}"
    );
    assert_eq!(cfg["descriptor"]["name"], a_config["descriptor"]["name"]);
    assert_eq!(
        cfg["modelfs"]["diffIds"].as_array().unwrap().len(),
        raw_manifest(&d, None)["layers"].as_array().unwrap().len(),
        "a diff_id per layer"
    );

    // the kit's weights onto a runnable image: modelcar layers under /models
    let base = format!("{PLAIN}/fixtures/base:latest");
    let e = format!("{PLAIN}/{}:v1", repo("remix-b-onto-image"));
    let out = lamina(&[
        "remix",
        "--base",
        &base,
        "--weights",
        &b,
        "--dest",
        &e,
        "--json",
    ])
    .ok();
    let j: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(j["format"], "modelcar", "{j}");
    let want: BTreeMap<String, String> = ["model.safetensors", "config.json"]
        .iter()
        .map(|p| (p.to_string(), b_files[*p].clone()))
        .collect();
    assert_eq!(files(&podman_listing(&e, "models")), want);
    // --layer N picks by index: the kit's README alone, added beside the ModelPack's files
    let layers: serde_json::Value =
        serde_json::from_str(&lamina(&["layers", &b, "--json"]).ok().stdout).unwrap();
    let index = layers["images"][0]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["path"] == "README.md")
        .unwrap()["index"]
        .to_string();
    let f = format!("{PLAIN}/{}:v1", repo("remix-layer"));
    lamina(&[
        "remix",
        "--base",
        &a,
        "--weights",
        &b,
        "--dest",
        &f,
        "--layer",
        &index,
    ])
    .ok();
    let got = kinds_of(&f);
    assert_eq!(got.get("README.md").map(String::as_str), Some("doc"));
    let mut with_readme = a_kinds.clone();
    assert!(with_readme
        .insert("README.md".into(), "doc".into())
        .is_none());
    assert_eq!(got, with_readme, "README.md added, the rest kept: {got:?}");
    let (t, _) = extract_both(&f, &dir, &[]);
    assert_eq!(
        t.get("README.md"),
        b_files.get("README.md"),
        "the kit's README"
    );

    // refused before anything is written
    let bad = format!("{PLAIN}/{}:x", repo("remix-bad"));
    let r = lamina(&[
        "remix",
        "--base",
        &a,
        "--weights",
        &b,
        "--dest",
        &bad,
        "--layer",
        "99",
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--layer 99"), "{}", r.stderr);
    let r = lamina(&[
        "remix",
        "--base",
        &a,
        "--weights",
        &b,
        "--dest",
        &bad,
        "--platform",
        "linux/arm64",
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("has no platforms"), "{}", r.stderr);
    let r = lamina(&["layers", &bad]);
    assert_ne!(r.code, 0, "no tag was written");
}

/// `zstd` on a ModelPack of tar layers: its doc, config and code tars become `tar+zstd`
/// layers with the same diff_ids, its weights stay as they are (same blobs), the config still
/// passes the schema and the files extract byte for byte. A ModelKit (kit reads no zstd) and a
/// Docker model (raw files) are refused by name, with nothing written.
#[test]
fn zstd_compresses_a_modelpacks_tars_but_leaves_its_weights() {
    harness();
    let dir = tempdir("artifacts-zstd");
    let want = files(&packed(&models::hf_folder(&dir.join("model"))));
    let t = format!("{PLAIN}/{}:tar", repo("zstd-mp"));
    lamina_in(&dir, &["pack", "./model/", "--dest", &t, "--tar"], &[]).ok();
    let z = format!("{PLAIN}/{}:zstd", repo("zstd-mp"));
    let out = lamina(&["zstd", &t, &z, "--json"]).ok();
    let j: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let before = raw_manifest(&t, None);
    let after = raw_manifest(&z, None);
    let (bl, al) = (
        before["layers"].as_array().unwrap(),
        after["layers"].as_array().unwrap(),
    );
    assert_eq!(bl.len(), al.len());
    let mut recompressed = 0;
    for (b, a) in bl.iter().zip(al) {
        let mt = b["mediaType"].as_str().unwrap();
        assert_eq!(b["annotations"], a["annotations"], "annotations kept");
        if mt.contains(".weight.v1.") {
            assert_eq!(a, b, "a weight layer is left as it is");
        } else {
            assert_eq!(
                a["mediaType"].as_str().unwrap(),
                mt.replace(".v1.tar", ".v1.tar+zstd"),
                "{mt}"
            );
            assert_ne!(a["digest"], b["digest"]);
            recompressed += 1;
        }
    }
    assert!(
        recompressed >= 3,
        "doc, config and code tars: {recompressed}"
    );
    assert_eq!(j["layers"].as_array().unwrap().len(), recompressed, "{j}");
    let cb: serde_json::Value = serde_json::from_slice(&config_of(&t)).unwrap();
    let ca = config_of(&z);
    assert_schema_valid(&ca, &dir);
    let ca: serde_json::Value = serde_json::from_slice(&ca).unwrap();
    assert_eq!(
        ca["modelfs"], cb["modelfs"],
        "the diff_ids are the tars' own"
    );
    assert_eq!(ca["config"], cb["config"]);
    let (tz, xz) = extract_both(&z, &dir, &[]);
    assert_eq!(files(&tz), want, "lamina extract of the zstd ModelPack");
    assert_eq!(files(&xz), want, "GNU tar of the zstd ModelPack");
    for f in ["modelkit", "docker"] {
        let r = format!("{PLAIN}/{}:v1", repo(&format!("zstd-{f}")));
        lamina_in(
            &dir,
            &["pack", "./model/", "--dest", &r, "--format", f],
            &[],
        )
        .ok();
        let bad = format!("{PLAIN}/{}:z", repo(&format!("zstd-{f}")));
        let e = lamina(&["zstd", &r, &bad]);
        assert_eq!(e.code, 2, "{f}: {}", e.stderr);
        let name = if f == "modelkit" {
            "ModelKit"
        } else {
            "Docker"
        };
        assert!(e.stderr.contains(name), "{f}: {}", e.stderr);
        assert_ne!(lamina(&["layers", &bad]).code, 0, "{f}: no tag was written");
    }
}

/// `pack --raw` is the ModelPack default said out loud (the same artifact), and is refused with
/// --tar and for the formats that hold tars (exit 2, nothing pushed).
#[test]
fn pack_raw_is_the_default_and_refused_where_files_are_tars() {
    harness();
    let dir = tempdir("artifacts-raw");
    models::hf_folder(&dir.join("model"));
    let env = [("SOURCE_DATE_EPOCH", "946684800")];
    let a = format!("{PLAIN}/{}:default", repo("raw"));
    let b = format!("{PLAIN}/{}:raw", repo("raw"));
    let d1 = lamina_in(&dir, &["pack", "./model/", "--dest", &a], &env)
        .ok()
        .stdout;
    let d2 = lamina_in(&dir, &["pack", "./model/", "--dest", &b, "--raw"], &env)
        .ok()
        .stdout;
    let digest = |o: &str| o.trim().rsplit('@').next().unwrap().to_string();
    assert_eq!(digest(&d1), digest(&d2));
    let base = format!("{PLAIN}/fixtures/base:latest");
    for (extra, what) in [
        (vec!["--tar"], "cannot be used with"),
        (
            vec!["--format", "modelkit"],
            "modelkit always holds its files in tars",
        ),
        (
            vec!["--format", "modelcar", "--base", &base],
            "modelcar always holds",
        ),
    ] {
        let c = format!("{PLAIN}/{}:refused", repo("raw"));
        let mut args = vec!["pack", "./model/", "--dest", &c, "--raw"];
        args.extend(extra.iter().copied());
        let e = lamina_in(&dir, &args, &[]).fails();
        assert_eq!(e.code, 2, "{args:?}: {}", e.stderr);
        assert!(e.stderr.contains(what), "{args:?}: {}", e.stderr);
        assert!(!resolves(&c, None), "{args:?} pushed");
    }
}
