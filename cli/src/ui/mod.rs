//! What the user sees besides results' data: progress on stderr ([`progress`]) and a stdout
//! whose reader may close early ([`out`], the `outln!` macro).

#[macro_use]
pub mod out;
pub mod progress;
pub mod report;
