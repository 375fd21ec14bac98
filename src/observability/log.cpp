#include "observability/log.h"

#include <errno.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <deque>
#include <memory>
#include <mutex>
#include <string_view>
#include <thread>
#include <type_traits>
#include <vector>

namespace trousseau::log {
namespace {

using ojson = nlohmann::ordered_json;

std::atomic<int> g_level{static_cast<int>(Level::kInfo)};
std::atomic<Sink> g_sink{nullptr};
std::mutex g_write_mu;  // the synchronous paths: a test sink, or stderr before StartWriter()

const char* LevelName(Level l) {
  switch (l) {
    case Level::kDebug: return "debug";
    case Level::kInfo: return "info";
    case Level::kWarn: return "warn";
    case Level::kError: return "error";
  }
  return "info";
}

std::string Dump(const ojson& line) {
  // Invalid UTF-8 in a field (e.g. a caller's uid) is replaced, never a throw.
  std::string text = line.dump(-1, ' ', false, ojson::error_handler_t::replace);
  text.push_back('\n');
  return text;
}

// write(2) all of `text` to stderr. Gives up on a hard error (EPIPE, EBADF): logging must not
// take the process down. A non-blocking stderr is waited for with poll.
void WriteStderr(std::string_view text) {
  const char* p = text.data();
  size_t left = text.size();
  while (left > 0) {
    const ssize_t n = ::write(STDERR_FILENO, p, left);
    if (n > 0) {
      p += n;
      left -= static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      struct pollfd pfd = {STDERR_FILENO, POLLOUT, 0};
      (void)::poll(&pfd, 1, 1000);
      continue;
    }
    return;
  }
}

// ---- the process-wide writer ------------------------------------------------------------------

std::mutex g_writers_mu;
std::atomic<AsyncWriter*> g_writer{nullptr};
// Every writer StartWriter() made, kept for the process lifetime: a writer whose thread is stuck
// in write(2) cannot be freed, and the drop counters must survive a stop.
std::vector<AsyncWriter*>& AllWriters() {
  static auto* v = new std::vector<AsyncWriter*>();
  return *v;
}

void EmitText(std::string text, bool audit);

void Emit(const ojson& line, bool audit) { EmitText(Dump(line), audit); }

// Cuts `s` to at most `n` bytes without splitting a UTF-8 sequence.
std::string_view ClipUtf8(std::string_view s, size_t n) {
  if (s.size() <= n) return s;
  size_t cut = n;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  return s.substr(0, cut);
}

}  // namespace

std::string Timestamp() {
  const auto now = std::chrono::system_clock::now();
  auto secs = std::chrono::time_point_cast<std::chrono::seconds>(now);
  if (secs > now) secs -= std::chrono::seconds(1);  // before 1970: floor, not truncation
  const auto micros =
      std::chrono::duration_cast<std::chrono::microseconds>(now - secs).count();
  // The "YYYY-MM-DDTHH:MM:SS" part changes once a second: formatted (gmtime_r + snprintf, a
  // few µs) only then, per thread; the microseconds are written by hand.
  thread_local std::time_t cached_t = -1;
  thread_local char prefix[64] = {0};
  thread_local size_t prefix_len = 0;
  const std::time_t t = std::chrono::system_clock::to_time_t(secs);
  if (t != cached_t || prefix_len == 0) {
    std::tm tm{};
    gmtime_r(&t, &tm);
    const int n = std::snprintf(prefix, sizeof(prefix), "%04d-%02d-%02dT%02d:%02d:%02d",
                                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                                tm.tm_min, tm.tm_sec);
    prefix_len = n > 0 ? std::min(static_cast<size_t>(n), sizeof(prefix) - 1) : 0;
    cached_t = t;
  }
  std::string out;
  out.reserve(prefix_len + 9);
  out.append(prefix, prefix_len);
  char frac[9] = {'.', '0', '0', '0', '0', '0', '0', 'Z', '\0'};
  long us = static_cast<long>(micros);
  for (int i = 6; i >= 1; --i) {
    frac[i] = static_cast<char>('0' + us % 10);
    us /= 10;
  }
  out.append(frac, 8);
  return out;
}

void SetLevel(Level level) { g_level = static_cast<int>(level); }
Level GetLevel() { return static_cast<Level>(g_level.load()); }
bool Enabled(Level level) { return static_cast<int>(level) >= g_level.load(); }
void SetSink(Sink sink) { g_sink = sink; }

void Write(Level level, std::string_view event, std::string_view message, Fields fields) {
  if (!Enabled(level)) return;
  ojson line = {
      {"time", Timestamp()}, {"level", LevelName(level)}, {"event", event}, {"msg", message}};
  for (const auto& [k, v] : fields) line[k] = v;
  Emit(line, false);
}

namespace {
// Bytes a JSON string holds as they are: printable ASCII except the quote and the backslash.
bool PlainAscii(std::string_view v) {
  for (const char ch : v) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c > 0x7E || c == '"' || c == '\\') return false;
  }
  return true;
}

