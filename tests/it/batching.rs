//! Dynamic batching: concurrent requests merge into batches along the first dimension,
//! each answered with exactly its own rows; shapes that differ are not merged; a bad
//! request fails alone; a model without an open batch dimension is never batched; plans
//! are built per bucket, ahead for the configured sizes.
//!
//! Each merging test runs both ways a worker batches: with one inference thread (one
//! thread reads, batches, runs and answers) and with two (a batching task feeding
//! inference threads).

use crate::onnx::{self, family};
use crate::util::{ModelFiles, Setup, TestDaemon, infer_body};
use serde_json::{Value, json};
use std::time::Duration;

fn metric(daemon: &TestDaemon, prefix: &str) -> f64 {
    let text = daemon.get("/metrics").body;
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Sends `bodies` at once from as many threads; returns the answers in order.
fn concurrently(daemon: &TestDaemon, path: &str, bodies: Vec<String>) -> Vec<crate::util::Answer> {
    let threads: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let (client, path) = (daemon.client(), path.to_string());
            std::thread::spawn(move || client.post(&path, &body))
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// Inference threads per worker: one thread serving everything, and a batching task
/// feeding two inference threads.
const THREADS: [u32; 2] = [1, 2];

fn batching(threads: u32) -> String {
    format!(
        "workers = 1\nthreads = {threads}\nbatching = {{ max_batch = 16, delay = \"50ms\", plan_sizes = [1, 2, 4, 8, 16] }}\n"
    )
}

#[test]
fn concurrent_requests_merge_and_each_gets_its_own_rows() {
    for threads in THREADS {
        requests_merge_and_each_gets_its_own_rows(threads);
    }
}

fn requests_merge_and_each_gets_its_own_rows(threads: u32) {
    let daemon =
        TestDaemon::ready(Setup::new().model_with(ModelFiles::new("m", 1, family::good(1.0)), &batching(threads)));
    // Each request: k rows whose values say which request and row they are.
    let bodies: Vec<String> = (1..=6)
        .map(|k| {
            let data: Vec<f32> = (0..k).flat_map(|r| [k as f32, r as f32, 0.0, 0.0]).collect();
            infer_body("x", &[k, 4], &data)
        })
        .collect();
    let answers = concurrently(&daemon, "/v2/models/m/infer", bodies);
    for (i, a) in answers.iter().enumerate() {
        let k = i + 1;
        assert_eq!(a.status, 200, "threads {threads}: {}", a.body);
        let out = &a.json()["outputs"][0];
        assert_eq!(out["shape"], json!([k, 1]));
        // y = sum(row) × 1 = k + r for row r.
        let want: Vec<f64> = (0..k).map(|r| (k + r) as f64).collect();
        let got: Vec<f64> = out["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(got, want, "threads {threads}: request {k} got someone else's rows");
    }
    // Six requests (21 rows) arriving within the delay: fewer runs than requests.
    let runs = metric(&daemon, r#"modeld_batch_size_count{model="m",version="1"}"#);
    let rows = metric(&daemon, r#"modeld_batch_size_sum{model="m",version="1"}"#);
    assert_eq!(rows, 21.0, "threads {threads}: every row counted once");
    assert!(runs < 6.0, "threads {threads}: {runs} runs for 6 requests: nothing was merged");
}

#[test]
fn plans_are_built_ahead_per_bucket_and_reused() {
    let daemon = TestDaemon::ready(Setup::new().model_with(ModelFiles::new("m", 1, family::good(1.0)), &batching(1)));
    let builds = || metric(&daemon, r#"modeld_plan_builds_total{model="m",version="1"}"#);
    assert_eq!(builds(), 5.0, "plans for 1, 2, 4, 8 and 16 rows at load");
    for rows in [3usize, 5, 7, 16, 11] {
        let a = daemon.post("/v2/models/m/infer", &infer_body("x", &[rows, 4], &vec![1.0; rows * 4]));
        assert_eq!(a.json()["outputs"][0]["shape"], json!([rows, 1]));
    }
    assert_eq!(builds(), 5.0, "batches of 3, 5, 7, 11 rows reuse the bucket plans");
    daemon.post("/v2/models/m/infer", &infer_body("x", &[20, 4], &vec![1.0; 80]));
    assert_eq!(builds(), 6.0, "20 rows need the 32-row bucket, built on first use");
}

#[test]
fn different_shapes_are_not_merged_and_bad_requests_fail_alone() {
    for threads in THREADS {
        shapes_and_failures_stay_apart(threads);
    }
}

fn shapes_and_failures_stay_apart(threads: u32) {
    let lines = format!("workers = 1\nthreads = {threads}\nbatching = {{ max_batch = 32, delay = \"50ms\" }}\n");
    let daemon = TestDaemon::ready(
        Setup::new()
            .model_with(ModelFiles::reference("lstm_clf"), &lines)
            .model_with(ModelFiles::new("bad", 1, family::erroring()), &lines),
    );
    let bodies: Vec<String> =
        [5usize, 9, 5, 13].iter().map(|t| infer_body("frames", &[1, *t, 40], &vec![0.1; t * 40])).collect();
    for a in concurrently(&daemon, "/v2/models/lstm_clf/infer", bodies) {
        assert_eq!(a.status, 200, "threads {threads}: {}", a.body);
        assert_eq!(a.json()["outputs"][0]["shape"], json!([1, 5]));
    }
    // Rows with a value of 4 or more fail on the erroring model; batched with good ones,
    // only they fail.
    let bodies: Vec<String> =
        [1.0f32, 6.0, 2.0, 7.0, 3.0].iter().map(|v| infer_body("x", &[1, 4], &[*v, 0.0, 0.0, 0.0])).collect();
    let answers = concurrently(&daemon, "/v2/models/bad/infer", bodies);
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [200, 500, 200, 500, 200], "threads {threads}: {answers:?}");
    assert_eq!(answers[2].json()["outputs"][0]["data"], json!([2.0]));
}

#[test]
fn a_model_without_an_open_batch_dimension_is_never_batched() {
    for threads in THREADS {
        fixed_first_dimension_runs_alone(threads);
    }
}

fn fixed_first_dimension_runs_alone(threads: u32) {
    let daemon = TestDaemon::ready(
        Setup::new().model_with(ModelFiles::new("fixed", 1, onnx::fixed_single_row()), &batching(threads)),
    );
    let bodies: Vec<String> = (0..6).map(|i| infer_body("x", &[1, 4], &[i as f32, 0.0, 0.0, 0.0])).collect();
    for (i, a) in concurrently(&daemon, "/v2/models/fixed/infer", bodies).iter().enumerate() {
        assert_eq!(a.status, 200, "threads {threads}: {}", a.body);
        assert_eq!(a.json()["outputs"][0]["data"][0], json!((2 * i) as f64));
    }
    let text = daemon.get("/metrics").body;
    let le1 =
        text.lines().find(|l| l.starts_with(r#"modeld_batch_size_bucket{model="fixed",version="1",le="1"}"#)).unwrap();
    assert!(le1.ends_with(" 6"), "threads {threads}: every run had one row: {le1}");
}

#[test]
fn a_lone_request_waits_at_most_the_delay() {
    let lines = "workers = 1\nbatching = { max_batch = 64, delay = \"200ms\" }\n";
    let daemon = TestDaemon::ready(Setup::new().model_with(ModelFiles::new("m", 1, family::good(1.0)), lines));
    let started = std::time::Instant::now();
    let a = daemon.post("/v2/models/m/infer", &infer_body("x", &[1, 4], &[1.0; 4]));
    let took = started.elapsed();
    assert_eq!(a.status, 200);
    assert!(took >= Duration::from_millis(190), "the batch did not wait for company ({took:?})");
    let queued: Value = json!(metric(&daemon, r#"modeld_queue_duration_seconds_sum{model="m",version="1"}"#));
    assert!(queued.as_f64().unwrap() >= 0.19, "queue time {queued}");
}
