//! Problems found in a config file, each with the key it concerns and, where the file shows
//! it, the line: `conf/modeld.toml:14: model[1].workers: must be at least 1, got 0`.

use std::fmt;
use std::ops::Range;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One segment of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A dotted key path such as `model[1].workers`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    pub fn key(&self, key: &str) -> KeyPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.into()));
        KeyPath(segs)
    }

    pub fn index(&self, index: usize) -> KeyPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        KeyPath(segs)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A problem with the config, where it is, and how bad.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub line: Option<usize>,
    pub message: String,
    pub severity: Severity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The config is refused.
    Error,
    /// Worth telling the operator; the config still serves.
    Warning,
}

/// Every problem found in one file.
#[derive(Debug, Clone)]
pub struct Report {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| p.severity == Severity::Error)
    }

    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.problems {
            let level = match p.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            match p.line {
                Some(line) => write!(f, "{}:{line}: {level}: ", self.file)?,
                None => write!(f, "{}: {level}: ", self.file)?,
            }
            match p.key.is_empty() {
                true => writeln!(f, "{}", p.message)?,
                false => writeln!(f, "{}: {}", p.key, p.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for Report {}

/// Finds lines for key paths in the parsed document.
pub struct Locator<'a> {
    text: &'a str,
    root: &'a DeTable<'a>,
}

impl<'a> Locator<'a> {
    pub fn new(text: &'a str, root: &'a DeTable<'a>) -> Locator<'a> {
        Locator { text, root }
    }

    /// The 1-based line where `path`'s value starts, if the document holds it.
    pub fn line(&self, path: &KeyPath) -> Option<usize> {
        self.span(path).map(|span| self.line_at(span.start))
    }

    pub fn line_at(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())].matches('\n').count() + 1
    }

    fn span(&self, path: &KeyPath) -> Option<Range<usize>> {
        let mut segs = path.0.iter();
        let Some(Seg::Key(first)) = segs.next() else {
            return None;
        };
        let mut value: &Spanned<DeValue> = self.root.get(first.as_str())?;
        for seg in segs {
            value = match (seg, value.get_ref()) {
                (Seg::Key(k), DeValue::Table(t)) => t.get(k.as_str())?,
                (Seg::Index(i), DeValue::Array(a)) => a.get(*i)?,
                _ => return None,
            };
        }
        Some(value.span())
    }

    /// An error for `path`, located when possible.
    pub fn error(&self, path: &KeyPath, message: impl Into<String>) -> Problem {
        Problem { key: path.to_string(), line: self.line(path), message: message.into(), severity: Severity::Error }
    }

    pub fn warning(&self, path: &KeyPath, message: impl Into<String>) -> Problem {
        Problem { severity: Severity::Warning, ..self.error(path, message) }
    }
}
