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

absl::StatusOr<TokenInfo> LookupSelf(HttpTransport& http,
                                     const std::shared_ptr<const SecretBuffer>& token,
                                     Deadline deadline) {
  const std::string where = "vault auth/token/lookup-self";
  HttpRequest req;
  req.method = HttpRequest::Method::kGet;
  req.path = "/v1/auth/token/lookup-self";
  req.token = token;
  req.deadline = deadline;
  auto resp = http.Send(req);
  if (!resp.ok()) {
    return absl::Status(resp.status().code(),
                        where + ": " + RedactSecrets(std::string(resp.status().message()),
                                                     {token.get()}));
  }
  if (resp->status != 200) return MapError(*resp, where, token.get());
  // The answer carries the token's id and accessor: parse it as a secret, keep two fields.
  auto data = ObjectAt(resp->body, "data", where);
  resp->body.clear();
  if (!data.ok()) return data.status();
  TokenInfo info;
  auto ttl = data->find("ttl");
  if (ttl == data->end() || !ttl->is_number_integer() || ttl->get<int64_t>() < 0) {
    return absl::InternalError(where + ": malformed answer: no non-negative data.ttl");
  }
  info.ttl = std::chrono::seconds(ttl->get<int64_t>());
  auto r = data->find("renewable");
  if (r != data->end() && r->is_boolean()) info.renewable = r->get<bool>();
  return info;
}

absl::StatusOr<TokenInfo> RenewSelf(HttpTransport& http,
                                    const std::shared_ptr<const SecretBuffer>& token,
                                    std::chrono::seconds increment, Deadline deadline) {
  const std::string where = "vault auth/token/renew-self";
  SecretBuffer body;
  {
    SecretJson j = SecretJson::object();
    j["increment"] = static_cast<int64_t>(increment.count());
    body = DumpSecret(j);
  }
  HttpRequest req;
  req.method = HttpRequest::Method::kPost;
  req.path = "/v1/auth/token/renew-self";
  req.token = token;
  req.body = &body;
  req.deadline = deadline;
  auto resp = http.Send(req);
  if (!resp.ok()) {
    return absl::Status(resp.status().code(),
                        where + ": " + RedactSecrets(std::string(resp.status().message()),
                                                     {token.get()}));
  }
  if (resp->status != 200) return MapError(*resp, where, token.get());
  auto a = ObjectAt(resp->body, "auth", where);
  resp->body.clear();
  if (!a.ok()) return a.status();
  TokenInfo info;
  auto l = a->find("lease_duration");
  if (l == a->end() || !l->is_number_integer() || l->get<int64_t>() < 0) {
    return absl::InternalError(where + ": malformed answer: no non-negative auth.lease_duration");
  }
  info.ttl = std::chrono::seconds(l->get<int64_t>());
  auto r = a->find("renewable");
  if (r != a->end() && r->is_boolean()) info.renewable = r->get<bool>();
  return info;
}

}  // namespace trousseau::vault::auth
