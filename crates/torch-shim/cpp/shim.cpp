// The few libtorch entry points tch 0.24 does not generate, behind a C ABI.
// Every function catches C++ exceptions and returns them as a malloc'ed message
// (nullptr on success), so no exception ever crosses into Rust.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/headeronly/version.h>

#include "guarded.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

// The intra-op thread settings of the calling thread. Weak: a libtorch built without
// OpenMP or MKL has none of them, and the calls below are then skipped. (Built with
// -fopenmp, ATen/Parallel.h has declared OpenMP's already.)
extern "C" {
#ifndef _OPENMP
int omp_get_max_threads(void) __attribute__((weak));
void omp_set_num_threads(int) __attribute__((weak));
#endif
int MKL_Set_Num_Threads_Local(int) __attribute__((weak));
}

namespace {

using glue_shim::guarded;

std::vector<at::Tensor> tensors(at::Tensor** ptrs, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    out.push_back(*ptrs[i]);
  }
  return out;
}

at::DeviceType device_type(int device) {
  return device == 1 ? at::kCUDA : at::kCPU;
}

// fp32 accumulation for bf16 gradients (the bf16 copies' under autocast, whose
// widened values are the fp32 gradients autocast's path would hold); none asked of
// fp32 ones, so their kernel is the one torch's clip_grad_norm_ runs.
std::optional<at::ScalarType> float_unless_float(const at::Tensor& t) {
  if (t.scalar_type() == at::kFloat) {
    return std::nullopt;
  }
  return at::kFloat;
}

// The L2 norm of all gradients together, as torch.nn.utils.get_total_norm: the norm
// of per-tensor norms, each in fp32. ATen reduces a tensor to one value on one thread, and the word
// embeddings' gradient alone is half of a BERT's, so on CPU the elements are cut into
// one contiguous range per intra-op thread, each piece's norm taken on its thread;
// the norm of the pieces' norms is the same up to rounding. Elsewhere ATen's
// multi-tensor kernel.
at::Tensor total_norm(const std::vector<at::Tensor>& list) {
  bool cpu_contiguous = true;
  int64_t total = 0;
  for (const auto& g : list) {
    cpu_contiguous = cpu_contiguous && g.device().is_cpu() && g.is_contiguous();
    total += g.numel();
  }
  if (!cpu_contiguous || at::get_num_threads() < 2) {
    return at::linalg_vector_norm(at::stack(at::_foreach_norm(list, 2, at::kFloat)), 2);
  }
  std::vector<std::vector<at::Tensor>> per_thread(at::get_num_threads());
  at::parallel_for(0, total, /*grain_size=*/1 << 16, [&](int64_t begin, int64_t end) {
    auto& out = per_thread[at::get_thread_num()];
    int64_t offset = 0;
    for (const auto& g : list) {
      int64_t lo = std::max(begin, offset);
      int64_t hi = std::min(end, offset + g.numel());
      if (lo < hi) {
        out.push_back(at::linalg_vector_norm(g.view({-1}).narrow(0, lo - offset, hi - lo), 2,
                                              std::nullopt, false, float_unless_float(g)));
      }
      offset += g.numel();
    }
  });
  std::vector<at::Tensor> norms;
  for (auto& pieces : per_thread) {
    norms.insert(norms.end(), pieces.begin(), pieces.end());
  }
  return at::linalg_vector_norm(at::stack(norms), 2);
}

}  // namespace

