//! The worker's socket server: answers the supervisor's Hello once the model is loaded
//! (Ready or LoadFailed), then runs Infer frames concurrently and writes each reply as soon
//! as it is done, in any order.
//!
//! With one inference thread, a connection is served by [`DirectServer`] on one thread.
//! Otherwise requests go through the [`Batcher`], which runs at most `threads` inferences
//! at once, each on a blocking thread so the socket keeps being read meanwhile. On SIGTERM the
//! server stops accepting connections and exits once the requests it holds are answered.

use super::batcher::{Batcher, Policy, reply_frame};
use super::direct::DirectServer;
use super::engine::Engine;
use super::in_flight::InFlight;
use crate::wire::{self, Frame, PROTOCOL_VERSION};
use std::sync::{Arc, OnceLock};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, Semaphore, mpsc, watch};

/// Where loading stands, watched by connections waiting to answer Hello.
#[derive(Clone)]
pub enum LoadState {
    Loading,
    Ready(Arc<Engine>),
    Failed(String),
}

pub struct Server {
    pub load: watch::Receiver<LoadState>,
    pub slots: Arc<Semaphore>,
    pub in_flight: Arc<InFlight>,
    /// Notified once a LoadFailed has been sent, so the worker can exit.
    pub told: Arc<Notify>,
    pub policy: Policy,
    /// Started with the first connection after the model loaded.
    pub batcher: OnceLock<Batcher>,
    /// One inference at a time: frames are read, batched, run and answered on one thread.
    pub direct: bool,
    /// How long the direct loop polls for the next request before sleeping.
    pub busy_poll: std::time::Duration,
    /// The supervisor's pid: the only process whose connections are served.
    pub supervisor: Option<u32>,
}

impl Server {
    /// Accepts connections until `stop` resolves, and returns what it resolved to.
    pub async fn accept_until<T>(
        self: Arc<Self>,
        listener: UnixListener,
        stop: impl std::future::Future<Output = T>,
    ) -> T {
        crate::accept::until(&listener, "worker socket", stop, |stream| {
            if let Err(why) = self.admit_supervisor(&stream) {
                tracing::warn!("refused a connection on the worker socket: {why}");
                return;
            }
            let server = self.clone();
            tokio::spawn(async move {
                if let Err(e) = server.serve(stream).await {
                    tracing::warn!("supervisor connection ended: {e}");
                }
            });
        })
        .await
    }

    /// Whether the peer is the supervisor (SO_PEERCRED): the socket's directory keeps other
    /// users out, and this keeps out other processes of the same user.
    fn admit_supervisor(&self, stream: &UnixStream) -> Result<(), String> {
        let Some(supervisor) = self.supervisor else { return Ok(()) };
        let cred = stream.peer_cred().map_err(|e| format!("cannot read the peer's credentials: {e}"))?;
        match cred.pid() {
            Some(pid) if pid as u32 == supervisor => Ok(()),
            pid => Err(format!("pid {pid:?} (uid {}) is not the supervisor (pid {supervisor})", cred.uid())),
        }
    }

    /// One connection from the supervisor: the handshake, then its frames, on one thread
    /// ([`DirectServer`]) or through the batcher.
    async fn serve(self: Arc<Self>, stream: UnixStream) -> std::io::Result<()> {
        let (reader, writer) = stream.into_split();
        // Buffered: a burst of requests is read in one system call, not two per frame.
        let mut reader = tokio::io::BufReader::with_capacity(64 * 1024, reader);
        let mut writer = BufWriter::new(writer);
        let Some(engine) = self.handshake(&mut reader, &mut writer).await? else {
            return Ok(());
        };
        if self.direct && reader.buffer().is_empty() {
            let stream = reader.into_inner().reunite(writer.into_inner()).map_err(std::io::Error::other)?;
            return self.hand_to_direct(stream, engine).await;
        }
        let (replies, outbox) = mpsc::channel::<Vec<u8>>(1024);
        let write_loop = tokio::spawn(write_replies(writer, outbox));
        self.read_requests(&mut reader, engine, replies).await?;
        write_loop.await.map_err(std::io::Error::other)?
    }

