//! The CLI's one error type: a boxed error with a message chain, and context naming what
//! was being done (`--base r8.im/x: ...`); `main` prints the chain and picks the exit code.

/// CLI error.
pub type Error = Box<dyn std::error::Error + Send + Sync + 'static>;
/// CLI result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error with what was being done when it happened (`--base r8.im/x: ...`); `main`
/// prints the chain.
#[derive(Debug)]
pub struct Context {
    what: String,
    source: Error,
}

impl std::fmt::Display for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.what)
    }
}

impl std::error::Error for Context {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// Adds [`Context`] to an error.
pub trait WithContext<T> {
    /// Names what was being done (called only on error).
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<Error>> WithContext<T> for std::result::Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| {
            Box::new(Context {
                what: what(),
                source: e.into(),
            }) as Error
        })
    }
}
