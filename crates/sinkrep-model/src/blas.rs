//! MKL's conditional numerical reproducibility: f32 matmuls whose bits do not depend on the
//! thread count.
//!
//! libtorch's f32 matmuls on the CPU are MKL sgemm. With more than one thread MKL splits
//! the inner dimension of products with few rows and adds the partial sums in an order
//! that depends on the thread count (measured with libtorch 2.13 on 2 cores: M = 57..190
//! rows at K = 1536, M = 8..15 at K = 576). Analyses of short inputs, the f32 prefix pass
//! of a bf16 analysis, and the smoke replications (84 of 2929 metrics, last digits) then
//! differed between 1 and 2 threads. MKL's strict CNR mode (`MKL_CBWR=AUTO,STRICT`) keeps
//! the code path chosen for the CPU (`AUTO`) and makes results independent of the thread
//! count (`STRICT`): measured, 0 of 2929 smoke metrics differ between 1 and 2 threads, none
//! differs from the default mode at 1 thread, and run times are the same.

/// The mode `reproducible_blas` asks MKL for.
pub const MKL_CBWR: &str = "AUTO,STRICT";

/// Sets `MKL_CBWR=AUTO,STRICT` for this process (and the processes it starts) unless the
/// environment sets `MKL_CBWR` already. MKL reads it once, on its first call: call this
/// first thing in `main`, before any libtorch operation and before other threads start.
pub fn reproducible_blas() {
    if std::env::var_os("MKL_CBWR").is_none() {
        std::env::set_var("MKL_CBWR", MKL_CBWR);
    }
}