// One audit line written field by field, in order, with no JSON tree: the tree (an ordered_map
// of 14 nodes, each a separate allocation freed through wipe-on-free) and its dump were ~8 % of
// the plugin's CPU per KMS call (docs/performance.md, change 9). A string value of plain ASCII
// is copied as it is (change 17); every other value goes through nlohmann's serializer, so
// escaping and the replacement of invalid UTF-8 are Dump()'s. The keys are our own literals.
class FlatLine {
 public:
  FlatLine()
      : ser_(nlohmann::detail::output_adapter<char>(text_), ' ', ojson::error_handler_t::replace) {
    text_.reserve(384);
    text_.push_back('{');
  }
  template <typename T>
  void Field(std::string_view key, const T& value) {
    if (text_.size() > 1) text_.push_back(',');
    text_.push_back('"');
    text_.append(key);
    text_.append("\":");
    if constexpr (std::is_convertible_v<const T&, std::string_view>) {
      // Most values (uids, key ids, codes, nodes, request ids) are printable ASCII with no quote
      // or backslash: the serializer would copy them unchanged, after a UTF-8 decode of every
      // byte and a string copy into a JSON value (~half the audit line's cost, docs/
      // performance.md change 17). Anything else goes through it, escaped and made valid.
      const std::string_view v(value);
      if (PlainAscii(v)) {
        text_.push_back('"');
        text_.append(v);
        text_.push_back('"');
        return;
      }
    }
    ser_.dump(ojson(value), false, false, 0);
  }
  std::string Finish() {
    text_.append("}\n");
    return std::move(text_);
  }

 private:
  std::string text_;  // before ser_, which appends to it
  nlohmann::detail::serializer<ojson> ser_;
};

void EmitText(std::string text, bool audit) {
  if (Sink sink = g_sink.load(); sink != nullptr) {
    std::lock_guard<std::mutex> lock(g_write_mu);
    sink(text);
    return;
  }
  if (AsyncWriter* w = g_writer.load(std::memory_order_acquire); w != nullptr) {
    w->Push(std::move(text), audit);  // never blocks on stderr; a full queue drops and counts
    return;
  }
  std::lock_guard<std::mutex> lock(g_write_mu);
  WriteStderr(text);
}
}  // namespace

void Audit(const AuditRecord& r) {
  // A fixed, readable order: time, level, type, schema, event, then the call.
  const std::string_view uid = ClipUtf8(r.uid, kMaxAuditUidBytes);
  FlatLine line;
  line.Field("time", Timestamp());
  line.Field("level", "info");
  line.Field("type", "audit");
  line.Field("schema", kAuditSchema);
  line.Field("event", "kms.call");
  line.Field("api", r.api);
  line.Field("op", r.operation);
  line.Field("uid", uid);
  if (uid.size() != r.uid.size()) {
    line.Field("uid_clipped", true);
    line.Field("uid_bytes", r.uid.size());
  }
  line.Field("key_id", r.key_id);
  if (r.key_version > 0) line.Field("key_version", r.key_version);
  line.Field("code", r.code);
  if (!r.detail.empty()) line.Field("detail", r.detail);
  if (!r.vault_node.empty()) line.Field("vault", r.vault_node);
  if (!r.vault_request_id.empty()) line.Field("vault_request_id", r.vault_request_id);
  line.Field("in_bytes", r.input_bytes);
  line.Field("out_bytes", r.output_bytes);
  line.Field("duration_us", r.duration.count());
  EmitText(line.Finish(), true);
}

