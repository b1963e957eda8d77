//! `modeld probe`: a kubelet's exec probe (or a script's) against the daemon, with the
//! probes token read from a file (a mounted Secret), for when `open_probes = false`: an
//! `httpGet` probe cannot send a token the pod spec does not show in clear.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Which probe: its path on the daemon.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Which {
    /// `/v2/health/live`: the daemon answers.
    Live,
    /// `/ready`: every model's stable version serves.
    Ready,
    /// `/health`: 503 only when a check is critical.
    Health,
}

impl Which {
    fn path(self) -> &'static str {
        match self {
            Which::Live => "/v2/health/live",
            Which::Ready => "/ready",
            Which::Health => "/health",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Probe {
    #[arg(value_enum)]
    which: Which,
    /// The daemon's address (inside a pod: the container's own port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    address: String,
    /// A file holding a token of the probes scope, sent as `Authorization: Bearer`.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// How long the answer may take.
    #[arg(long, default_value = "3", value_name = "SECONDS")]
    timeout: u64,
}

/// Exit 0 when the daemon answers 200, 1 otherwise (saying what came back).
pub fn probe(args: Probe) -> ExitCode {
    let token = match &args.token_file {
        None => None,
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => Some(text.trim().to_string()),
            Err(e) => {
                eprintln!("modeld probe: cannot read the token file {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let asked =
        runtime.block_on(async { tokio::time::timeout(Duration::from_secs(args.timeout), get(&args, token)).await });
    match asked {
        Ok(Ok((200, _))) => ExitCode::SUCCESS,
        Ok(Ok((status, body))) => {
            eprintln!("modeld probe {}: {status} {}", args.which.path(), body.trim());
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("modeld probe {}: {}: {e}", args.which.path(), args.address);
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("modeld probe {}: no answer within {} s", args.which.path(), args.timeout);
            ExitCode::FAILURE
        }
    }
}

/// One GET of the probe's path: its status and body.
async fn get(args: &Probe, token: Option<String>) -> Result<(u16, String), Box<dyn std::error::Error>> {
    let stream = tokio::net::TcpStream::connect(&args.address).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = hyper::Request::get(args.which.path()).header(hyper::header::HOST, &args.address);
    if let Some(token) = token {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = sender.send_request(request.body(Empty::<Bytes>::new())?).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
