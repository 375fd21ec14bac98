// Process-wide and gRPC-server settings chosen for CPU per call and bounded memory. What each
// one bought, measured: docs/performance.md.
#pragma once

#include <grpcpp/server_builder.h>

#include "kms/services.h"

namespace trousseau::kms {

// Call first in main(), while the process is single-threaded:
// - Abseil's mutex deadlock detection off. Debian's Abseil keeps it on (a debug aid: every
//   Mutex lock walks a lock graph, GraphCycles::GetId/DeadlockCheck in the profile), and
//   gRPC's mutexes are Abseil's.
// - glibc malloc arenas bounded (M_ARENA_MAX), so that each thread that ever served a call does
//   not keep an arena of its own; with wipe-on-free the allocator is not the bottleneck.
// - glibc's fastbins off (M_MXFAST 0). The tcache is off too for `serve` (kms/malloc_env.h).
void TuneProcess();

// Gives free heap memory back to the kernel (malloc_trim) when more than kTrimSlackBytes of it
// sit unused in the arenas: after a burst, RSS returns near its idle level instead of staying
// at the burst's peak. Cheap (mallinfo2 over two arenas); the main thread calls it each second.
// It also unmaps SecretBuffer's pooled (wiped) pages beyond kKeepPooledSecretPages: a c=256
// burst left ~145 of them (0.6 MiB, locked) behind.
inline constexpr size_t kTrimSlackBytes = 2 * 1024 * 1024;
inline constexpr size_t kKeepPooledSecretPages = 32;
void TrimHeapIfSlack();

// Sync-server pollers: how many threads wait for calls. gRPC's defaults (1 minimum, 2 maximum)
// make a thread per call above two in flight and end it afterwards (thread churn: clone, a
// fresh stack faulted in, madvise on exit). Keeping up to `max_idle` idle threads for reuse
// (performance.max_idle_threads, default kMaxPollersCap) removes the churn up to that many
// calls in flight (kube-apiserver rarely has more than a few outside its restarts); above it
// threads still come and go, so that a burst's threads (each with ~24 KiB of stack resident) do
// not stay behind. Never more than the limits let run. gRPC 1.51 never ends a kept thread, so
// what a burst leaves is what this allows (docs/performance.md, change 20).
inline constexpr int kMinPollers = 2;
inline constexpr int kMaxPollersCap = 16;
int MaxPollers(const CallLimits& limits, uint32_t max_idle = kMaxPollersCap);

// Threads the sync server may run (grpc::ResourceQuota). Only Encrypt and Decrypt use sync
// threads; Status and Version are async methods answered from memory by one thread of ours
// (kms/status_loop.h), so no number of Encrypt/Decrypt callers can starve them. The budget is every
// limited call, as many again for the calls being refused at the same moment, and the pollers
// (at least kMaxPollersCap + kMinPollers, as before the setting existed).
uint32_t ServerThreadBudget(const CallLimits& limits, uint32_t max_idle = kMaxPollersCap);

// Applies the above to a builder (sync-server options and the thread quota).
void ConfigureServer(grpc::ServerBuilder& builder, const CallLimits& limits,
                     uint32_t max_idle = kMaxPollersCap);

}  // namespace trousseau::kms
