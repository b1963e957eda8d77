//! The gate's checks as followers show them: each measured value beside the threshold it
//! is held to, marked ok, failing or not judged yet, from the same evidence and limits
//! the verdict is drawn from.

use super::{Evidence, GATING, LatencyPair, allowed_p95, compared, stable_rates};
use crate::config::{DeployConfig, HealthConfig};
use crate::health::check::words;
use crate::health::{Check, Status};
use crate::rollout::phase::GateCheck;
use std::collections::BTreeMap;
use std::time::Duration;

/// Every check the gate applies to the candidate now.
pub fn checks(
    health: &BTreeMap<&'static str, Check>,
    e: &Evidence,
    deploy: &DeployConfig,
    h: &HealthConfig,
) -> Vec<GateCheck> {
    let enough = e.mine.requests >= e.min_samples;
    let mut out = vec![GateCheck {
        name: "requests in the window".into(),
        value: e.mine.requests.to_string(),
        threshold: format!("≥ {}", e.min_samples),
        ok: Some(enough),
    }];
    out.extend(causes(health));
    out.push(error_rate(health, e, deploy, h));
    if let Some((_, refusals)) = stable_rates(e) {
        let allowed = refusals + deploy.max_client_error_increase;
        out.push(GateCheck {
            name: "refused as invalid".into(),
            value: percent(e.mine.refusal_rate()),
            threshold: format!(
                "≤ {} (live {} + {})",
                percent(allowed),
                percent(refusals),
                percent(deploy.max_client_error_increase)
            ),
            ok: enough.then_some(e.mine.refusal_rate() <= allowed),
        });
    }
    out.push(latency(health, e, deploy, h));
    out.push(availability(health, e, h));
    out.extend(agreement(e, deploy));
    out.extend(drift(e, deploy));
    out
}

/// The gating checks that are causes rather than rates (an OOM kill, a worker that will
/// not load, memory), shown only when they are not ok.
fn causes<'a>(health: &'a BTreeMap<&'static str, Check>) -> impl Iterator<Item = GateCheck> + 'a {
    GATING.iter().filter(|n| !matches!(**n, "error_rate" | "latency" | "availability")).filter_map(|name| {
        let check = health.get(name).filter(|c| matches!(c.status, Status::Warning | Status::Critical))?;
        Some(GateCheck {
            name: (*name).into(),
            value: words(&check.value),
            threshold: words(&check.threshold),
            ok: Some(check.status != Status::Critical),
        })
    })
}

fn error_rate(
    health: &BTreeMap<&'static str, Check>,
    e: &Evidence,
    deploy: &DeployConfig,
    h: &HealthConfig,
) -> GateCheck {
    let mine = e.mine.error_rate();
    let absolute = h.error_rate.critical.map(|c| format!("≤ {}", percent(c)));
    let relative = stable_rates(e).map(|(errors, _)| (errors, errors + deploy.max_error_rate_increase));
    let threshold = join(
        absolute,
        relative.map(|(s, allowed)| {
            format!("≤ {} (live {} + {})", percent(allowed), percent(s), percent(deploy.max_error_rate_increase))
        }),
    );
    GateCheck {
        name: "error rate".into(),
        value: percent(mine),
        threshold,
        ok: judged(health, "error_rate", relative.is_none_or(|(_, allowed)| mine <= allowed)),
    }
}

fn latency(health: &BTreeMap<&'static str, Check>, e: &Evidence, deploy: &DeployConfig, h: &HealthConfig) -> GateCheck {
    let absolute = h.p95_latency.critical.map(|c| format!("≤ {}", ms(c)));
    let pair = LatencyPair::of(e);
    let relative = pair.map(|p| {
        let whose = if p.on_copies { "stable's inference on the copies" } else { "live" };
        format!(
            "≤ {} ({}x {whose} {}, or +10 ms)",
            ms(allowed_p95(p.stable, deploy)),
            deploy.max_latency_ratio,
            ms(p.stable)
        )
    });
    let within = pair.is_none_or(|p| p.mine <= allowed_p95(p.stable, deploy));
    let besides: Vec<String> = [
        e.mine.p99.map(|p| format!("P99 {}", ms(p))),
        pair.filter(|p| p.on_copies).map(|p| format!("inference {}", ms(p.mine))),
    ]
    .into_iter()
    .flatten()
    .collect();
    let besides = if besides.is_empty() { String::new() } else { format!(" ({})", besides.join("; ")) };
    GateCheck {
        name: "P95 latency".into(),
        value: e.mine.p95.map_or_else(|| "-".into(), |p| format!("{}{besides}", ms(p))),
        threshold: join(absolute, relative),
        ok: judged(health, "latency", within),
    }
}

fn availability(health: &BTreeMap<&'static str, Check>, e: &Evidence, h: &HealthConfig) -> GateCheck {
    GateCheck {
        name: "availability".into(),
        value: percent(e.mine.availability()),
        threshold: h.availability.critical.map_or_else(String::new, |c| format!("≥ {}", percent(c))),
        ok: judged(health, "availability", true),
    }
}

