// Fuzz target: every parser of a Vault/OpenBao answer. The input is one HTTP answer:
//   byte 0   which call reads it (transit encrypt / decrypt / read key, login, lookup-self,
//            renew-self, the error-list reader)
//   byte 1   the HTTP status (an index into kStatuses)
//   rest     the body
// The answer comes from a transport that returns it for any request, so the real client code
// (TransitClient, PostLogin, LookupSelf/RenewSelf, VaultErrors) parses it. Invariants:
// - an error always has a non-empty, printable, one-line message (Vault's text is sanitised);
// - a 200 encrypt answer is accepted only with a ciphertext ParseCiphertextVersion accepts, and
//   the version returned is the ciphertext's own;
// - a decrypt answer's plaintext and a login answer's client_token never reach a message, nor do
//   the credentials we sent (they may be echoed by Vault: they must be redacted);
// - a key read is accepted only with latest_version >= 1;
// - login: a token is printable, non-empty, at most 16 KiB; lease_duration >= 0.
#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "fuzz/fuzz_check.h"
#include "vault/auth/authenticator.h"
#include "vault/auth/token_calls.h"
#include "vault/ciphertext.h"
#include "vault/secret_json.h"
#include "vault/transit_client.h"

namespace {

using namespace trousseau;
using trousseau::fuzz::CheckErrorMessage;
using trousseau::fuzz::Leaks;

constexpr long kStatuses[] = {200, 200, 200, 200, 400, 403, 404, 412, 429,
                              500, 502, 503, 307, 204, 401, 418};
constexpr char kToken[] = "s.fuzz-token-0123456789abcdef";
constexpr char kSecretId[] = "fuzz-secret-id-7c1e-4b3d";
constexpr char kPlaintext[] = "plaintext-sent-by-the-fuzzer";

class OneAnswer final : public vault::HttpTransport {
 public:
  OneAnswer(long status, std::string_view body) : status_(status), body_(body) {}
  absl::StatusOr<vault::HttpResponse> Send(const vault::HttpRequest& /*req*/) override {
    vault::HttpResponse r;
    r.status = status_;
    r.body = SecretBuffer::CopyOf(body_);
    r.node = "https://vault-a.test:8200";
    return r;
  }
  std::string CurrentNode() const override { return "https://vault-a.test:8200"; }

 private:
  long status_;
  std::string_view body_;
};

class Tokens final : public vault::TokenSource {
 public:
  absl::StatusOr<std::shared_ptr<const SecretBuffer>> Token(Deadline) override { return tok_; }
  void Invalidate(const std::shared_ptr<const SecretBuffer>&) override {}
  std::string Describe() const override { return "fuzz token"; }
  std::shared_ptr<const SecretBuffer> tok_ =
      std::make_shared<const SecretBuffer>(SecretBuffer::CopyOf(kToken));
};

// An authenticator whose login posts a body holding a known credential, so that the test can
// check that Vault echoing it back never puts it in a message.
class FuzzAuth final : public vault::auth::Authenticator {
 public:
  FuzzAuth() : Authenticator("approle", "approle") {}
  absl::StatusOr<vault::auth::LoginResult> Login(vault::HttpTransport& http,
                                                 Deadline deadline) override {
    SecretBuffer secret = SecretBuffer::CopyOf(kSecretId);
    SecretBuffer body = SecretBuffer::CopyOf(std::string("{\"secret_id\":\"") + kSecretId + "\"}");
    return PostLogin(http, body, deadline, {&secret});
  }
};

// The string at /<a>/<b> of the body, if it parses and has one (to check it does not leak).
std::string StringAt(std::string_view body, const char* a, const char* b) {
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains(a) || !j[a].is_object()) return "";
  auto it = j[a].find(b);
  return it != j[a].end() && it->is_string() ? it->get<std::string>() : "";
}

