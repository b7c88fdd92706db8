//! Credentials and TLS for every registry a command touches: `lamina login`/`logout` writing
//! Docker's config.json, credentials per role (`--src-creds` for the registries read from,
//! `--dest-creds` or `--username/--password` for the destination), errors that say what
//! happened, and TLS with a registry whose certificate comes from its own CA.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lamina_tests::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// lamina with DOCKER_CONFIG (and HOME) in `dir`, and `stdin` piped in.
fn run_with(dir: &Path, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Run {
    let docker = dir.join("docker");
    let home = dir.join("home");
    let cache = dir.join("cache");
    let mut all = vec![
        ("DOCKER_CONFIG", s(&docker)),
        ("HOME", s(&home)),
        ("LAMINA_CACHE_DIR", s(&cache)),
    ];
    all.extend_from_slice(env);
    let mut c = lamina_command(args, &all);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn config(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("docker/config.json")).unwrap()).unwrap()
}

#[test]
fn login_stores_credentials_that_later_commands_use_and_logout_removes_them() {
    harness();
    let dir = tempdir("reg-login");
    std::fs::create_dir_all(dir.join("docker")).unwrap();
    // a config the user already has: its other keys stay as they are
    std::fs::write(
        dir.join("docker/config.json"),
        r#"{"auths":{"other.example":{"auth":"eDp5"}},"detachKeys":"ctrl-e,e"}"#,
    )
    .unwrap();
    let dest = format!("{BASIC}/{}:v1", repo("login"));
    let base = format!("{PLAIN}/fixtures/base:latest");
    std::fs::write(dir.join("w.bin"), b"weights").unwrap();
    // anonymous: refused, and lamina says so (not "credentials were sent")
    let out = run_with(
        &dir,
        &[
            "affix",
            "--base",
            &base,
            "--dest",
            &dest,
            s(&dir.join("w.bin")),
        ],
        "",
        &[],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("lamina login 127.0.0.1:5101"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("credentials were sent"),
        "{}",
        out.stderr
    );
    // a wrong password is refused and nothing is stored
    let out = run_with(
        &dir,
        &["login", BASIC, "-u", USER, "--password-stdin"],
        "wrong\n",
        &[],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(config(&dir)["auths"].get(BASIC).is_none());
    // the right one is checked and stored, mode 0600, other keys kept
    let out = run_with(
        &dir,
        &["login", BASIC, "-u", USER, "--password-stdin"],
        &format!("{PASS}\n"),
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "Login Succeeded");
    let c = config(&dir);
    assert_eq!(c["detachKeys"], "ctrl-e,e");
    assert_eq!(c["auths"]["other.example"]["auth"], "eDp5");
    assert_eq!(c["auths"][BASIC]["auth"], "dGVzdHVzZXI6dGVzdHBhc3M="); // testuser:testpass
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir.join("docker/config.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // a token registry too (the check gets a token)
    let out = run_with(
        &dir,
        &["login", TOKEN, "-u", USER, "--password-stdin"],
        PASS,
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    // skopeo reads what lamina wrote
    let sk = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{BASIC}/fixtures/base:latest"),
        ])
        .env("REGISTRY_AUTH_FILE", dir.join("docker/config.json"))
        .output()
        .unwrap();
    assert!(
        sk.status.success(),
        "{}",
        String::from_utf8_lossy(&sk.stderr)
    );
    // later commands use the stored credentials
    let out = run_with(
        &dir,
        &[
            "affix",
            "--base",
            &base,
            "--dest",
            &dest,
            s(&dir.join("w.bin")),
        ],
        "",
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = run_with(&dir, &["logout", BASIC], "", &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let c = config(&dir);
    assert!(c["auths"].get(BASIC).is_none(), "{c}");
    assert!(c["auths"].get(TOKEN).is_some(), "{c}");
    let out = run_with(&dir, &["layers", &dest], "", &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
}

#[test]
fn base_and_destination_on_two_private_registries_each_with_its_own_credentials() {
    harness();
    let dir = tempdir("reg-roles");
    std::fs::write(dir.join("w.bin"), random_bytes(1 << 20, 31)).unwrap();
    let base = format!("{BASIC}/fixtures/base:latest");
    let dest = format!("{TOKEN}/{}:v1", repo("roles"));
    let creds = format!("{USER}:{PASS}");
    // the destination's credentials alone: the base is refused, and the error says it is --base
    let out = run_with(
        &dir,
        &[
            "affix",
            "--base",
            &base,
            "--dest",
            &dest,
            "--dest-creds",
            &creds,
            s(&dir.join("w.bin")),
        ],
        "",
        &[],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("--base {base}")),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--src-creds"), "{}", out.stderr);
    // both, with skopeo's names
    let out = run_with(
        &dir,
        &[
            "affix",
            "--base",
            &base,
            "--dest",
            &dest,
            "--src-creds",
            &creds,
            "--dest-creds",
            &creds,
            s(&dir.join("w.bin")),
        ],
        "",
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    // --username/--password still mean the destination, as before
    let out = run_with(
        &dir,
        &[
            "affix",
            "--base",
            &base,
            "--dest",
            &dest,
            "--src-creds",
            &creds,
            "--username",
            USER,
            "--password",
            PASS,
            s(&dir.join("w.bin")),
        ],
        "",
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    // one login per registry: two different ones for the same host are refused
    let out = run_with(
        &dir,
        &[
            "affix",
            "--base",
            &format!("{BASIC}/fixtures/base:latest"),
            "--dest",
            &format!("{BASIC}/{}:v2", repo("roles")),
            "--src-creds",
            "a:b",
            "--dest-creds",
            &creds,
            s(&dir.join("w.bin")),
        ],
        "",
        &[],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("are both for 127.0.0.1:5101"),
        "{}",
        out.stderr
    );
    // remix reads two images: --src-creds covers both
    let weights = format!("{TOKEN}/{}:v1", repo("roles"));
    let out = run_with(
        &dir,
        &[
            "remix",
            "--base",
            &base,
            "--weights",
            &weights,
            "--dest",
            &format!("{BASIC}/{}:remixed", repo("roles")),
            "--src-creds",
            &creds,
            "--dest-creds",
            &creds,
        ],
        "",
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn a_credential_helper_that_is_not_installed_is_named() {
    harness();
    let dir = tempdir("reg-helper");
    std::fs::create_dir_all(dir.join("docker")).unwrap();
    std::fs::write(
        dir.join("docker/config.json"),
        r#"{"credsStore":"lamina-test-missing"}"#,
    )
    .unwrap();
    let out = run_with(
        &dir,
        &["layers", &format!("{BASIC}/fixtures/base:latest")],
        "",
        &[],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("docker-credential-lamina-test-missing is not installed"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_cog_token_on_a_registry_without_the_cog_endpoint_says_so() {
    harness();
    let dir = tempdir("reg-cog");
    let out = run_with(
        &dir,
        &[
            "layers",
            &format!("{TOKEN}/fixtures/base:latest"),
            "-r",
            TOKEN,
            "-t",
            "r8_notatoken",
        ],
        "",
        &[],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("has no Cog token endpoint"),
        "{}",
        out.stderr
    );
}

#[test]
fn tls_registry_with_its_own_ca() {
    harness();
    let dir = tempdir("reg-tls");
    let ca = test_ca();
    let creds = format!("{USER}:{PASS}");
    let base = format!("https://{TLS}/fixtures/base:latest");
    // not trusted: one clear error naming the host, no retries
    let t0 = Instant::now();
    let out = run_with(&dir, &["layers", &base, "--dest-creds", &creds], "", &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(
        out.stderr.contains(&format!("TLS with {TLS} failed")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("UnknownIssuer") && out.stderr.contains("--ca-file"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("retrying"), "{}", out.stderr);
    // trusted four ways: --ca-file, SSL_CERT_FILE, ~/.docker/certs.d/HOST/ca.crt, or not verified
    let ok = |args: &[&str], env: &[(&str, &str)]| {
        let mut a = vec!["layers", base.as_str(), "--dest-creds", creds.as_str()];
        a.extend_from_slice(args);
        let out = run_with(&dir, &a, "", env);
        assert_eq!(out.code, 0, "{args:?} {env:?}: {}", out.stderr);
        assert!(out.stdout.contains("sha256:"), "{}", out.stdout);
    };
    ok(&["--ca-file", s(&ca)], &[]);
    ok(&[], &[("SSL_CERT_FILE", s(&ca))]);
    ok(&["--tls-verify=false"], &[]);
    let certs_d = dir.join("home/.docker/certs.d").join(TLS);
    std::fs::create_dir_all(&certs_d).unwrap();
    std::fs::copy(&ca, certs_d.join("ca.crt")).unwrap();
    ok(&[], &[]);
    std::fs::remove_dir_all(dir.join("home/.docker/certs.d")).unwrap();
    // affix from the TLS registry onto the plain one, verification off for the source only;
    // then back onto the TLS registry with the CA, checked by skopeo with the same CA
    std::fs::write(dir.join("w.bin"), random_bytes(3 << 20, 41)).unwrap();
    let plain_dest = format!("{PLAIN}/{}:v1", repo("tls"));
    let out = run_with(
        &dir,
        &[
            "affix",
            "--base",
            &base,
            "--dest",
            &plain_dest,
            "--src-creds",
            &creds,
            "--src-tls-verify=false",
            s(&dir.join("w.bin")),
        ],
        "",
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = run_with(
        &dir,
        &[
            "affix",
            "--base",
            &base,
            "--dest",
            &plain_dest,
            "--src-creds",
            &creds,
            "--dest-tls-verify=false",
            s(&dir.join("w.bin")),
        ],
        "",
        &[],
    );
    assert_eq!(
        out.code, 1,
        "--dest-tls-verify=false does not cover the base: {}",
        out.stderr
    );
    let tls_dest = format!("https://{TLS}/{}:v1", repo("tls"));
    let out = run_with(
        &dir,
        &[
            "affix",
            "--base",
            &base,
            "--dest",
            &tls_dest,
            "--dest-creds",
            &creds,
            "--ca-file",
            s(&ca),
            s(&dir.join("w.bin")),
        ],
        "",
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let digest = out.stdout.trim().rsplit_once('@').unwrap().1.to_string();
    let cert_dir = ca.parent().unwrap();
    let sk = cmd(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--cert-dir",
            s(cert_dir),
            "--creds",
            &creds,
            &format!("docker://{TLS}/{}:v1", repo("tls")),
        ],
    )
    .ok();
    assert_eq!(sha256(sk.stdout.as_bytes()), digest);
}
