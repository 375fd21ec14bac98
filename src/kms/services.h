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

// Threads the gRPC sync server may run: every limited call, as many again for the calls being
// refused at the same moment, and room for Status and Version. A burst cannot grow threads
// without bound; past the budget gRPC itself refuses with RESOURCE_EXHAUSTED ("Server
// Threadpool Exhausted"). Measured: with enc + dec + 16, a burst of 1,000 callers hit gRPC's
// refusal before the Decrypt limit was reached (test_faults.py, overload). The sync server needs a
// thread for every call it has accepted, even one it refuses at once, so a burst above the
// budget gets gRPC's refusal, Status included: with 2 x (32 + 64) + 64 = 256, a 1,000-caller
// burst starved Status once in the merged build. Hence a floor of 1024 threads (mostly idle
// stacks: virtual memory, not RSS), above the 1,000-caller burst the fault test makes.
inline constexpr uint32_t kMinServerThreads = 1024;
inline uint32_t ServerThreadBudget(const CallLimits& l) {
  const uint32_t by_limits = 2 * (l.encrypt.max() + l.decrypt.max()) + 64;
  return by_limits > kMinServerThreads ? by_limits : kMinServerThreads;
}

class V2Service final : public ::v2::KeyManagementService::Service {
 public:
  // Without `limits`, calls are not limited (unit tests of the message translation).
  explicit V2Service(envelope::KeyService& keys, CallLimits* limits = nullptr)
      : keys_(keys), limits_(limits) {}
  grpc::Status Status(grpc::ServerContext* ctx, const ::v2::StatusRequest* req,
                      ::v2::StatusResponse* resp) override;
  grpc::Status Encrypt(grpc::ServerContext* ctx, const ::v2::EncryptRequest* req,
                       ::v2::EncryptResponse* resp) override;
  grpc::Status Decrypt(grpc::ServerContext* ctx, const ::v2::DecryptRequest* req,
                       ::v2::DecryptResponse* resp) override;

 private:
  envelope::KeyService& keys_;
  CallLimits* limits_;
};

class V1Beta1Service final : public ::v1beta1::KeyManagementService::Service {
 public:
  V1Beta1Service(envelope::KeyService& keys, std::string runtime_version,
                 CallLimits* limits = nullptr)
      : keys_(keys), runtime_version_(std::move(runtime_version)), limits_(limits) {}
  grpc::Status Version(grpc::ServerContext* ctx, const ::v1beta1::VersionRequest* req,
                       ::v1beta1::VersionResponse* resp) override;
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
