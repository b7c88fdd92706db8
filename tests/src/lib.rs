//! Support for lamina's end-to-end tests: the real registries of `tests/harness/`, the built
//! `lamina` binary, and the peer tools (skopeo, umoci) that check its results.
//!
//! The registries are started once per test process (`registry.sh start` and `fixtures.sh`
//! are idempotent). Every test uses its own repository names, so tests run in parallel.

pub mod artifacts;
pub mod faultproxy;
pub mod models;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Plain registry (no auth).
pub const PLAIN: &str = "127.0.0.1:5100";
/// htpasswd Basic auth registry.
pub const BASIC: &str = "127.0.0.1:5101";
/// Bearer token registry.
pub const TOKEN: &str = "127.0.0.1:5103";
/// HTTPS registry with htpasswd Basic auth ([`USER`] / [`PASS`]); its certificate (IP SAN
/// `127.0.0.1`, DNS SAN `localhost`) is signed by the test CA at [`test_ca`].
pub const TLS: &str = "127.0.0.1:5105";
/// Test user.
pub const USER: &str = "testuser";
/// Test password.
pub const PASS: &str = "testpass";

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// State directory of the harness.
pub fn state() -> PathBuf {
    PathBuf::from(std::env::var("LAMINA_TEST_STATE").unwrap_or_else(|_| "/tmp/lamina-test".into()))
}

/// Certificate (PEM) of the test CA that signed the [`TLS`] registry's certificate, written by
/// `registry.sh start`. It is the only file in its directory, so `test_ca().parent()` can be
/// passed to skopeo's `--cert-dir`.
pub fn test_ca() -> PathBuf {
    state().join("etc/tls/ca.crt")
}

/// Starts the registries and pushes the fixtures (once per process).
pub fn harness() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        for script in ["registry.sh", "fixtures.sh"] {
            let mut c = Command::new(root().join("tests/harness").join(script));
            if script == "registry.sh" {
                c.arg("start");
            }
            let out = c.output().expect("run harness script");
            assert!(
                out.status.success(),
                "{script} failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    });
}

/// Path of the `lamina` binary, built once per process in the same profile as the tests.
pub fn lamina_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("LAMINA_BIN") {
            return PathBuf::from(p);
        }
        let release = !cfg!(debug_assertions);
        let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        c.current_dir(root())
            .args(["build", "-q", "-p", "lamina-cli", "--bin", "lamina"]);
        if release {
            c.arg("--release");
        }
        let st = c.status().expect("cargo build");
        assert!(st.success(), "building lamina failed");
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root().join("target"));
        target
            .join(if release { "release" } else { "debug" })
            .join("lamina")
    })
    .clone()
}

