//! lamina under faults: the fault-injecting proxy of `lamina_tests::faultproxy` in front of the
//! real registries breaks uploads, downloads and answers, and lamina must resume, retry within
//! bounds, refuse what lies, and never leave a tag that points at missing or wrong data.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::path::Path;
use std::time::{Duration, Instant};

use lamina_tests::faultproxy::{Action, FaultProxy, Logged, Rule};
use lamina_tests::*;

const MIB: u64 = 1 << 20;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// lamina with its upload state kept in the test's own directory.
fn run(dir: &Path, args: &[&str]) -> Run {
    let cache = dir.join("cache");
    lamina_env(args, &[("LAMINA_CACHE_DIR", s(&cache))])
}

fn digest_of_output(stdout: &str) -> String {
    let line = stdout.trim();
    line.rsplit_once('@')
        .map(|(_, d)| d.to_string())
        .unwrap_or_else(|| panic!("no digest in {line:?}"))
}

fn patch_bytes(log: &[Logged]) -> u64 {
    log.iter()
        .filter(|l| l.method == "PATCH")
        .map(|l| l.body_bytes)
        .sum()
}

fn is_blob_upload(l: &Logged) -> bool {
    l.path.contains("/blobs/uploads/") && l.method != "GET"
}

/// Every manifest PUT comes after the last blob upload request, and none was made at all when
/// `none` is set.
fn manifests_last(log: &[Logged]) {
    let last_blob = log.iter().rposition(is_blob_upload);
    let first_manifest = log
        .iter()
        .position(|l| l.method == "PUT" && l.path.contains("/manifests/"));
    if let (Some(b), Some(m)) = (last_blob, first_manifest) {
        assert!(
            m > b,
            "a manifest went up before a blob: {:#?}",
            &log[m..=b]
        );
    }
}

/// A chunked upload through a proxy that cuts the connection in the middle of a chunk (before
/// the registry sees it, as behind a buffering front end), refuses a chunk with 503, answers
/// another 416, and asks to slow down with 429: lamina asks the registry where the upload stands
/// each time and goes on from there. Each fault costs at most one chunk sent again, the image is
/// whole, and the waits follow `Retry-After`.
#[test]
fn chunked_uploads_resume_from_the_registry_offset_after_faults() {
    harness();
    let dir = tempdir("fault-chunks");
    let p = FaultProxy::start(PLAIN);
    let data = random_bytes(40 << 20, 801);
    std::fs::write(dir.join("w.bin"), &data).unwrap();
    let chunk = 4 * MIB;
    p.add(
        Rule::new("PATCH", "/blobs/uploads/")
            .nth(2)
            .action(Action::ResetRequestBuffered(3 * MIB)),
    );
    p.add(
        Rule::new("PATCH", "/blobs/uploads/")
            .nth(3)
            .action(Action::Status(503)),
    );
    p.add(
        Rule::new("PATCH", "/blobs/uploads/")
            .nth(4)
            .action(Action::Status(416)),
    );
    p.add(
        Rule::new("PATCH", "/blobs/uploads/")
            .nth(5)
            .action(Action::RetryAfter(429, 2)),
    );
    // and on the way: a base manifest that fails once, a mount that fails once
    p.add(Rule::new("GET", "/manifests/").action(Action::Status(502)));
    p.add(Rule::new("POST", "mount=").action(Action::Status(503)));
    let dest = format!("{}/{}:v1", p.addr(), repo("chunks"));
    let out = run(
        &dir,
        &[
            "affix",
            "--base",
            &format!("{}/fixtures/base:latest", p.addr()),
            "--dest",
            &dest,
            "--chunked",
            "--chunk-size",
            "4",
            "--compression",
            "none",
            s(&dir.join("w.bin")),
        ],
    )
    .ok();
    let log = p.requests();
    let faults = log.iter().filter(|l| l.fault.is_some()).count();
    assert_eq!(faults, 6, "every fault was met: {log:#?}");
    // each fault is retried after a wait, but for the 416: a refused range is asked about at once
    assert_eq!(out.stderr.matches("retrying").count(), 5, "{}", out.stderr);

    // bytes sent again: at most one chunk for each of the four broken PATCHes
    let local = dest.replace(p.addr(), PLAIN);
    let m = raw_manifest(&local, None);
    let size = m["layers"].as_array().unwrap().last().unwrap()["size"]
        .as_u64()
        .unwrap();
    let resent = patch_bytes(&log) - size;
    println!(
        "PATCH bytes {} for a {size}-byte layer: {resent} sent again",
        patch_bytes(&log)
    );
    assert!(resent > 0 && resent <= 4 * chunk, "sent again: {resent}");

    // after the 429 lamina waited its Retry-After before asking where the upload stands
    let i = log
        .iter()
        .position(|l| l.status == 429)
        .expect("the 429 was answered");
    let next = &log[i + 1];
    assert!(
        next.method == "GET" && next.path.contains("/blobs/uploads/"),
        "{next:?}"
    );
    let waited = next.at - log[i].at;
    assert!(waited >= Duration::from_millis(1900), "waited {waited:?}");
    manifests_last(&log);

    // the image is whole: skopeo and umoci read it, the file is the one given
    let rootfs = unpack(&local, None, &dir.join("unpacked"));
    assert_eq!(
        std::fs::read(rootfs.join("src/weights/w.bin")).unwrap(),
        data
    );
    assert!(
        !dir.join("cache/uploads").exists()
            || std::fs::read_dir(dir.join("cache/uploads"))
                .unwrap()
                .count()
                == 0,
        "the upload state was removed after success"
    );
}

/// A streamed upload cut in the middle after the registry stored part of it: distribution then
/// forgets the session, so lamina starts a new one and makes the (deterministic) layer again.
/// The result is the image an undisturbed run makes.
#[test]
fn a_cut_streamed_upload_starts_over_and_makes_the_same_image() {
    harness();
    let dir = tempdir("fault-stream");
    let p = FaultProxy::start(PLAIN);
    std::fs::write(dir.join("w.bin"), random_bytes(24 << 20, 802)).unwrap();
    p.add(Rule::new("PATCH", "/blobs/uploads/").action(Action::ResetRequestForwarded(5 * MIB)));
    let base = format!("{PLAIN}/fixtures/base:latest");
    let out = run(
        &dir,
        &[
            "affix",
            "--base",
            &base,
            "--dest",
            &format!("{}/{}:v1", p.addr(), repo("stream")),
            s(&dir.join("w.bin")),
        ],
    )
    .ok();
    assert!(out.stderr.contains("retrying"), "{}", out.stderr);
    let clean = run(
        &dir,
        &[
            "affix",
            "--base",
            &base,
            "--dest",
            &format!("{PLAIN}/{}:clean", repo("stream")),
            s(&dir.join("w.bin")),
        ],
    )
    .ok();
    assert_eq!(
        digest_of_output(&out.stdout),
        digest_of_output(&clean.stdout)
    );
    let log = p.requests();
    let cut = log.iter().find(|l| l.fault.is_some()).unwrap();
    assert!(!cut.body_complete && cut.body_bytes == 5 * MIB, "{cut:?}");
    manifests_last(&log);
}

