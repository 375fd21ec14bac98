// SecretBuffer: the only home of secrets. Move semantics, growth, wiping, copies that are
// explicit, constant-time comparison, and the locked-memory accounting.
#include "hardening/secret_buffer.h"

#include <pthread.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <thread>
#include <fstream>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "hardening/wiping_allocator.h"
#include "hardening/zero_scan.h"

namespace trousseau {
namespace {

size_t Page() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

bool AllZero(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] != 0) return false;
  }
  return true;
}

TEST_CASE("a default SecretBuffer is empty and has no memory", "[secret_buffer]") {
  SecretBuffer b;
  CHECK(b.empty());
  CHECK(b.size() == 0);
  CHECK(b.capacity() == 0);
  CHECK(b.data() == nullptr);
  CHECK(b.view().empty());
  CHECK(b.view().data() != nullptr);  // a valid empty view, never a null pointer
  CHECK(b.Equals(""));
  CHECK_FALSE(b.Equals("x"));
}

TEST_CASE("CopyOf copies the bytes into page-backed memory", "[secret_buffer]") {
  const std::string text("se\0cret", 7);
  SecretBuffer b = SecretBuffer::CopyOf(text);
  CHECK(b.size() == 7);
  CHECK(b.view() == text);
  CHECK(b.capacity() >= Page());
  CHECK(b.capacity() % Page() == 0);
  CHECK(static_cast<const void*>(b.data()) != static_cast<const void*>(text.data()));
}

TEST_CASE("CopyOf of nothing still gives a usable buffer", "[secret_buffer]") {
  SecretBuffer b = SecretBuffer::CopyOf("");
  CHECK(b.empty());
  CHECK(b.Equals(""));
  b.append("x");
  CHECK(b.view() == "x");
}

TEST_CASE("moving a SecretBuffer leaves the source empty", "[secret_buffer]") {
  SecretBuffer a = SecretBuffer::CopyOf("token-123");
  const uint8_t* pages = a.data();
  const size_t cap = a.capacity();

  SecretBuffer b(std::move(a));
  CHECK(b.view() == "token-123");
  CHECK(b.data() == pages);  // the pages moved; nothing was copied
  CHECK(b.capacity() == cap);
  CHECK(a.data() == nullptr);  // NOLINT(bugprone-use-after-move): the point of the test
  CHECK(a.size() == 0);
  CHECK(a.capacity() == 0);
  CHECK(a.empty());

  SecretBuffer c = SecretBuffer::CopyOf("old");
  c = std::move(b);
  CHECK(c.view() == "token-123");
  CHECK(c.data() == pages);
  CHECK(b.data() == nullptr);  // NOLINT(bugprone-use-after-move)
  CHECK(b.size() == 0);
  CHECK(b.capacity() == 0);

  // A moved-from buffer is reusable.
  b.append("again");
  CHECK(b.view() == "again");
}

TEST_CASE("self move-assignment keeps the contents", "[secret_buffer]") {
  SecretBuffer a = SecretBuffer::CopyOf("keep me");
  SecretBuffer& alias = a;
  a = std::move(alias);
  CHECK(a.view() == "keep me");
}

TEST_CASE("append grows across pages and keeps the content", "[secret_buffer]") {
  SecretBuffer b;
  std::string expect;
  const size_t page = Page();
  size_t last_cap = 0;
  int growths = 0;
  for (size_t i = 0; expect.size() < 3 * page + 17; ++i) {
    const std::string chunk(97, static_cast<char>('A' + (i % 26)));
    b.append(chunk);
    expect += chunk;
    if (b.capacity() != last_cap) {
      ++growths;
      last_cap = b.capacity();
    }
    REQUIRE(b.view() == expect);
  }
  CHECK(b.size() == expect.size());
  CHECK(b.capacity() >= b.size());
  CHECK(b.capacity() % page == 0);
  CHECK(growths >= 2);
  CHECK(growths <= 4);  // geometric growth, not one mapping per append
}

