#include "cli/audit_review.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>

#include "observability/log.h"

namespace trousseau::cli::audit {
namespace {

constexpr size_t kMaxMalformedWhere = 5;

bool Digits(std::string_view s, size_t pos, size_t n, int* out) {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return true;
}

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

std::string_view TrimLeft(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  return s;
}

// A key_id's trailing ":v<N>" (our key_id format), 0 if none.
int64_t VersionSuffix(std::string_view key_id) {
  const size_t at = key_id.rfind(":v");
  if (at == std::string_view::npos || at + 2 >= key_id.size()) return 0;
  int64_t v = 0;
  for (size_t i = at + 2; i < key_id.size(); ++i) {
    const char c = key_id[i];
    if (c < '0' || c > '9' || v > 100000000) return 0;
    v = v * 10 + (c - '0');
  }
  return v;
}

std::string KeyIdentity(std::string_view key_id) {
  if (key_id.empty()) return "(no key_id)";
  const size_t at = key_id.rfind(":v");
  if (at != std::string_view::npos && VersionSuffix(key_id) > 0) return std::string(key_id.substr(0, at));
  return std::string(key_id);
}

std::string Ms(int64_t us) {
  if (us < 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3f", static_cast<double>(us) / 1000.0);
  return buf;
}

std::string Span(Micros us) {
  int64_t s = us / 1000000;
  char buf[64];
  if (s >= 86400) {
    std::snprintf(buf, sizeof(buf), "%lldd%lldh%lldm", static_cast<long long>(s / 86400),
                  static_cast<long long>(s % 86400 / 3600), static_cast<long long>(s % 3600 / 60));
  } else if (s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%lldh%lldm%llds", static_cast<long long>(s / 3600),
                  static_cast<long long>(s % 3600 / 60), static_cast<long long>(s % 60));
  } else if (s >= 60) {
    std::snprintf(buf, sizeof(buf), "%lldm%llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  } else {
    std::snprintf(buf, sizeof(buf), "%.3fs", static_cast<double>(us) / 1e6);
  }
  return buf;
}

bool OptString(const nlohmann::json& j, const char* name, std::string* out) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) return true;
  if (!it->is_string()) return false;
  *out = it->get<std::string>();
  return true;
}

bool OptInt(const nlohmann::json& j, const char* name, int64_t* out) {
  auto it = j.find(name);
  if (it == j.end()) return true;
  if (!it->is_number_integer() || it->get<int64_t>() < 0) return false;
  *out = it->get<int64_t>();
  return true;
}

}  // namespace

std::optional<Micros> ParseRfc3339(std::string_view s) {
  int y, mo, d, h, mi, se;
  if (!Digits(s, 0, 4, &y) || s.size() < 20 || s[4] != '-' || !Digits(s, 5, 2, &mo) ||
      s[7] != '-' || !Digits(s, 8, 2, &d) || (s[10] != 'T' && s[10] != 't') ||
      !Digits(s, 11, 2, &h) || s[13] != ':' || !Digits(s, 14, 2, &mi) || s[16] != ':' ||
      !Digits(s, 17, 2, &se)) {
    return std::nullopt;
  }
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60) return std::nullopt;
  size_t pos = 19;
  int64_t frac_us = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    size_t nd = 0;
    int64_t scale = 100000;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      if (nd < 6) {
        frac_us += (s[pos] - '0') * scale;
        scale /= 10;
      }
      ++nd;
      ++pos;
    }
    if (nd == 0 || nd > 9) return std::nullopt;
  }
  if (pos >= s.size()) return std::nullopt;
  int64_t offset_s = 0;
  if (s[pos] == 'Z' || s[pos] == 'z') {
    ++pos;
  } else if (s[pos] == '+' || s[pos] == '-') {
    int oh, om;
    if (!Digits(s, pos + 1, 2, &oh) || pos + 3 >= s.size() || s[pos + 3] != ':' ||
        !Digits(s, pos + 4, 2, &om) || oh > 23 || om > 59) {
      return std::nullopt;
    }
    offset_s = (oh * 3600 + om * 60) * (s[pos] == '+' ? 1 : -1);
    pos += 6;
  } else {
    return std::nullopt;
  }
  if (pos != s.size()) return std::nullopt;
  const int64_t days = DaysFromCivil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d));
  const int64_t secs = days * 86400 + h * 3600 + mi * 60 + std::min(se, 59) - offset_s;
  // Only instants FormatRfc3339 can write back: 1970-01-01T00:00:00Z up to the end of year 9999
  // UTC. An offset can push "0000-01-01T00:00:00+01:00" before year 0 or "9999-12-31T23:59:59-01:00"
  // into year 10000; before 1970, ms truncation and floor would also disagree.
  constexpr int64_t kYear10000 = 253402300800LL;  // 10000-01-01T00:00:00Z in Unix seconds
  if (secs < 0 || secs >= kYear10000) return std::nullopt;
  return secs * 1000000 + frac_us;
}

