//! `lamina login` and `lamina logout`: credentials in Docker's `config.json`, the convention
//! `docker login`, `crane auth login` and `regctl registry login` share, so every tool that
//! reads it (lamina included) finds them.
//!
//! The file is `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. Every other key in
//! it is kept as it was (order included); it is written to a temporary file with mode 0600 and
//! renamed into place. A `credHelpers` entry for the registry, or a `credsStore`, gets the
//! credentials through the helper (`docker-credential-NAME store`) instead, as Docker does.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;

use base64::Engine as _;
use lamina_core::auth::Secret;
use lamina_core::reference::Reference;
use serde_json::{Map, Value};

use crate::commands::Global;
use crate::error::Result;
use crate::net::client::{Client, Options};
use crate::net::creds::{docker_config_path, keys_for, spawn_helper, Given, RoleCreds};

/// Log in to a registry: check the credentials with it, then keep them in Docker's
/// config.json ($DOCKER_CONFIG/config.json or ~/.docker/config.json, mode 0600; or the
/// credential helper it names), where lamina, docker, crane, regctl and skopeo find them.
///
/// Examples:
///   echo "$TOKEN" | lamina login ghcr.io -u me --password-stdin
///   lamina login 127.0.0.1:5000 -u testuser --password-stdin < pass.txt
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct LoginArgs {
    /// Registry host (ghcr.io, docker.io, 127.0.0.1:5000).
    #[arg(value_name = "REGISTRY")]
    pub registry: String,
    /// Read the password from stdin (up to its end; a final newline is dropped).
    #[arg(long)]
    pub password_stdin: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Remove a registry's credentials from Docker's config.json (or its credential helper).
#[derive(clap::Args, Debug)]
pub struct LogoutArgs {
    /// Registry host.
    #[arg(value_name = "REGISTRY")]
    pub registry: String,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The host of `REGISTRY` as given (a URL or `host/path` is taken by its host).
pub fn host_of(given: &str) -> Result<String> {
    let s = given
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = s.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains(char::is_whitespace) || host.contains('@') {
        return Err(Box::new(lamina_core::Error::Usage {
            reason: format!("{given:?} is not a registry host (e.g. ghcr.io or 127.0.0.1:5000)"),
        }));
    }
    Ok(match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        h => h.to_string(),
    })
}

/// The key Docker files a registry under (the first of [`keys_for`]).
fn config_key(host: &str) -> String {
    keys_for(host).swap_remove(0)
}

fn config_path() -> Result<PathBuf> {
    docker_config_path()
        .ok_or_else(|| "neither DOCKER_CONFIG nor HOME is set: nowhere to keep credentials".into())
}

fn read_config(path: &std::path::Path) -> Result<Map<String, Value>> {
    match std::fs::read(path) {
        Ok(raw) if raw.iter().all(u8::is_ascii_whitespace) => Ok(Map::new()),
        Ok(raw) => match serde_json::from_slice::<Value>(&raw) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(format!("{}: not a JSON object", path.display()).into()),
            Err(e) => Err(format!("{}: {e}", path.display()).into()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Map::new()),
        Err(e) => Err(format!("{}: {e}", path.display()).into()),
    }
}

fn write_config(path: &std::path::Path, m: &Map<String, Value>) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let tmp = path.with_file_name(format!("config.json.lamina-tmp-{}", std::process::id()));
    let _reg = crate::store::cleanup::register(&tmp);
    let mut bytes = serde_json::to_vec_pretty(m).map_err(|e| e.to_string())?;
    bytes.push(b'\n');
    let r = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("{}: {e}", path.display()).into());
    }
    Ok(())
}

