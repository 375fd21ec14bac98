// CurlTransport against an in-process HTTPS server (TlsTestServer) with the test PKI: the
// request on the wire, pinned trust, SPKI pins, mTLS, server_name, failover, standby redirects,
// the response size cap and the request timeout.
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <thread>

#include "common/base64.h"
#include "fakes/log_capture.h"
#include "fakes/temp_dir.h"
#include "fakes/test_pki.h"
#include "fakes/tls_test_server.h"
#include "observability/metrics.h"
#include "vault/curl_transport.h"

namespace trousseau::vault {
namespace {

using namespace std::chrono_literals;
using Catch::Contains;
using fakes::GetTestPki;
using fakes::TlsTestServer;

struct Pki {
  fakes::TempDir dir;
  std::string ca, ca2, cert, key;
  Pki() {
    const auto& p = GetTestPki();
    ca = dir.Write("ca.pem", p.ca_pem);
    ca2 = dir.Write("ca2.pem", p.ca2_pem);
    cert = dir.Write("cert.pem", p.cert_pem);
    key = dir.Write("key.pem", p.key_pem);
  }
  std::shared_ptr<const TlsMaterial> Material(bool client_identity = false,
                                              bool other_ca = false) const {
    config::TlsConfig t;
    t.ca_file = other_ca ? ca2 : ca;
    if (client_identity) {
      t.client_cert_file = cert;
      t.client_key_file = key;
    }
    auto m = TlsMaterial::Load(t);
    REQUIRE(m.ok());
    return *m;
  }
};

// "sha256//" + base64(SHA-256(SubjectPublicKeyInfo DER)) of the test leaf certificate.
std::string LeafPin() {
  const std::string& pem = GetTestPki().cert_pem;
  BIO* b = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509* x = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
  BIO_free(b);
  REQUIRE(x != nullptr);
  unsigned char* der = nullptr;
  EVP_PKEY* pub = X509_get_pubkey(x);  // not X509_get0_pubkey: BoringSSL lacks it
  const int n = i2d_PUBKEY(pub, &der);
  EVP_PKEY_free(pub);
  REQUIRE(n > 0);
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(der, static_cast<size_t>(n), digest);
  OPENSSL_free(der);
  X509_free(x);
  return "sha256//" + base64::Encode(std::string(reinterpret_cast<char*>(digest), sizeof(digest)));
}

config::VaultConfig Cfg(std::vector<std::string> addresses) {
  config::VaultConfig v;
  v.addresses = std::move(addresses);
  v.transit_key = "kubernetes";
  v.connect_timeout = 2000ms;
  v.request_timeout = 5000ms;
  return v;
}

std::unique_ptr<CurlTransport> Make(const config::VaultConfig& cfg,
                                    std::shared_ptr<const TlsMaterial> tls) {
  REQUIRE(CurlTransport::GlobalInit().ok());
  auto t = CurlTransport::Create(cfg, std::move(tls));
  REQUIRE(t.ok());
  return std::move(*t);
}

HttpRequest Req(HttpRequest::Method m, std::string path, const SecretBuffer* body = nullptr,
                std::shared_ptr<const SecretBuffer> token = nullptr) {
  HttpRequest r;
  r.method = m;
  r.path = std::move(path);
  r.body = body;
  r.token = std::move(token);
  r.deadline = std::chrono::steady_clock::now() + 10s;
  return r;
}

// A request expected to fail: the transport retries failures (with pauses) until shortly
// before the deadline, so give it little time.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr auto kFailingDeadline = 3000ms;  // a TLS handshake under TSan can take longer than 600 ms
#else
constexpr auto kFailingDeadline = 600ms;
#endif

HttpRequest Failing(std::string path) {
  HttpRequest r = Req(HttpRequest::Method::kGet, std::move(path));
  r.deadline = std::chrono::steady_clock::now() + kFailingDeadline;
  return r;
}

TEST_CASE("CurlTransport GET carries the Vault headers and returns the answer", "[curl][tls]") {
  Pki pki;
  TlsTestServer server(GetTestPki().cert_pem, GetTestPki().key_pem);
  server.SetResponse({200, R"({"data":{"latest_version":1}})", {}, false});
  auto cfg = Cfg({server.address()});
  cfg.namespace_ = "team-a";
  auto t = Make(cfg, pki.Material());
  auto token = std::make_shared<const SecretBuffer>(SecretBuffer::CopyOf("s.wire-token"));
  auto r = t->Send(Req(HttpRequest::Method::kGet, "/v1/transit/keys/kubernetes", nullptr, token));
  REQUIRE(r.ok());
  CHECK(r->status == 200);
  CHECK(r->body.view() == R"({"data":{"latest_version":1}})");
  CHECK(r->node == server.address());
  auto reqs = server.requests();
  REQUIRE(reqs.size() == 1);
  CHECK(reqs[0].method == "GET");
  CHECK(reqs[0].path == "/v1/transit/keys/kubernetes");
  CHECK(reqs[0].Header("x-vault-token") == "s.wire-token");
  CHECK(reqs[0].Header("x-vault-request") == "true");
  CHECK(reqs[0].Header("x-vault-namespace") == "team-a");
  CHECK(reqs[0].Header("user-agent") == "trousseau");
}

TEST_CASE("CurlTransport returns the Date header (for doctor's clock-skew check)", "[curl][tls]") {
  Pki pki;
  TlsTestServer server(GetTestPki().cert_pem, GetTestPki().key_pem);
  server.SetResponse({200, "{}", {{"Date", "Tue, 01 Dec 2026 20:57:38 GMT"}}, false});
  auto t = Make(Cfg({server.address()}), pki.Material());
  auto r = t->Send(Req(HttpRequest::Method::kGet, "/v1/sys/health"));
  REQUIRE(r.ok());
  CHECK(r->date == "Tue, 01 Dec 2026 20:57:38 GMT");
  CHECK(r->redirect_location.empty());

  server.SetResponse({200, "{}", {}, false});  // no Date header: empty, not stale
  auto r2 = t->Send(Req(HttpRequest::Method::kGet, "/v1/sys/health"));
  REQUIRE(r2.ok());
  CHECK(r2->date.empty());
}

TEST_CASE("CurlTransport POST sends the body; no token, no token header", "[curl][tls]") {
  Pki pki;
  TlsTestServer server(GetTestPki().cert_pem, GetTestPki().key_pem);
  server.SetResponse({400, R"({"errors":["bad"]})", {}, false});
  auto t = Make(Cfg({server.address()}), pki.Material());
  const SecretBuffer body = SecretBuffer::CopyOf(R"({"plaintext":"c2VlZA=="})");
  auto r = t->Send(Req(HttpRequest::Method::kPost, "/v1/transit/encrypt/kubernetes", &body));
  REQUIRE(r.ok());
  CHECK(r->status == 400);  // HTTP errors are answers, for the caller to map
  auto reqs = server.requests();
  REQUIRE(reqs.size() == 1);
  CHECK(reqs[0].method == "POST");
  CHECK(reqs[0].body == R"({"plaintext":"c2VlZA=="})");
  CHECK(reqs[0].Header("content-type") == "application/json");
  CHECK(reqs[0].headers.count("x-vault-token") == 0);
  CHECK(reqs[0].headers.count("x-vault-namespace") == 0);
}

TEST_CASE("CurlTransport trusts only the configured CA", "[curl][tls][negative]") {
  Pki pki;
  TlsTestServer server(GetTestPki().cert_pem, GetTestPki().key_pem);
  auto t = Make(Cfg({server.address()}), pki.Material(false, /*other_ca=*/true));
  auto r = t->Send(Failing("/v1/sys/health"));
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == absl::StatusCode::kUnavailable);
  CHECK_THAT(std::string(r.status().message()), Contains("certificate verification failed"));
  CHECK(server.requests().empty());
}

TEST_CASE("CurlTransport enforces SPKI pins", "[curl][tls]") {
  Pki pki;
  TlsTestServer server(GetTestPki().cert_pem, GetTestPki().key_pem);
  {
    auto cfg = Cfg({server.address()});
    cfg.tls.spki_pins = {"sha256//" + base64::Encode(std::string(32, 'x')), LeafPin()};
    auto t = Make(cfg, pki.Material());
    auto r = t->Send(Req(HttpRequest::Method::kGet, "/v1/sys/health"));
    REQUIRE(r.ok());
    CHECK(r->status == 200);
  }
  {
    auto cfg = Cfg({server.address()});
    cfg.tls.spki_pins = {"sha256//" + base64::Encode(std::string(32, 'x'))};
    auto t = Make(cfg, pki.Material());
    auto r = t->Send(Failing("/v1/sys/health"));
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == absl::StatusCode::kUnavailable);
    CHECK_THAT(std::string(r.status().message()), Contains("SPKI pin"));
  }
  CHECK(server.requests().size() == 1);  // the mismatched connection never sent the request
}

