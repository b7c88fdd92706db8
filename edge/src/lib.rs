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

use lamina_wasm::{header_pairs, through_proxy, CHALLENGE, PROXY_PATH};
use worker::{event, Context, Env, Fetch, Method, Request, Response, Result, Url};

mod driver;
mod jobs;
mod model;
mod peek;
mod produce;
mod work;

pub use jobs::LaminaJob;

/// Response headers a page may read (the registry protocol needs these).
const EXPOSE: &str = "Docker-Content-Digest, Docker-Upload-UUID, Location, Range, \
                      WWW-Authenticate, X-Lamina-WWW-Authenticate, OCI-Chunk-Min-Length, \
                      OCI-Chunk-Max-Length, Content-Length";
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
        let var = |k: &str| env.var(k).map(|v| v.to_string()).unwrap_or_default();
        Config::new(&var("ALLOWED_REGISTRIES"), &var("ALLOWED_ORIGINS"))
    }

    /// The settings from their comma-separated lists.
    fn new(registries: &str, origins: &str) -> Config {
        let list = |v: &str| -> Vec<String> {
            v.split(',')
                .map(|s| s.trim().trim_end_matches('/').to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect()
        };
        Config {
            registries: list(registries),
            origins: list(origins),
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
    if path.starts_with(PROXY_PATH) {
        return proxy(req, &Config::from_env(&env), &url).await;
    }
    if let Some(kind) = path.strip_prefix("/hooks/") {
        return jobs::hook(req, &env, &Config::from_env(&env), kind).await;
    }
    if path == "/ls" || path == "/inspect" {
        return peek::read(req, &env, &Config::from_env(&env), path == "/inspect").await;
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
    let rest = url.path().strip_prefix(PROXY_PATH)?;
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
    for (k, v) in header_pairs(&inner.headers(), &|k, v| (k, v))? {
        match passed(k, v, at, cfg, own, browser)? {
            Pass::Drop => {}
            Pass::Set(k, v) => headers.set(&k, &v)?,
            Pass::Append(k, v) => headers.append(&k, &v)?,
        }
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

/// What the proxy does with one of the registry's response headers.
#[derive(Debug, PartialEq, Eq)]
enum Pass {
    /// Not passed back.
    Drop,
    /// Passed back as the only one of its name.
    Set(String, String),
    /// Passed back beside others of its name.
    Append(String, String),
}

/// The registry's header `k: v` (of an answer from `at`) as the browser gets it: hop-by-hop
/// and CORS headers dropped, a `Location` at an allowed registry through the proxy, the
/// challenge to a `browser` under [`CHALLENGE`].
fn passed(k: String, v: String, at: &Url, cfg: &Config, own: &str, browser: bool) -> Result<Pass> {
    let k = k.to_ascii_lowercase();
    if DROP.contains(&k.as_str()) {
        return Ok(Pass::Drop);
    }
    if k == "location" {
        let abs = at.join(&v)?;
        let v = if cfg.allows(&abs) {
            through_proxy(own, abs.as_str())
        } else {
            abs.to_string()
        };
        return Ok(Pass::Set(k, v));
    }
    if k == "www-authenticate" && browser {
        return Ok(Pass::Append(CHALLENGE.into(), v));
    }
    Ok(Pass::Append(k, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::new(
            " 127.0.0.1:5100, Registry.Example/ ,,",
            "https://page.example",
        )
    }

    #[test]
    fn settings_lists_are_trimmed_and_lowercase() {
        let c = cfg();
        assert_eq!(c.registries, ["127.0.0.1:5100", "registry.example"]);
        assert_eq!(c.origins, ["https://page.example"]);
        assert!(Config::new("", "").registries.is_empty());
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(c.allows(&u("http://127.0.0.1:5100/v2/")));
        assert!(c.allows(&u("https://REGISTRY.example/v2/")));
        assert!(!c.allows(&u("http://127.0.0.1:5101/v2/")), "another port");
        assert!(!c.allows(&u("https://registry.example:444/v2/")));
    }

    #[test]
    fn proxy_paths_name_registry_urls() {
        let t = |p: &str| target(&Url::parse(&format!("https://edge.example{p}")).unwrap());
        assert_eq!(
            t("/proxy/http://127.0.0.1:5100/v2/a/blobs/uploads/?mount=x")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:5100/v2/a/blobs/uploads/?mount=x"
        );
        // a path normaliser folded the scheme's slashes
        assert_eq!(
            t("/proxy/https:/r.example/v2/").unwrap().as_str(),
            "https://r.example/v2/"
        );
        assert!(t("/proxy/ftp://r.example/").is_none());
        assert!(t("/proxy/nonsense").is_none());
        assert!(t("/other/http://r.example/").is_none());
    }

    #[test]
    fn headers_passed_back_to_the_page() {
        let at = Url::parse("http://127.0.0.1:5100/v2/a/blobs/uploads/").unwrap();
        let own = "https://edge.example";
        let c = cfg();
        let pass =
            |k: &str, v: &str, browser| passed(k.into(), v.into(), &at, &c, own, browser).unwrap();
        assert_eq!(pass("Set-Cookie", "a=b", true), Pass::Drop);
        assert_eq!(pass("Access-Control-Allow-Origin", "*", true), Pass::Drop);
        assert_eq!(
            pass("Location", "/v2/a/blobs/uploads/u1?s=2", true),
            Pass::Set(
                "location".into(),
                "https://edge.example/proxy/http://127.0.0.1:5100/v2/a/blobs/uploads/u1?s=2".into()
            )
        );
        // a Location elsewhere (object storage) is made absolute, not proxied
        assert_eq!(
            pass("location", "https://s3.example/b?sig=1", true),
            Pass::Set("location".into(), "https://s3.example/b?sig=1".into())
        );
        assert_eq!(
            pass("WWW-Authenticate", "Basic realm=\"r\"", true),
            Pass::Append(CHALLENGE.into(), "Basic realm=\"r\"".into())
        );
        assert_eq!(
            pass("WWW-Authenticate", "Basic realm=\"r\"", false),
            Pass::Append("www-authenticate".into(), "Basic realm=\"r\"".into())
        );
        assert_eq!(
            pass("Docker-Content-Digest", "sha256:x", true),
            Pass::Append("docker-content-digest".into(), "sha256:x".into())
        );
    }
}
