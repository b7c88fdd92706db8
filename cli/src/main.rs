//! `lamina`: edit container images that carry ML models, directly in the registry.

#[macro_use]
mod out;

mod affix;
mod append;
mod blobs;
mod build;
mod cleanup;
mod client;
mod creds;
mod error;
mod extract;
mod flows;
mod inputs;
mod layers;
mod login;
mod modelcar;
mod progress;
mod push;
mod recompress;
mod remix;
mod resolve;
mod resume;
mod slice;
mod store;
mod tls;
mod verify;
mod zstdenc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lamina_core::auth::Secret;
use lamina_core::reference::ImageRef;

use crate::client::{Client, Options};
use crate::creds::Given;
use crate::error::WithContext as _;

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
    registry: String,
    /// Replicate/Cog token for --registry.
    #[arg(
        short = 't',
        long,
        global = true,
        env = "COG_TOKEN",
        hide_env_values = true,
        help_heading = "Global options"
    )]
    token: Option<String>,
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
    username: Option<String>,
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
    password: Option<String>,
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
    src_creds: Option<String>,
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
    dest_creds: Option<String>,
    /// Use plain HTTP for all registries.
    #[arg(long, global = true, help_heading = "Global options")]
    insecure: bool,
    /// No progress, notes or warnings (errors still print).
    #[arg(short, long, global = true, help_heading = "Global options")]
    quiet: bool,
    /// Log every request (credentials are never printed).
    #[arg(short, long, global = true, help_heading = "Global options")]
    verbose: bool,
    /// Seconds a request may go without sending or receiving a byte before it counts as failed
    /// (and is retried or resumed).
    #[arg(long, global = true, value_name = "SECS", env = "LAMINA_TIMEOUT", default_value_t = 120.0,
          value_parser = parse_secs, hide_env_values = true, help_heading = "Global options")]
    timeout: f64,
    /// Streamed uploads go as PATCHes of at most this many MiB, each confirmed by the registry:
    /// after a cut, at most one is sent again.
    #[arg(long, global = true, value_name = "MiB", env = "LAMINA_SEGMENT_SIZE", default_value_t = 128,
          value_parser = clap::value_parser!(u64).range(1..=1_048_576), hide_env_values = true, help_heading = "Global options")]
    segment_size: u64,
    /// Also trust the CA certificates in this PEM file (repeatable); the system's store,
    /// SSL_CERT_FILE and /etc/docker/certs.d/HOST/ca.crt are trusted already.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        help_heading = "Global options"
    )]
    ca_file: Vec<PathBuf>,
    /// Verify registries' TLS certificates; --tls-verify=false only for test registries.
    #[arg(long, global = true, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set, help_heading = "Global options")]
    tls_verify: bool,
    /// Verify the certificates of the registries read from (--base, --weights, a source image).
    #[arg(long, global = true, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set, help_heading = "Global options")]
    src_tls_verify: bool,
    /// Verify the destination registry's certificate.
    #[arg(long, global = true, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set, help_heading = "Global options")]
    dest_tls_verify: bool,
    /// Seconds to wait for a connection (TCP and TLS) to a registry.
    #[arg(long, global = true, value_name = "SECS", env = "LAMINA_CONNECT_TIMEOUT",
          default_value_t = 30.0, value_parser = parse_secs, hide_env_values = true, help_heading = "Global options")]
    connect_timeout: f64,
}

