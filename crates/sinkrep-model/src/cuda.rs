//! libtorch's CUDA half, opened at run time.
//!
//! sinkrep's binaries link libtorch_cpu and c10 only (build/link-torch.rs): mapping
//! libtorch_cuda.so and the CUDA libraries it needs costs every process ~0.15 s and ~390 MB
//! even where no GPU exists. [`load`] opens it (csrc/cuda_load.cpp) when the machine has an
//! NVIDIA driver; its registrations then run as they would at start-up. ATen looks the
//! CUDA hooks up once, on the first CUDA question, so [`load`] must come before anything
//! asks `tch::Cuda` or picks a device: `sinkrep`'s `main` calls it first, and
//! [`crate::parse_device`] calls it for a CUDA name.

// Two FFI calls into csrc/cuda_load.cpp, which catches every exception and reports by
// return code.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, CStr};
use std::path::Path;
use std::sync::OnceLock;

extern "C" {
    fn sinkrep_torch_cuda_present() -> c_int;
    fn sinkrep_load_torch_cuda(err: *mut c_char, errlen: usize) -> c_int;
    fn sinkrep_cuda_kernels_registered() -> c_int;
}

/// How libtorch_cuda came (or did not come) into this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CudaLoad {
    /// Linked at build time (`SINKREP_LINK_TORCH_CUDA=1`: the device bundle).
    Linked,
    /// Opened at run time by [`load`].
    Loaded,
    /// Not opened: this machine has no NVIDIA driver, so CUDA cannot be available.
    NoDriver,
    /// The driver is there but libtorch_cuda.so could not be opened (a CPU-only
    /// libtorch, or a library missing): the loader's message.
    Failed(String),
}

impl CudaLoad {
    /// One line for `sinkrep env` and for errors about an unavailable CUDA.
    pub fn describe(&self) -> String {
        match self {
            CudaLoad::Linked => "libtorch_cuda linked at build time".into(),
            CudaLoad::Loaded => "libtorch_cuda loaded at start-up (NVIDIA driver found)".into(),
            CudaLoad::NoDriver => {
                "libtorch_cuda not loaded: no NVIDIA driver on this machine".into()
            }
            CudaLoad::Failed(msg) => format!("libtorch_cuda could not be loaded: {msg}"),
        }
    }
}

static STATE: OnceLock<CudaLoad> = OnceLock::new();

/// Is an NVIDIA kernel driver present (what CUDA needs before anything else)?
fn driver_present() -> bool {
    Path::new("/proc/driver/nvidia/version").exists() || Path::new("/dev/nvidiactl").exists()
}

/// Opens libtorch_cuda.so when the machine has an NVIDIA driver (once per process; later
/// calls return the first outcome).
pub fn load() -> &'static CudaLoad {
    STATE.get_or_init(|| {
        if present() {
            CudaLoad::Linked
        } else if !driver_present() {
            CudaLoad::NoDriver
        } else {
            match open() {
                Ok(()) => CudaLoad::Loaded,
                Err(msg) => CudaLoad::Failed(msg),
            }
        }
    })
}

/// The outcome of [`load`], or `None` when it has not run in this process.
pub fn state() -> Option<&'static CudaLoad> {
    STATE.get()
}

/// Is libtorch_cuda.so in the process?
pub fn present() -> bool {
    // SAFETY: no arguments; the C function only asks the dynamic loader.
    unsafe { sinkrep_torch_cuda_present() == 1 }
}

/// Opens libtorch_cuda.so whatever the driver: for tests on machines without a GPU, which
/// check the registrations without being able to use them.
#[doc(hidden)]
pub fn open() -> Result<(), String> {
    let mut err = [0 as c_char; 512];
    // SAFETY: `err` is a writable buffer of the length passed; the C side NUL-terminates it.
    let rc = unsafe { sinkrep_load_torch_cuda(err.as_mut_ptr(), err.len()) };
    if rc == 0 {
        Ok(())
    } else {
        // SAFETY: NUL-terminated by the C side.
        Err(unsafe { CStr::from_ptr(err.as_ptr()) }
            .to_string_lossy()
            .into_owned())
    }
}

/// Does the dispatcher hold libtorch_cuda's kernels (aten::mm for CUDA)? `None` if it
/// could not be asked.
pub fn kernels_registered() -> Option<bool> {
    // SAFETY: no arguments; the C function catches every exception.
    match unsafe { sinkrep_cuda_kernels_registered() } {
        1 => Some(true),
        0 => Some(false),
        _ => None,
    }
}