/// A killed `lamina affix` leaves its upload state behind; the same command run again continues
/// the same upload session from the registry's offset and sends only the rest.
#[test]
fn a_killed_upload_resumes_in_the_same_session_when_run_again() {
    harness();
    let dir = tempdir("fault-kill");
    let p = FaultProxy::start(PLAIN);
    let size = 20 * MIB;
    std::fs::write(dir.join("w.bin"), random_bytes(size as usize, 803)).unwrap();
    // the third chunk hangs in a front end that buffers it: the process is killed meanwhile
    p.add(
        Rule::new("PATCH", "/blobs/uploads/")
            .nth(3)
            .action(Action::Stall(Duration::from_secs(60))),
    );
    let dest = format!("{}/{}:v1", p.addr(), repo("kill"));
    let base = format!("{}/fixtures/base:latest", p.addr());
    let w = dir.join("w.bin");
    let args = [
        "affix",
        "--base",
        &base,
        "--dest",
        &dest,
        "--chunked",
        "--chunk-size",
        "4",
        "--compression",
        "none",
        s(&w),
    ];
    let cache = dir.join("cache");
    let mut child = std::process::Command::new(lamina_bin())
        .args(args)
        .env("LAMINA_CACHE_DIR", &cache)
        .env("SOURCE_DATE_EPOCH", "946684800")
        .env("DOCKER_CONFIG", "/nonexistent-lamina-test")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        let stalled = p
            .requests()
            .iter()
            .any(|l| l.fault.is_some() && l.body_complete);
        if stalled {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "never reached the third chunk"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL: no clean-up of any kind
    child.wait().unwrap();
    let state: Vec<_> = std::fs::read_dir(cache.join("uploads"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(state.len(), 1, "one upload state file");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state[0].path()).unwrap()).unwrap();
    let seen: Vec<String> = p
        .requests()
        .iter()
        .map(|l| {
            format!(
                "{} {} {} {} {:?}",
                l.method, l.path, l.body_bytes, l.status, l.fault
            )
        })
        .collect();
    assert_eq!(saved["confirmed"], 8 * MIB, "{saved} {seen:#?}");
    let uuid = saved["location"]
        .as_str()
        .unwrap()
        .split('?')
        .next()
        .unwrap();
    let uuid = uuid.rsplit('/').next().unwrap().to_string();
    assert!(
        !resolves(&dest.replace(p.addr(), PLAIN), None),
        "no tag yet"
    );

    p.clear();
    p.clear_log();
    let out = run(&dir, &args).ok();
    assert!(out.stderr.contains("resuming the upload"), "{}", out.stderr);
    let log = p.requests();
    // no new upload session for the layer: the first upload request after the mounts asks where
    // the old session stands (the config, a new blob, gets its own afterwards)
    let first = log
        .iter()
        .find(|l| l.path.contains("/blobs/uploads/") && !l.path.contains("mount="))
        .unwrap();
    assert_eq!(first.method, "GET", "{first:?}");
    assert!(first.path.contains(&uuid), "{} vs {uuid}", first.path);
    let m = raw_manifest(&dest.replace(p.addr(), PLAIN), None);
    let layer = m["layers"].as_array().unwrap().last().unwrap()["size"]
        .as_u64()
        .unwrap();
    assert!(layer > size, "{layer}");
    assert_eq!(patch_bytes(&log), layer - 8 * MIB, "only the rest was sent");
    assert_eq!(std::fs::read_dir(cache.join("uploads")).unwrap().count(), 0);
    // the same image as an undisturbed run
    let clean = run(
        &dir,
        &[
            "affix",
            "--base",
            &format!("{PLAIN}/fixtures/base:latest"),
            "--dest",
            &format!("{PLAIN}/{}:clean", repo("kill")),
            "--compression",
            "none",
            s(&w),
        ],
    )
    .ok();
    assert_eq!(
        digest_of_output(&out.stdout),
        digest_of_output(&clean.stdout)
    );
}

/// Retries are bounded in count and time, never repeat a request that is not safe to repeat,
/// and a run that fails leaves no tag: a registry whose manifest PUT always fails, one that
/// lies about a blob's digest, and one that never stops answering 503.
#[test]
fn failing_runs_stop_in_bounded_time_and_leave_no_tag() {
    harness();
    let dir = tempdir("fault-notag");
    std::fs::write(dir.join("w.bin"), random_bytes(3 << 20, 804)).unwrap();
    let w = dir.join("w.bin");
    let base = format!("{PLAIN}/fixtures/base:latest");

    // 1. the manifest PUT always fails: bounded retries, then a clear error and no tag
    let p = FaultProxy::start(PLAIN);
    p.add(
        Rule::new("PUT", "/manifests/")
            .times(u32::MAX)
            .action(Action::Status(500)),
    );
    let dest = format!("{}/{}:v1", p.addr(), repo("notag"));
    let t0 = Instant::now();
    let r = run(&dir, &["affix", "--base", &base, "--dest", &dest, s(&w)]);
    let took = t0.elapsed();
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("gave up after 5 attempts") && r.stderr.contains("500"),
        "{}",
        r.stderr
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
    let puts = p
        .requests()
        .iter()
        .filter(|l| l.method == "PUT" && l.path.contains("/manifests/"))
        .count();
    assert_eq!(puts, 5);
    assert!(!resolves(&dest.replace(p.addr(), PLAIN), None));
    manifests_last(&p.requests());

    // 2. the registry claims another digest for the uploaded layer: refused, no manifest at all
    let p = FaultProxy::start(PLAIN);
    p.add(
        Rule::new("PUT", "/blobs/uploads/")
            .times(u32::MAX)
            .action(Action::WrongDigest),
    );
    let dest = format!("{}/{}:v2", p.addr(), repo("notag"));
    let r = run(&dir, &["affix", "--base", &base, "--dest", &dest, s(&w)]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("Docker-Content-Digest") && r.stderr.contains("0bad"),
        "{}",
        r.stderr
    );
    assert!(!p
        .requests()
        .iter()
        .any(|l| l.path.contains("/manifests/") && l.method == "PUT"));
    assert!(!resolves(&dest.replace(p.addr(), PLAIN), None));
    // the session whose blob was refused is of no use to a later run: no state file is kept
    let kept = std::fs::read_dir(dir.join("cache/uploads"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(kept, 0, "upload state kept after a refused blob");

    // 3. a registry that answers 503 with a Retry-After of 1 s, again and again: five attempts
    // a second apart; one asking for 100 s: lamina gives up at once and says why
    let p = FaultProxy::start(PLAIN);
    p.add(
        Rule::new("GET", "/manifests/")
            .times(u32::MAX)
            .action(Action::RetryAfter(503, 1)),
    );
    let t0 = Instant::now();
    let r = run(
        &dir,
        &["layers", &format!("{}/fixtures/base:latest", p.addr())],
    );
    let took = t0.elapsed();
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("gave up after 5 attempts"),
        "{}",
        r.stderr
    );
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(10),
        "took {took:?}"
    );
    let p = FaultProxy::start(PLAIN);
    p.add(
        Rule::new("GET", "/manifests/")
            .times(u32::MAX)
            .action(Action::RetryAfter(503, 100)),
    );
    let t0 = Instant::now();
    let r = run(
        &dir,
        &["layers", &format!("{}/fixtures/base:latest", p.addr())],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    assert!(
        r.stderr.contains("503") && r.stderr.contains("try again in 100 s"),
        "{}",
        r.stderr
    );

    // 4. a streamed PATCH that fails with 500 is not sent again blindly: lamina asks the upload's
    // status first (the registry may have kept part of it)
    let p = FaultProxy::start(PLAIN);
    p.add(Rule::new("PATCH", "/blobs/uploads/").action(Action::Status(500)));
    let dest = format!("{}/{}:v3", p.addr(), repo("notag"));
    run(
        &dir,
        &[
            "affix",
            "--base",
            &base,
            "--dest",
            &dest,
            "--compression",
            "none",
            s(&w),
        ],
    )
    .ok();
    let log = p.requests();
    let i = log.iter().position(|l| l.status == 500).unwrap();
    assert!(
        log[i + 1].method == "GET" && log[i + 1].path.contains("/blobs/uploads/"),
        "{:?}",
        log[i + 1]
    );
}

/// Slow answers and answers cut short on the way down: a delayed manifest is waited for, a cut
/// manifest body is fetched again, and a blob download cut in the middle fails `extract` with a
/// clear error and no output file left looking complete.
#[test]
fn slow_and_truncated_answers() {
    harness();
    let dir = tempdir("fault-slow");
    let p = FaultProxy::start(PLAIN);
    // the first answer is cut after 10 bytes of its body, the second comes 2 s late
    p.add(Rule::new("GET", "/manifests/").action(Action::ResetResponse(10)));
    p.add(Rule::new("GET", "/manifests/").action(Action::Delay(Duration::from_secs(2))));
    let r = run(
        &dir,
        &[
            "layers",
            "--json",
            &format!("{}/fixtures/base:latest", p.addr()),
        ],
    )
    .ok();
    assert!(r.stdout.contains("sha256:"), "{}", r.stdout);
    assert!(r.stderr.contains("retrying"), "{}", r.stderr);

    let p = FaultProxy::start(PLAIN);
    p.add(
        Rule::new("GET", "/blobs/sha256:")
            .times(u32::MAX)
            .action(Action::ResetResponse(1000)),
    );
    let out = dir.join("all.tar");
    let r = run(
        &dir,
        &[
            "extract",
            "--all",
            "-o",
            s(&out),
            &format!("{}/fixtures/base:latest", p.addr()),
        ],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(!out.exists(), "no output file after a failed extract");
    assert!(
        r.stderr.to_lowercase().contains("blob") || r.stderr.contains("sha256:"),
        "{}",
        r.stderr
    );
}

/// Eight `lamina affix` runs at once onto the same base and into the same repository, through a
/// proxy that fails some of their requests (502 on manifests, 503 on chunks and mounts): all
/// finish, every tag has the base's layers and its own.
#[test]
fn eight_concurrent_affix_runs_onto_one_base_and_repository() {
    harness();
    let dir = tempdir("fault-load");
    let name = repo("load");
    let p = FaultProxy::start(PLAIN);
    p.add(
        Rule::new("GET", "/manifests/")
            .times(3)
            .action(Action::Status(502)),
    );
    p.add(
        Rule::new("PATCH", "/blobs/uploads/")
            .times(4)
            .action(Action::Status(503)),
    );
    p.add(
        Rule::new("POST", "mount=")
            .times(2)
            .action(Action::Status(503)),
    );
    let base = format!("{}/fixtures/base:latest", p.addr());
    let base_layers: Vec<String> = raw_manifest(&format!("{PLAIN}/fixtures/base:latest"), None)
        ["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    for i in 0..8 {
        std::fs::write(
            dir.join(format!("w{i}.bin")),
            random_bytes(16 << 20, 900 + i),
        )
        .unwrap();
    }
    let t0 = Instant::now();
    let runs: Vec<_> = (0..8)
        .map(|i| {
            let f = dir.join(format!("w{i}.bin"));
            let dest = format!("{}/{name}:t{i}", p.addr());
            let (base, d) = (base.clone(), dir.to_path_buf());
            std::thread::spawn(move || {
                let t = Instant::now();
                let r = run(
                    &d,
                    &[
                        "affix",
                        "--base",
                        &base,
                        "--dest",
                        &dest,
                        "--chunked",
                        "--chunk-size",
                        "4",
                        s(&f),
                    ],
                );
                (dest, r, t.elapsed())
            })
        })
        .collect();
    let mut times = Vec::new();
    for h in runs {
        let (dest, r, t) = h.join().unwrap();
        let r = r.ok();
        times.push(t.as_secs_f64());
        let m = raw_manifest(&dest.replace(p.addr(), PLAIN), None);
        let layers: Vec<&str> = m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap())
            .collect();
        assert_eq!(layers.len(), base_layers.len() + 1, "{dest}");
        assert_eq!(
            layers[..base_layers.len()],
            base_layers.iter().map(String::as_str).collect::<Vec<_>>()[..]
        );
        assert!(r.stdout.contains(&name), "{}", r.stdout);
    }
    let wall = t0.elapsed().as_secs_f64();
    let faults = p.requests().iter().filter(|l| l.fault.is_some()).count();
    assert_eq!(faults, 9, "every fault was met");
    times.sort_by(f64::total_cmp);
    println!(
        "LOAD 8 concurrent affix (16 MiB each, 9 faults): wall {wall:.2} s, per run median {:.2} s, max {:.2} s",
        times[4], times[7]
    );
}

/// Registries that lie: a manifest that would never end, a manifest whose bytes do not match
/// the digest the registry gives, a manifest whose config is a layer, a layer that is a
/// manifest, redirects without end, a token server that answers without a token. Each gets a
/// clear error, a non-zero exit, and nothing written.
#[test]
fn lying_registries_get_clear_errors_and_nothing_is_written() {
    harness();
    let dir = tempdir("fault-lies");
    std::fs::write(dir.join("w.bin"), b"weights").unwrap();
    let w = dir.join("w.bin");
    let out = dir.join("out.tar");
    let oci_manifest = "application/vnd.oci.image.manifest.v1+json";
    let real = raw_manifest(&format!("{PLAIN}/fixtures/base:latest"), None);
    let check = |r: &Run, p: &FaultProxy, dest: Option<&str>, needles: &[&str]| {
        assert_eq!(r.code, 1, "{r:?}");
        for n in needles {
            assert!(r.stderr.contains(n), "{n:?} not in {}", r.stderr);
        }
        assert!(!out.exists(), "an output file was left");
        if let Some(dest) = dest {
            assert!(
                !resolves(&dest.replace(p.addr(), PLAIN), None),
                "{dest} was tagged"
            );
        }
        assert!(
            !p.requests()
                .iter()
                .any(|l| l.method == "PUT" && l.path.contains("/manifests/")),
            "a manifest was pushed"
        );
    };
    let attempt = |p: &FaultProxy, name: &str| -> (Run, Run, String) {
        let base = format!("{}/fixtures/base:latest", p.addr());
        let dest = format!("{}/{}:{name}", p.addr(), repo("lies"));
        let a = run(&dir, &["affix", "--base", &base, "--dest", &dest, s(&w)]);
        let e = run(&dir, &["extract", "--all", "-o", s(&out), &base]);
        (a, e, dest)
    };

    // a manifest of 1 GiB (it would go on): refused after 4 MiB and the connection closed, so
    // the rest is never sent. What the proxy counts as sent includes what sat in the kernel's
    // socket buffers when lamina closed (loopback autotunes the receive buffer up to
    // tcp_rmem's 32 MiB), so the bound is "far short of the claim", not "4 MiB".
    let p = FaultProxy::start(PLAIN);
    p.add(
        Rule::new("GET", "/manifests/")
            .times(u32::MAX)
            .action(Action::Endless(
                200,
                vec![("Content-Type".into(), oci_manifest.into())],
                1024 * MIB,
            )),
    );
    let (a, e, dest) = attempt(&p, "big");
    check(&a, &p, Some(&dest), &["manifest", "4 MiB"]);
    check(&e, &p, Some(&dest), &["manifest", "4 MiB"]);
    let sent = p.response_bytes();
    let gets = p
        .requests()
        .iter()
        .filter(|l| l.path.contains("/manifests/"))
        .count() as u64;
    assert_eq!(
        gets, 2,
        "one GET per command: a refused manifest is not retried"
    );
    assert!(
        sent < gets * 64 * MIB,
        "{sent} bytes of two endless manifests were sent: lamina did not close the connection"
    );

    // the registry's Docker-Content-Digest does not match the manifest's bytes
    let p = FaultProxy::start(PLAIN);
    p.add(
        Rule::new("GET", "/manifests/")
            .times(u32::MAX)
            .action(Action::WrongDigest),
    );
    let (a, e, dest) = attempt(&p, "digest");
    check(&a, &p, Some(&dest), &["Docker-Content-Digest", "0bad"]);
    check(&e, &p, Some(&dest), &["Docker-Content-Digest", "0bad"]);

    // a manifest whose config descriptor is a layer
    let mut m = real.clone();
    m["config"]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip".into();
    let body = serde_json::to_vec(&m).unwrap();
    let p = FaultProxy::start(PLAIN);
    p.add(
        Rule::new("GET", "/manifests/")
            .times(u32::MAX)
            .action(Action::Respond(
                200,
                vec![("Content-Type".into(), oci_manifest.into())],
                body,
            )),
    );
    let (a, e, dest) = attempt(&p, "config");
    check(
        &a,
        &p,
        Some(&dest),
        &["config", "application/vnd.oci.image.layer.v1.tar+gzip"],
    );
    check(
        &e,
        &p,
        Some(&dest),
        &["config", "application/vnd.oci.image.layer.v1.tar+gzip"],
    );

    // a manifest whose layer is another manifest
    let mut m = real.clone();
    m["layers"][0]["mediaType"] = oci_manifest.into();
    let body = serde_json::to_vec(&m).unwrap();
    let p = FaultProxy::start(PLAIN);
    p.add(
        Rule::new("GET", "/manifests/")
            .times(u32::MAX)
            .action(Action::Respond(
                200,
                vec![("Content-Type".into(), oci_manifest.into())],
                body,
            )),
    );
    let (a, e, dest) = attempt(&p, "layer");
    check(&a, &p, Some(&dest), &["layer", oci_manifest]);
    check(&e, &p, Some(&dest), &["layer", oci_manifest]);

    // blob downloads redirected to themselves without end
    let p = FaultProxy::start(PLAIN);
    let url = format!("http://{}{{path}}", p.addr());
    p.add(
        Rule::new("GET", "/blobs/sha256:")
            .times(u32::MAX)
            .action(Action::Redirect(url)),
    );
    let base = format!("{}/fixtures/base:latest", p.addr());
    let e = run(&dir, &["extract", "--all", "-o", s(&out), &base]);
    check(&e, &p, None, &["redirects"]);
    let hops = p.requests().iter().filter(|l| l.status == 302).count();
    assert!(hops <= 6 * 2, "{hops} redirects followed");

    // a token server whose answer holds no token
    let pt = FaultProxy::start("127.0.0.1:5104");
    pt.add(
        Rule::new("GET", "/token")
            .times(u32::MAX)
            .action(Action::Respond(
                200,
                vec![],
                br#"{"expires_in":300}"#.to_vec(),
            )),
    );
    let p = FaultProxy::start(TOKEN);
    p.add(
        Rule::new("*", "/")
            .times(u32::MAX)
            .action(Action::RewriteHeader(
                "WWW-Authenticate".into(),
                "127.0.0.1:5104".into(),
                pt.addr().into(),
            )),
    );
    let base = format!("{}/fixtures/base:latest", p.addr());
    let dest = format!("{}/{}:token", p.addr(), repo("lies"));
    let r = lamina_env(
        &["affix", "--base", &base, "--dest", &dest, s(&w)],
        &[("LAMINA_USERNAME", USER), ("LAMINA_PASSWORD", PASS)],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("no token"), "{}", r.stderr);
    assert!(!pt.requests().is_empty(), "the token server was asked");
    assert!(
        !resolves(
            &dest.replace(p.addr(), TOKEN),
            Some(&format!("{USER}:{PASS}"))
        ),
        "tagged"
    );
}

/// Whether a secret may appear in this place (`Header: value`, path or body) of this request.
type Allowed<'a> = &'a dyn Fn(&Logged, &str) -> bool;

/// Every place a secret could leak in one run: lamina's stdout and stderr (at its most verbose),
/// and every request the proxies saw. A secret may only appear in the `Authorization` header of
/// a request to the host it belongs to (and a Cog token in the verify-token form it is made for).
fn assert_no_leak(r: &Run, secrets: &[String], proxies: &[(&FaultProxy, Allowed<'_>)]) {
    for sec in secrets {
        assert!(
            !r.stdout.contains(sec.as_str()),
            "secret in stdout: {}",
            r.stdout
        );
        assert!(
            !r.stderr.contains(sec.as_str()),
            "secret in stderr: {}",
            r.stderr
        );
        for (p, allowed) in proxies {
            for l in p.requests() {
                let mut places: Vec<String> = vec![l.path.clone()];
                places.extend(l.headers.iter().map(|(k, v)| format!("{k}: {v}")));
                places.push(String::from_utf8_lossy(&l.body).into_owned());
                for place in places {
                    if place.contains(sec.as_str()) {
                        assert!(
                            allowed(&l, &place),
                            "secret sent to {} in {place:?} of {} {}",
                            p.addr(),
                            l.method,
                            l.path
                        );
                    }
                }
            }
        }
    }
}

fn authorization(place: &str) -> bool {
    place.to_ascii_lowercase().starts_with("authorization: ")
}

/// Full pushes with logging at its most verbose, with Basic auth, a Bearer token flow and a Cog
/// token: no password, token or Basic header anywhere but where it belongs.
#[test]
fn secrets_appear_only_in_authorization_to_their_own_host() {
    harness();
    let dir = tempdir("fault-secrets");
    std::fs::write(dir.join("w.bin"), random_bytes(3 << 20, 805)).unwrap();
    let w = dir.join("w.bin");
    let basic_b64 = "dGVzdHVzZXI6dGVzdHBhc3M="; // testuser:testpass
    let creds = [("LAMINA_USERNAME", USER), ("LAMINA_PASSWORD", PASS)];
    let with_cache = |env: &[(&'static str, &'static str)]| {
        let mut v: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.to_string())).collect();
        v.push(("LAMINA_CACHE_DIR", s(&dir.join("cache")).to_string()));
        v
    };
    let go = |args: &[&str], env: &[(&'static str, &'static str)]| {
        let env = with_cache(env);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        lamina_env(args, &env)
    };

    // Basic: the password goes nowhere but the registry's Authorization header
    let p = FaultProxy::start(BASIC);
    let base = format!("{}/fixtures/base:latest", p.addr());
    let dest = format!("{}/{}:basic", p.addr(), repo("secrets"));
    let r = go(
        &[
            "-v",
            "affix",
            "--base",
            &base,
            "--dest",
            &dest,
            "--chunked",
            "--chunk-size",
            "1",
            s(&w),
        ],
        &creds,
    )
    .ok();
    assert!(r.stderr.contains("> PATCH"), "verbose log: {}", r.stderr);
    let basic_ok = |_: &Logged, place: &str| authorization(place);
    assert_no_leak(&r, &[PASS.into(), basic_b64.into()], &[(&p, &basic_ok)]);
    assert!(p
        .requests()
        .iter()
        .any(|l| l.header("authorization").is_some()));

    // a wrong password is not repeated in the error
    let r = go(
        &["-v", "layers", &base],
        &[
            ("LAMINA_USERNAME", USER),
            ("LAMINA_PASSWORD", "hunter2-wrong-secret"),
        ],
    );
    assert_eq!(r.code, 1);
    assert_no_leak(&r, &["hunter2-wrong-secret".into()], &[(&p, &basic_ok)]);

    // Bearer: the password goes to the token server only, the tokens to the registry only
    let pt = FaultProxy::start("127.0.0.1:5104");
    let realm = |p: &FaultProxy| {
        p.add(
            Rule::new("*", "/")
                .times(u32::MAX)
                .action(Action::RewriteHeader(
                    "WWW-Authenticate".into(),
                    "127.0.0.1:5104".into(),
                    pt.addr().into(),
                )),
        );
    };
    let p = FaultProxy::start(TOKEN);
    realm(&p);
    let base = format!("{}/fixtures/base:latest", p.addr());
    let dest = format!("{}/{}:bearer", p.addr(), repo("secrets"));
    let r = go(
        &["-v", "affix", "--base", &base, "--dest", &dest, s(&w)],
        &creds,
    )
    .ok();
    let tokens: Vec<String> = pt
        .requests()
        .iter()
        .filter_map(|l| serde_json::from_slice::<serde_json::Value>(&l.response_body).ok())
        .filter_map(|v| v["token"].as_str().map(str::to_string))
        .collect();
    assert!(!tokens.is_empty(), "tokens were issued");
    let registry_ok = |_: &Logged, place: &str| authorization(place) && place.contains("Bearer ");
    let tokenserver_ok = |_: &Logged, place: &str| authorization(place) && place.contains("Basic ");
    let mut secrets: Vec<String> = vec![PASS.into(), basic_b64.into()];
    secrets.extend(tokens.iter().cloned());
    // the registry never sees the password; the token server never sees a token
    let never = |_: &Logged, _: &str| false;
    assert_no_leak(
        &r,
        &[PASS.into(), basic_b64.into()],
        &[(&p, &never), (&pt, &tokenserver_ok)],
    );
    assert_no_leak(&r, &tokens, &[(&p, &registry_ok), (&pt, &never)]);

    // Cog: the token is checked at the registry's verify-token, then is the Basic password for
    // the token server
    let pt_before = pt.requests().len();
    let p = FaultProxy::start(TOKEN);
    p.add(
        Rule::new("POST", "/cog/v1/verify-token")
            .times(u32::MAX)
            .action(Action::Respond(
                200,
                vec![],
                br#"{"username":"testuser"}"#.to_vec(),
            )),
    );
    realm(&p);
    let base = format!("{}/fixtures/base:latest", p.addr());
    let dest = format!("{}/{}:cog", p.addr(), repo("secrets"));
    let reg = p.addr().to_string();
    let r = go(
        &[
            "-v",
            "-r",
            &reg,
            "affix",
            "--base",
            &base,
            "--dest",
            &dest,
            s(&w),
        ],
        &[("COG_TOKEN", PASS)],
    )
    .ok();
    let verify = p
        .requests()
        .into_iter()
        .find(|l| l.path.contains("verify-token"))
        .expect("verify-token was asked");
    assert_eq!(verify.body, b"token=testpass");
    let new_tokens: Vec<String> = pt.requests()[pt_before..]
        .iter()
        .filter_map(|l| serde_json::from_slice::<serde_json::Value>(&l.response_body).ok())
        .filter_map(|v| v["token"].as_str().map(str::to_string))
        .collect();
    let cog_ok =
        |l: &Logged, place: &str| l.path == "/cog/v1/verify-token" && place == "token=testpass";
    assert_no_leak(
        &r,
        &[PASS.into(), basic_b64.into()],
        &[(&p, &cog_ok), (&pt, &tokenserver_ok)],
    );
    assert_no_leak(&r, &new_tokens, &[(&p, &registry_ok), (&pt, &never)]);
    assert!(resolves(
        &dest.replace(p.addr(), TOKEN),
        Some(&format!("{USER}:{PASS}"))
    ));
}

/// A registry that redirects blob downloads to another host (port): the download follows the
/// redirect, and `Authorization` (Basic or Bearer) never goes with it.
#[test]
fn authorization_never_follows_a_redirect_to_another_host() {
    harness();
    let dir = tempdir("fault-redirect");
    let cache = dir.join("cache");
    let creds = [
        ("LAMINA_USERNAME", USER),
        ("LAMINA_PASSWORD", PASS),
        ("LAMINA_CACHE_DIR", s(&cache)),
    ];
    for upstream in [BASIC, TOKEN] {
        // the "storage" host serves the same blobs without auth
        let cdn = FaultProxy::start(PLAIN);
        let p = FaultProxy::start(upstream);
        p.add(
            Rule::new("GET", "/blobs/sha256:")
                .times(u32::MAX)
                .action(Action::Redirect(format!("http://{}{{path}}", cdn.addr()))),
        );
        let out = dir.join(format!("all-{}.tar", upstream.replace([':', '.'], "_")));
        let r = lamina_env(
            &[
                "-v",
                "extract",
                "--all",
                "-o",
                s(&out),
                &format!("{}/fixtures/base:latest", p.addr()),
            ],
            &creds,
        )
        .ok();
        let list = cmd("tar", &["-tf", s(&out)]).ok();
        assert!(!list.stdout.is_empty());
        let followed = cdn.requests();
        assert!(
            !followed.is_empty(),
            "the redirect was followed: {}",
            r.stderr
        );
        for l in &followed {
            assert!(
                l.header("authorization").is_none(),
                "Authorization sent across hosts: {l:?}"
            );
        }
        let redirected = p
            .requests()
            .into_iter()
            .filter(|l| l.status == 302)
            .collect::<Vec<_>>();
        assert!(!redirected.is_empty());
        assert!(
            redirected
                .iter()
                .all(|l| l.header("authorization").is_some()),
            "the registry itself gets credentials"
        );
    }
}

/// Regression: behind a front end that stops reading a streamed `PATCH` part-way and closes the
/// connection, `lamina affix` hung for ever at "layer 0 B": the request failed, but the body
/// pump stayed blocked on a channel nobody read, and the driver waited for it. Both ways a cut
/// can look (the front end swallows it, or passes it on to the registry) finish, with the image
/// an undisturbed run makes.
#[test]
fn a_streamed_patch_cut_by_the_front_end_never_hangs() {
    harness();
    let dir = tempdir("fault-hang");
    std::fs::write(dir.join("w.bin"), random_bytes(200 << 20, 1501)).unwrap();
    let base = format!("{PLAIN}/fixtures/base:latest");
    let clean = run(
        &dir,
        &[
            "affix",
            "--base",
            &base,
            "--dest",
            &format!("{PLAIN}/{}:clean", repo("hang")),
            s(&dir.join("w.bin")),
        ],
    )
    .ok();
    for (i, action) in [
        Action::ResetRequestBuffered(150 * MIB),
        Action::ResetRequestForwarded(150 * MIB),
        Action::AnswerEarly(502, 150 * MIB),
        Action::StopReading(150 * MIB, Duration::from_secs(3)),
    ]
    .into_iter()
    .enumerate()
    {
        let p = FaultProxy::start(PLAIN);
        p.add(Rule::new("PATCH", "/blobs/uploads/").action(action.clone()));
        let cache = dir.join(format!("cache{i}"));
        let out = lamina_deadline(
            &[
                "affix",
                "--base",
                &base,
                "--dest",
                &format!("{}/{}:v{i}", p.addr(), repo("hang")),
                s(&dir.join("w.bin")),
            ],
            &[("LAMINA_CACHE_DIR", s(&cache))],
            Duration::from_secs(90),
        )
        .unwrap_or_else(|| panic!("{action:?}: lamina hung"))
        .ok();
        assert_eq!(
            digest_of_output(&out.stdout),
            digest_of_output(&clean.stdout),
            "{action:?}"
        );
        manifests_last(&p.requests());
    }
}

/// A cross-registry copy downloads a blob on one thread while it uploads it on another, both on
/// the driver's one runtime: a front end that answers the upload early, or stops reading it,
/// must not hang the run with the download still open (the body is cut off, not the runtime
/// shut down), and the copy then finishes (in this run, or in the next, which resumes it).
#[test]
fn a_copy_whose_upload_is_answered_early_never_hangs() {
    harness();
    let dir = tempdir("fault-copy-hang");
    std::fs::write(dir.join("w.bin"), random_bytes(48 << 20, 1503)).unwrap();
    std::fs::write(dir.join("small.txt"), b"small").unwrap();
    let src = format!("{PLAIN}/{}:src", repo("copyhang-src"));
    let affix = |base: &str, dest: &str, file: &str| {
        let f = dir.join(file);
        run(&dir, &["affix", "--base", base, "--dest", dest, s(&f)]).ok()
    };
    affix(&format!("{PLAIN}/fixtures/base:latest"), &src, "w.bin");
    let clean = affix(
        &src,
        &format!("{PLAIN}/{}:clean", repo("copyhang-clean")),
        "small.txt",
    );
    // the copied layer goes to a registry of another host: streamed, not mounted
    let faulty = |i: usize, action: Action| {
        let p = FaultProxy::start(PLAIN);
        p.add(Rule::new("PATCH", "/blobs/uploads/").action(action.clone()));
        let (cache, small) = (dir.join(format!("cache{i}")), dir.join("small.txt"));
        let dest = format!("{}/{}:v", p.addr(), repo(&format!("copyhang-dst{i}")));
        let args = [
            "affix",
            "--timeout",
            "2",
            "--base",
            &src,
            "--dest",
            &dest,
            s(&small),
        ];
        let env = [("LAMINA_CACHE_DIR", s(&cache))];
        let again = || {
            lamina_deadline(&args, &env, Duration::from_secs(60))
                .unwrap_or_else(|| panic!("{action:?}: lamina hung"))
        };
        let first = again();
        let out = if first.code == 0 { first } else { again().ok() };
        let hit = p.requests();
        assert!(
            hit.iter()
                .any(|l| l.method == "PATCH" && l.body_bytes >= 8 * MIB),
            "{action:?}: the fault was never hit"
        );
        assert_eq!(
            digest_of_output(&out.stdout),
            digest_of_output(&clean.stdout),
            "{action:?}"
        );
    };
    faulty(0, Action::AnswerEarly(502, 8 * MIB));
    faulty(1, Action::StopReading(8 * MIB, Duration::from_secs(3)));
}

/// A server that stops reading a request body and holds the connection, one that takes the
/// body and never answers, and a download whose body stalls: each request fails after the idle
/// timeout (`--timeout`) instead of waiting for ever, and the run goes on (resumes the upload,
/// retries the download) to the same result.
#[test]
fn stalled_servers_fail_the_request_after_the_idle_timeout() {
    harness();
    let dir = tempdir("fault-stall");
    std::fs::write(dir.join("w.bin"), random_bytes(24 << 20, 1502)).unwrap();
    let base = format!("{PLAIN}/fixtures/base:latest");
    let clean = run(
        &dir,
        &[
            "affix",
            "--base",
            &base,
            "--dest",
            &format!("{PLAIN}/{}:clean", repo("stall")),
            s(&dir.join("w.bin")),
        ],
    )
    .ok();
    for (i, action) in [
        Action::StopReading(10 * MIB, Duration::from_secs(120)),
        Action::Stall(Duration::from_secs(120)),
    ]
    .into_iter()
    .enumerate()
    {
        let p = FaultProxy::start(PLAIN);
        p.add(Rule::new("PATCH", "/blobs/uploads/").action(action.clone()));
        let t0 = Instant::now();
        let out = lamina_deadline(
            &[
                "affix",
                "--timeout",
                "2",
                "--base",
                &base,
                "--dest",
                &format!("{}/{}:v{i}", p.addr(), repo("stall")),
                s(&dir.join("w.bin")),
            ],
            &[("LAMINA_CACHE_DIR", s(&dir.join(format!("cache{i}"))))],
            Duration::from_secs(60),
        )
        .unwrap_or_else(|| panic!("{action:?}: lamina hung"))
        .ok();
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{action:?}: {:?}",
            t0.elapsed()
        );
        assert!(
            out.stderr
                .contains("timed out: nothing sent or received for 2 s"),
            "{action:?}: {}",
            out.stderr
        );
        assert_eq!(
            digest_of_output(&out.stdout),
            digest_of_output(&clean.stdout),
            "{action:?}"
        );
    }
    // a layer download that stalls part-way: extract retries it
    let src = format!("{PLAIN}/{}:clean", repo("stall"));
    let m = raw_manifest(&src, None);
    let layer = m["layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let p = FaultProxy::start(PLAIN);
    p.add(
        Rule::new("GET", &format!("/blobs/{layer}"))
            .action(Action::StallResponse(MIB, Duration::from_secs(120))),
    );
    let t0 = Instant::now();
    let out = lamina_deadline(
        &[
            "extract",
            "--timeout",
            "2",
            &format!("{}/{}:clean", p.addr(), repo("stall")),
            "-o",
            s(&dir.join("out/")),
        ],
        &[],
        Duration::from_secs(60),
    )
    .expect("extract hung");
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    let out = out.ok();
    assert!(
        out.stderr.contains("timed out") || out.stderr.contains("retrying"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read(dir.join("out/w.bin")).unwrap(),
        random_bytes(24 << 20, 1502)
    );
}

/// The default upload is a sequence of streamed `PATCH` segments, each confirmed by the
/// registry: behind a front end that buffers request bodies (the registry never sees a cut
/// segment, and keeps the session), a cut in the second segment costs only that segment, in the
/// same session, and lamina says what it sends again.
#[test]
fn a_cut_segment_costs_one_segment_in_the_same_session() {
    harness();
    let dir = tempdir("fault-segment");
    let data = random_bytes(48 << 20, 1503);
    std::fs::write(dir.join("w.bin"), &data).unwrap();
    let p = FaultProxy::start(PLAIN);
    p.add(
        Rule::new("PATCH", "/blobs/uploads/")
            .nth(2)
            .action(Action::ResetRequestBuffered(5 * MIB)),
    );
    let base = format!("{PLAIN}/fixtures/base:latest");
    let dest = format!("{}/{}:v1", p.addr(), repo("segment"));
    let out = run(
        &dir,
        &[
            "affix",
            "--segment-size",
            "16",
            "--base",
            &base,
            "--dest",
            &dest,
            s(&dir.join("w.bin")),
        ],
    )
    .ok();
    assert!(
        out.stderr.contains("making the layer again to send it from byte 16777216 (16.0 MiB confirmed by the registry)"),
        "{}",
        out.stderr
    );
    let log = p.requests();
    let patches: Vec<&Logged> = log.iter().filter(|l| l.method == "PATCH").collect();
    // the layer is 48 MiB of file and 2.5 KiB of tar: 3 full segments and a small one, and the
    // cut one again
    let m = raw_manifest(&format!("{PLAIN}/{}:v1", repo("segment")), None);
    let size = m["layers"].as_array().unwrap().last().unwrap()["size"]
        .as_u64()
        .unwrap();
    assert!(size > 48 * MIB && size < 49 * MIB, "{size}");
    assert_eq!(patches.len(), 5, "{patches:#?}");
    assert!(patches.iter().all(|l| l.body_bytes <= 16 * MIB));
    let sessions: std::collections::BTreeSet<&str> = patches
        .iter()
        .map(|l| l.path.split('?').next().unwrap())
        .collect();
    assert_eq!(sessions.len(), 1, "one upload session: {sessions:?}");
    let sent = patch_bytes(&log);
    assert_eq!(
        sent,
        size + 5 * MIB,
        "each byte once, plus the 5 MiB of the cut segment"
    );
    // the image is whole
    let root = unpack(
        &format!("{PLAIN}/{}:v1", repo("segment")),
        None,
        &dir.join("check"),
    );
    assert_eq!(std::fs::read(root.join("src/weights/w.bin")).unwrap(), data);
    manifests_last(&log);
}

/// A registry that sends an uncompressed layer wrong, to `extract -o DIR/` (which hashes the
/// layer on a reader thread while it writes the files): a byte changed in the middle of a file
/// is a digest mismatch, a body cut short a size mismatch, a corrupt tar header a tar error.
/// Each fails with exit 1 and leaves neither the directory nor a partial one; the same image
/// through the registry itself extracts whole.
#[test]
fn a_corrupt_uncompressed_layer_leaves_no_directory() {
    harness();
    let dir = tempdir("fault-corrupt-layer");
    let weights = random_bytes(3 * MIB as usize + 12345, 7);
    std::fs::create_dir_all(dir.join("in")).unwrap();
    std::fs::write(dir.join("in/model.bin"), &weights).unwrap();
    let tag = format!("{}:raw", repo("corrupt-layer"));
    let made = run(
        &dir,
        &[
            "-q",
            "affix",
            "--json",
            "--compression",
            "none",
            "--base",
            &format!("{PLAIN}/fixtures/base:latest"),
            "--dest",
            &format!("{PLAIN}/{tag}"),
            s(&dir.join("in/model.bin")),
        ],
    )
    .ok();
    let j: serde_json::Value = serde_json::from_str(&made.stdout).unwrap();
    let layer = j["layer"]["digest"].as_str().unwrap().to_string();
    assert_eq!(j["layer"]["diffId"].as_str(), Some(layer.as_str()));
    let (name, _) = tag.split_once(':').unwrap();
    let blob = std::process::Command::new("curl")
        .args(["-sf", &format!("http://{PLAIN}/v2/{name}/blobs/{layer}")])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(sha256(&blob), layer);

    let out = dir.join("out");
    let extract = |body: Vec<u8>| -> Run {
        let p = FaultProxy::start(PLAIN);
        p.add(
            Rule::new("GET", &format!("/blobs/{layer}"))
                .times(u32::MAX)
                .action(Action::Respond(
                    200,
                    vec![("Content-Type".into(), "application/octet-stream".into())],
                    body,
                )),
        );
        let r = run(
            &dir,
            &[
                "extract",
                "-o",
                &format!("{}/", s(&out)),
                &format!("{}/{tag}", p.addr()),
            ],
        );
        let left: Vec<_> = std::fs::read_dir(&*dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("out"))
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}\n{r:?}");
        r
    };
    let mut flipped = blob.clone();
    flipped[blob.len() / 2] ^= 0x55;
    let r = extract(flipped);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("digest mismatch") && r.stderr.contains(&layer),
        "{}",
        r.stderr
    );

    let r = extract(blob[..blob.len() / 2].to_vec());
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("size mismatch"), "{}", r.stderr);

    // the file's header (its name field first): spoil its checksum
    let name_field = b"src/weights/model.bin\0";
    let at = blob
        .windows(name_field.len())
        .position(|w| w == name_field)
        .unwrap();
    assert_eq!(at % 512, 0, "a header starts a 512-byte block");
    let mut bad_header = blob.clone();
    bad_header[at + 148] ^= 0x01;
    let r = extract(bad_header);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("checksum"), "{}", r.stderr);

    let r = run(
        &dir,
        &[
            "-q",
            "extract",
            "-o",
            &format!("{}/", s(&out)),
            &format!("{PLAIN}/{tag}"),
        ],
    )
    .ok();
    assert!(r.stderr.is_empty(), "{}", r.stderr);
    assert_eq!(std::fs::read(out.join("model.bin")).unwrap(), weights);
}

