// Structured logs: one JSON object per line on stderr, so a log pipeline or `jq` can review them.
// Audit records (one per KMS call) carry "type":"audit" and are written at every log level.
//
// Nothing secret is ever passed here: callers log identifiers (uid, key_id, vault address),
// sizes, durations and status messages, which by construction never contain secrets.
#pragma once

#include <chrono>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

namespace trousseau::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

void SetLevel(Level level);
Level GetLevel();
bool Enabled(Level level);

// Where lines go; tests capture them. Default: stderr.
using Sink = void (*)(std::string_view line);
void SetSink(Sink sink);

using Fields = std::initializer_list<std::pair<const char*, nlohmann::json>>;

void Write(Level level, std::string_view event, std::string_view message, Fields fields = {});

inline void Debug(std::string_view ev, std::string_view msg, Fields f = {}) { Write(Level::kDebug, ev, msg, f); }
inline void Info(std::string_view ev, std::string_view msg, Fields f = {}) { Write(Level::kInfo, ev, msg, f); }
inline void Warn(std::string_view ev, std::string_view msg, Fields f = {}) { Write(Level::kWarn, ev, msg, f); }
inline void Error(std::string_view ev, std::string_view msg, Fields f = {}) { Write(Level::kError, ev, msg, f); }

// One audit record per KMS operation.
struct AuditRecord {
  std::string_view api;        // "v2" or "v1beta1"
  std::string_view operation;  // "encrypt", "decrypt", "status", "version"
  std::string_view uid;        // caller's correlation id (may be empty)
  std::string_view key_id;     // key that wrapped / was asked to unwrap
  std::string_view code;       // gRPC code name, "OK" on success
  std::string_view detail;     // error message (never secret) or empty
  std::string_view vault_node; // address that served the call, if any
  size_t input_bytes = 0;
  size_t output_bytes = 0;
  std::chrono::microseconds duration{0};
};
void Audit(const AuditRecord& record);

}  // namespace trousseau::log
