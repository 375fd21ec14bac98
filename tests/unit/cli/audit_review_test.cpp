// The audit reader and review: raw and CRI lines, malformed input, records written by the real
// log::Audit read back, exact review numbers on a constructed record set, and time filtering.
#include "cli/audit_review.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "fakes/log_capture.h"
#include "observability/log.h"

namespace trousseau::cli::audit {
namespace {

using Catch::Contains;
using nlohmann::json;

constexpr Micros kT0 = 1796155200LL * 1000000;  // 2026-12-01T20:00:00Z

std::string Rec(Micros t, const std::string& op, const std::string& code, int64_t dur_us,
                const std::string& key_id = "transit/kubernetes:v3", const std::string& api = "v2",
                const std::string& vault = "https://vault-a:8200") {
  json j = {{"time", FormatRfc3339(t)}, {"level", "info"}, {"type", "audit"},
            {"schema", "trousseau.audit/v1"}, {"event", "kms.call"}, {"api", api}, {"op", op},
            {"uid", "u"}, {"key_id", key_id}, {"code", code}, {"in_bytes", 32},
            {"out_bytes", 90}, {"duration_us", dur_us}};
  if (!vault.empty()) j["vault"] = vault;
  if (code == "OK") j["vault_request_id"] = "9f1c2a34-0000-4000-8000-000000000001";
  return j.dump();
}

Reader ReadAll(const std::vector<std::string>& lines, std::optional<Micros> since = std::nullopt,
               std::optional<Micros> until = std::nullopt) {
  Reader r(since, until);
  uint64_t n = 0;
  for (const auto& l : lines) r.Feed(l, "t.log", ++n);
  r.EndSource("t.log");
  return r;
}

TEST_CASE("RFC 3339 times parse and format", "[cli][audit][time]") {
  CHECK(ParseRfc3339("2026-12-01T20:00:00Z") == kT0);
  CHECK(ParseRfc3339("2026-12-01T20:00:00.5Z") == kT0 + 500000);
  CHECK(ParseRfc3339("2026-12-01T20:00:00.123456789Z") == kT0 + 123456);
  CHECK(ParseRfc3339("2026-12-01T21:30:00+01:30") == kT0);
  CHECK(ParseRfc3339("2026-12-01T18:00:00-02:00") == kT0);
  CHECK(ParseRfc3339("1970-01-01T00:00:00Z") == 0);
  CHECK(ParseRfc3339("9999-12-31T23:59:59.999999Z") == 253402300799999999LL);
  CHECK(FormatRfc3339(253402300799999999LL) == "9999-12-31T23:59:59.999Z");
  CHECK(FormatRfc3339(kT0 + 123456) == "2026-12-01T20:00:00.123Z");
  CHECK(FormatRfc3339(0) == "1970-01-01T00:00:00.000Z");
  CHECK(ParseRfc3339(FormatRfc3339(kT0 + 86400LL * 1000000 * 400)) == kT0 + 86400LL * 1000000 * 400);
  for (const char* bad : {"", "2026-12-01", "2026-12-01T20:00:00", "2026-13-01T20:00:00Z",
                          "2026-12-01 20:00:00Z", "2026-12-01T20:00:00.Z", "2026-12-01T20:00:00Zx",
                          "2026-12-01T20:00:00+0100", "20261201T200000Z", "2026-12-01T25:00:00Z",
                          // instants FormatRfc3339 cannot write back (the fuzzer found the first:
                          // before 1970, ms truncation and floor disagree)
                          "1969-12-31T23:59:59.9995Z", "1970-01-01T00:30:00+01:00",
                          "0000-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"}) {
    INFO(bad);
    CHECK_FALSE(ParseRfc3339(bad).has_value());
  }
}

TEST_CASE("raw JSON lines: audit records kept, other log lines ignored, junk counted", "[cli][audit]") {
  const std::vector<std::string> lines = {
      Rec(kT0, "encrypt", "OK", 1500),
      R"({"time":"2026-12-01T20:00:01.000000Z","level":"info","event":"start","msg":"serving"})",
      "",
      "not json at all",
      "{\"type\":\"audit\",\"time\":",                                            // cut JSON
      "[1,2,3]",                                                                 // not an object
      R"({"type":"audit","time":"2026-12-01T20:00:02Z","api":"v2","op":"encrypt"})",  // no code
      R"({"type":"audit","time":"yesterday","api":"v2","op":"encrypt","code":"OK"})",
      R"({"type":"audit","time":"2026-12-01T20:00:02Z","api":"v2","op":"encrypt","code":"OK","duration_us":"fast"})",
      R"({"type":"audit","schema":"trousseau.audit/v2","time":"2026-12-01T20:00:02Z","api":"v2","op":"x","code":"OK"})",
      R"({"type":"audit","schema":"other/v1","time":"2026-12-01T20:00:02Z","api":"v2","op":"x","code":"OK"})",
      "  " + Rec(kT0 + 3000000, "decrypt", "OK", 2500) + "\r",
  };
  Reader r = ReadAll(lines);
  const ReadStats& s = r.stats();
  CHECK(s.lines == lines.size());
  CHECK(r.records().size() == 2);
  CHECK(s.records == 2);
  CHECK(s.other_lines == 1);
  CHECK(s.malformed == 7);
  CHECK(s.newer_schema == 1);
  REQUIRE(s.malformed_where.size() == 5);
  CHECK(s.malformed_where[0] == "t.log:4");
  const Record& d = r.records()[1];
  CHECK(d.op == "decrypt");
  CHECK(d.time == kT0 + 3000000);
  CHECK(d.duration_us == 2500);
  CHECK(d.key_version == 3);  // from the key_id suffix
  CHECK(d.vault == "https://vault-a:8200");
  CHECK(d.vault_request_id == "9f1c2a34-0000-4000-8000-000000000001");
}

TEST_CASE("CRI lines: F lines, P parts joined per stream, broken prefixes counted", "[cli][audit][cri]") {
  const std::string rec = Rec(kT0, "encrypt", "OK", 1000);
  const std::string rec2 = Rec(kT0 + 1000000, "decrypt", "OK", 2000);
  const std::string pre = "2026-12-01T20:00:00.123456789Z ";
  const std::vector<std::string> lines = {
      pre + "stderr F " + rec,
      pre + "stderr P " + rec2.substr(0, 10),
      pre + "stdout F {\"event\":\"x\",\"level\":\"info\"}",  // another stream in between
      pre + "stderr P " + rec2.substr(10, 20),
      pre + "stderr F " + rec2.substr(30),
      pre + "stderr X " + rec,                  // unknown tag
      "yesterday stderr F " + rec,               // bad time
      pre + "stdin F " + rec,                    // bad stream
      pre + "stderr F not-json",
      pre + "stderr P " + rec.substr(0, 5),      // dangling at end of the file
  };
  Reader r = ReadAll(lines);
  REQUIRE(r.records().size() == 2);
  CHECK(r.records()[0].op == "encrypt");
  CHECK(r.records()[1].op == "decrypt");
  CHECK(r.records()[1].duration_us == 2000);
  CHECK(r.stats().other_lines == 1);
  CHECK(r.stats().malformed == 5);
}

TEST_CASE("records written by log::Audit read back exactly, hostile uids included",
          "[cli][audit][roundtrip]") {
  fakes::LogCapture cap;
  const std::string big(1u << 20, 'u');
  std::string hostile = "a\"b\\c\nd\re\tf";
  hostile.push_back('\x01');
  hostile.push_back('\x1f');
  hostile += "\"},{\"type\":\"audit\"}\n{";
  for (const std::string* uid : std::vector<const std::string*>{&big, &hostile}) {
    log::AuditRecord a;
    a.api = "v2";
    a.operation = "decrypt";
    a.uid = *uid;
    a.key_id = "transit/kubernetes:v7";
    a.key_version = 7;
    a.code = "OK";
    a.vault_node = "https://vault-a:8200";
    a.vault_request_id = "0b7d-req";
    a.input_bytes = 90;
    a.output_bytes = 32;
    a.duration = std::chrono::microseconds(4321);
    log::Audit(a);
  }
  const auto lines = cap.lines();
  REQUIRE(lines.size() == 2);
  for (const auto& l : lines) {
    REQUIRE(l.back() == '\n');
    CHECK(l.find('\n') == l.size() - 1);  // one line each, whatever the uid held
    CHECK(l.size() < 2048);               // the 1 MiB uid was clipped
  }
  const json first = json::parse(lines[0]);
  CHECK(first["schema"] == "trousseau.audit/v1");
  CHECK(first["uid"].get<std::string>() == std::string(log::kMaxAuditUidBytes, 'u'));
  CHECK(first["uid_clipped"] == true);
  CHECK(first["uid_bytes"] == (1u << 20));
  CHECK_FALSE(json::parse(lines[1]).contains("uid_clipped"));

  Reader r = ReadAll({lines[0].substr(0, lines[0].size() - 1), lines[1].substr(0, lines[1].size() - 1)});
  REQUIRE(r.records().size() == 2);
  CHECK(r.stats().malformed == 0);
  CHECK(r.records()[0].uid == std::string(log::kMaxAuditUidBytes, 'u'));
  CHECK(r.records()[1].uid == hostile);
  CHECK(r.records()[1].key_version == 7);
  CHECK(r.records()[1].duration_us == 4321);
  CHECK(r.records()[1].vault_request_id == "0b7d-req");
  // And through kubelet's CRI framing, split in 100-byte parts as a long line would be.
  std::vector<std::string> cri;
  const std::string text = lines[1].substr(0, lines[1].size() - 1);
  for (size_t i = 0; i < text.size(); i += 100) {
    cri.push_back(std::string("2026-12-01T20:00:00Z stderr ") + (i + 100 >= text.size() ? "F " : "P ") +
                  text.substr(i, 100));
  }
  Reader rc = ReadAll(cri);
  REQUIRE(rc.records().size() == 1);
  CHECK(rc.records()[0].uid == hostile);
}

TEST_CASE("a uid is clipped on a UTF-8 boundary", "[cli][audit][roundtrip]") {
  fakes::LogCapture cap;
  std::string uid(log::kMaxAuditUidBytes - 1, 'x');
  uid += "\xc3\xa9tail";  // a 2-byte character straddling the limit
  log::AuditRecord a;
  a.api = "v2";
  a.operation = "encrypt";
  a.uid = uid;
  a.code = "OK";
  log::Audit(a);
  const json j = json::parse(cap.lines().at(0));
  CHECK(j["uid"].get<std::string>() == std::string(log::kMaxAuditUidBytes - 1, 'x'));
  CHECK(j["uid_clipped"] == true);
}

// 100 v2 encrypts at 1..100 ms, 10 decrypts of v1 and 20 of v2, a burst of 6 UNAVAILABLE
// errors 10 s apart, then one lone error 5 minutes later, and 2 refused v1 decrypts.
std::vector<std::string> Constructed() {
  std::vector<std::string> l;
  Micros t = kT0;
  for (int i = 1; i <= 100; ++i) l.push_back(Rec(t += 1000000, "encrypt", "OK", i * 1000));
  for (int i = 0; i < 10; ++i) {
    l.push_back(Rec(t += 1000000, "decrypt", "OK", 3000, "transit/kubernetes:v1", "v2", "https://vault-b:8200"));
  }
  for (int i = 0; i < 20; ++i) l.push_back(Rec(t += 1000000, "decrypt", "OK", 3000, "transit/kubernetes:v2"));
  for (int i = 0; i < 6; ++i) {
    l.push_back(Rec(t += 10000000, "encrypt", "UNAVAILABLE", 5000000, "", "v2", ""));
  }
  l.push_back(Rec(t += 300000000, "encrypt", "DEADLINE_EXCEEDED", 30000000, "", "v2", ""));
  for (int i = 0; i < 2; ++i) {
    l.push_back(Rec(t += 1000000, "decrypt", "FAILED_PRECONDITION", 2000, "transit/kubernetes:v1", "v2", ""));
  }
  l.push_back(Rec(t += 1000000, "encrypt", "OK", 1000, "transit/kubernetes:v3", "v1beta1"));
  return l;
}

TEST_CASE("the review's numbers on a constructed record set", "[cli][audit][review]") {
  Reader rd = ReadAll(Constructed());
  REQUIRE(rd.records().size() == 140);
  const Review r = BuildReview(rd.records(), rd.stats(), ReviewOptions{});
  CHECK(r.records == 140);
  CHECK(r.first == kT0 + 1000000);
  const OpStats& enc = r.by_op.at("v2 encrypt");
  CHECK(enc.calls == 107);
  CHECK(enc.errors == 7);
  // durations: 1..100 ms, six 5 s, one 30 s: 107 values; p50 = 54th = 54 ms, p99 = 106th = 5 s
  CHECK(enc.p50_us == 54000);
  CHECK(enc.p99_us == 5000000);
  CHECK(enc.max_us == 30000000);
  const OpStats& dec = r.by_op.at("v2 decrypt");
  CHECK(dec.calls == 32);
  CHECK(dec.errors == 2);
  CHECK(dec.p50_us == 3000);
  CHECK(r.by_op.at("v1beta1 encrypt").calls == 1);
  CHECK(r.by_code.at("OK") == 131);
  CHECK(r.by_code.at("UNAVAILABLE") == 6);
  CHECK(r.by_code.at("DEADLINE_EXCEEDED") == 1);
  CHECK(r.by_code.at("FAILED_PRECONDITION") == 2);
  CHECK(r.by_key_id.at("transit/kubernetes:v3") == 101);
  CHECK(r.by_key_id.at("transit/kubernetes:v1") == 12);
  CHECK(r.by_key_id.at("transit/kubernetes:v2") == 20);
  CHECK(r.by_vault.at("https://vault-a:8200") == 121);
  CHECK(r.by_vault.at("https://vault-b:8200") == 10);
  CHECK(r.with_request_id == 131);
  // One burst: the 6 UNAVAILABLE 10 s apart; the lone error 5 min later starts a run of 3
  // (it and the two refused decrypts) that is too small to be a burst.
  REQUIRE(r.bursts.size() == 1);
  CHECK(r.bursts[0].errors == 6);
  CHECK(r.bursts[0].codes.at("UNAVAILABLE") == 6);
  CHECK(r.bursts[0].last - r.bursts[0].first == 50000000);
  CHECK(r.longest_error_run == 9);  // 6 + 1 + 2 with no OK between them
  const auto& versions = r.decrypt_versions.at("transit/kubernetes");
  CHECK(versions.at(1).decrypts == 10);
  CHECK(versions.at(1).refused == 2);
  CHECK(versions.at(2).decrypts == 20);
  CHECK(versions.at(2).last_seen == kT0 + 130000000);

  const std::string text = RenderText(r, ReviewOptions{});
  CHECK_THAT(text, Contains("lowest version still decrypted: v1 (last seen 2026-12-01T20:01:50.000Z)"));
  CHECK_THAT(text, Contains("raising min_decryption_version above 1 would break"));
  CHECK_THAT(text, Contains("6 errors: UNAVAILABLE 6"));
  CHECK_THAT(text, Contains("longest run of consecutive errors: 9"));
  const auto j = RenderJson(r, ReviewOptions{});
  CHECK(j["decrypt_key_versions"]["transit/kubernetes"]["lowest_version_decrypted"] == 1);
  CHECK(j["by_op"]["v2 encrypt"]["p99_us"] == 5000000);
  CHECK(j["input"]["records"] == 140);

  ReviewOptions loose;
  loose.burst_min_errors = 3;
  loose.burst_gap_us = 400000000;
  const Review r2 = BuildReview(rd.records(), rd.stats(), loose);
  REQUIRE(r2.bursts.size() == 1);
  CHECK(r2.bursts[0].errors == 9);
}

TEST_CASE("failed decrypts other than FAILED_PRECONDITION say nothing about key versions",
          "[cli][audit][review]") {
  Reader rd = ReadAll({Rec(kT0, "decrypt", "INVALID_ARGUMENT", 1000, "transit/kubernetes:v9"),
                       Rec(kT0 + 1, "decrypt", "UNAVAILABLE", 1000, "transit/kubernetes:v9"),
                       Rec(kT0 + 2, "decrypt", "OK", 1000, "transit/kubernetes:v4")});
  const Review r = BuildReview(rd.records(), rd.stats(), ReviewOptions{});
  REQUIRE(r.decrypt_versions.size() == 1);
  const auto& versions = r.decrypt_versions.at("transit/kubernetes");
  REQUIRE(versions.size() == 1);
  CHECK(versions.at(4).decrypts == 1);
  CHECK(r.longest_error_run == 2);
}

TEST_CASE("percentiles are nearest-rank", "[cli][audit][review]") {
  CHECK(Percentile({}, 50) == -1);
  CHECK(Percentile({7}, 50) == 7);
  CHECK(Percentile({7}, 99) == 7);
  CHECK(Percentile({1, 2}, 50) == 1);
  CHECK(Percentile({1, 2}, 99) == 2);
  std::vector<int64_t> h;
  for (int i = 1; i <= 1000; ++i) h.push_back(i);
  CHECK(Percentile(h, 50) == 500);
  CHECK(Percentile(h, 99) == 990);
}

TEST_CASE("--since is inclusive and --until exclusive", "[cli][audit][filter]") {
  std::vector<std::string> lines;
  for (int i = 0; i < 10; ++i) lines.push_back(Rec(kT0 + i * 60000000LL, "encrypt", "OK", 1000));
  Reader r = ReadAll(lines, kT0 + 2 * 60000000LL, kT0 + 5 * 60000000LL);
  REQUIRE(r.records().size() == 3);
  CHECK(r.records().front().time == kT0 + 2 * 60000000LL);
  CHECK(r.records().back().time == kT0 + 4 * 60000000LL);
  CHECK(r.stats().outside_period == 7);
  Reader only_since = ReadAll(lines, kT0 + 9 * 60000000LL);
  CHECK(only_since.records().size() == 1);
}

TEST_CASE("log.dropped lines are summed and reported", "[cli][audit]") {
  Reader r = ReadAll({
      Rec(kT0, "encrypt", "OK", 1000),
      R"({"time":"2026-12-01T20:00:01Z","level":"warn","event":"log.dropped","dropped_audit_records":12,"dropped_other_lines":3})",
      R"({"time":"2026-12-01T20:00:11Z","level":"warn","event":"log.dropped","dropped_audit_records":5,"dropped_other_lines":0})",
  });
  CHECK(r.stats().dropped_reported == 17);
  CHECK(r.stats().other_lines == 2);
  const Review rv = BuildReview(r.records(), r.stats(), ReviewOptions{});
  CHECK_THAT(RenderText(rv, ReviewOptions{}), Contains("17 audit records were dropped"));
}

TEST_CASE("the text review shows no control bytes from the log", "[cli][audit][negative]") {
  // Found by tests/fuzz (audit): a key_id or uid holding a terminal escape was printed raw.
  Reader r = ReadAll({
      R"({"time":"2026-12-01T20:00:00Z","level":"info","type":"audit","schema":"trousseau.audit/v1","event":"kms.call","api":"v2","op":"decrypt","uid":"u","key_id":"k\u001b]0;owned\u0007","code":"OK\u001b[2J"})",
  });
  REQUIRE(r.stats().records == 1);
  const std::string text = RenderText(BuildReview(r.records(), r.stats(), ReviewOptions{}), ReviewOptions{});
  CHECK(text.find('\x1b') == std::string::npos);
  CHECK(text.find('\x07') == std::string::npos);
  CHECK_THAT(text, Contains("k?]0;owned?"));
}

TEST_CASE("an empty input gives an empty review, not a crash", "[cli][audit][negative]") {
  Reader r = ReadAll({"", "garbage", "{}"});
  const Review rv = BuildReview(r.records(), r.stats(), ReviewOptions{});
  CHECK(rv.records == 0);
  CHECK_THAT(RenderText(rv, ReviewOptions{}), Contains("no audit records"));
  CHECK(RenderJson(rv, ReviewOptions{})["period"].is_null());
}

}  // namespace
}  // namespace trousseau::cli::audit
