//! The `/predict` and `/batch_predict` bodies: `modeld::front::predict::parse_body(body,
//! batch)` for both, then the model's name and the batch tensor for a few single-input
//! signatures. Never panics; a batch tensor has one row per example and consistent bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modeld::front::predict;
use modeld::tensor::{DType, TensorSpec};
use modeld::wire::ModelInfo;

fn info(dtype: DType, shape: &[Option<usize>]) -> ModelInfo {
    ModelInfo {
        load_mode: "strict".into(),
        plans_built: 0,
        device: "cpu".into(),
        inputs: vec![TensorSpec { name: "x".into(), dtype, shape: shape.to_vec() }],
        outputs: vec![TensorSpec { name: "y".into(), dtype: DType::F32, shape: vec![None, Some(3)] }],
        labels: None,
    }
}

fuzz_target!(|data: &[u8]| {
    let infos = [
        info(DType::F32, &[None, Some(4)]),
        info(DType::F64, &[None, Some(2), Some(2)]),
        info(DType::I64, &[None, None]),
        info(DType::Bool, &[None, Some(2)]),
        info(DType::U8, &[None]),
    ];
    let models = ["iris".to_string()];
    for batch in [false, true] {
        let Ok(examples) = predict::parse_body(data, batch) else { continue };
        assert!(!examples.is_empty());
        let _ = predict::model_name(&examples, &models);
        let _ = predict::model_name(&examples, &[]);
        for info in &infos {
            if let Ok(t) = predict::batch_tensor(&examples, info) {
                assert_eq!(t.rows(), examples.len(), "{t:?}");
                assert!(t.check().is_ok(), "{t:?}");
                assert!(info.inputs[0].admits(&t).is_ok(), "{t:?}");
            }
        }
    }
});
