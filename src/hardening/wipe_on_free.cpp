#include "hardening/wipe_on_free.h"

#include <malloc.h>
#include <string.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>

extern "C" {
void* __libc_malloc(size_t size);
void __libc_free(void* ptr);
void* __libc_realloc(void* ptr, size_t size);
}

namespace {
std::atomic<bool> g_wipe{true};

inline void Wipe(void* p) {
  if (p != nullptr && g_wipe.load(std::memory_order_relaxed)) {
    explicit_bzero(p, malloc_usable_size(p));
  }
}
}  // namespace

namespace trousseau::hardening {
void SetWipeFreedMemory(bool on) { g_wipe.store(on); }
bool WipeFreedMemoryAvailable() { return true; }
}  // namespace trousseau::hardening

extern "C" {

void free(void* ptr) {
  Wipe(ptr);
  __libc_free(ptr);
}

// realloc may move the block; libc would release the old one internally without wiping it,
// so a move is done here: allocate, copy, wipe, free.
void* realloc(void* ptr, size_t size) {
  if (!g_wipe.load(std::memory_order_relaxed)) return __libc_realloc(ptr, size);
  if (ptr == nullptr) return __libc_malloc(size);
  if (size == 0) {
    free(ptr);
    return nullptr;
  }
  const size_t old = malloc_usable_size(ptr);
  if (size <= old) return ptr;  // fits in place; glibc would keep it too
  void* fresh = __libc_malloc(size);
  if (fresh == nullptr) return nullptr;  // errno is ENOMEM; the old block is untouched
  memcpy(fresh, ptr, old);
  free(ptr);
  return fresh;
}

void* reallocarray(void* ptr, size_t nmemb, size_t size) {
  size_t total = 0;
  if (__builtin_mul_overflow(nmemb, size, &total)) {
    errno = ENOMEM;
    return nullptr;
  }
  return realloc(ptr, total);
}

}  // extern "C"
