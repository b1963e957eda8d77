//! The dependency rules of STYLE.md 13, checked on the source: which of our modules each
//! module may name (`crate::x`), outside comments and tests, and which it may reach only
//! through their public face (what `x`'s `mod.rs` exports, `crate::x::Item`, never an
//! inner module's `crate::x::inner::Item`). Every module of the crate has a rule; a new
//! import that breaks one fails here with the file and line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One module's rule: the modules of ours it may use, and of those, the ones it may use
/// only through their public face.
struct Rule {
    module: &'static str,
    uses: &'static [&'static str],
    face_only: &'static [&'static str],
}

const fn rule(module: &'static str, uses: &'static [&'static str], face_only: &'static [&'static str]) -> Rule {
    Rule { module, uses, face_only }
}

const RULES: &[Rule] = &[
    // Leaves: utilities every process uses, depending on nothing of ours.
    rule("accept", &[], &[]),
    rule("trim", &[], &[]),
    rule("tensor", &[], &[]),
    rule("metrics", &[], &[]),
    rule("window", &[], &[]),
    rule("logging", &[], &[]),
    rule("yaml", &[], &[]),
    // GPU telemetry (NVML) is a leaf the health checks read.
    rule("gpu", &[], &[]),
    // The configuration depends on nothing of ours.
    rule("config", &[], &[]),
    // What travels between supervisor and worker: tensors in frames.
    rule("wire", &["tensor"], &[]),
    // The worker is a leaf: a model behind a socket. What it shares with the supervisor
    // reaches it through wire.
    rule("worker", &["wire", "accept", "trim"], &[]),
    rule("promql", &["metrics"], &[]),
    rule("alerts", &["config", "promql"], &[]),
    // The repository reads model directories and their manifests.
    rule("repo", &["config", "wire"], &[]),
    // The router knows pools and connections, not who starts workers or rolls out.
    rule("router", &["config", "repo", "tensor", "window", "wire"], &[]),
    // The supervisor starts, watches and replaces workers behind the router's pools.
    // It writes what it samples of the host where the health checks read it.
    rule("supervisor", &["config", "health", "metrics", "repo", "router", "trim", "wire"], &[]),
    // The health checks read pools through the router's face (their counters, not the
    // slots' atomics); the gate reads health, never the reverse.
    rule("health", &["config", "gpu", "router", "window"], &["router"]),
    rule(
        "rollout",
        &["config", "gpu", "health", "logging", "metrics", "repo", "router", "supervisor", "tensor", "wire", "window"],
        &["supervisor"],
    ),
    // The autoscaler reads the live pools and the rollouts in progress, and moves worker
    // counts through the supervisor.
    rule("scale", &["config", "metrics", "rollout", "router", "supervisor"], &["rollout", "router", "supervisor"]),
    // The front names the router's re-exports, not its modules.
    rule(
        "front",
        &["accept", "config", "health", "metrics", "repo", "router", "tensor", "window"],
        &["router", "health"],
    ),
    // The admin socket talks to the rollout engine through its public commands.
    rule("admin", &["accept", "config", "health", "report", "rollout", "router"], &["rollout", "router", "health"]),
    rule("console", &["front", "health", "report", "rollout", "router"], &["rollout", "router", "health", "front"]),
    rule("k8s", &["config", "front", "promql", "repo", "yaml"], &[]),
    rule("report", &["admin", "alerts", "config", "k8s", "promql", "rollout", "yaml"], &["admin"]),
    // The daemon wires the parts together, each through its face.
    rule(
        "daemon",
        &[
            "admin",
            "config",
            "console",
            "front",
            "gpu",
            "health",
            "metrics",
            "rollout",
            "router",
            "scale",
            "supervisor",
        ],
        &["admin", "console", "front", "gpu", "health", "rollout", "router", "scale", "supervisor"],
    ),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The crate's modules, as `lib.rs` declares them.
fn modules() -> BTreeSet<String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod ").or_else(|| l.trim().strip_prefix("mod ")))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect()
}

/// A module's inner modules: the files and folders beside its `mod.rs`.
fn inner_modules(module: &str) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(src().join(module)) else { return BTreeSet::new() };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() || p.extension().is_some_and(|e| e == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|name| name != "mod")
        .collect()
}

/// The module's source files, its folder searched all the way down; test files left out.
fn files(module: &str) -> Vec<PathBuf> {
    let dir = src().join(module);
    if !dir.is_dir() {
        return vec![src().join(format!("{module}.rs"))];
    }
    let mut found = Vec::new();
    let mut todo = vec![dir];
    while let Some(dir) = todo.pop() {
        for path in std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()) {
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") && path.file_name().unwrap() != "tests.rs" {
                found.push(path);
            }
        }
    }
    found
}

