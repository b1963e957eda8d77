//! GPU telemetry from NVML, the NVIDIA driver's management library, loaded at run time.
//!
//! On a host without `libnvidia-ml.so.1` (every CPU host) telemetry is simply absent:
//! [`Telemetry::start`] logs why once, `/health` has no GPU checks for CPU versions and
//! `/metrics` no `modeld_gpu_*` series. Where NVML loads, one thread reads every GPU once a
//! second — memory used and total, utilization, temperature, power, uncorrected ECC errors,
//! and the GPU memory of each process (so of each worker) — and waits in between for
//! critical Xid events (the driver's reports of GPU faults).
//!
//! What `/health` judges from it ([`crate::health::check::gpu_memory`],
//! [`crate::health::check::gpu_errors`]) comes from [`Readings`], read whole at the moment
//! of asking.

use arc_swap::ArcSwap;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often every GPU is read.
pub const EVERY: Duration = Duration::from_secs(1);
/// Error observations kept (each an Xid event, or a rise of the ECC count): enough for any
/// health window, bounded whatever a failing GPU reports.
const ERRORS_KEPT: usize = 1024;

/// One GPU as NVML described it at start.
#[derive(Debug, Clone, Serialize)]
pub struct GpuInfo {
    pub index: u32,
    pub name: String,
    pub uuid: String,
}

/// One GPU as last read. A value the GPU does not report (no ECC on consumer cards, no
/// power reading under some hypervisors) is `None`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GpuReading {
    pub index: u32,
    pub name: String,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    /// Share of the last sample period a kernel ran, 0 to 1.
    pub utilization: Option<f64>,
    pub temperature_celsius: Option<u32>,
    pub power_watts: Option<f64>,
    /// Uncorrected ECC errors since the driver loaded.
    pub ecc_uncorrected: Option<u64>,
    /// Critical Xid events seen since modeld started (application ones too), and the last
    /// one's code.
    pub xid_errors: u64,
    pub last_xid: Option<u64>,
}

/// A process's use of one GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessGpu {
    pub gpu: u32,
    pub memory_bytes: u64,
}

/// Everything read at one moment.
#[derive(Debug, Clone, Default)]
pub struct Readings {
    pub gpus: Vec<GpuReading>,
    /// By pid: the GPU memory of every process computing on a GPU.
    pub processes: HashMap<u32, ProcessGpu>,
    /// When each error was seen, and on which GPU, oldest first.
    errors: VecDeque<(Instant, u32)>,
}

impl Readings {
    /// Errors (Xid events, new uncorrected ECC errors) seen on any of `gpus` within `window`.
    pub fn errors_within(&self, gpus: &BTreeSet<u32>, window: Duration) -> usize {
        let since = Instant::now().checked_sub(window);
        self.errors.iter().filter(|(at, gpu)| gpus.contains(gpu) && since.is_none_or(|s| *at >= s)).count()
    }

    pub fn gpu(&self, index: u32) -> Option<&GpuReading> {
        self.gpus.iter().find(|g| g.index == index)
    }

    /// Records `count` errors on `gpu` now.
    pub(crate) fn record_errors(&mut self, gpu: u32, count: u64) {
        let now = Instant::now();
        for _ in 0..count.min(ERRORS_KEPT as u64) {
            if self.errors.len() == ERRORS_KEPT {
                self.errors.pop_front();
            }
            self.errors.push_back((now, gpu));
        }
    }
}

/// The host's GPUs, or why there is no telemetry.
pub struct Telemetry {
    state: Result<Inventory, String>,
    readings: ArcSwap<Readings>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    pub driver: String,
    pub gpus: Vec<GpuInfo>,
}

impl Telemetry {
    /// Loads NVML and starts reading every GPU; absent (with the reason) where it does not
    /// load or sees no GPU.
    pub fn start() -> Arc<Telemetry> {
        let (nvml, inventory) = match open() {
            Ok(opened) => opened,
            Err(reason) => {
                tracing::info!("GPU telemetry off: {reason}");
                return Arc::new(Telemetry::absent(reason));
            }
        };
        tracing::info!(driver = %inventory.driver, gpus = inventory.gpus.len(), "GPU telemetry on");
        let telemetry =
            Arc::new(Telemetry { state: Ok(inventory), readings: ArcSwap::from_pointee(Readings::default()) });
        let reader = telemetry.clone();
        let spawned =
            std::thread::Builder::new().name("gpu-telemetry".into()).spawn(move || reader.read_forever(&nvml));
        if let Err(e) = spawned {
            tracing::error!("GPU telemetry thread could not start: {e}");
        }
        telemetry
    }

