//! The `modeld` binary: the daemon, its internal worker, and the operator commands.

use clap::{Parser, Subcommand};
use modeld::config::{self, ConfigError, Overrides};
use std::path::PathBuf;
use std::process::ExitCode;

const DEFAULT_CONFIG: &str = "/etc/modeld/modeld.toml";

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
    /// Internal: one model version's worker process, started by `serve`.
    #[command(hide = true)]
    Worker(modeld::worker::WorkerArgs),
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
