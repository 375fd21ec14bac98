// The gRPC adapters, called over a real in-process gRPC server on a temporary Unix socket with a
// FakeKeyService behind it: message translation, status codes, deadlines and audit records.
#include "kms/services.h"
#include "kms/server_tuning.h"
#include "kms/status_loop.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "fakes/fake_key_service.h"
#include "fakes/log_capture.h"
#include "fakes/temp_dir.h"
#include "observability/metrics.h"
#include "vault/ciphertext.h"

namespace trousseau::kms {
namespace {

using namespace std::chrono_literals;
using Catch::Contains;
using fakes::FakeKeyService;

constexpr const char* kMarker = "PLAINTEXT-MARKER-2c9e";

struct Server {
  fakes::TempDir dir;
  FakeKeyService keys;
  V2Service v2{keys};
  V1Beta1Service v1{keys, "0.1.0-test"};
  std::unique_ptr<grpc::Server> server;
  StatusLoop loop{&v2, &v1};  // destroyed before the server
  std::unique_ptr<::v2::KeyManagementService::Stub> v2_stub;
  std::unique_ptr<::v1beta1::KeyManagementService::Stub> v1_stub;

  Server() {
    const std::string addr = "unix:" + dir.Path("kms.sock");
    grpc::ServerBuilder b;
    b.AddListeningPort(addr, grpc::InsecureServerCredentials());
    b.RegisterService(&v2);
    b.RegisterService(&v1);
    loop.AddTo(b);
    server = b.BuildAndStart();
    REQUIRE(server != nullptr);
    REQUIRE(loop.Start(*server).ok());
    auto channel = grpc::CreateChannel(addr, grpc::InsecureChannelCredentials());
    v2_stub = ::v2::KeyManagementService::NewStub(channel);
    v1_stub = ::v1beta1::KeyManagementService::NewStub(channel);
  }
  ~Server() {
    server->Shutdown();
    server->Wait();
    loop.Stop();
  }
};

envelope::EncryptResult Wrapped(std::string ct, std::string key_id) {
  envelope::EncryptResult r;
  r.ciphertext = std::move(ct);
  r.key_id = std::move(key_id);
  r.node = "https://vault-a.test:8200";
  return r;
}

std::string Ct() { return "vault:v3:" + std::string(60, 'A'); }

// Audit lines written by the server (the destructor of the call's record writes it, so it is
// there once the RPC has returned to the client... after the handler returned).
std::vector<nlohmann::json> Audits(const fakes::LogCapture& cap) { return cap.events("kms.call"); }

// ---- ToGrpc ---------------------------------------------------------------------------------

TEST_CASE("ToGrpc keeps the code number and the message", "[kms][status]") {
  CHECK(ToGrpc(absl::OkStatus()).ok());
  const std::vector<absl::Status> errors = {
      absl::CancelledError("c"),          absl::UnknownError("u"),
      absl::InvalidArgumentError("ia"),   absl::DeadlineExceededError("de"),
      absl::NotFoundError("nf"),          absl::AlreadyExistsError("ae"),
      absl::PermissionDeniedError("pd"),  absl::ResourceExhaustedError("re"),
      absl::FailedPreconditionError("fp"), absl::AbortedError("ab"),
      absl::OutOfRangeError("oor"),       absl::UnimplementedError("ui"),
      absl::InternalError("in"),          absl::UnavailableError("un"),
      absl::DataLossError("dl"),          absl::UnauthenticatedError("ua"),
  };
  for (const auto& st : errors) {
    const grpc::Status g = ToGrpc(st);
    CHECK_FALSE(g.ok());
    CHECK(static_cast<int>(g.error_code()) == static_cast<int>(st.code()));
    CHECK(g.error_message() == std::string(st.message()));
  }
  CHECK(ToGrpc(absl::UnavailableError("vault sealed")).error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK(ToGrpc(absl::FailedPreconditionError("x")).error_code() ==
        grpc::StatusCode::FAILED_PRECONDITION);
}

// ---- KMS v2 ---------------------------------------------------------------------------------

TEST_CASE("v2 Status reports version, healthz and key_id from the key service", "[kms][v2]") {
  Server s;
  s.keys.SetHealth({"last Vault check failed: sealed", "transit/kubernetes:v9"});
  grpc::ClientContext ctx;
  ::v2::StatusRequest req;
  ::v2::StatusResponse resp;
  const grpc::Status st = s.v2_stub->Status(&ctx, req, &resp);
  REQUIRE(st.ok());
  CHECK(resp.version() == "v2");
  CHECK(resp.healthz() == "last Vault check failed: sealed");
  CHECK(resp.key_id() == "transit/kubernetes:v9");
  CHECK(s.keys.health_calls() == 1);
}

TEST_CASE("v2 Encrypt passes the plaintext and returns ciphertext and key_id", "[kms][v2]") {
  Server s;
  fakes::LogCapture cap;
  auto w = Wrapped(Ct(), "transit/kubernetes:v3");
  w.annotations["kms.example.com"] = "note";
  s.keys.SetEncryptResult(w);
  const std::string plain = std::string(kMarker) + std::string("\0\xff", 2);
  grpc::ClientContext ctx;
  ::v2::EncryptRequest req;
  req.set_plaintext(plain);
  req.set_uid("uid-1234");
  ::v2::EncryptResponse resp;
  const grpc::Status st = s.v2_stub->Encrypt(&ctx, req, &resp);
  REQUIRE(st.ok());
  CHECK(s.keys.last_plaintext() == plain);
  CHECK(resp.ciphertext() == Ct());
  CHECK(resp.key_id() == "transit/kubernetes:v3");
  REQUIRE(resp.annotations().size() == 1);
  CHECK(resp.annotations().at("kms.example.com") == "note");

  s.server->Shutdown();  // all handlers (and their audit records) are done after this
  auto audits = Audits(cap);
  REQUIRE(audits.size() == 1);
  CHECK(audits[0]["api"] == "v2");
  CHECK(audits[0]["op"] == "encrypt");
  CHECK(audits[0]["uid"] == "uid-1234");
  CHECK(audits[0]["code"] == "OK");
  CHECK(audits[0]["key_id"] == "transit/kubernetes:v3");
  CHECK(audits[0]["in_bytes"] == plain.size());
  CHECK(audits[0]["out_bytes"] == Ct().size());
  CHECK(audits[0]["vault"] == "https://vault-a.test:8200");
  CHECK(cap.all().find(kMarker) == std::string::npos);
}

TEST_CASE("v2 errors map to the same gRPC code and message", "[kms][v2][negative]") {
  const std::vector<absl::Status> errors = {
      absl::InvalidArgumentError("plaintext is empty"),
      absl::FailedPreconditionError("key version too old"),
      absl::PermissionDeniedError("vault: permission denied"),
      absl::UnavailableError("vault: sealed"),
      absl::DeadlineExceededError("vault: timed out"),
      absl::InternalError("vault: malformed response: no data.ciphertext string"),
  };
  Server s;
  fakes::LogCapture cap;
  for (const auto& err : errors) {
    INFO(err.ToString());
    s.keys.SetEncryptError(err);
    s.keys.SetDecryptError(err);
    {
      grpc::ClientContext ctx;
      ::v2::EncryptRequest req;
      req.set_plaintext("seed");
      ::v2::EncryptResponse resp;
      const grpc::Status st = s.v2_stub->Encrypt(&ctx, req, &resp);
      CHECK(static_cast<int>(st.error_code()) == static_cast<int>(err.code()));
      CHECK(st.error_message() == std::string(err.message()));
      CHECK(resp.ciphertext().empty());
    }
    {
      grpc::ClientContext ctx;
      ::v2::DecryptRequest req;
      req.set_ciphertext(Ct());
      ::v2::DecryptResponse resp;
      const grpc::Status st = s.v2_stub->Decrypt(&ctx, req, &resp);
      CHECK(static_cast<int>(st.error_code()) == static_cast<int>(err.code()));
      CHECK(st.error_message() == std::string(err.message()));
      CHECK(resp.plaintext().empty());
    }
  }
  s.server->Shutdown();
  auto audits = Audits(cap);
  REQUIRE(audits.size() == 2 * errors.size());
  CHECK(audits[0]["code"] == "INVALID_ARGUMENT");
  CHECK(audits[0]["detail"] == "plaintext is empty");
  CHECK(audits.back()["code"] == "INTERNAL");
}

TEST_CASE("v2 Encrypt refuses a plaintext whose wrap cannot fit 1024 bytes, before Vault",
          "[kms][v2][negative]") {
  Server s;
  s.keys.SetEncryptResult(Wrapped(Ct(), "k"));
  grpc::ClientContext ctx;
  ::v2::EncryptRequest req;
  req.set_plaintext(std::string(726, 'p'));
  ::v2::EncryptResponse resp;
  const grpc::Status st = s.v2_stub->Encrypt(&ctx, req, &resp);
  CHECK(st.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK_THAT(st.error_message(), Contains("1024"));
  CHECK(s.keys.encrypt_calls() == 0);
}

TEST_CASE("v2 Encrypt refuses a ciphertext over 1024 bytes from the key service",
          "[kms][v2][negative]") {
  Server s;
  s.keys.SetEncryptResult(Wrapped("vault:v1:" + std::string(1016, 'A'), "k"));  // 1025 bytes
  grpc::ClientContext ctx;
  ::v2::EncryptRequest req;
  req.set_plaintext("seed");
  ::v2::EncryptResponse resp;
  const grpc::Status st = s.v2_stub->Encrypt(&ctx, req, &resp);
  CHECK(st.error_code() == grpc::StatusCode::INTERNAL);
  CHECK_THAT(st.error_message(), Contains("1025-byte ciphertext"));
  CHECK(resp.ciphertext().empty());
}

TEST_CASE("v2 Decrypt passes ciphertext, key_id and annotations", "[kms][v2]") {
  Server s;
  s.keys.SetDecryptResult(std::string("seed\0bytes", 10));
  grpc::ClientContext ctx;
  ::v2::DecryptRequest req;
  req.set_ciphertext(Ct());
  req.set_key_id("transit/kubernetes:v3");
  req.set_uid("uid-9");
  (*req.mutable_annotations())["a.example.com"] = std::string("\x01\x02", 2);
  ::v2::DecryptResponse resp;
  const grpc::Status st = s.v2_stub->Decrypt(&ctx, req, &resp);
  REQUIRE(st.ok());
  CHECK(resp.plaintext() == std::string("seed\0bytes", 10));
  CHECK(s.keys.last_ciphertext() == Ct());
  CHECK(s.keys.last_key_id() == "transit/kubernetes:v3");
  const auto ann = s.keys.last_annotations();
  REQUIRE(ann.size() == 1);
  CHECK(ann.at("a.example.com") == std::string("\x01\x02", 2));
}

TEST_CASE("audit records carry the schema, key version, Vault request id and a clipped uid",
          "[kms][audit]") {
  Server s;
  fakes::LogCapture cap;
  auto w = Wrapped(Ct(), "transit/kubernetes:v3");
  w.vault_request_id = "enc-req-1";
  s.keys.SetEncryptResult(w);
  s.keys.SetDecryptResult("seed");
  s.keys.SetDecryptRequestId("dec-req-2");
  const std::string long_uid(5000, 'q');
  {
    grpc::ClientContext ctx;
    ::v2::EncryptRequest req;
    req.set_plaintext("seed");
    req.set_uid(long_uid);
    ::v2::EncryptResponse resp;
    REQUIRE(s.v2_stub->Encrypt(&ctx, req, &resp).ok());
  }
  {
    grpc::ClientContext ctx;
    ::v2::DecryptRequest req;
    req.set_ciphertext("vault:v2:" + std::string(60, 'A'));
    req.set_key_id("transit/kubernetes:v2");
    req.set_uid("uid-d");
    ::v2::DecryptResponse resp;
    REQUIRE(s.v2_stub->Decrypt(&ctx, req, &resp).ok());
  }
  {
    grpc::ClientContext ctx;
    ::v1beta1::DecryptRequest req;
    req.set_version("v1beta1");
    req.set_cipher("vault:v4:" + std::string(60, 'A'));
    ::v1beta1::DecryptResponse resp;
    REQUIRE(s.v1_stub->Decrypt(&ctx, req, &resp).ok());
  }
  s.server->Shutdown();
  auto audits = Audits(cap);
  REQUIRE(audits.size() == 3);
  for (const auto& a : audits) CHECK(a["schema"] == "trousseau.audit/v1");
  CHECK(audits[0]["op"] == "encrypt");
  CHECK(audits[0]["vault_request_id"] == "enc-req-1");
  CHECK(audits[0]["key_version"] == 3);
  CHECK(audits[0]["uid"] == std::string(256, 'q'));
  CHECK(audits[0]["uid_clipped"] == true);
  CHECK(audits[0]["uid_bytes"] == 5000);
  CHECK(audits[1]["op"] == "decrypt");
  CHECK(audits[1]["vault_request_id"] == "dec-req-2");
  CHECK(audits[1]["key_version"] == 2);  // from the ciphertext
  CHECK(audits[1]["uid"] == "uid-d");
  CHECK_FALSE(audits[1].contains("uid_clipped"));
  CHECK(audits[2]["api"] == "v1beta1");
  CHECK(audits[2]["key_version"] == 4);
}

TEST_CASE("v2 Decrypt refuses a ciphertext over 1024 bytes before the key service",
          "[kms][v2][negative]") {
  Server s;
  s.keys.SetDecryptResult("x");
  grpc::ClientContext ctx;
  ::v2::DecryptRequest req;
  req.set_ciphertext(std::string(1025, 'c'));
  ::v2::DecryptResponse resp;
  const grpc::Status st = s.v2_stub->Decrypt(&ctx, req, &resp);
  CHECK(st.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK_THAT(st.error_message(), Contains("1025 bytes"));
  CHECK(s.keys.decrypt_calls() == 0);
}

TEST_CASE("the caller's deadline bounds the work; without one the cap applies", "[kms][v2]") {
  Server s;
  s.keys.SetEncryptResult(Wrapped(Ct(), "k"));
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 3s);
    ::v2::EncryptRequest req;
    req.set_plaintext("seed");
    ::v2::EncryptResponse resp;
    const auto before = std::chrono::steady_clock::now();
    REQUIRE(s.v2_stub->Encrypt(&ctx, req, &resp).ok());
    const auto d = s.keys.last_deadline();
    CHECK(d > before);
    // gRPC sends the timeout rounded up to its wire precision: allow a little slack, far
    // below the 30 s cap that would apply if the caller's deadline were ignored.
    CHECK(d <= std::chrono::steady_clock::now() + 3s + 100ms);
  }
  {
    grpc::ClientContext ctx;  // no deadline
    ::v2::EncryptRequest req;
    req.set_plaintext("seed");
    ::v2::EncryptResponse resp;
    const auto before = std::chrono::steady_clock::now();
    REQUIRE(s.v2_stub->Encrypt(&ctx, req, &resp).ok());
    const auto d = s.keys.last_deadline();
    CHECK(d >= before + 29s);
    CHECK(d <= std::chrono::steady_clock::now() + 30s);
  }
}

// ---- KMS v1beta1 ----------------------------------------------------------------------------

TEST_CASE("v1beta1 Version names the API and the runtime", "[kms][v1beta1]") {
  Server s;
  grpc::ClientContext ctx;
  ::v1beta1::VersionRequest req;
  req.set_version("v1beta1");
  ::v1beta1::VersionResponse resp;
  REQUIRE(s.v1_stub->Version(&ctx, req, &resp).ok());
  CHECK(resp.version() == "v1beta1");
  CHECK(resp.runtime_name() == "trousseau");
  CHECK(resp.runtime_version() == "0.1.0-test");
}

TEST_CASE("v1beta1 Encrypt and Decrypt go through the key service", "[kms][v1beta1]") {
  Server s;
  fakes::LogCapture cap;
  // v1beta1 has no 1024-byte cap: a large plaintext and ciphertext pass.
  const std::string big(4096, 'p');
  const std::string big_ct = "vault:v2:" + std::string(5600, 'A');
  s.keys.SetEncryptResult(Wrapped(big_ct, "transit/kubernetes:v2"));
  {
    grpc::ClientContext ctx;
    ::v1beta1::EncryptRequest req;
    req.set_version("v1beta1");
    req.set_plain(big);
    ::v1beta1::EncryptResponse resp;
    REQUIRE(s.v1_stub->Encrypt(&ctx, req, &resp).ok());
    CHECK(resp.cipher() == big_ct);
    CHECK(s.keys.last_plaintext() == big);
  }
  s.keys.SetDecryptResult(big);
  {
    grpc::ClientContext ctx;
    ::v1beta1::DecryptRequest req;
    req.set_version("v1beta1");
    req.set_cipher(big_ct);
    ::v1beta1::DecryptResponse resp;
    REQUIRE(s.v1_stub->Decrypt(&ctx, req, &resp).ok());
    CHECK(resp.plain() == big);
    CHECK(s.keys.last_ciphertext() == big_ct);
    CHECK(s.keys.last_key_id().empty());
    CHECK(s.keys.last_annotations().empty());
  }
  s.server->Shutdown();
  auto audits = Audits(cap);
  REQUIRE(audits.size() == 2);
  CHECK(audits[0]["api"] == "v1beta1");
  CHECK(audits[0]["op"] == "encrypt");
  CHECK(audits[1]["op"] == "decrypt");
}

TEST_CASE("v1beta1 errors map to the same gRPC code", "[kms][v1beta1][negative]") {
  Server s;
  s.keys.SetEncryptError(absl::UnavailableError("vault: sealed"));
  s.keys.SetDecryptError(absl::InvalidArgumentError("ciphertext is empty"));
  {
    grpc::ClientContext ctx;
    ::v1beta1::EncryptRequest req;
    req.set_plain("x");
    ::v1beta1::EncryptResponse resp;
    const grpc::Status st = s.v1_stub->Encrypt(&ctx, req, &resp);
    CHECK(st.error_code() == grpc::StatusCode::UNAVAILABLE);
    CHECK(st.error_message() == "vault: sealed");
  }
  {
    grpc::ClientContext ctx;
    ::v1beta1::DecryptRequest req;
    ::v1beta1::DecryptResponse resp;
    const grpc::Status st = s.v1_stub->Decrypt(&ctx, req, &resp);
    CHECK(st.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
    CHECK(st.error_message() == "ciphertext is empty");
  }
}

TEST_CASE("audit records clip the uid to 256 bytes and escape it: one parseable line each",
          "[kms][v2][audit]") {
  Server s;
  fakes::LogCapture cap;
  s.keys.SetEncryptResult(Wrapped(Ct(), "transit/kubernetes:v3"));
  const std::string huge(1 << 20, 'u');                                   // 1 MiB
  const std::string nasty = std::string("q\"uo\\te\nnew\rline\t\x01\x1b[31m\x7f") +
                            std::string("\0nul", 4);  // (proto3 strings must be UTF-8)
  const size_t n = log::kMaxAuditUidBytes;  // 256
  const std::string split = std::string(n - 1, 'a') + "\xc3\xa9" + "tail";  // é across the clip
  for (const std::string& uid : {huge, nasty, split}) {
    grpc::ClientContext ctx;
    ::v2::EncryptRequest req;
    req.set_plaintext("p");
    req.set_uid(uid);
    ::v2::EncryptResponse resp;
    REQUIRE(s.v2_stub->Encrypt(&ctx, req, &resp).ok());
  }
  s.server->Shutdown();
  // Every captured line is one JSON object: no raw newline or control byte split a record.
  for (const auto& line : cap.lines()) {
    REQUIRE(!line.empty());
    CHECK(line.back() == '\n');  // the record's own terminator, and the only control byte
    const bool raw_control = std::any_of(line.begin(), line.end() - 1,
                                         [](char c) { return static_cast<unsigned char>(c) < 0x20; });
    CHECK_FALSE(raw_control);
  }
  auto audits = Audits(cap);
  REQUIRE(audits.size() == 3);
  const std::string u0 = audits[0]["uid"];
  CHECK(u0 == std::string(n, 'u'));
  CHECK(audits[0]["uid_clipped"] == true);
  CHECK(cap.all().size() < 64 * 1024);  // the 1 MiB uid is nowhere
  const std::string u1 = audits[1]["uid"];
  CHECK(u1 == nasty);  // escaped in the line, the same bytes once parsed
  const std::string u2 = audits[2]["uid"];
  CHECK(u2 == std::string(n - 1, 'a'));  // clipped before the split sequence, never inside it
  CHECK(u2.find("tail") == std::string::npos);
}

}  // namespace
}  // namespace trousseau::kms

namespace trousseau::kms {
namespace {

// ---- bounded concurrency --------------------------------------------------------------------

// One v2 Encrypt of "p" for uid "u" with a deadline `timeout` from now.
grpc::Status CallEncrypt(::v2::KeyManagementService::Stub& stub, std::chrono::seconds timeout) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
  ::v2::EncryptRequest req;
  req.set_uid("u");
  req.set_plaintext("p");
  ::v2::EncryptResponse resp;
  return stub.Encrypt(&ctx, req, &resp);
}

namespace limits_test {

// A server whose Encrypt/Decrypt are limited (2 and 3 in flight) and whose thread count is
// bounded as main() bounds it.
struct LimitedServer {
  fakes::TempDir dir;
  FakeKeyService keys;
  CallLimits limits{2, 3};
  V2Service v2{keys, &limits};
  V1Beta1Service v1{keys, "0.1.0-test", &limits};
  std::unique_ptr<grpc::Server> server;
  StatusLoop loop{&v2, &v1};  // destroyed before the server
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<::v2::KeyManagementService::Stub> v2_stub;
  std::unique_ptr<::v1beta1::KeyManagementService::Stub> v1_stub;

