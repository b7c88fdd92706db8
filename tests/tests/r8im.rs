//! `extract`, `remix` and `zstd` against real registries, checked with skopeo, umoci, GNU tar
//! and the zstd CLI; hostile layers pushed with plain HTTP so lamina has to refuse them.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::path::Path;

use lamina_tests::*;

/// A model image: fixtures/base + a weights directory affixed by lamina.
fn model(name: &str, dir: &Path) -> (String, Vec<u8>) {
    let w = dir.join("weights");
    std::fs::create_dir_all(w.join("tok")).unwrap();
    let big = random_bytes(5 << 20, 21);
    std::fs::write(w.join("model.bin"), &big).unwrap();
    std::fs::write(w.join("tok/vocab.txt"), "a b c\n".repeat(100)).unwrap();
    std::os::unix::fs::symlink("model.bin", w.join("alias.bin")).unwrap();
    let r = format!("{PLAIN}/{}:v1", repo(name));
    lamina(&[
        "affix",
        "--base",
        &format!("{PLAIN}/fixtures/base:v2s2"),
        "--dest",
        &r,
        w.to_str().unwrap(),
    ])
    .ok();
    (r, big)
}

#[test]
fn extract_weights_to_a_directory_a_tar_and_stdout() {
    harness();
    let dir = tempdir("extract");
    let (r, big) = model("extract", &dir);
    let out = dir.join("out");
    lamina(&["extract", &r, "-o", &format!("{}/", out.display())]).ok();
    assert_eq!(std::fs::read(out.join("model.bin")).unwrap(), big);
    assert_eq!(
        std::fs::read_link(out.join("alias.bin")).unwrap().to_str(),
        Some("model.bin")
    );
    assert_eq!(
        std::fs::read_to_string(out.join("tok/vocab.txt")).unwrap(),
        "a b c\n".repeat(100)
    );
    assert!(
        !out.join("src").exists(),
        "the src/weights prefix is stripped"
    );

    let tarf = dir.join("w.tar");
    lamina(&["extract", &r, "-o", tarf.to_str().unwrap()]).ok();
    let list = cmd("tar", &["-tvf", tarf.to_str().unwrap()]).ok().stdout;
    assert!(
        list.contains("model.bin")
            && list.contains("alias.bin -> model.bin")
            && list.contains("tok/vocab.txt"),
        "{list}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    let st = std::process::Command::new(lamina_bin())
        .args(["extract", &r, "-q"])
        .env("DOCKER_CONFIG", "/x")
        .output()
        .unwrap();
    assert!(st.status.success());
    let x = dir.join("x");
    std::fs::create_dir_all(&x).unwrap();
    std::fs::write(dir.join("stdout.tar"), &st.stdout).unwrap();
    cmd(
        "tar",
        &[
            "-xf",
            dir.join("stdout.tar").to_str().unwrap(),
            "-C",
            x.to_str().unwrap(),
        ],
    )
    .ok();
    assert_eq!(std::fs::read(x.join("model.bin")).unwrap(), big);

    // --all gives the flattened filesystem; --path any sub-tree
    let all = dir.join("all");
    lamina(&["extract", &r, "--all", "-o", &format!("{}/", all.display())]).ok();
    assert!(all.join("bin/busybox").exists() && all.join("src/weights/model.bin").exists());
    let etc = dir.join("etc");
    lamina(&[
        "extract",
        &format!("{PLAIN}/fixtures/base:latest"),
        "--path",
        "/etc",
        "-o",
        &format!("{}/", etc.display()),
    ])
    .ok();
    assert!(etc.join("passwd").exists());
}

#[test]
fn extract_applies_whiteouts_across_weights_layers() {
    harness();
    let dir = tempdir("whiteout");
    let (r, _) = model("whiteout", &dir);
    // a second weights layer (a tar made by GNU tar) deletes tok/ and alias.bin, replaces model.bin
    let st = dir.join("stage/src/weights");
    std::fs::create_dir_all(st.join("tok")).unwrap();
    std::fs::write(st.join(".wh.alias.bin"), b"").unwrap();
    std::fs::write(st.join("tok/.wh..wh..opq"), b"").unwrap();
    std::fs::write(st.join("tok/new.txt"), b"new\n").unwrap();
    std::fs::write(st.join("model.bin"), b"v2").unwrap();
    let t = dir.join("l2.tar");
    cmd(
        "tar",
        &[
            "-C",
            dir.join("stage").to_str().unwrap(),
            "-cf",
            t.to_str().unwrap(),
            "src",
        ],
    )
    .ok();
    let r2 = format!("{PLAIN}/{}:v2", repo("whiteout"));
    lamina(&[
        "affix",
        "--base",
        &r,
        "--dest",
        &r2,
        "--tar",
        t.to_str().unwrap(),
    ])
    .ok();
    let out = dir.join("out");
    lamina(&["extract", &r2, "-o", &format!("{}/", out.display())]).ok();
    assert_eq!(std::fs::read(out.join("model.bin")).unwrap(), b"v2");
    assert!(!out.join("alias.bin").exists(), "whiteout applied");
    assert!(
        !out.join("tok/vocab.txt").exists(),
        "opaque directory applied"
    );
    assert_eq!(std::fs::read(out.join("tok/new.txt")).unwrap(), b"new\n");
    // as a tar (streamed from the top layer down, no copy of the tree): GNU tar unpacks the same
    // tree, and podman (overlayfs applying the layers itself) agrees
    let t = dir.join("w.tar");
    lamina(&["extract", &r2, "-o", t.to_str().unwrap()]).ok();
    let x = dir.join("x");
    std::fs::create_dir_all(&x).unwrap();
    cmd(
        "tar",
        &["-xf", t.to_str().unwrap(), "-C", x.to_str().unwrap()],
    )
    .ok();
    assert_eq!(tree_listing(&x), tree_listing(&out));
    let runtime = podman_listing(&r2, "/src/weights");
    let mut want = tree_listing(&out);
    for v in want.values_mut() {
        // podman shows the modes as stored (0644), extract to a directory adds u+rw
        *v = v.replace(" 600", " 644");
    }
    assert_eq!(
        runtime.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
}

/// Pushes a hostile single-layer image (raw bytes as the layer) with curl, as a plain registry
/// would serve it; returns the reference.
fn push_raw_layer(name: &str, layer: &[u8], media_type: &str, diff_id: &str) -> String {
    let repo = repo(name);
    let put_blob = |b: &[u8]| -> String {
        let d = sha256(b);
        let loc = cmd("sh", &["-c", &format!("curl -sf -D - -o /dev/null -X POST http://{PLAIN}/v2/{repo}/blobs/uploads/ | awk -F': ' 'tolower($1)==\"location\"{{print $2}}' | tr -d '\\r'")]).ok().stdout;
        let loc = loc.trim();
        let url = if loc.starts_with("http") {
            loc.to_string()
        } else {
            format!("http://{PLAIN}{loc}")
        };
        let tmp = state().join(format!("tmp/blob-{}", &d[7..19]));
        std::fs::write(&tmp, b).unwrap();
        cmd(
            "curl",
            &[
                "-sf",
                "-o",
                "/dev/null",
                "-T",
                tmp.to_str().unwrap(),
                &format!("{url}&digest={d}"),
            ],
        )
        .ok();
        d
    };
    let ld = put_blob(layer);
    let cfg = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}},"history":[{{"created_by":"COPY . /src/weights # weights"}}]}}"#
    );
    let cd = put_blob(cfg.as_bytes());
    let m = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{}}},"layers":[{{"mediaType":"{media_type}","digest":"{ld}","size":{}}}]}}"#,
        cfg.len(),
        layer.len()
    );
    let mf = state().join(format!("tmp/manifest-{name}-{}", std::process::id()));
    std::fs::write(&mf, &m).unwrap();
    cmd(
        "curl",
        &[
            "-sf",
            "-o",
            "/dev/null",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
            "--data-binary",
            &format!("@{}", mf.display()),
            &format!("http://{PLAIN}/v2/{repo}/manifests/v1"),
        ],
    )
    .ok();
    format!("{PLAIN}/{repo}:v1")
}

