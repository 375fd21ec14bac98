#include "observability/log.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace trousseau::log {
namespace {

std::atomic<int> g_level{static_cast<int>(Level::kInfo)};
std::atomic<Sink> g_sink{nullptr};
std::mutex g_write_mu;

const char* LevelName(Level l) {
  switch (l) {
    case Level::kDebug: return "debug";
    case Level::kInfo: return "info";
    case Level::kWarn: return "warn";
    case Level::kError: return "error";
  }
  return "info";
}

std::string Timestamp() {
  const auto now = std::chrono::system_clock::now();
  const auto secs = std::chrono::time_point_cast<std::chrono::seconds>(now);
  const auto micros =
      std::chrono::duration_cast<std::chrono::microseconds>(now - secs).count();
  const std::time_t t = std::chrono::system_clock::to_time_t(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[80];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<long>(micros));
  return buf;
}

void Emit(const nlohmann::json& line) {
  // Invalid UTF-8 in a field (e.g. a caller's uid) is replaced, never a throw.
  std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  text.push_back('\n');
  Sink sink = g_sink.load();
  std::lock_guard<std::mutex> lock(g_write_mu);
  if (sink != nullptr) {
    sink(text);
    return;
  }
  const char* p = text.data();
  size_t left = text.size();
  while (left > 0) {
    ssize_t n = ::write(STDERR_FILENO, p, left);
    if (n <= 0) break;
    p += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace

void SetLevel(Level level) { g_level = static_cast<int>(level); }
Level GetLevel() { return static_cast<Level>(g_level.load()); }
bool Enabled(Level level) { return static_cast<int>(level) >= g_level.load(); }
void SetSink(Sink sink) { g_sink = sink; }

void Write(Level level, std::string_view event, std::string_view message, Fields fields) {
  if (!Enabled(level)) return;
  nlohmann::json line = {
      {"time", Timestamp()}, {"level", LevelName(level)}, {"event", event}, {"msg", message}};
  for (const auto& [k, v] : fields) line[k] = v;
  Emit(line);
}

void Audit(const AuditRecord& r) {
  nlohmann::json line = {{"time", Timestamp()},
                         {"level", "info"},
                         {"type", "audit"},
                         {"event", "kms.call"},
                         {"api", r.api},
                         {"op", r.operation},
                         {"uid", r.uid},
                         {"key_id", r.key_id},
                         {"code", r.code},
                         {"in_bytes", r.input_bytes},
                         {"out_bytes", r.output_bytes},
                         {"duration_us", r.duration.count()}};
  if (!r.detail.empty()) line["detail"] = r.detail;
  if (!r.vault_node.empty()) line["vault"] = r.vault_node;
  Emit(line);
}

}  // namespace trousseau::log
