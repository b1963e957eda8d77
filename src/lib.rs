//! modeld: a host-level model serving daemon.
//!
//! One process, the supervisor, serves ONNX models over local HTTP from worker processes
//! it spawns, one model version per pool of workers.
//!
//! Modules, from the edges in:
//! - [`accept`]: the one accept loop (with backoff) of every listener.
//! - [`admin`]: the admin socket and the CLI's client for it (`modeld status`).
//! - [`alerts`]: Prometheus alerting rules rendered from the health thresholds.
//! - [`config`]: `modeld.toml`, raw then validated.
//! - [`console`]: what the live view at `/ui` shows, and the timeline its charts draw.
//! - [`daemon`]: `modeld serve`, wiring everything and running the event loop; it owns the
//!   systemd notifier.
//! - [`front`]: HTTP (hyper), the protocol adapters (OIP v2, `/predict`) and probes.
//! - [`health`]: what `/health` and `/ready` say, read from live state.
//! - [`metrics`]: every Prometheus metric, in one place.
//! - [`promql`]: the health checks as PromQL over those metrics, for alerts and analyses.
//! - [`k8s`]: Kubernetes manifests (and Argo Rollouts, Istio) rendered from the config.
//! - [`rollout`]: the rollout engine: strategies, signature check, shadow phase, health
//!   gate, persisted state, repository watch.
//! - [`router`]: per-model routing tables swapped atomically, pools of workers,
//!   multiplexed connections to them, the shadow phase's mirror of live traffic.
//! - [`scale`]: the host autoscaler: each autoscaled model's worker count from its load,
//!   as the HPA decides, within the host budget shared by all models.
//! - [`supervisor`]: spawning, restarting and stopping workers; signals.
//! - [`window`]: measured windows of request outcomes and latencies per version.
//! - [`wire`]: what crosses between supervisor and workers: the binary frames, and the
//!   settings and files both read (`model.toml`'s types, plan buckets, the OOM exit code).
//! - [`worker`]: `modeld worker`, one model version with tract behind a Unix socket.
//! - [`repo`]: the model repository on disk: versions, `latest`, each version's `model.toml`.
//! - [`tensor`]: the tensor type all of them share.
//! - [`trim`]: returning freed memory to the system, in every process.
//! - [`report`]: `modeld report`, a rollout's evidence as the deployment protocol's package.
//! - [`yaml`]: JSON values printed as block YAML (manifests, the report's monitoring files).
//!
//! Dependencies point one way, from the edges in: `config` depends on nothing of ours;
//! the worker only on `wire` (and the leaf utilities `accept` and `trim`); the front names
//! the router's re-exports, never its modules; `health` never imports `rollout`, which
//! calls up through a trait object (`ReloadObserver`). `tests/it/architecture.rs` checks
//! these on the source.
//!
//! The request path: `front` parses the body into tensors checked against the model's
//! signature → `router` picks the pool (stable, or a candidate by weight, or a pinned
//! version) and the least-busy worker in it → the request crosses the worker's socket as
//! one `wire` frame → the `worker` runs the tract plan for its shapes → the reply frame
//! returns and `front` encodes it. A worker dying mid-request has it retried once on
//! another worker of the same version.
//!
//! The control path: `daemon` starts a pool per model through the `supervisor`, which
//! keeps each worker running, fills the pool's slots as workers report ready, restarts
//! crashed workers with backoff and fails a version that cannot load (or crash-loops
//! before getting ready). A
//! rollout (`rollout`) starts the candidate's pool, refuses it if its signature breaks the
//! live version's clients, lets it answer a mirrored copy of live traffic (shadow) and
//! then shifts real traffic to it by the strategy's steps, each judged by the health gate.

pub mod accept;
pub mod admin;
pub mod alerts;
pub mod config;
pub mod console;
pub mod daemon;
pub mod front;
pub mod gpu;
pub mod health;
#[cfg(feature = "k8s")]
pub mod k8s;
pub mod logging;
pub mod metrics;
pub mod promql;
pub mod repo;
pub mod report;
pub mod rollout;
pub mod router;
pub mod scale;
pub mod supervisor;
pub mod tensor;
pub mod trim;
pub mod window;

pub mod wire;
#[cfg(feature = "worker")]
pub mod worker;
pub mod yaml;
