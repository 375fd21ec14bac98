// CurlTransport without a Vault: what Create refuses, and how connection failures, a peer that
// does not speak TLS and an expired deadline come back as status codes.
#include "vault/curl_transport.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fakes/log_capture.h"
#include "fakes/temp_dir.h"
#include "fakes/test_pki.h"

namespace trousseau::vault {
namespace {

using namespace std::chrono_literals;
using Catch::Contains;

std::shared_ptr<const TlsMaterial> CaOnly() {
  static fakes::TempDir dir;
  static const std::string ca = dir.Write("ca.pem", fakes::GetTestPki().ca_pem);
  config::TlsConfig t;
  t.ca_file = ca;
  auto m = TlsMaterial::Load(t);
  REQUIRE(m.ok());
  return *m;
}

// A port on 127.0.0.1 that nothing listens on: bound, then closed.
int ClosedPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  socklen_t len = sizeof(a);
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  ::close(fd);
  return ntohs(a.sin_port);
}

config::VaultConfig Cfg(std::vector<std::string> addresses) {
  config::VaultConfig v;
  v.addresses = std::move(addresses);
  v.transit_key = "kubernetes";
  v.connect_timeout = 1000ms;
  v.request_timeout = 2000ms;
  return v;
}

// Failing requests are retried (with pauses) until shortly before their deadline; tests that
// expect a failure give it this much time so that they stay quick.
constexpr auto kFailBudget = std::chrono::milliseconds(600);

HttpRequest Get(std::chrono::milliseconds budget) {
  HttpRequest r;
  r.method = HttpRequest::Method::kGet;
  r.path = "/v1/sys/health";
  r.deadline = std::chrono::steady_clock::now() + budget;
  return r;
}

struct CurlInit {
  CurlInit() { REQUIRE(CurlTransport::GlobalInit().ok()); }
};

TEST_CASE("CurlTransport::Create refuses anything but https", "[curl][negative]") {
  CurlInit init;
  for (const char* a : {"http://127.0.0.1:8200", "HTTP://vault:8200", "vault:8200", "ftp://x",
                        "", " https://vault:8200"}) {
    INFO(a);
    auto t = CurlTransport::Create(Cfg({"https://ok:8200", a}), CaOnly());
    REQUIRE_FALSE(t.ok());
    CHECK(t.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(t.status().message()), Contains("only https:// is allowed"));
  }
}

TEST_CASE("CurlTransport::Create needs addresses and TLS material", "[curl][negative]") {
  CurlInit init;
  auto none = CurlTransport::Create(Cfg({}), CaOnly());
  REQUIRE_FALSE(none.ok());
  CHECK_THAT(std::string(none.status().message()), Contains("vault.addresses is empty"));
  auto no_tls = CurlTransport::Create(Cfg({"https://127.0.0.1:8200"}), nullptr);
  REQUIRE_FALSE(no_tls.ok());
  CHECK_THAT(std::string(no_tls.status().message()), Contains("TLS material is required"));
  auto ok = CurlTransport::Create(Cfg({"https://a:8200", "https://b:8200"}), CaOnly());
  REQUIRE(ok.ok());
  CHECK((*ok)->CurrentNode() == "https://a:8200");
  CHECK_THAT(CurlTransport::LibraryVersion(), Contains("libcurl"));
}

TEST_CASE("CurlTransport: a closed port is UNAVAILABLE, cannot connect", "[curl][negative]") {
  CurlInit init;
  const std::string node = "https://127.0.0.1:" + std::to_string(ClosedPort());
  auto t = CurlTransport::Create(Cfg({node}), CaOnly());
  REQUIRE(t.ok());
  // The transport retries until shortly before the deadline: keep the deadline short. The
  // answer is the refusal (UNAVAILABLE), not a timeout.
  auto r = (*t)->Send(Get(kFailBudget));
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == absl::StatusCode::kUnavailable);
  CHECK_THAT(std::string(r.status().message()), Contains("cannot connect"));
  CHECK_THAT(std::string(r.status().message()), Contains(node));
}

