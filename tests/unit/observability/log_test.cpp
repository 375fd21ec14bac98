// Structured logging: level filtering, one JSON object per line with the documented keys,
// audit records at every level, and no throw on invalid UTF-8 from a caller.
#include "observability/log.h"

#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <regex>
#include <string>

#include "fakes/log_capture.h"

namespace trousseau::log {
namespace {

using fakes::LogCapture;
using nlohmann::json;

// Restores the process-wide level after each test.
struct LevelGuard {
  Level saved = GetLevel();
  ~LevelGuard() { SetLevel(saved); }
};

// Timestamp() formats the seconds once per second per thread and the microseconds by hand: the
// result must equal what gmtime_r + snprintf give for a time between the clock before and after.
TEST_CASE("Timestamp is UTC with microseconds, and agrees with gmtime", "[log]") {
  auto format = [](std::chrono::system_clock::time_point tp) {
    const auto secs = std::chrono::floor<std::chrono::seconds>(tp);
    const std::time_t t = std::chrono::system_clock::to_time_t(secs);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[80];
    std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<long>(
                      std::chrono::duration_cast<std::chrono::microseconds>(tp - secs).count()));
    return std::string(buf);
  };
  for (int i = 0; i < 2000; ++i) {  // crosses second boundaries now and then; reuses the cache
    const auto before = std::chrono::system_clock::now();
    const std::string ts = Timestamp();
    const auto after = std::chrono::system_clock::now();
    REQUIRE(std::regex_match(ts, std::regex(R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z)")));
    // Fixed width: string order is time order.
    CHECK(format(before) <= ts);
    CHECK(ts <= format(after));
  }
}

TEST_CASE("the level filters lower-severity lines", "[log]") {
  LevelGuard guard;
  LogCapture cap;
  SetLevel(Level::kWarn);
  CHECK(GetLevel() == Level::kWarn);
  CHECK_FALSE(Enabled(Level::kDebug));
  CHECK_FALSE(Enabled(Level::kInfo));
  CHECK(Enabled(Level::kWarn));
  CHECK(Enabled(Level::kError));
  Debug("t.debug", "d");
  Info("t.info", "i");
  Warn("t.warn", "w");
  Error("t.error", "e");
  auto lines = cap.json();
  REQUIRE(lines.size() == 2);
  CHECK(lines[0]["level"] == "warn");
  CHECK(lines[0]["event"] == "t.warn");
  CHECK(lines[1]["level"] == "error");

  cap.clear();
  SetLevel(Level::kDebug);
  Debug("t.debug", "d");
  Info("t.info", "i");
  lines = cap.json();
  REQUIRE(lines.size() == 2);
  CHECK(lines[0]["level"] == "debug");
  CHECK(lines[1]["level"] == "info");

  cap.clear();
  SetLevel(Level::kError);
  Warn("t.warn", "w");
  CHECK(cap.lines().empty());
}

TEST_CASE("a log line is one JSON object with time, level, event, msg and fields", "[log]") {
  LevelGuard guard;
  SetLevel(Level::kInfo);
  LogCapture cap;
  Info("vault.node", "using vault node",
       {{"node", "https://vault-a:8200"}, {"http_status", 503}, {"retry", true}});
  auto raw = cap.lines();
  REQUIRE(raw.size() == 1);
  const std::string& line = raw[0];
  REQUIRE(line.back() == '\n');
  CHECK(line.find('\n') == line.size() - 1);  // exactly one line
  json j = json::parse(line);
  REQUIRE(j.is_object());
  CHECK(j.size() == 7);
  CHECK(j["level"] == "info");
  CHECK(j["event"] == "vault.node");
  CHECK(j["msg"] == "using vault node");
  CHECK(j["node"] == "https://vault-a:8200");
  CHECK(j["http_status"] == 503);
  CHECK(j["retry"] == true);
  const std::string time = j["time"].get<std::string>();
  CHECK(std::regex_match(time, std::regex(R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z)")));
  CHECK(time.substr(0, 2) == "20");
}

TEST_CASE("newlines and quotes in a message stay inside one JSON line", "[log]") {
  LevelGuard guard;
  SetLevel(Level::kInfo);
  LogCapture cap;
  Info("t", "line one\nline \"two\"\r\n\t{injected}", {{"k", "a\nb"}});
  auto raw = cap.lines();
  REQUIRE(raw.size() == 1);
  CHECK(raw[0].find('\n') == raw[0].size() - 1);
  json j = json::parse(raw[0]);
  CHECK(j["msg"] == "line one\nline \"two\"\r\n\t{injected}");
  CHECK(j["k"] == "a\nb");
}

TEST_CASE("audit records carry every field and are written at any level", "[log][audit]") {
  LevelGuard guard;
  SetLevel(Level::kError);  // audit ignores the level
  LogCapture cap;
  AuditRecord r;
  r.api = "v2";
  r.operation = "decrypt";
  r.uid = "f81d4fae-7dec-11d0-a765-00a0c91e6bf6";
  r.key_id = "transit/kubernetes:v3";
  r.code = "INVALID_ARGUMENT";
  r.detail = "ciphertext is empty";
  r.vault_node = "https://vault-b:8200";
  r.input_bytes = 0;
  r.output_bytes = 0;
  r.duration = std::chrono::microseconds(1234);
  Audit(r);
  auto lines = cap.json();
  REQUIRE(lines.size() == 1);
  json j = lines[0];
  CHECK(j["type"] == "audit");
  CHECK(j["event"] == "kms.call");
  CHECK(j["level"] == "info");
  CHECK(j["api"] == "v2");
  CHECK(j["op"] == "decrypt");
  CHECK(j["uid"] == "f81d4fae-7dec-11d0-a765-00a0c91e6bf6");
  CHECK(j["key_id"] == "transit/kubernetes:v3");
  CHECK(j["code"] == "INVALID_ARGUMENT");
  CHECK(j["detail"] == "ciphertext is empty");
  CHECK(j["vault"] == "https://vault-b:8200");
  CHECK(j["in_bytes"] == 0);
  CHECK(j["out_bytes"] == 0);
  CHECK(j["duration_us"] == 1234);
  CHECK(j.contains("time"));
}

TEST_CASE("audit line: fixed field order, compact JSON, escaped values", "[log][audit]") {
  LogCapture cap;
  AuditRecord r;
  r.api = "v2";
  r.operation = "decrypt";
  r.uid = "a\"b\\c\n\x01";
  r.key_id = "k";
  r.key_version = 3;
  r.code = "OK";
  r.vault_request_id = "rid";
  r.input_bytes = 1;
  r.output_bytes = 2;
  r.duration = std::chrono::microseconds(5);
  Audit(r);
  auto lines = cap.lines();
  REQUIRE(lines.size() == 1);
  const std::string& line = lines[0];
  const std::string head = "{\"time\":\"";
  REQUIRE(line.rfind(head, 0) == 0);
  const size_t after_time = line.find('"', head.size());
  REQUIRE(after_time != std::string::npos);
  CHECK(line.substr(after_time) ==
        "\",\"level\":\"info\",\"type\":\"audit\",\"schema\":\"trousseau.audit/v1\","
        "\"event\":\"kms.call\",\"api\":\"v2\",\"op\":\"decrypt\",\"uid\":\"a\\\"b\\\\c\\n\\u0001\","
        "\"key_id\":\"k\",\"key_version\":3,\"code\":\"OK\",\"vault_request_id\":\"rid\","
        "\"in_bytes\":1,\"out_bytes\":2,\"duration_us\":5}\n");
}

TEST_CASE("audit leaves out empty detail and vault node", "[log][audit]") {
  LogCapture cap;
  AuditRecord r;
  r.api = "v1beta1";
  r.operation = "encrypt";
  r.code = "OK";
  r.input_bytes = 32;
  r.output_bytes = 90;
  Audit(r);
  auto lines = cap.json();
  REQUIRE(lines.size() == 1);
  CHECK_FALSE(lines[0].contains("detail"));
  CHECK_FALSE(lines[0].contains("vault"));
  CHECK(lines[0]["uid"] == "");
  CHECK(lines[0]["in_bytes"] == 32);
  CHECK(lines[0]["out_bytes"] == 90);
}

TEST_CASE("invalid UTF-8 from a caller is replaced, never thrown", "[log][audit][negative]") {
  LevelGuard guard;
  SetLevel(Level::kInfo);
  LogCapture cap;
  const std::string bad_uid = "uid-\xff\xfe-\xc3(";  // stray bytes and a truncated sequence
  AuditRecord r;
  r.api = "v2";
  r.operation = "encrypt";
  r.uid = bad_uid;
  r.code = "OK";
  CHECK_NOTHROW(Audit(r));
  CHECK_NOTHROW(Info("t.utf8", bad_uid, {{"field", bad_uid}}));
  auto lines = cap.lines();
  REQUIRE(lines.size() == 2);
  for (const auto& l : lines) {
    json j = json::parse(l, nullptr, /*allow_exceptions=*/false);
    REQUIRE_FALSE(j.is_discarded());  // the line is valid UTF-8 JSON
  }
  json a = json::parse(lines[0]);
  const std::string uid = a["uid"].get<std::string>();
  CHECK(uid.rfind("uid-", 0) == 0);
  CHECK(uid.find("\xef\xbf\xbd") != std::string::npos);  // U+FFFD replacement character
  CHECK(uid.find('\xff') == std::string::npos);
}

TEST_CASE("without a sink, lines go to stderr", "[log]") {
  LevelGuard guard;
  SetLevel(Level::kInfo);
  SetSink(nullptr);
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0);
  const int saved = ::dup(STDERR_FILENO);
  REQUIRE(saved >= 0);
  REQUIRE(::dup2(fds[1], STDERR_FILENO) >= 0);
  Info("t.stderr", "to stderr");
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  ::close(fds[1]);
  char buf[4096];
  const ssize_t n = ::read(fds[0], buf, sizeof(buf));
  ::close(fds[0]);
  REQUIRE(n > 0);
  json j = json::parse(std::string(buf, static_cast<size_t>(n)));
  CHECK(j["event"] == "t.stderr");
  CHECK(j["msg"] == "to stderr");
}

// The audit line copies plain ASCII values as they are and hands everything else to nlohmann's
// serializer: for every byte value, alone and between plain text, the uid field must read
// exactly as the serializer (error handler "replace") writes that string.
TEST_CASE("audit string values are written as nlohmann writes them, for every byte",
          "[log][audit]") {
  using ojson = nlohmann::ordered_json;
  for (int c = 0; c < 256; ++c) {
    for (const std::string& uid : {std::string(1, static_cast<char>(c)),
                                   "ab" + std::string(1, static_cast<char>(c)) + "cd"}) {
      LogCapture cap;
      AuditRecord r;
      r.api = "v2";
      r.operation = "encrypt";
      r.uid = uid;
      r.code = "OK";
      Audit(r);
      auto lines = cap.lines();
      REQUIRE(lines.size() == 1);
      const std::string want =
          "\"uid\":" + ojson(uid).dump(-1, ' ', false, ojson::error_handler_t::replace) + ",";
      INFO("byte " << c);
      CHECK(lines[0].find(want) != std::string::npos);
    }
  }
}

}  // namespace
}  // namespace trousseau::log