extern "C" {

void glue_shim_free(char* message) { std::free(message); }

const char* glue_shim_torch_version() { return TORCH_VERSION; }

// torch/optim/adamw.py `_fused_adamw` for one parameter group: ATen's fused kernel
// (one pass over param, grad, exp_avg, exp_avg_sq per tensor). `steps` hold the
// step count *after* this update, as torch increments them before the call.
// `grad_scale` (nullable, a float32 0-dim tensor) divides every gradient as the
// kernel reads it (the divided gradient is written back): the inverse of clipping's
// factor, so that clipping needs no pass over the gradients of its own.
char* glue_shim_fused_adamw(at::Tensor** params, at::Tensor** grads,
                            at::Tensor** exp_avgs, at::Tensor** exp_avg_sqs,
                            at::Tensor** steps, size_t n, double lr, double beta1,
                            double beta2, double weight_decay, double eps,
                            at::Tensor* grad_scale) {
  return guarded([&] {
    std::optional<at::Tensor> scale;
    if (grad_scale != nullptr) {
      scale = *grad_scale;
    }
    at::_fused_adamw_(tensors(params, n), tensors(grads, n), tensors(exp_avgs, n),
                      tensors(exp_avg_sqs, n), {}, tensors(steps, n), lr, beta1,
                      beta2, weight_decay, eps, /*amsgrad=*/false,
                      /*maximize=*/false, scale);
  });
}

// torch.nn.utils.clip_grad_norm_ (foreach path): total L2 norm of all gradients into
// `total` (a 0-dim tensor), gradients scaled by min(1, max_norm / (total + 1e-6)).
// With `divisor` (a 0-dim float32 tensor) the gradients are left as they are and the
// factor's inverse goes there, for the fused AdamW kernel's `grad_scale`.
char* glue_shim_clip_grad_norm(at::Tensor** grads, size_t n, double max_norm,
                               at::Tensor* total, at::Tensor* divisor) {
  return guarded([&] {
    auto list = tensors(grads, n);
    auto norm = total_norm(list);
    auto coef = at::clamp_max(max_norm / (norm + 1e-6), 1.0);
    if (divisor != nullptr) {
      divisor->copy_(at::reciprocal(coef));
    } else {
      at::_foreach_mul_(list, coef);
    }
    total->copy_(norm);
  });
}

// at::parallel_for over [0, n) with a C callback: Rust code between ATen ops runs on
// the intra-op threads the kernels use, not on a second pool competing for the cores.
// The callback must not unwind (the Rust side catches panics).
char* glue_shim_parallel_for(int64_t n, int64_t grain,
                             void (*body)(void* ctx, int64_t begin, int64_t end),
                             void* ctx) {
  return guarded([&] {
    at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) { body(ctx, begin, end); });
  });
}

// Limits the calling thread's intra-op parallelism to `n` threads: OpenMP's
// per-thread team size (what at::parallel_for and oneDNN read) and MKL's thread-local
// setting (the global one, which at::set_num_threads sets, is left alone). It first
// runs libtorch's lazy per-thread init, which would otherwise reset the OpenMP setting
// at the thread's first parallel op. `previous_omp`/`previous_mkl` restore the old values;
// `n` = 0 with previous values given restores them.
char* glue_shim_set_thread_threads(int n, int restore_omp, int restore_mkl,
                                   int* previous_omp, int* previous_mkl) {
  return guarded([&] {
    at::get_num_threads();
    at::internal::lazy_init_num_threads();
    *previous_omp = omp_get_max_threads ? omp_get_max_threads() : 1;
    *previous_mkl = 0;
    int omp = n > 0 ? n : restore_omp;
    int mkl = n > 0 ? n : restore_mkl;
    if (omp_set_num_threads && omp > 0) {
      omp_set_num_threads(omp);
    }
    if (MKL_Set_Num_Threads_Local) {
      *previous_mkl = MKL_Set_Num_Threads_Local(mkl);
    }
  });
}

