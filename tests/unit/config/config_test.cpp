// Unit tests for the configuration loader: every rule in docs/configuration.md has a negative
// case here that checks the message is one line, starts with "config: " and names the key.
#include "config/config.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace trousseau::config {
namespace {

using namespace std::chrono_literals;
using Catch::Contains;

// The smallest accepted file; negative tests change one line of it.
const std::string kMinimal = R"(vault:
  addresses:
    - https://vault.example.internal:8200
  transit:
    key: kubernetes
  tls:
    ca_file: /etc/trousseau/vault-ca.pem
  auth:
    method: token
    token_file: /etc/trousseau/token
)";

// sha256// + base64(SHA-256("hello")).
const std::string kPin = "sha256//LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=";

// `base` with `from` replaced by `to`; the test fails if `from` is not there, so a typo in a
// test cannot silently test the unchanged file.
std::string Replace(std::string base, std::string_view from, std::string_view to) {
  const size_t at = base.find(from);
  REQUIRE(at != std::string::npos);
  base.replace(at, from.size(), to);
  return base;
}

// kMinimal with `auth_block` (lines indented by 4) in place of the token auth.
std::string WithAuth(const std::string& auth_block) {
  return Replace(kMinimal, "    method: token\n    token_file: /etc/trousseau/token\n", auth_block);
}

// kMinimal with extra lines inside `vault:` (indented by 2).
std::string WithVault(const std::string& lines) {
  return Replace(kMinimal, "  transit:\n", lines + "  transit:\n");
}

// kMinimal with extra lines inside `vault.tls:` (indented by 4).
std::string WithTls(const std::string& lines) {
  return Replace(kMinimal, "    ca_file: /etc/trousseau/vault-ca.pem\n",
                 "    ca_file: /etc/trousseau/vault-ca.pem\n" + lines);
}

// kMinimal with `address` as the only Vault address.
std::string WithAddress(const std::string& address) {
  return Replace(kMinimal, "https://vault.example.internal:8200", address);
}

Config MustParse(const std::string& yaml) {
  absl::StatusOr<Config> config = ParseConfig(yaml);
  INFO(config.status().ToString());
  REQUIRE(config.ok());
  return *config;
}