/// A path that `module` names: `crate::<used>::<rest>`, with where.
struct Use {
    used: String,
    /// The first segment after `used` (an inner module or an item), for each item a
    /// group `{a, b::c}` names.
    next: Vec<String>,
    at: String,
}

/// Every `crate::x` that the non-comment, non-test code of `module` names.
fn uses(module: &str) -> Vec<Use> {
    let mut found = Vec::new();
    for file in files(module) {
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        // Comments blanked, lines kept, so positions still give line numbers.
        let code: String = code
            .lines()
            .map(|l| match l.find("//") {
                Some(i) if !l[..i].contains('"') => &l[..i],
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        for (offset, _) in code.match_indices("crate::") {
            let rest = &code[offset + "crate::".len()..];
            let used: String =
                rest.chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
            if used.is_empty() || used == module {
                continue;
            }
            let line = code[..offset].lines().count().max(1);
            let at = format!("{}:{line}", file.strip_prefix(src()).unwrap().display());
            let after = rest[used.len()..].strip_prefix("::").unwrap_or("");
            found.push(Use { used, next: next_segments(after), at });
        }
    }
    found
}

/// The first segment of what follows `crate::x::`: one name, or each item of a group.
fn next_segments(after: &str) -> Vec<String> {
    let first = |s: &str| s.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    match after.strip_prefix('{') {
        None => vec![first(after)],
        Some(group) => {
            let (mut depth, mut items, mut current) = (0, Vec::new(), String::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => items.push(std::mem::take(&mut current)),
                    _ => current.push(c),
                }
            }
            items.push(current);
            items.iter().map(|i| first(i)).filter(|s| !s.is_empty()).collect()
        }
    }
}

#[test]
fn every_module_has_a_rule() {
    let ruled: BTreeSet<String> = RULES.iter().map(|r| r.module.to_string()).collect();
    let missing: Vec<_> = modules().difference(&ruled).cloned().collect();
    assert!(missing.is_empty(), "modules without a dependency rule: {missing:?}");
    let stale: Vec<_> = ruled.difference(&modules()).cloned().collect();
    assert!(stale.is_empty(), "rules for modules that are gone: {stale:?}");
}

#[test]
fn modules_depend_only_on_what_their_layer_allows() {
    let mut broken: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for rule in RULES {
        for u in uses(rule.module) {
            if !rule.uses.contains(&u.used.as_str()) {
                broken.entry(format!("{} uses {}", rule.module, u.used)).or_default().push(u.at);
            }
        }
    }
    let broken: Vec<String> = broken.iter().map(|(what, at)| format!("{what} ({})", at.join(", "))).collect();
    assert!(broken.is_empty(), "dependency rules broken:\n{}", broken.join("\n"));
}

#[test]
fn faces_are_used_where_the_rules_say() {
    let mut broken = Vec::new();
    for rule in RULES {
        for u in uses(rule.module).iter().filter(|u| rule.face_only.contains(&u.used.as_str())) {
            let inner = inner_modules(&u.used);
            for segment in u.next.iter().filter(|s| inner.contains(*s)) {
                broken.push(format!("{} reaches into {}::{segment} ({})", rule.module, u.used, u.at));
            }
        }
    }
    assert!(broken.is_empty(), "modules past another's public face:\n{}", broken.join("\n"));
}

#[test]
fn the_check_sees_imports_and_groups() {
    // The scan itself works: the front does use the router, the worker the wire, the
    // supervisor the router's pools by their module.
    let front: Vec<Use> = uses("front");
    assert!(front.iter().any(|u| u.used == "router"));
    assert!(uses("worker").iter().any(|u| u.used == "wire"));
    assert!(uses("supervisor").iter().any(|u| u.used == "router" && u.next.iter().any(|n| n == "pool")));
    assert_eq!(next_segments("{self, pool::{Pool, Slot}, Router};"), ["self", "pool", "Router"]);
    assert_eq!(next_segments("pool::Slot) -> u64"), ["pool"]);
    assert!(inner_modules("router").contains("pool"));
    assert!(modules().len() >= 24, "{:?}", modules());
}
