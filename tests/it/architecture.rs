//! The dependency rules of STYLE.md 13, checked on the source: which of our modules each
//! module may name (`crate::x`), outside comments and tests. A new import that breaks a
//! rule fails here with the file and line.

use std::collections::BTreeMap;
use std::path::Path;

/// For each module, the only modules of ours it may use.
const RULES: &[(&str, &[&str])] = &[
    // The configuration depends on nothing of ours.
    ("config", &[]),
    // The worker is a leaf: a model behind a socket. What it shares with the supervisor
    // reaches it through wire; accept and trim are leaf utilities every process uses.
    ("worker", &["wire", "accept", "trim"]),
    ("wire", &["tensor"]),
    ("accept", &[]),
    ("trim", &[]),
    ("tensor", &[]),
    ("metrics", &[]),
    ("window", &[]),
    // GPU telemetry (NVML) is a leaf the health checks read.
    ("gpu", &[]),
    ("promql", &["metrics"]),
    // The gate reads health, never the reverse.
    ("health", &["config", "router", "window", "gpu"]),
    // The front names the router's re-exports, not its modules or the wire.
    ("front", &["accept", "config", "health", "metrics", "repo", "router", "tensor", "window"]),
];

/// Each `crate::module` a non-comment, non-test line of `module` names, with where.
fn imports(module: &str) -> BTreeMap<String, Vec<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let dir = src.join(module);
    if dir.is_dir() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            files.push(entry.unwrap().path());
        }
    } else {
        files.push(src.join(format!("{module}.rs")));
    }
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "rs")) {
        let text = std::fs::read_to_string(file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (number, line) in code.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for part in line.split("crate::").skip(1) {
                let name: String = part.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                if !name.is_empty() && name != module {
                    let at = format!("{}:{}", file.strip_prefix(&src).unwrap().display(), number + 1);
                    found.entry(name).or_default().push(at);
                }
            }
        }
    }
    found
}

#[test]
fn modules_depend_only_on_what_their_layer_allows() {
    let mut broken = Vec::new();
    for (module, allowed) in RULES {
        for (used, at) in imports(module) {
            if !allowed.contains(&used.as_str()) {
                broken.push(format!("{module} uses {used} ({})", at.join(", ")));
            }
        }
    }
    assert!(broken.is_empty(), "dependency rules broken:\n{}", broken.join("\n"));
}

#[test]
fn the_check_sees_imports() {
    // The scan itself works: the front does use the router, the worker the wire.
    assert!(imports("front").contains_key("router"));
    assert!(imports("worker").contains_key("wire"));
}
