// `trousseau doctor`: every verdict of the pure checks (files, Vault answers, capabilities,
// EncryptionConfiguration), the output formats and exit codes, and the Vault API sequence over
// the fake transport.
#include "cli/doctor.h"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <string>

#include "fakes/fake_http_transport.h"
#include "fakes/fake_token_source.h"
#include "fakes/temp_dir.h"

namespace trousseau::cli::doctor {
namespace {

using Catch::Contains;
using fakes::Method;
using nlohmann::json;

const Check* Find(const std::vector<Check>& v, const std::string& name) {
  for (const auto& c : v) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

std::string Join2(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& x : v) out += (out.empty() ? "" : ",") + x;
  return out;
}

size_t Count(const std::vector<Check>& v, Result r) {
  size_t n = 0;
  for (const auto& c : v) n += c.result == r ? 1 : 0;
  return n;
}

RuntimeIdentity Me() { return {::geteuid(), ::getegid(), false}; }

// ---- output and exit codes ---------------------------------------------------------------------

TEST_CASE("doctor exit code: 0 ok, 2 only warnings, 1 any failure", "[doctor]") {
  CHECK(ExitCode({}) == kExitOk);
  CHECK(ExitCode({Ok("a", "x")}) == kExitOk);
  CHECK(ExitCode({Ok("a", "x"), Warn("b", "y")}) == kExitWarnings);
  CHECK(ExitCode({Warn("b", "y"), Fail("c", "z", "f"), Ok("a", "x")}) == kExitFailed);
  CHECK(ExitCode({Fail("c", "z", "f")}) == kExitFailed);
  CHECK(kExitUsage == 64);
}

TEST_CASE("doctor text output: one marked line per check, a fix under failures, a summary",
          "[doctor]") {
  const std::string t = FormatText({Ok("config", "valid"), Warn("token", "short", "renew it"),
                                    Fail("tls", "bad CA", "fix the CA")});
  CHECK(t == "\u2713 config: valid\n"
             "! token: short\n"
             "    fix: renew it\n"
             "\u2717 tls: bad CA\n"
             "    fix: fix the CA\n"
             "3 checks: 1 ok, 1 warning(s), 1 failed -> NOT ready (exit 1)\n");
  CHECK_THAT(FormatText({Ok("a", "b")}), Contains("ready (exit 0)"));
  CHECK_THAT(FormatText({Warn("a", "b")}), Contains("review the warnings (exit 2)"));
}

TEST_CASE("doctor JSON output: an array of {name, result, detail, fix}", "[doctor]") {
  const auto j = json::parse(FormatJson({Ok("config", "valid"), Warn("w", "d"),
                                         Fail("tls", "bad \"CA\"\n", "fix it")}));
  REQUIRE(j.is_array());
  REQUIRE(j.size() == 3);
  CHECK(j[0] == json({{"name", "config"}, {"result", "ok"}, {"detail", "valid"}, {"fix", ""}}));
  CHECK(j[1]["result"] == "warn");
  CHECK(j[2]["result"] == "fail");
  CHECK(j[2]["detail"] == "bad \"CA\"\n");
  CHECK(j[2]["fix"] == "fix it");
  // bytes that are not UTF-8 (from a Vault error) do not break the document
  CHECK(json::parse(FormatJson({Fail("x", std::string("bad \xff byte"), "f")})).is_array());
}

// ---- files -------------------------------------------------------------------------------------

TEST_CASE("doctor file checks: modes, owners and readability", "[doctor][files]") {
  fakes::TempDir dir;
  ::chmod(dir.path().c_str(), 0755);
  const std::string p = dir.Write("f", "x");
  auto with_mode = [&](mode_t m) { REQUIRE(::chmod(p.c_str(), m) == 0); };

  SECTION("a secret readable by group or others fails, with a chmod fix") {
    with_mode(0644);
    auto c = CheckFile({"vault.auth.token_file", p, FileKind::kSecret}, Me());
    CHECK(c.result == Result::kFail);
    CHECK_THAT(c.detail, Contains("readable by group or others"));
    CHECK_THAT(c.fix, Contains("chmod 0400 " + p));
    with_mode(0640);
    CHECK(CheckFile({"vault.tls.client_key_file", p, FileKind::kSecret}, Me()).result == Result::kFail);
  }
  SECTION("a secret 0400 owned by the runtime uid passes") {
    with_mode(0400);
    auto c = CheckFile({"vault.auth.token_file", p, FileKind::kSecret}, Me());
    CHECK(c.result == Result::kOk);
    CHECK_THAT(c.detail, Contains("mode 0400"));
    CHECK(c.name == "file vault.auth.token_file");
  }
  SECTION("a world-readable CA is fine, a writable one is not") {
    with_mode(0644);
    CHECK(CheckFile({"vault.tls.ca_file", p, FileKind::kPublic}, Me()).result == Result::kOk);
    with_mode(0664);
    auto c = CheckFile({"vault.tls.ca_file", p, FileKind::kPublic}, Me());
    CHECK(c.result == Result::kFail);
    CHECK_THAT(c.detail, Contains("writable by group or others"));
    with_mode(0646);
    CHECK(CheckFile({"vault.tls.ca_file", p, FileKind::kPublic}, Me()).result == Result::kFail);
  }
  SECTION("a role_id readable by others is a warning") {
    with_mode(0644);
    CHECK(CheckFile({"vault.auth.role_id_file", p, FileKind::kCredential}, Me()).result == Result::kWarn);
    with_mode(0400);
    CHECK(CheckFile({"vault.auth.role_id_file", p, FileKind::kCredential}, Me()).result == Result::kOk);
  }
  SECTION("a file the runtime uid cannot read") {
    with_mode(0400);
    RuntimeIdentity other{::geteuid() + 4242, ::getegid() + 4242, true};
    // a credential read after the privilege drop: failure
    auto c = CheckFile({"vault.auth.secret_id_file", p, FileKind::kSecret}, other);
    CHECK(c.result == Result::kFail);
    CHECK_THAT(c.detail, Contains("not readable by the runtime uid " + std::to_string(other.uid)));
    CHECK_THAT(c.fix, Contains("chown " + std::to_string(other.uid) + ":" + std::to_string(other.gid)));
    // a TLS file read at start as root: only reloads fail, a warning
    CHECK(CheckFile({"vault.tls.client_key_file", p, FileKind::kSecret}, other).result == Result::kWarn);
    // not started as root: it cannot be read at all
    other.starts_as_root = false;
    CHECK(CheckFile({"vault.tls.client_key_file", p, FileKind::kSecret}, other).result == Result::kFail);
  }
  SECTION("a directory the runtime uid cannot traverse") {
    const std::string sub = dir.path() + "/sub";
    REQUIRE(::mkdir(sub.c_str(), 0700) == 0);
    const std::string q = dir.Write("sub/t", "x");
    ::chmod(q.c_str(), 0444);
    RuntimeIdentity other{::geteuid() + 4242, ::getegid() + 4242, true};
    auto c = CheckFile({"vault.auth.token_file", q, FileKind::kPublic}, other);
    CHECK(c.result == Result::kFail);
    CHECK_THAT(c.detail, Contains("directory " + sub + " is not searchable"));
  }
  SECTION("missing file and not a regular file") {
    auto c = CheckFile({"vault.tls.ca_file", dir.Path("nope"), FileKind::kPublic}, Me());
    CHECK(c.result == Result::kFail);
    CHECK_THAT(c.detail, Contains("No such file"));
    CHECK_THAT(c.fix, Contains("vault.tls.ca_file"));
    CHECK(CheckFile({"vault.tls.ca_file", dir.path(), FileKind::kPublic}, Me()).result == Result::kFail);
  }
}

TEST_CASE("doctor AccessFor picks owner, group or other bits", "[doctor][files]") {
  struct stat st{};
  st.st_uid = 10;
  st.st_gid = 20;
  st.st_mode = S_IFREG | 0640;
  CHECK(AccessFor(st, {10, 99, false}) == 6);
  CHECK(AccessFor(st, {11, 20, false}) == 4);
  CHECK(AccessFor(st, {11, 21, false}) == 0);
  CHECK(AccessFor(st, {0, 0, false}) == 0);  // root after dropping capabilities: no override
}

TEST_CASE("doctor FilesOf lists every file a config names with its kind", "[doctor][files]") {
  config::Config cfg;
  cfg.vault.tls.ca_file = "/ca";
  cfg.vault.tls.client_cert_file = "/crt";
  cfg.vault.tls.client_key_file = "/key";
  cfg.vault.auth.method = config::AuthMethod::kAppRole;
  cfg.vault.auth.role_id_file = "/rid";
  cfg.vault.auth.secret_id_file = "/sid";
  auto f = FilesOf(cfg);
  REQUIRE(f.size() == 5);
  CHECK((f[0].key == "vault.tls.ca_file" && f[0].kind == FileKind::kPublic));
  CHECK((f[2].key == "vault.tls.client_key_file" && f[2].kind == FileKind::kSecret));
  CHECK((f[3].key == "vault.auth.role_id_file" && f[3].kind == FileKind::kCredential));
  CHECK((f[4].key == "vault.auth.secret_id_file" && f[4].kind == FileKind::kSecret));
}

TEST_CASE("doctor socket directory check", "[doctor][files]") {
  fakes::TempDir dir;
  SECTION("missing: serve creates it, a warning") {
    CHECK(CheckSocketDir(dir.Path("run/x.sock"), Me()).result == Result::kWarn);
  }
  SECTION("usable by the runtime uid") {
    ::chmod(dir.path().c_str(), 0750);
    auto c = CheckSocketDir(dir.Path("x.sock"), Me());
    CHECK(c.result == Result::kOk);
    CHECK_THAT(c.detail, Contains("mode 0750"));
  }
  SECTION("world-writable without sticky bit fails") {
    ::chmod(dir.path().c_str(), 0777);
    auto c = CheckSocketDir(dir.Path("x.sock"), Me());
    CHECK(c.result == Result::kFail);
    CHECK_THAT(c.fix, Contains("chmod 0750"));
  }
  SECTION("not writable by the runtime uid after the drop: warning; without root: failure") {
    ::chmod(dir.path().c_str(), 0755);
    RuntimeIdentity other{::geteuid() + 4242, ::getegid() + 4242, true};
    CHECK(CheckSocketDir(dir.Path("x.sock"), other).result == Result::kWarn);
    other.starts_as_root = false;
    CHECK(CheckSocketDir(dir.Path("x.sock"), other).result == Result::kFail);
  }
  SECTION("not a directory") {
    dir.Write("file", "x");
    CHECK(CheckSocketDir(dir.Path("file/x.sock"), Me()).result == Result::kFail);
  }
}

TEST_CASE("doctor state file check: what serve would refuse fails", "[doctor][files]") {
  fakes::TempDir dir;
  ::chmod(dir.path().c_str(), 0700);
  SECTION("no file yet: ok, a first start") {
    auto c = CheckStateFile(dir.Path("state.json"), Me());
    CHECK(c.result == Result::kOk);
    CHECK_THAT(c.detail, Contains("no key recorded yet"));
  }
  SECTION("a well-formed file: ok, with the number of keys") {
    dir.Write("state.json", R"({"format":1,"keys":{"transit/k":{"high_version":2,"created":{}}}})");
    ::chmod(dir.Path("state.json").c_str(), 0600);
    auto c = CheckStateFile(dir.Path("state.json"), Me());
    CHECK(c.result == Result::kOk);
    CHECK_THAT(c.detail, Contains("rollback marks of 1 key(s)"));
  }
  SECTION("a damaged file fails, naming it") {
    dir.Write("state.json", "{\"format\":1,");
    ::chmod(dir.Path("state.json").c_str(), 0600);
    auto c = CheckStateFile(dir.Path("state.json"), Me());
    CHECK(c.result == Result::kFail);
    CHECK_THAT(c.detail, Contains(dir.Path("state.json")));
    CHECK_THAT(c.detail, Contains("not valid JSON"));
    CHECK_THAT(c.fix, Contains("docs/rollback.md"));
  }
  SECTION("a directory the runtime uid does not own fails") {
    RuntimeIdentity other{::geteuid() + 4242, ::getegid() + 4242, true};
    auto c = CheckStateFile(dir.Path("state.json"), other);
    CHECK(c.result == Result::kFail);
    CHECK_THAT(c.detail, Contains("install -d -o " + std::to_string(other.uid)));
  }
}

TEST_CASE("doctor seccomp profile: missing warns, different fails, equal JSON passes",
          "[doctor][files]") {
  fakes::TempDir dir;
  const std::string want = R"({"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"]}]})";
  auto missing = CheckSeccompProfile(dir.Path("p.json"), want);
  CHECK(missing.result == Result::kWarn);
  CHECK(missing.fix == "trousseau seccomp-profile > " + dir.Path("p.json"));
  const std::string same = dir.Write("same.json", "{\n  \"syscalls\": [ {\"names\": [\"read\"]} ],\n"
                                                  "  \"defaultAction\": \"SCMP_ACT_ERRNO\"\n}\n");
  CHECK(CheckSeccompProfile(same, want).result == Result::kOk);
  const std::string diff = dir.Write("diff.json", R"({"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read","ptrace"]}]})");
  auto c = CheckSeccompProfile(diff, want);
  CHECK(c.result == Result::kFail);
  CHECK(c.fix == "trousseau seccomp-profile > " + diff);
  CHECK(CheckSeccompProfile(dir.Write("bad.json", "{nope"), want).result == Result::kFail);
}

// ---- Vault answers -----------------------------------------------------------------------------

TEST_CASE("doctor health: active ok, sealed fails, standby warns", "[doctor][vault]") {
  const std::string n = "https://v:8200";
  CHECK(EvaluateHealth(n, json{{"initialized", true}, {"sealed", false}, {"standby", false}}).result ==
        Result::kOk);
  auto sealed = EvaluateHealth(n, json{{"initialized", true}, {"sealed", true}, {"standby", true}});
  CHECK(sealed.result == Result::kFail);
  CHECK_THAT(sealed.detail, Contains("sealed"));
  CHECK_THAT(sealed.fix, Contains("unseal"));
  CHECK(EvaluateHealth(n, json{{"initialized", true}, {"sealed", false}, {"standby", true}}).result ==
        Result::kWarn);
  CHECK(EvaluateHealth(n, json{{"initialized", true}, {"performance_standby", true}}).result == Result::kWarn);
  CHECK(EvaluateHealth(n, json{{"initialized", false}, {"sealed", true}}).result == Result::kFail);
  CHECK(EvaluateHealth(n, json("nope")).result == Result::kFail);
  CHECK(EvaluateHealth(n, json{{"initialized", true}}).name == "vault https://v:8200 health");
}

TEST_CASE("doctor clock skew from the Date header", "[doctor][vault]") {
  const std::string n = "https://v:8200";
  const auto t = ParseHttpDate("Tue, 01 Dec 2026 20:57:38 GMT");
  REQUIRE(t.has_value());
  CHECK(*t == 1796158658);
  CHECK_FALSE(ParseHttpDate("yesterday").has_value());
  CHECK_FALSE(ParseHttpDate("Tue, 01 Dec 2026 20:57:38 GMT trailing").has_value());
  CHECK_FALSE(ParseHttpDate("").has_value());
  const std::string d = "Tue, 01 Dec 2026 20:57:38 GMT";
  CHECK(EvaluateClock(n, d, std::nullopt, *t).result == Result::kOk);
  CHECK(EvaluateClock(n, d, std::nullopt, *t + 5).result == Result::kOk);
  auto w = EvaluateClock(n, d, std::nullopt, *t - 6);
  CHECK(w.result == Result::kWarn);
  CHECK_THAT(w.detail, Contains("6 s behind"));
  CHECK(EvaluateClock(n, d, std::nullopt, *t + 60).result == Result::kWarn);
  auto f = EvaluateClock(n, d, std::nullopt, *t + 61);
  CHECK(f.result == Result::kFail);
  CHECK_THAT(f.detail, Contains("61 s ahead"));
  // no Date header: server_time_utc from sys/health; neither: a warning
  CHECK(EvaluateClock(n, "", int64_t{1000}, 1300).result == Result::kFail);
  CHECK_THAT(EvaluateClock(n, "", int64_t{1000}, 1000).detail, Contains("server_time_utc"));
  CHECK(EvaluateClock(n, "garbage", std::nullopt, 1000).result == Result::kWarn);
}

TEST_CASE("doctor token TTL and renewability", "[doctor][vault]") {
  config::AuthConfig tok;  // method token, renew true
  CHECK(EvaluateToken(3600 * 24, true, tok).result == Result::kOk);
  CHECK(EvaluateToken(600, true, tok).result == Result::kOk);  // the plugin renews it
  auto short_nr = EvaluateToken(600, false, tok);
  CHECK(short_nr.result == Result::kWarn);
  CHECK_THAT(short_nr.detail, Contains("10m"));
  CHECK(EvaluateToken(7200, false, tok).result == Result::kOk);
  CHECK(EvaluateToken(0, false, tok).result == Result::kWarn);  // never expires
  tok.renew_token = false;
  CHECK(EvaluateToken(600, true, tok).result == Result::kWarn);
  config::AuthConfig login;
  login.method = config::AuthMethod::kAppRole;
  CHECK(EvaluateToken(600, false, login).result == Result::kOk);  // re-login handles it
}

json GoodKey() {
  return json{{"type", "aes256-gcm96"}, {"deletion_allowed", false}, {"exportable", false},
              {"allow_plaintext_backup", false}, {"latest_version", 3},
              {"min_decryption_version", 1}, {"min_encryption_version", 0}};
}

TEST_CASE("doctor transit key checks", "[doctor][vault]") {
  auto good = EvaluateKey("transit", "k", GoodKey());
  CHECK(Count(good, Result::kOk) == good.size());
  REQUIRE(Find(good, "transit key transit/k versions") != nullptr);
  CHECK_THAT(Find(good, "transit key transit/k versions")->detail, Contains("versions 1..3 decrypt"));

  auto chacha = GoodKey();
  chacha["type"] = "chacha20-poly1305";
  CHECK(Count(EvaluateKey("transit", "k", chacha), Result::kOk) == 4);

  auto rsa = GoodKey();
  rsa["type"] = "rsa-2048";
  CHECK(Find(EvaluateKey("transit", "k", rsa), "transit key transit/k type")->result == Result::kFail);
  auto aes128 = GoodKey();
  aes128["type"] = "aes128-gcm96";
  CHECK(Find(EvaluateKey("transit", "k", aes128), "transit key transit/k type")->result == Result::kFail);

  auto del = GoodKey();
  del["deletion_allowed"] = true;
  const auto del_checks = EvaluateKey("transit", "k", del);  // Find points into it: keep it alive
  auto d = Find(del_checks, "transit key transit/k deletion_allowed");
  CHECK(d->result == Result::kWarn);
  CHECK_THAT(d->fix, Contains("deletion_allowed=false"));

  auto exp = GoodKey();
  exp["exportable"] = true;
  CHECK(Find(EvaluateKey("transit", "k", exp), "transit key transit/k exportable")->result == Result::kFail);
  auto backup = GoodKey();
  backup["allow_plaintext_backup"] = true;
  CHECK(Find(EvaluateKey("transit", "k", backup), "transit key transit/k allow_plaintext_backup")->result ==
        Result::kFail);

  auto raised = GoodKey();
  raised["min_decryption_version"] = 3;
  const auto raised_checks = EvaluateKey("transit", "k", raised);
  auto v = Find(raised_checks, "transit key transit/k versions");
  CHECK(v->result == Result::kOk);
  CHECK_THAT(v->detail, Contains("only version 3 decrypts"));
  CHECK_THAT(v->detail, Contains("below 3 is unreadable"));
  raised["min_decryption_version"] = 4;
  CHECK(Find(EvaluateKey("transit", "k", raised), "transit key transit/k versions")->result == Result::kFail);

  auto bad = EvaluateKey("transit", "k", json{{"name", "k"}});
  REQUIRE(bad.size() == 1);
  CHECK(bad[0].result == Result::kFail);
  CHECK(EvaluateKey("transit", "k", json())[0].result == Result::kFail);
}

TEST_CASE("doctor capabilities: exact, missing, create (upsert trap), broader", "[doctor][vault]") {
  const CapabilityMap exact = {{"transit/encrypt/k", {"update"}},
                               {"transit/decrypt/k", {"update"}},
                               {"transit/keys/k", {"read"}}};
  auto ok = EvaluateCapabilities("transit", "k", exact);
  REQUIRE(ok.size() == 3);
  CHECK(Count(ok, Result::kOk) == 3);
  CHECK(ok[0].name == "capabilities transit/encrypt/k");

  SECTION("no read on the key: failure naming the path and capability") {
    auto m = exact;
    m["transit/keys/k"] = {"deny"};
    auto c = EvaluateCapabilities("transit", "k", m);
    CHECK(c[2].result == Result::kFail);
    CHECK(c[2].name == "capabilities transit/keys/k");
    CHECK_THAT(c[2].detail, Contains("missing 'read'"));
    CHECK_THAT(c[2].fix, Contains(R"(path "transit/keys/k" { capabilities = ["read"] })"));
    m.erase("transit/keys/k");  // absent from the answer: same as deny
    CHECK(EvaluateCapabilities("transit", "k", m)[2].result == Result::kFail);
    m["transit/keys/k"] = {"list"};  // something, but not read
    CHECK(EvaluateCapabilities("transit", "k", m)[2].result == Result::kFail);
  }
  SECTION("create on encrypt: a loud upsert warning") {
    auto m = exact;
    m["transit/encrypt/k"] = {"create", "update"};
    auto c = EvaluateCapabilities("transit", "k", m);
    CHECK(c[0].result == Result::kWarn);
    CHECK_THAT(c[0].detail, Contains("UPSERT TRAP"));
    CHECK_THAT(c[0].detail, Contains("silently creates a new key"));
    CHECK(c[1].result == Result::kOk);
    CHECK(ExitCode(c) == kExitWarnings);
  }
  SECTION("create without update on encrypt is still missing update") {
    auto m = exact;
    m["transit/encrypt/k"] = {"create"};
    CHECK(EvaluateCapabilities("transit", "k", m)[0].result == Result::kFail);
  }
  SECTION("broader grants warn") {
    for (const char* extra : {"sudo", "delete", "list", "create", "patch"}) {
      auto m = exact;
      m["transit/decrypt/k"] = {"update", extra};
      auto c = EvaluateCapabilities("transit", "k", m);
      CHECK(c[1].result == Result::kWarn);
      CHECK_THAT(c[1].detail, Contains("broader than needed"));
      CHECK_THAT(c[1].detail, Contains(std::string(extra)));
    }
    auto m = exact;
    m["transit/keys/k"] = {"read", "update"};
    CHECK(EvaluateCapabilities("transit", "k", m)[2].result == Result::kWarn);
  }
  SECTION("root") {
    const CapabilityMap root = {{"transit/encrypt/k", {"root"}},
                                {"transit/decrypt/k", {"root"}},
                                {"transit/keys/k", {"root"}}};
    auto c = EvaluateCapabilities("transit", "k", root);
    CHECK(Count(c, Result::kWarn) == 3);
    CHECK_THAT(c[0].detail, Contains("root"));
  }
}

// ---- EncryptionConfiguration --------------------------------------------------------------------

const char* kGoodEnc = R"(apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources:
      - secrets
    providers:
      - kms:
          apiVersion: v2
          name: trousseau
          endpoint: unix:///run/t.sock
          timeout: 3s
      - identity: {}
)";

std::string Replace(std::string s, const std::string& from, const std::string& to) {
  const size_t at = s.find(from);
  REQUIRE(at != std::string::npos);
  return s.replace(at, from.size(), to);
}

TEST_CASE("doctor encryption config: the good shape passes", "[doctor][enc]") {
  auto c = CheckEncryptionConfig(kGoodEnc, "/run/t.sock");
  CHECK(Count(c, Result::kOk) == c.size());
  CHECK(c.size() == 5);  // endpoint, apiVersion, name, timeout, fallback
  REQUIRE(Find(c, "encryption-config [secrets] kms fallback") != nullptr);
  CHECK_THAT(Find(c, "encryption-config [secrets] kms fallback")->detail, Contains("identity"));
  // timeout absent: a note, not a warning
  auto no_timeout = CheckEncryptionConfig(Replace(kGoodEnc, "          timeout: 3s\n", ""), "/run/t.sock");
  CHECK(Find(no_timeout, "encryption-config [secrets] kms timeout")->result == Result::kOk);
  CHECK_THAT(Find(no_timeout, "encryption-config [secrets] kms timeout")->detail, Contains("default 3s"));
}

TEST_CASE("doctor encryption config: negative cases", "[doctor][enc][negative]") {
  const std::string sock = "/run/t.sock";
  auto verdict = [&](const std::string& yaml, const std::string& name) {
    auto c = CheckEncryptionConfig(yaml, sock);
    const Check* f = Find(c, name);
    REQUIRE(f != nullptr);
    return *f;
  };
  const std::string k = "encryption-config [secrets] kms ";
  CHECK(verdict(Replace(kGoodEnc, "apiVersion: v2", "apiVersion: v1"), k + "apiVersion").result == Result::kFail);
  CHECK(verdict(Replace(kGoodEnc, "          apiVersion: v2\n", ""), k + "apiVersion").result == Result::kFail);
  CHECK(verdict(Replace(kGoodEnc, "name: trousseau", "name: trous:seau"), k + "name").result == Result::kFail);
  CHECK(verdict(Replace(kGoodEnc, "          name: trousseau\n", ""), k + "name").result == Result::kFail);
  CHECK(verdict(Replace(kGoodEnc, "timeout: 3s", "timeout: 30s"), k + "timeout").result == Result::kWarn);
  CHECK(verdict(Replace(kGoodEnc, "timeout: 3s", "timeout: 500ms"), k + "timeout").result == Result::kWarn);
  CHECK(verdict(Replace(kGoodEnc, "timeout: 3s", "timeout: soon"), k + "timeout").result == Result::kFail);
  CHECK(verdict(Replace(kGoodEnc, "timeout: 3s", "timeout: 3s\n          cachesize: 1000"), k + "cachesize").result ==
        Result::kFail);
  CHECK(verdict(Replace(kGoodEnc, "      - identity: {}\n", ""), k + "fallback").result == Result::kWarn);
  // not first: new data is written by another provider
  const std::string second = Replace(kGoodEnc, "    providers:\n", "    providers:\n      - aescbc: {keys: []}\n");
  CHECK(verdict(second, k + "order").result == Result::kWarn);

  // another socket
  auto other = CheckEncryptionConfig(kGoodEnc, "/run/other.sock");
  REQUIRE(other.size() == 1);
  CHECK(other[0].result == Result::kFail);
  CHECK_THAT(other[0].detail, Contains("found: unix:///run/t.sock"));
  CHECK_THAT(other[0].fix, Contains("unix:///run/other.sock"));

  for (const std::string& bad : {std::string("{not yaml"), std::string("- a list"), std::string(""),
                                Replace(kGoodEnc, "kind: EncryptionConfiguration", "kind: Pod"),
                                Replace(kGoodEnc, "apiserver.config.k8s.io/v1", "v1"),
                                std::string("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n"),
                                std::string("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources: 3\n"),
                                std::string("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n"
                                            "resources:\n  - providers:\n      - kms: [1, 2]\n")}) {
    auto c = CheckEncryptionConfig(bad, sock);
    INFO(bad);
    CHECK(ExitCode(c) == kExitFailed);
  }
}

// ---- Vault sequence over the fake transport ------------------------------------------------------

config::Config VaultCfg() {
  config::Config cfg;
  cfg.vault.addresses = {"https://vault-a.test:8200"};
  cfg.vault.transit_key = "k";
  cfg.vault.auth.token_file = "/t";
  return cfg;
}

const char* kCapsPath = "/v1/sys/capabilities-self";

void ScriptGood(fakes::FakeHttpTransport& http) {
  http.Respond(Method::kGet, "/v1/auth/token/lookup-self", 200,
               R"({"data":{"ttl":86400,"renewable":true,"id":"s.secret-token-value"}})");
  http.Respond(Method::kGet, "/v1/transit/keys/k", 200, json{{"data", GoodKey()}}.dump());
  http.Respond(Method::kPost, kCapsPath, 200,
               R"({"transit/encrypt/k":["update"],"transit/decrypt/k":["update"],"transit/keys/k":["read"],)"
               R"("data":{"transit/encrypt/k":["update"],"transit/decrypt/k":["update"],"transit/keys/k":["read"]}})");
}

TEST_CASE("doctor Vault API checks: a good setup passes and never prints the token", "[doctor][vault]") {
  fakes::FakeHttpTransport http;
  fakes::FakeTokenSource tokens("s.secret-token-value");
  ScriptGood(http);
  auto c = CheckVaultApi(VaultCfg(), http, tokens);
  CHECK(ExitCode(c) == kExitOk);
  CHECK(Find(c, "vault login") != nullptr);
  CHECK(Find(c, "vault token") != nullptr);
  CHECK(Find(c, "capabilities transit/keys/k") != nullptr);
  const std::string out = FormatText(c) + FormatJson(c);
  CHECK(out.find("s.secret-token-value") == std::string::npos);
  // the capabilities call asked for exactly the three paths, with the token
  bool asked = false;
  for (const auto& r : http.requests()) {
    if (r.path == kCapsPath) {
      asked = true;
      CHECK(r.token == "s.secret-token-value");
      CHECK(json::parse(r.body) ==
            json{{"paths", {"transit/encrypt/k", "transit/decrypt/k", "transit/keys/k"}}});
    }
  }
  CHECK(asked);
}

TEST_CASE("doctor Vault API checks: failures", "[doctor][vault][negative]") {
  fakes::FakeHttpTransport http;
  fakes::FakeTokenSource tokens;
  ScriptGood(http);
  SECTION("key missing") {
    http.Respond(Method::kGet, "/v1/transit/keys/k", 404, R"({"errors":[]})");
    auto c = CheckVaultApi(VaultCfg(), http, tokens);
    auto k = Find(c, "transit key transit/k");
    REQUIRE(k != nullptr);
    CHECK(k->result == Result::kFail);
    CHECK_THAT(k->fix, Contains("type=aes256-gcm96"));
  }
  SECTION("no read on the key") {
    http.Respond(Method::kGet, "/v1/transit/keys/k", 403, R"({"errors":["1 error occurred:\n\t* permission denied\n\n"]})");
    http.Respond(Method::kPost, kCapsPath, 200,
                 R"({"data":{"transit/encrypt/k":["update"],"transit/decrypt/k":["update"],"transit/keys/k":["deny"]}})");
    auto c = CheckVaultApi(VaultCfg(), http, tokens);
    CHECK(Find(c, "transit key transit/k")->result == Result::kFail);
    CHECK(Find(c, "capabilities transit/keys/k")->result == Result::kFail);
    CHECK(ExitCode(c) == kExitFailed);
  }
  SECTION("capabilities-self refused: a warning, not a failure") {
    http.Respond(Method::kPost, kCapsPath, 403, R"({"errors":["permission denied"]})");
    auto c = CheckVaultApi(VaultCfg(), http, tokens);
    CHECK(Find(c, "capabilities")->result == Result::kWarn);
    CHECK(ExitCode(c) == kExitWarnings);
  }
  SECTION("login fails: the rest is not attempted") {
    tokens.FailWith(absl::PermissionDeniedError("vault auth approle (mount approle): permission denied"));
    auto c = CheckVaultApi(VaultCfg(), http, tokens);
    REQUIRE(c.size() == 1);
    CHECK(c[0].result == Result::kFail);
    CHECK(http.count() == 0);
  }
  SECTION("Vault unreachable: the transport error is the detail") {
    http.Fail(Method::kGet, "/v1/transit/keys/k", absl::UnavailableError("vault https://vault-a.test:8200: cannot connect (Connection refused)"));
    auto c = CheckVaultApi(VaultCfg(), http, tokens);
    CHECK_THAT(Find(c, "transit key transit/k")->detail, Contains("Connection refused"));
  }
}

const char* kHealthPath =
    "/v1/sys/health?standbycode=200&perfstandbycode=200&performancestandbycode=200"
    "&sealedcode=200&uninitcode=200&drsecondarycode=200";

TEST_CASE("doctor node health over the transport: sealed, TLS errors, Date header",
          "[doctor][vault]") {
  fakes::FakeHttpTransport http;
  auto cfg = VaultCfg();
  cfg.vault.tls.ca_file = "/etc/trousseau/ca.pem";
  const std::string node = "https://vault-a.test:8200";
  bool usable = true;
  SECTION("active, clock from the Date header") {
    fakes::ScriptedResponse r;
    r.body = R"({"initialized":true,"sealed":false,"standby":false,"version":"2.0.0"})";
    r.date = "Mon, 01 Jan 2024 00:00:00 GMT";  // far in the past: a clock failure
    http.Push(Method::kGet, kHealthPath, r);
    auto c = CheckNodeHealth(cfg, node, http, &usable);
    CHECK(usable);
    CHECK(Find(c, "vault " + node + " tls")->result == Result::kOk);
    CHECK(Find(c, "vault " + node + " health")->result == Result::kOk);
    CHECK(Find(c, "vault " + node + " clock")->result == Result::kFail);
  }
  SECTION("sealed") {
    http.Respond(Method::kGet, kHealthPath, 200, R"({"initialized":true,"sealed":true,"standby":true})");
    auto c = CheckNodeHealth(cfg, node, http, &usable);
    CHECK_FALSE(usable);
    CHECK(Find(c, "vault " + node + " health")->result == Result::kFail);
  }
  SECTION("wrong CA: a TLS failure with a hint naming the CA file") {
    http.Fail(Method::kGet, kHealthPath,
              absl::UnavailableError("vault " + node + ": TLS certificate verification failed against "
                                     "the configured CA (SSL certificate problem)"));
    auto c = CheckNodeHealth(cfg, node, http, &usable);
    CHECK_FALSE(usable);
    REQUIRE(c.size() == 1);
    CHECK(c[0].name == "vault " + node + " tls");
    CHECK(c[0].result == Result::kFail);
    CHECK_THAT(c[0].fix, Contains("/etc/trousseau/ca.pem"));
  }
}

TEST_CASE("doctor TLS failure hints: pins, client certificate, timeouts", "[doctor][vault][negative]") {
  fakes::FakeHttpTransport http;
  auto cfg = VaultCfg();
  cfg.vault.tls.ca_file = "/ca.pem";
  const std::string node = "https://vault-a.test:8200";
  bool usable = true;
  auto fix_for = [&](const std::string& error) {
    http.Fail(Method::kGet, kHealthPath, absl::UnavailableError(error));
    auto c = CheckNodeHealth(cfg, node, http, &usable);
    REQUIRE(c.size() == 1);
    CHECK(c[0].result == Result::kFail);
    CHECK(c[0].detail == error);
    CHECK_FALSE(usable);
    return c[0].fix;
  };
  CHECK_THAT(fix_for("vault " + node + ": server public key does not match any configured SPKI pin "
                     "(vault.tls.spki_pins)"),
             Contains("vault.tls.spki_pins"));
  CHECK_THAT(fix_for("vault " + node + ": timed out after 5000 ms (x)"), Contains("not HTTPS"));
  CHECK_THAT(fix_for("vault " + node + ": TLS handshake failed (alert)"), Contains("is a Vault/OpenBao"));
  cfg.vault.tls.client_cert_file = "/client.pem";
  CHECK_THAT(fix_for("vault " + node + ": connection failed (tlsv13 alert certificate required)"),
             Contains("/client.pem"));
  CHECK_THAT(fix_for("vault " + node + ": TLS handshake failed (alert)"), Contains("tls_client_ca_file"));
}

// ---- vault.secondary: the same checks, named for the second cluster ----------------------------

config::Config WithSecondary() {
  auto cfg = VaultCfg();
  config::SecondaryConfig sc;
  sc.vault.addresses = {"https://vault-b.test:8201", "https://vault-b2.test:8201"};
  sc.vault.transit_mount = "transit2";
  sc.vault.transit_key = "k2";
  sc.vault.tls.ca_file = "/etc/trousseau/secondary-ca.pem";
  sc.vault.tls.client_cert_file = "/etc/trousseau/secondary-client.pem";
  sc.vault.tls.client_key_file = "/etc/trousseau/secondary-client-key.pem";
  sc.vault.auth.token_file = "/etc/trousseau/secondary.token";
  sc.policy = config::SecondaryPolicy::kBestEffort;
  cfg.secondary = sc;
  return cfg;
}

const char* kSecondaryName = "secondary vault https://vault-b.test:8201,https://vault-b2.test:8201";

TEST_CASE("doctor FilesOf lists the secondary's files under vault.secondary.*", "[doctor][files][secondary]") {
  auto cfg = WithSecondary();
  cfg.vault.tls.ca_file = "/ca";
  auto f = FilesOf(cfg);
  REQUIRE(f.size() == 6);  // the primary's CA and token, the secondary's CA, cert, key, token
  CHECK(f[0].key == "vault.tls.ca_file");
  CHECK(f[1].key == "vault.auth.token_file");
  CHECK((f[2].key == "vault.secondary.tls.ca_file" && f[2].path == "/etc/trousseau/secondary-ca.pem" &&
         f[2].kind == FileKind::kPublic));
  CHECK((f[3].key == "vault.secondary.tls.client_cert_file" && f[3].kind == FileKind::kPublic));
  CHECK((f[4].key == "vault.secondary.tls.client_key_file" && f[4].kind == FileKind::kSecret));
  CHECK((f[5].key == "vault.secondary.auth.token_file" && f[5].path == "/etc/trousseau/secondary.token" &&
         f[5].kind == FileKind::kSecret));
  cfg.secondary->vault.auth.method = config::AuthMethod::kAppRole;
  cfg.secondary->vault.auth.token_file.clear();
  cfg.secondary->vault.auth.role_id_file = "/rid2";
  cfg.secondary->vault.auth.secret_id_file = "/sid2";
  f = FilesOf(cfg);
  REQUIRE(f.size() == 7);
  CHECK((f[5].key == "vault.secondary.auth.role_id_file" && f[5].kind == FileKind::kCredential));
  CHECK((f[6].key == "vault.secondary.auth.secret_id_file" && f[6].kind == FileKind::kSecret));
  // without a secondary: the primary's only
  cfg.secondary.reset();
  CHECK(FilesOf(cfg).size() == 2);
}

TEST_CASE("doctor secondary credential files are re-read after the drop: unsearchable dir fails",
          "[doctor][files][secondary]") {
  fakes::TempDir dir;
  REQUIRE(::mkdir(dir.Path("sub").c_str(), 0700) == 0);
  const std::string f = dir.Write("sub/secondary.token", "s.x");
  ::chmod(f.c_str(), 0400);
  ::chmod(dir.Path("sub").c_str(), 0700);
  RuntimeIdentity other{::geteuid() + 4242, ::getegid() + 4242, true};
  // owned by someone else and unreadable: the check is about the directory first
  auto c = CheckFile({"vault.secondary.auth.token_file", f, FileKind::kSecret}, other);
  CHECK(c.result == Result::kFail);
  CHECK(c.name == "file vault.secondary.auth.token_file");
  CHECK_THAT(c.detail, Contains("not searchable"));
  // a TLS file is read as root at start: only a warning
  auto t = CheckFile({"vault.secondary.tls.ca_file", f, FileKind::kSecret}, other);
  CHECK(t.result == Result::kWarn);
}

TEST_CASE("doctor cluster names: the primary's unchanged, the secondary's say secondary and where",
          "[doctor][secondary]") {
  const auto cfg = WithSecondary();
  const auto p = Cluster::Primary(cfg);
  const auto s = Cluster::Secondary(*cfg.secondary);
  CHECK(p.Section() == "vault");
  CHECK(s.Section() == "vault.secondary");
  CHECK(p.ApiName("vault login") == "vault login");
  CHECK(p.ApiName("transit key transit/k") == "transit key transit/k");
  CHECK(s.ApiName("vault login") == std::string(kSecondaryName) + " login");
  CHECK(s.ApiName("transit key transit2/k2") == std::string(kSecondaryName) + " transit key transit2/k2");
  CHECK(p.NodeName("https://a:1", "tls") == "vault https://a:1 tls");
  CHECK(s.NodeName("https://b:2", "tls") == "secondary vault https://b:2 tls");
}

void ScriptGoodSecondary(fakes::FakeHttpTransport& http, int latest) {
  http.Respond(Method::kGet, "/v1/auth/token/lookup-self", 200,
               R"({"data":{"ttl":86400,"renewable":true}})");
  auto key = GoodKey();
  key["latest_version"] = latest;
  http.Respond(Method::kGet, "/v1/transit2/keys/k2", 200, json{{"data", key}}.dump());
  http.Respond(Method::kPost, kCapsPath, 200,
               R"({"data":{"transit2/encrypt/k2":["update"],"transit2/decrypt/k2":["update"],"transit2/keys/k2":["read"]}})");
}

TEST_CASE("doctor secondary Vault API: its own key, version and capabilities, named secondary",
          "[doctor][vault][secondary]") {
  const auto cfg = WithSecondary();
  const auto s = Cluster::Secondary(*cfg.secondary);
  fakes::FakeHttpTransport http;
  fakes::FakeTokenSource tokens("s.secondary-token-value");
  ScriptGoodSecondary(http, 7);
  const std::string n = kSecondaryName;
  SECTION("good: every check passes and reads the secondary's key with its version") {
    auto c = CheckVaultApi(s, http, tokens);
    CHECK(ExitCode(c) == kExitOk);
    for (const auto& x : c) {
      INFO(x.name);
      CHECK(x.name.rfind(n + " ", 0) == 0);
    }
    REQUIRE(Find(c, n + " login") != nullptr);
    REQUIRE(Find(c, n + " token") != nullptr);
    REQUIRE(Find(c, n + " transit key transit2/k2 versions") != nullptr);
    CHECK_THAT(Find(c, n + " transit key transit2/k2 versions")->detail, Contains("latest_version 7"));
    CHECK(Find(c, n + " capabilities transit2/encrypt/k2") != nullptr);
    CHECK(Find(c, "vault login") == nullptr);  // never the primary's name
    const std::string out = FormatText(c) + FormatJson(c);
    CHECK(out.find("s.secondary-token-value") == std::string::npos);
    // every request went with the secondary's token to the secondary's paths
    for (const auto& r : http.requests()) {
      CHECK(r.token == "s.secondary-token-value");
      CHECK(r.path.find("/transit/") == std::string::npos);
    }
  }
  SECTION("key missing: the failure names the secondary, its address and its config keys") {
    http.Respond(Method::kGet, "/v1/transit2/keys/k2", 404, R"({"errors":[]})");
    auto c = CheckVaultApi(s, http, tokens);
    CHECK(ExitCode(c) == kExitFailed);
    auto k = Find(c, n + " transit key transit2/k2");
    REQUIRE(k != nullptr);
    CHECK(k->result == Result::kFail);
    CHECK_THAT(k->fix, Contains("vault.secondary.transit.key / vault.secondary.transit.mount"));
    CHECK_THAT(FormatText(c), Contains("\u2717 secondary vault https://vault-b.test:8201"));
  }
  SECTION("login refused: one failure named for the secondary, nothing else asked") {
    tokens.FailWith(absl::PermissionDeniedError("vault token file: permission denied"));
    auto c = CheckVaultApi(s, http, tokens);
    REQUIRE(c.size() == 1);
    CHECK(c[0].name == n + " login");
    CHECK(c[0].result == Result::kFail);
    CHECK_THAT(c[0].fix, Contains("/etc/trousseau/secondary.token"));
    CHECK(http.count() == 0);
  }
  SECTION("a non-renewable short token: the fix names vault.secondary.auth.renew") {
    http.Respond(Method::kGet, "/v1/auth/token/lookup-self", 200,
                 R"({"data":{"ttl":600,"renewable":true}})");
    auto sc = *cfg.secondary;
    sc.vault.auth.renew_token = false;
    auto c = CheckVaultApi(Cluster::Secondary(sc), http, tokens);
    auto t = Find(c, std::string("secondary vault ") + Join2(sc.vault.addresses) + " token");
    REQUIRE(t != nullptr);
    CHECK(t->result == Result::kWarn);
    CHECK_THAT(t->fix, Contains("vault.secondary.auth.renew: true"));
  }
  SECTION("the primary's wrappers keep the primary's names") {
    fakes::FakeHttpTransport http1;
    ScriptGood(http1);
    auto c = CheckVaultApi(cfg, http1, tokens);
    CHECK(Find(c, "vault login") != nullptr);
    CHECK(Find(c, "transit key transit/k versions") != nullptr);
  }
}

TEST_CASE("doctor secondary node checks: TLS against its own CA, named secondary with the address",
          "[doctor][vault][secondary][negative]") {
  const auto cfg = WithSecondary();
  const auto s = Cluster::Secondary(*cfg.secondary);
  const std::string node = "https://vault-b.test:8201";
  fakes::FakeHttpTransport http;
  bool usable = true;
  SECTION("wrong CA: the hint names vault.secondary.tls.ca_file and its file") {
    http.Fail(Method::kGet, kHealthPath,
              absl::UnavailableError("vault " + node + ": TLS certificate verification failed against "
                                     "the configured CA (SSL certificate problem)"));
    auto c = CheckNodeHealth(s, node, http, &usable);
    CHECK_FALSE(usable);
    REQUIRE(c.size() == 1);
    CHECK(c[0].name == "secondary vault " + node + " tls");
    CHECK(c[0].result == Result::kFail);
    CHECK_THAT(c[0].fix, Contains("vault.secondary.tls.ca_file (/etc/trousseau/secondary-ca.pem)"));
    CHECK_THAT(c[0].fix, !Contains("vault.tls.ca_file"));
  }
  SECTION("pin mismatch: the hint names vault.secondary.tls.spki_pins") {
    http.Fail(Method::kGet, kHealthPath,
              absl::UnavailableError("vault " + node + ": server public key does not match any "
                                     "configured SPKI pin"));
    auto c = CheckNodeHealth(s, node, http, &usable);
    REQUIRE(c.size() == 1);
    CHECK_THAT(c[0].fix, Contains("vault.secondary.tls.spki_pins"));
  }
  SECTION("client certificate refused: the hint names the secondary's client certificate") {
    http.Fail(Method::kGet, kHealthPath,
              absl::UnavailableError("vault " + node + ": connection failed (tlsv13 alert certificate required)"));
    auto c = CheckNodeHealth(s, node, http, &usable);
    REQUIRE(c.size() == 1);
    CHECK_THAT(c[0].fix, Contains("/etc/trousseau/secondary-client.pem"));
  }
  SECTION("healthy: tls, health and clock named secondary; the detail names its CA") {
    http.Respond(Method::kGet, kHealthPath, 200,
                 R"({"initialized":true,"sealed":false,"standby":false,"version":"2.0.0"})");
    auto c = CheckNodeHealth(s, node, http, &usable);
    CHECK(usable);
    REQUIRE(Find(c, "secondary vault " + node + " tls") != nullptr);
    CHECK_THAT(Find(c, "secondary vault " + node + " tls")->detail,
               Contains("verified against /etc/trousseau/secondary-ca.pem"));
    CHECK(Find(c, "secondary vault " + node + " health") != nullptr);
    CHECK(Find(c, "secondary vault " + node + " clock") != nullptr);
  }
  SECTION("standby: the hint names vault.secondary.addresses") {
    http.Respond(Method::kGet, kHealthPath, 200, R"({"initialized":true,"sealed":false,"standby":true})");
    auto c = CheckNodeHealth(s, node, http, &usable);
    auto h = Find(c, "secondary vault " + node + " health");
    REQUIRE(h != nullptr);
    CHECK(h->result == Result::kWarn);
    CHECK_THAT(h->fix, Contains("vault.secondary.addresses"));
  }
}

TEST_CASE("doctor command line: usage errors exit 64", "[doctor]") {
  CHECK(Main({}) == kExitUsage);
  CHECK(Main({"--config"}) == kExitUsage);
  CHECK(Main({"--bogus"}) == kExitUsage);
  CHECK(Main({"--config", "/x", "--output", "yaml"}) == kExitUsage);
  CHECK(Main({"--help"}) == kExitOk);
  // an unreadable config is a failed check, not a crash
  CHECK(Main({"--config", "/nonexistent/trousseau.yaml"}) == kExitFailed);
}

}  // namespace
}  // namespace trousseau::cli::doctor
