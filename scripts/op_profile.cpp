// Per-op time of a glue-cli run, main thread only: an LD_PRELOAD library that registers
// a global RecordFunction observer (ATen ops and autograd nodes) and, at exit, writes
// each op's exclusive and inclusive seconds and call count to $PROF_OUT. Built and run
// by scripts/op_profile.sh, which subtracts a short run from a long one so that the
// rest is training steps only. Dev tool; the product never loads it.
#include <ATen/record_function.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <vector>
#include <algorithm>
#include <unistd.h>
#include <sys/syscall.h>
struct Frame { std::string name; int64_t t0; int64_t child; };
struct Stat { int64_t incl=0, excl=0, n=0; };
static std::map<std::string, Stat>* statsp;
static thread_local std::vector<Frame>* stackp;
static int64_t now() { return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
static bool is_main() { return syscall(SYS_gettid) == getpid(); }
static std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction& fn) {
  if (!statsp || !is_main()) return nullptr;
  if (!stackp) stackp = new std::vector<Frame>;
  stackp->push_back({fn.name(), now(), 0});
  return nullptr;
}
static void on_end(const at::RecordFunction& fn, at::ObserverContext*) {
  if (!statsp || !is_main() || !stackp || stackp->empty()) return;
  auto& stack = *stackp;
  Frame f = stack.back(); stack.pop_back();
  int64_t d = now() - f.t0;
  if (!stack.empty()) stack.back().child += d;
  auto& s = (*statsp)[f.name];
  s.n++; s.excl += d - f.child;
  if (std::none_of(stack.begin(), stack.end(), [&](const Frame& o){return o.name==f.name;})) s.incl += d;
}
static void done() {
  std::vector<std::pair<std::string, Stat>> v(statsp->begin(), statsp->end());
  std::sort(v.begin(), v.end(), [](auto&a, auto&b){return a.second.excl > b.second.excl;});
  int64_t tot=0; for (auto&p: v) tot += p.second.excl;
  FILE* f = fopen(std::getenv("PROF_OUT"), "w");
  fprintf(f, "total excl %.3f s\n", tot/1e9);
  for (auto& p : v) fprintf(f, "%10.3f excl %10.3f incl %8ld  %s\n", p.second.excl/1e9, p.second.incl/1e9, (long)p.second.n, p.first.c_str());
  fclose(f);
}
__attribute__((constructor)) static void start() {
  if (!std::getenv("PROF_OUT")) return;
  statsp = new std::map<std::string, Stat>;
  at::addGlobalCallback(at::RecordFunctionCallback(on_start, on_end).scopes({at::RecordScope::FUNCTION, at::RecordScope::BACKWARD_FUNCTION}));
  std::atexit(done);
}
