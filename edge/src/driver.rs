//! The Worker's side of the shared driver ([`lamina_wasm::Driver`]): each request the core's
//! transfer kernel asks for goes out through the Worker's `fetch` (redirects manual: the core
//! follows them and keeps credentials on their host), and each response goes back in. Blobs
//! stream: a download's body is handed to the caller as a `ReadableStream`, and an upload takes
//! its bytes from a [`Producer`] that makes them in order and can make them again from the first
//! byte ([`Source::Restartable`]: see [`crate::produce`]); the kernel holds only what the
//! registry has not confirmed yet, and asks for a restart when the registry lost bytes it no
//! longer holds.

use std::collections::HashMap;

use lamina_core::auth::Credentials;
use lamina_core::http::{Request, Response};
use lamina_core::reference::Reference;
use lamina_core::registry::{Event, NetError, Op, Source, UploadConfig};
use lamina_core::{Digest, Error};
use lamina_wasm::{fetch, Failure, FetchOpts, Hook, Producer, Timing, Transport};
use wasm_bindgen::JsValue;
use worker::js_sys::Uint8Array;

pub use lamina_wasm::now_ms;

/// What a job's steps end with: a failure names the registry whose operation failed.
pub type Result<T> = std::result::Result<T, Failure>;

/// Bytes of WebAssembly memory this instance has (it grows and never shrinks: its peak).
pub fn wasm_memory() -> u64 {
    #[cfg(target_arch = "wasm32")]
    {
        core::arch::wasm32::memory_size(0) as u64 * 65536
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        0
    }
}

/// The Worker's `fetch`.
#[derive(Debug)]
pub struct Workerd;

impl Transport for Workerd {
    type Body = Uint8Array;
    type Stream = web_sys::ReadableStream;

    /// One JS byte array (one copy out of wasm memory).
    fn bytes_body(&self, parts: &[&[u8]]) -> std::result::Result<Uint8Array, Error> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let len = u32::try_from(len)
            .map_err(|_| Error::internal(format!("a request body of {len} bytes")))?;
        let out = Uint8Array::new_with_length(len);
        let mut at = 0u32;
        for p in parts {
            out.set(&Uint8Array::from(*p), at);
            at += p.len() as u32;
        }
        Ok(out)
    }

    async fn send(
        &self,
        req: &Request,
        body: Option<Uint8Array>,
    ) -> std::result::Result<(Response, Option<web_sys::ReadableStream>), NetError> {
        let opts = FetchOpts {
            manual_redirects: true,
            no_store: false,
            rename: &|name, value| (name, value),
            unanswered: &|m| m,
        };
        let body: Option<&JsValue> = body.as_ref().map(|b| b.as_ref());
        fetch(&req.url, req, body, opts).await
    }
}

/// Where a long job reports how far it got.
#[allow(async_fn_in_trait)] // one thread: Send is not needed
pub trait Progress {
    /// `sent` bytes of the current blob confirmed by the registry, `read` input bytes read.
    async fn bytes(&self, sent: u64, read: u64);
    /// A line for the job's log.
    async fn log(&self, line: &str);
}

/// A job's [`Progress`] as the driver's [`Hook`]: events are log lines, and the bytes an
/// upload's producer read and the registry confirmed are its progress.
pub(crate) struct Job<'a, G>(pub(crate) &'a G);

impl<P: Producer, G: Progress> Hook<P> for Job<'_, G> {
    async fn event(&self, e: &Event, p: &P) {
        match e {
            // (bytes the kernel holds already, a config, are not the job's progress)
            Event::Confirmed { bytes, .. } if p.source() != Source::None => {
                self.0.bytes(*bytes, p.read()).await
            }
            Event::Confirmed { .. } => {}
            e => self.0.log(&e.to_string()).await,
        }
    }
    async fn produced(&self, p: &P, confirmed: u64) {
        self.0.bytes(confirmed, p.read()).await
    }
    async fn ended(&self, timing: &Timing) {
        self.0.log(&timing.to_string()).await
    }
}