    /// Answers Hello with Ready once the model is loaded (the engine to serve with), or
    /// with LoadFailed (`None`: the worker then exits).
    async fn handshake(
        &self,
        reader: &mut (impl tokio::io::AsyncRead + Unpin),
        writer: &mut (impl tokio::io::AsyncWrite + Unpin),
    ) -> std::io::Result<Option<Arc<Engine>>> {
        match wire::recv(reader).await? {
            Frame::Hello { protocol } if protocol == PROTOCOL_VERSION => {}
            other => {
                let reason = format!("expected Hello for protocol {PROTOCOL_VERSION}, got {other:?}");
                wire::send(writer, &Frame::LoadFailed { reason: reason.clone() }).await?;
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, reason));
            }
        }
        match self.loaded().await {
            LoadState::Ready(engine) => {
                wire::send(writer, &Frame::Ready(engine.info.clone())).await?;
                Ok(Some(engine))
            }
            LoadState::Failed(reason) => {
                wire::send(writer, &Frame::LoadFailed { reason }).await?;
                self.told.notify_one();
                Ok(None)
            }
            LoadState::Loading => unreachable!("loaded() waits past Loading"),
        }
    }

    /// One inference at a time: a plain thread reads, batches, runs and answers the frames
    /// itself, with no hand-off between threads per request.
    async fn hand_to_direct(self: Arc<Self>, stream: UnixStream, engine: Arc<Engine>) -> std::io::Result<()> {
        let stream = stream.into_std()?;
        tokio::task::spawn_blocking(move || {
            DirectServer::new(stream, &engine, &self.policy, &self.in_flight, self.busy_poll)?.serve()
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Reads Infer frames and runs each on its own task through the batcher, its reply
    /// sent to `replies`; answers Ping at once, while inference threads are busy.
    async fn read_requests(
        &self,
        reader: &mut (impl tokio::io::AsyncRead + Unpin),
        engine: Arc<Engine>,
        replies: mpsc::Sender<Vec<u8>>,
    ) -> std::io::Result<()> {
        let batcher = self
            .batcher
            .get_or_init(|| Batcher::start(engine.clone(), self.slots.clone(), self.policy.clone()))
            .clone();
        while let Some(body) = wire::read_frame(reader).await? {
            let frame = Frame::decode(&body).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            let (id, inputs) = match frame {
                Frame::Infer { id, inputs } => (id, inputs),
                Frame::Ping { id } => {
                    let _ = replies.send(Frame::Pong { id }.encode()).await;
                    continue;
                }
                _ => {
                    tracing::warn!("ignoring unexpected frame from supervisor");
                    continue;
                }
            };
            let guard = self.in_flight.enter();
            let (engine, batcher, replies) = (engine.clone(), batcher.clone(), replies.clone());
            tokio::spawn(async move {
                let reply = match engine.prepare(inputs) {
                    Ok(prepared) => batcher.submit(prepared).await,
                    Err(failure) => Err(failure),
                };
                let _ = replies.send(reply_frame(id, reply).encode()).await;
                drop(guard);
            });
        }
        Ok(())
    }

    async fn loaded(&self) -> LoadState {
        let mut load = self.load.clone();
        let state = load.wait_for(|s| !matches!(s, LoadState::Loading)).await;
        match state {
            Ok(state) => state.clone(),
            Err(_) => LoadState::Failed("loader stopped without a result".into()),
        }
    }
}

/// Writes replies as they come, flushing only when no other reply is ready so that a
/// burst shares one write.
async fn write_replies(
    mut writer: BufWriter<tokio::net::unix::OwnedWriteHalf>,
    mut outbox: mpsc::Receiver<Vec<u8>>,
) -> std::io::Result<()> {
    while let Some(frame) = outbox.recv().await {
        writer.write_all(&frame).await?;
        if outbox.is_empty() {
            writer.flush().await?;
        }
    }
    Ok(())
}