    /// The GPUs NVML sees now, without starting to read them (`modeld config check`).
    pub fn probe() -> Telemetry {
        Telemetry { state: open().map(|(_, found)| found), readings: ArcSwap::from_pointee(Readings::default()) }
    }

    /// No telemetry, for `reason`.
    pub fn absent(reason: impl Into<String>) -> Telemetry {
        Telemetry { state: Err(reason.into()), readings: ArcSwap::from_pointee(Readings::default()) }
    }

    /// Telemetry that always reads `readings`, for tests of what reads it.
    #[cfg(test)]
    pub(crate) fn fixed(inventory: Inventory, readings: Readings) -> Telemetry {
        Telemetry { state: Ok(inventory), readings: ArcSwap::from_pointee(readings) }
    }

    /// The GPUs NVML found, or why there is no telemetry.
    pub fn inventory(&self) -> Result<&Inventory, &str> {
        self.state.as_ref().map_err(String::as_str)
    }

    /// How many GPUs the host has, when NVML could tell.
    pub fn gpu_count(&self) -> Option<u32> {
        self.inventory().ok().map(|i| i.gpus.len() as u32)
    }

    /// The last readings (empty before the first, and always without telemetry).
    pub fn readings(&self) -> Arc<Readings> {
        self.readings.load_full()
    }

    fn read_forever(&self, nvml: &nvml_wrapper::Nvml) {
        let count = self.gpu_count().unwrap_or(0);
        let xids = xid_events(nvml, count);
        let mut current = Readings::default();
        loop {
            read_all(nvml, count, &mut current);
            self.readings.store(Arc::new(current.clone()));
            match &xids {
                // Woken early by an Xid event; read again right after recording it.
                Some(set) => match set.wait(EVERY.as_millis() as u32) {
                    Ok(event) => record_xid(&mut current, &event),
                    Err(nvml_wrapper::error::NvmlError::Timeout) => {}
                    Err(e) => {
                        tracing::debug!("waiting for Xid events failed: {e}");
                        std::thread::sleep(EVERY);
                    }
                },
                None => std::thread::sleep(EVERY),
            }
        }
    }
}

/// NVML and the GPUs it sees, or why there is neither.
fn open() -> Result<(nvml_wrapper::Nvml, Inventory), String> {
    let nvml =
        nvml_wrapper::Nvml::init().map_err(|e| format!("NVML not available ({e}): no NVIDIA driver on this host"))?;
    let found = inventory(&nvml)?;
    Ok((nvml, found))
}

