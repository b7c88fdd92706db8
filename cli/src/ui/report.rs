//! How a command ends: its exit status (README, "Exit codes"), the error's message chain on
//! stderr, the error as JSON when `--json` was given, and a hint for the errors a user can act
//! on (a refused login, an untrusted certificate, a bug).

use std::process::ExitCode;

use crate::error::{Error, Result};
use crate::ui::out::Closed;

/// The exit status of a command that failed (README, "Exit codes"); 0 is success, and so is a
/// closed stdout ([`Closed`]: `lamina layers | head -1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Something failed while running (the registry, the network, a file, a digest).
    Failed = 1,
    /// Arguments that cannot work: bad flags, a malformed reference.
    Usage = 2,
    /// A bug in lamina (`EX_SOFTWARE` of sysexits.h): the core misused
    /// ([`lamina_core::Error::Internal`] anywhere in the cause chain), or a panic.
    Internal = 70,
}

impl Exit {
    pub fn of(e: &Error) -> Exit {
        use lamina_core::Error as E;
        if chain(e).any(|c| matches!(c.downcast_ref::<E>(), Some(E::Internal { .. }))) {
            return Exit::Internal;
        }
        match e.downcast_ref::<E>() {
            Some(E::Usage { .. } | E::InvalidReference { .. }) => Exit::Usage,
            _ => Exit::Failed,
        }
    }
}

/// An error and its causes, outermost first.
pub fn chain<'a>(e: &'a Error) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    let top: &(dyn std::error::Error + 'static) = &**e;
    std::iter::successors(Some(top), |c| c.source())
}

/// What follows the message of a bug.
pub const BUG_HINT: &str = "note: this is a bug in lamina; please report it with the command that \
                        triggered it and this message";

/// The error as JSON: `message` (the whole chain, as printed), `kind`, `exitCode`, and the
/// fields of lamina's error that scripts act on (`status`, `url`, `registry`, `host`,
/// `expected`/`found` digests).
fn error_json(e: &Error, msg: &str, exit: Exit) -> serde_json::Value {
    use lamina_core::Error as E;
    let mut j = serde_json::json!({
        "message": msg,
        "kind": match exit {
            Exit::Usage => "usage",
            Exit::Internal => "internal",
            Exit::Failed => "failed",
        },
        "exitCode": exit as u8,
    });
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&**e);
    while let Some(c) = cur {
        if let Some(le) = c.downcast_ref::<E>() {
            let (kind, extra) = match le {
                E::InvalidReference { input, .. } => {
                    ("invalidReference", serde_json::json!({"input": input}))
                }
                E::DigestMismatch {
                    what,
                    expected,
                    found,
                } => (
                    "digestMismatch",
                    serde_json::json!({"what": what, "expected": expected.to_string(), "found": found.to_string()}),
                ),
                E::SizeMismatch {
                    what,
                    expected,
                    found,
                } => (
                    "sizeMismatch",
                    serde_json::json!({"what": what, "expected": expected, "found": found}),
                ),
                E::Http {
                    method,
                    url,
                    status,
                    ..
                } => (
                    "http",
                    serde_json::json!({"method": method, "url": url.to_string(), "status": status}),
                ),
                E::Auth { registry, .. } => ("auth", serde_json::json!({"registry": registry})),
                E::Tls { host, .. } => ("tls", serde_json::json!({"host": host})),
                E::NotThatPlatform { wanted, have, .. } => (
                    "platformNotFound",
                    serde_json::json!({"wanted": wanted, "available": [have]}),
                ),
                E::PlatformNotFound { wanted, available } => (
                    "platformNotFound",
                    serde_json::json!({"wanted": wanted, "available": available}),
                ),
                E::NotFound { what } => ("notFound", serde_json::json!({"what": what})),
                E::Usage { .. } => ("usage", serde_json::json!({})),
                E::Internal { .. } => ("internal", serde_json::json!({})),
                E::Io { what, .. } => ("io", serde_json::json!({"what": what})),
                E::RetriesExhausted { attempts, .. } => (
                    "retriesExhausted",
                    serde_json::json!({"attempts": attempts}),
                ),
                _ => ("failed", serde_json::json!({})),
            };
            j["kind"] = kind.into();
            if let (Some(o), Some(x)) = (j.as_object_mut(), extra.as_object()) {
                for (k, v) in x {
                    o.insert(k.clone(), v.clone());
                }
            }
            break;
        }
        cur = c.source();
    }
    j
}

/// Ends the command with `result`: exit 0 on success (and when stdout's reader went away),
/// else the error printed and its exit status. `json` is whether `--json` was given, and if so
/// whether its JSON goes to stderr (see `main`'s `json_requested`).
pub fn finish(result: Result<()>, json: Option<bool>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // the reader of stdout went away (`| head`): it had what it wanted
        Err(e) if chain(&e).any(|c| c.is::<Closed>()) => ExitCode::SUCCESS,
        Err(e) => {
            let exit = Exit::of(&e);
            let mut msg = e.to_string();
            let mut src = e.source();
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            if let Some(to_stderr) = json {
                let j = serde_json::json!({ "error": error_json(&e, &msg, exit) });
                if to_stderr {
                    eprintln!("{j}");
                } else {
                    let _ = outln!("{j}");
                }
            }
            eprintln!("lamina: error: {msg}");
            if exit == Exit::Internal {
                eprintln!("{BUG_HINT}");
            }
            // a refused login: say how to give credentials
            let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&*e);
            while let Some(c) = cur {
                if let Some(lamina_core::Error::Auth { registry, .. }) =
                    c.downcast_ref::<lamina_core::Error>()
                {
                    eprintln!(
                        "hint: log in with `lamina login {registry} -u USER --password-stdin`, or \
                         give --dest-creds USER:PASS (the destination) or --src-creds USER:PASS \
                         (the registries read from)"
                    );
                    break;
                }
                // a certificate lamina does not trust: say how to trust it
                if let Some(lamina_core::Error::Tls { host, .. }) =
                    c.downcast_ref::<lamina_core::Error>()
                {
                    eprintln!(
                        "hint: trust its CA with --ca-file FILE or /etc/docker/certs.d/{host}/ca.crt \
                         (or SSL_CERT_FILE), or, for a test registry only, turn verification off \
                         with --tls-verify=false"
                    );
                    break;
                }
                cur = c.source();
            }
            ExitCode::from(exit as u8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::WithContext as _;

    fn boxed(e: lamina_core::Error) -> Error {
        Box::new(e)
    }

    #[test]
    fn exit_codes() {
        let reason = || "x".to_string();
        assert_eq!(
            Exit::of(&boxed(lamina_core::Error::Usage { reason: reason() })),
            Exit::Usage
        );
        assert_eq!(Exit::of(&"failed".into()), Exit::Failed);
        let io = lamina_core::Error::Io {
            what: "f".into(),
            reason: reason(),
        };
        assert_eq!(Exit::of(&boxed(io)), Exit::Failed);
        // a bug is a bug wherever it is in the chain, and never a usage error
        let internal = Err::<(), _>(lamina_core::Error::Internal { reason: reason() })
            .context(|| "layer 2".into())
            .unwrap_err();
        assert_eq!(Exit::of(&internal), Exit::Internal);
        assert_eq!(Exit::Internal as u8, 70);
        let j = error_json(&internal, "m", Exit::of(&internal));
        assert_eq!(
            (j["kind"].as_str(), j["exitCode"].as_u64()),
            (Some("internal"), Some(70))
        );
    }
}
