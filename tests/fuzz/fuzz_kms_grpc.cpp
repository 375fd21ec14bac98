// Fuzz target: the gRPC services (KMS v2 and v1beta1) as kube-apiserver reaches them. The input
// is byte 0 (which call) + the serialized request message; a message that does not parse is
// what gRPC would refuse before our code runs. The service objects are called directly with a
// grpc::ServerContext, over the real TransitKeyService and TransitClient, with an in-memory
// Transit (an HTTP transport that "seals" by framing: nonce || plaintext || tag, base64).
// Invariants:
// - an error status has a known code and a non-empty printable message;
// - v2 Encrypt: OK only for a plaintext that fits; the ciphertext is <= 1024 bytes, the key_id is
//   the key's; decrypting the answer (v2, with that key_id) gives the plaintext back;
// - v1beta1 Encrypt round-trips the same way through v1beta1 Decrypt;
// - Decrypt: OK only when CheckDecryptInput accepts the input (and v2's 1024-byte cap);
// - the audit record of every call is one JSON line and never holds the plaintext (neither the
//   caller's nor Transit's answer), and an error message never holds it either.
#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>

#include "common/base64.h"
#include "common/clock.h"
#include "envelope/key_service.h"
#include "fuzz/fuzz_check.h"
#include "kms/services.h"
#include "observability/log.h"
#include "vault/ciphertext.h"
#include "vault/transit_client.h"

namespace {

using namespace trousseau;

constexpr size_t kNonce = 12, kTag = 16;

// Transit in memory: encrypt frames the plaintext, decrypt unframes it. Answers as Vault does.
class MemoryTransit final : public vault::HttpTransport {
 public:
  absl::StatusOr<vault::HttpResponse> Send(const vault::HttpRequest& req) override {
    vault::HttpResponse r;
    r.node = "https://vault-a.test:8200";
    r.status = 200;
    nlohmann::json in;
    if (req.body != nullptr) in = nlohmann::json::parse(req.body->view(), nullptr, false);
    if (req.path == "/v1/transit/keys/kms") {
      r.body = SecretBuffer::CopyOf(R"({"data":{"latest_version":3,"type":"aes256-gcm96"}})");
    } else if (req.path == "/v1/transit/encrypt/kms") {
      auto pt = base64::Decode(in.value("plaintext", std::string("!")));
      FUZZ_CHECK(pt.ok(), "the client sent invalid base64");
      const std::string sealed = std::string(kNonce, 'N') + *pt + std::string(kTag, 'T');
      nlohmann::json out = {{"request_id", "0b8d2c5e-1f00-4e11-9c2a-000000000001"},
                            {"data", {{"ciphertext", "vault:v3:" + base64::Encode(sealed)},
                                      {"key_version", 3}}}};
      r.body = SecretBuffer::CopyOf(out.dump());
    } else if (req.path == "/v1/transit/decrypt/kms") {
      const std::string ct = in.value("ciphertext", std::string());
      const size_t colon = ct.find(':', 7);
      auto raw = base64::Decode(colon == std::string::npos ? "!" : ct.substr(colon + 1));
      if (!raw.ok() || raw->size() < kNonce + kTag ||
          raw->compare(0, kNonce, std::string(kNonce, 'N')) != 0) {
        r.status = 400;
        r.body = SecretBuffer::CopyOf(R"({"errors":["cipher: message authentication failed"]})");
      } else {
        const std::string pt = raw->substr(kNonce, raw->size() - kNonce - kTag);
        nlohmann::json out = {{"data", {{"plaintext", base64::Encode(pt)}}}};
        r.body = SecretBuffer::CopyOf(out.dump());
      }
    } else {
      r.status = 404;
      r.body = SecretBuffer::CopyOf(R"({"errors":[]})");
    }
    return r;
  }
  std::string CurrentNode() const override { return "https://vault-a.test:8200"; }
};

class Tokens final : public vault::TokenSource {
 public:
  absl::StatusOr<std::shared_ptr<const SecretBuffer>> Token(Deadline) override { return tok_; }
  void Invalidate(const std::shared_ptr<const SecretBuffer>&) override {}
  std::string Describe() const override { return "fuzz token"; }
  std::shared_ptr<const SecretBuffer> tok_ =
      std::make_shared<const SecretBuffer>(SecretBuffer::CopyOf("s.fuzz-token"));
};

// The last log line (audit records included), kept instead of written to stderr.
std::string& LastLine() {
  static std::string s;
  return s;
}
void Keep(std::string_view line) {
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);  // one line, newline-terminated
  LastLine().assign(line);
}