// The error message for `yaml`, after checking the shape every message must have.
std::string ErrorOf(const std::string& yaml) {
  absl::StatusOr<Config> config = ParseConfig(yaml);
  REQUIRE_FALSE(config.ok());
  const std::string message(config.status().message());
  INFO(message);
  CHECK(config.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(message.rfind("config: ", 0) == 0);
  CHECK(message.find('\n') == std::string::npos);
  return message;
}

std::string DurationError(const std::string& text) {
  absl::StatusOr<std::chrono::milliseconds> d = ParseDuration(text);
  REQUIRE_FALSE(d.ok());
  CHECK(d.status().code() == absl::StatusCode::kInvalidArgument);
  return std::string(d.status().message());
}

// A file in a fresh temporary directory, removed at scope exit.
class TempFile {
 public:
  explicit TempFile(const std::string& content) {
    char dir_template[] = "/tmp/trousseau-config-test-XXXXXX";
    REQUIRE(mkdtemp(dir_template) != nullptr);
    dir_ = dir_template;
    path_ = dir_ + "/config.yaml";
    std::ofstream(path_, std::ios::binary) << content;
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    std::remove(path_.c_str());
    rmdir(dir_.c_str());
  }
  const std::string& path() const { return path_; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::string path_;
};

// ---- accepted files -------------------------------------------------------------------------

TEST_CASE("a full configuration sets every field") {
  const std::string yaml = R"(socket:
  path: /run/trousseau/kms.sock
  mode: "0660"
  group: "4242"
vault:
  addresses:
    - https://Vault-1.Example.internal:8200/
    - https://10.0.0.2
    - https://[fd00::2]:8201
  namespace: team-a/prod
  transit:
    mount: kms/transit
    key: k8s-prod.v1
  tls:
    ca_file: /etc/trousseau/ca.pem
    client_cert_file: /etc/trousseau/client.pem
    client_key_file: /etc/trousseau/client.key
    spki_pins:
      - sha256//LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=
      - sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=
    server_name: vault.example.internal
  auth:
    method: approle
    mount: approle-k8s
    role_id_file: /etc/trousseau/role-id
    secret_id_file: /etc/trousseau/secret-id
  timeouts:
    connect: 1500ms
    request: 1m30s
  max_response_bytes: 65536
status:
  refresh_period: 30s
  stale_after: 2m
log:
  level: debug
privileges:
  user: 1001
  group: 1002
seccomp:
  mode: log
)";
  const Config c = MustParse(yaml);
  CHECK(c.socket.path == "/run/trousseau/kms.sock");
  CHECK(c.socket.mode == 0660);
  REQUIRE(c.socket.gid.has_value());
  CHECK(*c.socket.gid == 4242);
  CHECK(c.vault.addresses ==
        std::vector<std::string>{"https://vault-1.example.internal:8200", "https://10.0.0.2",
                                 "https://[fd00::2]:8201"});
  CHECK(c.vault.namespace_ == "team-a/prod");
  CHECK(c.vault.transit_mount == "kms/transit");
  CHECK(c.vault.transit_key == "k8s-prod.v1");
  CHECK(c.vault.tls.ca_file == "/etc/trousseau/ca.pem");
  CHECK(c.vault.tls.client_cert_file == "/etc/trousseau/client.pem");
  CHECK(c.vault.tls.client_key_file == "/etc/trousseau/client.key");
  CHECK(c.vault.tls.spki_pins ==
        std::vector<std::string>{kPin, "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="});
  CHECK(c.vault.tls.server_name == "vault.example.internal");
  CHECK(c.vault.auth.method == AuthMethod::kAppRole);
  CHECK(c.vault.auth.mount == "approle-k8s");
  CHECK(c.vault.auth.role_id_file == "/etc/trousseau/role-id");
  CHECK(c.vault.auth.secret_id_file == "/etc/trousseau/secret-id");
  CHECK(c.vault.auth.token_file.empty());
  CHECK(c.vault.connect_timeout == 1500ms);
  CHECK(c.vault.request_timeout == 90s);
  CHECK(c.vault.max_response_bytes == 65536);
  CHECK(c.status.refresh_period == 30s);
  CHECK(c.status.stale_after == 2min);
  CHECK(c.log_level == LogLevel::kDebug);
  CHECK(c.privileges.uid == 1001);
  CHECK(c.privileges.gid == 1002);
  CHECK(c.seccomp == SeccompMode::kLog);
}

TEST_CASE("a minimal configuration gets the documented defaults") {
  const Config c = MustParse(kMinimal);
  CHECK(c.socket.path == "/var/run/kmsplugin/trousseau.sock");
  CHECK(c.socket.mode == 0600);
  CHECK_FALSE(c.socket.gid.has_value());
  CHECK(c.vault.addresses == std::vector<std::string>{"https://vault.example.internal:8200"});
  CHECK(c.vault.namespace_.empty());
  CHECK(c.vault.transit_mount == "transit");
  CHECK(c.vault.transit_key == "kubernetes");
  CHECK(c.vault.tls.ca_file == "/etc/trousseau/vault-ca.pem");
  CHECK(c.vault.tls.client_cert_file.empty());
  CHECK(c.vault.tls.client_key_file.empty());
  CHECK(c.vault.tls.spki_pins.empty());
  CHECK(c.vault.tls.server_name.empty());
  CHECK(c.vault.auth.method == AuthMethod::kToken);
  CHECK(c.vault.auth.token_file == "/etc/trousseau/token");
  CHECK(c.vault.auth.mount.empty());
  CHECK(c.vault.connect_timeout == 2s);
  CHECK(c.vault.request_timeout == 5s);
  CHECK(c.vault.max_response_bytes == 1048576);
  CHECK(c.status.refresh_period == 60s);
  CHECK(c.status.stale_after == 180s);
  CHECK(c.log_level == LogLevel::kInfo);
  CHECK(c.privileges.uid == 65532);
  CHECK(c.privileges.gid == 65532);
  CHECK(c.seccomp == SeccompMode::kEnforce);
}

TEST_CASE("the documented example values parse") {
  // Empty strings are the documented "not set" for optional keys.
  const Config c = MustParse(Replace(kMinimal, "vault:\n", R"(socket:
  path: /var/run/kmsplugin/trousseau.sock
  mode: "0600"
  group: ""
vault:
  namespace: ""
)") + R"(status:
  refresh_period: 15s
log:
  level: warn
seccomp:
  mode: disabled
)");
  CHECK_FALSE(c.socket.gid.has_value());
  CHECK(c.vault.namespace_.empty());
  CHECK(c.log_level == LogLevel::kWarn);
  CHECK(c.seccomp == SeccompMode::kDisabled);
  CHECK(MustParse(kMinimal + "log:\n  level: error\n").log_level == LogLevel::kError);
  CHECK(MustParse(kMinimal).log_queue_lines == 4096);
  CHECK(MustParse(kMinimal + "log:\n  queue_lines: 16\n").log_queue_lines == 16);
  CHECK(MustParse(kMinimal + "log:\n  queue_lines: 1048576\n").log_queue_lines == 1048576);
  CHECK_THAT(ErrorOf(kMinimal + "log:\n  queue_lines: 15\n"),
             Contains("log.queue_lines") && Contains("between 16 and 1048576"));
  CHECK_THAT(ErrorOf(kMinimal + "log:\n  queue_lines: lots\n"), Contains("log.queue_lines"));
  CHECK(MustParse(kMinimal + "seccomp:\n  mode: enforce\n").seccomp == SeccompMode::kEnforce);
}

TEST_CASE("each auth method with its defaults") {
  SECTION("approle defaults its mount") {
    const Config c = MustParse(WithAuth("    method: approle\n    role_id_file: /r\n"
                                        "    secret_id_file: /s\n"));
    CHECK(c.vault.auth.method == AuthMethod::kAppRole);
    CHECK(c.vault.auth.mount == "approle");
  }
  SECTION("cert with a name") {
    const std::string yaml = Replace(
        WithTls("    client_cert_file: /c.pem\n    client_key_file: /k.pem\n"),
        "    method: token\n    token_file: /etc/trousseau/token\n",
        "    method: cert\n    name: kms-node\n");
    const Config cert = MustParse(yaml);
    CHECK(cert.vault.auth.method == AuthMethod::kCert);
    CHECK(cert.vault.auth.mount == "cert");
    CHECK(cert.vault.auth.cert_role == "kms-node");
  }
  SECTION("jwt needs role and jwt_file") {
    const Config c = MustParse(WithAuth("    method: jwt\n    role: kms@cluster\n"
                                        "    jwt_file: /var/run/jwt\n    mount: oidc/k8s\n"));
    CHECK(c.vault.auth.method == AuthMethod::kJwt);
    CHECK(c.vault.auth.mount == "oidc/k8s");
    CHECK(c.vault.auth.role == "kms@cluster");
    CHECK(c.vault.auth.jwt_file == "/var/run/jwt");
  }
  SECTION("kubernetes defaults mount and the service-account token path") {
    const Config c = MustParse(WithAuth("    method: kubernetes\n    role: kms\n"));
    CHECK(c.vault.auth.method == AuthMethod::kKubernetes);
    CHECK(c.vault.auth.mount == "kubernetes");
    CHECK(c.vault.auth.role == "kms");
    CHECK(c.vault.auth.jwt_file == "/var/run/secrets/kubernetes.io/serviceaccount/token");
  }
}

TEST_CASE("user and group names are resolved") {
  // root and nobody/nogroup exist on every Debian system.
  const Config c = MustParse(kMinimal + "socket:\n  mode: \"0660\"\n  group: root\n" +
                             "privileges:\n  user: nobody\n  group: nogroup\n");
  REQUIRE(c.socket.gid.has_value());
  CHECK(*c.socket.gid == 0);
  CHECK(c.privileges.uid == 65534);
  CHECK(c.privileges.gid == 65534);
  CHECK(*MustParse(kMinimal + "socket:\n  mode: \"0660\"\n  group: 0\n").socket.gid == 0);
}

TEST_CASE("stale_after defaults to three refresh periods") {
  const Config c = MustParse(kMinimal + "status:\n  refresh_period: 20s\n");
  CHECK(c.status.refresh_period == 20s);
  CHECK(c.status.stale_after == 60s);
}

// ---- ParseDuration --------------------------------------------------------------------------

TEST_CASE("ParseDuration accepts Go-style durations") {
  CHECK(*ParseDuration("1h") == 1h);
  CHECK(*ParseDuration("2m") == 2min);
  CHECK(*ParseDuration("15s") == 15s);
  CHECK(*ParseDuration("500ms") == 500ms);
  CHECK(*ParseDuration("1m30s") == 90s);
  CHECK(*ParseDuration("1h2m3s4ms") == 3723004ms);
  CHECK(*ParseDuration("0s") == 0ms);
  CHECK(*ParseDuration("007s") == 7s);
}

TEST_CASE("ParseDuration rejects bad text and names it") {
  CHECK_THAT(DurationError(""), Contains("\"\"") && Contains("empty"));
  CHECK_THAT(DurationError("10"), Contains("\"10\"") && Contains("missing unit"));
  CHECK_THAT(DurationError("-1s"), Contains("\"-1s\"") && Contains("negative"));
  CHECK_THAT(DurationError("1.5s"), Contains("\"1.5s\"") && Contains("fractions"));
  CHECK_THAT(DurationError("+1s"), Contains("\"+1s\""));
  CHECK_THAT(DurationError("5d"), Contains("unknown unit \"d\""));
  CHECK_THAT(DurationError("5us"), Contains("unknown unit \"us\""));
  CHECK_THAT(DurationError("s"), Contains("\"s\""));
  CHECK_THAT(DurationError(" 1s"), Contains("\" 1s\""));
  CHECK_THAT(DurationError("1s "), Contains("unknown unit \"s \""));
  CHECK_THAT(DurationError("30s1m"), Contains("largest to smallest"));
  CHECK_THAT(DurationError("1s1s"), Contains("largest to smallest"));
  CHECK_THAT(DurationError("99999999999999999999s"), Contains("too large"));
  CHECK_THAT(DurationError("9223372036854775807h"), Contains("too large"));
  CHECK_THAT(DurationError("9223372036854775807ms1ms"), Contains("largest to smallest"));
  // int64 milliseconds hold 2562047788015h and a bit more.
  CHECK(*ParseDuration("2562047788015h") == 2562047788015h);
  CHECK_THAT(DurationError("2562047788016h"), Contains("too large"));
  CHECK_THAT(DurationError("2562047788015h12m55s808ms"), Contains("too large"));
  CHECK(ParseDuration("2562047788015h12m55s807ms").ok());
}

// ---- document shape -------------------------------------------------------------------------

TEST_CASE("empty, non-mapping and multi-document files are refused") {
  CHECK_THAT(ErrorOf(""), Contains("empty"));
  CHECK_THAT(ErrorOf("# only a comment\n"), Contains("empty"));
  CHECK_THAT(ErrorOf("---\n"), Contains("empty"));
  CHECK_THAT(ErrorOf("- a\n- b\n"), Contains("must be a mapping") && Contains("a list"));
  CHECK_THAT(ErrorOf(kMinimal + "---\nlog:\n  level: info\n"), Contains("more than one YAML document"));
}

TEST_CASE("a file that is not a config does not have its content echoed") {
  // As if --config pointed at the token file by mistake.
  const std::string message = ErrorOf("hvs.s3cr3t-t0ken-value\n");
  CHECK_THAT(message, Contains("must be a mapping"));
  CHECK_THAT(message, !Contains("s3cr3t"));
}

TEST_CASE("YAML syntax errors give line and column") {
  const std::string message = ErrorOf("vault:\n  addresses: [https://a\n");
  CHECK_THAT(message, Contains("config: YAML syntax error at line "));
  CHECK_THAT(message, Contains(", column "));
  CHECK_THAT(ErrorOf("a: b: c\n"), Contains("YAML syntax error at line 1, column 5: "));
  CHECK_THAT(ErrorOf("a: *nowhere\n"), Contains("YAML syntax error at line 1"));
}

TEST_CASE("deeply nested YAML is refused without crashing") {
  const std::string message = ErrorOf(std::string(100000, '['));
  CHECK_THAT(message, Contains("YAML"));
}

// ---- keys and types -------------------------------------------------------------------------

TEST_CASE("unknown keys are named with their dotted path") {
  CHECK_THAT(ErrorOf(kMinimal + "sockets:\n  path: /x\n"), Contains("unknown key \"sockets\""));
  CHECK_THAT(ErrorOf(Replace(kMinimal, "ca_file", "cafile")),
             Contains("config: unknown key \"vault.tls.cafile\""));
  CHECK_THAT(ErrorOf(kMinimal + "socket:\n  paht: /x\n"), Contains("unknown key \"socket.paht\""));
  CHECK_THAT(ErrorOf(WithVault("  adress: x\n")), Contains("unknown key \"vault.adress\""));
  CHECK_THAT(ErrorOf(Replace(kMinimal, "    key: kubernetes\n", "    key: k\n    name: x\n")),
             Contains("unknown key \"vault.transit.name\""));
  CHECK_THAT(ErrorOf(WithAuth("    method: token\n    token_file: /t\n    password: x\n")),
             Contains("unknown key \"vault.auth.password\""));
  CHECK_THAT(ErrorOf(WithVault("  timeouts:\n    read: 1s\n")),
             Contains("unknown key \"vault.timeouts.read\""));
  CHECK_THAT(ErrorOf(kMinimal + "status:\n  period: 1s\n"),
             Contains("unknown key \"status.period\""));
  CHECK_THAT(ErrorOf(kMinimal + "log:\n  format: json\n"), Contains("unknown key \"log.format\""));
  CHECK_THAT(ErrorOf(kMinimal + "privileges:\n  uid: 1\n"),
             Contains("unknown key \"privileges.uid\""));
  CHECK_THAT(ErrorOf(kMinimal + "seccomp:\n  enabled: true\n"),
             Contains("unknown key \"seccomp.enabled\""));
  // A key that cannot be printed as it is gets escaped, keeping the message on one line.
  CHECK_THAT(ErrorOf(kMinimal + "\"bad\\nkey\": 1\n"), Contains("unknown key \"bad\\x0akey\""));
}

TEST_CASE("duplicate and non-string keys are refused") {
  CHECK_THAT(ErrorOf(kMinimal + "log:\n  level: info\n  level: debug\n"),
             Contains("duplicate key \"log.level\""));
  CHECK_THAT(ErrorOf(kMinimal + "log:\n  level: info\nlog:\n  level: debug\n"),
             Contains("duplicate key \"log\""));
  CHECK_THAT(ErrorOf(kMinimal + "log:\n  ? [a]\n  : b\n"), Contains("log: every key"));
}

TEST_CASE("wrong types name the key and the expected type") {
  CHECK_THAT(ErrorOf(kMinimal + "socket:\n  - /x\n"),
             Contains("socket: expected a mapping, got a list"));
  CHECK_THAT(ErrorOf(kMinimal + "log:\n"), Contains("log: expected a mapping, got null"));
  CHECK_THAT(ErrorOf(Replace(kMinimal, "  addresses:\n    - https://vault.example.internal:8200\n",
                             "  addresses: https://vault.example.internal:8200\n")),
             Contains("vault.addresses: expected a list"));
  CHECK_THAT(ErrorOf(WithAddress("{a: b}")), Contains("vault.addresses[0]: expected a string"));
  CHECK_THAT(ErrorOf(Replace(kMinimal, "key: kubernetes", "key: [a, b]")),
             Contains("vault.transit.key: expected a string, got a list"));
  CHECK_THAT(ErrorOf(Replace(kMinimal, "key: kubernetes", "key:")),
             Contains("vault.transit.key: expected a string, got null"));
  CHECK_THAT(ErrorOf(WithVault("  max_response_bytes: lots\n")),
             Contains("vault.max_response_bytes: expected a decimal integer"));
  CHECK_THAT(ErrorOf(WithVault("  max_response_bytes: \"65536\"\n")),
             Contains("vault.max_response_bytes: expected an integer, got a quoted string"));
  CHECK_THAT(ErrorOf(WithVault("  timeouts:\n    connect: [1s]\n")),
             Contains("vault.timeouts.connect: expected a duration"));
  CHECK_THAT(ErrorOf(WithTls("    spki_pins: {a: b}\n")),
             Contains("vault.tls.spki_pins: expected a list, got a mapping"));
  CHECK_THAT(ErrorOf(WithTls("    spki_pins: [[a]]\n")),
             Contains("vault.tls.spki_pins[0]: expected a string"));
  CHECK_THAT(ErrorOf(kMinimal + "privileges:\n  user: [1]\n"),
             Contains("privileges.user: expected a name or a numeric id"));
  CHECK_THAT(ErrorOf(kMinimal + "log:\n  level: [info]\n"),
             Contains("log.level: expected a string"));
}

// ---- socket ---------------------------------------------------------------------------------

TEST_CASE("socket.path must be an absolute path that fits sun_path") {
  CHECK_THAT(ErrorOf(kMinimal + "socket:\n  path: run/kms.sock\n"),
             Contains("socket.path: must be an absolute path"));
  CHECK_THAT(ErrorOf(kMinimal + "socket:\n  path: \"\"\n"),
             Contains("socket.path: must not be empty"));
  CHECK_THAT(ErrorOf(kMinimal + "socket:\n  path: \"/run/a\\0b\"\n"),
             Contains("socket.path: must not contain control characters or NUL"));
  CHECK_THAT(ErrorOf(kMinimal + "socket:\n  path: \"/run/a\\nb\"\n"),
             Contains("socket.path: must not contain control characters"));
  const std::string longest = "/" + std::string(106, 'a');
  CHECK(MustParse(kMinimal + "socket:\n  path: " + longest + "\n").socket.path == longest);
  CHECK_THAT(ErrorOf(kMinimal + "socket:\n  path: " + longest + "a\n"),
             Contains("socket.path: is 108 bytes"));
}

TEST_CASE("socket.mode is the quoted string 0600 or 0660") {
  CHECK_THAT(ErrorOf(kMinimal + "socket:\n  mode: 0600\n"),
             Contains("socket.mode: must be quoted"));
  CHECK_THAT(ErrorOf(kMinimal + "socket:\n  mode: 384\n"), Contains("socket.mode: must be quoted"));
  CHECK_THAT(ErrorOf(kMinimal + "socket:\n  mode: \"0644\"\n"),
             Contains("socket.mode: must be \"0600\" or \"0660\", got \"0644\""));
  CHECK(MustParse(kMinimal + "socket:\n  mode: '0600'\n").socket.mode == 0600);
}

TEST_CASE("socket.group goes with mode 0660 only") {
  CHECK_THAT(ErrorOf(kMinimal + "socket:\n  mode: \"0660\"\n"),
             Contains("socket.group is required with mode 0660"));
  CHECK_THAT(ErrorOf(kMinimal + "socket:\n  mode: \"0660\"\n  group: \"\"\n"),
             Contains("socket.group is required with mode 0660"));
  CHECK_THAT(ErrorOf(kMinimal + "socket:\n  group: root\n"),
             Contains("socket.group is only used with mode 0660"));
  CHECK_THAT(ErrorOf(kMinimal + "socket:\n  mode: \"0660\"\n  group: no-such-group-xyz\n"),
             Contains("socket.group: no group named \"no-such-group-xyz\""));
  CHECK_THAT(ErrorOf(kMinimal + "socket:\n  mode: \"0660\"\n  group: 4294967295\n"),
             Contains("socket.group: numeric id must be between 0 and 4294967294"));
}

// ---- vault.addresses ------------------------------------------------------------------------

TEST_CASE("vault.addresses must be a non-empty list") {
  CHECK_THAT(ErrorOf("vault:\n  transit:\n    key: k\n"), Contains("vault.addresses is required"));
  CHECK_THAT(ErrorOf(Replace(kMinimal, "  addresses:\n    - https://vault.example.internal:8200\n",
                             "  addresses: []\n")),
             Contains("vault.addresses must list at least one"));
}

TEST_CASE("vault.addresses are https only, host and port, no path") {
  CHECK_THAT(ErrorOf(WithAddress("http://vault:8200")),
             Contains("vault.addresses[0]: plain http is refused, TLS is required"));
  CHECK_THAT(ErrorOf(WithAddress("HTTP://vault:8200")), Contains("plain http is refused"));
  CHECK_THAT(ErrorOf(WithAddress("ftp://vault")),
             Contains("vault.addresses[0]: must start with https://"));
  CHECK_THAT(ErrorOf(WithAddress("vault:8200")),
             Contains("vault.addresses[0]: must start with https://"));
  CHECK_THAT(ErrorOf(WithAddress("https://")), Contains("vault.addresses[0]: has no host"));
  CHECK_THAT(ErrorOf(WithAddress("https://:8200")), Contains("vault.addresses[0]: has no host"));
  CHECK_THAT(ErrorOf(WithAddress("https://vault:0")),
             Contains("vault.addresses[0]: port must be 1..65535"));
  CHECK_THAT(ErrorOf(WithAddress("https://vault:65536")), Contains("port must be 1..65535"));
  CHECK_THAT(ErrorOf(WithAddress("\"https://vault:\"")), Contains("port must be 1..65535"));
  CHECK_THAT(ErrorOf(WithAddress("https://vault:http")), Contains("port must be 1..65535"));
  CHECK_THAT(ErrorOf(WithAddress("https://vault/v1")),
             Contains("vault.addresses[0]: must not have a path"));
  CHECK_THAT(ErrorOf(WithAddress("https://vault//")), Contains("must not have a path"));
  CHECK_THAT(ErrorOf(WithAddress("https://vault/?x=1")),
             Contains("vault.addresses[0]: must not have a query"));
  CHECK_THAT(ErrorOf(WithAddress("https://vault#frag")), Contains("must not have a fragment"));
  CHECK_THAT(ErrorOf(WithAddress("https://vault_1")), Contains("vault.addresses[0]: invalid host"));
  CHECK_THAT(ErrorOf(WithAddress("https://vault.")), Contains("invalid host"));
  CHECK_THAT(ErrorOf(WithAddress("https://300.1.1.1")), Contains("invalid host"));
  CHECK_THAT(ErrorOf(WithAddress("https://fd00::1")), Contains("IPv6 address must be in brackets"));
  CHECK_THAT(ErrorOf(WithAddress("https://[fd00::zz]")), Contains("invalid host"));
  CHECK_THAT(ErrorOf(WithAddress("https://[fd00::1")), Contains("unclosed"));
  CHECK_THAT(ErrorOf(WithAddress("https://[fd00::1]x")), Contains("unexpected text"));
}

TEST_CASE("vault.addresses refuse user info without echoing it") {
  const std::string message = ErrorOf(WithAddress("https://admin:hunter2@vault:8200/x"));
  CHECK_THAT(message, Contains("vault.addresses[0]: must not contain \"@\""));
  CHECK_THAT(message, !Contains("hunter2"));
}

TEST_CASE("vault.addresses are normalized and duplicates refused") {
  CHECK(MustParse(WithAddress("https://vault:8200/")).vault.addresses ==
        std::vector<std::string>{"https://vault:8200"});
  const std::string two = Replace(kMinimal, "    - https://vault.example.internal:8200\n",
                                  "    - https://vault.example.internal:8200\n"
                                  "    - https://VAULT.example.internal:8200/\n");
  CHECK_THAT(ErrorOf(two), Contains("vault.addresses[1]: duplicate address"));
}

// ---- vault.transit and vault.namespace ------------------------------------------------------

TEST_CASE("vault.transit.key is required and a simple name") {
  CHECK_THAT(ErrorOf(Replace(kMinimal, "    key: kubernetes\n", "    mount: transit\n")),
             Contains("vault.transit.key is required"));
  CHECK_THAT(ErrorOf(Replace(kMinimal, "  transit:\n    key: kubernetes\n", "")),
             Contains("vault.transit.key is required"));
  CHECK_THAT(ErrorOf(Replace(kMinimal, "key: kubernetes", "key: a/b")),
             Contains("vault.transit.key: must match [A-Za-z0-9_.-]+"));
  CHECK_THAT(ErrorOf(Replace(kMinimal, "key: kubernetes", "key: \"k k\"")),
             Contains("vault.transit.key: must match"));
  CHECK_THAT(ErrorOf(Replace(kMinimal, "key: kubernetes", "key: \"..\"")),
             Contains("vault.transit.key: must match"));
}

TEST_CASE("vault.transit.mount is slash-joined simple names") {
  const auto mount = [](const std::string& m) {
    return Replace(kMinimal, "    key: kubernetes\n",
                   "    key: kubernetes\n    mount: " + m + "\n");
  };
  CHECK(MustParse(mount("a/b.c/d-e_f")).vault.transit_mount == "a/b.c/d-e_f");
  for (const char* bad : {"/transit", "transit/", "a//b", "a/../b", "..", "a/./b", "\"\"", "a?b"}) {
    INFO(bad);
    CHECK_THAT(ErrorOf(mount(bad)), Contains("vault.transit.mount: must be segments"));
  }
}

TEST_CASE("vault.namespace uses the mount charset") {
  CHECK(MustParse(WithVault("  namespace: admin/team-a\n")).vault.namespace_ == "admin/team-a");
  CHECK_THAT(ErrorOf(WithVault("  namespace: admin/\n")),
             Contains("vault.namespace: must be segments"));
  CHECK_THAT(ErrorOf(WithVault("  namespace: \"a b\"\n")),
             Contains("vault.namespace: must be segments"));
}

// ---- vault.tls ------------------------------------------------------------------------------

TEST_CASE("vault.tls.ca_file is required and absolute") {
  CHECK_THAT(ErrorOf(Replace(kMinimal, "    ca_file: /etc/trousseau/vault-ca.pem\n",
                             "    server_name: vault\n")),
             Contains("vault.tls.ca_file is required"));
  CHECK_THAT(ErrorOf(Replace(kMinimal, "  tls:\n    ca_file: /etc/trousseau/vault-ca.pem\n", "")),
             Contains("vault.tls.ca_file is required"));
  CHECK_THAT(ErrorOf(Replace(kMinimal, "ca_file: /etc/", "ca_file: etc/")),
             Contains("vault.tls.ca_file: must be an absolute path"));
}

TEST_CASE("vault.tls client certificate and key go together") {
  CHECK_THAT(ErrorOf(WithTls("    client_cert_file: /c.pem\n")),
             Contains("vault.tls.client_key_file is required when vault.tls.client_cert_file"));
  CHECK_THAT(ErrorOf(WithTls("    client_key_file: /k.pem\n")),
             Contains("vault.tls.client_cert_file is required when vault.tls.client_key_file"));
  CHECK_THAT(ErrorOf(WithTls("    client_cert_file: c.pem\n    client_key_file: /k.pem\n")),
             Contains("vault.tls.client_cert_file: must be an absolute path"));
  CHECK_THAT(ErrorOf(WithTls("    client_cert_file: /c.pem\n    client_key_file: k.pem\n")),
             Contains("vault.tls.client_key_file: must be an absolute path"));
}

TEST_CASE("vault.tls.spki_pins are sha256// plus canonical base64 of 32 bytes") {
  const auto pins = [](const std::string& pin) {
    return WithTls("    spki_pins: [\"" + pin + "\"]\n");
  };
  CHECK(MustParse(pins(kPin)).vault.tls.spki_pins == std::vector<std::string>{kPin});
  const std::string b64 = kPin.substr(8);
  for (const std::string& bad : {
           b64,                                                   // no prefix
           "sha1//" + b64,                                        // wrong hash
           "SHA256//" + b64,                                      // prefix is case-sensitive
           "sha256//" + b64.substr(0, 43),                        // padding missing
           "sha256//" + b64.substr(0, 40) + "AA==",               // 31 bytes
           "sha256//" + b64.substr(0, 43) + "A",                  // 33 bytes
           "sha256//" + b64.substr(0, 42) + "R=",                 // non-zero spare bits
           "sha256//" + b64.substr(0, 20) + "=" + b64.substr(21), // "=" in the middle
           "sha256//" + b64.substr(0, 20) + "-" + b64.substr(21), // URL-safe alphabet
           "sha256//" + b64.substr(0, 20) + " " + b64.substr(21), // whitespace
           "sha256// " + b64.substr(1),                           // leading whitespace
           "sha256//" + b64 + "AAAA",                             // too long
           "sha256//" + std::string(44, '='),                     // padding only
       }) {
    INFO(bad);
    CHECK_THAT(ErrorOf(pins(bad)), Contains("vault.tls.spki_pins[0]: must be \"sha256//\""));
  }
  CHECK_THAT(ErrorOf(WithTls("    spki_pins:\n      - " + kPin + "\n      - " + kPin + "\n")),
             Contains("vault.tls.spki_pins[1]: duplicate pin"));
}

TEST_CASE("vault.tls.server_name is a host name") {
  CHECK(MustParse(WithTls("    server_name: vault-1.internal\n")).vault.tls.server_name ==
        "vault-1.internal");
  CHECK_THAT(ErrorOf(WithTls("    server_name: \"vault internal\"\n")),
             Contains("vault.tls.server_name: must be a host name"));
  CHECK_THAT(ErrorOf(WithTls("    server_name: -vault\n")), Contains("vault.tls.server_name"));
}

// ---- vault.auth -----------------------------------------------------------------------------

TEST_CASE("vault.auth.method is required and known") {
  CHECK_THAT(ErrorOf(WithAuth("    token_file: /t\n")), Contains("vault.auth.method is required"));
  CHECK_THAT(ErrorOf(Replace(kMinimal,
                             "  auth:\n    method: token\n    token_file: /etc/trousseau/token\n",
                             "")),
             Contains("vault.auth.method is required"));
  CHECK_THAT(ErrorOf(WithAuth("    method: userpass\n")),
             Contains("vault.auth.method: must be one of token, approle, cert, jwt, kubernetes"));
}

TEST_CASE("each auth method requires its keys") {
  CHECK_THAT(ErrorOf(WithAuth("    method: token\n")),
             Contains("vault.auth.token_file is required for method token"));
  CHECK_THAT(ErrorOf(WithAuth("    method: token\n    token_file: token\n")),
             Contains("vault.auth.token_file: must be an absolute path"));
  CHECK_THAT(ErrorOf(WithAuth("    method: approle\n    secret_id_file: /s\n")),
             Contains("vault.auth.role_id_file is required for method approle"));
  CHECK_THAT(ErrorOf(WithAuth("    method: approle\n    role_id_file: /r\n")),
             Contains("vault.auth.secret_id_file is required for method approle"));
  CHECK_THAT(ErrorOf(WithAuth("    method: approle\n    role_id_file: /r\n"
                              "    secret_id_file: s\n")),
             Contains("vault.auth.secret_id_file: must be an absolute path"));
  CHECK_THAT(ErrorOf(WithAuth("    method: jwt\n    jwt_file: /j\n")),
             Contains("vault.auth.role is required for method jwt"));
  CHECK_THAT(ErrorOf(WithAuth("    method: jwt\n    role: r\n")),
             Contains("vault.auth.jwt_file is required for method jwt"));
  CHECK_THAT(ErrorOf(WithAuth("    method: kubernetes\n")),
             Contains("vault.auth.role is required for method kubernetes"));
  CHECK_THAT(ErrorOf(WithAuth("    method: kubernetes\n    role: r\n    jwt_file: token\n")),
             Contains("vault.auth.jwt_file: must be an absolute path"));
  CHECK_THAT(ErrorOf(WithAuth("    method: kubernetes\n    role: \"r/../x\"\n")),
             Contains("vault.auth.role: must match"));
}

TEST_CASE("auth keys of another method are refused") {
  CHECK_THAT(ErrorOf(WithAuth("    method: token\n    token_file: /t\n    secret_id_file: /s\n")),
             Contains("config: vault.auth.secret_id_file is not used by method token"));
  CHECK_THAT(ErrorOf(WithAuth("    method: token\n    token_file: /t\n    mount: token\n")),
             Contains("vault.auth.mount is not used by method token"));
  CHECK_THAT(ErrorOf(WithAuth("    method: kubernetes\n    role: r\n    role_id_file: /r\n")),
             Contains("vault.auth.role_id_file is not used by method kubernetes"));
  CHECK_THAT(ErrorOf(WithAuth("    method: approle\n    role_id_file: /r\n    secret_id_file: /s\n"
                              "    token_file: /t\n")),
             Contains("vault.auth.token_file is not used by method approle"));
  CHECK_THAT(ErrorOf(WithAuth("    method: jwt\n    role: r\n    jwt_file: /j\n    name: n\n")),
             Contains("vault.auth.name is not used by method jwt"));
}

TEST_CASE("auth mount and cert checks") {
  CHECK_THAT(ErrorOf(WithAuth("    method: kubernetes\n    role: r\n    mount: /kubernetes\n")),
             Contains("vault.auth.mount: must be segments"));
  CHECK_THAT(ErrorOf(WithAuth("    method: cert\n")),
             Contains("vault.auth.method cert needs vault.tls.client_cert_file"));
  const std::string cert = Replace(
      WithTls("    client_cert_file: /c.pem\n    client_key_file: /k.pem\n"),
      "    method: token\n    token_file: /etc/trousseau/token\n",
      "    method: cert\n    name: \"a b\"\n");
  CHECK_THAT(ErrorOf(cert), Contains("vault.auth.name: must match"));
}

// ---- timeouts and sizes ---------------------------------------------------------------------

TEST_CASE("vault.timeouts are bounded") {
  const auto timeouts = [](const std::string& lines) { return WithVault("  timeouts:\n" + lines); };
  CHECK(MustParse(timeouts("    connect: 100ms\n    request: 5m\n")).vault.request_timeout == 5min);
  CHECK(MustParse(timeouts("    connect: 60s\n")).vault.connect_timeout == 60s);
  CHECK_THAT(ErrorOf(timeouts("    connect: 99ms\n")),
             Contains("vault.timeouts.connect: must be between 100ms and 1m, got 99ms"));
  CHECK_THAT(ErrorOf(timeouts("    connect: 1m1ms\n")),
             Contains("vault.timeouts.connect: must be between"));
  CHECK_THAT(ErrorOf(timeouts("    request: 50ms\n")),
             Contains("vault.timeouts.request: must be between"));
  CHECK_THAT(ErrorOf(timeouts("    request: 5m1s\n")),
             Contains("vault.timeouts.request: must be between 100ms and 5m"));
  CHECK_THAT(ErrorOf(timeouts("    connect: 1.5s\n")),
             Contains("vault.timeouts.connect: invalid duration \"1.5s\": fractions"));
  CHECK_THAT(ErrorOf(timeouts("    request: 10\n")),
             Contains("vault.timeouts.request: invalid duration \"10\""));
}

TEST_CASE("vault.max_response_bytes is bounded") {
  const auto bytes = [](const std::string& v) {
    return WithVault("  max_response_bytes: " + v + "\n");
  };
  CHECK(MustParse(bytes("4096")).vault.max_response_bytes == 4096);
  CHECK(MustParse(bytes("67108864")).vault.max_response_bytes == 67108864);
  CHECK_THAT(ErrorOf(bytes("4095")),
             Contains("vault.max_response_bytes: must be between 4096 and 67108864"));
  CHECK_THAT(ErrorOf(bytes("67108865")), Contains("vault.max_response_bytes: must be between"));
  CHECK_THAT(ErrorOf(bytes("-1")),
             Contains("vault.max_response_bytes: expected a decimal integer"));
  CHECK_THAT(ErrorOf(bytes("010000")),
             Contains("vault.max_response_bytes: expected a decimal integer"));
  CHECK_THAT(ErrorOf(bytes("0x10000")),
             Contains("vault.max_response_bytes: expected a decimal integer"));
  CHECK_THAT(ErrorOf(bytes("99999999999999999999999")), Contains("vault.max_response_bytes"));
}

// ---- status, log, privileges, seccomp -------------------------------------------------------

TEST_CASE("status periods are bounded and ordered") {
  const auto status = [](const std::string& lines) { return kMinimal + "status:\n" + lines; };
  CHECK(MustParse(status("  refresh_period: 1s\n")).status.stale_after == 3s);
  CHECK(MustParse(status("  refresh_period: 5m\n")).status.stale_after == 15min);
  CHECK(MustParse(status("  stale_after: 61s\n")).status.stale_after == 61s);  // > the 60s default period
  CHECK_THAT(ErrorOf(status("  refresh_period: 999ms\n")),
             Contains("status.refresh_period: must be between 1s and 5m"));
  CHECK_THAT(ErrorOf(status("  refresh_period: 6m\n")),
             Contains("status.refresh_period: must be between"));
  CHECK_THAT(ErrorOf(status("  stale_after: 15s\n")),
             Contains("status.stale_after: must be longer than status.refresh_period"));
  CHECK_THAT(ErrorOf(status("  refresh_period: 1m\n  stale_after: 30s\n")),
             Contains("status.stale_after: must be longer"));
  CHECK_THAT(ErrorOf(status("  stale_after: -1s\n")),
             Contains("status.stale_after: invalid duration"));
}

TEST_CASE("limits.max_in_flight defaults and bounds") {
  const auto limits = [](const std::string& lines) {
    return kMinimal + "limits:\n  max_in_flight:\n" + lines;
  };
  const Config d = MustParse(kMinimal);
  CHECK(d.limits.max_in_flight_encrypt == 32);
  CHECK(d.limits.max_in_flight_decrypt == 64);
  const Config c = MustParse(limits("    encrypt: 1\n    decrypt: 4096\n"));
  CHECK(c.limits.max_in_flight_encrypt == 1);
  CHECK(c.limits.max_in_flight_decrypt == 4096);
  CHECK(MustParse(kMinimal + "limits: {}\n").limits.max_in_flight_decrypt == 64);
  CHECK_THAT(ErrorOf(limits("    encrypt: 0\n")),
             Contains("limits.max_in_flight.encrypt: must be between 1 and 4096, got 0"));
  CHECK_THAT(ErrorOf(limits("    decrypt: 4097\n")),
             Contains("limits.max_in_flight.decrypt: must be between 1 and 4096, got 4097"));
  CHECK_THAT(ErrorOf(limits("    decrypt: -1\n")),
             Contains("limits.max_in_flight.decrypt: expected a decimal integer"));
  CHECK_THAT(ErrorOf(limits("    encrypt: \"8\"\n")), Contains("limits.max_in_flight.encrypt"));
  CHECK_THAT(ErrorOf(limits("    encrypt: 1.5\n")), Contains("limits.max_in_flight.encrypt"));
  CHECK_THAT(ErrorOf(limits("    status: 5\n")),
             Contains("unknown key \"limits.max_in_flight.status\""));
  CHECK_THAT(ErrorOf(kMinimal + "limits:\n  max_inflight: 5\n"),
             Contains("unknown key \"limits.max_inflight\""));
  CHECK_THAT(ErrorOf(kMinimal + "limits:\n  max_in_flight: 5\n"),
             Contains("limits.max_in_flight"));
}

TEST_CASE("log.level and seccomp.mode are enumerations") {
  CHECK_THAT(ErrorOf(kMinimal + "log:\n  level: verbose\n"),
             Contains("log.level: must be one of debug, info, warn, error; got \"verbose\""));
  CHECK_THAT(ErrorOf(kMinimal + "log:\n  level: INFO\n"), Contains("log.level: must be one of"));
  CHECK_THAT(ErrorOf(kMinimal + "seccomp:\n  mode: kill\n"),
             Contains("seccomp.mode: must be one of enforce, log, disabled; got \"kill\""));
}

TEST_CASE("privileges are never root") {
  CHECK_THAT(ErrorOf(kMinimal + "privileges:\n  user: 0\n"),
             Contains("config: privileges.user must not be root"));
  CHECK_THAT(ErrorOf(kMinimal + "privileges:\n  user: root\n"),
             Contains("privileges.user must not be root"));
  CHECK_THAT(ErrorOf(kMinimal + "privileges:\n  group: 0\n"),
             Contains("privileges.group must not be root"));
  CHECK_THAT(ErrorOf(kMinimal + "privileges:\n  group: root\n"),
             Contains("privileges.group must not be root"));
}

TEST_CASE("privileges ids are in range and names exist") {
  CHECK(MustParse(kMinimal + "privileges:\n  user: 4294967294\n").privileges.uid == 4294967294u);
  CHECK_THAT(ErrorOf(kMinimal + "privileges:\n  user: 4294967295\n"),
             Contains("privileges.user: numeric id must be between 0 and 4294967294"));
  CHECK_THAT(ErrorOf(kMinimal + "privileges:\n  group: 99999999999999999999\n"),
             Contains("privileges.group: numeric id must be between"));
  CHECK_THAT(ErrorOf(kMinimal + "privileges:\n  user: 0100\n"),
             Contains("privileges.user: numeric id"));
  CHECK_THAT(ErrorOf(kMinimal + "privileges:\n  user: no-such-user-xyz\n"),
             Contains("privileges.user: no user named \"no-such-user-xyz\""));
  CHECK_THAT(ErrorOf(kMinimal + "privileges:\n  group: no-such-group-xyz\n"),
             Contains("privileges.group: no group named \"no-such-group-xyz\""));
  CHECK_THAT(ErrorOf(kMinimal + "privileges:\n  user: \"\"\n"),
             Contains("privileges.user: must not be empty"));
  CHECK_THAT(ErrorOf(kMinimal + "privileges:\n  user: \"nobody\\0x\"\n"),
             Contains("privileges.user: must not contain control characters"));
}

// ---- LoadConfigFile -------------------------------------------------------------------------

TEST_CASE("LoadConfigFile reads and parses a file") {
  const TempFile file(kMinimal);
  absl::StatusOr<Config> config = LoadConfigFile(file.path());
  REQUIRE(config.ok());
  CHECK(config->vault.transit_key == "kubernetes");
}

TEST_CASE("LoadConfigFile names the path and the errno text") {
  const TempFile file(kMinimal);
  const std::string missing = file.dir() + "/missing.yaml";
  absl::StatusOr<Config> config = LoadConfigFile(missing);
  REQUIRE_FALSE(config.ok());
  const std::string message(config.status().message());
  CHECK_THAT(message,
             Contains("config: cannot open \"" + missing + "\": No such file or directory"));

  config = LoadConfigFile(file.dir());
  REQUIRE_FALSE(config.ok());
  CHECK_THAT(std::string(config.status().message()), Contains("is not a regular file"));

  config = LoadConfigFile("");
  REQUIRE_FALSE(config.ok());
  CHECK_THAT(std::string(config.status().message()), Contains("config: "));
}

TEST_CASE("LoadConfigFile refuses files over 1 MiB") {
  // Valid YAML (a comment) so that only the size can be the reason.
  const TempFile exactly(kMinimal + "#" + std::string((1 << 20) - kMinimal.size() - 2, 'x') + "\n");
  CHECK(LoadConfigFile(exactly.path()).ok());
  const TempFile big(kMinimal + "#" + std::string(1 << 20, 'x') + "\n");
  absl::StatusOr<Config> config = LoadConfigFile(big.path());
  REQUIRE_FALSE(config.ok());
  const std::string message(config.status().message());
  CHECK_THAT(message, Contains("config: \"" + big.path() + "\" is larger than 1 MiB"));
  CHECK_THAT(message, !Contains("xxxx"));
}


// ---- http.listen ------------------------------------------------------------------------------

TEST_CASE("http.listen defaults to loopback port 8787") {
  const Config c = MustParse(kMinimal);
  CHECK(c.http.enabled);
  CHECK(c.http.listen == "127.0.0.1:8787");
  CHECK(c.http.host == "127.0.0.1");
  CHECK(c.http.port == 8787);
  CHECK(c.http.loopback);
}

TEST_CASE("http.listen accepts IPv4 and bracketed IPv6 literals, and off") {
  const Config v4 = MustParse(kMinimal + "http:\n  listen: \"127.0.0.2:9100\"\n");
  CHECK(v4.http.listen == "127.0.0.2:9100");
  CHECK(v4.http.port == 9100);
  CHECK(v4.http.loopback);
  const Config v6 = MustParse(kMinimal + "http:\n  listen: \"[::1]:8787\"\n");
  CHECK(v6.http.listen == "[::1]:8787");
  CHECK(v6.http.host == "::1");
  CHECK(v6.http.loopback);
  const Config any = MustParse(kMinimal + "http:\n  listen: \"0.0.0.0:8787\"\n");
  CHECK(any.http.enabled);
  CHECK_FALSE(any.http.loopback);  // main() warns about it
  const Config pod = MustParse(kMinimal + "http:\n  listen: \"10.1.2.3:8787\"\n");
  CHECK_FALSE(pod.http.loopback);
  for (const char* off : {"off", "\"off\"", "\"\""}) {
    const Config c = MustParse(kMinimal + "http:\n  listen: " + off + "\n");
    CHECK_FALSE(c.http.enabled);
    CHECK(c.http.listen.empty());
  }
}

TEST_CASE("http.listen refuses garbage with a message naming the key") {
  for (const char* bad : {"8787", "\":8787\"", "127.0.0.1", "\"127.0.0.1:\"", "\"127.0.0.1:0\"",
                          "\"127.0.0.1:65536\"", "\"127.0.0.1:-1\"", "\"127.0.0.1:08787\"",
                          "\"127.0.0.1:87a7\"", "\"localhost:8787\"", "\"127.1:8787\"",
                          "\"300.0.0.1:8787\"", "\"::1:8787\"", "\"[::1]\"", "\"[::1:8787\"",
                          "\"[nothex]:8787\"", "\"[127.0.0.1]:8787\"", "\"http://127.0.0.1:8787\"",
                          "\"127.0.0.1:8787/metrics\"", "\" 127.0.0.1:8787\""}) {
    INFO(bad);
    CHECK_THAT(ErrorOf(kMinimal + "http:\n  listen: " + bad + "\n"), Contains("http.listen"));
  }
  CHECK_THAT(ErrorOf(kMinimal + "http:\n  listen: [a, b]\n"), Contains("http.listen"));
  CHECK_THAT(ErrorOf(kMinimal + "http:\n  port: 8787\n"), Contains("http.port"));
  CHECK_THAT(ErrorOf(kMinimal + "http:\n  listen: \"127.0.0.1:70000\"\n"),
             Contains("1 to 65535"));
}

TEST_CASE("binding: defaults off, values validated with the key named") {
  const Config d = MustParse(kMinimal);
  CHECK(d.binding.cluster_id.empty());
  CHECK(d.binding.write);
  CHECK_FALSE(d.binding.strict);
  const Config c = MustParse(kMinimal + "binding:\n  cluster_id: prod-eu-1.example:a_b\n  strict: true\n");
  CHECK(c.binding.cluster_id == "prod-eu-1.example:a_b");
  CHECK(c.binding.strict);
  CHECK_FALSE(MustParse(kMinimal + "binding:\n  cluster_id: a\n  write: false\n").binding.write);
  CHECK(MustParse(kMinimal + "binding:\n  cluster_id: " + std::string(128, 'x') + "\n").binding.cluster_id.size() == 128);
  CHECK_THAT(ErrorOf(kMinimal + "binding:\n  cluster_id: " + std::string(129, 'x') + "\n"),
             Contains("binding.cluster_id") && Contains("128"));
  CHECK_THAT(ErrorOf(kMinimal + "binding:\n  cluster_id: \"a b\"\n"), Contains("binding.cluster_id"));
  CHECK_THAT(ErrorOf(kMinimal + "binding:\n  cluster_id: \"\"\n"), Contains("binding.cluster_id"));
  CHECK_THAT(ErrorOf(kMinimal + "binding:\n  strict: true\n"),
             Contains("binding.strict") && Contains("requires binding.cluster_id"));
  CHECK_THAT(ErrorOf(kMinimal + "binding:\n  cluster_id: a\n  strict: true\n  write: false\n"),
             Contains("binding.strict"));
  CHECK_THAT(ErrorOf(kMinimal + "binding:\n  cluster_id: a\n  strict: yes please\n"), Contains("binding.strict"));
  CHECK_THAT(ErrorOf(kMinimal + "binding:\n  cluster: a\n"), Contains("unknown key \"binding.cluster\""));
}

// ---- state (docs/rollback.md) -----------------------------------------------------------------

TEST_CASE("state.file: absent is memory only; set, an absolute file path") {
  CHECK(MustParse(kMinimal).state.file.empty());
  CHECK(MustParse(kMinimal + "state:\n  file: /var/lib/trousseau/state.json\n").state.file ==
        "/var/lib/trousseau/state.json");
  CHECK_THAT(ErrorOf(kMinimal + "state:\n  file: state.json\n"),
             Contains("state.file") && Contains("absolute path"));
  CHECK_THAT(ErrorOf(kMinimal + "state:\n  file: \"\"\n"),
             Contains("state.file") && Contains("memory only"));
  CHECK_THAT(ErrorOf(kMinimal + "state:\n  file: /var/lib/trousseau/\n"),
             Contains("state.file: must name a file"));
  CHECK_THAT(ErrorOf(kMinimal + "state:\n  dir: /var/lib/trousseau\n"), Contains("unknown key \"state.dir\""));
  CHECK_THAT(ErrorOf(kMinimal + "state:\n  file: [a]\n"), Contains("state.file"));
}

// ---- performance ----------------------------------------------------------------------------

TEST_CASE("performance defaults: coalescing on, batches of 32 waiting at most 200us") {
  const Config c = MustParse(kMinimal);
  CHECK(c.performance.coalesce_decrypts);
  CHECK(c.performance.batch_max_items == 32);
  CHECK(c.performance.batch_max_wait == std::chrono::microseconds(200));
}

TEST_CASE("performance settings are read") {
  const Config c = MustParse(kMinimal + "performance:\n  coalesce_decrypts: false\n"
                                        "  batch_max_items: 1\n  batch_max_wait: 1ms500us\n");
  CHECK_FALSE(c.performance.coalesce_decrypts);
  CHECK(c.performance.batch_max_items == 1);
  CHECK(c.performance.batch_max_wait == std::chrono::microseconds(1500));
  CHECK(MustParse(kMinimal + "performance:\n  batch_max_wait: 0us\n").performance.batch_max_wait.count() == 0);
  CHECK(MustParse(kMinimal + "performance:\n  batch_max_wait: 2ms\n").performance.batch_max_wait.count() == 2000);
  CHECK(MustParse(kMinimal + "performance:\n  batch_max_items: 128\n").performance.batch_max_items == 128);
}

TEST_CASE("performance.status_thread_realtime_priority: 1 by default, 0 turns it off, 99 at most") {
  CHECK(MustParse(kMinimal).performance.status_thread_realtime_priority == 1);
  CHECK(MustParse(kMinimal + "performance:\n  status_thread_realtime_priority: 0\n")
            .performance.status_thread_realtime_priority == 0);
  CHECK(MustParse(kMinimal + "performance:\n  status_thread_realtime_priority: 10\n")
            .performance.status_thread_realtime_priority == 10);
  CHECK(MustParse(kMinimal + "performance:\n  status_thread_realtime_priority: 99\n")
            .performance.status_thread_realtime_priority == 99);
  // The other performance settings keep their defaults beside it.
  const Config c = MustParse(kMinimal + "performance:\n  status_thread_realtime_priority: 5\n");
  CHECK(c.performance.batch_max_items == 32);
  CHECK(c.performance.coalesce_decrypts);
}

TEST_CASE("bad performance.status_thread_realtime_priority stops the start and names the key") {
  const std::string key = "performance:\n  status_thread_realtime_priority: ";
  CHECK_THAT(ErrorOf(kMinimal + key + "100\n"),
             Contains("performance.status_thread_realtime_priority: must be between 0 and 99, got 100"));
  CHECK_THAT(ErrorOf(kMinimal + key + "-1\n"),
             Contains("performance.status_thread_realtime_priority"));
  CHECK_THAT(ErrorOf(kMinimal + key + "\"1\"\n"),
             Contains("performance.status_thread_realtime_priority: expected an integer"));
  CHECK_THAT(ErrorOf(kMinimal + key + "true\n"),
             Contains("performance.status_thread_realtime_priority"));
  CHECK_THAT(ErrorOf(kMinimal + key + "fifo\n"),
             Contains("performance.status_thread_realtime_priority"));
  CHECK_THAT(ErrorOf(kMinimal + key + "[1]\n"),
             Contains("performance.status_thread_realtime_priority: expected an integer"));
  CHECK_THAT(ErrorOf(kMinimal + "performance:\n  status_thread_priority: 1\n"),
             Contains("unknown key \"performance.status_thread_priority\""));
}

TEST_CASE("performance.max_idle_threads: 16 by default, 0..8192") {
  CHECK(MustParse(kMinimal).performance.max_idle_threads == 16);
  CHECK(MustParse(kMinimal + "performance:\n  max_idle_threads: 0\n").performance.max_idle_threads == 0);
  CHECK(MustParse(kMinimal + "performance:\n  max_idle_threads: 256\n").performance.max_idle_threads == 256);
  CHECK(MustParse(kMinimal + "performance:\n  max_idle_threads: 8192\n").performance.max_idle_threads == 8192);
  const Config c = MustParse(kMinimal + "performance:\n  max_idle_threads: 64\n");
  CHECK(c.performance.batch_max_items == 32);
  CHECK(c.performance.status_thread_realtime_priority == 1);
}

TEST_CASE("bad performance.max_idle_threads stops the start and names the key") {
  const std::string key = "performance:\n  max_idle_threads: ";
  CHECK_THAT(ErrorOf(kMinimal + key + "8193\n"),
             Contains("performance.max_idle_threads: must be between 0 and 8192, got 8193"));
  CHECK_THAT(ErrorOf(kMinimal + key + "-1\n"), Contains("performance.max_idle_threads"));
  CHECK_THAT(ErrorOf(kMinimal + key + "\"16\"\n"),
             Contains("performance.max_idle_threads: expected an integer"));
  CHECK_THAT(ErrorOf(kMinimal + key + "many\n"), Contains("performance.max_idle_threads"));
  CHECK_THAT(ErrorOf(kMinimal + key + "1.5\n"), Contains("performance.max_idle_threads"));
  CHECK_THAT(ErrorOf(kMinimal + key + "{a: 1}\n"),
             Contains("performance.max_idle_threads: expected an integer"));
  CHECK_THAT(ErrorOf(kMinimal + "performance:\n  idle_threads: 4\n"),
             Contains("unknown key \"performance.idle_threads\""));
}

TEST_CASE("bad performance settings stop the start and name the key") {
  CHECK_THAT(ErrorOf(kMinimal + "performance:\n  batch_size: 4\n"),
             Contains("unknown key \"performance.batch_size\""));
  CHECK_THAT(ErrorOf(kMinimal + "performance:\n  coalesce_decrypts: yes\n"),
             Contains("performance.coalesce_decrypts: must be one of true, false"));
  CHECK_THAT(ErrorOf(kMinimal + "performance:\n  batch_max_items: 0\n"),
             Contains("performance.batch_max_items: must be between 1 and 128, got 0"));
  CHECK_THAT(ErrorOf(kMinimal + "performance:\n  batch_max_items: 129\n"),
             Contains("performance.batch_max_items: must be between 1 and 128, got 129"));
  CHECK_THAT(ErrorOf(kMinimal + "performance:\n  batch_max_items: \"8\"\n"),
             Contains("performance.batch_max_items: expected an integer"));
  CHECK_THAT(ErrorOf(kMinimal + "performance:\n  batch_max_items: -1\n"),
             Contains("performance.batch_max_items"));
  CHECK_THAT(ErrorOf(kMinimal + "performance:\n  batch_max_wait: 6ms\n"),
             Contains("performance.batch_max_wait: must be between 0us and 5ms, got 6ms"));
  CHECK_THAT(ErrorOf(kMinimal + "performance:\n  batch_max_wait: 200\n"),
             Contains("performance.batch_max_wait: invalid duration \"200\""));
  CHECK_THAT(ErrorOf(kMinimal + "performance:\n  batch_max_wait: 200ns\n"),
             Contains("performance.batch_max_wait: invalid duration \"200ns\""));
  CHECK_THAT(ErrorOf(kMinimal + "performance:\n  batch_max_wait: [1]\n"),
             Contains("performance.batch_max_wait: expected a duration"));
  CHECK_THAT(ErrorOf(kMinimal + "performance: 3\n"), Contains("performance: expected a mapping"));
}

TEST_CASE("ParseFineDuration adds microseconds to ParseDuration") {
  using std::chrono::microseconds;
  CHECK(*ParseFineDuration("200us") == microseconds(200));
  CHECK(*ParseFineDuration("1ms") == microseconds(1000));
  CHECK(*ParseFineDuration("1s2ms3us") == microseconds(1002003));
  CHECK(*ParseFineDuration("0us") == microseconds(0));
  CHECK_FALSE(ParseFineDuration("us").ok());
  CHECK_FALSE(ParseFineDuration("").ok());
  CHECK_FALSE(ParseFineDuration("-5us").ok());
  CHECK_FALSE(ParseFineDuration("1.5us").ok());
  CHECK_FALSE(ParseFineDuration("5us1ms").ok());   // largest unit first
  CHECK_FALSE(ParseFineDuration("1us5us").ok());   // each unit once
  CHECK_FALSE(ParseFineDuration("5 us").ok());
  CHECK_FALSE(ParseFineDuration("99999999999999999999us").ok());
  CHECK_THAT(std::string(ParseFineDuration("9223372036854775807us1").status().message()),
             Contains("invalid duration"));
  CHECK_THAT(std::string(ParseFineDuration("2562047788015h").status().message()), Contains("too large"));
  // Plain ParseDuration still refuses microseconds.
  CHECK_FALSE(ParseDuration("200us").ok());
}

TEST_CASE("a config that is not UTF-8 is refused, naming the byte (found by fuzzing)") {
  const std::string bad = kMinimal + "log:\n  level: info\n# caf\xe9\n";
  CHECK_THAT(ErrorOf(bad), Contains("not valid UTF-8"));
  CHECK_THAT(ErrorOf(std::string("\xff") + kMinimal), Contains("byte 1"));
  CHECK_THAT(ErrorOf(kMinimal + "# \xc0\xaf overlong\n"), Contains("not valid UTF-8"));
  CHECK_THAT(ErrorOf(kMinimal + "# \xed\xa0\x80 surrogate\n"), Contains("not valid UTF-8"));
  CHECK(MustParse(kMinimal + "# caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x91\n").vault.addresses.size() >= 1);
}
}  // namespace
}  // namespace trousseau::config

