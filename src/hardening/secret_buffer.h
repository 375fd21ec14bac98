// SecretBuffer: the only place a secret (plaintext DEK seed, Vault token, secret_id, private key,
// or anything built from them: base64 text, JSON bodies, HTTP responses) lives in our code.
//
// - move-only: a secret is never copied by accident;
// - page-backed memory from mmap, locked with mlock where RLIMIT_MEMLOCK allows, and marked
//   MADV_DONTDUMP so it never reaches a core file;
// - wiped with OPENSSL_cleanse on clear(), on growth (the old pages) and on destruction.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace trousseau {

class SecretBuffer {
 public:
  SecretBuffer() = default;
  // Empty buffer with room for at least `capacity` bytes.
  explicit SecretBuffer(size_t capacity);
  // Copies `bytes` in. The caller remains responsible for wiping its own copy.
  static SecretBuffer CopyOf(std::string_view bytes);

  SecretBuffer(SecretBuffer&& other) noexcept;
  SecretBuffer& operator=(SecretBuffer&& other) noexcept;
  SecretBuffer(const SecretBuffer&) = delete;
  SecretBuffer& operator=(const SecretBuffer&) = delete;
  ~SecretBuffer();

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  char* chars() { return reinterpret_cast<char*>(data_); }
  const char* chars() const { return reinterpret_cast<const char*>(data_); }
  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }
  bool empty() const { return size_ == 0; }
  std::string_view view() const {
    return {reinterpret_cast<const char*>(data_ ? data_ : reinterpret_cast<const uint8_t*>("")),
            size_};
  }

  // Grows (moving to new pages and wiping the old ones) so that capacity() >= n.
  void reserve(size_t n);
  // Sets the size; new bytes are zero. Shrinking wipes the bytes dropped.
  void resize(size_t n);
  void append(const void* bytes, size_t n);
  void append(std::string_view s) { append(s.data(), s.size()); }
  // Wipes the contents; keeps the pages.
  void clear();

  // A deep copy, explicit so that every copy is visible in review.
  SecretBuffer Clone() const;

  // Constant-time equality of contents.
  bool Equals(std::string_view other) const;

  // Counters for tests and the residue report. LockedBytes counts pages held by live buffers
  // (single wiped pages kept in a reuse pool stay locked but are not counted).
  static size_t LockedBytes();
  static size_t LockFailures();

  // The reuse pool of single wiped pages (at most 256) keeps what a burst needed. TrimPool
  // unmaps the pooled pages beyond `keep` and returns how many it unmapped; the serving loop
  // calls it once a second (kms::TrimHeapIfSlack), so that a burst's pages do not stay resident.
  static size_t TrimPool(size_t keep);
  static size_t PooledPages();

 private:
  void Release();

  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  size_t capacity_ = 0;  // usable bytes; the mapping is capacity_ rounded up to pages
  bool locked_ = false;
};

// Wipes memory the compiler cannot optimise away (OPENSSL_cleanse).
void SecureWipe(void* p, size_t n);

}  // namespace trousseau
