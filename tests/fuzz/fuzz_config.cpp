// Fuzz target: the configuration parser (YAML text -> validated Config, or one error line).
// Invariants:
// - an error is INVALID_ARGUMENT-like (not OK, non-empty), one printable line, bounded;
// - a config that parses satisfies the documented rules (https:// addresses, a transit key, a
//   socket mode of 0600/0660 with a group iff 0660, stale_after > refresh_period, limits and
//   timeouts within their ranges);
// - it re-validates: the Config written back out as YAML parses again to the same Config;
// - ParseDuration / ParseHttpListen on the same bytes never crash, and an accepted duration is
//   not negative.
#include <cstdint>
#include <string>

#include <yaml-cpp/yaml.h>

#include "config/config.h"
#include "fuzz/fuzz_check.h"

namespace {

using namespace trousseau::config;

const char* MethodName(AuthMethod m) {
  switch (m) {
    case AuthMethod::kToken: return "token";
    case AuthMethod::kAppRole: return "approle";
    case AuthMethod::kCert: return "cert";
    case AuthMethod::kJwt: return "jwt";
    case AuthMethod::kKubernetes: return "kubernetes";
  }
  return "?";
}
const char* LevelName(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kError: return "error";
  }
  return "?";
}
const char* SeccompName(SeccompMode m) {
  switch (m) {
    case SeccompMode::kEnforce: return "enforce";
    case SeccompMode::kLog: return "log";
    case SeccompMode::kDisabled: return "disabled";
  }
  return "?";
}
std::string Ms(std::chrono::milliseconds d) { return std::to_string(d.count()) + "ms"; }

// The Config as YAML, every value written explicitly (strings double-quoted).
std::string Emit(const Config& c) {
  YAML::Emitter e;
  auto str = [&](const char* k, const std::string& v) {
    e << YAML::Key << k << YAML::Value << YAML::DoubleQuoted << v;
  };
  auto opt = [&](const char* k, const std::string& v) {
    if (!v.empty()) str(k, v);
  };
  e << YAML::BeginMap;
  e << YAML::Key << "socket" << YAML::Value << YAML::BeginMap;
  str("path", c.socket.path);
  str("mode", c.socket.mode == 0660 ? "0660" : "0600");
  if (c.socket.gid) str("group", std::to_string(*c.socket.gid));
  e << YAML::EndMap;
  e << YAML::Key << "vault" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "addresses" << YAML::Value << YAML::BeginSeq;
  for (const auto& a : c.vault.addresses) e << YAML::DoubleQuoted << a;
  e << YAML::EndSeq;
  opt("namespace", c.vault.namespace_);
  e << YAML::Key << "transit" << YAML::Value << YAML::BeginMap;
  str("mount", c.vault.transit_mount);
  str("key", c.vault.transit_key);
  e << YAML::EndMap;
  e << YAML::Key << "tls" << YAML::Value << YAML::BeginMap;
  str("ca_file", c.vault.tls.ca_file);
  opt("client_cert_file", c.vault.tls.client_cert_file);
  opt("client_key_file", c.vault.tls.client_key_file);
  if (!c.vault.tls.spki_pins.empty()) {
    e << YAML::Key << "spki_pins" << YAML::Value << YAML::BeginSeq;
    for (const auto& p : c.vault.tls.spki_pins) e << YAML::DoubleQuoted << p;
    e << YAML::EndSeq;
  }
  opt("server_name", c.vault.tls.server_name);
  e << YAML::EndMap;
  const auto& a = c.vault.auth;
  e << YAML::Key << "auth" << YAML::Value << YAML::BeginMap;
  str("method", MethodName(a.method));
  switch (a.method) {
    case AuthMethod::kToken:
      str("token_file", a.token_file);
      str("renew", a.renew_token ? "true" : "false");
      break;
    case AuthMethod::kAppRole:
      str("mount", a.mount);
      str("role_id_file", a.role_id_file);
      str("secret_id_file", a.secret_id_file);
      break;
    case AuthMethod::kCert:
      str("mount", a.mount);
      opt("name", a.cert_role);
      break;
    case AuthMethod::kJwt:
    case AuthMethod::kKubernetes:
      str("mount", a.mount);
      str("role", a.role);
      str("jwt_file", a.jwt_file);
      break;
  }
  e << YAML::EndMap;
  e << YAML::Key << "timeouts" << YAML::Value << YAML::BeginMap;
  str("connect", Ms(c.vault.connect_timeout));
  str("request", Ms(c.vault.request_timeout));
  e << YAML::EndMap;
  e << YAML::Key << "max_response_bytes" << YAML::Value << c.vault.max_response_bytes;
  e << YAML::EndMap;
  e << YAML::Key << "status" << YAML::Value << YAML::BeginMap;
  str("refresh_period", Ms(c.status.refresh_period));
  str("stale_after", Ms(c.status.stale_after));
  e << YAML::EndMap;
  e << YAML::Key << "limits" << YAML::Value << YAML::BeginMap << YAML::Key << "max_in_flight"
    << YAML::Value << YAML::BeginMap << YAML::Key << "encrypt" << YAML::Value
    << c.limits.max_in_flight_encrypt << YAML::Key << "decrypt" << YAML::Value
    << c.limits.max_in_flight_decrypt << YAML::EndMap << YAML::EndMap;
  e << YAML::Key << "log" << YAML::Value << YAML::BeginMap;
  str("level", LevelName(c.log_level));
  e << YAML::Key << "queue_lines" << YAML::Value << c.log_queue_lines;
  e << YAML::EndMap;
  e << YAML::Key << "privileges" << YAML::Value << YAML::BeginMap << YAML::Key << "user"
    << YAML::Value << c.privileges.uid << YAML::Key << "group" << YAML::Value << c.privileges.gid
    << YAML::EndMap;
  e << YAML::Key << "seccomp" << YAML::Value << YAML::BeginMap;
  str("mode", SeccompName(c.seccomp));
  e << YAML::EndMap;
  e << YAML::Key << "http" << YAML::Value << YAML::BeginMap;
  str("listen", c.http.enabled ? c.http.listen : "off");
  e << YAML::EndMap;
  e << YAML::Key << "hygiene" << YAML::Value << YAML::BeginMap;
  str("wipe_freed_memory", c.wipe_freed_memory ? "true" : "false");
  e << YAML::EndMap;
  e << YAML::EndMap;
  return e.c_str();
}

