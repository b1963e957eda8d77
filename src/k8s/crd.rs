//! Istio and Argo Rollouts resources as typed serde structs: only the fields modeld
//! renders, named as those projects' CRD schemas name them (the tests validate rendered
//! objects against the schemas themselves), so a misspelt field is a compile error here
//! and a schema error there.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use std::collections::BTreeMap;

/// A custom resource: its group's apiVersion and kind around its spec.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Custom<S> {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: ObjectMeta,
    pub spec: S,
}

pub const ISTIO: &str = "networking.istio.io/v1";
pub const ARGO: &str = "argoproj.io/v1alpha1";

// Istio: VirtualService and DestinationRule.

#[derive(Serialize)]
pub struct VirtualServiceSpec {
    pub hosts: Vec<String>,
    /// The ingress gateway as well as the mesh, when asked (`--istio-gateway`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    pub http: Vec<HttpRoute>,
}

#[derive(Serialize, Default)]
pub struct HttpRoute {
    pub name: String,
    #[serde(rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpMatch>,
    pub route: Vec<RouteDestination>,
}

#[derive(Serialize)]
pub struct HttpMatch {
    pub headers: BTreeMap<String, StringMatch>,
}

#[derive(Serialize)]
pub struct StringMatch {
    pub exact: String,
}

#[derive(Serialize)]
pub struct RouteDestination {
    pub destination: Destination,
    pub weight: i32,
}

#[derive(Serialize)]
pub struct Destination {
    pub host: String,
    pub subset: String,
    pub port: PortSelector,
}

#[derive(Serialize)]
pub struct PortSelector {
    pub number: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRuleSpec {
    pub host: String,
    pub subsets: Vec<Subset>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
}

#[derive(Serialize)]
pub struct Subset {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicy {
    pub load_balancer: LoadBalancer,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancer {
    pub consistent_hash: ConsistentHash,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsistentHash {
    pub http_header_name: String,
}

// Argo Rollouts: Rollout and AnalysisTemplate.

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    pub replicas: i32,
    pub revision_history_limit: i32,
    pub selector: LabelSelector,
    pub template: PodTemplateSpec,
    pub strategy: RolloutStrategy,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RolloutStrategy {
    Canary(Canary),
    BlueGreen(BlueGreen),
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Canary {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<CanaryStep>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analysis: Option<BackgroundAnalysis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic_routing: Option<TrafficRouting>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CanaryStep {
    SetWeight(i32),
    /// A pause for a duration, or until promoted (`kubectl argo rollouts promote`).
    Pause(Pause),
}

#[derive(Serialize)]
pub struct Pause {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackgroundAnalysis {
    pub templates: Vec<TemplateRef>,
    pub args: Vec<AnalysisArg>,
    pub starting_step: i32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    pub templates: Vec<TemplateRef>,
    pub args: Vec<AnalysisArg>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateRef {
    pub template_name: String,
}

#[derive(Serialize)]
pub struct AnalysisArg {
    pub name: String,
    pub value: String,
}

#[derive(Serialize)]
pub struct TrafficRouting {
    pub istio: IstioRouting,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IstioRouting {
    pub virtual_service: VirtualServiceRef,
    pub destination_rule: DestinationRuleRef,
}

#[derive(Serialize)]
pub struct VirtualServiceRef {
    pub name: String,
    pub routes: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRuleRef {
    pub name: String,
    pub canary_subset_name: String,
    pub stable_subset_name: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreen {
    pub active_service: String,
    pub preview_service: String,
    pub auto_promotion_enabled: bool,
    pub post_promotion_analysis: Analysis,
    pub scale_down_delay_seconds: i32,
}

#[derive(Serialize)]
pub struct AnalysisTemplateSpec {
    pub args: Vec<TemplateArg>,
    pub metrics: Vec<Metric>,
}

#[derive(Serialize)]
pub struct TemplateArg {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Metric {
    pub name: String,
    pub interval: String,
    /// Measurements to take; without it a metric runs until its rollout ends (background
    /// analysis), with it the run ends after `count` (a blue-green bake).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<i32>,
    pub failure_limit: i32,
    pub inconclusive_limit: i32,
    pub success_condition: String,
    pub failure_condition: String,
    pub provider: Provider,
}

#[derive(Serialize)]
pub struct Provider {
    pub prometheus: Prometheus,
}

#[derive(Serialize)]
pub struct Prometheus {
    pub address: String,
    pub query: String,
}
