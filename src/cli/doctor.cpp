#include "cli/doctor.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <set>
#include <sstream>

#include "common/clock.h"
#include "envelope/state_file.h"
#include "hardening/privileges.h"
#include "hardening/seccomp.h"
#include "hardening/secret_buffer.h"
#include "hardening/secret_file.h"
#include "observability/log.h"
#include "vault/auth/factory.h"
#include "vault/auth/token_calls.h"
#include "vault/curl_transport.h"
#include "vault/secret_json.h"
#include "vault/tls_material.h"

namespace trousseau::cli::doctor {

using nlohmann::json;

Check Ok(std::string name, std::string detail) {
  return {std::move(name), Result::kOk, std::move(detail), ""};
}
Check Warn(std::string name, std::string detail, std::string fix) {
  return {std::move(name), Result::kWarn, std::move(detail), std::move(fix)};
}
Check Fail(std::string name, std::string detail, std::string fix) {
  return {std::move(name), Result::kFail, std::move(detail), std::move(fix)};
}

namespace {

std::string Octal(unsigned mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", mode & 07777);
  return buf;
}

std::string Seconds(int64_t s) {
  if (s < 0) return std::to_string(s) + "s";
  std::string out;
  const int64_t d = s / 86400, h = (s % 86400) / 3600, m = (s % 3600) / 60, sec = s % 60;
  if (d) out += std::to_string(d) + "d";
  if (h) out += std::to_string(h) + "h";
  if (m) out += std::to_string(m) + "m";
  if (sec || out.empty()) out += std::to_string(sec) + "s";
  return out;
}

std::string Join(const std::vector<std::string>& v, const char* sep = ", ") {
  std::string out;
  for (const auto& s : v) {
    if (!out.empty()) out += sep;
    out += s;
  }
  return out;
}

std::string DirOf(const std::string& path) {
  const auto p = std::filesystem::path(path).parent_path().string();
  return p.empty() ? "." : p;
}

}  // namespace

// ---- output --------------------------------------------------------------------------------------

const char* ResultName(Result r) {
  switch (r) {
    case Result::kOk: return "ok";
    case Result::kWarn: return "warn";
    case Result::kFail: return "fail";
  }
  return "fail";
}

int ExitCode(const std::vector<Check>& checks) {
  bool warn = false;
  for (const auto& c : checks) {
    if (c.result == Result::kFail) return kExitFailed;
    warn = warn || c.result == Result::kWarn;
  }
  return warn ? kExitWarnings : kExitOk;
}

std::string FormatText(const std::vector<Check>& checks) {
  std::string out;
  size_t ok = 0, warn = 0, fail = 0;
  for (const auto& c : checks) {
    const char* mark = c.result == Result::kOk ? "\u2713" : c.result == Result::kWarn ? "!" : "\u2717";
    out += std::string(mark) + " " + c.name + ": " + c.detail + "\n";
    if (!c.fix.empty() && c.result != Result::kOk) out += "    fix: " + c.fix + "\n";
    (c.result == Result::kOk ? ok : c.result == Result::kWarn ? warn : fail)++;
  }
  const int code = ExitCode(checks);
  out += std::to_string(checks.size()) + " checks: " + std::to_string(ok) + " ok, " +
         std::to_string(warn) + " warning(s), " + std::to_string(fail) + " failed -> " +
         (code == kExitOk ? "ready" : code == kExitWarnings ? "usable, review the warnings"
                                                            : "NOT ready") +
         " (exit " + std::to_string(code) + ")\n";
  return out;
}

std::string FormatJson(const std::vector<Check>& checks) {
  json arr = json::array();
  for (const auto& c : checks) {
    arr.push_back({{"name", c.name}, {"result", ResultName(c.result)}, {"detail", c.detail},
                   {"fix", c.fix}});
  }
  return arr.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

// ---- files ---------------------------------------------------------------------------------------

namespace {

void AddFilesOf(const config::VaultConfig& v, const std::string& section,
                std::vector<NamedFile>& out) {
  const auto& t = v.tls;
  out.push_back({section + ".tls.ca_file", t.ca_file, FileKind::kPublic});
  if (!t.client_cert_file.empty()) {
    out.push_back({section + ".tls.client_cert_file", t.client_cert_file, FileKind::kPublic});
  }
  if (!t.client_key_file.empty()) {
    out.push_back({section + ".tls.client_key_file", t.client_key_file, FileKind::kSecret});
  }
  const auto& a = v.auth;
  if (!a.token_file.empty()) out.push_back({section + ".auth.token_file", a.token_file, FileKind::kSecret});
  if (!a.role_id_file.empty()) {
    out.push_back({section + ".auth.role_id_file", a.role_id_file, FileKind::kCredential});
  }
  if (!a.secret_id_file.empty()) {
    out.push_back({section + ".auth.secret_id_file", a.secret_id_file, FileKind::kSecret});
  }
  if (!a.jwt_file.empty()) out.push_back({section + ".auth.jwt_file", a.jwt_file, FileKind::kSecret});
}

}  // namespace

std::vector<NamedFile> FilesOf(const config::Config& cfg) {
  std::vector<NamedFile> out;
  AddFilesOf(cfg.vault, "vault", out);
  if (cfg.secondary) AddFilesOf(cfg.secondary->vault, "vault.secondary", out);
  return out;
}

std::string Cluster::ApiName(const std::string& primary_name) const {
  if (!secondary) return primary_name;
  std::string rest = primary_name;
  if (rest.rfind("vault ", 0) == 0) rest = rest.substr(6);
  return "secondary vault " + Join(vault->addresses, ",") + " " + rest;
}

std::string Cluster::NodeName(const std::string& node, const std::string& what) const {
  return std::string(secondary ? "secondary " : "") + "vault " + node + " " + what;
}

unsigned AccessFor(const struct stat& st, const RuntimeIdentity& who) {
  if (st.st_uid == who.uid) return (st.st_mode >> 6) & 7;
  if (st.st_gid == who.gid) return (st.st_mode >> 3) & 7;
  return st.st_mode & 7;
}

namespace {

// The first directory above `path` that `who` cannot search, or "".
std::string UnsearchableDir(const std::string& path, const RuntimeIdentity& who) {
  std::filesystem::path p = std::filesystem::absolute(path).parent_path();
  std::vector<std::filesystem::path> chain;
  for (; !p.empty(); p = p.parent_path()) {
    chain.push_back(p);
    if (p == p.root_path()) break;
  }
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
    struct stat st{};
    if (::stat(it->c_str(), &st) != 0) continue;  // the file's own stat reports it
    if ((AccessFor(st, who) & 1) == 0) return it->string();
  }
  return "";
}

}  // namespace

Check CheckFile(const NamedFile& f, const RuntimeIdentity& who) {
  const std::string name = "file " + f.key;
  const std::string ids = std::to_string(who.uid) + ":" + std::to_string(who.gid);
  struct stat st{};
  if (::stat(f.path.c_str(), &st) != 0) {
    const int e = errno;
    return Fail(name, f.path + ": " + std::strerror(e),
                e == ENOENT ? "create the file or correct " + f.key + " in the config"
                            : "make " + f.path + " and its directories accessible to uid " +
                                  std::to_string(who.uid));
  }
  if (!S_ISREG(st.st_mode)) {
    return Fail(name, f.path + " is not a regular file", "point " + f.key + " at a regular file");
  }
  const unsigned mode = st.st_mode & 07777;
  const std::string facts = f.path + " (owner " + std::to_string(st.st_uid) + ":" +
                            std::to_string(st.st_gid) + ", mode " + Octal(mode) + ")";
  if (mode & 022) {
    return Fail(name, facts + " is writable by group or others: they could replace it",
                "chmod go-w " + f.path);
  }
  if (f.kind == FileKind::kSecret && (mode & 077)) {
    return Fail(name, facts + " is readable by group or others; it holds a secret",
                "chmod 0400 " + f.path + " && chown " + ids + " " + f.path);
  }
  // Login credentials are read again after the privilege drop, the TLS files only when they are
  // reloaded after a change (they are read at start, as root when started as root).
  const bool reread = f.key.find(".auth.") != std::string::npos;
  if (const std::string dir = UnsearchableDir(f.path, who); !dir.empty()) {
    const std::string d = facts + ": directory " + dir + " is not searchable by uid " +
                          std::to_string(who.uid);
    const std::string fix = "chmod o+x " + dir + " (or make uid " + std::to_string(who.uid) +
                            " its owner)";
    if (reread || !who.starts_as_root) return Fail(name, d, fix);
    return Warn(name, d + "; read at start as root, but a reload after rotation will fail", fix);
  }
  if ((AccessFor(st, who) & 4) == 0) {
    const std::string d = facts + " is not readable by the runtime uid " + std::to_string(who.uid);
    const std::string fix = "chown " + ids + " " + f.path + " (mode 0400)";
    if (reread || !who.starts_as_root) return Fail(name, d, fix);
    return Warn(name, d + "; read at start as root, but a reload after rotation will fail", fix);
  }
  if (f.kind == FileKind::kCredential && (mode & 077)) {
    return Warn(name, facts + " is readable by group or others", "chmod 0400 " + f.path);
  }
  if (f.kind == FileKind::kSecret && st.st_uid != who.uid && st.st_uid != 0) {
    return Warn(name, facts + " is owned by another uid than the runtime uid " +
                          std::to_string(who.uid) + " or root",
                "chown " + ids + " " + f.path);
  }
  return Ok(name, facts + ", readable by uid " + std::to_string(who.uid));
}

Check CheckSocketDir(const std::string& socket_path, const RuntimeIdentity& who) {
  const std::string dir = DirOf(socket_path);
  const std::string name = "socket directory";
  struct stat st{};
  if (::stat(dir.c_str(), &st) != 0) {
    const int e = errno;
    if (e == ENOENT) {
      return Warn(name, dir + " does not exist; `serve` creates it (mode 0750) at start",
                  "mkdir -m 0750 " + dir + " (or mount the host directory the pod shares with "
                  "kube-apiserver)");
    }
    return Fail(name, dir + ": " + std::strerror(e), "make " + dir + " accessible");
  }
  if (!S_ISDIR(st.st_mode)) {
    return Fail(name, dir + " is not a directory", "correct socket.path in the config");
  }
  const unsigned mode = st.st_mode & 07777;
  const std::string facts = dir + " (owner " + std::to_string(st.st_uid) + ":" +
                            std::to_string(st.st_gid) + ", mode " + Octal(mode) + ")";
  if ((mode & 002) && !(mode & 01000)) {
    return Fail(name, facts + " is writable by everyone: anyone could replace the socket",
                "chmod 0750 " + dir);
  }
  const unsigned acc = AccessFor(st, who);
  if (!who.starts_as_root && (acc & 3) != 3) {
    return Fail(name, facts + ": uid " + std::to_string(who.uid) + " cannot create the socket in it",
                "chown " + std::to_string(who.uid) + " " + dir);
  }
  if ((acc & 3) != 3) {
    return Warn(name, facts + ": after the privilege drop uid " + std::to_string(who.uid) +
                          " cannot remove the socket at shutdown (the next start replaces the "
                          "stale socket)",
                "chown " + std::to_string(who.uid) + ":" + std::to_string(who.gid) + " " + dir);
  }
  if (mode & 020) {
    return Warn(name, facts + " is group-writable: group members could replace the socket",
                "chmod g-w " + dir);
  }
  const std::string sock = std::filesystem::exists(socket_path)
                               ? "; " + socket_path + " exists (a running plugin, or stale)"
                               : "";
  return Ok(name, facts + ", usable by uid " + std::to_string(who.uid) + sock);
}

Check CheckStateFile(const std::string& path, const RuntimeIdentity& who) {
  auto state = envelope::StateFile::Open(path, who.uid);
  if (!state.ok()) {
    return Fail("state file", std::string(state.status().message()),
                "see docs/rollback.md, \"The plugin does not start because of the file\"");
  }
  if ((*state)->size() == 0) {
    return Ok("state file", path + ": no key recorded yet (a first start); its directory is "
                            "usable by uid " + std::to_string(who.uid));
  }
  return Ok("state file", path + ": rollback marks of " + std::to_string((*state)->size()) +
                              " key(s), readable; its directory is usable by uid " +
                              std::to_string(who.uid));
}

Check CheckSeccompProfile(const std::string& path, const std::string& expected) {
  const std::string name = "seccomp profile";
  const std::string fix = "trousseau seccomp-profile > " + path;
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) {
    return Warn(name, path + " does not exist: the pod's seccompProfile (Localhost) cannot load it",
                fix);
  }
  auto text = ReadTextFile(path, 4 << 20);
  if (!text.ok()) return Fail(name, std::string(text.status().message()), fix);
  const json have = json::parse(*text, nullptr, false);
  const json want = json::parse(expected, nullptr, false);
  if (have.is_discarded()) return Fail(name, path + " is not valid JSON", fix);
  if (have != want) {
    return Fail(name, path + " differs from this binary's profile (a stale profile can kill the "
                             "plugin on a syscall the new version needs)",
                fix);
  }
  return Ok(name, path + " matches this binary's profile");
}

