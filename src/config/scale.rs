//! `workers = { min, max }`, `[model.scale]` and `[server.budget]`: how many workers a model
//! runs as its load changes, and what the host lends all models together.
//!
//! The targets and the behaviour follow the Kubernetes HorizontalPodAutoscaler v2 (its
//! `metrics` and `behavior`), with workers for pods: each measure proposes
//! `ceil(workers × measured / target)` and the largest proposal wins; stabilization
//! windows and per-period policies then bound how fast the count may move. In-flight
//! requests per worker thread and queue time are the targets; the workers' CPU and
//! memory are limits (the deployment protocol's 70 % and 80 %): past them the model also
//! grows. A plain `workers = N` keeps the count fixed, as before.

use super::ModelConfig;
use super::raw::{RawBehavior, RawBudget, RawPolicy, RawScale, RawWorkers};
use super::report::{KeyPath, Locator, Problem};
use super::validate::{parse_duration, parse_size};
use serde_json::{Value, json};
use std::time::Duration;

/// Most workers one model may run.
pub const MAX_WORKERS: usize = 256;

/// `workers`: a fixed count (`min == max`) or the bounds the autoscaler keeps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workers {
    pub min: usize,
    pub max: usize,
}

impl Workers {
    pub const fn fixed(n: usize) -> Workers {
        Workers { min: n, max: n }
    }

    /// Whether the autoscaler moves this model's worker count.
    pub fn autoscaled(&self) -> bool {
        self.min < self.max
    }
}

impl std::fmt::Display for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.autoscaled() {
            false => write!(f, "{}", self.min),
            true => write!(f, "{}..{}", self.min, self.max),
        }
    }
}

/// `[model.scale]`: what the autoscaler aims at and how fast it moves.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleConfig {
    /// In-flight requests (running or queued in a worker) per worker thread.
    pub target_inflight: f64,
    /// Mean time a request waits for an inference thread.
    pub target_queue: Duration,
    /// The share of their cores the workers may keep busy (0.70: 70 %).
    pub max_cpu: f64,
    /// The share of its `memory_limit` one worker may use (without a limit: not judged).
    pub max_memory: f64,
    /// How often the autoscaler decides (the HPA's sync period).
    pub interval: Duration,
    /// A proposal within this share of the current count changes nothing (the HPA's 0.1).
    pub tolerance: f64,
    pub up: Behavior,
    pub down: Behavior,
}

/// One direction's `behavior`: a stabilization window and the rate policies.
#[derive(Debug, Clone, PartialEq)]
pub struct Behavior {
    /// Up: the lowest proposal of this window is followed; down: the highest.
    pub stabilization: Duration,
    pub policies: Vec<Policy>,
    pub select: Select,
}

/// At most `change` within any `period`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub change: Change,
    pub period: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    Workers(usize),
    Percent(u32),
}

/// Which policy wins when several apply (`selectPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// The one allowing the largest change.
    Max,
    /// The one allowing the smallest change.
    Min,
    /// No change in this direction.
    Disabled,
}

impl Select {
    pub fn name(self) -> &'static str {
        match self {
            Select::Max => "max",
            Select::Min => "min",
            Select::Disabled => "disabled",
        }
    }
}

impl Default for ScaleConfig {
    /// The HPA's defaults (up: double or +4 per 15 s, no window; down: after a 5 minute
    /// window), the protocol's 70 % CPU and 80 % memory.
    fn default() -> ScaleConfig {
        ScaleConfig {
            target_inflight: 1.0,
            target_queue: Duration::from_millis(50),
            max_cpu: 0.70,
            max_memory: 0.80,
            interval: Duration::from_secs(5),
            tolerance: 0.1,
            up: Behavior {
                stabilization: Duration::ZERO,
                policies: vec![
                    Policy { change: Change::Workers(4), period: Duration::from_secs(15) },
                    Policy { change: Change::Percent(100), period: Duration::from_secs(15) },
                ],
                select: Select::Max,
            },
            down: Behavior {
                stabilization: Duration::from_secs(300),
                policies: vec![Policy { change: Change::Percent(100), period: Duration::from_secs(15) }],
                select: Select::Max,
            },
        }
    }
}

/// `[server.budget]`: what all models' workers may hold together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Cores: each worker holds its threads × intra-op threads.
    pub cores: usize,
    /// Bytes; `None`: 80 % of the host's memory, read when the autoscaler starts.
    pub memory: Option<u64>,
    /// Whether `cores` was given (else it is the host's, and least workers over it are
    /// warned of rather than refused, as fixed counts over the host's cores always were).
    pub cores_given: bool,
}

