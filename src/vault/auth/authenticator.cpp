#include "vault/auth/authenticator.h"

#include "vault/secret_json.h"

namespace trousseau::vault::auth {
namespace {

void ReplaceAll(std::string& text, std::string_view needle) {
  if (needle.size() < 4) return;
  constexpr std::string_view kMark = "[redacted]";
  size_t pos = 0;
  while ((pos = text.find(needle, pos)) != std::string::npos) {
    text.replace(pos, needle.size(), kMark);
    pos += kMark.size();
  }
}

}  // namespace

std::string RedactSecrets(std::string text, std::initializer_list<const SecretBuffer*> secrets) {
  for (const SecretBuffer* s : secrets) {
    if (s == nullptr || s->empty()) continue;
    const std::string_view v = s->view();
    ReplaceAll(text, v);
    // A JWT is header.payload.signature; Vault may quote one part (e.g. a claim set).
    size_t start = 0;
    while (start <= v.size()) {
      size_t dot = v.find('.', start);
      if (dot == std::string_view::npos) dot = v.size();
      if (dot - start >= 8 && !(start == 0 && dot == v.size())) ReplaceAll(text, v.substr(start, dot - start));
      start = dot + 1;
    }
  }
  return text;
}

bool IsPrintableToken(std::string_view s) {
  if (s.empty()) return false;
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c >= 0x7f) return false;
  }
  return true;
}

absl::StatusOr<LoginResult> Authenticator::PostLogin(
    HttpTransport& http, const SecretBuffer& body, Deadline deadline,
    std::initializer_list<const SecretBuffer*> secrets) const {
  HttpRequest req;
  req.method = HttpRequest::Method::kPost;
  req.path = "/v1/auth/" + mount_ + "/login";
  req.body = &body;
  req.deadline = deadline;
  auto resp = http.Send(req);
  const std::string where = Where();
  if (!resp.ok()) {
    // A transport error: no answer from Vault (connect, TLS, timeout). Keep its code.
    return absl::Status(resp.status().code(),
                        where + ": login failed: " +
                            RedactSecrets(std::string(resp.status().message()), secrets));
  }
  const std::string errors = RedactSecrets(VaultErrors(resp->body), secrets);
  const std::string said = errors.empty() ? "" : " (vault said: " + errors + ")";
  const std::string at = " from " + resp->node;
  const long s = resp->status;
  if (s != 200) {
    const std::string code = "HTTP " + std::to_string(s) + at;
    if (s == 400 || s == 401 || s == 403) {
      return absl::UnauthenticatedError(
          where + ": login refused (" + code + "): check the credentials, the role and that an " +
          method_ + " auth method is mounted at auth/" + mount_ +
          " (vault.auth.mount, vault.namespace)" + said);
    }
    if (s == 404) {
      return absl::FailedPreconditionError(where + ": login path not found (" + code +
                                           "): is an auth method mounted at auth/" + mount_ +
                                           "? (vault.auth.mount, vault.namespace)" + said);
    }
    if (s == 429 || s == 412 || s >= 500) {
      return absl::UnavailableError(where + ": login failed, Vault unavailable (" + code + ")" +
                                    said);
    }
    return absl::InternalError(where + ": login failed: unexpected " + code + said);
  }
  auto j = ParseSecret(resp->body);
  resp->body.clear();
  const std::string bad = where + ": malformed login answer" + at + ": ";
  if (!j.ok()) return absl::InternalError(bad + std::string(j.status().message()));
  if (!j->is_object()) return absl::InternalError(bad + "not a JSON object");
  auto a = j->find("auth");
  if (a == j->end() || !a->is_object()) return absl::InternalError(bad + "no auth object");
  auto t = a->find("client_token");
  if (t == a->end() || !t->is_string()) {
    return absl::InternalError(bad + "no auth.client_token string");
  }
  const auto& tok = t->get_ref<const WipingString&>();
  const std::string_view tv(tok.data(), tok.size());
  if (!IsPrintableToken(tv) || tv.size() > 16 * 1024) {
    return absl::InternalError(bad + "auth.client_token is empty, too long or not printable");
  }
  LoginResult out;
  out.token = std::make_shared<const SecretBuffer>(SecretBuffer::CopyOf(tv));
  auto l = a->find("lease_duration");
  if (l != a->end()) {
    if (!l->is_number_integer() || l->get<int64_t>() < 0) {
      return absl::InternalError(bad + "auth.lease_duration is not a non-negative integer");
    }
    out.lease_duration = std::chrono::seconds(l->get<int64_t>());
  }
  auto r = a->find("renewable");
  if (r != a->end()) {
    if (!r->is_boolean()) return absl::InternalError(bad + "auth.renewable is not a boolean");
    out.renewable = r->get<bool>();
  }
  return out;
}

}  // namespace trousseau::vault::auth