TEST_CASE("append of zero bytes to an empty buffer maps memory", "[secret_buffer]") {
  SecretBuffer b;
  b.append("", 0);
  CHECK(b.data() != nullptr);
  CHECK(b.empty());
}

TEST_CASE("reserve keeps the content and does not shrink", "[secret_buffer]") {
  SecretBuffer b = SecretBuffer::CopyOf("abc");
  const uint8_t* before = b.data();
  b.reserve(1);
  CHECK(b.data() == before);
  b.reserve(Page() * 2 + 1);
  CHECK(b.capacity() >= Page() * 2 + 1);
  CHECK(b.view() == "abc");
  SecretBuffer sized(5000);
  CHECK(sized.empty());
  CHECK(sized.capacity() >= 5000);
}

TEST_CASE("resize zero-fills growth and wipes what it drops", "[secret_buffer]") {
  SecretBuffer b = SecretBuffer::CopyOf("0123456789");
  b.resize(4);
  CHECK(b.view() == "0123");
  // The dropped bytes are still inside our mapping: they must be zero now.
  CHECK(AllZero(b.data() + 4, 6));
  b.resize(8);
  CHECK(b.size() == 8);
  CHECK(std::memcmp(b.data(), "0123\0\0\0\0", 8) == 0);
  b.resize(Page() + 10);  // beyond the first page: grows
  CHECK(b.size() == Page() + 10);
  CHECK(std::memcmp(b.data(), "0123", 4) == 0);
  CHECK(AllZero(b.data() + 4, b.size() - 4));
  SecretBuffer fresh;
  fresh.resize(3);
  CHECK(fresh.size() == 3);
  CHECK(AllZero(fresh.data(), 3));
}

TEST_CASE("clear wipes the whole capacity and keeps the pages", "[secret_buffer]") {
  SecretBuffer b;
  b.append(std::string(Page() + 100, 'S'));
  const uint8_t* pages = b.data();
  const size_t cap = b.capacity();
  // Put secret bytes in the spare capacity too (as a shrink-then-reuse would leave them).
  b.resize(cap);
  std::memset(b.data(), 0x5a, cap);
  b.resize(10);
  std::memset(b.data(), 0x5a, 10);
  b.clear();
  CHECK(b.empty());
  CHECK(b.data() == pages);
  CHECK(b.capacity() == cap);
  CHECK(AllZero(b.data(), cap));
  b.clear();  // twice is fine
  SecretBuffer none;
  none.clear();  // on a buffer without memory too
  CHECK(none.empty());
}

TEST_CASE("Clone is a deep, independent copy", "[secret_buffer]") {
  SecretBuffer a = SecretBuffer::CopyOf("original");
  SecretBuffer c = a.Clone();
  CHECK(c.view() == "original");
  CHECK(c.data() != a.data());
  c.data()[0] = 'X';
  CHECK(a.view() == "original");
  CHECK(c.view() == "Xriginal");
  SecretBuffer empty;
  SecretBuffer empty_clone = empty.Clone();
  CHECK(empty_clone.empty());
}

TEST_CASE("Equals compares contents and lengths", "[secret_buffer]") {
  SecretBuffer a = SecretBuffer::CopyOf("abcdef");
  CHECK(a.Equals("abcdef"));
  CHECK_FALSE(a.Equals("abcdeg"));
  CHECK_FALSE(a.Equals("Abcdef"));
  CHECK_FALSE(a.Equals("abcde"));
  CHECK_FALSE(a.Equals("abcdefg"));
  CHECK_FALSE(a.Equals(""));
  SecretBuffer bin = SecretBuffer::CopyOf(std::string("a\0b", 3));
  CHECK(bin.Equals(std::string("a\0b", 3)));
  CHECK_FALSE(bin.Equals(std::string("a\0c", 3)));
}