impl Budget {
    /// The share of the host's memory the budget takes without `memory`.
    pub const HOST_MEMORY_SHARE: f64 = 0.80;

    /// The cores this process may use (a cgroup's CPU quota honoured).
    pub fn host_cores() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

impl std::fmt::Display for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = if self.cores_given { "" } else { " (the host's)" };
        match self.memory {
            Some(m) => write!(f, "{} cores{host}, {} MiB memory", self.cores, m >> 20),
            None => write!(f, "{} cores{host}, 80% of the host's memory", self.cores),
        }
    }
}

impl Default for Budget {
    fn default() -> Budget {
        Budget { cores: Budget::host_cores(), memory: None, cores_given: false }
    }
}

/// `workers = N` or `workers = { min = A, max = B }`.
pub fn workers(raw: Option<&RawWorkers>, key: &KeyPath, at: &Locator, problems: &mut Vec<Problem>) -> Workers {
    match raw {
        None => Workers::fixed(1),
        Some(RawWorkers::Count(n)) => Workers::fixed(count(*n, key, at, problems).unwrap_or(1)),
        Some(RawWorkers::Range(table)) => match bounds(table) {
            Err(message) => {
                problems.push(at.error(key, message));
                Workers::fixed(1)
            }
            Ok((min, max)) => {
                let min = min.map_or(Some(1), |n| count(n, &key.key("min"), at, problems));
                let max = count(max, &key.key("max"), at, problems);
                match (min, max) {
                    (Some(min), Some(max)) if min <= max => Workers { min, max },
                    (Some(min), Some(max)) => {
                        problems.push(at.error(key, format!("min ({min}) is more than max ({max})")));
                        Workers::fixed(min)
                    }
                    (min, _) => Workers::fixed(min.unwrap_or(1)),
                }
            }
        },
    }
}

/// A worker count within 1..=[`MAX_WORKERS`].
fn count(n: i64, key: &KeyPath, at: &Locator, problems: &mut Vec<Problem>) -> Option<usize> {
    match usize::try_from(n) {
        Ok(n) if (1..=MAX_WORKERS).contains(&n) => Some(n),
        _ => {
            problems.push(at.error(key, format!("must be between 1 and {MAX_WORKERS}, got {n}")));
            None
        }
    }
}

/// `{ min = A, max = B }` as written: `min` may be left out, `max` may not, nothing else.
fn bounds(table: &toml::Table) -> Result<(Option<i64>, i64), String> {
    if let Some(unknown) = table.keys().find(|k| *k != "min" && *k != "max") {
        return Err(format!("unknown key '{unknown}': workers takes min and max"));
    }
    let number = |name: &str| match table.get(name) {
        None => Ok(None),
        Some(toml::Value::Integer(n)) => Ok(Some(*n)),
        Some(other) => Err(format!("{name} must be a whole number, got {other}")),
    };
    match (number("min")?, number("max")?) {
        (min, Some(max)) => Ok((min, max)),
        (_, None) => Err("needs max, e.g. workers = { min = 1, max = 4 }".into()),
    }
}

/// `[model.scale]`, checked; defaults for what it leaves out. A table given to a model
/// whose count is fixed is warned of: nothing would read it.
pub fn build(
    raw: Option<&RawScale>,
    workers: Workers,
    key: &KeyPath,
    at: &Locator,
    problems: &mut Vec<Problem>,
) -> ScaleConfig {
    let mut scale = ScaleConfig::default();
    let Some(raw) = raw else { return scale };
    if !workers.autoscaled() {
        problems.push(at.warning(
            key,
            format!("ignored: workers is fixed at {workers}; write workers = {{ min = 1, max = 4 }} to autoscale"),
        ));
    }
    let mut err = |name: &str, message: String| problems.push(at.error(&key.key(name), message));
    if let Some(v) = raw.target_inflight {
        match v.is_finite() && v > 0.0 && v <= 1024.0 {
            true => scale.target_inflight = v,
            false => {
                err("target_inflight", format!("must be more than 0 and at most 1024 requests per thread, got {v}"))
            }
        }
    }
    let mut percent = |name: &str, value: Option<f64>, target: &mut f64| {
        if let Some(v) = value {
            match v.is_finite() && v > 0.0 && v <= 100.0 {
                true => *target = v / 100.0,
                false => err(name, format!("must be a percentage above 0 and at most 100, got {v}")),
            }
        }
    };
    percent("max_cpu", raw.max_cpu, &mut scale.max_cpu);
    percent("max_memory", raw.max_memory, &mut scale.max_memory);
    if let Some(v) = raw.tolerance {
        match (0.0..1.0).contains(&v) {
            true => scale.tolerance = v,
            false => problems.push(at.error(&key.key("tolerance"), format!("must be at least 0 and below 1, got {v}"))),
        }
    }
    let mut duration = |name: &str, value: &Option<String>, target: &mut Duration| match parse_duration(value, *target)
    {
        Ok(d) => *target = d,
        Err(m) => problems.push(at.error(&key.key(name), m)),
    };
    duration("target_queue", &raw.target_queue, &mut scale.target_queue);
    duration("interval", &raw.interval, &mut scale.interval);
    if let Some(up) = &raw.up {
        scale.up = behavior(up, scale.up, &key.key("up"), at, problems);
    }
    if let Some(down) = &raw.down {
        scale.down = behavior(down, scale.down, &key.key("down"), at, problems);
    }
    scale
}

