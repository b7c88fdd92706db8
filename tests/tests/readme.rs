//! The README's examples, run as written: every ```console block of README.md, in order, in one
//! fresh directory holding a model folder `weights/` (and `model.safetensors`), with `lamina` on
//! PATH. A `$ ` line is a command (run by bash; a trailing `\` continues it); the lines after it
//! are its expected stdout, where `[..]` matches anything within a line and a line that is
//! exactly `[..]` matches any number of lines. A command must exit 0. So a documented command
//! cannot silently break.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use lamina_tests::models::hf_folder;
use lamina_tests::*;

struct Example {
    line: usize,
    command: String,
    expected: Vec<String>,
}

fn examples(readme: &str) -> Vec<Example> {
    let mut out = Vec::new();
    let mut in_console = false;
    let mut cur: Option<Example> = None;
    let mut continued = false;
    for (i, l) in readme.lines().enumerate() {
        if !in_console {
            if l.trim_end() == "```console" {
                in_console = true;
            }
            continue;
        }
        if l.trim_end() == "```" {
            in_console = false;
            out.extend(cur.take());
            continue;
        }
        if continued {
            let c = cur.as_mut().unwrap();
            c.command.push('\n');
            c.command.push_str(l);
            continued = l.ends_with('\\');
            continue;
        }
        if let Some(cmd) = l.strip_prefix("$ ") {
            out.extend(cur.take());
            continued = cmd.ends_with('\\');
            cur = Some(Example {
                line: i + 1,
                command: cmd.to_string(),
                expected: Vec::new(),
            });
        } else if let Some(c) = cur.as_mut() {
            c.expected.push(l.to_string());
        }
    }
    out
}

/// Matches one line against a pattern with `[..]` wildcards.
fn line_matches(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split("[..]").collect();
    if parts.len() == 1 {
        return pattern == line;
    }
    let mut rest = line;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(p) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(p);
        } else {
            match rest.find(p) {
                Some(at) => rest = &rest[at + p.len()..],
                None => return false,
            }
        }
    }
    true
}

fn output_matches(expected: &[String], got: &[&str]) -> bool {
    match expected.split_first() {
        None => got.is_empty(),
        Some((p, rest)) if p == "[..]" => (0..=got.len()).any(|k| output_matches(rest, &got[k..])),
        Some((p, rest)) => {
            !got.is_empty() && line_matches(p, got[0]) && output_matches(rest, &got[1..])
        }
    }
}

#[test]
fn readme_examples_run_as_written() {
    harness();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let ex = examples(&readme);
    assert!(ex.len() >= 5, "the README's console blocks: {}", ex.len());
    let dir = tempdir("readme");
    hf_folder(&dir.join("weights"));
    std::fs::write(
        dir.join("model.safetensors"),
        models::safetensors("w", 1024, 3),
    )
    .unwrap();
    let bin_dir = lamina_bin().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for e in &ex {
        let out = std::process::Command::new("bash")
            .args(["-c", &format!("set -o pipefail\n{}", e.command)])
            .current_dir(&*dir)
            .env("PATH", &path)
            .env("DOCKER_CONFIG", dir.join("docker"))
            .env("LAMINA_CACHE_DIR", dir.join("cache"))
            .env("SOURCE_DATE_EPOCH", "946684800")
            .env_remove("COG_TOKEN")
            .env_remove("LAMINA_USERNAME")
            .env_remove("LAMINA_PASSWORD")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "README.md line {}: `{}` failed ({}):\n{stderr}",
            e.line,
            e.command,
            out.status
        );
        let got: Vec<&str> = stdout.lines().collect();
        let expected: Vec<String> = e
            .expected
            .iter()
            .filter(|l| !l.is_empty())
            .cloned()
            .collect();
        if !expected.is_empty() {
            assert!(
                output_matches(&expected, &got),
                "README.md line {}: `{}` printed\n{stdout}\nwhere the README shows\n{}",
                e.line,
                e.command,
                expected.join("\n")
            );
        }
    }
}

use lamina_tests::models;

#[test]
fn the_runner_matches_wildcards_and_refuses_other_output() {
    assert!(line_matches("a@sha256:[..]", "a@sha256:123"));
    assert!(!line_matches("a@sha256:[..]", "b@sha256:123"));
    assert!(line_matches("x [..] y [..] z", "x 1 y 2 z"));
    assert!(!line_matches("x [..] y", "x 1 z"));
    let e = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(output_matches(&e(&["a", "[..]"]), &["a", "b", "c"]));
    assert!(output_matches(&e(&["a", "[..]", "c"]), &["a", "b", "c"]));
    assert!(!output_matches(&e(&["a", "c"]), &["a", "b", "c"]));
    let ex =
        examples("x\n```console\n$ lamina a \\\n  --b\nout\n$ lamina c\n```\n```text\n$ no\n```\n");
    assert_eq!(ex.len(), 2);
    assert_eq!(ex[0].command, "lamina a \\\n  --b");
    assert_eq!(ex[0].expected, vec!["out".to_string()]);
    assert_eq!(ex[1].line, 6);
}
