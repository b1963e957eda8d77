//! Each strategy as an Argo Rollouts `Rollout`, judged by an `AnalysisTemplate` whose
//! Prometheus queries are modeld's own health checks ([`crate::promql`]) at the critical
//! thresholds that fail a candidate on the host, so the cluster reverts on what the host
//! daemon reverts on.
//!
//! - canary: `setWeight` and `pause` per step (the bake), through the Istio
//!   VirtualService and DestinationRule, with the analysis running in the background;
//! - rolling: the Rollout's own surge-by-surge update, with the analysis in the background;
//! - blue_green: active and preview Services; the analysis runs after the switch for the
//!   bake, while the old pods stay up to switch back to;
//! - ab_test: the split, held for its duration, then paused until promoted;
//! - recreate: not expressible (Argo Rollouts has no recreate strategy).
//!
//! Each model in the config is judged: its requests are selected by model and the version
//! the render pinned (the Rollout passes those versions as the analysis's arguments).
//! Fewer than `min_samples` requests in the window make a measurement inconclusive, as
//! they make the host's gate wait.

use super::crd::{
    ARGO, Analysis, AnalysisArg, AnalysisTemplateSpec, BackgroundAnalysis, BlueGreen, Canary, CanaryStep, Custom,
    DestinationRuleRef, IstioRouting, Metric, Pause, Prometheus, Provider, RolloutSpec, RolloutStrategy, TemplateArg,
    TemplateRef, TrafficRouting, VirtualServiceRef,
};
use super::workload::{self, meta};
use super::{Object, Plan, RenderError, Rendered, istio};
use crate::config::{ModelConfig, OnInconclusive, Strategy};
use crate::promql::{self, Queries};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::time::Duration;

/// Measurements are taken at most this often: Prometheus sees a window at scrape resolution.
const MIN_INTERVAL: Duration = Duration::from_secs(30);

pub fn render(plan: &Plan) -> Result<Rendered, RenderError> {
    let deploy = plan.deploy();
    let mut out = Rendered::default();
    let strategy = match deploy.strategy {
        Strategy::Recreate => {
            return Err(RenderError::Unsupported(
                "Argo Rollouts has no recreate strategy (its canary and blue-green both keep old pods serving); render with --rollouts kubernetes, which gives a Deployment with strategy Recreate".into(),
            ));
        }
        Strategy::BlueGreen => blue_green(plan, &mut out),
        Strategy::Rolling => {
            out.push(Object::of("service", &plan.name, &workload::service(plan, &plan.name, &plan.labels)));
            RolloutStrategy::Canary(Canary {
                max_surge: Some(IntOrString::Int(1)),
                max_unavailable: Some(IntOrString::Int(0)),
                analysis: Some(background(plan, 0)),
                ..Default::default()
            })
        }
        Strategy::Canary | Strategy::AbTest => weighted(plan, &mut out),
    };
    let name = &plan.name;
    let rollout = Custom {
        api_version: ARGO,
        kind: "Rollout",
        metadata: meta(plan, name, &plan.labels),
        spec: RolloutSpec {
            replicas: workload::MIN_REPLICAS,
            revision_history_limit: 3,
            selector: workload::selector(&plan.labels),
            template: workload::pod_template(plan, &plan.labels),
            strategy,
        },
    };
    out.push(Object::of("rollout", name, &rollout));
    let template = template(plan, &mut out);
    out.push(Object::of("analysistemplate", &template_name(plan), &template));
    out.push(Object::of("hpa", name, &workload::autoscaler(plan, name, ("Rollout", name), &plan.labels)));
    out.push(Object::of("pdb", name, &workload::disruption_budget(plan, name, &plan.labels)));
    if deploy.shadow > Duration::ZERO {
        out.note("shadow: Argo Rollouts gives the new version real traffic from its first step; modeld's shadow phase (mirrored requests, agreement check) has no equivalent here");
    }
    out.runbook.push_str(&runbook(plan));
    Ok(out)
}

