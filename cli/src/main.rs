//! `lamina`: edit container images that carry ML models, directly in the registry.
//!
//! The modules are layered `commands -> ops -> store -> net -> ui -> error`, over
//! `lamina_core` (see [`commands`]); this file is the command line and the way out.

#[macro_use]
mod ui;

mod commands;
mod error;
mod net;
mod ops;
mod store;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands::{
    affix, append, cat, convert, extract, inspect, layers, login, ls, pack, recompress, remix,
    slice,
};
use crate::commands::{Ctx, Global, Roles};
use crate::ui::report;

/// `0.1.0 (commit 1a2b3c4d5e6f)`.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("LAMINA_COMMIT"),
    ")"
);

const AFTER_HELP: &str = "\
Credentials, per registry: -t/--token or COG_TOKEN (Replicate's Cog flow, for --registry);
--dest-creds USER:PASS or --username/--password (LAMINA_USERNAME/LAMINA_PASSWORD) for the
destination; --src-creds USER:PASS for the registries read from (--base, --weights, a source
image); ~/.docker/config.json (auths, credHelpers, credsStore; `lamina login` writes it); else
anonymous. 127.0.0.1 and localhost use plain HTTP, as Docker does; --insecure forces it.";

/// Edit container images that carry ML models, directly in the registry: add a layer of
/// weights on top of an image without pulling its base layers.
#[derive(Parser, Debug)]
#[command(name = "lamina", version = VERSION, about, after_help = AFTER_HELP, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    #[command(flatten)]
    global: Global,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    Affix(affix::Args),
    Extract(extract::Args),
    Remix(remix::Args),
    Clone(affix::CloneArgs),
    Zstd(recompress::Args),
    Append(append::Args),
    Pack(pack::Args),
    Convert(convert::Args),
    Slice(slice::Args),
    Login(login::LoginArgs),
    Logout(login::LogoutArgs),
    /// Print lamina's version and the commit it was built from.
    Version {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script: bash, zsh, fish, elvish or powershell.
    ///
    /// Examples:
    ///   lamina completions bash > ~/.local/share/bash-completion/completions/lamina
    ///   lamina completions zsh > "${fpath[1]}/_lamina"
    #[command(verbatim_doc_comment)]
    Completions {
        /// The shell.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    Layers(layers::Args),
    Ls(ls::Args),
    Cat(cat::Args),
    Inspect(inspect::Args),
}

impl Cmd {
    /// The registries the command reads from and writes to, for the role options.
    fn roles(&self) -> Roles<'_> {
        let (dest, sources): (Option<&str>, Vec<&str>) = match self {
            Cmd::Affix(a) => (Some(&a.dest), vec![&a.base]),
            Cmd::Clone(a) => (Some(&a.dest), vec![&a.base]),
            Cmd::Remix(a) => (Some(&a.dest), vec![&a.base, &a.weights]),
            Cmd::Zstd(a) => (Some(&a.dest), vec![&a.image]),
            Cmd::Pack(a) => (Some(&a.dest), Vec::new()),
            Cmd::Convert(a) => (
                Some(&a.dest),
                std::iter::once(a.src.as_str())
                    .chain(a.base.as_deref())
                    .collect(),
            ),
            Cmd::Extract(a) => (Some(&a.image), vec![&a.image]),
            Cmd::Layers(a) => (Some(&a.image), vec![&a.image]),
            Cmd::Ls(a) => (Some(&a.image), vec![&a.image]),
            Cmd::Cat(a) => (Some(&a.image), vec![&a.image]),
            Cmd::Inspect(a) => (Some(&a.image), vec![&a.image]),
            Cmd::Slice(a) => return a.roles(),
            Cmd::Append(_)
            | Cmd::Login(_)
            | Cmd::Logout(_)
            | Cmd::Version { .. }
            | Cmd::Completions { .. } => (None, Vec::new()),
        };
        Roles { dest, sources }
    }
}

/// Whether the command was given `--json`, and if so whether its JSON goes to stderr (its
/// stdout carries data: `extract` to stdout, `slice save -o -`).
fn json_requested(m: &clap::ArgMatches) -> Option<bool> {
    let mut cur = m;
    let mut path = Vec::new();
    while let Some((name, sub)) = cur.subcommand() {
        path.push(name.to_string());
        cur = sub;
    }
    let on = cur
        .try_get_one::<bool>("json")
        .ok()
        .flatten()
        .copied()
        .unwrap_or(false);
    if !on {
        return None;
    }
    let data_on_stdout = match path.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["extract"] => cur
            .try_get_one::<String>("output")
            .ok()
            .flatten()
            .is_none_or(|o| o == "-"),
        ["slice", "save"] => cur
            .try_get_one::<String>("output")
            .ok()
            .flatten()
            .is_some_and(|o| o == "-"),
        _ => false,
    };
    Some(data_on_stdout)
}

