//! A model version's model.toml: `modeld::repo::Manifest::read(path)` on the input
//! written to a temporary file, then each example's tensor. Never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modeld::repo::Manifest;
use modeld::tensor::DType;
use std::path::PathBuf;
use std::sync::OnceLock;

fn path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("modeld-fuzz-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join("model.toml")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    std::fs::write(path(), text).expect("write the manifest");
    match Manifest::read(path()) {
        Ok(manifest) => {
            let _ = format!("{manifest:?}");
            let warmup = manifest.warmup.iter().flat_map(|w| w.inputs.values());
            let golden = manifest.golden.iter().flat_map(|g| g.inputs.values().chain(g.outputs.values()));
            for example in warmup.chain(golden) {
                for dtype in [DType::F32, DType::I64, DType::Bytes] {
                    if let Ok(t) = example.to_tensor("x", dtype) {
                        assert!(t.check().is_ok(), "{t:?}");
                    }
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
