// trousseau-null-server: bench only, never installed, never in the production binary. Isolates
// what the plugin itself costs per KMS call, with no Vault behind it.
//
//   trousseau-null-server --mode null --socket PATH
//       Trousseau's own KMS v2/v1beta1 services (src/kms: V2Service, V1Beta1Service, the call
//       limits, the audit record and the metrics of every call, the async log writer) over a
//       KeyService that answers at once: Encrypt returns "vault:v1:" + base64(plaintext), Decrypt
//       reverses it. The gRPC server is set up as `trousseau serve` sets it up (message size caps,
//       the thread budget).
//   trousseau-null-server --mode echo --socket PATH
//       A bare gRPC server of the same proto and the same server options, whose handlers do the
//       same (reversible) transformation inline: the cost of gRPC over a Unix socket alone.
//
// The difference between the two is the cost of Trousseau's KMS layer; the difference between
// `null` and the real plugin is the cost of talking to Vault (TLS, HTTP, JSON) plus the plugin's
// Vault client. Stops on SIGTERM/SIGINT.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/base64.h"
#include "envelope/key_service.h"
#include "kms/server_tuning.h"
#include "kms/services.h"
#include "kms/status_loop.h"
#include "kms_v2.grpc.pb.h"
#include "observability/log.h"

namespace {

constexpr std::string_view kPrefix = "vault:v1:";
constexpr const char* kKeyId = "null/transit/kubernetes:v1";

std::optional<std::string> Unwrap(std::string_view ciphertext) {
  if (ciphertext.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  auto raw = trousseau::base64::Decode(ciphertext.substr(kPrefix.size()));
  if (!raw.ok()) return std::nullopt;
  return std::move(*raw);
}

// A KeyService that answers at once (no Vault). Input checks are the real ones.
class NullKeyService final : public trousseau::envelope::KeyService {
 public:
  absl::StatusOr<trousseau::envelope::EncryptResult> Encrypt(std::string_view plaintext,
                                                             trousseau::Deadline) override {
    if (auto st = trousseau::envelope::CheckPlaintext(plaintext); !st.ok()) return st;
    trousseau::envelope::EncryptResult r;
    r.ciphertext = std::string(kPrefix) + trousseau::base64::Encode(plaintext);
    r.key_id = kKeyId;
    r.node = "null";
    return r;
  }
  absl::StatusOr<trousseau::envelope::DecryptResult> Decrypt(
      std::string_view ciphertext, std::string_view key_id,
      const std::map<std::string, std::string>& annotations, trousseau::Deadline) override {
    if (auto st = trousseau::envelope::CheckDecryptInput(ciphertext, key_id, annotations);
        !st.ok()) {
      return st;
    }
    auto pt = Unwrap(ciphertext);
    if (!pt) return absl::InvalidArgumentError("not a null-backend ciphertext");
    trousseau::envelope::DecryptResult r;
    r.plaintext = trousseau::SecretBuffer::CopyOf(*pt);
    r.node = "null";
    return r;
  }
  trousseau::envelope::HealthSnapshot Health() const override { return {"ok", kKeyId}; }
};

// The bare echo: the same proto, the same transformation, nothing else.
class EchoV2 final : public ::v2::KeyManagementService::Service {
 public:
  grpc::Status Status(grpc::ServerContext*, const ::v2::StatusRequest*,
                      ::v2::StatusResponse* resp) override {
    resp->set_version("v2");
    resp->set_healthz("ok");
    resp->set_key_id(kKeyId);
    return grpc::Status::OK;
  }
  grpc::Status Encrypt(grpc::ServerContext*, const ::v2::EncryptRequest* req,
                       ::v2::EncryptResponse* resp) override {
    resp->set_ciphertext(std::string(kPrefix) + trousseau::base64::Encode(req->plaintext()));
    resp->set_key_id(kKeyId);
    return grpc::Status::OK;
  }
  grpc::Status Decrypt(grpc::ServerContext*, const ::v2::DecryptRequest* req,
                       ::v2::DecryptResponse* resp) override {
    auto pt = Unwrap(req->ciphertext());
    if (!pt) return {grpc::StatusCode::INVALID_ARGUMENT, "not an echo ciphertext"};
    resp->set_plaintext(*pt);
    return grpc::Status::OK;
  }
};

[[noreturn]] void Usage(const std::string& why) {
  std::cerr << "trousseau-null-server: " << why
            << "\nusage: trousseau-null-server --mode null|echo --socket PATH\n";
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode, socket;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) Usage(flag + " needs a value");
    if (flag == "--mode") mode = argv[++i];
    else if (flag == "--socket") socket = argv[++i];
    else Usage("unknown flag " + flag);
  }
  if (mode != "null" && mode != "echo") Usage("--mode must be null or echo");
  if (socket.empty()) Usage("--socket is required");

  // The process and server settings `serve` uses (kms/server_tuning.h: Abseil's deadlock
  // detection off, bounded malloc arenas, the kept pollers and thread quota, the heap trimmed
  // each second), in both modes: the rows measure gRPC and the KMS layer as they run in the
  // plugin, not gRPC's defaults.
  trousseau::kms::TuneProcess();

  // Stop signals are waited for with sigwait; every thread inherits the mask.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  NullKeyService keys;
  trousseau::kms::CallLimits limits(4096, 4096);  // the bench measures cost, not shedding
  std::unique_ptr<trousseau::kms::V2Service> v2;
  std::unique_ptr<trousseau::kms::V1Beta1Service> v1;
  std::unique_ptr<trousseau::kms::StatusLoop> status_loop;  // stopped before the server goes
  EchoV2 echo;
  if (mode == "null") {
    trousseau::log::StartWriter();  // as `serve` does: audit records through the async writer
    v2 = std::make_unique<trousseau::kms::V2Service>(keys, &limits);
    v1 = std::make_unique<trousseau::kms::V1Beta1Service>(keys, "null", &limits);
  }

  ::unlink(socket.c_str());
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + socket, grpc::InsecureServerCredentials());
  if (mode == "null") {
    builder.RegisterService(v2.get());
    builder.RegisterService(v1.get());
    status_loop = std::make_unique<trousseau::kms::StatusLoop>(v2.get(), v1.get());
    status_loop->AddTo(builder);
  } else {
    builder.RegisterService(&echo);
  }
  builder.SetMaxReceiveMessageSize(256 * 1024);
  builder.SetMaxSendMessageSize(256 * 1024);
  trousseau::kms::ConfigureServer(builder, limits);
  auto server = builder.BuildAndStart();
  if (!server) {
    std::cerr << "trousseau-null-server: cannot listen on unix:" << socket << "\n";
    return 1;
  }
  if (status_loop) {
    if (auto st = status_loop->Start(*server); !st.ok()) {
      std::cerr << "trousseau-null-server: " << st.message() << "\n";
      return 1;
    }
  }
  ::chmod(socket.c_str(), 0666);
  std::cerr << "trousseau-null-server: " << mode << " serving on unix:" << socket << std::endl;
  const timespec tick{1, 0};
  while (sigtimedwait(&stop, nullptr, &tick) < 0) {
    if (errno != EAGAIN && errno != EINTR) break;
    trousseau::kms::TrimHeapIfSlack();  // as serve's main thread does each second
  }
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (status_loop) status_loop->Stop();
  ::unlink(socket.c_str());
  if (mode == "null") trousseau::log::StopWriter(std::chrono::seconds(1));
  return 0;
}
