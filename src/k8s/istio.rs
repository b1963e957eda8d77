//! Istio's VirtualService and DestinationRule for a split between a stable and a canary
//! subset, with the header override modeld itself honours: `canary: true` reaches the
//! canary whatever the weights.

use super::Plan;
use super::crd::{
    ConsistentHash, Custom, Destination, DestinationRuleSpec, HttpMatch, HttpRoute, ISTIO, LoadBalancer, PortSelector,
    RouteDestination, StringMatch, Subset, TrafficPolicy, VirtualServiceSpec,
};
use super::workload::{Labels, SERVICE_PORT, meta};
use crate::front::CANARY_HEADER;
use std::collections::BTreeMap;

/// The weighted route's name (Argo Rollouts sets its weights by this name).
pub const PRIMARY_ROUTE: &str = "primary";
pub const STABLE: &str = "stable";
pub const CANARY: &str = "canary";

/// Routes `canary_weight` percent to the canary subset, the rest to stable, and every
/// request with `canary: true` to the canary.
pub fn virtual_service(plan: &Plan, canary_weight: i32) -> Custom<VirtualServiceSpec> {
    let host = plan.name.clone();
    let to = |subset: &str, weight: i32| RouteDestination {
        destination: Destination {
            host: host.clone(),
            subset: subset.into(),
            port: PortSelector { number: SERVICE_PORT as u32 },
        },
        weight,
    };
    let header = HttpRoute {
        name: "canary-header".into(),
        matches: vec![HttpMatch {
            headers: BTreeMap::from([(CANARY_HEADER.to_string(), StringMatch { exact: "true".into() })]),
        }],
        route: vec![to(CANARY, 100)],
    };
    let weighted = HttpRoute {
        name: PRIMARY_ROUTE.into(),
        matches: Vec::new(),
        route: vec![to(STABLE, 100 - canary_weight), to(CANARY, canary_weight)],
    };
    Custom {
        api_version: ISTIO,
        kind: "VirtualService",
        metadata: meta(plan, &plan.name, &plan.labels),
        spec: match &plan.istio_gateway {
            None => VirtualServiceSpec { hosts: vec![host], gateways: Vec::new(), http: vec![header, weighted] },
            // Bound to the gateway for `outside`, and to the mesh for the Service's name.
            Some(gateway) => VirtualServiceSpec {
                hosts: vec![host, gateway.host.clone()],
                gateways: vec![gateway.gateway.clone(), "mesh".into()],
                http: vec![header, weighted],
            },
        },
    }
}

/// What the weights do not govern: requests that do not pass through the mesh (the
/// Service's own load balancing spreads them over pods, so the canary gets its share of
/// pods, not of the step), and a LoadBalancer Service in front, which bypasses the mesh.
pub fn mesh_notes(plan: &Plan, first_weight: u8, stable_pods: i32, canary_pods: i32) -> Vec<String> {
    let pods_share = f64::from(canary_pods) * 100.0 / f64::from(stable_pods + canary_pods);
    let mut notes = vec![format!(
        "Istio's weights apply to requests that pass through the mesh (from pods with a sidecar, or through an Istio ingress gateway: --istio-gateway);          any other request reaches the Service, which spreads it over all pods: the canary's {canary_pods} of {} pods get about {pods_share:.0} % of those,          not the step's {first_weight} % (and without Istio installed, that is every request)",
        stable_pods + canary_pods
    )];
    if plan.load_balancer {
        notes.push(
            "--load-balancer: a LoadBalancer Service sends outside clients straight to the pods, past the mesh's weights;              expose the model through an Istio ingress gateway instead (--istio-gateway) for the steps to hold"
                .into(),
        );
    }
    notes
}

/// Subsets `stable` and `canary` selecting the pods labelled with each (Argo Rollouts adds
/// its own pod-template-hash label to them as it goes); requests with the same value of
/// `sticky_header` go to the same pod within a subset.
pub fn destination_rule(
    plan: &Plan,
    stable: &Labels,
    canary: &Labels,
    sticky_header: Option<&str>,
) -> Custom<DestinationRuleSpec> {
    let subset = |name: &str, labels: &Labels| Subset { name: name.into(), labels: labels.clone() };
    Custom {
        api_version: ISTIO,
        kind: "DestinationRule",
        metadata: meta(plan, &plan.name, &plan.labels),
        spec: DestinationRuleSpec {
            host: plan.name.clone(),
            subsets: vec![subset(STABLE, stable), subset(CANARY, canary)],
            traffic_policy: sticky_header.map(|h| TrafficPolicy {
                load_balancer: LoadBalancer { consistent_hash: ConsistentHash { http_header_name: h.to_string() } },
            }),
        },
    }
}