/// The credential helper that keeps this registry's credentials, if the config names one.
fn helper_for(m: &Map<String, Value>, host: &str) -> Option<String> {
    let helpers = m.get("credHelpers").and_then(Value::as_object);
    for k in keys_for(host) {
        if let Some(h) = helpers.and_then(|h| h.get(&k)).and_then(Value::as_str) {
            return Some(h.to_string());
        }
    }
    m.get("credsStore")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn run_helper(name: &str, verb: &str, input: &[u8]) -> Result<()> {
    let prog = format!("docker-credential-{name}");
    let mut child = spawn_helper(name, verb)?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(input)
            .map_err(|e| format!("credential helper {prog}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("credential helper {prog}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "credential helper {prog} {verb} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(())
}

/// Runs `login`: checks the credentials against the registry, then stores them.
pub fn login(opts: &Options, global: &Global, a: LoginArgs) -> Result<()> {
    let host = host_of(&a.registry)?;
    let usage = |r: &str| -> crate::error::Error {
        Box::new(lamina_core::Error::Usage { reason: r.into() })
    };
    let username = global
        .username
        .clone()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| usage("give the username: lamina login HOST -u USER --password-stdin"))?;
    let password = if a.password_stdin {
        if global.password.is_some() {
            return Err(usage("give --password or --password-stdin, not both"));
        }
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| format!("reading the password from stdin: {e}"))?;
        s.trim_end_matches(['\n', '\r']).to_string()
    } else {
        global.password.clone().ok_or_else(|| {
            usage("give the password on stdin (--password-stdin) or with --password / LAMINA_PASSWORD")
        })?
    };
    if password.is_empty() {
        return Err(usage("the password is empty"));
    }
    let secret = Secret::new(password);
    // 1. the registry must take them
    let mut o = opts.clone();
    o.given = Given {
        token: None,
        basic: vec![RoleCreds {
            registry: host.clone(),
            username: username.clone(),
            password: secret.clone(),
            from: "lamina login",
        }],
    };
    let mut client = Client::new(o)?;
    let r = Reference {
        registry: host.clone(),
        repository: "library/login-check".into(),
        tag: None,
        digest: None,
        scheme: None,
    };
    client
        .run(&r, lamina_core::registry::CheckLogin::new())
        .map_err(|e| format!("logging in to {host}: {e}"))?;
    // 2. store them
    let path = config_path()?;
    let mut m = read_config(&path)?;
    let key = config_key(&host);
    let stored = match helper_for(&m, &host) {
        Some(h) => {
            let input = serde_json::json!({
                "ServerURL": key,
                "Username": username,
                "Secret": secret.expose(),
            });
            run_helper(&h, "store", input.to_string().as_bytes())?;
            format!("docker-credential-{h}")
        }
        None => {
            let auths = m
                .entry("auths")
                .or_insert_with(|| Value::Object(Map::new()));
            let auths = auths
                .as_object_mut()
                .ok_or_else(|| format!("{}: \"auths\" is not an object", path.display()))?;
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("{username}:{}", secret.expose()));
            // one entry per registry: drop the other spellings it may be filed under
            for k in keys_for(&host) {
                if k != key {
                    auths.remove(&k);
                }
            }
            auths.insert(key.clone(), serde_json::json!({ "auth": token }));
            write_config(&path, &m)?;
            path.display().to_string()
        }
    };
    if a.json {
        outln!(
            "{}",
            serde_json::json!({"registry": host, "username": username, "storedIn": stored})
        )?;
    } else {
        outln!("Login Succeeded")?;
        eprintln!("credentials for {host} stored in {stored}");
    }
    Ok(())
}

/// Runs `logout`: removes the registry's stored credentials (every spelling it is filed under).
pub fn logout(a: LogoutArgs) -> Result<()> {
    let (registry, json) = (a.registry.as_str(), a.json);
    let host = host_of(registry)?;
    let path = config_path()?;
    let mut m = read_config(&path)?;
    let mut removed = false;
    if let Some(h) = helper_for(&m, &host) {
        run_helper(&h, "erase", config_key(&host).as_bytes())?;
        removed = true;
    }
    if let Some(auths) = m.get_mut("auths").and_then(Value::as_object_mut) {
        for k in keys_for(&host) {
            removed |= auths.remove(&k).is_some();
        }
        if removed {
            write_config(&path, &m)?;
        }
    }
    if json {
        outln!(
            "{}",
            serde_json::json!({"registry": host, "removed": removed})
        )?;
    } else if removed {
        outln!("Removing login credentials for {host}")?;
    } else {
        eprintln!("not logged in to {host}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_from_what_users_type() {
        assert_eq!(host_of("ghcr.io").unwrap(), "ghcr.io");
        assert_eq!(host_of("https://ghcr.io/").unwrap(), "ghcr.io");
        assert_eq!(host_of("127.0.0.1:5000").unwrap(), "127.0.0.1:5000");
        assert_eq!(host_of("index.docker.io").unwrap(), "docker.io");
        assert_eq!(host_of("quay.io/org/repo").unwrap(), "quay.io");
        assert!(host_of("").is_err());
        assert!(host_of("user@host").is_err());
        assert_eq!(config_key("docker.io"), "https://index.docker.io/v1/");
    }
}
