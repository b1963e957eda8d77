//! Logs for journald: under systemd (stderr is the journal stream `$JOURNAL_STREAM`
//! names), one line per event with its syslog priority, no timestamp, no colour.

use crate::util::{BIN, ModelFiles, Setup};
use std::io::{BufRead, BufReader};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn under_journald_each_event_is_one_line_with_its_priority() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new().model(ModelFiles::reference("tabular_mlp"), 1).configure("ghost", "version = 2\n");
    ModelFiles::reference("tabular_mlp").write_to(&dir.path().join("models"));
    std::fs::write(dir.path().join("modeld.toml"), setup.config()).unwrap();

    let (reader, writer) = std::io::pipe().unwrap();
    let stat = nix::sys::stat::fstat(writer.as_fd()).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(dir.path().join("modeld.toml"))
        .args(["--listen", "127.0.0.1:0", "--run-dir"])
        .arg(dir.path().join("run"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("JOURNAL_STREAM", format!("{}:{}", stat.st_dev, stat.st_ino))
        .stderr(Stdio::from(writer))
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    let started = Instant::now();
    for line in BufReader::new(reader).lines().map_while(Result::ok) {
        lines.push(line);
        let text = lines.join("\n");
        if (text.contains("worker ready") && text.contains("cannot serve"))
            || started.elapsed() > Duration::from_secs(20)
        {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = lines.join("\n");
    assert!(lines.iter().all(|l| l.starts_with('<') && l.as_bytes().get(2) == Some(&b'>')), "{text}");
    assert!(lines.iter().any(|l| l.starts_with("<6>") && l.contains("listening on http://")), "{text}");
    // The missing version: a config warning at start, then an error.
    assert!(lines.iter().any(|l| l.starts_with("<4>") && l.contains("version 2 not found")), "{text}");
    assert!(lines.iter().any(|l| l.starts_with("<3>") && l.contains("cannot serve")), "{text}");
    assert!(!text.contains('\x1b'), "colour codes in the journal: {text}");
    assert!(!lines.iter().any(|l| l[3..].starts_with("20")), "timestamps in the journal: {text}");
}
