#include "observability/probes.h"

#include <grpcpp/grpcpp.h>

#include "kms_v2.grpc.pb.h"

namespace trousseau::observability {

LivenessChecker::LivenessChecker(const std::string& socket_path,
                                 std::chrono::milliseconds timeout,
                                 std::chrono::milliseconds cache_for)
    : timeout_(timeout), cache_for_(cache_for) {
  grpc::ChannelArguments args;
  // Reconnect fast after a failed probe: the next probe should see a recovered server.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  channel_ = grpc::CreateCustomChannel("unix:" + socket_path, grpc::InsecureChannelCredentials(),
                                       args);
}

LivenessChecker::~LivenessChecker() = default;

ProbeResult LivenessChecker::Check() {
  std::lock_guard<std::mutex> lock(mu_);
  const auto now = std::chrono::steady_clock::now();
  if (have_ && now - at_ < cache_for_) return last_;
  last_ = CheckNow();
  at_ = std::chrono::steady_clock::now();
  have_ = true;
  return last_;
}

ProbeResult LivenessChecker::CheckNow() {
  auto stub = ::v2::KeyManagementService::NewStub(channel_);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout_);
  ctx.AddMetadata(kProbeMetadataKey, "livez");
  ::v2::StatusRequest req;
  ::v2::StatusResponse resp;
  const grpc::Status st = stub->Status(&ctx, req, &resp);
  if (!st.ok()) {
    return {false, "gRPC Status over the KMS socket failed: " +
                       std::to_string(static_cast<int>(st.error_code())) + " " +
                       st.error_message().substr(0, 200)};
  }
  if (resp.version() != "v2") return {false, "gRPC Status answered an unexpected version"};
  return {true, "ok"};
}

ProbeResult Readiness(const envelope::KeyService& keys,
                      const std::function<std::string()>& token_problem) {
  const envelope::HealthSnapshot h = keys.Health();
  if (h.healthz != "ok") return {false, h.healthz};
  if (h.key_id.empty()) return {false, "transit key not known yet"};
  if (token_problem) {
    std::string t = token_problem();
    if (!t.empty()) return {false, t};
  }
  return {true, h.detail.empty() ? "ok" : "ok; " + h.detail};
}

}  // namespace trousseau::observability