std::string FormatRfc3339(Micros t) {
  int64_t secs = t >= 0 ? t / 1000000 : (t - 999999) / 1000000;
  const int64_t ms = (t - secs * 1000000) / 1000;
  int64_t days = secs >= 0 ? secs / 86400 : (secs - 86399) / 86400;
  int64_t rem = secs - days * 86400;
  // civil_from_days
  days += 719468;
  const int64_t era = (days >= 0 ? days : days - 146096) / 146097;
  const unsigned doe = static_cast<unsigned>(days - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t y = static_cast<int64_t>(yoe) + era * 400;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  y += m <= 2;
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%04lld-%02u-%02uT%02lld:%02lld:%02lld.%03lldZ",
                static_cast<long long>(y), m, d, static_cast<long long>(rem / 3600),
                static_cast<long long>(rem % 3600 / 60), static_cast<long long>(rem % 60),
                static_cast<long long>(ms));
  return buf;
}

// ---- Reader -----------------------------------------------------------------------------------

void Reader::Malformed(std::string_view source, uint64_t line_number) {
  ++stats_.malformed;
  if (stats_.malformed_where.size() < kMaxMalformedWhere) {
    stats_.malformed_where.push_back(std::string(source) + ":" + std::to_string(line_number));
  }
}

void Reader::Feed(std::string_view line, std::string_view source, uint64_t line_number) {
  ++stats_.lines;
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  const std::string_view t = TrimLeft(line);
  if (t.empty()) return;
  if (t.front() == '{') {
    Logical(t, source, line_number);
    return;
  }
  // CRI: "<RFC3339Nano> <stream> <tag> <content>"
  const size_t s1 = line.find(' ');
  const size_t s2 = s1 == std::string_view::npos ? s1 : line.find(' ', s1 + 1);
  const size_t s3 = s2 == std::string_view::npos ? s2 : line.find(' ', s2 + 1);
  if (s2 == std::string_view::npos) {
    Malformed(source, line_number);
    return;
  }
  const std::string_view time = line.substr(0, s1);
  const std::string_view stream = line.substr(s1 + 1, s2 - s1 - 1);
  const std::string_view tags = s3 == std::string_view::npos ? line.substr(s2 + 1)
                                                             : line.substr(s2 + 1, s3 - s2 - 1);
  const std::string_view content = s3 == std::string_view::npos ? std::string_view()
                                                                 : line.substr(s3 + 1);
  const std::string_view tag = tags.substr(0, tags.find(':'));
  if (!ParseRfc3339(time) || (stream != "stdout" && stream != "stderr") ||
      (tag != "F" && tag != "P")) {
    Malformed(source, line_number);
    return;
  }
  std::string key = std::string(source) + "\n" + std::string(stream);
  if (tag == "P") {
    std::string& part = partial_[key];
    if (part.size() + content.size() > (4u << 20)) {  // a runaway partial line
      partial_.erase(key);
      Malformed(source, line_number);
      return;
    }
    part.append(content);
    return;
  }
  auto it = partial_.find(key);
  if (it == partial_.end()) {
    Logical(content, source, line_number);
  } else {
    std::string whole = std::move(it->second);
    partial_.erase(it);
    whole.append(content);
    Logical(whole, source, line_number);
  }
}

void Reader::EndSource(std::string_view source) {
  const std::string prefix = std::string(source) + "\n";
  for (auto it = partial_.begin(); it != partial_.end();) {
    if (it->first.rfind(prefix, 0) == 0) {
      Malformed(source, stats_.lines);
      it = partial_.erase(it);
    } else {
      ++it;
    }
  }
}