TEST_CASE("CurlTransport presents the client identity for mTLS", "[curl][tls]") {
  Pki pki;
  TlsTestServer server(GetTestPki().cert_pem, GetTestPki().key_pem, GetTestPki().ca_pem);
  {
    auto t = Make(Cfg({server.address()}), pki.Material(/*client_identity=*/true));
    auto r = t->Send(Req(HttpRequest::Method::kGet, "/v1/sys/health"));
    REQUIRE(r.ok());
    CHECK(r->status == 200);
  }
  {
    auto t = Make(Cfg({server.address()}), pki.Material(/*client_identity=*/false));
    auto r = t->Send(Failing("/v1/sys/health"));
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == absl::StatusCode::kUnavailable);
  }
  CHECK(server.requests().size() == 1);
  CHECK(server.failed_handshakes() >= 1);
}

TEST_CASE("CurlTransport verifies server_name while connecting to the address", "[curl][tls]") {
  Pki pki;
  TlsTestServer server(GetTestPki().cert_pem, GetTestPki().key_pem);
  {
    auto cfg = Cfg({server.address()});
    cfg.tls.server_name = "localhost";  // in the certificate's SAN
    auto t = Make(cfg, pki.Material());
    auto r = t->Send(Req(HttpRequest::Method::kGet, "/v1/sys/health"));
    REQUIRE(r.ok());
    CHECK(r->status == 200);
    CHECK(r->node == server.address());
    auto reqs = server.requests();
    REQUIRE(reqs.size() == 1);
    CHECK_THAT(reqs[0].Header("host"), Contains("localhost"));
  }
  {
    auto cfg = Cfg({server.address()});
    cfg.tls.server_name = "vault.example.com";  // not in the certificate
    auto t = Make(cfg, pki.Material());
    auto r = t->Send(Failing("/v1/sys/health"));
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == absl::StatusCode::kUnavailable);
  }
}

