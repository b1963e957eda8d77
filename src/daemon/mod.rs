//! `modeld serve`: wires the pieces together and runs the supervisor's event loop.
//!
//! Startup: install signal handlers first (so an early SIGTERM is a clean stop, not a
//! kill), create the run and state directories, take the admin socket (refusing to start
//! beside a running daemon), start a pool per configured model, then listen for HTTP and
//! admin requests. The event loop beats the heartbeat that `/v2/health/live` reads and
//! turns signals into intents. Shutdown: stop accepting, let in-flight requests finish
//! within `shutdown_grace`, drain and stop the workers, exit 0.
//!
//! The daemon owns the systemd notifier ([`notify`]): it says READY, STATUS, WATCHDOG and
//! STOPPING from its loop, and the rollout engine reports reloads through it as a
//! [`crate::rollout::ReloadObserver`].

pub mod activation;
pub mod notify;

use crate::admin::{self, Admin};
use crate::config::Live;
use crate::config::{Config, Overrides};
use crate::console::Console;
use crate::front::Front;
use crate::health::{Heartbeat, Host};
use crate::metrics::Metrics;
use crate::rollout::{Engine, Parts};
use crate::router::Router;
use crate::supervisor::{Cgroups, Exe, Intent, Launcher, Signals, Supervisor};
use anyhow::Context;
use notify::Notifier;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How often the event loop proves it is alive.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

pub async fn serve(config: Config, overrides: Overrides, activated: activation::Activated) -> anyhow::Result<()> {
    let mut signals = Signals::install().context("could not install signal handlers")?;
    let server = &config.server;
    let sockets_dir = server.run_dir.join("workers");
    for dir in [&server.run_dir, &sockets_dir, &server.state_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("could not create directory {}", dir.display()))?;
    }
    // Worker sockets: only the supervisor's user may enter (each worker also checks that
    // its peer is the supervisor).
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&sockets_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("could not restrict {}", sockets_dir.display()))?;
    }
    match server.workers_switch_to() {
        Some(user) => tracing::info!(user = %user.name, uid = user.uid, "workers run as an unprivileged user"),
        None if nix::unistd::geteuid().is_root() => {
            tracing::warn!("workers run as root: set server.worker_user (or create the user 'modeld')")
        }
        None => {}
    }
    // Bound first: if another daemon answers on it, nothing else may start. A socket the
    // service manager handed over is its own: served, never unlinked.
    let (admin_listener, admin_path) = match activated.admin {
        Some(handed) => (admin_socket_handed_over(handed, &server.admin_socket)?, None),
        None => {
            let bound = admin::bind(&server.admin_socket, server.admin_group.as_ref().map(|g| g.gid)).await?;
            (bound, Some(server.admin_socket.clone()))
        }
    };
    let metrics = Arc::new(Metrics::new());
    let router = Arc::new(Router::default());
    let heartbeat = Arc::new(Heartbeat::new());
    heartbeat.beat();
    let live = Live::new(server.clone());
    let gpus = crate::gpu::Telemetry::start();
    let launcher = Launcher {
        exe: Exe::this().context("could not find the modeld binary to start workers")?,
        sockets_dir,
        server: live.clone(),
        cgroups: config.models.iter().any(|m| m.memory_limit.is_some()).then(Cgroups::detect).flatten(),
        host_gpus: gpus.gpu_count(),
    };
    let supervisor = Arc::new(Supervisor::new(launcher, metrics.clone()));
    let host = Arc::new(Host::new(gpus));
    let stop_sampler = CancellationToken::new();
    tokio::spawn(crate::supervisor::sample(supervisor.clone(), host.clone(), metrics.clone(), stop_sampler.clone()));
    // The daemon owns what it tells systemd; the engine reports reloads through it.
    let notifier = Arc::new(Notifier::from_env());
    let parts = Parts {
        router: router.clone(),
        supervisor: supervisor.clone(),
        host: host.clone(),
        metrics: metrics.clone(),
        live: live.clone(),
        observer: notifier.clone(),
    };
    let engine = Engine::start(config.clone(), overrides, parts);
    engine.watch_repository();

    let listener = match activated.http {
        Some(handed) => http_socket_handed_over(handed, server.listen)?,
        None => TcpListener::bind(server.listen)
            .await
            .with_context(|| format!("could not listen on {} (server.listen)", server.listen))?,
    };
    let bound = listener.local_addr()?;
    tracing::info!("listening on http://{bound}");
    let address_file = server.run_dir.join(ADDRESS_FILE);
    write_address(&address_file, bound).with_context(|| format!("could not write {}", address_file.display()))?;
    let console = Arc::new(Console {
        router: router.clone(),
        engine: engine.clone(),
        host: host.clone(),
        started: Instant::now(),
        timeline: Default::default(),
    });
    tokio::spawn(crate::console::sample(console.clone(), stop_sampler.clone()));
    let front = Arc::new(Front {
        router: router.clone(),
        metrics,
        heartbeat: heartbeat.clone(),
        host: host.clone(),
        server: live.clone(),
        started: Instant::now(),
        board: console,
        stopping: Default::default(),
    });
    let stop_http = CancellationToken::new();
    let http = tokio::spawn(front.serve(listener, stop_http.clone()));
    let admin = Arc::new(Admin { router: router.clone(), engine: engine.clone(), host, started: Instant::now() });
    let stop_admin = CancellationToken::new();
    let admin_task = tokio::spawn(admin.serve(admin_listener, admin_path, stop_admin.clone()));

    let intent = event_loop(&mut signals, &heartbeat, &engine, &notifier).await;
    stop_http.cancel();
    match intent {
        Intent::FastStop => {
            tracing::info!("SIGINT: stopping now");
            supervisor.kill_all();
        }
        _ => {
            tracing::info!("SIGTERM: finishing in-flight requests (up to {:?})", live.get().shutdown_grace);
            let _ = http.await;
            supervisor.stop_all().await;
        }
    }
    stop_admin.cancel();
    stop_sampler.cancel();
    let _ = admin_task.await;
    let _ = std::fs::remove_file(&address_file);
    tracing::info!("stopped");
    Ok(())
}

