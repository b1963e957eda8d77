//! `modeld report MODEL [--rollout N | --last] [--format md|json|html] [--out DIR] [--k8s]`:
//! reads the rollout over the admin socket (or, with `--state-dir`, from the state
//! directory, the daemon running or not) and prints its report, or writes the whole
//! evidence package under `--out`.

use super::package::{self, Setting};
use super::{Subject, Which};
use crate::admin::Request;
use crate::config::{self, Overrides};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The report's format when printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Md,
    Json,
    Html,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    pub model: String,
    /// The rollout to report, by its id in `modeld history` (default: the last).
    #[arg(long, conflicts_with = "last")]
    pub rollout: Option<u64>,
    /// The model's last rollout (the default).
    #[arg(long)]
    pub last: bool,
    /// How to print the report (without --out).
    #[arg(long, value_enum, default_value = "md")]
    pub format: Format,
    /// Write the whole evidence package under this directory instead of printing.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// With --out: the cluster's manifests for the model too (`modeld k8s render`).
    #[arg(long, requires = "out")]
    pub k8s: bool,
    /// Read the rollout from this state directory instead of asking the daemon.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// The daemon's config: its admin socket, and for --out its alert rules and scrape
    /// config.
    #[arg(long, default_value = crate::config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// The admin socket itself (wins over --config).
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

fn failed(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("modeld: report: {e}");
    ExitCode::FAILURE
}

pub fn run(args: Args) -> ExitCode {
    let which = args.rollout.map_or(Which::Last, Which::Id);
    let config = config::load(&args.config, &Overrides::default()).map(|(c, _)| c);
    let subject = match (&args.state_dir, &args.socket, &config) {
        (Some(dir), ..) => Subject::from_state_dir(dir, &args.model, which).map_err(|e| e.to_string()),
        (None, Some(socket), _) => ask(socket, &args.model, which),
        (None, None, Ok(config)) => ask(&config.server.admin_socket, &args.model, which),
        (None, None, Err(e)) => Err(format!("{e}; pass --socket or --state-dir to say where the rollout is")),
    };
    let subject = match subject {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    match &args.out {
        None => {
            print!("{}", render(&subject, args.format));
            ExitCode::SUCCESS
        }
        Some(dir) => {
            let config = match config {
                Ok(config) => config,
                Err(e) => return failed(format!("the package needs the daemon's config: {e}")),
            };
            let socket = args.socket.clone().unwrap_or_else(|| config.server.admin_socket.clone());
            let setting = Setting { config: &config, config_path: &args.config, admin_socket: &socket, k8s: args.k8s };
            write_package(&subject, &setting, dir)
        }
    }
}

/// The report in one format.
pub fn render(subject: &Subject, format: Format) -> String {
    match format {
        Format::Md => super::markdown::report(subject),
        Format::Html => super::html::report(subject),
        Format::Json => {
            serde_json::to_string_pretty(&super::results::document(subject)).expect("values serialize") + "\n"
        }
    }
}

fn write_package(subject: &Subject, setting: &Setting, dir: &Path) -> ExitCode {
    let files = match package::files(subject, setting) {
        Ok(files) => files,
        Err(e) => return failed(e),
    };
    if let Err(e) = package::write(&files, dir) {
        return failed(format!("could not write {}: {e}", dir.display()));
    }
    println!("rollout #{} of {}: {} files in {}", subject.record.id, subject.record.model, files.len(), dir.display());
    for f in &files {
        println!("  {}", f.path.display());
    }
    ExitCode::SUCCESS
}

/// The rollout, from the daemon over its admin socket.
fn ask(socket: &Path, model: &str, which: Which) -> Result<Subject, String> {
    let request = Request::Report { model: model.to_string(), which };
    let data = crate::admin::call(socket, &request).map_err(|e| e.to_string())?;
    serde_json::from_value(data).map_err(|e| format!("unreadable answer from the daemon: {e}"))
}
