//! The commands: each module owns its clap arguments ([`clap::Args`]) and runs them over the
//! operations in [`crate::ops`], given a [`Ctx`]. The layering is
//! `commands -> ops -> store -> net -> ui -> error`, with core under all of them; a module never
//! names one above it (`tests/tests/modules.rs` checks it).
//!
//! A command says which registries it reads from and writes to ([`Roles`]), so the global
//! options (`--src-creds`, `--dest-creds`, `--src-tls-verify`, ...) reach the right hosts
//! before anything is sent.

pub mod affix;
pub mod append;
pub mod cat;
pub mod convert;
pub mod extract;
pub mod inspect;
pub mod layers;
pub mod login;
pub mod ls;
pub mod pack;
pub mod recompress;
pub mod remix;
pub mod slice;

use std::path::PathBuf;

use lamina_core::auth::Secret;
use lamina_core::reference::ImageRef;

use crate::error::{Result, WithContext as _};
use crate::net::client::{self, Client, Options};
use crate::net::creds::{self, Given};
use crate::net::tls;
use crate::store::Loc;

/// The options every command takes (`lamina --help`, "Global options").
#[derive(clap::Args, Debug)]
pub struct Global {
    /// Default registry for short image names (as r8im).
    #[arg(
        short = 'r',
        long,
        global = true,
        default_value = "r8.im",
        env = "LAMINA_REGISTRY",
        hide_env_values = true,
        help_heading = "Global options"
    )]
    pub registry: String,
    /// Replicate/Cog token for --registry.
    #[arg(
        short = 't',
        long,
        global = true,
        env = "COG_TOKEN",
        hide_env_values = true,
        help_heading = "Global options"
    )]
    pub token: Option<String>,
    /// Username for the destination registry (for extract and layers: the image's; for login:
    /// the one to store).
    #[arg(
        short = 'u',
        long,
        global = true,
        env = "LAMINA_USERNAME",
        hide_env_values = true,
        help_heading = "Global options"
    )]
    pub username: Option<String>,
    /// Password for the destination registry (for extract and layers: the image's). Prefer
    /// --password-stdin with login, and the environment elsewhere: a command line is visible
    /// to other users.
    #[arg(
        short = 'p',
        long,
        global = true,
        env = "LAMINA_PASSWORD",
        hide_env_values = true,
        help_heading = "Global options"
    )]
    pub password: Option<String>,
    /// USER:PASSWORD for the registries read from (--base, --weights, the source image), as
    /// skopeo's --src-creds.
    #[arg(
        long,
        global = true,
        value_name = "USER:PASS",
        env = "LAMINA_SRC_CREDS",
        hide_env_values = true,
        help_heading = "Global options"
    )]
    pub src_creds: Option<String>,
    /// USER:PASSWORD for the destination registry, as skopeo's --dest-creds (the same as
    /// --username/--password).
    #[arg(
        long,
        global = true,
        value_name = "USER:PASS",
        env = "LAMINA_DEST_CREDS",
        hide_env_values = true,
        help_heading = "Global options"
    )]
    pub dest_creds: Option<String>,
    /// Use plain HTTP for all registries.
    #[arg(long, global = true, help_heading = "Global options")]
    pub insecure: bool,
    /// No progress, notes or warnings (errors still print).
    #[arg(short, long, global = true, help_heading = "Global options")]
    pub quiet: bool,
    /// Log every request (credentials are never printed).
    #[arg(short, long, global = true, help_heading = "Global options")]
    pub verbose: bool,
    /// Seconds a request may go without sending or receiving a byte before it counts as failed
    /// (and is retried or resumed).
    #[arg(long, global = true, value_name = "SECS", env = "LAMINA_TIMEOUT", default_value_t = 120.0,
          value_parser = parse_secs, hide_env_values = true, help_heading = "Global options")]
    pub timeout: f64,
    /// Streamed uploads go as PATCHes of at most this many MiB, each confirmed by the registry:
    /// after a cut, at most one is sent again.
    #[arg(long, global = true, value_name = "MiB", env = "LAMINA_SEGMENT_SIZE", default_value_t = 128,
          value_parser = clap::value_parser!(u64).range(1..=1_048_576), hide_env_values = true, help_heading = "Global options")]
    pub segment_size: u64,
    /// Also trust the CA certificates in this PEM file (repeatable); the system's store,
    /// SSL_CERT_FILE and /etc/docker/certs.d/HOST/ca.crt are trusted already.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        help_heading = "Global options"
    )]
    pub ca_file: Vec<PathBuf>,
    /// Verify registries' TLS certificates; --tls-verify=false only for test registries.
    #[arg(long, global = true, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set, help_heading = "Global options")]
    pub tls_verify: bool,
    /// Verify the certificates of the registries read from (--base, --weights, a source image).
    #[arg(long, global = true, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set, help_heading = "Global options")]
    pub src_tls_verify: bool,
    /// Verify the destination registry's certificate.
    #[arg(long, global = true, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set, help_heading = "Global options")]
    pub dest_tls_verify: bool,
    /// Seconds to wait for a connection (TCP and TLS) to a registry.
    #[arg(long, global = true, value_name = "SECS", env = "LAMINA_CONNECT_TIMEOUT",
          default_value_t = 30.0, value_parser = parse_secs, hide_env_values = true, help_heading = "Global options")]
    pub connect_timeout: f64,
}