void Reader::Logical(std::string_view text, std::string_view source, uint64_t line_number) {
  const nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    Malformed(source, line_number);
    return;
  }
  const auto type = j.find("type");
  const bool audit = type != j.end() && type->is_string() && type->get<std::string>() == "audit";
  if (!audit) {
    ++stats_.other_lines;
    const auto ev = j.find("event");
    if (ev != j.end() && ev->is_string() && ev->get<std::string>() == "log.dropped") {
      int64_t n = 0;
      if (OptInt(j, "dropped_audit_records", &n)) stats_.dropped_reported += static_cast<uint64_t>(n);
    }
    return;
  }
  std::string schema;
  if (!OptString(j, "schema", &schema)) {
    Malformed(source, line_number);
    return;
  }
  if (!schema.empty() && schema != log::kAuditSchema) {
    if (schema.rfind("trousseau.audit/", 0) == 0) {
      ++stats_.newer_schema;
    } else {
      Malformed(source, line_number);
    }
    return;
  }
  Record r;
  std::string time;
  const bool ok = OptString(j, "time", &time) && OptString(j, "api", &r.api) &&
                  OptString(j, "op", &r.op) && OptString(j, "code", &r.code) &&
                  OptString(j, "uid", &r.uid) && OptString(j, "key_id", &r.key_id) &&
                  OptString(j, "vault", &r.vault) &&
                  OptString(j, "vault_request_id", &r.vault_request_id) &&
                  OptInt(j, "key_version", &r.key_version) &&
                  OptInt(j, "duration_us", &r.duration_us);
  const auto parsed = ParseRfc3339(time);
  if (!ok || !parsed || r.api.empty() || r.op.empty() || r.code.empty()) {
    Malformed(source, line_number);
    return;
  }
  if (!j.contains("duration_us")) r.duration_us = -1;
  r.time = *parsed;
  if (r.key_version == 0) r.key_version = VersionSuffix(r.key_id);
  if ((since_ && r.time < *since_) || (until_ && r.time >= *until_)) {
    ++stats_.outside_period;
    return;
  }
  ++stats_.records;
  records_.push_back(std::move(r));
}

// ---- Review -----------------------------------------------------------------------------------

int64_t Percentile(const std::vector<int64_t>& sorted, double p) {
  if (sorted.empty()) return -1;
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return sorted[rank - 1];
}

Review BuildReview(std::vector<Record> records, const ReadStats& input, const ReviewOptions& opts) {
  std::stable_sort(records.begin(), records.end(),
                   [](const Record& a, const Record& b) { return a.time < b.time; });
  Review r;
  r.input = input;
  r.records = records.size();
  if (!records.empty()) {
    r.first = records.front().time;
    r.last = records.back().time;
  }
  std::map<std::string, std::vector<int64_t>> durations;
  Burst cur;
  uint64_t run = 0;
  Micros run_first = 0;
  auto close_burst = [&] {
    if (cur.errors >= opts.burst_min_errors && cur.errors > 0) r.bursts.push_back(cur);
    cur = Burst();
  };
  for (const Record& rec : records) {
    const std::string op = rec.api + " " + rec.op;
    OpStats& os = r.by_op[op];
    ++os.calls;
    if (rec.duration_us >= 0) durations[op].push_back(rec.duration_us);
    if (!rec.key_id.empty()) ++r.by_key_id[rec.key_id];
    ++r.by_code[rec.code];
    if (!rec.vault.empty()) ++r.by_vault[rec.vault];
    if (!rec.vault_request_id.empty()) ++r.with_request_id;
    const bool error = rec.code != "OK";
    if (error) {
      ++os.errors;
      if (cur.errors > 0 && rec.time - cur.last > opts.burst_gap_us) close_burst();
      if (cur.errors == 0) cur.first = rec.time;
      cur.last = rec.time;
      ++cur.errors;
      ++cur.codes[rec.code];
      if (run == 0) run_first = rec.time;
      ++run;
      if (run > r.longest_error_run) {
        r.longest_error_run = run;
        r.run_first = run_first;
        r.run_last = rec.time;
      }
    } else {
      run = 0;
    }
    if (rec.op == "decrypt" && rec.key_version > 0 &&
        (rec.code == "OK" || rec.code == "FAILED_PRECONDITION")) {
      VersionUse& vu = r.decrypt_versions[KeyIdentity(rec.key_id)][rec.key_version];
      if (rec.code == "OK") {
        ++vu.decrypts;
        vu.last_seen = std::max(vu.last_seen, rec.time);
      } else if (rec.code == "FAILED_PRECONDITION") {
        ++vu.refused;
        vu.last_refused = std::max(vu.last_refused, rec.time);
      }
    }
  }
  close_burst();
  for (auto& [op, d] : durations) {
    std::sort(d.begin(), d.end());
    OpStats& os = r.by_op[op];
    os.p50_us = Percentile(d, 50);
    os.p99_us = Percentile(d, 99);
    os.max_us = d.back();
  }
  return r;
}

