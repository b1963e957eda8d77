//! The `modeld` binary: the daemon, its internal worker, and the operator commands.
//!
//! This file defines the command line and dispatches it; the subcommands' bodies are in
//! [`commands`], a file per group.

mod commands;

use clap::{Parser, Subcommand};
use commands::admin::{Output, Target, with_socket};
use commands::{check, daemon, render, token};
use modeld::admin::{Request, cli};
use modeld::config::{self, Overrides};
use std::path::PathBuf;
use std::process::ExitCode;

const DEFAULT_CONFIG: &str = config::DEFAULT_PATH;

/// The system allocator, made to exit with a recognisable status when a memory-limited
/// worker's allocation fails (see `modeld::worker::memory`).
#[global_allocator]
static ALLOCATOR: modeld::worker::memory::OomExit = modeld::worker::memory::OomExit;

#[derive(Parser)]
#[command(name = "modeld", version, about = "Serve ONNX models from supervised workers, with safe rollouts")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Serve {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Address to listen on, overriding server.listen (port 0 picks a free port).
        #[arg(long)]
        listen: Option<String>,
        /// Run directory (sockets), overriding server.run_dir.
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// State directory, overriding server.state_dir.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Show models, versions, roles, weights, states, health and rollouts in progress.
    Status {
        #[command(flatten)]
        target: Target,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Keep showing it, once a second: redrawn in place on a terminal, printed again
        /// when it changes otherwise. Stops with Ctrl-C, or when the daemon goes away.
        #[arg(long)]
        watch: bool,
    },
    /// Roll a model out to a version, following it live. Exit status: 0 promoted (or an
    /// A/B test awaiting its decision), 3 reverted, 4 failed, 1 not started.
    Deploy {
        model: String,
        #[arg(long)]
        version: u64,
        /// Overrides the model's [model.deploy] strategy for this rollout.
        #[arg(long)]
        strategy: Option<String>,
        /// Return once the rollout started instead of following it.
        #[arg(long)]
        no_follow: bool,
        /// Let a version whose inputs or outputs differ from the live version's take
        /// traffic (otherwise it is refused before any request; `plan` shows the difference).
        #[arg(long)]
        allow_signature_change: bool,
        /// The new version is meant to answer differently (a retrain that changes
        /// behaviour): its output drift is reported but does not revert it. With a value,
        /// the largest PSI allowed for this rollout instead of max_output_drift.
        #[arg(long, value_name = "PSI", num_args = 0..=1, default_missing_value = "0")]
        expect_drift: Option<f64>,
        #[command(flatten)]
        target: Target,
    },
    /// Back to the old version at once: a running rollout reverts; after a promotion the
    /// previous version returns (from its warm pool while kept, else started anew).
    Rollback {
        model: String,
        #[command(flatten)]
        target: Target,
    },
    /// Make the rollout's candidate stable now, skipping remaining steps (A/B: --version
    /// names the winner).
    Promote {
        model: String,
        #[arg(long)]
        version: Option<u64>,
        #[command(flatten)]
        target: Target,
    },
    /// Hold the rollout at its current step (the health gate keeps watching).
    Pause {
        model: String,
        #[command(flatten)]
        target: Target,
    },
    /// Continue a paused rollout.
    Resume {
        model: String,
        #[command(flatten)]
        target: Target,
    },
    /// Show the phases a rollout would take, with their durations, doing nothing.
    Plan {
        model: String,
        #[arg(long)]
        version: u64,
        #[arg(long)]
        strategy: Option<String>,
        #[command(flatten)]
        target: Target,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// A rollout's report, or with --out its whole evidence package (deployment report,
    /// validation results, rollback plan and script, health checks, alert rules, scrape
    /// config, serving config, and with --k8s the manifests).
    Report(modeld::report::cli::Args),
    /// Show past and running rollouts: phases, verdicts, reasons, timestamps.
    History {
        model: Option<String>,
        #[command(flatten)]
        target: Target,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Re-read the config and apply it; answers once applied or refused, naming the
    /// rollouts it started (they go on; `status` follows them).
    Reload {
        #[command(flatten)]
        target: Target,
    },
    /// Hand the running daemon over to a new modeld binary (after a package upgrade) with
    /// no connection refused: the new one checks the config, loads every live model on its
    /// own workers, then takes over while the old one finishes its requests and exits. If it
    /// refuses the config or fails to start, the running daemon keeps serving (exit 1).
    /// Rollouts in progress are rolled back first.
    Upgrade {
        /// The new binary (default: the path the running daemon was started from).
        #[arg(long)]
        binary: Option<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// Prometheus alerting rules from the config's health thresholds.
    Alerts {
        #[command(subcommand)]
        command: AlertsCommand,
    },
    /// Bearer tokens for the HTTP API ([auth]).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Probe the daemon as a kubelet's exec probe does, with a token from a file (for
    /// `open_probes = false`). Exit 0 on 200.
    Probe(commands::probe::Probe),
    /// Kubernetes manifests from the config.
    K8s {
        #[command(subcommand)]
        command: K8sCommand,
    },
    /// Internal: one model version's worker process, started by `serve`.
    #[command(hide = true)]
    Worker(modeld::worker::WorkerArgs),
    /// Internal: loads a version directory and writes its signature as a wire frame.
    #[command(hide = true)]
    Describe {
        #[arg(long)]
        dir: PathBuf,
        /// The user to become before reading the model (as a worker would).
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        engine: modeld::worker::EngineArgs,
    },
}

#[derive(Subcommand)]
enum AlertsCommand {
    /// Write the rules (YAML) to stdout or a file.
    Render {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The Prometheus job that scrapes modeld (for the daemon-down rule).
        #[arg(long, default_value = "modeld")]
        job: String,
        /// Write here instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a token: prints it once, and the [[auth.token]] table (its hash) to paste.
    New {
        /// The token's name, as it appears in the log and in 403 answers.
        name: String,
        /// The models it may use (comma-separated), or "*" for all.
        #[arg(long, value_delimiter = ',', required = true)]
        models: Vec<String>,
        /// What it may do: infer, metadata, probes (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "infer,metadata")]
        scopes: Vec<String>,
    },
}

#[derive(Subcommand)]
enum K8sCommand {
    /// Render the cluster's objects (one file each, or one YAML stream) and a runbook.
    Render(render::K8sRender),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a config file and print every problem with its key and line.
    Check {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let command = Cli::parse().command;
    if !matches!(command, Command::Serve { .. } | Command::Worker(_)) {
        // The operator commands write to a terminal or a pipe: a reader that goes away
        // (`| head`) ends them quietly, as it ends other Unix tools, instead of a panic on
        // the failed write. The daemon and its workers keep ignoring SIGPIPE (Rust's
        // default): a client gone is an error on its socket, never the process's end.
        // SAFETY: no other thread runs yet, and SIG_DFL is a valid disposition.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match command {
        Command::Serve { config, listen, run_dir, state_dir } => {
            daemon::serve(config, Overrides { listen, run_dir, state_dir })
        }
        Command::Config { command: ConfigCommand::Check { config } } => check::check(&config),
        Command::Status { target, output, watch: false } => with_socket(&target, |s| cli::status(s, output.json())),
        Command::Status { target, output, watch: true } => {
            with_socket(&target, |s| cli::watch_status(s, output.json()))
        }
        Command::Deploy { model, version, strategy, no_follow, allow_signature_change, expect_drift, target } => {
            let request =
                Request::Deploy { model, version, strategy, allow_signature_change, max_output_drift: expect_drift };
            with_socket(&target, |s| cli::deploy(s, request, !no_follow))
        }
        Command::Rollback { model, target } => with_socket(&target, |s| cli::simple(s, &Request::Rollback { model })),
        Command::Promote { model, version, target } => {
            with_socket(&target, |s| cli::simple(s, &Request::Promote { model, version }))
        }
        Command::Pause { model, target } => with_socket(&target, |s| cli::simple(s, &Request::Pause { model })),
        Command::Resume { model, target } => with_socket(&target, |s| cli::simple(s, &Request::Resume { model })),
        Command::Plan { model, version, strategy, target, output } => {
            with_socket(&target, |s| cli::plan(s, Request::Plan { model, version, strategy }, output.json()))
        }
        Command::History { model, target, output } => with_socket(&target, |s| cli::history(s, model, output.json())),
        Command::Report(args) => modeld::report::cli::run(args),
        Command::Reload { target } => with_socket(&target, |s| cli::simple(s, &Request::Reload)),
        Command::Upgrade { binary, target } => {
            let binary = binary.map(|b| std::path::absolute(&b).unwrap_or(b));
            with_socket(&target, |s| cli::simple(s, &Request::Upgrade { binary }))
        }
        Command::Alerts { command: AlertsCommand::Render { config, job, output } } => {
            render::alerts(&config, &job, output)
        }
        Command::K8s { command: K8sCommand::Render(args) } => render::k8s_render(args),
        Command::Token { command: TokenCommand::New { name, models, scopes } } => {
            token::new_token(&name, &models, &scopes)
        }
        Command::Probe(args) => commands::probe::probe(args),
        Command::Describe { dir, user, engine } => daemon::describe(&dir, user.as_deref(), &engine),
        Command::Worker(args) => daemon::worker(args),
    }
}
