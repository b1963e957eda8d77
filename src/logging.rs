//! Logs to stderr, for a terminal or for journald.
//!
//! On a terminal: colours, timestamps. Under systemd (stderr connected to the journal, as
//! `$JOURNAL_STREAM` says): each event is one line starting with its syslog priority
//! (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug), which journald turns into the
//! entry's priority (sd-daemon(3)); no timestamp (the journal keeps its own), no colour,
//! and newlines inside a message escaped so one event stays one entry. Elsewhere (a pipe,
//! a file): plain lines with timestamps. The level filter comes from the config
//! (`server.log_level`), or `MODELD_LOG` for workers.

use std::fmt;
use std::io::IsTerminal;
use std::sync::OnceLock;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Replaces the level filter of the installed subscriber (a reload's `log_level`).
type SetFilter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

static SET_FILTER: OnceLock<SetFilter> = OnceLock::new();

/// Installs the global subscriber; `filter` is a level or an `EnvFilter` directive.
pub fn init(filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false);
    // The filter goes last: the reloadable layer's type names the whole formatter.
    match (std::io::stderr().is_terminal(), under_journald()) {
        (false, true) => {
            let builder =
                builder.with_ansi(false).event_format(Journald).with_env_filter(filter).with_filter_reloading();
            let handle = builder.reload_handle();
            let _ = SET_FILTER.set(Box::new(move |f| handle.reload(f).map_err(|e| e.to_string())));
            let _ = builder.try_init();
        }
        (terminal, _) => {
            let builder = builder.with_ansi(terminal).with_env_filter(filter).with_filter_reloading();
            let handle = builder.reload_handle();
            let _ = SET_FILTER.set(Box::new(move |f| handle.reload(f).map_err(|e| e.to_string())));
            let _ = builder.try_init();
        }
    }
}

/// Applies a new level filter (`server.log_level` on reload) to this process's log.
pub fn set_filter(filter: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(filter).map_err(|e| format!("'{filter}' is not a log filter: {e}"))?;
    let set = SET_FILTER.get().ok_or("no log subscriber is installed")?;
    set(filter)
}

/// Whether stderr is the journal stream systemd gave us (systemd.exec(5), $JOURNAL_STREAM).
fn under_journald() -> bool {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else { return false };
    let fd = std::io::stderr().as_raw_fd();
    // SAFETY: fd 2 stays open for the life of the process; the File is never dropped.
    let file = std::mem::ManuallyDrop::new(unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) });
    file.metadata().is_ok_and(|m| m.dev().to_string() == dev && m.ino().to_string() == ino)
}

/// sd-daemon(3) priority prefix for a level.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// One line per event: `<priority>[span: ]message fields`.
struct Journald;

impl<S, N> FormatEvent<S, N> for Journald
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut line = String::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                line.push_str(span.name());
                if let Some(fields) = span.extensions().get::<tracing_subscriber::fmt::FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    line.push_str(&format!("{{{fields}}}"));
                }
                line.push_str(": ");
            }
        }
        ctx.format_fields(Writer::new(&mut line), event)?;
        writeln!(writer, "<{}>{}", priority(event.metadata().level()), one_line(&line))
    }
}

/// Escapes newlines so a multi-line message stays one journal entry.
fn one_line(text: &str) -> String {
    text.trim_end().replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
    }

    #[test]
    fn multi_line_messages_stay_one_line() {
        assert_eq!(one_line("refusing:\nline 2\n"), "refusing:\\nline 2");
    }
}
