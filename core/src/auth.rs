//! Credentials, secrets and `WWW-Authenticate` challenges.

use core::fmt;

use base64::Engine as _;

/// A secret string (password, token). Prints as `<redacted>`; read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself: only for building an `Authorization` header or a token request.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How to authenticate to one registry.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Credentials {
    /// No credentials.
    #[default]
    Anonymous,
    /// Username and password (or identity token as password).
    Basic {
        /// Username.
        username: String,
        /// Password.
        password: Secret,
    },
    /// A Replicate/Cog token: exchanged for a username at `/cog/v1/verify-token`, then used as
    /// Basic credentials.
    CogToken(Secret),
    /// A ready bearer token, sent as is.
    Bearer(Secret),
}

impl Credentials {
    /// The `Authorization` value for Basic credentials.
    pub fn basic_header(username: &str, password: &Secret) -> String {
        let raw = format!("{username}:{}", password.expose());
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm=...`
    Basic,
    /// `Bearer realm=..,service=..,scope=..`
    Bearer {
        /// Token endpoint.
        realm: String,
        /// Service name to ask for.
        service: Option<String>,
        /// Scope the registry asked for.
        scope: Option<String>,
        /// `error="insufficient_scope"` / `invalid_token`, if given.
        error: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header. Unknown schemes give `None`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = match header.find(char::is_whitespace) {
        Some(i) => (&header[..i], header[i..].trim_start()),
        None => (header, ""),
    };
    let params = parse_params(rest);
    let get = |k: &str| {
        params
            .iter()
            .find(|(a, _)| a.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
            error: get("error"),
        })
    } else {
        None
    }
}

fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b',' || b[i].is_ascii_whitespace()) {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' && b[i] != b',' {
            i += 1;
        }
        let key = s[ks..i].trim().to_string();
        if i >= b.len() || b[i] != b'=' {
            continue;
        }
        i += 1;
        let mut val = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                // push whole UTF-8 characters
                let ch_len = s[i..].chars().next().map(char::len_utf8).unwrap_or(1);
                val.push_str(&s[i..i + ch_len]);
                i += ch_len;
            }
            i += 1;
        } else {
            let vs = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            val = s[vs..i].trim().to_string();
        }
        if !key.is_empty() {
            out.push((key, val));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn parses_bearer_with_commas_in_quotes() {
        let c = parse_challenge(r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull,push""#).unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/ubuntu:pull,push".into()),
                error: None
            }
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="x""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(
            parse_challenge("Bearer service=x"),
            None,
            "realm is required"
        );
        let c = parse_challenge(
            r#"bearer realm=http://h/t , error="insufficient_scope", scope="a\"b""#,
        )
        .unwrap();
        assert!(
            matches!(c, Challenge::Bearer { ref realm, ref error, ref scope, .. } if realm == "http://h/t" && error.as_deref() == Some("insufficient_scope") && scope.as_deref() == Some("a\"b"))
        );
    }

    #[test]
    fn hostile_challenges_do_not_panic() {
        for h in [
            "",
            "Bearer",
            "Bearer =",
            "Bearer realm=\"",
            "Bearer realm=\"\\",
            "Bearer ,,,",
            "Bearer realm=\"é\\é\"",
        ] {
            let _ = parse_challenge(h);
        }
    }

    #[test]
    fn secrets_never_print() {
        let c = Credentials::Basic {
            username: "u".into(),
            password: Secret::new("hunter2"),
        };
        let s = format!("{c:?} {}", Secret::new("x"));
        assert!(!s.contains("hunter2") && s.contains("<redacted>"), "{s}");
        assert_eq!(
            Credentials::basic_header("testuser", &Secret::new("testpass")),
            "Basic dGVzdHVzZXI6dGVzdHBhc3M="
        );
    }
}
