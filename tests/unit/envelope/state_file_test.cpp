// The state file (docs/rollback.md, docs/formats.md section 6): the strict parser, the atomic
// replace on disk, every refusal at start, and TransitKeyService seeded from it (a restart after
// a Vault restore still refuses Encrypt; without the file the restart accepts the key).
#include <catch2/catch.hpp>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>

#include "envelope/key_service.h"
#include "envelope/rollback.h"
#include "envelope/state_file.h"
#include "fakes/fake_clock.h"
#include "fakes/fake_http_transport.h"
#include "fakes/fake_token_source.h"

namespace trousseau::envelope {
namespace {

using namespace std::chrono_literals;
using Catch::Contains;
using nlohmann::json;

// A private directory (mode 0700, ours), removed with its files at the end.
struct TempDir {
  TempDir() {
    char tmpl[] = "/tmp/trousseau-state-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    for (const auto& n : Entries()) unlink((path + "/" + n).c_str());
    rmdir(path.c_str());
  }
  std::set<std::string> Entries() const {
    std::set<std::string> out;
    DIR* d = opendir(path.c_str());
    if (d == nullptr) return out;
    while (dirent* e = readdir(d)) {
      const std::string n = e->d_name;
      if (n != "." && n != "..") out.insert(n);
    }
    closedir(d);
    return out;
  }
  std::string File(const std::string& name = "state.json") const { return path + "/" + name; }
  void Put(const std::string& text, mode_t mode = 0600, const std::string& name = "state.json") const {
    const std::string p = File(name);
    unlink(p.c_str());
    const int fd = open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL, mode);
    REQUIRE(fd >= 0);
    REQUIRE(write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
    close(fd);
    REQUIRE(chmod(p.c_str(), mode) == 0);  // past the umask
  }
  std::string path;
};

std::string Slurp(const std::string& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

KeyMark Mark(int64_t high, std::map<int64_t, std::string> created) {
  KeyMark m;
  m.high_version = high;
  m.created = std::move(created);
  return m;
}

const std::string kValid =
    R"({"format": 1, "keys": {"transit/kubernetes": {"high_version": 3, "created": {"1": "1700000001", "3": "1700000003"}}}})";

std::string ParseError(const std::string& text) {
  auto r = ParseState(text);
  if (r.ok()) return "(accepted)";
  CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
  return std::string(r.status().message());
}

}  // namespace

TEST_CASE("state file text: round trip and the written layout", "[state]") {
  StateMarks marks;
  marks["transit/kubernetes"] = Mark(3, {{1, "1700000001"}, {2, "1700000002"}, {3, "1700000003"}});
  marks["team-a/transit/other"] = Mark(12, {{12, "2026-12-02T03:00:00.123456789Z"}});
  const std::string text = SerializeState(marks);
  const json j = json::parse(text);
  CHECK(j["format"] == 1);
  CHECK(j["keys"]["transit/kubernetes"]["high_version"] == 3);
  CHECK(j["keys"]["transit/kubernetes"]["created"]["2"] == "1700000002");
  auto back = ParseState(text);
  REQUIRE(back.ok());
  CHECK(*back == marks);
  auto one = ParseState(kValid);
  REQUIRE(one.ok());
  CHECK(one->at("transit/kubernetes") == Mark(3, {{1, "1700000001"}, {3, "1700000003"}}));
  // No keys yet is a valid file.
  CHECK(ParseState(R"({"format":1,"keys":{}})").ok());
}

TEST_CASE("state file text: every damaged or foreign file is refused, naming the problem", "[state]") {
  CHECK_THAT(ParseError(kValid.substr(0, kValid.size() / 2)), Contains("not valid JSON"));  // truncated
  CHECK_THAT(ParseError(""), Contains("not valid JSON"));
  CHECK_THAT(ParseError("{\"format\": 1, \"keys\": {},}"), Contains("not valid JSON"));
  CHECK_THAT(ParseError("[1]"), Contains("not a JSON object"));
  CHECK_THAT(ParseError(R"({"keys":{}})"), Contains("no \"format\""));
  CHECK_THAT(ParseError(R"({"format":2,"keys":{}})"), Contains("has format 2; this release reads format 1"));
  CHECK_THAT(ParseError(R"({"format":"1","keys":{}})"), Contains("has format \"1\""));
  CHECK_THAT(ParseError(R"({"format":1})"), Contains("no \"keys\" object"));
  CHECK_THAT(ParseError(R"({"format":1,"keys":[]})"), Contains("no \"keys\" object"));
  CHECK_THAT(ParseError(R"({"format":1,"keys":{},"extra":0})"), Contains("unknown member \"extra\""));
  CHECK_THAT(ParseError(R"({"format":1,"keys":{"t/k":{"high_version":1,"created":{},"x":1}}})"),
             Contains("keys[\"t/k\"] has an unknown member \"x\""));
  CHECK_THAT(ParseError(R"({"format":1,"keys":{"t/k":5}})"), Contains("keys[\"t/k\"] is not an object"));
  CHECK_THAT(ParseError(R"({"format":1,"keys":{"":{"high_version":1,"created":{}}}})"),
             Contains("key identity that is empty"));
  for (const char* bad : {"-3", "0", "1.5", "\"3\"", "true", "null", "9223372036854775808"}) {
    INFO(bad);
    CHECK_THAT(ParseError(std::string(R"({"format":1,"keys":{"t/k":{"high_version":)") + bad +
                          R"(,"created":{}}}})"),
               Contains("high_version must be a whole number"));
  }
  CHECK_THAT(ParseError(R"({"format":1,"keys":{"t/k":{"high_version":1}}})"),
             Contains("created must be an object"));
  for (const char* bad : {"0", "-1", "01", "a", "1.0", "99999999999999999999"}) {
    INFO(bad);
    CHECK_THAT(ParseError(std::string(R"({"format":1,"keys":{"t/k":{"high_version":5,"created":{")") +
                          bad + R"(":"1"}}}})"),
               Contains("not a version number"));
  }
  CHECK_THAT(ParseError(R"({"format":1,"keys":{"t/k":{"high_version":2,"created":{"3":"1"}}}})"),
             Contains("version 3, above high_version 2"));
  for (const char* bad : {"1", "\"\"", "null", "\"a\\u0001b\""}) {
    INFO(bad);
    CHECK_THAT(ParseError(std::string(R"({"format":1,"keys":{"t/k":{"high_version":2,"created":{"1":)") +
                          bad + "}}}}"),
               Contains("must be a creation time string"));
  }
  CHECK_THAT(ParseError(std::string(kMaxStateFileBytes + 1, ' ')), Contains("the limit is 1048576"));
}