TEST_CASE("LockedBytes follows the pages a buffer holds and moves with it", "[secret_buffer]") {
  const size_t locked0 = SecretBuffer::LockedBytes();
  {
    SecretBuffer a = SecretBuffer::CopyOf("x");
    // With no lock failure ever, every page (fresh or reused from the pool) is locked.
    const bool locked = SecretBuffer::LockFailures() == 0;
    const size_t expect = locked0 + (locked ? a.capacity() : 0);
    CHECK(SecretBuffer::LockedBytes() == expect);
    if (!locked) WARN("mlock is not permitted here; only the failure counter is checked");

    SecretBuffer b(std::move(a));  // a move neither locks nor unlocks
    CHECK(SecretBuffer::LockedBytes() == expect);
    SecretBuffer c;
    c = std::move(b);
    CHECK(SecretBuffer::LockedBytes() == expect);

    // Growth maps new pages and releases the old ones.
    c.append(std::string(3 * 4096, 'g'));
    if (SecretBuffer::LockFailures() == 0) {
      CHECK(SecretBuffer::LockedBytes() == locked0 + c.capacity());
    }
  }
  CHECK(SecretBuffer::LockedBytes() == locked0);
}

TEST_CASE("memory handed out again never carries an earlier secret", "[secret_buffer]") {
  // Single pages are reused from a pool: whatever a new buffer gets must be clean.
  for (int round = 0; round < 8; ++round) {
    {
      SecretBuffer s = SecretBuffer::CopyOf(std::string(Page(), static_cast<char>(0xA5)));
      REQUIRE(s.data() != nullptr);
    }
    SecretBuffer fresh(1);
    CHECK(fresh.empty());
    CHECK(AllZero(fresh.data(), fresh.capacity()));
    SecretBuffer grown;
    grown.resize(10);
    CHECK(AllZero(grown.data(), grown.capacity()));
  }
}

TEST_CASE("SecureWipe zeroes memory and tolerates null", "[secret_buffer]") {
  char buf[16];
  std::memset(buf, 'k', sizeof(buf));
  SecureWipe(buf, sizeof(buf));
  CHECK(AllZero(reinterpret_cast<const uint8_t*>(buf), sizeof(buf)));
  SecureWipe(nullptr, 10);
  SecureWipe(buf, 0);
}

// Move-only, checked at compile time: a copy would be an unwiped, unlocked second home.
static_assert(!std::is_copy_constructible_v<SecretBuffer>);
static_assert(!std::is_copy_assignable_v<SecretBuffer>);
static_assert(std::is_nothrow_move_constructible_v<SecretBuffer>);
static_assert(std::is_nothrow_move_assignable_v<SecretBuffer>);

// The /proc/self/smaps block of the mapping that holds `addr`: its VmFlags line and Locked: kB.
struct Smaps {
  bool found = false;
  std::string vmflags;
  long locked_kb = -1;
};
Smaps SmapsFor(const void* addr) {
  const auto a = reinterpret_cast<uintptr_t>(addr);
  std::ifstream f("/proc/self/smaps");
  std::string line;
  Smaps out;
  bool in = false;
  while (std::getline(f, line)) {
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2 && line.find(':') > line.find(' ')) {
      in = a >= lo && a < hi;
      if (in) out.found = true;
      continue;
    }
    if (!in) continue;
    if (line.rfind("VmFlags:", 0) == 0) out.vmflags = line.substr(8) + " ";
    if (line.rfind("Locked:", 0) == 0) out.locked_kb = std::stol(line.substr(7));
  }
  return out;
}