// ---- Vault answers -------------------------------------------------------------------------------

Check EvaluateHealth(const std::string& node, const json& h, const std::string& section) {
  const std::string name = "vault " + node + " health";
  if (!h.is_object()) return Fail(name, "malformed sys/health answer", "check that " + node + " is Vault/OpenBao");
  const std::string version = h.value("version", std::string("?"));
  if (!h.value("initialized", true)) {
    return Fail(name, "not initialised (version " + version + ")", "initialise Vault (bao operator init)");
  }
  if (h.value("sealed", false)) {
    return Fail(name, "sealed (version " + version + "): it cannot serve Transit",
                "unseal it (bao operator unseal), or check its auto-unseal");
  }
  if (h.value("standby", false) || h.value("performance_standby", false)) {
    return Warn(name, "standby (version " + version + "): requests are redirected to the active "
                      "node, which must be one of " + section + ".addresses",
                "list every node (active and standbys) in " + section + ".addresses");
  }
  return Ok(name, "active, unsealed (version " + version + ")");
}

std::optional<std::time_t> ParseHttpDate(const std::string& text) {
  struct tm tm{};
  const char* end = ::strptime(text.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (end == nullptr || *end != '\0') return std::nullopt;
  const std::time_t t = ::timegm(&tm);
  if (t == static_cast<std::time_t>(-1)) return std::nullopt;
  return t;
}

Check EvaluateClock(const std::string& node, const std::string& date_header,
                    std::optional<int64_t> server_time_utc, std::time_t now) {
  const std::string name = "vault " + node + " clock";
  std::optional<std::time_t> server;
  std::string source = "Date header";
  if (!date_header.empty()) server = ParseHttpDate(date_header);
  if (!server && server_time_utc) {
    server = static_cast<std::time_t>(*server_time_utc);
    source = "server_time_utc";
  }
  if (!server) {
    return Warn(name, "no usable Date header or server_time_utc: clock skew not checked",
                "compare the clocks by hand (timedatectl on both hosts)");
  }
  const int64_t skew = static_cast<int64_t>(now) - static_cast<int64_t>(*server);
  const int64_t abs_skew = skew < 0 ? -skew : skew;
  const std::string d = std::string("local clock is ") + std::to_string(abs_skew) + " s " +
                        (skew >= 0 ? "ahead of" : "behind") + " Vault (" + source + ")";
  const std::string fix = "synchronise the clocks (chrony/systemd-timesyncd on this node and on "
                          "the Vault hosts): token TTLs and certificate validity depend on them";
  if (abs_skew > 60) return Fail(name, d, fix);
  if (abs_skew > 5) return Warn(name, d, fix);
  return Ok(name, d + ", within 5 s");
}

Check EvaluateToken(int64_t ttl, bool renewable, const config::AuthConfig& auth,
                    const std::string& section) {
  const std::string name = "vault token";
  const bool login = auth.method != config::AuthMethod::kToken;
  const std::string r = renewable ? "renewable" : "not renewable";
  if (ttl == 0) {
    return Warn(name, "the token never expires (no TTL): a leaked copy stays valid for ever",
                "use a periodic token (bao token create -policy=trousseau -period=24h) or a login "
                "method");
  }
  const std::string d = "ttl " + Seconds(ttl) + ", " + r;
  if (login) {
    return Ok(name, d + "; the plugin renews it or logs in again before it expires");
  }
  if (renewable && auth.renew_token) return Ok(name, d + "; the plugin renews it at ~2/3 of its TTL");
  if (ttl < 3600) {
    if (renewable) {
      return Warn(name, d + " but " + section + ".auth.renew is false: it expires in " +
                            Seconds(ttl) + " unless the token file is replaced",
                  "set " + section + ".auth.renew: true, or keep the token file refreshed (Vault Agent)");
    }
    return Warn(name, d + ": the plugin stops working in " + Seconds(ttl) +
                          " unless the token file is replaced",
                "use a renewable periodic token, or keep the token file refreshed (Vault Agent)");
  }
  return Ok(name, d + "; replace the token file before it expires");
}

std::vector<Check> EvaluateKey(const std::string& mount, const std::string& key, const json& data,
                               const std::string& section) {
  const std::string base = "transit key " + mount + "/" + key;
  std::vector<Check> out;
  if (!data.is_object() || !data.contains("type") || !data["type"].is_string() ||
      !data.contains("latest_version") || !data["latest_version"].is_number_integer()) {
    out.push_back(Fail(base, "malformed answer from " + mount + "/keys/" + key + " (no type or latest_version)",
                       "check that " + mount + " is a Transit mount"));
    return out;
  }
  const std::string type = data["type"].get<std::string>();
  if (type == "aes256-gcm96" || type == "chacha20-poly1305") {
    out.push_back(Ok(base + " type", type));
  } else {
    out.push_back(Fail(base + " type",
                       type + " is not fit for wrapping data keys (aes256-gcm96 or chacha20-poly1305)",
                       "create a new key (bao write -f " + mount + "/keys/NEW type=aes256-gcm96), "
                       "point " + section + ".transit.key at it and re-encrypt (docs/rotation.md)"));
  }
  if (data.value("deletion_allowed", false)) {
    out.push_back(Warn(base + " deletion_allowed",
                       "true: anyone with delete on " + mount + "/keys/" + key +
                           " can destroy every Secret wrapped with it",
                       "bao write " + mount + "/keys/" + key + "/config deletion_allowed=false"));
  } else {
    out.push_back(Ok(base + " deletion_allowed", "false"));
  }
  if (data.value("exportable", false)) {
    out.push_back(Fail(base + " exportable",
                       "true: the key material can be exported from Vault (irreversible)",
                       "create a new non-exportable key and migrate to it (docs/rotation.md)"));
  } else {
    out.push_back(Ok(base + " exportable", "false"));
  }
  if (data.value("allow_plaintext_backup", false)) {
    out.push_back(Fail(base + " allow_plaintext_backup",
                       "true: a backup of the key is plaintext key material (irreversible)",
                       "create a new key without plaintext backup and migrate to it (docs/rotation.md)"));
  }
  const int64_t latest = data["latest_version"].get<int64_t>();
  const int64_t min_dec = data.value("min_decryption_version", int64_t{1});
  const int64_t min_enc = data.value("min_encryption_version", int64_t{0});
  std::string d = "latest_version " + std::to_string(latest) + ", min_decryption_version " +
                  std::to_string(min_dec) + ": ";
  if (min_dec > latest) {
    out.push_back(Fail(base + " versions", d + "no version can decrypt",
                       "bao write " + mount + "/keys/" + key + "/config min_decryption_version=" +
                           std::to_string(latest)));
    return out;
  }
  d += min_dec == latest ? "only version " + std::to_string(latest) + " decrypts"
                         : "versions " + std::to_string(min_dec) + ".." + std::to_string(latest) +
                               " decrypt";
  if (min_dec > 1) {
    d += "; data wrapped with versions below " + std::to_string(min_dec) + " is unreadable";
  }
  if (min_enc != 0 && min_enc != latest) {
    d += "; min_encryption_version " + std::to_string(min_enc);
  }
  out.push_back(Ok(base + " versions", d));
  return out;
}

std::vector<Check> EvaluateCapabilities(const std::string& mount, const std::string& key,
                                        const CapabilityMap& caps) {
  struct Want {
    std::string path, cap;
  };
  const std::vector<Want> wants = {{mount + "/encrypt/" + key, "update"},
                                   {mount + "/decrypt/" + key, "update"},
                                   {mount + "/keys/" + key, "read"}};
  std::vector<Check> out;
  for (const auto& w : wants) {
    const std::string name = "capabilities " + w.path;
    const std::string exact = "path \"" + w.path + "\" { capabilities = [\"" + w.cap + "\"] }";
    auto it = caps.find(w.path);
    const std::vector<std::string> have =
        it == caps.end() ? std::vector<std::string>{"deny"} : it->second;
    const std::set<std::string> set(have.begin(), have.end());
    const std::string has = "has [" + Join(have) + "]";
    if (set.count("root")) {
      out.push_back(Warn(name, "root: the token can do anything (a root token?)",
                         "use a token whose only policy grants " + exact));
      continue;
    }
    if (set.count("deny") || !set.count(w.cap)) {
      out.push_back(Fail(name, "missing '" + w.cap + "' (" + has + ")",
                         "add to the token's policy: " + exact));
      continue;
    }
    std::vector<std::string> extra;
    for (const auto& c : have) {
      if (c != w.cap) extra.push_back(c);
    }
    const bool encrypt = w.path == wants[0].path;
    if (encrypt && set.count("create")) {
      out.push_back(Warn(name,
                         "'create' is granted (" + has + "): TRANSIT UPSERT TRAP - an encrypt call "
                         "with a mistyped key name silently creates a new key instead of failing, "
                         "and Secrets get wrapped with a key nobody rotates or backs up",
                         "grant exactly: " + exact));
      continue;
    }
    if (!extra.empty()) {
      out.push_back(Warn(name, "broader than needed: " + has + "; needs only '" + w.cap + "'",
                         "grant exactly: " + exact));
      continue;
    }
    out.push_back(Ok(name, "exactly '" + w.cap + "'"));
  }
  return out;
}

// ---- EncryptionConfiguration ---------------------------------------------------------------------

namespace {

std::string Str(const YAML::Node& n) {
  try {
    return n && n.IsScalar() ? n.as<std::string>() : "";
  } catch (const YAML::Exception&) {
    return "";
  }
}

// The provider's type: its only key ("kms", "identity", "aescbc", ...).
std::string ProviderType(const YAML::Node& p) {
  if (!p.IsMap() || p.size() == 0) return "?";
  return p.begin()->first.as<std::string>("?");
}

}  // namespace

std::vector<Check> CheckEncryptionConfig(const std::string& yaml_text, const std::string& socket_path) {
  const std::string base = "encryption-config";
  const std::string want = "unix://" + socket_path;
  std::vector<Check> out;
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    out.push_back(Fail(base, std::string("not valid YAML: ") + e.what(),
                       "fix the file (see manifests/encryption-config.yaml)"));
    return out;
  }
  try {
    if (!root.IsMap()) {
      out.push_back(Fail(base, "not a YAML mapping", "see manifests/encryption-config.yaml"));
      return out;
    }
    if (Str(root["kind"]) != "EncryptionConfiguration" ||
        Str(root["apiVersion"]) != "apiserver.config.k8s.io/v1") {
      out.push_back(Fail(base, "kind/apiVersion is not EncryptionConfiguration/apiserver.config.k8s.io/v1",
                         "set apiVersion: apiserver.config.k8s.io/v1 and kind: EncryptionConfiguration"));
      return out;
    }
    const YAML::Node resources = root["resources"];
    if (!resources || !resources.IsSequence() || resources.size() == 0) {
      out.push_back(Fail(base, "no resources list", "see manifests/encryption-config.yaml"));
      return out;
    }
    std::vector<std::string> other_endpoints;
    bool found = false;
    for (const auto& res : resources) {
      std::vector<std::string> names;
      if (res["resources"] && res["resources"].IsSequence()) {
        for (const auto& n : res["resources"]) names.push_back(Str(n));
      }
      const YAML::Node providers = res["providers"];
      if (!providers || !providers.IsSequence()) continue;
      for (size_t j = 0; j < providers.size(); ++j) {
        const YAML::Node kms = providers[j]["kms"];
        if (!kms || !kms.IsMap()) continue;
        const std::string endpoint = Str(kms["endpoint"]);
        if (endpoint != want) {
          other_endpoints.push_back(endpoint.empty() ? "(none)" : endpoint);
          continue;
        }
        found = true;
        const std::string label = base + " [" + Join(names, ",") + "] kms";
        out.push_back(Ok(label + " endpoint", want + " (this config's socket.path)"));
        const std::string api = Str(kms["apiVersion"]);
        if (api == "v2") {
          out.push_back(Ok(label + " apiVersion", "v2"));
        } else {
          out.push_back(Fail(label + " apiVersion",
                             (api.empty() ? std::string("not set (means v1)") : api) +
                                 ": KMS v1 is deprecated and disabled by default since Kubernetes 1.29",
                             "set apiVersion: v2 on the kms provider"));
        }
        const std::string pname = Str(kms["name"]);
        if (pname.empty()) {
          out.push_back(Fail(label + " name", "missing", "set name: trousseau (and never change it)"));
        } else if (pname.find(':') != std::string::npos) {
          out.push_back(Fail(label + " name", "'" + pname + "' contains ':' (kube-apiserver refuses it "
                             "for v2)", "choose a name without ':' before any data is written"));
        } else {
          out.push_back(Ok(label + " name", "'" + pname + "' (stored in every object's prefix "
                           "k8s:enc:kms:v2:" + pname + ": renaming makes existing data unreadable)"));
        }
        if (kms["timeout"]) {
          auto t = config::ParseDuration(Str(kms["timeout"]));
          if (!t.ok()) {
            out.push_back(Fail(label + " timeout", "'" + Str(kms["timeout"]) + "' is not a duration",
                               "set timeout: 3s"));
          } else if (*t < std::chrono::seconds(1) || *t > std::chrono::seconds(10)) {
            out.push_back(Warn(label + " timeout",
                               Str(kms["timeout"]) + " is outside 1s..10s: too short fails calls "
                               "during a Vault failover, too long stalls kube-apiserver writes",
                               "set timeout: 3s"));
          } else {
            out.push_back(Ok(label + " timeout", Str(kms["timeout"])));
          }
        } else {
          out.push_back(Ok(label + " timeout", "not set: kube-apiserver's default 3s"));
        }
        if (kms["cachesize"]) {
          out.push_back(Fail(label + " cachesize",
                             "set with apiVersion v2: cachesize is a v1 setting, kube-apiserver "
                             "rejects it for v2",
                             "remove cachesize"));
        }
        if (j != 0) {
          out.push_back(Warn(label + " order",
                             "provider " + std::to_string(j + 1) + ": new data is written by the "
                             "first provider (" + ProviderType(providers[0]) + "), not trousseau",
                             "move the trousseau kms provider first (after the migration is done)"));
        }
        std::vector<std::string> after;
        for (size_t k = j + 1; k < providers.size(); ++k) after.push_back(ProviderType(providers[k]));
        if (after.empty()) {
          out.push_back(Warn(label + " fallback",
                             "no provider after trousseau: data written before it (plain or with "
                             "a previous provider) cannot be read",
                             "add `- identity: {}` (or the previous provider) after the kms provider"));
        } else {
          out.push_back(Ok(label + " fallback", "followed by " + Join(after) +
                                                    ", which read(s) data written before trousseau"));
        }
      }
    }
    if (!found) {
      out.push_back(Fail(base, "no kms provider with endpoint " + want +
                                   (other_endpoints.empty() ? std::string()
                                                            : " (found: " + Join(other_endpoints) + ")"),
                         "set endpoint: " + want + " (socket.path in the trousseau config)"));
    }
  } catch (const YAML::Exception& e) {
    out.push_back(Fail(base, std::string("unexpected structure: ") + e.what(),
                       "see manifests/encryption-config.yaml"));
  }
  return out;
}

