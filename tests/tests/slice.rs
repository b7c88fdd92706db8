//! `lamina slice`: delta archives moved from an "online" registry (plain, :5100) to an "offline"
//! one (Basic auth, :5101) and to layouts; checked with skopeo, umoci and GNU tar.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::path::Path;

use lamina_tests::*;
use serde_json::Value;

const CREDS: &str = "testuser:testpass";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// lamina with the offline registry's credentials.
fn lamina_offline(args: &[&str]) -> Run {
    lamina_env(
        args,
        &[("LAMINA_USERNAME", USER), ("LAMINA_PASSWORD", PASS)],
    )
}

/// `slice load ARCHIVE --dest DEST --from fixtures/base` into the offline registry.
fn load_offline(archive: &Path, dest: &str) -> Run {
    lamina_offline(&[
        "slice",
        "load",
        s(archive),
        "--dest",
        dest,
        "--from",
        "fixtures/base",
    ])
}

/// An image online: fixtures/base plus a weights layer.
fn online_image(name: &str, dir: &Path, base: &str) -> (String, Vec<u8>) {
    let w = dir.join("weights.bin");
    let bytes = random_bytes(4 << 20, 99);
    std::fs::write(&w, &bytes).unwrap();
    let r = format!("{PLAIN}/{}:v1", repo(name));
    lamina(&[
        "affix",
        "--base",
        &format!("{PLAIN}/{base}"),
        "--dest",
        &r,
        s(&w),
    ])
    .ok();
    (r, bytes)
}

fn digest_of(reference: &str, creds: Option<&str>) -> String {
    let raw = skopeo_inspect(reference, creds).ok().stdout;
    sha256(raw.as_bytes())
}

fn tag_exists(reference: &str) -> bool {
    resolves(reference, Some(CREDS))
}

#[test]
fn save_then_load_into_the_offline_registry_keeps_the_digest() {
    harness();
    let dir = tempdir("slice-roundtrip");
    // the base under a repository path the offline registry does not have, so that the load
    // cannot find it on its own (see the next test for that)
    let mirror = format!("{}-base:latest", repo("slice-roundtrip"));
    cmd(
        "skopeo",
        &[
            "copy",
            "-q",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &format!("docker://{PLAIN}/fixtures/base:latest"),
            &format!("docker://{PLAIN}/{mirror}"),
        ],
    )
    .ok();
    let (online, bytes) = online_image("slice-roundtrip", &dir, &mirror);
    let archive = dir.join("d.tar");
    let out = lamina(&[
        "slice",
        "save",
        &online,
        "--base",
        &format!("{PLAIN}/{mirror}"),
        "-o",
        s(&archive),
        "--json",
    ])
    .ok();
    let j: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(j["omitted"]["blobs"], 2, "{j}");

    // the archive holds the manifest, config and only the new layer, and skopeo reads it
    let listing = cmd("tar", &["-tf", s(&archive)]).ok().stdout;
    let blobs: Vec<&str> = listing
        .lines()
        .filter(|l| l.starts_with("blobs/sha256/") && l.len() > 13)
        .collect();
    assert_eq!(blobs.len(), 3, "{listing}");
    let m = raw_manifest(&online, None);
    for l in &m["layers"].as_array().unwrap()[..2] {
        let hex = l["digest"].as_str().unwrap().trim_start_matches("sha256:");
        assert!(!listing.contains(hex), "base layer {hex} left out");
    }
    cmd(
        "skopeo",
        &["inspect", &format!("oci-archive:{}:v1", archive.display())],
    )
    .ok();
    let ls = lamina(&["slice", "ls", s(&archive)]).ok();
    assert!(
        ls.stdout.contains("saved") && ls.stdout.contains("slice-roundtrip"),
        "{}",
        ls.stdout
    );

    // the offline registry lacks the base in the target repository: refused, nothing written
    let offline = format!("{BASIC}/{}:v1", repo("slice-roundtrip"));
    let r = lamina_offline(&["slice", "load", s(&archive), "--dest", &offline]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("lacks 2 of the 2 base blobs"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("--from"), "{}", r.stderr);
    assert!(!tag_exists(&offline), "no tag after a refused load");

    // with the base mounted from where it is, the image arrives with its digest
    let out = load_offline(&archive, &offline).ok();
    let want = digest_of(&online, None);
    assert!(
        out.stdout.trim().ends_with(&want),
        "{} vs {want}",
        out.stdout
    );
    assert_eq!(digest_of(&offline, Some(CREDS)), want);
    let rootfs = unpack(&offline, Some(CREDS), &dir.join("unpacked"));
    assert_eq!(
        std::fs::read(rootfs.join("src/weights/weights.bin")).unwrap(),
        bytes
    );
    assert!(rootfs.join("src/predict.py").exists());
}

#[test]
fn damaged_and_truncated_archives_are_refused_before_any_tag() {
    harness();
    let dir = tempdir("slice-bad");
    let (online, _) = online_image("slice-bad", &dir, "fixtures/base:latest");
    let archive = dir.join("d.tar");
    lamina(&[
        "slice",
        "save",
        &online,
        "--base",
        &format!("{PLAIN}/fixtures/base:latest"),
        "-o",
        s(&archive),
    ])
    .ok();
    let good = std::fs::read(&archive).unwrap();

    // one byte flipped inside the weights layer
    let mut bad = good.clone();
    let at = good.len() - (2 << 20);
    bad[at] ^= 0x55;
    let flipped = dir.join("flipped.tar");
    std::fs::write(&flipped, &bad).unwrap();
    let dest = format!("{BASIC}/{}:flipped", repo("slice-bad"));
    let r = load_offline(&flipped, &dest);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("digest"), "{}", r.stderr);
    assert!(!tag_exists(&dest));

    // cut in the middle of the layer, and cut where the layer's member would begin (the
    // archive then ends cleanly after the manifests, without its end marker)
    let meta: Value =
        serde_json::from_str(&lamina(&["slice", "ls", "--json", s(&archive)]).ok().stdout).unwrap();
    let layer = meta["included"][0]["size"].as_u64().unwrap() as usize;
    let boundary = good.len() - 1024 - layer.div_ceil(512) * 512 - 512;
    for (name, len) in [("mid", good.len() / 2), ("boundary", boundary)] {
        let cut = dir.join(format!("{name}.tar"));
        std::fs::write(&cut, &good[..len]).unwrap();
        let dest = format!("{BASIC}/{}:{name}", repo("slice-bad"));
        let r = load_offline(&cut, &dest);
        assert_eq!(r.code, 1, "{name}: {}", r.stderr);
        assert!(
            r.stderr.contains("truncated") || r.stderr.contains("size"),
            "{name}: {}",
            r.stderr
        );
        assert!(!tag_exists(&dest), "{name}: no tag");
    }

    // a file that is not a slice
    let other = dir.join("other.tar");
    cmd("tar", &["-cf", s(&other), "-C", s(&dir), "flipped.tar"]).ok();
    let r = lamina(&[
        "slice",
        "load",
        s(&other),
        "--dest",
        &format!("oci:{}", dir.join("x").display()),
    ]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("lamina-slice.json"), "{}", r.stderr);
}