Deadline Soon() { return std::chrono::steady_clock::now() + std::chrono::seconds(5); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const int op = data[0] % 7;
  const long status = kStatuses[data[1] % (sizeof(kStatuses) / sizeof(kStatuses[0]))];
  const std::string_view body(reinterpret_cast<const char*>(data) + 2, size - 2);
  OneAnswer http(status, body);
  Tokens tokens;
  vault::TransitClient transit(http, tokens, "transit", "kms");

  switch (op) {
    case 0: {
      auto w = transit.Encrypt(kPlaintext, 0, Soon());
      CheckErrorMessage(w.status(), "transit encrypt");
      if (w.ok()) {
        FUZZ_CHECK(status == 200, "encrypt accepted a non-200 answer");
        auto v = vault::ParseCiphertextVersion(w->ciphertext, vault::kMaxV1CiphertextBytes);
        FUZZ_CHECK(v.ok() && *v == w->version, "encrypt returned a ciphertext it cannot parse");
        FUZZ_CHECK(w->request_id.size() <= vault::kMaxRequestIdBytes, "request_id too long");
        FUZZ_CHECK(fuzz::IsPrintableLine(w->request_id), "request_id not printable");
      } else {
        FUZZ_CHECK(!Leaks(fuzz::Msg(w.status()), kToken), "token in an encrypt error");
      }
      break;
    }
    case 1: {
      auto u = transit.Decrypt("vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", Soon());
      CheckErrorMessage(u.status(), "transit decrypt");
      if (u.ok()) {
        FUZZ_CHECK(status == 200, "decrypt accepted a non-200 answer");
      } else {
        FUZZ_CHECK(!Leaks(fuzz::Msg(u.status()), kToken), "token in a decrypt error");
        if (status == 200) {
          FUZZ_CHECK(!Leaks(fuzz::Msg(u.status()), StringAt(body, "data", "plaintext")),
                     "decrypt answer's plaintext in an error message");
        }
      }
      break;
    }
    case 2: {
      auto k = transit.ReadKey(Soon());
      CheckErrorMessage(k.status(), "transit read key");
      if (k.ok()) {
        FUZZ_CHECK(status == 200, "read key accepted a non-200 answer");
        FUZZ_CHECK(k->latest_version >= 1, "latest_version < 1 accepted");
        FUZZ_CHECK(k->min_decryption_version >= 0 && k->min_encryption_version >= 0,
                   "negative min version");
        FUZZ_CHECK(k->type.size() <= 64 + 3, "key type not truncated");
      }
      break;
    }
    case 3: {
      FuzzAuth auth;
      auto r = auth.Login(http, Soon());
      CheckErrorMessage(r.status(), "login");
      if (r.ok()) {
        FUZZ_CHECK(status == 200, "login accepted a non-200 answer");
        FUZZ_CHECK(r->token && !r->token->empty() && r->token->size() <= 16 * 1024,
                   "login token empty or too long");
        FUZZ_CHECK(vault::auth::IsPrintableToken(r->token->view()), "login token not printable");
        FUZZ_CHECK(r->lease_duration.count() >= 0, "negative lease");
      } else {
        FUZZ_CHECK(!Leaks(fuzz::Msg(r.status()), kSecretId), "secret_id in a login error");
        FUZZ_CHECK(!Leaks(fuzz::Msg(r.status()), StringAt(body, "auth", "client_token")),
                   "client_token in a login error");
      }
      break;
    }
    case 4:
    case 5: {
      auto t = op == 4 ? vault::auth::LookupSelf(http, tokens.tok_, Soon())
                       : vault::auth::RenewSelf(http, tokens.tok_, std::chrono::seconds(3600), Soon());
      CheckErrorMessage(t.status(), op == 4 ? "lookup-self" : "renew-self");
      if (t.ok()) {
        FUZZ_CHECK(status == 200, "token call accepted a non-200 answer");
        FUZZ_CHECK(t->ttl.count() >= 0 && t->explicit_max_ttl.count() >= 0, "negative TTL");
      } else {
        FUZZ_CHECK(!Leaks(fuzz::Msg(t.status()), kToken), "token in a token-call error");
      }
      break;
    }
    case 6: {
      const std::string e = vault::VaultErrors(SecretBuffer::CopyOf(body));
      FUZZ_CHECK(fuzz::IsPrintableLine(e), "VaultErrors not printable");
      FUZZ_CHECK(e.size() <= 300 + 3 + 2 + 1, "VaultErrors not capped: " + std::to_string(e.size()));
      break;
    }
  }
  return 0;
}
