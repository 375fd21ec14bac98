#include "kms/server_tuning.h"

#include <malloc.h>

#include <algorithm>

#include "absl/synchronization/mutex.h"
#include "hardening/secret_buffer.h"

namespace trousseau::kms {

namespace {
// Two arenas: the main one and one shared by every other thread. Measured (docs/performance.md):
// no CPU cost at c=16 on 2 cores, and the RSS a burst leaves behind stays in two arenas.
constexpr int kMallocArenas = 2;
}  // namespace

void TuneProcess() {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  mallopt(M_ARENA_MAX, kMallocArenas);
  // No fastbins: a freed small block is merged with its free neighbours at once instead of
  // waiting in a per-size list, so a burst's heap grows less and what survives it is less
  // scattered (docs/performance.md, change 16: RSS 2 s after c=256 −0.5 and −1.0 MiB in two runs,
  // CPU within the noise).
  mallopt(M_MXFAST, 0);
}

void TrimHeapIfSlack() {
  const struct mallinfo2 mi = mallinfo2();
  if (mi.fordblks > kTrimSlackBytes) malloc_trim(0);
  SecretBuffer::TrimPool(kKeepPooledSecretPages);
}

int MaxPollers(const CallLimits& limits, uint32_t max_idle) {
  const uint32_t limited = limits.encrypt.max() + limits.decrypt.max();
  return static_cast<int>(std::min<uint32_t>(limited, max_idle)) + kMinPollers;
}

uint32_t ServerThreadBudget(const CallLimits& limits, uint32_t max_idle) {
  const uint32_t limited = limits.encrypt.max() + limits.decrypt.max();
  const uint32_t pollers =
      std::max<uint32_t>(std::min<uint32_t>(limited, max_idle), kMaxPollersCap) + kMinPollers;
  return 2 * limited + pollers;
}

void ConfigureServer(grpc::ServerBuilder& builder, const CallLimits& limits, uint32_t max_idle) {
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MIN_POLLERS, kMinPollers);
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS,
                              MaxPollers(limits, max_idle));
  grpc::ResourceQuota quota("trousseau-kms");
  quota.SetMaxThreads(static_cast<int>(ServerThreadBudget(limits, max_idle)));
  builder.SetResourceQuota(quota);
}

}  // namespace trousseau::kms
