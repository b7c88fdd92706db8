//! Where credentials come from, per registry host, in order: `-t/--token` or `COG_TOKEN` (the
//! r8.im Cog flow, for the default registry), credentials given for a role (`--dest-creds` or
//! `--username/--password` for the destination registry, `--src-creds` for the registries read
//! from: `--base`, `--weights`, a source image), `~/.docker/config.json` (`auths`,
//! `credHelpers`, `credsStore`, as `lamina login` writes it), else anonymous. Credentials are
//! only ever handed to the session of the host they belong to.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine as _;
use lamina_core::auth::{Credentials, Secret};
use serde::Deserialize;

/// Credentials given on the command line or in the environment.
#[derive(Clone, Debug, Default)]
pub struct Given {
    /// Cog token and the registry it belongs to.
    pub token: Option<(Secret, String)>,
    /// Username/password per registry host, with the option they came from (first match).
    pub basic: Vec<RoleCreds>,
}

/// A username and password given for one registry.
#[derive(Clone, Debug)]
pub struct RoleCreds {
    /// The registry host they are for.
    pub registry: String,
    /// Username.
    pub username: String,
    /// Password.
    pub password: Secret,
    /// Where they came from (`--src-creds`, `--dest-creds`, `--username/--password`).
    pub from: &'static str,
}

/// Parses `USER:PASSWORD` (skopeo's `--src-creds`/`--dest-creds`).
pub fn parse_user_pass(flag: &str, v: &str) -> Result<(String, Secret), String> {
    match v.split_once(':') {
        Some((u, p)) if !u.is_empty() => Ok((u.to_string(), Secret::new(p.to_string()))),
        _ => Err(format!("{flag}: expected USERNAME:PASSWORD")),
    }
}

#[derive(Deserialize, Default)]
struct DockerConfig {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: std::collections::BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// Every key Docker's config may file `registry` under (the first is the one `docker login`
/// writes).
pub fn keys_for(registry: &str) -> Vec<String> {
    if registry == "docker.io" {
        vec![
            "https://index.docker.io/v1/".into(),
            "index.docker.io".into(),
            "docker.io".into(),
            "registry-1.docker.io".into(),
        ]
    } else {
        vec![
            registry.to_string(),
            format!("https://{registry}"),
            format!("http://{registry}"),
            format!("https://{registry}/v1/"),
        ]
    }
}

/// Resolves the credentials for `registry` (as written in the reference, e.g. `docker.io`).
pub fn for_registry(given: &Given, registry: &str) -> Result<Credentials, String> {
    if let Some((t, reg)) = &given.token {
        if reg == registry {
            return Ok(Credentials::CogToken(t.clone()));
        }
    }
    if let Some(c) = given.basic.iter().find(|c| c.registry == registry) {
        return Ok(Credentials::Basic {
            username: c.username.clone(),
            password: c.password.clone(),
        });
    }
    from_docker_config(registry)
}

fn from_docker_config(registry: &str) -> Result<Credentials, String> {
    let Some(path) = docker_config_path() else {
        return Ok(Credentials::Anonymous);
    };
    let Ok(raw) = std::fs::read(&path) else {
        return Ok(Credentials::Anonymous);
    };
    let cfg: DockerConfig =
        serde_json::from_slice(&raw).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let keys = keys_for(registry);
    for k in &keys {
        if let Some(h) = cfg.cred_helpers.get(k) {
            return helper(h, k);
        }
    }
    for k in &keys {
        if let Some(e) = cfg.auths.get(k) {
            if let (Some(u), Some(p)) = (&e.username, &e.password) {
                return Ok(Credentials::Basic {
                    username: u.clone(),
                    password: Secret::new(p.clone()),
                });
            }
            if let Some(a) = &e.auth {
                let dec = base64::engine::general_purpose::STANDARD
                    .decode(a.trim())
                    .map_err(|_| {
                        format!("{}: the auth entry for {k} is not base64", path.display())
                    })?;
                let s = String::from_utf8(dec).map_err(|_| {
                    format!("{}: the auth entry for {k} is not UTF-8", path.display())
                })?;
                let (u, p) = s.split_once(':').ok_or_else(|| {
                    format!("{}: the auth entry for {k} has no ':'", path.display())
                })?;
                return Ok(Credentials::Basic {
                    username: u.into(),
                    password: Secret::new(p),
                });
            }
        }
    }
    if let Some(store) = &cfg.creds_store {
        if !store.is_empty() {
            return helper(store, &keys[0])
                .map_err(|e| format!("{} names credsStore {store:?}: {e}", path.display()));
        }
    }
    Ok(Credentials::Anonymous)
}

/// Starts `docker-credential-NAME VERB` with piped stdin, stdout and stderr; a helper that is not
/// installed is named as such.
pub fn spawn_helper(name: &str, verb: &str) -> Result<std::process::Child, String> {
    let prog = format!("docker-credential-{name}");
    Command::new(&prog)
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "the credential helper {prog} is not installed (not found on PATH); install \
                     it, or remove it from the Docker config"
                )
            } else {
                format!("credential helper {prog}: {e}")
            }
        })
}

fn helper(name: &str, server: &str) -> Result<Credentials, String> {
    #[derive(Deserialize)]
    struct Out {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let prog = format!("docker-credential-{name}");
    let mut child = spawn_helper(name, "get")?;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(server.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("credential helper {prog}: {e}"))?;
    if !out.status.success() {
        // "credentials not found" is not an error: go anonymous
        return Ok(Credentials::Anonymous);
    }
    let o: Out = serde_json::from_slice(&out.stdout)
        .map_err(|_| format!("credential helper {prog} printed no credentials JSON"))?;
    if o.username == "<token>" {
        return Ok(Credentials::Bearer(Secret::new(o.secret)));
    }
    Ok(Credentials::Basic {
        username: o.username,
        password: Secret::new(o.secret),
    })
}
