// Structured logs: one JSON object per line on stderr, so a log pipeline or `jq` can review them.
// Audit records (one per KMS call) carry "type":"audit" and a schema version, and are written at
// every log level. docs/audit.md is the record's schema; keep the two in step.
//
// Writing never blocks a KMS call: once StartWriter() ran, Write()/Audit() only format the line
// and append it to a bounded in-memory queue; one writer thread drains it to stderr. When the
// queue is full (stderr is a pipe nobody reads), the line is dropped and counted, and the writer
// reports the drops in a "log.dropped" warn line once it can write again. Before StartWriter()
// (and in the CLI commands and unit tests) lines are written synchronously.
//
// Nothing secret is ever passed here: callers log identifiers (uid, key_id, vault address),
// sizes, durations and status messages, which by construction never contain secrets.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
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

// Where lines go; tests capture them. Default: stderr. A sink set here receives every line
// synchronously (it bypasses the writer queue), so tests see a line as soon as it was logged.
using Sink = void (*)(std::string_view line);
void SetSink(Sink sink);

using Fields = std::initializer_list<std::pair<const char*, nlohmann::json>>;

void Write(Level level, std::string_view event, std::string_view message, Fields fields = {});

inline void Debug(std::string_view ev, std::string_view msg, Fields f = {}) { Write(Level::kDebug, ev, msg, f); }
inline void Info(std::string_view ev, std::string_view msg, Fields f = {}) { Write(Level::kInfo, ev, msg, f); }
inline void Warn(std::string_view ev, std::string_view msg, Fields f = {}) { Write(Level::kWarn, ev, msg, f); }
inline void Error(std::string_view ev, std::string_view msg, Fields f = {}) { Write(Level::kError, ev, msg, f); }

// ---- audit records ---------------------------------------------------------------------------

// The schema of the audit record (docs/audit.md). Bump the version on any change a reader of
// the records must know about (a field removed, renamed or changing meaning); adding a field is
// compatible and keeps the version.
inline constexpr const char* kAuditSchema = "trousseau.audit/v1";
// A caller's uid longer than this is clipped (and marked "uid_clipped":true with "uid_bytes").
inline constexpr size_t kMaxAuditUidBytes = 256;

// One audit record per KMS operation.
struct AuditRecord {
  std::string_view api;        // "v2" or "v1beta1"
  std::string_view operation;  // "encrypt", "decrypt"
  std::string_view uid;        // caller's correlation id (may be empty; clipped when written)
  std::string_view key_id;     // key that wrapped / was asked to unwrap
  int64_t key_version = 0;     // transit key version of the ciphertext (0: unknown)
  std::string_view code;       // gRPC code name, "OK" on success
  std::string_view detail;     // error message (never secret) or empty
  std::string_view vault_node; // address that served the call, if any
  std::string_view vault_request_id;  // Vault's request_id of the Transit call, if any
  size_t input_bytes = 0;
  size_t output_bytes = 0;
  std::chrono::microseconds duration{0};
};
void Audit(const AuditRecord& record);

// ---- the non-blocking writer -----------------------------------------------------------------

// Where the writer thread puts lines. It may block (stderr is a pipe); only the writer thread
// calls it.
using Output = std::function<void(std::string_view text)>;

struct WriterOptions {
  size_t max_lines = 4096;                 // queued lines before new ones are dropped
  size_t max_bytes = 8u << 20;             // queued bytes before new lines are dropped
  std::chrono::milliseconds report_period{10000};  // at most one "log.dropped" line per period
  // How long the thread waits, after the first line of a batch, for more lines before writing.
  // During that wait a Push makes no wake-up (no futex call, no context switch): at one KMS call
  // a millisecond, the thread wakes once per ~5 lines instead of once per line. Flush, Stop and a
  // queue half full end the wait at once. 0: write as soon as a line arrives.
  std::chrono::microseconds linger{5000};
  Output output;                           // default: write(2) to stderr
};

// A bounded queue drained by one thread. Push never blocks on the output; it returns false (and
// counts the line) when the queue is full. Used once per process by StartWriter(); tests build
// their own with a blocking output.
class AsyncWriter {
 public:
  explicit AsyncWriter(WriterOptions options);
  ~AsyncWriter();  // Stop(1s); detaches the thread if the output is still blocked
  AsyncWriter(const AsyncWriter&) = delete;
  AsyncWriter& operator=(const AsyncWriter&) = delete;

  bool Push(std::string line, bool audit);
  // Waits (bounded) until every line pushed so far was handed to the output. True if it was.
  bool Flush(std::chrono::milliseconds max_wait);
  // Flushes (bounded), reports pending drops, stops the thread. True if everything was written.
  bool Stop(std::chrono::milliseconds max_wait);

  uint64_t dropped_lines() const;          // all lines, audit records included
  uint64_t dropped_audit_records() const;
  uint64_t written_lines() const;

 private:
  struct State;
  std::shared_ptr<State> state_;  // shared with the thread, which may outlive us if detached
};

// Starts the process-wide writer thread. Call once, early in `serve`, after the signal mask and
// the capability bounding set are set (the thread inherits both) and before the seccomp filter
// (the thread only needs futex, write and clock_gettime afterwards).
void StartWriter(WriterOptions options = {});
// Flushes the queue with a bounded wait and stops the writer. True if every queued line was
// written; later lines are then written synchronously again. False if stderr stayed stuck:
// later lines are dropped and counted (a synchronous write would block the exit). No-op (true)
// if not started.
bool StopWriter(std::chrono::milliseconds max_wait);
// Waits (bounded) for the queue to drain without stopping the writer.
bool FlushWriter(std::chrono::milliseconds max_wait);

// Lines dropped because the queue was full, since the process started (for metrics:
// trousseau_audit_records_dropped_total). DroppedLines() includes the audit records.
uint64_t DroppedLines();
uint64_t DroppedAuditRecords();

// "2026-12-01T20:57:39.123456Z": RFC 3339, UTC, microseconds.
std::string Timestamp();

}  // namespace trousseau::log
