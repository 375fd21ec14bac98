// FakeTokenSource: hands out a test token, counts Invalidate calls, and can rotate.
//
// On Invalidate(current) it moves to the next queued token (QueueNext), if any, the way a token
// file source re-reads a rewritten file or a login method logs in again.
#pragma once

#include <deque>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "vault/token_source.h"

namespace trousseau::fakes {

class FakeTokenSource final : public vault::TokenSource {
 public:
  explicit FakeTokenSource(std::string token = "s.fake-token") { Rotate(std::move(token)); }

  absl::StatusOr<std::shared_ptr<const SecretBuffer>> Token(Deadline /*deadline*/) override {
    std::lock_guard<std::mutex> g(mu_);
    ++token_calls_;
    if (!error_.ok()) return error_;
    return current_;
  }

  void Invalidate(const std::shared_ptr<const SecretBuffer>& token) override {
    std::lock_guard<std::mutex> g(mu_);
    ++invalidations_;
    if (token == current_ && !next_.empty()) {
      current_ = std::make_shared<const SecretBuffer>(SecretBuffer::CopyOf(next_.front()));
      next_.pop_front();
    }
  }

  std::string Describe() const override { return "fake token source"; }

  // Replaces the current token now.
  void Rotate(std::string token) {
    std::lock_guard<std::mutex> g(mu_);
    current_ = std::make_shared<const SecretBuffer>(SecretBuffer::CopyOf(token));
  }

  // The token that replaces the current one at the next Invalidate(current).
  void QueueNext(std::string token) {
    std::lock_guard<std::mutex> g(mu_);
    next_.push_back(std::move(token));
  }

  // Token() fails with `error` until it is set back to OK.
  void FailWith(absl::Status error) {
    std::lock_guard<std::mutex> g(mu_);
    error_ = std::move(error);
  }

  std::string current() const {
    std::lock_guard<std::mutex> g(mu_);
    return std::string(current_->view());
  }
  int invalidations() const {
    std::lock_guard<std::mutex> g(mu_);
    return invalidations_;
  }
  int token_calls() const {
    std::lock_guard<std::mutex> g(mu_);
    return token_calls_;
  }

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const SecretBuffer> current_;
  std::deque<std::string> next_;
  absl::Status error_;
  int invalidations_ = 0;
  int token_calls_ = 0;
};

}  // namespace trousseau::fakes