// act(x @ w^T + b) for inference: an fp32 CPU linear through oneDNN's matmul
// (`mkldnn::_linear_pointwise`, the op torch.compile's CPU backend emits for linear
// layers), with the activation fused into it as a post-op, else at::linear and the
// activation. oneDNN's kernel has no backward, so it is taken only when autograd
// records nothing: grad mode off, or no input requiring grad. `act`: 0 none,
// 1 GELU (erf), 2 GELU (tanh), 3 ReLU.
// `packed`, when not null, is `w` as glue_shim_pack_linear_weight laid it out. An fp32
// one replaces `w` on the oneDNN path. A bf16 one serves CPU bf16 autocast: the linear
// autocast runs (input and bias cast to bf16, a bf16 output), from the packed weight,
// and the activation after it on that output, as autocast runs them; otherwise
// autocast keeps its own routing.
char* glue_shim_linear_inference(at::Tensor* x, at::Tensor* w, at::Tensor* packed,
                                 at::Tensor* b, int act, at::Tensor** out) {
  return guarded([&] {
    static const auto op =
        c10::Dispatcher::singleton().findOp({"mkldnn::_linear_pointwise", ""});
    std::optional<at::Tensor> bias;
    if (b != nullptr) {
      bias = *b;
    }
    auto activation = [act](at::Tensor y) {
      switch (act) {
        case 1: return at::gelu(y, "none");
        case 2: return at::gelu(y, "tanh");
        case 3: return at::relu(y);
        default: return y;
      }
    };
    // The post-op and its algorithm, as torch.compile passes them.
    auto onednn = [&](const at::Tensor& input, const at::Tensor& weight,
                      const std::optional<at::Tensor>& bias, int post) {
      const char* attr = post == 1 || post == 2 ? "gelu" : post == 3 ? "relu" : "none";
      std::optional<std::string> algorithm =
          post == 1 ? "none" : post == 2 ? "tanh" : std::string();
      std::vector<c10::IValue> stack;
      stack.emplace_back(input);
      stack.emplace_back(weight);
      stack.emplace_back(bias);
      stack.emplace_back(std::string(attr));
      stack.emplace_back(c10::List<std::optional<at::Scalar>>());
      stack.emplace_back(algorithm);
      op->callBoxed(&stack);
      return stack.at(0).toTensor();
    };
    bool records = at::GradMode::is_enabled() &&
                   (x->requires_grad() || w->requires_grad() ||
                    (bias && bias->requires_grad()));
    bool usable = op && at::hasMKLDNN() && !records && x->device().is_cpu() && x->dim() >= 2;
    bool autocast = at::autocast::is_autocast_enabled(at::kCPU);
    if (usable && autocast && packed != nullptr && packed->scalar_type() == at::kBFloat16 &&
        at::autocast::get_autocast_dtype(at::kCPU) == at::kBFloat16) {
      std::optional<at::Tensor> bias_bf16;
      if (bias) {
        bias_bf16 = bias->to(at::kBFloat16);
      }
      at::Tensor y = onednn(x->to(at::kBFloat16), *packed, bias_bf16, 0);
      *out = new at::Tensor(activation(std::move(y)));
      return;
    }
    bool fp32 = x->scalar_type() == at::kFloat && w->scalar_type() == at::kFloat &&
                (!bias || bias->scalar_type() == at::kFloat);
    if (!usable || autocast || !fp32) {
      *out = new at::Tensor(activation(at::linear(*x, *w, bias)));
      return;
    }
    bool packed_fp32 = packed != nullptr && packed->scalar_type() == at::kFloat;
    *out = new at::Tensor(onednn(*x, packed_fp32 ? *packed : *w, bias, act));
  });
}

// An fp32 CPU weight `[out, in]` reordered once into the layout oneDNN's inner product
// asks for (`mkldnn::_reorder_linear_weight`, what torch.compile's freezing pass does
// to a linear layer's weight), cast to bf16 first when `bf16`. Given the plain weight,
// oneDNN reorders it on every call. `*out` stays null off the
// CPU or in a libtorch without oneDNN. `rows` > 0 hints the row count of the inputs
// (`batch_size`; it can decide the layout, and so oneDNN's kernel).
char* glue_shim_pack_linear_weight(at::Tensor* w, int64_t rows, int bf16, at::Tensor** out) {
  return guarded([&] {
    *out = nullptr;
    static const auto op =
        c10::Dispatcher::singleton().findOp({"mkldnn::_reorder_linear_weight", ""});
    if (!op || !at::hasMKLDNN() || !w->device().is_cpu() || w->scalar_type() != at::kFloat ||
        w->dim() != 2) {
      return;
    }
    at::NoGradGuard no_grad;
    std::vector<c10::IValue> stack;
    stack.emplace_back(bf16 != 0 ? w->detach().to(at::kBFloat16) : w->detach());
    stack.emplace_back(rows > 0 ? std::optional<int64_t>(rows) : std::nullopt);
    op->callBoxed(&stack);
    *out = new at::Tensor(stack.at(0).toTensor());
  });
}

// Sets every tensor to zero in one call (torch._foreach_zero_).
char* glue_shim_zero(at::Tensor** list, size_t n) {
  return guarded([&] { at::_foreach_zero_(tensors(list, n)); });
}

// optimizer.zero_grad(set_to_none=True), torch's default: the next backward writes
// fresh gradients instead of adding into zeroed ones.
char* glue_shim_set_grads_to_none(at::Tensor** params, size_t n) {
  return guarded([&] {
    for (size_t i = 0; i < n; ++i) {
      params[i]->mutable_grad().reset();
    }
  });
}

