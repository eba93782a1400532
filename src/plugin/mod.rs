//! The kubectl plugin, `kubectl-kubundle` (src/bin/kubectl-kubundle.rs): copied onto PATH, it is
//! `kubectl kubundle ...`.
//!
//! - `status NAME`: the AppBundle, its children and its pods as a tree, each with its state and,
//!   when it is not ready, why ([`show_status`]).
//! - `history NAME [--revision N]`: the recorded revisions, or one revision's spec ([`show_history`]).
//! - `rollback NAME [--to-revision N]`: writes a recorded spec back into the AppBundle
//!   ([`rollback`]).
//! - `promote NAME [--full]`, `abort NAME`, `retry NAME`: a request to the AppBundle's canary
//!   ([`canary`]).
//!
//! Every command takes `-n/--namespace`, `--context`, `--kubeconfig`, `--as`, `--as-group` as kubectl does, and
//! `-o json` for scripts. Text output fits the terminal (long lines are cut on a terminal,
//! never when piped).

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

pub mod canary;
pub mod rollback;
pub mod show_history;
pub mod show_status;

/// The field manager of the plugin's writes.
pub const FIELD_MANAGER: &str = "kubectl-kubundle";

#[derive(Parser, Debug)]
#[command(
    name = "kubectl kubundle",
    bin_name = "kubectl kubundle",
    version,
    about = "Inspect AppBundles: their tree of children and pods, their rollout history; roll back; promote, abort or retry a canary"
)]
pub struct Cli {
    /// Namespace of the AppBundle (default: the kubeconfig context's, else "default").
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Path of the kubeconfig file (default: KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Username to impersonate for the operation (as kubectl's --as).
    #[arg(long = "as", global = true, value_name = "USER")]
    pub as_user: Option<String>,
    /// Group to impersonate (as kubectl's --as-group; repeat for several).
    #[arg(long = "as-group", global = true, value_name = "GROUP")]
    pub as_group: Vec<String>,
    /// Output format: text (default) or json.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The AppBundle, its children and its pods as a tree, with why whatever is not ready is not.
    Status {
        /// Name of the AppBundle.
        name: String,
    },
    /// The AppBundle's recorded revisions (each spec it fully rolled out), or one revision's spec.
    History {
        /// Name of the AppBundle.
        name: String,
        /// Show the spec recorded as this revision.
        #[arg(long)]
        revision: Option<i64>,
    },
    /// Write a recorded spec back into the AppBundle (the replicas stay as they are); kubundle then
    /// rolls it out. Refused for an AppBundle a GitOps tool manages, unless --force.
    Rollback {
        /// Name of the AppBundle.
        name: String,
        /// The revision to roll back to (default: the one before the current revision).
        #[arg(long)]
        to_revision: Option<i64>,
        /// Roll back even though a GitOps tool manages the AppBundle (it will revert this at its
        /// next sync).
        #[arg(long)]
        force: bool,
        /// Say what would be written, and write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Let the canary go on past the step it waits at (a step without a pause, or one whose
    /// pause is not over), or with --full promote it now. A request, not a spec change: allowed
    /// under GitOps.
    Promote {
        /// Name of the AppBundle.
        name: String,
        /// Skip every step left: the stable Deployment takes the canary's version now.
        #[arg(long)]
        full: bool,
    },
    /// Abort the canary: its share of the requests goes back to 0 at once, then its pods go; the
    /// AppBundle is Stalled (RolloutAborted) until its spec changes or `retry`.
    Abort {
        /// Name of the AppBundle.
        name: String,
    },
    /// Start an aborted canary again from its first step.
    Retry {
        /// Name of the AppBundle.
        name: String,
    },
}

/// A failure of a command, said to the user (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("{0}")]
    User(String),
    #[error("{}", server_words(.0))]
    Kube(#[from] kube::Error),
}

/// A request's failure as kubectl says it: `Error from server (Forbidden): <the server's
/// message>`.
fn server_words(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if !s.message.is_empty() => {
            let reason = if s.reason.is_empty() {
                s.code.to_string()
            } else {
                s.reason.clone()
            };
            format!("Error from server ({reason}): {}", s.message)
        }
        other => other.to_string(),
    }
}

impl PluginError {
    /// A not-found AppBundle, said as kubectl says it.
    pub fn not_found(name: &str, ns: &str) -> Self {
        PluginError::User(format!(
            "appbundles.kubundle.dev \"{name}\" not found in namespace \"{ns}\""
        ))
    }
}

/// The client and namespace the flags (and the kubeconfig) name.
async fn connect(cli: &Cli) -> Result<(Client, String), PluginError> {
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
                PluginError::User(format!(
                    "cannot read the kubeconfig {}: {e}",
                    path.display()
                ))
            })?;
            Config::from_custom_kubeconfig(kubeconfig, &options).await
        }
        None => Config::from_kubeconfig(&options).await,
    };
    let mut config = match config {
        Ok(config) => config,
        // In a pod (no kubeconfig), its service account.
        Err(e) if cli.context.is_none() => Config::incluster()
            .map_err(|_| PluginError::User(format!("cannot load a kubeconfig: {e}")))?,
        Err(e) => return Err(PluginError::User(format!("cannot load a kubeconfig: {e}"))),
    };
    if cli.as_user.is_some() {
        config.auth_info.impersonate = cli.as_user.clone();
    }
    if !cli.as_group.is_empty() {
        if cli.as_user.is_none() {
            return Err(PluginError::User(
                "--as-group needs --as: a user to impersonate (as in kubectl)".into(),
            ));
        }
        config.auth_info.impersonate_groups = Some(cli.as_group.clone());
    }
    let ns = cli
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config)
        .map_err(|e| PluginError::User(format!("cannot make a client: {e}")))?;
    Ok((client, ns))
}

