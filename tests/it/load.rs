//! A bounded load from loopback clients, kept running while a rollout happens, with every
//! answer recorded: status, the version that took it, when, and how long it took.

use crate::util::TestDaemon;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// No load runs longer than this, whatever the test does.
const MAX_RUN: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct Shot {
    /// Seconds since the load started, at the answer.
    pub at: f64,
    pub status: u16,
    pub version: Option<u64>,
    pub latency: Duration,
    pub body: String,
    /// Not the right answer: a failure, or a 200 whose outputs the pattern's check refused.
    pub wrong: bool,
    /// Rows the request carried.
    pub rows: usize,
}

pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<Shot>>>,
}

/// What a load sends: one row per request (`[k % 8, 1, 0.5, 0.25]`, or with `varied`
/// the row [`varied_row`] draws for `k`), and about one request in `big_every` (picked by
/// a hash of `k`, so no period of the traffic lines up with anything the daemon does in
/// turn) a batch of 64 such rows.
#[derive(Clone, Copy)]
pub struct Pattern {
    pub clients: usize,
    /// Rows drawn from a distribution instead of a cycle of eight (what drift needs).
    pub varied: bool,
    /// Rows from elsewhere (a real data set): request `k`'s row, for an input named
    /// `input`, instead of the four-wide rows above.
    pub rows: Option<fn(u64) -> Vec<f32>>,
    pub input: &'static str,
    pub big_every: Option<u64>,
    /// Sent with an `x-user` header of `user-{k % users}` when set (sticky A/B routing).
    pub users: Option<u64>,
    /// Each client waits this long between requests (none: as fast as answers come).
    pub pace: Option<Duration>,
    /// Whether a 200's answer (its OIP JSON) is right for request `k` of `rows` rows.
    pub expect: Option<fn(k: u64, rows: usize, answer: &serde_json::Value) -> bool>,
}

impl Default for Pattern {
    fn default() -> Pattern {
        Pattern {
            clients: 4,
            varied: false,
            rows: None,
            input: "x",
            big_every: None,
            users: None,
            pace: None,
            expect: None,
        }
    }
}

/// The first output's data of an OIP answer, as floats (null or strings read as NaN).
pub fn first_output(answer: &serde_json::Value) -> Vec<f64> {
    answer["outputs"][0]["data"]
        .as_array()
        .map_or(vec![], |d| d.iter().map(|v| v.as_f64().unwrap_or(f64::NAN)).collect())
}

/// SplitMix64: a fixed hash, for picks that follow no period of the traffic.
pub fn mix(k: u64) -> u64 {
    let mut z = k.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Whether request `k` is one of the about one in `n` sent as a batch of 64 rows.
pub fn is_big(k: u64, n: u64) -> bool {
    mix(k).is_multiple_of(n)
}

/// Feature means and spreads of the varied rows: unlike each other, as real features
/// are, so that reading them in another order changes what a model sees.
const MEANS: [f32; 4] = [2.0, -1.0, 0.5, 0.0];
const SPREADS: [f32; 4] = [1.0, 0.5, 2.0, 1.0];

/// Request `k`'s row when the load is varied: each feature normal around its mean.
pub fn varied_row(k: u64) -> [f32; 4] {
    let uniform = |i: u64| (mix(k.wrapping_mul(8).wrapping_add(i)) >> 11) as f64 / (1u64 << 53) as f64;
    std::array::from_fn(|j| {
        let (a, b) = (uniform(2 * j as u64).max(1e-12), uniform(2 * j as u64 + 1));
        let z = (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos();
        MEANS[j] + SPREADS[j] * z as f32
    })
}

/// The row request `k` sends.
pub fn row(k: u64, varied: bool) -> [f32; 4] {
    match varied {
        true => varied_row(k),
        false => [(k % 8) as f32, 1.0, 0.5, 0.25],
    }
}

fn body(k: u64, rows: usize, pattern: &Pattern) -> String {
    let row = match pattern.rows {
        Some(row_of) => row_of(k),
        None => row(k, pattern.varied).to_vec(),
    };
    let width = row.len();
    let data: Vec<f32> = (0..rows).flat_map(|_| row.iter().copied()).collect();
    let input = serde_json::json!({"name": pattern.input, "shape": [rows, width], "datatype": "FP32", "data": data});
    serde_json::json!({ "inputs": [input] }).to_string()
}

impl Load {
    pub fn start(daemon: &TestDaemon, model: &str, pattern: Pattern) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let counter = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let path = format!("/v2/models/{model}/infer");
        let threads = (0..pattern.clients)
            .map(|_| {
                let (client, stop, counter, path) = (daemon.client(), stop.clone(), counter.clone(), path.clone());
                std::thread::spawn(move || {
                    let mut shots = Vec::new();
                    while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_RUN {
                        let k = counter.fetch_add(1, Ordering::Relaxed);
                        let rows = match pattern.big_every {
                            Some(n) if is_big(k, n) => 64,
                            _ => 1,
                        };
                        let sent = Instant::now();
                        let answer = match pattern.users {
                            Some(users) => client.post_with(
                                &path,
                                &body(k, rows, &pattern),
                                ("x-user", &format!("user-{}", k % users)),
                            ),
                            None => client.post(&path, &body(k, rows, &pattern)),
                        };
                        let latency = sent.elapsed();
                        if let Some(pace) = pattern.pace {
                            std::thread::sleep(pace.saturating_sub(latency));
                        }
                        let wrong = match (answer.status, pattern.expect) {
                            (200, Some(expect)) => {
                                serde_json::from_str(&answer.body).map_or(true, |json| !expect(k, rows, &json))
                            }
                            (status, _) => status != 200,
                        };
                        shots.push(Shot {
                            at: started.elapsed().as_secs_f64(),
                            status: answer.status,
                            version: answer.version,
                            latency,
                            body: if answer.status == 200 && !wrong { String::new() } else { answer.body },
                            wrong,
                            rows,
                        });
                    }
                    shots
                })
            })
            .collect();
        Load { stop, threads }
    }

    /// Stops the clients and returns every answer, in time order.
    pub fn stop(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let mut shots: Vec<Shot> = self.threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        shots.sort_by(|a, b| a.at.total_cmp(&b.at));
        Report { shots }
    }
}

pub struct Report {
    pub shots: Vec<Shot>,
}

impl Report {
    pub fn failed(&self) -> Vec<&Shot> {
        self.shots.iter().filter(|s| s.status != 200).collect()
    }

    /// Panics unless every failure was answered by `allowed` (a candidate's own errors).
    pub fn assert_failures_only_from(&self, allowed: Option<u64>) {
        let foreign: Vec<&Shot> =
            self.shots.iter().filter(|s| s.status != 200 && (allowed.is_none() || s.version != allowed)).collect();
        if let Some(first) = foreign.first() {
            panic!(
                "{} of {} requests failed outside version {allowed:?}; the first, at {:.3} s on version {:?}: {} {}",
                foreign.len(),
                self.shots.len(),
                first.at,
                first.version,
                first.status,
                first.body
            );
        }
    }

    /// Answers that were not right (failures included).
    pub fn wrong(&self) -> Vec<&Shot> {
        self.shots.iter().filter(|s| s.wrong).collect()
    }

    pub fn answered_by(&self, version: u64) -> Vec<&Shot> {
        self.shots.iter().filter(|s| s.version == Some(version)).collect()
    }

    /// Requests per second over the run.
    pub fn rate(&self) -> f64 {
        match self.shots.last() {
            Some(last) if last.at > 0.0 => self.shots.len() as f64 / last.at,
            _ => 0.0,
        }
    }
}
