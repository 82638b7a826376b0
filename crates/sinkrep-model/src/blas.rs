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
//! count (`STRICT`), at the same speed.
//!
//! `sinkrep` sets it for the commands that analyse a given model (`analyze`, `intervene`,
//! `export`, `env`), not for `run` and `train`: strict mode also changes the 1-thread bits of
//! some products (21 of 66 shapes in a libtorch test; none of the smoke replications'), and
//! at cpu scale the trained subjects amplified that past their committed baselines'
//! tolerance (39 of 4316 metrics and two synthetic verdicts of super-neurons moved). Turning
//! it on for `run` means re-recording those baselines, a decision of its own.

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
