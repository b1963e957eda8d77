//! Writes the versions `bench/gate_soak.py` deploys: the tests' softmax classifier
//! (`tests/it/onnx.rs`, `classes`) as a stable version, honest retrains of it and one
//! version of each fault kind the gate must stop, each with its model.toml.
//!
//!     cargo run --release --example gate_models -- DIR
//!
//! writes `DIR/<kind>.onnx` for every kind below, and `DIR/model.toml`.

#[allow(dead_code)]
#[path = "../tests/it/onnx.rs"]
mod onnx;

/// What the tests' `load` module gives the models: the hash their retrains draw from.
mod load {
    pub fn mix(k: u64) -> u64 {
        let mut z = k.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

use onnx::classes::{MANIFEST, Variant, model};

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: gate_models DIR"));
    std::fs::create_dir_all(&dir).expect("output directory");
    let mut kinds = vec![
        ("stable".to_string(), Variant::Good),
        ("no_softmax".into(), Variant::NoSoftmax),
        ("serving_skew".into(), Variant::Skewed { feature: 2, scale: 5.0 }),
        ("swapped_features".into(), Variant::Swapped { a: 0, b: 2 }),
        ("nan".into(), Variant::Nan),
        ("label_order".into(), Variant::LabelsSwapped),
        ("signature".into(), Variant::Wider),
    ];
    for seed in 1..=40 {
        kinds.push((format!("retrain_{seed}"), Variant::Retrained { percent: 3.0, seed }));
    }
    for (name, variant) in &kinds {
        std::fs::write(dir.join(format!("{name}.onnx")), model(*variant)).expect("model file");
    }
    std::fs::write(dir.join("model.toml"), MANIFEST).expect("model.toml");
    println!("wrote {} versions to {}", kinds.len(), dir.display());
}