struct World {
  MemoryTransit http;
  Tokens tokens;
  RealClock clock;
  vault::TransitClient transit{http, tokens, "transit", "kms"};
  envelope::TransitKeyService keys{transit, clock, envelope::TransitKeyServiceOptions{}};
  kms::CallLimits limits;
  kms::V2Service v2{keys, &limits};
  kms::V1Beta1Service v1{keys, "fuzz", &limits};
  World() {
    log::SetSink(&Keep);
    keys.RefreshOnce();
    FUZZ_CHECK(keys.Health().key_id == "transit/kms:v3", "in-memory transit key");
  }
};

World& TheWorld() {
  static World* w = new World();
  return *w;
}

// The audit record just written: one JSON object, never holding `secret`.
void CheckAudit(std::string_view secret, const char* what) {
  const std::string& line = LastLine();
  FUZZ_CHECK(!line.empty() && line.find('\n') == std::string::npos, std::string(what) + ": audit line");
  auto j = nlohmann::json::parse(line, nullptr, false);
  FUZZ_CHECK(j.is_object() && j.value("type", "") == "audit", std::string(what) + ": audit JSON: " + line);
  // Only the fields that carry call-dependent text (detail, uid) can leak: a plaintext that
  // happens to equal fixed text of the record (fuzzing found 'hema":"trousseau.audit/') is not
  // a leak, so the check looks at string values, not at the line.
  for (const char* field : {"detail", "uid"}) {
    auto it = j.find(field);
    if (it == j.end() || !it->is_string()) continue;
    FUZZ_CHECK(!fuzz::Leaks(it->get<std::string>(), secret),
               std::string(what) + ": plaintext in the audit record's " + field);
  }
  LastLine().clear();
}

