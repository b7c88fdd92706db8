//! OCI image layouts: `lamina append` (olot's job) checked against olot itself, skopeo, umoci and
//! GNU tar; `oci:` and `oci-archive:` as source and destination of the other commands.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use lamina_tests::*;
use serde_json::Value;

fn olot() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let out = cmd(root().join("tests/harness/olot.sh").to_str().unwrap(), &[]).ok();
        PathBuf::from(out.stdout.trim())
    })
    .clone()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `skopeo copy` a registry image into a layout under `tag`.
fn pull_layout(reference: &str, layout: &Path, tag: &str) {
    cmd(
        "skopeo",
        &[
            "copy",
            "-q",
            "--src-tls-verify=false",
            &format!("docker://{reference}"),
            &format!("oci:{}:{tag}", layout.display()),
        ],
    )
    .ok();
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn blob_json(layout: &Path, digest: &str) -> Value {
    read_json(&blob(layout, digest))
}

/// The manifest `index.json` names (its only entry, or the one tagged `tag`).
fn image_manifest(layout: &Path, tag: &str) -> Value {
    let ix = read_json(&layout.join("index.json"));
    let ms = ix["manifests"].as_array().unwrap();
    let e = ms
        .iter()
        .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or(&ms[0]);
    blob_json(layout, e["digest"].as_str().unwrap())
}

/// One entry of a `tar -tv` listing.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TarEntry {
    mode: String,
    owner: String,
    size: u64,
    time: String,
    name: String,
}

/// GNU tar's listing of a layer blob (gzip detected by tar itself).
fn tar_list(path: &Path) -> Vec<TarEntry> {
    let out = cmd(
        "tar",
        &["-tv", "--numeric-owner", "--full-time", "-f", s(path)],
    )
    .ok();
    out.stdout
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            TarEntry {
                mode: f[0].to_string(),
                owner: f[1].to_string(),
                size: f[2].parse().unwrap(),
                time: format!("{} {}", f[3], f[4]),
                name: f[5..].join(" "),
            }
        })
        .collect()
}