// ---- Vault calls ---------------------------------------------------------------------------------

namespace {

Deadline DeadlineFor(const config::VaultConfig& v) {
  return SystemClock().Now() + v.request_timeout;
}

// The secondary's checks carry its name; the pure Evaluate* functions name the primary's.
std::vector<Check> Named(const Cluster& cluster, std::vector<Check> checks) {
  for (auto& c : checks) c.name = cluster.ApiName(c.name);
  return checks;
}

std::string VaultPath(const std::string& p) { return "/v1/" + p; }

// Parses a non-secret Vault answer (health, key metadata, capabilities).
json ParsePublic(const SecretBuffer& body) {
  return json::parse(body.view().begin(), body.view().end(), nullptr, false);
}

std::string ErrorsOf(const SecretBuffer& body) {
  const std::string e = vault::VaultErrors(body);
  return e.empty() ? "" : " (vault said: " + e + ")";
}

}  // namespace

std::vector<Check> CheckVaultApi(const config::Config& cfg, vault::HttpTransport& http,
                                 vault::TokenSource& tokens) {
  return CheckVaultApi(Cluster::Primary(cfg), http, tokens);
}

std::vector<Check> CheckVaultApi(const Cluster& cluster, vault::HttpTransport& http,
                                 vault::TokenSource& tokens) {
  std::vector<Check> out;
  const auto& v = *cluster.vault;
  const std::string sec = cluster.Section();
  // 1. login
  auto token = tokens.Token(DeadlineFor(v));
  if (!token.ok()) {
    out.push_back(Fail(cluster.ApiName("vault login"),
                       tokens.Describe() + ": " + std::string(token.status().message()),
                       v.auth.method == config::AuthMethod::kToken
                           ? "put a valid token in " + v.auth.token_file
                           : "check the role and credentials of the login method (docs/auth.md)"));
    return out;
  }
  out.push_back(Ok(cluster.ApiName("vault login"), tokens.Describe() + ": token obtained"));

  // 2. lookup-self
  auto info = vault::auth::LookupSelf(http, *token, DeadlineFor(v));
  if (!info.ok()) {
    if (info.status().code() == absl::StatusCode::kPermissionDenied) {
      out.push_back(Warn(cluster.ApiName("vault token"),
                         "lookup-self refused: TTL and renewability not checked (" +
                             std::string(info.status().message()) + ")",
                         "grant path \"auth/token/lookup-self\" { capabilities = [\"read\"] } "
                         "(the plugin's renewer uses it too)"));
    } else {
      out.push_back(Fail(cluster.ApiName("vault token"), std::string(info.status().message()),
                         "check the token: bao token lookup"));
    }
  } else {
    Check t = EvaluateToken(info->ttl.count(), info->renewable, v.auth, sec);
    t.name = cluster.ApiName(t.name);
    out.push_back(std::move(t));
  }

  // 3. the transit key
  const std::string keys_path = v.transit_mount + "/keys/" + v.transit_key;
  {
    vault::HttpRequest req;
    req.method = vault::HttpRequest::Method::kGet;
    req.path = VaultPath(keys_path);
    req.token = *token;
    req.deadline = DeadlineFor(v);
    auto resp = http.Send(req);
    const std::string name = cluster.ApiName("transit key " + v.transit_mount + "/" + v.transit_key);
    if (!resp.ok()) {
      out.push_back(Fail(name, std::string(resp.status().message()), "see the vault node checks above"));
    } else if (resp->status == 404) {
      out.push_back(Fail(name, "not found at " + keys_path,
                         "create it (bao write -f " + keys_path + " type=aes256-gcm96) or correct " +
                             sec + ".transit.key / " + sec + ".transit.mount"));
    } else if (resp->status == 403) {
      out.push_back(Fail(name, "permission denied reading " + keys_path,
                         "add to the token's policy: path \"" + keys_path +
                             "\" { capabilities = [\"read\"] }"));
    } else if (resp->status != 200) {
      out.push_back(Fail(name, "HTTP " + std::to_string(resp->status) + " from " + resp->node +
                                   ErrorsOf(resp->body),
                         "see the Vault server log"));
    } else {
      const json j = ParsePublic(resp->body);
      const json data = j.is_object() && j.contains("data") ? j["data"] : json();
      for (auto& c : Named(cluster, EvaluateKey(v.transit_mount, v.transit_key, data, sec))) {
        out.push_back(std::move(c));
      }
    }
  }

  // 4. capabilities
  {
    const std::vector<std::string> paths = {v.transit_mount + "/encrypt/" + v.transit_key,
                                            v.transit_mount + "/decrypt/" + v.transit_key, keys_path};
    const SecretBuffer body = SecretBuffer::CopyOf(json({{"paths", paths}}).dump());
    vault::HttpRequest req;
    req.method = vault::HttpRequest::Method::kPost;
    req.path = VaultPath("sys/capabilities-self");
    req.body = &body;
    req.token = *token;
    req.deadline = DeadlineFor(v);
    auto resp = http.Send(req);
    const std::string name = cluster.ApiName("capabilities");
    if (!resp.ok()) {
      out.push_back(Fail(name, std::string(resp.status().message()), "see the vault node checks above"));
    } else if (resp->status == 403) {
      out.push_back(Warn(name, "sys/capabilities-self refused: the token's policy was not checked",
                         "grant path \"sys/capabilities-self\" { capabilities = [\"update\"] } "
                         "(the default policy has it)"));
    } else if (resp->status != 200) {
      out.push_back(Fail(name, "HTTP " + std::to_string(resp->status) + " from " + resp->node +
                                   ErrorsOf(resp->body),
                         "see the Vault server log"));
    } else {
      const json j = ParsePublic(resp->body);
      const json& src = j.is_object() && j.contains("data") && j["data"].is_object() ? j["data"] : j;
      CapabilityMap caps;
      for (const auto& p : paths) {
        if (src.is_object() && src.contains(p) && src[p].is_array()) {
          for (const auto& c : src[p]) {
            if (c.is_string()) caps[p].push_back(c.get<std::string>());
          }
        }
      }
      for (auto& c : Named(cluster, EvaluateCapabilities(v.transit_mount, v.transit_key, caps))) {
        out.push_back(std::move(c));
      }
    }
  }
  return out;
}

