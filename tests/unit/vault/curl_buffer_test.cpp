// libcurl's own allocations on the Vault path (docs/performance.md, change 17): every heap block
// it frees is wiped (wipe-on-free), so how big its per-request blocks are is CPU per KMS call.
// Its own executable: curl_global_init_mem must be the first libcurl initialisation in the
// process for the counting allocator to see every block.
#include <curl/curl.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>

#include "fakes/temp_dir.h"
#include "fakes/test_pki.h"
#include "fakes/tls_test_server.h"
#include "vault/curl_transport.h"

namespace trousseau::vault {
namespace {

using namespace std::chrono_literals;
using fakes::GetTestPki;
using fakes::TlsTestServer;

std::atomic<size_t> g_largest{0};

void Note(size_t n) {
  size_t cur = g_largest.load();
  while (n > cur && !g_largest.compare_exchange_weak(cur, n)) {
  }
}
void* CountingMalloc(size_t n) {
  Note(n);
  return std::malloc(n);
}
void CountingFree(void* p) { std::free(p); }
void* CountingRealloc(void* p, size_t n) {
  Note(n);
  return std::realloc(p, n);
}
char* CountingStrdup(const char* s) {
  const size_t n = std::strlen(s) + 1;
  Note(n);
  auto* d = static_cast<char*>(std::malloc(n));
  if (d != nullptr) std::memcpy(d, s, n);
  return d;
}
void* CountingCalloc(size_t nmemb, size_t size) {
  Note(nmemb * size);
  return std::calloc(nmemb, size);
}

std::unique_ptr<CurlTransport> Make(const std::string& address, const std::string& ca_file) {
  static const bool inited =
      curl_global_init_mem(CURL_GLOBAL_DEFAULT, &CountingMalloc, &CountingFree, &CountingRealloc,
                           &CountingStrdup, &CountingCalloc) == CURLE_OK;
  REQUIRE(inited);
  REQUIRE(CurlTransport::GlobalInit().ok());
  config::TlsConfig t;
  t.ca_file = ca_file;
  auto tls = TlsMaterial::Load(t);
  REQUIRE(tls.ok());
  config::VaultConfig v;
  v.addresses = {address};
  v.transit_key = "kubernetes";
  v.connect_timeout = 2000ms;
  v.request_timeout = 5000ms;
  auto tr = CurlTransport::Create(v, *tls);
  REQUIRE(tr.ok());
  return std::move(*tr);
}

HttpRequest Post(const SecretBuffer* body) {
  HttpRequest r;
  r.method = HttpRequest::Method::kPost;
  r.path = "/v1/transit/encrypt/kubernetes";
  r.body = body;
  r.deadline = std::chrono::steady_clock::now() + 10s;
  return r;
}

TEST_CASE("A Transit-sized request makes libcurl allocate no 64 KiB upload buffer", "[curl][tls]") {
  fakes::TempDir dir;
  const std::string ca = dir.Write("ca.pem", GetTestPki().ca_pem);
  TlsTestServer server(GetTestPki().cert_pem, GetTestPki().key_pem);
  server.SetResponse({200, R"({"data":{"ciphertext":"vault:v1:abc"}})", {}, false});
  auto t = Make(server.address(), ca);
  const SecretBuffer body = SecretBuffer::CopyOf(R"({"plaintext":"c2VlZHNlZWRzZWVkc2VlZA=="})");
  // The first request also connects (handshake buffers): measure the second, kept-alive one.
  REQUIRE(t->Send(Post(&body)).ok());
  g_largest = 0;
  auto r = t->Send(Post(&body));
  REQUIRE(r.ok());
  CHECK(r->status == 200);
  // libcurl's default upload buffer is 65,536 bytes, allocated and freed per TLS transfer; ours
  // is its minimum, 16 KiB (CURLOPT_UPLOAD_BUFFERSIZE).
  CHECK(g_largest.load() > 0);
  CHECK(g_largest.load() < 65536);
}

TEST_CASE("A request larger than the upload buffer arrives whole", "[curl][tls]") {
  fakes::TempDir dir;
  const std::string ca = dir.Write("ca.pem", GetTestPki().ca_pem);
  TlsTestServer server(GetTestPki().cert_pem, GetTestPki().key_pem);
  auto t = Make(server.address(), ca);
  // Over libcurl's 64 KiB "send with the headers" limit, so it goes out through the upload
  // buffer in 16 KiB pieces; every byte distinct from its neighbours.
  std::string big = R"({"plaintext":")";
  for (size_t i = 0; big.size() < 200 * 1024; ++i) big += static_cast<char>('A' + (i * 7) % 26);
  big += R"("})";
  const SecretBuffer body = SecretBuffer::CopyOf(big);
  auto r = t->Send(Post(&body));
  REQUIRE(r.ok());
  auto reqs = server.requests();
  REQUIRE(reqs.size() == 1);
  CHECK(reqs[0].body.size() == big.size());
  CHECK(reqs[0].body == big);
}

}  // namespace
}  // namespace trousseau::vault
