//! Bearer tokens ([auth]): the matrix of no, unknown, out-of-scope and right tokens on
//! every route family, probes open or closed, a reload that changes tokens under an open
//! keep-alive connection, `modeld token new`, tokens files, and `config check`'s warning.

use crate::util::{BIN, ModelFiles, Setup, TestDaemon};
use modeld::front::auth::hash_hex;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;

const IRIS_ROW: &str = "[5.1, 3.5, 1.4, 0.2]";

/// One keep-alive HTTP/1.1 connection, written by hand so that the test sees it survive.
struct Conn(BufReader<TcpStream>);

/// Status, `WWW-Authenticate`, body.
type Reply = (u16, Option<String>, String);

impl Conn {
    fn open(daemon: &TestDaemon) -> Conn {
        Conn(BufReader::new(TcpStream::connect(daemon.addr).unwrap()))
    }

    fn send(&mut self, method: &str, path: &str, token: Option<&str>, body: &str) -> Reply {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: modeld\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.0.get_mut().write_all(request.as_bytes()).unwrap();
        let mut status_line = String::new();
        self.0.read_line(&mut status_line).unwrap();
        let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let (mut length, mut challenge) = (0, None);
        loop {
            let mut line = String::new();
            self.0.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap(),
                "www-authenticate" => challenge = Some(value.trim().to_string()),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        self.0.read_exact(&mut body).unwrap();
        (status, challenge, String::from_utf8_lossy(&body).into_owned())
    }
}

pub fn token_table(name: &str, secret: &str, models: &str, scopes: &str) -> String {
    format!(
        "[[auth.token]]\nname = \"{name}\"\nsha256 = \"{}\"\nmodels = {models}\nscopes = {scopes}\n",
        hash_hex(secret)
    )
}

pub fn auth_section(open_probes: bool, tokens: &[String]) -> String {
    format!("[auth]\nopen_probes = {open_probes}\n\n{}", tokens.join("\n"))
}

fn two_tokens() -> Vec<String> {
    vec![
        token_table("infer-iris", "tok-infer-iris", "[\"iris\"]", "[\"infer\"]"),
        token_table("meta-all", "tok-meta-all", "[\"*\"]", "[\"metadata\"]"),
    ]
}

fn daemon() -> TestDaemon {
    TestDaemon::ready(
        Setup::new()
            .model(ModelFiles::bundled("iris", 2), 1)
            .model(ModelFiles::reference("tabular_mlp"), 1)
            .server_section(&auth_section(true, &two_tokens())),
    )
}

/// Each route family: no token and an unknown one are 401 with a challenge; a token
/// without the scope or model is 403; the right one passes.
#[test]
fn every_route_family_asks_for_the_right_token() {
    let daemon = daemon();
    let mut conn = Conn::open(&daemon);
    let iris_infer =
        format!(r#"{{"inputs": [{{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": {IRIS_ROW}}}]}}"#);
    let tf_predict = format!(r#"{{"instances": [{IRIS_ROW}]}}"#);
    let predict = format!(r#"{{"model": "iris", "features": {IRIS_ROW}}}"#);
    // (method, path, body, the token that may, a token that may not)
    let families: [(&str, &str, &str, &str, &str); 7] = [
        ("POST", "/v2/models/iris/infer", &iris_infer, "tok-infer-iris", "tok-meta-all"),
        ("GET", "/v2/models/iris", "", "tok-meta-all", "tok-infer-iris"),
        ("GET", "/v2", "", "tok-meta-all", "tok-infer-iris"),
        ("POST", "/v1/models/iris:predict", &tf_predict, "tok-infer-iris", "tok-meta-all"),
        ("GET", "/v1/models/iris", "", "tok-meta-all", "tok-infer-iris"),
        ("GET", "/v1/models/iris/metadata", "", "tok-meta-all", "tok-infer-iris"),
        ("POST", "/predict", &predict, "tok-infer-iris", "tok-meta-all"),
    ];
    for (method, path, body, right, wrong_scope) in families {
        let (status, challenge, text) = conn.send(method, path, None, body);
        assert_eq!(status, 401, "{method} {path} without a token: {text}");
        assert_eq!(challenge.as_deref(), Some(r#"Bearer realm="modeld""#), "{method} {path}");
        assert!(text.contains("\"error_type\":\"unauthorized\""), "{text}");
        let (status, challenge, _) = conn.send(method, path, Some("tok-guessed"), body);
        assert_eq!(status, 401, "{method} {path} with an unknown token");
        assert!(challenge.unwrap().contains(r#"error="invalid_token""#));
        let (status, challenge, text) = conn.send(method, path, Some(wrong_scope), body);
        assert_eq!(status, 403, "{method} {path} out of scope: {text}");
        assert!(challenge.unwrap().contains(r#"error="insufficient_scope""#));
        assert!(text.contains("\"error_type\":\"forbidden\""), "{text}");
        let (status, _, text) = conn.send(method, path, Some(right), body);
        assert_eq!(status, 200, "{method} {path} with {right}: {text}");
    }
    // The right scope on another model is out of scope too, whether the model is in the
    // path or (for /predict) in the body.
    let mlp = format!(r#"{{"model": "tabular_mlp", "features": [{}]}}"#, vec!["0.5"; 30].join(", "));
    let (status, challenge, _) = conn.send("POST", "/predict", Some("tok-infer-iris"), &mlp);
    assert_eq!(status, 403);
    assert!(challenge.unwrap().contains(r#"scope="infer:tabular_mlp""#));
    assert_eq!(conn.send("POST", "/v2/models/tabular_mlp/infer", Some("tok-infer-iris"), "{}").0, 403);
    // (A large body without a token is refused unread: `a_strangers_body_is_not_read`.)
    // Probes and /metrics are open (open_probes = true).
    for path in ["/v2/health/live", "/v2/health/ready", "/v2/models/iris/ready", "/ready", "/health", "/metrics"] {
        assert_eq!(conn.send("GET", path, None, "").0, 200, "{path}");
    }
}

/// A reload changes the tokens for the next request, on a connection opened before it;
/// closing the probes makes them ask for a token with the probes scope.
#[test]
fn a_reload_applies_token_changes_without_dropping_connections() {
    let daemon = daemon();
    let mut conn = Conn::open(&daemon);
    assert_eq!(conn.send("GET", "/v2/models/iris", Some("tok-meta-all"), "").0, 200);
    assert_eq!(conn.send("GET", "/metrics", None, "").0, 200);

    // The new tokens come from a tokens file only the service user reads.
    let tokens_file = daemon.path().join("tokens.toml");
    std::fs::write(
        &tokens_file,
        token_table("scraper", "tok-scraper", "[\"*\"]", "[\"probes\"]").replace("[[auth.token]]", "[[token]]"),
    )
    .unwrap();
    std::fs::set_permissions(&tokens_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let config = std::fs::read_to_string(daemon.path().join("modeld.toml")).unwrap();
    let new_auth = format!(
        "[auth]\nopen_probes = false\ntokens_file = \"tokens.toml\"\n\n{}",
        token_table("meta-new", "tok-meta-new", "[\"iris\"]", "[\"metadata\"]")
    );
    let start = config.find("[auth]").unwrap();
    let end = config.find("\n[[model]]").unwrap();
    daemon.write_config(&format!("{}{new_auth}{}", &config[..start], &config[end..]));
    let (code, out, err) = daemon.cli(&["reload"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("[auth]: 2 token(s) [infer-iris, meta-all], open probes -> 2 token(s) [meta-new, scraper], probes need a token: applied"), "{out}");

    // The same connection: the old token is gone, the new ones work, probes are closed.
    assert_eq!(conn.send("GET", "/v2/models/iris", Some("tok-meta-all"), "").0, 401);
    assert_eq!(conn.send("GET", "/v2/models/iris", Some("tok-meta-new"), "").0, 200);
    assert_eq!(conn.send("GET", "/metrics", None, "").0, 401);
    assert_eq!(conn.send("GET", "/metrics", Some("tok-meta-new"), "").0, 403);
    assert_eq!(conn.send("GET", "/metrics", Some("tok-scraper"), "").0, 200);
    assert_eq!(conn.send("GET", "/v2/health/live", Some("tok-scraper"), "").0, 200);
}

/// `modeld token new` prints a token once and the table that admits it.
#[test]
fn a_new_token_works_once_its_table_is_pasted() {
    let daemon = daemon();
    let out = Command::new(BIN).args(["token", "new", "from-cli", "--models", "iris", "--scopes", "metadata"]).output();
    let out = String::from_utf8(out.unwrap().stdout).unwrap();
    let token = out.lines().find_map(|l| l.strip_prefix("token: ")).unwrap().to_string();
    assert!(token.starts_with("mdl_") && token.len() == 68, "{token}");
    let table = &out[out.find("[[auth.token]]").unwrap()..];
    assert!(table.contains(&hash_hex(&token)) && !table.contains(&token), "the table holds the hash, never the token");
    let config = std::fs::read_to_string(daemon.path().join("modeld.toml")).unwrap();
    let end = config.find("\n[[model]]").unwrap();
    daemon.write_config(&format!("{}\n{table}{}", &config[..end], &config[end..]));
    assert_eq!(daemon.cli(&["reload"]).0, 0);
    let mut conn = Conn::open(&daemon);
    assert_eq!(conn.send("GET", "/v2/models/iris", Some(&token), "").0, 200);
    assert_eq!(conn.send("POST", "/v2/models/iris/infer", Some(&token), "{}").0, 403);
}

/// `config check` warns of an open port beyond loopback, and of a tokens file others read;
/// a malformed token is an error naming its field.
#[test]
fn config_check_warns_of_an_open_port_and_a_readable_tokens_file() {
    let dir = tempfile::tempdir().unwrap();
    let check = |text: &str| {
        let path = dir.path().join("modeld.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(BIN).args(["config", "check", "--config"]).arg(&path).output().unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), format!("{}{}", text(&out.stdout), text(&out.stderr)))
    };
    let model = "\n[[model]]\nname = \"m\"\nversion = 1\n";
    let (code, out) = check(&format!("[server]\nlisten = \"0.0.0.0:8080\"\n{model}"));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("is not a loopback address and no [[auth.token]] is configured"), "{out}");
    let (_, out) = check(&format!("[server]\nlisten = \"127.0.0.1:8080\"\n{model}"));
    assert!(!out.contains("loopback"), "{out}");

    std::fs::write(
        dir.path().join("tokens.toml"),
        token_table("t", "x", "[\"m\"]", "[\"infer\"]").replace("auth.token", "token"),
    )
    .unwrap();
    std::fs::set_permissions(dir.path().join("tokens.toml"), std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .unwrap();
    let (code, out) =
        check(&format!("[server]\nlisten = \"0.0.0.0:8080\"\n[auth]\ntokens_file = \"tokens.toml\"\n{model}"));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("is readable by every user (mode 644)"), "{out}");
    assert!(!out.contains("loopback"), "tokens are configured: {out}");

    let bad = "[auth]\n[[auth.token]]\nname = \"t\"\nsha256 = \"nope\"\nmodels = [\"m\"]\n";
    let (code, out) = check(&format!("{bad}{model}"));
    assert_ne!(code, Some(0));
    assert!(out.contains("auth.token[0].sha256") && out.contains("not a SHA-256"), "{out}");
}

/// A refusal by route or model comes after the body was read (thrown away as it came,
/// never kept): a large body to an unknown model or to a probe is answered whole, and the
/// keep-alive connection goes on serving. (A refusal by token does not read it:
/// `a_strangers_body_is_not_read`.)
#[test]
fn every_refusal_reads_the_body_first() {
    let daemon = TestDaemon::ready(Setup::new().model(ModelFiles::bundled("iris", 2), 1));
    let mut conn = Conn::open(&daemon);
    let image = format!(
        r#"{{"inputs": [{{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [{}]}}]}}"#,
        vec!["0.25"; 150_000].join(",")
    );
    for path in ["/v2/models/nope/infer", "/v1/models/nope:predict", "/v2/health/live"] {
        let (status, _, text) = conn.send("POST", path, None, &image);
        assert!(matches!(status, 404 | 405), "POST {path}: {status} {text}");
    }
    let row = format!(r#"{{"inputs": [{{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": {IRIS_ROW}}}]}}"#);
    assert_eq!(conn.send("POST", "/v2/models/iris/infer", None, &row).0, 200);
}

/// The supervisor's peak resident memory (VmHWM), in bytes.
fn peak_rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Sends a `bytes`-long body without a token, as fast as the server takes it; returns how
/// much was written before the server stopped taking it, and the status line if one came.
fn stranger_upload(addr: std::net::SocketAddr, bytes: usize) -> (usize, Option<String>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_write_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST /v2/models/iris/infer HTTP/1.1\r\nHost: modeld\r\nContent-Type: application/json\r\nContent-Length: {bytes}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b' '; 1 << 20];
    let mut written = 0;
    while written < bytes {
        match stream.write(&chunk[..chunk.len().min(bytes - written)]) {
            Ok(n) => written += n,
            Err(_) => break,
        }
    }
    let mut answer = String::new();
    let status =
        BufReader::new(stream).read_line(&mut answer).ok().filter(|n| *n > 0).map(|_| answer.trim().to_string());
    (written, status)
}

/// A request whose headers fail the token check is answered before its body is read:
/// four strangers each sending 60 MiB at once are cut off after a little of it and leave
/// the supervisor's peak memory where it was; a small refused body gets its 401 on a
/// connection that goes on serving.
#[test]
fn a_strangers_body_is_not_read() {
    let daemon = TestDaemon::ready(
        Setup::new()
            .model(ModelFiles::bundled("iris", 2), 1)
            .server("max_body = \"128MiB\"")
            .server_section(&auth_section(true, &two_tokens())),
    );
    let mut conn = Conn::open(&daemon);
    let row = format!(r#"{{"inputs": [{{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": {IRIS_ROW}}}]}}"#);
    assert_eq!(conn.send("POST", "/v2/models/iris/infer", None, &row).0, 401);
    assert_eq!(conn.send("POST", "/v2/models/iris/infer", Some("tok-infer-iris"), &row).0, 200, "the same connection");

    const BODY: usize = 60 << 20;
    let before = peak_rss(daemon.pid());
    let uploads: Vec<_> = (0..4)
        .map(|_| {
            let addr = daemon.addr;
            std::thread::spawn(move || stranger_upload(addr, BODY))
        })
        .collect();
    let results: Vec<(usize, Option<String>)> = uploads.into_iter().map(|u| u.join().unwrap()).collect();
    let grown = peak_rss(daemon.pid()).saturating_sub(before);
    eprintln!("FIGURE strangers: 4 x 60 MiB bodies without a token: {results:?}; peak RSS grew {} KiB", grown >> 10);
    for (written, status) in &results {
        assert!(*written < BODY, "the server took the whole body: {results:?}");
        assert!(status.as_deref().is_none_or(|s| s.contains(" 401 ")), "{status:?}");
    }
    assert!(grown < BODY as u64 / 4, "peak memory grew {grown} bytes with 4 refused 60 MiB bodies");
}

/// With tokens on, open probes answer their status but name no model: `/health`'s
/// models and checks and `/ready`'s waiting list are for a token of the probes scope.
#[test]
fn open_probes_name_no_model_without_a_probes_token() {
    let mut tokens = two_tokens();
    tokens.push(token_table("scraper", "tok-probes", "[\"*\"]", "[\"probes\"]"));
    let daemon = TestDaemon::ready(
        Setup::new().model(ModelFiles::bundled("iris", 2), 1).server_section(&auth_section(true, &tokens)),
    );
    let mut conn = Conn::open(&daemon);
    for path in ["/health", "/ready"] {
        for token in [None, Some("tok-meta-all")] {
            let (status, _, body) = conn.send("GET", path, token, "");
            assert_eq!(status, 200, "{path}: {body}");
            assert!(!body.contains("iris") && body.contains("probes scope"), "{path} with {token:?}: {body}");
        }
        let (status, _, body) = conn.send("GET", path, Some("tok-probes"), "");
        assert_eq!(status, 200, "{path}: {body}");
        assert!(body.contains("iris") || path == "/ready", "{path}: {body}");
        assert!(!body.contains("probes scope"), "{path}: {body}");
    }
    // Without tokens there is nothing to hide.
    let open = TestDaemon::ready(Setup::new().model(ModelFiles::bundled("iris", 2), 1));
    assert!(open.get("/health").body.contains("iris"));
}
