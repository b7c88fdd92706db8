//! The page's side of the shared driver ([`lamina_wasm::Driver`]): requests go out with the
//! browser's `fetch` (directly, or through the edge Worker's same-origin proxy), bodies are
//! `Blob`s, and events and progress go to the page as JSON.

use js_sys::{Array, Function, Reflect, Uint8Array};
use lamina_core::http::{Request, Response};
use lamina_core::registry::{Event, NetError};
use lamina_core::Error;
use lamina_wasm::{
    fetch, from_proxy, js_err, net_error, proxy_prefix, Failure, FetchOpts, Hook, NoBlob, Producer,
    Transport,
};
use wasm_bindgen::JsValue;

use crate::progress;
use crate::source::LayerSource;

/// The browser's `fetch`, through the proxy when the page has one.
#[derive(Debug)]
pub struct Browser {
    /// What the proxy puts before a registry URL (`{proxy}/`).
    prefix: Option<String>,
}

impl Browser {
    /// Requests go to `{proxy}/{url}` when a proxy is given.
    pub fn new(proxy: Option<&str>) -> Browser {
        Browser {
            prefix: proxy.map(proxy_prefix),
        }
    }
}

/// The driver of the page.
pub type Driver = lamina_wasm::Driver<Browser>;

impl Transport for Browser {
    /// Blob parts: byte arrays, and slices of the user's files.
    type Body = Array;
    type Stream = web_sys::ReadableStream;

    /// Each part one copy out of wasm memory, none gathered first.
    fn bytes_body(&self, parts: &[&[u8]]) -> Result<Array, Error> {
        let out = Array::new();
        for p in parts {
            out.push(&Uint8Array::from(*p));
        }
        Ok(out)
    }

    async fn send(
        &self,
        req: &Request,
        body: Option<Array>,
    ) -> Result<(Response, Option<web_sys::ReadableStream>), NetError> {
        // a Blob body: Chromium uploads an ArrayBuffer body at ~20 MB/s here, the same bytes as
        // a Blob at ~200 MB/s (measured, 64 MiB PATCH to a local server)
        let body = body
            .map(|parts| web_sys::Blob::new_with_u8_array_sequence(&parts))
            .transpose()
            .map_err(|e| net_error(js_err(e)))?;
        let url = match &self.prefix {
            Some(p) => format!("{p}{}", req.url),
            None => req.url.clone(),
        };
        // the proxy hands the page the registry's challenge under another name and sends
        // Locations through itself; the core keeps the registry's
        let rename = |name: String, value: String| match &self.prefix {
            Some(p) => from_proxy(p, name, value),
            None => (name, value),
        };
        let opts = FetchOpts {
            // a page cannot read a redirect: the browser follows it
            manual_redirects: false,
            no_store: true,
            rename: &rename,
            unanswered: &|m| {
                format!("network error or blocked by CORS ({m}): the registry may need the proxy")
            },
        };
        let body: Option<&JsValue> = body.as_ref().map(|b| b.as_ref());
        fetch(&url, req, body, opts).await
    }
}

/// Progress to the page: a JSON object per call.
#[derive(Debug)]
pub struct Report {
    f: Function,
}

impl Report {
    /// Calls `f` with each message.
    pub fn new(f: Function) -> Report {
        Report { f }
    }

    /// Sends one message.
    pub fn send(&self, v: serde_json::Value) {
        let _ = self
            .f
            .call1(&JsValue::NULL, &JsValue::from_str(&v.to_string()));
    }

    fn log(&self, e: &Event) {
        self.send(progress::log(&e.to_string()));
    }
}

/// Operations that upload nothing: their events go to the log.
impl Hook<NoBlob<Array>> for Report {
    async fn event(&self, e: &Event, _: &NoBlob<Array>) {
        if !matches!(e, Event::Confirmed { .. }) {
            self.log(e);
        }
    }
}

/// A layer's upload: the log, and how far reading and the registry have got, per file.
impl Hook<LayerSource> for Report {
    async fn event(&self, e: &Event, s: &LayerSource) {
        match e {
            Event::Confirmed { bytes, .. } => self.send(progress::upload(
                *bytes,
                s.read(),
                s.total,
                s.per_file(*bytes),
            )),
            e => self.log(e),
        }
    }

    async fn produced(&self, s: &LayerSource, confirmed: u64) {
        self.send(progress::read(s.read(), s.total, s.per_file(confirmed)));
    }
}

/// The page's error: a JS `Error` with the message, and `registry`, `status`, `auth` and
/// `network` when a registry's operation failed (the page classifies by these, never by the
/// message's text).
pub fn page_error(f: &Failure) -> JsValue {
    let e = js_sys::Error::new(&f.error.to_string());
    if let Some(registry) = &f.registry {
        let set = |k: &str, v: JsValue| {
            let _ = Reflect::set(&e, &k.into(), &v);
        };
        let (status, auth) = progress::classify(&f.error);
        set("registry", registry.as_str().into());
        if let Some(s) = status {
            set("status", s.into());
        }
        set("auth", auth.into());
        set("network", f.unanswered.into());
    }
    e.into()
}
