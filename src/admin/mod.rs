//! The admin API: a Unix socket (mode 0660) through which the `modeld` CLI asks the
//! daemon about its state; HTTP stays read-only for clients and probes.
//!
//! The protocol is one JSON request per line, `{"command": "status"}`, answered by one
//! JSON line, `{"ok": true, "data": ...}` or `{"ok": false, "error": "..."}`; `follow`
//! answers with one line per phase of the model's rollout until it ends. It is the
//! control path, not the request path, so JSON costs nothing that matters here. This
//! socket is the only way to change anything (HTTP stays read-only). The client side is
//! [`client`]. At startup the socket also guards against a second daemon on the same run
//! directory: a socket that answers means one is already running.

pub mod cli;
pub mod client;
pub mod peer;
pub mod status;

pub use client::call;

use crate::config::Strategy;
use crate::health::Host;
use crate::rollout::{Caller, Command, Engine, Options};
use crate::router::Router;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

/// Longest request line taken (a deploy is a few hundred bytes).
const MAX_LINE: usize = 64 * 1024;

/// What the CLI may ask.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// Models, versions, roles, weights, states, health and rollouts in progress.
    Status,
    /// Start rolling `model` out to `version`.
    Deploy {
        model: String,
        version: u64,
        strategy: Option<String>,
        /// Let a candidate whose signature differs from the live version's take traffic.
        #[serde(default)]
        allow_signature_change: bool,
        /// The largest output drift (PSI) allowed for this rollout; 0: not judged.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_output_drift: Option<f64>,
    },
    /// Back to the old version: the running rollout reverts, or the previous version returns.
    Rollback {
        model: String,
    },
    /// Make the candidate stable now (A/B: `version` names the winner).
    Promote {
        model: String,
        version: Option<u64>,
    },
    Pause {
        model: String,
    },
    Resume {
        model: String,
    },
    /// The phases a rollout would take, doing nothing.
    Plan {
        model: String,
        version: u64,
        strategy: Option<String>,
    },
    /// Rollouts, oldest first.
    History {
        model: Option<String>,
    },
    /// One rollout's record, evidence and the model's history, for `modeld report`.
    Report {
        model: String,
        which: crate::report::Which,
    },
    /// Re-read the config and apply it.
    Reload,
    /// One line per phase of the model's latest rollout, until it ends.
    Follow {
        model: String,
    },
    /// Hand the daemon over to a new modeld (`binary`, else the path this one was started
    /// from): answered once the new one is ready and this one steps aside, or with why not.
    Upgrade {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        binary: Option<PathBuf>,
    },
}

/// An upgrade the admin socket was asked for, for the daemon's loop, which answers on
/// `reply`.
pub struct UpgradeAsked {
    pub binary: Option<PathBuf>,
    pub caller: Caller,
    pub reply: tokio::sync::oneshot::Sender<Result<String, String>>,
}

/// The daemon's answer to one request.
#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("another modeld is already running: its admin socket {0} answers")]
    AlreadyRunning(PathBuf),
    #[error("could not create admin socket {path}: {error}")]
    Bind { path: PathBuf, error: std::io::Error },
}

/// How long a stopping daemon waits for the answers of open admin connections.
const CLOSING_ANSWERS: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves admin requests on its socket.
impl Request {
    /// Whether it changes what is served (logged with who asked), rather than reading.
    pub fn changes_anything(&self) -> bool {
        match self {
            Request::Deploy { .. }
            | Request::Rollback { .. }
            | Request::Promote { .. }
            | Request::Pause { .. }
            | Request::Resume { .. }
            | Request::Reload
            | Request::Upgrade { .. } => true,
            Request::Status
            | Request::Plan { .. }
            | Request::History { .. }
            | Request::Report { .. }
            | Request::Follow { .. } => false,
        }
    }
}

pub struct Admin {
    pub router: Arc<Router>,
    pub engine: Arc<Engine>,
    pub host: Arc<Host>,
    pub started: Instant,
    /// Where upgrades go (the daemon's loop).
    pub upgrades: tokio::sync::mpsc::Sender<UpgradeAsked>,
}

