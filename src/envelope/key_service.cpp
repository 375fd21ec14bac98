#include "envelope/key_service.h"

#include "common/status.h"
#include "observability/log.h"
#include "vault/ciphertext.h"

namespace trousseau::envelope {

bool IsFqdn(std::string_view name) {
  // As k8s IsFullyQualifiedDomainName: one trailing dot is allowed and not part of the name.
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  if (name.empty() || name.size() > 253 || name.find('.') == std::string_view::npos) return false;
  size_t label = 0;
  char prev = '.';
  for (char c : name) {
    if (c == '.') {
      if (label == 0 || prev == '-') return false;
      label = 0;
    } else {
      const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
      if (!ok || (label == 0 && c == '-') || ++label > 63) return false;
    }
    prev = c;
  }
  return label != 0 && prev != '-';
}

absl::Status CheckPlaintext(std::string_view plaintext) {
  if (plaintext.empty()) return absl::InvalidArgumentError("plaintext is empty");
  if (plaintext.size() > kMaxPlaintextBytes) {
    return absl::InvalidArgumentError("plaintext is " + std::to_string(plaintext.size()) +
                                      " bytes; the limit is " + std::to_string(kMaxPlaintextBytes));
  }
  return absl::OkStatus();
}

size_t EstimatedWrappedSize(size_t n) {
  // "vault:v" + up to 9 digits + ":" + base64(12-byte nonce + n + 16-byte tag)
  return 7 + 9 + 1 + 4 * ((vault::kMinSealedBytes + n + 2) / 3);
}

absl::Status CheckV2WrappedSizeFits(std::string_view plaintext) {
  const size_t wrapped = EstimatedWrappedSize(plaintext.size());
  if (wrapped > vault::kMaxCiphertextBytes) {
    return absl::InvalidArgumentError(
        "plaintext is " + std::to_string(plaintext.size()) + " bytes; wrapped it would be about " +
        std::to_string(wrapped) + " bytes, over the KMS v2 ciphertext limit of " +
        std::to_string(vault::kMaxCiphertextBytes) + " (KMS v2 plaintexts are 32-byte seeds)");
  }
  return absl::OkStatus();
}

absl::Status CheckDecryptInput(std::string_view ciphertext, std::string_view key_id,
                               const std::map<std::string, std::string>& annotations) {
  if (key_id.size() > kMaxKeyIdBytes) {
    return absl::InvalidArgumentError("key_id is " + std::to_string(key_id.size()) +
                                      " bytes; the limit is " + std::to_string(kMaxKeyIdBytes));
  }
  size_t total = 0;
  for (const auto& [k, v] : annotations) {
    if (!IsFqdn(k)) {
      // The key is the caller's bytes: quoted printable-only (fuzzing found control bytes, e.g.
      // terminal escapes, copied into the message and from there into logs; tests/fuzz).
      std::string shown;
      for (char c : std::string_view(k).substr(0, 64)) shown.push_back(c >= 0x20 && c < 0x7f ? c : '?');
      return absl::InvalidArgumentError("annotation key is not a fully qualified domain name: \"" +
                                        shown + (k.size() > 64 ? "\"..." : "\""));
    }
    total += k.size() + v.size();
  }
  if (total > kMaxAnnotationBytes) {
    return absl::InvalidArgumentError("annotations are " + std::to_string(total) +
                                      " bytes; the limit is " + std::to_string(kMaxAnnotationBytes));
  }
  return vault::ParseCiphertextVersion(ciphertext, vault::kMaxV1CiphertextBytes).status();
}

TransitKeyService::TransitKeyService(vault::TransitClient& transit, Clock& clock,
                                     TransitKeyServiceOptions options)
    : transit_(transit),
      clock_(clock),
      opts_(std::move(options)),
      identity_((opts_.namespace_.empty() ? "" : opts_.namespace_ + "/") + transit.mount() + "/" +
                transit.key()) {
  if (opts_.batch_max_items > 1) {
    batcher_ = std::make_unique<TransitBatcher>(
        transit_, clock_, BatchOptions{opts_.batch_max_items, opts_.batch_max_wait});
  }
  if (opts_.coalesce_decrypts) coalescer_ = std::make_unique<DecryptCoalescer>(clock_);
  if (opts_.state_file != nullptr) {
    persisted_ = opts_.state_file->Find(opts_.state_entry_prefix + identity_);
    rollback_guard_ = RollbackGuard(
        persisted_, "the high-water mark is kept in state.file " + opts_.state_file->path() +
                        ": after that check, remove the file (or this key's entry) before the "
                        "restart, or the restarted plugin refuses the key again");
  }
}

TransitKeyService::~TransitKeyService() { Stop(); }

std::string TransitKeyService::KeyIdFor(int64_t version) const {
  return identity_ + ":v" + std::to_string(version);
}

std::string TransitKeyService::WrittenKeyIdFor(int64_t version) const {
  return KeyIdFor(version) +
         (opts_.binding.Writes() ? "+aad" + std::to_string(kBindingVersion) : std::string());
}

absl::StatusOr<EncryptResult> TransitKeyService::Encrypt(std::string_view plaintext,
                                                         Deadline deadline) {
  return EncryptImpl(plaintext, deadline, opts_.binding.Writes());
}

absl::StatusOr<EncryptResult> TransitKeyService::EncryptImpl(std::string_view plaintext,
                                                             Deadline deadline, bool bind) {
  RETURN_IF_ERROR(CheckPlaintext(plaintext));
  int64_t version = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!rollback_.empty()) return absl::FailedPreconditionError(rollback_);
    if (bind && !key_type_problem_.empty()) return absl::FailedPreconditionError(key_type_problem_);
    version = latest_version_;
  }
  const std::string aad = bind ? BindingAadV1(opts_.binding.cluster_id, identity_) : std::string();
  ASSIGN_OR_RETURN(vault::Wrapped w, batcher_ ? batcher_->Encrypt(plaintext, version, aad, deadline)
                                              : transit_.Encrypt(plaintext, version, deadline, aad));
  EncryptResult out;
  // From the ciphertext itself: cannot disagree with it.
  out.key_id = bind ? WrittenKeyIdFor(w.version) : KeyIdFor(w.version);
  if (bind) out.annotations[std::string(kBindingAnnotation)] = BindingAnnotationV1(opts_.binding.cluster_id);
  out.ciphertext = std::move(w.ciphertext);
  out.node = std::move(w.node);
  out.vault_request_id = std::move(w.request_id);
  return out;
}

