//! Process-wide allocator tuning for libtorch's CPU tensors.
//!
//! libtorch allocates CPU tensors with `posix_memalign` and frees them at once: it has no
//! caching allocator on the CPU. glibc serves blocks above its mmap threshold (128 KiB,
//! rising dynamically) with fresh `mmap`s and returns them on free, so every large
//! activation of every layer page-faults its memory in again (measured: ~10% of an
//! analysis pass in kernel page-fault and zeroing code). Raising the mmap threshold to its
//! maximum (32 MiB on 64-bit) and the trim threshold keeps freed blocks in the heap for
//! reuse. A process-wide setting, so only binaries and benches call it, never libraries
//! on their own.

/// Keeps freed tensor memory in the heap for reuse (see the module docs). Call once,
/// early in `main`. A no-op outside glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        // <malloc.h>: M_TRIM_THRESHOLD = -1, M_TOP_PAD = -2, M_MMAP_THRESHOLD = -3.
        const M_TRIM_THRESHOLD: std::ffi::c_int = -1;
        const M_TOP_PAD: std::ffi::c_int = -2;
        const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
        // SAFETY: mallopt only changes glibc's allocator parameters; it is called before
        // any thread of ours allocates concurrently and returns 0 on a rejected value.
        #[allow(unsafe_code)]
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, 1 << 30);
            mallopt(M_TOP_PAD, 256 << 20);
        }
    }
}
