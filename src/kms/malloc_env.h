// glibc malloc settings that only the environment can set (GLIBC_TUNABLES is read by the dynamic
// loader before main; mallopt has no knob for them). What they buy: docs/performance.md, change 16.
#pragma once

#include <optional>
#include <string>

namespace trousseau::kms {

// Per-thread malloc caches (tcache) off. Each thread that ever served a call otherwise keeps up
// to 7 freed blocks of each of 64 sizes (<= 1 KiB) "in use": after a c=256 burst, 33 threads'
// caches pinned ~4 MiB of scattered heap pages that malloc_trim cannot give back.
inline constexpr char kTcacheTunable[] = "glibc.malloc.tcache_count";
inline constexpr int kTcacheCount = 0;

// The GLIBC_TUNABLES value to run with, given the current one (nullptr: unset): the current
// value with `glibc.malloc.tcache_count=0` appended. nullopt when there is nothing to change: the
// current value already sets tcache_count (an operator's choice wins, and it is how the process
// started by ReexecWithMallocTunables knows it is the second one), or it is not a well-formed
// colon-separated list of name=value (left alone rather than guessed at).
std::optional<std::string> TunablesToRun(const char* current);

// For `serve`, first thing in main() while single-threaded: if TunablesToRun asks for a change,
// sets GLIBC_TUNABLES and execs the same binary (the path /proc/self/exe points to, so the
// process keeps its name and pid) with the same argv and environment. Returns only when nothing
// was to change or the exec failed (then the process runs with glibc's defaults, as before).
void ReexecWithMallocTunables(char** argv);

}  // namespace trousseau::kms
