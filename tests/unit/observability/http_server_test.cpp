// The operations listener over a real loopback socket, with a fake KeyService behind /readyz.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include <civetweb.h>

#include "fakes/fake_key_service.h"
#include "observability/http_server.h"
#include "observability/probes.h"

using namespace trousseau;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

namespace {

int Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  return fd;
}

// Sends `raw`, reads until the server closes (or 5 s pass); returns what came back.
std::string Exchange(int port, const std::string& raw) {
  const int fd = Connect(port);
  size_t sent = 0;
  while (sent < raw.size()) {
    const ssize_t n = send(fd, raw.data() + sent, raw.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may close early on an oversize request
    sent += static_cast<size_t>(n);
  }
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

std::string Get(int port, const std::string& path, const std::string& method = "GET") {
  return Exchange(port, method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
}

std::string Body(const std::string& response) {
  const size_t at = response.find("\r\n\r\n");
  return at == std::string::npos ? "" : response.substr(at + 4);
}

struct Fixture {
  fakes::FakeKeyService keys;
  std::atomic<int> metrics_calls{0};
  std::string token_problem;
  std::unique_ptr<observability::HttpServer> server;

  explicit Fixture(observability::HttpOptions opts = {}) {
    observability::InitHttpLibrary();
    if (opts.listen.empty()) opts.listen = "127.0.0.1:0";
    observability::HttpHandlers h;
    h.livez = [] { return observability::ProbeResult{true, "ok"}; };
    h.readyz = [this] {
      return observability::Readiness(keys, [this] { return token_problem; });
    };
    h.metrics = [this] {
      ++metrics_calls;
      return std::string("# TYPE x counter\nx 1\n");
    };
    auto s = observability::HttpServer::Start(opts, std::move(h));
    INFO(s.status().ToString());
    REQUIRE(s.ok());
    server = std::move(*s);
    REQUIRE(server->port() > 0);
  }
  int port() const { return server->port(); }
};

}  // namespace

TEST_CASE("/readyz and /healthz follow the KeyService's health, with a one-line reason") {
  Fixture f;
  f.keys.SetHealth({"last Vault check failed: vault https://v:8200: connection refused", ""});
  std::string r = Get(f.port(), "/readyz");
  CHECK_THAT(r, StartsWith("HTTP/1.1 503"));
  CHECK_THAT(r, Contains("Content-Type: text/plain"));
  CHECK(Body(r) == "last Vault check failed: vault https://v:8200: connection refused\n");
  CHECK_THAT(Get(f.port(), "/healthz"), StartsWith("HTTP/1.1 503"));

  // Healthy but the key is not known yet: still not ready.
  f.keys.SetHealth({"ok", ""});
  r = Get(f.port(), "/readyz");
  CHECK_THAT(r, StartsWith("HTTP/1.1 503"));
  CHECK(Body(r) == "transit key not known yet\n");

  f.keys.SetHealth({"ok", "transit/k:v1"});
  r = Get(f.port(), "/readyz");
  CHECK_THAT(r, StartsWith("HTTP/1.1 200"));
  CHECK(Body(r) == "ok\n");
  CHECK(Body(Get(f.port(), "/healthz")) == "ok\n");

  // Healthy but degraded (a secondary Vault down, docs/secondary.md): 200 with the detail.
  f.keys.SetHealth({"ok", "transit/k:v1|unwrapped", "secondary Vault https://b:8200 unavailable"});
  r = Get(f.port(), "/readyz");
  CHECK_THAT(r, StartsWith("HTTP/1.1 200"));
  CHECK(Body(r) == "ok; secondary Vault https://b:8200 unavailable\n");
  f.keys.SetHealth({"ok", "transit/k:v1"});

  // The token source's own view counts too; a multi-line reason is folded onto one line.
  f.token_problem = "token invalid: Vault login failed:\npermission denied";
  r = Get(f.port(), "/readyz");
  CHECK_THAT(r, StartsWith("HTTP/1.1 503"));
  CHECK(Body(r) == "token invalid: Vault login failed: permission denied\n");
}

TEST_CASE("/livez and /metrics") {
  Fixture f;
  std::string r = Get(f.port(), "/livez");
  CHECK_THAT(r, StartsWith("HTTP/1.1 200"));
  CHECK(Body(r) == "ok\n");
  r = Get(f.port(), "/metrics");
  CHECK_THAT(r, StartsWith("HTTP/1.1 200"));
  CHECK_THAT(r, Contains("Content-Type: text/plain; version=0.0.4"));
  CHECK_THAT(r, Contains("Connection: close"));
  CHECK(Body(r) == "# TYPE x counter\nx 1\n");
  // HEAD: headers only.
  r = Get(f.port(), "/metrics", "HEAD");
  CHECK_THAT(r, StartsWith("HTTP/1.1 200"));
  CHECK(Body(r).empty());
}

TEST_CASE("anything else is 404, other methods 405, and no file is served") {
  Fixture f;
  for (const char* path : {"/", "/metrics/", "/livez2", "/index.html", "/../../etc/passwd",
                           "/%2e%2e/etc/passwd", "/metrics?x=1/../../etc/passwd"}) {
    INFO(path);
    const std::string r = Get(f.port(), path);
    if (std::string(path).rfind("/metrics?", 0) == 0) {
      CHECK_THAT(r, StartsWith("HTTP/1.1 200"));  // a query string does not change the path
    } else {
      CHECK_THAT(r, StartsWith("HTTP/1.1 404"));
    }
    CHECK_THAT(r, !Contains("root:"));
  }
  for (const char* m : {"POST", "PUT", "DELETE", "PATCH"}) {
    INFO(m);
    const std::string r = Get(f.port(), "/metrics", m);
    CHECK_THAT(r, StartsWith("HTTP/1.1 405"));
    CHECK_THAT(r, Contains("Allow: GET, HEAD"));
  }
}

TEST_CASE("an oversize request is refused without reaching a handler") {
  Fixture f;
  const int before = f.metrics_calls.load();
  const std::string big = "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: " + std::string(64 * 1024, 'a') +
                          "\r\n\r\n";
  const std::string r = Exchange(f.port(), big);
  CHECK_THAT(r, !StartsWith("HTTP/1.1 200"));
  CHECK(f.metrics_calls.load() == before);
  // The listener still serves.
  CHECK_THAT(Get(f.port(), "/metrics"), StartsWith("HTTP/1.1 200"));
}

TEST_CASE("slow clients are cut off by the request timeout and cannot hold the workers") {
  observability::HttpOptions opts;
  opts.request_timeout_ms = 500;
  Fixture f(opts);
  // More half-sent requests than worker threads.
  std::vector<int> held;
  for (int i = 0; i < 4; ++i) {
    const int fd = Connect(f.port());
    const std::string half = "GET /livez HTTP/1.1\r\nHost: x\r\n";
    REQUIRE(send(fd, half.data(), half.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(half.size()));
    held.push_back(fd);
  }
  // Within a few timeouts the listener answers a well-formed request again.
  const auto t0 = std::chrono::steady_clock::now();
  const std::string r = Get(f.port(), "/livez");
  const auto waited = std::chrono::steady_clock::now() - t0;
  CHECK_THAT(r, StartsWith("HTTP/1.1 200"));
  CHECK(waited < std::chrono::seconds(5));
  for (int fd : held) close(fd);
}

TEST_CASE("a port already in use fails Start with a message naming http.listen") {
  Fixture f;
  observability::HttpOptions opts;
  opts.listen = "127.0.0.1:" + std::to_string(f.port());
  auto s = observability::HttpServer::Start(opts, {});
  REQUIRE_FALSE(s.ok());
  CHECK_THAT(std::string(s.status().message()), Contains("http.listen"));
}

// The default build links the civetweb of scripts/build-civetweb (issue 11): no TLS, no file
// serving, no CGI, no websockets; IPv6 kept for http.listen "[::1]:port". Debian's shared
// libcivetweb (-DTROUSSEAU_LISTENER_LIBS=system) has TLS (dlopen), files and CGI: not checked.
TEST_CASE("the linked civetweb has only the listener's features", "[civetweb]") {
#if defined(TROUSSEAU_CIVETWEB_STATIC)
  CHECK(mg_check_feature(1) == 0);    // files
  CHECK(mg_check_feature(2) == 0);    // TLS
  CHECK(mg_check_feature(4) == 0);    // CGI
  CHECK(mg_check_feature(8) != 0);    // IPv6
  CHECK(mg_check_feature(16) == 0);   // websockets
  CHECK(mg_check_feature(32) == 0);   // Lua
  CHECK(mg_check_feature(128) == 0);  // caching
#else
  SUCCEED("system civetweb: features are Debian's");
#endif
}

TEST_CASE("an IPv6 loopback listener answers when the host has ::1", "[civetweb]") {
#if defined(TROUSSEAU_CIVETWEB_STATIC)
  const int probe = socket(AF_INET6, SOCK_STREAM, 0);
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  const bool have_v6 = probe >= 0 && bind(probe, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  if (probe >= 0) close(probe);
  if (!have_v6) {
    WARN("no IPv6 loopback on this host");
    return;
  }
  observability::HttpOptions opts;
  opts.listen = "[::1]:0";
  Fixture f(opts);
  const int fd = socket(AF_INET6, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  a.sin6_port = htons(static_cast<uint16_t>(f.port()));
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  const std::string req = "GET /livez HTTP/1.1\r\nHost: [::1]\r\n\r\n";
  REQUIRE(send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size()));
  std::string out;
  char buf[1024];
  for (ssize_t n; (n = recv(fd, buf, sizeof(buf), 0)) > 0;) out.append(buf, static_cast<size_t>(n));
  close(fd);
  CHECK_THAT(out, StartsWith("HTTP/1.1 200"));
  CHECK(Body(out) == "ok\n");
#else
  SUCCEED("system civetweb: Debian builds it without IPv6");
#endif
}
