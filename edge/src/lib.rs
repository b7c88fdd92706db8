//! lamina at the edge: a Cloudflare Worker (workers-rs) in front of container registries.
//!
//! `/proxy/<registry URL>` is the same-origin proxy the browser uploader (`web/`) uses for the
//! many registries that send no CORS headers:
//! - it forwards only to the registries on `ALLOWED_REGISTRIES` (and answers 403 for others);
//! - it adds CORS headers only for the Worker's own origin and `ALLOWED_ORIGINS`;
//! - the browser's `Authorization` goes only to the host named in the URL, and a redirect to
//!   another host (a blob in object storage) is followed here without it;
//! - `Location` headers that point at an allowed registry are rewritten to go through the proxy,
//!   so chunked uploads keep going through it;
//! - request and response bodies stream through; nothing is buffered;
//! - to a browser's request (one with `Sec-Fetch-Mode`), a registry's `WWW-Authenticate` comes
//!   back as `X-Lamina-WWW-Authenticate`: a same-origin 401 with a Basic challenge would make the
//!   browser open its own login dialog (and hold the request until someone answers it); the
//!   page's driver reads the challenge from there.
//!
//! Every other path serves the built page (`web/dist`, the `ASSETS` binding), so one
//! `wrangler deploy` ships both.

use worker::{event, Context, Env, Fetch, Method, Request, Response, Result, Url};

mod driver;
mod jobs;
mod produce;
mod work;

pub use jobs::LaminaJob;

/// Response headers a page may read (the registry protocol needs these).
const EXPOSE: &str = "Docker-Content-Digest, Docker-Upload-UUID, Location, Range, \
                      WWW-Authenticate, X-Lamina-WWW-Authenticate, OCI-Chunk-Min-Length, \
                      OCI-Chunk-Max-Length, Content-Length";
/// Where a browser finds the registry's challenge (see the module's documentation).
const CHALLENGE: &str = "x-lamina-www-authenticate";
/// Request headers a page may send, and the only ones forwarded.
const FORWARD: &[&str] = &[
    "accept",
    "authorization",
    "content-type",
    "content-range",
    "content-length",
    "range",
];
/// Response headers not passed back (hop-by-hop, or not the registry's to set on this origin).
const DROP: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "set-cookie",
    "access-control-allow-origin",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-expose-headers",
    "access-control-allow-credentials",
];
const MAX_REDIRECTS: usize = 5;

/// The Worker's settings (`[vars]` in wrangler.toml).
#[derive(Debug)]
pub(crate) struct Config {
    /// `host[:port]` of the registries (and their token servers) the proxy forwards to.
    pub(crate) registries: Vec<String>,
    /// Origins, besides the Worker's own, whose pages may use the proxy.
    origins: Vec<String>,
}

impl Config {
    fn from_env(env: &Env) -> Config {
        let list = |k: &str| -> Vec<String> {
            env.var(k)
                .map(|v| v.to_string())
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().trim_end_matches('/').to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect()
        };
        Config {
            registries: list("ALLOWED_REGISTRIES"),
            origins: list("ALLOWED_ORIGINS"),
        }
    }

    fn allows(&self, u: &Url) -> bool {
        self.registries.iter().any(|r| *r == host_port(u))
    }
}

/// `host` or `host:port` of a URL, as the allow list spells it.
fn host_port(u: &Url) -> String {
    let host = u.host_str().unwrap_or_default().to_ascii_lowercase();
    match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    }
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let url = req.url()?;
    let path = url.path().to_string();
    if path.starts_with("/proxy/") {
        return proxy(req, &Config::from_env(&env), &url).await;
    }
    if let Some(kind) = path.strip_prefix("/hooks/") {
        return jobs::hook(req, &env, &Config::from_env(&env), kind).await;
    }
    if let Some(id) = path.strip_prefix("/jobs/") {
        return jobs::job_status(&env, id).await;
    }
    match env.assets("ASSETS") {
        Ok(assets) => assets.fetch_request(req).await,
        Err(_) => Response::error("not found", 404),
    }
}

/// A JSON error naming what was wrong.
pub(crate) fn refuse(status: u16, msg: &str) -> Result<Response> {
    // error codes as registries spell them, so a client's error handling reads them too
    let code = match status {
        400 => "BAD_REQUEST",
        401 => "UNAUTHORIZED",
        403 => "DENIED",
        404 => "NOT_FOUND",
        405 => "UNSUPPORTED",
        409 => "REPLAYED",
        413 => "TOO_LARGE",
        508 => "TOO_MANY_REDIRECTS",
        _ => "UNAVAILABLE",
    };
    let body = serde_json::json!({"errors": [{"code": code, "message": msg}]});
    let mut r = Response::error(body.to_string(), status)?;
    r.headers_mut().set("content-type", "application/json")?;
    Ok(r)
}