/// Binds the admin socket (0660, owned by `group` when given), refusing if another daemon
/// answers on it.
pub async fn bind(path: &Path, group: Option<u32>) -> Result<UnixListener, AdminError> {
    let bind_error = |source| AdminError::Bind { path: path.to_path_buf(), error: source };
    if UnixStream::connect(path).await.is_ok() {
        return Err(AdminError::AlreadyRunning(path.to_path_buf()));
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_error(e)),
    }
    let listener = UnixListener::bind(path).map_err(bind_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(bind_error)?;
    // Only when it differs: under systemd the socket already has the service's group, and
    // chown is among the system calls the unit forbids.
    let current = std::fs::metadata(path).map_err(bind_error)?.gid();
    if let Some(gid) = group.filter(|g| *g != current) {
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))
            .map_err(|e| bind_error(std::io::Error::from(e)))?;
    }
    Ok(listener)
}

/// Reads one request line into `line`, at most `MAX_LINE + 1` bytes: a longer one is
/// refused by the caller. Returns the bytes read (0 at the end of the stream).
async fn read_line(
    reader: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    line: &mut Vec<u8>,
) -> std::io::Result<usize> {
    line.clear();
    reader.take(MAX_LINE as u64 + 1).read_until(b'\n', line).await
}

impl Admin {
    /// Answers connections until `stop`, then the answers under way. The socket's file is
    /// the daemon's to remove (or to leave to the daemon it handed over to).
    pub async fn serve(self: Arc<Self>, listener: UnixListener, stop: CancellationToken) {
        let connections = tokio_util::task::TaskTracker::new();
        crate::accept::until(&listener, "admin socket", stop.cancelled(), |stream| {
            let admin = self.clone();
            connections.spawn(async move {
                if let Err(e) = admin.connection(stream).await {
                    tracing::debug!("admin connection ended: {e}");
                }
            });
        })
        .await;
        // Answers already under way are written before the daemon exits (`modeld upgrade`'s
        // comes as the daemon steps aside); a follower is not waited for long.
        connections.close();
        let _ = tokio::time::timeout(CLOSING_ANSWERS, connections.wait()).await;
    }

    async fn connection(&self, stream: UnixStream) -> std::io::Result<()> {
        let peer = peer::Peer::of(&stream)?;
        let config = self.engine.config();
        let group = config.server.admin_group.as_ref().map(|g| (g.name.as_str(), g.gid));
        let (reader, mut writer) = stream.into_split();
        let mut reader = BufReader::new(reader);
        let mut line = Vec::new();
        if let Err(why) = peer::admit(&peer, group) {
            tracing::warn!(uid = peer.uid, pid = ?peer.pid, "admin connection refused: {why}");
            // Take the request first (briefly, bounded): a client still writing when the
            // socket closes sees a broken pipe instead of the reason.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), read_line(&mut reader, &mut line)).await;
            return send(&mut writer, &answer(Err(why))).await;
        }
        loop {
            if read_line(&mut reader, &mut line).await? == 0 {
                return Ok(());
            }
            if line.len() > MAX_LINE {
                let refusal = format!("admin request over {MAX_LINE} bytes; the connection is closed");
                return send(&mut writer, &answer(Err(refusal))).await;
            }
            match serde_json::from_slice::<Request>(&line) {
                Ok(Request::Follow { model }) => self.follow(&model, &mut writer).await?,
                Ok(request) => {
                    if request.changes_anything() {
                        tracing::info!(uid = peer.uid, pid = ?peer.pid, command = ?request, "admin command");
                    }
                    send(&mut writer, &answer(self.handle(request, &peer).await)).await?
                }
                Err(e) => send(&mut writer, &answer(Err(format!("malformed admin request: {e}")))).await?,
            }
        }
    }