/// Longest stabilization window or policy period (the HPA's limit is an hour).
const MAX_PERIOD: Duration = Duration::from_secs(3600);

fn behavior(raw: &RawBehavior, mut b: Behavior, key: &KeyPath, at: &Locator, problems: &mut Vec<Problem>) -> Behavior {
    if let Some(text) = &raw.stabilization {
        match super::validate::parse_duration_up_to(text, MAX_PERIOD, "a stabilization window may last") {
            Ok(d) => b.stabilization = d,
            Err(m) => problems.push(at.error(&key.key("stabilization"), m)),
        }
    }
    if let Some(select) = &raw.select {
        match [Select::Max, Select::Min, Select::Disabled].into_iter().find(|s| s.name() == select) {
            Some(s) => b.select = s,
            None => problems
                .push(at.error(&key.key("select"), format!("'{select}' is not a selection (max, min or disabled)"))),
        }
    }
    if let Some(policies) = &raw.policies {
        let key = key.key("policies");
        if policies.is_empty() {
            problems.push(at.error(&key, "needs at least one policy, e.g. { workers = 4, period = \"15s\" }"));
        }
        let built: Vec<Policy> =
            policies.iter().enumerate().filter_map(|(i, p)| policy(p, &key.index(i), at, problems)).collect();
        if built.len() == policies.len() && !built.is_empty() {
            b.policies = built;
        }
    }
    b
}

fn policy(raw: &RawPolicy, key: &KeyPath, at: &Locator, problems: &mut Vec<Problem>) -> Option<Policy> {
    let change =
        match (raw.workers, raw.percent) {
            (Some(n), None) if n >= 1 && n as usize <= MAX_WORKERS => Change::Workers(n as usize),
            (None, Some(p)) if (1..=1000).contains(&p) => Change::Percent(p as u32),
            (Some(n), None) => {
                problems.push(at.error(&key.key("workers"), format!("must be between 1 and {MAX_WORKERS}, got {n}")));
                return None;
            }
            (None, Some(p)) => {
                problems.push(at.error(&key.key("percent"), format!("must be between 1 and 1000, got {p}")));
                return None;
            }
            _ => {
                problems.push(at.error(
                    key,
                    "names either workers or percent (one of them), e.g. { percent = 100, period = \"15s\" }",
                ));
                return None;
            }
        };
    match super::validate::parse_duration_up_to(&raw.period, MAX_PERIOD, "a policy's period may last") {
        Ok(period) if !period.is_zero() => Some(Policy { change, period }),
        Ok(_) => {
            problems.push(at.error(&key.key("period"), "must be more than zero"));
            None
        }
        Err(m) => {
            problems.push(at.error(&key.key("period"), m));
            None
        }
    }
}

/// `[server.budget]`.
pub fn budget(raw: Option<&RawBudget>, key: &KeyPath, at: &Locator, problems: &mut Vec<Problem>) -> Budget {
    let mut budget = Budget::default();
    let Some(raw) = raw else { return budget };
    if let Some(cores) = raw.cores {
        match usize::try_from(cores) {
            Ok(c) if c >= 1 => (budget.cores, budget.cores_given) = (c, true),
            _ => problems.push(at.error(&key.key("cores"), format!("must be at least 1, got {cores}"))),
        }
    }
    if let Some(memory) = &raw.memory {
        match parse_size(memory) {
            Ok(bytes) => budget.memory = Some(bytes as u64),
            Err(m) => problems.push(at.error(&key.key("memory"), m)),
        }
    }
    budget
}

