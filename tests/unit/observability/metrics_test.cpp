// The metrics registry: bounded labels, endpoint classes, and the families the exposition holds.
#include <catch2/catch.hpp>

#include <string>
#include <thread>
#include <vector>

#include "observability/metrics.h"

using namespace trousseau;
using Catch::Matchers::Contains;

namespace {

// The value of the sample line that starts with `prefix` (the full "name{labels}"), or -1.
double Sample(const std::string& text, const std::string& series) {
  const std::string key = series + " ";
  size_t at = 0;
  while ((at = text.find(key, at)) != std::string::npos) {
    if (at == 0 || text[at - 1] == '\n') {
      const size_t end = text.find('\n', at);
      return std::stod(text.substr(at + key.size(), end - at - key.size()));
    }
    at += key.size();
  }
  return -1;
}

TEST_CASE("max_in_flight gauge and shed counter, by method", "[metrics]") {
  metrics::SetKmsMaxInFlight("Encrypt", 7);
  metrics::SetKmsMaxInFlight("Decrypt", 9);
  metrics::SetKmsMaxInFlight("Sideways", 3);  // an unknown method is "other", never a new label
  const double before = Sample(metrics::Exposition(), R"(trousseau_kms_shed_total{method="Encrypt"})");
  CHECK(before >= 0);  // present (at 0 in a fresh process) once the limit is set
  metrics::KmsShed("Encrypt");
  metrics::KmsShed("Encrypt");
  const std::string text = metrics::Exposition();
  CHECK(Sample(text, R"(trousseau_kms_max_in_flight{method="Encrypt"})") == 7);
  CHECK(Sample(text, R"(trousseau_kms_max_in_flight{method="Decrypt"})") == 9);
  CHECK(Sample(text, R"(trousseau_kms_max_in_flight{method="other"})") == 3);
  CHECK(Sample(text, R"(trousseau_kms_shed_total{method="Encrypt"})") == before + 2);
  CHECK(Sample(text, R"(trousseau_kms_shed_total{method="Decrypt"})") >= 0);
  CHECK_THAT(text, Contains("# TYPE trousseau_kms_shed_total counter"));
  CHECK_THAT(text, Contains("# TYPE trousseau_kms_max_in_flight gauge"));
}

}  // namespace

TEST_CASE("Vault paths map to a bounded endpoint class, never the path") {
  CHECK(metrics::VaultEndpointClass("/v1/transit/encrypt/kubernetes") == "encrypt");
  CHECK(metrics::VaultEndpointClass("/v1/transit/decrypt/kubernetes") == "decrypt");
  CHECK(metrics::VaultEndpointClass("/v1/transit/keys/kubernetes") == "keys");
  CHECK(metrics::VaultEndpointClass("/v1/team/a/transit/encrypt/k") == "encrypt");  // nested mount
  CHECK(metrics::VaultEndpointClass("/v1/auth/approle/login") == "login");
  CHECK(metrics::VaultEndpointClass("/v1/auth/dept/kubernetes/login") == "login");
  CHECK(metrics::VaultEndpointClass("/v1/auth/token/lookup-self") == "lookup_self");
  CHECK(metrics::VaultEndpointClass("/v1/auth/token/renew-self") == "renew_self");
  CHECK(metrics::VaultEndpointClass("/v1/sys/health") == "health");
  CHECK(metrics::VaultEndpointClass("/v1/sys/health?standbyok=true") == "health");
  CHECK(metrics::VaultEndpointClass("/v1/sys/capabilities-self") == "capabilities");
  // Anything else, however it is spelled, is "other".
  CHECK(metrics::VaultEndpointClass("/v1/transit/encrypt/") == "other");
  CHECK(metrics::VaultEndpointClass("/v1/encrypt/k") == "other");
  CHECK(metrics::VaultEndpointClass("/v1/auth/approle/role/x/secret-id") == "other");
  CHECK(metrics::VaultEndpointClass("/v1/secret/data/plaintext-looking-path") == "other");
  CHECK(metrics::VaultEndpointClass("/v2/transit/encrypt/k") == "other");
  CHECK(metrics::VaultEndpointClass("") == "other");
  CHECK(metrics::VaultEndpointClass("/") == "other");
  CHECK(metrics::VaultEndpointClass("/v1/") == "other");
}

TEST_CASE("status classes") {
  CHECK(metrics::StatusClass(200) == "2xx");
  CHECK(metrics::StatusClass(204) == "2xx");
  CHECK(metrics::StatusClass(307) == "3xx");
  CHECK(metrics::StatusClass(403) == "4xx");
  CHECK(metrics::StatusClass(503) == "5xx");
  CHECK(metrics::StatusClass(0) == "error");
  CHECK(metrics::StatusClass(99) == "error");
  CHECK(metrics::StatusClass(600) == "error");
}

