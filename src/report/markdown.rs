//! `reports/deployment_report.md`: what was deployed, the plan against what happened,
//! every verdict, the measured windows, and the three quality gates as checklists.

use super::gates::{self, Gate, Mark, ms, percent};
use super::{Subject, took, when};
use crate::rollout::evidence::{Evidence, Figures, PhaseRecord};
use std::fmt::Write;

/// The whole report.
pub fn report(s: &Subject) -> String {
    let mut out = String::new();
    head(&mut out, s);
    match &s.evidence {
        Some(e) => {
            deployed(&mut out, e);
            quality_gates(&mut out, &gates::gates(s));
            plan_against_actual(&mut out, e);
            verdicts(&mut out, s, e);
            windows(&mut out, e);
            checks_before_traffic(&mut out, s, e);
            config(&mut out, e);
        }
        None => {
            let _ = writeln!(
                out,
                "This rollout kept no evidence beyond its record (it is older than evidence files, or its evidence was pruned).\n"
            );
            quality_gates(&mut out, &gates::gates(s));
        }
    }
    history_notes(&mut out, s);
    out
}

fn head(out: &mut String, s: &Subject) {
    let r = &s.record;
    let _ = writeln!(out, "# Deployment report: {} {} → v{} (rollout #{})\n", r.model, s.from(), r.to, r.id);
    if let Some(cut) = s.cut_short() {
        let _ = writeln!(out, "> **{cut}**\n");
    }
    let outcome = r.outcome.map_or("running".to_string(), |o| o.name().to_string());
    let by = s.evidence.as_ref().map(|e| e.caller.describe()).or_else(|| r.by.as_ref().map(|b| b.describe()));
    let _ = writeln!(out, "| rollout #{} | |\n| --- | --- |", r.id);
    let _ = writeln!(
        out,
        "| Outcome | **{outcome}**{} |",
        r.reason.as_ref().map_or(String::new(), |x| format!(": {}", cell(x)))
    );
    let _ = writeln!(out, "| Strategy | {} |", r.strategy);
    let _ = writeln!(out, "| Started | {} by {} |", when(r.started_at), by.unwrap_or_else(|| r.origin.clone()));
    let _ = writeln!(out, "| Ended | {} |", r.ended_at.map_or("-".to_string(), when));
    let _ = writeln!(out, "| Took | {} |", took(s.seconds()));
    if let Some(by) = &r.ended_by {
        let _ = writeln!(out, "| Rolled back by | {} |", by.describe());
    }
    let _ = writeln!(out);
}

fn deployed(out: &mut String, e: &Evidence) {
    let _ = writeln!(out, "## What was deployed\n");
    let _ = writeln!(
        out,
        "| role | version | model.onnx SHA-256 | bytes | model.toml SHA-256 | engine | device | golden examples |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- | --- |");
    for v in &e.versions {
        let _ = writeln!(
            out,
            "| {} | v{} | `{}` | {} | {} | {} | {} | {} |",
            v.role,
            v.version,
            v.model_sha256,
            v.model_bytes,
            v.manifest_sha256.as_deref().map_or("-".into(), |h| format!("`{h}`")),
            v.engine.as_deref().unwrap_or("-"),
            v.device.as_deref().unwrap_or("-"),
            v.golden_examples
        );
    }
    let _ = writeln!(out);
}

fn quality_gates(out: &mut String, gates: &[Gate]) {
    let _ = writeln!(out, "## Quality gates\n");
    for g in gates {
        let word = match g.mark() {
            Mark::Passed => "passed",
            Mark::Failed => "FAILED",
            Mark::NotMeasured => "not measured",
        };
        let _ = writeln!(out, "### {}: {word}\n", g.name);
        for c in &g.checks {
            let threshold =
                if c.threshold.is_empty() { String::new() } else { format!(" (threshold: {})", c.threshold) };
            let _ = writeln!(out, "- {} {}: {}{threshold}", c.mark.symbol(), c.what, c.value);
        }
        let _ = writeln!(out);
    }
}

fn plan_against_actual(out: &mut String, e: &Evidence) {
    let _ = writeln!(out, "## The plan against what happened\n");
    let planned: Vec<String> = e
        .planned
        .phases
        .iter()
        .map(|p| format!("{}{}", p.name, p.seconds.map_or(String::new(), |s| format!(" ({})", took(s)))))
        .collect();
    let _ = writeln!(out, "Planned: {} — at least {}.\n", planned.join(" → "), took(e.planned.minimum_seconds));
    let _ = writeln!(out, "| phase | weight | planned | started | planned end | ended | took | verdict |");
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- | --- |");
    for p in &e.phases {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            p.name,
            p.weight.map_or("-".into(), |w| format!("{w}%")),
            p.planned_seconds.map_or("-".into(), took),
            when(p.started_at),
            p.planned_seconds.map_or("-".into(), |s| when(p.started_at + s)),
            p.ended_at.map_or("-".into(), when),
            p.ended_at.map_or("-".into(), |end| took(end - p.started_at)),
            p.verdict.as_deref().map_or("-".into(), cell)
        );
    }
    let _ = writeln!(out);
}