fn parse_secs(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number of seconds between 0 and 86400"
        )),
    }
}

/// The references a command reads from (`sources`) and writes to (`dest`), as given: the
/// hosts the role options are for. (For `extract` and `layers`, the image is both: the
/// destination options are its credentials, as r8im's.)
#[derive(Debug, Default)]
pub struct Roles<'a> {
    /// The destination (or the one image a read-only command looks at).
    pub dest: Option<&'a str>,
    /// The images read from.
    pub sources: Vec<&'a str>,
}

impl Global {
    /// The driver's options for a command with these roles: credentials per role, timeouts,
    /// TLS trust per host. Malformed references are skipped here; the command reports them with
    /// their role when it parses them.
    pub fn options(&self, roles: &Roles<'_>, login: bool) -> Result<Options> {
        let registry_of = |s: &str| match ImageRef::parse(s, &self.registry) {
            Ok(ImageRef::Registry(r)) => Some(r.registry),
            _ => None,
        };
        let dest_registry = roles.dest.and_then(registry_of);
        let mut sources: Vec<String> = Vec::new();
        for r in roles.sources.iter().filter_map(|s| registry_of(s)) {
            if !sources.contains(&r) {
                sources.push(r);
            }
        }
        let mut given = Given::default();
        if let Some(t) = self.token.as_ref().filter(|t| !t.is_empty()) {
            given.token = Some((Secret::new(t.clone()), self.registry.clone()));
        }
        let dest_creds = match (&self.dest_creds, &self.username, &self.password) {
            _ if login => None,
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(usage(
                    "give --dest-creds or --username/--password, not both",
                ))
            }
            (Some(dc), None, None) => Some((
                creds::parse_user_pass("--dest-creds", dc).map_err(usage)?,
                "--dest-creds",
            )),
            (None, Some(u), Some(p)) => {
                Some(((u.clone(), Secret::new(p.clone())), "--username/--password"))
            }
            (None, None, None) => None,
            _ => return Err(usage("give both --username and --password")),
        };
        if let (Some(((u, p), from)), Some(reg)) = (dest_creds, &dest_registry) {
            given.basic.push(creds::RoleCreds {
                registry: reg.clone(),
                username: u,
                password: p,
                from,
            });
        }
        if let Some(sc) = &self.src_creds {
            let (u, p) = creds::parse_user_pass("--src-creds", sc).map_err(usage)?;
            for reg in &sources {
                if let Some(d) = given.basic.iter().find(|c| &c.registry == reg) {
                    if d.username != u || d.password.expose() != p.expose() {
                        return Err(usage(format!(
                            "--src-creds and {} are both for {reg}, and differ: lamina keeps one \
                             login per registry; give one of them",
                            d.from
                        )));
                    }
                    continue;
                }
                given.basic.push(creds::RoleCreds {
                    registry: reg.clone(),
                    username: u.clone(),
                    password: p.clone(),
                    from: "--src-creds",
                });
            }
        }
        Ok(Options {
            insecure: self.insecure,
            verbose: self.verbose,
            given,
            timeouts: client::Timeouts {
                connect: std::time::Duration::from_secs_f64(self.connect_timeout),
                idle: std::time::Duration::from_secs_f64(self.timeout),
            },
            segment: self.segment_size << 20,
            tls: tls::TlsConfig {
                no_verify_all: !self.tls_verify,
                no_verify: {
                    let mut v = Vec::new();
                    if !self.src_tls_verify {
                        v.extend(sources.iter().map(|r| api_host(r)));
                    }
                    if !self.dest_tls_verify {
                        v.extend(dest_registry.iter().map(|r| api_host(r)));
                    }
                    v
                },
                ..Default::default()
            }
            .with_ca_files(&self.ca_file)
            .map_err(usage)?,
        })
    }
}

