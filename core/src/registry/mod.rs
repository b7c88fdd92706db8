//! The OCI distribution protocol as sans-IO state machines.
//!
//! ```text
//!            +-------------------- Machine<Op> --------------------+
//!  driver    |  Session: host, scheme, credentials, challenge,     |
//!  ------->  |           tokens (with expiry), Cog username         |
//!  poll(now) |  Op: one protocol operation (get manifest, upload)   |
//!  <-------  |      as a state machine over logical calls           |
//!  Output    +------------------------------------------------------+
//! ```
//!
//! A driver owns the sockets, the clock and the data. Its loop:
//!
//! ```text
//! loop {
//!     match machine.poll(now_ms) {
//!         Output::Send(req)       => match http.send(req) {        // do NOT follow redirects
//!                                        Ok(resp) => machine.handle_response(now_ms, resp),
//!                                        // typed: Timeout, Reset, Refused, Certificate, Other
//!                                        Err(e)   => machine.handle_error(now_ms, NetError::from(e)),
//!                                    },
//!         Output::Wait(until_ms)  => sleep_until(until_ms),
//!         Output::NeedData        => { /* make more upload bytes available (Upload::data_available) */ }
//!         Output::Event(ev)       => log(ev),
//!         Output::Done(result)    => break result,
//!     }
//! }
//! ```
//!
//! After every input (`handle_*`, `data_available`), the driver polls again until it gets
//! `Send`, `Wait`, `NeedData` or `Done`. The machine handles the `/v2/` ping, Basic and Bearer
//! challenges (token scopes widened for push and mount sources), r8.im's Cog token flow, redirects
//! (credentials are dropped when the host changes), and retries with exponential backoff and
//! jitter for 408, 429 (honouring `Retry-After`), 5xx and network errors on requests that are
//! safe to repeat. A `Body::Blob` asks the driver to send a byte range of the blob it uploads;
//! [`Held`] keeps those bytes, from the registry's confirmed offset on. A `Body::Stream { start,
//! limit }` asks it to stream the blob from `start` for at most `limit` bytes (one segment): at the
//! blob's end the driver reports completion before the answer (`Upload::data_complete`), at the
//! limit it reports the bytes it made beyond it as available (`Upload::data_available`) and keeps
//! them for the next segment. A request without a response is reported as a typed [`NetError`]:
//! a certificate the driver does not trust ends the operation at once ([`crate::Error::Tls`],
//! naming the host); timeouts, resets and refusals are retried within bounds. A driver bounds
//! every request in time (an idle timeout: nothing sent or received for a while is a
//! [`NetError::Timeout`]).

mod held;
mod ops;
mod session;
mod transfer;

pub use held::{gather, Held};
pub use ops::*;
pub use session::*;
pub use transfer::*;

#[cfg(test)]
mod tests;
