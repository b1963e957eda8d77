//! `reports/validation_results.json`: the rollout's validation results as one JSON
//! document, versioned by its `schema` field and described by the JSON Schema beside it
//! (`reports/validation_results.schema.json`, [`SCHEMA_TEXT`]): what was deployed, the
//! signature check, golden examples, validation set, every phase's measured windows, the
//! gate's evaluations, the quality gates and the final verdict. Its numbers are the
//! evidence's, copied, never recomputed.

use super::Subject;
use super::gates::{self, Gate, Mark};
use serde_json::{Value, json};

/// The document's format; a change that renames or removes a field bumps it.
pub const SCHEMA: &str = "modeld/validation-results/1";
/// The JSON Schema of the document.
pub const SCHEMA_TEXT: &str = include_str!("validation_results.schema.json");

/// The document for a rollout.
pub fn document(s: &Subject) -> Value {
    let r = &s.record;
    let e = s.evidence.as_ref();
    let gates = gates::gates(s);
    let golden = e.and_then(|e| e.versions.iter().find(|v| v.role == "candidate")).map(|c| {
        json!({
            "declared": c.golden_examples,
            "passed": (c.golden_examples > 0).then_some(c.device.is_some()),
        })
    });
    json!({
        "schema": SCHEMA,
        "model": r.model,
        "rollout": r.id,
        "from": r.from,
        "to": r.to,
        "strategy": r.strategy,
        "started_at": r.started_at,
        "ended_at": r.ended_at,
        "seconds": s.seconds(),
        "triggered_by": e.map(|e| &e.caller).or(r.by.as_ref()),
        "outcome": r.outcome.map(|o| o.name()),
        "reason": r.reason,
        "ended_by": r.ended_by,
        "cut_short": s.cut_short(),
        "versions": e.map(|e| &e.versions),
        "signature": e.and_then(|e| e.signature.as_ref()),
        "golden_examples": golden,
        "validation_set": r.validation,
        "planned": e.map(|e| &e.planned),
        "phases": e.map(|e| &e.phases),
        "evaluations": e.map(|e| json!({
            "kept": e.evaluations,
            "left_out": e.evaluations_left_out,
            "failing": e.evaluations.iter().filter(|v| v.verdict == "fail").count(),
        })),
        "quality_gates": gates,
        "final_verdict": final_verdict(s, &gates),
        "config": e.map(|e| &e.config),
    })
}

fn final_verdict(s: &Subject, gates: &[Gate]) -> Value {
    let mark = |m: Mark| serde_json::to_value(m).expect("marks serialize");
    json!({
        "outcome": s.record.outcome.map(|o| o.name()),
        "reason": s.record.reason,
        "gates": gates.iter().map(|g| json!({ "name": g.name, "mark": mark(g.mark()) })).collect::<Vec<_>>(),
    })
}
