// TokenFileSource with real files: the first read, refusals, following rewrites, surviving a
// missing file, and Invalidate forcing a re-read.
#include "vault/token_file_source.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "fakes/fake_http_transport.h"
#include "fakes/log_capture.h"
#include "fakes/temp_dir.h"
#include "vault/transit_client.h"

namespace trousseau::vault {
namespace {

using Catch::Contains;
using fakes::LogCapture;
using fakes::TempDir;

Deadline Soon() { return std::chrono::steady_clock::now() + std::chrono::seconds(5); }

std::string TokenText(TokenFileSource& s) {
  auto t = s.Token(Soon());
  REQUIRE(t.ok());
  return std::string((*t)->view());
}

TEST_CASE("TokenFileSource reads the token once at creation, trimming the newline",
          "[token_file]") {
  TempDir dir;
  const std::string p = dir.Write("token", "hvs.CAESIabc\n");
  auto s = TokenFileSource::Create(p);
  REQUIRE(s.ok());
  CHECK(TokenText(**s) == "hvs.CAESIabc");
  CHECK((*s)->Describe() == "token file " + p);
  // Unchanged file: the same token object is handed out again.
  auto a = (*s)->Token(Soon());
  auto b = (*s)->Token(Soon());
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(a->get() == b->get());
}

TEST_CASE("TokenFileSource refuses an empty or blank file", "[token_file][negative]") {
  TempDir dir;
  for (const char* content : {"", "\n", "  \r\n\t "}) {
    const std::string p = dir.Write("token", content);
    auto s = TokenFileSource::Create(p);
    REQUIRE_FALSE(s.ok());
    CHECK(s.status().code() == absl::StatusCode::kFailedPrecondition);
    CHECK_THAT(std::string(s.status().message()), Contains("vault.auth.token_file: "));
    CHECK_THAT(std::string(s.status().message()), Contains("empty"));
    CHECK_THAT(std::string(s.status().message()), Contains(p));
  }
}

TEST_CASE("TokenFileSource refuses non-printable bytes without echoing them",
          "[token_file][negative]") {
  TempDir dir;
  for (const std::string& content :
       {std::string("hvs.SECRET\x01X"), std::string("hvs.SECRET X"), std::string("hvs.SECRET\nX"),
        std::string("hvs.SECRET\x7f"), std::string("hvs.SECRET\xc3\xa9"),
        std::string("hvs.SECRET\0X", 12)}) {
    const std::string p = dir.Write("token", content);
    auto s = TokenFileSource::Create(p);
    REQUIRE_FALSE(s.ok());
    CHECK(s.status().code() == absl::StatusCode::kFailedPrecondition);
    CHECK_THAT(std::string(s.status().message()), Contains("non-printable"));
    CHECK(std::string(s.status().message()).find("SECRET") == std::string::npos);
  }
}

TEST_CASE("TokenFileSource: a missing file at start is NOT_FOUND naming the path",
          "[token_file][negative]") {
  TempDir dir;
  const std::string p = dir.Path("absent");
  auto s = TokenFileSource::Create(p);
  REQUIRE_FALSE(s.ok());
  CHECK(s.status().code() == absl::StatusCode::kNotFound);
  CHECK_THAT(std::string(s.status().message()), Contains(p));
}

TEST_CASE("TokenFileSource: an oversized file is refused", "[token_file][negative]") {
  TempDir dir;
  const std::string p = dir.Write("token", std::string(16 * 1024 + 1, 'a'));
  auto s = TokenFileSource::Create(p);
  REQUIRE_FALSE(s.ok());
  CHECK_THAT(std::string(s.status().message()), Contains("too large"));
}

TEST_CASE("TokenFileSource follows a rewritten file", "[token_file]") {
  TempDir dir;
  LogCapture cap;
  const std::string p = dir.Write("token", "hvs.first\n");
  auto s = TokenFileSource::Create(p);
  REQUIRE(s.ok());
  CHECK(TokenText(**s) == "hvs.first");

  dir.Write("token", "hvs.second-longer\n");  // in place, different size
  CHECK(TokenText(**s) == "hvs.second-longer");

  dir.WriteByRename("token", "hvs.third-longer\n");  // rename over, as Vault Agent does
  CHECK(TokenText(**s) == "hvs.third-longer");

  const auto changes = cap.events("auth.token_file");
  CHECK(changes.size() == 2);
  CHECK(cap.all().find("hvs.") == std::string::npos);  // logs name the path, never the token
}

TEST_CASE("TokenFileSource under concurrent callers: each rewrite is loaded and logged once",
          "[token_file]") {
  // Token() stats the file before taking its lock; a caller whose stat predates another
  // caller's reload must not load (and log) the same change again.
  TempDir dir;
  LogCapture cap;
  const std::string p = dir.Write("token", "hvs.v0\n");
  auto s = TokenFileSource::Create(p);
  REQUIRE(s.ok());
  constexpr int kRewrites = 20;
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 6; ++t) {
    callers.emplace_back([&] {
      while (!stop.load()) {
        auto tok = (*s)->Token(Soon());
        if (!tok.ok() || (*tok)->view().substr(0, 5) != "hvs.v") bad.fetch_add(1);
      }
    });
  }
  for (int i = 1; i <= kRewrites; ++i) {
    dir.WriteByRename("token", "hvs.v" + std::to_string(i) + "\n");
    // Let the callers see this version before the next one replaces it.
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (TokenText(**s) != "hvs.v" + std::to_string(i) && std::chrono::steady_clock::now() < until) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  stop = true;
  for (auto& c : callers) c.join();
  CHECK(bad.load() == 0);
  CHECK(TokenText(**s) == "hvs.v" + std::to_string(kRewrites));
  CHECK(cap.events("auth.token_file").size() == static_cast<size_t>(kRewrites));
}

TEST_CASE("TokenFileSource keeps the old token when the file disappears", "[token_file]") {
  TempDir dir;
  LogCapture cap;
  const std::string p = dir.Write("token", "hvs.keep\n");
  auto s = TokenFileSource::Create(p);
  REQUIRE(s.ok());
  std::filesystem::remove(p);
  CHECK(TokenText(**s) == "hvs.keep");
  auto warns = cap.events("auth.token_file");
  REQUIRE_FALSE(warns.empty());
  CHECK(warns.back()["level"] == "warn");
  CHECK(warns.back()["path"] == p);
  // And it picks up the file again when it comes back.
  dir.Write("token", "hvs.back\n");
  CHECK(TokenText(**s) == "hvs.back");
}

TEST_CASE("TokenFileSource keeps the old token when the new file is unusable", "[token_file]") {
  TempDir dir;
  LogCapture cap;
  const std::string p = dir.Write("token", "hvs.good\n");
  auto s = TokenFileSource::Create(p);
  REQUIRE(s.ok());
  dir.Write("token", "\n\n");  // a half-written rewrite
  CHECK(TokenText(**s) == "hvs.good");
  dir.Write("token", "bad token\n");
  CHECK(TokenText(**s) == "hvs.good");
  CHECK_FALSE(cap.events("auth.token_file").empty());
}

TEST_CASE("Invalidate forces a re-read; a stale Invalidate does not", "[token_file]") {
  TempDir dir;
  LogCapture cap;
  const std::string p = dir.Write("token", "hvs.same\n");
  auto s = TokenFileSource::Create(p);
  REQUIRE(s.ok());
  auto first = (*s)->Token(Soon());
  REQUIRE(first.ok());

  (*s)->Invalidate(*first);
  auto second = (*s)->Token(Soon());
  REQUIRE(second.ok());
  CHECK(second->get() != first->get());  // re-read: a new token object
  CHECK((*second)->view() == "hvs.same");

  // Invalidating a token that is no longer current changes nothing.
  (*s)->Invalidate(*first);
  auto third = (*s)->Token(Soon());
  REQUIRE(third.ok());
  CHECK(third->get() == second->get());

  // The re-read picks up a same-size in-place rewrite that a stat alone might miss.
  (*s)->Invalidate(*third);
  dir.Write("token", "hvs.diff\n");
  CHECK(TokenText(**s) == "hvs.diff");
}

TEST_CASE("a 403 makes the Transit client re-read a rewritten token file", "[token_file]") {
  TempDir dir;
  LogCapture cap;
  const std::string p = dir.Write("token", "hvs.old-1\n");
  auto s = TokenFileSource::Create(p);
  REQUIRE(s.ok());
  REQUIRE(TokenText(**s) == "hvs.old-1");
  // Rewritten in place with the same size: stat(2) alone may not see it within a clock tick.
  dir.Write("token", "hvs.new-1\n");
  fakes::FakeHttpTransport http;
  http.Respond(fakes::Method::kGet, "/v1/transit/keys/k", 403, R"({"errors":["permission denied"]})");
  http.Then(fakes::Method::kGet, "/v1/transit/keys/k", 200, R"({"data":{"latest_version":1}})");
  TransitClient client(http, **s, "transit", "k");
  auto k = client.ReadKey(Soon());
  REQUIRE(k.ok());
  const auto reqs = http.requests();
  REQUIRE(reqs.size() == 2);
  CHECK(reqs[1].token == "hvs.new-1");
}

}  // namespace
}  // namespace trousseau::vault
