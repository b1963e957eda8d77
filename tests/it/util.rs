//! `TestDaemon`: the real `modeld` binary started on a temporary directory and a free
//! loopback port, with helpers to talk HTTP to it, signal it and read its logs. It is
//! killed on drop (its workers die with it).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_modeld");

/// The repository's fixtures directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The bundled model repository.
pub fn bundled_models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// A model version to place in the test's repository.
pub struct ModelFiles {
    pub name: String,
    pub version: u64,
    pub onnx: Vec<u8>,
    pub manifest: Option<String>,
    /// The version's `validation.jsonl`.
    pub validation: Option<String>,
}

impl ModelFiles {
    pub fn new(name: &str, version: u64, onnx: Vec<u8>) -> ModelFiles {
        ModelFiles { name: name.into(), version, onnx, manifest: None, validation: None }
    }

    /// A reference model from tests/fixtures/reference.
    pub fn reference(name: &str) -> ModelFiles {
        let onnx = std::fs::read(fixtures().join("reference").join(format!("{name}.onnx"))).expect("reference model");
        ModelFiles::new(name, 1, onnx)
    }

    /// A version of a bundled model, with its model.toml.
    pub fn bundled(name: &str, version: u64) -> ModelFiles {
        let dir = bundled_models().join(name).join(version.to_string());
        ModelFiles {
            name: name.into(),
            version,
            onnx: std::fs::read(dir.join("model.onnx")).expect("bundled model"),
            manifest: std::fs::read_to_string(dir.join("model.toml")).ok(),
            validation: None,
        }
    }

    pub fn with_manifest(mut self, manifest: &str) -> ModelFiles {
        self.manifest = Some(manifest.into());
        self
    }

    pub fn write_to(&self, repository: &Path) {
        let dir = repository.join(&self.name).join(self.version.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("model.onnx"), &self.onnx).unwrap();
        if let Some(m) = &self.manifest {
            std::fs::write(dir.join("model.toml"), m).unwrap();
        }
        if let Some(v) = &self.validation {
            std::fs::write(dir.join("validation.jsonl"), v).unwrap();
        }
    }
}

/// What to start a daemon with.
pub struct Setup {
    files: Vec<ModelFiles>,
    /// `[[model]]` tables: (name, extra lines).
    models: Vec<(String, String)>,
    server: Vec<String>,
    /// Other top-level sections, verbatim.
    sections: Vec<String>,
    /// Runs on the test's directory once its files are written, before the daemon starts.
    prepare: Option<Prepare>,
}

/// What runs on a test's directory before its daemon starts.
type Prepare = Box<dyn Fn(&Path)>;

impl Setup {
    pub fn new() -> Setup {
        Setup { files: Vec::new(), models: Vec::new(), server: Vec::new(), sections: Vec::new(), prepare: None }
    }

    /// Runs `prepare` on the test's directory before the daemon starts (e.g. to mount a
    /// filesystem over its state directory).
    pub fn before_start(mut self, prepare: impl Fn(&Path) + 'static) -> Setup {
        self.prepare = Some(Box::new(prepare));
        self
    }

    /// Adds the model's files and a `[[model]]` table with these lines.
    pub fn model_with(mut self, files: ModelFiles, lines: &str) -> Setup {
        self.models.push((files.name.clone(), lines.into()));
        self.files.push(files);
        self
    }

    /// Adds a model version's files only (another version of a configured model).
    pub fn files(mut self, files: ModelFiles) -> Setup {
        self.files.push(files);
        self
    }

    /// Adds a top-level section such as `[health]` with its lines.
    pub fn server_section(mut self, text: &str) -> Setup {
        self.sections.push(text.into());
        self
    }

    /// Adds the model's files and a `[[model]]` table serving it with `workers` workers.
    pub fn model(mut self, files: ModelFiles, workers: usize) -> Setup {
        if !self.models.iter().any(|(n, _)| *n == files.name) {
            self.models.push((files.name.clone(), format!("workers = {workers}\n")));
        }
        self.files.push(files);
        self
    }

    /// Adds a `[[model]]` table without files, with extra lines.
    pub fn configure(mut self, name: &str, extra: &str) -> Setup {
        self.models.push((name.into(), extra.into()));
        self
    }

    /// Adds a line to `[server]`, e.g. `request_timeout = "1s"`.
    pub fn server(mut self, line: &str) -> Setup {
        self.server.push(line.into());
        self
    }

    pub fn config(&self) -> String {
        let mut text = String::from("[server]\nrepository = \"models\"\nlog_level = \"debug\"\n");
        for line in &self.server {
            text.push_str(line);
            text.push('\n');
        }
        for section in &self.sections {
            text.push_str(&format!("\n{section}\n"));
        }
        for (name, extra) in &self.models {
            text.push_str(&format!("\n[[model]]\nname = \"{name}\"\n{extra}"));
        }
        text
    }
}

pub struct TestDaemon {
    pub child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    logs: Arc<Mutex<Vec<String>>>,
    agent: ureq::Agent,
    /// Sockets the test holds and hands to each daemon it starts, as a systemd socket unit
    /// does (socket activation); none: the daemon binds its own.
    held: Option<Arc<HeldSockets>>,
}