// Two listeners on 127.0.0.1 that accept each connection and close it at once (no TLS), and
// record which one was hit, in order: the behaviour the failover log lines describe.
class HangUpPair {
 public:
  HangUpPair() {
    for (int i = 0; i < 2; ++i) {
      fd_[i] = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      REQUIRE(::bind(fd_[i], reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
      REQUIRE(::listen(fd_[i], 16) == 0);
      socklen_t len = sizeof(a);
      ::getsockname(fd_[i], reinterpret_cast<sockaddr*>(&a), &len);
      port_[i] = ntohs(a.sin_port);
    }
    REQUIRE(::pipe2(stop_, O_CLOEXEC) == 0);
    thread_ = std::thread([this] {
      for (;;) {
        pollfd p[3] = {{fd_[0], POLLIN, 0}, {fd_[1], POLLIN, 0}, {stop_[0], POLLIN, 0}};
        if (::poll(p, 3, -1) < 0) continue;
        if (p[2].revents != 0) return;
        for (int i = 0; i < 2; ++i) {
          if ((p[i].revents & POLLIN) == 0) continue;
          const int c = ::accept4(fd_[i], nullptr, nullptr, SOCK_CLOEXEC);
          if (c < 0) continue;
          ::close(c);
          std::lock_guard<std::mutex> g(mu_);
          hits_.push_back(i == 0 ? 'a' : 'b');
        }
      }
    });
  }
  ~HangUpPair() {
    (void)!::write(stop_[1], "x", 1);
    thread_.join();
    for (int fd : {fd_[0], fd_[1], stop_[0], stop_[1]}) ::close(fd);
  }
  std::string address(int i) const { return "https://127.0.0.1:" + std::to_string(port_[i]); }
  std::string hits() const {
    std::lock_guard<std::mutex> g(mu_);
    return hits_;
  }

 private:
  int fd_[2] = {-1, -1};
  int port_[2] = {0, 0};
  int stop_[2] = {-1, -1};
  std::thread thread_;
  mutable std::mutex mu_;
  std::string hits_;
};

TEST_CASE("CurlTransport tries every address, in order, on every pass, and logs the failover",
          "[curl][negative]") {
  CurlInit init;
  fakes::LogCapture cap;
  HangUpPair nodes;
  const std::string a = nodes.address(0);
  const std::string b = nodes.address(1);
  auto t = CurlTransport::Create(Cfg({a, b}), CaOnly());
  REQUIRE(t.ok());
  auto r = (*t)->Send(Get(std::chrono::milliseconds(1500)));
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == absl::StatusCode::kUnavailable);
  // What the nodes saw: "abab...", one "ab" per pass (a pass ends only after both failed).
  const std::string hits = nodes.hits();
  INFO("connections in order: " << hits);
  REQUIRE(hits.size() >= 2);
  REQUIRE(hits.size() % 2 == 0);
  for (size_t i = 0; i < hits.size(); ++i) CHECK(hits[i] == (i % 2 == 0 ? 'a' : 'b'));
  const size_t passes = hits.size() / 2;
  // The log tells the same story: a retry line between passes, a failover line per node tried.
  CHECK(cap.events("vault.retry").size() == passes - 1);
  auto warns = cap.events("vault.failover");
  REQUIRE(warns.size() == 2 * passes);
  for (size_t i = 0; i < warns.size(); i += 2) {
    CHECK(warns[i]["node"] == a);
    CHECK(warns[i + 1]["node"] == b);
  }
}

TEST_CASE("CurlTransport: a deadline already passed is DEADLINE_EXCEEDED", "[curl][negative]") {
  CurlInit init;
  auto t = CurlTransport::Create(Cfg({"https://127.0.0.1:" + std::to_string(ClosedPort())}),
                                 CaOnly());
  REQUIRE(t.ok());
  HttpRequest req = Get(0ms);
  req.deadline = std::chrono::steady_clock::now() - 1s;
  auto r = (*t)->Send(req);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == absl::StatusCode::kDeadlineExceeded);
}

