//! The operator commands: each asks the daemon over the admin socket and prints the
//! answer for people (or as JSON). `deploy` then follows the rollout live — a progress
//! display on a terminal, plain lines otherwise — and its exit status says how it ended.

use super::Request;
use super::client::{self, ClientError};
use super::status::{self, Status};
use crate::rollout::{Phase, Plan, Progress, Record, now};
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

/// Exit statuses of `modeld deploy`.
pub const EXIT_PROMOTED: u8 = 0;
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_REVERTED: u8 = 3;
pub const EXIT_FAILED: u8 = 4;

fn failed(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("modeld: {e}");
    ExitCode::from(EXIT_ERROR)
}

fn call(socket: &Path, request: &Request) -> Result<serde_json::Value, ClientError> {
    client::call(socket, request)
}

/// Prints `data` as JSON, or with `text` when the operator reads it.
fn print(
    data: serde_json::Value,
    as_json: bool,
    text: impl FnOnce(serde_json::Value) -> Result<String, String>,
) -> ExitCode {
    if as_json {
        println!("{}", serde_json::to_string_pretty(&data).expect("JSON prints"));
        return ExitCode::SUCCESS;
    }
    match text(data) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => failed(format!("unreadable answer from the daemon: {e}")),
    }
}

fn parse<T: serde::de::DeserializeOwned>(data: serde_json::Value) -> Result<T, String> {
    serde_json::from_value(data).map_err(|e| e.to_string())
}

pub fn status(socket: &Path, as_json: bool) -> ExitCode {
    match call(socket, &Request::Status) {
        Ok(data) => print(data, as_json, |d| parse::<Status>(d).map(|s| status::render(&s))),
        Err(e) => failed(e),
    }
}