absl::StatusOr<DecryptResult> TransitKeyService::Decrypt(
    std::string_view ciphertext, std::string_view key_id,
    const std::map<std::string, std::string>& annotations, Deadline deadline) {
  RETURN_IF_ERROR(CheckDecryptInput(ciphertext, key_id, annotations));
  const BindingOptions& b = opts_.binding;
  std::string aad;
  std::optional<ParsedBinding> bound;
  if (auto it = annotations.find(std::string(kBindingAnnotation)); it != annotations.end()) {
    ASSIGN_OR_RETURN(ParsedBinding p, ParseBindingAnnotation(it->second));
    if (b.cluster_id.empty()) {
      return absl::FailedPreconditionError(
          "ciphertext is bound to a cluster (annotation " + std::string(kBindingAnnotation) +
          ", binding v" + std::to_string(p.version) +
          (p.writer_cluster.empty() ? "" : ", written for cluster \"" + p.writer_cluster + "\"") +
          ") but binding.cluster_id is not configured; set it to the id of the cluster that "
          "wrote it (docs/binding.md)");
    }
    aad = BindingAadV1(b.cluster_id, identity_);
    bound = std::move(p);
  } else if (b.strict) {
    return absl::FailedPreconditionError(
        "ciphertext is not bound to a cluster (no " + std::string(kBindingAnnotation) +
        " annotation: written before binding was enabled, or by KMS v1beta1) and binding.strict "
        "refuses unbound seeds; rewrite old Secrets or turn binding.strict off (docs/binding.md)");
  }
  auto vault_call = [&](Deadline d) {
    return batcher_ ? batcher_->Decrypt(ciphertext, aad, d) : transit_.Decrypt(ciphertext, d, aad);
  };
  auto u = coalescer_ ? coalescer_->Do(DecryptKey(ciphertext, key_id, annotations, aad), deadline,
                                       vault_call)
                      : vault_call(deadline);
  if (!u.ok() && bound && u.status().code() == absl::StatusCode::kInvalidArgument) {
    return absl::InvalidArgumentError(
        "binding mismatch: the seed is bound (" + std::string(kBindingAnnotation) + " binding v" +
        std::to_string(bound->version) +
        (bound->writer_cluster.empty() ? "" : ", written for cluster \"" + bound->writer_cluster + "\"") +
        ") and does not open under this plugin's binding (cluster \"" + b.cluster_id + "\", key " +
        identity_ + "): it was copied from another cluster or written for another key, or altered; " +
        std::string(u.status().message()));
  }
  if (!u.ok()) return u.status();
  DecryptResult out;
  out.plaintext = std::move(u->plaintext);
  out.node = std::move(u->node);
  out.vault_request_id = std::move(u->request_id);
  return out;
}