TEST_CASE("SecretBuffer pages are excluded from dumps, wiped on fork and locked (smaps)",
          "[secret_buffer]") {
  SecretBuffer b = SecretBuffer::CopyOf(std::string(3 * Page(), 's'));
  const size_t failures_before = SecretBuffer::LockFailures();
  const Smaps m = SmapsFor(b.data());
  REQUIRE(m.found);
  INFO("VmFlags:" << m.vmflags);
  CHECK(m.vmflags.find(" dd ") != std::string::npos);  // MADV_DONTDUMP
  CHECK(m.vmflags.find(" wf ") != std::string::npos);  // MADV_WIPEONFORK
// ASan's and TSan's mlock interceptors do nothing and return 0
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
  if (SecretBuffer::LockFailures() == failures_before && ::geteuid() == 0) {
    // Root has CAP_IPC_LOCK: mlock cannot fail, so the pages must show as locked.
    CHECK(m.vmflags.find(" lo ") != std::string::npos);
    CHECK(m.locked_kb >= static_cast<long>(3 * Page() / 1024));
  }
#else
  (void)failures_before;
#endif
}

TEST_CASE("SecretBuffer pages are wiped in a forked child (MADV_WIPEONFORK)", "[secret_buffer]") {
  SecretBuffer b = SecretBuffer::CopyOf("fork-secret");
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) _exit(AllZero(b.data(), b.size()) ? 0 : 1);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
  CHECK(b.view() == "fork-secret");  // the parent keeps it
}

// ASan moves stack buffers to its own fake stacks and poisons dead frames: the probe cannot
// work there, so this runs in the release build (scripts/test stage 3) only.
#if !defined(__SANITIZE_ADDRESS__)
std::atomic<uintptr_t> g_planted{0};
constexpr size_t kPlant = 4096;

// Leaves a 4 KiB pattern in a dead frame below the caller's.
[[gnu::noinline]] void PlantOnStack() {
  unsigned char buf[kPlant];
  std::memset(buf, 0xA5, sizeof(buf));
  __asm__ __volatile__("" : : "r"(buf) : "memory");
  g_planted.store(reinterpret_cast<uintptr_t>(buf));
}

// Counts the pattern in the dead frame; inlined so it does not reuse that stack itself.
[[gnu::always_inline]] inline size_t CountPlanted() {
  const volatile unsigned char* p = reinterpret_cast<const volatile unsigned char*>(g_planted.load());
  size_t n = 0;
  for (size_t i = 0; i < kPlant; ++i) n += p[i] == 0xA5 ? 1 : 0;
  return n;
}

TEST_CASE("ScrubStack zeroes a pattern left in a dead stack frame", "[wiping_allocator]") {
  PlantOnStack();
  const size_t before = CountPlanted();  // control: the pattern is there without a scrub
  PlantOnStack();
  ScrubStack();
  const size_t after = CountPlanted();
  CHECK(before > kPlant / 2);
  // ScrubStack's own two frames (return addresses, saved registers, alignment padding) are not
  // part of the area it wipes: a few words of the old frame may survive there (8 bytes seen on
  // x86-64 with GCC 12 -O2), everything else is zeroed.
  CHECK(after <= 16);
}

// Leaves the pattern ~40 KiB below the caller's frame: in the third 16 KiB of ScrubStack's area.
[[gnu::noinline]] void PlantDeep() {
  unsigned char pad[36 * 1024];
  std::memset(pad, 1, sizeof(pad));
  __asm__ __volatile__("" : : "r"(pad) : "memory");
  PlantOnStack();
  __asm__ __volatile__("" : : "r"(pad) : "memory");
}

// On a thread other than main, ScrubStack takes its page-wise path (the main thread the
// fallback above): the same pattern near and deep in the area is zeroed there too.
TEST_CASE("ScrubStack on a worker thread zeroes patterns near and deep in the area",
          "[wiping_allocator]") {
  size_t near_before = 0, near_after = 0, deep_before = 0, deep_after = 0;
  std::thread t([&] {
    PlantOnStack();
    near_before = CountPlanted();
    PlantOnStack();
    ScrubStack();
    near_after = CountPlanted();
    PlantDeep();
    deep_before = CountPlanted();
    PlantDeep();
    ScrubStack();
    deep_after = CountPlanted();
  });
  t.join();
  CHECK(near_before > kPlant / 2);
  CHECK(near_after <= 16);
  CHECK(deep_before > kPlant / 2);
  CHECK(deep_after == 0);
}

