//! `[auth]`: who may call the HTTP API. Off while no token is configured (the default, on
//! a loopback address); with tokens, each request names one as `Authorization: Bearer T`.
//!
//! ```toml
//! [auth]
//! tokens_file = "tokens.toml"   # optional: [[token]] tables in a file only the service user reads
//! open_probes = true            # /v2/health/*, /ready, /health and /metrics without a token
//!
//! [[auth.token]]
//! name = "frontend"
//! sha256 = "9f86d08188…"        # SHA-256 of the token, hex: the token itself is never stored
//! models = ["iris"]             # or ["*"]
//! scopes = ["infer", "metadata"] # and/or "probes"
//! ```
//!
//! `modeld token new NAME --models ...` makes a token and prints the table to paste.

use super::raw::{RawAuth, RawToken};
use super::report::{KeyPath, Locator, Problem};
use super::resolve_path;
use serde::Deserialize;
use std::path::Path;

/// What a token may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Inference on its models (OIP infer, TF Serving's verbs, /predict).
    Infer,
    /// Metadata and status of its models (and the server's metadata, the OpenAPI document).
    Metadata,
    /// Probes and /metrics, when they are not open.
    Probes,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Infer, Scope::Metadata, Scope::Probes];

    pub fn name(self) -> &'static str {
        match self {
            Scope::Infer => "infer",
            Scope::Metadata => "metadata",
            Scope::Probes => "probes",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub name: String,
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
    /// The models it may use; `None`: every model.
    pub models: Option<Vec<String>>,
    pub scopes: Vec<Scope>,
}

impl Token {
    pub fn allows(&self, scope: Scope, model: Option<&str>) -> bool {
        let model_ok = match (&self.models, model) {
            (None, _) | (_, None) => true,
            (Some(models), Some(m)) => models.iter().any(|x| x == m),
        };
        model_ok && self.scopes.contains(&scope)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub tokens: Vec<Token>,
    pub open_probes: bool,
}

impl Default for Auth {
    fn default() -> Auth {
        Auth { tokens: Vec::new(), open_probes: true }
    }
}

impl Auth {
    /// Whether requests must carry a token at all.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }
}

/// A tokens file: `[[token]]` tables, as in `[[auth.token]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<RawToken>,
}

/// Builds `[auth]`, reading its tokens file (relative to the config's directory).
pub fn build(raw: &RawAuth, base: &Path, at: &Locator, problems: &mut Vec<Problem>) -> Auth {
    let key = KeyPath::default().key("auth");
    let mut tokens = Vec::new();
    for (i, t) in raw.token.iter().flatten().enumerate() {
        let path = key.key("token").index(i);
        match token(t) {
            Ok(token) => tokens.push(token),
            Err((field, message)) => problems.push(at.error(&path.key(field), message)),
        }
    }
    if let Some(file) = &raw.tokens_file {
        let path = resolve_path(base, Path::new(file));
        let file_key = key.key("tokens_file");
        match read_tokens_file(&path) {
            Ok(read) => {
                for (i, t) in read.iter().enumerate() {
                    match token(t) {
                        Ok(token) => tokens.push(token),
                        Err((field, message)) => problems
                            .push(at.error(&file_key, format!("{}: token[{i}].{field}: {message}", path.display()))),
                    }
                }
                if let Some(warning) = readable_by_others(&path) {
                    problems.push(at.warning(&file_key, warning));
                }
            }
            Err(message) => problems.push(at.error(&file_key, message)),
        }
    }
    let mut seen = std::collections::HashSet::new();
    for t in &tokens {
        if !seen.insert(t.name.clone()) {
            problems.push(at.error(&key.key("token"), format!("token name '{}' is used twice", t.name)));
        }
    }
    Auth { tokens, open_probes: raw.open_probes.unwrap_or(true) }
}

fn read_tokens_file(path: &Path) -> Result<Vec<RawToken>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read tokens file {}: {e}", path.display()))?;
    toml::from_str::<TokensFile>(&text)
        .map(|f| f.token)
        .map_err(|e| format!("tokens file {}: {}", path.display(), e.message()))
}

/// A tokens file others may read defeats keeping it apart.
fn readable_by_others(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o004 != 0).then(|| {
        format!(
            "{} is readable by every user (mode {:o}); make it readable by the service user only (chmod 600)",
            path.display(),
            mode & 0o777
        )
    })
}

/// One token, or the field at fault and why.
fn token(raw: &RawToken) -> Result<Token, (&'static str, String)> {
    if raw.name.trim().is_empty() {
        return Err(("name", "a token needs a name (it appears in the log, never the token)".into()));
    }
    let sha256 = hex32(&raw.sha256).ok_or((
        "sha256",
        format!("'{}' is not a SHA-256 in hex (64 characters); `modeld token new` prints one", raw.sha256),
    ))?;
    let models = match &raw.models {
        None => {
            return Err((
                "models",
                "say which models the token may use: models = [\"iris\"], or [\"*\"] for all".into(),
            ));
        }
        Some(m) if m.iter().any(|x| x == "*") => None,
        Some(m) if m.is_empty() => return Err(("models", "an empty list allows nothing; name models or \"*\"".into())),
        Some(m) => Some(m.clone()),
    };
    let scopes = match &raw.scopes {
        None => vec![Scope::Infer, Scope::Metadata],
        Some(names) => names
            .iter()
            .map(|n| {
                Scope::ALL
                    .into_iter()
                    .find(|s| s.name() == n)
                    .ok_or(("scopes", format!("unknown scope '{n}' (expected infer, metadata or probes)")))
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    Ok(Token { name: raw.name.clone(), sha256, models, scopes })
}

fn hex32(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(models: Option<Vec<&str>>, scopes: Option<Vec<&str>>) -> RawToken {
        RawToken {
            name: "t".into(),
            sha256: "ab".repeat(32),
            models: models.map(|m| m.into_iter().map(String::from).collect()),
            scopes: scopes.map(|s| s.into_iter().map(String::from).collect()),
        }
    }

    #[test]
    fn tokens_allow_their_models_and_scopes_only() {
        let t = token(&raw(Some(vec!["iris"]), None)).unwrap();
        assert_eq!(t.sha256, [0xab; 32]);
        assert!(t.allows(Scope::Infer, Some("iris")) && t.allows(Scope::Metadata, Some("iris")));
        assert!(!t.allows(Scope::Infer, Some("other")) && !t.allows(Scope::Probes, None));
        let all = token(&raw(Some(vec!["*"]), Some(vec!["probes"]))).unwrap();
        assert!(all.allows(Scope::Probes, None) && !all.allows(Scope::Infer, Some("iris")));
    }

    #[test]
    fn bad_tokens_say_which_field() {
        assert_eq!(token(&raw(None, None)).unwrap_err().0, "models");
        assert_eq!(token(&raw(Some(vec![]), None)).unwrap_err().0, "models");
        assert!(token(&raw(Some(vec!["*"]), Some(vec!["admin"]))).unwrap_err().1.contains("unknown scope 'admin'"));
        let short = RawToken { sha256: "abc".into(), ..raw(Some(vec!["*"]), None) };
        assert!(token(&short).unwrap_err().1.contains("not a SHA-256"));
    }
}
