// The KMS v2 and v1beta1 gRPC services over a KeyService.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "envelope/key_service.h"
#include "kms_v1beta1.grpc.pb.h"
#include "kms_v2.grpc.pb.h"

namespace trousseau::kms {

inline constexpr const char* kRuntimeName = "trousseau";

// Bounded concurrency: at most `max` calls of one method run at once (v2 and v1beta1 together).
// A call beyond it is refused at once with RESOURCE_EXHAUSTED (the caller retries) instead of
// holding a server thread and queueing behind a slow Vault without bound. Status and Version are
// never limited: they answer from memory.
class InFlightLimit {
 public:
  // `method` ("Encrypt") and `config_key` ("limits.max_in_flight.encrypt") name it in messages.
  // Exported as trousseau_kms_max_in_flight{method}; refusals count in trousseau_kms_shed_total.
  InFlightLimit(std::string method, std::string config_key, uint32_t max);
  InFlightLimit(const InFlightLimit&) = delete;
  InFlightLimit& operator=(const InFlightLimit&) = delete;

  // Takes a slot; false (and nothing taken) when `max` calls are already in flight.
  bool TryAcquire();
  void Release() { in_flight_.fetch_sub(1, std::memory_order_acq_rel); }
  // The RESOURCE_EXHAUSTED message of a refused call.
  std::string RefusalMessage() const;
  uint32_t max() const { return max_; }
  uint32_t in_flight() const { return in_flight_.load(std::memory_order_acquire); }

 private:
  std::string method_, key_;
  uint32_t max_;
  std::atomic<uint32_t> in_flight_{0};
};

// The per-method limits both services share. Defaults: docs/configuration.md ("limits").
struct CallLimits {
  static constexpr uint32_t kDefaultEncrypt = 32;
  static constexpr uint32_t kDefaultDecrypt = 64;
  CallLimits(uint32_t encrypt_max = kDefaultEncrypt, uint32_t decrypt_max = kDefaultDecrypt)
      : encrypt("Encrypt", "limits.max_in_flight.encrypt", encrypt_max),
        decrypt("Decrypt", "limits.max_in_flight.decrypt", decrypt_max) {}
  InFlightLimit encrypt;
  InFlightLimit decrypt;
};

// Status (v2) and Version (v1beta1) are async methods answered from memory by one thread of our
// own that drains one completion queue (kms/status_loop.h): they never wait for a sync-server
// thread that Encrypt/Decrypt may all hold (docs/performance.md, "Threads"), and no gRPC
// callback-method threads exist. Encrypt and Decrypt block on Vault and run on the sync server.
class V2Service final
    : public ::v2::KeyManagementService::WithAsyncMethod_Status<::v2::KeyManagementService::Service> {
 public:
  // Without `limits`, calls are not limited (unit tests of the message translation).
  explicit V2Service(envelope::KeyService& keys, CallLimits* limits = nullptr)
      : keys_(keys), limits_(limits) {}
  // Fills a Status answer from the cached health; only memory reads, never blocks. Counted in the
  // KMS metrics unless `ctx` is our own /livez probe. Called by StatusLoop.
  void AnswerStatus(const grpc::ServerContextBase& ctx, ::v2::StatusResponse* resp);
  grpc::Status Encrypt(grpc::ServerContext* ctx, const ::v2::EncryptRequest* req,
                       ::v2::EncryptResponse* resp) override;
  grpc::Status Decrypt(grpc::ServerContext* ctx, const ::v2::DecryptRequest* req,
                       ::v2::DecryptResponse* resp) override;

 private:
  envelope::KeyService& keys_;
  CallLimits* limits_;
};

class V1Beta1Service final
    : public ::v1beta1::KeyManagementService::WithAsyncMethod_Version<
          ::v1beta1::KeyManagementService::Service> {
 public:
  V1Beta1Service(envelope::KeyService& keys, std::string runtime_version,
                 CallLimits* limits = nullptr)
      : keys_(keys), runtime_version_(std::move(runtime_version)), limits_(limits) {}
  // Fills a Version answer (counted in the KMS metrics). Called by StatusLoop.
  void AnswerVersion(::v1beta1::VersionResponse* resp);
  grpc::Status Encrypt(grpc::ServerContext* ctx, const ::v1beta1::EncryptRequest* req,
                       ::v1beta1::EncryptResponse* resp) override;
  grpc::Status Decrypt(grpc::ServerContext* ctx, const ::v1beta1::DecryptRequest* req,
                       ::v1beta1::DecryptResponse* resp) override;

 private:
  envelope::KeyService& keys_;
  std::string runtime_version_;
  CallLimits* limits_;
};

// Maps our status (absl codes equal gRPC codes) to a grpc::Status.
grpc::Status ToGrpc(const absl::Status& st);

// The deadline for work on behalf of this call: the caller's, bounded to `cap` from now.
Deadline CallDeadline(const grpc::ServerContext* ctx, std::chrono::milliseconds cap);

}  // namespace trousseau::kms