std::vector<Check> CheckNodeHealth(const config::Config& cfg, const std::string& node,
                                   vault::HttpTransport& http, bool* usable) {
  return CheckNodeHealth(Cluster::Primary(cfg), node, http, usable);
}

std::vector<Check> CheckNodeHealth(const Cluster& cluster, const std::string& node,
                                   vault::HttpTransport& http, bool* usable) {
  *usable = false;
  const std::string sec = cluster.Section();
  std::vector<Check> out;
  vault::HttpRequest req;
  req.method = vault::HttpRequest::Method::kGet;
  // Every state answers 200 so that the body (sealed, standby) is read, not retried.
  req.path = "/v1/sys/health?standbycode=200&perfstandbycode=200&performancestandbycode=200"
             "&sealedcode=200&uninitcode=200&drsecondarycode=200";
  req.deadline = DeadlineFor(*cluster.vault);
  const auto t0 = SystemClock().Now();
  auto resp = http.Send(req);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(SystemClock().Now() - t0).count();
  const std::string tls_name = cluster.NodeName(node, "tls");
  const auto& t = cluster.vault->tls;
  if (!resp.ok()) {
    const std::string msg(resp.status().message());
    std::string fix;
    if (msg.find("certificate verification failed") != std::string::npos) {
      fix = sec + ".tls.ca_file (" + t.ca_file + ") must hold the CA that signed the server "
            "certificate" + (t.server_name.empty() ? std::string() : " for " + t.server_name) +
            "; compare with: openssl s_client -connect " + node.substr(8) + " -CAfile " + t.ca_file;
    } else if (msg.find("SPKI pin") != std::string::npos) {
      fix = "update " + sec + ".tls.spki_pins to the server key's pin (docs/configuration.md)";
    } else if (msg.find("client certificate") != std::string::npos ||
               (!t.client_cert_file.empty() &&
                (msg.find("handshake") != std::string::npos || msg.find("connection failed") != std::string::npos))) {
      fix = "the server may refuse the client certificate: check that " +
            (t.client_cert_file.empty() ? sec + ".tls.client_cert_file is set" : t.client_cert_file) +
            " is valid and signed by a CA the listener trusts (tls_client_ca_file)";
    } else if (msg.find("timed out") != std::string::npos) {
      fix = "the node answered TCP but not HTTPS in time: check it is a TLS listener and not overloaded";
    } else {
      fix = "check that " + node + " is a Vault/OpenBao HTTPS listener";
    }
    out.push_back(Fail(tls_name, msg, fix));
    return out;
  }
  std::string tls_detail = "verified against " + t.ca_file;
  if (!t.spki_pins.empty()) tls_detail += ", SPKI pin matched";
  if (!t.server_name.empty()) tls_detail += ", name " + t.server_name;
  tls_detail += t.client_cert_file.empty() ? ", no client certificate"
                                           : ", handshake with the client certificate accepted";
  tls_detail += " (" + std::to_string(ms) + " ms)";
  out.push_back(Ok(tls_name, tls_detail));
  const std::time_t now = std::time(nullptr);
  const json h = ParsePublic(resp->body);
  if (resp->status != 200) {
    out.push_back(Fail(cluster.NodeName(node, "health"), "sys/health answered HTTP " +
                                                             std::to_string(resp->status),
                       "check that " + node + " is Vault/OpenBao"));
    return out;
  }
  Check health = EvaluateHealth(node, h, sec);
  health.name = cluster.NodeName(node, "health");
  *usable = health.result != Result::kFail;
  out.push_back(std::move(health));
  std::optional<int64_t> stime;
  if (h.is_object() && h.contains("server_time_utc") && h["server_time_utc"].is_number_integer()) {
    stime = h["server_time_utc"].get<int64_t>();
  }
  Check clock = EvaluateClock(node, resp->date, stime, now);
  clock.name = cluster.NodeName(node, "clock");
  out.push_back(std::move(clock));
  return out;
}