/// `lamina append --json ARGS...`, which must succeed; its JSON.
fn append_json(args: &[&str]) -> Value {
    let mut all = vec!["append", "--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&lamina(&all).ok().stdout).unwrap()
}

/// Writes the model inputs used by several tests into `dir`.
fn model_inputs(dir: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir.join("tok")).unwrap();
    let weights = dir.join("model.safetensors");
    std::fs::write(&weights, random_bytes(3 << 20, 41)).unwrap();
    let config = dir.join("config.json");
    std::fs::write(&config, br#"{"hidden_size": 64}"#).unwrap();
    std::fs::write(dir.join("tok/vocab.txt"), "a b c\n".repeat(50)).unwrap();
    std::fs::write(dir.join("tok/merges.txt"), "a b\n").unwrap();
    let card = dir.join("README.md");
    std::fs::write(&card, "# A model\n\nIt predicts things.\n").unwrap();
    (weights, config, dir.join("tok"), card)
}

#[test]
fn append_to_a_skopeo_layout_then_push_it_and_unpack_it() {
    harness();
    let dir = tempdir("append-roundtrip");
    let layout = dir.join("layout");
    pull_layout(&format!("{PLAIN}/fixtures/base:latest"), &layout, "base");
    let base = image_manifest(&layout, "base");
    let base_layers = base["layers"].as_array().unwrap().len();
    let (weights, config, tok, card) = model_inputs(&dir.join("in"));

    let append = || append_json(&[s(&layout), s(&weights), s(&config), s(&tok), "-m", s(&card)]);
    let j = append();
    assert_eq!(j["updated"], 1, "{j}");
    assert_eq!(j["layers"].as_array().unwrap().len(), 4);

    // the layout is read by skopeo, pushed, and unpacked by umoci
    let r = format!("{PLAIN}/{}:v1", repo("append-roundtrip"));
    cmd(
        "skopeo",
        &[
            "copy",
            "-q",
            "--dest-tls-verify=false",
            &format!("oci:{}:base", layout.display()),
            &format!("docker://{r}"),
        ],
    )
    .ok();
    let rootfs = unpack(&r, None, &dir.join("unpacked"));
    let m = rootfs.join("models");
    assert_eq!(
        std::fs::read(m.join("model.safetensors")).unwrap(),
        std::fs::read(&weights).unwrap()
    );
    assert_eq!(
        std::fs::read(m.join("config.json")).unwrap(),
        std::fs::read(&config).unwrap()
    );
    assert_eq!(
        std::fs::read(m.join("tok/vocab.txt")).unwrap(),
        std::fs::read(tok.join("vocab.txt")).unwrap()
    );
    assert_eq!(
        std::fs::read(m.join("README.md")).unwrap(),
        std::fs::read(&card).unwrap()
    );
    assert!(rootfs.join("src/predict.py").exists(), "base layers kept");

    // the manifest: base layers unchanged, one layer per input, the card last and marked
    let man = raw_manifest(&r, None);
    let layers = man["layers"].as_array().unwrap();
    assert_eq!(layers.len(), base_layers + 4);
    assert_eq!(&layers[..base_layers], base["layers"].as_array().unwrap());
    let titles: Vec<&str> = layers[base_layers..]
        .iter()
        .map(|l| {
            l["annotations"]["org.opencontainers.image.title"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(
        titles,
        ["model.safetensors", "config.json", "tok", "README.md"]
    );
    let card_layer = &layers[base_layers + 3];
    assert_eq!(
        card_layer["annotations"]["io.opendatahub.modelcar.layer.type"],
        "modelcard"
    );
    assert_eq!(
        card_layer["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(
        man["annotations"]["io.opendatahub.layers.modelcard"],
        card_layer["digest"]
    );
    assert_eq!(
        layers[base_layers]["mediaType"], "application/vnd.oci.image.layer.v1.tar",
        "weights are stored uncompressed"
    );
    assert_eq!(
        layers[base_layers + 2]["annotations"]["olot.layer.content.type"],
        "directory"
    );

    // running again on the same files adds nothing and leaves index.json byte-identical
    let before = std::fs::read(layout.join("index.json")).unwrap();
    let j = append();
    assert_eq!(j["updated"], 0, "{j}");
    assert_eq!(std::fs::read(layout.join("index.json")).unwrap(), before);
}

/// What each tool added to a layout: new layer descriptors, their listings, manifest
/// annotations, and the config's new history entries.
struct Added {
    layers: Vec<Value>,
    listings: Vec<Vec<TarEntry>>,
    annotations: BTreeMap<String, String>,
    history: Vec<Value>,
    diff_ids: usize,
}

fn added(layout: &Path, base_layers: usize, base_history: usize) -> Added {
    let m = image_manifest(layout, "base");
    let layers: Vec<Value> = m["layers"].as_array().unwrap()[base_layers..].to_vec();
    let listings = layers
        .iter()
        .map(|l| tar_list(&blob(layout, l["digest"].as_str().unwrap())))
        .collect();
    let annotations = m["annotations"]
        .as_object()
        .map(|a| {
            a.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let c = blob_json(layout, m["config"]["digest"].as_str().unwrap());
    Added {
        layers,
        listings,
        annotations,
        history: c["history"].as_array().unwrap()[base_history..].to_vec(),
        diff_ids: c["rootfs"]["diff_ids"].as_array().unwrap().len(),
    }
}

#[test]
fn append_and_olot_differ_only_where_intended() {
    harness();
    let dir = tempdir("append-vs-olot");
    let a = dir.join("olot");
    let b = dir.join("lamina");
    pull_layout(&format!("{PLAIN}/fixtures/base:latest"), &a, "base");
    cmd("cp", &["-a", s(&a), s(&b)]).ok();
    let m0 = image_manifest(&a, "base");
    let base_layers = m0["layers"].as_array().unwrap().len();
    let c0 = blob_json(&a, m0["config"]["digest"].as_str().unwrap());
    let base_history = c0["history"].as_array().unwrap().len();
    let (weights, config, tok, card) = model_inputs(&dir.join("in"));
    let inputs = [s(&weights), s(&config), s(&tok)];

    let mut args = vec![s(&a)];
    args.extend(inputs);
    args.extend(["-m", s(&card)]);
    cmd(s(&olot()), &args).ok();
    let mut args = vec!["append", s(&b)];
    args.extend(inputs);
    args.extend(["-m", s(&card)]);
    lamina(&args).ok();

    let (o, l) = (
        added(&a, base_layers, base_history),
        added(&b, base_layers, base_history),
    );
    assert_eq!(o.layers.len(), 4);
    assert_eq!(l.layers.len(), 4);
    assert_eq!(o.diff_ids, l.diff_ids);
    assert_eq!(o.history.len(), l.history.len());
    for i in 0..4 {
        // same media types (weights uncompressed, card gzip)
        assert_eq!(
            o.layers[i]["mediaType"], l.layers[i]["mediaType"],
            "layer {i}"
        );
        // same annotations in the same order, except the content digest olot adds (lamina
        // does not hash every file a second time; the layer digest covers the content)
        let mut oa = o.layers[i]["annotations"].as_object().unwrap().clone();
        assert!(
            oa.shift_remove("olot.layer.content.digest").is_some() || i == 2,
            "olot marks file layers with their content digest"
        );
        let la = l.layers[i]["annotations"].as_object().unwrap();
        assert_eq!(
            oa.iter().collect::<Vec<_>>(),
            la.iter().collect::<Vec<_>>(),
            "layer {i} annotations"
        );
        // same files at the same paths with the same sizes; the intended differences: lamina
        // adds the parent directories (models/), uses modes 0644/0755 rather than 0664/0775,
        // mtime 0 (SOURCE_DATE_EPOCH) rather than the file's, and empty owner names
        let files = |v: &[TarEntry]| {
            v.iter()
                .filter(|e| !e.mode.starts_with('d'))
                .map(|e| (e.name.clone(), e.size, e.owner.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            files(&o.listings[i]),
            files(&l.listings[i]),
            "layer {i} files"
        );
        let dirs = |v: &[TarEntry]| {
            v.iter()
                .filter(|e| e.mode.starts_with('d'))
                .map(|e| e.name.trim_end_matches('/').to_string())
                .collect::<Vec<_>>()
        };
        let (od, ld) = (dirs(&o.listings[i]), dirs(&l.listings[i]));
        for d in &od {
            assert!(
                ld.contains(d),
                "layer {i}: olot has directory {d}, lamina not"
            );
        }
        for d in ld.iter().filter(|d| !od.contains(d)) {
            assert_eq!(
                d, "models",
                "layer {i}: the only extra directory is /models"
            );
        }
        for e in &l.listings[i] {
            assert!(e.mode == "-rw-r--r--" || e.mode == "drwxr-xr-x", "{e:?}");
            assert_eq!(e.owner, "0/0");
            assert_eq!(e.time, "2000-01-01 00:00:00", "{e:?}");
        }
        for e in &o.listings[i] {
            assert!(e.mode == "-rw-rw-r--" || e.mode == "drwxrwxr-x", "{e:?}");
        }
    }
    // manifest annotations: both point at their own card; olot also signs itself as author
    assert_eq!(
        o.annotations["io.opendatahub.layers.modelcard"],
        o.layers[3]["digest"].as_str().unwrap()
    );
    assert_eq!(
        l.annotations["io.opendatahub.layers.modelcard"],
        l.layers[3]["digest"].as_str().unwrap()
    );
    let mut oa = o.annotations.clone();
    assert_eq!(oa.remove("io.opendatahub.author").as_deref(), Some("olot"));
    assert_eq!(
        oa.keys().collect::<Vec<_>>(),
        l.annotations.keys().collect::<Vec<_>>()
    );
    // the files a modelcar consumer sees are the same: `lamina extract` gives /models of each
    for (layout, name) in [(&a, "olot"), (&b, "lamina")] {
        let out = dir.join(format!("x-{name}"));
        lamina(&[
            "extract",
            &format!("oci:{}:base", layout.display()),
            "-o",
            &format!("{}/", out.display()),
        ])
        .ok();
        for (rel, src) in [
            ("model.safetensors", weights.clone()),
            ("config.json", config.clone()),
            ("tok/vocab.txt", tok.join("vocab.txt")),
            ("README.md", card.clone()),
        ] {
            assert_eq!(
                std::fs::read(out.join(rel)).unwrap(),
                std::fs::read(&src).unwrap(),
                "{name}: {rel}"
            );
        }
    }
    // history: one entry per layer; lamina's reads like the Dockerfile line and carries the
    // weights mark (`lamina extract` and r8im find the layers by it)
    for (i, h) in l.history.iter().enumerate() {
        let t = o.layers[i]["annotations"]["org.opencontainers.image.title"]
            .as_str()
            .unwrap();
        assert_eq!(
            o.history[i]["created_by"]
                .as_str()
                .unwrap()
                .trim_end_matches(" (modelcard)"),
            format!("olot oci_layers_on_top {t}")
        );
        let mark = if i == 3 { "modelcard" } else { "weights" };
        assert!(
            h["created_by"]
                .as_str()
                .unwrap()
                .ends_with(&format!(" # {mark}")),
            "{h}"
        );
    }
}

fn copy_fixture(name: &str, to: &Path) -> PathBuf {
    let src = root().join("tests/fixtures/olot-tests-data").join(name);
    std::fs::create_dir_all(to).unwrap();
    let dst = to.join(name.replace('/', "-"));
    cmd("cp", &["-a", s(&src), s(&dst)]).ok();
    dst
}

/// Every image manifest reachable from index.json (through nested indexes), once each.
fn reachable_images(layout: &Path) -> Vec<Value> {
    fn walk(layout: &Path, d: &Value, out: &mut Vec<Value>, seen: &mut Vec<String>) {
        let digest = d["digest"].as_str().unwrap().to_string();
        let p = blob(layout, &digest);
        if !p.exists() || seen.contains(&digest) {
            return;
        }
        seen.push(digest);
        let v = read_json(&p);
        if let Some(ms) = v["manifests"].as_array() {
            assert_ne!(
                v["mediaType"], "application/vnd.docker.distribution.manifest.list.v2+json",
                "Docker list left in the layout"
            );
            for m in ms {
                walk(layout, m, out, seen);
            }
        } else {
            out.push(v);
        }
    }
    let (mut out, mut seen) = (Vec::new(), Vec::new());
    for e in read_json(&layout.join("index.json"))["manifests"]
        .as_array()
        .unwrap()
    {
        walk(layout, e, &mut out, &mut seen);
    }
    out
}

#[test]
fn append_handles_every_olot_test_layout_at_least_as_well_as_olot() {
    let dir = tempdir("olot-layouts");
    let sm = root().join("tests/fixtures/olot-tests-data/sample-model");
    let files = [sm.join("model.joblib"), sm.join("hello.md")];
    let card = sm.join("README.md");
    // layout, image manifests lamina updates
    let cases = [
        ("ocilayout1", 1), // sparse: one of the index's manifests is present
        ("ocilayout2", 2), // nested index, two platforms
        ("ocilayout3", 2), // nested index and the same manifests at the root
        ("ocilayout4", 1), // a modelcar made by an older olot
        ("ocilayout5", 1),
        ("dockerdist1", 2), // Docker manifests and list: converted to OCI
    ];
    for (name, updated) in cases {
        let l = copy_fixture(name, &dir.join("lamina"));
        let out = lamina(&[
            "append",
            s(&l),
            s(&files[0]),
            s(&files[1]),
            "-m",
            s(&card),
            "--json",
        ])
        .ok();
        let j: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(j["updated"], updated, "{name}: {j}");
        let new: Vec<&str> = j["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap())
            .collect();
        let images = reachable_images(&l);
        let with_layers = images
            .iter()
            .filter(|m| {
                let ls: Vec<&str> = m["layers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l["digest"].as_str().unwrap())
                    .collect();
                ls.ends_with(&new)
            })
            .count();
        assert_eq!(
            with_layers, updated,
            "{name}: every present image has the layers"
        );
        for m in &images {
            assert_eq!(
                m["mediaType"], "application/vnd.oci.image.manifest.v1+json",
                "{name}: {m}"
            );
            // each image's config lists one diff_id per layer
            let c = blob_json(&l, m["config"]["digest"].as_str().unwrap());
            assert_eq!(
                c["rootfs"]["diff_ids"].as_array().unwrap().len(),
                m["layers"].as_array().unwrap().len(),
                "{name}"
            );
        }
        // olot on the same layout: where it succeeds it updates as many images
        let o = copy_fixture(name, &dir.join("olot"));
        let r = cmd(
            s(&olot()),
            &[s(&o), s(&files[0]), s(&files[1]), "-m", s(&card)],
        );
        if r.code == 0 {
            let with = reachable_images(&o)
                .iter()
                .filter(|m| m["layers"].as_array().unwrap().len() > 3)
                .count();
            assert_eq!(with, updated, "{name}: olot updated {with}");
        } else {
            assert!(
                matches!(name, "ocilayout1" | "ocilayout4"),
                "{name}: olot failed unexpectedly: {}",
                r.stderr
            );
        }
    }

    // artifacts are not images: refused with a clear error, the layout left byte-identical
    for name in ["ociartifact1", "sample-model/oci"] {
        let l = copy_fixture(name, &dir.join("lamina"));
        let before = cmd(
            "find",
            &[s(&l), "-type", "f", "-newer", s(&l.join("oci-layout"))],
        )
        .stdout;
        let listing = cmd("ls", &["-lR", s(&l)]).stdout;
        let r = lamina(&["append", s(&l), s(&files[0]), "-m", s(&card)]);
        assert_eq!(r.code, 1, "{name}: {}", r.stderr);
        assert!(
            r.stderr.contains("no image manifest") && r.stderr.contains("artifact"),
            "{name}: {}",
            r.stderr
        );
        assert_eq!(cmd("ls", &["-lR", s(&l)]).stdout, listing, "{name} changed");
        assert_eq!(
            cmd(
                "find",
                &[s(&l), "-type", "f", "-newer", s(&l.join("oci-layout"))]
            )
            .stdout,
            before
        );
    }
}

#[test]
fn an_interrupted_append_leaves_the_previous_layout_valid() {
    harness();
    let dir = tempdir("append-kill");
    let layout = dir.join("layout");
    pull_layout(&format!("{PLAIN}/fixtures/base:latest"), &layout, "base");
    let index = std::fs::read(layout.join("index.json")).unwrap();
    let big = dir.join("big.bin");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(4 << 30).unwrap(); // sparse: quick to make, seconds to layer
    drop(f);
    let mut child = std::process::Command::new(lamina_bin())
        .args(["append", "-q", s(&layout), s(&big)])
        .spawn()
        .unwrap();
    // wait until the layer blob is being written, then kill the process mid-blob
    let blobs = layout.join("blobs/sha256");
    let t0 = std::time::Instant::now();
    loop {
        let writing = std::fs::read_dir(&blobs).unwrap().any(|e| {
            let e = e.unwrap();
            e.file_name().to_string_lossy().starts_with(".lamina-tmp")
                && e.metadata().unwrap().len() > 8 << 20
        });
        if writing {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "append ended before it was killed"
        );
        assert!(t0.elapsed().as_secs() < 60, "no blob being written");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(std::fs::read(layout.join("index.json")).unwrap(), index);
    // no half blob under a digest name: every named blob hashes to its name
    for e in std::fs::read_dir(&blobs).unwrap() {
        let e = e.unwrap();
        let n = e.file_name().to_string_lossy().into_owned();
        if !n.starts_with('.') {
            let out = cmd("sha256sum", &[s(&e.path())]).ok().stdout;
            assert!(out.starts_with(&n), "{n} does not hash to its name");
        }
    }
    // other tools read the layout as before
    let bundle = dir.join("bundle");
    cmd(
        "umoci",
        &[
            "unpack",
            "--rootless",
            "--image",
            &format!("{}:base", layout.display()),
            s(&bundle),
        ],
    )
    .ok();
    assert!(bundle.join("rootfs/src/predict.py").exists());
}

#[test]
fn symlinks_collisions_root_dir_and_removing_originals() {
    let dir = tempdir("append-inputs");
    let layout = copy_fixture("ocilayout5", &dir);
    // a Hugging Face cache: snapshot files are links into blobs/
    let hf = dir.join("hub/models--x--y");
    std::fs::create_dir_all(hf.join("blobs")).unwrap();
    std::fs::create_dir_all(hf.join("snapshots/abc/onnx")).unwrap();
    std::fs::write(hf.join("blobs/1111"), random_bytes(100_000, 5)).unwrap();
    std::fs::write(hf.join("blobs/2222"), b"{\"a\":1}").unwrap();
    std::os::unix::fs::symlink("../../blobs/1111", hf.join("snapshots/abc/model.bin")).unwrap();
    std::os::unix::fs::symlink(
        "../../../blobs/2222",
        hf.join("snapshots/abc/onnx/config.json"),
    )
    .unwrap();
    let snap = hf.join("snapshots/abc");

    // a directory: one layer, the links stored as the files they point to
    let j = append_json(&[s(&layout), s(&snap)]);
    let d = j["layers"][0]["digest"].as_str().unwrap();
    let names: Vec<(String, String)> = tar_list(&blob(&layout, d))
        .into_iter()
        .map(|e| (e.mode, e.name))
        .collect();
    assert!(
        names.contains(&("-rw-r--r--".into(), "models/abc/model.bin".into())),
        "{names:?}"
    );
    assert!(
        names.contains(&("-rw-r--r--".into(), "models/abc/onnx/config.json".into())),
        "{names:?}"
    );

    // a linked file keeps its own name (olot would name it after the blob, "1111")
    let j = append_json(&[s(&layout), s(&snap.join("model.bin"))]);
    assert_eq!(j["layers"][0]["path"], "/models/model.bin");

    // same-named files from two directories are refused, naming both, and nothing is written
    std::fs::write(dir.join("config.json"), b"{}").unwrap();
    let index = std::fs::read(layout.join("index.json")).unwrap();
    let r = lamina(&[
        "append",
        s(&layout),
        s(&snap.join("onnx/config.json")),
        s(&dir.join("config.json")),
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("onnx/config.json") && r.stderr.contains("--root-dir"),
        "{}",
        r.stderr
    );
    assert_eq!(std::fs::read(layout.join("index.json")).unwrap(), index);

    // --root-dir keeps them apart
    let out = lamina(&[
        "append",
        "--json",
        s(&layout),
        "--root-dir",
        s(&dir),
        s(&snap.join("onnx/config.json")),
        s(&dir.join("config.json")),
    ])
    .ok();
    let j: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        j["layers"][0]["path"],
        "/models/hub/models--x--y/snapshots/abc/onnx/config.json"
    );
    assert_eq!(j["layers"][1]["path"], "/models/config.json");
    // an input outside the root is refused
    let r = lamina(&[
        "append",
        s(&layout),
        "--root-dir",
        s(&snap),
        s(&dir.join("config.json")),
    ]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("not under --root-dir"), "{}", r.stderr);

    // --remove-originals removes what was given (a link, not its target), after the layout is
    // written; the card stays unless =all
    let card = dir.join("README.md");
    std::fs::write(&card, "# card\n").unwrap();
    lamina(&[
        "append",
        s(&layout),
        "--remove-originals",
        s(&snap.join("model.bin")),
        "-m",
        s(&card),
    ])
    .ok();
    assert!(std::fs::symlink_metadata(snap.join("model.bin")).is_err());
    assert!(hf.join("blobs/1111").exists(), "the link's target is kept");
    assert!(card.exists());
    lamina(&[
        "append",
        s(&layout),
        "--remove-originals=all",
        "-m",
        s(&card),
    ])
    .ok();
    assert!(!card.exists());
}

#[test]
fn modelpack_manifest_shares_the_image_blobs() {
    harness();
    let dir = tempdir("append-modelpack");
    let layout = copy_fixture("ocilayout2", &dir);
    let (weights, config, _tok, card) = model_inputs(&dir.join("in"));
    let out = lamina(&[
        "append",
        "--json",
        "--modelpack",
        s(&layout),
        s(&weights),
        s(&config),
        "-m",
        s(&card),
    ])
    .ok();
    let j: Value = serde_json::from_str(&out.stdout).unwrap();
    let ix = read_json(&layout.join("index.json"));
    let e = ix["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == "modelpack")
        .unwrap();
    assert_eq!(
        e["artifactType"],
        "application/vnd.cncf.model.manifest.v1+json"
    );
    assert_eq!(e["digest"], j["modelpack"]);
    // skopeo reads it
    let raw = cmd(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci:{}:modelpack", layout.display()),
        ],
    )
    .ok();
    let m: Value = serde_json::from_str(&raw.stdout).unwrap();
    assert_eq!(
        m["artifactType"],
        "application/vnd.cncf.model.manifest.v1+json"
    );
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.cncf.model.config.v1+json"
    );
    let cfg = blob_json(&layout, m["config"]["digest"].as_str().unwrap());
    assert_eq!(cfg["modelfs"]["type"], "layers");
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    for (i, l) in layers.iter().enumerate() {
        assert_eq!(l["digest"], j["layers"][i]["digest"], "same blob");
        assert_eq!(cfg["modelfs"]["diffIds"][i], j["layers"][i]["diffId"]);
    }
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.cncf.model.weight.v1.tar"
    );
    assert_eq!(
        layers[0]["annotations"]["org.cncf.model.filepath"],
        "models/model.safetensors"
    );
    assert_eq!(
        layers[2]["mediaType"],
        "application/vnd.cncf.model.doc.v1.tar+gzip"
    );
}

#[test]
fn affix_modelcar_in_the_registry_matches_append() {
    harness();
    let dir = tempdir("affix-modelcar");
    let (weights, config, tok, card) = model_inputs(&dir.join("in"));
    let layout = dir.join("layout");
    pull_layout(&format!("{PLAIN}/fixtures/base:v2s2"), &layout, "base");
    let appended = lamina(&[
        "append",
        "--json",
        s(&layout),
        s(&weights),
        s(&config),
        s(&tok),
        "-m",
        s(&card),
    ])
    .ok();
    let j: Value = serde_json::from_str(&appended.stdout).unwrap();

    let r = format!("{PLAIN}/{}:v1", repo("affix-modelcar"));
    lamina(&[
        "affix",
        "--modelcar",
        "--base",
        &format!("{PLAIN}/fixtures/base:v2s2"),
        "--dest",
        &r,
        s(&weights),
        s(&config),
        s(&tok),
        "-m",
        s(&card),
    ])
    .ok();
    let m = raw_manifest(&r, None);
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    let layers = m["layers"].as_array().unwrap();
    let new = &layers[layers.len() - 4..];
    for (i, l) in new.iter().enumerate() {
        assert_eq!(
            l["digest"], j["layers"][i]["digest"],
            "deterministic: same blob as append"
        );
    }
    assert_eq!(
        m["annotations"]["io.opendatahub.layers.modelcard"],
        new[3]["digest"]
    );
    let rootfs = unpack(&r, None, &dir.join("unpacked"));
    assert_eq!(
        std::fs::read(rootfs.join("models/model.safetensors")).unwrap(),
        std::fs::read(&weights).unwrap()
    );
    assert!(rootfs.join("models/README.md").exists());
    // and extract finds the model files by their history mark
    let out = dir.join("x");
    lamina(&[
        "extract",
        &r,
        "--path",
        "/models",
        "-o",
        &format!("{}/", out.display()),
    ])
    .ok();
    assert_eq!(
        std::fs::read(out.join("config.json")).unwrap(),
        std::fs::read(&config).unwrap()
    );
}

#[test]
fn affix_zstd_and_extract_read_and_write_layouts_and_archives() {
    harness();
    let dir = tempdir("oci-transports");
    let w = dir.join("w.bin");
    let bytes = random_bytes(2 << 20, 77);
    std::fs::write(&w, &bytes).unwrap();
    let layout = dir.join("out");

    // registry -> layout
    let out = lamina(&[
        "affix",
        "--base",
        &format!("{PLAIN}/fixtures/base:latest"),
        "--dest",
        &format!("oci:{}:v1", layout.display()),
        s(&w),
    ])
    .ok();
    assert!(
        out.stdout
            .starts_with(&format!("oci:{}@sha256:", layout.display())),
        "{}",
        out.stdout
    );
    let bundle = dir.join("bundle");
    cmd(
        "umoci",
        &[
            "unpack",
            "--rootless",
            "--image",
            &format!("{}:v1", layout.display()),
            s(&bundle),
        ],
    )
    .ok();
    assert_eq!(
        std::fs::read(bundle.join("rootfs/src/weights/w.bin")).unwrap(),
        bytes
    );
    for e in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let m = e.unwrap().metadata().unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(m.permissions().mode() & 0o777, 0o644, "normal blob modes");
    }

    // layout -> registry, twice: the second push sends only the new layer and config
    let r = format!("{PLAIN}/{}", repo("oci-transports"));
    lamina(&[
        "affix",
        "--base",
        &format!("oci:{}:v1", layout.display()),
        "--dest",
        &format!("{r}:a"),
        s(&w),
    ])
    .ok();
    let repo_path = r.trim_start_matches(&format!("{PLAIN}/"));
    let puts = || log_lines(PLAIN, &format!("\"PUT /v2/{repo_path}/blobs/uploads/")).len();
    let before = puts();
    std::fs::write(dir.join("w2.bin"), random_bytes(1 << 20, 78)).unwrap();
    lamina(&[
        "affix",
        "--base",
        &format!("oci:{}:v1", layout.display()),
        "--dest",
        &format!("{r}:b"),
        s(&dir.join("w2.bin")),
    ])
    .ok();
    assert_eq!(
        puts() - before,
        2,
        "only the new layer and the config are uploaded"
    );
    let rootfs = unpack(&format!("{r}:b"), None, &dir.join("unpacked"));
    assert_eq!(
        std::fs::read(rootfs.join("src/weights/w.bin")).unwrap(),
        bytes
    );

    // layout -> archive (zstd), read by skopeo; archive -> extract
    let ar = dir.join("img.tar");
    lamina(&[
        "zstd",
        &format!("oci:{}:v1", layout.display()),
        &format!("oci-archive:{}:z", ar.display()),
    ])
    .ok();
    let raw = cmd(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci-archive:{}:z", ar.display()),
        ],
    )
    .ok();
    let m: Value = serde_json::from_str(&raw.stdout).unwrap();
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    let x = dir.join("x");
    lamina(&[
        "extract",
        &format!("oci-archive:{}:z", ar.display()),
        "-o",
        &format!("{}/", x.display()),
    ])
    .ok();
    assert_eq!(std::fs::read(x.join("w.bin")).unwrap(), bytes);
    assert!(
        !std::fs::read_dir(&dir).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".lamina-")),
        "no temporary files left beside the archive"
    );

    // a layout's missing tag is a clear error naming the tags it has
    let r = lamina(&["layers", &format!("oci:{}:nope", layout.display())]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("\"nope\"") && r.stderr.contains("v1"),
        "{}",
        r.stderr
    );
    // a failed command creates no destination layout
    let nowhere = dir.join("never");
    let r = lamina(&[
        "affix",
        "--base",
        &format!("oci:{}:nope", layout.display()),
        "--dest",
        &format!("oci:{}", nowhere.display()),
        s(&w),
    ]);
    assert_eq!(r.code, 1);
    assert!(!nowhere.exists());
}

#[test]
fn files_over_8_gib_get_gnu_sizes_that_tar_reads() {
    let dir = tempdir("append-huge");
    let layout = copy_fixture("ocilayout5", &dir);
    let huge = dir.join("huge.bin");
    let size: u64 = 9 << 30; // over the 8 GiB of an octal tar size field
    let f = std::fs::File::create(&huge).unwrap();
    f.set_len(size).unwrap(); // sparse: zeros, so zstd keeps the blob small
    drop(f);
    let out = lamina(&[
        "append",
        "--json",
        "--compression",
        "zstd",
        s(&layout),
        s(&huge),
    ])
    .ok();
    let j: Value = serde_json::from_str(&out.stdout).unwrap();
    let l = &j["layers"][0];
    assert_eq!(l["compression"], "zstd");
    let entries = tar_list(&blob(&layout, l["digest"].as_str().unwrap()));
    let e = entries
        .iter()
        .find(|e| e.name == "models/huge.bin")
        .unwrap();
    assert_eq!(e.size, size, "{entries:?}");
}

/// `affix --modelcar` onto an index edits every platform by default, as `append` and olot do
/// (it once edited linux/amd64 only and left the others bare).
#[test]
fn affix_modelcar_onto_an_index_edits_every_platform_by_default() {
    harness();
    let dir = tempdir("modelcar-index");
    std::fs::write(dir.join("model.onnx"), random_bytes(1 << 20, 5)).unwrap();
    let dest = format!("{PLAIN}/{}:v1", repo("modelcar-index"));
    lamina(&[
        "affix",
        "--modelcar",
        "--base",
        &format!("{PLAIN}/fixtures/multi:latest"),
        "--dest",
        &dest,
        s(&dir.join("model.onnx")),
    ])
    .ok();
    let ix = raw_manifest(&dest, None);
    let base = raw_manifest(&format!("{PLAIN}/fixtures/multi:latest"), None);
    let entries = ix["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), base["manifests"].as_array().unwrap().len());
    let mut edited = 0;
    for (e, b) in entries.iter().zip(base["manifests"].as_array().unwrap()) {
        if b["platform"]["os"] == "unknown" {
            continue;
        }
        let m = raw_manifest(
            &format!(
                "{PLAIN}/{}@{}",
                repo("modelcar-index"),
                e["digest"].as_str().unwrap()
            ),
            None,
        );
        let last = m["layers"].as_array().unwrap().last().unwrap();
        assert_eq!(
            last["annotations"]["org.opencontainers.image.title"], "model.onnx",
            "{}: {m}",
            e["platform"]
        );
        edited += 1;
    }
    assert!(edited >= 2, "{ix}");
}
