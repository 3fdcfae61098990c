//! Backends and devices. CPU training runs on burn's candle backend (measured fastest here,
//! see bench/train/RESULTS.md) or on ndarray; CUDA needs the `cuda` cargo feature.

use std::str::FromStr;

use crate::TrainError;

/// burn's candle CPU backend (f32 floats, i64 ints).
pub type CandleCpu = burn::backend::Candle<f32, i64>;
/// burn's ndarray CPU backend.
pub type NdArrayCpu = burn::backend::NdArray<f32>;
/// burn's CUDA backend.
#[cfg(feature = "cuda")]
pub type CudaGpu = burn::backend::Cuda<f32, i32>;

/// The device a command runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// CPU through burn's candle backend.
    Cpu,
    /// CPU through burn's ndarray backend.
    CpuNdarray,
    /// CUDA GPU `n` (needs the `cuda` feature).
    Cuda(usize),
}

impl FromStr for DeviceKind {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self, TrainError> {
        match s {
            "cpu" | "cpu-candle" => Ok(DeviceKind::Cpu),
            "cpu-ndarray" | "ndarray" => Ok(DeviceKind::CpuNdarray),
            "cuda" => Ok(DeviceKind::Cuda(0)),
            s if s.starts_with("cuda:") => s[5..]
                .parse()
                .map(DeviceKind::Cuda)
                .map_err(|_| TrainError::Config(format!("bad device `{s}`"))),
            _ => Err(TrainError::Config(format!(
                "unknown device `{s}` (cpu, cpu-ndarray, cuda, cuda:N)"
            ))),
        }
    }
}

impl DeviceKind {
    /// Whether this build can run on the device.
    pub fn available(self) -> Result<(), TrainError> {
        match self {
            DeviceKind::Cuda(_) if !cfg!(feature = "cuda") => Err(TrainError::Config(
                "this shapecast-train was built without the `cuda` feature; rebuild with \
                 `--features cuda` (needs CUDARC_CUDA_VERSION, see .cargo/config.toml)"
                    .into(),
            )),
            _ => Ok(()),
        }
    }
}

/// Runs `$body` with `B` bound to the autodiff backend of `$kind` and `dev` to its device.
#[macro_export]
macro_rules! with_autodiff_backend {
    ($kind:expr, |$dev:ident : $b:ident| $body:expr) => {{
        match $kind {
            $crate::backend::DeviceKind::Cpu => {
                type $b = burn::backend::Autodiff<$crate::backend::CandleCpu>;
                let $dev = burn::backend::candle::CandleDevice::Cpu;
                $body
            }
            $crate::backend::DeviceKind::CpuNdarray => {
                type $b = burn::backend::Autodiff<$crate::backend::NdArrayCpu>;
                let $dev = burn::backend::ndarray::NdArrayDevice::Cpu;
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::backend::DeviceKind::Cuda(n) => {
                type $b = burn::backend::Autodiff<$crate::backend::CudaGpu>;
                let $dev = burn::backend::cuda::CudaDevice::new(n);
                $body
            }
            #[cfg(not(feature = "cuda"))]
            $crate::backend::DeviceKind::Cuda(_) => Err($crate::TrainError::Config(
                "built without the `cuda` feature".into(),
            ))?,
        }
    }};
}

/// Holds burn's backend random generator for one training run; see [`seed_exclusive`].
#[must_use = "the run is only reproducible while the guard lives"]
#[derive(Debug)]
pub struct RngGuard(#[allow(dead_code)] std::sync::MutexGuard<'static, ()>);

/// Seeds the backend's random generator and keeps it for the caller until the guard drops.
///
/// burn's backends keep one random generator per process, so two runs training at once in one
/// process (tests, or a library user's threads) would interleave their draws and neither would
/// be reproducible from its seed. Every training entry point takes this guard first: runs in
/// one process go one after another, and a seed gives the same weights every time.
pub fn seed_exclusive<B: burn::tensor::backend::Backend>(
    device: &B::Device,
    seed: u64,
) -> RngGuard {
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // a run that panicked leaves nothing behind that the next one depends on
    let guard = RNG.lock().unwrap_or_else(|p| p.into_inner());
    B::seed(device, seed);
    RngGuard(guard)
}