/// Runs the core's operations over the Worker's `fetch`, one session per registry.
#[derive(Debug)]
pub struct Driver {
    d: lamina_wasm::Driver<Workerd>,
    creds: HashMap<String, Credentials>,
}

impl Driver {
    /// A driver using `creds` (per registry host) for the registries it talks to.
    pub fn new(creds: HashMap<String, Credentials>) -> Driver {
        Driver {
            d: lamina_wasm::Driver::new(Workerd, creds.clone()),
            creds,
        }
    }

    /// A driver of its own with the same credentials and new sessions: what a producer
    /// downloads its blob again with while this one uploads ([`crate::produce::Blob`]).
    pub fn fresh(&self) -> Driver {
        Driver::new(self.creds.clone())
    }

    /// The shared driver (the core's workflows run over it: [`lamina_wasm::flow`]).
    pub(crate) fn shared(&mut self) -> &mut lamina_wasm::Driver<Workerd> {
        &mut self.d
    }

    /// Runs `op` against `r`'s registry; returns its result and, for a streaming download, the
    /// body.
    pub async fn run<O: Op, G: Progress>(
        &mut self,
        r: &Reference,
        op: O,
        progress: &G,
    ) -> Result<(O::Output, Option<web_sys::ReadableStream>)> {
        self.d.run(r, op, &Job(progress)).await
    }

    /// Uploads the blob `p` makes into `r`'s repository in chunks of `chunk` bytes; while one
    /// chunk is on the wire the next is made. Holds at most about two chunks.
    pub async fn upload<P: Producer<Body = Uint8Array>, G: Progress>(
        &mut self,
        r: &Reference,
        p: &mut P,
        chunk: u64,
        progress: &G,
    ) -> Result<Digest> {
        // whole chunks only (but the last): no small PATCH for the bytes a fill overshot
        let cfg = UploadConfig::whole_chunks(chunk);
        self.d.upload(r, cfg, p, &Job(progress)).await
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use lamina_core::Error;
    use lamina_wasm::{block_on, NoBlob, Pieces};

    use super::*;

    #[derive(Default)]
    struct Status {
        bytes: RefCell<Vec<(u64, u64)>>,
        log: RefCell<Vec<String>>,
    }

    impl Progress for Status {
        async fn bytes(&self, sent: u64, read: u64) {
            self.bytes.borrow_mut().push((sent, read));
        }
        async fn log(&self, line: &str) {
            self.log.borrow_mut().push(line.to_string());
        }
    }

    struct Once(u64);

    impl Producer for Once {
        type Body = ();
        fn source(&self) -> Source {
            Source::Once
        }
        async fn produce(&mut self, _: &mut Pieces, _: u64) -> std::result::Result<(), Error> {
            Ok(())
        }
        fn finished(&self) -> Option<(Digest, u64)> {
            None
        }
        fn read(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn a_jobs_log_and_progress_come_from_the_events() {
        let st = Status::default();
        let job = Job(&st);
        let confirmed = Event::Confirmed {
            bytes: 7,
            location: "http://r/u".into(),
        };
        block_on(job.event(&confirmed, &Once(9)));
        block_on(job.produced(&Once(12), 7));
        // the bytes of a config, which the kernel holds, are not the job's progress
        block_on(job.event(&confirmed, &NoBlob::<()>::default()));
        assert_eq!(*st.bytes.borrow(), [(7, 9), (7, 12)]);
        assert!(st.log.borrow().is_empty());
        block_on(job.event(
            &Event::Retrying {
                reason: "GET /v2/: HTTP 503".into(),
                attempt: 1,
                delay_ms: 250,
            },
            &Once(0),
        ));
        block_on(Hook::<Once>::ended(
            &job,
            &Timing {
                total_ms: 2000.0,
                making_ms: 500.0,
                requests_ms: 1800.0,
            },
        ));
        assert_eq!(
            *st.log.borrow(),
            [
                "retrying (1) in 0.2s: GET /v2/: HTTP 503",
                "upload: 2.0s in all, 0.5s making bytes, 1.8s in requests (the two overlap)"
            ]
        );
    }
}
