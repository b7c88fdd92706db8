//! Temporary files and directories, removed on every way out.
//!
//! - Success and errors: the code that makes a temporary removes it (guards' `Drop`), or
//!   renames it into place.
//! - Ctrl-C and SIGTERM: every temporary is [`register`]ed while it exists; a signal thread
//!   ([`install`]) removes what is registered, then exits 130 (SIGINT) or 143 (SIGTERM). Upload
//!   state files are not temporaries: they stay, so the next run resumes the upload.
//! - A process that died without either (`kill -9`, a crash, power loss): temporary names carry
//!   the PID (`.NAME.lamina-partial-PID`, `NAME.lamina-tmp-PID`, `lamina-extract-PID`, ...), and
//!   the next run that makes one in the same directory first removes those whose process is
//!   gone ([`sweep`]).
//!
//! Why not the `tempfile` crate: lamina's temporaries must sit next to their destination (so
//! the final rename is atomic) under names that say which process made them, and must also go
//! on a signal, which `tempfile` leaves to the caller.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// The signal being handled (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// Held by the signal thread from the signal until the process exits.
static HANDLING: Mutex<()> = Mutex::new(());

/// Starts the thread that cleans up on SIGINT and SIGTERM.
pub fn install() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return; // no handler: the default action (exit) still applies
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            let _exiting = HANDLING.lock();
            SIGNAL.store(sig, Ordering::SeqCst);
            let removed = remove_all();
            let name = if sig == SIGINT {
                "interrupted"
            } else {
                "terminated"
            };
            if removed > 0 {
                eprintln!("\nlamina: {name}; removed {removed} temporary file(s)");
            } else {
                eprintln!("\nlamina: {name}");
            }
            std::process::exit(128 + sig);
        }
    });
}

/// When a signal is being handled, waits for its thread to end the process (with 130 or 143)
/// and never returns: the command's own error (a temporary removed under it, say
/// `ctrl_c_during_extract_leaves_the_directory_as_it_was`) must not end it first with 1.
pub fn defer_to_signal() {
    let sig = SIGNAL.load(Ordering::SeqCst);
    if sig != 0 {
        let _wait = HANDLING.lock();
        std::process::exit(128 + sig);
    }
}

fn remove_all() -> usize {
    let paths = match LIVE.lock() {
        Ok(mut l) => std::mem::take(&mut *l),
        Err(p) => std::mem::take(&mut *p.into_inner()),
    };
    let mut n = 0;
    for p in paths.iter().rev() {
        if remove(p) {
            n += 1;
        }
    }
    n
}

fn remove(p: &Path) -> bool {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).is_ok(),
        Ok(_) => std::fs::remove_file(p).is_ok(),
        Err(_) => false,
    }
}

/// Registers `path` for removal on a signal while the returned guard lives (dropping the guard
/// unregisters it; it does not remove the path: the code that made it does, or renames it).
#[must_use = "the path is unregistered when the guard is dropped"]
pub fn register(path: &Path) -> Registered {
    if let Ok(mut l) = LIVE.lock() {
        l.push(path.to_path_buf());
    }
    Registered(path.to_path_buf())
}

/// See [`register`].
#[derive(Debug)]
pub struct Registered(PathBuf);

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut l) = LIVE.lock() {
            if let Some(i) = l.iter().rposition(|p| p == &self.0) {
                l.remove(i);
            }
        }
    }
}

/// The PID in a lamina temporary name, if it is one.
pub fn temp_pid(name: &str) -> Option<u32> {
    let at = name.find("lamina-")?;
    let rest = &name[at + "lamina-".len()..];
    let rest = ["tmp-", "partial-", "extract-"]
        .iter()
        .find_map(|p| rest.strip_prefix(p))
        .unwrap_or(rest);
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let after = &rest[digits.len()..];
    // what may follow the PID: nothing, `-SEQ`, `.tar`, `.d`
    if digits.is_empty() || !(after.is_empty() || after.starts_with(['-', '.'])) {
        return None;
    }
    digits.parse().ok()
}

/// [`sweep`]s the directory `path` is in (`.` for a bare name), where its temporaries go.
pub fn sweep_beside(path: &Path) {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => sweep(d),
        _ => sweep(Path::new(".")),
    }
}

/// Removes lamina temporaries in `dir` left by processes that are gone (see the module docs).
/// Errors are ignored: this is housekeeping, and a temporary that cannot be removed is no
/// worse than before.
pub fn sweep(dir: &Path) {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(pid) = temp_pid(name) else { continue };
        if pid != me && !Path::new(&format!("/proc/{pid}")).exists() {
            remove(&e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_give_their_pid() {
        assert_eq!(temp_pid(".w.lamina-partial-123"), Some(123));
        assert_eq!(temp_pid(".w.tar.lamina-partial-77.tar"), Some(77));
        assert_eq!(temp_pid("lamina-extract-9"), Some(9));
        assert_eq!(temp_pid("index.json.lamina-tmp-42"), Some(42));
        assert_eq!(temp_pid(".lamina-tmp-42-7"), Some(42));
        assert_eq!(temp_pid("a.tar.lamina-5.d"), Some(5));
        assert_eq!(temp_pid("lamina-notes.txt"), None);
        assert_eq!(temp_pid("my-lamina-123abc"), None);
        assert_eq!(temp_pid("weights.bin"), None);
    }

    #[test]
    fn sweep_removes_only_what_dead_processes_left() {
        let d = tempfile::tempdir().unwrap();
        // PIDs above the kernel's pid_max (4194304) can never be running
        let dead = d.path().join(".w.lamina-partial-99999999");
        std::fs::create_dir_all(dead.join("sub")).unwrap();
        std::fs::write(d.path().join("x.lamina-tmp-99999998"), "x").unwrap();
        let mine = d
            .path()
            .join(format!("y.lamina-tmp-{}", std::process::id()));
        std::fs::write(&mine, "y").unwrap();
        let init = d.path().join("z.lamina-tmp-1"); // pid 1 is always there
        std::fs::write(&init, "z").unwrap();
        std::fs::write(d.path().join("keep.bin"), "k").unwrap();
        sweep(d.path());
        let mut left: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let me = format!("y.lamina-tmp-{}", std::process::id());
        let mut want = vec!["keep.bin".to_string(), me, "z.lamina-tmp-1".to_string()];
        want.sort();
        assert_eq!(left, want);
    }
}