fn inventory(nvml: &nvml_wrapper::Nvml) -> Result<Inventory, String> {
    let driver = nvml.sys_driver_version().unwrap_or_else(|e| format!("unknown ({e})"));
    let count = nvml.device_count().map_err(|e| format!("NVML could not count GPUs: {e}"))?;
    if count == 0 {
        return Err(format!("NVML (driver {driver}) sees no GPU"));
    }
    let gpus = (0..count)
        .map(|index| {
            let device = nvml.device_by_index(index).map_err(|e| format!("GPU {index}: {e}"))?;
            Ok(GpuInfo {
                index,
                name: device.name().unwrap_or_else(|_| "unknown".into()),
                uuid: device.uuid().unwrap_or_default(),
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(Inventory { driver, gpus })
}

/// Reads every GPU into `current`, keeping its error log and Xid counts.
fn read_all(nvml: &nvml_wrapper::Nvml, count: u32, current: &mut Readings) {
    use nvml_wrapper::enum_wrappers::device::{EccCounter, MemoryError, TemperatureSensor};
    current.processes.clear();
    for index in 0..count {
        let Ok(device) = nvml.device_by_index(index) else { continue };
        let memory = device.memory_info().ok();
        let ecc = device.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile).ok();
        let previous = current.gpu(index).cloned().unwrap_or_default();
        if let (Some(before), Some(now)) = (previous.ecc_uncorrected, ecc)
            && now > before
        {
            current.record_errors(index, now - before);
        }
        let reading = GpuReading {
            index,
            name: device.name().unwrap_or(previous.name),
            memory_used_bytes: memory.as_ref().map(|m| m.used),
            memory_total_bytes: memory.as_ref().map(|m| m.total),
            utilization: device.utilization_rates().ok().map(|u| f64::from(u.gpu) / 100.0),
            temperature_celsius: device.temperature(TemperatureSensor::Gpu).ok(),
            power_watts: device.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
            ecc_uncorrected: ecc,
            xid_errors: previous.xid_errors,
            last_xid: previous.last_xid,
        };
        match current.gpus.iter_mut().find(|g| g.index == index) {
            Some(slot) => *slot = reading,
            None => current.gpus.push(reading),
        }
        for process in device.running_compute_processes().unwrap_or_default() {
            if let nvml_wrapper::enums::device::UsedGpuMemory::Used(bytes) = process.used_gpu_memory {
                current.processes.insert(process.pid, ProcessGpu { gpu: index, memory_bytes: bytes });
            }
        }
    }
}

/// An event set waiting for critical Xid errors on every GPU, where the driver offers one.
fn xid_events(nvml: &nvml_wrapper::Nvml, count: u32) -> Option<nvml_wrapper::EventSet<'_>> {
    use nvml_wrapper::bitmasks::event::EventTypes;
    let mut set = nvml.create_event_set().ok()?;
    for index in 0..count {
        let device = nvml.device_by_index(index).ok()?;
        set = match device.register_events(EventTypes::CRITICAL_XID_ERROR, set) {
            Ok(set) => set,
            Err(e) => {
                tracing::info!("GPU {index}: no Xid events ({}); ECC counts still read", e.error);
                return None;
            }
        };
    }
    Some(set)
}

/// Xid codes that report an application's fault, not the GPU's (a bad memory access, a
/// killed or preempted context): the NVIDIA device plugin ignores them too. They are counted,
/// not held against a version.
const APPLICATION_XIDS: [u64; 6] = [13, 31, 43, 45, 68, 109];

fn record_xid(current: &mut Readings, event: &nvml_wrapper::struct_wrappers::event::EventData) {
    let Ok(index) = event.device.index() else { return };
    let code = event.event_data.as_ref().map(|xid| match xid {
        nvml_wrapper::enums::event::XidError::Value(v) => *v,
        nvml_wrapper::enums::event::XidError::Unknown => 0,
    });
    count_xid(current, index, code);
}

/// Counts an Xid of GPU `index`; only one that reports the GPU's fault is an error.
fn count_xid(current: &mut Readings, index: u32, code: Option<u64>) {
    if let Some(gpu) = current.gpus.iter_mut().find(|g| g.index == index) {
        gpu.xid_errors += 1;
        gpu.last_xid = code;
    }
    match code.is_some_and(|c| APPLICATION_XIDS.contains(&c)) {
        true => tracing::warn!(gpu = index, xid = ?code, "GPU reported an application Xid (a process's fault)"),
        false => {
            tracing::error!(gpu = index, xid = ?code, "GPU reported a critical Xid error");
            current.record_errors(index, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_count_per_gpu_within_the_window() {
        let mut readings = Readings::default();
        readings.record_errors(0, 2);
        readings.record_errors(1, 1);
        let both: BTreeSet<u32> = [0, 1].into();
        assert_eq!(readings.errors_within(&both, Duration::from_secs(60)), 3);
        assert_eq!(readings.errors_within(&[1].into(), Duration::from_secs(60)), 1);
        assert_eq!(readings.errors_within(&[2].into(), Duration::from_secs(60)), 0);
        // An error older than the window no longer counts.
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(readings.errors_within(&both, Duration::from_millis(10)), 0);
    }

    #[test]
    fn xids_are_counted_and_only_the_gpus_faults_are_errors() {
        let mut readings = Readings { gpus: vec![GpuReading { index: 0, ..Default::default() }], ..Default::default() };
        count_xid(&mut readings, 0, Some(43));
        count_xid(&mut readings, 0, Some(79));
        count_xid(&mut readings, 0, None);
        assert_eq!((readings.gpus[0].xid_errors, readings.gpus[0].last_xid), (3, None));
        // 43 (a context stopped) is the application's; 79 (fell off the bus) and an
        // unknown code are the GPU's.
        assert_eq!(readings.errors_within(&[0].into(), Duration::from_secs(60)), 2);
    }

    #[test]
    fn the_error_log_is_bounded() {
        let mut readings = Readings::default();
        readings.record_errors(0, u64::MAX);
        readings.record_errors(0, 5);
        assert_eq!(readings.errors.len(), ERRORS_KEPT);
    }

    #[test]
    fn absent_telemetry_has_no_gpus_and_says_why() {
        let telemetry = Telemetry::absent("NVML not available");
        assert_eq!(telemetry.gpu_count(), None);
        assert_eq!(telemetry.inventory().unwrap_err(), "NVML not available");
        assert!(telemetry.readings().gpus.is_empty());
    }
}
