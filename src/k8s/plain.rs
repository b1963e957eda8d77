//! Each strategy with Deployments (and Istio for weighted traffic): what a cluster without
//! Argo Rollouts can express, and the runbook for the steps an operator then takes.
//!
//! - rolling: one Deployment, RollingUpdate (one surge pod, none unavailable);
//! - recreate: one Deployment, Recreate;
//! - blue_green: `-blue` and `-green` Deployments, a Service whose selector switches
//!   between them and a `-preview` Service on the idle one;
//! - canary: `-stable` and `-canary` Deployments, an Istio VirtualService with the first
//!   step's weight and the `canary: true` override, and a DestinationRule;
//! - ab_test: as canary, with the configured split and the sticky header hashed.

use super::istio;
use super::workload::{self, Labels};
use super::{Object, Plan, Rendered};
use crate::config::Strategy;
use std::fmt::Write;

pub fn render(plan: &Plan) -> Rendered {
    match plan.deploy().strategy {
        Strategy::Rolling => single(plan, false),
        Strategy::Recreate => single(plan, true),
        Strategy::BlueGreen => blue_green(plan),
        Strategy::Canary | Strategy::AbTest => canary(plan),
    }
}

fn single(plan: &Plan, recreate: bool) -> Rendered {
    let name = &plan.name;
    let mut out = Rendered::default();
    out.push(Object::of(
        "deployment",
        name,
        &workload::deployment(plan, name, &plan.labels, workload::MIN_REPLICAS, recreate),
    ));
    out.push(Object::of("service", name, &workload::service(plan, name, &plan.labels)));
    out.push(Object::of("hpa", name, &workload::autoscaler(plan, name, ("Deployment", name), &plan.labels)));
    out.push(Object::of("pdb", name, &workload::disruption_budget(plan, name, &plan.labels)));
    if recreate {
        out.note("recreate: every old pod stops before a new one starts, so the model is unavailable in between (as on one host); Kubernetes has no health gate for it: watch `kubectl rollout status` and undo by hand");
    }
    let _ = write!(
        out.runbook,
        "## Roll out and back ({})\n\nApply a new render (a new model version changes the ConfigMap's name, which rolls the pods):\n\n    kubectl apply -f {dir}\n    kubectl -n {ns} rollout status deployment/{name}\n\nRoll back to the previous pod template:\n\n    kubectl -n {ns} rollout undo deployment/{name}\n",
        plan.deploy().strategy,
        dir = plan.out_hint,
        ns = plan.namespace,
    );
    out
}

/// The idle blue-green slot keeps one pod (its HPA's floor) until it is the next
/// release's: enough to check it through the preview Service, not a second full fleet.
const IDLE_REPLICAS: i32 = 1;

fn blue_green(plan: &Plan) -> Rendered {
    let mut out = Rendered::default();
    for (slot, replicas) in [("blue", workload::MIN_REPLICAS), ("green", IDLE_REPLICAS)] {
        let name = format!("{}-{slot}", plan.name);
        let labels = with(&plan.labels, "modeld.dev/slot", slot);
        out.push(Object::of("deployment", &name, &workload::deployment(plan, &name, &labels, replicas, false)));
        let hpa = workload::autoscaler_from(plan, &name, ("Deployment", &name), &labels, replicas);
        out.push(Object::of("hpa", &name, &hpa));
        out.push(Object::of("pdb", &name, &workload::disruption_budget(plan, &name, &labels)));
    }
    let active = with(&plan.labels, "modeld.dev/slot", "blue");
    let preview = with(&plan.labels, "modeld.dev/slot", "green");
    out.push(Object::of("service", &plan.name, &workload::service(plan, &plan.name, &active)));
    let preview_name = format!("{}-preview", plan.name);
    out.push(Object::of("service", &preview_name, &workload::service(plan, &preview_name, &preview)));
    out.note("blue_green: Kubernetes switches the Service by hand (runbook); modeld's bake and automatic revert need Argo Rollouts (--rollouts argo)");
    let (ns, name, dir) = (&plan.namespace, &plan.name, &plan.out_hint);
    let select = |slot: &str| format!("'{{\"spec\":{{\"selector\":{{\"modeld.dev/slot\":\"{slot}\"}}}}}}'");
    let floor = |n: i32| format!("'{{\"spec\":{{\"minReplicas\":{n}}}}}'");
    let _ = write!(
        out.runbook,
        "## Blue-green\n\n\
         `{name}` (the Service clients use) selects the blue Deployment; `{name}-preview` selects green.\n\
         First install: `kubectl apply -f {dir}` (both slots run this render's versions).\n\n\
         The idle slot (green) keeps {idle} pod: its HPA's floor. To release a new version, render the new config into a new directory (NEW) and apply its ConfigMap and the idle slot's Deployment only, check it through the preview Service, scale it up to carry the traffic, then switch:\n\n\
         \x20   kubectl -n {ns} apply -f NEW/configmap-*.yaml -f NEW/deployment-{name}-green.yaml\n\
         \x20   kubectl -n {ns} rollout status deployment/{name}-green\n\
         \x20   kubectl -n {ns} port-forward service/{name}-preview 8080:80 &   # then: curl localhost:8080/ready\n\
         \x20   kubectl -n {ns} patch hpa {name}-green -p {full}\n\
         \x20   kubectl -n {ns} scale deployment/{name}-green --replicas={min} && kubectl -n {ns} rollout status deployment/{name}-green\n\
         \x20   kubectl -n {ns} patch service {name} -p {green}\n\
         \x20   kubectl -n {ns} patch service {name}-preview -p {blue}\n\n\
         Bake for {bake} watching the thresholds (modeld's own alerts, `modeld alerts render`). Roll back at once by switching the selector back:\n\n\
         \x20   kubectl -n {ns} patch service {name} -p {blue}\n\n\
         Once the bake passed, the old slot idles down to its floor (the HPA then scales it down as its load went):\n\n\
         \x20   kubectl -n {ns} patch hpa {name}-blue -p {idle_floor}\n\n\
         The next release goes to blue the same way. Do not re-apply service-{name}.yaml or the HPAs after a switch: they describe blue as the active slot.\n",
        green = select("green"),
        blue = select("blue"),
        full = floor(workload::MIN_REPLICAS),
        idle_floor = floor(IDLE_REPLICAS),
        idle = IDLE_REPLICAS,
        min = workload::MIN_REPLICAS,
        bake = humantime::format_duration(plan.deploy().bake),
    );
    out
}

