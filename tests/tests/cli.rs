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