/// Result of a command.
#[derive(Debug)]
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
    /// Panics with the output unless the command succeeded.
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "command failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Panics with the output unless the command failed (a non-zero exit, not a crash).
    pub fn fails(self) -> Self {
        assert!(
            self.code > 0,
            "command did not fail as it should (exit {})\nstdout:\n{}\nstderr:\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `lamina` with `args` and a clean credentials environment.
pub fn lamina(args: &[&str]) -> Run {
    lamina_env(args, &[])
}

/// `lamina` with `args`, a clean credentials environment (no `COG_TOKEN`, `LAMINA_*`
/// credentials or Docker config), the harness's upload state, a fixed `SOURCE_DATE_EPOCH`, and
/// then `env` on top.
pub fn lamina_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(lamina_bin());
    c.args(args)
        .env_remove("COG_TOKEN")
        .env_remove("LAMINA_USERNAME")
        .env_remove("LAMINA_PASSWORD")
        .env_remove("LAMINA_REGISTRY")
        .env("DOCKER_CONFIG", "/nonexistent-lamina-test")
        .env("LAMINA_CACHE_DIR", state().join("cache"))
        .env("SOURCE_DATE_EPOCH", "946684800");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// Runs `lamina` with extra environment variables.
pub fn lamina_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    Run::from(lamina_command(args, env).output().expect("run lamina"))
}

/// Runs any command.
pub fn cmd(prog: &str, args: &[&str]) -> Run {
    Run::from(
        Command::new(prog)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{prog}: {e}")),
    )
}

/// `skopeo inspect --raw` of a reference (plain HTTP, optional creds), as it ran.
pub fn skopeo_inspect(reference: &str, creds: Option<&str>) -> Run {
    let mut args = vec!["inspect", "--raw", "--tls-verify=false"];
    if let Some(c) = creds {
        args.push("--creds");
        args.push(c);
    }
    let r = format!("docker://{reference}");
    args.push(&r);
    cmd("skopeo", &args)
}

/// The manifest `reference` resolves to, read by `skopeo inspect --raw`.
pub fn raw_manifest(reference: &str, creds: Option<&str>) -> serde_json::Value {
    let out = skopeo_inspect(reference, creds).ok();
    serde_json::from_str(&out.stdout).expect("manifest JSON")
}

/// Whether `reference` resolves (for checking that a failed run left no tag).
pub fn resolves(reference: &str, creds: Option<&str>) -> bool {
    skopeo_inspect(reference, creds).code == 0
}

/// `skopeo copy` the image to a fresh OCI layout and `umoci unpack` it; returns the rootfs.
pub fn unpack(reference: &str, creds: Option<&str>, dir: &Path) -> PathBuf {
    let layout = dir.join("layout");
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(dir).expect("mkdir");
    let dst = format!("oci:{}:img", layout.display());
    let src = format!("docker://{reference}");
    let mut args = vec!["copy", "-q", "--src-tls-verify=false"];
    if let Some(c) = creds {
        args.push("--src-creds");
        args.push(c);
    }
    args.push(&src);
    args.push(&dst);
    cmd("skopeo", &args).ok();
    let img = format!("{}:img", layout.display());
    cmd(
        "umoci",
        &[
            "unpack",
            "--rootless",
            "--image",
            &img,
            bundle.to_str().expect("utf-8"),
        ],
    )
    .ok();
    bundle.join("rootfs")
}

/// A fresh temporary directory under the harness state, unique to this test. It is removed when
/// the test passes and kept (for a look) when it fails.
pub fn tempdir(name: &str) -> TempDir {
    let d = state()
        .join("tmp")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("mkdir temp");
    TempDir(d)
}

/// See [`tempdir`].
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), incompressible like weights.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Lines of a registry's log (plain / basic / token) that mention `needle`.
pub fn log_lines(registry: &str, needle: &str) -> Vec<String> {
    let name = match registry {
        PLAIN => "plain",
        BASIC => "basic",
        TOKEN => "token",
        other => panic!("unknown registry {other}"),
    };
    let text = std::fs::read_to_string(state().join("run").join(format!("{name}.log")))
        .unwrap_or_default();
    text.lines()
        .filter(|l| l.contains(needle) && l.starts_with("127.0.0.1 - "))
        .map(str::to_string)
        .collect()
}

