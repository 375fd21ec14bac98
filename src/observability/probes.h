// What /livez and /readyz check. Kept apart from the HTTP listener so both can be tested alone.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "envelope/key_service.h"
#include "observability/http_server.h"

namespace grpc {
class Channel;
}

namespace trousseau::observability {

// The metadata key that marks our own probe's Status call (not counted in the KMS metrics).
inline constexpr const char* kProbeMetadataKey = "x-trousseau-probe";

// /livez: a real v2 Status round trip to our own gRPC server over its Unix socket. It proves the
// server accepts connections and its handlers run; it never touches Vault (Status reads cached
// state), so a Vault outage cannot get the pod killed. The answer is cached for `cache_for`, so
// scrapes and probes cannot turn into a load on the server.
class LivenessChecker {
 public:
  LivenessChecker(const std::string& socket_path, std::chrono::milliseconds timeout,
                  std::chrono::milliseconds cache_for);
  ~LivenessChecker();
  ProbeResult Check();

 private:
  ProbeResult CheckNow();
  std::shared_ptr<grpc::Channel> channel_;
  const std::chrono::milliseconds timeout_, cache_for_;
  std::mutex mu_;  // also serialises checks: concurrent probes share one round trip
  bool have_ = false;
  std::chrono::steady_clock::time_point at_{};
  ProbeResult last_;
};

// /readyz and /healthz: the KeyService's health ("ok": Vault reachable, token accepted, key
// known) and, when it says ok, the token source's own view (`token_problem` returns "" when
// fine, else a one-line reason).
ProbeResult Readiness(const envelope::KeyService& keys,
                      const std::function<std::string()>& token_problem);

}  // namespace trousseau::observability
