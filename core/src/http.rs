//! The HTTP requests the core asks a driver to send, and the responses it takes back.

use core::fmt;

/// HTTP method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
}

impl Method {
    /// Upper-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request body.
#[derive(Clone, PartialEq, Eq)]
pub enum Body {
    /// No body.
    Empty,
    /// These bytes (manifests, configs, forms).
    Bytes(Vec<u8>),
    /// Bytes `start..end` of the blob being uploaded; the driver supplies them from its source.
    Blob {
        /// First byte offset.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
    /// The blob from `start` on, streamed as the driver produces it (chunked transfer
    /// encoding, length unknown up front), for at most `limit` bytes or to the blob's end,
    /// whichever comes first (`u64::MAX`: to the end). When the blob ends within the request,
    /// the driver reports its completion (digest and size) to the upload before the answer;
    /// when the limit is reached first, it reports the bytes it made beyond it as available.
    Stream {
        /// First byte offset.
        start: u64,
        /// Most bytes in this request.
        limit: u64,
    },
}

impl Body {
    /// Length in bytes (0 for a stream, whose length is not known up front).
    pub fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::Blob { start, end } => end - start,
            Body::Stream { .. } => 0,
        }
    }
    /// True when there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::Empty => f.write_str("Empty"),
            Body::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Body::Blob { start, end } => write!(f, "Blob({start}..{end})"),
            Body::Stream { start, limit } if *limit == u64::MAX => write!(f, "Stream({start}..)"),
            Body::Stream { start, limit } => write!(f, "Stream({start}..+{limit})"),
        }
    }
}

/// A request for the driver to send. Redirects are handled by the core: drivers must not follow
/// them on their own (so credentials never travel to another host).
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    /// Method.
    pub method: Method,
    /// Absolute URL.
    pub url: String,
    /// Headers, in order. `Authorization` is the only one holding a secret.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Body,
    /// The driver may stop reading the response body after this many bytes (and must then
    /// report the response with `truncated: true`).
    pub max_response_body: u64,
    /// On a 2xx answer, the driver keeps the body as a stream for the caller instead of reading
    /// it (blob downloads); the response it reports has an empty body.
    pub stream_response: bool,
}

impl Request {
    /// The value of a header (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    if k.eq_ignore_ascii_case("authorization") {
                        "<redacted>"
                    } else {
                        v.as_str()
                    },
                )
            })
            .collect();
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &headers)
            .field("body", &self.body)
            .finish()
    }
}

/// A response as the driver received it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body (possibly cut at the request's `max_response_body`).
    pub body: Vec<u8>,
    /// The body was longer than `max_response_body` and was cut.
    pub truncated: bool,
}

impl Response {
    /// A response with a status and headers.
    pub fn new(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Self {
        Response {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
            truncated: false,
        }
    }

    /// The value of a header (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All values of a header.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The registry's error codes and messages from an error body, for error lines.
    pub fn error_detail(&self) -> String {
        #[derive(serde::Deserialize)]
        struct E {
            code: Option<String>,
            message: Option<String>,
        }
        #[derive(serde::Deserialize)]
        struct Errs {
            errors: Vec<E>,
        }
        if let Ok(e) = serde_json::from_slice::<Errs>(&self.body) {
            return e
                .errors
                .iter()
                .map(|e| match (&e.code, &e.message) {
                    (Some(c), Some(m)) => format!("{c}: {m}"),
                    (Some(c), None) => c.clone(),
                    (None, Some(m)) => m.clone(),
                    (None, None) => String::new(),
                })
                .collect::<Vec<_>>()
                .join("; ");
        }
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim();
        if text.is_empty() || text.starts_with('<') {
            String::new()
        } else {
            text.chars().take(200).collect()
        }
    }
}

/// Splits an absolute URL into (scheme, authority, path-and-query).
pub fn split_url(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let i = rest.find('/').unwrap_or(rest.len());
    Some((scheme, &rest[..i], &rest[i..]))
}

/// Resolves a `Location` header against the URL of the request that got it.
pub fn resolve(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let Some((scheme, authority, _)) = split_url(base) else {
        return location.to_string();
    };
    if let Some(rest) = location.strip_prefix("//") {
        return format!("{scheme}://{rest}");
    }
    if location.starts_with('/') {
        return format!("{scheme}://{authority}{location}");
    }
    // relative to the base's directory
    let path = &base[scheme.len() + 3 + authority.len()..];
    let path = path.split('?').next().unwrap_or("");
    let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    format!("{scheme}://{authority}{dir}/{location}")
}

/// Percent-encodes a query component.
pub fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Appends `k=v` to a URL's query string.
pub fn add_query(url: &str, k: &str, v: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{}={}", encode_query(k), encode_query(v))
}

/// Parses a `Range: 0-<end>` header (inclusive end) into the number of bytes the registry has.
/// `0-0` is read as "nothing yet", distribution's answer for an empty upload.
pub fn parse_range_end(v: &str) -> Option<u64> {
    let v = v.trim().trim_start_matches("bytes=");
    let (a, b) = v.split_once('-')?;
    let a: u64 = a.trim().parse().ok()?;
    let b: u64 = b.trim().parse().ok()?;
    if a != 0 || b < a {
        return None;
    }
    // an end of u64::MAX would be 2^64 bytes: no registry has that, the header is bad
    Some(if b == 0 { 0 } else { b.checked_add(1)? })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn resolves_locations() {
        let b = "http://127.0.0.1:5000/v2/a/blobs/uploads/";
        assert_eq!(
            resolve(b, "/v2/a/blobs/uploads/u?_state=x"),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/u?_state=x"
        );
        assert_eq!(resolve(b, "https://s3/x"), "https://s3/x");
        assert_eq!(resolve(b, "//cdn/x"), "http://cdn/x");
        assert_eq!(resolve("http://h/v2/a/b?q=1", "c"), "http://h/v2/a/c");
        assert_eq!(split_url("https://h:1/p?q"), Some(("https", "h:1", "/p?q")));
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range_end("0-1023"), Some(1024));
        assert_eq!(parse_range_end("bytes=0-9"), Some(10));
        assert_eq!(parse_range_end("0-0"), Some(0));
        assert_eq!(parse_range_end("5-9"), None);
        assert_eq!(parse_range_end("x"), None);
        assert_eq!(parse_range_end("0--1"), None);
    }

