//! Real model folders, given the way users type them: relative paths, `./dir/`, `.`, `../dir`,
//! absolute paths, through a symlinked directory or parent, from another working directory.
//! Results are checked with tools lamina did not write: podman (the files as a container
//! runtime mounts them), tar, skopeo.
//!
//! Regression (issue 15, point 1): every spelling but an absolute canonical path flattened a
//! nested folder (`sub/deeper/notes.txt` landed at `src/weights/notes.txt`), and a diffusers
//! folder (`unet/config.json`, `vae/config.json`) failed with "two inputs would both be
//! written"; the suite had only used absolute paths to its own fixtures.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::Path;

use lamina_tests::models::{hf_cache, hf_folder, under};
use lamina_tests::*;

fn digest_of(stdout: &str) -> String {
    stdout.trim().rsplit_once('@').unwrap().1.to_string()
}

fn base() -> String {
    format!("{PLAIN}/fixtures/base:latest")
}

/// `proj/weights` (an HF folder), `proj/other/`, `proj/alias -> weights`, `plink -> proj`.
fn project(dir: &Path) -> BTreeMap<String, String> {
    let want = hf_folder(&dir.join("proj/weights"));
    std::fs::create_dir_all(dir.join("proj/other")).unwrap();
    symlink("weights", dir.join("proj/alias")).unwrap();
    symlink("proj", dir.join("plink")).unwrap();
    want
}