/// Agreement with stable on the answers both gave, once any were compared.
fn agreement(e: &Evidence, deploy: &DeployConfig) -> Option<GateCheck> {
    let (compared, agreed, what) = compared(e);
    if compared == 0 || deploy.min_agreement <= 0.0 {
        return None;
    }
    let agreement = agreed as f64 / compared as f64;
    Some(GateCheck {
        name: "agreement with the live version".into(),
        value: format!("{} of {compared} {what}", percent(agreement)),
        threshold: format!("≥ {} of ≥ {}", percent(deploy.min_agreement), e.min_samples),
        ok: (compared >= e.min_samples).then_some(agreement >= deploy.min_agreement),
    })
}

/// The largest drift of the candidate's answers from stable's, while drift is judged.
fn drift(e: &Evidence, deploy: &DeployConfig) -> Option<GateCheck> {
    let reading = e.drift.as_ref()?;
    let enough = reading.samples >= deploy.drift_min_samples as usize;
    let breach = reading.breach(deploy.max_output_drift);
    let shown = breach.or_else(|| reading.largest());
    Some(GateCheck {
        name: "output drift".into(),
        value: match shown {
            Some(f) => format!(
                "PSI {:.3} on '{}' {} (chance {:.3}, {} answers each)",
                f.psi, f.feature.output, f.feature.name, f.chance_psi, reading.samples
            ),
            None => format!("{} answers each", reading.samples),
        },
        threshold: format!("≤ {} beyond chance, ≥ {} each", deploy.max_output_drift, deploy.drift_min_samples),
        ok: enough.then_some(breach.is_none()),
    })
}

/// A rate check's mark: not judged below `min_samples`, failing when `/health` calls it
/// critical or the comparison with stable fails.
fn judged(health: &BTreeMap<&'static str, Check>, name: &str, within: bool) -> Option<bool> {
    let check = health.get(name)?;
    match check.status {
        Status::InsufficientData => None,
        Status::Critical => Some(false),
        _ => Some(within),
    }
}

fn join(a: Option<String>, b: Option<String>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{a} and {b}"),
        (a, b) => a.or(b).unwrap_or_default(),
    }
}

fn percent(f: f64) -> String {
    format!("{:.2}%", f * 100.0)
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 100.0 { format!("{ms:.0} ms") } else { format!("{ms:.1} ms") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::gate::{Verdict, judge};
    use crate::window::Snapshot;

    fn window(requests: u64, failed: u64, p95_ms: u64) -> Snapshot {
        let p = Some(Duration::from_millis(p95_ms));
        Snapshot {
            covered: Duration::from_secs(60),
            requests,
            failed,
            unavailable: 0,
            invalid: 0,
            p50: p,
            p95: p,
            p99: p,
        }
    }

    fn evidence(mine: Snapshot, stable: Option<Snapshot>) -> Evidence {
        Evidence { mine, min_samples: 20, stable, shadow: None, replayed: 0, pairs: Default::default(), drift: None }
    }

    fn health_of(e: &Evidence, h: &HealthConfig) -> BTreeMap<&'static str, Check> {
        BTreeMap::from([
            ("error_rate", crate::health::check::error_rate(&e.mine, h)),
            ("latency", crate::health::check::latency(&e.mine, h)),
            ("availability", crate::health::check::availability(&e.mine, h)),
        ])
    }

    fn mark(checks: &[GateCheck], name: &str) -> Option<bool> {
        checks.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no check named {name}: {checks:?}")).ok
    }

    #[test]
    fn the_marks_agree_with_the_verdict_on_the_rates() {
        let deploy = DeployConfig::default();
        let h = HealthConfig::default();
        let failing = evidence(window(100, 4, 20), Some(window(100, 0, 20)));
        let checks = checks(&health_of(&failing, &h), &failing, &deploy, &h);
        assert!(matches!(judge(&failing, &deploy), Verdict::Fail(ref r) if r.starts_with("error rate")));
        assert_eq!(mark(&checks, "error rate"), Some(false));
        assert_eq!(mark(&checks, "P95 latency"), Some(true));
        let threshold = &checks.iter().find(|c| c.name == "error rate").unwrap().threshold;
        assert!(threshold.contains("live 0.00% + 2.00%"), "{threshold}");

        let slow = evidence(window(100, 0, 90), Some(window(100, 0, 20)));
        assert!(matches!(judge(&slow, &deploy), Verdict::Fail(ref r) if r.starts_with("P95")));
        assert_eq!(mark(&checks_of(&slow, &deploy, &h), "P95 latency"), Some(false));

        let fine = evidence(window(100, 0, 21), Some(window(100, 0, 20)));
        assert_eq!(judge(&fine, &deploy), Verdict::Pass);
        assert!(checks_of(&fine, &deploy, &h).iter().all(|c| c.ok != Some(false)));
    }

    fn checks_of(e: &Evidence, deploy: &DeployConfig, h: &HealthConfig) -> Vec<GateCheck> {
        checks(&health_of(e, h), e, deploy, h)
    }

    #[test]
    fn too_few_requests_leave_the_rates_unjudged() {
        let deploy = DeployConfig::default();
        let h = HealthConfig::default();
        let thin = evidence(window(3, 3, 20), Some(window(100, 0, 20)));
        let checks = checks_of(&thin, &deploy, &h);
        assert_eq!(mark(&checks, "requests in the window"), Some(false));
        assert_eq!(mark(&checks, "error rate"), None);
        assert_eq!(mark(&checks, "availability"), None);
    }
}