// ---- AsyncWriter ------------------------------------------------------------------------------

struct AsyncWriter::State {
  WriterOptions opts;
  std::mutex mu;
  std::condition_variable work;  // the thread waits for lines or stop
  std::condition_variable idle;  // Flush/Stop wait for progress
  std::deque<std::string> queue;
  size_t queued_bytes = 0;
  uint64_t pushed = 0;   // lines accepted so far
  uint64_t written = 0;  // lines handed to the output so far
  bool stop = false;
  bool done = false;     // the thread has returned
  bool idle_wait = false;  // the thread waits for a first line: a Push must wake it
  bool hurry = false;      // Flush wants the lines now: end the linger
  std::atomic<uint64_t> dropped_audit{0};
  std::atomic<uint64_t> dropped_other{0};
  uint64_t reported_audit = 0, reported_other = 0;
  std::chrono::steady_clock::time_point last_report{};
  std::thread thread;

  void Run();
  std::string DropReport(uint64_t audit, uint64_t other) const;
  // Half the bound: write now rather than risk dropping lines while lingering.
  bool Urgent() const {
    return queue.size() >= opts.max_lines / 2 || queued_bytes >= opts.max_bytes / 2;
  }
};

std::string AsyncWriter::State::DropReport(uint64_t audit, uint64_t other) const {
  ojson line = {{"time", Timestamp()},
                {"level", "warn"},
                {"event", "log.dropped"},
                {"msg", "log lines dropped: stderr was not read fast enough (the log queue was "
                        "full); KMS calls were not delayed"},
                {"dropped_audit_records", audit},
                {"dropped_other_lines", other},
                {"dropped_audit_records_total", dropped_audit.load()},
                {"dropped_lines_total", dropped_audit.load() + dropped_other.load()}};
  return Dump(line);
}

void AsyncWriter::State::Run() {
  std::unique_lock<std::mutex> lock(mu);
  for (;;) {
    idle_wait = true;
    work.wait_for(lock, opts.report_period, [this] { return stop || !queue.empty(); });
    idle_wait = false;
    if (!queue.empty() && !stop && !hurry && opts.linger.count() > 0) {
      // Let more lines gather; Push does not signal during this wait unless Urgent().
      work.wait_for(lock, opts.linger, [this] { return stop || hurry || Urgent(); });
    }
    hurry = false;
    if (!queue.empty()) {
      std::deque<std::string> batch;
      batch.swap(queue);
      queued_bytes = 0;
      lock.unlock();
      // Several lines per write(2), up to 64 KiB, each write holding whole lines.
      std::string chunk;
      uint64_t n = 0;
      for (auto& line : batch) {
        if (!chunk.empty() && chunk.size() + line.size() > 64 * 1024) {
          opts.output(chunk);
          chunk.clear();
        }
        chunk += line;
        ++n;
      }
      if (!chunk.empty()) opts.output(chunk);
      lock.lock();
      written += n;
      idle.notify_all();
    }
    const uint64_t da = dropped_audit.load(), dother = dropped_other.load();
    const auto now = std::chrono::steady_clock::now();
    if ((da != reported_audit || dother != reported_other) &&
        (stop || last_report == std::chrono::steady_clock::time_point{} ||
         now - last_report >= opts.report_period)) {
      const std::string report = DropReport(da - reported_audit, dother - reported_other);
      reported_audit = da;
      reported_other = dother;
      last_report = now;
      lock.unlock();
      opts.output(report);
      lock.lock();
    }
    if (stop && queue.empty()) break;
  }
  done = true;
  idle.notify_all();
}

AsyncWriter::AsyncWriter(WriterOptions options) : state_(std::make_shared<State>()) {
  state_->opts = std::move(options);
  if (!state_->opts.output) state_->opts.output = WriteStderr;
  if (state_->opts.max_lines == 0) state_->opts.max_lines = 1;
  if (state_->opts.report_period <= std::chrono::milliseconds(0)) {
    state_->opts.report_period = std::chrono::milliseconds(1000);
  }
  state_->thread = std::thread([s = state_] { s->Run(); });
}

