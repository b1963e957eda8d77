//! `modeld serve`: wires the pieces together and runs the supervisor's event loop.
//!
//! Startup: install signal handlers first (so an early SIGTERM is a clean stop, not a
//! kill), create the run and state directories, take the admin socket (refusing to start
//! beside a running daemon), start a pool per configured model, then listen for HTTP and
//! admin requests. The event loop beats the heartbeat that `/v2/health/live` reads and
//! turns signals into intents. Shutdown: stop accepting, let in-flight requests finish
//! within `shutdown_grace`, drain and stop the workers, exit 0.

use crate::admin::{self, Admin};
use crate::config::{Config, ModelConfig};
use crate::front::{Front, Limits};
use crate::health::{Heartbeat, Host};
use crate::metrics::Metrics;
use crate::repo::ModelDir;
use crate::router::table::RoutingTable;
use crate::router::{ModelRoute, Router};
use crate::supervisor::cgroup::Cgroups;
use crate::supervisor::process::Launcher;
use crate::supervisor::signals::{Intent, Signals};
use crate::supervisor::{Supervisor, sampler};
use anyhow::Context;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How often the event loop proves it is alive.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

pub async fn serve(config: Config) -> anyhow::Result<()> {
    let mut signals = Signals::install().context("could not install signal handlers")?;
    let server = &config.server;
    let sockets_dir = server.run_dir.join("workers");
    for dir in [&server.run_dir, &sockets_dir, &server.state_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("could not create directory {}", dir.display()))?;
    }
    // Bound first: if another daemon answers on it, nothing else may start.
    let admin_listener = admin::bind(&server.admin_socket).await?;
    let metrics = Arc::new(Metrics::new());
    let router = Arc::new(Router::default());
    let heartbeat = Arc::new(Heartbeat::new());
    heartbeat.beat();
    let launcher = Launcher {
        exe: std::env::current_exe().context("could not find the modeld binary to start workers")?,
        sockets_dir,
        start_timeout: server.worker_start_timeout,
        log_level: server.log_level.clone(),
        cgroups: config.models.iter().any(|m| m.memory_limit.is_some()).then(Cgroups::detect).flatten(),
    };
    let supervisor = Arc::new(Supervisor::new(launcher, metrics.clone(), server.shutdown_grace));
    let host = Arc::new(Host::new());
    let stop_sampler = CancellationToken::new();
    tokio::spawn(sampler::run(supervisor.clone(), host.clone(), metrics.clone(), stop_sampler.clone()));
    for model in &config.models {
        start_model(&supervisor, &router, model, server.max_inflight_per_model);
    }

    let listener = TcpListener::bind(server.listen)
        .await
        .with_context(|| format!("could not listen on {} (server.listen)", server.listen))?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    let front = Arc::new(Front {
        router: router.clone(),
        metrics,
        heartbeat: heartbeat.clone(),
        host: host.clone(),
        limits: Limits {
            max_body_bytes: server.max_body_bytes,
            request_timeout: server.request_timeout,
            header_read_timeout: server.header_read_timeout,
        },
        started: Instant::now(),
    });
    let stop_http = CancellationToken::new();
    let http = tokio::spawn(front.serve(listener, stop_http.clone(), server.shutdown_grace));
    let admin = Arc::new(Admin { router: router.clone(), host, started: Instant::now() });
    let stop_admin = CancellationToken::new();
    let admin_task = tokio::spawn(admin.serve(admin_listener, server.admin_socket.clone(), stop_admin.clone()));

    let intent = event_loop(&mut signals, &heartbeat, &config).await;
    stop_http.cancel();
    match intent {
        Intent::FastStop => {
            tracing::info!("SIGINT: stopping now");
            supervisor.kill_all();
        }
        _ => {
            tracing::info!("SIGTERM: finishing in-flight requests (up to {:?})", server.shutdown_grace);
            let _ = http.await;
            supervisor.stop_all().await;
        }
    }
    stop_admin.cancel();
    stop_sampler.cancel();
    let _ = admin_task.await;
    tracing::info!("stopped");
    Ok(())
}

/// Beats the heartbeat and waits for a signal that stops the daemon.
async fn event_loop(signals: &mut Signals, heartbeat: &Heartbeat, config: &Config) -> Intent {
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => heartbeat.beat(),
            intent = signals.next() => match intent {
                Intent::Reload => check_reload(config),
                stop => return stop,
            },
        }
    }
}

/// SIGHUP: re-reads the config and reports whether it is valid. Applying a changed config
/// (rolling out new versions) belongs to the rollout engine, which is not built yet; until
/// then the running config stays in force and the log says so.
fn check_reload(config: &Config) {
    match crate::config::load(&config.path, &Default::default()) {
        Ok(_) => tracing::warn!(
            "SIGHUP: {} is valid, but applying a changed config needs the rollout engine, not built yet; \
             the running config stays in force (restart to apply)",
            config.path.display()
        ),
        Err(e) => tracing::error!("SIGHUP: refusing the new config; the running config stays in force:\n{e}"),
    }
}

fn start_model(supervisor: &Supervisor, router: &Router, model: &ModelConfig, limit: usize) {
    let table = match ModelDir::new(&model.dir).resolve(model.version) {
        Ok(version) => RoutingTable::stable(supervisor.start(model, version)),
        Err(e) => {
            tracing::error!(model = %model.name, "cannot serve: {e}");
            RoutingTable::unavailable(e.to_string())
        }
    };
    router.insert(Arc::new(ModelRoute::new(&model.name, limit, table)));
}