#[test]
fn affix_nested_model_folder_is_the_same_layer_for_every_spelling() {
    harness();
    let dir = tempdir("inputs-affix");
    let want = project(&dir);
    let abs = dir.join("proj/weights").canonicalize().unwrap();
    let abs = abs.to_str().unwrap();
    let proj = dir.join("proj");
    let spellings: Vec<(std::path::PathBuf, &str)> = vec![
        (proj.clone(), "./weights/"),
        (proj.clone(), "weights"),
        (proj.join("weights"), "."),
        (proj.join("other"), "../weights"),
        (dir.to_path_buf(), abs),
        (proj.clone(), "alias"),
        (proj.clone(), "alias/"),
        (dir.to_path_buf(), "plink/weights/"),
        (dir.join("plink"), "./weights"),
    ];
    let repo = repo("spellings");
    let mut digests = Vec::new();
    for (i, (cwd, arg)) in spellings.iter().enumerate() {
        let dest = format!("{PLAIN}/{repo}:s{i}");
        let out = lamina_in(
            cwd,
            &["affix", "--base", &base(), "--dest", &dest, arg],
            &[],
        )
        .ok();
        assert!(
            !out.stderr.contains("warning"),
            "{arg} in {}: {}",
            cwd.display(),
            out.stderr
        );
        digests.push((
            format!("{arg} in {}", cwd.display()),
            digest_of(&out.stdout),
        ));
    }
    for (what, d) in &digests {
        assert_eq!(
            d, &digests[0].1,
            "{what} made another image than {}",
            digests[0].0
        );
    }
    // the files as a container runtime sees them: the whole tree, same-named files apart
    let got = podman_listing(&format!("{PLAIN}/{repo}:s0"), "/src/weights");
    assert_eq!(got, want);
    // weights are stored uncompressed (auto): the layer digest is its diff_id
    let m = raw_manifest(&format!("{PLAIN}/{repo}:s0"), None);
    assert_eq!(
        m["layers"].as_array().unwrap().last().unwrap()["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
}

#[test]
fn affix_hf_cache_snapshot_stores_the_blobs_under_the_link_names() {
    harness();
    let dir = tempdir("inputs-hfcache");
    let (snap, want) = hf_cache(&dir.join("hub"));
    let repo_dir = snap.parent().unwrap().parent().unwrap();
    let rev = snap.file_name().unwrap().to_str().unwrap();
    let dest = format!("{PLAIN}/{}:v1", repo("hfcache"));
    lamina_in(
        repo_dir,
        &[
            "affix",
            "--base",
            &base(),
            "--dest",
            &dest,
            &format!("./snapshots/{rev}/"),
        ],
        &[],
    )
    .ok();
    assert_eq!(podman_listing(&dest, "/src/weights"), want);
}

fn tar_names(path: &Path) -> Vec<String> {
    let out = cmd("tar", &["-tf", path.to_str().unwrap()]).ok();
    let mut v: Vec<String> = out
        .stdout
        .lines()
        .map(|l| l.trim_end_matches('/').to_string())
        .collect();
    v.sort();
    v
}

fn last_layer_blob(layout: &Path) -> std::path::PathBuf {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(digest)).unwrap()).unwrap();
    let last = m["layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    blob(&last)
}

#[test]
fn append_nested_folder_keeps_its_tree_for_every_spelling() {
    harness();
    let dir = tempdir("inputs-append");
    let want = project(&dir);
    let proj = dir.join("proj");
    let pristine = dir.join("pristine");
    cmd(
        "skopeo",
        &[
            "copy",
            "-q",
            "--src-tls-verify=false",
            &format!("docker://{}", base()),
            &format!("oci:{}:latest", pristine.display()),
        ],
    )
    .ok();
    let abs = proj.join("weights").canonicalize().unwrap();
    let abs = abs.to_str().unwrap().to_string();
    // (cwd, layout as typed, input as typed)
    let spellings: Vec<(std::path::PathBuf, String, &str)> = vec![
        (proj.clone(), "../l0".into(), "./weights/"),
        (proj.clone(), "../l1".into(), "weights"),
        (proj.join("weights"), "../../l2".into(), "."),
        (
            proj.join("other"),
            format!("{}/l3", dir.display()),
            "../weights",
        ),
        (dir.to_path_buf(), "l4/".into(), &abs),
        (dir.join("plink"), "../l5".into(), "./weights"),
    ];
    let mut blobs = Vec::new();
    for (i, (cwd, layout, arg)) in spellings.iter().enumerate() {
        cmd(
            "cp",
            &[
                "-a",
                pristine.to_str().unwrap(),
                dir.join(format!("l{i}")).to_str().unwrap(),
            ],
        )
        .ok();
        lamina_in(cwd, &["append", layout, arg], &[]).ok();
        blobs.push(last_layer_blob(&dir.join(format!("l{i}"))));
    }
    for b in &blobs {
        assert_eq!(b.file_name(), blobs[0].file_name(), "{}", b.display());
    }
    // tar (GNU) reads the layer: the folder's tree under models/weights
    let mut expected: Vec<String> = under("models/weights", &want).keys().cloned().collect();
    expected.push("models".into());
    expected.sort();
    assert_eq!(tar_names(&blobs[0]), expected);
    // a symlinked directory keeps its own name, with the whole tree below it
    cmd(
        "cp",
        &[
            "-a",
            pristine.to_str().unwrap(),
            dir.join("la").to_str().unwrap(),
        ],
    )
    .ok();
    lamina_in(&proj, &["append", "../la", "alias/"], &[]).ok();
    let names = tar_names(&last_layer_blob(&dir.join("la")));
    assert!(
        names.contains(&"models/alias/sub/deeper/notes.txt".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"models/alias/vae/config.json".to_string()),
        "{names:?}"
    );
}

#[test]
fn extract_writes_the_tree_for_relative_outputs_and_a_symlinked_tmpdir() {
    harness();
    let dir = tempdir("inputs-extract");
    let want = project(&dir);
    let dest = format!("{PLAIN}/{}:v1", repo("extract-spellings"));
    lamina_in(
        &dir.join("proj"),
        &["affix", "--base", &base(), "--dest", &dest, "weights"],
        &[],
    )
    .ok();
    let work = dir.join("work");
    std::fs::create_dir_all(work.join("cwd")).unwrap();
    // -o DIR/ relative, and from another directory
    lamina_in(&work.join("cwd"), &["extract", &dest, "-o", "./out/"], &[]).ok();
    assert_eq!(tree_listing(&work.join("cwd/out")), want);
    lamina_in(
        &work.join("cwd"),
        &["extract", &dest, "-o", "../out2/"],
        &[],
    )
    .ok();
    assert_eq!(tree_listing(&work.join("out2")), want);
    // -o FILE and stdout, with TMPDIR reached through a symlink
    std::fs::create_dir_all(dir.join("realtmp")).unwrap();
    symlink(dir.join("realtmp"), dir.join("tmplink")).unwrap();
    let tmp = dir.join("tmplink");
    let env = [("TMPDIR", tmp.to_str().unwrap())];
    lamina_in(&work.join("cwd"), &["extract", &dest, "-o", "w.tar"], &env).ok();
    let x = work.join("x");
    std::fs::create_dir_all(&x).unwrap();
    cmd(
        "tar",
        &[
            "-xf",
            work.join("cwd/w.tar").to_str().unwrap(),
            "-C",
            x.to_str().unwrap(),
        ],
    )
    .ok();
    assert_eq!(tree_listing(&x), want);
    // the tar on stdout (bytes, so not through `Run`)
    let out = lamina_command(&["extract", &dest], &env)
        .current_dir(work.join("cwd"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(work.join("s.tar"), &out.stdout).unwrap();
    let y = work.join("y");
    std::fs::create_dir_all(&y).unwrap();
    cmd(
        "tar",
        &[
            "-xf",
            work.join("s.tar").to_str().unwrap(),
            "-C",
            y.to_str().unwrap(),
        ],
    )
    .ok();
    assert_eq!(tree_listing(&y), want);
    // `-o -` is stdout too, as for tar and crane (regression: it wrote a file named `-`)
    let dash = lamina_command(&["extract", &dest, "-o", "-"], &env)
        .current_dir(work.join("cwd"))
        .output()
        .unwrap();
    assert!(
        dash.status.success(),
        "{}",
        String::from_utf8_lossy(&dash.stderr)
    );
    assert_eq!(dash.stdout, out.stdout, "the same tar on stdout");
    assert!(!work.join("cwd/-").exists(), "no file named -");
    // nothing left in the temporary directory
    assert_eq!(std::fs::read_dir(dir.join("realtmp")).unwrap().count(), 0);
}
