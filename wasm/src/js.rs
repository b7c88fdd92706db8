//! The JS runtime, the same in a browser's Web Worker and in workerd: the clock, timers,
//! `fetch`, header lists and body readers. (Built natively too, for the crates' unit tests: the
//! clock and the timer fall back to the host's; the rest is only called on wasm32.)

use js_sys::{Array, Function, Object, Promise, Reflect, Uint8Array};
use lamina_core::http::{Request, Response};
use lamina_core::registry::NetError;
use lamina_core::Error;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::headers::forbidden;
use crate::net::{append_capped, net_error};

/// A JS exception as text: its message, or what it is.
pub fn js_err(e: impl Into<JsValue>) -> String {
    let e: JsValue = e.into();
    e.as_string()
        .or_else(|| {
            e.dyn_ref::<js_sys::Error>()
                .map(|x| String::from(x.message()))
        })
        .unwrap_or_else(|| format!("{e:?}"))
}

/// Milliseconds since the epoch (the runtime's clock; the core reads none).
pub fn now_ms() -> f64 {
    #[cfg(target_arch = "wasm32")]
    {
        js_sys::Date::now()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    }
}

/// Sleeps `ms` milliseconds with the global `setTimeout` (a browser's and workerd's alike;
/// `0` gives the event loop a turn).
pub async fn sleep_ms(ms: f64) {
    #[cfg(target_arch = "wasm32")]
    {
        let p = Promise::new(&mut |resolve, _| {
            if let Ok(f) = Reflect::get(&js_sys::global(), &"setTimeout".into()) {
                if let Some(f) = f.dyn_ref::<Function>() {
                    let _ = f.call2(&JsValue::NULL, &resolve, &JsValue::from_f64(ms));
                }
            }
        });
        let _ = JsFuture::from(p).await;
    }
    #[cfg(not(target_arch = "wasm32"))]
    std::thread::sleep(std::time::Duration::from_micros(
        (ms.max(0.0) * 1000.0) as u64,
    ));
}

/// A `Headers` object's (name, value) pairs, each passed through `rename` (see
/// [`crate::from_proxy`]).
pub fn header_pairs(
    h: &web_sys::Headers,
    rename: &dyn Fn(String, String) -> (String, String),
) -> Result<Vec<(String, String)>, JsValue> {
    let mut out = Vec::new();
    let entries: Function = Reflect::get(h, &"entries".into())?
        .dyn_into()
        .map_err(|_| JsValue::from_str("Headers has no entries()"))?;
    let it = entries.call0(h)?;
    if let Some(iter) = js_sys::try_iter(&it)? {
        for pair in iter {
            let pair: Array = pair?
                .dyn_into()
                .map_err(|_| JsValue::from_str("a header is not a pair"))?;
            out.push(rename(
                pair.get(0).as_string().unwrap_or_default(),
                pair.get(1).as_string().unwrap_or_default(),
            ));
        }
    }
    Ok(out)
}

/// How [`fetch`] sends and what it does with the answer.
#[derive(Clone, Copy)]
pub struct FetchOpts<'a> {
    /// Redirects come back as answers (the core follows them and keeps credentials on their
    /// host); a browser cannot read a redirect's `Location`, so the page lets it follow them.
    pub manual_redirects: bool,
    /// `cache: "no-store"` (a browser may otherwise answer a registry's GET from its cache).
    pub no_store: bool,
    /// Each response header, before the core sees it.
    pub rename: &'a dyn Fn(String, String) -> (String, String),
    /// The error's text for a request that got no answer, from the runtime's message.
    pub unanswered: &'a dyn Fn(String) -> String,
}

impl core::fmt::Debug for FetchOpts<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FetchOpts")
            .field("manual_redirects", &self.manual_redirects)
            .field("no_store", &self.no_store)
            .finish()
    }
}

/// Sends `req` (its headers but the [`forbidden`] ones; `body` as the body) to `url` with the
/// global `fetch`. A 2xx answer to a request that streams its response keeps its body as a
/// stream; any other body is read, at most `req.max_response_body` bytes of it.
pub async fn fetch(
    url: &str,
    req: &Request,
    body: Option<&JsValue>,
    opts: FetchOpts<'_>,
) -> Result<(Response, Option<web_sys::ReadableStream>), NetError> {
    let failed = |e: JsValue| net_error(js_err(e));
    let headers = web_sys::Headers::new().map_err(failed)?;
    for (k, v) in &req.headers {
        if !forbidden(k) {
            headers.append(k, v).map_err(failed)?;
        }
    }
    let init = web_sys::RequestInit::new();
    init.set_method(req.method.as_str());
    init.set_headers(&headers);
    if opts.manual_redirects {
        init.set_redirect(web_sys::RequestRedirect::Manual);
    }
    if opts.no_store {
        init.set_cache(web_sys::RequestCache::NoStore);
    }
    if let Some(b) = body {
        init.set_body(b);
    }
    let f: Function = Reflect::get(&js_sys::global(), &"fetch".into())
        .map_err(failed)?
        .dyn_into()
        .map_err(|_| net_error("no fetch in this context".into()))?;
    let p: Promise = f
        .call2(&JsValue::NULL, &url.into(), &init)
        .map_err(failed)?
        .dyn_into()
        .map_err(|_| net_error("fetch did not return a promise".into()))?;
    let resp: web_sys::Response = JsFuture::from(p)
        .await
        .map_err(|e| net_error((opts.unanswered)(js_err(e))))?
        .unchecked_into();
    let status = resp.status();
    let headers = header_pairs(&resp.headers(), opts.rename).map_err(failed)?;
    let stream = resp.body();
    if req.stream_response && (200..300).contains(&status) {
        let r = Response {
            status,
            headers,
            body: Vec::new(),
            truncated: false,
        };
        return Ok((r, stream));
    }
    let mut body = Vec::new();
    let mut truncated = false;
    if let Some(s) = stream {
        let mut rd = Reader::new(&s, &format!("the answer from {url}"));
        let mut piece = Vec::new();
        while rd
            .next_into(&mut piece)
            .await
            .map_err(|e| net_error(e.to_string()))?
        {
            if append_capped(&mut body, &piece, req.max_response_body) {
                truncated = true;
                rd.cancel();
                break;
            }
        }
    }
    Ok((
        Response {
            status,
            headers,
            body,
            truncated,
        },
        None,
    ))
}