// torch.autocast(device, dtype, enabled) entry and exit; the state is thread-local,
// as in Python. `dtype` is a c10::ScalarType code (15 = BFloat16, 5 = Half).
char* glue_shim_autocast_enter(int device, int dtype, int enabled, int* was_enabled,
                               int* was_dtype) {
  return guarded([&] {
    auto type = device_type(device);
    *was_enabled = at::autocast::is_autocast_enabled(type) ? 1 : 0;
    *was_dtype = static_cast<int>(at::autocast::get_autocast_dtype(type));
    at::autocast::set_autocast_dtype(type, static_cast<at::ScalarType>(dtype));
    at::autocast::set_autocast_enabled(type, enabled != 0);
    at::autocast::increment_nesting();
  });
}

char* glue_shim_autocast_exit(int device, int was_enabled, int was_dtype) {
  return guarded([&] {
    auto type = device_type(device);
    // As torch.autocast.__exit__: the weight-cast cache lives until the outermost exit.
    if (at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
    at::autocast::set_autocast_enabled(type, was_enabled != 0);
    at::autocast::set_autocast_dtype(type, static_cast<at::ScalarType>(was_dtype));
  });
}

int glue_shim_autocast_enabled(int device) {
  return at::autocast::is_autocast_enabled(device_type(device)) ? 1 : 0;
}

// torch.use_deterministic_algorithms(mode) plus cuDNN's own switches, as HF's
// `enable_full_determinism` sets them.
char* glue_shim_set_deterministic(int enabled) {
  return guarded([&] {
    auto& ctx = at::globalContext();
    ctx.setDeterministicAlgorithms(enabled != 0, /*warn_only=*/false);
    ctx.setDeterministicCuDNN(enabled != 0);
    ctx.setBenchmarkCuDNN(false);
  });
}

}  // extern "C"

namespace {

// x.index_select(0, spread), whose backward gathers where index_select's scatters.
// `spread` sends every position of a padded [batch * seq] layout to a row of x:
// each token's own, and each padding position its sequence's first token's; `index`
// (the tokens' positions, one per row of x that is a token) inverts it on the
// tokens. index_select's backward zero-fills x's shape and adds the positions'
// gradients back one by one, on one thread; here row r's gradient is the one at
// index[r], and rows past index's length (dummy rows) get zeros. That is the same
// sum when the padding positions' gradients are zero, as attention's are: the mask
// gives them probability 0, so nothing flows through them (up to the sign of a zero).
struct SpreadRows : public torch::autograd::Function<SpreadRows> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& spread, const at::Tensor& index) {
    ctx->save_for_backward({index});
    ctx->saved_data["rows"] = x.size(0);
    return x.index_select(0, spread);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const at::Tensor& grad = grads[0];
    if (!grad.defined()) {
      return {at::Tensor(), at::Tensor(), at::Tensor()};
    }
    at::Tensor index = ctx->get_saved_variables()[0];
    const int64_t rows = ctx->saved_data["rows"].toInt();
    at::Tensor out = grad.index_select(0, index);
    if (out.size(0) < rows) {
      auto shape = out.sizes().vec();
      shape[0] = rows - out.size(0);
      out = at::cat({out, at::zeros(shape, out.options())}, 0);
    }
    return {out, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

extern "C" {

char* glue_shim_spread_rows(at::Tensor* x, at::Tensor* spread, at::Tensor* index,
                            at::Tensor** out) {
  return guarded([&] { *out = new at::Tensor(SpreadRows::apply(*x, *spread, *index)); });
}

int glue_shim_deterministic() {
  return at::globalContext().deterministicAlgorithms() ? 1 : 0;
}

// torch.backends.cuda.enable_cudnn_sdp(enabled). On sm90/sm100 with cuDNN >= 9.15
// torch 2.11 ranks cuDNN attention first for bf16/fp16; cuDNN builds an execution
// plan for every new [batch, heads, seq] shape it meets, tens of ms each.
char* glue_shim_set_cudnn_attention(int enabled) {
  return guarded([&] { at::globalContext().setSDPUseCuDNN(enabled != 0); });
}

int glue_shim_cudnn_attention() {
  return at::globalContext().userEnabledCuDNNSDP() ? 1 : 0;
}

}  // extern "C"
