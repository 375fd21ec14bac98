// Helpers for the auth tests: login/lookup/renew answers, and a transport whose calls to one
// path block until the test opens the gate (a slow Vault, without sleeping).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <string>

#include "fakes/fake_http_transport.h"

namespace trousseau::authtest {

using fakes::FakeHttpTransport;
using Method = vault::HttpRequest::Method;

inline std::string LoginJson(const std::string& token, long lease, bool renewable) {
  return R"({"request_id":"r","auth":{"client_token":")" + token +
         R"(","accessor":"acc","policies":["trousseau"],"lease_duration":)" +
         std::to_string(lease) + R"(,"renewable":)" + (renewable ? "true" : "false") + "}}";
}

inline std::string LookupJson(long ttl, bool renewable) {
  return R"({"data":{"id":"ignored","ttl":)" + std::to_string(ttl) + R"(,"renewable":)" +
         (renewable ? "true" : "false") + R"(,"policies":["trousseau"]}})";
}

inline std::string RenewJson(long lease, bool renewable) {
  return R"({"auth":{"client_token":"ignored","lease_duration":)" + std::to_string(lease) +
         R"(,"renewable":)" + (renewable ? "true" : "false") + "}}";
}

// Forwards to a FakeHttpTransport; requests to the gated path wait until Open().
class GatedTransport final : public vault::HttpTransport {
 public:
  explicit GatedTransport(FakeHttpTransport& inner) : inner_(inner) {}

  void Close(std::string path) {
    std::lock_guard<std::mutex> g(mu_);
    gated_ = std::move(path);
    open_ = false;
  }
  void Open() {
    std::lock_guard<std::mutex> g(mu_);
    open_ = true;
    cv_.notify_all();
  }
  // Waits (real time, bounded so a broken test cannot hang) until n requests reached the gate.
  bool WaitBlocked(size_t n, std::chrono::milliseconds bound = std::chrono::seconds(20)) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, bound, [&] { return blocked_ >= n; });
  }

  absl::StatusOr<vault::HttpResponse> Send(const vault::HttpRequest& request) override {
    {
      std::unique_lock<std::mutex> l(mu_);
      if (!gated_.empty() && request.path == gated_) {
        ++blocked_;
        cv_.notify_all();
        cv_.wait(l, [&] { return open_; });
      }
    }
    return inner_.Send(request);
  }
  std::string CurrentNode() const override { return inner_.CurrentNode(); }

 private:
  FakeHttpTransport& inner_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::string gated_;
  bool open_ = true;
  size_t blocked_ = 0;
};

}  // namespace trousseau::authtest