absl::StatusOr<EncryptResult> TransitKeyService::V1Beta1ViewImpl::Encrypt(
    std::string_view plaintext, Deadline deadline) {
  if (owner_.opts_.binding.strict) {
    return absl::FailedPreconditionError(
        "KMS v1beta1 cannot carry a cluster binding and binding.strict refuses unbound "
        "ciphertexts; use KMS v2 (docs/binding.md)");
  }
  return owner_.EncryptImpl(plaintext, deadline, /*bind=*/false);
}

absl::StatusOr<DecryptResult> TransitKeyService::V1Beta1ViewImpl::Decrypt(
    std::string_view ciphertext, std::string_view key_id,
    const std::map<std::string, std::string>& annotations, Deadline deadline) {
  return owner_.Decrypt(ciphertext, key_id, annotations, deadline);  // strict refuses: no annotation
}

HealthSnapshot TransitKeyService::Health() const {
  std::lock_guard<std::mutex> lock(mu_);
  HealthSnapshot h;
  if (latest_version_ > 0) h.key_id = WrittenKeyIdFor(latest_version_);
  const auto age = clock_.Now() - last_ok_at_;
  if (!rollback_.empty()) {
    h.healthz = rollback_;
  } else if (!key_type_problem_.empty()) {
    h.healthz = key_type_problem_;
  } else if (!ever_ok_) {
    h.healthz = last_error_.empty() ? "no successful Vault check yet"
                                    : "no successful Vault check yet: " + last_error_;
  } else if (!last_ok_) {
    h.healthz = "last Vault check failed: " + last_error_;
  } else if (age > opts_.stale_after) {
    h.healthz = "last successful Vault check is older than status.stale_after";
  } else {
    h.healthz = "ok";
  }
  return h;
}

KeyState TransitKeyService::State() const {
  std::lock_guard<std::mutex> lock(mu_);
  KeyState s;
  s.latest_version = latest_version_;
  if (ever_ok_) {
    s.since_last_ok = std::chrono::duration_cast<std::chrono::milliseconds>(clock_.Now() - last_ok_at_);
  }
  s.rollbacks_detected = rollbacks_detected_;
  s.rollback_active = !rollback_.empty();
  s.last_check_ok = last_ok_;
  return s;
}

