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
mod events;
pub mod handover;
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
use crate::supervisor::{Cgroups, Exe, Launcher, Signals, Supervisor};
use anyhow::Context;
use events::{Ending, Events, Upgrading};
use notify::Notifier;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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
    let exe = Exe::this().context("could not find the modeld binary to start workers")?;
    let binary = exe.name.clone();
    let launcher = Launcher {
        exe,
        sockets_dir,
        server: live.clone(),
        cgroups: config.models.iter().any(|m| m.memory_limit.is_some()).then(Cgroups::detect).flatten(),
        host_gpus: gpus.gpu_count(),
    };
    launcher.remove_stale_files();
    let supervisor = Arc::new(Supervisor::new(launcher, metrics.clone()));
    let host = Arc::new(Host::new(gpus));
    let stop_sampler = CancellationToken::new();
    tokio::spawn(crate::supervisor::sample(supervisor.clone(), host.clone(), metrics.clone(), stop_sampler.clone()));
    // The daemon owns what it tells systemd; the engine reports reloads through it.
    let predecessor = activated.predecessor.map(handover::Predecessor::new).transpose().map_err(anyhow::Error::msg)?;
    let notifier = Arc::new(Notifier::from_env(predecessor.is_some()));
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
    let scaler = crate::scale::Scaler {
        router: router.clone(),
        supervisor: supervisor.clone(),
        engine: engine.clone(),
        metrics: metrics.clone(),
    };
    let stop_scaler = CancellationToken::new();
    tokio::spawn(scaler.run(stop_scaler.clone()));

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
    let sockets = handover::Sockets { http: listener.as_raw_fd(), admin: admin_listener.as_raw_fd() };
    // A daemon taking over from another serves once that one stepped aside (until then
    // connections go to the old one, or wait in the backlog).
    let serving = CancellationToken::new();
    if predecessor.is_none() {
        serving.cancel();
    }
    let http = tokio::spawn(once_serving(serving.clone(), stop_http.clone(), front.serve(listener, stop_http.clone())));
    let (upgrades_asked, upgrades) = tokio::sync::mpsc::channel(4);
    let admin = Arc::new(Admin {
        router: router.clone(),
        engine: engine.clone(),
        host,
        started: Instant::now(),
        upgrades: upgrades_asked,
    });
    let stop_admin = CancellationToken::new();
    let admin_task = tokio::spawn(once_serving(
        serving.clone(),
        stop_admin.clone(),
        admin.serve(admin_listener, stop_admin.clone()),
    ));

    let events = Events { signals: &mut signals, heartbeat: &heartbeat, engine: &engine, notifier: &notifier };
    let upgrading = Upgrading { upgrades, sockets, binary, predecessor, serving, live: &live };
    let ending = events.run(upgrading).await;
    // No worker is added to pools about to drain.
    stop_scaler.cancel();
    stop_http.cancel();
    if matches!(ending, Ending::HandedOver | Ending::Declined) {
        // The other daemon answers on the admin socket from now (answers under way finish).
        stop_admin.cancel();
    }
    match ending {
        Ending::FastStop => {
            tracing::info!("{}: stopping now", ending.cause());
            supervisor.kill_all();
        }
        Ending::GracefulStop | Ending::HandedOver | Ending::Declined => {
            tracing::info!("{}: finishing in-flight requests (up to {:?})", ending.cause(), live.get().shutdown_grace);
            let _ = http.await;
            supervisor.stop_all().await;
        }
    }
    stop_admin.cancel();
    stop_sampler.cancel();
    let _ = admin_task.await;
    match ending {
        // The other daemon serves on the same sockets and wrote the same address.
        Ending::HandedOver => tracing::info!("stopped: the new modeld serves"),
        Ending::Declined => anyhow::bail!("stopped without taking over: the old modeld serves"),
        Ending::GracefulStop | Ending::FastStop => {
            // The admin socket's file when this daemon bound it (one the service manager
            // handed over is the manager's).
            for file in [Some(&address_file), admin_path.as_ref()].into_iter().flatten() {
                let _ = std::fs::remove_file(file);
            }
            tracing::info!("stopped");
        }
    }
    Ok(())
}

/// Runs `serve` once `serving` is cancelled, unless `stop` comes first.
async fn once_serving(serving: CancellationToken, stop: CancellationToken, serve: impl Future<Output = ()>) {
    tokio::select! {
        _ = serving.cancelled() => serve.await,
        _ = stop.cancelled() => {}
    }
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
