//! Ctrl-C and SIGTERM in the middle of a command leave the directories as they were: no
//! partial output, no temporary layout, no half-written archive; and what a killed run (no
//! chance to clean up) left behind is removed by the next run that works there.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use lamina_tests::faultproxy::{Action, FaultProxy, Rule};
use lamina_tests::*;

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// Starts lamina in `cwd`, waits until `ready` holds, sends `signal`, and returns the exit code
/// and stderr.
fn interrupt(cwd: &Path, args: &[&str], signal: &str, ready: impl Fn() -> bool) -> (i32, String) {
    let mut child = lamina_command(args, &[("TMPDIR", cwd.to_str().unwrap())])
        .current_dir(cwd)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !ready() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "lamina ended before it was interrupted"
        );
        assert!(t0.elapsed() < Duration::from_secs(60), "never got ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    cmd("kill", &[signal, &child.id().to_string()]).ok();
    let t1 = Instant::now();
    let out = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(10),
            "lamina did not stop on {signal}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (out.code().unwrap_or(-1), err)
}

fn has_partial(dir: &Path) -> bool {
    names(dir).iter().any(|n| n.contains("lamina-"))
}

#[test]
fn ctrl_c_during_extract_leaves_the_directory_as_it_was() {
    harness();
    let dir = tempdir("interrupt-extract");
    let src = format!("{PLAIN}/{}:v1", repo("interrupt"));
    std::fs::write(dir.join("w.bin"), random_bytes(8 << 20, 77)).unwrap();
    lamina(&[
        "affix",
        "--base",
        &format!("{PLAIN}/fixtures/base:latest"),
        "--dest",
        &src,
        dir.join("w.bin").to_str().unwrap(),
    ])
    .ok();
    let m = raw_manifest(&src, None);
    let layer = m["layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("keep.txt"), "mine").unwrap();
    let before = names(&work);
    let p = FaultProxy::start(PLAIN);
    p.add(
        Rule::new("GET", &format!("/blobs/{layer}"))
            .times(u32::MAX)
            .action(Action::StallResponse(4 << 20, Duration::from_secs(60))),
    );
    let via = format!("{}/{}:v1", p.addr(), repo("interrupt"));
    // -o DIR/, -o FILE, and stdout (which streams: nothing is written to TMPDIR, here the work
    // directory, at all)
    for (args, signal, temporary) in [
        (vec!["extract", via.as_str(), "-o", "out/"], "-INT", true),
        (vec!["extract", via.as_str(), "-o", "w.tar"], "-TERM", true),
        (vec!["extract", via.as_str()], "-INT", false),
    ] {
        p.clear_log();
        let stalled = || {
            p.requests()
                .iter()
                .any(|r| r.path.contains(&layer) && r.fault.is_some())
        };
        let (code, err) = interrupt(&work, &args, signal, || {
            (!temporary || has_partial(&work)) && stalled()
        });
        let want = if signal == "-INT" { 130 } else { 143 };
        assert_eq!(code, want, "{args:?}: {err}");
        if temporary {
            assert!(err.contains("removed"), "{args:?}: {err}");
        }
        assert_eq!(names(&work), before, "{args:?}: {err}");
    }
}

#[test]
fn sigterm_while_an_archive_is_written_removes_its_temporary_layout() {
    harness();
    let dir = tempdir("interrupt-archive");
    let p = FaultProxy::start(PLAIN);
    let base = raw_manifest(&format!("{PLAIN}/fixtures/big:latest"), None);
    let big = base["layers"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|l| l["size"].as_u64().unwrap())
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    p.add(
        Rule::new("GET", &format!("/blobs/{big}"))
            .times(u32::MAX)
            .action(Action::StallResponse(1 << 20, Duration::from_secs(60))),
    );
    std::fs::write(dir.join("w.bin"), b"weights").unwrap();
    let before = names(&dir);
    let (code, err) = interrupt(
        &dir,
        &[
            "affix",
            "--base",
            &format!("{}/fixtures/big:latest", p.addr()),
            "--dest",
            "oci-archive:out.tar:v1",
            "w.bin",
        ],
        "-TERM",
        || has_partial(&dir) && p.requests().iter().any(|r| r.fault.is_some()),
    );
    assert_eq!(code, 143, "{err}");
    assert_eq!(names(&dir), before, "{err}");
}

#[test]
fn a_later_run_removes_what_a_killed_run_left() {
    harness();
    let dir = tempdir("interrupt-stale");
    let src = format!("{PLAIN}/{}:v1", repo("stale"));
    std::fs::write(dir.join("w.bin"), b"w").unwrap();
    lamina(&[
        "affix",
        "--base",
        &format!("{PLAIN}/fixtures/base:latest"),
        "--dest",
        &src,
        dir.join("w.bin").to_str().unwrap(),
    ])
    .ok();
    // what `kill -9` mid-extract leaves: PIDs above pid_max were never running
    std::fs::create_dir_all(dir.join(".out.lamina-partial-99999999/src")).unwrap();
    std::fs::write(dir.join(".w.tar.lamina-partial-99999998.tar"), b"half").unwrap();
    std::fs::write(dir.join("x.tar.lamina-tmp-99999997"), b"half").unwrap();
    lamina_in(&dir, &["extract", &src, "-o", "out2/"], &[]).ok();
    assert_eq!(names(&dir), ["out2", "w.bin"]);
}