/// sha256 of bytes as `sha256:...`.
pub fn sha256(b: &[u8]) -> String {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(b);
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Unique repository name for a test.
pub fn repo(test: &str) -> String {
    format!("e2e/{test}-{}", std::process::id())
}

/// Runs `lamina` in the working directory `cwd` (the paths users type are relative to it).
pub fn lamina_in(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = lamina_command(args, env);
    c.current_dir(cwd);
    Run::from(c.output().expect("run lamina"))
}

/// What a tree holds, as a runtime or a user sees it (symlinks not followed): relative path ->
/// `dir`, `file <sha256> <mode>` or `link <target>`.
pub fn tree_listing(root: &Path) -> std::collections::BTreeMap<String, String> {
    use std::os::unix::fs::PermissionsExt as _;
    fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("dir entry"))
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            let m = std::fs::symlink_metadata(&p).expect("lstat");
            if m.file_type().is_symlink() {
                let t = std::fs::read_link(&p).expect("readlink");
                out.insert(rel, format!("link {}", t.display()));
            } else if m.is_dir() {
                out.insert(rel, "dir".into());
                walk(root, &p, out);
            } else {
                let b = std::fs::read(&p).expect("read");
                out.insert(
                    rel,
                    format!("file {} {:o}", sha256(&b), m.permissions().mode() & 0o777),
                );
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// `podman pull` the image from a plain-HTTP registry and `podman image mount` it: the files
/// exactly as a container runtime lays them out (layers applied with whiteouts by overlayfs),
/// listed under `sub` with [`tree_listing`]. The image is removed again.
pub fn podman_listing(reference: &str, sub: &str) -> std::collections::BTreeMap<String, String> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    cmd("podman", &["pull", "-q", "--tls-verify=false", reference]).ok();
    let mounted = cmd("podman", &["image", "mount", reference]).ok();
    let dir = PathBuf::from(mounted.stdout.trim()).join(sub.trim_start_matches('/'));
    let listing = tree_listing(&dir);
    cmd("podman", &["image", "umount", reference]).ok();
    cmd("podman", &["rmi", "-f", reference]).ok();
    listing
}

/// Runs `lamina` like [`lamina_env`], but kills it after `limit`: `None` means it had to be
/// killed (it hung).
pub fn lamina_deadline(
    args: &[&str],
    env: &[(&str, &str)],
    limit: std::time::Duration,
) -> Option<Run> {
    let mut c = lamina_command(args, env);
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().expect("run lamina");
    let out = child.stdout.take().expect("stdout");
    let err = child.stderr.take().expect("stderr");
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let (o, e) = (read(Box::new(out)), read(Box::new(err)));
    let t0 = std::time::Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return Some(Run {
                code: st.code().unwrap_or(-1),
                stdout: o.join().expect("stdout reader"),
                stderr: e.join().expect("stderr reader"),
            });
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!(
                "killed after {limit:?}; stderr:\n{}",
                e.join().unwrap_or_default()
            );
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Converts the uncompressed tar `tar` to eStargz with stargz-snapshotter's own library
/// (`tests/harness/estargz/main.go`, built once per source into the harness's state
/// directory, offline, from Debian's Go packages): the blob, its table's digest and its
/// diff_id.
pub fn estargz(tar: &[u8], dir: &Path) -> (Vec<u8>, String, String) {
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let src = root().join("tests/harness/estargz/main.go");
    let code = std::fs::read(&src).expect("estargz source");
    let bin = state().join(format!("estargz-{}", &sha256(&code)[7..19]));
    {
        let _one = BUILD.lock().unwrap_or_else(|e| e.into_inner());
        if !bin.exists() {
            let tmp = bin.with_extension(format!("tmp-{}", std::process::id()));
            let out = Command::new("go")
                .args(["build", "-o"])
                .arg(&tmp)
                .arg(&src)
                .env("GO111MODULE", "off")
                .env("GOPATH", "/usr/share/gocode")
                .env("GOCACHE", state().join("go-cache"))
                .env("GOFLAGS", "")
                .output()
                .expect("go build (golang-go)");
            assert!(
                out.status.success(),
                "go build estargz: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::rename(&tmp, &bin).expect("estargz tool in place");
        }
    }
    let input = dir.join("estargz-in.tar");
    let output = dir.join("estargz-out.gz");
    std::fs::write(&input, tar).expect("write tar");
    let out = Command::new(&bin)
        .arg(&input)
        .arg(&output)
        .output()
        .expect("run estargz");
    assert!(
        out.status.success(),
        "estargz: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut w = said.split_whitespace();
    let (toc, diff) = (
        w.next().expect("toc").to_string(),
        w.next().expect("diff id").to_string(),
    );
    (std::fs::read(&output).expect("read blob"), toc, diff)
}
