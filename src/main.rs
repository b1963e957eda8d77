//! The `modeld` binary: the daemon, its internal worker, and the operator commands.

use clap::{Parser, Subcommand};
use modeld::admin::{Request, cli};
use modeld::config::{self, ConfigError, Overrides};
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

impl Output {
    fn json(self) -> bool {
        matches!(self, Output::Json)
    }
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
    Render(K8sRender),
}

#[derive(clap::Args)]
struct K8sRender {
    #[arg(long, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Write one file per object and RUNBOOK.md here instead of one stream to stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The modeld image (packaging/Dockerfile).
    #[arg(long, default_value = concat!("modeld:", env!("CARGO_PKG_VERSION")))]
    image: String,
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Name of the objects and of the Service clients use.
    #[arg(long, default_value = "modeld")]
    name: String,
    /// The model whose [model.deploy] the rollout follows (needed when the models' differ).
    #[arg(long)]
    model: Option<String>,
    /// Where the models come from: "image" (baked into a derived image) or "pvc:CLAIM".
    #[arg(long, default_value = "image", value_parser = parse_models)]
    models: modeld::k8s::Models,
    /// Who carries out rollouts: "kubernetes" (Deployments, Istio) or "argo" (Argo Rollouts
    /// with the health gate as an AnalysisTemplate).
    #[arg(long, value_enum, default_value = "kubernetes")]
    rollouts: RolloutsArg,
    /// A LoadBalancer Service with client-IP session affinity (default: ClusterIP).
    #[arg(long)]
    load_balancer: bool,
    /// The Prometheus the analysis queries (--rollouts argo).
    #[arg(long, default_value = "http://prometheus.monitoring.svc:9090")]
    prometheus: String,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RolloutsArg {
    Kubernetes,
    Argo,
}

fn parse_models(text: &str) -> Result<modeld::k8s::Models, String> {
    match text.split_once(':') {
        None if text == "image" => Ok(modeld::k8s::Models::Image),
        Some(("pvc", claim)) if !claim.is_empty() => Ok(modeld::k8s::Models::Claim(claim.to_string())),
        _ => Err(format!("'{text}': expected \"image\" or \"pvc:CLAIM\"")),
    }
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
            serve(config, Overrides { listen, run_dir, state_dir })
        }
        Command::Config { command: ConfigCommand::Check { config } } => check(&config),
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
        Command::Alerts { command: AlertsCommand::Render { config, job, output } } => alerts(&config, &job, output),
        Command::K8s { command: K8sCommand::Render(args) } => k8s_render(args),
        Command::Token { command: TokenCommand::New { name, models, scopes } } => new_token(&name, &models, &scopes),
        Command::Describe { dir, user, engine } => {
            modeld::logging::init(&std::env::var("MODELD_LOG").unwrap_or_else(|_| "warn".into()));
            ExitCode::from(modeld::worker::describe(&dir, user.as_deref(), &engine) as u8)
        }
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
    let (config, report) = match config::load_checked(&path, &overrides, Some(&modeld::repo::check_version)) {
        Ok(loaded) => loaded,
        Err(e) => return config_failed(e),
    };
    modeld::logging::init(&config.server.log_level);
    for line in report.to_string().lines() {
        tracing::warn!("{line}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("modeld: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(modeld::daemon::serve(config, overrides)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs an operator command against the daemon the target names.
fn with_socket(target: &Target, run: impl FnOnce(&std::path::Path) -> ExitCode) -> ExitCode {
    match target.socket() {
        Ok(socket) => run(&socket),
        Err(e) => {
            eprintln!("modeld: {e}");
            ExitCode::FAILURE
        }
    }
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

fn new_token(name: &str, models: &[String], scopes: &[String]) -> ExitCode {
    use modeld::config::Scope;
    if let Some(bad) = scopes.iter().find(|s| !Scope::ALL.iter().any(|k| k.name() == s.as_str())) {
        eprintln!("modeld: token new: unknown scope '{bad}' (expected infer, metadata or probes)");
        return ExitCode::FAILURE;
    }
    let mut secret = [0u8; 32];
    if let Err(e) = std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut secret))
    {
        eprintln!("modeld: token new: cannot read /dev/urandom: {e}");
        return ExitCode::FAILURE;
    }
    let token: String =
        "mdl_".chars().chain(secret.iter().flat_map(|b| format!("{b:02x}").chars().collect::<Vec<_>>())).collect();
    let list = |items: &[String]| items.iter().map(|i| format!("{i:?}")).collect::<Vec<_>>().join(", ");
    println!("# The token, shown once: give it to the client, which sends `Authorization: Bearer <token>`.");
    println!("token: {token}");
    println!("# Add this to the config's [auth] (or to its tokens_file as [[token]]), then `modeld reload`:");
    println!("[[auth.token]]");
    println!("name = {name:?}");
    println!("sha256 = \"{}\"", modeld::front::auth::hash_hex(&token));
    println!("models = [{}]", list(models));
    println!("scopes = [{}]", list(scopes));
    ExitCode::SUCCESS
}

fn k8s_render(args: K8sRender) -> ExitCode {
    use modeld::k8s::{self, Options, Rollouts};
    let config = match config::load(&args.config, &Overrides::default()) {
        Ok((config, _)) => config,
        Err(e) => return config_failed(e),
    };
    let options = Options {
        name: args.name,
        namespace: args.namespace,
        image: args.image,
        model: args.model,
        models: args.models,
        rollouts: match args.rollouts {
            RolloutsArg::Kubernetes => Rollouts::Kubernetes,
            RolloutsArg::Argo => Rollouts::Argo,
        },
        load_balancer: args.load_balancer,
        prometheus: args.prometheus,
        out_hint: args.out.as_ref().map_or_else(|| "-".into(), |d| d.display().to_string()),
    };
    let rendered = match k8s::render(config, options) {
        Ok(rendered) => rendered,
        Err(e) => {
            eprintln!("modeld: k8s render: {e}");
            return ExitCode::FAILURE;
        }
    };
    for note in &rendered.notes {
        eprintln!("note: {note}");
    }
    match args.out {
        None => print!("{}", k8s::stream(&rendered)),
        Some(dir) => match k8s::write(&rendered, &dir) {
            Ok(files) => eprintln!("wrote {} files to {}: {}", files.len(), dir.display(), files.join(", ")),
            Err(e) => {
                eprintln!("modeld: could not write {}: {e}", dir.display());
                return ExitCode::FAILURE;
            }
        },
    }
    ExitCode::SUCCESS
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load_checked(path, &Overrides::default(), Some(&modeld::repo::check_version)) {
        Ok((config, report)) => {
            print!("{report}");
            println!("{}: ok ({} models)", path.display(), config.models.len());
            report_onnxruntime(&config);
            report_gpus(&config);
            ExitCode::SUCCESS
        }
        Err(e) => config_failed(e),
    }
}

/// What `config check` found of ONNX Runtime, when a model is on it or a library is set:
/// the file and version loaded, or why none could be.
fn report_onnxruntime(config: &config::Config) {
    let on_it: Vec<&str> =
        config.models.iter().filter(|m| m.engine == config::Engine::OnnxRuntime).map(|m| m.name.as_str()).collect();
    let library = config.server.onnxruntime_library.as_deref();
    if on_it.is_empty() && library.is_none() {
        return;
    }
    let models = match on_it.is_empty() {
        true => String::new(),
        false => format!(" for {}", on_it.join(", ")),
    };
    match modeld::worker::onnxruntime::runtime(library) {
        Ok(runtime) => println!("onnxruntime{models}: {} (version {})", runtime.path, runtime.version),
        Err(why) => println!("warning: onnxruntime{models}: {why}"),
    }
}

/// What `config check` found of the GPUs, when a model asks for one: NVML's driver and
/// GPUs, or why there are none (a warning: those versions will fail, or run on the CPU
/// under `cuda-or-cpu`).
fn report_gpus(config: &config::Config) {
    let on_gpu: Vec<&str> = config.models.iter().filter(|m| m.device.is_gpu()).map(|m| m.name.as_str()).collect();
    if on_gpu.is_empty() {
        return;
    }
    let models = on_gpu.join(", ");
    let telemetry = modeld::gpu::Telemetry::probe();
    match telemetry.inventory() {
        Ok(found) => {
            let gpus: Vec<String> = found.gpus.iter().map(|g| format!("{} {}", g.index, g.name)).collect();
            println!("gpus for {models}: driver {}, {}", found.driver, gpus.join(", "));
            for model in &config.models {
                if let config::Device::Cuda { gpus, .. } = &model.device
                    && let Some(missing) = gpus.iter().find(|g| **g as usize >= found.gpus.len())
                {
                    println!(
                        "warning: model {}: device names GPU {missing}, but this host has {} (0 to {}): its workers there will fail to load",
                        model.name,
                        found.gpus.len(),
                        found.gpus.len() - 1
                    );
                }
            }
        }
        Err(why) => println!("warning: gpus for {models}: {why}"),
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
