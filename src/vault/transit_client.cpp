#include "vault/transit_client.h"

#include <cstring>

#include "common/base64.h"
#include "common/status.h"
#include "vault/ciphertext.h"
#include "vault/secret_json.h"

namespace trousseau::vault {
namespace {

std::string Truncated(std::string_view s, size_t n) {
  return s.size() <= n ? std::string(s) : std::string(s.substr(0, n)) + "...";
}

// Reads a non-negative integer field that Vault may send as a number or a numeric string.
bool ReadInt(const SecretJson& obj, const char* name, int64_t* out) {
  auto it = obj.find(name);
  if (it == obj.end()) return false;
  if (!it->is_number_integer()) return false;
  // A negative value (or an unsigned one past INT64_MAX, which wraps) is refused and leaves
  // `out` as it was: fuzzing found min_decryption_version -1 copied through (tests/fuzz).
  const int64_t v = it->get<int64_t>();
  if (v < 0) return false;
  *out = v;
  return true;
}

// Vault's request_id (a UUID) for the audit trail: kept only if it looks like an identifier.
std::string RequestId(const SecretJson& answer) {
  auto it = answer.find("request_id");
  if (it == answer.end() || !it->is_string()) return "";
  const auto& s = it->get_ref<const WipingString&>();
  if (s.empty() || s.size() > kMaxRequestIdBytes) return "";
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.' || c == ':';
    if (!ok) return "";
  }
  return std::string(s.data(), s.size());
}

// Parses a Transit answer and returns its "data" object, or INTERNAL naming what is missing.
// `request_id`, if given, receives Vault's request_id ("" when absent or odd).
absl::StatusOr<SecretJson> DataObject(const SecretBuffer& body, const std::string& where,
                                      std::string* request_id = nullptr) {
  auto j = ParseSecret(body);
  if (!j.ok()) {
    return absl::InternalError(where + "malformed response: " + std::string(j.status().message()));
  }
  if (!j->is_object() || !j->contains("data") || !(*j)["data"].is_object()) {
    return absl::InternalError(where + "malformed response: no data object");
  }
  if (request_id != nullptr) *request_id = RequestId(*j);
  return std::move((*j)["data"]);
}

// Overwrites every copy of `secret` inside `body` with '*' (in place: no copy of the body is
// made). Vault's error text can echo the request's token (a proxy's or a plugin's error page);
// error messages are built from that text, so the token must be gone before they are.
void ScrubInPlace(SecretBuffer& body, std::string_view secret) {
  if (secret.size() < 4 || body.size() < secret.size()) return;
  std::string_view v = body.view();
  for (size_t at = v.find(secret); at != std::string_view::npos; at = v.find(secret, at + 1)) {
    std::memset(body.data() + at, '*', secret.size());
    v = body.view();
  }
}

}  // namespace

TransitClient::TransitClient(HttpTransport& http, TokenSource& tokens, std::string mount,
                             std::string key)
    : http_(http), tokens_(tokens), mount_(std::move(mount)), key_(std::move(key)) {}

absl::StatusOr<HttpResponse> TransitClient::Call(HttpRequest::Method method,
                                                 const std::string& path,
                                                 const SecretBuffer* body, Deadline deadline) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    ASSIGN_OR_RETURN(auto token, tokens_.Token(deadline));
    HttpRequest req;
    req.method = method;
    req.path = path;
    req.body = body;
    req.token = token;
    req.deadline = deadline;
    ASSIGN_OR_RETURN(HttpResponse resp, http_.Send(req));
    if (resp.status != 200 && token) ScrubInPlace(resp.body, token->view());
    if (resp.status == 403 && attempt == 0) {
      // A bad or expired token: let the source re-read or log in, then try once more.
      tokens_.Invalidate(token);
      continue;
    }
    return resp;
  }
  return absl::InternalError("unreachable");
}