namespace {

// "https://host:port" -> TCP connect with a timeout.
Check CheckTcp(const Cluster& cluster, const std::string& node, std::chrono::milliseconds timeout) {
  const std::string name = cluster.NodeName(node, "tcp");
  const std::string sec = cluster.Section();
  std::string hp = node.substr(std::string("https://").size());
  std::string host = hp, port = "443";
  if (!hp.empty() && hp.front() == '[') {
    const size_t close = hp.find(']');
    host = hp.substr(1, close == std::string::npos ? std::string::npos : close - 1);
    if (close != std::string::npos && close + 1 < hp.size() && hp[close + 1] == ':') port = hp.substr(close + 2);
  } else if (const size_t colon = hp.rfind(':'); colon != std::string::npos) {
    host = hp.substr(0, colon);
    port = hp.substr(colon + 1);
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0) {
    return Fail(name, "cannot resolve " + host + ": " + gai_strerror(rc), "check the host name in " + sec + ".addresses and DNS");
  }
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> guard(res, ::freeaddrinfo);
  std::string last = "no address";
  const auto t0 = std::chrono::steady_clock::now();
  for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      last = std::strerror(errno);
      continue;
    }
    int rc = ::connect(fd, a->ai_addr, a->ai_addrlen);
    int err = rc == 0 ? 0 : errno;
    if (rc != 0 && err == EINPROGRESS) {
      const auto left = timeout - std::chrono::duration_cast<std::chrono::milliseconds>(
                                      std::chrono::steady_clock::now() - t0);
      pollfd p{fd, POLLOUT, 0};
      const int pr = left.count() > 0 ? ::poll(&p, 1, static_cast<int>(left.count())) : 0;
      if (pr == 1) {
        socklen_t len = sizeof err;
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      } else {
        err = ETIMEDOUT;
      }
    }
    ::close(fd);
    if (err == 0) {
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::steady_clock::now() - t0).count();
      return Ok(name, "connected in " + std::to_string(ms) + " ms");
    }
    last = err == ETIMEDOUT ? "timed out after " + std::to_string(timeout.count()) + " ms (" + sec + ".timeouts.connect)"
                            : std::strerror(err);
  }
  return Fail(name, "cannot connect to " + host + ":" + port + ": " + last,
              "check that Vault listens there and that no firewall drops the traffic");
}

