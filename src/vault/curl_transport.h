// HttpTransport over libcurl with OpenSSL: HTTPS only, TLS >= 1.2, trust only the configured CA,
// optional client identity and SPKI pins, no automatic redirects, no proxies, capped responses,
// keep-alive reuse through a pool of easy handles, failover across the configured addresses.
#pragma once

#include <atomic>
#include <memory>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "vault/http_transport.h"
#include "hardening/secret_file.h"
#include "vault/tls_material.h"

namespace trousseau::vault {

class CurlTransport final : public HttpTransport {
 public:
  // Call once, before any thread starts (libcurl's global init is not thread-safe).
  static absl::Status GlobalInit();

  static absl::StatusOr<std::unique_ptr<CurlTransport>> Create(
      const config::VaultConfig& vault, std::shared_ptr<const TlsMaterial> tls);
  ~CurlTransport() override;

  absl::StatusOr<HttpResponse> Send(const HttpRequest& request) override;
  std::string CurrentNode() const override;

  // libcurl's version line, for `trousseau version`.
  static std::string LibraryVersion();
  // What the linked libcurl can do (curl_version_info), for `trousseau version`: its protocols
  // ("http https" for the HTTPS-only build of scripts/build-curl), its feature names and how it
  // was linked ("static" or "shared"), so an operator can see which build runs.
  static std::string LibraryProtocols();
  static std::string LibraryFeatures();
  static const char* LibraryLinkage();

  // Requests at Vault at once, at most; more wait for a slot (see Acquire below).
  static constexpr size_t kMaxInFlight = 32;
  // Slots taken now (for tests and diagnostics).
  size_t RequestsInFlight();

  // After a burst, idle kept handles beyond kKeepIdleHandles are destroyed once no request has
  // started for kQuietBeforeTrim: each holds a 16 KiB receive buffer and its own state (~0.6 MiB
  // for 32, scattered over the heap). Connections live in the share and stay. Returns how many
  // were destroyed; `now` is a parameter for tests. TrimAllIdleHandles does it for every
  // CurlTransport alive; main()'s 1 s tick calls it (docs/performance.md, change 16).
  static constexpr size_t kKeepIdleHandles = 4;
  static constexpr std::chrono::seconds kQuietBeforeTrim{1};
  size_t TrimIdleHandles(SteadyTime now);
  static size_t TrimAllIdleHandles();
  // Idle handles kept now (for tests).
  size_t PooledHandles();

 private:
  struct Handle;
  CurlTransport(const config::VaultConfig& vault, std::shared_ptr<const TlsMaterial> tls);

  // Easy handles are kept for reuse (at most kMaxInFlight, all idle ones kept): a fresh one per
  // request cost an internal multi handle, a socketpair, a 16 KiB receive buffer and their frees
  // every call. The receive buffer of a kept handle would hold the last answer, so the write
  // callback wipes every body byte in it right after copying it into the response's SecretBuffer
  // (docs/performance.md, SECURITY.md). Connections, DNS and TLS sessions live in the share.
  //
  // At most kMaxInFlight requests are at Vault at once; more wait in FIFO order for a free slot,
  // never past their deadline (less kDeadlineMargin, so the caller gets our error). Unbounded, a
  // c=256 load opened a connection per concurrent call and the connection cache (which keeps at
  // most kMaxIdleConnections) closed the excess after each: thousands of mutual-TLS handshakes
  // per run. Bounded, the connections in use never outnumber the cache, so every one is reused;
  // and identical Decrypts that arrive while their leader waits here join it in the coalescer.
  class Lease;
  struct Waiter;
  // A handle (its slot counted in in_flight_), or nullptr with *why set once `until` passed.
  Handle* Acquire(SteadyTime until, absl::Status* why);
  void Return(Handle* h);
  std::mutex pool_mu_;
  std::vector<Handle*> pool_;     // idle handles, at most kMaxInFlight
  size_t in_flight_ = 0;          // slots taken, at most kMaxInFlight
  SteadyTime last_acquire_{};     // when a request last asked for a slot
  std::deque<Waiter*> waiters_;   // requests waiting for a slot, oldest first
  // Bounded retries: passes over every address, with jittered exponential pauses between passes
  // (capped at 1 s), until the request's deadline is near. kMaxPasses only bounds the loop.
  static constexpr int kMaxPasses = 64;
  static constexpr std::chrono::milliseconds kDeadlineMargin{100};
  static constexpr std::chrono::milliseconds kBackoffBase{100};
  static constexpr std::chrono::milliseconds kBackoffCap{1000};
  static std::chrono::milliseconds Backoff(int pass);
  // One pass over the addresses, starting at the preferred one. Returns an answer to hand to the
  // caller, or nothing (with *last set; *give_up when another pass cannot help).
  std::optional<HttpResponse> TryEachNode(const HttpRequest& request, absl::Status* last,
                                          std::optional<HttpResponse>* unhealthy, bool* give_up);
  // One attempt against one node. `retryable` tells the caller another node may do better.
  absl::StatusOr<HttpResponse> SendOnce(Handle& h, const std::string& node,
                                        const HttpRequest& request, bool* retryable);
  bool IsConfiguredNode(const std::string& origin) const;

  config::VaultConfig cfg_;
  // TLS material: replaced when the CA, certificate or key file changes (checked at most every
  // kTlsCheckPeriod, on the request path). New connections use the new material; a kept-alive
  // connection finishes its life with the old one.
  static constexpr std::chrono::seconds kTlsCheckPeriod{10};
  std::shared_ptr<const TlsMaterial> CurrentTls();
  void MaybeReloadTls();
  std::mutex tls_mu_;
  std::shared_ptr<const TlsMaterial> tls_;
  std::vector<FileIdentity> tls_files_;
  SteadyTime tls_checked_{};
  std::string pins_;  // "sha256//a;sha256//b" or empty
  struct Share;
  std::unique_ptr<Share> share_;
  std::atomic<size_t> preferred_{0};
};

}  // namespace trousseau::vault
