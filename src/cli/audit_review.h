// Reading trousseau's audit records back and reviewing them (`trousseau audit`).
//
// Input: raw JSON lines as the plugin writes them to stderr, or kubelet's CRI container log
// lines ("<RFC3339Nano> stderr F <json>", long lines split into "P" parts and a final "F").
// Lines that are valid JSON but not audit records (the plugin's other log lines) are ignored;
// everything else that cannot be read is counted as malformed, never fatal.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace trousseau::cli::audit {

using Micros = int64_t;  // microseconds since the Unix epoch, UTC

// RFC 3339 ("2026-12-01T20:57:39.123456Z", "...+02:00", up to nanoseconds); nullopt if not, or
// if the instant lies before 1970-01-01T00:00:00Z or after year 9999 UTC.
std::optional<Micros> ParseRfc3339(std::string_view text);
// "2026-12-01T20:57:39.123Z" (milliseconds).
std::string FormatRfc3339(Micros t);

struct Record {
  Micros time = 0;
  std::string api, op, uid, key_id, code, vault, vault_request_id;
  int64_t key_version = 0;  // from "key_version", else the key_id's ":vN" suffix; 0 unknown
  int64_t duration_us = -1; // -1: absent
};

struct ReadStats {
  uint64_t lines = 0;           // physical lines read (CRI partial lines count each)
  uint64_t records = 0;         // audit records kept (inside --since/--until)
  uint64_t other_lines = 0;     // JSON log lines that are not audit records (ignored)
  uint64_t malformed = 0;       // not JSON, broken CRI prefix, audit record with bad fields
  uint64_t newer_schema = 0;    // audit records of a schema this build does not know
  uint64_t outside_period = 0;  // audit records outside --since/--until
  uint64_t dropped_reported = 0;  // sum of "dropped_audit_records" in log.dropped lines
  std::vector<std::string> malformed_where;  // "FILE:LINE" of the first few malformed lines
};

class Reader {
 public:
  Reader(std::optional<Micros> since, std::optional<Micros> until)
      : since_(since), until_(until) {}

  // One physical line (without its newline) from `source` (a file name or "-").
  void Feed(std::string_view line, std::string_view source, uint64_t line_number);
  // End of a source: a dangling partial CRI line is malformed.
  void EndSource(std::string_view source);

  // A line that could not be read at all (e.g. longer than the reader's cap).
  void Malformed(std::string_view source, uint64_t line_number);

  const std::vector<Record>& records() const { return records_; }
  std::vector<Record>& mutable_records() { return records_; }
  const ReadStats& stats() const { return stats_; }

 private:
  void Logical(std::string_view text, std::string_view source, uint64_t line_number);

  std::optional<Micros> since_, until_;
  std::map<std::string, std::string> partial_;  // "source\nstream" -> joined P parts
  std::vector<Record> records_;
  ReadStats stats_;
};

struct ReviewOptions {
  uint64_t burst_min_errors = 5;      // an error burst has at least this many errors...
  Micros burst_gap_us = 60'000'000;   // ...each within this gap of the previous one
};

struct OpStats {
  uint64_t calls = 0, errors = 0;
  int64_t p50_us = -1, p99_us = -1, max_us = -1;  // -1: no durations
};

struct Burst {
  Micros first = 0, last = 0;
  uint64_t errors = 0;
  std::map<std::string, uint64_t> codes;
};

struct VersionUse {
  uint64_t decrypts = 0;        // successful decrypts of ciphertexts of this version
  Micros last_seen = 0;
  uint64_t refused = 0;         // FAILED_PRECONDITION (below min_decryption_version)
  Micros last_refused = 0;
};

struct Review {
  ReadStats input;
  uint64_t records = 0;
  Micros first = 0, last = 0;
  std::map<std::string, OpStats> by_op;        // "v2 encrypt"
  std::map<std::string, uint64_t> by_key_id, by_code, by_vault;
  std::vector<Burst> bursts;
  uint64_t longest_error_run = 0;
  Micros run_first = 0, run_last = 0;
  std::map<std::string, std::map<int64_t, VersionUse>> decrypt_versions;  // key -> version -> use
  uint64_t with_request_id = 0;
};

// Nearest-rank percentile of sorted values (p in (0,100]); -1 if empty.
int64_t Percentile(const std::vector<int64_t>& sorted, double p);

Review BuildReview(std::vector<Record> records, const ReadStats& input, const ReviewOptions& opts);
std::string RenderText(const Review& r, const ReviewOptions& opts);
nlohmann::ordered_json RenderJson(const Review& r, const ReviewOptions& opts);

}  // namespace trousseau::cli::audit