fn parse_secs(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number of seconds between 0 and 86400"
        )),
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Add files (or a tar) as a new layer on top of a base image and push the result.
    ///
    /// Only the new layer and the edited config and manifest are uploaded; the base layers are
    /// mounted across repositories (or found there) and never downloaded.
    ///
    /// Examples:
    ///   lamina affix --base r8.im/me/model --dest r8.im/me/model:v2 ./weights/
    ///   lamina affix --base 127.0.0.1:5000/base --dest 127.0.0.1:5000/out:v1 model.safetensors
    ///   tar -C out -c src | lamina affix --base me/base --dest me/model --tar -
    #[command(verbatim_doc_comment)]
    Affix {
        /// Base image reference.
        #[arg(short = 'b', long, value_name = "REF")]
        base: String,
        /// Destination reference (tag defaults to latest).
        #[arg(short = 'd', long, value_name = "REF")]
        dest: String,
        /// A tar (or .tar.gz / .tar.zst, passed through as is) to add as the layer; - reads stdin.
        #[arg(short = 'f', long, value_name = "FILE")]
        tar: Option<String>,
        /// Files and directories to add (a directory's contents go under --path).
        #[arg(value_name = "FILE_OR_DIR")]
        inputs: Vec<PathBuf>,
        /// Where the files land in the image [default: /src/weights, or /models with --modelcar].
        #[arg(long)]
        path: Option<String>,
        /// Make a modelcar (as `lamina append` does on a layout, olot-compatible): one layer per
        /// file or directory under /models, the model card (-m) last and gzipped, with
        /// olot's annotations. The result is OCI.
        #[arg(long)]
        modelcar: bool,
        /// The model card for --modelcar (README.md).
        #[arg(short = 'm', long, value_name = "FILE")]
        modelcard: Option<PathBuf>,
        /// With --modelcar: keep input paths relative to this directory.
        #[arg(long, value_name = "DIR")]
        root_dir: Option<PathBuf>,
        /// Layer compression: auto stores incompressible data (weights) uncompressed and gzips
        /// text [default: auto, or none with --modelcar, as olot; the card is always gzip].
        #[arg(long, value_parser = ["auto", "none", "gzip", "zstd"])]
        compression: Option<String>,
        /// Compression level (gzip 0-9, zstd 1-19).
        #[arg(long)]
        level: Option<i32>,
        /// Platform of an index to edit: os/arch[/variant], or all (default linux/amd64).
        #[arg(long)]
        platform: Option<String>,
        /// Manifest annotation key=value (repeatable; makes a Docker manifest OCI).
        #[arg(long = "annotation", value_name = "K=V")]
        annotations: Vec<String>,
        /// Config label key=value (repeatable).
        #[arg(long = "label", value_name = "K=V")]
        labels: Vec<String>,
        /// Upload in chunks of --chunk-size (one PATCH each) instead of one streamed PATCH, for
        /// registries that refuse streamed uploads. Input from stdin always goes in chunks.
        #[arg(long)]
        chunked: bool,
        /// Chunk size in MiB: the unit of buffering (memory use is about three chunks) and of
        /// chunked uploads.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
        chunk_size: u64,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Pull the weights out of an image: the files of its weights layers under src/weights
    /// (or under /models for a modelcar).
    ///
    /// Weights layers are found as r8im does (history `... # weights`, else `COPY . /src`); all
    /// of them are applied in order with whiteouts, so later layers win. A modelcar (made by olot,
    /// `lamina append` or `affix --modelcar`) gives the files under /models. Symlinks and hard
    /// links are kept; nothing is ever written outside the output.
    ///
    /// Examples:
    ///   lamina extract r8.im/me/model -o weights/          (a directory)
    ///   lamina extract r8.im/me/model -o weights.tar       (a tar file)
    ///   lamina extract r8.im/me/model | tar -t             (a tar on stdout)
    ///   lamina extract 127.0.0.1:5000/modelcar --path /models -o models/
    #[command(verbatim_doc_comment)]
    Extract {
        /// Image reference.
        #[arg(value_name = "REF")]
        image: String,
        /// Output: a directory (existing, or ending in /) or a tar file; stdout when absent.
        #[arg(short, long, value_name = "FILE|DIR")]
        output: Option<String>,
        /// Sub-tree of the image to extract instead of src/weights (or /models).
        #[arg(long, value_name = "DIR")]
        path: Option<String>,
        /// Extract the whole flattened filesystem of all layers.
        #[arg(long)]
        all: bool,
        /// Platform of an index: os/arch[/variant] (default linux/amd64).
        #[arg(long)]
        platform: Option<String>,
        /// Print a JSON summary (on stderr when the tar goes to stdout).
        #[arg(long)]
        json: bool,
    },
    /// Put the weights layers of one image on top of another, without downloading a layer.
    ///
    /// Layers are mounted across repositories, or streamed registry to registry. The new history
    /// entries keep the `# weights` mark, the diff_ids come from the weights image's config.
    ///
    /// Example:
    ///   lamina remix --base r8.im/me/base --weights r8.im/me/model:v1 --dest r8.im/me/model:v2
    #[command(verbatim_doc_comment)]
    Remix {
        /// The image to add the weights to.
        #[arg(short = 'b', long, value_name = "REF")]
        base: String,
        /// The image to take the weights layers from.
        #[arg(short = 'w', long, value_name = "REF")]
        weights: String,
        /// Destination.
        #[arg(short = 'd', long, value_name = "REF")]
        dest: String,
        /// Take this layer of the weights image (by index, see `lamina layers`; repeatable)
        /// instead of its weights layers.
        #[arg(long = "layer", value_name = "N")]
        layers: Vec<usize>,
        /// Platform: os/arch[/variant], or all for every platform of the base (default linux/amd64).
        #[arg(long)]
        platform: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Copy an image to a new reference, as r8im's clone: its config gets the label
    /// cloned=true (so the copy has a digest of its own); layers are mounted or streamed
    /// registry to registry, never downloaded.
    ///
    /// Example:
    ///   lamina clone -b r8.im/me/model@sha256:... -d r8.im/me/model-copy
    #[command(verbatim_doc_comment)]
    Clone {
        /// The image to copy.
        #[arg(short = 'b', long, value_name = "REF")]
        base: String,
        /// Destination.
        #[arg(short = 'd', long, value_name = "REF")]
        dest: String,
        /// Platform: os/arch[/variant], or all (default linux/amd64).
        #[arg(long)]
        platform: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Recompress every layer of an image to zstd, registry to registry.
    ///
    /// Layers are processed in parallel, each in one streaming pass. A layer that zstd does not
    /// shrink below --min-ratio of its uncompressed size is stored uncompressed; layers already
    /// zstd are kept. The result is an OCI manifest (Docker v2 images are converted); config,
    /// history and diff_ids are unchanged.
    ///
    /// Example:
    ///   lamina zstd r8.im/me/model:v1 r8.im/me/model:v1-zstd --level 9
    #[command(verbatim_doc_comment)]
    Zstd {
        /// Source image.
        #[arg(value_name = "REF")]
        image: String,
        /// Destination.
        #[arg(value_name = "DEST")]
        dest: String,
        /// zstd level.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
        level: i32,
        /// Platform: os/arch[/variant] or all (default linux/amd64).
        #[arg(long)]
        platform: Option<String>,
        /// Store a layer uncompressed unless zstd makes it smaller than this fraction. (r8im's
        /// NO_COMPRESSION=1 stores every layer uncompressed.)
        #[arg(long, default_value_t = 0.9)]
        min_ratio: f64,
        /// Layers recompressed at once (default: one per core).
        #[arg(short, long)]
        jobs: Option<usize>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Append model files to an OCI image layout as modelcar layers (olot-compatible).
    ///
    /// One layer per file or directory, under /models, uncompressed; the model card (-m) is the
    /// last layer, gzipped, marked io.opendatahub.modelcar.layer.type=modelcard, and the
    /// manifest's io.opendatahub.layers.modelcard points at it. Every image manifest of the
    /// layout (through nested indexes) gets the layers; Docker-format manifests become OCI;
    /// artifacts, attestations and manifests absent from a sparse layout are left alone.
    ///
    /// Layers are deterministic (mtime SOURCE_DATE_EPOCH or 0, owner 0:0), so running again
    /// on the same files adds nothing. A symlink (a Hugging Face cache snapshot) is stored as
    /// the file it points to, under its own name. The layout is edited atomically: new blobs
    /// first, index.json replaced last.
    ///
    /// Examples:
    ///   skopeo copy docker://quay.io/me/base oci:layout:latest
    ///   lamina append layout model.safetensors config.json -m README.md
    ///   lamina append layout ~/.cache/huggingface/hub/models--x--y/snapshots/abc/ --modelpack
    ///   lamina append oci:layout:v1 --root-dir model model/onnx/model.onnx
    #[command(verbatim_doc_comment)]
    Append {
        /// The OCI image layout directory (or oci:DIR:TAG to edit only that image).
        #[arg(value_name = "LAYOUT")]
        layout: String,
        /// Model files and directories, one layer each.
        #[arg(value_name = "FILE_OR_DIR")]
        files: Vec<PathBuf>,
        /// The model card (README.md), added as the last layer.
        #[arg(short = 'm', long, value_name = "FILE")]
        modelcard: Option<PathBuf>,
        /// Keep each input's path relative to this directory (default: just its name).
        #[arg(long, value_name = "DIR")]
        root_dir: Option<PathBuf>,
        /// Where the files go in the image.
        #[arg(long, default_value = "/models")]
        path: String,
        /// Delete the inputs after the layout is written: default (model files) or all (also
        /// the model card). A symlink given is removed, never what it points to. (olot's -r:
        /// here -r is r8im's --registry.)
        #[arg(long, value_name = "WHICH", num_args = 0..=1,
              default_missing_value = "default", value_parser = ["default", "all"],
              require_equals = true)]
        remove_originals: Option<String>,
        /// Also write a CNCF ModelPack manifest over the same blobs into index.json.
        #[arg(long)]
        modelpack: bool,
        /// The ref.name of the ModelPack manifest in index.json.
        #[arg(long, default_value = "modelpack", value_name = "TAG")]
        modelpack_tag: String,
        /// Compression of the model file layers (the card is always gzip).
        #[arg(long, default_value = "none", value_parser = ["auto", "none", "gzip", "zstd"])]
        compression: String,
        /// Compression level (gzip 0-9, zstd 1-19).
        #[arg(long)]
        level: Option<i32>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delta archives for offline sites: only the blobs above shared base images.
    ///
    /// `save` writes an OCI layout tar (skopeo and oras read it) holding the image's manifests,
    /// config and only the blobs no base image has, plus lamina-slice.json listing what was left
    /// out. `load` checks that the destination has every blob left out and stops before writing
    /// anything if not, then uploads the blobs (digests verified as they stream) and the
    /// manifests; the image keeps its digest.
    ///
    /// Examples:
    ///   lamina slice save r8.im/me/model:v2 --base r8.im/me/base -o model-v2.slice.tar
    ///   lamina slice save me/model --base nvidia/cuda:12 --base me/torch -o - | ssh site lamina slice load - --dest reg.local/me/model
    ///   lamina slice ls model-v2.slice.tar
    ///   lamina slice load model-v2.slice.tar --dest 10.0.0.5:5000/me/model:v2 --from me/base
    #[command(verbatim_doc_comment)]
    Slice {
        #[command(subcommand)]
        cmd: SliceCmd,
    },
    /// Log in to a registry: check the credentials with it, then keep them in Docker's
    /// config.json ($DOCKER_CONFIG/config.json or ~/.docker/config.json, mode 0600; or the
    /// credential helper it names), where lamina, docker, crane, regctl and skopeo find them.
    ///
    /// Examples:
    ///   echo "$TOKEN" | lamina login ghcr.io -u me --password-stdin
    ///   lamina login 127.0.0.1:5000 -u testuser --password-stdin < pass.txt
    #[command(verbatim_doc_comment)]
    Login {
        /// Registry host (ghcr.io, docker.io, 127.0.0.1:5000).
        #[arg(value_name = "REGISTRY")]
        registry: String,
        /// Read the password from stdin (up to its end; a final newline is dropped).
        #[arg(long)]
        password_stdin: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a registry's credentials from Docker's config.json (or its credential helper).
    Logout {
        /// Registry host.
        #[arg(value_name = "REGISTRY")]
        registry: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
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
    /// List the layers of an image (and the platforms of an index).
    Layers {
        /// Image reference.
        #[arg(value_name = "REF")]
        image: String,
        /// Platform of an index to show: os/arch[/variant] or all (default linux/amd64).
        #[arg(long)]
        platform: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum SliceCmd {
    /// Write a delta archive of IMAGE against one or more base images.
    Save {
        /// The image to ship.
        #[arg(value_name = "IMAGE")]
        image: String,
        /// A base image the offline site already has (repeatable).
        #[arg(long = "base", value_name = "REF", required = true)]
        bases: Vec<String>,
        /// The archive to write (- for stdout).
        #[arg(short, long, value_name = "FILE")]
        output: String,
        /// One platform of an index (os/arch[/variant]), or all [default: all].
        #[arg(long)]
        platform: Option<String>,
        /// Print a JSON summary (on stderr with -o -, whose stdout is the archive).
        #[arg(long)]
        json: bool,
    },
    /// Load a delta archive into a registry or a layout whose base blobs are there.
    Load {
        /// The archive (- for stdin).
        #[arg(value_name = "FILE")]
        input: String,
        /// Where to put the image (a registry reference or oci:DIR[:TAG]).
        #[arg(long, value_name = "REF")]
        dest: String,
        /// A repository of the destination registry holding the base blobs, to mount them from
        /// (`me/base`, or a reference there such as `HOST/mirror/base:stable`). Without it, each
        /// base's own repository path is tried.
        #[arg(long, value_name = "REPO|REF")]
        from: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show what an archive holds and what it needs.
    Ls {
        /// The archive (- for stdin).
        #[arg(value_name = "FILE")]
        input: String,
        /// Print the metadata as JSON.
        #[arg(long)]
        json: bool,
    },
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

fn kv(list: &[String], what: &str) -> Result<Vec<(String, String)>, String> {
    list.iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(format!("--{what} {s:?}: expected key=value")),
        })
        .collect()
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
        ["extract"] => cur.try_get_one::<String>("output").ok().flatten().is_none(),
        ["slice", "save"] => cur
            .try_get_one::<String>("output")
            .ok()
            .flatten()
            .is_some_and(|o| o == "-"),
        _ => false,
    };
    Some(data_on_stdout)
}

/// The exit status of a command that failed (README, "Exit codes"); 0 is success, and so is a
/// closed stdout ([`out::Closed`]: `lamina layers | head -1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// Something failed while running (the registry, the network, a file, a digest).
    Failed = 1,
    /// Arguments that cannot work: bad flags, a malformed reference.
    Usage = 2,
    /// A bug in lamina (`EX_SOFTWARE` of sysexits.h): the core misused
    /// ([`lamina_core::Error::Internal`] anywhere in the cause chain), or a panic.
    Internal = 70,
}

impl Exit {
    fn of(e: &error::Error) -> Exit {
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
fn chain<'a>(e: &'a error::Error) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    let top: &(dyn std::error::Error + 'static) = &**e;
    std::iter::successors(Some(top), |c| c.source())
}

/// What follows the message of a bug.
const BUG_HINT: &str = "note: this is a bug in lamina; please report it with the command that \
                        triggered it and this message";

/// The error as JSON: `message` (the whole chain, as printed), `kind`, `exitCode`, and the
/// fields of lamina's error that scripts act on (`status`, `url`, `registry`, `host`,
/// `expected`/`found` digests).
fn error_json(e: &error::Error, msg: &str, exit: Exit) -> serde_json::Value {
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
    cleanup::install();
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
        let _ = writeln!(std::io::stderr(), "{BUG_HINT}");
    }));
    let Ok(result) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli))) else {
        return ExitCode::from(Exit::Internal as u8);
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // the reader of stdout went away (`| head`): it had what it wanted
        Err(e) if chain(&e).any(|c| c.is::<out::Closed>()) => ExitCode::SUCCESS,
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

fn run(cli: Cli) -> error::Result<()> {
    progress::set_quiet(cli.quiet);
    let image_ref = |s: &str| ImageRef::parse(s, &cli.registry);
    // references as given for each role, checked before anything is sent; errors name the role
    let role_ref = |role: &str, s: &str| -> error::Result<ImageRef> {
        image_ref(s).map_err(|e| {
            Box::new(lamina_core::Error::Usage {
                reason: format!("{role}: {e}"),
            }) as error::Error
        })
    };
    let parse_as = |role: &str, s: &str| -> error::Result<store::Loc> {
        store::Loc::source(role_ref(role, s)?).context(|| format!("{role} {s}"))
    };
    let parse_dest_as = |role: &str, s: &str| -> error::Result<store::Loc> {
        let r = role_ref(role, s)?;
        if let ImageRef::Registry(r) = &r {
            if let Some(d) = &r.digest {
                return Err(Box::new(lamina_core::Error::Usage {
                    reason: format!(
                        "{role} {s}: a destination is a repository with an optional tag, not a \
                         digest ({d}): the new image's digest is known only once it is made; \
                         give {}:TAG",
                        r.name()
                    ),
                }));
            }
        }
        store::Loc::dest(r).context(|| format!("{role} {s}"))
    };
    let parse = |s: &str| parse_as("image", s);
    let parse_dest = |s: &str| parse_dest_as("--dest", s);
    let mut given = Given::default();
    if let Some(t) = cli.token.as_ref().filter(|t| !t.is_empty()) {
        given.token = Some((Secret::new(t.clone()), cli.registry.clone()));
    }
    // the registry a reference names (a malformed one is reported with its role later)
    let registry_of = |s: &str| -> error::Result<Option<String>> {
        Ok(match image_ref(s) {
            Ok(ImageRef::Registry(r)) => Some(r.registry),
            _ => None,
        })
    };
    let usage = |reason: String| -> error::Error { Box::new(lamina_core::Error::Usage { reason }) };
    let dest_registry = match &cli.cmd {
        Cmd::Affix { dest, .. } | Cmd::Clone { dest, .. } => registry_of(dest)?,
        Cmd::Layers { image, .. } | Cmd::Extract { image, .. } => registry_of(image)?,
        Cmd::Remix { dest, .. } | Cmd::Zstd { dest, .. } => registry_of(dest)?,
        Cmd::Append { .. }
        | Cmd::Login { .. }
        | Cmd::Logout { .. }
        | Cmd::Version { .. }
        | Cmd::Completions { .. } => None,
        Cmd::Slice {
            cmd: SliceCmd::Save { image, .. },
        } => registry_of(image)?,
        Cmd::Slice {
            cmd: SliceCmd::Load { dest, .. },
        } => registry_of(dest)?,
        Cmd::Slice { .. } => None,
    };
    // the registries read from, for --src-creds
    let mut sources: Vec<String> = Vec::new();
    let mut src = |s: &str| -> error::Result<()> {
        if let Some(r) = registry_of(s)? {
            if !sources.contains(&r) {
                sources.push(r);
            }
        }
        Ok(())
    };
    match &cli.cmd {
        Cmd::Affix { base, .. } | Cmd::Clone { base, .. } => src(base)?,
        Cmd::Remix { base, weights, .. } => {
            src(base)?;
            src(weights)?;
        }
        Cmd::Zstd { image, .. } => src(image)?,
        Cmd::Layers { image, .. } | Cmd::Extract { image, .. } => src(image)?,
        Cmd::Slice {
            cmd: SliceCmd::Save { image, bases, .. },
        } => {
            src(image)?;
            for b in bases {
                src(b)?;
            }
        }
        _ => {}
    }
    let is_login = matches!(cli.cmd, Cmd::Login { .. } | Cmd::Logout { .. });
    let dest_creds = match (&cli.dest_creds, &cli.username, &cli.password) {
        _ if is_login => None,
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(usage(
                "give --dest-creds or --username/--password, not both".into(),
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
        _ => return Err(usage("give both --username and --password".into())),
    };
    if let (Some(((u, p), from)), Some(reg)) = (dest_creds, &dest_registry) {
        given.basic.push(creds::RoleCreds {
            registry: reg.clone(),
            username: u,
            password: p,
            from,
        });
    }
    if let Some(sc) = &cli.src_creds {
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
    let opts = Options {
        insecure: cli.insecure,
        verbose: cli.verbose,
        given,
        timeouts: client::Timeouts {
            connect: std::time::Duration::from_secs_f64(cli.connect_timeout),
            idle: std::time::Duration::from_secs_f64(cli.timeout),
        },
        segment: cli.segment_size << 20,
        tls: tls::TlsConfig {
            no_verify_all: !cli.tls_verify,
            no_verify: {
                let mut v = Vec::new();
                if !cli.src_tls_verify {
                    v.extend(sources.iter().map(|r| api_host(r)));
                }
                if !cli.dest_tls_verify {
                    v.extend(dest_registry.iter().map(|r| api_host(r)));
                }
                v
            },
            ..Default::default()
        }
        .with_ca_files(&cli.ca_file)
        .map_err(usage)?,
    };
    match &cli.cmd {
        Cmd::Login {
            registry,
            password_stdin,
            json,
        } => {
            return login::login(
                &opts,
                login::Args {
                    registry: registry.clone(),
                    username: cli.username.clone(),
                    password: cli.password.clone(),
                    password_stdin: *password_stdin,
                    json: *json,
                },
            )
        }
        Cmd::Logout { registry, json } => return login::logout(registry, *json),
        Cmd::Version { json } => {
            if *json {
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
            clap_complete::generate(*shell, &mut cmd, "lamina", &mut script);
            use std::io::Write as _;
            return std::io::stdout()
                .write_all(&script)
                .map_err(|e| out::io(&e));
        }
        _ => {}
    }
    let mut client = Client::new(opts.clone())?;
    match cli.cmd {
        Cmd::Login { .. } | Cmd::Logout { .. } | Cmd::Version { .. } | Cmd::Completions { .. } => {
            Ok(())
        }
        Cmd::Affix {
            base,
            dest,
            tar,
            inputs,
            path,
            modelcar,
            modelcard,
            root_dir,
            compression,
            level,
            platform,
            annotations,
            labels,
            chunk_size,
            chunked,
            json,
        } => {
            let a = affix::Args {
                base: parse_as("--base", &base)?,
                dest: parse_dest(&dest)?,
                tar,
                inputs,
                path,
                modelcar,
                modelcard,
                root_dir,
                compression,
                level,
                platform,
                annotations: kv(&annotations, "annotation")
                    .map_err(|r| lamina_core::Error::Usage { reason: r })?,
                labels: kv(&labels, "label")
                    .map_err(|r| lamina_core::Error::Usage { reason: r })?,
                chunk_size: chunk_size << 20,
                chunked,
                json,
                quiet: cli.quiet,
            };
            affix::run(&mut client, a)
        }
        Cmd::Append {
            layout,
            files,
            modelcard,
            root_dir,
            path,
            remove_originals,
            modelpack,
            modelpack_tag,
            compression,
            level,
            json,
        } => append::run(
            &mut client,
            append::Args {
                layout,
                files,
                modelcard,
                root_dir,
                path,
                remove_originals,
                modelpack,
                modelpack_tag,
                compression,
                level,
                json,
                quiet: cli.quiet,
            },
        ),
        Cmd::Slice { cmd } => match cmd {
            SliceCmd::Save {
                image,
                bases,
                output,
                platform,
                json,
            } => {
                let mut opened = Vec::new();
                for b in bases {
                    let loc = parse_as("--base", &b)?;
                    opened.push((b, loc));
                }
                slice::save(
                    &mut client,
                    slice::SaveArgs {
                        image: parse(&image)?,
                        image_text: image,
                        bases: opened,
                        output,
                        platform,
                        json,
                        quiet: cli.quiet,
                    },
                )
            }
            SliceCmd::Load {
                input,
                dest,
                from,
                json,
            } => slice::load(
                &mut client,
                slice::LoadArgs {
                    input,
                    dest: parse_dest(&dest)?,
                    from,
                    json,
                    quiet: cli.quiet,
                },
            ),
            SliceCmd::Ls { input, json } => slice::ls(&input, json),
        },
        Cmd::Layers {
            image,
            platform,
            json,
        } => layers::run(&mut client, &parse(&image)?, platform.as_deref(), json),
        Cmd::Remix {
            base,
            weights,
            dest,
            layers,
            platform,
            json,
        } => remix::run(
            &mut client,
            remix::Args {
                base: parse_as("--base", &base)?,
                weights: parse_as("--weights", &weights)?,
                dest: parse_dest(&dest)?,
                layers,
                platform,
                json,
                quiet: cli.quiet,
            },
        ),
        Cmd::Clone {
            base,
            dest,
            platform,
            json,
        } => affix::clone(
            &mut client,
            parse_as("--base", &base)?,
            parse_dest(&dest)?,
            platform,
            json,
            cli.quiet,
        ),
        Cmd::Zstd {
            image,
            dest,
            level,
            platform,
            min_ratio,
            jobs,
            json,
        } => recompress::run(
            &mut client,
            &opts,
            recompress::Args {
                image: parse(&image)?,
                dest: parse_dest_as("DEST", &dest)?,
                level,
                platform,
                // r8im's switch: every layer uncompressed
                min_ratio: if std::env::var_os("NO_COMPRESSION").is_some_and(|v| !v.is_empty()) {
                    0.0
                } else {
                    min_ratio
                },
                jobs: jobs.unwrap_or_else(|| {
                    std::thread::available_parallelism()
                        .map(|n| n.get())
                        .unwrap_or(2)
                }),
                json,
                quiet: cli.quiet,
            },
        ),
        Cmd::Extract {
            image,
            output,
            path,
            all,
            platform,
            json,
        } => extract::run(
            &mut client,
            extract::Args {
                image: parse(&image)?,
                output,
                path,
                all,
                platform,
                json,
                quiet: cli.quiet,
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(e: lamina_core::Error) -> error::Error {
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
