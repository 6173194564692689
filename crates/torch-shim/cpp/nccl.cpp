// NCCL for data-parallel CUDA runs, as torch.distributed's "nccl" backend uses it:
// one communicator per rank, collectives on PyTorch's current CUDA stream.
//
// The torch wheel this crate compiles against is the CPU one, without nccl.h or
// the CUDA headers, so NCCL's C API (stable since 2.0) is declared here and the
// library is opened at run time: on a CUDA build of torch, libtorch_cuda.so has
// already loaded libnccl.so.2 (the wheel's nvidia-nccl package), and dlopen finds
// it by name; else the nvidia-nccl wheel's copy beside the torch wheel is tried. Devices and streams go through c10's device-guard interface, which
// libc10_cuda registers, so no CUDA runtime header is needed either.
//
// NCCL collectives do not time out by themselves: after enqueuing one, the caller
// polls the stream and NCCL's asynchronous error, and aborts the communicator when
// the timeout passes (what ProcessGroupNCCL's watchdog does), so a dead peer ends
// the run with an error instead of a hang.
#include <ATen/ATen.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include "guarded.hpp"

#include <dlfcn.h>

#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>

namespace {

using glue_shim::error_message;
using glue_shim::guarded;

// From nccl.h.
using ncclResult = int;
constexpr ncclResult kSuccess = 0;
constexpr ncclResult kInProgress = 7;
constexpr int kSum = 0;
constexpr size_t kIdBytes = 128;
struct UniqueId {
  char internal[kIdBytes];
};
using Comm = void*;

struct Nccl {
  ncclResult (*get_version)(int*);
  ncclResult (*get_unique_id)(UniqueId*);
  ncclResult (*comm_init_rank)(Comm*, int, UniqueId, int);
  ncclResult (*comm_destroy)(Comm);
  ncclResult (*comm_abort)(Comm);
  ncclResult (*comm_get_async_error)(Comm, ncclResult*);
  ncclResult (*all_reduce)(const void*, void*, size_t, int, int, Comm, void*);
  ncclResult (*broadcast)(const void*, void*, size_t, int, int, Comm, void*);
  const char* (*error_string)(ncclResult);
};

template <typename F>
void bind(void* lib, const char* name, F& out) {
  void* symbol = dlsym(lib, name);
  if (symbol == nullptr) {
    throw std::runtime_error(std::string("libnccl.so.2 has no ") + name);
  }
  out = reinterpret_cast<F>(symbol);
}

// The nvidia-nccl wheel's copy beside the torch wheel (site-packages/nvidia/nccl/lib),
// for a libtorch that has not loaded NCCL itself: found from libtorch_cpu's own path.
std::string wheel_nccl() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&at::globalContext), &info) == 0 ||
      info.dli_fname == nullptr) {
    return "";
  }
  std::string lib(info.dli_fname);  // .../site-packages/torch/lib/libtorch_cpu.so
  auto slash = lib.rfind('/');
  if (slash == std::string::npos) return "";
  return lib.substr(0, slash) + "/../../nvidia/nccl/lib/libnccl.so.2";
}

// Opened once; later calls see the same result (or the same error).
const Nccl& nccl() {
  static const Nccl api = [] {
    void* lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_GLOBAL);
    if (lib == nullptr) {
      std::string beside = wheel_nccl();
      if (!beside.empty()) lib = dlopen(beside.c_str(), RTLD_NOW | RTLD_GLOBAL);
    }
    if (lib == nullptr) {
      const char* why = dlerror();
      throw std::runtime_error(
          std::string("NCCL could not be loaded (") + (why ? why : "libnccl.so.2") +
          "); it comes with the CUDA builds of torch (the nvidia-nccl package)");
    }
    Nccl n{};
    bind(lib, "ncclGetVersion", n.get_version);
    bind(lib, "ncclGetUniqueId", n.get_unique_id);
    bind(lib, "ncclCommInitRank", n.comm_init_rank);
    bind(lib, "ncclCommDestroy", n.comm_destroy);
    bind(lib, "ncclCommAbort", n.comm_abort);
    bind(lib, "ncclCommGetAsyncError", n.comm_get_async_error);
    bind(lib, "ncclAllReduce", n.all_reduce);
    bind(lib, "ncclBroadcast", n.broadcast);
    bind(lib, "ncclGetErrorString", n.error_string);
    return n;
  }();
  return api;
}

void check(ncclResult result, const char* what) {
  if (result != kSuccess) {
    throw std::runtime_error(std::string(what) + ": " + nccl().error_string(result));
  }
}

