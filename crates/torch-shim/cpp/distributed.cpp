// PyTorch's c10d behind a C ABI: a TCPStore rendezvous and a Gloo process group,
// the engine under torch.distributed / DDP on CPU. Compiled with USE_C10D_GLOO when
// gloo's headers were found (ProcessGroupGloo.hpp includes them; the torch wheel
// does not ship them, `cargo xtask setup` fetches Debian's libgloo-dev); without
// them every entry point reports how to get them. Errors follow shim.cpp's
// convention: nullptr on success, else a malloc'ed message.
#include <ATen/ATen.h>

#include "guarded.hpp"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#ifdef USE_C10D_GLOO
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

namespace {

using glue_shim::error_message;
using glue_shim::guarded;

#ifdef USE_C10D_GLOO
struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
};

// c10d logs every failed connection attempt of a rendezvous at ERROR/WARNING level,
// with a C++ backtrace, and then raises; the caller reports the exception in one line.
// So c10's log level is FATAL while the group forms, unless the user chose a level
// with TORCH_CPP_LOG_LEVEL (to see those messages).
struct QuietRendezvous {
  int saved = FLAGS_caffe2_log_level;
  bool quiet = std::getenv("TORCH_CPP_LOG_LEVEL") == nullptr;
  QuietRendezvous() {
    if (quiet) FLAGS_caffe2_log_level = c10::GLOG_FATAL;
  }
  ~QuietRendezvous() {
    if (quiet) FLAGS_caffe2_log_level = saved;
  }
};

// Waits for a collective; c10d raises on a peer's failure or on the timeout.
void finish(const c10::intrusive_ptr<c10d::Work>& work, const Group& group) {
  if (!work->wait(group.timeout)) {
    throw std::runtime_error("collective did not finish within the timeout");
  }
}
#else
const char* kNoGloo =
    "glue-rs was built without c10d's Gloo backend (gloo's headers were not found): "
    "run `cargo xtask setup`, which fetches them, then rebuild";
#endif

}  // namespace

extern "C" {

int glue_shim_has_gloo() {
#ifdef USE_C10D_GLOO
  return 1;
#else
  return 0;
#endif
}

// torch.distributed.init_process_group("gloo", init_method="env://") for one rank:
// a TCPStore at host:port (this process hosts it when `host_store`, as rank 0 does
// without torchrun's agent store), keys under `prefix`, and a Gloo group whose
// transport binds to `bind_host`. Collectives fail after `timeout_ms`.
char* glue_shim_pg_new_gloo(const char* host, int port, int rank, int world,
                            int host_store, long long timeout_ms,
                            const char* bind_host, const char* prefix,
                            void** out) {
#ifdef USE_C10D_GLOO
  return guarded([&] {
    QuietRendezvous quiet;
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions options;
    options.port = static_cast<std::uint16_t>(port);
    options.isServer = host_store != 0;
    options.numWorkers = static_cast<std::size_t>(world);
    options.waitWorkers = true;  // every rank checks in; the server waits for all
    options.timeout = timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), options);
    auto store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp);
    auto gloo = c10d::ProcessGroupGloo::Options::create(timeout);
    gloo->devices.push_back(
        c10d::ProcessGroupGloo::createDeviceForHostname(std::string(bind_host)));
    auto group = new Group{
        tcp, c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, gloo),
        timeout};
    *out = group;
  });
#else
  return error_message(kNoGloo);
#endif
}

void glue_shim_pg_free(void* handle) {
#ifdef USE_C10D_GLOO
  delete static_cast<Group*>(handle);
#endif
}

// dist.all_reduce(tensor, op=SUM), in place.
char* glue_shim_pg_all_reduce_sum(void* handle, at::Tensor* tensor) {
#ifdef USE_C10D_GLOO
  return guarded([&] {
    auto& group = *static_cast<Group*>(handle);
    std::vector<at::Tensor> list{*tensor};
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    opts.timeout = group.timeout;
    finish(group.backend->allreduce(list, opts), group);
  });
#else
  return error_message(kNoGloo);
#endif
}

// dist.broadcast(tensor, src=root), in place.
char* glue_shim_pg_broadcast(void* handle, at::Tensor* tensor, int root) {
#ifdef USE_C10D_GLOO
  return guarded([&] {
    auto& group = *static_cast<Group*>(handle);
    std::vector<at::Tensor> list{*tensor};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.timeout = group.timeout;
    finish(group.backend->broadcast(list, opts), group);
  });
#else
  return error_message(kNoGloo);
#endif
}

// dist.all_gather(outputs, input): `outputs` holds world_size tensors shaped as
// `input`, filled in rank order.
char* glue_shim_pg_all_gather(void* handle, at::Tensor* input, at::Tensor** outputs,
                              size_t n) {
#ifdef USE_C10D_GLOO
  return guarded([&] {
    auto& group = *static_cast<Group*>(handle);
    std::vector<at::Tensor> in{*input};
    std::vector<at::Tensor> gathered;
    for (size_t i = 0; i < n; ++i) {
      gathered.push_back(*outputs[i]);
    }
    std::vector<std::vector<at::Tensor>> out{gathered};
    c10d::AllgatherOptions opts;
    opts.timeout = group.timeout;
    finish(group.backend->allgather(out, in, opts), group);
  });
#else
  return error_message(kNoGloo);
#endif
}

// dist.barrier().
char* glue_shim_pg_barrier(void* handle) {
#ifdef USE_C10D_GLOO
  return guarded([&] {
    auto& group = *static_cast<Group*>(handle);
    c10d::BarrierOptions opts;
    opts.timeout = group.timeout;
    finish(group.backend->barrier(opts), group);
  });
#else
  return error_message(kNoGloo);
#endif
}

}  // extern "C"
