//! The `modeld` binary: the daemon, its internal worker, and the operator commands.

use clap::{Parser, Subcommand};
use modeld::config::{self, ConfigError, Overrides};
use std::path::PathBuf;
use std::process::ExitCode;

const DEFAULT_CONFIG: &str = "/etc/modeld/modeld.toml";

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
    /// Show models, versions, roles, weights, states and health of the running daemon.
    Status {
        #[command(flatten)]
        target: Target,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Prometheus alerting rules from the config's health thresholds.
    Alerts {
        #[command(subcommand)]
        command: AlertsCommand,
    },
    /// Internal: one model version's worker process, started by `serve`.
    #[command(hide = true)]
    Worker(modeld::worker::WorkerArgs),
}

/// Which daemon the operator commands talk to.
#[derive(clap::Args)]
struct Target {
    /// The daemon's config, to find its admin socket (server.admin_socket).
    #[arg(long, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// The admin socket itself (wins over --config).
    #[arg(long)]
    socket: Option<PathBuf>,
}

impl Target {
    fn socket(&self) -> Result<PathBuf, String> {
        if let Some(socket) = &self.socket {
            return Ok(socket.clone());
        }
        match config::load(&self.config, &Overrides::default()) {
            Ok((config, _)) => Ok(config.server.admin_socket),
            Err(e) => Err(format!("cannot find the admin socket from {}: {e}; pass --socket", self.config.display())),
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Output {
    Text,
    Json,
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
enum ConfigCommand {
    /// Check a config file and print every problem with its key and line.
    Check {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve { config, listen, run_dir, state_dir } => {
            serve(config, Overrides { listen, run_dir, state_dir })
        }
        Command::Config { command: ConfigCommand::Check { config } } => check(&config),
        Command::Status { target, output } => status(&target, output),
        Command::Alerts { command: AlertsCommand::Render { config, job, output } } => alerts(&config, &job, output),
        Command::Worker(args) => {
            modeld::logging::init(&std::env::var("MODELD_LOG").unwrap_or_else(|_| "info".into()));
            match modeld::worker::run(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

fn serve(path: PathBuf, overrides: Overrides) -> ExitCode {
    let config = match config::load(&path, &overrides) {
        Ok((config, report)) => {
            eprint!("{report}");
            config
        }
        Err(e) => return config_failed(e),
    };
    modeld::logging::init(&config.server.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("modeld: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(modeld::daemon::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn status(target: &Target, output: Output) -> ExitCode {
    use modeld::admin::{Request, client, status};
    let answer = target.socket().and_then(|socket| client::call(&socket, &Request::Status).map_err(|e| e.to_string()));
    let data = match answer {
        Ok(data) => data,
        Err(e) => {
            eprintln!("modeld: {e}");
            return ExitCode::FAILURE;
        }
    };
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&data).expect("JSON value prints")),
        Output::Text => match serde_json::from_value::<status::Status>(data) {
            Ok(s) => print!("{}", status::render(&s)),
            Err(e) => {
                eprintln!("modeld: unreadable status from the daemon: {e}");
                return ExitCode::FAILURE;
            }
        },
    }
    ExitCode::SUCCESS
}

fn alerts(path: &std::path::Path, job: &str, output: Option<PathBuf>) -> ExitCode {
    let config = match config::load(path, &Overrides::default()) {
        Ok((config, _)) => config,
        Err(e) => return config_failed(e),
    };
    let rules = modeld::alerts::render(&config, job);
    match output {
        None => print!("{rules}"),
        Some(file) => {
            if let Err(e) = std::fs::write(&file, rules) {
                eprintln!("modeld: could not write {}: {e}", file.display());
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load(path, &Overrides::default()) {
        Ok((config, report)) => {
            print!("{report}");
            println!("{}: ok ({} models)", path.display(), config.models.len());
            ExitCode::SUCCESS
        }
        Err(e) => config_failed(e),
    }
}

fn config_failed(e: ConfigError) -> ExitCode {
    match e {
        ConfigError::Invalid(report) => {
            eprint!("{report}");
            let n = report.errors().count();
            eprintln!("{}: {n} error{} found", report.file, if n == 1 { "" } else { "s" });
        }
        other => eprintln!("modeld: {other}"),
    }
    ExitCode::from(2)
}
