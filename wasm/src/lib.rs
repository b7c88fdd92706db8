//! lamina's WebAssembly transport, shared by the browser page (`lamina-web`) and the edge
//! Worker (`lamina-edge`): both run the core's transfer kernel
//! ([`lamina_core::registry::Transfer`]) through one loop ([`Driver`]) over the runtime's
//! `fetch`, and differ only in a [`Transport`] (how a request goes out), a [`Producer`] (where
//! an upload's bytes come from: file slices, a tar being built, a blob being recoded) and a
//! [`Hook`] (the page's log and progress bars, a job's status).
//!
//! The pure parts ([`headers`], [`net`], [`Pieces`], the loop itself) build and are tested
//! natively; the JS-bound ones ([`js`]) are called on wasm32 only. [`flow`] runs the core's
//! image workflows over the driver, meeting each need with a registry operation.

pub mod flow;
pub mod headers;
pub mod js;
pub mod net;
pub mod peek;
mod run;

#[cfg(test)]
mod peek_tests;
#[cfg(test)]
mod tests;

pub use headers::{forbidden, from_proxy, proxy_prefix, through_proxy, CHALLENGE, PROXY_PATH};
pub use js::{fetch, header_pairs, js_err, now_ms, sleep_ms, FetchOpts, Reader};
pub use net::{append_capped, net_error};
pub use run::{Driver, Failure, Hook, NoBlob, Pieces, Producer, Timing, Transport, PIECE};

/// Runs a future to its end by polling it in a loop: for tests of the driver loop over fakes,
/// whose futures never wait on anything that would wake them (no I/O, no timers).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}