/// A registry-to-registry copy whose upload session the destination loses (a 404 on the second
/// chunk of its big layer, as after a registry restart): lamina downloads the blob again and sends it in a new
/// session, instead of failing as a copy that could not make its bytes again did. The copy is
/// whole and the source blob was read twice.
#[test]
fn a_copy_whose_session_is_lost_downloads_the_blob_again() {
    harness();
    let dir = tempdir("fault-copy");
    let data = random_bytes(40 << 20, 1601);
    std::fs::write(dir.join("w.bin"), &data).unwrap();
    let base = format!("{PLAIN}/fixtures/base:latest");
    let src = format!("{PLAIN}/{}:v1", repo("copy-src"));
    run(
        &dir,
        &[
            "affix",
            "--compression",
            "none",
            "--base",
            &base,
            "--dest",
            &src,
            s(&dir.join("w.bin")),
        ],
    )
    .ok();
    // the destination is the proxy: another registry to lamina, so blobs are copied, not mounted
    let p = FaultProxy::start(PLAIN);
    // the small base blobs go up in one PUT each; the 40 MiB layer in 16 MiB PATCHes
    p.add(
        Rule::new("PATCH", "/blobs/uploads/")
            .nth(2)
            .action(Action::Status(404)),
    );
    // and the session's status says it is gone too
    p.add(Rule::new("GET", "/blobs/uploads/").action(Action::Status(404)));
    let dest = format!("{}/{}:v1", p.addr(), repo("copy-dst"));
    // the source through a proxy of its own, to count its downloads
    let from = FaultProxy::start(PLAIN);
    let src_via = format!("{}/{}:v1", from.addr(), repo("copy-src"));
    let out = run(&dir, &["clone", "-b", &src_via, "-d", &dest]).ok();
    assert!(
        out.stderr
            .contains("the registry lost the upload: starting it over"),
        "{}",
        out.stderr
    );
    let log = p.requests();
    let lost = log.iter().find(|l| l.fault.is_some()).unwrap();
    let sessions = log
        .iter()
        .filter(|l| l.method == "POST" && l.path.contains("/blobs/uploads/"))
        .count();
    // the big layer twice (its first session lost), and each of the base's blobs once
    let src_layers = raw_manifest(&src, None)["layers"].as_array().unwrap().len();
    assert!(lost.method == "PATCH");
    let big = raw_manifest(&src, None)["layers"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let downloads = from
        .requests()
        .iter()
        .filter(|l| l.method == "GET" && l.path.ends_with(&format!("/blobs/{big}")))
        .count();
    assert_eq!(
        downloads, 2,
        "the big layer downloaded again for the new session"
    );
    assert_eq!(
        sessions,
        src_layers + 1 + 1,
        "POSTs: layers, the config, and the lost one again"
    );
    let root = unpack(
        &format!("{PLAIN}/{}:v1", repo("copy-dst")),
        None,
        &dir.join("check"),
    );
    assert_eq!(std::fs::read(root.join("src/weights/w.bin")).unwrap(), data);
    manifests_last(&log);
}

/// `pack -j 3` through a front end that cuts one streamed PATCH before the registry sees it all
/// and swallows another, and `convert` whose source download is cut midway and whose wrapped
/// upload is cut: both finish, each cut costs one file, and the artifacts are the ones an
/// undisturbed run makes (same digests).
#[test]
fn pack_and_convert_finish_the_same_through_cut_connections() {
    harness();
    let dir = tempdir("fault-pack");
    let m = dir.join("model");
    std::fs::create_dir_all(m.join("unet")).unwrap();
    std::fs::create_dir_all(m.join("vae")).unwrap();
    std::fs::write(m.join("unet/model.safetensors"), random_bytes(5 << 20, 95)).unwrap();
    std::fs::write(m.join("vae/model.safetensors"), random_bytes(5 << 20, 96)).unwrap();
    std::fs::write(m.join("model.safetensors"), random_bytes(5 << 20, 97)).unwrap();
    std::fs::write(m.join("README.md"), b"# cut\n").unwrap();
    let clean = |args: &[&str]| digest_of_output(&run(&dir, args).ok().stdout);
    let digest_via = |p: &FaultProxy, args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| a.replace(PLAIN, p.addr())).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        digest_of_output(&run(&dir, &args).ok().stdout)
    };

    let p = FaultProxy::start(PLAIN);
    p.add(
        Rule::new("PATCH", "/blobs/uploads/")
            .nth(1)
            .action(Action::ResetRequestForwarded(2 << 20)),
    );
    p.add(
        Rule::new("PATCH", "/blobs/uploads/")
            .nth(2)
            .action(Action::ResetRequestBuffered(1 << 20)),
    );
    let dest = format!("{PLAIN}/{}:v1", repo("cut-pack"));
    let args = ["pack", s(&m), "--dest", &dest, "-j", "3"];
    let got = digest_via(&p, &args);
    let faults = p.requests().iter().filter(|l| l.fault.is_some()).count();
    assert_eq!(faults, 2, "both cuts were met");
    let want = clean(&[
        "pack",
        s(&m),
        "--dest",
        &format!("{PLAIN}/{}:clean", repo("cut-pack")),
    ]);
    assert_eq!(got, want);
    let sent = patch_bytes(&p.requests());
    assert!(
        sent < 15 * MIB + 2 * 5 * MIB + MIB,
        "each cut costs at most its file: {sent}"
    );

    // convert to a modelcar: every raw file is downloaded and wrapped; cut both ways
    let p = FaultProxy::start(PLAIN);
    p.add(
        Rule::new("GET", "/blobs/sha256:")
            .nth(1)
            .action(Action::ResetResponse(1 << 20)),
    );
    p.add(
        Rule::new("PATCH", "/blobs/uploads/")
            .nth(2)
            .action(Action::ResetRequestForwarded(1 << 20)),
    );
    let base = format!("{PLAIN}/fixtures/base:latest");
    let car = format!("{PLAIN}/{}:v1", repo("cut-convert"));
    let args = ["convert", &dest, &car, "--to", "modelcar", "--base", &base];
    let got = digest_via(&p, &args);
    let faults = p.requests().iter().filter(|l| l.fault.is_some()).count();
    assert_eq!(faults, 2, "both cuts were met");
    let want = clean(&[
        "convert",
        &dest,
        &format!("{PLAIN}/{}:clean", repo("cut-convert")),
        "--to",
        "modelcar",
        "--base",
        &base,
    ]);
    assert_eq!(got, want);
}