absl::Status TransitClient::MapHttpError(const HttpResponse& resp, std::string_view op) const {
  const std::string errors = VaultErrors(resp.body);
  const std::string where = "vault " + resp.node + ": transit " + std::string(op) + " on " +
                            mount_ + "/" + key_ + ": ";
  const std::string said = errors.empty() ? "" : " (vault said: " + errors + ")";
  const long s = resp.status;
  if (s == 403) {
    return absl::PermissionDeniedError(where + "permission denied: the token is invalid, expired "
                                       "or lacks the policy for this path" + said);
  }
  if (s == 400) {
    if (op == "decrypt") {
      if (errors.find("min_decryption_version") != std::string::npos ||
          errors.find("too old") != std::string::npos ||
          errors.find("disallowed by policy") != std::string::npos) {
        return absl::FailedPreconditionError(
            where + "the ciphertext's key version is below the key's min_decryption_version; "
                    "lower min_decryption_version in Vault to read it, or restore from backup" +
            said);
      }
      return absl::InvalidArgumentError(where + "Vault rejected the ciphertext" + said);
    }
    return absl::InvalidArgumentError(where + "Vault rejected the request" + said);
  }
  if (s == 404) {
    return absl::InternalError(where + "not found: check vault.transit.mount and "
                               "vault.transit.key, and that the key exists" + said);
  }
  if (s == 429) return absl::UnavailableError(where + "rate limited (429)" + said);
  if (s == 503) return absl::UnavailableError(where + "sealed or unavailable (503)" + said);
  if (s == 502) return absl::UnavailableError(where + "upstream error (502)" + said);
  // A proxy or load balancer in front of Vault gave up waiting for it: transient, like 502.
  if (s == 504) return absl::UnavailableError(where + "gateway timeout (504)" + said);
  if (s == 412) return absl::UnavailableError(where + "not yet consistent (412), retry" + said);
  if (s == 307) return absl::UnavailableError(where + "redirect not followed (307)" + said);
  if (s == 500 && errors.find("active cluster node not found") != std::string::npos) {
    return absl::UnavailableError(where + "no active node (cluster election in progress)" + said);
  }
  // A failure inside Vault (storage backend, barrier, a crashed plugin): Vault's own, not ours,
  // and the transport already treats it as transient (next node, retried until the deadline).
  // INTERNAL is kept for answers the plugin cannot use, i.e. for bugs on either side.
  if (s == 500) return absl::UnavailableError(where + "Vault internal error (500)" + said);
  return absl::InternalError(where + "unexpected HTTP " + std::to_string(s) + said);
}

absl::StatusOr<Wrapped> TransitClient::Encrypt(std::string_view plaintext, int64_t key_version,
                                               Deadline deadline, std::string_view associated_data) {
  SecretBuffer b64(base64::EncodedLength(plaintext.size()) + 1);
  b64.resize(base64::EncodedLength(plaintext.size()) + 1);
  base64::EncodeInto(reinterpret_cast<const uint8_t*>(plaintext.data()), plaintext.size(),
                     b64.chars());
  b64.resize(b64.size() - 1);
  SecretBuffer body;
  {
    SecretJson req = SecretJson::object();
    req["plaintext"] = WipingString(b64.chars(), b64.size());
    if (key_version > 0) req["key_version"] = key_version;
    if (!associated_data.empty()) {
      const std::string ad = base64::Encode(associated_data);
      req["associated_data"] = WipingString(ad.data(), ad.size());
    }
    body = DumpSecret(req);
  }
  ASSIGN_OR_RETURN(HttpResponse resp, Call(HttpRequest::Method::kPost,
                                           "/v1/" + mount_ + "/encrypt/" + key_, &body, deadline));
  if (resp.status != 200) return MapHttpError(resp, "encrypt");
  const std::string where = "vault " + resp.node + ": transit encrypt: ";
  std::string request_id;
  ASSIGN_OR_RETURN(const SecretJson data, DataObject(resp.body, where, &request_id));
  auto it = data.find("ciphertext");
  if (it == data.end() || !it->is_string()) {
    return absl::InternalError(where + "malformed response: no data.ciphertext string");
  }
  const auto& ct = it->get_ref<const WipingString&>();
  Wrapped out;
  out.ciphertext.assign(ct.data(), ct.size());
  auto version = ParseCiphertextVersion(out.ciphertext, kMaxV1CiphertextBytes);
  if (!version.ok()) {
    return absl::InternalError(where + "Vault returned an unusable ciphertext: " +
                               std::string(version.status().message()));
  }
  out.version = *version;
  out.node = resp.node;
  out.request_id = std::move(request_id);
  return out;
}