TEST_CASE("label values outside the agreed sets become \"other\"") {
  CHECK(metrics::BoundedApi("v2") == "v2");
  CHECK(metrics::BoundedApi("v1beta1") == "v1beta1");
  CHECK(metrics::BoundedApi("v3") == "other");
  CHECK(metrics::BoundedMethod("Encrypt") == "Encrypt");
  CHECK(metrics::BoundedMethod("encrypt") == "other");
  CHECK(metrics::BoundedCode("INVALID_ARGUMENT") == "INVALID_ARGUMENT");
  CHECK(metrics::BoundedCode("some uid 1234") == "other");

  metrics::SetVaultNodes({"https://vault-a.test:8200"});
  metrics::ObserveVault("/v1/secret/data/uid-5f1c", "https://attacker.test:1", 200, 0.01);
  metrics::ObserveKms("v9", "Steal", "uid-5f1c", 0.001);
  const std::string text = metrics::Exposition();
  CHECK_THAT(text, !Contains("uid-5f1c"));
  CHECK_THAT(text, !Contains("attacker"));
  CHECK_THAT(text, !Contains("secret/data"));
  CHECK(Sample(text, R"(trousseau_vault_requests_total{endpoint="other",node="other",status_class="2xx"})") == 1);
  CHECK(Sample(text, R"(trousseau_kms_requests_total{api="other",code="other",method="other"})") == 1);
}