fn canary(plan: &Plan) -> Rendered {
    let deploy = plan.deploy();
    let ab = deploy.strategy == crate::config::Strategy::AbTest;
    let first = if ab { deploy.split } else { deploy.steps.first().copied().unwrap_or(100) };
    let mut out = Rendered::default();
    let stable = with(&plan.labels, "modeld.dev/track", istio::STABLE);
    let canary = with(&plan.labels, "modeld.dev/track", istio::CANARY);
    let (stable_name, canary_name) = (format!("{}-stable", plan.name), format!("{}-canary", plan.name));
    out.push(Object::of(
        "deployment",
        &stable_name,
        &workload::deployment(plan, &stable_name, &stable, workload::MIN_REPLICAS, false),
    ));
    out.push(Object::of("deployment", &canary_name, &workload::deployment(plan, &canary_name, &canary, 1, false)));
    // The canary scales with its own load (its share of requests), from one pod.
    let canary_hpa = workload::autoscaler_from(plan, &canary_name, ("Deployment", &canary_name), &canary, 1);
    out.push(Object::of("hpa", &canary_name, &canary_hpa));
    out.push(Object::of(
        "hpa",
        &stable_name,
        &workload::autoscaler(plan, &stable_name, ("Deployment", &stable_name), &stable),
    ));
    out.push(Object::of("pdb", &stable_name, &workload::disruption_budget(plan, &stable_name, &stable)));
    out.push(Object::of("service", &plan.name, &workload::service(plan, &plan.name, &plan.labels)));
    out.push(Object::of("virtualservice", &plan.name, &istio::virtual_service(plan, i32::from(first))));
    let sticky = if ab { deploy.sticky_header.as_deref() } else { None };
    out.push(Object::of("destinationrule", &plan.name, &istio::destination_rule(plan, &stable, &canary, sticky)));
    if sticky.is_some() {
        out.note("ab_test: Istio hashes sticky_header to a pod within each subset, but its weighted split between the arms is per request: a key does not stay on one arm as on the host");
    }
    out.note(&format!("{}: the weights after the first step are changed by hand (runbook); modeld's health gate and automatic revert need Argo Rollouts (--rollouts argo)", deploy.strategy));
    for note in super::istio::mesh_notes(plan, first, workload::MIN_REPLICAS, 1) {
        out.note(&note);
    }
    let (ns, name) = (&plan.namespace, &plan.name);
    let weights = |canary: u8| {
        format!(
            "kubectl -n {ns} patch virtualservice {name} --type json -p '[{{\"op\":\"replace\",\"path\":\"/spec/http/1/route/0/weight\",\"value\":{}}},{{\"op\":\"replace\",\"path\":\"/spec/http/1/route/1/weight\",\"value\":{canary}}}]'",
            100 - canary
        )
    };
    let dir = &plan.out_hint;
    let _ = write!(
        out.runbook,
        "## Canary with Istio\n\n\
         `{name}-canary` runs beside `{name}-stable`; the VirtualService sends it {first} % of requests, and every request with the header `canary: true`.\n\
         First install: `kubectl apply -f {dir}` (both run this render's versions).\n\n\
         To release a new version, render the new config into a new directory (NEW) and apply its ConfigMap and the canary only:\n\n\
         \x20   kubectl -n {ns} apply -f NEW/configmap-*.yaml -f NEW/deployment-{name}-canary.yaml\n\
         \x20   kubectl -n {ns} rollout status deployment/{name}-canary\n\n\
         Then each step below holds for {bake} while the thresholds hold (modeld's alerts, `modeld alerts render`):\n\n",
        bake = humantime::format_duration(deploy.bake),
    );
    let steps: Vec<u8> = if ab { vec![deploy.split] } else { deploy.steps.clone() };
    for step in steps {
        let _ = writeln!(out.runbook, "    {}", weights(step));
    }
    let _ = write!(
        out.runbook,
        "\nPromote: give `{name}-stable` the new version, then send it everything again:\n\n\
         \x20   kubectl -n {ns} apply -f NEW/deployment-{name}-stable.yaml\n\
         \x20   kubectl -n {ns} rollout status deployment/{name}-stable\n    {}\n\n\
         Roll back: all traffic to stable, then the canary back to the old render:\n\n    {}\n\
         \x20   kubectl -n {ns} apply -f {dir}/deployment-{name}-canary.yaml\n",
        weights(0),
        weights(0),
    );
    out
}

/// `labels` plus one more.
pub fn with(labels: &Labels, key: &str, value: &str) -> Labels {
    let mut labels = labels.clone();
    labels.insert(key.into(), value.into());
    labels
}
