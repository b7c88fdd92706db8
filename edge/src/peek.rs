//! `GET /ls?ref=REF[&path=P][&layer=N]...[&platform=os/arch]` and `GET /inspect?...`: what
//! `lamina ls --json` and `lamina inspect --json` print, read inside an image without
//! downloading it ([`lamina_wasm::peek`], the same core machines the CLI runs).
//!
//! Only registries on `ALLOWED_REGISTRIES` (else `403`). An unsigned request reads only what
//! the registry serves anonymously (a private image is `401`); the Worker's `REGISTRY_AUTH`
//! credentials are used only for a request signed as hooks are, over its path and query:
//! `X-Lamina-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<path?query>" with HOOK_SECRET>`.

use std::collections::HashMap;

use lamina_core::hook;
use lamina_core::image::Descriptor;
use lamina_core::reference::Reference;
use lamina_core::Error;
use lamina_wasm::flow::Side;
use lamina_wasm::peek::Streams;
use lamina_wasm::{Failure, Reader};
use worker::{Env, Method, Request, Response, Result, Url};

use crate::driver::{now_ms, Driver, Workerd};
use crate::work::DEFAULT_REGISTRY;
use crate::{refuse, Config};

/// A read's side: no log (notes are dropped: the JSON is the answer), nothing copied.
struct Look {
    d: Driver,
}

impl Side for Look {
    type X = Workerd;
    type Hook = ();
    fn driver(&mut self) -> (&mut lamina_wasm::Driver<Workerd>, &()) {
        (self.d.shared(), &())
    }
    async fn note(&mut self, _line: &str) {}
    async fn copy(
        &mut self,
        _: &Reference,
        _: &Reference,
        _: &Descriptor,
    ) -> std::result::Result<(), Failure> {
        Err(Error::internal("reading inside an image copies no blob").into())
    }
}

impl Streams for Look {
    type Body = Reader;
    fn body(&self, s: web_sys::ReadableStream, what: &str) -> Reader {
        Reader::new(&s, what)
    }
}

/// What a read's query asks.
#[derive(Debug, PartialEq, Eq)]
struct Ask {
    image: String,
    path: Option<String>,
    layers: Vec<usize>,
    platform: Option<String>,
}

/// The query of `/ls` and `/inspect`.
fn ask(url: &Url) -> std::result::Result<Ask, String> {
    let mut a = Ask {
        image: String::new(),
        path: None,
        layers: Vec::new(),
        platform: None,
    };
    for (k, v) in url.query_pairs() {
        match &*k {
            "ref" => a.image = v.into_owned(),
            "path" => a.path = Some(v.into_owned()),
            "platform" => a.platform = Some(v.into_owned()),
            "layer" => a.layers.push(
                v.parse()
                    .map_err(|_| format!("layer={v}: a layer is its index (0, 1, ...)"))?,
            ),
            k => {
                return Err(format!(
                    "unknown parameter {k:?} (ref, path, layer, platform)"
                ))
            }
        }
    }
    if a.image.is_empty() {
        return Err("?ref=REF (the image or artifact to read) is required".into());
    }
    Ok(a)
}

/// What is signed of a read: its path and query as sent (`/ls?ref=...`).
fn signed_part(url: &Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}

/// Whether `e` is a registry refusing the credentials it got (none, for an unsigned read).
fn denied(e: &Error) -> bool {
    matches!(
        e,
        Error::Auth { .. }
            | Error::Http {
                status: 401 | 403,
                ..
            }
    )
}