TEST_CASE("the exposition holds the agreed families, counted and read at scrape time") {
  metrics::SetVaultNodes({"https://vault-a.test:8200", "https://vault-b.test:8200"});
  metrics::SetBuildInfo("1.2.3", "abcdef", metrics::ShortTlsLibraryName("OpenSSL 3.0.17 1 Jul 2025"));
  for (int i = 0; i < 3; ++i) metrics::ObserveKms("v2", "Encrypt", "OK", 0.002);
  metrics::ObserveKms("v2", "Decrypt", "INVALID_ARGUMENT", 0.0001);
  metrics::ObserveVault("/v1/transit/encrypt/k", "https://vault-b.test:8200", 200, 0.003);
  metrics::ObserveVault("/v1/transit/encrypt/k", "https://vault-a.test:8200", 0, 2.0);
  metrics::VaultFailover();
  metrics::VaultRedirectRefused();
  metrics::VaultRedirectFollowed();
  metrics::VaultRedirectFollowed();
  int reads = 0;
  metrics::SetStateProvider([&reads] {
    ++reads;
    metrics::RuntimeState s;
    s.token_ttl_seconds = 1234.5;
    s.logins_success = 2;
    s.logins_failure = 1;
    s.renewals_success = 7;
    s.key_version = 4;
    s.key_id = "ns/transit/k:v4";
    s.last_success_age_seconds = 3.5;
    s.healthy = true;
    return s;
  });
  metrics::SetAuditDroppedSource([] { return uint64_t{9}; });
  std::string text;
  {
    metrics::KmsInFlight busy("v1beta1", "Decrypt");
    text = metrics::Exposition();
  }
  CHECK(reads == 1);
  CHECK(Sample(text, R"(trousseau_kms_requests_total{api="v2",code="OK",method="Encrypt"})") == 3);
  CHECK(Sample(text, R"(trousseau_kms_requests_total{api="v2",code="INVALID_ARGUMENT",method="Decrypt"})") == 1);
  CHECK(Sample(text, R"(trousseau_kms_request_duration_seconds_count{api="v2",method="Encrypt"})") == 3);
  CHECK(Sample(text, R"(trousseau_kms_request_duration_seconds_bucket{api="v2",method="Encrypt",le="0.0025"})") == 3);
  CHECK(Sample(text, R"(trousseau_kms_request_duration_seconds_bucket{api="v2",method="Encrypt",le="0.001"})") == 0);
  CHECK(Sample(text, R"(trousseau_kms_in_flight_requests{api="v1beta1",method="Decrypt"})") == 1);
  CHECK(Sample(text, R"(trousseau_vault_requests_total{endpoint="encrypt",node="https://vault-b.test:8200",status_class="2xx"})") == 1);
  CHECK(Sample(text, R"(trousseau_vault_requests_total{endpoint="encrypt",node="https://vault-a.test:8200",status_class="error"})") == 1);
  CHECK(Sample(text, R"(trousseau_vault_request_duration_seconds_count{endpoint="encrypt"})") == 2);
  CHECK(Sample(text, "trousseau_vault_failovers_total") == 1);
  CHECK(Sample(text, "trousseau_vault_redirects_refused_total") == 1);
  CHECK(Sample(text, "trousseau_vault_redirects_followed_total") == 2);
  CHECK(Sample(text, "trousseau_vault_token_ttl_seconds") == 1234.5);
  CHECK(Sample(text, R"(trousseau_vault_logins_total{outcome="success"})") == 2);
  CHECK(Sample(text, R"(trousseau_vault_logins_total{outcome="failure"})") == 1);
  CHECK(Sample(text, R"(trousseau_vault_token_renewals_total{outcome="success"})") == 7);
  CHECK(Sample(text, R"(trousseau_vault_token_renewals_total{outcome="failure"})") == 0);
  CHECK(Sample(text, "trousseau_transit_key_version") == 4);
  CHECK(Sample(text, R"(trousseau_key_info{key_id="ns/transit/k:v4"})") == 1);
  CHECK(Sample(text, "trousseau_vault_last_success_age_seconds") == 3.5);
  CHECK(Sample(text, "trousseau_healthy") == 1);
  CHECK(Sample(text, "trousseau_audit_records_dropped_total") == 9);
  CHECK(Sample(text, R"(trousseau_build_info{revision="abcdef",tls_library="OpenSSL 3.0.17",version="1.2.3"})") == 1);
  CHECK_THAT(text, Contains("# TYPE trousseau_kms_requests_total counter"));
  CHECK_THAT(text, Contains("# TYPE trousseau_kms_request_duration_seconds histogram"));
  CHECK_THAT(text, Contains("# TYPE trousseau_healthy gauge"));
  for (const char* p : {"process_cpu_seconds_total", "process_resident_memory_bytes",
                        "process_virtual_memory_bytes", "process_open_fds", "process_max_fds",
                        "process_start_time_seconds", "process_threads"}) {
    INFO(p);
    CHECK(Sample(text, p) >= 0);  // present (Sample is -1 when absent); CPU may still be 0
  }
  // In flight drops back when the call ends.
  CHECK(Sample(metrics::Exposition(), R"(trousseau_kms_in_flight_requests{api="v1beta1",method="Decrypt"})") == 0);

  // Before the first check: key_info has no series, unknowns read -1.
  metrics::SetStateProvider([] { return metrics::RuntimeState{}; });
  text = metrics::Exposition();
  CHECK_THAT(text, !Contains("trousseau_key_info{"));
  CHECK(Sample(text, "trousseau_vault_token_ttl_seconds") == -1);
  CHECK(Sample(text, "trousseau_vault_last_success_age_seconds") == -1);
  CHECK(Sample(text, "trousseau_healthy") == 0);
  metrics::SetStateProvider(nullptr);
  metrics::SetAuditDroppedSource(nullptr);
}

TEST_CASE("the secondary Vault families exist only when one is configured", "[metrics][secondary]") {
  metrics::SetStateProvider([] { return metrics::RuntimeState{}; });
  CHECK_THAT(metrics::Exposition(), !Contains("trousseau_secondary_"));
  CHECK_THAT(metrics::Exposition(), !Contains("trousseau_primary_up"));
  metrics::SetStateProvider([] {
    metrics::RuntimeState s;
    s.secondary_configured = true;
    s.secondary_up = false;
    s.primary_up = true;
    s.secondary_key_version = 7;
    s.secondary_unwrapped = 3;
    s.secondary_fallbacks = 11;
    return s;
  });
  const std::string text = metrics::Exposition();
  CHECK(Sample(text, "trousseau_secondary_up") == 0);
  CHECK(Sample(text, "trousseau_primary_up") == 1);
  CHECK(Sample(text, "trousseau_secondary_key_version") == 7);
  CHECK(Sample(text, "trousseau_secondary_unwrapped_total") == 3);
  CHECK(Sample(text, "trousseau_secondary_fallbacks_total") == 11);
  CHECK_THAT(text, Contains("# TYPE trousseau_secondary_fallbacks_total counter"));
  metrics::SetStateProvider(nullptr);
}

TEST_CASE("the state file write failure counter exists only with state.file", "[metrics][state]") {
  metrics::SetStateProvider([] { return metrics::RuntimeState{}; });
  CHECK_THAT(metrics::Exposition(), !Contains("trousseau_state_file_"));
  uint64_t failures = 0;
  metrics::SetStateProvider([&failures] {
    metrics::RuntimeState s;
    s.state_file_configured = true;
    s.state_file_write_failures = failures;
    return s;
  });
  std::string text = metrics::Exposition();
  CHECK(Sample(text, "trousseau_state_file_write_failures_total") == 0);
  CHECK_THAT(text, Contains("# TYPE trousseau_state_file_write_failures_total counter"));
  failures = 4;
  text = metrics::Exposition();
  CHECK(Sample(text, "trousseau_state_file_write_failures_total") == 4);
  metrics::SetStateProvider(nullptr);
}

TEST_CASE("cached metric handles: every call counted in its own series, from many threads, and "
          "the node label follows the configured addresses", "[metrics]") {
  // The handles of each label combination are looked up once and kept; calls from several
  // threads at once (the first ones racing to fill the cache) all count, each in its series.
  const std::string node_a = "https://cache-a.test:8200", node_b = "https://cache-b.test:8200";
  metrics::SetVaultNodes({node_a});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&node_a] {
      for (int i = 0; i < 500; ++i) {
        metrics::KmsInFlight busy("v1beta1", "Version");
        metrics::ObserveKms("v1beta1", "Version", "DATA_LOSS", 0.0001);
        metrics::ObserveKms("v1beta1", "Version", "ABORTED", 0.0001);
        metrics::ObserveVault("/v1/auth/token/renew-self", node_a, 503, 0.001);
      }
    });
  }
  for (auto& t : threads) t.join();
  std::string text = metrics::Exposition();
  CHECK(Sample(text, R"(trousseau_kms_requests_total{api="v1beta1",code="DATA_LOSS",method="Version"})") == 2000);
  CHECK(Sample(text, R"(trousseau_kms_requests_total{api="v1beta1",code="ABORTED",method="Version"})") == 2000);
  CHECK(Sample(text, R"(trousseau_kms_request_duration_seconds_count{api="v1beta1",method="Version"})") == 4000);
  CHECK(Sample(text, R"(trousseau_kms_in_flight_requests{api="v1beta1",method="Version"})") == 0);
  CHECK(Sample(text, R"(trousseau_vault_requests_total{endpoint="renew_self",node="https://cache-a.test:8200",status_class="5xx"})") == 2000);
  CHECK(Sample(text, R"(trousseau_vault_request_duration_seconds_count{endpoint="renew_self"})") == 2000);

  // The batch size histogram, by op (anything else is "other").
  for (int i = 0; i < 3; ++i) metrics::ObserveVaultBatch("decrypt", 5);
  metrics::ObserveVaultBatch("rewrap", 2);
  text = metrics::Exposition();
  CHECK(Sample(text, R"(trousseau_vault_batch_size_count{op="decrypt"})") == 3);
  CHECK(Sample(text, R"(trousseau_vault_batch_size_sum{op="decrypt"})") == 15);
  CHECK(Sample(text, R"(trousseau_vault_batch_size_bucket{op="decrypt",le="4"})") == 0);
  CHECK(Sample(text, R"(trousseau_vault_batch_size_bucket{op="decrypt",le="8"})") == 3);
  CHECK(Sample(text, R"(trousseau_vault_batch_size_count{op="other"})") == 1);
  CHECK_THAT(text, !Contains("rewrap"));

  // New addresses: the old one is no longer a label value (it counts as "other"), the new one is.
  metrics::SetVaultNodes({node_b});
  const double other_before = std::max(0.0, Sample(text, R"(trousseau_vault_requests_total{endpoint="renew_self",node="other",status_class="5xx"})"));
  metrics::ObserveVault("/v1/auth/token/renew-self", node_a, 503, 0.001);
  metrics::ObserveVault("/v1/auth/token/renew-self", node_b, 503, 0.001);
  text = metrics::Exposition();
  CHECK(Sample(text, R"(trousseau_vault_requests_total{endpoint="renew_self",node="https://cache-a.test:8200",status_class="5xx"})") == 2000);
  CHECK(Sample(text, R"(trousseau_vault_requests_total{endpoint="renew_self",node="other",status_class="5xx"})") == other_before + 1);
  CHECK(Sample(text, R"(trousseau_vault_requests_total{endpoint="renew_self",node="https://cache-b.test:8200",status_class="5xx"})") == 1);
}

TEST_CASE("the TLS library's short name") {
  CHECK(metrics::ShortTlsLibraryName("OpenSSL 3.0.17 1 Jul 2025") == "OpenSSL 3.0.17");
  CHECK(metrics::ShortTlsLibraryName("OpenSSL 3.5.0") == "OpenSSL 3.5.0");
  CHECK(metrics::ShortTlsLibraryName("BoringSSL") == "BoringSSL");
}
