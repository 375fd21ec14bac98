#include "hardening/secret_buffer.h"
#include "hardening/wiping_allocator.h"
#include "hardening/zero_scan.h"

#include <openssl/crypto.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <new>
#include <vector>

namespace trousseau {
namespace {

std::atomic<size_t> g_locked_bytes{0};
std::atomic<size_t> g_lock_failures{0};

size_t PageSize() {
  static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return page;
}

size_t RoundToPages(size_t n) {
  const size_t page = PageSize();
  return ((n + page - 1) / page) * page;
}

// Single pages, already mapped, locked (if that worked) and marked DONTDUMP, kept for reuse:
// most secrets are tiny, and a request would otherwise pay mmap + madvise x2 + mlock and
// munlock + munmap for each of its few buffers. Pages come back here only after being wiped.
struct Page {
  void* p;
  bool locked;
};
class PagePool {
 public:
  static constexpr size_t kMaxPages = 256;
  bool Take(Page* out) {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.empty()) return false;
    *out = free_.back();
    free_.pop_back();
    return true;
  }
  bool Give(Page page) {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.size() >= kMaxPages) return false;
    free_.push_back(page);
    return true;
  }
  // Unmaps the pooled pages beyond `keep` (already wiped when they were given back).
  size_t Trim(size_t keep) {
    std::vector<Page> extra;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (free_.size() <= keep) return 0;
      extra.assign(free_.begin() + static_cast<std::ptrdiff_t>(keep), free_.end());
      free_.resize(keep);
    }
    const size_t page = PageSize();
    for (const Page& pg : extra) {
      if (pg.locked) munlock(pg.p, page);
      munmap(pg.p, page);
    }
    return extra.size();
  }
  size_t Size() {
    std::lock_guard<std::mutex> lock(mu_);
    return free_.size();
  }

 private:
  std::mutex mu_;
  std::vector<Page> free_;
};
PagePool& Pool() {
  static PagePool* pool = new PagePool();  // never destroyed: buffers may outlive statics
  return *pool;
}

}  // namespace

void SecureWipe(void* p, size_t n) {
  if (p != nullptr && n != 0) OPENSSL_cleanse(p, n);
}

SecretBuffer::SecretBuffer(size_t capacity) { reserve(capacity); }

SecretBuffer SecretBuffer::CopyOf(std::string_view bytes) {
  SecretBuffer b(bytes.size());
  b.append(bytes);
  return b;
}

SecretBuffer::SecretBuffer(SecretBuffer&& other) noexcept
    : data_(other.data_), size_(other.size_), capacity_(other.capacity_), locked_(other.locked_) {
  other.data_ = nullptr;
  other.size_ = other.capacity_ = 0;
  other.locked_ = false;
}

SecretBuffer& SecretBuffer::operator=(SecretBuffer&& other) noexcept {
  if (this != &other) {
    Release();
    data_ = other.data_;
    size_ = other.size_;
    capacity_ = other.capacity_;
    locked_ = other.locked_;
    other.data_ = nullptr;
    other.size_ = other.capacity_ = 0;
    other.locked_ = false;
  }
  return *this;
}

SecretBuffer::~SecretBuffer() { Release(); }

void SecretBuffer::Release() {
  if (data_ == nullptr) return;
  const size_t mapped = RoundToPages(capacity_);
  OPENSSL_cleanse(data_, mapped);
  if (mapped == PageSize() && Pool().Give(Page{data_, locked_})) {
    if (locked_) g_locked_bytes -= mapped;  // counts bytes held by live buffers only
    data_ = nullptr;
    size_ = capacity_ = 0;
    locked_ = false;
    return;
  }
  if (locked_) {
    munlock(data_, mapped);
    g_locked_bytes -= mapped;
  }
  munmap(data_, mapped);
  data_ = nullptr;
  size_ = capacity_ = 0;
  locked_ = false;
}

void SecretBuffer::reserve(size_t n) {
  if (n <= capacity_ && data_ != nullptr) return;
  const size_t mapped = RoundToPages(std::max<size_t>(n, 1));
  Page pooled{};
  void* p = nullptr;
  bool locked = false;
  if (mapped == PageSize() && Pool().Take(&pooled)) {
    p = pooled.p;  // wiped when it was given back; still locked and DONTDUMP
    locked = pooled.locked;
    if (locked) g_locked_bytes += mapped;
  } else {
    p = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    // Keep secrets out of core dumps and (fork is never used, but) out of children.
    madvise(p, mapped, MADV_DONTDUMP);
    madvise(p, mapped, MADV_WIPEONFORK);
    locked = mlock(p, mapped) == 0;
    if (locked) {
      g_locked_bytes += mapped;
    } else {
      ++g_lock_failures;
    }
  }
  auto* fresh = static_cast<uint8_t*>(p);
  if (size_ != 0) std::memcpy(fresh, data_, size_);
  const size_t keep = size_;
  Release();
  data_ = fresh;
  size_ = keep;
  capacity_ = mapped;
  locked_ = locked;
}

void SecretBuffer::resize(size_t n) {
  if (n > capacity_ || data_ == nullptr) reserve(std::max(n, capacity_ * 2));
  if (n > size_) {
    std::memset(data_ + size_, 0, n - size_);
  } else if (n < size_) {
    OPENSSL_cleanse(data_ + n, size_ - n);
  }
  size_ = n;
}

