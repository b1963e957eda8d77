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
use crate::wire::{self, Frame, PROTOCOL_VERSION};
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// Requests received and not yet answered, so a graceful stop can wait for them.
#[derive(Default)]
pub struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

impl InFlight {
    pub(super) fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self.clone())
    }

    /// Returns once no request is in flight.
    pub async fn wait_idle(&self) {
        loop {
            let idle = self.idle.notified();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}

pub(super) struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
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
}

impl Server {
    /// Accepts connections until `stop` resolves, and returns what it resolved to.
    pub async fn accept_until<T>(
        self: Arc<Self>,
        listener: UnixListener,
        stop: impl std::future::Future<Output = T>,
    ) -> T {
        crate::accept::until(&listener, "worker socket", stop, |stream| {
            let server = self.clone();
            tokio::spawn(async move {
                if let Err(e) = server.serve(stream).await {
                    tracing::warn!("supervisor connection ended: {e}");
                }
            });
        })
        .await
    }

    async fn serve(self: Arc<Self>, stream: UnixStream) -> std::io::Result<()> {
        let (reader, writer) = stream.into_split();
        // Buffered: a burst of requests is read in one system call, not two per frame.
        let mut reader = tokio::io::BufReader::with_capacity(64 * 1024, reader);
        let mut writer = BufWriter::new(writer);
        match wire::recv(&mut reader).await? {
            Frame::Hello { protocol } if protocol == PROTOCOL_VERSION => {}
            other => {
                let reason = format!("expected Hello for protocol {PROTOCOL_VERSION}, got {other:?}");
                wire::send(&mut writer, &Frame::LoadFailed { reason: reason.clone() }).await?;
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, reason));
            }
        }
        let engine = match self.loaded().await {
            LoadState::Ready(engine) => engine,
            LoadState::Failed(reason) => {
                wire::send(&mut writer, &Frame::LoadFailed { reason }).await?;
                self.told.notify_one();
                return Ok(());
            }
            LoadState::Loading => unreachable!("loaded() waits past Loading"),
        };
        wire::send(&mut writer, &Frame::Ready(engine.info.clone())).await?;
        if self.direct && reader.buffer().is_empty() {
            // One inference at a time: a plain thread reads, batches, runs and answers the
            // frames itself, with no hand-off between threads per request.
            let stream = reader.into_inner().reunite(writer.into_inner()).map_err(std::io::Error::other)?.into_std()?;
            let (in_flight, server) = (self.in_flight.clone(), self.clone());
            return tokio::task::spawn_blocking(move || {
                DirectServer::new(stream, &engine, &server.policy, &in_flight, server.busy_poll)?.serve()
            })
            .await
            .map_err(std::io::Error::other)?;
        }
        let batcher = self
            .batcher
            .get_or_init(|| Batcher::start(engine.clone(), self.slots.clone(), self.policy.clone()))
            .clone();

        let (replies, mut outbox) = mpsc::channel::<Vec<u8>>(1024);
        let write_loop = tokio::spawn(async move {
            while let Some(frame) = outbox.recv().await {
                writer.write_all(&frame).await?;
                // Flush only when no other reply is ready, so bursts share one write.
                if outbox.is_empty() {
                    writer.flush().await?;
                }
            }
            std::io::Result::Ok(())
        });
        while let Some(body) = wire::read_frame(&mut reader).await? {
            let frame = Frame::decode(&body).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            let (id, inputs) = match frame {
                Frame::Infer { id, inputs } => (id, inputs),
                // Answered by the reader itself, while inference threads are busy.
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
        drop(replies);
        write_loop.await.map_err(std::io::Error::other)?
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
