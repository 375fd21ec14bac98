// The non-blocking log writer: with its output blocked (stderr a pipe nobody reads), pushing
// never waits; lines beyond the bound are dropped and counted (audit records separately); the
// drops are reported in one "log.dropped" warn line once the output moves again; Stop is bounded.
#include <catch2/catch.hpp>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "observability/log.h"

namespace trousseau::log {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

// An output that blocks while `blocked` is set, and records what it was given.
struct Gate {
  std::mutex mu;
  std::condition_variable cv;
  bool blocked = true;
  int entered = 0;
  std::vector<std::string> lines;

  Output MakeOutput(std::shared_ptr<Gate> self) {
    return [self](std::string_view text) {
      std::unique_lock<std::mutex> lock(self->mu);
      ++self->entered;
      self->cv.notify_all();
      self->cv.wait(lock, [&] { return !self->blocked; });
      size_t start = 0;
      while (start < text.size()) {
        const size_t nl = text.find('\n', start);
        self->lines.emplace_back(text.substr(start, nl - start));
        start = nl + 1;
      }
    };
  }
  bool WaitEntered(int n) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, 10s, [&] { return entered >= n; });
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu);
    blocked = false;
    cv.notify_all();
  }
  std::vector<std::string> Lines() {
    std::lock_guard<std::mutex> lock(mu);
    return lines;
  }
};

TEST_CASE("a blocked output costs lines, counted, never a blocked caller", "[log][writer]") {
  auto gate = std::make_shared<Gate>();
  WriterOptions o;
  o.max_lines = 10;
  o.report_period = 50ms;
  o.output = gate->MakeOutput(gate);
  AsyncWriter w(o);
  REQUIRE(w.Push("{\"n\":0}\n", false));
  REQUIRE(gate->WaitEntered(1));  // the thread holds line 0 and is stuck in the output

  // Pushing runs on another thread with a bounded wait: if Push blocked, this would time out.
  auto pushed = std::async(std::launch::async, [&] {
    int accepted = 0;
    for (int i = 1; i <= 10; ++i) accepted += w.Push("{\"n\":" + std::to_string(i) + "}\n", i % 2 == 0);
    for (int i = 0; i < 5; ++i) accepted += w.Push("{\"audit\":" + std::to_string(i) + "}\n", true);
    for (int i = 0; i < 3; ++i) accepted += w.Push("{\"other\":" + std::to_string(i) + "}\n", false);
    return accepted;
  });
  REQUIRE(pushed.wait_for(10s) == std::future_status::ready);
  CHECK(pushed.get() == 10);
  CHECK(w.dropped_audit_records() == 5);
  CHECK(w.dropped_lines() == 8);
  CHECK_FALSE(w.Flush(50ms));  // still blocked: a bounded wait that reports it

  gate->Release();
  REQUIRE(w.Flush(10s));
  CHECK(w.written_lines() == 11);
  REQUIRE(w.Stop(10s));
  std::vector<json> data, reports;
  for (const auto& l : gate->Lines()) {
    json j = json::parse(l);
    (j.contains("event") && j["event"] == "log.dropped" ? reports : data).push_back(j);
  }
  REQUIRE(data.size() == 11);  // every accepted line, in order
  for (int i = 0; i <= 10; ++i) CHECK(data[static_cast<size_t>(i)]["n"] == i);
  REQUIRE(reports.size() == 1);  // one report for the whole stall
  const json& report = reports[0];
  CHECK(report["event"] == "log.dropped");
  CHECK(report["level"] == "warn");
  CHECK(report["dropped_audit_records"] == 5);
  CHECK(report["dropped_other_lines"] == 3);
  CHECK(report["dropped_lines_total"] == 8);
}

TEST_CASE("the byte bound drops a line that would overflow it", "[log][writer]") {
  auto gate = std::make_shared<Gate>();
  WriterOptions o;
  o.max_lines = 1000;
  o.max_bytes = 100;
  o.output = gate->MakeOutput(gate);
  AsyncWriter w(o);
  REQUIRE(w.Push("x\n", false));
  REQUIRE(gate->WaitEntered(1));
  CHECK(w.Push(std::string(60, 'a') + "\n", true));
  CHECK_FALSE(w.Push(std::string(60, 'b') + "\n", true));  // 61 + 61 > 100
  CHECK(w.Push(std::string(30, 'c') + "\n", false));
  CHECK(w.dropped_audit_records() == 1);
  gate->Release();
  CHECK(w.Stop(10s));
}

TEST_CASE("Stop is bounded when the output never returns", "[log][writer][negative]") {
  auto gate = std::make_shared<Gate>();
  WriterOptions o;
  o.output = gate->MakeOutput(gate);
  auto w = std::make_unique<AsyncWriter>(o);
  REQUIRE(w->Push("stuck\n", false));
  REQUIRE(gate->WaitEntered(1));
  const auto t0 = std::chrono::steady_clock::now();
  CHECK_FALSE(w->Stop(100ms));
  w.reset();  // the destructor must not wait on the stuck thread either
  CHECK(std::chrono::steady_clock::now() - t0 < 5s);
  CHECK_FALSE(w);
  gate->Release();  // lets the detached thread finish
}