fn weighted(plan: &Plan, out: &mut Rendered) -> RolloutStrategy {
    let deploy = plan.deploy();
    let bake = Some(promql::range(deploy.bake));
    let mut steps = Vec::new();
    if deploy.strategy == Strategy::AbTest {
        steps.push(CanaryStep::SetWeight(i32::from(deploy.split)));
        steps.push(CanaryStep::Pause(Pause { duration: Some(promql::range(deploy.duration)) }));
        // Then it waits for the operator, as `modeld promote` does on the host.
        steps.push(CanaryStep::Pause(Pause { duration: None }));
    } else {
        for &weight in deploy.steps.iter().filter(|w| **w < 100) {
            steps.push(CanaryStep::SetWeight(i32::from(weight)));
            steps.push(CanaryStep::Pause(Pause { duration: bake.clone() }));
        }
    }
    out.push(Object::of("service", &plan.name, &workload::service(plan, &plan.name, &plan.labels)));
    out.push(Object::of("virtualservice", &plan.name, &istio::virtual_service(plan, 0)));
    // Argo scales the canary's pods to the step's share of the replicas (at least one).
    let first =
        if deploy.strategy == Strategy::AbTest { deploy.split } else { deploy.steps.first().copied().unwrap_or(100) };
    let canary_pods = ((workload::MIN_REPLICAS * i32::from(first) + 99) / 100).max(1);
    for note in istio::mesh_notes(plan, first, workload::MIN_REPLICAS, canary_pods) {
        out.note(&note);
    }
    let sticky = match deploy.strategy {
        Strategy::AbTest => deploy.sticky_header.as_deref(),
        _ => None,
    };
    // Argo Rollouts puts each subset on its own pods (it adds their pod-template hash to
    // the subsets' labels), so both start from the plan's labels.
    out.push(Object::of(
        "destinationrule",
        &plan.name,
        &istio::destination_rule(plan, &plan.labels, &plan.labels, sticky),
    ));
    if sticky.is_some() {
        out.note("ab_test: Istio hashes sticky_header to a pod within each subset, but its weighted split between the arms is per request: a key does not stay on one arm as on the host");
    }
    RolloutStrategy::Canary(Canary {
        steps,
        analysis: Some(background(plan, 1)),
        traffic_routing: Some(TrafficRouting {
            istio: IstioRouting {
                virtual_service: VirtualServiceRef {
                    name: plan.name.clone(),
                    routes: vec![istio::PRIMARY_ROUTE.into()],
                },
                destination_rule: DestinationRuleRef {
                    name: plan.name.clone(),
                    canary_subset_name: istio::CANARY.into(),
                    stable_subset_name: istio::STABLE.into(),
                },
            },
        }),
        ..Default::default()
    })
}

fn blue_green(plan: &Plan, out: &mut Rendered) -> RolloutStrategy {
    let preview = format!("{}-preview", plan.name);
    out.push(Object::of("service", &plan.name, &workload::service(plan, &plan.name, &plan.labels)));
    out.push(Object::of("service", &preview, &workload::service(plan, &preview, &plan.labels)));
    let deploy = plan.deploy();
    // The old pods must outlive the post-promotion analysis (the bake) to be switched back to.
    let keep = deploy.keep_previous.max(deploy.bake + 2 * MIN_INTERVAL);
    RolloutStrategy::BlueGreen(BlueGreen {
        active_service: plan.name.clone(),
        preview_service: preview,
        auto_promotion_enabled: true,
        // The preview has no client traffic to judge: the analysis runs on the bake after
        // the switch, and a failure switches back.
        post_promotion_analysis: Analysis { templates: vec![template_ref(plan)], args: args(plan) },
        scale_down_delay_seconds: i32::try_from(keep.as_secs()).unwrap_or(i32::MAX),
    })
}

fn background(plan: &Plan, starting_step: i32) -> BackgroundAnalysis {
    BackgroundAnalysis { templates: vec![template_ref(plan)], args: args(plan), starting_step }
}

fn template_ref(plan: &Plan) -> TemplateRef {
    TemplateRef { template_name: template_name(plan) }
}

pub fn template_name(plan: &Plan) -> String {
    format!("{}-gate", plan.name)
}

/// The argument naming the version of `model` to judge.
pub fn version_arg(model: &str) -> String {
    format!("version-{model}")
}

fn args(plan: &Plan) -> Vec<AnalysisArg> {
    plan.versions.iter().map(|(model, v)| AnalysisArg { name: version_arg(model), value: v.to_string() }).collect()
}