/// The host lamina connects to for a registry name (`docker.io` is served by
/// `registry-1.docker.io`).
fn api_host(registry: &str) -> String {
    lamina_core::reference::Reference {
        registry: registry.to_string(),
        repository: "x".into(),
        tag: None,
        digest: None,
        scheme: None,
    }
    .api_host()
    .to_string()
}

/// A usage error (exit 2).
pub fn usage(reason: impl Into<String>) -> crate::error::Error {
    Box::new(lamina_core::Error::Usage {
        reason: reason.into(),
    })
}

/// What a command runs with: the driver, the options it was made with, and how references
/// without a registry are completed.
pub struct Ctx {
    /// The registry driver.
    pub client: Client,
    /// Its options (`zstd` makes one driver per worker from them).
    pub opts: Options,
    /// `-q`: no progress, notes or warnings.
    pub quiet: bool,
    /// `--registry`: where short names point.
    registry: String,
}

impl Ctx {
    /// A context for commands run with `global`'s options.
    pub fn new(global: &Global, opts: Options) -> Result<Ctx> {
        Ok(Ctx {
            client: Client::new(opts.clone())?,
            opts,
            quiet: global.quiet,
            registry: global.registry.clone(),
        })
    }

    /// `s` as a reference, a malformed one reported with its `role` (`--base`, `image`).
    fn reference(&self, role: &str, s: &str) -> Result<ImageRef> {
        ImageRef::parse(s, &self.registry).map_err(|e| usage(format!("{role}: {e}")))
    }

    /// An image read from, given as `role`.
    pub fn source(&self, role: &str, s: &str) -> Result<Loc> {
        Loc::source(self.reference(role, s)?).context(|| format!("{role} {s}"))
    }

    /// An image written to, given as `role`: a repository with an optional tag (a digest
    /// cannot be named before the image is made).
    pub fn dest(&self, role: &str, s: &str) -> Result<Loc> {
        let r = self.reference(role, s)?;
        if let ImageRef::Registry(r) = &r {
            if let Some(d) = &r.digest {
                return Err(usage(format!(
                    "{role} {s}: a destination is a repository with an optional tag, not a \
                     digest ({d}): the new image's digest is known only once it is made; \
                     give {}:TAG",
                    r.name()
                )));
            }
        }
        Loc::dest(r).context(|| format!("{role} {s}"))
    }
}

/// `--annotation`/`--label` values as pairs (`what` names the flag).
pub fn kv(list: &[String], what: &str) -> Result<Vec<(String, String)>> {
    list.iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(usage(format!("--{what} {s:?}: expected key=value"))),
        })
        .collect()
}

/// Finishes a push to `dest` (an archive is packed into place) and prints the result:
/// `name@digest`, or with `--json` `{"image", "digest", "tag"}` and the fields of `extra`.
pub fn pushed(
    dest: &Loc,
    digest: &lamina_core::Digest,
    json: bool,
    extra: serde_json::Value,
) -> Result<()> {
    crate::store::commit(dest)?;
    let name = dest.name();
    if json {
        let mut v = serde_json::json!({
            "image": format!("{name}@{digest}"),
            "digest": digest.to_string(),
            "tag": dest.tag(),
        });
        if let (Some(o), serde_json::Value::Object(x)) = (v.as_object_mut(), extra) {
            o.extend(x);
        }
        outln!("{v}")?;
    } else {
        outln!("{name}@{digest}")?;
    }
    Ok(())
}
