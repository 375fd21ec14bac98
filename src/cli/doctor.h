// `trousseau doctor`: a preflight an operator runs on a node before pointing kube-apiserver at
// the plugin. Every check yields one line (✓ ok, ! warning, ✗ failure with a fix hint).
//
// The checks are pure functions over parsed inputs (a stat result, a Vault JSON answer, an
// EncryptionConfiguration document) so that unit tests cover every verdict; RunDoctor() wires
// them to the real files and to Vault through the same CurlTransport and TLS code the plugin
// uses. docs/doctor.md lists every check, its fix and the exit codes; keep them in step.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <ctime>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "nlohmann/json.hpp"
#include "vault/http_transport.h"
#include "vault/token_source.h"

namespace trousseau::cli::doctor {

enum class Result { kOk, kWarn, kFail };

struct Check {
  std::string name;
  Result result = Result::kOk;
  std::string detail;
  std::string fix;  // what to do; always set for kFail, optional for kWarn
};

Check Ok(std::string name, std::string detail);
Check Warn(std::string name, std::string detail, std::string fix = "");
Check Fail(std::string name, std::string detail, std::string fix);

// Exit codes (documented in docs/doctor.md).
constexpr int kExitOk = 0;        // every check passed
constexpr int kExitFailed = 1;    // at least one ✗
constexpr int kExitWarnings = 2;  // no ✗, at least one !
constexpr int kExitUsage = 64;    // bad command line (EX_USAGE); no check ran

int ExitCode(const std::vector<Check>& checks);
// One line per check, a "    fix: ..." line under each ✗ (and under a ! that has a fix), then
// a summary line.
std::string FormatText(const std::vector<Check>& checks);
// A JSON array of {"name","result":"ok|warn|fail","detail","fix"}; fix is "" when there is none.
std::string FormatJson(const std::vector<Check>& checks);
const char* ResultName(Result r);

// ---- files -------------------------------------------------------------------------------------

// Who the plugin runs as after start: privileges.uid/gid when started as root, else itself.
struct RuntimeIdentity {
  uid_t uid = 0;
  gid_t gid = 0;
  bool starts_as_root = false;  // binds the socket and reads the TLS files before dropping
};

enum class FileKind {
  kPublic,      // CA bundle, client certificate: world-readable is fine; must not be writable
  kCredential,  // role_id: must be readable; group/other readable is a warning
  kSecret,      // client key, token, secret_id, JWT: group/other readable is a failure
};

struct NamedFile {
  std::string key;   // dotted config key, e.g. "vault.tls.ca_file"
  std::string path;
  FileKind kind = FileKind::kPublic;
};

// The files a config names, with their kinds: the primary's, then vault.secondary's (keys
// "vault.secondary.tls.ca_file", ...).
std::vector<NamedFile> FilesOf(const config::Config& cfg);

// Which Vault cluster a check is about: the primary (`vault`) or `vault.secondary`
// (docs/secondary.md). A secondary's checks are named "secondary vault <address> ..." so that
// a failure says which cluster and where; its fixes name the vault.secondary.* keys.
struct Cluster {
  const config::VaultConfig* vault = nullptr;
  bool secondary = false;