/// `GET /ls` (`inspect` false) or `GET /inspect`.
pub async fn read(req: Request, env: &Env, cfg: &Config, inspect: bool) -> Result<Response> {
    if req.method() != Method::Get {
        return refuse(405, "/ls and /inspect are GET");
    }
    let url = req.url()?;
    let a = match ask(&url) {
        Ok(a) => a,
        Err(e) => return refuse(400, &e),
    };
    let r = match Reference::parse(&a.image, DEFAULT_REGISTRY) {
        Ok(r) => r,
        Err(e) => return refuse(400, &e.to_string()),
    };
    if !cfg.registries.contains(&r.registry.to_ascii_lowercase()) {
        return refuse(
            403,
            &format!(
                "registry {} is not on this Worker's allow list (ALLOWED_REGISTRIES)",
                r.registry
            ),
        );
    }
    let sig = req.headers().get(hook::SIGNATURE_HEADER)?;
    let ts = req.headers().get(hook::TIMESTAMP_HEADER)?;
    let signed = sig.is_some() || ts.is_some();
    let creds = if signed {
        let Ok(secret) = env.secret("HOOK_SECRET").map(|s| s.to_string()) else {
            return refuse(503, "signed reads are off: set the HOOK_SECRET secret");
        };
        if secret.len() < 16 {
            return refuse(
                503,
                "HOOK_SECRET is shorter than 16 bytes: signed reads are off",
            );
        }
        let now = (now_ms() / 1000.0) as u64;
        let msg = signed_part(&url);
        if let Err(e) = hook::verify(
            secret.as_bytes(),
            sig.as_deref(),
            ts.as_deref(),
            msg.as_bytes(),
            now,
        ) {
            return refuse(401, &format!("{e} (a read signs \"<timestamp>.{msg}\")"));
        }
        match crate::jobs::registry_creds(env) {
            Ok(c) => c,
            Err(e) => return refuse(500, &e),
        }
    } else {
        HashMap::new()
    };
    let mut look = Look {
        d: Driver::new(creds),
    };
    let (path, platform) = (a.path.as_deref(), a.platform.as_deref());
    let out = if inspect {
        lamina_wasm::peek::inspect(&mut look, &r, path, &a.layers, platform).await
    } else {
        lamina_wasm::peek::ls(&mut look, &r, path, &a.layers, platform).await
    };
    match out {
        Ok(v) => Ok(Response::from_json(&v)?),
        Err(f) if denied(&f.error) && !signed => refuse(
            401,
            &format!(
                "{}: the registry does not serve {} anonymously ({}); an unsigned read gets \
                 only what a registry serves anonymously: sign the request (X-Lamina-Timestamp, \
                 X-Lamina-Signature, as hooks) to use the Worker's credentials",
                r.name(),
                r.registry,
                f.error
            ),
        ),
        Err(f) if denied(&f.error) => refuse(
            403,
            &format!(
                "{}: the registry refused the Worker's credentials: {}",
                r.name(),
                f.error
            ),
        ),
        Err(f) => match f.error {
            Error::NotFound { .. } | Error::Http { status: 404, .. } => refuse(404, &f.to_string()),
            Error::Usage { .. }
            | Error::InvalidReference { .. }
            | Error::PlatformNotFound { .. } => refuse(400, &f.to_string()),
            _ => refuse(502, &f.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(&format!("https://edge.example{s}")).unwrap()
    }

    #[test]
    fn a_reads_query() {
        assert_eq!(
            ask(&u(
                "/ls?ref=127.0.0.1%3A5100%2Fa%3Av1&path=src%2Fw&layer=2&layer=3"
            ))
            .unwrap(),
            Ask {
                image: "127.0.0.1:5100/a:v1".into(),
                path: Some("src/w".into()),
                layers: vec![2, 3],
                platform: None,
            }
        );
        assert!(ask(&u("/ls")).unwrap_err().contains("ref=REF"));
        assert!(ask(&u("/ls?ref=a&layer=x")).is_err());
        assert!(ask(&u("/ls?ref=a&creds=x")).is_err());
    }

    #[test]
    fn a_read_signs_its_path_and_query() {
        assert_eq!(
            signed_part(&u("/ls?ref=a%2Fb&path=x")),
            "/ls?ref=a%2Fb&path=x"
        );
        assert_eq!(signed_part(&u("/inspect")), "/inspect");
    }
}