TEST_CASE("CurlTransport fails over from a 503 or 504 node and prefers the good one",
          "[curl][tls]") {
  const int bad_status = GENERATE(503, 504);
  INFO("HTTP " << bad_status);
  Pki pki;
  fakes::LogCapture cap;
  TlsTestServer a(GetTestPki().cert_pem, GetTestPki().key_pem);
  TlsTestServer b(GetTestPki().cert_pem, GetTestPki().key_pem);
  a.SetResponse({bad_status, R"({"errors":["Vault is sealed"]})", {}, false});
  b.SetResponse({200, "{}", {}, false});
  auto t = Make(Cfg({a.address(), b.address()}), pki.Material());
  CHECK(t->CurrentNode() == a.address());
  auto r = t->Send(Req(HttpRequest::Method::kGet, "/v1/sys/health"));
  REQUIRE(r.ok());
  CHECK(r->status == 200);
  CHECK(r->node == b.address());
  CHECK(t->CurrentNode() == b.address());
  CHECK(cap.events("vault.failover").size() == 1);
  // The next request starts at the good node.
  auto r2 = t->Send(Req(HttpRequest::Method::kGet, "/v1/sys/health"));
  REQUIRE(r2.ok());
  CHECK(a.requests().size() == 1);
  CHECK(b.requests().size() == 2);
}

