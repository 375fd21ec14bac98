// FakeTransitServer: an HttpTransport that answers Transit encrypt/decrypt (single and
// batch_input) by computing the answer, so tests can check that every caller got its own.
//
//   ciphertext = "vault:v<version>:" + base64(12 zero bytes + plaintext + 16 zero bytes)
//
// - a plaintext or ciphertext containing "bad" fails that item (HTTP 400, per item in a batch);
// - a ciphertext of a version below min_decryption_version fails "too old";
// - Hold(n): the next n requests block in Send until Release() (to line callers up behind one
//   call in flight); WaitForHeld(k) waits until k requests are parked;
// - FailNext(status, ...) answers the next matching requests with a whole-call error;
// - SetDown(status): every request fails with that transport error until SetDown(OkStatus());
// - GET .../keys/<key> answers latest_version, key_type and created[version];
// - key_tag: ciphertexts carry it and decrypt only where it matches ("message authentication
//   failed" elsewhere), as two clusters' keys would; "" (default) accepts any.
// Records every request (path, item count, key_version per item, deadline). Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "common/base64.h"
#include "vault/http_transport.h"

namespace trousseau::fakes {

struct TransitRequest {
  std::string path;
  bool batch = false;
  size_t items = 0;
  std::vector<int64_t> key_versions;      // per item (0: none sent)
  std::vector<std::string> associated;    // per item, base64 as sent ("" if none)
  Deadline deadline;
  std::string body;
};

class FakeTransitServer final : public vault::HttpTransport {
 public:
  int64_t latest_version = 1;
  int64_t min_decryption_version = 1;
  bool ignore_key_version = false;  // answer in latest_version whatever was asked
  std::string key_type = "aes256-gcm96";
  std::string key_tag;               // see above
  std::map<int64_t, std::string> created{{1, "1700000000"}};

  void SetDown(absl::Status st) {
    std::lock_guard<std::mutex> g(mu_);
    down_ = std::move(st);
  }

  static std::string Ct(int64_t version, std::string_view plaintext) {
    std::string sealed(12, '\0');
    sealed += plaintext;
    sealed += std::string(16, '\0');
    return "vault:v" + std::to_string(version) + ":" + base64::Encode(sealed);
  }

  void Hold(int n) {
    std::lock_guard<std::mutex> g(mu_);
    hold_ += n;
  }
  void Release() {
    std::lock_guard<std::mutex> g(mu_);
    released_ = true;
    cv_.notify_all();
  }
  bool WaitForHeld(int k, std::chrono::milliseconds bound = std::chrono::seconds(20)) {
    std::unique_lock<std::mutex> g(mu_);
    return cv_.wait_for(g, bound, [&] { return held_ >= k; });
  }
  bool WaitForRequests(size_t k, std::chrono::milliseconds bound = std::chrono::seconds(20)) {
    std::unique_lock<std::mutex> g(mu_);
    return cv_.wait_for(g, bound, [&] { return requests_.size() >= k; });
  }
  // The next `n` requests whose path contains `path_part` (and are batches, if `batch_only`)
  // fail as a whole: a transport error when `http_status` is 0, else that HTTP status.
  void FailNext(int n, absl::Status error, long http_status = 0, std::string path_part = "",
                bool batch_only = false, std::string body = R"({"errors":["scripted failure"]})") {
    std::lock_guard<std::mutex> g(mu_);
    for (int i = 0; i < n; ++i) failures_.push_back({error, http_status, path_part, batch_only, body});
  }

  std::vector<TransitRequest> requests() const {
    std::lock_guard<std::mutex> g(mu_);
    return requests_;
  }
  size_t count() const {
    std::lock_guard<std::mutex> g(mu_);
    return requests_.size();
  }

  std::string CurrentNode() const override { return "https://vault-a.test:8200"; }

