// The HTTP boundary to Vault. The real one is CurlTransport; unit tests use a fake.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "hardening/secret_buffer.h"

namespace trousseau::vault {

struct HttpRequest {
  enum class Method { kGet, kPost };
  Method method = Method::kGet;
  std::string path;                           // "/v1/transit/encrypt/key" (namespace-relative)
  const SecretBuffer* body = nullptr;         // JSON body; may hold secrets
  std::shared_ptr<const SecretBuffer> token;  // X-Vault-Token; null for unauthenticated calls
  Deadline deadline;
};

struct HttpResponse {
  long status = 0;
  SecretBuffer body;  // may hold secrets (decrypt answers, login answers)
  std::string node;   // the address that answered, for logs and the audit trail
  std::string redirect_location;  // Location of a 307 (standby to active), else empty
  std::string date;               // the Date header as sent (clock-skew check in `doctor`), or empty
};

class HttpTransport {
 public:
  virtual ~HttpTransport() = default;
  // A non-OK status means no HTTP answer was had (connect, TLS, timeout, size cap). Any HTTP
  // answer, including 4xx/5xx, is returned as a response for the caller to interpret.
  virtual absl::StatusOr<HttpResponse> Send(const HttpRequest& request) = 0;
  // The node last known to answer, for health output.
  virtual std::string CurrentNode() const = 0;
};

}  // namespace trousseau::vault