TEST_CASE("CurlTransport returns the last node's 503 when all are unhealthy", "[curl][tls]") {
  Pki pki;
  TlsTestServer a(GetTestPki().cert_pem, GetTestPki().key_pem);
  TlsTestServer b(GetTestPki().cert_pem, GetTestPki().key_pem);
  a.SetResponse({503, "{}", {}, false});
  b.SetResponse({429, R"({"errors":["rate limited"]})", {}, false});
  auto t = Make(Cfg({a.address(), b.address()}), pki.Material());
  auto r = t->Send(Failing("/v1/sys/health"));
  REQUIRE(r.ok());
  CHECK(r->status == 429);
  CHECK(r->node == b.address());
}

TEST_CASE("CurlTransport follows a standby redirect only to a configured node", "[curl][tls]") {
  Pki pki;
  TlsTestServer standby(GetTestPki().cert_pem, GetTestPki().key_pem);
  TlsTestServer active(GetTestPki().cert_pem, GetTestPki().key_pem);
  standby.SetResponse({307, "", {{"Location", active.address() + "/v1/sys/health"}}, false});
  active.SetResponse({200, R"({"active":true})", {}, false});
  {
    auto t = Make(Cfg({standby.address(), active.address()}), pki.Material());
    auto r = t->Send(Req(HttpRequest::Method::kGet, "/v1/sys/health"));
    REQUIRE(r.ok());
    CHECK(r->status == 200);
    CHECK(r->node == active.address());
    CHECK(r->body.view() == R"({"active":true})");
  }
  {
    auto t = Make(Cfg({standby.address()}), pki.Material());  // active is not configured
    auto r = t->Send(Failing("/v1/sys/health"));
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == absl::StatusCode::kUnavailable);
    CHECK_THAT(std::string(r.status().message()), Contains("not in vault.addresses"));
  }
  CHECK(active.requests().size() == 1);
}

TEST_CASE("CurlTransport caps the response size", "[curl][tls][negative]") {
  Pki pki;
  TlsTestServer server(GetTestPki().cert_pem, GetTestPki().key_pem);
  server.SetResponse({200, std::string(5000, 'x'), {}, false});
  auto cfg = Cfg({server.address()});
  cfg.max_response_bytes = 1000;
  auto t = Make(cfg, pki.Material());
  auto r = t->Send(Failing("/v1/sys/health"));
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == absl::StatusCode::kInternal);
  CHECK_THAT(std::string(r.status().message()), Contains("vault.max_response_bytes"));
  // Not retryable: one node, one request.
  CHECK(server.requests().size() == 1);

  server.SetResponse({200, std::string(1000, 'y'), {}, false});
  auto ok = t->Send(Req(HttpRequest::Method::kGet, "/v1/sys/health"));
  REQUIRE(ok.ok());
  CHECK(ok->body.size() == 1000);
}

TEST_CASE("CurlTransport times out a node that does not answer", "[curl][tls][negative]") {
  Pki pki;
  TlsTestServer server(GetTestPki().cert_pem, GetTestPki().key_pem);
  server.SetResponse({200, "{}", {}, /*hang=*/true});
  auto cfg = Cfg({server.address()});
  cfg.request_timeout = 300ms;  // each attempt really waits this long
  auto t = Make(cfg, pki.Material());
  auto r = t->Send(Failing("/v1/sys/health"));
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == absl::StatusCode::kDeadlineExceeded);
  CHECK_THAT(std::string(r.status().message()), Contains("timed out after"));
}

