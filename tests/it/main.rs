//! Integration tests: each runs the real `modeld` binary (see `util::TestDaemon`) and
//! talks to it over HTTP and signals, as an operator or client would.

mod activation;
mod admin;
mod answers;
mod architecture;
mod auth;
mod autoscale;
mod bad_input;
mod batching;
mod binary;
mod chaos;
mod config_check;
mod engines;
mod gpu;
mod hangs;
mod healing;
mod health;
mod k8s;
mod load;
mod logs;
mod onnx;
mod privilege;
mod protocol_types;
mod report;
mod rollouts;
mod safety;
mod serving;
mod shutdown;
mod tfserving;
mod ui;
mod upgrade;
mod util;
mod workers;
