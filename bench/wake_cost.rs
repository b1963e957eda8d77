//! What waking a sleeping process costs on this machine: a one-byte ping-pong between two
//! processes over a Unix socket pair, with the answering side sleeping in `read` and then
//! busy-polling its socket. modeld's worker sits one such round trip behind the HTTP
//! server, so this is the floor of what the process boundary adds per request at
//! concurrency 1 (bench/run.py prints it next to the c=1 ratio).
//!
//!     cargo run --release --example wake_cost [ROUND_TRIPS]
//!
//! The answering side is this program started again with `answer`, so that both ends are
//! separate processes as the supervisor and a worker are.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("answer") {
        answer(args.get(2).map(String::as_str) == Some("poll"));
        return;
    }
    let round_trips: u32 = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(50_000);
    for mode in ["sleep", "poll"] {
        let micros = measure(mode, round_trips);
        println!(
            "round trip, answering side {}: {micros:.1} us",
            if mode == "sleep" { "sleeps in read" } else { "busy-polls" }
        );
    }
}

/// Mean round-trip time in microseconds against an answering process in `mode`.
fn measure(mode: &str, round_trips: u32) -> f64 {
    let (mut ours, theirs) = UnixStream::pair().expect("socket pair");
    // The child's stdin is its end of the pair.
    let stdin = unsafe { Stdio::from_raw_fd(theirs.into_raw_fd()) };
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .args(["answer", mode])
        .stdin(stdin)
        .spawn()
        .expect("answering process");
    let mut byte = [0u8; 1];
    let mut ping = || {
        ours.write_all(b"x").expect("ping");
        ours.read_exact(&mut byte).expect("pong");
    };
    (0..1000).for_each(|_| ping());
    let started = Instant::now();
    (0..round_trips).for_each(|_| ping());
    let micros = started.elapsed().as_secs_f64() * 1e6 / f64::from(round_trips);
    drop(ours);
    child.wait().expect("answering process exits");
    micros
}

/// Echoes every byte from stdin back until it closes, sleeping in `read` or polling.
fn answer(poll: bool) {
    let mut socket = unsafe { UnixStream::from_raw_fd(0) };
    socket.set_nonblocking(poll).expect("socket mode");
    let mut buffer = [0u8; 64];
    loop {
        match socket.read(&mut buffer) {
            Ok(0) => return,
            Ok(n) => socket.write_all(&buffer[..n]).expect("pong"),
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) => panic!("read: {e}"),
        }
    }
}