/// The registry URL a `/proxy/...` path names (query included).
fn target(url: &Url) -> Option<Url> {
    let rest = url.path().strip_prefix("/proxy/")?;
    // a path normaliser may have folded `http://` into `http:/`
    let rest = match rest.split_once(":/") {
        Some((scheme, tail)) if !tail.starts_with('/') => format!("{scheme}://{tail}"),
        _ => rest.to_string(),
    };
    let mut t = Url::parse(&rest).ok()?;
    if !matches!(t.scheme(), "http" | "https") || t.host_str().is_none() {
        return None;
    }
    t.set_query(url.query());
    Some(t)
}

async fn proxy(req: Request, cfg: &Config, url: &Url) -> Result<Response> {
    let own = url.origin().ascii_serialization();
    let origin = req.headers().get("origin")?;
    // CORS only for the Worker's own origin and the allowed ones
    let cors = match &origin {
        None => None,
        Some(o) if *o == own || cfg.origins.iter().any(|a| a == o) => Some(o.clone()),
        Some(o) => return refuse(403, &format!("origin {o} may not use this proxy")),
    };
    if req.method() == Method::Options {
        let mut r = Response::empty()?.with_status(204);
        let h = r.headers_mut();
        if let Some(o) = &cors {
            h.set("access-control-allow-origin", o)?;
            h.set("vary", "Origin")?;
            h.set(
                "access-control-allow-methods",
                "GET, HEAD, POST, PUT, PATCH, DELETE",
            )?;
            h.set("access-control-allow-headers", &FORWARD.join(", "))?;
            h.set("access-control-max-age", "600")?;
        }
        return Ok(r);
    }
    let Some(first) = target(url) else {
        return refuse(
            400,
            "a proxy path is /proxy/<http or https URL of a registry>",
        );
    };
    if !cfg.allows(&first) {
        return refuse(
            403,
            &format!(
                "registry {} is not on this proxy's allow list (ALLOWED_REGISTRIES)",
                host_port(&first)
            ),
        );
    }
    let method = req.method();
    let body = match method {
        Method::Get | Method::Head => None,
        _ => req.inner().body(),
    };
    let mut at = first.clone();
    let mut with_auth = true;
    let mut body = body.map(wasm_bindgen::JsValue::from);
    for _ in 0..=MAX_REDIRECTS {
        let headers = web_sys::Headers::new()?;
        for name in FORWARD {
            if *name == "authorization" && !with_auth {
                continue;
            }
            if let Some(v) = req.headers().get(name)? {
                headers.set(name, &v)?;
            }
        }
        let init = web_sys::RequestInit::new();
        init.set_method(method.as_ref());
        init.set_headers(&headers);
        init.set_redirect(web_sys::RequestRedirect::Manual);
        if let Some(b) = body.take() {
            init.set_body(&b);
        }
        let out = web_sys::Request::new_with_str_and_init(at.as_str(), &init)?;
        let resp = Fetch::Request(Request::from(out)).send().await?;
        let status = resp.status_code();
        let location = resp.headers().get("location")?;
        // a blob redirect (to object storage): followed here, never with the browser's
        // credentials to another host
        if matches!(method, Method::Get | Method::Head)
            && matches!(status, 301 | 302 | 303 | 307 | 308)
        {
            if let Some(loc) = &location {
                let next = at.join(loc)?;
                if host_port(&next) != host_port(&at) || next.scheme() != at.scheme() {
                    with_auth = false;
                }
                at = next;
                continue;
            }
        }
        let browser = req.headers().get("sec-fetch-mode")?.is_some();
        return pass_back(resp, &at, cfg, &own, cors.as_deref(), browser);
    }
    refuse(
        508,
        &format!(
            "more than {MAX_REDIRECTS} redirects from {}",
            first.as_str()
        ),
    )
}

/// The registry's response for the browser: its status, body (streamed) and headers, with
/// `Location` rewritten through the proxy and CORS headers for an allowed origin.
fn pass_back(
    resp: Response,
    at: &Url,
    cfg: &Config,
    own: &str,
    cors: Option<&str>,
    browser: bool,
) -> Result<Response> {
    let inner: web_sys::Response = resp.into();
    let headers = web_sys::Headers::new()?;
    let from = inner.headers();
    let entries = driver::header_pairs(&from).map_err(worker::Error::RustError)?;
    for (k, v) in entries {
        let k = k.to_ascii_lowercase();
        if DROP.contains(&k.as_str()) {
            continue;
        }
        if k == "location" {
            let abs = at.join(&v)?;
            let v = if cfg.allows(&abs) {
                format!("{own}/proxy/{}", abs.as_str())
            } else {
                abs.to_string()
            };
            headers.set(&k, &v)?;
            continue;
        }
        if k == "www-authenticate" && browser {
            headers.append(CHALLENGE, &v)?;
            continue;
        }
        headers.append(&k, &v)?;
    }
    if let Some(o) = cors {
        headers.set("access-control-allow-origin", o)?;
        headers.set("access-control-expose-headers", EXPOSE)?;
        headers.set("vary", "Origin")?;
    }
    let init = web_sys::ResponseInit::new();
    init.set_status(inner.status());
    init.set_headers(&headers);
    let body = inner.body();
    let out = web_sys::Response::new_with_opt_readable_stream_and_init(body.as_ref(), &init)?;
    Ok(Response::from(out))
}