fn verdicts(out: &mut String, s: &Subject, e: &Evidence) {
    let _ = writeln!(out, "## Every verdict\n");
    let count = |w: &str| e.evaluations.iter().filter(|v| v.verdict == w).count();
    let _ = writeln!(
        out,
        "The gate judged the new version {} times kept here ({} passed, {} inconclusive, {} failed; {} more passing or \
         inconclusive ones were thinned out, every failing one is kept).\n",
        e.evaluations.len(),
        count("pass"),
        count("inconclusive"),
        count("fail"),
        e.evaluations_left_out
    );
    for v in e.evaluations.iter().filter(|v| v.verdict == "fail") {
        let _ = writeln!(out, "- {} in {}: **failed**: {}", when(v.at), v.phase, v.reason.as_deref().unwrap_or("-"));
    }
    if let Some(reason) = &s.record.reason {
        let _ = writeln!(out, "\nFinal: {}", reason);
    }
    let _ = writeln!(out);
}

fn figures_row(out: &mut String, phase: &str, role: &str, f: &Figures) {
    let _ = writeln!(
        out,
        "| {phase} | {role} v{} | {} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} |",
        f.version,
        f.requests,
        f.rate_per_second,
        percent(f.error_rate),
        percent(f.refusal_rate),
        ms(f.p50_ms),
        ms(f.p95_ms),
        ms(f.p99_ms),
        percent(f.availability),
        mib(f.rss_bytes),
        f.cpu_cores.map_or("-".into(), |c| format!("{c:.2}"))
    );
}

fn windows(out: &mut String, e: &Evidence) {
    let _ = writeln!(out, "## Measured windows at the end of each phase\n");
    let _ = writeln!(
        out,
        "| phase | version | requests | per second | errors | refused | P50 | P95 | P99 | availability | memory MiB | CPU cores |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for p in &e.phases {
        if let Some(f) = &p.candidate {
            figures_row(out, &p.name, "new", f);
        }
        if let Some(f) = &p.stable {
            figures_row(out, &p.name, "live", f);
        }
    }
    let _ = writeln!(out);
    let answered: Vec<&PhaseRecord> = e.phases.iter().filter(|p| p.answers.is_some()).collect();
    if answered.is_empty() {
        return;
    }
    let _ = writeln!(out, "What the new version's answers said beside the live version's:\n");
    let _ =
        writeln!(out, "| phase | live answers | mirrored | replayed | agreement | compared | largest PSI | drifted |");
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- | --- |");
    for p in answered {
        let a = p.answers.as_ref().expect("filtered");
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            p.name,
            a.sources.live,
            a.sources.mirrored,
            a.sources.replayed,
            a.agreement.map_or("-".into(), percent),
            a.compared,
            a.largest_psi.map_or("-".into(), |v| format!("{v:.3} ({})", a.psi_feature.as_deref().unwrap_or(""))),
            if a.drifted { "yes" } else { "no" }
        );
    }
    let _ = writeln!(out);
}

fn checks_before_traffic(out: &mut String, s: &Subject, e: &Evidence) {
    let _ = writeln!(out, "## Signature, golden examples, validation set\n");
    let _ = writeln!(
        out,
        "- Signature: {}",
        e.signature.as_deref().unwrap_or("not checked (nothing was live, or the version did not load)")
    );
    let golden = e.versions.iter().find(|v| v.role == "candidate").map_or(0, |v| v.golden_examples);
    let _ = writeln!(out, "- Golden examples in the new version's model.toml: {golden}");
    match &s.record.validation {
        Some(v) => {
            let _ = writeln!(
                out,
                "- Validation set {} ({}): {} — {}",
                v.path,
                v.kind,
                if v.passed { "passed" } else { "REFUSED" },
                v.verdict
            );
        }
        None => {
            let _ = writeln!(out, "- Validation set: none");
        }
    }
    let _ = writeln!(out);
}

fn config(out: &mut String, e: &Evidence) {
    let _ = writeln!(out, "## The config the rollout ran with\n");
    let _ = writeln!(out, "```json\n{}\n```\n", serde_json::to_string_pretty(&e.config).expect("config serializes"));
}

fn history_notes(out: &mut String, s: &Subject) {
    let notes: Vec<String> =
        s.record.phases.iter().filter_map(|p| p.note.as_ref().map(|n| format!("- {} {}", when(p.at), n))).collect();
    if !notes.is_empty() {
        let _ = writeln!(out, "## The rollout's log\n\n{}\n", notes.join("\n"));
    }
}

/// Resident memory in MiB, "-" before the first sample.
pub fn mib(bytes: u64) -> String {
    if bytes == 0 { "-".into() } else { (bytes >> 20).to_string() }
}

/// Text for a Markdown table cell (pipes escaped, lines joined).
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}
