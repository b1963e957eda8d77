//! `modeld config check`: the config's problems, each with its key and line, and what
//! the models it names will find on this host (ONNX Runtime, GPUs).

use super::config_failed;
use modeld::config::{self, Overrides};
use std::process::ExitCode;

pub fn check(path: &std::path::Path) -> ExitCode {
    match config::load_checked(path, &Overrides::default(), Some(&modeld::repo::check_version)) {
        Ok((config, report)) => {
            print!("{report}");
            println!("{}: ok ({} models)", path.display(), config.models.len());
            report_scaling(&config);
            report_onnxruntime(&config);
            report_gpus(&config);
            ExitCode::SUCCESS
        }
        Err(e) => config_failed(e),
    }
}

/// The autoscaling policy in force for each autoscaled model, and the budget they share.
fn report_scaling(config: &config::Config) {
    let scaled: Vec<&config::ModelConfig> = config.models.iter().filter(|m| m.workers.autoscaled()).collect();
    if scaled.is_empty() {
        return;
    }
    println!("budget: {}, shared by every model's workers", config.server.budget);
    for m in scaled {
        println!("autoscaling {}: {}", m.name, m.scale.summary(m.workers));
    }
}

/// What `config check` found of ONNX Runtime, when a model is on it or a library is set:
/// the file and version loaded, or why none could be.
fn report_onnxruntime(config: &config::Config) {
    let on_it: Vec<&str> =
        config.models.iter().filter(|m| m.engine == config::Engine::OnnxRuntime).map(|m| m.name.as_str()).collect();
    let library = config.server.onnxruntime_library.as_deref();
    if on_it.is_empty() && library.is_none() {
        return;
    }
    let models = match on_it.is_empty() {
        true => String::new(),
        false => format!(" for {}", on_it.join(", ")),
    };
    match modeld::worker::onnxruntime::runtime(library) {
        Ok(runtime) => println!("onnxruntime{models}: {} (version {})", runtime.path, runtime.version),
        Err(why) => println!("warning: onnxruntime{models}: {why}"),
    }
}

/// What `config check` found of the GPUs, when a model asks for one: NVML's driver and
/// GPUs, or why there are none (a warning: those versions will fail, or run on the CPU
/// under `cuda-or-cpu`).
fn report_gpus(config: &config::Config) {
    let on_gpu: Vec<&str> = config.models.iter().filter(|m| m.device.is_gpu()).map(|m| m.name.as_str()).collect();
    if on_gpu.is_empty() {
        return;
    }
    let models = on_gpu.join(", ");
    let telemetry = modeld::gpu::Telemetry::probe();
    match telemetry.inventory() {
        Ok(found) => {
            let gpus: Vec<String> = found.gpus.iter().map(|g| format!("{} {}", g.index, g.name)).collect();
            println!("gpus for {models}: driver {}, {}", found.driver, gpus.join(", "));
            for model in &config.models {
                if let config::Device::Cuda { gpus, .. } = &model.device
                    && let Some(missing) = gpus.iter().find(|g| **g as usize >= found.gpus.len())
                {
                    println!(
                        "warning: model {}: device names GPU {missing}, but this host has {} (0 to {}): its workers there will fail to load",
                        model.name,
                        found.gpus.len(),
                        found.gpus.len() - 1
                    );
                }
            }
        }
        Err(why) => println!("warning: gpus for {models}: {why}"),
    }
}
