// trousseau status --socket PATH: the two calls kube-apiserver makes to judge a KMS plugin (v2
// Status, v1beta1 Version), with their answers and latency. Exit 0 healthy, 1 not, 2 usage.
#include <chrono>
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "cli/flags.h"
#include "cli/kms_client.h"
#include "kms_v1beta1.grpc.pb.h"
#include "kms_v2.grpc.pb.h"

namespace trousseau::cli {
namespace {

constexpr const char* kHelp =
    "Usage: trousseau status --socket PATH [--timeout 3s] [--output text|json]\n"
    "\n"
    "Calls the plugin on its Unix socket as kube-apiserver does (authority \"localhost\"):\n"
    "KMS v2 Status and KMS v1beta1 Version, each with --timeout, and prints the version,\n"
    "healthz, key_id and latency of each.\n"
    "\n"
    "Healthy means: both calls answer, Status says version \"v2\", healthz \"ok\" and a\n"
    "non-empty key_id (what kube-apiserver requires).\n"
    "\n"
    "Flags:\n"
    "  --socket PATH     the plugin's socket.path (required)\n"
    "  --timeout D       deadline of each call, e.g. 3s or 500ms (default 3s)\n"
    "  --output FORMAT   text (default) or json\n"
    "\n"
    "Exit codes: 0 healthy, 1 unhealthy or unreachable, 2 usage error.\n";

// One unary call with the deadline, timed; records code, latency and (on failure) the error.
template <typename Call>
grpc::Status TimedCall(std::chrono::milliseconds timeout, nlohmann::ordered_json& record,
                       Call&& call) {
  grpc::ClientContext ctx;
  SetTimeout(ctx, timeout);
  const auto t0 = std::chrono::steady_clock::now();
  grpc::Status st = call(ctx);
  const auto elapsed = std::chrono::steady_clock::now() - t0;
  record["code"] = CodeName(st.error_code());
  record["latency_ms"] = std::chrono::duration<double, std::milli>(elapsed).count();
  if (!st.ok()) record["error"] = st.error_message();
  return st;
}

}  // namespace

int StatusCommand(const std::vector<std::string>& args) {
  const std::string cmd = "status";
  auto flags = Flags::Parse(cmd, args, {{"socket", true}, {"timeout", true}, {"output", true}});
  if (!flags.ok()) return UsageError(cmd, std::string(flags.status().message()));
  if (flags->help()) {
    std::fputs(kHelp, stdout);
    return kExitOk;
  }
  if (!flags->positional().empty()) {
    return UsageError(cmd, "unexpected argument " + flags->positional()[0].substr(0, 64));
  }
  const std::string socket = flags->get("socket");
  if (socket.empty()) return UsageError(cmd, "--socket PATH is required");
  const std::string output = flags->get("output", "text");
  if (output != "text" && output != "json") return UsageError(cmd, "--output must be text or json");
  auto timeout = ParseTimeout(flags->get("timeout", "3s"));
  if (!timeout.ok()) return UsageError(cmd, std::string(timeout.status().message()));

  nlohmann::ordered_json out = {{"socket", socket}};
  std::string problem;  // why it is not healthy; empty when healthy
  auto channel = DialSocket(socket);
  if (!channel.ok()) {
    problem = std::string(channel.status().message());
    out["healthy"] = false;
    out["problem"] = problem;
    if (output == "json") {
      std::printf("%s\n", out.dump(2).c_str());
    } else {
      std::printf("socket   %s\nresult   unreachable: %s\n", socket.c_str(), problem.c_str());
    }
    return kExitFailed;
  }

  // KMS v2 Status.
  nlohmann::ordered_json v2j;
  ::v2::StatusResponse v2resp;
  auto v2stub = ::v2::KeyManagementService::NewStub(*channel);
  const grpc::Status v2st = TimedCall(*timeout, v2j, [&](grpc::ClientContext& ctx) {
    return v2stub->Status(&ctx, ::v2::StatusRequest(), &v2resp);
  });
  if (v2st.ok()) {
    v2j["version"] = v2resp.version();
    v2j["healthz"] = v2resp.healthz();
    v2j["key_id"] = v2resp.key_id();
    if (v2resp.version() != "v2") {
      problem = "Status says version \"" + v2resp.version() + "\", kube-apiserver requires \"v2\"";
    } else if (v2resp.healthz() != "ok") {
      problem = "healthz is \"" + v2resp.healthz() +
                "\": kube-apiserver treats the plugin as unhealthy; see the plugin's log and "
                "`trousseau doctor`";
    } else if (v2resp.key_id().empty()) {
      problem = "key_id is empty: kube-apiserver refuses to encrypt; the plugin has not read the "
                "transit key yet (see its log)";
    }
  } else {
    problem = "v2 Status failed: " + CodeAndMessage(v2st);
    const std::string hint = Hint(v2st, socket);
    if (!hint.empty()) problem += " (" + hint + ")";
  }
  out["v2"] = v2j;

  // KMS v1beta1 Version.
  nlohmann::ordered_json v1j;
  ::v1beta1::VersionResponse v1resp;
  ::v1beta1::VersionRequest v1req;
  v1req.set_version("v1beta1");
  auto v1stub = ::v1beta1::KeyManagementService::NewStub(*channel);
  const grpc::Status v1st = TimedCall(*timeout, v1j, [&](grpc::ClientContext& ctx) {
    return v1stub->Version(&ctx, v1req, &v1resp);
  });
  if (v1st.ok()) {
    v1j["version"] = v1resp.version();
    v1j["runtime_name"] = v1resp.runtime_name();
    v1j["runtime_version"] = v1resp.runtime_version();
  } else {
    if (problem.empty()) problem = "v1beta1 Version failed: " + CodeAndMessage(v1st);
  }
  out["v1beta1"] = v1j;
  out["healthy"] = problem.empty();
  if (!problem.empty()) out["problem"] = problem;

  const double v2ms = v2j["latency_ms"].get<double>();
  const double v1ms = v1j["latency_ms"].get<double>();
  if (output == "json") {
    std::printf("%s\n", out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::printf("socket            %s\n", socket.c_str());
    if (v2st.ok()) {
      std::printf("v2 Status         OK in %.1f ms\n", v2ms);
      std::printf("  version         %s\n", v2resp.version().c_str());
      std::printf("  healthz         %s\n", v2resp.healthz().c_str());
      std::printf("  key_id          %s\n", v2resp.key_id().empty() ? "(empty)" : v2resp.key_id().c_str());
    } else {
      std::printf("v2 Status         %s (after %.1f ms)\n", CodeAndMessage(v2st).c_str(), v2ms);
    }
    if (v1st.ok()) {
      std::printf("v1beta1 Version   OK in %.1f ms\n", v1ms);
      std::printf("  version         %s\n", v1resp.version().c_str());
      std::printf("  runtime         %s %s\n", v1resp.runtime_name().c_str(),
                  v1resp.runtime_version().c_str());
    } else {
      std::printf("v1beta1 Version   %s (after %.1f ms)\n", CodeAndMessage(v1st).c_str(), v1ms);
    }
    std::printf("result            %s\n", problem.empty() ? "healthy" : ("unhealthy: " + problem).c_str());
  }
  return problem.empty() ? kExitOk : kExitFailed;
}

}  // namespace trousseau::cli
