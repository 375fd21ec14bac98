// The one Config value: loaded and fully validated before anything starts.
// The YAML schema is documented in docs/configuration.md; keep them in step.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace trousseau::config {

enum class AuthMethod { kToken, kAppRole, kCert, kJwt, kKubernetes };
enum class LogLevel { kDebug, kInfo, kWarn, kError };
enum class SeccompMode { kEnforce, kLog, kDisabled };

struct SocketConfig {
  std::string path = "/var/run/kmsplugin/trousseau.sock";
  uint32_t mode = 0600;           // 0600 or 0660
  std::optional<uint32_t> gid;    // resolved from `group`; required for 0660
};

struct TlsConfig {
  std::string ca_file;            // required
  std::string client_cert_file;   // optional (with client_key_file)
  std::string client_key_file;
  std::vector<std::string> spki_pins;  // each "sha256//<base64>"
  std::string server_name;        // optional
};

struct AuthConfig {
  AuthMethod method = AuthMethod::kToken;
  std::string mount;              // auth mount path; default per method ("approle", "cert", ...)
  std::string token_file;         // token
  bool renew_token = true;        // token: renew-self the file's token at ~2/3 of its TTL
  std::string role_id_file;       // approle
  std::string secret_id_file;     // approle
  std::string role;               // jwt, kubernetes
  std::string jwt_file;           // jwt, kubernetes
  std::string cert_role;          // cert: the `name` sent to auth/cert/login (optional)
};

struct VaultConfig {
  std::vector<std::string> addresses;  // https:// only, no trailing slash, no path
  std::string namespace_;
  std::string transit_mount = "transit";
  std::string transit_key;
  TlsConfig tls;
  AuthConfig auth;
  std::chrono::milliseconds connect_timeout{2000};
  std::chrono::milliseconds request_timeout{5000};
  uint64_t max_response_bytes = 1 << 20;
};

// vault.secondary: a second, independent Vault cluster whose Transit key wraps every seed too
// (docs/secondary.md). Parsed by the same rules as `vault`.
enum class SecondaryPolicy { kRequired, kBestEffort };
struct SecondaryConfig {
  VaultConfig vault;
  SecondaryPolicy policy = SecondaryPolicy::kRequired;  // vault.secondary.policy (required key)
  bool secondary_first = false;  // vault.secondary.decrypt_order: secondary_first
};

struct StatusConfig {
  // One Vault request a minute when idle (docs/performance.md, "Idle Vault load").
  std::chrono::milliseconds refresh_period{60000};
  std::chrono::milliseconds stale_after{180000};
};

// The HTTP listener for probes and metrics (docs/metrics.md). Disabled when `listen` is "" or "off".
struct HttpConfig {
  bool enabled = true;
  std::string listen = "127.0.0.1:8787";  // as civetweb takes it: "IPv4:port" or "[IPv6]:port"
  std::string host = "127.0.0.1";         // without brackets
  uint16_t port = 8787;
  bool loopback = true;                   // false: reachable from other hosts (main warns)
};

// limits.max_in_flight: Encrypt/Decrypt calls that may run at once; more are refused with
// RESOURCE_EXHAUSTED (kms/services.h). Defaults equal kms::CallLimits' (docs/configuration.md).
struct LimitsConfig {
  uint64_t max_in_flight_encrypt = 32;
  uint64_t max_in_flight_decrypt = 64;
};

// binding: cluster binding of wrapped seeds (docs/binding.md, docs/formats.md). Off while
// cluster_id is empty.
struct BindingConfig {
  std::string cluster_id;  // 1..128 of [A-Za-z0-9._:-]
  bool write = true;       // false: read bound seeds, write unbound ones (rolling back)
  bool strict = false;     // refuse unbound seeds and KMS v1beta1; requires cluster_id
};

// performance.*: Vault call coalescing and batching (envelope/coalescer.h, envelope/batcher.h).
struct PerformanceConfig {
  bool coalesce_decrypts = true;             // single-flight for identical Decrypts in flight
  uint64_t batch_max_items = 32;             // items per Transit batch_input call; 1 disables
  std::chrono::microseconds batch_max_wait{200};  // how long a batch waits for company
  // The kms-status thread (Status/Version, kms/status_loop.h) under SCHED_FIFO at this priority,
  // set at start while privileged; 0: the normal scheduler (docs/performance.md, change 15).
  uint64_t status_thread_realtime_priority = 1;
  // Encrypt/Decrypt threads kept waiting for calls once a burst is over (kms/server_tuning.h):
  // below it, calls reuse threads; above it, a thread is made per call and ends after it.
  // More keeps a restart burst from paying for thread churn, at ~24 KiB of RSS per kept thread
  // (docs/performance.md, change 20).
  uint64_t max_idle_threads = 16;
};

// state: the key rollback high-water mark kept across restarts (docs/rollback.md). Empty: memory only.
struct StateConfig {
  std::string file;  // absolute path; its directory must belong to privileges.user
};

struct PrivilegesConfig {
  uint32_t uid = 65532;
  uint32_t gid = 65532;
};

struct Config {
  SocketConfig socket;
  VaultConfig vault;
  std::optional<SecondaryConfig> secondary;  // vault.secondary; absent: one Vault cluster
  StatusConfig status;
  LimitsConfig limits;
  BindingConfig binding;
  LogLevel log_level = LogLevel::kInfo;
  uint64_t log_queue_lines = 4096;  // log.queue_lines: lines buffered before new ones are dropped
  PrivilegesConfig privileges;
  HttpConfig http;
  SeccompMode seccomp = SeccompMode::kEnforce;
  bool wipe_freed_memory = true;  // hygiene.wipe_freed_memory: wipe every block the process frees
  PerformanceConfig performance;
  StateConfig state;
};

// Parses an `http.listen` value ("127.0.0.1:8787", "[::1]:8787", "" or "off").
absl::StatusOr<HttpConfig> ParseHttpListen(const std::string& value);

// Parses and validates YAML text. On error the status message is one line that names the
// dotted key (e.g. "vault.tls.ca_file") and what is wrong with it.
absl::StatusOr<Config> ParseConfig(const std::string& yaml_text);

// Reads the file, then ParseConfig. The message names the file on I/O errors.
absl::StatusOr<Config> LoadConfigFile(const std::string& path);

// "15s", "500ms", "2m", "1h", "1m30s" -> milliseconds. Rejects negatives, empty, unknown units.
absl::StatusOr<std::chrono::milliseconds> ParseDuration(const std::string& text);

// ParseDuration plus a last "us" (microseconds) part: "200us", "1ms500us", "2ms" -> microseconds.
absl::StatusOr<std::chrono::microseconds> ParseFineDuration(const std::string& text);

}  // namespace trousseau::config
