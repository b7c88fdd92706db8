//! Progress on stderr: a redrawn bar on a terminal, a plain line every few seconds otherwise,
//! nothing with `-q`.

use std::io::{IsTerminal as _, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static QUIET: AtomicBool = AtomicBool::new(false);

/// `-q`: no progress, notes or warnings (errors still print).
pub fn set_quiet(q: bool) {
    QUIET.store(q, Ordering::Relaxed);
}

/// Prints a warning or note on stderr, unless `-q`.
pub fn warn(msg: &str) {
    if !QUIET.load(Ordering::Relaxed) {
        eprintln!("{msg}");
    }
}

/// Progress of one transfer.
#[derive(Debug, Clone)]
pub struct Progress {
    label: String,
    total: Option<u64>,
    done: u64,
    start: Instant,
    last: Option<Instant>,
    tty: bool,
    quiet: bool,
}

impl Progress {
    /// Starts reporting `label`; `total` when known.
    pub fn new(label: impl Into<String>, total: Option<u64>, quiet: bool) -> Self {
        Progress {
            label: label.into(),
            total,
            done: 0,
            start: Instant::now(),
            last: None,
            tty: std::io::stderr().is_terminal(),
            quiet: quiet || QUIET.load(Ordering::Relaxed),
        }
    }

    /// Whether nothing is shown (`-q`).
    pub fn quiet(&self) -> bool {
        self.quiet
    }

    /// Sets the bytes done. The bar only moves forward: bytes sent again after a cut (or a
    /// restarted upload) show as a pause, not as a bar that jumps back.
    pub fn set(&mut self, done: u64) {
        if done <= self.done && self.last.is_some() {
            return;
        }
        self.done = self.done.max(done);
        if self.done == 0 {
            return; // nothing to show yet (an empty bar would flash)
        }
        let every = if self.tty {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(5)
        };
        if self.last.is_none_or(|l| l.elapsed() >= every) {
            self.last = Some(Instant::now());
            self.draw(false);
        }
    }

    fn draw(&self, end: bool) {
        if self.quiet {
            return;
        }
        let secs = self.start.elapsed().as_secs_f64().max(1e-6);
        let rate = self.done as f64 / secs;
        let mut line = format!("{} {}", self.label, human(self.done));
        if let Some(t) = self.total.filter(|t| *t > 0) {
            let frac = (self.done as f64 / t as f64).min(1.0);
            if self.tty {
                let w = 24;
                let fill = (frac * w as f64) as usize;
                line = format!(
                    "{} [{}{}] {} / {}",
                    self.label,
                    "=".repeat(fill),
                    " ".repeat(w - fill),
                    human(self.done),
                    human(t)
                );
            } else {
                line = format!(
                    "{} {} / {} ({:.0}%)",
                    self.label,
                    human(self.done),
                    human(t),
                    frac * 100.0
                );
            }
            if !end && rate > 0.0 && self.done < t {
                line.push_str(&format!(" ETA {:.0}s", (t - self.done) as f64 / rate));
            }
        }
        line.push_str(&format!(" {}/s", human(rate as u64)));
        if end {
            line.push_str(&format!(" in {secs:.1}s"));
        }
        let mut e = std::io::stderr().lock();
        if self.tty {
            let _ = write!(e, "\r\x1b[2K{line}");
            if end {
                let _ = writeln!(e);
            }
        } else {
            let _ = writeln!(e, "{line}");
        }
    }

    /// Final line: the bar ends full, at what was really done (a compressed layer is smaller
    /// than the estimate its bar started with).
    pub fn finish(&mut self, done: u64) {
        self.done = done;
        if self.total.is_some() {
            self.total = Some(done);
        }
        self.draw(true);
    }
}

/// `1.5 GiB` style sizes.
pub fn human(n: u64) -> String {
    lamina_core::registry::human(n)
}
