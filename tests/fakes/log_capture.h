// LogCapture: routes log lines to memory for the lifetime of the object (log::SetSink takes a
// plain function pointer, so the store is process-wide; use one LogCapture at a time).
#pragma once

#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "observability/log.h"

namespace trousseau::fakes {

class LogCapture {
 public:
  LogCapture() {
    std::lock_guard<std::mutex> g(Mu());
    Lines().clear();
    log::SetSink(&Capture);
  }
  ~LogCapture() {
    log::SetSink(nullptr);
    std::lock_guard<std::mutex> g(Mu());
    Lines().clear();
  }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  std::vector<std::string> lines() const {
    std::lock_guard<std::mutex> g(Mu());
    return Lines();
  }

  // Every line parsed as JSON (a line that does not parse becomes a discarded value).
  std::vector<nlohmann::json> json() const {
    std::vector<nlohmann::json> out;
    for (const auto& l : lines()) out.push_back(nlohmann::json::parse(l, nullptr, false));
    return out;
  }

  // Lines whose "event" equals `event`.
  std::vector<nlohmann::json> events(std::string_view event) const {
    std::vector<nlohmann::json> out;
    for (auto& j : json()) {
      if (j.is_object() && j.contains("event") && j["event"] == event) out.push_back(j);
    }
    return out;
  }

  // All captured text, for "never contains" checks.
  std::string all() const {
    std::string s;
    for (const auto& l : lines()) s += l;
    return s;
  }

  void clear() {
    std::lock_guard<std::mutex> g(Mu());
    Lines().clear();
  }

 private:
  static std::mutex& Mu() {
    static std::mutex mu;
    return mu;
  }
  static std::vector<std::string>& Lines() {
    static std::vector<std::string> lines;
    return lines;
  }
  static void Capture(std::string_view line) {
    std::lock_guard<std::mutex> g(Mu());
    Lines().emplace_back(line);
  }
};

}  // namespace trousseau::fakes