    async fn handle(&self, request: Request, peer: &peer::Peer) -> Result<serde_json::Value, String> {
        let caller = || Caller::operator(peer.uid, peer.pid);
        let engine = &self.engine;
        match request {
            Request::Status => {
                let mut status = status::collect(&self.router, &self.host, self.started);
                status.rollouts = engine.in_progress();
                Ok(json(status))
            }
            Request::Deploy { model, version, strategy, allow_signature_change, max_output_drift } => {
                if let Some(psi) = max_output_drift.filter(|p| !(*p >= 0.0 && p.is_finite())) {
                    return Err(format!("--expect-drift {psi}: a PSI must be 0 or more (0: drift is not judged)"));
                }
                let options = Options {
                    caller: Some(caller()),
                    strategy: parse_strategy(strategy.as_deref())?,
                    allow_signature_change,
                    max_output_drift,
                };
                done(engine.deploy(&model, version, options))
            }
            Request::Rollback { model } => done(engine.rollback(&model, caller()).await),
            Request::Promote { model, version } => done(engine.command(&model, Command::Promote(version))),
            Request::Pause { model } => done(engine.command(&model, Command::Pause)),
            Request::Resume { model } => done(engine.command(&model, Command::Resume)),
            Request::Plan { model, version, strategy } => {
                let options = Options { strategy: parse_strategy(strategy.as_deref())?, ..Options::default() };
                done(engine.plan(&model, version, options).await)
            }
            Request::History { model } => Ok(json(engine.history(model.as_deref()))),
            Request::Report { model, which } => {
                if self.router.model(&model).is_err() && engine.history(Some(&model)).is_empty() {
                    return Err(format!("unknown model '{model}'"));
                }
                let history = engine.history(Some(&model));
                done(crate::report::Subject::pick(&model, which, history, |id| engine.evidence(id)))
            }
            Request::Reload => engine.reload_file().await.map(json),
            Request::Upgrade { binary } => {
                let (reply, answer) = tokio::sync::oneshot::channel();
                let asked = UpgradeAsked { binary, caller: caller(), reply };
                self.upgrades.send(asked).await.map_err(|_| "the daemon is stopping".to_string())?;
                answer.await.map_err(|_| "the daemon stopped before the upgrade ended".to_string())?.map(json)
            }
            Request::Follow { .. } => unreachable!("streamed by the connection"),
        }
    }

    /// Streams the model's rollout progress, one line per change, until it ends.
    async fn follow(&self, model: &str, writer: &mut tokio::net::unix::OwnedWriteHalf) -> std::io::Result<()> {
        let Some(mut progress) = self.engine.follow(model) else {
            return send(writer, &answer(Err(format!("model '{model}' has had no rollout")))).await;
        };
        loop {
            let now = progress.borrow_and_update().clone();
            let done = now.phase.is_done();
            send(writer, &answer(Ok(serde_json::to_value(&now).expect("progress serializes")))).await?;
            if done || progress.changed().await.is_err() {
                return Ok(());
            }
        }
    }
}

fn json<T: Serialize>(value: T) -> serde_json::Value {
    serde_json::to_value(value).expect("answers serialize")
}

fn done<T: Serialize, E: std::fmt::Display>(result: Result<T, E>) -> Result<serde_json::Value, String> {
    result.map(json).map_err(|e| e.to_string())
}

fn parse_strategy(name: Option<&str>) -> Result<Option<Strategy>, String> {
    name.map(|n| {
        Strategy::parse(n).ok_or_else(|| {
            let known: Vec<&str> = Strategy::ALL.iter().map(|s| s.name()).collect();
            format!("'{n}' is not a strategy (one of {})", known.join(", "))
        })
    })
    .transpose()
}

fn answer(result: Result<serde_json::Value, String>) -> Response {
    match result {
        Ok(data) => Response { ok: true, data: Some(data), error: None },
        Err(error) => Response { ok: false, data: None, error: Some(error) },
    }
}

async fn send(writer: &mut tokio::net::unix::OwnedWriteHalf, response: &Response) -> std::io::Result<()> {
    let mut out = serde_json::to_vec(response).expect("response serializes");
    out.push(b'\n');
    writer.write_all(&out).await
}