// trousseau_vault_requests_waiting as /metrics shows it.
double RequestsWaiting() {
  const std::string text = trousseau::metrics::Exposition();
  const std::string key = "\ntrousseau_vault_requests_waiting ";
  const size_t at = text.find(key);
  REQUIRE(at != std::string::npos);
  return std::stod(text.substr(at + key.size()));
}

TEST_CASE("CurlTransport keeps at most kMaxInFlight requests at Vault; others wait, not past "
          "their deadline", "[curl][tls][negative]") {
  Pki pki;
  TlsTestServer server(GetTestPki().cert_pem, GetTestPki().key_pem);
  server.SetResponse({200, "{}", {}, /*hang=*/true});  // every slot stays taken
  auto cfg = Cfg({server.address()});
  cfg.connect_timeout = 4000ms;
  cfg.request_timeout = 4000ms;
  auto t = Make(cfg, pki.Material());
  constexpr size_t kCap = CurlTransport::kMaxInFlight;
  std::vector<std::thread> holders;
  for (size_t i = 0; i < kCap; ++i) {
    holders.emplace_back([&t] {
      HttpRequest r = Req(HttpRequest::Method::kGet, "/v1/sys/health");
      r.deadline = std::chrono::steady_clock::now() + 6s;
      (void)t->Send(r);  // fails: the server never answers
    });
  }
  const auto until = std::chrono::steady_clock::now() + 5s;
  while (t->RequestsInFlight() < kCap && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(5ms);
  }
  REQUIRE(t->RequestsInFlight() == kCap);

  // One more: it never reaches the server, and gets our error before its own deadline.
  const auto started = std::chrono::steady_clock::now();
  HttpRequest extra = Req(HttpRequest::Method::kGet, "/v1/sys/health");
  extra.deadline = started + 600ms;
  auto r = t->Send(extra);
  const auto waited = std::chrono::steady_clock::now() - started;
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == absl::StatusCode::kDeadlineExceeded);
  CHECK_THAT(std::string(r.status().message()),
             Contains("waited for one of the 32 slots for concurrent Vault requests"));
  CHECK(waited >= 400ms);  // it waited for a slot until its deadline less the margin
  CHECK(waited < 600ms + 2s);
  CHECK(t->RequestsInFlight() == kCap);  // the refused one took no slot
  CHECK(RequestsWaiting() == 0);

  // trousseau_vault_requests_waiting counts the requests in the queue while they wait, and drops
  // back to 0 when they leave it.
  std::vector<std::thread> waiters;
  for (int i = 0; i < 2; ++i) {
    waiters.emplace_back([&t] {
      HttpRequest w = Req(HttpRequest::Method::kGet, "/v1/sys/health");
      w.deadline = std::chrono::steady_clock::now() + 2500ms;
      (void)t->Send(w);  // DEADLINE_EXCEEDED: every slot stays taken
    });
  }
  double most = 0;
  const auto poll_until = std::chrono::steady_clock::now() + 2s;
  while (most < 2 && std::chrono::steady_clock::now() < poll_until) {
    most = std::max(most, RequestsWaiting());
    std::this_thread::sleep_for(2ms);
  }
  CHECK(most == 2);
  for (auto& w : waiters) w.join();
  CHECK(RequestsWaiting() == 0);

  for (auto& h : holders) h.join();
  CHECK(t->RequestsInFlight() == 0);  // every slot given back
}

// Sets environment variables for one scope and restores them after.
class ScopedEnv {
 public:
  void Set(const char* name, const std::string& value) {
    Remember(name);
    ::setenv(name, value.c_str(), 1);
  }
  void Unset(const char* name) {
    Remember(name);
    ::unsetenv(name);
  }
  ~ScopedEnv() {
    for (const auto& [name, old] : saved_) {
      if (old) {
        ::setenv(name.c_str(), old->c_str(), 1);
      } else {
        ::unsetenv(name.c_str());
      }
    }
  }

