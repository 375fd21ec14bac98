#include "kms/services.h"

#include <grpc/support/time.h>
#include <grpcpp/grpcpp.h>

#include <optional>

#include "hardening/secret_buffer.h"
#include "hardening/wiping_allocator.h"
#include "observability/log.h"
#include "observability/metrics.h"
#include "vault/ciphertext.h"

namespace trousseau::kms {
namespace {

constexpr auto kMaxCallTime = std::chrono::milliseconds(30000);

const char* CodeName(absl::StatusCode c) {
  switch (c) {
    case absl::StatusCode::kOk: return "OK";
    case absl::StatusCode::kCancelled: return "CANCELLED";
    case absl::StatusCode::kInvalidArgument: return "INVALID_ARGUMENT";
    case absl::StatusCode::kDeadlineExceeded: return "DEADLINE_EXCEEDED";
    case absl::StatusCode::kNotFound: return "NOT_FOUND";
    case absl::StatusCode::kPermissionDenied: return "PERMISSION_DENIED";
    case absl::StatusCode::kResourceExhausted: return "RESOURCE_EXHAUSTED";
    case absl::StatusCode::kFailedPrecondition: return "FAILED_PRECONDITION";
    case absl::StatusCode::kUnavailable: return "UNAVAILABLE";
    case absl::StatusCode::kInternal: return "INTERNAL";
    default: return "UNKNOWN";
  }
}

std::string_view Clip(std::string_view s, size_t n) { return s.substr(0, std::min(s.size(), n)); }

// Wipes a protobuf bytes field that held a plaintext, in the message gRPC owns.
void WipeField(const std::string& field) {
  auto& s = const_cast<std::string&>(field);
  SecureWipe(s.data(), s.size());
}

// Our own /livez probe marks its Status call; it is not a KMS client's call, so it is not
// counted (see observability/probes.h). Anyone able to set it can already call the socket.
bool IsInternalProbe(const grpc::ServerContextBase* ctx) {
  return ctx != nullptr && ctx->client_metadata().count("x-trousseau-probe") > 0;
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Counts and times a call without an audit record (Status, Version).
class CallMetrics {
 public:
  CallMetrics(std::string_view api, std::string_view method, bool counted)
      : api_(api), method_(method), start_(std::chrono::steady_clock::now()) {
    if (counted) in_flight_.emplace(api, method);
  }
  ~CallMetrics() {
    if (in_flight_) metrics::ObserveKms(api_, method_, "OK", SecondsSince(start_));
  }

 private:
  std::string_view api_, method_;
  std::chrono::steady_clock::time_point start_;
  std::optional<metrics::KmsInFlight> in_flight_;
};

// Times one call, counts it in the metrics and writes its audit record when it goes out of scope.
class CallRecord {
 public:
  CallRecord(std::string_view api, std::string_view op, std::string_view method,
             std::string_view uid)
      : start_(std::chrono::steady_clock::now()), method_(method), in_flight_(api, method) {
    rec_.api = api;
    rec_.operation = op;
    rec_.uid = uid;  // log::Audit clips it (kMaxAuditUidBytes) and marks the record
  }
  ~CallRecord() {
    rec_.duration = std::chrono::duration_cast<std::chrono::microseconds>(
        std::chrono::steady_clock::now() - start_);
    rec_.code = CodeName(status_.code());
    rec_.detail = std::string_view(status_.message().data(), status_.message().size());
    rec_.key_id = key_id_;
    rec_.vault_node = node_;
    rec_.vault_request_id = request_id_;
    log::Audit(rec_);
    metrics::ObserveKms(rec_.api, method_, rec_.code, SecondsSince(start_));
    // Dead frames below us held plaintext-derived bytes (base64, JSON, TLS records).
    ScrubStack();
  }
  void Finish(const absl::Status& st) { status_ = st; }
  void SetKeyId(std::string k) { key_id_ = std::move(k); }
  void SetNode(std::string n) { node_ = std::move(n); }
  void SetRequestId(std::string id) { request_id_ = std::move(id); }
  // The transit key version named by a ciphertext's "vault:vN:" prefix, if it has one.
  void SetVersionFrom(std::string_view ciphertext) {
    auto v = vault::ParseCiphertextVersion(ciphertext, vault::kMaxV1CiphertextBytes);
    rec_.key_version = v.ok() ? *v : 0;
  }
  void SetSizes(size_t in, size_t out) {
    rec_.input_bytes = in;
    rec_.output_bytes = out;
  }

 private:
  std::chrono::steady_clock::time_point start_;
  log::AuditRecord rec_;
  absl::Status status_;
  std::string key_id_, node_, request_id_;
  std::string_view method_;
  metrics::KmsInFlight in_flight_;
};

// Holds one slot of a limit for the call's lifetime; empty when the limit refused the call.
class Slot {
 public:
  explicit Slot(InFlightLimit* limit) : limit_(limit) {
    if (limit_ != nullptr && !limit_->TryAcquire()) {
      refused_ = absl::ResourceExhaustedError(limit_->RefusalMessage());
      limit_ = nullptr;
    }
  }
  ~Slot() {
    if (limit_ != nullptr) limit_->Release();
  }
  Slot(const Slot&) = delete;
  Slot& operator=(const Slot&) = delete;
  bool refused() const { return !refused_.ok(); }
  const absl::Status& status() const { return refused_; }

 private:
  InFlightLimit* limit_;
  absl::Status refused_;
};

InFlightLimit* EncryptLimit(CallLimits* l) { return l == nullptr ? nullptr : &l->encrypt; }
InFlightLimit* DecryptLimit(CallLimits* l) { return l == nullptr ? nullptr : &l->decrypt; }

}  // namespace

InFlightLimit::InFlightLimit(std::string method, std::string config_key, uint32_t max)
    : method_(std::move(method)), key_(std::move(config_key)), max_(max) {
  metrics::SetKmsMaxInFlight(method_, max_);
}

bool InFlightLimit::TryAcquire() {
  uint32_t cur = in_flight_.load(std::memory_order_acquire);
  do {
    if (cur >= max_) {
      metrics::KmsShed(method_);
      return false;
    }
  } while (!in_flight_.compare_exchange_weak(cur, cur + 1, std::memory_order_acq_rel));
  return true;
}

std::string InFlightLimit::RefusalMessage() const {
  return "too many concurrent " + method_ + " calls: " + std::to_string(max_) +
         " already in flight (limit " + key_ + " = " + std::to_string(max_) +
         "); retry with backoff, or raise the limit if Vault keeps up";
}

grpc::Status ToGrpc(const absl::Status& st) {
  if (st.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(st.code()), std::string(st.message()));
}

Deadline CallDeadline(const grpc::ServerContext* ctx, std::chrono::milliseconds cap) {
  const auto now = std::chrono::steady_clock::now();
  Deadline d = now + cap;
  // The caller's deadline on the monotonic clock: ServerContext::deadline() converts to the wall
  // clock, so a wall-clock step during a call (NTP, a VM resume) made a live call look expired
  // (test_faults_matrix's clock row saw DEADLINE_EXCEEDED "before the Vault call").
  gpr_timespec raw = ctx->raw_deadline();
  if (gpr_time_cmp(raw, gpr_inf_future(raw.clock_type)) == 0) return d;  // no deadline set
  raw = gpr_convert_clock_type(raw, GPR_CLOCK_MONOTONIC);
  const gpr_timespec left_ts = gpr_time_sub(raw, gpr_now(GPR_CLOCK_MONOTONIC));
  const auto left = std::chrono::seconds(left_ts.tv_sec) + std::chrono::nanoseconds(left_ts.tv_nsec);
  if (left < cap) d = now + std::chrono::duration_cast<std::chrono::steady_clock::duration>(left);
  return d;
}

void V2Service::AnswerStatus(const grpc::ServerContextBase& ctx, ::v2::StatusResponse* resp) {
  // Runs on the status loop's thread: only memory reads here, nothing that can block.
  CallMetrics m("v2", "Status", !IsInternalProbe(&ctx));
  const envelope::HealthSnapshot h = keys_.Health();
  resp->set_version("v2");
  resp->set_healthz(h.healthz);
  resp->set_key_id(h.key_id);
  if (log::Enabled(log::Level::kDebug)) {
    log::Debug("kms.status", "status", {{"healthz", h.healthz}, {"key_id", h.key_id}});
  }
}

grpc::Status V2Service::Encrypt(grpc::ServerContext* ctx, const ::v2::EncryptRequest* req,
                                ::v2::EncryptResponse* resp) {
  CallRecord rec("v2", "encrypt", "Encrypt", req->uid());
  Slot slot(EncryptLimit(limits_));
  absl::StatusOr<envelope::EncryptResult> r = absl::UnknownError("not run");
  if (slot.refused()) {
    r = slot.status();
  } else if (absl::Status fits = envelope::CheckV2WrappedSizeFits(req->plaintext()); !fits.ok()) {
    r = fits;
  } else {
    r = keys_.Encrypt(req->plaintext(), CallDeadline(ctx, kMaxCallTime));
  }
  if (r.ok() && r->ciphertext.size() > vault::kMaxCiphertextBytes) {
    r = absl::InternalError("Vault returned a " + std::to_string(r->ciphertext.size()) +
                            "-byte ciphertext; KMS v2 allows at most " +
                            std::to_string(vault::kMaxCiphertextBytes));
  }
  rec.SetSizes(req->plaintext().size(), r.ok() ? r->ciphertext.size() : 0);
  WipeField(req->plaintext());
  rec.Finish(r.status());
  if (!r.ok()) return ToGrpc(r.status());
  rec.SetKeyId(r->key_id);
  rec.SetNode(r->node);
  rec.SetRequestId(std::move(r->vault_request_id));
  rec.SetVersionFrom(r->ciphertext);
  resp->set_ciphertext(std::move(r->ciphertext));
  resp->set_key_id(std::move(r->key_id));
  for (auto& [k, v] : r->annotations) (*resp->mutable_annotations())[k] = v;
  return grpc::Status::OK;
}

grpc::Status V2Service::Decrypt(grpc::ServerContext* ctx, const ::v2::DecryptRequest* req,
                                ::v2::DecryptResponse* resp) {
  CallRecord rec("v2", "decrypt", "Decrypt", req->uid());
  rec.SetKeyId(std::string(Clip(req->key_id(), 1024)));
  rec.SetVersionFrom(req->ciphertext());
  std::map<std::string, std::string> annotations(req->annotations().begin(),
                                                 req->annotations().end());
  absl::StatusOr<envelope::DecryptResult> r = absl::InvalidArgumentError(
      "ciphertext is " + std::to_string(req->ciphertext().size()) + " bytes; the KMS v2 limit is " +
      std::to_string(vault::kMaxCiphertextBytes));
  Slot slot(DecryptLimit(limits_));
  if (slot.refused()) {
    r = slot.status();
  } else if (req->ciphertext().size() <= vault::kMaxCiphertextBytes) {
    r = keys_.Decrypt(req->ciphertext(), req->key_id(), annotations, CallDeadline(ctx, kMaxCallTime));
  }
  rec.Finish(r.status());
  rec.SetSizes(req->ciphertext().size(), r.ok() ? r->plaintext.size() : 0);
  if (!r.ok()) return ToGrpc(r.status());
  rec.SetNode(r->node);
  rec.SetRequestId(std::move(r->vault_request_id));
  resp->set_plaintext(r->plaintext.chars(), r->plaintext.size());
  return grpc::Status::OK;
}

void V1Beta1Service::AnswerVersion(::v1beta1::VersionResponse* resp) {
  CallMetrics m("v1beta1", "Version", true);
  resp->set_version("v1beta1");
  resp->set_runtime_name(kRuntimeName);
  resp->set_runtime_version(runtime_version_);
}

grpc::Status V1Beta1Service::Encrypt(grpc::ServerContext* ctx,
                                     const ::v1beta1::EncryptRequest* req,
                                     ::v1beta1::EncryptResponse* resp) {
  CallRecord rec("v1beta1", "encrypt", "Encrypt", "");
  Slot slot(EncryptLimit(limits_));
  absl::StatusOr<envelope::EncryptResult> r =
      slot.refused() ? absl::StatusOr<envelope::EncryptResult>(slot.status())
                     : keys_.Encrypt(req->plain(), CallDeadline(ctx, kMaxCallTime));
  rec.SetSizes(req->plain().size(), r.ok() ? r->ciphertext.size() : 0);
  WipeField(req->plain());
  rec.Finish(r.status());
  if (!r.ok()) return ToGrpc(r.status());
  rec.SetKeyId(r->key_id);
  rec.SetNode(r->node);
  rec.SetRequestId(std::move(r->vault_request_id));
  rec.SetVersionFrom(r->ciphertext);
  resp->set_cipher(std::move(r->ciphertext));
  return grpc::Status::OK;
}

grpc::Status V1Beta1Service::Decrypt(grpc::ServerContext* ctx,
                                     const ::v1beta1::DecryptRequest* req,
                                     ::v1beta1::DecryptResponse* resp) {
  CallRecord rec("v1beta1", "decrypt", "Decrypt", "");
  rec.SetVersionFrom(req->cipher());
  Slot slot(DecryptLimit(limits_));
  absl::StatusOr<envelope::DecryptResult> r =
      slot.refused() ? absl::StatusOr<envelope::DecryptResult>(slot.status())
                     : keys_.Decrypt(req->cipher(), "", {}, CallDeadline(ctx, kMaxCallTime));
  rec.Finish(r.status());
  rec.SetSizes(req->cipher().size(), r.ok() ? r->plaintext.size() : 0);
  if (!r.ok()) return ToGrpc(r.status());
  rec.SetNode(r->node);
  rec.SetRequestId(std::move(r->vault_request_id));
  resp->set_plain(r->plaintext.chars(), r->plaintext.size());
  return grpc::Status::OK;
}

}  // namespace trousseau::kms