/// The cores every model always holds (a fixed count, an autoscaled model's `min`), and
/// each model's share in words (`name workersxcores`).
pub fn least_cores(models: &[ModelConfig]) -> (usize, String) {
    let held = models.iter().map(|m| m.workers.min * m.cores_per_worker()).sum();
    let per_model: Vec<String> =
        models.iter().map(|m| format!("{} {}x{}", m.name, m.workers.min, m.cores_per_worker())).collect();
    (held, per_model.join(", "))
}

/// With any model autoscaled, what every model always holds must fit a given budget: the
/// autoscaler keeps each model's `min` whatever the others need. (Over the host's cores,
/// the budget's default, `check_cores` warns of the same sum.)
pub fn check_budget(models: &[ModelConfig], budget: &Budget, at: &Locator, problems: &mut Vec<Problem>) {
    if !models.iter().any(|m| m.workers.autoscaled()) {
        return;
    }
    let (held, per_model) = least_cores(models);
    if budget.cores_given && held > budget.cores {
        problems.push(at.error(
            &KeyPath::default().key("server").key("budget").key("cores"),
            format!(
                "the models' least workers hold {held} cores ({per_model}), over the budget's {}: lower a min or raise the budget",
                budget.cores
            ),
        ));
    }
    if let Some(memory) = budget.memory {
        let held: u64 = models.iter().filter_map(|m| m.memory_limit.map(|l| l * m.workers.min as u64)).sum();
        if held > memory {
            problems.push(at.error(
                &KeyPath::default().key("server").key("budget").key("memory"),
                format!(
                    "the models' least workers may use {} MiB (min x memory_limit), over the budget's {} MiB",
                    held >> 20,
                    memory >> 20
                ),
            ));
        }
    }
}

/// `workers` as a rollout's evidence keeps the model's config (`describe::model`): the
/// count, or the bounds with the policy in force.
pub fn describe_workers(m: &ModelConfig) -> Value {
    if !m.workers.autoscaled() {
        return json!(m.workers.min);
    }
    let s = &m.scale;
    let behavior = |b: &Behavior| {
        json!({
            "stabilization": humantime::format_duration(b.stabilization).to_string(),
            "select": b.select.name(),
            "policies": b.policies.iter().map(|p| match p.change {
                Change::Workers(n) => json!({ "workers": n, "period": humantime::format_duration(p.period).to_string() }),
                Change::Percent(n) => json!({ "percent": n, "period": humantime::format_duration(p.period).to_string() }),
            }).collect::<Vec<_>>(),
        })
    };
    json!({
        "min": m.workers.min,
        "max": m.workers.max,
        "scale": {
            "target_inflight": s.target_inflight,
            "target_queue": humantime::format_duration(s.target_queue).to_string(),
            "max_cpu": s.max_cpu * 100.0,
            "max_memory": s.max_memory * 100.0,
            "interval": humantime::format_duration(s.interval).to_string(),
            "tolerance": s.tolerance,
            "up": behavior(&s.up),
            "down": behavior(&s.down),
        },
    })
}

impl ScaleConfig {
    /// The policy in one line, for `modeld plan` and the logs.
    pub fn summary(&self, workers: Workers) -> String {
        let behavior = |b: &Behavior| {
            let policies: Vec<String> = b
                .policies
                .iter()
                .map(|p| match p.change {
                    Change::Workers(n) => format!("{n} workers per {}", humantime::format_duration(p.period)),
                    Change::Percent(n) => format!("{n}% per {}", humantime::format_duration(p.period)),
                })
                .collect();
            match b.select {
                Select::Disabled => "disabled".to_string(),
                select => format!(
                    "after a {} window, at most {} ({} of them)",
                    humantime::format_duration(b.stabilization),
                    policies.join(" or "),
                    select.name()
                ),
            }
        };
        format!(
            "{}..{} workers, aiming at {} in-flight requests per worker thread and {} mean queue time, \
             CPU under {}% and memory under {}% of memory_limit; decided every {}; up: {}; down: {}",
            workers.min,
            workers.max,
            self.target_inflight,
            humantime::format_duration(self.target_queue),
            self.max_cpu * 100.0,
            self.max_memory * 100.0,
            humantime::format_duration(self.interval),
            behavior(&self.up),
            behavior(&self.down)
        )
    }
}