TEST_CASE("CurlTransport: a peer that does not speak TLS is UNAVAILABLE", "[curl][negative]") {
  CurlInit init;
  const int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(lfd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  socklen_t len = sizeof(a);
  REQUIRE(::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  REQUIRE(::listen(lfd, 4) == 0);
  // Answers every connection (the transport may retry) in plain HTTP, until shut down.
  std::thread server([lfd] {
    for (;;) {
      const int c = ::accept(lfd, nullptr, nullptr);
      if (c < 0) return;
      const char answer[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
      (void)!::write(c, answer, sizeof(answer) - 1);
      ::shutdown(c, SHUT_RDWR);
      ::close(c);
    }
  });
  const std::string node = "https://127.0.0.1:" + std::to_string(ntohs(a.sin_port));
  auto t = CurlTransport::Create(Cfg({node}), CaOnly());
  REQUIRE(t.ok());
  auto r = (*t)->Send(Get(kFailBudget));
  ::shutdown(lfd, SHUT_RDWR);  // ends the accept loop
  server.join();
  ::close(lfd);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == absl::StatusCode::kUnavailable);
  CHECK_THAT(std::string(r.status().message()), Contains("vault " + node + ": "));
}

// The first connection is hung up at once, every later one is accepted and never answered: the
// last attempt runs into the deadline, and the error still names why the attempts before it
// failed (before the fix it read only "timed out after 52 ms ... 0 bytes received").
TEST_CASE("CurlTransport: a deadline after other failures keeps their cause", "[curl][negative]") {
  CurlInit init;
  const int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(lfd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  socklen_t len = sizeof(a);
  REQUIRE(::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  REQUIRE(::listen(lfd, 16) == 0);
  int stop[2];
  REQUIRE(::pipe2(stop, O_CLOEXEC) == 0);
  std::thread server([lfd, &stop] {
    std::vector<int> held;
    bool first = true;
    for (;;) {
      pollfd p[2] = {{lfd, POLLIN, 0}, {stop[0], POLLIN, 0}};
      if (::poll(p, 2, -1) < 0) continue;
      if (p[1].revents != 0) break;
      const int c = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      if (first) {
        ::close(c);
        first = false;
      } else {
        held.push_back(c);
      }
    }
    for (int c : held) ::close(c);
  });
  const std::string node = "https://127.0.0.1:" + std::to_string(ntohs(a.sin_port));
  auto t = CurlTransport::Create(Cfg({node}), CaOnly());
  REQUIRE(t.ok());
  const HttpRequest req = Get(std::chrono::milliseconds(1200));
  auto r = (*t)->Send(req);
  // answered before the caller's deadline (kDeadlineMargin), so the caller sees this error and
  // not its own bare "Deadline Exceeded"
  const auto answered = std::chrono::steady_clock::now();
  (void)!::write(stop[1], "x", 1);
  server.join();
  for (int fd : {lfd, stop[0], stop[1]}) ::close(fd);
  REQUIRE_FALSE(r.ok());
  const std::string msg(r.status().message());
  INFO(msg);
  CHECK(r.status().code() == absl::StatusCode::kDeadlineExceeded);
  CHECK_THAT(msg, Contains("timed out"));
  CHECK_THAT(msg, Contains("the attempts before it failed with: vault " + node));
  CHECK(answered < req.deadline);
}

}  // namespace
}  // namespace trousseau::vault

namespace trousseau::vault {
namespace {

TEST_CASE("CurlTransport destroys idle kept handles beyond kKeepIdleHandles only once quiet",
          "[curl]") {
  CurlInit init;
  // A listener that never accepts: connections complete in its backlog and the TLS handshake
  // waits, so each request holds its handle until its deadline.
  const int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  REQUIRE(::listen(lfd, 64) == 0);
  socklen_t len = sizeof(a);
  REQUIRE(::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  const std::string node = "https://127.0.0.1:" + std::to_string(ntohs(a.sin_port));
  auto t = CurlTransport::Create(Cfg({node}), CaOnly());
  REQUIRE(t.ok());
  const auto before = std::chrono::steady_clock::now();
  // Eight requests at once, each waiting until shortly before its deadline: eight handles, all
  // kept when they finish.
  constexpr size_t kConcurrent = 8;
  std::vector<std::thread> callers;
  for (size_t i = 0; i < kConcurrent; ++i) {
    callers.emplace_back([&t] { (void)(*t)->Send(Get(kFailBudget)); });
  }
  for (auto& c : callers) c.join();
  const size_t kept = (*t)->PooledHandles();
  REQUIRE(kept > CurlTransport::kKeepIdleHandles);
  REQUIRE(kept <= kConcurrent);

  // Not quiet yet (a request started after `before`): nothing destroyed.
  CHECK((*t)->TrimIdleHandles(before) == 0);
  CHECK((*t)->PooledHandles() == kept);
  // Quiet for longer than kQuietBeforeTrim: down to kKeepIdleHandles, and no further.
  const auto later = std::chrono::steady_clock::now() + CurlTransport::kQuietBeforeTrim + 1s;
  CHECK((*t)->TrimIdleHandles(later) == kept - CurlTransport::kKeepIdleHandles);
  CHECK((*t)->PooledHandles() == CurlTransport::kKeepIdleHandles);
  CHECK((*t)->TrimIdleHandles(later) == 0);
  CHECK((*t)->PooledHandles() == CurlTransport::kKeepIdleHandles);

  // A kept handle still works after the trim (the same failure as before, not a crash).
  auto r = (*t)->Send(Get(kFailBudget));
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == absl::StatusCode::kDeadlineExceeded);
  CHECK((*t)->RequestsInFlight() == 0);
  // TrimAllIdleHandles reaches this transport too; just used, so it keeps everything.
  CurlTransport::TrimAllIdleHandles();
  CHECK((*t)->PooledHandles() == CurlTransport::kKeepIdleHandles);
  ::close(lfd);
}

}  // namespace
}  // namespace trousseau::vault