RuntimeIdentity Runtime(const config::Config& cfg) {
  RuntimeIdentity who;
  who.starts_as_root = hardening::RunningAsRoot();
  if (who.starts_as_root) {
    who.uid = cfg.privileges.uid;
    who.gid = cfg.privileges.gid;
  } else {
    who.uid = ::geteuid();
    who.gid = ::getegid();
  }
  return who;
}

std::string SecondarySummary(const config::Config& cfg) {
  if (!cfg.secondary) return "";
  const auto& sc = *cfg.secondary;
  return "; secondary: " + std::to_string(sc.vault.addresses.size()) + " vault address(es), transit " +
         sc.vault.transit_mount + "/" + sc.vault.transit_key + ", policy " +
         (sc.policy == config::SecondaryPolicy::kRequired ? "required" : "best_effort");
}

// One Vault cluster: its TLS material and credentials, each node (TCP, TLS, health, clock), then
// login, token, key and capabilities through the failover transport the plugin uses.
std::vector<Check> CheckCluster(const Cluster& cluster, const RuntimeIdentity& who) {
  std::vector<Check> out;
  auto add = [&out](std::vector<Check> v) {
    for (auto& c : v) out.push_back(std::move(c));
  };
  const auto& v = *cluster.vault;
  const std::string sec = cluster.Section();
  auto tls = vault::TlsMaterial::Load(v.tls);
  if (!tls.ok()) {
    out.push_back(Fail(cluster.ApiName("tls material"), std::string(tls.status().message()),
                       "the CA and client certificate must be PEM; the key PEM and matching the "
                       "certificate (" + sec + ".tls)"));
    out.push_back(Fail(cluster.ApiName("vault api"), "not checked: the TLS files cannot be loaded",
                       "fix the tls checks above"));
    return out;
  }
  out.push_back(Ok(cluster.ApiName("tls material"),
                   std::to_string((*tls)->ca_count()) + " CA certificate(s)" +
                       ((*tls)->has_client_identity() ? ", client certificate and key match"
                                                      : ", no client identity")));
  if (auto st = vault::auth::CheckCredentials(v.auth, (*tls)->has_client_identity(),
                                              who.starts_as_root ? std::optional<uint32_t>(who.uid)
                                                                 : std::nullopt);
      !st.ok()) {
    out.push_back(Fail(cluster.ApiName("auth credentials"), std::string(st.message()),
                       "see docs/auth.md (" + sec + ".auth)"));
  } else {
    out.push_back(Ok(cluster.ApiName("auth credentials"),
                     "the files of method " + std::string(vault::auth::MethodName(v.auth.method)) +
                         " pass the start-time checks"));
  }

  bool any_usable = false;
  for (const auto& node : v.addresses) {
    Check tcp = CheckTcp(cluster, node, v.connect_timeout);
    const bool tcp_ok = tcp.result == Result::kOk;
    out.push_back(std::move(tcp));
    if (!tcp_ok) continue;
    config::VaultConfig one = v;
    one.addresses = {node};
    auto http = vault::CurlTransport::Create(one, *tls);
    if (!http.ok()) {
      out.push_back(Fail(std::string(cluster.secondary ? "secondary " : "") + "vault " + node,
                         std::string(http.status().message()), "correct " + sec + ".addresses"));
      continue;
    }
    bool usable = false;
    add(CheckNodeHealth(cluster, node, **http, &usable));
    any_usable = any_usable || usable;
  }
  if (!any_usable) {
    out.push_back(Fail(cluster.ApiName("vault api"),
                       "not checked: no " + std::string(cluster.secondary ? "secondary " : "") +
                           "Vault node is reachable, initialised and unsealed",
                       "fix the " + std::string(cluster.secondary ? "secondary " : "") +
                           "vault node checks above"));
  } else if (auto http = vault::CurlTransport::Create(v, *tls); !http.ok()) {
    out.push_back(Fail(cluster.ApiName("vault api"), std::string(http.status().message()),
                       "correct " + sec + ".addresses"));
  } else {
    auto tokens = vault::auth::MakeTokenSource(v, **http, SystemClock());
    if (!tokens.ok()) {
      out.push_back(Fail(cluster.ApiName("vault login"), std::string(tokens.status().message()),
                         "see docs/auth.md"));
    } else {
      add(CheckVaultApi(cluster, **http, **tokens));
      tokens->reset();  // a login source's thread stops before the transport goes
    }
  }
  return out;
}

}  // namespace

