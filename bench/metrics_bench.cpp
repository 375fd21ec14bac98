// trousseau-metrics-bench: the cost of the metrics a KMS call records (KmsInFlight, one
// ObserveVault, one ObserveKms), per call, from 1 or more threads. Bench only; it asserts nothing.
// Usage: trousseau-metrics-bench [threads] [calls per thread]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "observability/metrics.h"

using namespace trousseau::metrics;

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 1;
  const int calls = argc > 2 ? std::atoi(argv[2]) : 400000;
  if (threads < 1 || calls < 1) {
    std::fprintf(stderr, "usage: %s [threads >= 1] [calls per thread >= 1]\n", argv[0]);
    return 2;
  }
  SetVaultNodes({"https://vault-a.test:8200", "https://vault-b.test:8200"});
  auto run = [calls] {
    for (int i = 0; i < calls; ++i) {
      KmsInFlight busy("v2", "Encrypt");
      ObserveVault("/v1/transit/encrypt/k", "https://vault-a.test:8200", 200, 0.001);
      ObserveKms("v2", "Encrypt", "OK", 0.002);
    }
  };
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(run);
  for (auto& t : pool) t.join();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%d thread(s) x %d calls: %.3f us wall per call per thread\n", threads, calls,
              s * 1e6 / calls);
  return 0;
}
