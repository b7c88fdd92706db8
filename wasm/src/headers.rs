//! Headers: what a script may not set, and the edge proxy's renames (pure: no JS).

/// Request headers a script may not set (the runtime does: a browser refuses or ignores them,
/// workerd computes them): never copied into a fetch.
pub fn forbidden(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "content-length" | "host" | "connection" | "accept-encoding" | "user-agent" | "expect"
    )
}

/// The header under which the edge proxy hands a browser the registry's `WWW-Authenticate`: a
/// same-origin 401 with a Basic challenge would make the browser open its own login dialog.
pub const CHALLENGE: &str = "x-lamina-www-authenticate";

/// The path under which the edge Worker proxies registry URLs: `{origin}/proxy/{url}`.
pub const PROXY_PATH: &str = "/proxy/";

/// What the proxy at `proxy` (`{origin}/proxy`, with or without the slash) puts before a
/// registry URL.
pub fn proxy_prefix(proxy: &str) -> String {
    format!("{}/", proxy.trim_end_matches('/'))
}

/// `url` sent through the Worker whose origin is `origin`.
pub fn through_proxy(origin: &str, url: &str) -> String {
    format!("{}{PROXY_PATH}{url}", origin.trim_end_matches('/'))
}

/// A response header that came through the proxy at `prefix` (see [`proxy_prefix`]) as the core
/// must see it: the challenge under its own name again, and a `Location` without the proxy in
/// front (the core keeps the registry's URLs; requests get the prefix when they are sent).
pub fn from_proxy(prefix: &str, name: String, value: String) -> (String, String) {
    if name.eq_ignore_ascii_case(CHALLENGE) {
        return ("www-authenticate".into(), value);
    }
    if name.eq_ignore_ascii_case("location") {
        if let Some(real) = value.strip_prefix(prefix) {
            return (name, real.to_string());
        }
    }
    (name, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_headers_in_any_case() {
        for h in [
            "Content-Length",
            "host",
            "CONNECTION",
            "Accept-Encoding",
            "User-Agent",
            "expect",
        ] {
            assert!(forbidden(h), "{h}");
        }
        for h in [
            "Authorization",
            "Content-Type",
            "Content-Range",
            "Range",
            "Accept",
        ] {
            assert!(!forbidden(h), "{h}");
        }
    }

    #[test]
    fn proxy_renames_the_challenge_and_strips_its_prefix_from_locations() {
        let p = proxy_prefix("https://edge.example/proxy");
        assert_eq!(p, "https://edge.example/proxy/");
        assert_eq!(proxy_prefix("https://edge.example/proxy/"), p);
        let loc = through_proxy(
            "https://edge.example",
            "http://127.0.0.1:5100/v2/a/blobs/uploads/x?s=1",
        );
        assert_eq!(
            loc,
            format!("{p}http://127.0.0.1:5100/v2/a/blobs/uploads/x?s=1")
        );
        assert_eq!(
            from_proxy(&p, "Location".into(), loc),
            (
                "Location".into(),
                "http://127.0.0.1:5100/v2/a/blobs/uploads/x?s=1".into()
            )
        );
        // a Location that does not go through the proxy (object storage) is kept
        assert_eq!(
            from_proxy(&p, "location".into(), "https://s3.example/b".into()),
            ("location".into(), "https://s3.example/b".into())
        );
        assert_eq!(
            from_proxy(
                &p,
                "X-Lamina-WWW-Authenticate".into(),
                "Basic realm=\"r\"".into()
            ),
            ("www-authenticate".into(), "Basic realm=\"r\"".into())
        );
        assert_eq!(
            from_proxy(&p, "range".into(), "0-9".into()),
            ("range".into(), "0-9".into())
        );
    }
}
