// The KMS v2 and v1beta1 gRPC services over a KeyService.
#pragma once

#include <memory>
#include <string>

#include "envelope/key_service.h"
#include "kms_v1beta1.grpc.pb.h"
#include "kms_v2.grpc.pb.h"

namespace trousseau::kms {

inline constexpr const char* kRuntimeName = "trousseau";

class V2Service final : public ::v2::KeyManagementService::Service {
 public:
  explicit V2Service(envelope::KeyService& keys) : keys_(keys) {}
  grpc::Status Status(grpc::ServerContext* ctx, const ::v2::StatusRequest* req,
                      ::v2::StatusResponse* resp) override;
  grpc::Status Encrypt(grpc::ServerContext* ctx, const ::v2::EncryptRequest* req,
                       ::v2::EncryptResponse* resp) override;
  grpc::Status Decrypt(grpc::ServerContext* ctx, const ::v2::DecryptRequest* req,
                       ::v2::DecryptResponse* resp) override;

 private:
  envelope::KeyService& keys_;
};

class V1Beta1Service final : public ::v1beta1::KeyManagementService::Service {
 public:
  V1Beta1Service(envelope::KeyService& keys, std::string runtime_version)
      : keys_(keys), runtime_version_(std::move(runtime_version)) {}
  grpc::Status Version(grpc::ServerContext* ctx, const ::v1beta1::VersionRequest* req,
                       ::v1beta1::VersionResponse* resp) override;
  grpc::Status Encrypt(grpc::ServerContext* ctx, const ::v1beta1::EncryptRequest* req,
                       ::v1beta1::EncryptResponse* resp) override;
  grpc::Status Decrypt(grpc::ServerContext* ctx, const ::v1beta1::DecryptRequest* req,
                       ::v1beta1::DecryptResponse* resp) override;

 private:
  envelope::KeyService& keys_;
  std::string runtime_version_;
};

// Maps our status (absl codes equal gRPC codes) to a grpc::Status.
grpc::Status ToGrpc(const absl::Status& st);

// The deadline for work on behalf of this call: the caller's, bounded to `cap` from now.
Deadline CallDeadline(const grpc::ServerContext* ctx, std::chrono::milliseconds cap);

}  // namespace trousseau::kms
