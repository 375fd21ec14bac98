#include "envelope/redundant_key_service.h"

#include <system_error>
#include <thread>

#include "common/status.h"
#include "observability/log.h"
#include "vault/ciphertext.h"

namespace trousseau::envelope {

namespace {

bool Contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

// What the caller's deadline leaves, split: `num/den` of it from now.
Deadline Part(Clock& clock, Deadline deadline, int num, int den) {
  const auto now = clock.Now();
  if (deadline <= now) return deadline;
  return now + (deadline - now) * num / den;
}

}  // namespace

std::string SecondaryAnnotationV1(std::string_view key_id, std::string_view ciphertext) {
  return std::to_string(kSecondaryFormatVersion) + ";" + std::string(key_id) + ";" +
         std::string(ciphertext);
}

absl::StatusOr<ParsedSecondary> ParseSecondaryAnnotation(std::string_view value) {
  const std::string name(kSecondaryAnnotation);
  const size_t a = value.find(';');
  const std::string_view version = value.substr(0, a);
  if (a == std::string_view::npos || version.empty() || version.size() > 9) {
    return absl::InvalidArgumentError("annotation " + name +
                                      " is malformed: expected \"<version>;<key_id>;<ciphertext>\"");
  }
  if (version != "1") {
    std::string shown;
    for (char c : version) shown.push_back(c >= 0x20 && c < 0x7f ? c : '?');
    return absl::InvalidArgumentError("annotation " + name + " has format version \"" + shown +
                                      "\"; this Trousseau reads version 1 only (written by a newer "
                                      "Trousseau?)");
  }
  const size_t b = value.find(';', a + 1);
  if (b == std::string_view::npos) {
    return absl::InvalidArgumentError("annotation " + name + " (v1) is malformed: no ciphertext");
  }
  ParsedSecondary p;
  p.key_id = std::string(value.substr(a + 1, b - a - 1));
  p.ciphertext = std::string(value.substr(b + 1));
  if (p.key_id.empty() || p.key_id.size() > kMaxKeyIdBytes) {
    return absl::InvalidArgumentError("annotation " + name + " (v1) has an empty or oversized key_id");
  }
  if (auto v = vault::ParseCiphertextVersion(p.ciphertext); !v.ok()) {
    return absl::InvalidArgumentError("annotation " + name + " (v1): " +
                                      std::string(v.status().message()));
  }
  return p;
}

bool PrimaryLost(const absl::Status& st) {
  switch (st.code()) {
    case absl::StatusCode::kUnavailable:       // transport, TLS, 5xx, sealed, 429, no leader
    case absl::StatusCode::kDeadlineExceeded:  // no answer in time
      return true;
    case absl::StatusCode::kInternal:
      // HTTP 404 on the Transit path: a fresh primary without the mount (TransitClient words it
      // "not found: check vault.transit.mount ...").
      return Contains(std::string(st.message()), "not found: check vault.transit.mount");
    case absl::StatusCode::kInvalidArgument:
      // A fresh primary with the mount but without the key answers 400 "encryption key not
      // found" (OpenBao/Vault transit). Any other 400 is about the ciphertext: no fallback.
      return Contains(std::string(st.message()), "encryption key not found");
    default:
      // PERMISSION_DENIED (token/policy), FAILED_PRECONDITION (min_decryption_version, binding
      // config), RESOURCE_EXHAUSTED, ...: the primary answered; an operator must see it.
      return false;
  }
}

RedundantKeyService::RedundantKeyService(TransitKeyService& primary, TransitKeyService& secondary,
                                         Clock& clock, RedundantKeyServiceOptions options)
    : primary_(primary), secondary_(secondary), clock_(clock), opts_(std::move(options)) {}

bool RedundantKeyService::SecondaryUsable(std::string* why) const {
  const HealthSnapshot s = secondary_.Health();
  if (s.healthz != "ok" || s.key_id.empty()) {
    if (why) *why = s.healthz == "ok" ? "secondary transit key not known yet" : s.healthz;
    return false;
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (!failed_at_) return true;
  // Healed once the secondary's own background check succeeded after the failure.
  const KeyState k = secondary_.State();
  if (k.since_last_ok && clock_.Now() - *k.since_last_ok > *failed_at_) return true;
  if (why) *why = failed_why_;
  return false;
}

void RedundantKeyService::MarkSecondaryFailed(const absl::Status& st) {
  secondary_failures_.fetch_add(1);
  std::lock_guard<std::mutex> lock(mu_);
  if (!failed_at_) {
    log::Warn("secondary", "secondary Vault failed to wrap a seed",
              {{"secondary", opts_.secondary_name}, {"error", std::string(st.message())}});
  }
  failed_at_ = clock_.Now();
  failed_why_ = "wrapping on the secondary failed: " + std::string(st.message());
}

std::string RedundantKeyService::CombinedKeyId(std::string_view primary,
                                               std::string_view secondary) const {
  return std::string(primary) + "|" + std::string(secondary);
}

absl::StatusOr<EncryptResult> RedundantKeyService::Encrypt(std::string_view plaintext,
                                                           Deadline deadline) {
  RETURN_IF_ERROR(CheckPlaintext(plaintext));
  std::string why;
  const bool usable = SecondaryUsable(&why);
  if (!usable && opts_.policy == SecondaryPolicy::kRequired) {
    return absl::UnavailableError("secondary Vault " + opts_.secondary_name +
                                  " cannot wrap the seed (" + why +
                                  ") and vault.secondary.policy is required: Encrypt refused");
  }
  // best_effort with the primary's check failing (what Status reports as "unwrapped|..."): do
  // not wait for it; its answer could be a 403 as well (a fresh primary without the key asks for
  // `create` on encrypt), which is not worth a try.
  if (usable && opts_.policy == SecondaryPolicy::kBestEffort && PrimaryDown()) {
    auto only = secondary_.Encrypt(plaintext, deadline);
    if (!only.ok()) {
      MarkSecondaryFailed(only.status());
      return absl::UnavailableError("primary Vault unavailable and the secondary " +
                                    opts_.secondary_name + " failed to wrap the seed: " +
                                    std::string(only.status().message()));
    }
    return SecondaryOnly(std::move(*only));
  }
  std::optional<absl::StatusOr<EncryptResult>> second;
  std::thread worker;
  if (usable) {
    // best_effort keeps a third of the time for the primary-only answer.
    const Deadline d2 = opts_.policy == SecondaryPolicy::kBestEffort ? Part(clock_, deadline, 2, 3)
                                                                     : deadline;
    try {
      // d2 by value: it goes out of scope at the end of this block, before the join.
      worker = std::thread(
          [this, &second, plaintext, d2] { second = secondary_.Encrypt(plaintext, d2); });
    } catch (const std::system_error&) {
      second = secondary_.Encrypt(plaintext, d2);  // no thread to spare: one after the other
    }
  }
  absl::StatusOr<EncryptResult> first = primary_.Encrypt(plaintext, deadline);
  if (worker.joinable()) worker.join();
  if (!first.ok() && usable && second->ok() && opts_.policy == SecondaryPolicy::kBestEffort &&
      PrimaryLost(first.status())) {
    return SecondaryOnly(std::move(**second));
  }
  if (!first.ok()) return first.status();
  EncryptResult out = std::move(*first);
  if (usable && second->ok()) {
    out.annotations[std::string(kSecondaryAnnotation)] =
        SecondaryAnnotationV1((*second)->key_id, (*second)->ciphertext);
    out.key_id = CombinedKeyId(out.key_id, (*second)->key_id);
    return out;
  }
  if (usable) {
    MarkSecondaryFailed(second->status());
    if (opts_.policy == SecondaryPolicy::kRequired) {
      return absl::UnavailableError("secondary Vault " + opts_.secondary_name +
                                    " failed to wrap the seed and vault.secondary.policy is "
                                    "required: Encrypt refused: " +
                                    std::string(second->status().message()));
    }
  }
  // best_effort: the primary alone; the key_id says so (and differs from the wrapped one, so
  // kube-apiserver makes a new seed once the secondary is back: the heal).
  unwrapped_.fetch_add(1);
  out.key_id = CombinedKeyId(out.key_id, kUnwrappedMark);
  return out;
}

bool RedundantKeyService::PrimaryDown() const {
  const KeyState k = primary_.State();
  return !k.last_check_ok && !k.rollback_active && k.latest_version > 0 &&
         Contains(primary_.Health().healthz, "Vault check");
}

EncryptResult RedundantKeyService::SecondaryOnly(EncryptResult out) {
  // best_effort with the primary gone: a secondary-only record (docs/formats.md section 6), the
  // secondary's ciphertext as the KMS ciphertext and as the copy, so that a kube-apiserver that
  // starts now (it needs one Encrypt before it reads anything) keeps working.
  out.annotations[std::string(kSecondaryAnnotation)] =
      SecondaryAnnotationV1(out.key_id, out.ciphertext);
  out.key_id = CombinedKeyId(kUnwrappedMark, out.key_id);
  unwrapped_.fetch_add(1);
  return out;
}

absl::StatusOr<DecryptResult> RedundantKeyService::FromSecondary(
    std::string_view value, std::string_view /*key_id*/,
    const std::map<std::string, std::string>& annotations, Deadline deadline) {
  ASSIGN_OR_RETURN(ParsedSecondary p, ParseSecondaryAnnotation(value));
  // The same annotations (the binding one among them): the secondary rebuilds its own AAD.
  return secondary_.Decrypt(p.ciphertext, p.key_id, annotations, deadline);
}

absl::StatusOr<DecryptResult> RedundantKeyService::Decrypt(
    std::string_view ciphertext, std::string_view key_id,
    const std::map<std::string, std::string>& annotations, Deadline deadline) {
  RETURN_IF_ERROR(CheckDecryptInput(ciphertext, key_id, annotations));
  const auto it = annotations.find(std::string(kSecondaryAnnotation));
  if (it == annotations.end()) {
    // Written before the secondary was configured, or while it was down (best_effort), or by
    // KMS v1beta1: the primary is the only copy.
    auto r = primary_.Decrypt(ciphertext, key_id, annotations, deadline);
    if (!r.ok() && PrimaryLost(r.status())) {
      return absl::Status(r.status().code(),
                          std::string(r.status().message()) + " (no " +
                              std::string(kSecondaryAnnotation) +
                              " copy to fall back to: the seed was wrapped by the primary only)");
    }
    return r;
  }
  // A secondary-only record (written while the primary was gone, best_effort): the copy is the
  // KMS ciphertext itself; only the secondary can open it.
  if (auto only = ParseSecondaryAnnotation(it->second); only.ok() && only->ciphertext == ciphertext) {
    return secondary_.Decrypt(only->ciphertext, only->key_id, annotations, deadline);
  }
  if (opts_.secondary_first) {
    auto s = FromSecondary(it->second, key_id, annotations, Part(clock_, deadline, 1, 2));
    if (s.ok() || !PrimaryLost(s.status())) return s;
    return primary_.Decrypt(ciphertext, key_id, annotations, deadline);
  }
  // Half the time for the primary, so that a primary that does not answer leaves the rest to
  // the secondary.
  auto r = primary_.Decrypt(ciphertext, key_id, annotations, Part(clock_, deadline, 1, 2));
  if (r.ok()) {
    if (falling_back_.exchange(false)) {
      log::Info("secondary", "primary Vault answers Decrypt again", {});
    }
    return r;
  }
  // A primary whose key was replaced or rolled back (docs/rollback.md) cannot open older seeds:
  // its "bad ciphertext" is then the key's loss, not the ciphertext's fault.
  const bool replaced = primary_.State().rollback_active &&
                        r.status().code() == absl::StatusCode::kInvalidArgument;
  if (!PrimaryLost(r.status()) && !replaced) return r;
  auto s = FromSecondary(it->second, key_id, annotations, deadline);
  if (!s.ok()) {
    return absl::Status(s.status().code() == absl::StatusCode::kInvalidArgument
                            ? absl::StatusCode::kInvalidArgument
                            : r.status().code(),
                        "primary: " + std::string(r.status().message()) +
                            "; fallback to the secondary copy failed: " +
                            std::string(s.status().message()));
  }
  fallbacks_.fetch_add(1);
  if (!falling_back_.exchange(true)) {
    log::Warn("secondary", "Decrypt answered from the secondary Vault's copy: primary unavailable",
              {{"secondary", opts_.secondary_name}, {"error", std::string(r.status().message())}});
  }
  return s;
}

HealthSnapshot RedundantKeyService::Health() const {
  const HealthSnapshot p = primary_.Health();
  const HealthSnapshot s = secondary_.Health();
  std::string why;
  const bool secondary_up = SecondaryUsable(&why);
  HealthSnapshot h;
  if (p.key_id.empty()) {
    h.healthz = p.healthz == "ok" ? "primary transit key not known yet" : "primary Vault: " + p.healthz;
    return h;
  }
  // The key_id the next Encrypt will return when nothing changes in between.
  h.key_id = CombinedKeyId(p.key_id, secondary_up ? s.key_id : std::string(kUnwrappedMark));
  if (!secondary_up && opts_.policy == SecondaryPolicy::kRequired) {
    if (!s.key_id.empty()) h.key_id = CombinedKeyId(p.key_id, s.key_id);
    h.healthz = "secondary Vault " + opts_.secondary_name + ": " + why +
                " (vault.secondary.policy required: Encrypt refused)";
    return h;
  }
  if (!secondary_up) {
    h.detail = "secondary Vault " + opts_.secondary_name + " unavailable, new seeds are wrapped "
               "by the primary only (vault.secondary.policy best_effort): " + why;
  }
  if (p.healthz == "ok") {
    h.healthz = "ok";
    return h;
  }
  // The primary's check fails (not a rollback, not a wrong key type): while the secondary is up
  // Decrypt falls back to it and the current seed keeps serving writes, so Status stays "ok"
  // (a new key_id would make kube-apiserver call Encrypt, which needs the primary).
  if (PrimaryDown() && secondary_up) {
    h.healthz = "ok";
    if (opts_.policy == SecondaryPolicy::kBestEffort) {
      // New seeds are wrapped by the secondary alone; the key_id says so, and changes back
      // when the primary returns (a new seed wrapped by both: the heal).
      h.key_id = CombinedKeyId(kUnwrappedMark, s.key_id);
      h.detail = "primary Vault unavailable, Decrypt falls back to the secondary " +
                 opts_.secondary_name + " and new seeds are wrapped by the secondary only "
                 "(vault.secondary.policy best_effort): " + p.healthz;
    } else {
      h.key_id = CombinedKeyId(p.key_id, s.key_id);
      h.detail = "primary Vault unavailable, Decrypt falls back to the secondary " +
                 opts_.secondary_name + "; Encrypt (a new seed) needs the primary "
                 "(vault.secondary.policy required): " + p.healthz;
    }
    return h;
  }
  h.healthz = "primary Vault: " + p.healthz;
  return h;
}

SecondaryState RedundantKeyService::State() const {
  SecondaryState st;
  st.secondary_up = SecondaryUsable(nullptr);
  st.primary_up = primary_.State().last_check_ok;
  st.secondary_version = secondary_.State().latest_version;
  st.unwrapped = unwrapped_.load();
  st.fallbacks = fallbacks_.load();
  st.secondary_encrypt_failures = secondary_failures_.load();
  return st;
}

}  // namespace trousseau::envelope