// A thread still blocked in the output after the bounded wait is detached; it holds its own
// reference to the state, which goes when the output returns (or with the process).
AsyncWriter::~AsyncWriter() { Stop(std::chrono::milliseconds(1000)); }

bool AsyncWriter::Push(std::string line, bool audit) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    const bool full = state_->queue.size() >= state_->opts.max_lines ||
                      state_->queued_bytes + line.size() > state_->opts.max_bytes;
    if (full || state_->stop) {
      (audit ? state_->dropped_audit : state_->dropped_other).fetch_add(1);
      return false;
    }
    state_->queued_bytes += line.size();
    state_->queue.push_back(std::move(line));
    ++state_->pushed;
    // Only an idle thread needs a wake-up; a lingering one writes this line with its batch.
    wake = state_->idle_wait || state_->Urgent();
  }
  // Signalled after the unlock: woken under the lock, the writer ran straight into the mutex
  // still held here and blocked on it again (two more futex calls and a context switch per
  // wake-up, seen with strace at c=1). The state outlives this call (state_ is shared).
  if (wake) state_->work.notify_one();
  return true;
}

bool AsyncWriter::Flush(std::chrono::milliseconds max_wait) {
  std::unique_lock<std::mutex> lock(state_->mu);
  const uint64_t target = state_->pushed;
  if (state_->written < target) {
    state_->hurry = true;  // end a linger now
    state_->work.notify_one();
  }
  return state_->idle.wait_for(lock, max_wait,
                               [&] { return state_->written >= target || state_->done; }) &&
         state_->written >= target;
}

bool AsyncWriter::Stop(std::chrono::milliseconds max_wait) {
  std::unique_lock<std::mutex> lock(state_->mu);
  if (!state_->thread.joinable()) return state_->done;
  state_->stop = true;
  state_->work.notify_all();
  const bool finished = state_->idle.wait_for(lock, max_wait, [&] { return state_->done; });
  lock.unlock();
  if (finished) {
    state_->thread.join();
    return true;
  }
  state_->thread.detach();  // blocked in the output; the process exits without it
  return false;
}

uint64_t AsyncWriter::dropped_lines() const {
  return state_->dropped_audit.load() + state_->dropped_other.load();
}
uint64_t AsyncWriter::dropped_audit_records() const { return state_->dropped_audit.load(); }
uint64_t AsyncWriter::written_lines() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->written;
}

// ---- process-wide writer ----------------------------------------------------------------------

void StartWriter(WriterOptions options) {
  std::lock_guard<std::mutex> lock(g_writers_mu);
  if (g_writer.load() != nullptr) return;
  auto* w = new AsyncWriter(std::move(options));
  AllWriters().push_back(w);
  g_writer.store(w, std::memory_order_release);
}

bool StopWriter(std::chrono::milliseconds max_wait) {
  std::lock_guard<std::mutex> lock(g_writers_mu);
  AsyncWriter* w = g_writer.load();
  if (w == nullptr) return true;
  if (!w->Stop(max_wait)) {
    // stderr is stuck: writing synchronously now would block the exit forever. The stopped
    // writer stays installed, so later lines are dropped and counted instead.
    return false;
  }
  g_writer.store(nullptr, std::memory_order_release);  // later lines: synchronous again
  return true;
}

bool FlushWriter(std::chrono::milliseconds max_wait) {
  std::lock_guard<std::mutex> lock(g_writers_mu);
  AsyncWriter* w = g_writer.load();
  return w == nullptr || w->Flush(max_wait);
}

uint64_t DroppedLines() {
  std::lock_guard<std::mutex> lock(g_writers_mu);
  uint64_t n = 0;
  for (auto* w : AllWriters()) n += w->dropped_lines();
  return n;
}

uint64_t DroppedAuditRecords() {
  std::lock_guard<std::mutex> lock(g_writers_mu);
  uint64_t n = 0;
  for (auto* w : AllWriters()) n += w->dropped_audit_records();
  return n;
}

}  // namespace trousseau::log