namespace {

// The lowest version with a successful decrypt, or 0.
int64_t LowestDecrypted(const std::map<int64_t, VersionUse>& versions) {
  for (const auto& [v, use] : versions) {
    if (use.decrypts > 0) return v;
  }
  return 0;
}

// Appends one printf-formatted line (cut at 1 KiB) and a newline.
__attribute__((format(printf, 2, 3))) void Appendf(std::string& o, const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  o += buf;
  o += "\n";
}

std::string Codes(const std::map<std::string, uint64_t>& codes) {
  std::string s;
  for (const auto& [c, n] : codes) s += (s.empty() ? "" : ", ") + c + " " + std::to_string(n);
  return s;
}

}  // namespace

// uid, key_id, code and vault come from callers and from log files: a control byte in them
// (a terminal escape) must not reach the operator's terminal. Fuzzing found them printed raw.
static std::string NoControlBytes(std::string s) {
  for (char& c : s) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\n') || u == 0x7f) c = '?';
  }
  return s;
}

std::string RenderText(const Review& r, const ReviewOptions& opts) {
  std::string o;
  const ReadStats& in = r.input;
  o += "trousseau audit review\n";
  if (r.records > 0) {
    Appendf(o, "period       %s .. %s (%s)", FormatRfc3339(r.first).c_str(),
         FormatRfc3339(r.last).c_str(), Span(r.last - r.first).c_str());
  } else {
    o += "period       (no audit records)\n";
  }
  Appendf(o, "input        %llu lines: %llu audit records, %llu other log lines, %llu malformed%s",
       static_cast<unsigned long long>(in.lines), static_cast<unsigned long long>(r.records),
       static_cast<unsigned long long>(in.other_lines),
       static_cast<unsigned long long>(in.malformed),
       in.outside_period ? (", " + std::to_string(in.outside_period) + " outside --since/--until").c_str() : "");
  if (!in.malformed_where.empty()) {
    std::string w;
    for (const auto& s : in.malformed_where) w += (w.empty() ? "" : ", ") + s;
    Appendf(o, "malformed at %s%s", w.c_str(), in.malformed > in.malformed_where.size() ? ", ..." : "");
  }
  if (in.newer_schema > 0) {
    Appendf(o, "skipped      %llu records of a newer audit schema than %s: use a newer trousseau",
         static_cast<unsigned long long>(in.newer_schema), log::kAuditSchema);
  }
  if (in.dropped_reported > 0) {
    Appendf(o, "dropped      %llu audit records were dropped by the plugin (its log.dropped lines): "
         "they are missing from this review",
         static_cast<unsigned long long>(in.dropped_reported));
  }
  if (r.records == 0) return NoControlBytes(std::move(o));

  Appendf(o, "\n%-28s %8s %8s %10s %10s %10s", "calls by api/op", "calls", "errors", "p50 ms", "p99 ms", "max ms");
  for (const auto& [op, s] : r.by_op) {
    Appendf(o, "  %-26s %8llu %8llu %10s %10s %10s", op.c_str(), static_cast<unsigned long long>(s.calls),
         static_cast<unsigned long long>(s.errors), Ms(s.p50_us).c_str(), Ms(s.p99_us).c_str(),
         Ms(s.max_us).c_str());
  }
  o += "\ncalls by code\n";
  for (const auto& [c, n] : r.by_code) Appendf(o, "  %-26s %8llu", c.c_str(), static_cast<unsigned long long>(n));
  o += "\ncalls by key_id\n";
  for (const auto& [k, n] : r.by_key_id) Appendf(o, "  %-40s %8llu", k.c_str(), static_cast<unsigned long long>(n));
  o += "\nvault nodes\n";
  if (r.by_vault.empty()) o += "  (none recorded)\n";
  for (const auto& [v, n] : r.by_vault) Appendf(o, "  %-40s %8llu", v.c_str(), static_cast<unsigned long long>(n));
  Appendf(o, "  %llu of %llu records carry a vault_request_id (match them in Vault's audit device)",
       static_cast<unsigned long long>(r.with_request_id), static_cast<unsigned long long>(r.records));

  Appendf(o, "\nerror bursts (>= %llu errors, each within %s of the previous)",
       static_cast<unsigned long long>(opts.burst_min_errors), Span(opts.burst_gap_us).c_str());
  if (r.bursts.empty()) o += "  none\n";
  for (const auto& b : r.bursts) {
    Appendf(o, "  %s .. %s  %llu errors: %s", FormatRfc3339(b.first).c_str(), FormatRfc3339(b.last).c_str(),
         static_cast<unsigned long long>(b.errors), Codes(b.codes).c_str());
  }
  if (r.longest_error_run > 1) {
    Appendf(o, "  longest run of consecutive errors: %llu (%s .. %s)",
         static_cast<unsigned long long>(r.longest_error_run), FormatRfc3339(r.run_first).c_str(),
         FormatRfc3339(r.run_last).c_str());
  }

  o += "\nkey versions still decrypted (successful Decrypt calls, by ciphertext version)\n";
  if (r.decrypt_versions.empty()) o += "  no decrypts in the period\n";
  for (const auto& [key, versions] : r.decrypt_versions) {
    Appendf(o, "  %s", key.c_str());
    for (const auto& [v, use] : versions) {
      std::string extra;
      if (use.refused > 0) {
        extra = ", " + std::to_string(use.refused) + " refused below min_decryption_version (last " +
                FormatRfc3339(use.last_refused) + ")";
      }
      Appendf(o, "    v%-6lld %8llu decrypts, last seen %s%s", static_cast<long long>(v),
           static_cast<unsigned long long>(use.decrypts),
           use.decrypts ? FormatRfc3339(use.last_seen).c_str() : "never", extra.c_str());
    }
    const int64_t low = LowestDecrypted(versions);
    if (low > 0) {
      Appendf(o, "    lowest version still decrypted: v%lld (last seen %s): raising min_decryption_version "
           "above %lld would break these reads; rewrite that data first (docs/rotation.md)",
           static_cast<long long>(low), FormatRfc3339(versions.at(low).last_seen).c_str(),
           static_cast<long long>(low));
    }
  }
  if (!r.decrypt_versions.empty()) {
    o += "  note: kube-apiserver decrypts each DEK seed once per start, so a version missing here "
         "may still be needed unless the period covers kube-apiserver restarts (docs/audit.md)\n";
  }
  return NoControlBytes(std::move(o));
}

