// GLIBC_TUNABLES for `serve`: tcache off appended, an operator's own setting and malformed values
// left alone, and the re-exec that applies it.
#include "kms/malloc_env.h"

#include <malloc.h>

#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <string>
#include <vector>

#include "kms/server_tuning.h"

namespace trousseau::kms {
namespace {

TEST_CASE("TunablesToRun: unset or empty gets tcache off") {
  CHECK(TunablesToRun(nullptr) == std::optional<std::string>("glibc.malloc.tcache_count=0"));
  CHECK(TunablesToRun("") == std::optional<std::string>("glibc.malloc.tcache_count=0"));
}

TEST_CASE("TunablesToRun: other tunables are kept and ours appended") {
  CHECK(TunablesToRun("glibc.malloc.mmap_threshold=131072") ==
        std::optional<std::string>("glibc.malloc.mmap_threshold=131072:glibc.malloc.tcache_count=0"));
  CHECK(TunablesToRun("glibc.malloc.arena_max=1:glibc.rtld.nns=2") ==
        std::optional<std::string>(
            "glibc.malloc.arena_max=1:glibc.rtld.nns=2:glibc.malloc.tcache_count=0"));
  // A tunable whose name only starts like ours is a different one.
  CHECK(TunablesToRun("glibc.malloc.tcache_count_x=1") ==
        std::optional<std::string>("glibc.malloc.tcache_count_x=1:glibc.malloc.tcache_count=0"));
  // tcache_max is a different knob: ours is still added.
  CHECK(TunablesToRun("glibc.malloc.tcache_max=64").has_value());
}

TEST_CASE("TunablesToRun: an operator's tcache_count wins (and stops a second re-exec)") {
  CHECK_FALSE(TunablesToRun("glibc.malloc.tcache_count=7").has_value());
  CHECK_FALSE(TunablesToRun("glibc.malloc.tcache_count=0").has_value());
  CHECK_FALSE(TunablesToRun("glibc.malloc.arena_max=1:glibc.malloc.tcache_count=3").has_value());
  // Its own output is a fixed point.
  const auto once = TunablesToRun("glibc.malloc.arena_max=1");
  REQUIRE(once.has_value());
  CHECK_FALSE(TunablesToRun(once->c_str()).has_value());
}

TEST_CASE("TunablesToRun: malformed values are left alone") {
  CHECK_FALSE(TunablesToRun("garbage").has_value());
  CHECK_FALSE(TunablesToRun("=1").has_value());
  CHECK_FALSE(TunablesToRun("glibc.malloc.arena_max=1:").has_value());
  CHECK_FALSE(TunablesToRun(":glibc.malloc.arena_max=1").has_value());
  CHECK_FALSE(TunablesToRun("glibc.malloc.arena_max=1::glibc.rtld.nns=2").has_value());
  CHECK_FALSE(TunablesToRun("glibc.malloc.arena_max=1:junk").has_value());
}

// The re-exec itself, in a child: the test binary re-execs into itself, so a child whose
// environment already holds a tcache_count must come back from the call, and a child with
// nothing set must not: its exec starts a second copy of this test binary, which sees the marker
// below before main and exits 43 if it got exactly our GLIBC_TUNABLES (44 otherwise).
const int kExecdCopy = [] {
  if (getenv("TROUSSEAU_MALLOC_ENV_TEST_CHILD") != nullptr) {
    const char* t = getenv("GLIBC_TUNABLES");
    _exit(t != nullptr && std::string(t) == "glibc.malloc.tcache_count=0" ? 43 : 44);
  }
  return 0;
}();

int RunChild(const char* tunables) {
  const pid_t pid = fork();
  if (pid == 0) {
    if (tunables != nullptr) {
      setenv("GLIBC_TUNABLES", tunables, 1);
    } else {
      unsetenv("GLIBC_TUNABLES");
    }
    setenv("TROUSSEAU_MALLOC_ENV_TEST_CHILD", "1", 1);
    char arg0[] = "kms_test";
    char* argv[] = {arg0, nullptr};
    ReexecWithMallocTunables(argv);
    _exit(42);  // came back: no exec
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST_CASE("ReexecWithMallocTunables: returns when the operator set tcache_count") {
  CHECK(RunChild("glibc.malloc.tcache_count=5") == 42);
}

TEST_CASE("ReexecWithMallocTunables: execs itself with tcache off when nothing is set") {
  // The exec'd copy is this test binary; its main (catch_main.cpp) sees the marker below.
  CHECK(RunChild(nullptr) == 43);
}

#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
// Not under ASan or TSan: their allocator replaces glibc's, which then has no fastbins to count.

// Bytes added to glibc's fastbins by freeing 1,000 small blocks, in a forked child (so that
// TuneProcess's process-wide settings stay there), with or without TuneProcess first.
long FastbinBytesAfterFrees(bool tuned) {
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  const pid_t pid = fork();
  if (pid == 0) {
    if (tuned) TuneProcess();
    // What the fastbins hold already (blocks freed by the parent before the fork) is not ours.
    const long held = static_cast<long>(mallinfo2().fsmblks);
    std::vector<void*> blocks;
    for (int i = 0; i < 1000; ++i) blocks.push_back(malloc(40));
    for (void* b : blocks) free(b);
    const long bytes = static_cast<long>(mallinfo2().fsmblks) - held;
    (void)!write(fds[1], &bytes, sizeof(bytes));
    _exit(0);
  }
  close(fds[1]);
  long bytes = -1;
  const ssize_t n = read(fds[0], &bytes, sizeof(bytes));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  REQUIRE(n == static_cast<ssize_t>(sizeof(bytes)));
  return bytes;
}

TEST_CASE("TuneProcess turns glibc's fastbins off") {
  // Control: without it, freed small blocks beyond the tcache wait in the fastbins.
  CHECK(FastbinBytesAfterFrees(false) > 0);
  CHECK(FastbinBytesAfterFrees(true) == 0);
}
#endif

}  // namespace
}  // namespace trousseau::kms