#if defined(__x86_64__)
// xmm0..xmm15 as they are right after ScrubStack returns (nothing runs in between that uses
// them: the store is the next thing after the call).
[[gnu::noinline]] void ScrubAndCaptureVectorRegisters(unsigned char (*out)[16 * 16]) {
  ScrubStack();
  __asm__ __volatile__(
      "movdqu %%xmm0, 0(%0)\n\tmovdqu %%xmm1, 16(%0)\n\tmovdqu %%xmm2, 32(%0)\n\t"
      "movdqu %%xmm3, 48(%0)\n\tmovdqu %%xmm4, 64(%0)\n\tmovdqu %%xmm5, 80(%0)\n\t"
      "movdqu %%xmm6, 96(%0)\n\tmovdqu %%xmm7, 112(%0)\n\tmovdqu %%xmm8, 128(%0)\n\t"
      "movdqu %%xmm9, 144(%0)\n\tmovdqu %%xmm10, 160(%0)\n\tmovdqu %%xmm11, 176(%0)\n\t"
      "movdqu %%xmm12, 192(%0)\n\tmovdqu %%xmm13, 208(%0)\n\tmovdqu %%xmm14, 224(%0)\n\t"
      "movdqu %%xmm15, 240(%0)"
      :
      : "r"(*out)
      : "memory");
}

// The page-wise scan reads the dead frame into registers (SSE2: whole 16-byte blocks into
// xmm registers, which every function may clobber, so none restores them). What stays there
// after ScrubStack is written back to the stack by whatever spills vector registers next: under
// TSan its trace-switch thunk (all 16 of them, 256 bytes below sp, inside the just-wiped area:
// the 32 bytes that failed the worker-thread case above); in any build a lazy PLT binding, a
// signal frame, a varargs call. ScrubStack must leave none of the frame in them.
TEST_CASE("ScrubStack leaves none of the scanned frame in vector registers",
          "[wiping_allocator]") {
  unsigned char regs[16 * 16];
  std::memset(regs, 0x5A, sizeof(regs));
  std::thread t([&] {  // a worker thread: the page-wise path
    PlantOnStack();
    // Whatever the plant's memset left in vector registers is not the scan's doing (the same
    // clear ScrubStack ends with: if it missed a register, the check below sees the pattern).
    hardening::ClearScanRegisters();
    ScrubAndCaptureVectorRegisters(&regs);
  });
  t.join();
  size_t pattern = 0, stale = 0;
  for (unsigned char b : regs) {
    pattern += b == 0xA5 ? 1 : 0;
    stale += b == 0x5A ? 1 : 0;
  }
  CHECK(stale < 16);  // control: the registers were captured
  CHECK(pattern == 0);
}
#endif

#if !defined(__SANITIZE_THREAD__)
// Not under TSan: its runtime touches a new thread's stack itself (784 KiB resident here before
// the thread's function runs), so the count says nothing about the scrub there.

// Resident KiB of the mapping that contains `addr`, from /proc/self/smaps.
size_t RssKibOfMapping(uintptr_t addr) {
  std::ifstream f("/proc/self/smaps");
  std::string line;
  bool in = false;
  while (std::getline(f, line)) {
    uintptr_t lo = 0, hi = 0;
    // A mapping's header line ("lo-hi perms ..."); field lines ("Rss:   12 kB") do not parse so.
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2) {
      in = addr >= lo && addr < hi;
      continue;
    }
    if (in && line.rfind("Rss:", 0) == 0) return std::stoul(line.substr(4));
  }
  return SIZE_MAX;
}

struct FreshStackResult {
  uintptr_t stack = 0;
  size_t rss_kib = 0;
};

