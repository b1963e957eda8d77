//! The one accept loop of every listener modeld has (HTTP, the admin socket, each
//! worker's socket): connections are handed on until a stop resolves, and a failing
//! `accept` (EMFILE or ENFILE when descriptors run out, ENOBUFS, ENOMEM) is logged and
//! backed off — from 10 ms, doubling to 1 s, reset by the next connection — instead of
//! spinning a core while the condition lasts. Depends on nothing of ours.

use std::future::Future;
use std::time::Duration;

const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A listener the loop can take connections from.
pub trait Listener {
    type Stream: Send + 'static;
    fn accept_one(&self) -> impl Future<Output = std::io::Result<Self::Stream>> + Send;
}

impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept_one(&self) -> std::io::Result<Self::Stream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

impl Listener for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn accept_one(&self) -> std::io::Result<Self::Stream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

/// Accepts connections on `listener` (named `what` in the log) until `stop` resolves,
/// handing each to `connection`, and returns what `stop` resolved to.
pub async fn until<L: Listener, T>(
    listener: &L,
    what: &str,
    stop: impl Future<Output = T>,
    mut connection: impl FnMut(L::Stream),
) -> T {
    tokio::pin!(stop);
    let mut backoff = FIRST_BACKOFF;
    loop {
        tokio::select! {
            why = &mut stop => return why,
            accepted = listener.accept_one() => match accepted {
                Ok(stream) => {
                    backoff = FIRST_BACKOFF;
                    connection(stream);
                }
                Err(e) => {
                    tracing::warn!("{what}: accept failed: {e}; retrying in {backoff:?}");
                    // The stop still wins while backing off.
                    tokio::select! {
                        why = &mut stop => return why,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A listener whose accepts fail `failures` times, then block forever.
    struct Failing {
        failures: AtomicUsize,
        calls: Arc<AtomicUsize>,
    }

    impl Listener for Failing {
        type Stream = ();
        async fn accept_one(&self) -> std::io::Result<()> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            match self.failures.fetch_sub(1, Ordering::SeqCst) {
                0 => {
                    self.failures.store(0, Ordering::SeqCst);
                    std::future::pending().await
                }
                _ => Err(std::io::Error::from_raw_os_error(libc::EMFILE)),
            }
        }
    }

    /// Out of descriptors, the loop waits between tries (10 + 20 + 40 + 80 ms for four
    /// failures) instead of spinning, and still stops when told.
    #[tokio::test(start_paused = true)]
    async fn failing_accepts_back_off_and_the_stop_still_wins() {
        let calls = Arc::new(AtomicUsize::new(0));
        let listener = Failing { failures: AtomicUsize::new(4), calls: calls.clone() };
        let started = tokio::time::Instant::now();
        let stop = tokio::time::sleep(Duration::from_secs(5));
        let why = until(
            &listener,
            "test",
            async {
                stop.await;
                "stopped"
            },
            |_| unreachable!("no connection"),
        )
        .await;
        assert_eq!(why, "stopped");
        assert_eq!(calls.load(Ordering::SeqCst), 5, "four failures, then a pending accept");
        assert_eq!(started.elapsed(), Duration::from_secs(5));

        // With the stop due during a backoff, the loop returns at the stop, not after the backoff.
        let listener = Failing { failures: AtomicUsize::new(100), calls: Arc::new(AtomicUsize::new(0)) };
        let started = tokio::time::Instant::now();
        until(&listener, "test", tokio::time::sleep(Duration::from_millis(25)), |_| {}).await;
        assert_eq!(started.elapsed(), Duration::from_millis(25));
    }
}