std::vector<Check> RunAll(const Options& opts) {
  std::vector<Check> out;
  auto add = [&out](std::vector<Check> v) {
    for (auto& c : v) out.push_back(std::move(c));
  };
  // 1. config and the files it names
  auto cfg = config::LoadConfigFile(opts.config_path);
  if (!cfg.ok()) {
    out.push_back(Fail("config", std::string(cfg.status().message()),
                       "correct the config (docs/configuration.md); the other checks need a valid "
                       "config"));
    return out;
  }
  const RuntimeIdentity who = Runtime(*cfg);
  const auto& v = cfg->vault;
  out.push_back(Ok("config", opts.config_path + " is valid (" + std::to_string(v.addresses.size()) +
                                 " vault address(es), transit " + v.transit_mount + "/" +
                                 v.transit_key + ", runtime uid " + std::to_string(who.uid) + ":" +
                                 std::to_string(who.gid) + ")" + SecondarySummary(*cfg)));
  for (const auto& f : FilesOf(*cfg)) out.push_back(CheckFile(f, who));

  // 2-5. Vault: the primary, then vault.secondary, each with its own trust, nodes and token
  add(CheckCluster(Cluster::Primary(*cfg), who));
  if (cfg->secondary) add(CheckCluster(Cluster::Secondary(*cfg->secondary), who));

  // 6. kube-apiserver's EncryptionConfiguration
  if (!opts.encryption_config_path.empty()) {
    auto text = ReadTextFile(opts.encryption_config_path, 1 << 20);
    if (!text.ok()) {
      out.push_back(Fail("encryption-config", std::string(text.status().message()),
                         "pass the file kube-apiserver reads (--encryption-provider-config)"));
    } else {
      add(CheckEncryptionConfig(*text, cfg->socket.path));
    }
  }

  // 7. the socket directory and the kubelet seccomp profile
  out.push_back(CheckSocketDir(cfg->socket.path, who));
  if (!cfg->state.file.empty()) out.push_back(CheckStateFile(cfg->state.file, who));
  out.push_back(CheckSeccompProfile(opts.seccomp_profile_path, hardening::RuntimeProfileJson()));
  return out;
}

