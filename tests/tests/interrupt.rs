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

/// Reading inside an image (`ls`, `cat`, `inspect`, `extract --include`) stopped by Ctrl-C or
/// SIGTERM while a download is held by the front end: each stops at once with the signal's
/// code (not at the read timeout), and `extract --include -o DIR/` leaves no partial file and
/// no temporary directory behind.
#[test]
fn ctrl_c_and_sigterm_during_ls_cat_inspect_and_extract_include_stop_at_once() {
    harness();
    let dir = tempdir("interrupt-peek");
    let m = dir.join("model");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::write(
        m.join("model.safetensors"),
        lamina_tests::models::safetensors("w", 2 << 20, 5),
    )
    .unwrap();
    std::fs::write(m.join("config.json"), br#"{"model_type": "llama"}"#).unwrap();
    let name = repo("interrupt-peek");
    let src = format!("{PLAIN}/{name}:v1");
    lamina_in(
        &dir,
        &[
            "affix",
            "--base",
            &format!("{PLAIN}/fixtures/base:latest"),
            "--dest",
            &src,
            "--compression",
            "none",
            "./model/",
        ],
        &[],
    )
    .ok();
    let mf = raw_manifest(&src, None);
    let layers: Vec<String> = mf["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    let (base0, top) = (layers[0].clone(), layers.last().unwrap().clone());
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("keep.txt"), "mine").unwrap();
    let before = names(&work);
    let p = FaultProxy::start(PLAIN);
    let via = format!("{}/{name}:v1", p.addr());
    let held = |blob: &str, after: u64| {
        p.clear();
        p.clear_log();
        p.add(
            Rule::new("GET", &format!("/blobs/{blob}"))
                .times(u32::MAX)
                .action(Action::StallResponse(after, Duration::from_secs(60))),
        );
    };
    // ls streams the gzip base (its top layer has a table of contents: no request); cat,
    // inspect and extract --include read the top layer by range
    let cases: [(Vec<&str>, &str, &str, u64); 5] = [
        (vec!["ls", &via], "-INT", &base0, 0),
        (vec!["ls", "-l", "--json", &via], "-TERM", &base0, 0),
        (
            vec!["cat", &via, "src/weights/model.safetensors"],
            "-INT",
            &top,
            1 << 20,
        ),
        (vec!["inspect", &via], "-TERM", &top, 0),
        (
            vec!["extract", &via, "--include", "*.safetensors", "-o", "out/"],
            "-INT",
            &top,
            1 << 20,
        ),
    ];
    for (args, signal, blob, after) in cases {
        held(blob, after);
        let stalled = || {
            p.requests()
                .iter()
                .any(|r| r.path.contains(blob) && r.fault.is_some())
        };
        let t0 = Instant::now();
        let (code, err) = interrupt(&work, &args, signal, stalled);
        let want = if signal == "-INT" { 130 } else { 143 };
        assert_eq!(code, want, "{args:?}: {err}");
        // stopped by the signal, not by --timeout (30 s by default)
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{args:?}: {:?}",
            t0.elapsed()
        );
        assert_eq!(names(&work), before, "{args:?} left something: {err}");
    }
    // undisturbed, the same commands work through the same front end
    p.clear();
    let out = lamina_in(&work, &["cat", &via, "src/weights/config.json"], &[]).ok();
    assert_eq!(out.stdout, r#"{"model_type": "llama"}"#);
    assert_eq!(names(&work), before);
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

/// Ctrl-C while `pack -j 2` uploads through a front end that holds a request, and SIGTERM while
/// `convert` streams a file out of the source registry into a modelcar layer: each stops at once
/// (130, 143) and leaves no tag; `pack` into an `oci:` layout stopped by SIGTERM leaves no
/// partial file and no tag in it. Run again undisturbed, each finishes with the same digest an
/// undisturbed run makes.
#[test]
fn ctrl_c_and_sigterm_during_pack_and_convert_leave_no_tag() {
    harness();
    let dir = tempdir("interrupt-pack");
    let m = dir.join("model");
    std::fs::create_dir_all(m.join("unet")).unwrap();
    std::fs::create_dir_all(m.join("vae")).unwrap();
    std::fs::write(m.join("unet/model.safetensors"), random_bytes(6 << 20, 91)).unwrap();
    std::fs::write(m.join("vae/model.safetensors"), random_bytes(6 << 20, 92)).unwrap();
    std::fs::write(m.join("config.json"), br#"{"model_type": "llama"}"#).unwrap();

    // Ctrl-C during pack: the first blob's streamed PATCH is held by the front end
    let p = FaultProxy::start(PLAIN);
    p.add(
        Rule::new("PATCH", "/blobs/uploads/")
            .nth(1)
            .action(Action::Stall(Duration::from_secs(60))),
    );
    let name = repo("interrupt-pack");
    let dest = format!("{}/{name}:v1", p.addr());
    let args = ["pack", "./model/", "--dest", &dest, "-j", "2"];
    let held = || {
        p.requests()
            .iter()
            .any(|l| l.fault.is_some() && l.body_complete)
    };
    let (code, err) = interrupt(&dir, &args, "-INT", held);
    assert_eq!(code, 130, "{err}");
    assert!(
        !resolves(&format!("{PLAIN}/{name}:v1"), None),
        "tagged after Ctrl-C"
    );
    // again, undisturbed: the same artifact as a run that was never stopped
    p.clear();
    let again = lamina_in(&dir, &args, &[]).ok();
    let clean = lamina_in(
        &dir,
        &[
            "pack",
            "./model/",
            "--dest",
            &format!("{PLAIN}/{}:clean", repo("interrupt-pack")),
        ],
        &[],
    )
    .ok();
    let digest = |o: &str| o.trim().rsplit('@').next().unwrap().to_string();
    assert_eq!(digest(&again.stdout), digest(&clean.stdout));

    // SIGTERM during pack into a layout: no partial file, no tag
    let layout = dir.join("layout");
    // a big file keeps it busy long enough to be stopped
    std::fs::write(m.join("big.safetensors"), random_bytes(200 << 20, 93)).unwrap();
    let lay = format!("oci:{}:v1", layout.display());
    let started = || {
        std::fs::read_dir(layout.join("blobs/sha256"))
            .map(|d| d.count() > 0)
            .unwrap_or(false)
            || names_deep(&layout).iter().any(|n| n.contains("lamina-"))
    };
    let (code, err) = interrupt(
        &dir,
        &["pack", "./model/", "--dest", &lay],
        "-TERM",
        started,
    );
    assert_eq!(code, 143, "{err}");
    let left: Vec<String> = names_deep(&layout)
        .into_iter()
        .filter(|n| n.contains("lamina-"))
        .collect();
    assert!(left.is_empty(), "partial files left: {left:?}");
    let index = std::fs::read_to_string(layout.join("index.json")).unwrap_or_default();
    assert!(!index.contains("\"v1\""), "tagged after SIGTERM: {index}");
    std::fs::remove_file(m.join("big.safetensors")).unwrap();

    // SIGTERM during convert: the source's blob download stalls while the file is wrapped
    let mp = format!("{PLAIN}/{}:mp", repo("interrupt-convert"));
    lamina_in(&dir, &["pack", "./model/", "--dest", &mp], &[]).ok();
    let p = FaultProxy::start(PLAIN);
    p.add(
        Rule::new("GET", "/blobs/sha256:")
            .times(1)
            .action(Action::StallResponse(1 << 20, Duration::from_secs(60))),
    );
    let car_name = repo("interrupt-car");
    let src = mp.replace(PLAIN, p.addr());
    let car = format!("{}/{car_name}:v1", p.addr());
    let base = format!("{PLAIN}/fixtures/base:latest");
    let args = ["convert", &src, &car, "--to", "modelcar", "--base", &base];
    let stalled = || p.requests().iter().any(|l| l.fault.is_some());
    let (code, err) = interrupt(&dir, &args, "-TERM", stalled);
    assert_eq!(code, 143, "{err}");
    assert!(
        !resolves(&format!("{PLAIN}/{car_name}:v1"), None),
        "tagged after SIGTERM"
    );
    p.clear();
    let again = lamina_in(&dir, &args, &[]).ok();
    let clean = lamina_in(
        &dir,
        &[
            "convert",
            &mp,
            &format!("{PLAIN}/{}:clean", repo("interrupt-car")),
            "--to",
            "modelcar",
            "--base",
            &base,
        ],
        &[],
    )
    .ok();
    assert_eq!(digest(&again.stdout), digest(&clean.stdout));
}

/// Every name under `dir`, recursively (nothing when it does not exist).
fn names_deep(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        out.push(e.file_name().to_string_lossy().into_owned());
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            out.extend(names_deep(&e.path()));
        }
    }
    out
}

/// Ctrl-C and SIGTERM in the middle of `remix` and `zstd` on model artifacts: each stops at
/// once with no tag at the destination, and the same command run again, undisturbed, makes the
/// artifact a run that was never stopped makes. `remix` is stopped while a ModelPack's raw
/// weight streams from the source registry into a ModelKit's tar (the source's GET stalls);
/// `zstd` while a `--tar` ModelPack's recompressed layer is being sent (its upload stalls).
#[test]
fn ctrl_c_and_sigterm_during_remix_and_zstd_on_artifacts_leave_no_tag() {
    harness();
    let dir = tempdir("interrupt-artifacts");
    let m = dir.join("model");
    std::fs::create_dir_all(m.join("tokenizer")).unwrap();
    std::fs::write(m.join("model.safetensors"), random_bytes(8 << 20, 94)).unwrap();
    std::fs::write(m.join("config.json"), br#"{"model_type": "llama"}"#).unwrap();
    std::fs::write(
        m.join("tokenizer/tokenizer.json"),
        random_bytes(3 << 20, 95),
    )
    .unwrap();
    std::fs::write(m.join("README.md"), random_bytes(2 << 20, 96)).unwrap();
    let k = dir.join("kit");
    std::fs::create_dir_all(&k).unwrap();
    std::fs::write(k.join("base.gguf"), random_bytes(1 << 20, 97)).unwrap();
    std::fs::write(k.join("README.md"), b"the kit's own card\n").unwrap();
    let mp = format!("{PLAIN}/{}:raw", repo("interrupt-art"));
    let tar = format!("{PLAIN}/{}:tar", repo("interrupt-art"));
    let kit = format!("{PLAIN}/{}:kit", repo("interrupt-art"));
    lamina_in(&dir, &["pack", "./model/", "--dest", &mp], &[]).ok();
    lamina_in(&dir, &["pack", "./model/", "--dest", &tar, "--tar"], &[]).ok();
    lamina_in(
        &dir,
        &["pack", "./kit/", "--dest", &kit, "--format", "modelkit"],
        &[],
    )
    .ok();
    let digest = |o: &str| o.trim().rsplit('@').next().unwrap().to_string();

    // Ctrl-C during remix: the weight's download from the source stalls midway
    let weight = sha256(&std::fs::read(m.join("model.safetensors")).unwrap());
    let p = FaultProxy::start(PLAIN);
    p.add(
        Rule::new("GET", &format!("/blobs/{weight}"))
            .times(1)
            .action(Action::StallResponse(1 << 20, Duration::from_secs(60))),
    );
    let name = repo("interrupt-remix");
    let via = |r: &str| r.replace(PLAIN, p.addr());
    let dest = format!("{}/{name}:v1", p.addr());
    let args = [
        "remix",
        "--base",
        &via(&kit),
        "--weights",
        &via(&mp),
        "--dest",
        &dest,
    ];
    let stalled = || p.requests().iter().any(|l| l.fault.is_some());
    let (code, err) = interrupt(&dir, &args, "-INT", stalled);
    assert_eq!(code, 130, "{err}");
    assert!(
        !resolves(&format!("{PLAIN}/{name}:v1"), None),
        "tagged after Ctrl-C"
    );
    p.clear();
    let again = lamina_in(&dir, &args, &[]).ok();
    let clean_ref = format!("{PLAIN}/{}:clean", repo("interrupt-remix"));
    let clean = lamina_in(
        &dir,
        &[
            "remix",
            "--base",
            &kit,
            "--weights",
            &mp,
            "--dest",
            &clean_ref,
        ],
        &[],
    )
    .ok();
    assert_eq!(digest(&again.stdout), digest(&clean.stdout));
    // the result holds the ModelPack's weights and the kit's card
    let out = dir.join("remixed");
    lamina_in(&dir, &["extract", &clean_ref, "-o", "./remixed/"], &[]).ok();
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        std::fs::read(m.join("model.safetensors")).unwrap()
    );
    assert_eq!(
        std::fs::read(out.join("README.md")).unwrap(),
        b"the kit's own card\n"
    );

    // SIGTERM during zstd: the upload of a recompressed layer is held by the front end
    let p = FaultProxy::start(PLAIN);
    p.add(
        Rule::new("PUT", "/blobs/uploads/")
            .nth(1)
            .action(Action::Stall(Duration::from_secs(60))),
    );
    let zname = repo("interrupt-zstd");
    let zdest = format!("{}/{zname}:v1", p.addr());
    let src = tar.replace(PLAIN, p.addr());
    let args = ["zstd", &src, &zdest];
    let held = || p.requests().iter().any(|l| l.fault.is_some());
    let (code, err) = interrupt(&dir, &args, "-TERM", held);
    assert_eq!(code, 143, "{err}");
    assert!(
        !resolves(&format!("{PLAIN}/{zname}:v1"), None),
        "tagged after SIGTERM"
    );
    p.clear();
    let again = lamina_in(&dir, &args, &[]).ok();
    let clean = lamina_in(
        &dir,
        &[
            "zstd",
            &tar,
            &format!("{PLAIN}/{}:clean", repo("interrupt-zstd")),
        ],
        &[],
    )
    .ok();
    assert_eq!(digest(&again.stdout), digest(&clean.stdout));
    let z = raw_manifest(&format!("{PLAIN}/{zname}:v1"), None);
    assert!(
        z["layers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["mediaType"].as_str().unwrap().ends_with(".tar+zstd")),
        "{z:#}"
    );
}