#[test]
fn a_multi_platform_image_through_a_pipe_into_a_layout() {
    harness();
    let dir = tempdir("slice-pipe");
    let w = dir.join("w.bin");
    std::fs::write(&w, random_bytes(1 << 20, 3)).unwrap();
    let online = format!("{PLAIN}/{}:v1", repo("slice-pipe"));
    lamina(&[
        "affix",
        "--platform",
        "all",
        "--base",
        &format!("{PLAIN}/fixtures/multi:latest"),
        "--dest",
        &online,
        s(&w),
    ])
    .ok();
    // the offline site: a layout holding the base image (every platform)
    let layout = dir.join("site");
    cmd(
        "skopeo",
        &[
            "copy",
            "-q",
            "--all",
            "--src-tls-verify=false",
            &format!("docker://{PLAIN}/fixtures/multi:latest"),
            &format!("oci:{}:base", layout.display()),
        ],
    )
    .ok();
    let script = format!(
        "set -o pipefail; {bin} slice save {online} --base {PLAIN}/fixtures/multi:latest -o - \
         | {bin} slice load - --dest oci:{site}:v1",
        bin = lamina_bin().display(),
        site = layout.display()
    );
    let out = cmd("bash", &["-c", &script]).ok();
    let want = digest_of(&online, None);
    assert!(out.stdout.trim().ends_with(&want), "{}", out.stdout);
    // the layout now has the image: skopeo reads every platform, umoci unpacks amd64
    let raw = cmd(
        "skopeo",
        &["inspect", "--raw", &format!("oci:{}:v1", layout.display())],
    )
    .ok();
    assert_eq!(sha256(raw.stdout.as_bytes()), want);
    cmd(
        "skopeo",
        &[
            "copy",
            "-q",
            "--all",
            &format!("oci:{}:v1", layout.display()),
            &format!("oci:{}:copy", dir.join("copy").display()),
        ],
    )
    .ok();
}