// ---- vault.secondary (docs/secondary.md) ----------------------------------------------------

namespace trousseau::config {
namespace {

// kMinimal plus a vault.secondary block (lines indented by 4), before `transit:`.
std::string WithSecondary(const std::string& lines) {
  return WithVault("  secondary:\n" + lines);
}

const std::string kSecondary =
    "    addresses: [https://vault-b.example.internal:8200]\n"
    "    transit: {mount: transit-dr, key: kubernetes-dr}\n"
    "    tls: {ca_file: /etc/trousseau/vault-b-ca.pem, client_cert_file: /etc/trousseau/b.crt,"
    " client_key_file: /etc/trousseau/b.key}\n"
    "    auth: {method: approle, role_id_file: /etc/trousseau/b-role, secret_id_file: "
    "/etc/trousseau/b-secret}\n";

TEST_CASE("without vault.secondary there is none") {
  CHECK_FALSE(MustParse(kMinimal).secondary.has_value());
}

TEST_CASE("vault.secondary is parsed by the vault rules, with its own everything") {
  const Config c = MustParse(WithSecondary(kSecondary + "    policy: best_effort\n"
                                           "    namespace: team-b\n"
                                           "    timeouts: {connect: 1s, request: 2s}\n"));
  REQUIRE(c.secondary.has_value());
  const SecondaryConfig& s = *c.secondary;
  CHECK(s.policy == SecondaryPolicy::kBestEffort);
  CHECK_FALSE(s.secondary_first);
  CHECK(s.vault.addresses == std::vector<std::string>{"https://vault-b.example.internal:8200"});
  CHECK(s.vault.transit_mount == "transit-dr");
  CHECK(s.vault.transit_key == "kubernetes-dr");
  CHECK(s.vault.namespace_ == "team-b");
  CHECK(s.vault.tls.ca_file == "/etc/trousseau/vault-b-ca.pem");
  CHECK(s.vault.tls.client_cert_file == "/etc/trousseau/b.crt");
  CHECK(s.vault.auth.method == AuthMethod::kAppRole);
  CHECK(s.vault.auth.secret_id_file == "/etc/trousseau/b-secret");
  CHECK(s.vault.connect_timeout == 1s);
  CHECK(s.vault.request_timeout == 2s);
  // The primary is untouched.
  CHECK(c.vault.transit_key == "kubernetes");
  CHECK(c.vault.auth.method == AuthMethod::kToken);
  const Config r = MustParse(WithSecondary(kSecondary + "    policy: required\n"
                                           "    decrypt_order: secondary_first\n"));
  CHECK(r.secondary->policy == SecondaryPolicy::kRequired);
  CHECK(r.secondary->secondary_first);
}

TEST_CASE("vault.secondary errors name the vault.secondary key") {
  const std::string p = "    policy: required\n";
  CHECK_THAT(ErrorOf(WithSecondary(kSecondary)), Contains("vault.secondary.policy is required"));
  CHECK_THAT(ErrorOf(WithSecondary(kSecondary + "    policy: sometimes\n")),
             Contains("vault.secondary.policy: must be one of required, best_effort"));
  CHECK_THAT(ErrorOf(WithSecondary(kSecondary + p + "    decrypt_order: random\n")),
             Contains("vault.secondary.decrypt_order: must be one of"));
  CHECK_THAT(ErrorOf(WithSecondary(kSecondary + p + "    secondary: {}\n")),
             Contains("unknown key \"vault.secondary.secondary\""));
  CHECK_THAT(ErrorOf(WithSecondary(Replace(kSecondary, "    addresses: [https://vault-b.example.internal:8200]\n", "") + p)),
             Contains("vault.secondary.addresses is required"));
  CHECK_THAT(ErrorOf(WithSecondary(Replace(kSecondary, "https://vault-b", "http://vault-b") + p)),
             Contains("vault.secondary.addresses[0]"));
  CHECK_THAT(ErrorOf(WithSecondary(Replace(kSecondary, "key: kubernetes-dr", "key: \"../x\"") + p)),
             Contains("vault.secondary.transit.key: must match"));
  CHECK_THAT(ErrorOf(WithSecondary(Replace(kSecondary, "ca_file: /etc/trousseau/vault-b-ca.pem, ", "") + p)),
             Contains("vault.secondary.tls.ca_file is required"));
  CHECK_THAT(ErrorOf(WithSecondary(Replace(kSecondary, " client_key_file: /etc/trousseau/b.key", "") + p)),
             Contains("vault.secondary.tls.client_key_file is required when vault.secondary.tls.client_cert_file"));
  CHECK_THAT(ErrorOf(WithSecondary(Replace(kSecondary, "method: approle", "method: magic") + p)),
             Contains("vault.secondary.auth.method: must be one of"));
  CHECK_THAT(ErrorOf(WithSecondary(Replace(kSecondary, "role_id_file: /etc/trousseau/b-role", "role_id_file: relative") + p)),
             Contains("vault.secondary.auth.role_id_file: must be an absolute path"));
  CHECK_THAT(ErrorOf(WithSecondary(kSecondary + p + "    timeouts: {request: 1ms}\n")),
             Contains("vault.secondary.timeouts.request: must be between"));
  CHECK_THAT(ErrorOf(WithSecondary(kSecondary + p + "    max_response_bytes: 1\n")),
             Contains("vault.secondary.max_response_bytes: must be between"));
  CHECK_THAT(ErrorOf(WithSecondary("    - not a mapping\n")),
             Contains("vault.secondary: expected a mapping"));
}

TEST_CASE("vault.secondary must be another cluster: no shared address") {
  const std::string shared = Replace(kSecondary, "https://vault-b.example.internal:8200",
                                     "https://VAULT.example.internal:8200");
  CHECK_THAT(ErrorOf(WithSecondary(shared + "    policy: required\n")),
             Contains("vault.secondary.addresses[0]: \"https://vault.example.internal:8200\" is also "
                      "in vault.addresses"));
}

}  // namespace
}  // namespace trousseau::config
