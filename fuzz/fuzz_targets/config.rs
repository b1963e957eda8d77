//! The daemon's config file: `modeld::config::load(path, &Overrides::default())` on the
//! input written to a temporary file, its report printed as `config check` prints it.
//! Never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

fn path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("modeld-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join("modeld.toml")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    std::fs::write(path(), text).expect("write the config");
    match modeld::config::load(path(), &modeld::config::Overrides::default()) {
        Ok((config, report)) => {
            let _ = format!("{config:?} {report}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