/// The HTTP socket the service manager handed over, for tokio; a `listen` it does not
/// match is said (the handed-over socket wins: it is where clients wait).
fn http_socket_handed_over(handed: std::net::TcpListener, listen: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    handed.set_nonblocking(true).context("socket activation: the HTTP socket")?;
    let listener = TcpListener::from_std(handed).context("socket activation: the HTTP socket")?;
    let bound = listener.local_addr()?;
    tracing::info!("HTTP socket handed over by the service manager (socket activation): {bound}");
    if bound != listen && listen.port() != 0 {
        tracing::warn!("server.listen is {listen}, the socket handed over is {bound}: serving on {bound}");
    }
    Ok(listener)
}

/// The admin socket the service manager handed over, for tokio.
fn admin_socket_handed_over(
    handed: std::os::unix::net::UnixListener,
    configured: &std::path::Path,
) -> anyhow::Result<tokio::net::UnixListener> {
    handed.set_nonblocking(true).context("socket activation: the admin socket")?;
    let path = handed.local_addr().ok().and_then(|a| a.as_pathname().map(std::path::Path::to_path_buf));
    tracing::info!(
        "admin socket handed over by the service manager: {}",
        path.as_deref().unwrap_or(configured).display()
    );
    if path.as_deref().is_some_and(|p| p != configured) {
        tracing::warn!(
            "server.admin_socket is {}, the socket handed over is {}: the CLI finds it with --socket",
            configured.display(),
            path.as_deref().unwrap_or(configured).display()
        );
    }
    tokio::net::UnixListener::from_std(handed).context("socket activation: the admin socket")
}

/// The file in `run_dir` holding the address HTTP listens on (`127.0.0.1:41234`, the port
/// resolved when the config asks for port 0), for scripts and tests; removed at a clean stop.
pub const ADDRESS_FILE: &str = "http.addr";

/// Writes the address whole (a temporary file renamed into place): a reader never sees
/// half of it.
fn write_address(path: &std::path::Path, address: std::net::SocketAddr) -> std::io::Result<()> {
    let tmp = path.with_extension("addr.tmp");
    std::fs::write(&tmp, format!("{address}\n"))?;
    std::fs::rename(&tmp, path)
}

/// The supervisor's event loop: beats the heartbeat and systemd's watchdog, tells systemd
/// when start-up is over and what the daemon is doing, reloads on SIGHUP, and returns the
/// signal that stops the daemon.
async fn event_loop(signals: &mut Signals, heartbeat: &Heartbeat, engine: &Arc<Engine>, notifier: &Notifier) -> Intent {
    let every = notifier.watchdog_every().map_or(HEARTBEAT_EVERY, |w| w.min(HEARTBEAT_EVERY));
    let mut tick = tokio::time::interval(every);
    let mut ready = false;
    let mut last_status = String::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                heartbeat.beat();
                notifier.watchdog();
                let status = engine.status_line();
                if !ready && notify::settled(engine.router()) {
                    ready = true;
                    tracing::info!("start-up done: {status}");
                    notifier.ready(&status);
                } else if status != last_status {
                    notifier.status(&status);
                }
                last_status = status;
            }
            intent = signals.next() => match intent {
                // On its own task: the loop keeps beating while rollouts start.
                Intent::Reload => drop(tokio::spawn(reload(engine.clone()))),
                stop => {
                    notifier.stopping();
                    return stop;
                }
            },
        }
    }
}

/// SIGHUP: re-reads the config and applies it, or refuses it whole and keeps the live one
/// (the refusal is logged where every reload's is).
async fn reload(engine: Arc<Engine>) {
    if let Ok(lines) = engine.reload_file().await {
        tracing::info!("SIGHUP: config applied:\n{}", lines.join("\n"));
    }
}