fn template(plan: &Plan, out: &mut Rendered) -> Custom<AnalysisTemplateSpec> {
    let mut args: Vec<TemplateArg> =
        plan.versions.iter().map(|(model, _)| TemplateArg { name: version_arg(model), value: None }).collect();
    args.push(TemplateArg { name: "prometheus".into(), value: Some(plan.prometheus.clone()) });
    // A blue-green bake is a run of its own, which must end for the rollout to complete;
    // canary and rolling analyses run in the background until their rollout ends.
    let bake = (plan.deploy().strategy == Strategy::BlueGreen).then_some(plan.deploy().bake);
    let mut metrics = Vec::new();
    for model in &plan.config.models {
        metrics.extend(model_metrics(model, bake));
        if model.deploy.consecutive_breaches > 1 {
            out.note(&format!(
                "model '{}': consecutive_breaches = {}: Argo Rollouts counts failed measurements over the whole run, not in a row, so {} failures anywhere fail it (stricter than the host)",
                model.name, model.deploy.consecutive_breaches, model.deploy.consecutive_breaches
            ));
        }
        if model.deploy.on_inconclusive == OnInconclusive::Fail {
            out.note(&format!(
                "model '{}': on_inconclusive = \"fail\": Argo Rollouts pauses (not aborts) a rollout whose analysis stays inconclusive past inconclusiveLimit; abort it with `kubectl argo rollouts abort`",
                model.name
            ));
        }
    }
    Custom {
        api_version: ARGO,
        kind: "AnalysisTemplate",
        metadata: meta(plan, template_name(plan), &plan.labels),
        spec: AnalysisTemplateSpec { args, metrics },
    }
}

/// One metric per health check with a critical threshold, for one model; measured over
/// `bake` when given (the first measurement is at once, then one per interval).
fn model_metrics(model: &ModelConfig, bake: Option<Duration>) -> Vec<Metric> {
    let h = &model.health;
    let d = &model.deploy;
    let selector = format!("model=\"{}\",version=\"{{{{args.{}}}}}\"", model.name, version_arg(&model.name));
    let q = Queries::new(selector, h.window);
    let interval = d.check_every.max(MIN_INTERVAL);
    let inconclusive = d.inconclusive_timeout.as_secs().div_ceil(interval.as_secs().max(1));
    let count = bake.map(|b| i32::try_from(b.as_secs().div_ceil(interval.as_secs().max(1)) + 1).unwrap_or(i32::MAX));
    let metric = |check: &str, query: String, pass: String, fail: String| Metric {
        name: format!("{}-{check}", model.name),
        interval: promql::range(interval),
        count,
        // The host reverts after consecutive_breaches failed judgements.
        failure_limit: d.consecutive_breaches.saturating_sub(1) as i32,
        inconclusive_limit: i32::try_from(inconclusive).unwrap_or(i32::MAX),
        success_condition: format!("len(result) > 0 && {pass}"),
        failure_condition: format!("len(result) > 0 && {fail}"),
        provider: Provider { prometheus: Prometheus { address: "{{args.prometheus}}".into(), query } },
    };
    let guarded = |value: String| format!("({value}) and on (model, version) ({})", q.enough(h.min_samples));
    let seconds = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
    // (check, query, critical threshold, whether the value must stay at most it)
    let checks = [
        ("error-rate", q.error_rate(), h.error_rate.critical, true),
        ("availability", q.availability(), h.availability.critical, false),
        ("p95-latency", q.latency_quantile(0.95), seconds(h.p95_latency.critical), true),
        ("p99-latency", q.latency_quantile(0.99), seconds(h.p99_latency.critical), true),
    ];
    let mut metrics: Vec<Metric> = checks
        .into_iter()
        .filter_map(|(check, query, threshold, at_most)| {
            let t = threshold?;
            let (pass, fail) = if at_most { ("<=", ">") } else { (">=", "<") };
            Some(metric(check, guarded(query), format!("result[0] {pass} {t}"), format!("result[0] {fail} {t}")))
        })
        .collect();
    // Any OOM kill is critical, whatever the traffic.
    metrics.push(metric("oom-kills", q.oom_kills(), "result[0] == 0".into(), "result[0] > 0".into()));
    metrics
}

fn runbook(plan: &Plan) -> String {
    let (ns, name) = (&plan.namespace, &plan.name);
    format!(
        "## Argo Rollouts ({strategy})\n\n\
         Needs the Argo Rollouts controller (and Istio for canary and ab_test). Apply a new render to start a rollout (a new model version changes the ConfigMap's name, which changes the pod template):\n\n\
         \x20   kubectl apply -f {dir}\n\
         \x20   kubectl argo rollouts -n {ns} get rollout {name} --watch\n\n\
         The AnalysisTemplate `{template}` fails the rollout on the thresholds modeld's gate uses; Argo then aborts it and sends all traffic back to the stable pods. By hand:\n\n\
         \x20   kubectl argo rollouts -n {ns} abort {name}      # back to stable now\n\
         \x20   kubectl argo rollouts -n {ns} promote {name}    # past a pause (ab_test waits here)\n\
         \x20   kubectl argo rollouts -n {ns} undo {name}       # to the previous revision\n",
        strategy = plan.deploy().strategy,
        dir = plan.out_hint,
        template = template_name(plan),
    )
}