nlohmann::ordered_json RenderJson(const Review& r, const ReviewOptions& opts) {
  using oj = nlohmann::ordered_json;
  const ReadStats& in = r.input;
  oj j;
  j["schema"] = log::kAuditSchema;
  j["period"] = r.records ? oj{{"first", FormatRfc3339(r.first)}, {"last", FormatRfc3339(r.last)},
                               {"seconds", static_cast<double>(r.last - r.first) / 1e6}}
                          : oj(nullptr);
  j["input"] = {{"lines", in.lines},          {"records", r.records},
                {"other_lines", in.other_lines}, {"malformed", in.malformed},
                {"malformed_at", in.malformed_where}, {"newer_schema", in.newer_schema},
                {"outside_period", in.outside_period},
                {"dropped_audit_records_reported", in.dropped_reported}};
  oj ops = oj::object();
  for (const auto& [op, s] : r.by_op) {
    ops[op] = {{"calls", s.calls}, {"errors", s.errors},
               {"p50_us", s.p50_us}, {"p99_us", s.p99_us}, {"max_us", s.max_us}};
  }
  j["by_op"] = ops;
  j["by_code"] = r.by_code;
  j["by_key_id"] = r.by_key_id;
  j["by_vault"] = r.by_vault;
  j["with_vault_request_id"] = r.with_request_id;
  oj bursts = oj::array();
  for (const auto& b : r.bursts) {
    bursts.push_back({{"first", FormatRfc3339(b.first)}, {"last", FormatRfc3339(b.last)},
                      {"errors", b.errors}, {"codes", b.codes}});
  }
  j["error_bursts"] = {{"min_errors", opts.burst_min_errors},
                       {"max_gap_seconds", static_cast<double>(opts.burst_gap_us) / 1e6},
                       {"bursts", bursts}};
  j["longest_error_run"] = r.longest_error_run
                               ? oj{{"errors", r.longest_error_run},
                                    {"first", FormatRfc3339(r.run_first)},
                                    {"last", FormatRfc3339(r.run_last)}}
                               : oj{{"errors", 0}};
  oj keys = oj::object();
  for (const auto& [key, versions] : r.decrypt_versions) {
    oj vs = oj::object();
    for (const auto& [v, use] : versions) {
      oj e = {{"decrypts", use.decrypts},
              {"last_seen", use.decrypts ? oj(FormatRfc3339(use.last_seen)) : oj(nullptr)},
              {"refused_below_min_decryption_version", use.refused}};
      vs["v" + std::to_string(v)] = e;
    }
    const int64_t low = LowestDecrypted(versions);
    keys[key] = {{"versions", vs},
                 {"lowest_version_decrypted", low > 0 ? oj(low) : oj(nullptr)}};
  }
  j["decrypt_key_versions"] = keys;
  return j;
}

}  // namespace trousseau::cli::audit