  LimitedServer() {
    const std::string addr = "unix:" + dir.Path("kms.sock");
    grpc::ServerBuilder b;
    ConfigureServer(b, limits);  // as main() does
    b.AddListeningPort(addr, grpc::InsecureServerCredentials());
    b.RegisterService(&v2);
    b.RegisterService(&v1);
    loop.AddTo(b);
    server = b.BuildAndStart();
    REQUIRE(server != nullptr);
    REQUIRE(loop.Start(*server).ok());
    channel = grpc::CreateChannel(addr, grpc::InsecureChannelCredentials());
    v2_stub = ::v2::KeyManagementService::NewStub(channel);
    v1_stub = ::v1beta1::KeyManagementService::NewStub(channel);
  }
  ~LimitedServer() {
    keys.OpenGate();
    server->Shutdown();
    server->Wait();
    loop.Stop();
  }

  grpc::Status Encrypt() { return CallEncrypt(*v2_stub, 20s); }
  grpc::Status Decrypt() {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 20s);
    ::v2::DecryptRequest req;
    req.set_uid("u");
    req.set_ciphertext(Ct());
    req.set_key_id("transit/k:v3");
    ::v2::DecryptResponse resp;
    return v2_stub->Decrypt(&ctx, req, &resp);
  }
};

}  // namespace limits_test

TEST_CASE("Encrypt and Decrypt over their limits are refused; Status still answers",
          "[kms][limits]") {
  limits_test::LimitedServer s;
  s.keys.SetEncryptResult(Wrapped(Ct(), "transit/k:v3"));
  s.keys.SetDecryptResult("p");
  fakes::LogCapture cap;
  s.keys.CloseGate();
  // Fill both limits with calls held inside the key service.
  std::vector<std::thread> held;
  std::vector<grpc::StatusCode> held_codes(5, grpc::StatusCode::UNKNOWN);
  for (int i = 0; i < 2; ++i) held.emplace_back([&, i] { held_codes[i] = s.Encrypt().error_code(); });
  for (int i = 2; i < 5; ++i) held.emplace_back([&, i] { held_codes[i] = s.Decrypt().error_code(); });
  REQUIRE(s.keys.WaitForBlocked(5, 20s));
  CHECK(s.limits.encrypt.in_flight() == 2);
  CHECK(s.limits.decrypt.in_flight() == 3);

  // The next Encrypt and Decrypt are shed at once, naming the limit and its config key.
  const grpc::Status enc = s.Encrypt();
  CHECK(enc.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
  CHECK_THAT(enc.error_message(), Contains("too many concurrent Encrypt calls") &&
                                      Contains("limits.max_in_flight.encrypt = 2"));
  const grpc::Status dec = s.Decrypt();
  CHECK(dec.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
  CHECK_THAT(dec.error_message(), Contains("limits.max_in_flight.decrypt = 3"));
  // v1beta1 shares the limits.
  {
    grpc::ClientContext ctx;
    ::v1beta1::EncryptRequest req;
    req.set_plain("p");
    ::v1beta1::EncryptResponse resp;
    CHECK(s.v1_stub->Encrypt(&ctx, req, &resp).error_code() ==
          grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  // A refused call never reached the key service, and was audited with its code.
  CHECK(s.keys.blocked() == 5);
  CHECK(s.keys.encrypt_calls() == 0);
  bool audited = false;
  for (const auto& a : Audits(cap)) {
    if (a.value("code", "") == "RESOURCE_EXHAUSTED") audited = true;
  }
  CHECK(audited);
  CHECK_THAT(metrics::Exposition(), Contains("code=\"RESOURCE_EXHAUSTED\""));

  // Status is not limited: many in a row answer while both limits are full.
  for (int i = 0; i < 50; ++i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    ::v2::StatusRequest req;
    ::v2::StatusResponse resp;
    REQUIRE(s.v2_stub->Status(&ctx, req, &resp).ok());
    CHECK(resp.healthz() == "ok");
  }

  // Released: the held calls succeed and the slots are free again.
  s.keys.OpenGate();
  for (auto& t : held) t.join();
  for (auto c : held_codes) CHECK(c == grpc::StatusCode::OK);
  CHECK(s.limits.encrypt.in_flight() == 0);
  CHECK(s.limits.decrypt.in_flight() == 0);
  CHECK(s.Encrypt().ok());
  CHECK(s.Decrypt().ok());
}

// The value of one KMS request counter series in the exposition (0 when absent).
double KmsRequests(const std::string& api, const std::string& method) {
  const std::string text = metrics::Exposition();
  const std::string series = "trousseau_kms_requests_total{api=\"" + api + "\",code=\"OK\",method=\"" +
                             method + "\"} ";
  const size_t at = text.find(series);
  return at == std::string::npos ? 0 : std::stod(text.substr(at + series.size()));
}

// One Encrypt per element of `codes`, each from a thread of its own (30 s deadline); each
// thread stores its call's code there. The caller joins the threads.
std::vector<std::thread> StartEncrypts(::v2::KeyManagementService::Stub& stub,
                                       std::vector<grpc::StatusCode>& codes) {
  std::vector<std::thread> callers;
  for (size_t i = 0; i < codes.size(); ++i) {
    callers.emplace_back([&stub, &codes, i] { codes[i] = CallEncrypt(stub, 30s).error_code(); });
  }
  return callers;
}

TEST_CASE("Status and Version answer while every sync-server thread is held in a slow Encrypt",
          "[kms][status_loop]") {
  // The sync server may run at most 4 threads; Encrypt/Decrypt limits are far above that, so
  // only the thread pool bounds them. Status and Version must need none of its threads.
  fakes::TempDir dir;
  FakeKeyService keys;
  keys.SetEncryptResult(Wrapped(Ct(), "transit/k:v3"));
  keys.SetHealth({"ok", "transit/k:v3"});
  CallLimits limits{64, 64};
  V2Service v2{keys, &limits};
  V1Beta1Service v1{keys, "0.1.0-test", &limits};
  std::unique_ptr<grpc::Server> server;
  StatusLoop loop{&v2, &v1};
  const std::string addr = "unix:" + dir.Path("kms.sock");
  grpc::ServerBuilder b;
  b.AddListeningPort(addr, grpc::InsecureServerCredentials());
  b.RegisterService(&v2);
  b.RegisterService(&v1);
  b.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MIN_POLLERS, 1);
  b.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS, 1);
  grpc::ResourceQuota quota("status-loop-test");
  quota.SetMaxThreads(4);
  b.SetResourceQuota(quota);
  loop.AddTo(b);
  server = b.BuildAndStart();
  REQUIRE(server != nullptr);
  REQUIRE(loop.Start(*server).ok());
  auto channel = grpc::CreateChannel(addr, grpc::InsecureChannelCredentials());
  auto v2_stub = ::v2::KeyManagementService::NewStub(channel);
  auto v1_stub = ::v1beta1::KeyManagementService::NewStub(channel);

  // More Encrypts than the pool has threads, each held in the key service: every thread that
  // could be made is blocked in one, the others are refused by gRPC or wait for a thread.
  keys.CloseGate();
  constexpr int kCallers = 8;
  std::vector<grpc::StatusCode> codes(kCallers, grpc::StatusCode::UNKNOWN);
  std::vector<std::thread> callers = StartEncrypts(*v2_stub, codes);
  REQUIRE(keys.WaitForBlocked(2, 20s));
  // Let the pool settle at its bound: no more Encrypt reaches the key service.
  int held = keys.blocked();
  for (int i = 0; i < 20; ++i) {
    std::this_thread::sleep_for(50ms);
    if (keys.blocked() != held) {
      held = keys.blocked();
      i = 0;
    }
  }
  INFO("Encrypts held in the key service: " << held);
  CHECK(held < kCallers);  // the pool, not the callers, bounds them
  CHECK(held <= 4);
  {
    // The pool really is exhausted: a sync call (Decrypt) gets no thread to reach the key
    // service. A Status served on the sync server would fail the same way.
    keys.SetDecryptResult("p");
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 1s);
    ::v2::DecryptRequest req;
    req.set_uid("u");
    req.set_ciphertext(Ct());
    req.set_key_id("transit/k:v3");
    ::v2::DecryptResponse resp;
    const grpc::StatusCode code = v2_stub->Decrypt(&ctx, req, &resp).error_code();
    CHECK((code == grpc::StatusCode::RESOURCE_EXHAUSTED || code == grpc::StatusCode::DEADLINE_EXCEEDED));
    CHECK(keys.blocked() == held);  // no thread took it into the key service
  }

  const double status_before = KmsRequests("v2", "Status");
  const double version_before = KmsRequests("v1beta1", "Version");
  const int health_before = keys.health_calls();
  for (int i = 0; i < 20; ++i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    ::v2::StatusResponse resp;
    const grpc::Status st = v2_stub->Status(&ctx, ::v2::StatusRequest(), &resp);
    INFO(st.error_message());
    REQUIRE(st.ok());
    CHECK(resp.version() == "v2");
    CHECK(resp.healthz() == "ok");
    CHECK(resp.key_id() == "transit/k:v3");
  }
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    ::v1beta1::VersionResponse resp;
    REQUIRE(v1_stub->Version(&ctx, ::v1beta1::VersionRequest(), &resp).ok());
    CHECK(resp.runtime_name() == "trousseau");
    CHECK(resp.runtime_version() == "0.1.0-test");
  }
  // Each was answered from the key service's health and counted once, as a KMS call.
  CHECK(keys.health_calls() - health_before == 20);
  CHECK(KmsRequests("v2", "Status") - status_before == 20);
  CHECK(KmsRequests("v1beta1", "Version") - version_before == 1);

  keys.OpenGate();
  for (auto& t : callers) t.join();
  int ok = 0;
  for (auto c : codes) {
    CHECK((c == grpc::StatusCode::OK || c == grpc::StatusCode::RESOURCE_EXHAUSTED));
    ok += c == grpc::StatusCode::OK ? 1 : 0;
  }
  CHECK(ok >= held);
  server->Shutdown();
  server->Wait();
  loop.Stop();
  loop.Stop();  // idempotent
}

TEST_CASE("Status calls the client cancels are dropped cleanly; the next ones answer",
          "[kms][status_loop]") {
  Server s;
  // 50 Status calls, each cancelled by the client right after it was sent: depending on timing
  // gRPC ends one before the loop sees it (its request tag), while it is answered (its Finish
  // tag comes back not ok) or after. None may wedge or crash the loop.
  constexpr int kCalls = 50;
  grpc::CompletionQueue client_cq;
  std::vector<std::unique_ptr<grpc::ClientContext>> ctxs;
  std::vector<std::unique_ptr<grpc::ClientAsyncResponseReader<::v2::StatusResponse>>> rpcs;
  std::vector<::v2::StatusResponse> resps(kCalls);
  std::vector<grpc::Status> sts(kCalls);
  for (int i = 0; i < kCalls; ++i) {
    ctxs.push_back(std::make_unique<grpc::ClientContext>());
    ctxs.back()->set_deadline(std::chrono::system_clock::now() + 10s);
    rpcs.push_back(s.v2_stub->AsyncStatus(ctxs.back().get(), ::v2::StatusRequest(), &client_cq));
    rpcs.back()->Finish(&resps[i], &sts[i], reinterpret_cast<void*>(static_cast<intptr_t>(i)));
    ctxs.back()->TryCancel();
  }
  int done = 0;
  void* tag = nullptr;
  bool ok = false;
  while (done < kCalls && client_cq.Next(&tag, &ok)) ++done;
  CHECK(done == kCalls);
  for (const auto& st : sts) {
    CHECK((st.ok() || st.error_code() == grpc::StatusCode::CANCELLED));
  }
  client_cq.Shutdown();
  while (client_cq.Next(&tag, &ok)) {
  }
  for (int i = 0; i < 5; ++i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    ::v2::StatusResponse resp;
    REQUIRE(s.v2_stub->Status(&ctx, ::v2::StatusRequest(), &resp).ok());
    CHECK(resp.version() == "v2");
  }
}

TEST_CASE("the status loop refuses a wrong order of use", "[kms][status_loop][negative]") {
  FakeKeyService keys;
  V2Service v2{keys};
  fakes::TempDir dir;
  std::unique_ptr<grpc::Server> server;
  {
    StatusLoop other{&v2, nullptr};  // never started: its queue is drained by its destructor
    grpc::ServerBuilder b;
    b.AddListeningPort("unix:" + dir.Path("a.sock"), grpc::InsecureServerCredentials());
    b.RegisterService(&v2);
    other.AddTo(b);
    server = b.BuildAndStart();
    REQUIRE(server != nullptr);
    StatusLoop loop{&v2, nullptr};
    const absl::Status st = loop.Start(*server);  // no AddTo: no queue
    CHECK(st.code() == absl::StatusCode::kFailedPrecondition);
    CHECK_THAT(std::string(st.message()), Contains("not added to the server"));
    server->Shutdown();
    server.reset();
  }
  V2Service v2b{keys};  // a service registers with one server only
  {
    StatusLoop loop{&v2b, nullptr};
    grpc::ServerBuilder b;
    b.AddListeningPort("unix:" + dir.Path("kms.sock"), grpc::InsecureServerCredentials());
    b.RegisterService(&v2b);
    loop.AddTo(b);
    server = b.BuildAndStart();
    REQUIRE(server != nullptr);
    REQUIRE(loop.Start(*server).ok());
    const absl::Status again = loop.Start(*server);
    CHECK(again.code() == absl::StatusCode::kFailedPrecondition);
    CHECK_THAT(std::string(again.message()), Contains("already started"));
  }  // the loop's destructor shuts the server down, drains the queue and joins its thread
  server->Wait();
  server.reset();
}

TEST_CASE("a refused call frees nothing it did not take", "[kms][limits][negative]") {
  InFlightLimit l("Encrypt", "limits.max_in_flight.encrypt", 1);
  REQUIRE(l.TryAcquire());
  CHECK_FALSE(l.TryAcquire());
  CHECK_FALSE(l.TryAcquire());
  CHECK(l.in_flight() == 1);
  l.Release();
  CHECK(l.in_flight() == 0);
  CHECK(l.TryAcquire());
  CHECK_THAT(l.RefusalMessage(), Contains("limits.max_in_flight.encrypt = 1"));
}

// Live threads of this process named as gRPC names its sync-server threads.
int SyncServerThreads() {
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(e.path() / "comm");
    std::string name;
    std::getline(comm, name);
    if (name.rfind("grpcpp_sync_ser", 0) == 0) ++n;
  }
  return n;
}

// performance.max_idle_threads reaches gRPC: after a burst of 12 held Encrypts, the threads
// left waiting are min(setting, limits) + kMinPollers; the rest ended.
TEST_CASE("after a burst the sync server keeps max_idle_threads + 2 threads, no more",
          "[kms][limits][threads]") {
  const uint32_t idle = GENERATE(0u, 6u);
  INFO("max_idle_threads = " << idle);
  const int before = SyncServerThreads();
  fakes::TempDir dir;
  FakeKeyService keys;
  keys.SetEncryptResult(Wrapped(Ct(), "transit/k:v3"));
  CallLimits limits{32, 32};
  V2Service v2{keys, &limits};
  V1Beta1Service v1{keys, "0.1.0-test", &limits};
  StatusLoop loop{&v2, &v1};
  const std::string addr = "unix:" + dir.Path("kms.sock");
  grpc::ServerBuilder b;
  ConfigureServer(b, limits, idle);  // as main() does with the setting
  b.AddListeningPort(addr, grpc::InsecureServerCredentials());
  b.RegisterService(&v2);
  b.RegisterService(&v1);
  loop.AddTo(b);
  std::unique_ptr<grpc::Server> server = b.BuildAndStart();
  REQUIRE(server != nullptr);
  REQUIRE(loop.Start(*server).ok());
  auto stub = ::v2::KeyManagementService::NewStub(
      grpc::CreateChannel(addr, grpc::InsecureChannelCredentials()));

  constexpr int kCallers = 12;
  keys.CloseGate();
  std::vector<grpc::StatusCode> codes(kCallers, grpc::StatusCode::UNKNOWN);
  std::vector<std::thread> callers = StartEncrypts(*stub, codes);
  REQUIRE(keys.WaitForBlocked(kCallers, 20s));
  // Every call holds a thread of its own, and two more wait for work.
  CHECK(SyncServerThreads() - before >= kCallers);
  keys.OpenGate();
  for (auto& t : callers) t.join();
  for (auto c : codes) CHECK(c == grpc::StatusCode::OK);

  // Threads beyond the kept ones end as they finish; give them time to go.
  const int kept = static_cast<int>(idle) + kMinPollers;
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (SyncServerThreads() - before > kept && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(20ms);
  }
  std::this_thread::sleep_for(200ms);  // and none of the kept ones ends later
  CHECK(SyncServerThreads() - before == kept);

  server->Shutdown();
  server->Wait();
  loop.Stop();
}

TEST_CASE("the thread budget keeps room for the kept threads", "[kms][limits][threads]") {
  CallLimits small{2, 3};
  CallLimits big{512, 512};
  // The default keeps the budget it always had: both limits twice, 16 kept and 2 pollers.
  CHECK(ServerThreadBudget(small) == 2 * 5 + 18);
  CHECK(ServerThreadBudget(big) == 2 * 1024 + 18);
  CHECK(MaxPollers(small) == 5 + 2);
  CHECK(MaxPollers(big) == 16 + 2);
  // More kept threads than the default: they are counted in the budget; never above the limits.
  CHECK(MaxPollers(big, 256) == 256 + 2);
  CHECK(ServerThreadBudget(big, 256) == 2 * 1024 + 256 + 2);
  CHECK(MaxPollers(small, 256) == 5 + 2);
  CHECK(ServerThreadBudget(small, 256) == 2 * 5 + 18);
  CHECK(MaxPollers(big, 0) == 2);
  CHECK(ServerThreadBudget(big, 0) == 2 * 1024 + 18);
}

}  // namespace
}  // namespace trousseau::kms
