#include "vault/auth/token_calls.h"

#include <string>

#include "vault/auth/authenticator.h"
#include "vault/secret_json.h"

namespace trousseau::vault::auth {
namespace {

absl::Status MapError(const HttpResponse& resp, const std::string& where,
                      const SecretBuffer* token) {
  const std::string errors = RedactSecrets(VaultErrors(resp.body), {token});
  const std::string said = errors.empty() ? "" : " (vault said: " + errors + ")";
  const std::string code = "HTTP " + std::to_string(resp.status) + " from " + resp.node;
  if (resp.status == 403) {
    return absl::PermissionDeniedError(where + ": permission denied (" + code +
                                       "): the token is revoked or expired, or the policy does "
                                       "not grant this path" + said);
  }
  if (resp.status == 429 || resp.status == 412 || resp.status >= 500) {
    return absl::UnavailableError(where + ": Vault unavailable (" + code + ")" + said);
  }
  return absl::InternalError(where + ": unexpected " + code + said);
}

absl::StatusOr<SecretJson> ObjectAt(const SecretBuffer& body, const char* name,
                                    const std::string& where) {
  auto j = ParseSecret(body);
  if (!j.ok()) return absl::InternalError(where + ": malformed answer: " + std::string(j.status().message()));
  if (!j->is_object()) return absl::InternalError(where + ": malformed answer: not an object");
  auto it = j->find(name);
  if (it == j->end() || !it->is_object()) {
    return absl::InternalError(where + ": malformed answer: no " + name + " object");
  }
  return std::move(*it);
}

}  // namespace

namespace {

// One token self-service call: send, map errors (never echoing the token), then read the TTL
// field and `renewable` from the answer's `section` object.
absl::StatusOr<TokenInfo> TokenCall(HttpTransport& http,
                                    const std::shared_ptr<const SecretBuffer>& token,
                                    HttpRequest::Method method, const char* path,
                                    const SecretBuffer* body, Deadline deadline,
                                    const char* section, const char* ttl_field) {
  const std::string where = std::string("vault ") + (path + 4);  // "auth/token/..."
  HttpRequest req;
  req.method = method;
  req.path = path;
  req.token = token;
  req.body = body;
  req.deadline = deadline;
  auto resp = http.Send(req);
  if (!resp.ok()) {
    return absl::Status(resp.status().code(),
                        where + ": " + RedactSecrets(std::string(resp.status().message()),
                                                     {token.get()}));
  }
  if (resp->status != 200) return MapError(*resp, where, token.get());
  // Answers carry the token's id or the token itself: parse as a secret, keep two fields.
  auto obj = ObjectAt(resp->body, section, where);
  resp->body.clear();
  if (!obj.ok()) return obj.status();
  TokenInfo info;
  auto ttl = obj->find(ttl_field);
  if (ttl == obj->end() || !ttl->is_number_integer() || ttl->get<int64_t>() < 0) {
    return absl::InternalError(where + ": malformed answer: no non-negative " + section + "." +
                               ttl_field);
  }
  info.ttl = std::chrono::seconds(ttl->get<int64_t>());
  auto r = obj->find("renewable");
  if (r != obj->end() && r->is_boolean()) info.renewable = r->get<bool>();
  auto m = obj->find("explicit_max_ttl");
  if (m != obj->end() && m->is_number_integer() && m->get<int64_t>() > 0) {
    info.explicit_max_ttl = std::chrono::seconds(m->get<int64_t>());
  }
  auto c = obj->find("creation_ttl");
  if (c != obj->end() && c->is_number_integer() && c->get<int64_t>() > 0) {
    info.creation_ttl = std::chrono::seconds(c->get<int64_t>());
  }
  auto e = obj->find("expire_time");
  info.has_expire_time = e != obj->end() && e->is_string() && !e->empty();
  return info;
}

}  // namespace

absl::StatusOr<TokenInfo> LookupSelf(HttpTransport& http,
                                     const std::shared_ptr<const SecretBuffer>& token,
                                     Deadline deadline) {
  return TokenCall(http, token, HttpRequest::Method::kGet, "/v1/auth/token/lookup-self", nullptr,
                   deadline, "data", "ttl");
}

absl::StatusOr<TokenInfo> RenewSelf(HttpTransport& http,
                                    const std::shared_ptr<const SecretBuffer>& token,
                                    std::chrono::seconds increment, Deadline deadline) {
  SecretBuffer body;
  {
    SecretJson j = SecretJson::object();
    j["increment"] = static_cast<int64_t>(increment.count());
    body = DumpSecret(j);
  }
  return TokenCall(http, token, HttpRequest::Method::kPost, "/v1/auth/token/renew-self", &body,
                   deadline, "auth", "lease_duration");
}

}  // namespace trousseau::vault::auth