void CheckStatus(const grpc::Status& st, std::string_view secret, const char* what) {
  if (st.ok()) return;
  const int code = st.error_code();
  FUZZ_CHECK(code == grpc::INVALID_ARGUMENT || code == grpc::INTERNAL ||
                 code == grpc::FAILED_PRECONDITION || code == grpc::RESOURCE_EXHAUSTED ||
                 code == grpc::UNAVAILABLE || code == grpc::PERMISSION_DENIED ||
                 code == grpc::DEADLINE_EXCEEDED,
             std::string(what) + ": unexpected code " + std::to_string(code));
  fuzz::CheckErrorMessage(absl::Status(static_cast<absl::StatusCode>(code), st.error_message()), what);
  FUZZ_CHECK(!fuzz::Leaks(st.error_message(), secret), std::string(what) + ": plaintext in the message");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > 200 * 1024) return 0;
  World& w = TheWorld();
  const std::string msg(reinterpret_cast<const char*>(data) + 1, size - 1);
  grpc::ServerContext ctx;
  switch (data[0] % 4) {
    case 0: {  // v2 Encrypt, then Decrypt of its answer
      ::v2::EncryptRequest req;
      if (!req.ParseFromString(msg)) return 0;
      const std::string pt = req.plaintext();
      // The uid is logged as given: a plaintext the caller also sent as uid is not a leak.
      const std::string secret = req.uid().find(pt) == std::string::npos ? pt : "";
      ::v2::EncryptResponse resp;
      grpc::Status st = w.v2.Encrypt(&ctx, &req, &resp);
      CheckStatus(st, secret, "v2 Encrypt");
      CheckAudit(secret, "v2 Encrypt");
      const bool fits = envelope::CheckPlaintext(pt).ok() && envelope::CheckV2WrappedSizeFits(pt).ok();
      FUZZ_CHECK(st.ok() == fits, "v2 Encrypt " + std::string(st.ok() ? "accepted" : "refused") +
                                      " a plaintext of " + std::to_string(pt.size()) + " bytes: " +
                                      st.error_message());
      if (!st.ok()) return 0;
      FUZZ_CHECK(resp.ciphertext().size() <= vault::kMaxCiphertextBytes, "v2 ciphertext > 1024");
      FUZZ_CHECK(resp.key_id() == "transit/kms:v3", "v2 key_id " + resp.key_id());
      FUZZ_CHECK(!fuzz::Leaks(resp.ciphertext(), pt), "ciphertext holds the plaintext");
      ::v2::DecryptRequest dreq;
      dreq.set_ciphertext(resp.ciphertext());
      dreq.set_key_id(resp.key_id());
      dreq.set_uid(req.uid());
      for (const auto& [k, v] : resp.annotations()) (*dreq.mutable_annotations())[k] = v;
      ::v2::DecryptResponse dresp;
      grpc::Status ds = w.v2.Decrypt(&ctx, &dreq, &dresp);
      CheckAudit(secret, "v2 Decrypt (round trip)");
      FUZZ_CHECK(ds.ok(), "v2 Decrypt of our own ciphertext failed: " + ds.error_message());
      FUZZ_CHECK(dresp.plaintext() == pt, "v2 round trip changed the plaintext");
      break;
    }
    case 1: {  // v2 Decrypt of arbitrary input
      ::v2::DecryptRequest req;
      if (!req.ParseFromString(msg)) return 0;
      ::v2::DecryptResponse resp;
      grpc::Status st = w.v2.Decrypt(&ctx, &req, &resp);
      // What the caller sent in the clear (uid, key_id) may be logged, whatever it holds.
      const std::string& got = resp.plaintext();
      const bool sent = req.uid().find(got) != std::string::npos ||
                        req.key_id().find(got) != std::string::npos;
      const std::string secret = sent ? "" : got;
      CheckStatus(st, secret, "v2 Decrypt");
      CheckAudit(secret, "v2 Decrypt");
      std::map<std::string, std::string> ann(req.annotations().begin(), req.annotations().end());
      const bool valid = req.ciphertext().size() <= vault::kMaxCiphertextBytes &&
                         envelope::CheckDecryptInput(req.ciphertext(), req.key_id(), ann).ok();
      if (!valid) {
        FUZZ_CHECK(!st.ok() && st.error_code() == grpc::INVALID_ARGUMENT,
                   "v2 Decrypt did not refuse invalid input with INVALID_ARGUMENT");
      }
      break;
    }
    case 2: {  // v1beta1 Encrypt, then Decrypt
      ::v1beta1::EncryptRequest req;
      if (!req.ParseFromString(msg)) return 0;
      const std::string pt = req.plain();
      ::v1beta1::EncryptResponse resp;
      grpc::Status st = w.v1.Encrypt(&ctx, &req, &resp);
      CheckStatus(st, pt, "v1beta1 Encrypt");
      CheckAudit(pt, "v1beta1 Encrypt");
      FUZZ_CHECK(st.ok() == envelope::CheckPlaintext(pt).ok(),
                 "v1beta1 Encrypt: " + st.error_message());
      if (!st.ok()) return 0;
      ::v1beta1::DecryptRequest dreq;
      dreq.set_cipher(resp.cipher());
      ::v1beta1::DecryptResponse dresp;
      grpc::Status ds = w.v1.Decrypt(&ctx, &dreq, &dresp);
      CheckAudit(pt, "v1beta1 Decrypt (round trip)");
      FUZZ_CHECK(ds.ok(), "v1beta1 round trip: " + ds.error_message());
      FUZZ_CHECK(dresp.plain() == pt, "v1beta1 round trip changed the plaintext");
      break;
    }
    case 3: {  // v1beta1 Decrypt of arbitrary input
      ::v1beta1::DecryptRequest req;
      if (!req.ParseFromString(msg)) return 0;
      ::v1beta1::DecryptResponse resp;
      grpc::Status st = w.v1.Decrypt(&ctx, &req, &resp);
      CheckStatus(st, resp.plain(), "v1beta1 Decrypt");
      CheckAudit(resp.plain(), "v1beta1 Decrypt");
      if (!envelope::CheckDecryptInput(req.cipher(), "", {}).ok()) {
        FUZZ_CHECK(!st.ok() && st.error_code() == grpc::INVALID_ARGUMENT,
                   "v1beta1 Decrypt did not refuse invalid input with INVALID_ARGUMENT");
      }
      break;
    }
  }
  return 0;
}
