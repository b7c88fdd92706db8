//! Standard output that its reader may close early: `lamina layers REF | head -1` ends
//! quietly with exit status 0 (as ripgrep does), instead of `println!`'s panic. Results are
//! printed with `outln!`, which returns [`Closed`] when the reader went away;
//! `main` exits 0 without a message on it. Only stdout's broken pipe is [`Closed`]: a broken
//! pipe elsewhere (a socket, a credential helper) is a failure as any other.

use std::io::Write as _;

use crate::error::Error;

/// Stdout's reader went away: what was printed so far was all it wanted.
#[derive(Debug)]
pub struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for Closed {}

/// Writes one line to stdout (see `outln!`).
pub fn line(args: std::fmt::Arguments<'_>) -> Result<(), Error> {
    writeln!(std::io::stdout().lock(), "{args}").map_err(|e| io(&e))
}

/// Stdout's write error `e`: [`Closed`] for a broken pipe, else a failure naming stdout.
pub fn io(e: &std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Box::new(Closed)
    } else {
        format!("writing to stdout: {e}").into()
    }
}

/// `println!` that returns an error instead of panicking: `outln!("{x}")?`.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::ui::out::line(format_args!($($arg)*))
    };
}