    #[test]
    fn fuzz_range_end_at_u64_max_is_refused_not_an_overflow() {
        // fuzz/seeds/http/range-end-u64-max: `b + 1` overflowed (a panic in debug builds, and
        // "0 bytes" after wrapping in release ones)
        let input: &[u8] = b"\x020-018446744073709551615";
        let v = std::str::from_utf8(&input[1..]).unwrap();
        assert_eq!(parse_range_end(v), None);
        assert_eq!(
            parse_range_end("bytes=0-18446744073709551614"),
            Some(u64::MAX)
        );
    }

    #[test]
    fn error_detail_reads_registry_errors_and_hides_html() {
        let r = Response::new(
            404,
            &[],
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
        );
        assert_eq!(r.error_detail(), "MANIFEST_UNKNOWN: manifest unknown");
        assert_eq!(
            Response::new(500, &[], b"<html>x</html>").error_detail(),
            ""
        );
        let q = add_query("http://h/p", "scope", "repository:a/b:pull,push");
        assert_eq!(q, "http://h/p?scope=repository%3Aa%2Fb%3Apull%2Cpush");
    }

    #[test]
    fn debug_redacts_authorization() {
        let r = Request {
            method: Method::Get,
            url: "http://h/v2/".into(),
            headers: vec![("Authorization".into(), "Bearer s3cret".into())],
            body: Body::Empty,
            max_response_body: 0,
            stream_response: false,
        };
        let s = format!("{r:?}");
        assert!(!s.contains("s3cret") && s.contains("<redacted>"), "{s}");
    }
}

/// A URL that displays safely: its query and fragment (upload state, storage signatures) and
/// any `user:password@` are left out of `Display` and `Debug`, so an error, an event or a log
/// line cannot leak them (as uv's `DisplaySafeUrl`). Requests use [`SafeUrl::expose`].
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SafeUrl(String);

impl SafeUrl {
    /// Wraps a URL (absolute, or a path on the registry).
    pub fn new(url: impl Into<String>) -> Self {
        SafeUrl(url.into())
    }

    /// The whole URL, query included: for requests, never for messages.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SafeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let u = self.0.split(['?', '#']).next().unwrap_or("");
        match u.split_once("://") {
            Some((scheme, rest)) => {
                let (authority, path) = match rest.find('/') {
                    Some(i) => rest.split_at(i),
                    None => (rest, ""),
                };
                let host = authority.rsplit('@').next().unwrap_or(authority);
                write!(f, "{scheme}://{host}{path}")
            }
            None => f.write_str(u),
        }
    }
}

impl fmt::Debug for SafeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

impl From<String> for SafeUrl {
    fn from(u: String) -> Self {
        SafeUrl(u)
    }
}

impl From<&str> for SafeUrl {
    fn from(u: &str) -> Self {
        SafeUrl(u.to_string())
    }
}

#[cfg(test)]
mod safe_url_tests {
    use super::SafeUrl;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn a_safe_url_shows_no_query_fragment_or_credentials() {
        let u =
            SafeUrl::new("https://user:pw@reg.example:5000/v2/a/blobs/uploads/u1?_state=SECRET#x");
        assert_eq!(
            u.to_string(),
            "https://reg.example:5000/v2/a/blobs/uploads/u1"
        );
        assert!(!format!("{u:?}").contains("SECRET") && !format!("{u:?}").contains("pw"));
        assert!(u.expose().contains("_state=SECRET"));
        assert_eq!(
            SafeUrl::new("/v2/a/manifests/v1?x=1").to_string(),
            "/v2/a/manifests/v1"
        );
        assert_eq!(SafeUrl::new("https://h").to_string(), "https://h");
    }
}
