//! JSON values printed as block YAML, the form `kubectl` users read and diff.
//!
//! Strings are always double-quoted with JSON's escaping (which YAML reads as is), so no
//! value changes type on the way ("true", "1.0", "on" stay strings); keys are plain when
//! they are plain words, quoted otherwise. Multi-line strings (the config in the
//! ConfigMap) are written as literal blocks, readable in `kubectl get -o yaml` style.

use serde_json::Value;
use std::fmt::Write;

/// One document, without a leading `---`.
pub fn document(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => mapping(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => sequence(&mut out, items, 0),
        scalar => {
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
    out
}

fn mapping(out: &mut String, map: &serde_json::Map<String, Value>, indent: usize) {
    for (key, value) in map {
        let _ = write!(out, "{:indent$}{}:", "", key_text(key));
        nested(out, value, indent + 2);
    }
}

fn sequence(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        let _ = write!(out, "{:indent$}-", "");
        match item {
            // A mapping in a list starts on the dash's line: `- name: x`.
            Value::Object(map) if !map.is_empty() => {
                let mut inner = String::new();
                mapping(&mut inner, map, indent + 2);
                out.push(' ');
                out.push_str(&inner[indent + 2..]);
            }
            other => nested(out, other, indent + 2),
        }
    }
}

/// A value after `key:` or `-`: inline when scalar or empty, else on the next lines.
fn nested(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            mapping(out, map, indent);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            sequence(out, items, indent);
        }
        Value::String(s) if fits_a_literal_block(s) => {
            out.push_str(" |");
            if !s.ends_with('\n') {
                out.push('-');
            }
            out.push('\n');
            for line in s.lines() {
                match line.is_empty() {
                    true => out.push('\n'),
                    false => {
                        let _ = writeln!(out, "{:indent$}{line}", "");
                    }
                }
            }
        }
        scalar => {
            let _ = writeln!(out, " {}", inline(scalar));
        }
    }
}

/// Multi-line text whose every line a literal block keeps as is: no carriage returns, no
/// leading blank (it would set the block's indentation), one newline at most at the end.
fn fits_a_literal_block(s: &str) -> bool {
    s.contains('\n')
        && !s.contains('\r')
        && !s.starts_with([' ', '\t', '\n'])
        && !s.ends_with("\n\n")
        && s.chars().all(|c| c == '\n' || !c.is_control())
}

fn inline(value: &Value) -> String {
    match value {
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        other => other.to_string(),
    }
}

fn key_text(key: &str) -> String {
    let plain = !key.is_empty()
        && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
        && key.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    match plain {
        true => key.to_string(),
        false => serde_json::to_string(key).expect("strings serialize"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_values_print_as_block_yaml() {
        let value = json!({
            "apiVersion": "v1",
            "metadata": {"labels": {"app.kubernetes.io/name": "modeld"}, "annotations": {}},
            "ports": [{"name": "http", "port": 80}, {"name": "x", "port": 81}],
            "args": ["serve", "true"],
            "data": {"modeld.toml": "[server]\nlisten = \"0.0.0.0:8080\"\n\n[health]\n"},
            "empty": [],
            "weight": 10
        });
        // serde_json's maps are sorted by key.
        let expected = r#"apiVersion: "v1"
args:
  - "serve"
  - "true"
data:
  modeld.toml: |
    [server]
    listen = "0.0.0.0:8080"

    [health]
empty: []
metadata:
  annotations: {}
  labels:
    app.kubernetes.io/name: "modeld"
ports:
  - name: "http"
    port: 80
  - name: "x"
    port: 81
weight: 10
"#;
        assert_eq!(document(&value), expected);
    }

    #[test]
    fn lists_of_lists_and_odd_keys() {
        let value = json!({"a b": [[1, 2], {"k": [{"x": null}]}], "1st": "no\nend", "t": " x\ny"});
        assert_eq!(
            document(&value),
            "\"1st\": |-\n  no\n  end\n\"a b\":\n  -\n    - 1\n    - 2\n  - k:\n      - x: null\nt: \" x\\ny\"\n"
        );
    }
}
