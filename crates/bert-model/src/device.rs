//! Device choice: CUDA when present, CPU otherwise, with a one-line notice.

use std::str::FromStr;

use tch::Device;

use crate::error::BertError;

/// `--device cuda|cpu|auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    #[default]
    Auto,
    Cpu,
    Cuda,
}

impl FromStr for DeviceChoice {
    type Err = BertError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda),
            other => Err(BertError::Input(format!(
                "unknown device `{other}`; use cuda, cpu or auto"
            ))),
        }
    }
}

/// With `--as-needed` linking, libtorch_cuda.so is dropped from the binary and CUDA
/// then looks absent; loading it by hand registers the CUDA backend when it exists.
/// Without a GPU driver CUDA cannot be available, and loading the backend anyway costs
/// ~340 MB of resident memory (libtorch_cuda and cuBLASLt run their static
/// initialisers), so the driver is looked up first, the way the CUDA runtime does.
fn load_cuda_backend() {
    let backends: [(&std::ffi::CStr, &std::ffi::CStr); 2] = [
        (c"libcuda.so.1", c"libtorch_cuda.so"),
        (c"libamdhip64.so", c"libtorch_hip.so"),
    ];
    for (driver, backend) in backends {
        // SAFETY: dlopen with valid C strings; a null handle just means "not there".
        // Handles are never closed: the backend stays registered for the process.
        let loaded = unsafe {
            !libc::dlopen(driver.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL).is_null()
                && !libc::dlopen(backend.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL).is_null()
        };
        if loaded {
            return;
        }
    }
}

/// Resolves a choice to a device and a notice line for the user.
pub fn select_device(choice: DeviceChoice) -> Result<(Device, String), BertError> {
    if choice != DeviceChoice::Cpu {
        load_cuda_backend();
    }
    let cuda = tch::Cuda::is_available();
    match (choice, cuda) {
        (DeviceChoice::Cpu, _) => Ok((Device::Cpu, "device: cpu (as asked)".into())),
        (_, true) => Ok((
            Device::Cuda(0),
            format!(
                "device: cuda:0 ({} GPU(s) visible)",
                tch::Cuda::device_count()
            ),
        )),
        (DeviceChoice::Auto, false) => Ok((
            Device::Cpu,
            "device: cpu (no CUDA device found; training will be slow)".into(),
        )),
        (DeviceChoice::Cuda, false) => Err(BertError::Input(
            "--device cuda asked, but no CUDA device is visible; use --device cpu or auto".into(),
        )),
    }
}

/// Whether this CPU has bfloat16 arithmetic in hardware (AMX-BF16 or AVX512-BF16),
/// where oneDNN runs bf16 matmuls faster than fp32; elsewhere bf16 is emulated.
pub fn cpu_has_bf16() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| {
        info.lines()
            .filter(|l| l.starts_with("flags"))
            .take(1)
            .any(|l| {
                l.split_whitespace()
                    .any(|f| f == "amx_bf16" || f == "avx512_bf16")
            })
    })
}

/// Physical cores (distinct `physical id`/`core id` pairs in /proc/cpuinfo), the
/// intra-op thread count PyTorch recommends: SMT siblings share the FMA units that
/// GEMMs saturate, so a second thread per core only adds synchronisation.
pub fn physical_cores() -> usize {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let mut cores = std::collections::BTreeSet::new();
    let mut package = "";
    for line in info.lines() {
        let value = || line.split_once(':').map_or("", |(_, v)| v.trim());
        if line.starts_with("physical id") {
            package = value();
        } else if line.starts_with("core id") {
            cores.insert((package, value()));
        }
    }
    if cores.is_empty() {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        cores.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(library: &str) -> bool {
        std::fs::read_to_string("/proc/self/maps").is_ok_and(|maps| maps.contains(library))
    }

    /// Without a GPU driver the CUDA backend stays unloaded (it would cost ~340 MB of
    /// resident memory for nothing).
    #[test]
    fn cuda_backend_is_loaded_only_where_a_driver_is() {
        let (device, _) = select_device(DeviceChoice::Auto).unwrap();
        // SAFETY: dlopen with a valid C string, as load_cuda_backend does.
        let driver = unsafe {
            !libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL).is_null()
        };
        if driver {
            eprintln!("a CUDA driver is installed here: nothing to check");
        } else {
            assert_eq!(device, Device::Cpu);
            assert!(
                !mapped("libtorch_cuda.so") && !mapped("libcublasLt"),
                "CUDA libraries mapped on a machine without a driver"
            );
        }
    }
}
