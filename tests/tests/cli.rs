//! Snapshot tests of what users read: `--help`, error messages and exit codes, and `--json`
//! output, in `tests/cmd/*.trycmd` (the console transcripts are the expected output; `[..]`
//! stands for what changes from run to run). After an intended change, regenerate them with
//! `TRYCMD=overwrite cargo test -p lamina-tests --test cli` and review the diff.

use lamina_tests::*;

#[test]
fn cli_transcripts() {
    harness();
    trycmd::TestCases::new()
        .register_bin("lamina", lamina_bin())
        .env("SOURCE_DATE_EPOCH", "946684800")
        .env("DOCKER_CONFIG", "/nonexistent-lamina-test")
        .env(
            "LAMINA_CACHE_DIR",
            state().join("cache").display().to_string(),
        )
        .env("COLUMNS", "100")
        .case("cmd/*.trycmd");
}

/// A reader that goes away (`lamina layers REF | head -1`) ends lamina quietly with exit
/// status 0, as ripgrep does: here stdout's read end is closed before lamina writes a byte, so
/// its first write fails with a broken pipe, whatever the timing.
#[test]
fn closed_stdout_exits_0_quietly() {
    use std::process::Stdio;
    harness();
    let image = format!("{PLAIN}/fixtures/big:latest");
    let cases: [&[&str]; 5] = [
        &["layers", &image],
        &["layers", "--json", &image],
        // a tar on stdout: the download stops at the first write
        &["-q", "extract", "--all", &image],
        &["version"],
        &["completions", "bash"],
    ];
    for args in cases {
        let mut child = lamina_command(args, &[])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run lamina");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait for lamina");
        assert_eq!(
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).as_ref()
            ),
            (Some(0), ""),
            "lamina {args:?} with its stdout closed"
        );
    }
}