fn tar_of(entries: &[(&str, u8, &[u8], &str)]) -> Vec<u8> {
    // name, typeflag, data, link target: written by hand so hostile names survive
    let mut out = Vec::new();
    for (name, t, data, link) in entries {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = *t;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out
}

#[test]
fn hostile_layers_never_write_outside_and_bad_bytes_leave_nothing() {
    harness();
    let dir = tempdir("hostile");
    let canary = dir.join("canary");
    let escape = format!("../../../../../../../..{}", canary.display());
    let layer = tar_of(&[
        ("src/weights/ok.txt", b'0', b"fine\n", ""),
        ("src/weights/ok-hard", b'1', b"", "src/weights/ok.txt"),
        (&format!("src/weights/{escape}"), b'0', b"pwned\n", ""),
        ("src/weights/evil-link", b'2', b"", "/etc"),
        ("src/weights/up-link", b'2', b"", "../../../../../../tmp"),
        ("src/weights/up-link/x", b'0', b"through the link\n", ""),
        ("src/weights/hard", b'1', b"", "etc/passwd"),
        ("src/weights/dev", b'3', b"", ""),
    ]);
    let r = push_raw_layer(
        "hostile",
        &layer,
        "application/vnd.oci.image.layer.v1.tar",
        &sha256(&layer),
    );
    let out = dir.join("out");
    let run = lamina(&["extract", &r, "-o", &format!("{}/", out.display())]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(std::fs::read(out.join("ok.txt")).unwrap(), b"fine\n");
    {
        use std::os::unix::fs::MetadataExt as _;
        let a = std::fs::metadata(out.join("ok.txt")).unwrap();
        let b = std::fs::metadata(out.join("ok-hard")).unwrap();
        assert_eq!(
            (a.dev(), a.ino()),
            (b.dev(), b.ino()),
            "a hard link inside the tree stays a hard link"
        );
    }
    // in a tar too
    let tarf = dir.join("hostile.tar");
    lamina(&["extract", &r, "-o", tarf.to_str().unwrap()]).ok();
    let list = cmd("tar", &["-tvf", tarf.to_str().unwrap()]).ok().stdout;
    assert!(
        list.contains("ok-hard link to ok.txt") || list.contains("ok.txt link to ok-hard"),
        "{list}"
    );
    assert!(!canary.exists(), "a path climbed out of the output");
    assert!(
        std::fs::symlink_metadata(out.join("up-link"))
            .map(|m| !m.file_type().is_symlink())
            .unwrap_or(true),
        "a symlink pointing out was created"
    );
    assert!(
        !Path::new("/tmp/x").exists() || std::fs::read("/tmp/x").unwrap() != b"through the link\n"
    );
    assert!(std::fs::symlink_metadata(out.join("evil-link")).is_err());
    assert!(!out.join("hard").exists() && !out.join("dev").exists());
    assert!(run.stderr.contains("skipped"), "{}", run.stderr);

    // a tar without its end-of-archive footer is valid
    let mut nofooter = tar_of(&[("src/weights/a.txt", b'0', b"a\n", "")]);
    nofooter.truncate(1024);
    let r = push_raw_layer(
        "nofooter",
        &nofooter,
        "application/vnd.oci.image.layer.v1.tar",
        &sha256(&nofooter),
    );
    let out = dir.join("nofooter");
    lamina(&["extract", &r, "-o", &format!("{}/", out.display())]).ok();
    assert_eq!(std::fs::read(out.join("a.txt")).unwrap(), b"a\n");

    // a truncated gzip layer: an error, and no output left behind
    let full = tar_of(&[("src/weights/big.bin", b'0', &random_bytes(200_000, 1), "")]);
    let tmp = dir.join("l.tar");
    std::fs::write(&tmp, &full).unwrap();
    cmd("gzip", &["-n", "-k", tmp.to_str().unwrap()]).ok();
    let mut g = std::fs::read(dir.join("l.tar.gz")).unwrap();
    g.truncate(g.len() / 2);
    let r = push_raw_layer(
        "truncgz",
        &g,
        "application/vnd.oci.image.layer.v1.tar+gzip",
        &sha256(&full),
    );
    let out = dir.join("trunc");
    let run = lamina(&["extract", &r, "-o", &format!("{}/", out.display())]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("gzip"), "{}", run.stderr);
    assert!(!out.exists(), "no half-written output");
    let outf = dir.join("trunc.tar");
    assert_eq!(
        lamina(&["extract", &r, "-o", outf.to_str().unwrap()]).code,
        1
    );
    assert!(!outf.exists());
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("partial"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // a layer whose bytes do not match its diff_id
    let good = tar_of(&[("src/weights/a.txt", b'0', b"a\n", "")]);
    let r = push_raw_layer(
        "baddiff",
        &good,
        "application/vnd.oci.image.layer.v1.tar",
        &sha256(b"something else"),
    );
    let run = lamina(&[
        "extract",
        &r,
        "-o",
        &format!("{}/", dir.join("baddiff").display()),
    ]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("diff_id"), "{}", run.stderr);
    assert!(!dir.join("baddiff").exists());
}

#[test]
fn remix_moves_weights_layers_without_downloading_them() {
    harness();
    let dir = tempdir("remix");
    let (w, big) = model("remix-w", &dir);
    let wm = raw_manifest(&w, None);
    let wl = wm["layers"][2]["digest"].as_str().unwrap().to_string();
    // Other tests push the same weights (same bytes, same digest) and pull
    // them in parallel: count only GETs through this test's two repositories.
    let repos = [repo("remix-w"), repo("remix")];
    let gets = || {
        log_lines(PLAIN, &format!("/blobs/{wl}"))
            .iter()
            .filter(|l| l.contains("\"GET "))
            .filter(|l| repos.iter().any(|r| l.contains(&format!("/v2/{r}/blobs/"))))
            .count()
    };
    let gets_before = gets();
    let dest = format!("{PLAIN}/{}:v1", repo("remix"));
    let out = lamina(&[
        "remix",
        "--base",
        &format!("{PLAIN}/fixtures/base:latest"),
        "--weights",
        &w,
        "--dest",
        &dest,
    ])
    .ok();
    assert!(
        out.stdout
            .trim()
            .starts_with(&format!("{PLAIN}/{}@sha256:", repo("remix"))),
        "{}",
        out.stdout
    );
    let m = raw_manifest(&dest, None);
    assert_eq!(m["layers"][2]["digest"].as_str().unwrap(), wl);
    assert_eq!(
        m["layers"][2]["mediaType"], "application/vnd.oci.image.layer.v1.tar",
        "OCI base: OCI layer type"
    );
    let gets_after = gets();
    assert_eq!(
        gets_before, gets_after,
        "remix downloaded the weights layer"
    );
    let cfg: serde_json::Value = serde_json::from_str(
        &cmd(
            "skopeo",
            &[
                "inspect",
                "--config",
                "--tls-verify=false",
                &format!("docker://{dest}"),
            ],
        )
        .ok()
        .stdout,
    )
    .unwrap();
    assert!(
        cfg["history"].as_array().unwrap().last().unwrap()["created_by"]
            .as_str()
            .unwrap()
            .ends_with("# weights")
    );
    let rootfs = unpack(&dest, None, &dir.join("unpack"));
    assert_eq!(
        std::fs::read(rootfs.join("src/weights/model.bin")).unwrap(),
        big
    );
    // extract finds them again
    let o = dir.join("x");
    lamina(&["extract", &dest, "-o", &format!("{}/", o.display())]).ok();
    assert_eq!(std::fs::read(o.join("model.bin")).unwrap(), big);
    // across registries: streamed
    let d2 = format!("{BASIC}/{}:v1", repo("remix"));
    lamina(&[
        "remix",
        "--base",
        &format!("{PLAIN}/fixtures/base:latest"),
        "--weights",
        &w,
        "--dest",
        &d2,
        "--username",
        USER,
        "--password",
        PASS,
    ])
    .ok();
    unpack(&d2, Some(&format!("{USER}:{PASS}")), &dir.join("unpack2"));
    // a bad --layer index
    let r = lamina(&[
        "remix",
        "--base",
        &format!("{PLAIN}/fixtures/base:latest"),
        "--weights",
        &w,
        "--dest",
        &dest,
        "--layer",
        "9",
    ]);
    assert_eq!(r.code, 2, "{r:?}");
}

fn check_zstd_image(reference: &str, dir: &Path) {
    let m = raw_manifest(reference, None);
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let cfg: serde_json::Value = serde_json::from_str(
        &cmd(
            "skopeo",
            &[
                "inspect",
                "--config",
                "--tls-verify=false",
                &format!("docker://{reference}"),
            ],
        )
        .ok()
        .stdout,
    )
    .unwrap();
    // skopeo accepts the image
    std::fs::create_dir_all(dir).unwrap();
    cmd(
        "skopeo",
        &[
            "copy",
            "-q",
            "--src-tls-verify=false",
            &format!("docker://{reference}"),
            &format!("oci:{}:z", dir.join("layout").display()),
        ],
    )
    .ok();
    // every layer decompresses with the zstd CLI (or is a plain tar) to its diff_id
    let (host_repo, _) = reference
        .split_once('@')
        .or_else(|| reference.rsplit_once(':'))
        .unwrap();
    let (host, repo) = host_repo.split_once('/').unwrap();
    for (i, l) in m["layers"].as_array().unwrap().iter().enumerate() {
        let url = format!(
            "http://{host}/v2/{repo}/blobs/{}",
            l["digest"].as_str().unwrap()
        );
        let mt = l["mediaType"].as_str().unwrap();
        let want = cfg["rootfs"]["diff_ids"][i].as_str().unwrap();
        let pipe = if mt.ends_with("+zstd") {
            "zstd -dc"
        } else {
            assert!(mt.ends_with(".tar"), "{mt}");
            "cat"
        };
        let got = cmd(
            "bash",
            &[
                "-c",
                &format!("set -o pipefail; curl -sfL {url} | {pipe} | sha256sum"),
            ],
        )
        .ok()
        .stdout;
        assert_eq!(
            format!("sha256:{}", &got[..64]),
            want,
            "layer {i} decompresses to its diff_id"
        );
        let list = cmd(
            "bash",
            &[
                "-c",
                &format!("set -o pipefail; curl -sfL {url} | {pipe} | tar -t | wc -l"),
            ],
        )
        .ok();
        assert!(
            list.stdout.trim().parse::<u32>().unwrap() > 0,
            "layer {i} is a tar"
        );
    }
}

#[test]
fn zstd_recompresses_oci_docker_and_index_images() {
    harness();
    let dir = tempdir("zstd");
    // Docker v2 base + an incompressible weights layer: gzip layers become zstd, weights stay tar
    let (r, _) = model("zstd-src", &dir);
    let src_cfg = cmd(
        "skopeo",
        &[
            "inspect",
            "--config",
            "--tls-verify=false",
            &format!("docker://{r}"),
        ],
    )
    .ok()
    .stdout;
    let dest = format!("{PLAIN}/{}:z", repo("zstd"));
    let out = lamina(&["zstd", &r, &dest, "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let m = raw_manifest(&dest, None);
    let types: Vec<&str> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types[0], "application/vnd.oci.image.layer.v1.tar+zstd",
        "{v}"
    );
    assert_eq!(
        types[2], "application/vnd.oci.image.layer.v1.tar",
        "random weights stay uncompressed: {v}"
    );
    let cfg = cmd(
        "skopeo",
        &[
            "inspect",
            "--config",
            "--tls-verify=false",
            &format!("docker://{dest}"),
        ],
    )
    .ok()
    .stdout;
    assert_eq!(
        cfg, src_cfg,
        "config (history, created, diff_ids) unchanged"
    );
    check_zstd_image(&dest, &dir.join("a"));
    assert!(v["bytes_after"].as_u64().unwrap() <= v["bytes_before"].as_u64().unwrap() + 1024);

    // an index, all platforms, at level 19
    let di = format!("{PLAIN}/{}:multi", repo("zstd"));
    lamina(&[
        "zstd",
        &format!("{PLAIN}/fixtures/multi:v2s2"),
        &di,
        "--platform",
        "all",
        "--level",
        "19",
    ])
    .ok();
    let idx = raw_manifest(&di, None);
    assert_eq!(idx["mediaType"], "application/vnd.oci.image.index.v1+json");
    for e in idx["manifests"].as_array().unwrap() {
        let child = format!("{PLAIN}/{}@{}", repo("zstd"), e["digest"].as_str().unwrap());
        check_zstd_image(&child, &dir.join(&e["digest"].as_str().unwrap()[7..19]));
    }
    // an OCI source (umoci's manifest, gzip layers)
    let doci = format!("{PLAIN}/{}:oci", repo("zstd"));
    lamina(&["zstd", &format!("{PLAIN}/fixtures/base:latest"), &doci]).ok();
    check_zstd_image(&doci, &dir.join("oci"));
    let rootfs = unpack(
        &format!("{PLAIN}/fixtures/base:latest"),
        None,
        &dir.join("oci-src"),
    );
    assert!(rootfs.join("bin/busybox").exists());
    // zstd of a zstd image keeps the layers
    let again = format!("{PLAIN}/{}:again", repo("zstd"));
    lamina(&["zstd", &dest, &again]).ok();
    assert_eq!(raw_manifest(&again, None)["layers"], m["layers"]);
}

#[test]
fn remix_onto_every_platform_of_an_index_then_extract_one_platform() {
    harness();
    let dir = tempdir("remix-multi");
    let (w, big) = model("remix-multi-w", &dir);
    let dest = format!("{PLAIN}/{}:all", repo("remix-multi"));
    lamina(&[
        "remix",
        "--base",
        &format!("{PLAIN}/fixtures/multi:latest"),
        "--weights",
        &w,
        "--dest",
        &dest,
        "--platform",
        "all",
    ])
    .ok();
    let idx = raw_manifest(&dest, None);
    assert_eq!(idx["manifests"].as_array().unwrap().len(), 2);
    for (plat, sub) in [("linux/amd64", "amd64"), ("linux/arm64/v8", "arm64")] {
        let o = dir.join(sub);
        lamina(&[
            "extract",
            &dest,
            "--platform",
            plat,
            "-o",
            &format!("{}/", o.display()),
        ])
        .ok();
        assert_eq!(std::fs::read(o.join("model.bin")).unwrap(), big, "{plat}");
    }
    // a Docker v2 base keeps its format: the weights layer gets the Docker media type
    let dv2 = format!("{PLAIN}/{}:v2", repo("remix-multi"));
    lamina(&[
        "remix",
        "--base",
        &format!("{PLAIN}/fixtures/base:v2s2"),
        "--weights",
        &w,
        "--dest",
        &dv2,
    ])
    .ok();
    let m2 = raw_manifest(&dv2, None);
    assert_eq!(
        m2["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        m2["layers"][2]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar"
    );
    let rootfs = unpack(&dv2, None, &dir.join("unpack-v2"));
    assert_eq!(
        std::fs::read(rootfs.join("src/weights/model.bin")).unwrap(),
        big
    );
    // a layer whose size does not match its descriptor is refused, nothing is left behind
    let layer = tar_of(&[("src/weights/a.txt", b'0', b"a\n", "")]);
    let r = push_raw_layer(
        "badsize",
        &layer,
        "application/vnd.oci.image.layer.v1.tar",
        &sha256(&layer),
    );
    let m = raw_manifest(&r, None);
    let lied = m.to_string().replace(
        &format!("\"size\":{}", layer.len()),
        &format!("\"size\":{}", layer.len() + 512),
    );
    let mf = dir.join("lied.json");
    std::fs::write(&mf, lied).unwrap();
    let (host_repo, _) = r.rsplit_once(':').unwrap();
    let (_, rp) = host_repo.split_once('/').unwrap();
    cmd(
        "curl",
        &[
            "-sf",
            "-o",
            "/dev/null",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
            "--data-binary",
            &format!("@{}", mf.display()),
            &format!("http://{PLAIN}/v2/{rp}/manifests/lied"),
        ],
    )
    .ok();
    let out = dir.join("lied");
    let run = lamina(&[
        "extract",
        &format!("{PLAIN}/{rp}:lied"),
        "-o",
        &format!("{}/", out.display()),
    ]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("size mismatch"), "{}", run.stderr);
    assert!(!out.exists());
}

#[test]
fn a_blob_whose_bytes_do_not_match_its_digest_is_refused_everywhere() {
    harness();
    let dir = tempdir("corrupt");
    // a unique weights layer, then one byte of it flipped in the registry's own storage (what
    // disk or storage corruption looks like to a client: distribution does not check on read)
    let data = random_bytes(3 << 20, std::process::id() as u64 ^ 0xC0FF_EE00);
    std::fs::write(dir.join("w.bin"), &data).unwrap();
    let r = format!("{PLAIN}/{}:v1", repo("corrupt"));
    lamina(&[
        "affix",
        "--base",
        &format!("{PLAIN}/fixtures/base:latest"),
        "--dest",
        &r,
        dir.join("w.bin").to_str().unwrap(),
    ])
    .ok();
    let m = raw_manifest(&r, None);
    let d = m["layers"][2]["digest"].as_str().unwrap()[7..].to_string();
    let blob = state()
        .join("storage/plain/docker/registry/v2/blobs/sha256")
        .join(&d[..2])
        .join(&d)
        .join("data");
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[2 << 20] ^= 0x01;
    std::fs::write(&blob, &bytes).unwrap();

    let out = dir.join("out");
    let run = lamina(&["extract", &r, "-o", &format!("{}/", out.display())]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("digest mismatch") && run.stderr.contains(&d[..12]),
        "{}",
        run.stderr
    );
    assert!(!out.exists(), "no output from a corrupt layer");

    let z = format!("{PLAIN}/{}:z", repo("corrupt"));
    let run = lamina(&["zstd", &r, &z]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("digest mismatch"), "{}", run.stderr);
    assert_ne!(
        cmd(
            "skopeo",
            &[
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{z}")
            ]
        )
        .code,
        0,
        "no tag after a failed zstd"
    );

    // copying it to another registry (affix across registries) refuses it too
    let x = format!("{BASIC}/{}:x", repo("corrupt"));
    let run = lamina(&[
        "remix",
        "--base",
        &format!("{PLAIN}/fixtures/base:latest"),
        "--weights",
        &r,
        "--dest",
        &x,
        "--username",
        USER,
        "--password",
        PASS,
    ]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("digest mismatch"), "{}", run.stderr);
    assert_ne!(
        cmd(
            "skopeo",
            &[
                "inspect",
                "--raw",
                "--tls-verify=false",
                "--creds",
                &format!("{USER}:{PASS}"),
                &format!("docker://{x}")
            ]
        )
        .code,
        0
    );
}

/// r8im scripts run unchanged: its README's invocations, word for word with only the host
/// changed, and its short flags (`affix -b -d -f`, `remix -b -w -d`, `extract -o`, `clone -b -d`,
/// `-r`, `-t`), `COG_TOKEN` and `NO_COMPRESSION` (read from r8im's cobra definitions).
#[test]
fn r8im_readme_invocations_and_short_flags_run_unchanged() {
    harness();
    let dir = tempdir("r8im-compat");
    let w = dir.join("src/weights");
    std::fs::create_dir_all(&w).unwrap();
    let big = random_bytes(2 << 20, 61);
    std::fs::write(w.join("model.bin"), &big).unwrap();
    cmd(
        "tar",
        &[
            "-C",
            dir.to_str().unwrap(),
            "-cf",
            dir.join("layer.tar").to_str().unwrap(),
            "src",
        ],
    )
    .ok();
    let base = format!("{PLAIN}/fixtures/base:latest");
    let dest = format!("{PLAIN}/{}", repo("r8im-readme"));
    let sh = |line: &str| -> Run {
        // the README's line, run by a shell as a script would, with `r8im` being lamina
        let script = format!(
            "r8im() {{ '{}' \"$@\"; }}; cd '{}'; {line}",
            lamina_bin().display(),
            dir.display()
        );
        let out = std::process::Command::new("bash")
            .args(["-c", &script])
            .env("DOCKER_CONFIG", "/nonexistent-lamina-test")
            .env("LAMINA_CACHE_DIR", state().join("cache"))
            .env("COG_TOKEN", "r8_unused_for_a_registry_without_auth")
            .output()
            .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };
    // r8im affix --base <base-image> --dest <destination-image> --tar <layer-tar-file>
    let out = sh(&format!(
        "r8im affix --base {base} --dest {dest}:v1 --tar layer.tar"
    ))
    .ok();
    assert!(
        out.stdout.trim().starts_with(&format!("{dest}@sha256:")),
        "{}",
        out.stdout
    );
    // r8im extract <image> [--output file]
    sh(&format!("r8im extract {dest}:v1 --output weights.tar")).ok();
    let x = dir.join("x");
    std::fs::create_dir_all(&x).unwrap();
    cmd(
        "tar",
        &[
            "-xf",
            dir.join("weights.tar").to_str().unwrap(),
            "-C",
            x.to_str().unwrap(),
        ],
    )
    .ok();
    assert_eq!(std::fs::read(x.join("model.bin")).unwrap(), big);
    // r8im layers <image>
    let out = sh(&format!("r8im layers {dest}:v1")).ok();
    assert!(out.stdout.contains("# weights"), "{}", out.stdout);
    // r8im remix --base <image-including-tag> --weights <image-including-tag> --dest <image-dest>
    let out = sh(&format!(
        "r8im remix --base {base} --weights {dest}:v1 --dest {dest}:remixed"
    ))
    .ok();
    assert!(
        out.stdout.trim().starts_with(&format!("{dest}@sha256:")),
        "{}",
        out.stdout
    );
    // r8im zstd <image> <dest>
    let out = sh(&format!("r8im zstd {dest}:v1 {dest}:zstd")).ok();
    assert!(
        out.stdout.trim().starts_with(&format!("{dest}@sha256:")),
        "{}",
        out.stdout
    );
    // the short flags, -r and -t
    let out = sh(&format!(
        "r8im affix -r {PLAIN} -t r8_x -b {base} -d {dest}:short -f layer.tar"
    ))
    .ok();
    assert!(out.stdout.contains("@sha256:"), "{}", out.stdout);
    let out = sh(&format!(
        "r8im remix -b {base} -w {dest}:short -d {dest}:short-remix"
    ))
    .ok();
    assert!(out.stdout.contains("@sha256:"), "{}", out.stdout);
    sh(&format!("r8im extract {dest}:short -o short.tar")).ok();
    assert!(dir.join("short.tar").exists());
    // clone: the same image under a new name, labelled cloned=true
    let out = sh(&format!("r8im clone -b {dest}:v1 -d {dest}-copy:v1")).ok();
    assert!(
        out.stdout
            .trim()
            .starts_with(&format!("{dest}-copy@sha256:")),
        "{}",
        out.stdout
    );
    let cfg = cmd(
        "skopeo",
        &[
            "inspect",
            "--config",
            "--tls-verify=false",
            &format!("docker://{dest}-copy:v1"),
        ],
    )
    .ok();
    let cfg: serde_json::Value = serde_json::from_str(&cfg.stdout).unwrap();
    assert_eq!(cfg["config"]["Labels"]["cloned"], "true", "{cfg}");
    let orig = raw_manifest(&format!("{dest}:v1"), None);
    let copy = raw_manifest(&format!("{dest}-copy:v1"), None);
    assert_eq!(orig["layers"], copy["layers"]);
    // NO_COMPRESSION=1: zstd stores every layer uncompressed
    sh(&format!(
        "NO_COMPRESSION=1 r8im zstd {dest}:v1 {dest}:nocomp"
    ))
    .ok();
    let m = raw_manifest(&format!("{dest}:nocomp"), None);
    for l in m["layers"].as_array().unwrap() {
        assert_eq!(
            l["mediaType"], "application/vnd.oci.image.layer.v1.tar",
            "{m}"
        );
    }
}

/// `zstd` downloads each layer once (it once fetched an incompressible gzip layer twice: once
/// to try zstd, once to store it uncompressed): the first bytes decide, as they stream. An
/// uncompressed layer zstd would not shrink is mounted, not sent again.
#[test]
fn zstd_downloads_each_layer_once() {
    harness();
    let dir = tempdir("zstd-once");
    std::fs::write(dir.join("noise.bin"), random_bytes(12 << 20, 71)).unwrap();
    std::fs::write(
        dir.join("text.txt"),
        "the same line of text, again and again\n".repeat(200_000),
    )
    .unwrap();
    let base = format!("{PLAIN}/fixtures/base:latest");
    let r = repo("zstd-once");
    // three layers on top of the base: gzip of noise, gzip of text, uncompressed noise
    lamina(&[
        "affix",
        "--base",
        &base,
        "--dest",
        &format!("{PLAIN}/{r}:a"),
        "--compression",
        "gzip",
        dir.join("noise.bin").to_str().unwrap(),
    ])
    .ok();
    lamina(&[
        "affix",
        "--base",
        &format!("{PLAIN}/{r}:a"),
        "--dest",
        &format!("{PLAIN}/{r}:b"),
        "--compression",
        "gzip",
        dir.join("text.txt").to_str().unwrap(),
    ])
    .ok();
    std::fs::write(dir.join("noise2.bin"), random_bytes(12 << 20, 72)).unwrap();
    lamina(&[
        "affix",
        "--base",
        &format!("{PLAIN}/{r}:b"),
        "--dest",
        &format!("{PLAIN}/{r}:c"),
        "--compression",
        "none",
        dir.join("noise2.bin").to_str().unwrap(),
    ])
    .ok();
    let src = raw_manifest(&format!("{PLAIN}/{r}:c"), None);
    let layers: Vec<(String, u64)> = src["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["digest"].as_str().unwrap().to_string(),
                l["size"].as_u64().unwrap(),
            )
        })
        .collect();
    let n = layers.len();
    let gets = |d: &str| log_lines(PLAIN, &format!("GET /v2/{r}/blobs/{d}")).len();
    let before: Vec<usize> = layers.iter().map(|(d, _)| gets(d)).collect();
    let out = lamina(&[
        "zstd",
        &format!("{PLAIN}/{r}:c"),
        &format!("{PLAIN}/{r}:z"),
        "-j",
        "1",
    ])
    .ok();
    let m = raw_manifest(&format!("{PLAIN}/{r}:z"), None);
    let ml = m["layers"].as_array().unwrap();
    // gzip of noise: stored uncompressed, downloaded once
    assert_eq!(
        ml[n - 3]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar",
        "{}",
        out.stderr
    );
    assert_eq!(gets(&layers[n - 3].0) - before[n - 3], 1, "{}", out.stderr);
    // gzip of text: zstd, downloaded once
    assert_eq!(
        ml[n - 2]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "{}",
        out.stderr
    );
    assert_eq!(gets(&layers[n - 2].0) - before[n - 2], 1, "{}", out.stderr);
    // uncompressed noise: the same blob (mounted), downloaded once (and verified whole)
    assert_eq!(
        ml[n - 1]["digest"].as_str().unwrap(),
        layers[n - 1].0,
        "{}",
        out.stderr
    );
    assert_eq!(gets(&layers[n - 1].0) - before[n - 1], 1, "{}", out.stderr);
    // the image is whole as a runtime sees it (podman; umoci 0.4 reads no zstd)
    let files = podman_listing(&format!("{PLAIN}/{r}:z"), "/src/weights");
    let noise = format!("file {} 644", sha256(&random_bytes(12 << 20, 72)));
    assert_eq!(files.get("noise2.bin"), Some(&noise), "{files:?}");
    assert!(
        files.contains_key("text.txt") && files.contains_key("noise.bin"),
        "{files:?}"
    );
}