/// Bytes asked for per read: workerd hands a fetched body over in pieces of a few KiB, and each
/// read is a trip through JS; a BYOB read of at least this much is one trip per MiB.
const READ_AT_LEAST: u32 = 1 << 20;

/// Reads a `ReadableStream` of bytes a large piece at a time: with a BYOB reader and workerd's
/// `readAtLeast` where the stream offers them, else with the default reader (a browser).
#[derive(Debug)]
pub struct Reader {
    r: Object,
    /// `readAtLeast` of a BYOB reader, and the buffer it fills (handed back after each read)
    byob: Option<(Function, Option<Uint8Array>)>,
    what: String,
    /// Bytes read so far.
    pub read: u64,
}

impl Reader {
    /// A reader over `s` (`what` names it in errors).
    pub fn new(s: &web_sys::ReadableStream, what: &str) -> Reader {
        let opts = Object::new();
        let _ = Reflect::set(&opts, &"mode".into(), &"byob".into());
        let byob = Reflect::get(s, &"getReader".into())
            .ok()
            .and_then(|f| f.dyn_into::<Function>().ok())
            .and_then(|f| f.call1(s, &opts).ok())
            .and_then(|r| {
                let f = Reflect::get(&r, &"readAtLeast".into())
                    .ok()
                    .and_then(|f| f.dyn_into::<Function>().ok());
                if f.is_none() {
                    // a BYOB reader without readAtLeast (a browser's): let the stream go again
                    // for the default reader
                    call0(&r, "releaseLock");
                }
                Some((r, f?))
            });
        let what = what.to_string();
        match byob {
            Some((r, f)) => Reader {
                r: r.unchecked_into(),
                byob: Some((f, None)),
                what,
                read: 0,
            },
            None => Reader {
                r: s.get_reader(),
                byob: None,
                what,
                read: 0,
            },
        }
    }

    fn failed(&self, e: JsValue) -> Error {
        Error::Io {
            what: format!("reading {}", self.what),
            reason: js_err(e),
        }
    }

    /// The next piece into `out` (replacing what it held); false at the end.
    pub async fn next_into(&mut self, out: &mut Vec<u8>) -> Result<bool, Error> {
        let promise = match &mut self.byob {
            Some((f, buf)) => {
                let view = buf
                    .take()
                    .unwrap_or_else(|| Uint8Array::new_with_length(READ_AT_LEAST));
                let p = f.call2(&self.r, &READ_AT_LEAST.into(), &view);
                p.map_err(|e| self.failed(e))?
            }
            None => {
                let r: &web_sys::ReadableStreamDefaultReader = self.r.unchecked_ref();
                r.read().into()
            }
        };
        let v = JsFuture::from(Promise::from(promise))
            .await
            .map_err(|e| self.failed(e))?;
        let value = Reflect::get(&v, &"value".into()).map_err(|e| self.failed(e))?;
        let done = Reflect::get(&v, &"done".into())
            .map_err(|e| self.failed(e))?
            .as_bool()
            .unwrap_or(true);
        let value: Option<Uint8Array> = value.dyn_into().ok();
        let n = value.as_ref().map_or(0, |v| v.length() as usize);
        out.resize(n, 0);
        if let Some(v) = &value {
            v.copy_to(&mut out[..]);
            // the buffer was handed over; the next read fills it again
            if let Some((_, buf)) = &mut self.byob {
                *buf = Some(Uint8Array::new(&v.buffer()));
            }
        }
        self.read += n as u64;
        Ok(!(done && n == 0))
    }

    /// Stops reading (the rest of the body is not wanted).
    pub fn cancel(&self) {
        call0(&self.r, "cancel");
    }
}

/// Calls `o.name()`, if it has such a method, ignoring what happens.
fn call0(o: &JsValue, name: &str) {
    if let Ok(f) = Reflect::get(o, &name.into()) {
        if let Ok(f) = f.dyn_into::<Function>() {
            let _ = f.call0(o);
        }
    }
}
