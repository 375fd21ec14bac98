#include "cli/kms_client.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "config/config.h"

namespace trousseau::cli {

absl::StatusOr<std::shared_ptr<grpc::Channel>> DialSocket(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("--socket PATH is required");
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    return absl::UnavailableError(
        "cannot use socket " + path + ": " + std::strerror(err) +
        (err == ENOENT ? " (is the plugin running, and is this its socket.path?)"
                       : err == EACCES ? " (run as a user that may open the socket directory, "
                                         "e.g. root or the socket's group)"
                                       : ""));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return absl::InvalidArgumentError(path + " is not a Unix socket (give the plugin's "
                                             "socket.path)");
  }
  grpc::ChannelArguments args;
  args.SetString(GRPC_ARG_DEFAULT_AUTHORITY, "localhost");  // as kube-apiserver dials
  args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  return grpc::CreateCustomChannel("unix:" + path, grpc::InsecureChannelCredentials(), args);
}

absl::StatusOr<std::chrono::milliseconds> ParseTimeout(const std::string& text) {
  auto d = config::ParseDuration(text);
  if (!d.ok()) return absl::InvalidArgumentError("--timeout: " + std::string(d.status().message()));
  if (*d < std::chrono::milliseconds(100) || *d > std::chrono::minutes(5)) {
    return absl::InvalidArgumentError("--timeout must be between 100ms and 5m, got " + text);
  }
  return *d;
}

const char* CodeName(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
  }
}

std::string CodeAndMessage(const grpc::Status& st) {
  std::string msg;
  for (char c : st.error_message()) {
    if (msg.size() >= 500) {
      msg += "...";
      break;
    }
    msg.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  }
  return std::string(CodeName(st.error_code())) + ": " + msg;
}

std::string Hint(const grpc::Status& st, const std::string& socket) {
  const std::string& m = st.error_message();
  switch (st.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      if (m.find("connect") != std::string::npos || m.find("Connection refused") != std::string::npos ||
          m.find("No such file") != std::string::npos) {
        return "nothing answers on " + socket +
               ": check the plugin is running (its pod or process) and that this is its "
               "socket.path";
      }
      return "the plugin answered but Vault is unreachable, sealed or has no active node: check "
             "`trousseau status`, the plugin's log, and the Vault nodes";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "no answer within --timeout: raise --timeout, or look for slow Vault calls "
             "(`trousseau audit` latency) and failovers in the plugin's log";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "the input was refused: give exactly what `trousseau encrypt` printed (base64, raw "
             "with --raw, or its --output json), within the KMS size limits";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "Vault refused the plugin's token: check the token (or login) and its policy on the "
             "transit key (docs/auth.md, `trousseau doctor`)";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "the ciphertext's key version is below min_decryption_version: lower it in Vault "
             "to read this data (docs/rotation.md)";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "this socket does not serve that API: try the other --api, and check this is a KMS "
             "plugin's socket";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "the message is over the size limit: KMS v2 plaintexts are 32-byte seeds";
    case grpc::StatusCode::INTERNAL:
    case grpc::StatusCode::UNKNOWN:
      return "see the plugin's log around this time (its audit record has the same code and "
             "detail; pass --uid to find it)";
    default:
      return "";
  }
}

void PrintCallError(const std::string& command, const std::string& call, const grpc::Status& st,
                    const std::string& socket) {
  std::fprintf(stderr, "trousseau %s: %s: %s\n", command.c_str(), call.c_str(),
               CodeAndMessage(st).c_str());
  const std::string hint = Hint(st, socket);
  if (!hint.empty()) std::fprintf(stderr, "  hint: %s\n", hint.c_str());
}

void SetTimeout(grpc::ClientContext& ctx, std::chrono::milliseconds timeout) {
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
}

}  // namespace trousseau::cli