  absl::StatusOr<vault::HttpResponse> Send(const vault::HttpRequest& request) override {
    using nlohmann::json;
    json in = request.body ? json::parse(request.body->view(), nullptr, false) : json();
    TransitRequest rec;
    rec.path = request.path;
    rec.deadline = request.deadline;
    rec.body = request.body ? std::string(request.body->view()) : "";
    rec.batch = in.is_object() && in.contains("batch_input");
    std::vector<json> items;
    if (rec.batch) {
      for (const auto& it : in["batch_input"]) items.push_back(it);
    } else if (in.is_object()) {
      items.push_back(in);
    }
    rec.items = items.size();
    for (const auto& it : items) {
      rec.key_versions.push_back(it.value("key_version", int64_t{0}));
      rec.associated.push_back(it.value("associated_data", std::string()));
    }
    std::unique_lock<std::mutex> g(mu_);
    requests_.push_back(rec);
    cv_.notify_all();
    if (!down_.ok()) return down_;
    if (request.method == vault::HttpRequest::Method::kGet &&
        request.path.find("/keys/") != std::string::npos) {
      json keys = json::object();
      for (const auto& [v, t] : created) keys[std::to_string(v)] = std::stoll(t);
      return Answer(200, json{{"data", {{"latest_version", latest_version},
                                        {"min_decryption_version", min_decryption_version},
                                        {"type", key_type},
                                        {"keys", keys}}}});
    }
    if (hold_ > 0) {
      --hold_;
      ++held_;
      cv_.notify_all();
      cv_.wait(g, [&] { return released_; });
    }
    for (auto f = failures_.begin(); f != failures_.end(); ++f) {
      if (request.path.find(f->path_part) == std::string::npos || (f->batch_only && !rec.batch)) {
        continue;
      }
      Failure failure = *f;
      failures_.erase(f);
      if (failure.http_status == 0) return failure.error;
      return Answer(failure.http_status, json::parse(failure.body));
    }
    const bool encrypt = request.path.find("/encrypt/") != std::string::npos;
    json results = json::array();
    bool any_failed = false;
    for (const auto& it : items) {
      json r = encrypt ? EncryptOne(it) : DecryptOne(it);
      if (it.contains("reference")) r["reference"] = it["reference"];
      any_failed = any_failed || r.contains("error");
      results.push_back(r);
    }
    if (!rec.batch) {
      if (any_failed) return Answer(400, json{{"errors", {results[0]["error"]}}});
      return Answer(200, json{{"request_id", "req-1"}, {"data", results[0]}});
    }
    return Answer(any_failed ? 400 : 200,
                  json{{"request_id", "req-batch"}, {"data", {{"batch_results", results}}}});
  }

 private:
  struct Failure {
    absl::Status error;
    long http_status;
    std::string path_part;
    bool batch_only;
    std::string body;
  };

  nlohmann::json EncryptOne(const nlohmann::json& it) const {
    const std::string pt = Unb64(it.value("plaintext", std::string()));
    if (pt.find("bad") != std::string::npos) return {{"error", "illegal plaintext"}};
    int64_t v = it.value("key_version", int64_t{0});
    if (v == 0 || ignore_key_version) v = latest_version;
    if (v > latest_version) {
      return {{"error", "requested version for encryption is higher than the latest key version"}};
    }
    return {{"ciphertext", Ct(v, key_tag + pt)}, {"key_version", v}};
  }

  nlohmann::json DecryptOne(const nlohmann::json& it) const {
    const std::string ct = it.value("ciphertext", std::string());
    if (ct.find("bad") != std::string::npos) return {{"error", "invalid ciphertext: no prefix"}};
    const size_t colon = ct.find(':', 7);
    const int64_t v = std::stoll(ct.substr(7, colon - 7));
    if (v < min_decryption_version) {
      return {{"error", "ciphertext or signature version is disallowed by policy (too old)"}};
    }
    const std::string sealed = Unb64(ct.substr(colon + 1));
    if (sealed.size() < 28) return {{"error", "cipher: message authentication failed"}};
    std::string pt = sealed.substr(12, sealed.size() - 28);
    if (!key_tag.empty()) {
      if (pt.compare(0, key_tag.size(), key_tag) != 0) {
        return {{"error", "cipher: message authentication failed"}};
      }
      pt = pt.substr(key_tag.size());
    }
    return {{"plaintext", base64::Encode(pt)}};
  }

  static std::string Unb64(const std::string& s) {
    auto d = base64::Decode(s);
    return d.ok() ? *d : std::string();
  }

  static vault::HttpResponse Answer(long status, const nlohmann::json& body) {
    vault::HttpResponse resp;
    resp.status = status;
    resp.body = SecretBuffer::CopyOf(body.dump());
    resp.node = "https://vault-a.test:8200";
    return resp;
  }

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<TransitRequest> requests_;
  std::deque<Failure> failures_;
  absl::Status down_;
  int hold_ = 0;
  int held_ = 0;
  bool released_ = false;
};

}  // namespace trousseau::fakes