absl::StatusOr<Unwrapped> TransitClient::Decrypt(std::string_view ciphertext, Deadline deadline,
                                                 std::string_view associated_data) {
  RETURN_IF_ERROR(ParseCiphertextVersion(ciphertext, kMaxV1CiphertextBytes).status());
  SecretBuffer body;
  {
    SecretJson req = SecretJson::object();
    req["ciphertext"] = WipingString(ciphertext.data(), ciphertext.size());
    if (!associated_data.empty()) {
      const std::string ad = base64::Encode(associated_data);
      req["associated_data"] = WipingString(ad.data(), ad.size());
    }
    body = DumpSecret(req);
  }
  ASSIGN_OR_RETURN(HttpResponse resp, Call(HttpRequest::Method::kPost,
                                           "/v1/" + mount_ + "/decrypt/" + key_, &body, deadline));
  if (resp.status != 200) return MapHttpError(resp, "decrypt");
  const std::string where = "vault " + resp.node + ": transit decrypt: ";
  std::string request_id;
  auto parsed = DataObject(resp.body, where, &request_id);
  resp.body.clear();
  if (!parsed.ok()) return parsed.status();
  const SecretJson& data = *parsed;
  auto it = data.find("plaintext");
  if (it == data.end() || !it->is_string()) {
    return absl::InternalError(where + "malformed response: no data.plaintext string");
  }
  const auto& b64 = it->get_ref<const WipingString&>();
  Unwrapped out;
  out.plaintext.resize(base64::MaxDecodedLength(b64.size()));
  auto n = base64::DecodeInto(std::string_view(b64.data(), b64.size()), out.plaintext.data());
  if (!n.ok()) return absl::InternalError(where + "malformed response: data.plaintext is not base64");
  out.plaintext.resize(*n);
  out.node = resp.node;
  out.request_id = std::move(request_id);
  return out;
}

absl::StatusOr<KeyInfo> TransitClient::ReadKey(Deadline deadline) {
  ASSIGN_OR_RETURN(HttpResponse resp,
                   Call(HttpRequest::Method::kGet, "/v1/" + mount_ + "/keys/" + key_, nullptr,
                        deadline));
  if (resp.status != 200) return MapHttpError(resp, "read key");
  const std::string where = "vault " + resp.node + ": transit read key " + mount_ + "/" + key_ + ": ";
  ASSIGN_OR_RETURN(const SecretJson data, DataObject(resp.body, where));
  KeyInfo info;
  if (!ReadInt(data, "latest_version", &info.latest_version) || info.latest_version < 1) {
    return absl::InternalError(where + "malformed response: no valid data.latest_version");
  }
  ReadInt(data, "min_decryption_version", &info.min_decryption_version);
  ReadInt(data, "min_encryption_version", &info.min_encryption_version);
  if (auto k = data.find("keys"); k != data.end() && k->is_object()) {
    const auto* keys = k->get_ptr<const SecretJson::object_t*>();
    for (const auto& [name, val] : *keys) {
      if (name.empty() || name.size() > 9 || name.find_first_not_of("0123456789") != name.npos) continue;
      const int64_t v = std::stoll(std::string(name.data(), name.size()));
      std::string when;
      if (val.is_number_integer()) {
        when = std::to_string(val.get<int64_t>());
      } else if (val.is_object()) {
        auto c = val.find("creation_time");
        if (c != val.end() && c->is_string()) {
          const auto& cs = c->get_ref<const WipingString&>();
          when = Truncated(std::string_view(cs.data(), cs.size()), 64);
        }
      }
      if (v > 0 && !when.empty()) info.created[v] = std::move(when);
    }
  }
  auto t = data.find("type");
  if (t != data.end() && t->is_string()) {
    const auto& s = t->get_ref<const WipingString&>();
    info.type = Truncated(std::string_view(s.data(), s.size()), 64);
  }
  return info;
}

}  // namespace trousseau::vault
