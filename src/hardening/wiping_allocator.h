// An allocator that wipes memory before giving it back, for containers that briefly hold
// secret-derived text inside a library we call (nlohmann::json's strings, objects and arrays).
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "hardening/secret_buffer.h"

namespace trousseau {

template <class T>
struct WipingAllocator {
  using value_type = T;
  WipingAllocator() noexcept = default;
  template <class U>
  WipingAllocator(const WipingAllocator<U>& /*other*/) noexcept {}  // NOLINT: rebind

  T* allocate(std::size_t n) { return std::allocator<T>{}.allocate(n); }
  void deallocate(T* p, std::size_t n) noexcept {
    SecureWipe(p, n * sizeof(T));
    std::allocator<T>{}.deallocate(p, n);
  }
  template <class U>
  bool operator==(const WipingAllocator<U>& /*other*/) const noexcept { return true; }
  template <class U>
  bool operator!=(const WipingAllocator<U>& /*other*/) const noexcept { return false; }
};

using WipingString = std::basic_string<char, std::char_traits<char>, WipingAllocator<char>>;

// Scrubs `bytes` of the calling thread's stack below the current frame, where dead frames of
// encoders, parsers and TLS code may have left secret-derived bytes. Called after each request.
void ScrubStack(std::size_t bytes = 64 * 1024);

}  // namespace trousseau