void SecretBuffer::append(const void* bytes, size_t n) {
  if (n == 0) {
    if (data_ == nullptr) reserve(1);
    return;
  }
  if (size_ + n > capacity_ || data_ == nullptr) reserve(std::max(size_ + n, capacity_ * 2));
  std::memcpy(data_ + size_, bytes, n);
  size_ += n;
}

void SecretBuffer::clear() {
  if (data_ != nullptr) OPENSSL_cleanse(data_, capacity_);
  size_ = 0;
}

SecretBuffer SecretBuffer::Clone() const { return CopyOf(view()); }

bool SecretBuffer::Equals(std::string_view other) const {
  if (other.size() != size_) return false;
  if (size_ == 0) return true;
  return CRYPTO_memcmp(data_, other.data(), size_) == 0;
}

size_t SecretBuffer::LockedBytes() { return g_locked_bytes.load(); }
size_t SecretBuffer::TrimPool(size_t keep) { return Pool().Trim(keep); }
size_t SecretBuffer::PooledPages() { return Pool().Size(); }
size_t SecretBuffer::LockFailures() { return g_lock_failures.load(); }

}  // namespace trousseau

namespace trousseau {

// noinline + a volatile-free cleanse of a large local array: the array occupies the stack
// region that callees of the request handler used, and OPENSSL_cleanse cannot be elided.
// The fallback of ScrubStack below (the main thread, a thread without 64 KiB of room left).
__attribute__((noinline)) void ScrubStackImpl(std::size_t bytes) {
  constexpr std::size_t kChunk = 16 * 1024;
  unsigned char area[kChunk];
  OPENSSL_cleanse(area, sizeof(area));
  if (bytes > kChunk) ScrubStackImpl(bytes - kChunk);
  __asm__ __volatile__("" : : "r"(area) : "memory");
}

namespace {

constexpr std::size_t kPagedScrubMax = 64 * 1024;

// One frame of kPagedScrubMax bytes, cleansed page by page and only where a byte is not zero:
// a stack page no call ever reached reads as the kernel's shared zero page and stays so,
// instead of being made resident by the write (each kept sync-server thread held all 64 KiB:
// docs/performance.md, change 16). The end state is the same as a cleanse of all of it: every
// byte of the top `bytes` of the frame is zero. Stack-clash probes are off for this one frame
// because each probe is a write to every page of it (what this avoids); ScrubStack calls it
// only where the thread's stack has the room (RoomForPagedScrub), so the frame cannot reach
// past the guard page.
// GCC only: clang (the fuzz build) has no per-function switch for the probes, so there the frame
// keeps them: the same zeroes, only its pages all become resident.
#if defined(__clang__)
#define TROUSSEAU_PAGED_SCRUB_ATTRS __attribute__((noinline))
#else
#define TROUSSEAU_PAGED_SCRUB_ATTRS __attribute__((noinline, optimize("no-stack-clash-protection")))
#endif
TROUSSEAU_PAGED_SCRUB_ATTRS void PagedScrub(std::size_t bytes) {
  unsigned char area[kPagedScrubMax];
  __asm__ __volatile__("" : : "r"(area) : "memory");
  constexpr uintptr_t kPage = 4096;
  unsigned char* p = area + (kPagedScrubMax - bytes);
  unsigned char* const end = area + kPagedScrubMax;
  while (p < end) {
    auto* next = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(p) | (kPage - 1)) + 1);
    if (next > end) next = end;
    const auto n = static_cast<std::size_t>(next - p);
    if (!hardening::AllZero(p, n)) OPENSSL_cleanse(p, n);
    p = next;
  }
  hardening::ClearScanRegisters();  // the scan's copies of the frame (zero_scan.h)
  __asm__ __volatile__("" : : "r"(area) : "memory");
}

// The main thread's stack bounds come from /proc/self/maps (pthread_getattr_np opens it): not
// looked up; the main thread takes the fallback. Static initialisation runs on the main thread.
const pthread_t g_main_thread = pthread_self();

// The lowest usable address of this thread's stack (above its guard), looked up once per
// thread (pthread_getattr_np: sched_getaffinity, no file); 0 if unknown.
uintptr_t StackLow() {
  thread_local uintptr_t low = [] {
    if (pthread_equal(pthread_self(), g_main_thread)) return uintptr_t{0};
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) != 0) return uintptr_t{0};
    void* addr = nullptr;
    std::size_t size = 0;
    std::size_t guard = 0;
    const bool ok = pthread_attr_getstack(&attr, &addr, &size) == 0 &&
                    pthread_attr_getguardsize(&attr, &guard) == 0;
    pthread_attr_destroy(&attr);
    return ok ? reinterpret_cast<uintptr_t>(addr) + guard : uintptr_t{0};
  }();
  return low;
}

bool RoomForPagedScrub() {
  const uintptr_t low = StackLow();
  const auto here = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
  // The frame, the cleanse's own frame below it and a margin.
  return low != 0 && here > low && here - low > kPagedScrubMax + 16 * 1024;
}

}  // namespace

}  // namespace trousseau

namespace trousseau {
void ScrubStack(std::size_t bytes) {
  if (bytes <= kPagedScrubMax && RoomForPagedScrub()) {
    PagedScrub(bytes);
  } else {
    ScrubStackImpl(bytes);
  }
}
}  // namespace trousseau