bool Same(const Config& x, const Config& y) {
  const auto &a = x.vault.auth, &b = y.vault.auth;
  return x.socket.path == y.socket.path && x.socket.mode == y.socket.mode &&
         x.socket.gid == y.socket.gid && x.vault.addresses == y.vault.addresses &&
         x.vault.namespace_ == y.vault.namespace_ &&
         x.vault.transit_mount == y.vault.transit_mount &&
         x.vault.transit_key == y.vault.transit_key && x.vault.tls.ca_file == y.vault.tls.ca_file &&
         x.vault.tls.client_cert_file == y.vault.tls.client_cert_file &&
         x.vault.tls.client_key_file == y.vault.tls.client_key_file &&
         x.vault.tls.spki_pins == y.vault.tls.spki_pins &&
         x.vault.tls.server_name == y.vault.tls.server_name && a.method == b.method &&
         a.mount == b.mount && a.token_file == b.token_file && a.renew_token == b.renew_token &&
         a.role_id_file == b.role_id_file && a.secret_id_file == b.secret_id_file &&
         a.role == b.role && a.jwt_file == b.jwt_file && a.cert_role == b.cert_role &&
         x.vault.connect_timeout == y.vault.connect_timeout &&
         x.vault.request_timeout == y.vault.request_timeout &&
         x.vault.max_response_bytes == y.vault.max_response_bytes &&
         x.status.refresh_period == y.status.refresh_period &&
         x.status.stale_after == y.status.stale_after &&
         x.limits.max_in_flight_encrypt == y.limits.max_in_flight_encrypt &&
         x.limits.max_in_flight_decrypt == y.limits.max_in_flight_decrypt &&
         x.log_level == y.log_level && x.log_queue_lines == y.log_queue_lines &&
         x.privileges.uid == y.privileges.uid && x.privileges.gid == y.privileges.gid &&
         x.http.enabled == y.http.enabled && x.http.listen == y.http.listen &&
         x.http.host == y.http.host && x.http.port == y.http.port &&
         x.http.loopback == y.http.loopback && x.seccomp == y.seccomp &&
         x.wipe_freed_memory == y.wipe_freed_memory;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 64 * 1024) return 0;  // configs are small; deep YAML nesting is yaml-cpp's limit
  const std::string text(reinterpret_cast<const char*>(data), size);

  auto d = ParseDuration(text);
  trousseau::fuzz::CheckErrorMessage(d.status(), "ParseDuration", 1024);
  if (d.ok()) FUZZ_CHECK(d->count() >= 0, "negative duration accepted");
  auto h = ParseHttpListen(text);
  trousseau::fuzz::CheckErrorMessage(h.status(), "ParseHttpListen", 1024);
  if (h.ok() && h->enabled) FUZZ_CHECK(h->port != 0, "http port 0 accepted");

  auto c = ParseConfig(text);
  trousseau::fuzz::CheckErrorMessage(c.status(), "ParseConfig", 1024);
  if (!c.ok()) return 0;
  FUZZ_CHECK(!c->vault.addresses.empty(), "no address");
  for (const auto& a : c->vault.addresses) {
    FUZZ_CHECK(a.rfind("https://", 0) == 0 && a.back() != '/', "address " + a);
  }
  FUZZ_CHECK(!c->vault.transit_key.empty() && !c->vault.transit_mount.empty(), "transit");
  FUZZ_CHECK(!c->vault.tls.ca_file.empty() && c->vault.tls.ca_file[0] == '/', "ca_file");
  FUZZ_CHECK(c->socket.mode == 0600 || c->socket.mode == 0660, "socket mode");
  FUZZ_CHECK(c->socket.gid.has_value() == (c->socket.mode == 0660), "socket group iff 0660");
  FUZZ_CHECK(c->status.stale_after > c->status.refresh_period, "stale_after <= refresh_period");
  FUZZ_CHECK(c->limits.max_in_flight_encrypt >= 1 && c->limits.max_in_flight_encrypt <= 4096, "limit");
  FUZZ_CHECK(c->limits.max_in_flight_decrypt >= 1 && c->limits.max_in_flight_decrypt <= 4096, "limit");
  FUZZ_CHECK(c->vault.connect_timeout.count() >= 100 && c->vault.request_timeout.count() >= 100,
             "timeouts");

  const std::string again = Emit(*c);
  auto c2 = ParseConfig(again);
  FUZZ_CHECK(c2.ok(), "the parsed config, written back, does not parse: " +
                          trousseau::fuzz::Msg(c2.status()) + "\n" + again);
  FUZZ_CHECK(Same(*c, *c2), "the parsed config, written back, parses differently:\n" + again);
  return 0;
}