#[test]
fn docker_images_layouts_and_a_manifest_pointing_nowhere() {
    harness();
    let dir = tempdir("slice-more");
    // a Docker v2 image, sliced from a layout copy of it against a layout copy of its base
    let (online, _) = online_image("slice-more", &dir, "fixtures/base:v2s2");
    let src = dir.join("src");
    for (r, tag) in [
        (online.as_str(), "img"),
        (&format!("{PLAIN}/fixtures/base:v2s2"), "base"),
    ] {
        cmd(
            "skopeo",
            &[
                "copy",
                "-q",
                "--preserve-digests",
                "--src-tls-verify=false",
                &format!("docker://{r}"),
                &format!("oci:{}:{tag}", src.display()),
            ],
        )
        .ok();
    }
    let archive = dir.join("d.tar");
    lamina(&[
        "slice",
        "save",
        &format!("oci:{}:img", src.display()),
        "--base",
        &format!("oci:{}:base", src.display()),
        "-o",
        s(&archive),
    ])
    .ok();
    let offline = format!("{BASIC}/{}:v2s2", repo("slice-more"));
    let out = load_offline(&archive, &offline).ok();
    let want = digest_of(&online, None);
    assert!(out.stdout.trim().ends_with(&want), "{}", out.stdout);
    let m = raw_manifest(&offline, Some(CREDS));
    assert_eq!(
        m["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );

    // an archive whose metadata forgets a base blob the manifest needs: refused before writing
    let x = dir.join("x");
    std::fs::create_dir_all(&x).unwrap();
    cmd("tar", &["-xf", s(&archive), "-C", s(&x)]).ok();
    let order: Vec<String> = cmd("tar", &["-tf", s(&archive)])
        .ok()
        .stdout
        .lines()
        .filter(|l| !l.ends_with('/'))
        .map(str::to_string)
        .collect();
    let meta_path = x.join("lamina-slice.json");
    let mut meta: Value = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    let forgotten = meta["omitted"].as_array_mut().unwrap().remove(0);
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
    let forged = dir.join("forged.tar");
    let mut args = vec![
        "-cf".to_string(),
        s(&forged).to_string(),
        "-C".into(),
        s(&x).into(),
    ];
    args.extend(order);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cmd("tar", &args).ok();
    let dest = format!("{BASIC}/{}:forged", repo("slice-more"));
    let r = load_offline(&forged, &dest);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(forgotten["digest"].as_str().unwrap())
            && r.stderr
                .contains("neither in the archive nor listed as omitted"),
        "{}",
        r.stderr
    );
    assert!(!tag_exists(&dest));
}

/// `--from` takes a reference of the destination registry too (`HOST/repo:tag`), refuses one of
/// another registry, and without it the load tries each base's own repository path there (a
/// site that mirrored `fixtures/base` under the same name needs no `--from`).
#[test]
fn slice_load_from_takes_a_reference_and_tries_each_bases_own_path() {
    harness();
    let dir = tempdir("slice-from");
    let (online, _) = online_image("slice-from", &dir, "fixtures/base:latest");
    let archive = dir.join("d.tar");
    lamina(&[
        "slice",
        "save",
        &online,
        "--base",
        &format!("{PLAIN}/fixtures/base:latest"),
        "-o",
        s(&archive),
    ])
    .ok();
    let want = digest_of(&online, None);
    // no --from: BASIC has fixtures/base, the base's own path
    let a = format!("{BASIC}/{}:a", repo("slice-from"));
    let out = lamina_offline(&["slice", "load", s(&archive), "--dest", &a]).ok();
    assert!(out.stdout.trim().ends_with(&want), "{}", out.stdout);
    // --from as a full reference in the destination registry
    let b = format!("{BASIC}/{}-b:v1", repo("slice-from"));
    let out = lamina_offline(&[
        "slice",
        "load",
        s(&archive),
        "--dest",
        &b,
        "--from",
        &format!("{BASIC}/fixtures/base:latest"),
    ])
    .ok();
    assert!(out.stdout.trim().ends_with(&want), "{}", out.stdout);
    // --from in another registry: refused before anything is written
    let c = format!("{BASIC}/{}-c:v1", repo("slice-from"));
    let r = lamina_offline(&[
        "slice",
        "load",
        s(&archive),
        "--dest",
        &c,
        "--from",
        &format!("{PLAIN}/fixtures/base"),
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("blobs are mounted within one registry"),
        "{}",
        r.stderr
    );
    assert!(!tag_exists(&c));
}

/// `slice save -o -` into a reader that goes away (`| head -c`) stops at once, exit 0, instead
/// of downloading every remaining blob into a closed pipe first (regression).
#[test]
fn save_to_a_closed_stdout_stops_downloading() {
    use std::io::Read as _;
    harness();
    let dir = tempdir("slice-closed");
    let (one, _) = online_image("slice-closed-1", &dir, "fixtures/base:latest");
    // a second weights layer on top, so there is a blob after the one being written
    std::fs::write(dir.join("more.bin"), random_bytes(4 << 20, 1701)).unwrap();
    let two = format!("{PLAIN}/{}:v2", repo("slice-closed"));
    lamina(&[
        "affix",
        "--base",
        &one,
        "--dest",
        &two,
        "--path",
        "/more",
        s(&dir.join("more.bin")),
    ])
    .ok();
    let p = lamina_tests::faultproxy::FaultProxy::start(PLAIN);
    let via = |r: &str| r.replacen(PLAIN, p.addr(), 1);
    let mut child = lamina_command(
        &[
            "slice",
            "save",
            &via(&two),
            "--base",
            &via(&format!("{PLAIN}/fixtures/base:latest")),
            "-o",
            "-",
        ],
        &[],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = vec![0u8; 1 << 20];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "exit 0 on a closed stdout: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let layers: Vec<String> = raw_manifest(&two, None)["layers"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .take(2)
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    let fetched = p
        .requests()
        .iter()
        .filter(|l| {
            l.method == "GET"
                && layers
                    .iter()
                    .any(|d| l.path.ends_with(&format!("/blobs/{d}")))
        })
        .count();
    assert_eq!(
        fetched, 1,
        "only the blob being written when the reader left was downloaded"
    );
}
