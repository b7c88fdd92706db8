//! `lamina affix` and `lamina layers` against real registries, checked with skopeo and umoci.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use lamina_tests::*;

fn layer_digests(m: &serde_json::Value) -> Vec<String> {
    m["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_string())
        .collect()
}

fn digest_of_output(stdout: &str) -> String {
    let line = stdout.trim();
    line.rsplit_once('@')
        .map(|(_, d)| d.to_string())
        .unwrap_or_else(|| panic!("no digest in {line:?}"))
}

#[test]
fn affix_file_onto_oci_base_mounts_base_layers_and_never_downloads_them() {
    harness();
    let dir = tempdir("affix-oci");
    let weights = random_bytes(64 << 20, 7);
    std::fs::write(dir.join("model.safetensors"), &weights).unwrap();
    let dest = format!("{PLAIN}/{}:v1", repo("oci"));
    let base = raw_manifest(&format!("{PLAIN}/fixtures/base:latest"), None);
    let base_layers = layer_digests(&base);
    let before: usize = base_layers
        .iter()
        .map(|d| log_lines(PLAIN, &format!("GET /v2/fixtures/base/blobs/{d}")).len())
        .sum();

    let out = lamina(&[
        "affix",
        "--base",
        &format!("{PLAIN}/fixtures/base:latest"),
        "--dest",
        &dest,
        "--chunked",
        "--chunk-size",
        "8",
        dir.join("model.safetensors").to_str().unwrap(),
    ])
    .ok();
    let digest = digest_of_output(&out.stdout);
    assert!(
        out.stdout
            .starts_with(&format!("{PLAIN}/{}@sha256:", repo("oci"))),
        "{}",
        out.stdout
    );

    // the manifest: base layers unchanged, one new uncompressed layer (weights do not compress)
    let m = raw_manifest(&dest, None);
    // umoci leaves out the optional mediaType; lamina keeps the manifest as it was
    assert_eq!(m["mediaType"], base["mediaType"]);
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let layers = layer_digests(&m);
    assert_eq!(&layers[..2], &base_layers[..]);
    assert_eq!(layers.len(), 3);
    assert_eq!(
        m["layers"][2]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
    let raw = cmd(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{dest}"),
        ],
    )
    .ok();
    assert_eq!(
        sha256(raw.stdout.as_bytes()),
        digest,
        "printed digest is the manifest's"
    );

    // the config: diff_ids and a weights history entry
    let cfg = cmd(
        "skopeo",
        &[
            "inspect",
            "--config",
            "--tls-verify=false",
            &format!("docker://{dest}"),
        ],
    )
    .ok();
    let cfg: serde_json::Value = serde_json::from_str(&cfg.stdout).unwrap();
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 3);
    let h = cfg["history"].as_array().unwrap().last().unwrap().clone();
    assert!(
        h["created_by"].as_str().unwrap().ends_with(" # weights"),
        "{h}"
    );
    assert_eq!(h["comment"], "weights");
    assert_eq!(h["created"], "2000-01-01T00:00:00Z");

    // the files, byte for byte, by tools we did not write
    let rootfs = unpack(&dest, None, &dir.join("unpack"));
    assert_eq!(
        std::fs::read(rootfs.join("src/weights/model.safetensors")).unwrap(),
        weights
    );
    assert!(
        rootfs.join("bin/busybox").exists() && rootfs.join("src/predict.py").exists(),
        "base files are there"
    );

    // no base layer blob was fetched by lamina: only the mounts
    let after: usize = base_layers
        .iter()
        .map(|d| log_lines(PLAIN, &format!("GET /v2/fixtures/base/blobs/{d}")).len())
        .sum();
    let skopeo_reads = 0; // skopeo read from the new repository, not fixtures/base
    assert_eq!(
        after - before,
        skopeo_reads,
        "lamina downloaded a base layer"
    );
    for d in &base_layers {
        assert!(
            !log_lines(PLAIN, &format!("mount={}", d.replace(':', "%3A"))).is_empty(),
            "layer {d} was not mounted"
        );
    }
    // chunked: 64 MiB in 8 MiB PATCHes
    let patches = log_lines(PLAIN, &format!("PATCH /v2/{}/blobs/uploads/", repo("oci"))).len();
    assert!(patches >= 8, "expected chunked PATCHes, saw {patches}");
    // by default the layer goes in one streamed PATCH, and the result is the same image
    let streamed = format!("{PLAIN}/{}:v1", repo("oci-stream"));
    let out2 = lamina(&[
        "affix",
        "--base",
        &format!("{PLAIN}/fixtures/base:latest"),
        "--dest",
        &streamed,
        dir.join("model.safetensors").to_str().unwrap(),
    ])
    .ok();
    assert_eq!(
        digest_of_output(&out2.stdout),
        digest,
        "streamed and chunked uploads give the same image"
    );
    let patches = log_lines(
        PLAIN,
        &format!("PATCH /v2/{}/blobs/uploads/", repo("oci-stream")),
    )
    .len();
    assert_eq!(patches, 1, "one streamed PATCH");
}