/// Runs the command line; returns what to print.
pub async fn run(cli: Cli) -> Result<String, PluginError> {
    let (client, ns) = connect(&cli).await?;
    let json = cli.output == Output::Json;
    match &cli.command {
        Command::Status { name } => {
            let tree = show_status::gather(&client, &ns, name).await?;
            Ok(if json {
                to_json(&tree)
            } else {
                show_status::render(&tree)
            })
        }
        Command::History { name, revision } => {
            show_history::history(&client, &ns, name, *revision, json).await
        }
        Command::Rollback {
            name,
            to_revision,
            force,
            dry_run,
        } => rollback::rollback(&client, &ns, name, *to_revision, *force, *dry_run, json).await,
        Command::Promote { name, full } => {
            let ask = if *full {
                canary::Ask::PromoteFull
            } else {
                canary::Ask::Promote
            };
            canary::ask(&client, &ns, name, ask).await
        }
        Command::Abort { name } => canary::ask(&client, &ns, name, canary::Ask::Abort).await,
        Command::Retry { name } => canary::ask(&client, &ns, name, canary::Ask::Retry).await,
    }
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
}

/// Columns of the terminal stdout is, if it is one.
fn terminal_width() -> Option<usize> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    if let Some(cols) = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()) {
        return Some(cols);
    }
    // SAFETY: TIOCGWINSZ writes a winsize into the struct given; stdout is a terminal.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

/// `text` with every line cut to `width` characters (marked with '…').
pub fn fit(text: &str, width: Option<usize>) -> String {
    let Some(width) = width.filter(|w| *w > 1) else {
        return text.to_string();
    };
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line.chars().count() > width {
            out.extend(line.chars().take(width - 1));
            out.push('…');
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// The plugin's `main`: parses the command line, runs it, prints, and exits 1 on failure.
pub fn main() {
    let cli = Cli::parse();
    let json = cli.output == Output::Json;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(out) => {
            let out = if json {
                out
            } else {
                fit(&out, terminal_width())
            };
            print!("{out}");
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_only_for_a_terminal() {
        let text = "short\na line that is far too long\n";
        assert_eq!(fit(text, None), text);
        assert_eq!(fit(text, Some(10)), "short\na line th…\n");
    }

    #[test]
    fn the_command_line_reads_as_kubectl_flags() {
        let cli = Cli::try_parse_from([
            "kubectl-kubundle",
            "rollback",
            "web",
            "-n",
            "shop",
            "--to-revision",
            "2",
            "-o",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.namespace.as_deref(), Some("shop"));
        assert_eq!(cli.output, Output::Json);
        assert!(matches!(
            cli.command,
            Command::Rollback {
                to_revision: Some(2),
                force: false,
                ..
            }
        ));
    }
}