/// The HTTP and admin sockets a test holds across daemons (see [`TestDaemon::held`]).
pub struct HeldSockets {
    pub http: std::net::TcpListener,
    pub admin: std::os::unix::net::UnixListener,
}

/// An HTTP answer: status, body and the headers tests look at.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub retry_after: Option<String>,
    pub allow: Option<String>,
    /// The version that took the request (the `x-modeld-version` response header).
    pub version: Option<u64>,
}

/// An HTTP answer whose body is bytes (binary tensors).
#[derive(Debug)]
pub struct RawAnswer {
    pub status: u16,
    pub headers: std::collections::HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl TestDaemon {
    /// Starts a daemon and waits until it listens (not until models are ready).
    pub fn start(setup: Setup) -> TestDaemon {
        let (dir, config) = Self::lay_out(&setup);
        Self::spawn(dir, &config)
    }

    /// A directory with the setup's models, its config (returned) and whatever its
    /// `before_start` prepares.
    fn lay_out(setup: &Setup) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        for files in &setup.files {
            files.write_to(&dir.path().join("models"));
        }
        let config = dir.path().join("modeld.toml");
        std::fs::write(&config, setup.config()).unwrap();
        if let Some(prepare) = &setup.prepare {
            prepare(dir.path());
        }
        (dir, config)
    }

    /// Kills this daemon (as `kill -9` would) and starts a new one on the same directory.
    pub fn restart(mut self) -> TestDaemon {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let config = self.dir.path().join("modeld.toml");
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        TestDaemon::spawn(dir, &config)
    }

