//! The live view at `/ui`: one static page (HTML, script and style embedded in the
//! binary: nothing is fetched from elsewhere) that polls `/ui/state` once a second and
//! draws every model's versions, weights and health checks, the rollout in progress with
//! its gate's checks, charts of the last minutes, and the rollout history with links to
//! each rollout's report (`/ui/report/{model}/{id}`).
//!
//! The front only serves it: what the state holds comes from a [`Board`] the daemon
//! gives it (the rollout engine and the timeline live there).

use super::Reply;
use super::error::ApiError;

/// The page's files, as served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asset {
    Page,
    Script,
    Style,
}

impl Asset {
    pub fn path(self) -> &'static str {
        match self {
            Asset::Page => "/ui",
            Asset::Script => "/ui/app.js",
            Asset::Style => "/ui/app.css",
        }
    }

    fn content(self) -> (&'static str, &'static str) {
        match self {
            Asset::Page => ("text/html; charset=utf-8", include_str!("ui/index.html")),
            Asset::Script => ("text/javascript; charset=utf-8", include_str!("ui/app.js")),
            Asset::Style => ("text/css; charset=utf-8", include_str!("ui/app.css")),
        }
    }
}

/// What the live view reads, kept by the daemon.
pub trait Board: Send + Sync {
    /// The state the page draws, as JSON: models limited to `shown` (none: all), their
    /// chart points newer than `since` (none: all kept).
    fn state(&self, since: Option<f64>, shown: Option<&[String]>) -> serde_json::Value;

    /// A rollout's report as an HTML page, or why there is none.
    fn report(&self, model: &str, id: u64) -> Result<String, ApiError>;
}

/// The page and its own files only: no inline script, no other origin.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
/// A report: its own inline styles and charts, never a script.
const REPORT_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; base-uri 'none'";

pub fn asset(asset: Asset) -> Reply {
    let (content_type, body) = asset.content();
    let policy = match asset {
        Asset::Page => Some(PAGE_POLICY),
        _ => None,
    };
    Reply { content_type, policy, ..Reply::ok(body.to_string()) }
}

/// `/ui/state?since=T`.
pub fn state(board: &dyn Board, query: Option<&str>, shown: Option<&[String]>) -> Result<Reply, ApiError> {
    let asked = query.and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(key, _)| key == "since"));
    let since = match asked {
        Some((_, t)) => Some(
            t.parse::<f64>()
                .ok()
                .filter(|t| t.is_finite() && *t >= 0.0)
                .ok_or_else(|| ApiError::bad_request(format!("since={t}: a Unix time in seconds is expected")))?,
        ),
        None => None,
    };
    Ok(Reply { no_store: true, ..Reply::ok(board.state(since, shown).to_string()) })
}

pub fn report(board: &dyn Board, model: &str, id: u64) -> Result<Reply, ApiError> {
    let page = board.report(model, id)?;
    Ok(Reply {
        content_type: "text/html; charset=utf-8",
        policy: Some(REPORT_POLICY),
        no_store: true,
        ..Reply::ok(page)
    })
}