void TransitKeyService::PersistMark(const vault::KeyInfo& info) {
  std::lock_guard<std::mutex> state_lock(state_mu_);
  KeyMark next;
  {
    std::lock_guard<std::mutex> lock(mu_);
    RollbackGuard probe = rollback_guard_;
    if (!probe.Observe(info, identity_).empty()) return;  // a rollback: nothing to keep
    next = probe.mark();
  }
  if (next == persisted_) return;
  // Outside mu_: an fsync must not hold up Encrypt or Status.
  absl::Status st = opts_.state_file->Write(opts_.state_entry_prefix + identity_, next);
  if (st.ok()) {
    persisted_ = std::move(next);
    if (!state_error_.empty()) log::Info("state.write", "state file written again", {{"file", opts_.state_file->path()}});
    state_error_.clear();
    return;
  }
  // The new version is used anyway (availability first); retried at the next check.
  if (state_error_ != st.message()) {
    log::Error("state.write", "cannot write the state file; the raised key version is kept in memory "
               "only until a write succeeds", {{"error", std::string(st.message())}});
  }
  state_error_ = std::string(st.message());
}

void TransitKeyService::RefreshOnce() {
  const Deadline deadline = clock_.Now() + opts_.check_timeout;
  auto info = transit_.ReadKey(deadline);
  // Persisted before it is adopted below: a crash between the two leaves the file ahead of
  // what Encrypt used, never behind it.
  if (info.ok() && opts_.state_file != nullptr) PersistMark(*info);
  std::lock_guard<std::mutex> lock(mu_);
  if (info.ok()) {
    std::string problem = rollback_guard_.Observe(*info, identity_);
    if (!problem.empty()) {
      // Seeded from the state file, the first check can find it: show the high-water key_id.
      if (latest_version_ == 0) latest_version_ = rollback_guard_.high_version();
      if (rollback_.empty()) {
        ++rollbacks_detected_;
        log::Error("key.rollback", "transit key rollback detected; Encrypt refused",
                   {{"key_id", KeyIdFor(latest_version_)}, {"error", problem}});
      }
      rollback_ = std::move(problem);
    } else if (!rollback_.empty()) {
      log::Info("key.rollback", "transit key matches what was seen before again; Encrypt allowed",
                {{"key_id", KeyIdFor(info->latest_version)}});
      rollback_.clear();
    }
    key_type_problem_.clear();
    if (opts_.binding.Writes() && !KeyTypeSupportsAad(info->type)) {
      key_type_problem_ = "binding.cluster_id is set but transit key " + identity_ + " has type \"" +
                          info->type + "\", which cannot authenticate associated data; use an "
                          "aes256-gcm96, aes128-gcm96 or chacha20-poly1305 key, or turn binding off";
    }
  }
  if (info.ok() && rollback_.empty()) {
    if (info->latest_version != latest_version_) {
      log::Info("key.version", latest_version_ == 0 ? "transit key found" : "transit key rotated",
                {{"key_id", KeyIdFor(info->latest_version)},
                 {"previous_key_id", latest_version_ ? KeyIdFor(latest_version_) : ""}});
    }
    if (!last_ok_) log::Info("health", "Vault check succeeded", {{"key_id", KeyIdFor(info->latest_version)}});
    latest_version_ = info->latest_version;
    last_ok_ = true;
    ever_ok_ = true;
    last_ok_at_ = clock_.Now();
    last_error_.clear();
  } else if (info.ok()) {
    // Vault answered, but with a rolled-back key: the check did not succeed.
    last_ok_ = false;
    last_error_ = rollback_;
  } else {
    if (last_ok_ || last_error_ != info.status().message()) {
      log::Warn("health", "Vault check failed", {{"error", std::string(info.status().message())}});
    }
    last_ok_ = false;
    last_error_ = std::string(info.status().message());
  }
}

void TransitKeyService::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread([this] { Run(); });
}

void TransitKeyService::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void TransitKeyService::Run() {
  for (;;) {
    RefreshOnce();
    std::unique_lock<std::mutex> lock(mu_);
    // Healthy: one check per refresh period (one Vault request a minute by default). After a
    // failed check, sooner, so that recovery shows in Status within seconds.
    const auto period = last_ok_ ? opts_.refresh_period
                                 : std::min<std::chrono::milliseconds>(opts_.refresh_period,
                                                                       kRetryAfterFailure);
    const auto until = clock_.Now() + period;
    if (clock_.WaitUntil(lock, cv_, until, [this] { return stop_; })) return;
  }
}

}  // namespace trousseau::envelope
