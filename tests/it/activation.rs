//! Socket activation: the daemon serves on the HTTP and admin sockets a service manager
//! hands it (`LISTEN_FDS`), and a restart on them refuses no connection — they wait in
//! the kernel's backlog while one daemon stops and the next starts, as under a systemd
//! socket unit. The test holds the sockets as systemd would.

use crate::util::{ModelFiles, Setup, TestDaemon};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const BODY: &str = r#"{"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}"#;

/// How one request ended: its status (0: the connection was refused or broke) and time.
pub struct Shot {
    pub status: u16,
    pub refused: bool,
    pub took: Duration,
}

/// One request on a connection of its own (`Connection: close`), so a refused connection
/// shows as one.
pub fn one_request(addr: SocketAddr) -> Shot {
    let started = Instant::now();
    let mut stream = match TcpStream::connect(addr) {
        Ok(stream) => stream,
        Err(_) => return Shot { status: 0, refused: true, took: started.elapsed() },
    };
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let request = format!(
        "POST /v2/models/iris/infer HTTP/1.1\r\nHost: modeld\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let mut answer = String::new();
    let read = stream.write_all(request.as_bytes()).and_then(|()| stream.read_to_string(&mut answer));
    let status = match read {
        Ok(_) => answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0),
        Err(_) => 0,
    };
    Shot { status, refused: false, took: started.elapsed() }
}

/// Clients opening a connection per request until told to stop.
pub struct Clients {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Vec<Shot>>>,
}

impl Clients {
    pub fn start(addr: SocketAddr, count: usize) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..count)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut shots = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        shots.push(one_request(addr));
                    }
                    shots
                })
            })
            .collect();
        Clients { stop, threads }
    }

    pub fn stop(self) -> Vec<Shot> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
    }
}

#[test]
fn a_restart_on_handed_over_sockets_refuses_no_connection() {
    let daemon = TestDaemon::ready_on_held_sockets(Setup::new().model(ModelFiles::bundled("iris", 2), 2));
    assert!(daemon.logs().contains("HTTP socket handed over by the service manager"), "{}", daemon.logs());
    assert_eq!(daemon.cli(&["status"]).0, 0, "the admin socket handed over answers");
    let clients = Clients::start(daemon.addr, 4);
    std::thread::sleep(Duration::from_millis(500));
    let restart = Instant::now();
    let (daemon, stopped) = daemon.restart_on_held_sockets();
    daemon.wait_ready();
    let ready = restart.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let shots = clients.stop();
    let refused = shots.iter().filter(|s| s.refused).count();
    let failed: Vec<u16> = shots.iter().filter(|s| !s.refused && s.status != 200).map(|s| s.status).collect();
    let slowest = shots.iter().map(|s| s.took).max().unwrap();
    eprintln!(
        "FIGURE restart on held sockets: {} requests, {refused} refused, {} failed {failed:?}; the old daemon stopped in {:.2} s, \
         the new one ready {:.2} s after the SIGTERM; slowest request {:.2} s",
        shots.len(),
        failed.len(),
        stopped.as_secs_f64(),
        ready.as_secs_f64(),
        slowest.as_secs_f64()
    );
    assert_eq!(refused, 0, "connections refused during the restart");
    assert!(failed.is_empty(), "requests failed during the restart: {failed:?}\n{}", daemon.logs());
    assert!(shots.len() > 50, "only {} requests", shots.len());
    // The socket file is the manager's: the first daemon left it in place for the second.
    assert_eq!(daemon.cli(&["status"]).0, 0, "the admin socket survived the restart");
}
