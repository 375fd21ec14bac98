// Fuzz target: `trousseau audit` — the reader of audit records (raw JSON lines and kubelet's
// CRI log lines with P/F partials), RFC 3339 times, and the review built from them.
// Input: byte 0 picks the --since/--until window; the rest is the log, split at '\n'.
// Invariants:
// - every physical line is counted; a line is at most one of record / other / malformed / newer
//   schema / outside the window (partial lines join, so the sum is at most the line count);
// - kept records lie inside the window; their time round-trips through FormatRfc3339 (to ms);
// - the review counts exactly the kept records; the JSON rendering dumps (invalid UTF-8 is
//   replaced, never thrown); the text rendering holds no control characters but newlines (log
//   text comes from callers: it must not drive the operator's terminal).
#include <cstdint>
#include <string>
#include <string_view>

#include "cli/audit_review.h"
#include "fuzz/fuzz_check.h"

using namespace trousseau::cli::audit;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > 256 * 1024) return 0;
  std::optional<Micros> since, until;
  // 2026-12-01T00:00:00Z and 2026-12-02T00:00:00Z
  if (data[0] & 1) since = 1796083200LL * 1000000;
  if (data[0] & 2) until = 1796169600LL * 1000000;
  const std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);

  // ParseRfc3339 on the raw text, and a round trip when it parses.
  if (auto t = ParseRfc3339(in.substr(0, 64)); t) {
    auto back = ParseRfc3339(FormatRfc3339(*t));
    FUZZ_CHECK(back.has_value(), "FormatRfc3339 output does not parse: " + FormatRfc3339(*t));
    FUZZ_CHECK(*t >= 0, "ParseRfc3339 returned a time before 1970");
    FUZZ_CHECK(*back / 1000 == *t / 1000, "RFC 3339 round trip: " + FormatRfc3339(*t));
  }

  Reader reader(since, until);
  uint64_t lines = 0;
  size_t start = 0;
  while (start < in.size()) {
    size_t nl = in.find('\n', start);
    if (nl == std::string_view::npos) nl = in.size();
    reader.Feed(in.substr(start, nl - start), "fuzz.log", ++lines);
    start = nl + 1;
  }
  reader.EndSource("fuzz.log");
  const ReadStats& s = reader.stats();
  FUZZ_CHECK(s.lines == lines, "physical lines miscounted");
  FUZZ_CHECK(s.records == reader.records().size(), "records miscounted");
  FUZZ_CHECK(s.records + s.other_lines + s.malformed + s.newer_schema + s.outside_period <= lines + 1,
             "more outcomes than lines");
  for (const Record& r : reader.records()) {
    if (since) FUZZ_CHECK(r.time >= *since, "record before --since kept");
    if (until) FUZZ_CHECK(r.time <= *until, "record after --until kept");
    auto back = ParseRfc3339(FormatRfc3339(r.time));
    FUZZ_CHECK(back && *back / 1000 == r.time / 1000, "record time round trip");
    FUZZ_CHECK(r.key_version >= 0, "negative key_version");
  }
  ReviewOptions opts;
  const Review review = BuildReview(reader.records(), s, opts);
  FUZZ_CHECK(review.records == s.records, "review lost records");
  uint64_t by_op = 0;
  for (const auto& [op, st] : review.by_op) {
    by_op += st.calls;
    FUZZ_CHECK(st.errors <= st.calls, "more errors than calls in " + op);
  }
  FUZZ_CHECK(by_op == review.records, "by_op does not add up");
  const std::string text = RenderText(review, opts);
  for (char c : text) {
    FUZZ_CHECK(c == '\n' || (static_cast<unsigned char>(c) >= 0x20 && c != 0x7f),
               "control character in the text review");
  }
  const std::string json =
      RenderJson(review, opts).dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
  FUZZ_CHECK(!json.empty(), "empty JSON review");
  return 0;
}
