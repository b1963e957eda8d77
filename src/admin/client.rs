//! The CLI's side of the admin socket: finds the socket (from `--socket`, or the config's
//! `server.admin_socket`), sends one request and reads the answer.

use super::{Request, Response};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("could not reach modeld at {path}: {error} (is the daemon running, and may you use its admin socket?)")]
    Connect { path: PathBuf, error: std::io::Error },
    #[error("admin socket {path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("admin socket {path}: unreadable answer: {reason}")]
    Answer { path: PathBuf, reason: String },
    #[error("modeld refused: {0}")]
    Refused(String),
}

/// Sends `request` to the daemon listening on `socket`; returns its data.
pub fn call(socket: &Path, request: &Request) -> Result<serde_json::Value, ClientError> {
    let mut answer = None;
    stream(socket, request, |data| {
        answer = Some(data);
        false
    })?;
    answer.ok_or_else(|| ClientError::Answer { path: socket.to_path_buf(), reason: "no answer".into() })
}

/// Sends `request` and hands each answer line's data to `each` until it returns false or
/// the daemon ends the stream; returns the last data seen.
pub fn stream(
    socket: &Path,
    request: &Request,
    mut each: impl FnMut(serde_json::Value) -> bool,
) -> Result<Option<serde_json::Value>, ClientError> {
    let io = |source| ClientError::Io { path: socket.to_path_buf(), error: source };
    let stream = UnixStream::connect(socket)
        .map_err(|source| ClientError::Connect { path: socket.to_path_buf(), error: source })?;
    let mut line = serde_json::to_vec(request).expect("request serializes");
    line.push(b'\n');
    (&stream).write_all(&line).map_err(io)?;
    let mut last = None;
    for answer in BufReader::new(&stream).lines() {
        let response: Response = serde_json::from_str(&answer.map_err(io)?)
            .map_err(|e| ClientError::Answer { path: socket.to_path_buf(), reason: e.to_string() })?;
        let data = match response {
            Response { ok: true, data, .. } => data.unwrap_or(serde_json::Value::Null),
            Response { error, .. } => {
                return Err(ClientError::Refused(error.unwrap_or_else(|| "no reason given".into())));
            }
        };
        last = Some(data.clone());
        if !each(data) {
            break;
        }
    }
    Ok(last)
}