int nccl_type(at::ScalarType t) {
  switch (t) {
    case at::kChar: return 0;
    case at::kByte: return 1;
    case at::kInt: return 2;
    case at::kLong: return 4;
    case at::kHalf: return 6;
    case at::kFloat: return 7;
    case at::kDouble: return 8;
    case at::kBFloat16: return 9;
    default:
      throw std::runtime_error(std::string("NCCL cannot reduce ") + c10::toString(t));
  }
}

struct Communicator {
  Comm comm = nullptr;
  c10::Device device;
  std::chrono::milliseconds timeout;
  bool aborted = false;
};

const c10::impl::DeviceGuardImplInterface& cuda() {
  return *c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA);
}

// Enqueues `launch` on the tensor's current stream, then waits for the stream,
// watching NCCL's asynchronous error and the timeout.
template <typename F>
void collective(Communicator& c, const at::Tensor& t, const char* what, F&& launch) {
  if (c.aborted) {
    throw std::runtime_error("the NCCL communicator was aborted by an earlier failure");
  }
  if (!t.is_cuda() || t.device() != c.device || !t.is_contiguous()) {
    throw std::runtime_error(std::string(what) +
                             ": NCCL needs a contiguous tensor on " + c.device.str());
  }
  c10::Stream stream = cuda().getStream(c.device);
  check(launch(stream.native_handle()), what);
  auto deadline = std::chrono::steady_clock::now() + c.timeout;
  while (!stream.query()) {
    ncclResult async = kSuccess;
    check(nccl().comm_get_async_error(c.comm, &async), what);
    bool late = std::chrono::steady_clock::now() > deadline;
    if ((async != kSuccess && async != kInProgress) || late) {
      nccl().comm_abort(c.comm);
      c.aborted = true;
      throw std::runtime_error(
          std::string(what) + ": " +
          (late ? "did not finish within the timeout" : nccl().error_string(async)));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

}  // namespace

extern "C" {

// NCCL's version as an integer (e.g. 22703 for 2.27.3), or the load error.
char* glue_shim_nccl_version(int* out) {
  return guarded([&] { check(nccl().get_version(out), "ncclGetVersion"); });
}

// ncclGetUniqueId: the 128 bytes rank 0 hands every rank (over Gloo).
char* glue_shim_nccl_unique_id(unsigned char* out) {
  return guarded([&] {
    UniqueId id;
    check(nccl().get_unique_id(&id), "ncclGetUniqueId");
    std::memcpy(out, id.internal, kIdBytes);
  });
}

// ncclCommInitRank on CUDA device `device` (made this thread's current device).
char* glue_shim_nccl_comm_new(const unsigned char* id_bytes, int rank, int world,
                              int device, long long timeout_ms, void** out) {
  return guarded([&] {
    c10::Device dev(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(device));
    cuda().setDevice(dev);
    UniqueId id;
    std::memcpy(id.internal, id_bytes, kIdBytes);
    auto c = new Communicator{nullptr, dev, std::chrono::milliseconds(timeout_ms)};
    ncclResult r = nccl().comm_init_rank(&c->comm, world, id, rank);
    if (r != kSuccess) {
      delete c;
      check(r, "ncclCommInitRank");
    }
    *out = c;
  });
}

void glue_shim_nccl_comm_free(void* handle) {
  auto c = static_cast<Communicator*>(handle);
  if (c == nullptr) return;
  if (c->comm != nullptr && !c->aborted) {
    nccl().comm_destroy(c->comm);
  }
  delete c;
}

// dist.all_reduce(tensor, op=SUM) on NCCL, in place.
char* glue_shim_nccl_all_reduce_sum(void* handle, at::Tensor* tensor) {
  return guarded([&] {
    auto& c = *static_cast<Communicator*>(handle);
    const at::Tensor& t = *tensor;
    collective(c, t, "the NCCL all-reduce", [&](void* stream) {
      return nccl().all_reduce(t.data_ptr(), t.data_ptr(), t.numel(),
                               nccl_type(t.scalar_type()), kSum, c.comm, stream);
    });
  });
}

// dist.broadcast(tensor, src=root) on NCCL, in place.
char* glue_shim_nccl_broadcast(void* handle, at::Tensor* tensor, int root) {
  return guarded([&] {
    auto& c = *static_cast<Communicator*>(handle);
    const at::Tensor& t = *tensor;
    collective(c, t, "the NCCL broadcast", [&](void* stream) {
      return nccl().broadcast(t.data_ptr(), t.data_ptr(), t.numel(),
                              nccl_type(t.scalar_type()), root, c.comm, stream);
    });
  });
}

}  // extern "C"
