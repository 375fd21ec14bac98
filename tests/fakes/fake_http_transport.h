// FakeHttpTransport: scripted answers per method + path, and a record of every request.
//
//   FakeHttpTransport http;
//   http.Respond(Method::kPost, "/v1/transit/encrypt/k", 200, R"({"data":{...}})");
//   http.Fail(Method::kGet, "/v1/transit/keys/k", absl::UnavailableError("..."));
//
// Each method + path has a queue of answers; they are used in order and the last one repeats.
// A request nobody scripted gets an INTERNAL error naming it, so a missing script is obvious.
// Thread-safe: the key service's background refresher calls it from its own thread.
#pragma once

#include <cstddef>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "vault/http_transport.h"

namespace trousseau::fakes {

using Method = vault::HttpRequest::Method;

inline const char* MethodName(Method m) { return m == Method::kGet ? "GET" : "POST"; }

struct RecordedRequest {
  Method method = Method::kGet;
  std::string path;
  bool had_token = false;
  std::string token;  // test tokens only; never a real secret
  bool had_body = false;
  std::string body;
  Deadline deadline;
};

struct ScriptedResponse {
  absl::Status error;  // non-OK: Send returns it as a transport failure (no HTTP answer)
  long status = 200;
  std::string body;
  std::string node = "https://vault-a.test:8200";
  std::string redirect_location;
  std::string date;  // the Date header
};

class FakeHttpTransport final : public vault::HttpTransport {
 public:
  void Push(Method method, const std::string& path, ScriptedResponse response) {
    std::lock_guard<std::mutex> g(mu_);
    script_[{method, path}].push_back(std::move(response));
  }

  // Replaces the queue for method + path with one answer that repeats.
  void Respond(Method method, const std::string& path, long status, std::string body,
               std::string node = "https://vault-a.test:8200") {
    ScriptedResponse r;
    r.status = status;
    r.body = std::move(body);
    r.node = std::move(node);
    Replace(method, path, std::move(r));
  }

  // Queues one more answer after those already scripted.
  void Then(Method method, const std::string& path, long status, std::string body) {
    ScriptedResponse r;
    r.status = status;
    r.body = std::move(body);
    Push(method, path, std::move(r));
  }

  void Fail(Method method, const std::string& path, absl::Status error) {
    ScriptedResponse r;
    r.error = std::move(error);
    Replace(method, path, std::move(r));
  }

  absl::StatusOr<vault::HttpResponse> Send(const vault::HttpRequest& request) override {
    std::lock_guard<std::mutex> g(mu_);
    RecordedRequest rec;
    rec.method = request.method;
    rec.path = request.path;
    rec.had_token = request.token != nullptr;
    if (request.token) rec.token = std::string(request.token->view());
    rec.had_body = request.body != nullptr;
    if (request.body) rec.body = std::string(request.body->view());
    rec.deadline = request.deadline;
    requests_.push_back(std::move(rec));

    auto it = script_.find({request.method, request.path});
    if (it == script_.end() || it->second.empty()) {
      return absl::InternalError(std::string("FakeHttpTransport: no scripted answer for ") +
                                 MethodName(request.method) + " " + request.path);
    }
    const ScriptedResponse& r = it->second.front();
    absl::StatusOr<vault::HttpResponse> out;
    if (!r.error.ok()) {
      out = r.error;
    } else {
      vault::HttpResponse resp;
      resp.status = r.status;
      resp.body = SecretBuffer::CopyOf(r.body);
      resp.node = r.node;
      resp.redirect_location = r.redirect_location;
      resp.date = r.date;
      last_node_ = r.node;
      out = std::move(resp);
    }
    if (it->second.size() > 1) it->second.pop_front();
    return out;
  }

  std::string CurrentNode() const override {
    std::lock_guard<std::mutex> g(mu_);
    return last_node_;
  }

  std::vector<RecordedRequest> requests() const {
    std::lock_guard<std::mutex> g(mu_);
    return requests_;
  }

  size_t count() const {
    std::lock_guard<std::mutex> g(mu_);
    return requests_.size();
  }

  size_t count(Method method, const std::string& path) const {
    std::lock_guard<std::mutex> g(mu_);
    size_t n = 0;
    for (const auto& r : requests_) n += (r.method == method && r.path == path) ? 1 : 0;
    return n;
  }

  RecordedRequest last() const {
    std::lock_guard<std::mutex> g(mu_);
    return requests_.empty() ? RecordedRequest{} : requests_.back();
  }

  void ClearRequests() {
    std::lock_guard<std::mutex> g(mu_);
    requests_.clear();
  }

 private:
  void Replace(Method method, const std::string& path, ScriptedResponse r) {
    std::lock_guard<std::mutex> g(mu_);
    auto& q = script_[{method, path}];
    q.clear();
    q.push_back(std::move(r));
  }

  mutable std::mutex mu_;
  std::map<std::pair<Method, std::string>, std::deque<ScriptedResponse>> script_;
  std::vector<RecordedRequest> requests_;
  std::string last_node_ = "https://vault-a.test:8200";
};

}  // namespace trousseau::fakes