namespace {

void Usage(FILE* f) {
  std::fputs(
      "Usage: trousseau doctor --config FILE [--encryption-config FILE]\n"
      "                        [--seccomp-profile PATH] [--output text|json]\n"
      "Checks a node before kube-apiserver depends on the plugin: the config and its files,\n"
      "each Vault node (TCP, TLS, health, clock), login, token, transit key, the token's\n"
      "capabilities (the same again for vault.secondary when configured), kube-apiserver's\n"
      "encryption config, the socket directory and the seccomp profile\n"
      "(default /var/lib/kubelet/seccomp/profiles/trousseau.json).\n"
      "Exit: 0 all ok, 1 a check failed, 2 only warnings, 64 bad command line.\n"
      "See docs/doctor.md.\n",
      f);
}

}  // namespace

int Main(const std::vector<std::string>& args) {
  Options opts;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    bool missing = false;
    auto value = [&](const std::string& flag, std::string* dst) {
      if (a == flag && i + 1 < args.size()) {
        *dst = args[++i];
        return true;
      }
      if (a == flag) missing = true;
      if (a.rfind(flag + "=", 0) == 0) {
        *dst = a.substr(flag.size() + 1);
        return true;
      }
      return false;
    };
    std::string output;
    if (a == "-h" || a == "--help") {
      Usage(stdout);
      return kExitOk;
    }
    if (value("--config", &opts.config_path) ||
        value("--encryption-config", &opts.encryption_config_path) ||
        value("--seccomp-profile", &opts.seccomp_profile_path)) {
      continue;
    }
    if (value("--output", &output)) {
      if (output != "text" && output != "json") {
        Usage(stderr);
        std::fprintf(stderr, "trousseau doctor: --output must be text or json\n");
        return kExitUsage;
      }
      opts.json = output == "json";
      continue;
    }
    Usage(stderr);
    if (missing) {
      std::fprintf(stderr, "trousseau doctor: %s needs a value\n", a.c_str());
    } else {
      std::fprintf(stderr, "trousseau doctor: unknown argument: %s\n", a.substr(0, 64).c_str());
    }
    return kExitUsage;
  }
  if (opts.config_path.empty()) {
    Usage(stderr);
    std::fprintf(stderr, "trousseau doctor: --config FILE is required\n");
    return kExitUsage;
  }
  // Library warnings (retries, failovers) are already in the check details.
  log::SetLevel(log::Level::kError);
  if (auto st = vault::CurlTransport::GlobalInit(); !st.ok()) {
    std::fprintf(stderr, "trousseau doctor: %s\n", std::string(st.message()).c_str());
    return kExitFailed;
  }
  std::vector<Check> checks;
  try {
    checks = RunAll(opts);
  } catch (const std::exception& e) {
    checks.push_back(Fail("doctor", std::string("internal error: ") + e.what(),
                          "report this as a bug"));
  }
  const std::string text = opts.json ? FormatJson(checks) : FormatText(checks);
  std::fputs(text.c_str(), stdout);
  std::fflush(stdout);
  return ExitCode(checks);
}

}  // namespace trousseau::cli::doctor
