// Prometheus metrics: a small free-function API for the layers that count things (KMS adapters,
// the Vault transport), and scrape-time state for what is better read than counted (token TTL,
// key version, health). No civetweb and no prometheus-cpp types here: the lower layers depend on
// this header only. Every label value is bounded: unknown values become "other".
//
// Names and labels are agreed in docs/metrics.md; change them only together with that file.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace trousseau::metrics {

// ---- KMS gRPC adapters -------------------------------------------------------------------------
// One finished call: api "v2"|"v1beta1", method "Status"|"Encrypt"|"Decrypt"|"Version", code a
// gRPC code name ("OK", "INVALID_ARGUMENT", ...).
void ObserveKms(std::string_view api, std::string_view method, std::string_view code,
                double seconds);

// Counts a call in trousseau_kms_in_flight_requests while it lives.
class KmsInFlight {
 public:
  KmsInFlight(std::string_view api, std::string_view method);
  ~KmsInFlight();
  KmsInFlight(const KmsInFlight&) = delete;
  KmsInFlight& operator=(const KmsInFlight&) = delete;

 private:
  void* gauge_;  // prometheus::Gauge*, owned by the registry
};

// Bounded concurrency (kms::InFlightLimit): the configured limit of a method, as
// trousseau_kms_max_in_flight{method}, and each call it refused, in trousseau_kms_shed_total.
// Setting the limit also creates the method's shed counter at 0.
void SetKmsMaxInFlight(std::string_view method, uint32_t max);
void KmsShed(std::string_view method);

// ---- Vault transport ---------------------------------------------------------------------------
// The configured Vault addresses: the only values the `node` label takes (others: "other").
void SetVaultNodes(const std::vector<std::string>& nodes);
// One attempt against one node. `http_status` 0 means no HTTP answer (connect, TLS, timeout).
// `path` is the request path; only its endpoint class becomes a label, never the path itself.
void ObserveVault(std::string_view path, std::string_view node, long http_status, double seconds);
void VaultFailover();
// Counts a request in trousseau_vault_requests_waiting while it waits for one of the transport's
// slots for concurrent Vault requests (vault::CurlTransport::kMaxInFlight), summed over transports.
class VaultRequestWaiting {
 public:
  VaultRequestWaiting();
  ~VaultRequestWaiting();
  VaultRequestWaiting(const VaultRequestWaiting&) = delete;
  VaultRequestWaiting& operator=(const VaultRequestWaiting&) = delete;
};
void VaultRedirectRefused();
void VaultRedirectFollowed();

// ---- coalescing and batching (envelope/coalescer, envelope/batcher) ---------------------------
// One Transit call made by the batcher: op "encrypt"|"decrypt", items it carried (1 = alone).
void ObserveVaultBatch(std::string_view op, size_t items);
// A Decrypt answered by an identical call already in flight (no Vault call of its own).
void KmsCoalesced();

// The bounded classification behind the labels (exposed for tests).
std::string_view VaultEndpointClass(std::string_view path);
std::string_view StatusClass(long http_status);
std::string_view BoundedApi(std::string_view api);
std::string_view BoundedMethod(std::string_view method);
std::string_view BoundedCode(std::string_view code);

// ---- state read at scrape time -----------------------------------------------------------------
struct RuntimeState {
  // Token
  double token_ttl_seconds = -1;  // remaining TTL; -1 unknown; 0 a token without expiry counts as -1
  uint64_t logins_success = 0, logins_failure = 0;
  uint64_t renewals_success = 0, renewals_failure = 0;
  // Transit key and health
  int64_t key_version = 0;
  std::string key_id;                    // empty before the first successful check
  double last_success_age_seconds = -1;  // -1: never
  bool healthy = false;
  uint64_t key_rollbacks = 0;        // docs/rollback.md
  bool key_rollback_active = false;
  // vault.secondary (docs/secondary.md); the families exist only when configured
  bool secondary_configured = false;
  bool secondary_up = false, primary_up = false;
  int64_t secondary_key_version = 0;
  uint64_t secondary_unwrapped = 0;  // seeds wrapped by the primary only (best_effort)
  uint64_t secondary_fallbacks = 0;  // Decrypts answered from the secondary's copy
  // state.file (docs/rollback.md); the family exists only when configured
  bool state_file_configured = false;
  uint64_t state_file_write_failures = 0;  // writes that failed (the mark kept in memory only)
};
using StateProvider = std::function<RuntimeState()>;
// Set once by main() before the listener starts; read on every scrape.
void SetStateProvider(StateProvider provider);
// trousseau_audit_records_dropped_total's source; until set the counter reads 0.
void SetAuditDroppedSource(std::function<uint64_t()> source);
// trousseau_build_info's labels. tls_library: e.g. "OpenSSL 3.0.17".
void SetBuildInfo(std::string_view version, std::string_view revision, std::string_view tls_library);
// "OpenSSL 3.0.17 1 Jul 2025" -> "OpenSSL 3.0.17".
std::string ShortTlsLibraryName(std::string_view openssl_version);

// The whole exposition, Prometheus text format 0.0.4.
std::string Exposition();

}  // namespace trousseau::metrics