TEST_CASE("state file on disk: first start, atomic replace, no temporary left, 0600", "[state]") {
  TempDir dir;
  auto sf = StateFile::Open(dir.File(), geteuid());
  REQUIRE(sf.ok());
  CHECK((*sf)->Find("transit/kubernetes") == KeyMark{});  // missing file: first start
  CHECK(dir.Entries().empty());                          // opening writes nothing
  REQUIRE((*sf)->Write("transit/kubernetes", Mark(2, {{1, "t1"}, {2, "t2"}})).ok());
  REQUIRE((*sf)->Write("other/k", Mark(7, {{7, "t7"}})).ok());
  REQUIRE((*sf)->Write("transit/kubernetes", Mark(3, {{1, "t1"}, {2, "t2"}, {3, "t3"}})).ok());
  CHECK(dir.Entries() == std::set<std::string>{"state.json"});
  struct stat st {};
  REQUIRE(stat(dir.File().c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);
  CHECK(st.st_uid == geteuid());
  // A fresh open reads back both keys.
  sf->reset();
  auto again = StateFile::Open(dir.File(), geteuid());
  REQUIRE(again.ok());
  CHECK((*again)->Find("transit/kubernetes") == Mark(3, {{1, "t1"}, {2, "t2"}, {3, "t3"}}));
  CHECK((*again)->Find("other/k") == Mark(7, {{7, "t7"}}));
  // A temporary left by a crash mid-write is replaced, not a reason to fail.
  dir.Put("half", 0600, ".state.json.tmp");
  REQUIRE((*again)->Write("other/k", Mark(8, {{8, "t8"}})).ok());
  CHECK(dir.Entries() == std::set<std::string>{"state.json"});
  CHECK(json::parse(Slurp(dir.File()))["keys"]["other/k"]["high_version"] == 8);
}

TEST_CASE("state file on disk: a failed write leaves the old file and no temporary", "[state]") {
  TempDir dir;
  auto sf = StateFile::Open(dir.File(), geteuid());
  REQUIRE(sf.ok());
  // The rename cannot replace a non-empty directory (EISDIR), even for root.
  REQUIRE(mkdir(dir.File().c_str(), 0700) == 0);
  dir.Put("x", 0600, "state.json/inner");
  auto st = (*sf)->Write("t/k", Mark(2, {{2, "b"}}));
  CHECK(st.code() == absl::StatusCode::kUnavailable);
  CHECK_THAT(std::string(st.message()), Contains("state.file " + dir.File() + ": rename"));
  CHECK(dir.Entries() == std::set<std::string>{"state.json"});  // the temporary was removed
  unlink(dir.File("state.json/inner").c_str());
  rmdir(dir.File().c_str());
  // The next write succeeds and holds only what was written successfully before, plus this.
  REQUIRE((*sf)->Write("t/k", Mark(3, {{3, "c"}})).ok());
  CHECK(json::parse(Slurp(dir.File()))["keys"]["t/k"]["high_version"] == 3);
}

TEST_CASE("state file on disk: every failed write is counted, a good one is not", "[state][metrics]") {
  TempDir dir;
  auto sf = StateFile::Open(dir.File(), geteuid());
  REQUIRE(sf.ok());
  CHECK((*sf)->write_failures() == 0);
  REQUIRE((*sf)->Write("t/k", Mark(1, {{1, "a"}})).ok());
  CHECK((*sf)->write_failures() == 0);
  // A non-empty directory where the file goes: the rename fails (EISDIR), even for root.
  REQUIRE(unlink(dir.File().c_str()) == 0);
  REQUIRE(mkdir(dir.File().c_str(), 0700) == 0);
  dir.Put("x", 0600, "state.json/inner");
  CHECK_FALSE((*sf)->Write("t/k", Mark(2, {{2, "b"}})).ok());
  CHECK((*sf)->write_failures() == 1);
  CHECK_FALSE((*sf)->Write("t/k", Mark(2, {{2, "b"}})).ok());
  CHECK((*sf)->write_failures() == 2);
  unlink(dir.File("state.json/inner").c_str());
  rmdir(dir.File().c_str());
  REQUIRE((*sf)->Write("t/k", Mark(3, {{3, "c"}})).ok());
  CHECK((*sf)->write_failures() == 2);  // a counter: the failures stay counted
}

TEST_CASE("state file on disk: refused at start, naming the file and the problem", "[state]") {
  TempDir dir;
  const auto refused = [&](uid_t owner = geteuid()) {
    auto sf = StateFile::Open(dir.File(), owner);
    REQUIRE_FALSE(sf.ok());
    CHECK(sf.status().code() == absl::StatusCode::kFailedPrecondition);
    const std::string msg(sf.status().message());
    CHECK_THAT(msg, Contains("state.file " + dir.File() + ": "));
    return msg;
  };
  SECTION("truncated") {
    dir.Put(kValid.substr(0, 40));
    CHECK_THAT(refused(), Contains("not valid JSON"));
    CHECK_THAT(refused(), Contains("docs/rollback.md"));
  }
  SECTION("wrong format") {
    dir.Put(R"({"format":2,"keys":{}})");
    CHECK_THAT(refused(), Contains("has format 2"));
  }
  SECTION("too large") {
    dir.Put(std::string(kMaxStateFileBytes + 10, ' '));
    CHECK_THAT(refused(), Contains("bytes; the limit is 1048576"));
  }
  SECTION("readable by group or others") {
    dir.Put(kValid, 0644);
    CHECK_THAT(refused(), Contains("has mode 0644; it must be 0600"));
    dir.Put(kValid, 0620);
    CHECK_THAT(refused(), Contains("has mode 0620"));
  }
  SECTION("owned by another user") {
    dir.Put(kValid);
    REQUIRE((geteuid() != 0 || chown(dir.path.c_str(), 4242, static_cast<gid_t>(-1)) == 0));
    if (geteuid() == 0) {
      REQUIRE(chown(dir.File().c_str(), 4243, static_cast<gid_t>(-1)) == 0);
      CHECK_THAT(refused(4242), Contains("is owned by uid 4243; it must belong to uid 4242"));
      CHECK_THAT(refused(4243), Contains("directory " + dir.path + " is owned by uid 4242"));
      REQUIRE(chown(dir.path.c_str(), geteuid(), static_cast<gid_t>(-1)) == 0);
    } else {
      CHECK_THAT(refused(geteuid() + 1), Contains("must belong to uid"));
    }
  }
  SECTION("a directory others can write") {
    REQUIRE(chmod(dir.path.c_str(), 0777) == 0);
    CHECK_THAT(refused(), Contains("has mode 0777: writable by group or others"));
    CHECK_THAT(refused(), Contains("install -d"));
    REQUIRE(chmod(dir.path.c_str(), 0700) == 0);
  }
  SECTION("a symbolic link") {
    dir.Put(kValid, 0600, "real.json");
    REQUIRE(symlink(dir.File("real.json").c_str(), dir.File().c_str()) == 0);
    CHECK_THAT(refused(), Contains("symbolic link"));
  }
  SECTION("not a regular file") {
    REQUIRE(mkfifo(dir.File().c_str(), 0600) == 0);
    CHECK_THAT(refused(), Contains("not a regular file"));
  }
  SECTION("no such directory") {
    auto sf = StateFile::Open(dir.path + "/missing/state.json", geteuid());
    REQUIRE_FALSE(sf.ok());
    CHECK_THAT(std::string(sf.status().message()), Contains("cannot open its directory " + dir.path + "/missing"));
  }
}

// ---- TransitKeyService seeded from the file --------------------------------------------------

namespace {

const std::string kKeys = "/v1/transit/keys/kubernetes";

std::string KeyBody(int latest) {
  json created = json::object();
  for (int v = 1; v <= latest; ++v) created[std::to_string(v)] = 1700000000 + v;
  return json{{"data", {{"latest_version", latest}, {"type", "aes256-gcm96"}, {"keys", created}}}}.dump();
}

struct Plugin {
  explicit Plugin(StateFile* state, std::string entry_prefix = "")
      : keys(transit, clock, Opts(state, std::move(entry_prefix))) {}
  static TransitKeyServiceOptions Opts(StateFile* state, std::string entry_prefix) {
    TransitKeyServiceOptions o;
    o.state_file = state;
    o.state_entry_prefix = std::move(entry_prefix);
    return o;
  }
  fakes::FakeHttpTransport http;
  fakes::FakeTokenSource tokens;
  fakes::FakeClock clock;
  vault::TransitClient transit{http, tokens, "transit", "kubernetes"};
  TransitKeyService keys;
};

}  // namespace

TEST_CASE("RollbackGuard seeded from a mark compares the first answer against it", "[state]") {
  RollbackGuard g(Mark(3, {{1, "a"}, {2, "b"}, {3, "c"}}), "remove /x/state.json");
  vault::KeyInfo lower;
  lower.latest_version = 2;
  lower.created = {{1, "a"}, {2, "b"}};
  const std::string msg = g.Observe(lower, "transit/k");
  CHECK_THAT(msg, Contains("latest version 2, but version 3 was seen before"));
  CHECK_THAT(msg, Contains("; remove /x/state.json"));
  vault::KeyInfo same;
  same.latest_version = 3;
  same.created = {{1, "a"}, {2, "b"}, {3, "c"}};
  CHECK(g.Observe(same, "transit/k").empty());
  CHECK(RollbackGuard().Observe(lower, "transit/k").empty());  // memory only: a new baseline
}

TEST_CASE("a restart after a Vault restore still refuses Encrypt with the state file", "[state]") {
  TempDir dir;
  {
    auto sf = StateFile::Open(dir.File(), geteuid());
    REQUIRE(sf.ok());
    Plugin before(sf->get());
    before.http.Respond(fakes::Method::kGet, kKeys, 200, KeyBody(3));
    before.keys.RefreshOnce();
    REQUIRE(before.keys.Health().healthz == "ok");
    before.keys.RefreshOnce();  // unchanged: not written again
  }
  const json written = json::parse(Slurp(dir.File()));
  CHECK(written["keys"]["transit/kubernetes"]["high_version"] == 3);
  CHECK(written["keys"]["transit/kubernetes"]["created"].size() == 3);

  SECTION("with the file: refused on the first check after the restart") {
    auto sf = StateFile::Open(dir.File(), geteuid());
    REQUIRE(sf.ok());
    Plugin after(sf->get());
    after.http.Respond(fakes::Method::kGet, kKeys, 200, KeyBody(2));  // restored from an old backup
    after.keys.RefreshOnce();
    const HealthSnapshot h = after.keys.Health();
    CHECK_THAT(h.healthz, Contains("rolled back: Vault reports latest version 2, but version 3"));
    CHECK_THAT(h.healthz, Contains("state.file " + dir.File()));
    CHECK(h.key_id == "transit/kubernetes:v3");
    CHECK(after.keys.State().rollbacks_detected == 1);
    CHECK(after.keys.State().rollback_active);
    after.http.ClearRequests();
    auto r = after.keys.Encrypt(std::string(32, 's'), after.clock.Now() + 5s);
    CHECK(r.status().code() == absl::StatusCode::kFailedPrecondition);
    CHECK(after.http.count() == 0);
    // The rolled-back answer is not written: the file still says 3.
    CHECK(json::parse(Slurp(dir.File()))["keys"]["transit/kubernetes"]["high_version"] == 3);
    // Vault put right (and rotated): accepted, and the file moves forward.
    after.http.Respond(fakes::Method::kGet, kKeys, 200, KeyBody(4));
    after.keys.RefreshOnce();
    CHECK(after.keys.Health().healthz == "ok");
    CHECK(json::parse(Slurp(dir.File()))["keys"]["transit/kubernetes"]["high_version"] == 4);
  }
  SECTION("memory only: the restart takes the restored key as its new baseline (the trade-off)") {
    Plugin after(nullptr);
    after.http.Respond(fakes::Method::kGet, kKeys, 200, KeyBody(2));
    after.keys.RefreshOnce();
    CHECK(after.keys.Health().healthz == "ok");
    CHECK_FALSE(after.keys.State().rollback_active);
  }
}

TEST_CASE("every raised mark reaches the file; an unchanged one is not rewritten", "[state]") {
  TempDir dir;
  auto sf = StateFile::Open(dir.File(), geteuid());
  REQUIRE(sf.ok());
  Plugin p(sf->get());
  p.http.Respond(fakes::Method::kGet, kKeys, 200, KeyBody(1));
  p.keys.RefreshOnce();
  CHECK(json::parse(Slurp(dir.File()))["keys"]["transit/kubernetes"]["high_version"] == 1);
  struct stat first {}, second {};
  REQUIRE(stat(dir.File().c_str(), &first) == 0);
  p.keys.RefreshOnce();
  REQUIRE(stat(dir.File().c_str(), &second) == 0);
  CHECK(first.st_ino == second.st_ino);  // each write is a new file renamed over the old one
  p.http.Respond(fakes::Method::kGet, kKeys, 200, KeyBody(2));
  p.keys.RefreshOnce();
  CHECK(p.keys.State().latest_version == 2);
  REQUIRE(stat(dir.File().c_str(), &second) == 0);
  CHECK(first.st_ino != second.st_ino);
  CHECK(json::parse(Slurp(dir.File()))["keys"]["transit/kubernetes"]["high_version"] == 2);
  CHECK(dir.Entries() == std::set<std::string>{"state.json"});
}

TEST_CASE("a key service whose state file write fails keeps serving and the failure is counted",
          "[state][metrics]") {
  TempDir dir;
  auto sf = StateFile::Open(dir.File(), geteuid());
  REQUIRE(sf.ok());
  Plugin p(sf->get());
  // The directory cannot take the file: every write's rename fails.
  REQUIRE(mkdir(dir.File().c_str(), 0700) == 0);
  dir.Put("x", 0600, "state.json/inner");
  p.http.Respond(fakes::Method::kGet, kKeys, 200, KeyBody(1));
  p.keys.RefreshOnce();
  CHECK(p.keys.State().latest_version == 1);  // availability first: the version is used anyway
  CHECK((*sf)->write_failures() == 1);
  p.keys.RefreshOnce();                       // retried at the next check, failing again
  CHECK((*sf)->write_failures() == 2);
  unlink(dir.File("state.json/inner").c_str());
  rmdir(dir.File().c_str());
  p.keys.RefreshOnce();                       // written at last
  CHECK((*sf)->write_failures() == 2);
  CHECK(json::parse(Slurp(dir.File()))["keys"]["transit/kubernetes"]["high_version"] == 1);
}

TEST_CASE("the secondary cluster's key has its own entry, even under the same name", "[state]") {
  // Both clusters call their key transit/kubernetes; the secondary's is at version 1, created
  // at another time. Sharing one entry would make each look like a rollback of the other.
  TempDir dir;
  const std::string secondary_body =
      json{{"data", {{"latest_version", 1}, {"type", "aes256-gcm96"}, {"keys", {{"1", 1800000001}}}}}}
          .dump();
  for (int start = 0; start < 2; ++start) {  // the second pass is a restart from the file
    INFO("start " << start);
    auto sf = StateFile::Open(dir.File(), geteuid());
    REQUIRE(sf.ok());
    Plugin primary(sf->get());
    Plugin secondary(sf->get(), "secondary:");
    primary.http.Respond(fakes::Method::kGet, kKeys, 200, KeyBody(3));
    secondary.http.Respond(fakes::Method::kGet, kKeys, 200, secondary_body);
    primary.keys.RefreshOnce();
    secondary.keys.RefreshOnce();
    CHECK(primary.keys.Health().healthz == "ok");
    CHECK(secondary.keys.Health().healthz == "ok");
    CHECK_FALSE(primary.keys.State().rollback_active);
    CHECK_FALSE(secondary.keys.State().rollback_active);
  }
  const json written = json::parse(Slurp(dir.File()));
  CHECK(written["keys"]["transit/kubernetes"]["high_version"] == 3);
  CHECK(written["keys"]["secondary:transit/kubernetes"]["high_version"] == 1);
  CHECK(written["keys"]["secondary:transit/kubernetes"]["created"]["1"] == "1800000001");
}

}  // namespace trousseau::envelope