/// Shows the status once a second until interrupted or the daemon goes away: redrawn in
/// place on a terminal, printed (with the time) whenever it changed otherwise.
pub fn watch_status(socket: &Path, as_json: bool) -> ExitCode {
    let terminal = std::io::stdout().is_terminal() && !as_json;
    let mut last = String::new();
    loop {
        let data = match call(socket, &Request::Status) {
            Ok(data) => data,
            Err(e) => return failed(e),
        };
        let text = match as_json {
            true => format!("{data}\n"),
            false => match parse::<Status>(data) {
                Ok(s) => status::render(&s),
                Err(e) => return failed(format!("unreadable answer from the daemon: {e}")),
            },
        };
        if terminal {
            print!("\x1b[H\x1b[J{}  (every 1s; Ctrl-C stops)\n{text}", format_time(now()));
        } else if text != last {
            match as_json {
                true => print!("{text}"),
                false => print!("-- {}\n{text}", format_time(now())),
            }
        }
        let _ = std::io::Write::flush(&mut std::io::stdout());
        last = text;
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

pub fn plan(socket: &Path, request: Request, as_json: bool) -> ExitCode {
    match call(socket, &request) {
        Ok(data) => print(data, as_json, |d| parse::<Plan>(d).map(|p| p.render())),
        Err(e) => failed(e),
    }
}

pub fn history(socket: &Path, model: Option<String>, as_json: bool) -> ExitCode {
    match call(socket, &Request::History { model }) {
        Ok(data) => print(data, as_json, |d| parse::<Vec<Record>>(d).map(|h| render_history(&h))),
        Err(e) => failed(e),
    }
}

fn render_history(records: &[Record]) -> String {
    let mut out = String::new();
    if records.is_empty() {
        out.push_str("no rollouts yet\n");
    }
    for r in records {
        let from = r.from.map_or("-".into(), |v| format!("v{v}"));
        let outcome = r.outcome.map_or("in progress", |o| o.name());
        let reason = r.reason.as_deref().map_or(String::new(), |r| format!(": {r}"));
        let who = r.by.as_ref().map_or_else(|| r.origin.clone(), |b| b.describe());
        let end = r.ended_at.unwrap_or_else(now);
        let took = humantime::format_duration(std::time::Duration::from_secs((end - r.started_at).max(0.0) as u64));
        out.push_str(&format!(
            "#{} {} {} {from} -> v{} by {} ({who}), took {took}: {outcome}{reason}\n",
            r.id,
            format_time(r.started_at),
            r.model,
            r.to,
            r.strategy,
        ));
        if let Some(by) = &r.ended_by {
            out.push_str(&format!("    rolled back by {}\n", by.describe()));
        }
        if r.strategy != "rollback" && r.strategy != "revert" {
            out.push_str(&format!("    report: modeld report {} --rollout {}\n", r.model, r.id));
        }
        for p in &r.phases {
            let note = p.note.as_deref().unwrap_or(&p.phase);
            out.push_str(&format!("    {} {note}\n", format_time(p.at)));
        }
    }
    out
}

fn format_time(unix: f64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(unix.max(0.0));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Sends a command that answers with a line of text or a progress (rollback, promote,
/// pause, resume, reload).
pub fn simple(socket: &Path, request: &Request) -> ExitCode {
    match call(socket, request) {
        Ok(serde_json::Value::String(text)) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Ok(serde_json::Value::Array(lines)) => {
            for line in lines {
                println!("{}", line.as_str().unwrap_or_default());
            }
            ExitCode::SUCCESS
        }
        Ok(data) => match parse::<Progress>(data) {
            Ok(p) => {
                println!("rollout {} of {} (v{}): {}", p.id, p.model, p.to, p.phase.describe());
                ExitCode::SUCCESS
            }
            Err(e) => failed(format!("unreadable answer from the daemon: {e}")),
        },
        Err(e) => failed(e),
    }
}

/// Starts a rollout and, unless `follow` is false, follows it to its end.
pub fn deploy(socket: &Path, request: Request, follow: bool) -> ExitCode {
    let Request::Deploy { model, .. } = &request else { unreachable!("deploy requests only") };
    let model = model.clone();
    let started = match call(socket, &request).map(parse::<Progress>) {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return failed(format!("unreadable answer from the daemon: {e}")),
        Err(e) => return failed(e),
    };
    let from = started.from.map_or("(none)".into(), |v| format!("v{v}"));
    println!("rollout {}: {} {from} -> v{} by {}", started.id, model, started.to, started.strategy);
    if !follow {
        return ExitCode::SUCCESS;
    }
    let mut display = Display::new();
    let last = client::stream(socket, &Request::Follow { model }, |data| match parse::<Progress>(data) {
        Ok(p) if p.id == started.id => {
            display.show(&p);
            !p.phase.is_done() && !matches!(p.phase, Phase::AwaitingDecision { .. })
        }
        _ => true,
    });
    let last = match last {
        Ok(Some(data)) => parse::<Progress>(data).ok(),
        Ok(None) => None,
        Err(e) => return failed(e),
    };
    display.finish();
    if let Some(s) = last.as_ref().and_then(|p| p.sources).filter(|_| display.bar.is_none()) {
        println!("the new version answered {} live requests, {} mirrored, {} replayed", s.live, s.mirrored, s.replayed);
    }
    if let Some(p) = &last {
        println!("report: modeld report {} --rollout {}", p.model, p.id);
    }
    match last.map(|p| p.phase) {
        Some(Phase::Promoted) | Some(Phase::AwaitingDecision { .. }) => ExitCode::from(EXIT_PROMOTED),
        Some(Phase::Reverted { .. }) => ExitCode::from(EXIT_REVERTED),
        Some(Phase::Failed { .. }) => ExitCode::from(EXIT_FAILED),
        _ => failed("the daemon stopped reporting before the rollout ended"),
    }
}

/// On a terminal, a spinner above the rollout's frame (phase, traffic split, the gate's
/// checks and the time left, redrawn as the clock runs); one timestamped line per phase
/// otherwise.
struct Display {
    bar: Option<indicatif::ProgressBar>,
    /// The progress the spinner's frame is drawn from.
    shown: Arc<Mutex<Option<Progress>>>,
    /// The last phase line printed, so that progress within a phase prints no new line.
    last: String,
}

impl Display {
    fn new() -> Display {
        let shown: Arc<Mutex<Option<Progress>>> = Arc::default();
        let bar = std::io::stdout().is_terminal().then(|| {
            let drawn = shown.clone();
            let frame = move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                if let Some(p) = drawn.lock().expect("display lock").as_ref() {
                    let _ = w.write_str(&status::rollout_frame(p, now()).join("\n"));
                }
            };
            let style = indicatif::ProgressStyle::with_template("{spinner} {frame}")
                .expect("the template parses")
                .with_key("frame", frame);
            let bar = indicatif::ProgressBar::new_spinner().with_style(style);
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        Display { bar, shown, last: String::new() }
    }

    fn show(&mut self, p: &Progress) {
        let line = p.phase.describe();
        *self.shown.lock().expect("display lock") = Some(p.clone());
        match &self.bar {
            Some(bar) if p.phase.is_done() => bar.finish(),
            Some(bar) => bar.tick(),
            None if line == self.last => {}
            None => println!("{} {line}", format_time(now())),
        }
        self.last = line;
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar
            && !bar.is_finished()
        {
            bar.finish();
        }
    }
}