/// Global options that mean nothing for commands that only touch local files.
const NETWORK_FLAGS: &[(&str, &str)] = &[
    ("token", "--token"),
    ("username", "--username"),
    ("password", "--password"),
    ("registry", "--registry"),
    ("insecure", "--insecure"),
    ("timeout", "--timeout"),
    ("connect_timeout", "--connect-timeout"),
    ("segment_size", "--segment-size"),
];

/// Refuses network options typed on the command line for `append` and `slice ls` (from the
/// environment they are simply unused: scripts export them for every command).
fn refuse_unused(m: &clap::ArgMatches) -> Result<(), String> {
    let (name, sub) = match m.subcommand() {
        Some(("append", sub)) => ("append", sub),
        Some(("slice", s)) => match s.subcommand() {
            Some(("ls", sub)) => ("slice ls", sub),
            _ => return Ok(()),
        },
        _ => return Ok(()),
    };
    for (id, flag) in NETWORK_FLAGS {
        let typed = |m: &clap::ArgMatches| {
            m.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
        };
        if typed(m) || typed(sub) {
            return Err(format!(
                "{flag} means nothing for `lamina {name}`: it reads and writes local files only"
            ));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let matches = Cli::command().get_matches();
    if let Err(e) = refuse_unused(&matches) {
        eprintln!("lamina: error: {e}");
        return ExitCode::from(2);
    }
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    store::cleanup::install();
    // --json asks for errors as JSON too; where the result goes, the error goes
    let json = json_requested(&matches);
    // a panic is a bug: said as one (exit 70), after the partial files are removed by unwinding
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        use std::io::Write as _;
        if std::env::var_os("RUST_BACKTRACE").is_some() {
            default_hook(info);
        } else {
            let _ = writeln!(std::io::stderr(), "lamina: internal error: {info}");
        }
        let _ = writeln!(std::io::stderr(), "{}", report::BUG_HINT);
    }));
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli)));
    // an error caused by Ctrl-C's cleanup is not the command's: the signal's code wins
    store::cleanup::defer_to_signal();
    let Ok(result) = ran else {
        return ExitCode::from(report::Exit::Internal as u8);
    };
    report::finish(result, json)
}

fn run(cli: Cli) -> error::Result<()> {
    let Cli { cmd, global } = cli;
    ui::progress::set_quiet(global.quiet);
    let opts = global.options(&cmd.roles(), matches!(cmd, Cmd::Login(_) | Cmd::Logout(_)))?;
    let mut ctx = match cmd {
        Cmd::Login(a) => return login::login(&opts, &global, a),
        Cmd::Logout(a) => return login::logout(a),
        Cmd::Version { json } => {
            if json {
                outln!(
                    "{}",
                    serde_json::json!({"version": env!("CARGO_PKG_VERSION"), "commit": env!("LAMINA_COMMIT")})
                )?;
            } else {
                outln!("lamina {VERSION}")?;
            }
            return Ok(());
        }
        Cmd::Completions { shell } => {
            use clap::CommandFactory as _;
            let mut cmd = Cli::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "lamina", &mut script);
            use std::io::Write as _;
            return std::io::stdout()
                .write_all(&script)
                .map_err(|e| ui::out::io(&e));
        }
        _ => Ctx::new(&global, opts)?,
    };
    let ctx = &mut ctx;
    match cmd {
        Cmd::Affix(a) => affix::run(ctx, a),
        Cmd::Clone(a) => affix::clone(ctx, a),
        Cmd::Extract(a) => extract::run(ctx, a),
        Cmd::Remix(a) => remix::run(ctx, a),
        Cmd::Zstd(a) => recompress::run(ctx, a),
        Cmd::Append(a) => append::run(ctx, a),
        Cmd::Pack(a) => pack::run(ctx, a),
        Cmd::Convert(a) => convert::run(ctx, a),
        Cmd::Slice(a) => slice::run(ctx, a),
        Cmd::Layers(a) => layers::run(ctx, a),
        Cmd::Ls(a) => ls::run(ctx, a),
        Cmd::Cat(a) => cat::run(ctx, a),
        Cmd::Inspect(a) => inspect::run(ctx, a),
        Cmd::Login(_) | Cmd::Logout(_) | Cmd::Version { .. } | Cmd::Completions { .. } => Ok(()),
    }
}