#[test]
fn affix_directory_onto_docker_v2_base_keeps_docker_format_and_symlinks() {
    harness();
    let dir = tempdir("affix-v2");
    let w = dir.join("weights");
    std::fs::create_dir_all(w.join("sub/deeper")).unwrap();
    std::fs::write(w.join("config.json"), b"{\"hidden\": 1}\n").unwrap();
    let big = random_bytes(3 << 20, 11);
    std::fs::write(w.join("sub/deeper/shard-00001.bin"), &big).unwrap();
    std::os::unix::fs::symlink("config.json", w.join("link.json")).unwrap();
    let long = "d".repeat(120);
    std::fs::create_dir_all(w.join(&long)).unwrap();
    std::fs::write(w.join(&long).join("f.txt"), b"long path\n").unwrap();
    let dest = format!("{PLAIN}/{}:v1", repo("v2"));
    lamina(&[
        "affix",
        "--base",
        &format!("{PLAIN}/fixtures/base:v2s2"),
        "--dest",
        &dest,
        "--path",
        "/models",
        w.to_str().unwrap(),
    ])
    .ok();

    let m = raw_manifest(&dest, None);
    assert_eq!(
        m["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    let lt = m["layers"][2]["mediaType"].as_str().unwrap();
    assert!(
        lt.starts_with("application/vnd.docker.image.rootfs.diff.tar"),
        "{lt}"
    );
    let rootfs = unpack(&dest, None, &dir.join("unpack"));
    assert_eq!(
        std::fs::read(rootfs.join("models/sub/deeper/shard-00001.bin")).unwrap(),
        big
    );
    assert_eq!(
        std::fs::read_link(rootfs.join("models/link.json"))
            .unwrap()
            .to_str(),
        Some("config.json")
    );
    assert_eq!(
        std::fs::read(rootfs.join("models").join(&long).join("f.txt")).unwrap(),
        b"long path\n"
    );
    assert!(
        !rootfs.join("models/weights").exists(),
        "a directory's contents go under --path, not the directory"
    );
}

#[test]
fn affix_all_platforms_of_an_index_and_default_platform_only() {
    harness();
    let dir = tempdir("affix-multi");
    std::fs::write(dir.join("w.bin"), random_bytes(1 << 20, 3)).unwrap();
    let base = format!("{PLAIN}/fixtures/multi:latest");
    let base_index = raw_manifest(&base, None);

    let all = format!("{PLAIN}/{}:all", repo("multi"));
    lamina(&[
        "affix",
        "--base",
        &base,
        "--dest",
        &all,
        "--platform",
        "all",
        dir.join("w.bin").to_str().unwrap(),
    ])
    .ok();
    let idx = raw_manifest(&all, None);
    assert_eq!(idx["mediaType"], "application/vnd.oci.image.index.v1+json");
    let entries = idx["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    let mut new_layers = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(
            e["platform"], base_index["manifests"][i]["platform"],
            "platform kept"
        );
        let child = raw_manifest(
            &format!(
                "{PLAIN}/{}@{}",
                repo("multi"),
                e["digest"].as_str().unwrap()
            ),
            None,
        );
        assert_eq!(child["layers"].as_array().unwrap().len(), 3);
        new_layers.push(child["layers"][2]["digest"].clone());
    }
    assert_eq!(
        new_layers[0], new_layers[1],
        "one layer blob shared by all platforms"
    );

    let one = format!("{PLAIN}/{}:amd64", repo("multi"));
    lamina(&[
        "affix",
        "--base",
        &base,
        "--dest",
        &one,
        dir.join("w.bin").to_str().unwrap(),
    ])
    .ok();
    let idx = raw_manifest(&one, None);
    assert_ne!(
        idx["manifests"][0]["digest"], base_index["manifests"][0]["digest"],
        "amd64 edited"
    );
    assert_eq!(
        idx["manifests"][1]["digest"], base_index["manifests"][1]["digest"],
        "arm64 untouched"
    );
    let out = lamina(&["layers", &one, "--platform", "linux/arm64", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["platforms"].as_array().unwrap().len(), 2);
    assert_eq!(v["images"][0]["layers"].as_array().unwrap().len(), 2);

    // a Docker manifest list, all platforms
    let dl = format!("{PLAIN}/{}:list", repo("multi"));
    lamina(&[
        "affix",
        "--base",
        &format!("{PLAIN}/fixtures/multi:v2s2"),
        "--dest",
        &dl,
        "--platform",
        "all",
        dir.join("w.bin").to_str().unwrap(),
    ])
    .ok();
    let idx = raw_manifest(&dl, None);
    assert_eq!(
        idx["mediaType"],
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    let rootfs = unpack(&dl, None, &dir.join("unpack"));
    assert!(rootfs.join("src/weights/w.bin").exists());
}

#[test]
fn affix_with_basic_and_bearer_auth_and_wrong_password() {
    harness();
    let dir = tempdir("affix-auth");
    let data = random_bytes(2 << 20, 5);
    std::fs::write(dir.join("w.bin"), &data).unwrap();
    let creds = format!("{USER}:{PASS}");
    for reg in [BASIC, TOKEN] {
        let dest = format!("{reg}/{}:v1", repo("auth"));
        lamina(&[
            "affix",
            "--base",
            &format!("{reg}/fixtures/base:latest"),
            "--dest",
            &dest,
            "--username",
            USER,
            "--password",
            PASS,
            dir.join("w.bin").to_str().unwrap(),
        ])
        .ok();
        let rootfs = unpack(
            &dest,
            Some(&creds),
            &dir.join(format!("unpack-{}", &reg[10..])),
        );
        assert_eq!(
            std::fs::read(rootfs.join("src/weights/w.bin")).unwrap(),
            data
        );
        // environment variables work the same
        let dest2 = format!("{reg}/{}:env", repo("auth"));
        lamina_env(
            &[
                "affix",
                "--base",
                &format!("{reg}/fixtures/base:latest"),
                "--dest",
                &dest2,
                dir.join("w.bin").to_str().unwrap(),
            ],
            &[("LAMINA_USERNAME", USER), ("LAMINA_PASSWORD", PASS)],
        )
        .ok();

        let bad = format!("{reg}/{}:bad", repo("auth"));
        let r = lamina(&[
            "affix",
            "--base",
            &format!("{reg}/fixtures/base:latest"),
            "--dest",
            &bad,
            "--username",
            USER,
            "--password",
            "wrong-pass-123",
            dir.join("w.bin").to_str().unwrap(),
        ]);
        assert_eq!(r.code, 1, "{r:?}");
        assert!(
            r.stderr.contains("authentication with") && r.stderr.contains(reg),
            "{}",
            r.stderr
        );
        assert!(
            !r.stderr.contains("wrong-pass-123") && !r.stdout.contains("wrong-pass-123"),
            "password leaked"
        );
        let tag = cmd(
            "skopeo",
            &[
                "inspect",
                "--raw",
                "--tls-verify=false",
                "--creds",
                &creds,
                &format!("docker://{bad}"),
            ],
        );
        assert_ne!(tag.code, 0, "no tag may exist after a failed run");
    }
    // anonymous pull of a public repository through the token server works
    lamina(&["layers", &format!("{TOKEN}/public/base:latest")]).ok();
}

#[test]
fn affix_tar_passthrough_and_zstd_conversion() {
    harness();
    let dir = tempdir("affix-tar");
    let src = dir.join("src/weights");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), "text weights\n".repeat(1000)).unwrap();
    let tgz = dir.join("w.tar.gz");
    cmd(
        "tar",
        &[
            "-C",
            dir.to_str().unwrap(),
            "-czf",
            tgz.to_str().unwrap(),
            "src",
        ],
    )
    .ok();
    let dest = format!("{PLAIN}/{}:tgz", repo("tar"));
    lamina(&[
        "affix",
        "--base",
        &format!("{PLAIN}/fixtures/base:latest"),
        "--dest",
        &dest,
        "--tar",
        tgz.to_str().unwrap(),
    ])
    .ok();
    let m = raw_manifest(&dest, None);
    assert_eq!(
        m["layers"][2]["digest"].as_str().unwrap(),
        sha256(&std::fs::read(&tgz).unwrap()),
        "gzip tar passed through unchanged"
    );
    assert_eq!(
        m["layers"][2]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let rootfs = unpack(&dest, None, &dir.join("unpack"));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("src/weights/a.txt")).unwrap(),
        "text weights\n".repeat(1000)
    );

    // zstd onto a Docker base: the manifest becomes OCI (Docker has no zstd layer type)
    let z = format!("{PLAIN}/{}:zstd", repo("tar"));
    lamina(&[
        "affix",
        "--base",
        &format!("{PLAIN}/fixtures/base:v2s2"),
        "--dest",
        &z,
        "--compression",
        "zstd",
        src.to_str().unwrap(),
    ])
    .ok();
    let m = raw_manifest(&z, None);
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(
        m["layers"][2]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    // the zstd blob decompresses with the zstd CLI to a tar GNU tar lists
    let lay = dir.join("zlayout");
    cmd(
        "skopeo",
        &[
            "copy",
            "-q",
            "--src-tls-verify=false",
            &format!("docker://{z}"),
            &format!("oci:{}:z", lay.display()),
        ],
    )
    .ok();
    let d = m["layers"][2]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let blob = lay.join("blobs/sha256").join(&d);
    let out = cmd(
        "sh",
        &["-c", &format!("zstd -dc {} | tar -tv", blob.display())],
    )
    .ok();
    assert!(out.stdout.contains("src/weights/a.txt"), "{}", out.stdout);

    // stdin
    let s = format!("{PLAIN}/{}:stdin", repo("tar"));
    let st = std::process::Command::new(lamina_bin())
        .args([
            "affix",
            "--base",
            &format!("{PLAIN}/fixtures/base:latest"),
            "--dest",
            &s,
            "--tar",
            "-",
            "-q",
        ])
        .env("DOCKER_CONFIG", "/nonexistent")
        .stdin(std::fs::File::open(&tgz).unwrap())
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert_eq!(
        raw_manifest(&s, None)["layers"][2]["digest"],
        m_layer(&dest)
    );
}

fn m_layer(r: &str) -> serde_json::Value {
    raw_manifest(r, None)["layers"][2]["digest"].clone()
}

#[test]
fn affix_is_deterministic_and_small_layers_go_in_one_put() {
    harness();
    let dir = tempdir("affix-det");
    std::fs::write(dir.join("w.bin"), random_bytes(100_000, 9)).unwrap();
    let r = repo("det");
    let a = lamina(&[
        "affix",
        "--base",
        &format!("{PLAIN}/fixtures/base:latest"),
        "--dest",
        &format!("{PLAIN}/{r}:a"),
        dir.join("w.bin").to_str().unwrap(),
    ])
    .ok();
    let b = lamina(&[
        "affix",
        "--base",
        &format!("{PLAIN}/fixtures/base:latest"),
        "--dest",
        &format!("{PLAIN}/{r}:b"),
        dir.join("w.bin").to_str().unwrap(),
    ])
    .ok();
    assert_eq!(
        digest_of_output(&a.stdout),
        digest_of_output(&b.stdout),
        "same inputs, same image"
    );
    assert!(
        log_lines(PLAIN, &format!("PATCH /v2/{r}/")).is_empty(),
        "a small layer is uploaded monolithically"
    );
    assert!(!log_lines(PLAIN, &format!("PUT /v2/{r}/blobs/uploads/")).is_empty());
}

#[test]
fn affix_across_registries_streams_the_base_blobs() {
    harness();
    let dir = tempdir("affix-cross");
    std::fs::write(dir.join("w.bin"), random_bytes(1 << 20, 13)).unwrap();
    let dest = format!("{BASIC}/{}:x", repo("cross"));
    lamina(&[
        "affix",
        "--base",
        &format!("{PLAIN}/fixtures/big:latest"),
        "--dest",
        &dest,
        "--username",
        USER,
        "--password",
        PASS,
        dir.join("w.bin").to_str().unwrap(),
    ])
    .ok();
    let creds = format!("{USER}:{PASS}");
    let m = raw_manifest(&dest, Some(&creds));
    let base = raw_manifest(&format!("{PLAIN}/fixtures/big:latest"), None);
    assert_eq!(&layer_digests(&m)[..3], &layer_digests(&base)[..]);
    unpack(&dest, Some(&creds), &dir.join("unpack"));
}

#[test]
fn bad_input_gives_clear_errors_and_exit_codes() {
    harness();
    let dir = tempdir("affix-bad");
    std::fs::write(dir.join("w.bin"), b"x").unwrap();
    let w = dir.join("w.bin");
    let w = w.to_str().unwrap();
    let r = lamina(&[
        "affix",
        "--base",
        "Bad/Ref",
        "--dest",
        &format!("{PLAIN}/x"),
        w,
    ]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("invalid image reference \"Bad/Ref\"") && r.stderr.contains("lowercase"),
        "{}",
        r.stderr
    );
    let r = lamina(&[
        "affix",
        "--base",
        &format!("{PLAIN}/fixtures/base"),
        "--dest",
        &format!("{PLAIN}/x"),
        "/nonexistent/file",
    ]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("/nonexistent/file"), "{}", r.stderr);
    let dest = format!("{PLAIN}/{}:nope", repo("bad"));
    let r = lamina(&[
        "affix",
        "--base",
        &format!("{PLAIN}/fixtures/does-not-exist:latest"),
        "--dest",
        &dest,
        w,
    ]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("404") && r.stderr.contains("fixtures/does-not-exist"),
        "{}",
        r.stderr
    );
    assert_ne!(
        cmd(
            "skopeo",
            &[
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{dest}")
            ]
        )
        .code,
        0
    );
    let r = lamina(&[
        "affix",
        "--base",
        &format!("{PLAIN}/fixtures/multi"),
        "--dest",
        &dest,
        "--platform",
        "linux/s390x",
        w,
    ]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("linux/s390x") && r.stderr.contains("linux/arm64/v8"),
        "{}",
        r.stderr
    );
    let r = lamina(&[
        "affix",
        "--base",
        &format!("{PLAIN}/fixtures/base"),
        "--dest",
        &dest,
        "--tar",
        w,
    ]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("not a tar"), "{}", r.stderr);
    assert_ne!(
        cmd(
            "skopeo",
            &[
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{dest}")
            ]
        )
        .code,
        0
    );
    let r = lamina(&[
        "affix",
        "--base",
        &format!("{PLAIN}/fixtures/base"),
        "--dest",
        &dest,
    ]);
    assert_eq!(r.code, 2);
}

#[test]
fn layers_lists_history_and_json() {
    harness();
    let out = lamina(&["layers", &format!("{PLAIN}/fixtures/base:latest")]).ok();
    assert!(
        out.stdout.contains("ADD rootfs") && out.stdout.contains("COPY . /src"),
        "{}",
        out.stdout
    );
    let out = lamina(&["layers", &format!("{PLAIN}/fixtures/base:latest"), "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let base = raw_manifest(&format!("{PLAIN}/fixtures/base:latest"), None);
    assert_eq!(
        v["images"][0]["layers"][1]["digest"],
        base["layers"][1]["digest"]
    );
    assert_eq!(v["images"][0]["layers"][1]["createdBy"], "COPY . /src");
    assert_eq!(
        v["images"][0]["layers"][0]["size"],
        base["layers"][0]["size"]
    );
}

#[test]
fn credentials_from_docker_config_auths_and_credential_helpers() {
    harness();
    let dir = tempdir("dockercfg");
    let cfgdir = dir.join("docker");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&cfgdir).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    // base64("testuser:testpass")
    let cfg = format!(
        r#"{{"auths": {{"{BASIC}": {{"auth": "dGVzdHVzZXI6dGVzdHBhc3M="}}}}, "credHelpers": {{"{TOKEN}": "lamina-test"}}}}"#
    );
    std::fs::write(cfgdir.join("config.json"), cfg).unwrap();
    let helper = bin.join("docker-credential-lamina-test");
    std::fs::write(
        &helper,
        format!("#!/bin/sh\nread server\n[ \"$1\" = get ] && [ \"$server\" = \"{TOKEN}\" ] || exit 1\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{PASS}\"}}' \"$server\"\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = [
        ("DOCKER_CONFIG", cfgdir.to_str().unwrap()),
        ("PATH", path.as_str()),
    ];
    for reg in [BASIC, TOKEN] {
        let r = format!("{reg}/fixtures/base:latest");
        assert_ne!(lamina(&["layers", &r]).code, 0, "{reg} needs credentials");
        let out = lamina_env(&["layers", &r], &env).ok();
        assert!(out.stdout.contains("COPY . /src"), "{}", out.stdout);
        let out = lamina_env(&["layers", &r, "-v"], &env).ok();
        assert!(
            !out.stderr.contains(PASS) && !out.stdout.contains(PASS),
            "a password was printed"
        );
    }
}

/// (The base is fixtures/big: other tests count the downloads of fixtures/base's blobs.)
/// A registry killed in the middle of a layer upload and started again: lamina waits, finds
/// the upload session lost (distribution cannot resume a cut PATCH), starts the upload over by
/// building the deterministic layer again, and pushes the same image it pushes without faults.
#[test]
fn affix_survives_a_registry_restart_in_the_middle_of_the_upload() {
    harness();
    let dir = tempdir("restart");
    let store = dir.join("store");
    let port = 5120;
    let cfg = dir.join("config.yml");
    std::fs::write(
        &cfg,
        format!("version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: lamina-restart-test\n", store.display()),
    )
    .unwrap();
    let start = || {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("registry.log"))
            .unwrap();
        let child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        child
    };
    /// Kills and reaps the registry whatever happens to the test.
    struct Reg(std::process::Child);
    impl Drop for Reg {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let reg = Reg(start());
    let w = dir.join("w.bin");
    let data = random_bytes(256 << 20, 77);
    std::fs::write(&w, &data).unwrap();
    let dest = format!("127.0.0.1:{port}/resume/model:v1");
    let run = {
        let (dest, w) = (dest.clone(), w.clone());
        std::thread::spawn(move || {
            lamina(&[
                "affix",
                "--base",
                &format!("{PLAIN}/fixtures/big:latest"),
                "--dest",
                &dest,
                w.to_str().unwrap(),
            ])
        })
    };
    // kill the registry once a third of the layer has arrived, start it again a second later
    let uploads = store.join("docker/registry/v2/repositories/resume/model/_uploads");
    let mut killed = false;
    for _ in 0..600 {
        let size: u64 = std::fs::read_dir(&uploads)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::metadata(e.path().join("data")).ok())
            .map(|m| m.len())
            .sum();
        if size > 80 << 20 {
            killed = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(reg); // SIGKILL, mid-PATCH
    assert!(killed, "the upload never got going");
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let reg = Reg(start());
    let out = run.join().unwrap();
    drop(reg);
    let out = out.ok();
    assert!(out.stderr.contains("retrying"), "{}", out.stderr);
    // the same image as an undisturbed push (deterministic layer, SOURCE_DATE_EPOCH)
    let reference = lamina(&[
        "affix",
        "--base",
        &format!("{PLAIN}/fixtures/big:latest"),
        "--dest",
        &format!("{PLAIN}/{}:v1", repo("restart")),
        w.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(
        digest_of_output(&out.stdout),
        digest_of_output(&reference.stdout)
    );
    assert!(
        !out.stderr.contains("_state="),
        "opaque upload state leaked into messages: {}",
        out.stderr
    );
}

/// `--tar` through a pipe (`--tar <(tar -c ...)`), as r8im streams non-regular files: `auto`
/// judges it from its first bytes (it once read the pipe as a file of 0 bytes and gzipped the
/// weights), and the layer holds the tar; a directory or an unreadable file given to `--tar` is
/// refused before anything is sent.
#[test]
fn affix_tar_from_a_pipe_and_refused_tar_inputs() {
    harness();
    let dir = tempdir("affix-pipe");
    let w = dir.join("src/weights");
    std::fs::create_dir_all(&w).unwrap();
    std::fs::write(w.join("model.safetensors"), random_bytes(2 << 20, 88)).unwrap();
    let dest = format!("{PLAIN}/{}:v1", repo("pipe"));
    let script = format!(
        "'{}' affix --base {PLAIN}/fixtures/base:latest --dest {dest} --tar <(tar -C '{}' -c src)",
        lamina_bin().display(),
        dir.display()
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &script])
        .env("DOCKER_CONFIG", "/nonexistent-lamina-test")
        .env("LAMINA_CACHE_DIR", state().join("cache"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let m = raw_manifest(&dest, None);
    assert_eq!(
        m["layers"].as_array().unwrap().last().unwrap()["mediaType"],
        "application/vnd.oci.image.layer.v1.tar",
        "weights from a pipe are stored uncompressed: {stderr}"
    );
    let files = podman_listing(&dest, "/src/weights");
    assert!(files.contains_key("model.safetensors"), "{files:?}");
    let r = lamina(&[
        "affix",
        "--base",
        &format!("{PLAIN}/fixtures/base:latest"),
        "--dest",
        &dest,
        "--tar",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("is a directory"), "{}", r.stderr);
    assert!(
        !r.stderr.contains("base layers"),
        "refused before any network work: {}",
        r.stderr
    );
}