// The linger: lines pushed while the thread waits for company go out in one write, and neither
// Flush nor Stop waits for the linger to run out (an hour here: either would time out).
TEST_CASE("lines gathered during the linger go out in one write; Flush and Stop end it",
          "[log][writer]") {
  auto gate = std::make_shared<Gate>();
  gate->Release();  // an output that never blocks
  auto calls = std::make_shared<std::atomic<int>>(0);
  WriterOptions o;
  o.linger = std::chrono::hours(1);
  o.output = [gate, calls, inner = gate->MakeOutput(gate)](std::string_view text) {
    calls->fetch_add(1);
    inner(text);
  };
  AsyncWriter w(o);
  for (int i = 0; i < 3; ++i) REQUIRE(w.Push("line " + std::to_string(i) + "\n", false));
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE(w.Flush(10s));
  CHECK(std::chrono::steady_clock::now() - t0 < 9s);
  CHECK(w.written_lines() == 3);
  CHECK(calls->load() == 1);
  CHECK(gate->Lines() == std::vector<std::string>{"line 0", "line 1", "line 2"});
  REQUIRE(w.Push("last\n", true));
  REQUIRE(w.Stop(10s));  // the lingering line is written, not lost
  CHECK(w.written_lines() == 4);
  CHECK(gate->Lines().back() == "last");
}

TEST_CASE("a queue half full ends the linger without a Flush", "[log][writer]") {
  auto gate = std::make_shared<Gate>();
  gate->Release();
  WriterOptions o;
  o.linger = std::chrono::hours(1);
  o.max_lines = 8;
  o.output = gate->MakeOutput(gate);
  AsyncWriter w(o);
  for (int i = 0; i < 4; ++i) REQUIRE(w.Push("x\n", false));
  // No Flush: the thread must write on its own once 4 of 8 lines wait.
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (w.written_lines() < 4 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(1ms);
  }
  CHECK(w.written_lines() == 4);
}

TEST_CASE("the process-wide writer queues log lines and audit records", "[log][writer]") {
  SetSink(nullptr);
  SetLevel(Level::kInfo);
  auto gate = std::make_shared<Gate>();
  WriterOptions o;
  o.max_lines = 4;
  o.report_period = 10ms;
  o.output = gate->MakeOutput(gate);
  const uint64_t lines_before = DroppedLines();
  const uint64_t audit_before = DroppedAuditRecords();
  StartWriter(o);
  Info("t.first", "first");
  REQUIRE(gate->WaitEntered(1));
  AuditRecord a;
  a.api = "v2";
  a.operation = "encrypt";
  a.code = "OK";
  for (int i = 0; i < 6; ++i) Audit(a);  // 4 queued, 2 dropped
  Warn("t.more", "dropped too");          // queue full: dropped
  CHECK(DroppedAuditRecords() - audit_before == 2);
  CHECK(DroppedLines() - lines_before == 3);
  gate->Release();
  REQUIRE(StopWriter(10s));
  std::vector<json> data, reports;
  for (const auto& l : gate->Lines()) {
    json j = json::parse(l);
    (j["event"] == "log.dropped" ? reports : data).push_back(j);
  }
  REQUIRE(data.size() == 5);
  CHECK(data[0]["event"] == "t.first");
  for (size_t i = 1; i <= 4; ++i) CHECK(data[i]["type"] == "audit");
  REQUIRE(reports.size() == 1);
  const json& report = reports[0];
  CHECK(report["event"] == "log.dropped");
  CHECK(report["dropped_audit_records"] == 2);
  CHECK(report["dropped_other_lines"] == 1);
  // Counters survive the stop (metrics read them for the process lifetime).
  CHECK(DroppedAuditRecords() - audit_before == 2);
}

}  // namespace
}  // namespace trousseau::log

namespace trousseau::log {
namespace {

// Keep this the last test of the executable: it leaves the stuck writer installed (stopped), as
// a process about to exit would.
TEST_CASE("a stuck stderr at shutdown: StopWriter is bounded and later lines never block",
          "[log][writer][negative]") {
  SetSink(nullptr);
  SetLevel(Level::kInfo);
  auto gate = std::make_shared<Gate>();
  WriterOptions o;
  o.output = gate->MakeOutput(gate);
  StartWriter(o);
  Info("t.stuck", "first");
  REQUIRE(gate->WaitEntered(1));
  const auto t0 = std::chrono::steady_clock::now();
  CHECK_FALSE(StopWriter(100ms));
  CHECK(std::chrono::steady_clock::now() - t0 < 5s);
  const uint64_t before = DroppedLines();
  auto later = std::async(std::launch::async, [] { Error("t.after", "after the stop"); });
  REQUIRE(later.wait_for(10s) == std::future_status::ready);  // did not block on stderr
  CHECK(DroppedLines() - before == 1);
  gate->Release();
}

}  // namespace
}  // namespace trousseau::log