 private:
  void Remember(const char* name) {
    if (saved_.count(name)) return;
    const char* v = ::getenv(name);
    saved_[name] = v ? std::optional<std::string>(v) : std::nullopt;
  }
  std::map<std::string, std::optional<std::string>> saved_;
};

// A TCP listener on 127.0.0.1 that never answers; reports whether anyone connected.
class SilentListener {
 public:
  SilentListener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
    REQUIRE(::listen(fd_, 16) == 0);
    socklen_t len = sizeof(a);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
  }
  ~SilentListener() { ::close(fd_); }
  int port() const { return port_; }
  bool connected() const {  // a pending connection in the backlog
    pollfd p{fd_, POLLIN, 0};
    return ::poll(&p, 1, 0) > 0;
  }

 private:
  int fd_ = -1;
  int port_ = 0;
};

TEST_CASE("CurlTransport refuses a server that offers only TLS 1.0 or 1.1", "[curl][tls][negative]") {
  Pki pki;
  for (int max : {TLS1_VERSION, TLS1_1_VERSION}) {
    INFO("server max version 0x" << std::hex << max);
    TlsTestServer server(GetTestPki().cert_pem, GetTestPki().key_pem);
    server.SetProtocolRange(TLS1_VERSION, max);
    auto t = Make(Cfg({server.address()}), pki.Material());
    auto r = t->Send(Failing("/v1/sys/health"));
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == absl::StatusCode::kUnavailable);
    CHECK(server.requests().empty());
    CHECK(server.failed_handshakes() >= 1);
  }
  // Control: the same server setup with TLS 1.2 allowed serves, so the refusal is the version.
  TlsTestServer ok(GetTestPki().cert_pem, GetTestPki().key_pem);
  ok.SetProtocolRange(TLS1_VERSION, TLS1_2_VERSION);
  auto t = Make(Cfg({ok.address()}), pki.Material());
  auto r = t->Send(Req(HttpRequest::Method::kGet, "/v1/sys/health"));
  REQUIRE(r.ok());
  CHECK(r->status == 200);
}

TEST_CASE("CurlTransport ignores proxy settings in the environment", "[curl][tls]") {
  Pki pki;
  TlsTestServer server(GetTestPki().cert_pem, GetTestPki().key_pem);
  SilentListener proxy;
  const std::string url = "http://127.0.0.1:" + std::to_string(proxy.port());
  ScopedEnv env;
  for (const char* name : {"HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY"}) {
    env.Set(name, url);
  }
  env.Unset("NO_PROXY");
  env.Unset("no_proxy");
  auto t = Make(Cfg({server.address()}), pki.Material());
  HttpRequest req = Req(HttpRequest::Method::kGet, "/v1/sys/health");
  req.deadline = std::chrono::steady_clock::now() + 3s;
  auto r = t->Send(req);
  CHECK_FALSE(proxy.connected());
  REQUIRE(r.ok());
  CHECK(r->status == 200);
  CHECK(server.requests().size() == 1);
}

TEST_CASE("CurlTransport never offers HTTP/2 (ALPN)", "[curl][tls]") {
  Pki pki;
  TlsTestServer server(GetTestPki().cert_pem, GetTestPki().key_pem);
  auto t = Make(Cfg({server.address()}), pki.Material());
  auto r = t->Send(Req(HttpRequest::Method::kGet, "/v1/sys/health"));
  REQUIRE(r.ok());
  const auto offered = server.alpn_offered();
  REQUIRE(offered.size() == 1);  // the server saw the ClientHello's ALPN list
  CHECK(offered[0] == std::vector<std::string>{"http/1.1"});
  for (const auto& name : offered[0]) CHECK(name.rfind("h2", 0) != 0);
}