// A thread on a stack of its own (fresh pages, never touched) that makes a shallow call and
// scrubs: the pages the scrub found already zero must not have become resident.
void* ShallowCallAndScrub(void* arg) {
  auto* r = static_cast<FreshStackResult*>(arg);
  PlantOnStack();  // a shallow "call" (4 KiB)
  ScrubStack();
  r->rss_kib = RssKibOfMapping(r->stack);
  return nullptr;
}

TEST_CASE("ScrubStack does not make untouched stack pages resident", "[wiping_allocator]") {
  constexpr size_t kStack = 1024 * 1024;
  void* stack = mmap(nullptr, kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  REQUIRE(stack != MAP_FAILED);
  FreshStackResult r;
  r.stack = reinterpret_cast<uintptr_t>(stack);
  pthread_attr_t attr;
  REQUIRE(pthread_attr_init(&attr) == 0);
  REQUIRE(pthread_attr_setstack(&attr, stack, kStack) == 0);
  pthread_t th;
  REQUIRE(pthread_create(&th, &attr, &ShallowCallAndScrub, &r) == 0);
  REQUIRE(pthread_join(th, nullptr) == 0);
  pthread_attr_destroy(&attr);
  munmap(stack, kStack);
  // The thread's start-up, the 4 KiB plant, the scrub's own frames and smaps reading: well
  // under the 64 KiB area that a cleanse of every byte would have made resident (~72 KiB).
  CHECK(r.rss_kib < 40);
}
#endif  // !__SANITIZE_THREAD__
#endif

TEST_CASE("WipingString behaves as a string; ScrubStack returns", "[wiping_allocator]") {
  WipingString s = "plaintext";
  s += std::string(100, 'z');
  CHECK(s.size() == 109);
  CHECK(s.substr(0, 9) == "plaintext");
  ScrubStack(32 * 1024);
  ScrubStack();
}

}  // namespace
}  // namespace trousseau

namespace trousseau {
TEST_CASE("TrimPool unmaps pooled pages beyond what it is told to keep", "[secret_buffer]") {
  SecretBuffer::TrimPool(0);
  REQUIRE(SecretBuffer::PooledPages() == 0);
  std::vector<const uint8_t*> where;
  {
    std::vector<SecretBuffer> held;
    for (int i = 0; i < 10; ++i) {
      held.push_back(SecretBuffer::CopyOf("secret"));
      where.push_back(held.back().data());
    }
  }
  CHECK(SecretBuffer::PooledPages() == 10);  // all single pages went back to the pool
  CHECK(SecretBuffer::TrimPool(16) == 0);    // fewer than `keep`: nothing to do
  CHECK(SecretBuffer::PooledPages() == 10);
  CHECK(SecretBuffer::TrimPool(4) == 6);
  CHECK(SecretBuffer::PooledPages() == 4);
  // The pages kept still serve, clean; the unmapped ones are gone from the address space.
  SecretBuffer again(1);
  CHECK(again.size() == 0);
  CHECK(SecretBuffer::PooledPages() == 3);
  std::vector<std::pair<uintptr_t, uintptr_t>> ranges;
  {
    std::ifstream maps("/proc/self/maps");
    std::string line;
    while (std::getline(maps, line)) {
      const auto dash = line.find('-');
      const auto space = line.find(' ');
      ranges.emplace_back(std::stoull(line.substr(0, dash), nullptr, 16),
                          std::stoull(line.substr(dash + 1, space - dash - 1), nullptr, 16));
    }
  }
  REQUIRE(!ranges.empty());
  size_t mapped = 0;
  for (const uint8_t* p : where) {
    const auto addr = reinterpret_cast<uintptr_t>(p);
    for (const auto& [lo, hi] : ranges) {
      if (addr >= lo && addr < hi) {
        ++mapped;
        break;
      }
    }
  }
  CHECK(mapped <= 5);  // the 4 kept (one now in `again`), plus any page a later mmap reused
  CHECK(SecretBuffer::TrimPool(0) == 3);
}
}  // namespace trousseau