    /// Runs a `modeld` operator command against this daemon's admin socket.
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(BIN)
            .args(args)
            .arg("--socket")
            .arg(self.dir.path().join("run/admin.sock"))
            .output()
            .expect("modeld runs");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
    }

    /// Rewrites the config file (for reload tests).
    pub fn write_config(&self, text: &str) {
        std::fs::write(self.dir.path().join("modeld.toml"), text).unwrap();
    }

    /// Starts a daemon on sockets the test holds (socket activation), and waits for `/ready`.
    pub fn ready_on_held_sockets(setup: Setup) -> TestDaemon {
        let (dir, config) = Self::lay_out(&setup);
        std::fs::create_dir_all(dir.path().join("run")).unwrap();
        let held = Arc::new(HeldSockets {
            http: std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
            admin: std::os::unix::net::UnixListener::bind(dir.path().join("run/admin.sock")).unwrap(),
        });
        let daemon = Self::spawn_with(dir, &config, Some(held));
        daemon.wait_ready();
        daemon
    }

    /// Stops this daemon as systemd does (SIGTERM, waiting for it to finish its requests
    /// and exit), then starts a new one on the same directory and the same held sockets.
    pub fn restart_on_held_sockets(mut self) -> (TestDaemon, Duration) {
        let started = Instant::now();
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let status = self.wait_exit(Duration::from_secs(60));
        assert!(status.success(), "the first daemon stopped with {status}:\n{}", self.logs());
        let stopped = started.elapsed();
        let config = self.dir.path().join("modeld.toml");
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (TestDaemon::spawn_with(dir, &config, self.held.take()), stopped)
    }

    fn spawn(dir: tempfile::TempDir, config: &Path) -> TestDaemon {
        Self::spawn_with(dir, config, None)
    }

    fn spawn_with(dir: tempfile::TempDir, config: &Path, held: Option<Arc<HeldSockets>>) -> TestDaemon {
        // A daemon killed before (restart) left its address behind.
        let address_file = dir.path().join("run").join(modeld::daemon::ADDRESS_FILE);
        let _ = std::fs::remove_file(&address_file);
        let mut command = match &held {
            None => Command::new(BIN),
            Some(held) => {
                use std::os::fd::AsRawFd;
                use std::os::unix::process::CommandExt;
                let fds = [held.http.as_raw_fd(), held.admin.as_raw_fd()];
                // The protocol systemd speaks: the sockets at fds 3 and 4, LISTEN_PID the
                // daemon's own pid (the shell's, which exec keeps).
                let mut command = Command::new("sh");
                command
                    .args(["-c", "LISTEN_PID=$$ exec \"$0\" \"$@\"", BIN])
                    .env("LISTEN_FDS", "2")
                    .env("LISTEN_FDNAMES", "http:admin");
                // SAFETY: dup2 is async-signal-safe, and the fds stay open in this process.
                unsafe {
                    command.pre_exec(move || {
                        // Copied out of the way first (either may already be 3 or 4, and
                        // dup2 onto itself would keep close-on-exec), then into place.
                        let mut high = [0; 2];
                        for (copy, from) in high.iter_mut().zip(fds) {
                            *copy = nix::libc::fcntl(from, nix::libc::F_DUPFD_CLOEXEC, 10);
                            if *copy < 0 {
                                return Err(std::io::Error::last_os_error());
                            }
                        }
                        for (to, from) in [3, 4].into_iter().zip(high) {
                            if nix::libc::dup2(from, to) < 0 {
                                return Err(std::io::Error::last_os_error());
                            }
                        }
                        Ok(())
                    });
                }
                command
            }
        };
        let mut child = command
            .args(["serve", "--config"])
            .arg(config)
            .args(["--listen", "127.0.0.1:0", "--run-dir"])
            .arg(dir.path().join("run"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("modeld starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match listening_address(&mut child, &address_file) {
            Some(addr) => addr,
            None => {
                let _ = child.kill();
                panic!("modeld did not start listening:\n{}", logs.lock().unwrap().join("\n"));
            }
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        TestDaemon { child, addr, dir, logs, agent, held }
    }

    /// Starts a daemon and waits for `/ready`.
    pub fn ready(setup: Setup) -> TestDaemon {
        let daemon = TestDaemon::start(setup);
        daemon.wait_ready();
        daemon
    }

    /// The test's directory (config, models/, run/, state/).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub fn wait_ready(&self) {
        self.wait_until("/ready to answer 200", Duration::from_secs(60), || self.get("/ready").status == 200);
    }

    /// Polls `check` every 20 ms until it holds, panicking with the logs after `timeout`.
    pub fn wait_until(&self, what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !check() {
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; logs:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn get(&self, path: &str) -> Answer {
        answer(self.agent.get(&self.url(path)).call())
    }

    /// A GET on a new connection (the shared pool's idle connections may have been closed
    /// by the server's header timeout).
    pub fn get_fresh(&self, path: &str) -> Answer {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        answer(agent.get(&self.url(path)).call())
    }

    pub fn post(&self, path: &str, body: &str) -> Answer {
        answer(self.agent.post(&self.url(path)).header("content-type", "application/json").send(body))
    }

    /// A POST of raw bytes with these headers; the answer's body as bytes, and a header.
    pub fn post_raw(&self, path: &str, body: &[u8], headers: &[(&str, &str)]) -> RawAnswer {
        let mut request = self.agent.post(&self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        match request.send(body) {
            Ok(mut response) => {
                let headers = response
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
                    .collect();
                let body = response.body_mut().with_config().limit(1 << 30).read_to_vec().unwrap_or_default();
                RawAnswer { status: response.status().as_u16(), headers, body }
            }
            Err(e) => RawAnswer { status: 0, headers: Default::default(), body: e.to_string().into_bytes() },
        }
    }

    /// A new agent (own connection pool), for clients on other threads.
    pub fn client(&self) -> Client {
        Client { base: self.url(""), agent: self.agent.clone() }
    }

    pub fn health(&self) -> serde_json::Value {
        self.get("/health").json()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The daemon's worker processes (its direct children).
    pub fn worker_pids(&self) -> Vec<i32> {
        children_of(self.pid())
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).unwrap();
    }

    /// Waits for the daemon to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                panic!("modeld did not exit within {timeout:?}; logs:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client usable from another thread.
#[derive(Clone)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
}

impl Client {
    pub fn post(&self, path: &str, body: &str) -> Answer {
        answer(self.agent.post(&format!("{}{path}", self.base)).header("content-type", "application/json").send(body))
    }

    /// A POST with one extra header.
    pub fn post_with(&self, path: &str, body: &str, header: (&str, &str)) -> Answer {
        let request = self.agent.post(&format!("{}{path}", self.base)).header("content-type", "application/json");
        answer(request.header(header.0, header.1).send(body))
    }
}

fn answer(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
    match result {
        Ok(mut response) => {
            let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(String::from);
            let (retry_after, allow) = (header("retry-after"), header("allow"));
            let version = header("x-modeld-version").and_then(|v| v.parse().ok());
            Answer {
                status: response.status().as_u16(),
                body: response.body_mut().read_to_string().unwrap_or_default(),
                retry_after,
                allow,
                version,
            }
        }
        // Transport failures (connection reset, refused) read as status 0.
        Err(e) => Answer { status: 0, body: e.to_string(), retry_after: None, allow: None, version: None },
    }
}

/// Direct children of `pid`, from /proc.
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        // Fields after the parenthesised command: state, ppid, ...
        let Some(rest) = stat.rsplit(')').next() else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(pid) && fields.first() != Some(&"Z") {
            out.push(child);
        }
    }
    out
}

/// A daemon's log without its DEBUG lines (a failing test's message stays readable).
pub fn above_debug(logs: &str) -> String {
    logs.lines().filter(|l| !l.contains(" DEBUG ")).collect::<Vec<_>>().join("\n")
}

/// Whether a process is still running (and not a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| !r.trim_start().starts_with('Z')))
}

/// An OIP infer body with one FP32 input.
pub fn infer_body(name: &str, shape: &[usize], data: &[f32]) -> String {
    serde_json::json!({ "inputs": [{ "name": name, "shape": shape, "datatype": "FP32", "data": data }] }).to_string()
}

/// The address the daemon listens on, from the file it writes in its run directory once
/// bound (`None` if it exits first or takes over 30 s).
fn listening_address(child: &mut Child, file: &Path) -> Option<SocketAddr> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(file) {
            return Some(text.trim().parse().expect("the address file holds an address"));
        }
        if child.try_wait().ok().flatten().is_some() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}