TEST_CASE("CurlTransport does not trust the system CA store, even one that holds the server's CA",
          "[curl][tls][negative]") {
  // OpenSSL's default verify paths (what a context would trust by default) pointed at a file and
  // a directory holding the CA that signed the server's certificate; the configured CA is
  // another one. Verification must still fail.
  Pki pki;
  fakes::TempDir sys;
  const std::string ca_file = sys.Write("system-ca.pem", GetTestPki().ca_pem);
  {  // the hashed name OpenSSL looks up in a CA directory
    BIO* b = BIO_new_mem_buf(GetTestPki().ca_pem.data(), static_cast<int>(GetTestPki().ca_pem.size()));
    X509* x = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
    BIO_free(b);
    REQUIRE(x != nullptr);
    char name[16];
    std::snprintf(name, sizeof(name), "%08lx.0", X509_subject_name_hash(x));
    X509_free(x);
    sys.Write(name, GetTestPki().ca_pem);
  }
  ScopedEnv env;
  env.Set("SSL_CERT_FILE", ca_file);
  env.Set("SSL_CERT_DIR", sys.path());
  env.Set("CURL_CA_BUNDLE", ca_file);
  {  // control: a context that loads the default paths now trusts the server's CA
    SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
    REQUIRE(SSL_CTX_set_default_verify_paths(ctx) == 1);
    const int n = sk_X509_OBJECT_num(X509_STORE_get0_objects(SSL_CTX_get_cert_store(ctx)));
    CHECK(n >= 1);  // the file's CA was loaded
    SSL_CTX_free(ctx);
  }
  TlsTestServer server(GetTestPki().cert_pem, GetTestPki().key_pem);
  auto t = Make(Cfg({server.address()}), pki.Material(false, /*other_ca=*/true));
  auto r = t->Send(Failing("/v1/sys/health"));
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(std::string(r.status().message()), Contains("certificate verification failed"));
  CHECK(server.requests().empty());
}

}  // namespace
}  // namespace trousseau::vault

namespace trousseau::vault {
namespace {

// The default build links the HTTPS-only libcurl of scripts/build-curl (issue 11): `trousseau
// version` prints these lines so an operator can see which build runs. Against Debian's
// libcurl.so (-DTROUSSEAU_CURL=system) only the linkage line is checked.
TEST_CASE("The linked libcurl is the HTTPS-only static build", "[curl]") {
  const std::string linkage = CurlTransport::LibraryLinkage();
  REQUIRE((linkage == "static" || linkage == "shared"));
#if defined(OPENSSL_IS_BORINGSSL)
  CHECK_THAT(CurlTransport::LibraryVersion(), Contains(" BoringSSL"));  // the same static copy
  CHECK_THAT(CurlTransport::LibraryVersion(), !Contains("OpenSSL"));
#else
  CHECK_THAT(CurlTransport::LibraryVersion(), Contains("OpenSSL/3."));
#endif
  if (linkage != "static") return;
  CHECK(CurlTransport::LibraryProtocols() == "http https");
  const std::string features = " " + CurlTransport::LibraryFeatures() + " ";
  CHECK_THAT(features, Contains(" SSL "));
  CHECK_THAT(features, Contains(" AsynchDNS "));  // threaded resolver: lookups honour timeouts
  for (const char* absent : {" libz ", " brotli ", " zstd ", " IDN ", " PSL ", " HTTP2 ", " HTTP3 ",
                             " GSS-API ", " Kerberos ", " SPNEGO ", " NTLM ", " UnixSockets ",
                             " HTTPS-proxy ", " alt-svc ", " HSTS ", " TLS-SRP "}) {
    INFO(absent);
    CHECK(features.find(absent) == std::string::npos);
  }
}

}  // namespace
}  // namespace trousseau::vault
