//! libtorch_cuda opened after start-up (sinkrep_model::cuda): its kernels register with
//! the dispatcher, and CPU work goes on as before. One test in its own process: loading is
//! process-global.

use sinkrep_model::cuda;
use tch::{Device, Kind, Tensor};

#[test]
fn late_loaded_libtorch_cuda_registers_its_kernels() {
    let cpu_product = || {
        let a = Tensor::arange(12, (Kind::Float, Device::Cpu)).reshape([3, 4]);
        a.matmul(&a.transpose(0, 1))
    };
    let before = cpu_product();
    if cuda::present() {
        // Built with SINKREP_LINK_TORCH_CUDA=1 (the device bundle): linked, so registered.
        assert_eq!(cuda::kernels_registered(), Some(true));
    } else {
        // The default build links libtorch_cpu only: no CUDA kernels until it is opened.
        assert_eq!(cuda::kernels_registered(), Some(false));
        cuda::open().expect("libtorch_cuda.so opens through the binary's RUNPATH");
        assert!(cuda::present());
        assert_eq!(cuda::kernels_registered(), Some(true));
    }
    // Asking about CUDA after the late load is safe, and says yes only with a driver.
    let driver = std::path::Path::new("/proc/driver/nvidia/version").exists()
        || std::path::Path::new("/dev/nvidiactl").exists();
    if !driver {
        assert!(!tch::Cuda::is_available());
        assert_eq!(tch::Cuda::device_count(), 0);
    }
    let after = cpu_product();
    assert_eq!(before, after);
    assert_eq!(
        after.double_value(&[2, 2]),
        8.0 * 8.0 + 9.0 * 9.0 + 10.0 * 10.0 + 11.0 * 11.0
    );
    // `load` reports the same state from now on.
    assert!(matches!(
        cuda::load(),
        cuda::CudaLoad::Linked | cuda::CudaLoad::Loaded | cuda::CudaLoad::NoDriver
    ));
}
