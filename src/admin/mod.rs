//! The admin API: a Unix socket (mode 0660) through which the `modeld` CLI asks the
//! daemon about its state; HTTP stays read-only for clients and probes.
//!
//! The protocol is one JSON request per line, `{"command": "status"}`, answered by one
//! JSON line, `{"ok": true, "data": ...}` or `{"ok": false, "error": "..."}`. It is the
//! control path, not the request path, so JSON costs nothing that matters here. The
//! client side is [`client`]. At startup the socket also guards against a second daemon
//! on the same run directory: a socket that answers means one is already running.

pub mod client;
pub mod status;

use crate::health::Host;
use crate::router::Router;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

/// What the CLI may ask.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// Models, versions, roles, weights, states and health.
    Status,
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
    #[error("could not create admin socket {path}: {source}")]
    Bind { path: PathBuf, source: std::io::Error },
}

/// Serves admin requests on its socket.
pub struct Admin {
    pub router: Arc<Router>,
    pub host: Arc<Host>,
    pub started: Instant,
}

/// Binds the admin socket (0660), refusing if another daemon answers on it.
pub async fn bind(path: &Path) -> Result<UnixListener, AdminError> {
    let bind_error = |source| AdminError::Bind { path: path.to_path_buf(), source };
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
    Ok(listener)
}

impl Admin {
    /// Answers connections until `stop`, then removes the socket.
    pub async fn serve(self: Arc<Self>, listener: UnixListener, path: PathBuf, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let admin = self.clone();
                        tokio::spawn(async move {
                            if let Err(e) = admin.connection(stream).await {
                                tracing::debug!("admin connection ended: {e}");
                            }
                        });
                    }
                    Err(e) => tracing::warn!("admin accept failed: {e}"),
                },
            }
        }
        let _ = std::fs::remove_file(path);
    }

    async fn connection(&self, stream: UnixStream) -> std::io::Result<()> {
        let (reader, mut writer) = stream.into_split();
        let mut lines = BufReader::new(reader).lines();
        while let Some(line) = lines.next_line().await? {
            let response = match serde_json::from_str::<Request>(&line) {
                Ok(request) => self.handle(request),
                Err(e) => Response { ok: false, data: None, error: Some(format!("malformed admin request: {e}")) },
            };
            let mut out = serde_json::to_vec(&response).expect("response serializes");
            out.push(b'\n');
            writer.write_all(&out).await?;
        }
        Ok(())
    }

    fn handle(&self, request: Request) -> Response {
        match request {
            Request::Status => {
                let data = serde_json::to_value(status::collect(&self.router, &self.host, self.started))
                    .expect("status serializes");
                Response { ok: true, data: Some(data), error: None }
            }
        }
    }
}