  static Cluster Primary(const config::Config& cfg) { return {&cfg.vault, false}; }
  static Cluster Secondary(const config::SecondaryConfig& sc) { return {&sc.vault, true}; }
  // "vault" or "vault.secondary": the config section, for fix hints.
  std::string Section() const { return secondary ? "vault.secondary" : "vault"; }
  // A cluster-wide check: "vault login" stays as it is for the primary; the secondary's is
  // "secondary vault https://b:8200 login" (its addresses, comma-separated).
  std::string ApiName(const std::string& primary_name) const;
  // A per-node check: "vault <node> tls" or "secondary vault <node> tls".
  std::string NodeName(const std::string& node, const std::string& what) const;
};

// The permission bits that apply to `who` for a file owned by owner/group: 0 to 7 (r=4, w=2, x=1).
// root (uid 0) is treated like any other uid: the plugin drops its capabilities.
unsigned AccessFor(const struct stat& st, const RuntimeIdentity& who);

// Mode, owner and readability of one file (and traversal of its directories) for `who`.
Check CheckFile(const NamedFile& file, const RuntimeIdentity& who);

// The socket's directory: exists (else a warning: serve creates it), a directory, writable by
// `who` (so the socket can be removed at shutdown), not group/other writable without sticky.
Check CheckSocketDir(const std::string& socket_path, const RuntimeIdentity& who);

// The kubelet seccomp profile at `path` against `expected` (this binary's seccomp-profile).
Check CheckSeccompProfile(const std::string& path, const std::string& expected);

// state.file (docs/rollback.md): the same checks `serve` makes at start (directory owned by
// `who.uid` and writable by it, not group/other writable; the file, if any, 0600, owned by
// `who.uid`, well-formed). Fail when serve would refuse to start.
Check CheckStateFile(const std::string& path, const RuntimeIdentity& who);

// ---- Vault answers -----------------------------------------------------------------------------

// `GET /v1/sys/health?...code=200` body for one node: initialised, sealed (✗), standby (!).
Check EvaluateHealth(const std::string& node, const nlohmann::json& health,
                     const std::string& section = "vault");

// Clock skew from the Date header ("Tue, 01 Dec 2026 20:57:38 GMT"), or server_time_utc from
// the health body as a fallback. `now` is the local time when the answer arrived.
// |skew| > 5 s: !, > 60 s: ✗; no usable date: !.
Check EvaluateClock(const std::string& node, const std::string& date_header,
                    std::optional<int64_t> server_time_utc, std::time_t now);
// RFC 7231 IMF-fixdate -> seconds since the epoch, or nullopt.
std::optional<std::time_t> ParseHttpDate(const std::string& text);

// lookup-self data: ttl, renewable (and whether the plugin re-logs-in by itself). `section`
// ("vault" or "vault.secondary") is the config section the fix hints name.
Check EvaluateToken(int64_t ttl_seconds, bool renewable, const config::AuthConfig& auth,
                    const std::string& section = "vault");

// `GET <mount>/keys/<key>` data: type, deletion_allowed, exportable, allow_plaintext_backup,
// min_decryption_version vs latest_version.
std::vector<Check> EvaluateKey(const std::string& mount, const std::string& key,
                               const nlohmann::json& data, const std::string& section = "vault");

// capabilities-self answer: path -> capabilities. One check per path.
using CapabilityMap = std::map<std::string, std::vector<std::string>>;
std::vector<Check> EvaluateCapabilities(const std::string& mount, const std::string& key,
                                        const CapabilityMap& caps);

// ---- kube-apiserver EncryptionConfiguration ----------------------------------------------------

std::vector<Check> CheckEncryptionConfig(const std::string& yaml_text,
                                         const std::string& socket_path);

// ---- wiring ------------------------------------------------------------------------------------

// Login, token, key and capability checks through `http` (which fails over across the
// configured addresses) with `tokens`. Each call is bounded by the cluster's request timeout.
std::vector<Check> CheckVaultApi(const Cluster& cluster, vault::HttpTransport& http,
                                 vault::TokenSource& tokens);
// The primary's (cfg.vault).
std::vector<Check> CheckVaultApi(const config::Config& cfg, vault::HttpTransport& http,
                                 vault::TokenSource& tokens);

// Health and clock of one node through a transport that talks to that node only.
std::vector<Check> CheckNodeHealth(const Cluster& cluster, const std::string& node,
                                   vault::HttpTransport& http, bool* usable);
std::vector<Check> CheckNodeHealth(const config::Config& cfg, const std::string& node,
                                   vault::HttpTransport& http, bool* usable);

struct Options {
  std::string config_path;
  std::string encryption_config_path;
  std::string seccomp_profile_path = "/var/lib/kubelet/seccomp/profiles/trousseau.json";
  bool json = false;
};

// All checks, in order. Never throws; a check that cannot run is a ✗ naming why.
std::vector<Check> RunAll(const Options& opts);

// `trousseau doctor ARGS...` (args after "doctor"). Prints and returns the exit code.
int Main(const std::vector<std::string>& args);

}  // namespace trousseau::cli::doctor
