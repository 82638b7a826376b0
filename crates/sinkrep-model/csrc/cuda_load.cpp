// Loading libtorch's CUDA half after start-up (see src/cuda.rs).
//
// The CUDA torch wheel's libtorch.so exists only to pull in libtorch_cuda.so, and with it
// cuBLAS, cuDNN, NCCL and the CUDA runtime: about 390 MB of mappings and 0.15 s of start-up
// in every process, on machines that have no GPU at all. sinkrep links libtorch_cpu and c10
// only and opens libtorch_cuda.so here when an NVIDIA driver is present. Its static
// initialisers then register the CUDA kernels with the dispatcher and the CUDA hooks, as
// they would at start-up; ATen looks the hooks up on first use (at::detail::getCUDAHooks),
// so this must run before anything asks about CUDA.

#include <ATen/core/dispatch/Dispatcher.h>

#include <dlfcn.h>

#include <cstring>
#include <exception>

namespace {
void copy_msg(const char* msg, char* err, size_t errlen) {
    if (errlen == 0) return;
    std::strncpy(err, msg ? msg : "unknown error", errlen - 1);
    err[errlen - 1] = '\0';
}
}  // namespace

extern "C" {

// 1: libtorch_cuda.so is already in the process (linked at build time: the device bundle);
// 0: not yet.
int sinkrep_torch_cuda_present() {
    void* h = dlopen("libtorch_cuda.so", RTLD_NOW | RTLD_NOLOAD);
    if (h == nullptr) return 0;
    dlclose(h);
    return 1;
}

// Opens libtorch_cuda.so, searched for with the executable's RUNPATH (the libtorch folder
// it was built against). 0 on success; otherwise 1 and dlerror()'s message in `err`. The
// handle is never closed: the library stays for the life of the process.
int sinkrep_load_torch_cuda(char* err, size_t errlen) {
    dlerror();
    void* h = dlopen("libtorch_cuda.so", RTLD_NOW | RTLD_GLOBAL);
    if (h == nullptr) {
        copy_msg(dlerror(), err, errlen);
        return 1;
    }
    return 0;
}

// 1 when the dispatcher has a CUDA kernel for aten::mm (libtorch_cuda's registrations ran),
// 0 when not, -1 on error.
int sinkrep_cuda_kernels_registered() {
    try {
        auto op = c10::Dispatcher::singleton().findSchema({"aten::mm", ""});
        if (!op.has_value()) return -1;
        return op->hasKernelForDispatchKey(c10::DispatchKey::CUDA) ? 1 : 0;
    } catch (const std::exception&) {
        return -1;
    }
}

}  // extern "C"
